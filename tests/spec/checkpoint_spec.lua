-- Checkpoints (clip.train.save_checkpoint / load_checkpoint): atomic files, and a run killed with
-- SIGKILL in the middle of a save resumes and ends bit-identical to a run that never stopped.
-- Reference: the uninterrupted run of the same script (equality is exact: same kernels, same
-- thread count, same order of operations; any state missed by the checkpoint -- optimizer moments,
-- step counts, schedule, generator -- changes the final weights).
local clip = require "clipl"

local function tmpdir()
    local p = os.tmpname()
    os.remove(p)
    assert(os.execute("mkdir -p '" .. p .. "'") == 0 or true)
    return p
end

local CONFIG = [[
{"embed_dim": 32, "quick_gelu": true,
 "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
 "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 1, "layers": 2}}
]]

-- The training run: 8 steps on random batches drawn from a seeded generator, a checkpoint after
-- every step, resumed from the checkpoint when there is one. KILL_AT = k makes the save of step k
-- stop between writing the tensors and committing the JSON, and write a marker file.
local CHILD = [[
local clip = require "clipl"
local T = clip.train
local dir, kill_at = arg[1], tonumber(os.getenv("KILL_AT") or "0")
clip.set_num_threads(1)
local m = clip.build_model(dir .. "/tiny.json", {seed = 1})
T.train_params(m)
local opt = clip.optim.AdamW(m:named_parameters(), {lr = 1e-3, betas = {0.9, 0.98}, eps = 1e-6,
    weight_decay = 0.2})
local sched = clip.optim.cosine(opt, {warmup = 2, steps = 8})
local g = clip.generator(5)
local tok = clip.tensor({{63, 5, 6, 62, 0}, {63, 7, 62, 0, 0}, {63, 8, 9, 10, 62},
    {63, 62, 0, 0, 0}}, "i32")
local ck = dir .. "/ck/run.json"
local meta = T.load_checkpoint(ck, {model = m, optimizer = opt, scheduler = sched,
    generators = {data = g}})
local start = meta and meta.step or 0
for step = start + 1, 8 do
    local img = clip.randn({4, 3, 32, 32}, {generator = g})
    local loss = clip.nn.clip_loss(T.forward_image(m, img), T.forward_text(m, tok), m.logit_scale)
    opt:zero_grad(); loss:backward(); opt:step(); sched:step()
    T.save_checkpoint(ck, {model = m, optimizer = opt, scheduler = sched, step = step,
        generators = {data = g}, before_commit = step == kill_at and function()
            io.open(dir .. "/saving", "w"):close()
            for _ = 1, 1200 do os.execute("sleep 0.05") end
        end or nil})
end
local out = {}
for name, p in m:named_parameters() do out[name] = p end
clip.save_safetensors(dir .. "/final.safetensors", out)
io.write(string.format("resumed from %d\n", start))
]]

local function setup()
    local dir = tmpdir()
    os.execute("mkdir -p '" .. dir .. "/ck'")
    local f = assert(io.open(dir .. "/tiny.json", "w"))
    f:write(CONFIG)
    f:close()
    f = assert(io.open(dir .. "/child.lua", "w"))
    f:write(CHILD)
    f:close()
    return dir
end

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

local function exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

describe("checkpoints", function()
    it("a run killed with SIGKILL mid-save resumes bit-identically", function()
        local a = setup()
        assert.is_true(os.execute("luajit '" .. a .. "/child.lua' '" .. a .. "' > '" .. a ..
            "/log' 2>&1") == 0, read(a .. "/log"))
        assert.are.equal("resumed from 0\n", read(a .. "/log"))

        local b = setup()
        os.execute("KILL_AT=5 luajit '" .. b .. "/child.lua' '" .. b .. "' > '" .. b ..
            "/log1' 2>&1 & echo $! > '" .. b .. "/pid'")
        local pid = read(b .. "/pid"):match("%d+")
        local waited = 0
        while not exists(b .. "/saving") and waited < 600 do
            os.execute("sleep 0.1")
            waited = waited + 1
        end
        assert.is_true(exists(b .. "/saving"), "the run never reached the save of step 5")
        os.execute("kill -KILL " .. pid)
        os.execute("sleep 0.2")
        -- step 5's tensors were written but not committed: the checkpoint still says step 4
        assert.is_true(exists(b .. "/ck/run-5.safetensors"))
        assert.is_truthy(read(b .. "/ck/run.json"):find('"step":4', 1, true))
        assert.is_false(exists(b .. "/final.safetensors"))

        assert.is_true(os.execute("luajit '" .. b .. "/child.lua' '" .. b .. "' > '" .. b ..
            "/log2' 2>&1") == 0, read(b .. "/log2"))
        assert.are.equal("resumed from 4\n", read(b .. "/log2"))
        local fa = clip.load_safetensors(a .. "/final.safetensors")
        local fb = clip.load_safetensors(b .. "/final.safetensors")
        local n = 0
        for name, t in pairs(fa) do
            assert.are.equal(0, (t - fb[name]):abs():max():item(), name)
            n = n + 1
        end
        assert.is_true(n > 30)
        -- only the committed checkpoint's tensor file is kept
        assert.is_true(exists(b .. "/ck/run-8.safetensors"))
        assert.is_false(exists(b .. "/ck/run-4.safetensors"))
        os.execute("rm -rf '" .. a .. "' '" .. b .. "'")
    end)

    it("refuses paths and files that are not checkpoints", function()
        assert.has_error(function()
            clip.train.save_checkpoint("/tmp/x.ckpt", {})
        end, "save_checkpoint: path must end in .json, got /tmp/x.ckpt")
        local dir = tmpdir()
        local f = assert(io.open(dir .. "/bad.json", "w"))
        f:write("{}")
        f:close()
        local ok, err = pcall(clip.train.load_checkpoint, dir .. "/bad.json", {})
        assert.is_false(ok)
        assert.is_truthy(err:find("is not a clipl checkpoint", 1, true))
        assert.is_nil(clip.train.load_checkpoint(dir .. "/missing.json", {}))
        os.execute("rm -rf '" .. dir .. "'")
    end)
end)
