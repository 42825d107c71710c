/*
 * draw.c - a small rasteriser for synthetic data sets (clip.shapes): filled shapes with
 * coverage-based anti-aliasing over plain, gradient, noise, striped or checkered backgrounds, the
 * CLIP normalisation of u8 batches, and saving pixels to PNG / JPEG / WebP with libvips.
 *
 * Every shape is centred on its bounding box (at angle 0) and fits in the circle of its radius.
 * A shape is an inside test plus a signed distance bound. Pixels whose centre lies more than half
 * a pixel diagonal from the edge are fully in or out; the others are sampled on a 4x4 grid and
 * blended by the covered fraction, so every edge pixel gets its exact 4x4-sampled coverage.
 * Everything is integer or double arithmetic in a fixed order, per image: the same scene gives
 * the same bytes with any number of threads (and on any machine whose libm gives the same
 * sin / cos / hypot, as glibc's correctly rounded ones do).
 */
#include "image_internal.h"

#include <vips/vips.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SS = 4, MAX_VERTS = 72, HEART_POINTS = 64 };

static const char *const SHAPE_NAMES[CLIPL_SHAPE_COUNT] = {
    "circle", "square", "triangle", "star", "hexagon",
    "cross",  "heart",  "diamond",  "ring", "pentagon"};

const char *clipl_shape_name(int kind)
{
    return kind >= 0 && kind < CLIPL_SHAPE_COUNT ? SHAPE_NAMES[kind] : "?";
}

int clipl_shape_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int k = 0; k < CLIPL_SHAPE_COUNT; k++)
        if (strcmp(name, SHAPE_NAMES[k]) == 0)
            return k;
    return -1;
}

/* ---- geometry ----------------------------------------------------------------------------- */

typedef struct {
    int kind;
    double cx, cy, r, c, s; /* centre, radius, cos and sin of the angle */
    double rin;             /* polygons: distance from the centre to the outline */
    int nv;                 /* polygon vertices (0 for circle and ring) */
    double vx[MAX_VERTS], vy[MAX_VERTS];
} shape_geom;

/* Unit outline of a polygonal kind (radius 1, angle 0, y down): returns the vertex count. */
static int unit_polygon(int kind, double *x, double *y)
{
    const double pi = 3.14159265358979323846;
    int n = 0;
    switch (kind) {
    case CLIPL_SHAPE_SQUARE: {
        const double h = sqrt(0.5);
        const double sx[4] = {-h, h, h, -h}, sy[4] = {-h, -h, h, h};
        for (n = 0; n < 4; n++)
            x[n] = sx[n], y[n] = sy[n];
        return n;
    }
    case CLIPL_SHAPE_TRIANGLE:
    case CLIPL_SHAPE_PENTAGON:
    case CLIPL_SHAPE_HEXAGON: {
        int k = kind == CLIPL_SHAPE_TRIANGLE ? 3 : kind == CLIPL_SHAPE_PENTAGON ? 5 : 6;
        double a0 = kind == CLIPL_SHAPE_HEXAGON ? 0.0 : -pi / 2;
        for (n = 0; n < k; n++) {
            x[n] = cos(a0 + 2 * pi * n / k);
            y[n] = sin(a0 + 2 * pi * n / k);
        }
        return n;
    }
    case CLIPL_SHAPE_STAR:
        for (n = 0; n < 10; n++) {
            double rr = n % 2 ? 0.45 : 1.0, a = -pi / 2 + pi * n / 5;
            x[n] = rr * cos(a);
            y[n] = rr * sin(a);
        }
        return n;
    case CLIPL_SHAPE_CROSS: {
        const double h = 0.25, l = sqrt(1 - h * h);
        const double cxs[12] = {-h, h, h, l, l, h, h, -h, -h, -l, -l, -h};
        const double cys[12] = {-l, -l, -h, -h, h, h, l, l, h, h, -h, -h};
        for (n = 0; n < 12; n++)
            x[n] = cxs[n], y[n] = cys[n];
        return n;
    }
    case CLIPL_SHAPE_DIAMOND: {
        const double dx[4] = {0, 0.6, 0, -0.6}, dy[4] = {-1, 0, 1, 0};
        for (n = 0; n < 4; n++)
            x[n] = dx[n], y[n] = dy[n];
        return n;
    }
    case CLIPL_SHAPE_HEART: {
        for (n = 0; n < HEART_POINTS; n++) {
            double t = 2 * pi * n / HEART_POINTS, st = sin(t);
            x[n] = 16 * st * st * st;
            y[n] = -(13 * cos(t) - 5 * cos(2 * t) - 2 * cos(3 * t) - cos(4 * t));
        }
        return n;
    }
    default: return 0;
    }
}

/* Unit outline centred on its bounding box and scaled so that its farthest vertex is at 1. */
static int unit_polygon_centred(int kind, double *x, double *y)
{
    int n = unit_polygon(kind, x, y);
    if (n == 0)
        return 0;
    double x0 = x[0], x1 = x[0], y0 = y[0], y1 = y[0], far = 0;
    for (int i = 1; i < n; i++) {
        x0 = fmin(x0, x[i]), x1 = fmax(x1, x[i]);
        y0 = fmin(y0, y[i]), y1 = fmax(y1, y[i]);
    }
    double mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
    for (int i = 0; i < n; i++) {
        x[i] -= mx, y[i] -= my;
        far = fmax(far, sqrt(x[i] * x[i] + y[i] * y[i]));
    }
    for (int i = 0; i < n; i++)
        x[i] /= far, y[i] /= far;
    return n;
}

static void geom_init(shape_geom *g, const clipl_draw_item *it)
{
    g->kind = it->kind;
    g->cx = it->cx;
    g->cy = it->cy;
    g->r = it->radius;
    g->c = cos(it->angle);
    g->s = sin(it->angle);
    double ux[MAX_VERTS], uy[MAX_VERTS];
    g->nv = unit_polygon_centred(it->kind, ux, uy);
    for (int i = 0; i < g->nv; i++) {
        g->vx[i] = g->cx + g->r * (g->c * ux[i] - g->s * uy[i]);
        g->vy[i] = g->cy + g->r * (g->s * ux[i] + g->c * uy[i]);
    }
    g->rin = 0;
}

/* Even-odd point-in-polygon test. */
static int poly_inside(const shape_geom *g, double px, double py)
{
    int in = 0;
    for (int i = 0, j = g->nv - 1; i < g->nv; j = i++) {
        double yi = g->vy[i], yj = g->vy[j];
        if ((yi > py) != (yj > py)) {
            double xc = g->vx[j] + (py - yj) * (g->vx[i] - g->vx[j]) / (yi - yj);
            if (px < xc)
                in = !in;
        }
    }
    return in;
}

/* Distance from (px, py) to the polygon's outline. */
static double poly_edge_dist(const shape_geom *g, double px, double py)
{
    double best = INFINITY;
    for (int i = 0, j = g->nv - 1; i < g->nv; j = i++) {
        double ex = g->vx[i] - g->vx[j], ey = g->vy[i] - g->vy[j];
        double wx = px - g->vx[j], wy = py - g->vy[j];
        double l2 = ex * ex + ey * ey;
        double t = l2 > 0 ? (wx * ex + wy * ey) / l2 : 0;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        double dx = wx - t * ex, dy = wy - t * ey;
        double d = dx * dx + dy * dy;
        if (d < best)
            best = d;
    }
    return sqrt(best);
}

/* geom_init plus the inscribed radius of polygons. */
static void geom_setup(shape_geom *g, const clipl_draw_item *it)
{
    geom_init(g, it);
    if (g->nv)
        g->rin = poly_edge_dist(g, g->cx, g->cy);
}

static int inside(const shape_geom *g, double px, double py)
{
    if (g->nv)
        return poly_inside(g, px, py);
    double dx = px - g->cx, dy = py - g->cy, d2 = dx * dx + dy * dy;
    if (g->kind == CLIPL_SHAPE_RING) {
        double ri = 0.55 * g->r;
        return d2 <= g->r * g->r && d2 >= ri * ri;
    }
    return d2 <= g->r * g->r;
}

/* Distance from (px, py) to the nearest edge of the shape. */
static double edge_dist(const shape_geom *g, double px, double py)
{
    if (g->nv)
        return poly_edge_dist(g, px, py);
    double d = hypot(px - g->cx, py - g->cy);
    double e = fabs(d - g->r);
    if (g->kind == CLIPL_SHAPE_RING)
        e = fmin(e, fabs(d - 0.55 * g->r));
    return e;
}

/* Coverage of pixel (x, y) in 16ths. The disc of radius rin around the centre (which every
 * polygonal kind contains) is inside and everything beyond the radius is outside, so pixels far
 * from the outline skip the distance to every edge; the result is the same. */
static int coverage(const shape_geom *g, int x, int y)
{
    double px = x + 0.5, py = y + 0.5;
    if (g->nv) {
        double d = hypot(px - g->cx, py - g->cy);
        if (d < g->rin - 0.7072)
            return SS * SS;
        if (d > g->r + 0.7072)
            return 0;
    }
    if (edge_dist(g, px, py) > 0.7072)
        return inside(g, px, py) ? SS * SS : 0;
    int n = 0;
    for (int j = 0; j < SS; j++)
        for (int i = 0; i < SS; i++)
            n += inside(g, x + (i + 0.5) / SS, y + (j + 0.5) / SS);
    return n;
}

/* Pixel box that may be covered, clipped to the canvas. */
static void geom_box(const shape_geom *g, int w, int h, int *x0, int *y0, int *x1, int *y1)
{
    double r = g->r + 1;
    double a = floor(g->cx - r), b = floor(g->cy - r), c = ceil(g->cx + r), d = ceil(g->cy + r);
    *x0 = a < 0 ? 0 : a > w ? w : (int)a;
    *y0 = b < 0 ? 0 : b > h ? h : (int)b;
    *x1 = c < 0 ? 0 : c > w ? w : (int)c;
    *y1 = d < 0 ? 0 : d > h ? h : (int)d;
    if (*x1 < *x0)
        *x1 = *x0;
    if (*y1 < *y0)
        *y1 = *y0;
}

/* ---- canvases ----------------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    int w, h;
    int64_t sy, sx, sc; /* strides in bytes */
} canvas;

static int canvas_of(const clipl_tensor *t, const char *op, int writable, canvas *cv)
{
    char sh[64];
    if (!t)
        return clipl__err(CLIPL_EINVAL, "%s: canvas is NULL", op);
    if (t->dt != CLIPL_U8 || t->ndim != 3 || t->shape[2] != 3)
        return clipl__err(CLIPL_EINVAL, "%s: canvas must be [H, W, 3] u8, got [%s] %s", op,
                          clipl__tshape(sh, sizeof sh, t), clipl_dtype_name(t->dt));
    if (writable && clipl__check_writable(t, op))
        return clipl_errcode();
    if (t->shape[0] > 1 << 20 || t->shape[1] > 1 << 20)
        return clipl__err(CLIPL_EINVAL, "%s: canvas [%s] is too large", op,
                          clipl__tshape(sh, sizeof sh, t));
    cv->p = t->ptr;
    cv->h = (int)t->shape[0];
    cv->w = (int)t->shape[1];
    cv->sy = t->strides[0];
    cv->sx = t->strides[1];
    cv->sc = t->strides[2];
    return CLIPL_OK;
}

static int check_item(const clipl_draw_item *it, const char *op, int index)
{
    if (!it)
        return clipl__err(CLIPL_EINVAL, "%s: item is NULL", op);
    if (it->kind < 0 || it->kind >= CLIPL_SHAPE_COUNT)
        return clipl__err(CLIPL_EINVAL, "%s: item %d: unknown shape kind %d (0..%d)", op, index,
                          (int)it->kind, CLIPL_SHAPE_COUNT - 1);
    if (!isfinite(it->cx) || !isfinite(it->cy) || !isfinite(it->angle) || !isfinite(it->radius) ||
        it->radius < 0 || it->radius > 1e5 || fabsf(it->cx) > 1e6 || fabsf(it->cy) > 1e6)
        return clipl__err(CLIPL_EINVAL,
                          "%s: item %d: bad geometry (cx %g, cy %g, radius %g, angle %g): "
                          "expected finite values and 0 <= radius <= 1e5",
                          op, index, (double)it->cx, (double)it->cy, (double)it->radius,
                          (double)it->angle);
    return CLIPL_OK;
}

static void draw_item(const canvas *cv, const clipl_draw_item *it)
{
    if (it->rgb[3] == 0 || it->radius <= 0)
        return;
    shape_geom g;
    geom_setup(&g, it);
    int x0, y0, x1, y1;
    geom_box(&g, cv->w, cv->h, &x0, &y0, &x1, &y1);
    const int full = SS * SS * 255;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            int a = coverage(&g, x, y) * it->rgb[3];
            if (!a)
                continue;
            uint8_t *px = cv->p + y * cv->sy + x * cv->sx;
            for (int c = 0; c < 3; c++) {
                uint8_t *q = px + c * cv->sc;
                *q = (uint8_t)((*q * (full - a) + it->rgb[c] * a + full / 2) / full);
            }
        }
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static uint8_t clamp_u8(double v) { return v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)lrint(v); }

/* Weight of colour a (0..1) at projected coordinate u for bands of width half. */
static double band_weight(double u, double half)
{
    double period = 2 * half, ph = u - period * floor(u / period);
    double d = ph < half ? fmin(ph, half - ph) : -fmin(ph - half, period - ph);
    double w = 0.5 + d;
    return w < 0 ? 0 : w > 1 ? 1 : w;
}

static void draw_background(const canvas *cv, const clipl_draw_scene *s)
{
    double ca = cos(s->bg_angle), sa = sin(s->bg_angle);
    double ext = (cv->w * fabs(ca) + cv->h * fabs(sa)) / 2;
    double half = s->bg_period / 2;
    for (int y = 0; y < cv->h; y++)
        for (int x = 0; x < cv->w; x++) {
            uint8_t *px = cv->p + y * cv->sy + x * cv->sx;
            double u = (x + 0.5 - cv->w / 2.0) * ca + (y + 0.5 - cv->h / 2.0) * sa;
            double wa = 1; /* weight of colour a */
            switch (s->background) {
            case CLIPL_BG_GRADIENT:
                wa = ext > 0 ? 1 - (u / ext + 1) / 2 : 1;
                wa = wa < 0 ? 0 : wa > 1 ? 1 : wa;
                break;
            case CLIPL_BG_STRIPES: wa = band_weight(u, half); break;
            case CLIPL_BG_CHECKER: {
                /* a where the x band and the y band agree; band edges anti-aliased */
                double wx = band_weight(x + 0.5, half), wy = band_weight(y + 0.5, half);
                wa = wx * wy + (1 - wx) * (1 - wy);
                break;
            }
            default: break;
            }
            for (int c = 0; c < 3; c++) {
                double v = s->bg_b[c] + (s->bg_a[c] - s->bg_b[c]) * wa;
                if (s->background == CLIPL_BG_NOISE && s->bg_noise > 0) {
                    uint64_t h = mix64(((uint64_t)s->bg_seed << 32) ^
                                       (((uint64_t)y * 65536 + (uint64_t)x) * 4 + (uint64_t)c));
                    double r = (double)(h >> 11) * 0x1.0p-53;
                    v = s->bg_a[c] + s->bg_noise * (2 * r - 1);
                }
                px[c * cv->sc] = clamp_u8(v);
            }
        }
}

static int check_scene(const clipl_draw_scene *s, const char *op, int index)
{
    if (!s)
        return clipl__err(CLIPL_EINVAL, "%s: scene is NULL", op);
    if (s->background < 0 || s->background >= CLIPL_BG_COUNT)
        return clipl__err(CLIPL_EINVAL, "%s: scene %d: unknown background kind %d (0..%d)", op,
                          index, (int)s->background, CLIPL_BG_COUNT - 1);
    if (!isfinite(s->bg_angle) || !isfinite(s->bg_noise) || s->bg_noise < 0 || s->bg_noise > 255)
        return clipl__err(CLIPL_EINVAL,
                          "%s: scene %d: bad background angle %g or noise %g (0..255)", op, index,
                          (double)s->bg_angle, (double)s->bg_noise);
    if ((s->background == CLIPL_BG_STRIPES || s->background == CLIPL_BG_CHECKER) &&
        !(s->bg_period >= 1 && s->bg_period <= 1e6))
        return clipl__err(CLIPL_EINVAL,
                          "%s: scene %d: stripes and checker need bg_period >= 1 pixel, got %g", op,
                          index, (double)s->bg_period);
    if (s->n_items < 0 || s->n_items > CLIPL_DRAW_MAX_ITEMS)
        return clipl__err(CLIPL_EINVAL, "%s: scene %d: n_items %d is not in 0..%d", op, index,
                          (int)s->n_items, CLIPL_DRAW_MAX_ITEMS);
    for (int i = 0; i < s->n_items; i++)
        if (check_item(&s->items[i], op, i))
            return clipl__err_prefix("scene %d", index);
    return CLIPL_OK;
}

int clipl_draw_background(clipl_tensor *canvas_t, const clipl_draw_scene *scene)
{
    canvas cv;
    if (canvas_of(canvas_t, "draw_background", 1, &cv) || check_scene(scene, "draw_background", 0))
        return clipl_errcode();
    draw_background(&cv, scene);
    return CLIPL_OK;
}

int clipl_draw_shape(clipl_tensor *canvas_t, const clipl_draw_item *item)
{
    canvas cv;
    if (canvas_of(canvas_t, "draw_shape", 1, &cv) || check_item(item, "draw_shape", 0))
        return clipl_errcode();
    draw_item(&cv, item);
    return CLIPL_OK;
}

int clipl_draw_item_bbox(const clipl_draw_item *item, int width, int height, int32_t *box)
{
    if (!box)
        return clipl__err(CLIPL_EINVAL, "draw_item_bbox: box is NULL");
    if (width < 0 || height < 0)
        return clipl__err(CLIPL_EINVAL, "draw_item_bbox: bad canvas size %d x %d", width, height);
    if (check_item(item, "draw_item_bbox", 0))
        return clipl_errcode();
    box[0] = box[1] = box[2] = box[3] = 0;
    if (item->radius <= 0)
        return CLIPL_OK;
    shape_geom g;
    geom_setup(&g, item);
    int x0, y0, x1, y1, bx0 = width, by0 = height, bx1 = 0, by1 = 0;
    geom_box(&g, width, height, &x0, &y0, &x1, &y1);
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            if (coverage(&g, x, y)) {
                bx0 = x < bx0 ? x : bx0;
                by0 = y < by0 ? y : by0;
                bx1 = x + 1 > bx1 ? x + 1 : bx1;
                by1 = y + 1 > by1 ? y + 1 : by1;
            }
    if (bx1 > bx0) {
        box[0] = bx0;
        box[1] = by0;
        box[2] = bx1;
        box[3] = by1;
    }
    return CLIPL_OK;
}

int clipl_draw_scenes(clipl_tensor *dst, int n, const clipl_draw_scene *scenes)
{
    char sh[64];
    if (!dst)
        return clipl__err(CLIPL_EINVAL, "draw_scenes: dst is NULL");
    if (dst->dt != CLIPL_U8 || dst->ndim != 4 || dst->shape[3] != 3 || dst->shape[0] != n)
        return clipl__err(CLIPL_EINVAL, "draw_scenes: dst must be [%d, H, W, 3] u8, got [%s] %s", n,
                          clipl__tshape(sh, sizeof sh, dst), clipl_dtype_name(dst->dt));
    if (n > 0 && !scenes)
        return clipl__err(CLIPL_EINVAL, "draw_scenes: scenes is NULL");
    if (clipl__check_writable(dst, "draw_scenes"))
        return clipl_errcode();
    for (int i = 0; i < n; i++)
        if (check_scene(&scenes[i], "draw_scenes", i))
            return clipl_errcode();
    int nt = clipl_get_num_threads();
#pragma omp parallel for schedule(dynamic, 4) num_threads(nt) if (n > 1 && nt > 1)
    for (int i = 0; i < n; i++) {
        canvas cv = {(uint8_t *)dst->ptr + i * dst->strides[0],
                     (int)dst->shape[2],
                     (int)dst->shape[1],
                     dst->strides[1],
                     dst->strides[2],
                     dst->strides[3]};
        draw_background(&cv, &scenes[i]);
        for (int k = 0; k < scenes[i].n_items; k++)
            draw_item(&cv, &scenes[i].items[k]);
    }
    return CLIPL_OK;
}

/* ---- CLIP normalisation ------------------------------------------------------------------- */

int clipl_draw_normalize(const clipl_tensor *src, clipl_tensor **dst)
{
    /* OpenAI's clip/clip.py _transform: Normalize((0.48145466, 0.4578275, 0.40821073),
     *                                             (0.26862954, 0.26130258, 0.27577711)) */
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    char sh[64];
    if (!dst)
        return clipl__err(CLIPL_EINVAL, "draw_normalize: dst is NULL");
    *dst = NULL;
    if (!src)
        return clipl__err(CLIPL_EINVAL, "draw_normalize: src is NULL");
    int batched = src->ndim == 4;
    if (src->dt != CLIPL_U8 || (src->ndim != 3 && src->ndim != 4) || src->shape[src->ndim - 1] != 3)
        return clipl__err(CLIPL_EINVAL,
                          "draw_normalize: expected [N, H, W, 3] or [H, W, 3] u8, got [%s] %s",
                          clipl__tshape(sh, sizeof sh, src), clipl_dtype_name(src->dt));
    int64_t n = batched ? src->shape[0] : 1, h = src->shape[batched], w = src->shape[batched + 1];
    int64_t s0 = batched ? src->strides[0] : 0, sy = src->strides[batched],
            sx = src->strides[batched + 1], sc = src->strides[batched + 2];
    int64_t shape[4] = {n, 3, h, w};
    clipl_tensor *out = batched ? clipl_tensor_empty(CLIPL_F32, 4, shape)
                                : clipl_tensor_empty(CLIPL_F32, 3, shape + 1);
    if (!out)
        return clipl_errcode();
    /* ToTensor divides by 255 in float, then Normalize subtracts and divides in float. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++)
            lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
    const uint8_t *base = src->ptr;
    float *o = out->ptr;
    int nt = clipl_get_num_threads();
#pragma omp parallel for schedule(static) num_threads(nt) if (n * h * w >= 65536 && nt > 1)
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            float *oc = o + (i * 3 + c) * h * w;
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++)
                    oc[y * w + x] = lut[c][base[i * s0 + y * sy + x * sx + c * sc]];
        }
    *dst = out;
    return CLIPL_OK;
}

/* ---- saving ------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    if (n < m)
        return 0;
    for (size_t i = 0; i < m; i++) {
        char c = s[n - m + i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != suffix[i])
            return 0;
    }
    return 1;
}

/* Saves w x h x bands contiguous u8 pixels. */
static int save_pixels(const uint8_t *px, int w, int h, int bands, const char *path, int quality,
                       const char *op)
{
    if (!path || !*path)
        return clipl__err(CLIPL_EINVAL, "%s: path is empty", op);
    if (quality < 0 || quality > 100)
        return clipl__err(CLIPL_EINVAL, "%s: quality %d is not in 0..100", op, quality);
    if (w <= 0 || h <= 0)
        return clipl__err(CLIPL_EINVAL, "%s: cannot save an empty %d x %d image to '%s'", op, w, h,
                          path);
    int fmt = ends_with(path, ".png")    ? 0
              : ends_with(path, ".jpg")  ? 1
              : ends_with(path, ".jpeg") ? 1
              : ends_with(path, ".webp") ? 2
                                         : -1;
    if (fmt < 0)
        return clipl__err(CLIPL_EINVAL,
                          "%s: '%s': unknown image format (use a .png, .jpg, .jpeg or .webp name)",
                          op, path);
    if (fmt == 1 && (bands == 2 || bands == 4))
        return clipl__err(CLIPL_EINVAL, "%s: '%s': JPEG has no alpha channel (%d bands)", op, path,
                          bands);
    if (clipl__vips_init())
        return clipl_errcode();
    VipsImage *im =
        vips_image_new_from_memory(px, (size_t)w * h * bands, w, h, bands, VIPS_FORMAT_UCHAR);
    if (!im)
        goto vips_fail;
    im->Type = bands >= 3 ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W;
    int q = quality ? quality : 90, rc;
    if (fmt == 0)
        rc = vips_pngsave(im, path, "compression", 6, "strip", TRUE, NULL);
    else if (fmt == 1)
        rc = vips_jpegsave(im, path, "Q", q, "strip", TRUE, NULL);
    else
        rc = vips_webpsave(im, path, "Q", q, "strip", TRUE, NULL);
    g_object_unref(im);
    if (rc)
        goto vips_fail;
    return CLIPL_OK;
vips_fail : {
    char quoted[1024];
    snprintf(quoted, sizeof quoted, "'%s'", path);
    return clipl__vips_fail(CLIPL_EIO, op, "cannot write", quoted);
}
}

int clipl_draw_save(const clipl_tensor *pixels, const char *path, int quality)
{
    char sh[64];
    if (!pixels)
        return clipl__err(CLIPL_EINVAL, "draw_save: pixels is NULL");
    if (pixels->dt != CLIPL_U8 || pixels->ndim != 3 || pixels->shape[2] < 1 ||
        pixels->shape[2] > 4 || pixels->shape[0] > 1 << 20 || pixels->shape[1] > 1 << 20)
        return clipl__err(CLIPL_EINVAL,
                          "draw_save: expected pixels [H, W, C] u8 with C in 1..4, got [%s] %s",
                          clipl__tshape(sh, sizeof sh, pixels), clipl_dtype_name(pixels->dt));
    clipl_tensor *c = NULL;
    if (clipl_tensor_contiguous(pixels, &c))
        return clipl__err_prefix("draw_save");
    int rc = save_pixels(c->ptr, (int)c->shape[1], (int)c->shape[0], (int)c->shape[2], path,
                         quality, "draw_save");
    clipl_tensor_release(c);
    return rc;
}

int clipl_image_save(const clipl_image *img, const char *path, int quality)
{
    if (!img)
        return clipl__err(CLIPL_EINVAL, "image_save: image is NULL");
    if (img->mode != CLIPL_IMAGE_L && img->mode != CLIPL_IMAGE_LA && img->mode != CLIPL_IMAGE_RGB &&
        img->mode != CLIPL_IMAGE_RGBA && img->mode != CLIPL_IMAGE_P && img->mode != CLIPL_IMAGE_PA)
        return clipl__err(CLIPL_EUNSUPPORTED,
                          "image_save: saving mode %s is not supported (convert it to RGB first)",
                          clipl_image_mode_name(img->mode));
    return save_pixels(img->pixels, img->width, img->height, img->bands, path, quality,
                       "image_save");
}

int clipl_draw_save_batch(const clipl_tensor *pixels, int n, const char *const *paths, int quality)
{
    char sh[64];
    if (!pixels)
        return clipl__err(CLIPL_EINVAL, "draw_save_batch: pixels is NULL");
    if (pixels->dt != CLIPL_U8 || pixels->ndim != 4 || pixels->shape[3] < 1 ||
        pixels->shape[3] > 4 || pixels->shape[1] > 1 << 20 || pixels->shape[2] > 1 << 20)
        return clipl__err(CLIPL_EINVAL,
                          "draw_save_batch: expected pixels [N, H, W, C] u8 with C in 1..4, got "
                          "[%s] %s",
                          clipl__tshape(sh, sizeof sh, pixels), clipl_dtype_name(pixels->dt));
    if (n < 0 || n > pixels->shape[0])
        return clipl__err(CLIPL_EINVAL, "draw_save_batch: n = %d, but pixels has %lld images", n,
                          (long long)pixels->shape[0]);
    if (n > 0 && !paths)
        return clipl__err(CLIPL_EINVAL, "draw_save_batch: paths is NULL");
    for (int i = 0; i < n; i++)
        if (!paths[i])
            return clipl__err(CLIPL_EINVAL, "draw_save_batch: paths[%d] is NULL", i);
    clipl_tensor *c = NULL;
    if (clipl_tensor_contiguous(pixels, &c))
        return clipl__err_prefix("draw_save_batch");
    int h = (int)c->shape[1], w = (int)c->shape[2], bands = (int)c->shape[3];
    size_t per = (size_t)h * w * bands;
    int first = n, code = CLIPL_OK;
    char msg[1024] = "";
    int nt = clipl_get_num_threads();
#pragma omp parallel for schedule(dynamic, 8) num_threads(nt) if (n > 8 && nt > 1)
    for (int i = 0; i < n; i++) {
        int rc = save_pixels((const uint8_t *)c->ptr + per * i, w, h, bands, paths[i], quality,
                             "draw_save_batch");
        if (rc) {
#pragma omp critical(clipl_draw_save_batch)
            if (i < first) {
                first = i;
                code = rc;
                snprintf(msg, sizeof msg, "%s", clipl_errmsg());
            }
        }
    }
    clipl_tensor_release(c);
    if (first < n)
        return clipl__err(code, "%s (image %d)", msg, first);
    return CLIPL_OK;
}
