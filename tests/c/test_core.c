/*
 * test_core.c - tensors: creation, views, copies across strides and dtypes, conversions, RNG,
 * storages and errors. References are computed here directly from the definitions.
 */
#include "check.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static clipl_tensor *arange_f32(int ndim, const int64_t *shape)
{
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, ndim, shape);
    float *p = t->ptr;
    for (int64_t i = 0; i < clipl_tensor_numel(t); i++)
        p[i] = (float)i;
    return t;
}

static double at(const clipl_tensor *t, int64_t i)
{
    double v = NAN;
    clipl_tensor_get_flat(t, i, &v);
    return v;
}

static void test_create(void)
{
    int64_t shape[] = {2, 3, 4};
    clipl_tensor *t = clipl_tensor_zeros(CLIPL_F32, 3, shape);
    CHECK(t && t->ndim == 3 && clipl_tensor_numel(t) == 24);
    CHECK(t->strides[0] == 12 && t->strides[1] == 4 && t->strides[2] == 1);
    CHECK(((uintptr_t)t->ptr & 63) == 0);
    CHECK(clipl_tensor_is_contiguous(t));
    CHECK(clipl_live_bytes() >= 96);
    clipl_tensor_release(t);

    int64_t bad[] = {2, -1};
    CHECK(clipl_tensor_empty(CLIPL_F32, 2, bad) == NULL);
    CHECK(strstr(clipl_errmsg(), "negative size") != NULL);
    CHECK(clipl_tensor_empty(42, 1, shape) == NULL);
    CHECK(clipl_tensor_empty(CLIPL_F32, 9, shape) == NULL);
    clipl_errclear();

    float src[6] = {1, 2, 3, 4, 5, 6};
    int64_t s23[] = {2, 3};
    t = clipl_tensor_from_data(CLIPL_F32, 2, s23, src, sizeof src);
    CHECK(t && at(t, 5) == 6);
    clipl_tensor_release(t);
    CHECK(clipl_tensor_from_data(CLIPL_F32, 2, s23, src, 8) == NULL);
    clipl_errclear();

    int64_t s0[] = {0, 5};
    t = clipl_tensor_zeros(CLIPL_F32, 2, s0);
    CHECK(t && clipl_tensor_numel(t) == 0);
    clipl_tensor_release(t);
}

static void test_views(void)
{
    int64_t shape[] = {2, 3, 4};
    clipl_tensor *t = arange_f32(3, shape), *v = NULL, *w = NULL;

    CHECK_OK(clipl_tensor_narrow(t, &v, 2, 1, 2)); /* [2,3,2] from column 1 */
    CHECK(v->shape[2] == 2 && at(v, 0) == 1 && at(v, 1) == 2 && at(v, 2) == 5);
    CHECK(!clipl_tensor_is_contiguous(v));
    CHECK(v->storage == t->storage);
    clipl_tensor_release(v);

    CHECK_OK(clipl_tensor_select(t, &v, 1, 2)); /* [2,4]: rows t[:,2,:] */
    CHECK(v->ndim == 2 && at(v, 0) == 8 && at(v, 4) == 20);
    clipl_tensor_release(v);

    CHECK_OK(clipl_tensor_transpose(t, &v, 0, -1)); /* [4,3,2] */
    CHECK(v->shape[0] == 4 && at(v, 1) == 12);
    CHECK_ERR(clipl_tensor_view(v, &w, 1, (int64_t[]){24}), CLIPL_ESHAPE, "reshape");
    CHECK_OK(clipl_tensor_reshape(v, &w, 1, (int64_t[]){24}));
    for (int i = 0; i < 24; i++) {
        int a = i / 6, b = (i / 2) % 3, c = i % 2; /* w[i] = t[c, b, a] */
        CHECK(at(w, i) == c * 12 + b * 4 + a);
    }
    clipl_tensor_release(w);
    clipl_tensor_release(v);

    int perm[] = {2, 0, 1};
    CHECK_OK(clipl_tensor_permute(t, &v, 3, perm)); /* [4,2,3]: v[i,j,k] = t[j,k,i] */
    CHECK(v->shape[0] == 4 && v->shape[1] == 2 && v->shape[2] == 3);
    CHECK(at(v, 1 * 6 + 1 * 3 + 2) == 1 * 12 + 2 * 4 + 1);
    clipl_tensor_release(v);
    CHECK_ERR(clipl_tensor_permute(t, &v, 3, (int[]){0, 0, 1}), CLIPL_EINVAL, "permutation");

    CHECK_OK(clipl_tensor_view(t, &v, 2, (int64_t[]){6, -1}));
    CHECK(v->shape[1] == 4 && at(v, 23) == 23);
    clipl_tensor_release(v);
    CHECK_ERR(clipl_tensor_view(t, &v, 2, (int64_t[]){5, -1}), CLIPL_ESHAPE, "cannot infer");

    /* view of a narrowed tensor where the strides allow it: merge the first two dims */
    CHECK_OK(clipl_tensor_narrow(t, &v, 2, 0, 2)); /* [2,3,2] strides 12,4,1 */
    CHECK_OK(clipl_tensor_view(v, &w, 2, (int64_t[]){6, 2}));
    CHECK(at(w, 2) == 4 && at(w, 11) == 21);
    clipl_tensor_release(w);
    clipl_tensor_release(v);

    CHECK_OK(clipl_tensor_unsqueeze(t, &v, 1));
    CHECK(v->ndim == 4 && v->shape[1] == 1);
    CHECK_OK(clipl_tensor_squeeze(v, &w, 1));
    CHECK(w->ndim == 3 && clipl__same_shape(w, t));
    clipl_tensor_release(w);
    CHECK_ERR(clipl_tensor_squeeze(v, &w, 0), CLIPL_ESHAPE, "size 2");
    CHECK_OK(clipl_tensor_squeeze(v, &w, CLIPL_ALL_DIMS));
    CHECK(w->ndim == 3);
    clipl_tensor_release(w);
    clipl_tensor_release(v);

    clipl_tensor *row = NULL;
    CHECK_OK(clipl_tensor_select(t, &row, 0, 1));    /* [3,4] */
    CHECK_OK(clipl_tensor_narrow(row, &v, 0, 0, 1)); /* [1,4] */
    CHECK_OK(clipl_tensor_expand(v, &w, 3, (int64_t[]){5, 3, -1}));
    CHECK(w->shape[0] == 5 && w->strides[0] == 0 && w->strides[1] == 0 && at(w, 13) == 13);
    clipl_tensor_release(w);
    CHECK_ERR(clipl_tensor_expand(row, &w, 2, (int64_t[]){3, 5}), CLIPL_ESHAPE, "expand");
    clipl_tensor_release(v);
    clipl_tensor_release(row);

    CHECK_ERR(clipl_tensor_narrow(t, &v, 0, 1, 2), CLIPL_EINDEX, "out of range");
    CHECK_ERR(clipl_tensor_select(t, &v, 3, 0), CLIPL_EINDEX, "dim 3");
    CHECK_ERR(clipl_tensor_select(t, &v, 0, 2), CLIPL_EINDEX, "index 2");
    clipl_tensor_release(t);
}

static void test_copy_and_convert(void)
{
    int64_t shape[] = {5, 7};
    clipl_tensor *t = arange_f32(2, shape), *tt = NULL, *c = NULL;
    CHECK_OK(clipl_tensor_transpose(t, &tt, 0, 1));
    CHECK_OK(clipl_tensor_contiguous(tt, &c));
    CHECK(clipl_tensor_is_contiguous(c) && c->storage != t->storage);
    for (int i = 0; i < 35; i++)
        CHECK(at(c, i) == (i % 5) * 7 + i / 5);
    clipl_tensor_release(c);

    /* every dtype pair, through a transposed source */
    for (int d = 0; d <= CLIPL_U8; d++) {
        clipl_tensor *x = NULL, *back = NULL;
        CHECK_OK(clipl_tensor_to(tt, &x, d));
        CHECK_OK(clipl_tensor_to(x, &back, CLIPL_F32));
        CHECK(check_max_abs(back, tt) == 0); /* small integers are exact in every dtype */
        clipl_tensor_release(x);
        clipl_tensor_release(back);
    }

    /* broadcast copy into a strided destination */
    clipl_tensor *row = NULL;
    CHECK_OK(clipl_tensor_select(t, &row, 0, 2)); /* [7] = 14..20 */
    CHECK_ERR(clipl_tensor_copy_(tt, row), CLIPL_ESHAPE, "7 does not broadcast to destination 7x5");
    clipl_tensor_release(row);
    clipl_tensor *col = clipl_tensor_empty(CLIPL_F32, 2, (int64_t[]){7, 1});
    for (int i = 0; i < 7; i++)
        clipl_tensor_set_flat(col, i, 100 + i);
    CHECK_OK(clipl_tensor_copy_(tt, col)); /* writes t[j][i] = 100 + i */
    for (int i = 0; i < 35; i++)
        CHECK(at(t, i) == 100 + i % 7);
    CHECK_OK(clipl_tensor_fill_(tt, 2.5));
    CHECK(at(t, 34) == 2.5);
    clipl_tensor_release(col);
    clipl_tensor_release(tt);
    clipl_tensor_release(t);
}

/* The number of non-NaN 16-bit values h (of all 65536) with to_half(to_f32(h)) != h. */
static int roundtrip_failures(float (*to_f32)(uint16_t), uint16_t (*to_half)(float))
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = to_f32((uint16_t)h);
        if (!isnan(f) && to_half(f) != h)
            bad++;
    }
    return bad;
}

/* bf16/f16 conversion: exhaustive checks against the definitions */
static void test_half_formats(void)
{
    /* f16 -> f32 -> f16 is the identity for every non-NaN half */
    CHECK(roundtrip_failures(clipl__f16_to_f32, clipl__f32_to_f16) == 0);
    /* f16 values: exact powers, subnormals, overflow */
    CHECK(clipl__f16_to_f32(0x3c00) == 1.0f);
    CHECK(clipl__f16_to_f32(0x0001) == ldexpf(1, -24));
    CHECK(clipl__f16_to_f32(0x7bff) == 65504.0f);
    CHECK(clipl__f32_to_f16(65520.0f) == 0x7c00); /* rounds to infinity */
    CHECK(clipl__f32_to_f16(65519.0f) == 0x7bff);
    /* ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> 1 */
    CHECK(clipl__f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00);
    CHECK(clipl__f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02);
    /* halfway between the two smallest subnormals -> even (0) */
    CHECK(clipl__f32_to_f16(ldexpf(1, -25)) == 0x0000);
    CHECK(clipl__f32_to_f16(3 * ldexpf(1, -25)) == 0x0002);
    CHECK(isnan(clipl__f16_to_f32(clipl__f32_to_f16(NAN))));

    /* bf16: every value against round-to-nearest-even computed in double */
    CHECK(roundtrip_failures(clipl__bf16_to_f32, clipl__f32_to_bf16) == 0);
    CHECK(clipl__f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3f80); /* tie -> even */
    CHECK(clipl__f32_to_bf16(1.0f + 3 * ldexpf(1, -8)) == 0x3f82);
    CHECK(clipl__f32_to_bf16(1.0f + ldexpf(1, -8) + ldexpf(1, -20)) == 0x3f81);
    CHECK(isnan(clipl__bf16_to_f32(clipl__f32_to_bf16(NAN))));
}

static void test_random(void)
{
    int64_t shape[] = {1000};
    clipl_generator *g = clipl_generator_new(42);
    clipl_tensor *a = clipl_tensor_empty(CLIPL_F32, 1, shape);
    clipl_tensor *b = clipl_tensor_empty(CLIPL_F32, 1, shape);
    CHECK_OK(clipl_tensor_normal_(a, g, 0, 1));
    clipl_generator_seed(g, 42);
    CHECK_OK(clipl_tensor_normal_(b, g, 0, 1));
    CHECK(check_max_abs(a, b) == 0);
    double mean = 0, var = 0;
    for (int i = 0; i < 1000; i++)
        mean += at(a, i) / 1000;
    for (int i = 0; i < 1000; i++)
        var += (at(a, i) - mean) * (at(a, i) - mean) / 999;
    /* 1000 samples: the mean's standard error is 0.032, the variance's about 0.045 */
    CHECK(fabs(mean) < 0.15 && fabs(var - 1) < 0.2);
    CHECK_OK(clipl_tensor_uniform_(a, g, 2, 3));
    double lo = 10, hi = -10;
    for (int i = 0; i < 1000; i++) {
        lo = fmin(lo, at(a, i));
        hi = fmax(hi, at(a, i));
    }
    CHECK(lo >= 2 && hi < 3 && hi - lo > 0.95);
    uint64_t st[4];
    clipl_generator_get_state(g, st);
    CHECK_OK(clipl_tensor_uniform_(a, g, 0, 1));
    clipl_generator_set_state(g, st);
    CHECK_OK(clipl_tensor_uniform_(b, g, 0, 1));
    CHECK(check_max_abs(a, b) == 0);
    clipl_tensor *i32 = clipl_tensor_empty(CLIPL_I32, 1, shape);
    CHECK_ERR(clipl_tensor_normal_(i32, g, 0, 1), CLIPL_EINVAL, "float");
    clipl_tensor_release(i32);
    clipl_tensor_release(a);
    clipl_tensor_release(b);
    clipl_generator_free(g);
}

static void test_storage_and_mapping(void)
{
    char path[] = "/tmp/clipl_test_core_XXXXXX";
    int fd = mkstemp(path);
    float vals[16];
    for (int i = 0; i < 16; i++)
        vals[i] = (float)i * 0.5f;
    CHECK(write(fd, "HEADER!!", 8) == 8);
    CHECK(write(fd, vals, sizeof vals) == (ssize_t)sizeof vals);
    close(fd);

    int64_t before = clipl_live_bytes();
    clipl_storage *s = clipl_storage_map_file(path, 8, sizeof vals);
    CHECK(s && clipl_storage_readonly(s));
    CHECK(clipl_live_bytes() == before); /* mappings are not counted as live heap bytes */
    CHECK(clipl_mapped_bytes() > 0);
    clipl_tensor *t =
        clipl_tensor_new_view(s, CLIPL_F32, 2, (int64_t[]){4, 4}, (int64_t[]){4, 1}, 0);
    CHECK(t && (t->flags & CLIPL_TF_READONLY) && at(t, 15) == 7.5);
    CHECK_ERR(clipl_tensor_fill_(t, 0), CLIPL_EINVAL, "read-only");
    CHECK(clipl_tensor_new_view(s, CLIPL_F32, 1, (int64_t[]){17}, (int64_t[]){1}, 0) == NULL);
    clipl_errclear();
    clipl_tensor *c = NULL;
    CHECK_OK(clipl_tensor_clone(t, &c));
    CHECK(!(c->flags & CLIPL_TF_READONLY));
    CHECK_OK(clipl_tensor_fill_(c, 1));
    clipl_storage_release(s);
    clipl_tensor_release(t); /* the view kept the mapping alive until here */
    clipl_tensor_release(c);
    CHECK(clipl_mapped_bytes() == 0);

    CHECK(clipl_storage_map_file(path, 8, 1000) == NULL);
    CHECK(strstr(clipl_errmsg(), "truncated") != NULL && strstr(clipl_errmsg(), path) != NULL);
    CHECK(clipl_storage_map_file("/nonexistent/x", 0, 4) == NULL);
    CHECK(clipl_errcode() == CLIPL_EIO);
    clipl_errclear();
    unlink(path);
}

static void test_reset_and_accounting(void)
{
    int64_t before = clipl_live_bytes();
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){1 << 20});
    CHECK(clipl_live_bytes() - before == 4 << 20);
    CHECK(clipl_peak_bytes() >= before + (4 << 20));
    clipl_tensor_retain(t);
    CHECK(clipl_tensor_reset(t) == 0); /* another reference: nothing freed */
    clipl_tensor_release(t);
    CHECK(clipl_tensor_reset(t) == 1);
    CHECK(clipl_live_bytes() == before);
    CHECK(t->ndim == 1 && t->shape[0] == 0);
    CHECK(clipl_tensor_reset(t) == 1); /* twice is fine */
    clipl_tensor_release(t);
}

/* Freed large blocks are reused for the same size and are not live bytes; trim releases them. */
static void test_block_cache(void)
{
    int64_t shape[] = {1 << 20}; /* 4 MiB of f32 */
    clipl_memory_trim();
    int64_t live = clipl_live_bytes();
    clipl_tensor *a = clipl_tensor_empty(CLIPL_F32, 1, shape);
    void *first = a->ptr;
    clipl_tensor_release(a);
    CHECK(clipl_live_bytes() == live);
#if !defined(__SANITIZE_ADDRESS__)
    CHECK(clipl_cached_bytes() >= (4 << 20));
    a = clipl_tensor_empty(CLIPL_F32, 1, shape);
    CHECK(a->ptr == first); /* the same block again: no fresh pages */
    CHECK(clipl_cached_bytes() == 0);
    clipl_tensor_release(a);
#else
    (void)first;
    CHECK(clipl_cached_bytes() == 0); /* off under ASan: use-after-free stays detectable */
#endif
    /* zeros() on a reused block is still zero */
    a = clipl_tensor_empty(CLIPL_F32, 1, shape);
    clipl_tensor_fill_(a, 7);
    clipl_tensor_release(a);
    a = clipl_tensor_zeros(CLIPL_F32, 1, shape);
    double v = -1;
    clipl_tensor_get_flat(a, (1 << 20) - 1, &v);
    CHECK(v == 0);
    clipl_tensor_release(a);
    clipl_memory_trim();
    CHECK(clipl_cached_bytes() == 0);
}

int main(void)
{
    test_create();
    test_views();
    test_copy_and_convert();
    test_half_formats();
    test_random();
    test_storage_and_mapping();
    test_reset_and_accounting();
    test_block_cache();
    return check_done("core");
}
