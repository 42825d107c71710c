/*
 * dnnl_util.h - what the oneDNN-backed ops share (internal): the engine, per-thread streams and
 * scratchpads, the primitive cache, status conversion and memory descriptors from tensors.
 */
#ifndef CLIPL_DNNL_UTIL_H
#define CLIPL_DNNL_UTIL_H

#include "internal.h"

#include <oneapi/dnnl/dnnl.h>

/* The process-wide CPU engine (created on first use; thread-safe). NULL on failure, with the
 * error set naming op. */
dnnl_engine_t clipl__dnnl_engine(const char *op);

/* Converts a oneDNN status into a clipl error "op: what: oneDNN status" (returns CLIPL_OK for
 * dnnl_success, CLIPL_EUNSUPPORTED for dnnl_unimplemented, else CLIPL_EDNNL). */
int clipl__dnnl_check(dnnl_status_t st, const char *op, const char *what);

/* oneDNN data type of a clipl dtype (dnnl_data_type_undef for non-float types). */
dnnl_data_type_t clipl__dnnl_dt(int dtype);
/* Checks that t is f32 or bf16; error names op and the argument. */
int clipl__dnnl_check_float(const clipl_tensor *t, const char *op, const char *arg);

/* A memory descriptor with t's shape and strides (the data handle is t->ptr). Zero-size dims are
 * refused by the callers before this. */
int clipl__dnnl_md(dnnl_memory_desc_t *md, const clipl_tensor *t, const char *op);
/* The same for an explicit geometry. */
int clipl__dnnl_md_dims(dnnl_memory_desc_t *md, int ndim, const int64_t *shape,
                        const int64_t *strides, int dtype, const char *op);

/* ---- primitive cache ---------------------------------------------------------------------------
 * A key is a string of int64 words: the op kind, dtypes, shapes, strides and attributes. */
enum { CLIPL__KEY_MAX = 160 };
typedef struct clipl__key {
    int n;
    int64_t w[CLIPL__KEY_MAX];
} clipl__key;

void clipl__key_init(clipl__key *k, const char *op);
void clipl__key_add(clipl__key *k, int64_t v);
void clipl__key_addf(clipl__key *k, double v);
/* Adds dtype, ndim, shape and strides of t (or a marker when t is NULL). */
void clipl__key_tensor(clipl__key *k, const clipl_tensor *t);
void clipl__key_md(clipl__key *k, const dnnl_memory_desc_t *md);

/* A cached primitive with its descriptor. Entries are refcounted: get/put hand out a reference
 * that the op releases with clipl__prim_release after executing. */
typedef struct clipl__prim {
    dnnl_primitive_t prim;
    const_dnnl_primitive_desc_t pd; /* owned by prim */
    size_t scratch_bytes;
} clipl__prim;

/* Returns the cached primitive for key (a reference) or NULL. */
clipl__prim *clipl__prim_get(const clipl__key *k);
/* Creates a primitive from pd (takes ownership of pd, destroys it in every case), caches it under
 * key and returns a reference; NULL with the error set on failure. */
clipl__prim *clipl__prim_put(const clipl__key *k, dnnl_primitive_desc_t pd, const char *op);
void clipl__prim_release(clipl__prim *p);
/* The primitive of an op descriptor (desc, e.g. a dnnl_softmax_v2_desc_t *) with default
 * attributes, created and cached under key; what names it in errors. A reference, or NULL with
 * the error set. For primitives without post-ops: softmax, norms, pooling, eltwise. */
clipl__prim *clipl__prim_new(const clipl__key *k, const void *desc, const char *op,
                             const char *what);

/* Executes p with the given arguments (DNNL_ARG_SCRATCHPAD is added from this thread's
 * scratchpad) on this thread's stream and waits. */
typedef struct clipl__arg {
    int arg;
    const dnnl_memory_desc_t *md;
    void *ptr;
} clipl__arg;
int clipl__prim_exec(clipl__prim *p, int nargs, const clipl__arg *args, const char *op);

/* Name of the implementation oneDNN chose (e.g. "brg:avx512_core_amx"). */
const char *clipl__prim_impl(const clipl__prim *p);

/* Reorders between two descriptions of the same data (cached like any primitive). */
int clipl__dnnl_reorder(const dnnl_memory_desc_t *src_md, const void *src,
                        const dnnl_memory_desc_t *dst_md, void *dst, const char *op);

/* oneDNN post-op / eltwise algorithm for a clipl_act; alpha/beta adjusted (quick_gelu). Returns
 * 0 and sets an error naming op for an unknown act. */
int clipl__dnnl_act(int act, float *alpha, float *beta, dnnl_alg_kind_t *alg, const char *op);
/* Appends act to post-ops (nothing for CLIPL_ACT_NONE). */
int clipl__dnnl_append_act(dnnl_post_ops_t po, int act, float alpha, float beta, const char *op);

/* A new attr with user scratchpad mode (and post-ops when po is not NULL). */
int clipl__dnnl_attr(dnnl_primitive_attr_t *attr, dnnl_post_ops_t po, const char *op);

/* Matmul on prepared descriptors (shared by matmul, linear and attention). The memory descs
 * describe the buffers; weights_md may be a blocked layout. */
typedef struct clipl__mm {
    const dnnl_memory_desc_t *src_md, *wei_md, *bias_md, *dst_md;
    const void *src, *wei, *bias;
    void *dst;
    int act;
    float alpha, beta, scale, sum_scale;
    int sum;                             /* add into dst's current contents */
    const dnnl_memory_desc_t *binary_md; /* optional binary add post-op (attention mask) */
    const void *binary;
    int no_ref; /* refuse oneDNN's reference kernel (CLIPL_EUNSUPPORTED): the caller has a faster
                   fallback, such as copying strided inputs */
} clipl__mm;
int clipl__matmul_run(const clipl__mm *mm, const char *op);

/* ---- channels-last (NHWC) activations ------------------------------------------------------
 * A tensor [N, C, H, W] whose memory is ordered N, H, W, C (strides {HWC, 1, WC, C}): a plain
 * strided view, so any op can read it; convolutions and pooling run on it without reorders. */

/* New uninitialised [N, C, H, W] tensor of dtype laid out channels-last. New reference or NULL. */
clipl_tensor *clipl__tensor_empty_nhwc(int dtype, const int64_t *shape);
/* 1 when t is a dense channels-last [N, C, H, W] tensor (size-1 dims' strides ignored). */
int clipl__tensor_is_nhwc(const clipl_tensor *t);
/* A new channels-last copy of src [N, C, H, W] (f32 or bf16, any strides) in dtype (f32 or bf16;
 * bf16 rounds to nearest even), by one oneDNN reorder. *dst: new reference. */
int clipl__tensor_to_nhwc(const clipl_tensor *src, int dtype, clipl_tensor **dst);

/* Convolution weights prepared for channels-last activations of about n_hint x C x h_hint x
 * w_hint, with a residual accumulated in place (residual = 1) or without: the layout oneDNN picks
 * for that primitive, which the other batch sizes then keep. New handle (free with
 * clipl_conv2d_weights_free) or NULL. */
clipl_conv2d_weights *clipl__conv2d_prepare_nhwc(const clipl_tensor *weights,
                                                 const clipl_tensor *bias, int dtype,
                                                 const clipl_conv2d_opts *opts, int residual,
                                                 int64_t n_hint, int64_t h_hint, int64_t w_hint);
/* dst [N, O, OH, OW] channels-last in the weights' dtype = act(conv(src) + bias [+ acc]): src
 * [N, C, H, W] of any float dtype and layout (reordered once when not channels-last in the
 * weights' dtype). acc: NULL, or a writable channels-last dst-shaped tensor in the weights' dtype
 * holding the residual: the result overwrites it (sum post-op before the act) and *dst is acc
 * (retained). Inference only. *dst: new reference. */
int clipl__conv2d_apply_nhwc(const clipl_conv2d_weights *w, const clipl_tensor *src,
                             clipl_tensor *acc, clipl_tensor **dst);
/* clipl_pool2d that keeps a channels-last src channels-last in dst (any other src: as
 * clipl_pool2d). Inference only. *dst: new reference. */
int clipl__pool2d_nhwc(const clipl_tensor *src, clipl_tensor **dst, int kind, int64_t kh,
                       int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int ceil_mode);

#endif
