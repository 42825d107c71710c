/*
 * test_optim.c - the fused optimizer steps over flat buffers and clipl_tensor_rebind.
 *
 * References: torch.optim.AdamW / SGD evaluated here in double, element by element. Tolerance
 * 1e-6 relative to the largest value: the kernels compute in f32 (as PyTorch does for f32
 * parameters) and store parameters and state in f32, a few roundings of 6e-8 per step over 3
 * steps. Elements outside the ranges must not change at all, and the result must not depend on
 * the number of threads (each element is computed alone), so those checks are exact.
 */
#include "check.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum { N = 100003, STEPS = 3 };

/* two ranges with a gap between them and an untouched tail: [0, A_LEN) and [B_OFF, B_OFF + B_LEN)
 */
enum { A_LEN = 40000, B_OFF = 40017, B_LEN = 29983 };

static clipl_tensor *flat(clipl_generator *g, double lo, double hi)
{
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
    clipl_tensor_uniform_(t, g, lo, hi);
    return t;
}

static double *doubles(const clipl_tensor *t)
{
    double *d = malloc(sizeof *d * N);
    clipl_tensor_to_doubles(t, d, N);
    return d;
}

static clipl_tensor *from_doubles(const double *d)
{
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
    for (int64_t j = 0; j < N; j++)
        clipl_tensor_set_flat(t, j, d[j]);
    return t;
}

static bool same_bytes(const clipl_tensor *a, const clipl_tensor *b, int64_t from, int64_t to)
{
    return memcmp((const float *)a->ptr + from, (const float *)b->ptr + from,
                  sizeof(float) * (size_t)(to - from)) == 0;
}

static void release_all(clipl_tensor **ts, int n)
{
    for (int i = 0; i < n; i++)
        clipl_tensor_release(ts[i]);
}

static void test_adamw_flat(clipl_generator *gen)
{
    const int64_t off[2] = {0, B_OFF}, len[2] = {A_LEN, B_LEN};
    const double lr[2] = {1e-2, 3e-3}, wd[2] = {0.1, 0}, b1 = 0.9, b2 = 0.98, eps = 1e-6;
    clipl_tensor *p = flat(gen, -1, 1), *m = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N});
    clipl_tensor *v = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N}), *p1 = NULL, *m1 = NULL,
                 *v1 = NULL;
    clipl_tensor_clone(p, &p1), clipl_tensor_clone(m, &m1), clipl_tensor_clone(v, &v1);
    clipl_tensor *p0 = NULL;
    clipl_tensor_clone(p, &p0);
    double *rp = doubles(p), *rm = calloc(N, sizeof *rm), *rv = calloc(N, sizeof *rv);
    for (int s = 1; s <= STEPS; s++) {
        clipl_tensor *g = flat(gen, -1, 1);
        double *rg = doubles(g);
        const int64_t step[2] = {s + 2, s}; /* range A joined 2 steps earlier */
        clipl_set_num_threads(2);
        CHECK_OK(clipl_adamw_step_flat(p, g, m, v, 2, off, len, lr, wd, step, b1, b2, eps));
        clipl_set_num_threads(1);
        CHECK_OK(clipl_adamw_step_flat(p1, g, m1, v1, 2, off, len, lr, wd, step, b1, b2, eps));
        for (int r = 0; r < 2; r++)
            for (int64_t j = off[r]; j < off[r] + len[r]; j++) { /* torch.optim.AdamW */
                rp[j] *= 1 - lr[r] * wd[r];
                rm[j] = b1 * rm[j] + (1 - b1) * rg[j];
                rv[j] = b2 * rv[j] + (1 - b2) * rg[j] * rg[j];
                double mh = rm[j] / (1 - pow(b1, (double)step[r]));
                double vh = rv[j] / (1 - pow(b2, (double)step[r]));
                rp[j] -= lr[r] * mh / (sqrt(vh) + eps);
            }
        clipl_tensor_release(g);
        free(rg);
    }
    clipl_tensor *ref = from_doubles(rp);
    CHECK_CLOSE(p, ref, 1e-6, "adamw_flat vs double reference (2 ranges, 3 steps)");
    CHECK(same_bytes(p, p1, 0, N) && same_bytes(m, m1, 0, N) && same_bytes(v, v1, 0, N));
    CHECK(same_bytes(p, p0, A_LEN, B_OFF) && same_bytes(p, p0, B_OFF + B_LEN, N));
    /* errors name the argument */
    const int64_t over[2] = {0, A_LEN - 1}, step[2] = {1, 1};
    CHECK_ERR(clipl_adamw_step_flat(p, p, m, v, 2, over, len, lr, wd, step, b1, b2, eps),
              CLIPL_EINVAL, "overlaps");
    const int64_t out[1] = {N - 5}, out_len[1] = {6};
    CHECK_ERR(clipl_adamw_step_flat(p, p, m, v, 1, out, out_len, lr, wd, step, b1, b2, eps),
              CLIPL_EINVAL, "leaves the buffer");
    clipl_tensor *small = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N - 1});
    CHECK_ERR(clipl_adamw_step_flat(p, p, small, v, 2, off, len, lr, wd, step, b1, b2, eps),
              CLIPL_ESHAPE, "exp_avg");
    const int64_t step0[2] = {0, 1};
    CHECK_ERR(clipl_adamw_step_flat(p, p, m, v, 2, off, len, lr, wd, step0, b1, b2, eps),
              CLIPL_EINVAL, "step");
    CHECK_ERR(clipl_adamw_step_flat(NULL, p, m, v, 2, off, len, lr, wd, step, b1, b2, eps),
              CLIPL_EINVAL, "params");
    clipl_tensor *r[] = {p, m, v, p1, m1, v1, p0, ref, small};
    release_all(r, sizeof r / sizeof r[0]);
    free(rp), free(rm), free(rv);
}

static void test_sgd_flat(clipl_generator *gen)
{
    const int64_t off[2] = {0, B_OFF}, len[2] = {A_LEN, B_LEN};
    const double lr[2] = {0.1, 0.05}, wd[2] = {0.01, 0}, mom = 0.9, damp = 0.1;
    clipl_tensor *p = flat(gen, -1, 1), *b = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N});
    clipl_tensor *p0 = NULL;
    clipl_tensor_clone(p, &p0);
    double *rp = doubles(p), *rb = calloc(N, sizeof *rb);
    for (int s = 0; s < STEPS; s++) {
        clipl_tensor *g = flat(gen, -1, 1);
        double *rg = doubles(g);
        const int first[2] = {s == 0, s == 1}; /* range B joins one step later */
        if (s == 0) {
            CHECK_OK(clipl_sgd_step_flat(p, g, b, 1, off, len, lr, wd, first, mom, damp, 1));
        } else {
            CHECK_OK(clipl_sgd_step_flat(p, g, b, 2, off, len, lr, wd, first, mom, damp, 1));
        }
        for (int r = 0; r < (s == 0 ? 1 : 2); r++)
            for (int64_t j = off[r]; j < off[r] + len[r]; j++) { /* torch.optim.SGD, nesterov */
                double d = rg[j] + wd[r] * rp[j];
                rb[j] = first[r] ? d : mom * rb[j] + (1 - damp) * d;
                rp[j] -= lr[r] * (d + mom * rb[j]);
            }
        clipl_tensor_release(g);
        free(rg);
    }
    clipl_tensor *ref = from_doubles(rp);
    CHECK_CLOSE(p, ref, 1e-6, "sgd_flat nesterov vs double reference (2 ranges, 3 steps)");
    CHECK(same_bytes(p, p0, A_LEN, B_OFF) && same_bytes(p, p0, B_OFF + B_LEN, N));
    CHECK_ERR(clipl_sgd_step_flat(p, p, NULL, 2, off, len, lr, wd, NULL, mom, damp, 0),
              CLIPL_EINVAL, "momentum_buf");
    clipl_tensor *r[] = {p, b, p0, ref};
    release_all(r, sizeof r / sizeof r[0]);
    free(rp), free(rb);
}

static void test_rebind(void)
{
    /* a transposed view [3, 2] of a [2, 3] tensor moves into a storage at offset 5 */
    float data[6] = {1, 2, 3, 4, 5, 6};
    clipl_tensor *a = clipl_tensor_from_data(CLIPL_F32, 2, (int64_t[]){2, 3}, data, sizeof data);
    clipl_tensor *t = NULL, *want = NULL;
    clipl_tensor_transpose(a, &t, 0, 1);
    clipl_tensor_clone(t, &want);
    clipl_storage *s = clipl_storage_new(16 * sizeof(float));
    CHECK_OK(clipl_tensor_rebind(t, s, 5));
    CHECK(t->storage == s && t->offset == 5 && clipl_tensor_is_contiguous(t));
    CHECK(t->ptr == (float *)clipl_storage_data(s) + 5);
    CHECK(check_max_abs(t, want) == 0);
    float after[6]; /* the old storage keeps its data */
    memcpy(after, a->ptr, sizeof after);
    CHECK(memcmp(after, data, sizeof data) == 0);
    /* rebinding where it already is changes nothing */
    CHECK_OK(clipl_tensor_rebind(t, s, 5));
    CHECK(check_max_abs(t, want) == 0);
    /* a storage too small for the tensor from offset on is refused, t unchanged */
    CHECK_ERR(clipl_tensor_rebind(t, s, 11), CLIPL_ESHAPE, "storage");
    CHECK(t->storage == s && t->offset == 5);
    CHECK_ERR(clipl_tensor_rebind(NULL, s, 0), CLIPL_EINVAL, "NULL");
    clipl_storage_release(s); /* t keeps the storage alive */
    CHECK(check_max_abs(t, want) == 0);
    clipl_tensor *r[] = {a, t, want};
    release_all(r, sizeof r / sizeof r[0]);
}

int main(void)
{
    clipl_generator *gen = clipl_generator_new(99);
    test_rebind();
    test_adamw_flat(gen);
    test_sgd_flat(gen);
    clipl_generator_free(gen);
    return check_done("optim");
}
