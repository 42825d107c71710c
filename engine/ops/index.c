/*
 * index.c - indexing ops: index_select, gather, embedding, masked_fill, where.
 *
 * Index tensors are validated in full before anything is written, so an out-of-range index is a
 * CLIPL_EINDEX error naming the value, the dim and its size, never a stray read.
 */
#include "../autograd/autograd.h"
#include "plain.h"

#include <string.h>

int clipl__check_index_dtype(const char *op, const clipl_tensor *index)
{
    if (index->dt != CLIPL_I32 && index->dt != CLIPL_I64)
        return clipl__err(CLIPL_EINVAL, "%s: indices must be i32 or i64, got %s", op,
                          clipl_dtype_name(index->dt));
    return CLIPL_OK;
}

/* Checks every value of index (any shape and strides) against [0, size). */
static int check_range(const char *op, const clipl_tensor *index, int64_t size, int dim,
                       const clipl_tensor *src)
{
    char b1[128];
    if (clipl_tensor_numel(index) == 0)
        return CLIPL_OK;
    const clipl_tensor *ts[1] = {index};
    clipl__iter it;
    clipl__iter_init(&it, index->ndim, index->shape, 1, ts);
    do {
        for (int64_t i = 0; i < it.inner; i++) {
            int64_t v = plain_ldi(it.ptr[0] + i * it.inner_stride[0], index->dt);
            if (v < 0 || v >= size)
                return clipl__err(CLIPL_EINDEX,
                                  "%s: index %lld out of range for dim %d of size %lld (tensor "
                                  "%s)",
                                  op, (long long)v, dim, (long long)size,
                                  clipl__tshape(b1, sizeof b1, src));
        }
    } while (clipl__iter_next_outer(&it));
    return CLIPL_OK;
}

/* Copies src's slice at index `from` along d into dst's slice `to` (views + copy). */
static int copy_slice(clipl_tensor *dst, int64_t to, const clipl_tensor *src, int64_t from, int d)
{
    clipl_tensor *s = NULL, *o = NULL;
    int rc = clipl_tensor_select(src, &s, d, from);
    if (!rc)
        rc = clipl_tensor_select(dst, &o, d, to);
    if (!rc)
        rc = clipl_tensor_copy_(o, s);
    clipl_tensor_release(s);
    clipl_tensor_release(o);
    return rc;
}

int clipl_index_select(const clipl_tensor *src, const clipl_tensor *index, clipl_tensor **dst,
                       int dim)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_index_select(src, index, dst, dim);
    char b1[128];
    if (!src || !index || !dst)
        return clipl__err(CLIPL_EINVAL, "index_select: NULL argument");
    int rc = clipl__check_index_dtype("index_select", index);
    if (rc)
        return rc;
    if (index->ndim > 1)
        return clipl__err(CLIPL_ESHAPE, "index_select: index must be 1-d, got %s",
                          clipl__tshape(b1, sizeof b1, index));
    int d = clipl__wrap_dim(dim, src->ndim);
    if (d < 0 || src->ndim == 0)
        return clipl__err(CLIPL_EINDEX, "index_select: dim %d out of range for a %d-d tensor", dim,
                          src->ndim);
    if ((rc = check_range("index_select", index, src->shape[d], d, src)))
        return rc;
    int64_t n = clipl_tensor_numel(index), shape[CLIPL_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    shape[d] = n;
    clipl_tensor *out = plain_new(src->dt, src->ndim, shape, &rc);
    if (!out)
        return rc;
    int64_t istride = index->ndim ? index->strides[0] : 0;
    int ies = clipl_dtype_size(index->dt);
    if (clipl_tensor_numel(out) > 0 && clipl_tensor_is_contiguous(src)) {
        /* dense src: out[o][j][:] = src[o][index[j]][:], one memcpy per (o, j) */
        int64_t outer = 1, inner = 1, L = src->shape[d];
        for (int i = 0; i < d; i++)
            outer *= src->shape[i];
        for (int i = d + 1; i < src->ndim; i++)
            inner *= src->shape[i];
        size_t row = (size_t)inner * (size_t)clipl_dtype_size(src->dt);
        const char *sp = src->ptr, *ip = index->ptr;
        char *op = out->ptr;
#pragma omp parallel for schedule(static) if (outer * n * inner >= PLAIN_PAR_MIN)
        for (int64_t t = 0; t < outer * n; t++) {
            int64_t o = t / n, j = t % n;
            int64_t v = plain_ldi(ip + j * istride * ies, index->dt);
            memcpy(op + (size_t)t * row, sp + (size_t)(o * L + v) * row, row);
        }
    } else if (clipl_tensor_numel(out) > 0) {
        for (int64_t j = 0; j < n && !rc; j++) {
            int64_t v = plain_ldi((const char *)index->ptr + j * istride * ies, index->dt);
            rc = copy_slice(out, j, src, v, d);
        }
    }
    if (rc) {
        clipl_tensor_release(out);
        return rc;
    }
    *dst = out;
    return CLIPL_OK;
}

int clipl_gather(const clipl_tensor *src, const clipl_tensor *index, clipl_tensor **dst, int dim)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_gather(src, index, dst, dim);
    char b1[128], b2[128];
    if (!src || !index || !dst)
        return clipl__err(CLIPL_EINVAL, "gather: NULL argument");
    int rc = clipl__check_index_dtype("gather", index);
    if (rc)
        return rc;
    int d = clipl__wrap_dim(dim, src->ndim > 0 ? src->ndim : 1);
    if (d < 0)
        return clipl__err(CLIPL_EINDEX, "gather: dim %d out of range for a %d-d tensor", dim,
                          src->ndim);
    if (index->ndim != src->ndim)
        return clipl__err(CLIPL_ESHAPE, "gather: index %s must have as many dims as src %s",
                          clipl__tshape(b1, sizeof b1, index), clipl__tshape(b2, sizeof b2, src));
    for (int i = 0; i < src->ndim; i++)
        if (i != d && index->shape[i] > src->shape[i])
            return clipl__err(CLIPL_ESHAPE,
                              "gather: index %s is larger than src %s in dim %d (only dim %d may "
                              "differ freely)",
                              clipl__tshape(b1, sizeof b1, index),
                              clipl__tshape(b2, sizeof b2, src), i, d);
    int64_t size = src->ndim ? src->shape[d] : 1;
    if ((rc = check_range("gather", index, size, d, src)))
        return rc;
    clipl_tensor *out = plain_new(src->dt, index->ndim, index->shape, &rc);
    if (!out)
        return rc;
    if (clipl_tensor_numel(out) == 0) {
        *dst = out;
        return CLIPL_OK;
    }
    /* src seen with index's shape and a zero stride along d; the index value supplies d */
    int64_t st[CLIPL_MAX_DIMS];
    memcpy(st, src->strides, sizeof st);
    int64_t dstride = src->ndim ? src->strides[d] : 0;
    if (src->ndim)
        st[d] = 0;
    clipl_tensor *sv =
        clipl__tensor_wrap(src->storage, src->dt, src->ndim, index->shape, st, src->offset);
    if (!sv) {
        clipl_tensor_release(out);
        return clipl_errcode();
    }
    int es = clipl_dtype_size(src->dt);
    const clipl_tensor *ts[3] = {out, index, sv};
    clipl__iter it;
    clipl__iter_init(&it, out->ndim, out->shape, 3, ts);
    do {
        for (int64_t i = 0; i < it.inner; i++) {
            int64_t v = plain_ldi(it.ptr[1] + i * it.inner_stride[1], index->dt);
            memcpy(it.ptr[0] + i * it.inner_stride[0],
                   it.ptr[2] + i * it.inner_stride[2] + v * dstride * es, (size_t)es);
        }
    } while (clipl__iter_next_outer(&it));
    clipl_tensor_release(sv);
    *dst = out;
    return CLIPL_OK;
}

int clipl_embedding(const clipl_tensor *ids, const clipl_tensor *weight, clipl_tensor **dst)
{
    if (CLIPL__AG_ON1(weight))
        return clipl__ag_embedding(ids, weight, dst);
    char b1[128];
    if (!ids || !weight || !dst)
        return clipl__err(CLIPL_EINVAL, "embedding: NULL argument");
    int rc = clipl__check_index_dtype("embedding", ids);
    if (rc)
        return rc;
    if (weight->ndim != 2)
        return clipl__err(CLIPL_ESHAPE, "embedding: weight must be [V, D], got %s",
                          clipl__tshape(b1, sizeof b1, weight));
    if (ids->ndim + 1 > CLIPL_MAX_DIMS)
        return clipl__err(CLIPL_ESHAPE, "embedding: ids have too many dims (%d)", ids->ndim);
    if ((rc = check_range("embedding", ids, weight->shape[0], 0, weight)))
        return rc;
    int64_t shape[CLIPL_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = weight->shape[1];
    clipl_tensor *out = plain_new(weight->dt, ids->ndim + 1, shape, &rc), *cid = NULL;
    if (!out)
        return rc;
    int64_t n = clipl_tensor_numel(ids), D = weight->shape[1];
    if (n == 0 || D == 0)
        goto done;
    if ((rc = clipl_tensor_contiguous(ids, &cid)))
        goto fail;
    int es = clipl_dtype_size(weight->dt);
    if (weight->strides[1] == 1) {
        const char *w = weight->ptr;
        int64_t rs = weight->strides[0] * es;
#pragma omp parallel for schedule(static) if (n * D >= PLAIN_PAR_MIN)
        for (int64_t i = 0; i < n; i++) {
            int64_t v = plain_ldi((const char *)cid->ptr + i * clipl_dtype_size(cid->dt), cid->dt);
            memcpy((char *)out->ptr + i * D * es, w + v * rs, (size_t)(D * es));
        }
    } else {
        clipl_tensor *o2 = NULL;
        if ((rc = clipl_tensor_view(out, &o2, 2, (int64_t[]){n, D})))
            goto fail;
        for (int64_t i = 0; i < n && !rc; i++) {
            int64_t v = plain_ldi((const char *)cid->ptr + i * clipl_dtype_size(cid->dt), cid->dt);
            rc = copy_slice(o2, i, weight, v, 0);
        }
        clipl_tensor_release(o2);
        if (rc)
            goto fail;
    }
done:
    clipl_tensor_release(cid);
    *dst = out;
    return CLIPL_OK;
fail:
    clipl_tensor_release(cid);
    clipl_tensor_release(out);
    return rc;
}

/* mask must broadcast to shape; names both shapes otherwise. */
static int check_broadcast_to(const char *op, const clipl_tensor *m, const clipl_tensor *t,
                              const char *what)
{
    char b1[128], b2[128];
    bool ok = m->ndim <= t->ndim;
    for (int i = 0; ok && i < m->ndim; i++) {
        int64_t ms = m->shape[m->ndim - 1 - i], ts = t->shape[t->ndim - 1 - i];
        ok = ms == ts || ms == 1;
    }
    if (!ok)
        return clipl__err(CLIPL_ESHAPE, "%s: %s %s does not broadcast to %s", op, what,
                          clipl__tshape(b1, sizeof b1, m), clipl__tshape(b2, sizeof b2, t));
    return CLIPL_OK;
}

static inline bool truthy(const char *p, int dt)
{
    switch (dt) {
    case CLIPL_U8: return *(const uint8_t *)p != 0;
    case CLIPL_I32: return *(const int32_t *)p != 0;
    case CLIPL_I64: return *(const int64_t *)p != 0;
    default: return plain_ldf(p, dt) != 0;
    }
}

int clipl_masked_fill_(clipl_tensor *t, const clipl_tensor *mask, double value)
{
    if (clipl__ag_inplace("masked_fill_", t, NULL))
        return clipl_errcode();
    if (!t || !mask)
        return clipl__err(CLIPL_EINVAL, "masked_fill: NULL argument");
    int rc = clipl__check_writable(t, "masked_fill");
    if (rc || (rc = check_broadcast_to("masked_fill", mask, t, "mask")))
        return rc;
    if (clipl_tensor_numel(t) == 0)
        return CLIPL_OK;
    char elem[8];
    clipl__store(elem, t->dt, value);
    int es = clipl_dtype_size(t->dt);
    const clipl_tensor *ts[2] = {t, mask};
    clipl__iter it;
    clipl__iter_init(&it, t->ndim, t->shape, 2, ts);
    do {
        for (int64_t i = 0; i < it.inner; i++)
            if (truthy(it.ptr[1] + i * it.inner_stride[1], mask->dt))
                memcpy(it.ptr[0] + i * it.inner_stride[0], elem, (size_t)es);
    } while (clipl__iter_next_outer(&it));
    return CLIPL_OK;
}

int clipl_masked_fill(const clipl_tensor *src, const clipl_tensor *mask, clipl_tensor **dst,
                      double value)
{
    if (CLIPL__AG_ON1(src))
        return clipl__ag_masked_fill(src, mask, dst, value);
    if (!src || !mask || !dst)
        return clipl__err(CLIPL_EINVAL, "masked_fill: NULL argument");
    int rc = check_broadcast_to("masked_fill", mask, src, "mask");
    clipl_tensor *out = NULL;
    if (rc || (rc = clipl_tensor_clone(src, &out)))
        return rc;
    out->flags &= ~CLIPL_TF_READONLY; /* a fresh copy is writable even if src was mapped */
    if ((rc = clipl_masked_fill_(out, mask, value))) {
        clipl_tensor_release(out);
        return rc;
    }
    *dst = out;
    return CLIPL_OK;
}

int clipl_where(const clipl_tensor *cond, const clipl_tensor *a, const clipl_tensor *b,
                clipl_tensor **dst)
{
    if (CLIPL__AG_ON2(a, b))
        return clipl__ag_where(cond, a, b, dst);
    if (!cond || !a || !b || !dst)
        return clipl__err(CLIPL_EINVAL, "where: NULL argument");
    int nd1, nd2;
    int64_t s1[CLIPL_MAX_DIMS], s2[CLIPL_MAX_DIMS];
    int rc = clipl__broadcast2("where", a, b, &nd1, s1);
    if (rc)
        return rc;
    clipl_tensor ab = {.dt = a->dt, .ndim = nd1}; /* the shape of a and b broadcast */
    memcpy(ab.shape, s1, sizeof(int64_t) * (size_t)nd1);
    if ((rc = clipl__broadcast2("where", cond, &ab, &nd2, s2)))
        return rc;
    clipl_tensor *out = plain_new(clipl__common_dtype(a->dt, b->dt), nd2, s2, &rc);
    if (!out)
        return rc;
    if (clipl_tensor_numel(out) > 0) {
        if ((rc = clipl_tensor_copy_(out, b))) {
            clipl_tensor_release(out);
            return rc;
        }
        const clipl_tensor *ts[3] = {out, cond, a};
        clipl__iter it;
        clipl__iter_init(&it, out->ndim, out->shape, 3, ts);
        do {
            for (int64_t i = 0; i < it.inner; i++)
                if (!truthy(it.ptr[1] + i * it.inner_stride[1], cond->dt))
                    continue;
                else if (a->dt == out->dt)
                    memcpy(it.ptr[0] + i * it.inner_stride[0], it.ptr[2] + i * it.inner_stride[2],
                           (size_t)clipl_dtype_size(a->dt));
                else
                    clipl__store(it.ptr[0] + i * it.inner_stride[0], out->dt,
                                 clipl__load(it.ptr[2] + i * it.inner_stride[2], a->dt));
        } while (clipl__iter_next_outer(&it));
    }
    *dst = out;
    return CLIPL_OK;
}
