/*
 * internal.h - helpers shared between libclipl's source files (not part of the public API).
 */
#ifndef CLIPL_INTERNAL_H
#define CLIPL_INTERNAL_H

#include "clipl.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CLIPL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CLIPL_PRINTF(a, b)
#endif

/* Records an error for this thread and returns code (so `return clipl__err(...)` reads well). */
int clipl__err(int code, const char *fmt, ...) CLIPL_PRINTF(2, 3);
/* Like clipl__err, but keeps the current message and puts "prefix: " in front of it. */
int clipl__err_prefix(const char *fmt, ...) CLIPL_PRINTF(1, 2);
/* Formats a shape as "2x3x4" (0-d: "scalar") into buf. Returns buf. */
char *clipl__shape_str(char *buf, size_t size, int ndim, const int64_t *shape);
/* Same, for a tensor. */
char *clipl__tshape(char *buf, size_t size, const clipl_tensor *t);

/* Normalises a possibly negative dim against ndim (use ndim+1 for insert positions); returns -1
 * when out of range. */
int clipl__wrap_dim(int dim, int ndim);

/* Allocation that counts toward clipl_live_bytes. 64-byte aligned. */
void *clipl__alloc(size_t nbytes);
void *clipl__calloc(size_t nbytes);
void clipl__free(void *p, size_t nbytes);

/* A new storage of nbytes, zeroed or not (outputs that are about to be overwritten skip it). */
clipl_storage *clipl__storage_new(size_t nbytes, bool zero);
/* A new tensor header over storage s (retained). No checks. */
clipl_tensor *clipl__tensor_wrap(clipl_storage *s, int dtype, int ndim, const int64_t *shape,
                                 const int64_t *stride, int64_t offset);
/* Fills stride with the row-major strides of shape. */
void clipl__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
/* A read-only check for ops that write: returns an error naming `what` if t cannot be written. */
int clipl__check_writable(const clipl_tensor *t, const char *what);
/* Shape equality. */
bool clipl__same_shape(const clipl_tensor *a, const clipl_tensor *b);

/* Float conversions (round to nearest even; NaN stays NaN). */
uint16_t clipl__f32_to_bf16(float f);
float clipl__bf16_to_f32(uint16_t h);
uint16_t clipl__f32_to_f16(float f);
float clipl__f16_to_f32(uint16_t h);

/* Reads element i (of a strided walk's current address) as double / writes a double. */
double clipl__load(const void *p, int dtype);
void clipl__store(void *p, int dtype, double v);

/* Iterates the logical elements of up to 3 tensors of the same shape in row-major order.
 * Usage:
 *   clipl__iter it; clipl__iter_init(&it, ndim, shape, 2, (const clipl_tensor *[]){a, b});
 *   do { char *pa = it.ptr[0], *pb = it.ptr[1]; ... } while (clipl__iter_next(&it));
 * The innermost dim is exposed as it.inner (count) and it.inner_stride[k] (bytes) so loops can
 * run over it directly: call clipl__iter_next_outer after processing `inner` elements. */
typedef struct clipl__iter {
    int ndim;
    int n;
    int64_t shape[CLIPL_MAX_DIMS];
    int64_t bstride[3][CLIPL_MAX_DIMS]; /* byte strides, broadcast dims 0 */
    int64_t idx[CLIPL_MAX_DIMS];
    char *ptr[3];
    int64_t inner;           /* size of the innermost dim (1 for 0-d) */
    int64_t inner_stride[3]; /* byte stride of the innermost dim per tensor */
    int64_t total;           /* total elements */
} clipl__iter;
/* Tensors may have fewer dims than ndim or size-1 dims (broadcast, right-aligned). */
void clipl__iter_init(clipl__iter *it, int ndim, const int64_t *shape, int n,
                      const clipl_tensor *const *ts);
/* Advances past one innermost row. Returns false when done. */
bool clipl__iter_next_outer(clipl__iter *it);

/* Interrupt flag check for long loops. */
bool clipl__should_stop(void);

#endif /* CLIPL_INTERNAL_H */
