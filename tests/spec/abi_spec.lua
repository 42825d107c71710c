-- The FFI boundary: the cdef LuaJIT uses is exactly the header, every declared function exists in
-- the library, and every public struct has the same layout in LuaJIT as in C.
local ffi = require "ffi"
local clip = require "clipl"

local root = debug.getinfo(1, "S").source:match("^@(.*)/tests/spec/") or ".."
local build = os.getenv("CLIPL_LIB"):match("^(.*)/[^/]+$")

local read = require("helpers_env").read

describe("the FFI boundary", function()
    it("the cdef is the header with preprocessor lines and CLIPL_API removed", function()
        local header = read(root .. "/engine/include/clipl.h")
        header = header:gsub("#ifdef __cplusplus[^#]*#endif[^\n]*\n", "")
        header = ("\n" .. header):gsub("\n#[^\n]*", "\n"):sub(2)
        header = header:gsub("CLIPL_API ", "")
        assert.are.equal(header, require "clipl.cdef")
    end)

    it("every function declared in clipl.h is exported by libclipl", function()
        local cdef = require "clipl.cdef"
        local missing, count = {}, 0
        for name in cdef:gmatch("[%w_%*%s]+%f[%w_](clipl_[%w_]+)%s*%(") do
            count = count + 1
            local ok = pcall(function() return clip.lib.C[name] end)
            if not ok then
                missing[#missing + 1] = name
            end
        end
        assert.is_true(count > 20)
        assert.are.same({}, missing)
    end)

    it("struct layouts agree between the C compiler and LuaJIT", function()
        local p = assert(io.popen(build .. "/clipl_abi_layout"))
        local layout = assert(loadstring(p:read("*a")))()
        p:close()
        assert.is_true(#layout > 0)
        for _, row in ipairs(layout) do
            local struct, field, offset, size = row[1], row[2], row[3], row[4]
            assert.are.equal(size, ffi.sizeof(struct), struct .. " size")
            assert.are.equal(offset, ffi.offsetof(struct, field), struct .. "." .. field)
        end
    end)
end)
