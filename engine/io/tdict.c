/*
 * tdict.c - the tensor dict that weight loaders return, and clipl_load_weights, which sniffs a
 * file's format from its first bytes.
 */
#include "io_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct clipl_tdict {
    int count, cap;
    char **names;
    clipl_tensor **tensors;
    clipl__smap index; /* name -> position */
    int nmeta, capmeta;
    char **mkeys, **mvals;
    const char *format; /* static string */
};

clipl_tdict *clipl_tdict_new(void)
{
    clipl_tdict *d = calloc(1, sizeof *d);
    if (!d) {
        clipl__err(CLIPL_ENOMEM, "tdict: out of memory");
        return NULL;
    }
    d->format = "";
    return d;
}

void clipl_tdict_free(clipl_tdict *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->count; i++) {
        free(d->names[i]);
        clipl_tensor_release(d->tensors[i]);
    }
    for (int i = 0; i < d->nmeta; i++) {
        free(d->mkeys[i]);
        free(d->mvals[i]);
    }
    free(d->names);
    free(d->tensors);
    free(d->mkeys);
    free(d->mvals);
    clipl__smap_free(&d->index);
    free(d);
}

int clipl_tdict_count(const clipl_tdict *d) { return d ? d->count : 0; }

const char *clipl_tdict_name(const clipl_tdict *d, int i)
{
    return d && i >= 0 && i < d->count ? d->names[i] : NULL;
}

clipl_tensor *clipl_tdict_tensor(const clipl_tdict *d, int i)
{
    return d && i >= 0 && i < d->count ? d->tensors[i] : NULL;
}

int clipl_tdict_find(const clipl_tdict *d, const char *name)
{
    if (!d || !name)
        return -1;
    return clipl__smap_get(&d->index, name);
}

clipl_tensor *clipl_tdict_get(const clipl_tdict *d, const char *name)
{
    int i = clipl_tdict_find(d, name);
    if (i < 0) {
        clipl__err(CLIPL_EINDEX, "tdict: no tensor named '%s'", name ? name : "(null)");
        return NULL;
    }
    return d->tensors[i];
}

int clipl__tdict_add_steal(clipl_tdict *d, const char *name, clipl_tensor *t)
{
    int rc = CLIPL_OK;
    char *copy = NULL;
    if (!d || !name || !t) {
        rc = clipl__err(CLIPL_EINVAL, "tdict_add: %s is NULL",
                        !d      ? "the dict"
                        : !name ? "the name"
                                : "the tensor");
        goto fail;
    }
    if (clipl__smap_get(&d->index, name) >= 0) {
        rc = clipl__err(CLIPL_EINVAL, "tdict_add: duplicate tensor name '%s'", name);
        goto fail;
    }
    if (d->count == d->cap) {
        int cap = d->cap ? d->cap * 2 : 32;
        char **names = realloc(d->names, (size_t)cap * sizeof *names);
        if (names)
            d->names = names;
        clipl_tensor **ts = names ? realloc(d->tensors, (size_t)cap * sizeof *ts) : NULL;
        if (!ts) {
            rc = clipl__err(CLIPL_ENOMEM, "tdict_add: out of memory");
            goto fail;
        }
        d->tensors = ts;
        d->cap = cap;
    }
    copy = strdup(name);
    if (!copy) {
        rc = clipl__err(CLIPL_ENOMEM, "tdict_add: out of memory");
        goto fail;
    }
    d->names[d->count] = copy;
    d->tensors[d->count] = t;
    if (clipl__smap_put(&d->index, copy, d->count) < 0) {
        free(copy);
        rc = CLIPL_ENOMEM;
        goto fail;
    }
    d->count++;
    return CLIPL_OK;
fail:
    clipl_tensor_release(t);
    return rc;
}

int clipl_tdict_add(clipl_tdict *d, const char *name, clipl_tensor *t)
{
    return clipl__tdict_add_steal(d, name, clipl_tensor_retain(t));
}

int clipl_tdict_meta_count(const clipl_tdict *d) { return d ? d->nmeta : 0; }

const char *clipl_tdict_meta_key(const clipl_tdict *d, int i)
{
    return d && i >= 0 && i < d->nmeta ? d->mkeys[i] : NULL;
}

const char *clipl_tdict_meta_value(const clipl_tdict *d, int i)
{
    return d && i >= 0 && i < d->nmeta ? d->mvals[i] : NULL;
}

const char *clipl_tdict_meta_get(const clipl_tdict *d, const char *key)
{
    if (!d || !key)
        return NULL;
    for (int i = 0; i < d->nmeta; i++)
        if (strcmp(d->mkeys[i], key) == 0)
            return d->mvals[i];
    return NULL;
}

int clipl_tdict_set_meta(clipl_tdict *d, const char *key, const char *value)
{
    if (!d || !key || !value)
        return clipl__err(CLIPL_EINVAL, "tdict_set_meta: NULL argument");
    char *v = strdup(value);
    if (!v)
        return clipl__err(CLIPL_ENOMEM, "tdict_set_meta: out of memory");
    for (int i = 0; i < d->nmeta; i++) {
        if (strcmp(d->mkeys[i], key) == 0) {
            free(d->mvals[i]);
            d->mvals[i] = v;
            return CLIPL_OK;
        }
    }
    if (d->nmeta == d->capmeta) {
        int cap = d->capmeta ? d->capmeta * 2 : 8;
        char **k = realloc(d->mkeys, (size_t)cap * sizeof *k);
        if (k)
            d->mkeys = k;
        char **vs = k ? realloc(d->mvals, (size_t)cap * sizeof *vs) : NULL;
        if (!vs) {
            free(v);
            return clipl__err(CLIPL_ENOMEM, "tdict_set_meta: out of memory");
        }
        d->mvals = vs;
        d->capmeta = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return clipl__err(CLIPL_ENOMEM, "tdict_set_meta: out of memory");
    }
    d->mkeys[d->nmeta] = k;
    d->mvals[d->nmeta] = v;
    d->nmeta++;
    return CLIPL_OK;
}

const char *clipl_tdict_format(const clipl_tdict *d) { return d ? d->format : ""; }

void clipl__tdict_set_format(clipl_tdict *d, const char *format) { d->format = format; }

int clipl_tdict_save_safetensors(const clipl_tdict *d, const char *path)
{
    if (!d)
        return clipl__err(CLIPL_EINVAL, "save_safetensors: no dict");
    return clipl_safetensors_save(path, d->count, (const char *const *)d->names, d->tensors,
                                  d->nmeta, (const char *const *)d->mkeys,
                                  (const char *const *)d->mvals);
}

/* ---- format sniffing ---------------------------------------------------------------------------
 */

clipl_tdict *clipl_load_weights(const char *path)
{
    uint8_t head[16];
    if (!path) {
        clipl__err(CLIPL_EINVAL, "load_weights: no path given");
        return NULL;
    }
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        clipl__err(CLIPL_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t n = fread(head, 1, sizeof head, fp);
    fclose(fp);
    if (n >= 4 && head[0] == 'P' && head[1] == 'K' &&
        ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6)))
        return clipl_pt_load(path);
    if (n >= 6 && memcmp(head, "\x93NUMPY", 6) == 0) {
        clipl_tensor *t = clipl_npy_load(path);
        if (!t)
            return NULL;
        clipl_tdict *d = clipl_tdict_new();
        char stem[256];
        clipl__io_stem(path, stem, sizeof stem);
        if (!d || clipl__tdict_add_steal(d, stem, t) != CLIPL_OK) {
            clipl_tdict_free(d);
            if (!d)
                clipl_tensor_release(t);
            return NULL;
        }
        clipl__tdict_set_format(d, "npy");
        return d;
    }
    if (n >= 9 && head[8] == '{')
        return clipl_safetensors_load(path);
    if (n >= 2 && head[0] == 0x80 && head[1] <= 5) {
        clipl__err(CLIPL_EUNSUPPORTED,
                   "%s: a plain pickle (the legacy torch.save format of torch < 1.6, or a "
                   "non-torch pickle) is not supported: re-save it with torch >= 1.6 "
                   "(torch.save(obj, path)) or convert it to safetensors",
                   path);
        return NULL;
    }
    if (n < 9)
        clipl__err(CLIPL_EFORMAT, "%s: too short for a weights file (%zu bytes)", path, n);
    else
        clipl__err(CLIPL_EFORMAT,
                   "%s: unknown weights format (expected safetensors, a PyTorch .pt zip, a "
                   "TorchScript archive or npy)",
                   path);
    return NULL;
}
