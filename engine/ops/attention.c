/*
 * attention.c - scaled dot-product attention from oneDNN matmuls and softmax:
 *   scores = scale * q @ k^T + mask   (one matmul: the scale is an output scale, the mask is added
 *                                      by a sum post-op into a buffer that holds it)
 *   probs  = softmax(scores, -1)      (f32)
 *   dst    = probs @ v
 * and, for the encoders, a fused multi-head attention over a packed qkv (clipl__attention_qkv).
 */
#include "../autograd/autograd.h"
#include "dnnl_util.h"
#include "plain.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int clipl_attention(const clipl_tensor *q, const clipl_tensor *k, const clipl_tensor *v,
                    const clipl_tensor *mask, clipl_tensor **dst, double scale,
                    clipl_tensor **probs)
{
    if (CLIPL__AG_ON3(q, k, v) || CLIPL__AG_ON1(mask))
        return clipl__ag_attention(q, k, v, mask, dst, scale, probs);
    const char *op = "attention";
    int rc;
    if ((rc = clipl__dnnl_check_float(q, op, "q")) || (rc = clipl__dnnl_check_float(k, op, "k")) ||
        (rc = clipl__dnnl_check_float(v, op, "v")))
        return rc;
    if (mask && (rc = clipl__dnnl_check_float(mask, op, "mask")))
        return rc;
    char s1[96], s2[96], s3[96], s4[96];
    int nd = q->ndim;
    bool ok = nd >= 2 && k->ndim == nd && v->ndim == nd && q->dt == k->dt && q->dt == v->dt;
    if (ok) {
        int64_t T = q->shape[nd - 2], D = q->shape[nd - 1], S = k->shape[nd - 2];
        ok = k->shape[nd - 1] == D && v->shape[nd - 2] == S;
        (void)T;
    }
    if (!ok)
        return clipl__err(CLIPL_ESHAPE,
                          "%s: size mismatch, q [%s] %s, k [%s] %s, v [%s] %s "
                          "(expected [..., T, D], [..., S, D], [..., S, Dv], same dtype)",
                          op, clipl__tshape(s1, sizeof s1, q), clipl_dtype_name(q->dt),
                          clipl__tshape(s2, sizeof s2, k), clipl_dtype_name(k->dt),
                          clipl__tshape(s3, sizeof s3, v), clipl_dtype_name(v->dt));
    int64_t D = q->shape[nd - 1];
    if (!(scale > 0))
        scale = D > 0 ? 1.0 / sqrt((double)D) : 1.0;
    /* the shape of the scores: broadcast batch of q and k, then [T, S] */
    int64_t sshape[CLIPL_MAX_DIMS];
    for (int i = 0; i < nd - 2; i++) {
        int64_t a = q->shape[i], b = k->shape[i], c = v->shape[i];
        int64_t m = a > b ? a : b;
        m = m > c ? m : c;
        if ((a != m && a != 1) || (b != m && b != 1) || (c != m && c != 1))
            return clipl__err(CLIPL_ESHAPE,
                              "%s: batch dims do not broadcast, q [%s], k [%s], v "
                              "[%s]",
                              op, clipl__tshape(s1, sizeof s1, q), clipl__tshape(s2, sizeof s2, k),
                              clipl__tshape(s3, sizeof s3, v));
        sshape[i] = m;
    }
    sshape[nd - 2] = q->shape[nd - 2];
    sshape[nd - 1] = k->shape[nd - 2];
    if (mask) {
        ok = mask->ndim <= nd;
        for (int i = 0; ok && i < mask->ndim; i++) {
            int64_t s = mask->shape[mask->ndim - 1 - i];
            ok = s == 1 || s == sshape[nd - 1 - i];
        }
        if (!ok)
            return clipl__err(CLIPL_ESHAPE,
                              "%s: mask [%s] does not broadcast to the scores [%s] "
                              "(q [%s], k [%s])",
                              op, clipl__tshape(s1, sizeof s1, mask),
                              clipl__shape_str(s4, sizeof s4, nd, sshape),
                              clipl__tshape(s2, sizeof s2, q), clipl__tshape(s3, sizeof s3, k));
    }
    clipl_tensor *kt = NULL, *scores = NULL, *p = NULL, *pc = NULL, *sc = NULL;
    clipl_matmul_opts o = {CLIPL_ACT_NONE, 0, 0, (float)scale, 1, NULL};
    if ((rc = clipl_tensor_transpose(k, &kt, nd - 2, nd - 1)))
        goto done;
    if (mask || q->dt != CLIPL_F32) {
        /* scores start as the mask (or 0) in f32 and the matmul adds into them */
        scores = clipl_tensor_zeros(CLIPL_F32, nd, sshape);
        if (!scores) {
            rc = clipl_errcode();
            goto done;
        }
        if (mask && (rc = clipl_tensor_copy_(scores, mask)))
            goto done;
        o.accum = scores;
        rc = clipl_matmul(q, kt, NULL, &sc, &o);
    } else {
        rc = clipl_matmul(q, kt, NULL, &sc, &o);
    }
    if (rc)
        goto done;
    if ((rc = clipl_softmax(sc, &p, -1, 0)))
        goto done;
    if (v->dt != CLIPL_F32) {
        if ((rc = clipl_tensor_to(p, &pc, v->dt)))
            goto done;
    } else {
        pc = clipl_tensor_retain(p);
    }
    if ((rc = clipl_matmul(pc, v, NULL, dst, NULL)))
        goto done;
    if (probs)
        *probs = clipl_tensor_retain(p);
done:
    if (rc)
        clipl__err_prefix("%s", op);
    clipl_tensor_release(kt);
    clipl_tensor_release(scores);
    clipl_tensor_release(sc);
    clipl_tensor_release(p);
    clipl_tensor_release(pc);
    return rc;
}

/* ---- fused multi-head attention over a packed qkv (inference) ----------------------------------
 * One pass per (row, head): the head's q, k and v are read straight from qkv [N, T, 3W], the
 * scores, softmax and probs @ v stay in per-thread f32 buffers, and the result lands in its
 * columns of dst [N, T, W]. It replaces the head views, two batched matmuls, the softmax and the
 * copy that merges the heads, which at T = 50 or 77 cost more than the arithmetic. */

/* The kernel works on 16-float vectors (GCC vector extensions, compiled for AVX-512, AVX2 and a
 * baseline by target_clones) and blocks of RB query rows, so that every loaded vector of k or v
 * feeds RB fused multiply-adds held in registers. */
/* The helpers below pass vectors by value. They must be inlined into each clone of attend_head: a
 * helper left out of line (as -O0 or a sanitizer build may do) is compiled for the default target
 * and takes 64-byte vectors in memory, while an AVX-512 clone passes them in registers. VEC_INLINE
 * forces the inlining, so no ABI is ever at stake (hence -Wpsabi is quiet here). */
#pragma GCC diagnostic ignored "-Wpsabi"
#define VEC_INLINE static inline __attribute__((always_inline))
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
enum { VL = 16, RB = 8 };

VEC_INLINE v16 vsel(v16i m, v16 a, v16 b) { return (v16)(((v16i)a & m) | ((v16i)b & ~m)); }

/* exp(x) for x <= 0 (a score minus its row's maximum): Cephes' expf polynomial after reduction by
 * ln 2, relative error about 2e-7; below -87 the result is exp(-87) (the caller zeroes masked
 * entries). */
VEC_INLINE v16 vexp_nonpos(v16 x)
{
    const v16 lo = (v16){0} - 87.0f;
    x = vsel(x < lo, lo, x);
    v16 fn = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    v16 r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    v16i e = (__builtin_convertvector(fn, v16i) + 127) << 23;
    return p * (v16)e;
}

/* f32 -> bf16, nearest even, NaN kept quiet (as plain_f32_to_bf16). */
VEC_INLINE v16h vbf16(v16 f)
{
    v16u u = (v16u)f, nan = (v16u)((u & 0x7fffffffu) > 0x7f800000u);
    u = (nan & ((u >> 16) | 0x40u)) | (~nan & ((u + 0x7fffu + ((u >> 16) & 1u)) >> 16));
    return __builtin_convertvector(u, v16h);
}

/* Horizontal sum and maximum by halving shuffles (a scalar loop over the lanes went through the
 * stack, one dependent step per lane). */
#define HALVES(v, op)                                                                              \
    do {                                                                                           \
        v = op(v, __builtin_shuffle(                                                               \
                      v, (v16i){8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}));           \
        v = op(v, __builtin_shuffle(v, (v16i){4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3}));   \
        v = op(v, __builtin_shuffle(v, (v16i){2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1}));   \
        v = op(v, __builtin_shuffle(v, (v16i){1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0}));   \
    } while (0)

VEC_INLINE v16 vadd(v16 a, v16 b) { return a + b; }
VEC_INLINE v16 vmax(v16 a, v16 b) { return vsel(a > b, a, b); }

VEC_INLINE float hsum(v16 v)
{
    HALVES(v, vadd);
    return v[0];
}

VEC_INLINE float hmax(v16 v)
{
    HALVES(v, vmax);
    return v[0];
}

/* dst[0..n) = scale * src[at..at+n) (f32 or bf16 source), 16 at a time. */
VEC_INLINE void load_row(float *dst, const void *src, int64_t at, int64_t n, int bf16, float scale)
{
    int64_t d = 0;
    if (bf16) {
        const uint16_t *h = (const uint16_t *)src + at;
        for (; d + VL <= n; d += VL) {
            v16h hv;
            memcpy(&hv, h + d, sizeof hv);
            const v16 f = (v16)(__builtin_convertvector(hv, v16u) << 16) * scale;
            memcpy(dst + d, &f, sizeof f);
        }
        for (; d < n; d++)
            dst[d] = plain_bf16_to_f32(h[d]) * scale;
    } else {
        const float *f = (const float *)src + at;
        for (; d + VL <= n; d += VL) {
            v16 fv;
            memcpy(&fv, f + d, sizeof fv);
            fv *= scale;
            memcpy(dst + d, &fv, sizeof fv);
        }
        for (; d < n; d++)
            dst[d] = f[d] * scale;
    }
}

/* Per-thread work buffers for one head, zero-padded once: q [tr, dh] (scaled, rows padded to a
 * multiple of RB), k [t, dh] and transposed [dh, tp] (columns padded to a multiple of VL), v [t,
 * dhp] (columns padded to a multiple of VL), scores of one row block [RB, tp]. */
typedef struct head_buf {
    int64_t t, tr, tp, dh, dhp;
    float *q, *kr, *kt, *v, *s;
} head_buf;

/* Attention of head h of row n. qkv rows have 3W elements; dst rows W. (-std=c11 turns off the
 * contraction of a * b + c into fused multiply-adds; this function wants them.) */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"),
               optimize("fp-contract=fast"))) static void
attend_head(const void *qkv, void *dst, int bf16, int64_t n, int64_t h, int64_t w, float scale,
            int causal, const head_buf *b)
{
    const int64_t t = b->t, tp = b->tp, dh = b->dh, dhp = b->dhp;
    const int64_t base = n * t * 3 * w + h * dh;
    /* rows are read front to back (their stride is a multiple of 1 KiB, so columns read across
     * rows would evict each other from the caches); k goes through kr to be transposed in L1 */
    for (int64_t i = 0; i < t; i++) {
        const int64_t r = base + i * 3 * w;
        load_row(b->q + i * dh, qkv, r, dh, bf16, scale);
        load_row(b->kr + i * dh, qkv, r + w, dh, bf16, 1.0f);
        load_row(b->v + i * dhp, qkv, r + 2 * w, dh, bf16, 1.0f);
    }
    for (int64_t d = 0; d < dh; d++)
        for (int64_t i = 0; i < t; i++)
            b->kt[d * tp + i] = b->kr[i * dh + d];
    for (int64_t i0 = 0; i0 < t; i0 += RB) {
        /* scores of rows i0.. i0+RB-1 against the columns they see */
        const int64_t jmax = causal ? (i0 + RB < t ? i0 + RB : t) : t;
        for (int64_t jc = 0; jc < jmax; jc += VL) {
            v16 acc[RB] = {{0}};
            const float *q = b->q + i0 * dh;
            for (int64_t d = 0; d < dh; d++) {
                const v16 kv = *(const v16 *)(b->kt + d * tp + jc);
#pragma GCC unroll 8
                for (int r = 0; r < RB; r++)
                    acc[r] += q[r * dh + d] * kv;
            }
#pragma GCC unroll 8
            for (int r = 0; r < RB; r++)
                *(v16 *)(b->s + r * tp + jc) = acc[r];
        }
        const int64_t jpad = (jmax + VL - 1) / VL * VL;
        float inv[RB];
        for (int r = 0; r < RB; r++) {
            float *s = b->s + r * tp;
            const int64_t jn = causal ? (i0 + r + 1 < t ? i0 + r + 1 : t) : t;
            for (int64_t j = jn; j < jpad; j++)
                s[j] = -INFINITY;
            v16 mv = *(v16 *)s;
            for (int64_t jc = VL; jc < jpad; jc += VL)
                mv = vmax(*(v16 *)(s + jc), mv);
            const float mx = hmax(mv);
            v16 sum = {0};
            for (int64_t jc = 0; jc < jpad; jc += VL) {
                v16 e = vexp_nonpos(*(v16 *)(s + jc) - mx);
                *(v16 *)(s + jc) = e;
                sum += e;
            }
            for (int64_t j = jn; j < jpad; j++)
                s[j] = 0;
            inv[r] = 1.0f / hsum(sum);
        }
        /* probs @ v, one column vector at a time */
        const int rows = t - i0 < RB ? (int)(t - i0) : RB;
        for (int64_t c = 0; c < dhp; c += VL) {
            v16 acc[RB] = {{0}};
            for (int64_t j = 0; j < jmax; j++) {
                const v16 vv = *(const v16 *)(b->v + j * dhp + c);
#pragma GCC unroll 8
                for (int r = 0; r < RB; r++)
                    acc[r] += b->s[r * tp + j] * vv;
            }
            const int64_t cols = dh - c < VL ? dh - c : VL;
            for (int r = 0; r < rows; r++) {
                const int64_t out = (n * t + i0 + r) * w + h * dh + c;
                const v16 o = acc[r] * inv[r];
                if (bf16) {
                    const v16h hv = vbf16(o);
                    memcpy((uint16_t *)dst + out, &hv, sizeof(uint16_t) * (size_t)cols);
                } else {
                    memcpy((float *)dst + out, &o, sizeof(float) * (size_t)cols);
                }
            }
        }
    }
}

int clipl__attention_qkv(const clipl_tensor *qkv, int heads, int causal, clipl_tensor **dst)
{
    const char *op = "attention_qkv";
    char s1[96];
    int rc = clipl__dnnl_check_float(qkv, op, "qkv");
    if (rc)
        return rc;
    if (qkv->ndim != 3 || heads < 1 || qkv->shape[2] % (3 * (int64_t)heads) != 0 ||
        !clipl_tensor_is_contiguous(qkv))
        return clipl__err(CLIPL_ESHAPE,
                          "%s: qkv must be contiguous [N, T, 3W] with W a multiple of %d heads, "
                          "got [%s]",
                          op, heads, clipl__tshape(s1, sizeof s1, qkv));
    int64_t n = qkv->shape[0], t = qkv->shape[1], w = qkv->shape[2] / 3, dh = w / heads;
    clipl_tensor *out = clipl_tensor_empty(qkv->dt, 3, (const int64_t[]){n, t, w});
    if (!out)
        return clipl_errcode();
    if (n * t * w == 0) {
        *dst = out;
        return CLIPL_OK;
    }
    const int bf16 = qkv->dt == CLIPL_BF16;
    const float scale = (float)(1.0 / sqrt((double)dh));
    const int64_t tasks = n * heads;
    head_buf proto = {0};
    proto.t = t, proto.tr = (t + RB - 1) / RB * RB, proto.tp = (t + VL - 1) / VL * VL;
    proto.dh = dh, proto.dhp = (dh + VL - 1) / VL * VL;
    const int64_t nq = proto.tr * dh, nk = dh * proto.tp, nv = t * proto.dhp, ns = RB * proto.tp;
    const size_t bytes = sizeof(float) * (size_t)(nq + t * dh + nk + nv + ns + 5 * VL);
    int failed = 0;
#pragma omp parallel if (tasks > 1)
    {
        head_buf b = proto;
        float *mem = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (mem) {
            /* each part starts on a 64-byte boundary; the padding stays zero */
            memset(mem, 0, bytes);
            int64_t at = 0;
            float **parts[5] = {&b.q, &b.kr, &b.kt, &b.v, &b.s};
            const int64_t sizes[5] = {nq, t * dh, nk, nv, ns};
            for (int k = 0; k < 5; k++) {
                *parts[k] = mem + at;
                at += (sizes[k] + VL - 1) / VL * VL;
            }
        } else {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t k = 0; k < tasks; k++)
            if (mem)
                attend_head(qkv->ptr, out->ptr, bf16, k / heads, k % heads, w, scale, causal, &b);
        free(mem);
    }
    if (failed) {
        clipl_tensor_release(out);
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory for the work buffers", op);
    }
    *dst = out;
    return CLIPL_OK;
}
