-- Autograd from Lua: requires_grad, backward through composed tensor ops (views and broadcasting
-- included), no_grad, detach, in-place refusal, and the losses against PyTorch's values
-- (tests/data/autograd_golden.json, made by tests/data/make_autograd_golden.py).
--
-- Tolerances: gradient checks use central differences with eps = 1e-2 on f32 ops and accept
-- max |analytic - numeric| / max(1, max |numeric|) <= 5e-3 (f32 rounding of the loss divided by
-- 2 eps gives ~1e-3 at most; a wrong gradient is off by O(1)). Losses and their gradients are
-- compared with PyTorch's float64 values on the same (f32) inputs at 2e-5 relative: clipl computes
-- in f32 (unit roundoff 6e-8) through ~20 ops, so errors stay below ~1e-5.
local clip = require "clipl"
local cjson = require "cjson"

-- one thread: many tiny ops, where OpenMP barriers on a shared machine cost more than the work
clip.set_num_threads(1)

local H = require "helpers_env"

local function golden()
    return cjson.decode(H.read(H.root .. "/tests/data/autograd_golden.json"))
end

local function from(list, shape)
    return clip.tensor(list):view(shape)
end

describe("autograd", function()
    it("marks leaves, records ops and accumulates into .grad", function()
        local x = clip.tensor({1, 2, 3})
        assert.is_false(x:requires_grad())
        assert.equal(x, x:requires_grad(true))
        assert.is_true(x:requires_grad() and x:is_leaf())
        assert.is_nil(x.grad)
        local y = x * x + x * 2 -- dy/dx = 2x + 2
        assert.is_false(y:is_leaf())
        assert.equal("add", y:grad_fn())
        y:sum():backward()
        assert.tensor_close(x.grad, clip.tensor({4, 6, 8}), 0)
        -- a second graph accumulates until zero_grad
        x:sum():backward()
        assert.tensor_close(x.grad, clip.tensor({5, 7, 9}), 0)
        x:zero_grad()
        assert.is_nil(x.grad)
        -- an intermediate keeps its gradient when asked
        local h = (x * 2):retain_grad()
        local k = (h * h):sum() -- dk/dh = 2h
        k:backward()
        assert.tensor_close(h.grad, clip.tensor({4, 8, 12}), 0)
        assert.tensor_close(x.grad, clip.tensor({8, 16, 24}), 0)
    end)

    it("backpropagates through views to the viewed tensor", function()
        local m = clip.zeros({2, 3}):requires_grad(true)
        local v = m:t():narrow(1, 2, 2):select(2, 1) -- m[1, 2..3]
        v:sum():backward()
        assert.tensor_close(m.grad, clip.tensor({{0, 1, 1}, {0, 0, 0}}), 0)
        local e = clip.tensor({1, 2}):requires_grad(true)
        e:view(2, 1):expand(2, 3):sum():backward()
        assert.tensor_close(e.grad, clip.tensor({3, 3}), 0)
    end)

    it("passes gradient checks of composed ops (broadcast, non-contiguous, odd sizes)", function()
        local a = clip.randn({3, 5}, {seed = 1}):t():requires_grad(true) -- [5, 3], strided
        local b = clip.randn({3}, {seed = 2}):requires_grad(true)
        local w = clip.randn({3, 4}, {seed = 3}):requires_grad(true)
        local ok, msg = clip.gradcheck(function(x, y, z)
            local h = (x + y):matmul(z):gelu()
            return h:softmax(-1) * h:narrow(2, 2, 3):sum(2, {keepdim = true})
        end, {a, b, w})
        assert.is_true(ok, msg)
        local c = clip.randn({2, 3, 4}, {seed = 4}):requires_grad(true)
        ok, msg = clip.gradcheck(function(x)
            return clip.cat({x:permute(3, 2, 1):exp(), x:transpose(1, 3)}, 2):layer_norm({6, 2}) / 3
        end, {c})
        assert.is_true(ok, msg)
        local d = clip.randn({4, 6}, {seed = 5}):requires_grad(true)
        ok, msg = clip.gradcheck(function(x)
            return clip.nn.normalize(x):matmul(x:t()):log_softmax(1)
        end, {d})
        assert.is_true(ok, msg)
    end)

    it("scatters through max, topk and indexing from Lua (1-based indices)", function()
        local x = clip.tensor({{1, 5, 2}, {7, 3, 4}}):requires_grad(true)
        local v, i = x:max(2)
        assert.same({2, 1}, i:totable())
        v:sum():backward()
        assert.tensor_close(x.grad, clip.tensor({{0, 1, 0}, {1, 0, 0}}), 0)
        x:zero_grad()
        local t = x:topk(2, 2)
        local tw = t * clip.tensor({{1, 10}, {1, 10}})
        tw:sum():backward()
        assert.tensor_close(x.grad, clip.tensor({{0, 1, 10}, {1, 0, 10}}), 0)
        x:zero_grad()
        x:gather(2, clip.tensor({{3, 3}, {1, 2}}, "i64")):sum():backward()
        assert.tensor_close(x.grad, clip.tensor({{0, 0, 2}, {1, 1, 0}}), 0)
        x:zero_grad()
        clip.embedding({2, 2, 1}, x):sum():backward()
        assert.tensor_close(x.grad, clip.tensor({{1, 1, 1}, {2, 2, 2}}), 0)
    end)

    it("records nothing under no_grad and restores the mode after an error", function()
        local x = clip.tensor({1, 2}):requires_grad(true)
        local y, z = clip.no_grad(function() return x * 2, 5 end)
        assert.is_false(y:requires_grad())
        assert.equal(5, z)
        assert.is_true(clip.is_grad_enabled())
        assert.has_error(function() clip.no_grad(function() error("boom") end) end)
        assert.is_true(clip.is_grad_enabled())
        assert.is_true((x * 2):requires_grad())
    end)

    it("refuses in-place ops on tensors that require grad, unless grad mode is off", function()
        local x = clip.tensor({1, 2}):requires_grad(true)
        local ok, err = pcall(function() x:add_(1) end)
        assert.is_false(ok)
        assert.matches("in%-place op on a tensor %[2%] that requires grad", err)
        ok, err = pcall(function() x:fill(0) end)
        assert.is_false(ok)
        assert.matches("clip.no_grad", err)
        clip.no_grad(function() x:add_(1) end)
        assert.tensor_close(x, clip.tensor({2, 3}), 0)
    end)

    it("detaches, and errors clearly", function()
        local x = clip.tensor({1, 2}):requires_grad(true)
        local y = x * 3
        local d = y:detach()
        assert.is_false(d:requires_grad())
        assert.tensor_close(d, clip.tensor({3, 6}), 0)
        local ok, err = pcall(function() y:backward() end)
        assert.is_false(ok)
        assert.matches("a gradient is needed", err)
        ok, err = pcall(function() clip.tensor({1, 2}, "i64"):requires_grad(true) end)
        assert.is_false(ok)
        assert.matches("only float tensors can require grad", err)
        local s = y:sum()
        s:backward()
        ok, err = pcall(function() s:backward() end)
        assert.is_false(ok)
        assert.matches("retain_graph", err)
        local s2 = (x * x):sum()
        s2:backward({retain_graph = true})
        s2:backward()
    end)

    it("batch_norm_train: gradients by finite differences, running stats as PyTorch", function()
        local x = clip.randn({3, 2, 2, 3}, {seed = 11}):requires_grad(true)
        local w = clip.randn({2}, {seed = 12}):requires_grad(true)
        local b = clip.randn({2}, {seed = 13}):requires_grad(true)
        local ok, msg = clip.gradcheck(function(a, c, d)
            return clip.nn.batch_norm_train(a, nil, nil, c, d)
        end, {x, w, b})
        assert.is_true(ok, msg)
        local rm, rv = clip.zeros({2}), clip.ones({2})
        local y = clip.nn.batch_norm_train(x, rm, rv, nil, nil, 0.1, 1e-5)
        -- reference statistics of channel 1 (18 values) in double
        local v = x:select(2, 1):flatten():totable()
        local mu, ss = 0, 0
        for i = 1, #v do mu = mu + v[i] / #v end
        for i = 1, #v do ss = ss + (v[i] - mu) ^ 2 end
        assert.near(0.1 * mu, rm[1], 1e-6)
        assert.near(0.9 + 0.1 * ss / (#v - 1), rv[1], 1e-6)
        assert.near((v[1] - mu) / math.sqrt(ss / #v + 1e-5), y:get(1, 1, 1, 1), 1e-5)
    end)

    it("frees the graph with the last tensor that holds it", function()
        collectgarbage()
        local before = clip.autograd_live_nodes()
        do
            local w = clip.randn({8, 8}, {seed = 9}):requires_grad(true)
            local h = clip.randn({4, 8}, {seed = 10})
            for _ = 1, 50 do
                h = h:matmul(w):tanh()
            end
            h:sum():backward()
            assert.is_not_nil(w.grad)
        end
        collectgarbage()
        collectgarbage()
        assert.equal(before, clip.autograd_live_nodes())
    end)
end)

describe("losses", function()
    local g = golden()

    it("cross_entropy matches PyTorch, with and without label smoothing", function()
        local ce = g.cross_entropy
        for _, case in ipairs({ce.plain, ce.smooth}) do
            local logits = from(ce.logits, ce.shape):requires_grad(true)
            local loss = clip.nn.cross_entropy(logits, ce.labels,
                {label_smoothing = case.label_smoothing})
            assert.equal(0, loss:dim())
            assert.near(case.loss, loss:item(), 2e-5 * math.abs(case.loss))
            loss:backward()
            assert.tensor_close(logits.grad, from(case.grad, ce.shape), 2e-5)
        end
        local ok, err = pcall(clip.nn.cross_entropy, clip.zeros({2, 3}), {1, 2, 3})
        assert.is_false(ok)
        assert.matches("labels %[3%] do not match 2 rows", err)
    end)

    it("clip_loss matches open_clip's ClipLoss (loss and every gradient)", function()
        local c = g.clip_loss
        local img = from(c.img, c.shape):requires_grad(true)
        local txt = from(c.txt, c.shape):requires_grad(true)
        local ls = clip.tensor(c.logit_scale):requires_grad(true)
        local loss = clip.nn.clip_loss(img, txt, ls)
        assert.near(c.loss, loss:item(), 2e-5 * math.abs(c.loss))
        loss:backward()
        assert.tensor_close(img.grad, from(c.grad_img, c.shape), 2e-5)
        assert.tensor_close(txt.grad, from(c.grad_txt, c.shape), 2e-5)
        assert.near(c.grad_logit_scale, ls.grad:item(), 2e-5 * math.max(1, math.abs(
            c.grad_logit_scale)))
        local ok, err = pcall(clip.nn.clip_loss, clip.zeros({2, 3}), clip.zeros({3, 3}), 1)
        assert.is_false(ok)
        assert.matches("must be %[N, E%]", err)
    end)
end)
