-- The demo behind scripts/demo: zero-shot classification with the bundled model.
-- Until the bundled model exists (models/clipl-tiny), it runs every stage of the pipeline that is
-- there, on the parity model and images in ../shared/clip, and says what is still missing.
local clip = require "clipl"

local here = debug.getinfo(1, "S").source:match("^@(.*)/scripts/") or "."
local shared = os.getenv("CLIPL_SHARED") or (here .. "/../shared/clip")

local function exists(path)
    local f = io.open(path, "rb")
    if f then f:close() end
    return f ~= nil
end

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

local tokens
step("tokenizer (OpenAI's BPE)", function()
    local vocab = os.getenv("CLIPL_VOCAB") or shared .. "/bpe_simple_vocab_16e6.txt.gz"
    local tok = clip.tokenizer(vocab)
    local prompts = {"a photo of a cat", "a diagram", "a dog"}
    tokens = tok:tokenize(prompts)
    for i, p in ipairs(prompts) do
        print(string.format("  %-18s -> %s", p, table.concat(tok:encode(p), " ")))
    end
end)

local image
step("preprocessing (Pillow-exact bicubic, centre crop, CLIP's mean/std)", function()
    local img = clip.image.load(shared .. "/CLIP.png")
    image = clip.preprocess(img, 64)
    print("  CLIP.png -> " .. table.concat(image:size(), "x") .. " tensor")
end)

step("zero-shot with a CLIP model", function()
    local bundled = here .. "/models/clipl-tiny"
    local path = exists(bundled .. "/model.safetensors") and bundled or
        shared .. "/parity/tiny_vit/tiny_vit.safetensors"
    if path ~= bundled then
        print("  (the bundled model is not trained yet: using the seeded parity model " ..
            "tiny_vit, whose answers are arbitrary)")
        missing[#missing + 1] = "the bundled model models/clipl-tiny"
    end
    local model = clip.load(path)
    local f = assert(io.open(shared .. "/parity/inputs/prompts.json"))
    local labels = require("cjson").decode(f:read("*a"))
    f:close()
    labels = {labels[1], labels[2], labels[3]}
    local ids = clip.load_npy(shared .. "/parity/inputs/tokens_v1024.npy"):narrow(1, 1, #labels)
    local images = clip.load_npy(shared .. "/parity/inputs/images_64.npy")
    local logits = model(images, ids)
    local probs = logits:softmax(-1)
    for i = 1, probs:size(1) do
        local row = {}
        for j = 1, #labels do
            row[#row + 1] = string.format("%s %.2f", labels[j], probs:get(i, j))
        end
        print("  image " .. i .. ": " .. table.concat(row, ", "))
    end
end)

if #missing > 0 then
    print("\nStill missing: " .. table.concat(missing, "; "))
end
