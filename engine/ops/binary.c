/*
 * binary.c - elementwise binary ops with NumPy broadcasting: add/sub/mul/div/pow/maximum/minimum
 * and comparisons, tensor-tensor, tensor-scalar and in place.
 *
 * Dense f32/bf16 cases where the first operand already has the output's shape run on oneDNN's
 * binary primitive (through the shared primitive cache of dnnl_util); everything else runs on
 * strided C loops over clipl__iter, split over OpenMP threads when large.
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"
#include "plain.h"

#include <math.h>
#include <string.h>

static const char *const op_names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum",
                                       "eq",  "ne",  "lt",  "le",  "gt",  "ge"};
enum { NOPS = sizeof op_names / sizeof op_names[0] };

static bool is_cmp(int op) { return op >= CLIPL_BIN_EQ && op <= CLIPL_BIN_GE; }

static int dtype_rank_float(int dt) { return dt == CLIPL_F32 ? 2 : 1; }
static int dtype_rank_int(int dt) { return dt == CLIPL_I64 ? 3 : dt == CLIPL_I32 ? 2 : 1; }

int clipl__common_dtype(int a, int b)
{
    if (clipl_dtype_size(a) == 0 || clipl_dtype_size(b) == 0)
        return -1;
    if (a == b)
        return a;
    bool fa = plain_is_float(a), fb = plain_is_float(b);
    if (fa && fb) {
        int ra = dtype_rank_float(a), rb = dtype_rank_float(b);
        if (ra != rb)
            return ra > rb ? a : b;
        return CLIPL_F32; /* bf16 with f16 */
    }
    if (fa)
        return a;
    if (fb)
        return b;
    return dtype_rank_int(a) >= dtype_rank_int(b) ? a : b;
}

int clipl_result_dtype(int dtype_a, int dtype_b) { return clipl__common_dtype(dtype_a, dtype_b); }

int clipl__broadcast2(const char *op, const clipl_tensor *a, const clipl_tensor *b, int *ndim,
                      int64_t *shape)
{
    char b1[128], b2[128];
    int n = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < n; i++) {
        int ia = a->ndim - n + i, ib = b->ndim - n + i;
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return clipl__err(CLIPL_ESHAPE,
                              "%s: shapes %s and %s do not broadcast (dim %d: %lld vs %lld)", op,
                              clipl__tshape(b1, sizeof b1, a), clipl__tshape(b2, sizeof b2, b), i,
                              (long long)sa, (long long)sb);
        shape[i] = sa == 1 ? sb : sa;
    }
    *ndim = n;
    return CLIPL_OK;
}

/* ---- kernels: one row of n elements, byte strides ---- */

static inline float fmax_nan(float x, float y) { return (x > y || x != x) ? x : y; }
static inline float fmin_nan(float x, float y) { return (x < y || x != x) ? x : y; }

static int64_t ipow(int64_t x, int64_t e)
{
    if (e < 0) /* only 1 and -1 have integral negative powers; the rest truncate to 0 */
        return x == 1 ? 1 : x == -1 ? ((e & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)x;
    while (e) {
        if (e & 1)
            r *= b;
        b *= b;
        e >>= 1;
    }
    return (int64_t)r;
}

typedef struct {
    int op;
    int kind; /* 0 float, 1 int, 2 compare */
    int dout, da, db;
    float alpha;
    int64_t ialpha;
} kernel;

/* All-f32 rows: plain float loops the compiler can vectorise when strides are 1. */
#define F32_ROW(EXPR)                                                                              \
    for (int64_t i = 0; i < n; i++) {                                                              \
        float x = A[i * ea], y = B[i * eb];                                                        \
        O[i * eo] = (EXPR);                                                                        \
    }                                                                                              \
    break

/* All-bf16 rows: computed in f32, rounded once. */
#define BF16_ROW(EXPR)                                                                             \
    for (int64_t i = 0; i < n; i++) {                                                              \
        float x = plain_bf16_to_f32(*(const uint16_t *)(pa + i * sa)),                             \
              y = plain_bf16_to_f32(*(const uint16_t *)(pb + i * sb));                             \
        *(uint16_t *)(po + i * so) = plain_f32_to_bf16(EXPR);                                      \
    }                                                                                              \
    break

#define ANY_ROW(LOAD, STORE, T, EXPR)                                                              \
    for (int64_t i = 0; i < n; i++) {                                                              \
        T x = LOAD(pa + i * sa, k->da), y = LOAD(pb + i * sb, k->db);                              \
        STORE(po + i * so, k->dout, (EXPR));                                                       \
    }                                                                                              \
    break

static inline double plain_ldd(const char *p, int dt)
{
    return plain_is_float(dt) ? (double)plain_ldf(p, dt) : (double)plain_ldi(p, dt);
}

static inline void st_cmp(char *p, int dt, int v) { plain_sti(p, dt, v); }

static void row(const kernel *k, char *po, int64_t so, const char *pa, int64_t sa, const char *pb,
                int64_t sb, int64_t n)
{
    if (k->kind == 0 && k->dout == CLIPL_F32 && k->da == CLIPL_F32 && k->db == CLIPL_F32) {
        float *O = (float *)po;
        const float *A = (const float *)pa, *B = (const float *)pb;
        int64_t eo = so / 4, ea = sa / 4, eb = sb / 4;
        float alpha = k->alpha;
        switch (k->op) {
        case CLIPL_BIN_ADD: F32_ROW(x + alpha * y);
        case CLIPL_BIN_SUB: F32_ROW(x - y);
        case CLIPL_BIN_MUL: F32_ROW(x * y);
        case CLIPL_BIN_DIV: F32_ROW(x / y);
        case CLIPL_BIN_POW: F32_ROW(powf(x, y));
        case CLIPL_BIN_MAX: F32_ROW(fmax_nan(x, y));
        case CLIPL_BIN_MIN: F32_ROW(fmin_nan(x, y));
        }
        return;
    }
    if (k->kind == 0 && k->dout == CLIPL_BF16 && k->da == CLIPL_BF16 && k->db == CLIPL_BF16) {
        float alpha = k->alpha;
        switch (k->op) {
        case CLIPL_BIN_ADD: BF16_ROW(x + alpha * y);
        case CLIPL_BIN_SUB: BF16_ROW(x - y);
        case CLIPL_BIN_MUL: BF16_ROW(x * y);
        case CLIPL_BIN_DIV: BF16_ROW(x / y);
        case CLIPL_BIN_POW: BF16_ROW(powf(x, y));
        case CLIPL_BIN_MAX: BF16_ROW(fmax_nan(x, y));
        case CLIPL_BIN_MIN: BF16_ROW(fmin_nan(x, y));
        }
        return;
    }
    if (k->kind == 0) {
        float alpha = k->alpha;
        switch (k->op) {
        case CLIPL_BIN_ADD: ANY_ROW(plain_ldf, plain_stf, float, x + alpha * y);
        case CLIPL_BIN_SUB: ANY_ROW(plain_ldf, plain_stf, float, x - y);
        case CLIPL_BIN_MUL: ANY_ROW(plain_ldf, plain_stf, float, x *y);
        case CLIPL_BIN_DIV: ANY_ROW(plain_ldf, plain_stf, float, x / y);
        case CLIPL_BIN_POW: ANY_ROW(plain_ldf, plain_stf, float, powf(x, y));
        case CLIPL_BIN_MAX: ANY_ROW(plain_ldf, plain_stf, float, fmax_nan(x, y));
        case CLIPL_BIN_MIN: ANY_ROW(plain_ldf, plain_stf, float, fmin_nan(x, y));
        }
        return;
    }
    if (k->kind == 1) {
        uint64_t alpha = (uint64_t)k->ialpha;
        switch (k->op) {
        case CLIPL_BIN_ADD:
            ANY_ROW(plain_ldi, plain_sti, int64_t, (int64_t)((uint64_t)x + alpha * (uint64_t)y));
        case CLIPL_BIN_SUB:
            ANY_ROW(plain_ldi, plain_sti, int64_t, (int64_t)((uint64_t)x - (uint64_t)y));
        case CLIPL_BIN_MUL:
            ANY_ROW(plain_ldi, plain_sti, int64_t, (int64_t)((uint64_t)x * (uint64_t)y));
        case CLIPL_BIN_POW: ANY_ROW(plain_ldi, plain_sti, int64_t, ipow(x, y));
        case CLIPL_BIN_MAX: ANY_ROW(plain_ldi, plain_sti, int64_t, x > y ? x : y);
        case CLIPL_BIN_MIN: ANY_ROW(plain_ldi, plain_sti, int64_t, x < y ? x : y);
        }
        return;
    }
    if (plain_is_int(k->da) && plain_is_int(k->db)) {
        switch (k->op) {
        case CLIPL_BIN_EQ: ANY_ROW(plain_ldi, st_cmp, int64_t, x == y);
        case CLIPL_BIN_NE: ANY_ROW(plain_ldi, st_cmp, int64_t, x != y);
        case CLIPL_BIN_LT: ANY_ROW(plain_ldi, st_cmp, int64_t, x < y);
        case CLIPL_BIN_LE: ANY_ROW(plain_ldi, st_cmp, int64_t, x <= y);
        case CLIPL_BIN_GT: ANY_ROW(plain_ldi, st_cmp, int64_t, x > y);
        case CLIPL_BIN_GE: ANY_ROW(plain_ldi, st_cmp, int64_t, x >= y);
        }
        return;
    }
    switch (k->op) {
    case CLIPL_BIN_EQ: ANY_ROW(plain_ldd, st_cmp, double, x == y);
    case CLIPL_BIN_NE: ANY_ROW(plain_ldd, st_cmp, double, x != y);
    case CLIPL_BIN_LT: ANY_ROW(plain_ldd, st_cmp, double, x < y);
    case CLIPL_BIN_LE: ANY_ROW(plain_ldd, st_cmp, double, x <= y);
    case CLIPL_BIN_GT: ANY_ROW(plain_ldd, st_cmp, double, x > y);
    case CLIPL_BIN_GE: ANY_ROW(plain_ldd, st_cmp, double, x >= y);
    }
}

/* ---- oneDNN path ---- */

/* Runs out = a op b on oneDNN's binary primitive (cached in the shared primitive cache) when it
 * fits: f32/bf16 throughout, a with out's shape, all three dense (oneDNN 2.6 has fast kernels for
 * dense operands only; strided ones fall to its reference code, far slower than our loops).
 * Returns 1 when done, 0 to use the C loops, or a negative status when execution failed. */
static int try_dnnl(const char *name, int op, const clipl_tensor *a, const clipl_tensor *b,
                    clipl_tensor *out, float alpha)
{
    static const int algs[] = {
        dnnl_binary_add, dnnl_binary_sub, dnnl_binary_mul, dnnl_binary_div, -1,
        dnnl_binary_max, dnnl_binary_min};
#ifdef CLIPL_PLAIN_NO_DNNL /* build knob to measure the C loops against oneDNN */
    return 0;
#endif
    /* max/min: oneDNN's do not propagate NaN as ours do */
    if (op < 0 || op > CLIPL_BIN_DIV || algs[op] < 0)
        return 0;
    if (out->dt != a->dt || out->dt != b->dt || (out->dt != CLIPL_F32 && out->dt != CLIPL_BF16))
        return 0;
    if (out->ndim == 0 || a->ndim != out->ndim || !clipl__same_shape(a, out) ||
        clipl_tensor_numel(out) < PLAIN_PAR_MIN || !clipl_tensor_is_contiguous(out) ||
        !clipl_tensor_is_contiguous(a) || !clipl_tensor_is_contiguous(b))
        return 0;
    /* b right-aligned with size-1 broadcast dims; plain row-major strides for both */
    int64_t bdims[CLIPL_MAX_DIMS], sa[CLIPL_MAX_DIMS], sb[CLIPL_MAX_DIMS];
    int lead = out->ndim - b->ndim;
    for (int i = 0; i < out->ndim; i++)
        bdims[i] = i < lead ? 1 : b->shape[i - lead];
    clipl__contiguous_strides(out->ndim, out->shape, sa);
    clipl__contiguous_strides(out->ndim, bdims, sb);
    dnnl_memory_desc_t ma, mb;
    if (clipl__dnnl_md_dims(&ma, out->ndim, out->shape, sa, out->dt, name) ||
        clipl__dnnl_md_dims(&mb, out->ndim, bdims, sb, out->dt, name))
        goto fallback;
    clipl__key k;
    clipl__key_init(&k, "binary");
    clipl__key_add(&k, algs[op]);
    clipl__key_addf(&k, alpha);
    clipl__key_md(&k, &ma);
    clipl__key_md(&k, &mb);
    clipl__prim *p = clipl__prim_get(&k);
    if (!p) {
        dnnl_engine_t eng = clipl__dnnl_engine(name);
        dnnl_binary_desc_t bd;
        dnnl_primitive_attr_t attr;
        dnnl_primitive_desc_t pd;
        if (!eng ||
            dnnl_binary_desc_init(&bd, (dnnl_alg_kind_t)algs[op], &ma, &mb, &ma) != dnnl_success ||
            clipl__dnnl_attr(&attr, NULL, name))
            goto fallback;
        dnnl_status_t st = dnnl_success;
        if (alpha != 1.0f)
            st = dnnl_primitive_attr_set_scales(attr, DNNL_ARG_SRC_1, 1, 0, &alpha);
        if (st == dnnl_success)
            st = dnnl_primitive_desc_create(&pd, &bd, attr, eng, NULL);
        dnnl_primitive_attr_destroy(attr);
        if (st != dnnl_success || !(p = clipl__prim_put(&k, pd, name)))
            goto fallback;
    }
    clipl__arg args[3] = {{DNNL_ARG_SRC_0, &ma, a->ptr},
                          {DNNL_ARG_SRC_1, &mb, b->ptr},
                          {DNNL_ARG_DST, &ma, out->ptr}};
    int rc = clipl__prim_exec(p, 3, args, name);
    clipl__prim_release(p);
    return rc ? rc : 1;
fallback:
    clipl_errclear(); /* oneDNN declined: the C loops compute the same thing */
    return 0;
}

/* ---- drivers ---- */

/* When an operand is unit-stride along some dim J other than the innermost dim I (a transposed
 * view), walking rows of I touches one cache line per element of that operand. Instead walk tiles:
 * for a block of TILE entries of I, run every j of J, so the lines of both layouts stay in cache.
 * Returns false (doing nothing) when no operand is laid out that way. */
static bool tiled(const kernel *k, const clipl__iter *it, int64_t total)
{
    enum { TILE = 32 };
    int nd = it->ndim, I = nd - 1, J = -1;
    if (nd < 2)
        return false;
    int es[3] = {clipl_dtype_size(k->dout), clipl_dtype_size(k->da), clipl_dtype_size(k->db)};
    for (int t = 0; t < 3 && J < 0; t++) {
        int64_t si = it->bstride[t][I];
        if (si == 0 || si == es[t])
            continue;
        for (int d = nd - 2; d >= 0; d--)
            if (it->bstride[t][d] == es[t] && it->shape[d] > 1) {
                J = d;
                break;
            }
    }
    if (J < 0)
        return false;
    int64_t nI = it->shape[I], nJ = it->shape[J], nblk = (nI + TILE - 1) / TILE;
    int64_t outer = total / (nI * nJ);
#pragma omp parallel for schedule(static) if (total >= PLAIN_PAR_MIN)
    for (int64_t task = 0; task < outer * nblk; task++) {
        int64_t o = task / nblk, i0 = (task % nblk) * TILE;
        int64_t n = nI - i0 < TILE ? nI - i0 : TILE;
        char *p[3] = {it->ptr[0], it->ptr[1], it->ptr[2]};
        for (int d = nd - 2; d >= 0 && o > 0; d--) { /* outer index over the dims but I, J */
            if (d == J)
                continue;
            int64_t idx = o % it->shape[d];
            o /= it->shape[d];
            for (int t = 0; t < 3; t++)
                p[t] += idx * it->bstride[t][d];
        }
        for (int64_t j = 0; j < nJ; j++)
            row(k, p[0] + j * it->bstride[0][J] + i0 * it->bstride[0][I], it->bstride[0][I],
                p[1] + j * it->bstride[1][J] + i0 * it->bstride[1][I], it->bstride[1][I],
                p[2] + j * it->bstride[2][J] + i0 * it->bstride[2][I], it->bstride[2][I], n);
    }
    return true;
}

/* true when an integer tensor holds a negative value */
static bool has_negative(const clipl_tensor *t)
{
    if (t->dt == CLIPL_U8 || clipl_tensor_numel(t) == 0)
        return false;
    const clipl_tensor *ts[1] = {t};
    clipl__iter it;
    clipl__iter_init(&it, t->ndim, t->shape, 1, ts);
    do {
        for (int64_t i = 0; i < it.inner; i++)
            if (plain_ldi(it.ptr[0] + i * it.inner_stride[0], t->dt) < 0)
                return true;
    } while (clipl__iter_next_outer(&it));
    return false;
}

/* out = a op b; a and b broadcast to out's shape (checked by the caller). Arithmetic is in float
 * when the common dtype of a and b or the output is a float (integer division), else in int64. */
static int run(const char *name, int op, const clipl_tensor *a, const clipl_tensor *b,
               clipl_tensor *out, double alpha)
{
    int common = clipl__common_dtype(a->dt, b->dt);
    kernel k = {.op = op, .dout = out->dt, .da = a->dt, .db = b->dt, .alpha = (float)alpha};
    k.kind = is_cmp(op) ? 2 : (plain_is_float(common) || plain_is_float(out->dt)) ? 0 : 1;
    if (k.kind == 1) {
        if (op == CLIPL_BIN_DIV)
            return clipl__err(CLIPL_EINVAL,
                              "%s: integer division in place is not supported "
                              "(true division gives a float); convert first",
                              name);
        if (alpha != floor(alpha))
            return clipl__err(CLIPL_EINVAL,
                              "%s: alpha %g must be integral for integer tensors (%s, %s)", name,
                              alpha, clipl_dtype_name(a->dt), clipl_dtype_name(b->dt));
        k.ialpha = (int64_t)alpha;
        if (op == CLIPL_BIN_POW && has_negative(b))
            return clipl__err(CLIPL_EINVAL,
                              "%s: integers to negative integer powers are not allowed (%s ^ %s); "
                              "convert to a float dtype first",
                              name, clipl_dtype_name(a->dt), clipl_dtype_name(b->dt));
    }
    int64_t total = clipl_tensor_numel(out);
    if (total == 0)
        return CLIPL_OK;
    if (k.kind == 0) {
        int done = try_dnnl(name, op, a, b, out, (float)alpha);
        if (done)
            return done > 0 ? CLIPL_OK : done;
    }
    const clipl_tensor *ts[3] = {out, a, b};
    clipl__iter it;
    clipl__iter_init(&it, out->ndim, out->shape, 3, ts);
    if (total >= 4096 && tiled(&k, &it, total))
        return CLIPL_OK;
    int64_t inner = it.inner, rows = total / inner;
    if (total < PLAIN_PAR_MIN) {
        do {
            row(&k, it.ptr[0], it.inner_stride[0], it.ptr[1], it.inner_stride[1], it.ptr[2],
                it.inner_stride[2], inner);
        } while (clipl__iter_next_outer(&it));
        return CLIPL_OK;
    }
    int64_t chunks = (inner + PLAIN_CHUNK - 1) / PLAIN_CHUNK;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < rows * chunks; task++) {
        int64_t r = task / chunks, c = task % chunks;
        int64_t start = c * PLAIN_CHUNK,
                n = inner - start < PLAIN_CHUNK ? inner - start : PLAIN_CHUNK;
        char *p[3];
        plain_row_ptrs(&it, r, p);
        row(&k, p[0] + start * it.inner_stride[0], it.inner_stride[0],
            p[1] + start * it.inner_stride[1], it.inner_stride[1],
            p[2] + start * it.inner_stride[2], it.inner_stride[2], n);
    }
    return CLIPL_OK;
}

static int check_op(int op)
{
    if (op < 0 || op >= NOPS)
        return clipl__err(CLIPL_EINVAL, "binary: unknown op %d", op);
    return CLIPL_OK;
}

static int out_dtype(int op, int common)
{
    if (is_cmp(op))
        return CLIPL_U8;
    if (op == CLIPL_BIN_DIV && plain_is_int(common))
        return CLIPL_F32;
    return common;
}

static int binary_alpha(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst, int op,
                        double alpha)
{
    if (CLIPL__AG_ON2(a, b))
        return clipl__ag_binary(a, b, dst, op, alpha);
    int rc = check_op(op), ndim;
    int64_t shape[CLIPL_MAX_DIMS];
    if (rc)
        return rc;
    if (!a || !b || !dst)
        return clipl__err(CLIPL_EINVAL, "%s: NULL argument", op_names[op]);
    rc = clipl__broadcast2(op_names[op], a, b, &ndim, shape);
    if (rc)
        return rc;
    int common = clipl__common_dtype(a->dt, b->dt);
    if (common < 0)
        return clipl__err(CLIPL_EINVAL, "%s: unknown dtype", op_names[op]);
    int odt = out_dtype(op, common);
    clipl_tensor *out = plain_new(odt, ndim, shape, &rc);
    if (!out)
        return rc;
    if ((rc = run(op_names[op], op, a, b, out, alpha))) {
        clipl_tensor_release(out);
        return rc;
    }
    *dst = out;
    return CLIPL_OK;
}

int clipl_binary(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst, int op)
{
    return binary_alpha(a, b, dst, op, 1.0);
}

static int inplace_alpha(clipl_tensor *a, const clipl_tensor *b, int op, double alpha)
{
    if (clipl__ag_inplace(op >= 0 && op <= CLIPL_BIN_GE ? op_names[op] : "binary_", a, b))
        return clipl_errcode();
    char b1[128], b2[128];
    int rc = check_op(op), ndim;
    int64_t shape[CLIPL_MAX_DIMS];
    if (rc)
        return rc;
    if (!a || !b)
        return clipl__err(CLIPL_EINVAL, "%s_: NULL argument", op_names[op]);
    if ((rc = clipl__check_writable(a, op_names[op])))
        return rc;
    rc = clipl__broadcast2(op_names[op], a, b, &ndim, shape);
    if (rc)
        return rc;
    if (ndim != a->ndim || memcmp(shape, a->shape, sizeof(int64_t) * (size_t)ndim) != 0)
        return clipl__err(CLIPL_ESHAPE, "%s_: %s does not broadcast to the in-place target %s",
                          op_names[op], clipl__tshape(b1, sizeof b1, b),
                          clipl__tshape(b2, sizeof b2, a));
    int common = clipl__common_dtype(a->dt, b->dt);
    if (!is_cmp(op) && plain_is_int(a->dt) && plain_is_float(common))
        return clipl__err(CLIPL_EINVAL,
                          "%s_: the result (%s) cannot be stored in place in a %s "
                          "tensor",
                          op_names[op], clipl_dtype_name(common), clipl_dtype_name(a->dt));
    return run(op_names[op], op, a, b, a, alpha);
}

int clipl_binary_(clipl_tensor *a, const clipl_tensor *b, int op)
{
    return inplace_alpha(a, b, op, 1.0);
}

/* A 0-d tensor holding s for a tensor-scalar op on a: f32 for float results (the compute type of
 * bf16/f16 too, so s is not rounded to 8 bits), i64 for integer results. */
static clipl_tensor *scalar_tensor(double s, bool is_float)
{
    clipl_tensor *t = clipl_tensor_empty(is_float ? CLIPL_F32 : CLIPL_I64, 0, NULL);
    if (t)
        clipl__store(t->ptr, t->dt, s);
    return t;
}

static bool scalar_needs_float(int dt, int op, double s)
{
    return plain_is_float(dt) || op == CLIPL_BIN_DIV || !(s == floor(s)) || fabs(s) > 9.2e18;
}

int clipl_binary_scalar(const clipl_tensor *a, double s, clipl_tensor **dst, int op, int reversed)
{
    if (CLIPL__AG_ON1(a))
        return clipl__ag_binary_scalar(a, s, dst, op, reversed);
    int rc = check_op(op);
    if (rc)
        return rc;
    if (!a || !dst)
        return clipl__err(CLIPL_EINVAL, "%s: NULL argument", op_names[op]);
    bool fl = scalar_needs_float(a->dt, op, s);
    int odt = is_cmp(op) ? CLIPL_U8 : fl ? (plain_is_float(a->dt) ? a->dt : CLIPL_F32) : a->dt;
    clipl_tensor *st = scalar_tensor(s, fl), *out = NULL;
    if (!st)
        return clipl_errcode();
    out = plain_new(odt, a->ndim, a->shape, &rc);
    if (out)
        rc = reversed ? run(op_names[op], op, st, a, out, 1.0)
                      : run(op_names[op], op, a, st, out, 1.0);
    if (out && rc == CLIPL_OK) {
        *dst = out;
        out = NULL;
    }
    clipl_tensor_release(out);
    clipl_tensor_release(st);
    return rc;
}

int clipl_binary_scalar_(clipl_tensor *a, double s, int op, int reversed)
{
    if (clipl__ag_inplace(op >= 0 && op <= CLIPL_BIN_GE ? op_names[op] : "binary_", a, NULL))
        return clipl_errcode();
    int rc = check_op(op);
    if (rc)
        return rc;
    if (!a)
        return clipl__err(CLIPL_EINVAL, "%s_: NULL argument", op_names[op]);
    if ((rc = clipl__check_writable(a, op_names[op])))
        return rc;
    bool fl = scalar_needs_float(a->dt, op, s);
    if (fl && plain_is_int(a->dt) && !is_cmp(op))
        return clipl__err(CLIPL_EINVAL,
                          "%s_: the result of %s with %g is float and cannot be stored in place "
                          "in a %s tensor",
                          op_names[op], op_names[op], s, clipl_dtype_name(a->dt));
    clipl_tensor *st = scalar_tensor(s, fl);
    if (!st)
        return clipl_errcode();
    rc = reversed ? run(op_names[op], op, st, a, a, 1.0) : run(op_names[op], op, a, st, a, 1.0);
    clipl_tensor_release(st);
    return rc;
}

/* ---- named forms ---- */

int clipl_add(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst, double alpha)
{
    return binary_alpha(a, b, dst, CLIPL_BIN_ADD, alpha);
}
int clipl_sub(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst)
{
    return clipl_binary(a, b, dst, CLIPL_BIN_SUB);
}
int clipl_mul(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst)
{
    return clipl_binary(a, b, dst, CLIPL_BIN_MUL);
}
int clipl_div(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst)
{
    return clipl_binary(a, b, dst, CLIPL_BIN_DIV);
}
int clipl_pow(const clipl_tensor *a, const clipl_tensor *b, clipl_tensor **dst)
{
    return clipl_binary(a, b, dst, CLIPL_BIN_POW);
}
int clipl_add_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_ADD, 0);
}
int clipl_sub_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_SUB, 0);
}
int clipl_mul_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_MUL, 0);
}
int clipl_div_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_DIV, 0);
}
int clipl_pow_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_POW, 0);
}
int clipl_rsub_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_SUB, 1);
}
int clipl_rdiv_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_DIV, 1);
}
int clipl_rpow_scalar(const clipl_tensor *a, double s, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, s, dst, CLIPL_BIN_POW, 1);
}
int clipl_neg(const clipl_tensor *a, clipl_tensor **dst)
{
    return clipl_binary_scalar(a, -1.0, dst, CLIPL_BIN_MUL, 0); /* -1 * x keeps -0 and NaN */
}
int clipl_add_(clipl_tensor *a, const clipl_tensor *b, double alpha)
{
    return inplace_alpha(a, b, CLIPL_BIN_ADD, alpha);
}
int clipl_sub_(clipl_tensor *a, const clipl_tensor *b)
{
    return clipl_binary_(a, b, CLIPL_BIN_SUB);
}
int clipl_mul_(clipl_tensor *a, const clipl_tensor *b)
{
    return clipl_binary_(a, b, CLIPL_BIN_MUL);
}
int clipl_div_(clipl_tensor *a, const clipl_tensor *b)
{
    return clipl_binary_(a, b, CLIPL_BIN_DIV);
}
int clipl_pow_(clipl_tensor *a, const clipl_tensor *b)
{
    return clipl_binary_(a, b, CLIPL_BIN_POW);
}
int clipl_add_scalar_(clipl_tensor *a, double s)
{
    return clipl_binary_scalar_(a, s, CLIPL_BIN_ADD, 0);
}
int clipl_mul_scalar_(clipl_tensor *a, double s)
{
    return clipl_binary_scalar_(a, s, CLIPL_BIN_MUL, 0);
}
int clipl_neg_(clipl_tensor *a) { return clipl_binary_scalar_(a, -1.0, CLIPL_BIN_MUL, 0); }
