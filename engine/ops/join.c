/*
 * join.c - cat (along an existing dim) and stack (along a new dim).
 */
#include "../autograd/autograd.h"
#include "plain.h"

#include <stdlib.h>
#include <string.h>

static bool skipped(const clipl_tensor *t) { return t->ndim == 1 && t->shape[0] == 0; }

/* 1 when grad mode is on and one of the tensors requires grad (NULLs are checked later). */
static bool any_requires_grad(const clipl_tensor *const *srcs, int n)
{
    for (int i = 0; !clipl__grad_off && srcs && i < n; i++)
        if (clipl__ag_req(srcs[i]))
            return true;
    return false;
}

/* A non-empty list without NULL tensors and an output slot, or an error naming op. */
static int check_list(const char *op, const clipl_tensor *const *srcs, int n, clipl_tensor **dst)
{
    if (!srcs || !dst || n <= 0)
        return clipl__err(CLIPL_EINVAL, "%s: expected a non-empty list of tensors, got %d", op, n);
    for (int i = 0; i < n; i++)
        if (!srcs[i])
            return clipl__err(CLIPL_EINVAL, "%s: tensor %d is NULL", op, i);
    return CLIPL_OK;
}

int clipl_cat(const clipl_tensor *const *srcs, int n, clipl_tensor **dst, int dim)
{
    if (dst && any_requires_grad(srcs, n))
        return clipl__ag_join(0, srcs, n, dst, dim);
    char b1[128], b2[128];
    int rc = check_list("cat", srcs, n, dst);
    if (rc)
        return rc;
    int ref = -1, dt = -1;
    for (int i = 0; i < n; i++) {
        dt = dt < 0 ? srcs[i]->dt : clipl__common_dtype(dt, srcs[i]->dt);
        if (ref < 0 && !skipped(srcs[i]))
            ref = i;
    }
    if (ref < 0)
        ref = 0; /* all are 1-d and empty: the result is too */
    const clipl_tensor *r = srcs[ref];
    if (r->ndim == 0)
        return clipl__err(CLIPL_EINVAL, "cat: tensor %d is 0-d; use stack to join scalars", ref);
    int d = clipl__wrap_dim(dim, r->ndim);
    if (d < 0)
        return clipl__err(CLIPL_EINDEX, "cat: dim %d out of range for %d-d tensors", dim, r->ndim);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const clipl_tensor *t = srcs[i];
        if (i != ref && skipped(t))
            continue;
        bool ok = t->ndim == r->ndim;
        for (int k = 0; ok && k < r->ndim; k++)
            ok = k == d || t->shape[k] == r->shape[k];
        if (!ok)
            return clipl__err(CLIPL_ESHAPE,
                              "cat: tensor %d has shape %s, which does not match tensor %d's %s "
                              "outside dim %d",
                              i, clipl__tshape(b1, sizeof b1, t), ref,
                              clipl__tshape(b2, sizeof b2, r), d);
        total += t->shape[d];
    }
    int64_t shape[CLIPL_MAX_DIMS];
    memcpy(shape, r->shape, sizeof shape);
    shape[d] = total;
    clipl_tensor *out = plain_new(dt, r->ndim, shape, &rc);
    if (!out)
        return rc;
    int64_t at = 0;
    for (int i = 0; i < n && !rc; i++) {
        const clipl_tensor *t = srcs[i];
        if ((i != ref && skipped(t)) || t->shape[d] == 0)
            continue;
        clipl_tensor *part = NULL;
        rc = clipl_tensor_narrow(out, &part, d, at, t->shape[d]);
        if (!rc)
            rc = clipl_tensor_copy_(part, t);
        clipl_tensor_release(part);
        at += t->shape[d];
    }
    if (rc) {
        clipl_tensor_release(out);
        return rc;
    }
    *dst = out;
    return CLIPL_OK;
}

int clipl_stack(const clipl_tensor *const *srcs, int n, clipl_tensor **dst, int dim)
{
    if (dst && any_requires_grad(srcs, n))
        return clipl__ag_join(1, srcs, n, dst, dim);
    char b1[128], b2[128];
    int rc = check_list("stack", srcs, n, dst);
    if (rc)
        return rc;
    const clipl_tensor *r = srcs[0];
    int d = dim < 0 ? dim + r->ndim + 1 : dim;
    if (d < 0 || d > r->ndim || r->ndim >= CLIPL_MAX_DIMS)
        return clipl__err(CLIPL_EINDEX, "stack: dim %d out of range for %d-d tensors", dim,
                          r->ndim);
    for (int i = 1; i < n; i++)
        if (!clipl__same_shape(srcs[i], r))
            return clipl__err(CLIPL_ESHAPE,
                              "stack: all tensors must have the same shape; tensor %d is %s, "
                              "tensor 0 is %s",
                              i, clipl__tshape(b1, sizeof b1, srcs[i]),
                              clipl__tshape(b2, sizeof b2, r));
    clipl_tensor **views = calloc((size_t)n, sizeof *views);
    if (!views)
        return clipl__err(CLIPL_ENOMEM, "stack: out of memory");
    for (int i = 0; i < n && !rc; i++)
        rc = clipl_tensor_unsqueeze(srcs[i], &views[i], d);
    if (!rc)
        rc = clipl_cat((const clipl_tensor *const *)views, n, dst, d);
    for (int i = 0; i < n; i++)
        clipl_tensor_release(views[i]);
    free(views);
    return rc;
}
