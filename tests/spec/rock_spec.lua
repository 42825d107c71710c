-- The LuaRocks rock (rocks/clipl-scm-1.rockspec): `luarocks make` into an empty tree from a copy of
-- the checkout, then clipl used from that tree only: `luajit -e 'require "clipl"'` with the tree's
-- paths (a tensor op runs), the installed config.lua pointing into the tree, and the installed
-- `clipl` launcher working without LUA_PATH. It builds libclipl from scratch (a few minutes on two
-- cores); CLIPL_SKIP_ROCK=1 skips it.
local H = require "helpers_env"
local q, root = H.q, H.root

local tmp = os.tmpname()
os.remove(tmp)

-- Runs a shell command line with a clean Lua environment (and no sanitizer preload: the rock is a
-- plain build); returns {out, err, code}.
local function sh(cmd)
    return H.capture(tmp, "(unset LUA_PATH LUA_CPATH CLIPL_LIB LD_PRELOAD; " .. cmd .. ")")
end

local function have(cmd)
    return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == 0
end

describe("clipl rock", function()
    local skip = os.getenv("CLIPL_SKIP_ROCK") == "1" or not (have("luarocks") and have("cmake"))
    if skip then
        it("is skipped (CLIPL_SKIP_ROCK=1, or luarocks/cmake missing)", function()
            print("SKIP: rock test")
        end)
        return
    end

    local src, tree = tmp .. "/src", tmp .. "/tree"
    local path_env = "eval \"$(luarocks --lua-version=5.1 path --tree " .. q(tree) .. ")\"; "

    setup(function()
        assert(os.execute("mkdir -p " .. q(src) .. " " .. q(tree)) == 0)
        -- a copy of the checkout (no build folder); luarocks' build.luarocks stays out of it
        local parts = {}
        for _, p in ipairs({"CMakeLists.txt", "cmake", "engine", "lua", "scripts", "models",
            "rocks", "docs"}) do
            if io.open(root .. "/" .. p) then
                parts[#parts + 1] = q(p)
            end
        end
        assert(os.execute("tar -C " .. q(root) .. " -cf - " .. table.concat(parts, " ") ..
            " | tar -C " .. q(src) .. " -xf -") == 0)
    end)

    teardown(function()
        os.execute("rm -rf " .. q(tmp))
    end)

    it("installs with luarocks make into an empty tree", function()
        local r = sh("cd " .. q(src) .. " && CMAKE_BUILD_PARALLEL_LEVEL=2" ..
            " luarocks --lua-version=5.1 make rocks/clipl-scm-1.rockspec --tree " .. q(tree))
        assert.equal(0, r.code, r.out:sub(-3000) .. r.err:sub(-3000))
        assert.matches("clipl scm%-1 is now installed", r.out)
    end)

    it("loads under plain luajit with the tree's paths, and a tensor op works", function()
        local r = sh(path_env .. "luajit -e " .. q([[
local clip = require "clipl"
local t = clip.tensor{{1, 2}}:t()
print(t:size()[1], t:size()[2], t[1][1], t[2][1])
local c = require "clipl.config"
print(c.lib)
print(c.scripts)
print(c.lua)
]]))
        assert.equal(0, r.code, r.err)
        local lines = {}
        for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
        assert.equal("2\t1\t1\t2", lines[1])
        -- the installed config points into the tree, at files that exist
        for i = 2, 4 do
            assert.equal(tree, lines[i]:sub(1, #tree), lines[i])
            assert.is_truthy(io.open(lines[i]), lines[i])
        end
        assert.matches("libclipl%.so$", lines[2])
        assert.matches("/share/lua/5%.1$", lines[4])
    end)

    it("installs the clipl launcher, which finds its modules and library by itself", function()
        local bin = tree .. "/bin/clipl"
        local r = sh(q(bin) .. " --version")
        assert.equal(0, r.code, r.err)
        assert.matches("^clipl %d", r.out)
        r = sh(q(bin) .. " -e " .. q("print(clip.tensor{{1, 2}}:t():size()[1], " ..
            "require('clipl.config').lib:find(..., 1, true) == 1)") .. " " .. q(tree))
        assert.equal(0, r.code, r.err)
        assert.equal("2\ttrue\n", r.out)
        r = sh(q(bin) .. " help")
        assert.equal(0, r.code, r.err)
        assert.matches("subcommands:", r.out, 1, true)
    end)
end)
