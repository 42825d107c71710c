# Turns engine/include/clipl.h into lua/clipl/clipl_h.lua: the header's declarations as a Lua
# string for ffi.cdef. Preprocessor lines, C++ guards and the CLIPL_API export macro are removed;
# nothing else is changed, so the cdef and the header cannot drift apart.
file(READ ${IN} text)
string(REGEX REPLACE "#ifdef __cplusplus[^#]*#endif[^\n]*\n" "" text "${text}")
string(REGEX REPLACE "(^|\n)#[^\n]*" "\\1" text "${text}")
string(REPLACE "CLIPL_API " "" text "${text}")
file(WRITE ${OUT}.tmp "-- generated from engine/include/clipl.h by cmake/gen_cdef.cmake; do not edit\nreturn [==[\n${text}]==]\n")
file(RENAME ${OUT}.tmp ${OUT})
