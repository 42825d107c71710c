/*
 * ops_direct.c - the baseline for bench/ops: oneDNN's matmul primitive called directly from C,
 * as clipl's prepared linear uses it (src [M, K] row-major, weights reordered once into the
 * layout the primitive chose, f32 bias [1, N], dst [M, N] in the src dtype, scratchpad owned by
 * the library). Prints one line per case: "M K N dtype median_s min_s max_s kernel".
 *
 *   cc -O2 bench/ops_direct.c -o ops_direct -ldnnl && ./ops_direct [reps]
 *   ./ops_direct M K N f32|bf16 reps      (one case)
 */
#include <oneapi/dnnl/dnnl.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CK(call)                                                                                   \
    do {                                                                                           \
        dnnl_status_t s_ = (call);                                                                 \
        if (s_ != dnnl_success) {                                                                  \
            fprintf(stderr, "%s:%d: %s failed: %d\n", __FILE__, __LINE__, #call, (int)s_);         \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void run(dnnl_engine_t eng, dnnl_stream_t st, int64_t M, int64_t K, int64_t N,
                dnnl_data_type_t dt, int reps)
{
    size_t es = dt == dnnl_f32 ? 4 : 2;
    dnnl_memory_desc_t src_md, wplain_md, wany_md, bias_md, dst_md;
    dnnl_dims_t sd = {M, K}, wd = {K, N}, bd = {1, N}, dd = {M, N};
    CK(dnnl_memory_desc_init_by_tag(&src_md, 2, sd, dt, dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(&wplain_md, 2, wd, dt, dnnl_ba));
    CK(dnnl_memory_desc_init_by_tag(&wany_md, 2, wd, dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&bias_md, 2, bd, dnnl_f32, dnnl_ab));
    CK(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dt, dnnl_ab));
    dnnl_matmul_desc_t desc;
    CK(dnnl_matmul_desc_init(&desc, &src_md, &wany_md, &bias_md, &dst_md));
    dnnl_primitive_desc_t pd;
    CK(dnnl_primitive_desc_create(&pd, &desc, NULL, eng, NULL));
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_t prim;
    CK(dnnl_primitive_create(&prim, pd));

    void *src = aligned_alloc(64, (size_t)(M * K) * es),
         *dst = aligned_alloc(64, (size_t)(M * N) * es);
    void *wplain = aligned_alloc(64, (size_t)(K * N) * es);
    size_t wbytes = (dnnl_memory_desc_get_size(w_md) + 63) / 64 * 64;
    void *w = aligned_alloc(64, wbytes);
    float *bias = aligned_alloc(64, (size_t)N * 4 + 64);
    memset(src, 0x3c, (size_t)(M * K) * es); /* ~0.01 in f32 and bf16 */
    memset(wplain, 0x3c, (size_t)(K * N) * es);
    for (int64_t i = 0; i < N; i++)
        bias[i] = 0.5f;

    dnnl_memory_t m_src, m_wplain, m_w, m_bias, m_dst;
    CK(dnnl_memory_create(&m_src, &src_md, eng, src));
    CK(dnnl_memory_create(&m_wplain, &wplain_md, eng, wplain));
    CK(dnnl_memory_create(&m_w, w_md, eng, w));
    CK(dnnl_memory_create(&m_bias, &bias_md, eng, bias));
    CK(dnnl_memory_create(&m_dst, &dst_md, eng, dst));
    /* the weights are reordered once, outside the timing */
    dnnl_primitive_desc_t rpd;
    dnnl_primitive_t reorder;
    CK(dnnl_reorder_primitive_desc_create(&rpd, &wplain_md, eng, w_md, eng, NULL));
    CK(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, m_wplain}, {DNNL_ARG_TO, m_w}};
    CK(dnnl_primitive_execute(reorder, st, 2, rargs));
    CK(dnnl_stream_wait(st));

    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, m_src},
                               {DNNL_ARG_WEIGHTS, m_w},
                               {DNNL_ARG_BIAS, m_bias},
                               {DNNL_ARG_DST, m_dst}};
    for (int i = 0; i < 3; i++) { /* warm-up */
        CK(dnnl_primitive_execute(prim, st, 4, args));
        CK(dnnl_stream_wait(st));
    }
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        CK(dnnl_primitive_execute(prim, st, 4, args));
        CK(dnnl_stream_wait(st));
        t[r] = now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp);
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    printf("%lld %lld %lld %s %.6g %.6g %.6g %s\n", (long long)M, (long long)K, (long long)N,
           dt == dnnl_f32 ? "f32" : "bf16", t[reps / 2], t[0], t[reps - 1], impl);
    fflush(stdout);
    free(t);
    dnnl_memory_destroy(m_src);
    dnnl_memory_destroy(m_wplain);
    dnnl_memory_destroy(m_w);
    dnnl_memory_destroy(m_bias);
    dnnl_memory_destroy(m_dst);
    dnnl_primitive_destroy(reorder);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_primitive_destroy(prim);
    dnnl_primitive_desc_destroy(pd);
    free(src);
    free(dst);
    free(wplain);
    free(w);
    free(bias);
}

int main(int argc, char **argv)
{
    /* ops_direct [reps] runs every case; ops_direct M K N f32|bf16 reps runs one */
    int reps = argc == 2 ? atoi(argv[1]) : argc == 6 ? atoi(argv[5]) : 9;
    if (reps < 1)
        reps = 1;
    dnnl_engine_t eng;
    dnnl_stream_t st;
    CK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CK(dnnl_stream_create(&st, eng, dnnl_stream_default_flags));
    if (argc == 6) {
        run(eng, st, atoll(argv[1]), atoll(argv[2]), atoll(argv[3]),
            strcmp(argv[4], "bf16") == 0 ? dnnl_bf16 : dnnl_f32, reps);
    } else {
        const int64_t ms[2] = {800, 6160};
        const int64_t kn[3][2] = {{768, 3072}, {3072, 768}, {512, 2048}};
        const dnnl_data_type_t dts[2] = {dnnl_f32, dnnl_bf16};
        for (int d = 0; d < 2; d++)
            for (int m = 0; m < 2; m++)
                for (int s = 0; s < 3; s++)
                    run(eng, st, ms[m], kn[s][0], kn[s][1], dts[d], reps);
    }
    dnnl_stream_destroy(st);
    dnnl_engine_destroy(eng);
    return 0;
}
