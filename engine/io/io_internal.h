/*
 * io_internal.h - helpers shared by the weight and array file readers and writers (engine/io).
 */
#ifndef CLIPL_IO_INTERNAL_H
#define CLIPL_IO_INTERNAL_H

#include "internal.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- a whole file mapped read-only: one storage that zero-copy tensors share ---- */
typedef struct clipl__mfile {
    clipl_storage *st;   /* mapping of the whole file (one reference held) */
    const uint8_t *data; /* first byte */
    size_t size;         /* file size in bytes */
    const char *path;    /* borrowed */
} clipl__mfile;

/* Maps path. Returns a status (CLIPL_EIO naming the file). */
int clipl__mfile_open(clipl__mfile *f, const char *path);
void clipl__mfile_close(clipl__mfile *f);

/* A tensor over bytes [byte_off, ...) of the file: a zero-copy view of the mapping when byte_off
 * is a multiple of the element size, else a contiguous copy. stride NULL means row-major.
 * `byte_off` is where element 0 of the *storage* is; elem_off is added in elements. For F64 data
 * (file_dtype CLIPL__F64) the result is a converted f32 copy. The caller has checked bounds. */
enum { CLIPL__F64 = 100 };
clipl_tensor *clipl__io_tensor(clipl__mfile *f, size_t byte_off, int file_dtype, int ndim,
                               const int64_t *shape, const int64_t *stride, int64_t elem_off);
/* Same, over a heap storage (inflated zip entries): always a view (or an f64 -> f32 copy). */
clipl_tensor *clipl__io_tensor_on(clipl_storage *s, int file_dtype, int ndim, const int64_t *shape,
                                  const int64_t *stride, int64_t elem_off);

/* Element count of shape with overflow checking against limit; returns -1 on overflow. */
int64_t clipl__io_numel(int ndim, const int64_t *shape, int64_t limit);

/* ---- atomic file writing: a temporary file beside the target, fsync, rename ---- */
typedef struct clipl__afile {
    int fd;
    char *tmp;        /* temporary path (owned) */
    const char *path; /* target (borrowed) */
} clipl__afile;

int clipl__afile_open(clipl__afile *a, const char *path);
int clipl__afile_write(clipl__afile *a, const void *p, size_t n);
/* Writes the bytes of t (any strides) in row-major order. */
int clipl__afile_write_tensor(clipl__afile *a, const clipl_tensor *t);
/* fsync, close, rename over the target. Frees a either way. */
int clipl__afile_commit(clipl__afile *a);
/* Closes and removes the temporary file (after an error). */
void clipl__afile_abort(clipl__afile *a);

/* ---- a string -> int hash map (for names, zip entries, storage keys) ---- */
typedef struct clipl__smap {
    const char **keys; /* borrowed */
    int *vals;
    size_t cap; /* power of two, 0 when empty */
    size_t count;
} clipl__smap;

/* Returns the value for key or -1. */
int clipl__smap_get(const clipl__smap *m, const char *key);
/* Inserts key (borrowed: must outlive the map) -> val; returns 1 when inserted, 0 when the key was
 * already there (nothing changed), negative on out of memory. */
int clipl__smap_put(clipl__smap *m, const char *key, int val);
void clipl__smap_free(clipl__smap *m);

/* ---- zip archives over a mapped file (zip64 aware; STORED and DEFLATE) ---- */
typedef struct clipl__zentry {
    char *name;     /* owned, NUL-terminated */
    uint64_t lho;   /* local header offset */
    uint64_t csize; /* compressed size */
    uint64_t usize; /* uncompressed size */
    uint32_t crc;
    uint16_t method; /* 0 stored, 8 deflate */
    uint16_t flags;
} clipl__zentry;

typedef struct clipl__zip {
    const clipl__mfile *f;
    int count;
    clipl__zentry *e;
    clipl__smap index; /* name -> entry */
} clipl__zip;

/* Reads the central directory. Returns a status (CLIPL_EFORMAT naming the file). */
int clipl__zip_open(clipl__zip *z, const clipl__mfile *f);
void clipl__zip_close(clipl__zip *z);
/* Index of the entry called name, or -1. */
int clipl__zip_find(const clipl__zip *z, const char *name);
/* Offset in the file of entry i's data (after its local header), checked to lie inside the file.
 * Only for STORED entries (others: CLIPL_EUNSUPPORTED). */
int clipl__zip_stored_offset(const clipl__zip *z, int i, uint64_t *off);
/* Entry i's uncompressed bytes in a new heap storage (inflated and CRC-checked). */
int clipl__zip_read(const clipl__zip *z, int i, clipl_storage **out);

/* ---- tensor dicts ---- */
/* Adds t under name, taking over the caller's reference to t (released on failure too). */
int clipl__tdict_add_steal(clipl_tdict *d, const char *name, clipl_tensor *t);
void clipl__tdict_set_format(clipl_tdict *d, const char *format);

/* Last path component without its extension ("a/b/c.npy" -> "c"), into buf. */
void clipl__io_stem(const char *path, char *buf, size_t size);

#endif /* CLIPL_IO_INTERNAL_H */
