-- The pipelines end to end through the `clipl` launcher of this build (next to CLIPL_LIB):
-- `clipl zeroshot` (table, json, csv, --top, --sheet, unreadable images, the classifier cache),
-- `clipl embed` (resume, unreadable files, an interrupted or killed run leaves a valid index),
-- `clipl search` (by image, by text, --dedup), `clipl embed-text`; and the rock installed into an
-- empty tree running a zero-shot from plain luajit and from its own `clipl zeroshot`
-- (CLIPL_SKIP_ROCK=1 skips that part, which builds libclipl from scratch).
--
-- The model is a small ViT CLIP with the real vocabulary size, built from a seed and saved with
-- OpenAI's BPE file beside it; images are the reference images in ../shared/clip, PNGs written
-- here and a corrupt file. Expected values come from the Lua API in this process
-- (zeroshot_spec.lua checks that API against a by-hand reference).
local clip = require "clipl"
local cjson = require "cjson"
local bit = require "bit"

local H = require "helpers_env"
local q, write, root, shared = H.q, H.write, H.root, H.shared
local _, bin = H.build()

local tmp = H.tmpdir("imgs", "model")
local imgs = tmp .. "/imgs"

-- Runs a shell command in tmp with the classifier cache inside tmp: {out, err, code}.
local function sh(cmd)
    return H.capture(tmp, string.format("cd %s && (export CLIPL_CACHE=%s; %s)", q(tmp),
        q(tmp .. "/cache"), cmd))
end

local function clipl(args)
    return sh(q(bin) .. " " .. args)
end

-- ---- test images: PNGs written here (stored deflate blocks), the shared references, a bad file

local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        c = bit.band(c, 1) == 1 and bit.bxor(0xEDB88320, bit.rshift(c, 1)) or bit.rshift(c, 1)
    end
    crc_table[i] = c
end
local function crc32(s)
    local c = 0xFFFFFFFF
    for i = 1, #s do
        c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
    end
    return bit.bxor(c, 0xFFFFFFFF)
end
local function be32(n)
    return string.char(bit.band(bit.rshift(n, 24), 255), bit.band(bit.rshift(n, 16), 255),
        bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
end
local function chunk(kind, data)
    return be32(#data) .. kind .. data .. be32(crc32(kind .. data))
end
-- An RGB PNG of w x h pixels from pixel(x, y) -> r, g, b.
local function png(path, w, h, pixel)
    local raw = {}
    for y = 0, h - 1 do
        raw[#raw + 1] = "\0"
        for x = 0, w - 1 do
            raw[#raw + 1] = string.char(pixel(x, y))
        end
    end
    raw = table.concat(raw)
    local a, b = 1, 0
    for i = 1, #raw do
        a = (a + raw:byte(i)) % 65521
        b = (b + a) % 65521
    end
    local z = {"\120\1"}
    for i = 1, #raw, 65535 do
        local piece = raw:sub(i, i + 65534)
        local final = i + 65535 > #raw and 1 or 0
        z[#z + 1] = string.char(final, #piece % 256, math.floor(#piece / 256),
            255 - #piece % 256, 255 - math.floor(#piece / 256)) .. piece
    end
    z[#z + 1] = be32(b * 65536 + a)
    write(path, "\137PNG\r\n\26\n" ..
        chunk("IHDR", be32(w) .. be32(h) .. "\8\2\0\0\0") ..
        chunk("IDAT", table.concat(z)) .. chunk("IEND", ""))
end

png(imgs .. "/red.png", 40, 30, function() return 220, 30, 30 end)
png(imgs .. "/stripes.png", 48, 48, function(x) return x % 8 < 4 and 250 or 10, 120, 60 end)
for _, f in ipairs({"CLIP.png", "images/chelsea.png", "images/grace_hopper.jpg"}) do
    assert(os.execute("cp " .. q(shared .. "/" .. f) .. " " .. q(imgs) .. "/") == 0)
end
write(imgs .. "/broken.jpg", "\255\216\255\224 this is not really a JPEG")
local good = {"CLIP.png", "chelsea.png", "grace_hopper.jpg", "red.png", "stripes.png"}
table.sort(good)
for i, f in ipairs(good) do good[i] = imgs .. "/" .. f end

-- the model, with its vocabulary beside it
local function save_model(seed, dir)
    return H.save_tiny_model(dir, seed)
end
local model_path = save_model(7, tmp .. "/model")
local labels = {"a cat", "a woman", "a diagram", "red"}

local function expected_probs(paths, templates)
    local model = clip.load(model_path)
    local clf = clip.zeroshot.classifier(model, labels, templates or "simple", {cache = false})
    return clf:classify(clip.preprocess_batch(paths, 32)):totable()
end

describe("clipl zeroshot", function()
    local base = "zeroshot --model " .. q(model_path) .. " --labels " ..
        q(table.concat(labels, ","))

    it("prints a table of every image, and lists the unreadable one at the end", function()
        local r = clipl(base .. " --top 2 " .. q(imgs))
        assert.equal(0, r.code, r.err)
        for _, p in ipairs(good) do
            assert.is_truthy(r.out:find(p .. "\n", 1, true), p)
        end
        assert.is_falsy(r.out:find("broken.jpg", 1, true))
        assert.matches("1 image%(s%) could not be read:\n  [^\n]*broken%.jpg: ", r.err)
        local rows = 0
        for _ in r.out:gmatch("\n  +[%d.]+%%  ") do rows = rows + 1 end
        assert.equal(2 * #good, rows)
    end)

    it("--format json: an object per image, all labels, sorted, the API's probabilities", function()
        local r = clipl(base .. " --format json " .. q(imgs))
        assert.equal(0, r.code, r.err)
        local out = cjson.decode(r.out)
        assert.equal(#good, #out)
        local ref = expected_probs(good)
        for i, item in ipairs(out) do
            assert.equal(good[i], item.image)
            assert.equal(#labels, #item.top)
            local sum = 0
            for k, t in ipairs(item.top) do
                sum = sum + t.prob
                if k > 1 then assert.is_true(item.top[k - 1].prob >= t.prob) end
                local c
                for j, l in ipairs(labels) do if l == t.label then c = j end end
                assert.is_truthy(c, t.label)
                -- same computation in another process (batch of 5 + the bad file's zero row vs
                -- a batch of 5): f32 rounding only
                assert.is_true(math.abs(ref[i][c] - t.prob) < 1e-5, t.label)
            end
            assert.is_true(math.abs(sum - 1) < 1e-5, "probabilities sum to " .. sum)
        end
    end)

    it("--format csv with --top: a header and K rows per image", function()
        local r = clipl(base .. " --format csv --top 3 --templates ensemble " .. q(imgs))
        assert.equal(0, r.code, r.err)
        local lines = {}
        for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
        assert.equal("image,rank,label,prob", lines[1])
        assert.equal(1 + 3 * #good, #lines)
        local ref = expected_probs(good, "ensemble")
        for n = 2, #lines do
            local path, rank, label, prob = lines[n]:match("^([^,]+),(%d),([^,]+),([%d.]+)$")
            assert.is_truthy(path, lines[n])
            local i = math.floor((n - 2) / 3) + 1
            assert.equal(good[i], path)
            assert.equal((n - 2) % 3 + 1, tonumber(rank))
            local c
            for j, l in ipairs(labels) do if l == label then c = j end end
            assert.is_true(math.abs(ref[i][c] - tonumber(prob)) < 2e-6) -- printed with %.6f
        end
    end)

    it("reads the classifier from the cache the second time, keyed by the weights", function()
        os.execute("rm -rf " .. q(tmp .. "/cache"))
        local args = " --format json " .. q(good[1])
        local first = clipl(base .. args)
        assert.equal(0, first.code, first.err)
        local ls = io.popen("ls " .. q(tmp .. "/cache/zeroshot")):read("*a")
        local file = ls:match("([%x]+%.safetensors)")
        assert.is_truthy(file, "no cache file: " .. ls)
        -- overwrite the cached weights with the rows reversed: a run that reads the cache gives
        -- the probabilities of the reversed labels
        local path = tmp .. "/cache/zeroshot/" .. file
        local w = clip.load_safetensors(path).weights
        local n = w:size(1)
        local idx = {}
        for i = 1, n do idx[i] = n - i + 1 end
        clip.save_safetensors(path, {weights = w:index_select(1, clip.tensor(idx, "i64")):clone()})
        local second = clipl(base .. args)
        assert.equal(0, second.code, second.err)
        local a, b = cjson.decode(first.out)[1].top, cjson.decode(second.out)[1].top
        local pa, pb = {}, {}
        for _, t in ipairs(a) do pa[t.label] = t.prob end
        for _, t in ipairs(b) do pb[t.label] = t.prob end
        for i = 1, n do
            assert.is_true(math.abs(pa[labels[i]] - pb[labels[n - i + 1]]) < 1e-6)
        end
        -- --no-cache ignores it
        local third = clipl(base .. " --no-cache" .. args)
        assert.same(cjson.decode(first.out), cjson.decode(third.out))
        -- a model with other weights builds (and caches) its own
        local other = save_model(8, tmp .. "/other")
        local r = clipl("zeroshot --model " .. q(other) .. " --labels " ..
            q(table.concat(labels, ",")) .. args)
        assert.equal(0, r.code, r.err)
        local count = 0
        local listing = io.popen("ls " .. q(tmp .. "/cache/zeroshot")):read("*a")
        for _ in listing:gmatch("%.safetensors") do
            count = count + 1
        end
        assert.equal(2, count)
        local p_other, p_first = cjson.decode(r.out)[1].top[1].prob,
            cjson.decode(first.out)[1].top[1].prob
        assert.is_false(p_other == p_first)
    end)

    it("--sheet draws a contact sheet", function()
        local r = clipl(base .. " --top 2 --sheet " .. q(tmp .. "/sheet.png") .. " " .. q(imgs))
        assert.equal(0, r.code, r.err)
        assert.matches("contact sheet: ", r.err)
        local img = clip.image.load(tmp .. "/sheet.png")
        assert.equal(4 * 200, img.width) -- 4 columns of 200 px cells (160 px thumbnails)
        assert.is_true(img.height > 2 * 160)
    end)

    it("says what to do when something is missing", function()
        local bundled = clip.bundled_model and clip.bundled_model()
        local r = clipl("zeroshot --labels a,b " .. q(good[1]))
        if bundled then
            -- without --model the bundled model is used; without arguments, its demo runs
            assert.equal(0, r.code, r.err)
            r = clipl("zeroshot")
            assert.equal(0, r.code, r.err)
        else
            assert.equal(1, r.code)
            assert.matches("no bundled model", r.err)
        end
        r = clipl("zeroshot --model " .. q(model_path) .. " " .. q(good[1]))
        assert.equal(1, r.code)
        assert.matches("no labels", r.err)
        r = clipl("zeroshot --model " .. q(tmp .. "/nope.safetensors") .. " --labels a " ..
            q(good[1]))
        assert.equal(1, r.code)
        assert.matches("nope%.safetensors", r.err)
        r = clipl(base .. " " .. q(imgs .. "/broken.jpg"))
        assert.equal(1, r.code)
        assert.matches("broken%.jpg", r.err)
        r = clipl(base .. " --format xml " .. q(good[1]))
        assert.equal(2, r.code)
        assert.matches("'xml' is not one of table, json, csv", r.err)
    end)
end)

describe("clipl embed and clipl search", function()
    local index = tmp .. "/photos.safetensors"
    local m = " --model " .. q(model_path)

    it("embeds a folder, skipping the unreadable file, and resumes without duplicates", function()
        local r = clipl("embed" .. m .. " --out " .. q(index) .. " --batch 2 " .. q(imgs))
        assert.equal(0, r.code, r.err)
        assert.matches("6 image%(s%) to embed, 0 already in", r.err)
        assert.matches("1 file%(s%) skipped:\n  [^\n]*broken%.jpg", r.err)
        local idx = clip.index.open(index)
        assert.same(good, idx.paths)
        -- the stored rows are the model's normalised embeddings
        local model = clip.load(model_path)
        local feats = model:encode_image(clip.preprocess_batch(good, 32))
        assert.tensor_close(idx:embeddings(), clip.zeroshot.normalize(feats), 1e-5)
        r = clipl("embed" .. m .. " --out " .. q(index) .. " " .. q(imgs))
        assert.equal(0, r.code, r.err)
        assert.matches("1 image%(s%) to embed, 5 already in", r.err) -- only the bad file again
        assert.same(good, clip.index.open(index).paths)
    end)

    it("finds each image first when searching with it", function()
        for _, p in ipairs(good) do
            local r = clipl("search" .. m .. " --index " .. q(index) ..
                " --format json --top 3 --image " .. q(p))
            assert.equal(0, r.code, r.err)
            local hits = cjson.decode(r.out)
            assert.equal(3, #hits)
            assert.equal(p, hits[1].path)
            assert.is_true(math.abs(hits[1].score - 1) < 1e-5)
            assert.is_true(hits[1].score >= hits[2].score and hits[2].score >= hits[3].score)
        end
    end)

    it("searches by text (scores are the cosine with the text embedding)", function()
        local r = clipl("search" .. m .. " --index " .. q(index) .. " --format json 'a red square'")
        assert.equal(0, r.code, r.err)
        local hits = cjson.decode(r.out)
        assert.equal(#good, #hits)
        local model = clip.load(model_path)
        local t = clip.zeroshot.normalize(model:encode_text(model:tokenize({"a red square"})))
        local e = clip.index.open(index):embeddings()
        local scores = e:matmul(t:t()):view(-1):totable()
        local by_path = {}
        for i, p in ipairs(good) do by_path[p] = scores[i] end
        for k, h in ipairs(hits) do
            assert.is_true(math.abs(by_path[h.path] - h.score) < 1e-5)
            if k > 1 then assert.is_true(hits[k - 1].score >= h.score) end
        end
        r = clipl("search" .. m .. " --index " .. q(index) .. " 'a red square'")
        assert.equal(0, r.code, r.err)
        assert.matches("^%-?[%d.]+  " .. hits[1].path:gsub("%p", "%%%0"), r.out)
    end)

    it("lists near-duplicates, and text indexes work both ways", function()
        assert(os.execute("cp " .. q(good[1]) .. " " .. q(tmp .. "/copy.png")) == 0)
        local r = clipl("embed" .. m .. " --out " .. q(index) .. " " .. q(tmp .. "/copy.png"))
        assert.equal(0, r.code, r.err)
        r = clipl("search --index " .. q(index) .. " --dedup 0.9999 --format json")
        assert.equal(0, r.code, r.err)
        local pairs_ = cjson.decode(r.out)
        assert.equal(1, #pairs_)
        assert.same({good[1], tmp .. "/copy.png"}, {pairs_[1].a, pairs_[1].b})
        write(tmp .. "/captions.txt", "a red square\na woman in uniform\n\na cat\n")
        r = clipl("embed-text" .. m .. " --out " .. q(tmp .. "/caps.safetensors") .. " " ..
            q(tmp .. "/captions.txt"))
        assert.equal(0, r.code, r.err)
        assert.matches("3 embeddings", r.err)
        r = clipl("search" .. m .. " --index " .. q(tmp .. "/caps.safetensors") ..
            " --format json --top 1 'a red square'")
        assert.equal("a red square", cjson.decode(r.out)[1].path)
    end)

    it("says what is wrong", function()
        local r = clipl("search" .. m .. " --index " .. q(tmp .. "/none.safetensors") .. " x")
        assert.equal(1, r.code)
        assert.matches("none%.safetensors: no such index", r.err)
        r = clipl("search" .. m .. " --index " .. q(index))
        assert.equal(1, r.code)
        assert.matches("give a text query or %-%-image FILE", r.err)
        if not (clip.bundled_model and clip.bundled_model()) then
            r = clipl("embed --out " .. q(tmp .. "/x.safetensors") .. " " .. q(imgs))
            assert.equal(1, r.code)
            assert.matches("no bundled model", r.err)
        end
    end)

    it("leaves a valid index when interrupted or killed, and a rerun completes it", function()
        local many = tmp .. "/many"
        assert(os.execute("mkdir -p " .. q(many)) == 0)
        for i = 1, 40 do
            assert(os.execute("cp " .. q(good[1 + i % #good]) .. " " ..
                q(string.format("%s/%02d%s", many, i, good[1 + i % #good]:match("%.%w+$")))) == 0)
        end
        local out = tmp .. "/many.safetensors"
        local cmd = q(bin) .. " embed" .. m .. " --out " .. q(out) ..
            " --batch 2 --save-every 1 " .. q(many)
        -- Ctrl-C: the script stops, saves what was done and says so
        local r = sh("timeout -s INT 1 " .. cmd)
        if r.code == 124 then
            assert.matches("interrupted: the index holds what was done", r.err)
        end
        local n1 = clip.index.open(out):size()
        -- kill -9 at a random point (possibly while saving): the index is the last complete save
        for _, t in ipairs({"0.6", "0.9"}) do
            sh("timeout -s KILL " .. t .. " " .. cmd)
            local ok, idx = pcall(clip.index.open, out)
            assert.is_true(ok, tostring(idx))
            assert.is_true(idx:size() >= n1 and idx:size() <= 40)
            n1 = idx:size()
        end
        r = sh(cmd)
        assert.equal(0, r.code, r.err)
        local idx = clip.index.open(out)
        assert.equal(40, idx:size())
        local seen = {}
        for _, p in ipairs(idx.paths) do
            assert.is_nil(seen[p], p .. " twice")
            seen[p] = true
        end
    end)
end)

describe("the rock", function()
    teardown(function()
        os.execute("rm -rf " .. q(tmp))
    end)

    local function have(cmd)
        return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == 0
    end
    if os.getenv("CLIPL_SKIP_ROCK") == "1" or not (have("luarocks") and have("cmake")) then
        it("is skipped (CLIPL_SKIP_ROCK=1, or luarocks/cmake missing)", function()
            print("SKIP: rock zero-shot test")
        end)
        return
    end
    local src, tree = tmp .. "/rock_src", tmp .. "/tree"
    local clean = "unset LUA_PATH LUA_CPATH CLIPL_LIB LD_PRELOAD CLIPL_SCRIPTS; "
    local path_env = "eval \"$(luarocks --lua-version=5.1 path --tree " .. q(tree) .. ")\"; "

    it("installs into an empty tree and runs a zero-shot from plain luajit and `clipl zeroshot`",
        function()
            local parts = {}
            for _, p in ipairs({"CMakeLists.txt", "cmake", "engine", "lua", "scripts", "models",
                "rocks", "docs"}) do
                if io.open(root .. "/" .. p) then parts[#parts + 1] = q(p) end
            end
            assert(os.execute("mkdir -p " .. q(src) .. " " .. q(tree) .. " && tar -C " .. q(root) ..
                " -cf - " .. table.concat(parts, " ") .. " | tar -C " .. q(src) .. " -xf -") == 0)
            local r = sh(clean .. "cd " .. q(src) .. " && CMAKE_BUILD_PARALLEL_LEVEL=2" ..
                " luarocks --lua-version=5.1 make rocks/clipl-scm-1.rockspec --tree " .. q(tree))
            assert.equal(0, r.code, r.out:sub(-2000) .. r.err:sub(-2000))
            write(tmp .. "/zs.lua", string.format([[
local clip = require "clipl"
local model = clip.load(%q)
local clf = clip.zeroshot.classifier(model, {"a cat", "a woman"}, "ensemble", {cache = false})
local probs = clf:classify(clip.preprocess_batch({%q}, model.input_resolution))
print(string.format("%%.6f %%.6f", probs:get(1, 1), probs:get(1, 2)))
]], model_path, good[1]))
            r = sh(clean .. path_env .. "luajit " .. q(tmp .. "/zs.lua"))
            assert.equal(0, r.code, r.err)
            local p1, p2 = r.out:match("^([%d.]+) ([%d.]+)")
            assert.is_truthy(p1, r.out)
            local model = clip.load(model_path)
            local clf = clip.zeroshot.classifier(model, {"a cat", "a woman"}, "ensemble",
                {cache = false})
            local ref = clf:classify(clip.preprocess_batch({good[1]}, 32)):totable()[1]
            assert.is_true(math.abs(ref[1] - tonumber(p1)) < 2e-6)
            assert.is_true(math.abs(ref[2] - tonumber(p2)) < 2e-6)
            r = sh(clean .. q(tree .. "/bin/clipl") .. " zeroshot --model " .. q(model_path) ..
                " --labels 'a cat,a woman' --templates ensemble --no-cache --format json " ..
                q(good[1]))
            assert.equal(0, r.code, r.err)
            local top = cjson.decode(r.out)[1].top
            local by = {}
            for _, t in ipairs(top) do by[t.label] = t.prob end
            assert.is_true(math.abs(ref[1] - by["a cat"]) < 1e-6)
        end)
end)

describe("clipl run scripts/linear_probe.lua and scripts/coop.lua", function()
    -- the bundled model on a small generated shapes set: 120 train, 60 test images (seeded)
    local dir = H.tmpdir()
    assert(os.execute(q(bin) .. " make-shapes -q --out " .. H.q(dir) ..
        " --n 120 --val 60 --heldout 0 --two 0 --seed 3 >/dev/null 2>&1") == 0)
    local function run(script, args)
        return H.capture(dir, string.format("%s run %s --train %s --test %s %s", q(bin),
            H.q(H.root .. "/scripts/" .. script), H.q(dir .. "/train.tsv"),
            H.q(dir .. "/val.tsv"), args))
    end

    it("fits a logistic regression on frozen features and sweeps C", function()
        local r = run("linear_probe.lua", "--label-column colour --iters 100")
        assert.are.equal(0, r.code, r.err)
        -- the model tells colours apart at 96-99% zero-shot (MODEL_CARD.md); a linear probe on
        -- 60 test images standing far below that would mean the features or the fit are wrong
        local acc = tonumber(r.out:match("test accuracy ([%d.]+)%%"))
        assert.truthy(acc, r.out)
        assert.is_true(acc >= 80, r.out)
        assert.truthy(r.out:find("best C = ", 1, true))
    end)

    it("learns context vectors through the frozen text tower (CoOp)", function()
        local r = run("coop.lua", "--label-column shape")
        assert.are.equal(0, r.code, r.err)
        local zs = tonumber(r.out:match("zero%-shot with .-: ([%d.]+)%%"))
        local coop = tonumber(r.out:match("CoOp .-: ([%d.]+)%%"))
        assert.truthy(zs and coop, r.out)
        -- chance among 8 shapes is 12.5%; the learned prompt must stay well above it
        assert.is_true(coop >= 25, r.out)
    end)

    it("refuses a missing model with the reason", function()
        local r = run("coop.lua", "--label-column shape --model /nonexistent/model.safetensors")
        assert.are_not.equal(0, r.code)
        assert.truthy(r.err:find("coop", 1, true), r.err)
        assert.truthy(r.err:find("nonexistent", 1, true), r.err)
    end)
end)
