-- writes the synthetic shapes data set (PNG images, train/val/heldout TSVs, labels.json)
--
--   clipl make-shapes --out data/shapes --n 20000 --seed 1
--   clipl make-shapes --out /tmp/s --n 1000 --size 96 --two 0.3 --format jpg
--   clipl make-shapes --preview grid.png                   (16 samples in a grid, captions)
--
-- Coloured shapes (circle, square, triangle, star, hexagon, cross, heart, diamond) of three sizes
-- in nine positions over plain, gradient, noise, striped or checkered backgrounds, captioned like
-- "a small red circle on the left". The colour-shape pairs of clip.shapes.HELDOUT never appear in
-- train or val; heldout.tsv has only them. See docs/shapes.md.
local clip = require "clipl"
local cli = require "clipl.cli"

local args = cli.parser {
    name = "make-shapes",
    description = "Write the synthetic captioned shapes data set: images/<split>/*.png, " ..
        "train.tsv, val.tsv, heldout.tsv (path, caption, colour, shape, size, position) and " ..
        "labels.json",
    options = {
        {"-o", "--out", arg = "DIR", help = "output folder (created; required unless --preview)"},
        {"-n", "--n", arg = "N", type = "integer", default = 20000, help = "training images"},
        {"--val", arg = "N", type = "integer", help = "validation images (default n / 10)"},
        {"--heldout", arg = "N", type = "integer",
         help = "images of the held-out colour-shape pairs (default n / 10)"},
        {"-s", "--seed", arg = "S", type = "integer", default = 1, help = "random seed"},
        {"--size", arg = "PX", type = "integer", default = 64, help = "image side in pixels"},
        {"--two", arg = "F", type = "number", default = 0.2,
         help = "fraction of training images with two shapes"},
        {"--shape-captions", arg = "F", type = "number", default = 0,
         help = "fraction of one-shape training captions that leave the colour out " ..
             "(\"a small circle on the left\")"},
        {"--group", arg = "K", type = "integer", default = 1,
         help = "write training images in runs of K that differ only in the shape (hard " ..
             "negatives; train with clipl train --group K)"},
        {"--format", arg = "EXT", default = "png", choices = {"png", "jpg", "webp"},
         help = "image format"},
        {"--preview", arg = "FILE",
         help = "only write a grid of 16 training samples to FILE (.png) and print captions"},
        {"-q", "--quiet", help = "no progress line"},
    },
}:parse(arg)

if args.preview then
    local scenes = clip.shapes.sample(16, {seed = args.seed, size = args.size, two = args.two,
        shape_captions = args.shape_captions, group = args.group})
    clip.shapes.save(clip.shapes.grid(scenes, 4, args.size), args.preview)
    for i, s in ipairs(scenes) do
        print(string.format("%2d  %s  (%s background)", i, s.caption, s.background.kind))
    end
    return
end

if not args.out then
    io.stderr:write("make-shapes: --out DIR is required (see clipl make-shapes --help)\n")
    os.exit(2)
end

local total = args.n + (args.val or math.floor(args.n / 10)) +
    (args.heldout or math.floor(args.n / 10))
local t0 = os.time()
local ok, res = pcall(clip.shapes.generate, {
    out = args.out, n = args.n, n_val = args.val, n_heldout = args.heldout, seed = args.seed,
    size = args.size, two = args.two, shape_captions = args.shape_captions,
    group = args.group, format = args.format,
    progress = not args.quiet and function(done)
        io.stderr:write(string.format("\r%d / %d images", done, total))
    end or nil,
})
if not args.quiet then
    io.stderr:write("\n")
end
if not ok then
    io.stderr:write("make-shapes: ", tostring(res), "\n")
    os.exit(1)
end
print(string.format("wrote %d train, %d val, %d heldout images to %s (%.1f s CPU, %d s wall)",
    res.train, res.val, res.heldout, res.out, res.cpu_seconds, os.time() - t0))
