/*
 * preprocess.c - OpenAI CLIP's `_transform(n_px)` on decoded images, one at a time or a batch of
 * files decoded and preprocessed in parallel.
 *
 *   Resize(n_px, BICUBIC)   torchvision 0.14 on a PIL image: the short side becomes n_px, the long
 *                           side int(n_px * long / short); Pillow's bicubic (resample.c)
 *   CenterCrop(n_px)        offsets int(round((size - n_px) / 2)), round half to even
 *   convert('RGB')          Pillow's conversion (alpha dropped, grey replicated, CMYK, 'I' clipped)
 *   ToTensor + Normalize    (float(v) / 255 - mean) / std, in float32 like torch
 *
 * Only the crop window of the resized image is computed: each resized pixel depends on the source
 * only, so the window is exactly what the full resize then crop gives.
 */
#include "image_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_N_PX = 16384 };

static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

/* lut[c][v] = (v / 255 - mean[c]) / std[c] in float32, the operations torch performs. */
static float lut[3][256];
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void lut_init(void)
{
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            volatile float x = (float)v / 255.0f;
            volatile float y = x - clip_mean[c];
            lut[c][v] = y / clip_std[c];
        }
}

/* Python's int(round(d / 2.0)) for an integer d >= 0 (round half to even). */
static int half_round_even(int d)
{
    int k = d / 2;
    if (d % 2 != 0 && k % 2 != 0)
        k++;
    return k;
}

/* torchvision's Resize(n) size and CenterCrop(n) offsets for a w x h image. */
static void geometry(int w, int h, int n, int *rw, int *rh, int *left, int *top)
{
    if (w <= h) {
        *rw = n;
        *rh = (int)((double)n * h / w);
    } else {
        *rh = n;
        *rw = (int)((double)n * w / h);
    }
    *left = half_round_even(*rw - n);
    *top = half_round_even(*rh - n);
}

static int preprocess_into(const clipl_image *img, int n, float *dst)
{
    int rw, rh, left, top, rc;
    clipl_image *crop = NULL;
    uint8_t *rgb = NULL;

    pthread_once(&lut_once, lut_init);
    geometry(img->width, img->height, n, &rw, &rh, &left, &top);
    if (rw < n || rh < n) /* cannot happen for n >= 1, but keep the crop inside the image */
        return clipl__err(CLIPL_EINVAL, "preprocess: resized size %d x %d is smaller than %d", rw,
                          rh, n);
    if ((rc = clipl__image_resize_window(img, rw, rh, left, top, n, n, &crop)) != CLIPL_OK)
        return rc;
    size_t np = (size_t)n * n;
    rgb = malloc(np * 3);
    if (!rgb) {
        clipl_image_free(crop);
        return clipl__err(CLIPL_ENOMEM, "preprocess: out of memory");
    }
    clipl__row_to_rgb(crop, crop->pixels, np, rgb);
    for (int c = 0; c < 3; c++) {
        float *d = dst + c * np;
        const float *l = lut[c];
        for (size_t i = 0; i < np; i++)
            d[i] = l[rgb[3 * i + c]];
    }
    free(rgb);
    clipl_image_free(crop);
    return CLIPL_OK;
}

static int check_n_px(const char *op, int n_px)
{
    if (n_px < 1 || n_px > MAX_N_PX)
        return clipl__err(CLIPL_EINVAL, "%s: n_px must be in 1..%d, got %d", op, MAX_N_PX, n_px);
    return CLIPL_OK;
}

int clipl_image_preprocess(const clipl_image *img, int n_px, clipl_tensor **dst)
{
    int rc;
    if (!img || !dst)
        return clipl__err(CLIPL_EINVAL, "preprocess: NULL argument");
    if ((rc = check_n_px("preprocess", n_px)) != CLIPL_OK)
        return rc;
    int64_t shape[3] = {3, n_px, n_px};
    clipl_tensor *t = clipl_tensor_empty(CLIPL_F32, 3, shape);
    if (!t)
        return clipl_errcode();
    if ((rc = preprocess_into(img, n_px, t->ptr)) != CLIPL_OK) {
        clipl_tensor_release(t);
        return rc;
    }
    *dst = t;
    return CLIPL_OK;
}

/* ---- batches -------------------------------------------------------------------------------- */

typedef struct batch {
    int n;
    const char *const *paths;
    int n_px;
    int flags;
    float *out;      /* n x 3 x n_px x n_px */
    int *status;     /* per item */
    char **msgs;     /* per item, NULL when fine */
    atomic_int next; /* next item to take */
    atomic_int stop; /* set on the first failure without SKIP_BAD, or on interrupt */
} batch;

static void item_run(batch *b, int i)
{
    size_t sz = (size_t)3 * b->n_px * b->n_px;
    int rc;
    if (!b->paths[i]) {
        rc = clipl__err(CLIPL_EINVAL, "preprocess_batch: path %d is NULL", i);
    } else {
        clipl_image *img = clipl_image_load(b->paths[i], b->flags & CLIPL_IMAGE_AUTOROTATE);
        rc = img ? preprocess_into(img, b->n_px, b->out + i * sz) : clipl_errcode();
        clipl_image_free(img);
    }
    if (rc != CLIPL_OK) {
        b->status[i] = rc;
        b->msgs[i] = strdup(clipl_errmsg());
        memset(b->out + i * sz, 0, sz * sizeof(float));
        if (!(b->flags & CLIPL_BATCH_SKIP_BAD))
            atomic_store(&b->stop, 1);
    }
}

static void *worker(void *arg)
{
    batch *b = arg;
    for (;;) {
        if (atomic_load(&b->stop))
            break;
        if (clipl__should_stop()) {
            atomic_store(&b->stop, 2);
            break;
        }
        int i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n)
            break;
        item_run(b, i);
    }
    return NULL;
}

/* The messages of this thread's last batch, kept in thread-specific data so that they are freed
 * when the thread exits (batches may run on short-lived threads). */
typedef struct batch_msgs {
    char **msgs;
    int n;
} batch_msgs;

static pthread_key_t msgs_key;
static pthread_once_t msgs_once = PTHREAD_ONCE_INIT;

static void msgs_free(void *p)
{
    batch_msgs *m = p;
    if (!m)
        return;
    for (int i = 0; i < m->n; i++)
        free(m->msgs[i]);
    free(m->msgs);
    free(m);
}

static void msgs_key_init(void) { pthread_key_create(&msgs_key, msgs_free); }

/* Replaces this thread's messages with msgs (n entries, owned from now on; NULL to clear). */
static void msgs_set(char **msgs, int n)
{
    pthread_once(&msgs_once, msgs_key_init);
    batch_msgs *old = pthread_getspecific(msgs_key), *m = NULL;
    if (msgs) {
        m = malloc(sizeof *m);
        if (!m) {
            for (int i = 0; i < n; i++)
                free(msgs[i]);
            free(msgs);
        } else {
            m->msgs = msgs;
            m->n = n;
        }
    }
    pthread_setspecific(msgs_key, m);
    msgs_free(old);
}

const char *clipl_preprocess_batch_message(int index)
{
    pthread_once(&msgs_once, msgs_key_init);
    batch_msgs *m = pthread_getspecific(msgs_key);
    if (!m || index < 0 || index >= m->n || !m->msgs[index])
        return "";
    return m->msgs[index];
}

int clipl_preprocess_batch(int n, const char *const *paths, int n_px, int flags, int nthreads,
                           clipl_tensor **dst, int *status_out)
{
    int rc;
    batch b;
    clipl_tensor *t = NULL;
    pthread_t *th = NULL;
    int started = 0;

    msgs_set(NULL, 0);
    if (!dst || (n > 0 && !paths))
        return clipl__err(CLIPL_EINVAL, "preprocess_batch: NULL argument");
    if (n < 0)
        return clipl__err(CLIPL_EINVAL, "preprocess_batch: n must be >= 0, got %d", n);
    if ((rc = check_n_px("preprocess_batch", n_px)) != CLIPL_OK)
        return rc;
    if ((rc = clipl__vips_init()) != CLIPL_OK)
        return rc;
    int64_t shape[4] = {n, 3, n_px, n_px};
    t = clipl_tensor_empty(CLIPL_F32, 4, shape);
    if (!t)
        return clipl_errcode();

    memset(&b, 0, sizeof b);
    b.n = n;
    b.paths = paths;
    b.n_px = n_px;
    b.flags = flags;
    b.out = t->ptr;
    b.status = calloc(n > 0 ? n : 1, sizeof(int));
    b.msgs = calloc(n > 0 ? n : 1, sizeof(char *));
    atomic_init(&b.next, 0);
    atomic_init(&b.stop, 0);
    if (!b.status || !b.msgs) {
        rc = clipl__err(CLIPL_ENOMEM, "preprocess_batch: out of memory");
        goto fail;
    }

    if (nthreads <= 0)
        nthreads = clipl_get_num_threads();
    if (nthreads > n)
        nthreads = n;
    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > 1) {
        th = calloc(nthreads - 1, sizeof(pthread_t));
        for (int k = 0; th && k < nthreads - 1; k++) {
            if (pthread_create(&th[k], NULL, worker, &b) != 0)
                break; /* the calling thread still does the work */
            started++;
        }
    }
    worker(&b);
    for (int k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    free(th);

    if (atomic_load(&b.stop) == 2) {
        rc = clipl__err(CLIPL_EINTERRUPTED, "preprocess_batch: interrupted");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (b.status[i] != CLIPL_OK && !(flags & CLIPL_BATCH_SKIP_BAD)) {
            rc = clipl__err(b.status[i], "preprocess_batch: item %d of %d: %s", i + 1, n,
                            b.msgs[i] ? b.msgs[i] : "failed");
            goto fail;
        }
    }
    if (status_out)
        memcpy(status_out, b.status, (size_t)n * sizeof(int));
    free(b.status);
    msgs_set(b.msgs, n);
    *dst = t;
    return CLIPL_OK;

fail:
    if (status_out && b.status)
        memcpy(status_out, b.status, (size_t)n * sizeof(int));
    free(b.status);
    if (b.msgs)
        msgs_set(b.msgs, n);
    clipl_tensor_release(t);
    return rc;
}
