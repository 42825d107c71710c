/*
 * test_ops_plain.c - the plain ops (binary, reductions, topk, cat/stack, indexing) against
 * straightforward double-precision references written here.
 *
 * Tolerances (max |got - want| / max |want| over the tensor):
 *   F32_TOL 1e-6: f32 results are the correctly rounded (or, for pow, 1-2 ulp) value of an exact
 *                 double computation on the same inputs: error <= 2^-23 relative.
 *   BF16_TOL 2^-8: bf16 keeps an 8-bit significand, so one rounding of the result costs up to
 *                 2^-9 relative; inputs are bf16 values already (exact in double), so 2^-8 leaves
 *                 a factor of two for the f32 intermediate.
 * Integer results and indices are compared exactly.
 */
#include "check.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define F32_TOL 1e-6
#define BF16_TOL (1.0 / 256)
/* f16 keeps an 11-bit significand: one rounding costs up to 2^-11 relative; allow 2^-10. */
#define F16_TOL (1.0 / 1024)

static clipl_generator *gen;

static double *vals(const clipl_tensor *t)
{
    int64_t n = clipl_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    clipl_tensor_to_doubles(t, d, n);
    return d;
}

static clipl_tensor *rnd(int dt, int ndim, const int64_t *shape, double lo, double hi)
{
    clipl_tensor *f = clipl_tensor_empty(CLIPL_F32, ndim, shape), *t = NULL;
    clipl_tensor_uniform_(f, gen, lo, hi);
    if (dt == CLIPL_I32 || dt == CLIPL_I64 || dt == CLIPL_U8) {
        int64_t n = clipl_tensor_numel(f);
        for (int64_t i = 0; i < n; i++) {
            double v;
            clipl_tensor_get_flat(f, i, &v);
            clipl_tensor_set_flat(f, i, floor(v));
        }
    }
    clipl_tensor_to(f, &t, dt);
    clipl_tensor_release(f);
    return t;
}

#define SHAPE(...) (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((int64_t[]){__VA_ARGS__})

/* Checks t against want[] (row-major, numel entries), shape and dtype. */
static void expect(const clipl_tensor *t, int dt, int ndim, const int64_t *shape,
                   const double *want, double tol, const char *label)
{
    check_count++;
    if (!t) {
        check_failures++;
        fprintf(stderr, "%s: no tensor (%s)\n", label, clipl_errmsg());
        return;
    }
    bool ok = t->dt == dt && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        ok = t->shape[i] == shape[i];
    if (!ok) {
        check_failures++;
        fprintf(stderr, "%s: got dtype %s ndim %d, want %s ndim %d (or shapes differ)\n", label,
                clipl_dtype_name(t->dt), t->ndim, clipl_dtype_name(dt), ndim);
        return;
    }
    int64_t n = clipl_tensor_numel(t);
    double *got = vals(t), m = 0, scale = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if ((isnan(got[i]) && isnan(want[i])) || got[i] == want[i])
            d = 0;
        else if (isnan(d))
            d = INFINITY;
        if (d > m)
            m = d;
        if (fabs(want[i]) > scale && isfinite(want[i]))
            scale = fabs(want[i]);
    }
    if (!(m / scale <= tol)) {
        check_failures++;
        fprintf(stderr, "%s: relative error %.3g > %.3g\n", label, m / scale, tol);
    }
    free(got);
}

/* ---- binary ---- */

/* Flat index into a (row-major logical) of shape ash for output multi-index idx (broadcast). */
static int64_t bidx(int ondim, const int64_t *idx, int andim, const int64_t *ash)
{
    int64_t f = 0;
    for (int i = 0; i < andim; i++) {
        int oi = ondim - andim + i;
        f = f * ash[i] + (ash[i] == 1 ? 0 : idx[oi]);
    }
    return f;
}

static double ref_op(int op, double x, double y)
{
    switch (op) {
    case CLIPL_BIN_ADD: return x + y;
    case CLIPL_BIN_SUB: return x - y;
    case CLIPL_BIN_MUL: return x * y;
    case CLIPL_BIN_DIV: return x / y;
    case CLIPL_BIN_POW: return pow(x, y);
    case CLIPL_BIN_MAX: return x > y ? x : y;
    case CLIPL_BIN_MIN: return x < y ? x : y;
    case CLIPL_BIN_EQ: return x == y;
    case CLIPL_BIN_NE: return x != y;
    case CLIPL_BIN_LT: return x < y;
    case CLIPL_BIN_LE: return x <= y;
    case CLIPL_BIN_GT: return x > y;
    case CLIPL_BIN_GE: return x >= y;
    }
    return NAN;
}

/* Reference a op b with broadcasting, in double. Fills shape/ndim; returns numel values. */
static double *ref_binary(int op, const clipl_tensor *a, const clipl_tensor *b, int *ndim,
                          int64_t *shape, double alpha)
{
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t total = 1;
    for (int i = 0; i < n; i++) {
        int ia = a->ndim - n + i, ib = b->ndim - n + i;
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        shape[i] = sa == 1 ? sb : sa;
        total *= shape[i];
    }
    *ndim = n;
    double *va = vals(a), *vb = vals(b), *out = malloc(sizeof(double) * (size_t)(total + 1));
    int64_t idx[CLIPL_MAX_DIMS];
    for (int64_t o = 0; o < total; o++) {
        int64_t r = o;
        for (int i = n - 1; i >= 0; i--) {
            idx[i] = r % shape[i];
            r /= shape[i];
        }
        double x = va[bidx(n, idx, a->ndim, a->shape)], y = vb[bidx(n, idx, b->ndim, b->shape)];
        out[o] = op == CLIPL_BIN_ADD ? x + alpha * y : ref_op(op, x, y);
    }
    free(va);
    free(vb);
    return out;
}

static void check_binary(int op, const clipl_tensor *a, const clipl_tensor *b, int want_dt,
                         double tol, const char *label)
{
    int ndim;
    int64_t shape[CLIPL_MAX_DIMS];
    double *want = ref_binary(op, a, b, &ndim, shape, 1.0);
    clipl_tensor *out = NULL;
    CHECK_OK(clipl_binary(a, b, &out, op));
    char l[160];
    snprintf(l, sizeof l, "%s op %d", label, op);
    expect(out, want_dt, ndim, shape, want, tol, l);
    clipl_tensor_release(out);
    free(want);
}

static void test_binary(void)
{
    /* broadcasting both operands, non-contiguous a (a transpose), expanded b */
    clipl_tensor *a0 = rnd(CLIPL_F32, SHAPE(5, 1, 3), 0.5, 2), *a = NULL;
    clipl_tensor_permute(a0, &a, 3, (int[]){2, 1, 0}); /* [3, 1, 5], strides (1, 3, 3) */
    clipl_tensor *b0 = rnd(CLIPL_F32, SHAPE(4, 1), 0.5, 2), *b = NULL;
    clipl_tensor_expand(b0, &b, 3, (int64_t[]){1, 4, 5}); /* [1, 4, 5] with a stride-0 dim */
    for (int op = CLIPL_BIN_ADD; op <= CLIPL_BIN_GE; op++)
        check_binary(op, a, b, op >= CLIPL_BIN_EQ ? CLIPL_U8 : CLIPL_F32, F32_TOL, "f32 bcast");
    check_binary(CLIPL_BIN_SUB, b, a, CLIPL_F32, F32_TOL, "f32 bcast reversed");

    /* bf16, odd sizes, b broadcast along the leading dim */
    clipl_tensor *c = rnd(CLIPL_BF16, SHAPE(7, 13), -2, 2), *d = rnd(CLIPL_BF16, SHAPE(13), 0.5, 2);
    for (int op = CLIPL_BIN_ADD; op <= CLIPL_BIN_MIN; op++)
        if (op != CLIPL_BIN_POW)
            check_binary(op, c, d, CLIPL_BF16, BF16_TOL, "bf16");
    check_binary(CLIPL_BIN_POW, d, c, CLIPL_BF16, BF16_TOL, "bf16 pow");
    /* bf16 with f32 gives f32 (computed from the exact bf16 values) */
    clipl_tensor *df = rnd(CLIPL_F32, SHAPE(7, 1), -1, 1);
    check_binary(CLIPL_BIN_MUL, c, df, CLIPL_F32, F32_TOL, "bf16*f32");

    /* large contiguous: the oneDNN path (f32, bf16, b broadcast over rows and columns) */
    clipl_tensor *big = rnd(CLIPL_F32, SHAPE(64, 1031), -1, 1),
                 *row = rnd(CLIPL_F32, SHAPE(1031), 0.5, 1.5),
                 *col = rnd(CLIPL_F32, SHAPE(64, 1), 0.5, 1.5),
                 *big2 = rnd(CLIPL_F32, SHAPE(64, 1031), 0.5, 1.5);
    for (int op = CLIPL_BIN_ADD; op <= CLIPL_BIN_MIN; op++) {
        check_binary(op, big, row, CLIPL_F32, F32_TOL, "big f32 row");
        check_binary(op, big, col, CLIPL_F32, F32_TOL, "big f32 col");
        if (op != CLIPL_BIN_POW)
            check_binary(op, big, big2, CLIPL_F32, F32_TOL, "big f32 same");
    }
    clipl_tensor *bigh = NULL, *rowh = NULL;
    clipl_tensor_to(big, &bigh, CLIPL_BF16);
    clipl_tensor_to(row, &rowh, CLIPL_BF16);
    for (int op = CLIPL_BIN_ADD; op <= CLIPL_BIN_DIV; op++)
        check_binary(op, bigh, rowh, CLIPL_BF16, BF16_TOL, "big bf16 row");
    /* big non-contiguous (transposed) a: C loops over OpenMP */
    clipl_tensor *bigt = NULL;
    clipl_tensor_transpose(big2, &bigt, 0, 1);
    clipl_tensor *row64 = rnd(CLIPL_F32, SHAPE(64), 0.5, 1.5);
    check_binary(CLIPL_BIN_MUL, bigt, row64, CLIPL_F32, F32_TOL, "big transposed");

    /* 3-d operands transposed in their last two dims: the tiled walk (odd sizes, broadcast b) */
    {
        clipl_tensor *p0 = rnd(CLIPL_F32, SHAPE(3, 53, 41), -1, 1), *pt = NULL,
                     *q0 = rnd(CLIPL_BF16, SHAPE(3, 53, 41), -1, 1), *qt = NULL,
                     *pb = rnd(CLIPL_F32, SHAPE(41, 1), 0.5, 1.5);
        clipl_tensor_permute(p0, &pt, 3, (int[]){0, 2, 1}); /* [3, 41, 53] */
        clipl_tensor_permute(q0, &qt, 3, (int[]){0, 2, 1});
        for (int op = CLIPL_BIN_ADD; op <= CLIPL_BIN_GE; op++) {
            check_binary(op, pt, pb, op >= CLIPL_BIN_EQ ? CLIPL_U8 : CLIPL_F32, F32_TOL, "tiled");
            check_binary(op, pb, qt, op >= CLIPL_BIN_EQ ? CLIPL_U8 : CLIPL_F32, F32_TOL, "tiled b");
        }
        check_binary(CLIPL_BIN_MUL, qt, qt, CLIPL_BF16, BF16_TOL, "tiled bf16");
        /* in place into the transposed view itself */
        int nd;
        int64_t sh[CLIPL_MAX_DIMS];
        double *w = ref_binary(CLIPL_BIN_SUB, pt, pb, &nd, sh, 1.0);
        CHECK_OK(clipl_sub_(pt, pb));
        expect(pt, CLIPL_F32, nd, sh, w, F32_TOL, "tiled in place");
        free(w);
        clipl_tensor *all[] = {p0, pt, q0, qt, pb};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            clipl_tensor_release(all[i]);
    }

    /* alpha */
    {
        int ndim;
        int64_t shape[CLIPL_MAX_DIMS];
        double *want = ref_binary(CLIPL_BIN_ADD, big, row, &ndim, shape, -0.5);
        clipl_tensor *out = NULL;
        CHECK_OK(clipl_add(big, row, &out, -0.5));
        expect(out, CLIPL_F32, ndim, shape, want, F32_TOL, "add alpha big");
        clipl_tensor_release(out);
        free(want);
        want = ref_binary(CLIPL_BIN_ADD, a, b, &ndim, shape, 3.0);
        CHECK_OK(clipl_add(a, b, &out, 3.0));
        expect(out, CLIPL_F32, ndim, shape, want, F32_TOL, "add alpha small");
        clipl_tensor_release(out);
        free(want);
    }

    /* integers: exact, dtype promotion, true division */
    clipl_tensor *ia = rnd(CLIPL_I32, SHAPE(3, 4), -50, 50), *ib = rnd(CLIPL_I64, SHAPE(4), 1, 9);
    for (int op = CLIPL_BIN_ADD; op <= CLIPL_BIN_GE; op++) {
        if (op == CLIPL_BIN_DIV || op == CLIPL_BIN_POW)
            continue;
        check_binary(op, ia, ib, op >= CLIPL_BIN_EQ ? CLIPL_U8 : CLIPL_I64, 0, "int");
    }
    check_binary(CLIPL_BIN_DIV, ia, ib, CLIPL_F32, F32_TOL, "int div is true division");
    clipl_tensor *ismall = rnd(CLIPL_I32, SHAPE(6), -3, 4), *iexp = rnd(CLIPL_I32, SHAPE(6), 0, 5);
    check_binary(CLIPL_BIN_POW, ismall, iexp, CLIPL_I32, 0, "int pow");
    clipl_tensor *d4 = rnd(CLIPL_BF16, SHAPE(4), -2, 2);
    check_binary(CLIPL_BIN_MUL, ib, d4, CLIPL_BF16, BF16_TOL, "i64*bf16 -> bf16");

    /* 0-size dims */
    clipl_tensor *e = rnd(CLIPL_F32, SHAPE(0, 3), 0, 1), *e3 = rnd(CLIPL_F32, SHAPE(3), 0, 1);
    check_binary(CLIPL_BIN_ADD, e, e3, CLIPL_F32, 0, "0-size");
    /* 0-d with 0-d and with a tensor */
    clipl_tensor *s0 = rnd(CLIPL_F32, 0, NULL, 1, 2);
    check_binary(CLIPL_BIN_MUL, s0, s0, CLIPL_F32, F32_TOL, "0-d");
    check_binary(CLIPL_BIN_SUB, s0, c, CLIPL_F32, F32_TOL, "0-d f32 - bf16");

    /* f16: computed in f32, rounded once; f16 with bf16 gives f32 */
    clipl_tensor *hf = NULL, *hd = NULL;
    clipl_tensor_to(c, &hf, CLIPL_F16);
    clipl_tensor_to(d, &hd, CLIPL_F16);
    for (int op = CLIPL_BIN_ADD; op <= CLIPL_BIN_GE; op++)
        if (op != CLIPL_BIN_POW)
            check_binary(op, hf, hd, op >= CLIPL_BIN_EQ ? CLIPL_U8 : CLIPL_F16, F16_TOL, "f16");
    check_binary(CLIPL_BIN_MUL, hf, d, CLIPL_F32, F32_TOL, "f16*bf16 -> f32");
    clipl_tensor_release(hf);
    clipl_tensor_release(hd);

    /* result dtypes */
    CHECK(clipl_result_dtype(CLIPL_BF16, CLIPL_F16) == CLIPL_F32);
    CHECK(clipl_result_dtype(CLIPL_I64, CLIPL_BF16) == CLIPL_BF16);
    CHECK(clipl_result_dtype(CLIPL_U8, CLIPL_I32) == CLIPL_I32);
    CHECK(clipl_result_dtype(CLIPL_F16, CLIPL_F32) == CLIPL_F32);

    /* errors name both shapes */
    clipl_tensor *out = NULL, *x5 = rnd(CLIPL_F32, SHAPE(5), 0, 1),
                 *x34 = rnd(CLIPL_F32, SHAPE(3, 4), 0, 1);
    CHECK_ERR(clipl_add(x34, x5, &out, 1), CLIPL_ESHAPE, "3x4 and 5");
    CHECK_ERR(clipl_binary(x34, x5, &out, 99), CLIPL_EINVAL, "unknown op 99");
    CHECK_ERR(clipl_add_(x5, x34, 1), CLIPL_ESHAPE, "add");
    CHECK_ERR(clipl_binary_(ia, x34, CLIPL_BIN_MUL), CLIPL_EINVAL, "cannot be stored in place");
    CHECK_ERR(clipl_add_(ia, ia, 0.5), CLIPL_EINVAL, "alpha");
    CHECK_ERR(clipl_pow(ib, ia, &out), CLIPL_EINVAL, "negative integer powers");
    CHECK_ERR(clipl_pow_scalar(ib, -1, &out), CLIPL_EINVAL, "negative integer powers");

    clipl_tensor *all[] = {a0,   a,     b0, b,  c,  d,      df,   big, row, col, big2, bigh, rowh,
                           bigt, row64, ia, ib, d4, ismall, iexp, e,   e3,  s0,  x5,   x34};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clipl_tensor_release(all[i]);
}

static void test_scalar_inplace(void)
{
    clipl_tensor *a = rnd(CLIPL_F32, SHAPE(4, 6), 0.5, 2), *at = NULL, *out = NULL;
    clipl_tensor_transpose(a, &at, 0, 1);
    int64_t n = 24;
    double *va = vals(at), want[64];
    /* tensor-scalar and scalar-tensor, on a transposed view */
    const int ops[] = {CLIPL_BIN_ADD, CLIPL_BIN_SUB, CLIPL_BIN_MUL,
                       CLIPL_BIN_DIV, CLIPL_BIN_POW, CLIPL_BIN_GT};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        for (int rev = 0; rev <= 1; rev++) {
            for (int64_t i = 0; i < n; i++)
                want[i] = rev ? ref_op(ops[k], 1.7, va[i]) : ref_op(ops[k], va[i], 1.7);
            CHECK_OK(clipl_binary_scalar(at, 1.7, &out, ops[k], rev));
            char l[64];
            snprintf(l, sizeof l, "scalar op %d rev %d", ops[k], rev);
            expect(out, ops[k] == CLIPL_BIN_GT ? CLIPL_U8 : CLIPL_F32, SHAPE(6, 4), want, F32_TOL,
                   l);
            clipl_tensor_release(out);
            out = NULL;
        }
    }
    /* named forms */
    for (int64_t i = 0; i < n; i++)
        want[i] = 2.0 - va[i];
    CHECK_OK(clipl_rsub_scalar(at, 2.0, &out));
    expect(out, CLIPL_F32, SHAPE(6, 4), want, F32_TOL, "rsub");
    clipl_tensor_release(out);
    for (int64_t i = 0; i < n; i++)
        want[i] = -va[i];
    CHECK_OK(clipl_neg(at, &out));
    expect(out, CLIPL_F32, SHAPE(6, 4), want, 0, "neg");
    clipl_tensor_release(out);
    for (int64_t i = 0; i < n; i++)
        want[i] = pow(2.0, va[i]);
    CHECK_OK(clipl_rpow_scalar(at, 2.0, &out));
    expect(out, CLIPL_F32, SHAPE(6, 4), want, F32_TOL, "rpow");
    clipl_tensor_release(out);

    /* integer tensors with scalars: integral keeps the dtype, fractional or div gives f32 */
    clipl_tensor *ia = rnd(CLIPL_I32, SHAPE(5), -10, 10);
    double *vi = vals(ia);
    for (int i = 0; i < 5; i++)
        want[i] = vi[i] * 3;
    CHECK_OK(clipl_mul_scalar(ia, 3, &out));
    expect(out, CLIPL_I32, SHAPE(5), want, 0, "i32 * 3");
    clipl_tensor_release(out);
    for (int i = 0; i < 5; i++)
        want[i] = vi[i] + 0.5;
    CHECK_OK(clipl_add_scalar(ia, 0.5, &out));
    expect(out, CLIPL_F32, SHAPE(5), want, F32_TOL, "i32 + 0.5");
    clipl_tensor_release(out);
    for (int i = 0; i < 5; i++)
        want[i] = vi[i] / 4;
    CHECK_OK(clipl_div_scalar(ia, 4, &out));
    expect(out, CLIPL_F32, SHAPE(5), want, F32_TOL, "i32 / 4");
    clipl_tensor_release(out);
    CHECK_ERR(clipl_add_scalar_(ia, 0.5), CLIPL_EINVAL, "cannot be stored in place in a i32");

    /* bf16 * scalar: the scalar is not rounded to bf16 first */
    clipl_tensor *h = rnd(CLIPL_BF16, SHAPE(9), 1, 2);
    double *vh = vals(h);
    for (int i = 0; i < 9; i++)
        want[i] = vh[i] * 1.001;
    CHECK_OK(clipl_mul_scalar(h, 1.001, &out));
    expect(out, CLIPL_BF16, SHAPE(9), want, BF16_TOL, "bf16 * 1.001");
    clipl_tensor_release(out);

    /* in place on a narrow (non-contiguous) view: only the view changes */
    clipl_tensor *base = rnd(CLIPL_F32, SHAPE(4, 6), -1, 1), *view = NULL;
    clipl_tensor *bb = rnd(CLIPL_F32, SHAPE(3), -1, 1);
    double *before = vals(base), *vb = vals(bb);
    clipl_tensor_narrow(base, &view, 1, 2, 3); /* [4, 3] */
    CHECK_OK(clipl_add_(view, bb, 2.0));
    CHECK_OK(clipl_mul_scalar_(view, -1.0));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 6; j++)
            want[i * 6 + j] =
                (j >= 2 && j < 5) ? -(before[i * 6 + j] + 2.0 * vb[j - 2]) : before[i * 6 + j];
    expect(base, CLIPL_F32, SHAPE(4, 6), want, F32_TOL, "in place on a view");
    /* a big in-place op on a contiguous tensor (oneDNN in place) */
    clipl_tensor *big = rnd(CLIPL_F32, SHAPE(300, 200), -1, 1),
                 *brow = rnd(CLIPL_F32, SHAPE(200), -1, 1);
    double *vbig = vals(big), *vbrow = vals(brow), *wbig = malloc(sizeof(double) * 60000);
    for (int i = 0; i < 60000; i++)
        wbig[i] = vbig[i] - vbrow[i % 200];
    CHECK_OK(clipl_sub_(big, brow));
    expect(big, CLIPL_F32, SHAPE(300, 200), wbig, F32_TOL, "big sub_");
    free(vbig);
    vbig = vals(big);
    for (int i = 0; i < 60000; i++)
        wbig[i] = -vbig[i];
    CHECK_OK(clipl_neg_(big));
    expect(big, CLIPL_F32, SHAPE(300, 200), wbig, 0, "big neg_");

    free(va);
    free(vi);
    free(vh);
    free(before);
    free(vb);
    free(vbig);
    free(vbrow);
    free(wbig);
    clipl_tensor *all[] = {a, at, ia, h, base, view, bb, big, brow};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clipl_tensor_release(all[i]);
}

/* ---- reductions ---- */

enum { K_SUM, K_MEAN, K_MAX, K_MIN, K_NORM };

/* Reference reduction of t along d (or all when d < 0) in double. Returns values; idx gets the
 * first index of the extreme. */
static double *ref_reduce(int kind, const clipl_tensor *t, int d, double p, int64_t **idx,
                          int64_t *M)
{
    double *v = vals(t);
    int64_t n = clipl_tensor_numel(t), L, inner = 1;
    if (d < 0) {
        L = n;
        *M = 1;
    } else {
        L = t->shape[d];
        for (int i = d + 1; i < t->ndim; i++)
            inner *= t->shape[i];
        *M = L ? n / L : 1;
        for (int i = 0; i < t->ndim; i++)
            if (i != d && t->shape[i] == 0)
                *M = 0;
        if (L == 0) {
            *M = 1;
            for (int i = 0; i < t->ndim; i++)
                if (i != d)
                    *M *= t->shape[i];
        }
    }
    double *out = malloc(sizeof(double) * (size_t)(*M + 1));
    *idx = malloc(sizeof(int64_t) * (size_t)(*M + 1));
    for (int64_t o = 0; o < *M; o++) {
        int64_t base = (o / inner) * L * inner + o % inner;
        double s = 0, best = 0;
        int64_t bi = -1;
        for (int64_t j = 0; j < L; j++) {
            double x = v[base + j * inner];
            if (kind == K_SUM || kind == K_MEAN)
                s += x;
            else if (kind == K_NORM)
                s = p == INFINITY ? fmax(s, fabs(x)) : s + pow(fabs(x), p);
            else if (bi < 0 || (kind == K_MAX ? x > best : x < best)) {
                best = x;
                bi = j;
            }
        }
        out[o] = kind == K_MEAN                     ? s / (double)L
                 : kind == K_NORM                   ? (p == INFINITY ? s : pow(s, 1.0 / p))
                 : (kind == K_MAX || kind == K_MIN) ? best
                                                    : s;
        (*idx)[o] = bi;
    }
    free(v);
    return out;
}

static void check_reduce(int kind, const clipl_tensor *t, int d, int keepdim, double p, double tol,
                         const char *label)
{
    int64_t M, *ridx;
    double *want = ref_reduce(kind, t, d, p, &ridx, &M);
    int64_t shape[CLIPL_MAX_DIMS];
    int ndim = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (d < 0 || i == d) {
            if (keepdim)
                shape[ndim++] = 1;
        } else {
            shape[ndim++] = t->shape[i];
        }
    }
    int dim = d < 0 ? CLIPL_ALL_DIMS : d;
    clipl_tensor *out = NULL, *idx = NULL;
    int vdt = t->dt;
    bool isint = t->dt == CLIPL_I32 || t->dt == CLIPL_I64 || t->dt == CLIPL_U8;
    switch (kind) {
    case K_SUM:
        CHECK_OK(clipl_sum(t, &out, dim, keepdim));
        vdt = isint ? CLIPL_I64 : vdt;
        break;
    case K_MEAN:
        CHECK_OK(clipl_mean(t, &out, dim, keepdim));
        vdt = isint ? CLIPL_F32 : vdt;
        break;
    case K_MAX: CHECK_OK(clipl_max(t, &out, &idx, dim, keepdim)); break;
    case K_MIN: CHECK_OK(clipl_min(t, &out, &idx, dim, keepdim)); break;
    case K_NORM:
        CHECK_OK(clipl_norm(t, &out, p, dim, keepdim));
        vdt = isint ? CLIPL_F32 : vdt;
        break;
    }
    char l[160];
    snprintf(l, sizeof l, "%s kind %d dim %d keepdim %d", label, kind, d, keepdim);
    expect(out, vdt, ndim, shape, want, tol, l);
    if (idx) {
        double *wi = malloc(sizeof(double) * (size_t)(M + 1));
        for (int64_t i = 0; i < M; i++)
            wi[i] = (double)ridx[i];
        expect(idx, CLIPL_I64, ndim, shape, wi, 0, l);
        clipl_tensor *am = NULL;
        if (kind == K_MAX)
            CHECK_OK(clipl_argmax(t, &am, dim, keepdim));
        else
            CHECK_OK(clipl_argmin(t, &am, dim, keepdim));
        expect(am, CLIPL_I64, ndim, shape, wi, 0, l);
        clipl_tensor_release(am);
        free(wi);
    }
    clipl_tensor_release(out);
    clipl_tensor_release(idx);
    free(want);
    free(ridx);
}

static void test_reduce(void)
{
    /* a permuted view with odd sizes */
    clipl_tensor *t0 = rnd(CLIPL_F32, SHAPE(9, 5, 7), -2, 2), *t = NULL;
    clipl_tensor_permute(t0, &t, 3, (int[]){1, 2, 0}); /* [5, 7, 9] */
    clipl_tensor *h = NULL;
    clipl_tensor_to(t, &h, CLIPL_BF16);
    clipl_tensor *it = rnd(CLIPL_I32, SHAPE(6, 11), -100, 100);
    for (int kind = K_SUM; kind <= K_NORM; kind++) {
        double ps[] = {1, 2, 3, INFINITY};
        for (int pi = 0; pi < (kind == K_NORM ? 4 : 1); pi++) {
            for (int d = -1; d < 3; d++)
                for (int kd = 0; kd <= 1; kd++) {
                    check_reduce(kind, t, d, kd, ps[pi], F32_TOL, "f32");
                    check_reduce(kind, h, d, kd, ps[pi], BF16_TOL, "bf16");
                    if (d < 2)
                        check_reduce(kind, it, d, kd, ps[pi], kind >= K_MEAN ? F32_TOL : 0, "i32");
                }
        }
    }
    /* long rows: chunked partial reductions (2 rows of 200003 > the 65536 chunk) */
    clipl_tensor *lg = rnd(CLIPL_F32, SHAPE(2, 200003), -1, 1);
    clipl_tensor_set_flat(lg, 150001, 5.0); /* the max sits in a later chunk */
    clipl_tensor_set_flat(lg, 200003 + 3, -5.0);
    for (int kind = K_SUM; kind <= K_NORM; kind++) {
        check_reduce(kind, lg, 1, 0, 2, F32_TOL, "long");
        check_reduce(kind, lg, -1, 0, 2, F32_TOL, "long all");
    }
    check_reduce(K_NORM, lg, 1, 0, INFINITY, F32_TOL, "long inf");
    /* ties: the first index wins */
    clipl_tensor *tie =
        clipl_tensor_from_data(CLIPL_F32, 1, (int64_t[]){5}, (float[]){1, 3, 3, 0, 0}, 20);
    check_reduce(K_MAX, tie, 0, 0, 0, 0, "tie");
    check_reduce(K_MIN, tie, 0, 0, 0, 0, "tie");
    /* 0-size: sum over an empty dim is 0; max over one is an error */
    clipl_tensor *e = rnd(CLIPL_F32, SHAPE(3, 0), 0, 1), *out = NULL, *idx = NULL;
    check_reduce(K_SUM, e, 1, 0, 0, 0, "empty");
    check_reduce(K_SUM, e, 0, 1, 0, 0, "empty kept");
    CHECK_ERR(clipl_max(e, &out, &idx, 1, 0), CLIPL_ESHAPE, "empty dim (tensor 3x0)");
    CHECK_ERR(clipl_sum(t, &out, 3, 0), CLIPL_EINDEX, "dim 3 out of range for a 3-d tensor");
    /* NaN propagates through max */
    clipl_tensor *nan =
        clipl_tensor_from_data(CLIPL_F32, 1, (int64_t[]){3}, (float[]){1, NAN, 2}, 12);
    CHECK_OK(clipl_max(nan, &out, &idx, 0, 0));
    double v;
    clipl_tensor_get_flat(out, 0, &v);
    CHECK(isnan(v));
    clipl_tensor_get_flat(idx, 0, &v);
    CHECK(v == 1);
    clipl_tensor_release(out);
    clipl_tensor_release(idx);
    /* the same down columns (the row-walking path): first NaN and first tie win */
    clipl_tensor *nan2 = clipl_tensor_from_data(
        CLIPL_F32, 2, (int64_t[]){4, 3}, (float[]){1, NAN, 7, NAN, 5, 7, 2, NAN, 1, 9, 0, 7}, 48);
    CHECK_OK(clipl_max(nan2, &out, &idx, 0, 0));
    double *mv = vals(out), *mi = vals(idx);
    CHECK(isnan(mv[0]) && mi[0] == 1);
    CHECK(isnan(mv[1]) && mi[1] == 0);
    CHECK(mv[2] == 7 && mi[2] == 0);
    free(mv);
    free(mi);
    clipl_tensor_release(out);
    clipl_tensor_release(idx);
    CHECK_OK(clipl_norm(nan2, &out, INFINITY, 0, 0));
    mv = vals(out);
    CHECK(isnan(mv[0]) && isnan(mv[1]) && mv[2] == 7);
    free(mv);
    clipl_tensor_release(out);
    clipl_tensor_release(nan2);
    /* f16 reductions */
    clipl_tensor *hf = NULL;
    clipl_tensor_to(t, &hf, CLIPL_F16);
    for (int kind = K_SUM; kind <= K_NORM; kind++)
        check_reduce(kind, hf, 1, 0, 2, F16_TOL, "f16");
    clipl_tensor *all[] = {t0, t, h, it, lg, tie, e, nan, hf};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clipl_tensor_release(all[i]);
}

/* ---- topk ---- */

static void check_topk(const clipl_tensor *t, int64_t k, int d, int largest, const char *label)
{
    double *v = vals(t);
    int64_t L = t->shape[d], inner = 1, n = clipl_tensor_numel(t);
    for (int i = d + 1; i < t->ndim; i++)
        inner *= t->shape[i];
    int64_t M = n / (L ? L : 1);
    int64_t shape[CLIPL_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = k;
    double *wv = malloc(sizeof(double) * (size_t)(M * k + 1)),
           *wi = malloc(sizeof(double) * (size_t)(M * k + 1));
    char *used = malloc((size_t)L + 1);
    for (int64_t o = 0; o < M; o++) {
        int64_t base = (o / inner) * L * inner + o % inner;
        memset(used, 0, (size_t)L + 1);
        for (int64_t j = 0; j < k; j++) { /* selection: best unused, lowest index on ties */
            int64_t bi = -1;
            for (int64_t i = 0; i < L; i++) {
                if (used[i])
                    continue;
                double x = v[base + i * inner];
                if (bi < 0 || (largest ? x > v[base + bi * inner] : x < v[base + bi * inner]))
                    bi = i;
            }
            used[bi] = 1;
            int64_t at = (o / inner) * k * inner + j * inner + o % inner;
            wv[at] = v[base + bi * inner];
            wi[at] = (double)bi;
        }
    }
    clipl_tensor *vo = NULL, *io = NULL;
    CHECK_OK(clipl_topk(t, &vo, &io, k, d, largest));
    expect(vo, t->dt, t->ndim, shape, wv, 0, label);
    expect(io, CLIPL_I64, t->ndim, shape, wi, 0, label);
    clipl_tensor_release(vo);
    clipl_tensor_release(io);
    free(v);
    free(wv);
    free(wi);
    free(used);
}

static void test_topk(void)
{
    clipl_tensor *t0 = rnd(CLIPL_F32, SHAPE(11, 6), -1, 1), *t = NULL;
    clipl_tensor_transpose(t0, &t, 0, 1); /* [6, 11] non-contiguous */
    for (int d = 0; d < 2; d++)
        for (int largest = 0; largest <= 1; largest++) {
            check_topk(t, 3, d, largest, "topk f32");
            check_topk(t, t->shape[d], d, largest, "topk full");
            check_topk(t, 0, d, largest, "topk 0");
        }
    clipl_tensor *ties = rnd(CLIPL_I64, SHAPE(4, 9), 0, 3); /* many duplicates */
    check_topk(ties, 5, 1, 1, "topk ties");
    check_topk(ties, 5, 1, 0, "topk ties smallest");
    /* k much smaller than the row: the bounded-heap selection, with and without ties */
    clipl_tensor *longr = rnd(CLIPL_F32, SHAPE(3, 301), -1, 1),
                 *longt = rnd(CLIPL_I32, SHAPE(2, 100), 0, 3);
    for (int largest = 0; largest <= 1; largest++) {
        check_topk(longr, 5, 1, largest, "topk heap");
        check_topk(longt, 7, 1, largest, "topk heap ties");
        check_topk(longt, 1, 1, largest, "topk heap k=1");
    }
    clipl_tensor_release(longr);
    clipl_tensor_release(longt);
    clipl_tensor *h = rnd(CLIPL_BF16, SHAPE(3, 4, 5), -1, 1);
    check_topk(h, 2, 1, 1, "topk bf16 middle dim");
    clipl_tensor *vo = NULL;
    CHECK_ERR(clipl_topk(t, &vo, NULL, 12, 1, 1), CLIPL_EINDEX, "k = 12 out of range for dim 1");
    clipl_tensor_release(t0);
    clipl_tensor_release(t);
    clipl_tensor_release(ties);
    clipl_tensor_release(h);
}

/* ---- cat / stack ---- */

static void test_join(void)
{
    clipl_tensor *a = rnd(CLIPL_F32, SHAPE(2, 3, 4), -1, 1),
                 *b0 = rnd(CLIPL_F32, SHAPE(2, 4, 5), -1, 1);
    clipl_tensor *b = NULL, *c = rnd(CLIPL_BF16, SHAPE(2, 1, 4), -1, 1),
                 *empty = rnd(CLIPL_F32, SHAPE(0), 0, 1);
    clipl_tensor_transpose(b0, &b, 1, 2); /* [2, 5, 4] non-contiguous */
    double *va = vals(a), *vb = vals(b), *vc = vals(c), want[128];
    int k = 0;
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 3 * 4; j++)
            want[k++] = va[i * 12 + j];
        for (int j = 0; j < 5 * 4; j++)
            want[k++] = vb[i * 20 + j];
        for (int j = 0; j < 4; j++)
            want[k++] = vc[i * 4 + j];
    }
    clipl_tensor *out = NULL;
    const clipl_tensor *list[] = {a, empty, b, c};
    CHECK_OK(clipl_cat(list, 4, &out, -2));
    expect(out, CLIPL_F32, SHAPE(2, 9, 4), want, 0, "cat dim 1 (mixed dtypes, empty skipped)");
    clipl_tensor_release(out);
    /* stack along a new middle dim */
    const clipl_tensor *pair[] = {a, a};
    CHECK_OK(clipl_stack(pair, 2, &out, 1));
    k = 0;
    for (int i = 0; i < 2; i++)
        for (int r = 0; r < 2; r++)
            for (int j = 0; j < 12; j++)
                want[k++] = va[i * 12 + j];
    expect(out, CLIPL_F32, SHAPE(2, 2, 3, 4), want, 0, "stack dim 1");
    clipl_tensor_release(out);
    CHECK_OK(clipl_stack(pair, 2, &out, -1));
    k = 0;
    for (int j = 0; j < 24; j++)
        for (int r = 0; r < 2; r++)
            want[k++] = va[j];
    expect(out, CLIPL_F32, SHAPE(2, 3, 4, 2), want, 0, "stack last");
    clipl_tensor_release(out);
    const clipl_tensor *bad[] = {a, b0};
    CHECK_ERR(clipl_cat(bad, 2, &out, 0), CLIPL_ESHAPE, "tensor 1 has shape 2x4x5");
    CHECK_ERR(clipl_stack(bad, 2, &out, 0), CLIPL_ESHAPE, "tensor 1 is 2x4x5, tensor 0 is 2x3x4");
    CHECK_ERR(clipl_cat(bad, 0, &out, 0), CLIPL_EINVAL, "non-empty list");
    free(va);
    free(vb);
    free(vc);
    clipl_tensor *all[] = {a, b0, b, c, empty};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clipl_tensor_release(all[i]);
}

/* ---- indexing ---- */

static void test_index(void)
{
    clipl_tensor *w0 = rnd(CLIPL_F32, SHAPE(6, 10), -1, 1), *w = NULL, *out = NULL;
    clipl_tensor_transpose(w0, &w, 0, 1); /* [10, 6] non-contiguous */
    double *vw = vals(w), want[512];
    clipl_tensor *ix =
        clipl_tensor_from_data(CLIPL_I64, 1, (int64_t[]){4}, (int64_t[]){3, 0, 3, 9}, 32);
    /* index_select along dims 0 and 1 */
    CHECK_OK(clipl_index_select(w, ix, &out, 0));
    int64_t iv[] = {3, 0, 3, 9};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 6; j++)
            want[i * 6 + j] = vw[iv[i] * 6 + j];
    expect(out, CLIPL_F32, SHAPE(4, 6), want, 0, "index_select 0");
    clipl_tensor_release(out);
    clipl_tensor *ix32 =
        clipl_tensor_from_data(CLIPL_I32, 1, (int64_t[]){3}, (int32_t[]){5, 1, 1}, 12);
    CHECK_OK(clipl_index_select(w, ix32, &out, -1));
    int32_t jv[] = {5, 1, 1};
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < 3; j++)
            want[i * 3 + j] = vw[i * 6 + jv[j]];
    expect(out, CLIPL_F32, SHAPE(10, 3), want, 0, "index_select 1 i32");
    clipl_tensor_release(out);
    CHECK_ERR(clipl_index_select(w, ix32, &out, 0), CLIPL_OK, NULL);
    clipl_tensor_release(out);
    CHECK_ERR(clipl_index_select(w, ix, &out, 1), CLIPL_EINDEX,
              "index 9 out of range for dim 1 of size 6");

    /* embedding: ids [2, 3] -> [2, 3, 6] (weight rows are strided here, then contiguous) */
    clipl_tensor *ids =
        clipl_tensor_from_data(CLIPL_I32, 2, (int64_t[]){2, 3}, (int32_t[]){0, 9, 4, 4, 2, 7}, 24);
    int32_t idv[] = {0, 9, 4, 4, 2, 7};
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
            want[i * 6 + j] = vw[idv[i] * 6 + j];
    CHECK_OK(clipl_embedding(ids, w, &out));
    expect(out, CLIPL_F32, SHAPE(2, 3, 6), want, 0, "embedding strided weight");
    clipl_tensor_release(out);
    clipl_tensor *wc = NULL;
    clipl_tensor_contiguous(w, &wc);
    CHECK_OK(clipl_embedding(ids, wc, &out));
    expect(out, CLIPL_F32, SHAPE(2, 3, 6), want, 0, "embedding");
    clipl_tensor_release(out);
    /* index_select on a dense src (the memcpy path), dims 0 and 1 */
    CHECK_OK(clipl_index_select(wc, ix, &out, 0));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 6; j++)
            want[i * 6 + j] = vw[iv[i] * 6 + j];
    expect(out, CLIPL_F32, SHAPE(4, 6), want, 0, "index_select dense 0");
    clipl_tensor_release(out);
    CHECK_OK(clipl_index_select(wc, ix32, &out, 1));
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < 3; j++)
            want[i * 3 + j] = vw[i * 6 + jv[j]];
    expect(out, CLIPL_F32, SHAPE(10, 3), want, 0, "index_select dense 1");
    clipl_tensor_release(out);
    clipl_tensor *bad =
        clipl_tensor_from_data(CLIPL_I64, 1, (int64_t[]){2}, (int64_t[]){1, 10}, 16);
    CHECK_ERR(clipl_embedding(bad, wc, &out), CLIPL_EINDEX,
              "index 10 out of range for dim 0 of size 10");
    clipl_tensor *fl = rnd(CLIPL_F32, SHAPE(2), 0, 1);
    CHECK_ERR(clipl_embedding(fl, wc, &out), CLIPL_EINVAL, "must be i32 or i64, got f32");

    /* gather along dim 1 with an index smaller than src in dim 0 */
    clipl_tensor *gi =
        clipl_tensor_from_data(CLIPL_I64, 2, (int64_t[]){3, 2}, (int64_t[]){5, 0, 1, 1, 2, 4}, 48);
    int64_t gv[] = {5, 0, 1, 1, 2, 4};
    CHECK_OK(clipl_gather(w, gi, &out, 1));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            want[i * 2 + j] = vw[i * 6 + gv[i * 2 + j]];
    expect(out, CLIPL_F32, SHAPE(3, 2), want, 0, "gather 1");
    clipl_tensor_release(out);
    CHECK_OK(clipl_gather(w, gi, &out, 0));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            want[i * 2 + j] = vw[gv[i * 2 + j] * 6 + j];
    expect(out, CLIPL_F32, SHAPE(3, 2), want, 0, "gather 0");
    clipl_tensor_release(out);
    CHECK_ERR(clipl_gather(wc, ix, &out, 0), CLIPL_ESHAPE, "must have as many dims");
    clipl_tensor *gbad =
        clipl_tensor_from_data(CLIPL_I64, 2, (int64_t[]){1, 1}, (int64_t[]){-1}, 8);
    CHECK_ERR(clipl_gather(wc, gbad, &out, 1), CLIPL_EINDEX, "index -1 out of range");

    /* masked_fill with a broadcast mask on a transposed view; where */
    clipl_tensor *mask =
        clipl_tensor_from_data(CLIPL_U8, 1, (int64_t[]){6}, (uint8_t[]){1, 0, 0, 1, 0, 1}, 6);
    CHECK_OK(clipl_masked_fill(w, mask, &out, -INFINITY));
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < 6; j++)
            want[i * 6 + j] = (j == 0 || j == 3 || j == 5) ? -INFINITY : vw[i * 6 + j];
    expect(out, CLIPL_F32, SHAPE(10, 6), want, 0, "masked_fill");
    clipl_tensor *zero = rnd(CLIPL_F32, 0, NULL, 0, 0);
    clipl_tensor_fill_(zero, 7);
    clipl_tensor *wh = NULL;
    clipl_tensor_to(w, &wh, CLIPL_BF16);
    clipl_tensor *wr = NULL;
    CHECK_OK(clipl_where(mask, zero, wh, &wr));
    double *vwh = vals(wh);
    for (int i = 0; i < 60; i++)
        want[i] = (i % 6 == 0 || i % 6 == 3 || i % 6 == 5) ? 7 : vwh[i];
    expect(wr, CLIPL_F32, SHAPE(10, 6), want, 0, "where");
    clipl_tensor_release(wr);
    clipl_tensor *m2 = rnd(CLIPL_U8, SHAPE(7), 0, 1);
    CHECK_ERR(clipl_masked_fill_(out, m2, 0), CLIPL_ESHAPE, "mask 7 does not broadcast to 10x6");
    clipl_tensor_release(out);

    free(vw);
    free(vwh);
    clipl_tensor *all[] = {w0, w, ix, ix32, ids, wc, bad, fl, gi, gbad, mask, zero, wh, m2};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clipl_tensor_release(all[i]);
}

/* Ops that write refuse read-only (file-mapped) tensors. */
static void test_readonly(void)
{
    char path[] = "/tmp/clipl_ops_plain_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    float buf[4] = {1, 2, 3, 4};
    CHECK(write(fd, buf, sizeof buf) == (ssize_t)sizeof buf);
    close(fd);
    clipl_storage *s = clipl_storage_map_file(path, 0, sizeof buf);
    CHECK(s != NULL);
    if (s) {
        clipl_tensor *t = clipl_tensor_new_view(s, CLIPL_F32, 1, (int64_t[]){4}, (int64_t[]){1}, 0);
        clipl_tensor *m = clipl_tensor_from_data(CLIPL_U8, 1, (int64_t[]){4},
                                                 (uint8_t[]){1, 0, 0, 0}, 4),
                     *out = NULL;
        CHECK_ERR(clipl_add_scalar_(t, 1), CLIPL_EINVAL, "read-only");
        CHECK_ERR(clipl_masked_fill_(t, m, 0), CLIPL_EINVAL, "read-only");
        CHECK_OK(clipl_masked_fill(t, m, &out, 0)); /* a copy is fine */
        CHECK_OK(clipl_add_scalar_(out, 1));
        expect(out, CLIPL_F32, 1, (int64_t[]){4}, (double[]){1, 3, 4, 5}, 0, "read-only copy");
        clipl_tensor_release(out);
        clipl_tensor_release(m);
        clipl_tensor_release(t);
        clipl_storage_release(s);
    }
    unlink(path);
}

/* ---- randomised cases: shapes, broadcasting, views and dtypes drawn at random ---- */

static uint64_t lcg = 88172645463325252ull;
static int pick(int n) /* uniform in [0, n) */
{
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (int)((lcg >> 33) % (uint64_t)n);
}

static const int fuzz_dtypes[] = {CLIPL_F32, CLIPL_BF16, CLIPL_F16, CLIPL_I32, CLIPL_I64, CLIPL_U8};

static bool is_int_dt(int dt) { return dt == CLIPL_I32 || dt == CLIPL_I64 || dt == CLIPL_U8; }

static double tol_for(int dt)
{
    return dt == CLIPL_BF16 ? BF16_TOL : dt == CLIPL_F16 ? F16_TOL : is_int_dt(dt) ? 0 : F32_TOL;
}

/* A tensor of the given shape that is, at random, contiguous, a permuted view, a narrowed view or
 * (when allowed) an expanded view. Values in [lo, hi), floored for integer dtypes. */
static clipl_tensor *random_view(int dt, int ndim, const int64_t *shape, double lo, double hi,
                                 bool allow_expand)
{
    int mode = ndim == 0 ? 0 : pick(allow_expand ? 4 : 3);
    int64_t s[CLIPL_MAX_DIMS];
    memcpy(s, shape, sizeof(int64_t) * (size_t)ndim);
    clipl_tensor *base = NULL, *v = NULL;
    if (mode == 1) { /* stored with dims reversed, permuted back */
        int perm[CLIPL_MAX_DIMS];
        for (int i = 0; i < ndim; i++) {
            s[i] = shape[ndim - 1 - i];
            perm[i] = ndim - 1 - i;
        }
        base = rnd(dt, ndim, s, lo, hi);
        clipl_tensor_permute(base, &v, ndim, perm);
    } else if (mode == 2) { /* one dim stored 2 larger, narrowed to the middle */
        int d = pick(ndim);
        s[d] += 2;
        base = rnd(dt, ndim, s, lo, hi);
        clipl_tensor_narrow(base, &v, d, 1, shape[d]);
    } else if (mode == 3) { /* one dim stored with size 1 and expanded */
        int d = pick(ndim);
        s[d] = 1;
        base = rnd(dt, ndim, s, lo, hi);
        clipl_tensor_expand(base, &v, ndim, shape);
    } else {
        return rnd(dt, ndim, shape, lo, hi);
    }
    clipl_tensor_release(base);
    return v;
}

/* Wraps an exact integer result to the output dtype as a C cast does. */
static double wrap_int(double v, int dt)
{
    if (dt == CLIPL_U8)
        return (double)(uint8_t)(int64_t)v;
    if (dt == CLIPL_I32)
        return (double)(int32_t)(uint32_t)(uint64_t)(int64_t)v;
    return v;
}

static void test_fuzz_binary(void)
{
    char label[160];
    for (int iter = 0; iter < 400; iter++) {
        int n = pick(5), op = pick(CLIPL_BIN_GE + 1);
        int64_t out_shape[CLIPL_MAX_DIMS], as[CLIPL_MAX_DIMS], bs[CLIPL_MAX_DIMS];
        for (int i = 0; i < n; i++)
            out_shape[i] = pick(12) == 0 ? 0 : 1 + pick(4);
        int na = n - (n ? pick(n + 1) : 0), nb = n - (n ? pick(n + 1) : 0);
        if (pick(2))
            na = n; /* at least one operand often has every dim */
        for (int i = 0; i < na; i++)
            as[i] = pick(3) == 0 ? 1 : out_shape[n - na + i];
        for (int i = 0; i < nb; i++)
            bs[i] = pick(3) == 0 ? 1 : out_shape[n - nb + i];
        int da = fuzz_dtypes[pick(6)], db = fuzz_dtypes[pick(6)];
        double alo = -2, ahi = 2, blo = -2, bhi = 2;
        if (op == CLIPL_BIN_POW) {
            alo = is_int_dt(da) ? 0 : 0.5;
            blo = is_int_dt(db) ? 0 : -2;
            bhi = is_int_dt(db) ? 4 : 2;
        }
        if (da == CLIPL_U8)
            alo = 0, ahi = 5;
        if (db == CLIPL_U8)
            blo = 0, bhi = 5;
        clipl_tensor *a = random_view(da, na, as, alo, ahi, true),
                     *b = random_view(db, nb, bs, blo, bhi, true), *out = NULL;
        int common = clipl_result_dtype(da, db);
        int want_dt = op >= CLIPL_BIN_EQ                           ? CLIPL_U8
                      : (op == CLIPL_BIN_DIV && is_int_dt(common)) ? CLIPL_F32
                                                                   : common;
        int ndim;
        int64_t shape[CLIPL_MAX_DIMS];
        double *want = ref_binary(op, a, b, &ndim, shape, 1.0);
        int64_t total = 1;
        for (int i = 0; i < ndim; i++)
            total *= shape[i];
        if (is_int_dt(want_dt) && op < CLIPL_BIN_EQ)
            for (int64_t i = 0; i < total; i++)
                want[i] = wrap_int(want[i], want_dt);
        snprintf(label, sizeof label, "fuzz %d: op %d, %s %dd with %s %dd", iter, op,
                 clipl_dtype_name(da), na, clipl_dtype_name(db), nb);
        CHECK_OK(clipl_binary(a, b, &out, op));
        /* a result rounded to a narrow dtype is compared with that dtype's tolerance */
        expect(out, want_dt, ndim, shape, want, tol_for(want_dt), label);
        clipl_tensor_release(out);
        free(want);

        /* the same in place into a writable float tensor of the full shape */
        if (op <= CLIPL_BIN_DIV && !is_int_dt(da) && na == n) {
            bool bcast = false;
            for (int i = 0; i < n; i++)
                bcast |= as[i] != out_shape[i];
            if (!bcast) {
                clipl_tensor *t = random_view(da, n, out_shape, -2, 2, false);
                want = ref_binary(op, t, b, &ndim, shape, 1.0);
                CHECK_OK(clipl_binary_(t, b, op));
                snprintf(label, sizeof label, "fuzz %d in place: op %d, %s with %s", iter, op,
                         clipl_dtype_name(da), clipl_dtype_name(db));
                /* in place rounds to a's dtype, whatever the common dtype */
                expect(t, da, ndim, shape, want, tol_for(da), label);
                free(want);
                clipl_tensor_release(t);
            }
        }
        clipl_tensor_release(a);
        clipl_tensor_release(b);
    }
}

static void test_fuzz_reduce(void)
{
    const int dts[] = {CLIPL_F32, CLIPL_BF16, CLIPL_I32};
    for (int iter = 0; iter < 300; iter++) {
        int n = 1 + pick(4), dt = dts[pick(3)];
        int64_t shape[CLIPL_MAX_DIMS];
        for (int i = 0; i < n; i++)
            shape[i] = 1 + pick(6);
        clipl_tensor *t = random_view(dt, n, shape, -50, 50, true);
        int kind = pick(5), d = pick(n + 1) - 1, kd = pick(2);
        double ps[] = {1, 2, 3, INFINITY};
        /* integer sums are exact; float results carry one rounding to the output dtype */
        double tol = kind == K_SUM && is_int_dt(dt) ? 0 : is_int_dt(dt) ? F32_TOL : tol_for(dt);
        if ((kind == K_MAX || kind == K_MIN) && is_int_dt(dt))
            tol = 0;
        check_reduce(kind, t, d, kd, ps[pick(4)], tol, "fuzz reduce");
        int td = pick(n);
        check_topk(t, pick((int)t->shape[td] + 1), td, pick(2), "fuzz topk");
        clipl_tensor_release(t);
    }
}

int main(void)
{
    gen = clipl_generator_new(1234);
    test_binary();
    test_scalar_inplace();
    test_reduce();
    test_topk();
    test_join();
    test_index();
    test_readonly();
    test_fuzz_binary();
    test_fuzz_reduce();
    clipl_generator_free(gen);
    return check_done("ops_plain");
}
