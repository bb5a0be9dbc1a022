/* `tqp bench matvec`: batch-1 y = W x on trellis codes against fp32 OpenBLAS sgemv, side by side
 * in one run, for each shape and bit width (one table, optional JSON).
 *
 * For each shape m x n and K: random code streams (every stream is a valid circular trellis
 * stream) with an RHT of both sides; the fused operator (matvec.h) is timed whole (rotation of
 * x, the pass over the codes, inverse rotation and scale of y) and without the rotations; the
 * same matrix decoded to fp32 (the rotated basis) is the sgemv baseline's data, on the same
 * rotated x, so the two results are compared (max relative difference) as well as timed.  The
 * repetitions of the two alternate and the best time of each is kept.  Decode-only: the
 * operator's kernel writing the fp32 matrix.  Effective bandwidth: bytes of codes (ours) or of
 * fp32 weights (sgemv) over the time.  GPU columns need a CUDA build and device. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tqp/cli.h"
#include "tqp/e8mv.h"
#include "tqp/e8p.h"
#include "tqp/io.h"
#include "tqp/gpu.h"
#include "tqp/matvec.h"
#include "tqp/progress.h"
#include "tqp/rng.h"
#include "tqp/tcq.h"

typedef struct {
    int m, n, K, e8p; // e8p: the E8P codebook (code unused)
    tqp_tcode code;
    const char *kernel;
    double t_ours, t_codes, t_blas, t_decode, code_bytes, maxrel;
    int has_gpu;
    tqp_gpu_timing gpu;
} mv_row;

static tqp_status parse_shapes(const char *text, int *ms, int *ns, int *count, int cap)
{
    *count = 0;
    const char *p = text;
    while (*p) {
        int m, n, used;
        if (sscanf(p, "%dx%d%n", &m, &n, &used) != 2 || m <= 0 || n <= 0 || *count == cap)
            return tqp_error_set(TQP_EUSAGE, "--shapes '%s': expected MxN,... "
                                             "(at most %d)", text, cap);
        /* the fp32 matrix, its codes and the decoded copy: refuse what cannot fit */
        double need = 12.0 * m * (double)n, have = tqp_physical_memory();
        if (have > 0 && need > have)
            return tqp_error_set(TQP_EUSAGE, "--shapes: %dx%d needs about %.3g GB, more than "
                                 "this machine's %.3g GB", m, n, need / 1e9, have / 1e9);
        ms[*count] = m, ns[(*count)++] = n;
        p += used;
        if (*p == ',') p++;
        else if (*p) return tqp_error_set(TQP_EUSAGE, "--shapes '%s'", text);
    }
    return *count ? TQP_OK : tqp_error_set(TQP_EUSAGE, "--shapes is empty");
}

static tqp_status parse_bits(const char *text, int *bits, int *count)
{
    *count = 0;
    for (const char *p = text; *p;) {
        char *end;
        long k = strtol(p, &end, 10);
        if (end == p || k < 1 || k > 4 || *count == 4)
            return tqp_error_set(TQP_EUSAGE, "--bits '%s': 1..4, comma "
                                             "separated", text);
        bits[(*count)++] = (int)k;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return tqp_error_set(TQP_EUSAGE, "--bits '%s'", text);
    }
    return TQP_OK;
}

/* The operator under test: a trellis (tmv) or E8P (emv) one. */
typedef struct {
    tqp_tmv *t;
    tqp_emv *e;
} mv_op;

static void op_apply(mv_op *o, const float *x, float *y, int threads)
{
    if (o->t) tqp_tmv_apply(o->t, x, y, threads);
    else tqp_emv_apply(o->e, x, y, threads);
}

static void op_codes(mv_op *o, const float *x, float *z, int threads)
{
    if (o->t) tqp_tmv_apply_codes(o->t, x, z, threads);
    else tqp_emv_apply_codes(o->e, x, z, threads);
}

static tqp_status op_decode(mv_op *o, float *W, int threads)
{
    if (o->t) tqp_tmv_decode(o->t, W, threads);
    else return tqp_emv_decode(o->e, W, threads);
    return TQP_OK;
}

static tqp_status bench_one(int m, int n, int K, tqp_tcode code, int e8p, int threads,
                            int reps_max, mv_row *row)
{
    int V = code == TQP_TCODE_HYB ? 2 : 1;
    tqp_status s = TQP_OK;
    tqp_trellis *t = NULL;
    tqp_tcq *fam = NULL;
    mv_op op = {0};
    tqp_rot rot = {0};
    uint8_t *packed = NULL;
    float *x = NULL, *y = NULL, *z = NULL, *zb = NULL, *W = NULL;
    size_t bytes;
    if (e8p) {
        bytes = tqp_e8p_matrix_bytes(m, n, K);
    } else {
        TQP_TRY(s, tqp_trellis_create(16, K, V, 256, code, NULL, &t), out);
        TQP_TRY(s, tqp_tcq_create(16, K, V, code, NULL, &fam), out);
        bytes = tqp_tcq_matrix_bytes(fam, m, n);
    }
    packed = tqp_malloc(bytes);
    x = tqp_malloc_aligned(sizeof(float) * (size_t)n);
    y = tqp_malloc_aligned(sizeof(float) * (size_t)m);
    z = tqp_malloc_aligned(sizeof(float) * (size_t)m);
    zb = tqp_malloc_aligned(sizeof(float) * (size_t)m);
    W = tqp_malloc_aligned(sizeof(float) * (size_t)m * n);
    if (!packed || !x || !y || !z || !zb || !W) {
        s = TQP_ENOMEM;
        goto out;
    }
    uint64_t seed = 0x6d61747665630000ull ^ ((uint64_t)m << 32) ^ ((uint64_t)n << 8) ^ (uint64_t)K;
    for (size_t i = 0; i < bytes; i++) packed[i] = (uint8_t)(tqp_splitmix64(&seed) >> 56);
    for (int i = 0; i < n; i++)
        x[i] = (float)((double)(tqp_splitmix64(&seed) >> 11) / 9007199254740992.0 - 0.5);
    TQP_TRY(s, tqp_rot_create(TQP_ROT_RHT, m, n, seed, seed + 1, &rot), out);
    if (e8p) {
        TQP_TRY(s, tqp_emv_create(packed, m, n, K, tqp_e8p_resid_scale(K), 0.01, &rot,
                                  TQP_TMV_AUTO, &op.e), out);
        row->kernel = tqp_emv_kernel_name(op.e);
    } else {
        TQP_TRY(s, tqp_tmv_create(t, packed, m, n, 0.01, &rot, TQP_TMV_AUTO, &op.t), out);
        row->kernel = tqp_tmv_kernel_name(op.t);
    }
    row->code_bytes = (double)bytes;

    /* decode-only, and the decoded matrix for the baseline */
    double t0 = tqp_now();
    TQP_TRY(s, op_decode(&op, W, threads), out);
    row->t_decode = tqp_now() - t0;
    /* warm-up, then alternate: ours (whole), ours (codes only), sgemv on the decoded matrix */
    op_apply(&op, x, y, threads);
    t0 = tqp_now();
    cblas_sgemv(CblasRowMajor, CblasNoTrans, m, n, 1.0f, W, n, x, 1, 0.0f, zb, 1);
    double first = tqp_now() - t0;
    int reps = first > 0 ? (int)(0.25 / first) : reps_max;
    reps = reps < 3 ? 3 : reps > reps_max ? reps_max : reps;
    row->t_ours = row->t_codes = row->t_blas = INFINITY;
    for (int r = 0; r < reps; r++) {
        t0 = tqp_now();
        op_apply(&op, x, y, threads);
        double a = tqp_now() - t0;
        t0 = tqp_now();
        op_codes(&op, x, z, threads);
        double b = tqp_now() - t0;
        t0 = tqp_now();
        cblas_sgemv(CblasRowMajor, CblasNoTrans, m, n, 1.0f, W, n, x, 1, 0.0f, zb, 1);
        double c = tqp_now() - t0;
        row->t_ours = fmin(row->t_ours, a), row->t_codes = fmin(row->t_codes, b);
        row->t_blas = fmin(row->t_blas, c);
    }
    t0 = tqp_now();
    TQP_TRY(s, op_decode(&op, W, threads), out); /* a second, warm decode */
    row->t_decode = fmin(row->t_decode, tqp_now() - t0);
    /* the same product two ways: the fused kernel and sgemv on its decoded matrix */
    double num = 0, den = 0;
    for (int i = 0; i < m; i++) {
        num = fmax(num, fabs((double)z[i] - zb[i]));
        den = fmax(den, fabs((double)zb[i]));
    }
    row->maxrel = den > 0 ? num / den : num;
    /* the device, when there is one: the same codes and vector */
    char desc[256];
    if (!e8p && m % 16 == 0 && n % 16 == 0 && tqp_gpu_available(desc, sizeof desc)) {
        tqp_gpu_tmv *g = NULL;
        TQP_TRY(s, tqp_gpu_tmv_create(t, packed, m, n, &g), out);
        s = tqp_gpu_tmv_bench(g, x, 20, &row->gpu);
        tqp_gpu_tmv_destroy(&g);
        if (s != TQP_OK) goto out;
        row->has_gpu = 1;
    }
out:
    tqp_tmv_destroy(&op.t);
    tqp_emv_destroy(&op.e);
    tqp_rot_destroy(&rot);
    tqp_tcq_destroy(&fam);
    tqp_trellis_destroy(&t);
    free(packed), free(x), free(y), free(z), free(zb), free(W);
    return s;
}

tqp_status tqp_bench_matvec(int argc, char **argv)
{
    char *shapes = NULL, *bits_text = NULL, *code_name = NULL, *json = NULL;
    int threads = 1, reps = 50;
    tqp_opt opts[] = {
        {"--shapes", TQP_OPT_STRING, &shapes, "4096x4096,8192x8192,28672x8192,8192x28672",
         "MxN,...", "matrix shapes (rows x columns)"},
        {"--bits", TQP_OPT_STRING, &bits_text, "2,3,4", "K,...", "bits per weight (1..4)"},
        {"--code", TQP_OPT_STRING, &code_name, "1mad,1mul,gf8,e8p", "CODE,...",
         "codes side by side: 1mad, 1mul, gf8, 3inst or hyb (trellis), e8p (E8P lattice, 2-4 bits)"},
        {"--threads", TQP_OPT_INT, &threads, "1", "N",
         "threads for our kernel; OpenBLAS follows OPENBLAS_NUM_THREADS", 0, 1, 1024},
        {"--reps", TQP_OPT_INT, &reps, "50", "N", "at most this many timed repetitions (best kept)", 0, 1, 1000000},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write the results as JSON"},
    };
    tqp_cmd_spec spec = {"bench matvec",
                         "Batch-1 matrix-vector product on trellis or E8P codes vs OpenBLAS sgemv.",
                         "Random codes with RHT on both sides; ours is timed with the rotations "
                         "and without; sgemv multiplies the same matrix decoded to fp32. One "
                         "process: run it alone on an idle machine.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    int ms[16], ns[16], nshapes, bits[4], nbits;
    TQP_CHECK(parse_shapes(shapes, ms, ns, &nshapes, 16));
    TQP_CHECK(parse_bits(bits_text, bits, &nbits));
    /* the codes: trellis codes and/or e8p, each at most once */
    tqp_tcode codes[5];
    int ncodes = 0, is_e8p[5] = {0};
    for (const char *p = code_name; *p;) {
        size_t len = strcspn(p, ",");
        char one[16] = "";
        if (len < sizeof one) memcpy(one, p, len);
        int e = !strcmp(one, "e8p");
        tqp_tcode c = e ? TQP_TCODE_1MAD : tqp_tcode_parse(one);
        if (ncodes == 5 || (!e && c != TQP_TCODE_1MAD && c != TQP_TCODE_3INST &&
                            c != TQP_TCODE_HYB && c != TQP_TCODE_1MUL && c != TQP_TCODE_GF8))
            return tqp_error_set(
                TQP_EUSAGE, "--code '%s': a list of at most 5 of 1mad, 1mul, gf8, 3inst, hyb, e8p",
                code_name);
        is_e8p[ncodes] = e, codes[ncodes++] = c;
        p += len + (p[len] == ',');
    }
    if (!ncodes) return tqp_error_set(TQP_EUSAGE, "--code is empty");
    for (int c = 0; c < ncodes; c++)
        for (int b = 0; b < nbits; b++)
            if (is_e8p[c] && bits[b] < 2)
                return tqp_error_set(TQP_EUSAGE, "--bits %d with e8p: E8P codes 2, 3 or 4 bits",
                                     bits[b]);
    if (threads < 1 || reps < 1)
        return tqp_error_set(TQP_EUSAGE, "--threads and --reps must be >= 1");
    char cpu[256];
    tqp_cpu_name(cpu, sizeof cpu);
    const char *blas_threads = getenv("OPENBLAS_NUM_THREADS");
    printf("tqp bench matvec: %s, our threads %d, OPENBLAS_NUM_THREADS=%s, codes %s (trellis L = 16)\n", cpu,
           threads, blas_threads ? blas_threads : "(unset)", code_name);
    char gpu[256];
    int have_gpu = tqp_gpu_available(gpu, sizeof gpu);
    printf(have_gpu ? "GPU: %s (second table)\n" : "GPU: not measured (%s)\n", gpu);
    printf("\n| shape | K | code | kernel | ours ms | codes-only ms | sgemv ms | speedup | ours GB/s "
           "(codes) | sgemv GB/s | ours Gw/s | decode Gw/s | max rel diff |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    int nrows = nshapes * nbits * ncodes;
    mv_row *rows = calloc((size_t)nrows, sizeof *rows);
    if (!rows) return TQP_ENOMEM;
    tqp_status s = TQP_OK;
    int done = 0;
    for (int i = 0; i < nshapes && s == TQP_OK; i++)
        for (int b = 0; b < nbits && s == TQP_OK; b++)
        for (int c = 0; c < ncodes && s == TQP_OK; c++) {
            mv_row *r = &rows[done];
            *r = (mv_row){.m = ms[i], .n = ns[i], .K = bits[b], .code = codes[c], .e8p = is_e8p[c]};
            s = bench_one(ms[i], ns[i], bits[b], codes[c], is_e8p[c], threads, reps, r);
            if (s != TQP_OK) break;
            double w = (double)r->m * r->n;
            printf("| %dx%d | %d | %s | %s | %.3f | %.3f | %.3f | %.2f | %.2f | %.2f | %.2f | %.2f | "
                   "%.1e |\n",
                   r->m, r->n, r->K, r->e8p ? "e8p" : tqp_tcode_name(r->code), r->kernel, 1e3 * r->t_ours, 1e3 * r->t_codes,
                   1e3 * r->t_blas, r->t_blas / r->t_ours, r->code_bytes / r->t_ours / 1e9,
                   4 * w / r->t_blas / 1e9, w / r->t_ours / 1e9, w / r->t_decode / 1e9,
                   r->maxrel);
            fflush(stdout);
            done++;
        }
    if (s == TQP_OK && have_gpu) {
        printf("\nGPU %s: the fused kernel (the pass over the codes) vs cuBLAS fp16 GEMV on the "
               "same matrix\n\n| shape | K | ours us | cuBLAS fp16 us | speedup | ours GB/s (codes) "
               "| copy GB/s | ours Gw/s | decode Gw/s | max rel diff |\n"
               "|---|---|---|---|---|---|---|---|---|---|\n", gpu);
        for (int i = 0; i < done; i++) {
            mv_row *r = &rows[i];
            double w = (double)r->m * r->n;
            if (!r->has_gpu) continue;
            printf("| %dx%d | %d | %.2f | %.2f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1e |\n", r->m,
                   r->n, r->K, 1e6 * r->gpu.seconds_ours, 1e6 * r->gpu.seconds_cublas,
                   r->gpu.seconds_cublas / r->gpu.seconds_ours,
                   r->code_bytes / r->gpu.seconds_ours / 1e9, r->gpu.copy_gbps,
                   w / r->gpu.seconds_ours / 1e9, w / r->gpu.seconds_decode / 1e9,
                   r->gpu.max_rel_diff);
        }
    }
    if (s == TQP_OK && json) {
        cJSON *doc = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(doc, "results");
        cJSON_AddStringToObject(doc, "device", cpu);
        if (have_gpu) cJSON_AddStringToObject(doc, "gpu", gpu);
        else cJSON_AddNullToObject(doc, "gpu");
        cJSON_AddNumberToObject(doc, "threads", threads);
        cJSON_AddStringToObject(doc, "openblas_num_threads", blas_threads ? blas_threads : "");
        for (int i = 0; i < done; i++) {
            mv_row *r = &rows[i];
            double w = (double)r->m * r->n;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "m", r->m);
            cJSON_AddNumberToObject(o, "n", r->n);
            cJSON_AddNumberToObject(o, "bits", r->K);
            cJSON_AddStringToObject(o, "code", r->e8p ? "e8p" : tqp_tcode_name(r->code));
            cJSON_AddStringToObject(o, "kernel", r->kernel);
            cJSON_AddStringToObject(o, "device", cpu);
            cJSON_AddNumberToObject(o, "seconds_ours", r->t_ours);
            cJSON_AddNumberToObject(o, "seconds_codes_only", r->t_codes);
            cJSON_AddNumberToObject(o, "seconds_baseline", r->t_blas);
            cJSON_AddStringToObject(o, "baseline", "openblas sgemv fp32");
            cJSON_AddNumberToObject(o, "speedup", r->t_blas / r->t_ours);
            cJSON_AddNumberToObject(o, "gbps_ours", r->code_bytes / r->t_ours / 1e9);
            cJSON_AddNumberToObject(o, "gbps_baseline", 4 * w / r->t_blas / 1e9);
            cJSON_AddNumberToObject(o, "weights_per_second_ours", w / r->t_ours);
            cJSON_AddNumberToObject(o, "decode_weights_per_second", w / r->t_decode);
            cJSON_AddNumberToObject(o, "max_rel_diff", r->maxrel);
            cJSON_AddItemToArray(arr, o);
            if (!r->has_gpu) continue;
            o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "m", r->m);
            cJSON_AddNumberToObject(o, "n", r->n);
            cJSON_AddNumberToObject(o, "bits", r->K);
            cJSON_AddStringToObject(o, "code", tqp_tcode_name(r->code));
            cJSON_AddStringToObject(o, "kernel", "cuda");
            cJSON_AddStringToObject(o, "device", gpu);
            cJSON_AddNumberToObject(o, "seconds_ours", r->gpu.seconds_ours);
            cJSON_AddNumberToObject(o, "seconds_baseline", r->gpu.seconds_cublas);
            cJSON_AddStringToObject(o, "baseline", "cublas fp16 gemv (cublasGemmEx, n = 1)");
            cJSON_AddNumberToObject(o, "speedup", r->gpu.seconds_cublas / r->gpu.seconds_ours);
            cJSON_AddNumberToObject(o, "gbps_ours", r->code_bytes / r->gpu.seconds_ours / 1e9);
            cJSON_AddNumberToObject(o, "copy_gbps", r->gpu.copy_gbps);
            cJSON_AddNumberToObject(o, "weights_per_second_ours", w / r->gpu.seconds_ours);
            cJSON_AddNumberToObject(o, "decode_weights_per_second", w / r->gpu.seconds_decode);
            cJSON_AddNumberToObject(o, "max_rel_diff", r->gpu.max_rel_diff);
            cJSON_AddItemToArray(arr, o);
        }
        s = tqp_json_write(json, doc);
        cJSON_Delete(doc);
    }
    free(rows);
    return s;
}
