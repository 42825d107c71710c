-- Zero-shot accuracy of a model trained on the shapes data set, as reported in MODEL_CARD.md:
--
--   OMP_WAIT_POLICY=passive clipl run models/clipl-tiny/evaluate.lua MODEL.safetensors DATA_DIR
--
-- DATA_DIR is what `clipl make-shapes --out DATA_DIR` wrote. For the val split (colour-shape pairs
-- seen in training) and the heldout split (the held-out pairs, never seen together) it prints the
-- accuracy of classifying each image among ALL colour-shape pairs (80 classes), of its shape alone
-- (8 classes) and of its colour alone (10 classes), with the prompt templates "a {}" and
-- "a photo of a {}.".
local clip = require "clipl"
local T = clip.train
local model_path, data = arg[1], arg[2]
assert(model_path and data, "usage: evaluate.lua MODEL.safetensors DATA_DIR")
local model = clip.load(model_path)
local labels = clip.shapes.labels()
local tokenize = function(texts)
    return clip.zeroshot.tokenize(model, texts, {truncate = true})
end

local function classifier(classes, template)
    return clip.zeroshot.classifier(model, classes, {template}, {cache = false,
        tokenize = tokenize})
end

local results = {}
for _, split in ipairs({"val", "heldout"}) do
    local ds = T.dataset(data .. "/" .. split .. ".tsv", {label_column = "colour+shape"})
    local x, y = T.features(model, ds, {})
    for _, template in ipairs({"a {}", "a photo of a {}."}) do
        local row = {split = split, template = template, images = #y}
        for _, kind in ipairs({"pair", "shape", "colour"}) do
            local classes, index = {}, {}
            if kind == "pair" then
                for _, p in ipairs(labels.pairs) do
                    classes[#classes + 1] = p[1] .. " " .. p[2]
                end
            else
                classes = kind == "shape" and labels.shapes or labels.colours
            end
            for i, c in ipairs(classes) do
                index[c] = i
            end
            local want = {}
            for i, l in ipairs(y) do
                local colour, shape = ds.classes[l]:match("^(%S+) (%S+)$")
                want[i] = index[kind == "pair" and ds.classes[l] or
                    (kind == "shape" and shape or colour)]
            end
            local clf = classifier(classes, template)
            row[kind] = T.accuracy(clf:logits(x), want)
        end
        results[#results + 1] = row
        print(string.format("%-8s %-18s %5d images  pair (80) %6.2f%%  shape (8) %6.2f%%  " ..
            "colour (10) %6.2f%%", split, "'" .. template .. "'", #y, 100 * row.pair,
            100 * row.shape, 100 * row.colour))
    end
end
return results
