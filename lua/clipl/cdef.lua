--- The cdef of libclipl: the declarations of engine/include/clipl.h, generated at build time into
-- clipl/clipl_h.lua (cmake/gen_cdef.cmake). Loading clipl.lib runs ffi.cdef on it once.
return require "clipl.clipl_h"
