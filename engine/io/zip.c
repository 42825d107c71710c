/*
 * zip.c - a read-only zip reader over a mapped file, enough for PyTorch archives: the central
 * directory (with zip64 extensions), local headers, STORED entries in place and DEFLATE entries
 * inflated with zlib. Every offset and size is checked against the file.
 */
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

enum {
    SIG_LOCAL = 0x04034b50,
    SIG_CENTRAL = 0x02014b50,
    SIG_EOCD = 0x06054b50,
    SIG_EOCD64 = 0x06064b50,
    SIG_LOC64 = 0x07064b50,
};

void clipl__zip_close(clipl__zip *z)
{
    for (int i = 0; i < z->count; i++)
        free(z->e[i].name);
    free(z->e);
    clipl__smap_free(&z->index);
    memset(z, 0, sizeof *z);
}

int clipl__zip_open(clipl__zip *z, const clipl__mfile *f)
{
    const uint8_t *p = f->data;
    size_t n = f->size;
    const char *path = f->path;
    memset(z, 0, sizeof *z);
    z->f = f;
    if (n < 22)
        return clipl__err(CLIPL_EFORMAT, "%s: zip: file too short (%zu bytes)", path, n);
    /* the end-of-central-directory record: the last one whose comment reaches the file's end */
    size_t eocd = (size_t)-1;
    size_t lo = n > 22 + 65535 ? n - 22 - 65535 : 0;
    for (size_t i = n - 22 + 1; i-- > lo;) {
        if (rd32(p + i) == SIG_EOCD && (size_t)rd16(p + i + 20) == n - i - 22) {
            eocd = i;
            break;
        }
    }
    if (eocd == (size_t)-1)
        return clipl__err(CLIPL_EFORMAT,
                          "%s: zip: no end-of-central-directory record (truncated or not a zip)",
                          path);
    uint64_t count = rd16(p + eocd + 10), cd_size = rd32(p + eocd + 12),
             cd_off = rd32(p + eocd + 16);
    uint64_t cd_end_limit = eocd;
    if (rd16(p + eocd + 4) != 0 && rd16(p + eocd + 4) != 0xffff)
        return clipl__err(CLIPL_EUNSUPPORTED, "%s: zip: multi-disk archives are not supported",
                          path);
    if (count == 0xffff || cd_size == 0xffffffff || cd_off == 0xffffffff) {
        /* zip64: a locator just before the record points at the zip64 end record */
        if (eocd < 20 || rd32(p + eocd - 20) != SIG_LOC64)
            return clipl__err(CLIPL_EFORMAT, "%s: zip: zip64 locator missing", path);
        uint64_t e64 = rd64(p + eocd - 20 + 8);
        if (e64 > eocd - 20 || eocd - 20 - e64 < 56 || rd32(p + e64) != SIG_EOCD64)
            return clipl__err(CLIPL_EFORMAT, "%s: zip: bad zip64 end-of-central-directory record",
                              path);
        count = rd64(p + e64 + 32);
        cd_size = rd64(p + e64 + 40);
        cd_off = rd64(p + e64 + 48);
        cd_end_limit = e64;
    }
    if (cd_off > cd_end_limit || cd_size > cd_end_limit - cd_off)
        return clipl__err(CLIPL_EFORMAT,
                          "%s: zip: central directory [%llu, +%llu) outside the file (truncated?)",
                          path, (unsigned long long)cd_off, (unsigned long long)cd_size);
    if (count > cd_size / 46)
        return clipl__err(CLIPL_EFORMAT, "%s: zip: %llu entries cannot fit a %llu-byte directory",
                          path, (unsigned long long)count, (unsigned long long)cd_size);
    z->e = calloc((size_t)count + 1, sizeof *z->e);
    if (!z->e)
        return clipl__err(CLIPL_ENOMEM, "%s: zip: out of memory", path);
    const uint8_t *c = p + cd_off, *cend = p + cd_off + cd_size;
    for (uint64_t k = 0; k < count; k++) {
        if (cend - c < 46 || rd32(c) != SIG_CENTRAL)
            goto bad_cd;
        clipl__zentry *e = &z->e[k];
        e->flags = rd16(c + 8);
        e->method = rd16(c + 10);
        e->crc = rd32(c + 16);
        e->csize = rd32(c + 20);
        e->usize = rd32(c + 24);
        size_t nlen = rd16(c + 28), elen = rd16(c + 30), clen = rd16(c + 32);
        e->lho = rd32(c + 42);
        if ((size_t)(cend - c) - 46 < nlen + elen + clen)
            goto bad_cd;
        e->name = malloc(nlen + 1);
        if (!e->name) {
            clipl__zip_close(z);
            return clipl__err(CLIPL_ENOMEM, "%s: zip: out of memory", path);
        }
        memcpy(e->name, c + 46, nlen);
        e->name[nlen] = '\0';
        z->count = (int)k + 1;
        if (memchr(e->name, '\0', nlen))
            goto bad_cd;
        /* zip64 extra field: the 64-bit values of the fields that are 0xffffffff, in order */
        const uint8_t *x = c + 46 + nlen, *xend = x + elen;
        while (xend - x >= 4) {
            uint16_t id = rd16(x), sz = rd16(x + 2);
            if (xend - x - 4 < sz)
                goto bad_cd;
            if (id == 0x0001) {
                const uint8_t *q = x + 4, *qend = x + 4 + sz;
                if (e->usize == 0xffffffff) {
                    if (qend - q < 8)
                        goto bad_cd;
                    e->usize = rd64(q);
                    q += 8;
                }
                if (e->csize == 0xffffffff) {
                    if (qend - q < 8)
                        goto bad_cd;
                    e->csize = rd64(q);
                    q += 8;
                }
                if (e->lho == 0xffffffff) {
                    if (qend - q < 8)
                        goto bad_cd;
                    e->lho = rd64(q);
                }
            }
            x += 4 + sz;
        }
        if (e->lho >= n || e->csize > n)
            goto bad_cd;
        int r = clipl__smap_put(&z->index, e->name, (int)k);
        if (r < 0) {
            clipl__zip_close(z);
            return r;
        }
        c += 46 + nlen + elen + clen;
    }
    return CLIPL_OK;
bad_cd : {
    int k = z->count;
    clipl__zip_close(z);
    return clipl__err(CLIPL_EFORMAT, "%s: zip: corrupt central directory (entry %d)", path, k);
}
}

int clipl__zip_find(const clipl__zip *z, const char *name)
{
    return clipl__smap_get(&z->index, name);
}

/* Offset of the entry's data, checked: local header present, data inside the file. */
static int data_offset(const clipl__zip *z, int i, uint64_t *off)
{
    const clipl__zentry *e = &z->e[i];
    const uint8_t *p = z->f->data;
    size_t n = z->f->size;
    if (e->flags & 1)
        return clipl__err(CLIPL_EUNSUPPORTED, "%s: zip entry '%s' is encrypted", z->f->path,
                          e->name);
    if (e->lho > n || n - e->lho < 30 || rd32(p + e->lho) != SIG_LOCAL)
        return clipl__err(CLIPL_EFORMAT, "%s: zip entry '%s': local header missing (truncated?)",
                          z->f->path, e->name);
    uint64_t d = e->lho + 30 + rd16(p + e->lho + 26) + (uint64_t)rd16(p + e->lho + 28);
    if (d > n || e->csize > n - d)
        return clipl__err(CLIPL_EFORMAT,
                          "%s: zip entry '%s': data [%llu, +%llu) runs past the end of the file "
                          "(%zu bytes; truncated?)",
                          z->f->path, e->name, (unsigned long long)d, (unsigned long long)e->csize,
                          n);
    *off = d;
    return CLIPL_OK;
}

int clipl__zip_stored_offset(const clipl__zip *z, int i, uint64_t *off)
{
    const clipl__zentry *e = &z->e[i];
    if (e->method != 0)
        return clipl__err(CLIPL_EUNSUPPORTED, "%s: zip entry '%s' is compressed (method %d)",
                          z->f->path, e->name, e->method);
    if (e->csize != e->usize)
        return clipl__err(CLIPL_EFORMAT, "%s: zip entry '%s': stored sizes differ (%llu vs %llu)",
                          z->f->path, e->name, (unsigned long long)e->csize,
                          (unsigned long long)e->usize);
    return data_offset(z, i, off);
}

int clipl__zip_read(const clipl__zip *z, int i, clipl_storage **out)
{
    const clipl__zentry *e = &z->e[i];
    const char *path = z->f->path;
    uint64_t off;
    int rc;
    *out = NULL;
    if (e->method != 0 && e->method != 8)
        return clipl__err(CLIPL_EUNSUPPORTED,
                          "%s: zip entry '%s' uses compression method %d (stored and deflate are "
                          "supported)",
                          path, e->name, e->method);
    if (e->method == 0 && e->csize != e->usize)
        return clipl__err(CLIPL_EFORMAT, "%s: zip entry '%s': stored sizes differ", path, e->name);
    if ((rc = data_offset(z, i, &off)))
        return rc;
    /* deflate expands at most ~1032:1; refuse claims beyond that before allocating */
    if (e->usize > e->csize * 1032 + 1024)
        return clipl__err(
            CLIPL_EFORMAT, "%s: zip entry '%s' claims %llu bytes from %llu compressed (corrupt)",
            path, e->name, (unsigned long long)e->usize, (unsigned long long)e->csize);
    clipl_storage *s = clipl_storage_new((size_t)e->usize);
    if (!s)
        return clipl_errcode();
    uint8_t *dst = clipl_storage_data(s);
    if (e->method == 0) {
        memcpy(dst, z->f->data + off, (size_t)e->usize);
    } else {
        z_stream zs;
        memset(&zs, 0, sizeof zs);
        if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
            clipl_storage_release(s);
            return clipl__err(CLIPL_ENOMEM, "%s: zlib init failed", path);
        }
        const uint8_t *src = z->f->data + off;
        uint64_t in_left = e->csize, out_done = 0;
        int zr = Z_OK;
        while (zr == Z_OK) {
            uInt in_chunk = in_left > 0x40000000u ? 0x40000000u : (uInt)in_left;
            uInt out_chunk =
                e->usize - out_done > 0x40000000u ? 0x40000000u : (uInt)(e->usize - out_done);
            zs.next_in = (Bytef *)(uintptr_t)(src + (e->csize - in_left));
            zs.avail_in = in_chunk;
            zs.next_out = dst + out_done;
            zs.avail_out = out_chunk;
            zr = inflate(&zs, Z_NO_FLUSH);
            in_left -= in_chunk - zs.avail_in;
            out_done += out_chunk - zs.avail_out;
            if (zr == Z_OK && zs.avail_in == in_chunk && zs.avail_out == out_chunk)
                zr = Z_BUF_ERROR; /* no progress */
        }
        inflateEnd(&zs);
        if (zr != Z_STREAM_END || out_done != e->usize) {
            clipl_storage_release(s);
            return clipl__err(CLIPL_EFORMAT, "%s: zip entry '%s': corrupt deflate data", path,
                              e->name);
        }
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t done = 0; done < e->usize;) {
        uInt chunk = e->usize - done > 0x40000000u ? 0x40000000u : (uInt)(e->usize - done);
        crc = crc32(crc, dst + done, chunk);
        done += chunk;
    }
    if ((uint32_t)crc != e->crc) {
        clipl_storage_release(s);
        return clipl__err(CLIPL_EFORMAT, "%s: zip entry '%s': CRC mismatch (corrupt)", path,
                          e->name);
    }
    *out = s;
    return CLIPL_OK;
}
