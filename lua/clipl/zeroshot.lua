--- Zero-shot classification with prompt ensembles, the way OpenAI's ImageNet notebook builds its
-- classifier: every template is filled with a class name and encoded, each prompt embedding is
-- L2-normalised, the class's embeddings are averaged, and the average is normalised again.
--
--   local clf = clip.zeroshot.classifier(model, {"cat", "dog"}, "ensemble")
--   local probs = clf:classify(images)           -- N x classes, rows sum to 1
--   local top = clf:topk(images, 5)              -- per image: {{label =, prob =, index =}, ...}
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"
local files = require "clipl.files"

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
            error("templates: line " .. i .. " of " .. spec .. " has no {} for the class name: " ..
                t, 2)
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

--- The folder of cached classifiers: $CLIPL_CACHE/zeroshot, else $XDG_CACHE_HOME/clipl/zeroshot,
-- else ~/.cache/clipl/zeroshot.
function M.cache_dir()
    return (files.cache_dir() or "./.cache/clipl") .. "/zeroshot"
end

local shell_quote = files.shell_quote

--- The tokenizer that belongs to a model: $CLIPL_VOCAB, else the vocabulary in the model's folder
-- (beside its weights file), else the one in the cache folder (see clip.tokenizer_for). Raises
-- when its vocabulary is larger than the model's token table.
function M.tokenizer_of(model)
    if model._tokenizer then
        return model._tokenizer
    end
    local tokenizer = require "clipl.tokenizer"
    local dir
    if type(model.source) == "string" then
        local f = io.open(model.source .. "/.", "rb")
        if f then
            f:close()
            dir = model.source
        else
            dir = model.source:match("^(.*)/[^/]*$") or "."
        end
    end
    local ok, tok = pcall(tokenizer.tokenizer_for, dir)
    if not ok then
        error(tok, 2)
    end
    if model.vocab_size and tok.vocab_size > model.vocab_size then
        error(string.format("tokenize: the tokenizer has %d tokens but the model (%s) only %d: " ..
            "token ids would be out of range (set CLIPL_VOCAB to the model's vocabulary)",
            tok.vocab_size, tostring(model.source or "built"), model.vocab_size), 2)
    end
    model._tokenizer = tok
    return tok
end

--- model:tokenize(texts, opts): texts (a string or an array) -> N x context_length token ids
-- with the model's own tokenizer (M.tokenizer_of); opts as clip.tokenize ({truncate = true}).
function M.tokenize(model, texts, opts)
    local tok = M.tokenizer_of(model)
    opts = opts or {}
    if opts.context_length == nil and model.context_length then
        opts = {truncate = opts.truncate, context_length = model.context_length}
    end
    return tok:tokenize(texts, opts)
end

local Classifier = {}
Classifier.__index = Classifier

--- Builds a zero-shot classifier from class names and prompt templates, as OpenAI's ImageNet
-- notebook does: each template is filled with each class name, the prompts are encoded and
-- L2-normalised, each class's embeddings are averaged and the average normalised again.
-- model: a loaded CLIP model; classnames: array of strings; templates: an array of strings with
-- `{}` for the class name, a file of templates (one per line) or a shipped set name ("simple",
-- "ensemble"; default "simple"). opts.batch: prompts encoded per call (256; whole classes per
-- call, so 1000 classes x 80 templates never holds more than one chunk of prompt embeddings);
-- opts.cache (default true): reuse a classifier built before for the same weights and prompts,
-- kept under clip.zeroshot.cache_dir() or opts.cache_dir; opts.tokenize: a function texts ->
-- tokens (default: the model's own tokenizer); opts.progress: function(done, total) after each
-- chunk. Returns a Classifier: clf.weights (classes x D, rows of unit length), clf.scale
-- (exp(logit_scale)), clf.cached (true when it came from the cache), clf:classify(images),
-- clf:topk(images, k), clf:logits(images).
--
--   local model = clip.load("ViT-B/32")
--   local clf = clip.zeroshot.classifier(model, {"cat", "dog"}, "ensemble")
--   local probs = clf:classify(clip.preprocess_batch({"a.jpg", "b.jpg"}, 224))
function M.classifier(model, classnames, templates, opts)
    opts = opts or {}
    if type(model) ~= "table" or type(model.encode_text) ~= "function" then
        error("classifier: expected a model from clip.load as the first argument, got " ..
            type(model), 2)
    end
    if type(classnames) ~= "table" or #classnames == 0 then
        error("classifier: expected a non-empty array of class names", 2)
    end
    for i, c in ipairs(classnames) do
        if type(c) ~= "string" or c == "" then
            error("classifier: class name " .. i .. " is not a non-empty string", 2)
        end
    end
    local ok, tpl = pcall(M.templates, templates)
    if not ok then
        error(tpl, 2)
    end
    templates = tpl
    local clip = require "clipl"
    local tokenize = opts.tokenize or function(texts)
        return M.tokenize(model, texts, {truncate = true})
    end
    local weights, path, cached
    local dir = opts.cache_dir or M.cache_dir()
    if opts.cache ~= false and model.named_parameters then
        path = dir .. "/" .. cache_key(model, classnames, templates) .. ".safetensors"
        local f = io.open(path, "rb")
        if f then
            f:close()
            local ok2, t = pcall(clip.load_safetensors, path)
            local w = ok2 and type(t) == "table" and t.weights
            if w and w:dim() == 2 and w:size(1) == #classnames and
                (not model._cfg or w:size(2) == model._cfg.embed_dim) then
                weights = w:float():clone()
                cached = true
            end
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
            os.execute("mkdir -p " .. shell_quote(dir))
            -- best effort: a cache that cannot be written only costs time (the save is atomic)
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
        cached = cached or false,
        cache_path = path,
    }, Classifier)
end

--- Logits (scale x cosine similarity) of images (N x 3 x R x R, or one 3 x R x R image) or of
-- image features (N x D, e.g. from model:encode_image): N x classes.
function Classifier:logits(images)
    if not tensor.is_tensor(images) then
        error("classify: expected images (N x 3 x R x R) or image features (N x D), got " ..
            type(images), 3)
    end
    local feats
    if images:dim() == 2 then
        if images:size(2) ~= self.weights:size(2) then
            error(string.format("classify: features are %dx%d but the classifier's embeddings " ..
                "have %d dims", images:size(1), images:size(2), self.weights:size(2)), 3)
        end
        feats = images
    else
        feats = self.model:encode_image(images)
    end
    feats = normalize(feats:float())
    return feats:matmul(self.weights:t()) * self.scale
end

--- Probabilities over the classes, N x classes: the softmax of the logit scale times the cosine
-- similarities, as model(image, text) gives. images: N x 3 x R x R, or N x D image features.
--
--   local probs = clf:classify(images)        -- each row sums to 1
function Classifier:classify(images)
    return self:logits(images):softmax(-1)
end

--- The k most likely classes of each image (all classes when k is nil): an array (one per image)
-- of arrays of {label = name, prob = p, index = class index}, most likely first.
--
--   for _, hit in ipairs(clf:topk(images, 3)[1]) do print(hit.label, hit.prob) end
function Classifier:topk(images, k)
    local probs = self:classify(images)
    k = math.min(k or #self.classnames, #self.classnames)
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

-- models.lua has no model:tokenize (yet): give every model the one above.
do
    local ok, models = pcall(require, "clipl.models")
    local Model = ok and type(models) == "table" and models.models and models.models.Model
    if Model and Model.tokenize == nil then
        Model.tokenize = M.tokenize
    end
end

-- ---- contact sheets (engine/image/sheet.c) ------------------------------------------------------

local ffi = require "ffi"
local C = lib.C

--- Draws a contact sheet with libvips: a grid of thumbnails, each with its file name and its top
-- labels as bars with the probability in percent. results: an array of {image = path, top =
-- {{label =, prob =}, ...}} (what `clipl zeroshot --format json` prints); opts.columns (4),
-- opts.thumb (thumbnail box in pixels, 160), opts.labels (bars per image, 5). The format follows
-- out's extension (.png, .jpg, .webp). Images that cannot be read are skipped and returned as a
-- list of {path =, message =}.
--
--   clip.zeroshot.contact_sheet("sheet.png", {{image = "cat.jpg", top = {{label = "cat",
--       prob = 0.9}, {label = "dog", prob = 0.1}}}})
function M.contact_sheet(out, results, opts)
    opts = opts or {}
    if type(out) ~= "string" then
        error("contact_sheet: expected an output path, got " .. type(out), 2)
    end
    if type(results) ~= "table" then
        error("contact_sheet: expected an array of {image =, top =} results, got " ..
            type(results), 2)
    end
    local s = C.clipl_sheet_new(opts.columns or 4, opts.thumb or 160)
    if s == nil then
        lib.check_ptr(s, 2)
    end
    s = ffi.gc(s, C.clipl_sheet_free)
    local nl = opts.labels or 5
    local bad = {}
    for i, r in ipairs(results) do
        if type(r) ~= "table" or type(r.image) ~= "string" then
            error("contact_sheet: result " .. i .. " has no image path", 2)
        end
        local top = r.top or {}
        local n = math.min(nl, #top)
        local labels = ffi.new("const char *[?]", n + 1)
        local values = ffi.new("double[?]", n + 1)
        local keep = {}
        for j = 1, n do
            keep[j] = tostring(top[j].label)
            labels[j - 1] = keep[j]
            values[j - 1] = tonumber(top[j].prob) or 0
        end
        local caption = r.image:match("([^/]*)$")
        if C.clipl_sheet_add(s, r.image, caption, n, labels, values) ~= 0 then
            local msg = ffi.string(C.clipl_errmsg())
            C.clipl_errclear()
            bad[#bad + 1] = {path = r.image, message = msg}
        end
    end
    if C.clipl_sheet_count(s) == 0 then
        error("contact_sheet: none of the " .. #results .. " images could be drawn" ..
            (bad[1] and (" (" .. bad[1].message .. ")") or ""), 2)
    end
    lib.check(C.clipl_sheet_save(s, out), 2)
    C.clipl_sheet_free(ffi.gc(s, nil))
    return bad
end

-- ---- decoding on a background thread (engine/image/async.c) -------------------------------------

local Job = {}
Job.__index = Job

--- Starts decoding and preprocessing image files on a background thread (clip.preprocess_batch
-- with the same arguments) and returns a job at once: job:wait() returns what preprocess_batch
-- would (the N x 3 x n_px x n_px batch and the list of bad items); job:done() says whether wait
-- would block. Lets a script encode one batch while the next is decoded.
--
--   local job = clip.preprocess_batch_start(paths, 224, {skip_bad = true})
--   -- ... encode the previous batch ...
--   local images, bad = job:wait()
function M.preprocess_batch_start(paths, n_px, opts)
    opts = opts or {}
    n_px = n_px or 224
    if type(paths) ~= "table" then
        error("preprocess_batch_start: expected a list of paths, got " .. type(paths), 2)
    end
    local n = #paths
    local arr = ffi.new("const char *[?]", n + 1)
    for i = 1, n do
        if type(paths[i]) ~= "string" then
            error("preprocess_batch_start: path " .. i .. " is a " .. type(paths[i]) ..
                ", not a string", 2)
        end
        arr[i - 1] = paths[i]
    end
    local flags = (opts.autorotate and 1 or 0) + (opts.skip_bad and 2 or 0)
    local j = C.clipl_batch_job_start(n, arr, n_px, flags, opts.threads or 0)
    if j == nil then
        lib.check_ptr(j, 2)
    end
    local paths_copy = {}
    for i = 1, n do
        paths_copy[i] = paths[i]
    end
    return setmetatable({h = ffi.gc(j, C.clipl_batch_job_free), paths = paths_copy}, Job)
end

--- true when the job has finished (wait returns at once).
function Job:done()
    return self.h == nil or C.clipl_batch_job_done(self.h) == 1
end

--- Waits for the job: the batch tensor and the list of bad items ({index =, path =, message =}),
-- as clip.preprocess_batch returns them. Raises as preprocess_batch would.
function Job:wait()
    if self.h == nil then
        error("preprocess_batch_start: wait called twice", 2)
    end
    local n = #self.paths
    local status = ffi.new("int[?]", n + 1)
    local out = ffi.new("clipl_tensor *[1]")
    local rc = C.clipl_batch_job_wait(self.h, out, status)
    if rc ~= 0 then
        C.clipl_batch_job_free(ffi.gc(self.h, nil))
        self.h = nil
        lib.check(rc, 2)
    end
    local t = lib.adopt(out[0])
    local bad = {}
    for i = 1, n do
        if status[i - 1] ~= 0 then
            bad[#bad + 1] = {index = i, path = self.paths[i],
                message = ffi.string(C.clipl_batch_job_message(self.h, i - 1))}
        end
    end
    C.clipl_batch_job_free(ffi.gc(self.h, nil))
    self.h = nil
    return t, bad
end

M.Job = Job

return {zeroshot = M, preprocess_batch_start = M.preprocess_batch_start}
