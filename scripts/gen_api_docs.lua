-- Writes the API reference (docs/api.md) from the doc comments of the Lua sources: the `---`
-- comment above each public function, as `clip.help` / `?name` shows it.
--
--   clipl run scripts/gen_api_docs.lua [OUT.md]      (default: docs/api.md of this checkout)
--
-- Covered: every function of `clip` (tensor functions once, as methods), every module table of
-- `clip` (clip.zeroshot, clip.index, clip.image, ...), and the methods of the classes (Tensor,
-- Model, Classifier, Index, Image, Tokenizer, the background decoding job). Indented lines of a
-- doc comment become a ```lua norun block (fragments); the EXAMPLES below are complete scripts,
-- written as ```lua blocks that tests/spec/docs_spec.lua runs (with "ViT-B/32" a stand-in model
-- and photos/ holding ../shared/clip's images).
local clip = require "clipl"
local tensor = require "clipl.tensor"
local help = require "clipl.help"

local out_path = arg and arg[1]
if not out_path then
    local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "scripts"
    out_path = here .. "/../docs/api.md"
end

local MODEL = 'local clip = require "clipl"\nlocal model = clip.load("ViT-B/32")\n'

local EXAMPLES = {
    ["clip.load"] = MODEL .. [[
print(model)                                   -- architecture, source, parameters, dtype
print(model.input_resolution, model.context_length)]],
    ["clip.available_models"] = [[
local clip = require "clipl"
print(table.concat(clip.available_models(), ", "))]],
    ["clip.build_model"] = [[
local clip = require "clipl"
local model = clip.build_model("ViT-B/32", {seed = 1})   -- seeded weights, for tests and benches
print(model:info().parameters)]],
    ["clip.model_num_params"] = [[
local clip = require "clipl"
print(clip.model_num_params("ViT-B/32"))                 -- 151277313]],
    ["clip.tokenize"] = [[
local clip = require "clipl"
local tokens = clip.tokenize({"a diagram", "a dog"})
print(tokens:size(1), tokens:size(2))                    -- 2 77]],
    ["clip.tokenizer"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
print(table.concat(tok:encode("a photo of a dog"), " "))  -- 320 1125 539 320 1929]],
    ["clip.preprocess"] = MODEL .. [[
local x = clip.preprocess(clip.image.load("photos/chelsea.png"), model.input_resolution)
print(table.concat(x:size(), " x "))                   -- 3 x R x R]],
    ["clip.preprocess_batch"] = MODEL .. [[
local batch, bad = clip.preprocess_batch({"photos/CLIP.png", "missing.jpg"},
    model.input_resolution, {skip_bad = true})
print(batch:size(1), #bad, bad[1].path)                 -- 2 1 missing.jpg]],
    ["clip.preprocess_batch_start"] = MODEL .. [[
local job = clip.preprocess_batch_start({"photos/CLIP.png", "photos/coins.png"},
    model.input_resolution)
-- ... encode something else meanwhile ...
local images, bad = job:wait()
print(model:encode_image(images):size(1), #bad)         -- 2 0]],
    ["clip.image.load"] = [[
local clip = require "clipl"
local img = clip.image.load("photos/grace_hopper.jpg")
print(img, img.width, img.height, img.mode)]],
    ["clip.save_safetensors"] = [[
local clip = require "clipl"
clip.save_safetensors("t.safetensors", {x = clip.ones({2, 3})}, {note = "example"})
local t, meta = clip.load_safetensors("t.safetensors")
print(t.x:sum():item(), meta.note)                      -- 6 example]],
    ["clip.zeroshot.classifier"] = MODEL .. [[
local clf = clip.zeroshot.classifier(model, {"a diagram", "a cat", "coins"}, "ensemble")
local probs = clf:classify(clip.preprocess_batch({"photos/CLIP.png", "photos/chelsea.png"},
    model.input_resolution))
print(probs)                                            -- 2 x 3, rows sum to 1]],
    ["clip.zeroshot.templates"] = [[
local clip = require "clipl"
print(#clip.zeroshot.templates("ensemble"), clip.zeroshot.templates("simple")[1])
local f = io.open("mine.txt", "w"); f:write("a photo of a {}.\n# comment\na sketch of a {}.\n")
f:close()
print(table.concat(clip.zeroshot.templates("mine.txt"), " | "))]],
    ["clip.zeroshot.template_sets"] = [[
local clip = require "clipl"
print(table.concat(clip.zeroshot.template_sets(), ", "))   -- ensemble, simple]],
    ["clip.zeroshot.tokenize"] = MODEL .. [[
local tokens = model:tokenize({"a photo of a cat"}, {truncate = true})
print(tokens:size(2), tokens:get(1, 1))                 -- 77 49406]],
    ["clip.zeroshot.tokenizer_of"] = MODEL .. [[
local tok = clip.zeroshot.tokenizer_of(model)
print(tok, tok:decode(tok:encode("a dog")))]],
    ["clip.zeroshot.normalize"] = [[
local clip = require "clipl"
local x = clip.zeroshot.normalize(clip.tensor{{3, 4}, {1, 0}})
print(x)                                                -- 0.6 0.8 / 1 0]],
    ["clip.zeroshot.logit_scale"] = MODEL .. [[
print(clip.zeroshot.logit_scale(model))                 -- exp(logit_scale), 100 for OpenAI's]],
    ["clip.zeroshot.fingerprint"] = MODEL .. [[
print(clip.zeroshot.fingerprint(model))                 -- 64 hex digits]],
    ["clip.zeroshot.cache_dir"] = [[
local clip = require "clipl"
print(clip.zeroshot.cache_dir())]],
    ["clip.zeroshot.contact_sheet"] = [[
local clip = require "clipl"
local bad = clip.zeroshot.contact_sheet("sheet.png", {
    {image = "photos/chelsea.png",
        top = {{label = "cat", prob = 0.9}, {label = "dog", prob = 0.1}}},
    {image = "photos/coins.png", top = {{label = "coins", prob = 0.6}}},
})
print(clip.image.load("sheet.png"), #bad)]],
    ["Classifier:classify"] = MODEL .. [[
local clf = clip.zeroshot.classifier(model, {"cat", "dog"})
local images = clip.preprocess_batch({"photos/chelsea.png"}, model.input_resolution)
print(clf:classify(images))                             -- 1 x 2
print(clf:classify(model:encode_image(images)))         -- the same from image features]],
    ["Classifier:topk"] = MODEL .. [[
local clf = clip.zeroshot.classifier(model, {"cat", "dog", "coins"})
local images = clip.preprocess_batch({"photos/coins.png"}, model.input_resolution)
for _, hit in ipairs(clf:topk(images, 2)[1]) do print(hit.label, hit.prob, hit.index) end]],
    ["Classifier:logits"] = MODEL .. [[
local clf = clip.zeroshot.classifier(model, {"cat", "dog"})
print(clf:logits(clip.preprocess_batch({"photos/chelsea.png"}, model.input_resolution)))]],
    ["clip.index.open"] = MODEL .. [[
local idx = clip.index.open("api-index.safetensors", {dtype = "f16"})
local paths = {"photos/CLIP.png", "photos/coins.png"}
idx:add(paths, model:encode_image(clip.preprocess_batch(paths, model.input_resolution)))
idx:save()
print(clip.index.open("api-index.safetensors"):size())  -- 2]],
    ["Index:add"] = MODEL .. [[
local idx = clip.index.open("add.safetensors")
local paths = {"photos/CLIP.png", "photos/coins.png"}
local emb = model:encode_image(clip.preprocess_batch(paths, model.input_resolution))
print(idx:add(paths, emb), idx:add(paths, emb))         -- 2 0: nothing is added twice]],
    ["Index:search"] = MODEL .. [[
local idx = clip.index.open("search.safetensors")
local paths = {"photos/CLIP.png", "photos/coins.png", "photos/chelsea.png"}
idx:add(paths, model:encode_image(clip.preprocess_batch(paths, model.input_resolution)))
for _, h in ipairs(idx:search(model:encode_text(model:tokenize({"a cat"})), 2)) do
    print(h.score, h.path)
end]],
    ["Index:duplicates"] = MODEL .. [[
local idx = clip.index.open("dups.safetensors")
local paths = {"photos/CLIP.png", "photos/coins.png"}
local emb = model:encode_image(clip.preprocess_batch(paths, model.input_resolution))
idx:add({"a.png", "b.png", "c.png"}, clip.cat({emb, emb:narrow(1, 1, 1)}, 1))
for _, d in ipairs(idx:duplicates(0.999)) do print(d.a, d.b, d.score) end   -- a.png c.png 1]],
    ["Model:encode_image"] = MODEL .. [[
local images = clip.preprocess_batch({"photos/CLIP.png"}, model.input_resolution)
local emb, feats = model:encode_image(images, {features = {-1}})
print(emb:size(2), #feats)]],
    ["Model:encode_text"] = MODEL .. [[
local emb = model:encode_text(model:tokenize({"a diagram", "a dog"}))
print(emb:size(1), emb:size(2))]],
    ["Model:logits"] = MODEL .. [[
local images = clip.preprocess_batch({"photos/CLIP.png"}, model.input_resolution)
local logits_per_image = model:logits(images, model:tokenize({"a diagram", "a dog"}))
print(logits_per_image:softmax(-1))]],
    ["Model:info"] = MODEL .. [[
local info = model:info()
print(info.architecture, info.embed_dim, info.parameters)]],
    ["Model:named_parameters"] = MODEL .. [[
local n = 0
for name, p in model:named_parameters("visual.") do n = n + p:numel() end
print("visual parameters:", n)]],
    ["Job:wait"] = [[
local clip = require "clipl"
local job = clip.preprocess_batch_start({"photos/coins.png", "nope.png"}, 224, {skip_bad = true})
local images, bad = job:wait()
print(images:size(1), bad[1].path, job:done())          -- 2 nope.png true]],
    ["Tensor.softmax"] = [[
local clip = require "clipl"
print(clip.tensor{{1, 2, 3}}:softmax(-1))]],
    ["Tensor.norm"] = [[
local clip = require "clipl"
print(clip.tensor{{3, 4}, {6, 8}}:norm(2, -1))           -- 5 10]],
    ["Tensor.topk"] = [[
local clip = require "clipl"
local values, indices = clip.tensor{0.1, 0.7, 0.2}:topk(2, 1)
print(values, indices)                                  -- 0.7 0.2 / 2 3]],
    ["Tensor.matmul"] = [[
local clip = require "clipl"
print(clip.tensor{{1, 2}}:matmul(clip.tensor{{3}, {4}}))   -- 11]],
    ["clip.tensor"] = [[
local clip = require "clipl"
local t = clip.tensor({{1, 2}, {3, 4}}, "f32")
print(t, t:size(1), t[2][1])]],
}

-- ---- examples of the rest: clip.*, the modules, tensor methods (keys Tensor.name), classes ----

local C = 'local clip = require "clipl"\n'
local MORE = {
    -- clip.*
    ["clip.act_id"] = C .. [[
print(clip.act_id("relu") ~= clip.act_id("gelu"), clip.act_id(nil))   -- true 0]],
    ["clip.arange"] = C .. [[
print(clip.arange(5))                                   -- 0 1 2 3 4
print(clip.arange(1, 2, 0.25):totable()[4])             -- 1.75]],
    ["clip.autograd_live_nodes"] = C .. [[
local x = clip.tensor{1, 2}:requires_grad_()
local y = (x * x):sum()
print(clip.autograd_live_nodes() > 0)                   -- true: y's history is alive
y:backward()
print(x.grad)                                           -- 2 4]],
    ["clip.available_downloads"] = C .. [[
local names = clip.available_downloads()
print(#names, names[1])                                 -- registry order, no download]],
    ["clip.cache_dir"] = C .. [[
print(clip.cache_dir())                                 -- $CLIPL_CACHE, else ~/.cache/clipl]],
    ["clip.cat"] = C .. [[
local t = clip.cat({clip.ones({1, 2}), clip.zeros({2, 2})}, 1)
print(t:size(1), t:size(2), t:sum():item())             -- 3 2 2]],
    ["clip.cdim"] = C .. [[
print(clip.cdim(1), clip.cdim(-1))                      -- 0 -1: C dims
print(pcall(clip.cdim, 0))                              -- false ... dim 0]],
    ["clip.conv2d_prepare"] = C .. [[
local w, b = clip.randn({4, 3, 3, 3}, {seed = 1}), clip.zeros({4})
local x = clip.randn({1, 3, 8, 8}, {seed = 2})
local cw = clip.conv2d_prepare(w, b, {padding = 1, dtype = "f32"})
local diff = (clip.conv2d(x, cw) - x:conv2d(w, b, {padding = 1})):abs():max():item()
print(diff < 1e-4)                                      -- true]],
    ["clip.default_generator"] = C .. [[
clip.manual_seed(7)
local a = clip.rand({3}, {generator = clip.default_generator()})
clip.manual_seed(7)
print(clip.rand({3}):eq(a):sum():item())                -- 3: the same numbers]],
    ["clip.default_tokenizer"] = C .. [[
local tok = clip.default_tokenizer()
print(table.concat(tok:encode("a dog"), " "))           -- 320 1929]],
    ["clip.dnnl_cache_clear"] = C .. [[
print(clip.tensor{{1, 2}}:matmul(clip.tensor{{3}, {4}}):item())   -- 11
clip.dnnl_cache_clear()
print(clip.dnnl_cache_stats().entries)                  -- 0]],
    ["clip.dnnl_cache_stats"] = C .. [[
local a = clip.ones({4, 4})
for _ = 1, 3 do a:matmul(a) end
local s = clip.dnnl_cache_stats()
print(s.entries, s.hits, s.misses)]],
    ["clip.download"] = C .. [[
-- Downloading needs the network; this shows where clip.download("ViT-B/32") would put it.
local e = clip.registry_entry("ViT-B/32")
print(clip.cache_dir() .. "/" .. e.file, e.sha256)]],
    ["clip.download_url"] = C .. [[
-- Downloading needs the network (not run here):
--   clip.download_url("https://example.com/f.pt", "f.pt", sha256_hex)
-- What runs offline: the checks made before any connection.
local ok, err = pcall(clip.download_url, "ftp://example.com/f.pt", "f.pt")
print(ok, err)                 -- false ... url must start with http:// or https://]],
    ["clip.dtype_id"] = C .. [[
print(clip.dtype_id("f32"), clip.dtype_id("bf16"))      -- 0 1]],
    ["clip.empty"] = C .. [[
local t = clip.empty({2, 3}, "f32"):fill(0.5)
print(t:sum():item())                                   -- 3]],
    ["clip.enable_grad"] = C .. [[
clip.no_grad(function()
    print(clip.is_grad_enabled())                       -- false
    clip.enable_grad(function() print(clip.is_grad_enabled()) end)   -- true
end)]],
    ["clip.fold_batch_norm"] = C .. [[
local w, b = clip.randn({2, 3, 1, 1}, {seed = 1}), clip.zeros({2})
local mean, var = clip.tensor{0.5, -1}, clip.tensor{2, 0.5}
local gamma, beta = clip.tensor{1, 2}, clip.tensor{0, 1}
local w2, b2 = clip.fold_batch_norm(w, b, mean, var, gamma, beta, 1e-5)
local x = clip.randn({1, 3, 4, 4}, {seed = 2})
local ref = x:conv2d(w, b):batch_norm(mean, var, gamma, beta, 1e-5)
print((x:conv2d(w2, b2) - ref):abs():max():item() < 1e-4)   -- true]],
    ["clip.full"] = C .. [[
print(clip.full({2, 3}, 7, "i32"):sum():item())         -- 42]],
    ["clip.generator"] = C .. [[
local a = clip.rand({3}, {generator = clip.generator(42)})
local b = clip.rand({3}, {generator = clip.generator(42)})
print(a:eq(b):sum():item())                             -- 3]],
    ["clip.get_num_threads"] = C .. [[
print(clip.get_num_threads() >= 1)                      -- true]],
    ["clip.gradcheck"] = C .. [[
local x = clip.randn({3, 4}, {seed = 1}):requires_grad_()
print(clip.gradcheck(function(a) return a:tanh() * a end, {x}))   -- true]],
    ["clip.help"] = C .. [[
clip.help "t:softmax"                                   -- prints the doc comment
clip.help(clip.zeros)]],
    ["clip.is_grad_enabled"] = C .. [[
print(clip.is_grad_enabled())                           -- true
print(clip.no_grad(clip.is_grad_enabled))               -- false]],
    ["clip.is_linear_weights"] = C .. [[
local w = clip.randn({4, 3}, {seed = 1})
print(clip.is_linear_weights(w), clip.is_linear_weights(clip.linear_prepare(w)))   -- false true]],
    ["clip.is_tensor"] = C .. [[
print(clip.is_tensor(clip.zeros({1})), clip.is_tensor({1}))   -- true false]],
    ["clip.linear_prepare"] = C .. [[
local w, b = clip.randn({4, 3}, {seed = 1}), clip.ones({4})
local x = clip.randn({2, 3}, {seed = 2})
local lw = clip.linear_prepare(w, b, {dtype = "f32"})
print((x:linear(lw) - x:linear(w, b)):abs():max():item() < 1e-5)   -- true]],
    ["clip.live_bytes"] = C .. [[
local before = clip.live_bytes()
local t = clip.zeros({1024})
print(clip.live_bytes() - before >= 4096)               -- true
t:free()]],
    ["clip.load_npy"] = C .. [[
clip.save_npy("x.npy", clip.tensor({{1, 2}, {3, 4}}, "i32"))
local t = clip.load_npy("x.npy")
print(t:dtype(), t:sum():item())                        -- i32 10]],
    ["clip.load_safetensors"] = C .. [[
clip.save_safetensors("w.safetensors", {a = clip.ones({2}), b = clip.zeros({3})}, {k = "v"})
local t, meta, info = clip.load_safetensors("w.safetensors")
print(t.a:numel(), t.b:numel(), meta.k, info.format)    -- 2 3 v safetensors]],
    ["clip.load_weights"] = C .. [[
clip.save_safetensors("w.safetensors", {x = clip.full({2}, 3)})
local t, _, info = clip.load_weights("w.safetensors")
print(t.x:sum():item(), info.format)                    -- 6 safetensors]],
    ["clip.manual_seed"] = C .. [[
clip.manual_seed(1); local a = clip.randn({4})
clip.manual_seed(1); local b = clip.randn({4})
print(a:eq(b):sum():item())                             -- 4]],
    ["clip.model_config"] = C .. [[
local cfg = clip.model_config("ViT-B/32")
print(cfg.embed_dim, cfg.vision_patch_size, cfg.transformer_layers)   -- 512 32 12]],
    ["clip.model_from_tensors"] = C .. [[
local model = clip.load("ViT-B/32")                     -- the stand-in model of the docs tests
local m2 = clip.model_from_tensors(model:state_dict())
print(m2:info().parameters == model:info().parameters)  -- true]],
    ["clip.no_grad"] = C .. [[
local x = clip.ones({2}):requires_grad_()
local y = clip.no_grad(function() return x * 2 end)
print(y:grad_fn(), (x * 2):grad_fn())                   -- nil mul]],
    ["clip.ones"] = C .. [[
print(clip.ones({2, 3}))                                -- 2 x 3 of 1]],
    ["clip.peak_bytes"] = C .. [[
local t = clip.zeros({1000})
print(clip.peak_bytes() >= clip.live_bytes())           -- true
t:free()]],
    ["clip.rand"] = C .. [[
local t = clip.rand({1000}, {seed = 1, low = 2, high = 3})
print(t:min():item() >= 2, t:max():item() < 3)          -- true true]],
    ["clip.randn"] = C .. [[
local t = clip.randn({10000}, {seed = 1, mean = 5, std = 2})
print(string.format("%.1f", t:mean():item()))           -- 5.0 (about)]],
    ["clip.registry"] = C .. [[
local reg = clip.registry()
for _, e in ipairs(reg) do print(e.name, e.kind, e.file) end
print(reg["ViT-B/32"].sha256)]],
    ["clip.registry_entry"] = C .. [[
local e = clip.registry_entry("ViT-B-32")
print(e.name, e.kind, e.file)                           -- ViT-B/32 model ViT-B-32.pt]],
    ["clip.result_dtype"] = C .. [[
print(clip.result_dtype(clip.ones({1}, "i32"), clip.ones({1}, "f32")))   -- f32]],
    ["clip.save_npy"] = C .. [[
clip.save_npy("a.npy", clip.arange(6):view(2, 3))
print(clip.load_npy("a.npy"):size()[2])                 -- 3]],
    ["clip.set_gc_soft_limit"] = C .. [[
clip.set_gc_soft_limit(256 * 1024 * 1024)   -- collect garbage tensors past 256 MB
print(clip.zeros({1000}):numel())                       -- 1000]],
    ["clip.set_grad_enabled"] = C .. [[
local prev = clip.set_grad_enabled(false)
print(prev, clip.is_grad_enabled())                     -- true false
clip.set_grad_enabled(prev)]],
    ["clip.set_num_threads"] = C .. [[
clip.set_num_threads(1)
print(clip.get_num_threads())                           -- 1]],
    ["clip.sha256_file"] = C .. [[
local f = io.open("abc.txt", "wb"); f:write("abc"); f:close()
print(clip.sha256_file("abc.txt"))
-- ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad]],
    ["clip.sizes_of"] = C .. [[
print(#clip.sizes_of({2, 3}), #clip.sizes_of(2, 3, 4))  -- 2 3]],
    ["clip.stack"] = C .. [[
local t = clip.stack({clip.tensor{1, 2}, clip.tensor{3, 4}}, 2)
print(t)                                                -- 1 3 / 2 4]],
    ["clip.tokenizer_for"] = C .. [[
local tok = clip.tokenizer_for(clip.cache_dir())        -- the vocabulary in the cache folder
print(tok:token_id("<|startoftext|>"))                  -- 49406]],
    ["clip.where"] = C .. [[
local x = clip.tensor{-1, 2, -3}
print(clip.where(x:gt(0), x, 0))                        -- 0 2 0]],
    ["clip.zeros"] = C .. [[
print(clip.zeros({2, 3}, "f32"):sum():item())           -- 0]],

    -- clip.bpe
    ["clip.bpe.learn"] = C .. [[
local vocab = clip.bpe.learn({"low lower lowest", "newer wider"}, {merges = 10})
print(#vocab.merges, vocab.merges[1], vocab.vocab_size)   -- up to 10 merges, "a b" strings
vocab:save("learned.txt.gz")                            -- usable by clip.tokenizer]],
    ["clip.bpe.learn_file"] = C .. [[
local f = io.open("texts.txt", "w"); f:write("a red square\na blue circle\na red circle\n")
f:close()
local vocab = clip.bpe.learn_file("texts.txt", {merges = 5})
print(table.concat(vocab.merges, " | "))]],
    ["clip.bpe.read_texts"] = C .. [[
local f = io.open("caps.tsv", "w"); f:write("path\tcaption\na.png\ta cat\nb.png\ta dog\n")
f:close()
print(table.concat(clip.bpe.read_texts("caps.tsv"), " | "))   -- a cat | a dog]],

    -- clip.image
    ["clip.image.from_bytes"] = C .. [[
local f = io.open("photos/coins.png", "rb"); local bytes = f:read("*a"); f:close()
local img = clip.image.from_bytes(bytes)
print(img.width, img.height)                            -- 384 303]],
    ["clip.image.from_pixels"] = C .. [[
local px = clip.zeros({2, 3, 3}, "u8")                  -- H x W x RGB
local img = clip.image.from_pixels(px)
print(img.width, img.height, img.mode)                  -- 3 2 RGB]],
    ["clip.image.get_pixel_limit"] = C .. [[
print(clip.image.get_pixel_limit())                     -- 178956970]],
    ["clip.image.set_pixel_limit"] = C .. [[
clip.image.set_pixel_limit(1000)
print(pcall(clip.image.load, "photos/coins.png"))       -- false ... too many pixels
clip.image.set_pixel_limit(nil)
print(clip.image.get_pixel_limit())                     -- 178956970]],

    -- clip.nn
    ["clip.nn.clip_loss"] = C .. [[
local img = clip.randn({4, 8}, {seed = 1})
local txt = img + clip.randn({4, 8}, {seed = 2}) * 0.1  -- matching pairs
print(clip.nn.clip_loss(img, txt, math.log(100)):item() < 0.1)   -- true]],
    ["clip.nn.cross_entropy"] = C .. [[
local logits = clip.tensor{{0, 0}, {10, 0}}
local loss = clip.nn.cross_entropy(logits, clip.tensor({1, 1}, "i64"), {reduction = "none"})
print(string.format("%.4f %.4f", loss:get(1), loss:get(2)))   -- 0.6931 0.0000]],
    ["clip.nn.mse_loss"] = C .. [[
print(clip.nn.mse_loss(clip.tensor{1, 2}, clip.tensor{2, 4}):item())   -- 2.5]],
    ["clip.nn.normalize"] = C .. [[
print(clip.nn.normalize(clip.tensor{{3, 4}}))           -- 0.6 0.8]],

    -- clip.optim
    ["clip.optim.AdamW"] = C .. [[
local w = clip.tensor{1, 2}:requires_grad_()
local opt = clip.optim.AdamW({w}, {lr = 0.1, weight_decay = 0})
for _ = 1, 50 do
    opt:zero_grad(); (w * w):sum():backward(); opt:step()
end
print(w:abs():max():item() < 0.5)                       -- true: towards 0]],
    ["clip.optim.SGD"] = C .. [[
local w = clip.tensor{4}:requires_grad_()
local opt = clip.optim.SGD({w}, {lr = 0.25})
opt:zero_grad(); (w * w):sum():backward(); opt:step()
print(w:item())                                         -- 2: 4 - 0.25 * 8]],
    ["clip.optim.clip_grad_norm"] = C .. [[
local w = clip.zeros({2}):requires_grad_()
w:set_grad(clip.tensor{3, 4})
print(clip.optim.clip_grad_norm({w}, 1), w.grad:norm():item() < 1.0001)   -- 5 true]],
    ["clip.optim.cosine"] = C .. [[
local w = clip.zeros({1}):requires_grad_()
local opt = clip.optim.SGD({w}, {lr = 1})
local sched = clip.optim.cosine(opt, {warmup = 2, steps = 10})
for s = 0, 3 do print(s, opt.groups[1].lr); sched:step() end   -- 0.5, 1, 1, 0.96...]],
    ["clip.optim.freeze"] = C .. [[
local model = clip.load("ViT-B/32")
local params = model:state_dict()                       -- name -> tensor
for _, p in pairs(params) do p:requires_grad_() end     -- train everything ...
local n = clip.optim.freeze(params, "^visual%.")        -- ... but the image tower (LiT)
print(n > 0, params["visual.proj"]:requires_grad(), params["text_projection"]:requires_grad())
-- true false true]],
    ["clip.optim.select"] = C .. [[
local model = clip.load("ViT-B/32")
local sel = clip.optim.select(model:state_dict(), "^ln_final%.")
for name in pairs(sel) do print(name) end               -- ln_final.weight, ln_final.bias]],

    -- clip.shapes
    ["clip.shapes.batch"] = C .. [[
local images, captions = clip.shapes.batch(2, {seed = 1, size = 32})
print(table.concat(images:size(), " x "), captions[1])  -- 2 x 3 x 32 x 32 ...]],
    ["clip.shapes.bbox"] = C .. [[
local scene = clip.shapes.sample(1, {seed = 1})[1]
print(table.concat(clip.shapes.bbox(scene.items[1], 64), " "))   -- x0 y0 x1 y1]],
    ["clip.shapes.caption"] = C .. [[
local scene = clip.shapes.sample(1, {seed = 1})[1]
print(scene.caption, "|", clip.shapes.caption(scene, 1))]],
    ["clip.shapes.generate"] = C .. [[
local summary = clip.shapes.generate({out = "shapes-data", n = 4, size = 32, seed = 1})
print(summary.train, io.open("shapes-data/train.tsv") ~= nil)   -- 4 true]],
    ["clip.shapes.grid"] = C .. [[
local grid = clip.shapes.grid(clip.shapes.sample(6, {seed = 1, size = 32}), 3, 32)
print(table.concat(grid:size(), " x "))                 -- 64 x 96 x 3]],
    ["clip.shapes.labels"] = C .. [[
local labels = clip.shapes.labels()
print(#labels.colours, #labels.shapes, labels.colours[1], labels.shapes[1])]],
    ["clip.shapes.normalize"] = C .. [[
local px = clip.shapes.render(clip.shapes.sample(2, {seed = 1, size = 32}), 32)
print(table.concat(clip.shapes.normalize(px):size(), " x "))   -- 2 x 3 x 32 x 32]],
    ["clip.shapes.render"] = C .. [[
local px = clip.shapes.render(clip.shapes.sample(2, {seed = 1, size = 32}), 32)
print(px:dtype(), table.concat(px:size(), " x "))       -- u8 2 x 32 x 32 x 3]],
    ["clip.shapes.sample"] = C .. [[
local scenes = clip.shapes.sample(3, {seed = 1})
for _, s in ipairs(scenes) do print(s.caption, s.items[1].colour, s.items[1].shape) end]],
    ["clip.shapes.save"] = C .. [[
local px = clip.shapes.render(clip.shapes.sample(1, {seed = 1, size = 32}), 32)
clip.shapes.save(px:select(1, 1), "shape.png")
print(clip.image.load("shape.png"))                     -- clipl.Image(32x32 RGB)]],
}
local function T(code) return C .. code end
local TM = {
    abs = [[print(clip.tensor{-1, 2, -3}:abs())                    -- 1 2 3]],
    abs_ = [[local t = clip.tensor{-1, 2}
t:abs_()
print(t)                                                -- 1 2 (in place)]],
    add = [[local a = clip.tensor{1, 2}
print(a:add(clip.tensor{10, 20}), a:add(1), a + 1)      -- 11 22 / 2 3 / 2 3
print(a:add(clip.tensor{10, 20}, 2))                    -- 21 42: a + 2 * b]],
    add_ = [[local a = clip.tensor{1, 2}
a:add_(clip.tensor{10, 20})
print(a)                                                -- 11 22]],
    argmax = [[local t = clip.tensor{{1, 9, 3}, {7, 2, 5}}
print(t:argmax(2))                                      -- 2 1 (1-based)
print(t:argmax():item())                                -- 2: flat index]],
    argmin = [[print(clip.tensor{{1, 9, 3}, {7, 2, 5}}:argmin(2))  -- 1 2]],
    attention = [[local q = clip.randn({1, 4, 8}, {seed = 1})
local k, v = clip.randn({1, 6, 8}, {seed = 2}), clip.randn({1, 6, 8}, {seed = 3})
local out, probs = q:attention(k, v, {probs = true})
print(table.concat(out:size(), " x "), probs:sum(-1):get(1, 1))   -- 1 x 4 x 8  1]],
    avg_pool2d = [[local x = clip.arange(16):view(1, 1, 4, 4)
print(x:avg_pool2d(2, 2))                               -- 2.5 4.5 / 10.5 12.5]],
    backward = [[local x = clip.tensor{1, 2, 3}:requires_grad_()
local y = (x * x):sum()
y:backward()
print(x.grad)                                           -- 2 4 6]],
    batch_norm = [[local x = clip.ones({1, 2, 2, 2})
local y = x:batch_norm(clip.tensor{1, 0}, clip.tensor{1, 4}, clip.tensor{1, 1},
    clip.tensor{0, 0}, 0)
print(y:get(1, 1, 1, 1), y:get(1, 2, 1, 1))             -- 0 0.5]],
    bfloat16 = [[local t = clip.tensor{1.5, 3}:bfloat16()
print(t:dtype(), t:get(1))                              -- bf16 1.5]],
    byte = [[print(clip.tensor{1.7, 255}:byte():dtype())          -- u8]],
    clamp = [[print(clip.tensor{-2, 0.5, 3}:clamp(0, 1))           -- 0 0.5 1]],
    clamp_ = [[local t = clip.tensor{-2, 0.5, 3}
t:clamp_(0, 1)
print(t)                                                -- 0 0.5 1]],
    clone = [[local a = clip.tensor{1, 2}
local b = a:clone()
b:fill(0)
print(a:sum():item(), b:sum():item())                   -- 3 0]],
    contiguous = [[local t = clip.arange(6):view(2, 3):t()
print(t:isContiguous(), t:contiguous():isContiguous())  -- false true]],
    conv2d = [[local x = clip.ones({1, 1, 3, 3})
local w = clip.ones({1, 1, 2, 2})
print(x:conv2d(w, nil, {padding = 0}))                  -- 4 4 / 4 4]],
    copy = [[local t = clip.zeros({2, 2})
t:copy(clip.tensor{1, 2})                               -- broadcast along rows
print(t)                                                -- 1 2 / 1 2]],
    data = [[local t = clip.tensor{1, 2, 3}
local p = t:data()                                      -- float * for FFI loops (0-based)
p[1] = 20
print(t)                                                -- 1 20 3]],
    detach = [[local x = clip.ones({2}):requires_grad_()
local y = (x * 2):detach()
print(y:grad_fn(), y:requires_grad())                   -- nil false]],
    dim = [[print(clip.zeros({2, 3, 4}):dim())                    -- 3]],
    div = [[print(clip.tensor{2, 4}:div(2), clip.tensor{2, 4} / clip.tensor{1, 4})   -- 1 2 / 2 1]],
    div_ = [[local t = clip.tensor{2, 4}
t:div_(2)
print(t)                                                -- 1 2]],
    dtype = [[print(clip.zeros({1}):dtype(), clip.zeros({1}, "i64"):dtype())   -- f32 i64]],
    eltwise = [[print(clip.tensor{-1, 2}:eltwise("relu"))              -- 0 2]],
    eltwise_ = [[local t = clip.tensor{-1, 2}
t:eltwise_("relu")
print(t)                                                -- 0 2]],
    embedding = [[local weight = clip.tensor{{1, 1}, {2, 2}, {3, 3}}
print(clip.tensor({3, 1}, "i64"):embedding(weight))     -- 3 3 / 1 1]],
    eq = [[print(clip.tensor{1, 2, 3}:eq(2))                     -- 0 1 0]],
    exp = [[print(clip.tensor{0, 1}:exp())                        -- 1 2.7183]],
    exp_ = [[local t = clip.tensor{0}
t:exp_()
print(t:item())                                         -- 1]],
    expand = [[local t = clip.tensor{{1}, {2}}:expand(2, 3)
print(t)                                                -- 1 1 1 / 2 2 2]],
    expand_as = [[local t = clip.tensor{1, 2}:expand_as(clip.zeros({3, 2}))
print(table.concat(t:size(), " x "))                    -- 3 x 2]],
    fill = [[print(clip.zeros({2, 2}):fill(7):sum():item())        -- 28]],
    flatten = [[print(clip.zeros({2, 3, 4}):flatten():size(1))        -- 24]],
    float = [[print(clip.tensor({1, 2}, "i32"):float():dtype())     -- f32]],
    free = [[local t = clip.zeros({1000})
print(t:free())                                         -- true: the memory is given back now
print(t:numel())                                        -- 0: the handle is now empty]],
    gather = [[local t = clip.tensor{{1, 2}, {3, 4}}
print(t:gather(2, clip.tensor({{2}, {1}}, "i64")))      -- 2 / 3]],
    ge = [[print(clip.tensor{1, 2, 3}:ge(2))                     -- 0 1 1]],
    gelu = [[print(clip.tensor{0, 1}:gelu())                       -- 0 0.8413]],
    gelu_ = [[local t = clip.tensor{0, 1}
t:gelu_()
print(t)                                                -- 0 0.8413]],
    gelu_tanh = [[print(clip.tensor{0, 1}:gelu_tanh())                  -- 0 0.8412]],
    gelu_tanh_ = [[local t = clip.tensor{0, 1}
t:gelu_tanh_()
print(t)                                                -- 0 0.8412]],
    get = [[local t = clip.tensor{{1, 2}, {3, 4}}
print(t:get(2, 1))                                      -- 3]],
    grad_fn = [[local x = clip.ones({2, 2}):requires_grad_()
print(x:grad_fn(), x:matmul(x):grad_fn())               -- nil matmul]],
    gt = [[print(clip.tensor{1, 2, 3}:gt(2))                     -- 0 0 1]],
    half = [[print(clip.tensor{1.5}:half():dtype())                 -- f16]],
    index_select = [[local t = clip.tensor{{1, 2}, {3, 4}, {5, 6}}
print(t:index_select(1, clip.tensor({3, 1}, "i64")))    -- 5 6 / 1 2]],
    int = [[print(clip.tensor{1.9, -1.9}:int())                   -- 1 -1]],
    isContiguous = [[local t = clip.zeros({2, 3})
print(t:isContiguous(), t:t():isContiguous())           -- true false]],
    is_leaf = [[local x = clip.ones({2}):requires_grad_()
print(x:is_leaf(), (x * 2):is_leaf())                   -- true false]],
    item = [[print(clip.tensor{{1, 2}, {3, 4}}:sum():item())        -- 10]],
    layer_norm = [[local y = clip.tensor{{1, 2, 3}}:layer_norm({3}, nil, nil, 1e-5)
print(y)                                                -- -1.2247 0 1.2247]],
    le = [[print(clip.tensor{1, 2, 3}:le(2))                     -- 1 1 0]],
    linear = [[local x = clip.tensor{{1, 2}}
local w, b = clip.tensor{{1, 0}, {1, 1}, {0, 2}}, clip.tensor{0, 0, 1}
print(x:linear(w, b))                                   -- 1 3 5]],
    log = [[local y = clip.tensor{math.exp(1), math.exp(2)}:log()
print(string.format("%.4f %.4f", y:get(1), y:get(2)))   -- 1.0000 2.0000]],
    log_ = [[local t = clip.tensor{100}
t:log_()
print(string.format("%.4f", t:item()))                  -- 4.6052]],
    log_softmax = [[print(clip.tensor{{0, 0}}:log_softmax(-1))           -- -0.6931 -0.6931]],
    long = [[print(clip.tensor{1, 2}:long():dtype())                -- i64]],
    lt = [[print(clip.tensor{1, 2, 3}:lt(2))                     -- 1 0 0]],
    masked_fill = [[local t = clip.tensor{1, 2, 3}
print(t:masked_fill(t:gt(1), -1))                       -- 1 -1 -1]],
    masked_fill_ = [[local t = clip.tensor{1, 2, 3}
t:masked_fill_(t:gt(1), 0)
print(t)                                                -- 1 0 0]],
    max = [[local t = clip.tensor{{1, 9}, {7, 2}}
local v, i = t:max(2)
print(t:max():item(), v, i)                             -- 9 / 9 7 / 2 1]],
    max_pool2d = [[local x = clip.arange(16):view(1, 1, 4, 4)
print(x:max_pool2d(2))                                  -- 5 7 / 13 15]],
    maximum = [[print(clip.tensor{1, 5}:maximum(clip.tensor{3, 2}))  -- 3 5]],
    mean = [[local t = clip.tensor{{1, 2}, {3, 4}}
print(t:mean():item(), t:mean(2))                       -- 2.5 / 1.5 3.5]],
    min = [[local v, i = clip.tensor{{1, 9}, {7, 2}}:min(2)
print(v, i)                                             -- 1 2 / 1 2]],
    minimum = [[print(clip.tensor{1, 5}:minimum(clip.tensor{3, 2}))  -- 1 2]],
    mul = [[print(clip.tensor{1, 2}:mul(3), clip.tensor{1, 2} * clip.tensor{3, 4})   -- 3 6 / 3 8]],
    mul_ = [[local t = clip.tensor{1, 2}
t:mul_(3)
print(t)                                                -- 3 6]],
    nElement = [[print(clip.zeros({2, 3}):nElement())                  -- 6]],
    narrow = [[print(clip.arange(1, 6):narrow(1, 2, 3))               -- 2 3 4]],
    ne = [[print(clip.tensor{1, 2, 3}:ne(2))                     -- 1 0 1]],
    neg = [[print(clip.tensor{1, -2}:neg(), -clip.tensor{3})      -- -1 2 / -3]],
    neg_ = [[local t = clip.tensor{1, -2}
t:neg_()
print(t)                                                -- -1 2]],
    normal_ = [[local t = clip.empty({10000}):normal_(3, 0.5, {seed = 1})
print(string.format("%.1f", t:mean():item()))           -- 3.0 (about)]],
    permute = [[local t = clip.zeros({2, 3, 4}):permute(3, 1, 2)
print(table.concat(t:size(), " x "))                    -- 4 x 2 x 3]],
    pow = [[print(clip.tensor{2, 3}:pow(2), clip.tensor{2, 3} ^ 2)   -- 4 9 / 4 9]],
    pow_ = [[local t = clip.tensor{2, 3}
t:pow_(2)
print(t)                                                -- 4 9]],
    quick_gelu = [[print(clip.tensor{0, 1}:quick_gelu())   -- 0 0.8458: x * sigmoid(1.702 x)]],
    quick_gelu_ = [[local t = clip.tensor{0, 1}
t:quick_gelu_()
print(t)                                                -- 0 0.8458]],
    radd = [[print(clip.tensor{1, 2}:radd(10), 10 + clip.tensor{1, 2})   -- 11 12 / 11 12]],
    rdiv = [[print(clip.tensor{1, 4}:rdiv(8), 8 / clip.tensor{1, 4})     -- 8 2 / 8 2]],
    relu = [[print(clip.tensor{-1, 2}:relu())                      -- 0 2]],
    relu_ = [[local t = clip.tensor{-1, 2}
t:relu_()
print(t)                                                -- 0 2]],
    requires_grad = [[local x = clip.ones({2})
print(x:requires_grad())                                -- false
print(x:requires_grad(true):requires_grad())            -- true]],
    requires_grad_ = [[local x = clip.ones({2}):requires_grad_()
print(x:requires_grad(), x:requires_grad_(false):requires_grad())   -- true false]],
    reshape = [[local t = clip.arange(6):view(2, 3):t():reshape(6)  -- copies: t() is not contiguous
print(table.concat(t:totable(), " "))                   -- 0 3 1 4 2 5]],
    rmul = [[print(clip.tensor{1, 2}:rmul(3), 3 * clip.tensor{1, 2})   -- 3 6 / 3 6]],
    rpow = [[print(clip.tensor{1, 3}:rpow(2), 2 ^ clip.tensor{1, 3})   -- 2 8 / 2 8]],
    rsub = [[print(clip.tensor{1, 2}:rsub(10), 10 - clip.tensor{1, 2})   -- 9 8 / 9 8]],
    select = [[local t = clip.tensor{{1, 2}, {3, 4}}
print(t:select(1, 2), t:select(2, -1))                  -- 3 4 / 2 4]],
    set = [[local t = clip.zeros({2, 2})
t:set(5, 2, 1)                                          -- value, then the indices
print(t:get(2, 1))                                      -- 5]],
    set_grad = [[local x = clip.ones({2}):requires_grad_()
x:set_grad(clip.tensor{1, 2})
print(x.grad)                                           -- 1 2]],
    sigmoid = [[print(clip.tensor{0}:sigmoid():item())                -- 0.5]],
    sigmoid_ = [[local t = clip.tensor{0}
t:sigmoid_()
print(t:item())                                         -- 0.5]],
    silu = [[print(clip.tensor{0, 1}:silu())                       -- 0 0.7311]],
    size = [[local t = clip.zeros({2, 3})
print(t:size(1), t:size(-1), #t:size())                 -- 2 3 2]],
    softplus = [[print(clip.tensor{0}:softplus():item())               -- 0.6931]],
    softplus_ = [[local t = clip.tensor{0}
t:softplus_()
print(t:item())                                         -- 0.6931]],
    sqrt = [[print(clip.tensor{4, 9}:sqrt())                       -- 2 3]],
    sqrt_ = [[local t = clip.tensor{4, 9}
t:sqrt_()
print(t)                                                -- 2 3]],
    square = [[print(clip.tensor{-2, 3}:square())                    -- 4 9]],
    square_ = [[local t = clip.tensor{-2, 3}
t:square_()
print(t)                                                -- 4 9]],
    squeeze = [[local t = clip.zeros({1, 3, 1})
print(#t:squeeze():size(), #t:squeeze(1):size())        -- 1 2]],
    stride = [[local t = clip.zeros({2, 3})
print(table.concat(t:stride(), " "), t:t():stride(1))   -- 3 1  1]],
    sub = [[print(clip.tensor{5, 6}:sub(1), clip.tensor{5, 6} - clip.tensor{1, 2})   -- 4 5 / 4 4]],
    sub_ = [[local t = clip.tensor{5, 6}
t:sub_(1)
print(t)                                                -- 4 5]],
    sum = [[local t = clip.tensor{{1, 2}, {3, 4}}
print(t:sum():item(), t:sum(1), t:sum(2, {keepdim = true}))   -- 10 / 4 6 / 3 7 (2x1)]],
    swish = [[print(clip.tensor{1}:swish(1):item())   -- 0.7311: x * sigmoid(beta x)]],
    t = [[print(clip.tensor{{1, 2}, {3, 4}}:t())                -- 1 3 / 2 4]],
    tanh = [[print(clip.tensor{0}:tanh():item())                   -- 0]],
    tanh_ = [[local t = clip.tensor{0, 100}
t:tanh_()
print(t)                                                -- 0 1]],
    to = [[local t = clip.tensor{1.5, 2}:to("f16")
print(t:dtype(), t:to("i32"))                           -- f16 / 1 2]],
    totable = [[local tab = clip.tensor{{1, 2}, {3, 4}}:totable()
print(tab[2][1], #tab)                                  -- 3 2]],
    transpose = [[local t = clip.zeros({2, 3, 4}):transpose(1, 3)
print(table.concat(t:size(), " x "))                    -- 4 x 3 x 2]],
    type = [[print(clip.zeros({1}):type(), clip.zeros({1}, "i64"):type())
-- clipl.FloatTensor clipl.LongTensor]],
    uniform_ = [[local t = clip.empty({1000}):uniform_(-1, 1, {seed = 1})
print(t:min():item() >= -1, t:max():item() < 1)         -- true true]],
    unsqueeze = [[local t = clip.zeros({2, 3}):unsqueeze(2)
print(table.concat(t:size(), " x "))                    -- 2 x 1 x 3]],
    view = [[local t = clip.arange(6):view(2, 3)
print(t, t:view(-1, 2):size(1))                         -- 0 1 2 / 3 4 5, 3]],
    zero = [[print(clip.ones({2, 2}):zero():sum():item())          -- 0]],
    zero_grad = [[local x = clip.ones({2}):requires_grad_()
x:sum():backward()
x:zero_grad()
print(x.grad)                                           -- nil]],
}
for k, v in pairs(TM) do MORE["Tensor." .. k] = T(v) end
local M = 'local clip = require "clipl"\nlocal model = clip.load("ViT-B/32")\n'
local CLS = {
    ["Model:free"] = M .. [[
model:free()                                            -- gives the weights back now
print(pcall(model.encode_text, model, model:tokenize({"a dog"})))   -- false ...]],
    ["Model:logits_from_features"] = M .. [[
local img = model:encode_image(clip.preprocess_batch({"photos/coins.png"}, model.input_resolution))
local txt = model:encode_text(model:tokenize({"coins", "a cat"}))
local per_image, per_text = model:logits_from_features(img, txt)
print(table.concat(per_image:size(), " x "), table.concat(per_text:size(), " x "))
-- 1 x 2  2 x 1]],
    ["Model:parameter"] = M .. [[
local p = model:parameter("text_projection")
print(table.concat(p:size(), " x "))                    -- width x embed_dim]],
    ["Model:parameters"] = M .. [[
local params = model:parameters("ln_final.")
print(#params, params[1]:numel())                       -- 2 width]],
    ["Model:prepare"] = M .. [[
model:prepare()                                         -- pre-packs the weights for inference
print(model:encode_text(model:tokenize({"a dog"})):size(2))]],
    ["Model:set_parameter"] = M .. [[
local width = model:parameter("ln_final.bias"):size(1)
model:set_parameter("ln_final.bias", clip.ones({width}))
print(model:parameter("ln_final.bias"):mean():item())   -- 1]],
    ["Model:state_dict"] = M .. [[
local sd = model:state_dict()
clip.save_safetensors("model.safetensors", sd)
print(sd["logit_scale"]:numel(), clip.load("model.safetensors"):info().parameters ==
    model:info().parameters)                            -- 1 true]],
    ["Model:tokenize"] = M .. [[
local tokens = model:tokenize({"a dog", "a cat"})
print(tokens:size(1), tokens:size(2), tokens:get(1, 1))   -- 2 77 49406]],
    ["Index:embeddings"] = M .. [[
local idx = clip.index.open("emb.safetensors")
local paths = {"photos/CLIP.png", "photos/coins.png"}
idx:add(paths, model:encode_image(clip.preprocess_batch(paths, model.input_resolution)))
print(table.concat(idx:embeddings():size(), " x "))     -- 2 x embed_dim]],
    ["Index:has"] = M .. [[
local idx = clip.index.open("has.safetensors")
local paths = {"photos/coins.png"}
idx:add(paths, model:encode_image(clip.preprocess_batch(paths, model.input_resolution)))
print(idx:has("photos/coins.png"), idx:has("photos/CLIP.png"))   -- true false]],
    ["Index:save"] = M .. [[
local idx = clip.index.open("saved.safetensors")
local paths = {"photos/coins.png"}
idx:add(paths, model:encode_image(clip.preprocess_batch(paths, model.input_resolution)))
idx:save()
print(clip.index.open("saved.safetensors"):has("photos/coins.png"))   -- true]],
    ["Index:size"] = M .. [[
local idx = clip.index.open("size.safetensors")
print(idx:size())                                       -- 0
local paths = {"photos/CLIP.png", "photos/coins.png"}
idx:add(paths, model:encode_image(clip.preprocess_batch(paths, model.input_resolution)))
print(idx:size())                                       -- 2]],
    ["Job:done"] = [[
local clip = require "clipl"
local job = clip.preprocess_batch_start({"photos/coins.png"}, 64)
local images = job:wait()
print(job:done(), images:size(1))                       -- true 1]],
    ["Image:free"] = [[
local clip = require "clipl"
local img = clip.image.load("photos/coins.png")
img:free()                                              -- releases the pixels now
img:free()                                              -- safe to call twice
print(pcall(img.tensor, img))                           -- false ... (an error, not a crash)]],
    ["Image:resize"] = [[
local clip = require "clipl"
local small = clip.image.load("photos/coins.png"):resize(30, 40)
print(small.width, small.height)                        -- 30 40]],
    ["Image:size"] = [[
local clip = require "clipl"
local hw = clip.image.load("photos/coins.png"):size()
print(hw[1], hw[2])                                     -- 303 384: height, width]],
    ["Image:tensor"] = [[
local clip = require "clipl"
local px = clip.image.load("photos/coins.png"):tensor()
print(px:dtype(), table.concat(px:size(), " x "))       -- u8 303 x 384 x 1: H x W x bands]],
    ["Image:to_rgb"] = [[
local clip = require "clipl"
local img = clip.image.load("photos/coins.png")
print(img.mode, img:to_rgb().mode)                      -- L RGB]],
    ["Tokenizer:cache_size"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
tok:encode("a photo of a dog")
print(tok:cache_size() > 0)                             -- true]],
    ["Tokenizer:clean"] = [=[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
print("[" .. tok:clean("  A   Photo\n of &amp; a DOG ") .. "]")   -- [a photo of & a dog]]=],
    ["Tokenizer:clear_cache"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
tok:encode("a photo of a dog")
tok:clear_cache()
print(tok:cache_size())                                 -- 0]],
    ["Tokenizer:decode"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
print(tok:decode({320, 1125, 539, 320, 1929}))          -- a photo of a dog]],
    ["Tokenizer:encode"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
print(table.concat(tok:encode("Hello, World!"), " "))   -- 3306 267 1002 256]],
    ["Tokenizer:free"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
tok:free()                                              -- releases the vocabulary now
print(pcall(tok.encode, tok, "a dog"))                  -- false ...]],
    ["Tokenizer:set_cache_limit"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
tok:set_cache_limit(2)
tok:encode("one two three four five")
print(tok:cache_size() <= 2)                            -- true]],
    ["Tokenizer:token_id"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
print(tok:token_id("<|startoftext|>"), tok:token_id("<|endoftext|>"))   -- 49406 49407]],
    ["Tokenizer:tokenize"] = [[
local clip = require "clipl"
local tok = clip.tokenizer(shared .. "/bpe_simple_vocab_16e6.txt.gz")
local t = tok:tokenize({"a dog", "a cat"}, {context_length = 8})
print(t)                                                -- 49406 320 1929 49407 0 0 0 0 / ...]],
}
for k, v in pairs(CLS) do MORE[k] = v end
for k, v in pairs(MORE) do
    assert(EXAMPLES[k] == nil, k)
    EXAMPLES[k] = v
end

-- clip.train: a tiny labelled data set of the photos, written by the examples that need one
local DS = 'local clip = require "clipl"\n' .. [[
local f = io.open("photos.tsv", "w")
f:write("path\tcaption\tlabel\nphotos/chelsea.png\ta cat\tcat\nphotos/coins.png\tcoins\tcoins\n")
f:close()
local ds = clip.train.dataset("photos.tsv", {label_column = "label"})
]]
local OPT = C .. "local w = clip.tensor{4}:requires_grad_()\n" ..
    "local opt = clip.optim.SGD({w}, {lr = 0.25})\n"
local SCHED = C .. "local opt = clip.optim.SGD({clip.zeros({1}):requires_grad_()}, {lr = 1})\n" ..
    "local sched = clip.optim.cosine(opt, {warmup = 2, steps = 10})\n"
local MORE2 = {
    ["clip.bundled_model"] = C .. [[
local b = clip.bundled_model()                          -- nil when this build has none
print(b and b.path or "no bundled model", b and #b.labels)]],
    ["clip.cached_bytes"] = C .. [[
local t = clip.zeros({1024, 1024})
t:free()
print(clip.cached_bytes() >= 0)                         -- true
clip.memory_trim()
print(clip.cached_bytes())                              -- 0]],
    ["clip.memory_trim"] = C .. [[
clip.zeros({1024, 1024}):free()
clip.memory_trim()                                      -- gives cached blocks back to the OS
print(clip.cached_bytes())                              -- 0]],
    ["clip.nn.batch_norm_train"] = C .. [[
local x = clip.tensor{{1, 10}, {3, 30}}                 -- N = 2, C = 2
local rm, rv = clip.zeros({2}), clip.ones({2})
local y = clip.nn.batch_norm_train(x, rm, rv, nil, nil, 0.1, 0)
print(y, rm)                                            -- -1 -1 / 1 1;  0.2 2]],
    ["clip.train.accuracy"] = C .. [[
local logits = clip.tensor{{2, 1}, {0, 3}, {5, 4}}
print(clip.train.accuracy(logits, {1, 2, 2}))           -- 0.66666666666667]],
    ["clip.train.dataset"] = DS .. [[
print(#ds.items, ds.items[1].caption, ds.items[1].label, table.concat(ds.classes, ","))]],
    ["clip.train.ensure_prepared"] = M .. [[
clip.train.mark_changed(model)
clip.train.ensure_prepared(model)                       -- re-prepares once, then a no-op
print(model:encode_text(model:tokenize({"a dog"})):size(1))   -- 1]],
    ["clip.train.features"] = M .. DS:gsub('^local clip = require "clipl"\n', "") .. [[
local x, labels = clip.train.features(model, ds, {normalize = true})
print(x:size(1), labels[1], labels[2])                  -- 2 and the two class numbers]],
    ["clip.train.forward_image"] = M .. [[
local images = clip.preprocess_batch({"photos/coins.png"}, model.input_resolution)
clip.train.train_params(model, "^visual%.proj$")
local emb = clip.train.forward_image(model, images)
emb:sum():backward()
print(emb:size(2), model:parameter("visual.proj").grad ~= nil)   -- embed_dim true]],
    ["clip.train.forward_text"] = M .. [[
local tokens = model:tokenize({"a dog"})
local a = clip.train.forward_text(model, tokens)
local b = model:encode_text(tokens)
print((a - b):abs():max():item() < 1e-3)                -- true]],
    ["clip.train.forward_text_embeddings"] = M .. [[
local tokens = model:tokenize({"a dog"})
local x = (tokens + 1):embedding(model:parameter("token_embedding.weight"))  -- ids are 0-based
local emb = clip.train.forward_text_embeddings(model, x, tokens)
print((emb - model:encode_text(tokens)):abs():max():item() < 1e-3)   -- true]],
    ["clip.train.json_encode"] = C .. [[
print(clip.train.json_encode({step = 3}))               -- {"step":3}]],
    ["clip.train.load_checkpoint"] = M .. [[
clip.train.save_checkpoint("ckpt.json", {model = model, step = 7})
local st = clip.train.load_checkpoint("ckpt.json", {model = model})
print(st.step, clip.train.load_checkpoint("none.json"))   -- 7 nil]],
    ["clip.train.loader"] = DS .. [[
local loader = clip.train.loader(ds, {batch_size = 2, resolution = 32})
for _, b in loader:iter(1) do
    print(table.concat(b.images:size(), " x "), #b.captions)   -- 2 x 3 x 32 x 32  2
end]],
    ["clip.train.logistic_regression"] = C .. [[
local x = clip.tensor{{0, 1}, {0, 2}, {1, 0}, {2, 0}}
local labels = {1, 1, 2, 2}
local fit = clip.train.logistic_regression(x, labels, 2, 1)
print(clip.train.accuracy(x:matmul(fit.weight) + fit.bias, labels))   -- 1]],
    ["clip.train.mark_changed"] = M .. [[
local b = model:parameter("ln_final.bias")
model:set_parameter("ln_final.bias", clip.ones(b:size()))   -- (or an optimizer step)
clip.train.mark_changed(model)                          -- re-prepared before the next encode
print(model:encode_text(model:tokenize({"a dog"})):size(1))   -- 1]],
    ["clip.train.permutation"] = C .. [[
local p = clip.train.permutation(5, 1)
table.sort(p)
print(table.concat(p, " "))                             -- 1 2 3 4 5]],
    ["clip.train.plot_losses"] = C .. [[
clip.train.plot_losses("loss.png", {3, 2.5, 2, 1.8, 1.2, 1.1}, {width = 200, height = 100})
print(clip.image.load("loss.png"))                      -- clipl.Image(200x100 RGB)]],
    ["clip.train.read_table"] = C .. [[
local f = io.open("t.csv", "w"); f:write("path,caption\na.png,a cat\n"); f:close()
local cols, rows = clip.train.read_table("t.csv")
print(table.concat(cols, " "), rows[1].caption)         -- path caption a cat]],
    ["clip.train.save_checkpoint"] = M .. [[
local opt = clip.optim.AdamW(model:parameters(), {lr = 1e-4})
clip.train.save_checkpoint("run.json", {model = model, optimizer = opt, step = 1})
print(io.open("run-1.safetensors") ~= nil)              -- true]],
    ["clip.train.train_params"] = M .. [[
clip.train.train_params(model, "^text_projection$")
print(model:parameter("text_projection"):requires_grad())   -- true]],
    ["clip.train.wants_grad"] = M .. [[
print(clip.train.wants_grad(model))                     -- false
clip.train.train_params(model, "^text_projection$")
print(clip.train.wants_grad(model))                     -- true]],
    ["clip.train.write_atomic"] = C .. [[
clip.train.write_atomic("note.txt", "hello\n")
print(io.open("note.txt"):read("*l"))                   -- hello]],
    ["Tensor.retain_grad"] = C .. [[
local x = clip.tensor{1, 2}:requires_grad_()
local y = (x * 3):retain_grad()
y:sum():backward()
print(y.grad, x.grad)                                   -- 1 1 / 3 3]],

    ["clip.models.config_fields"] = C .. [[
local a = clip.models.config_fields(clip.models.model_config("RN50"))
print(a.embed_dim, table.concat(a.vision_layers, " "), a.vision_patch_size)   -- 1024 3 4 6 3 nil]],
    ["Model:hparams"] = M .. [[
local h = model:hparams()                               -- build_model's arguments + activation
print(h.vision_layers, h.transformer_width, h.activation)]],
    -- the objects of clip.optim, clip.train.loader, clip.bpe and the model's nodes
    ["Optimizer:zero_grad"] = OPT .. [[
local loss = (w * w):sum()
loss:backward()
opt:zero_grad()
print(w.grad:item())                                    -- 0: zeroed in place
opt:zero_grad(true)
print(w.grad)                                           -- nil]],
    ["Optimizer:parameters"] = OPT .. [[
print(#opt:parameters(), opt:parameters()[1] == w)     -- 1 true]],
    ["Optimizer:set_lr"] = OPT .. [[
opt:set_lr(0.5)
print(opt:get_lr())                                     -- 0.5]],
    ["Optimizer:get_lr"] = OPT .. [[
print(opt:get_lr(), opt:get_lr(1))                      -- 0.25 0.25: group 1]],
    ["Optimizer:step"] = OPT .. [[
opt:zero_grad(); (w * w):sum():backward(); opt:step()
print(w:item())                                         -- 2: 4 - 0.25 * 8]],
    ["Optimizer:state_dict"] = C .. [[
local w = clip.tensor{4}:requires_grad_()
local opt = clip.optim.AdamW({w}, {lr = 0.1})
opt:zero_grad(); (w * w):sum():backward(); opt:step()
local sd = opt:state_dict()
print(sd.step, sd.groups[1].lr)                         -- 1 0.1
for key in pairs(sd.tensors) do print(key) end          -- 1:<name>.exp_avg, 1:<name>.exp_avg_sq]],
    ["Optimizer:load_state_dict"] = C .. [[
local w = clip.tensor{4}:requires_grad_()
local opt = clip.optim.AdamW({w}, {lr = 0.1})
opt:zero_grad(); (w * w):sum():backward(); opt:step()
local again = clip.optim.AdamW({clip.tensor{4}:requires_grad_()}, {lr = 0.1})
again:load_state_dict(opt:state_dict())                 -- resume where opt stopped
print(again:state_dict().step)                          -- 1]],
    ["Scheduler:step"] = SCHED .. [[
for _ = 1, 3 do print(sched:step()) end                 -- the lr of steps 1, 2, 3]],
    ["Scheduler:get_lr"] = SCHED .. [[
print(sched:get_lr(), opt:get_lr())                     -- 0.5 0.5: step 0 of the warmup]],
    ["Scheduler:lr_at"] = SCHED .. [[
print(sched:lr_at(1, 1), sched:lr_at(10, 1))            -- 1 0: the end of warmup, the last step]],
    ["Scheduler:apply"] = SCHED .. [[
opt:set_lr(123)
sched:apply()                                           -- the schedule's lr again
print(opt:get_lr())                                     -- 0.5]],
    ["Scheduler:state_dict"] = SCHED .. [[
sched:step()
print(sched:state_dict().last)                          -- 1]],
    ["Scheduler:load_state_dict"] = SCHED .. [[
sched:step(); sched:step()
local again = clip.optim.cosine(opt, {warmup = 2, steps = 10})
again:load_state_dict(sched:state_dict())
print(again:get_lr() == sched:get_lr())                 -- true]],
    ["Loader:batch"] = DS .. [[
local loader = clip.train.loader(ds, {batch_size = 1, resolution = 32, shuffle = false})
local b = loader:batch(1, 2)                            -- epoch 1, batch 2
print(b.captions[1], table.concat(b.images:size(), " x "))   -- coins 1 x 3 x 32 x 32]],
    ["Loader:iter"] = DS .. [[
local loader = clip.train.loader(ds, {batch_size = 1, resolution = 32})
for b, batch in loader:iter(1, 2) do print(b, #batch.captions) end   -- 2 1: from batch 2]],
    ["Vocab:save"] = C .. [[
local vocab = clip.bpe.learn({"low lower lowest", "newer wider"}, {merges = 10})
local path = vocab:save("vocab.txt.gz")
print(clip.tokenizer(path):decode(clip.tokenizer(path):encode("lower")))   -- lower]],
    ["Node:named_parameters"] = M .. [[
for name, p in model.visual.ln_post:named_parameters() do
    print(name, p:numel())                              -- visual.ln_post.weight, .bias
end]],
    ["Node:parameters"] = M .. [[
local n = 0
for _, p in ipairs(model.visual:parameters()) do n = n + p:numel() end
print(n > 0)                                            -- true]],
}
for k, v in pairs(MORE2) do
    assert(EXAMPLES[k] == nil, k)
    EXAMPLES[k] = v
end

-- ---- doc comments (read as clipl.help reads them) ---------------------------------------------

-- doc lines, the parameter list, the file (no line number: api.md must not change when code moves),
-- whether it is defined with ':'
local function doc_of(fn)
    local d = help.source_doc(fn)
    if not d then
        return nil
    end
    return d.lines, d.sig or "(...)", d.file, d.method
end

-- prose and ```lua norun blocks from a doc comment
local function render_doc(doc)
    local out, code = {}, nil
    local in_item = false -- inside a "* " / "- " list item: indented lines continue it
    local function flush()
        if code then
            out[#out + 1] = "```lua norun\n" .. table.concat(code, "\n") .. "\n```"
            code = nil
        end
    end
    for _, l in ipairs(doc) do
        if l:match("^  ") and not (in_item and not code) then
            code = code or {}
            code[#code + 1] = l:sub(3)
        else
            flush()
            if l:match("%S") then
                if not l:match("^  ") then
                    in_item = l:match("^[%*%-] ") ~= nil
                end
                out[#out + 1] = (l:gsub("^%s+", ""))
            else
                in_item = false
            end
        end
    end
    flush()
    -- join prose lines into paragraphs, keep code blocks apart
    local paras, prose = {}, {}
    for _, piece in ipairs(out) do
        if piece:sub(1, 3) == "```" then
            if #prose > 0 then paras[#paras + 1] = table.concat(prose, "\n"); prose = {} end
            paras[#paras + 1] = piece
        else
            prose[#prose + 1] = piece
        end
    end
    if #prose > 0 then paras[#paras + 1] = table.concat(prose, "\n") end
    return table.concat(paras, "\n\n")
end

-- ---- what to document ---------------------------------------------------------------------------

local seen = {}       -- function -> the heading it was documented under
local sections = {}
local count, with_example = 0, 0

local function entry(display, example_key, fn, method_of)
    local doc, params, where, colon = doc_of(fn)
    local lines = {}
    if method_of and not colon and params then
        params = params:gsub("^%(%s*[%w_]+%s*,?%s*", "(") -- Tensor.view(t, ...) -> t:view(...)
    end
    lines[#lines + 1] = "### `" .. display .. (params or "(...)") .. "`"
    lines[#lines + 1] = ""
    if doc then
        local text = render_doc(doc)
        lines[#lines + 1] = text ~= "" and text or "(no doc comment)"
        lines[#lines + 1] = ""
        lines[#lines + 1] = "<sub>" .. where .. "</sub>"
    else
        lines[#lines + 1] = "(a function without Lua source)"
    end
    local ex = EXAMPLES[example_key]
    count = count + 1
    if ex then
        with_example = with_example + 1
        lines[#lines + 1] = ""
        lines[#lines + 1] = "Example:"
        lines[#lines + 1] = ""
        lines[#lines + 1] = "```lua\n" .. ex .. "\n```"
    end
    lines[#lines + 1] = ""
    return table.concat(lines, "\n")
end

local function sorted_functions(t)
    local names = {}
    for k, v in pairs(t) do
        if type(k) == "string" and type(v) == "function" and k:sub(1, 1) ~= "_" then
            names[#names + 1] = k
        end
    end
    table.sort(names)
    return names
end

-- A class's methods with the inherited ones (the __index chain of its metatable), as one table.
local function with_inherited(cls)
    local out, seen_t = {}, {}
    local t = cls
    while type(t) == "table" and not seen_t[t] do
        seen_t[t] = true
        for k, v in pairs(t) do
            if out[k] == nil then out[k] = v end
        end
        local mt = getmetatable(t)
        t = mt and mt.__index
    end
    return out
end

-- The class (metatable) of what make() returns, or nil when it cannot be made here.
local function class_of(make)
    local ok, obj = pcall(make)
    return ok and with_inherited(getmetatable(obj)) or nil
end

local function section(title, intro, items)
    if #items > 0 then
        sections[#sections + 1] = {title = title, intro = intro, items = items}
    end
end

-- classes (their methods), documented as obj:name
local Model = clip.models and clip.models.Model
local classes = {
    {"Tensor", tensor.Tensor, "t", "Tensor methods (`t:name(...)`; also `clip.name(t, ...)`)"},
    {"Model", Model, "model", "Model methods (what `clip.load` returns)"},
    {"Classifier", clip.zeroshot and clip.zeroshot.Classifier, "clf",
        "Classifier methods (what `clip.zeroshot.classifier` returns)"},
    {"Index", clip.index and clip.index.Index, "idx",
        "Index methods (what `clip.index.open` returns)"},
    {"Job", clip.zeroshot and clip.zeroshot.Job, "job",
        "Job methods (what `clip.preprocess_batch_start` returns)"},
    {"Image", clip.image and clip.image.Image, "img",
        "Image methods (what `clip.image.load` returns)"},
    {"Tokenizer", clip.Tokenizer, "tok", "Tokenizer methods (what `clip.tokenizer` returns)"},
    {"Optimizer", class_of(function()
        return clip.optim.SGD({clip.zeros({1}):requires_grad_()}, {lr = 1})
    end), "opt", "Optimizer methods (what `clip.optim.AdamW` and `clip.optim.SGD` return)"},
    {"Scheduler", class_of(function()
        return clip.optim.cosine(clip.optim.SGD({clip.zeros({1}):requires_grad_()}, {lr = 1}),
            {steps = 1})
    end), "sched", "Scheduler methods (what `clip.optim.cosine` returns)"},
    {"Loader", class_of(function()
        return clip.train.loader({items = {{}}}, {batch_size = 1})
    end), "loader", "Loader methods (what `clip.train.loader` returns)"},
    {"Vocab", clip.bpe and clip.bpe.Vocab, "vocab",
        "Vocab methods (what `clip.bpe.learn` returns)"},
    {"Node", clip.models and clip.models.Node, "node",
        "Node methods (the parts of a model: `model.visual`, `model.transformer.resblocks[1]`)"},
}
local class_tables = {}
for _, c in ipairs(classes) do
    if c[2] then class_tables[c[2]] = true end
end

-- top-level functions (tensor functions are documented as methods)
local top = {}
for _, k in ipairs(sorted_functions(clip)) do
    local fn = clip[k]
    if not tensor.functions[k] or tensor.functions[k] ~= fn then
        if not seen[fn] then
            seen[fn] = "clip." .. k
            top[#top + 1] = entry("clip." .. k, "clip." .. k, fn)
        end
    end
end
section("clip", "Functions of the `clip` table (`local clip = require \"clipl\"`).", top)

-- module tables
local mods = {}
for k, v in pairs(clip) do
    if type(v) == "table" and type(k) == "string" and k ~= "lib" and not class_tables[v] and
        k:sub(1, 1) ~= "_" and #sorted_functions(v) > 0 then
        mods[#mods + 1] = k
    end
end
table.sort(mods)
for _, m in ipairs(mods) do
    local items = {}
    for _, k in ipairs(sorted_functions(clip[m])) do
        local fn = clip[m][k]
        local name = "clip." .. m .. "." .. k
        if seen[fn] then
            items[#items + 1] = "### `" .. name .. "`\n\nThe same function as `" .. seen[fn] ..
                "`.\n"
        else
            seen[fn] = name
            items[#items + 1] = entry(name, name, fn)
        end
    end
    section("clip." .. m, nil, items)
end

for _, c in ipairs(classes) do
    local name, t, var, title = c[1], c[2], c[3], c[4]
    if t then
        local items = {}
        for _, k in ipairs(sorted_functions(t)) do
            local fn = t[k]
            local display = var .. ":" .. k
            if seen[fn] and seen[fn]:sub(1, #var + 1) == var .. ":" then
                items[#items + 1] = "### `" .. display .. "`\n\nThe same as `" .. seen[fn] .. "`.\n"
            else
                seen[fn] = seen[fn] or display
                local key = EXAMPLES[name .. ":" .. k] and name .. ":" .. k or name .. "." .. k
                items[#items + 1] = entry(display, key, fn, true)
            end
        end
        section(title, nil, items)
    end
end

-- ---- write --------------------------------------------------------------------------------------

local out = {}
out[#out + 1] = "# clipl API reference"
out[#out + 1] = ""
out[#out + 1] = "Generated by `clipl run scripts/gen_api_docs.lua` from the doc comments in " ..
    "lua/clipl " ..
    "(the text `clip.help(name)` and `?name` in the REPL show); do not edit by hand. " ..
    string.format("%d functions, %d with a complete example (run by tests/spec/docs_spec.lua); ",
        count, with_example) ..
    "blocks marked `norun` are fragments from the doc comments. How-tos: " ..
    "[zero-shot](howto-zeroshot.md), [prompt ensembles](howto-prompt-ensembles.md), " ..
    "[embed and search](howto-embed-search.md), [intermediate features](howto-features.md)."
out[#out + 1] = ""
out[#out + 1] = "## Contents"
out[#out + 1] = ""
for _, s in ipairs(sections) do
    local anchor = s.title:lower():gsub("[^%w%s%-]", ""):gsub("%s", "-")
    out[#out + 1] = "- [" .. s.title:gsub("`", "") .. "](#" .. anchor .. ") (" .. #s.items .. ")"
end
out[#out + 1] = ""
for _, s in ipairs(sections) do
    out[#out + 1] = "## " .. s.title
    out[#out + 1] = ""
    if s.intro then
        out[#out + 1] = s.intro
        out[#out + 1] = ""
    end
    for _, item in ipairs(s.items) do
        out[#out + 1] = item
    end
end
local f = assert(io.open(out_path, "w"))
f:write((table.concat(out, "\n"):gsub("\n\n\n+", "\n\n")))
f:close()
io.stderr:write(string.format("%s: %d functions, %d with an example\n", out_path, count,
    with_example))
