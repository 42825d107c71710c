-- Zero-shot classifiers (lua/clipl/zeroshot.lua), embedding indexes (lua/clipl/index.lua),
-- contact sheets (engine/image/sheet.c) and decoding on a background thread (engine/image/async.c).
--
-- The model is a small ViT CLIP with OpenAI's real vocabulary size (49408), built from a seed and
-- saved to a temporary safetensors file with OpenAI's BPE file beside it, so that the model's own
-- tokenizer (its folder's vocabulary) is the real one. References are computed here in plain Lua
-- (doubles) from model:encode_text / model:encode_image of each prompt and image.
local clip = require "clipl"

local H = require "helpers_env"
local q, write, shared = H.q, H.write, H.shared
local vocab = shared .. "/bpe_simple_vocab_16e6.txt.gz"

local tmp = H.tmpdir("model", "imgs")

-- the model: H.TINY_VIT from a seed, with OpenAI's vocabulary beside it
local function save_model(seed, dir)
    return H.save_tiny_model(dir, seed)
end

local model_path = save_model(1, tmp .. "/model")
local other_path = save_model(2, tmp .. "/other")
local model = clip.load(model_path)
local tok = clip.tokenizer(vocab)
local images = {shared .. "/CLIP.png", shared .. "/images/chelsea.png",
    shared .. "/images/grace_hopper.jpg", shared .. "/images/coins.png"}
local batch = clip.preprocess_batch(images, 32)

local function rows(t)
    return t:totable()
end

local function unit(v)
    local s = 0
    for _, x in ipairs(v) do s = s + x * x end
    s = math.sqrt(s)
    local out = {}
    for i, x in ipairs(v) do out[i] = x / s end
    return out
end

local function dot(a, b)
    local s = 0
    for i = 1, #a do s = s + a[i] * b[i] end
    return s
end

-- OpenAI's notebook, by hand: per class, encode each prompt alone, normalise, average, normalise.
local function reference_weights(m, classes, templates)
    local w = {}
    for c, name in ipairs(classes) do
        local acc
        for _, t in ipairs(templates) do
            local prompt = t:gsub("{}", name)
            local e = unit(rows(m:encode_text(tok:tokenize({prompt})))[1])
            if not acc then
                acc = e
            else
                for i = 1, #acc do acc[i] = acc[i] + e[i] end
            end
        end
        for i = 1, #acc do acc[i] = acc[i] / #templates end
        w[c] = unit(acc)
    end
    return w
end

local function reference_probs(m, w, imgs)
    local feats = rows(m:encode_image(imgs))
    local scale = math.exp(m.logit_scale:item())
    local out = {}
    for n, f in ipairs(feats) do
        f = unit(f)
        local logits, mx = {}, -math.huge
        for c = 1, #w do
            logits[c] = scale * dot(f, w[c])
            mx = math.max(mx, logits[c])
        end
        local z = 0
        for c = 1, #w do
            logits[c] = math.exp(logits[c] - mx)
            z = z + logits[c]
        end
        for c = 1, #w do logits[c] = logits[c] / z end
        out[n] = logits
    end
    return out
end

describe("clip.zeroshot.classifier", function()
    local cache = tmp .. "/cache"
    local classes = {"cat", "dog", "diagram", "coin"}
    local templates = {"a photo of a {}.", "a drawing of a {}.", "a {} in the wild."}

    it("gives the model's own tokenizer (the vocabulary in the model's folder)", function()
        local ids = model:tokenize({"a photo of a dog"}, {truncate = true})
        assert.same(rows(tok:tokenize({"a photo of a dog"})), rows(ids))
    end)

    it("builds OpenAI's prompt-ensemble weights and probabilities (checked by hand)", function()
        local clf = clip.zeroshot.classifier(model, classes, templates, {cache = false})
        local w = reference_weights(model, classes, templates)
        -- f32 encoders, references in doubles from the same f32 embeddings: the only difference
        -- is f32 rounding of the normalise/mean/matmul steps on 32-dim vectors (~1e-7 each)
        assert.tensor_close(clf.weights, clip.tensor(w), 1e-5)
        local probs = clf:classify(batch)
        assert.same({4, 4}, probs:size())
        local ref = reference_probs(model, w, batch)
        -- logits are scaled by exp(logit_scale) = 100: 1e-7 cosine errors become ~1e-5 in logits
        assert.tensor_close(probs, clip.tensor(ref), 1e-4)
        for _, r in ipairs(rows(probs)) do
            local s = 0
            for _, p in ipairs(r) do s = s + p end
            assert.is_true(math.abs(s - 1) < 1e-5, "row sums to " .. s)
        end
    end)

    it("with one template equals model(image, text) (OpenAI's forward)", function()
        local clf = clip.zeroshot.classifier(model, classes, {"a photo of a {}."}, {cache = false})
        local prompts = {}
        for i, c in ipairs(classes) do prompts[i] = "a photo of a " .. c .. "." end
        local logits = model(batch, tok:tokenize(prompts))
        -- same products in another order: f32 rounding times the scale 100
        assert.tensor_close(clf:logits(batch), logits, 1e-4)
        assert.tensor_close(clf:classify(batch), logits:softmax(-1), 1e-5)
        -- image features instead of images give the same
        assert.tensor_close(clf:classify(model:encode_image(batch)), clf:classify(batch), 1e-6)
    end)

    it("gives the same weights whatever the chunk size", function()
        local a = clip.zeroshot.classifier(model, classes, templates, {cache = false, batch = 3})
        local b = clip.zeroshot.classifier(model, classes, templates, {cache = false, batch = 1000})
        local calls = 0
        clip.zeroshot.classifier(model, classes, templates, {cache = false, batch = 6,
            progress = function(done, total)
                calls = calls + 1
                assert.equal(12, total)
                assert.is_true(done <= total)
            end})
        assert.equal(2, calls) -- two classes (6 prompts) per call
        -- a row's prompts are encoded in a batch of another size: oneDNN may sum in another order
        assert.tensor_close(a.weights, b.weights, 1e-5)
    end)

    it("caches the weights keyed by the model's weights and the prompts", function()
        local a = clip.zeroshot.classifier(model, classes, templates, {cache_dir = cache})
        assert.is_false(a.cached)
        local b = clip.zeroshot.classifier(model, classes, templates, {cache_dir = cache})
        assert.is_true(b.cached)
        assert.equal(a.cache_path, b.cache_path)
        assert.tensor_close(b.weights, a.weights, 0) -- stored f32, read back bit for bit
        -- another model with the same architecture (other weights) does not reuse it
        local other = clip.load(other_path)
        local c = clip.zeroshot.classifier(other, classes, templates, {cache_dir = cache})
        assert.is_false(c.cached)
        assert.are_not.equal(a.cache_path, c.cache_path)
        -- other prompts, other class order: other entries
        local d = clip.zeroshot.classifier(model, {"dog", "cat", "diagram", "coin"}, templates,
            {cache_dir = cache})
        assert.is_false(d.cached)
        local e = clip.zeroshot.classifier(model, classes, "simple", {cache_dir = cache})
        assert.is_false(e.cached)
    end)

    it("returns the top k labels, most likely first", function()
        local clf = clip.zeroshot.classifier(model, classes, templates, {cache = false})
        local probs = rows(clf:classify(batch))
        local top = clf:topk(batch, 2)
        assert.equal(4, #top)
        for n, r in ipairs(top) do
            assert.equal(2, #r)
            local sorted = {}
            for c, p in ipairs(probs[n]) do sorted[c] = {c, p} end
            table.sort(sorted, function(x, y) return x[2] > y[2] end)
            for j = 1, 2 do
                assert.equal(sorted[j][1], r[j].index)
                assert.equal(classes[sorted[j][1]], r[j].label)
                assert.is_true(math.abs(sorted[j][2] - r[j].prob) < 1e-7)
            end
        end
        assert.equal(4, #clf:topk(batch, 10)[1]) -- k is capped at the number of classes
    end)

    it("reads template files and the shipped sets", function()
        local sets = clip.zeroshot.template_sets()
        assert.is_truthy(table.concat(sets, ","):find("simple", 1, true))
        assert.is_truthy(table.concat(sets, ","):find("ensemble", 1, true))
        assert.same({"a photo of a {}."}, clip.zeroshot.templates("simple"))
        local ens = clip.zeroshot.templates("ensemble")
        assert.is_true(#ens >= 20)
        for _, t in ipairs(ens) do assert.is_truthy(t:find("{}", 1, true)) end
        write(tmp .. "/t.txt", "# my templates\nan {} here.\r\n\n  \na big {}.\n")
        assert.same({"an {} here.", "a big {}."}, clip.zeroshot.templates(tmp .. "/t.txt"))
    end)

    it("names what is wrong with bad arguments", function()
        assert.has_error(function() clip.zeroshot.classifier(model, {}, "simple") end,
            "classifier: expected a non-empty array of class names")
        assert.has_error(function() clip.zeroshot.classifier(model, {"a", 3}, "simple") end,
            "classifier: class name 2 is not a non-empty string")
        assert.has_error(function() clip.zeroshot.classifier("model", {"a"}, "simple") end,
            "classifier: expected a model from clip.load as the first argument, got string")
        local ok, err = pcall(clip.zeroshot.classifier, model, {"a"}, "no-such-set")
        assert.is_false(ok)
        assert.matches("'no%-such%-set' is neither a file nor a template set", err)
        write(tmp .. "/bad.txt", "a photo of a thing\n")
        ok, err = pcall(clip.zeroshot.templates, tmp .. "/bad.txt")
        assert.is_false(ok)
        assert.matches("line 1 of .*bad.txt has no {}", err)
        local clf = clip.zeroshot.classifier(model, {"a", "b"}, "simple", {cache = false})
        ok, err = pcall(clf.classify, clf, clip.zeros({2, 7}))
        assert.is_false(ok)
        assert.matches("features are 2x7 but the classifier's embeddings have 32 dims", err)
    end)

    it("refuses a tokenizer larger than the model's token table", function()
        -- OpenAI's vocabulary beside a model whose token table has 1024 rows
        local dir = tmp .. "/parity"
        assert(os.execute("mkdir -p " .. q(dir) .. " && ln -sf " ..
            q(shared .. "/parity/tiny_vit/tiny_vit.safetensors") .. " " .. q(dir) ..
            "/ && ln -sf " ..
            q(vocab) .. " " .. q(dir) .. "/") == 0)
        local parity = clip.load(dir .. "/tiny_vit.safetensors")
        assert.equal(1024, parity.vocab_size)
        local ok, err = pcall(function() return parity:tokenize({"a dog"}) end)
        assert.is_false(ok)
        assert.matches("the tokenizer has 49408 tokens but the model", err)
    end)

    it("has help for the REPL's ?clip.zeroshot.classifier", function()
        local text = require("clipl.help").text("clip.zeroshot.classifier")
        assert.matches("clip%.zeroshot%.classifier%(model, classnames, templates, opts%)", text)
        assert.matches("prompt", text)
    end)
end)

describe("clip.index", function()
    local feats = model:encode_image(batch)

    it("finds an item first when queried with its own embedding", function()
        local idx = clip.index.open(tmp .. "/idx1.safetensors")
        assert.equal(4, idx:add(images, feats))
        for i = 1, 4 do
            local hits = idx:search(feats[i], 4)
            assert.equal(images[i], hits[1].path)
            assert.is_true(math.abs(hits[1].score - 1) < 1e-5)
            for j = 2, 4 do assert.is_true(hits[j - 1].score >= hits[j].score) end
        end
    end)

    it("adds nothing twice and survives a save and a reopen (f32 and f16)", function()
        for _, dt in ipairs({"f32", "f16"}) do
            local path = tmp .. "/idx_" .. dt .. ".safetensors"
            local idx = clip.index.open(path, {dtype = dt})
            assert.equal(2, idx:add({images[1], images[2]}, feats:narrow(1, 1, 2)))
            assert.equal(1, idx:add({images[2], images[3]}, feats:narrow(1, 2, 2)))
            assert.equal(0, idx:add({images[1]}, feats:narrow(1, 1, 1)))
            idx:save()
            local back = clip.index.open(path)
            assert.equal(3, back:size())
            assert.equal(dt, back.dtype)
            assert.same({images[1], images[2], images[3]}, back.paths)
            -- f16 keeps 11 significant bits: 2^-11 relative on unit-length rows
            local tol = dt == "f16" and 1e-3 or 1e-6
            assert.tensor_close(back:embeddings(),
                clip.zeroshot.normalize(feats:narrow(1, 1, 3)), tol)
            assert.equal(0, back:add({images[3]}, feats:narrow(1, 3, 1)))
        end
    end)

    it("lists near-duplicate pairs", function()
        local idx = clip.index.open(tmp .. "/dup.safetensors")
        idx:add({"a", "b", "c"}, clip.cat({feats:narrow(1, 1, 1), feats:narrow(1, 1, 1),
            feats:narrow(1, 2, 1)}, 1))
        local d = idx:duplicates(0.999)
        assert.equal(1, #d)
        assert.equal("a", d[1].a)
        assert.equal("b", d[1].b)
    end)

    it("refuses a file that is not an index, naming it", function()
        local path = tmp .. "/notidx.safetensors"
        clip.save_safetensors(path, {x = clip.zeros({2, 2})})
        local ok, err = pcall(clip.index.open, path)
        assert.is_false(ok)
        assert.matches("notidx.safetensors: not a clipl index", err)
    end)
end)

describe("clip.preprocess_batch_start", function()
    it("gives what preprocess_batch gives, bad files listed", function()
        local paths = {images[1], tmp .. "/missing.png", images[3]}
        local job = clip.preprocess_batch_start(paths, 32, {skip_bad = true})
        local t, bad = job:wait()
        local t2, bad2 = clip.preprocess_batch(paths, 32, {skip_bad = true})
        assert.tensor_close(t, t2, 0)
        assert.equal(1, #bad)
        assert.equal(2, bad[1].index)
        assert.equal(bad2[1].message, bad[1].message)
        assert.is_true(job:done())
        assert.has_error(function() job:wait() end, "preprocess_batch_start: wait called twice")
    end)

    it("raises preprocess_batch's error without skip_bad", function()
        local job = clip.preprocess_batch_start({tmp .. "/missing.png"}, 32)
        local ok, err = pcall(job.wait, job)
        assert.is_false(ok)
        assert.matches("missing.png", err)
    end)
end)

describe("clip.zeroshot.contact_sheet", function()
    teardown(function()
        os.execute("rm -rf " .. q(tmp))
    end)

    it("draws thumbnails with label bars into a PNG, skipping unreadable images", function()
        local out = tmp .. "/sheet.png"
        local results = {}
        for i, p in ipairs(images) do
            results[i] = {image = p, top = {{label = "label " .. i, prob = 0.25 * i},
                {label = "other & <more>", prob = 1 - 0.25 * i}}}
        end
        results[5] = {image = tmp .. "/missing.png", top = {}}
        local bad = clip.zeroshot.contact_sheet(out, results, {columns = 2, thumb = 64})
        assert.equal(1, #bad)
        assert.matches("missing.png", bad[1].message)
        local img = clip.image.load(out)
        -- 2 columns of cells at least 200 px wide; 2 rows of 64 px thumbnails plus text
        assert.equal(400, img.width)
        assert.is_true(img.height > 2 * 64)
        assert.equal("RGB", img.mode)
    end)

    it("names bad output names and empty sheets", function()
        local ok, err = pcall(clip.zeroshot.contact_sheet, tmp .. "/x.gif",
            {{image = images[1], top = {}}})
        assert.is_false(ok)
        assert.matches("must end in .png, .jpg, .jpeg or .webp", err)
        ok, err = pcall(clip.zeroshot.contact_sheet, tmp .. "/y.png", {{image = "/nope.png"}})
        assert.is_false(ok)
        assert.matches("none of the 1 images could be drawn", err)
    end)
end)
