/*
 * sheet.c - contact sheets: a grid of thumbnails, each with a caption and labelled probability
 * bars, drawn with libvips (thumbnails, pango text) into an RGB canvas and saved by libvips.
 */
#include "image_internal.h"

#include <vips/vips.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum {
    PAD = 8,      /* margin around a cell's contents */
    LINE_H = 18,  /* height of a caption line and of a bar */
    LINE_GAP = 3, /* space between bars */
    MIN_CELL_W = 200,
    MAX_LABELS = 32
};

static const char *const FONT = "sans 10";

typedef struct cell {
    int w, h;
    uint8_t *rgb; /* w x h x 3 */
} cell;

struct clipl_sheet {
    int columns, thumb, cell_w;
    int n, cap;
    cell *cells;
};

static int vips_fail(int code, const char *what, const char *name)
{
    return clipl__vips_fail(code, "sheet", what, name);
}

clipl_sheet *clipl_sheet_new(int columns, int thumb)
{
    if (columns < 1 || columns > 64 || thumb < 16 || thumb > 1024) {
        clipl__err(CLIPL_EINVAL,
                   "sheet_new: columns must be 1..64 and thumb 16..1024, got %d and %d", columns,
                   thumb);
        return NULL;
    }
    if (clipl__vips_init())
        return NULL;
    clipl_sheet *s = calloc(1, sizeof *s);
    if (!s) {
        clipl__err(CLIPL_ENOMEM, "sheet_new: out of memory");
        return NULL;
    }
    s->columns = columns;
    s->thumb = thumb;
    s->cell_w = thumb + 2 * PAD > MIN_CELL_W ? thumb + 2 * PAD : MIN_CELL_W;
    return s;
}

void clipl_sheet_free(clipl_sheet *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n; i++)
        free(s->cells[i].rgb);
    free(s->cells);
    free(s);
}

int clipl_sheet_count(const clipl_sheet *s) { return s ? s->n : 0; }

static void fill_rect(cell *c, int x0, int y0, int w, int h, const uint8_t rgb[3])
{
    for (int y = y0 < 0 ? 0 : y0; y < y0 + h && y < c->h; y++)
        for (int x = x0 < 0 ? 0 : x0; x < x0 + w && x < c->w; x++)
            memcpy(c->rgb + ((size_t)y * c->w + x) * 3, rgb, 3);
}

/* Pango markup for plain text: & < > escaped. New string or NULL. */
static char *escape_markup(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == '&' ? 5 : (*p == '<' || *p == '>') ? 4 : 1;
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *p = s; *p; p++) {
        const char *rep = *p == '&' ? "&amp;" : *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : NULL;
        if (rep) {
            memcpy(o, rep, strlen(rep));
            o += strlen(rep);
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

/* Renders text (plain, escaped here) with pango: *mask (w x h alpha, g_malloc'd). */
static int render_text(const char *text, uint8_t **mask, int *w, int *h)
{
    char *markup = escape_markup(text);
    if (!markup)
        return clipl__err(CLIPL_ENOMEM, "sheet: out of memory");
    VipsImage *t = NULL;
    int rc = CLIPL_OK;
    size_t size = 0;
    *mask = NULL;
    if (vips_text(&t, markup, "font", FONT, "dpi", 96, NULL) ||
        !(*mask = vips_image_write_to_memory(t, &size))) {
        rc = vips_fail(CLIPL_EIMAGE, "could not draw the text", text);
    } else {
        *w = vips_image_get_width(t);
        *h = vips_image_get_height(t);
    }
    if (t)
        g_object_unref(t);
    free(markup);
    return rc;
}

/* Draws text in colour with its top at y, left-aligned at x (right-aligned to x when right is
 * set), within max_w pixels: a longer text is cut and ends in an ellipsis. */
static int draw_text(cell *c, const char *text, int x, int y, int max_w, int right,
                     const uint8_t rgb[3])
{
    if (!text || !text[0] || max_w <= 0)
        return CLIPL_OK;
    size_t len = strlen(text);
    char *buf = malloc(len + 4);
    if (!buf)
        return clipl__err(CLIPL_ENOMEM, "sheet: out of memory");
    memcpy(buf, text, len + 1);
    uint8_t *mask = NULL;
    int tw = 0, th = 0, rc;
    for (;;) {
        rc = render_text(buf, &mask, &tw, &th);
        if (rc || tw <= max_w || len == 0)
            break;
        g_free(mask);
        mask = NULL;
        /* drop one UTF-8 character and end in "..." (U+2026) */
        do
            len--;
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80);
        while (len > 0 && text[len - 1] == ' ')
            len--;
        memcpy(buf, text, len);
        memcpy(buf + len, "\xe2\x80\xa6", 4);
    }
    free(buf);
    if (rc)
        return rc;
    if (right)
        x -= tw < max_w ? tw : max_w;
    for (int j = 0; j < th; j++) {
        int yy = y + j;
        if (yy < 0 || yy >= c->h)
            continue;
        for (int i = 0; i < tw && i < max_w; i++) {
            int xx = x + i;
            if (xx < 0 || xx >= c->w)
                continue;
            unsigned a = mask[(size_t)j * tw + i];
            uint8_t *d = c->rgb + ((size_t)yy * c->w + xx) * 3;
            for (int k = 0; k < 3; k++)
                d[k] = (uint8_t)((d[k] * (255 - a) + rgb[k] * a + 127) / 255);
        }
    }
    g_free(mask);
    return CLIPL_OK;
}

/* The image at path shrunk to fit a box x box, as 8-bit sRGB over white: *out (w x h x 3,
 * malloc'd). */
static int thumbnail(const char *path, int box, uint8_t **out, int *w, int *h)
{
    VipsImage *t = NULL, *a = NULL, *b = NULL, *f = NULL;
    int rc = CLIPL_OK;
    *out = NULL;
    if (vips_thumbnail(path, &t, box, "height", box, "size", VIPS_SIZE_DOWN, NULL)) {
        rc = vips_fail(CLIPL_EIMAGE, "could not read the image", path);
        goto done;
    }
    if (vips_colourspace(t, &a, VIPS_INTERPRETATION_sRGB, NULL)) {
        rc = vips_fail(CLIPL_EIMAGE, "could not convert to sRGB", path);
        goto done;
    }
    if (vips_image_hasalpha(a)) {
        double white[3] = {255, 255, 255};
        VipsArrayDouble *bg = vips_array_double_new(white, 3);
        int bad = vips_flatten(a, &b, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        if (bad) {
            rc = vips_fail(CLIPL_EIMAGE, "could not flatten", path);
            goto done;
        }
    } else {
        b = a;
        g_object_ref(b);
    }
    if (vips_cast_uchar(b, &f, NULL)) {
        rc = vips_fail(CLIPL_EIMAGE, "could not convert to 8 bits", path);
        goto done;
    }
    if (vips_image_get_bands(f) != 3) {
        rc = clipl__err(CLIPL_EIMAGE, "sheet: %s: %d bands after conversion to sRGB", path,
                        vips_image_get_bands(f));
        goto done;
    }
    size_t size = 0;
    void *px = vips_image_write_to_memory(f, &size);
    if (!px) {
        rc = vips_fail(CLIPL_EIMAGE, "could not decode", path);
        goto done;
    }
    *w = vips_image_get_width(f);
    *h = vips_image_get_height(f);
    *out = malloc(size);
    if (!*out) {
        g_free(px);
        rc = clipl__err(CLIPL_ENOMEM, "sheet: out of memory for %s", path);
        goto done;
    }
    memcpy(*out, px, size);
    g_free(px);
done:
    if (f)
        g_object_unref(f);
    if (b)
        g_object_unref(b);
    if (a)
        g_object_unref(a);
    if (t)
        g_object_unref(t);
    return rc;
}

int clipl_sheet_add(clipl_sheet *s, const char *path, const char *caption, int n,
                    const char *const *labels, const double *values)
{
    static const uint8_t white[3] = {255, 255, 255}, ink[3] = {20, 20, 20},
                         grey_ink[3] = {90, 90, 90}, track[3] = {232, 234, 238},
                         bar[3] = {150, 196, 240};
    if (!s || !path)
        return clipl__err(CLIPL_EINVAL, "sheet_add: %s is NULL", s ? "path" : "the sheet");
    if (n < 0 || n > MAX_LABELS || (n > 0 && (!labels || !values)))
        return clipl__err(CLIPL_EINVAL,
                          "sheet_add: %s: n = %d labels (0..%d, with labels and "
                          "values)",
                          path, n, MAX_LABELS);
    for (int i = 0; i < n; i++)
        if (!labels[i])
            return clipl__err(CLIPL_EINVAL, "sheet_add: %s: label %d is NULL", path, i);
    uint8_t *px = NULL;
    int tw = 0, th = 0;
    int rc = thumbnail(path, s->thumb, &px, &tw, &th);
    if (rc)
        return rc;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        cell *cells = realloc(s->cells, sizeof *cells * (size_t)cap);
        if (!cells) {
            free(px);
            return clipl__err(CLIPL_ENOMEM, "sheet_add: out of memory");
        }
        s->cells = cells;
        s->cap = cap;
    }
    cell c = {s->cell_w, PAD + s->thumb + 4 + LINE_H + n * (LINE_H + LINE_GAP) + PAD, NULL};
    c.rgb = malloc((size_t)c.w * c.h * 3);
    if (!c.rgb) {
        free(px);
        return clipl__err(CLIPL_ENOMEM, "sheet_add: out of memory");
    }
    fill_rect(&c, 0, 0, c.w, c.h, white);
    /* the thumbnail, centred in its box */
    int x0 = (c.w - tw) / 2, y0 = PAD + (s->thumb - th) / 2;
    for (int y = 0; y < th; y++)
        memcpy(c.rgb + ((size_t)(y0 + y) * c.w + x0) * 3, px + (size_t)y * tw * 3, (size_t)tw * 3);
    free(px);
    int inner = c.w - 2 * PAD;
    int y = PAD + s->thumb + 4;
    rc = draw_text(&c, caption, PAD, y, inner, 0, grey_ink);
    y += LINE_H;
    for (int i = 0; i < n && !rc; i++) {
        double v = values[i] != values[i] ? 0 : values[i] < 0 ? 0 : values[i] > 1 ? 1 : values[i];
        fill_rect(&c, PAD, y, inner, LINE_H, track);
        fill_rect(&c, PAD, y, (int)(v * inner + 0.5), LINE_H, bar);
        char pct[32];
        snprintf(pct, sizeof pct, "%.1f%%", 100 * v);
        int pct_w = 50;
        rc = draw_text(&c, labels[i], PAD + 3, y, inner - pct_w - 8, 0, ink);
        if (!rc)
            rc = draw_text(&c, pct, PAD + inner - 3, y, pct_w, 1, ink);
        y += LINE_H + LINE_GAP;
    }
    if (rc) {
        free(c.rgb);
        return rc;
    }
    s->cells[s->n++] = c;
    return CLIPL_OK;
}

int clipl_sheet_save(const clipl_sheet *s, const char *path)
{
    if (!s || !path)
        return clipl__err(CLIPL_EINVAL, "sheet_save: %s is NULL", s ? "path" : "the sheet");
    if (s->n == 0)
        return clipl__err(CLIPL_EINVAL, "sheet_save: %s: the sheet has no images", path);
    const char *ext = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (!ext || (slash && ext < slash) ||
        (strcasecmp(ext, ".png") && strcasecmp(ext, ".jpg") && strcasecmp(ext, ".jpeg") &&
         strcasecmp(ext, ".webp")))
        return clipl__err(CLIPL_EINVAL,
                          "sheet_save: %s: the name must end in .png, .jpg, .jpeg "
                          "or .webp",
                          path);
    int cols = s->n < s->columns ? s->n : s->columns;
    int rows = (s->n + cols - 1) / cols;
    int W = cols * s->cell_w, H = 0;
    for (int r = 0; r < rows; r++) {
        int rh = 0;
        for (int k = r * cols; k < (r + 1) * cols && k < s->n; k++)
            rh = s->cells[k].h > rh ? s->cells[k].h : rh;
        H += rh;
    }
    size_t nbytes = (size_t)W * H * 3;
    uint8_t *canvas = malloc(nbytes);
    if (!canvas)
        return clipl__err(CLIPL_ENOMEM, "sheet_save: out of memory for %d x %d pixels", W, H);
    memset(canvas, 255, nbytes);
    int y = 0;
    for (int r = 0; r < rows; r++) {
        int rh = 0;
        for (int k = r * cols; k < (r + 1) * cols && k < s->n; k++) {
            const cell *c = &s->cells[k];
            int x = (k - r * cols) * s->cell_w;
            for (int j = 0; j < c->h; j++)
                memcpy(canvas + ((size_t)(y + j) * W + x) * 3, c->rgb + (size_t)j * c->w * 3,
                       (size_t)c->w * 3);
            rh = c->h > rh ? c->h : rh;
        }
        y += rh;
    }
    int rc = CLIPL_OK;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32 + strlen(ext));
    VipsImage *img = NULL;
    if (!tmp) {
        rc = clipl__err(CLIPL_ENOMEM, "sheet_save: out of memory");
        goto done;
    }
    sprintf(tmp, "%s.%ld.tmp%s", path, (long)getpid(), ext);
    img = vips_image_new_from_memory(canvas, nbytes, W, H, 3, VIPS_FORMAT_UCHAR);
    if (!img) {
        rc = vips_fail(CLIPL_EIMAGE, "could not make the image for", path);
        goto done;
    }
    if (vips_image_write_to_file(img, tmp, NULL)) {
        rc = vips_fail(CLIPL_EIO, "could not write", path);
        remove(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        rc = clipl__err(CLIPL_EIO, "sheet_save: could not rename %s to %s", tmp, path);
        remove(tmp);
    }
done:
    if (img)
        g_object_unref(img);
    free(tmp);
    free(canvas);
    return rc;
}
