/*
 * norm.c - layer norm and batch norm (inference) on oneDNN, and folding a batch norm into the
 * convolution before it; a row-wise layer norm that also converts to the compute dtype.
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"
#include "plain.h"

#include <math.h>
#include <stdlib.h>

/* A contiguous f32 copy (or the tensor itself) of an optional per-channel parameter with n
 * elements; *out stays NULL when t is NULL. */
static int param_f32(const clipl_tensor *t, int64_t n, clipl_tensor **out, const char *op,
                     const char *arg)
{
    *out = NULL;
    if (!t)
        return CLIPL_OK;
    int rc = clipl__dnnl_check_float(t, op, arg);
    if (rc)
        return rc;
    if (clipl_tensor_numel(t) != n) {
        char s[96];
        return clipl__err(CLIPL_ESHAPE, "%s: %s is [%s], expected %lld elements", op, arg,
                          clipl__tshape(s, sizeof s, t), (long long)n);
    }
    if (t->dt == CLIPL_F32 && clipl_tensor_is_contiguous(t)) {
        *out = clipl_tensor_retain((clipl_tensor *)t);
        return CLIPL_OK;
    }
    return clipl_tensor_to(t, out, CLIPL_F32);
}

int clipl_layer_norm(const clipl_tensor *src, int norm_ndim, const clipl_tensor *weight,
                     const clipl_tensor *bias, clipl_tensor **dst, double eps, clipl_tensor **mean,
                     clipl_tensor **rstd)
{
    if (CLIPL__AG_ON3(src, weight, bias))
        return clipl__ag_layer_norm(src, norm_ndim, weight, bias, dst, eps, mean, rstd);
    const char *op = "layer_norm";
    int rc = clipl__dnnl_check_float(src, op, "src");
    if (rc)
        return rc;
    char s1[96];
    if (norm_ndim < 1 || norm_ndim > src->ndim)
        return clipl__err(CLIPL_ESHAPE, "%s: cannot normalise the last %d dims of [%s]", op,
                          norm_ndim, clipl__tshape(s1, sizeof s1, src));
    if (!(eps >= 0))
        return clipl__err(CLIPL_EINVAL, "%s: eps must be >= 0, got %g", op, eps);
    int lead = src->ndim - norm_ndim;
    int64_t M = 1, N = 1;
    for (int i = 0; i < lead; i++)
        M *= src->shape[i];
    for (int i = lead; i < src->ndim; i++)
        N *= src->shape[i];
    clipl_tensor *sc = NULL, *out = NULL, *w = NULL, *b = NULL, *mt = NULL, *vt = NULL;
    if ((rc = param_f32(weight, N, &w, op, "weight")) || (rc = param_f32(bias, N, &b, op, "bias")))
        goto fail;
    out = clipl_tensor_empty(src->dt, src->ndim, src->shape);
    if (!out) {
        rc = clipl_errcode();
        goto fail;
    }
    bool stats = mean || rstd;
    if (stats) {
        mt = clipl_tensor_empty(CLIPL_F32, lead, src->shape);
        vt = clipl_tensor_empty(CLIPL_F32, lead, src->shape);
        if (!mt || !vt) {
            rc = clipl_errcode();
            goto fail;
        }
    }
    if (M > 0 && N > 0) {
        if ((rc = clipl_tensor_contiguous(src, &sc)))
            goto fail;
        dnnl_memory_desc_t dmd, smd, pmd;
        int64_t dsh[2] = {M, N}, dst_[2] = {N, 1}, ssh[1] = {M}, sst[1] = {1}, psh[1] = {N};
        if ((rc = clipl__dnnl_md_dims(&dmd, 2, dsh, dst_, src->dt, op)) ||
            (rc = clipl__dnnl_md_dims(&smd, 1, ssh, sst, CLIPL_F32, op)) ||
            (rc = clipl__dnnl_md_dims(&pmd, 1, psh, sst, CLIPL_F32, op)))
            goto fail;
        unsigned flags = (w ? dnnl_use_scale : 0) | (b ? dnnl_use_shift : 0);
        dnnl_prop_kind_t prop = stats ? dnnl_forward_training : dnnl_forward_inference;
        clipl__key k;
        clipl__key_init(&k, "layer_norm");
        clipl__key_md(&k, &dmd);
        clipl__key_add(&k, flags * 4 + (stats ? 1 : 0));
        clipl__key_addf(&k, eps);
        clipl__prim *p = clipl__prim_get(&k);
        if (!p) {
            dnnl_layer_normalization_desc_t desc;
            if ((rc = clipl__dnnl_check(dnnl_layer_normalization_forward_desc_init(
                                            &desc, prop, &dmd, &smd, (float)eps, flags),
                                        op, "layer norm descriptor")))
                goto fail;
            if (!(p = clipl__prim_new(&k, &desc, op, "layer norm primitive descriptor"))) {
                rc = clipl_errcode();
                goto fail;
            }
        }
        clipl__arg args[6];
        int n = 0;
        args[n++] = (clipl__arg){DNNL_ARG_SRC, &dmd, sc->ptr};
        args[n++] = (clipl__arg){DNNL_ARG_DST, &dmd, out->ptr};
        if (w)
            args[n++] = (clipl__arg){DNNL_ARG_SCALE, &pmd, w->ptr};
        if (b)
            args[n++] = (clipl__arg){DNNL_ARG_SHIFT, &pmd, b->ptr};
        if (stats) {
            args[n++] = (clipl__arg){DNNL_ARG_MEAN, &smd, mt->ptr};
            args[n++] = (clipl__arg){DNNL_ARG_VARIANCE, &smd, vt->ptr};
        }
        rc = clipl__prim_exec(p, n, args, op);
        clipl__prim_release(p);
        if (rc)
            goto fail;
    } else if (stats) {
        clipl_tensor_fill_(mt, N == 0 ? NAN : 0);
        clipl_tensor_fill_(vt, N == 0 ? NAN : 0);
    }
    if (stats) {
        /* variance -> 1 / sqrt(var + eps) */
        float *v = vt->ptr;
        for (int64_t i = 0; i < M; i++)
            v[i] = (float)(1.0 / sqrt((double)v[i] + eps));
    }
    if (mean)
        *mean = clipl_tensor_retain(mt);
    if (rstd)
        *rstd = clipl_tensor_retain(vt);
    *dst = out;
    out = NULL;
fail:
    clipl_tensor_release(sc);
    clipl_tensor_release(out);
    clipl_tensor_release(w);
    clipl_tensor_release(b);
    clipl_tensor_release(mt);
    clipl_tensor_release(vt);
    return rc;
}

int clipl_batch_norm(const clipl_tensor *src, const clipl_tensor *mean, const clipl_tensor *var,
                     const clipl_tensor *weight, const clipl_tensor *bias, clipl_tensor **dst,
                     double eps)
{
    if (CLIPL__AG_ON3(src, weight, bias))
        return clipl__ag_batch_norm(src, mean, var, weight, bias, dst, eps);
    const char *op = "batch_norm";
    int rc = clipl__dnnl_check_float(src, op, "src");
    if (rc)
        return rc;
    char s1[96];
    if (src->ndim < 2 || src->ndim > 5)
        return clipl__err(CLIPL_ESHAPE, "%s: src must be [N, C, ...] with 2 to 5 dims, got [%s]",
                          op, clipl__tshape(s1, sizeof s1, src));
    if (!mean || !var)
        return clipl__err(CLIPL_EINVAL, "%s: running mean and var are required", op);
    if (!(eps >= 0))
        return clipl__err(CLIPL_EINVAL, "%s: eps must be >= 0, got %g", op, eps);
    int64_t C = src->shape[1];
    clipl_tensor *sc = NULL, *out = NULL, *m = NULL, *v = NULL, *w = NULL, *b = NULL;
    if ((rc = param_f32(mean, C, &m, op, "mean")) || (rc = param_f32(var, C, &v, op, "var")) ||
        (rc = param_f32(weight, C, &w, op, "weight")) || (rc = param_f32(bias, C, &b, op, "bias")))
        goto fail;
    out = clipl_tensor_empty(src->dt, src->ndim, src->shape);
    if (!out) {
        rc = clipl_errcode();
        goto fail;
    }
    if (clipl_tensor_numel(out) > 0) {
        if ((rc = clipl_tensor_contiguous(src, &sc)))
            goto fail;
        dnnl_memory_desc_t dmd, pmd;
        int64_t psh[1] = {C}, pst[1] = {1};
        if ((rc = clipl__dnnl_md(&dmd, out, op)) ||
            (rc = clipl__dnnl_md_dims(&pmd, 1, psh, pst, CLIPL_F32, op)))
            goto fail;
        unsigned flags =
            dnnl_use_global_stats | (w ? dnnl_use_scale : 0) | (b ? dnnl_use_shift : 0);
        clipl__key k;
        clipl__key_init(&k, "batch_norm");
        clipl__key_md(&k, &dmd);
        clipl__key_add(&k, flags);
        clipl__key_addf(&k, eps);
        clipl__prim *p = clipl__prim_get(&k);
        if (!p) {
            dnnl_batch_normalization_desc_t desc;
            if ((rc = clipl__dnnl_check(dnnl_batch_normalization_forward_desc_init(
                                            &desc, dnnl_forward_inference, &dmd, (float)eps, flags),
                                        op, "batch norm descriptor")))
                goto fail;
            if (!(p = clipl__prim_new(&k, &desc, op, "batch norm primitive descriptor"))) {
                rc = clipl_errcode();
                goto fail;
            }
        }
        clipl__arg args[6];
        int n = 0;
        args[n++] = (clipl__arg){DNNL_ARG_SRC, &dmd, sc->ptr};
        args[n++] = (clipl__arg){DNNL_ARG_DST, &dmd, out->ptr};
        args[n++] = (clipl__arg){DNNL_ARG_MEAN, &pmd, m->ptr};
        args[n++] = (clipl__arg){DNNL_ARG_VARIANCE, &pmd, v->ptr};
        if (w)
            args[n++] = (clipl__arg){DNNL_ARG_SCALE, &pmd, w->ptr};
        if (b)
            args[n++] = (clipl__arg){DNNL_ARG_SHIFT, &pmd, b->ptr};
        rc = clipl__prim_exec(p, n, args, op);
        clipl__prim_release(p);
        if (rc)
            goto fail;
    }
    *dst = out;
    out = NULL;
fail:
    clipl_tensor_release(sc);
    clipl_tensor_release(out);
    clipl_tensor_release(m);
    clipl_tensor_release(v);
    clipl_tensor_release(w);
    clipl_tensor_release(b);
    return rc;
}

int clipl_fold_batch_norm(const clipl_tensor *weights, const clipl_tensor *bias,
                          const clipl_tensor *mean, const clipl_tensor *var,
                          const clipl_tensor *gamma, const clipl_tensor *beta, double eps,
                          clipl_tensor **w_out, clipl_tensor **b_out)
{
    const char *op = "fold_batch_norm";
    int rc = clipl__dnnl_check_float(weights, op, "weights");
    if (rc)
        return rc;
    char s1[96];
    if (weights->ndim < 1)
        return clipl__err(CLIPL_ESHAPE, "%s: weights must be [O, ...], got [%s]", op,
                          clipl__tshape(s1, sizeof s1, weights));
    if (!mean || !var)
        return clipl__err(CLIPL_EINVAL, "%s: running mean and var are required", op);
    int64_t O = weights->shape[0];
    int64_t per = O ? clipl_tensor_numel(weights) / O : 0;
    clipl_tensor *m = NULL, *v = NULL, *g = NULL, *be = NULL, *bi = NULL, *wo = NULL, *bo = NULL;
    double *wd = NULL;
    if ((rc = param_f32(mean, O, &m, op, "mean")) || (rc = param_f32(var, O, &v, op, "var")) ||
        (rc = param_f32(gamma, O, &g, op, "gamma")) || (rc = param_f32(beta, O, &be, op, "beta")) ||
        (rc = param_f32(bias, O, &bi, op, "bias")))
        goto fail;
    int64_t n = clipl_tensor_numel(weights);
    wd = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!wd) {
        rc = clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
        goto fail;
    }
    if ((rc = clipl_tensor_to_doubles(weights, wd, n)))
        goto fail;
    int bdt = weights->dt == CLIPL_F32 ? CLIPL_F32 : weights->dt;
    wo = clipl_tensor_empty(weights->dt, weights->ndim, weights->shape);
    bo = clipl_tensor_empty(bdt, 1, &O);
    if (!wo || !bo) {
        rc = clipl_errcode();
        goto fail;
    }
    const float *mp = m->ptr, *vp = v->ptr;
    for (int64_t o = 0; o < O; o++) {
        double gm = g ? ((const float *)g->ptr)[o] : 1.0;
        double f = gm / sqrt((double)vp[o] + eps);
        for (int64_t i = 0; i < per; i++)
            clipl__store((char *)wo->ptr + (size_t)(o * per + i) * (size_t)clipl_dtype_size(wo->dt),
                         wo->dt, wd[o * per + i] * f);
        double b0 = bi ? ((const float *)bi->ptr)[o] : 0.0;
        double bb = be ? ((const float *)be->ptr)[o] : 0.0;
        clipl__store((char *)bo->ptr + (size_t)o * (size_t)clipl_dtype_size(bdt), bdt,
                     (b0 - mp[o]) * f + bb);
    }
    *w_out = wo;
    *b_out = bo;
    wo = bo = NULL;
fail:
    free(wd);
    clipl_tensor_release(m);
    clipl_tensor_release(v);
    clipl_tensor_release(g);
    clipl_tensor_release(be);
    clipl_tensor_release(bi);
    clipl_tensor_release(wo);
    clipl_tensor_release(bo);
    return rc;
}

/* ---- layer norm over rows for the encoders ------------------------------------------------------
 * The residual stream is f32 and the matmul after each layer norm wants the compute dtype: one
 * pass per row normalises and converts (oneDNN 2.6's layer norm needs src and dst of one dtype,
 * so the bf16 path otherwise paid a second pass over the activations). */

__attribute__((target_clones("avx512f", "avx2", "default"))) static void
ln_row(const float *x, const float *w, const float *b, int64_t n, float eps, void *dst, int bf16)
{
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    const float mean = sum / (float)n;
    float ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < n; i++)
        ss += (x[i] - mean) * (x[i] - mean);
    const float rstd = 1.0f / sqrtf(ss / (float)n + eps);
    if (bf16) {
        uint16_t *o = dst;
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            o[i] = plain_f32_to_bf16((x[i] - mean) * rstd * w[i] + b[i]);
    } else {
        float *o = dst;
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            o[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

int clipl__layer_norm_rows(const clipl_tensor *x, const clipl_tensor *weight,
                           const clipl_tensor *bias, double eps, int dtype, clipl_tensor **dst)
{
    const char *op = "layer_norm_rows";
    char s1[96], s2[96];
    if (!x || !weight || !bias || x->dt != CLIPL_F32 || weight->dt != CLIPL_F32 ||
        bias->dt != CLIPL_F32 || x->ndim < 1 || !clipl_tensor_is_contiguous(x) ||
        !clipl_tensor_is_contiguous(weight) || !clipl_tensor_is_contiguous(bias) ||
        clipl_tensor_numel(weight) != x->shape[x->ndim - 1] ||
        clipl_tensor_numel(bias) != x->shape[x->ndim - 1])
        return clipl__err(CLIPL_EINVAL,
                          "%s: x [..., W], weight [W] and bias [W] must be contiguous f32, got "
                          "x [%s], weight [%s]",
                          op, x ? clipl__tshape(s1, sizeof s1, x) : "NULL",
                          weight ? clipl__tshape(s2, sizeof s2, weight) : "NULL");
    if (dtype != CLIPL_F32 && dtype != CLIPL_BF16)
        return clipl__err(CLIPL_EINVAL, "%s: dtype must be f32 or bf16, got %s", op,
                          clipl_dtype_name(dtype));
    clipl_tensor *out = clipl_tensor_empty(dtype, x->ndim, x->shape);
    if (!out)
        return clipl_errcode();
    const int64_t n = x->shape[x->ndim - 1], rows = n ? clipl_tensor_numel(x) / n : 0;
    const size_t esize = (size_t)clipl_dtype_size(dtype);
    const float *xp = x->ptr, *wp = weight->ptr, *bp = bias->ptr;
    char *o = out->ptr;
#pragma omp parallel for schedule(static) if (rows * n > 32768)
    for (int64_t r = 0; r < rows; r++)
        ln_row(xp + r * n, wp, bp, n, (float)eps, o + (size_t)(r * n) * esize, dtype == CLIPL_BF16);
    *dst = out;
    return CLIPL_OK;
}
