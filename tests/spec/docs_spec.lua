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
local H = require "helpers_env"

local q, slurp, write, root, shared = H.q, H.slurp, H.write, H.root, H.shared
local _, bin = H.build()

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

local tmp = H.tmpdir("cache", "work/photos")
local cache, work = tmp .. "/cache", tmp .. "/work"
for _, f in ipairs({"CLIP.png", "images/chelsea.png", "images/coins.png",
    "images/grace_hopper.jpg"}) do
    assert(os.execute("cp " .. q(shared .. "/" .. f) .. " " .. q(work .. "/photos/")) == 0)
end
assert(os.execute("cp " .. q(shared .. "/CLIP.png") .. " " .. q(work .. "/")) == 0)
H.save_tiny_model(cache, 5, "ViT-B-32.safetensors")

local function run_block(name, b)
    local file = string.format("%s/%s_%d.lua", work, name:gsub("%.md$", ""), b.line)
    write(file, "local shared = os.getenv(\"CLIPL_SHARED\")\n" .. table.concat(b.code, "\n") ..
        "\n")
    local r = H.capture(tmp, string.format("cd %s && env -u CLIPL_VOCAB CLIPL_SHARED=%s " ..
        "CLIPL_CACHE=%s %s run %s", q(work), q(shared), q(cache), q(bin), q(file)))
    return r.code, r.out, r.err
end

-- The first line where two texts differ: "line N: <a> | <b>", or nil when they are the same.
local function first_difference(a, b)
    if a == b then return nil end
    local la, lb = {}, {}
    for l in (a .. "\n"):gmatch("([^\n]*)\n") do la[#la + 1] = l end
    for l in (b .. "\n"):gmatch("([^\n]*)\n") do lb[#lb + 1] = l end
    for i = 1, math.max(#la, #lb) do
        if la[i] ~= lb[i] then
            return string.format("line %d:\n  docs/api.md: %s\n  generated:   %s", i,
                tostring(la[i]), tostring(lb[i]))
        end
    end
    return "(line ends)"
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

    it("have an API reference that is what scripts/gen_api_docs.lua writes now", function()
        local r = H.capture(tmp, string.format("%s run %s %s", q(bin),
            q(root .. "/scripts/gen_api_docs.lua"), q(tmp .. "/api.md")))
        assert.equal(0, r.code, "scripts/gen_api_docs.lua failed:\n" .. r.err)
        local diff = first_difference(slurp(root .. "/docs/api.md") or "", slurp(tmp .. "/api.md"))
        assert.is_nil(diff, "docs/api.md is out of date (run `clipl run scripts/gen_api_docs.lua`" ..
            " and commit docs/api.md); first difference at " .. tostring(diff))
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
