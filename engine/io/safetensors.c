/*
 * safetensors.c - safetensors reading (mmap, zero-copy, every header field validated) and atomic
 * writing.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 *   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * then the data section; offsets are relative to its start.
 */
#include "io_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reference implementation refuses headers above 100 MB; so do we. */
enum { MAX_HEADER = 100 * 1000 * 1000 };

static const struct {
    const char *name;
    int dtype; /* clipl dtype, CLIPL__F64, or -1 when refused */
    int size;
} st_dtypes[] = {
    {"F32", CLIPL_F32, 4}, {"F16", CLIPL_F16, 2}, {"BF16", CLIPL_BF16, 2}, {"I32", CLIPL_I32, 4},
    {"I64", CLIPL_I64, 8}, {"U8", CLIPL_U8, 1},   {"BOOL", CLIPL_U8, 1},   {"F64", CLIPL__F64, 8},
    {"I8", -1, 1},         {"I16", -1, 2},        {"U16", -1, 2},          {"U32", -1, 4},
    {"U64", -1, 8},        {"F8_E4M3", -1, 1},    {"F8_E5M2", -1, 1},
};

typedef struct entry {
    const char *name; /* borrowed from the cJSON tree */
    int dtype, esize, ndim;
    int64_t shape[CLIPL_MAX_DIMS];
    uint64_t begin, end;
} entry;

static int cmp_begin(const void *a, const void *b)
{
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* An integral JSON number in [0, 2^53]. */
static bool json_u53(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double v = j->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != (double)(uint64_t)v)
        return false;
    *out = (uint64_t)v;
    return true;
}

static int parse_entry(const char *path, const cJSON *item, entry *e)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return clipl__err(CLIPL_EFORMAT, "%s: tensor '%s': header entry is not a JSON object", path,
                          name);
    const cJSON *dt = NULL, *shape = NULL, *offs = NULL, *f;
    cJSON_ArrayForEach(f, item)
    {
        if (strcmp(f->string, "dtype") == 0 && !dt)
            dt = f;
        else if (strcmp(f->string, "shape") == 0 && !shape)
            shape = f;
        else if (strcmp(f->string, "data_offsets") == 0 && !offs)
            offs = f;
        else
            return clipl__err(CLIPL_EFORMAT, "%s: tensor '%s': unexpected or repeated field '%s'",
                              path, name, f->string);
    }
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return clipl__err(CLIPL_EFORMAT,
                          "%s: tensor '%s': needs \"dtype\" (string), \"shape\" (array) and "
                          "\"data_offsets\" (array)",
                          path, name);
    e->name = name;
    e->dtype = -2;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++) {
        if (strcmp(dt->valuestring, st_dtypes[i].name) == 0) {
            e->dtype = st_dtypes[i].dtype;
            e->esize = st_dtypes[i].size;
        }
    }
    if (e->dtype == -2)
        return clipl__err(CLIPL_EFORMAT, "%s: tensor '%s': unknown dtype '%.32s'", path, name,
                          dt->valuestring);
    if (e->dtype == -1)
        return clipl__err(CLIPL_EUNSUPPORTED,
                          "%s: tensor '%s': dtype %s is not supported (clipl reads F32, F16, BF16, "
                          "I32, I64, U8, BOOL as u8 and F64 converted to f32)",
                          path, name, dt->valuestring);
    int nd = cJSON_GetArraySize(shape);
    if (nd > CLIPL_MAX_DIMS)
        return clipl__err(CLIPL_EUNSUPPORTED, "%s: tensor '%s': %d dims (at most %d supported)",
                          path, name, nd, CLIPL_MAX_DIMS);
    e->ndim = nd;
    int k = 0;
    cJSON_ArrayForEach(f, shape)
    {
        uint64_t v;
        if (!json_u53(f, &v))
            return clipl__err(CLIPL_EFORMAT,
                              "%s: tensor '%s': shape entry %d is not a non-negative integer", path,
                              name, k + 1);
        e->shape[k++] = (int64_t)v;
    }
    if (cJSON_GetArraySize(offs) != 2 || !json_u53(cJSON_GetArrayItem(offs, 0), &e->begin) ||
        !json_u53(cJSON_GetArrayItem(offs, 1), &e->end) || e->end < e->begin)
        return clipl__err(CLIPL_EFORMAT,
                          "%s: tensor '%s': data_offsets must be [begin, end] with "
                          "0 <= begin <= end",
                          path, name);
    int64_t numel = clipl__io_numel(nd, e->shape, INT64_MAX / 8);
    if (numel < 0 || (uint64_t)numel * (uint64_t)e->esize != e->end - e->begin) {
        char sb[128];
        return clipl__err(CLIPL_EFORMAT,
                          "%s: tensor '%s': shape [%s] of %s needs %lld bytes but data_offsets "
                          "[%llu, %llu] span %llu",
                          path, name, clipl__shape_str(sb, sizeof sb, nd, e->shape),
                          dt->valuestring, numel < 0 ? -1LL : (long long)numel * e->esize,
                          (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)(e->end - e->begin));
    }
    return CLIPL_OK;
}

clipl_tdict *clipl_safetensors_load(const char *path)
{
    clipl__mfile f;
    clipl_tdict *d = NULL;
    cJSON *root = NULL;
    entry *ents = NULL, **order = NULL;
    clipl__smap seen = {0};
    int rc = clipl__mfile_open(&f, path);
    if (rc)
        return NULL;
    if (f.size < 8) {
        clipl__err(CLIPL_EFORMAT, "%s: not safetensors: %zu bytes, too short for the header length",
                   path, f.size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f.data[i];
    if (hlen > f.size - 8 || hlen > MAX_HEADER || hlen < 2) {
        clipl__err(CLIPL_EFORMAT,
                   "%s: not safetensors or truncated: header length %llu but the file has %zu "
                   "bytes",
                   path, (unsigned long long)hlen, f.size);
        goto fail;
    }
    const char *hdr = (const char *)f.data + 8;
    if (hdr[0] != '{') {
        clipl__err(CLIPL_EFORMAT, "%s: not safetensors: the header does not start with '{'", path);
        goto fail;
    }
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        clipl__err(CLIPL_EFORMAT, "%s: safetensors header is not valid JSON (near byte %lld)", path,
                   (long long)(8 + ((root ? end : cJSON_GetErrorPtr()) - hdr)));
        goto fail;
    }
    for (; end < hdr + hlen; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            clipl__err(CLIPL_EFORMAT,
                       "%s: safetensors header has bytes after the JSON object "
                       "(byte %lld)",
                       path, (long long)(8 + (end - hdr)));
            goto fail;
        }
    }
    d = clipl_tdict_new();
    int n = cJSON_GetArraySize(root);
    ents = calloc((size_t)n + 1, sizeof *ents);
    order = calloc((size_t)n + 1, sizeof *order);
    if (!d || !ents || !order) {
        clipl__err(CLIPL_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    clipl__tdict_set_format(d, "safetensors");
    int ne = 0, nmeta_seen = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        if (clipl__smap_put(&seen, item->string, 0) == 0) {
            clipl__err(CLIPL_EFORMAT, "%s: duplicate name '%s' in the header", path, item->string);
            goto fail;
        }
        if (strcmp(item->string, "__metadata__") == 0) {
            nmeta_seen++;
            if (!cJSON_IsObject(item)) {
                clipl__err(CLIPL_EFORMAT, "%s: __metadata__ is not a JSON object", path);
                goto fail;
            }
            const cJSON *m;
            cJSON_ArrayForEach(m, item)
            {
                if (!cJSON_IsString(m)) {
                    clipl__err(CLIPL_EFORMAT, "%s: __metadata__ value of '%s' is not a string",
                               path, m->string);
                    goto fail;
                }
                if (clipl_tdict_meta_get(d, m->string)) {
                    clipl__err(CLIPL_EFORMAT, "%s: duplicate __metadata__ key '%s'", path,
                               m->string);
                    goto fail;
                }
                if (clipl_tdict_set_meta(d, m->string, m->valuestring))
                    goto fail;
            }
            continue;
        }
        if (parse_entry(path, item, &ents[ne]))
            goto fail;
        order[ne] = &ents[ne];
        ne++;
    }
    (void)nmeta_seen;
    /* offsets inside the data section and not overlapping (gaps are tolerated) */
    uint64_t dsize = f.size - 8 - hlen;
    qsort(order, (size_t)ne, sizeof *order, cmp_begin);
    for (int i = 0; i < ne; i++) {
        if (order[i]->end > dsize) {
            clipl__err(CLIPL_EFORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] run past the data section "
                       "(%llu bytes; file truncated?)",
                       path, order[i]->name, (unsigned long long)order[i]->begin,
                       (unsigned long long)order[i]->end, (unsigned long long)dsize);
            goto fail;
        }
        if (i > 0 && order[i]->begin < order[i - 1]->end) {
            clipl__err(CLIPL_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data section", path,
                       order[i - 1]->name, order[i]->name);
            goto fail;
        }
    }
    /* tensors in header order */
    for (int i = 0; i < ne; i++) {
        entry *e = &ents[i];
        clipl_tensor *t =
            clipl__io_tensor(&f, 8 + hlen + e->begin, e->dtype, e->ndim, e->shape, NULL, 0);
        if (!t) {
            clipl__err_prefix("%s: tensor '%s'", path, e->name);
            goto fail;
        }
        if (clipl__tdict_add_steal(d, e->name, t))
            goto fail;
    }
    cJSON_Delete(root);
    free(ents);
    free(order);
    clipl__smap_free(&seen);
    clipl__mfile_close(&f);
    return d;
fail:
    cJSON_Delete(root);
    free(ents);
    free(order);
    clipl__smap_free(&seen);
    clipl_tdict_free(d);
    clipl__mfile_close(&f);
    return NULL;
}

/* ---- writing -----------------------------------------------------------------------------------
 */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_json_str(sbuf *b, const char *s)
{
    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            sb_add(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_add(b, esc, 6);
        } else {
            sb_add(b, (const char *)&c, 1);
        }
    }
    sb_add(b, "\"", 1);
}

static const char *st_name(int dtype)
{
    switch (dtype) {
    case CLIPL_F32: return "F32";
    case CLIPL_BF16: return "BF16";
    case CLIPL_F16: return "F16";
    case CLIPL_I32: return "I32";
    case CLIPL_I64: return "I64";
    case CLIPL_U8: return "U8";
    default: return NULL;
    }
}

typedef struct wslot {
    const char *name;
    const clipl_tensor *t;
    int esize;
} wslot;

static int cmp_layout(const void *a, const void *b)
{
    const wslot *x = a, *y = b;
    if (x->esize != y->esize)
        return y->esize - x->esize;
    return strcmp(x->name, y->name);
}

int clipl_safetensors_save(const char *path, int n, const char *const *names,
                           clipl_tensor *const *tensors, int nmeta, const char *const *meta_keys,
                           const char *const *meta_values)
{
    int rc = CLIPL_OK;
    sbuf b = {0};
    wslot *w = NULL;
    clipl__smap seen = {0};
    clipl__afile a = {.fd = -1};
    if (!path)
        return clipl__err(CLIPL_EINVAL, "save_safetensors: no path given");
    if (n < 0 || nmeta < 0 || (n > 0 && (!names || !tensors)) ||
        (nmeta > 0 && (!meta_keys || !meta_values)))
        return clipl__err(CLIPL_EINVAL, "%s: save_safetensors: bad counts or NULL arrays", path);
    w = calloc((size_t)n + 1, sizeof *w);
    if (!w)
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        if (!names[i] || !tensors[i]) {
            rc = clipl__err(CLIPL_EINVAL, "%s: save_safetensors: entry %d has no %s", path, i,
                            names[i] ? "tensor" : "name");
            goto done;
        }
        if (strcmp(names[i], "__metadata__") == 0) {
            rc = clipl__err(CLIPL_EINVAL, "%s: save_safetensors: '__metadata__' is reserved", path);
            goto done;
        }
        if (!st_name(tensors[i]->dt)) {
            rc = clipl__err(CLIPL_EINVAL, "%s: save_safetensors: tensor '%s' has unknown dtype %d",
                            path, names[i], tensors[i]->dt);
            goto done;
        }
        int r = clipl__smap_put(&seen, names[i], i);
        if (r <= 0) {
            rc = r < 0 ? r
                       : clipl__err(CLIPL_EINVAL, "%s: save_safetensors: duplicate name '%s'", path,
                                    names[i]);
            goto done;
        }
        w[i].name = names[i];
        w[i].t = tensors[i];
        w[i].esize = clipl_dtype_size(tensors[i]->dt);
    }
    qsort(w, (size_t)n, sizeof *w, cmp_layout);

    sb_str(&b, "{");
    if (nmeta > 0) {
        sb_str(&b, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (!meta_keys[i] || !meta_values[i]) {
                rc = clipl__err(CLIPL_EINVAL, "%s: save_safetensors: metadata pair %d is NULL",
                                path, i);
                goto done;
            }
            if (i)
                sb_str(&b, ",");
            sb_json_str(&b, meta_keys[i]);
            sb_str(&b, ":");
            sb_json_str(&b, meta_values[i]);
        }
        sb_str(&b, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        char num[64];
        const clipl_tensor *t = w[i].t;
        uint64_t nbytes = (uint64_t)clipl_tensor_numel(t) * (uint64_t)w[i].esize;
        if (i || nmeta > 0)
            sb_str(&b, ",");
        sb_json_str(&b, w[i].name);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, st_name(t->dt));
        sb_str(&b, "\",\"shape\":[");
        for (int k = 0; k < t->ndim; k++) {
            snprintf(num, sizeof num, "%s%lld", k ? "," : "", (long long)t->shape[k]);
            sb_str(&b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + nbytes));
        sb_str(&b, num);
        off += nbytes;
    }
    sb_str(&b, "}");
    while ((8 + b.n) % 8)
        sb_str(&b, " ");
    if (b.oom) {
        rc = clipl__err(CLIPL_ENOMEM, "%s: out of memory building the header", path);
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)b.n >> (8 * i));
    if ((rc = clipl__afile_open(&a, path)))
        goto done;
    if ((rc = clipl__afile_write(&a, len8, 8)) || (rc = clipl__afile_write(&a, b.p, b.n)))
        goto done;
    for (int i = 0; i < n; i++) {
        if ((rc = clipl__afile_write_tensor(&a, w[i].t))) {
            clipl__err_prefix("%s: tensor '%s'", path, w[i].name);
            goto done;
        }
    }
    rc = clipl__afile_commit(&a);
done:
    if (rc && a.fd >= 0)
        clipl__afile_abort(&a);
    free(b.p);
    free(w);
    clipl__smap_free(&seen);
    return rc;
}
