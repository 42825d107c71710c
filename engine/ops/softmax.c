/*
 * softmax.c - softmax and log-softmax along any dim on oneDNN's softmax_v2 primitive.
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"

int clipl_softmax(const clipl_tensor *src, clipl_tensor **dst, int dim, int log)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_softmax(src, dst, dim, log);
    const char *op = log ? "log_softmax" : "softmax";
    int rc = clipl__dnnl_check_float(src, op, "src");
    if (rc)
        return rc;
    int nd = src->ndim ? src->ndim : 1;
    int d = clipl__wrap_dim(dim, nd);
    if (d < 0) {
        char s[96];
        return clipl__err(CLIPL_EINVAL, "%s: dim %d out of range for [%s]", op, dim,
                          clipl__tshape(s, sizeof s, src));
    }
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
    dnnl_alg_kind_t alg = log ? dnnl_softmax_log : dnnl_softmax_accurate;
    clipl__key k;
    clipl__key_init(&k, "softmax");
    clipl__key_md(&k, &md);
    clipl__key_add(&k, d * 2 + (log ? 1 : 0));
    clipl__prim *p = clipl__prim_get(&k);
    if (!p) {
        dnnl_softmax_v2_desc_t desc;
        if ((rc = clipl__dnnl_check(
                 dnnl_softmax_v2_forward_desc_init(&desc, dnnl_forward_inference, alg, &md, &md, d),
                 op, "softmax descriptor")))
            goto fail;
        if (!(p = clipl__prim_new(&k, &desc, op, "softmax primitive descriptor"))) {
            rc = clipl_errcode();
            goto fail;
        }
    }
    clipl__arg args[2] = {{DNNL_ARG_SRC, &md, sc->ptr}, {DNNL_ARG_DST, &md, out->ptr}};
    rc = clipl__prim_exec(p, 2, args, op);
    clipl__prim_release(p);
    if (rc)
        goto fail;
    clipl_tensor_release(sc);
    *dst = out;
    return CLIPL_OK;
fail:
    clipl_tensor_release(sc);
    clipl_tensor_release(out);
    return rc;
}
