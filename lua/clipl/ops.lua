--- Elementwise arithmetic, comparisons, reductions, top-k, cat/stack and indexing: the Lua face of
-- engine/ops/{binary,reduce,index,join}.c.
--
-- Dims and indices are 1-based (negative dims count from the end), as in Torch7: index tensors
-- given to index_select/gather/embedding hold 1-based indices, and the indices returned by
-- max/min/argmax/argmin/topk are 1-based. Index arguments may be i32/i64 tensors, float tensors
-- holding whole numbers, or Lua tables of numbers.
--
--   local c = a + b * 2          -- broadcasting; a:add(b, alpha) computes a + alpha * b
--   local v, i = t:max(2)        -- values and 1-based indices along dim 2
--   local s = t:sum()            -- a 0-d tensor; s:item() is the number
--   local top, idx = t:topk(5, -1, {largest = true})
--   local x = clip.cat({a, b}, 1)
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, adopt, slot = lib.C, lib.adopt, lib.slot
local Tensor, is_tensor, cdim, register = tensor.Tensor, tensor.is_tensor, tensor.cdim,
    tensor.register

local M = {}

local ALL = C.CLIPL_ALL_DIMS
local I64 = 4
local slot2 = ffi.new("clipl_tensor *[1]")

local BIN = {
    add = C.CLIPL_BIN_ADD, sub = C.CLIPL_BIN_SUB, mul = C.CLIPL_BIN_MUL, div = C.CLIPL_BIN_DIV,
    pow = C.CLIPL_BIN_POW, maximum = C.CLIPL_BIN_MAX, minimum = C.CLIPL_BIN_MIN,
    eq = C.CLIPL_BIN_EQ, ne = C.CLIPL_BIN_NE, lt = C.CLIPL_BIN_LT, le = C.CLIPL_BIN_LE,
    gt = C.CLIPL_BIN_GT, ge = C.CLIPL_BIN_GE,
}

-- C messages count dims, indices and list positions from 0; say them 1-based, as Lua callers
-- wrote them ("dim 1" in C is "dim 2" here; negative dims are quoted as given).
local function lua_message(msg)
    msg = msg:gsub("index (%-?%d+) out of range", function(i)
        return "index " .. (tonumber(i) + 1) .. " out of range"
    end)
    msg = msg:gsub("dim (%d+)", function(d) return "dim " .. (tonumber(d) + 1) end)
    msg = msg:gsub("tensor (%d+)([ '])", function(i, after)
        return "tensor " .. (tonumber(i) + 1) .. after
    end)
    return msg
end

--- Raises the last C error (rephrased 1-based) when rc is not CLIPL_OK.
local function check(rc, level)
    if rc ~= 0 then
        local msg = ffi.string(C.clipl_errmsg())
        C.clipl_errclear()
        error(lua_message(msg ~= "" and msg or ("clipl error " .. tonumber(rc))), (level or 2) + 1)
    end
end
local check_index = check

--- Calls fn(..., slot, ...) and adopts the tensor it produced; errors point at the caller's caller.
local function call_out(fn, ...)
    slot[0] = nil
    local rc = fn(...)
    if rc ~= 0 then
        check(rc, 3)
    end
    return adopt(slot[0])
end

local function operand_error(name, b)
    error(name .. ": expected a tensor or a number, got " .. type(b), 3)
end

-- ---- elementwise binary ops ---------------------------------------------------------------------

local function binary(name)
    local op = BIN[name]
    return function(a, b, alpha)
        if is_tensor(b) then
            if name == "add" and alpha ~= nil and alpha ~= 1 then
                return call_out(C.clipl_add, a, b, slot, alpha)
            end
            return call_out(C.clipl_binary, a, b, slot, op)
        elseif type(b) == "number" then
            if name == "add" and alpha ~= nil then
                b = b * alpha
            end
            return call_out(C.clipl_binary_scalar, a, b, slot, op, 0)
        end
        operand_error(name, b)
    end
end

-- number-first forms used by the metatype: Tensor.rsub(t, n) is n - t
local function reversed(name)
    local op = BIN[name]
    return function(t, n)
        if type(n) ~= "number" then
            operand_error(name, n)
        end
        return call_out(C.clipl_binary_scalar, t, n, slot, op, 1)
    end
end

local function inplace(name)
    local op = BIN[name]
    return function(a, b, alpha)
        if is_tensor(b) then
            if name == "add" and alpha ~= nil and alpha ~= 1 then
                check(C.clipl_add_(a, b, alpha))
            else
                check(C.clipl_binary_(a, b, op))
            end
        elseif type(b) == "number" then
            if name == "add" and alpha ~= nil then
                b = b * alpha
            end
            check(C.clipl_binary_scalar_(a, b, op, 0))
        else
            operand_error(name .. "_", b)
        end
        return a
    end
end

for _, name in ipairs({"add", "sub", "mul", "div", "pow"}) do
    register(name, binary(name))
    register(name .. "_", inplace(name), true)
end
for _, name in ipairs({"maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"}) do
    register(name, binary(name))
end
for _, name in ipairs({"sub", "div", "pow"}) do
    register("r" .. name, reversed(name), true)
end
-- commutative: n + t == t + n, n * t == t * n
register("radd", function(t, n) return Tensor.add(t, n) end, true)
register("rmul", function(t, n) return Tensor.mul(t, n) end, true)

--- -t (same dtype).
register("neg", function(t)
    return call_out(C.clipl_neg, t, slot)
end)
register("neg_", function(t)
    check(C.clipl_neg_(t))
    return t
end, true)

--- The dtype name of a op b's result ("f32", ...): float wins over integer, wider wins.
function M.result_dtype(a, b)
    local da = is_tensor(a) and a.dt or tensor.dtype_id(a)
    local db = is_tensor(b) and b.dt or tensor.dtype_id(b)
    return tensor.dtype_names[C.clipl_result_dtype(da, db)]
end

-- ---- reductions ---------------------------------------------------------------------------------

local function keepdim_of(opts)
    if type(opts) == "table" then
        return opts.keepdim and 1 or 0
    end
    return opts and 1 or 0
end

local function dim_of(d, what)
    if d == nil then
        return ALL
    end
    return cdim(d, what, 3)
end

-- 0-based i64 indices from C -> 1-based, in place
local function one_based(t)
    check(C.clipl_binary_scalar_(t, 1, BIN.add, 0), 3)
    return t
end

--- t:sum() (a 0-d tensor) or t:sum(dim, {keepdim = true}).
register("sum", function(t, d, opts)
    return call_out(C.clipl_sum, t, slot, dim_of(d, "sum"), keepdim_of(opts))
end)

--- t:mean() or t:mean(dim, {keepdim = true}); integer tensors give f32.
register("mean", function(t, d, opts)
    return call_out(C.clipl_mean, t, slot, dim_of(d, "mean"), keepdim_of(opts))
end)

local function extreme(name, cfn, elementwise)
    return function(t, d, opts)
        if is_tensor(d) then -- t:max(other): elementwise, as torch.max(a, b)
            return Tensor[elementwise](t, d)
        end
        slot[0], slot2[0] = nil, nil
        local rc = cfn(t, slot, d ~= nil and slot2 or nil, dim_of(d, name), keepdim_of(opts))
        check(rc)
        local values = adopt(slot[0])
        if d == nil then
            return values
        end
        return values, one_based(adopt(slot2[0]))
    end
end

--- t:max() -> 0-d tensor; t:max(dim, {keepdim = true}) -> values, 1-based indices (i64);
-- t:max(other) -> elementwise maximum. NaN counts as the largest value.
register("max", extreme("max", C.clipl_max, "maximum"))
register("min", extreme("min", C.clipl_min, "minimum"))

local function arg(name, cfn)
    return function(t, d, opts)
        return one_based(call_out(cfn, t, slot, dim_of(d, name), keepdim_of(opts)))
    end
end
--- t:argmax(dim) -> 1-based i64 indices; t:argmax() -> 1-based flat index (0-d).
register("argmax", arg("argmax", C.clipl_argmax))
register("argmin", arg("argmin", C.clipl_argmin))

--- t:norm(p, dim, {keepdim = true}): p defaults to 2; math.huge is the max norm; no dim reduces
-- every element.
register("norm", function(t, p, d, opts)
    return call_out(C.clipl_norm, t, slot, p or 2, dim_of(d, "norm"), keepdim_of(opts))
end)

--- t:topk(k, dim, {largest = true}) -> values, 1-based i64 indices, sorted (descending for
-- largest, ascending for smallest). dim defaults to the last.
register("topk", function(t, k, d, opts)
    if type(d) == "table" then
        d, opts = nil, d
    end
    local largest = not (opts and opts.largest == false)
    if type(k) ~= "number" then
        error("topk: k must be a number, got " .. type(k), 2)
    end
    slot[0], slot2[0] = nil, nil
    check(C.clipl_topk(t, slot, slot2, k, d and cdim(d, "topk", 2) or -1, largest and 1 or 0))
    local values = adopt(slot[0])
    return values, one_based(adopt(slot2[0]))
end)

-- ---- cat / stack --------------------------------------------------------------------------------

local function tensor_list(what, list)
    if type(list) ~= "table" then
        error(what .. ": expected a table of tensors, got " .. type(list), 3)
    end
    local n = #list
    local arr = ffi.new("const clipl_tensor *[?]", math.max(n, 1))
    for i = 1, n do
        if not is_tensor(list[i]) then
            error(what .. ": element " .. i .. " is not a tensor (" .. type(list[i]) .. ")", 3)
        end
        arr[i - 1] = list[i]
    end
    return arr, n
end

--- clip.cat({a, b, ...}, dim): joins along an existing dim (default 1).
function M.cat(list, d)
    local arr, n = tensor_list("cat", list)
    return call_out(C.clipl_cat, arr, n, slot, cdim(d or 1, "cat", 2))
end

--- clip.stack({a, b, ...}, dim): joins along a new dim d (default 1; 1..ndim+1 or negative).
function M.stack(list, d)
    local arr, n = tensor_list("stack", list)
    d = d or 1
    if type(d) ~= "number" or d == 0 then
        error("stack: dims are 1-based (or negative from the end), got " .. tostring(d), 2)
    end
    return call_out(C.clipl_stack, arr, n, slot, d > 0 and d - 1 or d)
end

-- ---- indexing -----------------------------------------------------------------------------------

-- A 0-based integer index tensor from 1-based indices (tensor or table).
local function zero_based(idx, what)
    if type(idx) == "table" then
        idx = tensor.tensor(idx, "i64")
    elseif type(idx) == "number" then
        idx = tensor.tensor({idx}, "i64")
    elseif not is_tensor(idx) then
        error(what .. ": indices must be a tensor or a table of numbers, got " .. type(idx), 3)
    end
    if idx.dt ~= 3 and idx.dt ~= I64 then
        idx = idx:to("i64")
    end
    return call_out(C.clipl_binary_scalar, idx, 1, slot, BIN.sub, 0)
end

local function indexed(cfn, what, t, idx, d)
    local z = zero_based(idx, what)
    slot[0] = nil
    check_index(cfn(t, z, slot, cdim(d, what, 3)), 3)
    return adopt(slot[0])
end

--- t:index_select(dim, idx): the entries of t along dim at the 1-based indices idx (1-d).
register("index_select", function(t, d, idx)
    return indexed(C.clipl_index_select, "index_select", t, idx, d)
end)

--- t:gather(dim, idx): out[i][j] = t[idx[i][j]][j] for dim 1 (1-based idx, same ndim as t).
register("gather", function(t, d, idx)
    return indexed(C.clipl_gather, "gather", t, idx, d)
end)

--- clip.embedding(ids, weight): rows of weight [V, D] for 1-based ids of any shape -> [..., D].
register("embedding", function(ids, weight)
    local z = zero_based(ids, "embedding")
    slot[0] = nil
    check_index(C.clipl_embedding(z, weight, slot), 2)
    return adopt(slot[0])
end)

local function mask_of(mask, what)
    if is_tensor(mask) then
        return mask
    end
    error(what .. ": mask must be a tensor, got " .. type(mask), 3)
end

--- t:masked_fill(mask, v): a copy of t with v where mask (broadcast to t) is non-zero.
register("masked_fill", function(t, mask, v)
    return call_out(C.clipl_masked_fill, t, mask_of(mask, "masked_fill"), slot, v)
end)
register("masked_fill_", function(t, mask, v)
    check(C.clipl_masked_fill_(t, mask_of(mask, "masked_fill_"), v))
    return t
end, true)

--- clip.where(cond, a, b): a where cond is non-zero, else b (numbers allowed for a and b).
function M.where(cond, a, b)
    if not is_tensor(a) then
        a = tensor.tensor(a, is_tensor(b) and b:dtype() or "f32")
    end
    if not is_tensor(b) then
        b = tensor.tensor(b, a:dtype())
    end
    return call_out(C.clipl_where, mask_of(cond, "where"), a, b, slot)
end

return M
