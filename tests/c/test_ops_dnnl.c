/*
 * test_ops_dnnl.c - the oneDNN-backed ops against plain double-precision references written here.
 *
 * Tolerances (relative to the largest reference value, see check_rel_err):
 *   F32_TOL 1e-5: f32 keeps 24 bits (6e-8 per rounding); the sums here have at most ~100 terms of
 *     size <= 1, so accumulated rounding stays below ~1e-6 relative; transcendental kernels in
 *     oneDNN (exp, erf, tanh) are accurate to a few ulp. 1e-5 leaves a 10x margin.
 *   BF16_TOL 1e-2: bf16 keeps 8 bits of mantissa (relative rounding 2^-9 = 2e-3). Inputs are
 *     rounded to bf16 before the reference reads them, so only the rounding of the output (and of
 *     intermediates such as the attention probabilities) remains: a few 2^-9, i.e. < 1e-2.
 */
#include "../../engine/nn/nn.h"
#include "../../engine/ops/dnnl_util.h"
#include "check.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define F32_TOL 1e-5
#define BF16_TOL 1e-2

static clipl_generator *gen;

/* A random tensor U[-1, 1) in dtype (bf16: drawn in f32 then rounded). */
static clipl_tensor *rnd(int dtype, int ndim, const int64_t *shape)
{
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, ndim, shape);
    clipl_tensor_uniform_(t, gen, -1, 1);
    if (dtype == CLIPL_F32)
        return t;
    clipl_tensor *r = NULL;
    clipl_tensor_to(t, &r, dtype);
    clipl_tensor_release(t);
    return r;
}
#define RND(dt, ...) rnd((dt), sizeof((int64_t[]){__VA_ARGS__}) / 8, (int64_t[]){__VA_ARGS__})

static double *dbl(const clipl_tensor *t)
{
    int64_t n = clipl_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    clipl_tensor_to_doubles(t, d, n);
    return d;
}

/* An f32 tensor holding the reference values (frees d). */
static clipl_tensor *ref_tensor(double *d, int ndim, const int64_t *shape)
{
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, ndim, shape);
    int64_t n = clipl_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        ((float *)t->ptr)[i] = (float)d[i];
    free(d);
    return t;
}

static double tol_for(int dtype) { return dtype == CLIPL_F32 ? F32_TOL : BF16_TOL; }

static double act_ref(int act, double x, double a, double b)
{
    switch (act) {
    case CLIPL_ACT_NONE: return x;
    case CLIPL_ACT_RELU: return x > 0 ? x : 0;
    case CLIPL_ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case CLIPL_ACT_GELU_TANH:
        return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case CLIPL_ACT_QUICK_GELU: return x / (1 + exp(-1.702 * x));
    case CLIPL_ACT_SIGMOID: return 1 / (1 + exp(-x));
    case CLIPL_ACT_TANH: return tanh(x);
    case CLIPL_ACT_EXP: return exp(x);
    case CLIPL_ACT_LOG: return log(x);
    case CLIPL_ACT_SQRT: return sqrt(x);
    case CLIPL_ACT_ABS: return fabs(x);
    case CLIPL_ACT_CLAMP: return x < a ? a : x > b ? b : x;
    case CLIPL_ACT_LINEAR: return a * x + b;
    case CLIPL_ACT_POW: return a * pow(x, b);
    case CLIPL_ACT_SWISH: return x / (1 + exp(-a * x));
    case CLIPL_ACT_SQUARE: return x * x;
    case CLIPL_ACT_SOFTPLUS: return log1p(exp(x));
    }
    return NAN;
}

/* Row-major index of the broadcast element for an output index (out dims nd, t dims td). */
static int64_t bidx(const int64_t *oidx, int nd, const int64_t *tshape, int td)
{
    int64_t k = 0;
    for (int i = 0; i < td; i++) {
        int o = i + nd - td;
        k = k * tshape[i] + (tshape[i] == 1 ? 0 : oidx[o]);
    }
    return k;
}

/* Reference batched matmul with PyTorch broadcasting; returns [..., M, N] doubles. */
static double *ref_matmul(const clipl_tensor *a, const clipl_tensor *b, const clipl_tensor *bias,
                          int act, double scale, const clipl_tensor *accum, int nd,
                          const int64_t *oshape)
{
    double *A = dbl(a), *B = dbl(b), *Bi = bias ? dbl(bias) : NULL, *Ac = accum ? dbl(accum) : NULL;
    int64_t n = 1;
    for (int i = 0; i < nd; i++)
        n *= oshape[i];
    double *out = malloc(sizeof(double) * (size_t)n);
    int64_t M = oshape[nd - 2], N = oshape[nd - 1], K = a->shape[a->ndim - 1];
    int64_t idx[CLIPL_MAX_DIMS] = {0};
    for (int64_t f = 0; f < n; f++) {
        int64_t r = f;
        for (int i = nd - 1; i >= 0; i--) {
            idx[i] = r % oshape[i];
            r /= oshape[i];
        }
        int64_t m = idx[nd - 2], j = idx[nd - 1];
        double s = 0;
        for (int64_t kk = 0; kk < K; kk++) {
            idx[nd - 2] = m;
            idx[nd - 1] = kk;
            double av = A[bidx(idx, nd, a->shape, a->ndim)];
            idx[nd - 2] = kk;
            idx[nd - 1] = j;
            double bv = B[bidx(idx, nd, b->shape, b->ndim)];
            s += av * bv;
        }
        idx[nd - 2] = m;
        idx[nd - 1] = j;
        s *= scale;
        if (Bi)
            s += Bi[bidx(idx, nd, bias->shape, bias->ndim)];
        s = act_ref(act, s, 0, 0);
        if (Ac)
            s += Ac[f];
        out[f] = s;
    }
    (void)M;
    (void)N;
    free(A);
    free(B);
    free(Bi);
    free(Ac);
    return out;
}

static void check_matmul(const char *label, const clipl_tensor *a, const clipl_tensor *b,
                         const clipl_tensor *bias, int act, double scale)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t os[CLIPL_MAX_DIMS];
    for (int i = 0; i < nd - 2; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        os[i] = sa > sb ? sa : sb;
    }
    os[nd - 2] = a->shape[a->ndim - 2];
    os[nd - 1] = b->shape[b->ndim - 1];
    clipl_matmul_opts o = {act, 0, 0, (float)scale, 1, NULL};
    clipl_tensor *y = NULL;
    CHECK_OK(clipl_matmul(a, b, bias, &y, &o));
    clipl_tensor *e = ref_tensor(ref_matmul(a, b, bias, act, scale, NULL, nd, os), nd, os);
    if (y)
        CHECK(y->dt == a->dt);
    CHECK_CLOSE(y, e, tol_for(a->dt), label);
    clipl_tensor_release(y);
    clipl_tensor_release(e);
}

static void test_matmul(int dt)
{
    clipl_tensor *a = RND(dt, 7, 17), *b = RND(dt, 17, 3), *bias = RND(dt, 3);
    check_matmul("matmul 7x17 @ 17x3", a, b, NULL, 0, 1);
    check_matmul("matmul + bias", a, b, bias, 0, 1);
    check_matmul("matmul + bias + relu", a, b, bias, CLIPL_ACT_RELU, 1);
    check_matmul("matmul + bias + quick_gelu", a, b, bias, CLIPL_ACT_QUICK_GELU, 1);
    check_matmul("matmul + gelu, scale 0.5", a, b, NULL, CLIPL_ACT_GELU, 0.5);
    check_matmul("matmul + tanh", a, b, bias, CLIPL_ACT_TANH, 1);
    check_matmul("matmul + sigmoid", a, b, bias, CLIPL_ACT_SIGMOID, 1);
    clipl_tensor_release(a);
    clipl_tensor_release(b);
    clipl_tensor_release(bias);

    /* 1-row and 1-column edge cases */
    a = RND(dt, 1, 5);
    b = RND(dt, 5, 1);
    check_matmul("matmul 1x5 @ 5x1", a, b, NULL, 0, 1);
    clipl_tensor_release(a);
    clipl_tensor_release(b);

    /* broadcast batch dims */
    a = RND(dt, 2, 1, 5, 7);
    b = RND(dt, 3, 7, 4);
    bias = RND(dt, 5, 4);
    check_matmul("matmul broadcast [2x1x5x7] @ [3x7x4] + bias [5x4]", a, b, bias, 0, 1);
    clipl_tensor *b2 = RND(dt, 7, 4);
    check_matmul("matmul [2x1x5x7] @ [7x4]", a, b2, NULL, 0, 1);
    clipl_tensor_release(b2);
    clipl_tensor_release(a);
    clipl_tensor_release(b);
    clipl_tensor_release(bias);

    /* transposed and narrowed views */
    clipl_tensor *base = RND(dt, 7, 5), *at = NULL, *wide = RND(dt, 7, 10), *bn = NULL;
    CHECK_OK(clipl_tensor_transpose(base, &at, 0, 1)); /* [5, 7], column-major */
    CHECK_OK(clipl_tensor_narrow(wide, &bn, 1, 2, 3)); /* [7, 3], row stride 10 */
    check_matmul("matmul transposed a @ narrowed b", at, bn, NULL, 0, 1);
    clipl_tensor *bt = NULL, *b3 = RND(dt, 3, 7);
    CHECK_OK(clipl_tensor_transpose(b3, &bt, 0, 1)); /* [7, 3] column-major */
    check_matmul("matmul a^T @ b^T", at, bt, NULL, 0, 1);
    /* a stride-0 (expanded) matrix is copied first */
    clipl_tensor *row = RND(dt, 1, 7), *ex = NULL;
    CHECK_OK(clipl_tensor_expand(row, &ex, 2, (int64_t[]){5, 7}));
    check_matmul("matmul expanded a", ex, bn, NULL, 0, 1);
    /* batched transposed view from a permute ([B, T, D] -> [B, D, T]) */
    clipl_tensor *k3 = RND(dt, 3, 9, 7), *k3t = NULL, *q3 = RND(dt, 3, 6, 7);
    CHECK_OK(clipl_tensor_transpose(k3, &k3t, 1, 2));
    check_matmul("matmul batched q @ k^T view", q3, k3t, NULL, 0, 1);
    clipl_tensor *p4 = RND(dt, 2, 6, 3, 7), *q4 = NULL; /* [B, T, H, D] -> [B, H, T, D] */
    CHECK_OK(clipl_tensor_permute(p4, &q4, 4, (int[]){0, 2, 1, 3}));
    clipl_tensor *w4 = RND(dt, 7, 5);
    check_matmul("matmul permuted 4-d view", q4, w4, NULL, 0, 1);
    clipl_tensor *objs[] = {base, at, wide, bn, bt, b3, row, ex, k3, k3t, q3, p4, q4, w4};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

static void test_matmul_accum(int dt)
{
    clipl_tensor *a = RND(dt, 2, 6, 17), *b = RND(dt, 17, 9), *bias = RND(CLIPL_F32, 9);
    clipl_tensor *acc = RND(dt, 2, 6, 9), *acc0 = NULL, *y = NULL;
    CHECK_OK(clipl_tensor_clone(acc, &acc0));
    clipl_matmul_opts o = {CLIPL_ACT_NONE, 0, 0, 1, 1, acc};
    CHECK_OK(clipl_matmul(a, b, bias, &y, &o));
    CHECK(y == acc);
    int64_t os[3] = {2, 6, 9};
    clipl_tensor *e = ref_tensor(ref_matmul(a, b, bias, 0, 1, acc0, 3, os), 3, os);
    CHECK_CLOSE(acc, e, tol_for(dt), "matmul accumulate (residual add)");
    clipl_tensor_release(y);
    clipl_tensor_release(e);
    /* wrong accum shape */
    clipl_tensor *bad = RND(dt, 2, 6, 8);
    o.accum = bad;
    CHECK_ERR(clipl_matmul(a, b, NULL, &y, &o), CLIPL_ESHAPE, "accum is [2x6x8]");
    clipl_tensor *objs[] = {a, b, bias, acc, acc0, bad};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

static void test_matmul_errors(void)
{
    clipl_tensor *a = RND(CLIPL_F32, 2, 3), *b = RND(CLIPL_F32, 4, 5), *y = NULL;
    CHECK_ERR(clipl_matmul(a, b, NULL, &y, NULL), CLIPL_ESHAPE,
              "matmul: size mismatch, [2x3] @ [4x5]");
    clipl_tensor *c = RND(CLIPL_F32, 3, 5), *bias = RND(CLIPL_F32, 4);
    CHECK_ERR(clipl_matmul(a, c, bias, &y, NULL), CLIPL_ESHAPE, "bias [4]");
    clipl_tensor *a3 = RND(CLIPL_F32, 2, 2, 3), *c3 = RND(CLIPL_F32, 3, 3, 5);
    CHECK_ERR(clipl_matmul(a3, c3, NULL, &y, NULL), CLIPL_ESHAPE, "batch dims do not broadcast");
    clipl_tensor *cb = NULL;
    clipl_tensor_to(c, &cb, CLIPL_BF16);
    CHECK_ERR(clipl_matmul(a, cb, NULL, &y, NULL), CLIPL_EINVAL, "dtypes differ");
    clipl_tensor *ci = clipl_tensor_zeros(CLIPL_I32, 2, (int64_t[]){3, 5});
    CHECK_ERR(clipl_matmul(a, ci, NULL, &y, NULL), CLIPL_EINVAL, "b must be f32 or bf16");
    clipl_tensor *w = RND(CLIPL_F32, 4, 5);
    CHECK_ERR(clipl_linear(a, w, NULL, &y, 0), CLIPL_ESHAPE, "linear: size mismatch, x [2x3]");
    clipl_tensor *objs[] = {a, b, c, bias, a3, c3, cb, ci, w};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

/* x [.., in] @ w[out, in]^T + b, act; reference via ref_matmul on w^T. */
static clipl_tensor *ref_linear(const clipl_tensor *x, const clipl_tensor *w, const clipl_tensor *b,
                                int act, const clipl_tensor *accum)
{
    clipl_tensor *wt = NULL;
    clipl_tensor_transpose(w, &wt, 0, 1);
    int64_t os[CLIPL_MAX_DIMS];
    memcpy(os, x->shape, sizeof os);
    os[x->ndim - 1] = w->shape[0];
    int nd = x->ndim < 2 ? 2 : x->ndim;
    clipl_tensor *x2 = NULL;
    if (x->ndim < 2)
        clipl_tensor_unsqueeze(x, &x2, 0);
    else
        x2 = clipl_tensor_retain((clipl_tensor *)x);
    int64_t os2[CLIPL_MAX_DIMS];
    memcpy(os2, x2->shape, sizeof os2);
    os2[nd - 1] = w->shape[0];
    double *d = ref_matmul(x2, wt, b, act, 1, accum, nd, os2);
    clipl_tensor_release(wt);
    clipl_tensor_release(x2);
    return ref_tensor(d, x->ndim, os);
}

static void test_linear(int dt)
{
    clipl_tensor *w = RND(dt, 13, 24), *b = RND(dt, 13);
    int64_t rows[] = {1, 7, 300};
    clipl_linear_weights *pw = clipl_linear_prepare(w, b, dt, 64);
    CHECK(pw != NULL);
    int64_t of = 0, inf = 0, nb = 0;
    int pdt = -1;
    CHECK_OK(clipl_linear_weights_info(pw, &of, &inf, &pdt, &nb));
    CHECK(of == 13 && inf == 24 && pdt == dt && nb > 0);
    for (size_t i = 0; i < 3; i++) {
        clipl_tensor *x = RND(dt, 1, rows[i], 24), *y = NULL, *y2 = NULL;
        clipl_tensor *e = ref_linear(x, w, b, CLIPL_ACT_QUICK_GELU, NULL);
        CHECK_OK(clipl_linear(x, w, b, &y, CLIPL_ACT_QUICK_GELU));
        CHECK_CLOSE(y, e, tol_for(dt), "linear + quick_gelu");
        clipl_matmul_opts o = {CLIPL_ACT_QUICK_GELU, 0, 0, 1, 1, NULL};
        CHECK_OK(clipl_linear_apply(pw, x, &y2, &o));
        CHECK_CLOSE(y2, e, tol_for(dt), "linear prepared + quick_gelu");
        clipl_tensor_release(x);
        clipl_tensor_release(y);
        clipl_tensor_release(y2);
        clipl_tensor_release(e);
    }
    /* a narrowed (strided rows) 2-d input, residual accumulate */
    clipl_tensor *xw = RND(dt, 5, 30), *x = NULL, *acc = RND(dt, 5, 13), *acc0 = NULL, *y = NULL;
    CHECK_OK(clipl_tensor_narrow(xw, &x, 1, 3, 24));
    CHECK_OK(clipl_tensor_clone(acc, &acc0));
    clipl_matmul_opts o = {CLIPL_ACT_NONE, 0, 0, 1, 1, acc};
    CHECK_OK(clipl_linear_apply(pw, x, &y, &o));
    CHECK(y == acc);
    clipl_tensor *e = ref_linear(x, w, b, 0, acc0);
    CHECK_CLOSE(acc, e, tol_for(dt), "linear prepared, narrowed x, accumulate");
    clipl_tensor_release(y);
    clipl_tensor_release(e);
    /* f32 input on prepared weights of the other dtype: converted, output in x's dtype */
    if (dt == CLIPL_BF16) {
        clipl_tensor *xf = RND(CLIPL_F32, 4, 24), *xr = NULL, *yf = NULL;
        clipl_tensor_to(xf, &xr, CLIPL_BF16);
        CHECK_OK(clipl_linear_apply(pw, xf, &yf, NULL));
        if (yf)
            CHECK(yf->dt == CLIPL_F32);
        clipl_tensor *ef = ref_linear(xr, w, b, 0, NULL);
        /* the output stays f32: only inputs are rounded, so the reference on rounded inputs
         * matches to f32 accuracy (summation in f32) */
        CHECK_CLOSE(yf, ef, F32_TOL, "linear prepared bf16 weights, f32 x -> f32 y");
        clipl_tensor_release(xf);
        clipl_tensor_release(xr);
        clipl_tensor_release(yf);
        clipl_tensor_release(ef);
    }
    clipl_tensor *bad = RND(dt, 3, 23);
    CHECK_ERR(clipl_linear_apply(pw, bad, &y, NULL), CLIPL_ESHAPE,
              "linear: size mismatch, x [3x23]");
    clipl_linear_weights_free(pw);
    clipl_tensor *objs[] = {w, b, xw, x, acc, acc0, bad};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

static void test_eltwise(int dt)
{
    struct {
        int act;
        double a, b, lo, hi;
    } cases[] = {
        {CLIPL_ACT_RELU, 0, 0, -2, 2},        {CLIPL_ACT_GELU, 0, 0, -3, 3},
        {CLIPL_ACT_GELU_TANH, 0, 0, -3, 3},   {CLIPL_ACT_QUICK_GELU, 0, 0, -3, 3},
        {CLIPL_ACT_SIGMOID, 0, 0, -4, 4},     {CLIPL_ACT_TANH, 0, 0, -2, 2},
        {CLIPL_ACT_EXP, 0, 0, -2, 2},         {CLIPL_ACT_LOG, 0, 0, 0.1, 3},
        {CLIPL_ACT_SQRT, 0, 0, 0, 4},         {CLIPL_ACT_ABS, 0, 0, -2, 2},
        {CLIPL_ACT_CLAMP, -0.5, 0.25, -1, 1}, {CLIPL_ACT_LINEAR, 2.5, -1, -1, 1},
        {CLIPL_ACT_POW, 1.5, 3, -1, 1},       {CLIPL_ACT_SWISH, 0.7, 0, -3, 3},
        {CLIPL_ACT_SQUARE, 0, 0, -2, 2},      {CLIPL_ACT_SOFTPLUS, 0, 0, -3, 3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        clipl_tensor *base = clipl_tensor_empty(CLIPL_F32, 2, (int64_t[]){17, 7}), *b2 = NULL,
                     *x = NULL, *y = NULL;
        clipl_tensor_uniform_(base, gen, cases[c].lo, cases[c].hi);
        clipl_tensor_to(base, &b2, dt);
        clipl_tensor_transpose(b2, &x, 0, 1); /* [7, 17] non-contiguous */
        double *d = dbl(x);
        for (int i = 0; i < 7 * 17; i++)
            d[i] = act_ref(cases[c].act, d[i], cases[c].a, cases[c].b);
        clipl_tensor *e = ref_tensor(d, 2, (int64_t[]){7, 17});
        char label[64];
        snprintf(label, sizeof label, "eltwise %s %s", clipl_act_name(cases[c].act),
                 clipl_dtype_name(dt));
        CHECK_OK(clipl_eltwise(x, &y, cases[c].act, cases[c].a, cases[c].b));
        CHECK_CLOSE(y, e, tol_for(dt), label);
        /* in place on the non-contiguous view */
        CHECK_OK(clipl_eltwise_(x, cases[c].act, cases[c].a, cases[c].b));
        CHECK_CLOSE(x, e, tol_for(dt), label);
        clipl_tensor_release(base);
        clipl_tensor_release(b2);
        clipl_tensor_release(x);
        clipl_tensor_release(y);
        clipl_tensor_release(e);
    }
    clipl_tensor *x = RND(dt, 3), *y = NULL;
    CHECK_ERR(clipl_eltwise(x, &y, 99, 0, 0), CLIPL_EINVAL, "unknown activation 99");
    clipl_tensor_release(x);
}

static void test_softmax(int dt)
{
    clipl_tensor *base = RND(dt, 5, 3, 7), *x = NULL;
    clipl_tensor_transpose(base, &x, 0, 2); /* [7, 3, 5] */
    int64_t sh[3] = {7, 3, 5};
    for (int lg = 0; lg < 2; lg++) {
        for (int dim = -1; dim < 3; dim++) {
            int d = dim < 0 ? 2 : dim;
            double *v = dbl(x);
            int64_t inner = 1, outer = 1;
            for (int i = d + 1; i < 3; i++)
                inner *= sh[i];
            for (int i = 0; i < d; i++)
                outer *= sh[i];
            for (int64_t o = 0; o < outer; o++)
                for (int64_t in = 0; in < inner; in++) {
                    double mx = -INFINITY, s = 0;
                    for (int64_t j = 0; j < sh[d]; j++)
                        mx = fmax(mx, v[(o * sh[d] + j) * inner + in]);
                    for (int64_t j = 0; j < sh[d]; j++)
                        s += exp(v[(o * sh[d] + j) * inner + in] - mx);
                    for (int64_t j = 0; j < sh[d]; j++) {
                        double *p = &v[(o * sh[d] + j) * inner + in];
                        *p = lg ? *p - mx - log(s) : exp(*p - mx) / s;
                    }
                }
            clipl_tensor *e = ref_tensor(v, 3, sh), *y = NULL;
            char label[64];
            snprintf(label, sizeof label, "%s dim %d %s", lg ? "log_softmax" : "softmax", dim,
                     clipl_dtype_name(dt));
            CHECK_OK(clipl_softmax(x, &y, dim, lg));
            CHECK_CLOSE(y, e, tol_for(dt), label);
            clipl_tensor_release(y);
            clipl_tensor_release(e);
        }
    }
    clipl_tensor *y = NULL;
    CHECK_ERR(clipl_softmax(x, &y, 3, 0), CLIPL_EINVAL, "softmax: dim 3 out of range for [7x3x5]");
    clipl_tensor_release(base);
    clipl_tensor_release(x);
}

static void test_layer_norm(int dt)
{
    clipl_tensor *x = RND(dt, 3, 5, 7), *w = RND(dt, 5, 7), *b = RND(dt, 5, 7);
    double eps = 1e-5;
    for (int nn = 1; nn <= 2; nn++) {
        int64_t N = nn == 1 ? 7 : 35, M = 105 / N;
        double *v = dbl(x), *wv = dbl(w), *bv = dbl(b);
        double *mean = malloc(sizeof(double) * (size_t)M),
               *rstd = malloc(sizeof(double) * (size_t)M);
        for (int64_t r = 0; r < M; r++) {
            double m = 0, var = 0;
            for (int64_t j = 0; j < N; j++)
                m += v[r * N + j];
            m /= (double)N;
            for (int64_t j = 0; j < N; j++)
                var += (v[r * N + j] - m) * (v[r * N + j] - m);
            var /= (double)N;
            mean[r] = m;
            rstd[r] = 1 / sqrt(var + eps);
            for (int64_t j = 0; j < N; j++)
                v[r * N + j] =
                    (v[r * N + j] - m) * rstd[r] * (nn == 2 ? wv[j] : 1) + (nn == 2 ? bv[j] : 0);
        }
        clipl_tensor *e = ref_tensor(v, 3, x->shape), *y = NULL, *mt = NULL, *rt = NULL;
        clipl_tensor *em = ref_tensor(mean, 3 - nn, x->shape),
                     *er = ref_tensor(rstd, 3 - nn, x->shape);
        clipl_tensor *w1 = NULL, *b1 = NULL;
        if (nn == 2) {
            w1 = clipl_tensor_retain(w);
            b1 = clipl_tensor_retain(b);
        }
        CHECK_OK(clipl_layer_norm(x, nn, w1, b1, &y, eps, &mt, &rt));
        CHECK_CLOSE(y, e, tol_for(dt),
                    nn == 1 ? "layer_norm last dim" : "layer_norm last 2 dims + affine");
        /* statistics are computed in f32 from the (rounded) inputs, so f32 accuracy */
        CHECK_CLOSE(mt, em, 1e-5, "layer_norm mean");
        CHECK_CLOSE(rt, er, 1e-4, "layer_norm rstd"); /* 1/sqrt amplifies var's rounding */
        clipl_tensor *objs[] = {e, y, mt, rt, em, er, w1, b1};
        for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
            clipl_tensor_release(objs[i]);
        free(wv);
        free(bv);
    }
    /* a non-contiguous input normalised over its last dim */
    clipl_tensor *xt = NULL, *y = NULL, *y2 = NULL, *xc = NULL;
    clipl_tensor_transpose(x, &xt, 0, 2);
    clipl_tensor_clone(xt, &xc);
    CHECK_OK(clipl_layer_norm(xt, 1, NULL, NULL, &y, eps, NULL, NULL));
    CHECK_OK(clipl_layer_norm(xc, 1, NULL, NULL, &y2, eps, NULL, NULL));
    CHECK_CLOSE(y, y2, 0, "layer_norm of a view == of its copy");
    clipl_tensor *w3 = RND(dt, 6);
    CHECK_ERR(clipl_layer_norm(x, 1, w3, NULL, &y, eps, NULL, NULL), CLIPL_ESHAPE,
              "layer_norm: weight is [6], expected 7 elements");
    clipl_tensor *objs[] = {x, w, b, xt, y, y2, xc, w3};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

/* Reference conv2d (PyTorch semantics) in doubles. */
static clipl_tensor *ref_conv(const clipl_tensor *x, const clipl_tensor *w, const clipl_tensor *b,
                              const clipl_conv2d_opts *o)
{
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int64_t O = w->shape[0], CG = w->shape[1], KH = w->shape[2], KW = w->shape[3];
    int64_t g = o->groups, OG = O / g;
    int64_t OH = (H + 2 * o->padding[0] - (KH - 1) * o->dilation[0] - 1) / o->stride[0] + 1;
    int64_t OW = (W + 2 * o->padding[1] - (KW - 1) * o->dilation[1] - 1) / o->stride[1] + 1;
    double *X = dbl(x), *Wt = dbl(w), *B = b ? dbl(b) : NULL;
    double *out = malloc(sizeof(double) * (size_t)(N * O * OH * OW));
    for (int64_t n = 0; n < N; n++)
        for (int64_t oc = 0; oc < O; oc++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double s = B ? B[oc] : 0;
                    int64_t gi = oc / OG;
                    for (int64_t c = 0; c < CG; c++)
                        for (int64_t kh = 0; kh < KH; kh++)
                            for (int64_t kw = 0; kw < KW; kw++) {
                                int64_t ih =
                                    oh * o->stride[0] - o->padding[0] + kh * o->dilation[0];
                                int64_t iw =
                                    ow * o->stride[1] - o->padding[1] + kw * o->dilation[1];
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    continue;
                                s += X[((n * C + gi * CG + c) * H + ih) * W + iw] *
                                     Wt[((oc * CG + c) * KH + kh) * KW + kw];
                            }
                    out[((n * O + oc) * OH + oh) * OW + ow] = act_ref(o->act, s, 0, 0);
                }
    free(X);
    free(Wt);
    free(B);
    return ref_tensor(out, 4, (int64_t[]){N, O, OH, OW});
}

static void test_conv(int dt)
{
    struct {
        int64_t n, c, h, w, o, kh, kw, s, p, d, g;
        int act;
    } cases[] = {
        {1, 3, 7, 9, 5, 3, 3, 1, 0, 1, 1, 0},
        {2, 4, 9, 7, 6, 3, 3, 2, 1, 1, 2, CLIPL_ACT_RELU},
        {1, 3, 11, 11, 4, 3, 2, 1, 2, 2, 1, 0},
        {2, 6, 5, 5, 6, 3, 3, 1, 1, 1, 6, 0}, /* depthwise */
        {1, 8, 6, 6, 16, 1, 1, 1, 0, 1, 1, CLIPL_ACT_RELU},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        clipl_tensor *x = RND(dt, cases[i].n, cases[i].c, cases[i].h, cases[i].w);
        clipl_tensor *w = RND(dt, cases[i].o, cases[i].c / cases[i].g, cases[i].kh, cases[i].kw);
        clipl_tensor *b = i % 2 ? NULL : RND(CLIPL_F32, cases[i].o), *y = NULL;
        clipl_conv2d_opts o = {{cases[i].s, cases[i].s},
                               {cases[i].p, cases[i].p},
                               {cases[i].d, cases[i].d},
                               cases[i].g,
                               cases[i].act,
                               0,
                               0};
        clipl_tensor *e = ref_conv(x, w, b, &o);
        char label[64];
        snprintf(label, sizeof label, "conv2d case %zu %s", i, clipl_dtype_name(dt));
        CHECK_OK(clipl_conv2d(x, w, b, &y, &o));
        CHECK_CLOSE(y, e, tol_for(dt), label);
        /* prepared weights, hinted for another input size than the one used */
        clipl_conv2d_weights *cw = clipl_conv2d_prepare(w, b, -1, &o, 32, 32);
        CHECK(cw != NULL);
        clipl_tensor *y2 = NULL;
        CHECK_OK(clipl_conv2d_apply(cw, x, &y2));
        CHECK_CLOSE(y2, e, tol_for(dt), label);
        clipl_conv2d_weights_free(cw);
        clipl_tensor_release(y2);
        clipl_tensor_release(x);
        clipl_tensor_release(w);
        clipl_tensor_release(b);
        clipl_tensor_release(y);
        clipl_tensor_release(e);
    }
    /* a non-contiguous input (a channel-narrowed view) */
    clipl_tensor *xb = RND(dt, 2, 5, 6, 6), *x = NULL, *w = RND(dt, 3, 3, 3, 3), *y = NULL;
    clipl_tensor_narrow(xb, &x, 1, 1, 3);
    clipl_conv2d_opts o = {{1, 1}, {1, 1}, {1, 1}, 1, 0, 0, 0};
    clipl_tensor *e = ref_conv(x, w, NULL, &o);
    CHECK_OK(clipl_conv2d(x, w, NULL, &y, NULL == NULL ? &o : NULL));
    CHECK_CLOSE(y, e, tol_for(dt), "conv2d narrowed view");
    /* bf16 prepared weights applied to an f32 input: output f32, compared with the reference
     * on bf16-rounded input and weights */
    if (dt == CLIPL_F32) {
        clipl_tensor *xr = NULL, *wr = NULL, *xr32 = NULL, *wr32 = NULL, *yb = NULL;
        clipl_tensor_to(x, &xr, CLIPL_BF16);
        clipl_tensor_to(w, &wr, CLIPL_BF16);
        clipl_tensor_to(xr, &xr32, CLIPL_F32);
        clipl_tensor_to(wr, &wr32, CLIPL_F32);
        clipl_tensor *eb = ref_conv(xr32, wr32, NULL, &o);
        clipl_conv2d_weights *cw = clipl_conv2d_prepare(w, NULL, CLIPL_BF16, &o, 0, 0);
        CHECK_OK(clipl_conv2d_apply(cw, x, &yb));
        if (yb)
            CHECK(yb->dt == CLIPL_F32);
        /* products of bf16 values are exact in f32 and the output is not rounded to bf16 */
        CHECK_CLOSE(yb, eb, F32_TOL, "conv2d prepared bf16 weights, f32 src");
        clipl_tensor *bad = RND(CLIPL_F32, 1, 4, 6, 6), *yy = NULL;
        CHECK_ERR(clipl_conv2d_apply(cw, bad, &yy), CLIPL_ESHAPE,
                  "conv2d: size mismatch, src [1x4x6x6] with weights [3x3x3x3]");
        clipl_conv2d_weights_free(cw);
        clipl_tensor *objs[] = {xr, wr, xr32, wr32, yb, eb, bad};
        for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
            clipl_tensor_release(objs[i]);
    }
    clipl_tensor *w2 = RND(dt, 3, 4, 3, 3), *y2 = NULL;
    CHECK_ERR(clipl_conv2d(x, w2, NULL, &y2, NULL), CLIPL_ESHAPE,
              "conv2d: size mismatch, src [2x3x6x6] with weights [3x4x3x3]");
    clipl_tensor *objs[] = {xb, x, w, y, e, w2};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

static void test_batch_norm(int dt)
{
    int64_t C = 5;
    clipl_tensor *x = RND(dt, 2, C, 4, 3), *mean = RND(CLIPL_F32, C), *var = NULL;
    clipl_tensor *g = RND(CLIPL_F32, C), *be = RND(CLIPL_F32, C), *y = NULL;
    var = clipl_tensor_empty(CLIPL_F32, 1, &C);
    clipl_tensor_uniform_(var, gen, 0.5, 2);
    double eps = 1e-5;
    double *X = dbl(x), *M = dbl(mean), *V = dbl(var), *G = dbl(g), *Bt = dbl(be);
    for (int64_t i = 0; i < 2 * C * 12; i++) {
        int64_t c = (i / 12) % C;
        X[i] = (X[i] - M[c]) / sqrt(V[c] + eps) * G[c] + Bt[c];
    }
    clipl_tensor *e = ref_tensor(X, 4, x->shape);
    CHECK_OK(clipl_batch_norm(x, mean, var, g, be, &y, eps));
    CHECK_CLOSE(y, e, tol_for(dt), "batch_norm inference");

    /* folding into a conv: conv(x, w', b') == bn(conv(x, w, b)) */
    clipl_tensor *w = RND(CLIPL_F32, C, 3, 3, 3), *cb = RND(CLIPL_F32, C),
                 *xi = RND(CLIPL_F32, 1, 3, 6, 6);
    clipl_tensor *wf = NULL, *bf = NULL, *c1 = NULL, *c2 = NULL, *bn = NULL;
    CHECK_OK(clipl_fold_batch_norm(w, cb, mean, var, g, be, eps, &wf, &bf));
    CHECK_OK(clipl_conv2d(xi, w, cb, &c1, NULL));
    CHECK_OK(clipl_batch_norm(c1, mean, var, g, be, &bn, eps));
    CHECK_OK(clipl_conv2d(xi, wf, bf, &c2, NULL));
    CHECK_CLOSE(c2, bn, F32_TOL, "conv with folded batch norm");
    clipl_tensor *bad = RND(CLIPL_F32, C + 1);
    clipl_tensor *y3 = NULL;
    CHECK_ERR(clipl_batch_norm(x, bad, var, NULL, NULL, &y3, eps), CLIPL_ESHAPE,
              "batch_norm: mean is [6], expected 5 elements");
    free(M);
    free(V);
    free(G);
    free(Bt);
    clipl_tensor *objs[] = {x, mean, var, g, be, y, e, w, cb, xi, wf, bf, c1, c2, bn, bad};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

static void test_pool(int dt)
{
    struct {
        int kind;
        int64_t k, s, p;
        int ceil;
    } cases[] = {
        {CLIPL_POOL_MAX, 3, 2, 1, 0},
        {CLIPL_POOL_MAX, 2, 2, 0, 1},
        {CLIPL_POOL_AVG, 3, 2, 1, 0},
        {CLIPL_POOL_AVG, 2, 2, 0, 0},
        {CLIPL_POOL_AVG_EXCLUDE_PAD, 3, 2, 1, 0},
        {CLIPL_POOL_AVG, 7, 1, 0, 0},
    };
    clipl_tensor *x = RND(dt, 2, 3, 7, 9);
    double *X = dbl(x);
    int64_t H = 7, W = 9;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        int64_t k = cases[c].k, s = cases[c].s, p = cases[c].p;
        int64_t OH, OW;
        if (cases[c].ceil) {
            OH = (H + 2 * p - k + s - 1) / s + 1;
            OW = (W + 2 * p - k + s - 1) / s + 1;
            if ((OH - 1) * s >= H + p)
                OH--;
            if ((OW - 1) * s >= W + p)
                OW--;
        } else {
            OH = (H + 2 * p - k) / s + 1;
            OW = (W + 2 * p - k) / s + 1;
        }
        double *out = malloc(sizeof(double) * (size_t)(6 * OH * OW));
        for (int64_t nc = 0; nc < 6; nc++)
            for (int64_t oh = 0; oh < OH; oh++)
                for (int64_t ow = 0; ow < OW; ow++) {
                    double mx = -INFINITY, sum = 0;
                    int cnt = 0;
                    for (int64_t kh = 0; kh < k; kh++)
                        for (int64_t kw = 0; kw < k; kw++) {
                            int64_t ih = oh * s - p + kh, iw = ow * s - p + kw;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                continue;
                            double v = X[(nc * H + ih) * W + iw];
                            mx = fmax(mx, v);
                            sum += v;
                            cnt++;
                        }
                    double r = cases[c].kind == CLIPL_POOL_MAX   ? mx
                               : cases[c].kind == CLIPL_POOL_AVG ? sum / (double)(k * k)
                                                                 : sum / cnt;
                    out[(nc * OH + oh) * OW + ow] = r;
                }
        clipl_tensor *e = ref_tensor(out, 4, (int64_t[]){2, 3, OH, OW}), *y = NULL;
        char label[64];
        snprintf(label, sizeof label, "pool2d case %zu %s", c, clipl_dtype_name(dt));
        CHECK_OK(clipl_pool2d(x, &y, cases[c].kind, k, k, s, s, p, p, cases[c].ceil));
        CHECK_CLOSE(y, e, tol_for(dt), label);
        clipl_tensor_release(y);
        clipl_tensor_release(e);
    }
    clipl_tensor *y = NULL;
    CHECK_ERR(clipl_pool2d(x, &y, CLIPL_POOL_MAX, 11, 11, 1, 1, 0, 0, 0), CLIPL_ESHAPE,
              "larger than the input [2x3x7x9]");
    free(X);
    clipl_tensor_release(x);
}

static void test_attention(int dt)
{
    int64_t B = 2, H = 3, T = 5, S = 7, D = 4;
    clipl_tensor *qb = RND(dt, B, T, H, D), *q = NULL, *k = RND(dt, B, H, S, D),
                 *v = RND(dt, B, H, S, D);
    clipl_tensor_permute(qb, &q, 4, (int[]){0, 2, 1, 3}); /* [B, H, T, D], non-contiguous */
    clipl_tensor *mask = clipl_tensor_zeros(CLIPL_F32, 2, (int64_t[]){T, S});
    for (int64_t t = 0; t < T; t++)
        for (int64_t s = t + 3; s < S; s++)
            ((float *)mask->ptr)[t * S + s] = -INFINITY;
    for (int with_mask = 0; with_mask < 2; with_mask++) {
        double *Q = dbl(q), *K = dbl(k), *V = dbl(v), *M = dbl(mask);
        double *out = malloc(sizeof(double) * (size_t)(B * H * T * D));
        double *P = malloc(sizeof(double) * (size_t)(B * H * T * S));
        double scale = 1 / sqrt((double)D);
        for (int64_t bh = 0; bh < B * H; bh++)
            for (int64_t t = 0; t < T; t++) {
                double sc[16], mx = -INFINITY, sum = 0;
                for (int64_t s = 0; s < S; s++) {
                    double d = 0;
                    for (int64_t j = 0; j < D; j++)
                        d += Q[(bh * T + t) * D + j] * K[(bh * S + s) * D + j];
                    sc[s] = d * scale + (with_mask ? M[t * S + s] : 0);
                    mx = fmax(mx, sc[s]);
                }
                for (int64_t s = 0; s < S; s++)
                    sum += exp(sc[s] - mx);
                for (int64_t s = 0; s < S; s++)
                    P[(bh * T + t) * S + s] = exp(sc[s] - mx) / sum;
                for (int64_t j = 0; j < D; j++) {
                    double o = 0;
                    for (int64_t s = 0; s < S; s++)
                        o += P[(bh * T + t) * S + s] * V[(bh * S + s) * D + j];
                    out[(bh * T + t) * D + j] = o;
                }
            }
        clipl_tensor *e = ref_tensor(out, 4, (int64_t[]){B, H, T, D});
        clipl_tensor *ep = ref_tensor(P, 4, (int64_t[]){B, H, T, S}), *y = NULL, *p = NULL;
        CHECK_OK(clipl_attention(q, k, v, with_mask ? mask : NULL, &y, 0, &p));
        CHECK_CLOSE(y, e, tol_for(dt), with_mask ? "attention with causal-like mask" : "attention");
        /* probabilities are f32 from (rounded) inputs: f32 accuracy for f32, bf16 inputs give
         * f32-accurate scores too since products of bf16 are exact in f32 */
        CHECK_CLOSE(p, ep, F32_TOL, "attention probabilities");
        free(Q);
        free(K);
        free(V);
        free(M);
        clipl_tensor_release(e);
        clipl_tensor_release(ep);
        clipl_tensor_release(y);
        clipl_tensor_release(p);
    }
    clipl_tensor *bad = clipl_tensor_zeros(CLIPL_F32, 2, (int64_t[]){T, S + 1}), *y = NULL;
    CHECK_ERR(clipl_attention(q, k, v, bad, &y, 0, NULL), CLIPL_ESHAPE,
              "attention: mask [5x8] does not broadcast to the scores [2x3x5x7]");
    clipl_tensor *v2 = RND(dt, B, H, S + 1, D);
    CHECK_ERR(clipl_attention(q, k, v2, NULL, &y, 0, NULL), CLIPL_ESHAPE,
              "attention: size mismatch");
    clipl_tensor *objs[] = {qb, q, k, v, mask, bad, v2};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

/* The encoders' row-wise layer norm (f32 in, f32 or bf16 out) against a double reference: two
 * passes in f32 over 37 values, so f32 accuracy (F32_TOL); bf16 adds the output rounding. */
static void test_layer_norm_rows(int dt)
{
    int64_t R = 6, W = 37;
    clipl_tensor *x = RND(CLIPL_F32, R, W), *w = RND(CLIPL_F32, W), *b = RND(CLIPL_F32, W);
    double *X = dbl(x), *Wt = dbl(w), *B = dbl(b), *out = malloc(sizeof(double) * (size_t)(R * W));
    for (int64_t r = 0; r < R; r++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < W; i++)
            mean += X[r * W + i] / (double)W;
        for (int64_t i = 0; i < W; i++)
            var += (X[r * W + i] - mean) * (X[r * W + i] - mean) / (double)W;
        for (int64_t i = 0; i < W; i++)
            out[r * W + i] = (X[r * W + i] - mean) / sqrt(var + 1e-5) * Wt[i] + B[i];
    }
    clipl_tensor *e = ref_tensor(out, 2, (int64_t[]){R, W}), *y = NULL;
    CHECK_OK(clipl__layer_norm_rows(x, w, b, 1e-5, dt, &y));
    CHECK(y && y->dt == dt);
    CHECK_CLOSE(y, e, tol_for(dt), "layer_norm_rows");
    clipl_tensor_release(y);
    CHECK_ERR(clipl__layer_norm_rows(x, b, w, 1e-5, CLIPL_I32, &y), CLIPL_EINVAL,
              "layer_norm_rows: dtype must be f32 or bf16");
    free(X), free(Wt), free(B);
    clipl_tensor_release(e);
    clipl_tensor *objs[] = {x, w, b};
    for (size_t i = 0; i < 3; i++)
        clipl_tensor_release(objs[i]);
}

/* The encoders' fused attention over a packed qkv [N, T, 3W] against a double reference computed
 * here (tolerances as for clipl_attention: its softmax and sums run in f32 from the same inputs;
 * bf16 adds only the rounding of the output). T = 19 and Dh = 20 leave vector remainders. */
static void test_attention_qkv(int dt)
{
    int64_t N = 2, T = 19, H = 3, Dh = 20, W = H * Dh;
    clipl_tensor *qkv = RND(dt, N, T, 3 * W);
    double *X = dbl(qkv), scale = 1 / sqrt((double)Dh);
    for (int causal = 0; causal < 2; causal++) {
        double *out = malloc(sizeof(double) * (size_t)(N * T * W));
        for (int64_t n = 0; n < N; n++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < T; i++) {
                    double sc[32], mx = -INFINITY, sum = 0;
                    int64_t jn = causal ? i + 1 : T;
                    for (int64_t j = 0; j < jn; j++) {
                        double d = 0;
                        for (int64_t e = 0; e < Dh; e++)
                            d += X[(n * T + i) * 3 * W + h * Dh + e] *
                                 X[(n * T + j) * 3 * W + W + h * Dh + e];
                        sc[j] = d * scale;
                        mx = fmax(mx, sc[j]);
                    }
                    for (int64_t j = 0; j < jn; j++)
                        sum += exp(sc[j] - mx);
                    for (int64_t e = 0; e < Dh; e++) {
                        double o = 0;
                        for (int64_t j = 0; j < jn; j++)
                            o +=
                                exp(sc[j] - mx) / sum * X[(n * T + j) * 3 * W + 2 * W + h * Dh + e];
                        out[(n * T + i) * W + h * Dh + e] = o;
                    }
                }
        clipl_tensor *e = ref_tensor(out, 3, (int64_t[]){N, T, W}), *y = NULL;
        CHECK_OK(clipl__attention_qkv(qkv, H, causal, &y));
        CHECK(y && y->dt == dt);
        CHECK_CLOSE(y, e, tol_for(dt), causal ? "attention_qkv causal" : "attention_qkv");
        clipl_tensor_release(e);
        clipl_tensor_release(y);
    }
    free(X);
    clipl_tensor *y = NULL, *odd = RND(dt, N, T, 3 * W + 3);
    CHECK_ERR(clipl__attention_qkv(odd, H, 0, &y), CLIPL_ESHAPE,
              "attention_qkv: qkv must be contiguous [N, T, 3W] with W a multiple of 3 heads");
    clipl_tensor_release(odd);
    clipl_tensor_release(qkv);
}

static void test_cache(void)
{
    clipl_tensor *a = RND(CLIPL_F32, 3, 11), *b = RND(CLIPL_F32, 11, 2), *y = NULL;
    int64_t e0, h0, m0, e1, h1, m1;
    clipl_matmul(a, b, NULL, &y, NULL);
    clipl_tensor_release(y);
    clipl_dnnl_cache_stats(&e0, &h0, &m0);
    clipl_matmul(a, b, NULL, &y, NULL);
    clipl_tensor_release(y);
    clipl_dnnl_cache_stats(&e1, &h1, &m1);
    CHECK(h1 == h0 + 1 && m1 == m0 && e1 == e0);
    CHECK_OK(clipl_dnnl_cache_set_capacity(2));
    clipl_dnnl_cache_stats(&e1, NULL, NULL);
    CHECK(e1 <= 2);
    CHECK_OK(clipl_matmul(a, b, NULL, &y, NULL)); /* still works after eviction */
    clipl_tensor_release(y);
    clipl_dnnl_cache_clear();
    clipl_dnnl_cache_stats(&e1, NULL, NULL);
    CHECK(e1 == 0);
    CHECK_OK(clipl_dnnl_cache_set_capacity(1024));
    CHECK_ERR(clipl_dnnl_cache_set_capacity(0), CLIPL_EINVAL, "capacity");
    CHECK(clipl_act_from_name("quick_gelu") == CLIPL_ACT_QUICK_GELU);
    CHECK(strcmp(clipl_act_name(CLIPL_ACT_GELU), "gelu") == 0);
    clipl_tensor_release(a);
    clipl_tensor_release(b);
}

/* Several threads share the primitive cache (mutex) and use their own streams and scratchpads:
 * each computes matmuls and softmaxes of its own shapes and compares them with the reference. */
typedef struct thread_case {
    clipl_tensor *a, *b, *expect;
    int failures;
} thread_case;

static void *thread_body(void *arg)
{
    thread_case *tc = arg;
    for (int r = 0; r < 20; r++) {
        clipl_tensor *y = NULL, *p = NULL;
        if (clipl_matmul(tc->a, tc->b, NULL, &y, NULL) || check_rel_err(y, tc->expect) > F32_TOL)
            tc->failures++;
        if (clipl_softmax(tc->a, &p, -1, 0))
            tc->failures++;
        clipl_tensor_release(y);
        clipl_tensor_release(p);
        if (r == 10)
            clipl_dnnl_cache_clear(); /* entries in use by other threads stay valid */
    }
    return NULL;
}

static void test_threads(void)
{
    enum { N = 4 };
    pthread_t th[N];
    thread_case tc[N];
    for (int i = 0; i < N; i++) {
        int64_t m = 3 + i, k = 17 + 2 * i, n = 5 + (i % 2);
        tc[i].a = RND(CLIPL_F32, m, k);
        tc[i].b = RND(CLIPL_F32, k, n);
        int64_t os[2] = {m, n};
        tc[i].expect = ref_tensor(ref_matmul(tc[i].a, tc[i].b, NULL, 0, 1, NULL, 2, os), 2, os);
        tc[i].failures = 0;
    }
    for (int i = 0; i < N; i++)
        CHECK(pthread_create(&th[i], NULL, thread_body, &tc[i]) == 0);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECK(tc[i].failures == 0);
        clipl_tensor_release(tc[i].a);
        clipl_tensor_release(tc[i].b);
        clipl_tensor_release(tc[i].expect);
    }
}

static void test_empty(void)
{
    clipl_tensor *a = clipl_tensor_zeros(CLIPL_F32, 2, (int64_t[]){0, 4});
    clipl_tensor *b = RND(CLIPL_F32, 4, 3), *y = NULL;
    CHECK_OK(clipl_matmul(a, b, NULL, &y, NULL));
    CHECK(y && y->ndim == 2 && y->shape[0] == 0 && y->shape[1] == 3);
    clipl_tensor_release(y);
    y = NULL;
    CHECK_OK(clipl_softmax(a, &y, -1, 0));
    CHECK(y && y->shape[0] == 0);
    clipl_tensor_release(y);
    y = NULL;
    CHECK_OK(clipl_eltwise(a, &y, CLIPL_ACT_RELU, 0, 0));
    clipl_tensor_release(y);
    clipl_tensor_release(a);
    clipl_tensor_release(b);
}

/* ---- channels-last convolution and pooling (the ResNet tower) -------------------------------- */

/* dst[i] = act(a[i] + b[i]) over equal shapes (b NULL: act(a)); f32 result. */
static clipl_tensor *ref_add_act(const clipl_tensor *a, const clipl_tensor *b, int act)
{
    double *A = dbl(a), *B = b ? dbl(b) : NULL;
    int64_t n = clipl_tensor_numel(a);
    for (int64_t i = 0; i < n; i++)
        A[i] = act_ref(act, A[i] + (B ? B[i] : 0), 0, 0);
    free(B);
    return ref_tensor(A, a->ndim, a->shape);
}

static void test_conv_nhwc(int dt)
{
    char label[96];
    /* 3x3 stride 2 with ReLU, prepared for batch 4 and run at batch 2 (also on a channels-last
     * src, which needs no reorder) */
    clipl_tensor *x = RND(dt, 2, 8, 9, 9), *w = RND(dt, 12, 8, 3, 3), *b = RND(CLIPL_F32, 12);
    clipl_tensor *xl = NULL, *y = NULL, *y2 = NULL;
    clipl_conv2d_opts o = {{2, 2}, {1, 1}, {1, 1}, 1, CLIPL_ACT_RELU, 0, 0};
    clipl_tensor *e = ref_conv(x, w, b, &o);
    clipl_conv2d_weights *cw = clipl__conv2d_prepare_nhwc(w, b, dt, &o, 0, 4, 9, 9);
    CHECK(cw != NULL);
    CHECK_OK(clipl__conv2d_apply_nhwc(cw, x, NULL, &y));
    CHECK(y && y->dt == dt && clipl__tensor_is_nhwc(y) && !clipl_tensor_is_contiguous(y));
    snprintf(label, sizeof label, "conv2d nhwc 3x3 s2 relu %s", clipl_dtype_name(dt));
    CHECK_CLOSE(y, e, tol_for(dt), label);
    CHECK_OK(clipl__tensor_to_nhwc(x, dt, &xl));
    CHECK_OK(clipl__conv2d_apply_nhwc(cw, xl, NULL, &y2));
    CHECK_CLOSE(y2, e, tol_for(dt), "conv2d nhwc, channels-last src");
    /* the public apply runs weights prepared for channels-last too (NCHW dst) */
    clipl_tensor *y3 = NULL;
    CHECK_OK(clipl_conv2d_apply(cw, x, &y3));
    CHECK_CLOSE(y3, e, tol_for(dt), "conv2d_apply on channels-last weights");
    clipl_conv2d_weights_free(cw);
    /* 1x1 with the residual summed in place before the ReLU (a bottleneck's conv3), at batch 1
     * and at the hinted batch 3 */
    for (int64_t n = 1; n <= 3; n += 2) {
        clipl_tensor *x1 = RND(dt, n, 16, 5, 5), *w1 = RND(dt, 24, 16, 1, 1);
        clipl_tensor *r = RND(dt, n, 24, 5, 5), *b1 = RND(CLIPL_F32, 24), *acc = NULL, *out = NULL;
        clipl_conv2d_opts o1 = {{1, 1}, {0, 0}, {1, 1}, 1, CLIPL_ACT_RELU, 0, 0};
        clipl_conv2d_opts plain = o1;
        plain.act = CLIPL_ACT_NONE;
        clipl_tensor *c = ref_conv(x1, w1, b1, &plain), *e1 = ref_add_act(c, r, CLIPL_ACT_RELU);
        clipl_conv2d_weights *cw1 = clipl__conv2d_prepare_nhwc(w1, b1, dt, &o1, 1, 3, 5, 5);
        CHECK(cw1 != NULL);
        CHECK_OK(clipl__tensor_to_nhwc(r, dt, &acc));
        CHECK_OK(clipl__conv2d_apply_nhwc(cw1, x1, acc, &out));
        CHECK(out == acc);
        snprintf(label, sizeof label, "conv2d nhwc 1x1 + residual, relu, batch %lld %s",
                 (long long)n, clipl_dtype_name(dt));
        CHECK_CLOSE(out, e1, tol_for(dt), label);
        clipl_tensor *objs[] = {x1, w1, r, b1, acc, out, c, e1};
        for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
            clipl_tensor_release(objs[i]);
        clipl_conv2d_weights_free(cw1);
    }
    /* errors: a residual of the wrong shape or layout, weights not prepared for channels-last */
    clipl_tensor *bad = RND(dt, 2, 12, 4, 4), *badl = NULL, *good = NULL, *yy = NULL;
    cw = clipl__conv2d_prepare_nhwc(w, b, dt, &o, 1, 2, 9, 9);
    CHECK_ERR(clipl__conv2d_apply_nhwc(cw, x, bad, &yy), CLIPL_ESHAPE,
              "conv2d: residual [2x12x4x4]");
    CHECK_OK(clipl__tensor_to_nhwc(bad, dt, &badl));
    clipl_tensor *nchw = RND(dt, 2, 12, 5, 5);
    CHECK_ERR(clipl__conv2d_apply_nhwc(cw, x, nchw, &yy), CLIPL_ESHAPE, "channels-last");
    CHECK_ERR(clipl__conv2d_apply_nhwc(cw, badl, NULL, &yy), CLIPL_ESHAPE,
              "conv2d: size mismatch, src [2x12x4x4] with weights [12x8x3x3]");
    clipl_conv2d_weights_free(cw);
    cw = clipl_conv2d_prepare(w, b, dt, &o, 9, 9);
    CHECK_ERR(clipl__conv2d_apply_nhwc(cw, x, NULL, &good), CLIPL_EINVAL, "channels-last");
    clipl_conv2d_weights_free(cw);
    clipl_tensor *objs[] = {x, w, b, xl, y, y2, y3, e, bad, badl, nchw};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

static void test_pool_nhwc(int dt)
{
    /* average of each 2x2 window, in doubles, against the channels-last pool of a channels-last
     * src; the output stays channels-last */
    int64_t N = 2, C = 16, H = 6, W = 8;
    clipl_tensor *x = RND(dt, N, C, H, W), *xl = NULL, *y = NULL, *yc = NULL;
    double *X = dbl(x), *E = malloc(sizeof(double) * (size_t)(N * C * H * W / 4));
    for (int64_t i = 0; i < N * C; i++)
        for (int64_t oh = 0; oh < H / 2; oh++)
            for (int64_t ow = 0; ow < W / 2; ow++) {
                const double *p = X + (i * H + 2 * oh) * W + 2 * ow;
                E[(i * (H / 2) + oh) * (W / 2) + ow] = (p[0] + p[1] + p[W] + p[W + 1]) / 4;
            }
    clipl_tensor *e = ref_tensor(E, 4, (int64_t[]){N, C, H / 2, W / 2});
    CHECK_OK(clipl__tensor_to_nhwc(x, dt, &xl));
    CHECK_OK(clipl__pool2d_nhwc(xl, &y, CLIPL_POOL_AVG, 2, 2, 2, 2, 0, 0, 0));
    CHECK(y && clipl__tensor_is_nhwc(y) && y->dt == dt);
    CHECK_CLOSE(y, e, tol_for(dt), "avg_pool2d channels-last");
    /* an NCHW src gives an NCHW (contiguous) dst, like clipl_pool2d */
    CHECK_OK(clipl__pool2d_nhwc(x, &yc, CLIPL_POOL_AVG, 2, 2, 2, 2, 0, 0, 0));
    CHECK(yc && clipl_tensor_is_contiguous(yc));
    CHECK_CLOSE(yc, e, tol_for(dt), "avg_pool2d channels-last, NCHW src");
    free(X);
    clipl_tensor *objs[] = {x, xl, y, yc, e};
    for (size_t i = 0; i < sizeof objs / sizeof *objs; i++)
        clipl_tensor_release(objs[i]);
}

static void test_to_nhwc(void)
{
    /* exact: a copy (f32 -> f32) or one round to nearest even (f32 -> bf16), through the loop for
     * 3 channels and through oneDNN's reorder for 16 */
    for (int64_t c = 3; c <= 16; c += 13)
        for (int k = 0; k < 2; k++) {
            int dt = k ? CLIPL_BF16 : CLIPL_F32;
            clipl_tensor *x = RND(CLIPL_F32, 2, c, 5, 7), *xl = NULL, *xr = NULL;
            CHECK_OK(clipl__tensor_to_nhwc(x, dt, &xl));
            CHECK(xl && clipl__tensor_is_nhwc(xl) && xl->dt == dt);
            CHECK_OK(clipl_tensor_to(x, &xr, dt));
            CHECK_CLOSE(xl, xr, 0, c == 3 ? "to_nhwc, 3 channels" : "to_nhwc, 16 channels");
            clipl_tensor_release(x);
            clipl_tensor_release(xl);
            clipl_tensor_release(xr);
        }
    clipl_tensor *v = RND(CLIPL_F32, 2, 3), *o = NULL;
    CHECK_ERR(clipl__tensor_to_nhwc(v, CLIPL_F32, &o), CLIPL_EINVAL, "to_nhwc: src must be");
    clipl_tensor_release(v);
}

int main(void)
{
    gen = clipl_generator_new(1234);
    int dts[2] = {CLIPL_F32, CLIPL_BF16};
    for (int i = 0; i < 2; i++) {
        test_matmul(dts[i]);
        test_matmul_accum(dts[i]);
        test_linear(dts[i]);
        test_eltwise(dts[i]);
        test_softmax(dts[i]);
        test_layer_norm(dts[i]);
        test_conv(dts[i]);
        test_batch_norm(dts[i]);
        test_pool(dts[i]);
        test_attention(dts[i]);
        test_attention_qkv(dts[i]);
        test_layer_norm_rows(dts[i]);
    }
    for (int i = 0; i < 2; i++) {
        test_conv_nhwc(dts[i]);
        test_pool_nhwc(dts[i]);
    }
    test_to_nhwc();
    test_matmul_errors();
    test_empty();
    test_threads();
    test_cache();
    clipl_generator_free(gen);
    CHECK(clipl_live_bytes() == 0);
    return check_done("ops_dnnl");
}
