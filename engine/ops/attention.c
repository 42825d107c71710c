/*
 * attention.c - scaled dot-product attention from oneDNN matmuls and softmax:
 *   scores = scale * q @ k^T + mask   (one matmul: the scale is an output scale, the mask is added
 *                                      by a sum post-op into a buffer that holds it)
 *   probs  = softmax(scores, -1)      (f32)
 *   dst    = probs @ v
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"

#include <math.h>

int clipl_attention(const clipl_tensor *q, const clipl_tensor *k, const clipl_tensor *v,
                    const clipl_tensor *mask, clipl_tensor **dst, double scale,
                    clipl_tensor **probs)
{
    if (CLIPL__AG_ON3(q, k, v) || CLIPL__AG_ON1(mask))
        return clipl__ag_attention(q, k, v, mask, dst, scale, probs);
    const char *op = "attention";
    int rc;
    if ((rc = clipl__dnnl_check_float(q, op, "q")) || (rc = clipl__dnnl_check_float(k, op, "k")) ||
        (rc = clipl__dnnl_check_float(v, op, "v")))
        return rc;
    if (mask && (rc = clipl__dnnl_check_float(mask, op, "mask")))
        return rc;
    char s1[96], s2[96], s3[96], s4[96];
    int nd = q->ndim;
    bool ok = nd >= 2 && k->ndim == nd && v->ndim == nd && q->dt == k->dt && q->dt == v->dt;
    if (ok) {
        int64_t T = q->shape[nd - 2], D = q->shape[nd - 1], S = k->shape[nd - 2];
        ok = k->shape[nd - 1] == D && v->shape[nd - 2] == S;
        (void)T;
    }
    if (!ok)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: size mismatch, q [%s] %s, k [%s] %s, v [%s] %s "
                          "(expected [..., T, D], [..., S, D], [..., S, Dv], same dtype)",
                          op, clipl__tshape(s1, sizeof s1, q), clipl_dtype_name(q->dt),
                          clipl__tshape(s2, sizeof s2, k), clipl_dtype_name(k->dt),
                          clipl__tshape(s3, sizeof s3, v), clipl_dtype_name(v->dt));
    int64_t D = q->shape[nd - 1];
    if (!(scale > 0))
        scale = D > 0 ? 1.0 / sqrt((double)D) : 1.0;
    /* the shape of the scores: broadcast batch of q and k, then [T, S] */
    int64_t sshape[CLIPL_MAX_DIMS];
    for (int i = 0; i < nd - 2; i++) {
        int64_t a = q->shape[i], b = k->shape[i], c = v->shape[i];
        int64_t m = a > b ? a : b;
        m = m > c ? m : c;
        if ((a != m && a != 1) || (b != m && b != 1) || (c != m && c != 1))
            return clipl__err(CLIPL_ESHAPE,
                              "%s: batch dims do not broadcast, q [%s], k [%s], v "
                              "[%s]",
                              op, clipl__tshape(s1, sizeof s1, q), clipl__tshape(s2, sizeof s2, k),
                              clipl__tshape(s3, sizeof s3, v));
        sshape[i] = m;
    }
    sshape[nd - 2] = q->shape[nd - 2];
    sshape[nd - 1] = k->shape[nd - 2];
    if (mask) {
        ok = mask->ndim <= nd;
        for (int i = 0; ok && i < mask->ndim; i++) {
            int64_t s = mask->shape[mask->ndim - 1 - i];
            ok = s == 1 || s == sshape[nd - 1 - i];
        }
        if (!ok)
            return clipl__err(CLIPL_ESHAPE,
                              "%s: mask [%s] does not broadcast to the scores [%s] "
                              "(q [%s], k [%s])",
                              op, clipl__tshape(s1, sizeof s1, mask),
                              clipl__shape_str(s4, sizeof s4, nd, sshape),
                              clipl__tshape(s2, sizeof s2, q), clipl__tshape(s3, sizeof s3, k));
    }
    clipl_tensor *kt = NULL, *scores = NULL, *p = NULL, *pc = NULL, *sc = NULL;
    clipl_matmul_opts o = {CLIPL_ACT_NONE, 0, 0, (float)scale, 1, NULL};
    if ((rc = clipl_tensor_transpose(k, &kt, nd - 2, nd - 1)))
        goto done;
    if (mask || q->dt != CLIPL_F32) {
        /* scores start as the mask (or 0) in f32 and the matmul adds into them */
        scores = clipl_tensor_zeros(CLIPL_F32, nd, sshape);
        if (!scores) {
            rc = clipl_errcode();
            goto done;
        }
        if (mask && (rc = clipl_tensor_copy_(scores, mask)))
            goto done;
        o.accum = scores;
        rc = clipl_matmul(q, kt, NULL, &sc, &o);
    } else {
        rc = clipl_matmul(q, kt, NULL, &sc, &o);
    }
    if (rc)
        goto done;
    if ((rc = clipl_softmax(sc, &p, -1, 0)))
        goto done;
    if (v->dt != CLIPL_F32) {
        if ((rc = clipl_tensor_to(p, &pc, v->dt)))
            goto done;
    } else {
        pc = clipl_tensor_retain(p);
    }
    if ((rc = clipl_matmul(pc, v, NULL, dst, NULL)))
        goto done;
    if (probs)
        *probs = clipl_tensor_retain(p);
done:
    if (rc)
        clipl__err_prefix("%s", op);
    clipl_tensor_release(kt);
    clipl_tensor_release(scores);
    clipl_tensor_release(sc);
    clipl_tensor_release(p);
    clipl_tensor_release(pc);
    return rc;
}
