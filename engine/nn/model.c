/*
 * model.c - the CLIP model object: architecture inference (as OpenAI's build_model), JSON
 * configs (open_clip, HuggingFace), loading from any weights file or folder (OpenAI, open_clip
 * and HuggingFace names), seeded construction, and the state_dict by name.
 */
#include "nn.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- a canonical (OpenAI-named) view of a tensor dict ------------------------------------------
 */

typedef struct canon {
    int n, cap;
    char **names;
    clipl_tensor **ts;
} canon;

static void canon_free(canon *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->names[i]);
        clipl_tensor_release(c->ts[i]);
    }
    free(c->names);
    free(c->ts);
    memset(c, 0, sizeof *c);
}

/* Adds name -> t, taking over one reference of t. */
static int canon_add(canon *c, const char *name, clipl_tensor *t)
{
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 128;
        char **nn = realloc(c->names, sizeof *nn * (size_t)cap);
        if (nn)
            c->names = nn;
        clipl_tensor **nt = realloc(c->ts, sizeof *nt * (size_t)cap);
        if (nt)
            c->ts = nt;
        if (!nn || !nt) {
            clipl_tensor_release(t);
            return clipl__err(CLIPL_ENOMEM, "model: out of memory");
        }
        c->cap = cap;
    }
    c->names[c->n] = strdup(name);
    if (!c->names[c->n]) {
        clipl_tensor_release(t);
        return clipl__err(CLIPL_ENOMEM, "model: out of memory");
    }
    c->ts[c->n++] = t;
    return CLIPL_OK;
}

static clipl_tensor *canon_get(const canon *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->names[i], name) == 0)
            return c->ts[i];
    return NULL;
}

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* dst = rows of a, b, c stacked (same dtype and trailing shape). */
static int stack_rows3(clipl_tensor *const *src, clipl_tensor **dst, const char *what)
{
    clipl_tensor *cs[3] = {NULL, NULL, NULL};
    int rc = CLIPL_OK;
    for (int i = 0; i < 3 && !rc; i++)
        rc = clipl_tensor_contiguous(src[i], &cs[i]);
    if (rc)
        goto done;
    for (int i = 1; i < 3; i++)
        if (cs[i]->dt != cs[0]->dt || !clipl__same_shape(cs[i], cs[0])) {
            char a[64], b[64];
            rc = clipl__err(CLIPL_ESHAPE, "model: %s: q/k/v shapes differ (%s vs %s)", what,
                            clipl__tshape(a, sizeof a, cs[0]), clipl__tshape(b, sizeof b, cs[i]));
            goto done;
        }
    int64_t shape[CLIPL_MAX_DIMS];
    for (int d = 0; d < cs[0]->ndim; d++)
        shape[d] = cs[0]->shape[d];
    shape[0] *= 3;
    *dst = clipl_tensor_empty(cs[0]->dt, cs[0]->ndim, shape);
    if (!*dst) {
        rc = clipl_errcode();
        goto done;
    }
    size_t nb = (size_t)clipl_tensor_numel(cs[0]) * (size_t)clipl_dtype_size(cs[0]->dt);
    for (int i = 0; i < 3; i++)
        memcpy((char *)(*dst)->ptr + nb * (size_t)i, cs[i]->ptr, nb);
done:
    for (int i = 0; i < 3; i++)
        clipl_tensor_release(cs[i]);
    return rc;
}

/* Maps a HuggingFace per-layer suffix onto OpenAI's; NULL when it is a q/k/v part. */
static const char *hf_layer_suffix(const char *s)
{
    static const struct {
        const char *hf, *oa;
    } map[] = {
        {"self_attn.out_proj.weight", "attn.out_proj.weight"},
        {"self_attn.out_proj.bias", "attn.out_proj.bias"},
        {"layer_norm1.weight", "ln_1.weight"},
        {"layer_norm1.bias", "ln_1.bias"},
        {"layer_norm2.weight", "ln_2.weight"},
        {"layer_norm2.bias", "ln_2.bias"},
        {"mlp.fc1.weight", "mlp.c_fc.weight"},
        {"mlp.fc1.bias", "mlp.c_fc.bias"},
        {"mlp.fc2.weight", "mlp.c_proj.weight"},
        {"mlp.fc2.bias", "mlp.c_proj.bias"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(s, map[i].hf) == 0)
            return map[i].oa;
    return NULL;
}

static int transpose_copy(clipl_tensor *t, clipl_tensor **dst)
{
    clipl_tensor *tt = NULL;
    int rc = clipl_tensor_transpose(t, &tt, 0, 1);
    if (!rc)
        rc = clipl_tensor_clone(tt, dst);
    clipl_tensor_release(tt);
    return rc;
}

/* HuggingFace CLIPModel names -> OpenAI names (q/k/v stacked, projections transposed). */
static int canon_from_hf(const clipl_tdict *d, const char *src, canon *c)
{
    int n = clipl_tdict_count(d);
    int rc = CLIPL_OK;
    for (int i = 0; i < n && !rc; i++) {
        const char *k = clipl_tdict_name(d, i);
        clipl_tensor *t = clipl_tdict_tensor(d, i);
        char name[160];
        const char *rest;
        name[0] = 0;
        if (ends(k, "position_ids") || ends(k, "num_batches_tracked"))
            continue;
        if (strcmp(k, "logit_scale") == 0) {
            snprintf(name, sizeof name, "logit_scale");
        } else if (strcmp(k, "text_model.embeddings.token_embedding.weight") == 0) {
            snprintf(name, sizeof name, "token_embedding.weight");
        } else if (strcmp(k, "text_model.embeddings.position_embedding.weight") == 0) {
            snprintf(name, sizeof name, "positional_embedding");
        } else if (starts(k, "text_model.final_layer_norm.")) {
            snprintf(name, sizeof name, "ln_final.%s", k + strlen("text_model.final_layer_norm."));
        } else if (strcmp(k, "vision_model.embeddings.class_embedding") == 0) {
            snprintf(name, sizeof name, "visual.class_embedding");
        } else if (strcmp(k, "vision_model.embeddings.patch_embedding.weight") == 0) {
            snprintf(name, sizeof name, "visual.conv1.weight");
        } else if (strcmp(k, "vision_model.embeddings.position_embedding.weight") == 0) {
            snprintf(name, sizeof name, "visual.positional_embedding");
        } else if (starts(k, "vision_model.pre_layrnorm.")) {
            snprintf(name, sizeof name, "visual.ln_pre.%s",
                     k + strlen("vision_model.pre_layrnorm."));
        } else if (starts(k, "vision_model.post_layernorm.")) {
            snprintf(name, sizeof name, "visual.ln_post.%s",
                     k + strlen("vision_model.post_layernorm."));
        } else if (strcmp(k, "visual_projection.weight") == 0 ||
                   strcmp(k, "text_projection.weight") == 0) {
            clipl_tensor *tt = NULL;
            if (t->ndim != 2)
                return clipl__err(CLIPL_ESHAPE, "model: %s: tensor '%s' must be 2-d", src, k);
            rc = transpose_copy(t, &tt);
            if (!rc)
                rc = canon_add(c, k[0] == 'v' ? "visual.proj" : "text_projection", tt);
            continue;
        } else if ((starts(k, "text_model.encoder.layers.") ||
                    starts(k, "vision_model.encoder.layers."))) {
            bool text = k[0] == 't';
            rest = k + strlen(text ? "text_model.encoder.layers." : "vision_model.encoder.layers.");
            char *end;
            long layer = strtol(rest, &end, 10);
            if (end == rest || *end != '.')
                continue;
            const char *suffix = end + 1;
            const char *oa = hf_layer_suffix(suffix);
            const char *pre = text ? "transformer" : "visual.transformer";
            if (oa) {
                snprintf(name, sizeof name, "%s.resblocks.%ld.%s", pre, layer, oa);
            } else if (strcmp(suffix, "self_attn.q_proj.weight") == 0 ||
                       strcmp(suffix, "self_attn.q_proj.bias") == 0) {
                /* q starts the group: stack q, k, v */
                bool w = ends(suffix, "weight");
                const char *parts[3] = {"q_proj", "k_proj", "v_proj"};
                clipl_tensor *qkv[3];
                for (int j = 0; j < 3; j++) {
                    char hk[192];
                    snprintf(hk, sizeof hk, "%.*sself_attn.%s.%s", (int)(suffix - k), k, parts[j],
                             w ? "weight" : "bias");
                    qkv[j] = clipl_tdict_get(d, hk);
                    if (!qkv[j]) {
                        clipl_errclear();
                        return clipl__err(CLIPL_EFORMAT, "model: %s: missing tensor '%s'", src, hk);
                    }
                }
                clipl_tensor *st = NULL;
                snprintf(name, sizeof name, "%s.resblocks.%ld.attn.in_proj_%s", pre, layer,
                         w ? "weight" : "bias");
                rc = stack_rows3(qkv, &st, name);
                if (!rc)
                    rc = canon_add(c, name, st);
                continue;
            } else {
                continue; /* k_proj / v_proj were taken with q_proj */
            }
        } else {
            continue; /* not a CLIP tensor */
        }
        rc = canon_add(c, name, clipl_tensor_retain(t));
    }
    return rc;
}

static int canon_build(const clipl_tdict *d, const char *src, canon *c, bool *hf)
{
    memset(c, 0, sizeof *c);
    *hf = clipl_tdict_find(d, "text_model.embeddings.token_embedding.weight") >= 0 ||
          clipl_tdict_find(d, "vision_model.embeddings.patch_embedding.weight") >= 0;
    if (*hf) {
        int rc = canon_from_hf(d, src, c);
        if (rc)
            canon_free(c);
        return rc;
    }
    int n = clipl_tdict_count(d);
    for (int i = 0; i < n; i++) {
        const char *k = clipl_tdict_name(d, i);
        if (ends(k, "num_batches_tracked"))
            continue;
        /* open_clip checkpoints saved from a wrapped model */
        if (starts(k, "module."))
            k += 7;
        int rc = canon_add(c, k, clipl_tensor_retain(clipl_tdict_tensor(d, i)));
        if (rc) {
            canon_free(c);
            return rc;
        }
    }
    return CLIPL_OK;
}

/* ---- architecture inference (OpenAI's build_model) ----------------------------------------------
 */

static clipl_tensor *need(const canon *c, const char *src, const char *name, int ndim)
{
    clipl_tensor *t = canon_get(c, name);
    if (!t) {
        clipl__err(CLIPL_EFORMAT, "model: %s: missing tensor '%s' (not a CLIP checkpoint?)", src,
                   name);
        return NULL;
    }
    if (t->ndim != ndim) {
        char b[64];
        clipl__err(CLIPL_ESHAPE, "model: %s: tensor '%s' has shape %s, expected %d dims", src, name,
                   clipl__tshape(b, sizeof b, t), ndim);
        return NULL;
    }
    return t;
}

/* Number of distinct integers after prefix in the names (e.g. "transformer.resblocks."). */
static int count_indices(const canon *c, const char *prefix)
{
    int maxi = -1;
    size_t k = strlen(prefix);
    for (int i = 0; i < c->n; i++)
        if (strncmp(c->names[i], prefix, k) == 0) {
            char *end;
            long v = strtol(c->names[i] + k, &end, 10);
            if (end != c->names[i] + k && *end == '.' && v > maxi && v < 100000)
                maxi = (int)v;
        }
    return maxi + 1;
}

static int isqrt_exact(int64_t n)
{
    int64_t r = (int64_t)llround(sqrt((double)n));
    return r * r == n ? (int)r : -1;
}

static int infer(const canon *c, const char *src, clipl_model_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->act = CLIPL_ACT_QUICK_GELU;
    clipl_tensor *t;
    if (canon_get(c, "visual.proj")) {
        cfg->vision_kind = CLIPL_VISION_VIT;
        if (!(t = need(c, src, "visual.conv1.weight", 4)))
            return clipl_errcode();
        cfg->vision_width = (int32_t)t->shape[0];
        cfg->vision_patch_size = (int32_t)t->shape[3];
        cfg->vision_layers[0] = count_indices(c, "visual.transformer.resblocks.");
        if (!(t = need(c, src, "visual.positional_embedding", 2)))
            return clipl_errcode();
        int g = isqrt_exact(t->shape[0] - 1);
        if (g <= 0)
            return clipl__err(CLIPL_ESHAPE,
                              "model: %s: visual.positional_embedding has %lld rows, not a square "
                              "grid + 1",
                              src, (long long)t->shape[0]);
        cfg->image_resolution = cfg->vision_patch_size * g;
        cfg->vision_heads = cfg->vision_width / 64 > 0 ? cfg->vision_width / 64 : 1;
    } else if (canon_get(c, "visual.layer1.0.conv1.weight")) {
        cfg->vision_kind = CLIPL_VISION_RESNET;
        for (int l = 0; l < 4; l++) {
            char p[32];
            snprintf(p, sizeof p, "visual.layer%d.", l + 1);
            cfg->vision_layers[l] = count_indices(c, p);
        }
        if (!(t = need(c, src, "visual.layer1.0.conv1.weight", 4)))
            return clipl_errcode();
        cfg->vision_width = (int32_t)t->shape[0];
        if (!(t = need(c, src, "visual.attnpool.positional_embedding", 2)))
            return clipl_errcode();
        int g = isqrt_exact(t->shape[0] - 1);
        if (g <= 0)
            return clipl__err(CLIPL_ESHAPE,
                              "model: %s: visual.attnpool.positional_embedding has %lld rows, not "
                              "a square grid + 1",
                              src, (long long)t->shape[0]);
        cfg->image_resolution = 32 * g;
        cfg->vision_heads = cfg->vision_width * 32 / 64 > 0 ? cfg->vision_width * 32 / 64 : 1;
    } else {
        return clipl__err(CLIPL_EFORMAT,
                          "model: %s: no vision tower found (neither 'visual.proj' nor "
                          "'visual.layer1.0.conv1.weight'): not a CLIP checkpoint?",
                          src);
    }
    if (!(t = need(c, src, "text_projection", 2)))
        return clipl_errcode();
    cfg->embed_dim = (int32_t)t->shape[1];
    if (!(t = need(c, src, "positional_embedding", 2)))
        return clipl_errcode();
    cfg->context_length = (int32_t)t->shape[0];
    if (!(t = need(c, src, "token_embedding.weight", 2)))
        return clipl_errcode();
    cfg->vocab_size = (int32_t)t->shape[0];
    if (!(t = need(c, src, "ln_final.weight", 1)))
        return clipl_errcode();
    cfg->transformer_width = (int32_t)t->shape[0];
    cfg->transformer_heads = cfg->transformer_width / 64 > 0 ? cfg->transformer_width / 64 : 1;
    cfg->transformer_layers = count_indices(c, "transformer.resblocks.");
    return CLIPL_OK;
}

int clipl_model_config_infer(const clipl_tdict *d, const char *source, clipl_model_config *cfg)
{
    if (!d || !cfg)
        return clipl__err(CLIPL_EINVAL, "model_config_infer: NULL argument");
    const char *src = source ? source : "tdict";
    canon c;
    bool hf;
    int rc = canon_build(d, src, &c, &hf);
    if (rc)
        return rc;
    rc = infer(&c, src, cfg);
    canon_free(&c);
    return rc;
}

/* ---- JSON configs
 * --------------------------------------------------------------------------------- */

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        clipl__err(CLIPL_EIO, "model: cannot open config '%s'", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        fclose(f);
        clipl__err(CLIPL_EIO, "model: cannot read config '%s'", path);
        return NULL;
    }
    s[n] = 0;
    fclose(f);
    return s;
}

static int jint(const cJSON *o, const char *key, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsNumber(v))
        return (int)v->valuedouble;
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0 && cJSON_IsNumber(cJSON_GetArrayItem(v, 0)))
        return (int)cJSON_GetArrayItem(v, 0)->valuedouble;
    return def;
}

/* What a JSON config says. Sizes are -1 when absent. */
typedef struct json_cfg {
    clipl_model_config cfg;
    int has_heads_v, has_heads_t, has_act;
} json_cfg;

static int parse_json_cfg(const char *path, json_cfg *jc)
{
    memset(jc, 0, sizeof *jc);
    char *text = read_text(path);
    if (!text)
        return clipl_errcode();
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return clipl__err(CLIPL_EFORMAT, "model: config '%s' is not a JSON object", path);
    }
    clipl_model_config *c = &jc->cfg;
    int rc = CLIPL_OK;
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(root, "model_cfg");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(root, "vision_config");
    if (cJSON_IsObject(tc) || cJSON_IsObject(vc)) {
        /* HuggingFace CLIPConfig; defaults are transformers' */
        c->embed_dim = jint(root, "projection_dim", 512);
        c->vision_kind = CLIPL_VISION_VIT;
        c->vision_width = jint(vc, "hidden_size", 768);
        c->vision_heads = jint(vc, "num_attention_heads", 12);
        c->vision_layers[0] = jint(vc, "num_hidden_layers", 12);
        c->image_resolution = jint(vc, "image_size", 224);
        c->vision_patch_size = jint(vc, "patch_size", 32);
        c->transformer_width = jint(tc, "hidden_size", 512);
        c->transformer_heads = jint(tc, "num_attention_heads", 8);
        c->transformer_layers = jint(tc, "num_hidden_layers", 12);
        c->vocab_size = jint(tc, "vocab_size", 49408);
        c->context_length = jint(tc, "max_position_embeddings", 77);
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(tc, "hidden_act");
        c->act = CLIPL_ACT_QUICK_GELU;
        if (cJSON_IsString(act) && strcmp(act->valuestring, "quick_gelu") != 0) {
            if (strcmp(act->valuestring, "gelu") == 0)
                c->act = CLIPL_ACT_GELU;
            else
                rc = clipl__err(CLIPL_EUNSUPPORTED,
                                "model: config '%s': hidden_act '%s' is not "
                                "supported (quick_gelu, gelu)",
                                path, act->valuestring);
        }
        jc->has_heads_v = jc->has_heads_t = jc->has_act = 1;
    } else {
        /* open_clip: a model config, or open_clip_config.json with model_cfg inside */
        const cJSON *m = cJSON_IsObject(mc) ? mc : root;
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "vision_cfg");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "text_cfg");
        if (!cJSON_IsObject(v) || !cJSON_IsObject(t)) {
            cJSON_Delete(root);
            return clipl__err(CLIPL_EFORMAT,
                              "model: config '%s' has neither vision_cfg/text_cfg (open_clip) nor "
                              "vision_config/text_config (HuggingFace)",
                              path);
        }
        c->embed_dim = jint(m, "embed_dim", 512);
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(v, "layers");
        const cJSON *patch = cJSON_GetObjectItemCaseSensitive(v, "patch_size");
        int head_width = jint(v, "head_width", 64);
        c->vision_width = jint(v, "width", 768);
        c->image_resolution = jint(v, "image_size", 224);
        if (cJSON_IsArray(layers)) {
            c->vision_kind = CLIPL_VISION_RESNET;
            for (int i = 0; i < 4 && i < cJSON_GetArraySize(layers); i++)
                c->vision_layers[i] = (int)cJSON_GetArrayItem(layers, i)->valuedouble;
            c->vision_heads = c->vision_width * 32 / head_width;
        } else {
            c->vision_kind = CLIPL_VISION_VIT;
            c->vision_layers[0] = jint(v, "layers", 12);
            c->vision_patch_size = cJSON_IsNumber(patch) ? (int)patch->valuedouble : 16;
            c->vision_heads = c->vision_width / head_width;
        }
        c->context_length = jint(t, "context_length", 77);
        c->vocab_size = jint(t, "vocab_size", 49408);
        c->transformer_width = jint(t, "width", 512);
        c->transformer_heads = jint(t, "heads", 8);
        c->transformer_layers = jint(t, "layers", 12);
        /* open_clip's default activation is GELU; OpenAI's weights need QuickGELU. A bare model
         * config (our models/configs, named after OpenAI's models) defaults to QuickGELU; a hub
         * open_clip_config.json follows open_clip (quick_gelu absent = GELU). */
        const cJSON *qg = cJSON_GetObjectItemCaseSensitive(m, "quick_gelu");
        if (cJSON_IsBool(qg))
            c->act = cJSON_IsTrue(qg) ? CLIPL_ACT_QUICK_GELU : CLIPL_ACT_GELU;
        else
            c->act = cJSON_IsObject(mc) ? CLIPL_ACT_GELU : CLIPL_ACT_QUICK_GELU;
        jc->has_heads_v = jc->has_heads_t = jc->has_act = 1;
    }
    cJSON_Delete(root);
    return rc;
}

int clipl_model_config_from_json(const char *path, clipl_model_config *cfg)
{
    if (!path || !cfg)
        return clipl__err(CLIPL_EINVAL, "model_config_from_json: NULL argument");
    json_cfg jc;
    int rc = parse_json_cfg(path, &jc);
    if (rc)
        return rc;
    rc = clipl_model_config_check(&jc.cfg);
    if (rc)
        return clipl__err_prefix("%s", path);
    *cfg = jc.cfg;
    return CLIPL_OK;
}

/* ---- the model object
 * ------------------------------------------------------------------------------ */

static clipl_model *model_alloc(const clipl_model_config *cfg, const clipl_model_opts *opts)
{
    int dtype = opts ? opts->dtype : CLIPL_F32;
    if (dtype != CLIPL_F32 && dtype != CLIPL_BF16) {
        clipl__err(CLIPL_EINVAL, "model: compute dtype must be f32 or bf16, got %s",
                   clipl_dtype_name(dtype));
        return NULL;
    }
    clipl_model *m = calloc(1, sizeof *m);
    if (!m) {
        clipl__err(CLIPL_ENOMEM, "model: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    m->dtype = dtype;
    m->batch_hint = opts && opts->batch_hint > 0 ? opts->batch_hint : 16;
    return m;
}

void clipl_model_free(clipl_model *m)
{
    if (!m)
        return;
    clipl__nn_unprepare(m);
    for (int i = 0; i < m->np; i++) {
        free(m->p[i].name);
        clipl_tensor_release(m->p[i].t);
    }
    free(m->p);
    free(m);
}

int clipl__nn_find(const clipl_model *m, const char *name)
{
    for (int i = 0; i < m->np; i++)
        if (strcmp(m->p[i].name, name) == 0)
            return i;
    return -1;
}

/* Makes t an f32 contiguous tensor (a new reference; t itself when it already is). */
static int as_f32(const clipl_tensor *t, clipl_tensor **dst)
{
    if (t->dt == CLIPL_F32)
        return clipl_tensor_contiguous(t, dst);
    if (t->dt != CLIPL_F16 && t->dt != CLIPL_BF16)
        return clipl__err(CLIPL_EINVAL, "a float tensor was expected, got %s",
                          clipl_dtype_name(t->dt));
    return clipl_tensor_to(t, dst, CLIPL_F32);
}

static int alloc_params(clipl_model *m, const nn_spec *s)
{
    m->p = calloc((size_t)s->n, sizeof *m->p);
    if (!m->p)
        return clipl__err(CLIPL_ENOMEM, "model: out of memory");
    m->np = s->n;
    for (int i = 0; i < s->n; i++) {
        m->p[i].name = strdup(s->e[i].name);
        if (!m->p[i].name)
            return clipl__err(CLIPL_ENOMEM, "model: out of memory");
        m->p[i].buffer = s->e[i].buffer;
    }
    return CLIPL_OK;
}

static int shape_matches(const clipl_tensor *t, const nn_entry *e)
{
    if (t->ndim != e->ndim)
        return 0;
    for (int d = 0; d < e->ndim; d++)
        if (t->shape[d] != e->shape[d])
            return 0;
    return 1;
}

static void apply_overrides(clipl_model_config *cfg, const json_cfg *jc,
                            const clipl_model_opts *opts)
{
    if (jc) {
        if (jc->has_heads_v && jc->cfg.vision_heads > 0 && jc->cfg.vision_kind == cfg->vision_kind)
            cfg->vision_heads = jc->cfg.vision_heads;
        if (jc->has_heads_t && jc->cfg.transformer_heads > 0)
            cfg->transformer_heads = jc->cfg.transformer_heads;
        if (jc->has_act)
            cfg->act = jc->cfg.act;
    }
    if (opts && opts->vision_heads > 0)
        cfg->vision_heads = opts->vision_heads;
    if (opts && opts->text_heads > 0)
        cfg->transformer_heads = opts->text_heads;
}

/* Heads recorded in a safetensors `hparams` metadata entry (as clipl convert and the parity files
 * write them) replace the width/64 default. */
static void meta_heads(const clipl_tdict *d, clipl_model_config *cfg)
{
    const char *h = clipl_tdict_meta_get(d, "hparams");
    cJSON *j = h ? cJSON_Parse(h) : NULL;
    if (!j)
        return;
    int v = jint(j, "vision_heads", 0), t = jint(j, "transformer_heads", 0);
    if (v > 0)
        cfg->vision_heads = v;
    if (t > 0)
        cfg->transformer_heads = t;
    cJSON_Delete(j);
}

static clipl_model *from_tdict(const clipl_tdict *d, const char *source,
                               const clipl_model_opts *opts, const char *config_path)
{
    const char *src = source ? source : "tdict";
    canon c;
    bool hf;
    clipl_model *m = NULL;
    nn_spec s = {0};
    json_cfg jc;
    int have_json = 0;
    if (canon_build(d, src, &c, &hf))
        return NULL;
    clipl_model_config cfg;
    int rc = infer(&c, src, &cfg);
    if (rc)
        goto fail;
    if (config_path) {
        rc = parse_json_cfg(config_path, &jc);
        if (rc)
            goto fail;
        have_json = 1;
    }
    meta_heads(d, &cfg);
    apply_overrides(&cfg, have_json ? &jc : NULL, opts);
    rc = clipl__nn_spec_build(&cfg, &s);
    if (rc) {
        clipl__err_prefix("model: %s", src);
        goto fail;
    }
    m = model_alloc(&cfg, opts);
    if (!m || (rc = alloc_params(m, &s)))
        goto fail;
    snprintf(m->format, sizeof m->format, "%s", clipl_tdict_format(d));
    for (int i = 0; i < s.n; i++) {
        const nn_entry *e = &s.e[i];
        clipl_tensor *t = canon_get(&c, e->name);
        char want[96], got[96];
        clipl__shape_str(want, sizeof want, e->ndim, e->shape);
        if (!t) {
            rc = clipl__err(CLIPL_EFORMAT, "model: %s: missing tensor '%s' (expected shape %s)",
                            src, e->name, want);
            goto fail;
        }
        /* a 1-element logit_scale may come as [1] */
        if (!shape_matches(t, e) && !(e->ndim == 0 && clipl_tensor_numel(t) == 1)) {
            rc = clipl__err(CLIPL_ESHAPE, "model: %s: tensor '%s' has shape %s, expected %s", src,
                            e->name, clipl__tshape(got, sizeof got, t), want);
            goto fail;
        }
        clipl_tensor *f = NULL;
        rc = as_f32(t, &f);
        if (rc) {
            clipl__err_prefix("model: %s: tensor '%s'", src, e->name);
            goto fail;
        }
        if (e->ndim == 0 && f->ndim != 0) {
            clipl_tensor *v = NULL;
            int64_t none[1] = {1};
            rc = clipl_tensor_view(f, &v, 0, none);
            clipl_tensor_release(f);
            if (rc)
                goto fail;
            f = v;
        }
        m->p[i].t = f;
    }
    rc = clipl__nn_prepare(m);
    if (rc) {
        clipl__err_prefix("model: %s", src);
        goto fail;
    }
    clipl__nn_spec_free(&s);
    canon_free(&c);
    return m;
fail:
    clipl_model_free(m);
    clipl__nn_spec_free(&s);
    canon_free(&c);
    return NULL;
}

clipl_model *clipl_model_from_tdict(const clipl_tdict *d, const char *source,
                                    const clipl_model_opts *opts)
{
    if (!d) {
        clipl__err(CLIPL_EINVAL, "model_from_tdict: NULL dict");
        return NULL;
    }
    return from_tdict(d, source, opts, opts ? opts->config_path : NULL);
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

clipl_model *clipl_model_load(const char *path, const clipl_model_opts *opts)
{
    if (!path) {
        clipl__err(CLIPL_EINVAL, "model_load: NULL path");
        return NULL;
    }
    char weights[4096], config[4096];
    const char *cfg_path = opts ? opts->config_path : NULL;
    config[0] = 0;
    if (is_dir(path)) {
        static const char *const layouts[][2] = {
            {"open_clip_config.json", "open_clip_model.safetensors"},
            {"open_clip_config.json", "open_clip_pytorch_model.bin"},
            {"config.json", "model.safetensors"},
            {"config.json", "pytorch_model.bin"},
        };
        size_t i;
        for (i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
            snprintf(weights, sizeof weights, "%s/%s", path, layouts[i][1]);
            if (is_file(weights)) {
                snprintf(config, sizeof config, "%s/%s", path, layouts[i][0]);
                break;
            }
        }
        if (i == sizeof layouts / sizeof layouts[0]) {
            clipl__err(CLIPL_EIO,
                       "model: folder '%s' has no weights (open_clip_model.safetensors, "
                       "open_clip_pytorch_model.bin, model.safetensors or pytorch_model.bin)",
                       path);
            return NULL;
        }
        if (!cfg_path && is_file(config))
            cfg_path = config;
    } else {
        snprintf(weights, sizeof weights, "%s", path);
    }
    clipl_tdict *d = clipl_load_weights(weights);
    if (!d)
        return NULL;
    if (!cfg_path && !is_dir(path) &&
        (clipl_tdict_find(d, "text_model.embeddings.token_embedding.weight") >= 0 ||
         clipl_tdict_find(d, "vision_model.embeddings.patch_embedding.weight") >= 0)) {
        /* HuggingFace names carry no heads: look for <stem>_config.json, then config.json */
        const char *slash = strrchr(weights, '/');
        const char *base = slash ? slash + 1 : weights;
        const char *dot = strrchr(base, '.');
        int stem = dot ? (int)(dot - weights) : (int)strlen(weights);
        snprintf(config, sizeof config, "%.*s_config.json", stem, weights);
        if (is_file(config)) {
            cfg_path = config;
        } else {
            snprintf(config, sizeof config, "%.*sconfig.json", (int)(base - weights), weights);
            if (is_file(config))
                cfg_path = config;
        }
    }
    clipl_model *m = from_tdict(d, weights, opts, cfg_path);
    clipl_tdict_free(d);
    return m;
}

/* ---- seeded construction
 * ------------------------------------------------------------------------- */

clipl_model *clipl_model_new(const clipl_model_config *cfg, uint64_t seed,
                             const clipl_model_opts *opts)
{
    nn_spec s;
    if (clipl__nn_spec_build(cfg, &s))
        return NULL;
    clipl_model *m = model_alloc(cfg, opts);
    clipl_generator *g = clipl_generator_new(seed);
    int rc = (!m || !g) ? CLIPL_ENOMEM : alloc_params(m, &s);
    for (int i = 0; i < s.n && !rc; i++) {
        const nn_entry *e = &s.e[i];
        clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, e->ndim, e->shape);
        if (!t) {
            rc = clipl_errcode();
            break;
        }
        m->p[i].t = t;
        switch (e->init) {
        case NN_INIT_NORMAL: {
            /* uniform with the same standard deviation: as good for a seeded model, and fast */
            double a = e->std * sqrt(3.0);
            rc = clipl_tensor_uniform_(t, g, -a, a);
            break;
        }
        case NN_INIT_ZEROS: rc = clipl_tensor_fill_(t, 0); break;
        case NN_INIT_ONES: rc = clipl_tensor_fill_(t, 1); break;
        case NN_INIT_VAR: rc = clipl_tensor_uniform_(t, g, 0.5, 1.5); break;
        case NN_INIT_LOGIT_SCALE: rc = clipl_tensor_fill_(t, log(1 / 0.07)); break;
        }
    }
    if (!rc)
        rc = clipl__nn_prepare(m);
    clipl_generator_free(g);
    clipl__nn_spec_free(&s);
    if (rc) {
        if (!m)
            clipl__err(CLIPL_ENOMEM, "model: out of memory");
        clipl_model_free(m);
        return NULL;
    }
    return m;
}

/* ---- getters and the state_dict
 * ------------------------------------------------------------------ */

int clipl_model_get_config(const clipl_model *m, clipl_model_config *cfg)
{
    if (!m || !cfg)
        return clipl__err(CLIPL_EINVAL, "model_get_config: NULL argument");
    *cfg = m->cfg;
    return CLIPL_OK;
}

int clipl_model_dtype(const clipl_model *m) { return m ? m->dtype : -1; }

int64_t clipl_model_num_params(const clipl_model *m)
{
    if (!m)
        return -1;
    int64_t n = 0;
    for (int i = 0; i < m->np; i++)
        if (!m->p[i].buffer && m->p[i].t)
            n += clipl_tensor_numel(m->p[i].t);
    return n;
}

double clipl_model_logit_scale(const clipl_model *m)
{
    if (!m)
        return NAN;
    double v = NAN;
    clipl_tensor_get_flat(nn_p(m, m->logit_scale), 0, &v);
    return exp(v);
}

const char *clipl_model_source_format(const clipl_model *m) { return m ? m->format : ""; }

int clipl_model_param_count(const clipl_model *m) { return m ? m->np : 0; }

const char *clipl_model_param_name(const clipl_model *m, int i)
{
    return (m && i >= 0 && i < m->np) ? m->p[i].name : NULL;
}

clipl_tensor *clipl_model_param(const clipl_model *m, int i)
{
    return (m && i >= 0 && i < m->np) ? m->p[i].t : NULL;
}

int clipl_model_param_is_buffer(const clipl_model *m, int i)
{
    return (m && i >= 0 && i < m->np) ? m->p[i].buffer : 0;
}

int clipl_model_param_find(const clipl_model *m, const char *name)
{
    return (m && name) ? clipl__nn_find(m, name) : -1;
}

int clipl_model_set_param(clipl_model *m, const char *name, clipl_tensor *t)
{
    if (!m || !name || !t)
        return clipl__err(CLIPL_EINVAL, "model_set_param: NULL argument");
    int i = clipl__nn_find(m, name);
    if (i < 0)
        return clipl__err(CLIPL_EINDEX, "model_set_param: no parameter named '%s'", name);
    if (!clipl__same_shape(t, m->p[i].t)) {
        char a[64], b[64];
        return clipl__err(CLIPL_ESHAPE, "model_set_param: '%s' has shape %s, got %s", name,
                          clipl__tshape(a, sizeof a, m->p[i].t), clipl__tshape(b, sizeof b, t));
    }
    clipl_tensor *f = NULL;
    int rc = as_f32(t, &f);
    if (rc)
        return clipl__err_prefix("model_set_param: '%s'", name);
    clipl_tensor_release(m->p[i].t);
    m->p[i].t = f;
    return CLIPL_OK;
}

int clipl_model_prepare(clipl_model *m)
{
    if (!m)
        return clipl__err(CLIPL_EINVAL, "model_prepare: NULL model");
    return clipl__nn_prepare(m);
}
