/*
 * eltwise.c - elementwise activations on oneDNN's eltwise primitive (relu, gelu, quick_gelu,
 * sigmoid, tanh, exp, log, sqrt, abs, clamp, linear, pow, ...).
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"

/* dst = act(src) for two buffers of the same dense geometry md. */
static int eltwise_run(const dnnl_memory_desc_t *md, const void *src, void *dst, int act,
                       float alpha, float beta, const char *op)
{
    dnnl_alg_kind_t alg;
    int rc = clipl__dnnl_act(act, &alpha, &beta, &alg, op);
    if (rc)
        return rc;
    clipl__key k;
    clipl__key_init(&k, "eltwise");
    clipl__key_md(&k, md);
    clipl__key_add(&k, alg);
    clipl__key_addf(&k, alpha);
    clipl__key_addf(&k, beta);
    clipl__prim *p = clipl__prim_get(&k);
    if (!p) {
        dnnl_eltwise_desc_t desc;
        rc = clipl__dnnl_check(
            dnnl_eltwise_forward_desc_init(&desc, dnnl_forward_inference, alg, md, alpha, beta), op,
            "eltwise descriptor");
        if (rc)
            return rc;
        if (!(p = clipl__prim_new(&k, &desc, op, "eltwise primitive descriptor")))
            return clipl_errcode();
    }
    clipl__arg args[2] = {{DNNL_ARG_SRC, md, (void *)src}, {DNNL_ARG_DST, md, dst}};
    rc = clipl__prim_exec(p, 2, args, op);
    clipl__prim_release(p);
    return rc;
}

static const char *act_op(int act)
{
    return act > 0 && act < CLIPL_ACT_COUNT ? clipl_act_name(act) : "eltwise";
}

int clipl_eltwise(const clipl_tensor *src, clipl_tensor **dst, int act, double alpha, double beta)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_eltwise(src, dst, act, alpha, beta);
    const char *op = act_op(act);
    int rc = clipl__dnnl_check_float(src, op, "src");
    if (rc)
        return rc;
    if (act < 0 || act >= CLIPL_ACT_COUNT)
        return clipl__err(CLIPL_EINVAL, "eltwise: unknown activation %d", act);
    if (act == CLIPL_ACT_NONE)
        return clipl_tensor_clone(src, dst);
    clipl_tensor *sc = NULL, *out = clipl_tensor_empty(src->dt, src->ndim, src->shape);
    if (!out)
        return clipl_errcode();
    if (clipl_tensor_numel(out) == 0) {
        *dst = out;
        return CLIPL_OK;
    }
    if ((rc = clipl_tensor_contiguous(src, &sc)))
        goto fail;
    dnnl_memory_desc_t md;
    if ((rc = clipl__dnnl_md(&md, out, op)))
        goto fail;
    if ((rc = eltwise_run(&md, sc->ptr, out->ptr, act, (float)alpha, (float)beta, op)))
        goto fail;
    clipl_tensor_release(sc);
    *dst = out;
    return CLIPL_OK;
fail:
    clipl_tensor_release(sc);
    clipl_tensor_release(out);
    return rc;
}

int clipl_eltwise_(clipl_tensor *t, int act, double alpha, double beta)
{
    if (clipl__ag_inplace("eltwise_", t, NULL))
        return clipl_errcode();
    const char *op = act_op(act);
    int rc = clipl__dnnl_check_float(t, op, "t");
    if (rc)
        return rc;
    if ((rc = clipl__check_writable(t, op)))
        return rc;
    if (act < 0 || act >= CLIPL_ACT_COUNT)
        return clipl__err(CLIPL_EINVAL, "eltwise: unknown activation %d", act);
    if (act == CLIPL_ACT_NONE || clipl_tensor_numel(t) == 0)
        return CLIPL_OK;
    if (!clipl_tensor_is_contiguous(t)) {
        clipl_tensor *r = NULL;
        if ((rc = clipl_eltwise(t, &r, act, alpha, beta)))
            return rc;
        rc = clipl_tensor_copy_(t, r);
        clipl_tensor_release(r);
        return rc;
    }
    dnnl_memory_desc_t md;
    int64_t st[CLIPL_MAX_DIMS];
    clipl__contiguous_strides(t->ndim, t->shape, st);
    if ((rc = clipl__dnnl_md_dims(&md, t->ndim, t->shape, st, t->dt, op)))
        return rc;
    return eltwise_run(&md, t->ptr, t->ptr, act, (float)alpha, (float)beta, op);
}
