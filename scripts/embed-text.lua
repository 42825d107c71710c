-- Embed lines of text (captions, labels) into an index, for text-to-text and image-to-text search
--
--   clipl embed-text --out captions.safetensors captions.txt
--   clipl search --index captions.safetensors --image photo.jpg
local clip = require "clipl"
local cli = require "clipl.cli"
local progress = require "clipl.progress"

local args = cli.parser {
    name = "embed-text",
    description = "Embed lines of text into an index (L2-normalised CLIP text embeddings)",
    options = {
        {"-m", "--model", arg = "M", help = "model name, weights file or model folder " ..
            "(default: the bundled model)"},
        {"-o", "--out", arg = "INDEX", required = true,
            help = "the index file to create or extend"},
        {"--batch", arg = "N", type = "number", default = 256, help = "texts per encoder call"},
        {"--dtype", arg = "T", default = "f32", choices = {"f32", "f16"},
            help = "stored embedding dtype"},
    },
    positional = {{"files", nargs = "+", help = "text files, one caption per line"}},
}:parse(arg)

local model, why = require("clipl.files").load_model(args.model, "embed-text")
if not model then
    cli.die("embed-text", why)
end
local ok_open, index = pcall(clip.index.open, args.out, {dtype = args.dtype, kind = "text"})
if not ok_open then
    cli.die("embed-text", index)
end
local texts = {}
for _, f in ipairs(args.files) do
    for _, line in ipairs(require("clipl.files").lines(f)) do
        if not index:has(line) then
            texts[#texts + 1] = line
        end
    end
end
local bar = progress.new(#texts, {label = "embed-text", unit = "text"})
for b0 = 1, #texts, args.batch do
    local chunk = {}
    for i = b0, math.min(#texts, b0 + args.batch - 1) do
        chunk[#chunk + 1] = texts[i]
    end
    index:add(chunk, model:encode_text(model:tokenize(chunk, {truncate = true})))
    bar:update(#chunk)
end
bar:finish()
index:save()
io.stderr:write(string.format("%s: %d embeddings\n", args.out, index:size()))
