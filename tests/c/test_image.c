/*
 * test_image.c - image decoding and CLIP preprocessing.
 *
 * References:
 *   - ../../shared/clip/preprocess/ arrays: OpenAI's `_transform(n_px)` run by Pillow 9.4 +
 *     torchvision 0.14 (manifest.json gives the decoded-pixel SHA-256 of each file, so decoder
 *     differences are told apart from resize differences).
 *   - a plain double-precision bicubic written here (no fixed point), for synthetic images in
 *     every mode.
 */
#include "check.h"
#include "clipl.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GOLDEN "../../shared/clip/"

static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

/* ---- SHA-256 (FIPS 180-4), to compare decoded pixels with the manifest ---- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

static void sha256_hex(const void *data, size_t n, char out[65])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        sha256_block(h, p + i);
    uint8_t tail[128] = {0};
    size_t r = n - i;
    memcpy(tail, p + i, r);
    tail[r] = 0x80;
    size_t tl = r + 9 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++)
        tail[tl - 1 - k] = (uint8_t)(bits >> (8 * k));
    sha256_block(h, tail);
    if (tl == 128)
        sha256_block(h, tail + 64);
    for (int k = 0; k < 8; k++)
        sprintf(out + 8 * k, "%08x", h[k]);
}

/* ---- helpers ---- */

static void *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(sz > 0 ? sz : 1);
    *n = fread(buf, 1, sz, f);
    fclose(f);
    return buf;
}

static void write_all(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* Loads a little-endian float32 .npy (v1.0) into a new buffer; *count receives the element
 * count. */
static float *read_npy_f32(const char *path, size_t *count)
{
    size_t n;
    uint8_t *buf = read_all(path, &n);
    if (!buf || n < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) {
        free(buf);
        return NULL;
    }
    size_t hl = buf[8] | (size_t)buf[9] << 8;
    if (!strstr((char *)buf + 10, "'<f4'")) {
        free(buf);
        return NULL;
    }
    size_t off = 10 + hl;
    *count = (n - off) / 4;
    float *out = malloc(*count * 4);
    memcpy(out, buf + off, *count * 4);
    free(buf);
    return out;
}

/* ---- golden comparison ---- */

typedef struct golden_case {
    const char *image;
    int n_px;
    const char *npy;
    const char *decoded_sha256;
    int mode;
} golden_case;

static const golden_case cases[] = {
    {"CLIP.png", 224, "preprocess/CLIP_224.npy",
     "1e0e7875a34a40f7d5c69e8e9453a22e37c95139ac5e7d4da1f826b43bbe4bba", CLIPL_IMAGE_RGBA},
    {"images/grace_hopper.jpg", 224, "preprocess/grace_hopper_224.npy",
     "f7f982de68dd296af67ee51b2a95a2e5658f7bf064c6536520b66bae8d01fc34", CLIPL_IMAGE_RGB},
    {"images/coins.png", 224, "preprocess/coins_224.npy",
     "e080cc03805f1fa70516c3cb84883d4633bda2a1b51841da7c22f3d14c072451", CLIPL_IMAGE_L},
    {"images/chelsea.png", 224, "preprocess/chelsea_224.npy",
     "416b729128bfb2c3d1eb69bf9b1734a796293abc17939267b2dc94f8a5784031", CLIPL_IMAGE_RGB},
    {"images/chelsea.png", 336, "preprocess/chelsea_336.npy",
     "416b729128bfb2c3d1eb69bf9b1734a796293abc17939267b2dc94f8a5784031", CLIPL_IMAGE_RGB},
};
enum { NCASES = sizeof cases / sizeof cases[0] };

/* Compares a preprocessed [3, n, n] tensor with the golden array. Differences are measured in
 * 8-bit levels: |diff| * std[c] * 255 (Normalize divides by std, ToTensor by 255). */
static void compare_golden(const clipl_tensor *t, const float *ref, int n, const char *label,
                           double *worst_out, size_t *same_out)
{
    const float *a = t->ptr;
    size_t np = (size_t)n * n, same = 0;
    double worst = 0;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < np; i++) {
            float x = a[c * np + i], y = ref[c * np + i];
            if (memcmp(&x, &y, 4) == 0)
                same++;
            double lv = fabs((double)x - y) * clip_std[c] * 255.0;
            if (lv > worst)
                worst = lv;
        }
    printf("  %-28s worst %.4f levels, %.4f%% bit-identical\n", label, worst,
           100.0 * same / (3.0 * np));
    *worst_out = worst;
    *same_out = same;
}

static void test_golden(void)
{
    size_t total = 0, total_same = 0;
    double worst_all = 0;
    printf("golden preprocess (OpenAI _transform, Pillow 9.4):\n");
    for (int k = 0; k < NCASES; k++) {
        const golden_case *gc = &cases[k];
        char path[512], label[128];
        snprintf(path, sizeof path, GOLDEN "%s", gc->image);
        clipl_image *img = clipl_image_load(path, 0);
        CHECK(img != NULL);
        if (!img) {
            fprintf(stderr, "  %s: %s\n", path, clipl_errmsg());
            continue;
        }
        CHECK(clipl_image_mode(img) == gc->mode);
        char hex[65];
        sha256_hex(clipl_image_pixels(img), clipl_image_nbytes(img), hex);
        int same_decode = strcmp(hex, gc->decoded_sha256) == 0;
        /* libvips uses the same libpng and libjpeg-turbo (ISLOW IDCT, fancy upsampling) as
         * Pillow here, so the decoded pixels must be identical. */
        CHECK(same_decode);
        if (!same_decode)
            fprintf(stderr, "  %s: decoded pixels differ from Pillow's (sha256 %s)\n", gc->image,
                    hex);
        clipl_tensor *t = NULL;
        CHECK_OK(clipl_image_preprocess(img, gc->n_px, &t));
        snprintf(path, sizeof path, GOLDEN "%s", gc->npy);
        size_t count = 0;
        float *ref = read_npy_f32(path, &count);
        CHECK(ref != NULL && count == (size_t)3 * gc->n_px * gc->n_px);
        if (t && ref && count == (size_t)3 * gc->n_px * gc->n_px) {
            double worst;
            size_t same;
            snprintf(label, sizeof label, "%s @%d", gc->image, gc->n_px);
            compare_golden(t, ref, gc->n_px, label, &worst, &same);
            /* the goal: every value within 1 level (+ float rounding), >= 99% bit-identical */
            CHECK(worst <= 1.0 + 1e-4);
            CHECK(same >= 0.99 * count);
            total += count;
            total_same += same;
            if (worst > worst_all)
                worst_all = worst;
        }
        free(ref);
        clipl_tensor_release(t);
        clipl_image_free(img);
    }
    printf("  all: worst %.4f levels, %.4f%% of %zu values bit-identical\n", worst_all,
           100.0 * total_same / (total ? total : 1), total);
}

/* ---- an independent reference resize (double precision, no fixed point) ---- */

static double ref_cubic(double x)
{
    /* Keys' cubic convolution kernel with a = -0.5 */
    x = fabs(x);
    if (x < 1)
        return 1.5 * x * x * x - 2.5 * x * x + 1;
    if (x < 2)
        return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
    return 0;
}

/* One pass along a line: out[j] for j < m from in[i * stride] for i < n, antialiased when
 * shrinking (kernel stretched by n/m), result rounded and clipped to 8 bits when clip8. */
static void ref_line(const double *in, int n, int stride, double *out, int m, int ostride,
                     int clip8)
{
    double scale = (double)n / m, fs = scale > 1 ? scale : 1;
    for (int j = 0; j < m; j++) {
        double center = (j + 0.5) * scale, sw = 0, acc = 0;
        for (int i = 0; i < n; i++) {
            double w = ref_cubic((i + 0.5 - center) / fs);
            sw += w;
            acc += w * in[(size_t)i * stride];
        }
        double v = floor(acc / sw + 0.5);
        if (clip8)
            v = v < 0 ? 0 : v > 255 ? 255 : v;
        out[(size_t)j * ostride] = v;
    }
}

/* Reference resize of a w x h x bands image held in doubles. */
static double *ref_resize(const double *src, int w, int h, int bands, int dw, int dh, int clip8)
{
    double *tmp = malloc(sizeof(double) * dw * h * bands);
    double *out = malloc(sizeof(double) * dw * dh * bands);
    for (int y = 0; y < h; y++)
        for (int b = 0; b < bands; b++) {
            if (dw == w)
                for (int x = 0; x < w; x++)
                    tmp[((size_t)y * dw + x) * bands + b] = src[((size_t)y * w + x) * bands + b];
            else
                ref_line(src + (size_t)y * w * bands + b, w, bands,
                         tmp + (size_t)y * dw * bands + b, dw, bands, clip8);
        }
    for (int x = 0; x < dw; x++)
        for (int b = 0; b < bands; b++) {
            if (dh == h)
                for (int y = 0; y < h; y++)
                    out[((size_t)y * dw + x) * bands + b] = tmp[((size_t)y * dw + x) * bands + b];
            else
                ref_line(tmp + (size_t)x * bands + b, h, dw * bands, out + (size_t)x * bands + b,
                         dh, dw * bands, clip8);
        }
    free(tmp);
    return out;
}

static uint32_t lcg_state = 12345;
static uint32_t lcg(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state >> 8;
}

/* A deterministic test picture: smooth gradients plus noise, so both flat areas and edges
 * occur. */
static uint8_t *make_pixels(int w, int h, int bands)
{
    uint8_t *p = malloc((size_t)w * h * bands);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int b = 0; b < bands; b++) {
                int v = (x * 255 / w + y * 97 / h + b * 50) % 256;
                if ((x / 3 + y / 4) % 5 == 0)
                    v = lcg() % 256;
                p[((size_t)y * w + x) * bands + b] = (uint8_t)v;
            }
    return p;
}

static void test_resize_reference(void)
{
    /* Pillow rounds the weights to 22-bit fixed point and the intermediate row to 8 bits; the
     * reference keeps full precision in the weights but also rounds between the passes. A
     * fixed-point rounding can flip the intermediate by 1 level and the second pass can carry
     * that flip scaled by its (up to ~1.3 in magnitude) weights: tolerance 2 levels, and at least
     * 99% of values exactly equal. */
    static const int sizes[][4] = {{37, 23, 10, 7},     {37, 23, 80, 50},   {37, 23, 37, 11},
                                   {37, 23, 15, 23},    {200, 150, 64, 48}, {64, 64, 224, 224},
                                   {451, 300, 336, 224}};
    static const int modes[] = {CLIPL_IMAGE_L, CLIPL_IMAGE_RGB, CLIPL_IMAGE_CMYK};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            int w = sizes[k][0], h = sizes[k][1], dw = sizes[k][2], dh = sizes[k][3];
            int bands = modes[m] == CLIPL_IMAGE_L ? 1 : modes[m] == CLIPL_IMAGE_RGB ? 3 : 4;
            uint8_t *px = make_pixels(w, h, bands);
            clipl_image *img = clipl_image_from_pixels(w, h, modes[m], px, (size_t)w * h * bands);
            clipl_image *out = NULL;
            CHECK(img != NULL);
            CHECK_OK(clipl_image_resize(img, dw, dh, &out));
            CHECK(out && clipl_image_width(out) == dw && clipl_image_height(out) == dh &&
                  clipl_image_mode(out) == modes[m]);
            double *src = malloc(sizeof(double) * w * h * bands);
            for (size_t i = 0; i < (size_t)w * h * bands; i++)
                src[i] = px[i];
            double *ref = ref_resize(src, w, h, bands, dw, dh, 1);
            const uint8_t *got = out ? clipl_image_pixels(out) : NULL;
            size_t n = (size_t)dw * dh * bands, same = 0;
            double worst = 0;
            for (size_t i = 0; got && i < n; i++) {
                double d = fabs(got[i] - ref[i]);
                same += d == 0;
                worst = d > worst ? d : worst;
            }
            CHECK(worst <= 2);
            CHECK(same >= 0.99 * n);
            if (worst > 2 || same < 0.99 * n)
                fprintf(stderr, "  resize %s %dx%d -> %dx%d: worst %g, %zu/%zu equal\n",
                        clipl_image_mode_name(modes[m]), w, h, dw, dh, worst, same, n);
            free(src);
            free(ref);
            free(px);
            clipl_image_free(out);
            clipl_image_free(img);
        }
}

/* RGBA is resized premultiplied: with alpha 255 everywhere it must equal the RGB resize exactly;
 * with varying alpha it must follow the premultiplied reference. */
static void test_rgba_premultiplied(void)
{
    int w = 61, h = 47, dw = 20, dh = 33;
    uint8_t *rgb = make_pixels(w, h, 3);
    uint8_t *rgba = malloc((size_t)w * h * 4);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = 255;
    }
    clipl_image *a = clipl_image_from_pixels(w, h, CLIPL_IMAGE_RGB, rgb, (size_t)w * h * 3);
    clipl_image *b = clipl_image_from_pixels(w, h, CLIPL_IMAGE_RGBA, rgba, (size_t)w * h * 4);
    clipl_image *ra = NULL, *rb = NULL, *rb3 = NULL;
    CHECK_OK(clipl_image_resize(a, dw, dh, &ra));
    CHECK_OK(clipl_image_resize(b, dw, dh, &rb));
    CHECK_OK(clipl_image_to_rgb(rb, &rb3));
    CHECK(ra && rb3 && memcmp(clipl_image_pixels(ra), clipl_image_pixels(rb3), dw * dh * 3) == 0);
    clipl_image_free(rb);
    clipl_image_free(rb3);
    clipl_image_free(b);

    /* varying alpha: left half opaque, right half alpha ramps down to 0 */
    double *pre = malloc(sizeof(double) * w * h * 4);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            int al = x < w / 2 ? 255 : 255 - (x - w / 2) * 255 / (w - w / 2);
            rgba[4 * i + 3] = (uint8_t)al;
            for (int c = 0; c < 3; c++)
                pre[4 * i + c] = floor(rgba[4 * i + c] * al / 255.0 + 0.5);
            pre[4 * i + 3] = al;
        }
    b = clipl_image_from_pixels(w, h, CLIPL_IMAGE_RGBA, rgba, (size_t)w * h * 4);
    CHECK_OK(clipl_image_resize(b, dw, dh, &rb));
    double *ref = ref_resize(pre, w, h, 4, dw, dh, 1);
    const uint8_t *got = rb ? clipl_image_pixels(rb) : NULL;
    double worst = 0;
    for (size_t i = 0; got && i < (size_t)dw * dh; i++) {
        double al = ref[4 * i + 3];
        CHECK(fabs(got[4 * i + 3] - al) <= 2);
        if (al < 128) /* dividing by a small alpha magnifies every level: check opaque-ish ones */
            continue;
        for (int c = 0; c < 3; c++) {
            double v = floor(255.0 * ref[4 * i + c] / al);
            v = v > 255 ? 255 : v;
            double d = fabs(got[4 * i + c] - v);
            worst = d > worst ? d : worst;
        }
    }
    /* 2 levels in premultiplied space (as above) times 255 / alpha <= 2 for alpha >= 128: 4 */
    CHECK(worst <= 4);
    free(ref);
    free(pre);
    free(rgb);
    free(rgba);
    clipl_image_free(a);
    clipl_image_free(ra);
    clipl_image_free(b);
    clipl_image_free(rb);
}

static void test_palette_and_i(void)
{
    /* P: nearest neighbour, pixel centres: source x = floor((x + 0.5) * w / dw) */
    int w = 13, h = 9, dw = 5, dh = 20;
    uint8_t *px = make_pixels(w, h, 3);
    clipl_image *p = clipl_image_from_pixels(w, h, CLIPL_IMAGE_P, px, (size_t)w * h * 3);
    clipl_image *rp = NULL;
    CHECK_OK(clipl_image_resize(p, dw, dh, &rp));
    int bad = 0;
    for (int y = 0; rp && y < dh; y++)
        for (int x = 0; x < dw; x++) {
            int sx = (int)floor((x + 0.5) * w / dw), sy = (int)floor((y + 0.5) * h / dh);
            bad += memcmp((const uint8_t *)clipl_image_pixels(rp) + 3 * (y * dw + x),
                          px + 3 * (sy * w + sx), 3) != 0;
        }
    CHECK(bad == 0);
    clipl_image_free(rp);
    clipl_image_free(p);
    free(px);

    /* I (16-bit grey as Pillow opens it): resized in double precision without clipping, then
     * convert('RGB') clips to 0..255 as Pillow's i2rgb does. Tolerance 1 (16-bit units): the
     * reference normalises its weights in a different order. */
    w = 40, h = 30, dw = 17, dh = 12;
    int32_t *iv = malloc(sizeof(int32_t) * w * h);
    double *dv = malloc(sizeof(double) * w * h);
    for (int i = 0; i < w * h; i++) {
        iv[i] = (int32_t)(lcg() % 65536);
        dv[i] = iv[i];
    }
    clipl_image *im = clipl_image_from_pixels(w, h, CLIPL_IMAGE_I, iv, sizeof(int32_t) * w * h);
    clipl_image *ri = NULL, *rgb = NULL;
    CHECK_OK(clipl_image_resize(im, dw, dh, &ri));
    double *ref = ref_resize(dv, w, h, 1, dw, dh, 0);
    double worst = 0;
    for (int i = 0; ri && i < dw * dh; i++) {
        double d = fabs(((const int32_t *)clipl_image_pixels(ri))[i] - ref[i]);
        worst = d > worst ? d : worst;
    }
    CHECK(worst <= 1);
    CHECK_OK(clipl_image_to_rgb(ri, &rgb));
    for (int i = 0; rgb && i < dw * dh; i++) {
        int32_t v = ((const int32_t *)clipl_image_pixels(ri))[i];
        int e = v < 0 ? 0 : v > 255 ? 255 : v;
        CHECK(((const uint8_t *)clipl_image_pixels(rgb))[3 * i] == e);
    }
    free(ref);
    free(iv);
    free(dv);
    clipl_image_free(ri);
    clipl_image_free(rgb);
    clipl_image_free(im);

    /* CMYK -> RGB: (255 - k) * (255 - c) / 255, within rounding */
    uint8_t cmyk[4 * 4] = {0, 0, 0, 0, 255, 255, 255, 255, 10, 100, 200, 50, 128, 0, 64, 200};
    clipl_image *c = clipl_image_from_pixels(2, 2, CLIPL_IMAGE_CMYK, cmyk, sizeof cmyk);
    CHECK_OK(clipl_image_to_rgb(c, &rgb));
    for (int i = 0; rgb && i < 4; i++)
        for (int ch = 0; ch < 3; ch++) {
            double e = (255 - cmyk[4 * i + 3]) * (255 - cmyk[4 * i + ch]) / 255.0;
            CHECK(fabs(((const uint8_t *)clipl_image_pixels(rgb))[3 * i + ch] - e) <= 1);
        }
    clipl_image_free(rgb);
    clipl_image_free(c);
}

/* preprocess == resize to torchvision's size, crop at Python's round-half-even offsets,
 * convert('RGB'), (v / 255 - mean) / std in float32: checked on odd geometries. */
static void test_preprocess_geometry(void)
{
    static const int sizes[][3] = {
        {401, 300, 224}, {300, 451, 224}, {227, 224, 224}, {50, 30, 64},    {224, 224, 224},
        {1, 3, 8},       {451, 300, 224}, {300, 401, 224}, {640, 480, 224}, {333, 500, 224}};
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float stdv[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1], n = sizes[k][2];
        /* the crop window of every resize path: premultiplied, nearest, plain */
        static const int modes[] = {CLIPL_IMAGE_RGBA, CLIPL_IMAGE_P, CLIPL_IMAGE_L, CLIPL_IMAGE_1,
                                    CLIPL_IMAGE_I};
        int mode = modes[k % 5];
        int bands = mode == CLIPL_IMAGE_RGBA ? 4 : mode == CLIPL_IMAGE_P ? 3 : 1;
        uint8_t *px = make_pixels(w, h, bands);
        clipl_image *img;
        if (mode == CLIPL_IMAGE_I) { /* 16-bit values around the 0..255 clip of convert('RGB') */
            int32_t *iv = malloc(sizeof(int32_t) * w * h);
            for (int i = 0; i < w * h; i++)
                iv[i] = px[i] * 2 - 100;
            img = clipl_image_from_pixels(w, h, mode, iv, sizeof(int32_t) * w * h);
            free(iv);
        } else {
            img = clipl_image_from_pixels(w, h, mode, px, (size_t)w * h * bands);
        }
        int rw = w <= h ? n : (int)((long long)n * w / h);
        int rh = w <= h ? (int)((long long)n * h / w) : n;
        int left = (int)nearbyint((rw - n) / 2.0), top = (int)nearbyint((rh - n) / 2.0);
        clipl_image *r = NULL, *rgb = NULL;
        clipl_tensor *t = NULL;
        CHECK_OK(clipl_image_resize(img, rw, rh, &r));
        CHECK_OK(clipl_image_to_rgb(r, &rgb));
        CHECK_OK(clipl_image_preprocess(img, n, &t));
        CHECK(t && t->ndim == 3 && t->shape[0] == 3 && t->shape[1] == n && t->shape[2] == n);
        int bad = 0;
        for (int c = 0; t && rgb && c < 3; c++)
            for (int y = 0; y < n; y++)
                for (int x = 0; x < n; x++) {
                    uint8_t v = ((const uint8_t *)clipl_image_pixels(
                        rgb))[3 * ((y + top) * rw + x + left) + c];
                    float e = ((float)v / 255.0f - mean[c]) / stdv[c];
                    float g = ((const float *)t->ptr)[(c * n + y) * n + x];
                    bad += memcmp(&e, &g, 4) != 0;
                }
        CHECK(bad == 0);
        if (bad)
            fprintf(stderr, "  preprocess %dx%d @%d: %d values differ\n", w, h, n, bad);
        clipl_tensor_release(t);
        clipl_image_free(r);
        clipl_image_free(rgb);
        clipl_image_free(img);
        free(px);
    }
}

/* ---- bad input ---- */

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

/* A PNG whose header claims w x h RGB pixels, followed by an IDAT holding a few bytes (a stored
 * deflate block) and IEND. */
static size_t make_png_header(uint8_t *buf, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 0;
    memcpy(buf, sig, 8);
    n = 8;
    put32(buf + n, 13);
    memcpy(buf + n + 4, "IHDR", 4);
    put32(buf + n + 8, w);
    put32(buf + n + 12, h);
    buf[n + 16] = 8, buf[n + 17] = 2, buf[n + 18] = 0, buf[n + 19] = 0, buf[n + 20] = 0;
    put32(buf + n + 21, crc32_png(buf + n + 4, 17));
    n += 25;
    static const uint8_t z[] = {0x78, 0x01, 0x01, 0x05, 0x00, 0xfa, 0xff, 0,
                                0,    0,    0,    0,    0x00, 0x05, 0x00, 0x01};
    put32(buf + n, sizeof z);
    memcpy(buf + n + 4, "IDAT", 4);
    memcpy(buf + n + 8, z, sizeof z);
    put32(buf + n + 8 + sizeof z, crc32_png(buf + n + 4, 4 + sizeof z));
    n += 12 + sizeof z;
    put32(buf + n, 0);
    memcpy(buf + n + 4, "IEND", 4);
    put32(buf + n + 8, crc32_png(buf + n + 4, 4));
    n += 12;
    return n;
}

static char tmpdir[256];

static void expect_load_error(const char *path, const char *needle)
{
    clipl_errclear();
    clipl_image *img = clipl_image_load(path, 0);
    CHECK(img == NULL);
    CHECK(clipl_errcode() != CLIPL_OK);
    CHECK(strstr(clipl_errmsg(), path) != NULL);
    if (needle)
        CHECK(strstr(clipl_errmsg(), needle) != NULL);
    if (img || !strstr(clipl_errmsg(), path) || (needle && !strstr(clipl_errmsg(), needle)))
        fprintf(stderr, "  load %s: unexpected result: %s\n", path, clipl_errmsg());
    clipl_image_free(img);
}

static void test_bad_files(void)
{
    char path[512];
    size_t n;
    uint8_t *jpg = read_all(GOLDEN "images/grace_hopper.jpg", &n);
    uint8_t *png = NULL;
    CHECK(jpg != NULL);

    expect_load_error("/nonexistent/dir/picture.png", "cannot open");

    snprintf(path, sizeof path, "%s/empty.jpg", tmpdir);
    write_all(path, "", 0);
    expect_load_error(path, NULL);

    snprintf(path, sizeof path, "%s/notes.txt", tmpdir);
    write_all(path, "this is not an image\n", 21);
    expect_load_error(path, NULL);

    snprintf(path, sizeof path, "%s/truncated.jpg", tmpdir);
    write_all(path, jpg, n / 2);
    expect_load_error(path, NULL);

    size_t pn;
    png = read_all(GOLDEN "images/chelsea.png", &pn);
    snprintf(path, sizeof path, "%s/truncated.png", tmpdir);
    write_all(path, png, pn / 2);
    expect_load_error(path, NULL);

    /* corrupt: the JPEG markers after SOI overwritten */
    uint8_t *bad = malloc(n);
    memcpy(bad, jpg, n);
    memset(bad + 2, 0xAB, 600);
    snprintf(path, sizeof path, "%s/corrupt.jpg", tmpdir);
    write_all(path, bad, n);
    expect_load_error(path, NULL);
    free(bad);

    /* a header claiming 100000 x 100000 pixels: refused by the pixel limit before decoding */
    uint8_t hdr[96];
    size_t hn = make_png_header(hdr, 100000, 100000);
    snprintf(path, sizeof path, "%s/bomb.png", tmpdir);
    write_all(path, hdr, hn);
    expect_load_error(path, "limit");

    /* the limit can be lowered and raised */
    CHECK(clipl_image_get_pixel_limit() == 178956970);
    CHECK_OK(clipl_image_set_pixel_limit(1000));
    expect_load_error(GOLDEN "images/coins.png", "limit");
    CHECK_OK(clipl_image_set_pixel_limit(0));
    clipl_image *ok = clipl_image_load(GOLDEN "images/coins.png", 0);
    CHECK(ok != NULL);
    clipl_image_free(ok);
    CHECK(clipl_image_get_pixel_limit() == 178956970);

    /* buffers: the same decoder, errors name the buffer */
    clipl_image *fa = clipl_image_load(GOLDEN "images/grace_hopper.jpg", 0);
    clipl_image *fb = clipl_image_load_buffer(jpg, n, 0);
    CHECK(fa && fb && clipl_image_nbytes(fa) == clipl_image_nbytes(fb) &&
          memcmp(clipl_image_pixels(fa), clipl_image_pixels(fb), clipl_image_nbytes(fa)) == 0);
    clipl_image_free(fa);
    clipl_image_free(fb);
    CHECK(clipl_image_load_buffer(jpg, n / 2, 0) == NULL);
    CHECK(strstr(clipl_errmsg(), "buffer") != NULL);
    CHECK(clipl_image_load_buffer(hdr, hn, 0) == NULL);
    CHECK(strstr(clipl_errmsg(), "limit") != NULL);
    CHECK(clipl_image_load_buffer("abc", 3, 0) == NULL);
    CHECK(clipl_image_load_buffer(NULL, 0, 0) == NULL);

    /* argument errors */
    uint8_t one[3] = {1, 2, 3};
    CHECK(clipl_image_from_pixels(1, 1, CLIPL_IMAGE_RGB, one, 2) == NULL);
    CHECK(strstr(clipl_errmsg(), "3 bytes") != NULL);
    CHECK(clipl_image_from_pixels(0, 1, CLIPL_IMAGE_RGB, one, 0) == NULL);
    CHECK(clipl_image_from_pixels(1, 1, 99, one, 3) == NULL);
    clipl_image *tiny = clipl_image_from_pixels(1, 1, CLIPL_IMAGE_RGB, one, 3);
    clipl_tensor *t = NULL;
    CHECK_ERR(clipl_image_preprocess(tiny, 0, &t), CLIPL_EINVAL, "n_px");
    CHECK_ERR(clipl_image_resize(tiny, 0, 5, (clipl_image **)&t), CLIPL_EINVAL, "0 x 5");
    CHECK_OK(clipl_image_to_tensor(tiny, &t));
    CHECK(t && t->dt == CLIPL_U8 && t->ndim == 3 && t->shape[2] == 3);
    clipl_tensor_release(t);
    clipl_image_free(tiny);
    free(jpg);
    free(png);
}

static void test_batch(void)
{
    char bad[512];
    snprintf(bad, sizeof bad, "%s/notes.txt", tmpdir);
    const char *paths[4] = {GOLDEN "images/chelsea.png", bad, GOLDEN "images/grace_hopper.jpg",
                            GOLDEN "CLIP.png"};
    clipl_tensor *t = NULL;
    int status[4] = {0};

    /* without skip_bad: fails, naming the item and the file */
    CHECK(clipl_preprocess_batch(4, paths, 224, 0, 2, &t, status) == CLIPL_EFORMAT);
    CHECK(strstr(clipl_errmsg(), "item 2 of 4") != NULL && strstr(clipl_errmsg(), bad) != NULL);
    CHECK(t == NULL);

    /* with skip_bad: goes on, the bad row is zero, the others equal the one-image path */
    for (int threads = 1; threads <= 2; threads++) {
        memset(status, 0, sizeof status);
        CHECK_OK(clipl_preprocess_batch(4, paths, 224, CLIPL_BATCH_SKIP_BAD, threads, &t, status));
        CHECK(t && t->ndim == 4 && t->shape[0] == 4 && t->shape[1] == 3 && t->shape[3] == 224);
        CHECK(status[0] == 0 && status[1] != 0 && status[2] == 0 && status[3] == 0);
        CHECK(strstr(clipl_preprocess_batch_message(1), bad) != NULL);
        CHECK(strcmp(clipl_preprocess_batch_message(0), "") == 0);
        CHECK(strcmp(clipl_preprocess_batch_message(9), "") == 0);
        size_t sz = (size_t)3 * 224 * 224;
        for (int i = 0; t && i < 4; i++) {
            const float *row = (const float *)t->ptr + i * sz;
            if (i == 1) {
                int nz = 0;
                for (size_t k = 0; k < sz; k++)
                    nz += row[k] != 0;
                CHECK(nz == 0);
                continue;
            }
            clipl_image *img = clipl_image_load(paths[i], 0);
            clipl_tensor *one = NULL;
            CHECK_OK(clipl_image_preprocess(img, 224, &one));
            CHECK(one && memcmp(one->ptr, row, sz * sizeof(float)) == 0);
            clipl_tensor_release(one);
            clipl_image_free(img);
        }
        clipl_tensor_release(t);
        t = NULL;
    }

    /* an empty batch and bad arguments */
    CHECK_OK(clipl_preprocess_batch(0, NULL, 224, 0, 0, &t, NULL));
    CHECK(t && t->shape[0] == 0);
    clipl_tensor_release(t);
    t = NULL;
    CHECK_ERR(clipl_preprocess_batch(1, paths, -3, 0, 0, &t, NULL), CLIPL_EINVAL, "n_px");
}

/* Extreme aspect ratios: the resized image would be 1.5 million pixels wide; only the crop window
 * is computed, so this is quick and needs no full-size buffer. */
static void test_extreme_aspect(void)
{
    int w = 20000, h = 3;
    uint8_t *px = make_pixels(w, h, 3);
    static const int modes[] = {CLIPL_IMAGE_RGB, CLIPL_IMAGE_P};
    for (int m = 0; m < 2; m++) {
        clipl_image *img = clipl_image_from_pixels(w, h, modes[m], px, (size_t)w * h * 3);
        clipl_tensor *t = NULL;
        CHECK_OK(clipl_image_preprocess(img, 224, &t));
        int finite = 1;
        for (int i = 0; t && i < 3 * 224 * 224; i++)
            finite &= isfinite(((const float *)t->ptr)[i]);
        CHECK(t && finite);
        clipl_tensor_release(t);
        clipl_image_free(img);
    }
    free(px);
}

/* A batch on a short-lived thread: its messages are that thread's and are freed when it exits
 * (the sanitizer build's leak checker would report them otherwise). */
static void *batch_thread(void *arg)
{
    const char *const *paths = arg;
    clipl_tensor *t = NULL;
    int status[2];
    int ok =
        clipl_preprocess_batch(2, paths, 32, CLIPL_BATCH_SKIP_BAD, 1, &t, status) == CLIPL_OK &&
        status[0] == 0 && status[1] != 0 &&
        strstr(clipl_preprocess_batch_message(1), paths[1]) != NULL;
    clipl_tensor_release(t);
    return ok ? arg : NULL;
}

static void test_batch_thread(void)
{
    char bad[512];
    snprintf(bad, sizeof bad, "%s/missing.png", tmpdir);
    const char *paths[2] = {GOLDEN "images/coins.png", bad};
    pthread_t th;
    void *res = NULL;
    CHECK(pthread_create(&th, NULL, batch_thread, (void *)paths) == 0);
    CHECK(pthread_join(th, &res) == 0);
    CHECK(res == (void *)paths);
}

static void test_autorotate(void)
{
    /* The goldens carry no EXIF orientation: autorotate must change nothing for them. */
    clipl_image *a = clipl_image_load(GOLDEN "images/grace_hopper.jpg", 0);
    clipl_image *b = clipl_image_load(GOLDEN "images/grace_hopper.jpg", CLIPL_IMAGE_AUTOROTATE);
    CHECK(a && b && clipl_image_nbytes(a) == clipl_image_nbytes(b) &&
          memcmp(clipl_image_pixels(a), clipl_image_pixels(b), clipl_image_nbytes(a)) == 0);
    clipl_image_free(a);
    clipl_image_free(b);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/clipl_test_image_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_golden();
    test_resize_reference();
    test_rgba_premultiplied();
    test_palette_and_i();
    test_preprocess_geometry();
    test_bad_files();
    test_batch();
    test_extreme_aspect();
    test_batch_thread();
    test_autorotate();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_done("image");
}
