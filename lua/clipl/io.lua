--- Weight and array files: npy, safetensors, PyTorch .pt (state dicts, checkpoints, TorchScript
-- archives) through engine/io.
--
--   local t = clip.load_npy("x.npy")                  -- a tensor (a writable copy)
--   clip.save_npy("y.npy", t)
--   local w, meta = clip.load_safetensors("m.safetensors")   -- name -> tensor, metadata strings
--   clip.save_safetensors("m.safetensors", w, {arch = "ViT-B/32"})
--   local w, meta, info = clip.load_weights("ViT-B-32.pt")   -- any format; info.format, info.names
--
-- Tensors loaded from safetensors and .pt files are zero-copy read-only views of the file mapping
-- (clone one to modify it); each keeps the mapping alive on its own, so the returned table can be
-- dropped piecemeal.
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, adopt = lib.C, lib.adopt
local is_tensor = tensor.is_tensor

local M = {}

local function raise_last(level)
    local msg = ffi.string(C.clipl_errmsg())
    C.clipl_errclear()
    error(msg ~= "" and msg or "clipl: io error", level + 1)
end

local function check_path(path, what, level)
    if type(path) ~= "string" or path == "" then
        error(what .. ": path must be a non-empty string, got " .. type(path), level + 1)
    end
end

-- The non-NULL result of a C loader open(path); errors name the caller of the caller (a load_*).
local function open_file(open, path, what)
    check_path(path, what, 3)
    local p = open(path)
    if p == nil then
        raise_last(3)
    end
    return p
end

-- Converts a C tensor dict into Lua tables and frees it.
local function unpack_tdict(d)
    d = ffi.gc(d, C.clipl_tdict_free)
    local tensors, names, meta = {}, {}, {}
    for i = 0, C.clipl_tdict_count(d) - 1 do
        local name = ffi.string(C.clipl_tdict_name(d, i))
        names[#names + 1] = name
        -- the dict's reference is borrowed: take one of our own
        tensors[name] = adopt(C.clipl_tensor_retain(C.clipl_tdict_tensor(d, i)))
    end
    for i = 0, C.clipl_tdict_meta_count(d) - 1 do
        meta[ffi.string(C.clipl_tdict_meta_key(d, i))] = ffi.string(C.clipl_tdict_meta_value(d, i))
    end
    local info = {format = ffi.string(C.clipl_tdict_format(d)), names = names}
    C.clipl_tdict_free(ffi.gc(d, nil))
    return tensors, meta, info
end

--- Loads an npy file (v1-v3; f32, f16, i32, i64, u8; bool as u8, f64 converted to f32) as a new
-- writable tensor.
function M.load_npy(path)
    return adopt(open_file(C.clipl_npy_load, path, "load_npy"))
end

--- Writes t as npy (v1, C order) atomically. bf16 is refused (numpy has no bfloat16).
function M.save_npy(path, t)
    check_path(path, "save_npy", 2)
    if not is_tensor(t) then
        error("save_npy: expected a tensor, got " .. type(t), 2)
    end
    if C.clipl_npy_save(path, t) ~= 0 then
        raise_last(2)
    end
end

--- Loads a safetensors file: a table name -> tensor, and the __metadata__ table (strings), and an
-- info table {format = "safetensors", names = {...in file order}}.
function M.load_safetensors(path)
    return unpack_tdict(open_file(C.clipl_safetensors_load, path, "load_safetensors"))
end

--- Loads any weights file (safetensors, PyTorch .pt zip or checkpoint, TorchScript archive, npy):
-- tensors by name, metadata (safetensors __metadata__; TorchScript input_resolution,
-- context_length, vocab_size; checkpoint scalars such as epoch), and {format, names}.
function M.load_weights(path)
    return unpack_tdict(open_file(C.clipl_load_weights, path, "load_weights"))
end

--- Writes a table name -> tensor (and an optional table of metadata strings) as safetensors,
-- atomically. Data is laid out by (element size desc, name), like the reference writer.
function M.save_safetensors(path, tensors, metadata)
    check_path(path, "save_safetensors", 2)
    if type(tensors) ~= "table" then
        error("save_safetensors: expected a table of name -> tensor, got " .. type(tensors), 2)
    end
    local names = {}
    for k, v in pairs(tensors) do
        if type(k) ~= "string" then
            error("save_safetensors: tensor names must be strings, got a " .. type(k) .. " key", 2)
        end
        if not is_tensor(v) then
            error("save_safetensors: '" .. k .. "' is not a tensor (" .. type(v) .. ")", 2)
        end
        names[#names + 1] = k
    end
    table.sort(names)
    local n = #names
    local cnames = ffi.new("const char *[?]", n + 1)
    local cts = ffi.new("clipl_tensor *[?]", n + 1)
    for i = 1, n do
        cnames[i - 1] = names[i]
        cts[i - 1] = tensors[names[i]]
    end
    local mkeys, mvals = {}, {}
    if metadata ~= nil then
        if type(metadata) ~= "table" then
            error("save_safetensors: metadata must be a table of strings, got " ..
                type(metadata), 2)
        end
        for k, v in pairs(metadata) do
            if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
                error("save_safetensors: metadata '" .. tostring(k) ..
                    "' must be a string key with a string (or number) value", 2)
            end
            mkeys[#mkeys + 1] = k
        end
        table.sort(mkeys)
        for i, k in ipairs(mkeys) do
            mvals[i] = tostring(metadata[k])
        end
    end
    local nm = #mkeys
    local ck = ffi.new("const char *[?]", nm + 1)
    local cv = ffi.new("const char *[?]", nm + 1)
    for i = 1, nm do
        ck[i - 1] = mkeys[i]
        cv[i - 1] = mvals[i]
    end
    -- names, mkeys and mvals keep the Lua strings alive during the call
    local rc = C.clipl_safetensors_save(path, n, cnames, cts, nm, ck, cv)
    if rc ~= 0 then
        raise_last(2)
    end
end

return M
