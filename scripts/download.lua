-- download OpenAI's CLIP checkpoints and the BPE vocabulary into the cache folder
local ffi = require "ffi"
local clip = require "clipl"
local dl = require "clipl.download"

local usage = [[
usage: clipl download NAME... [options]     fetch models (RN50 ... ViT-L/14@336px, or vocab)
       clipl download all [options]         all nine models and the vocabulary
       clipl download --list [options]      what can be downloaded and what is in the cache

Downloads resume where they stopped (NAME.pt.part); a file is moved into place only when its
SHA-256 matches the one in OpenAI's URL. Prints the path of each file on stdout.

options:
  --cache DIR      cache folder (default $CLIPL_CACHE, $XDG_CACHE_HOME/clipl or ~/.cache/clipl)
  --base-url URL   fetch from a mirror: URL replaces scheme://host of the registry's URLs
                   (also $CLIPL_DOWNLOAD_BASE_URL)
  --force          download again even when the file is already there
  --no-verify      trust files already in the cache without hashing them
  --quiet          no progress bar
  -h, --help       this help]]

local args = {...}
if #args == 0 and type(arg) == "table" then
    for i = 1, #arg do
        args[i] = arg[i]
    end
end

local function die(msg)
    io.stderr:write("clipl download: ", msg, "\n")
    os.exit(1)
end

local names, opts = {}, {}
local list, quiet = false, false
do
    local i = 1
    while i <= #args do
        local a = args[i]
        local function value()
            i = i + 1
            if args[i] == nil then
                die(a .. " needs a value (clipl download --help)")
            end
            return args[i]
        end
        if a == "-h" or a == "--help" then
            print(usage)
            os.exit(0)
        elseif a == "--list" then
            list = true
        elseif a == "--cache" then
            opts.cache_dir = value()
        elseif a:match("^%-%-cache=") then
            opts.cache_dir = a:match("=(.*)")
        elseif a == "--base-url" then
            opts.base_url = value()
        elseif a == "--force" then
            opts.force = true
        elseif a == "--no-verify" then
            opts.verify = false
        elseif a == "--quiet" or a == "-q" then
            quiet = true
        elseif a:sub(1, 1) == "-" then
            die("unknown option " .. a .. " (clipl download --help)")
        else
            names[#names + 1] = a
        end
        i = i + 1
    end
end

local cache = opts.cache_dir or dl.cache_dir()

local file_size = require("clipl.files").size

local function mb(n)
    return ("%.1f MB"):format(n / 1e6)
end

if list then
    print(("cache folder: %s"):format(cache))
    for _, e in ipairs(dl.registry()) do
        local path = cache .. "/" .. e.file
        local size, part = file_size(path), file_size(path .. ".part")
        local state = size and ("cached, " .. mb(size)) or
            (part and ("partial, " .. mb(part) .. " so far") or "not downloaded")
        print(("  %-16s %-30s %s"):format(e.kind == "vocab" and "vocab" or e.name, e.file, state))
    end
    os.exit(0)
end

if #names == 0 then
    io.stderr:write(usage, "\n")
    os.exit(2)
end

-- expand "all", check every name before downloading anything
local todo = {}
for _, n in ipairs(names) do
    if n == "all" then
        for _, e in ipairs(dl.registry()) do
            todo[#todo + 1] = e.name
        end
    else
        local ok, err = pcall(dl.registry_entry, n)
        if not ok then
            die((tostring(err):gsub("^download: ", "")) .. " (or vocab, all)")
        end
        todo[#todo + 1] = dl.registry_entry(n).name
    end
end

-- a progress bar on stderr when it is a terminal: bytes, MB/s, ETA
pcall(ffi.cdef, "int isatty(int fd);")
local tty = not quiet and ffi.C.isatty(2) == 1

local now
do
    local ok = pcall(ffi.cdef, [[
        typedef struct clipl_download_timespec {
            long tv_sec; long tv_nsec;
        } clipl_download_timespec;
        int clock_gettime(int clk, clipl_download_timespec *tp);
    ]])
    local ts = ok and ffi.new("clipl_download_timespec")
    now = function()
        if ts and ffi.C.clock_gettime(1, ts) == 0 then -- CLOCK_MONOTONIC
            return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
        end
        return os.time()
    end
end

local function clock(s)
    s = math.floor(s + 0.5)
    if s >= 3600 then
        return ("%d:%02d:%02d"):format(s / 3600, s % 3600 / 60, s % 60)
    end
    return ("%d:%02d"):format(s / 60, s % 60)
end

local function bar_for(name)
    local t0, start_bytes
    local last_draw = 0
    return function(p)
        local t = now()
        if p.phase == "connecting" then
            return
        end
        if p.phase ~= "done" and p.phase ~= "failed" and t - last_draw < 0.1 then
            return
        end
        last_draw = t
        local width = 30
        local frac = p.total and p.total > 0 and math.min(p.done / p.total, 1) or nil
        local filled = frac and math.floor(frac * width + 0.5) or 0
        local bar = "[" .. ("#"):rep(filled) .. ("."):rep(width - filled) .. "]"
        local line
        if p.phase == "verifying" then
            line = ("%-14s verifying SHA-256 %s %3d%%"):format(name, bar, (frac or 0) * 100)
        else
            if not t0 then
                t0, start_bytes = t, p.done
            end
            local elapsed = t - t0
            local rate = elapsed > 0.2 and (p.done - start_bytes) / elapsed or nil
            local eta = ""
            if rate and rate > 0 and p.total then
                eta = "  ETA " .. clock((p.total - p.done) / rate)
            end
            line = ("%-14s %s %3d%%  %s / %s  %s%s"):format(name, bar, (frac or 0) * 100,
                mb(p.done), p.total and mb(p.total) or "?",
                rate and ("%.1f MB/s"):format(rate / 1e6) or "", eta)
        end
        io.stderr:write("\r", line, "\27[K")
        io.stderr:flush()
    end
end

local failed = 0
for _, name in ipairs(todo) do
    local o = {}
    for k, v in pairs(opts) do
        o[k] = v
    end
    if tty then
        o.progress = bar_for(dl.registry_entry(name).kind == "vocab" and "vocab" or name)
    end
    local ok, res = pcall(dl.download, name, o)
    if tty then
        io.stderr:write("\r\27[K")
    end
    if ok then
        print(res)
    else
        failed = failed + 1
        io.stderr:write("clipl download: ", tostring(res), "\n")
        if tostring(res):find("interrupted") or clip.lib.C.clipl_interrupted() ~= 0 then
            os.exit(130) -- Ctrl-C stops the whole list, not just this file
        end
    end
end
os.exit(failed == 0 and 0 or 1)
