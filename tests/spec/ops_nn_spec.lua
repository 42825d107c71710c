-- The Lua surface of the oneDNN ops: each binding on small cases whose expected values are worked
-- out here in plain Lua (double precision) from t:totable(). Tolerance 1e-5 relative for f32
-- (f32 rounding of short sums and oneDNN's few-ulp transcendental kernels, see
-- tests/c/test_ops_dnnl.c), 1e-2 for bf16 (8-bit mantissa on the rounded inputs).
local ffi = require "ffi"
local clip = require "clipl"

local F32 = 1e-5

local function T(x, dt)
    return clip.tensor(x, dt)
end

-- plain Lua references ------------------------------------------------------------------------

local function mm(a, b)
    local out = {}
    for i = 1, #a do
        out[i] = {}
        for j = 1, #b[1] do
            local s = 0
            for k = 1, #b do
                s = s + a[i][k] * b[k][j]
            end
            out[i][j] = s
        end
    end
    return out
end

local function map2(m, f)
    local out = {}
    for i = 1, #m do
        out[i] = {}
        for j = 1, #m[i] do
            out[i][j] = f(m[i][j], i, j)
        end
    end
    return out
end

local function transpose(m)
    local out = {}
    for j = 1, #m[1] do
        out[j] = {}
        for i = 1, #m do
            out[j][i] = m[i][j]
        end
    end
    return out
end

local function softmax_rows(m)
    return map2(m, function(_, i, j)
        local mx = -math.huge
        for _, v in ipairs(m[i]) do mx = math.max(mx, v) end
        local s = 0
        for _, v in ipairs(m[i]) do s = s + math.exp(v - mx) end
        return math.exp(m[i][j] - mx) / s
    end)
end

local function sigmoid(x) return 1 / (1 + math.exp(-x)) end

local function rand(sizes, seed, dt)
    local t = clip.rand(sizes, {seed = seed, low = -1, high = 1})
    return dt and t:to(dt) or t
end

describe("matmul and linear", function()
    local a = T({{1, 2, 3}, {4, 5, 6}})
    local w = T({{1, 0, -1}, {2, 1, 0}, {0.5, 0.5, 0.5}, {-1, 1, 2}})

    it("t:matmul(w) and transposed views", function()
        assert.tensor_close(a:matmul(w:t()), mm(a:totable(), transpose(w:totable())), 0)
        assert.tensor_close(clip.matmul(w, a:t()), mm(w:totable(), transpose(a:totable())), 0)
    end)

    it("vectors as in torch.matmul", function()
        local v = T({1, -1, 2})
        assert.tensor_close(a:matmul(v), {1 - 2 + 6, 4 - 5 + 12}, 0)
        assert.tensor_close(T({1, 2}):matmul(a), {9, 12, 15}, 0)
        local d = v:matmul(v)
        assert.are.equal(0, d:dim())
        assert.are.equal(6, d:item())
    end)

    it("broadcasts leading dims", function()
        local x = rand({2, 1, 3, 5}, 1)
        local y = rand({4, 5, 2}, 2)
        local r = x:matmul(y)
        assert.are.same({2, 4, 3, 2}, r:size())
        local xt, yt = x:totable(), y:totable()
        for i = 1, 2 do
            for j = 1, 4 do
                assert.tensor_close(r[i][j], mm(xt[i][1], yt[j]), F32)
            end
        end
    end)

    it("fused bias, activations and residual accumulate", function()
        local b = T({1, -2, 0, 0.5})
        local lin = mm(a:totable(), transpose(w:totable()))
        local with_bias = map2(lin, function(v, _, j) return v + b:totable()[j] end)
        assert.tensor_close(clip.linear(a, w, b), with_bias, F32)
        assert.tensor_close(clip.linear(a, w, b, "relu"),
            map2(with_bias, function(v) return math.max(v, 0) end), F32)
        assert.tensor_close(clip.linear(a, w, b, {act = "quick_gelu"}),
            map2(with_bias, function(v) return v * sigmoid(1.702 * v) end), F32)
        local acc = clip.ones({2, 4})
        local r = a:matmul(w:t(), {bias = b, accum = acc})
        assert.tensor_close(acc, map2(with_bias, function(v) return v + 1 end), F32)
        assert.tensor_close(r, acc, 0)
        assert.tensor_close(a:matmul(w:t(), {scale = 0.5}), map2(lin, function(v) return v / 2 end), 0)
    end)

    it("prepared weights give the same numbers, f32 and bf16", function()
        local W = rand({7, 5}, 3)
        local B = rand({7}, 4)
        local x = rand({2, 3, 5}, 5)
        local expect = clip.linear(x, W, B, "gelu")
        local lin = clip.linear_prepare(W, B, {m_hint = 6})
        assert.are.equal(7, lin.out_features)
        assert.are.equal(5, lin.in_features)
        assert.are.equal("f32", lin.dtype)
        assert.tensor_close(lin(x, {act = "gelu"}), expect, F32)
        assert.tensor_close(clip.linear(x, lin, nil, "gelu"), expect, F32)
        local lb = clip.linear_prepare(W, B, {dtype = "bf16"})
        assert.are.equal("bf16", lb.dtype)
        local xb = x:to("bf16")
        local yb = lb(xb)
        assert.are.equal("bf16", yb:dtype())
        -- reference on the bf16-rounded inputs
        local ref = clip.linear(xb:float(), W:to("bf16"):float(), B)
        assert.tensor_close(yb, ref, 1e-2)
        lb:free()
        lb:free()
        assert.has_error(function() lb(xb) end, "linear: the prepared weights were freed")
    end)

    it("raises errors naming op and shapes", function()
        assert.has_error(function() a:matmul(a) end, "matmul: size mismatch, [2x3] @ [2x3]")
        assert.has_error(function() clip.linear(a, a:t()) end,
            "linear: size mismatch, x [2x3] with weight [3x2] (expected [..., in] and [out, in])")
        assert.has_error(function() clip.linear(a, w, nil, "nope") end)
        local ok, err = pcall(function() clip.linear_prepare(w)(T({1, 2})) end)
        assert.is_false(ok)
        assert.matches("linear: size mismatch, x %[2%]", err)
    end)

    it("option structs have the same layout in LuaJIT as in C", function()
        -- the full comparison with the C compiler is in abi_spec.lua; this pins the fields used
        assert.are.equal(ffi.sizeof("clipl_matmul_opts"), ffi.offsetof("clipl_matmul_opts", "accum") + 8)
        assert.are.equal(0, ffi.offsetof("clipl_conv2d_opts", "stride"))
    end)
end)

describe("softmax and activations", function()
    local x = T({{1, 2, 3}, {-1, 0, 4}})

    it("softmax and log_softmax along 1-based dims", function()
        local e = softmax_rows(x:totable())
        assert.tensor_close(x:softmax(-1), e, F32)
        assert.tensor_close(x:softmax(2), e, F32)
        assert.tensor_close(x:softmax(1), transpose(softmax_rows(transpose(x:totable()))), F32)
        assert.tensor_close(clip.softmax(x:t(), 1), transpose(e), F32)
        assert.tensor_close(x:log_softmax(-1), map2(e, math.log), F32)
        assert.has_error(function() x:softmax(3) end, "softmax: dim 2 out of range for [2x3]")
    end)

    it("relu, gelu, quick_gelu, sigmoid, tanh, exp, clamp and in-place forms", function()
        local v = x:totable()
        local function erf(z)
            -- Abramowitz-Stegun 7.1.26 is too coarse; integrate instead (Simpson, 2000 steps)
            local n, s = 2000, 0
            local h = z / n
            for i = 0, n do
                local t = i * h
                local c = (i == 0 or i == n) and 1 or (i % 2 == 1 and 4 or 2)
                s = s + c * math.exp(-t * t)
            end
            return s * h / 3 * 2 / math.sqrt(math.pi)
        end
        assert.tensor_close(x:relu(), map2(v, function(a) return math.max(a, 0) end), 0)
        assert.tensor_close(x:gelu(), map2(v, function(a) return 0.5 * a * (1 + erf(a / math.sqrt(2))) end), F32)
        assert.tensor_close(x:quick_gelu(), map2(v, function(a) return a * sigmoid(1.702 * a) end), F32)
        assert.tensor_close(x:sigmoid(), map2(v, sigmoid), F32)
        assert.tensor_close(x:tanh(), map2(v, math.tanh), F32)
        assert.tensor_close(x:exp(), map2(v, math.exp), F32)
        assert.tensor_close(x:clamp(0, 2), map2(v, function(a) return math.min(math.max(a, 0), 2) end), 0)
        assert.tensor_close(x:abs():sqrt(), map2(v, function(a) return math.sqrt(math.abs(a)) end), F32)
        local c = x:clone()
        assert.are.equal(c, c:relu_())
        assert.tensor_close(c, x:relu(), 0)
        local view = x:clone():t()
        view:tanh_()
        assert.tensor_close(view, transpose(map2(v, math.tanh)), F32)
        assert.tensor_close(x:eltwise("linear", 2, 1), map2(v, function(a) return 2 * a + 1 end), 0)
        assert.has_error(function() x:eltwise("bogus") end)
    end)
end)

describe("normalisation", function()
    it("layer_norm with normalized_shape, weight, bias and stats", function()
        local x = T({{1, 2, 3, 4}, {2, 2, 2, 6}})
        local w = T({1, 2, 0.5, -1})
        local b = T({0, 1, 0, 0.25})
        local eps = 1e-5
        local e, means, rstds = {}, {}, {}
        for i, row in ipairs(x:totable()) do
            local m, var = 0, 0
            for _, v in ipairs(row) do m = m + v / 4 end
            for _, v in ipairs(row) do var = var + (v - m) ^ 2 / 4 end
            local r = 1 / math.sqrt(var + eps)
            e[i] = {}
            for j, v in ipairs(row) do
                e[i][j] = (v - m) * r * w:totable()[j] + b:totable()[j]
            end
            means[i], rstds[i] = m, r
        end
        assert.tensor_close(clip.layer_norm(x, {4}, w, b, eps), e, F32)
        local y, mean, rstd = x:layer_norm({4}, w, b, eps, true)
        assert.tensor_close(y, e, F32)
        assert.tensor_close(mean, means, F32)
        assert.tensor_close(rstd, rstds, F32)
        -- over the last two dims
        local y2 = clip.layer_norm(x:view(1, 2, 4), {2, 4}, nil, nil, eps)
        assert.are.same({1, 2, 4}, y2:size())
        assert.has_error(function() clip.layer_norm(x, {3}, nil, nil) end,
            "layer_norm: normalized_shape {3} does not match the last dims of [2x4]")
        assert.has_error(function() clip.layer_norm(x, {4}, T({1, 2})) end,
            "layer_norm: weight is [2], expected 4 elements")
    end)

    it("batch_norm and folding it into a conv", function()
        local x = rand({1, 2, 3, 3}, 7)
        local mean, var = T({0.5, -0.25}), T({2, 0.5})
        local g, be = T({1.5, -1}), T({0.1, 0.2})
        local y = clip.batch_norm(x, mean, var, g, be, 1e-5)
        local xt = x:totable()
        local m, v, gg, bb = mean:totable(), var:totable(), g:totable(), be:totable()
        for c = 1, 2 do
            local ref = map2(xt[1][c], function(a)
                return (a - m[c]) / math.sqrt(v[c] + 1e-5) * gg[c] + bb[c]
            end)
            assert.tensor_close(y[1][c], ref, F32)
        end
        local w = rand({2, 2, 1, 1}, 8)
        local wf, bf = clip.fold_batch_norm(w, nil, mean, var, g, be, 1e-5)
        assert.tensor_close(clip.conv2d(x, wf, bf),
            clip.batch_norm(clip.conv2d(x, w, nil), mean, var, g, be, 1e-5), F32)
    end)
end)

describe("conv2d and pooling", function()
    local x = T({{{{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}, {13, 14, 15, 16}}}})

    it("conv2d with stride, padding, bias and relu", function()
        local w = T({{{{1, 0}, {0, -1}}}})
        -- valid 2x2 conv: x[i][j] - x[i+1][j+1] = -5 everywhere
        assert.tensor_close(clip.conv2d(x, w), {{{{-5, -5, -5}, {-5, -5, -5}, {-5, -5, -5}}}}, 0)
        assert.tensor_close(clip.conv2d(x, w, T({6}), {stride = 2}), {{{{1, 1}, {1, 1}}}}, 0)
        assert.tensor_close(clip.conv2d(x, w, T({1}), {act = "relu", stride = 3}), {{{{0}}}}, 0)
        -- padding 1: the corner (1, 1) sees only -x[1][1] at the kernel's (2, 2) tap
        local p = clip.conv2d(x, w, nil, {padding = 1})
        assert.are.same({1, 1, 5, 5}, p:size())
        assert.are.equal(-1, p[1][1][1][1])
        assert.are.equal(16, p[1][1][5][5])
        assert.has_error(function() clip.conv2d(x, T({{{{1}}}, {{{1}}}}), nil, {groups = 2}) end,
            "conv2d: size mismatch, src [1x1x4x4] with weights [2x1x1x1] and groups 2 (expected [N, 2, H, W])")
    end)

    it("prepared conv weights give the same numbers", function()
        local xi = rand({2, 4, 9, 7}, 21)
        local w = rand({6, 2, 3, 3}, 22)
        local b = rand({6}, 23)
        local o = {stride = 2, padding = {1, 0}, groups = 2, act = "relu"}
        local expect = clip.conv2d(xi, w, b, o)
        o.h_hint, o.w_hint = 16, 16
        local cw = clip.conv2d_prepare(w, b, o)
        assert.tensor_close(cw(xi), expect, F32)
        assert.tensor_close(clip.conv2d(xi, cw), expect, F32)
        cw:free()
        assert.has_error(function() cw(xi) end, "conv2d: the prepared weights were freed")
    end)

    it("max and avg pooling (count_include_pad as PyTorch)", function()
        assert.tensor_close(clip.max_pool2d(x, 2), {{{{6, 8}, {14, 16}}}}, 0)
        assert.tensor_close(x:avg_pool2d(2), {{{{3.5, 5.5}, {11.5, 13.5}}}}, 0)
        assert.tensor_close(clip.max_pool2d(x, 3, 2, 1), {{{{6, 8}, {14, 16}}}}, 0)
        -- corner window with padding 1: (1 + 2 + 5 + 6) / 9 including the padding, / 4 without
        assert.is_true(math.abs((1 + 2 + 5 + 6) / 9 - clip.avg_pool2d(x, 3, 2, 1)[1][1][1][1]) < 1e-6)
        assert.are.equal(3.5, clip.avg_pool2d(x, 3, 2, 1, false, false)[1][1][1][1])
        assert.are.same({1, 1, 2, 2}, clip.max_pool2d(x, 3, 2, 0, true):size())
        assert.has_error(function() clip.max_pool2d(x, 5) end)
    end)
end)

describe("attention", function()
    it("matches softmax(q k^T / sqrt(d) + mask) v", function()
        local q = rand({1, 2, 3, 4}, 11)
        local k = rand({1, 2, 5, 4}, 12)
        local v = rand({1, 2, 5, 4}, 13)
        local mask = clip.zeros({3, 5})
        for t = 1, 3 do
            for s = t + 2, 5 do
                mask[t][s] = -math.huge
            end
        end
        local out, probs = clip.attention(q, k, v, {mask = mask, probs = true})
        assert.are.same({1, 2, 3, 4}, out:size())
        local qt, kt, vt, mt = q:totable(), k:totable(), v:totable(), mask:totable()
        for h = 1, 2 do
            local sc = mm(qt[1][h], transpose(kt[1][h]))
            sc = map2(sc, function(a, i, j) return a / 2 + mt[i][j] end)
            local p = softmax_rows(sc)
            assert.tensor_close(probs[1][h], p, F32)
            assert.tensor_close(out[1][h], mm(p, vt[1][h]), F32)
        end
        -- no mask, explicit scale, bf16
        local o2 = q:attention(k, v, {scale = 1})
        local ref = clip.softmax(q:matmul(k:transpose(3, 4)), -1):matmul(v)
        assert.tensor_close(o2, ref, F32)
        local ob = clip.attention(q:to("bf16"), k:to("bf16"), v:to("bf16"), {scale = 1})
        assert.are.equal("bf16", ob:dtype())
        assert.tensor_close(ob, ref, 2e-2) -- inputs also rounded to bf16 here: two roundings
        assert.has_error(function() clip.attention(q, k, v, {mask = clip.zeros({3, 4})}) end,
            "attention: mask [3x4] does not broadcast to the scores [1x2x3x5] (q [1x2x3x4], k [1x2x5x4])")
    end)

    it("reports primitive cache statistics", function()
        local s = clip.dnnl_cache_stats()
        assert.is_true(s.entries > 0 and s.misses > 0)
        local x = T({{1, 2}})
        x:relu()
        x:relu()
        assert.is_true(clip.dnnl_cache_stats().hits >= s.hits + 1)
    end)
end)
