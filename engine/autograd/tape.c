/*
 * tape.c - the autograd tape: grad mode, nodes, requires_grad/grad/detach, and the backward pass
 * (Kahn's topological order over the nodes reachable from the root; each node's output gradient
 * is freed as soon as its backward has run).
 */
#include "autograd.h"

#include <stdlib.h>
#include <string.h>

_Thread_local int clipl__grad_off;

static int64_t live_nodes;
static uint64_t mark_gen;

struct clipl_autograd {
    clipl__node *fn;    /* producer (one reference), NULL for a leaf */
    clipl_tensor *grad; /* accumulated gradient (one reference) or NULL */
    int32_t refcount;   /* the tensor's, plus its producer's after clipl_tensor_retain_grad */
};

static void ag_release(clipl_autograd *ag)
{
    if (!ag || __atomic_sub_fetch(&ag->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    clipl__node_release(ag->fn);
    clipl_tensor_release(ag->grad);
    free(ag);
}

int clipl_set_grad_enabled(int on)
{
    int prev = clipl__grad_off == 0;
    clipl__grad_off = on ? 0 : 1;
    return prev;
}

int clipl_is_grad_enabled(void) { return clipl__grad_off == 0; }

int64_t clipl_autograd_live_nodes(void) { return __atomic_load_n(&live_nodes, __ATOMIC_RELAXED); }

static bool is_float(int dt) { return dt == CLIPL_F32 || dt == CLIPL_BF16 || dt == CLIPL_F16; }

int clipl__ag_inplace(const char *op, const clipl_tensor *t, const clipl_tensor *other)
{
    if (clipl__grad_off)
        return CLIPL_OK;
    char b[96];
    if (clipl__ag_req(t))
        return clipl__err(CLIPL_EINVAL,
                          "%s: in-place op on a tensor [%s] that requires grad (a leaf or a result "
                          "recorded for backward); use the out-of-place form, or run it with grad "
                          "mode off (clip.no_grad)",
                          op, clipl__tshape(b, sizeof b, t));
    if (clipl__ag_req(other))
        return clipl__err(CLIPL_EINVAL,
                          "%s: in-place op with an operand [%s] that requires grad cannot be "
                          "recorded; use the out-of-place form",
                          op, clipl__tshape(b, sizeof b, other));
    return CLIPL_OK;
}

int clipl__ag_no_backward(const char *op, const char *instead)
{
    return clipl__err(CLIPL_EUNSUPPORTED,
                      "%s: an input requires grad but prepared weights have no backward; %s", op,
                      instead);
}

/* ---- nodes ---- */

clipl__node *clipl__node_new(const char *name, clipl__bwd_fn fn, int n_in,
                             const clipl_tensor *const *ins)
{
    clipl__node *n = calloc(1, sizeof *n);
    clipl__edge *e = calloc((size_t)(n_in > 0 ? n_in : 1), sizeof *e);
    if (!n || !e) {
        free(n);
        free(e);
        clipl__err(CLIPL_ENOMEM, "%s: out of memory recording the op", name);
        return NULL;
    }
    n->refcount = 1;
    n->name = name;
    n->backward = fn;
    n->n_in = n_in;
    n->in = e;
    for (int k = 0; k < n_in; k++) {
        const clipl_tensor *t = ins[k];
        if (!t)
            continue;
        e[k].dt = t->dt;
        e[k].ndim = t->ndim;
        memcpy(e[k].shape, t->shape, sizeof e[k].shape);
        if (!clipl__ag_req(t) || !is_float(t->dt))
            continue;
        if (t->ag && t->ag->fn) {
            e[k].fn = t->ag->fn;
            __atomic_fetch_add(&e[k].fn->refcount, 1, __ATOMIC_RELAXED);
        } else {
            e[k].leaf = clipl_tensor_retain((clipl_tensor *)t);
        }
    }
    __atomic_fetch_add(&live_nodes, 1, __ATOMIC_RELAXED);
    return n;
}

static void free_saved(clipl__node *n)
{
    for (int i = 0; i < CLIPL__NODE_SAVED; i++) {
        clipl_tensor_release(n->saved[i]);
        n->saved[i] = NULL;
    }
}

void clipl__node_release(clipl__node *n)
{
    /* iterative, so that a long chain of nodes does not recurse deeply */
    clipl__node *stack_buf[64];
    clipl__node **stack = stack_buf;
    size_t cap = 64, top = 0;
    if (n)
        stack[top++] = n;
    while (top) {
        clipl__node *x = stack[--top];
        if (__atomic_sub_fetch(&x->refcount, 1, __ATOMIC_ACQ_REL) != 0)
            continue;
        for (int k = 0; k < x->n_in; k++) {
            clipl_tensor_release(x->in[k].leaf);
            if (!x->in[k].fn)
                continue;
            if (top == cap) {
                size_t nc = cap * 2;
                clipl__node **ns = malloc(nc * sizeof *ns);
                if (!ns)
                    continue; /* leaks this subgraph rather than crash */
                memcpy(ns, stack, top * sizeof *ns);
                if (stack != stack_buf)
                    free(stack);
                stack = ns;
                cap = nc;
            }
            stack[top++] = x->in[k].fn;
        }
        free_saved(x);
        clipl_tensor_release(x->gout);
        ag_release(x->retain);
        free(x->sizes);
        free(x->in);
        free(x);
        __atomic_fetch_sub(&live_nodes, 1, __ATOMIC_RELAXED);
    }
    if (stack != stack_buf)
        free(stack);
}

clipl_tensor *clipl__ag_alias(const clipl_tensor *t)
{
    clipl_tensor *a =
        clipl__tensor_wrap(t->storage, t->dt, t->ndim, t->shape, t->strides, t->offset);
    if (a)
        a->flags = t->flags & CLIPL_TF_READONLY;
    return a;
}

int clipl__node_save(clipl__node *n, int i, const clipl_tensor *t)
{
    if (!t)
        return CLIPL_OK;
    clipl_tensor *a = clipl__ag_alias(t);
    if (!a)
        return clipl_errcode();
    clipl_tensor_release(n->saved[i]);
    n->saved[i] = a;
    return CLIPL_OK;
}

static clipl_autograd *ag_of(clipl_tensor *t)
{
    if (!t->ag) {
        t->ag = calloc(1, sizeof *t->ag);
        if (!t->ag)
            clipl__err(CLIPL_ENOMEM, "autograd: out of memory");
        else
            t->ag->refcount = 1;
    }
    return t->ag;
}

int clipl__node_attach(clipl__node *n, clipl_tensor *out)
{
    clipl_autograd *ag = ag_of(out);
    if (!ag) {
        clipl__node_release(n);
        return CLIPL_ENOMEM;
    }
    clipl__node_release(ag->fn);
    ag->fn = n;
    out->flags |= CLIPL_TF_REQUIRES_GRAD;
    return CLIPL_OK;
}

int clipl__node_finish(clipl__node *n, clipl_tensor **dst, int rc)
{
    if (!rc && !n)
        rc = clipl_errcode() ? clipl_errcode() : CLIPL_ENOMEM;
    if (!rc)
        rc = clipl__node_attach(n, *dst);
    else
        clipl__node_release(n);
    if (rc) {
        clipl_tensor_release(*dst);
        *dst = NULL;
    }
    return rc;
}

void clipl__ag_free(clipl_tensor *t)
{
    clipl_autograd *ag = t->ag;
    t->ag = NULL;
    t->flags &= ~CLIPL_TF_REQUIRES_GRAD;
    if (!ag)
        return;
    /* the history goes with the tensor (a producer that retains this state for retain_grad must
     * not keep itself alive through it) */
    clipl__node *fn = ag->fn;
    ag->fn = NULL;
    clipl__node_release(fn);
    ag_release(ag);
}

int clipl_tensor_retain_grad(clipl_tensor *t)
{
    if (!t)
        return clipl__err(CLIPL_EINVAL, "retain_grad: NULL tensor");
    if (!t->ag || !t->ag->fn)
        return CLIPL_OK; /* leaves keep their gradient anyway */
    clipl__node *n = t->ag->fn;
    if (n->retain == t->ag)
        return CLIPL_OK;
    __atomic_fetch_add(&t->ag->refcount, 1, __ATOMIC_RELAXED);
    ag_release(n->retain);
    n->retain = t->ag;
    return CLIPL_OK;
}

/* ---- public state ---- */

int clipl_tensor_set_requires_grad(clipl_tensor *t, int on)
{
    char b[96];
    if (!t)
        return clipl__err(CLIPL_EINVAL, "requires_grad: NULL tensor");
    if (t->ag && t->ag->fn) {
        if (on)
            return CLIPL_OK;
        return clipl__err(CLIPL_EINVAL,
                          "requires_grad: the tensor [%s] is the result of a recorded op (%s); "
                          "only leaves can stop requiring grad (use detach)",
                          clipl__tshape(b, sizeof b, t), t->ag->fn->name);
    }
    if (on && !is_float(t->dt))
        return clipl__err(CLIPL_EINVAL,
                          "requires_grad: only float tensors can require grad, this one is %s [%s]",
                          clipl_dtype_name(t->dt), clipl__tshape(b, sizeof b, t));
    if (on) {
        if (!ag_of(t))
            return CLIPL_ENOMEM;
        t->flags |= CLIPL_TF_REQUIRES_GRAD;
    } else {
        t->flags &= ~CLIPL_TF_REQUIRES_GRAD;
    }
    return CLIPL_OK;
}

int clipl_tensor_requires_grad(const clipl_tensor *t) { return clipl__ag_req(t) ? 1 : 0; }

int clipl_tensor_is_leaf(const clipl_tensor *t) { return !(t && t->ag && t->ag->fn); }

const char *clipl_tensor_grad_fn(const clipl_tensor *t)
{
    return t && t->ag && t->ag->fn ? t->ag->fn->name : NULL;
}

clipl_tensor *clipl_tensor_grad(const clipl_tensor *t)
{
    if (!t || !t->ag || !t->ag->grad)
        return NULL;
    return clipl_tensor_retain(t->ag->grad);
}

int clipl_tensor_set_grad(clipl_tensor *t, clipl_tensor *g)
{
    char b1[96], b2[96];
    if (!t)
        return clipl__err(CLIPL_EINVAL, "set_grad: NULL tensor");
    if (g && !clipl__same_shape(t, g))
        return clipl__err(CLIPL_ESHAPE, "set_grad: gradient [%s] does not match the tensor [%s]",
                          clipl__tshape(b1, sizeof b1, g), clipl__tshape(b2, sizeof b2, t));
    if (!g && !t->ag)
        return CLIPL_OK;
    clipl_autograd *ag = ag_of(t);
    if (!ag)
        return CLIPL_ENOMEM;
    clipl_tensor_retain(g);
    clipl_tensor_release(ag->grad);
    ag->grad = g;
    return CLIPL_OK;
}

int clipl_tensor_detach(const clipl_tensor *t, clipl_tensor **dst)
{
    if (!t || !dst)
        return clipl__err(CLIPL_EINVAL, "detach: NULL argument");
    clipl_tensor *a = clipl__ag_alias(t);
    if (!a)
        return clipl_errcode();
    *dst = a;
    return CLIPL_OK;
}

/* ---- backward ---- */

/* *acc += g (out of place: *acc may be shared with a saved tensor or a view). Takes g's
 * reference. */
static int accumulate(clipl_tensor **acc, clipl_tensor *g)
{
    if (!*acc) {
        *acc = g;
        return CLIPL_OK;
    }
    clipl_tensor *s = NULL;
    int rc = clipl_add(*acc, g, &s, 1.0);
    clipl_tensor_release(g);
    if (rc)
        return rc;
    clipl_tensor_release(*acc);
    *acc = s;
    return CLIPL_OK;
}

static int accumulate_leaf(clipl_tensor *leaf, clipl_tensor *g)
{
    clipl_autograd *ag = ag_of(leaf);
    if (!ag)
        return CLIPL_ENOMEM;
    if (ag->grad)
        return clipl_add_(ag->grad, g, 1.0);
    /* the leaf's own contiguous copy, so later accumulation can be in place */
    return clipl_tensor_to(g, &ag->grad, leaf->dt);
}

/* Brings a computed input gradient to the edge's dtype and checks its shape. */
static int conform(const clipl__node *n, int k, clipl_tensor **g)
{
    const clipl__edge *e = &n->in[k];
    char b1[96], b2[96];
    if ((*g)->ndim != e->ndim || memcmp((*g)->shape, e->shape, sizeof(int64_t) * e->ndim) != 0)
        return clipl__err(CLIPL_ESHAPE,
                          "backward of %s: gradient of input %d is [%s], expected [%s] "
                          "(internal error)",
                          n->name, k, clipl__tshape(b1, sizeof b1, *g),
                          clipl__shape_str(b2, sizeof b2, e->ndim, e->shape));
    if ((*g)->dt == e->dt)
        return CLIPL_OK;
    clipl_tensor *c = NULL;
    int rc = clipl_tensor_to(*g, &c, e->dt);
    if (rc)
        return rc;
    clipl_tensor_release(*g);
    *g = c;
    return CLIPL_OK;
}

typedef struct nvec {
    clipl__node **v;
    size_t n, cap;
} nvec;

static int push(nvec *s, clipl__node *x)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        clipl__node **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv)
            return clipl__err(CLIPL_ENOMEM, "backward: out of memory");
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = x;
    return CLIPL_OK;
}

static int run_backward(const clipl_tensor *t, clipl_tensor *g0, int retain)
{
    nvec all = {0}, work = {0};
    int rc = CLIPL_OK;
    clipl__node *root = t->ag->fn;
    uint64_t gen = __atomic_add_fetch(&mark_gen, 1, __ATOMIC_RELAXED);
    /* every node reachable from the root, with the count of edges into it */
    root->mark = gen;
    root->deps = 0;
    if ((rc = push(&work, root)))
        goto out;
    while (work.n) {
        clipl__node *x = work.v[--work.n];
        if ((rc = push(&all, x)))
            goto out;
        if (x->freed) {
            rc = clipl__err(CLIPL_EINVAL,
                            "backward: the graph through %s was already freed by an earlier "
                            "backward; pass retain_graph to the first backward to run it twice",
                            x->name);
            goto out;
        }
        for (int k = 0; k < x->n_in; k++) {
            clipl__node *y = x->in[k].fn;
            if (!y)
                continue;
            if (y->mark != gen) {
                y->mark = gen;
                y->deps = 0;
                if ((rc = push(&work, y)))
                    goto out;
            }
            y->deps++;
        }
    }
    root->gout = g0;
    g0 = NULL;
    work.n = 0;
    if ((rc = push(&work, root)))
        goto out;
    while (work.n) {
        clipl__node *x = work.v[--work.n];
        clipl_tensor *gin_buf[8] = {NULL}, **gin = gin_buf;
        if (x->n_in > 8 && !(gin = calloc((size_t)x->n_in, sizeof *gin))) {
            rc = clipl__err(CLIPL_ENOMEM, "backward: out of memory");
            goto out;
        }
        if (x->gout && x->retain) { /* retain_grad: keep a copy of the output's gradient */
            clipl_tensor **rg = &x->retain->grad;
            rc = *rg ? clipl_add_(*rg, x->gout, 1.0) : clipl_tensor_clone(x->gout, rg);
        }
        if (x->gout && !rc) {
            rc = x->backward(x, x->gout, gin);
            if (rc)
                clipl__err_prefix("backward of %s", x->name);
        }
        clipl_tensor_release(x->gout);
        x->gout = NULL;
        for (int k = 0; k < x->n_in; k++) {
            clipl__edge *e = &x->in[k];
            clipl_tensor *g = gin[k];
            gin[k] = NULL;
            if (rc == CLIPL_OK && g && (e->fn || e->leaf)) {
                rc = conform(x, k, &g);
                if (rc == CLIPL_OK) {
                    if (e->fn) {
                        rc = accumulate(&e->fn->gout, g);
                        g = NULL;
                    } else {
                        rc = accumulate_leaf(e->leaf, g);
                    }
                }
            }
            clipl_tensor_release(g);
            if (e->fn && --e->fn->deps == 0 && rc == CLIPL_OK)
                rc = push(&work, e->fn);
        }
        if (gin != gin_buf)
            free(gin);
        if (!retain) {
            free_saved(x);
            x->freed = 1;
        }
        if (rc)
            goto out;
    }
out:
    for (size_t i = 0; i < all.n; i++) {
        clipl_tensor_release(all.v[i]->gout);
        all.v[i]->gout = NULL;
    }
    clipl_tensor_release(g0);
    free(all.v);
    free(work.v);
    return rc;
}

int clipl_backward(const clipl_tensor *t, const clipl_tensor *grad, int retain_graph)
{
    char b1[96], b2[96];
    if (!t)
        return clipl__err(CLIPL_EINVAL, "backward: NULL tensor");
    if (!clipl__ag_req(t))
        return clipl__err(CLIPL_EINVAL,
                          "backward: the tensor [%s] does not require grad and has no history "
                          "(was an input marked with requires_grad, and grad mode on?)",
                          clipl__tshape(b1, sizeof b1, t));
    clipl_tensor *g0 = NULL;
    int rc;
    if (grad) {
        if (!clipl__same_shape(grad, t))
            return clipl__err(CLIPL_ESHAPE,
                              "backward: gradient [%s] does not match the tensor [%s]",
                              clipl__tshape(b1, sizeof b1, grad), clipl__tshape(b2, sizeof b2, t));
        if ((rc = clipl_tensor_to(grad, &g0, t->dt)))
            return rc;
    } else {
        if (clipl_tensor_numel(t) != 1)
            return clipl__err(CLIPL_ESHAPE,
                              "backward: the tensor [%s] has %lld elements; a gradient is needed "
                              "unless it has one (e.g. a loss)",
                              clipl__tshape(b1, sizeof b1, t), (long long)clipl_tensor_numel(t));
        g0 = clipl_tensor_empty(t->dt, t->ndim, t->shape);
        if (!g0)
            return clipl_errcode();
        clipl__store(g0->ptr, g0->dt, 1.0);
    }
    int saved_mode = clipl__grad_off;
    clipl__grad_off = 1;
    if (!t->ag || !t->ag->fn) {
        rc = accumulate_leaf((clipl_tensor *)t, g0);
        clipl_tensor_release(g0);
    } else {
        rc = run_backward(t, g0, retain_graph);
    }
    clipl__grad_off = saved_mode;
    return rc;
}

/* ---- shared helper ---- */

/* Column sums of a contiguous f32 [R, C] (a gradient reduced over its leading dims, e.g. a bias
 * gradient): double accumulators, columns split across threads. */
static int column_sums(const clipl_tensor *g, int64_t R, int64_t C, int ndim, const int64_t *shape,
                       clipl_tensor **dst)
{
    clipl_tensor *out = clipl_tensor_empty(CLIPL_F32, ndim, shape);
    if (!out)
        return clipl_errcode();
    const float *src = g->ptr;
    float *o = out->ptr;
    enum { BLOCK = 256 };
    int64_t nblocks = (C + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (R * C > 65536)
    for (int64_t b = 0; b < nblocks; b++) {
        double acc[BLOCK];
        int64_t c0 = b * BLOCK, n = C - c0 < BLOCK ? C - c0 : BLOCK;
        for (int64_t j = 0; j < n; j++)
            acc[j] = 0;
        for (int64_t r = 0; r < R; r++) {
            const float *row = src + r * C + c0;
            for (int64_t j = 0; j < n; j++)
                acc[j] += row[j];
        }
        for (int64_t j = 0; j < n; j++)
            o[c0 + j] = (float)acc[j];
    }
    *dst = out;
    return CLIPL_OK;
}

int clipl__sum_to(const clipl_tensor *g, int ndim, const int64_t *shape, clipl_tensor **dst)
{
    char b1[96], b2[96];
    if (g->dt == CLIPL_F32 && g->ndim > ndim && clipl_tensor_is_contiguous(g)) {
        /* the fast case: only leading dims go (a bias gradient) */
        int lead = g->ndim - ndim;
        int64_t R = 1, C = 1;
        bool trailing = true;
        for (int i = 0; i < ndim; i++) {
            trailing = trailing && shape[i] == g->shape[lead + i];
            C *= shape[i];
        }
        for (int i = 0; i < lead; i++)
            R *= g->shape[i];
        if (trailing && R > 0 && C > 0)
            return column_sums(g, R, C, ndim, shape, dst);
    }
    clipl_tensor *cur = clipl_tensor_retain((clipl_tensor *)g), *nx = NULL;
    int rc = CLIPL_OK;
    int lead = g->ndim - ndim;
    if (lead < 0)
        goto mismatch;
    if (lead > 1) { /* the leading dims go in one reduction when they can be merged by a view */
        int64_t s2[CLIPL_MAX_DIMS], rows = 1;
        for (int i = 0; i < lead; i++)
            rows *= g->shape[i];
        s2[0] = rows;
        memcpy(s2 + 1, g->shape + lead, sizeof(int64_t) * (size_t)ndim);
        if (clipl_tensor_view(cur, &nx, ndim + 1, s2) == CLIPL_OK) {
            clipl_tensor_release(cur);
            cur = nx;
            nx = NULL;
            lead = 1;
        } else {
            clipl_errclear();
        }
    }
    for (int i = 0; i < cur->ndim; i++) {
        int j = i - lead;
        if (j >= 0 && shape[j] == cur->shape[i])
            continue;
        if (j >= 0 && shape[j] != 1)
            goto mismatch;
        if ((rc = clipl_sum(cur, &nx, i, 1)))
            goto fail;
        clipl_tensor_release(cur);
        cur = nx;
        nx = NULL;
    }
    if (lead == 0 && clipl__same_shape(cur, g) && cur == g) {
        *dst = cur;
        return CLIPL_OK;
    }
    rc = clipl_tensor_reshape(cur, dst, ndim, shape);
    clipl_tensor_release(cur);
    return rc;
mismatch:
    rc = clipl__err(CLIPL_ESHAPE, "sum_to: [%s] cannot be reduced to [%s]",
                    clipl__tshape(b1, sizeof b1, g), clipl__shape_str(b2, sizeof b2, ndim, shape));
fail:
    clipl_tensor_release(cur);
    return rc;
}

int clipl__sum_to_edge(const clipl__node *n, int k, const clipl_tensor *g, clipl_tensor **gin)
{
    if (!g)
        return CLIPL_OK;
    return clipl__sum_to(g, n->in[k].ndim, n->in[k].shape, gin);
}
