-- busted helper: registers `tensor_close` so specs can write
--   assert.tensor_close(actual, expected, 1e-6)   -- max |a - e| <= tol * max(1, max |e|)
local say = require "say"
local luassert = require "luassert"

local function max_abs_diff(a, e)
    local clip = require "clipl"
    if not clip.is_tensor(e) then
        e = clip.tensor(e)
    end
    local sa, se = a:size(), e:size()
    if #sa ~= #se then
        return math.huge, "shapes differ"
    end
    for i = 1, #sa do
        if sa[i] ~= se[i] then
            return math.huge, "shapes differ"
        end
    end
    local n = a:numel()
    local ffi = require "ffi"
    local ba, be = ffi.new("double[?]", n + 1), ffi.new("double[?]", n + 1)
    clip.lib.C.clipl_tensor_to_doubles(a, ba, n)
    clip.lib.C.clipl_tensor_to_doubles(e, be, n)
    local m, scale = 0, 1
    for i = 0, n - 1 do
        local d = math.abs(ba[i] - be[i])
        if d ~= d then d = math.huge end
        if d > m then m = d end
        if math.abs(be[i]) > scale then scale = math.abs(be[i]) end
    end
    return m, scale
end

local function tensor_close(state, args)
    local a, e, tol = args[1], args[2], args[3] or 1e-6
    local m, scale = max_abs_diff(a, e)
    if type(scale) == "string" then
        state.failure_message = "tensors differ in shape: " .. table.concat(a:size(), "x") ..
            " vs " .. table.concat(e:size(), "x")
        return false
    end
    state.failure_message = string.format("max |diff| %.3g > %.3g (tol %.3g x scale %.3g)", m,
        tol * scale, tol, scale)
    return m <= tol * scale
end

say:set("assertion.tensor_close.positive", "Expected tensors to be close")
say:set("assertion.tensor_close.negative", "Expected tensors to differ")
luassert:register("assertion", "tensor_close", tensor_close, "assertion.tensor_close.positive",
    "assertion.tensor_close.negative")
