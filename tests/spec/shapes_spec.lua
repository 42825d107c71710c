-- clip.shapes: the synthetic captioned data set. Determinism, held-out pairs, captions that say
-- what is drawn (checked on the pixels), the CLIP normalisation, files written by generate, and
-- errors.
local clip = require "clipl"
local ffi = require "ffi"

local shapes = clip.shapes

local function bytes(t)
    t = t:contiguous()
    return ffi.string(t.ptr, t:numel())
end

local function colour_rgb(name)
    for _, c in ipairs(shapes.COLOURS) do
        if c[1] == name then
            return c[2]
        end
    end
end

local function read_lines(path)
    local t = {}
    for line in io.lines(path) do
        t[#t + 1] = line
    end
    return t
end

-- the message of the error fn(...) raises (and that it raises)
local function err_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert.is_false(ok)
    return tostring(err)
end

describe("clip.shapes", function()
    it("is deterministic from the seed", function()
        local a, ca = shapes.batch(24, {seed = 7, raw = true})
        local b, cb = shapes.batch(24, {seed = 7, raw = true})
        local c = shapes.batch(24, {seed = 8, raw = true})
        assert.are.equal(bytes(a), bytes(b))
        assert.are.same(ca, cb)
        assert.are_not.equal(bytes(a), bytes(c))
        -- a generator continues its stream: two batches of 12 differ from each other
        local g = clip.generator(7)
        local x = shapes.batch(12, {generator = g, raw = true})
        local y = shapes.batch(12, {generator = g, raw = true})
        assert.are_not.equal(bytes(x), bytes(y))
    end)

    it("never draws a held-out pair in train or val, and only those in heldout", function()
        local held = {}
        for _, p in ipairs(shapes.HELDOUT) do
            held[p[1] .. "/" .. p[2]] = true
        end
        for _, split in ipairs({"train", "val"}) do
            local scenes = shapes.sample(3000, {seed = 3, split = split, two = 0.3})
            for _, s in ipairs(scenes) do
                for _, it in ipairs(s.items) do
                    assert.is_nil(held[it.colour .. "/" .. it.shape], s.caption)
                end
            end
        end
        local seen = {}
        for _, s in ipairs(shapes.sample(500, {seed = 3, split = "heldout"})) do
            assert.are.equal(1, #s.items)
            local k = s.items[1].colour .. "/" .. s.items[1].shape
            assert.is_true(held[k], s.caption)
            seen[k] = true
        end
        for k in pairs(held) do
            assert.is_true(seen[k], k .. " appears in the heldout split")
        end
    end)

    it("captions match the pixels: colour at the centre, position of the shape's box", function()
        local S = 64
        local scenes = shapes.sample(400, {seed = 11, size = S, two = 0.25})
        local px = shapes.render(scenes, S)
        local p = ffi.cast("uint8_t *", px:contiguous().ptr)
        local n_two = 0
        for i, s in ipairs(scenes) do
            n_two = n_two + (#s.items == 2 and 1 or 0)
            for _, it in ipairs(s.items) do
                -- the caption names the item's colour, shape (and its position when it says one)
                assert.truthy(s.caption:find(it.colour .. " " .. it.shape, 1, true), s.caption)
                -- the centre pixel has exactly the named colour (shapes are opaque and their
                -- centre is inside, except the hollow ring)
                local x, y = math.floor(it.cx), math.floor(it.cy)
                local o = (((i - 1) * S + y) * S + x) * 3
                local rgb = colour_rgb(it.colour)
                assert.are.same(rgb, {p[o], p[o + 1], p[o + 2]}, s.caption)
                -- the box of covered pixels lies in the named part of the image
                local box = shapes.bbox(it, S)
                local bx, by = (box[1] + box[3]) / 2 / S, (box[2] + box[4]) / 2 / S
                local col = bx < 0.4 and "left" or bx > 0.6 and "right" or "centre"
                local row = by < 0.4 and "top" or by > 0.6 and "bottom" or "centre"
                local want = (row == "centre" and col == "centre") and "centre" or
                    (row == "centre" and col) or (col == "centre" and row) or (row .. " " .. col)
                assert.are.equal(want, it.position, s.caption)
                assert.is_true(box[1] >= 0 and box[3] <= S and box[3] > box[1])
            end
            if #s.items == 2 then -- two shapes do not overlap
                local a, b = shapes.bbox(s.items[1], S), shapes.bbox(s.items[2], S)
                local overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
                assert.is_false(overlap, s.caption)
            end
        end
        assert.is_true(n_two > 50 and n_two < 150)
    end)

    it("shape_captions leaves the colour out of that share of one-shape captions", function()
        -- the default stream is unchanged by the option's existence (no extra draw at 0)
        local _, c0 = shapes.batch(40, {seed = 5, raw = true})
        local _, cz = shapes.batch(40, {seed = 5, raw = true, shape_captions = 0})
        assert.are.same(c0, cz)
        local scenes = shapes.sample(2000, {seed = 5, two = 0.2, shape_captions = 0.5})
        local one, colourless = 0, 0
        for _, s in ipairs(scenes) do
            for _, it in ipairs(s.items) do
                assert.truthy(s.caption:find(it.shape, 1, true), s.caption)
            end
            local named = false
            for _, c in ipairs(shapes.COLOURS) do
                named = named or s.caption:find("%f[%a]" .. c[1] .. "%f[%A]") ~= nil
            end
            if #s.items == 1 then
                one = one + 1
                colourless = colourless + (named and 0 or 1)
                assert.are.equal(not named, s.colourless == true, s.caption)
            else
                assert.is_true(named, s.caption) -- two-shape captions always name both colours
            end
        end
        -- binomial: ~1600 one-shape scenes at p = 0.5 have a standard error of 1.25%; +-6% is
        -- about 5 standard errors
        assert.is_true(math.abs(colourless / one - 0.5) < 0.06, colourless .. " of " .. one)
    end)

    it("group writes runs of scenes that differ only in the shape", function()
        local scenes = shapes.sample(400, {seed = 9, two = 0.2, group = 4})
        local held, runs = {}, 0
        for _, p in ipairs(shapes.HELDOUT) do
            held[p[1] .. "/" .. p[2]] = true
        end
        for r = 0, 99 do
            local first = scenes[r * 4 + 1]
            if #first.items == 1 then
                runs = runs + 1
                local it0, seen = first.items[1], {}
                for k = 1, 4 do
                    local s = scenes[r * 4 + k]
                    local it = s.items[1]
                    assert.are.equal(1, #s.items)
                    assert.are.same({it0.colour, it0.size, it0.position},
                        {it.colour, it.size, it.position})
                    assert.is_nil(seen[it.shape], s.caption) -- four different shapes
                    seen[it.shape] = true
                    assert.are.equal(first.caption:gsub(it0.shape, it.shape), s.caption)
                    assert.is_nil(held[it.colour .. "/" .. it.shape], s.caption)
                end
            end
        end
        assert.is_true(runs > 60, tostring(runs)) -- ~80% of the runs start with one shape
        assert.has_error(function() shapes.sample(2, {group = 0}) end,
            "shapes: group (scenes per hard-negative group) must be an integer >= 1, got 0")
    end)

    it("the background is never the shape's colour", function()
        for _, s in ipairs(shapes.sample(500, {seed = 5})) do
            for _, it in ipairs(s.items) do
                for _, c in ipairs({s.background.a, s.background.b}) do
                    local d = math.sqrt((c[1] - it.rgb[1]) ^ 2 + (c[2] - it.rgb[2]) ^ 2 +
                        (c[3] - it.rgb[3]) ^ 2)
                    assert.is_true(d >= 110, s.caption)
                end
            end
        end
    end)

    it("edges are anti-aliased", function()
        local scene = {background = {kind = "plain", a = {0, 0, 0}},
                       items = {{shape = "circle", cx = 32.3, cy = 30.7, radius = 15.2,
                                 rgb = {255, 255, 255}}}}
        local px = shapes.render({scene}, 64)
        local p, partial = ffi.cast("uint8_t *", px.ptr), 0
        for k = 0, 64 * 64 * 3 - 1, 3 do
            if p[k] > 0 and p[k] < 255 then
                partial = partial + 1
            end
        end
        assert.is_true(partial > 40)
    end)

    it("batch gives CLIP-normalised images and the captions", function()
        local raw, caps = shapes.batch(4, {seed = 2, raw = true})
        local x, caps2 = shapes.batch(4, {seed = 2})
        assert.are.same(caps, caps2)
        assert.are.same({4, 3, 64, 64}, {x:size(1), x:size(2), x:size(3), x:size(4)})
        -- reference: clip.preprocess of each image as an RGB image (Pillow-exact path); both are
        -- (v / 255 - mean) / std in f32, so 1e-6 covers a different rounding order
        for i = 1, 4 do
            local img = clip.image.from_pixels(raw:select(1, i))
            assert.tensor_close(x:select(1, i), clip.preprocess(img, 64), 1e-6)
        end
        local x32 = shapes.batch(2, {seed = 2, size = 32})
        assert.are.equal(32, x32:size(4))
    end)

    it("generate writes the images, the TSVs and labels.json", function()
        local dir = os.tmpname()
        os.remove(dir)
        local summary = shapes.generate{out = dir, n = 40, n_val = 8, n_heldout = 6, seed = 4}
        assert.are.equal(40, summary.train)
        local train = read_lines(dir .. "/train.tsv")
        assert.are.equal("path\tcaption\tcolour\tshape\tsize\tposition", train[1])
        assert.are.equal(41, #train)
        assert.are.equal(9, #read_lines(dir .. "/val.tsv"))
        local held = read_lines(dir .. "/heldout.tsv")
        assert.are.equal(7, #held)
        local path, caption, colour, shape =
            held[2]:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)")
        assert.truthy(caption:find(colour .. " " .. shape, 1, true))
        local img = clip.image.load(dir .. "/" .. path)
        assert.are.equal(64, img.width)
        assert.are.equal("RGB", img.mode)
        local labels = io.open(dir .. "/labels.json"):read("*a")
        assert.truthy(labels:find('"heldout": [["red", "triangle"]', 1, true))
        -- the same seed writes the same files
        local dir2 = os.tmpname()
        os.remove(dir2)
        shapes.generate{out = dir2, n = 40, n_val = 8, n_heldout = 6, seed = 4}
        for _, name in ipairs({"train.tsv", "val.tsv", "heldout.tsv", "images/train/000039.png"}) do
            local a = io.open(dir .. "/" .. name, "rb"):read("*a")
            local b = io.open(dir2 .. "/" .. name, "rb"):read("*a")
            assert.are.equal(a, b, name)
        end
        os.execute("rm -rf '" .. dir .. "' '" .. dir2 .. "'")
    end)

    it("labels lists the classes and marks the held-out pairs; grid tiles samples", function()
        local l = shapes.labels()
        assert.are.equal(#shapes.COLOURS * #shapes.SHAPES, #l.pairs)
        local held = 0
        for _, p in ipairs(l.pairs) do
            held = held + (p[3] and 1 or 0)
        end
        assert.are.equal(#shapes.HELDOUT, held)
        assert.are.same({"small", "medium", "large"}, l.sizes)
        -- custom colours and shapes keep the default held-out pairs that exist among them
        local own = shapes.labels({colours = {{"red", {255, 0, 0}}, {"teal", {0, 128, 128}}},
                                   shapes = {"triangle", "ring"}})
        local marked = {}
        for _, p in ipairs(own.pairs) do
            if p[3] then
                marked[#marked + 1] = p[1] .. " " .. p[2]
            end
        end
        assert.are.same({"red triangle"}, marked)
        local px = shapes.batch(5, {seed = 1, raw = true})
        local g = shapes.grid(px, 3)
        assert.are.same({128, 192, 3}, {g:size(1), g:size(2), g:size(3)})
        assert.are.equal(bytes(px:select(1, 5)), bytes(g:narrow(1, 65, 64):narrow(2, 65, 64)))
    end)

    it("clipl make-shapes writes a data set", function()
        local clipl = os.getenv("CLIPL_LIB"):match("^(.*)/[^/]+$") .. "/clipl"
        local dir = os.tmpname()
        os.remove(dir)
        local p = io.popen(clipl .. " make-shapes -q --out " .. dir ..
            " --n 20 --val 2 --heldout 3 --seed 9 2>&1")
        local msg = p:read("*a")
        p:close()
        assert.truthy(msg:find("wrote 20 train, 2 val, 3 heldout images", 1, true), msg)
        assert.are.equal(4, #read_lines(dir .. "/heldout.tsv"))
        -- the same images as the Lua API with the same options
        local again = os.tmpname()
        os.remove(again)
        shapes.generate{out = again, n = 20, n_val = 2, n_heldout = 3, seed = 9}
        local a = io.open(dir .. "/train.tsv", "rb"):read("*a")
        assert.are.equal(a, io.open(again .. "/train.tsv", "rb"):read("*a"))
        os.execute("rm -rf '" .. dir .. "' '" .. again .. "'")
    end)

    it("bad arguments give clear errors", function()
        assert.has_error(function() shapes.batch(2, {size = 3}) end,
            "shapes: size must be an integer in 16..4096 (pixels), got 3")
        assert.has_error(function() shapes.batch(2, {split = "test"}) end,
            'shapes: split must be "train", "val", "heldout" or "all", got test')
        assert.has_error(function() shapes.batch(2, {shapes = {"circle", "blob"}}) end)
        local err = err_of(shapes.batch, 2, {shapes = {"circle", "blob"}})
        assert.truthy(err:find("shapes[2]: unknown shape 'blob'", 1, true))
        err = err_of(shapes.sample, -1)
        assert.truthy(err:find("n must be an integer >= 0", 1, true))
        err = err_of(shapes.batch, 2, {heldout = {{"red", "blob"}}})
        assert.truthy(err:find("heldout[1] must be {colour, shape}", 1, true))
        err = err_of(shapes.batch, 2, {two = 2})
        assert.truthy(err:find("two (the fraction of images with two shapes) must be in [0, 1]", 1,
            true))
        err = err_of(shapes.batch, 2, {shape_captions = -0.1})
        assert.truthy(err:find("shape_captions (the fraction of one-shape captions without the " ..
            "colour) must be in [0, 1]", 1, true))
        err = err_of(shapes.generate, {n = 3})
        assert.truthy(err:find("opts.out (the output folder) is required", 1, true))
        err = err_of(shapes.save, clip.zeros({4, 4, 3}, "u8"), "/tmp/x.bmp")
        assert.truthy(err:find("unknown image format", 1, true))
        err = err_of(shapes.render, {{background = {kind = "plain", a = {0, 0, 0}},
                                         items = {{shape = "blob", cx = 1, cy = 1, radius = 1,
                                                   rgb = {1, 2, 3}}}}})
        assert.truthy(err:find("scene 1: unknown shape 'blob'", 1, true))
    end)
end)
