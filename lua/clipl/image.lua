--- Images and CLIP's preprocessing.
--
--   local img = clip.image.load("cat.jpg")          -- a path, or a string of encoded bytes
--   local x = clip.preprocess(img, 224)              -- 3 x 224 x 224, OpenAI's _transform(224)
--   local batch, bad = clip.preprocess_batch(paths, 224, {skip_bad = true})
--
-- Decoding is libvips'; the resize, crop, RGB conversion and normalisation reproduce Pillow 9.4 +
-- torchvision 0.14 exactly (docs/preprocessing.md).
local ffi = require "ffi"
local lib = require "clipl.lib"

local C, check, call_out, slot = lib.C, lib.check, lib.call_out, lib.slot

local M = {}

local AUTOROTATE, SKIP_BAD = 1, 2
local mode_names = {[0] = "L", "LA", "RGB", "RGBA", "P", "PA", "CMYK", "I", "1"}

--- An image: a Lua object over one `clipl_image *` (freed by the GC or img:free()).
local Image = {}
Image.__index = Image

local function wrap(p)
    if p == nil then
        lib.check_ptr(p, 3)
    end
    local h = ffi.gc(p, C.clipl_image_free)
    return setmetatable({
        handle = h,
        width = C.clipl_image_width(h),
        height = C.clipl_image_height(h),
        bands = C.clipl_image_bands(h),
        mode = mode_names[C.clipl_image_mode(h)] or "?",
    }, Image)
end

local function handle_of(img, what)
    if getmetatable(img) ~= Image then
        error((what or "image") .. ": expected an image from clip.image.load, got " .. type(img), 3)
    end
    if img.handle == nil then
        error((what or "image") .. ": the image was freed", 3)
    end
    return img.handle
end

-- Encoded images start with one of these signatures; a path never does.
local magics = {
    "\137PNG", "\255\216\255", "GIF8", "II*\0", "MM\0*", "BM", "\0\0\0\12jP", "\255\10",
}
local function looks_like_bytes(s)
    if #s > 4096 or s:find("\0", 1, true) then
        return true
    end
    for _, m in ipairs(magics) do
        if s:sub(1, #m) == m then
            return true
        end
    end
    return s:sub(1, 4) == "RIFF" and s:sub(9, 12) == "WEBP" or s:sub(5, 8) == "ftyp"
end

local function load_flags(opts)
    return (opts and opts.autorotate) and AUTOROTATE or 0
end

--- Decodes an image. `src` is a file path or a string holding an encoded image (told apart by
-- the format's signature; force one with opts.bytes = true or opts.path = true).
-- opts.autorotate = true applies the EXIF orientation (OpenAI's code does not).
-- Raises an error naming the file for unreadable, truncated, corrupt or oversized images.
function M.load(src, opts)
    if type(src) ~= "string" then
        error("image.load: expected a path or a string of bytes, got " .. type(src), 2)
    end
    local flags = load_flags(opts)
    local bytes
    if opts and opts.bytes then
        bytes = true
    elseif opts and opts.path then
        bytes = false
    else
        bytes = looks_like_bytes(src)
    end
    local p
    if bytes then
        p = C.clipl_image_load_buffer(src, #src, flags)
    else
        p = C.clipl_image_load(src, flags)
    end
    if p == nil then
        lib.check_ptr(p, 2)
    end
    return wrap(p)
end

--- Decodes a string of encoded bytes.
function M.from_bytes(s, opts)
    if type(s) ~= "string" then
        error("image.from_bytes: expected a string, got " .. type(s), 2)
    end
    local p = C.clipl_image_load_buffer(s, #s, load_flags(opts))
    if p == nil then
        lib.check_ptr(p, 2)
    end
    return wrap(p)
end

--- An image over raw pixels: a [H, W, bands] u8 tensor (bands 1 = L, 2 = LA, 3 = RGB, 4 = RGBA,
-- or `mode` given) or a string of bytes with width, height, mode.
function M.from_pixels(data, width, height, mode)
    local modes = {L = 0, LA = 1, RGB = 2, RGBA = 3, P = 4, PA = 5, CMYK = 6, I = 7, ["1"] = 8}
    if type(data) == "string" then
        local m = modes[mode or "RGB"]
        if not m then
            error("image.from_pixels: unknown mode " .. tostring(mode), 2)
        end
        local p = C.clipl_image_from_pixels(width, height, m, data, #data)
        if p == nil then
            lib.check_ptr(p, 2)
        end
        return wrap(p)
    end
    local t = data:contiguous()
    if t.ndim ~= 3 or t.dt ~= 5 then
        error("image.from_pixels: expected a [H, W, bands] u8 tensor", 2)
    end
    local h, w, b = tonumber(t.shape[0]), tonumber(t.shape[1]), tonumber(t.shape[2])
    local m = modes[width or ({"L", "LA", "RGB", "RGBA"})[b] or "?"]
    if not m then
        error("image.from_pixels: cannot tell the mode of " .. b .. " bands", 2)
    end
    local p = C.clipl_image_from_pixels(w, h, m, t.ptr, h * w * b)
    if p == nil then
        lib.check_ptr(p, 2)
    end
    return wrap(p)
end

--- Images with more pixels than `limit` are refused before decoding (default 178956970, twice
-- Pillow's MAX_IMAGE_PIXELS); nil or <= 0 restores the default.
function M.set_pixel_limit(limit)
    check(C.clipl_image_set_pixel_limit(limit or 0))
end

function M.get_pixel_limit()
    return tonumber(C.clipl_image_get_pixel_limit())
end

M.Image = Image

--- {height, width}, like a tensor's size of an HxW image.
function Image:size()
    return {self.height, self.width}
end

--- Pillow's resize(w, h, BICUBIC) (premultiplied for RGBA/LA, nearest for palette images).
function Image:resize(width, height)
    local h = handle_of(self, "resize")
    local out = ffi.new("clipl_image *[1]")
    check(C.clipl_image_resize(h, width, height, out))
    return wrap(out[0])
end

--- Pillow's convert('RGB').
function Image:to_rgb()
    local h = handle_of(self, "to_rgb")
    local out = ffi.new("clipl_image *[1]")
    check(C.clipl_image_to_rgb(h, out))
    return wrap(out[0])
end

--- The pixels as a [H, W, bands] u8 tensor (i32 for mode "I").
function Image:tensor()
    return call_out(C.clipl_image_to_tensor, handle_of(self, "tensor"), slot)
end

--- Frees the pixels now (safe to call twice).
function Image:free()
    if self.handle ~= nil then
        C.clipl_image_free(ffi.gc(self.handle, nil))
        self.handle = nil
    end
end

function Image:__tostring()
    return string.format("clipl.Image(%dx%d %s)", self.width, self.height, self.mode)
end

--- OpenAI's _transform(n_px) (default 224): a [3, n_px, n_px] f32 tensor. `image` is an Image,
-- a path or string of bytes (decoded with opts), or a [H, W, bands] u8 tensor of pixels.
local function preprocess(image, n_px, opts)
    n_px = n_px or 224
    if type(image) == "string" then
        image = M.load(image, opts)
    elseif type(image) == "cdata" then
        image = M.from_pixels(image)
    end
    return call_out(C.clipl_image_preprocess, handle_of(image, "preprocess"), n_px, slot)
end

--- Decodes (in parallel, one C call) and preprocesses a list of image files: returns an
-- N x 3 x n_px x n_px tensor and a list of the bad items ({index =, path =, message =}).
-- opts.skip_bad = true goes on past bad files (their rows are zero); otherwise the first bad
-- file raises. opts.threads (default: clip.get_num_threads()), opts.autorotate.
local function preprocess_batch(paths, n_px, opts)
    opts = opts or {}
    n_px = n_px or 224
    if type(paths) ~= "table" then
        error("preprocess_batch: expected a list of paths, got " .. type(paths), 2)
    end
    local n = #paths
    for i = 1, n do
        if type(paths[i]) ~= "string" then
            error("preprocess_batch: path " .. i .. " is a " .. type(paths[i]) ..
                ", not a string", 2)
        end
    end
    local arr = ffi.new("const char *[?]", n + 1)
    for i = 1, n do
        arr[i - 1] = paths[i]
    end
    local status = ffi.new("int[?]", n + 1)
    local flags = load_flags(opts) + (opts.skip_bad and SKIP_BAD or 0)
    slot[0] = nil
    local rc = C.clipl_preprocess_batch(n, arr, n_px, flags, opts.threads or 0, slot, status)
    check(rc, 2)
    local t = lib.adopt(slot[0])
    local bad = {}
    for i = 1, n do
        if status[i - 1] ~= 0 then
            bad[#bad + 1] = {index = i, path = paths[i],
                message = ffi.string(C.clipl_preprocess_batch_message(i - 1))}
        end
    end
    return t, bad
end

return {
    image = M,
    preprocess = preprocess,
    preprocess_batch = preprocess_batch,
}
