/*
 * optim.c - optimizer kernels: AdamW and SGD steps over a list of parameters (one call per step
 * for all parameters; each parameter's loop runs in parallel with OpenMP), and the global norm
 * used for gradient clipping.
 */
#include "autograd.h"

#include <math.h>
#include <string.h>

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

int clipl_adamw_step(int n, clipl_tensor *const *params, clipl_tensor *const *grads,
                     clipl_tensor *const *exp_avg, clipl_tensor *const *exp_avg_sq,
                     const double *lr, const double *weight_decay, const int64_t *step,
                     double beta1, double beta2, double eps)
{
    const char *op = "adamw";
    if (n < 0 ||
        (n > 0 && (!params || !grads || !exp_avg || !exp_avg_sq || !lr || !weight_decay || !step)))
        return clipl__err(CLIPL_EINVAL, "%s: NULL array argument", op);
    if (!(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0))
        return clipl__err(CLIPL_EINVAL, "%s: bad betas (%g, %g) or eps %g", op, beta1, beta2, eps);
    for (int i = 0; i < n; i++) {
        int rc = check_param(op, i, params[i], grads[i], exp_avg[i], exp_avg_sq[i]);
        if (rc)
            return rc;
        if (!exp_avg[i] || !exp_avg_sq[i])
            return clipl__err(CLIPL_EINVAL, "%s: state of parameter %d is NULL", op, i);
        if (step[i] < 1)
            return clipl__err(CLIPL_EINVAL, "%s: step %lld of parameter %d must be >= 1", op,
                              (long long)step[i], i);
    }
    for (int i = 0; i < n; i++) {
        clipl_tensor *g = NULL;
        int rc = grad_f32(grads[i], &g);
        if (rc)
            return rc;
        float *p = params[i]->ptr, *m = exp_avg[i]->ptr, *v = exp_avg_sq[i]->ptr;
        const float *gp = g->ptr;
        int64_t len = clipl_tensor_numel(params[i]);
        double bc1 = 1 - pow(beta1, (double)step[i]), bc2 = 1 - pow(beta2, (double)step[i]);
        double decay = 1 - lr[i] * weight_decay[i], step_size = lr[i] / bc1, sbc2 = sqrt(bc2);
#pragma omp parallel for schedule(static) if (len > 32768)
        for (int64_t j = 0; j < len; j++) {
            double gj = gp[j];
            double mj = beta1 * m[j] + (1 - beta1) * gj;
            double vj = beta2 * v[j] + (1 - beta2) * gj * gj;
            m[j] = (float)mj;
            v[j] = (float)vj;
            double denom = sqrt(vj) / sbc2 + eps;
            p[j] = (float)(p[j] * decay - step_size * mj / denom);
        }
        clipl_tensor_release(g);
    }
    return CLIPL_OK;
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
    for (int i = 0; i < n; i++) {
        clipl_tensor *g = NULL;
        int rc = grad_f32(grads[i], &g);
        if (rc)
            return rc;
        float *p = params[i]->ptr, *buf = momentum != 0 ? momentum_buf[i]->ptr : NULL;
        const float *gp = g->ptr;
        int64_t len = clipl_tensor_numel(params[i]);
        double l = lr[i], wd = weight_decay[i];
#pragma omp parallel for schedule(static) if (len > 32768)
        for (int64_t j = 0; j < len; j++) {
            double d = gp[j] + wd * p[j];
            if (buf) {
                double bj = first ? d : momentum * buf[j] + (1 - dampening) * d;
                buf[j] = (float)bj;
                d = nesterov ? d + momentum * bj : bj;
            }
            p[j] = (float)(p[j] - l * d);
        }
        clipl_tensor_release(g);
    }
    return CLIPL_OK;
}

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
#pragma omp parallel for reduction(+ : acc) schedule(static) if (len > 32768)
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
    int64_t n = clipl_tensor_numel(t), st[CLIPL_MAX_DIMS] = {0};
    int es = clipl_dtype_size(t->dt);
    clipl_storage *s = clipl__storage_new((size_t)n * (size_t)es, false);
    if (!s)
        return clipl_errcode();
    clipl__contiguous_strides(t->ndim, t->shape, st);
    clipl_tensor *c = clipl__tensor_wrap(s, t->dt, t->ndim, t->shape, st, 0);
    clipl_storage_release(s);
    if (!c)
        return clipl_errcode();
    clipl__grad_off++; /* a plain copy, not an op on the tape */
    int rc = clipl_tensor_copy_(c, t);
    clipl__grad_off--;
    if (rc) {
        clipl_tensor_release(c);
        return rc;
    }
    /* swap the storages: t takes the copy, the temporary header drops the mapping */
    clipl_storage *old = t->storage;
    t->storage = c->storage;
    c->storage = old;
    t->ptr = c->ptr;
    t->offset = 0;
    memcpy(t->strides, c->strides, sizeof t->strides);
    t->flags &= ~CLIPL_TF_READONLY;
    clipl_tensor_release(c);
    return CLIPL_OK;
}
