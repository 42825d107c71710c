/*
 * backward_plain.c - recording wrappers and backward functions of the views and copies
 * (tensor.c) and of the plain ops (binary, reductions, top-k, cat/stack, indexing). Backward
 * formulas are composed from the forward ops (run with grad mode off), plus strided C loops for
 * the scatters (max/min/top-k/gather/index_select/embedding).
 */
#include "autograd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)))                                                                            \
            goto out;                                                                              \
    } while (0)

static bool float_dt(int dt) { return dt == CLIPL_F32 || dt == CLIPL_BF16 || dt == CLIPL_F16; }

static clipl_tensor *zeros_edge(const clipl__node *n, int k, int dt)
{
    return clipl_tensor_zeros(dt, n->in[k].ndim, n->in[k].shape);
}

/* ---- views and copies ---- */

static int bwd_view(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int kind = (int)n->iv[0], rc = CLIPL_OK;
    const int64_t *a = n->iv + 2;
    clipl_tensor *z = NULL, *v = NULL;
    switch (kind) {
    case CLIPL__V_NARROW:
    case CLIPL__V_SELECT:
        if (!(z = zeros_edge(n, 0, g->dt)))
            return clipl_errcode();
        rc = kind == CLIPL__V_NARROW ? clipl_tensor_narrow(z, &v, (int)a[0], a[1], a[2])
                                     : clipl_tensor_select(z, &v, (int)a[0], a[1]);
        if (!rc)
            rc = clipl_tensor_copy_(v, g);
        clipl_tensor_release(v);
        if (rc)
            clipl_tensor_release(z);
        else
            gin[0] = z;
        return rc;
    case CLIPL__V_TRANSPOSE: return clipl_tensor_transpose(g, &gin[0], (int)a[0], (int)a[1]);
    case CLIPL__V_PERMUTE: {
        int inv[CLIPL_MAX_DIMS];
        for (int i = 0; i < g->ndim; i++)
            inv[clipl__wrap_dim((int)a[i], g->ndim)] = i;
        return clipl_tensor_permute(g, &gin[0], g->ndim, inv);
    }
    case CLIPL__V_EXPAND: return clipl__sum_to_edge(n, 0, g, &gin[0]);
    case CLIPL__V_VIEW:
    case CLIPL__V_RESHAPE:
    case CLIPL__V_UNSQUEEZE:
    case CLIPL__V_SQUEEZE: return clipl_tensor_reshape(g, &gin[0], n->in[0].ndim, n->in[0].shape);
    default: gin[0] = clipl_tensor_retain((clipl_tensor *)g); return CLIPL_OK;
    }
}

static const char *view_names[] = {"narrow",  "select",     "transpose", "permute",
                                   "view",    "reshape",    "expand",    "unsqueeze",
                                   "squeeze", "contiguous", "clone",     "to"};

int clipl__ag_view_op(int kind, const clipl_tensor *t, clipl_tensor **dst, int ndim,
                      const int64_t *a)
{
    int rc;
    clipl__grad_off++;
    switch (kind) {
    case CLIPL__V_NARROW: rc = clipl_tensor_narrow(t, dst, (int)a[0], a[1], a[2]); break;
    case CLIPL__V_SELECT: rc = clipl_tensor_select(t, dst, (int)a[0], a[1]); break;
    case CLIPL__V_TRANSPOSE: rc = clipl_tensor_transpose(t, dst, (int)a[0], (int)a[1]); break;
    case CLIPL__V_PERMUTE: {
        int p[CLIPL_MAX_DIMS];
        for (int i = 0; i < ndim && i < CLIPL_MAX_DIMS; i++)
            p[i] = (int)a[i];
        rc = clipl_tensor_permute(t, dst, ndim, p);
        break;
    }
    case CLIPL__V_VIEW: rc = clipl_tensor_view(t, dst, ndim, a); break;
    case CLIPL__V_RESHAPE: rc = clipl_tensor_reshape(t, dst, ndim, a); break;
    case CLIPL__V_EXPAND: rc = clipl_tensor_expand(t, dst, ndim, a); break;
    case CLIPL__V_UNSQUEEZE: rc = clipl_tensor_unsqueeze(t, dst, (int)a[0]); break;
    case CLIPL__V_SQUEEZE: rc = clipl_tensor_squeeze(t, dst, (int)a[0]); break;
    case CLIPL__V_CONTIGUOUS: rc = clipl_tensor_contiguous(t, dst); break;
    case CLIPL__V_CLONE: rc = clipl_tensor_clone(t, dst); break;
    default: rc = clipl_tensor_to(t, dst, (int)a[0]); break;
    }
    clipl__grad_off--;
    if (rc || *dst == t || !float_dt((*dst)->dt))
        return rc;
    clipl__node *n = clipl__node_new(view_names[kind], bwd_view, 1, &t);
    if (n) {
        n->iv[0] = kind;
        for (int i = 0; i < ndim && i < CLIPL_MAX_DIMS && kind != CLIPL__V_TO; i++)
            n->iv[2 + i] = a[i];
    }
    return clipl__node_finish(n, dst, CLIPL_OK);
}

/* ---- binary ---- */

static int cmp_weight(const clipl_tensor *a, const clipl_tensor *b, double s, int op,
                      clipl_tensor **w)
{
    /* 1 where a wins, 1/2 on ties (the gradient is split, as PyTorch does) */
    int rc;
    int strict = op == CLIPL_BIN_MAX ? CLIPL_BIN_GT : CLIPL_BIN_LT;
    clipl_tensor *m1 = NULL, *m2 = NULL, *f1 = NULL;
    TRY(b ? clipl_binary(a, b, &m1, strict) : clipl_binary_scalar(a, s, &m1, strict, 0));
    TRY(b ? clipl_binary(a, b, &m2, CLIPL_BIN_EQ)
          : clipl_binary_scalar(a, s, &m2, CLIPL_BIN_EQ, 0));
    TRY(clipl_tensor_to(m1, &f1, CLIPL_F32));
    rc = clipl_add(f1, m2, w, 0.5);
out:
    clipl_tensor_release(m1);
    clipl_tensor_release(m2);
    clipl_tensor_release(f1);
    return rc;
}

static int bwd_binary(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int op = (int)n->iv[0], rc = CLIPL_OK;
    double alpha = n->fv[0];
    clipl_tensor *a = n->saved[0], *b = n->saved[1], *out = n->saved[2];
    clipl_tensor *ga = NULL, *gb = NULL, *t1 = NULL, *t2 = NULL, *t3 = NULL;
    bool na = clipl__node_needs(n, 0), nb = clipl__node_needs(n, 1);
    switch (op) {
    case CLIPL_BIN_ADD:
        ga = clipl_tensor_retain((clipl_tensor *)g);
        if (nb && alpha == 1) /* gradients are never written in place: share g */
            gb = clipl_tensor_retain((clipl_tensor *)g);
        else if (nb)
            TRY(clipl_mul_scalar(g, alpha, &gb));
        break;
    case CLIPL_BIN_SUB:
        ga = clipl_tensor_retain((clipl_tensor *)g);
        if (nb)
            TRY(clipl_neg(g, &gb));
        break;
    case CLIPL_BIN_MUL:
        if (na)
            TRY(clipl_mul(g, b, &ga));
        if (nb)
            TRY(clipl_mul(g, a, &gb));
        break;
    case CLIPL_BIN_DIV:
        if (na)
            TRY(clipl_div(g, b, &ga));
        if (nb) { /* d(a/b)/db = -out / b */
            TRY(clipl_mul(g, out, &t1));
            TRY(clipl_div(t1, b, &t2));
            TRY(clipl_neg(t2, &gb));
        }
        break;
    case CLIPL_BIN_POW:
        if (na) { /* b * a^(b-1) */
            TRY(clipl_sub_scalar(b, 1.0, &t1));
            TRY(clipl_pow(a, t1, &t2));
            TRY(clipl_mul(t2, b, &t3));
            TRY(clipl_mul(g, t3, &ga));
        }
        if (nb) { /* out * log(a) */
            clipl_tensor_release(t1);
            clipl_tensor_release(t2);
            t1 = t2 = NULL;
            TRY(clipl_tensor_to(a, &t1, out->dt == CLIPL_F16 ? CLIPL_F32 : out->dt));
            TRY(clipl_eltwise(t1, &t2, CLIPL_ACT_LOG, 0, 0));
            clipl_tensor_release(t1);
            t1 = NULL;
            TRY(clipl_mul(t2, out, &t1));
            TRY(clipl_mul(g, t1, &gb));
        }
        break;
    case CLIPL_BIN_MAX:
    case CLIPL_BIN_MIN:
        TRY(cmp_weight(a, b, 0, op, &t1));
        TRY(clipl_mul(g, t1, &ga));
        if (nb)
            TRY(clipl_sub(g, ga, &gb));
        break;
    default: rc = clipl__err(CLIPL_EUNSUPPORTED, "no backward for binary op %d", op); goto out;
    }
    if (na)
        TRY(clipl__sum_to_edge(n, 0, ga, &gin[0]));
    if (nb)
        TRY(clipl__sum_to_edge(n, 1, gb, &gin[1]));
out:
    clipl_tensor_release(ga);
    clipl_tensor_release(gb);
    clipl_tensor_release(t1);
    clipl_tensor_release(t2);
    clipl_tensor_release(t3);
    return rc;
}

static const char *bin_names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum"};

int clipl__ag_binary(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst, int op,
                     double alpha)
{
    clipl__grad_off++;
    int rc = op == CLIPL_BIN_ADD ? clipl_add(a, b, dst, alpha) : clipl_binary(a, b, dst, op);
    clipl__grad_off--;
    if (rc || op > CLIPL_BIN_MIN || !float_dt((*dst)->dt))
        return rc;
    const clipl_tensor *ins[2] = {a, b};
    clipl__node *n = clipl__node_new(bin_names[op], bwd_binary, 2, ins);
    if (n) {
        n->iv[0] = op;
        n->fv[0] = alpha;
        bool need_ab = op != CLIPL_BIN_ADD && op != CLIPL_BIN_SUB;
        if (need_ab && (rc = clipl__node_save(n, 0, a)) == 0)
            rc = clipl__node_save(n, 1, b);
        if (!rc && (op == CLIPL_BIN_DIV || op == CLIPL_BIN_POW))
            rc = clipl__node_save(n, 2, *dst);
    }
    return clipl__node_finish(n, dst, rc);
}

static int bwd_binary_scalar(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int op = (int)n->iv[0], rev = (int)n->iv[1], rc = CLIPL_OK;
    double s = n->fv[0];
    clipl_tensor *a = n->saved[0], *out = n->saved[2], *t1 = NULL, *t2 = NULL;
    switch (op) {
    case CLIPL_BIN_ADD: gin[0] = clipl_tensor_retain((clipl_tensor *)g); break;
    case CLIPL_BIN_SUB:
        if (rev)
            rc = clipl_neg(g, &gin[0]);
        else
            gin[0] = clipl_tensor_retain((clipl_tensor *)g);
        break;
    case CLIPL_BIN_MUL: rc = clipl_mul_scalar(g, s, &gin[0]); break;
    case CLIPL_BIN_DIV:
        if (!rev) {
            rc = clipl_div_scalar(g, s, &gin[0]);
        } else { /* d(s/a)/da = -out / a */
            TRY(clipl_mul(g, out, &t1));
            TRY(clipl_div(t1, a, &t2));
            rc = clipl_neg(t2, &gin[0]);
        }
        break;
    case CLIPL_BIN_POW:
        if (!rev) {
            if (s == 1) {
                gin[0] = clipl_tensor_retain((clipl_tensor *)g);
                break;
            }
            TRY(clipl_pow_scalar(a, s - 1, &t1));
            TRY(clipl_mul(g, t1, &t2));
            rc = clipl_mul_scalar(t2, s, &gin[0]);
        } else { /* d(s^a)/da = out * ln s */
            TRY(clipl_mul(g, out, &t1));
            rc = clipl_mul_scalar(t1, log(s), &gin[0]);
        }
        break;
    case CLIPL_BIN_MAX:
    case CLIPL_BIN_MIN:
        TRY(cmp_weight(a, NULL, s, op, &t1));
        rc = clipl_mul(g, t1, &gin[0]);
        break;
    default: rc = clipl__err(CLIPL_EUNSUPPORTED, "no backward for binary op %d", op);
    }
out:
    clipl_tensor_release(t1);
    clipl_tensor_release(t2);
    return rc;
}

int clipl__ag_binary_scalar(const clipl_tensor *a, double s, clipl_tensor **dst, int op,
                            int reversed)
{
    clipl__grad_off++;
    int rc = clipl_binary_scalar(a, s, dst, op, reversed);
    clipl__grad_off--;
    if (rc || op > CLIPL_BIN_MIN || !float_dt((*dst)->dt))
        return rc;
    clipl__node *n = clipl__node_new(bin_names[op], bwd_binary_scalar, 1, &a);
    if (n) {
        n->iv[0] = op;
        n->iv[1] = reversed;
        n->fv[0] = s;
        if (op != CLIPL_BIN_ADD && op != CLIPL_BIN_SUB && op != CLIPL_BIN_MUL)
            rc = clipl__node_save(n, 0, a);
        if (!rc && (op == CLIPL_BIN_DIV || op == CLIPL_BIN_POW))
            rc = clipl__node_save(n, 2, *dst);
    }
    return clipl__node_finish(n, dst, rc);
}

/* ---- scatter-add: dst[.., index[p], ..] += src[p] along dim (dst contiguous) ---- */

static int scatter_add(clipl_tensor *dst, int dim, const clipl_tensor *index,
                       const clipl_tensor *src)
{
    int nd = src->ndim;
    int64_t n = clipl_tensor_numel(src), dstride[CLIPL_MAX_DIMS];
    clipl__contiguous_strides(dst->ndim, dst->shape, dstride);
    int es = clipl_dtype_size(dst->dt), ss = clipl_dtype_size(src->dt),
        is = clipl_dtype_size(index->dt);
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, so = 0, io = 0, doff = 0, c[CLIPL_MAX_DIMS];
        for (int d = nd - 1; d >= 0; d--) {
            c[d] = rem % src->shape[d];
            rem /= src->shape[d];
            so += c[d] * src->strides[d];
            io += c[d] * index->strides[d];
        }
        int64_t j = (int64_t)clipl__load((const char *)index->ptr + io * is, index->dt);
        if (j < 0 || j >= dst->shape[dim])
            return clipl__err(CLIPL_EINDEX, "index %lld out of range for dim %d of size %lld",
                              (long long)j, dim, (long long)dst->shape[dim]);
        for (int d = 0; d < nd; d++)
            doff += (d == dim ? j : c[d]) * dstride[d];
        char *p = (char *)dst->ptr + doff * es;
        clipl__store(p, dst->dt,
                     clipl__load(p, dst->dt) +
                         clipl__load((const char *)src->ptr + so * ss, src->dt));
    }
    return CLIPL_OK;
}

/* The backward of gather and of top-k (a gather by its own indices): g scattered into zeros along
 * dim iv[0] by the index in saved[1]. */
static int bwd_scatter(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    clipl_tensor *z = zeros_edge(n, 0, g->dt);
    if (!z)
        return clipl_errcode();
    int rc = scatter_add(z, (int)n->iv[0], n->saved[1], g);
    if (rc)
        clipl_tensor_release(z);
    else
        gin[0] = z;
    return rc;
}

/* ---- reductions ---- */

/* Saves a private copy of an index output: the caller owns the returned indices and may change
 * them in place (the Lua layer makes them 1-based). */
static int save_copy(clipl__node *n, int i, const clipl_tensor *t)
{
    clipl_tensor *c = NULL;
    int rc = clipl_tensor_clone(t, &c);
    if (rc)
        return rc;
    n->saved[i] = c;
    return CLIPL_OK;
}

/* The end of a wrapper with an index output (max, min, top-k): releases idx (the caller got its
 * own reference in *indices), records n on *values, and on failure releases *indices too. */
static int finish_indexed(clipl__node *n, clipl_tensor **values, clipl_tensor **indices,
                          clipl_tensor *idx, int rc)
{
    clipl_tensor_release(idx);
    rc = clipl__node_finish(n, values, rc);
    if (rc && indices) {
        clipl_tensor_release(*indices);
        *indices = NULL;
    }
    return rc;
}

/* g reshaped so that it broadcasts against the input (reduced dims back as size 1). */
static int unreduce(const clipl__node *n, const clipl_tensor *g, clipl_tensor **gk)
{
    int dim = (int)n->iv[1], keep = (int)n->iv[2];
    const clipl__edge *e = &n->in[0];
    int64_t shape[CLIPL_MAX_DIMS];
    memcpy(shape, e->shape, sizeof shape);
    if (dim == CLIPL_ALL_DIMS) {
        for (int i = 0; i < e->ndim; i++)
            shape[i] = 1;
    } else if (!keep) {
        shape[dim] = 1;
    } else {
        return clipl_tensor_reshape(g, gk, g->ndim, g->shape);
    }
    return clipl_tensor_reshape(g, gk, e->ndim, shape);
}

static int bwd_reduce(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int kind = (int)n->iv[0], dim = (int)n->iv[1], rc = CLIPL_OK;
    const clipl__edge *e = &n->in[0];
    clipl_tensor *gk = NULL, *t1 = NULL, *t2 = NULL, *idx = NULL, *z = NULL;
    TRY(unreduce(n, g, &gk));
    switch (kind) {
    case CLIPL__R_SUM: rc = clipl_tensor_expand(gk, &gin[0], e->ndim, e->shape); break;
    case CLIPL__R_MEAN:
        TRY(clipl_mul_scalar(gk, n->fv[1], &t1));
        rc = clipl_tensor_expand(t1, &gin[0], e->ndim, e->shape);
        break;
    case CLIPL__R_MAX:
    case CLIPL__R_MIN:
        if (!(z = zeros_edge(n, 0, g->dt))) {
            rc = clipl_errcode();
            goto out;
        }
        if (dim == CLIPL_ALL_DIMS) { /* flat index */
            int64_t one = 1, numel = clipl_tensor_numel(z);
            TRY(clipl_tensor_view(z, &t1, 1, &numel));
            TRY(clipl_tensor_reshape(n->saved[1], &idx, 1, &one));
            TRY(clipl_tensor_reshape(g, &t2, 1, &one));
            TRY(scatter_add(t1, 0, idx, t2));
        } else {
            TRY(unreduce(n, n->saved[1], &idx));
            TRY(scatter_add(z, dim, idx, gk));
        }
        gin[0] = z;
        z = NULL;
        break;
    case CLIPL__R_NORM: {
        /* d|x|_p = sign(x) |x|^(p-1) / norm^(p-1); p = inf: sign(x) where |x| == norm */
        double p = n->fv[0];
        clipl_tensor *x = n->saved[0], *nk = NULL, *ax = NULL, *sg = NULL, *num = NULL, *den = NULL;
        rc = unreduce(n, n->saved[2], &nk);
        if (!rc)
            rc = clipl_eltwise(x, &ax, CLIPL_ACT_ABS, 0, 0);
        if (!rc) { /* sign = x / |x| with 0 at 0: (x > 0) - (x < 0) */
            clipl_tensor *pos = NULL, *neg = NULL;
            rc = clipl_binary_scalar(x, 0, &pos, CLIPL_BIN_GT, 0);
            if (!rc)
                rc = clipl_binary_scalar(x, 0, &neg, CLIPL_BIN_LT, 0);
            clipl_tensor *pf = NULL;
            if (!rc)
                rc = clipl_tensor_to(pos, &pf, x->dt);
            if (!rc)
                rc = clipl_sub(pf, neg, &sg);
            clipl_tensor_release(pos);
            clipl_tensor_release(neg);
            clipl_tensor_release(pf);
        }
        if (!rc && isinf(p)) {
            clipl_tensor *eq = NULL;
            rc = clipl_binary(ax, nk, &eq, CLIPL_BIN_EQ);
            if (!rc)
                rc = clipl_mul(sg, eq, &num);
            clipl_tensor_release(eq);
        } else if (!rc && p == 1) {
            num = clipl_tensor_retain(sg);
        } else if (!rc) {
            clipl_tensor *pw = NULL, *nz = NULL;
            rc = clipl_pow_scalar(ax, p - 1, &pw);
            if (!rc)
                rc = clipl_mul(sg, pw, &num);
            if (!rc)
                rc = clipl_pow_scalar(nk, p - 1, &den);
            /* a zero norm gives a zero gradient (as PyTorch's subgradient) */
            if (!rc)
                rc = clipl_binary_scalar(den, 0, &nz, CLIPL_BIN_EQ, 0);
            if (!rc) {
                clipl_tensor *d2 = NULL;
                rc = clipl_add(den, nz, &d2, 1.0);
                clipl_tensor_release(den);
                den = d2;
            }
            clipl_tensor_release(pw);
            clipl_tensor_release(nz);
        }
        if (!rc)
            rc = clipl_mul(num, gk, &t1);
        if (!rc && den)
            rc = clipl_div(t1, den, &t2);
        else if (!rc)
            t2 = clipl_tensor_retain(t1);
        if (!rc)
            rc = clipl_tensor_expand(t2, &gin[0], e->ndim, e->shape);
        clipl_tensor_release(nk);
        clipl_tensor_release(ax);
        clipl_tensor_release(sg);
        clipl_tensor_release(num);
        clipl_tensor_release(den);
        break;
    }
    }
out:
    clipl_tensor_release(gk);
    clipl_tensor_release(t1);
    clipl_tensor_release(t2);
    clipl_tensor_release(idx);
    clipl_tensor_release(z);
    return rc;
}

static const char *reduce_names[] = {"sum", "mean", "max", "min", "norm"};

int clipl__ag_reduce(int kind, const clipl_tensor *src, clipl_tensor **values,
                     clipl_tensor **indices, int dim, int keepdim, double p)
{
    clipl_tensor *idx = NULL;
    int rc;
    clipl__grad_off++;
    switch (kind) {
    case CLIPL__R_SUM: rc = clipl_sum(src, values, dim, keepdim); break;
    case CLIPL__R_MEAN: rc = clipl_mean(src, values, dim, keepdim); break;
    case CLIPL__R_MAX: rc = clipl_max(src, values, &idx, dim, keepdim); break;
    case CLIPL__R_MIN: rc = clipl_min(src, values, &idx, dim, keepdim); break;
    default: rc = clipl_norm(src, values, p, dim, keepdim); break;
    }
    clipl__grad_off--;
    if (rc)
        return rc;
    if (indices)
        *indices = clipl_tensor_retain(idx);
    if (!float_dt((*values)->dt)) {
        clipl_tensor_release(idx);
        return CLIPL_OK;
    }
    clipl__node *n = clipl__node_new(reduce_names[kind], bwd_reduce, 1, &src);
    if (n) {
        int d = dim == CLIPL_ALL_DIMS ? dim : clipl__wrap_dim(dim, src->ndim);
        n->iv[0] = kind;
        n->iv[1] = d;
        n->iv[2] = keepdim != 0;
        n->fv[0] = p;
        int64_t nin = clipl_tensor_numel(src), nout = clipl_tensor_numel(*values);
        n->fv[1] = nout > 0 && nin > 0 ? (double)nout / (double)nin : 0;
        if (kind == CLIPL__R_NORM) {
            rc = clipl__node_save(n, 0, src);
            if (!rc)
                rc = clipl__node_save(n, 2, *values);
        }
        if (!rc && idx)
            rc = save_copy(n, 1, idx);
    }
    return finish_indexed(n, values, indices, idx, rc);
}

int clipl__ag_topk(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices,
                   int64_t k, int dim, int largest)
{
    clipl_tensor *idx = NULL;
    clipl__grad_off++;
    int rc = clipl_topk(src, values, &idx, k, dim, largest);
    clipl__grad_off--;
    if (rc)
        return rc;
    if (indices)
        *indices = clipl_tensor_retain(idx);
    clipl__node *n = clipl__node_new("topk", bwd_scatter, 1, &src);
    if (n) {
        n->iv[0] = clipl__wrap_dim(dim, src->ndim ? src->ndim : 1);
        rc = save_copy(n, 1, idx);
    }
    return finish_indexed(n, values, indices, idx, rc);
}

/* ---- cat / stack ---- */

static int bwd_join(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int stack = (int)n->iv[0], d = (int)n->iv[1], rc = CLIPL_OK;
    int64_t at = 0;
    for (int k = 0; k < n->n_in && !rc; k++) {
        int64_t len = n->sizes[k];
        if (len < 0) { /* a 1-d empty tensor skipped by cat */
            if (clipl__node_needs(n, k) && !(gin[k] = zeros_edge(n, k, g->dt)))
                rc = clipl_errcode();
            continue;
        }
        if (clipl__node_needs(n, k))
            rc = stack ? clipl_tensor_select(g, &gin[k], d, k)
                       : clipl_tensor_narrow(g, &gin[k], d, at, len);
        at += len;
    }
    return rc;
}

int clipl__ag_join(int stack, const clipl_tensor *const *srcs, int n_in, clipl_tensor **dst,
                   int dim)
{
    clipl__grad_off++;
    int rc = stack ? clipl_stack(srcs, n_in, dst, dim) : clipl_cat(srcs, n_in, dst, dim);
    clipl__grad_off--;
    if (rc || !float_dt((*dst)->dt))
        return rc;
    clipl__node *n = clipl__node_new(stack ? "stack" : "cat", bwd_join, n_in, srcs);
    if (n && !(n->sizes = calloc((size_t)n_in, sizeof(int64_t)))) {
        clipl__node_release(n);
        n = NULL;
        clipl__err(CLIPL_ENOMEM, "cat: out of memory");
    }
    if (n) {
        int d = clipl__wrap_dim(dim, (*dst)->ndim);
        n->iv[0] = stack;
        n->iv[1] = d;
        for (int k = 0; k < n_in; k++) {
            const clipl_tensor *t = srcs[k];
            bool skipped = !stack && t->ndim == 1 && t->shape[0] == 0 && (*dst)->ndim != 1;
            n->sizes[k] = skipped ? -1 : stack ? 1 : t->shape[d];
        }
    }
    return clipl__node_finish(n, dst, CLIPL_OK);
}

/* ---- indexing ---- */

static int bwd_index_select(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int d = (int)n->iv[0], rc;
    /* the 1-d index laid along dim and broadcast to g's shape */
    int64_t shape[CLIPL_MAX_DIMS];
    for (int i = 0; i < g->ndim; i++)
        shape[i] = i == d ? g->shape[i] : 1;
    clipl_tensor *iv = NULL, *ie = NULL, *z = zeros_edge(n, 0, g->dt);
    if (!z)
        return clipl_errcode();
    TRY(clipl_tensor_view(n->saved[1], &iv, g->ndim, shape));
    TRY(clipl_tensor_expand(iv, &ie, g->ndim, g->shape));
    TRY(scatter_add(z, d, ie, g));
    gin[0] = z;
    z = NULL;
out:
    clipl_tensor_release(iv);
    clipl_tensor_release(ie);
    clipl_tensor_release(z);
    return rc;
}

/* Records an op (rc and *dst from the op) whose backward needs one tensor t, saved in slot i. */
static int record_saving(const char *name, clipl__bwd_fn fn, int n_in,
                         const clipl_tensor *const *ins, int i, const clipl_tensor *t,
                         clipl_tensor **dst, int rc)
{
    if (rc || !float_dt((*dst)->dt))
        return rc;
    clipl__node *n = clipl__node_new(name, fn, n_in, ins);
    if (n)
        rc = clipl__node_save(n, i, t);
    return clipl__node_finish(n, dst, rc);
}

/* Records index_select or gather (rc and *dst from the op): the dim and the index are saved. */
static int record_index_op(const char *name, clipl__bwd_fn fn, const clipl_tensor *src,
                           const clipl_tensor *index, clipl_tensor **dst, int dim, int rc)
{
    if (rc || !float_dt((*dst)->dt))
        return rc;
    clipl__node *n = clipl__node_new(name, fn, 1, &src);
    if (n) {
        n->iv[0] = clipl__wrap_dim(dim, src->ndim);
        rc = clipl__node_save(n, 1, index);
    }
    return clipl__node_finish(n, dst, rc);
}

int clipl__ag_index_select(const clipl_tensor *src, const clipl_tensor *index, clipl_tensor **dst,
                           int dim)
{
    clipl__grad_off++;
    int rc = clipl_index_select(src, index, dst, dim);
    clipl__grad_off--;
    return record_index_op("index_select", bwd_index_select, src, index, dst, dim, rc);
}

int clipl__ag_gather(const clipl_tensor *src, const clipl_tensor *index, clipl_tensor **dst,
                     int dim)
{
    clipl__grad_off++;
    int rc = clipl_gather(src, index, dst, dim);
    clipl__grad_off--;
    return record_index_op("gather", bwd_scatter, src, index, dst, dim, rc);
}

static int bwd_embedding(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    /* rows of the weight gradient: gw[ids[i]] += g[i] (f32 accumulation, then the weight's
     * dtype by the tape) */
    int rc;
    int64_t V = n->in[1].shape[0], D = n->in[1].shape[1];
    int64_t N = clipl_tensor_numel(n->saved[0]);
    int64_t gshape[2] = {N, D}, wshape[2] = {V, D};
    clipl_tensor *ids = NULL, *g2 = NULL, *gw = clipl_tensor_zeros(CLIPL_F32, 2, wshape);
    if (!gw)
        return clipl_errcode();
    TRY(clipl_tensor_to(n->saved[0], &ids, CLIPL_I64));
    TRY(clipl_tensor_reshape(g, &g2, 2, gshape));
    if (g2->dt != CLIPL_F32 || !clipl_tensor_is_contiguous(g2)) {
        clipl_tensor *c = NULL;
        TRY(clipl_tensor_to(g2, &c, CLIPL_F32));
        clipl_tensor_release(g2);
        g2 = c;
    }
    const int64_t *id = ids->ptr;
    const float *gp = g2->ptr;
    float *wp = gw->ptr;
    for (int64_t i = 0; i < N; i++) {
        if (id[i] < 0 || id[i] >= V) {
            rc = clipl__err(CLIPL_EINDEX, "embedding: id %lld out of range for %lld rows",
                            (long long)id[i], (long long)V);
            goto out;
        }
        float *row = wp + id[i] * D;
        const float *gr = gp + i * D;
        for (int64_t j = 0; j < D; j++)
            row[j] += gr[j];
    }
    gin[1] = gw;
    gw = NULL;
out:
    clipl_tensor_release(ids);
    clipl_tensor_release(g2);
    clipl_tensor_release(gw);
    return rc;
}

int clipl__ag_embedding(const clipl_tensor *ids, const clipl_tensor *weight, clipl_tensor **dst)
{
    clipl__grad_off++;
    int rc = clipl_embedding(ids, weight, dst);
    clipl__grad_off--;
    const clipl_tensor *ins[2] = {NULL, weight};
    return record_saving("embedding", bwd_embedding, 2, ins, 0, ids, dst, rc);
}

static int bwd_masked_fill(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    clipl_tensor *m = NULL;
    int rc = clipl_masked_fill(g, n->saved[1], &m, 0.0);
    if (rc)
        return rc;
    rc = clipl__sum_to_edge(n, 0, m, &gin[0]);
    clipl_tensor_release(m);
    return rc;
}

int clipl__ag_masked_fill(const clipl_tensor *src, const clipl_tensor *mask, clipl_tensor **dst,
                          double value)
{
    clipl__grad_off++;
    int rc = clipl_masked_fill(src, mask, dst, value);
    clipl__grad_off--;
    return record_saving("masked_fill", bwd_masked_fill, 1, &src, 1, mask, dst, rc);
}

static int bwd_where(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    clipl_tensor *cond = n->saved[0], *notc = NULL, *m = NULL;
    int rc;
    if (clipl__node_needs(n, 0)) {
        TRY(clipl_binary_scalar(cond, 0, &notc, CLIPL_BIN_EQ, 0));
        TRY(clipl_masked_fill(g, notc, &m, 0.0));
        TRY(clipl__sum_to_edge(n, 0, m, &gin[0]));
        clipl_tensor_release(m);
        m = NULL;
    }
    if (clipl__node_needs(n, 1)) {
        TRY(clipl_masked_fill(g, cond, &m, 0.0));
        TRY(clipl__sum_to_edge(n, 1, m, &gin[1]));
    }
    rc = CLIPL_OK;
out:
    clipl_tensor_release(notc);
    clipl_tensor_release(m);
    return rc;
}

int clipl__ag_where(const clipl_tensor *cond, const clipl_tensor *a, const clipl_tensor *b,
                    clipl_tensor **dst)
{
    clipl__grad_off++;
    int rc = clipl_where(cond, a, b, dst);
    clipl__grad_off--;
    const clipl_tensor *ins[2] = {a, b};
    return record_saving("where", bwd_where, 2, ins, 0, cond, dst, rc);
}
