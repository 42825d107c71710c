/*
 * conv.c - 2-d convolution (NCHW, groups, stride, padding, dilation, bias, fused activation) on
 * oneDNN's convolution primitive. The primitive picks its own (blocked) layouts; src, weights and
 * dst are reordered to and from them around the call.
 */
#include "dnnl_util.h"

#include <string.h>

static const clipl_conv2d_opts default_opts = {{1, 1}, {0, 0}, {1, 1}, 1, 0, 0, 0};

/* Runs on buf when md is the layout the primitive wants, else reorders into a temporary. */
typedef struct staged {
    const dnnl_memory_desc_t *md;
    void *ptr;
    void *tmp;
    size_t bytes;
} staged;

static int stage(staged *s, const dnnl_memory_desc_t *user_md, void *user,
                 const dnnl_memory_desc_t *want, int copy_in, const char *op)
{
    s->tmp = NULL;
    s->bytes = 0;
    if (dnnl_memory_desc_equal(user_md, want)) {
        s->md = user_md;
        s->ptr = user;
        return CLIPL_OK;
    }
    s->bytes = dnnl_memory_desc_get_size(want);
    s->tmp = clipl__alloc(s->bytes);
    if (!s->tmp)
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory for %zu bytes", op, s->bytes);
    s->md = want;
    s->ptr = s->tmp;
    return copy_in ? clipl__dnnl_reorder(user_md, user, want, s->tmp, op) : CLIPL_OK;
}

static void unstage(staged *s)
{
    if (s->tmp)
        clipl__free(s->tmp, s->bytes);
    s->tmp = NULL;
}

int clipl_conv2d(const clipl_tensor *src, const clipl_tensor *weights, const clipl_tensor *bias,
                 clipl_tensor **dst, const clipl_conv2d_opts *opts)
{
    const char *op = "conv2d";
    const clipl_conv2d_opts *o = opts ? opts : &default_opts;
    int rc;
    if ((rc = clipl__dnnl_check_float(src, op, "src")) ||
        (rc = clipl__dnnl_check_float(weights, op, "weights")))
        return rc;
    if (bias && (rc = clipl__dnnl_check_float(bias, op, "bias")))
        return rc;
    char s1[96], s2[96];
    int64_t g = o->groups > 0 ? o->groups : 1;
    int64_t sh = o->stride[0] > 0 ? o->stride[0] : 1, sw = o->stride[1] > 0 ? o->stride[1] : 1;
    int64_t dh = o->dilation[0] > 0 ? o->dilation[0] : 1;
    int64_t dw = o->dilation[1] > 0 ? o->dilation[1] : 1;
    int64_t ph = o->padding[0], pw = o->padding[1];
    if (ph < 0 || pw < 0 || o->groups < 0)
        return clipl__err(CLIPL_EINVAL, "%s: negative padding or groups", op);
    if (src->ndim != 4 || weights->ndim != 4)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: expected src [N, C, H, W] and weights [O, C/groups, "
                          "KH, KW], got [%s] and [%s]",
                          op, clipl__tshape(s1, sizeof s1, src),
                          clipl__tshape(s2, sizeof s2, weights));
    int64_t N = src->shape[0], C = src->shape[1], H = src->shape[2], W = src->shape[3];
    int64_t O = weights->shape[0], KH = weights->shape[2], KW = weights->shape[3];
    if (C % g || O % g || weights->shape[1] * g != C)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: size mismatch, src [%s] with weights [%s] and "
                          "groups %lld",
                          op, clipl__tshape(s1, sizeof s1, src),
                          clipl__tshape(s2, sizeof s2, weights), (long long)g);
    if (src->dt != weights->dt)
        return clipl__err(CLIPL_EINVAL, "%s: dtypes differ, src %s and weights %s", op,
                          clipl_dtype_name(src->dt), clipl_dtype_name(weights->dt));
    if (bias && clipl_tensor_numel(bias) != O)
        return clipl__err(CLIPL_ESHAPE, "%s: bias [%s] for %lld output channels", op,
                          clipl__tshape(s1, sizeof s1, bias), (long long)O);
    if (o->act < 0 || o->act >= CLIPL_ACT_COUNT)
        return clipl__err(CLIPL_EINVAL, "%s: unknown activation %d", op, (int)o->act);
    int64_t eh = (KH - 1) * dh + 1, ew = (KW - 1) * dw + 1;
    int64_t OH = (H + 2 * ph - eh) / sh + 1, OW = (W + 2 * pw - ew) / sw + 1;
    if (H + 2 * ph < eh || W + 2 * pw < ew || OH <= 0 || OW <= 0)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: kernel %lldx%lld (dilated %lldx%lld) larger than "
                          "the padded input [%s]",
                          op, (long long)KH, (long long)KW, (long long)eh, (long long)ew,
                          clipl__tshape(s1, sizeof s1, src));
    int64_t oshape[4] = {N, O, OH, OW};
    clipl_tensor *sc = NULL, *wc = NULL, *bc = NULL, *out = clipl_tensor_empty(src->dt, 4, oshape);
    staged ss = {0}, ws = {0}, ds = {0};
    if (!out)
        return clipl_errcode();
    if (clipl_tensor_numel(out) == 0 || C == 0) {
        if (C == 0)
            rc = clipl_tensor_fill_(out, 0);
        *dst = out;
        return rc;
    }
    if ((rc = clipl_tensor_contiguous(src, &sc)) || (rc = clipl_tensor_contiguous(weights, &wc)))
        goto fail;
    if (bias && (rc = clipl_tensor_to(bias, &bc, CLIPL_F32)))
        goto fail;
    dnnl_memory_desc_t smd, wmd, bmd, dmd, sany, wany, dany;
    dnnl_data_type_t dt = clipl__dnnl_dt(src->dt);
    if ((rc = clipl__dnnl_md(&smd, sc, op)) || (rc = clipl__dnnl_md(&dmd, out, op)))
        goto fail;
    if (g == 1) {
        rc = clipl__dnnl_md(&wmd, wc, op);
    } else {
        int64_t gs[5] = {g, O / g, C / g, KH, KW}, gst[5];
        clipl__contiguous_strides(5, gs, gst);
        rc = clipl__dnnl_md_dims(&wmd, 5, gs, gst, wc->dt, op);
    }
    int64_t bsh[1] = {O}, bst[1] = {1};
    if (!rc && bc)
        rc = clipl__dnnl_md_dims(&bmd, 1, bsh, bst, CLIPL_F32, op);
    if (rc)
        goto fail;
    dnnl_dims_t sdims = {N, C, H, W}, ddims = {N, O, OH, OW};
    if ((rc = clipl__dnnl_check(
             dnnl_memory_desc_init_by_tag(&sany, 4, sdims, dt, dnnl_format_tag_any), op,
             "src descriptor")) ||
        (rc = clipl__dnnl_check(
             dnnl_memory_desc_init_by_tag(&wany, wmd.ndims, wmd.dims, dt, dnnl_format_tag_any), op,
             "weights descriptor")) ||
        (rc = clipl__dnnl_check(
             dnnl_memory_desc_init_by_tag(&dany, 4, ddims, dt, dnnl_format_tag_any), op,
             "dst descriptor")))
        goto fail;
    dnnl_dims_t strides = {sh, sw}, dil = {dh - 1, dw - 1}, pl = {ph, pw}, pr = {ph, pw};
    clipl__key k;
    clipl__key_init(&k, "conv2d");
    clipl__key_md(&k, &smd);
    clipl__key_md(&k, &wmd);
    clipl__key_md(&k, bc ? &bmd : NULL);
    clipl__key_md(&k, &dmd);
    for (int i = 0; i < 2; i++) {
        clipl__key_add(&k, strides[i]);
        clipl__key_add(&k, dil[i]);
        clipl__key_add(&k, pl[i]);
    }
    clipl__key_add(&k, o->act);
    clipl__key_addf(&k, o->alpha);
    clipl__key_addf(&k, o->beta);
    clipl__prim *p = clipl__prim_get(&k);
    if (!p) {
        dnnl_engine_t eng = clipl__dnnl_engine(op);
        dnnl_convolution_desc_t desc;
        dnnl_post_ops_t po = NULL;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd;
        if (!eng) {
            rc = clipl_errcode();
            goto fail;
        }
        rc = clipl__dnnl_check(dnnl_dilated_convolution_forward_desc_init(
                                   &desc, dnnl_forward_inference, dnnl_convolution_direct, &sany,
                                   &wany, bc ? &bmd : NULL, &dany, strides, dil, pl, pr),
                               op, "convolution descriptor");
        if (!rc)
            rc = clipl__dnnl_check(dnnl_post_ops_create(&po), op, "post-ops");
        if (!rc)
            rc = clipl__dnnl_append_act(po, o->act, o->alpha, o->beta, op);
        if (!rc)
            rc = clipl__dnnl_attr(&attr, po, op);
        if (!rc)
            rc = clipl__dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL), op,
                                   "convolution primitive descriptor");
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (po)
            dnnl_post_ops_destroy(po);
        if (rc)
            goto fail;
        if (!(p = clipl__prim_put(&k, pd, op))) {
            rc = clipl_errcode();
            goto fail;
        }
    }
    const dnnl_memory_desc_t *want_s = dnnl_primitive_desc_query_md(p->pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *want_w =
        dnnl_primitive_desc_query_md(p->pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *want_d = dnnl_primitive_desc_query_md(p->pd, dnnl_query_dst_md, 0);
    if (!(rc = stage(&ss, &smd, sc->ptr, want_s, 1, op)) &&
        !(rc = stage(&ws, &wmd, wc->ptr, want_w, 1, op)) &&
        !(rc = stage(&ds, &dmd, out->ptr, want_d, 0, op))) {
        clipl__arg args[4];
        int n = 0;
        args[n++] = (clipl__arg){DNNL_ARG_SRC, ss.md, ss.ptr};
        args[n++] = (clipl__arg){DNNL_ARG_WEIGHTS, ws.md, ws.ptr};
        if (bc)
            args[n++] = (clipl__arg){DNNL_ARG_BIAS, &bmd, bc->ptr};
        args[n++] = (clipl__arg){DNNL_ARG_DST, ds.md, ds.ptr};
        rc = clipl__prim_exec(p, n, args, op);
        if (!rc && ds.tmp)
            rc = clipl__dnnl_reorder(ds.md, ds.ptr, &dmd, out->ptr, op);
    }
    unstage(&ss);
    unstage(&ws);
    unstage(&ds);
    clipl__prim_release(p);
    if (rc)
        goto fail;
    clipl_tensor_release(sc);
    clipl_tensor_release(wc);
    clipl_tensor_release(bc);
    *dst = out;
    return CLIPL_OK;
fail:
    clipl_tensor_release(sc);
    clipl_tensor_release(wc);
    clipl_tensor_release(bc);
    clipl_tensor_release(out);
    return rc;
}
