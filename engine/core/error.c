/*
 * error.c - the thread-local error message, threads, interrupt flag and memory accounting.
 */
#include "internal.h"

#include <dnnl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define ERRMSG_SIZE 1024

static _Thread_local char errmsg[ERRMSG_SIZE];
static _Thread_local int errcode;

const char *clipl_version(void) { return CLIPL_VERSION_STRING; }

const char *clipl_errmsg(void) { return errmsg; }

int clipl_errcode(void) { return errcode; }

void clipl_errclear(void)
{
    errmsg[0] = '\0';
    errcode = CLIPL_OK;
}

int clipl__err(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    errcode = code;
    return code;
}

int clipl__err_prefix(const char *fmt, ...)
{
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if (n > (int)sizeof prefix - 3)
        n = (int)sizeof prefix - 3;
    memcpy(prefix + n, ": ", 3);
    n += 2;
    size_t old = strlen(errmsg);
    if (old + (size_t)n >= ERRMSG_SIZE)
        old = ERRMSG_SIZE - 1 - (size_t)n;
    memmove(errmsg + n, errmsg, old);
    memcpy(errmsg, prefix, (size_t)n);
    errmsg[old + (size_t)n] = '\0';
    if (errcode == CLIPL_OK)
        errcode = CLIPL_EINVAL;
    return errcode;
}

char *clipl__shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t n = 0;
    if (ndim == 0) {
        snprintf(buf, size, "scalar");
        return buf;
    }
    buf[0] = '\0';
    for (int i = 0; i < ndim && n < size; i++) {
        int w = snprintf(buf + n, size - n, i ? "x%lld" : "%lld", (long long)shape[i]);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    return buf;
}

char *clipl__tshape(char *buf, size_t size, const clipl_tensor *t)
{
    return clipl__shape_str(buf, size, t->ndim, t->shape);
}

int clipl__wrap_dim(int dim, int ndim)
{
    if (dim < 0)
        dim += ndim;
    if (dim < 0 || dim >= (ndim > 0 ? ndim : 1))
        return -1;
    return dim;
}

/* ---- threads ---- */

static int num_threads;

int clipl_set_num_threads(int n)
{
    int cores = 1;
#ifdef _OPENMP
    cores = omp_get_num_procs();
#endif
    if (n <= 0)
        n = cores;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    vips_concurrency_set(n);
    num_threads = n;
    return CLIPL_OK;
}

int clipl_get_num_threads(void)
{
    if (num_threads > 0)
        return num_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- interrupt ---- */

static volatile sig_atomic_t interrupt_flag;

void clipl_interrupt(int on) { interrupt_flag = on ? 1 : 0; }

int clipl_interrupted(void) { return interrupt_flag ? 1 : 0; }

bool clipl__should_stop(void) { return interrupt_flag != 0; }

/* ---- memory accounting ---- */

static _Atomic int64_t live_bytes;
static _Atomic int64_t peak_bytes;

int64_t clipl_live_bytes(void) { return atomic_load(&live_bytes); }

int64_t clipl_peak_bytes(void) { return atomic_load(&peak_bytes); }

void clipl_reset_peak_bytes(void) { atomic_store(&peak_bytes, atomic_load(&live_bytes)); }

static void count_bytes(int64_t delta)
{
    int64_t now = atomic_fetch_add(&live_bytes, delta) + delta;
    int64_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now)) {
    }
}

/* Large blocks (>= 1 MiB) are kept after being freed, in a small cache, and handed out again for
 * a request of the same rounded size: a loop that makes same-shaped outputs then skips mmap,
 * munmap and the page faults of fresh memory (10-25% of a large linear layer). At most
 * CACHE_SLOTS blocks and CACHE_BYTES bytes are kept; clipl_memory_trim() releases them. Cached
 * blocks are not live bytes. Off under AddressSanitizer, so that use-after-free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define CACHE_SLOTS 0
#else
#define CACHE_SLOTS 16
#endif
#define LARGE_BLOCK ((size_t)1 << 20)
#define LARGE_GRAIN ((size_t)64 << 10)
#define CACHE_BYTES ((size_t)256 << 20)

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    void *p;
    size_t size;
} block_cache[CACHE_SLOTS > 0 ? CACHE_SLOTS : 1];
static size_t cache_bytes;

static size_t round_size(size_t nbytes)
{
    if (nbytes >= LARGE_BLOCK)
        return (nbytes + LARGE_GRAIN - 1) & ~(LARGE_GRAIN - 1);
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    return rounded ? rounded : 64;
}

static void *cache_take(size_t size)
{
    void *p = NULL;
    if (CACHE_SLOTS == 0 || size < LARGE_BLOCK)
        return NULL;
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        if (block_cache[i].p && block_cache[i].size == size) {
            p = block_cache[i].p;
            block_cache[i].p = NULL;
            cache_bytes -= size;
            break;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return p;
}

static bool cache_put(void *p, size_t size)
{
    bool kept = false;
    if (CACHE_SLOTS == 0 || size < LARGE_BLOCK)
        return false;
    pthread_mutex_lock(&cache_lock);
    if (cache_bytes + size <= CACHE_BYTES) {
        for (int i = 0; i < CACHE_SLOTS; i++) {
            if (!block_cache[i].p) {
                block_cache[i].p = p;
                block_cache[i].size = size;
                cache_bytes += size;
                kept = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&cache_lock);
    return kept;
}

void clipl_memory_trim(void)
{
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        free(block_cache[i].p);
        block_cache[i].p = NULL;
    }
    cache_bytes = 0;
    pthread_mutex_unlock(&cache_lock);
}

int64_t clipl_cached_bytes(void)
{
    pthread_mutex_lock(&cache_lock);
    int64_t n = (int64_t)cache_bytes;
    pthread_mutex_unlock(&cache_lock);
    return n;
}

void *clipl__alloc(size_t nbytes)
{
    size_t rounded = round_size(nbytes);
    void *p = cache_take(rounded);
    if (!p)
        p = aligned_alloc(64, rounded);
    if (!p) {
        clipl__err(CLIPL_ENOMEM, "out of memory allocating %zu bytes", nbytes);
        return NULL;
    }
    count_bytes((int64_t)nbytes);
    return p;
}

void *clipl__calloc(size_t nbytes)
{
    void *p = clipl__alloc(nbytes);
    if (p)
        memset(p, 0, nbytes);
    return p;
}

void clipl__free(void *p, size_t nbytes)
{
    if (!p)
        return;
    if (!cache_put(p, round_size(nbytes)))
        free(p);
    count_bytes(-(int64_t)nbytes);
}
