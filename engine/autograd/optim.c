/*
 * optim.c - optimizer kernels: AdamW and SGD steps fused over one flat buffer that holds every
 * parameter (ranges carry the per-parameter facts; one OpenMP loop splits the elements of all
 * ranges evenly across the threads), the same steps over a list of separate tensors, and the
 * global norm used for gradient clipping.
 *
 * The arithmetic is PyTorch's for f32 parameters: f32, in torch.optim's order. Every element is
 * computed alone, so the result does not depend on the number of threads or on the code path (the
 * AVX2 clones use no FMA contraction: C11 mode).
 */
#include "autograd.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__) && !defined(CLIPL_NO_CLONES)
#define HOT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HOT_CLONES
#endif

enum {
    BLOCK = 512,         /* elements per inner block (stays in L1) */
    PARALLEL_MIN = 32768 /* fewer elements run on one thread */
};

/* ---- element kernels ---- */

typedef struct adamw_coef {
    float b1, a1, b2, a2;  /* betas and 1 - betas */
    float decay;           /* 1 - lr * weight_decay */
    float step_size, sbc2; /* lr / (1 - b1^step), sqrt(1 - b2^step) */
    float eps;
} adamw_coef;

static adamw_coef adamw_coef_of(double lr, double wd, int64_t step, double beta1, double beta2,
                                double eps)
{
    double bc1 = 1 - pow(beta1, (double)step), bc2 = 1 - pow(beta2, (double)step);
    return (adamw_coef){
        (float)beta1,         (float)(1 - beta1), (float)beta2,     (float)(1 - beta2),
        (float)(1 - lr * wd), (float)(lr / bc1),  (float)sqrt(bc2), (float)eps};
}

/* x[i] = sqrt(x[i]) for n non-negative floats (SSE: libm's sqrtf may set errno, which keeps the
 * compiler from vectorising it). */
static void sqrt_block(float *x, int n)
{
    int i = 0;
#if defined(__SSE__)
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(x + i, _mm_sqrt_ps(_mm_loadu_ps(x + i)));
#endif
    for (; i < n; i++)
        x[i] = sqrtf(x[i]);
}

/* torch.optim.AdamW on len elements: p *= decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g;
 * p -= step_size * m / (sqrt(v) / sbc2 + eps). */
HOT_CLONES static void adamw_span(float *restrict p, const float *restrict g, float *restrict m,
                                  float *restrict v, int64_t len, const adamw_coef *c)
{
    const float b1 = c->b1, a1 = c->a1, b2 = c->b2, a2 = c->a2, decay = c->decay;
    const float ss = c->step_size, sbc2 = c->sbc2, eps = c->eps;
    float den[BLOCK];
    for (int64_t j0 = 0; j0 < len; j0 += BLOCK) {
        int n = (int)(len - j0 < BLOCK ? len - j0 : BLOCK);
        float *restrict pb = p + j0, *restrict mb = m + j0, *restrict vb = v + j0;
        const float *restrict gb = g + j0;
#pragma omp simd
        for (int j = 0; j < n; j++) {
            float gj = gb[j];
            mb[j] = mb[j] * b1 + a1 * gj;
            vb[j] = vb[j] * b2 + a2 * (gj * gj);
            den[j] = vb[j];
        }
        sqrt_block(den, n);
#pragma omp simd
        for (int j = 0; j < n; j++)
            pb[j] = pb[j] * decay - ss * (mb[j] / (den[j] / sbc2 + eps));
    }
}

typedef struct sgd_coef {
    float lr, wd, momentum, damp1; /* damp1 = 1 - dampening */
    int nesterov, first;           /* first: the momentum buffer starts from the gradient */
} sgd_coef;

/* torch.optim.SGD on len elements: d = g + wd p; with momentum buf = first ? d : momentum buf +
 * (1 - dampening) d and d = nesterov ? d + momentum buf : buf; p -= lr d. buf NULL: no momentum. */
HOT_CLONES static void sgd_span(float *restrict p, const float *restrict g, float *restrict buf,
                                int64_t len, const sgd_coef *c)
{
    const float lr = c->lr, wd = c->wd, mom = c->momentum, damp1 = c->damp1;
    if (!buf) {
#pragma omp simd
        for (int64_t j = 0; j < len; j++)
            p[j] = p[j] - lr * (g[j] + wd * p[j]);
        return;
    }
    const int nesterov = c->nesterov, first = c->first;
#pragma omp simd
    for (int64_t j = 0; j < len; j++) {
        float d = g[j] + wd * p[j];
        float b = first ? d : mom * buf[j] + damp1 * d;
        buf[j] = b;
        p[j] = p[j] - lr * (nesterov ? d + mom * b : b);
    }
}

/* ---- one parallel loop over ranges ---- */

typedef struct step_args {
    float *p, *s1, *s2; /* parameters and state (s1/s2 NULL when unused) */
    const float *g;
    const int64_t *offset; /* of each range in p, g, s1, s2 */
    const adamw_coef *adamw;
    const sgd_coef *sgd;
} step_args;

static void step_span(const step_args *a, int r, int64_t from, int64_t len)
{
    int64_t o = a->offset[r] + from;
    float *s2 = a->s2 ? a->s2 + o : NULL;
    if (a->adamw)
        adamw_span(a->p + o, a->g + o, a->s1 + o, s2, len, &a->adamw[r]);
    else
        sgd_span(a->p + o, a->g + o, a->s1 ? a->s1 + o : NULL, len, &a->sgd[r]);
}

/* Runs the n ranges (length[r] elements each) as one sequence split evenly across the threads. */
static void run_ranges(const step_args *a, int n, const int64_t *length)
{
    int64_t total = 0;
    for (int r = 0; r < n; r++)
        total += length[r];
#pragma omp parallel if (total > PARALLEL_MIN)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = total * t / nt, hi = total * (t + 1) / nt, pos = 0;
        for (int r = 0; r < n && pos < hi; pos += length[r], r++) {
            int64_t from = lo > pos ? lo - pos : 0;
            int64_t to = hi < pos + length[r] ? hi - pos : length[r];
            if (from < to)
                step_span(a, r, from, to - from);
        }
    }
}

/* ---- the fused steps over flat buffers ---- */

static int check_flat(const char *op, const char *what, const clipl_tensor *t, int64_t numel,
                      bool write)
{
    char b[96];
    if (!t)
        return clipl__err(CLIPL_EINVAL, "%s: %s is NULL", op, what);
    if (t->dt != CLIPL_F32 || !clipl_tensor_is_contiguous(t) || clipl_tensor_numel(t) != numel)
        return clipl__err(
            CLIPL_ESHAPE, "%s: %s [%s] %s must be a contiguous f32 buffer of %lld elements", op,
            what, clipl__tshape(b, sizeof b, t), clipl_dtype_name(t->dt), (long long)numel);
    return write ? clipl__check_writable(t, op) : CLIPL_OK;
}

static int check_ranges(const char *op, int64_t numel, int n, const int64_t *offset,
                        const int64_t *length, const double *lr, const double *wd)
{
    if (n < 0 || (n > 0 && (!offset || !length || !lr || !wd)))
        return clipl__err(CLIPL_EINVAL, "%s: NULL range array or negative count %d", op, n);
    int64_t end = 0;
    for (int r = 0; r < n; r++) {
        if (offset[r] < end || length[r] < 0 || length[r] > numel - offset[r])
            return clipl__err(CLIPL_EINVAL,
                              "%s: range %d [%lld, +%lld) overlaps the one before or leaves the "
                              "buffer of %lld elements (ranges must ascend)",
                              op, r, (long long)offset[r], (long long)length[r], (long long)numel);
        end = offset[r] + length[r];
    }
    return CLIPL_OK;
}

static int check_betas(const char *op, double beta1, double beta2, double eps)
{
    if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0))
        return clipl__err(CLIPL_EINVAL, "%s: bad betas (%g, %g) or eps %g", op, beta1, beta2, eps);
    return CLIPL_OK;
}

static int check_step(const char *op, int r, int64_t step)
{
    if (step < 1)
        return clipl__err(CLIPL_EINVAL, "%s: step %lld of parameter %d must be >= 1", op,
                          (long long)step, r);
    return CLIPL_OK;
}

int clipl_adamw_step_flat(clipl_tensor *params, const clipl_tensor *grads, clipl_tensor *exp_avg,
                          clipl_tensor *exp_avg_sq, int n, const int64_t *offset,
                          const int64_t *length, const double *lr, const double *weight_decay,
                          const int64_t *step, double beta1, double beta2, double eps)
{
    const char *op = "adamw_flat";
    int64_t numel = params ? clipl_tensor_numel(params) : 0;
    int rc;
    if ((rc = check_flat(op, "params", params, numel, true)) ||
        (rc = check_flat(op, "grads", grads, numel, false)) ||
        (rc = check_flat(op, "exp_avg", exp_avg, numel, true)) ||
        (rc = check_flat(op, "exp_avg_sq", exp_avg_sq, numel, true)) ||
        (rc = check_ranges(op, numel, n, offset, length, lr, weight_decay)) ||
        (rc = check_betas(op, beta1, beta2, eps)))
        return rc;
    if (n > 0 && !step)
        return clipl__err(CLIPL_EINVAL, "%s: NULL step array", op);
    adamw_coef *c = malloc(sizeof *c * (size_t)(n > 0 ? n : 1));
    if (!c)
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
    for (int r = 0; r < n; r++) {
        if ((rc = check_step(op, r, step[r]))) {
            free(c);
            return rc;
        }
        c[r] = adamw_coef_of(lr[r], weight_decay[r], step[r], beta1, beta2, eps);
    }
    step_args a = {params->ptr, exp_avg->ptr, exp_avg_sq->ptr, grads->ptr, offset, c, NULL};
    run_ranges(&a, n, length);
    free(c);
    return CLIPL_OK;
}

static sgd_coef sgd_coef_of(double lr, double wd, double momentum, double dampening, int nesterov,
                            int first)
{
    return (sgd_coef){(float)lr,     (float)wd, (float)momentum, (float)(1 - dampening),
                      nesterov != 0, first != 0};
}

int clipl_sgd_step_flat(clipl_tensor *params, const clipl_tensor *grads, clipl_tensor *momentum_buf,
                        int n, const int64_t *offset, const int64_t *length, const double *lr,
                        const double *weight_decay, const int *first, double momentum,
                        double dampening, int nesterov)
{
    const char *op = "sgd_flat";
    int64_t numel = params ? clipl_tensor_numel(params) : 0;
    int rc;
    if ((rc = check_flat(op, "params", params, numel, true)) ||
        (rc = check_flat(op, "grads", grads, numel, false)) ||
        (momentum != 0 && (rc = check_flat(op, "momentum_buf", momentum_buf, numel, true))) ||
        (rc = check_ranges(op, numel, n, offset, length, lr, weight_decay)))
        return rc;
    if (n > 0 && momentum != 0 && !first)
        return clipl__err(CLIPL_EINVAL, "%s: momentum %g needs the first-step flags", op, momentum);
    sgd_coef *c = malloc(sizeof *c * (size_t)(n > 0 ? n : 1));
    if (!c)
        return clipl__err(CLIPL_ENOMEM, "%s: out of memory", op);
    for (int r = 0; r < n; r++)
        c[r] = sgd_coef_of(lr[r], weight_decay[r], momentum, dampening, nesterov,
                           momentum != 0 && first[r]);
    step_args a = {
        params->ptr, momentum != 0 ? momentum_buf->ptr : NULL, NULL, grads->ptr, offset, NULL, c};
    run_ranges(&a, n, length);
    free(c);
    return CLIPL_OK;
}

/* ---- the same over lists of tensors ---- */

static int check_param(const char *op, int i, const clipl_tensor *p, const clipl_tensor *g,
                       const clipl_tensor *s1, const clipl_tensor *s2)
{
    char b1[96], b2[96];
    if (!p || !g)
        return clipl__err(CLIPL_EINVAL, "%s: parameter %d or its gradient is NULL", op, i);
    if (p->dt != CLIPL_F32 || !clipl_tensor_is_contiguous(p))
        return clipl__err(CLIPL_EINVAL,
                          "%s: parameter %d [%s] must be a contiguous f32 tensor (got %s)", op, i,
                          clipl__tshape(b1, sizeof b1, p), clipl_dtype_name(p->dt));
    int rc = clipl__check_writable(p, op);
    if (rc)
        return rc;
    if (!clipl__same_shape(p, g))
        return clipl__err(CLIPL_ESHAPE, "%s: gradient [%s] of parameter %d does not match [%s]", op,
                          clipl__tshape(b1, sizeof b1, g), i, clipl__tshape(b2, sizeof b2, p));
    const clipl_tensor *st[2] = {s1, s2};
    for (int k = 0; k < 2; k++) {
        if (!st[k])
            continue;
        if (st[k]->dt != CLIPL_F32 || !clipl_tensor_is_contiguous(st[k]) ||
            !clipl__same_shape(p, st[k]))
            return clipl__err(CLIPL_ESHAPE,
                              "%s: state tensor %d of parameter %d is [%s] %s, expected [%s] f32 "
                              "contiguous",
                              op, k, i, clipl__tshape(b1, sizeof b1, st[k]),
                              clipl_dtype_name(st[k]->dt), clipl__tshape(b2, sizeof b2, p));
        if ((rc = clipl__check_writable(st[k], op)))
            return rc;
    }
    return CLIPL_OK;
}

/* A contiguous f32 view of g (g itself when it already is one). */
static int grad_f32(const clipl_tensor *g, clipl_tensor **out)
{
    if (g->dt == CLIPL_F32)
        return clipl_tensor_contiguous(g, out);
    return clipl_tensor_to(g, out, CLIPL_F32);
}

/* Runs a's kernel (one range of coefficients, index 0) over p and its gradient. */
static int step_tensor(step_args a, clipl_tensor *p, const clipl_tensor *grad)
{
    clipl_tensor *g = NULL;
    int rc = grad_f32(grad, &g);
    if (rc)
        return rc;
    int64_t off = 0, len = clipl_tensor_numel(p);
    a.p = p->ptr;
    a.g = g->ptr;
    a.offset = &off;
    run_ranges(&a, 1, &len);
    clipl_tensor_release(g);
    return CLIPL_OK;
}

int clipl_adamw_step(int n, clipl_tensor *const *params, clipl_tensor *const *grads,
                     clipl_tensor *const *exp_avg, clipl_tensor *const *exp_avg_sq,
                     const double *lr, const double *weight_decay, const int64_t *step,
                     double beta1, double beta2, double eps)
{
    const char *op = "adamw";
    if (n < 0 ||
        (n > 0 && (!params || !grads || !exp_avg || !exp_avg_sq || !lr || !weight_decay || !step)))
        return clipl__err(CLIPL_EINVAL, "%s: NULL array argument", op);
    int rc = check_betas(op, beta1, beta2, eps);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++) {
        if ((rc = check_param(op, i, params[i], grads[i], exp_avg[i], exp_avg_sq[i])))
            return rc;
        if (!exp_avg[i] || !exp_avg_sq[i])
            return clipl__err(CLIPL_EINVAL, "%s: state of parameter %d is NULL", op, i);
        if ((rc = check_step(op, i, step[i])))
            return rc;
    }
    for (int i = 0; i < n && rc == CLIPL_OK; i++) {
        adamw_coef c = adamw_coef_of(lr[i], weight_decay[i], step[i], beta1, beta2, eps);
        step_args a = {NULL, exp_avg[i]->ptr, exp_avg_sq[i]->ptr, NULL, NULL, &c, NULL};
        rc = step_tensor(a, params[i], grads[i]);
    }
    return rc;
}

int clipl_sgd_step(int n, clipl_tensor *const *params, clipl_tensor *const *grads,
                   clipl_tensor *const *momentum_buf, const double *lr, const double *weight_decay,
                   double momentum, double dampening, int nesterov, int first)
{
    const char *op = "sgd";
    if (n < 0 || (n > 0 && (!params || !grads || !lr || !weight_decay)))
        return clipl__err(CLIPL_EINVAL, "%s: NULL array argument", op);
    if (momentum != 0 && !momentum_buf)
        return clipl__err(CLIPL_EINVAL, "%s: momentum %g needs momentum buffers", op, momentum);
    for (int i = 0; i < n; i++) {
        clipl_tensor *b = momentum != 0 ? momentum_buf[i] : NULL;
        if (momentum != 0 && !b)
            return clipl__err(CLIPL_EINVAL, "%s: momentum buffer of parameter %d is NULL", op, i);
        int rc = check_param(op, i, params[i], grads[i], b, NULL);
        if (rc)
            return rc;
    }
    int rc = CLIPL_OK;
    for (int i = 0; i < n && rc == CLIPL_OK; i++) {
        sgd_coef c = sgd_coef_of(lr[i], weight_decay[i], momentum, dampening, nesterov, first);
        step_args a = {NULL, momentum != 0 ? momentum_buf[i]->ptr : NULL, NULL, NULL, NULL, NULL,
                       &c};
        rc = step_tensor(a, params[i], grads[i]);
    }
    return rc;
}

/* ---- gradient norm, writable copies ---- */

int clipl_global_norm(int n, clipl_tensor *const *ts, double *norm)
{
    if (!norm || n < 0 || (n > 0 && !ts))
        return clipl__err(CLIPL_EINVAL, "global_norm: NULL argument");
    double s = 0;
    for (int i = 0; i < n; i++) {
        if (!ts[i])
            return clipl__err(CLIPL_EINVAL, "global_norm: tensor %d is NULL", i);
        clipl_tensor *g = NULL;
        int rc = grad_f32(ts[i], &g);
        if (rc)
            return rc;
        const float *gp = g->ptr;
        int64_t len = clipl_tensor_numel(g);
        double acc = 0;
#pragma omp parallel for simd reduction(+ : acc) schedule(static) if (len > PARALLEL_MIN)
        for (int64_t j = 0; j < len; j++)
            acc += (double)gp[j] * gp[j];
        s += acc;
        clipl_tensor_release(g);
    }
    *norm = sqrt(s);
    return CLIPL_OK;
}

int clipl_tensor_make_writable(clipl_tensor *t)
{
    if (!t)
        return clipl__err(CLIPL_EINVAL, "make_writable: NULL tensor");
    if (!(t->flags & CLIPL_TF_READONLY))
        return CLIPL_OK;
    size_t nbytes = (size_t)clipl_tensor_numel(t) * (size_t)clipl_dtype_size(t->dt);
    clipl_storage *s = clipl__storage_new(nbytes, false);
    if (!s)
        return clipl_errcode();
    int rc = clipl_tensor_rebind(t, s, 0);
    clipl_storage_release(s);
    return rc;
}
