/* `tqp bench quantize-memory`: one matrix's quantization on a synthetic layer (one
 * Llama-2-70B-shaped layer by default), with the peak resident memory of every rank and the
 * time of each step, beside what `tqp plan` predicts for the same matrix.
 *
 * It runs quantize.c's own code (tqp_quantize_matrix_only): the group's Hessian read by rows,
 * rotated and factored distributed, the matrix's rows rotated distributed and coded, the proxy
 * loss streamed, the codes gathered to rank 0.  Only the inputs and the output differ:
 *  - H is a random SPD matrix, diag(d) + G G^T / k with d in [0.5, 1.5] and G (n, 32)
 *    Gaussian, each rank computing its own rows (a real run reads them from the Hessian file);
 *  - W is Gaussian (std 0.02), each rank making its own rows;
 *  - --rows R codes only the first R rows of each rank's block (whole bands for the trellis),
 *    so that a run takes minutes; every buffer still has its full size and is touched, so the
 *    memory is that of the full matrix, and the time per row gives the rate for the rest;
 *  - nothing is written.
 * Memory is VmHWM (peak resident set) from /proc/self/status after each step, and VmRSS before
 * the first (the process's fixed overhead: MPI, HDF5, OpenBLAS). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <cjson/cJSON.h>
#include <mpi.h>

#include "tqp/chol.h"
#include "tqp/cli.h"
#include "tqp/forward.h"
#include "tqp/mpiutil.h"
#include "tqp/plan.h"
#include "tqp/progress.h"
#include "tqp/quant.h"
#include "tqp/quantize.h"
#include "tqp/rblas.h"
#include "tqp/rng.h"
#include "tqp/tcq.h"

/* kB of a /proc/self/status field ("VmHWM:", "VmRSS:"), or -1. */
static double proc_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t len = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, len)) {
            v = atof(line + len);
            break;
        }
    fclose(f);
    return v;
}

static double gauss(uint64_t *s)
{
    double u = ((double)(tqp_splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
    double v = (double)(tqp_splitmix64(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

enum { STEPS = TQP_QSTEPS };
static const char *const step_names[STEPS] = {
    "H rows read",  "H rotated (distributed)", "Cholesky + factor", "W rows rotated",
    "rows rounded", "codes gathered",          "codes written (none here)"};

typedef struct {
    double hwm[STEPS]; // VmHWM after each step, bytes
    double sec[STEPS]; // time of each step
    double base_rss;   // VmRSS before the first step
    double rows_done;  // rows rounded
    double vec_n, vec_m; // seconds per rotated vector of length n and of length m (after the run)
} measures;

static const char *const mat_names[7] = {"q", "k", "v", "o", "gate", "up", "down"};
static const tqp_layer_tensor mat_tensors[7] = {TQP_T_Q,    TQP_T_K,  TQP_T_V,   TQP_T_O,
                                                TQP_T_GATE, TQP_T_UP, TQP_T_DOWN};

typedef struct {
    tqp_plan_input in;
    int mat, rows;
    uint64_t seed;
    int64_t m, n;
} bench_cfg;

/* Rows [r0, r1) of this rank: contiguous rows, or whole 16-row bands for the trellis. */
static void own_rows(const bench_cfg *b, int P, int rank, long *r0, long *r1)
{
    if (!b->in.trellis) {
        tqp_partition((long)b->m, P, rank, r0, r1);
        return;
    }
    long b0, b1, nb = (long)((b->m + TQP_TCQ_TILE - 1) / TQP_TCQ_TILE);
    tqp_partition(nb, P, rank, &b0, &b1);
    *r0 = b0 * TQP_TCQ_TILE < b->m ? b0 * TQP_TCQ_TILE : (long)b->m;
    *r1 = b1 * TQP_TCQ_TILE < b->m ? b1 * TQP_TCQ_TILE : (long)b->m;
}

/* The synthetic inputs, made by rows (the same values on any rank count). */
enum { GK = 32 };
typedef struct {
    const bench_cfg *b;
    double *G, *d; // (n, GK) Gaussian, (n) diagonal in [0.5, 1.5]
    measures *ms;
    double t;      // time of the last step
} synth;

static tqp_status synth_hessian_rows(void *ctx, int layer, int group, int n, int r0, int r1,
                                     double *H, int64_t *count)
{
    (void)layer, (void)group;
    const synth *sy = ctx;
    /* row-major H rows = G[r0:r1] G^T / k: column-major (n, rows) = G^T (n, k) G[r0:r1]^T */
    if (r1 > r0)
        tqp_rblas_dgemm('T', 'N', n, r1 - r0, GK, 1.0 / GK, sy->G, GK, sy->G + (size_t)r0 * GK,
                        GK, 0.0, H, n);
    for (int64_t i = r0; i < r1; i++) H[(i - r0) * n + i] += sy->d[i];
    *count = 1;
    return TQP_OK;
}

static tqp_status synth_weight_rows(void *ctx, int layer, int mat, int64_t r0, int64_t r1,
                                    double *W)
{
    (void)layer, (void)mat;
    const synth *sy = ctx;
    int64_t n = sy->b->n;
    for (int64_t i = r0; i < r1; i++) {
        uint64_t st = sy->b->seed ^ 0x1234 ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull);
        for (int64_t j = 0; j < n; j++) W[(i - r0) * n + j] = (float)(0.02 * gauss(&st));
    }
    return TQP_OK;
}

static void synth_step(void *ctx, tqp_qstep k)
{
    synth *sy = ctx;
    double now = tqp_now();
    sy->ms->sec[k] = now - sy->t;
    sy->ms->hwm[k] = proc_kb("VmHWM:") * 1024;
    sy->t = now;
}

static tqp_status run(MPI_Comm comm, const bench_cfg *b, measures *ms)
{
    const tqp_plan_input *in = &b->in;
    memset(ms, 0, sizeof *ms);
    int n = (int)b->n, P, rank;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &rank);
    synth sy = {.b = b, .ms = ms};
    sy.G = tqp_malloc(sizeof(double) * (size_t)n * GK);
    sy.d = tqp_malloc(sizeof(double) * (size_t)n);
    tqp_status s = tqp_mpi_agree(comm, sy.G && sy.d ? TQP_OK : TQP_ENOMEM);
    tqp_tcq *tq = NULL;
    if (s == TQP_OK && in->trellis)
        s = tqp_mpi_agree(comm, tqp_tcq_create(in->L, in->bits, in->V,
                                               in->V == 2 ? TQP_TCODE_HYB : TQP_TCODE_1MAD, NULL,
                                               &tq));
    if (s == TQP_OK) {
        uint64_t st = b->seed;
        for (size_t i = 0; i < (size_t)n * GK; i++) sy.G[i] = gauss(&st);
        for (int i = 0; i < n; i++)
            sy.d[i] = 0.5 + (double)(tqp_splitmix64(&st) >> 11) / 9007199254740992.0;
        tqp_quant_options o = {.bits = in->bits, .rotation = in->rotation,
                               .rounding = in->rounding,
                               .cb = tqp_codebook_find(in->trellis ? "trellis" : "scalar"),
                               .tcq = tq, .damp = 0.01, .seed = b->seed, .threads = 1};
        tqp_qsource src = {.hessian_rows = synth_hessian_rows, .weight_rows = synth_weight_rows,
                           .step = synth_step, .ctx = &sy, .hessian_path = "synthetic"};
        tqp_qmat_info info;
        MPI_Barrier(comm);
        ms->base_rss = proc_kb("VmRSS:") * 1024;
        sy.t = tqp_now();
        s = tqp_quantize_matrix_only(comm, &in->cfg, &src, &o, b->mat, b->rows, &info);
        long r0, r1;
        own_rows(b, P, rank, &r0, &r1);
        long done = r1 - r0;
        if (b->rows > 0 && b->rows < done)
            done = in->trellis ? (b->rows + TQP_TCQ_TILE - 1) / TQP_TCQ_TILE * TQP_TCQ_TILE
                               : b->rows;
        ms->rows_done = (double)(done < r1 - r0 ? done : r1 - r0);
    }
    tqp_tcq_destroy(&tq);
    free(sy.G), free(sy.d);
    /* after the peak: one side of the rotation alone, on 32 MB of vectors of each length */
    tqp_rot rot = {0};
    if (s == TQP_OK && in->rotation != TQP_ROT_NONE &&
        tqp_rot_create(in->rotation, (int)b->m, (int)b->n, 3, 4, &rot) == TQP_OK) {
        int64_t len[2] = {b->n, b->m};
        const tqp_rot_side *side[2] = {&rot.in, &rot.out};
        double *per[2] = {&ms->vec_n, &ms->vec_m};
        for (int k = 0; k < 2; k++) {
            int64_t cnt = ((int64_t)1 << 22) / len[k] > 0 ? ((int64_t)1 << 22) / len[k] : 1;
            double *x = tqp_malloc(sizeof(double) * (size_t)(cnt * len[k]));
            double *scr = tqp_malloc(sizeof(double) * (size_t)len[k]);
            if (x && scr) {
                for (int64_t i = 0; i < cnt * len[k]; i++) x[i] = (double)(i % 7) - 3;
                double tv = tqp_now();
                for (int64_t v = 0; v < cnt; v++)
                    tqp_rot_side_apply(side[k], in->rotation, x + v * len[k], 0, scr);
                *per[k] = (tqp_now() - tv) / (double)cnt;
            }
            free(x), free(scr);
        }
        tqp_rot_destroy(&rot);
    }
    return s;
}

/* ---- report ---- */

static void report(const bench_cfg *b, const measures *all, int P, cJSON *doc)
{
    const tqp_plan_input *in = &b->in;
    double n = (double)b->n, m = (double)b->m;
    printf("quantize-memory: matrix %s (%lld x %lld) of a layer with dim %d, FFN %d, %d heads, %d "
           "KV heads; %s, rotation %s, rounding %s, %d bits; %d rank%s\n\n",
           mat_names[b->mat],
           (long long)b->m, (long long)b->n, in->cfg.dim, in->cfg.hidden_dim, in->cfg.n_heads,
           in->cfg.n_kv_heads, in->trellis ? "trellis" : "scalar grid", tqp_rot_name(in->rotation),
           tqp_rounding_name(in->rounding), in->bits, P, P == 1 ? "" : "s");
    printf("| rank | fixed RSS before | peak RSS (VmHWM) | increment | planned | measured / planned |"
           "\n|---|---|---|---|---|---|\n");
    cJSON *ranks = cJSON_AddArrayToObject(doc, "ranks");
    for (int r = 0; r < P; r++) {
        const measures *ms = &all[r];
        tqp_plan_mem plan;
        tqp_plan_matrix_memory(in, b->mat, r, &plan);
        double peak = ms->hwm[STEPS - 1], inc = peak - ms->base_rss;
        printf("| %d | %.1f MB | %.3f GB | %.3f GB | %.3f GB (%s) | %.3f |\n", r, ms->base_rss / 1e6,
               peak / 1e9, inc / 1e9, plan.total / 1e9, plan.moment, inc / plan.total);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "rank", r);
        cJSON_AddNumberToObject(e, "fixed_rss_bytes", ms->base_rss);
        cJSON_AddNumberToObject(e, "peak_rss_bytes", peak);
        cJSON_AddNumberToObject(e, "increment_bytes", inc);
        cJSON_AddNumberToObject(e, "planned_bytes", plan.total);
        cJSON_AddStringToObject(e, "planned_moment", plan.moment);
        cJSON *st = cJSON_AddArrayToObject(e, "steps");
        for (int k = 0; k < STEPS; k++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "step", step_names[k]);
            cJSON_AddNumberToObject(o, "seconds", ms->sec[k]);
            cJSON_AddNumberToObject(o, "peak_rss_bytes", ms->hwm[k]);
            cJSON_AddItemToArray(st, o);
        }
        cJSON_AddItemToArray(ranks, e);
    }
    printf("\n| step | rank 0 seconds | rank 0 peak RSS after it |\n|---|---|---|\n");
    for (int k = 0; k < STEPS; k++)
        printf("| %s | %.3f | %.3f GB |\n", step_names[k], all[0].sec[k], all[0].hwm[k] / 1e9);
    /* rates with the planner's operation counts: the vector passes alone (measured after the
     * run) give the streaming and base rates; H's rotation time less its vector passes gives
     * the transposes' rate */
    double sn, bn, sm, bm;
    tqp_plan_rotation_vector_work(in->rotation, b->n, &sn, &bn);
    tqp_plan_rotation_vector_work(in->rotation, b->m, &sm, &bm);
    double tvn = all[0].vec_n, tvm = all[0].vec_m, th = all[0].sec[TQP_QSTEP_H_ROTATED];
    double stream_rate = 0, base_rate = 0, transpose_rate = 0;
    if (tvn > 0 && bn == 0) stream_rate = sn / tvn;
    if (tvm > 0 && bm == 0 && stream_rate == 0) stream_rate = sm / tvm;
    if (stream_rate > 0 && bm > 0 && tvm > sm / stream_rate) base_rate = bm / (tvm - sm / stream_rate);
    if (stream_rate > 0 && bn > 0 && tvn > sn / stream_rate) base_rate = bn / (tvn - sn / stream_rate);
    /* rank 0's rows of H: two passes over them, and two transposes of them */
    long h0, h1;
    tqp_partition((long)b->n, P, 0, &h0, &h1);
    double hr = (double)(h1 - h0), th_vec = 2 * hr * tvn;
    if (th > th_vec && tvn > 0) transpose_rate = 2 * 8 * hr * n / (th - th_vec);
    double rows = all[0].rows_done, ldlq = in->rounding == TQP_ROUND_LDLQ;
    double l2 = rows * ((ldlq && !in->trellis ? n * n : 0) + 4 * n * n);
    double chol = ldlq ? n * n * n / 3 / P : 0;
    printf("\nrates (rank 0): rotation vectors %.3g ms (n = %lld) and %.3g ms (m = %lld): signs and "
           "FWHT %.3g GFLOP/s",
           tvn * 1e3, (long long)b->n, tvm * 1e3, (long long)b->m, stream_rate * 1e-9);
    if (base_rate > 0) printf(", odd-order base products %.3g GFLOP/s", base_rate * 1e-9);
    printf("; H rotated (own rows) in %.2f s, of which transposes %.2f s (%.3g GB/s)", th,
           th - th_vec, transpose_rate * 1e-9);
    printf("; Cholesky step %.3g GFLOP/s per rank (n^3/3P, %.2f s, with the redistribution)",
           all[0].sec[TQP_QSTEP_FACTORED] > 0 ? chol / all[0].sec[TQP_QSTEP_FACTORED] * 1e-9 : 0, all[0].sec[TQP_QSTEP_FACTORED]);
    if (!in->trellis)
        printf("; %.0f rows in %.2f s, %.3f s per row, %.3g GFLOP/s per-row level-2 (%s)\n", rows,
               all[0].sec[TQP_QSTEP_ROUNDED], rows > 0 ? all[0].sec[TQP_QSTEP_ROUNDED] / rows : 0,
               all[0].sec[TQP_QSTEP_ROUNDED] > 0 ? l2 / all[0].sec[TQP_QSTEP_ROUNDED] * 1e-9 : 0,
               ldlq ? "n^2 LDLQ + 4 n^2 proxy loss" : "4 n^2 proxy loss");
    else
        printf("; %.0f rows in %.2f s, %.3f s per row, %.0f weights/s overall (Viterbi, "
               "BlockLDLQ and proxy loss together)\n",
               rows, all[0].sec[TQP_QSTEP_ROUNDED], rows > 0 ? all[0].sec[TQP_QSTEP_ROUNDED] / rows : 0,
               all[0].sec[TQP_QSTEP_ROUNDED] > 0 ? rows * n / all[0].sec[TQP_QSTEP_ROUNDED] : 0);
    printf("full matrix on %d rank%s at this speed: %.1f s for the rows (%.0f rows on rank 0)\n", P,
           P == 1 ? "" : "s", rows > 0 ? all[0].sec[TQP_QSTEP_ROUNDED] / rows * ceil(m / P) : 0, ceil(m / P));
    cJSON_AddNumberToObject(doc, "rotate_gflops", stream_rate * 1e-9);
    cJSON_AddNumberToObject(doc, "transpose_gbs", transpose_rate * 1e-9);
    cJSON_AddNumberToObject(doc, "rotate_base_gflops", base_rate * 1e-9);
    cJSON_AddNumberToObject(doc, "chol_gflops", all[0].sec[TQP_QSTEP_FACTORED] > 0 ? chol / all[0].sec[TQP_QSTEP_FACTORED] * 1e-9 : 0);
    cJSON_AddNumberToObject(doc, "cholesky_seconds", all[0].sec[TQP_QSTEP_FACTORED]);
    cJSON_AddNumberToObject(doc, "rows_done_rank0", rows);
    cJSON_AddNumberToObject(doc, "rows_seconds_rank0", all[0].sec[TQP_QSTEP_ROUNDED]);
    cJSON_AddNumberToObject(doc, "seconds_per_row", rows > 0 ? all[0].sec[TQP_QSTEP_ROUNDED] / rows : 0);
    if (!in->trellis)
        cJSON_AddNumberToObject(doc, "level2_gflops",
                                all[0].sec[TQP_QSTEP_ROUNDED] > 0 ? l2 / all[0].sec[TQP_QSTEP_ROUNDED] * 1e-9 : 0);
    else
        cJSON_AddNumberToObject(doc, "row_weights_per_second",
                                all[0].sec[TQP_QSTEP_ROUNDED] > 0 ? rows * n / all[0].sec[TQP_QSTEP_ROUNDED] : 0);
}

tqp_status tqp_bench_quantize_memory(int argc, char **argv)
{
    const char *matrix, *codebook, *rounding, *rotation, *json;
    int synthetic, dim, ffn, heads, kv, bits, L, V, rows, seed;
    tqp_opt opts[] = {
        {"--synthetic", TQP_OPT_FLAG, &synthetic, NULL, NULL,
         "a synthetic layer (required: random SPD Hessian and Gaussian weights)", 1},
        {"--dim", TQP_OPT_INT, &dim, "8192", "N", "hidden size", 0, 1, 1 << 24},
        {"--ffn", TQP_OPT_INT, &ffn, "28672", "N", "FFN size", 0, 1, 1 << 24},
        {"--heads", TQP_OPT_INT, &heads, "64", "N", "attention heads", 0, 1, 4096},
        {"--kv-heads", TQP_OPT_INT, &kv, "8", "N", "key/value heads", 0, 1, 4096},
        {"--matrix", TQP_OPT_STRING, &matrix, "q", "M", "q, k, v, o, gate, up or down"},
        {"--codebook", TQP_OPT_STRING, &codebook, "scalar", "C", "scalar or trellis"},
        {"--rounding", TQP_OPT_STRING, &rounding, "ldlq", "R", "ldlq or nearest"},
        {"--rotation", TQP_OPT_STRING, &rotation, "rht", "R", "rht, kron or none"},
        {"--bits", TQP_OPT_INT, &bits, "2", "K", "bits per weight"},
        {"--trellis-L", TQP_OPT_INT, &L, "16", "L", "trellis state bits"},
        {"--trellis-V", TQP_OPT_INT, &V, "1", "V", "weights per trellis step"},
        {"--rows", TQP_OPT_INT, &rows, "0", "R",
         "rows rounded per rank (0: all; buffers keep the full size)", 0, 0, 1 << 24},
        {"--seed", TQP_OPT_INT, &seed, "1", "S", "seed of the synthetic data"},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write the measurements as JSON"},
    };
    tqp_cmd_spec spec = {
        "bench quantize-memory",
        "Peak memory and step times of one matrix's quantization on a synthetic layer.",
        "Runs quantize.c's own per-matrix path (Hessian rows, distributed rotation, ScaLAPACK "
        "Cholesky, rounding, proxy loss, gathering) on a random SPD Hessian and Gaussian "
        "weights, on every rank of mpiexec, and prints each rank's peak resident memory beside "
        "tqp plan's figure for the same matrix.",
        opts, (int)(sizeof opts / sizeof opts[0])};
    int help, P, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    bench_cfg b;
    memset(&b, 0, sizeof b);
    b.mat = -1;
    for (int i = 0; i < 7; i++)
        if (!strcmp(matrix, mat_names[i])) b.mat = i;
    if (b.mat < 0)
        return tqp_error_set(TQP_EUSAGE, "--matrix must be q, k, v, o, "
                                         "gate, up or down, got '%s'", matrix);
    tqp_config *c = &b.in.cfg;
    *c = (tqp_config){.dim = dim, .hidden_dim = ffn, .n_layers = 1, .n_heads = heads,
                      .n_kv_heads = kv, .head_dim = heads > 0 ? dim / heads : 0,
                      .vocab_size = 32000, .max_seq_len = 4096, .rms_eps = 1e-5f,
                      .rope_theta = 10000.0f, .rope = TQP_ROPE_HALF};
    TQP_CHECK(tqp_config_validate(c, "tqp bench quantize-memory"));
    b.in.dtype = TQP_DTYPE_F32;
    b.in.ranks = P, b.in.nodes = 1, b.in.threads = 1, b.in.bits = bits, b.in.L = L, b.in.V = V;
    b.in.trellis = !strcmp(codebook, "trellis");
    b.in.rounding = tqp_rounding_parse(rounding);
    b.in.rotation = tqp_rot_parse(rotation);
    b.rows = rows;
    b.seed = (uint64_t)seed;
    if ((!b.in.trellis && strcmp(codebook, "scalar")) || b.in.rounding == TQP_ROUND_COUNT ||
        b.in.rotation == TQP_ROT_COUNT || rows < 0 || bits < 2 || bits > 4)
        return tqp_error_set(TQP_EUSAGE, "bad --codebook, --rounding, "
                                         "--rotation, --bits or --rows (see --help)");
    if (b.in.trellis)
        TQP_CHECK(tqp_trellis_check(L, bits, V, 256, V == 2 ? TQP_TCODE_HYB : TQP_TCODE_1MAD));
    tqp_layer_tensor_shape(c, mat_tensors[b.mat], &b.m, &b.n);
    TQP_CHECK(tqp_mpi_agree(MPI_COMM_WORLD, json && rank == 0 ? tqp_check_writable(json) : TQP_OK));
    measures mine, *all = tqp_calloc((size_t)P, sizeof *all);
    TQP_CHECK(tqp_mpi_agree(MPI_COMM_WORLD, all ? TQP_OK : TQP_ENOMEM));
    tqp_status s = run(MPI_COMM_WORLD, &b, &mine);
    if (s == TQP_OK &&
        MPI_Gather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, 0,
                   MPI_COMM_WORLD) != MPI_SUCCESS)
        s = tqp_error_set(TQP_EMPI, "quantize-memory: gather of the measurements failed");
    if (s == TQP_OK && rank == 0) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "command", "bench quantize-memory");
        cJSON_AddStringToObject(doc, "matrix", mat_names[b.mat]);
        cJSON_AddNumberToObject(doc, "rows", (double)b.m);
        cJSON_AddNumberToObject(doc, "cols", (double)b.n);
        cJSON_AddNumberToObject(doc, "ranks", P);
        cJSON_AddStringToObject(doc, "codebook", b.in.trellis ? "trellis" : "scalar");
        report(&b, all, P, doc);
        if (json) s = tqp_json_write(json, doc);
        cJSON_Delete(doc);
    }
    free(all);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}
