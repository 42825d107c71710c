-- Zero-shot classification of images with a CLIP model and prompt templates
--
--   clipl zeroshot --labels "cat,dog,bird" photos/
--   clipl zeroshot --model ViT-B/32 --labels-file labels.txt --templates ensemble --top 3 a.jpg
--   clipl zeroshot --format json --labels "red,green" img/ > out.json
--
-- Without arguments it runs on the bundled model and its sample images.
local clip = require "clipl"
local cli = require "clipl.cli"
local cjson = require "cjson"

local args = cli.parser {
    name = "zeroshot",
    description = "Zero-shot classification of images with a CLIP model and prompt templates",
    options = {
        {"-m", "--model", arg = "M", help = "model name, weights file or model folder " ..
            "(default: the bundled model)"},
        {"--labels", arg = "A,B,C", help = "class labels, comma-separated"},
        {"--labels-file", arg = "FILE", help = "class labels, one per line"},
        {"--templates", arg = "FILE|NAME", default = "simple",
            help = "prompt templates: a file with one template per line ({} = the label), " ..
                "or a shipped set: simple, ensemble"},
        {"-k", "--top", arg = "K", type = "number",
            help = "labels to show per image (default: all)"},
        {"--format", arg = "FMT", default = "table", choices = {"table", "json", "csv"},
            help = "output format"},
        {"--sheet", arg = "OUT.png", help = "also draw a contact sheet (thumbnails, top labels)"},
        {"--batch", arg = "N", type = "number", default = 16, help = "images per encoder call"},
        {"--dtype", arg = "T", default = "f32", choices = {"f32", "bf16"}, help = "compute dtype"},
        {"--no-cache", help = "rebuild the classifier instead of reusing a cached one"},
    },
    positional = {{"inputs", nargs = "*", help = "image files or folders"}},
}:parse(arg)

local collect = require("clipl.files").images

local function read_labels()
    local labels = {}
    if args.labels then
        for l in args.labels:gmatch("[^,]+") do
            labels[#labels + 1] = l:match("^%s*(.-)%s*$")
        end
    end
    if args.labels_file then
        local f, err = io.open(args.labels_file, "r")
        if not f then
            cli.die("zeroshot", err)
        end
        for line in f:lines() do
            if line:match("%S") then
                labels[#labels + 1] = line:match("^%s*(.-)%s*$")
            end
        end
        f:close()
    end
    return labels
end

local labels = read_labels()
local inputs = args.inputs
local model_of = require("clipl.files").model
local model_name, why, bundled = model_of(args.model, "zeroshot")
if not model_name then
    cli.die("zeroshot", why)
end
if #inputs == 0 and bundled then
    -- the demo: the bundled model on its sample images
    inputs = {bundled.samples}
    if #labels == 0 then
        labels = bundled.labels
    end
end
if #labels == 0 then
    cli.die("zeroshot", "no labels: give --labels \"a,b,c\" or --labels-file FILE")
end
if #inputs == 0 then
    cli.die("zeroshot", "no images given")
end

local ok, model = pcall(clip.load, model_name, {dtype = args.dtype})
if not ok then
    cli.die("zeroshot", model)
end
local resolution = model:info().image_resolution
local progress = require "clipl.progress"

local clf_bar
local clf_ok, clf = pcall(clip.zeroshot.classifier, model, labels, args.templates, {
    cache = not args.no_cache,
    progress = function(done, total)
        clf_bar = clf_bar or progress.new(total, {label = "prompts", unit = "prompt"})
        clf_bar:set(done)
    end,
})
if clf_bar then clf_bar:finish() end
if not clf_ok then
    cli.die("zeroshot", clf)
end

local files = collect(inputs)
local results, bad = {}, {}
local bar = #files > args.batch and progress.new(#files, {label = "images", unit = "img"}) or nil
for b0 = 1, #files, args.batch do
    local chunk = {}
    for i = b0, math.min(#files, b0 + args.batch - 1) do
        chunk[#chunk + 1] = files[i]
    end
    local images, failed = clip.preprocess_batch(chunk, resolution, {skip_bad = true})
    local skip = {}
    for _, f in ipairs(failed) do
        skip[f.index] = true
        bad[#bad + 1] = f
    end
    local probs = #failed < #chunk and clf:classify(images) or nil
    for i, path in ipairs(chunk) do
        if not skip[i] then
            local row = {}
            for c = 1, #labels do
                row[c] = {label = labels[c], prob = probs:get(i, c)}
            end
            table.sort(row, function(x, y) return x.prob > y.prob end)
            if args.top then
                for c = #row, args.top + 1, -1 do
                    row[c] = nil
                end
            end
            results[#results + 1] = {image = path, top = row}
        end
    end
    if bar then bar:update(#chunk) end
end
if bar then bar:finish() end

if args.format == "json" then
    -- cjson 2.1.0 writes an empty table as {}: an empty result is written as []
    io.write(#results > 0 and cjson.encode(results):gsub("\\/", "/") or "[]", "\n")
elseif args.format == "csv" then
    local function q(s)
        s = tostring(s)
        return s:find('[,"\n]') and '"' .. s:gsub('"', '""') .. '"' or s
    end
    print("image,rank,label,prob")
    for _, r in ipairs(results) do
        for k, t in ipairs(r.top) do
            print(table.concat({q(r.image), k, q(t.label), string.format("%.6f", t.prob)}, ","))
        end
    end
else
    for _, r in ipairs(results) do
        print(r.image)
        for _, t in ipairs(r.top) do
            local width = math.floor(t.prob * 30 + 0.5)
            print(string.format("  %6.2f%%  %-30s %s", 100 * t.prob, t.label,
                string.rep("#", width)))
        end
    end
end

if args.sheet and #results > 0 then
    local sheet_ok, err = pcall(clip.zeroshot.contact_sheet, args.sheet, results,
        {labels = math.min(args.top or 5, 5)})
    if not sheet_ok then
        cli.die("zeroshot", err)
    end
    io.stderr:write("contact sheet: ", args.sheet, "\n")
end

if #bad > 0 then
    io.stderr:write(#bad, " image(s) could not be read:\n")
    for _, f in ipairs(bad) do
        io.stderr:write("  ", f.path, ": ", f.message, "\n")
    end
end
if #results == 0 and #bad > 0 then
    os.exit(1)
end
