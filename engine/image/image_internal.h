/*
 * image_internal.h - the image object and the Pillow-exact resampling shared by engine/image.
 */
#ifndef CLIPL_IMAGE_INTERNAL_H
#define CLIPL_IMAGE_INTERNAL_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

struct clipl_image {
    int width;     /* pixels per row */
    int height;    /* rows */
    int bands;     /* samples per pixel: 1..4 */
    int mode;      /* clipl_image_mode */
    size_t nbytes; /* size of pixels */
    void *pixels;  /* row-major interleaved; uint8 samples, int32 for CLIPL_IMAGE_I */
};

/* Bands of a mode (0 for an unknown mode) and bytes per sample. */
int clipl__image_mode_bands(int mode);
int clipl__image_sample_size(int mode);

/* A new image with uninitialised pixels, or NULL (error set). */
clipl_image *clipl__image_new(int width, int height, int mode);

/* Resamples 8-bit interleaved pixels (bands 1..4, src w x h) to dw x dh with Pillow's bicubic in
 * 8-bit fixed point (horizontal pass then vertical pass, each only when that size changes), and
 * writes only the window [x0, x0 + cw) x [y0, y0 + ch) of the result to dst (cw x ch x bands).
 * Each output pixel is exactly what the full resize gives there. Returns CLIPL_OK or an error. */
int clipl__resample_u8(const uint8_t *src, int w, int h, int bands, int dw, int dh, int x0, int y0,
                       int cw, int ch, uint8_t *dst);
/* The same for one band of int32 samples, computed in double as Pillow's 32bpc path. */
int clipl__resample_i32(const int32_t *src, int w, int h, int dw, int dh, int x0, int y0, int cw,
                        int ch, int32_t *dst);
/* Pillow's NEAREST resize (the affine scale path) of w x h pixels of `pixel_size` bytes to
 * dw x dh, writing only the window [x0, x0 + cw) x [y0, y0 + ch) to dst (cw x ch pixels). */
int clipl__resize_nearest(const uint8_t *src, int w, int h, int pixel_size, int dw, int dh, int x0,
                          int y0, int cw, int ch, uint8_t *dst);

/* Pillow's Image.resize((width, height), BICUBIC) of img (see clipl_image_resize), cut to the
 * window [x0, x0 + cw) x [y0, y0 + ch): *dst is a new cw x ch image. No argument checks. */
int clipl__image_resize_window(const clipl_image *img, int width, int height, int x0, int y0,
                               int cw, int ch, clipl_image **dst);
/* Pillow's convert('RGB') of n pixels at src (in img's mode) into 3-byte RGB. */
void clipl__row_to_rgb(const clipl_image *img, const void *src, size_t n, uint8_t *rgb);

/* Lazily initialises libvips once (thread-safe). Returns CLIPL_OK or an error. */
int clipl__vips_init(void);
/* Records "<area>: <what> <name>: <libvips message>" (newlines folded) and clears libvips'
 * process-wide error buffer under one lock shared by every caller. Returns code. */
int clipl__vips_fail(int code, const char *area, const char *what, const char *name);

#endif /* CLIPL_IMAGE_INTERNAL_H */
