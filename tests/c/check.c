#include "check.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int check_failures;
int check_count;

void check_err_(int rc, int code, const char *needle, const char *file, int line, const char *what)
{
    check_count++;
    if (rc != code) {
        check_failures++;
        fprintf(stderr, "%s:%d: %s returned %d, expected %d (%s)\n", file, line, what, rc, code,
                clipl_errmsg());
    } else if (needle && !strstr(clipl_errmsg(), needle)) {
        check_failures++;
        fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", file, line, what,
                clipl_errmsg(), needle);
    }
    clipl_errclear();
}

static double *to_doubles(const clipl_tensor *t, int64_t *n)
{
    *n = clipl_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(*n ? *n : 1));
    if (d)
        clipl_tensor_to_doubles(t, d, *n);
    return d;
}

static int same_shape(const clipl_tensor *a, const clipl_tensor *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return 0;
    return 1;
}

double check_max_abs(const clipl_tensor *a, const clipl_tensor *b)
{
    int64_t na, nb;
    if (!same_shape(a, b))
        return INFINITY;
    double *da = to_doubles(a, &na), *db = to_doubles(b, &nb);
    double m = 0;
    for (int64_t i = 0; i < na; i++) {
        double d = fabs(da[i] - db[i]);
        if (isnan(d))
            d = INFINITY;
        if (d > m)
            m = d;
    }
    free(da);
    free(db);
    return m;
}

double check_rel_err(const clipl_tensor *a, const clipl_tensor *b)
{
    int64_t nb;
    double *db = to_doubles(b, &nb);
    double scale = 0;
    for (int64_t i = 0; i < nb; i++)
        if (fabs(db[i]) > scale)
            scale = fabs(db[i]);
    free(db);
    if (scale < 1e-30)
        scale = 1e-30;
    return check_max_abs(a, b) / scale;
}

void check_close_(const clipl_tensor *a, const clipl_tensor *b, double tol, const char *label,
                  const char *file, int line)
{
    check_count++;
    if (!a || !b) {
        check_failures++;
        fprintf(stderr, "%s:%d: %s: missing tensor\n", file, line, label);
        return;
    }
    double e = check_rel_err(a, b);
    if (!(e <= tol)) {
        check_failures++;
        fprintf(stderr, "%s:%d: %s: relative error %.3g > %.3g\n", file, line, label, e, tol);
    }
}

int check_done(const char *suite)
{
    printf("%s: %d checks, %d failed\n", suite, check_count, check_failures);
    return check_failures ? 1 : 0;
}
