/*
 * resample.c - Pillow-exact resampling (what Pillow 9.4's Image.resize(size, BICUBIC) computes).
 *
 * The algorithm (written from Pillow's documented design, not its code):
 *   - separable convolution, horizontal pass first, then vertical; a pass runs only when that
 *     dimension changes. The horizontal pass covers only the source rows the vertical pass reads.
 *   - per output pixel xx: center = (xx + 0.5) * scale with scale = in / out; when shrinking the
 *     kernel is stretched by scale (support = 2 * scale: antialiasing). Taps run from
 *     xmin = (int)(center - support + 0.5) to xmax = (int)(center + support + 0.5), clamped to the
 *     image, weight of tap x = bicubic((x + xmin - center + 0.5) / filterscale), normalised so the
 *     taps of a pixel sum to 1.
 *   - 8-bit images: weights become integers with 22 fractional bits (rounded half away from zero);
 *     each pass accumulates in int32 from 1 << 21 (rounding), shifts right by 22 and clips to
 * 0..255, so the intermediate image is 8-bit.
 *   - 32-bit integer images ('I'): the same weights in double, each pass rounded half away from
 *     zero to int32, no clipping.
 */
#include "image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { PRECISION_BITS = 32 - 8 - 2 };

static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct coeffs {
    int ksize;   /* taps stored per output pixel */
    int *bounds; /* per output pixel: first source index, tap count */
    double *kd;  /* ksize weights per output pixel (normalised) */
    int32_t *ki; /* the same in fixed point (8-bit path only) */
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->bounds);
    free(c->kd);
    free(c->ki);
    memset(c, 0, sizeof *c);
}

/* Weights for resampling in_size samples to out_size (box = the whole image), for the output
 * pixels first .. first + count - 1 only (entry i is output pixel first + i): each pixel's weights
 * depend on its own index alone. */
static int coeffs_make(coeffs *c, int in_size, int out_size, int first, int count, int fixed)
{
    memset(c, 0, sizeof *c);
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->bounds = malloc((size_t)count * 2 * sizeof(int));
    c->kd = malloc((size_t)count * ksize * sizeof(double));
    if (fixed)
        c->ki = malloc((size_t)count * ksize * sizeof(int32_t));
    if (!c->bounds || !c->kd || (fixed && !c->ki)) {
        coeffs_free(c);
        return clipl__err(CLIPL_ENOMEM, "image resize: out of memory for %d x %d weights", count,
                          ksize);
    }
    double ss = 1.0 / filterscale;
    for (int i = 0; i < count; i++) {
        int xx = first + i;
        double center = in0 + (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double *k = c->kd + (size_t)i * ksize;
        double ww = 0.0;
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0)
                k[x] /= ww;
        for (; x < ksize; x++)
            k[x] = 0.0;
        c->bounds[i * 2] = xmin;
        c->bounds[i * 2 + 1] = xmax;
        if (fixed) {
            int32_t *ki = c->ki + (size_t)i * ksize;
            for (x = 0; x < ksize; x++)
                ki[x] = k[x] < 0 ? (int32_t)(-0.5 + k[x] * (1 << PRECISION_BITS))
                                 : (int32_t)(0.5 + k[x] * (1 << PRECISION_BITS));
        }
    }
    return CLIPL_OK;
}

static inline uint8_t clip8(int32_t ss)
{
    int32_t v = ss >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Horizontal pass over rows [y0, y0 + rows) of src (w wide) into dst (dw wide, rows rows). One
 * function per band count with the sums in scalars, so they stay in registers. */
#define HORIZONTAL_PASS(NAME, BANDS)                                                               \
    static void NAME(const uint8_t *src, int w, int y0, int rows, const coeffs *c, uint8_t *dst,   \
                     int dw)                                                                       \
    {                                                                                              \
        const int32_t half = 1 << (PRECISION_BITS - 1);                                            \
        for (int y = 0; y < rows; y++) {                                                           \
            const uint8_t *in = src + ((size_t)(y + y0) * w) * BANDS;                              \
            uint8_t *out = dst + (size_t)y * dw * BANDS;                                           \
            for (int xx = 0; xx < dw; xx++) {                                                      \
                int n = c->bounds[xx * 2 + 1];                                                     \
                const int32_t *k = c->ki + (size_t)xx * c->ksize;                                  \
                const uint8_t *p = in + (size_t)c->bounds[xx * 2] * BANDS;                         \
                int32_t s0 = half, s1 = half, s2 = half, s3 = half;                                \
                for (int x = 0; x < n; x++, p += BANDS) {                                          \
                    int32_t kx = k[x];                                                             \
                    s0 += p[0] * kx;                                                               \
                    if (BANDS > 1)                                                                 \
                        s1 += p[1] * kx;                                                           \
                    if (BANDS > 2)                                                                 \
                        s2 += p[2] * kx;                                                           \
                    if (BANDS > 3)                                                                 \
                        s3 += p[3] * kx;                                                           \
                }                                                                                  \
                out[xx * BANDS] = clip8(s0);                                                       \
                if (BANDS > 1)                                                                     \
                    out[xx * BANDS + 1] = clip8(s1);                                               \
                if (BANDS > 2)                                                                     \
                    out[xx * BANDS + 2] = clip8(s2);                                               \
                if (BANDS > 3)                                                                     \
                    out[xx * BANDS + 3] = clip8(s3);                                               \
            }                                                                                      \
        }                                                                                          \
    }

HORIZONTAL_PASS(horizontal_u8_1, 1)
HORIZONTAL_PASS(horizontal_u8_2, 2)
HORIZONTAL_PASS(horizontal_u8_3, 3)
HORIZONTAL_PASS(horizontal_u8_4, 4)

/* On x86-64 the vertical pass is also built for AVX2 and picked at load time (integer
 * arithmetic: the same results on every path). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(CLIPL_NO_CLONES)
#define HOT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HOT_CLONES
#endif

/* Vertical pass: dst row yy = weighted rows of src (row_len samples per row). */
HOT_CLONES static void vertical_u8(const uint8_t *src, size_t row_len, const coeffs *c,
                                   uint8_t *dst, int dh, int32_t *acc)
{
    for (int yy = 0; yy < dh; yy++) {
        int ymin = c->bounds[yy * 2], n = c->bounds[yy * 2 + 1];
        const int32_t *k = c->ki + (size_t)yy * c->ksize;
        for (size_t i = 0; i < row_len; i++)
            acc[i] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < n; y++) {
            const uint8_t *in = src + (size_t)(ymin + y) * row_len;
            int32_t ky = k[y];
            /* integer arithmetic: vectorising changes no result */
#pragma omp simd
            for (size_t i = 0; i < row_len; i++)
                acc[i] += in[i] * ky;
        }
        uint8_t *out = dst + (size_t)yy * row_len;
#pragma omp simd
        for (size_t i = 0; i < row_len; i++)
            out[i] = clip8(acc[i]);
    }
}

/* The source rows yfirst .. yfirst + rows - 1 that output rows y0 .. y0 + crh - 1 read; when the
 * height changes, also the vertical coefficients cv (fixed: in fixed point, for 8-bit samples). */
static int source_rows(coeffs *cv, int h, int dh, int y0, int crh, int fixed, int *yfirst,
                       int *rows)
{
    *yfirst = y0;
    *rows = crh;
    if (dh == h)
        return CLIPL_OK;
    int rc = coeffs_make(cv, h, dh, y0, crh, fixed);
    if (rc != CLIPL_OK)
        return rc;
    int ylast = cv->bounds[2 * (crh - 1)] + cv->bounds[2 * (crh - 1) + 1];
    *yfirst = cv->bounds[0];
    *rows = ylast - *yfirst;
    return CLIPL_OK;
}

int clipl__resample_u8(const uint8_t *src, int w, int h, int bands, int dw, int dh, int x0, int y0,
                       int cw, int crh, uint8_t *dst)
{
    int rc = CLIPL_OK;
    coeffs cv = {0}, ch = {0};
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    int need_h = dw != w, need_v = dh != h;
    size_t row_len = (size_t)cw * bands;

    int yfirst, rows;
    if ((rc = source_rows(&cv, h, dh, y0, crh, 1, &yfirst, &rows)) != CLIPL_OK)
        goto done;
    uint8_t *hdst = need_v ? NULL : dst;
    if (need_v) {
        tmp = malloc(row_len * rows);
        acc = malloc(row_len * sizeof(int32_t));
        if (!tmp || !acc) {
            rc = clipl__err(CLIPL_ENOMEM, "image resize: out of memory (%d x %d x %d)", cw, rows,
                            bands);
            goto done;
        }
        hdst = tmp;
    }
    if (need_h) {
        if ((rc = coeffs_make(&ch, w, dw, x0, cw, 1)) != CLIPL_OK)
            goto done;
        switch (bands) {
        case 1: horizontal_u8_1(src, w, yfirst, rows, &ch, hdst, cw); break;
        case 2: horizontal_u8_2(src, w, yfirst, rows, &ch, hdst, cw); break;
        case 3: horizontal_u8_3(src, w, yfirst, rows, &ch, hdst, cw); break;
        default: horizontal_u8_4(src, w, yfirst, rows, &ch, hdst, cw); break;
        }
    } else {
        for (int y = 0; y < rows; y++)
            memcpy(hdst + (size_t)y * row_len, src + ((size_t)(y + yfirst) * w + x0) * bands,
                   row_len);
    }
    if (need_v) {
        for (int i = 0; i < crh; i++)
            cv.bounds[i * 2] -= yfirst;
        vertical_u8(tmp, row_len, &cv, dst, crh, acc);
    }
done:
    coeffs_free(&cv);
    coeffs_free(&ch);
    free(tmp);
    free(acc);
    return rc;
}

static inline int32_t round_up(double f) { return (int32_t)(f >= 0.0 ? f + 0.5F : f - 0.5F); }

int clipl__resample_i32(const int32_t *src, int w, int h, int dw, int dh, int x0, int y0, int cw,
                        int crh, int32_t *dst)
{
    int rc = CLIPL_OK;
    coeffs cv = {0}, ch = {0};
    int32_t *tmp = NULL;
    int need_h = dw != w, need_v = dh != h;

    int yfirst, rows;
    if ((rc = source_rows(&cv, h, dh, y0, crh, 0, &yfirst, &rows)) != CLIPL_OK)
        goto done;
    int32_t *hdst = dst;
    if (need_v) {
        tmp = malloc((size_t)cw * rows * sizeof(int32_t));
        if (!tmp) {
            rc = clipl__err(CLIPL_ENOMEM, "image resize: out of memory (%d x %d)", cw, rows);
            goto done;
        }
        hdst = tmp;
    }
    if (need_h) {
        if ((rc = coeffs_make(&ch, w, dw, x0, cw, 0)) != CLIPL_OK)
            goto done;
        for (int y = 0; y < rows; y++) {
            const int32_t *in = src + (size_t)(y + yfirst) * w;
            for (int xx = 0; xx < cw; xx++) {
                int xmin = ch.bounds[xx * 2], n = ch.bounds[xx * 2 + 1];
                const double *k = ch.kd + (size_t)xx * ch.ksize;
                double ss = 0.0;
                for (int x = 0; x < n; x++)
                    ss += in[x + xmin] * k[x];
                hdst[(size_t)y * cw + xx] = round_up(ss);
            }
        }
    } else {
        for (int y = 0; y < rows; y++)
            memcpy(hdst + (size_t)y * cw, src + (size_t)(y + yfirst) * w + x0,
                   (size_t)cw * sizeof(int32_t));
    }
    if (need_v) {
        for (int yy = 0; yy < crh; yy++) {
            int ymin = cv.bounds[yy * 2] - yfirst, n = cv.bounds[yy * 2 + 1];
            const double *k = cv.kd + (size_t)yy * cv.ksize;
            for (int xx = 0; xx < cw; xx++) {
                double ss = 0.0;
                for (int y = 0; y < n; y++)
                    ss += tmp[(size_t)(y + ymin) * cw + xx] * k[y];
                dst[(size_t)yy * cw + xx] = round_up(ss);
            }
        }
    }
done:
    coeffs_free(&cv);
    coeffs_free(&ch);
    free(tmp);
    return rc;
}

static inline int coord(double v) { return v < 0.0 ? -1 : (int)v; }

int clipl__resize_nearest(const uint8_t *src, int w, int h, int pixel_size, int dw, int dh, int x0,
                          int y0, int cw, int ch, uint8_t *dst)
{
    /* source positions accumulate in double from the first pixel centre, as Pillow's affine
     * scaler does, so the window's positions are found by running the sums up to it */
    double sx = (double)w / dw, sy = (double)h / dh;
    double xo = sx * 0.5, yo = sy * 0.5;
    int *xin = malloc((size_t)cw * sizeof(int));
    memset(dst, 0, (size_t)cw * ch * pixel_size);
    if (!xin)
        return clipl__err(CLIPL_ENOMEM, "image resize: out of memory");
    for (int x = 0; x < x0 + cw; x++) {
        if (x >= x0)
            xin[x - x0] = coord(xo);
        xo += sx;
    }
    for (int y = 0; y < y0 + ch; y++) {
        int yi = coord(yo);
        if (y >= y0 && yi >= 0 && yi < h) {
            const uint8_t *in = src + (size_t)yi * w * pixel_size;
            uint8_t *out = dst + (size_t)(y - y0) * cw * pixel_size;
            for (int x = 0; x < cw; x++)
                if (xin[x] >= 0 && xin[x] < w)
                    memcpy(out + (size_t)x * pixel_size, in + (size_t)xin[x] * pixel_size,
                           pixel_size);
        }
        yo += sy;
    }
    free(xin);
    return CLIPL_OK;
}
