-- Part of bench/preprocess: clipl's batch preprocessing of the files listed in arg[1].
local clip = require "clipl"

local paths = {}
for line in io.lines(arg[1]) do
    paths[#paths + 1] = line
end

local N = tonumber(arg[2]) or 3
local ffi = require "ffi"
ffi.cdef [[
struct clipl_bench_ts { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct clipl_bench_ts *ts);
]]
local ts = ffi.new("struct clipl_bench_ts")
local function clock(id) -- 1: CLOCK_MONOTONIC, 2: CLOCK_PROCESS_CPUTIME_ID
    ffi.C.clock_gettime(id, ts)
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

for _, threads in ipairs({1, 2}) do
    local best, best_cpu = math.huge, math.huge
    for _ = 1, N do
        local t0, c0 = clock(1), clock(2)
        local batch, bad = clip.preprocess_batch(paths, 224, {threads = threads})
        local dt, dc = clock(1) - t0, clock(2) - c0
        if dc < best_cpu then
            best_cpu = dc
        end
        assert(#bad == 0 and batch:size()[1] == #paths)
        batch = nil -- luacheck: ignore
        collectgarbage()
        if dt < best then
            best = dt
        end
    end
    print(string.format("clipl (libvips decode + Pillow-exact resize), %d thread%s: %7.1f images/s"
        .. "  (CPU %.2f ms/image)", threads, threads > 1 and "s" or " ", #paths / best,
        1000 * best_cpu / #paths))
end
