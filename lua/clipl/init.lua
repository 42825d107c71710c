--- clipl: CLIP on oneDNN, scriptable from LuaJIT.
--
--   local clip = require "clipl"
--   local t = clip.tensor{{1, 2}, {3, 4}}
--   print(t:softmax(-1))
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local clip = {}

clip._VERSION = lib.config.version
clip.version = lib.config.version
clip.lib = lib

-- Modules that extend the API. Each one returns a table whose public fields are merged into
-- `clip` (and may register tensor methods through clipl.tensor.register).
local parts = {
    "clipl.ops",
    "clipl.ops_nn",
    "clipl.io",
    "clipl.tokenizer",
    "clipl.image",
    "clipl.models",
    "clipl.help",
    "clipl.zeroshot",
    "clipl.index",
    "clipl.download",
    "clipl.shapes",
    "clipl.bpe",
    "clipl.autograd",
    "clipl.nn",
    "clipl.optim",
    "clipl.train",
}

for k, v in pairs(tensor) do
    if k ~= "Tensor" and k ~= "functions" and k ~= "register" then
        clip[k] = v
    end
end
clip.Tensor = tensor.Tensor

local function merge(name)
    local ok, mod = pcall(require, name)
    if not ok then
        -- only a module that is not there yet is skipped; any error inside one is raised
        if type(mod) == "string" and mod:find("module '" .. name .. "' not found", 1, true) then
            return
        end
        error(mod, 0)
    end
    if type(mod) == "table" then
        for k, v in pairs(mod) do
            if clip[k] == nil and not (type(k) == "string" and k:sub(1, 1) == "_") then
                clip[k] = v
            end
        end
    end
end

for _, name in ipairs(parts) do
    merge(name)
end

-- every tensor method registered as a function: clip.softmax(t, -1) == t:softmax(-1)
for name, fn in pairs(tensor.functions) do
    if clip[name] == nil then
        clip[name] = fn
    end
end

--- Threads used by oneDNN (OpenMP) and libvips; n <= 0 or nil means all cores.
function clip.set_num_threads(n)
    lib.check(lib.C.clipl_set_num_threads(n or 0))
end

function clip.get_num_threads()
    return lib.C.clipl_get_num_threads()
end

--- Bytes held by live tensors (allocated by clipl; file mappings not counted).
function clip.live_bytes()
    return tonumber(lib.C.clipl_live_bytes())
end

function clip.peak_bytes()
    return tonumber(lib.C.clipl_peak_bytes())
end

--- Bytes of freed large blocks kept for reuse (not live); clip.memory_trim() gives them back.
function clip.cached_bytes()
    return tonumber(lib.C.clipl_cached_bytes())
end

function clip.memory_trim()
    lib.C.clipl_memory_trim()
end

function clip.set_gc_soft_limit(bytes)
    lib.set_gc_soft_limit(bytes)
end

return clip
