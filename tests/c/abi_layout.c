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
    FIELD(clipl_matmul_opts, act);
    FIELD(clipl_matmul_opts, alpha);
    FIELD(clipl_matmul_opts, beta);
    FIELD(clipl_matmul_opts, scale);
    FIELD(clipl_matmul_opts, sum_scale);
    FIELD(clipl_matmul_opts, accum);
    FIELD(clipl_conv2d_opts, stride);
    FIELD(clipl_conv2d_opts, padding);
    FIELD(clipl_conv2d_opts, dilation);
    FIELD(clipl_conv2d_opts, groups);
    FIELD(clipl_conv2d_opts, act);
    FIELD(clipl_conv2d_opts, alpha);
    FIELD(clipl_conv2d_opts, beta);
    FIELD(clipl_draw_item, kind);
    FIELD(clipl_draw_item, cx);
    FIELD(clipl_draw_item, radius);
    FIELD(clipl_draw_item, angle);
    FIELD(clipl_draw_item, rgb);
    FIELD(clipl_draw_scene, background);
    FIELD(clipl_draw_scene, bg_a);
    FIELD(clipl_draw_scene, bg_b);
    FIELD(clipl_draw_scene, bg_angle);
    FIELD(clipl_draw_scene, bg_seed);
    FIELD(clipl_draw_scene, n_items);
    FIELD(clipl_draw_scene, items);
    printf("}\n");
    return 0;
}
