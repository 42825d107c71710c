/*
 * npy.c - NumPy .npy files (format versions 1.0, 2.0 and 3.0), read with a strict parser of the
 * header dict and written atomically.
 *
 * Layout: "\x93NUMPY", major, minor, header length (u16 LE for v1, u32 LE for v2/v3), the header
 * (a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with
 * spaces and ending in '\n'), then the data.
 */
#include "io_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *descr;
    int dtype; /* clipl dtype, CLIPL__F64 (converted to f32) or -1 (refused) */
} npy_dtypes[] = {
    {"<f4", CLIPL_F32}, {"<f2", CLIPL_F16}, {"<i4", CLIPL_I32},  {"<i8", CLIPL_I64},
    {"|u1", CLIPL_U8},  {"|b1", CLIPL_U8},  {"<f8", CLIPL__F64}, {"|i1", -1},
    {"<i2", -1},        {"<u2", -1},        {"<u4", -1},         {"<u8", -1},
};

typedef struct hparse {
    const char *p, *end;
    const char *path;
} hparse;

static void skip_ws(hparse *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

static bool accept(hparse *h, char c)
{
    skip_ws(h);
    if (h->p < h->end && *h->p == c) {
        h->p++;
        return true;
    }
    return false;
}

/* A quoted Python string without escapes, into buf. */
static bool parse_str(hparse *h, char *buf, size_t size)
{
    skip_ws(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return false;
    char q = *h->p++;
    size_t n = 0;
    while (h->p < h->end && *h->p != q) {
        if (*h->p == '\\' || n + 1 >= size)
            return false;
        buf[n++] = *h->p++;
    }
    if (h->p >= h->end)
        return false;
    h->p++;
    buf[n] = '\0';
    return true;
}

static bool parse_word(hparse *h, const char *w)
{
    skip_ws(h);
    size_t n = strlen(w);
    if ((size_t)(h->end - h->p) >= n && memcmp(h->p, w, n) == 0) {
        h->p += n;
        return true;
    }
    return false;
}

static bool parse_int(hparse *h, int64_t *v)
{
    skip_ws(h);
    int64_t x = 0;
    const char *s = h->p;
    while (h->p < h->end && isdigit((unsigned char)*h->p)) {
        if (__builtin_mul_overflow(x, 10, &x) || __builtin_add_overflow(x, *h->p - '0', &x))
            return false;
        h->p++;
    }
    if (h->p == s)
        return false;
    if (h->p < h->end && *h->p == 'L') /* Python 2 longs */
        h->p++;
    *v = x;
    return true;
}

static int parse_header(const char *path, const char *p, size_t n, int *dtype, int *fortran,
                        int *ndim, int64_t *shape)
{
    hparse h = {p, p + n, path};
    char key[32], descr[32];
    bool have_descr = false, have_fortran = false, have_shape = false;
    if (!accept(&h, '{'))
        goto bad;
    while (!accept(&h, '}')) {
        if (!parse_str(&h, key, sizeof key) || !accept(&h, ':'))
            goto bad;
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if (!parse_str(&h, descr, sizeof descr))
                return clipl__err(CLIPL_EUNSUPPORTED,
                                  "%s: npy descr is not a simple dtype string (structured "
                                  "arrays are not supported)",
                                  path);
            have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !have_fortran) {
            if (parse_word(&h, "True"))
                *fortran = 1;
            else if (parse_word(&h, "False"))
                *fortran = 0;
            else
                goto bad;
            have_fortran = true;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (!accept(&h, '('))
                goto bad;
            *ndim = 0;
            while (!accept(&h, ')')) {
                if (*ndim >= CLIPL_MAX_DIMS)
                    return clipl__err(CLIPL_EUNSUPPORTED, "%s: npy array has more than %d dims",
                                      path, CLIPL_MAX_DIMS);
                if (!parse_int(&h, &shape[*ndim]))
                    goto bad;
                (*ndim)++;
                if (!accept(&h, ',')) {
                    if (!accept(&h, ')'))
                        goto bad;
                    break;
                }
            }
            have_shape = true;
        } else {
            return clipl__err(CLIPL_EFORMAT,
                              "%s: npy header has an unexpected or repeated key '%s'", path, key);
        }
        if (!accept(&h, ',')) {
            if (!accept(&h, '}'))
                goto bad;
            break;
        }
    }
    skip_ws(&h);
    if (h.p != h.end)
        goto bad;
    if (!have_descr || !have_fortran || !have_shape)
        return clipl__err(CLIPL_EFORMAT, "%s: npy header lacks %s", path,
                          !have_descr     ? "'descr'"
                          : !have_fortran ? "'fortran_order'"
                                          : "'shape'");
    *dtype = -2;
    for (size_t i = 0; i < sizeof npy_dtypes / sizeof npy_dtypes[0]; i++)
        if (strcmp(descr, npy_dtypes[i].descr) == 0)
            *dtype = npy_dtypes[i].dtype;
    /* '=' and '<' mean the same on little-endian machines; 1-byte types may use any order mark */
    if (*dtype == -2 &&
        (descr[0] == '=' || descr[0] == '<' || descr[0] == '>' || descr[0] == '|')) {
        char alt[32];
        snprintf(alt, sizeof alt, "%s", descr);
        if (alt[0] == '=')
            alt[0] = '<';
        if (alt[2] == '1' && alt[3] == '\0')
            alt[0] = '|';
        for (size_t i = 0; i < sizeof npy_dtypes / sizeof npy_dtypes[0]; i++)
            if (strcmp(alt, npy_dtypes[i].descr) == 0)
                *dtype = npy_dtypes[i].dtype;
    }
    if (*dtype < 0) {
        if (descr[0] == '>')
            return clipl__err(CLIPL_EUNSUPPORTED,
                              "%s: npy dtype '%s' is big-endian (only little-endian is supported)",
                              path, descr);
        return clipl__err(CLIPL_EUNSUPPORTED,
                          "%s: npy dtype '%s' is not supported (clipl reads <f4 <f2 <i4 <i8 |u1, "
                          "|b1 as u8 and <f8 converted to f32)",
                          path, descr);
    }
    return CLIPL_OK;
bad:
    return clipl__err(CLIPL_EFORMAT, "%s: malformed npy header near byte %lld: \"%.80s\"", path,
                      (long long)(h.p - p), p);
}

clipl_tensor *clipl_npy_load(const char *path)
{
    clipl__mfile f;
    clipl_tensor *t = NULL, *view = NULL;
    if (clipl__mfile_open(&f, path))
        return NULL;
    if (f.size < 10 || memcmp(f.data, "\x93NUMPY", 6) != 0) {
        clipl__err(CLIPL_EFORMAT, "%s: not an npy file (no \\x93NUMPY magic)", path);
        goto done;
    }
    int major = f.data[6], minor = f.data[7];
    if (major < 1 || major > 3 || minor != 0) {
        clipl__err(CLIPL_EUNSUPPORTED,
                   "%s: npy format version %d.%d is not supported (1.0, 2.0, "
                   "3.0 are)",
                   path, major, minor);
        goto done;
    }
    size_t hoff = major == 1 ? 10 : 12, hlen;
    if (f.size < hoff) {
        clipl__err(CLIPL_EFORMAT, "%s: truncated npy preamble", path);
        goto done;
    }
    hlen = major == 1 ? (size_t)f.data[8] | (size_t)f.data[9] << 8
                      : (size_t)f.data[8] | (size_t)f.data[9] << 8 | (size_t)f.data[10] << 16 |
                            (size_t)f.data[11] << 24;
    if (hlen > f.size - hoff) {
        clipl__err(CLIPL_EFORMAT, "%s: truncated npy header (%zu bytes claimed, %zu present)", path,
                   hlen, f.size - hoff);
        goto done;
    }
    int dtype = -1, fortran = 0, ndim = 0;
    int64_t shape[CLIPL_MAX_DIMS];
    if (parse_header(path, (const char *)f.data + hoff, hlen, &dtype, &fortran, &ndim, shape))
        goto done;
    int es = dtype == CLIPL__F64 ? 8 : clipl_dtype_size(dtype);
    int64_t numel = clipl__io_numel(ndim, shape, INT64_MAX / 8);
    size_t doff = hoff + hlen;
    char sb[128];
    if (numel < 0 || (uint64_t)numel * (uint64_t)es > f.size - doff) {
        clipl__err(CLIPL_EFORMAT,
                   "%s: truncated npy data: shape [%s] needs %lld bytes, %zu present", path,
                   clipl__shape_str(sb, sizeof sb, ndim, shape),
                   numel < 0 ? -1LL : (long long)numel * es, f.size - doff);
        goto done;
    }
    int64_t stride[CLIPL_MAX_DIMS];
    if (fortran) {
        int64_t s = 1;
        for (int i = 0; i < ndim; i++) {
            stride[i] = s;
            s *= shape[i];
        }
    } else {
        clipl__contiguous_strides(ndim, shape, stride);
    }
    /* the tensor is a writable copy: npy files are small and callers modify inputs */
    size_t nbytes = (size_t)numel * (size_t)es;
    clipl_storage *s = clipl_storage_new(nbytes);
    if (!s)
        goto done;
    if (nbytes)
        memcpy(clipl_storage_data(s), f.data + doff, nbytes);
    view = clipl__io_tensor_on(s, dtype, ndim, shape, stride, 0);
    clipl_storage_release(s);
    if (!view) {
        clipl__err_prefix("%s", path);
        goto done;
    }
    t = view;
done:
    clipl__mfile_close(&f);
    return t;
}

int clipl_npy_save(const char *path, const clipl_tensor *t)
{
    const char *descr;
    if (!path || !t)
        return clipl__err(CLIPL_EINVAL, "save_npy: %s is NULL", path ? "the tensor" : "the path");
    switch (t->dt) {
    case CLIPL_F32: descr = "<f4"; break;
    case CLIPL_F16: descr = "<f2"; break;
    case CLIPL_I32: descr = "<i4"; break;
    case CLIPL_I64: descr = "<i8"; break;
    case CLIPL_U8: descr = "|u1"; break;
    case CLIPL_BF16:
        return clipl__err(CLIPL_EUNSUPPORTED,
                          "%s: save_npy: bf16 is not a numpy dtype: convert the tensor to f32 "
                          "first",
                          path);
    default: return clipl__err(CLIPL_EINVAL, "%s: save_npy: unknown dtype %d", path, t->dt);
    }
    char hdr[512], shp[256] = "";
    size_t k = 0;
    for (int i = 0; i < t->ndim; i++)
        k += (size_t)snprintf(shp + k, sizeof shp - k, "%lld,%s", (long long)t->shape[i],
                              i + 1 < t->ndim ? " " : "");
    if (t->ndim > 1)
        shp[k - 1] = '\0'; /* (2, 3) but (5,) */
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                     descr, shp);
    /* pad with spaces so magic + version + length + header (ending in '\n') is a multiple of 64 */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    memset(hdr + n, ' ', pad);
    hdr[(size_t)n + pad] = '\n';
    size_t hlen = (size_t)n + pad + 1;
    uint8_t pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
    clipl__afile a;
    int rc = clipl__afile_open(&a, path);
    if (rc)
        return rc;
    if ((rc = clipl__afile_write(&a, pre, sizeof pre)) ||
        (rc = clipl__afile_write(&a, hdr, hlen)) || (rc = clipl__afile_write_tensor(&a, t))) {
        clipl__afile_abort(&a);
        return rc;
    }
    return clipl__afile_commit(&a);
}
