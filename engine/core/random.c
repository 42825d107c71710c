/*
 * random.c - a seeded, reproducible generator (xoshiro256** seeded by splitmix64).
 */
#include "../autograd/autograd.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>

struct clipl_generator {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(clipl_generator *g)
{
    uint64_t *s = g->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* A double in [0, 1) with 53 random bits. */
static double next_double(clipl_generator *g) { return (double)(next_u64(g) >> 11) * 0x1.0p-53; }

int clipl_generator_seed(clipl_generator *g, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        g->s[i] = splitmix64(&x);
    return CLIPL_OK;
}

clipl_generator *clipl_generator_new(uint64_t seed)
{
    clipl_generator *g = malloc(sizeof *g);
    if (!g) {
        clipl__err(CLIPL_ENOMEM, "out of memory allocating a generator");
        return NULL;
    }
    clipl_generator_seed(g, seed);
    return g;
}

void clipl_generator_free(clipl_generator *g) { free(g); }

int clipl_generator_get_state(const clipl_generator *g, uint64_t *state4)
{
    for (int i = 0; i < 4; i++)
        state4[i] = g->s[i];
    return CLIPL_OK;
}

int clipl_generator_set_state(clipl_generator *g, const uint64_t *state4)
{
    if (!(state4[0] | state4[1] | state4[2] | state4[3]))
        return clipl__err(CLIPL_EINVAL, "generator: the all-zero state is invalid");
    for (int i = 0; i < 4; i++)
        g->s[i] = state4[i];
    return CLIPL_OK;
}

static int check_float(const clipl_tensor *t, const char *op)
{
    if (t->dt != CLIPL_F32 && t->dt != CLIPL_BF16 && t->dt != CLIPL_F16)
        return clipl__err(CLIPL_EINVAL, "%s: needs a float tensor, got %s", op,
                          clipl_dtype_name(t->dt));
    int rc = clipl__check_writable(t, op);
    return rc ? rc : clipl__ag_inplace(op, t, NULL);
}

/* One draw: uniform in [a, b), or (normal) Gaussian with mean a and standard deviation b. */
static double draw(clipl_generator *g, bool normal, double a, double b)
{
    if (!normal)
        return a + (b - a) * next_double(g);
    double u1 = 1.0 - next_double(g); /* (0, 1] so log is finite */
    double u2 = next_double(g);
    double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
    return a + b * z;
}

/* Values are drawn in row-major logical order so that a view and a contiguous tensor of the same
 * shape get the same numbers. */
static int fill_random(clipl_tensor *dst, clipl_generator *g, const char *op, bool normal, double a,
                       double b)
{
    int rc = check_float(dst, op);
    if (rc)
        return rc;
    if (clipl_tensor_numel(dst) == 0)
        return CLIPL_OK;
    const clipl_tensor *ts[1] = {dst};
    clipl__iter it;
    clipl__iter_init(&it, dst->ndim, dst->shape, 1, ts);
    do {
        for (int64_t i = 0; i < it.inner; i++)
            clipl__store(it.ptr[0] + i * it.inner_stride[0], dst->dt, draw(g, normal, a, b));
    } while (clipl__iter_next_outer(&it));
    return CLIPL_OK;
}

int clipl_tensor_uniform_(clipl_tensor *dst, clipl_generator *g, double lo, double hi)
{
    return fill_random(dst, g, "uniform", false, lo, hi);
}

int clipl_tensor_normal_(clipl_tensor *dst, clipl_generator *g, double mean, double std)
{
    return fill_random(dst, g, "normal", true, mean, std);
}
