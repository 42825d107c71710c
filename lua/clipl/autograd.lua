--- Autograd from Lua: the C tape (engine/autograd) records every tensor op whose input requires
-- grad, so Lua code composed of tensor ops is differentiable.
--
--   local w = clip.randn({3, 4}):requires_grad(true)
--   local loss = (x:matmul(w) - y):square():mean()
--   loss:backward()                     -- w.grad now holds dloss/dw
--   w:zero_grad()
--   clip.no_grad(function() w:sub_(w.grad * 0.1) end)
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, check, adopt, call_out, slot = lib.C, lib.check, lib.adopt, lib.call_out, lib.slot
local register, is_tensor = tensor.register, tensor.is_tensor

local M = {}

-- t.grad: the accumulated gradient (a tensor) or nil
tensor.grad_of = function(t)
    local p = C.clipl_tensor_grad(t)
    if p == nil then
        return nil
    end
    return adopt(p)
end

--- t:requires_grad(true|false) marks a leaf (returns t); t:requires_grad() tells whether t
-- requires grad.
register("requires_grad", function(t, on)
    if on == nil then
        return C.clipl_tensor_requires_grad(t) == 1
    end
    check(C.clipl_tensor_set_requires_grad(t, on and 1 or 0))
    return t
end, true)

--- t:requires_grad_(on = true): PyTorch's spelling; returns t.
register("requires_grad_", function(t, on)
    check(C.clipl_tensor_set_requires_grad(t, (on == nil or on) and 1 or 0))
    return t
end, true)

--- true when t was not produced by a recorded op.
register("is_leaf", function(t)
    return C.clipl_tensor_is_leaf(t) == 1
end, true)

--- Name of the op that produced t ("matmul", ...) or nil for a leaf.
register("grad_fn", function(t)
    local s = C.clipl_tensor_grad_fn(t)
    return s ~= nil and ffi.string(s) or nil
end, true)

--- Asks a non-leaf t to keep its gradient (t.grad after backward); returns t.
register("retain_grad", function(t)
    check(C.clipl_tensor_retain_grad(t))
    return t
end, true)

--- A tensor sharing t's data, with no history and not requiring grad.
register("detach", function(t)
    return call_out(C.clipl_tensor_detach, t, slot)
end)

--- Clears t.grad (PyTorch's set_to_none); returns t.
register("zero_grad", function(t)
    check(C.clipl_tensor_set_grad(t, nil))
    return t
end, true)

--- Sets t.grad to g (a tensor of t's shape) or clears it (nil); returns t.
register("set_grad", function(t, g)
    if g ~= nil and not is_tensor(g) then
        error("set_grad: expected a tensor or nil, got " .. type(g), 2)
    end
    check(C.clipl_tensor_set_grad(t, g))
    return t
end, true)

--- t:backward([grad] [, {retain_graph = true}]): backpropagates from t (a one-element tensor
-- needs no grad) and adds the gradients into the leaves' .grad.
register("backward", function(t, grad, opts)
    if type(grad) == "table" and not is_tensor(grad) then
        grad, opts = nil, grad
    end
    if grad ~= nil and not is_tensor(grad) then
        grad = tensor.tensor(grad)
    end
    local retain = opts and opts.retain_graph and 1 or 0
    check(C.clipl_backward(t, grad, retain))
end, true)

-- Runs fn(...) with grad mode set to on (1) or off (0), restoring the mode even when fn raises.
local function with_mode(on, fn, ...)
    if type(fn) ~= "function" then
        error((on == 1 and "enable_grad" or "no_grad") .. ": expected a function, got " ..
            type(fn), 3)
    end
    local prev = C.clipl_set_grad_enabled(on)
    local res = {n = 0}
    local function pack(...)
        res.n = select("#", ...)
        for i = 1, res.n do
            res[i] = select(i, ...)
        end
    end
    pack(pcall(fn, ...))
    C.clipl_set_grad_enabled(prev)
    if not res[1] then
        error(res[2], 0)
    end
    return unpack(res, 2, res.n)
end

--- Runs fn(...) with grad mode off (nothing is recorded) and returns its results.
function M.no_grad(fn, ...)
    return with_mode(0, fn, ...)
end

--- Runs fn(...) with grad mode on.
function M.enable_grad(fn, ...)
    return with_mode(1, fn, ...)
end

--- Turns grad mode on or off for this thread; returns the previous mode.
function M.set_grad_enabled(on)
    return C.clipl_set_grad_enabled(on and 1 or 0) == 1
end

function M.is_grad_enabled()
    return C.clipl_is_grad_enabled() == 1
end

--- Recorded ops still alive (for tests of memory).
function M.autograd_live_nodes()
    return tonumber(C.clipl_autograd_live_nodes())
end

--- clip.gradcheck(fn, inputs [, {eps = 1e-2, tol = 5e-3}]): compares the gradients of
-- L = sum(w * fn(inputs...)) for fixed random w with central differences (f32 forward), for every
-- float input that requires grad. Returns true, or false and a message naming the input and the
-- error.
function M.gradcheck(fn, inputs, opts)
    opts = opts or {}
    local eps, tol = opts.eps or 1e-2, opts.tol or 5e-3
    for _, x in ipairs(inputs) do
        if is_tensor(x) then
            x:zero_grad()
        end
    end
    local y = fn(unpack(inputs))
    local w = tensor.rand(y:size(), {seed = opts.seed or 7, low = -1, high = 1})
    local wv = w:flatten():totable()
    y:backward(w)
    local function loss()
        local out = fn(unpack(inputs))
        local v = out:flatten():totable()
        local s = 0
        for i = 1, #v do
            s = s + wv[i] * v[i]
        end
        return s
    end
    local ok, msg = true, nil
    M.no_grad(function()
        for k, x in ipairs(inputs) do
            if is_tensor(x) and x:requires_grad() then
                local g = x.grad
                if g == nil then
                    ok, msg = false, "input " .. k .. " got no gradient"
                    return
                end
                local gf = g:flatten():totable()
                local err, scale = 0, 1
                local cell = ffi.new("double[1]")
                for j = 1, x:numel() do -- flat row-major index, any strides
                    check(C.clipl_tensor_get_flat(x, j - 1, cell))
                    local v0 = cell[0]
                    check(C.clipl_tensor_set_flat(x, j - 1, v0 + eps))
                    local lp = loss()
                    check(C.clipl_tensor_set_flat(x, j - 1, v0 - eps))
                    local lm = loss()
                    check(C.clipl_tensor_set_flat(x, j - 1, v0))
                    local num = (lp - lm) / (2 * eps)
                    scale = math.max(scale, math.abs(num))
                    err = math.max(err, math.abs(num - gf[j]))
                end
                if err / scale > tol or err ~= err then
                    ok = false
                    msg = string.format("input %d: max |analytic - numeric| / scale = %.3g > %g",
                        k, err / scale, tol)
                    return
                end
            end
        end
    end)
    return ok, msg
end

return M
