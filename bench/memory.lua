--- bench/memory.lua: the memory of an inference process, for the issue's "peak memory no more
-- than the weights plus activations". Loads a weights file (mapped read-only, as clip.load does),
-- encodes 16 images twice and 80 prompts, then prints the process's private memory (RssAnon:
-- prepared weights, activations, caches), its file-backed resident pages (RssFile: the mapping,
-- page cache the kernel can drop and re-read) and the peak of both together (VmHWM).
--   clipl run bench/memory.lua WEIGHTS.safetensors [f32|bf16]
-- (bench/encode leaves seeded ViT-B/32 and RN50 weights in .cache/bench-encode.)
local clip = require "clipl"

local function status(field)
    for line in io.lines("/proc/self/status") do
        local kb = line:match("^" .. field .. ":%s+(%d+)")
        if kb then
            return tonumber(kb) / 1024
        end
    end
end

local path, dtype = arg[1], arg[2] or "f32"
if not path then
    io.stderr:write("usage: clipl run bench/memory.lua WEIGHTS.safetensors [f32|bf16]\n")
    os.exit(2)
end
local model = clip.load(path, {dtype = dtype})
local info = model:info()
local r = info.image_resolution
local images = clip.randn({16, 3, r, r}, {seed = 2})
model:encode_image(images)
model:encode_image(images)
model:encode_text(clip.zeros({80, 77}, "i32"))
print(string.format("%s %s: weights %.0f MB as f32; RssAnon %.0f MB, RssFile %.0f MB, " ..
    "VmHWM %.0f MB", path:match("[^/]+$"), dtype, info.parameters * 4 / 2 ^ 20,
    status("RssAnon"), status("RssFile"), status("VmHWM")))
