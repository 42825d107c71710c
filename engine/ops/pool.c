/*
 * pool.c - 2-d max and average pooling on oneDNN's pooling primitive (NCHW, or channels-last kept
 * channels-last for the ResNet tower).
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"

/* Output size as PyTorch computes it; returns -1 when the window does not fit. */
static int64_t pool_out(int64_t in, int64_t k, int64_t s, int64_t p, int ceil_mode)
{
    int64_t span = in + 2 * p - k;
    if (span < 0)
        return -1;
    int64_t o = (ceil_mode ? (span + s - 1) / s : span / s) + 1;
    /* the last window must start inside the input or the left padding */
    if (ceil_mode && (o - 1) * s >= in + p)
        o--;
    return o;
}

static int pool_run(const clipl_tensor *src, clipl_tensor **dst, int kind, int64_t kh, int64_t kw,
                    int64_t sh, int64_t sw, int64_t ph, int64_t pw, int ceil_mode, int keep_nhwc)
{
    const char *op = kind == CLIPL_POOL_MAX ? "max_pool2d" : "avg_pool2d";
    int rc = clipl__dnnl_check_float(src, op, "src");
    if (rc)
        return rc;
    char s1[96];
    if (kind < CLIPL_POOL_MAX || kind > CLIPL_POOL_AVG_EXCLUDE_PAD)
        return clipl__err(CLIPL_EINVAL, "pool2d: unknown kind %d", kind);
    if (src->ndim != 4)
        return clipl__err(CLIPL_ESHAPE, "%s: src must be [N, C, H, W], got [%s]", op,
                          clipl__tshape(s1, sizeof s1, src));
    if (sh <= 0)
        sh = kh;
    if (sw <= 0)
        sw = kw;
    if (kh <= 0 || kw <= 0 || ph < 0 || pw < 0 || sh <= 0 || sw <= 0)
        return clipl__err(CLIPL_EINVAL,
                          "%s: bad kernel %lldx%lld, stride %lldx%lld or padding "
                          "%lldx%lld",
                          op, (long long)kh, (long long)kw, (long long)sh, (long long)sw,
                          (long long)ph, (long long)pw);
    if (2 * ph > kh || 2 * pw > kw)
        return clipl__err(CLIPL_EINVAL,
                          "%s: padding %lldx%lld must be at most half the kernel "
                          "%lldx%lld",
                          op, (long long)ph, (long long)pw, (long long)kh, (long long)kw);
    int64_t H = src->shape[2], W = src->shape[3];
    int64_t OH = pool_out(H, kh, sh, ph, ceil_mode), OW = pool_out(W, kw, sw, pw, ceil_mode);
    if (OH <= 0 || OW <= 0)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: kernel %lldx%lld (padding %lldx%lld) larger than "
                          "the input [%s]",
                          op, (long long)kh, (long long)kw, (long long)ph, (long long)pw,
                          clipl__tshape(s1, sizeof s1, src));
    /* right padding that makes oneDNN produce OH x OW (ceil_mode may need more than ph) */
    int64_t prh = (OH - 1) * sh + kh - H - ph, prw = (OW - 1) * sw + kw - W - pw;
    if (prh < ph)
        prh = ph;
    if (prw < pw)
        prw = pw;
    if (kind == CLIPL_POOL_AVG && (prh > ph || prw > pw))
        return clipl__err(CLIPL_EUNSUPPORTED,
                          "%s: ceil_mode with count_include_pad is not "
                          "supported",
                          op);
    int64_t oshape[4] = {src->shape[0], src->shape[1], OH, OW};
    int nhwc = keep_nhwc && clipl__tensor_is_nhwc(src);
    clipl_tensor *sc = NULL;
    clipl_tensor *out =
        nhwc ? clipl__tensor_empty_nhwc(src->dt, oshape) : clipl_tensor_empty(src->dt, 4, oshape);
    if (!out)
        return clipl_errcode();
    if (clipl_tensor_numel(out) == 0) {
        *dst = out;
        return CLIPL_OK;
    }
    if (!nhwc && (rc = clipl_tensor_contiguous(src, &sc)))
        goto fail;
    const clipl_tensor *in = nhwc ? src : sc;
    dnnl_memory_desc_t smd, dmd;
    if ((rc = clipl__dnnl_md(&smd, in, op)) || (rc = clipl__dnnl_md(&dmd, out, op)))
        goto fail;
    dnnl_alg_kind_t alg = kind == CLIPL_POOL_MAX   ? dnnl_pooling_max
                          : kind == CLIPL_POOL_AVG ? dnnl_pooling_avg_include_padding
                                                   : dnnl_pooling_avg_exclude_padding;
    dnnl_dims_t strides = {sh, sw}, kernel = {kh, kw}, dil = {0, 0}, pl = {ph, pw}, pr = {prh, prw};
    clipl__key k;
    clipl__key_init(&k, "pool2d");
    clipl__key_md(&k, &smd);
    clipl__key_md(&k, &dmd);
    clipl__key_add(&k, alg);
    for (int i = 0; i < 2; i++) {
        clipl__key_add(&k, strides[i]);
        clipl__key_add(&k, kernel[i]);
        clipl__key_add(&k, pl[i]);
        clipl__key_add(&k, pr[i]);
    }
    clipl__prim *p = clipl__prim_get(&k);
    if (!p) {
        dnnl_pooling_v2_desc_t desc;
        if ((rc = clipl__dnnl_check(dnnl_pooling_v2_forward_desc_init(&desc, dnnl_forward_inference,
                                                                      alg, &smd, &dmd, strides,
                                                                      kernel, dil, pl, pr),
                                    op, "pooling descriptor")))
            goto fail;
        if (!(p = clipl__prim_new(&k, &desc, op, "pooling primitive descriptor"))) {
            rc = clipl_errcode();
            goto fail;
        }
    }
    clipl__arg args[2] = {{DNNL_ARG_SRC, &smd, in->ptr}, {DNNL_ARG_DST, &dmd, out->ptr}};
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

int clipl_pool2d(const clipl_tensor *src, clipl_tensor **dst, int kind, int64_t kh, int64_t kw,
                 int64_t sh, int64_t sw, int64_t ph, int64_t pw, int ceil_mode)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_pool2d(src, dst, kind, kh, kw, sh, sw, ph, pw, ceil_mode);
    return pool_run(src, dst, kind, kh, kw, sh, sw, ph, pw, ceil_mode, 0);
}

int clipl__pool2d_nhwc(const clipl_tensor *src, clipl_tensor **dst, int kind, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int ceil_mode)
{
    return pool_run(src, dst, kind, kh, kw, sh, sw, ph, pw, ceil_mode, 1);
}
