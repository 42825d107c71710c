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

/* exp(x) for x <= 0 (a score minus its row's maximum): Cephes' expf polynomial after reduction by
 * ln 2 (relative error about 2e-7); written so that the loops around it vectorize. */
static inline float exp_nonpos(float x)
{
    x = x < -87.0f ? -87.0f : x;
    float fn = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } s = {.i = ((int32_t)fn + 127) << 23};
    return p * s.f;
}

static inline float load_elem(const void *base, int64_t i, int bf16)
{
    return bf16 ? plain_bf16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

/* Per-thread work buffers for one head: q (scaled), k transposed, v, one row of scores. */
typedef struct head_buf {
    float *q, *kt, *v, *s, *o;
} head_buf;

/* Attention of head h of row n. qkv rows have 3W elements; dst rows W. */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void
attend_head(const void *qkv, void *dst, int bf16, int64_t n, int64_t h, int64_t t, int64_t w,
            int64_t dh, float scale, int causal, const head_buf *b)
{
    const int64_t base = n * t * 3 * w + h * dh;
    for (int64_t i = 0; i < t; i++) {
        int64_t r = base + i * 3 * w;
        for (int64_t d = 0; d < dh; d++) {
            b->q[i * dh + d] = load_elem(qkv, r + d, bf16) * scale;
            b->kt[d * t + i] = load_elem(qkv, r + w + d, bf16);
            b->v[i * dh + d] = load_elem(qkv, r + 2 * w + d, bf16);
        }
    }
    float *s = b->s, *o = b->o;
    for (int64_t i = 0; i < t; i++) {
        const int64_t jn = causal ? i + 1 : t;
        const float *qi = b->q + i * dh;
        for (int64_t j = 0; j < jn; j++)
            s[j] = 0;
        for (int64_t d = 0; d < dh; d++) {
            const float qd = qi[d], *kd = b->kt + d * t;
#pragma omp simd
            for (int64_t j = 0; j < jn; j++)
                s[j] += qd * kd[j];
        }
        float mx = s[0], sum = 0;
        for (int64_t j = 1; j < jn; j++)
            mx = s[j] > mx ? s[j] : mx;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < jn; j++) {
            s[j] = exp_nonpos(s[j] - mx);
            sum += s[j];
        }
        for (int64_t d = 0; d < dh; d++)
            o[d] = 0;
        for (int64_t j = 0; j < jn; j++) {
            const float pj = s[j], *vj = b->v + j * dh;
#pragma omp simd
            for (int64_t d = 0; d < dh; d++)
                o[d] += pj * vj[d];
        }
        const float inv = 1.0f / sum;
        const int64_t out = (n * t + i) * w + h * dh;
        if (bf16) {
            uint16_t *od = (uint16_t *)dst + out;
            for (int64_t d = 0; d < dh; d++)
                od[d] = plain_f32_to_bf16(o[d] * inv);
        } else {
            float *od = (float *)dst + out;
            for (int64_t d = 0; d < dh; d++)
                od[d] = o[d] * inv;
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
    const size_t floats = (size_t)(3 * t * dh + t + dh);
    int failed = 0;
#pragma omp parallel if (tasks > 1)
    {
        float *mem = malloc(sizeof(float) * floats);
        head_buf b = {mem, mem + t * dh, mem + 2 * t * dh, mem + 3 * t * dh, mem + 3 * t * dh + t};
        if (!mem) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t k = 0; k < tasks; k++)
            if (mem)
                attend_head(qkv->ptr, out->ptr, bf16, k / heads, k % heads, t, w, dh, scale, causal,
                            &b);
        free(mem);
    }
    if (failed) {
        clipl_tensor_release(out);
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory for the work buffers", op);
    }
    *dst = out;
    return CLIPL_OK;
}
