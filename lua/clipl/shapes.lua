--- A synthetic captioned data set: coloured shapes of three sizes in nine positions over varied
-- backgrounds, with captions such as "a small red circle on the left" (engine/image/draw.c does
-- the drawing). Deterministic from a seed; some colour-shape pairs are held out of training.
--
--   local images, captions, scenes = clip.shapes.batch(32, {generator = g})   -- [32,3,64,64] f32
--   local raw = clip.shapes.batch(32, {seed = 1, raw = true})                  -- [32,64,64,3] u8
--   clip.shapes.generate{out = "data/shapes", n = 20000, seed = 1}             -- PNGs + TSVs
--
-- See docs/shapes.md.
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, check = lib.C, lib.check

local M = {}
local shapes = {}
M.shapes = shapes

-- ---- vocabulary ---------------------------------------------------------------------------------

--- Colour names and their RGB values.
shapes.COLOURS = {
    {"red", {220, 30, 30}},
    {"green", {40, 170, 60}},
    {"blue", {30, 80, 220}},
    {"yellow", {245, 215, 30}},
    {"orange", {245, 135, 20}},
    {"purple", {135, 50, 185}},
    {"pink", {245, 125, 190}},
    {"cyan", {40, 205, 215}},
    {"white", {248, 248, 248}},
    {"black", {18, 18, 18}},
}

--- Shapes drawn by default (the rasteriser also knows "ring" and "pentagon").
shapes.SHAPES = {"circle", "square", "triangle", "star", "hexagon", "cross", "heart", "diamond"}

--- Sizes: radius as a fraction of the image side, drawn uniformly in [lo, hi].
shapes.SIZES = {
    {"small", 0.10, 0.14},
    {"medium", 0.17, 0.22},
    {"large", 0.26, 0.32},
}

--- Positions: name, column and row (-1, 0, 1), and the caption phrase.
shapes.POSITIONS = {
    {"centre", 0, 0, "in the centre"},
    {"left", -1, 0, "on the left"},
    {"right", 1, 0, "on the right"},
    {"top", 0, -1, "at the top"},
    {"bottom", 0, 1, "at the bottom"},
    {"top left", -1, -1, "in the top left corner"},
    {"top right", 1, -1, "in the top right corner"},
    {"bottom left", -1, 1, "in the bottom left corner"},
    {"bottom right", 1, 1, "in the bottom right corner"},
}

--- Colour-shape pairs never drawn in the train (and val) split; the heldout split has only these.
shapes.HELDOUT = {
    {"red", "triangle"}, {"blue", "heart"}, {"green", "star"}, {"yellow", "square"},
    {"purple", "circle"}, {"orange", "cross"}, {"pink", "hexagon"}, {"cyan", "diamond"},
}

--- Caption templates of one shape ({size}, {colour}, {shape}, {position} are replaced).
shapes.TEMPLATES = {
    "a {size} {colour} {shape} {position}",
    "a {colour} {shape} {position}",
    "a {size} {colour} {shape}",
    "a {colour} {shape}",
}
--- Templates of one shape that leave the colour out, used for a fraction of the single-shape
-- captions (option shape_captions, 0 by default): the caption then describes the shape alone.
shapes.TEMPLATES_SHAPE = {
    "a {size} {shape} {position}",
    "a {shape} {position}",
    "a {size} {shape}",
    "a {shape}",
}
--- Templates of two shapes ({colour1}, {shape1}, {position1}, {colour2}, ...).
shapes.TEMPLATES2 = {
    "a {colour1} {shape1} and a {colour2} {shape2}",
    "a {colour1} {shape1} {position1} and a {colour2} {shape2} {position2}",
}

-- position pairs that two shapes of size small or medium can take without overlapping
local PAIRS = {
    {"left", "right"}, {"top", "bottom"}, {"top left", "bottom right"},
    {"top right", "bottom left"},
}

local BACKGROUNDS = { -- kind, C enum, weight
    {"plain", C.CLIPL_BG_PLAIN, 0.25},
    {"gradient", C.CLIPL_BG_GRADIENT, 0.25},
    {"noise", C.CLIPL_BG_NOISE, 0.2},
    {"stripes", C.CLIPL_BG_STRIPES, 0.2},
    {"checker", C.CLIPL_BG_CHECKER, 0.1},
}
local BG_KIND = {}
for _, b in ipairs(BACKGROUNDS) do
    BG_KIND[b[1]] = b[2]
end

-- a background colour must be at least this far (Euclidean RGB) from every shape's colour
local MIN_BG_DISTANCE = 110

-- ---- random numbers -----------------------------------------------------------------------------

-- Uniform numbers in [0, 1) from a clip.generator, taken from a buffer refilled 1024 at a time.
local Rng = {}
Rng.__index = Rng

local function new_rng(g)
    local buf = tensor.empty({1024}, "f32")
    return setmetatable({g = g, buf = buf, p = ffi.cast("float *", buf.ptr), i = 1024}, Rng)
end

function Rng:uniform()
    if self.i >= 1024 then
        check(C.clipl_tensor_uniform_(self.buf, self.g, 0, 1))
        self.i = 0
    end
    local u = self.p[self.i]
    self.i = self.i + 1
    return u
end

--- An integer in 1..n.
function Rng:int(n)
    return math.min(math.floor(self:uniform() * n), n - 1) + 1
end

function Rng:range(lo, hi)
    return lo + (hi - lo) * self:uniform()
end

-- ---- options ------------------------------------------------------------------------------------

local function index_by_name(list)
    local t = {}
    for i, e in ipairs(list) do
        t[e[1]] = i
    end
    return t
end

local function fail(msg)
    error("shapes: " .. msg, 0)
end

-- Resolves the options of sample/batch/generate into a config table (raises on bad ones).
local function config(opts)
    opts = opts or {}
    if type(opts) ~= "table" then
        fail("options must be a table, got " .. type(opts))
    end
    local cfg = {}
    cfg.size = opts.size or 64
    if type(cfg.size) ~= "number" or cfg.size ~= math.floor(cfg.size) or cfg.size < 16 or
        cfg.size > 4096 then
        fail("size must be an integer in 16..4096 (pixels), got " .. tostring(opts.size))
    end
    cfg.split = opts.split or "train"
    if cfg.split ~= "train" and cfg.split ~= "val" and cfg.split ~= "heldout" and
        cfg.split ~= "all" then
        fail("split must be \"train\", \"val\", \"heldout\" or \"all\", got " ..
            tostring(opts.split))
    end
    cfg.two = opts.two
    if cfg.two == nil then
        cfg.two = cfg.split == "train" and 0.2 or 0
    end
    if type(cfg.two) ~= "number" or cfg.two < 0 or cfg.two > 1 then
        fail("two (the fraction of images with two shapes) must be in [0, 1], got " ..
            tostring(opts.two))
    end
    cfg.shape_captions = opts.shape_captions or 0
    if type(cfg.shape_captions) ~= "number" or cfg.shape_captions < 0 or
        cfg.shape_captions > 1 then
        fail("shape_captions (the fraction of one-shape captions without the colour) must be " ..
            "in [0, 1], got " .. tostring(opts.shape_captions))
    end
    cfg.group = opts.group or 1
    if type(cfg.group) ~= "number" or cfg.group ~= math.floor(cfg.group) or cfg.group < 1 then
        fail("group (scenes per hard-negative group) must be an integer >= 1, got " ..
            tostring(opts.group))
    end
    cfg.rotation = opts.rotation or 0.2
    if type(cfg.rotation) ~= "number" or cfg.rotation < 0 then
        fail("rotation (largest angle in radians) must be a number >= 0")
    end
    cfg.colours = opts.colours or shapes.COLOURS
    cfg.colour_index = index_by_name(cfg.colours)
    for i, c in ipairs(cfg.colours) do
        if type(c) ~= "table" or type(c[1]) ~= "string" or type(c[2]) ~= "table" or #c[2] ~= 3 then
            fail("colours[" .. i .. "] must be {name, {r, g, b}}")
        end
    end
    cfg.shapes = opts.shapes or shapes.SHAPES
    cfg.shape_kind = {}
    for i, s in ipairs(cfg.shapes) do
        local k = C.clipl_shape_from_name(tostring(s))
        if k < 0 then
            fail("shapes[" .. i .. "]: unknown shape '" .. tostring(s) .. "' (known: circle, " ..
                "square, triangle, star, hexagon, cross, heart, diamond, ring, pentagon)")
        end
        cfg.shape_kind[s] = k
    end
    if #cfg.colours < 2 or #cfg.shapes < 1 then
        fail("need at least 2 colours and 1 shape")
    end
    cfg.heldout = opts.heldout
    if cfg.heldout == nil then -- the default pairs that exist among the colours and shapes in use
        cfg.heldout = {}
        for _, p in ipairs(shapes.HELDOUT) do
            if cfg.colour_index[p[1]] and cfg.shape_kind[p[2]] then
                cfg.heldout[#cfg.heldout + 1] = p
            end
        end
    end
    cfg.is_heldout = {}
    for i, p in ipairs(cfg.heldout) do
        if type(p) ~= "table" or not cfg.colour_index[p[1]] or not cfg.shape_kind[p[2]] then
            fail("heldout[" .. i .. "] must be {colour, shape} of the colours and shapes in " ..
                "use, " ..
                "got " .. (type(p) == "table" and (tostring(p[1]) .. ", " .. tostring(p[2]))
                    or tostring(p)))
        end
        cfg.is_heldout[p[1] .. "/" .. p[2]] = true
    end
    if cfg.split == "heldout" and #cfg.heldout == 0 then
        fail("split \"heldout\" needs at least one held-out pair")
    end
    if opts.background ~= nil and not BG_KIND[opts.background] then
        fail("background must be plain, gradient, noise, stripes or checker, got " ..
            tostring(opts.background))
    end
    cfg.background = opts.background
    cfg.template = opts.template
    return cfg
end

local function generator_of(opts)
    opts = opts or {}
    if opts.generator ~= nil then
        return opts.generator
    end
    if opts.seed ~= nil then
        if type(opts.seed) ~= "number" then
            fail("seed must be a number, got " .. type(opts.seed))
        end
        return tensor.generator(opts.seed)
    end
    return tensor.default_generator()
end

-- ---- sampling -----------------------------------------------------------------------------------

local function rgb_distance(a, b)
    local dr, dg, db = a[1] - b[1], a[2] - b[2], a[3] - b[3]
    return math.sqrt(dr * dr + dg * dg + db * db)
end

local function far_colour(rng, items)
    for _ = 1, 200 do
        local c = {rng:int(256) - 1, rng:int(256) - 1, rng:int(256) - 1}
        local ok = true
        for _, it in ipairs(items) do
            if rgb_distance(c, it.rgb) < MIN_BG_DISTANCE then
                ok = false
                break
            end
        end
        if ok then
            return c
        end
    end
    -- grey far from everything in practice; kept deterministic
    return {128, 128, 128}
end

local function sample_background(rng, cfg, items)
    local kind = cfg.background
    if not kind then
        local u, acc = rng:uniform(), 0
        kind = BACKGROUNDS[#BACKGROUNDS][1]
        for _, b in ipairs(BACKGROUNDS) do
            acc = acc + b[3]
            if u < acc then
                kind = b[1]
                break
            end
        end
    end
    local S = cfg.size
    local bg = {kind = kind, a = far_colour(rng, items), angle = rng:range(0, 2 * math.pi),
                period = 0, noise = 0, seed = rng:int(2 ^ 31) - 1}
    bg.b = far_colour(rng, items)
    if kind == "stripes" then
        bg.period = rng:range(0.12, 0.3) * S
    elseif kind == "checker" then
        bg.period = rng:range(0.15, 0.35) * S
    elseif kind == "noise" then
        bg.noise = rng:range(10, 40)
    end
    if kind == "plain" or kind == "noise" then
        bg.b = {bg.a[1], bg.a[2], bg.a[3]}
    end
    return bg
end

-- one item at a named position and size
local function place(rng, cfg, shape, colour, size_i, pos_i)
    local S = cfg.size
    local sz, pos = shapes.SIZES[size_i], shapes.POSITIONS[pos_i]
    local r = rng:range(sz[2], sz[3]) * S
    local function coord(k)
        local target = ({0.22, 0.5, 0.78})[k + 2] * S + rng:range(-0.04, 0.04) * S
        return math.max(r + 0.5, math.min(S - r - 0.5, target))
    end
    local cx, cy = coord(pos[2]), coord(pos[3])
    local c = cfg.colours[cfg.colour_index[colour]]
    return {shape = shape, colour = colour, size = sz[1], position = pos[1], cx = cx, cy = cy,
            radius = r, angle = rng:range(-cfg.rotation, cfg.rotation), rgb = c[2],
            phrase = pos[4]}
end

local function allowed(cfg, colour, shape)
    local h = cfg.is_heldout[colour .. "/" .. shape]
    if cfg.split == "heldout" then
        return h
    elseif cfg.split == "all" then
        return true
    end
    return not h
end

local function pick_pair(rng, cfg)
    if cfg.split == "heldout" then
        local p = cfg.heldout[rng:int(#cfg.heldout)]
        return p[1], p[2]
    end
    for _ = 1, 1000 do
        local colour = cfg.colours[rng:int(#cfg.colours)][1]
        local shape = cfg.shapes[rng:int(#cfg.shapes)]
        if allowed(cfg, colour, shape) then
            return colour, shape
        end
    end
    fail("every colour-shape pair is held out")
end

local function fill(template, vars)
    local s = template:gsub("{(%w+)}", function(k)
        return vars[k] or fail("template has an unknown field {" .. k .. "}")
    end)
    -- "a orange" -> "an orange" (the vocabulary has no word where a vowel letter is not a vowel)
    return (s:gsub("%f[%w]([aA]) ([aeioAEIO])", "%1n %2"))
end

--- The caption of a scene from template number t (default: the scene's own choice).
function shapes.caption(scene, t)
    local it = scene.items
    if #it == 1 then
        local list = scene.colourless and shapes.TEMPLATES_SHAPE or shapes.TEMPLATES
        local tpl = list[t or scene.template or 1]
        return fill(tpl, {size = it[1].size, colour = it[1].colour, shape = it[1].shape,
                          position = it[1].phrase})
    end
    local tpl = shapes.TEMPLATES2[t or scene.template or 1]
    return fill(tpl, {colour1 = it[1].colour, shape1 = it[1].shape, position1 = it[1].phrase,
                      colour2 = it[2].colour, shape2 = it[2].shape, position2 = it[2].phrase})
end

local function sample_scene(rng, cfg)
    local scene = {items = {}}
    if cfg.two > 0 and rng:uniform() < cfg.two then
        local pair = PAIRS[rng:int(#PAIRS)]
        if rng:uniform() < 0.5 then
            pair = {pair[2], pair[1]}
        end
        local pos_index = {}
        for i, p in ipairs(shapes.POSITIONS) do
            pos_index[p[1]] = i
        end
        for k = 1, 2 do
            local colour, shape = pick_pair(rng, cfg)
            if k == 2 then
                for _ = 1, 100 do -- two different objects
                    if colour ~= scene.items[1].colour or shape ~= scene.items[1].shape then
                        break
                    end
                    colour, shape = pick_pair(rng, cfg)
                end
            end
            scene.items[k] = place(rng, cfg, shape, colour, rng:int(2), pos_index[pair[k]])
        end
        scene.template = cfg.template or rng:int(#shapes.TEMPLATES2)
    else
        local colour, shape = pick_pair(rng, cfg)
        scene.items[1] = place(rng, cfg, shape, colour, rng:int(#shapes.SIZES),
                               rng:int(#shapes.POSITIONS))
        scene.template = cfg.template or rng:int(#shapes.TEMPLATES)
        -- drawn only when asked for, so that the default stream of scenes is unchanged
        scene.colourless = cfg.shape_captions > 0 and rng:uniform() < cfg.shape_captions or nil
    end
    scene.background = sample_background(rng, cfg, scene.items)
    scene.caption = shapes.caption(scene)
    return scene
end

local SIZE_INDEX, POSITION_INDEX = index_by_name(shapes.SIZES), index_by_name(shapes.POSITIONS)

-- A hard negative of a one-shape scene: the same colour, size, position and caption template
-- with a shape not yet in used (a new background, jitter and rotation); a fresh scene when every
-- allowed shape is used.
local function variant_scene(rng, cfg, first, used)
    local it = first.items[1]
    local choices = {}
    for _, shape in ipairs(cfg.shapes) do
        if not used[shape] and allowed(cfg, it.colour, shape) then
            choices[#choices + 1] = shape
        end
    end
    if #choices == 0 then
        return sample_scene(rng, cfg)
    end
    local shape = choices[rng:int(#choices)]
    used[shape] = true
    local scene = {items = {place(rng, cfg, shape, it.colour, SIZE_INDEX[it.size],
                                  POSITION_INDEX[it.position])},
                   template = first.template, colourless = first.colourless}
    scene.background = sample_background(rng, cfg, scene.items)
    scene.caption = shapes.caption(scene)
    return scene
end

--- shapes.sample(n, opts) -> n scene tables: {items = {{shape, colour, size, position, cx, cy,
-- radius, angle, rgb}}, background = {kind, a, b, angle, period, noise, seed}, caption}.
-- opts: size (64), split ("train" | "val" | "heldout" | "all"), two (fraction of two-shape
-- images: 0.2 for train, 0 otherwise), rotation (0.2 rad), colours, shapes, heldout (default:
-- the pairs of shapes.HELDOUT among the colours and shapes in use), background
-- (force one kind), template (force one template number), shape_captions (fraction of one-shape
-- captions without the colour, 0), group (1: each run of `group` scenes that starts with a
-- one-shape scene continues with scenes that differ from it only in the shape, hard negatives for
-- a contrastive batch), generator or seed.
function shapes.sample(n, opts)
    if type(n) ~= "number" or n < 0 or n ~= math.floor(n) then
        fail("sample: n must be an integer >= 0, got " .. tostring(n))
    end
    local cfg = config(opts)
    local rng = new_rng(generator_of(opts))
    local out, first, used = {}, nil, nil
    for i = 1, n do
        if (i - 1) % cfg.group == 0 or #first.items ~= 1 then
            out[i] = sample_scene(rng, cfg)
            first, used = out[i], {[out[i].items[1].shape] = true}
        else
            out[i] = variant_scene(rng, cfg, first, used)
        end
    end
    return out, cfg
end

-- ---- rendering ----------------------------------------------------------------------------------

local scene_t = ffi.typeof("clipl_draw_scene[?]")

local function set_rgb(dst, rgb, a)
    dst[0], dst[1], dst[2], dst[3] = rgb[1], rgb[2], rgb[3], a or 255
end

--- shapes.render(scenes, size) -> [n, size, size, 3] u8 tensor of the scenes.
function shapes.render(scenes, size)
    size = size or 64
    local n = #scenes
    local cs = scene_t(math.max(n, 1))
    for i, s in ipairs(scenes) do
        local c, bg = cs[i - 1], s.background
        c.background = BG_KIND[bg.kind] or fail("render: scene " .. i .. ": unknown background " ..
            tostring(bg.kind))
        set_rgb(c.bg_a, bg.a)
        set_rgb(c.bg_b, bg.b or bg.a)
        c.bg_angle, c.bg_period, c.bg_noise, c.bg_seed = bg.angle or 0, bg.period or 0,
            bg.noise or 0, bg.seed or 0
        if #s.items > C.CLIPL_DRAW_MAX_ITEMS then
            fail("render: scene " .. i .. " has more than " .. C.CLIPL_DRAW_MAX_ITEMS .. " items")
        end
        c.n_items = #s.items
        for k, it in ipairs(s.items) do
            local d = c.items[k - 1]
            local kind = C.clipl_shape_from_name(tostring(it.shape))
            if kind < 0 then
                fail("render: scene " .. i .. ": unknown shape '" .. tostring(it.shape) .. "'")
            end
            d.kind, d.cx, d.cy, d.radius, d.angle = kind, it.cx, it.cy, it.radius, it.angle or 0
            set_rgb(d.rgb, it.rgb, it.alpha)
        end
    end
    local dst = tensor.empty({n, size, size, 3}, "u8")
    check(C.clipl_draw_scenes(dst, n, cs), 2)
    return dst
end

--- CLIP's ToTensor + Normalize of u8 images [N, H, W, 3] -> [N, 3, H, W] f32 (what
-- clip.preprocess gives for an image of the model's resolution).
function shapes.normalize(pixels)
    return lib.call_out(C.clipl_draw_normalize, pixels, lib.slot)
end

--- shapes.batch(n, opts) -> images, captions, scenes. images is [n, 3, S, S] f32 normalised as
-- CLIP's preprocess (opts.raw = true: [n, S, S, 3] u8). Pass opts.generator (clip.generator(s))
-- to draw a new batch each call; opts.seed alone gives the same batch every time.
function shapes.batch(n, opts)
    local scenes, cfg = shapes.sample(n, opts)
    local px = shapes.render(scenes, cfg.size)
    local captions = {}
    for i, s in ipairs(scenes) do
        captions[i] = s.caption
    end
    if opts and opts.raw then
        return px, captions, scenes
    end
    local x = shapes.normalize(px)
    px:free()
    return x, captions, scenes
end

--- shapes.save(pixels, path, quality): saves a [H, W, C] u8 tensor as .png / .jpg / .webp.
function shapes.save(pixels, path, quality)
    check(C.clipl_draw_save(pixels, path, quality or 0), 2)
    return path
end

--- The pixel box {x0, y0, x1, y1} (x1, y1 exclusive) that an item of a scene covers.
function shapes.bbox(item, size)
    local d = ffi.new("clipl_draw_item")
    d.kind = C.clipl_shape_from_name(tostring(item.shape))
    d.cx, d.cy, d.radius, d.angle = item.cx, item.cy, item.radius, item.angle or 0
    set_rgb(d.rgb, item.rgb or {0, 0, 0})
    local box = ffi.new("int32_t[4]")
    check(C.clipl_draw_item_bbox(d, size or 64, size or 64, box), 2)
    return {box[0], box[1], box[2], box[3]}
end

--- shapes.labels(opts) -> the class vocabulary of a configuration: {colours = {names},
-- shapes = {names}, sizes = {names}, positions = {names}, pairs = {{colour, shape, heldout}}} —
-- e.g. the zero-shot classes "a {colour} {shape}" of an evaluation, with the held-out ones marked.
function shapes.labels(opts)
    local cfg = config(opts)
    local out = {colours = {}, shapes = {}, sizes = {}, positions = {}, pairs = {}}
    for i, c in ipairs(cfg.colours) do
        out.colours[i] = c[1]
    end
    for i, s in ipairs(cfg.shapes) do
        out.shapes[i] = s
    end
    for i, s in ipairs(shapes.SIZES) do
        out.sizes[i] = s[1]
    end
    for i, p in ipairs(shapes.POSITIONS) do
        out.positions[i] = p[1]
    end
    for _, c in ipairs(out.colours) do
        for _, s in ipairs(out.shapes) do
            out.pairs[#out.pairs + 1] = {c, s, cfg.is_heldout[c .. "/" .. s] == true}
        end
    end
    return out
end

--- shapes.grid(scenes_or_pixels, cols, size) -> one [rows * S, cols * S, 3] u8 image of the
-- scenes (or of a [n, S, S, 3] u8 batch) side by side, for looking at samples.
function shapes.grid(x, cols, size)
    local px = x
    if type(x) == "table" then
        px = shapes.render(x, size or 64)
    end
    local n, S = px:size(1), px:size(2)
    cols = cols or math.ceil(math.sqrt(n))
    local rows = math.max(1, math.ceil(n / cols))
    local out = tensor.zeros({rows * S, cols * S, 3}, "u8")
    for i = 1, n do
        local r, c = math.floor((i - 1) / cols), (i - 1) % cols
        out:narrow(1, r * S + 1, S):narrow(2, c * S + 1, S):copy(px:select(1, i))
    end
    return out
end

-- ---- writing a data set -------------------------------------------------------------------------

pcall(ffi.cdef, "int mkdir(const char *path, unsigned int mode);")

local function mkdir_p(path)
    local acc = path:sub(1, 1) == "/" and "/" or ""
    for part in path:gmatch("[^/]+") do
        acc = acc .. part .. "/"
        ffi.C.mkdir(acc, 493) -- 0755; an existing folder is fine
    end
    local f = io.open(path .. "/.clipl_probe", "wb")
    if not f then
        fail("generate: cannot create the folder '" .. path .. "'")
    end
    f:close()
    os.remove(path .. "/.clipl_probe")
end

local function json_string(s)
    return '"' .. s:gsub('[%c"\\]', function(c)
        return string.format("\\u%04x", c:byte())
    end) .. '"'
end

local function attr(items, key)
    local t = {}
    for i, it in ipairs(items) do
        t[i] = it[key]
    end
    return table.concat(t, "+")
end

--- shapes.generate(opts): writes a data set to opts.out:
--   images/<split>/<index>.png, train.tsv, val.tsv, heldout.tsv (path, caption, colour, shape,
--   size, position; two-shape rows join the attributes with "+"), labels.json.
-- opts: out (folder), n (train images, 20000), n_val (n / 10), n_heldout (n / 10), seed (1),
-- size (64), format ("png", "jpg" or "webp"), progress (function(done, total)), and the options of
-- shapes.sample. Returns a summary table (counts, cpu_seconds).
function shapes.generate(opts)
    opts = opts or {}
    if type(opts.out) ~= "string" or opts.out == "" then
        fail("generate: opts.out (the output folder) is required")
    end
    local n = opts.n or 20000
    local counts = {train = n, val = opts.n_val or math.floor(n / 10),
                    heldout = opts.n_heldout or math.floor(n / 10)}
    for k, v in pairs(counts) do
        if type(v) ~= "number" or v < 0 or v ~= math.floor(v) then
            fail("generate: the number of " .. k .. " images must be an integer >= 0")
        end
    end
    local seed = opts.seed or 1
    local format = opts.format or "png"
    if format ~= "png" and format ~= "jpg" and format ~= "webp" then
        fail("generate: format must be png, jpg or webp, got " .. tostring(format))
    end
    local base = config(opts) -- validates the shared options once
    local out = opts.out:gsub("/+$", "")
    local total, done = counts.train + counts.val + counts.heldout, 0
    local t0 = os.clock()
    local splits = {"train", "val", "heldout"}
    for si, split in ipairs(splits) do
        mkdir_p(out .. "/images/" .. split)
        local sopts = {}
        for k, v in pairs(opts) do
            sopts[k] = v
        end
        sopts.split, sopts.seed = split, nil
        if split ~= "train" then -- val and heldout: independent scenes named by colour and shape
            sopts.shape_captions, sopts.group = nil, nil
        end
        -- one independent stream per split, so that changing one split's size leaves the others
        sopts.generator = tensor.generator(seed * 16 + si)
        local tsv_path = out .. "/" .. split .. ".tsv"
        local tsv = io.open(tsv_path, "wb") or fail("generate: cannot write '" .. tsv_path .. "'")
        tsv:write("path\tcaption\tcolour\tshape\tsize\tposition\n")
        local index = 0
        while index < counts[split] do
            local m = math.min(256 - 256 % base.group, counts[split] - index)
            local scenes = shapes.sample(m, sopts)
            local px = shapes.render(scenes, base.size)
            local paths, cpaths = {}, ffi.new("const char *[?]", m)
            for i, s in ipairs(scenes) do
                local rel = string.format("images/%s/%06d.%s", split, index + i - 1, format)
                paths[i] = out .. "/" .. rel -- anchors the strings while C reads them
                cpaths[i - 1] = paths[i]
                tsv:write(rel, "\t", s.caption, "\t", attr(s.items, "colour"), "\t",
                          attr(s.items, "shape"), "\t", attr(s.items, "size"), "\t",
                          attr(s.items, "position"), "\n")
            end
            check(C.clipl_draw_save_batch(px, m, cpaths, opts.quality or 0), 2)
            px:free()
            index = index + m
            done = done + m
            if opts.progress then
                opts.progress(done, total)
            end
        end
        tsv:close()
    end
    -- labels.json: the vocabulary of the attributes, the held-out pairs and the counts
    local function names(list, k)
        local t = {}
        for i, e in ipairs(list) do
            t[i] = json_string(k and e[k] or e)
        end
        return "[" .. table.concat(t, ", ") .. "]"
    end
    local held = {}
    for i, p in ipairs(base.heldout) do
        held[i] = "[" .. json_string(p[1]) .. ", " .. json_string(p[2]) .. "]"
    end
    local f = io.open(out .. "/labels.json", "wb") or fail("generate: cannot write labels.json")
    f:write("{\n",
        '  "generator": "clipl shapes",\n',
        '  "seed": ', string.format("%d", seed), ",\n",
        '  "image_size": ', base.size, ",\n",
        '  "colours": ', names(base.colours, 1), ",\n",
        '  "shapes": ', names(base.shapes), ",\n",
        '  "sizes": ', names(shapes.SIZES, 1), ",\n",
        '  "positions": ', names(shapes.POSITIONS, 1), ",\n",
        '  "heldout": [', table.concat(held, ", "), "],\n",
        '  "templates": ', names(shapes.TEMPLATES), ",\n",
        '  "counts": {"train": ', counts.train, ', "val": ', counts.val, ', "heldout": ',
        counts.heldout, "}\n}\n")
    f:close()
    return {out = out, train = counts.train, val = counts.val, heldout = counts.heldout,
            cpu_seconds = os.clock() - t0}
end

return M
