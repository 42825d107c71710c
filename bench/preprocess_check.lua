-- Part of bench/preprocess_check: clip.preprocess against the Pillow + torchvision arrays.
local clip = require "clipl"
local ffi = require "ffi"

local dir = arg[1]
local STD = {0.26862954, 0.26130258, 0.27577711}

local function read_npy(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    local hl = s:byte(9) + 256 * s:byte(10)
    local data = s:sub(11 + hl)
    local arr = ffi.new("float[?]", #data / 4)
    ffi.copy(arr, data, #data)
    return arr, #data / 4
end

print(string.format("%-12s %-6s %-6s %-11s %12s %12s", "image", "Pillow", "clipl", "options",
    "worst level", "identical"))
local all_same, all_n, all_worst = 0, 0, 0
for line in io.lines(dir .. "/list.txt") do
    local name, pmode, npy, opts = line:match("^(.-)\t(.-)\t(.-)\t(.-)$")
    local img = clip.image.load(dir .. "/" .. name, {autorotate = opts == "autorotate"})
    local t = clip.preprocess(img, 224)
    local ref, n = read_npy(dir .. "/" .. npy)
    local a = ffi.cast("float *", t.ptr)
    local np = 224 * 224
    local worst, same = 0, 0
    for c = 0, 2 do
        for i = 0, np - 1 do
            local d = math.abs(a[c * np + i] - ref[c * np + i])
            if d == 0 then same = same + 1 end
            local lv = d * STD[c + 1] * 255
            if lv > worst then worst = lv end
        end
    end
    all_same, all_n = all_same + same, all_n + n
    if worst > all_worst then all_worst = worst end
    print(string.format("%-12s %-6s %-6s %-11s %12.3f %11.3f%%", name, pmode, img.mode, opts,
        worst, 100 * same / n))
end
print(string.format("all: worst %.3f levels, %.3f%% of %d values bit-identical", all_worst,
    100 * all_same / all_n, all_n))
