-- Search an index by text or by image; list near-duplicates
--
--   clipl search --index photos.safetensors "a dog on a beach"
--   clipl search --index photos.safetensors --image query.jpg --top 5 --format json
--   clipl search --index photos.safetensors --dedup 0.95
local clip = require "clipl"
local cli = require "clipl.cli"
local cjson = require "cjson"

local args = cli.parser {
    name = "search",
    description = "Search an embedding index by text or image (cosine similarity)",
    options = {
        {"-i", "--index", arg = "INDEX", required = true, help = "index made by clipl embed"},
        {"-m", "--model", arg = "M", help = "the model that made the index " ..
            "(default: the bundled model)"},
        {"--image", arg = "FILE", help = "search with an image instead of text"},
        {"-k", "--top", arg = "K", type = "number", default = 10, help = "results to show"},
        {"--format", arg = "FMT", default = "table", choices = {"table", "json"},
            help = "output format"},
        {"--dedup", arg = "THRESHOLD", type = "number",
            help = "list pairs of items with cosine similarity >= THRESHOLD"},
    },
    positional = {{"query", nargs = "?", help = "a text query"}},
}:parse(arg)

if not io.open(args.index, "rb") then
    cli.die("search", args.index .. ": no such index (make one with `clipl embed`)")
end
local ok_open, index = pcall(clip.index.open, args.index)
if not ok_open then
    cli.die("search", index)
end
if index:size() == 0 then
    cli.die("search", args.index .. ": the index is empty")
end

if args.dedup then
    local pairs_ = index:duplicates(args.dedup)
    if args.format == "json" then
        io.write(#pairs_ > 0 and cjson.encode(pairs_):gsub("\\/", "/") or "[]", "\n")
    else
        for _, p in ipairs(pairs_) do
            print(string.format("%.4f  %s  %s", p.score, p.a, p.b))
        end
        io.stderr:write(#pairs_, " pair(s) at or above ", args.dedup, "\n")
    end
    os.exit(0)
end

if not args.query and not args.image then
    cli.die("search", "give a text query or --image FILE")
end

local model, why = require("clipl.files").load_model(args.model, "search")
if not model then
    cli.die("search", why)
end
local ok_q, query = pcall(function()
    if args.image then
        local img = clip.preprocess(clip.image.load(args.image), model:info().image_resolution)
        return model:encode_image(img:unsqueeze(1))
    end
    return model:encode_text(model:tokenize({args.query}, {truncate = true}))
end)
if not ok_q then
    cli.die("search", query)
end
if query:size(2) ~= index:embeddings():size(2) then
    cli.die("search", string.format("the model's embeddings have %d dims but the index's %d: " ..
        "search with the model that made the index", query:size(2), index:embeddings():size(2)))
end

local hits = index:search(query, args.top)
if args.format == "json" then
    local out = {}
    for i, h in ipairs(hits) do
        out[i] = {path = h.path, score = h.score}
    end
    io.write(#out > 0 and cjson.encode(out):gsub("\\/", "/") or "[]", "\n")
else
    for _, h in ipairs(hits) do
        print(string.format("%.4f  %s", h.score, h.path))
    end
end
