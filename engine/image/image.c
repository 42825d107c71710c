/*
 * image.c - decoding with libvips into Pillow-like modes, the image object, resize and
 * convert('RGB') as Pillow does them.
 */
#include "image_internal.h"

#include <vips/vips.h>

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- libvips initialisation and errors ---------------------------------------------------- */

static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_init_rc = CLIPL_OK;
static char vips_init_msg[256];
static pthread_mutex_t vips_err_lock = PTHREAD_MUTEX_INITIALIZER;

/* libvips reports recoverable trouble with g_warning on stderr; a library must not print, and
 * every failure that matters reaches the caller through clipl_errmsg(). */
static void drop_log(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer data)
{
    (void)domain, (void)level, (void)msg, (void)data;
}

static void vips_init_once(void)
{
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO,
                      drop_log, NULL);
    if (VIPS_INIT("clipl") != 0) {
        vips_init_rc = CLIPL_EIMAGE;
        snprintf(vips_init_msg, sizeof vips_init_msg, "%s", vips_error_buffer());
        vips_error_clear();
    }
}

int clipl__vips_init(void)
{
    pthread_once(&vips_once, vips_init_once);
    if (vips_init_rc != CLIPL_OK)
        return clipl__err(vips_init_rc, "image: libvips failed to start: %s", vips_init_msg);
    return CLIPL_OK;
}

int clipl__vips_fail(int code, const char *area, const char *what, const char *name)
{
    char msg[512];
    pthread_mutex_lock(&vips_err_lock);
    snprintf(msg, sizeof msg, "%s", vips_error_buffer());
    vips_error_clear();
    pthread_mutex_unlock(&vips_err_lock);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (msg[i] == '\n')
            msg[i] = ';';
    return clipl__err(code, "%s: %s %s: %s", area, what, name, n ? msg : "libvips failed");
}

static int vips_fail(int code, const char *what, const char *name)
{
    return clipl__vips_fail(code, "image", what, name);
}

/* ---- pixel limit -------------------------------------------------------------------------- */

enum { DEFAULT_PIXEL_LIMIT = 178956970 }; /* 2 * Pillow's Image.MAX_IMAGE_PIXELS */
static _Atomic int64_t pixel_limit = DEFAULT_PIXEL_LIMIT;

int clipl_image_set_pixel_limit(int64_t limit)
{
    atomic_store(&pixel_limit, limit <= 0 ? (int64_t)DEFAULT_PIXEL_LIMIT : limit);
    return CLIPL_OK;
}

int64_t clipl_image_get_pixel_limit(void) { return atomic_load(&pixel_limit); }

/* ---- the image object --------------------------------------------------------------------- */

int clipl__image_mode_bands(int mode)
{
    switch (mode) {
    case CLIPL_IMAGE_L: return 1;
    case CLIPL_IMAGE_LA: return 2;
    case CLIPL_IMAGE_RGB: return 3;
    case CLIPL_IMAGE_RGBA: return 4;
    case CLIPL_IMAGE_P: return 3;
    case CLIPL_IMAGE_PA: return 4;
    case CLIPL_IMAGE_CMYK: return 4;
    case CLIPL_IMAGE_I: return 1;
    case CLIPL_IMAGE_1: return 1;
    default: return 0;
    }
}

int clipl__image_sample_size(int mode) { return mode == CLIPL_IMAGE_I ? 4 : 1; }

const char *clipl_image_mode_name(int mode)
{
    static const char *const names[] = {"L", "LA", "RGB", "RGBA", "P", "PA", "CMYK", "I", "1"};
    return mode >= 0 && mode < (int)(sizeof names / sizeof names[0]) ? names[mode] : "?";
}

clipl_image *clipl__image_new(int width, int height, int mode)
{
    int bands = clipl__image_mode_bands(mode);
    if (bands == 0) {
        clipl__err(CLIPL_EINVAL, "image: unknown mode %d", mode);
        return NULL;
    }
    if (width <= 0 || height <= 0) {
        clipl__err(CLIPL_EINVAL, "image: size must be positive, got %d x %d", width, height);
        return NULL;
    }
    clipl_image *img = calloc(1, sizeof *img);
    size_t nbytes = (size_t)width * height * bands * clipl__image_sample_size(mode);
    void *px = img ? malloc(nbytes) : NULL;
    if (!px) {
        free(img);
        clipl__err(CLIPL_ENOMEM, "image: out of memory for %d x %d x %d pixels", width, height,
                   bands);
        return NULL;
    }
    img->width = width;
    img->height = height;
    img->bands = bands;
    img->mode = mode;
    img->nbytes = nbytes;
    img->pixels = px;
    return img;
}

void clipl_image_free(clipl_image *img)
{
    if (!img)
        return;
    free(img->pixels);
    free(img);
}

int clipl_image_width(const clipl_image *img) { return img ? img->width : 0; }
int clipl_image_height(const clipl_image *img) { return img ? img->height : 0; }
int clipl_image_bands(const clipl_image *img) { return img ? img->bands : 0; }
int clipl_image_mode(const clipl_image *img) { return img ? img->mode : -1; }
const void *clipl_image_pixels(const clipl_image *img) { return img ? img->pixels : NULL; }
size_t clipl_image_nbytes(const clipl_image *img) { return img ? img->nbytes : 0; }

clipl_image *clipl_image_from_pixels(int width, int height, int mode, const void *pixels,
                                     size_t nbytes)
{
    if (!pixels) {
        clipl__err(CLIPL_EINVAL, "image_from_pixels: pixels is NULL");
        return NULL;
    }
    clipl_image *img = clipl__image_new(width, height, mode);
    if (!img)
        return NULL;
    if (nbytes != img->nbytes) {
        clipl__err(CLIPL_ESHAPE, "image_from_pixels: %d x %d %s needs %zu bytes, got %zu", width,
                   height, clipl_image_mode_name(mode), img->nbytes, nbytes);
        clipl_image_free(img);
        return NULL;
    }
    memcpy(img->pixels, pixels, nbytes);
    return img;
}

int clipl_image_to_tensor(const clipl_image *img, clipl_tensor **dst)
{
    if (!img || !dst)
        return clipl__err(CLIPL_EINVAL, "image_to_tensor: NULL argument");
    int64_t shape[3] = {img->height, img->width, img->bands};
    *dst = clipl_tensor_from_data(img->mode == CLIPL_IMAGE_I ? CLIPL_I32 : CLIPL_U8, 3, shape,
                                  img->pixels, img->nbytes);
    return *dst ? CLIPL_OK : clipl_errcode();
}

/* ---- decoding ----------------------------------------------------------------------------- */

/* Rotating needs random access; plain decoding reads top to bottom once. */
#define ACCESS(flags) ((flags)&CLIPL_IMAGE_AUTOROTATE ? VIPS_ACCESS_RANDOM : VIPS_ACCESS_SEQUENTIAL)

/* Decodes all pixels of in, top to bottom, in the calling thread (no libvips thread pool: a
 * batch runs one decode per thread), into buf (height lines of VIPS_IMAGE_SIZEOF_LINE bytes).
 * Returns 0, or -1 with the libvips error buffer set. */
static int decode_into(VipsImage *in, void *buf)
{
    int w = vips_image_get_width(in), h = vips_image_get_height(in);
    size_t line = VIPS_IMAGE_SIZEOF_LINE(in);
    VipsRegion *reg = vips_region_new(in);
    if (!reg)
        return -1;
    for (int y = 0; y < h; y += 64) {
        VipsRect r = {0, y, w, h - y < 64 ? h - y : 64};
        if (vips_region_prepare(reg, &r) != 0) {
            g_object_unref(reg);
            return -1;
        }
        for (int k = 0; k < r.height; k++)
            memcpy((uint8_t *)buf + (size_t)(y + k) * line, VIPS_REGION_ADDR(reg, 0, y + k), line);
    }
    g_object_unref(reg);
    return 0;
}

/* Builds a loader operation outside libvips' operation cache (each call decodes the file as it
 * is now, and nothing is kept). Returns the image (a new reference) or NULL. */
static VipsImage *run_loader(const char *loader, const char *arg_name, const void *arg, int flags)
{
    VipsImage *out = NULL;
    VipsOperation *op = vips_operation_new(loader);
    if (!op)
        return NULL;
    if (strcmp(arg_name, "filename") == 0)
        g_object_set(op, "filename", (const char *)arg, NULL);
    else
        g_object_set(op, "buffer", (VipsBlob *)arg, NULL);
    g_object_set(op, "access", ACCESS(flags), "fail_on", VIPS_FAIL_ON_ERROR, NULL);
    if (vips_object_build(VIPS_OBJECT(op)) == 0)
        g_object_get(op, "out", &out, NULL);
    vips_object_unref_outputs(VIPS_OBJECT(op));
    g_object_unref(op);
    return out;
}

/* The colour type in a PNG's IHDR (0 grey, 2 RGB, 3 palette, 4 grey + alpha, 6 RGBA; PNG_BILEVEL
 * for 1-bit grey, which Pillow opens as mode '1'), or -1 when the bytes are not a PNG. */
enum { PNG_BILEVEL = 100 };
static int png_color_type(const void *data, size_t n)
{
    const uint8_t *p = data;
    if (n < 26 || memcmp(p, "\x89PNG\r\n\x1a\n", 8) != 0 || memcmp(p + 12, "IHDR", 4) != 0)
        return -1;
    if (p[25] == 0 && p[24] == 1)
        return PNG_BILEVEL;
    return p[25];
}

/* 1 when the image is a GIF whose palette is the identity grey ramp (entry i = (i, i, i)): Pillow
 * opens those as 'L'. */
static int grey_ramp_gif(VipsImage *in)
{
    int *pal = NULL, n = 0;
    if (vips_image_get_typeof(in, "gif-palette") == 0 ||
        vips_image_get_array_int(in, "gif-palette", &pal, &n) != 0 || n <= 0) {
        vips_error_clear();
        return 0;
    }
    for (int i = 0; i < n; i++) {
        unsigned v = (unsigned)pal[i];
        unsigned r = (v >> 16) & 255, g = (v >> 8) & 255, b = v & 255;
        if (r != (unsigned)i || g != (unsigned)i || b != (unsigned)i)
            return 0;
    }
    return 1;
}

/* Picks the Pillow mode for a decoded vips image and copies its pixels. `name` is the file name
 * (or "<buffer>") for messages. */
static clipl_image *from_vips(VipsImage *in, const char *name, int flags, int png_ct)
{
    clipl_image *img = NULL;
    VipsImage *rot = NULL, *cast = NULL, *key_alpha = NULL;
    void *mem = NULL;
    size_t memsize = 0;

    int w = vips_image_get_width(in), h = vips_image_get_height(in);
    int bands = vips_image_get_bands(in);
    VipsBandFormat fmt = vips_image_get_format(in);
    VipsInterpretation interp = vips_image_get_interpretation(in);
    int64_t limit = atomic_load(&pixel_limit);

    if (w <= 0 || h <= 0) {
        clipl__err(CLIPL_EFORMAT, "image: %s has no pixels (%d x %d)", name, w, h);
        return NULL;
    }
    if ((int64_t)w * h > limit) {
        clipl__err(CLIPL_EFORMAT,
                   "image: %s is %d x %d = %lld pixels, more than the limit of %lld "
                   "(a decompression bomb? raise it with clipl_image_set_pixel_limit / "
                   "clip.image.set_pixel_limit)",
                   name, w, h, (long long)w * h, (long long)limit);
        return NULL;
    }
    if (fmt != VIPS_FORMAT_UCHAR && fmt != VIPS_FORMAT_USHORT) {
        clipl__err(CLIPL_EUNSUPPORTED,
                   "image: %s has samples of type %s; only 8- and 16-bit "
                   "unsigned images are supported",
                   name, vips_enum_nick(VIPS_TYPE_BAND_FORMAT, fmt));
        return NULL;
    }
    if (bands < 1 || bands > 5) {
        clipl__err(CLIPL_EUNSUPPORTED, "image: %s has %d bands; 1 to 5 are supported", name, bands);
        return NULL;
    }

    if (flags & CLIPL_IMAGE_AUTOROTATE) {
        if (vips_autorot(in, &rot, NULL) != 0) {
            vips_fail(CLIPL_EIMAGE, "cannot apply the EXIF orientation of", name);
            goto out;
        }
        in = rot;
        w = vips_image_get_width(in);
        h = vips_image_get_height(in);
    }

    if ((png_ct == 0 || png_ct == 2 || png_ct == PNG_BILEVEL) && (bands == 2 || bands == 4)) {
        /* a grey or RGB PNG with a tRNS colour key: libvips adds an alpha band, Pillow keeps the
         * mode ('L', 'RGB' or 'I') and only notes the key, which convert('RGB') ignores */
        VipsImage *c2 = NULL;
        if (vips_extract_band(in, &c2, 0, "n", bands - 1, NULL) != 0) {
            vips_fail(CLIPL_EIMAGE, "cannot drop the colour-key alpha of", name);
            goto out;
        }
        key_alpha = c2;
        in = key_alpha;
        bands--;
    }
    int palette = vips_image_get_typeof(in, "palette-bit-depth") != 0 ||
                  vips_image_get_typeof(in, "gif-palette") != 0;
    int mode;
    if (palette && grey_ramp_gif(in) && (bands == 3 || bands == 4)) {
        /* Pillow opens a GIF whose palette is the identity grey ramp as 'L' */
        VipsImage *c2 = NULL;
        if (vips_extract_band(in, &c2, 0, NULL) != 0) {
            vips_fail(CLIPL_EIMAGE, "cannot read the grey band of", name);
            goto out;
        }
        cast = c2;
        in = cast;
        bands = 1;
        palette = 0;
    }
    if (fmt == VIPS_FORMAT_USHORT && bands == 1)
        mode = CLIPL_IMAGE_I; /* Pillow opens 16-bit grey PNG as 'I' */
    else if (bands == 1)
        mode = png_ct == PNG_BILEVEL ? CLIPL_IMAGE_1 : CLIPL_IMAGE_L;
    else if (bands == 2)
        mode = CLIPL_IMAGE_LA;
    else if (bands == 3)
        mode = palette ? CLIPL_IMAGE_P : CLIPL_IMAGE_RGB;
    else if (interp == VIPS_INTERPRETATION_CMYK)
        mode = CLIPL_IMAGE_CMYK;
    else if (bands == 4)
        mode = palette ? CLIPL_IMAGE_PA : CLIPL_IMAGE_RGBA;
    else {
        clipl__err(CLIPL_EUNSUPPORTED, "image: %s has 5 bands but is not CMYK + alpha", name);
        goto out;
    }

    /* 16-bit samples other than grey: Pillow keeps the high byte ("RGB;16B" etc.) */
    if (fmt == VIPS_FORMAT_USHORT && mode != CLIPL_IMAGE_I) {
        VipsImage *sh = NULL, *c2 = NULL;
        if (vips_rshift_const1(in, &sh, 8, NULL) != 0 || vips_cast_uchar(sh, &c2, NULL) != 0) {
            if (sh)
                g_object_unref(sh);
            vips_fail(CLIPL_EIMAGE, "cannot reduce 16-bit samples of", name);
            goto out;
        }
        g_object_unref(sh);
        if (cast)
            g_object_unref(cast);
        cast = c2;
        in = cast;
    }

    img = clipl__image_new(w, h, mode);
    if (!img)
        goto out;
    size_t line = VIPS_IMAGE_SIZEOF_LINE(in);
    int direct = mode != CLIPL_IMAGE_I && bands == img->bands;
    if (line != (size_t)w * bands * (mode == CLIPL_IMAGE_I ? 2 : 1)) {
        clipl__err(CLIPL_EIMAGE, "image: %s: unexpected decoded line size", name);
        goto fail_img;
    }
    memsize = line * h;
    mem = direct ? img->pixels : malloc(memsize);
    if (!mem) {
        clipl__err(CLIPL_ENOMEM, "image: out of memory decoding %s", name);
        goto fail_img;
    }
    if (decode_into(in, mem) != 0) {
        vips_fail(CLIPL_EFORMAT, "cannot decode", name);
        goto fail_img;
    }
    if (mode == CLIPL_IMAGE_I) {
        const uint16_t *s = mem;
        int32_t *d = img->pixels;
        for (size_t i = 0; i < (size_t)w * h; i++)
            d[i] = s[i];
    } else if (!direct) { /* CMYK + alpha: drop the alpha */
        int ib = bands, ob = img->bands;
        const uint8_t *s = mem;
        uint8_t *d = img->pixels;
        for (size_t i = 0; i < (size_t)w * h; i++)
            memcpy(d + i * ob, s + i * ib, ob);
    }
    if (direct)
        mem = NULL;
    goto out;

fail_img:
    if (img && mem == img->pixels)
        mem = NULL;
    clipl_image_free(img);
    img = NULL;
out: /* img is the result, NULL on failure */
    free(mem);
    if (rot)
        g_object_unref(rot);
    if (cast)
        g_object_unref(cast);
    if (key_alpha)
        g_object_unref(key_alpha);
    return img;
}

clipl_image *clipl_image_load(const char *path, int flags)
{
    if (!path) {
        clipl__err(CLIPL_EINVAL, "image_load: path is NULL");
        return NULL;
    }
    if (clipl__vips_init() != CLIPL_OK)
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        clipl__err(CLIPL_EIO, "image: cannot open %s", path);
        return NULL;
    }
    uint8_t head[32];
    size_t nhead = fread(head, 1, sizeof head, f);
    fclose(f);
    const char *loader = vips_foreign_find_load(path);
    if (!loader) {
        vips_error_clear();
        clipl__err(CLIPL_EFORMAT,
                   "image: %s is not an image libvips can read (unknown format, "
                   "empty or corrupt file)",
                   path);
        return NULL;
    }
    /* Pass the loader's options by name: a filename could contain "[options]", so name the
     * loader explicitly instead of going through vips_image_new_from_file's parser. */
    VipsImage *in = run_loader(loader, "filename", path, flags);
    if (!in) {
        vips_fail(CLIPL_EFORMAT, "cannot read", path);
        return NULL;
    }
    clipl_image *img = from_vips(in, path, flags, png_color_type(head, nhead));
    g_object_unref(in);
    return img;
}

clipl_image *clipl_image_load_buffer(const void *data, size_t nbytes, int flags)
{
    if (!data || nbytes == 0) {
        clipl__err(CLIPL_EFORMAT, "image: the buffer is empty");
        return NULL;
    }
    if (clipl__vips_init() != CLIPL_OK)
        return NULL;
    const char *loader = vips_foreign_find_load_buffer(data, nbytes);
    if (!loader) {
        vips_error_clear();
        clipl__err(CLIPL_EFORMAT,
                   "image: <buffer of %zu bytes> is not an image libvips can "
                   "read (unknown format or corrupt data)",
                   nbytes);
        return NULL;
    }
    VipsBlob *blob = vips_blob_new(NULL, data, nbytes);
    VipsImage *in = NULL;
    char name[64];
    snprintf(name, sizeof name, "<buffer of %zu bytes>", nbytes);
    in = run_loader(loader, "buffer", blob, flags);
    clipl_image *img = NULL;
    if (!in)
        vips_fail(CLIPL_EFORMAT, "cannot read", name);
    else
        img = from_vips(in, name, flags, png_color_type(data, nbytes));
    if (in)
        g_object_unref(in);
    vips_area_unref(VIPS_AREA(blob));
    return img;
}

/* ---- resize and convert('RGB') ------------------------------------------------------------ */

static inline uint8_t muldiv255(unsigned a, unsigned b)
{
    unsigned tmp = a * b + 128;
    return (uint8_t)(((tmp >> 8) + tmp) >> 8);
}

static inline uint8_t unpremul(unsigned v, unsigned alpha)
{
    unsigned r = 255 * v / alpha;
    return (uint8_t)(r > 255 ? 255 : r);
}

int clipl__image_resize_window(const clipl_image *img, int width, int height, int x0, int y0,
                               int cw, int ch, clipl_image **dst)
{
    clipl_image *out = clipl__image_new(cw, ch, img->mode);
    uint8_t *tmp = NULL;
    int rc = CLIPL_OK;
    int b = img->bands, ps = b * clipl__image_sample_size(img->mode);
    if (!out)
        return clipl_errcode();
    if (img->mode == CLIPL_IMAGE_P || img->mode == CLIPL_IMAGE_PA || img->mode == CLIPL_IMAGE_1) {
        /* Pillow resizes palette and bilevel images with NEAREST whatever filter is asked for */
        rc = clipl__resize_nearest(img->pixels, img->width, img->height, ps, width, height, x0, y0,
                                   cw, ch, out->pixels);
    } else if (img->mode == CLIPL_IMAGE_I) {
        /* 'I' images: in double precision */
        rc = clipl__resample_i32(img->pixels, img->width, img->height, width, height, x0, y0, cw,
                                 ch, out->pixels);
    } else if (img->mode == CLIPL_IMAGE_RGBA || img->mode == CLIPL_IMAGE_LA) {
        /* Pillow resizes RGBA as 'RGBa' and LA as 'La' (premultiplied), then divides back */
        size_t n = (size_t)img->width * img->height;
        tmp = malloc(img->nbytes);
        if (!tmp) {
            rc = clipl__err(CLIPL_ENOMEM, "image resize: out of memory");
            goto done;
        }
        const uint8_t *s = img->pixels;
        for (size_t i = 0; i < n; i++) {
            unsigned a = s[i * b + b - 1];
            for (int c = 0; c < b - 1; c++)
                tmp[i * b + c] = muldiv255(s[i * b + c], a);
            tmp[i * b + b - 1] = (uint8_t)a;
        }
        rc = clipl__resample_u8(tmp, img->width, img->height, b, width, height, x0, y0, cw, ch,
                                out->pixels);
        uint8_t *d = out->pixels;
        size_t m = (size_t)cw * ch;
        for (size_t i = 0; rc == CLIPL_OK && i < m; i++) {
            unsigned a = d[i * b + b - 1];
            if (a != 255 && a != 0)
                for (int c = 0; c < b - 1; c++)
                    d[i * b + c] = unpremul(d[i * b + c], a);
        }
    } else {
        rc = clipl__resample_u8(img->pixels, img->width, img->height, b, width, height, x0, y0, cw,
                                ch, out->pixels);
    }
done:
    free(tmp);
    if (rc != CLIPL_OK) {
        clipl_image_free(out);
        return rc;
    }
    *dst = out;
    return CLIPL_OK;
}

int clipl_image_resize(const clipl_image *img, int width, int height, clipl_image **dst)
{
    if (!img || !dst)
        return clipl__err(CLIPL_EINVAL, "image_resize: NULL argument");
    if (width <= 0 || height <= 0)
        return clipl__err(CLIPL_EINVAL, "image_resize: size must be positive, got %d x %d", width,
                          height);
    return clipl__image_resize_window(img, width, height, 0, 0, width, height, dst);
}

/* convert('RGB') of one pixel row segment: n pixels from src (img's mode) to 3-byte RGB. */
void clipl__row_to_rgb(const clipl_image *img, const void *src, size_t n, uint8_t *rgb)
{
    const uint8_t *s = src;
    switch (img->mode) {
    case CLIPL_IMAGE_L:
    case CLIPL_IMAGE_1:
        for (size_t i = 0; i < n; i++)
            rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = s[i];
        break;
    case CLIPL_IMAGE_LA:
        for (size_t i = 0; i < n; i++)
            rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = s[2 * i];
        break;
    case CLIPL_IMAGE_RGB:
    case CLIPL_IMAGE_P: memcpy(rgb, s, n * 3); break;
    case CLIPL_IMAGE_RGBA:
    case CLIPL_IMAGE_PA:
        for (size_t i = 0; i < n; i++) {
            rgb[3 * i] = s[4 * i];
            rgb[3 * i + 1] = s[4 * i + 1];
            rgb[3 * i + 2] = s[4 * i + 2];
        }
        break;
    case CLIPL_IMAGE_CMYK:
        for (size_t i = 0; i < n; i++) {
            unsigned nk = 255 - s[4 * i + 3];
            for (int c = 0; c < 3; c++) {
                int v = (int)nk - muldiv255(s[4 * i + c], nk);
                rgb[3 * i + c] = (uint8_t)(v < 0 ? 0 : v);
            }
        }
        break;
    case CLIPL_IMAGE_I: {
        const int32_t *si = src;
        for (size_t i = 0; i < n; i++) {
            int32_t v = si[i];
            uint8_t u = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v);
            rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = u;
        }
        break;
    }
    default: break;
    }
}

int clipl_image_to_rgb(const clipl_image *img, clipl_image **dst)
{
    if (!img || !dst)
        return clipl__err(CLIPL_EINVAL, "image_to_rgb: NULL argument");
    clipl_image *out = clipl__image_new(img->width, img->height, CLIPL_IMAGE_RGB);
    if (!out)
        return clipl_errcode();
    clipl__row_to_rgb(img, img->pixels, (size_t)img->width * img->height, out->pixels);
    *dst = out;
    return CLIPL_OK;
}
