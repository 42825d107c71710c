-- The demo behind scripts/demo: every stage of CLIP in clipl, ending in zero-shot classification
-- with the bundled model (models/clipl-tiny) on its sample images. The tokenizer and
-- preprocessing stages use OpenAI's vocabulary and images in ../shared/clip.
local clip = require "clipl"

local here = debug.getinfo(1, "S").source:match("^@(.*)/scripts/") or "."
local shared = os.getenv("CLIPL_SHARED") or (here .. "/../shared/clip")

local missing = {}
local function step(title, fn)
    io.write("\n== ", title, " ==\n")
    local ok, err = pcall(fn)
    if not ok then
        print("  not available yet: " .. tostring(err))
        missing[#missing + 1] = title
    end
end

step("tensors on oneDNN", function()
    local x = clip.randn({2, 5}, {seed = 1})
    print(x)
    print("softmax over the last dim:")
    print(x:softmax(-1))
end)

step("tokenizer (OpenAI's BPE)", function()
    local vocab = os.getenv("CLIPL_VOCAB") or shared .. "/bpe_simple_vocab_16e6.txt.gz"
    local tok = clip.tokenizer(vocab)
    local prompts = {"a photo of a cat", "a diagram", "a dog"}
    local rows = tok:tokenize(prompts)
    print("  " .. #prompts .. " prompts -> a " .. table.concat(rows:size(), "x") .. " i32 tensor")
    for _, p in ipairs(prompts) do
        print(string.format("  %-18s -> %s", p, table.concat(tok:encode(p), " ")))
    end
end)

step("preprocessing (Pillow-exact bicubic, centre crop, CLIP's mean/std)", function()
    local img = clip.image.load(shared .. "/CLIP.png")
    local image = clip.preprocess(img, 224)
    print("  CLIP.png -> " .. table.concat(image:size(), "x") .. " tensor")
end)

step("zero-shot with the bundled model (models/clipl-tiny)", function()
    local bundled = clip.bundled_model()
    local model = clip.load(bundled.path)
    print("  " .. tostring(model):gsub("\n", "\n  "))
    local clf = clip.zeroshot.classifier(model, bundled.labels, {"a {}"}, {cache = false})
    local files = require("clipl.files").images({bundled.samples})
    local images = clip.preprocess_batch(files, model:info().image_resolution)
    for i, top in ipairs(clf:topk(images, 3)) do
        local shown = {}
        for _, t in ipairs(top) do
            shown[#shown + 1] = string.format("%s %.2f", t.label, t.prob)
        end
        print(string.format("  %-22s %s", files[i]:match("[^/]*$"), table.concat(shown, ", ")))
    end
    print("  (the bundled model knows colour well, shape only partly: see its MODEL_CARD.md)")
end)

if #missing > 0 then
    print("\nStill missing: " .. table.concat(missing, "; "))
end
