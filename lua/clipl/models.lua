--- CLIP models: load OpenAI's checkpoints (or HuggingFace / open_clip ones), encode images and
-- text, and open the model up as a tree that mirrors the checkpoint names.
--
--   local model, preprocess = clip.load("ViT-B/32")           -- name (cache), file or folder
--   local logits_per_image, logits_per_text = model(images, tokens)
--   local emb, feats = model:encode_image(images, {features = {6, 12}})
--   local x = model.visual.stem(images)                         -- the blocks one by one
--   for i = 1, #model.visual.transformer.resblocks do
--       x = model.visual.transformer.resblocks[i](x)
--   end
--   local emb2 = model.visual.head(x)                           -- == model:encode_image(images)
--   for name, p in model:named_parameters() do ... end         -- OpenAI's state_dict keys
--
-- Lua's block i is the checkpoint's resblocks.(i-1). Every node is one C call.
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, check, adopt, slot = lib.C, lib.check, lib.adopt, lib.slot
local is_tensor = tensor.is_tensor

local M = {}

local VIT = 0
local VISUAL, TEXT = 0, 1
local FULL_CONTEXT = 1

--- OpenAI's nine released models, in clip.available_models() order.
local NAMES = {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14",
    "ViT-L/14@336px"}
local FILES = {
    ["RN50"] = "RN50.pt", ["RN101"] = "RN101.pt", ["RN50x4"] = "RN50x4.pt",
    ["RN50x16"] = "RN50x16.pt", ["RN50x64"] = "RN50x64.pt", ["ViT-B/32"] = "ViT-B-32.pt",
    ["ViT-B/16"] = "ViT-B-16.pt", ["ViT-L/14"] = "ViT-L-14.pt",
    ["ViT-L/14@336px"] = "ViT-L-14-336px.pt",
}
local CONFIGS = {
    ["RN50"] = "RN50", ["RN101"] = "RN101", ["RN50x4"] = "RN50x4", ["RN50x16"] = "RN50x16",
    ["RN50x64"] = "RN50x64", ["ViT-B/32"] = "ViT-B-32", ["ViT-B/16"] = "ViT-B-16",
    ["ViT-L/14"] = "ViT-L-14", ["ViT-L/14@336px"] = "ViT-L-14-336",
}

-- ---- helpers ------------------------------------------------------------------------------------

local function raise_last(level)
    local msg = ffi.string(C.clipl_errmsg())
    C.clipl_errclear()
    error(msg ~= "" and msg or "clipl: model error", level + 1)
end

-- A borrowed C tensor as a Lua handle of its own (one more reference).
local function borrow(p)
    return adopt(C.clipl_tensor_retain(p))
end

local files = require "clipl.files"
local exists, is_dir, shell_quote = files.exists, files.is_dir, files.shell_quote

local function cache_dir()
    return files.cache_dir() or "./.cache/clipl"
end

local function list_dir(dir)
    local out = {}
    local p = io.popen("ls -1 " .. shell_quote(dir) .. " 2>/dev/null")
    if not p then
        return out
    end
    for line in p:lines() do
        out[#out + 1] = line
    end
    p:close()
    return out
end

local dtype_ids = {f32 = 0, float32 = 0, bf16 = 1, bfloat16 = 1}

local function model_opts(opts, level)
    local o = ffi.new("clipl_model_opts")
    if opts == nil then
        return o
    end
    if type(opts) ~= "table" then
        error("load: options must be a table, got " .. type(opts), level + 1)
    end
    if opts.dtype ~= nil then
        local d = dtype_ids[opts.dtype]
        if not d then
            error("load: dtype must be \"f32\" or \"bf16\", got " .. tostring(opts.dtype),
                level + 1)
        end
        o.dtype = d
    end
    o.vision_heads = opts.vision_heads or 0
    o.text_heads = opts.text_heads or 0
    o.batch_hint = opts.batch_hint or 0
    if opts.config then
        o.config_path = opts.config
    end
    return o
end

-- ---- nodes --------------------------------------------------------------------------------------

local Node = {}
Node.__index = Node

-- A callable node: fn(x, ...) does the work; prefix selects its parameters.
local function node(model, prefix, fn, fields)
    local n = fields or {}
    n._model, n.name, n._fn = model, prefix, fn
    return setmetatable(n, Node)
end

function Node.__call(self, ...)
    return self._fn(...)
end

function Node:__tostring()
    return "clipl.Node(" .. self.name .. ")"
end

--- Parameters under this node's prefix: an iterator of (name, tensor) with full checkpoint keys.
function Node:named_parameters()
    return self._model:named_parameters(self.name .. ".")
end

function Node:parameters()
    return self._model:parameters(self.name .. ".")
end

-- A list of nodes that is also callable (runs them in order), like nn.Sequential.
local function sequence(model, prefix, items)
    local s = node(model, prefix, nil, items)
    s._fn = function(x)
        for i = 1, #items do
            x = items[i](x)
        end
        return x
    end
    return s
end

-- ---- the model ----------------------------------------------------------------------------------

local Model = {}
Model.__index = Model

local out1 = lib.call_out -- fn(..., slot) -> the tensor it produced

local function as_tokens(t, level)
    if not is_tensor(t) then
        error("encode_text: tokens must be a tensor (clip.tokenize(texts)), got " .. type(t),
            level + 1)
    end
    if t:dim() == 1 then
        t = t:view(1, -1)
    end
    return t
end

local function as_images(t, level)
    if not is_tensor(t) then
        error("encode_image: images must be a N x 3 x R x R tensor, got " .. type(t), level + 1)
    end
    if t:dim() == 3 then
        t = t:unsqueeze(1)
    end
    return t
end

local function build_tree(self)
    local h = self._h
    local cfg = self._cfg
    local function blk(tower, i)
        return function(x)
            return out1(C.clipl_model_block_forward, h, tower, i - 1, x, slot)
        end
    end
    -- vision
    local visual
    local stem = node(self, "visual", function(images)
        return out1(C.clipl_model_visual_stem, h, as_images(images, 3), slot)
    end)
    local head = node(self, "visual", function(x)
        return out1(C.clipl_model_visual_head, h, x, slot)
    end)
    if cfg.vision_kind == VIT then
        local blocks = {}
        for i = 1, cfg.vision_layers[0] do
            blocks[i] = node(self, "visual.transformer.resblocks." .. (i - 1), blk(VISUAL, i))
        end
        local resblocks = sequence(self, "visual.transformer.resblocks", blocks)
        local transformer = sequence(self, "visual.transformer", blocks)
        transformer.resblocks = resblocks
        visual = node(self, "visual", function(images) return self:encode_image(images) end, {
            stem = stem,
            transformer = transformer,
            ln_post = node(self, "visual.ln_post", function(x)
                return out1(C.clipl_model_visual_ln_post, h, x, slot)
            end),
            head = head,
        })
    else
        visual = node(self, "visual", function(images) return self:encode_image(images) end, {
            stem = stem,
            attnpool = node(self, "visual.attnpool", function(x)
                return out1(C.clipl_model_visual_head, h, x, slot)
            end),
            head = head,
        })
        local k = 0
        for l = 1, 4 do
            local items = {}
            for b = 1, cfg.vision_layers[l - 1] do
                k = k + 1
                items[b] = node(self, "visual.layer" .. l .. "." .. (b - 1), blk(VISUAL, k))
            end
            visual["layer" .. l] = sequence(self, "visual.layer" .. l, items)
        end
    end
    self.visual = visual
    -- text
    local tblocks = {}
    for i = 1, cfg.transformer_layers do
        tblocks[i] = node(self, "transformer.resblocks." .. (i - 1), blk(TEXT, i))
    end
    local transformer = sequence(self, "transformer", tblocks)
    transformer.resblocks = sequence(self, "transformer.resblocks", tblocks)
    self.transformer = transformer
    --- token_embedding[tokens] + positional_embedding: N x T -> N x T x width
    self.text_stem = node(self, "token_embedding", function(tokens)
        return out1(C.clipl_model_text_embed, h, as_tokens(tokens, 3), slot)
    end)
    --- ln_final at each row's end token, @ text_projection: (N x T x width, tokens) -> N x E
    self.text_head = node(self, "ln_final", function(x, tokens)
        return out1(C.clipl_model_text_head, h, x, as_tokens(tokens, 3), slot)
    end)
end

local function wrap(p, source)
    if p == nil then
        raise_last(3)
    end
    local h = ffi.gc(p, C.clipl_model_free)
    local cfg = ffi.new("clipl_model_config")
    check(C.clipl_model_get_config(h, cfg))
    local self = setmetatable({_h = h, _cfg = cfg, source = source}, Model)
    build_tree(self)
    local i = C.clipl_model_param_find(h, "logit_scale")
    --- the logit scale as CLIP stores it (a log); exp() of it multiplies the cosine similarities
    self.logit_scale = borrow(C.clipl_model_param(h, i))
    self.input_resolution = cfg.image_resolution
    self.context_length = cfg.context_length
    self.vocab_size = cfg.vocab_size
    return self
end

function Model:__tostring()
    local info = self:info()
    return string.format("clipl.Model(%s, %s, %d parameters, %s)", info.architecture,
        self.source or "built", info.parameters, info.dtype)
end

-- The training path (clipl.train) when grad mode is on and a parameter requires grad; otherwise
-- nil after rebuilding the prepared weights if training changed the parameters.
local function training(self)
    local tr = package.loaded["clipl.train"]
    if not tr then
        return nil
    end
    tr = tr.train
    if tr.wants_grad(self) then
        return tr
    end
    tr.ensure_prepared(self)
    return nil
end

--- Images N x 3 x R x R (or 3 x R x R) -> N x embed_dim f32. When grad mode is on and a parameter
-- requires grad, the differentiable path of clip.train runs instead (docs/training.md).
-- opts.features = {i, ...} (1-based block indices, negative from the end) also returns a list of
-- those blocks' outputs.
function Model:encode_image(images, opts)
    images = as_images(images, 2)
    local feats = opts and opts.features
    local tr = training(self)
    if tr and not feats then
        return tr.forward_image(self, images)
    end
    if not feats then
        return out1(C.clipl_model_encode_image, self._h, images, slot)
    end
    local nb = C.clipl_model_block_count(self._h, VISUAL)
    local n = #feats
    local idx = ffi.new("int[?]", n + 1)
    for i = 1, n do
        local b = feats[i]
        if type(b) ~= "number" or b == 0 or b % 1 ~= 0 or b > nb or b < -nb then
            error("encode_image: features[" .. i .. "] = " .. tostring(b) ..
                " is not a block index (1.." .. nb .. " or negative from the end)", 2)
        end
        idx[i - 1] = b > 0 and b - 1 or nb + b
    end
    local fs = ffi.new("clipl_tensor *[?]", n + 1)
    slot[0] = nil
    local rc = C.clipl_model_encode_image_features(self._h, images, n, idx, fs, slot)
    check(rc, 2)
    local emb = adopt(slot[0])
    local out = {}
    for i = 1, n do
        out[i] = adopt(fs[i - 1])
    end
    return emb, out
end

--- Tokens N x T (i32/i64, as clip.tokenize gives) -> N x embed_dim f32, pooled at each row's end
-- token. Rows run only up to their end token (exact: the mask is causal); opts.full_context runs
-- all T positions as OpenAI's code does.
function Model:encode_text(tokens, opts)
    tokens = as_tokens(tokens, 2)
    local tr = training(self)
    if tr then
        return tr.forward_text(self, tokens)
    end
    local flags = (opts and opts.full_context) and FULL_CONTEXT or 0
    return out1(C.clipl_model_encode_text_ex, self._h, tokens, slot, flags)
end

--- OpenAI's CLIP.forward: logits_per_image (Ni x Nt) and logits_per_text (its transpose).
function Model:logits(images, tokens)
    training(self)
    local a = ffi.new("clipl_tensor *[1]")
    local b = ffi.new("clipl_tensor *[1]")
    check(C.clipl_model_logits(self._h, as_images(images, 2), as_tokens(tokens, 2), a, b))
    return adopt(a[0]), adopt(b[0])
end

--- The same from embeddings (image_features Ni x E, text_features Nt x E).
function Model:logits_from_features(image_features, text_features)
    local a = ffi.new("clipl_tensor *[1]")
    local b = ffi.new("clipl_tensor *[1]")
    check(C.clipl_model_logits_from_features(self._h, image_features, text_features, a, b))
    return adopt(a[0]), adopt(b[0])
end

function Model.__call(self, images, tokens)
    return self:logits(images, tokens)
end

--- Iterator of (name, tensor) over the parameters (BatchNorm running statistics excluded), with
-- OpenAI's state_dict keys, in its order. prefix (optional) keeps the names that start with it.
function Model:named_parameters(prefix, with_buffers)
    local h = self._h
    local n = C.clipl_model_param_count(h)
    local i = -1
    return function()
        while true do
            i = i + 1
            if i >= n then
                return nil
            end
            local name = ffi.string(C.clipl_model_param_name(h, i))
            if (with_buffers or C.clipl_model_param_is_buffer(h, i) == 0) and
                (not prefix or name:sub(1, #prefix) == prefix) then
                return name, borrow(C.clipl_model_param(h, i))
            end
        end
    end
end

--- Array of the parameter tensors (as named_parameters).
function Model:parameters(prefix)
    local out, names = {}, {}
    for name, p in self:named_parameters(prefix) do
        out[#out + 1] = p
        names[#names + 1] = name
    end
    -- the checkpoint keys, for clip.optim (logit_scale clamp, no-decay rules, freeze patterns)
    out.names = names
    return out
end

--- Table name -> tensor of every entry (parameters and BatchNorm buffers), like state_dict().
function Model:state_dict()
    local out = {}
    for name, p in self:named_parameters(nil, true) do
        out[name] = p
    end
    return out
end

--- The tensor stored under a checkpoint key (nil when there is none).
function Model:parameter(name)
    local i = C.clipl_model_param_find(self._h, name)
    if i < 0 then
        return nil
    end
    return borrow(C.clipl_model_param(self._h, i))
end

--- Replaces a parameter (same shape; converted to f32); call model:prepare() afterwards.
function Model:set_parameter(name, t)
    check(C.clipl_model_set_param(self._h, name, t))
end

--- Rebuilds the prepared weights (oneDNN layouts, folded BatchNorm) from the parameters: call it
-- after changing parameters in place or with set_parameter.
function Model:prepare()
    rawset(self, "_params_changed", false)
    check(C.clipl_model_prepare(self._h))
    return self
end

-- OpenAI's build_model arguments, the names of a config's fields.
local HPARAMS = {"embed_dim", "image_resolution", "vision_layers", "vision_width",
    "vision_patch_size", "vision_heads", "context_length", "vocab_size", "transformer_width",
    "transformer_heads", "transformer_layers"}

--- The architecture in a clipl_model_config (cdata) as a table of OpenAI's build_model arguments:
-- embed_dim, image_resolution, vision_layers (a number for a ViT, 4 numbers for a ResNet),
-- vision_width, vision_patch_size (ViT only), vision_heads, context_length, vocab_size,
-- transformer_width, transformer_heads, transformer_layers.
function M.config_fields(c)
    local vit = c.vision_kind == VIT
    local t = {}
    for _, k in ipairs(HPARAMS) do
        t[k] = c[k]
    end
    t.vision_layers = vit and c.vision_layers[0] or
        {c.vision_layers[0], c.vision_layers[1], c.vision_layers[2], c.vision_layers[3]}
    t.vision_patch_size = vit and c.vision_patch_size or nil
    return t
end

--- The architecture (clip.models.config_fields), parameter count, dtype and work of one image /
-- one 77-token text.
function Model:info()
    local c = self._cfg
    local fi, ft = ffi.new("int64_t[1]"), ffi.new("int64_t[1]")
    check(C.clipl_model_config_flops(c, fi, ft))
    local vit = c.vision_kind == VIT
    local t = M.config_fields(c)
    t.architecture = vit and "VisionTransformer" or "ModifiedResNet"
    t.vision_kind = vit and "vit" or "resnet"
    t.activation = c.act == 4 and "quick_gelu" or "gelu"
    t.dtype = C.clipl_model_dtype(self._h) == 1 and "bf16" or "f32"
    t.parameters = tonumber(C.clipl_model_num_params(self._h))
    t.flops_per_image = tonumber(fi[0])
    t.flops_per_text = tonumber(ft[0])
    t.format = ffi.string(C.clipl_model_source_format(self._h))
    t.source = self.source
    return t
end

--- The architecture as build_model's arguments plus the activation: what a checkpoint stores as
-- its "hparams" metadata (JSON).
function Model:hparams()
    local info = self:info()
    local h = {activation = info.activation}
    for _, k in ipairs(HPARAMS) do
        h[k] = info[k]
    end
    return h
end

--- Frees the model now (it is also freed when collected).
function Model:free()
    if self._h ~= nil then
        C.clipl_model_free(ffi.gc(self._h, nil))
        self._h = nil
    end
end

M.Model = Model
M.Node = Node

-- ---- loading ------------------------------------------------------------------------------------

--- OpenAI's nine model names, then the local models found in the cache folder (weights files and
-- model folders that are not one of the nine).
function M.available_models()
    local out, known = {}, {}
    for _, n in ipairs(NAMES) do
        out[#out + 1] = n
        known[FILES[n]] = true
    end
    for _, f in ipairs(list_dir(cache_dir())) do
        if not known[f] and not f:match("%.part$") and
            (f:match("%.pt$") or f:match("%.safetensors$") or f:match("%.bin$") or
                is_dir(cache_dir() .. "/" .. f)) and not f:match("%.txt%.gz$") then
            out[#out + 1] = f
        end
    end
    return out
end

-- Where a name or path points: a file or folder that exists, else the cache folder's file.
local function resolve(name)
    if exists(name) or is_dir(name) then
        return name
    end
    local dir = cache_dir()
    local candidates = {}
    if FILES[name] then
        candidates[#candidates + 1] = dir .. "/" .. FILES[name]
    end
    local stem = name:gsub("/", "-"):gsub("@", "-")
    for _, c in ipairs({name, stem .. ".pt", stem .. ".safetensors", stem}) do
        candidates[#candidates + 1] = dir .. "/" .. c
    end
    for _, c in ipairs(candidates) do
        if exists(c) or is_dir(c) then
            return c
        end
    end
    local hint = FILES[name] and (" (fetch it with `clipl download " .. name .. "`)") or
        (" (known names: " .. table.concat(NAMES, ", ") .. ")")
    return nil, "load: '" .. name .. "' is neither a file, a folder nor a model in the cache " ..
        "folder " .. dir .. hint
end

--- Loads a CLIP model: a name (OpenAI's, looked up in the cache folder), a weights file in any
-- format or a model folder. opts.dtype = "f32" (default) or "bf16"; opts.config = a JSON config
-- (heads, activation) for files without one. Returns the model and, when the image module is
-- there, preprocess(img) -> 3 x R x R at the model's resolution.
function M.load(name, opts)
    if name == nil then
        local b = M.bundled_model()
        if not b then
            error("load: no model name given and no bundled model in " .. lib.config.models ..
                "/clipl-tiny", 2)
        end
        name = b.path
    end
    if type(name) ~= "string" or name == "" then
        error("load: expected a model name, file or folder, got " .. type(name), 2)
    end
    local path, err = resolve(name)
    if not path then
        error(err, 2)
    end
    local o = model_opts(opts, 2)
    local model = wrap(C.clipl_model_load(path, o), path)
    local clip = package.loaded["clipl"]
    local pre = (clip and clip.preprocess) or (function()
        local ok, im = pcall(require, "clipl.image")
        return ok and type(im) == "table" and im.preprocess or nil
    end)()
    local preprocess
    if pre then
        local res = model.input_resolution
        preprocess = function(img)
            return pre(img, res)
        end
    end
    return model, preprocess
end

--- The bundled model (models/clipl-tiny, trained by clipl on its synthetic shapes): {path = its
-- weights file, samples = a folder of sample images, labels = the classes of the samples}, or nil
-- when this build has none. clip.load() with no name loads it.
function M.bundled_model()
    local dir = lib.config.models .. "/clipl-tiny"
    local path = dir .. "/model.safetensors"
    if not exists(path) then
        return nil
    end
    local labels = {}
    local f = io.open(dir .. "/samples/labels.txt", "r")
    if f then
        for line in f:lines() do
            if line:find("%S") then
                labels[#labels + 1] = line
            end
        end
        f:close()
    end
    return {path = path, samples = dir .. "/samples", labels = labels, dir = dir}
end

--- A model from a table name -> tensor (OpenAI, HuggingFace or open_clip names).
function M.model_from_tensors(tensors, opts)
    local d = ffi.gc(C.clipl_tdict_new(), C.clipl_tdict_free)
    local names = {}
    for k in pairs(tensors) do
        names[#names + 1] = k
    end
    table.sort(names)
    for _, k in ipairs(names) do
        check(C.clipl_tdict_add(d, k, tensors[k]))
    end
    return wrap(C.clipl_model_from_tdict(d, "tensors", model_opts(opts, 2)), nil)
end

local function config_path(name)
    if exists(name) then
        return name
    end
    local stem = CONFIGS[name] or name
    return lib.config.models .. "/configs/" .. stem .. ".json"
end

--- The architecture of a named model (ViT-B/32 ...) or a JSON config file, as a table.
function M.model_config(name)
    local c = ffi.new("clipl_model_config")
    local path = config_path(name)
    if not exists(path) then
        error("model_config: no config for '" .. tostring(name) .. "' (looked for " .. path ..
            ")", 2)
    end
    check(C.clipl_model_config_from_json(path, c))
    return c
end

--- A model of a named architecture (or JSON config) with seeded pseudo-random weights: for tests
-- and benchmarks. opts.seed (default 0), opts.dtype.
function M.build_model(name, opts)
    opts = opts or {}
    local c = M.model_config(name)
    local o = model_opts({dtype = opts.dtype, batch_hint = opts.batch_hint}, 2)
    return wrap(C.clipl_model_new(c, opts.seed or 0, o), nil)
end

--- Parameter count of a named architecture, computed without building it.
function M.model_num_params(name)
    return tonumber(C.clipl_model_config_num_params(M.model_config(name)))
end

return {
    models = M,
    load = M.load,
    available_models = M.available_models,
    build_model = M.build_model,
    model_config = M.model_config,
    model_num_params = M.model_num_params,
    model_from_tensors = M.model_from_tensors,
    bundled_model = M.bundled_model,
}
