--- Model downloads: the registry of OpenAI's checkpoints (models/registry.tsv), the cache folder,
-- and fetching with resume and SHA-256 verification. The transfer runs on a C thread
-- (engine/net/download.c); this module polls its counters and hands them to an optional Lua
-- progress function, so the library itself never prints.
--
--   local path = clip.download("ViT-B/32")                    -- ~/.cache/clipl/ViT-B-32.pt
--   local path = clip.download("RN50", {progress = function(p) io.stderr:write(p.done, "\r") end})
local ffi = require "ffi"
local lib = require "clipl.lib"

local C, check = lib.C, lib.check

local M = {}

-- usleep from libc for the polling loop (pcall: another module may have declared it already)
pcall(ffi.cdef, "int usleep(unsigned int usec);")

local files = require "clipl.files"
local getenv, file_exists = files.getenv, files.exists

--- The cache folder: $CLIPL_CACHE, else $XDG_CACHE_HOME/clipl, else ~/.cache/clipl.
function M.cache_dir()
    local dir = getenv("CLIPL_CACHE")
    if dir then
        return dir
    end
    local xdg = getenv("XDG_CACHE_HOME")
    if xdg then
        return xdg .. "/clipl"
    end
    local home = getenv("HOME")
    if not home then
        error("cache_dir: neither CLIPL_CACHE, XDG_CACHE_HOME nor HOME is set", 2)
    end
    return home .. "/.cache/clipl"
end

local function models_dir()
    return lib.config.models
end


local registry_cache = {}

--- Reads a registry file (default models/registry.tsv): a list of entries in file order, each
-- {name, kind ("model" or "vocab"), file, sha256, url, config (path of the JSON config or nil)}.
-- The list is also indexed by name (`reg["ViT-B/32"]`). Raises when the file is missing or a line
-- is malformed.
function M.registry(path)
    path = path or (models_dir() .. "/registry.tsv")
    if registry_cache[path] then
        return registry_cache[path]
    end
    local f, err = io.open(path, "rb")
    if not f then
        error("registry: cannot open " .. tostring(err), 2)
    end
    local dir = path:match("^(.*)/[^/]*$") or "."
    local list, lineno = {}, 0
    for line in f:lines() do
        lineno = lineno + 1
        if line ~= "" and not line:find("^#") then
            local name, kind, file, sha, url, config =
                line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
            if not name then
                f:close()
                error(("registry: %s:%d: expected 6 tab-separated fields (name, kind, file, " ..
                    "sha256, url, config)"):format(path, lineno), 2)
            end
            if not sha:match("^" .. ("%x"):rep(64) .. "$") then
                f:close()
                error(("registry: %s:%d: sha256 of %s is not 64 hex digits"):format(path, lineno,
                    name), 2)
            end
            local entry = {
                name = name,
                kind = kind,
                file = file,
                sha256 = sha:lower(),
                url = url,
                config = config ~= "-" and (dir .. "/configs/" .. config) or nil,
            }
            list[#list + 1] = entry
            list[name] = entry
        end
    end
    f:close()
    registry_cache[path] = list
    return list
end

--- Names of the downloadable models, in registry order (the vocabulary is not included).
function M.available_downloads(opts)
    local names = {}
    for _, e in ipairs(M.registry(opts and opts.registry)) do
        if e.kind == "model" then
            names[#names + 1] = e.name
        end
    end
    return names
end

--- The registry entry for a name: the exact name ("ViT-B/32"), its file stem ("ViT-B-32"), or
-- "vocab" for the BPE vocabulary. Raises naming the known models when there is none.
function M.registry_entry(name, opts)
    local reg = M.registry(opts and opts.registry)
    if type(name) ~= "string" then
        error("download: model name must be a string, got " .. type(name), 2)
    end
    local e = reg[name]
    if not e then
        for _, x in ipairs(reg) do
            if x.file == name or x.file:gsub("%.[^.]*$", "") == name or
                (name == "vocab" and x.kind == "vocab") then
                e = x
                break
            end
        end
    end
    if not e then
        local names = {}
        for _, x in ipairs(reg) do
            names[#names + 1] = x.name
        end
        error(("download: unknown model '%s'; available: %s"):format(name,
            table.concat(names, ", ")), 2)
    end
    return e
end

--- Rewrites url onto base (scheme://host[:port][/prefix]) keeping its path: used by tests and
-- mirrors (opts.base_url or $CLIPL_DOWNLOAD_BASE_URL).
function M._rewrite_url(url, base)
    if not base then
        return url
    end
    local path = url:match("^%a[%w+.-]*://[^/]+(/.*)$") or "/"
    return (base:gsub("/+$", "")) .. path
end

--- The SHA-256 that an OpenAI URL carries (the 64-hex path segment before the file name), or nil.
function M._sha256_from_url(url)
    local h = url:match("/(" .. ("%x"):rep(64) .. ")/[^/]*$")
    return h and h:lower() or nil
end

--- SHA-256 of a file as 64 lowercase hex digits.
function M.sha256_file(path)
    local out = ffi.new("char[65]")
    check(C.clipl_sha256_file(path, out))
    return ffi.string(out, 64)
end

local phase_names = {[0] = "connecting", "transfer", "verifying", "done", "failed"}

--- Downloads url to dest (through dest .. ".part", resumed when present) and verifies sha256
-- (default: the hash in the URL, none when it has none; false skips the check).
-- opts.progress(p) is called about every opts.interval seconds (default 0.1) with
-- p = {done, total (nil while unknown), phase, resumed, url, dest}. Returns dest; raises with the
-- library's message on failure (the .part is kept except after a hash mismatch).
function M.download_url(url, dest, sha256, opts)
    opts = opts or {}
    if sha256 == nil then
        sha256 = M._sha256_from_url(url)
    end
    local d = C.clipl_download_start(url, dest, sha256 or nil)
    if d == nil then
        lib.check_ptr(d, 2)
    end
    d = ffi.gc(d, C.clipl_download_free)
    local done, total, finished = ffi.new("int64_t[1]"), ffi.new("int64_t[1]"), ffi.new("int[1]")
    local progress = opts.progress
    local usec = math.floor((opts.interval or 0.1) * 1e6)
    local ok, err = pcall(function()
        while true do
            C.clipl_download_poll(d, done, total, finished)
            if progress then
                local t = tonumber(total[0])
                progress({
                    done = tonumber(done[0]),
                    total = t >= 0 and t or nil,
                    phase = phase_names[C.clipl_download_state(d)],
                    resumed = tonumber(C.clipl_download_resumed_from(d)),
                    url = url,
                    dest = dest,
                })
            end
            if finished[0] ~= 0 then
                break
            end
            ffi.C.usleep(usec)
        end
    end)
    if not ok then
        -- an error in the progress function or an interrupt: stop the transfer now (the .part is
        -- kept for a resume), then pass the error on
        C.clipl_download_free(ffi.gc(d, nil))
        error(err, 0)
    end
    local rc = C.clipl_download_wait(d)
    C.clipl_download_free(ffi.gc(d, nil))
    check(rc, 2)
    return dest
end

--- Downloads a registry model (or the vocabulary) into the cache folder unless it is already
-- there with the right SHA-256, and returns its path. opts: cache_dir (default M.cache_dir()),
-- base_url (default $CLIPL_DOWNLOAD_BASE_URL), registry (path of another registry file),
-- progress (see download_url), verify (false: trust an existing file without hashing it),
-- force (true: download again even when present).
function M.download(name, opts)
    opts = opts or {}
    local e = M.registry_entry(name, opts)
    local dir = opts.cache_dir or M.cache_dir()
    local dest = dir .. "/" .. e.file
    if not opts.force and file_exists(dest) then
        if opts.verify == false or M.sha256_file(dest) == e.sha256 then
            return dest
        end
        -- a damaged or stale file: fetch it again, as OpenAI's clip does
        os.remove(dest)
    elseif opts.force then
        os.remove(dest)
    end
    local url = M._rewrite_url(e.url, opts.base_url or getenv("CLIPL_DOWNLOAD_BASE_URL"))
    local ok, err = pcall(M.download_url, url, dest, e.sha256, opts)
    if not ok then
        error(("download %s: %s"):format(e.name, (tostring(err):gsub("^download: ", ""))), 2)
    end
    return dest
end

return M
