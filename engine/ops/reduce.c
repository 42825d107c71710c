/*
 * reduce.c - reductions along a dim or over all elements (sum, mean, max, min, argmax, argmin,
 * norm) and top-k.
 *
 * Each output element reduces one "row" of L elements at a byte stride. Float rows accumulate in
 * double (so an f32 sum of 10^7 terms keeps ~1e-16 relative rounding per step instead of ~6e-8),
 * integer sums in int64. Rows are split over OpenMP threads; a few very long rows are split into
 * chunks whose partial results are combined in order.
 */
#include "../autograd/autograd.h"
#include "plain.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* the tape's reduction kinds (autograd.h), so that a kind is passed on as it is */
enum {
    R_SUM = CLIPL__R_SUM,
    R_MEAN = CLIPL__R_MEAN,
    R_MAX = CLIPL__R_MAX,
    R_MIN = CLIPL__R_MIN,
    R_NORM = CLIPL__R_NORM
};
enum { CHUNK = 65536 };

static const char *const kind_names[] = {"sum", "mean", "max", "min", "norm"};

typedef struct {
    double v;    /* float accumulator (sum, norm partial, extreme value) */
    int64_t iv;  /* integer accumulator / extreme value for integer dtypes */
    int64_t idx; /* index of the extreme value */
} partial;

typedef struct {
    int kind, dt;
    double p;
    bool is_int;
} reducer;

static bool better(const reducer *r, double a, double b)
{
    /* NaN beats everything (first NaN wins) */
    if (a != a)
        return b == b;
    if (b != b)
        return false;
    return r->kind == R_MAX ? a > b : a < b;
}

/* Folds element j (x as double; xi as int64 for integer dtypes) into acc. */
static inline void step(const reducer *r, partial *acc, double x, int64_t xi, int64_t j)
{
    switch (r->kind) {
    case R_SUM:
    case R_MEAN:
        if (r->is_int)
            acc->iv = (int64_t)((uint64_t)acc->iv + (uint64_t)xi);
        else
            acc->v += x;
        break;
    case R_MAX:
    case R_MIN:
        if (r->is_int) {
            if (acc->idx < 0 || (r->kind == R_MAX ? xi > acc->iv : xi < acc->iv)) {
                acc->iv = xi;
                acc->idx = j;
            }
        } else if (acc->idx < 0 || better(r, x, acc->v)) {
            acc->v = x;
            acc->idx = j;
        }
        break;
    case R_NORM: {
        double ax = fabs(x), p = r->p;
        if (p == INFINITY || p == -INFINITY) {
            /* NaN, once seen, stays */
            if (acc->idx < 0 || ax != ax || (p > 0 ? ax > acc->v : ax < acc->v))
                if (acc->v == acc->v || acc->idx < 0)
                    acc->v = ax;
        } else if (p == 0) {
            acc->v += ax != 0;
        } else if (p == 1) {
            acc->v += ax;
        } else if (p == 2) {
            acc->v += ax * ax;
        } else {
            acc->v += pow(ax, p);
        }
        if (acc->idx < 0)
            acc->idx = j; /* marks "has elements" */
        break;
    }
    }
}

/* Steps over n elements of any dtype at byte stride, calling step with index j0 + i. */
#define FOR_ELEMS(dt, q, stride, n, j0, ACC)                                                       \
    switch (dt) {                                                                                  \
    case CLIPL_F32:                                                                                \
        for (int64_t i = 0; i < (n); i++)                                                          \
            step(r, ACC, *(const float *)((q) + i * (stride)), 0, (j0) + i);                       \
        break;                                                                                     \
    case CLIPL_BF16:                                                                               \
        for (int64_t i = 0; i < (n); i++)                                                          \
            step(r, ACC, plain_bf16_to_f32(*(const uint16_t *)((q) + i * (stride))), 0, (j0) + i); \
        break;                                                                                     \
    case CLIPL_F16:                                                                                \
        for (int64_t i = 0; i < (n); i++)                                                          \
            step(r, ACC, clipl__f16_to_f32(*(const uint16_t *)((q) + i * (stride))), 0, (j0) + i); \
        break;                                                                                     \
    default:                                                                                       \
        for (int64_t i = 0; i < (n); i++) {                                                        \
            int64_t xi_ = plain_ldi((q) + i * (stride), dt);                                       \
            step(r, ACC, (double)xi_, xi_, (j0) + i);                                              \
        }                                                                                          \
        break;                                                                                     \
    }

static void reduce_range(const reducer *r, const char *p, int64_t stride, int64_t start, int64_t n,
                         partial *out)
{
    partial acc = {0, 0, -1};
    const char *q = p + start * stride;
    bool sq = r->kind == R_NORM && r->p == 2;
    if (r->dt == CLIPL_F32 && (r->kind == R_SUM || r->kind == R_MEAN || sq)) {
        /* four double accumulators: the add chain, not memory, limits a single one */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int64_t i = 0;
#define LD(k) ((double)*(const float *)(q + (i + (k)) * stride))
        if (sq) {
            for (; i + 4 <= n; i += 4) {
                s0 += LD(0) * LD(0);
                s1 += LD(1) * LD(1);
                s2 += LD(2) * LD(2);
                s3 += LD(3) * LD(3);
            }
            for (; i < n; i++)
                s0 += LD(0) * LD(0);
        } else {
            for (; i + 4 <= n; i += 4) {
                s0 += LD(0);
                s1 += LD(1);
                s2 += LD(2);
                s3 += LD(3);
            }
            for (; i < n; i++)
                s0 += LD(0);
        }
#undef LD
        acc.v = (s0 + s1) + (s2 + s3);
        acc.idx = n > 0 ? start : -1;
    } else if (r->dt == CLIPL_F32 && (r->kind == R_MAX || r->kind == R_MIN) && n > 0) {
        const float *f = (const float *)q;
        int64_t es = stride / 4, bi = 0;
        float best = f[0];
        for (int64_t i = 1; i < n && best == best; i++) {
            float x = f[i * es];
            if ((r->kind == R_MAX ? x > best : x < best) || x != x) {
                best = x;
                bi = i;
            }
        }
        acc.v = best;
        acc.idx = start + bi;
    } else {
        FOR_ELEMS(r->dt, q, stride, n, start, &acc)
    }
    *out = acc;
}

/* Folds partial b (a later chunk) into a. */
static void combine(const reducer *r, partial *a, const partial *b)
{
    switch (r->kind) {
    case R_SUM:
    case R_MEAN:
        a->v += b->v;
        a->iv = (int64_t)((uint64_t)a->iv + (uint64_t)b->iv);
        break;
    case R_MAX:
    case R_MIN:
        if (b->idx < 0)
            break;
        if (a->idx < 0 || (r->is_int ? (r->kind == R_MAX ? b->iv > a->iv : b->iv < a->iv)
                                     : better(r, b->v, a->v)))
            *a = *b;
        break;
    case R_NORM:
        if (r->p == INFINITY || r->p == -INFINITY) {
            if (b->idx < 0)
                break;
            if (a->idx < 0 || b->v != b->v ||
                (a->v == a->v && (r->p > 0 ? b->v > a->v : b->v < a->v)))
                *a = *b;
        } else {
            a->v += b->v;
        }
        break;
    }
}

/* Writes the final value of one output element. */
static void finish(const reducer *r, const partial *acc, int64_t L, char *vp, int vdt, char *ip)
{
    switch (r->kind) {
    case R_SUM:
        if (r->is_int)
            plain_sti(vp, vdt, acc->iv);
        else
            clipl__store(vp, vdt, acc->v);
        break;
    case R_MEAN: clipl__store(vp, vdt, (r->is_int ? (double)acc->iv : acc->v) / (double)L); break;
    case R_MAX:
    case R_MIN:
        if (vp) {
            if (r->is_int)
                plain_sti(vp, vdt, acc->iv);
            else
                clipl__store(vp, vdt, acc->v);
        }
        if (ip)
            *(int64_t *)ip = acc->idx;
        break;
    case R_NORM: {
        double p = r->p, v = acc->v;
        if (p == 1 || p == 0 || p == INFINITY || p == -INFINITY)
            clipl__store(vp, vdt, (p == -INFINITY && L == 0) ? INFINITY : v);
        else if (p == 2)
            clipl__store(vp, vdt, sqrt(v));
        else
            clipl__store(vp, vdt, pow(v, 1.0 / p));
        break;
    }
    }
}

/* Geometry of a reduction: M output elements, each a row of L elements at byte stride `stride`
 * starting at a base computed from the output index over the kept dims. */
typedef struct {
    int nkeep;
    int64_t keep_shape[CLIPL_MAX_DIMS], keep_bstride[CLIPL_MAX_DIMS];
    int64_t M, L, stride;
    const char *base;
    int out_ndim;
    int64_t out_shape[CLIPL_MAX_DIMS];
} geom;

static const char *row_base(const geom *g, int64_t o)
{
    const char *p = g->base;
    for (int i = g->nkeep - 1; i >= 0 && o > 0; i--) {
        p += (o % g->keep_shape[i]) * g->keep_bstride[i];
        o /= g->keep_shape[i];
    }
    return p;
}

/* Sets up g for src reduced along dim (or all dims). *tmp may receive a contiguous copy that the
 * caller releases. */
static int setup(const char *op, const clipl_tensor *src, int dim, int keepdim, geom *g,
                 clipl_tensor **tmp)
{
    memset(g, 0, sizeof *g);
    int es = clipl_dtype_size(src->dt);
    *tmp = NULL;
    bool all = dim == CLIPL_ALL_DIMS || (src->ndim == 0 && (dim == 0 || dim == -1));
    if (all) {
        const clipl_tensor *c = src;
        if (!clipl_tensor_is_contiguous(src)) {
            int rc = clipl_tensor_contiguous(src, tmp);
            if (rc)
                return rc;
            c = *tmp;
        }
        g->M = 1;
        g->L = clipl_tensor_numel(src);
        g->stride = es;
        g->base = c->ptr;
        g->out_ndim = keepdim ? src->ndim : 0;
        for (int i = 0; i < g->out_ndim; i++)
            g->out_shape[i] = 1;
        return CLIPL_OK;
    }
    int d = clipl__wrap_dim(dim, src->ndim);
    if (d < 0 || src->ndim == 0)
        return clipl__err(CLIPL_EINDEX, "%s: dim %d out of range for a %d-d tensor", op, dim,
                          src->ndim);
    g->M = 1;
    for (int i = 0; i < src->ndim; i++) {
        if (i == d) {
            if (keepdim)
                g->out_shape[g->out_ndim++] = 1;
            continue;
        }
        g->keep_shape[g->nkeep] = src->shape[i];
        g->keep_bstride[g->nkeep++] = src->strides[i] * es;
        g->out_shape[g->out_ndim++] = src->shape[i];
        g->M *= src->shape[i];
    }
    g->L = src->shape[d];
    g->stride = src->strides[d] * es;
    g->base = src->ptr;
    return CLIPL_OK;
}

/* Runs reducer r over g into vals (dtype vdt, may be NULL) and idx (i64, may be NULL). */
static int run(const reducer *r, const geom *g, clipl_tensor *vals, clipl_tensor *idx)
{
    int vdt = vals ? vals->dt : 0, ves = vals ? clipl_dtype_size(vdt) : 0;
    char *vbase = vals ? vals->ptr : NULL, *ibase = idx ? idx->ptr : NULL;
    int64_t M = g->M, L = g->L;
    if (M == 0)
        return CLIPL_OK;
    int es = clipl_dtype_size(r->dt);
    if (g->nkeep >= 1 && g->keep_bstride[g->nkeep - 1] == es && g->stride != es && L > 1) {
        /* the reduced dim is not the innermost but the last kept dim is dense: walk rows of
         * consecutive outputs (cache-friendly) instead of one strided column per output */
        enum { CB = 256 };
        int64_t W = g->keep_shape[g->nkeep - 1], groups = M / W, nb = (W + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (M * L >= PLAIN_PAR_MIN && groups * nb > 1)
        for (int64_t t = 0; t < groups * nb; t++) {
            int64_t grp = t / nb, x0 = (t % nb) * CB, w = W - x0 < CB ? W - x0 : CB;
            partial acc[CB];
            for (int64_t x = 0; x < w; x++)
                acc[x] = (partial){0, 0, -1};
            const char *base = row_base(g, grp * W) + x0 * es;
            for (int64_t j = 0; j < L; j++) {
                const char *rp = base + j * g->stride;
                switch (r->dt) {
                case CLIPL_F32:
                    if (r->kind == R_MAX || r->kind == R_MIN) {
                        const float *f = (const float *)rp;
                        bool mx = r->kind == R_MAX;
                        for (int64_t x = 0; x < w; x++) {
                            double v = f[x], b = acc[x].v;
                            if (j == 0 || (b == b && ((mx ? v > b : v < b) || v != v))) {
                                acc[x].v = v;
                                acc[x].idx = j;
                            }
                        }
                        break;
                    }
                    for (int64_t x = 0; x < w; x++)
                        step(r, &acc[x], *(const float *)(rp + x * es), 0, j);
                    break;
                case CLIPL_BF16:
                    for (int64_t x = 0; x < w; x++)
                        step(r, &acc[x], plain_bf16_to_f32(*(const uint16_t *)(rp + x * es)), 0, j);
                    break;
                default:
                    for (int64_t x = 0; x < w; x++) {
                        int64_t xi = plain_is_int(r->dt) ? plain_ldi(rp + x * es, r->dt) : 0;
                        double xv =
                            plain_is_int(r->dt) ? (double)xi : plain_ldf(rp + x * es, r->dt);
                        step(r, &acc[x], xv, xi, j);
                    }
                    break;
                }
            }
            for (int64_t x = 0; x < w; x++) {
                int64_t o = grp * W + x0 + x;
                finish(r, &acc[x], L, vbase ? vbase + o * ves : NULL, vdt,
                       ibase ? ibase + o * 8 : NULL);
            }
        }
        return CLIPL_OK;
    }
    int64_t chunks = (L + CHUNK - 1) / CHUNK;
    if (chunks <= 1 || M >= 64) {
#pragma omp parallel for schedule(static) if (M * L >= PLAIN_PAR_MIN && M > 1)
        for (int64_t o = 0; o < M; o++) {
            partial acc;
            reduce_range(r, row_base(g, o), g->stride, 0, L, &acc);
            finish(r, &acc, L, vbase ? vbase + o * ves : NULL, vdt, ibase ? ibase + o * 8 : NULL);
        }
        return CLIPL_OK;
    }
    partial *parts = malloc(sizeof(partial) * (size_t)(M * chunks));
    if (!parts)
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory", kind_names[r->kind]);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < M * chunks; t++) {
        int64_t o = t / chunks, c = t % chunks, start = c * CHUNK;
        reduce_range(r, row_base(g, o), g->stride, start, L - start < CHUNK ? L - start : CHUNK,
                     &parts[t]);
    }
    for (int64_t o = 0; o < M; o++) {
        partial acc = parts[o * chunks];
        for (int64_t c = 1; c < chunks; c++)
            combine(r, &acc, &parts[o * chunks + c]);
        finish(r, &acc, L, vbase ? vbase + o * ves : NULL, vdt, ibase ? ibase + o * 8 : NULL);
    }
    free(parts);
    return CLIPL_OK;
}

static int reduce(int kind, const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices,
                  int dim, int keepdim, double p)
{
    const char *op = kind_names[kind];
    char b1[128];
    if (!src)
        return clipl__err(CLIPL_EINVAL, "%s: NULL tensor", op);
    if (kind == R_NORM && isnan(p))
        return clipl__err(CLIPL_EINVAL, "norm: p is NaN");
    clipl_tensor *tmp = NULL, *vals = NULL, *idx = NULL;
    geom g;
    int rc = setup(op, src, dim, keepdim, &g, &tmp);
    if (rc)
        return rc;
    if ((kind == R_MAX || kind == R_MIN) && g.L == 0 && g.M > 0) {
        rc = clipl__err(CLIPL_ESHAPE, "%s: cannot reduce an empty dim (tensor %s)", op,
                        clipl__tshape(b1, sizeof b1, src));
        goto fail;
    }
    reducer r = {.kind = kind, .dt = src->dt, .p = p, .is_int = plain_is_int(src->dt)};
    int vdt = src->dt;
    if (kind == R_SUM && r.is_int)
        vdt = CLIPL_I64;
    if ((kind == R_MEAN || kind == R_NORM) && r.is_int)
        vdt = CLIPL_F32;
    if (values && !(vals = plain_new(vdt, g.out_ndim, g.out_shape, &rc)))
        goto fail;
    if (indices && !(idx = plain_new(CLIPL_I64, g.out_ndim, g.out_shape, &rc)))
        goto fail;
    if ((rc = run(&r, &g, vals, idx)))
        goto fail;
    clipl_tensor_release(tmp);
    if (values)
        *values = vals;
    if (indices)
        *indices = idx;
    return CLIPL_OK;
fail:
    clipl_tensor_release(tmp);
    clipl_tensor_release(vals);
    clipl_tensor_release(idx);
    return rc;
}

/* The public reductions: recorded for backward when src requires grad (the tape's kinds are
 * ours), else run here. max and min need a values slot. */
static int reduce_op(int kind, const clipl_tensor *src, clipl_tensor **values,
                     clipl_tensor **indices, int dim, int keepdim, double p)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_reduce(kind, src, values, indices, dim, keepdim, p);
    if ((kind == R_MAX || kind == R_MIN) && !values)
        return clipl__err(CLIPL_EINVAL, "%s: values slot is NULL", kind_names[kind]);
    return reduce(kind, src, values, indices, dim, keepdim, p);
}

int clipl_sum(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim)
{
    return reduce_op(R_SUM, src, dst, NULL, dim, keepdim, 0);
}

int clipl_mean(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim)
{
    return reduce_op(R_MEAN, src, dst, NULL, dim, keepdim, 0);
}

int clipl_max(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices, int dim,
              int keepdim)
{
    return reduce_op(R_MAX, src, values, indices, dim, keepdim, 0);
}

int clipl_min(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices, int dim,
              int keepdim)
{
    return reduce_op(R_MIN, src, values, indices, dim, keepdim, 0);
}

int clipl_argmax(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim)
{
    return reduce(R_MAX, src, NULL, dst, dim, keepdim, 0);
}

int clipl_argmin(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim)
{
    return reduce(R_MIN, src, NULL, dst, dim, keepdim, 0);
}

int clipl_norm(const clipl_tensor *src, clipl_tensor **dst, double p, int dim, int keepdim)
{
    return reduce_op(R_NORM, src, dst, NULL, dim, keepdim, p);
}

/* ---- top-k ---- */

typedef struct {
    double v;
    int64_t i;
} keyed;

/* Descending with NaN first; ties by index. */
static int cmp_desc(const void *x, const void *y)
{
    const keyed *a = x, *b = y;
    bool na = a->v != a->v, nb = b->v != b->v;
    if (na != nb)
        return na ? -1 : 1;
    if (!na && a->v != b->v)
        return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* Ascending with NaN last; ties by index. */
static int cmp_asc(const void *x, const void *y)
{
    const keyed *a = x, *b = y;
    bool na = a->v != a->v, nb = b->v != b->v;
    if (na != nb)
        return na ? 1 : -1;
    if (!na && a->v != b->v)
        return a->v < b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

typedef int (*keyed_cmp)(const void *, const void *);

/* Restores the heap below i: the root is the entry that sorts last under cmp (the first to drop).
 */
static void sift_down(keyed *h, int64_t n, int64_t i, keyed_cmp cmp)
{
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && cmp(&h[l], &h[m]) > 0)
            m = l;
        if (r < n && cmp(&h[r], &h[m]) > 0)
            m = r;
        if (m == i)
            return;
        keyed t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* Moves the k entries that sort first under cmp to buf[0..k), in order. For k much smaller than n
 * a bounded heap costs O(n log k) instead of sorting the whole row. */
static void select_first(keyed *buf, int64_t n, int64_t k, keyed_cmp cmp)
{
    if (k * 8 >= n) {
        qsort(buf, (size_t)n, sizeof *buf, cmp);
        return;
    }
    for (int64_t i = k / 2; i-- > 0;)
        sift_down(buf, k, i, cmp);
    for (int64_t i = k; i < n; i++) {
        if (cmp(&buf[i], &buf[0]) < 0) {
            buf[0] = buf[i];
            sift_down(buf, k, 0, cmp);
        }
    }
    qsort(buf, (size_t)k, sizeof *buf, cmp);
}

int clipl_topk(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices, int64_t k,
               int dim, int largest)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_topk(src, values, indices, k, dim, largest);
    char b1[128];
    if (!src || !values)
        return clipl__err(CLIPL_EINVAL, "topk: NULL argument");
    if (src->ndim == 0 && (dim == 0 || dim == -1)) {
        /* a 0-d tensor is its own single row */
        clipl_tensor *v1 = NULL;
        int rc = clipl_tensor_view(src, &v1, 1, (int64_t[]){1});
        if (rc)
            return rc;
        clipl_tensor *vals = NULL, *idx = NULL;
        rc = clipl_topk(v1, &vals, indices ? &idx : NULL, k, 0, largest);
        clipl_tensor_release(v1);
        if (rc)
            return rc;
        rc = clipl_tensor_view(vals, values, 0, NULL);
        clipl_tensor_release(vals);
        if (!rc && indices)
            rc = clipl_tensor_view(idx, indices, 0, NULL);
        clipl_tensor_release(idx);
        return rc;
    }
    int d = clipl__wrap_dim(dim, src->ndim);
    if (d < 0 || src->ndim == 0)
        return clipl__err(CLIPL_EINDEX, "topk: dim %d out of range for a %d-d tensor", dim,
                          src->ndim);
    if (k < 0 || k > src->shape[d])
        return clipl__err(CLIPL_EINDEX,
                          "topk: k = %lld out of range for dim %d of size %lld "
                          "(tensor %s)",
                          (long long)k, d, (long long)src->shape[d],
                          clipl__tshape(b1, sizeof b1, src));
    geom g;
    clipl_tensor *tmp = NULL;
    int rc = setup("topk", src, d, 1, &g, &tmp);
    if (rc)
        return rc;
    g.out_shape[d] = k;
    clipl_tensor *vals = plain_new(src->dt, src->ndim, g.out_shape, &rc), *idx = NULL;
    if (!vals)
        return rc;
    if (!(idx = plain_new(CLIPL_I64, src->ndim, g.out_shape, &rc)))
        goto fail;
    int es = clipl_dtype_size(src->dt);
    /* output row o, element j lives at o_outer * (k * inner) + j * inner + o_inner */
    int64_t inner = 1;
    for (int i = d + 1; i < src->ndim; i++)
        inner *= src->shape[i];
    int64_t L = g.L;
    int failed = 0;
    if (k > 0 && g.M > 0) {
#pragma omp parallel if (g.M * L >= PLAIN_PAR_MIN && g.M > 1)
        {
            keyed *buf = malloc(sizeof(keyed) * (size_t)(L ? L : 1));
            if (!buf) {
#pragma omp atomic write
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t o = 0; o < g.M; o++) {
                if (!buf)
                    continue;
                const char *p = row_base(&g, o);
                for (int64_t i = 0; i < L; i++) {
                    buf[i].v = clipl__load(p + i * g.stride, src->dt);
                    buf[i].i = i;
                }
                select_first(buf, L, k, largest ? cmp_desc : cmp_asc);
                int64_t base = (o / inner) * k * inner + o % inner;
                for (int64_t j = 0; j < k; j++) {
                    int64_t at = base + j * inner;
                    memcpy((char *)vals->ptr + at * es, p + buf[j].i * g.stride, (size_t)es);
                    ((int64_t *)idx->ptr)[at] = buf[j].i;
                }
            }
            free(buf);
        }
    }
    if (failed) {
        rc = clipl__err(CLIPL_ENOMEM, "topk: out of memory for rows of %lld", (long long)L);
        goto fail;
    }
    clipl_tensor_release(tmp);
    *values = vals;
    if (indices)
        *indices = idx;
    else
        clipl_tensor_release(idx);
    return CLIPL_OK;
fail:
    clipl_tensor_release(tmp);
    clipl_tensor_release(vals);
    clipl_tensor_release(idx);
    return rc;
}
