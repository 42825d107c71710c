-- bench/optim_step.lua: time of one optimizer step (AdamW, then SGD with momentum), zero_grad and
-- clip_grad_norm over the parameters of a randomly initialised ViT-B/32 (151M floats).
--   OMP_WAIT_POLICY=passive clipl run bench/optim_step.lua [steps=7] [model=ViT-B/32]
-- Prints the median, min and max of the timed calls (the first step, which allocates the state, is
-- not timed) and the effective memory traffic of the AdamW step (7 floats per element: p, g, m, v
-- read, p, m, v written).
local clip = require "clipl"
local ffi = require "ffi"

ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } optim_bench_timespec;
int clock_gettime(int clk, optim_bench_timespec *ts);
]]
local ts = ffi.new("optim_bench_timespec")
local function now()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local steps = tonumber(arg and arg[1]) or 7
local name = arg and arg[2] or "ViT-B/32"
local model = clip.build_model(name, {seed = 1})
local params = model:parameters()
local n = 0
for _, p in ipairs(params) do
    p:requires_grad(true)
    n = n + p:numel()
end

local function stats(xs)
    table.sort(xs)
    return string.format("median %.4f s (min %.4f, max %.4f, %d runs)",
        xs[math.floor((#xs + 1) / 2)], xs[1], xs[#xs], #xs)
end

local function timed(label, fn)
    local t = {}
    for _ = 1, steps do
        local t0 = now()
        fn()
        t[#t + 1] = now() - t0
    end
    print(string.format("%-16s %s", label, stats(t)))
    return t
end

local function fill_grads()
    for i, p in ipairs(params) do
        local g = clip.randn(p:size(), {seed = i}):mul(1e-3)
        clip.lib.check(clip.lib.C.clipl_tensor_set_grad(p, g))
    end
end

print(string.format("%s: %d parameter tensors, %d floats, %d threads, load %s", name, #params, n,
    clip.get_num_threads and clip.get_num_threads() or -1,
    (io.open("/proc/loadavg"):read("*l"):match("^(%S+ %S+ %S+)"))))
for _, kind in ipairs({"AdamW", "SGD"}) do
    local opt = kind == "AdamW" and clip.optim.AdamW(params, {lr = 1e-4, weight_decay = 0.2}) or
        clip.optim.SGD(params, {lr = 1e-4, momentum = 0.9, weight_decay = 1e-4})
    fill_grads()
    opt:step() -- allocates the state
    local t = timed(kind .. " step", function() opt:step() end)
    if kind == "AdamW" then
        table.sort(t)
        local med = t[math.floor((#t + 1) / 2)]
        print(string.format("%-16s %.1f GB/s", "AdamW traffic", n * 28 / med / 1e9))
        timed("clip_grad_norm", function() clip.optim.clip_grad_norm(opt, 1e9) end)
        timed("zero_grad", function() opt:zero_grad() end)
    end
    opt = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
end
