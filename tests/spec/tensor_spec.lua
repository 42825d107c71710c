-- The tensor API from Lua: construction, 1-based views, element access, printing, dtypes, random
-- numbers and memory. Expected values come from the definitions (index arithmetic), not from
-- clipl's own output.
local clip = require "clipl"

local function arange_table(n)
    local t = {}
    for i = 1, n do t[i] = i - 1 end
    return t
end

describe("tensor construction", function()
    it("builds from nested tables and reports its geometry", function()
        local t = clip.tensor{{1, 2, 3}, {4, 5, 6}}
        assert.are.same({2, 3}, t:size())
        assert.are.equal(3, t:size(2))
        assert.are.equal(3, t:size(-1))
        assert.are.equal(2, t:dim())
        assert.are.equal(6, t:numel())
        assert.are.equal("f32", t:dtype())
        assert.are.equal("clipl.FloatTensor", t:type())
        assert.are.same({3, 1}, t:stride())
        assert.are.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
    end)

    it("makes zeros, ones, full, empty and arange in every dtype", function()
        for _, dt in ipairs{"f32", "bf16", "f16", "i32", "i64", "u8"} do
            local z = clip.zeros({2, 3}, dt)
            assert.are.equal(dt, z:dtype())
            assert.are.same({{0, 0, 0}, {0, 0, 0}}, z:totable())
            assert.are.same({{1, 1}, {1, 1}}, clip.ones({2, 2}, dt):totable())
            assert.are.same({7, 7}, clip.full({2}, 7, dt):totable())
            assert.are.same({2, 2}, clip.empty({2, 2}, dt):size())
        end
        assert.are.same({0, 1, 2, 3, 4}, clip.arange(5):totable())
        assert.are.same({1, 3}, clip.arange(1, 5, 2):totable())
        assert.are.equal("i64", clip.arange(3, "i64"):dtype())
    end)

    it("refuses bad input with clear errors", function()
        assert.has_error(function() clip.tensor{{1, 2}, {3}} end,
            "tensor: the table is not rectangular (dim 2 should have 2 entries)")
        assert.has_error(function() clip.zeros({2}, "complex") end,
            "unknown dtype 'complex' (use f32, bf16, f16, i32, i64 or u8)")
        assert.has_error(function() clip.zeros({2, -3}) end)
        assert.has_error(function() clip.zeros({1, 1, 1, 1, 1, 1, 1, 1, 1}) end)
        local ok, err = pcall(clip.zeros, {-1})
        assert.is_false(ok)
        assert.truthy(err:find("negative size", 1, true))
    end)
end)

describe("views with 1-based dims", function()
    local t
    before_each(function()
        t = clip.tensor(arange_table(24)):view(2, 3, 4)
    end)

    it("indexes like Torch7: t[i] is a view, 1-d gives numbers", function()
        assert.are.same({3, 4}, t[2]:size())
        assert.are.equal(12 + 4 + 2, t[2][2][3])
        assert.are.equal(23, t[-1][-1][-1])
        assert.are.equal(2, #t)
        assert.has_error(function() return t[3] end, "index 3 out of range for dim 1 of size 2")
        assert.has_error(function() return t[0] end)
        t[1][1][1] = 100
        assert.are.equal(100, t:get(1, 1, 1))
        t[2] = 5
        assert.are.equal(5 * 12, t[2]:sum():item())
    end)

    it("narrow, select, transpose, permute, view, reshape, expand, (un)squeeze", function()
        local n = t:narrow(3, 2, 2)
        assert.are.same({2, 3, 2}, n:size())
        assert.are.equal(1, n:get(1, 1, 1))
        assert.is_false(n:is_contiguous())
        local s = t:select(2, 3)
        assert.are.same({{8, 9, 10, 11}, {20, 21, 22, 23}}, s:totable())
        local tr = t:transpose(1, 3)
        assert.are.same({4, 3, 2}, tr:size())
        assert.are.equal(t:get(2, 3, 4), tr:get(4, 3, 2))
        local p = t:permute(3, 1, 2)
        assert.are.same({4, 2, 3}, p:size())
        assert.are.equal(t:get(2, 1, 3), p:get(3, 2, 1))
        assert.are.same({6, 4}, t:view(6, -1):size())
        assert.are.same({24}, tr:reshape(-1):size())
        assert.are.equal(t:get(1, 2, 3), tr:reshape(-1)[(3 - 1) * 6 + (2 - 1) * 2 + 1])
        local e = t[1]:narrow(1, 1, 1):expand(5, 3, 4)
        assert.are.same({5, 3, 4}, e:size())
        assert.are.equal(3, e:get(5, 3, 4))
        assert.are.same({2, 1, 3, 4}, t:unsqueeze(2):size())
        assert.are.same({2, 3, 4, 1}, t:unsqueeze(-1):size())
        assert.are.same({2, 3, 4}, t:unsqueeze(1):squeeze(1):size())
        assert.are.same({3}, clip.zeros({1, 3, 1}):squeeze():size())
        assert.are.same({3, 2}, clip.zeros({2, 3}):t():size())
    end)

    it("views share memory with their source", function()
        local v = t:select(1, 2):narrow(2, 2, 2)
        v:fill(-1)
        assert.are.equal(-1, t:get(2, 1, 2))
        assert.are.equal(-1, t:get(2, 3, 3))
        assert.are.equal(15, t:get(2, 1, 4))
    end)

    it("gives errors that name the op and shapes", function()
        assert.has_error(function() t:transpose(2, 3):view(24) end,
            "view: a 2x4x3 tensor with strides that do not allow a view cannot be viewed as 24;" ..
            " use reshape (copies) or contiguous() first")
        assert.has_error(function() t:narrow(0, 1, 1) end,
            "narrow: dims are 1-based (or negative from the end), got 0")
        assert.has_error(function() t:view(5, 5) end)
        assert.has_error(function() t:t() end, "t: expects a 2-d tensor, got 3-d")
        assert.has_error(function() t:expand(3, 3, 4) end, "expand: cannot expand 2x3x4 to 3x3x4")
    end)
end)

describe("copies and dtypes", function()
    it("contiguous/clone copy; to() converts with round-to-nearest-even", function()
        local t = clip.tensor{{1, 2}, {3, 4}}
        local c = t:t():contiguous()
        assert.is_true(c:is_contiguous())
        assert.are.same({{1, 3}, {2, 4}}, c:totable())
        local k = t:clone()
        k:fill(0)
        assert.are.equal(1, t:get(1, 1))
        -- 1 + 2^-8 is a tie between two bf16 values: even wins (1); 1 + 3 * 2^-8 rounds up
        local b = clip.tensor{1 + 2 ^ -8, 1 + 3 * 2 ^ -8}:to("bf16")
        assert.are.same({1, 1 + 2 ^ -6}, b:float():totable())
        local h = clip.tensor{1 + 2 ^ -11, 65519, 65520}:half():float()
        assert.are.same({1, 65504, math.huge}, h:totable())
        assert.are.same({-3, 2}, clip.tensor{-3.7, 2.9}:int():totable())
        assert.are.same({0, 255}, clip.tensor{-5, 300}:byte():totable())
    end)

    it("copy() broadcasts and converts between any strides and dtypes", function()
        local dst = clip.zeros({3, 2}, "i32")
        dst:t():copy(clip.tensor{{5}, {6}})
        assert.are.same({{5, 6}, {5, 6}, {5, 6}}, dst:totable())
        assert.has_error(function() dst:copy(clip.zeros({4})) end,
            "copy: source 4 does not broadcast to destination 3x2")
    end)

    it("item, get/set, data()", function()
        local t = clip.tensor{{1.5}}
        assert.are.equal(1.5, t:item())
        assert.has_error(function() clip.zeros({2}):item() end,
            "item: the tensor has 2 elements, expected 1")
        local x = clip.zeros({2, 3})
        x:set(9, 2, -1)
        assert.are.equal(9, x:get(2, 3))
        local p = x:data()
        assert.are.equal("cdata", type(p))
        assert.are.equal(9, p[5])
        assert.has_error(function() x:get(3, 1) end)
    end)
end)

describe("printing", function()
    it("prints like Torch7 with a type trailer", function()
        local s = tostring(clip.tensor{{1, 2, 3}, {4, 5, 6}})
        assert.are.equal(" 1  2  3\n 4  5  6\n[clipl.FloatTensor of size 2x3]", s)
        local f = tostring(clip.tensor{0.5, -1.25})
        assert.are.equal(" 0.5000\n-1.2500\n[clipl.FloatTensor of size 2]", f)
        assert.truthy(tostring(clip.zeros({2, 2, 2}, "i64")):find("(2,.,.) = ", 1, true))
        assert.truthy(tostring(clip.zeros({2, 2, 2}, "i64")):find("LongTensor of size 2x2x2", 1, true))
    end)

    it("elides the middle of big tensors", function()
        local s = tostring(clip.zeros({100, 100}))
        assert.truthy(s:find("...", 1, true))
        local lines = 0
        for _ in s:gmatch("\n") do lines = lines + 1 end
        assert.is_true(lines < 12)
    end)
end)

describe("random numbers", function()
    it("are reproducible from a seed", function()
        local a = clip.randn({50}, {seed = 7})
        local b = clip.randn({50}, {seed = 7})
        local c = clip.randn({50}, {seed = 8})
        assert.are.same(a:totable(), b:totable())
        assert.are_not.same(a:totable(), c:totable())
        local g = clip.generator(3)
        local u = clip.rand({1000}, {generator = g, low = -1, high = 1}):totable()
        local lo, hi = 1, -1
        for _, v in ipairs(u) do
            lo, hi = math.min(lo, v), math.max(hi, v)
        end
        assert.is_true(lo >= -1 and hi < 1 and hi - lo > 1.9)
    end)
end)

describe("memory", function()
    it("the GC is told about tensor memory: a loop stays bounded", function()
        collectgarbage()
        clip.set_gc_soft_limit(64 * 1024 * 1024)
        local one = 16 * 1024 * 1024  -- bytes of one 4M-float tensor
        local base = clip.live_bytes()
        local peak = 0
        for _ = 1, 100 do           -- 100x the memory of one tensor in total
            local t = clip.empty({4 * 1024 * 1024})
            t:fill(1)
            peak = math.max(peak, clip.live_bytes() - base)
        end
        -- the soft limit (64 MiB) plus the tensor being made; far below the 1.6 GB allocated
        assert.is_true(peak <= 64 * 1024 * 1024 + 2 * one, "peak " .. peak)
        clip.set_gc_soft_limit(256 * 1024 * 1024)
    end)

    it("free() releases memory now, twice is harmless, later use is an error", function()
        local base = clip.live_bytes()
        local t = clip.empty({1024, 1024})
        assert.are.equal(base + 4 * 1024 * 1024, clip.live_bytes())
        assert.is_true(t:free())
        assert.are.equal(base, clip.live_bytes())
        t:free()
        assert.are.same({0}, t:size())
        assert.has_error(function() return t[1] end)
        -- a view keeps the storage alive when the parent is freed
        local p = clip.ones({4, 4})
        local v = p[2]
        p:free()
        assert.are.same({1, 1, 1, 1}, v:totable())
    end)

    it("set_num_threads drives oneDNN and libvips", function()
        local n = clip.get_num_threads()
        clip.set_num_threads(1)
        assert.are.equal(1, clip.get_num_threads())
        clip.set_num_threads(n)
    end)
end)
