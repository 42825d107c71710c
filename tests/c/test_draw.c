/*
 * test_draw.c - the rasteriser of engine/image/draw.c against plain references written here:
 * 4x4-sampled coverage of a circle from its own inside test, exact area coverage of an
 * axis-aligned square, analytic areas, backgrounds, batch rendering, CLIP normalisation against
 * clipl_image_preprocess, PNG round trips through libvips, and the error paths.
 */
#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static clipl_tensor *canvas(int h, int w)
{
    int64_t shape[3] = {h, w, 3};
    return clipl_tensor_zeros(CLIPL_U8, 3, shape);
}

static uint8_t px(const clipl_tensor *t, int x, int y, int c)
{
    const uint8_t *p = t->ptr;
    return p[y * t->strides[0] + x * t->strides[1] + c * t->strides[2]];
}

static clipl_draw_item item(int kind, double cx, double cy, double r, double angle)
{
    clipl_draw_item it;
    memset(&it, 0, sizeof it);
    it.kind = kind;
    it.cx = (float)cx;
    it.cy = (float)cy;
    it.radius = (float)r;
    it.angle = (float)angle;
    it.rgb[0] = it.rgb[1] = it.rgb[2] = it.rgb[3] = 255;
    return it;
}

/* 1-D overlap of [a, b] with [p, p + 1]. */
static double overlap(double a, double b, double p)
{
    double lo = a > p ? a : p, hi = b < p + 1 ? b : p + 1;
    return hi > lo ? hi - lo : 0;
}

static void test_names(void)
{
    for (int k = 0; k < CLIPL_SHAPE_COUNT; k++)
        CHECK(clipl_shape_from_name(clipl_shape_name(k)) == k);
    CHECK(strcmp(clipl_shape_name(CLIPL_SHAPE_HEART), "heart") == 0);
    CHECK(strcmp(clipl_shape_name(99), "?") == 0);
    CHECK(clipl_shape_from_name("blob") == -1);
    CHECK(clipl_shape_from_name(NULL) == -1);
}

static void test_circle(void)
{
    /* White on black: a pixel's value is round(255 * coverage). The reference samples the same
     * 4x4 grid with its own inside test, so the values must match exactly (tolerance 0: no sample
     * point of this circle lies on its edge). */
    const double cx = 20.3, cy = 17.7, r = 9.4;
    clipl_tensor *cv = canvas(40, 40);
    clipl_draw_item it = item(CLIPL_SHAPE_CIRCLE, cx, cy, r, 0);
    CHECK_OK(clipl_draw_shape(cv, &it));
    int mismatches = 0, partial = 0;
    double ink = 0;
    for (int y = 0; y < 40; y++)
        for (int x = 0; x < 40; x++) {
            int n = 0;
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 4; i++) {
                    double sx = x + (i + 0.5) / 4 - cx, sy = y + (j + 0.5) / 4 - cy;
                    n += sx * sx + sy * sy <= r * r;
                }
            int expect = (255 * n * 255 + 2040) / 4080; /* the blend formula of the header */
            int got = px(cv, x, y, 0);
            mismatches += got != expect || px(cv, x, y, 1) != got || px(cv, x, y, 2) != got;
            partial += got > 0 && got < 255;
            ink += got / 255.0;
        }
    CHECK(mismatches == 0);
    CHECK(partial > 20); /* anti-aliasing: the edge has intermediate values */
    /* total ink vs pi r^2: sampling errors average out along the edge; 1% is 2.8 px here */
    double area = 3.14159265358979 * r * r;
    CHECK(fabs(ink - area) / area < 0.01);
    printf("  circle: %d partial pixels, ink %.2f vs area %.2f\n", partial, ink, area);
    CHECK(px(cv, 20, 17, 0) == 255);
    CHECK(px(cv, 0, 0, 0) == 0 && px(cv, 39, 39, 2) == 0);
    clipl_tensor_release(cv);
}

static void test_square(void)
{
    /* The square of radius R at angle 0 has side R * sqrt(2). The reference is the exact area of
     * each pixel inside it; 4x4 sampling is off by at most 1/8 per axis, so 0.26 per pixel, and
     * sampled side within 1/4 pixel of the true one on each axis. */
    const double cx = 16.37, cy = 15.81, R = 8.9, h = R * sqrt(0.5);
    clipl_tensor *cv = canvas(32, 32);
    clipl_draw_item it = item(CLIPL_SHAPE_SQUARE, cx, cy, R, 0);
    CHECK_OK(clipl_draw_shape(cv, &it));
    double worst = 0, ink = 0;
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++) {
            double exact = overlap(cx - h, cx + h, x) * overlap(cy - h, cy + h, y);
            double got = px(cv, x, y, 1) / 255.0;
            worst = fmax(worst, fabs(got - exact));
            ink += got;
        }
    CHECK(worst <= 0.26);
    CHECK(fabs(ink - 4 * h * h) <= 2 * (2 * h) * 0.25 + 0.0625); /* each side within 1/4 px */
    printf("  square: worst pixel coverage error %.3f, ink %.2f vs %.2f\n", worst, ink, 4 * h * h);
    clipl_tensor_release(cv);
}

static void test_all_kinds(void)
{
    /* Every kind: the centre pixel is full, all ink lies in the circle of the radius (plus half a
     * pixel diagonal), the pixel box equals clipl_draw_item_bbox and is centred at angle 0. */
    for (int k = 0; k < CLIPL_SHAPE_COUNT; k++) {
        const double c = 24.3, r = 15; /* off the sample grid, so every kind has partial pixels */
        clipl_tensor *cv = canvas(49, 49);
        clipl_draw_item it = item(k, c, c, r, 0);
        it.rgb[0] = 200, it.rgb[1] = 100, it.rgb[2] = 50;
        CHECK_OK(clipl_draw_shape(cv, &it));
        if (k != CLIPL_SHAPE_RING)
            CHECK(px(cv, 24, 24, 0) == 200 && px(cv, 24, 24, 1) == 100 && px(cv, 24, 24, 2) == 50);
        int x0 = 99, y0 = 99, x1 = 0, y1 = 0, outside = 0, partial = 0;
        for (int y = 0; y < 49; y++)
            for (int x = 0; x < 49; x++)
                if (px(cv, x, y, 0)) {
                    x0 = x < x0 ? x : x0, y0 = y < y0 ? y : y0;
                    x1 = x + 1 > x1 ? x + 1 : x1, y1 = y + 1 > y1 ? y + 1 : y1;
                    outside += hypot(x + 0.5 - c, y + 0.5 - c) > r + 0.71;
                    partial += px(cv, x, y, 0) < 200;
                }
        int32_t box[4];
        CHECK_OK(clipl_draw_item_bbox(&it, 49, 49, box));
        CHECK(outside == 0);
        CHECK(partial > 0);
        if (!partial)
            printf("  no partial pixels for %s\n", clipl_shape_name(k));
        CHECK(box[0] == x0 && box[1] == y0 && box[2] == x1 && box[3] == y1);
        CHECK(fabs((x0 + x1) / 2.0 - c) <= 1.0 && fabs((y0 + y1) / 2.0 - c) <= 1.0);
        if (k == CLIPL_SHAPE_RING) /* hollow centre */
            CHECK(px(cv, 24, 24, 0) == 0 && px(cv, 24 + 11, 24, 0) == 200);
        clipl_tensor_release(cv);
    }
}

static void test_blend_and_clip(void)
{
    clipl_tensor *cv = canvas(16, 16);
    CHECK_OK(clipl_tensor_fill_(cv, 100));
    clipl_draw_item it = item(CLIPL_SHAPE_SQUARE, 8, 8, 6, 0);
    it.rgb[0] = 200, it.rgb[1] = 0, it.rgb[2] = 255, it.rgb[3] = 51; /* opacity 0.2 */
    CHECK_OK(clipl_draw_shape(cv, &it));
    /* 100 * 0.8 + 200 * 0.2 = 120; 100 * 0.8 = 80; 100 * 0.8 + 255 * 0.2 = 131 */
    CHECK(px(cv, 8, 8, 0) == 120 && px(cv, 8, 8, 1) == 80 && px(cv, 8, 8, 2) == 131);
    /* a shape mostly outside is clipped, not a crash */
    clipl_draw_item off = item(CLIPL_SHAPE_STAR, -5, 20, 12, 0.3);
    CHECK_OK(clipl_draw_shape(cv, &off));
    clipl_draw_item far = item(CLIPL_SHAPE_HEART, 1e5, -1e5, 30, 0);
    CHECK_OK(clipl_draw_shape(cv, &far));
    int32_t box[4] = {1, 1, 1, 1};
    CHECK_OK(clipl_draw_item_bbox(&far, 16, 16, box));
    CHECK(box[0] == box[2]);
    /* a strided canvas: draw into a transposed view */
    clipl_tensor *tv = NULL;
    CHECK_OK(clipl_tensor_transpose(cv, &tv, 0, 1));
    clipl_draw_item dot = item(CLIPL_SHAPE_CIRCLE, 3.5, 12.5, 1.2, 0);
    CHECK_OK(clipl_draw_shape(tv, &dot));
    CHECK(px(cv, 12, 3, 0) == 255); /* (x=3, y=12) of the view is (x=12, y=3) of the canvas */
    clipl_tensor_release(tv);
    clipl_tensor_release(cv);
}

static void test_backgrounds(void)
{
    clipl_tensor *cv = canvas(20, 30);
    clipl_draw_scene s;
    memset(&s, 0, sizeof s);
    s.bg_a[0] = 10, s.bg_a[1] = 20, s.bg_a[2] = 30;
    s.bg_b[0] = 250, s.bg_b[1] = 200, s.bg_b[2] = 150;

    s.background = CLIPL_BG_PLAIN;
    CHECK_OK(clipl_draw_background(cv, &s));
    CHECK(px(cv, 0, 0, 0) == 10 && px(cv, 29, 19, 2) == 30);

    /* gradient along +x: a at the left edge, b at the right edge, monotone in between */
    s.background = CLIPL_BG_GRADIENT;
    CHECK_OK(clipl_draw_background(cv, &s));
    int mono = 1;
    for (int x = 1; x < 30; x++)
        mono &= px(cv, x, 5, 0) >= px(cv, x - 1, 5, 0);
    CHECK(mono);
    CHECK(abs(px(cv, 0, 5, 0) - 10) <= 5 && abs(px(cv, 29, 5, 0) - 250) <= 5);
    CHECK(px(cv, 7, 0, 1) == px(cv, 7, 19, 1)); /* constant across the direction */

    /* stripes across x with period 10: values of a, b or anti-aliased blends between them */
    s.background = CLIPL_BG_STRIPES;
    s.bg_period = 10;
    CHECK_OK(clipl_draw_background(cv, &s));
    int na = 0, nb = 0;
    for (int x = 0; x < 30; x++) {
        int v = px(cv, x, 3, 0);
        na += v == 10, nb += v == 250;
        CHECK(v >= 10 && v <= 250);
    }
    CHECK(na >= 8 && nb >= 8);

    /* noise: a +- noise, mean near a, the same for the same seed, different for another */
    s.background = CLIPL_BG_NOISE;
    s.bg_a[0] = 128;
    s.bg_noise = 20;
    s.bg_seed = 7;
    CHECK_OK(clipl_draw_background(cv, &s));
    double mean = 0;
    int in_range = 1;
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 30; x++) {
            int v = px(cv, x, y, 0);
            mean += v / 600.0;
            in_range &= v >= 108 && v <= 148;
        }
    CHECK(in_range);
    CHECK(fabs(mean - 128) < 2.5); /* 600 samples of sd 11.5: 5 standard errors */
    clipl_tensor *again = canvas(20, 30);
    CHECK_OK(clipl_draw_background(again, &s));
    CHECK(memcmp(again->ptr, cv->ptr, 20 * 30 * 3) == 0);
    s.bg_seed = 8;
    CHECK_OK(clipl_draw_background(again, &s));
    CHECK(memcmp(again->ptr, cv->ptr, 20 * 30 * 3) != 0);

    s.background = CLIPL_BG_CHECKER;
    s.bg_period = 8;
    CHECK_OK(clipl_draw_background(cv, &s));
    CHECK(px(cv, 1, 1, 0) == 128 && px(cv, 5, 1, 0) == 250 && px(cv, 5, 5, 0) == 128);

    clipl_tensor_release(again);
    clipl_tensor_release(cv);
}

static void test_scenes(void)
{
    /* batch rendering = background then shapes one by one; identical with 1 and 2 threads */
    enum { N = 6, S = 32 };
    clipl_draw_scene sc[N];
    memset(sc, 0, sizeof sc);
    for (int i = 0; i < N; i++) {
        sc[i].background = i % CLIPL_BG_COUNT;
        sc[i].bg_a[0] = (uint8_t)(30 * i), sc[i].bg_b[1] = 200;
        sc[i].bg_angle = 0.3f * i, sc[i].bg_period = 7, sc[i].bg_noise = 15;
        sc[i].bg_seed = (uint32_t)i;
        sc[i].n_items = 2;
        sc[i].items[0] = item(i % CLIPL_SHAPE_COUNT, 10, 12, 6, 0.1 * i);
        sc[i].items[1] = item((i + 3) % CLIPL_SHAPE_COUNT, 22, 20, 7, -0.2);
        sc[i].items[1].rgb[0] = 0;
    }
    int64_t shape[4] = {N, S, S, 3};
    clipl_tensor *a = clipl_tensor_empty(CLIPL_U8, 4, shape);
    clipl_tensor *b = clipl_tensor_empty(CLIPL_U8, 4, shape);
    int threads = clipl_get_num_threads();
    clipl_set_num_threads(1);
    CHECK_OK(clipl_draw_scenes(a, N, sc));
    clipl_set_num_threads(2);
    CHECK_OK(clipl_draw_scenes(b, N, sc));
    clipl_set_num_threads(threads);
    CHECK(memcmp(a->ptr, b->ptr, (size_t)N * S * S * 3) == 0);
    for (int i = 0; i < N; i++) {
        clipl_tensor *one = canvas(S, S);
        CHECK_OK(clipl_draw_background(one, &sc[i]));
        for (int k = 0; k < 2; k++)
            CHECK_OK(clipl_draw_shape(one, &sc[i].items[k]));
        CHECK(memcmp(one->ptr, (uint8_t *)a->ptr + (size_t)i * S * S * 3, S * S * 3) == 0);
        clipl_tensor_release(one);
    }

    /* CLIP normalisation = clipl_image_preprocess at n_px = size (Pillow-exact, independent):
     * both compute (v / 255 - mean) / std in f32; 1e-6 relative allows a different rounding */
    clipl_tensor *norm = NULL, *sel = NULL;
    CHECK_OK(clipl_draw_normalize(a, &norm));
    CHECK(norm && norm->ndim == 4 && norm->shape[1] == 3 && norm->shape[2] == S);
    for (int i = 0; i < N; i++) {
        clipl_image *img = clipl_image_from_pixels(
            S, S, CLIPL_IMAGE_RGB, (uint8_t *)a->ptr + (size_t)i * S * S * 3, (size_t)S * S * 3);
        clipl_tensor *ref = NULL;
        CHECK_OK(clipl_image_preprocess(img, S, &ref));
        CHECK_OK(clipl_tensor_select(norm, &sel, 0, i));
        if (ref && sel)
            CHECK_CLOSE(sel, ref, 1e-6, "normalize vs preprocess");
        clipl_tensor_release(sel);
        clipl_tensor_release(ref);
        clipl_image_free(img);
    }
    clipl_tensor_release(norm);

    /* errors */
    CHECK_ERR(clipl_draw_scenes(a, N + 1, sc), CLIPL_EINVAL, "must be [7, H, W, 3] u8");
    sc[2].n_items = 5;
    CHECK_ERR(clipl_draw_scenes(a, N, sc), CLIPL_EINVAL, "scene 2: n_items 5");
    sc[2].n_items = 2;
    sc[3].items[1].kind = 42;
    CHECK_ERR(clipl_draw_scenes(a, N, sc), CLIPL_EINVAL, "scene 3: draw_scenes: item 1: unknown");
    sc[3].items[1].kind = 0;
    sc[4].background = CLIPL_BG_STRIPES;
    sc[4].bg_period = 0;
    CHECK_ERR(clipl_draw_scenes(a, N, sc), CLIPL_EINVAL, "bg_period >= 1");
    clipl_tensor_release(a);
    clipl_tensor_release(b);
}

static void test_save(void)
{
    char dir[] = "/tmp/clipl_test_draw_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char png[128], jpg[128], webp[128];
    snprintf(png, sizeof png, "%s/a.png", dir);
    snprintf(jpg, sizeof jpg, "%s/a.JPG", dir);
    snprintf(webp, sizeof webp, "%s/a.webp", dir);
    clipl_tensor *cv = canvas(24, 40);
    clipl_draw_scene s;
    memset(&s, 0, sizeof s);
    s.background = CLIPL_BG_GRADIENT;
    s.bg_a[2] = 255, s.bg_b[0] = 255;
    CHECK_OK(clipl_draw_background(cv, &s));
    clipl_draw_item it = item(CLIPL_SHAPE_STAR, 20, 12, 10, 0);
    CHECK_OK(clipl_draw_shape(cv, &it));

    /* PNG is lossless: the decoded pixels are the drawn ones */
    CHECK_OK(clipl_draw_save(cv, png, 0));
    clipl_image *img = clipl_image_load(png, 0);
    CHECK(img != NULL);
    if (img) {
        CHECK(clipl_image_width(img) == 40 && clipl_image_height(img) == 24);
        CHECK(clipl_image_mode(img) == CLIPL_IMAGE_RGB);
        CHECK(memcmp(clipl_image_pixels(img), cv->ptr, 24 * 40 * 3) == 0);
        /* and an image saves the same way */
        char png2[128];
        snprintf(png2, sizeof png2, "%s/b.png", dir);
        CHECK_OK(clipl_image_save(img, png2, 0));
        clipl_image *img2 = clipl_image_load(png2, 0);
        CHECK(img2 && memcmp(clipl_image_pixels(img2), cv->ptr, 24 * 40 * 3) == 0);
        clipl_image_free(img2);
        remove(png2);
    }
    clipl_image_free(img);

    /* JPEG at quality 95 is close: mean absolute error under 4 levels on this smooth image */
    CHECK_OK(clipl_draw_save(cv, jpg, 95));
    img = clipl_image_load(jpg, 0);
    CHECK(img != NULL);
    if (img) {
        const uint8_t *p = clipl_image_pixels(img), *q = cv->ptr;
        double mae = 0;
        for (int i = 0; i < 24 * 40 * 3; i++)
            mae += abs(p[i] - q[i]) / (24.0 * 40 * 3);
        CHECK(mae < 4);
        printf("  jpeg q95 mean abs error %.2f\n", mae);
    }
    clipl_image_free(img);
    CHECK_OK(clipl_draw_save(cv, webp, 90));
    remove(png);
    remove(jpg);
    remove(webp);

    /* a batch saved in parallel decodes to the same pixels; the first bad path is reported */
    {
        int64_t bs[4] = {3, 24, 40, 3};
        clipl_tensor *batch = clipl_tensor_empty(CLIPL_U8, 4, bs);
        for (int i = 0; i < 3; i++) {
            clipl_tensor *one = NULL;
            CHECK_OK(clipl_tensor_select(batch, &one, 0, i));
            CHECK_OK(clipl_tensor_copy_(one, cv));
            clipl_draw_item dot = item(i, 8 + 10 * i, 10, 5, 0);
            CHECK_OK(clipl_draw_shape(one, &dot));
            clipl_tensor_release(one);
        }
        char names[3][128];
        const char *paths[3];
        for (int i = 0; i < 3; i++) {
            snprintf(names[i], sizeof names[i], "%s/batch%d.png", dir, i);
            paths[i] = names[i];
        }
        CHECK_OK(clipl_draw_save_batch(batch, 3, paths, 0));
        for (int i = 0; i < 3; i++) {
            clipl_image *bi = clipl_image_load(paths[i], 0);
            CHECK(bi && memcmp(clipl_image_pixels(bi), (uint8_t *)batch->ptr + i * 24 * 40 * 3,
                               24 * 40 * 3) == 0);
            clipl_image_free(bi);
            remove(paths[i]);
        }
        paths[1] = "/nonexistent/dir/b1.png";
        paths[2] = "/nonexistent/dir/b2.png";
        CHECK_ERR(clipl_draw_save_batch(batch, 3, paths, 0), CLIPL_EIO, "b1.png': ");
        CHECK_ERR(clipl_draw_save_batch(batch, 3, paths, 0), CLIPL_EIO, "(image 1)");
        CHECK_ERR(clipl_draw_save_batch(batch, 4, paths, 0), CLIPL_EINVAL, "has 3 images");
        CHECK_ERR(clipl_draw_save_batch(cv, 1, paths, 0), CLIPL_EINVAL, "[N, H, W, C]");
        remove(paths[0]);
        clipl_tensor_release(batch);
    }

    /* errors name the op, the path or the shapes */
    CHECK_ERR(clipl_draw_save(cv, "/tmp/x.gif", 0), CLIPL_EINVAL, "unknown image format");
    CHECK_ERR(clipl_draw_save(cv, "/nonexistent/dir/x.png", 0), CLIPL_EIO,
              "/nonexistent/dir/x.png");
    CHECK_ERR(clipl_draw_save(cv, png, 101), CLIPL_EINVAL, "quality 101");
    CHECK_ERR(clipl_draw_save(NULL, png, 0), CLIPL_EINVAL, "pixels is NULL");
    int64_t s5[3] = {4, 4, 5};
    clipl_tensor *five = clipl_tensor_zeros(CLIPL_U8, 3, s5);
    CHECK_ERR(clipl_draw_save(five, png, 0), CLIPL_EINVAL, "got [4x4x5] u8");
    int64_t s4[3] = {4, 4, 4};
    clipl_tensor *rgba = clipl_tensor_zeros(CLIPL_U8, 3, s4);
    CHECK_ERR(clipl_draw_save(rgba, jpg, 0), CLIPL_EINVAL, "JPEG has no alpha");
    clipl_tensor_release(five);
    clipl_tensor_release(rgba);
    rmdir(dir);
    clipl_tensor_release(cv);
}

static void test_errors(void)
{
    clipl_tensor *cv = canvas(8, 8);
    clipl_draw_item it = item(CLIPL_SHAPE_CIRCLE, 4, 4, 3, 0);
    it.kind = CLIPL_SHAPE_COUNT;
    CHECK_ERR(clipl_draw_shape(cv, &it), CLIPL_EINVAL, "unknown shape kind 10");
    it.kind = 0;
    it.radius = NAN;
    CHECK_ERR(clipl_draw_shape(cv, &it), CLIPL_EINVAL, "bad geometry");
    it.radius = -1;
    CHECK_ERR(clipl_draw_shape(cv, &it), CLIPL_EINVAL, "radius -1");
    it.radius = 3;
    CHECK_ERR(clipl_draw_shape(NULL, &it), CLIPL_EINVAL, "canvas is NULL");
    CHECK_ERR(clipl_draw_shape(cv, NULL), CLIPL_EINVAL, "item is NULL");
    int64_t s2[2] = {8, 8};
    clipl_tensor *flat = clipl_tensor_zeros(CLIPL_U8, 2, s2);
    CHECK_ERR(clipl_draw_shape(flat, &it), CLIPL_EINVAL, "canvas must be [H, W, 3] u8, got [8x8]");
    int64_t s3[3] = {8, 8, 3};
    clipl_tensor *f32 = clipl_tensor_zeros(CLIPL_F32, 3, s3);
    CHECK_ERR(clipl_draw_shape(f32, &it), CLIPL_EINVAL, "f32");
    clipl_draw_scene s;
    memset(&s, 0, sizeof s);
    s.background = 9;
    CHECK_ERR(clipl_draw_background(cv, &s), CLIPL_EINVAL, "unknown background kind 9");
    s.background = CLIPL_BG_NOISE;
    s.bg_noise = 300;
    CHECK_ERR(clipl_draw_background(cv, &s), CLIPL_EINVAL, "noise 300");
    CHECK_ERR(clipl_draw_item_bbox(&it, 8, 8, NULL), CLIPL_EINVAL, "box is NULL");
    clipl_tensor *dst = NULL;
    CHECK_ERR(clipl_draw_normalize(f32, &dst), CLIPL_EINVAL, "expected [N, H, W, 3]");
    CHECK(dst == NULL);
    clipl_tensor_release(flat);
    clipl_tensor_release(f32);
    clipl_tensor_release(cv);
}

int main(void)
{
    test_names();
    test_circle();
    test_square();
    test_all_kinds();
    test_blend_and_clip();
    test_backgrounds();
    test_scenes();
    test_save();
    test_errors();
    return check_done("draw");
}
