--- Tensors as an FFI metatype over `clipl_tensor`: construction, views, element access, printing
-- and operators. Ops modules (clipl.ops, ...) add their methods to `Tensor` with `M.register`.
--
-- Dims and indices are 1-based, as in Torch7; negative dims count from the end (-1 is the last).
local ffi = require "ffi"
local lib = require "clipl.lib"

local C, check, adopt, call_out, slot = lib.C, lib.check, lib.adopt, lib.call_out, lib.slot

local M = {}

--- The method table shared by every tensor.
local Tensor = {}
M.Tensor = Tensor

local dtype_ids = {
    f32 = 0, float32 = 0, float = 0,
    bf16 = 1, bfloat16 = 1,
    f16 = 2, float16 = 2, half = 2,
    i32 = 3, int32 = 3, int = 3,
    i64 = 4, int64 = 4, long = 4,
    u8 = 5, uint8 = 5, byte = 5,
}
local dtype_names = {[0] = "f32", "bf16", "f16", "i32", "i64", "u8"}
local type_names = {[0] = "FloatTensor", "BFloat16Tensor", "HalfTensor", "IntTensor", "LongTensor",
    "ByteTensor"}
M.dtype_names = dtype_names

--- Returns the numeric dtype id for a name ("f32", "bf16", ...) or id; raises on anything else.
function M.dtype_id(d, level)
    if d == nil then
        return 0
    end
    if type(d) == "number" and dtype_names[d] then
        return d
    end
    local id = dtype_ids[d]
    if not id then
        error("unknown dtype '" .. tostring(d) .. "' (use f32, bf16, f16, i32, i64 or u8)",
            (level or 2) + 1)
    end
    return id
end
local dtype_id = M.dtype_id

local tensor_ref = ffi.typeof("clipl_tensor &")
--- true when x is a clipl tensor.
local function is_tensor(x)
    return type(x) == "cdata" and ffi.istype(tensor_ref, x)
end
M.is_tensor = is_tensor

--- Converts a 1-based (or negative) Lua dim to the C convention; raises on 0 or a non-number.
local function cdim(d, what, level)
    if type(d) ~= "number" or d == 0 or d % 1 ~= 0 then
        error((what or "dim") .. ": dims are 1-based (or negative from the end), got " ..
            tostring(d), (level or 2) + 1)
    end
    return d > 0 and d - 1 or d
end
M.cdim = cdim

--- Reads sizes given as a table {2, 3} or as numbers (2, 3).
local function sizes_of(a, ...)
    if type(a) == "table" then
        return a
    end
    if is_tensor(a) then
        return a:size()
    end
    return {a, ...}
end
M.sizes_of = sizes_of

-- ---- construction -------------------------------------------------------------------------------

local function new_tensor(kind, sizes, dtype)
    local shape, n = lib.shape_arg(sizes, kind)
    local p = (kind == "empty") and C.clipl_tensor_empty(dtype, n, shape)
        or C.clipl_tensor_zeros(dtype, n, shape)
    return adopt(p)
end

--- An uninitialised tensor (contents undefined; fill it): clip.empty({2, 3}, "f32").
function M.empty(sizes, dtype)
    return new_tensor("empty", sizes_of(sizes), dtype_id(dtype))
end

--- A tensor of zeros: clip.zeros({2, 3}, "f32").
function M.zeros(sizes, dtype)
    return new_tensor("zeros", sizes_of(sizes), dtype_id(dtype))
end

--- A tensor filled with value: clip.full({2, 3}, 7, "f32").
function M.full(sizes, value, dtype)
    local t = new_tensor("empty", sizes_of(sizes), dtype_id(dtype))
    check(C.clipl_tensor_fill_(t, value))
    return t
end

--- A tensor of ones: clip.ones({2, 3}).
function M.ones(sizes, dtype)
    return M.full(sizes, 1, dtype)
end

-- Flattens a nested table, checking that it is rectangular; returns values and sizes.
local function flatten(tbl)
    local sizes = {}
    local node = tbl
    while type(node) == "table" do
        sizes[#sizes + 1] = #node
        node = node[1]
    end
    local values = {}
    local function walk(t, depth)
        if depth > #sizes then
            if type(t) == "boolean" then
                t = t and 1 or 0
            end
            if type(t) ~= "number" then
                error("tensor: expected a number, got " .. type(t), 4)
            end
            values[#values + 1] = t
            return
        end
        if type(t) ~= "table" or #t ~= sizes[depth] then
            error("tensor: the table is not rectangular (dim " .. depth .. " should have " ..
                sizes[depth] .. " entries)", 4)
        end
        for i = 1, #t do
            walk(t[i], depth + 1)
        end
    end
    walk(tbl, 1)
    return values, sizes
end

--- A tensor from a (nested) Lua table or a number: clip.tensor({{1, 2}, {3, 4}}, "f32").
function M.tensor(data, dtype)
    if is_tensor(data) then
        return dtype and data:to(dtype) or data:clone()
    end
    local values, sizes
    if type(data) == "number" then
        values, sizes = {data}, {}
    elseif type(data) == "table" then
        values, sizes = flatten(data)
    else
        error("tensor: expected a table or a number, got " .. type(data), 2)
    end
    local id = dtype_id(dtype)
    local t = new_tensor("empty", sizes, id)
    local n = #values
    if n > 0 then
        if id == 0 then
            local p = ffi.cast("float *", t.ptr)
            for i = 1, n do
                p[i - 1] = values[i]
            end
        else
            for i = 1, n do
                check(C.clipl_tensor_set_flat(t, i - 1, values[i]))
            end
        end
    end
    return t
end

--- 1-d tensor of values from start to (but excluding) stop by step, as torch.arange:
-- clip.arange(5) -> 0..4, clip.arange(1, 4) -> 1, 2, 3.
function M.arange(start, stop, step, dtype)
    if type(stop) == "string" then
        stop, dtype = nil, stop
    end
    if stop == nil then
        start, stop = 0, start
    end
    if type(step) == "string" then
        step, dtype = nil, step
    end
    step = step or 1
    if step == 0 then
        error("arange: step must not be 0", 2)
    end
    local n = math.max(0, math.ceil((stop - start) / step))
    local t = M.empty({n}, dtype or "f32")
    for i = 0, n - 1 do
        check(C.clipl_tensor_set_flat(t, i, start + i * step))
    end
    return t
end

-- ---- random numbers -----------------------------------------------------------------------------

--- A seeded random generator: clip.generator(42). The same seed gives the same numbers everywhere.
function M.generator(seed)
    local g = lib.check_ptr(C.clipl_generator_new(seed or 0))
    return ffi.gc(g, C.clipl_generator_free)
end

local default_generator
--- The generator used when none is given; clip.manual_seed(s) reseeds it.
function M.default_generator()
    default_generator = default_generator or M.generator(0)
    return default_generator
end

function M.manual_seed(seed)
    check(C.clipl_generator_seed(M.default_generator(), seed))
end

local function gen_from(opts)
    if opts and opts.generator then
        return opts.generator
    end
    if opts and opts.seed then
        return M.generator(opts.seed)
    end
    return M.default_generator()
end

--- U[0, 1) (or [opts.low, opts.high)): clip.rand({2, 3}, {seed = 1}).
function M.rand(sizes, opts)
    opts = opts or {}
    local t = M.empty(sizes, opts.dtype)
    check(C.clipl_tensor_uniform_(t, gen_from(opts), opts.low or 0, opts.high or 1))
    return t
end

--- N(0, 1) (or N(opts.mean, opts.std^2)): clip.randn({2, 3}, {seed = 1}).
function M.randn(sizes, opts)
    opts = opts or {}
    local t = M.empty(sizes, opts.dtype)
    check(C.clipl_tensor_normal_(t, gen_from(opts), opts.mean or 0, opts.std or 1))
    return t
end

function Tensor.uniform_(t, lo, hi, opts)
    check(C.clipl_tensor_uniform_(t, gen_from(opts), lo or 0, hi or 1))
    return t
end

function Tensor.normal_(t, mean, std, opts)
    check(C.clipl_tensor_normal_(t, gen_from(opts), mean or 0, std or 1))
    return t
end

-- ---- geometry -----------------------------------------------------------------------------------

-- One entry of a per-dim C array of t (dim d, checked) or all of them as a table; errors name
-- what and blame the caller's caller.
local function per_dim(t, arr, d, what)
    if d then
        local c = cdim(d, what, 3)
        if c < 0 then
            c = c + t.ndim
        end
        if c < 0 or c >= t.ndim then
            error(what .. ": dim " .. d .. " out of range for a " .. t.ndim .. "-d tensor", 3)
        end
        return tonumber(arr[c])
    end
    local s = {}
    for i = 0, t.ndim - 1 do
        s[i + 1] = tonumber(arr[i])
    end
    return s
end

--- t:size() -> {2, 3}; t:size(d) -> the size of dim d.
function Tensor.size(t, d)
    local v = per_dim(t, t.shape, d, "size")
    return v
end

--- t:stride() -> strides in elements; t:stride(d).
function Tensor.stride(t, d)
    local v = per_dim(t, t.strides, d, "stride")
    return v
end

function Tensor.dim(t)
    return t.ndim
end
Tensor.ndimension = Tensor.dim

function Tensor.numel(t)
    return tonumber(C.clipl_tensor_numel(t))
end
Tensor.nElement = Tensor.numel

--- "f32", "bf16", "f16", "i32", "i64" or "u8".
function Tensor.dtype(t)
    return dtype_names[t.dt]
end

--- Torch7-style type name, e.g. "clipl.FloatTensor".
function Tensor.type(t)
    return "clipl." .. type_names[t.dt]
end

function Tensor.is_contiguous(t)
    return C.clipl_tensor_is_contiguous(t) == 1
end
Tensor.isContiguous = Tensor.is_contiguous

--- Raw pointer to element 1 (typed: float*, int32_t*, ...) for FFI loops. The pointer is valid
-- while t is alive; index it with strides from t:stride().
local ptr_types = {[0] = "float *", "uint16_t *", "uint16_t *", "int32_t *", "int64_t *",
    "uint8_t *"}
function Tensor.data(t)
    return ffi.cast(ptr_types[t.dt], t.ptr)
end

-- ---- views --------------------------------------------------------------------------------------

--- t:narrow(dim, start, length): a view of `length` entries from `start` (1-based) along dim.
function Tensor.narrow(t, d, start, length)
    return call_out(C.clipl_tensor_narrow, t, slot, cdim(d, "narrow"), start - 1, length)
end

--- t:select(dim, index): a view with dim removed at index (1-based; negative from the end).
function Tensor.select(t, d, index)
    local c = cdim(d, "select")
    if index < 0 then
        local cc = c < 0 and c + t.ndim or c
        if cc >= 0 and cc < t.ndim then
            index = tonumber(t.shape[cc]) + index + 1
        end
    end
    return call_out(C.clipl_tensor_select, t, slot, c, index - 1)
end

--- t:transpose(d1, d2); t:t() swaps the two dims of a 2-d tensor.
function Tensor.transpose(t, d1, d2)
    return call_out(C.clipl_tensor_transpose, t, slot, cdim(d1, "transpose"),
        cdim(d2, "transpose"))
end

function Tensor.t(t)
    if t.ndim ~= 2 then
        error("t: expects a 2-d tensor, got " .. t.ndim .. "-d", 2)
    end
    return call_out(C.clipl_tensor_transpose, t, slot, 0, 1)
end

local perm_buf = ffi.new("int[8]")
--- t:permute(3, 1, 2) or t:permute{3, 1, 2}.
function Tensor.permute(t, ...)
    local p = sizes_of(...)
    if #p > 8 then
        error("permute: too many dims", 2)
    end
    for i = 1, #p do
        perm_buf[i - 1] = cdim(p[i], "permute")
    end
    return call_out(C.clipl_tensor_permute, t, slot, #p, perm_buf)
end

--- t:view(2, 3) or t:view{2, -1}: same data, new shape (raises when strides do not allow it).
function Tensor.view(t, ...)
    local shape, n = lib.shape_arg(sizes_of(...), "view")
    return call_out(C.clipl_tensor_view, t, slot, n, shape)
end

--- Like view, but copies when a view is impossible.
function Tensor.reshape(t, ...)
    local shape, n = lib.shape_arg(sizes_of(...), "reshape")
    return call_out(C.clipl_tensor_reshape, t, slot, n, shape)
end

--- t:expand(4, 2, 3) or t:expand{4, -1, -1}: broadcast size-1 dims without copying.
function Tensor.expand(t, ...)
    local shape, n = lib.shape_arg(sizes_of(...), "expand")
    return call_out(C.clipl_tensor_expand, t, slot, n, shape)
end

--- t:expand_as(other)
function Tensor.expand_as(t, other)
    return t:expand(other:size())
end

--- t:unsqueeze(d): a size-1 dim inserted so that it becomes dim d (1..ndim+1, or negative).
function Tensor.unsqueeze(t, d)
    if type(d) ~= "number" or d == 0 then
        error("unsqueeze: dims are 1-based (or negative from the end), got " .. tostring(d), 2)
    end
    return call_out(C.clipl_tensor_unsqueeze, t, slot, d > 0 and d - 1 or d)
end

--- t:squeeze() removes every size-1 dim; t:squeeze(d) removes dim d (which must be size 1).
function Tensor.squeeze(t, d)
    return call_out(C.clipl_tensor_squeeze, t, slot, d and cdim(d, "squeeze") or C.CLIPL_ALL_DIMS)
end

--- t:flatten(): a 1-d view (or copy when the strides do not allow a view).
function Tensor.flatten(t)
    return t:reshape({-1})
end

-- ---- copies -------------------------------------------------------------------------------------

function Tensor.contiguous(t)
    return call_out(C.clipl_tensor_contiguous, t, slot)
end

function Tensor.clone(t)
    return call_out(C.clipl_tensor_clone, t, slot)
end

--- t:to("bf16"): a converted copy (round to nearest even for bf16/f16).
function Tensor.to(t, dtype)
    return call_out(C.clipl_tensor_to, t, slot, dtype_id(dtype))
end
function Tensor.float(t) return t:to("f32") end
function Tensor.bfloat16(t) return t:to("bf16") end
function Tensor.half(t) return t:to("f16") end
function Tensor.int(t) return t:to("i32") end
function Tensor.long(t) return t:to("i64") end
function Tensor.byte(t) return t:to("u8") end

--- t:copy(src): copies src (broadcast to t's shape, any dtype) into t; returns t.
function Tensor.copy(t, src)
    if not is_tensor(src) then
        src = M.tensor(src)
    end
    check(C.clipl_tensor_copy_(t, src))
    return t
end
Tensor.copy_ = Tensor.copy

--- t:fill(v): sets every element; returns t.
function Tensor.fill(t, v)
    check(C.clipl_tensor_fill_(t, v))
    return t
end
Tensor.fill_ = Tensor.fill

function Tensor.zero(t)
    return t:fill(0)
end
Tensor.zero_ = Tensor.zero

-- ---- element access -----------------------------------------------------------------------------

local dbl = ffi.new("double[1]")

--- The value of a one-element tensor.
function Tensor.item(t)
    local n = tonumber(C.clipl_tensor_numel(t))
    if n ~= 1 then
        error("item: the tensor has " .. n .. " elements, expected 1", 2)
    end
    check(C.clipl_tensor_get_flat(t, 0, dbl))
    return dbl[0]
end

--- Values as nested Lua tables (a number for a 0-d tensor).
function Tensor.totable(t)
    local n = tonumber(C.clipl_tensor_numel(t))
    local buf = ffi.new("double[?]", math.max(n, 1))
    check(C.clipl_tensor_to_doubles(t, buf, n))
    if t.ndim == 0 then
        return buf[0]
    end
    local sizes = t:size()
    local k = 0
    local function build(depth)
        local out = {}
        for i = 1, sizes[depth] do
            if depth == #sizes then
                out[i] = buf[k]
                k = k + 1
            else
                out[i] = build(depth + 1)
            end
        end
        return out
    end
    return build(1)
end

--- t:get(i, j, ...) and t:set(v, i, j, ...): one element by 1-based indices.
local function flat_index(t, idx, what)
    if #idx ~= t.ndim then
        error(what .. ": " .. #idx .. " indices for a " .. t.ndim .. "-d tensor", 3)
    end
    local flat = 0
    for d = 1, #idx do
        local size = tonumber(t.shape[d - 1])
        local i = idx[d]
        if i < 0 then
            i = size + i + 1
        end
        if i < 1 or i > size then
            error(what .. ": index " .. idx[d] .. " out of range for dim " .. d .. " of size " ..
                size, 3)
        end
        flat = flat * size + (i - 1)
    end
    return flat
end

function Tensor.get(t, ...)
    check(C.clipl_tensor_get_flat(t, flat_index(t, {...}, "get"), dbl))
    return dbl[0]
end

function Tensor.set(t, v, ...)
    check(C.clipl_tensor_set_flat(t, flat_index(t, {...}, "set"), v))
    return t
end

--- Releases the tensor's memory now instead of at the next collection, when nothing else (a view
-- made in C, a model) holds the same header. The handle becomes an empty tensor: safe to call
-- twice, and later use raises an error instead of crashing. Returns true when memory was given up.
function Tensor.free(t)
    return C.clipl_tensor_reset(t) == 1
end

-- ---- registration for ops modules ---------------------------------------------------------------

--- Adds a method to every tensor and, unless opts say otherwise, a function of the same name to the
-- clipl module (clip.name(t, ...) == t:name(...)).
M.functions = {}
function M.register(name, fn, no_function)
    Tensor[name] = fn
    if not no_function then
        M.functions[name] = fn
    end
end

-- ---- metatype -----------------------------------------------------------------------------------

local function index_tensor(t, k)
    local i = k
    local size = tonumber(t.shape[0])
    if t.ndim == 0 then
        error("cannot index a 0-d tensor; use t:item()", 3)
    end
    if i < 0 then
        i = size + i + 1
    end
    if i < 1 or i > size or i % 1 ~= 0 then
        error("index " .. k .. " out of range for dim 1 of size " .. size, 3)
    end
    if t.ndim == 1 then
        check(C.clipl_tensor_get_flat(t, i - 1, dbl), 3)
        return dbl[0]
    end
    return call_out(C.clipl_tensor_select, t, slot, 0, i - 1)
end

local mt = {}

function mt.__index(t, k)
    local m = Tensor[k]
    if m ~= nil then
        return m
    end
    if k == "grad" then -- the accumulated gradient (clipl.autograd sets grad_of)
        return M.grad_of and M.grad_of(t)
    end
    if type(k) == "number" then
        return index_tensor(t, k)
    end
    return nil
end

function mt.__newindex(t, k, v)
    if type(k) ~= "number" then
        error("cannot set field '" .. tostring(k) .. "' of a tensor", 2)
    end
    local dst = index_tensor(t, k)
    if type(dst) == "number" then
        local i = k < 0 and tonumber(t.shape[0]) + k + 1 or k
        check(C.clipl_tensor_set_flat(t, i - 1, v))
    elseif type(v) == "number" then
        dst:fill(v)
    else
        dst:copy(v)
    end
end

function mt.__len(t)
    return t.ndim > 0 and tonumber(t.shape[0]) or 0
end

local function binop(name)
    return function(a, b)
        if is_tensor(a) then
            return Tensor[name](a, b)
        end
        return Tensor["r" .. name](b, a)
    end
end
mt.__add = binop("add")
mt.__sub = binop("sub")
mt.__mul = binop("mul")
mt.__div = binop("div")
mt.__pow = binop("pow")
function mt.__unm(a)
    return Tensor.neg(a)
end

function mt.__tostring(t)
    return require("clipl.format").tensor(t)
end

mt.__concat = nil

ffi.metatype("clipl_tensor", mt)

return M
