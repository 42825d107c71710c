/*
 * forward.c - the CLIP encoders on prepared weights: residual attention blocks (QuickGELU MLP,
 * causal mask for text), the ViT and ModifiedResNet image towers with their heads, the text tower
 * run only up to each row's end token, and the logits. The residual stream is f32; linear layers
 * and convolutions compute in the model's dtype (f32 or bf16).
 */
#include "../ops/dnnl_util.h"
#include "nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double LN_EPS = 1e-5, BN_EPS = 1e-5;

#define REL(t)                                                                                     \
    do {                                                                                           \
        clipl_tensor_release(t);                                                                   \
        (t) = NULL;                                                                                \
    } while (0)

/* ---- preparation -------------------------------------------------------------------------------
 */

static void linear_free(nn_linear *l)
{
    clipl_linear_weights_free(l->w);
    l->w = NULL;
}

static void conv_free(nn_conv *c)
{
    clipl_conv2d_weights_free(c->w);
    c->w = NULL;
}

void clipl__nn_unprepare(clipl_model *m)
{
    int nv = m->cfg.vision_kind == CLIPL_VISION_VIT ? m->cfg.vision_layers[0] : 0;
    if (m->vblocks)
        for (int i = 0; i < nv; i++) {
            nn_block *b = &m->vblocks[i];
            linear_free(&b->in_proj), linear_free(&b->out_proj);
            linear_free(&b->c_fc), linear_free(&b->c_proj);
        }
    if (m->tblocks)
        for (int i = 0; i < m->cfg.transformer_layers; i++) {
            nn_block *b = &m->tblocks[i];
            linear_free(&b->in_proj), linear_free(&b->out_proj);
            linear_free(&b->c_fc), linear_free(&b->c_proj);
        }
    if (m->rblocks)
        for (int i = 0; i < m->nrblocks; i++) {
            nn_bottleneck *b = &m->rblocks[i];
            conv_free(&b->c1), conv_free(&b->c2), conv_free(&b->c3), conv_free(&b->ds);
        }
    free(m->vblocks), free(m->tblocks), free(m->rblocks);
    m->vblocks = m->tblocks = NULL;
    m->rblocks = NULL;
    for (int i = 0; i < 3; i++)
        conv_free(&m->stem[i]);
    linear_free(&m->patch), linear_free(&m->vis_proj), linear_free(&m->txt_proj);
    linear_free(&m->ap_q), linear_free(&m->ap_k), linear_free(&m->ap_v), linear_free(&m->ap_c);
    m->prepared = 0;
}

static int idx(const clipl_model *m, const char *fmt, const char *a, const char *b)
{
    char name[128];
    snprintf(name, sizeof name, fmt, a, b);
    int i = clipl__nn_find(m, name);
    if (i < 0)
        clipl__err(CLIPL_EINDEX, "missing parameter '%s'", name);
    return i;
}

/* Prepares a linear from weight (name_w, or transposed) and bias (name_b or NULL). */
static int prep_linear(const clipl_model *m, nn_linear *l, const char *name_w, const char *name_b,
                       int transpose, int64_t m_hint)
{
    int iw = clipl__nn_find(m, name_w), ib = name_b ? clipl__nn_find(m, name_b) : -1;
    if (iw < 0 || (name_b && ib < 0))
        return clipl__err(CLIPL_EINDEX, "missing parameter '%s'", iw < 0 ? name_w : name_b);
    clipl_tensor *w = nn_p(m, iw), *wt = NULL, *w2 = NULL;
    int rc = CLIPL_OK;
    if (transpose) {
        rc = clipl_tensor_transpose(w, &wt, 0, 1);
        if (!rc)
            rc = clipl_tensor_contiguous(wt, &w2);
        w = w2;
    } else if (w->ndim != 2) {
        /* a convolution used as a linear: [O, C, K, K] -> [O, C*K*K] */
        int64_t shape[2] = {w->shape[0], -1};
        rc = clipl_tensor_reshape(w, &w2, 2, shape);
        w = w2;
    }
    if (!rc) {
        l->w = clipl_linear_prepare(w, ib >= 0 ? nn_p(m, ib) : NULL, m->dtype, m_hint);
        if (!l->w)
            rc = clipl_errcode() ? clipl_errcode() : CLIPL_ENOMEM;
    }
    clipl_tensor_release(wt);
    clipl_tensor_release(w2);
    if (rc)
        clipl__err_prefix("preparing '%s'", name_w);
    return rc;
}

static int prep_block(const clipl_model *m, nn_block *b, const char *prefix, int64_t m_hint)
{
    char w[128], bb[128];
    if ((b->ln1_w = idx(m, "%s.%s", prefix, "ln_1.weight")) < 0 ||
        (b->ln1_b = idx(m, "%s.%s", prefix, "ln_1.bias")) < 0 ||
        (b->ln2_w = idx(m, "%s.%s", prefix, "ln_2.weight")) < 0 ||
        (b->ln2_b = idx(m, "%s.%s", prefix, "ln_2.bias")) < 0)
        return clipl_errcode();
    static const char *const lin[4][2] = {{"attn.in_proj_weight", "attn.in_proj_bias"},
                                          {"attn.out_proj.weight", "attn.out_proj.bias"},
                                          {"mlp.c_fc.weight", "mlp.c_fc.bias"},
                                          {"mlp.c_proj.weight", "mlp.c_proj.bias"}};
    nn_linear *dst[4] = {&b->in_proj, &b->out_proj, &b->c_fc, &b->c_proj};
    for (int i = 0; i < 4; i++) {
        snprintf(w, sizeof w, "%s.%s", prefix, lin[i][0]);
        snprintf(bb, sizeof bb, "%s.%s", prefix, lin[i][1]);
        int rc = prep_linear(m, dst[i], w, bb, 0, m_hint);
        if (rc)
            return rc;
    }
    return CLIPL_OK;
}

/* Folds conv_w with BatchNorm bn and prepares it (stride, padding, fused ReLU, applied after the
 * residual add when the conv ends a bottleneck: residual = 1) for channels-last inputs of about
 * batch_hint x hw x hw, in the compute dtype. */
static int prep_conv(const clipl_model *m, nn_conv *c, const char *conv_w, const char *bn,
                     int64_t stride, int64_t pad, int relu, int residual, int64_t hw)
{
    int iw = clipl__nn_find(m, conv_w);
    int ig = idx(m, "%s.%s", bn, "weight"), ib = idx(m, "%s.%s", bn, "bias");
    int im = idx(m, "%s.%s", bn, "running_mean"), iv = idx(m, "%s.%s", bn, "running_var");
    if (iw < 0)
        return clipl__err(CLIPL_EINDEX, "missing parameter '%s'", conv_w);
    if (ig < 0 || ib < 0 || im < 0 || iv < 0)
        return clipl_errcode();
    clipl_tensor *w = NULL, *b = NULL;
    int rc = clipl_fold_batch_norm(nn_p(m, iw), NULL, nn_p(m, im), nn_p(m, iv), nn_p(m, ig),
                                   nn_p(m, ib), BN_EPS, &w, &b);
    if (!rc) {
        clipl_conv2d_opts o;
        memset(&o, 0, sizeof o);
        o.stride[0] = o.stride[1] = stride;
        o.padding[0] = o.padding[1] = pad;
        o.act = relu ? CLIPL_ACT_RELU : CLIPL_ACT_NONE;
        c->w = clipl__conv2d_prepare_nhwc(w, b, m->dtype, &o, residual, m->batch_hint, hw, hw);
        if (!c->w)
            rc = clipl_errcode() ? clipl_errcode() : CLIPL_ENOMEM;
    }
    clipl_tensor_release(w);
    clipl_tensor_release(b);
    if (rc)
        return clipl__err_prefix("folding '%s' with '%s'", conv_w, bn);
    return CLIPL_OK;
}

int clipl__nn_prepare(clipl_model *m)
{
    clipl__nn_unprepare(m);
    const clipl_model_config *c = &m->cfg;
    int rc = CLIPL_OK;
    int64_t hint = m->batch_hint;
    if ((m->tok_emb = idx(m, "%s%s", "token_embedding.weight", "")) < 0 ||
        (m->txt_pos = idx(m, "%s%s", "positional_embedding", "")) < 0 ||
        (m->ln_final_w = idx(m, "%s%s", "ln_final.weight", "")) < 0 ||
        (m->ln_final_b = idx(m, "%s%s", "ln_final.bias", "")) < 0 ||
        (m->logit_scale = idx(m, "%s%s", "logit_scale", "")) < 0)
        return clipl_errcode();
    m->tblocks = calloc((size_t)c->transformer_layers, sizeof *m->tblocks);
    if (!m->tblocks)
        return clipl__err(CLIPL_ENOMEM, "model: out of memory");
    for (int i = 0; i < c->transformer_layers && !rc; i++) {
        char p[64];
        snprintf(p, sizeof p, "transformer.resblocks.%d", i);
        rc = prep_block(m, &m->tblocks[i], p, hint * 20);
    }
    if (!rc)
        rc = prep_linear(m, &m->txt_proj, "text_projection", NULL, 1, hint);
    if (!rc && c->vision_kind == CLIPL_VISION_VIT) {
        int64_t g = c->image_resolution / c->vision_patch_size, t = g * g + 1;
        if ((m->class_emb = idx(m, "%s%s", "visual.class_embedding", "")) < 0 ||
            (m->vis_pos = idx(m, "%s%s", "visual.positional_embedding", "")) < 0 ||
            (m->ln_pre_w = idx(m, "%s%s", "visual.ln_pre.weight", "")) < 0 ||
            (m->ln_pre_b = idx(m, "%s%s", "visual.ln_pre.bias", "")) < 0 ||
            (m->ln_post_w = idx(m, "%s%s", "visual.ln_post.weight", "")) < 0 ||
            (m->ln_post_b = idx(m, "%s%s", "visual.ln_post.bias", "")) < 0)
            return clipl_errcode();
        rc = prep_linear(m, &m->patch, "visual.conv1.weight", NULL, 0, hint * g * g);
        if (!rc)
            rc = prep_linear(m, &m->vis_proj, "visual.proj", NULL, 1, hint);
        m->vblocks = calloc((size_t)c->vision_layers[0], sizeof *m->vblocks);
        if (!m->vblocks)
            return clipl__err(CLIPL_ENOMEM, "model: out of memory");
        for (int i = 0; i < c->vision_layers[0] && !rc; i++) {
            char p[64];
            snprintf(p, sizeof p, "visual.transformer.resblocks.%d", i);
            rc = prep_block(m, &m->vblocks[i], p, hint * t);
        }
    } else if (!rc) {
        int64_t r = c->image_resolution;
        rc = prep_conv(m, &m->stem[0], "visual.conv1.weight", "visual.bn1", 2, 1, 1, 0, r);
        if (!rc)
            rc = prep_conv(m, &m->stem[1], "visual.conv2.weight", "visual.bn2", 1, 1, 1, 0, r / 2);
        if (!rc)
            rc = prep_conv(m, &m->stem[2], "visual.conv3.weight", "visual.bn3", 1, 1, 1, 0, r / 2);
        r /= 4;
        int n = 0;
        for (int l = 0; l < 4; l++)
            n += c->vision_layers[l];
        m->rblocks = calloc((size_t)n, sizeof *m->rblocks);
        if (!m->rblocks)
            return clipl__err(CLIPL_ENOMEM, "model: out of memory");
        m->nrblocks = n;
        int k = 0;
        int64_t inplanes = c->vision_width;
        for (int l = 0; l < 4 && !rc; l++) {
            int64_t planes = (int64_t)c->vision_width << l;
            for (int b = 0; b < c->vision_layers[l] && !rc; b++, k++) {
                nn_bottleneck *nb = &m->rblocks[k];
                char p[64], cw[96], bn[96];
                snprintf(p, sizeof p, "visual.layer%d.%d", l + 1, b);
                nb->stride = (b == 0 && l > 0) ? 2 : 1;
                snprintf(cw, sizeof cw, "%s.conv1.weight", p), snprintf(bn, sizeof bn, "%s.bn1", p);
                rc = prep_conv(m, &nb->c1, cw, bn, 1, 0, 1, 0, r);
                snprintf(cw, sizeof cw, "%s.conv2.weight", p), snprintf(bn, sizeof bn, "%s.bn2", p);
                if (!rc)
                    rc = prep_conv(m, &nb->c2, cw, bn, 1, 1, 1, 0, r);
                snprintf(cw, sizeof cw, "%s.conv3.weight", p), snprintf(bn, sizeof bn, "%s.bn3", p);
                if (!rc)
                    rc = prep_conv(m, &nb->c3, cw, bn, 1, 0, 1, 1, r / nb->stride);
                nb->has_ds = nb->stride > 1 || inplanes != planes * 4;
                snprintf(cw, sizeof cw, "%s.downsample.0.weight", p);
                snprintf(bn, sizeof bn, "%s.downsample.1", p);
                if (!rc && nb->has_ds)
                    rc = prep_conv(m, &nb->ds, cw, bn, 1, 0, 0, 0, r / nb->stride);
                inplanes = planes * 4;
                r /= nb->stride;
            }
        }
        if (!rc && (m->ap_pos = idx(m, "%s%s", "visual.attnpool.positional_embedding", "")) < 0)
            rc = clipl_errcode();
        int64_t s = (int64_t)(c->image_resolution / 32) * (c->image_resolution / 32) + 1;
        if (!rc)
            rc = prep_linear(m, &m->ap_q, "visual.attnpool.q_proj.weight",
                             "visual.attnpool.q_proj.bias", 0, hint);
        if (!rc)
            rc = prep_linear(m, &m->ap_k, "visual.attnpool.k_proj.weight",
                             "visual.attnpool.k_proj.bias", 0, hint * s);
        if (!rc)
            rc = prep_linear(m, &m->ap_v, "visual.attnpool.v_proj.weight",
                             "visual.attnpool.v_proj.bias", 0, hint * s);
        if (!rc)
            rc = prep_linear(m, &m->ap_c, "visual.attnpool.c_proj.weight",
                             "visual.attnpool.c_proj.bias", 0, hint);
    }
    if (rc)
        clipl__nn_unprepare(m);
    else
        m->prepared = 1;
    return rc;
}

/* ---- building blocks ----------------------------------------------------------------------------
 */

static int check_model(const clipl_model *m, const char *op)
{
    if (!m)
        return clipl__err(CLIPL_EINVAL, "%s: NULL model", op);
    if (!m->prepared)
        return clipl__err(CLIPL_EINVAL,
                          "%s: the model's weights are not prepared (call "
                          "clipl_model_prepare after changing parameters)",
                          op);
    return CLIPL_OK;
}

static int lin(const nn_linear *l, const clipl_tensor *x, clipl_tensor **dst, int act,
               clipl_tensor *accum)
{
    clipl_matmul_opts o;
    memset(&o, 0, sizeof o);
    o.act = act;
    o.accum = accum;
    return clipl_linear_apply(l->w, x, dst, &o);
}

/* x (f32, contiguous, owned by the caller) in the model's compute dtype: x itself for f32, else a
 * bf16 copy made by one parallel pass (cheaper than letting every matmul convert its input). */
static int to_compute(const clipl_model *m, clipl_tensor *x, clipl_tensor **dst)
{
    if (m->dtype == CLIPL_F32 || x->dt != CLIPL_F32 || !clipl_tensor_is_contiguous(x)) {
        *dst = clipl_tensor_retain(x);
        return CLIPL_OK;
    }
    clipl_tensor *b = clipl_tensor_empty(CLIPL_BF16, x->ndim, x->shape);
    if (!b)
        return clipl_errcode();
    const uint32_t *src = x->ptr;
    uint16_t *o = b->ptr;
    int64_t n = clipl_tensor_numel(x);
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = src[i];
        if ((u & 0x7fffffffu) > 0x7f800000u)
            o[i] = (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
        else
            o[i] = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    *dst = b;
    return CLIPL_OK;
}

/* Layer norm of x [.., W] (f32, contiguous) with parameters (indices), in the compute dtype: for
 * bf16 normalised and converted in one pass; f32 stays on oneDNN's layer norm (as fast at these
 * sizes). */
static int ln_compute(const clipl_model *m, const clipl_tensor *x, int iw, int ib,
                      clipl_tensor **dst)
{
    if (m->dtype == CLIPL_F32)
        return clipl_layer_norm(x, 1, nn_p(m, iw), nn_p(m, ib), dst, LN_EPS, NULL, NULL);
    return clipl__layer_norm_rows(x, nn_p(m, iw), nn_p(m, ib), LN_EPS, m->dtype, dst);
}

/* One residual attention block, in place on x [N, T, W] (f32, owned, contiguous); causal for the
 * text tower. */
static int block_run(const clipl_model *m, const nn_block *b, int heads, clipl_tensor *x,
                     int causal)
{
    clipl_tensor *h = NULL, *qkv = NULL, *a = NULL, *am = NULL, *r = NULL;
    int rc = ln_compute(m, x, b->ln1_w, b->ln1_b, &h);
    if (!rc)
        rc = lin(&b->in_proj, h, &qkv, CLIPL_ACT_NONE, NULL);
    REL(h);
    if (!rc)
        rc = clipl__attention_qkv(qkv, heads, causal, &am);
    REL(qkv);
    if (!rc)
        rc = lin(&b->out_proj, am, &r, CLIPL_ACT_NONE, x);
    REL(am);
    REL(r);
    if (!rc)
        rc = ln_compute(m, x, b->ln2_w, b->ln2_b, &h);
    if (!rc)
        rc = lin(&b->c_fc, h, &a, m->cfg.act, NULL);
    REL(h);
    if (!rc)
        rc = lin(&b->c_proj, a, &r, CLIPL_ACT_NONE, x);
    REL(a);
    REL(r);
    return rc;
}

/* A contiguous f32 copy of src (always a new buffer, so it may be written). */
static int owned_f32(const clipl_tensor *src, clipl_tensor **dst)
{
    if (src->dt == CLIPL_F32)
        return clipl_tensor_clone(src, dst);
    return clipl_tensor_to(src, dst, CLIPL_F32);
}

/* A contiguous f32 view or copy of src (not to be written). */
static int read_f32(const clipl_tensor *src, clipl_tensor **dst)
{
    if (src->dt == CLIPL_F32)
        return clipl_tensor_contiguous(src, dst);
    return clipl_tensor_to(src, dst, CLIPL_F32);
}

static int check_float(const clipl_tensor *t, const char *op, const char *what)
{
    if (!t)
        return clipl__err(CLIPL_EINVAL, "%s: %s is NULL", op, what);
    if (t->dt != CLIPL_F32 && t->dt != CLIPL_BF16 && t->dt != CLIPL_F16)
        return clipl__err(CLIPL_EINVAL, "%s: %s must be a float tensor, got %s", op, what,
                          clipl_dtype_name(t->dt));
    return CLIPL_OK;
}

/* ---- vision -------------------------------------------------------------------------------------
 */

static int check_images(const clipl_model *m, const clipl_tensor *images, const char *op)
{
    int rc = check_float(images, op, "images");
    if (rc)
        return rc;
    int64_t r = m->cfg.image_resolution;
    if (images->ndim != 4 || images->shape[1] != 3 || images->shape[2] != r ||
        images->shape[3] != r || images->shape[0] < 1) {
        char b[64];
        return clipl__err(CLIPL_ESHAPE, "%s: images must be [N, 3, %lld, %lld], got [%s]", op,
                          (long long)r, (long long)r, clipl__tshape(b, sizeof b, images));
    }
    return CLIPL_OK;
}

static int vit_stem(const clipl_model *m, const clipl_tensor *images, clipl_tensor **dst)
{
    const clipl_model_config *c = &m->cfg;
    int64_t n = images->shape[0], p = c->vision_patch_size, r = c->image_resolution, g = r / p;
    int64_t w = c->vision_width, t = g * g + 1, pp = 3 * p * p;
    clipl_tensor *img = NULL, *patches = NULL, *emb = NULL, *x = NULL;
    int rc = read_f32(images, &img);
    if (rc)
        goto done;
    /* conv1 with stride = kernel is a linear layer over the flattened patches */
    patches = clipl_tensor_empty(CLIPL_F32, 3, (const int64_t[]){n, g * g, pp});
    if (!patches) {
        rc = clipl_errcode();
        goto done;
    }
    const float *src = img->ptr;
    float *pa = patches->ptr;
#pragma omp parallel for collapse(2) if (n * g * g > 64)
    for (int64_t i = 0; i < n; i++)
        for (int64_t gy = 0; gy < g; gy++)
            for (int64_t gx = 0; gx < g; gx++) {
                float *o = pa + ((i * g + gy) * g + gx) * pp;
                for (int64_t ch = 0; ch < 3; ch++)
                    for (int64_t py = 0; py < p; py++)
                        memcpy(o + (ch * p + py) * p,
                               src + ((i * 3 + ch) * r + gy * p + py) * r + gx * p,
                               sizeof(float) * (size_t)p);
            }
    clipl_tensor *pc = NULL;
    rc = to_compute(m, patches, &pc);
    if (!rc)
        rc = lin(&m->patch, pc, &emb, CLIPL_ACT_NONE, NULL);
    clipl_tensor_release(pc);
    if (rc)
        goto done;
    if (emb->dt != CLIPL_F32) {
        clipl_tensor *ef = NULL;
        rc = clipl_tensor_to(emb, &ef, CLIPL_F32);
        clipl_tensor_release(emb);
        emb = ef;
        if (rc)
            goto done;
    }
    x = clipl_tensor_empty(CLIPL_F32, 3, (const int64_t[]){n, t, w});
    if (!x) {
        rc = clipl_errcode();
        goto done;
    }
    const float *cls = nn_p(m, m->class_emb)->ptr, *pos = nn_p(m, m->vis_pos)->ptr;
    const float *e = emb->ptr;
    float *xo = x->ptr;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < t; j++) {
            const float *s = j == 0 ? cls : e + (i * (t - 1) + j - 1) * w;
            float *o = xo + (i * t + j) * w;
            for (int64_t d = 0; d < w; d++)
                o[d] = s[d] + pos[j * w + d];
        }
    rc =
        clipl_layer_norm(x, 1, nn_p(m, m->ln_pre_w), nn_p(m, m->ln_pre_b), dst, LN_EPS, NULL, NULL);
done:
    clipl_tensor_release(img);
    clipl_tensor_release(patches);
    clipl_tensor_release(emb);
    clipl_tensor_release(x);
    return rc;
}

/* The ResNet tower keeps its activations channels-last (NHWC) in the compute dtype from the stem's
 * first convolution to the attention pool: no reorders between layers. */

/* dst = act(conv(x) [+ acc]) channels-last; x in any layout and float dtype; acc (the residual)
 * is overwritten and becomes dst. */
static int conv_run(const nn_conv *cv, const clipl_tensor *x, clipl_tensor *acc, clipl_tensor **dst)
{
    return clipl__conv2d_apply_nhwc(cv->w, x, acc, dst);
}

static int avgpool(const clipl_tensor *x, int64_t k, clipl_tensor **dst)
{
    return clipl__pool2d_nhwc(x, dst, CLIPL_POOL_AVG, k, k, k, k, 0, 0, 0);
}

/* images (any float dtype) -> [N, width, R/4, R/4] channels-last in the compute dtype. */
static int resnet_stem(const clipl_model *m, const clipl_tensor *images, clipl_tensor **dst)
{
    clipl_tensor *x = NULL, *a = NULL, *b = NULL;
    int rc = CLIPL_OK;
    if (images->dt != CLIPL_F32 && images->dt != CLIPL_BF16)
        rc = clipl_tensor_to(images, &a, m->dtype);
    if (!rc)
        rc = clipl__tensor_to_nhwc(a ? a : images, m->dtype, &x);
    REL(a);
    if (!rc)
        rc = conv_run(&m->stem[0], x, NULL, &a);
    if (!rc)
        rc = conv_run(&m->stem[1], a, NULL, &b);
    REL(a);
    if (!rc)
        rc = conv_run(&m->stem[2], b, NULL, &a);
    if (!rc)
        rc = avgpool(a, 2, dst);
    clipl_tensor_release(x);
    clipl_tensor_release(a);
    clipl_tensor_release(b);
    return rc;
}

/* x in the compute dtype (channels-last, or any layout, reordered by the first convolutions); dst
 * channels-last. conv3 adds its output to the identity in place and applies the final ReLU (sum
 * and eltwise post-ops). x_private: nobody reads x after the call, so a channels-last x may hold
 * that sum (dst is then x); else the identity is a copy. */
static int bottleneck(const nn_bottleneck *nb, clipl_tensor *x, int x_private, clipl_tensor **dst)
{
    clipl_tensor *a = NULL, *b = NULL, *id = NULL, *idp = NULL;
    int rc = conv_run(&nb->c1, x, NULL, &a);
    if (!rc)
        rc = conv_run(&nb->c2, a, NULL, &b);
    REL(a);
    if (!rc && nb->stride > 1) {
        rc = avgpool(b, nb->stride, &a);
        REL(b);
        b = a;
        a = NULL;
    }
    if (!rc && nb->has_ds) {
        const clipl_tensor *src = x;
        if (nb->stride > 1) {
            rc = avgpool(x, nb->stride, &idp);
            src = idp;
        }
        if (!rc)
            rc = conv_run(&nb->ds, src, NULL, &id);
    }
    if (!rc && !nb->has_ds) {
        if (x_private && clipl__tensor_is_nhwc(x))
            id = clipl_tensor_retain(x);
        else
            rc = clipl__tensor_to_nhwc(x, x->dt, &id);
    }
    if (!rc)
        rc = conv_run(&nb->c3, b, id, dst);
    clipl_tensor_release(b);
    clipl_tensor_release(id);
    clipl_tensor_release(idp);
    return rc;
}

/* Element (i, c, y, x) of src (f32 or bf16, any strides) as f32. */
static inline float at_f32(const clipl_tensor *src, int64_t off)
{
    if (src->dt == CLIPL_BF16)
        return clipl__bf16_to_f32(((const uint16_t *)src->ptr)[off]);
    return ((const float *)src->ptr)[off];
}

/* src [N, C, H, W] (the tower's output: channels-last, compute dtype; any layout works). */
static int attnpool(const clipl_model *m, const clipl_tensor *src, clipl_tensor **dst)
{
    const clipl_model_config *c = &m->cfg;
    clipl_tensor *tok = NULL, *q0 = NULL, *q = NULL, *qh = NULL, *conv = NULL;
    int64_t n = src->shape[0], ch = src->shape[1], w = src->shape[3], hw = src->shape[2] * w;
    int64_t s = hw + 1;
    int heads = c->vision_heads;
    int rc = CLIPL_OK;
    if (src->dt != CLIPL_F32 && src->dt != CLIPL_BF16) { /* f16 from a caller: read as f32 */
        if ((rc = read_f32(src, &conv)))
            goto done;
        src = conv;
    }
    tok = clipl_tensor_empty(CLIPL_F32, 3, (const int64_t[]){n, s, ch});
    q0 = clipl_tensor_empty(CLIPL_F32, 3, (const int64_t[]){n, 1, ch});
    if (!tok || !q0) {
        rc = clipl_errcode();
        goto done;
    }
    double *sums = calloc((size_t)(n * ch), sizeof *sums);
    if (!sums) {
        rc = clipl__err(CLIPL_ENOMEM, "attnpool: out of memory");
        goto done;
    }
    /* tokens [N, 1 + HW, C] = (mean over HW, then each position) + positional embedding; a
     * channels-last src is read row by row */
    const float *pos = nn_p(m, m->ap_pos)->ptr;
    const int64_t *st = src->strides;
    float *to = tok->ptr, *qo = q0->ptr;
#pragma omp parallel for if (n * ch * hw > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *t0 = to + i * s * ch;
        double *sum = sums + i * ch;
        for (int64_t j = 0; j < hw; j++) {
            int64_t base = i * st[0] + (j / w) * st[2] + (j % w) * st[3];
            float *row = t0 + (1 + j) * ch;
            const float *prow = pos + (1 + j) * ch;
            for (int64_t cc = 0; cc < ch; cc++) {
                float x = at_f32(src, base + cc * st[1]);
                sum[cc] += x;
                row[cc] = x + prow[cc];
            }
        }
        for (int64_t cc = 0; cc < ch; cc++) {
            t0[cc] = (float)(sum[cc] / (double)hw) + pos[cc];
            qo[i * ch + cc] = t0[cc];
        }
    }
    free(sums);
    /* One query (the mean token) attends over the S tokens, so the k and v projections fold
     * into it (the same sums, reassociated): per head, scores = tok @ (Wk_h^T q_h) (q_h . bk_h
     * shifts every score alike and drops out of the softmax), and o_h = (P_h @ tok) @ Wv_h^T + bv_h
     * (the probabilities sum to 1). That is ~C*C instead of S*C*C multiply-adds each for k and v;
     * computed in f32. */
    int64_t d = ch / heads;
    clipl_tensor *qc = NULL, *qf = NULL, *wk = NULL, *wv = NULL, *wvt = NULL, *qt = NULL,
                 *qt3 = NULL, *tokt = NULL, *sc = NULL, *pr = NULL, *xb = NULL, *xb4 = NULL,
                 *oh = NULL, *o2 = NULL, *oc = NULL, *o = NULL;
    int iwk = idx(m, "%s%s", "visual.attnpool.k_proj.weight", "");
    int iwv = idx(m, "%s%s", "visual.attnpool.v_proj.weight", "");
    int ibv = idx(m, "%s%s", "visual.attnpool.v_proj.bias", "");
    if (iwk < 0 || iwv < 0 || ibv < 0)
        rc = clipl_errcode();
    clipl_matmul_opts so;
    memset(&so, 0, sizeof so);
    so.scale = (float)(1.0 / sqrt((double)d));
    if (!rc)
        rc = to_compute(m, q0, &qc);
    if (!rc)
        rc = lin(&m->ap_q, qc, &q, CLIPL_ACT_NONE, NULL);
    if (!rc)
        rc = read_f32(q, &qf);
    if (!rc)
        rc = clipl_tensor_view(qf, &qh, 4, (const int64_t[]){n, heads, 1, d});
    if (!rc)
        rc = clipl_tensor_view(nn_p(m, iwk), &wk, 3, (const int64_t[]){heads, d, ch});
    if (!rc)
        rc = clipl_matmul(qh, wk, NULL, &qt, &so); /* [N, H, 1, C], scaled */
    if (!rc)
        rc = clipl_tensor_view(qt, &qt3, 3, (const int64_t[]){n, heads, ch});
    if (!rc)
        rc = clipl_tensor_transpose(tok, &tokt, 1, 2);
    if (!rc)
        rc = clipl_matmul(qt3, tokt, NULL, &sc, NULL); /* [N, H, S] */
    if (!rc)
        rc = clipl_softmax(sc, &pr, -1, 0);
    if (!rc)
        rc = clipl_matmul(pr, tok, NULL, &xb, NULL); /* [N, H, C] */
    if (!rc)
        rc = clipl_tensor_view(xb, &xb4, 4, (const int64_t[]){n, heads, 1, ch});
    if (!rc)
        rc = clipl_tensor_view(nn_p(m, iwv), &wv, 3, (const int64_t[]){heads, d, ch});
    if (!rc)
        rc = clipl_tensor_transpose(wv, &wvt, 1, 2);
    if (!rc)
        rc = clipl_matmul(xb4, wvt, NULL, &oh, NULL); /* [N, H, 1, D] */
    if (!rc)
        rc = clipl_tensor_view(oh, &o2, 3, (const int64_t[]){n, 1, ch});
    if (!rc)
        rc = clipl_add_(o2, nn_p(m, ibv), 1.0);
    if (!rc)
        rc = to_compute(m, o2, &oc);
    if (!rc)
        rc = lin(&m->ap_c, oc, &o, CLIPL_ACT_NONE, NULL);
    if (!rc) {
        clipl_tensor *of = NULL;
        rc = read_f32(o, &of);
        if (!rc)
            rc = clipl_tensor_view(of, dst, 2, (const int64_t[]){n, c->embed_dim});
        clipl_tensor_release(of);
    }
    clipl_tensor *tmp[] = {qc, qf, wk, wv, wvt, qt, qt3, tokt, sc, pr, xb, xb4, oh, o2, oc, o};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++)
        clipl_tensor_release(tmp[i]);
done:
    clipl_tensor_release(tok), clipl_tensor_release(q0);
    clipl_tensor_release(q), clipl_tensor_release(qh), clipl_tensor_release(conv);
    return rc;
}

static int vit_head(const clipl_model *m, const clipl_tensor *x, clipl_tensor **dst)
{
    clipl_tensor *t0 = NULL, *h = NULL, *c0 = NULL;
    int rc = clipl_tensor_select(x, &t0, 1, 0);
    if (!rc)
        rc = read_f32(t0, &c0);
    if (!rc)
        rc = clipl_layer_norm(c0, 1, nn_p(m, m->ln_post_w), nn_p(m, m->ln_post_b), &h, LN_EPS, NULL,
                              NULL);
    if (!rc)
        rc = lin(&m->vis_proj, h, dst, CLIPL_ACT_NONE, NULL);
    clipl_tensor_release(t0);
    clipl_tensor_release(c0);
    clipl_tensor_release(h);
    return rc;
}

static int encode_image(const clipl_model *m, const clipl_tensor *images, int nf, const int *blocks,
                        clipl_tensor **features, clipl_tensor **dst, const char *op)
{
    int rc = check_model(m, op);
    if (!rc)
        rc = check_images(m, images, op);
    if (rc)
        return rc;
    int nb = clipl_model_block_count(m, CLIPL_TOWER_VISUAL);
    for (int i = 0; i < nf; i++) {
        if (blocks[i] < 0 || blocks[i] >= nb)
            return clipl__err(CLIPL_EINDEX, "%s: feature block %d is out of range (0..%d)", op,
                              blocks[i], nb - 1);
        features[i] = NULL;
    }
    clipl_tensor *x = NULL, *y = NULL;
    rc = m->cfg.vision_kind == CLIPL_VISION_VIT ? vit_stem(m, images, &x)
                                                : resnet_stem(m, images, &x);
    for (int i = 0; i < nb && !rc; i++) {
        if (clipl__should_stop()) {
            rc = clipl__err(CLIPL_EINTERRUPTED, "%s: interrupted", op);
            break;
        }
        if (m->cfg.vision_kind == CLIPL_VISION_VIT) {
            rc = block_run(m, &m->vblocks[i], m->cfg.vision_heads, x, 0);
        } else {
            rc = bottleneck(&m->rblocks[i], x, 1, &y);
            clipl_tensor_release(x);
            x = y;
            y = NULL;
        }
        for (int f = 0; f < nf && !rc; f++)
            if (blocks[f] == i && !features[f])
                rc = m->cfg.vision_kind == CLIPL_VISION_VIT ? clipl_tensor_clone(x, &features[f])
                                                            : owned_f32(x, &features[f]);
    }
    if (!rc)
        rc = m->cfg.vision_kind == CLIPL_VISION_VIT ? vit_head(m, x, dst) : attnpool(m, x, dst);
    clipl_tensor_release(x);
    if (rc)
        for (int f = 0; f < nf; f++)
            REL(features[f]);
    return rc;
}

int clipl_model_encode_image(const clipl_model *m, const clipl_tensor *images, clipl_tensor **dst)
{
    if (!dst)
        return clipl__err(CLIPL_EINVAL, "model_encode_image: NULL dst");
    return encode_image(m, images, 0, NULL, NULL, dst, "model_encode_image");
}

int clipl_model_encode_image_features(const clipl_model *m, const clipl_tensor *images,
                                      int n_blocks, const int *blocks, clipl_tensor **features,
                                      clipl_tensor **dst)
{
    if (!dst || n_blocks < 0 || (n_blocks > 0 && (!blocks || !features)))
        return clipl__err(CLIPL_EINVAL, "model_encode_image_features: bad arguments");
    return encode_image(m, images, n_blocks, blocks, features, dst, "model_encode_image_features");
}

/* ---- text ---------------------------------------------------------------------------------------
 */

static int check_tokens(const clipl_model *m, const clipl_tensor *tokens, const char *op)
{
    if (!tokens)
        return clipl__err(CLIPL_EINVAL, "%s: tokens is NULL", op);
    if (tokens->dt != CLIPL_I32 && tokens->dt != CLIPL_I64)
        return clipl__err(CLIPL_EINVAL, "%s: tokens must be i32 or i64, got %s", op,
                          clipl_dtype_name(tokens->dt));
    if (tokens->ndim != 2 || tokens->shape[0] < 1 || tokens->shape[1] < 1 ||
        tokens->shape[1] > m->cfg.context_length) {
        char b[64];
        return clipl__err(CLIPL_ESHAPE, "%s: tokens must be [N, T] with 1 <= T <= %d, got [%s]", op,
                          m->cfg.context_length, clipl__tshape(b, sizeof b, tokens));
    }
    return CLIPL_OK;
}

static int64_t tok_at(const clipl_tensor *t, int64_t i, int64_t j)
{
    const char *p = (const char *)t->ptr +
                    (i * t->strides[0] + j * t->strides[1]) * (int64_t)clipl_dtype_size(t->dt);
    return t->dt == CLIPL_I32 ? *(const int32_t *)p : *(const int64_t *)p;
}

/* Position of the first maximum of row i among its first t entries. */
static int64_t argmax_row(const clipl_tensor *tokens, int64_t i)
{
    int64_t best = 0, bv = tok_at(tokens, i, 0);
    for (int64_t j = 1; j < tokens->shape[1]; j++) {
        int64_t v = tok_at(tokens, i, j);
        if (v > bv)
            bv = v, best = j;
    }
    return best;
}

/* x [N, T, W] = token_embedding[tokens[:, :T]] + positional_embedding[:T]. */
static int text_embed(const clipl_model *m, const clipl_tensor *tokens, int64_t t,
                      clipl_tensor **dst, const char *op)
{
    int64_t n = tokens->shape[0], w = m->cfg.transformer_width, v = m->cfg.vocab_size;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < t; j++) {
            int64_t id = tok_at(tokens, i, j);
            if (id < 0 || id >= v)
                return clipl__err(CLIPL_EINDEX,
                                  "%s: token id %lld at [%lld, %lld] is out of range for "
                                  "vocab_size %lld",
                                  op, (long long)id, (long long)i, (long long)j, (long long)v);
        }
    clipl_tensor *x = clipl_tensor_empty(CLIPL_F32, 3, (const int64_t[]){n, t, w});
    if (!x)
        return clipl_errcode();
    const float *emb = nn_p(m, m->tok_emb)->ptr, *pos = nn_p(m, m->txt_pos)->ptr;
    float *o = x->ptr;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < t; j++) {
            const float *e = emb + tok_at(tokens, i, j) * w;
            float *r = o + (i * t + j) * w;
            for (int64_t d = 0; d < w; d++)
                r[d] = e[d] + pos[j * w + d];
        }
    *dst = x;
    return CLIPL_OK;
}

static int text_head(const clipl_model *m, const clipl_tensor *x, const clipl_tensor *tokens,
                     clipl_tensor **dst, const char *op)
{
    int64_t n = x->shape[0], t = x->shape[1], w = x->shape[2];
    clipl_tensor *xc = NULL, *rows = NULL, *h = NULL;
    int rc = read_f32(x, &xc);
    if (rc)
        return rc;
    rows = clipl_tensor_empty(CLIPL_F32, 2, (const int64_t[]){n, w});
    if (!rows) {
        rc = clipl_errcode();
        goto done;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t e = argmax_row(tokens, i);
        if (e >= t) {
            rc = clipl__err(CLIPL_EINDEX,
                            "%s: the end token of row %lld is at %lld, past the %lld positions "
                            "given",
                            op, (long long)i, (long long)e, (long long)t);
            goto done;
        }
        memcpy((float *)rows->ptr + i * w, (const float *)xc->ptr + (i * t + e) * w,
               sizeof(float) * (size_t)w);
    }
    rc = clipl_layer_norm(rows, 1, nn_p(m, m->ln_final_w), nn_p(m, m->ln_final_b), &h, LN_EPS, NULL,
                          NULL);
    if (!rc)
        rc = lin(&m->txt_proj, h, dst, CLIPL_ACT_NONE, NULL);
done:
    clipl_tensor_release(xc);
    clipl_tensor_release(rows);
    clipl_tensor_release(h);
    return rc;
}

/* The text tower over the first t positions of tokens [N, >= t] -> dst [N, E]. */
static int text_run(const clipl_model *m, const clipl_tensor *tokens, int64_t t, clipl_tensor **dst,
                    const char *op)
{
    clipl_tensor *x = NULL;
    int rc = text_embed(m, tokens, t, &x, op);
    for (int i = 0; i < m->cfg.transformer_layers && !rc; i++) {
        if (clipl__should_stop())
            rc = clipl__err(CLIPL_EINTERRUPTED, "%s: interrupted", op);
        else
            rc = block_run(m, &m->tblocks[i], m->cfg.transformer_heads, x, 1);
    }
    if (!rc)
        rc = text_head(m, x, tokens, dst, op);
    clipl_tensor_release(x);
    return rc;
}

typedef struct row_len {
    int64_t len, row;
} row_len;

static int by_len(const void *a, const void *b)
{
    const row_len *x = a, *y = b;
    return x->len != y->len ? (x->len < y->len ? -1 : 1) : (x->row < y->row ? -1 : 1);
}

int clipl_model_encode_text_ex(const clipl_model *m, const clipl_tensor *tokens, clipl_tensor **dst,
                               int flags)
{
    const char *op = "model_encode_text";
    int rc = check_model(m, op);
    if (!rc)
        rc = check_tokens(m, tokens, op);
    if (!rc && !dst)
        rc = clipl__err(CLIPL_EINVAL, "%s: NULL dst", op);
    if (rc)
        return rc;
    int64_t n = tokens->shape[0];
    if (flags & CLIPL_TEXT_FULL_CONTEXT)
        return text_run(m, tokens, tokens->shape[1], dst, op);
    /* The mask is causal, so positions after a row's end token never influence its pooled
     * position: each row needs only its prefix. Rows are grouped by length (sorted; a group
     * ends when a row is more than 1.5x as long as the group's shortest and the group has 4
     * rows) and each group runs up to its longest end token. */
    row_len *rl = malloc(sizeof *rl * (size_t)n);
    if (!rl)
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
    for (int64_t i = 0; i < n; i++)
        rl[i] = (row_len){argmax_row(tokens, i) + 1, i};
    qsort(rl, (size_t)n, sizeof *rl, by_len);
    int64_t ngroups = 1;
    for (int64_t i = 1, first = 0; i < n; i++)
        if (rl[i].len * 2 > rl[first].len * 3 && i - first >= 4)
            ngroups++, first = i;
    if (ngroups == 1) {
        int64_t t = rl[n - 1].len;
        free(rl);
        return text_run(m, tokens, t, dst, op);
    }
    int64_t e = m->cfg.embed_dim;
    clipl_tensor *out = clipl_tensor_empty(CLIPL_F32, 2, (const int64_t[]){n, e});
    if (!out) {
        free(rl);
        return clipl_errcode();
    }
    for (int64_t first = 0; first < n && !rc;) {
        int64_t last = first + 1;
        while (last < n && !(rl[last].len * 2 > rl[first].len * 3 && last - first >= 4))
            last++;
        int64_t g = last - first, t = rl[last - 1].len;
        clipl_tensor *sub = clipl_tensor_empty(CLIPL_I64, 2, (const int64_t[]){g, t}), *r = NULL;
        if (!sub) {
            rc = clipl_errcode();
            break;
        }
        for (int64_t k = 0; k < g; k++)
            for (int64_t j = 0; j < t; j++)
                ((int64_t *)sub->ptr)[k * t + j] = tok_at(tokens, rl[first + k].row, j);
        rc = text_run(m, sub, t, &r, op);
        for (int64_t k = 0; k < g && !rc; k++)
            memcpy((float *)out->ptr + rl[first + k].row * e, (const float *)r->ptr + k * e,
                   sizeof(float) * (size_t)e);
        clipl_tensor_release(sub);
        clipl_tensor_release(r);
        first = last;
    }
    free(rl);
    if (rc)
        clipl_tensor_release(out);
    else
        *dst = out;
    return rc;
}

int clipl_model_encode_text(const clipl_model *m, const clipl_tensor *tokens, clipl_tensor **dst)
{
    return clipl_model_encode_text_ex(m, tokens, dst, 0);
}

/* ---- logits -------------------------------------------------------------------------------------
 */

int clipl_model_logits_from_features(const clipl_model *m, const clipl_tensor *image_features,
                                     const clipl_tensor *text_features,
                                     clipl_tensor **logits_per_image,
                                     clipl_tensor **logits_per_text)
{
    const char *op = "model_logits";
    if (!m || !image_features || !text_features)
        return clipl__err(CLIPL_EINVAL, "%s: NULL argument", op);
    if (image_features->ndim != 2 || text_features->ndim != 2 ||
        image_features->shape[1] != text_features->shape[1]) {
        char a[64], b[64];
        return clipl__err(
            CLIPL_ESHAPE, "%s: features must be [Ni, E] and [Nt, E], got [%s] and [%s]", op,
            clipl__tshape(a, sizeof a, image_features), clipl__tshape(b, sizeof b, text_features));
    }
    clipl_tensor *fi = NULL, *ft = NULL, *li = NULL, *lt = NULL;
    int rc = read_f32(image_features, &fi);
    if (!rc)
        rc = read_f32(text_features, &ft);
    int64_t ni = image_features->shape[0], nt = text_features->shape[0],
            e = image_features->shape[1];
    if (!rc) {
        li = clipl_tensor_empty(CLIPL_F32, 2, (const int64_t[]){ni, nt});
        lt = clipl_tensor_empty(CLIPL_F32, 2, (const int64_t[]){nt, ni});
        if (!li || !lt)
            rc = clipl_errcode();
    }
    if (!rc) {
        const float *a = fi->ptr, *b = ft->ptr;
        double scale = clipl_model_logit_scale(m);
        double *nb = calloc((size_t)nt + 1, sizeof *nb);
        if (!nb) {
            rc = clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
            goto done;
        }
        for (int64_t j = 0; j < nt; j++) {
            double s = 0;
            for (int64_t d = 0; d < e; d++)
                s += (double)b[j * e + d] * b[j * e + d];
            nb[j] = sqrt(s);
        }
        for (int64_t i = 0; i < ni; i++) {
            double s = 0;
            for (int64_t d = 0; d < e; d++)
                s += (double)a[i * e + d] * a[i * e + d];
            double na = sqrt(s);
            for (int64_t j = 0; j < nt; j++) {
                double dot = 0;
                for (int64_t d = 0; d < e; d++)
                    dot += (double)a[i * e + d] * b[j * e + d];
                float v = (float)(scale * dot / (na * nb[j]));
                ((float *)li->ptr)[i * nt + j] = v;
                ((float *)lt->ptr)[j * ni + i] = v;
            }
        }
        free(nb);
    }
done:
    clipl_tensor_release(fi);
    clipl_tensor_release(ft);
    if (!rc) {
        if (logits_per_image)
            *logits_per_image = li;
        else
            clipl_tensor_release(li);
        if (logits_per_text)
            *logits_per_text = lt;
        else
            clipl_tensor_release(lt);
    } else {
        clipl_tensor_release(li);
        clipl_tensor_release(lt);
    }
    return rc;
}

int clipl_model_logits(const clipl_model *m, const clipl_tensor *images, const clipl_tensor *tokens,
                       clipl_tensor **logits_per_image, clipl_tensor **logits_per_text)
{
    clipl_tensor *fi = NULL, *ft = NULL;
    int rc = clipl_model_encode_image(m, images, &fi);
    if (!rc)
        rc = clipl_model_encode_text(m, tokens, &ft);
    if (!rc)
        rc = clipl_model_logits_from_features(m, fi, ft, logits_per_image, logits_per_text);
    clipl_tensor_release(fi);
    clipl_tensor_release(ft);
    return rc;
}

/* ---- single steps -------------------------------------------------------------------------------
 */

int clipl_model_block_count(const clipl_model *m, int tower)
{
    if (!m)
        return 0;
    if (tower == CLIPL_TOWER_TEXT)
        return m->cfg.transformer_layers;
    if (tower != CLIPL_TOWER_VISUAL)
        return 0;
    if (m->cfg.vision_kind == CLIPL_VISION_VIT)
        return m->cfg.vision_layers[0];
    return m->cfg.vision_layers[0] + m->cfg.vision_layers[1] + m->cfg.vision_layers[2] +
           m->cfg.vision_layers[3];
}

int clipl_model_visual_stem(const clipl_model *m, const clipl_tensor *images, clipl_tensor **dst)
{
    const char *op = "model_visual_stem";
    int rc = check_model(m, op);
    if (!rc)
        rc = check_images(m, images, op);
    if (!rc && !dst)
        rc = clipl__err(CLIPL_EINVAL, "%s: NULL dst", op);
    if (rc)
        return rc;
    if (m->cfg.vision_kind == CLIPL_VISION_VIT)
        return vit_stem(m, images, dst);
    clipl_tensor *x = NULL;
    rc = resnet_stem(m, images, &x);
    if (!rc)
        rc = read_f32(x, dst);
    clipl_tensor_release(x);
    return rc;
}

int clipl_model_block_forward(const clipl_model *m, int tower, int i, const clipl_tensor *src,
                              clipl_tensor **dst)
{
    const char *op = "model_block_forward";
    int rc = check_model(m, op);
    if (rc)
        return rc;
    if (tower != CLIPL_TOWER_VISUAL && tower != CLIPL_TOWER_TEXT)
        return clipl__err(CLIPL_EINVAL, "%s: tower must be visual (0) or text (1), got %d", op,
                          tower);
    int nb = clipl_model_block_count(m, tower);
    if (i < 0 || i >= nb)
        return clipl__err(CLIPL_EINDEX, "%s: block %d of the %s tower is out of range (0..%d)", op,
                          i, tower ? "text" : "visual", nb - 1);
    if (!dst || (rc = check_float(src, op, "src")))
        return rc ? rc : clipl__err(CLIPL_EINVAL, "%s: NULL dst", op);
    char b[64];
    if (tower == CLIPL_TOWER_VISUAL && m->cfg.vision_kind == CLIPL_VISION_RESNET) {
        if (src->ndim != 4)
            return clipl__err(CLIPL_ESHAPE, "%s: a ResNet block takes [N, C, H, W], got [%s]", op,
                              clipl__tshape(b, sizeof b, src));
        clipl_tensor *x = NULL, *y = NULL;
        rc = src->dt == m->dtype ? clipl_tensor_contiguous(src, &x)
                                 : clipl_tensor_to(src, &x, m->dtype);
        if (!rc)
            rc = bottleneck(&m->rblocks[i], x, 0, &y);
        if (!rc)
            rc = read_f32(y, dst);
        clipl_tensor_release(x);
        clipl_tensor_release(y);
        return rc;
    }
    int64_t w = tower == CLIPL_TOWER_TEXT ? m->cfg.transformer_width : m->cfg.vision_width;
    if (src->ndim != 3 || src->shape[2] != w || src->shape[0] < 1 || src->shape[1] < 1)
        return clipl__err(CLIPL_ESHAPE, "%s: a %s block takes [N, T, %lld], got [%s]", op,
                          tower ? "text" : "visual", (long long)w, clipl__tshape(b, sizeof b, src));
    clipl_tensor *x = NULL;
    rc = owned_f32(src, &x);
    if (!rc)
        rc = tower == CLIPL_TOWER_TEXT
                 ? block_run(m, &m->tblocks[i], m->cfg.transformer_heads, x, 1)
                 : block_run(m, &m->vblocks[i], m->cfg.vision_heads, x, 0);
    if (rc)
        clipl_tensor_release(x);
    else
        *dst = x;
    return rc;
}

int clipl_model_visual_head(const clipl_model *m, const clipl_tensor *src, clipl_tensor **dst)
{
    const char *op = "model_visual_head";
    int rc = check_model(m, op);
    if (!rc)
        rc = check_float(src, op, "src");
    if (!rc && !dst)
        rc = clipl__err(CLIPL_EINVAL, "%s: NULL dst", op);
    if (rc)
        return rc;
    char b[64];
    if (m->cfg.vision_kind == CLIPL_VISION_VIT) {
        if (src->ndim != 3 || src->shape[2] != m->cfg.vision_width || src->shape[1] < 1)
            return clipl__err(CLIPL_ESHAPE, "%s: expected [N, T, %d], got [%s]", op,
                              m->cfg.vision_width, clipl__tshape(b, sizeof b, src));
        return vit_head(m, src, dst);
    }
    if (src->ndim != 4 || src->shape[1] != 32 * (int64_t)m->cfg.vision_width ||
        src->shape[2] * src->shape[3] + 1 != nn_p(m, m->ap_pos)->shape[0])
        return clipl__err(CLIPL_ESHAPE, "%s: expected [N, %d, %d, %d], got [%s]", op,
                          32 * m->cfg.vision_width, m->cfg.image_resolution / 32,
                          m->cfg.image_resolution / 32, clipl__tshape(b, sizeof b, src));
    return attnpool(m, src, dst);
}

int clipl_model_visual_ln_post(const clipl_model *m, const clipl_tensor *src, clipl_tensor **dst)
{
    const char *op = "model_visual_ln_post";
    int rc = check_model(m, op);
    if (!rc)
        rc = check_float(src, op, "src");
    if (rc)
        return rc;
    if (m->cfg.vision_kind != CLIPL_VISION_VIT)
        return clipl__err(CLIPL_EUNSUPPORTED, "%s: a ResNet model has no ln_post", op);
    char b[64];
    if (src->ndim != 3 || src->shape[2] != m->cfg.vision_width)
        return clipl__err(CLIPL_ESHAPE, "%s: expected [N, T, %d], got [%s]", op,
                          m->cfg.vision_width, clipl__tshape(b, sizeof b, src));
    clipl_tensor *x = NULL;
    rc = read_f32(src, &x);
    if (!rc)
        rc = clipl_layer_norm(x, 1, nn_p(m, m->ln_post_w), nn_p(m, m->ln_post_b), dst, LN_EPS, NULL,
                              NULL);
    clipl_tensor_release(x);
    return rc;
}

int clipl_model_text_embed(const clipl_model *m, const clipl_tensor *tokens, clipl_tensor **dst)
{
    const char *op = "model_text_embed";
    int rc = check_model(m, op);
    if (!rc)
        rc = check_tokens(m, tokens, op);
    if (!rc && !dst)
        rc = clipl__err(CLIPL_EINVAL, "%s: NULL dst", op);
    if (rc)
        return rc;
    return text_embed(m, tokens, tokens->shape[1], dst, op);
}

int clipl_model_text_head(const clipl_model *m, const clipl_tensor *src, const clipl_tensor *tokens,
                          clipl_tensor **dst)
{
    const char *op = "model_text_head";
    int rc = check_model(m, op);
    if (!rc)
        rc = check_tokens(m, tokens, op);
    if (!rc)
        rc = check_float(src, op, "src");
    if (!rc && !dst)
        rc = clipl__err(CLIPL_EINVAL, "%s: NULL dst", op);
    if (rc)
        return rc;
    char b[64], c[64];
    if (src->ndim != 3 || src->shape[0] != tokens->shape[0] ||
        src->shape[2] != m->cfg.transformer_width)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: src [%s] does not fit tokens [%s] (expected [%lld, T, "
                          "%d])",
                          op, clipl__tshape(b, sizeof b, src), clipl__tshape(c, sizeof c, tokens),
                          (long long)tokens->shape[0], m->cfg.transformer_width);
    return text_head(m, src, tokens, dst, op);
}
