/*
 * plain.h - helpers shared by the plain C ops (binary.c, reduce.c, index.c, join.c).
 */
#ifndef CLIPL_OPS_PLAIN_H
#define CLIPL_OPS_PLAIN_H

#include "internal.h"

/* Work (in elements) above which loops are split across OpenMP threads. */
enum { PLAIN_PAR_MIN = 32768, PLAIN_CHUNK = 8192 };

static inline bool plain_is_float(int dt)
{
    return dt == CLIPL_F32 || dt == CLIPL_BF16 || dt == CLIPL_F16;
}

static inline bool plain_is_int(int dt)
{
    return dt == CLIPL_I32 || dt == CLIPL_I64 || dt == CLIPL_U8;
}

/* The common dtype (see clipl.h, clipl_result_dtype); -1 for an unknown dtype. */
int clipl__common_dtype(int a, int b);

/* Broadcasts the shapes of a and b (NumPy rules) into shape/ndim; on mismatch records an error
 * "op: shapes AxB and CxD do not broadcast" and returns CLIPL_ESHAPE. */
int clipl__broadcast2(const char *op, const clipl_tensor *a, const clipl_tensor *b, int *ndim,
                      int64_t *shape);

/* Inline bf16 conversions (the same rounding as clipl__f32_to_bf16: nearest even, NaN kept
 * quiet), so that element loops need no call per element. */
static inline float plain_bf16_to_f32(uint16_t h)
{
    union {
        uint32_t u;
        float f;
    } v = {.u = (uint32_t)h << 16};
    return v.f;
}

static inline uint16_t plain_f32_to_bf16(float f)
{
    union {
        float f;
        uint32_t u;
    } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

/* Fast typed element access: float and int64 views of any dtype. */
static inline float plain_ldf(const char *p, int dt)
{
    switch (dt) {
    case CLIPL_F32: return *(const float *)p;
    case CLIPL_BF16: return plain_bf16_to_f32(*(const uint16_t *)p);
    case CLIPL_F16: return clipl__f16_to_f32(*(const uint16_t *)p);
    case CLIPL_I32: return (float)*(const int32_t *)p;
    case CLIPL_I64: return (float)*(const int64_t *)p;
    case CLIPL_U8: return (float)*(const uint8_t *)p;
    }
    return 0;
}

static inline int64_t plain_ldi(const char *p, int dt)
{
    switch (dt) {
    case CLIPL_I32: return *(const int32_t *)p;
    case CLIPL_I64: return *(const int64_t *)p;
    case CLIPL_U8: return *(const uint8_t *)p;
    default: return (int64_t)clipl__load(p, dt);
    }
}

static inline void plain_stf(char *p, int dt, float v)
{
    switch (dt) {
    case CLIPL_F32: *(float *)p = v; break;
    case CLIPL_BF16: *(uint16_t *)p = plain_f32_to_bf16(v); break;
    case CLIPL_F16: *(uint16_t *)p = clipl__f32_to_f16(v); break;
    default: clipl__store(p, dt, v); break;
    }
}

/* Integer store that wraps like a C cast (as PyTorch does on overflow). */
static inline void plain_sti(char *p, int dt, int64_t v)
{
    switch (dt) {
    case CLIPL_I32: *(int32_t *)p = (int32_t)(uint32_t)(uint64_t)v; break;
    case CLIPL_I64: *(int64_t *)p = v; break;
    case CLIPL_U8: *(uint8_t *)p = (uint8_t)(uint64_t)v; break;
    default: clipl__store(p, dt, (double)v); break;
    }
}

/* Pointers of row r (0 .. total/inner - 1) of an iterator that has not been advanced. */
static inline void plain_row_ptrs(const clipl__iter *it, int64_t r, char **out)
{
    for (int k = 0; k < it->n; k++)
        out[k] = it->ptr[k];
    for (int i = it->ndim - 2; i >= 0 && r > 0; i--) {
        int64_t idx = r % it->shape[i];
        r /= it->shape[i];
        for (int k = 0; k < it->n; k++)
            out[k] += idx * it->bstride[k][i];
    }
}

/* A new contiguous tensor or an error code in *rc. */
static inline clipl_tensor *plain_new(int dt, int ndim, const int64_t *shape, int *rc)
{
    clipl_tensor *t = clipl_tensor_empty(dt, ndim, shape);
    *rc = t ? CLIPL_OK : clipl_errcode();
    if (!t && *rc == CLIPL_OK)
        *rc = CLIPL_ENOMEM;
    return t;
}

/* Checks that an index tensor is i32 or i64. */
int clipl__check_index_dtype(const char *op, const clipl_tensor *index);

#endif /* CLIPL_OPS_PLAIN_H */
