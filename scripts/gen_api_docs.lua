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

-- ---- doc comments (the rules of clipl.help) -----------------------------------------------------

local files = {}
local function lines_of(path)
    if files[path] == nil then
        local t = false
        local f = io.open(path, "r")
        if f then
            t = {}
            for l in f:lines() do t[#t + 1] = l end
            f:close()
        end
        files[path] = t
    end
    return files[path] or nil
end

-- doc text, the parameter list, the file:line, whether it is defined with ':'
local function doc_of(fn)
    local info = debug.getinfo(fn, "S")
    if not info or info.what ~= "Lua" or info.source:sub(1, 1) ~= "@" then
        return nil
    end
    local lines = lines_of(info.source:sub(2))
    local at = info.linedefined
    if not lines or not lines[at] then
        return nil
    end
    local doc = {}
    local i = at - 1
    while i >= 1 and lines[i]:match("^%s*%-%-") and not lines[i]:match("^%s*%-%- ?%-%-%-%-") do
        table.insert(doc, 1, (lines[i]:gsub("^%s*%-%-%-?%s?", "")))
        i = i - 1
    end
    local name, params = lines[at]:match("function%s*([%w_%.:]*)%s*(%b())")
    local where = info.source:sub(2):match("([^/]*/[^/]*)$") or info.source:sub(2)
    return doc, params or "(...)", where .. ":" .. at, name and name:find(":", 1, true) ~= nil
end

-- prose and ```lua norun blocks from a doc comment
local function render_doc(doc)
    local out, code = {}, nil
    local function flush()
        if code then
            out[#out + 1] = "```lua norun\n" .. table.concat(code, "\n") .. "\n```"
            code = nil
        end
    end
    for _, l in ipairs(doc) do
        if l:match("^  ") then
            code = code or {}
            code[#code + 1] = l:sub(3)
        else
            flush()
            if l:match("%S") then
                out[#out + 1] = (l:gsub("^%s+", ""))
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
