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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GOLDEN "../../shared/clip/"

static const double clip_std[3] = {0.26862954, 0.26130258, 0.27577711};

/* ---- SHA-256 (FIPS 180-4), to compare decoded pixels with the manifest ---- */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

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
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] +
                      w[i];
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

int main(void)
{
    test_golden();
    return check_done("image");
}
