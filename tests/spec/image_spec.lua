-- clip.image.load, clip.preprocess, clip.preprocess_batch against OpenAI's golden arrays
-- (../../shared/clip/preprocess, made by Pillow 9.4 + torchvision 0.14).
local clip = require "clipl"
local ffi = require "ffi"

local GOLDEN = "../../shared/clip/"
local STD = {0.26862954, 0.26130258, 0.27577711}

local read_file = require("helpers_env").read

-- float32 values of a little-endian v1.0 .npy file, as a cdata array, and the count
local function read_npy(path)
    local s = read_file(path)
    assert(s:sub(1, 6) == "\147NUMPY", path .. " is not an .npy file")
    local hl = s:byte(9) + 256 * s:byte(10)
    assert(s:sub(11, 10 + hl):find("'<f4'", 1, true), path .. " is not float32")
    local data = s:sub(11 + hl)
    local n = #data / 4
    local arr = ffi.new("float[?]", n)
    ffi.copy(arr, data, #data)
    return arr, n
end

-- worst difference in 8-bit levels (|diff| * std * 255) and count of bit-identical values
local function compare(t, ref, n_px)
    local a = ffi.cast("float *", t.ptr)
    local np = n_px * n_px
    local worst, same = 0, 0
    for c = 0, 2 do
        for i = 0, np - 1 do
            local k = c * np + i
            local d = math.abs(a[k] - ref[k])
            if d == 0 then
                same = same + 1
            end
            local lv = d * STD[c + 1] * 255
            if lv > worst then
                worst = lv
            end
        end
    end
    return worst, same
end

describe("clip.preprocess", function()
    local cases = {
        {"CLIP.png", 224, "preprocess/CLIP_224.npy", "RGBA"},
        {"images/grace_hopper.jpg", 224, "preprocess/grace_hopper_224.npy", "RGB"},
        {"images/coins.png", 224, "preprocess/coins_224.npy", "L"},
        {"images/chelsea.png", 336, "preprocess/chelsea_336.npy", "RGB"},
    }
    for _, case in ipairs(cases) do
        it("matches OpenAI's _transform(" .. case[2] .. ") on " .. case[1], function()
            local img = clip.image.load(GOLDEN .. case[1])
            assert.are.equal(case[4], img.mode)
            local t = clip.preprocess(img, case[2])
            assert.are.same({3, case[2], case[2]}, t:size())
            local ref, n = read_npy(GOLDEN .. case[3])
            assert.are.equal(t:numel(), n)
            local worst, same = compare(t, ref, case[2])
            -- goal: within 1 level everywhere and >= 99% bit-identical (measured: 0 and 100%)
            assert.is_true(worst <= 1 + 1e-4, "worst " .. worst .. " levels")
            assert.is_true(same >= 0.99 * n, "bit-identical " .. same .. " of " .. n)
        end)
    end

    it("decodes a string of bytes like the file", function()
        local path = GOLDEN .. "images/grace_hopper.jpg"
        local a = clip.preprocess(clip.image.load(path), 224)
        local b = clip.preprocess(clip.image.load(read_file(path)), 224)
        assert.tensor_close(a, b, 0)
        local c = clip.preprocess(path, 224) -- a path directly
        assert.tensor_close(a, c, 0)
    end)

    it("takes raw pixels from a tensor or a string", function()
        local img = clip.image.load(GOLDEN .. "images/chelsea.png")
        local px = img:tensor()
        local again = clip.image.from_pixels(px)
        assert.are.equal("RGB", again.mode)
        assert.tensor_close(clip.preprocess(again, 224), clip.preprocess(img, 224), 0)
        assert.tensor_close(clip.preprocess(px, 224), clip.preprocess(img, 224), 0)
        local grey = clip.image.from_pixels(string.rep("\200", 6), 3, 2, "L")
        assert.are.same({2, 3}, grey:size())
        assert.has_error(function() clip.image.from_pixels("abc", 3, 2, "L") end)
    end)

    it("gives the image's size, mode and pixels", function()
        local img = clip.image.load(GOLDEN .. "images/chelsea.png")
        assert.are.same({300, 451}, img:size())
        assert.are.equal(3, img.bands)
        local px = img:tensor()
        assert.are.same({300, 451, 3}, px:size())
        assert.are.equal("u8", px:dtype())
        local small = img:resize(45, 30)
        assert.are.equal(45, small.width)
        assert.are.equal(30, small.height)
        assert.is_truthy(tostring(img):find("451x300 RGB", 1, true))
        img:free()
        img:free()
        assert.has_error(function() img:tensor() end, "tensor: the image was freed")
    end)
end)

describe("bad images", function()
    local tmp = os.tmpname()
    after_each(function() os.remove(tmp) end)

    local function write(s)
        local f = assert(io.open(tmp, "wb"))
        f:write(s)
        f:close()
    end

    it("name the file", function()
        local ok, err = pcall(clip.image.load, "/nonexistent/cat.jpg")
        assert.is_false(ok)
        assert.is_truthy(err:find("/nonexistent/cat.jpg", 1, true))

        write("")
        ok, err = pcall(clip.image.load, tmp)
        assert.is_false(ok)
        assert.is_truthy(err:find(tmp, 1, true))

        write("plain text, not an image")
        ok, err = pcall(clip.image.load, tmp)
        assert.is_false(ok)
        assert.is_truthy(err:find(tmp, 1, true))

        local jpg = read_file(GOLDEN .. "images/grace_hopper.jpg")
        write(jpg:sub(1, math.floor(#jpg / 2)))
        ok, err = pcall(clip.image.load, tmp)
        assert.is_false(ok)
        assert.is_truthy(err:find(tmp, 1, true))

        ok, err = pcall(clip.image.load, jpg:sub(1, math.floor(#jpg / 2)))
        assert.is_false(ok)
        assert.is_truthy(err:find("buffer", 1, true))
    end)

    it("refuse images over the pixel limit, which can be raised", function()
        local path = GOLDEN .. "images/coins.png"
        clip.image.set_pixel_limit(1000)
        local ok, err = pcall(clip.image.load, path)
        clip.image.set_pixel_limit()
        assert.is_false(ok)
        assert.is_truthy(err:find("limit", 1, true))
        assert.is_truthy(err:find(path, 1, true))
        assert.are.equal(178956970, clip.image.get_pixel_limit())
        assert.are.equal(384, clip.image.load(path).width)
    end)

    it("are reported by a batch that goes on with skip_bad", function()
        write("not an image")
        local paths = {GOLDEN .. "images/chelsea.png", tmp, GOLDEN .. "images/coins.png"}
        local ok, err = pcall(clip.preprocess_batch, paths, 224)
        assert.is_false(ok)
        assert.is_truthy(err:find("item 2 of 3", 1, true))
        assert.is_truthy(err:find(tmp, 1, true))

        local t, bad = clip.preprocess_batch(paths, 224, {skip_bad = true, threads = 2})
        assert.are.same({3, 3, 224, 224}, t:size())
        assert.are.equal(1, #bad)
        assert.are.equal(2, bad[1].index)
        assert.are.equal(tmp, bad[1].path)
        assert.is_truthy(bad[1].message:find(tmp, 1, true))
        assert.tensor_close(t:select(1, 1), clip.preprocess(clip.image.load(paths[1]), 224), 0)
        assert.tensor_close(t:select(1, 3), clip.preprocess(clip.image.load(paths[3]), 224), 0)
        assert.tensor_close(t:select(1, 2), clip.zeros({3, 224, 224}), 0)
    end)
end)
