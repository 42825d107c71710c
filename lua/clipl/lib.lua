--- The FFI boundary: loads libclipl, declares its API from the generated cdef, and provides the
-- helpers every binding module uses (check, adopt). Runs once at module load.
local ffi = require "ffi"

local M = {}

local config = require "clipl.config"
M.config = config

ffi.cdef(require "clipl.cdef")

local function load_lib()
    local candidates = {}
    if os.getenv("CLIPL_LIB") then
        candidates[#candidates + 1] = os.getenv("CLIPL_LIB")
    end
    candidates[#candidates + 1] = config.lib
    candidates[#candidates + 1] = "clipl"
    local errs = {}
    for _, path in ipairs(candidates) do
        local ok, lib = pcall(ffi.load, path)
        if ok then
            return lib
        end
        errs[#errs + 1] = "  " .. tostring(lib)
    end
    error("clipl: cannot load libclipl:\n" .. table.concat(errs, "\n") ..
        "\nBuild it with scripts/setup, or set CLIPL_LIB to the path of libclipl.so", 0)
end

local C = load_lib()
M.C = C

--- Raises the library's last error as a Lua error (level 2 = the caller of the public function)
-- when rc is not CLIPL_OK.
function M.check(rc, level)
    if rc ~= 0 then
        local msg = ffi.string(C.clipl_errmsg())
        C.clipl_errclear()
        error(msg ~= "" and msg or ("clipl error " .. tonumber(rc)), (level or 2) + 1)
    end
end

--- Raises the last error when a constructor returned NULL.
function M.check_ptr(p, level)
    if p == nil then
        local msg = ffi.string(C.clipl_errmsg())
        C.clipl_errclear()
        error(msg ~= "" and msg or "clipl: allocation failed", (level or 2) + 1)
    end
    return p
end

-- Tensors cross into Lua as references (`clipl_tensor &`), not pointers: a reference reads its
-- fields like the struct, and `t[i]` reaches the metatable instead of doing pointer arithmetic.
local tensor_ref = ffi.typeof("clipl_tensor &")
local release = C.clipl_tensor_release

-- Soft limit of live tensor bytes past which Lua runs a collection, so that loops that create
-- and drop large tensors stay in bounded memory even though the GC cannot see their size.
local gc_soft_limit = 256 * 1024 * 1024
local gc_next = gc_soft_limit

function M.set_gc_soft_limit(bytes)
    gc_soft_limit = bytes
    gc_next = math.max(gc_soft_limit, tonumber(C.clipl_live_bytes()) + gc_soft_limit)
end

local function maybe_collect()
    local live = tonumber(C.clipl_live_bytes())
    if live > gc_next then
        collectgarbage("collect")
        live = tonumber(C.clipl_live_bytes())
        gc_next = live + gc_soft_limit
    end
end

--- Adopts one new reference to a tensor (a `clipl_tensor *` from C): the only place where Lua takes
-- ownership. Returns the Lua handle.
function M.adopt(p)
    if p == nil then
        M.check_ptr(p, 3)
    end
    maybe_collect()
    return ffi.gc(ffi.cast(tensor_ref, p), release)
end

--- An output slot for ops (`clipl_tensor **dst`). Lua is single-threaded, so one is reused.
local slot = ffi.new("clipl_tensor *[1]")
M.slot = slot

--- Calls fn(..., slot) and adopts the tensor it produced (fn returns a status).
function M.call_out(fn, ...)
    slot[0] = nil
    local rc = fn(...)
    if rc ~= 0 then
        M.check(rc, 3)
    end
    return M.adopt(slot[0])
end

local shape_buf = ffi.new("int64_t[8]")
--- Fills a reusable int64_t[8] from a Lua table of sizes (or varargs already packed); returns
-- the buffer and the count. Does not validate beyond the count.
function M.shape_arg(sizes, what)
    local n = #sizes
    if n > 8 then
        error((what or "shape") .. ": at most 8 dims are supported, got " .. n, 3)
    end
    for i = 1, n do
        local s = sizes[i]
        if type(s) ~= "number" then
            error((what or "shape") .. ": size " .. i .. " is not a number", 3)
        end
        shape_buf[i - 1] = s
    end
    return shape_buf, n
end

return M
