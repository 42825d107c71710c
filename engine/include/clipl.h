/*
 * clipl.h - the flat C API of libclipl.
 *
 * This header is the single source of truth for the FFI boundary: at build time CMake strips the
 * preprocessor lines and the CLIPL_API macro and hands the rest to LuaJIT's ffi.cdef
 * (lua/clipl/cdef.lua). Keep it to plain C declarations: no macros in declarations other than
 * CLIPL_API, no varargs, no structs passed by value, no callbacks.
 *
 * Conventions
 *   - Constructors return a new reference or NULL; everything else returns an int status
 *     (CLIPL_OK = 0, a negative clipl_status on error). On error, clipl_errmsg() says what went
 *     wrong, naming the op, argument, tensor or file at fault.
 *   - Ops take inputs first, then the output slot (`clipl_tensor **dst`, which receives a new
 *     reference), then options. Inputs are borrowed.
 *   - Dims and indices are 0-based in C (the Lua layer converts from 1-based); negative dims count
 *     from the end.
 *   - "new reference": the caller owns one reference and must release it.
 *     "borrowed": valid while the argument it came from is alive.
 */
#ifndef CLIPL_H
#define CLIPL_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CLIPL_API __attribute__((visibility("default")))
#else
#define CLIPL_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== core: version, errors, threads, memory ================================================= */

typedef enum clipl_status {
    CLIPL_OK = 0,
    CLIPL_EINVAL = -1,       /* invalid argument (bad dim, bad option, wrong dtype) */
    CLIPL_ESHAPE = -2,       /* shapes do not fit together */
    CLIPL_EINDEX = -3,       /* index out of range */
    CLIPL_ENOMEM = -4,       /* out of memory */
    CLIPL_EIO = -5,          /* a file could not be opened, read or written */
    CLIPL_EFORMAT = -6,      /* a file or buffer is corrupt, truncated or of the wrong kind */
    CLIPL_EUNSUPPORTED = -7, /* valid but not supported (yet) */
    CLIPL_EDNNL = -8,        /* oneDNN refused or failed */
    CLIPL_EIMAGE = -9,       /* libvips could not decode or process an image */
    CLIPL_EINTERRUPTED = -10 /* stopped by clipl_interrupt() */
} clipl_status;

/* Version string of the library, e.g. "0.1.0". Borrowed (static). */
CLIPL_API const char *clipl_version(void);

/* Message of the last error on this thread ("" when none). Borrowed; valid until the next call that
 * fails on this thread. */
CLIPL_API const char *clipl_errmsg(void);
/* Status code of the last error on this thread (CLIPL_OK when none). */
CLIPL_API int clipl_errcode(void);
/* Clears this thread's error. */
CLIPL_API void clipl_errclear(void);

/* Number of threads used by oneDNN (OpenMP) and libvips. n <= 0 means all cores. */
CLIPL_API int clipl_set_num_threads(int n);
CLIPL_API int clipl_get_num_threads(void);

/* Bytes currently held by live tensor storages allocated by clipl (mmapped files not counted). */
CLIPL_API int64_t clipl_live_bytes(void);
/* Bytes currently mapped from files by live storages. */
CLIPL_API int64_t clipl_mapped_bytes(void);
/* Highest clipl_live_bytes() seen since start or since clipl_reset_peak_bytes(). */
CLIPL_API int64_t clipl_peak_bytes(void);
CLIPL_API void clipl_reset_peak_bytes(void);
/* Freed blocks of 1 MiB or more are kept (up to 256 MiB) and reused for allocations of the same
 * size, so loops that make same-shaped tensors skip fresh-memory page faults. Bytes kept, and
 * releasing them to the system. */
CLIPL_API int64_t clipl_cached_bytes(void);
CLIPL_API void clipl_memory_trim(void);

/* Asks long-running calls (on any thread) to stop at the next check point with
 * CLIPL_EINTERRUPTED; clipl_interrupt(0) clears the request. Safe from a signal handler. */
CLIPL_API void clipl_interrupt(int on);
CLIPL_API int clipl_interrupted(void);

/* ==== core: tensors ========================================================================== */

typedef enum clipl_dtype {
    CLIPL_F32 = 0,
    CLIPL_BF16 = 1,
    CLIPL_F16 = 2,
    CLIPL_I32 = 3,
    CLIPL_I64 = 4,
    CLIPL_U8 = 5
} clipl_dtype;

enum { CLIPL_MAX_DIMS = 8 };

typedef struct clipl_storage clipl_storage;
typedef struct clipl_autograd clipl_autograd;

/* A tensor: a POD header (dtype, shape, strides in elements, offset) over a refcounted storage.
 * Views share the storage and hold a reference to it. Lua reads the header fields directly; only
 * the library writes them. Field names avoid the Lua method names (t:dtype(), t:stride(), t:data())
 * because LuaJIT resolves struct fields before metatable methods. */
typedef struct clipl_tensor {
    int32_t dt;                      /* clipl_dtype */
    int32_t ndim;                    /* 0 .. CLIPL_MAX_DIMS */
    int64_t shape[CLIPL_MAX_DIMS];   /* sizes; entries past ndim are 1 */
    int64_t strides[CLIPL_MAX_DIMS]; /* in elements; entries past ndim are 0 */
    int64_t offset;                  /* of element 0 from the storage start, in elements */
    void *ptr;                       /* address of element 0 (storage base + offset) */
    clipl_storage *storage;          /* owning storage (one reference held) */
    int32_t refcount;                /* references to this header */
    int32_t flags;                   /* CLIPL_TF_* bits */
    clipl_autograd *ag;              /* autograd state, NULL when not tracked */
} clipl_tensor;

enum {
    CLIPL_TF_READONLY = 1,     /* storage is a read-only mapping: writes are refused */
    CLIPL_TF_REQUIRES_GRAD = 2 /* the tensor requires grad (engine/autograd) */
};

/* Size in bytes of one element of dtype (0 for an unknown dtype). */
CLIPL_API int clipl_dtype_size(int dtype);
/* Name of a dtype ("f32", "bf16", "f16", "i32", "i64", "u8"); "?" for an unknown one. Borrowed. */
CLIPL_API const char *clipl_dtype_name(int dtype);
/* dtype for a name as above (also "float32", "bfloat16", "float16", "int32", "int64", "uint8"), or
 * -1. */
CLIPL_API int clipl_dtype_from_name(const char *name);

/* Adds a reference to t and returns t. */
CLIPL_API clipl_tensor *clipl_tensor_retain(clipl_tensor *t);
/* Drops a reference; frees the header (and the storage's reference) at zero. NULL is ignored. */
CLIPL_API void clipl_tensor_release(clipl_tensor *t);
/* Frees the memory behind t now when t's header has no other reference: t becomes an empty 1-d
 * tensor of size 0 over no data (still a valid header, so later use is an error, not a crash).
 * Returns 1 when memory was given up, 0 when other references keep the header alive. */
CLIPL_API int clipl_tensor_reset(clipl_tensor *t);

/* New contiguous tensor, uninitialised (empty: contents undefined) or zero-filled (zeros).
 * shape: ndim sizes (>= 0).
 * New reference or NULL. */
CLIPL_API clipl_tensor *clipl_tensor_empty(int dtype, int ndim, const int64_t *shape);
CLIPL_API clipl_tensor *clipl_tensor_zeros(int dtype, int ndim, const int64_t *shape);
/* New contiguous tensor holding a copy of nbytes at src (nbytes must equal numel * dtype size).
 * New reference or NULL. */
CLIPL_API clipl_tensor *clipl_tensor_from_data(int dtype, int ndim, const int64_t *shape,
                                               const void *src, size_t nbytes);
/* A tensor over an existing storage with the given geometry (checked against the storage's size).
 * New reference or NULL. */
CLIPL_API clipl_tensor *clipl_tensor_new_view(clipl_storage *storage, int dtype, int ndim,
                                              const int64_t *shape, const int64_t *stride,
                                              int64_t offset);

/* Number of elements (product of shape; 1 for 0-d). */
CLIPL_API int64_t clipl_tensor_numel(const clipl_tensor *t);
/* 1 when the strides are the row-major strides of the shape (size-1 dims ignored), else 0. */
CLIPL_API int clipl_tensor_is_contiguous(const clipl_tensor *t);
/* The storage of t. Borrowed. */
CLIPL_API clipl_storage *clipl_tensor_storage(const clipl_tensor *t);
/* Moves t's data into storage s at element offset and re-points t there, in place: t's elements
 * are copied (row-major, t's dtype) to s, then the header becomes contiguous over s (retained; the
 * old storage loses t's reference), writable, and every holder of t sees the new place. s must be
 * writable and hold the elements from offset on. Optimizers pack their parameters with it. */
CLIPL_API int clipl_tensor_rebind(clipl_tensor *t, clipl_storage *s, int64_t offset);

/* ---- views (no copy; dst shares t's storage) ---- */
/* dst = t narrowed along dim to [start, start + length). */
CLIPL_API int clipl_tensor_narrow(const clipl_tensor *t, clipl_tensor **dst, int dim, int64_t start,
                                  int64_t length);
/* dst = t with dim removed at index. */
CLIPL_API int clipl_tensor_select(const clipl_tensor *t, clipl_tensor **dst, int dim,
                                  int64_t index);
/* dst = t with dims d0 and d1 swapped. */
CLIPL_API int clipl_tensor_transpose(const clipl_tensor *t, clipl_tensor **dst, int d0, int d1);
/* dst = t with dims reordered: dst dim i is t dim perm[i]. n must equal t->ndim. */
CLIPL_API int clipl_tensor_permute(const clipl_tensor *t, clipl_tensor **dst, int n,
                                   const int *perm);
/* dst = t viewed with a new shape (one entry may be -1); fails with CLIPL_ESHAPE when the strides
 * do not allow a view. */
CLIPL_API int clipl_tensor_view(const clipl_tensor *t, clipl_tensor **dst, int ndim,
                                const int64_t *shape);
/* Like view, but copies when a view is impossible. */
CLIPL_API int clipl_tensor_reshape(const clipl_tensor *t, clipl_tensor **dst, int ndim,
                                   const int64_t *shape);
/* dst = t broadcast to shape (size-1 or new leading dims get stride 0; -1 keeps a size). */
CLIPL_API int clipl_tensor_expand(const clipl_tensor *t, clipl_tensor **dst, int ndim,
                                  const int64_t *shape);
/* dst = t with a size-1 dim inserted at dim (0..ndim). */
CLIPL_API int clipl_tensor_unsqueeze(const clipl_tensor *t, clipl_tensor **dst, int dim);
/* dst = t without dim (which must have size 1); dim = CLIPL_ALL_DIMS removes every size-1 dim. */
CLIPL_API int clipl_tensor_squeeze(const clipl_tensor *t, clipl_tensor **dst, int dim);
enum { CLIPL_ALL_DIMS = 1000 };

/* ---- copies ---- */
/* dst = t itself (a new reference) when contiguous, else a contiguous copy. */
CLIPL_API int clipl_tensor_contiguous(const clipl_tensor *t, clipl_tensor **dst);
/* dst = a contiguous copy of t. */
CLIPL_API int clipl_tensor_clone(const clipl_tensor *t, clipl_tensor **dst);
/* dst = t converted to dtype (a contiguous copy; float -> bf16/f16 rounds to nearest even;
 * float -> integer truncates toward zero). */
CLIPL_API int clipl_tensor_to(const clipl_tensor *t, clipl_tensor **dst, int dtype);
/* Copies src into dst elementwise (any strides, any dtypes; src broadcast to dst's shape). */
CLIPL_API int clipl_tensor_copy_(clipl_tensor *dst, const clipl_tensor *src);
/* Sets every element of dst to value (converted to dst's dtype). */
CLIPL_API int clipl_tensor_fill_(clipl_tensor *dst, double value);

/* ---- element access (slow; for printing, tests and scalars) ---- */
/* Element at a flat row-major index (0 .. numel-1) of t's logical layout, as a double. */
CLIPL_API int clipl_tensor_get_flat(const clipl_tensor *t, int64_t index, double *value);
CLIPL_API int clipl_tensor_set_flat(clipl_tensor *t, int64_t index, double value);
/* Copies t (any strides) into out as doubles in row-major order; n must be >= numel. */
CLIPL_API int clipl_tensor_to_doubles(const clipl_tensor *t, double *out, int64_t n);

/* ---- storage ---- */
CLIPL_API clipl_storage *clipl_storage_retain(clipl_storage *s);
CLIPL_API void clipl_storage_release(clipl_storage *s);
/* New zeroed storage of nbytes, 64-byte aligned. New reference or NULL. */
CLIPL_API clipl_storage *clipl_storage_new(size_t nbytes);
/* Maps [offset, offset + nbytes) of a file read-only. New reference or NULL. */
CLIPL_API clipl_storage *clipl_storage_map_file(const char *path, int64_t offset, size_t nbytes);
CLIPL_API void *clipl_storage_data(const clipl_storage *s);
CLIPL_API size_t clipl_storage_nbytes(const clipl_storage *s);
/* 1 when the storage is a read-only file mapping. */
CLIPL_API int clipl_storage_readonly(const clipl_storage *s);

/* ---- random numbers ---- */
/* A seeded generator (xoshiro256** seeded by splitmix64). The same
 * seed gives the same numbers on every machine and run. */
typedef struct clipl_generator clipl_generator;
CLIPL_API clipl_generator *clipl_generator_new(uint64_t seed);
CLIPL_API void clipl_generator_free(clipl_generator *g);
CLIPL_API int clipl_generator_seed(clipl_generator *g, uint64_t seed);
/* Fills dst (float dtype) with U[lo, hi). */
CLIPL_API int clipl_tensor_uniform_(clipl_tensor *dst, clipl_generator *g, double lo, double hi);
/* Fills dst (float dtype) with N(mean, std^2) (Box-Muller on the generator's doubles). */
CLIPL_API int clipl_tensor_normal_(clipl_tensor *dst, clipl_generator *g, double mean, double std);
/* State for checkpoints: 4 words. */
CLIPL_API int clipl_generator_get_state(const clipl_generator *g, uint64_t *state4);
CLIPL_API int clipl_generator_set_state(clipl_generator *g, const uint64_t *state4);

/* ---- digests ---- */
/* Streaming SHA-256 (OpenSSL's libcrypto), for cache keys and file checks. */
typedef struct clipl_sha256 clipl_sha256;
/* New hashing state. Free with clipl_sha256_free. NULL on failure. */
CLIPL_API clipl_sha256 *clipl_sha256_new(void);
CLIPL_API void clipl_sha256_free(clipl_sha256 *h);
/* Adds n bytes. */
CLIPL_API int clipl_sha256_update(clipl_sha256 *h, const void *data, size_t n);
/* Adds a tensor's dtype, shape and elements in row-major order (any strides). */
CLIPL_API int clipl_sha256_update_tensor(clipl_sha256 *h, const clipl_tensor *t);
/* Writes the digest of everything added as 64 lowercase hex digits + NUL into out_hex (65
 * bytes); the state is then reset for reuse. */
CLIPL_API int clipl_sha256_final(clipl_sha256 *h, char *out_hex);

/* ==== ops ===================================================================================== */
/* (engine/ops) */

/* -- oneDNN ops (dnnl) -- */
/* Every op here runs on oneDNN, accepts f32 and bf16 inputs (any strides; views are used in place
 * when oneDNN can read them, else copied) and writes a new contiguous tensor in the input dtype
 * unless stated. Primitives are created once per (op, dtypes, shapes, strides, attributes) and
 * cached. */

/* Activations fused into matmul/linear/conv (post-ops) and run by clipl_eltwise. alpha/beta are
 * the op's parameters where it has any. */
typedef enum clipl_act {
    CLIPL_ACT_NONE = 0,
    CLIPL_ACT_RELU = 1,       /* max(x, 0) */
    CLIPL_ACT_GELU = 2,       /* x * Phi(x) (erf form, PyTorch's default) */
    CLIPL_ACT_GELU_TANH = 3,  /* tanh approximation of GELU */
    CLIPL_ACT_QUICK_GELU = 4, /* x * sigmoid(1.702 x) (CLIP), oneDNN swish with alpha 1.702 */
    CLIPL_ACT_SIGMOID = 5,
    CLIPL_ACT_TANH = 6,
    CLIPL_ACT_EXP = 7,
    CLIPL_ACT_LOG = 8,
    CLIPL_ACT_SQRT = 9,
    CLIPL_ACT_ABS = 10,
    CLIPL_ACT_CLAMP = 11,  /* min(max(x, alpha), beta) */
    CLIPL_ACT_LINEAR = 12, /* alpha * x + beta */
    CLIPL_ACT_POW = 13,    /* alpha * x ^ beta */
    CLIPL_ACT_SWISH = 14,  /* x * sigmoid(alpha x) */
    CLIPL_ACT_SQUARE = 15,
    CLIPL_ACT_SOFTPLUS = 16,
    CLIPL_ACT_COUNT = 17
} clipl_act;

/* Name of an activation ("relu", "quick_gelu", ...), "?" when unknown. Borrowed (static). */
CLIPL_API const char *clipl_act_name(int act);
/* Activation for a name as above, or -1. */
CLIPL_API int clipl_act_from_name(const char *name);

/* Options of matmul and linear (NULL means all defaults: no activation, scale 1, no accumulate).
 * Result = act(scale * (a @ b + bias)) [+ sum_scale * accum]: oneDNN applies the output scale
 * after the bias. */
typedef struct clipl_matmul_opts {
    int32_t act;         /* clipl_act applied after the bias */
    float alpha, beta;   /* parameters of act (see clipl_act) */
    float scale;         /* multiplies a @ b + bias; 0 is read as 1 */
    float sum_scale;     /* weight of accum in the sum; 0 is read as 1 */
    clipl_tensor *accum; /* borrowed; when set, the result is added into it in place (residual
                            adds) and *dst receives a new reference to accum */
} clipl_matmul_opts;

/* Batched matrix product: a [..., M, K] @ b [..., K, N] -> dst [..., M, N]. Leading (batch) dims
 * broadcast as in PyTorch; either operand may be a transposed or narrowed view. bias (optional)
 * broadcasts to [..., M, N] (typically [N]). a and b must have the same dtype; dst has a's dtype.
 * *dst: new reference. Returns CLIPL_ESHAPE "matmul: size mismatch, [AxB] @ [CxD]" etc. */
CLIPL_API int clipl_matmul(const clipl_tensor *a, const clipl_tensor *b, const clipl_tensor *bias,
                           clipl_tensor **dst, const clipl_matmul_opts *opts);

/* Linear layer: x [..., in] @ weight [out, in]^T + bias [out] -> dst [..., out], with a fused
 * activation (clipl_act; alpha/beta 0). Reorders nothing ahead of time: for repeated calls use
 * prepared weights below. *dst: new reference. */
CLIPL_API int clipl_linear(const clipl_tensor *x, const clipl_tensor *weight,
                           const clipl_tensor *bias, clipl_tensor **dst, int act);

/* Weights of a linear layer reordered once into the blocked layout oneDNN's matmul prefers, so
 * calls never reorder them. */
typedef struct clipl_linear_weights clipl_linear_weights;
/* Prepares weight [out, in] (and bias [out] or NULL) in dtype (CLIPL_F32 or CLIPL_BF16; -1 keeps
 * weight's dtype). m_hint is the typical number of rows of x (<= 0: 256), used to pick the layout.
 * Copies the data (the inputs may be released). New handle or NULL. */
CLIPL_API clipl_linear_weights *clipl_linear_prepare(const clipl_tensor *weight,
                                                     const clipl_tensor *bias, int dtype,
                                                     int64_t m_hint);
CLIPL_API void clipl_linear_weights_free(clipl_linear_weights *w);
/* out_features, in_features, dtype (any pointer may be NULL); bytes held. */
CLIPL_API int clipl_linear_weights_info(const clipl_linear_weights *w, int64_t *out_features,
                                        int64_t *in_features, int *dtype, int64_t *nbytes);
/* dst [..., out] = opts->act(x [..., in] @ W^T + b) [+ accum]. x in f32 or bf16 (converted to the
 * weights' dtype when they differ); dst has x's dtype. *dst: new reference. */
CLIPL_API int clipl_linear_apply(const clipl_linear_weights *w, const clipl_tensor *x,
                                 clipl_tensor **dst, const clipl_matmul_opts *opts);

/* Options of conv2d (NULL: stride 1, padding 0, dilation 1, groups 1, no activation). */
typedef struct clipl_conv2d_opts {
    int64_t stride[2];   /* (h, w); 0 is read as 1 */
    int64_t padding[2];  /* (h, w), zeros on both sides */
    int64_t dilation[2]; /* (h, w), PyTorch's convention: 1 = none; 0 is read as 1 */
    int64_t groups;      /* 0 is read as 1 */
    int32_t act;         /* clipl_act fused after the bias (e.g. CLIPL_ACT_RELU) */
    float alpha, beta;   /* parameters of act */
} clipl_conv2d_opts;

/* 2-d convolution (cross-correlation, as PyTorch): src [N, C, H, W], weights
 * [O, C/groups, KH, KW], bias [O] or NULL -> dst [N, O, OH, OW]. *dst: new reference. */
CLIPL_API int clipl_conv2d(const clipl_tensor *src, const clipl_tensor *weights,
                           const clipl_tensor *bias, clipl_tensor **dst,
                           const clipl_conv2d_opts *opts);

/* Convolution weights (and bias) reordered once into the layout oneDNN's convolution picks for
 * inputs of about h_hint x w_hint (<= 0: 56), with the options fixed (copied). dtype CLIPL_F32 or
 * CLIPL_BF16 (-1 keeps the weights' dtype). New handle or NULL. */
typedef struct clipl_conv2d_weights clipl_conv2d_weights;
CLIPL_API clipl_conv2d_weights *clipl_conv2d_prepare(const clipl_tensor *weights,
                                                     const clipl_tensor *bias, int dtype,
                                                     const clipl_conv2d_opts *opts, int64_t h_hint,
                                                     int64_t w_hint);
CLIPL_API void clipl_conv2d_weights_free(clipl_conv2d_weights *w);
/* dst = conv2d(src [N, C, H, W]) with prepared weights; src in f32 or bf16 (converted to the
 * weights' dtype when they differ), dst in src's dtype. *dst: new reference. */
CLIPL_API int clipl_conv2d_apply(const clipl_conv2d_weights *w, const clipl_tensor *src,
                                 clipl_tensor **dst);

/* Batch norm, inference: dst = (src - mean) / sqrt(var + eps) * weight + bias over dim 1 of src
 * [N, C, ...]; mean, var, weight, bias: [C] (weight/bias may be NULL: 1 and 0). *dst: new ref. */
CLIPL_API int clipl_batch_norm(const clipl_tensor *src, const clipl_tensor *mean,
                               const clipl_tensor *var, const clipl_tensor *weight,
                               const clipl_tensor *bias, clipl_tensor **dst, double eps);
/* Folds an inference batch norm that follows a convolution into its weights [O, ...] and bias
 * [O] (or NULL = 0): w' = w * g / sqrt(var + eps), b' = (b - mean) * g / sqrt(var + eps) + beta.
 * Computed in double; outputs in weights' dtype (bias f32 when weights are f32, else weights'
 * dtype). *w_out, *b_out: new references. */
CLIPL_API int clipl_fold_batch_norm(const clipl_tensor *weights, const clipl_tensor *bias,
                                    const clipl_tensor *mean, const clipl_tensor *var,
                                    const clipl_tensor *gamma, const clipl_tensor *beta, double eps,
                                    clipl_tensor **w_out, clipl_tensor **b_out);

/* Layer norm over the last norm_ndim dims of src (any leading shape): weight and bias (each
 * optional, NULL) have those dims' shape (or as many elements). When mean/rstd are not NULL they
 * receive new tensors [leading dims] f32 of the per-row mean and 1/sqrt(var + eps) (kept for a
 * backward). *dst: new reference. */
CLIPL_API int clipl_layer_norm(const clipl_tensor *src, int norm_ndim, const clipl_tensor *weight,
                               const clipl_tensor *bias, clipl_tensor **dst, double eps,
                               clipl_tensor **mean, clipl_tensor **rstd);

/* Softmax (log = 0) or log-softmax (log = 1) of src along dim (negative from the end).
 * *dst: new reference, same dtype as src. */
CLIPL_API int clipl_softmax(const clipl_tensor *src, clipl_tensor **dst, int dim, int log);

/* dst = act(src) with parameters alpha, beta (see clipl_act). *dst: new reference. */
CLIPL_API int clipl_eltwise(const clipl_tensor *src, clipl_tensor **dst, int act, double alpha,
                            double beta);
/* In place: t = act(t). */
CLIPL_API int clipl_eltwise_(clipl_tensor *t, int act, double alpha, double beta);

typedef enum clipl_pool_kind {
    CLIPL_POOL_MAX = 0,
    CLIPL_POOL_AVG = 1,            /* padding counts in the divisor (PyTorch's default) */
    CLIPL_POOL_AVG_EXCLUDE_PAD = 2 /* count_include_pad = False */
} clipl_pool_kind;

/* 2-d pooling of src [N, C, H, W] -> dst [N, C, OH, OW] with kernel (kh, kw), stride (sh, sw;
 * 0 = kernel) and zero padding (ph, pw); ceil_mode as PyTorch. *dst: new reference. */
CLIPL_API int clipl_pool2d(const clipl_tensor *src, clipl_tensor **dst, int kind, int64_t kh,
                           int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                           int ceil_mode);

/* Scaled dot-product attention: softmax(q @ k^T * scale + mask) @ v. q [B, H, T, Dh],
 * k, v [B, H, S, Dh] (any strides; leading dims broadcast), mask additive, broadcastable to
 * [B, H, T, S] (e.g. [T, S] with -inf above the diagonal) or NULL. scale <= 0 means
 * 1/sqrt(Dh). dst [B, H, T, Dh] in q's dtype. probs (may be NULL) receives the attention weights
 * [B, H, T, S] f32 (kept for a backward). *dst, *probs: new references. */
CLIPL_API int clipl_attention(const clipl_tensor *q, const clipl_tensor *k, const clipl_tensor *v,
                              const clipl_tensor *mask, clipl_tensor **dst, double scale,
                              clipl_tensor **probs);

/* Primitive cache: entries held, hits, misses; capacity (entries; <= 0 keeps it) and clearing. */
CLIPL_API int clipl_dnnl_cache_stats(int64_t *entries, int64_t *hits, int64_t *misses);
CLIPL_API int clipl_dnnl_cache_set_capacity(int capacity);
CLIPL_API void clipl_dnnl_cache_clear(void);

/* -- plain ops -- */
/* Elementwise binary ops, reductions, top-k, joins and indexing (engine/ops/binary.c, reduce.c,
 * index.c, join.c). Each op is a pure function of its inputs and records its backward onto the
 * tape (engine/autograd) when an input requires grad. Inputs are borrowed; *dst receives a new
 * reference.
 *
 * Broadcasting: a and b broadcast as in NumPy (dims right-aligned; a size-1 or missing dim is
 * stretched), with any strides. The result is a new contiguous tensor of the broadcast shape.
 * Result dtype (the "common dtype"): float wins over integer; between floats the wider one wins
 * (f32 > bf16, f16; bf16 with f16 gives f32); between integers the wider one (i64 > i32 > u8).
 * div of two integer tensors is true division and gives f32. Tensor-scalar forms keep the tensor's
 * dtype, except that an integer tensor with a non-integral scalar (and any integer div) gives f32.
 * Arithmetic: bf16/f16 are computed in f32 (or wider) and rounded once; integers in int64 (wrapping
 * on overflow when stored; an integer to a negative integer power is an error). Dense f32/bf16
 * cases run on oneDNN's binary primitive, the rest on strided C loops (OpenMP for large tensors).
 */
typedef enum clipl_binary_op {
    CLIPL_BIN_ADD = 0, /* a + b */
    CLIPL_BIN_SUB = 1, /* a - b */
    CLIPL_BIN_MUL = 2, /* a * b */
    CLIPL_BIN_DIV = 3, /* a / b */
    CLIPL_BIN_POW = 4, /* a ^ b */
    CLIPL_BIN_MAX = 5, /* max(a, b) (NaN propagates) */
    CLIPL_BIN_MIN = 6, /* min(a, b) (NaN propagates) */
    CLIPL_BIN_EQ = 7,  /* comparisons give a u8 mask of 0/1 */
    CLIPL_BIN_NE = 8,
    CLIPL_BIN_LT = 9,
    CLIPL_BIN_LE = 10,
    CLIPL_BIN_GT = 11,
    CLIPL_BIN_GE = 12
} clipl_binary_op;

/* dst = a op b (broadcast). op: clipl_binary_op. Comparisons give u8. */
CLIPL_API int clipl_binary(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst,
                           int op);
/* dst = a op s (reversed = 0) or s op a (reversed = 1) for a scalar s. */
CLIPL_API int clipl_binary_scalar(const clipl_tensor *a, double s, clipl_tensor **dst, int op,
                                  int reversed);
/* In place: a = a op b (b broadcast to a's shape; the result is converted to a's dtype). */
CLIPL_API int clipl_binary_(clipl_tensor *a, const clipl_tensor *b, int op);
/* In place: a = a op s (reversed = 0) or s op a (reversed = 1). */
CLIPL_API int clipl_binary_scalar_(clipl_tensor *a, double s, int op, int reversed);

/* Named forms of the above. add takes alpha: dst = a + alpha * b. */
CLIPL_API int clipl_add(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst,
                        double alpha);
CLIPL_API int clipl_sub(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst);
CLIPL_API int clipl_mul(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst);
CLIPL_API int clipl_div(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst);
CLIPL_API int clipl_pow(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst);
/* dst = a + s, a - s, a * s, a / s, a ^ s. */
CLIPL_API int clipl_add_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
CLIPL_API int clipl_sub_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
CLIPL_API int clipl_mul_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
CLIPL_API int clipl_div_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
CLIPL_API int clipl_pow_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
/* dst = s - a, s / a, s ^ a. */
CLIPL_API int clipl_rsub_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
CLIPL_API int clipl_rdiv_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
CLIPL_API int clipl_rpow_scalar(const clipl_tensor *a, double s, clipl_tensor **dst);
/* dst = -a (same dtype; u8 wraps). */
CLIPL_API int clipl_neg(const clipl_tensor *a, clipl_tensor **dst);
/* In place on a: a += alpha * b, a -= b, a *= b, a /= b, a = a ^ b; a += s, a *= s. */
CLIPL_API int clipl_add_(clipl_tensor *a, const clipl_tensor *b, double alpha);
CLIPL_API int clipl_sub_(clipl_tensor *a, const clipl_tensor *b);
CLIPL_API int clipl_mul_(clipl_tensor *a, const clipl_tensor *b);
CLIPL_API int clipl_div_(clipl_tensor *a, const clipl_tensor *b);
CLIPL_API int clipl_pow_(clipl_tensor *a, const clipl_tensor *b);
CLIPL_API int clipl_add_scalar_(clipl_tensor *a, double s);
CLIPL_API int clipl_mul_scalar_(clipl_tensor *a, double s);
CLIPL_API int clipl_neg_(clipl_tensor *a);
/* The common dtype of a and b as described above. */
CLIPL_API int clipl_result_dtype(int dtype_a, int dtype_b);

/* Reductions along dim (negative counts from the end), or over every element when dim is
 * CLIPL_ALL_DIMS (result 0-d, or all size-1 dims with keepdim). keepdim != 0 keeps the reduced dim
 * with size 1. Float inputs accumulate in double and give the input dtype; integer sums give i64;
 * the mean and norm of an integer tensor give f32. Reducing a 0-size dim: sum 0, mean NaN, and
 * max/min/argmax/argmin an error. */
CLIPL_API int clipl_sum(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim);
CLIPL_API int clipl_mean(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim);
/* values = max along dim; indices (i64, 0-based, first occurrence; NaN counts as the maximum) may
 * be NULL. With CLIPL_ALL_DIMS, indices are flat row-major indices. */
CLIPL_API int clipl_max(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices,
                        int dim, int keepdim);
CLIPL_API int clipl_min(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices,
                        int dim, int keepdim);
/* dst = i64 indices of the max / min along dim (flat indices with CLIPL_ALL_DIMS). */
CLIPL_API int clipl_argmax(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim);
CLIPL_API int clipl_argmin(const clipl_tensor *src, clipl_tensor **dst, int dim, int keepdim);
/* dst = (sum |x|^p)^(1/p) along dim; p = INFINITY gives max |x|, p = -INFINITY min |x|, p = 0
 * the count of non-zeros. */
CLIPL_API int clipl_norm(const clipl_tensor *src, clipl_tensor **dst, double p, int dim,
                         int keepdim);
/* The k largest (largest != 0) or smallest entries along dim, sorted (descending for largest,
 * ascending for smallest; ties keep the lower index first). values: src's dtype, indices: i64,
 * 0-based; both have src's shape with dim of size k. indices may be NULL. */
CLIPL_API int clipl_topk(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices,
                         int64_t k, int dim, int largest);

/* Joins n tensors (srcs[0..n-1], borrowed) along an existing dim (cat) or a new dim (stack).
 * All shapes must match except along dim for cat; 1-d empty tensors are skipped by cat as in
 * PyTorch. The result has the common dtype of all inputs. */
CLIPL_API int clipl_cat(const clipl_tensor *const *srcs, int n, clipl_tensor **dst, int dim);
CLIPL_API int clipl_stack(const clipl_tensor *const *srcs, int n, clipl_tensor **dst, int dim);

/* Indexing. Index tensors are i32 or i64 (0-based; negative values are errors). An out-of-range
 * index fails with CLIPL_EINDEX naming the value, the dim and its size. */
/* dst = src with dim restricted to the entries of index (1-d): dst.shape[dim] = numel(index). */
CLIPL_API int clipl_index_select(const clipl_tensor *src, const clipl_tensor *index,
                                 clipl_tensor **dst, int dim);
/* dst[i][j][k] = src[index[i][j][k]][j][k] (for dim 0, likewise for others); index has src's
 * ndim and sizes <= src's outside dim; dst has index's shape and src's dtype. */
CLIPL_API int clipl_gather(const clipl_tensor *src, const clipl_tensor *index, clipl_tensor **dst,
                           int dim);
/* Embedding lookup: weight [V, D] (any dtype), ids of any shape (i32/i64) -> dst [..ids, D]. */
CLIPL_API int clipl_embedding(const clipl_tensor *ids, const clipl_tensor *weight,
                              clipl_tensor **dst);
/* dst = src with value where mask (u8, or any dtype: non-zero is true; broadcast to src) is set. */
CLIPL_API int clipl_masked_fill(const clipl_tensor *src, const clipl_tensor *mask,
                                clipl_tensor **dst, double value);
CLIPL_API int clipl_masked_fill_(clipl_tensor *t, const clipl_tensor *mask, double value);
/* dst = cond ? a : b elementwise (cond any dtype, non-zero is true; all three broadcast; dtype is
 * the common dtype of a and b). */
CLIPL_API int clipl_where(const clipl_tensor *cond, const clipl_tensor *a, const clipl_tensor *b,
                          clipl_tensor **dst);

/* ==== io ====================================================================================== */
/* (engine/io) */

/* A tensor dict: what a weights file holds. Tensors keep their file's dtype (an F16 checkpoint
 * stays f16) and, for safetensors and PyTorch zips, are zero-copy read-only views over a mapping of
 * the file (CLIPL_TF_READONLY); a tensor keeps its mapping alive after the dict is freed. Names are
 * the checkpoint keys (`visual.transformer.resblocks.0.attn.in_proj_weight`), in file order.
 * Metadata: string pairs (safetensors `__metadata__`; for TorchScript archives the int buffers
 * `input_resolution`, `context_length`, `vocab_size`, which are not weights). */
typedef struct clipl_tdict clipl_tdict;

/* An empty dict. New (owned; free with clipl_tdict_free) or NULL. */
CLIPL_API clipl_tdict *clipl_tdict_new(void);
/* Frees the dict and drops its tensor references. NULL is ignored. */
CLIPL_API void clipl_tdict_free(clipl_tdict *d);
/* Number of tensors. */
CLIPL_API int clipl_tdict_count(const clipl_tdict *d);
/* Name / tensor at index i (0 .. count-1), NULL when out of range. Borrowed (valid while d lives;
 * retain the tensor to keep it longer). */
CLIPL_API const char *clipl_tdict_name(const clipl_tdict *d, int i);
CLIPL_API clipl_tensor *clipl_tdict_tensor(const clipl_tdict *d, int i);
/* Index of name, or -1 when absent (no error is set). */
CLIPL_API int clipl_tdict_find(const clipl_tdict *d, const char *name);
/* Tensor named name. Borrowed; NULL with CLIPL_EINDEX when absent. */
CLIPL_API clipl_tensor *clipl_tdict_get(const clipl_tdict *d, const char *name);
/* Adds t under name (t is retained). CLIPL_EINVAL when the name is already present. */
CLIPL_API int clipl_tdict_add(clipl_tdict *d, const char *name, clipl_tensor *t);
/* Metadata pairs. Borrowed strings; NULL when out of range / absent. */
CLIPL_API int clipl_tdict_meta_count(const clipl_tdict *d);
CLIPL_API const char *clipl_tdict_meta_key(const clipl_tdict *d, int i);
CLIPL_API const char *clipl_tdict_meta_value(const clipl_tdict *d, int i);
CLIPL_API const char *clipl_tdict_meta_get(const clipl_tdict *d, const char *key);
/* Sets (or replaces) a metadata pair (both strings are copied). */
CLIPL_API int clipl_tdict_set_meta(clipl_tdict *d, const char *key, const char *value);
/* Format the dict was read from: "safetensors", "pt" (torch.save zip), "torchscript", "npy", or
 * "" for a dict made with clipl_tdict_new. Borrowed (static). */
CLIPL_API const char *clipl_tdict_format(const clipl_tdict *d);

/* Loads any weights file, sniffing the format from its first bytes: a zip (PyTorch .pt state dict
 * or checkpoint, or a TorchScript archive), safetensors, or npy (one tensor named by the file's
 * stem). New dict or NULL (CLIPL_EIO, CLIPL_EFORMAT naming the file and the tensor at fault,
 * CLIPL_EUNSUPPORTED for a valid file using something not supported). */
CLIPL_API clipl_tdict *clipl_load_weights(const char *path);

/* safetensors, read by mmap: tensors are zero-copy read-only views (copied only when a tensor's
 * data is not aligned to its element size). dtypes F32, F16, BF16, I32, I64, U8 as is; BOOL is read
 * as u8 (same bytes); F64 is converted to f32 (a copy); other dtypes are refused. The header is
 * validated completely (JSON, dtypes, shapes, offsets inside the data section, no overlaps, no
 * duplicate names). New dict or NULL. */
CLIPL_API clipl_tdict *clipl_safetensors_load(const char *path);
/* Writes n tensors (any strides; f32, bf16, f16, i32, i64, u8) and nmeta metadata string pairs
 * (meta_keys/meta_values may be NULL when nmeta is 0) as safetensors, atomically (a temporary file
 * in the same directory, fsync, rename). Data laid out sorted by (element size descending, name),
 * header space-padded so the data starts 8-byte aligned. Returns a status. */
CLIPL_API int clipl_safetensors_save(const char *path, int n, const char *const *names,
                                     clipl_tensor *const *tensors, int nmeta,
                                     const char *const *meta_keys, const char *const *meta_values);
/* Writes every tensor and metadata pair of d as safetensors (as clipl_safetensors_save). */
CLIPL_API int clipl_tdict_save_safetensors(const clipl_tdict *d, const char *path);

/* PyTorch zip archives (torch >= 1.6 `torch.save`, zip64 aware; STORED entries zero-copy, DEFLATE
 * entries inflated). data.pkl is read by a restricted unpickler that never executes anything:
 * only state-dict globals (collections.OrderedDict, torch._utils._rebuild_tensor_v2 /
 * _rebuild_parameter, torch.*Storage for float/half/bfloat16/long/int/byte) and `__torch__.*`
 * TorchScript module classes, which are read as plain attribute containers and flattened to dotted
 * names. Checkpoints with a "state_dict" / "model" / "module" entry are reduced to it and a
 * "module." key prefix is stripped; non-tensor values are skipped. New dict or NULL. */
CLIPL_API clipl_tdict *clipl_pt_load(const char *path);

/* npy v1/v2/v3, little-endian '<f4' '<f2' '<i4' '<i8' '|u1' ('|b1' read as u8, '<f8' converted to
 * f32), C order (fortran_order True gives a strided view with the same logical layout). The data
 * is copied into a new writable tensor. New reference or NULL. */
CLIPL_API clipl_tensor *clipl_npy_load(const char *path);
/* Writes t (any strides; f32, f16, i32, i64, u8; bf16 is refused: numpy has no bfloat16) as npy
 * v1 (v2 when the header needs it), C order, atomically. Returns a status. */
CLIPL_API int clipl_npy_save(const char *path, const clipl_tensor *t);

/* ==== text ==================================================================================== */
/* (engine/text) */

/* CLIP's byte-level BPE tokenizer, identical to OpenAI's SimpleTokenizer
 * (clip/simple_tokenizer.py): NFC, HTML unescaping twice, strip, whitespace collapsed, Python's
 * str.lower(), the pre-tokenizer regex (PCRE2, UTF + UCP, caseless), byte-level BPE with `</w>`
 * word ends, and a per-word cache. A tokenizer is safe to use from several threads at once (the
 * word cache has a mutex). */
typedef struct clipl_tokenizer clipl_tokenizer;

/* Loads OpenAI's merges file (`bpe_simple_vocab_16e6.txt.gz`, gzip; a plain text file also works).
 * New handle or NULL (error names the file and the line at fault). */
CLIPL_API clipl_tokenizer *clipl_tokenizer_load(const char *path);
/* Loads HuggingFace's `vocab.json` (token -> id) and `merges.txt`. New handle or NULL. */
CLIPL_API clipl_tokenizer *clipl_tokenizer_load_hf(const char *vocab_json_path,
                                                   const char *merges_path);
/* Frees the handle. NULL is ignored. */
CLIPL_API void clipl_tokenizer_free(clipl_tokenizer *tok);

/* Number of ids (49408 for CLIP); ids of `<|startoftext|>` and `<|endoftext|>`. */
CLIPL_API int32_t clipl_tokenizer_vocab_size(const clipl_tokenizer *tok);
CLIPL_API int32_t clipl_tokenizer_sot(const clipl_tokenizer *tok);
CLIPL_API int32_t clipl_tokenizer_eot(const clipl_tokenizer *tok);
/* Id of a vocabulary entry in OpenAI's spelling (byte-encoded, e.g. "dog</w>"), or -1. */
CLIPL_API int32_t clipl_tokenizer_token_id(const clipl_tokenizer *tok, const char *token,
                                           size_t len);

/* Encodes len bytes of UTF-8 text into BPE ids (no start/end ids), as SimpleTokenizer.encode.
 * Writes min(*n, cap) ids to ids (may be NULL when cap is 0) and sets *n to the full count, so a
 * caller can ask for the size first (cap 0) or retry with a bigger buffer. Invalid UTF-8 is
 * CLIPL_EINVAL naming the byte offset. */
CLIPL_API int clipl_tokenizer_encode(clipl_tokenizer *tok, const char *text, size_t len,
                                     int32_t *ids, size_t cap, size_t *n);
/* Decodes n ids into UTF-8 text as SimpleTokenizer.decode (each `</w>` becomes a space; invalid
 * UTF-8 byte runs become U+FFFD as Python's errors='replace'). Writes min(*len, cap) bytes to out
 * (no terminating NUL; out may be NULL when cap is 0) and sets *len to the full length. An id out
 * of range is CLIPL_EINDEX naming it. */
CLIPL_API int clipl_tokenizer_decode(const clipl_tokenizer *tok, const int32_t *ids, size_t n,
                                     char *out, size_t cap, size_t *len);
/* The text that the pre-tokenizer sees (NFC, unescaped twice, stripped, whitespace collapsed,
 * lowercased); same buffer protocol as decode. For tests and debugging. */
CLIPL_API int clipl_tokenizer_clean(const clipl_tokenizer *tok, const char *text, size_t len,
                                    char *out, size_t cap, size_t *out_len);

/* Tokenizes n_texts texts (lens[i] bytes each) into dst: a new [n_texts, context_length] i32 tensor
 * of rows `sot ids... eot` zero-padded, as OpenAI's clip.tokenize. A row longer than
 * context_length is CLIPL_ESHAPE naming the text, unless truncate is nonzero: then it is cut to
 * context_length ids, the last being eot. */
CLIPL_API int clipl_tokenizer_tokenize(clipl_tokenizer *tok, int n_texts, const char *const *texts,
                                       const size_t *lens, clipl_tensor **dst, int context_length,
                                       int truncate);

/* Word cache: entries held; clearing it; its capacity in entries (0 disables the cache; the cache
 * is emptied when full). Default 200000. */
CLIPL_API int64_t clipl_tokenizer_cache_size(clipl_tokenizer *tok);
CLIPL_API void clipl_tokenizer_cache_clear(clipl_tokenizer *tok);
CLIPL_API void clipl_tokenizer_cache_limit(clipl_tokenizer *tok, int64_t max_entries);

/* -- BPE training (data) -- */
/* Learns a byte-level BPE vocabulary from text, in the format clipl_tokenizer_load reads
 * (OpenAI's bpe_simple_vocab_16e6.txt.gz: a "#version: 0.2" line, then one merge "a b" per line,
 * symbols spelled in the byte-to-unicode alphabet, a word's last symbol ending in "</w>"). Texts
 * are cleaned and pre-tokenized exactly as the tokenizer does (clipl_tokenizer_clean, then
 * OpenAI's regex); each pre-token is a word of byte symbols. Each step merges the most frequent
 * adjacent pair (counted over words weighted by their frequency); ties go to the pair whose first
 * symbol, then second symbol, is smaller in byte order. Deterministic. */
typedef struct clipl_bpe_trainer clipl_bpe_trainer;

/* New, empty trainer. Free with clipl_bpe_trainer_free. NULL on failure. */
CLIPL_API clipl_bpe_trainer *clipl_bpe_trainer_new(void);
CLIPL_API void clipl_bpe_trainer_free(clipl_bpe_trainer *b);
/* Adds len bytes of UTF-8 text (counted count times, count >= 1). Invalid UTF-8 is CLIPL_EINVAL
 * naming the byte offset. Fails with CLIPL_EINVAL after clipl_bpe_trainer_learn. */
CLIPL_API int clipl_bpe_trainer_add(clipl_bpe_trainer *b, const char *text, size_t len,
                                    int64_t count);
/* Distinct words so far (distinct = 1) or all words counted (distinct = 0). */
CLIPL_API int64_t clipl_bpe_trainer_words(const clipl_bpe_trainer *b, int distinct);
/* Learns up to n_merges merges, stopping early when no pair occurs at least min_count times
 * (min_count < 1 counts as 1), e.g. when every word has become one symbol. *n_learned (may be
 * NULL) receives the number learned. Can be called once. */
CLIPL_API int clipl_bpe_trainer_learn(clipl_bpe_trainer *b, int n_merges, int64_t min_count,
                                      int *n_learned);
/* Merges learned. */
CLIPL_API int clipl_bpe_trainer_merge_count(const clipl_bpe_trainer *b);
/* Merge i (0-based) as "a b" (UTF-8, NUL-terminated), and its pair count when it was chosen
 * (count may be NULL). Borrowed, valid while b lives; NULL out of range. */
CLIPL_API const char *clipl_bpe_trainer_merge(const clipl_bpe_trainer *b, int i, int64_t *count);
/* Writes "#version: 0.2" and the merges, one per line with no newline after the last one (so that
 * OpenAI's SimpleTokenizer reads it too); gzip-compressed (deterministic: no name or time in the
 * header) when path ends in ".gz". */
CLIPL_API int clipl_bpe_trainer_save(const clipl_bpe_trainer *b, const char *path);

/* ==== image =================================================================================== */
/* (engine/image) */

/* Decoded images (libvips decodes; clipl resamples exactly as Pillow does) and CLIP's
 * preprocessing, OpenAI's `_transform(n_px)`: Resize(n_px, bicubic) -> CenterCrop(n_px) ->
 * convert('RGB') -> ToTensor -> Normalize(CLIP mean, std). See docs/preprocessing.md. */
typedef struct clipl_image clipl_image;

/* Pixel modes, named after the Pillow mode the same file opens as. Pixels are interleaved,
 * row-major, 8 bits per sample except CLIPL_IMAGE_I (one int32 per pixel). */
enum clipl_image_mode_kind {
    CLIPL_IMAGE_L = 0,    /* grey, 1 band */
    CLIPL_IMAGE_LA = 1,   /* grey + alpha, 2 bands */
    CLIPL_IMAGE_RGB = 2,  /* 3 bands */
    CLIPL_IMAGE_RGBA = 3, /* 4 bands, straight (not premultiplied) alpha */
    CLIPL_IMAGE_P = 4,    /* palette image, stored expanded to RGB; resized nearest as Pillow */
    CLIPL_IMAGE_PA = 5,   /* palette image with transparency, expanded to RGBA; resized nearest */
    CLIPL_IMAGE_CMYK = 6, /* 4 bands, 0 = no ink */
    CLIPL_IMAGE_I = 7,    /* 16-bit grey kept as int32 per pixel (Pillow's 'I'); 1 band */
    CLIPL_IMAGE_1 = 8     /* bilevel (1-bit PNG), stored as 0 / 255 in 1 band; resized nearest */
};

/* Flags for loading and batches. */
enum {
    CLIPL_IMAGE_AUTOROTATE = 1, /* apply the EXIF orientation (OpenAI's code does not) */
    CLIPL_BATCH_SKIP_BAD = 2    /* batch: report bad files and go on (their rows are zero) */
};

/* Decodes an image file with libvips (JPEG, PNG, WebP, TIFF, GIF, HEIF/AVIF when libvips has
 * them; the first page/frame). Fails with CLIPL_EIO / CLIPL_EFORMAT / CLIPL_EIMAGE and a message
 * naming the file for unreadable, truncated, corrupt, empty or oversized images (see
 * clipl_image_set_pixel_limit). flags: CLIPL_IMAGE_AUTOROTATE. New image or NULL. */
CLIPL_API clipl_image *clipl_image_load(const char *path, int flags);
/* Same from nbytes of encoded bytes at data (copied as needed; data may be freed after). */
CLIPL_API clipl_image *clipl_image_load_buffer(const void *data, size_t nbytes, int flags);
/* An image over a copy of raw pixels: width x height x bands of mode (8-bit samples; int32 for
 * CLIPL_IMAGE_I). nbytes must equal that size. New image or NULL. */
CLIPL_API clipl_image *clipl_image_from_pixels(int width, int height, int mode, const void *pixels,
                                               size_t nbytes);
/* Frees an image. NULL is ignored. */
CLIPL_API void clipl_image_free(clipl_image *img);
CLIPL_API int clipl_image_width(const clipl_image *img);
CLIPL_API int clipl_image_height(const clipl_image *img);
/* Samples per pixel (1, 2, 3 or 4). */
CLIPL_API int clipl_image_bands(const clipl_image *img);
/* The mode: a CLIPL_IMAGE_* value. */
CLIPL_API int clipl_image_mode(const clipl_image *img);
/* "L", "LA", "RGB", "RGBA", "P", "PA", "CMYK", "I", "1"; "?" for an unknown mode. Borrowed
 * (static). */
CLIPL_API const char *clipl_image_mode_name(int mode);
/* The pixels, row-major, interleaved. Borrowed (valid while img lives). */
CLIPL_API const void *clipl_image_pixels(const clipl_image *img);
/* Size of the pixel buffer in bytes. */
CLIPL_API size_t clipl_image_nbytes(const clipl_image *img);
/* The pixels as a new [H, W, bands] u8 tensor (i32 for CLIPL_IMAGE_I). */
CLIPL_API int clipl_image_to_tensor(const clipl_image *img, clipl_tensor **dst);
/* Resizes with Pillow's bicubic (a = -0.5, antialiased when shrinking, 8-bit fixed point, RGBA
 * and LA premultiplied; P, PA, 1 nearest) to width x height, as Pillow 9.4's Image.resize(size,
 * BICUBIC). *dst receives a new image of the same mode. */
CLIPL_API int clipl_image_resize(const clipl_image *img, int width, int height, clipl_image **dst);
/* The same image converted to RGB as Pillow's convert('RGB') (alpha dropped, grey replicated,
 * CMYK and 'I' converted). *dst receives a new image. */
CLIPL_API int clipl_image_to_rgb(const clipl_image *img, clipl_image **dst);

/* CLIP's preprocessing of one image: dst = [3, n_px, n_px] f32. */
CLIPL_API int clipl_image_preprocess(const clipl_image *img, int n_px, clipl_tensor **dst);
/* Decodes and preprocesses n files in parallel on nthreads threads (<= 0: clipl_get_num_threads())
 * into dst = [n, 3, n_px, n_px] f32. status_out (n ints, may be NULL) receives each item's status.
 * Without CLIPL_BATCH_SKIP_BAD the first bad file fails the call (its message names the file and
 * the index); with it, bad items get a zero row, their status and a message, and the call
 * succeeds. flags: CLIPL_IMAGE_AUTOROTATE | CLIPL_BATCH_SKIP_BAD. */
CLIPL_API int clipl_preprocess_batch(int n, const char *const *paths, int n_px, int flags,
                                     int nthreads, clipl_tensor **dst, int *status_out);
/* The message of item index of the last clipl_preprocess_batch on this thread ("" when it was
 * fine). Borrowed; valid until the next batch call on this thread. */
CLIPL_API const char *clipl_preprocess_batch_message(int index);

/* Images with more pixels (width x height) than this are refused before decoding (default
 * 178956970, Pillow's decompression-bomb error threshold). limit <= 0 restores the default. */
CLIPL_API int clipl_image_set_pixel_limit(int64_t limit);
CLIPL_API int64_t clipl_image_get_pixel_limit(void);

/* -- contact sheet (pipe) -- */
/* A contact sheet: a grid of cells, each a thumbnail of an image file with a caption and labelled
 * bars under it (the top zero-shot labels and their probabilities), drawn with libvips (text with
 * pango) and written as PNG, JPEG or WebP. */
typedef struct clipl_sheet clipl_sheet;
/* columns: cells per row (1..64); thumb: the thumbnail box in pixels (16..1024; images are shrunk
 * to fit it, aspect kept). New sheet or NULL. */
CLIPL_API clipl_sheet *clipl_sheet_new(int columns, int thumb);
/* Adds a cell: the image at path (thumbnailed now), caption (may be NULL) and n (0..32) labels with
 * values in [0, 1] (clamped) drawn as bars with the value in percent. An unreadable image fails
 * with CLIPL_EIMAGE naming the file and adds nothing. labels, values: borrowed. */
CLIPL_API int clipl_sheet_add(clipl_sheet *s, const char *path, const char *caption, int n,
                              const char *const *labels, const double *values);
/* Number of cells added. */
CLIPL_API int clipl_sheet_count(const clipl_sheet *s);
/* Lays the cells out in rows and writes the sheet to path; the format follows the extension
 * (.png, .jpg/.jpeg, .webp). The file is written to a temporary name and renamed. */
CLIPL_API int clipl_sheet_save(const clipl_sheet *s, const char *path);
/* Frees the sheet. NULL is ignored. */
CLIPL_API void clipl_sheet_free(clipl_sheet *s);

/* -- decoding on a background thread (pipe) -- */
/* clipl_preprocess_batch run on a thread of its own, so that a caller can encode one batch while
 * the next is decoded. */
typedef struct clipl_batch_job clipl_batch_job;
/* Starts clipl_preprocess_batch(n, paths, n_px, flags, nthreads) on a new thread and returns at
 * once (the paths are copied). New handle (free with clipl_batch_job_free) or NULL. */
CLIPL_API clipl_batch_job *clipl_batch_job_start(int n, const char *const *paths, int n_px,
                                                 int flags, int nthreads);
/* 1 when the job has finished (wait will not block), else 0. */
CLIPL_API int clipl_batch_job_done(const clipl_batch_job *j);
/* Blocks until the job ends; then as clipl_preprocess_batch: *dst receives the batch (a new
 * reference; only on the first successful wait) and status_out (n ints, may be NULL) the item
 * statuses. Returns the batch call's status (its message is set on this thread). */
CLIPL_API int clipl_batch_job_wait(clipl_batch_job *j, clipl_tensor **dst, int *status_out);
/* Number of items of the job. */
CLIPL_API int clipl_batch_job_count(const clipl_batch_job *j);
/* The message of item index once the job has ended ("" when it was fine). Borrowed; valid until
 * the job is freed. */
CLIPL_API const char *clipl_batch_job_message(const clipl_batch_job *j, int index);
/* Waits for the thread if it still runs, frees the job and any batch not taken. NULL is
 * ignored. */
CLIPL_API void clipl_batch_job_free(clipl_batch_job *j);

/* -- drawing and saving (data) -- */
/* A small rasteriser for synthetic data (clip.shapes): shapes filled with coverage-based
 * anti-aliasing (pixels on an edge are supersampled 4x4 and blended by the covered fraction) over
 * plain, gradient, noise or striped backgrounds. Canvases are u8 tensors [H, W, 3] (RGB,
 * row-major, any strides); coordinates are in pixels from the top-left corner of the image, pixel
 * (x, y) covering [x, x + 1) x [y, y + 1). */
typedef enum clipl_shape_kind {
    CLIPL_SHAPE_CIRCLE = 0,
    CLIPL_SHAPE_SQUARE = 1,   /* axis-aligned at angle 0, corners on the circle of radius */
    CLIPL_SHAPE_TRIANGLE = 2, /* equilateral, pointing up at angle 0 */
    CLIPL_SHAPE_STAR = 3,     /* five points, inner radius 0.45 of the outer one */
    CLIPL_SHAPE_HEXAGON = 4,
    CLIPL_SHAPE_CROSS = 5,   /* plus sign, arms 0.5 x radius wide */
    CLIPL_SHAPE_HEART = 6,   /* the classic parametric heart */
    CLIPL_SHAPE_DIAMOND = 7, /* rhombus 1.2 x radius wide, 2 x radius tall */
    CLIPL_SHAPE_RING = 8,    /* annulus from 0.55 x radius to radius */
    CLIPL_SHAPE_PENTAGON = 9,
    CLIPL_SHAPE_COUNT = 10
} clipl_shape_kind;

typedef enum clipl_background_kind {
    CLIPL_BG_PLAIN = 0,    /* colour a */
    CLIPL_BG_GRADIENT = 1, /* linear from a to b along the direction angle */
    CLIPL_BG_NOISE = 2,    /* a plus uniform noise in [-noise, noise] per sample */
    CLIPL_BG_STRIPES = 3,  /* bands of a and b, each period / 2 wide, across the direction angle */
    CLIPL_BG_CHECKER = 4,  /* squares of a and b, period / 2 wide */
    CLIPL_BG_COUNT = 5
} clipl_background_kind;

enum { CLIPL_DRAW_MAX_ITEMS = 4 };

/* One shape to draw. */
typedef struct clipl_draw_item {
    int32_t kind;   /* clipl_shape_kind */
    float cx, cy;   /* centre in pixels */
    float radius;   /* the shape fits in the circle of this radius around the centre, and its
                       bounding box (at angle 0) is centred there */
    float angle;    /* rotation in radians, clockwise on screen */
    uint8_t rgb[4]; /* colour; rgb[3] is the opacity (255 opaque, 0 draws nothing) */
} clipl_draw_item;

/* A background and up to CLIPL_DRAW_MAX_ITEMS shapes drawn over it in order. */
typedef struct clipl_draw_scene {
    int32_t background; /* clipl_background_kind */
    uint8_t bg_a[4];    /* first colour (rgb, [3] unused) */
    uint8_t bg_b[4];    /* second colour (gradient end, stripes, checker) */
    float bg_angle;     /* direction of gradient and stripes, radians */
    float bg_period;    /* stripes / checker period in pixels (> 0 for those kinds) */
    float bg_noise;     /* noise amplitude in 0..255 */
    uint32_t bg_seed;   /* noise seed (the same seed gives the same noise) */
    int32_t n_items;    /* 0 .. CLIPL_DRAW_MAX_ITEMS */
    clipl_draw_item items[CLIPL_DRAW_MAX_ITEMS];
} clipl_draw_scene;

/* Name of a shape kind ("circle", "square", ...), "?" when unknown. Borrowed (static). */
CLIPL_API const char *clipl_shape_name(int kind);
/* Kind for a name as above, or -1. */
CLIPL_API int clipl_shape_from_name(const char *name);

/* Fills canvas [H, W, 3] u8 with the background of scene (its items are not drawn). */
CLIPL_API int clipl_draw_background(clipl_tensor *canvas, const clipl_draw_scene *scene);
/* Draws item over canvas [H, W, 3] u8: each pixel becomes (1 - a) * pixel + a * colour, rounded,
 * with a = coverage * opacity / 255; coverage is 0 or 1 away from the edges and a multiple of 1/16
 * on them. Parts outside the canvas are clipped. */
CLIPL_API int clipl_draw_shape(clipl_tensor *canvas, const clipl_draw_item *item);
/* The box of the pixels item covers at all on a width x height canvas: box = {x0, y0, x1, y1}
 * (x1, y1 exclusive; x0 == x1 when nothing is covered). */
CLIPL_API int clipl_draw_item_bbox(const clipl_draw_item *item, int width, int height,
                                   int32_t *box);
/* Renders n scenes into dst [n, H, W, 3] u8 (written in place; H and W are dst's), the images in
 * parallel on clipl_get_num_threads() threads. Same pixels as background + shapes one by one. */
CLIPL_API int clipl_draw_scenes(clipl_tensor *dst, int n, const clipl_draw_scene *scenes);
/* CLIP's ToTensor + Normalize(mean, std) of u8 images: src [N, H, W, 3] (or [H, W, 3]) ->
 * dst [N, 3, H, W] (or [3, H, W]) f32 = (x / 255 - mean[c]) / std[c]. New reference. Same values as
 * clipl_image_preprocess at n_px = H = W. */
CLIPL_API int clipl_draw_normalize(const clipl_tensor *src, clipl_tensor **dst);
/* Saves pixels [H, W, C] u8 (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) with libvips; the format
 * follows the suffix of path: .png (lossless), .jpg / .jpeg, .webp (quality 1..100, 0 = 90). */
CLIPL_API int clipl_draw_save(const clipl_tensor *pixels, const char *path, int quality);
/* Saves image i of pixels [N, H, W, C] u8 to paths[i] for i < n (n <= N), as clipl_draw_save, on
 * clipl_get_num_threads() threads. On failure, the error is that of the lowest failing index,
 * naming its path; the other images are still written. */
CLIPL_API int clipl_draw_save_batch(const clipl_tensor *pixels, int n, const char *const *paths,
                                    int quality);
/* Saves an image the same way (modes L, LA, RGB, RGBA, P, PA; other modes are refused). */
CLIPL_API int clipl_image_save(const clipl_image *img, const char *path, int quality);

/* ==== net ===================================================================================== */
/* (engine/net) Downloads over HTTP(S) with libcurl, on a background thread that Lua polls. */

/* A download in progress (opaque). */
typedef struct clipl_download clipl_download;

/* What a download is doing (clipl_download_state). */
typedef enum clipl_download_phase {
    CLIPL_DL_CONNECTING = 0, /* resolving, connecting, waiting for the response headers */
    CLIPL_DL_TRANSFER = 1,   /* receiving the body into DEST.part */
    CLIPL_DL_VERIFYING = 2,  /* hashing the finished DEST.part (done/total count hashed bytes) */
    CLIPL_DL_DONE = 3,       /* verified and renamed to DEST */
    CLIPL_DL_FAILED = 4      /* stopped with an error (or cancelled); see clipl_download_wait */
} clipl_download_phase;

/* Starts downloading url to dest_path on a new thread and returns at once. The body goes to
 * "<dest_path>.part" (parent folders are created); an existing .part is resumed with an HTTP Range
 * request, and a server that answers 200 instead of 206 restarts it from byte 0. When the transfer
 * ends, the whole .part is hashed; it is renamed to dest_path only when its SHA-256 equals
 * sha256_hex (64 hex digits, any case); on a mismatch the .part is deleted and the download fails
 * with CLIPL_EFORMAT naming both hashes. sha256_hex NULL or "" skips the check. Network errors
 * keep the .part for a later resume. Redirects are followed; only http and https are allowed.
 * New handle (free with clipl_download_free) or NULL on a bad argument (nothing started). */
CLIPL_API clipl_download *clipl_download_start(const char *url, const char *dest_path,
                                               const char *sha256_hex);
/* Progress, without blocking: *done = bytes of the file so far (resumed bytes included), *total =
 * expected size or -1 while unknown (in phase CLIPL_DL_VERIFYING: hashed bytes of the file size),
 * *finished = 1 once the thread has stopped. Any out pointer may be NULL. Returns CLIPL_OK while
 * running or after success, else the final error status (message in clipl_errmsg()). */
CLIPL_API int clipl_download_poll(clipl_download *d, int64_t *done, int64_t *total, int *finished);
/* The current clipl_download_phase. */
CLIPL_API int clipl_download_state(const clipl_download *d);
/* Bytes that were already in the .part and kept (resume offset actually used; 0 for a fresh start
 * or when the server ignored the Range request). Meaningful once the transfer has started. */
CLIPL_API int64_t clipl_download_resumed_from(const clipl_download *d);
/* Blocks until the download thread stops. Returns CLIPL_OK (dest_path holds the verified file) or
 * the error status: CLIPL_EIO (network, HTTP or file error; .part kept), CLIPL_EFORMAT (hash
 * mismatch; .part deleted), CLIPL_EINTERRUPTED (cancelled or clipl_interrupt; .part kept). */
CLIPL_API int clipl_download_wait(clipl_download *d);
/* Asks the download to stop soon (it then fails with CLIPL_EINTERRUPTED). Does not block. */
CLIPL_API void clipl_download_cancel(clipl_download *d);
/* Cancels if still running, waits for the thread, frees the handle. NULL is ignored. */
CLIPL_API void clipl_download_free(clipl_download *d);
/* SHA-256 of a file's contents as 64 lowercase hex digits and a NUL in out_hex (65 chars). */
CLIPL_API int clipl_sha256_file(const char *path, char *out_hex);

/* ==== autograd ================================================================================ */
/* (engine/autograd) Define-by-run autograd. While grad mode is on (per thread, default on), an op
 * with an input that requires grad records onto the tape what its backward needs, and its result
 * requires grad too. clipl_backward runs the tape in reverse from a tensor and adds the gradients
 * into the leaves (tensors marked with clipl_tensor_set_requires_grad). Every differentiable op of
 * the ops section records, views included (their gradient flows to the viewed tensor). In-place
 * ops on a tensor that requires grad (or with an operand that does) are refused while grad mode
 * is on. Saved tensors share data with the op's inputs and outputs: do not modify those in place
 * (with grad mode off) before the backward. */

/* Turns grad mode on (1) or off (0) for this thread; returns the previous mode. */
CLIPL_API int clipl_set_grad_enabled(int on);
/* 1 when grad mode is on for this thread. */
CLIPL_API int clipl_is_grad_enabled(void);
/* Marks a leaf (a tensor not produced by a recorded op) of a float dtype as requiring grad (on = 1)
 * or not (on = 0). Refused for results of recorded ops and for integer dtypes. */
CLIPL_API int clipl_tensor_set_requires_grad(clipl_tensor *t, int on);
/* 1 when t requires grad (a marked leaf or the result of a recorded op), else 0. */
CLIPL_API int clipl_tensor_requires_grad(const clipl_tensor *t);
/* 1 when t is a leaf (not produced by a recorded op), else 0. */
CLIPL_API int clipl_tensor_is_leaf(const clipl_tensor *t);
/* Name of the op that produced t ("mul", "matmul", "narrow", ...) or NULL for a leaf. Borrowed
 * (static). */
CLIPL_API const char *clipl_tensor_grad_fn(const clipl_tensor *t);
/* The gradient accumulated in t (t's shape and dtype, contiguous), or NULL when there is none (no
 * error is set). New reference. */
CLIPL_API clipl_tensor *clipl_tensor_grad(const clipl_tensor *t);
/* Sets t's gradient to g (retained; shape must match t) or clears it (g NULL). */
CLIPL_API int clipl_tensor_set_grad(clipl_tensor *t, clipl_tensor *g);
/* Asks a non-leaf t to keep its gradient too (readable with clipl_tensor_grad after a backward);
 * no-op for a leaf. */
CLIPL_API int clipl_tensor_retain_grad(clipl_tensor *t);
/* dst = a new header over t's data (shared), with no history and not requiring grad. *dst: new
 * reference. */
CLIPL_API int clipl_tensor_detach(const clipl_tensor *t, clipl_tensor **dst);
/* Backpropagates from t: grad is dL/dt (t's shape; NULL means 1 and needs a one-element t). The
 * gradient of every leaf reached is added to its grad (created at the first backward), so grads
 * accumulate until cleared. Unless retain_graph, the tensors saved by the graph are freed on the
 * way and a second backward through the same graph is an error. */
CLIPL_API int clipl_backward(const clipl_tensor *t, const clipl_tensor *grad, int retain_graph);
/* Recorded ops still alive (nodes of the tape held by tensors); for tests of memory. */
CLIPL_API int64_t clipl_autograd_live_nodes(void);

/* ---- optimizer kernels (engine/autograd/optim.c) ----
 * Arithmetic in f32 in torch.optim's order, each element alone (the same result on any number of
 * threads); the kernels write the parameters directly, outside the tape.
 * Fused steps over flat buffers: params, grads and the state buffers are contiguous f32 tensors
 * of one length (every parameter of an optimizer packed one after another, clipl_tensor_rebind);
 * the n ranges [offset[r], offset[r] + length[r]) must ascend without overlapping, and each carries
 * its lr, weight_decay and step (AdamW) or first flag (SGD). Elements outside every range (frozen
 * parameters, parameters without a gradient) are left alone. One OpenMP loop splits the elements
 * of all ranges evenly across the threads. */
CLIPL_API int clipl_adamw_step_flat(clipl_tensor *params, const clipl_tensor *grads,
                                    clipl_tensor *exp_avg, clipl_tensor *exp_avg_sq, int n,
                                    const int64_t *offset, const int64_t *length, const double *lr,
                                    const double *weight_decay, const int64_t *step, double beta1,
                                    double beta2, double eps);
/* momentum_buf may be NULL and first may be NULL when momentum is 0. */
CLIPL_API int clipl_sgd_step_flat(clipl_tensor *params, const clipl_tensor *grads,
                                  clipl_tensor *momentum_buf, int n, const int64_t *offset,
                                  const int64_t *length, const double *lr,
                                  const double *weight_decay, const int *first, double momentum,
                                  double dampening, int nesterov);
/* The same over n separate parameters (f32, contiguous, writable), each with its gradient (same
 * shape, f32 or bf16, any strides) and state tensors (f32, contiguous, param's shape); lr,
 * weight_decay and step are per-parameter arrays of n entries. */
/* AdamW (Loshchilov & Hutter, as torch.optim.AdamW): p -= lr * wd * p; m = b1 m + (1 - b1) g;
 * v = b2 v + (1 - b2) g^2; p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps).
 * step is the 1-based step count of each parameter (after incrementing). */
CLIPL_API int clipl_adamw_step(int n, clipl_tensor *const *params, clipl_tensor *const *grads,
                               clipl_tensor *const *exp_avg, clipl_tensor *const *exp_avg_sq,
                               const double *lr, const double *weight_decay, const int64_t *step,
                               double beta1, double beta2, double eps);
/* SGD with momentum (as torch.optim.SGD): g += wd * p; buf = g at the first step, else
 * momentum * buf + (1 - dampening) g; g = nesterov ? g + momentum * buf : buf; p -= lr * g.
 * momentum_buf entries may be NULL when momentum is 0. first: 1 on the first step. */
CLIPL_API int clipl_sgd_step(int n, clipl_tensor *const *params, clipl_tensor *const *grads,
                             clipl_tensor *const *momentum_buf, const double *lr,
                             const double *weight_decay, double momentum, double dampening,
                             int nesterov, int first);
/* Gives a read-only tensor (a file mapping) a private writable copy of its data, in place: the
 * header stays the same, so every holder of t sees the copy, which is contiguous. Other tensors
 * over the mapping keep reading the file. No-op for a writable tensor. Optimizers call it before
 * the first update. */
CLIPL_API int clipl_tensor_make_writable(clipl_tensor *t);
/* *norm = the L2 norm of n tensors taken together as one vector (any float dtype and strides),
 * accumulated in double: the global norm of gradient clipping. */
CLIPL_API int clipl_global_norm(int n, clipl_tensor *const *ts, double *norm);

/* ==== nn ====================================================================================== */
/* (engine/nn) OpenAI's CLIP model: VisionTransformer or ModifiedResNet image tower, causal text
 * Transformer, projections and logit_scale, computing exactly what OpenAI's clip/model.py computes.
 * Parameters keep OpenAI's state_dict names; HuggingFace CLIPModel names are mapped onto them. */

typedef struct clipl_model clipl_model;

enum { CLIPL_VISION_VIT = 0, CLIPL_VISION_RESNET = 1 }; /* clipl_model_config.vision_kind */
enum { CLIPL_TOWER_VISUAL = 0, CLIPL_TOWER_TEXT = 1 };  /* tower argument of block calls */
enum { CLIPL_TEXT_FULL_CONTEXT = 1 }; /* encode_text flag: run all context_length positions */

/* The architecture, as OpenAI's build_model() infers it from a state_dict. */
typedef struct clipl_model_config {
    int32_t embed_dim;          /* width of the joint embedding */
    int32_t vision_kind;        /* CLIPL_VISION_VIT or CLIPL_VISION_RESNET */
    int32_t image_resolution;   /* input size R of [N, 3, R, R] images */
    int32_t vision_layers[4];   /* ViT: blocks in [0] (others 0); ResNet: bottlenecks per stage */
    int32_t vision_width;       /* ViT width; ResNet stem width (stage widths 4w, 8w, 16w, 32w) */
    int32_t vision_patch_size;  /* ViT patch size (0 for ResNet) */
    int32_t vision_heads;       /* ViT: width/64; ResNet attention pool: width*32/64 */
    int32_t context_length;     /* text positions (77) */
    int32_t vocab_size;         /* token table rows (49408) */
    int32_t transformer_width;  /* text width */
    int32_t transformer_heads;  /* text heads (width/64) */
    int32_t transformer_layers; /* text blocks */
    int32_t act;                /* MLP activation: CLIPL_ACT_QUICK_GELU (OpenAI) or _GELU */
} clipl_model_config;

/* Options of loading (NULL: all defaults). */
typedef struct clipl_model_opts {
    int32_t dtype;           /* compute dtype of weights: CLIPL_F32 (0, default) or CLIPL_BF16 */
    int32_t vision_heads;    /* > 0 overrides the inferred / configured vision heads */
    int32_t text_heads;      /* > 0 overrides the text heads */
    int32_t batch_hint;      /* typical images per call, for oneDNN's weight layout (0: 16) */
    const char *config_path; /* JSON config (open_clip model config, open_clip_config.json or a
                                HuggingFace config.json) read for heads and activation; NULL:
                                looked for beside the weights file */
} clipl_model_opts;

/* Loads a model from a weights file in any format clipl_load_weights reads (safetensors with
 * OpenAI or HuggingFace names, torch.save .pt, OpenAI's TorchScript .pt), or from a folder: an
 * open_clip hub folder (open_clip_config.json + open_clip_model.safetensors or
 * open_clip_pytorch_model.bin) or a HuggingFace folder (config.json + model.safetensors or
 * pytorch_model.bin). fp16/bf16/f32 storage. Missing tensors or wrong shapes fail with a message
 * naming the file, the tensor and the expected shape. New handle or NULL. */
CLIPL_API clipl_model *clipl_model_load(const char *path, const clipl_model_opts *opts);
/* The same from a tensor dict (borrowed; the model keeps references to the tensors it uses, so d
 * may be freed after). source names the origin in error messages (NULL: "tdict"). New handle or
 * NULL. */
CLIPL_API clipl_model *clipl_model_from_tdict(const clipl_tdict *d, const char *source,
                                              const clipl_model_opts *opts);
/* A model of architecture cfg with seeded pseudo-random weights (scaled as OpenAI's
 * CLIP.initialize_parameters; the same seed gives the same weights everywhere). New handle or
 * NULL. */
CLIPL_API clipl_model *clipl_model_new(const clipl_model_config *cfg, uint64_t seed,
                                       const clipl_model_opts *opts);
/* Frees the model and its prepared weights. NULL is ignored. */
CLIPL_API void clipl_model_free(clipl_model *m);

/* Infers the architecture from a tensor dict's names and shapes as build_model() does (heads =
 * width/64, act QuickGELU). source names the origin in messages (may be NULL). */
CLIPL_API int clipl_model_config_infer(const clipl_tdict *d, const char *source,
                                       clipl_model_config *cfg);
/* Reads an architecture from a JSON file: open_clip's model config schema (embed_dim, vision_cfg,
 * text_cfg; as the named configs in models/configs), an open_clip_config.json (its model_cfg) or a
 * HuggingFace CLIPConfig (config.json). */
CLIPL_API int clipl_model_config_from_json(const char *path, clipl_model_config *cfg);
/* Checks cfg for consistency (positive sizes, heads dividing widths, resolution a multiple of
 * the patch size or of 32); the error names the field. */
CLIPL_API int clipl_model_config_check(const clipl_model_config *cfg);
/* Parameters of a model of architecture cfg, computed without allocating anything: PyTorch's
 * sum(p.numel() for p in model.parameters()), i.e. BatchNorm running statistics and
 * num_batches_tracked (buffers) excluded. -1 on an invalid config. */
CLIPL_API int64_t clipl_model_config_num_params(const clipl_model_config *cfg);
/* Floating-point operations (2 per multiply-add of every matmul and convolution, attention
 * products included; normalisations and activations not counted) of encoding one image and one
 * full context_length-token text. Either pointer may be NULL. */
CLIPL_API int clipl_model_config_flops(const clipl_model_config *cfg, int64_t *image_flops,
                                       int64_t *text_flops);

/* The model's architecture (copied into *cfg). */
CLIPL_API int clipl_model_get_config(const clipl_model *m, clipl_model_config *cfg);
/* Compute dtype of the prepared weights (CLIPL_F32 or CLIPL_BF16). */
CLIPL_API int clipl_model_dtype(const clipl_model *m);
/* Number of parameters (as clipl_model_config_num_params, from the tensors held). */
CLIPL_API int64_t clipl_model_num_params(const clipl_model *m);
/* exp(logit_scale), the factor of the logits. */
CLIPL_API double clipl_model_logit_scale(const clipl_model *m);
/* Format of the file the model came from ("safetensors", "pt", "torchscript", "" when built). */
CLIPL_API const char *clipl_model_source_format(const clipl_model *m);

/* ---- parameters and buffers: the state_dict with OpenAI's names and order ---- */
/* Entries (parameters and BatchNorm buffers; num_batches_tracked is not kept). */
CLIPL_API int clipl_model_param_count(const clipl_model *m);
/* Name (OpenAI key) / tensor (f32, [shape as in the checkpoint]) of entry i; NULL out of range.
 * Borrowed: valid until the model is freed or the entry replaced. Tensors loaded from an f32 file
 * may be read-only views of its mapping. */
CLIPL_API const char *clipl_model_param_name(const clipl_model *m, int i);
CLIPL_API clipl_tensor *clipl_model_param(const clipl_model *m, int i);
/* 1 when entry i is a buffer (BatchNorm running_mean / running_var), 0 for a parameter. */
CLIPL_API int clipl_model_param_is_buffer(const clipl_model *m, int i);
/* Index of the entry named name (OpenAI key), or -1 (no error set). */
CLIPL_API int clipl_model_param_find(const clipl_model *m, const char *name);
/* Replaces entry name by t (retained; any float dtype, converted to f32; shape must match). The
 * prepared weights are stale until clipl_model_prepare. */
CLIPL_API int clipl_model_set_param(clipl_model *m, const char *name, clipl_tensor *t);
/* Rebuilds every prepared weight (oneDNN layouts, BatchNorm folding, compute dtype) from the
 * current parameters: call after parameters were changed in place or replaced. */
CLIPL_API int clipl_model_prepare(clipl_model *m);

/* ---- whole encoders ---- */
/* images [N, 3, R, R] (f32 or bf16, any strides) -> dst [N, embed_dim] f32. New reference. */
CLIPL_API int clipl_model_encode_image(const clipl_model *m, const clipl_tensor *images,
                                       clipl_tensor **dst);
/* The same, also returning the outputs of n_blocks vision blocks (0-based indices in blocks[]:
 * ViT resblocks, or ResNet bottlenecks counted through layer1..layer4) into features[0..n-1]
 * (new references, f32: ViT [N, T, width], ResNet [N, C, H, W]). */
CLIPL_API int clipl_model_encode_image_features(const clipl_model *m, const clipl_tensor *images,
                                                int n_blocks, const int *blocks,
                                                clipl_tensor **features, clipl_tensor **dst);
/* tokens [N, context_length] (i32 or i64; a shorter row length T <= context_length is allowed)
 * -> dst [N, embed_dim] f32, pooled at each row's argmax (the end-of-text token). Each row is run
 * only up to its end token (exact: the mask is causal). New reference. */
CLIPL_API int clipl_model_encode_text(const clipl_model *m, const clipl_tensor *tokens,
                                      clipl_tensor **dst);
/* encode_text with flags: CLIPL_TEXT_FULL_CONTEXT runs all T positions (as OpenAI's code). */
CLIPL_API int clipl_model_encode_text_ex(const clipl_model *m, const clipl_tensor *tokens,
                                         clipl_tensor **dst, int flags);
/* OpenAI's CLIP.forward: logits_per_image [Ni, Nt] = exp(logit_scale) * normalize(img) @
 * normalize(txt)^T and logits_per_text its transpose (either output may be NULL). */
CLIPL_API int clipl_model_logits(const clipl_model *m, const clipl_tensor *images,
                                 const clipl_tensor *tokens, clipl_tensor **logits_per_image,
                                 clipl_tensor **logits_per_text);
/* The same from embeddings: image_features [Ni, E], text_features [Nt, E] (f32). */
CLIPL_API int clipl_model_logits_from_features(const clipl_model *m,
                                               const clipl_tensor *image_features,
                                               const clipl_tensor *text_features,
                                               clipl_tensor **logits_per_image,
                                               clipl_tensor **logits_per_text);

/* ---- single steps, so a script can run the blocks itself (each is one call; all f32 out) ---- */
/* Number of blocks of a tower: ViT resblocks, ResNet bottlenecks (sum of vision_layers), text
 * resblocks. */
CLIPL_API int clipl_model_block_count(const clipl_model *m, int tower);
/* Vision stem. ViT: conv1 patches + class token + positional embedding + ln_pre: images ->
 * [N, T, width]. ResNet: three conv+BN+ReLU and the 2x2 average pool -> [N, width, R/4, R/4]. */
CLIPL_API int clipl_model_visual_stem(const clipl_model *m, const clipl_tensor *images,
                                      clipl_tensor **dst);
/* Block i (0-based) of tower: ViT / text resblock [N, T, W] -> [N, T, W] (text with the causal
 * mask over T), ResNet bottleneck [N, C, H, W] -> [N, C', H', W']. src is not modified. */
CLIPL_API int clipl_model_block_forward(const clipl_model *m, int tower, int i,
                                        const clipl_tensor *src, clipl_tensor **dst);
/* Vision head. ViT: ln_post(src[:, 0]) @ proj: [N, T, width] -> [N, embed_dim]. ResNet:
 * attention pool of [N, C, H, W] -> [N, embed_dim]. */
CLIPL_API int clipl_model_visual_head(const clipl_model *m, const clipl_tensor *src,
                                      clipl_tensor **dst);
/* ViT only: ln_post over every token of src [N, T, width] -> [N, T, width] (for dense
 * features). */
CLIPL_API int clipl_model_visual_ln_post(const clipl_model *m, const clipl_tensor *src,
                                         clipl_tensor **dst);
/* Text embedding: token_embedding[tokens] + positional_embedding[:T]: [N, T] -> [N, T, width]. */
CLIPL_API int clipl_model_text_embed(const clipl_model *m, const clipl_tensor *tokens,
                                     clipl_tensor **dst);
/* Text head: ln_final(src[n, argmax(tokens[n])]) @ text_projection: src [N, T, width] and the
 * tokens [N, T'] (T' >= T is allowed as long as the argmax is < T) -> [N, embed_dim]. */
CLIPL_API int clipl_model_text_head(const clipl_model *m, const clipl_tensor *src,
                                    const clipl_tensor *tokens, clipl_tensor **dst);

#ifdef __cplusplus
}
#endif

#endif /* CLIPL_H */
