-- What many specs need besides clipl: files, shell quoting, the paths of this checkout, of the
-- build under test and of the golden data, and running a command line with its output captured.
--   local H = require "helpers_env"       (tests/run_spec puts tests/spec on LUA_PATH)
-- (helpers.lua is busted's --helper, loaded before every spec: it registers assertions.)
local H = {}

--- s quoted for a POSIX shell.
function H.q(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The bytes of a file, or nil when it cannot be read.
function H.slurp(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

--- The bytes of a file; raises when it cannot be read.
function H.read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

--- Writes text to a file (replacing it).
function H.write(path, text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
end

--- path made absolute against the current directory.
function H.abs(path)
    if path:sub(1, 1) == "/" then
        return path
    end
    return io.popen("pwd"):read("*l") .. "/" .. path
end

-- the checkout: this file is tests/spec/helpers_env.lua
H.root = H.abs(debug.getinfo(1, "S").source:sub(2)):match("^(.*)/tests/spec/[^/]*$")

-- the golden data (../shared/clip beside the checkout, or $CLIPL_SHARED)
H.shared = os.getenv("CLIPL_SHARED") or (H.root .. "/../shared/clip")
if not io.open(H.shared .. "/README.md") then
    H.shared = "/work/shared/clip"
end

--- The build under test (the folder of $CLIPL_LIB) and its `clipl` launcher.
function H.build()
    local lib = assert(os.getenv("CLIPL_LIB"), "run through tests/run_spec (CLIPL_LIB unset)")
    local build = lib:match("^(.*)/[^/]*$")
    return build, build .. "/clipl"
end

--- A new empty directory (its path), made with the parents of the given subfolders.
function H.tmpdir(...)
    local tmp = os.tmpname()
    os.remove(tmp)
    local dirs = {H.q(tmp)}
    for _, sub in ipairs({...}) do
        dirs[#dirs + 1] = H.q(tmp .. "/" .. sub)
    end
    assert(os.execute("mkdir -p " .. table.concat(dirs, " ")) == 0)
    return tmp
end

--- Runs a shell command line with its stdout and stderr going to files in dir:
-- {out =, err =, code = exit status}.
function H.capture(dir, cmd)
    os.execute(string.format("%s >%s 2>%s; echo $? >%s", cmd, H.q(dir .. "/out"),
        H.q(dir .. "/err"), H.q(dir .. "/rc")))
    return {out = H.slurp(dir .. "/out") or "", err = H.slurp(dir .. "/err") or "",
        code = tonumber((H.slurp(dir .. "/rc") or ""):match("%d+"))}
end

-- A small ViT CLIP with OpenAI's real vocabulary size (49408): 32 px images in 16 px patches,
-- width 64, 2 layers per tower. Fast to build and run; its numbers are not a trained model's.
H.TINY_VIT = [[
{"embed_dim": 32, "quick_gelu": true,
 "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
 "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
]]

--- Saves a TINY_VIT model built from seed as dir/file (default tiny.safetensors), with OpenAI's
-- BPE file linked beside it (so the model's own tokenizer is the real one); returns its path.
function H.save_tiny_model(dir, seed, file)
    local clip = require "clipl"
    assert(os.execute("mkdir -p " .. H.q(dir)) == 0)
    local config = dir .. "/tiny_vit.json"
    H.write(config, H.TINY_VIT)
    local path = dir .. "/" .. (file or "tiny.safetensors")
    clip.save_safetensors(path, clip.build_model(config, {seed = seed}):state_dict())
    os.remove(config)
    assert(os.execute("ln -sf " .. H.q(H.shared .. "/bpe_simple_vocab_16e6.txt.gz") .. " " ..
        H.q(dir) .. "/") == 0)
    return path
end

--- The message of the error fn(...) raises (asserting that it raises).
function H.err_of(fn, ...)
    local ok, err = pcall(fn, ...)
    assert(not ok, "expected an error")
    return tostring(err)
end

return H
