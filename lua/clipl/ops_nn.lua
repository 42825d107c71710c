--- The oneDNN-backed ops: matmul, linear (plain or with prepared weights), conv2d, batch and layer
-- norm, softmax, activations, pooling and attention. Dims are 1-based (negative from the end).
--
--   local y = x:matmul(w)                                   -- batched, broadcast, views in place
--   local lin = clip.linear_prepare(w, b, {dtype = "bf16"}) -- reorder the weights once
--   local h = lin(x, {act = "quick_gelu"})                  -- = clip.linear(x, lin, ...)
--   local p = scores:softmax(-1)
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, check, adopt, call_out, slot = lib.C, lib.check, lib.adopt, lib.call_out, lib.slot
local register, is_tensor, cdim = tensor.register, tensor.is_tensor, tensor.cdim

local M = {}

local slot2 = ffi.new("clipl_tensor *[1]")
local slot3 = ffi.new("clipl_tensor *[1]")

--- Activation id for a name ("relu", "gelu", "quick_gelu", ...) or id; nil/false -> none.
local function act_id(a, what)
    if a == nil or a == false then
        return 0
    end
    if type(a) == "number" then
        return a
    end
    local id = C.clipl_act_from_name(tostring(a))
    if id < 0 then
        error((what or "act") .. ": unknown activation '" .. tostring(a) ..
            "' (relu, gelu, gelu_tanh, quick_gelu, sigmoid, tanh, ...)", 3)
    end
    return id
end
M.act_id = act_id

local function want_tensor(x, what, level)
    if not is_tensor(x) then
        error(what .. ": expected a tensor, got " .. type(x), (level or 2) + 1)
    end
end

-- ---- matmul and linear -----------------------------------------------------------------------

local mm_opts = ffi.new("clipl_matmul_opts")

-- Fills the shared options struct from a Lua table ({act=, alpha=, beta=, scale=, accum=}) or an
-- activation name.
local function fill_mm_opts(opts, what)
    mm_opts.act, mm_opts.alpha, mm_opts.beta = 0, 0, 0
    mm_opts.scale, mm_opts.sum_scale, mm_opts.accum = 1, 1, nil
    if opts == nil then
        return mm_opts
    end
    if type(opts) ~= "table" then
        mm_opts.act = act_id(opts, what)
        return mm_opts
    end
    mm_opts.act = act_id(opts.act, what)
    mm_opts.alpha = opts.alpha or 0
    mm_opts.beta = opts.beta or 0
    mm_opts.scale = opts.scale or 1
    mm_opts.sum_scale = opts.sum_scale or 1
    if opts.accum ~= nil then
        want_tensor(opts.accum, what .. ": accum", 3)
        mm_opts.accum = opts.accum
    end
    return mm_opts
end

--- a:matmul(b [, opts]): batched matrix product with PyTorch broadcasting of the leading dims.
-- opts: {bias = t, act = "relu", scale = s, accum = t} (accum: the result is added into it and
-- returned).
function M.matmul(a, b, opts)
    want_tensor(b, "matmul")
    local bias = type(opts) == "table" and opts.bias or nil
    if (a.ndim == 1 or b.ndim == 1) and not (type(opts) == "table" and opts.accum) then
        -- vectors as in torch.matmul: a [K] is a row [1, K], b [K] a column [K, 1], and the
        -- added dim is removed from the result
        local a2 = a.ndim == 1 and a:unsqueeze(1) or a
        local b2 = b.ndim == 1 and b:unsqueeze(2) or b
        local r = call_out(C.clipl_matmul, a2, b2, bias, slot, fill_mm_opts(opts, "matmul"))
        if b.ndim == 1 then
            r = r:squeeze(-1)
        end
        if a.ndim == 1 then
            r = r:squeeze(b.ndim == 1 and -1 or -2)
        end
        return r
    end
    return call_out(C.clipl_matmul, a, b, bias, slot, fill_mm_opts(opts, "matmul"))
end
register("matmul", M.matmul)

local LinearWeights = {}
LinearWeights.__index = LinearWeights
local lw_info = ffi.new("int64_t[3]")
local lw_dt = ffi.new("int[1]")

--- Prepared weights of a linear layer: clip.linear_prepare(w [out, in], b [out] or nil,
-- {dtype = "bf16", m_hint = 800}). The weights are copied into oneDNN's preferred layout once.
function M.linear_prepare(weight, bias, opts)
    want_tensor(weight, "linear_prepare")
    opts = opts or {}
    local dt = opts.dtype and tensor.dtype_id(opts.dtype) or -1
    local p = C.clipl_linear_prepare(weight, bias, dt, opts.m_hint or 0)
    lib.check_ptr(p)
    local self = setmetatable({handle = ffi.gc(p, C.clipl_linear_weights_free)}, LinearWeights)
    check(C.clipl_linear_weights_info(p, lw_info, lw_info + 1, lw_dt, lw_info + 2))
    self.out_features = tonumber(lw_info[0])
    self.in_features = tonumber(lw_info[1])
    self.nbytes = tonumber(lw_info[2])
    self.dtype = tensor.dtype_names[lw_dt[0]]
    return self
end

--- lin:apply(x [, opts]) (or lin(x, opts)): x [..., in] -> [..., out]; opts as for matmul
-- (act, alpha, beta, scale, accum) or an activation name.
function LinearWeights.apply(self, x, opts)
    want_tensor(x, "linear")
    if self.handle == nil then
        error("linear: the prepared weights were freed", 2)
    end
    return call_out(C.clipl_linear_apply, self.handle, x, slot, fill_mm_opts(opts, "linear"))
end
LinearWeights.__call = LinearWeights.apply

function LinearWeights.free(self)
    if self.handle ~= nil then
        C.clipl_linear_weights_free(ffi.gc(self.handle, nil))
        self.handle = nil
    end
end

function LinearWeights.__tostring(self)
    return string.format("clipl.LinearWeights(%d -> %d, %s)", self.in_features,
        self.out_features, self.dtype)
end

function M.is_linear_weights(x)
    return getmetatable(x) == LinearWeights
end

--- clip.linear(x, weight, bias [, opts]): x @ weight^T + bias with a fused activation; weight is
-- a tensor [out, in] or prepared weights (then bias is ignored: it was prepared with them).
function M.linear(x, weight, bias, opts)
    if getmetatable(weight) == LinearWeights then
        return weight:apply(x, opts)
    end
    want_tensor(x, "linear")
    want_tensor(weight, "linear")
    if type(opts) == "table" and (opts.accum or opts.scale or opts.alpha) then
        -- the general form goes through matmul on the transposed weights
        local o = {}
        for k, v in pairs(opts) do o[k] = v end
        o.bias = bias
        return M.matmul(x, weight:t(), o)
    end
    local act = type(opts) == "table" and opts.act or opts
    return call_out(C.clipl_linear, x, weight, bias, slot, act_id(act, "linear"))
end
register("linear", M.linear)

-- ---- convolution and normalisation ---------------------------------------------------------

local conv_opts = ffi.new("clipl_conv2d_opts")
local function pair(v, default)
    if v == nil then
        return default, default
    end
    if type(v) == "table" then
        return v[1], v[2] or v[1]
    end
    return v, v
end

local function fill_conv_opts(opts)
    opts = opts or {}
    conv_opts.stride[0], conv_opts.stride[1] = pair(opts.stride, 1)
    conv_opts.padding[0], conv_opts.padding[1] = pair(opts.padding, 0)
    conv_opts.dilation[0], conv_opts.dilation[1] = pair(opts.dilation, 1)
    conv_opts.groups = opts.groups or 1
    conv_opts.act = act_id(opts.act, "conv2d")
    conv_opts.alpha, conv_opts.beta = opts.alpha or 0, opts.beta or 0
    return conv_opts
end

local ConvWeights = {}
ConvWeights.__index = ConvWeights

--- Prepared convolution: clip.conv2d_prepare(w, b, {stride=, padding=, dilation=, groups=,
-- act=, dtype = "bf16", h_hint = 56, w_hint = 56}); the weights are reordered once into the
-- layout oneDNN's convolution picks and the options are fixed. cw(x) or clip.conv2d(x, cw).
function M.conv2d_prepare(w, b, opts)
    want_tensor(w, "conv2d_prepare")
    opts = opts or {}
    local dt = opts.dtype and tensor.dtype_id(opts.dtype) or -1
    local p = C.clipl_conv2d_prepare(w, b, dt, fill_conv_opts(opts), opts.h_hint or 0,
        opts.w_hint or 0)
    lib.check_ptr(p)
    return setmetatable({handle = ffi.gc(p, C.clipl_conv2d_weights_free)}, ConvWeights)
end

function ConvWeights.apply(self, x)
    want_tensor(x, "conv2d")
    if self.handle == nil then
        error("conv2d: the prepared weights were freed", 2)
    end
    return call_out(C.clipl_conv2d_apply, self.handle, x, slot)
end
ConvWeights.__call = ConvWeights.apply

function ConvWeights.free(self)
    if self.handle ~= nil then
        C.clipl_conv2d_weights_free(ffi.gc(self.handle, nil))
        self.handle = nil
    end
end

--- clip.conv2d(x [N, C, H, W], w [O, C/groups, KH, KW], b or nil, {stride=, padding=,
-- dilation=, groups=, act=}); stride/padding/dilation are numbers or {h, w}. w may also be
-- prepared weights (clip.conv2d_prepare), which carry their bias and options.
function M.conv2d(x, w, b, opts)
    if getmetatable(w) == ConvWeights then
        return w:apply(x)
    end
    want_tensor(w, "conv2d")
    return call_out(C.clipl_conv2d, x, w, b, slot, fill_conv_opts(opts))
end
register("conv2d", M.conv2d)

--- clip.batch_norm(x, running_mean, running_var, weight, bias, eps): inference batch norm over
-- dim 2 (channels).
function M.batch_norm(x, mean, var, weight, bias, eps)
    return call_out(C.clipl_batch_norm, x, mean, var, weight, bias, slot, eps or 1e-5)
end
register("batch_norm", M.batch_norm)

--- clip.fold_batch_norm(conv_w, conv_b, mean, var, gamma, beta, eps) -> w', b' such that
-- conv(x, w', b') == batch_norm(conv(x, w, b)).
function M.fold_batch_norm(w, b, mean, var, gamma, beta, eps)
    slot[0], slot2[0] = nil, nil
    check(C.clipl_fold_batch_norm(w, b, mean, var, gamma, beta, eps or 1e-5, slot, slot2))
    return adopt(slot[0]), adopt(slot2[0])
end

--- clip.layer_norm(x, normalized_shape, weight, bias, eps [, return_stats]): normalises over the
-- last #normalized_shape dims (normalized_shape is a table like {768} or a number of dims).
-- With return_stats, also returns the per-row mean and 1/sqrt(var + eps) (f32).
function M.layer_norm(x, shape, weight, bias, eps, return_stats)
    want_tensor(x, "layer_norm")
    local n
    if type(shape) == "table" then
        n = #shape
        local xs = x:size()
        for i = 1, n do
            if xs[#xs - n + i] ~= shape[i] then
                error("layer_norm: normalized_shape {" .. table.concat(shape, ", ") ..
                    "} does not match the last dims of [" .. table.concat(xs, "x") .. "]", 2)
            end
        end
    elseif type(shape) == "number" then
        n = shape
    else
        n = 1
    end
    eps = eps or 1e-5
    if return_stats then
        slot[0], slot2[0], slot3[0] = nil, nil, nil
        check(C.clipl_layer_norm(x, n, weight, bias, slot, eps, slot2, slot3))
        return adopt(slot[0]), adopt(slot2[0]), adopt(slot3[0])
    end
    return call_out(C.clipl_layer_norm, x, n, weight, bias, slot, eps, nil, nil)
end
register("layer_norm", M.layer_norm)

-- ---- softmax and activations ---------------------------------------------------------------

--- t:softmax(dim) / t:log_softmax(dim); dim defaults to the last.
register("softmax", function(t, d)
    return call_out(C.clipl_softmax, t, slot, d and cdim(d, "softmax") or -1, 0)
end)
register("log_softmax", function(t, d)
    return call_out(C.clipl_softmax, t, slot, d and cdim(d, "log_softmax") or -1, 1)
end)

--- t:eltwise(name, alpha, beta) and t:eltwise_(...) for any activation.
function M.eltwise(t, name, alpha, beta)
    return call_out(C.clipl_eltwise, t, slot, act_id(name, "eltwise"), alpha or 0, beta or 0)
end
register("eltwise", M.eltwise)
register("eltwise_", function(t, name, alpha, beta)
    check(C.clipl_eltwise_(t, act_id(name, "eltwise_"), alpha or 0, beta or 0))
    return t
end, true)

-- one method (and an in-place form) per activation without parameters
for _, name in ipairs({"relu", "gelu", "gelu_tanh", "quick_gelu", "sigmoid", "tanh", "exp", "log",
    "sqrt", "abs", "square", "softplus"}) do
    local id = C.clipl_act_from_name(name)
    register(name, function(t)
        return call_out(C.clipl_eltwise, t, slot, id, 0, 0)
    end)
    register(name .. "_", function(t)
        check(C.clipl_eltwise_(t, id, 0, 0))
        return t
    end, true)
end

--- t:clamp(min, max) (either may be nil).
local CLAMP, SWISH = C.CLIPL_ACT_CLAMP, C.CLIPL_ACT_SWISH
register("clamp", function(t, lo, hi)
    return call_out(C.clipl_eltwise, t, slot, CLAMP, lo or -math.huge, hi or math.huge)
end)
register("clamp_", function(t, lo, hi)
    check(C.clipl_eltwise_(t, CLAMP, lo or -math.huge, hi or math.huge))
    return t
end, true)
--- t:swish(beta) = x * sigmoid(beta x) (beta defaults to 1: SiLU).
register("swish", function(t, beta)
    return call_out(C.clipl_eltwise, t, slot, SWISH, beta or 1, 0)
end)
register("silu", function(t)
    return call_out(C.clipl_eltwise, t, slot, SWISH, 1, 0)
end)

-- ---- pooling -------------------------------------------------------------------------------

local function pool(kind, x, kernel, stride, padding, ceil_mode)
    local kh, kw = pair(kernel)
    if kh == nil then
        error("pool2d: kernel size is required", 3)
    end
    local sh, sw = pair(stride, 0)
    local ph, pw = pair(padding, 0)
    return call_out(C.clipl_pool2d, x, slot, kind, kh, kw, sh, sw, ph, pw, ceil_mode and 1 or 0)
end

--- clip.max_pool2d(x, kernel, stride, padding, ceil_mode); stride defaults to kernel.
function M.max_pool2d(x, kernel, stride, padding, ceil_mode)
    return pool(C.CLIPL_POOL_MAX, x, kernel, stride, padding, ceil_mode)
end
register("max_pool2d", M.max_pool2d)

--- clip.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad = true).
function M.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad)
    local kind = count_include_pad == false and C.CLIPL_POOL_AVG_EXCLUDE_PAD or C.CLIPL_POOL_AVG
    return pool(kind, x, kernel, stride, padding, ceil_mode)
end
register("avg_pool2d", M.avg_pool2d)

-- ---- attention -----------------------------------------------------------------------------

--- clip.attention(q, k, v [, {mask = m, scale = s, probs = true}]): softmax(q k^T * scale + mask) v
-- for q [..., T, D], k/v [..., S, D]; with probs = true also returns the attention weights.
function M.attention(q, k, v, opts)
    want_tensor(k, "attention")
    want_tensor(v, "attention")
    opts = opts or {}
    local mask = opts.mask
    if mask ~= nil then
        want_tensor(mask, "attention: mask")
    end
    if opts.probs then
        slot[0], slot2[0] = nil, nil
        check(C.clipl_attention(q, k, v, mask, slot, opts.scale or 0, slot2))
        return adopt(slot[0]), adopt(slot2[0])
    end
    return call_out(C.clipl_attention, q, k, v, mask, slot, opts.scale or 0, nil)
end
register("attention", M.attention)

-- ---- primitive cache -----------------------------------------------------------------------

local stats = ffi.new("int64_t[3]")
--- {entries =, hits =, misses =} of the oneDNN primitive cache.
function M.dnnl_cache_stats()
    check(C.clipl_dnnl_cache_stats(stats, stats + 1, stats + 2))
    return {entries = tonumber(stats[0]), hits = tonumber(stats[1]), misses = tonumber(stats[2])}
end

function M.dnnl_cache_clear()
    C.clipl_dnnl_cache_clear()
end

return M
