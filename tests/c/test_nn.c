/*
 * test_nn.c - the CLIP model against OpenAI's reference outputs (../shared/clip/parity): every
 * weight format of the tiny ViT and ModifiedResNet models, the per-layer activations, the text
 * tower truncated at the end token, bf16 compute, parameter counts of the nine published models,
 * and error messages.
 *
 * Tolerances (relative = max |diff| / max |expected|):
 *  - f32: 1e-4, as the parity README argues: the reference is itself good to ~1e-6 relative, and a
 *    different kernel order (oneDNN, fused post-ops, BN folded into the convs) costs ~1e-6..1e-5;
 *    real bugs (mask, head split, bias, eps, pooling, transposed projection) show up at >= 1e-2.
 *  - truncated text vs. the full 77 positions: 1e-5 (same math, only the matmul M changes).
 *  - bf16 weights: cosine similarity >= 0.999 to the f32 embeddings per row (8 mantissa bits
 *    give ~4e-3 relative per weight; errors average out over the dot products).
 */
#include "check.h"
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PARITY "../../shared/clip/parity/"

static const double TOL_F32 = 1e-4;

/* CHECK_CLOSE that also prints the measured error, so the log shows the margins. */
static void close_(const clipl_tensor *a, const clipl_tensor *b, double tol, const char *label,
                   int line)
{
    if (a && b)
        printf("  %-58s rel err %.2e (tol %.0e)\n", label, check_rel_err(a, b), tol);
    check_close_(a, b, tol, label, __FILE__, line);
}
#define CLOSE(a, b, tol, label) close_((a), (b), (tol), (label), __LINE__)

static clipl_tensor *npy(const char *rel)
{
    char path[512];
    snprintf(path, sizeof path, PARITY "%s", rel);
    clipl_tensor *t = clipl_npy_load(path);
    if (!t)
        fprintf(stderr, "cannot load %s: %s\n", path, clipl_errmsg());
    return t;
}

static clipl_tensor *images, *tokens;

static void check_outputs(clipl_model *m, const char *dir, const char *label)
{
    char p[256], l[256];
    clipl_tensor *img = NULL, *txt = NULL, *lpi = NULL, *lpt = NULL;
    CHECK_OK(clipl_model_encode_image(m, images, &img));
    CHECK_OK(clipl_model_encode_text(m, tokens, &txt));
    CHECK_OK(clipl_model_logits(m, images, tokens, &lpi, &lpt));
    snprintf(p, sizeof p, "%s/expected_encode_image.npy", dir);
    clipl_tensor *e = npy(p);
    snprintf(l, sizeof l, "%s encode_image", label);
    if (img && e)
        CLOSE(img, e, TOL_F32, l);
    clipl_tensor_release(e);
    snprintf(p, sizeof p, "%s/expected_encode_text.npy", dir);
    e = npy(p);
    snprintf(l, sizeof l, "%s encode_text", label);
    if (txt && e)
        CLOSE(txt, e, TOL_F32, l);
    clipl_tensor_release(e);
    snprintf(p, sizeof p, "%s/expected_logits_per_image.npy", dir);
    e = npy(p);
    snprintf(l, sizeof l, "%s logits_per_image", label);
    if (lpi && e)
        CLOSE(lpi, e, TOL_F32, l);
    clipl_tensor *et = NULL;
    if (e && lpt && clipl_tensor_transpose(e, &et, 0, 1) == 0) {
        snprintf(l, sizeof l, "%s logits_per_text", label);
        CLOSE(lpt, et, TOL_F32, l);
    }
    clipl_tensor_release(et);
    clipl_tensor_release(e);
    clipl_tensor_release(img), clipl_tensor_release(txt);
    clipl_tensor_release(lpi), clipl_tensor_release(lpt);
}

static clipl_model *load(const char *rel, const clipl_model_opts *o)
{
    char path[512];
    snprintf(path, sizeof path, PARITY "%s", rel);
    clipl_model *m = clipl_model_load(path, o);
    CHECK(m != NULL);
    if (!m)
        fprintf(stderr, "load %s: %s\n", rel, clipl_errmsg());
    return m;
}

/* Per-layer activations of the text tower (full 77 positions). */
static void check_text_debug(clipl_model *m, const char *dir, const char *label)
{
    char p[256], l[256];
    clipl_tensor *x = NULL, *e;
    CHECK_OK(clipl_model_text_embed(m, tokens, &x));
    snprintf(p, sizeof p, "%s/debug/text.embeddings.npy", dir);
    e = npy(p);
    snprintf(l, sizeof l, "%s text.embeddings", label);
    if (x && e)
        CLOSE(x, e, TOL_F32, l);
    clipl_tensor_release(e);
    for (int i = 0; i < clipl_model_block_count(m, CLIPL_TOWER_TEXT) && x; i++) {
        clipl_tensor *y = NULL;
        CHECK_OK(clipl_model_block_forward(m, CLIPL_TOWER_TEXT, i, x, &y));
        clipl_tensor_release(x);
        x = y;
        snprintf(p, sizeof p, "%s/debug/text.transformer.resblocks.%d.npy", dir, i);
        e = npy(p);
        snprintf(l, sizeof l, "%s text.transformer.resblocks.%d", label, i);
        if (x && e)
            CLOSE(x, e, TOL_F32, l);
        clipl_tensor_release(e);
    }
    /* ln_final over every position, with the model's own parameters */
    clipl_tensor *h = NULL;
    if (x)
        CHECK_OK(clipl_layer_norm(
            x, 1, clipl_model_param(m, clipl_model_param_find(m, "ln_final.weight")),
            clipl_model_param(m, clipl_model_param_find(m, "ln_final.bias")), &h, 1e-5, NULL,
            NULL));
    snprintf(p, sizeof p, "%s/debug/text.ln_final.npy", dir);
    e = npy(p);
    snprintf(l, sizeof l, "%s text.ln_final", label);
    if (h && e)
        CLOSE(h, e, TOL_F32, l);
    clipl_tensor_release(e);
    clipl_tensor_release(h);
    /* the head on the full run equals encode_text (which runs only up to the end tokens) */
    clipl_tensor *a = NULL, *b = NULL, *full = NULL;
    if (x)
        CHECK_OK(clipl_model_text_head(m, x, tokens, &a));
    CHECK_OK(clipl_model_encode_text(m, tokens, &b));
    CHECK_OK(clipl_model_encode_text_ex(m, tokens, &full, CLIPL_TEXT_FULL_CONTEXT));
    snprintf(l, sizeof l, "%s truncated text == full 77-token run", label);
    if (b && full)
        CLOSE(b, full, 1e-5, l);
    snprintf(l, sizeof l, "%s blocks run one by one == encode_text", label);
    if (a && full)
        CLOSE(a, full, 1e-5, l);
    clipl_tensor_release(a), clipl_tensor_release(b), clipl_tensor_release(full);
    clipl_tensor_release(x);
}

static void check_vit_debug(clipl_model *m)
{
    clipl_tensor *x = NULL, *e, *feat[2] = {NULL, NULL}, *emb = NULL, *head = NULL;
    CHECK_OK(clipl_model_visual_stem(m, images, &x));
    e = npy("tiny_vit/debug/visual.ln_pre.npy");
    if (x && e)
        CLOSE(x, e, TOL_F32, "vit visual.ln_pre");
    clipl_tensor_release(e);
    for (int i = 0; i < clipl_model_block_count(m, CLIPL_TOWER_VISUAL) && x; i++) {
        clipl_tensor *y = NULL;
        CHECK_OK(clipl_model_block_forward(m, CLIPL_TOWER_VISUAL, i, x, &y));
        clipl_tensor_release(x);
        x = y;
        char p[128], l[128];
        snprintf(p, sizeof p, "tiny_vit/debug/visual.transformer.resblocks.%d.npy", i);
        snprintf(l, sizeof l, "vit visual.transformer.resblocks.%d", i);
        e = npy(p);
        if (x && e)
            CLOSE(x, e, TOL_F32, l);
        clipl_tensor_release(e);
    }
    /* ln_post(token 0) */
    clipl_tensor *lp = NULL, *t0 = NULL;
    if (x)
        CHECK_OK(clipl_model_visual_ln_post(m, x, &lp));
    if (lp)
        CHECK_OK(clipl_tensor_select(lp, &t0, 1, 0));
    e = npy("tiny_vit/debug/visual.ln_post.npy");
    if (t0 && e)
        CLOSE(t0, e, TOL_F32, "vit visual.ln_post");
    clipl_tensor_release(e), clipl_tensor_release(lp), clipl_tensor_release(t0);
    /* stem + blocks + head run step by step == encode_image; features are the block outputs */
    if (x)
        CHECK_OK(clipl_model_visual_head(m, x, &head));
    CHECK_OK(clipl_model_encode_image_features(m, images, 2, (const int[]){0, 1}, feat, &emb));
    if (head && emb)
        CLOSE(head, emb, 1e-6, "vit step-by-step == encode_image");
    e = npy("tiny_vit/debug/visual.transformer.resblocks.0.npy");
    if (feat[0] && e)
        CLOSE(feat[0], e, TOL_F32, "vit features block 0");
    clipl_tensor_release(e);
    if (feat[1] && x)
        CLOSE(feat[1], x, 1e-6, "vit features block 1");
    clipl_tensor_release(feat[0]), clipl_tensor_release(feat[1]);
    clipl_tensor_release(emb), clipl_tensor_release(head), clipl_tensor_release(x);
}

static void check_rn_debug(clipl_model *m)
{
    clipl_tensor *x = NULL, *e, *head = NULL, *emb = NULL;
    CHECK_OK(clipl_model_visual_stem(m, images, &x));
    e = npy("tiny_rn/debug/visual.stem.npy");
    if (x && e)
        CLOSE(x, e, TOL_F32, "rn visual.stem");
    clipl_tensor_release(e);
    /* tiny_rn has one bottleneck per stage, so block i is the output of layer i+1 */
    for (int i = 0; i < 4 && x; i++) {
        clipl_tensor *y = NULL;
        CHECK_OK(clipl_model_block_forward(m, CLIPL_TOWER_VISUAL, i, x, &y));
        clipl_tensor_release(x);
        x = y;
        char p[128], l[128];
        snprintf(p, sizeof p, "tiny_rn/debug/visual.layer%d.npy", i + 1);
        snprintf(l, sizeof l, "rn visual.layer%d", i + 1);
        e = npy(p);
        if (x && e)
            CLOSE(x, e, TOL_F32, l);
        clipl_tensor_release(e);
    }
    if (x)
        CHECK_OK(clipl_model_visual_head(m, x, &head));
    CHECK_OK(clipl_model_encode_image(m, images, &emb));
    if (head && emb)
        CLOSE(head, emb, 1e-6, "rn step-by-step == encode_image");
    clipl_tensor_release(head), clipl_tensor_release(emb), clipl_tensor_release(x);
}

static double min_row_cosine(const clipl_tensor *a, const clipl_tensor *b)
{
    int64_t n = a->shape[0], e = a->shape[1];
    double *da = malloc(sizeof(double) * (size_t)(n * e)),
           *db = malloc(sizeof(double) * (size_t)(n * e));
    clipl_tensor_to_doubles(a, da, n * e);
    clipl_tensor_to_doubles(b, db, n * e);
    double worst = 1;
    for (int64_t i = 0; i < n; i++) {
        double ab = 0, aa = 0, bb = 0;
        for (int64_t d = 0; d < e; d++) {
            ab += da[i * e + d] * db[i * e + d];
            aa += da[i * e + d] * da[i * e + d];
            bb += db[i * e + d] * db[i * e + d];
        }
        double c = ab / sqrt(aa * bb);
        if (c < worst)
            worst = c;
    }
    free(da), free(db);
    return worst;
}

static void check_bf16(const char *file, const char *dir, const char *label)
{
    clipl_model_opts o = {0};
    o.dtype = CLIPL_BF16;
    clipl_model *m = load(file, &o);
    if (!m)
        return;
    CHECK(clipl_model_dtype(m) == CLIPL_BF16);
    char p[256];
    clipl_tensor *img = NULL, *txt = NULL, *ei, *et;
    CHECK_OK(clipl_model_encode_image(m, images, &img));
    CHECK_OK(clipl_model_encode_text(m, tokens, &txt));
    snprintf(p, sizeof p, "%s/expected_encode_image.npy", dir);
    ei = npy(p);
    snprintf(p, sizeof p, "%s/expected_encode_text.npy", dir);
    et = npy(p);
    if (img && ei) {
        double c = min_row_cosine(img, ei);
        printf("  %s bf16 encode_image: min cosine %.6f (>= 0.999)\n", label, c);
        CHECK(c >= 0.999);
    }
    if (txt && et) {
        double c = min_row_cosine(txt, et);
        printf("  %s bf16 encode_text: min cosine %.6f (>= 0.999)\n", label, c);
        CHECK(c >= 0.999);
    }
    clipl_tensor_release(img), clipl_tensor_release(txt);
    clipl_tensor_release(ei), clipl_tensor_release(et);
    clipl_model_free(m);
}

/* A dict with every tensor of src except `drop`, and `replace` (if set) under its name. */
static clipl_tdict *edited(const clipl_tdict *src, const char *drop, const char *rname,
                           clipl_tensor *replace)
{
    clipl_tdict *d = clipl_tdict_new();
    for (int i = 0; i < clipl_tdict_count(src); i++) {
        const char *n = clipl_tdict_name(src, i);
        if (drop && strcmp(n, drop) == 0)
            continue;
        if (rname && strcmp(n, rname) == 0)
            clipl_tdict_add(d, n, replace);
        else
            clipl_tdict_add(d, n, clipl_tdict_tensor(src, i));
    }
    return d;
}

static void check_errors(void)
{
    clipl_tdict *d = clipl_load_weights(PARITY "tiny_vit/tiny_vit.safetensors");
    CHECK(d != NULL);
    if (!d)
        return;
    clipl_tdict *e1 = edited(d, "visual.transformer.resblocks.1.mlp.c_fc.bias", NULL, NULL);
    CHECK(clipl_model_from_tdict(e1, "tiny_vit.safetensors", NULL) == NULL);
    CHECK_ERR(clipl_errcode(), CLIPL_EFORMAT,
              "tiny_vit.safetensors: missing tensor 'visual.transformer.resblocks.1.mlp.c_fc.bias' "
              "(expected shape 512)");
    clipl_tdict_free(e1);
    clipl_tensor *bad = clipl_tensor_zeros(CLIPL_F32, 2, (const int64_t[]){128, 32});
    clipl_tdict *e2 = edited(d, NULL, "visual.proj", bad);
    clipl_tensor_release(bad);
    CHECK(clipl_model_from_tdict(e2, "tiny_vit.safetensors", NULL) == NULL);
    CHECK_ERR(clipl_errcode(), CLIPL_ESHAPE,
              "tensor 'visual.proj' has shape 128x32, expected 128x64");
    clipl_tdict_free(e2);
    clipl_tdict *e3 = edited(d, "visual.proj", NULL, NULL);
    clipl_tdict *e4 = edited(e3, "visual.conv1.weight", NULL, NULL);
    CHECK(clipl_model_from_tdict(e4, "x.pt", NULL) == NULL);
    CHECK_ERR(clipl_errcode(), CLIPL_EFORMAT, "no vision tower");
    clipl_tdict_free(e3), clipl_tdict_free(e4);

    clipl_model *m = clipl_model_from_tdict(d, "tiny_vit.safetensors", NULL);
    CHECK(m != NULL);
    clipl_tdict_free(d);
    if (!m)
        return;
    clipl_tensor *out = NULL;
    clipl_tensor *img = clipl_tensor_zeros(CLIPL_F32, 4, (const int64_t[]){2, 3, 32, 32});
    CHECK_ERR(clipl_model_encode_image(m, img, &out), CLIPL_ESHAPE,
              "images must be [N, 3, 64, 64], got [2x3x32x32]");
    clipl_tensor_release(img);
    clipl_tensor *tok = clipl_tensor_zeros(CLIPL_I32, 2, (const int64_t[]){1, 77});
    clipl_tensor_set_flat(tok, 3, 5000);
    CHECK_ERR(clipl_model_encode_text(m, tok, &out), CLIPL_EINDEX,
              "token id 5000 at [0, 3] is out of range for vocab_size 1024");
    clipl_tensor_release(tok);
    tok = clipl_tensor_zeros(CLIPL_F32, 2, (const int64_t[]){1, 77});
    CHECK_ERR(clipl_model_encode_text(m, tok, &out), CLIPL_EINVAL, "tokens must be i32 or i64");
    clipl_tensor_release(tok);
    tok = clipl_tensor_zeros(CLIPL_I64, 2, (const int64_t[]){1, 78});
    CHECK_ERR(clipl_model_encode_text(m, tok, &out), CLIPL_ESHAPE, "1 <= T <= 77");
    clipl_tensor_release(tok);
    CHECK_ERR(clipl_model_block_forward(m, CLIPL_TOWER_TEXT, 2, images, &out), CLIPL_EINDEX,
              "block 2 of the text tower is out of range");
    CHECK_ERR(clipl_model_set_param(m, "nope", images), CLIPL_EINDEX, "no parameter named 'nope'");
    clipl_model_free(m);
    CHECK(clipl_model_load(PARITY "no_such_file.safetensors", NULL) == NULL);
    CHECK(clipl_errcode() != CLIPL_OK && strstr(clipl_errmsg(), "no_such_file"));
    clipl_errclear();
}

/* The nine published models: parameter counts from the architecture alone (a "meta" build:
 * nothing is allocated), against the numbers OpenAI's / open_clip's models report
 * (sum(p.numel() for p in model.parameters())). */
static void check_named_configs(void)
{
    static const struct {
        const char *file;
        int64_t params;
        double gflops_image; /* 2 x GMACs, from ../shared/BENCHMARKING.md (see below) */
    } named[] = {
        /* RN50: BENCHMARKING.md's 5.37 GMAC are the convolutions; the attention pool adds its
         * k/v projections over 7x7+1 tokens of width 2048, the one-token q projection, the
         * attention products and c_proj: 2*50*2048^2 + 2048^2 + 2*50*2048 + 2048*1024 MACs */
        {"RN50", 102007137,
         2 * (5.37 +
              (2.0 * 50 * 2048 * 2048 + 2048.0 * 2048 + 2 * 50 * 2048 + 2048.0 * 1024) / 1e9)},
        {"RN101", 119688033, 0},
        {"RN50x4", 178300601, 0},
        {"RN50x16", 290979217, 0},
        {"RN50x64", 623258305, 0},
        {"ViT-B-32", 151277313, 2 * 4.41},
        {"ViT-B-16", 149620737, 0},
        {"ViT-L-14", 427616513, 0},
        {"ViT-L-14-336", 427944193, 0},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        char path[256];
        snprintf(path, sizeof path, CLIPL_SOURCE_DIR "/models/configs/%s.json", named[i].file);
        clipl_model_config c;
        int rc = clipl_model_config_from_json(path, &c);
        CHECK_OK(rc);
        if (rc)
            continue;
        CHECK(c.act == CLIPL_ACT_QUICK_GELU);
        int64_t n = clipl_model_config_num_params(&c);
        int64_t fi = 0, ft = 0;
        CHECK_OK(clipl_model_config_flops(&c, &fi, &ft));
        printf("  %-13s %11lld parameters (published %11lld), %6.2f GFLOP/image, %5.2f "
               "GFLOP/text\n",
               named[i].file, (long long)n, (long long)named[i].params, fi / 1e9, ft / 1e9);
        CHECK(n == named[i].params);
        if (named[i].gflops_image > 0)
            CHECK(fabs(fi / 1e9 - named[i].gflops_image) < 0.02);
        if (strcmp(named[i].file, "ViT-B-32") == 0)
            CHECK(fabs(ft / 1e9 - 2 * 2.98) < 0.02); /* a 77-token prompt: 2.98 GMAC */
        if (strcmp(named[i].file, "RN50") == 0) {
            /* one real seeded build (allocated, filled, prepared): its tensors add up to the
             * same count as the meta count */
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            clipl_model *m = clipl_model_new(&c, 1, NULL);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            CHECK(m != NULL);
            if (m) {
                CHECK(clipl_model_num_params(m) == named[i].params);
                printf("  RN50 seeded build (allocate, fill, fold BN, prepare): %.2f s\n",
                       (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
            }
            clipl_model_free(m);
        }
    }
}

/* Seeded builds: deterministic; the step API over every block equals encode_image; parameters
 * by name; re-prepare after a change. */
static void check_seeded(void)
{
    clipl_model_config c = {0};
    c.embed_dim = 32, c.vision_kind = CLIPL_VISION_VIT, c.image_resolution = 32;
    c.vision_layers[0] = 3, c.vision_width = 64, c.vision_patch_size = 8, c.vision_heads = 2;
    c.context_length = 16, c.vocab_size = 100, c.transformer_width = 64;
    c.transformer_heads = 4, c.transformer_layers = 2, c.act = CLIPL_ACT_QUICK_GELU;
    clipl_model *a = clipl_model_new(&c, 7, NULL), *b = clipl_model_new(&c, 7, NULL);
    CHECK(a && b);
    if (!a || !b) {
        clipl_model_free(a), clipl_model_free(b);
        return;
    }
    CHECK(clipl_model_num_params(a) == clipl_model_config_num_params(&c));
    clipl_tensor *img = clipl_tensor_empty(CLIPL_F32, 4, (const int64_t[]){3, 3, 32, 32});
    clipl_generator *g = clipl_generator_new(3);
    clipl_tensor_normal_(img, g, 0, 1);
    clipl_tensor *ea = NULL, *eb = NULL;
    CHECK_OK(clipl_model_encode_image(a, img, &ea));
    CHECK_OK(clipl_model_encode_image(b, img, &eb));
    if (ea && eb)
        CHECK(check_max_abs(ea, eb) == 0);
    /* a parameter replaced, then re-prepared, changes the output; restoring it restores it */
    int i = clipl_model_param_find(a, "visual.proj");
    CHECK(i >= 0 && !clipl_model_param_is_buffer(a, i));
    clipl_tensor *orig = clipl_tensor_retain(clipl_model_param(a, i)), *z = NULL;
    CHECK_OK(clipl_mul_scalar(orig, 2.0, &z));
    CHECK_OK(clipl_model_set_param(a, "visual.proj", z));
    CHECK_OK(clipl_model_prepare(a));
    clipl_tensor *e2 = NULL;
    CHECK_OK(clipl_model_encode_image(a, img, &e2));
    clipl_tensor *ea2 = NULL;
    if (ea)
        CHECK_OK(clipl_mul_scalar(ea, 2.0, &ea2));
    if (e2 && ea2)
        CLOSE(e2, ea2, 1e-6, "seeded: visual.proj x2 after prepare");
    CHECK_OK(clipl_model_set_param(a, "visual.proj", orig));
    CHECK_OK(clipl_model_prepare(a));
    clipl_tensor_release(e2);
    e2 = NULL;
    CHECK_OK(clipl_model_encode_image(a, img, &e2));
    if (e2 && ea)
        CHECK(check_max_abs(e2, ea) == 0);
    /* a short batch of prompts of various lengths: truncated == full */
    clipl_tensor *tok = clipl_tensor_zeros(CLIPL_I32, 2, (const int64_t[]){3, 16});
    int lens[3] = {3, 9, 16};
    for (int r = 0; r < 3; r++) {
        for (int j = 0; j < lens[r] - 1; j++)
            clipl_tensor_set_flat(tok, r * 16 + j, 1 + (r * 7 + j * 13) % 97);
        clipl_tensor_set_flat(tok, r * 16 + lens[r] - 1, 99);
    }
    clipl_tensor *t1 = NULL, *t2 = NULL;
    CHECK_OK(clipl_model_encode_text(a, tok, &t1));
    CHECK_OK(clipl_model_encode_text_ex(a, tok, &t2, CLIPL_TEXT_FULL_CONTEXT));
    if (t1 && t2)
        CLOSE(t1, t2, 1e-5, "seeded: truncated text == full context");
    clipl_tensor_release(t1), clipl_tensor_release(t2), clipl_tensor_release(tok);
    clipl_tensor_release(orig), clipl_tensor_release(z), clipl_tensor_release(ea2);
    clipl_tensor_release(e2), clipl_tensor_release(ea), clipl_tensor_release(eb);
    clipl_tensor_release(img);
    clipl_generator_free(g);
    clipl_model_free(a), clipl_model_free(b);
}

int main(void)
{
    images = npy("inputs/images_64.npy");
    tokens = npy("inputs/tokens_v1024.npy");
    CHECK(images && tokens);
    if (!images || !tokens)
        return check_done("nn");

    static const char *const vit_files[] = {
        "tiny_vit/tiny_vit.safetensors", "tiny_vit/tiny_vit_fp16.safetensors",
        "tiny_vit/tiny_vit_hf.safetensors", "tiny_vit/tiny_vit.pt", "tiny_vit/tiny_vit_jit.pt"};
    for (size_t i = 0; i < sizeof vit_files / sizeof vit_files[0]; i++) {
        clipl_model *m = load(vit_files[i], NULL);
        if (!m)
            continue;
        clipl_model_config c;
        clipl_model_get_config(m, &c);
        CHECK(c.vision_kind == CLIPL_VISION_VIT && c.vision_width == 128 && c.vision_heads == 2 &&
              c.vision_patch_size == 16 && c.image_resolution == 64 && c.vision_layers[0] == 2 &&
              c.transformer_heads == 1 && c.transformer_width == 64 && c.vocab_size == 1024 &&
              c.embed_dim == 64 && c.context_length == 77);
        CHECK(clipl_model_num_params(m) == 680513);
        CHECK(fabs(clipl_model_logit_scale(m) - 1 / 0.07) < 1e-4);
        check_outputs(m, "tiny_vit", vit_files[i]);
        if (i == 0) {
            check_vit_debug(m);
            check_text_debug(m, "tiny_vit", "vit");
        }
        clipl_model_free(m);
    }
    static const char *const rn_files[] = {"tiny_rn/tiny_rn.safetensors", "tiny_rn/tiny_rn.pt",
                                           "tiny_rn/tiny_rn_jit.pt"};
    for (size_t i = 0; i < sizeof rn_files / sizeof rn_files[0]; i++) {
        clipl_model *m = load(rn_files[i], NULL);
        if (!m)
            continue;
        clipl_model_config c;
        clipl_model_get_config(m, &c);
        CHECK(c.vision_kind == CLIPL_VISION_RESNET && c.vision_width == 4 && c.vision_heads == 2 &&
              c.image_resolution == 64 && c.vision_layers[0] == 1 && c.vision_layers[3] == 1 &&
              c.transformer_heads == 2 && c.transformer_width == 128);
        /* the file's 638,166 elements = parameters + BN running stats + 19 num_batches_tracked */
        int64_t buffers = 0;
        for (int k = 0; k < clipl_model_param_count(m); k++)
            if (clipl_model_param_is_buffer(m, k))
                buffers += clipl_tensor_numel(clipl_model_param(m, k));
        CHECK(clipl_model_num_params(m) + buffers + 19 == 638166);
        check_outputs(m, "tiny_rn", rn_files[i]);
        if (i == 0) {
            check_rn_debug(m);
            check_text_debug(m, "tiny_rn", "rn");
        }
        clipl_model_free(m);
    }
    check_bf16("tiny_vit/tiny_vit.safetensors", "tiny_vit", "vit");
    check_bf16("tiny_rn/tiny_rn.safetensors", "tiny_rn", "rn");
    check_errors();
    check_named_configs();
    check_seeded();
    clipl_tensor_release(images);
    clipl_tensor_release(tokens);
    return check_done("nn");
}
