/*
 * autograd.h - the tape (internal): grad mode, recorded nodes, and the hooks that the ops call.
 *
 * An op that may be differentiated starts with one line:
 *     if (CLIPL__AG_ON2(a, b)) return clipl__ag_binary(a, b, dst, op, alpha);
 * The clipl__ag_<op> wrapper runs the op itself with grad mode off and, when the result is a float
 * tensor, records a node holding what the backward needs. In-place ops start with
 *     if ((rc = clipl__ag_inplace("add_", a, b))) return rc;
 */
#ifndef CLIPL_AUTOGRAD_H
#define CLIPL_AUTOGRAD_H

#include "internal.h"

/* Nonzero while grad mode is off on this thread (a count, so nested no_grad scopes work). */
extern _Thread_local int clipl__grad_off;

static inline bool clipl__ag_req(const clipl_tensor *t)
{
    return t && (t->flags & CLIPL_TF_REQUIRES_GRAD);
}
#define CLIPL__AG_ON1(a) (!clipl__grad_off && clipl__ag_req(a))
#define CLIPL__AG_ON2(a, b) (!clipl__grad_off && (clipl__ag_req(a) || clipl__ag_req(b)))
#define CLIPL__AG_ON3(a, b, c)                                                                     \
    (!clipl__grad_off && (clipl__ag_req(a) || clipl__ag_req(b) || clipl__ag_req(c)))

/* Refuses an in-place op on t (or with an operand `other` that requires grad) while grad mode is
 * on. other may be NULL. */
int clipl__ag_inplace(const char *op, const clipl_tensor *t, const clipl_tensor *other);

typedef struct clipl__node clipl__node;
/* Computes the gradients of the inputs from g (the gradient of the output; never NULL). gin[k] is
 * left NULL for inputs that need none (clipl__node_needs). Runs with grad mode off. */
typedef int (*clipl__bwd_fn)(clipl__node *n, const clipl_tensor *g, clipl_tensor **gin);

typedef struct clipl__edge {
    clipl__node *fn;    /* producer of the input (one reference) or NULL */
    clipl_tensor *leaf; /* the input when it is a leaf that requires grad (one reference) */
    int32_t dt, ndim;   /* the input's dtype and shape: gradients are given in them */
    int64_t shape[CLIPL_MAX_DIMS];
} clipl__edge;

enum { CLIPL__NODE_SAVED = 5 };

struct clipl__node {
    int32_t refcount;
    int32_t freed; /* saved tensors dropped by a backward without retain_graph */
    const char *name;
    clipl__bwd_fn backward;
    int n_in;
    clipl__edge *in;
    clipl_tensor *saved[CLIPL__NODE_SAVED]; /* data-only aliases (no history) */
    int64_t iv[2 * CLIPL_MAX_DIMS];         /* integer attributes */
    double fv[4];                           /* float attributes */
    int64_t *sizes;                         /* per-input sizes (cat), malloc'ed */
    clipl_autograd *retain; /* the output's state when retain_grad asked for its gradient */
    /* backward pass scratch */
    uint64_t mark;
    int64_t deps;
    clipl_tensor *gout;
};

/* A new node with an edge per input (inputs may be NULL or not require grad). NULL on ENOMEM. */
clipl__node *clipl__node_new(const char *name, clipl__bwd_fn fn, int n_in,
                             const clipl_tensor *const *ins);
/* Attaches n as out's history (takes the caller's reference to n, also on failure) and marks out
 * as requiring grad. */
int clipl__node_attach(clipl__node *n, clipl_tensor *out);
void clipl__node_release(clipl__node *n);
/* 1 when input k needs a gradient. */
static inline bool clipl__node_needs(const clipl__node *n, int k)
{
    return n->in[k].fn || n->in[k].leaf;
}
/* A data-only alias of t (same storage and geometry, no history, no grad flag). NULL on ENOMEM. */
clipl_tensor *clipl__ag_alias(const clipl_tensor *t);
/* Saves an alias of t into n->saved[i] (t may be NULL). */
int clipl__node_save(clipl__node *n, int i, const clipl_tensor *t);
/* The end of every clipl__ag_<op> wrapper: with rc == 0 and n not NULL, attaches n as *dst's
 * history; otherwise releases n and *dst (set to NULL). Returns the status. */
int clipl__node_finish(clipl__node *n, clipl_tensor **dst, int rc);
/* Frees out's autograd state (called when a tensor header is freed or reset). */
void clipl__ag_free(clipl_tensor *t);

/* dst = g summed down to shape (broadcast dims reduced), as a new reference. */
int clipl__sum_to(const clipl_tensor *g, int ndim, const int64_t *shape, clipl_tensor **dst);
/* gin = g summed down to the shape of n's input k; nothing (CLIPL_OK) when g is NULL. */
int clipl__sum_to_edge(const clipl__node *n, int k, const clipl_tensor *g, clipl_tensor **gin);

/* ---- wrappers: same arguments as the public op ---- */
/* views and copies (tensor.c) */
int clipl__ag_view_op(int kind, const clipl_tensor *t, clipl_tensor **dst, int ndim,
                      const int64_t *args);
enum {
    CLIPL__V_NARROW,    /* args: dim, start, length */
    CLIPL__V_SELECT,    /* dim, index */
    CLIPL__V_TRANSPOSE, /* d0, d1 */
    CLIPL__V_PERMUTE,   /* ndim entries */
    CLIPL__V_VIEW,      /* ndim sizes */
    CLIPL__V_RESHAPE,   /* ndim sizes */
    CLIPL__V_EXPAND,    /* ndim sizes */
    CLIPL__V_UNSQUEEZE, /* dim */
    CLIPL__V_SQUEEZE,   /* dim */
    CLIPL__V_CONTIGUOUS,
    CLIPL__V_CLONE,
    CLIPL__V_TO /* dtype */
};
/* plain ops */
int clipl__ag_binary(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst, int op,
                     double alpha);
int clipl__ag_binary_scalar(const clipl_tensor *a, double s, clipl_tensor **dst, int op,
                            int reversed);
int clipl__ag_reduce(int kind, const clipl_tensor *src, clipl_tensor **values,
                     clipl_tensor **indices, int dim, int keepdim, double p);
enum { CLIPL__R_SUM, CLIPL__R_MEAN, CLIPL__R_MAX, CLIPL__R_MIN, CLIPL__R_NORM };
int clipl__ag_topk(const clipl_tensor *src, clipl_tensor **values, clipl_tensor **indices,
                   int64_t k, int dim, int largest);
int clipl__ag_join(int stack, const clipl_tensor *const *srcs, int n, clipl_tensor **dst, int dim);
int clipl__ag_index_select(const clipl_tensor *src, const clipl_tensor *index, clipl_tensor **dst,
                           int dim);
int clipl__ag_gather(const clipl_tensor *src, const clipl_tensor *index, clipl_tensor **dst,
                     int dim);
int clipl__ag_embedding(const clipl_tensor *ids, const clipl_tensor *weight, clipl_tensor **dst);
int clipl__ag_masked_fill(const clipl_tensor *src, const clipl_tensor *mask, clipl_tensor **dst,
                          double value);
int clipl__ag_where(const clipl_tensor *cond, const clipl_tensor *a, const clipl_tensor *b,
                    clipl_tensor **dst);
/* oneDNN ops */
int clipl__ag_matmul(const clipl_tensor *a, const clipl_tensor *b, const clipl_tensor *bias,
                     clipl_tensor **dst, const clipl_matmul_opts *opts);
int clipl__ag_linear(const clipl_tensor *x, const clipl_tensor *weight, const clipl_tensor *bias,
                     clipl_tensor **dst, int act);
int clipl__ag_conv2d(const clipl_tensor *src, const clipl_tensor *weights, const clipl_tensor *bias,
                     clipl_tensor **dst, const clipl_conv2d_opts *opts);
int clipl__ag_batch_norm(const clipl_tensor *src, const clipl_tensor *mean, const clipl_tensor *var,
                         const clipl_tensor *weight, const clipl_tensor *bias, clipl_tensor **dst,
                         double eps);
int clipl__ag_layer_norm(const clipl_tensor *src, int norm_ndim, const clipl_tensor *weight,
                         const clipl_tensor *bias, clipl_tensor **dst, double eps,
                         clipl_tensor **mean, clipl_tensor **rstd);
int clipl__ag_softmax(const clipl_tensor *src, clipl_tensor **dst, int dim, int log);
int clipl__ag_eltwise(const clipl_tensor *src, clipl_tensor **dst, int act, double alpha,
                      double beta);
int clipl__ag_pool2d(const clipl_tensor *src, clipl_tensor **dst, int kind, int64_t kh, int64_t kw,
                     int64_t sh, int64_t sw, int64_t ph, int64_t pw, int ceil_mode);
int clipl__ag_attention(const clipl_tensor *q, const clipl_tensor *k, const clipl_tensor *v,
                        const clipl_tensor *mask, clipl_tensor **dst, double scale,
                        clipl_tensor **probs);
/* Ops with prepared weights have no backward: an error naming op when x requires grad. */
int clipl__ag_no_backward(const char *op, const char *instead);

/* oneDNN backward kernels (backward_dnnl.c) */
int clipl__eltwise_backward(const clipl_tensor *src, const clipl_tensor *g, clipl_tensor **gsrc,
                            int act, double alpha, double beta);

#endif /* CLIPL_AUTOGRAD_H */
