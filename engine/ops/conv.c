/*
 * conv.c - 2-d convolution (NCHW, groups, stride, padding, dilation, bias, fused activation) on
 * oneDNN's convolution primitive. The primitive picks its own (blocked) layouts; src and dst are
 * reordered to and from them around the call, weights too unless they were prepared once with
 * clipl_conv2d_prepare. The channels-last variant (clipl__conv2d_apply_nhwc) keeps activations in
 * NHWC, the layout oneDNN's brgemm convolutions run on, and adds the result to a residual in place
 * before the activation, so a ResNet tower converts its layout only at the ends.
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"

#include <stdlib.h>
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

/* Geometry of a convolution, normalised from the options. */
typedef struct geom {
    int64_t O, C, KH, KW, g;
    int64_t sh, sw, dh, dw, ph, pw;
    int32_t act;
    float alpha, beta;
} geom;

static int geom_from(geom *G, const clipl_tensor *weights, const clipl_conv2d_opts *opts,
                     const char *op)
{
    const clipl_conv2d_opts *o = opts ? opts : &default_opts;
    char s1[96];
    if (weights->ndim != 4)
        return clipl__err(CLIPL_ESHAPE, "%s: weights must be [O, C/groups, KH, KW], got [%s]", op,
                          clipl__tshape(s1, sizeof s1, weights));
    if (o->padding[0] < 0 || o->padding[1] < 0 || o->groups < 0)
        return clipl__err(CLIPL_EINVAL, "%s: negative padding or groups", op);
    if (o->act < 0 || o->act >= CLIPL_ACT_COUNT)
        return clipl__err(CLIPL_EINVAL, "%s: unknown activation %d", op, (int)o->act);
    G->g = o->groups > 0 ? o->groups : 1;
    G->O = weights->shape[0];
    G->C = weights->shape[1] * G->g;
    G->KH = weights->shape[2];
    G->KW = weights->shape[3];
    G->sh = o->stride[0] > 0 ? o->stride[0] : 1;
    G->sw = o->stride[1] > 0 ? o->stride[1] : 1;
    G->dh = o->dilation[0] > 0 ? o->dilation[0] : 1;
    G->dw = o->dilation[1] > 0 ? o->dilation[1] : 1;
    G->ph = o->padding[0];
    G->pw = o->padding[1];
    G->act = o->act;
    G->alpha = o->alpha;
    G->beta = o->beta;
    if (G->O % G->g)
        return clipl__err(CLIPL_ESHAPE, "%s: %lld output channels do not split into %lld groups",
                          op, (long long)G->O, (long long)G->g);
    return CLIPL_OK;
}

/* The weights descriptor of the plain [O, C/g, KH, KW] (or [g, O/g, C/g, KH, KW]) layout. */
static int plain_wmd(dnnl_memory_desc_t *md, const geom *G, int dtype, const char *op)
{
    if (G->g == 1) {
        int64_t s[4] = {G->O, G->C, G->KH, G->KW}, st[4];
        clipl__contiguous_strides(4, s, st);
        return clipl__dnnl_md_dims(md, 4, s, st, dtype, op);
    }
    int64_t s[5] = {G->g, G->O / G->g, G->C / G->g, G->KH, G->KW}, st[5];
    clipl__contiguous_strides(5, s, st);
    return clipl__dnnl_md_dims(md, 5, s, st, dtype, op);
}

/* Weights held in up to two layouts: prepared weights keep the ones oneDNN picked for their batch
 * hint and for batch 1 (a 1x1 kernel may block the output channels differently). */
enum { MAX_WL = 2 };
typedef struct wlayouts {
    int n;
    int fixed;             /* ask oneDNN for these layouts before letting it choose */
    int64_t batch[MAX_WL]; /* the batch size each layout was picked for */
    dnnl_memory_desc_t md[MAX_WL];
    void *ptr[MAX_WL];
} wlayouts;

/* The cached primitive for src [N, C, H, W] of dtype sdt, weights of dtype wdt, f32 bias or none
 * and dst of dtype ddt. Layouts are chosen by oneDNN, except src and dst with nhwc (channels-last)
 * and the weights when wl->fixed (one of their layouts, the one picked for the nearest batch size
 * first: oneDNN takes the first that a kernel other than its reference one runs on, else the layout
 * is free again and the weights are reordered per call); sum: dst's contents are added before act
 * (sum post-op). */
static clipl__prim *conv_prim(const geom *G, const int64_t *sdims, int sdt, int wdt, int ddt,
                              bool bias, int nhwc, int sum, const wlayouts *wl, const char *op)
{
    const dnnl_memory_desc_t *fix[MAX_WL];
    int nfix = 0;
    for (int i = 0; wl && wl->fixed && i < wl->n; i++)
        fix[nfix++] = &wl->md[i];
    if (nfix == 2 && llabs(wl->batch[1] - sdims[0]) < llabs(wl->batch[0] - sdims[0])) {
        fix[0] = &wl->md[1];
        fix[1] = &wl->md[0];
    }
    int64_t OH = (sdims[2] + 2 * G->ph - ((G->KH - 1) * G->dh + 1)) / G->sh + 1;
    int64_t OW = (sdims[3] + 2 * G->pw - ((G->KW - 1) * G->dw + 1)) / G->sw + 1;
    dnnl_dims_t sd = {sdims[0], G->C, sdims[2], sdims[3]}, dd = {sdims[0], G->O, OH, OW};
    dnnl_dims_t wd4 = {G->O, G->C, G->KH, G->KW};
    dnnl_dims_t wd5 = {G->g, G->O / G->g, G->C / G->g, G->KH, G->KW}, bd = {G->O};
    dnnl_dims_t strides = {G->sh, G->sw}, dil = {G->dh - 1, G->dw - 1}, pad = {G->ph, G->pw};
    clipl__key k;
    clipl__key_init(&k, "conv2d");
    for (int i = 0; i < 4; i++)
        clipl__key_add(&k, sd[i]);
    clipl__key_add(&k, G->O);
    clipl__key_add(&k, G->KH * 65536 + G->KW);
    clipl__key_add(&k, G->g);
    clipl__key_add(&k, ((sdt * 16 + wdt) * 16 + ddt) * 2 + (bias ? 1 : 0));
    clipl__key_add(&k, nhwc * 2 + sum);
    for (int i = 0; i < nfix; i++)
        clipl__key_md(&k, fix[i]);
    for (int i = 0; i < 2; i++) {
        clipl__key_add(&k, strides[i]);
        clipl__key_add(&k, dil[i]);
        clipl__key_add(&k, pad[i]);
    }
    clipl__key_add(&k, G->act);
    clipl__key_addf(&k, G->alpha);
    clipl__key_addf(&k, G->beta);
    clipl__prim *p = clipl__prim_get(&k);
    if (p)
        return p;
    dnnl_engine_t eng = clipl__dnnl_engine(op);
    if (!eng)
        return NULL;
    dnnl_memory_desc_t sany, wany, bmd, dany;
    dnnl_convolution_desc_t desc;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_format_tag_t act_tag = nhwc ? dnnl_acdb : dnnl_format_tag_any;
    int rc =
        clipl__dnnl_check(dnnl_memory_desc_init_by_tag(&sany, 4, sd, clipl__dnnl_dt(sdt), act_tag),
                          op, "src descriptor");
    if (!rc)
        rc = clipl__dnnl_check(
            dnnl_memory_desc_init_by_tag(&wany, G->g == 1 ? 4 : 5, G->g == 1 ? wd4 : wd5,
                                         clipl__dnnl_dt(wdt), dnnl_format_tag_any),
            op, "weights descriptor");
    if (!rc)
        rc = clipl__dnnl_check(
            dnnl_memory_desc_init_by_tag(&dany, 4, dd, clipl__dnnl_dt(ddt), act_tag), op,
            "dst descriptor");
    if (!rc && bias)
        rc = clipl__dnnl_check(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a), op,
                               "bias descriptor");
    if (!rc)
        rc = clipl__dnnl_check(dnnl_post_ops_create(&po), op, "post-ops");
    if (!rc && sum)
        rc = clipl__dnnl_check(dnnl_post_ops_append_sum(po, 1.0f), op, "residual sum post-op");
    if (!rc)
        rc = clipl__dnnl_append_act(po, G->act, G->alpha, G->beta, op);
    if (!rc)
        rc = clipl__dnnl_attr(&attr, po, op);
    for (int t = 0; !rc && t <= nfix; t++) {
        const dnnl_memory_desc_t *wmd = t < nfix ? fix[t] : &wany;
        rc = clipl__dnnl_check(dnnl_dilated_convolution_forward_desc_init(
                                   &desc, dnnl_forward_inference, dnnl_convolution_direct, &sany,
                                   wmd, bias ? &bmd : NULL, &dany, strides, dil, pad, pad),
                               op, "convolution descriptor");
        if (!rc)
            rc = clipl__dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL), op,
                                   "convolution primitive descriptor");
        if (t == nfix)
            break;
        const char *impl = NULL;
        if (!rc &&
            dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
            impl && strncmp(impl, "ref", 3) != 0)
            break;
        if (!rc)
            dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        rc = CLIPL_OK;
        clipl_errclear();
    }
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (po)
        dnnl_post_ops_destroy(po);
    if (rc)
        return NULL;
    return clipl__prim_put(&k, pd, op);
}

/* How conv_run lays out and finishes dst. */
typedef struct conv_out {
    int nhwc;          /* src and dst channels-last (else dst contiguous NCHW) */
    clipl_tensor *acc; /* NULL or channels-last [N, O, OH, OW] in dst's dtype: becomes dst, its
                          contents added before the act (sum post-op) */
} conv_out;

/* Stages the weights for a primitive that wants layout want: one of wl's when it matches, else a
 * reorder of the first. */
static int stage_weights(staged *s, const wlayouts *wl, const dnnl_memory_desc_t *want,
                         const char *op)
{
    for (int i = 0; i < wl->n; i++)
        if (dnnl_memory_desc_equal(&wl->md[i], want))
            return stage(s, &wl->md[i], wl->ptr[i], want, 1, op);
    return stage(s, &wl->md[0], wl->ptr[0], want, 1, op);
}

/* dst = conv(src, weights wl) + bias (f32 [O] or NULL). src is checked, of dtype sdt (or reordered
 * into it) and any strides; dst gets dtype ddt. */
static int conv_run(const geom *G, const clipl_tensor *src, int sdt, int wdt, const wlayouts *wl,
                    const float *bias, int ddt, const conv_out *co, clipl_tensor **dst,
                    const char *op)
{
    char s1[96], s2[96];
    int64_t N = src->shape[0], H = src->shape[2], W = src->shape[3];
    int64_t eh = (G->KH - 1) * G->dh + 1, ew = (G->KW - 1) * G->dw + 1;
    if (H + 2 * G->ph < eh || W + 2 * G->pw < ew)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: kernel %lldx%lld (dilated %lldx%lld) larger than "
                          "the padded input [%s]",
                          op, (long long)G->KH, (long long)G->KW, (long long)eh, (long long)ew,
                          clipl__tshape(s1, sizeof s1, src));
    int64_t OH = (H + 2 * G->ph - eh) / G->sh + 1, OW = (W + 2 * G->pw - ew) / G->sw + 1;
    int64_t oshape[4] = {N, G->O, OH, OW};
    clipl_tensor *acc = co->acc, *out;
    int rc = CLIPL_OK;
    if (acc) {
        if (acc->ndim != 4 || acc->dt != ddt || memcmp(acc->shape, oshape, sizeof oshape) ||
            !clipl__tensor_is_nhwc(acc))
            return clipl__err(CLIPL_ESHAPE,
                              "%s: residual [%s] %s does not match dst [%lldx%lldx%lldx%lld] %s "
                              "channels-last",
                              op, clipl__tshape(s2, sizeof s2, acc), clipl_dtype_name(acc->dt),
                              (long long)N, (long long)G->O, (long long)OH, (long long)OW,
                              clipl_dtype_name(ddt));
        if ((rc = clipl__check_writable(acc, op)))
            return rc;
        if (G->C == 0)
            return clipl__err(CLIPL_EUNSUPPORTED, "%s: residual add with no input channels", op);
        out = clipl_tensor_retain(acc);
    } else {
        out = co->nhwc ? clipl__tensor_empty_nhwc(ddt, oshape) : clipl_tensor_empty(ddt, 4, oshape);
        if (!out)
            return clipl_errcode();
    }
    if (clipl_tensor_numel(out) == 0 || G->C == 0) {
        if (G->C == 0)
            rc = clipl_tensor_fill_(out, 0);
        *dst = out;
        return rc;
    }
    dnnl_memory_desc_t smd, dmd, bmd;
    int64_t bsh[1] = {G->O}, bst[1] = {1};
    if ((rc = clipl__dnnl_md(&smd, src, op)) || (rc = clipl__dnnl_md(&dmd, out, op)) ||
        (bias && (rc = clipl__dnnl_md_dims(&bmd, 1, bsh, bst, CLIPL_F32, op)))) {
        clipl_tensor_release(out);
        return rc;
    }
    clipl__prim *p =
        conv_prim(G, src->shape, sdt, wdt, ddt, bias != NULL, co->nhwc, acc != NULL, wl, op);
    if (!p) {
        clipl_tensor_release(out);
        return clipl_errcode();
    }
    const dnnl_memory_desc_t *want_s = dnnl_primitive_desc_query_md(p->pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *want_w =
        dnnl_primitive_desc_query_md(p->pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *want_d = dnnl_primitive_desc_query_md(p->pd, dnnl_query_dst_md, 0);
    staged ss = {0}, ws = {0}, ds = {0};
    if (!(rc = stage(&ss, &smd, src->ptr, want_s, 1, op)) &&
        !(rc = stage_weights(&ws, wl, want_w, op)) &&
        !(rc = stage(&ds, &dmd, out->ptr, want_d, acc != NULL, op))) {
        clipl__arg args[4];
        int n = 0;
        args[n++] = (clipl__arg){DNNL_ARG_SRC, ss.md, ss.ptr};
        args[n++] = (clipl__arg){DNNL_ARG_WEIGHTS, ws.md, ws.ptr};
        if (bias)
            args[n++] = (clipl__arg){DNNL_ARG_BIAS, &bmd, (void *)bias};
        args[n++] = (clipl__arg){DNNL_ARG_DST, ds.md, ds.ptr};
        rc = clipl__prim_exec(p, n, args, op);
        if (!rc && ds.tmp)
            rc = clipl__dnnl_reorder(ds.md, ds.ptr, &dmd, out->ptr, op);
    }
    unstage(&ss);
    unstage(&ws);
    unstage(&ds);
    clipl__prim_release(p);
    if (rc) {
        clipl_tensor_release(out);
        return rc;
    }
    *dst = out;
    return CLIPL_OK;
}

/* Checks src against the geometry. */
static int src_check(const clipl_tensor *src, const geom *G, const char *op, const char *wshape)
{
    char s1[96];
    int rc = clipl__dnnl_check_float(src, op, "src");
    if (rc)
        return rc;
    if (src->ndim != 4 || src->shape[1] != G->C)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: size mismatch, src [%s] with weights [%s] and "
                          "groups %lld (expected [N, %lld, H, W])",
                          op, clipl__tshape(s1, sizeof s1, src), wshape, (long long)G->g,
                          (long long)G->C);
    return CLIPL_OK;
}

/* Checks src; *sc receives a contiguous copy in dtype (or src itself). */
static int src_prepare(const clipl_tensor *src, const geom *G, int dtype, clipl_tensor **sc,
                       const char *op, const char *wshape)
{
    int rc = src_check(src, G, op, wshape);
    if (rc)
        return rc;
    if (src->dt == dtype)
        return clipl_tensor_contiguous(src, sc);
    return clipl_tensor_to(src, sc, dtype);
}

int clipl_conv2d(const clipl_tensor *src, const clipl_tensor *weights, const clipl_tensor *bias,
                 clipl_tensor **dst, const clipl_conv2d_opts *opts)
{
    if (CLIPL__AG_ON3(src, weights, bias))
        return clipl__ag_conv2d(src, weights, bias, dst, opts);
    const char *op = "conv2d";
    int rc;
    if ((rc = clipl__dnnl_check_float(weights, op, "weights")))
        return rc;
    if (bias && (rc = clipl__dnnl_check_float(bias, op, "bias")))
        return rc;
    geom G;
    if ((rc = geom_from(&G, weights, opts, op)))
        return rc;
    char s1[96], s2[96];
    clipl__tshape(s2, sizeof s2, weights);
    if (src && src->dt != weights->dt && (src->dt == CLIPL_F32 || src->dt == CLIPL_BF16))
        return clipl__err(CLIPL_EINVAL, "%s: dtypes differ, src %s and weights %s", op,
                          clipl_dtype_name(src->dt), clipl_dtype_name(weights->dt));
    if (bias && clipl_tensor_numel(bias) != G.O)
        return clipl__err(CLIPL_ESHAPE, "%s: bias [%s] for %lld output channels", op,
                          clipl__tshape(s1, sizeof s1, bias), (long long)G.O);
    clipl_tensor *sc = NULL, *wc = NULL, *bc = NULL;
    wlayouts wl = {.n = 1};
    if ((rc = src_prepare(src, &G, weights->dt, &sc, op, s2)))
        return rc;
    if ((rc = clipl_tensor_contiguous(weights, &wc)) ||
        (bias && (rc = clipl_tensor_to(bias, &bc, CLIPL_F32))) ||
        (rc = plain_wmd(&wl.md[0], &G, weights->dt, op)))
        goto done;
    wl.ptr[0] = wc->ptr;
    rc = conv_run(&G, sc, sc->dt, weights->dt, &wl, bc ? bc->ptr : NULL, src->dt,
                  &(conv_out){0, NULL}, dst, op);
done:
    clipl_tensor_release(sc);
    clipl_tensor_release(wc);
    clipl_tensor_release(bc);
    return rc;
}

/* ---- prepared convolution weights ----------------------------------------------------------- */

struct clipl_conv2d_weights {
    geom G;
    int dt;
    int nhwc;    /* prepared for clipl__conv2d_apply_nhwc */
    wlayouts wl; /* the layouts the primitive chose for the hinted input sizes */
    size_t w_bytes[MAX_WL];
    float *bias; /* [O] or NULL */
    char wshape[96];
};

static clipl_conv2d_weights *prepare(const clipl_tensor *weights, const clipl_tensor *bias,
                                     int dtype, const clipl_conv2d_opts *opts, int nhwc, int sum,
                                     int64_t n_hint, int64_t h_hint, int64_t w_hint)
{
    const char *op = "conv2d_prepare";
    char s1[96];
    if (clipl__dnnl_check_float(weights, op, "weights"))
        return NULL;
    if (bias && clipl__dnnl_check_float(bias, op, "bias"))
        return NULL;
    if (dtype < 0)
        dtype = weights->dt;
    if (dtype != CLIPL_F32 && dtype != CLIPL_BF16) {
        clipl__err(CLIPL_EINVAL, "%s: dtype must be f32 or bf16, got %s", op,
                   clipl_dtype_name(dtype));
        return NULL;
    }
    clipl_conv2d_weights *cw = calloc(1, sizeof *cw);
    if (!cw) {
        clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
        return NULL;
    }
    clipl_tensor *wc = NULL;
    clipl__prim *p = NULL;
    int rc;
    if ((rc = geom_from(&cw->G, weights, opts, op)))
        goto fail;
    if (bias && clipl_tensor_numel(bias) != cw->G.O) {
        clipl__err(CLIPL_ESHAPE, "%s: bias [%s] for %lld output channels", op,
                   clipl__tshape(s1, sizeof s1, bias), (long long)cw->G.O);
        goto fail;
    }
    cw->dt = dtype;
    cw->nhwc = nhwc;
    clipl__tshape(cw->wshape, sizeof cw->wshape, weights);
    int64_t eh = (cw->G.KH - 1) * cw->G.dh + 1, ew = (cw->G.KW - 1) * cw->G.dw + 1;
    int64_t sdims[4] = {n_hint > 0 ? n_hint : 1, cw->G.C, h_hint > 0 ? h_hint : 56,
                        w_hint > 0 ? w_hint : 56};
    if (sdims[2] + 2 * cw->G.ph < eh)
        sdims[2] = eh;
    if (sdims[3] + 2 * cw->G.pw < ew)
        sdims[3] = ew;
    if (weights->dt == dtype)
        rc = clipl_tensor_contiguous(weights, &wc);
    else
        rc = clipl_tensor_to(weights, &wc, dtype);
    if (rc)
        goto fail;
    dnnl_memory_desc_t pmd;
    if (plain_wmd(&pmd, &cw->G, dtype, op))
        goto fail;
    /* the layouts for the batch hint and for batch 1, when they differ */
    cw->wl.fixed = 1;
    for (int i = 0; i < (sdims[0] > 1 ? 2 : 1); i++) {
        wlayouts *wl = &cw->wl;
        int64_t batch = i == 0 ? sdims[0] : 1;
        sdims[0] = batch;
        if (!(p = conv_prim(&cw->G, sdims, dtype, dtype, dtype, bias != NULL, nhwc, sum, NULL, op)))
            goto fail;
        wl->md[wl->n] = *dnnl_primitive_desc_query_md(p->pd, dnnl_query_weights_md, 0);
        clipl__prim_release(p);
        if (i > 0 && dnnl_memory_desc_equal(&wl->md[0], &wl->md[wl->n]))
            continue;
        wl->batch[wl->n] = batch;
        cw->w_bytes[wl->n] = dnnl_memory_desc_get_size(&wl->md[wl->n]);
        if (!(wl->ptr[wl->n] = clipl__alloc(cw->w_bytes[wl->n])))
            goto fail;
        wl->n++;
        if (clipl__dnnl_reorder(&pmd, wc->ptr, &wl->md[wl->n - 1], wl->ptr[wl->n - 1], op))
            goto fail;
    }
    if (bias) {
        if (!(cw->bias = clipl__alloc(sizeof(float) * (size_t)cw->G.O)))
            goto fail;
        for (int64_t i = 0; i < cw->G.O; i++) {
            double v;
            clipl_tensor_get_flat(bias, i, &v);
            cw->bias[i] = (float)v;
        }
    }
    clipl_tensor_release(wc);
    return cw;
fail:
    clipl_tensor_release(wc);
    clipl_conv2d_weights_free(cw);
    return NULL;
}

clipl_conv2d_weights *clipl_conv2d_prepare(const clipl_tensor *weights, const clipl_tensor *bias,
                                           int dtype, const clipl_conv2d_opts *opts, int64_t h_hint,
                                           int64_t w_hint)
{
    return prepare(weights, bias, dtype, opts, 0, 0, 1, h_hint, w_hint);
}

clipl_conv2d_weights *clipl__conv2d_prepare_nhwc(const clipl_tensor *weights,
                                                 const clipl_tensor *bias, int dtype,
                                                 const clipl_conv2d_opts *opts, int residual,
                                                 int64_t n_hint, int64_t h_hint, int64_t w_hint)
{
    return prepare(weights, bias, dtype, opts, 1, residual != 0, n_hint, h_hint, w_hint);
}

void clipl_conv2d_weights_free(clipl_conv2d_weights *cw)
{
    if (!cw)
        return;
    for (int i = 0; i < cw->wl.n; i++)
        clipl__free(cw->wl.ptr[i], cw->w_bytes[i]);
    if (cw->bias)
        clipl__free(cw->bias, sizeof(float) * (size_t)cw->G.O);
    free(cw);
}

int clipl_conv2d_apply(const clipl_conv2d_weights *cw, const clipl_tensor *src, clipl_tensor **dst)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_no_backward("conv2d",
                                     "use clipl_conv2d with the weight tensor for training");
    const char *op = "conv2d";
    if (!cw)
        return clipl__err(CLIPL_EINVAL, "%s: NULL weights", op);
    clipl_tensor *sc = NULL;
    int rc = src_prepare(src, &cw->G, cw->dt, &sc, op, cw->wshape);
    if (rc)
        return rc;
    rc = conv_run(&cw->G, sc, sc->dt, cw->dt, &cw->wl, cw->bias, src->dt, &(conv_out){0, NULL}, dst,
                  op);
    clipl_tensor_release(sc);
    return rc;
}

int clipl__conv2d_apply_nhwc(const clipl_conv2d_weights *cw, const clipl_tensor *src,
                             clipl_tensor *acc, clipl_tensor **dst)
{
    const char *op = "conv2d";
    if (!cw)
        return clipl__err(CLIPL_EINVAL, "%s: NULL weights", op);
    if (!cw->nhwc)
        return clipl__err(CLIPL_EINVAL, "%s: weights not prepared for channels-last", op);
    int rc = src_check(src, &cw->G, op, cw->wshape);
    if (rc)
        return rc;
    /* src of any layout and float dtype is reordered straight into channels-last cw->dt */
    return conv_run(&cw->G, src, cw->dt, cw->dt, &cw->wl, cw->bias, cw->dt, &(conv_out){1, acc},
                    dst, op);
}
