--- Zero-shot classification with prompt ensembles, the way OpenAI's ImageNet notebook builds its
-- classifier: every template is filled with a class name and encoded, each prompt embedding is
-- L2-normalised, the class's embeddings are averaged, and the average is normalised again.
--
--   local clf = clip.zeroshot.classifier(model, {"cat", "dog"}, "ensemble")
--   local probs = clf:classify(images)           -- N x classes, rows sum to 1
--   local top = clf:topk(images, 5)              -- per image: {{label =, prob =, index =}, ...}
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local M = {}

local config = lib.config

--- Folders searched for named template sets (NAME.txt): $CLIPL_TEMPLATES, then models/templates.
local function template_dirs()
    local dirs = {}
    if os.getenv("CLIPL_TEMPLATES") then
        dirs[#dirs + 1] = os.getenv("CLIPL_TEMPLATES")
    end
    dirs[#dirs + 1] = config.models .. "/templates"
    return dirs
end

local function read_lines(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local lines = {}
    for line in f:lines() do
        line = line:gsub("\r$", "")
        if line:match("%S") and not line:match("^%s*#") then
            lines[#lines + 1] = line
        end
    end
    f:close()
    return lines
end

--- Templates: a table of strings with `{}` for the class name, a file (one template per line),
-- or the name of a shipped set ("simple", "ensemble").
function M.templates(spec)
    if spec == nil then
        spec = "simple"
    end
    if type(spec) == "table" then
        return spec
    end
    if type(spec) ~= "string" then
        error("templates: expected a table, a file or a set name, got " .. type(spec), 2)
    end
    local lines = read_lines(spec)
    if not lines then
        for _, dir in ipairs(template_dirs()) do
            lines = read_lines(dir .. "/" .. spec .. ".txt")
            if lines then
                break
            end
        end
    end
    if not lines then
        error("templates: '" .. spec .. "' is neither a file nor a template set (shipped sets: " ..
            table.concat(M.template_sets(), ", ") .. ")", 2)
    end
    if #lines == 0 then
        error("templates: " .. spec .. " has no templates", 2)
    end
    for i, t in ipairs(lines) do
        if not t:find("{}", 1, true) then
            error("templates: line " .. i .. " of " .. spec .. " has no {} for the class name: " .. t, 2)
        end
    end
    return lines
end

--- Names of the shipped template sets.
function M.template_sets()
    local names = {}
    for _, dir in ipairs(template_dirs()) do
        local p = io.popen('ls "' .. dir .. '" 2>/dev/null')
        if p then
            for file in p:lines() do
                local name = file:match("^(.+)%.txt$")
                if name then
                    names[#names + 1] = name
                end
            end
            p:close()
        end
    end
    table.sort(names)
    return names
end

local function fill(template, name)
    return (template:gsub("{}", function() return name end))
end

--- Rows of x divided by their L2 norm.
local function normalize(x)
    return x / x:norm(2, -1):view(-1, 1)
end
M.normalize = normalize

--- The value of the model's logit scale: exp(logit_scale), as CLIP's forward uses it.
local function logit_scale(model)
    local s = model.logit_scale
    if type(s) == "function" then
        s = s(model)
    end
    if tensor.is_tensor(s) then
        s = s:item()
    end
    return math.exp(s)
end
M.logit_scale = logit_scale

--- A digest of the model's weights (names, dtypes, shapes and values of every parameter), computed
-- once per model. Keys the on-disk classifier cache.
function M.fingerprint(model)
    if model._fingerprint then
        return model._fingerprint
    end
    local h = require("clipl.digest").new()
    for name, p in model:named_parameters() do
        h:update(name)
        h:update(p)
    end
    model._fingerprint = h:hex()
    return model._fingerprint
end

local function cache_key(model, classnames, templates)
    local h = require("clipl.digest").new()
    h:update(M.fingerprint(model))
    for _, t in ipairs(templates) do
        h:update("\0t" .. t)
    end
    for _, c in ipairs(classnames) do
        h:update("\0c" .. c)
    end
    return h:hex()
end

local function cache_dir()
    local base = os.getenv("CLIPL_CACHE") or (os.getenv("XDG_CACHE_HOME") and
        os.getenv("XDG_CACHE_HOME") .. "/clipl") or ((os.getenv("HOME") or ".") .. "/.cache/clipl")
    return base .. "/zeroshot"
end

local Classifier = {}
Classifier.__index = Classifier

--- Builds a classifier.
-- model: a loaded CLIP model; classnames: array of strings; templates: see M.templates.
-- opts.batch (prompts encoded per call, default 256), opts.cache (default true: reuse a classifier
-- built before for the same weights and prompts, stored under the cache folder), opts.tokenize
-- (a function texts -> N x 77 tensor; default clip.tokenize or the model's tokenizer),
-- opts.progress (function(done, total) called after each batch).
function M.classifier(model, classnames, templates, opts)
    opts = opts or {}
    if type(classnames) ~= "table" or #classnames == 0 then
        error("classifier: expected a non-empty array of class names", 2)
    end
    templates = M.templates(templates)
    local clip = require "clipl"
    local tokenize = opts.tokenize or (model.tokenize and function(texts)
        return model:tokenize(texts, {truncate = true})
    end) or function(texts)
        return clip.tokenize(texts, {truncate = true})
    end
    local weights
    local path
    if opts.cache ~= false and model.named_parameters then
        path = cache_dir() .. "/" .. cache_key(model, classnames, templates) .. ".safetensors"
        local ok, t = pcall(clip.load_safetensors, path)
        if ok and type(t) == "table" and t.weights and t.weights:size(1) == #classnames then
            weights = t.weights:clone()
        end
    end
    if not weights then
        local nt, nc = #templates, #classnames
        -- whole classes per call: at least one class, about opts.batch prompts
        local per_call = math.max(1, math.floor((opts.batch or 256) / nt))
        local c0 = 1
        while c0 <= nc do
            local k = math.min(per_call, nc - c0 + 1)
            local texts = {}
            for c = c0, c0 + k - 1 do
                for t = 1, nt do
                    texts[#texts + 1] = fill(templates[t], classnames[c])
                end
            end
            local emb = normalize(model:encode_text(tokenize(texts)):float())
            local d = emb:size(2)
            weights = weights or clip.zeros({nc, d})
            -- average each class's normalised prompt embeddings, then normalise the average
            local mean = emb:view(k, nt, d):mean(2)
            weights:narrow(1, c0, k):copy(normalize(mean))
            c0 = c0 + k
            if opts.progress then
                opts.progress((c0 - 1) * nt, nc * nt)
            end
        end
        if path then
            os.execute('mkdir -p "' .. cache_dir() .. '"')
            pcall(clip.save_safetensors, path, {weights = weights},
                {classes = tostring(#classnames), templates = tostring(#templates)})
        end
    end
    return setmetatable({
        model = model,
        classnames = classnames,
        templates = templates,
        weights = weights, -- classes x D, rows L2-normalised
        scale = logit_scale(model),
    }, Classifier)
end

--- Logits (scale x cosine similarity) of images (N x 3 x R x R) or image features (N x D).
function Classifier:logits(images, opts)
    local feats
    if images:dim() == 2 then
        feats = images
    else
        feats = self.model:encode_image(images)
    end
    feats = normalize(feats:float())
    return feats:matmul(self.weights:t()) * self.scale
end

--- Probabilities over the classes, N x classes (softmax of the logits, as model(image, text)).
function Classifier:classify(images)
    return self:logits(images):softmax(-1)
end

--- The k most likely classes of each image: an array (one per image) of arrays of
-- {label = name, prob = p, index = class index}, most likely first.
function Classifier:topk(images, k)
    local probs = self:classify(images)
    k = math.min(k or 5, #self.classnames)
    local values, indices = probs:topk(k, -1)
    local out = {}
    for i = 1, probs:size(1) do
        local row = {}
        for j = 1, k do
            local c = indices:get(i, j)
            row[j] = {label = self.classnames[c], prob = values:get(i, j), index = c}
        end
        out[i] = row
    end
    return out
end

M.Classifier = Classifier

return {zeroshot = M}
