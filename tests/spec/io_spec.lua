-- clipl.io: npy, safetensors and PyTorch files from Lua. References: the parity files of
-- ../shared/clip (written by numpy / torch), the README's counts and token ids. All comparisons
-- are exact (tolerance 0): loading copies bytes, it does no arithmetic.
local clip = require "clipl"

local P = "../../shared/clip/parity"

local tmpdir
local function tmp(name)
    return tmpdir .. "/" .. name
end

local H = require "helpers_env"
local read_file, write_file = H.read, H.write

local function count(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

local function same(a, b)
    if a:dtype() ~= b:dtype() then
        return false
    end
    local sa, sb = a:size(), b:size()
    if #sa ~= #sb then
        return false
    end
    for i = 1, #sa do
        if sa[i] ~= sb[i] then
            return false
        end
    end
    local ffi = require "ffi"
    local n = a:numel()
    local ba, bb = ffi.new("double[?]", n + 1), ffi.new("double[?]", n + 1)
    clip.lib.C.clipl_tensor_to_doubles(a, ba, n)
    clip.lib.C.clipl_tensor_to_doubles(b, bb, n)
    return ffi.C.memcmp(ba, bb, n * 8) == 0
end

require("ffi").cdef [[int memcmp(const void *a, const void *b, size_t n);]]

describe("clipl.io", function()
    setup(function()
        local p = io.popen("mktemp -d /tmp/clipl_io_spec.XXXXXX")
        tmpdir = p:read("*l")
        p:close()
    end)
    teardown(function()
        os.execute("rm -rf '" .. tmpdir .. "'")
    end)

    it("loads npy inputs with their dtypes and shapes", function()
        local img = clip.load_npy(P .. "/inputs/images_64.npy")
        assert.are.same({4, 3, 64, 64}, img:size())
        assert.are.equal("f32", img:dtype())
        local raw = clip.load_npy(P .. "/inputs/raw_image_0.npy")
        assert.are.same({96, 128, 3}, raw:size())
        assert.are.equal("u8", raw:dtype())
        local tok = clip.load_npy(P .. "/inputs/tokens.npy")
        assert.are.equal("i32", tok:dtype())
        -- README: row 1 starts with 49406 and "a photo of a cat" ends (49407) at position 6
        assert.are.equal(49406, tok[1][1])
        assert.are.equal(49407, tok[1][7])
    end)

    it("round-trips npy, byte-identical to numpy's file", function()
        local src = P .. "/inputs/tokens_v1024.npy"
        local t = clip.load_npy(src)
        clip.save_npy(tmp("t.npy"), t)
        assert.are.equal(read_file(src), read_file(tmp("t.npy")))
        assert.is_true(same(t, clip.load_npy(tmp("t.npy"))))
        local v = clip.tensor({{1.5, -2}, {3, 4.25}})
        clip.save_npy(tmp("v.npy"), v:t())
        assert.is_true(same(v:t(), clip.load_npy(tmp("v.npy"))))
    end)

    it("refuses bf16 npy and bad files with the file's name", function()
        assert.has_error(function()
            clip.save_npy(tmp("b.npy"), clip.zeros({2}, "bf16"))
        end)
        local ok, err = pcall(clip.save_npy, tmp("b.npy"), clip.zeros({2}, "bf16"))
        assert.is_false(ok)
        assert.truthy(err:find("bf16", 1, true))
        write_file(tmp("bad.npy"), "\147NUMPY\1\0\20\0{'descr': '<f4'}   \n")
        ok, err = pcall(clip.load_npy, tmp("bad.npy"))
        assert.is_false(ok)
        assert.truthy(err:find(tmp("bad.npy"), 1, true))
        ok, err = pcall(clip.load_npy, tmp("nope.npy"))
        assert.is_false(ok)
        assert.truthy(err:find("nope.npy", 1, true))
        assert.has_error(function() clip.load_npy(42) end, "load_npy: path must be a non-empty string, got number")
    end)

    it("loads safetensors with metadata, read-only zero-copy", function()
        local w, meta, info = clip.load_safetensors(P .. "/tiny_vit/tiny_vit.safetensors")
        assert.are.equal(62, count(w))
        assert.are.equal(62, #info.names)
        assert.are.equal("safetensors", info.format)
        assert.are.equal("tiny_vit", meta.arch)
        assert.are.equal("openai", meta.key_naming)
        local ipw = w["visual.transformer.resblocks.0.attn.in_proj_weight"]
        assert.are.same({384, 128}, ipw:size())
        assert.are.equal(1, ipw.flags % 2) -- CLIPL_TF_READONLY
        assert.are.same({}, w.logit_scale:size())
    end)

    it("gives bit-identical tensors from .pt, _jit.pt and safetensors", function()
        for _, m in ipairs({{"tiny_vit", 62}, {"tiny_rn", 153}}) do
            local name, n = m[1], m[2]
            local ref = clip.load_weights(P .. "/" .. name .. "/" .. name .. ".safetensors")
            for _, suffix in ipairs({".pt", "_jit.pt"}) do
                local w, meta, info = clip.load_weights(P .. "/" .. name .. "/" .. name .. suffix)
                assert.are.equal(n, count(w))
                assert.are.equal(suffix == ".pt" and "pt" or "torchscript", info.format)
                for k, t in pairs(ref) do
                    assert.is_true(w[k] ~= nil and same(w[k], t), name .. suffix .. ": " .. k)
                end
                if suffix == "_jit.pt" then
                    assert.are.equal("64", meta.input_resolution)
                    assert.are.equal("77", meta.context_length)
                    assert.are.equal("1024", meta.vocab_size)
                end
            end
        end
    end)

    it("upcasts the fp16 file to the f32 file exactly", function()
        local h = clip.load_weights(P .. "/tiny_vit/tiny_vit_fp16.safetensors")
        local f = clip.load_weights(P .. "/tiny_vit/tiny_vit.safetensors")
        assert.are.equal("f16", h["visual.proj"]:dtype())
        for k, t in pairs(h) do
            assert.is_true(same(t:to("f32"), f[k]), k)
        end
    end)

    it("keeps the mapping alive after the table is dropped", function()
        local w = clip.load_weights(P .. "/tiny_vit/tiny_vit.pt")
        local pe = w.positional_embedding
        local first = pe[1][1]
        w = nil -- luacheck: ignore
        collectgarbage("collect")
        collectgarbage("collect")
        assert.are.equal(first, pe[1][1])
        assert.are.same({77, 64}, pe:size())
    end)

    it("saves safetensors with metadata and reloads them", function()
        local w = {
            a = clip.tensor({{1, 2, 3}, {4, 5, 6}}),
            ["b.c"] = clip.tensor({7, 8}, "i64"),
            h = clip.tensor({0.5, -1}, "f16"),
        }
        clip.save_safetensors(tmp("s.safetensors"), w, {arch = "test", n = 3})
        local r, meta, info = clip.load_safetensors(tmp("s.safetensors"))
        assert.are.equal("test", meta.arch)
        assert.are.equal("3", meta.n)
        -- layout: element size desc, then name
        assert.are.same({"b.c", "a", "h"}, info.names)
        for k, t in pairs(w) do
            assert.is_true(same(t, r[k]), k)
        end
        local ok, err = pcall(clip.save_safetensors, tmp("x.safetensors"), {a = 1})
        assert.is_false(ok)
        assert.truthy(err:find("'a' is not a tensor", 1, true))
    end)

    it("converts a .pt to safetensors", function()
        local w = clip.load_weights(P .. "/tiny_rn/tiny_rn_jit.pt")
        clip.save_safetensors(tmp("rn.safetensors"), w)
        local r = clip.load_weights(tmp("rn.safetensors"))
        assert.are.equal(153, count(r))
        local ref = clip.load_weights(P .. "/tiny_rn/tiny_rn.safetensors")
        for k, t in pairs(ref) do
            assert.is_true(same(r[k], t), k)
        end
    end)

    it("loads an npy through load_weights under its stem", function()
        local w, _, info = clip.load_weights(P .. "/inputs/tokens.npy")
        assert.are.equal("npy", info.format)
        assert.are.same({6, 77}, w.tokens:size())
    end)

    it("raises clear errors for corrupt files", function()
        local raw = read_file(P .. "/tiny_vit/tiny_vit.safetensors")
        write_file(tmp("cut.safetensors"), raw:sub(1, 5000))
        local ok, err = pcall(clip.load_weights, tmp("cut.safetensors"))
        assert.is_false(ok)
        assert.truthy(err:find(tmp("cut.safetensors"), 1, true))
        local pt = read_file(P .. "/tiny_vit/tiny_vit.pt")
        write_file(tmp("cut.pt"), pt:sub(1, #pt - 10))
        ok, err = pcall(clip.load_weights, tmp("cut.pt"))
        assert.is_false(ok)
        assert.truthy(err:find(tmp("cut.pt"), 1, true))
        write_file(tmp("junk.bin"), "definitely not a weights file")
        ok, err = pcall(clip.load_weights, tmp("junk.bin"))
        assert.is_false(ok)
        assert.truthy(err:find("unknown weights format", 1, true))
    end)
end)
