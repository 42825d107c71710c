/*
 * tensor.c - tensor headers, views, copies and dtype conversion.
 */
#include "../autograd/autograd.h"
#include "internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- dtypes ---- */

static const struct {
    const char *name;
    const char *alias;
    int size;
} dtypes[] = {
    [CLIPL_F32] = {"f32", "float32", 4}, [CLIPL_BF16] = {"bf16", "bfloat16", 2},
    [CLIPL_F16] = {"f16", "float16", 2}, [CLIPL_I32] = {"i32", "int32", 4},
    [CLIPL_I64] = {"i64", "int64", 8},   [CLIPL_U8] = {"u8", "uint8", 1},
};
enum { NDTYPES = sizeof dtypes / sizeof dtypes[0] };

static bool valid_dtype(int dtype) { return dtype >= 0 && dtype < NDTYPES; }

int clipl_dtype_size(int dtype) { return valid_dtype(dtype) ? dtypes[dtype].size : 0; }

const char *clipl_dtype_name(int dtype) { return valid_dtype(dtype) ? dtypes[dtype].name : "?"; }

int clipl_dtype_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < NDTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0 || strcmp(name, dtypes[i].alias) == 0)
            return i;
    return -1;
}

uint16_t clipl__f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet and a NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float clipl__bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t clipl__f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) /* NaN */
        return (uint16_t)(sign | 0x7e00u);
    if (absu >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) { /* subnormal half (or zero): scale to integer, RNE */
        float a;
        memcpy(&a, &absu, 4);
        float scaled = a * 16777216.0f; /* 2^24: units of the smallest half subnormal */
        uint32_t q = (uint32_t)nearbyintf(scaled);
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even */
    uint32_t mant_round = absu + 0xfffu + ((absu >> 13) & 1u);
    uint32_t h = (mant_round >> 13) - ((127u - 15u) << 10);
    return (uint16_t)(sign | h);
}

float clipl__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        float f = (float)mant * (1.0f / 16777216.0f);
        memcpy(&u, &f, 4);
        u |= sign;
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

double clipl__load(const void *p, int dtype)
{
    switch (dtype) {
    case CLIPL_F32: return *(const float *)p;
    case CLIPL_BF16: return clipl__bf16_to_f32(*(const uint16_t *)p);
    case CLIPL_F16: return clipl__f16_to_f32(*(const uint16_t *)p);
    case CLIPL_I32: return *(const int32_t *)p;
    case CLIPL_I64: return (double)*(const int64_t *)p;
    case CLIPL_U8: return *(const uint8_t *)p;
    }
    return 0;
}

static int64_t saturate_i64(double v, double lo, double hi)
{
    if (isnan(v))
        return 0;
    if (v <= lo)
        return (int64_t)lo;
    if (v >= hi)
        return (int64_t)hi;
    return (int64_t)v;
}

void clipl__store(void *p, int dtype, double v)
{
    switch (dtype) {
    case CLIPL_F32: *(float *)p = (float)v; break;
    case CLIPL_BF16: *(uint16_t *)p = clipl__f32_to_bf16((float)v); break;
    case CLIPL_F16: *(uint16_t *)p = clipl__f32_to_f16((float)v); break;
    case CLIPL_I32: *(int32_t *)p = (int32_t)saturate_i64(v, -2147483648.0, 2147483647.0); break;
    case CLIPL_I64:
        *(int64_t *)p = saturate_i64(v, -9223372036854775808.0, 9223372036854774784.0);
        break;
    case CLIPL_U8: *(uint8_t *)p = (uint8_t)saturate_i64(v, 0, 255); break;
    }
}

/* ---- headers ---- */

void clipl__contiguous_strides(int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

clipl_tensor *clipl__tensor_wrap(clipl_storage *s, int dtype, int ndim, const int64_t *shape,
                                 const int64_t *stride, int64_t offset)
{
    clipl_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        clipl__err(CLIPL_ENOMEM, "out of memory allocating a tensor header");
        return NULL;
    }
    t->dt = dtype;
    t->ndim = ndim;
    for (int i = 0; i < CLIPL_MAX_DIMS; i++) {
        t->shape[i] = i < ndim ? shape[i] : 1;
        t->strides[i] = i < ndim ? stride[i] : 0;
    }
    t->offset = offset;
    t->storage = clipl_storage_retain(s);
    t->ptr = (char *)clipl_storage_data(s) + offset * clipl_dtype_size(dtype);
    t->refcount = 1;
    t->flags = clipl_storage_readonly(s) ? CLIPL_TF_READONLY : 0;
    return t;
}

clipl_tensor *clipl_tensor_retain(clipl_tensor *t)
{
    if (t)
        __atomic_fetch_add(&t->refcount, 1, __ATOMIC_RELAXED);
    return t;
}

void clipl_tensor_release(clipl_tensor *t)
{
    if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (t->ag || (t->flags & CLIPL_TF_REQUIRES_GRAD))
        clipl__ag_free(t);
    clipl_storage_release(t->storage);
    free(t);
}

int clipl_tensor_reset(clipl_tensor *t)
{
    if (__atomic_load_n(&t->refcount, __ATOMIC_ACQUIRE) != 1)
        return 0;
    clipl_storage *empty = clipl_storage_new(0);
    if (!empty)
        return 0;
    clipl__ag_free(t);
    clipl_storage_release(t->storage);
    t->storage = empty;
    t->ptr = clipl_storage_data(empty);
    t->ndim = 1;
    for (int i = 0; i < CLIPL_MAX_DIMS; i++) {
        t->shape[i] = i == 0 ? 0 : 1;
        t->strides[i] = i == 0 ? 1 : 0;
    }
    t->offset = 0;
    t->flags &= ~CLIPL_TF_READONLY;
    return 1;
}

static int check_shape(const char *op, int dtype, int ndim, const int64_t *shape, int64_t *numel)
{
    if (!valid_dtype(dtype))
        return clipl__err(CLIPL_EINVAL, "%s: unknown dtype %d", op, dtype);
    if (ndim < 0 || ndim > CLIPL_MAX_DIMS)
        return clipl__err(CLIPL_EINVAL, "%s: %d dims, at most %d are supported", op, ndim,
                          CLIPL_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return clipl__err(CLIPL_EINVAL, "%s: negative size %lld in dim %d", op,
                              (long long)shape[i], i + 1);
        if (shape[i] && n > INT64_MAX / 16 / shape[i])
            return clipl__err(CLIPL_ENOMEM, "%s: tensor too large", op);
        n *= shape[i];
    }
    *numel = n;
    return CLIPL_OK;
}

static clipl_tensor *new_contiguous(const char *op, int dtype, int ndim, const int64_t *shape,
                                    bool zero)
{
    int64_t numel, stride[CLIPL_MAX_DIMS];
    if (check_shape(op, dtype, ndim, shape, &numel))
        return NULL;
    clipl_storage *s = clipl__storage_new((size_t)numel * (size_t)clipl_dtype_size(dtype), zero);
    if (!s)
        return NULL;
    clipl__contiguous_strides(ndim, shape, stride);
    clipl_tensor *t = clipl__tensor_wrap(s, dtype, ndim, shape, stride, 0);
    clipl_storage_release(s);
    return t;
}

clipl_tensor *clipl_tensor_empty(int dtype, int ndim, const int64_t *shape)
{
    return new_contiguous("empty", dtype, ndim, shape, false);
}

clipl_tensor *clipl_tensor_zeros(int dtype, int ndim, const int64_t *shape)
{
    return new_contiguous("zeros", dtype, ndim, shape, true);
}

clipl_tensor *clipl_tensor_from_data(int dtype, int ndim, const int64_t *shape, const void *src,
                                     size_t nbytes)
{
    clipl_tensor *t = new_contiguous("from_data", dtype, ndim, shape, false);
    if (!t)
        return NULL;
    size_t want = (size_t)clipl_tensor_numel(t) * (size_t)clipl_dtype_size(dtype);
    if (nbytes != want) {
        clipl__err(CLIPL_ESHAPE, "from_data: %zu bytes given, %zu needed", nbytes, want);
        clipl_tensor_release(t);
        return NULL;
    }
    if (nbytes)
        memcpy(t->ptr, src, nbytes);
    return t;
}

clipl_tensor *clipl_tensor_new_view(clipl_storage *storage, int dtype, int ndim,
                                    const int64_t *shape, const int64_t *stride, int64_t offset)
{
    int64_t numel;
    if (!storage) {
        clipl__err(CLIPL_EINVAL, "new_view: no storage");
        return NULL;
    }
    if (check_shape("new_view", dtype, ndim, shape, &numel))
        return NULL;
    if (offset < 0) {
        clipl__err(CLIPL_EINVAL, "new_view: negative offset %lld", (long long)offset);
        return NULL;
    }
    /* the highest element address must fit in the storage */
    int64_t hi = offset;
    if (numel > 0) {
        for (int i = 0; i < ndim; i++) {
            if (stride[i] < 0) {
                clipl__err(CLIPL_EINVAL, "new_view: negative stride in dim %d", i + 1);
                return NULL;
            }
            hi += (shape[i] - 1) * stride[i];
        }
        int64_t es = clipl_dtype_size(dtype);
        if ((uint64_t)(hi + 1) * (uint64_t)es > clipl_storage_nbytes(storage)) {
            clipl__err(CLIPL_ESHAPE, "new_view: view needs %lld bytes but the storage has %zu",
                       (long long)((hi + 1) * es), clipl_storage_nbytes(storage));
            return NULL;
        }
    }
    return clipl__tensor_wrap(storage, dtype, ndim, shape, stride, offset);
}

int clipl_tensor_rebind(clipl_tensor *t, clipl_storage *s, int64_t offset)
{
    if (!t || !s)
        return clipl__err(CLIPL_EINVAL, "rebind: NULL tensor or storage");
    if (clipl_storage_readonly(s))
        return clipl__err(CLIPL_EINVAL, "rebind: the new storage is a read-only mapping");
    int64_t st[CLIPL_MAX_DIMS] = {0};
    clipl__contiguous_strides(t->ndim, t->shape, st);
    clipl_tensor *c = clipl_tensor_new_view(s, t->dt, t->ndim, t->shape, st, offset);
    if (!c)
        return clipl_errcode();
    int rc = CLIPL_OK;
    if (c->ptr != t->ptr) {
        clipl__grad_off++; /* a plain copy, not an op on the tape */
        rc = clipl_tensor_copy_(c, t);
        clipl__grad_off--;
    }
    if (rc == CLIPL_OK) { /* swap the storages: the temporary header drops t's old one */
        c->storage = t->storage;
        t->storage = s;
        t->ptr = c->ptr;
        t->offset = offset;
        memcpy(t->strides, st, sizeof t->strides);
        t->flags &= ~CLIPL_TF_READONLY;
    }
    clipl_tensor_release(c);
    return rc;
}

int64_t clipl_tensor_numel(const clipl_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

int clipl_tensor_is_contiguous(const clipl_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1)
            continue;
        if (t->strides[i] != s)
            return 0;
        s *= t->shape[i];
    }
    return 1;
}

clipl_storage *clipl_tensor_storage(const clipl_tensor *t) { return t->storage; }

bool clipl__same_shape(const clipl_tensor *a, const clipl_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

int clipl__check_writable(const clipl_tensor *t, const char *what)
{
    if (t->flags & CLIPL_TF_READONLY)
        return clipl__err(CLIPL_EINVAL,
                          "%s: the tensor is a read-only mapping of a weights file; clone it "
                          "before writing",
                          what);
    return CLIPL_OK;
}

/* ---- views ---- */

static int derive(const clipl_tensor *t, clipl_tensor **dst, int ndim, const int64_t *shape,
                  const int64_t *stride, int64_t offset)
{
    clipl_tensor *v = clipl__tensor_wrap(t->storage, t->dt, ndim, shape, stride, offset);
    if (!v)
        return CLIPL_ENOMEM;
    v->flags = t->flags & CLIPL_TF_READONLY;
    *dst = v;
    return CLIPL_OK;
}

int clipl_tensor_narrow(const clipl_tensor *t, clipl_tensor **dst, int dim, int64_t start,
                        int64_t length)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_NARROW, t, dst, 3, (int64_t[]){dim, start, length});
    char b[128];
    int d = clipl__wrap_dim(dim, t->ndim);
    if (d < 0 || t->ndim == 0)
        return clipl__err(CLIPL_EINDEX, "narrow: dim %d out of range for a %d-d tensor", dim,
                          t->ndim);
    if (start < 0 || length < 0 || start + length > t->shape[d])
        return clipl__err(CLIPL_EINDEX,
                          "narrow: [%lld, %lld) out of range for dim %d of size %lld (tensor %s)",
                          (long long)start, (long long)(start + length), d, (long long)t->shape[d],
                          clipl__tshape(b, sizeof b, t));
    int64_t shape[CLIPL_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = length;
    return derive(t, dst, t->ndim, shape, t->strides, t->offset + start * t->strides[d]);
}

int clipl_tensor_select(const clipl_tensor *t, clipl_tensor **dst, int dim, int64_t index)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_SELECT, t, dst, 2, (int64_t[]){dim, index});
    char b[128];
    int d = clipl__wrap_dim(dim, t->ndim);
    if (d < 0 || t->ndim == 0)
        return clipl__err(CLIPL_EINDEX, "select: dim %d out of range for a %d-d tensor", dim,
                          t->ndim);
    if (index < 0 || index >= t->shape[d])
        return clipl__err(CLIPL_EINDEX,
                          "select: index %lld out of range for dim %d of size %lld "
                          "(tensor %s)",
                          (long long)index, d, (long long)t->shape[d],
                          clipl__tshape(b, sizeof b, t));
    int64_t shape[CLIPL_MAX_DIMS], stride[CLIPL_MAX_DIMS];
    int n = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (i == d)
            continue;
        shape[n] = t->shape[i];
        stride[n] = t->strides[i];
        n++;
    }
    return derive(t, dst, n, shape, stride, t->offset + index * t->strides[d]);
}

int clipl_tensor_transpose(const clipl_tensor *t, clipl_tensor **dst, int d0, int d1)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_TRANSPOSE, t, dst, 2, (int64_t[]){d0, d1});
    int a = clipl__wrap_dim(d0, t->ndim), b = clipl__wrap_dim(d1, t->ndim);
    if (a < 0 || b < 0 || t->ndim == 0)
        return clipl__err(CLIPL_EINDEX, "transpose: dims %d, %d out of range for a %d-d tensor", d0,
                          d1, t->ndim);
    int64_t shape[CLIPL_MAX_DIMS], stride[CLIPL_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    memcpy(stride, t->strides, sizeof stride);
    shape[a] = t->shape[b];
    shape[b] = t->shape[a];
    stride[a] = t->strides[b];
    stride[b] = t->strides[a];
    return derive(t, dst, t->ndim, shape, stride, t->offset);
}

int clipl_tensor_permute(const clipl_tensor *t, clipl_tensor **dst, int n, const int *perm)
{
    if (CLIPL__AG_ON1(t) && n == t->ndim) {
        int64_t p[CLIPL_MAX_DIMS];
        for (int i = 0; i < n; i++)
            p[i] = perm[i];
        return clipl__ag_view_op(CLIPL__V_PERMUTE, t, dst, n, p);
    }
    if (n != t->ndim)
        return clipl__err(CLIPL_EINVAL, "permute: %d dims given for a %d-d tensor", n, t->ndim);
    int64_t shape[CLIPL_MAX_DIMS], stride[CLIPL_MAX_DIMS];
    bool seen[CLIPL_MAX_DIMS] = {false};
    for (int i = 0; i < n; i++) {
        int p = clipl__wrap_dim(perm[i], n);
        if (p < 0 || seen[p])
            return clipl__err(CLIPL_EINVAL, "permute: dims are not a permutation of 0..%d", n - 1);
        seen[p] = true;
        shape[i] = t->shape[p];
        stride[i] = t->strides[p];
    }
    return derive(t, dst, n, shape, stride, t->offset);
}

/* Resolves a -1 entry; returns an error when sizes do not match numel. */
static int infer_shape(const char *op, const clipl_tensor *t, int ndim, const int64_t *in,
                       int64_t *out)
{
    char b1[128], b2[128];
    if (ndim < 0 || ndim > CLIPL_MAX_DIMS)
        return clipl__err(CLIPL_EINVAL, "%s: %d dims, at most %d are supported", op, ndim,
                          CLIPL_MAX_DIMS);
    int64_t numel = clipl_tensor_numel(t), known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        if (in[i] == -1) {
            if (infer >= 0)
                return clipl__err(CLIPL_EINVAL, "%s: only one size may be -1", op);
            infer = i;
        } else if (in[i] < 0) {
            return clipl__err(CLIPL_EINVAL, "%s: invalid size %lld", op, (long long)in[i]);
        } else {
            known *= in[i];
        }
        out[i] = in[i];
    }
    if (infer >= 0) {
        if (known == 0 || numel % known != 0)
            return clipl__err(CLIPL_ESHAPE, "%s: cannot infer -1 for %lld elements", op,
                              (long long)numel);
        out[infer] = numel / known;
        known *= out[infer];
    }
    if (known != numel)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: shape %s is invalid for a tensor of size %s (%lld "
                          "elements)",
                          op, clipl__shape_str(b1, sizeof b1, ndim, out),
                          clipl__tshape(b2, sizeof b2, t), (long long)numel);
    return CLIPL_OK;
}

/* Computes view strides as PyTorch's computeStride does; false when impossible. */
static bool view_strides(const clipl_tensor *t, int ndim, const int64_t *shape, int64_t *stride)
{
    int64_t numel = clipl_tensor_numel(t);
    if (numel == 0 || t->ndim == 0) {
        clipl__contiguous_strides(ndim, shape, stride);
        return true;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->strides[t->ndim - 1];
    int64_t tensor_numel = 1, view_numel = 1;
    for (int tensor_d = t->ndim - 1; tensor_d >= 0; tensor_d--) {
        tensor_numel *= t->shape[tensor_d];
        if (tensor_d == 0 || (t->shape[tensor_d - 1] != 1 &&
                              t->strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                stride[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel)
                return false;
            if (tensor_d > 0) {
                chunk_base_stride = t->strides[tensor_d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1;
}

int clipl_tensor_view(const clipl_tensor *t, clipl_tensor **dst, int ndim, const int64_t *shape)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_VIEW, t, dst, ndim, shape);
    char b1[128], b2[128];
    int64_t s[CLIPL_MAX_DIMS], st[CLIPL_MAX_DIMS];
    int rc = infer_shape("view", t, ndim, shape, s);
    if (rc)
        return rc;
    if (!view_strides(t, ndim, s, st))
        return clipl__err(CLIPL_ESHAPE,
                          "view: a %s tensor with strides that do not allow a view cannot be "
                          "viewed as %s; use reshape (copies) or contiguous() first",
                          clipl__tshape(b1, sizeof b1, t),
                          clipl__shape_str(b2, sizeof b2, ndim, s));
    return derive(t, dst, ndim, s, st, t->offset);
}

int clipl_tensor_reshape(const clipl_tensor *t, clipl_tensor **dst, int ndim, const int64_t *shape)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_RESHAPE, t, dst, ndim, shape);
    int64_t s[CLIPL_MAX_DIMS], st[CLIPL_MAX_DIMS];
    int rc = infer_shape("reshape", t, ndim, shape, s);
    if (rc)
        return rc;
    if (view_strides(t, ndim, s, st))
        return derive(t, dst, ndim, s, st, t->offset);
    clipl_tensor *c = NULL;
    rc = clipl_tensor_clone(t, &c);
    if (rc)
        return rc;
    rc = clipl_tensor_view(c, dst, ndim, s);
    clipl_tensor_release(c);
    return rc;
}

int clipl_tensor_expand(const clipl_tensor *t, clipl_tensor **dst, int ndim, const int64_t *shape)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_EXPAND, t, dst, ndim, shape);
    char b1[128], b2[128];
    if (ndim < t->ndim || ndim > CLIPL_MAX_DIMS)
        return clipl__err(CLIPL_ESHAPE, "expand: cannot expand a %d-d tensor to %d dims", t->ndim,
                          ndim);
    int64_t s[CLIPL_MAX_DIMS], st[CLIPL_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        int64_t want = shape[i];
        if (j < 0) {
            if (want < 0)
                return clipl__err(CLIPL_EINVAL, "expand: -1 is not allowed for a new dim");
            s[i] = want;
            st[i] = 0;
        } else if (want == -1 || want == t->shape[j]) {
            s[i] = t->shape[j];
            st[i] = t->strides[j];
        } else if (t->shape[j] == 1 && want >= 0) {
            s[i] = want;
            st[i] = 0;
        } else {
            return clipl__err(CLIPL_ESHAPE, "expand: cannot expand %s to %s",
                              clipl__tshape(b1, sizeof b1, t),
                              clipl__shape_str(b2, sizeof b2, ndim, shape));
        }
    }
    return derive(t, dst, ndim, s, st, t->offset);
}

int clipl_tensor_unsqueeze(const clipl_tensor *t, clipl_tensor **dst, int dim)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_UNSQUEEZE, t, dst, 1, (int64_t[]){dim});
    int d = dim < 0 ? dim + t->ndim + 1 : dim;
    if (d < 0 || d > t->ndim || t->ndim >= CLIPL_MAX_DIMS)
        return clipl__err(CLIPL_EINDEX, "unsqueeze: dim %d out of range for a %d-d tensor", dim,
                          t->ndim);
    int64_t s[CLIPL_MAX_DIMS], st[CLIPL_MAX_DIMS];
    for (int i = 0, j = 0; i <= t->ndim; i++) {
        if (i == d) {
            s[i] = 1;
            st[i] = (j < t->ndim) ? t->strides[j] * t->shape[j] : 1;
        } else {
            s[i] = t->shape[j];
            st[i] = t->strides[j];
            j++;
        }
    }
    return derive(t, dst, t->ndim + 1, s, st, t->offset);
}

int clipl_tensor_squeeze(const clipl_tensor *t, clipl_tensor **dst, int dim)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_SQUEEZE, t, dst, 1, (int64_t[]){dim});
    int64_t s[CLIPL_MAX_DIMS], st[CLIPL_MAX_DIMS];
    int n = 0;
    int d = -1;
    if (dim != CLIPL_ALL_DIMS) {
        d = clipl__wrap_dim(dim, t->ndim);
        if (d < 0 || t->ndim == 0)
            return clipl__err(CLIPL_EINDEX, "squeeze: dim %d out of range for a %d-d tensor", dim,
                              t->ndim);
        if (t->shape[d] != 1)
            return clipl__err(CLIPL_ESHAPE, "squeeze: dim %d has size %lld, not 1", d,
                              (long long)t->shape[d]);
    }
    for (int i = 0; i < t->ndim; i++) {
        if ((d < 0 && t->shape[i] == 1) || i == d)
            continue;
        s[n] = t->shape[i];
        st[n] = t->strides[i];
        n++;
    }
    return derive(t, dst, n, s, st, t->offset);
}

/* ---- iteration ---- */

void clipl__iter_init(clipl__iter *it, int ndim, const int64_t *shape, int n,
                      const clipl_tensor *const *ts)
{
    memset(it, 0, sizeof *it);
    it->ndim = ndim;
    it->n = n;
    it->total = 1;
    for (int i = 0; i < ndim; i++) {
        it->shape[i] = shape[i];
        it->total *= shape[i];
    }
    for (int k = 0; k < n; k++) {
        const clipl_tensor *t = ts[k];
        int es = clipl_dtype_size(t->dt);
        int lead = ndim - t->ndim;
        for (int i = 0; i < ndim; i++) {
            int j = i - lead;
            it->bstride[k][i] = (j < 0 || t->shape[j] == 1) ? 0 : t->strides[j] * es;
        }
        it->ptr[k] = (char *)t->ptr;
    }
    it->inner = ndim ? shape[ndim - 1] : 1;
    for (int k = 0; k < n; k++)
        it->inner_stride[k] = ndim ? it->bstride[k][ndim - 1] : 0;
}

bool clipl__iter_next_outer(clipl__iter *it)
{
    for (int i = it->ndim - 2; i >= 0; i--) {
        if (++it->idx[i] < it->shape[i]) {
            for (int k = 0; k < it->n; k++)
                it->ptr[k] += it->bstride[k][i];
            return true;
        }
        it->idx[i] = 0;
        for (int k = 0; k < it->n; k++)
            it->ptr[k] -= it->bstride[k][i] * (it->shape[i] - 1);
    }
    return false;
}

/* ---- copies ---- */

static void copy_row(char *d, int64_t ds, int ddt, const char *s, int64_t ss, int sdt, int64_t n)
{
    if (ddt == sdt) {
        int es = clipl_dtype_size(ddt);
        if (ds == es && ss == es) {
            memcpy(d, s, (size_t)(n * es));
            return;
        }
        if (es == 4) {
            for (int64_t i = 0; i < n; i++)
                *(uint32_t *)(d + i * ds) = *(const uint32_t *)(s + i * ss);
            return;
        }
        if (es == 2) {
            for (int64_t i = 0; i < n; i++)
                *(uint16_t *)(d + i * ds) = *(const uint16_t *)(s + i * ss);
            return;
        }
    }
    if (sdt == CLIPL_F32 && ddt == CLIPL_BF16) {
        for (int64_t i = 0; i < n; i++)
            *(uint16_t *)(d + i * ds) = clipl__f32_to_bf16(*(const float *)(s + i * ss));
        return;
    }
    if (sdt == CLIPL_BF16 && ddt == CLIPL_F32) {
        for (int64_t i = 0; i < n; i++)
            *(float *)(d + i * ds) = clipl__bf16_to_f32(*(const uint16_t *)(s + i * ss));
        return;
    }
    if (sdt == CLIPL_F16 && ddt == CLIPL_F32) {
        for (int64_t i = 0; i < n; i++)
            *(float *)(d + i * ds) = clipl__f16_to_f32(*(const uint16_t *)(s + i * ss));
        return;
    }
    for (int64_t i = 0; i < n; i++)
        clipl__store(d + i * ds, ddt, clipl__load(s + i * ss, sdt));
}

int clipl_tensor_copy_(clipl_tensor *dst, const clipl_tensor *src)
{
    char b1[128], b2[128];
    int rc = clipl__check_writable(dst, "copy");
    if (rc || (rc = clipl__ag_inplace("copy", dst, src)))
        return rc;
    /* src must broadcast to dst */
    if (src->ndim > dst->ndim)
        goto mismatch;
    for (int i = 0; i < src->ndim; i++) {
        int64_t ss = src->shape[src->ndim - 1 - i], ds = dst->shape[dst->ndim - 1 - i];
        if (ss != ds && ss != 1)
            goto mismatch;
    }
    if (clipl_tensor_numel(dst) == 0)
        return CLIPL_OK;
    const clipl_tensor *ts[2] = {dst, src};
    clipl__iter it;
    clipl__iter_init(&it, dst->ndim, dst->shape, 2, ts);
    int64_t rows = it.total / (it.inner ? it.inner : 1);
    if (rows > 1 && it.inner * rows > 65536 && dst->ndim >= 2) {
        /* parallel over outer rows: each thread walks its own index */
        int64_t inner = it.inner;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            int64_t rem = r;
            char *pd = (char *)dst->ptr, *ps = (char *)src->ptr;
            for (int i = dst->ndim - 2; i >= 0; i--) {
                int64_t idx = rem % it.shape[i];
                rem /= it.shape[i];
                pd += idx * it.bstride[0][i];
                ps += idx * it.bstride[1][i];
            }
            copy_row(pd, it.inner_stride[0], dst->dt, ps, it.inner_stride[1], src->dt, inner);
        }
        return CLIPL_OK;
    }
    do {
        copy_row(it.ptr[0], it.inner_stride[0], dst->dt, it.ptr[1], it.inner_stride[1], src->dt,
                 it.inner);
    } while (clipl__iter_next_outer(&it));
    return CLIPL_OK;
mismatch:
    return clipl__err(CLIPL_ESHAPE, "copy: source %s does not broadcast to destination %s",
                      clipl__tshape(b1, sizeof b1, src), clipl__tshape(b2, sizeof b2, dst));
}

int clipl_tensor_fill_(clipl_tensor *dst, double value)
{
    int rc = clipl__check_writable(dst, "fill");
    if (rc || (rc = clipl__ag_inplace("fill", dst, NULL)))
        return rc;
    if (clipl_tensor_numel(dst) == 0)
        return CLIPL_OK;
    char elem[8];
    clipl__store(elem, dst->dt, value);
    int es = clipl_dtype_size(dst->dt);
    const clipl_tensor *ts[1] = {dst};
    clipl__iter it;
    clipl__iter_init(&it, dst->ndim, dst->shape, 1, ts);
    do {
        for (int64_t i = 0; i < it.inner; i++)
            memcpy(it.ptr[0] + i * it.inner_stride[0], elem, (size_t)es);
    } while (clipl__iter_next_outer(&it));
    return CLIPL_OK;
}

/* *dst = a new contiguous tensor of dtype holding t's values (clone and to). */
static int copy_as(const clipl_tensor *t, int dtype, clipl_tensor **dst)
{
    clipl_tensor *c = clipl_tensor_empty(dtype, t->ndim, t->shape);
    if (!c)
        return clipl_errcode();
    int rc = clipl_tensor_copy_(c, t);
    if (rc) {
        clipl_tensor_release(c);
        return rc;
    }
    *dst = c;
    return CLIPL_OK;
}

int clipl_tensor_clone(const clipl_tensor *t, clipl_tensor **dst)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_CLONE, t, dst, 0, NULL);
    return copy_as(t, t->dt, dst);
}

int clipl_tensor_contiguous(const clipl_tensor *t, clipl_tensor **dst)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_CONTIGUOUS, t, dst, 0, NULL);
    if (clipl_tensor_is_contiguous(t)) {
        *dst = clipl_tensor_retain((clipl_tensor *)t);
        return CLIPL_OK;
    }
    return clipl_tensor_clone(t, dst);
}

int clipl_tensor_to(const clipl_tensor *t, clipl_tensor **dst, int dtype)
{
    if (CLIPL__AG_ON1(t))
        return clipl__ag_view_op(CLIPL__V_TO, t, dst, 1, (int64_t[]){dtype});
    if (!valid_dtype(dtype))
        return clipl__err(CLIPL_EINVAL, "to: unknown dtype %d", dtype);
    return copy_as(t, dtype, dst);
}

/* ---- element access ---- */

static char *flat_addr(const clipl_tensor *t, int64_t index)
{
    char *p = (char *)t->ptr;
    int es = clipl_dtype_size(t->dt);
    for (int i = t->ndim - 1; i >= 0; i--) {
        int64_t k = index % t->shape[i];
        index /= t->shape[i];
        p += k * t->strides[i] * es;
    }
    return p;
}

int clipl_tensor_get_flat(const clipl_tensor *t, int64_t index, double *value)
{
    int64_t n = clipl_tensor_numel(t);
    if (index < 0 || index >= n)
        return clipl__err(CLIPL_EINDEX, "get: index %lld out of range for %lld elements",
                          (long long)index, (long long)n);
    *value = clipl__load(flat_addr(t, index), t->dt);
    return CLIPL_OK;
}

int clipl_tensor_set_flat(clipl_tensor *t, int64_t index, double value)
{
    int64_t n = clipl_tensor_numel(t);
    int rc = clipl__check_writable(t, "set");
    if (rc || (rc = clipl__ag_inplace("set", t, NULL)))
        return rc;
    if (index < 0 || index >= n)
        return clipl__err(CLIPL_EINDEX, "set: index %lld out of range for %lld elements",
                          (long long)index, (long long)n);
    clipl__store(flat_addr(t, index), t->dt, value);
    return CLIPL_OK;
}

int clipl_tensor_to_doubles(const clipl_tensor *t, double *out, int64_t n)
{
    int64_t numel = clipl_tensor_numel(t);
    if (n < numel)
        return clipl__err(CLIPL_EINVAL, "to_doubles: buffer of %lld for %lld elements",
                          (long long)n, (long long)numel);
    if (numel == 0)
        return CLIPL_OK;
    const clipl_tensor *ts[1] = {t};
    clipl__iter it;
    clipl__iter_init(&it, t->ndim, t->shape, 1, ts);
    int64_t k = 0;
    do {
        for (int64_t i = 0; i < it.inner; i++)
            out[k++] = clipl__load(it.ptr[0] + i * it.inner_stride[0], t->dt);
    } while (clipl__iter_next_outer(&it));
    return CLIPL_OK;
}
