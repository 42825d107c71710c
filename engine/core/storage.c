/*
 * storage.c - refcounted byte buffers: 64-byte aligned heap memory or a read-only file mapping.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct clipl_storage {
    _Atomic int32_t refcount;
    int readonly;   /* 1 for a file mapping */
    void *data;     /* first byte */
    size_t nbytes;  /* usable bytes */
    void *map_base; /* page-aligned mapping start (file mappings) */
    size_t map_len; /* mapping length */
};

static _Atomic int64_t mapped_bytes;

int64_t clipl_mapped_bytes(void) { return atomic_load(&mapped_bytes); }

clipl_storage *clipl_storage_new(size_t nbytes) { return clipl__storage_new(nbytes, true); }

clipl_storage *clipl__storage_new(size_t nbytes, bool zero)
{
    clipl_storage *s = calloc(1, sizeof *s);
    if (!s) {
        clipl__err(CLIPL_ENOMEM, "out of memory allocating a storage header");
        return NULL;
    }
    s->data = zero ? clipl__calloc(nbytes) : clipl__alloc(nbytes);
    if (!s->data) {
        free(s);
        return NULL;
    }
    s->nbytes = nbytes;
    atomic_init(&s->refcount, 1);
    return s;
}

clipl_storage *clipl_storage_map_file(const char *path, int64_t offset, size_t nbytes)
{
    struct stat st;
    clipl_storage *s = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        clipl__err(CLIPL_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) != 0) {
        clipl__err(CLIPL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (offset < 0 || (uint64_t)offset > (uint64_t)st.st_size ||
        nbytes > (uint64_t)st.st_size - (uint64_t)offset) {
        clipl__err(CLIPL_EFORMAT,
                   "%s: truncated: bytes [%lld, %lld) needed but the file has %lld bytes", path,
                   (long long)offset, (long long)offset + (long long)nbytes, (long long)st.st_size);
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        clipl__err(CLIPL_ENOMEM, "out of memory allocating a storage header");
        goto fail;
    }
    long page = sysconf(_SC_PAGESIZE);
    int64_t base = offset - offset % page;
    size_t len = (size_t)(offset - base) + nbytes;
    if (len == 0)
        len = 1;
    void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, base);
    if (m == MAP_FAILED) {
        clipl__err(CLIPL_EIO, "%s: cannot map: %s", path, strerror(errno));
        free(s);
        s = NULL;
        goto fail;
    }
    s->map_base = m;
    s->map_len = len;
    s->data = (char *)m + (offset - base);
    s->nbytes = nbytes;
    s->readonly = 1;
    atomic_init(&s->refcount, 1);
    atomic_fetch_add(&mapped_bytes, (int64_t)len);
fail:
    close(fd);
    return s;
}

clipl_storage *clipl_storage_retain(clipl_storage *s)
{
    if (s)
        atomic_fetch_add(&s->refcount, 1);
    return s;
}

void clipl_storage_release(clipl_storage *s)
{
    if (!s || atomic_fetch_sub(&s->refcount, 1) != 1)
        return;
    if (s->map_base) {
        munmap(s->map_base, s->map_len);
        atomic_fetch_sub(&mapped_bytes, (int64_t)s->map_len);
    } else {
        clipl__free(s->data, s->nbytes);
    }
    free(s);
}

void *clipl_storage_data(const clipl_storage *s) { return s->data; }

size_t clipl_storage_nbytes(const clipl_storage *s) { return s->nbytes; }

int clipl_storage_readonly(const clipl_storage *s) { return s->readonly; }
