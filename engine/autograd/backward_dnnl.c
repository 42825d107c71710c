/*
 * backward_dnnl.c - recording wrappers and backward functions of the oneDNN ops. Eltwise,
 * softmax/log-softmax, layer norm and convolution (data and weights) run on oneDNN's backward
 * primitives (cached like the forward ones); matmul/linear backward are matmuls; batch norm
 * (inference statistics) and attention (from its saved probabilities) are composed from forward
 * ops; pooling runs on oneDNN's backward (a C loop over the windows is the fallback).
 */
#include "../ops/dnnl_util.h"
#include "autograd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)))                                                                            \
            goto out;                                                                              \
    } while (0)

/* A backward primitive for key: fwd_desc (training) gives the hint, bwd_desc the primitive. */
static clipl__prim *bwd_prim(const clipl__key *k, const void *fwd_desc, const void *bwd_desc,
                             const char *op)
{
    clipl__prim *p = clipl__prim_get(k);
    if (p)
        return p;
    dnnl_engine_t eng = clipl__dnnl_engine(op);
    if (!eng)
        return NULL;
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t fpd = NULL, bpd = NULL;
    if (clipl__dnnl_attr(&attr, NULL, op))
        return NULL;
    int rc = CLIPL_OK;
    if (fwd_desc)
        rc = clipl__dnnl_check(dnnl_primitive_desc_create(&fpd, fwd_desc, attr, eng, NULL), op,
                               "forward hint descriptor");
    if (!rc)
        rc = clipl__dnnl_check(dnnl_primitive_desc_create(&bpd, bwd_desc, attr, eng, fpd), op,
                               "backward primitive descriptor");
    dnnl_primitive_attr_destroy(attr);
    if (fpd)
        dnnl_primitive_desc_destroy(fpd);
    if (rc)
        return NULL;
    return clipl__prim_put(k, bpd, op);
}

/* Gets the backward primitive for key (as bwd_prim) and runs it once on args. */
static int bwd_run(const clipl__key *k, const void *fwd_desc, const void *bwd_desc, int n_args,
                   const clipl__arg *args, const char *op)
{
    clipl__prim *p = bwd_prim(k, fwd_desc, bwd_desc, op);
    if (!p)
        return clipl_errcode();
    int rc = clipl__prim_exec(p, n_args, args, op);
    clipl__prim_release(p);
    return rc;
}

static int contig(const clipl_tensor *t, int dt, clipl_tensor **out)
{
    if (t->dt == dt)
        return clipl_tensor_contiguous(t, out);
    return clipl_tensor_to(t, out, dt);
}

/* *out = a new uninitialised tensor; the status, for TRY. */
static int new_empty(int dt, int ndim, const int64_t *shape, clipl_tensor **out)
{
    *out = clipl_tensor_empty(dt, ndim, shape);
    return *out ? CLIPL_OK : clipl_errcode();
}

/* ---- eltwise ---- */

int clipl__eltwise_backward(const clipl_tensor *src, const clipl_tensor *g, clipl_tensor **gsrc,
                            int act, double alpha_d, double beta_d)
{
    const char *op = "eltwise backward";
    float alpha = (float)alpha_d, beta = (float)beta_d;
    dnnl_alg_kind_t alg;
    int rc = clipl__dnnl_act(act, &alpha, &beta, &alg, op);
    if (rc)
        return rc;
    clipl_tensor *sc = NULL, *gc = NULL, *out = NULL;
    TRY(contig(src, src->dt, &sc));
    TRY(contig(g, src->dt, &gc));
    TRY(new_empty(src->dt, src->ndim, src->shape, &out));
    if (clipl_tensor_numel(out) > 0) {
        dnnl_memory_desc_t md;
        TRY(clipl__dnnl_md(&md, out, op));
        clipl__key k;
        clipl__key_init(&k, "eltwise_bwd");
        clipl__key_md(&k, &md);
        clipl__key_add(&k, alg);
        clipl__key_addf(&k, alpha);
        clipl__key_addf(&k, beta);
        dnnl_eltwise_desc_t fd, bd;
        TRY(clipl__dnnl_check(
            dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, alg, &md, alpha, beta), op,
            "descriptor"));
        TRY(clipl__dnnl_check(dnnl_eltwise_backward_desc_init(&bd, alg, &md, &md, alpha, beta), op,
                              "descriptor"));
        clipl__arg args[3] = {{DNNL_ARG_SRC, &md, sc->ptr},
                              {DNNL_ARG_DIFF_DST, &md, gc->ptr},
                              {DNNL_ARG_DIFF_SRC, &md, out->ptr}};
        TRY(bwd_run(&k, &fd, &bd, 3, args, op));
    }
    *gsrc = out;
    out = NULL;
out:
    clipl_tensor_release(sc);
    clipl_tensor_release(gc);
    clipl_tensor_release(out);
    return rc;
}

static int bwd_eltwise(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    return clipl__eltwise_backward(n->saved[0], g, &gin[0], (int)n->iv[0], n->fv[0], n->fv[1]);
}

int clipl__ag_eltwise(const clipl_tensor *src, clipl_tensor **dst, int act, double alpha,
                      double beta)
{
    clipl__grad_off++;
    int rc = clipl_eltwise(src, dst, act, alpha, beta);
    clipl__grad_off--;
    if (rc)
        return rc;
    clipl__node *n = clipl__node_new(act == CLIPL_ACT_NONE ? "clone" : clipl_act_name(act),
                                     bwd_eltwise, 1, &src);
    if (n) {
        n->iv[0] = act;
        n->fv[0] = alpha;
        n->fv[1] = beta;
        if (act == CLIPL_ACT_NONE)
            n->iv[0] = CLIPL_ACT_LINEAR, n->fv[0] = 1, n->fv[1] = 0;
        rc = clipl__node_save(n, 0, src);
    }
    return clipl__node_finish(n, dst, rc);
}

/* ---- softmax ---- */

/* gsrc = the gradient of a softmax (log = 0) or log-softmax (log = 1) along dim d, from its
 * output y (contiguous) and the output's gradient g, on oneDNN's softmax backward. */
static int softmax_bwd(const clipl_tensor *y, const clipl_tensor *g, int d, int log,
                       clipl_tensor **gsrc)
{
    const char *op = "softmax backward";
    int rc;
    clipl_tensor *gc = NULL, *out = NULL;
    TRY(contig(g, y->dt, &gc));
    TRY(new_empty(y->dt, y->ndim, y->shape, &out));
    if (clipl_tensor_numel(out) > 0) {
        dnnl_memory_desc_t md;
        TRY(clipl__dnnl_md(&md, out, op));
        dnnl_alg_kind_t alg = log ? dnnl_softmax_log : dnnl_softmax_accurate;
        clipl__key k;
        clipl__key_init(&k, "softmax_bwd");
        clipl__key_md(&k, &md);
        clipl__key_add(&k, d * 2 + log);
        dnnl_softmax_v2_desc_t fd, bd;
        TRY(clipl__dnnl_check(
            dnnl_softmax_v2_forward_desc_init(&fd, dnnl_forward_training, alg, &md, &md, d), op,
            "descriptor"));
        TRY(clipl__dnnl_check(dnnl_softmax_v2_backward_desc_init(&bd, alg, &md, &md, &md, d), op,
                              "descriptor"));
        clipl__arg args[3] = {{DNNL_ARG_DST, &md, y->ptr},
                              {DNNL_ARG_DIFF_DST, &md, gc->ptr},
                              {DNNL_ARG_DIFF_SRC, &md, out->ptr}};
        TRY(bwd_run(&k, &fd, &bd, 3, args, op));
    }
    *gsrc = out;
    out = NULL;
out:
    clipl_tensor_release(gc);
    clipl_tensor_release(out);
    return rc;
}

static int bwd_softmax(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    return softmax_bwd(n->saved[0], g, (int)n->iv[0], (int)n->iv[1], &gin[0]);
}

int clipl__ag_softmax(const clipl_tensor *src, clipl_tensor **dst, int dim, int log)
{
    clipl__grad_off++;
    int rc = clipl_softmax(src, dst, dim, log);
    clipl__grad_off--;
    if (rc)
        return rc;
    clipl__node *n = clipl__node_new(log ? "log_softmax" : "softmax", bwd_softmax, 1, &src);
    if (n) {
        n->iv[0] = clipl__wrap_dim(dim, src->ndim ? src->ndim : 1);
        n->iv[1] = log != 0;
        rc = clipl__node_save(n, 0, *dst); /* the output is contiguous */
    }
    return clipl__node_finish(n, dst, rc);
}

/* ---- layer norm ---- */

static int bwd_layer_norm(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    const char *op = "layer_norm backward";
    const clipl_tensor *x = n->saved[0], *w = n->saved[1], *mean = n->saved[2], *rstd = n->saved[3];
    int norm_ndim = (int)n->iv[0], rc;
    double eps = n->fv[0];
    bool has_w = n->iv[1], has_b = n->iv[2];
    int lead = x->ndim - norm_ndim;
    int64_t M = 1, N = 1;
    for (int i = 0; i < lead; i++)
        M *= x->shape[i];
    for (int i = lead; i < x->ndim; i++)
        N *= x->shape[i];
    int64_t psh[1] = {N}, msh[1] = {M};
    clipl_tensor *xc = NULL, *gc = NULL, *var = NULL, *wc = NULL, *gx = NULL, *gw = NULL,
                 *gb = NULL, *zb = NULL;
    TRY(contig(x, x->dt, &xc));
    TRY(contig(g, x->dt, &gc));
    if (!(gx = clipl_tensor_empty(x->dt, x->ndim, x->shape)) ||
        !(gw = clipl_tensor_zeros(CLIPL_F32, 1, psh)) ||
        !(gb = clipl_tensor_zeros(CLIPL_F32, 1, psh)) ||
        !(var = clipl_tensor_empty(CLIPL_F32, 1, msh))) {
        rc = clipl_errcode();
        goto out;
    }
    if (M > 0 && N > 0) {
        /* oneDNN wants the variance: 1 / rstd^2 - eps */
        const float *rp = rstd->ptr;
        float *vp = var->ptr;
        for (int64_t i = 0; i < M; i++)
            vp[i] = (float)(1.0 / ((double)rp[i] * rp[i]) - eps);
        if (has_w)
            TRY(contig(w, CLIPL_F32, &wc));
        dnnl_memory_desc_t dmd, smd, pmd;
        int64_t dsh[2] = {M, N}, dst_[2] = {N, 1}, one[1] = {1};
        TRY(clipl__dnnl_md_dims(&dmd, 2, dsh, dst_, x->dt, op));
        TRY(clipl__dnnl_md_dims(&smd, 1, msh, one, CLIPL_F32, op));
        TRY(clipl__dnnl_md_dims(&pmd, 1, psh, one, CLIPL_F32, op));
        unsigned flags = (has_w ? dnnl_use_scale : 0) | (has_b ? dnnl_use_shift : 0);
        clipl__key k;
        clipl__key_init(&k, "layer_norm_bwd");
        clipl__key_md(&k, &dmd);
        clipl__key_add(&k, flags);
        clipl__key_addf(&k, eps);
        dnnl_layer_normalization_desc_t fd, bd;
        TRY(clipl__dnnl_check(dnnl_layer_normalization_forward_desc_init(
                                  &fd, dnnl_forward_training, &dmd, &smd, (float)eps, flags),
                              op, "descriptor"));
        TRY(clipl__dnnl_check(dnnl_layer_normalization_backward_desc_init(
                                  &bd, dnnl_backward, &dmd, &dmd, &smd, (float)eps, flags),
                              op, "descriptor"));
        clipl__arg args[9];
        int na = 0;
        args[na++] = (clipl__arg){DNNL_ARG_SRC, &dmd, xc->ptr};
        args[na++] = (clipl__arg){DNNL_ARG_MEAN, &smd, mean->ptr};
        args[na++] = (clipl__arg){DNNL_ARG_VARIANCE, &smd, var->ptr};
        args[na++] = (clipl__arg){DNNL_ARG_DIFF_DST, &dmd, gc->ptr};
        args[na++] = (clipl__arg){DNNL_ARG_DIFF_SRC, &dmd, gx->ptr};
        if (has_w) {
            args[na++] = (clipl__arg){DNNL_ARG_SCALE, &pmd, wc->ptr};
            args[na++] = (clipl__arg){DNNL_ARG_DIFF_SCALE, &pmd, gw->ptr};
        }
        if (has_b) { /* the shift itself does not enter the gradients; oneDNN asks for it */
            if (!(zb = clipl_tensor_zeros(CLIPL_F32, 1, psh))) {
                rc = clipl_errcode();
                goto out;
            }
            args[na++] = (clipl__arg){DNNL_ARG_SHIFT, &pmd, zb->ptr};
            args[na++] = (clipl__arg){DNNL_ARG_DIFF_SHIFT, &pmd, gb->ptr};
        }
        TRY(bwd_run(&k, &fd, &bd, na, args, op));
    } else if (M > 0 || N > 0) {
        TRY(clipl_tensor_fill_(gx, 0));
    }
    if (clipl__node_needs(n, 0)) {
        gin[0] = gx;
        gx = NULL;
    }
    if (has_w && clipl__node_needs(n, 1))
        TRY(clipl_tensor_reshape(gw, &gin[1], n->in[1].ndim, n->in[1].shape));
    if (has_b && clipl__node_needs(n, 2))
        TRY(clipl_tensor_reshape(gb, &gin[2], n->in[2].ndim, n->in[2].shape));
out:
    clipl_tensor_release(xc);
    clipl_tensor_release(gc);
    clipl_tensor_release(var);
    clipl_tensor_release(wc);
    clipl_tensor_release(gx);
    clipl_tensor_release(gw);
    clipl_tensor_release(gb);
    clipl_tensor_release(zb);
    return rc;
}

int clipl__ag_layer_norm(const clipl_tensor *src, int norm_ndim, const clipl_tensor *weight,
                         const clipl_tensor *bias, clipl_tensor **dst, double eps,
                         clipl_tensor **mean, clipl_tensor **rstd)
{
    clipl_tensor *m = NULL, *r = NULL;
    clipl__grad_off++;
    int rc = clipl_layer_norm(src, norm_ndim, weight, bias, dst, eps, &m, &r);
    clipl__grad_off--;
    if (rc)
        return rc;
    const clipl_tensor *ins[3] = {src, weight, bias};
    clipl__node *n = clipl__node_new("layer_norm", bwd_layer_norm, 3, ins);
    if (n) {
        n->iv[0] = norm_ndim;
        n->iv[1] = weight != NULL;
        n->iv[2] = bias != NULL;
        n->fv[0] = eps;
        if (!(rc = clipl__node_save(n, 0, src)) && !(rc = clipl__node_save(n, 1, weight)) &&
            !(rc = clipl__node_save(n, 2, m)))
            rc = clipl__node_save(n, 3, r);
    }
    rc = clipl__node_finish(n, dst, rc);
    /* the caller gets copies: the saved statistics must not change before the backward */
    if (!rc && mean)
        rc = clipl_tensor_clone(m, mean);
    if (!rc && rstd && (rc = clipl_tensor_clone(r, rstd)) && mean) {
        clipl_tensor_release(*mean);
        *mean = NULL;
    }
    if (rc && *dst) {
        clipl_tensor_release(*dst);
        *dst = NULL;
    }
    clipl_tensor_release(m);
    clipl_tensor_release(r);
    return rc;
}

/* ---- matmul and linear ---- */

/* The end of the matmul, linear and conv2d wrappers: records n on z (as clipl__node_finish), then
 * applies the activation the forward would have fused, which records itself as its own node. */
static int finish_act(clipl__node *n, clipl_tensor *z, int rc, clipl_tensor **dst, int act,
                      double alpha, double beta)
{
    if ((rc = clipl__node_finish(n, &z, rc)))
        return rc;
    if (act == CLIPL_ACT_NONE) {
        *dst = z;
        return CLIPL_OK;
    }
    rc = clipl_eltwise(z, dst, act, alpha, beta);
    clipl_tensor_release(z);
    return rc;
}

static int bwd_matmul(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    const clipl_tensor *a = n->saved[0], *b = n->saved[1];
    double scale = n->fv[0];
    int rc = CLIPL_OK;
    clipl_tensor *gs = NULL, *t = NULL, *p = NULL;
    if (scale != 1)
        TRY(clipl_mul_scalar(g, scale, &gs));
    else
        gs = clipl_tensor_retain((clipl_tensor *)g);
    if (clipl__node_needs(n, 0)) { /* ga = gs @ b^T */
        TRY(clipl_tensor_transpose(b, &t, -1, -2));
        TRY(clipl_matmul(gs, t, NULL, &p, NULL));
        TRY(clipl__sum_to_edge(n, 0, p, &gin[0]));
        clipl_tensor_release(t);
        clipl_tensor_release(p);
        t = p = NULL;
    }
    if (clipl__node_needs(n, 1) && n->in[1].ndim == 2 && a->ndim > 2) {
        /* a 2-d b shared by every batch: one matmul over all rows, no batched temporary */
        int64_t as[2] = {-1, a->shape[a->ndim - 1]}, gsh[2] = {-1, gs->shape[gs->ndim - 1]};
        clipl_tensor *a2 = NULL, *g2 = NULL;
        rc = clipl_tensor_reshape(a, &a2, 2, as);
        if (!rc)
            rc = clipl_tensor_reshape(gs, &g2, 2, gsh);
        if (!rc)
            rc = clipl_tensor_transpose(a2, &t, 0, 1);
        if (!rc)
            rc = clipl_matmul(t, g2, NULL, &gin[1], NULL);
        clipl_tensor_release(a2);
        clipl_tensor_release(g2);
        if (rc)
            goto out;
    } else if (clipl__node_needs(n, 1)) { /* gb = a^T @ gs */
        TRY(clipl_tensor_transpose(a, &t, -1, -2));
        TRY(clipl_matmul(t, gs, NULL, &p, NULL));
        TRY(clipl__sum_to_edge(n, 1, p, &gin[1]));
    }
    if (clipl__node_needs(n, 2)) /* the forward scales (a @ b + bias): oneDNN's output scale */
        TRY(clipl__sum_to_edge(n, 2, gs, &gin[2]));
out:
    clipl_tensor_release(gs);
    clipl_tensor_release(t);
    clipl_tensor_release(p);
    return rc;
}

int clipl__ag_matmul(const clipl_tensor *a, const clipl_tensor *b, const clipl_tensor *bias,
                     clipl_tensor **dst, const clipl_matmul_opts *opts)
{
    if (opts && opts->accum)
        return clipl__err(CLIPL_EINVAL, "matmul: accum (an in-place add into an existing tensor) "
                                        "cannot be recorded for backward; add the result instead");
    clipl_matmul_opts o = {0};
    o.scale = opts && opts->scale != 0 ? opts->scale : 1;
    clipl_tensor *z = NULL;
    clipl__grad_off++;
    int rc = clipl_matmul(a, b, bias, &z, &o);
    clipl__grad_off--;
    if (rc)
        return rc;
    const clipl_tensor *ins[3] = {a, b, bias};
    clipl__node *n = clipl__node_new("matmul", bwd_matmul, 3, ins);
    if (n) {
        n->fv[0] = o.scale;
        if (clipl__ag_req(b))
            rc = clipl__node_save(n, 0, a);
        if (!rc && clipl__ag_req(a))
            rc = clipl__node_save(n, 1, b);
    }
    if (!opts)
        return finish_act(n, z, rc, dst, CLIPL_ACT_NONE, 0, 0);
    return finish_act(n, z, rc, dst, opts->act, opts->alpha, opts->beta);
}

static int bwd_linear(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    const clipl_tensor *x = n->saved[0], *w = n->saved[1];
    int rc = CLIPL_OK;
    clipl_tensor *g2 = NULL, *x2 = NULL, *gt = NULL, *p = NULL;
    int64_t O = n->in[1].shape[0], I = n->in[1].shape[1];
    if (clipl__node_needs(n, 0)) { /* gx = g @ W, as one 2-d product over all rows */
        int64_t gs2[2] = {-1, O};
        TRY(clipl_tensor_reshape(g, &g2, 2, gs2));
        TRY(clipl_matmul(g2, w, NULL, &p, NULL));
        TRY(clipl_tensor_reshape(p, &gin[0], n->in[0].ndim, n->in[0].shape));
        clipl_tensor_release(g2);
        g2 = NULL;
    }
    if (clipl__node_needs(n, 1)) { /* gW = g2^T @ x2 over all leading rows */
        int64_t gs[2] = {-1, O}, xs[2] = {-1, I};
        TRY(clipl_tensor_reshape(g, &g2, 2, gs));
        TRY(clipl_tensor_reshape(x, &x2, 2, xs));
        TRY(clipl_tensor_transpose(g2, &gt, 0, 1));
        TRY(clipl_matmul(gt, x2, NULL, &gin[1], NULL));
    }
    if (clipl__node_needs(n, 2))
        TRY(clipl__sum_to_edge(n, 2, g, &gin[2]));
out:
    clipl_tensor_release(g2);
    clipl_tensor_release(x2);
    clipl_tensor_release(gt);
    clipl_tensor_release(p);
    return rc;
}

int clipl__ag_linear(const clipl_tensor *x, const clipl_tensor *weight, const clipl_tensor *bias,
                     clipl_tensor **dst, int act)
{
    clipl_tensor *z = NULL;
    clipl__grad_off++;
    int rc = clipl_linear(x, weight, bias, &z, CLIPL_ACT_NONE);
    clipl__grad_off--;
    if (rc)
        return rc;
    const clipl_tensor *ins[3] = {x, weight, bias};
    clipl__node *n = clipl__node_new("linear", bwd_linear, 3, ins);
    if (n) {
        if (clipl__ag_req(weight))
            rc = clipl__node_save(n, 0, x);
        if (!rc && clipl__ag_req(x))
            rc = clipl__node_save(n, 1, weight);
    }
    return finish_act(n, z, rc, dst, act, 0, 0);
}

/* ---- convolution ---- */

typedef struct conv_geom {
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    int64_t groups;
} conv_geom;

static int conv_mds(const int64_t *xs, const int64_t *ws, const int64_t *ys, int dt,
                    const conv_geom *G, dnnl_memory_desc_t *xmd, dnnl_memory_desc_t *wmd,
                    dnnl_memory_desc_t *ymd, dnnl_memory_desc_t *bmd, const char *op)
{
    int64_t st[5];
    int rc;
    clipl__contiguous_strides(4, xs, st);
    if ((rc = clipl__dnnl_md_dims(xmd, 4, xs, st, dt, op)))
        return rc;
    clipl__contiguous_strides(4, ys, st);
    if ((rc = clipl__dnnl_md_dims(ymd, 4, ys, st, dt, op)))
        return rc;
    int64_t b1[1] = {ws[0]}, one[1] = {1};
    if ((rc = clipl__dnnl_md_dims(bmd, 1, b1, one, dt, op)))
        return rc;
    if (G->groups == 1) {
        clipl__contiguous_strides(4, ws, st);
        return clipl__dnnl_md_dims(wmd, 4, ws, st, dt, op);
    }
    int64_t w5[5] = {G->groups, ws[0] / G->groups, ws[1], ws[2], ws[3]};
    clipl__contiguous_strides(5, w5, st);
    return clipl__dnnl_md_dims(wmd, 5, w5, st, dt, op);
}

/* Runs the convolution backward bd (data or weights, cached under name) on its 3 args. */
static int conv_bwd_run(const clipl__node *n, const char *name, const dnnl_memory_desc_t *xmd,
                        const dnnl_memory_desc_t *wmd, const dnnl_memory_desc_t *ymd,
                        const void *fd, const void *bd, const clipl__arg *args, const char *op)
{
    clipl__key k;
    clipl__key_init(&k, name);
    clipl__key_md(&k, xmd);
    clipl__key_md(&k, wmd);
    clipl__key_md(&k, ymd);
    for (int i = 0; i < 9; i++) /* the geometry saved by clipl__ag_conv2d */
        clipl__key_add(&k, n->iv[i]);
    return bwd_run(&k, fd, bd, 3, args, op);
}

static int bwd_conv(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    const char *op = "conv2d backward";
    const clipl_tensor *x = n->saved[0], *w = n->saved[1];
    conv_geom G;
    for (int i = 0; i < 2; i++) {
        G.strides[i] = n->iv[i];
        G.dilates[i] = n->iv[2 + i];
        G.pad_l[i] = n->iv[4 + i];
        G.pad_r[i] = n->iv[6 + i];
    }
    G.groups = n->iv[8];
    int dt = n->in[1].dt, rc;
    const int64_t *xs = n->in[0].shape, *ws = n->in[1].shape;
    clipl_tensor *gc = NULL, *xc = NULL, *wc = NULL, *gx = NULL, *gw = NULL, *gb = NULL;
    dnnl_memory_desc_t xmd, wmd, ymd, bmd;
    TRY(conv_mds(xs, ws, g->shape, dt, &G, &xmd, &wmd, &ymd, &bmd, op));
    TRY(contig(g, dt, &gc));
    dnnl_convolution_desc_t fd;
    TRY(clipl__dnnl_check(dnnl_dilated_convolution_forward_desc_init(
                              &fd, dnnl_forward_training, dnnl_convolution_direct, &xmd, &wmd, &bmd,
                              &ymd, G.strides, G.dilates, G.pad_l, G.pad_r),
                          op, "descriptor"));
    if (clipl__node_needs(n, 0)) {
        TRY(contig(w, dt, &wc));
        TRY(new_empty(dt, 4, xs, &gx));
        dnnl_convolution_desc_t bd;
        TRY(clipl__dnnl_check(dnnl_dilated_convolution_backward_data_desc_init(
                                  &bd, dnnl_convolution_direct, &xmd, &wmd, &ymd, G.strides,
                                  G.dilates, G.pad_l, G.pad_r),
                              op, "data descriptor"));
        clipl__arg args[3] = {{DNNL_ARG_DIFF_DST, &ymd, gc->ptr},
                              {DNNL_ARG_WEIGHTS, &wmd, wc->ptr},
                              {DNNL_ARG_DIFF_SRC, &xmd, gx->ptr}};
        TRY(conv_bwd_run(n, "conv_bwd_data", &xmd, &wmd, &ymd, &fd, &bd, args, op));
        gin[0] = gx;
        gx = NULL;
    }
    if (clipl__node_needs(n, 1)) {
        TRY(contig(x, dt, &xc));
        TRY(new_empty(dt, 4, ws, &gw));
        dnnl_convolution_desc_t bd;
        TRY(clipl__dnnl_check(dnnl_dilated_convolution_backward_weights_desc_init(
                                  &bd, dnnl_convolution_direct, &xmd, &wmd, NULL, &ymd, G.strides,
                                  G.dilates, G.pad_l, G.pad_r),
                              op, "weights descriptor"));
        clipl__arg args[3] = {{DNNL_ARG_SRC, &xmd, xc->ptr},
                              {DNNL_ARG_DIFF_DST, &ymd, gc->ptr},
                              {DNNL_ARG_DIFF_WEIGHTS, &wmd, gw->ptr}};
        TRY(conv_bwd_run(n, "conv_bwd_weights", &xmd, &wmd, &ymd, &fd, &bd, args, op));
        gin[1] = gw;
        gw = NULL;
    }
    if (clipl__node_needs(n, 2)) { /* bias: sum over N, OH, OW */
        int64_t s4[4] = {1, g->shape[1], 1, 1};
        TRY(clipl__sum_to(g, 4, s4, &gb));
        TRY(clipl_tensor_reshape(gb, &gin[2], n->in[2].ndim, n->in[2].shape));
    }
out:
    clipl_tensor_release(gc);
    clipl_tensor_release(xc);
    clipl_tensor_release(wc);
    clipl_tensor_release(gx);
    clipl_tensor_release(gw);
    clipl_tensor_release(gb);
    return rc;
}

int clipl__ag_conv2d(const clipl_tensor *src, const clipl_tensor *weights, const clipl_tensor *bias,
                     clipl_tensor **dst, const clipl_conv2d_opts *opts)
{
    clipl_conv2d_opts o = {{1, 1}, {0, 0}, {1, 1}, 1, CLIPL_ACT_NONE, 0, 0};
    if (opts) {
        o = *opts;
        o.act = CLIPL_ACT_NONE;
    }
    clipl_tensor *z = NULL;
    clipl__grad_off++;
    int rc = clipl_conv2d(src, weights, bias, &z, &o);
    clipl__grad_off--;
    if (rc)
        return rc;
    const clipl_tensor *ins[3] = {src, weights, bias};
    clipl__node *n = clipl__node_new("conv2d", bwd_conv, 3, ins);
    if (n) {
        for (int i = 0; i < 2; i++) {
            int64_t s = o.stride[i] > 0 ? o.stride[i] : 1;
            int64_t d = o.dilation[i] > 0 ? o.dilation[i] : 1;
            int64_t k = weights->shape[2 + i], in = src->shape[2 + i], out = z->shape[2 + i];
            n->iv[i] = s;
            n->iv[2 + i] = d - 1; /* oneDNN counts dilation from 0 */
            n->iv[4 + i] = o.padding[i];
            n->iv[6 + i] = (out - 1) * s + (k - 1) * d + 1 - in - o.padding[i];
        }
        n->iv[8] = o.groups > 0 ? o.groups : 1;
        if (!(rc = clipl__node_save(n, 0, src)))
            rc = clipl__node_save(n, 1, weights);
    }
    if (!opts)
        return finish_act(n, z, rc, dst, CLIPL_ACT_NONE, 0, 0);
    return finish_act(n, z, rc, dst, opts->act, opts->alpha, opts->beta);
}

/* ---- batch norm (inference statistics) ---- */

/* [C] viewed as [1, C, 1, ...] for a src of ndim dims. */
static int chan_view(const clipl_tensor *t, int ndim, int64_t C, clipl_tensor **out)
{
    int64_t s[CLIPL_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
        s[i] = i == 1 ? C : 1;
    return clipl_tensor_reshape(t, out, ndim, s);
}

static int bwd_batch_norm(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    const clipl_tensor *x = n->saved[0], *mean = n->saved[1], *var = n->saved[2], *w = n->saved[3];
    int nd = n->in[0].ndim, rc;
    int64_t C = n->in[0].shape[1], s[CLIPL_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        s[i] = i == 1 ? C : 1;
    clipl_tensor *ve = NULL, *rs = NULL, *sc = NULL, *scv = NULL, *rsv = NULL, *mv = NULL,
                 *xc = NULL, *xh = NULL, *gx = NULL, *t = NULL;
    TRY(clipl_add_scalar(var, n->fv[0], &ve));
    TRY(clipl_pow_scalar(ve, -0.5, &rs));
    if (w)
        TRY(clipl_mul(rs, w, &sc));
    else
        sc = clipl_tensor_retain(rs);
    if (clipl__node_needs(n, 0)) {
        TRY(chan_view(sc, nd, C, &scv));
        TRY(clipl_mul(g, scv, &gin[0]));
    }
    if (clipl__node_needs(n, 1)) { /* sum of g * xhat over all but the channel dim */
        TRY(chan_view(mean, nd, C, &mv));
        TRY(chan_view(rs, nd, C, &rsv));
        TRY(clipl_sub(x, mv, &xc));
        TRY(clipl_mul(xc, rsv, &xh));
        TRY(clipl_mul(g, xh, &gx));
        TRY(clipl__sum_to(gx, nd, s, &t));
        TRY(clipl_tensor_reshape(t, &gin[1], n->in[1].ndim, n->in[1].shape));
        clipl_tensor_release(t);
        t = NULL;
    }
    if (clipl__node_needs(n, 2)) {
        TRY(clipl__sum_to(g, nd, s, &t));
        TRY(clipl_tensor_reshape(t, &gin[2], n->in[2].ndim, n->in[2].shape));
    }
out:
    clipl_tensor_release(ve);
    clipl_tensor_release(rs);
    clipl_tensor_release(sc);
    clipl_tensor_release(scv);
    clipl_tensor_release(rsv);
    clipl_tensor_release(mv);
    clipl_tensor_release(xc);
    clipl_tensor_release(xh);
    clipl_tensor_release(gx);
    clipl_tensor_release(t);
    return rc;
}

int clipl__ag_batch_norm(const clipl_tensor *src, const clipl_tensor *mean, const clipl_tensor *var,
                         const clipl_tensor *weight, const clipl_tensor *bias, clipl_tensor **dst,
                         double eps)
{
    clipl__grad_off++;
    int rc = clipl_batch_norm(src, mean, var, weight, bias, dst, eps);
    clipl__grad_off--;
    if (rc)
        return rc;
    const clipl_tensor *ins[3] = {src, weight, bias};
    clipl__node *n = clipl__node_new("batch_norm", bwd_batch_norm, 3, ins);
    if (n) {
        n->fv[0] = eps;
        if (!(rc = clipl__node_save(n, 0, src)) && !(rc = clipl__node_save(n, 1, mean)) &&
            !(rc = clipl__node_save(n, 2, var)))
            rc = clipl__node_save(n, 3, weight);
    }
    return clipl__node_finish(n, dst, rc);
}

/* ---- pooling ---- */

/* The cache key of a pooling primitive: name, the src and dst descriptors, and the algorithm and
 * window of the training forward descriptor fd (which the backward shares). */
static void pool_key(clipl__key *k, const char *name, const dnnl_memory_desc_t *xmd,
                     const dnnl_memory_desc_t *ymd, const dnnl_pooling_v2_desc_t *fd)
{
    clipl__key_init(k, name);
    clipl__key_md(k, xmd);
    clipl__key_md(k, ymd);
    clipl__key_add(k, fd->alg_kind);
    for (int i = 0; i < 2; i++) {
        clipl__key_add(k, fd->strides[i]);
        clipl__key_add(k, fd->kernel[i]);
        clipl__key_add(k, fd->padding[0][i]);
        clipl__key_add(k, fd->padding[1][i]);
    }
}

/* Pooling backward on oneDNN: max pooling runs the forward again in training mode for its
 * workspace (the argmax positions), then the backward primitive scatters g through it; average
 * pooling needs only the backward. Returns CLIPL_EUNSUPPORTED when oneDNN has no implementation. */
static int pool_dnnl(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    const char *op = "pool2d backward";
    int kind = (int)n->iv[0], dt = n->in[0].dt, rc;
    int64_t kh = n->iv[1], kw = n->iv[2], sh = n->iv[3], sw = n->iv[4], ph = n->iv[5],
            pw = n->iv[6];
    const int64_t *xs = n->in[0].shape;
    int64_t H = xs[2], W = xs[3], OH = g->shape[2], OW = g->shape[3];
    int64_t prh = (OH - 1) * sh + kh - H - ph, prw = (OW - 1) * sw + kw - W - pw;
    if (prh < ph)
        prh = ph;
    if (prw < pw)
        prw = pw;
    dnnl_alg_kind_t alg = kind == CLIPL_POOL_MAX   ? dnnl_pooling_max
                          : kind == CLIPL_POOL_AVG ? dnnl_pooling_avg_include_padding
                                                   : dnnl_pooling_avg_exclude_padding;
    dnnl_dims_t strides = {sh, sw}, kernel = {kh, kw}, dil = {0, 0}, pl = {ph, pw}, pr = {prh, prw};
    clipl_tensor *gc = NULL, *xc = NULL, *y = NULL, *gx = NULL;
    void *ws = NULL;
    size_t ws_bytes = 0;
    clipl__prim *pf = NULL, *pb = NULL;
    int64_t xst[4], yst[4];
    clipl__contiguous_strides(4, xs, xst);
    clipl__contiguous_strides(4, g->shape, yst);
    dnnl_memory_desc_t xmd, ymd;
    TRY(clipl__dnnl_md_dims(&xmd, 4, xs, xst, dt, op));
    TRY(clipl__dnnl_md_dims(&ymd, 4, g->shape, yst, dt, op));
    dnnl_pooling_v2_desc_t fd, bd;
    TRY(clipl__dnnl_check(dnnl_pooling_v2_forward_desc_init(&fd, dnnl_forward_training, alg, &xmd,
                                                            &ymd, strides, kernel, dil, pl, pr),
                          op, "descriptor"));
    TRY(clipl__dnnl_check(
        dnnl_pooling_v2_backward_desc_init(&bd, alg, &xmd, &ymd, strides, kernel, dil, pl, pr), op,
        "descriptor"));
    clipl__key k;
    pool_key(&k, "pool_bwd", &xmd, &ymd, &fd);
    if (!(pb = bwd_prim(&k, &fd, &bd, op))) {
        rc = clipl_errcode();
        goto out;
    }
    TRY(contig(g, dt, &gc));
    TRY(new_empty(dt, 4, xs, &gx));
    clipl__arg args[3] = {{DNNL_ARG_DIFF_DST, &ymd, gc->ptr}, {DNNL_ARG_DIFF_SRC, &xmd, gx->ptr}};
    int na = 2;
    if (kind == CLIPL_POOL_MAX) {
        pool_key(&k, "pool_fwd_train", &xmd, &ymd, &fd);
        if (!(pf = bwd_prim(&k, NULL, &fd, op))) {
            rc = clipl_errcode();
            goto out;
        }
        const dnnl_memory_desc_t *wmd =
            dnnl_primitive_desc_query_md(pf->pd, dnnl_query_workspace_md, 0);
        ws_bytes = wmd ? dnnl_memory_desc_get_size(wmd) : 0;
        if (!wmd || !ws_bytes || !(ws = clipl__alloc(ws_bytes))) {
            rc = clipl__err(CLIPL_ENOMEM, "%s: no workspace for max pooling", op);
            goto out;
        }
        TRY(contig(n->saved[0], dt, &xc));
        TRY(new_empty(dt, 4, g->shape, &y));
        clipl__arg fa[3] = {{DNNL_ARG_SRC, &xmd, xc->ptr},
                            {DNNL_ARG_DST, &ymd, y->ptr},
                            {DNNL_ARG_WORKSPACE, wmd, ws}};
        TRY(clipl__prim_exec(pf, 3, fa, op));
        args[na++] = (clipl__arg){DNNL_ARG_WORKSPACE, wmd, ws};
    }
    TRY(clipl__prim_exec(pb, na, args, op));
    gin[0] = gx;
    gx = NULL;
out:
    if (pf)
        clipl__prim_release(pf);
    if (pb)
        clipl__prim_release(pb);
    if (ws)
        clipl__free(ws, ws_bytes);
    clipl_tensor_release(gc);
    clipl_tensor_release(xc);
    clipl_tensor_release(y);
    clipl_tensor_release(gx);
    return rc;
}

/* The same in C (PyTorch's window and divisor rules), for what oneDNN does not implement. */
static int bwd_pool_c(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int kind = (int)n->iv[0], rc;
    int64_t kh = n->iv[1], kw = n->iv[2], sh = n->iv[3], sw = n->iv[4], ph = n->iv[5],
            pw = n->iv[6];
    const int64_t *xs = n->in[0].shape;
    int64_t N = xs[0], Cc = xs[1], H = xs[2], W = xs[3], OH = g->shape[2], OW = g->shape[3];
    clipl_tensor *x = NULL, *gc = NULL, *gx = clipl_tensor_zeros(CLIPL_F32, 4, xs);
    if (!gx)
        return clipl_errcode();
    TRY(contig(g, CLIPL_F32, &gc));
    if (kind == CLIPL_POOL_MAX)
        TRY(contig(n->saved[0], CLIPL_F32, &x));
    const float *gp = gc->ptr, *xp = x ? x->ptr : NULL;
    float *op = gx->ptr;
#pragma omp parallel for schedule(static) if (N * Cc > 1)
    for (int64_t nc = 0; nc < N * Cc; nc++) {
        const float *gpl = gp + nc * OH * OW, *xpl = xp ? xp + nc * H * W : NULL;
        float *opl = op + nc * H * W;
        for (int64_t oh = 0; oh < OH; oh++) {
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
                int64_t h1 = h0 + kh, w1 = w0 + kw;
                float gv = gpl[oh * OW + ow];
                if (kind == CLIPL_POOL_MAX) { /* first maximum in the window (NaN wins) */
                    int64_t best = -1;
                    float bv = 0;
                    for (int64_t h = h0 < 0 ? 0 : h0; h < (h1 < H ? h1 : H); h++)
                        for (int64_t w = w0 < 0 ? 0 : w0; w < (w1 < W ? w1 : W); w++) {
                            float v = xpl[h * W + w];
                            if (best < 0 || v > bv || (v != v && bv == bv)) {
                                best = h * W + w;
                                bv = v;
                            }
                        }
                    if (best >= 0)
                        opl[best] += gv;
                    continue;
                }
                /* average: PyTorch's divisor (window clipped to the padded input, or to the
                 * input itself with count_include_pad = false) */
                int64_t ph1 = h1 < H + ph ? h1 : H + ph, pw1 = w1 < W + pw ? w1 : W + pw;
                int64_t div = (ph1 - h0) * (pw1 - w0);
                int64_t hs = h0 < 0 ? 0 : h0, ws_ = w0 < 0 ? 0 : w0;
                int64_t he = h1 < H ? h1 : H, we = w1 < W ? w1 : W;
                if (kind == CLIPL_POOL_AVG_EXCLUDE_PAD)
                    div = (he - hs) * (we - ws_);
                if (div <= 0)
                    continue;
                float v = gv / (float)div;
                for (int64_t h = hs; h < he; h++)
                    for (int64_t w = ws_; w < we; w++)
                        opl[h * W + w] += v;
            }
        }
    }
    gin[0] = gx;
    gx = NULL;
    rc = CLIPL_OK;
out:
    clipl_tensor_release(x);
    clipl_tensor_release(gc);
    clipl_tensor_release(gx);
    return rc;
}

static int bwd_pool(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    int rc = pool_dnnl(n, g, gin);
    if (rc != CLIPL_EUNSUPPORTED)
        return rc;
    clipl_errclear();
    return bwd_pool_c(n, g, gin);
}

int clipl__ag_pool2d(const clipl_tensor *src, clipl_tensor **dst, int kind, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t ph, int64_t pw, int ceil_mode)
{
    clipl__grad_off++;
    int rc = clipl_pool2d(src, dst, kind, kh, kw, sh, sw, ph, pw, ceil_mode);
    clipl__grad_off--;
    if (rc)
        return rc;
    clipl__node *n =
        clipl__node_new(kind == CLIPL_POOL_MAX ? "max_pool2d" : "avg_pool2d", bwd_pool, 1, &src);
    if (n) {
        int64_t v[7] = {kind, kh, kw, sh > 0 ? sh : kh, sw > 0 ? sw : kw, ph, pw};
        memcpy(n->iv, v, sizeof v);
        if (kind == CLIPL_POOL_MAX)
            rc = clipl__node_save(n, 0, src);
    }
    return clipl__node_finish(n, dst, rc);
}

/* ---- attention ---- */

static int bwd_attention(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin)
{
    const clipl_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *P0 = n->saved[3];
    double scale = n->fv[0];
    int rc;
    clipl_tensor *P = NULL, *t = NULL, *p = NULL, *gP = NULL, *gS = NULL, *gSs = NULL;
    if (P0->dt == g->dt)
        P = clipl_tensor_retain((clipl_tensor *)P0);
    else
        TRY(clipl_tensor_to(P0, &P, g->dt));
    if (clipl__node_needs(n, 2)) { /* gv = P^T @ g */
        TRY(clipl_tensor_transpose(P, &t, -1, -2));
        TRY(clipl_matmul(t, g, NULL, &p, NULL));
        TRY(clipl__sum_to_edge(n, 2, p, &gin[2]));
        clipl_tensor_release(t);
        clipl_tensor_release(p);
        t = p = NULL;
    }
    if (!clipl__node_needs(n, 0) && !clipl__node_needs(n, 1) && !clipl__node_needs(n, 3)) {
        rc = CLIPL_OK;
        goto out;
    }
    /* gS = P * (gP - sum(gP * P, -1)) with gP = g @ v^T: the softmax backward */
    TRY(clipl_tensor_transpose(v, &t, -1, -2));
    TRY(clipl_matmul(g, t, NULL, &gP, NULL));
    clipl_tensor_release(t);
    t = NULL;
    if (!clipl_tensor_is_contiguous(P)) {
        TRY(clipl_tensor_contiguous(P, &t));
        clipl_tensor_release(P);
        P = t;
        t = NULL;
    }
    TRY(softmax_bwd(P, gP, P->ndim - 1, 0, &gS));
    if (clipl__node_needs(n, 3))
        TRY(clipl__sum_to_edge(n, 3, gS, &gin[3]));
    TRY(clipl_mul_scalar(gS, scale, &gSs));
    if (clipl__node_needs(n, 0)) { /* gq = scale gS @ k */
        TRY(clipl_matmul(gSs, k, NULL, &p, NULL));
        TRY(clipl__sum_to_edge(n, 0, p, &gin[0]));
        clipl_tensor_release(p);
        p = NULL;
    }
    if (clipl__node_needs(n, 1)) { /* gk = scale gS^T @ q */
        TRY(clipl_tensor_transpose(gSs, &t, -1, -2));
        TRY(clipl_matmul(t, q, NULL, &p, NULL));
        TRY(clipl__sum_to_edge(n, 1, p, &gin[1]));
    }
out:
    clipl_tensor_release(P);
    clipl_tensor_release(t);
    clipl_tensor_release(p);
    clipl_tensor_release(gP);
    clipl_tensor_release(gS);
    clipl_tensor_release(gSs);
    return rc;
}

int clipl__ag_attention(const clipl_tensor *q, const clipl_tensor *k, const clipl_tensor *v,
                        const clipl_tensor *mask, clipl_tensor **dst, double scale,
                        clipl_tensor **probs)
{
    clipl_tensor *P = NULL;
    clipl__grad_off++;
    int rc = clipl_attention(q, k, v, mask, dst, scale, &P);
    clipl__grad_off--;
    if (rc)
        return rc;
    if (!(scale > 0)) {
        int64_t D = q->shape[q->ndim - 1];
        scale = D > 0 ? 1.0 / sqrt((double)D) : 1.0;
    }
    const clipl_tensor *ins[4] = {q, k, v, mask};
    clipl__node *n = clipl__node_new("attention", bwd_attention, 4, ins);
    if (n) {
        n->fv[0] = scale;
        if (!(rc = clipl__node_save(n, 0, q)) && !(rc = clipl__node_save(n, 1, k)) &&
            !(rc = clipl__node_save(n, 2, v)))
            rc = clipl__node_save(n, 3, P);
    }
    rc = clipl__node_finish(n, dst, rc);
    if (!rc && probs && (rc = clipl_tensor_clone(P, probs))) { /* a copy: P is saved */
        clipl_tensor_release(*dst);
        *dst = NULL;
    }
    clipl_tensor_release(P);
    return rc;
}
