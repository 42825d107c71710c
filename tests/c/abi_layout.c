/*
 * abi_layout.c - prints sizeof/offsetof of every public struct as a Lua table, so that
 * tests/spec/abi_spec.lua can compare them with what LuaJIT's ffi computes from the cdef.
 * Add every struct that clipl.h makes public here.
 */
#include "clipl.h"

#include <stddef.h>
#include <stdio.h>

#define FIELD(s, f) printf("  {\"%s\", \"%s\", %zu, %zu},\n", #s, #f, offsetof(s, f), sizeof(s))

int main(void)
{
    printf("return {\n");
    FIELD(clipl_tensor, dt);
    FIELD(clipl_tensor, ndim);
    FIELD(clipl_tensor, shape);
    FIELD(clipl_tensor, strides);
    FIELD(clipl_tensor, offset);
    FIELD(clipl_tensor, ptr);
    FIELD(clipl_tensor, storage);
    FIELD(clipl_tensor, refcount);
    FIELD(clipl_tensor, flags);
    FIELD(clipl_tensor, ag);
    printf("}\n");
    return 0;
}
