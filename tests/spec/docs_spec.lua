-- Runs every ```lua block of docs/*.md (blocks tagged ```lua norun are skipped), each as its own
-- script through this build's `clipl run`, in a scratch folder prepared like a user's:
--   - `shared` (a local defined before the block) and $CLIPL_SHARED point at ../shared/clip;
--   - photos/ holds the four reference images of ../shared/clip (CLIP.png, chelsea.png,
--     coins.png, grace_hopper.jpg), and CLIP.png is also in the folder itself;
--   - $CLIPL_CACHE is a scratch cache in which "ViT-B/32" is a stand-in: a small seeded ViT CLIP
--     with the real vocabulary size (saved as ViT-B-32.safetensors, which clip.load("ViT-B/32")
--     finds there) and OpenAI's BPE file beside it. The examples exercise the real code paths;
--     their printed numbers are not a trained model's.
-- Blocks of a file run in order in the same folder (a block may read what an earlier one wrote),
-- but each block is a separate script: it must be self-contained.
-- A failing block in any doc fails the spec: a block that cannot run offline (a real download,
-- a terminal) must be tagged ```lua norun.
local clip = require "clipl"

local lib_path = assert(os.getenv("CLIPL_LIB"), "run through tests/run_spec (CLIPL_LIB unset)")
local bin = lib_path:match("^(.*)/[^/]*$") .. "/clipl"

local function abs(path)
    if path:sub(1, 1) == "/" then
        return path
    end
    return io.popen("pwd"):read("*l") .. "/" .. path
end
local root = abs(debug.getinfo(1, "S").source:sub(2)):match("^(.*)/tests/spec/[^/]*$")
local shared = os.getenv("CLIPL_SHARED") or (root .. "/../shared/clip")
if not io.open(shared .. "/README.md") then
    shared = "/work/shared/clip"
end

local function q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

local function write(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

-- The ```lua blocks of a markdown file: {line =, code =, norun =}.
local function blocks_of(path)
    local out, cur = {}, nil
    local n = 0
    for line in io.lines(path) do
        n = n + 1
        if cur then
            if line:match("^```%s*$") then
                out[#out + 1] = cur
                cur = nil
            else
                cur.code[#cur.code + 1] = line
            end
        else
            local tag = line:match("^```lua(.*)$")
            if tag then
                cur = {line = n, code = {}, norun = tag:match("norun") ~= nil}
            end
        end
    end
    return out
end

local tmp = os.tmpname()
os.remove(tmp)
local cache, work = tmp .. "/cache", tmp .. "/work"
assert(os.execute("mkdir -p " .. q(cache) .. " " .. q(work .. "/photos")) == 0)
for _, f in ipairs({"CLIP.png", "images/chelsea.png", "images/coins.png",
    "images/grace_hopper.jpg"}) do
    assert(os.execute("cp " .. q(shared .. "/" .. f) .. " " .. q(work .. "/photos/")) == 0)
end
assert(os.execute("cp " .. q(shared .. "/CLIP.png") .. " " .. q(work .. "/")) == 0)
write(tmp .. "/standin.json", [[
{"embed_dim": 32, "quick_gelu": true,
 "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
]])
clip.save_safetensors(cache .. "/ViT-B-32.safetensors",
    clip.build_model(tmp .. "/standin.json", {seed = 5}):state_dict())
assert(os.execute("ln -s " .. q(shared .. "/bpe_simple_vocab_16e6.txt.gz") .. " " ..
    q(cache .. "/")) == 0)

local function run_block(name, b)
    local file = string.format("%s/%s_%d.lua", work, name:gsub("%.md$", ""), b.line)
    write(file, "local shared = os.getenv(\"CLIPL_SHARED\")\n" .. table.concat(b.code, "\n") ..
        "\n")
    local line = string.format("cd %s && env -u CLIPL_VOCAB CLIPL_SHARED=%s CLIPL_CACHE=%s " ..
        "%s run %s >%s 2>%s; echo $? >%s", q(work), q(shared), q(cache), q(bin), q(file),
        q(tmp .. "/out"), q(tmp .. "/err"), q(tmp .. "/rc"))
    os.execute(line)
    return tonumber((slurp(tmp .. "/rc") or ""):match("%d+")), slurp(tmp .. "/out") or "",
        slurp(tmp .. "/err") or ""
end

describe("docs examples", function()
    teardown(function()
        os.execute("rm -rf " .. q(tmp))
    end)

    local names = {}
    for f in io.popen("ls " .. q(root .. "/docs")):lines() do
        if f:match("%.md$") then names[#names + 1] = f end
    end
    table.sort(names)

    it("include the API reference and the how-tos", function()
        local have = table.concat(names, " ")
        for _, n in ipairs({"api.md", "howto-zeroshot.md", "howto-prompt-ensembles.md",
            "howto-embed-search.md", "howto-features.md"}) do
            assert.is_truthy(have:find(n, 1, true), n)
        end
    end)

    it("give every entry of the API reference a runnable example", function()
        local missing, entries, heading, has = {}, 0, nil, false
        local function close()
            if heading and not has then missing[#missing + 1] = heading end
        end
        for line in io.lines(root .. "/docs/api.md") do
            if line:match("^#") then
                close()
                heading, has = line:match("^### (.*)"), false
                if heading then entries = entries + 1 end
            elseif line:match("^```lua%s*$") or line:match("^The same ") then
                has = true -- an example, or an alias of an entry documented above
            end
        end
        close()
        assert.is_true(entries > 200, "docs/api.md has only " .. entries .. " entries")
        assert.equal("", table.concat(missing, "\n"),
            #missing .. " entries of docs/api.md have no example (add one to the EXAMPLES of " ..
            "scripts/gen_api_docs.lua and regenerate)")
    end)

    for _, name in ipairs(names) do
        for _, b in ipairs(blocks_of(root .. "/docs/" .. name)) do
            local label = "docs/" .. name .. ":" .. b.line
            if not b.norun then
                it("run: " .. label, function()
                    local code, out, err = run_block(name, b)
                    assert.equal(0, code, label .. " failed:\n" .. err .. "\nstdout:\n" .. out)
                end)
            end
        end
    end
end)
