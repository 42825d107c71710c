/*
 * dnnl_util.c - the oneDNN engine, per-thread streams and scratchpads, the primitive cache and the
 * helpers the oneDNN-backed ops share.
 */
#include "dnnl_util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- engine and streams --------------------------------------------------------------------- */

static dnnl_engine_t g_engine;
static dnnl_status_t g_engine_status = dnnl_success;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;

static void engine_init(void)
{
    g_engine_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
    if (g_engine_status != dnnl_success)
        g_engine = NULL;
}

dnnl_engine_t clipl__dnnl_engine(const char *op)
{
    pthread_once(&g_engine_once, engine_init);
    if (!g_engine)
        clipl__dnnl_check(g_engine_status ? g_engine_status : dnnl_runtime_error, op,
                          "creating the CPU engine");
    return g_engine;
}

/* One stream and one scratchpad per thread of execution. Streams are small; a thread that ends
 * leaves its stream and scratchpad to the destructor below. */
typedef struct thread_state {
    dnnl_stream_t stream;
    void *scratch;
    size_t scratch_bytes;
} thread_state;

static pthread_key_t g_tls_key;
static pthread_once_t g_tls_once = PTHREAD_ONCE_INIT;

static void tls_free(void *p)
{
    thread_state *ts = p;
    if (!ts)
        return;
    if (ts->stream)
        dnnl_stream_destroy(ts->stream);
    free(ts->scratch);
    free(ts);
}

static void tls_init(void) { pthread_key_create(&g_tls_key, tls_free); }

static thread_state *thread_get(const char *op)
{
    pthread_once(&g_tls_once, tls_init);
    thread_state *ts = pthread_getspecific(g_tls_key);
    if (ts)
        return ts;
    dnnl_engine_t eng = clipl__dnnl_engine(op);
    if (!eng)
        return NULL;
    ts = calloc(1, sizeof *ts);
    if (!ts) {
        clipl__err(CLIPL_ENOMEM, "%s: out of memory for the stream state", op);
        return NULL;
    }
    dnnl_status_t st = dnnl_stream_create(&ts->stream, eng, dnnl_stream_default_flags);
    if (st != dnnl_success) {
        free(ts);
        clipl__dnnl_check(st, op, "creating a stream");
        return NULL;
    }
    pthread_setspecific(g_tls_key, ts);
    return ts;
}

static void *thread_scratch(thread_state *ts, size_t bytes, const char *op)
{
    if (bytes <= ts->scratch_bytes)
        return ts->scratch;
    free(ts->scratch);
    ts->scratch = NULL;
    ts->scratch_bytes = 0;
    /* 64-byte aligned, rounded up as aligned_alloc requires; not counted as tensor memory */
    size_t grow = (bytes + bytes / 4 + 63) / 64 * 64;
    ts->scratch = aligned_alloc(64, grow);
    if (!ts->scratch) {
        clipl__err(CLIPL_ENOMEM, "%s: out of memory for a %zu-byte scratchpad", op, bytes);
        return NULL;
    }
    ts->scratch_bytes = grow;
    return ts->scratch;
}

/* ---- statuses, dtypes, descriptors ---------------------------------------------------------- */

static const char *status_str(dnnl_status_t st)
{
    switch (st) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out of memory";
    case dnnl_invalid_arguments: return "invalid arguments";
    case dnnl_unimplemented: return "no implementation for these arguments";
    case dnnl_iterator_ends: return "iterator ends";
    case dnnl_runtime_error: return "runtime error";
    case dnnl_not_required: return "not required";
    default: return "unknown status";
    }
}

int clipl__dnnl_check(dnnl_status_t st, const char *op, const char *what)
{
    if (st == dnnl_success)
        return CLIPL_OK;
    int code = st == dnnl_unimplemented   ? CLIPL_EUNSUPPORTED
               : st == dnnl_out_of_memory ? CLIPL_ENOMEM
                                          : CLIPL_EDNNL;
    return clipl__err(code, "%s: %s: oneDNN: %s (status %d)", op, what, status_str(st), (int)st);
}

dnnl_data_type_t clipl__dnnl_dt(int dtype)
{
    switch (dtype) {
    case CLIPL_F32: return dnnl_f32;
    case CLIPL_BF16: return dnnl_bf16;
    case CLIPL_F16: return dnnl_f16;
    default: return dnnl_data_type_undef;
    }
}

int clipl__dnnl_check_float(const clipl_tensor *t, const char *op, const char *arg)
{
    if (!t)
        return clipl__err(CLIPL_EINVAL, "%s: %s is NULL", op, arg);
    if (t->dt != CLIPL_F32 && t->dt != CLIPL_BF16)
        return clipl__err(CLIPL_EINVAL, "%s: %s must be f32 or bf16, got %s", op, arg,
                          clipl_dtype_name(t->dt));
    return CLIPL_OK;
}

int clipl__dnnl_md_dims(dnnl_memory_desc_t *md, int ndim, const int64_t *shape,
                        const int64_t *strides, int dtype, const char *op)
{
    dnnl_dims_t d, s;
    if (ndim == 0) {
        d[0] = 1;
        s[0] = 1;
        ndim = 1;
    } else {
        for (int i = 0; i < ndim; i++) {
            d[i] = shape[i];
            /* oneDNN wants a valid stride even for size-1 dims; any value works there */
            s[i] = shape[i] == 1 && strides[i] == 0 ? 1 : strides[i];
        }
    }
    dnnl_status_t st = dnnl_memory_desc_init_by_strides(md, ndim, d, clipl__dnnl_dt(dtype), s);
    return clipl__dnnl_check(st, op, "memory descriptor");
}

int clipl__dnnl_md(dnnl_memory_desc_t *md, const clipl_tensor *t, const char *op)
{
    return clipl__dnnl_md_dims(md, t->ndim, t->shape, t->strides, t->dt, op);
}

/* ---- keys ----------------------------------------------------------------------------------- */

void clipl__key_init(clipl__key *k, const char *op)
{
    k->n = 0;
    /* the op name's bytes, 8 at a time */
    size_t len = strlen(op);
    for (size_t i = 0; i < len; i += 8) {
        int64_t w = 0;
        memcpy(&w, op + i, len - i < 8 ? len - i : 8);
        clipl__key_add(k, w);
    }
    clipl__key_add(k, -1);
}

void clipl__key_add(clipl__key *k, int64_t v)
{
    if (k->n < CLIPL__KEY_MAX)
        k->w[k->n] = v;
    k->n++; /* an overflowing key is never cached (see clipl__prim_get/put) */
}

void clipl__key_addf(clipl__key *k, double v)
{
    int64_t w;
    memcpy(&w, &v, sizeof w);
    clipl__key_add(k, w);
}

void clipl__key_tensor(clipl__key *k, const clipl_tensor *t)
{
    if (!t) {
        clipl__key_add(k, -2);
        return;
    }
    clipl__key_add(k, t->dt * 16 + t->ndim);
    for (int i = 0; i < t->ndim; i++) {
        clipl__key_add(k, t->shape[i]);
        clipl__key_add(k, t->strides[i]);
    }
}

void clipl__key_md(clipl__key *k, const dnnl_memory_desc_t *md)
{
    if (!md) {
        clipl__key_add(k, -2);
        return;
    }
    clipl__key_add(k, md->ndims * 4096 + md->data_type * 16 + md->format_kind);
    for (int i = 0; i < md->ndims; i++)
        clipl__key_add(k, md->dims[i]);
    if (md->format_kind == dnnl_blocked) {
        const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
        for (int i = 0; i < md->ndims; i++)
            clipl__key_add(k, b->strides[i]);
        clipl__key_add(k, b->inner_nblks);
        for (int i = 0; i < b->inner_nblks; i++)
            clipl__key_add(k, b->inner_blks[i] * 64 + b->inner_idxs[i]);
    }
    clipl__key_add(k, md->extra.flags);
}

static uint64_t key_hash(const clipl__key *k)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < k->n; i++) {
        h ^= (uint64_t)k->w[i];
        h *= 1099511628211ull;
        h ^= h >> 29;
    }
    return h;
}

/* ---- primitive cache ------------------------------------------------------------------------
 * A chained hash map under one mutex. Entries carry a use stamp; when the cache is full the least
 * recently used entry is dropped (its primitive is destroyed when the last user releases it). */

typedef struct entry {
    clipl__prim p; /* first, so a clipl__prim * is an entry * */
    struct entry *next;
    uint64_t hash;
    uint64_t stamp;
    int refs; /* the cache's own reference + users */
    int n;
    int64_t *words;
} entry;

enum { NBUCKETS = 512 };
static entry *g_buckets[NBUCKETS];
static pthread_mutex_t g_cache_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_capacity = 1024;
static int64_t g_entries, g_hits, g_misses;
static uint64_t g_clock;

static void entry_unref(entry *e)
{
    /* called with the mutex held */
    if (--e->refs == 0) {
        dnnl_primitive_destroy(e->p.prim);
        free(e->words);
        free(e);
    }
}

static void unlink_entry(entry *e)
{
    entry **pp = &g_buckets[e->hash % NBUCKETS];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    g_entries--;
    entry_unref(e);
}

static void evict_until(int64_t limit)
{
    while (g_entries > limit) {
        entry *oldest = NULL;
        for (int b = 0; b < NBUCKETS; b++)
            for (entry *e = g_buckets[b]; e; e = e->next)
                if (!oldest || e->stamp < oldest->stamp)
                    oldest = e;
        if (!oldest)
            break;
        unlink_entry(oldest);
    }
}

clipl__prim *clipl__prim_get(const clipl__key *k)
{
    if (k->n > CLIPL__KEY_MAX)
        return NULL;
    uint64_t h = key_hash(k);
    clipl__prim *found = NULL;
    pthread_mutex_lock(&g_cache_mu);
    for (entry *e = g_buckets[h % NBUCKETS]; e; e = e->next) {
        if (e->hash == h && e->n == k->n &&
            memcmp(e->words, k->w, sizeof(int64_t) * (size_t)k->n) == 0) {
            e->refs++;
            e->stamp = ++g_clock;
            found = &e->p;
            break;
        }
    }
    if (found)
        g_hits++;
    else
        g_misses++;
    pthread_mutex_unlock(&g_cache_mu);
    return found;
}

clipl__prim *clipl__prim_put(const clipl__key *k, dnnl_primitive_desc_t pd, const char *op)
{
    entry *e = calloc(1, sizeof *e);
    if (!e) {
        dnnl_primitive_desc_destroy(pd);
        clipl__err(CLIPL_ENOMEM, "%s: out of memory for a primitive", op);
        return NULL;
    }
    dnnl_status_t st = dnnl_primitive_create(&e->p.prim, pd);
    if (st == dnnl_success) {
        const dnnl_memory_desc_t *smd =
            dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        e->p.scratch_bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
        dnnl_primitive_get_primitive_desc(e->p.prim, &e->p.pd);
    }
    dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) {
        free(e);
        clipl__dnnl_check(st, op, "creating the primitive");
        return NULL;
    }
    e->refs = 1; /* the caller's */
    if (k->n > CLIPL__KEY_MAX)
        return &e->p; /* not cacheable: released after use */
    e->n = k->n;
    e->words = malloc(sizeof(int64_t) * (size_t)k->n);
    if (!e->words)
        return &e->p;
    memcpy(e->words, k->w, sizeof(int64_t) * (size_t)k->n);
    e->hash = key_hash(k);
    pthread_mutex_lock(&g_cache_mu);
    e->refs++;
    e->stamp = ++g_clock;
    e->next = g_buckets[e->hash % NBUCKETS];
    g_buckets[e->hash % NBUCKETS] = e;
    g_entries++;
    evict_until(g_capacity);
    pthread_mutex_unlock(&g_cache_mu);
    return &e->p;
}

clipl__prim *clipl__prim_new(const clipl__key *k, const void *desc, const char *op,
                             const char *what)
{
    dnnl_engine_t eng = clipl__dnnl_engine(op);
    dnnl_primitive_attr_t attr;
    dnnl_primitive_desc_t pd;
    if (!eng || clipl__dnnl_attr(&attr, NULL, op))
        return NULL;
    int rc = clipl__dnnl_check(dnnl_primitive_desc_create(&pd, desc, attr, eng, NULL), op, what);
    dnnl_primitive_attr_destroy(attr);
    return rc ? NULL : clipl__prim_put(k, pd, op);
}

void clipl__prim_release(clipl__prim *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&g_cache_mu);
    entry_unref((entry *)p);
    pthread_mutex_unlock(&g_cache_mu);
}

int clipl_dnnl_cache_stats(int64_t *entries, int64_t *hits, int64_t *misses)
{
    pthread_mutex_lock(&g_cache_mu);
    if (entries)
        *entries = g_entries;
    if (hits)
        *hits = g_hits;
    if (misses)
        *misses = g_misses;
    pthread_mutex_unlock(&g_cache_mu);
    return CLIPL_OK;
}

int clipl_dnnl_cache_set_capacity(int capacity)
{
    if (capacity <= 0)
        return clipl__err(CLIPL_EINVAL, "dnnl_cache_set_capacity: capacity must be > 0, got %d",
                          capacity);
    pthread_mutex_lock(&g_cache_mu);
    g_capacity = capacity;
    evict_until(g_capacity);
    pthread_mutex_unlock(&g_cache_mu);
    return CLIPL_OK;
}

void clipl_dnnl_cache_clear(void)
{
    pthread_mutex_lock(&g_cache_mu);
    evict_until(0);
    pthread_mutex_unlock(&g_cache_mu);
}

const char *clipl__prim_impl(const clipl__prim *p)
{
    const char *s = NULL;
    if (dnnl_primitive_desc_query(p->pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s)
        return "?";
    return s;
}

/* ---- execution ------------------------------------------------------------------------------ */

enum { MAX_ARGS = 16 };

int clipl__prim_exec(clipl__prim *p, int nargs, const clipl__arg *args, const char *op)
{
    thread_state *ts = thread_get(op);
    if (!ts)
        return clipl_errcode();
    dnnl_engine_t eng = clipl__dnnl_engine(op);
    dnnl_exec_arg_t ea[MAX_ARGS];
    dnnl_memory_t mem[MAX_ARGS];
    int n = 0, rc = CLIPL_OK;
    dnnl_status_t st;
    if (nargs + 1 > MAX_ARGS)
        return clipl__err(CLIPL_EINVAL, "%s: too many primitive arguments", op);
    for (int i = 0; i < nargs; i++) {
        st = dnnl_memory_create(&mem[n], args[i].md, eng, args[i].ptr);
        if (st != dnnl_success) {
            rc = clipl__dnnl_check(st, op, "wrapping a buffer");
            goto done;
        }
        ea[n].arg = args[i].arg;
        ea[n].memory = mem[n];
        n++;
    }
    if (p->scratch_bytes) {
        void *s = thread_scratch(ts, p->scratch_bytes, op);
        if (!s) {
            rc = clipl_errcode();
            goto done;
        }
        const dnnl_memory_desc_t *smd =
            dnnl_primitive_desc_query_md(p->pd, dnnl_query_scratchpad_md, 0);
        st = dnnl_memory_create(&mem[n], smd, eng, s);
        if (st != dnnl_success) {
            rc = clipl__dnnl_check(st, op, "wrapping the scratchpad");
            goto done;
        }
        ea[n].arg = DNNL_ARG_SCRATCHPAD;
        ea[n].memory = mem[n];
        n++;
    }
    st = dnnl_primitive_execute(p->prim, ts->stream, n, ea);
    if (st == dnnl_success)
        st = dnnl_stream_wait(ts->stream);
    if (st != dnnl_success)
        rc = clipl__dnnl_check(st, op, "executing");
done:
    for (int i = 0; i < n; i++)
        dnnl_memory_destroy(mem[i]);
    return rc;
}

int clipl__dnnl_attr(dnnl_primitive_attr_t *attr, dnnl_post_ops_t po, const char *op)
{
    dnnl_status_t st = dnnl_primitive_attr_create(attr);
    if (st != dnnl_success)
        return clipl__dnnl_check(st, op, "creating attributes");
    st = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
    if (st == dnnl_success && po)
        st = dnnl_primitive_attr_set_post_ops(*attr, po);
    if (st != dnnl_success) {
        dnnl_primitive_attr_destroy(*attr);
        *attr = NULL;
        return clipl__dnnl_check(st, op, "setting attributes");
    }
    return CLIPL_OK;
}

int clipl__dnnl_reorder(const dnnl_memory_desc_t *src_md, const void *src,
                        const dnnl_memory_desc_t *dst_md, void *dst, const char *op)
{
    clipl__key k;
    clipl__key_init(&k, "reorder");
    clipl__key_md(&k, src_md);
    clipl__key_md(&k, dst_md);
    clipl__prim *p = clipl__prim_get(&k);
    if (!p) {
        dnnl_engine_t eng = clipl__dnnl_engine(op);
        if (!eng)
            return clipl_errcode();
        dnnl_primitive_attr_t attr;
        int rc = clipl__dnnl_attr(&attr, NULL, op);
        if (rc)
            return rc;
        dnnl_primitive_desc_t pd;
        dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, src_md, eng, dst_md, eng, attr);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success)
            return clipl__dnnl_check(st, op, "reorder");
        p = clipl__prim_put(&k, pd, op);
        if (!p)
            return clipl_errcode();
    }
    clipl__arg args[2] = {{DNNL_ARG_FROM, src_md, (void *)src}, {DNNL_ARG_TO, dst_md, dst}};
    int rc = clipl__prim_exec(p, 2, args, op);
    clipl__prim_release(p);
    return rc;
}

/* ---- activations ---------------------------------------------------------------------------- */

static const char *const act_names[CLIPL_ACT_COUNT] = {
    "none", "relu", "gelu",  "gelu_tanh", "quick_gelu", "sigmoid", "tanh",   "exp",     "log",
    "sqrt", "abs",  "clamp", "linear",    "pow",        "swish",   "square", "softplus"};

const char *clipl_act_name(int act)
{
    return act >= 0 && act < CLIPL_ACT_COUNT ? act_names[act] : "?";
}

int clipl_act_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < CLIPL_ACT_COUNT; i++)
        if (strcmp(name, act_names[i]) == 0)
            return i;
    return -1;
}

int clipl__dnnl_act(int act, float *alpha, float *beta, dnnl_alg_kind_t *alg, const char *op)
{
    switch (act) {
    case CLIPL_ACT_RELU: *alg = dnnl_eltwise_relu, *alpha = 0, *beta = 0; break;
    case CLIPL_ACT_GELU: *alg = dnnl_eltwise_gelu_erf; break;
    case CLIPL_ACT_GELU_TANH: *alg = dnnl_eltwise_gelu_tanh; break;
    case CLIPL_ACT_QUICK_GELU: *alg = dnnl_eltwise_swish, *alpha = 1.702f; break;
    case CLIPL_ACT_SIGMOID: *alg = dnnl_eltwise_logistic; break;
    case CLIPL_ACT_TANH: *alg = dnnl_eltwise_tanh; break;
    case CLIPL_ACT_EXP: *alg = dnnl_eltwise_exp; break;
    case CLIPL_ACT_LOG: *alg = dnnl_eltwise_log; break;
    case CLIPL_ACT_SQRT: *alg = dnnl_eltwise_sqrt; break;
    case CLIPL_ACT_ABS: *alg = dnnl_eltwise_abs; break;
    case CLIPL_ACT_CLAMP: *alg = dnnl_eltwise_clip_v2; break;
    case CLIPL_ACT_LINEAR: *alg = dnnl_eltwise_linear; break;
    case CLIPL_ACT_POW: *alg = dnnl_eltwise_pow; break;
    case CLIPL_ACT_SWISH: *alg = dnnl_eltwise_swish; break;
    case CLIPL_ACT_SQUARE: *alg = dnnl_eltwise_square; break;
    case CLIPL_ACT_SOFTPLUS: *alg = dnnl_eltwise_soft_relu; break;
    default: return clipl__err(CLIPL_EINVAL, "%s: unknown activation %d", op, act);
    }
    return CLIPL_OK;
}

int clipl__dnnl_append_act(dnnl_post_ops_t po, int act, float alpha, float beta, const char *op)
{
    if (act == CLIPL_ACT_NONE)
        return CLIPL_OK;
    dnnl_alg_kind_t alg;
    int rc = clipl__dnnl_act(act, &alpha, &beta, &alg, op);
    if (rc)
        return rc;
    return clipl__dnnl_check(dnnl_post_ops_append_eltwise(po, 1.0f, alg, alpha, beta), op,
                             "activation post-op");
}

/* ---- matmul on descriptors ------------------------------------------------------------------ */

int clipl__matmul_run(const clipl__mm *mm, const char *op)
{
    float scale = mm->scale == 0 ? 1.0f : mm->scale;
    float sum_scale = mm->sum_scale == 0 ? 1.0f : mm->sum_scale;
    clipl__key k;
    clipl__key_init(&k, "matmul");
    clipl__key_md(&k, mm->src_md);
    clipl__key_md(&k, mm->wei_md);
    clipl__key_md(&k, mm->bias_md);
    clipl__key_md(&k, mm->dst_md);
    clipl__key_md(&k, mm->binary_md);
    clipl__key_add(&k, mm->act * 4 + (mm->sum ? 1 : 0));
    clipl__key_addf(&k, mm->alpha);
    clipl__key_addf(&k, mm->beta);
    clipl__key_addf(&k, scale);
    clipl__key_addf(&k, sum_scale);
    clipl__prim *p = clipl__prim_get(&k);
    int rc = CLIPL_OK;
    if (!p) {
        dnnl_engine_t eng = clipl__dnnl_engine(op);
        if (!eng)
            return clipl_errcode();
        dnnl_post_ops_t po = NULL;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_matmul_desc_t desc;
        dnnl_status_t st = dnnl_post_ops_create(&po);
        if (st != dnnl_success)
            return clipl__dnnl_check(st, op, "post-ops");
        if (mm->binary_md)
            rc = clipl__dnnl_check(dnnl_post_ops_append_binary(po, dnnl_binary_add, mm->binary_md),
                                   op, "mask post-op");
        if (!rc)
            rc = clipl__dnnl_append_act(po, mm->act, mm->alpha, mm->beta, op);
        if (!rc && mm->sum)
            rc = clipl__dnnl_check(dnnl_post_ops_append_sum(po, sum_scale), op, "sum post-op");
        if (!rc)
            rc = clipl__dnnl_attr(&attr, po, op);
        if (!rc && scale != 1.0f)
            rc = clipl__dnnl_check(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &scale), op,
                                   "output scale");
        if (!rc)
            rc = clipl__dnnl_check(
                dnnl_matmul_desc_init(&desc, mm->src_md, mm->wei_md, mm->bias_md, mm->dst_md), op,
                "matmul descriptor");
        if (!rc)
            rc = clipl__dnnl_check(dnnl_primitive_desc_create(&pd, &desc, attr, eng, NULL), op,
                                   "matmul primitive descriptor");
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        dnnl_post_ops_destroy(po);
        if (rc)
            return rc;
        p = clipl__prim_put(&k, pd, op);
        if (!p)
            return clipl_errcode();
    }
    if (mm->no_ref && strncmp(clipl__prim_impl(p), "ref", 3) == 0) {
        clipl__prim_release(p);
        return clipl__err(CLIPL_EUNSUPPORTED,
                          "%s: only oneDNN's reference kernel takes these "
                          "strides",
                          op);
    }
    clipl__arg args[5];
    int n = 0;
    args[n++] = (clipl__arg){DNNL_ARG_SRC, mm->src_md, (void *)mm->src};
    args[n++] = (clipl__arg){DNNL_ARG_WEIGHTS, mm->wei_md, (void *)mm->wei};
    if (mm->bias_md)
        args[n++] = (clipl__arg){DNNL_ARG_BIAS, mm->bias_md, (void *)mm->bias};
    args[n++] = (clipl__arg){DNNL_ARG_DST, mm->dst_md, mm->dst};
    if (mm->binary_md)
        args[n++] = (clipl__arg){DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, mm->binary_md,
                                 (void *)mm->binary};
    rc = clipl__prim_exec(p, n, args, op);
    clipl__prim_release(p);
    return rc;
}

/* ---- channels-last tensors ------------------------------------------------------------------ */

clipl_tensor *clipl__tensor_empty_nhwc(int dtype, const int64_t *shape)
{
    int64_t nhwc[4] = {shape[0], shape[2], shape[3], shape[1]};
    clipl_tensor *t = clipl_tensor_empty(dtype, 4, nhwc), *v = NULL;
    if (!t)
        return NULL;
    int rc = clipl_tensor_permute(t, &v, 4, (const int[]){0, 3, 1, 2});
    clipl_tensor_release(t);
    return rc ? NULL : v;
}

int clipl__tensor_is_nhwc(const clipl_tensor *t)
{
    if (t->ndim != 4)
        return 0;
    const int64_t *s = t->shape, *st = t->strides;
    int64_t want[4] = {s[1] * s[2] * s[3], 1, s[3] * s[1], s[1]};
    for (int i = 0; i < 4; i++)
        if (s[i] != 1 && st[i] != want[i])
            return 0;
    return 1;
}

static inline float load_f(const void *p, int dt, int64_t i)
{
    return dt == CLIPL_BF16 ? clipl__bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* out[n, h, w, c] = src[n, c, h, w] for contiguous src of few channels (images: C = 3). */
static void few_channels_to_nhwc(const clipl_tensor *src, clipl_tensor *out)
{
    int64_t N = src->shape[0], C = src->shape[1], HW = src->shape[2] * src->shape[3];
    int sdt = src->dt, ddt = out->dt;
    const void *s = src->ptr;
    void *d = out->ptr;
#pragma omp parallel for if (N * C * HW > 65536) schedule(static)
    for (int64_t r = 0; r < N * HW; r++) {
        int64_t n = r / HW, j = r % HW;
        for (int64_t c = 0; c < C; c++) {
            float v = load_f(s, sdt, (n * C + c) * HW + j);
            if (ddt == CLIPL_BF16)
                ((uint16_t *)d)[r * C + c] = clipl__f32_to_bf16(v);
            else
                ((float *)d)[r * C + c] = v;
        }
    }
}

int clipl__tensor_to_nhwc(const clipl_tensor *src, int dtype, clipl_tensor **dst)
{
    const char *op = "to_nhwc";
    int rc = clipl__dnnl_check_float(src, op, "src");
    if (rc)
        return rc;
    if (src->ndim != 4 || (dtype != CLIPL_F32 && dtype != CLIPL_BF16))
        return clipl__err(CLIPL_EINVAL, "%s: src must be [N, C, H, W] and dtype f32 or bf16", op);
    clipl_tensor *out = clipl__tensor_empty_nhwc(dtype, src->shape);
    if (!out)
        return clipl_errcode();
    dnnl_memory_desc_t smd, dmd;
    if (src->shape[1] <= 4 && clipl_tensor_is_contiguous(src))
        few_channels_to_nhwc(src, out); /* oneDNN's reorder is slow for a few channels */
    else if (clipl_tensor_numel(out) > 0 &&
             (!(rc = clipl__dnnl_md(&smd, src, op)) && !(rc = clipl__dnnl_md(&dmd, out, op))))
        rc = clipl__dnnl_reorder(&smd, src->ptr, &dmd, out->ptr, op);
    if (rc) {
        clipl_tensor_release(out);
        return rc;
    }
    *dst = out;
    return CLIPL_OK;
}
