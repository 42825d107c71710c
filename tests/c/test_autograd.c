/*
 * test_autograd.c - the tape and every op's backward against central finite differences, plus the
 * optimizer kernels against the update formulas evaluated step by step in double.
 *
 * Gradient checks. For an op f with inputs x_k, the test draws fixed random weights w shaped like
 * the output, runs backward(f(x), w) (which gives J^T w = dL/dx for L = sum(w * f(x))) and compares
 * every element with the central difference (L(x + eps e_j) - L(x - eps e_j)) / (2 eps), where L is
 * evaluated in double from f's f32 output. Inputs are given non-contiguous (transposed views) and
 * broadcast where the op allows, with odd sizes.
 * Tolerance: max |analytic - numeric| / max(1, max |numeric|) <= GRAD_TOL = 5e-3 with eps = 1e-2.
 * Why: the ops compute in f32 (unit roundoff 6e-8), so L carries a rounding error of about
 * 6e-8 * sum |w f| <= ~1e-5 for these sizes, which the difference divides by 2 eps = 2e-2: <= 1e-3;
 * the truncation error of a central difference is eps^2 / 6 * |f'''| ~ 2e-5 for the smooth ops
 * here. A wrong gradient (a missing term, a transposed or misplaced element) is off by O(1).
 * Ops with kinks (relu, abs, clamp, max, pooling, topk) get inputs at least 0.05 away from every
 * kink and tie, so x +- eps never crosses one.
 *
 * Optimizers: AdamW and SGD are compared with the same updates computed here in double; the kernels
 * keep the state in f32, so the tolerance is 1e-6 relative (a few f32 roundings per step).
 */
#include "check.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define GRAD_TOL 5e-3
#define EPS 1e-2

static clipl_generator *gen;
static double worst_err; /* largest error / scale over the gradient checks */
static const char *worst_case = "";

#define SHAPE(...)                                                                                 \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((int64_t[]){__VA_ARGS__})

enum {
    IN_T = 1,        /* a transposed view of the last two dims (non-contiguous) */
    IN_POS = 2,      /* values in [0.5, 2] */
    IN_AWAY = 4,     /* |x| >= 0.1 */
    IN_DISTINCT = 8, /* distinct values 0.05 apart (no ties within a kernel) */
    IN_NOGRAD = 16   /* does not require grad */
};

/* A random f32 input of the given shape (the logical shape; IN_T stores it transposed). */
static clipl_tensor *make_input(int ndim, const int64_t *shape, int flags)
{
    int64_t s[CLIPL_MAX_DIMS];
    memcpy(s, shape, sizeof(int64_t) * (size_t)ndim);
    bool tr = (flags & IN_T) && ndim >= 2;
    if (tr) {
        s[ndim - 1] = shape[ndim - 2];
        s[ndim - 2] = shape[ndim - 1];
    }
    clipl_tensor *base = clipl_tensor_empty(CLIPL_F32, ndim, s), *t = NULL;
    int64_t n = clipl_tensor_numel(base);
    float *p = base->ptr;
    clipl_tensor_uniform_(base, gen, -1, 1);
    for (int64_t i = 0; i < n; i++) {
        if (flags & IN_POS)
            p[i] = 0.5f + 0.75f * (p[i] + 1);
        if ((flags & IN_AWAY) && fabsf(p[i]) < 0.1f)
            p[i] = p[i] < 0 ? p[i] - 0.1f : p[i] + 0.1f;
    }
    if (flags & IN_DISTINCT) { /* a shuffled ramp */
        for (int64_t i = 0; i < n; i++)
            p[i] = (float)(0.05 * (double)i - 0.025 * (double)n);
        for (int64_t i = n - 1; i > 0; i--) {
            double u;
            clipl_tensor *r = clipl_tensor_empty(CLIPL_F32, 0, NULL);
            clipl_tensor_uniform_(r, gen, 0, 1);
            clipl_tensor_get_flat(r, 0, &u);
            clipl_tensor_release(r);
            int64_t j = (int64_t)(u * (double)(i + 1));
            float tmp = p[i];
            p[i] = p[j];
            p[j] = tmp;
        }
    }
    if (!tr)
        return base;
    clipl_tensor_transpose(base, &t, -1, -2);
    clipl_tensor_release(base);
    return t;
}

/* ---- the ops under test ---- */

enum {
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_POW,
    OP_MAXIMUM,
    OP_MINIMUM,
    OP_ADD_ALPHA,
    OP_ADDS,
    OP_RSUBS,
    OP_MULS,
    OP_DIVS,
    OP_RDIVS,
    OP_POWS,
    OP_RPOWS,
    OP_NEG,
    OP_MAXS,
    OP_SUM_DIM,
    OP_SUM_ALL,
    OP_MEAN_KEEP,
    OP_MAX_DIM,
    OP_MIN_ALL,
    OP_NORM2,
    OP_NORM1,
    OP_NORMINF,
    OP_TOPK,
    OP_NARROW,
    OP_SELECT,
    OP_TRANSPOSE,
    OP_PERMUTE,
    OP_VIEW,
    OP_RESHAPE,
    OP_EXPAND,
    OP_UNSQUEEZE,
    OP_SQUEEZE,
    OP_CONTIGUOUS,
    OP_CLONE,
    OP_CAT,
    OP_STACK,
    OP_INDEX_SELECT,
    OP_GATHER,
    OP_EMBEDDING,
    OP_MASKED_FILL,
    OP_WHERE,
    OP_MATMUL,
    OP_MATMUL_BIAS_ACT,
    OP_LINEAR,
    OP_LINEAR_GELU,
    OP_CONV,
    OP_CONV_GROUPS,
    OP_BATCH_NORM,
    OP_LAYER_NORM,
    OP_LAYER_NORM2,
    OP_SOFTMAX,
    OP_LOG_SOFTMAX,
    OP_ELTWISE,
    OP_MAXPOOL,
    OP_AVGPOOL,
    OP_AVGPOOL_EXCL,
    OP_ATTENTION
};

typedef struct gcase {
    const char *name;
    int op;
    int n_in;
    int ndim[4];
    int64_t shape[4][4];
    int flags[4];
    int act; /* OP_ELTWISE */
    double alpha, beta;
} gcase;

static clipl_tensor *idx_tensor(int ndim, const int64_t *shape, const int64_t *v)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return clipl_tensor_from_data(CLIPL_I64, ndim, shape, v, sizeof(int64_t) * (size_t)n);
}

static int run_op(const gcase *c, clipl_tensor *const *x, clipl_tensor **out)
{
    clipl_tensor *a = x[0], *b = x[1], *t = NULL, *u = NULL;
    int rc = CLIPL_OK;
    switch (c->op) {
    case OP_ADD: return clipl_add(a, b, out, 1.0);
    case OP_ADD_ALPHA: return clipl_add(a, b, out, -2.5);
    case OP_SUB: return clipl_sub(a, b, out);
    case OP_MUL: return clipl_mul(a, b, out);
    case OP_DIV: return clipl_div(a, b, out);
    case OP_POW: return clipl_pow(a, b, out);
    case OP_MAXIMUM: return clipl_binary(a, b, out, CLIPL_BIN_MAX);
    case OP_MINIMUM: return clipl_binary(a, b, out, CLIPL_BIN_MIN);
    case OP_ADDS: return clipl_add_scalar(a, 0.75, out);
    case OP_RSUBS: return clipl_rsub_scalar(a, 0.75, out);
    case OP_MULS: return clipl_mul_scalar(a, -1.5, out);
    case OP_DIVS: return clipl_div_scalar(a, 3.0, out);
    case OP_RDIVS: return clipl_rdiv_scalar(a, 2.0, out);
    case OP_POWS: return clipl_pow_scalar(a, 2.5, out);
    case OP_RPOWS: return clipl_rpow_scalar(a, 1.7, out);
    case OP_NEG: return clipl_neg(a, out);
    case OP_MAXS: return clipl_binary_scalar(a, 0.05, out, CLIPL_BIN_MAX, 0);
    case OP_SUM_DIM: return clipl_sum(a, out, 1, 0);
    case OP_SUM_ALL: return clipl_sum(a, out, CLIPL_ALL_DIMS, 0);
    case OP_MEAN_KEEP: return clipl_mean(a, out, -1, 1);
    case OP_MAX_DIM: return clipl_max(a, out, NULL, 0, 0);
    case OP_MIN_ALL: return clipl_min(a, out, NULL, CLIPL_ALL_DIMS, 0);
    case OP_NORM2: return clipl_norm(a, out, 2, -1, 1);
    case OP_NORM1: return clipl_norm(a, out, 1, 0, 0);
    case OP_NORMINF: return clipl_norm(a, out, INFINITY, -1, 0);
    case OP_TOPK: return clipl_topk(a, out, NULL, 2, 1, 1);
    case OP_NARROW: return clipl_tensor_narrow(a, out, 1, 1, 3);
    case OP_SELECT: return clipl_tensor_select(a, out, -1, 2);
    case OP_TRANSPOSE: return clipl_tensor_transpose(a, out, 0, 2);
    case OP_PERMUTE: return clipl_tensor_permute(a, out, 3, (int[]){2, 0, 1});
    case OP_VIEW: return clipl_tensor_view(a, out, SHAPE(5, 3));
    case OP_RESHAPE: return clipl_tensor_reshape(a, out, SHAPE(-1));
    case OP_EXPAND: return clipl_tensor_expand(a, out, SHAPE(2, 3, 4));
    case OP_UNSQUEEZE: return clipl_tensor_unsqueeze(a, out, 1);
    case OP_SQUEEZE: return clipl_tensor_squeeze(a, out, CLIPL_ALL_DIMS);
    case OP_CONTIGUOUS: return clipl_tensor_contiguous(a, out);
    case OP_CLONE: return clipl_tensor_clone(a, out);
    case OP_CAT: return clipl_cat((const clipl_tensor *[]){a, b, x[2]}, 3, out, 1);
    case OP_STACK: return clipl_stack((const clipl_tensor *[]){a, b}, 2, out, 1);
    case OP_INDEX_SELECT:
        t = idx_tensor(SHAPE(4), (int64_t[]){2, 0, 2, 3});
        rc = clipl_index_select(a, t, out, 1);
        break;
    case OP_GATHER:
        t = idx_tensor(SHAPE(2, 3), (int64_t[]){0, 2, 1, 3, 3, 0});
        rc = clipl_gather(a, t, out, 1);
        break;
    case OP_EMBEDDING:
        t = idx_tensor(SHAPE(2, 3), (int64_t[]){4, 0, 4, 2, 1, 4});
        rc = clipl_embedding(t, a, out);
        break;
    case OP_MASKED_FILL:
        t = clipl_tensor_from_data(CLIPL_U8, SHAPE(4), (uint8_t[]){1, 0, 0, 1}, 4);
        rc = clipl_masked_fill(a, t, out, 7.0);
        break;
    case OP_WHERE:
        t = clipl_tensor_from_data(CLIPL_U8, SHAPE(3, 1), (uint8_t[]){1, 0, 1}, 3);
        rc = clipl_where(t, a, b, out);
        break;
    case OP_MATMUL: return clipl_matmul(a, b, NULL, out, NULL);
    case OP_MATMUL_BIAS_ACT: {
        clipl_matmul_opts o = {.act = CLIPL_ACT_TANH, .scale = 0.5f};
        return clipl_matmul(a, b, x[2], out, &o);
    }
    case OP_LINEAR: return clipl_linear(a, b, x[2], out, CLIPL_ACT_NONE);
    case OP_LINEAR_GELU: return clipl_linear(a, b, x[2], out, CLIPL_ACT_QUICK_GELU);
    case OP_CONV: {
        clipl_conv2d_opts o = {{2, 1}, {1, 2}, {1, 2}, 1, CLIPL_ACT_NONE, 0, 0};
        return clipl_conv2d(a, b, x[2], out, &o);
    }
    case OP_CONV_GROUPS: {
        clipl_conv2d_opts o = {{1, 1}, {1, 1}, {1, 1}, 2, CLIPL_ACT_GELU, 0, 0};
        return clipl_conv2d(a, b, NULL, out, &o);
    }
    case OP_BATCH_NORM: {
        t = idx_tensor(SHAPE(3), (int64_t[]){0, 0, 0});
        clipl_tensor *mean = NULL, *var = NULL;
        clipl_tensor_to(t, &mean, CLIPL_F32);
        clipl_tensor_fill_(mean, 0.1);
        clipl_tensor_to(t, &var, CLIPL_F32);
        clipl_tensor_fill_(var, 0.7);
        rc = clipl_batch_norm(a, mean, var, b, x[2], out, 1e-5);
        clipl_tensor_release(mean);
        clipl_tensor_release(var);
        break;
    }
    case OP_LAYER_NORM: return clipl_layer_norm(a, 1, b, x[2], out, 1e-5, NULL, NULL);
    case OP_LAYER_NORM2: return clipl_layer_norm(a, 2, NULL, NULL, out, 1e-5, NULL, NULL);
    case OP_SOFTMAX: return clipl_softmax(a, out, 0, 0);
    case OP_LOG_SOFTMAX: return clipl_softmax(a, out, -1, 1);
    case OP_ELTWISE: return clipl_eltwise(a, out, c->act, c->alpha, c->beta);
    case OP_MAXPOOL: return clipl_pool2d(a, out, CLIPL_POOL_MAX, 3, 2, 2, 1, 1, 1, 1);
    case OP_AVGPOOL: return clipl_pool2d(a, out, CLIPL_POOL_AVG, 3, 3, 2, 2, 1, 1, 0);
    case OP_AVGPOOL_EXCL:
        return clipl_pool2d(a, out, CLIPL_POOL_AVG_EXCLUDE_PAD, 3, 2, 2, 2, 1, 1, 1);
    case OP_ATTENTION:
        /* causal mask over [T, S] = [3, 3] */
        u = clipl_tensor_zeros(CLIPL_F32, SHAPE(3, 3));
        clipl_tensor_set_flat(u, 1, -INFINITY);
        clipl_tensor_set_flat(u, 2, -INFINITY);
        clipl_tensor_set_flat(u, 5, -INFINITY);
        rc = clipl_attention(a, b, x[2], u, out, 0, NULL);
        break;
    default: rc = CLIPL_EINVAL;
    }
    clipl_tensor_release(t);
    clipl_tensor_release(u);
    return rc;
}

/* L = sum(w * f(x)) in double (grad mode off). */
static double loss_of(const gcase *c, clipl_tensor *const *x, const double *w, bool *ok)
{
    clipl_tensor *y = NULL;
    if (run_op(c, x, &y)) {
        *ok = false;
        return 0;
    }
    int64_t n = clipl_tensor_numel(y);
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1)), s = 0;
    clipl_tensor_to_doubles(y, v, n);
    for (int64_t i = 0; i < n; i++)
        s += w[i] * v[i];
    free(v);
    clipl_tensor_release(y);
    return s;
}

static void gradcheck(const gcase *c)
{
    clipl_tensor *x[4] = {NULL}, *y = NULL, *wt = NULL;
    char label[128];
    for (int k = 0; k < c->n_in; k++) {
        x[k] = make_input(c->ndim[k], c->shape[k], c->flags[k]);
        if (!(c->flags[k] & IN_NOGRAD))
            CHECK_OK(clipl_tensor_set_requires_grad(x[k], 1));
    }
    int rc = run_op(c, x, &y);
    check_count++;
    if (rc || !y || !clipl_tensor_requires_grad(y)) {
        check_failures++;
        fprintf(stderr, "gradcheck %s: forward failed or not recorded (%d: %s)\n", c->name, rc,
                clipl_errmsg());
        goto done;
    }
    int64_t ny = clipl_tensor_numel(y);
    wt = clipl_tensor_empty(CLIPL_F32, y->ndim, y->shape);
    clipl_tensor_uniform_(wt, gen, -1, 1);
    double *w = malloc(sizeof(double) * (size_t)(ny ? ny : 1));
    clipl_tensor_to_doubles(wt, w, ny);
    CHECK_OK(clipl_backward(y, wt, 0));
    clipl_set_grad_enabled(0);
    for (int k = 0; k < c->n_in; k++) {
        if (c->flags[k] & IN_NOGRAD)
            continue;
        clipl_tensor *g = clipl_tensor_grad(x[k]);
        snprintf(label, sizeof label, "gradcheck %s input %d", c->name, k);
        check_count++;
        if (!g) {
            check_failures++;
            fprintf(stderr, "%s: no gradient\n", label);
            continue;
        }
        int64_t n = clipl_tensor_numel(x[k]);
        double err = 0, scale = 1;
        bool ok = true;
        for (int64_t j = 0; j < n && ok; j++) {
            double v0, ga;
            clipl_tensor_get_flat(x[k], j, &v0);
            clipl_tensor_set_flat(x[k], j, v0 + EPS);
            double lp = loss_of(c, x, w, &ok);
            clipl_tensor_set_flat(x[k], j, v0 - EPS);
            double lm = loss_of(c, x, w, &ok);
            clipl_tensor_set_flat(x[k], j, v0);
            double num = (lp - lm) / (2 * EPS);
            clipl_tensor_get_flat(g, j, &ga);
            if (fabs(num) > scale)
                scale = fabs(num);
            double d = fabs(ga - num);
            if (!(d <= err))
                err = isnan(d) ? INFINITY : d;
        }
        if (err / scale > worst_err) {
            worst_err = err / scale;
            worst_case = c->name;
        }
        if (!ok || !(err / scale <= GRAD_TOL)) {
            check_failures++;
            fprintf(stderr, "%s: max |analytic - numeric| / scale = %.3g (tol %.1g)%s\n", label,
                    err / scale, GRAD_TOL, ok ? "" : " (forward failed)");
        }
        clipl_tensor_release(g);
    }
    clipl_set_grad_enabled(1);
    free(w);
done:
    clipl_tensor_release(y);
    clipl_tensor_release(wt);
    for (int k = 0; k < c->n_in; k++)
        clipl_tensor_release(x[k]);
}

#define D1(a)                                                                                      \
    1, { a }
#define IN1(n0, s0, f0)                                                                            \
    1, {n0}, {s0}, { f0 }
#define S(...)                                                                                     \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }

static const gcase cases[] = {
    /* binary ops with broadcasting ([3,1,5] with a transposed [4,5]) */
    {"add", OP_ADD, 2, {3, 2}, {{3, 1, 5}, {4, 5}}, {0, IN_T}, 0, 0, 0},
    {"add alpha", OP_ADD_ALPHA, 2, {2, 3}, {{4, 5}, {3, 1, 5}}, {IN_T, 0}, 0, 0, 0},
    {"sub", OP_SUB, 2, {3, 1}, {{3, 4, 5}, {5}}, {0, 0}, 0, 0, 0},
    {"mul", OP_MUL, 2, {3, 2}, {{3, 1, 5}, {4, 5}}, {0, IN_T}, 0, 0, 0},
    {"div", OP_DIV, 2, {2, 2}, {{4, 5}, {4, 1}}, {IN_T, IN_POS}, 0, 0, 0},
    {"pow", OP_POW, 2, {2, 2}, {{3, 5}, {3, 5}}, {IN_POS, IN_T}, 0, 0, 0},
    {"maximum",
     OP_MAXIMUM,
     2,
     {2, 2},
     {{3, 5}, {3, 5}},
     {IN_DISTINCT, IN_DISTINCT | IN_T},
     0,
     0,
     0},
    {"minimum", OP_MINIMUM, 2, {2, 1}, {{3, 5}, {5}}, {IN_DISTINCT, IN_DISTINCT}, 0, 0, 0},
    {"add_scalar", OP_ADDS, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"rsub_scalar", OP_RSUBS, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"mul_scalar", OP_MULS, 1, {2}, {{3, 5}}, {0}, 0, 0, 0},
    {"div_scalar", OP_DIVS, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"rdiv_scalar", OP_RDIVS, 1, {2}, {{3, 5}}, {IN_POS}, 0, 0, 0},
    {"pow_scalar", OP_POWS, 1, {2}, {{3, 5}}, {IN_POS | IN_T}, 0, 0, 0},
    {"rpow_scalar", OP_RPOWS, 1, {2}, {{3, 5}}, {0}, 0, 0, 0},
    {"neg", OP_NEG, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"max with scalar", OP_MAXS, 1, {2}, {{3, 5}}, {IN_DISTINCT}, 0, 0, 0},
    /* reductions */
    {"sum dim", OP_SUM_DIM, 1, {3}, {{2, 3, 5}}, {IN_T}, 0, 0, 0},
    {"sum all", OP_SUM_ALL, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"mean keepdim", OP_MEAN_KEEP, 1, {3}, {{2, 3, 5}}, {IN_T}, 0, 0, 0},
    {"max dim", OP_MAX_DIM, 1, {2}, {{3, 5}}, {IN_DISTINCT | IN_T}, 0, 0, 0},
    {"min all", OP_MIN_ALL, 1, {2}, {{3, 5}}, {IN_DISTINCT}, 0, 0, 0},
    {"norm 2", OP_NORM2, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"norm 1", OP_NORM1, 1, {2}, {{3, 5}}, {IN_AWAY}, 0, 0, 0},
    {"norm inf", OP_NORMINF, 1, {2}, {{3, 5}}, {IN_DISTINCT | IN_T}, 0, 0, 0},
    {"topk", OP_TOPK, 1, {2}, {{3, 5}}, {IN_DISTINCT | IN_T}, 0, 0, 0},
    /* views and copies */
    {"narrow", OP_NARROW, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"select", OP_SELECT, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"transpose", OP_TRANSPOSE, 1, {3}, {{2, 3, 5}}, {0}, 0, 0, 0},
    {"permute", OP_PERMUTE, 1, {3}, {{2, 3, 5}}, {IN_T}, 0, 0, 0},
    {"view", OP_VIEW, 1, {2}, {{3, 5}}, {0}, 0, 0, 0},
    {"reshape", OP_RESHAPE, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"expand", OP_EXPAND, 1, {2}, {{3, 1}}, {0}, 0, 0, 0},
    {"unsqueeze", OP_UNSQUEEZE, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"squeeze", OP_SQUEEZE, 1, {3}, {{3, 1, 5}}, {0}, 0, 0, 0},
    {"contiguous", OP_CONTIGUOUS, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"clone", OP_CLONE, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    /* joins and indexing */
    {"cat", OP_CAT, 3, {2, 2, 2}, {{3, 2}, {3, 4}, {3, 1}}, {IN_T, 0, 0}, 0, 0, 0},
    {"stack", OP_STACK, 2, {2, 2}, {{3, 5}, {3, 5}}, {IN_T, 0}, 0, 0, 0},
    {"index_select", OP_INDEX_SELECT, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"gather", OP_GATHER, 1, {2}, {{3, 5}}, {IN_T}, 0, 0, 0},
    {"embedding", OP_EMBEDDING, 1, {2}, {{5, 3}}, {IN_T}, 0, 0, 0},
    {"masked_fill", OP_MASKED_FILL, 1, {2}, {{3, 4}}, {IN_T}, 0, 0, 0},
    {"where", OP_WHERE, 2, {2, 1}, {{3, 5}, {5}}, {IN_T, 0}, 0, 0, 0},
    /* oneDNN ops */
    {"matmul batched broadcast", OP_MATMUL, 2, {3, 2}, {{2, 3, 4}, {4, 5}}, {IN_T, IN_T}, 0, 0, 0},
    {"matmul bias scale tanh",
     OP_MATMUL_BIAS_ACT,
     3,
     {2, 3, 1},
     {{3, 4}, {2, 4, 5}, {5}},
     {0, IN_T, 0},
     0,
     0,
     0},
    {"linear", OP_LINEAR, 3, {3, 2, 1}, {{2, 3, 4}, {5, 4}, {5}}, {IN_T, 0, 0}, 0, 0, 0},
    {"linear quick_gelu",
     OP_LINEAR_GELU,
     3,
     {2, 2, 1},
     {{3, 4}, {5, 4}, {5}},
     {0, IN_T, 0},
     0,
     0,
     0},
    {"conv2d stride pad dilation bias",
     OP_CONV,
     3,
     {4, 4, 1},
     {{2, 3, 7, 6}, {4, 3, 3, 2}, {4}},
     {0, 0, 0},
     0,
     0,
     0},
    {"conv2d groups gelu",
     OP_CONV_GROUPS,
     2,
     {4, 4},
     {{1, 4, 5, 5}, {6, 2, 3, 3}},
     {0, 0},
     0,
     0,
     0},
    {"batch_norm", OP_BATCH_NORM, 3, {4, 1, 1}, {{2, 3, 3, 2}, {3}, {3}}, {0, 0, 0}, 0, 0, 0},
    {"layer_norm", OP_LAYER_NORM, 3, {3, 1, 1}, {{2, 3, 7}, {7}, {7}}, {0, 0, 0}, 0, 0, 0},
    {"layer_norm 2 dims", OP_LAYER_NORM2, 1, {3}, {{2, 3, 5}}, {IN_T}, 0, 0, 0},
    {"softmax dim 0", OP_SOFTMAX, 1, {2}, {{4, 5}}, {IN_T}, 0, 0, 0},
    {"log_softmax", OP_LOG_SOFTMAX, 1, {3}, {{2, 3, 5}}, {0}, 0, 0, 0},
    {"relu", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_AWAY | IN_T}, CLIPL_ACT_RELU, 0, 0},
    {"gelu", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_T}, CLIPL_ACT_GELU, 0, 0},
    {"gelu_tanh", OP_ELTWISE, 1, {2}, {{3, 5}}, {0}, CLIPL_ACT_GELU_TANH, 0, 0},
    {"quick_gelu", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_T}, CLIPL_ACT_QUICK_GELU, 0, 0},
    {"sigmoid", OP_ELTWISE, 1, {2}, {{3, 5}}, {0}, CLIPL_ACT_SIGMOID, 0, 0},
    {"tanh", OP_ELTWISE, 1, {2}, {{3, 5}}, {0}, CLIPL_ACT_TANH, 0, 0},
    {"exp", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_T}, CLIPL_ACT_EXP, 0, 0},
    {"log", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_POS}, CLIPL_ACT_LOG, 0, 0},
    {"sqrt", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_POS}, CLIPL_ACT_SQRT, 0, 0},
    {"abs", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_AWAY}, CLIPL_ACT_ABS, 0, 0},
    {"clamp", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_DISTINCT}, CLIPL_ACT_CLAMP, -0.2, 0.3},
    {"linear act", OP_ELTWISE, 1, {2}, {{3, 5}}, {0}, CLIPL_ACT_LINEAR, -0.7, 0.2},
    {"pow act", OP_ELTWISE, 1, {2}, {{3, 5}}, {IN_POS}, CLIPL_ACT_POW, 1.3, 1.5},
    {"swish", OP_ELTWISE, 1, {2}, {{3, 5}}, {0}, CLIPL_ACT_SWISH, 0.8, 0},
    {"square", OP_ELTWISE, 1, {2}, {{3, 5}}, {0}, CLIPL_ACT_SQUARE, 0, 0},
    {"softplus", OP_ELTWISE, 1, {2}, {{3, 5}}, {0}, CLIPL_ACT_SOFTPLUS, 0, 0},
    {"max_pool2d ceil", OP_MAXPOOL, 1, {4}, {{1, 2, 6, 5}}, {IN_DISTINCT}, 0, 0, 0},
    {"avg_pool2d", OP_AVGPOOL, 1, {4}, {{2, 2, 7, 5}}, {0}, 0, 0, 0},
    {"avg_pool2d exclude pad ceil", OP_AVGPOOL_EXCL, 1, {4}, {{1, 2, 6, 5}}, {0}, 0, 0, 0},
    {"attention causal",
     OP_ATTENTION,
     3,
     {4, 4, 4},
     {{1, 2, 3, 4}, {1, 2, 3, 4}, {1, 2, 3, 4}},
     {0, IN_T, 0},
     0,
     0,
     0},
};

/* ---- the tape itself ---- */

static clipl_tensor *vec(int n, const float *v)
{
    return clipl_tensor_from_data(CLIPL_F32, 1, (int64_t[]){n}, v, sizeof(float) * (size_t)n);
}

static double at(const clipl_tensor *t, int64_t i)
{
    double v = NAN;
    clipl_tensor_get_flat(t, i, &v);
    return v;
}

static void test_tape(void)
{
    clipl_tensor *x = vec(4, (float[]){1, 2, 3, 4}), *y = NULL, *z = NULL, *s = NULL, *g = NULL;
    CHECK(!clipl_tensor_requires_grad(x) && clipl_tensor_is_leaf(x));
    CHECK_OK(clipl_tensor_set_requires_grad(x, 1));
    /* s = sum(x * x) twice through a shared intermediate: ds/dx = 4x (two paths into x) */
    CHECK_OK(clipl_mul(x, x, &y));
    CHECK(clipl_tensor_requires_grad(y) && !clipl_tensor_is_leaf(y));
    CHECK(strcmp(clipl_tensor_grad_fn(y), "mul") == 0);
    CHECK_OK(clipl_add(y, y, &z, 1.0));
    CHECK_OK(clipl_sum(z, &s, CLIPL_ALL_DIMS, 0));
    CHECK_OK(clipl_backward(s, NULL, 1));
    g = clipl_tensor_grad(x);
    CHECK(g && at(g, 0) == 4 && at(g, 3) == 16);
    clipl_tensor_release(g);
    /* retain_graph: a second backward accumulates */
    CHECK_OK(clipl_backward(s, NULL, 0));
    g = clipl_tensor_grad(x);
    CHECK(g && at(g, 2) == 24);
    clipl_tensor_release(g);
    /* the graph is now freed */
    CHECK_ERR(clipl_backward(s, NULL, 0), CLIPL_EINVAL, "already freed");
    /* a non-scalar needs a gradient */
    CHECK_ERR(clipl_backward(z, NULL, 0), CLIPL_ESHAPE, "a gradient is needed");
    /* in-place on a tensor that requires grad is refused, allowed with grad mode off */
    CHECK_ERR(clipl_add_scalar_(x, 1.0), CLIPL_EINVAL, "requires grad");
    CHECK_ERR(clipl_tensor_fill_(y, 0), CLIPL_EINVAL, "in-place");
    clipl_tensor *c = vec(4, (float[]){0, 0, 0, 0});
    CHECK_ERR(clipl_add_(c, x, 1.0), CLIPL_EINVAL, "operand");
    CHECK_ERR(clipl_eltwise_(x, CLIPL_ACT_RELU, 0, 0), CLIPL_EINVAL, "requires grad");
    CHECK(clipl_set_grad_enabled(0) == 1);
    CHECK_OK(clipl_add_scalar_(x, 1.0));
    clipl_tensor *nz = NULL;
    CHECK_OK(clipl_mul(x, x, &nz));
    CHECK(!clipl_tensor_requires_grad(nz)); /* no_grad: nothing recorded */
    clipl_tensor_release(nz);
    CHECK(clipl_set_grad_enabled(1) == 0);
    /* zeroing the grad, detach */
    CHECK_OK(clipl_tensor_set_grad(x, NULL));
    CHECK(clipl_tensor_grad(x) == NULL);
    clipl_tensor *d = NULL;
    CHECK_OK(clipl_tensor_detach(y, &d));
    CHECK(!clipl_tensor_requires_grad(d) && d->ptr == y->ptr);
    CHECK_ERR(clipl_tensor_set_requires_grad(y, 0), CLIPL_EINVAL, "only leaves");
    clipl_tensor *iv = clipl_tensor_zeros(CLIPL_I64, 1, (int64_t[]){2});
    CHECK_ERR(clipl_tensor_set_requires_grad(iv, 1), CLIPL_EINVAL, "only float tensors");
    CHECK_ERR(clipl_backward(c, NULL, 0), CLIPL_EINVAL, "does not require grad");
    /* views of a leaf: the gradient flows to the leaf (narrow of a transpose) */
    clipl_tensor *m = clipl_tensor_zeros(CLIPL_F32, 2, (int64_t[]){2, 3}), *mt = NULL, *mn = NULL,
                 *ms = NULL;
    CHECK_OK(clipl_tensor_set_requires_grad(m, 1));
    CHECK_OK(clipl_tensor_transpose(m, &mt, 0, 1));
    CHECK_OK(clipl_tensor_narrow(mt, &mn, 0, 1, 2));
    CHECK_OK(clipl_sum(mn, &ms, CLIPL_ALL_DIMS, 0));
    CHECK_OK(clipl_backward(ms, NULL, 0));
    g = clipl_tensor_grad(m);
    /* m^T [3, 2] rows 1..2 -> m columns 1..2 */
    CHECK(g && at(g, 0) == 0 && at(g, 1) == 1 && at(g, 2) == 1 && at(g, 3) == 0 && at(g, 5) == 1);
    clipl_tensor_release(g);
    /* retain_grad keeps an intermediate's gradient; dropping it frees everything */
    {
        clipl_tensor *a = vec(3, (float[]){1, 2, 3}), *h = NULL, *k = NULL, *ks = NULL;
        CHECK_OK(clipl_tensor_set_requires_grad(a, 1));
        CHECK_OK(clipl_mul(a, a, &h));
        CHECK_OK(clipl_tensor_retain_grad(h));
        CHECK_OK(clipl_mul_scalar(h, 3.0, &k));
        CHECK_OK(clipl_sum(k, &ks, CLIPL_ALL_DIMS, 0));
        CHECK_OK(clipl_backward(ks, NULL, 0));
        clipl_tensor *gh = clipl_tensor_grad(h), *ga = clipl_tensor_grad(a);
        CHECK(gh && at(gh, 0) == 3 && at(gh, 2) == 3);
        CHECK(ga && at(ga, 1) == 12); /* 3 * 2a */
        clipl_tensor *rr[] = {gh, ga, a, h, k, ks};
        for (size_t i = 0; i < sizeof rr / sizeof rr[0]; i++)
            clipl_tensor_release(rr[i]);
    }
    /* prepared weights refuse an input that requires grad */
    clipl_tensor *w = clipl_tensor_zeros(CLIPL_F32, 2, (int64_t[]){3, 4}), *o = NULL;
    clipl_linear_weights *lw = clipl_linear_prepare(w, NULL, -1, 0);
    CHECK_ERR(clipl_linear_apply(lw, x, &o, NULL), CLIPL_EUNSUPPORTED, "no backward");
    clipl_linear_weights_free(lw);
    clipl_tensor *r[] = {x, y, z, s, c, d, iv, m, mt, mn, ms, w};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        clipl_tensor_release(r[i]);
}

/* A small MLP trained by hand with AdamW goes down in loss (the pieces work together). */
static void test_chain_memory(void)
{
    int64_t before = clipl_autograd_live_nodes();
    clipl_tensor *x = clipl_tensor_empty(CLIPL_F32, 2, (int64_t[]){8, 6});
    clipl_tensor_uniform_(x, gen, -1, 1);
    clipl_tensor *w = clipl_tensor_empty(CLIPL_F32, 2, (int64_t[]){6, 6});
    clipl_tensor_uniform_(w, gen, -0.5, 0.5);
    CHECK_OK(clipl_tensor_set_requires_grad(w, 1));
    clipl_tensor *h = clipl_tensor_retain(x);
    for (int i = 0; i < 200; i++) { /* a long chain: 400 nodes */
        clipl_tensor *a = NULL, *b = NULL;
        clipl_matmul(h, w, NULL, &a, NULL);
        clipl_eltwise(a, &b, CLIPL_ACT_TANH, 0, 0);
        clipl_tensor_release(a);
        clipl_tensor_release(h);
        h = b;
    }
    CHECK(clipl_autograd_live_nodes() - before == 400);
    clipl_tensor *s = NULL;
    CHECK_OK(clipl_sum(h, &s, CLIPL_ALL_DIMS, 0));
    clipl_tensor_release(h);
    CHECK_OK(clipl_backward(s, NULL, 0));
    clipl_tensor *g = clipl_tensor_grad(w);
    CHECK(g != NULL);
    clipl_tensor_release(g);
    clipl_tensor_release(s);
    CHECK(clipl_autograd_live_nodes() == before); /* the whole graph was freed with s */
    clipl_tensor_release(w);
    clipl_tensor_release(x);
}

/* bf16 inputs: the same graph as in f32, gradients in bf16. Tolerance 5e-2 of the largest
 * gradient: bf16 keeps 8 significant bits (2^-9 relative per rounding), and the inputs, every op's
 * output and every backward result are rounded (about ten roundings on a path, plus cancellation in
 * layer norm's backward); a wrong formula is off by O(1). */
static clipl_tensor *bf16_graph(clipl_tensor *x, clipl_tensor *w, clipl_tensor *r)
{
    clipl_tensor *ln = NULL, *mm = NULL, *act = NULL, *p = NULL, *s = NULL;
    clipl_layer_norm(x, 1, NULL, NULL, &ln, 1e-5, NULL, NULL);
    clipl_matmul(ln, w, NULL, &mm, NULL);
    clipl_eltwise(mm, &act, CLIPL_ACT_QUICK_GELU, 0, 0);
    clipl_mul(act, r, &p);
    clipl_sum(p, &s, CLIPL_ALL_DIMS, 0);
    clipl_tensor_release(ln);
    clipl_tensor_release(mm);
    clipl_tensor_release(act);
    clipl_tensor_release(p);
    return s;
}

static void test_bf16(void)
{
    clipl_tensor *x = clipl_tensor_empty(CLIPL_F32, 2, (int64_t[]){4, 8});
    clipl_tensor *w = clipl_tensor_empty(CLIPL_F32, 2, (int64_t[]){8, 6});
    clipl_tensor *r = clipl_tensor_empty(CLIPL_F32, 2, (int64_t[]){4, 6});
    clipl_tensor_uniform_(x, gen, -1, 1);
    clipl_tensor_uniform_(w, gen, -1, 1);
    clipl_tensor_uniform_(r, gen, -1, 1);
    clipl_tensor *xb = NULL, *wb = NULL, *rb = NULL, *x32 = NULL, *w32 = NULL;
    /* the f32 reference starts from the bf16-rounded inputs */
    clipl_tensor_to(x, &xb, CLIPL_BF16);
    clipl_tensor_to(w, &wb, CLIPL_BF16);
    clipl_tensor_to(r, &rb, CLIPL_BF16);
    clipl_tensor_to(xb, &x32, CLIPL_F32);
    clipl_tensor_to(wb, &w32, CLIPL_F32);
    CHECK_OK(clipl_tensor_set_requires_grad(xb, 1));
    CHECK_OK(clipl_tensor_set_requires_grad(wb, 1));
    CHECK_OK(clipl_tensor_set_requires_grad(x32, 1));
    CHECK_OK(clipl_tensor_set_requires_grad(w32, 1));
    clipl_tensor *s16 = bf16_graph(xb, wb, rb), *s32 = bf16_graph(x32, w32, r);
    check_count++;
    if (!s16 || !s32) {
        check_failures++;
        fprintf(stderr, "bf16 graph failed: %s\n", clipl_errmsg());
    } else {
        CHECK_OK(clipl_backward(s16, NULL, 0));
        CHECK_OK(clipl_backward(s32, NULL, 0));
        clipl_tensor *gx16 = clipl_tensor_grad(xb), *gw16 = clipl_tensor_grad(wb);
        clipl_tensor *gx32 = clipl_tensor_grad(x32), *gw32 = clipl_tensor_grad(w32);
        CHECK(gx16 && gx16->dt == CLIPL_BF16 && gw16 && gw16->dt == CLIPL_BF16);
        if (gx16 && gw16 && gx32 && gw32) {
            CHECK_CLOSE(gx16, gx32, 5e-2, "bf16 layer_norm/matmul/quick_gelu grad of x");
            CHECK_CLOSE(gw16, gw32, 5e-2, "bf16 layer_norm/matmul/quick_gelu grad of w");
        }
        clipl_tensor *g[] = {gx16, gw16, gx32, gw32};
        for (size_t i = 0; i < 4; i++)
            clipl_tensor_release(g[i]);
    }
    clipl_tensor *all[] = {x, w, r, xb, wb, rb, x32, w32, s16, s32};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        clipl_tensor_release(all[i]);
}

/* ---- optimizers ---- */

static void test_adamw(void)
{
    enum { N = 37, STEPS = 5 };
    double p[N], m[N] = {0}, v[N] = {0};
    clipl_tensor *pt = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
    clipl_tensor_uniform_(pt, gen, -1, 1);
    clipl_tensor_to_doubles(pt, p, N);
    clipl_tensor *mt = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N});
    clipl_tensor *vt = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N});
    double lr = 1e-2, wd = 0.1, b1 = 0.9, b2 = 0.98, eps = 1e-6;
    for (int s = 1; s <= STEPS; s++) {
        clipl_tensor *gt = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
        clipl_tensor_uniform_(gt, gen, -1, 1);
        double g[N];
        clipl_tensor_to_doubles(gt, g, N);
        int64_t step = s;
        CHECK_OK(clipl_adamw_step(1, &pt, &gt, &mt, &vt, &lr, &wd, &step, b1, b2, eps));
        for (int j = 0; j < N; j++) { /* torch.optim.AdamW, step by step */
            p[j] *= 1 - lr * wd;
            m[j] = b1 * m[j] + (1 - b1) * g[j];
            v[j] = b2 * v[j] + (1 - b2) * g[j] * g[j];
            double mh = m[j] / (1 - pow(b1, s)), vh = v[j] / (1 - pow(b2, s));
            p[j] -= lr * mh / (sqrt(vh) + eps);
        }
        clipl_tensor_release(gt);
    }
    clipl_tensor *ref = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
    for (int j = 0; j < N; j++)
        clipl_tensor_set_flat(ref, j, p[j]);
    CHECK_CLOSE(pt, ref, 1e-6, "adamw vs double reference (5 steps)");
    /* errors name the argument */
    clipl_tensor *bad = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N + 1});
    int64_t step = 1;
    CHECK_ERR(clipl_adamw_step(1, &pt, &bad, &mt, &vt, &lr, &wd, &step, b1, b2, eps), CLIPL_ESHAPE,
              "gradient");
    CHECK_ERR(clipl_adamw_step(1, &pt, &pt, &mt, &vt, &lr, &wd, &step, 1.5, b2, eps), CLIPL_EINVAL,
              "betas");
    clipl_tensor *r[] = {pt, mt, vt, ref, bad};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        clipl_tensor_release(r[i]);
}

static void test_sgd_norm(void)
{
    enum { N = 11 };
    double p[N], buf[N];
    clipl_tensor *pt = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
    clipl_tensor_uniform_(pt, gen, -1, 1);
    clipl_tensor_to_doubles(pt, p, N);
    clipl_tensor *bt = clipl_tensor_zeros(CLIPL_F32, 1, (int64_t[]){N});
    double lr = 0.1, wd = 0.01, mom = 0.9, damp = 0.1;
    for (int s = 0; s < 3; s++) {
        clipl_tensor *gt = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
        clipl_tensor_uniform_(gt, gen, -1, 1);
        double g[N];
        clipl_tensor_to_doubles(gt, g, N);
        CHECK_OK(clipl_sgd_step(1, &pt, &gt, &bt, &lr, &wd, mom, damp, 1, s == 0));
        for (int j = 0; j < N; j++) { /* torch.optim.SGD, nesterov */
            double d = g[j] + wd * p[j];
            buf[j] = s == 0 ? d : mom * buf[j] + (1 - damp) * d;
            p[j] -= lr * (d + mom * buf[j]);
        }
        clipl_tensor_release(gt);
    }
    clipl_tensor *ref = clipl_tensor_empty(CLIPL_F32, 1, (int64_t[]){N});
    for (int j = 0; j < N; j++)
        clipl_tensor_set_flat(ref, j, p[j]);
    CHECK_CLOSE(pt, ref, 1e-6, "sgd nesterov vs double reference (3 steps)");
    /* global norm of two tensors, one strided */
    clipl_tensor *a = vec(2, (float[]){3, 0}), *b2 = vec(4, (float[]){0, 4, 0, 12}), *bs = NULL;
    clipl_tensor_narrow(b2, &bs, 0, 1, 3);
    double nrm = 0;
    clipl_tensor *ts[2] = {a, bs};
    CHECK_OK(clipl_global_norm(2, ts, &nrm));
    CHECK(fabs(nrm - 13.0) < 1e-12);
    clipl_tensor *r[] = {pt, bt, ref, a, b2, bs};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        clipl_tensor_release(r[i]);
}

int main(void)
{
    /* one thread: the checks run thousands of tiny ops, where OpenMP barriers on a shared machine
     * cost far more than the arithmetic (10 s instead of 0.3 s) */
    clipl_set_num_threads(1);
    gen = clipl_generator_new(1234);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        gradcheck(&cases[i]);
    printf("gradient checks: %zu ops, largest |analytic - numeric| / scale %.2g (%s), tol %.0e\n",
           sizeof cases / sizeof cases[0], worst_err, worst_case, GRAD_TOL);
    test_tape();
    test_chain_memory();
    test_bf16();
    test_adamw();
    test_sgd_norm();
    CHECK(clipl_autograd_live_nodes() == 0);
    clipl_generator_free(gen);
    return check_done("autograd");
}
