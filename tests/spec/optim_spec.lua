-- Optimizers, schedules, clipping and freezing (clip.optim).
--
-- References: AdamW and SGD against their update formulas evaluated here in double (Lua numbers),
-- tolerance 1e-6 relative (the kernels keep parameters and state in f32: a few roundings of 6e-8
-- per step); and a tiny two-tower problem trained with clip_loss for 8 AdamW steps with the cosine
-- warm-up schedule against torch.optim.AdamW (tests/data/autograd_golden.json, made by
-- tests/data/make_autograd_golden.py): losses within 1e-4 relative (the issue's parity bound;
-- measured 2.4e-7) and final weights within 1e-5 absolute (measured 3.8e-7: f32 gradients differ
-- from PyTorch's float64 ones by ~1e-6 relative, and Adam's normalised updates of size lr = 1e-2
-- move by about that fraction of lr per step). The parameter buffer: exact where data only moves
-- (packing, the model's prepared forward on identical weights, steps of exactly representable
-- values), 1e-7 where one f32 SGD update rounds, 1e-6 after clipping (the coefficient is computed
-- in double and applied in f32).
local clip = require "clipl"
local cjson = require "cjson"

-- one thread: many tiny ops, where OpenMP barriers on a shared machine cost more than the work
clip.set_num_threads(1)

local function golden()
    local dir = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
    local f = assert(io.open(dir .. "../data/autograd_golden.json", "rb"))
    local g = cjson.decode(f:read("*a"))
    f:close()
    return g
end

local function values(t)
    return t:flatten():totable()
end

describe("AdamW", function()
    it("follows torch.optim.AdamW step by step (decay only on >= 2-d tensors)", function()
        local w = clip.randn({3, 4}, {seed = 1}):requires_grad(true)
        local b = clip.randn({4}, {seed = 2}):requires_grad(true)
        local opt = clip.optim.AdamW({weight = w, bias = b}, {lr = 0.01, betas = {0.9, 0.98},
            eps = 1e-6, weight_decay = 0.2})
        local ref = {weight = values(w), bias = values(b)}
        local m, v = {weight = {}, bias = {}}, {weight = {}, bias = {}}
        for s = 1, 4 do
            opt:zero_grad()
            local loss = (w:matmul(b:view(4, 1)):tanh() + b:sum() * 0.1):square():sum()
            loss:backward()
            local grads = {weight = values(w.grad), bias = values(b.grad)}
            opt:step()
            for name, p in pairs(ref) do
                local wd = name == "weight" and 0.2 or 0
                for j = 1, #p do
                    local gj = grads[name][j]
                    m[name][j] = 0.9 * (m[name][j] or 0) + 0.1 * gj
                    v[name][j] = 0.98 * (v[name][j] or 0) + 0.02 * gj * gj
                    p[j] = p[j] * (1 - 0.01 * wd)
                    local mh, vh = m[name][j] / (1 - 0.9 ^ s), v[name][j] / (1 - 0.98 ^ s)
                    p[j] = p[j] - 0.01 * mh / (math.sqrt(vh) + 1e-6)
                end
            end
        end
        assert.tensor_close(w, clip.tensor(ref.weight):view(3, 4), 1e-6)
        assert.tensor_close(b, clip.tensor(ref.bias), 1e-6)
    end)

    it("reproduces PyTorch on a two-tower clip_loss problem with the cosine schedule", function()
        local a = golden().adamw
        local init = a.init
        local x = clip.tensor(init.x):view(4, 3)
        local t = clip.tensor(init.t):view(4, 2)
        local P = {
            ["visual.W1"] = clip.tensor(init.W1):view(3, 5):requires_grad(true),
            ["text.W2"] = clip.tensor(init.W2):view(2, 5):requires_grad(true),
            ["text.b2"] = clip.tensor(init.b2):requires_grad(true),
            logit_scale = clip.tensor(init.logit_scale):requires_grad(true),
        }
        local opt = clip.optim.AdamW(P, {lr = a.lr, betas = a.betas, eps = a.eps,
            weight_decay = a.weight_decay})
        local sched = clip.optim.cosine(opt, {warmup = a.warmup, steps = a.steps})
        for step = 1, a.steps do
            assert.near(a.lrs[step], opt:get_lr(), 1e-12)
            opt:zero_grad()
            local loss = clip.nn.clip_loss(x:matmul(P["visual.W1"]),
                t:matmul(P["text.W2"]) + P["text.b2"], P.logit_scale)
            loss:backward()
            opt:step()
            sched:step()
            assert.near(a.losses[step], loss:item(), 1e-4 * math.abs(a.losses[step]))
        end
        local f = a.final
        assert.tensor_close(P["visual.W1"], clip.tensor(f.W1):view(3, 5), 1e-5)
        assert.tensor_close(P["text.W2"], clip.tensor(f.W2):view(2, 5), 1e-5)
        assert.tensor_close(P["text.b2"], clip.tensor(f.b2), 1e-5)
        assert.near(f.logit_scale, P.logit_scale:item(), 1e-5)
    end)

    it("clamps logit_scale to [0, ln 100] after a step", function()
        local ls = clip.tensor(math.log(100) - 1e-3):requires_grad(true)
        local opt = clip.optim.AdamW({logit_scale = ls}, {lr = 0.1})
        ;(-ls):backward() -- pushes logit_scale up
        opt:step()
        assert.near(math.log(100), ls:item(), 1e-6)
    end)

    it("saves and restores its state: a resumed run matches one that never stopped", function()
        local function run(split)
            local w = clip.tensor({{0.5, -0.3}, {0.2, 0.8}}):requires_grad(true)
            local opt = clip.optim.AdamW({w = w}, {lr = 0.05})
            local sched = clip.optim.cosine(opt, {warmup = 2, steps = 6})
            for s = 1, 6 do
                if s == split then -- a new optimizer from the saved state
                    local sd, ssd = opt:state_dict(), sched:state_dict()
                    local copy = {}
                    for k, v in pairs(sd.tensors) do copy[k] = v:clone() end
                    sd.tensors = copy
                    opt = clip.optim.AdamW({w = w}, {lr = 0.05})
                    opt:load_state_dict(sd)
                    sched = clip.optim.cosine(opt, {warmup = 2, steps = 6})
                    sched:load_state_dict(ssd)
                end
                opt:zero_grad()
                w:square():sum():backward()
                opt:step()
                sched:step()
            end
            return values(w)
        end
        assert.same(run(100), run(4))
    end)
end)

describe("SGD", function()
    it("follows torch.optim.SGD with momentum and weight decay", function()
        local w = clip.tensor({1.0, -2.0, 0.5}):requires_grad(true)
        local opt = clip.optim.SGD({w}, {lr = 0.1, momentum = 0.9, weight_decay = 0.01})
        local p, buf = values(w), {}
        for s = 1, 3 do
            opt:zero_grad()
            w:pow(3):sum():backward() -- g = 3 w^2
            opt:step()
            for j = 1, 3 do
                local d = 3 * p[j] ^ 2 + 0.01 * p[j]
                buf[j] = s == 1 and d or 0.9 * buf[j] + d
                p[j] = p[j] - 0.1 * buf[j]
            end
        end
        assert.tensor_close(w, clip.tensor(p), 1e-6)
    end)
end)

describe("schedules, clipping, groups and freezing", function()
    it("cosine warms up linearly then decays to min_lr", function()
        local w = clip.zeros({2}):requires_grad(true)
        local opt = clip.optim.SGD({w}, {lr = 1.0})
        local sched = clip.optim.cosine(opt, {warmup = 4, steps = 12, min_lr = 0.1})
        local lrs = {opt:get_lr()}
        for _ = 1, 12 do
            lrs[#lrs + 1] = sched:step()
        end
        assert.near(0.25, lrs[1], 1e-12)
        assert.near(1.0, lrs[4], 1e-12)
        assert.near(1.0, lrs[5], 1e-12) -- step 4: cos(0)
        assert.near(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)), lrs[9], 1e-12)
        assert.near(0.1, lrs[13], 1e-12)
    end)

    it("clips the global gradient norm", function()
        local a = clip.zeros({2}):requires_grad(true)
        local b = clip.zeros({1}):requires_grad(true)
        ;(a * clip.tensor({3, 0}) + (b * 4):sum()):sum():backward() -- grads {3, 0} and {8}
        local total = clip.optim.clip_grad_norm({a, b}, 1.0)
        assert.near(math.sqrt(73), total, 1e-9)
        local k = 1 / (math.sqrt(73) + 1e-6)
        assert.tensor_close(a.grad, clip.tensor({3 * k, 0}), 1e-6)
        assert.tensor_close(b.grad, clip.tensor({8 * k}), 1e-6)
        assert.has_error(function() clip.optim.clip_grad_norm({a}, 0) end)
    end)

    it("keeps memory flat over a training loop (graphs freed, no growth)", function()
        local w = clip.randn({64, 64}, {seed = 3}):mul(0.1):requires_grad(true)
        local x = clip.randn({32, 64}, {seed = 4})
        local opt = clip.optim.AdamW({w = w}, {lr = 1e-3})
        local function step()
            opt:zero_grad()
            local h = x
            for _ = 1, 4 do
                h = h:matmul(w):gelu()
            end
            h:square():mean():backward()
            opt:step()
        end
        for _ = 1, 3 do step() end
        collectgarbage()
        collectgarbage()
        local base, nodes = clip.live_bytes(), clip.autograd_live_nodes()
        for _ = 1, 30 do step() end
        collectgarbage()
        collectgarbage()
        assert.equal(nodes, clip.autograd_live_nodes())
        assert.is_true(clip.live_bytes() <= base, clip.live_bytes() .. " > " .. base)
    end)

    it("accumulates gradients until zero_grad", function()
        local w = clip.tensor({1.0, 2.0}):requires_grad(true)
        local opt = clip.optim.SGD({w}, {lr = 0.5})
        for _ = 1, 3 do
            w:sum():backward()
        end
        opt:step() -- grad 3 on each entry
        assert.tensor_close(w, clip.tensor({-0.5, 0.5}), 0)
    end)

    it("uses per-group learning rates and freezes by name pattern", function()
        local P = {["visual.w"] = clip.ones({2, 2}):requires_grad(true),
            ["text.w"] = clip.ones({2, 2}):requires_grad(true),
            ["text.b"] = clip.ones({2}):requires_grad(true)}
        local opt = clip.optim.SGD({
            {params = {["text.w"] = P["text.w"]}, lr = 0.1},
            {params = {["text.b"] = P["text.b"], ["visual.w"] = P["visual.w"]}, lr = 1.0},
        }, {lr = 0.5})
        assert.equal(1, clip.optim.freeze(P, "^visual%."))
        assert.is_false(P["visual.w"]:requires_grad())
        local loss = (P["visual.w"]:sum() + P["text.w"]:sum() + P["text.b"]:sum())
        loss:backward()
        opt:step()
        assert.tensor_close(P["visual.w"], clip.ones({2, 2}), 0)
        assert.tensor_close(P["text.w"], clip.full({2, 2}, 0.9), 1e-7)
        assert.tensor_close(P["text.b"], clip.zeros({2}), 0)
    end)

    it("copies read-only weights (a file mapping) before the first update", function()
        local path = os.tmpname() .. ".safetensors"
        clip.save_safetensors(path, {w = clip.tensor({1, 2, 3})})
        local d = clip.load_safetensors(path)
        local w = d.w
        w:requires_grad(true)
        local opt = clip.optim.SGD({w = w}, {lr = 1})
        w:sum():backward()
        opt:step()
        assert.tensor_close(w, clip.tensor({0, 1, 2}), 0)
        local again = clip.load_safetensors(path)
        assert.tensor_close(again.w, clip.tensor({1, 2, 3}), 0)
        os.remove(path)
    end)
end)

describe("the parameter buffer", function()
    local C = clip.lib.C
    local ffi = require "ffi"

    local function addr(p)
        return tonumber(ffi.cast("uintptr_t", p))
    end

    it("packs a model's parameters into one aligned buffer that the model's forward reads", function()
        local model = clip.load() -- the bundled model: f32 weights mapped read-only from its file
        local before, names = {}, {}
        for name, p in model:named_parameters(nil, true) do
            before[name] = p:clone()
            names[#names + 1] = name
        end
        local images = clip.randn({2, 3, model.input_resolution, model.input_resolution},
            {seed = 5})
        local function encode(m) -- the prepared (inference) path: grad mode off
            local out
            clip.no_grad(function() out = m:encode_image(images) end)
            return out
        end
        local f0 = encode(model)
        clip.train.train_params(model)
        local opt = clip.optim.AdamW(model:parameters(), {lr = 1e-3, weight_decay = 0.1})
        local store = C.clipl_tensor_storage(model:parameter(names[1]))
        for _, name in ipairs(names) do
            local p = model:parameter(name)
            if C.clipl_model_param_is_buffer(model._h, C.clipl_model_param_find(model._h, name))
                == 0 then
                assert.is_true(C.clipl_tensor_storage(p) == store, name)
                assert.equal(0, addr(p.ptr) % 64, name)
                assert.equal(0, p.flags % 2, name) -- writable now
            end
            assert.tensor_close(p, before[name], 0) -- the data moved unchanged
        end
        model:prepare()
        assert.tensor_close(encode(model), f0, 0)
        -- one step through the differentiable forward; then the model's own (prepared) forward
        -- must equal a model built from copies of the updated tensors
        opt:zero_grad()
        clip.train.forward_image(model, images):square():sum():backward()
        opt:step()
        local copies = {}
        for name, p in model:named_parameters(nil, true) do
            copies[name] = p:clone()
        end
        model:prepare()
        local f1 = encode(model)
        assert.tensor_close(f1, encode(clip.model_from_tensors(copies)), 0)
        assert.is_true((f1 - f0):abs():max():item() > 0)
    end)

    it("accumulates gradients in place; zero_grad zeroes them, zero_grad(true) clears", function()
        local w = clip.tensor({1, 2, 3}):requires_grad(true)
        local b = clip.tensor({0.5}):requires_grad(true)
        local opt = clip.optim.SGD({w = w, b = b}, {lr = 0.1})
        ;(w:sum() * 2 + b:sum()):backward() -- grads {2, 2, 2} and {1}
        opt:step() -- the gradients become views of the optimizer's gradient buffer
        local gstore = C.clipl_tensor_storage(w.grad)
        assert.is_true(C.clipl_tensor_storage(b.grad) == gstore)
        assert.is_false(C.clipl_tensor_storage(w) == gstore)
        w:sum():backward()
        assert.is_true(C.clipl_tensor_storage(w.grad) == gstore)
        assert.tensor_close(w.grad, clip.tensor({3, 3, 3}), 0)
        opt:zero_grad()
        assert.tensor_close(w.grad, clip.zeros({3}), 0)
        assert.tensor_close(b.grad, clip.zeros({1}), 0)
        -- SGD: 1 - 0.1 * 2, ...; then a step on zero gradients changes nothing (no decay)
        opt:step()
        assert.tensor_close(w, clip.tensor({0.8, 1.8, 2.8}), 1e-7)
        opt:zero_grad(true)
        assert.is_nil(w.grad)
        assert.is_nil(b.grad)
        opt:step()
        assert.tensor_close(b, clip.tensor({0.4}), 1e-7)
    end)

    it("skips frozen parameters between stepped ones, and clips with one reduction", function()
        local a = clip.ones({17}):requires_grad(true)
        local mid = clip.ones({5}):requires_grad(true)
        local c = clip.ones({2, 3}):requires_grad(true)
        local opt = clip.optim.SGD({{"a", a}, {"mid", mid}, {"c", c}}, {lr = 1})
        clip.optim.freeze({mid = mid}, "mid")
        ;(a:sum() * 3 + c:sum() * 4):backward()
        -- the global norm: sqrt(17 * 9 + 6 * 16), as the list form computes it
        local want = math.sqrt(17 * 9 + 6 * 16)
        assert.near(want, clip.optim.clip_grad_norm(opt, 1e9), 1e-9)
        assert.near(want, clip.optim.clip_grad_norm({a, c}, 1e9), 1e-9)
        assert.near(want, clip.optim.clip_grad_norm(opt, want / 2), 1e-9) -- halves them
        local k = (want / 2) / (want + 1e-6)
        opt:step()
        assert.tensor_close(a, clip.full({17}, 1 - 3 * k), 1e-6)
        assert.tensor_close(mid, clip.ones({5}), 0)
        assert.tensor_close(c, clip.full({2, 3}, 1 - 4 * k), 1e-6)
    end)

    it("gives parameters frozen at creation no buffers, and packs them when unfrozen", function()
        local a = clip.ones({16}):requires_grad(true)
        local locked = clip.ones({1000}):requires_grad(true)
        clip.optim.freeze({locked = locked}, "locked") -- LiT: the locked tower costs no state
        local opt = clip.optim.AdamW({{"a", a}, {"locked", locked}}, {lr = 0.1, weight_decay = 0})
        assert.equal(16, opt.flat.n)
        local ref = clip.ones({16}):requires_grad(true) -- the same steps, never frozen beside
        local ropt = clip.optim.AdamW({{"a", ref}}, {lr = 0.1, weight_decay = 0})
        for _ = 1, 2 do
            opt:zero_grad(); ropt:zero_grad()
            ;(a * a):sum():backward(); (ref * ref):sum():backward()
            opt:step(); ropt:step()
        end
        assert.tensor_close(locked, clip.ones({1000}), 0)
        clip.optim.freeze({locked = locked}, "locked", false)
        opt:zero_grad(); ropt:zero_grad()
        ;((a * a):sum() + locked:sum()):backward(); (ref * ref):sum():backward()
        opt:step(); ropt:step()
        assert.equal(16 + 1008, opt.flat.n) -- packed now, after a (64-byte aligned)
        assert.tensor_close(a, ref, 0)     -- a's moments survived the re-packing
        assert.tensor_close(locked, clip.full({1000}, 0.9), 1e-6) -- AdamW's first step: lr
    end)

    it("packs a parameter back when another optimizer took it", function()
        local w = clip.tensor({1, 2}):requires_grad(true)
        local opt1 = clip.optim.SGD({w}, {lr = 0.5})
        local ptr1 = addr(w.ptr)
        local opt2 = clip.optim.SGD({w}, {lr = 0.25})
        assert.is_false(addr(w.ptr) == ptr1)
        w:sum():backward()
        opt1:step()
        assert.equal(ptr1, addr(w.ptr))
        assert.tensor_close(w, clip.tensor({0.5, 1.5}), 0)
        opt2:step()
        assert.tensor_close(w, clip.tensor({0.25, 1.25}), 0)
    end)

    it("rejects a parameter given twice and parameters that are not f32", function()
        local w = clip.zeros({2}):requires_grad(true)
        assert.has_error(function() clip.optim.AdamW({{"a", w}, {"b", w}}) end,
            "AdamW: parameter 'b' appears twice (also as 'a')")
        local h = clip.zeros({2}, "bf16")
        assert.has_error(function() clip.optim.SGD({h = h}, {lr = 1}) end,
            "SGD: parameter 'h' is bf16; parameters must be f32 tensors (master weights)")
    end)
end)
