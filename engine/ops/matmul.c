/*
 * matmul.c - batched matmul and linear layers on oneDNN's matmul primitive, with fused bias,
 * activation and residual-sum post-ops, and linear weights prepared once in oneDNN's layout.
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"

#include <stdlib.h>
#include <string.h>

static const clipl_matmul_opts default_opts = {0, 0, 0, 1, 1, NULL};

/* The inner matrix of t (last two dims) is one oneDNN's gemm kernels read in place: row- or
 * column-major with a leading dimension at least as large as the rows. */
static bool gemm_friendly(const clipl_tensor *t)
{
    int n = t->ndim;
    int64_t r = t->shape[n - 2], c = t->shape[n - 1];
    int64_t sr = t->strides[n - 2], sc = t->strides[n - 1];
    bool row_major = (sc == 1 || c == 1) && (r == 1 || sr >= c);
    bool col_major = (sr == 1 || r == 1) && (c == 1 || sc >= r);
    return row_major || col_major;
}

/* Geometry of one operand padded to nd dims, with broadcast (or stride-0) batch dims as size 1.
 * Size-1 dims get the stride a dense layout would give them (kernels check strides even there). */
static void operand_geom(const clipl_tensor *t, int nd, int64_t *shape, int64_t *strides)
{
    int pad = nd - t->ndim;
    for (int i = 0; i < nd; i++) {
        shape[i] = i < pad ? 1 : t->shape[i - pad];
        strides[i] = i < pad ? 0 : t->strides[i - pad];
        if (i < nd - 2 && strides[i] == 0)
            shape[i] = 1;
    }
    int64_t extent = 1; /* elements spanned by the dims after i */
    for (int i = nd - 1; i >= 0; i--) {
        if (shape[i] == 1)
            strides[i] = extent;
        else if (strides[i] * shape[i] > extent)
            extent = strides[i] * shape[i];
    }
}

static int shape_err(const char *op, const char *what, const clipl_tensor *a, const clipl_tensor *b)
{
    char sa[96], sb[96];
    return clipl__err(CLIPL_ESHAPE, "%s: %s, [%s] @ [%s]", op, what,
                      clipl__tshape(sa, sizeof sa, a), clipl__tshape(sb, sizeof sb, b));
}

/* The core of clipl_matmul once arguments are checked; a and b may be replaced by contiguous
 * copies by the caller. */
static int matmul_impl(const clipl_tensor *a, const clipl_tensor *b, const clipl_tensor *bias,
                       clipl_tensor *out, int nd, const clipl_matmul_opts *o, bool sum, bool no_ref,
                       const char *op)
{
    int64_t ash[CLIPL_MAX_DIMS], ast[CLIPL_MAX_DIMS], bsh[CLIPL_MAX_DIMS], bst[CLIPL_MAX_DIMS];
    operand_geom(a, nd, ash, ast);
    operand_geom(b, nd, bsh, bst);
    dnnl_memory_desc_t amd, bmd, dmd, biasmd;
    int rc = clipl__dnnl_md_dims(&amd, nd, ash, ast, a->dt, op);
    if (!rc)
        rc = clipl__dnnl_md_dims(&bmd, nd, bsh, bst, b->dt, op);
    if (!rc) {
        int64_t dst_st[CLIPL_MAX_DIMS];
        memcpy(dst_st, out->strides, sizeof dst_st);
        rc = clipl__dnnl_md_dims(&dmd, nd, out->shape, dst_st, out->dt, op);
    }
    if (!rc && bias) {
        int64_t sh[CLIPL_MAX_DIMS], st[CLIPL_MAX_DIMS];
        operand_geom(bias, nd, sh, st);
        /* bias dims are 1 or the dst's; operand_geom only collapses stride-0 batch dims */
        for (int i = nd - 2; i < nd; i++)
            if (bias->ndim >= nd - i && st[i] == 0) {
                sh[i] = 1;
                st[i] = 1;
            }
        rc = clipl__dnnl_md_dims(&biasmd, nd, sh, st, bias->dt, op);
    }
    if (rc)
        return rc;
    clipl__mm mm = {0};
    mm.src_md = &amd;
    mm.wei_md = &bmd;
    mm.bias_md = bias ? &biasmd : NULL;
    mm.dst_md = &dmd;
    mm.src = a->ptr;
    mm.wei = b->ptr;
    mm.bias = bias ? bias->ptr : NULL;
    mm.dst = out->ptr;
    mm.act = o->act;
    mm.alpha = o->alpha;
    mm.beta = o->beta;
    mm.scale = o->scale;
    mm.sum_scale = o->sum_scale;
    mm.sum = sum;
    mm.no_ref = no_ref;
    return clipl__matmul_run(&mm, op);
}

static int matmul_op(const clipl_tensor *a, const clipl_tensor *b, const clipl_tensor *bias,
                     clipl_tensor **dst, const clipl_matmul_opts *opts, const char *op)
{
    const clipl_matmul_opts *o = opts ? opts : &default_opts;
    int rc;
    if ((rc = clipl__dnnl_check_float(a, op, "a")) || (rc = clipl__dnnl_check_float(b, op, "b")))
        return rc;
    if (bias && (rc = clipl__dnnl_check_float(bias, op, "bias")))
        return rc;
    if (a->ndim < 2 || b->ndim < 2)
        return shape_err(op, "both operands need at least 2 dims", a, b);
    if (a->dt != b->dt)
        return clipl__err(CLIPL_EINVAL, "%s: dtypes differ, %s @ %s", op, clipl_dtype_name(a->dt),
                          clipl_dtype_name(b->dt));
    if (o->act < 0 || o->act >= CLIPL_ACT_COUNT)
        return clipl__err(CLIPL_EINVAL, "%s: unknown activation %d", op, (int)o->act);
    int64_t K = a->shape[a->ndim - 1];
    if (b->shape[b->ndim - 2] != K)
        return shape_err(op, "size mismatch", a, b);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t oshape[CLIPL_MAX_DIMS];
    for (int i = 0; i < nd - 2; i++) {
        int ia = i - (nd - a->ndim), ib = i - (nd - b->ndim);
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return shape_err(op, "batch dims do not broadcast", a, b);
        oshape[i] = sa == 1 ? sb : sa;
    }
    oshape[nd - 2] = a->shape[a->ndim - 2];
    oshape[nd - 1] = b->shape[b->ndim - 1];
    if (bias) {
        if (bias->ndim > nd)
            goto bias_bad;
        for (int i = 0; i < bias->ndim; i++) {
            int64_t s = bias->shape[bias->ndim - 1 - i];
            if (s != 1 && s != oshape[nd - 1 - i])
                goto bias_bad;
        }
    }
    clipl_tensor *out = NULL, *ac = NULL, *bc = NULL, *biasc = NULL;
    bool sum = false;
    if (o->accum) {
        clipl_tensor *acc = o->accum;
        char s1[96], s2[96];
        bool ok = acc->ndim == nd;
        for (int i = 0; ok && i < nd; i++)
            ok = acc->shape[i] == oshape[i] && (acc->strides[i] != 0 || oshape[i] == 1);
        if (!ok)
            return clipl__err(CLIPL_ESHAPE, "%s: accum is [%s], the result is [%s]", op,
                              clipl__tshape(s1, sizeof s1, acc),
                              clipl__shape_str(s2, sizeof s2, nd, oshape));
        if (acc->dt != CLIPL_F32 && acc->dt != a->dt)
            return clipl__err(CLIPL_EINVAL, "%s: accum must be f32 or %s, got %s", op,
                              clipl_dtype_name(a->dt), clipl_dtype_name(acc->dt));
        if ((rc = clipl__check_writable(acc, op)))
            return rc;
        out = clipl_tensor_retain(acc);
        sum = true;
    } else {
        out = clipl_tensor_empty(a->dt, nd, oshape);
        if (!out)
            return clipl_errcode();
    }
    if (clipl_tensor_numel(out) == 0) {
        *dst = out;
        return CLIPL_OK;
    }
    if (K == 0) {
        rc = clipl__err(CLIPL_EUNSUPPORTED, "%s: inner size 0 is not supported", op);
        goto fail;
    }
    /* views oneDNN reads in place are passed as strided descriptors; others are copied */
    const clipl_tensor *ua = a, *ub = b, *ubias = bias;
    if (!gemm_friendly(a)) {
        if ((rc = clipl_tensor_contiguous(a, &ac)))
            goto fail;
        ua = ac;
    }
    if (!gemm_friendly(b)) {
        if ((rc = clipl_tensor_contiguous(b, &bc)))
            goto fail;
        ub = bc;
    }
    /* a strided view that only the reference kernel takes is better copied */
    bool strided = !clipl_tensor_is_contiguous(ua) || !clipl_tensor_is_contiguous(ub);
    rc = matmul_impl(ua, ub, ubias, out, nd, o, sum, strided, op);
    if (rc == CLIPL_EUNSUPPORTED) {
        /* oneDNN has no kernel for these strides or dtypes: retry on plain copies (f32 bias) */
        clipl_errclear();
        if (!ac && (rc = clipl_tensor_contiguous(a, &ac)))
            goto fail;
        if (!bc && (rc = clipl_tensor_contiguous(b, &bc)))
            goto fail;
        if (bias && bias->dt != CLIPL_F32 && (rc = clipl_tensor_to(bias, &biasc, CLIPL_F32)))
            goto fail;
        rc = matmul_impl(ac, bc, biasc ? biasc : bias, out, nd, o, sum, false, op);
    }
    if (rc)
        goto fail;
    clipl_tensor_release(ac);
    clipl_tensor_release(bc);
    clipl_tensor_release(biasc);
    *dst = out;
    return CLIPL_OK;
fail:
    clipl_tensor_release(ac);
    clipl_tensor_release(bc);
    clipl_tensor_release(biasc);
    clipl_tensor_release(out);
    return rc;
bias_bad : {
    char s1[96], s2[96];
    return clipl__err(CLIPL_ESHAPE, "%s: bias [%s] does not broadcast to the result [%s]", op,
                      clipl__tshape(s1, sizeof s1, bias),
                      clipl__shape_str(s2, sizeof s2, nd, oshape));
}
}

int clipl_matmul(const clipl_tensor *a, const clipl_tensor *b, const clipl_tensor *bias,
                 clipl_tensor **dst, const clipl_matmul_opts *opts)
{
    if (CLIPL__AG_ON3(a, b, bias) || (!clipl__grad_off && opts && clipl__ag_req(opts->accum)))
        return clipl__ag_matmul(a, b, bias, dst, opts);
    return matmul_op(a, b, bias, dst, opts, "matmul");
}

/* x [..., in] viewed as [M, in] (a view when possible, else a copy), and the output shape. */
static int flatten_rows(const clipl_tensor *x, clipl_tensor **x2, int64_t *m)
{
    int64_t rows = 1;
    for (int i = 0; i < x->ndim - 1; i++)
        rows *= x->shape[i];
    int64_t shape[2] = {rows, x->shape[x->ndim - 1]};
    *m = rows;
    int rc = clipl_tensor_view(x, x2, 2, shape);
    if (rc) {
        clipl_errclear();
        rc = clipl_tensor_reshape(x, x2, 2, shape);
    }
    return rc;
}

int clipl_linear(const clipl_tensor *x, const clipl_tensor *weight, const clipl_tensor *bias,
                 clipl_tensor **dst, int act)
{
    if (CLIPL__AG_ON3(x, weight, bias))
        return clipl__ag_linear(x, weight, bias, dst, act);
    const char *op = "linear";
    int rc;
    if ((rc = clipl__dnnl_check_float(x, op, "x")) ||
        (rc = clipl__dnnl_check_float(weight, op, "weight")))
        return rc;
    if (weight->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != weight->shape[1]) {
        char s1[96], s2[96];
        return clipl__err(CLIPL_ESHAPE,
                          "%s: size mismatch, x [%s] with weight [%s] (expected "
                          "[..., in] and [out, in])",
                          op, clipl__tshape(s1, sizeof s1, x),
                          clipl__tshape(s2, sizeof s2, weight));
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != weight->shape[0])) {
        char s1[96], s2[96];
        return clipl__err(CLIPL_ESHAPE, "%s: bias [%s] for weight [%s] (expected [out])", op,
                          clipl__tshape(s1, sizeof s1, bias), clipl__tshape(s2, sizeof s2, weight));
    }
    clipl_tensor *wt = NULL, *x2 = NULL, *y = NULL;
    int64_t m;
    clipl_matmul_opts o = default_opts;
    o.act = act;
    if ((rc = clipl_tensor_transpose(weight, &wt, 0, 1)))
        return rc;
    if ((rc = flatten_rows(x, &x2, &m)))
        goto done;
    if ((rc = matmul_op(x2, wt, bias, &y, &o, op)))
        goto done;
    int64_t oshape[CLIPL_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[x->ndim - 1] = weight->shape[0];
    rc = clipl_tensor_view(y, dst, x->ndim, oshape);
done:
    clipl_tensor_release(wt);
    clipl_tensor_release(x2);
    clipl_tensor_release(y);
    return rc;
}

/* ---- prepared linear weights ---------------------------------------------------------------- */

struct clipl_linear_weights {
    int dt;
    int64_t out, in;
    dnnl_memory_desc_t wei_md; /* [in, out] in the layout the matmul primitive chose */
    void *wei;
    size_t wei_bytes;
    dnnl_memory_desc_t plain_md; /* [in, out] column-major view of a row-major [out, in] */
    dnnl_memory_desc_t bias_md;  /* [1, out] f32 */
    float *bias;
};

clipl_linear_weights *clipl_linear_prepare(const clipl_tensor *weight, const clipl_tensor *bias,
                                           int dtype, int64_t m_hint)
{
    const char *op = "linear_prepare";
    if (clipl__dnnl_check_float(weight, op, "weight"))
        return NULL;
    if (dtype < 0)
        dtype = weight->dt;
    if (dtype != CLIPL_F32 && dtype != CLIPL_BF16) {
        clipl__err(CLIPL_EINVAL, "%s: dtype must be f32 or bf16, got %s", op,
                   clipl_dtype_name(dtype));
        return NULL;
    }
    char s1[96], s2[96];
    if (weight->ndim != 2 || weight->shape[0] == 0 || weight->shape[1] == 0) {
        clipl__err(CLIPL_ESHAPE, "%s: weight must be [out, in] with sizes > 0, got [%s]", op,
                   clipl__tshape(s1, sizeof s1, weight));
        return NULL;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != weight->shape[0])) {
        clipl__err(CLIPL_ESHAPE, "%s: bias [%s] for weight [%s] (expected [out])", op,
                   clipl__tshape(s1, sizeof s1, bias), clipl__tshape(s2, sizeof s2, weight));
        return NULL;
    }
    if (bias && clipl__dnnl_check_float(bias, op, "bias"))
        return NULL;
    dnnl_engine_t eng = clipl__dnnl_engine(op);
    if (!eng)
        return NULL;
    int64_t N = weight->shape[0], K = weight->shape[1];
    int64_t M = m_hint > 0 ? m_hint : 256;
    clipl_linear_weights *w = calloc(1, sizeof *w);
    clipl_tensor *wc = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    int rc;
    if (!w) {
        clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
        return NULL;
    }
    w->dt = dtype;
    w->out = N;
    w->in = K;
    /* the weights in dtype, row-major [out, in] = column-major [in, out] */
    if (weight->dt == dtype && clipl_tensor_is_contiguous(weight))
        wc = clipl_tensor_retain((clipl_tensor *)weight);
    else if ((rc = clipl_tensor_to(weight, &wc, dtype)))
        goto fail;
    int64_t pshape[2] = {K, N}, pstr[2] = {1, K};
    if ((rc = clipl__dnnl_md_dims(&w->plain_md, 2, pshape, pstr, dtype, op)))
        goto fail;
    int64_t bshape[2] = {1, N}, bstr[2] = {N, 1};
    if ((rc = clipl__dnnl_md_dims(&w->bias_md, 2, bshape, bstr, CLIPL_F32, op)))
        goto fail;
    dnnl_memory_desc_t src_md, any_md, dst_md;
    dnnl_dims_t sd = {M, K}, wd = {K, N}, dd = {M, N};
    dnnl_data_type_t ddt = clipl__dnnl_dt(dtype);
    if ((rc = clipl__dnnl_check(dnnl_memory_desc_init_by_tag(&src_md, 2, sd, ddt, dnnl_ab), op,
                                "src descriptor")) ||
        (rc = clipl__dnnl_check(
             dnnl_memory_desc_init_by_tag(&any_md, 2, wd, ddt, dnnl_format_tag_any), op,
             "weights descriptor")) ||
        (rc = clipl__dnnl_check(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, ddt, dnnl_ab), op,
                                "dst descriptor")))
        goto fail;
    if ((rc = clipl__dnnl_attr(&attr, NULL, op)))
        goto fail;
    dnnl_matmul_desc_t desc;
    if ((rc = clipl__dnnl_check(
             dnnl_matmul_desc_init(&desc, &src_md, &any_md, bias ? &w->bias_md : NULL, &dst_md), op,
             "matmul descriptor")) ||
        (rc = clipl__dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL), op,
                                "matmul primitive descriptor")))
        goto fail;
    w->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    w->wei_bytes = dnnl_memory_desc_get_size(&w->wei_md);
    w->wei = clipl__alloc(w->wei_bytes);
    if (!w->wei) {
        rc = clipl__err(CLIPL_ENOMEM, "%s: out of memory for %zu bytes of weights", op,
                        w->wei_bytes);
        goto fail;
    }
    if ((rc = clipl__dnnl_reorder(&w->plain_md, wc->ptr, &w->wei_md, w->wei, op)))
        goto fail;
    if (bias) {
        w->bias = clipl__alloc(sizeof(float) * (size_t)N);
        if (!w->bias) {
            rc = clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
            goto fail;
        }
        for (int64_t i = 0; i < N; i++) {
            double v;
            clipl_tensor_get_flat(bias, i, &v);
            w->bias[i] = (float)v;
        }
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    clipl_tensor_release(wc);
    return w;
fail:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    clipl_tensor_release(wc);
    clipl_linear_weights_free(w);
    return NULL;
}

void clipl_linear_weights_free(clipl_linear_weights *w)
{
    if (!w)
        return;
    if (w->wei)
        clipl__free(w->wei, w->wei_bytes);
    if (w->bias)
        clipl__free(w->bias, sizeof(float) * (size_t)w->out);
    free(w);
}

int clipl_linear_weights_info(const clipl_linear_weights *w, int64_t *out_features,
                              int64_t *in_features, int *dtype, int64_t *nbytes)
{
    if (!w)
        return clipl__err(CLIPL_EINVAL, "linear_weights_info: NULL weights");
    if (out_features)
        *out_features = w->out;
    if (in_features)
        *in_features = w->in;
    if (dtype)
        *dtype = w->dt;
    if (nbytes)
        *nbytes = (int64_t)w->wei_bytes + (w->bias ? (int64_t)sizeof(float) * w->out : 0);
    return CLIPL_OK;
}

int clipl_linear_apply(const clipl_linear_weights *w, const clipl_tensor *x, clipl_tensor **dst,
                       const clipl_matmul_opts *opts)
{
    if (CLIPL__AG_ON2(x, opts ? opts->accum : NULL))
        return clipl__ag_no_backward("linear",
                                     "use clipl_linear with the weight tensor for training");
    const char *op = "linear";
    const clipl_matmul_opts *o = opts ? opts : &default_opts;
    int rc;
    if (!w)
        return clipl__err(CLIPL_EINVAL, "%s: NULL weights", op);
    if ((rc = clipl__dnnl_check_float(x, op, "x")))
        return rc;
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->in) {
        char s1[96];
        return clipl__err(CLIPL_ESHAPE,
                          "%s: size mismatch, x [%s] with weights [%lldx%lld] "
                          "(expected [..., %lld])",
                          op, clipl__tshape(s1, sizeof s1, x), (long long)w->out, (long long)w->in,
                          (long long)w->in);
    }
    if (o->act < 0 || o->act >= CLIPL_ACT_COUNT)
        return clipl__err(CLIPL_EINVAL, "%s: unknown activation %d", op, (int)o->act);
    int64_t oshape[CLIPL_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof oshape);
    oshape[x->ndim - 1] = w->out;
    clipl_tensor *x2 = NULL, *xc = NULL, *out = NULL, *out2 = NULL;
    void *tmpw = NULL;
    int64_t m;
    if (o->accum) {
        clipl_tensor *acc = o->accum;
        char s1[96], s2[96];
        bool ok = acc->ndim == x->ndim;
        for (int i = 0; ok && i < x->ndim; i++)
            ok = acc->shape[i] == oshape[i];
        if (!ok)
            return clipl__err(CLIPL_ESHAPE, "%s: accum is [%s], the result is [%s]", op,
                              clipl__tshape(s1, sizeof s1, acc),
                              clipl__shape_str(s2, sizeof s2, x->ndim, oshape));
        if (acc->dt != CLIPL_F32 && acc->dt != x->dt)
            return clipl__err(CLIPL_EINVAL, "%s: accum must be f32 or %s, got %s", op,
                              clipl_dtype_name(x->dt), clipl_dtype_name(acc->dt));
        if ((rc = clipl__check_writable(acc, op)))
            return rc;
        int64_t s2d[2] = {0, w->out};
        s2d[0] = clipl_tensor_numel(acc) / (w->out ? w->out : 1);
        rc = clipl_tensor_view(acc, &out, 2, s2d);
        if (rc)
            return clipl__err_prefix("%s: accum must allow a [rows, out] view", op);
    }
    if ((rc = flatten_rows(x, &x2, &m)))
        goto done;
    if (x2->dt != w->dt || x2->strides[1] != 1) {
        if ((rc = clipl_tensor_to(x2, &xc, w->dt)))
            goto done;
    } else {
        xc = clipl_tensor_retain(x2);
    }
    if (!out) {
        int64_t s2d[2] = {m, w->out};
        out = clipl_tensor_empty(x->dt, 2, s2d);
        if (!out) {
            rc = clipl_errcode();
            goto done;
        }
    }
    if (m > 0) {
        dnnl_memory_desc_t xmd, dmd;
        if ((rc = clipl__dnnl_md(&xmd, xc, op)) || (rc = clipl__dnnl_md(&dmd, out, op)))
            goto done;
        clipl__mm mm = {0};
        mm.src_md = &xmd;
        mm.wei_md = &w->wei_md;
        mm.bias_md = w->bias ? &w->bias_md : NULL;
        mm.dst_md = &dmd;
        mm.src = xc->ptr;
        mm.wei = w->wei;
        mm.bias = w->bias;
        mm.dst = out->ptr;
        mm.act = o->act;
        mm.alpha = o->alpha;
        mm.beta = o->beta;
        mm.scale = o->scale;
        mm.sum_scale = o->sum_scale;
        mm.sum = o->accum != NULL;
        mm.no_ref = !clipl_tensor_is_contiguous(xc);
        rc = clipl__matmul_run(&mm, op);
        if (rc == CLIPL_EUNSUPPORTED && mm.no_ref) {
            /* strided rows: the blocked kernels want a dense x */
            clipl_errclear();
            clipl_tensor *xd = NULL;
            if ((rc = clipl_tensor_clone(xc, &xd)))
                goto done;
            clipl_tensor_release(xc);
            xc = xd;
            if ((rc = clipl__dnnl_md(&xmd, xc, op)))
                goto done;
            mm.src = xc->ptr;
            mm.no_ref = 0;
            rc = clipl__matmul_run(&mm, op);
        }
        if (rc == CLIPL_EUNSUPPORTED) {
            /* the prepared layout does not suit this call (rows or dtypes): use plain weights */
            clipl_errclear();
            size_t bytes = dnnl_memory_desc_get_size(&w->plain_md);
            tmpw = clipl__alloc(bytes);
            if (!tmpw) {
                rc = clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
                goto done;
            }
            if ((rc = clipl__dnnl_reorder(&w->wei_md, w->wei, &w->plain_md, tmpw, op)))
                goto done;
            mm.wei_md = &w->plain_md;
            mm.wei = tmpw;
            rc = clipl__matmul_run(&mm, op);
            clipl__free(tmpw, bytes);
            tmpw = NULL;
        }
        if (rc)
            goto done;
    }
    if (o->accum)
        *dst = clipl_tensor_retain(o->accum);
    else if ((rc = clipl_tensor_view(out, &out2, x->ndim, oshape)) == CLIPL_OK) {
        *dst = out2;
        out2 = NULL;
    }
done:
    clipl_tensor_release(x2);
    clipl_tensor_release(xc);
    clipl_tensor_release(out);
    clipl_tensor_release(out2);
    return rc;
}
