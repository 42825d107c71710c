-- Downloads against a local HTTP server (tests/http_server.lua on 127.0.0.1): complete, resumed,
-- Range ignored, corrupted, dropped mid-body, refused; the registry against ../shared/clip; the
-- architecture configs. Reference hashes come from coreutils' sha256sum, not from our own code.
local ffi = require "ffi"
local clip = require "clipl"
local dl = require "clipl.download"
local socket = require "socket"
local cjson = require "cjson"

local H = require "helpers_env"
local root, shared = H.root, H.shared

pcall(ffi.cdef, "int setenv(const char *name, const char *value, int overwrite);" ..
    "int unsetenv(const char *name);")

local read, write = H.slurp, H.write

local function exists(path)
    return read(path) ~= nil
end

local function sh(cmd)
    local p = assert(io.popen(cmd))
    local out = p:read("*a")
    p:close()
    return out
end

-- an independent SHA-256 (coreutils)
local function sha256sum(path)
    return sh("sha256sum '" .. path .. "'"):match("^(%x+)")
end

-- deterministic bytes (an LCG), n of them
local function make_bytes(n, seed)
    local parts, x = {}, seed
    local chunk = {}
    for i = 1, n do
        x = (x * 1103515245 + 12345) % 2147483648
        chunk[#chunk + 1] = math.floor(x / 65536) % 256
        if #chunk == 4096 or i == n then
            parts[#parts + 1] = string.char(unpack(chunk))
            chunk = {}
        end
    end
    return table.concat(parts)
end

local tmp = os.tmpname()
os.remove(tmp)
tmp = tmp .. "_clipl_dl"
local www = tmp .. "/www"
local log_path = tmp .. "/server.log"
local server, port, base

-- test files laid out like OpenAI's: /clip/models/<sha256>/<name>
local files = {}
local function add_file(name, n, seed)
    local data = make_bytes(n, seed)
    local staging = tmp .. "/" .. name
    write(staging, data)
    local sha = sha256sum(staging)
    local dir = www .. "/clip/models/" .. sha
    os.execute("mkdir -p '" .. dir .. "'")
    os.rename(staging, dir .. "/" .. name)
    files[name] = {data = data, sha = sha, path = "/clip/models/" .. sha .. "/" .. name}
    return files[name]
end

local function url(name, mode)
    return base .. (mode and ("/" .. mode) or "") .. files[name].path
end

local function log_lines()
    local s = read(log_path) or ""
    local lines = {}
    for line in s:gmatch("[^\n]+") do
        lines[#lines + 1] = line
    end
    return lines
end

local function out(name)
    return tmp .. "/cache/" .. name
end

describe("downloads", function()
    setup(function()
        os.execute("mkdir -p '" .. www .. "' '" .. tmp .. "/cache'")
        add_file("small.pt", 300000, 1)
        add_file("other.pt", 200001, 7)
        server = assert(io.popen("luajit '" .. root .. "/tests/http_server.lua' '" .. www ..
            "' --log '" .. log_path .. "' --max-seconds 120 --max-requests 200"))
        port = tonumber(server:read("*l"))
        assert(port, "the test HTTP server did not start")
        base = "http://127.0.0.1:" .. port
    end)

    teardown(function()
        if port then
            local c = socket.connect("127.0.0.1", port)
            if c then
                c:send("GET /__quit HTTP/1.1\r\nHost: x\r\n\r\n")
                c:receive("*a")
                c:close()
            end
        end
        if server then
            server:close()
        end
        os.execute("rm -rf '" .. tmp .. "'")
    end)

    it("downloads a whole file, verifies it and renames it into place", function()
        local dest = out("full/small.pt")
        local seen = {}
        local path = dl.download_url(url("small.pt"), dest, nil, {
            interval = 0.01,
            progress = function(p) seen[#seen + 1] = p end,
        })
        assert.are.equal(dest, path)
        assert.is_true(read(dest) == files["small.pt"].data)
        assert.is_false(exists(dest .. ".part"))
        local last = seen[#seen]
        assert.are.equal("done", last.phase)
        assert.are.equal(300000, last.total)
        assert.are.equal(300000, last.done)
        assert.are.equal(0, last.resumed)
    end)

    it("resumes a partial download with a Range request", function()
        local dest = out("resume/small.pt")
        os.execute("mkdir -p '" .. tmp .. "/cache/resume'")
        write(dest .. ".part", files["small.pt"].data:sub(1, 123457))
        local resumed
        dl.download_url(url("small.pt"), dest, nil, {progress = function(p) resumed = p.resumed end})
        assert.is_true(read(dest) == files["small.pt"].data)
        assert.is_false(exists(dest .. ".part"))
        assert.are.equal(123457, resumed)
        local lines = log_lines()
        assert.are.equal("GET " .. files["small.pt"].path .. " bytes=123457-", lines[#lines])
    end)

    it("restarts cleanly when the server ignores Range (200 instead of 206)", function()
        local dest = out("norange/small.pt")
        os.execute("mkdir -p '" .. tmp .. "/cache/norange'")
        -- a wrong prefix: it must be thrown away, not kept in front of the new bytes
        write(dest .. ".part", string.rep("x", 5000))
        local resumed, totals = nil, {}
        dl.download_url(url("small.pt", "norange"), dest, nil, {
            interval = 0.005,
            progress = function(p)
                resumed = p.resumed
                if p.phase == "transfer" and p.total then
                    totals[p.total] = true
                end
            end,
        })
        assert.is_true(read(dest) == files["small.pt"].data)
        assert.are.equal(0, resumed)
        -- the size announced during the transfer is the file's, not 5000 + the file's
        for t in pairs(totals) do
            assert.are.equal(300000, t)
        end
        local lines = log_lines()
        assert.are.equal("GET /norange" .. files["small.pt"].path .. " bytes=5000-",
            lines[#lines])
    end)

    it("deletes a corrupted download and names both hashes", function()
        local dest = out("corrupt/small.pt")
        local ok, err = pcall(dl.download_url, url("small.pt", "corrupt"), dest)
        assert.is_false(ok)
        assert.matches("SHA%-256 mismatch", err)
        assert.matches("expected " .. files["small.pt"].sha, err, 1, true)
        local actual = err:match("got (%x+)")
        assert.are.equal(64, #actual)
        assert.are_not.equal(files["small.pt"].sha, actual)
        assert.is_false(exists(dest))
        assert.is_false(exists(dest .. ".part"))
    end)

    it("fails on a resumed .part with a bad prefix, leaving nothing behind", function()
        local dest = out("badprefix/other.pt")
        os.execute("mkdir -p '" .. tmp .. "/cache/badprefix'")
        write(dest .. ".part", string.rep("\0", 1000))
        local ok, err = pcall(dl.download_url, url("other.pt"), dest)
        assert.is_false(ok)
        assert.matches("SHA%-256 mismatch", err)
        assert.is_false(exists(dest))
        assert.is_false(exists(dest .. ".part"))
    end)

    it("keeps the .part of a dropped connection and resumes it next time", function()
        local dest = out("drop/other.pt")
        local ok, err = pcall(dl.download_url, url("other.pt", "drop"), dest)
        assert.is_false(ok)
        assert.matches("100000 bytes kept in " .. dest .. ".part for a resume", err, 1, true)
        assert.matches(url("other.pt", "drop"), err, 1, true)
        assert.is_false(exists(dest))
        local part = read(dest .. ".part")
        -- the server sends floor(200001 / 2) bytes before closing
        assert.are.equal(100000, #part)
        assert.is_true(part == files["other.pt"].data:sub(1, 100000))
        dl.download_url(url("other.pt"), dest)
        assert.is_true(read(dest) == files["other.pt"].data)
        local lines = log_lines()
        assert.are.equal("GET " .. files["other.pt"].path .. " bytes=100000-", lines[#lines])
    end)

    it("verifies a .part that is already complete (416 from the server)", function()
        local dest = out("complete/other.pt")
        os.execute("mkdir -p '" .. tmp .. "/cache/complete'")
        write(dest .. ".part", files["other.pt"].data)
        dl.download_url(url("other.pt"), dest)
        assert.is_true(read(dest) == files["other.pt"].data)
        assert.is_false(exists(dest .. ".part"))
    end)

    it("reports HTTP errors, refused connections and bad arguments clearly", function()
        local ok, err = pcall(dl.download_url, base .. "/clip/models/none.pt", out("e/none.pt"), false)
        assert.is_false(ok)
        assert.matches("HTTP error 404", err)
        assert.matches("/clip/models/none.pt", err, 1, true)

        -- a port nobody listens on: bind one, note it, close it
        local s = assert(socket.bind("127.0.0.1", 0))
        local _, free = s:getsockname()
        s:close()
        local refused = "http://127.0.0.1:" .. free .. "/x.pt"
        ok, err = pcall(dl.download_url, refused, out("e/x.pt"), false)
        assert.is_false(ok)
        assert.matches(refused, err, 1, true)
        assert.matches("[Cc]onnect", err)

        ok, err = pcall(dl.download_url, "ftp://127.0.0.1/x.pt", out("e/y.pt"))
        assert.is_false(ok)
        assert.matches("must start with http:// or https://", err)
        ok, err = pcall(dl.download_url, url("small.pt"), out("e/z.pt"), "abc")
        assert.is_false(ok)
        assert.matches("sha256 must be 64 hex digits, got 'abc'", err, 1, true)
        ok, err = pcall(dl.download_url, url("small.pt"), "", nil)
        assert.is_false(ok)
        assert.matches("dest_path must not be empty", err)
    end)

    it("can be cancelled, keeping the .part", function()
        local C = clip.lib.C
        local dest = out("cancel/small.pt")
        local d = ffi.gc(C.clipl_download_start(url("small.pt", "slow"), dest, nil),
            C.clipl_download_free)
        assert.is_not_nil(d)
        local done = ffi.new("int64_t[1]")
        local t0 = socket.gettime()
        repeat
            socket.sleep(0.01)
            C.clipl_download_poll(d, done, nil, nil)
        until done[0] > 0 or socket.gettime() - t0 > 10
        assert.is_true(done[0] > 0)
        C.clipl_download_cancel(d)
        local rc = C.clipl_download_wait(d)
        assert.are.equal(C.CLIPL_EINTERRUPTED, rc)
        assert.matches("cancelled", ffi.string(C.clipl_errmsg()))
        C.clipl_errclear()
        assert.are.equal(C.CLIPL_DL_FAILED, C.clipl_download_state(d))
        assert.is_true(#read(dest .. ".part") > 0)
        assert.is_false(exists(dest))
    end)

    it("clip.download: registry names, cache folder, base URL, existing files", function()
        -- a registry of our own test files, in the format of models/registry.tsv
        local reg_path = tmp .. "/registry.tsv"
        write(reg_path, table.concat({
            "# name\tkind\tfile\tsha256\turl\tconfig",
            "Small/1\tmodel\tSmall-1.pt\t" .. files["small.pt"].sha ..
                "\thttps://example.invalid" .. files["small.pt"].path .. "\t-",
        }, "\n") .. "\n")
        local cache = tmp .. "/cache2"
        local opts = {registry = reg_path, cache_dir = cache, base_url = base}
        local path = dl.download("Small/1", opts)
        assert.are.equal(cache .. "/Small-1.pt", path)
        assert.is_true(read(path) == files["small.pt"].data)
        local n = #log_lines()
        -- already there and intact: no request
        assert.are.equal(path, dl.download("Small-1", opts))
        assert.are.equal(n, #log_lines())
        -- damaged in the cache: fetched again
        write(path, "damaged")
        dl.download("Small/1", opts)
        assert.is_true(read(path) == files["small.pt"].data)
        assert.are.equal(n + 1, #log_lines())
        -- unknown names list the known ones
        local ok, err = pcall(dl.download, "ViT-Z/99", opts)
        assert.is_false(ok)
        assert.matches("unknown model 'ViT%-Z/99'; available: Small/1", err)
        -- a failure names the model
        ok, err = pcall(dl.download, "Small/1",
            {registry = reg_path, cache_dir = tmp .. "/cache3", base_url = base .. "/corrupt"})
        assert.is_false(ok)
        assert.matches("^download Small/1: .*SHA%-256 mismatch", err)
    end)
end)

describe("the download script", function()
    -- runs scripts/download.lua under luajit with this build (LUA_PATH and CLIPL_LIB come from
    -- tests/run_spec); the vocabulary is served from a temporary copy of ../shared/clip's file,
    -- whose real SHA-256 is in the registry
    local www2 = tmp .. "_script"
    local srv, p2
    setup(function()
        local dir = www2 .. "/www/openai/CLIP/raw/main/clip"
        os.execute("mkdir -p '" .. dir .. "'")
        os.execute("cp '" .. shared .. "/bpe_simple_vocab_16e6.txt.gz' '" .. dir .. "/'")
        srv = assert(io.popen("luajit '" .. root .. "/tests/http_server.lua' '" .. www2 ..
            "/www' --max-seconds 60 --max-requests 20"))
        p2 = tonumber(srv:read("*l"))
        assert(p2, "the test HTTP server did not start")
    end)
    teardown(function()
        local c = p2 and socket.connect("127.0.0.1", p2)
        if c then
            c:send("GET /__quit HTTP/1.1\r\n\r\n")
            c:receive("*a")
            c:close()
        end
        if srv then
            srv:close()
        end
        os.execute("rm -rf '" .. www2 .. "'")
    end)

    local function run(args)
        local cmd = ("CLIPL_CACHE='%s/cache' luajit '%s/scripts/download.lua' %s 2>&1; echo rc=$?")
            :format(www2, root, args)
        local text = sh(cmd)
        return text:gsub("rc=(%d+)%s*$", ""), tonumber(text:match("rc=(%d+)%s*$"))
    end

    it("downloads the vocabulary, prints its path, and lists it as cached", function()
        local text, rc = run("vocab --base-url http://127.0.0.1:" .. p2)
        assert.are.equal(0, rc)
        local path = www2 .. "/cache/bpe_simple_vocab_16e6.txt.gz"
        assert.are.equal(path .. "\n", text)
        assert.is_true(read(path) == read(shared .. "/bpe_simple_vocab_16e6.txt.gz"))
        text, rc = run("--list")
        assert.are.equal(0, rc)
        assert.matches("vocab%s+bpe_simple_vocab_16e6.txt.gz%s+cached, 1.4 MB", text)
        assert.matches("ViT%-L/14@336px%s+ViT%-L%-14%-336px.pt%s+not downloaded", text)
    end)

    it("fails clearly on unknown names, options and server errors", function()
        local text, rc = run("ViT-Z/1")
        assert.are.equal(1, rc)
        assert.matches("unknown model 'ViT%-Z/1'", text)
        text, rc = run("--bogus")
        assert.are.equal(1, rc)
        assert.matches("unknown option %-%-bogus", text)
        text, rc = run("RN50 --base-url http://127.0.0.1:" .. p2)
        assert.are.equal(1, rc)
        assert.matches("download RN50: .*HTTP error 404", text)
        text, rc = run("--help")
        assert.are.equal(0, rc)
        assert.matches("^usage: clipl download", text)
    end)
end)

describe("cache folder", function()
    local saved = {}
    local names = {"CLIPL_CACHE", "XDG_CACHE_HOME", "HOME"}
    before_each(function()
        for _, k in ipairs(names) do
            saved[k] = os.getenv(k)
        end
    end)
    after_each(function()
        for _, k in ipairs(names) do
            if saved[k] then
                ffi.C.setenv(k, saved[k], 1)
            else
                ffi.C.unsetenv(k)
            end
        end
    end)

    it("is $CLIPL_CACHE, else $XDG_CACHE_HOME/clipl, else ~/.cache/clipl", function()
        ffi.C.setenv("CLIPL_CACHE", "/a/b", 1)
        ffi.C.setenv("XDG_CACHE_HOME", "/x", 1)
        ffi.C.setenv("HOME", "/h", 1)
        assert.are.equal("/a/b", dl.cache_dir())
        ffi.C.unsetenv("CLIPL_CACHE")
        assert.are.equal("/x/clipl", dl.cache_dir())
        ffi.C.unsetenv("XDG_CACHE_HOME")
        assert.are.equal("/h/.cache/clipl", dl.cache_dir())
    end)
end)

describe("sha256_file", function()
    it("matches the FIPS 180-2 test vectors and sha256sum", function()
        local p = os.tmpname()
        write(p, "")
        assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            dl.sha256_file(p))
        write(p, "abc")
        assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            dl.sha256_file(p))
        write(p, "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
        assert.are.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            dl.sha256_file(p))
        write(p, make_bytes(3000001, 3)) -- crosses the 1 MiB read chunks
        assert.are.equal(sha256sum(p), dl.sha256_file(p))
        os.remove(p)
        local ok, err = pcall(dl.sha256_file, "/nonexistent/file.pt")
        assert.is_false(ok)
        assert.matches("cannot open /nonexistent/file.pt", err, 1, true)
    end)
end)

describe("the model registry", function()
    -- the reference: ../shared/clip/models.tsv (OpenAI's _MODELS table and the vocabulary)
    local function reference()
        local models, vocab_sha = {}, nil
        for line in io.lines(shared .. "/models.tsv") do
            local h = line:match("^# tokenizer vocabulary %(sha256 (%x+)%)")
            if h then
                vocab_sha = h
            elseif not line:find("^#") and line ~= "" then
                local name, u = line:match("^([^\t]+)\t([^\t]+)$")
                models[#models + 1] = {name = name, url = u}
            end
        end
        return models, vocab_sha
    end

    it("has exactly the nine OpenAI models and the vocabulary of ../shared/clip/models.tsv",
        function()
            local models, vocab_sha = reference()
            local reg = dl.registry()
            assert.are.equal(#models, #reg)
            assert.are.equal(10, #reg)
            for i, m in ipairs(models) do
                local e = reg[i]
                assert.are.equal(m.name, e.name)
                assert.are.equal(m.url, e.url)
                assert.are.equal(m.url:match("[^/]+$"), e.file)
                if e.kind == "vocab" then
                    assert.are.equal(vocab_sha, e.sha256)
                    assert.are.equal(vocab_sha,
                        sha256sum(shared .. "/bpe_simple_vocab_16e6.txt.gz"))
                else
                    assert.are.equal("model", e.kind)
                    assert.are.equal(dl._sha256_from_url(m.url), e.sha256)
                end
            end
            assert.are.same({"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32",
                "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"}, dl.available_downloads())
            assert.are.equal(reg["ViT-B/32"], dl.registry_entry("ViT-B-32"))
            assert.are.equal("vocab", dl.registry_entry("vocab").kind)
        end)

    it("rewrites URLs onto a base URL keeping the path (and its hash)", function()
        local e = dl.registry()["RN50"]
        assert.are.equal("http://127.0.0.1:9/clip/models/" .. e.sha256 .. "/RN50.pt",
            dl._rewrite_url(e.url, "http://127.0.0.1:9/"))
        assert.are.equal("http://m/pre/openai/CLIP/raw/main/clip/bpe_simple_vocab_16e6.txt.gz",
            dl._rewrite_url(dl.registry_entry("vocab").url, "http://m/pre"))
    end)

    -- Architecture hyperparameters of OpenAI's CLIP (Radford et al. 2021, tables 19 and 20:
    -- embedding dim, input resolution, ResNet blocks/width, ViT layers/width/patch, text width and
    -- heads; all text transformers have 12 layers, context 77, vocab 49408)
    local paper = {
        RN50 = {1024, 224, {3, 4, 6, 3}, 64, nil, 512, 8},
        RN101 = {512, 224, {3, 4, 23, 3}, 64, nil, 512, 8},
        RN50x4 = {640, 288, {4, 6, 10, 6}, 80, nil, 640, 10},
        RN50x16 = {768, 384, {6, 8, 18, 8}, 96, nil, 768, 12},
        RN50x64 = {1024, 448, {3, 15, 36, 10}, 128, nil, 1024, 16},
        ["ViT-B/32"] = {512, 224, 12, 768, 32, 512, 8},
        ["ViT-B/16"] = {512, 224, 12, 768, 16, 512, 8},
        ["ViT-L/14"] = {768, 224, 24, 1024, 14, 768, 12},
        ["ViT-L/14@336px"] = {768, 336, 24, 1024, 14, 768, 12},
    }

    it("has an open_clip-schema config for every model with the paper's hyperparameters",
        function()
            for _, e in ipairs(dl.registry()) do
                if e.kind == "model" then
                    local text = assert(read(e.config), e.config)
                    local cfg = cjson.decode(text)
                    local p = assert(paper[e.name], e.name)
                    assert.are.equal(p[1], cfg.embed_dim)
                    assert.is_true(cfg.quick_gelu)
                    local v, t = cfg.vision_cfg, cfg.text_cfg
                    assert.are.equal(p[2], v.image_size)
                    assert.are.same(p[3], v.layers)
                    assert.are.equal(p[4], v.width)
                    assert.are.equal(64, v.head_width)
                    if p[5] then
                        assert.are.equal(p[5], v.patch_size)
                        assert.are.equal(0, v.image_size % v.patch_size)
                    else
                        assert.are.equal(cjson.null, v.patch_size)
                    end
                    assert.are.same({context_length = 77, vocab_size = 49408, width = p[6],
                        heads = p[7], layers = 12}, t)
                end
            end
        end)
end)
