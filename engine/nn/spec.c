/*
 * spec.c - what an architecture implies: the state_dict entries of OpenAI's CLIP (names, shapes,
 * order, which are buffers), the parameter count, the FLOPs, and config consistency checks.
 */
#include "nn.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add(nn_spec *s, int buffer, int init, float std, int ndim, const int64_t *shape,
               const char *fmt, ...) CLIPL_PRINTF(7, 8);

static int add(nn_spec *s, int buffer, int init, float std, int ndim, const int64_t *shape,
               const char *fmt, ...)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        nn_entry *e = realloc(s->e, sizeof *e * (size_t)cap);
        if (!e)
            return clipl__err(CLIPL_ENOMEM, "model: out of memory building the parameter list");
        s->e = e;
        s->cap = cap;
    }
    nn_entry *e = &s->e[s->n++];
    memset(e, 0, sizeof *e);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->buffer = buffer;
    e->init = init;
    e->std = std;
    return CLIPL_OK;
}

#define SHAPE(...)                                                                                 \
    (const int64_t[]) { __VA_ARGS__ }
#define P1(init, std, a, ...) add(s, 0, init, std, 1, SHAPE(a), __VA_ARGS__)
#define P2(init, std, a, b, ...) add(s, 0, init, std, 2, SHAPE(a, b), __VA_ARGS__)

static int layer_norm(nn_spec *s, int64_t w, const char *prefix)
{
    int rc = P1(NN_INIT_ONES, 0, w, "%s.weight", prefix);
    if (!rc)
        rc = P1(NN_INIT_ZEROS, 0, w, "%s.bias", prefix);
    return rc;
}

/* Transformer(width, layers) under prefix ("transformer" or "visual.transformer"). */
static int transformer(nn_spec *s, const char *prefix, int64_t w, int layers)
{
    float attn_std = (float)(1.0 / sqrt((double)w));
    float proj_std = (float)(attn_std / sqrt(2.0 * layers));
    float fc_std = (float)(1.0 / sqrt(2.0 * (double)w));
    int rc = CLIPL_OK;
    for (int i = 0; i < layers && !rc; i++) {
        char b[64];
        snprintf(b, sizeof b, "%s.resblocks.%d", prefix, i);
        rc = P2(NN_INIT_NORMAL, attn_std, 3 * w, w, "%s.attn.in_proj_weight", b);
        if (!rc)
            rc = P1(NN_INIT_ZEROS, 0, 3 * w, "%s.attn.in_proj_bias", b);
        if (!rc)
            rc = P2(NN_INIT_NORMAL, proj_std, w, w, "%s.attn.out_proj.weight", b);
        if (!rc)
            rc = P1(NN_INIT_ZEROS, 0, w, "%s.attn.out_proj.bias", b);
        char n[80];
        snprintf(n, sizeof n, "%s.ln_1", b);
        if (!rc)
            rc = layer_norm(s, w, n);
        if (!rc)
            rc = P2(NN_INIT_NORMAL, fc_std, 4 * w, w, "%s.mlp.c_fc.weight", b);
        if (!rc)
            rc = P1(NN_INIT_ZEROS, 0, 4 * w, "%s.mlp.c_fc.bias", b);
        if (!rc)
            rc = P2(NN_INIT_NORMAL, proj_std, w, 4 * w, "%s.mlp.c_proj.weight", b);
        if (!rc)
            rc = P1(NN_INIT_ZEROS, 0, w, "%s.mlp.c_proj.bias", b);
        snprintf(n, sizeof n, "%s.ln_2", b);
        if (!rc)
            rc = layer_norm(s, w, n);
    }
    return rc;
}

static int conv(nn_spec *s, int64_t out, int64_t in, int64_t k, const char *name)
{
    float std = (float)(1.0 / sqrt((double)(in * k * k)));
    return add(s, 0, NN_INIT_NORMAL, std, 4, SHAPE(out, in, k, k), "%s", name);
}

static int batch_norm(nn_spec *s, int64_t c, const char *prefix)
{
    int rc = P1(NN_INIT_ONES, 0, c, "%s.weight", prefix);
    if (!rc)
        rc = P1(NN_INIT_ZEROS, 0, c, "%s.bias", prefix);
    if (!rc)
        rc = add(s, 1, NN_INIT_ZEROS, 0, 1, SHAPE(c), "%s.running_mean", prefix);
    if (!rc)
        rc = add(s, 1, NN_INIT_VAR, 0, 1, SHAPE(c), "%s.running_var", prefix);
    return rc;
}

static int conv_bn(nn_spec *s, int64_t out, int64_t in, int64_t k, const char *conv_name,
                   const char *bn_name)
{
    int rc = conv(s, out, in, k, conv_name);
    return rc ? rc : batch_norm(s, out, bn_name);
}

static int resnet(nn_spec *s, const clipl_model_config *c)
{
    int64_t w = c->vision_width;
    int rc = CLIPL_OK;
    /* the 3-layer stem; module order: conv1, bn1, (relu1), conv2, bn2, ..., avgpool */
    rc = conv_bn(s, w / 2, 3, 3, "visual.conv1.weight", "visual.bn1");
    if (!rc)
        rc = conv_bn(s, w / 2, w / 2, 3, "visual.conv2.weight", "visual.bn2");
    if (!rc)
        rc = conv_bn(s, w, w / 2, 3, "visual.conv3.weight", "visual.bn3");
    int64_t inplanes = w;
    for (int l = 0; l < 4 && !rc; l++) {
        int64_t planes = w << l;
        int stride = l == 0 ? 1 : 2;
        for (int b = 0; b < c->vision_layers[l] && !rc; b++) {
            char p[64], n1[96], n2[96];
            snprintf(p, sizeof p, "visual.layer%d.%d", l + 1, b);
            int st = b == 0 ? stride : 1;
            snprintf(n1, sizeof n1, "%s.conv1.weight", p);
            snprintf(n2, sizeof n2, "%s.bn1", p);
            rc = conv_bn(s, planes, inplanes, 1, n1, n2);
            snprintf(n1, sizeof n1, "%s.conv2.weight", p);
            snprintf(n2, sizeof n2, "%s.bn2", p);
            if (!rc)
                rc = conv_bn(s, planes, planes, 3, n1, n2);
            snprintf(n1, sizeof n1, "%s.conv3.weight", p);
            snprintf(n2, sizeof n2, "%s.bn3", p);
            if (!rc)
                rc = conv_bn(s, planes * 4, planes, 1, n1, n2);
            if (!rc && (st > 1 || inplanes != planes * 4)) {
                snprintf(n1, sizeof n1, "%s.downsample.0.weight", p);
                snprintf(n2, sizeof n2, "%s.downsample.1", p);
                rc = conv_bn(s, planes * 4, inplanes, 1, n1, n2);
            }
            inplanes = planes * 4;
        }
    }
    int64_t ed = w * 32, grid = c->image_resolution / 32;
    float std = (float)(1.0 / sqrt((double)ed));
    if (!rc)
        rc = P2(NN_INIT_NORMAL, std, grid * grid + 1, ed, "visual.attnpool.positional_embedding");
    const char *names[] = {"k_proj", "q_proj", "v_proj", "c_proj"};
    for (int i = 0; i < 4 && !rc; i++) {
        int64_t out = i == 3 ? c->embed_dim : ed;
        rc = P2(NN_INIT_NORMAL, std, out, ed, "visual.attnpool.%s.weight", names[i]);
        if (!rc)
            rc = P1(NN_INIT_ZEROS, 0, out, "visual.attnpool.%s.bias", names[i]);
    }
    return rc;
}

static int vit(nn_spec *s, const clipl_model_config *c)
{
    int64_t w = c->vision_width, p = c->vision_patch_size, g = c->image_resolution / p;
    float scale = (float)(1.0 / sqrt((double)w));
    int rc = P1(NN_INIT_NORMAL, scale, w, "visual.class_embedding");
    if (!rc)
        rc = P2(NN_INIT_NORMAL, scale, g * g + 1, w, "visual.positional_embedding");
    if (!rc)
        rc = P2(NN_INIT_NORMAL, scale, w, c->embed_dim, "visual.proj");
    if (!rc)
        rc = conv(s, w, 3, p, "visual.conv1.weight");
    if (!rc)
        rc = layer_norm(s, w, "visual.ln_pre");
    if (!rc)
        rc = transformer(s, "visual.transformer", w, c->vision_layers[0]);
    if (!rc)
        rc = layer_norm(s, w, "visual.ln_post");
    return rc;
}

int clipl__nn_spec_build(const clipl_model_config *c, nn_spec *s)
{
    memset(s, 0, sizeof *s);
    int rc = clipl_model_config_check(c);
    if (rc)
        return rc;
    int64_t tw = c->transformer_width;
    /* CLIP's own parameters come first in its state_dict, then visual, transformer,
     * token_embedding, ln_final */
    rc = P2(NN_INIT_NORMAL, 0.01f, c->context_length, tw, "positional_embedding");
    if (!rc)
        rc = P2(NN_INIT_NORMAL, (float)(1.0 / sqrt((double)tw)), tw, c->embed_dim,
                "text_projection");
    if (!rc)
        rc = add(s, 0, NN_INIT_LOGIT_SCALE, 0, 0, NULL, "logit_scale");
    if (!rc)
        rc = c->vision_kind == CLIPL_VISION_VIT ? vit(s, c) : resnet(s, c);
    if (!rc)
        rc = transformer(s, "transformer", tw, c->transformer_layers);
    if (!rc)
        rc = P2(NN_INIT_NORMAL, 0.02f, c->vocab_size, tw, "token_embedding.weight");
    if (!rc)
        rc = layer_norm(s, tw, "ln_final");
    if (rc)
        clipl__nn_spec_free(s);
    return rc;
}

void clipl__nn_spec_free(nn_spec *s)
{
    free(s->e);
    memset(s, 0, sizeof *s);
}

int clipl_model_config_check(const clipl_model_config *c)
{
    if (!c)
        return clipl__err(CLIPL_EINVAL, "model config: NULL");
#define POS(f)                                                                                     \
    if (c->f <= 0)                                                                                 \
    return clipl__err(CLIPL_EINVAL, "model config: " #f " must be positive, got %d", (int)c->f)
    POS(embed_dim);
    POS(image_resolution);
    POS(vision_width);
    POS(vision_heads);
    POS(context_length);
    POS(vocab_size);
    POS(transformer_width);
    POS(transformer_heads);
    POS(transformer_layers);
#undef POS
    if (c->transformer_width % c->transformer_heads)
        return clipl__err(CLIPL_EINVAL,
                          "model config: transformer_heads %d does not divide transformer_width %d",
                          c->transformer_heads, c->transformer_width);
    if (c->act != CLIPL_ACT_QUICK_GELU && c->act != CLIPL_ACT_GELU)
        return clipl__err(CLIPL_EINVAL, "model config: act must be quick_gelu or gelu, got %d",
                          c->act);
    if (c->vision_kind == CLIPL_VISION_VIT) {
        if (c->vision_patch_size <= 0 || c->image_resolution % c->vision_patch_size)
            return clipl__err(CLIPL_EINVAL,
                              "model config: image_resolution %d is not a multiple of "
                              "vision_patch_size %d",
                              c->image_resolution, c->vision_patch_size);
        if (c->vision_layers[0] <= 0)
            return clipl__err(CLIPL_EINVAL, "model config: vision_layers[0] must be positive");
        if (c->vision_width % c->vision_heads)
            return clipl__err(CLIPL_EINVAL,
                              "model config: vision_heads %d does not divide vision_width %d",
                              c->vision_heads, c->vision_width);
    } else if (c->vision_kind == CLIPL_VISION_RESNET) {
        if (c->image_resolution % 32)
            return clipl__err(CLIPL_EINVAL,
                              "model config: a ResNet's image_resolution must be a multiple of "
                              "32, got %d",
                              c->image_resolution);
        if (c->vision_width % 2)
            return clipl__err(CLIPL_EINVAL, "model config: ResNet vision_width must be even");
        for (int i = 0; i < 4; i++)
            if (c->vision_layers[i] <= 0)
                return clipl__err(CLIPL_EINVAL,
                                  "model config: vision_layers[%d] must be positive, got %d", i,
                                  c->vision_layers[i]);
        if ((c->vision_width * 32) % c->vision_heads)
            return clipl__err(CLIPL_EINVAL,
                              "model config: vision_heads %d does not divide the attention pool "
                              "width %d",
                              c->vision_heads, c->vision_width * 32);
    } else {
        return clipl__err(CLIPL_EINVAL, "model config: unknown vision_kind %d", c->vision_kind);
    }
    return CLIPL_OK;
}

int64_t clipl_model_config_num_params(const clipl_model_config *cfg)
{
    nn_spec s;
    if (clipl__nn_spec_build(cfg, &s))
        return -1;
    int64_t total = 0;
    for (int i = 0; i < s.n; i++) {
        if (s.e[i].buffer)
            continue;
        int64_t n = 1;
        for (int d = 0; d < s.e[i].ndim; d++)
            n *= s.e[i].shape[d];
        total += n;
    }
    clipl__nn_spec_free(&s);
    return total;
}

/* FLOPs of one residual attention block over T tokens of width w. */
static int64_t block_flops(int64_t t, int64_t w)
{
    return 2 * t * w * 3 * w        /* in_proj */
           + 2 * 2 * t * t * w      /* q k^T and probs v */
           + 2 * t * w * w          /* out_proj */
           + 2 * 2 * t * w * 4 * w; /* c_fc, c_proj */
}

static int64_t conv_flops(int64_t out, int64_t in, int64_t k, int64_t oh)
{
    return 2 * out * in * k * k * oh * oh;
}

int clipl_model_config_flops(const clipl_model_config *c, int64_t *image_flops, int64_t *text_flops)
{
    int rc = clipl_model_config_check(c);
    if (rc)
        return rc;
    int64_t img = 0;
    if (c->vision_kind == CLIPL_VISION_VIT) {
        int64_t w = c->vision_width, p = c->vision_patch_size, g = c->image_resolution / p;
        img += 2 * g * g * 3 * p * p * w;
        img += c->vision_layers[0] * block_flops(g * g + 1, w);
        img += 2 * w * c->embed_dim;
    } else {
        int64_t w = c->vision_width, r = c->image_resolution / 2;
        img += conv_flops(w / 2, 3, 3, r) + conv_flops(w / 2, w / 2, 3, r) +
               conv_flops(w, w / 2, 3, r);
        r /= 2; /* stem pool */
        int64_t inplanes = w;
        for (int l = 0; l < 4; l++) {
            int64_t planes = w << l;
            for (int b = 0; b < c->vision_layers[l]; b++) {
                int st = (b == 0 && l > 0) ? 2 : 1;
                img += conv_flops(planes, inplanes, 1, r) + conv_flops(planes, planes, 3, r);
                int64_t ro = r / st;
                img += conv_flops(planes * 4, planes, 1, ro);
                if (st > 1 || inplanes != planes * 4)
                    img += conv_flops(planes * 4, inplanes, 1, ro);
                r = ro;
                inplanes = planes * 4;
            }
        }
        int64_t ed = 32 * w, s = r * r + 1;
        img += 2 * 2 * s * ed * ed + 2 * ed * ed + 2 * 2 * s * ed + 2 * ed * c->embed_dim;
    }
    if (image_flops)
        *image_flops = img;
    if (text_flops)
        *text_flops = c->transformer_layers * block_flops(c->context_length, c->transformer_width) +
                      2 * c->transformer_width * c->embed_dim;
    return CLIPL_OK;
}
