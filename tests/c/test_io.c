/*
 * test_io.c - weight and array files: safetensors, PyTorch zips, TorchScript archives, npy.
 *
 * References: the parity files of ../shared/clip (made by torch / numpy / a json+numpy writer), an
 * independent minimal safetensors reader written here (strstr on the header + fread), byte-exact
 * comparison of our npy writer with numpy's files, and zips/pickles assembled by hand below.
 * Every comparison is bit-exact (tolerance 0): loading is a copy of bytes, never arithmetic,
 * except f64 -> f32 conversions, checked against the C cast.
 */
#include "check.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PARITY "../../shared/clip/parity"

static char tmpdir[256];

/* ---- small helpers ----------------------------------------------------------------------------
 */

static char *tpath(const char *name)
{
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, fp);
    fclose(fp);
    return b;
}

static void write_all(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(2);
    }
    fwrite(p, 1, n, fp);
    fclose(fp);
}

/* Bytes of t in row-major order (any strides), malloc'ed. */
static uint8_t *tbytes(const clipl_tensor *t, size_t *n)
{
    clipl_tensor *c = NULL;
    if (clipl_tensor_contiguous(t, &c) != CLIPL_OK)
        return NULL;
    *n = (size_t)clipl_tensor_numel(c) * (size_t)clipl_dtype_size(c->dt);
    uint8_t *b = malloc(*n + 1);
    memcpy(b, c->ptr, *n);
    clipl_tensor_release(c);
    return b;
}

static bool same_tensor(const clipl_tensor *a, const clipl_tensor *b)
{
    if (!a || !b || a->dt != b->dt || a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    size_t na, nb;
    uint8_t *ba = tbytes(a, &na), *bb = tbytes(b, &nb);
    bool ok = ba && bb && na == nb && memcmp(ba, bb, na) == 0;
    free(ba);
    free(bb);
    return ok;
}

static int64_t total_numel(const clipl_tdict *d)
{
    int64_t n = 0;
    for (int i = 0; i < clipl_tdict_count(d); i++)
        n += clipl_tensor_numel(clipl_tdict_tensor(d, i));
    return n;
}

/* Every load failure must be a clean error naming the file. */
static int load_expect_fail(const char *path, const char *what)
{
    clipl_errclear();
    clipl_tdict *d = clipl_load_weights(path);
    if (d) {
        clipl_tdict_free(d);
        return 0; /* loaded: caller decides whether that is acceptable */
    }
    int code = clipl_errcode();
    check_count++;
    if ((code != CLIPL_EFORMAT && code != CLIPL_EIO && code != CLIPL_EUNSUPPORTED) ||
        !strstr(clipl_errmsg(), path)) {
        check_failures++;
        fprintf(stderr, "%s: bad error %d for %s: %s\n", what, code, path, clipl_errmsg());
    }
    return code;
}

static void patch_byte(const char *path, size_t off, uint8_t v)
{
    FILE *fp = fopen(path, "r+b");
    if (!fp)
        return;
    fseek(fp, (long)off, SEEK_SET);
    fputc(v, fp);
    fclose(fp);
}

static uint32_t crc_table[256];
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    if (!crc_table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c;
        }
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ---- a byte buffer, a tiny zip writer and a pickle writer
 * ---------------------------------------- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *s, size_t n)
{
    if (n == 0)
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put8(buf *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}
static void put16(buf *b, unsigned v) { put8(b, v & 0xff), put8(b, (v >> 8) & 0xff); }
static void put32(buf *b, uint32_t v) { put16(b, v & 0xffff), put16(b, v >> 16); }
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

typedef struct zent {
    char name[128];
    uint32_t crc, csize, usize, lho;
    int method;
} zent;

typedef struct zipw {
    buf b;
    zent e[32];
    int n;
} zipw;

/* method 0: stored, data 64-byte aligned; method 8: deflate with stored blocks (valid deflate). */
static void zip_add(zipw *z, const char *name, const void *data, size_t n, int method)
{
    zent *e = &z->e[z->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    buf payload = {0};
    if (method == 8) {
        size_t off = 0;
        do {
            size_t chunk = n - off > 65535 ? 65535 : n - off;
            put8(&payload, off + chunk == n ? 1 : 0);
            put16(&payload, (unsigned)chunk);
            put16(&payload, (unsigned)(~chunk & 0xffff));
            put(&payload, (const uint8_t *)data + off, chunk);
            off += chunk;
        } while (off < n);
    } else {
        put(&payload, data, n);
    }
    e->crc = crc32_of(data, n);
    e->csize = (uint32_t)payload.n;
    e->usize = (uint32_t)n;
    e->method = method;
    e->lho = (uint32_t)z->b.n;
    size_t nl = strlen(name);
    size_t pad = (64 - (z->b.n + 30 + nl + 4) % 64) % 64;
    put32(&z->b, 0x04034b50);
    put16(&z->b, 20), put16(&z->b, 0), put16(&z->b, (unsigned)method);
    put16(&z->b, 0), put16(&z->b, 0);
    put32(&z->b, e->crc), put32(&z->b, e->csize), put32(&z->b, e->usize);
    put16(&z->b, (unsigned)nl), put16(&z->b, (unsigned)(pad + 4));
    put(&z->b, name, nl);
    put16(&z->b, 0x4b50), put16(&z->b, (unsigned)pad); /* a padding extra field, as torch does */
    for (size_t i = 0; i < pad; i++)
        put8(&z->b, 0);
    put(&z->b, payload.p, payload.n);
    free(payload.p);
}

static void zip_finish(zipw *z)
{
    uint32_t cd = (uint32_t)z->b.n;
    for (int i = 0; i < z->n; i++) {
        zent *e = &z->e[i];
        size_t nl = strlen(e->name);
        put32(&z->b, 0x02014b50);
        put16(&z->b, 20), put16(&z->b, 20), put16(&z->b, 0), put16(&z->b, (unsigned)e->method);
        put16(&z->b, 0), put16(&z->b, 0);
        put32(&z->b, e->crc), put32(&z->b, e->csize), put32(&z->b, e->usize);
        put16(&z->b, (unsigned)nl), put16(&z->b, 0), put16(&z->b, 0);
        put16(&z->b, 0), put16(&z->b, 0), put32(&z->b, 0), put32(&z->b, e->lho);
        put(&z->b, e->name, nl);
    }
    uint32_t cds = (uint32_t)z->b.n - cd;
    put32(&z->b, 0x06054b50);
    put16(&z->b, 0), put16(&z->b, 0), put16(&z->b, (unsigned)z->n), put16(&z->b, (unsigned)z->n);
    put32(&z->b, cds), put32(&z->b, cd), put16(&z->b, 0);
}

/* pickle opcodes */
static void p_str(buf *b, const char *s)
{
    put8(b, 'X');
    put32(b, (uint32_t)strlen(s));
    puts_(b, s);
}
static void p_int(buf *b, int v)
{
    put8(b, 'J');
    put32(b, (uint32_t)v);
}
static void p_global(buf *b, const char *module, const char *name)
{
    put8(b, 'c');
    puts_(b, module), put8(b, '\n'), puts_(b, name), put8(b, '\n');
}
static void p_odict(buf *b)
{
    p_global(b, "collections", "OrderedDict");
    put8(b, ')'), put8(b, 'R');
}
/* _rebuild_tensor_v2(('storage', type, key, 'cpu', numel), offset, size, stride, False, {}) */
static void p_tensor(buf *b, const char *stype, const char *key, int numel, int offset, int ndim,
                     const int *size, const int *stride)
{
    p_global(b, "torch._utils", "_rebuild_tensor_v2");
    put8(b, '(');
    put8(b, '(');
    p_str(b, "storage");
    p_global(b, "torch", stype);
    p_str(b, key), p_str(b, "cpu");
    p_int(b, numel);
    put8(b, 't'), put8(b, 'Q');
    p_int(b, offset);
    put8(b, '(');
    for (int i = 0; i < ndim; i++)
        p_int(b, size[i]);
    put8(b, 't'), put8(b, '(');
    for (int i = 0; i < ndim; i++)
        p_int(b, stride[i]);
    put8(b, 't'), put8(b, 0x89);
    p_odict(b);
    put8(b, 't'), put8(b, 'R');
}

/* A state dict pickle: {"w": view [2x3] of storage 0 at offset 1, strides (1, 2) (a transposed
 * view), "b": storage 1 [4] i64, "w2": storage 0 again, [3] at offset 5}. */
static void make_state_pickle(buf *b)
{
    put8(b, 0x80), put8(b, 2);
    p_odict(b);
    put8(b, '(');
    p_str(b, "w");
    p_tensor(b, "FloatStorage", "0", 8, 1, 2, (int[]){2, 3}, (int[]){1, 2});
    p_str(b, "b");
    p_tensor(b, "LongStorage", "1", 4, 0, 1, (int[]){4}, (int[]){1});
    p_str(b, "w2");
    p_tensor(b, "FloatStorage", "0", 8, 5, 1, (int[]){3}, (int[]){1});
    put8(b, 'u'), put8(b, '.');
}

static const float stor0[8] = {0.5f, 1.5f, -2.25f, 3.0f, 1e-3f, 7.0f, -8.5f, 9.25f};
static const int64_t stor1[4] = {1, -2, 1LL << 40, 4};

static void write_pt(const char *path, const buf *pkl, int method)
{
    zipw z = {0};
    zip_add(&z, "archive/data.pkl", pkl->p, pkl->n, method);
    zip_add(&z, "archive/byteorder", "little", 6, 0);
    zip_add(&z, "archive/data/0", stor0, sizeof stor0, method);
    zip_add(&z, "archive/data/1", stor1, sizeof stor1, method);
    zip_add(&z, "archive/version", "3\n", 2, 0);
    zip_finish(&z);
    write_all(path, z.b.p, z.b.n);
    free(z.b.p);
}

/* A .pt file at path whose state dict is {"w": one float tensor as p_tensor describes it}. */
static void write_one_tensor_pt(const char *path, const char *key, int numel, int offset, int ndim,
                                const int *size, const int *stride)
{
    buf e = {0};
    put8(&e, 0x80), put8(&e, 2);
    p_odict(&e);
    put8(&e, '(');
    p_str(&e, "w");
    p_tensor(&e, "FloatStorage", key, numel, offset, ndim, size, stride);
    put8(&e, 'u'), put8(&e, '.');
    write_pt(path, &e, 0);
    free(e.p);
}

/* ---- parity files ---------------------------------------------------------------------------- */

/* Independent reader: locate "name":{... "data_offsets":[a,b]} in the raw header and compare. */
static void check_against_raw_safetensors(const char *path, const clipl_tdict *d)
{
    size_t n;
    uint8_t *raw = read_all(path, &n);
    CHECK(raw != NULL);
    if (!raw)
        return;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | raw[i];
    char *hdr = malloc(hlen + 1);
    memcpy(hdr, raw + 8, hlen);
    hdr[hlen] = '\0';
    int bad = 0;
    for (int i = 0; i < clipl_tdict_count(d); i++) {
        char key[300];
        snprintf(key, sizeof key, "\"%s\":{", clipl_tdict_name(d, i));
        char *at = strstr(hdr, key);
        char *offs = at ? strstr(at, "\"data_offsets\":[") : NULL;
        unsigned long long b0, b1;
        if (!offs || sscanf(offs + 16, "%llu,%llu", &b0, &b1) != 2) {
            bad++;
            continue;
        }
        size_t tn;
        uint8_t *tb = tbytes(clipl_tdict_tensor(d, i), &tn);
        if (tn != b1 - b0 || 8 + hlen + b1 > n || memcmp(tb, raw + 8 + hlen + b0, tn) != 0)
            bad++;
        free(tb);
    }
    CHECK(bad == 0);
    free(hdr);
    free(raw);
}

static void test_parity(void)
{
    const char *vit = PARITY "/tiny_vit/tiny_vit.safetensors";
    const char *rn = PARITY "/tiny_rn/tiny_rn.safetensors";
    clipl_tdict *sv = clipl_load_weights(vit), *sr = clipl_load_weights(rn);
    CHECK(sv && sr);
    if (!sv || !sr)
        return;
    /* counts and parameter totals from parity/README.md */
    CHECK(clipl_tdict_count(sv) == 62);
    CHECK(total_numel(sv) == 680513);
    CHECK(clipl_tdict_count(sr) == 153);
    CHECK(total_numel(sr) == 638166);
    CHECK(strcmp(clipl_tdict_format(sv), "safetensors") == 0);
    CHECK(clipl_tdict_meta_get(sv, "arch") &&
          strcmp(clipl_tdict_meta_get(sv, "arch"), "tiny_vit") == 0);
    CHECK(clipl_tdict_meta_get(sv, "nope") == NULL);
    /* names, shapes and dtypes from the README */
    clipl_tensor *ipw = clipl_tdict_get(sv, "visual.transformer.resblocks.0.attn.in_proj_weight");
    CHECK(ipw && ipw->dt == CLIPL_F32 && ipw->ndim == 2 && ipw->shape[0] == 384 &&
          ipw->shape[1] == 128);
    CHECK(ipw && (ipw->flags & CLIPL_TF_READONLY));
    clipl_tensor *tp = clipl_tdict_get(sv, "text_projection");
    CHECK(tp && tp->shape[0] == 64 && tp->shape[1] == 64);
    clipl_tensor *ls = clipl_tdict_get(sv, "logit_scale");
    double v = 0;
    CHECK(ls && ls->ndim == 0);
    CHECK_OK(clipl_tensor_get_flat(ls, 0, &v));
    CHECK(fabsf((float)v - 2.6592600f) < 1e-6f); /* ln(1/0.07), stored as f32 */
    clipl_tensor *nbt = clipl_tdict_get(sr, "visual.bn1.num_batches_tracked");
    CHECK(nbt && nbt->dt == CLIPL_I64 && nbt->ndim == 0);
    CHECK(clipl_tdict_get(sr, "visual.attnpool.q_proj.weight") != NULL);
    CHECK(clipl_tdict_get(sv, "no.such.tensor") == NULL && clipl_errcode() == CLIPL_EINDEX);
    check_against_raw_safetensors(vit, sv);
    check_against_raw_safetensors(rn, sr);

    /* .pt and _jit.pt: same names, bit-identical tensors */
    const char *others[][2] = {
        {PARITY "/tiny_vit/tiny_vit.pt", "pt"},
        {PARITY "/tiny_vit/tiny_vit_jit.pt", "torchscript"},
        {PARITY "/tiny_rn/tiny_rn.pt", "pt"},
        {PARITY "/tiny_rn/tiny_rn_jit.pt", "torchscript"},
    };
    for (int k = 0; k < 4; k++) {
        clipl_tdict *ref = k < 2 ? sv : sr;
        clipl_tdict *d = clipl_load_weights(others[k][0]);
        CHECK(d != NULL);
        if (!d) {
            fprintf(stderr, "  %s\n", clipl_errmsg());
            continue;
        }
        CHECK(strcmp(clipl_tdict_format(d), others[k][1]) == 0);
        CHECK(clipl_tdict_count(d) == clipl_tdict_count(ref));
        int mismatched = 0;
        for (int i = 0; i < clipl_tdict_count(ref); i++) {
            const char *name = clipl_tdict_name(ref, i);
            if (!same_tensor(clipl_tdict_get(d, name), clipl_tdict_tensor(ref, i))) {
                if (mismatched++ < 3)
                    fprintf(stderr, "  %s: '%s' differs\n", others[k][0], name);
            }
        }
        CHECK(mismatched == 0);
        if (k % 2 == 1) {
            /* OpenAI's scalar buffers are exposed as metadata, not weights */
            CHECK(clipl_tdict_meta_get(d, "input_resolution") &&
                  strcmp(clipl_tdict_meta_get(d, "input_resolution"), "64") == 0);
            CHECK(clipl_tdict_meta_get(d, "context_length") &&
                  strcmp(clipl_tdict_meta_get(d, "context_length"), "77") == 0);
            CHECK(clipl_tdict_meta_get(d, "vocab_size") &&
                  strcmp(clipl_tdict_meta_get(d, "vocab_size"), "1024") == 0);
            CHECK(clipl_tdict_find(d, "input_resolution") < 0);
        }
        /* zero-copy: tensors are read-only views over the mapping, alive after the dict */
        clipl_tensor *t = clipl_tensor_retain(clipl_tdict_get(d, "positional_embedding"));
        CHECK(t && (t->flags & CLIPL_TF_READONLY));
        clipl_tdict_free(d);
        CHECK(clipl_mapped_bytes() > 0);
        CHECK(same_tensor(t, clipl_tdict_get(ref, "positional_embedding")));
        clipl_tensor_release(t);
    }

    /* fp16 file: 35 F16 tensors whose upcast equals the f32 file bit-exactly (README) */
    clipl_tdict *h = clipl_load_weights(PARITY "/tiny_vit/tiny_vit_fp16.safetensors");
    CHECK(h && clipl_tdict_count(h) == 62);
    if (h) {
        int nf16 = 0, bad = 0;
        for (int i = 0; i < clipl_tdict_count(h); i++) {
            clipl_tensor *t = clipl_tdict_tensor(h, i), *up = NULL;
            nf16 += t->dt == CLIPL_F16;
            CHECK_OK(clipl_tensor_to(t, &up, CLIPL_F32));
            bad += !same_tensor(up, clipl_tdict_get(sv, clipl_tdict_name(h, i)));
            clipl_tensor_release(up);
        }
        CHECK(nf16 == 35);
        CHECK(bad == 0);
        CHECK(clipl_tdict_get(h, "visual.proj")->dt == CLIPL_F16);
        CHECK(clipl_tdict_get(h, "visual.class_embedding")->dt == CLIPL_F32);
        clipl_tdict_free(h);
    }
    clipl_tdict *hf = clipl_load_weights(PARITY "/tiny_vit/tiny_vit_hf.safetensors");
    CHECK(hf && clipl_tdict_count(hf) == 80);
    if (hf) {
        clipl_tensor *pid = clipl_tdict_get(hf, "vision_model.embeddings.position_ids");
        CHECK(pid && pid->dt == CLIPL_I64 && pid->shape[1] == 17);
        /* visual_projection.weight is visual.proj transposed (README) */
        clipl_tensor *vp = clipl_tdict_get(hf, "visual_projection.weight"), *vpt = NULL;
        CHECK_OK(clipl_tensor_transpose(vp, &vpt, 0, 1));
        CHECK(same_tensor(vpt, clipl_tdict_get(sv, "visual.proj")));
        clipl_tensor_release(vpt);
        clipl_tdict_free(hf);
    }

    /* round trip through our writer: same tensors, names and metadata */
    CHECK_OK(clipl_tdict_save_safetensors(sv, tpath("rt.safetensors")));
    clipl_tdict *rt = clipl_safetensors_load(tpath("rt.safetensors"));
    CHECK(rt && clipl_tdict_count(rt) == 62);
    if (rt) {
        int bad = 0;
        for (int i = 0; i < 62; i++)
            bad += !same_tensor(clipl_tdict_tensor(rt, i),
                                clipl_tdict_get(sv, clipl_tdict_name(rt, i)));
        CHECK(bad == 0);
        CHECK(strcmp(clipl_tdict_meta_get(rt, "hparams"), clipl_tdict_meta_get(sv, "hparams")) ==
              0);
        check_against_raw_safetensors(tpath("rt.safetensors"), rt);
        clipl_tdict_free(rt);
    }
    /* the layout rule: data sorted by (element size desc, name); header 8-byte aligned */
    {
        size_t n;
        uint8_t *raw = read_all(tpath("rt.safetensors"), &n);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--)
            hlen = hlen << 8 | raw[i];
        CHECK((8 + hlen) % 8 == 0);
        CHECK(raw[8 + hlen - 1] == '}' || raw[8 + hlen - 1] == ' ');
        free(raw);
    }
    /* and the .pt converts to the same safetensors */
    clipl_tdict *pt = clipl_load_weights(PARITY "/tiny_rn/tiny_rn_jit.pt");
    CHECK_OK(clipl_tdict_save_safetensors(pt, tpath("rn.safetensors")));
    clipl_tdict *rn2 = clipl_load_weights(tpath("rn.safetensors"));
    CHECK(rn2 && clipl_tdict_count(rn2) == 153);
    if (rn2)
        CHECK(same_tensor(clipl_tdict_get(rn2, "visual.layer1.0.downsample.0.weight"),
                          clipl_tdict_get(sr, "visual.layer1.0.downsample.0.weight")));
    clipl_tdict_free(rn2);
    clipl_tdict_free(pt);
    clipl_tdict_free(sv);
    clipl_tdict_free(sr);
}

/* ---- npy ------------------------------------------------------------------------------------- */

static void test_npy(void)
{
    static const struct {
        const char *file;
        int dtype, ndim;
        int64_t shape[4];
    } cases[] = {
        {"images_64.npy", CLIPL_F32, 4, {4, 3, 64, 64}},
        {"raw_image_0.npy", CLIPL_U8, 3, {96, 128, 3}},
        {"raw_image_1.npy", CLIPL_U8, 3, {150, 100, 3}},
        {"raw_image_2.npy", CLIPL_U8, 3, {64, 64, 3}},
        {"raw_image_3.npy", CLIPL_U8, 3, {120, 90, 3}},
        {"tokens.npy", CLIPL_I32, 2, {6, 77}},
        {"tokens_v1024.npy", CLIPL_I32, 2, {6, 77}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char path[256];
        snprintf(path, sizeof path, PARITY "/inputs/%s", cases[k].file);
        clipl_tensor *t = clipl_npy_load(path);
        CHECK(t != NULL);
        if (!t) {
            fprintf(stderr, "  %s\n", clipl_errmsg());
            continue;
        }
        CHECK(t->dt == cases[k].dtype && t->ndim == cases[k].ndim);
        for (int i = 0; i < t->ndim; i++)
            CHECK(t->shape[i] == cases[k].shape[i]);
        CHECK(!(t->flags & CLIPL_TF_READONLY));
        /* our writer produces numpy's exact bytes (same header text and 64-byte padding) */
        CHECK_OK(clipl_npy_save(tpath("rt.npy"), t));
        size_t na, nb;
        uint8_t *a = read_all(path, &na), *b = read_all(tpath("rt.npy"), &nb);
        CHECK(a && b && na == nb && memcmp(a, b, na) == 0);
        free(a);
        free(b);
        clipl_tensor *r = clipl_npy_load(tpath("rt.npy"));
        CHECK(same_tensor(r, t));
        clipl_tensor_release(r);
        clipl_tensor_release(t);
    }
    /* token rows from the README: start 49406, "a photo of a cat" ends (49407) at position 6 */
    clipl_tensor *tok = clipl_npy_load(PARITY "/inputs/tokens.npy");
    clipl_tensor *tv = clipl_npy_load(PARITY "/inputs/tokens_v1024.npy");
    double v0 = 0, v6 = 0, w0 = 0, w6 = 0;
    CHECK_OK(clipl_tensor_get_flat(tok, 0, &v0));
    CHECK_OK(clipl_tensor_get_flat(tok, 6, &v6));
    CHECK_OK(clipl_tensor_get_flat(tv, 0, &w0));
    CHECK_OK(clipl_tensor_get_flat(tv, 6, &w6));
    CHECK(v0 == 49406 && v6 == 49407 && w0 == 1022 && w6 == 1023);
    clipl_tensor_release(tok);
    clipl_tensor_release(tv);
    /* load_weights on an npy: one tensor named by the stem */
    clipl_tdict *d = clipl_load_weights(PARITY "/inputs/tokens.npy");
    CHECK(d && clipl_tdict_count(d) == 1 && strcmp(clipl_tdict_name(d, 0), "tokens") == 0);
    CHECK(d && strcmp(clipl_tdict_format(d), "npy") == 0);
    clipl_tdict_free(d);

    /* f16 / i64 / 0-d / 1-d / empty / non-contiguous round trips */
    clipl_tensor *h = clipl_tensor_empty(CLIPL_F16, 2, (int64_t[]){3, 5});
    for (int i = 0; i < 15; i++)
        clipl_tensor_set_flat(h, i, i * 0.25 - 1);
    clipl_tensor *ht = NULL;
    CHECK_OK(clipl_tensor_transpose(h, &ht, 0, 1));
    CHECK_OK(clipl_npy_save(tpath("h.npy"), ht));
    clipl_tensor *hr = clipl_npy_load(tpath("h.npy"));
    CHECK(same_tensor(hr, ht) && clipl_tensor_is_contiguous(hr));
    clipl_tensor_release(hr);
    clipl_tensor *s0 = clipl_tensor_zeros(CLIPL_I64, 0, NULL);
    clipl_tensor_set_flat(s0, 0, -123456789012.0);
    CHECK_OK(clipl_npy_save(tpath("s0.npy"), s0));
    clipl_tensor *s0r = clipl_npy_load(tpath("s0.npy"));
    CHECK(same_tensor(s0r, s0) && s0r->ndim == 0);
    clipl_tensor *e = clipl_tensor_zeros(CLIPL_F32, 2, (int64_t[]){0, 4});
    CHECK_OK(clipl_npy_save(tpath("e.npy"), e));
    clipl_tensor *er = clipl_npy_load(tpath("e.npy"));
    CHECK(er && er->shape[0] == 0 && er->shape[1] == 4);
    clipl_tensor *one = clipl_tensor_zeros(CLIPL_U8, 1, (int64_t[]){5});
    CHECK_OK(clipl_npy_save(tpath("one.npy"), one));
    size_t n1;
    uint8_t *b1 = read_all(tpath("one.npy"), &n1);
    CHECK(b1 && strstr((char *)b1 + 10, "'shape': (5,), }") != NULL && n1 == 128 + 5);
    free(b1);
    /* bf16 is not a numpy dtype */
    clipl_tensor *bf = clipl_tensor_zeros(CLIPL_BF16, 1, (int64_t[]){2});
    CHECK_ERR(clipl_npy_save(tpath("bf.npy"), bf), CLIPL_EUNSUPPORTED, "bf16");
    struct stat st;
    CHECK(stat(tpath("bf.npy"), &st) != 0); /* nothing written */
    clipl_tensor_release(bf);
    clipl_tensor_release(one);
    clipl_tensor_release(er);
    clipl_tensor_release(e);
    clipl_tensor_release(s0r);
    clipl_tensor_release(s0);
    clipl_tensor_release(ht);
    clipl_tensor_release(h);

    /* hand-written files: f64 (converted to f32), fortran order (a strided view), v2 header */
    {
        const double dv[6] = {1.0, -2.5, 1e-40, 3.25, 1e300, 0.1};
        buf b = {0};
        const char *hd = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }";
        puts_(&b, "\x93NUMPY");
        put8(&b, 2), put8(&b, 0), put32(&b, (uint32_t)strlen(hd) + 1);
        puts_(&b, hd), put8(&b, '\n');
        put(&b, dv, sizeof dv);
        write_all(tpath("f.npy"), b.p, b.n);
        free(b.p);
        clipl_tensor *f = clipl_npy_load(tpath("f.npy"));
        CHECK(f && f->dt == CLIPL_F32 && f->shape[0] == 2 && f->shape[1] == 3);
        /* fortran order: element (i, j) is dv[i + 2 j] */
        int bad = 0;
        for (int i = 0; f && i < 2; i++)
            for (int j = 0; j < 3; j++) {
                double got;
                clipl_tensor_get_flat(f, i * 3 + j, &got);
                bad += (float)got != (float)dv[i + 2 * j];
            }
        CHECK(bad == 0);
        clipl_tensor_release(f);
    }
    /* header errors name the file */
    const char *badh[] = {
        "{'descr': '<f4', 'fortran_order': False}",                        /* no shape */
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", /* extra key */
        "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",       /* big-endian */
        "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",       /* complex */
        "{'descr': '<u2', 'fortran_order': False, 'shape': (1,), }",       /* u16 */
        "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } trailing",
        "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }",
    };
    for (size_t k = 0; k < sizeof badh / sizeof badh[0]; k++) {
        buf b = {0};
        puts_(&b, "\x93NUMPY");
        put8(&b, 1), put8(&b, 0), put16(&b, (unsigned)strlen(badh[k]) + 1);
        puts_(&b, badh[k]), put8(&b, '\n');
        for (int i = 0; i < 16; i++)
            put8(&b, 0);
        write_all(tpath("bad.npy"), b.p, b.n);
        free(b.p);
        clipl_errclear();
        clipl_tensor *t = clipl_npy_load(tpath("bad.npy"));
        CHECK(t == NULL);
        CHECK((clipl_errcode() == CLIPL_EFORMAT || clipl_errcode() == CLIPL_EUNSUPPORTED) &&
              strstr(clipl_errmsg(), tpath("bad.npy")));
        clipl_tensor_release(t);
    }
    /* truncated at every byte */
    size_t n;
    uint8_t *raw = read_all(PARITY "/inputs/tokens.npy", &n);
    int ok = 0;
    for (size_t cut = 0; cut < n; cut++) {
        write_all(tpath("cut.npy"), raw, cut);
        clipl_errclear();
        clipl_tensor *t = clipl_npy_load(tpath("cut.npy"));
        ok += t == NULL && (clipl_errcode() == CLIPL_EFORMAT) &&
              strstr(clipl_errmsg(), tpath("cut.npy"));
        clipl_tensor_release(t);
    }
    CHECK(ok == (int)n);
    free(raw);
    CHECK(clipl_npy_load(tpath("does-not-exist.npy")) == NULL && clipl_errcode() == CLIPL_EIO);
}

/* ---- safetensors robustness ------------------------------------------------------------------ */

static void write_st(const char *path, const char *json, size_t data_bytes)
{
    buf b = {0};
    uint64_t hl = strlen(json);
    for (int i = 0; i < 8; i++)
        put8(&b, (unsigned)(hl >> (8 * i)) & 0xff);
    puts_(&b, json);
    for (size_t i = 0; i < data_bytes; i++)
        put8(&b, (unsigned)i);
    write_all(path, b.p, b.n);
    free(b.p);
}

static void test_safetensors_errors(void)
{
    /* a small valid file from our writer */
    clipl_tensor *a = clipl_tensor_zeros(CLIPL_F32, 2, (int64_t[]){2, 3});
    clipl_tensor *b = clipl_tensor_zeros(CLIPL_U8, 1, (int64_t[]){3});
    clipl_tensor *c = clipl_tensor_zeros(CLIPL_I64, 0, NULL);
    for (int i = 0; i < 6; i++)
        clipl_tensor_set_flat(a, i, i - 2.5);
    clipl_tensor_set_flat(c, 0, 42);
    const char *names[] = {"b", "a", "c"};
    clipl_tensor *ts[] = {b, a, c};
    const char *mk[] = {"k\"ey"}, *mv[] = {"va\\lue\n"};
    CHECK_OK(clipl_safetensors_save(tpath("s.safetensors"), 3, names, ts, 1, mk, mv));
    clipl_tdict *d = clipl_safetensors_load(tpath("s.safetensors"));
    CHECK(d && clipl_tdict_count(d) == 3);
    if (d) {
        /* layout: I64 (8 bytes) first, then F32, then U8 */
        CHECK(strcmp(clipl_tdict_name(d, 0), "c") == 0 && strcmp(clipl_tdict_name(d, 1), "a") == 0);
        CHECK(same_tensor(clipl_tdict_get(d, "a"), a));
        CHECK(same_tensor(clipl_tdict_get(d, "c"), c));
        CHECK(clipl_tdict_meta_get(d, "k\"ey") &&
              strcmp(clipl_tdict_meta_get(d, "k\"ey"), "va\\lue\n") == 0);
        clipl_tdict_free(d);
    }
    /* writer errors: duplicate names, reserved name; nothing written */
    const char *dup[] = {"a", "a"};
    CHECK_ERR(clipl_safetensors_save(tpath("dup.safetensors"), 2, dup, ts, 0, NULL, NULL),
              CLIPL_EINVAL, "duplicate");
    const char *res[] = {"__metadata__"};
    CHECK_ERR(clipl_safetensors_save(tpath("dup.safetensors"), 1, res, ts, 0, NULL, NULL),
              CLIPL_EINVAL, "reserved");
    struct stat st;
    CHECK(stat(tpath("dup.safetensors"), &st) != 0);
    CHECK_ERR(clipl_safetensors_save("/nonexistent-dir/x.safetensors", 1, names, ts, 0, NULL, NULL),
              CLIPL_EIO, "/nonexistent-dir/x.safetensors");

    /* truncated at every byte, and every header byte flipped */
    size_t n;
    uint8_t *raw = read_all(tpath("s.safetensors"), &n);
    for (size_t cut = 0; cut < n; cut++) {
        write_all(tpath("cut.safetensors"), raw, cut);
        CHECK(load_expect_fail(tpath("cut.safetensors"), "truncated safetensors") != 0);
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | raw[i];
    int loaded = 0;
    for (size_t i = 0; i < 8 + hl; i++) {
        for (int pat = 0; pat < 3; pat++) {
            static const uint8_t xors[] = {0xff, 0x01, 0x20};
            raw[i] ^= xors[pat];
            write_all(tpath("flip.safetensors"), raw, n);
            loaded += load_expect_fail(tpath("flip.safetensors"), "flipped header") == 0;
            raw[i] ^= xors[pat];
        }
    }
    printf("  header flips that still loaded (a renamed tensor, padding, ...): %d of %zu\n", loaded,
           3 * (size_t)(8 + hl));
    free(raw);

    /* hand-made headers: each must fail with EFORMAT/EUNSUPPORTED naming the file */
    static const struct {
        const char *json;
        size_t data;
        const char *needle;
    } bad[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "JSON"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}x", 8, "after"},
        {"[1, 2]", 0, "start"},
        {"{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'a'"},
        {"{\"a\":{\"dtype\":\"I16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "I16"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "span"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, "past"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         16, "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
         16, "duplicate"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
         "'a'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, "field"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "data_offsets"},
        {"{\"a\":[1]}", 0, "'a'"},
        {"{\"__metadata__\":{\"k\":1}}", 0, "metadata"},
        {"{\"__metadata__\":[]}", 0, "metadata"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "dims"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        write_st(tpath("bad.safetensors"), bad[k].json, bad[k].data);
        clipl_errclear();
        clipl_tdict *x = clipl_safetensors_load(tpath("bad.safetensors"));
        check_count++;
        if (x || (clipl_errcode() != CLIPL_EFORMAT && clipl_errcode() != CLIPL_EUNSUPPORTED) ||
            !strstr(clipl_errmsg(), tpath("bad.safetensors")) ||
            !strstr(clipl_errmsg(), bad[k].needle)) {
            check_failures++;
            fprintf(stderr, "bad safetensors case %zu (%s): %s\n", k, bad[k].json,
                    x ? "loaded" : clipl_errmsg());
        }
        clipl_tdict_free(x);
    }
    /* a huge header length */
    {
        uint8_t hdr[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
        write_all(tpath("huge.safetensors"), hdr, sizeof hdr);
        clipl_tdict *x = clipl_safetensors_load(tpath("huge.safetensors"));
        CHECK(!x && clipl_errcode() == CLIPL_EFORMAT && strstr(clipl_errmsg(), "header length"));
    }
    /* accepted variants: F64 (converted), BOOL (u8), misaligned data (copied), gaps, empty */
    {
        buf b = {0};
        const char *json = "{\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                           "\"m\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[16,18]},"
                           "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[19,23]},"
                           "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[23,23]}}";
        uint64_t hl2 = strlen(json);
        for (int i = 0; i < 8; i++)
            put8(&b, (unsigned)(hl2 >> (8 * i)) & 0xff);
        puts_(&b, json); /* 8 + hl2 need not be aligned: data may be misaligned */
        const double dd[2] = {0.1, -1e39};
        put(&b, dd, 16);
        put8(&b, 1), put8(&b, 0), put8(&b, 0xee);
        const float ff = 3.5f;
        put(&b, &ff, 4);
        write_all(tpath("var.safetensors"), b.p, b.n);
        free(b.p);
        clipl_tdict *x = clipl_safetensors_load(tpath("var.safetensors"));
        CHECK(x != NULL);
        if (x) {
            double v;
            clipl_tensor *t = clipl_tdict_get(x, "d");
            CHECK(t->dt == CLIPL_F32);
            clipl_tensor_get_flat(t, 0, &v);
            CHECK((float)v == (float)0.1);
            clipl_tensor_get_flat(t, 1, &v);
            CHECK(v == -(double)INFINITY); /* f64 -> f32 overflows to -inf, as a C cast does */
            t = clipl_tdict_get(x, "m");
            CHECK(t->dt == CLIPL_U8 && ((uint8_t *)t->ptr)[0] == 1);
            t = clipl_tdict_get(x, "f");
            clipl_tensor_get_flat(t, 0, &v);
            CHECK(v == 3.5 && ((uintptr_t)t->ptr % 4) == 0);
            t = clipl_tdict_get(x, "z");
            CHECK(t->ndim == 2 && clipl_tensor_numel(t) == 0);
            clipl_tdict_free(x);
        } else {
            fprintf(stderr, "  %s\n", clipl_errmsg());
        }
    }
    /* wrong magic / not a weights file / missing file */
    write_all(tpath("junk.bin"), "hello, world, this is not weights", 33);
    CHECK(load_expect_fail(tpath("junk.bin"), "junk") == CLIPL_EFORMAT);
    write_all(tpath("tiny.bin"), "x", 1);
    CHECK(load_expect_fail(tpath("tiny.bin"), "tiny") == CLIPL_EFORMAT);
    CHECK(load_expect_fail(tpath("missing.safetensors"), "missing") == CLIPL_EIO);
    write_all(tpath("legacy.pt"), "\x80\x02\x8a\x0a", 4);
    CHECK(load_expect_fail(tpath("legacy.pt"), "legacy") == CLIPL_EUNSUPPORTED);
    clipl_tensor_release(a);
    clipl_tensor_release(b);
    clipl_tensor_release(c);
}

/* ---- PyTorch zips: hand-made ------------------------------------------------------------------
 */

static void check_state(clipl_tdict *d, const char *what)
{
    CHECK(d != NULL);
    if (!d) {
        fprintf(stderr, "  %s: %s\n", what, clipl_errmsg());
        return;
    }
    CHECK(clipl_tdict_count(d) == 3);
    clipl_tensor *w = clipl_tdict_get(d, "w"), *b = clipl_tdict_get(d, "b"),
                 *w2 = clipl_tdict_get(d, "w2");
    CHECK(w && b && w2);
    if (!w || !b || !w2)
        return;
    /* w[i][j] = stor0[1 + i + 2 j] (offset 1, strides (1, 2)) */
    int bad = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++) {
            double v;
            clipl_tensor_get_flat(w, i * 3 + j, &v);
            bad += (float)v != stor0[1 + i + 2 * j];
        }
    for (int i = 0; i < 3; i++) {
        double v;
        clipl_tensor_get_flat(w2, i, &v);
        bad += (float)v != stor0[5 + i];
    }
    CHECK(bad == 0);
    CHECK(b->dt == CLIPL_I64 && b->shape[0] == 4 && memcmp(b->ptr, stor1, sizeof stor1) == 0);
}

static void test_pt_handmade(void)
{
    buf pk = {0};
    make_state_pickle(&pk);
    write_pt(tpath("s.pt"), &pk, 0);
    clipl_tdict *d = clipl_load_weights(tpath("s.pt"));
    check_state(d, "stored");
    if (d)
        CHECK(clipl_tdict_get(d, "w")->storage == clipl_tdict_get(d, "w2")->storage);
    clipl_tdict_free(d);
    /* DEFLATE entries (inflated, CRC-checked) */
    write_pt(tpath("sd.pt"), &pk, 8);
    d = clipl_load_weights(tpath("sd.pt"));
    check_state(d, "deflate");
    clipl_tdict_free(d);

    /* a training checkpoint: {"epoch": 7, "name": "x", "state_dict": {"module.w": ...}} */
    {
        buf c = {0};
        put8(&c, 0x80), put8(&c, 2);
        put8(&c, '}'), put8(&c, '(');
        p_str(&c, "epoch"), p_int(&c, 7);
        p_str(&c, "name"), p_str(&c, "run1");
        p_str(&c, "optimizer"), put8(&c, '}');
        p_str(&c, "state_dict");
        put8(&c, '}'), put8(&c, '(');
        p_str(&c, "module.w");
        p_tensor(&c, "FloatStorage", "0", 8, 1, 2, (int[]){2, 3}, (int[]){1, 2});
        p_str(&c, "module.b");
        p_tensor(&c, "LongStorage", "1", 4, 0, 1, (int[]){4}, (int[]){1});
        p_str(&c, "module.w2");
        p_tensor(&c, "FloatStorage", "0", 8, 5, 1, (int[]){3}, (int[]){1});
        put8(&c, 'u');
        put8(&c, 'u'), put8(&c, '.');
        write_pt(tpath("ckpt.pt"), &c, 0);
        d = clipl_load_weights(tpath("ckpt.pt"));
        check_state(d, "checkpoint");
        CHECK(d && clipl_tdict_meta_get(d, "epoch") &&
              strcmp(clipl_tdict_meta_get(d, "epoch"), "7") == 0);
        clipl_tdict_free(d);
        free(c.p);
    }

    /* disallowed globals: never called, the error names them */
    static const char *const evil[][2] = {
        {"os", "system"}, {"builtins", "eval"}, {"subprocess", "Popen"}, {"torch", "load"}};
    for (int k = 0; k < 4; k++) {
        buf e = {0};
        put8(&e, 0x80), put8(&e, 2);
        p_global(&e, evil[k][0], evil[k][1]);
        put8(&e, '('), p_str(&e, "touch /tmp/pwned"), put8(&e, 't'), put8(&e, 'R'), put8(&e, '.');
        write_pt(tpath("evil.pt"), &e, 0);
        char name[64];
        snprintf(name, sizeof name, "%s.%s", evil[k][0], evil[k][1]);
        clipl_errclear();
        d = clipl_load_weights(tpath("evil.pt"));
        CHECK(d == NULL && clipl_errcode() == CLIPL_EFORMAT && strstr(clipl_errmsg(), name) &&
              strstr(clipl_errmsg(), tpath("evil.pt")));
        clipl_tdict_free(d);
        free(e.p);
    }
    /* REDUCE of an allowed global with the wrong arguments, STACK_GLOBAL of a bad one */
    {
        buf e = {0};
        put8(&e, 0x80), put8(&e, 4);
        p_str(&e, "posix"), p_str(&e, "system"), put8(&e, 0x93), put8(&e, '.');
        write_pt(tpath("evil2.pt"), &e, 0);
        CHECK(load_expect_fail(tpath("evil2.pt"), "stack global") == CLIPL_EFORMAT &&
              strstr(clipl_errmsg(), "posix.system"));
        free(e.p);
    }
    /* views outside their storage, missing storages, huge numel */
    write_one_tensor_pt(tpath("oob.pt"), "0", 8, 3, 2, (int[]){2, 3}, (int[]){3, 1});
    CHECK(load_expect_fail(tpath("oob.pt"), "view oob") == CLIPL_EFORMAT &&
          strstr(clipl_errmsg(), "storage"));
    write_one_tensor_pt(tpath("missing.pt"), "9", 8, 0, 1, (int[]){2}, (int[]){1});
    CHECK(load_expect_fail(tpath("missing.pt"), "missing storage") == CLIPL_EFORMAT &&
          strstr(clipl_errmsg(), "data/9"));
    write_one_tensor_pt(tpath("hugen.pt"), "0", 0x7fffffff, 0, 1, (int[]){0x7fffffff}, (int[]){1});
    CHECK(load_expect_fail(tpath("hugen.pt"), "huge numel") == CLIPL_EFORMAT);
    /* every truncation of the pickle (re-zipped with a valid CRC) and every byte mutated */
    {
        int loaded = 0, total = 0;
        for (size_t cut = 0; cut < pk.n; cut++) {
            buf t = {pk.p, cut, cut};
            write_pt(tpath("tp.pt"), &t, 0);
            CHECK(load_expect_fail(tpath("tp.pt"), "truncated pickle") != 0);
        }
        for (size_t i = 0; i < pk.n; i++) {
            for (int pat = 0; pat < 2; pat++) {
                static const uint8_t xors[] = {0xff, 0x01};
                pk.p[i] ^= xors[pat];
                write_pt(tpath("mp.pt"), &pk, 0);
                loaded += load_expect_fail(tpath("mp.pt"), "mutated pickle") == 0;
                total++;
                pk.p[i] ^= xors[pat];
            }
        }
        printf("  pickle mutations that still loaded: %d of %d\n", loaded, total);
    }
    /* the zip itself truncated at every byte, and bytes flipped everywhere */
    {
        size_t n;
        uint8_t *raw = read_all(tpath("s.pt"), &n);
        for (size_t cut = 0; cut < n; cut++) {
            write_all(tpath("tz.pt"), raw, cut);
            CHECK(load_expect_fail(tpath("tz.pt"), "truncated zip") != 0);
        }
        for (size_t i = 0; i < n; i += 5) {
            raw[i] ^= 0xff;
            write_all(tpath("fz.pt"), raw, n);
            load_expect_fail(tpath("fz.pt"), "flipped zip");
            raw[i] ^= 0xff;
        }
        free(raw);
    }
    free(pk.p);
}

/* The parity archives truncated through the file and with bytes flipped in the zip structures. */
static void test_pt_parity_damage(void)
{
    static const char *files[] = {PARITY "/tiny_vit/tiny_vit.pt",
                                  PARITY "/tiny_vit/tiny_vit_jit.pt",
                                  PARITY "/tiny_vit/tiny_vit.safetensors"};
    for (int k = 0; k < 3; k++) {
        size_t n;
        uint8_t *raw = read_all(files[k], &n);
        CHECK(raw != NULL);
        if (!raw)
            continue;
        int cuts = 0;
        /* flipped bytes in the trailing directory (patched in place in one copy) */
        write_all(tpath("dmg.bin"), raw, n);
        for (size_t i = n > 2000 ? n - 2000 : 0; i < n; i += 7) {
            patch_byte(tpath("dmg.bin"), i, raw[i] ^ 0x55);
            load_expect_fail(tpath("dmg.bin"), files[k]);
            patch_byte(tpath("dmg.bin"), i, raw[i]);
        }
        /* truncated: every byte of the last and first 300, a stride of offsets in between
         * (the same copy cut shorter and shorter) */
        for (size_t cut = n; cut-- > 0;) {
            if (!(cut < 300 || cut > n - 300 || cut % 9973 == 0))
                continue;
            if (truncate(tpath("dmg.bin"), (off_t)cut) != 0)
                break;
            CHECK(load_expect_fail(tpath("dmg.bin"), files[k]) != 0);
            cuts++;
        }
        printf("  %s: %d truncations refused\n", files[k], cuts);
        free(raw);
    }
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/clipl_test_io.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "mkdtemp failed\n");
        return 2;
    }
    test_parity();
    test_npy();
    test_safetensors_errors();
    test_pt_handmade();
    test_pt_parity_damage();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_done("io");
}
