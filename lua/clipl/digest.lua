--- SHA-256 digests of strings and tensors (libcrypto through libclipl), for cache keys.
--   local h = require("clipl.digest").new(); h:update("text"); h:update(tensor); print(h:hex())
local ffi = require "ffi"
local lib = require "clipl.lib"
local tensor = require "clipl.tensor"

local C, check = lib.C, lib.check

local M = {}

local Digest = {}
Digest.__index = Digest

function M.new()
    local h = lib.check_ptr(C.clipl_sha256_new())
    return setmetatable({h = ffi.gc(h, C.clipl_sha256_free)}, Digest)
end

--- Adds a string or a tensor (its dtype, shape and values).
function Digest:update(x)
    if tensor.is_tensor(x) then
        check(C.clipl_sha256_update_tensor(self.h, x))
    else
        x = tostring(x)
        check(C.clipl_sha256_update(self.h, x, #x))
    end
    return self
end

--- The digest as 64 hex digits (the state restarts empty).
function Digest:hex()
    local out = ffi.new("char[65]")
    check(C.clipl_sha256_final(self.h, out))
    return ffi.string(out)
end

--- The SHA-256 of a string, in hex.
function M.sha256(s)
    return M.new():update(s):hex()
end

return M
