/*
 * io_util.c - file mapping, zero-copy tensors over it, atomic writes and a small string map for the
 * readers and writers of engine/io.
 */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- mapped files ------------------------------------------------------------------------------
 */

int clipl__mfile_open(clipl__mfile *f, const char *path)
{
    struct stat st;
    memset(f, 0, sizeof *f);
    f->path = path;
    if (!path)
        return clipl__err(CLIPL_EINVAL, "load: no path given");
    if (stat(path, &st) != 0)
        return clipl__err(CLIPL_EIO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return clipl__err(CLIPL_EIO, "%s: is a directory, not a file", path);
    f->st = clipl_storage_map_file(path, 0, (size_t)st.st_size);
    if (!f->st)
        return clipl_errcode() ? clipl_errcode() : CLIPL_EIO;
    f->size = clipl_storage_nbytes(f->st);
    f->data = clipl_storage_data(f->st);
    return CLIPL_OK;
}

void clipl__mfile_close(clipl__mfile *f)
{
    clipl_storage_release(f->st);
    f->st = NULL;
    f->data = NULL;
}

/* ---- tensors over file bytes -------------------------------------------------------------------
 */

int64_t clipl__io_numel(int ndim, const int64_t *shape, int64_t limit)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] == 0)
            return 0;
    }
    for (int i = 0; i < ndim; i++) {
        if (__builtin_mul_overflow(n, shape[i], &n) || n > limit)
            return -1;
    }
    return n;
}

/* f64 elements (any strides) -> a new contiguous f32 tensor. */
static clipl_tensor *f64_to_f32(const uint8_t *base, int ndim, const int64_t *shape,
                                const int64_t *stride)
{
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, ndim, shape);
    if (!t)
        return NULL;
    int64_t n = clipl_tensor_numel(t), idx[CLIPL_MAX_DIMS] = {0};
    float *dst = t->ptr;
    for (int64_t k = 0; k < n; k++) {
        int64_t off = 0;
        for (int i = 0; i < ndim; i++)
            off += idx[i] * stride[i];
        double v;
        memcpy(&v, base + off * 8, 8);
        dst[k] = (float)v;
        for (int i = ndim - 1; i >= 0; i--) {
            if (++idx[i] < shape[i])
                break;
            idx[i] = 0;
        }
    }
    return t;
}

clipl_tensor *clipl__io_tensor_on(clipl_storage *s, int file_dtype, int ndim, const int64_t *shape,
                                  const int64_t *stride, int64_t elem_off)
{
    int64_t cstride[CLIPL_MAX_DIMS];
    if (!stride) {
        clipl__contiguous_strides(ndim, shape, cstride);
        stride = cstride;
    }
    if (file_dtype == CLIPL__F64)
        return f64_to_f32((const uint8_t *)clipl_storage_data(s) + elem_off * 8, ndim, shape,
                          stride);
    return clipl_tensor_new_view(s, file_dtype, ndim, shape, stride, elem_off);
}

clipl_tensor *clipl__io_tensor(clipl__mfile *f, size_t byte_off, int file_dtype, int ndim,
                               const int64_t *shape, const int64_t *stride, int64_t elem_off)
{
    int es = file_dtype == CLIPL__F64 ? 8 : clipl_dtype_size(file_dtype);
    int64_t cstride[CLIPL_MAX_DIMS];
    if (!stride) {
        clipl__contiguous_strides(ndim, shape, cstride);
        stride = cstride;
    }
    if (file_dtype == CLIPL__F64)
        return f64_to_f32(f->data + byte_off + elem_off * 8, ndim, shape, stride);
    if (byte_off % (size_t)es == 0)
        return clipl_tensor_new_view(f->st, file_dtype, ndim, shape, stride,
                                     (int64_t)(byte_off / (size_t)es) + elem_off);
    /* misaligned data: copy the span the view covers into an aligned storage */
    int64_t numel = clipl__io_numel(ndim, shape, INT64_MAX);
    int64_t hi = elem_off;
    for (int i = 0; i < ndim && numel > 0; i++)
        hi += (shape[i] - 1) * stride[i];
    size_t span = numel > 0 ? (size_t)(hi + 1) * (size_t)es : 0;
    clipl_storage *s = clipl_storage_new(span);
    if (!s)
        return NULL;
    if (span)
        memcpy(clipl_storage_data(s), f->data + byte_off, span);
    clipl_tensor *t = clipl_tensor_new_view(s, file_dtype, ndim, shape, stride, elem_off);
    clipl_storage_release(s);
    return t;
}

/* ---- atomic writes -----------------------------------------------------------------------------
 */

static _Atomic unsigned tmp_counter;

int clipl__afile_open(clipl__afile *a, const char *path)
{
    a->fd = -1;
    a->path = path;
    a->tmp = NULL;
    if (!path || !*path)
        return clipl__err(CLIPL_EINVAL, "save: no path given");
    size_t n = strlen(path) + 64;
    a->tmp = malloc(n);
    if (!a->tmp)
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory", path);
    for (int attempt = 0; attempt < 100; attempt++) {
        snprintf(a->tmp, n, "%s.tmp.%ld.%u", path, (long)getpid(),
                 atomic_fetch_add(&tmp_counter, 1));
        a->fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (a->fd >= 0)
            return CLIPL_OK;
        if (errno != EEXIST)
            break;
    }
    int rc = clipl__err(CLIPL_EIO, "%s: cannot create a temporary file beside it (%s): %s", path,
                        a->tmp, strerror(errno));
    free(a->tmp);
    a->tmp = NULL;
    return rc;
}

int clipl__afile_write(clipl__afile *a, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(a->fd, c, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return clipl__err(CLIPL_EIO, "%s: write failed: %s", a->path, strerror(errno));
        }
        c += w;
        n -= (size_t)w;
    }
    return CLIPL_OK;
}

int clipl__afile_write_tensor(clipl__afile *a, const clipl_tensor *t)
{
    clipl_tensor *c = NULL;
    int rc = clipl_tensor_contiguous(t, &c);
    if (rc)
        return rc;
    rc = clipl__afile_write(a, c->ptr,
                            (size_t)clipl_tensor_numel(c) * (size_t)clipl_dtype_size(c->dt));
    clipl_tensor_release(c);
    return rc;
}

int clipl__afile_commit(clipl__afile *a)
{
    int rc = CLIPL_OK;
    if (fsync(a->fd) != 0)
        rc = clipl__err(CLIPL_EIO, "%s: fsync failed: %s", a->path, strerror(errno));
    if (close(a->fd) != 0 && rc == CLIPL_OK)
        rc = clipl__err(CLIPL_EIO, "%s: close failed: %s", a->path, strerror(errno));
    a->fd = -1;
    if (rc == CLIPL_OK && rename(a->tmp, a->path) != 0)
        rc = clipl__err(CLIPL_EIO, "%s: cannot rename %s over it: %s", a->path, a->tmp,
                        strerror(errno));
    if (rc != CLIPL_OK) {
        unlink(a->tmp);
    } else {
        /* make the rename itself durable */
        char *dir = strdup(a->path);
        if (dir) {
            char *slash = strrchr(dir, '/');
            const char *d = ".";
            if (slash) {
                slash[slash == dir ? 1 : 0] = '\0';
                d = dir;
            }
            int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dfd >= 0) {
                fsync(dfd);
                close(dfd);
            }
            free(dir);
        }
    }
    free(a->tmp);
    a->tmp = NULL;
    return rc;
}

void clipl__afile_abort(clipl__afile *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
    if (a->tmp)
        unlink(a->tmp);
    free(a->tmp);
    a->tmp = NULL;
}

/* ---- string map --------------------------------------------------------------------------------
 */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

int clipl__smap_get(const clipl__smap *m, const char *key)
{
    if (!m->cap)
        return -1;
    for (size_t i = hash_str(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i])
            return -1;
        if (strcmp(m->keys[i], key) == 0)
            return m->vals[i];
    }
}

static int smap_grow(clipl__smap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    const char **keys = calloc(cap, sizeof *keys);
    int *vals = calloc(cap, sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return CLIPL_ENOMEM;
    }
    for (size_t j = 0; j < m->cap; j++) {
        if (!m->keys[j])
            continue;
        size_t i = hash_str(m->keys[j]) & (cap - 1);
        while (keys[i])
            i = (i + 1) & (cap - 1);
        keys[i] = m->keys[j];
        vals[i] = m->vals[j];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return CLIPL_OK;
}

int clipl__smap_put(clipl__smap *m, const char *key, int val)
{
    if ((m->count + 1) * 2 > m->cap && smap_grow(m) != CLIPL_OK)
        return clipl__err(CLIPL_ENOMEM, "out of memory in a name table");
    size_t i = hash_str(key) & (m->cap - 1);
    for (; m->keys[i]; i = (i + 1) & (m->cap - 1))
        if (strcmp(m->keys[i], key) == 0)
            return 0;
    m->keys[i] = key;
    m->vals[i] = val;
    m->count++;
    return 1;
}

void clipl__smap_free(clipl__smap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

void clipl__io_stem(const char *path, char *buf, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n >= size)
        n = size - 1;
    memcpy(buf, base, n);
    buf[n] = '\0';
}
