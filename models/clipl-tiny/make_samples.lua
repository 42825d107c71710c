-- Writes models/clipl-tiny/samples/: 8 images from the shapes generator, one shape each, 4 of
-- colour-shape pairs seen in training and 4 of held-out pairs, named <colour>_<shape>.png, and
-- labels.txt (their "colour shape" names, what clip.bundled_model().labels returns).
--
--   clipl run models/clipl-tiny/make_samples.lua
local clip = require "clipl"
local here = debug.getinfo(1, "S").source:sub(2):match("(.*)/") or "."
local out = here .. "/samples"
os.execute("mkdir -p '" .. out .. "'")
local chosen, names = {}, {}
for _, split in ipairs({"val", "heldout"}) do
    local scenes = clip.shapes.sample(200, {split = split, seed = 7, two = 0})
    local n = 0
    for _, s in ipairs(scenes) do
        local it = s.items[1]
        local key = it.colour .. " " .. it.shape
        if #s.items == 1 and not chosen[key] and it.size ~= "small" and n < 4 then
            chosen[key] = true
            n = n + 1
            local px = clip.shapes.render({s}, 64)
            local file = out .. "/" .. it.colour .. "_" .. it.shape .. ".png"
            clip.shapes.save(px:select(1, 1), file)
            names[#names + 1] = key
        end
    end
end
local f = assert(io.open(out .. "/labels.txt", "w"))
f:write(table.concat(names, "\n"), "\n")
f:close()
print(table.concat(names, ", "))
