--- clipl.train: the training side of the models.
--
-- * A differentiable forward of both towers (ViT, ModifiedResNet with frozen or train-mode batch
--   norm, the causal text transformer) composed of ops that record onto the autograd tape with the
--   model's own parameter tensors, so loss:backward() reaches every parameter. The fast inference
--   path (prepared oneDNN weights) has no backward; model:encode_image/encode_text take this path
--   when grad mode is on and a parameter requires grad.
-- * Checkpoints (model, optimizer, schedule, RNG, step) written atomically.
-- * Data loaders: CSV/TSV of image path + caption, or a folder per class with templates.
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C = lib.C
local M = {}

local function clip()
    return package.loaded["clipl"] or require "clipl"
end

-- ---- the differentiable forward ---------------------------------------------------------------

local function param(model, name)
    local t = model:parameter(name)
    if t == nil then
        error("train: model has no parameter '" .. name .. "'", 3)
    end
    return t
end

local function layer_norm(model, x, name)
    return x:layer_norm({x:size(x:dim())}, param(model, name .. ".weight"),
        param(model, name .. ".bias"), 1e-5)
end

-- The compute dtype of the training forward: nil (f32) or "bf16" (model.train_dtype). In bf16 the
-- matmul-like ops (linear, attention, the patch convolution, the projections) take bf16 copies of
-- their inputs and weights, recorded as conversions, so the gradients reach the f32 parameters (the
-- master weights) in f32; the residual stream, layer norms and the loss stay f32.
local function cdt(model)
    local d = rawget(model, "train_dtype")
    return (d and d ~= "f32") and d or nil
end

-- A parameter as a matmul operand: in the compute dtype.
local function weight(model, name, cd)
    local p = param(model, name)
    return cd and p:to(cd) or p
end

local function as_f32(x, cd)
    return cd and x:to("f32") or x
end

-- x [N, T, W] through one residual attention block (OpenAI's ResidualAttentionBlock).
local function block(model, pre, x, heads, mask, act)
    local n, t, w = x:size(1), x:size(2), x:size(3)
    local cd = cdt(model)
    local hd = w / heads
    local h = layer_norm(model, x, pre .. "ln_1")
    if cd then
        h = h:to(cd)
    end
    local qkv = h:linear(weight(model, pre .. "attn.in_proj_weight", cd),
        weight(model, pre .. "attn.in_proj_bias", cd))
    local function head_split(i)
        return qkv:narrow(3, i * w + 1, w):reshape(n, t, heads, hd):transpose(2, 3)
    end
    local o = clip().attention(head_split(0), head_split(1), head_split(2), {mask = mask})
    o = o:transpose(2, 3):reshape(n, t, w)
    x = x + as_f32(o:linear(weight(model, pre .. "attn.out_proj.weight", cd),
        weight(model, pre .. "attn.out_proj.bias", cd)), cd)
    h = layer_norm(model, x, pre .. "ln_2")
    if cd then
        h = h:to(cd)
    end
    h = h:linear(weight(model, pre .. "mlp.c_fc.weight", cd),
        weight(model, pre .. "mlp.c_fc.bias", cd), act)
    return x + as_f32(h:linear(weight(model, pre .. "mlp.c_proj.weight", cd),
        weight(model, pre .. "mlp.c_proj.bias", cd)), cd)
end

-- x [N, W] f32 @ the projection (in the compute dtype) -> f32
local function project(model, x, name)
    local cd = cdt(model)
    return as_f32((cd and x:to(cd) or x):matmul(weight(model, name, cd)), cd)
end

local function info_of(model)
    local i = rawget(model, "_train_info")
    if not i then
        i = model:info()
        rawset(model, "_train_info", i)
    end
    return i
end

local function vit_forward(model, images)
    local info = info_of(model)
    local n, w = images:size(1), info.vision_width
    local cd = cdt(model)
    local x = as_f32((cd and images:to(cd) or images):conv2d(
        weight(model, "visual.conv1.weight", cd), nil, {stride = info.vision_patch_size}), cd)
    x = x:reshape(n, w, -1):transpose(2, 3)
    local cls = param(model, "visual.class_embedding"):reshape(1, 1, w):expand(n, 1, w)
    x = clip().cat({cls, x}, 2) + param(model, "visual.positional_embedding")
    x = layer_norm(model, x, "visual.ln_pre")
    for i = 0, info.vision_layers - 1 do
        x = block(model, "visual.transformer.resblocks." .. i .. ".", x, info.vision_heads, nil,
            info.activation)
    end
    x = layer_norm(model, x:select(2, 1), "visual.ln_post")
    return project(model, x, "visual.proj")
end

-- ModifiedResNet: batch norm uses the running statistics (frozen, as CLIP fine-tuning does)
-- unless model.bn_train is set, then the batch statistics (clip.nn.batch_norm_train, which also
-- updates the running statistics).
local function bn(model, x, name)
    local mean = param(model, name .. ".running_mean")
    local var = param(model, name .. ".running_var")
    local wt, b = param(model, name .. ".weight"), param(model, name .. ".bias")
    if rawget(model, "bn_train") then
        -- the running statistics are updated in place: private copies of file mappings
        lib.check(C.clipl_tensor_make_writable(mean))
        lib.check(C.clipl_tensor_make_writable(var))
        return clip().nn.batch_norm_train(x, mean, var, wt, b, 0.1, 1e-5)
    end
    return x:batch_norm(mean, var, wt, b, 1e-5)
end

local function conv_bn(model, x, conv, bnname, opts, relu)
    x = bn(model, x:conv2d(param(model, conv .. ".weight"), nil, opts), bnname)
    return relu and x:relu() or x
end

local function bottleneck(model, pre, x, stride)
    local out = conv_bn(model, x, pre .. "conv1", pre .. "bn1", nil, true)
    out = conv_bn(model, out, pre .. "conv2", pre .. "bn2", {padding = 1}, true)
    if stride > 1 then
        out = out:avg_pool2d(stride)
    end
    out = conv_bn(model, out, pre .. "conv3", pre .. "bn3", nil, false)
    local idn = x
    if model:parameter(pre .. "downsample.0.weight") then
        if stride > 1 then
            idn = idn:avg_pool2d(stride)
        end
        idn = conv_bn(model, idn, pre .. "downsample.0", pre .. "downsample.1", nil, false)
    end
    return (out + idn):relu()
end

local function attnpool(model, x, heads)
    local n, c = x:size(1), x:size(2)
    x = x:reshape(n, c, -1):transpose(2, 3) -- [N, HW, C]
    x = clip().cat({x:mean(2, {keepdim = true}), x}, 2) +
        param(model, "visual.attnpool.positional_embedding")
    local hd = c / heads
    local function proj(name, rows)
        local y = rows:linear(param(model, "visual.attnpool." .. name .. ".weight"),
            param(model, "visual.attnpool." .. name .. ".bias"))
        return y:reshape(n, y:size(2), heads, hd):transpose(2, 3)
    end
    local q = proj("q_proj", x:narrow(2, 1, 1))
    local o = clip().attention(q, proj("k_proj", x), proj("v_proj", x))
    o = o:transpose(2, 3):reshape(n, c)
    return o:linear(param(model, "visual.attnpool.c_proj.weight"),
        param(model, "visual.attnpool.c_proj.bias"))
end

local function resnet_forward(model, images)
    local info = info_of(model)
    local x = conv_bn(model, images, "visual.conv1", "visual.bn1", {stride = 2, padding = 1}, true)
    x = conv_bn(model, x, "visual.conv2", "visual.bn2", {padding = 1}, true)
    x = conv_bn(model, x, "visual.conv3", "visual.bn3", {padding = 1}, true)
    x = x:avg_pool2d(2)
    for s = 1, 4 do
        for j = 0, info.vision_layers[s] - 1 do
            local stride = (j == 0 and s > 1) and 2 or 1
            x = bottleneck(model, "visual.layer" .. s .. "." .. j .. ".", x, stride)
        end
    end
    return attnpool(model, x, info.vision_heads)
end

--- Differentiable encode_image: images [N, 3, R, R] -> [N, E], recorded onto the tape.
function M.forward_image(model, images)
    if images:dim() == 3 then
        images = images:unsqueeze(1)
    end
    if C.clipl_is_grad_enabled() ~= 0 then
        rawset(model, "_params_changed", true) -- an optimizer step is expected to follow
    end
    if info_of(model).vision_kind == "vit" then
        return vit_forward(model, images)
    end
    return resnet_forward(model, images)
end

local masks = {}
local function causal_mask(t)
    if not masks[t] then
        local rows = {}
        for i = 1, t do
            local r = {}
            for j = 1, t do
                r[j] = j > i and -math.huge or 0
            end
            rows[i] = r
        end
        masks[t] = tensor.tensor(rows, "f32")
    end
    return masks[t]
end

--- Differentiable encode_text: tokens [N, T] (0-based ids, as clip.tokenize gives) -> [N, E],
-- pooled at each row's end token (the largest id). Positions after the last end token of the
-- batch are not run: the mask is causal, so they never reach the pooled rows (exact).
function M.forward_text(model, tokens)
    if tokens:dim() == 1 then
        tokens = tokens:view(1, -1)
    end
    local t = 1
    for _, e in ipairs(tokens:argmax(2):totable()) do
        t = math.max(t, e)
    end
    tokens = tokens:narrow(2, 1, t)
    local x = clip().embedding(tokens:to("i64") + 1, param(model, "token_embedding.weight"))
    return M.forward_text_embeddings(model, x, tokens)
end

--- The text tower from token embeddings x [N, T, W] (e.g. with learned context vectors in place
-- of some tokens, as CoOp): adds the positional embedding, runs the causal blocks and pools at the
-- position of each row's largest id in tokens [N, T].
function M.forward_text_embeddings(model, x, tokens)
    if C.clipl_is_grad_enabled() ~= 0 then
        rawset(model, "_params_changed", true)
    end
    local info = info_of(model)
    local n, t = x:size(1), x:size(2)
    if tokens:size(1) ~= n or tokens:size(2) ~= t then
        error(string.format("forward_text_embeddings: embeddings [%s] and tokens [%s] differ " ..
            "in N or T", table.concat(x:size(), "x"), table.concat(tokens:size(), "x")), 2)
    end
    local ends = tokens:argmax(2):totable() -- 1-based
    x = x + param(model, "positional_embedding"):narrow(1, 1, t)
    local mask = causal_mask(t)
    for i = 0, info.transformer_layers - 1 do
        x = block(model, "transformer.resblocks." .. i .. ".", x, info.transformer_heads, mask,
            info.activation)
    end
    local idx = {}
    for i = 1, n do
        idx[i] = (i - 1) * t + ends[i]
    end
    x = x:reshape(n * t, info.transformer_width):index_select(1, idx)
    x = layer_norm(model, x, "ln_final")
    return project(model, x, "text_projection")
end

--- True when a forward of this model should record: grad mode on and a parameter requires grad.
-- (One C call per parameter, no Lua handles: it runs before every encode call.)
function M.wants_grad(model)
    if C.clipl_is_grad_enabled() == 0 or not model._h then
        return false
    end
    local h = model._h
    for i = 0, C.clipl_model_param_count(h) - 1 do
        local p = C.clipl_model_param(h, i)
        if p ~= nil and C.clipl_tensor_requires_grad(p) == 1 then
            return true
        end
    end
    return false
end

--- Marks every parameter (or those whose name matches the Lua pattern) as requiring grad.
function M.train_params(model, pattern, on)
    if on == nil then
        on = true
    end
    for name, p in model:named_parameters() do
        if not pattern or name:find(pattern) then
            p:requires_grad(on)
        end
    end
    return model
end


-- ---- checkpoints --------------------------------------------------------------------------------

ffi.cdef [[
int open(const char *path, int flags, ...);
int fsync(int fd);
int close(int fd);
]]
local O_RDONLY, O_DIRECTORY = 0, 0x10000

-- JSON with numbers written to 17 significant digits (a double round-trips exactly).
local function json_encode(v, out)
    local ty = type(v)
    if ty == "table" then
        local n = #v
        local is_array = n > 0 or next(v) == nil
        if is_array then
            for k in pairs(v) do
                if type(k) ~= "number" then
                    is_array = false
                    break
                end
            end
        end
        if is_array and next(v) ~= nil then
            out[#out + 1] = "["
            for i = 1, n do
                if i > 1 then
                    out[#out + 1] = ","
                end
                json_encode(v[i], out)
            end
            out[#out + 1] = "]"
        else
            local keys = {}
            for k in pairs(v) do
                keys[#keys + 1] = tostring(k)
            end
            table.sort(keys)
            out[#out + 1] = "{"
            for i, k in ipairs(keys) do
                if i > 1 then
                    out[#out + 1] = ","
                end
                json_encode(k, out)
                out[#out + 1] = ":"
                local x = v[k]
                if x == nil then
                    x = v[tonumber(k)]
                end
                json_encode(x, out)
            end
            out[#out + 1] = "}"
        end
    elseif ty == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            error("checkpoint: cannot store the number " .. tostring(v) .. " in JSON", 4)
        end
        out[#out + 1] = (v % 1 == 0 and math.abs(v) < 2 ^ 53) and string.format("%d", v) or
            string.format("%.17g", v)
    elseif ty == "string" then
        out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
            return string.format("\\u%04x", c:byte())
        end) .. '"'
    elseif ty == "boolean" then
        out[#out + 1] = tostring(v)
    else
        error("checkpoint: cannot store a " .. ty .. " in JSON", 4)
    end
    return out
end
M.json_encode = function(v)
    return table.concat(json_encode(v, {}))
end

local function fsync_path(path, dir)
    local fd = ffi.C.open(path, O_RDONLY + (dir and O_DIRECTORY or 0))
    if fd >= 0 then
        ffi.C.fsync(fd)
        ffi.C.close(fd)
    end
end

local function dirname(path)
    return path:match("^(.*)/[^/]*$") or "."
end

-- Writes text to path atomically: a temporary file beside it, fsync, rename, fsync of the folder.
local function write_atomic(path, text)
    local tmp = path .. ".tmp"
    local f, err = io.open(tmp, "wb")
    if not f then
        error("checkpoint: cannot write " .. tmp .. ": " .. tostring(err), 3)
    end
    f:write(text)
    f:close()
    fsync_path(tmp)
    local ok, e2 = os.rename(tmp, path)
    if not ok then
        os.remove(tmp)
        error("checkpoint: cannot rename " .. tmp .. " to " .. path .. ": " .. tostring(e2), 3)
    end
    fsync_path(dirname(path), true)
end
M.write_atomic = write_atomic

local function generator_state(g)
    local st = ffi.new("uint64_t[4]")
    lib.check(C.clipl_generator_get_state(g, st))
    local out = {}
    for i = 0, 3 do
        out[i + 1] = string.format("%016x", st[i])
    end
    return out
end

local function set_generator_state(g, hex)
    local st = ffi.new("uint64_t[4]")
    for i = 0, 3 do
        local h = hex[i + 1]
        st[i] = tonumber(h:sub(1, 8), 16) * 0x100000000ULL + tonumber(h:sub(9, 16), 16)
    end
    lib.check(C.clipl_generator_set_state(g, st))
end

--- train.save_checkpoint(path, {model =, optimizer =, scheduler =, step =, generators = {name =
-- generator}, extra = table}): writes path (a small JSON: step, optimizer hyper-parameters and step
-- counts, schedule, generator states, extra) and the tensors (model parameters and buffers,
-- optimizer state) as safetensors in "<path minus .json>-<step>.safetensors". Both are written
-- atomically (temporary file, fsync, rename) and the JSON, written last, names the tensor file: a
-- run killed at any moment leaves the previous checkpoint whole. The previous tensor file is
-- removed after the JSON is committed (the folder is created when missing). opts.before_commit
-- (tests) runs between the two.
function M.save_checkpoint(path, st)
    if type(path) ~= "string" or not path:find("%.json$") then
        error("save_checkpoint: path must end in .json, got " .. tostring(path), 2)
    end
    local step = st.step or 0
    local dir = dirname(path)
    if dir ~= "." then
        os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'") -- the folder may be new
    end
    local base = path:gsub("%.json$", "")
    local tfile = string.format("%s-%d.safetensors", base, step)
    local tensors, meta = {}, {format = "clipl-checkpoint", version = 1, step = step}
    if st.model then
        for name, p in st.model:named_parameters(nil, true) do
            tensors["model/" .. name] = p
        end
    end
    if st.optimizer then
        local sd = st.optimizer:state_dict()
        for k, t in pairs(sd.tensors) do
            tensors["optim/" .. k] = t
        end
        meta.optimizer = {step = sd.step, groups = sd.groups, steps = sd.steps}
    end
    if st.scheduler then
        meta.scheduler = st.scheduler:state_dict()
    end
    if st.generators then
        meta.generators = {}
        for name, g in pairs(st.generators) do
            meta.generators[name] = generator_state(g)
        end
    end
    meta.extra = st.extra
    meta.tensors = tfile:match("[^/]*$")
    local prev
    local f = io.open(path, "rb")
    if f then
        local ok, old = pcall(require("cjson").decode, f:read("*a"))
        f:close()
        prev = ok and type(old) == "table" and old.tensors or nil
    end
    clip().save_safetensors(tfile, tensors, {format = "clipl-checkpoint", step = tostring(step)})
    if st.before_commit then
        st.before_commit()
    end
    write_atomic(path, M.json_encode(meta))
    if prev and prev ~= meta.tensors then
        os.remove(dirname(path) .. "/" .. prev)
    end
    return path
end

--- train.load_checkpoint(path, {model =, optimizer =, scheduler =, generators =}): restores what
-- save_checkpoint wrote into the given objects (model parameters are copied in place) and returns
-- the JSON table (step, extra, ...), or nil when path does not exist.
function M.load_checkpoint(path, st)
    st = st or {}
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local text = f:read("*a")
    f:close()
    local ok, meta = pcall(require("cjson").decode, text)
    if not ok or type(meta) ~= "table" or meta.format ~= "clipl-checkpoint" then
        error("load_checkpoint: " .. path .. " is not a clipl checkpoint", 2)
    end
    local tfile = dirname(path) .. "/" .. meta.tensors
    local tensors = clip().load_safetensors(tfile)
    if st.model then
        clip().no_grad(function()
            for name, p in st.model:named_parameters(nil, true) do
                local t = tensors["model/" .. name]
                if t == nil then
                    error("load_checkpoint: " .. tfile .. " has no tensor 'model/" .. name ..
                        "'", 4)
                end
                if t:numel() ~= p:numel() then
                    error(string.format("load_checkpoint: %s: 'model/%s' has %d elements, the " ..
                        "model's parameter %d", tfile, name, t:numel(), p:numel()), 4)
                end
                lib.check(C.clipl_tensor_make_writable(p))
                p:copy(t:reshape(p:size()))
            end
        end)
        M.mark_changed(st.model)
    end
    if st.optimizer and meta.optimizer then
        local sd = {step = meta.optimizer.step, groups = meta.optimizer.groups,
            steps = meta.optimizer.steps, tensors = {}}
        for k, t in pairs(tensors) do
            local key = k:match("^optim/(.*)$")
            if key then
                sd.tensors[key] = t
            end
        end
        st.optimizer:load_state_dict(sd)
    end
    if st.scheduler and meta.scheduler then
        st.scheduler:load_state_dict(meta.scheduler)
    end
    if st.generators and meta.generators then
        for name, g in pairs(st.generators) do
            if meta.generators[name] then
                set_generator_state(g, meta.generators[name])
            end
        end
    end
    return meta
end


-- ---- data ---------------------------------------------------------------------------------------

local function is_dir(path)
    local f = io.open(path .. "/.", "rb")
    if f then
        f:close()
        return true
    end
    return false
end

-- One line of CSV (RFC 4180 quoting) or TSV (tabs, no quoting) -> fields.
local function split_line(line, sep)
    if sep == "\t" then
        local out = {}
        for field in (line .. "\t"):gmatch("([^\t]*)\t") do
            out[#out + 1] = field
        end
        return out
    end
    local out, i, n = {}, 1, #line
    while i <= n + 1 do
        if line:sub(i, i) == '"' then
            local buf, j = {}, i + 1
            while true do
                local q = line:find('"', j, true)
                if not q then
                    return nil
                end
                buf[#buf + 1] = line:sub(j, q - 1)
                if line:sub(q + 1, q + 1) == '"' then
                    buf[#buf + 1] = '"'
                    j = q + 2
                else
                    i = q + 1
                    break
                end
            end
            out[#out + 1] = table.concat(buf)
            i = i + 1 -- the comma
        else
            local c = line:find(",", i, true) or n + 1
            out[#out + 1] = line:sub(i, c - 1)
            i = c + 1
        end
    end
    return out
end

--- Reads a CSV or TSV file with a header: returns the column names and the rows (tables column
-- name -> value). The separator is a tab when the name ends in .tsv or the header has a tab.
function M.read_table(path)
    local f, err = io.open(path, "rb")
    if not f then
        error("read_table: cannot open " .. path .. ": " .. tostring(err), 2)
    end
    local header = f:read("*l")
    if not header then
        f:close()
        error("read_table: " .. path .. " is empty (expected a header line)", 2)
    end
    header = header:gsub("\r$", ""):gsub("^\239\187\191", "")
    local sep = (path:find("%.tsv$") or header:find("\t", 1, true)) and "\t" or ","
    local cols = split_line(header, sep)
    local rows, ln = {}, 1
    for line in f:lines() do
        ln = ln + 1
        line = line:gsub("\r$", "")
        if line:find("%S") then
            local fields = split_line(line, sep)
            if not fields or #fields < #cols then
                f:close()
                error(string.format("read_table: %s:%d: expected %d fields, got %s", path, ln,
                    #cols, fields and #fields or "an unterminated quote"), 2)
            end
            local row = {}
            for i, c in ipairs(cols) do
                row[c] = fields[i]
            end
            rows[#rows + 1] = row
        end
    end
    f:close()
    return cols, rows
end

local function pick_column(cols, wanted, names, path)
    if wanted then
        for _, c in ipairs(cols) do
            if c == wanted then
                return c
            end
        end
        error(string.format("dataset: %s has no column '%s' (columns: %s)", path, wanted,
            table.concat(cols, ", ")), 3)
    end
    for _, n in ipairs(names) do
        for _, c in ipairs(cols) do
            if c:lower() == n then
                return c
            end
        end
    end
    error(string.format("dataset: %s has none of the columns %s (columns: %s)", path,
        table.concat(names, ", "), table.concat(cols, ", ")), 3)
end

local function fill_template(tpl, label)
    if tpl:find("{}", 1, true) then
        return (tpl:gsub("{}", function() return label end))
    end
    return tpl .. " " .. label
end

--- A data set of (image path, caption[, label]) items.
-- * a CSV/TSV file: columns for the image path (opts.path_column, else one named path, image,
--   filepath, file or filename; relative paths are relative to the file's folder) and the caption
--   (opts.caption_column, else caption, text, title). opts.label_column names the class column;
--   "a+b" joins columns a and b with a space (e.g. "colour+shape"); rows whose class cell holds
--   several values ("red+blue", two objects) are skipped.
-- * a folder with one subfolder per class: captions from opts.templates (a list with "{}" for the
--   class name, default {"a photo of a {}."}), one chosen per item by its index.
-- Returns {items = {{path, caption, label}}, classes = {names} (when labelled), source = path}.
function M.dataset(path, opts)
    opts = opts or {}
    if type(path) ~= "string" then
        error("dataset: expected a CSV/TSV file or a folder of class folders, got " .. type(path),
            2)
    end
    local ds = {items = {}, source = path}
    local templates = opts.templates or {"a photo of a {}."}
    if is_dir(path) then
        local files = require "clipl.files"
        local p = io.popen("ls -1 '" .. path:gsub("'", "'\\''") .. "'")
        local classes = {}
        for name in p:lines() do
            if is_dir(path .. "/" .. name) then
                classes[#classes + 1] = name
            end
        end
        p:close()
        if #classes == 0 then
            error("dataset: " .. path .. " has no class folders", 2)
        end
        ds.classes = classes
        for ci, c in ipairs(classes) do
            local label = c:gsub("_", " ")
            ds.classes[ci] = label
            for _, img in ipairs(files.images({path .. "/" .. c})) do
                local k = #ds.items
                ds.items[k + 1] = {path = img, label = ci,
                    caption = fill_template(templates[k % #templates + 1], label)}
            end
        end
    else
        local cols, rows = M.read_table(path)
        local pc = pick_column(cols, opts.path_column, {"path", "image", "filepath", "file",
            "filename"}, path)
        local cc = pick_column(cols, opts.caption_column, {"caption", "text", "title"}, path)
        local lcs
        if opts.label_column then
            lcs = {}
            for part in opts.label_column:gmatch("[^+]+") do
                lcs[#lcs + 1] = pick_column(cols, part, {}, path)
            end
        end
        local base = path:match("^(.*)/[^/]*$") or "."
        local class_index = {}
        ds.classes = lcs and {} or nil
        for _, row in ipairs(rows) do
            local multi = false
            for _, c in ipairs(lcs or {}) do
                multi = multi or row[c]:find("+", 1, true) ~= nil
            end
            if not multi then
                M._add_row(ds, row, pc, cc, lcs, base, class_index)
            end
        end
    end
    if #ds.items == 0 then
        error("dataset: " .. path .. " holds no images", 2)
    end
    return ds
end

-- one CSV/TSV row into the data set
function M._add_row(ds, row, pc, cc, lcs, base, class_index)
    local ip = row[pc]
    if ip:sub(1, 1) ~= "/" then
        ip = base .. "/" .. ip
    end
    local item = {path = ip, caption = row[cc]}
    if lcs then
        local parts = {}
        for i, c in ipairs(lcs) do
            parts[i] = row[c]
        end
        local label = table.concat(parts, " ")
        if not class_index[label] then
            ds.classes[#ds.classes + 1] = label
            class_index[label] = #ds.classes
        end
        item.label = class_index[label]
    end
    ds.items[#ds.items + 1] = item
end

-- A permutation of 1..n from a seeded generator (Fisher-Yates on its uniform draws).
local function permutation(n, seed)
    local u = tensor.rand({math.max(n, 1)}, {seed = seed}):totable()
    local p = {}
    for i = 1, n do
        p[i] = i
    end
    for i = n, 2, -1 do
        local j = math.floor(u[i] * i) + 1
        p[i], p[j] = p[j], p[i]
    end
    return p
end
M.permutation = permutation

local Loader = {}
Loader.__index = Loader

--- train.loader(dataset, {batch_size = 32, resolution = 224, shuffle = true, seed = 0, drop_last =
-- true, tokenize = fn(captions) -> tokens, caption_templates = {"{}", "a photo of {}."}}): batches
-- of {images [B, 3, R, R], tokens, captions, labels}; with caption_templates each caption is put
-- into one of them ({} = the caption), chosen by the item and the epoch. The order of epoch e is a
-- permutation seeded by (seed, e), so a resumed run sees the same batches; with group = g > 1 the
-- runs of g consecutive rows are shuffled instead, each kept whole in one batch (hard negatives).
function M.loader(ds, opts)
    opts = opts or {}
    local self = setmetatable({ds = ds, batch_size = opts.batch_size or 32,
        resolution = opts.resolution or 224, shuffle = opts.shuffle ~= false,
        seed = opts.seed or 0, drop_last = opts.drop_last ~= false, tokenize = opts.tokenize,
        caption_templates = opts.caption_templates, group = opts.group or 1}, Loader)
    if self.group < 1 or self.group ~= math.floor(self.group) or self.batch_size % self.group ~= 0
    then
        error(string.format("loader: group (%s) must be an integer >= 1 that divides the batch " ..
            "size (%d)", tostring(self.group), self.batch_size), 2)
    end
    local n = #ds.items
    self.batches = self.drop_last and math.floor(n / self.batch_size) or
        math.ceil(n / self.batch_size)
    if self.batches == 0 then
        error(string.format("loader: %d items make no batch of %d (lower the batch size)", n,
            self.batch_size), 2)
    end
    return self
end

--- The b-th batch (1-based) of epoch e.
function Loader:batch(e, b)
    local n = #self.ds.items
    local order = self._order_epoch == e and self._order or nil
    if not order then
        order = self.shuffle and permutation(n, self.seed * 100003 + e) or nil
        local g = self.group
        if order and g > 1 then -- shuffle runs of g rows, keeping each run together
            local runs = permutation(math.ceil(n / g), self.seed * 100003 + e)
            local k = 0
            for _, r in ipairs(runs) do
                for i = (r - 1) * g + 1, math.min(n, r * g) do
                    k = k + 1
                    order[k] = i
                end
            end
        end
        self._order, self._order_epoch = order, e
    end
    local paths, caps, labels, items = {}, {}, {}, {}
    local ct = self.caption_templates
    for i = (b - 1) * self.batch_size + 1, math.min(n, b * self.batch_size) do
        local j = order and order[i] or i
        local it = self.ds.items[j]
        if ct then
            -- the caption wrapped in a template chosen by (item, epoch)
            local tpl = ct[(j * 7919 + e * 104729) % #ct + 1]
            it = {path = it.path, label = it.label, caption = fill_template(tpl, it.caption)}
        end
        items[#items + 1] = it
    end
    for i, it in ipairs(items) do
        paths[i] = it.path
    end
    local images, failed = clip().preprocess_batch(paths, self.resolution, {skip_bad = true})
    local bad = {}
    for _, f in ipairs(failed or {}) do
        bad[f.index] = f
    end
    local kept = {}
    for i, it in ipairs(items) do
        if not bad[i] then
            kept[#kept + 1] = i
            caps[#caps + 1] = it.caption
            labels[#labels + 1] = it.label
        end
    end
    if #failed > 0 then
        if #kept == 0 then
            error("loader: no image of the batch could be read: " .. tostring(failed[1].path) ..
                ": " .. tostring(failed[1].message), 2)
        end
        images = images:index_select(1, kept)
    end
    local batch = {images = images, captions = caps, labels = labels, failed = failed}
    if self.tokenize then
        batch.tokens = self.tokenize(caps)
    end
    return batch
end

--- for b, batch in loader:iter(epoch [, first]) do ... end
function Loader:iter(e, first)
    local b = (first or 1) - 1
    return function()
        b = b + 1
        if b > self.batches then
            return nil
        end
        return b, self:batch(e or 1, b)
    end
end

-- ---- plotting -----------------------------------------------------------------------------------

--- Draws a loss curve (raw values in grey, a moving average in blue) into a PNG of w x h pixels.
function M.plot_losses(path, losses, opts)
    opts = opts or {}
    local w, h = opts.width or 480, opts.height or 240
    local img = tensor.full({h, w, 3}, 255, "u8")
    local px = img:data()
    local function put(x, y, r, g, b)
        if x >= 0 and x < w and y >= 0 and y < h then
            local o = (y * w + x) * 3
            px[o], px[o + 1], px[o + 2] = r, g, b
        end
    end
    local ml, mr, mt, mb = 30, 10, 10, 20
    for x = ml, w - mr do
        put(x, h - mb, 0, 0, 0)
    end
    for y = mt, h - mb do
        put(ml, y, 0, 0, 0)
    end
    local n = #losses
    if n > 0 then
        local lo, hi = 0, -math.huge
        for _, v in ipairs(losses) do
            hi = math.max(hi, v)
        end
        if hi <= lo then
            hi = lo + 1
        end
        local pw, ph = w - ml - mr - 1, h - mt - mb - 1
        local function xy(i, v)
            local x = ml + 1 + math.floor((n > 1 and (i - 1) / (n - 1) or 0) * (pw - 1) + 0.5)
            local y = h - mb - 1 - math.floor((v - lo) / (hi - lo) * (ph - 1) + 0.5)
            return x, y
        end
        -- gridlines at quarter heights
        for q = 1, 4 do
            local _, y = xy(1, lo + (hi - lo) * q / 4)
            for x = ml + 1, w - mr, 4 do
                put(x, y, 200, 200, 200)
            end
        end
        local function line(x0, y0, x1, y1, r, g, b)
            local steps = math.max(math.abs(x1 - x0), math.abs(y1 - y0), 1)
            for s = 0, steps do
                put(math.floor(x0 + (x1 - x0) * s / steps + 0.5),
                    math.floor(y0 + (y1 - y0) * s / steps + 0.5), r, g, b)
            end
        end
        local px0, py0
        for i, v in ipairs(losses) do
            local x, y = xy(i, v)
            if px0 then
                line(px0, py0, x, y, 170, 170, 170)
            end
            px0, py0 = x, y
        end
        local k = math.max(1, math.floor(n / 50))
        local acc, q, prev = 0, {}, nil
        for i, v in ipairs(losses) do
            acc = acc + v
            q[#q + 1] = v
            if #q > k then
                acc = acc - table.remove(q, 1)
            end
            local x, y = xy(i, acc / #q)
            if prev then
                line(prev[1], prev[2], x, y, 20, 60, 200)
                line(prev[1], prev[2] + 1, x, y + 1, 20, 60, 200)
            end
            prev = {x, y}
        end
    end
    clip().shapes.save(img, path)
    return path
end

--- Image features of a whole labelled data set with the frozen model (inference path, no grad):
-- returns features [N, E] f32 (L2-normalised when opts.normalize) and labels {1-based}.
function M.features(model, ds, opts)
    opts = opts or {}
    M.ensure_prepared(model)
    local loader = M.loader(ds, {batch_size = opts.batch_size or 128, shuffle = false,
        drop_last = false, resolution = model:info().image_resolution})
    local parts, labels = {}, {}
    clip().no_grad(function()
        for _, b in loader:iter(1) do
            local f = model:encode_image(b.images)
            parts[#parts + 1] = opts.normalize and clip().nn.normalize(f) or f
            for _, l in ipairs(b.labels) do
                labels[#labels + 1] = l
            end
            if opts.progress then
                opts.progress(#labels, #ds.items)
            end
        end
    end)
    return clip().cat(parts, 1), labels
end

--- Multinomial logistic regression on fixed features, as scikit-learn's LogisticRegression(C)
-- (the objective C * sum of cross-entropies + |W|^2 / 2, bias not penalised), full batch, by
-- Adam for opts.iters steps (default 300; lr opts.lr, 0.05). Returns {weight [D, K], bias [K]}.
function M.logistic_regression(x, labels, k, c, opts)
    opts = opts or {}
    local n, d = x:size(1), x:size(2)
    local w = tensor.zeros({d, k}, "f32"):requires_grad(true)
    local b = tensor.zeros({k}, "f32"):requires_grad(true)
    local opt = clip().optim.AdamW({weight = w, bias = b}, {lr = opts.lr or 0.05,
        weight_decay = 0})
    local lab = tensor.tensor(labels, "i64")
    for _ = 1, opts.iters or 300 do
        local loss = clip().nn.cross_entropy(x:matmul(w) + b, lab) +
            (w * w):sum() * (0.5 / (c * n))
        opt:zero_grad()
        loss:backward()
        opt:step()
    end
    return {weight = w:detach(), bias = b:detach()}
end

--- Accuracy (0..1) of argmax(x W + b) against labels.
function M.accuracy(logits, labels)
    local pred = logits:argmax(2):totable()
    local right = 0
    for i, l in ipairs(labels) do
        if pred[i] == l then
            right = right + 1
        end
    end
    return right / math.max(#labels, 1)
end

-- ---- prepared weights after training ------------------------------------------------------------

--- Tells the model that its parameters changed (training, loading): the prepared inference weights
-- are rebuilt before the next inference call.
function M.mark_changed(model)
    rawset(model, "_params_changed", true)
end

--- Rebuilds the prepared weights when the parameters changed since they were prepared.
function M.ensure_prepared(model)
    if rawget(model, "_params_changed") then
        rawset(model, "_params_changed", false)
        model:prepare()
    end
    return model
end

return {train = M}
