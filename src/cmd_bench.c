/* `tqp bench`: benchmarks that print a table from one run.
 *
 * `tqp bench hessian`: the exact Hessian accumulation (hacc.c) against plain OpenBLAS dsyrk and
 * sgemm on the same shapes, on rank 0 with one thread and with T threads (dsyrk then runs on T
 * OpenBLAS threads), then on all ranks (the speed-up), for the bundled model's widths and
 * synthetic 4096- and 8192-wide inputs.  Rates count n^2 * T
 * useful flops for H = X^T X (n wide, T tokens), the work dsyrk does; sgemm computes the full
 * square, 2 n^2 T flops, and its rate is reported as it is. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/cli.h"
#include "tqp/hftok.h"
#include "tqp/io.h"
#include "tqp/hacc.h"
#include "tqp/mpiutil.h"
#include "tqp/progress.h"
#include "tqp/threads.h"

typedef struct {
    int n, windows, wtok;
    double t_one, t_syrk, t_gemm; // seconds, one core: hacc on rank 0; dsyrk, sgemm on rank 0
    double t_thr, t_syrk_thr;     // rank 0 with `threads` threads: hacc; dsyrk (OpenBLAS threads)
    double t_all, t_syrk_all;     // every rank, one thread each: hacc; dsyrk of each rank's share
    double t_red;                 // every rank: one reduction of the whole triangle (empty flush)
    int levels;                   // 2 when the reductions go inside nodes, then across them
} bench_row;

static void fill(float *x, size_t cnt, uint64_t seed)
{
    for (size_t i = 0; i < cnt; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 11) / 9007199254740992.0 - 0.5);
    }
}

static int bench_batch = 8, bench_reps = 3;

/* Accumulate `windows` windows of `wtok` tokens over comm with `threads` threads per rank
 * (a batch's windows staged concurrently into their slots, as the Hessian phase does); the
 * wall time from the first staging to the finalized sums.  With t_red, also the time of one
 * flush with nothing staged (zero sums reduced to every owner: the reductions alone) and in
 * *levels the reduction's levels. */
static tqp_status run_hacc(MPI_Comm comm, int n, int windows, int wtok, const float *x, int threads,
                           double *t, double *t_red, int *levels)
{
    int P, rank;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &rank);
    long w0, w1;
    tqp_partition(windows, P, rank, &w0, &w1);
    int batch = bench_batch;
    long most = (windows + P - 1) / P, nb = (most + batch - 1) / batch;
    tqp_hacc *h = NULL;
    TQP_CHECK(tqp_mpi_agree(comm, tqp_hacc_create(comm, n, (int64_t)batch * wtok, threads, &h)));
    MPI_Barrier(comm);
    double t0 = tqp_now();
    tqp_status s = TQP_OK;
    for (long b = 0; b < nb && s == TQP_OK; b++) {
        int bad = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(+ : bad)
        for (long i = 0; i < batch; i++) {
            long w = w0 + b * batch + i;
            if (w < w1)
                bad += tqp_hacc_stage_at(h, (int)i, (int64_t)i * wtok, x + (size_t)w * wtok * n,
                                         wtok, "bench") != TQP_OK;
        }
        s = bad ? TQP_EINTERNAL : tqp_hacc_flush(h, "bench");
    }
    if (s == TQP_OK) s = tqp_hacc_finalize(h);
    MPI_Barrier(comm);
    *t = tqp_now() - t0;
    if (t_red && s == TQP_OK) {
        t0 = tqp_now();
        s = tqp_hacc_flush(h, "bench");
        MPI_Barrier(comm);
        *t_red = tqp_now() - t0;
        *levels = tqp_hacc_two_level(h) ? 2 : 1;
    }
    tqp_hacc_destroy(&h);
    return s;
}

/* Plain BLAS on the same data with OpenBLAS at `threads` threads: dsyrk over all tokens
 * (float64 copy) and, with gemm set, sgemm X^T X.  Outputs are touched before the clock. */
static tqp_status run_blas(int n, int T, const float *x, int threads, double *t_syrk,
                           double *t_gemm)
{
    double *xd = tqp_malloc_aligned(sizeof(double) * (size_t)T * n);
    double *c = tqp_malloc_aligned(sizeof(double) * (size_t)n * n);
    float *cs = t_gemm ? tqp_malloc_aligned(sizeof(float) * (size_t)n * n) : NULL;
    if (!xd || !c || (t_gemm && !cs)) {
        free(xd), free(c), free(cs);
        return TQP_ENOMEM;
    }
    for (size_t i = 0; i < (size_t)T * n; i++)
        xd[i] = x[i];
    memset(c, 0, sizeof(double) * (size_t)n * n);
    if (cs) memset(cs, 0, sizeof(float) * (size_t)n * n);
    tqp_blas_threads_set(threads);
    double t0 = tqp_now();
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, n, T, 1.0, xd, n, 0.0, c, n);
    *t_syrk = tqp_now() - t0;
    if (t_gemm) {
        t0 = tqp_now();
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, T, 1.0f, x, n, x, n, 0.0f, cs,
                    n);
        *t_gemm = tqp_now() - t0;
    }
    tqp_blas_threads_set(1);
    free(xd), free(c), free(cs);
    return TQP_OK;
}

/* Every rank runs dsyrk on its share of the windows at the same time; the slowest rank's time. */
static tqp_status syrk_all(int n, int windows, int wtok, const float *x, double *t)
{
    int P, rank;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    long w0, w1;
    tqp_partition(windows, P, rank, &w0, &w1);
    double ts = 0, mine;
    MPI_Barrier(MPI_COMM_WORLD);
    tqp_status s = w1 > w0 ? run_blas(n, (int)(w1 - w0) * wtok, x + (size_t)w0 * wtok * n, 1, &ts,
                                      NULL)
                           : TQP_OK;
    mine = ts;
    MPI_Allreduce(&mine, t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}

static double min_d(double a, double b)
{
    return b < a ? b : a;
}

/* Every timing is the best of bench_reps runs, ours and OpenBLAS's alternating, so that a slow
 * spell of a shared machine does not land on one side only.  On one rank: one thread, then
 * `threads` threads.  On P ranks: rank 0 alone, then every rank (the other ranks wait in MPI,
 * which may spin, so the threaded side is measured on one rank only). */
static tqp_status bench_one(int n, int windows, int wtok, int threads, bench_row *row)
{
    int rank, P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    *row = (bench_row){.n = n, .windows = windows, .wtok = wtok};
    size_t cnt = (size_t)windows * wtok * n;
    float *x = tqp_malloc_aligned(sizeof(float) * cnt);
    TQP_CHECK(tqp_mpi_agree(MPI_COMM_WORLD, x ? TQP_OK : TQP_ENOMEM));
    fill(x, cnt, 42);
    tqp_status s = TQP_OK;
    row->t_one = row->t_syrk = row->t_gemm = row->t_thr = row->t_syrk_thr = 1e300;
    row->t_all = row->t_syrk_all = row->t_red = 1e300;
    for (int r = 0; r < bench_reps && s == TQP_OK; r++) {
        double a = 0, b = 0, c = 0;
        if (rank == 0) {
            s = run_hacc(MPI_COMM_SELF, n, windows, wtok, x, 1, &a, NULL, NULL);
            if (s == TQP_OK) s = run_blas(n, windows * wtok, x, 1, &b, &c);
            row->t_one = min_d(row->t_one, a), row->t_syrk = min_d(row->t_syrk, b);
            row->t_gemm = min_d(row->t_gemm, c);
            if (s == TQP_OK && P == 1)
                s = run_hacc(MPI_COMM_SELF, n, windows, wtok, x, threads, &a, NULL, NULL);
            if (s == TQP_OK && P == 1) s = run_blas(n, windows * wtok, x, threads, &b, NULL);
            row->t_thr = min_d(row->t_thr, a), row->t_syrk_thr = min_d(row->t_syrk_thr, b);
        }
        s = tqp_mpi_agree(MPI_COMM_WORLD, s);
        if (P == 1) continue;
        if (s == TQP_OK) s = run_hacc(MPI_COMM_WORLD, n, windows, wtok, x, 1, &a, &c, &row->levels);
        if (s == TQP_OK) s = syrk_all(n, windows, wtok, x, &b);
        row->t_all = min_d(row->t_all, a), row->t_syrk_all = min_d(row->t_syrk_all, b);
        row->t_red = min_d(row->t_red, c);
    }
    free(x);
    return s;
}

/* Bytes each rank sends in one reduction of the whole lower triangle (int128 cells). */
static double triangle_bytes(int n)
{
    return 16.0 * n * (n + 1.0) / 2;
}

static void print_table(const bench_row *r, int nrows, int P, int T)
{
    int m = P > 1 ? P : T;
    printf("| width n | tokens | hacc 1 core GFLOP/s | dsyrk 1 core GFLOP/s | hacc/dsyrk | sgemm 1 core "
           "GFLOP/s | hacc %d %s GFLOP/s | speed-up 1->%d | dsyrk speed-up 1->%d |%s\n",
           m, P > 1 ? "ranks" : "threads", m, m,
           P > 1 ? " reduction GB/s per rank (levels) |" : "");
    printf("|---|---|---|---|---|---|---|---|---|%s\n", P > 1 ? "---|" : "");
    for (int i = 0; i < nrows; i++) {
        double f = (double)r[i].n * r[i].n * r[i].windows * r[i].wtok * 1e-9;
        double tm = P > 1 ? r[i].t_all : r[i].t_thr, ts = P > 1 ? r[i].t_syrk_all : r[i].t_syrk_thr;
        printf("| %d | %d | %.2f | %.2f | %.0f%% | %.2f | %.2f | %.2fx | %.2fx |", r[i].n,
               r[i].windows * r[i].wtok, f / r[i].t_one, f / r[i].t_syrk,
               100.0 * r[i].t_syrk / r[i].t_one, 2 * f / r[i].t_gemm, f / tm, r[i].t_one / tm,
               r[i].t_syrk / ts);
        if (P > 1) printf(" %.2f (%d) |", triangle_bytes(r[i].n) / r[i].t_red * 1e-9, r[i].levels);
        printf("\n");
    }
}

static tqp_status write_json(const char *path, const bench_row *r, int nrows, int P, int T)
{
    cJSON *d = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(d, "rows");
    char cpu[256];
    tqp_cpu_name(cpu, sizeof cpu);
    cJSON_AddStringToObject(d, "command", "bench hessian");
    cJSON_AddStringToObject(d, "cpu", cpu);
    cJSON_AddNumberToObject(d, "ranks", P);
    cJSON_AddNumberToObject(d, "threads", T);
    cJSON_AddNumberToObject(d, "reps", bench_reps);
    for (int i = 0; i < nrows; i++) {
        double f = (double)r[i].n * r[i].n * r[i].windows * r[i].wtok * 1e-9;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "n", r[i].n);
        cJSON_AddNumberToObject(o, "tokens", r[i].windows * r[i].wtok);
        cJSON_AddNumberToObject(o, "window", r[i].wtok);
        cJSON_AddNumberToObject(o, "gflops_hacc_1core", f / r[i].t_one);
        cJSON_AddNumberToObject(o, "gflops_dsyrk_1core", f / r[i].t_syrk);
        cJSON_AddNumberToObject(o, "hacc_over_dsyrk", r[i].t_syrk / r[i].t_one);
        cJSON_AddNumberToObject(o, "gflops_sgemm_1core", 2 * f / r[i].t_gemm);
        if (P == 1) {
            cJSON_AddNumberToObject(o, "gflops_hacc_threads", f / r[i].t_thr);
            cJSON_AddNumberToObject(o, "speedup_threads", r[i].t_one / r[i].t_thr);
            cJSON_AddNumberToObject(o, "gflops_dsyrk_threads", f / r[i].t_syrk_thr);
            cJSON_AddNumberToObject(o, "speedup_dsyrk_threads", r[i].t_syrk / r[i].t_syrk_thr);
        } else {
            cJSON_AddNumberToObject(o, "gflops_hacc_all_ranks", f / r[i].t_all);
            cJSON_AddNumberToObject(o, "speedup_ranks", r[i].t_one / r[i].t_all);
            cJSON_AddNumberToObject(o, "speedup_dsyrk_ranks", r[i].t_syrk / r[i].t_syrk_all);
            cJSON_AddNumberToObject(o, "reduction_gbs_per_rank",
                                    triangle_bytes(r[i].n) / r[i].t_red * 1e-9);
            cJSON_AddNumberToObject(o, "reduction_levels", r[i].levels);
        }
        cJSON_AddItemToArray(rows, o);
    }
    tqp_status s = tqp_json_write(path, d);
    cJSON_Delete(d);
    return s;
}

static tqp_status bench_hessian(int argc, char **argv)
{
    const char *widths, *json;
    int tokens, wtok, threads;
    tqp_opt opts[] = {
        {"--widths", TQP_OPT_STRING, &widths, "64,172,4096,8192", "N,N,...",
         "input widths (64 and 172 are the bundled model's)"},
        {"--tokens", TQP_OPT_INT, &tokens, "4096", "T", "tokens per width", 0, 1, 1 << 30},
        {"--window", TQP_OPT_INT, &wtok, "512", "N", "tokens per window", 0, 1, 1 << 20},
        {"--batch", TQP_OPT_INT, &bench_batch, "8", "N", "windows staged per reduction", 0, 1, 1024},
        {"--reps", TQP_OPT_INT, &bench_reps, "3", "N", "timed runs of each side (best kept)", 0, 1, 100},
        TQP_OPT_THREADS(&threads),
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write the rows as JSON"},
    };
    tqp_cmd_spec spec = {"bench hessian", "Hessian accumulation rate vs plain OpenBLAS.",
                         "Every width is accumulated on rank 0 with one thread beside dsyrk and "
                         "sgemm on one core on the same data; then, on one rank, with --threads "
                         "threads beside dsyrk on as many OpenBLAS threads, or, under mpiexec "
                         "with several ranks, on every rank beside dsyrk of each rank's share. "
                         "Rates count n^2 T flops (what dsyrk does).",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help, P, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (tokens < wtok || wtok < 1 || bench_batch < 1)
        return tqp_error_set(TQP_EUSAGE, "need --tokens >= --window >= 1");
    /* the threaded side runs on rank 0 alone: by default every CPU it may use */
    if (threads == 0) {
        TQP_CHECK(tqp_threads_setup(MPI_COMM_SELF, 0, &threads));
    } else {
        tqp_blas_threads_set(1);
    }
    bench_row rows[16];
    int nrows = 0;
    char *copy = strdup(widths), *save = NULL;
    tqp_status s = TQP_OK;
    for (char *tok = strtok_r(copy, ",", &save); tok && nrows < 16 && s == TQP_OK;
         tok = strtok_r(NULL, ",", &save)) {
        int n = atoi(tok);
        if (n < 1 || n > 65536)
            s = tqp_error_set(TQP_EUSAGE, "--widths: bad width '%s' (1 .. 65536)", tok);
        else
            s = bench_one(n, tokens / wtok, wtok, threads, &rows[nrows++]);
    }
    free(copy);
    if (s == TQP_OK && rank == 0) {
        char cpu[256];
        tqp_cpu_name(cpu, sizeof cpu);
        printf("tqp bench hessian: %s; %d rank%s; %d thread%s; best of %d\n\n", cpu, P,
               P == 1 ? "" : "s", threads, threads == 1 ? "" : "s", bench_reps);
        print_table(rows, nrows, P, threads);
        if (json) s = write_json(json, rows, nrows, P, threads);
    }
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}

/* tqp bench tokenizer: encode one text with a tokenizer.json REPS times (best kept); the
 * tokenizer is loaded once, outside the timing. */
static tqp_status bench_tokenizer(int argc, char **argv)
{
    const char *tok, *text, *json;
    int reps;
    tqp_opt opts[] = {
        {"--tokenizer", TQP_OPT_IN_PATH, &tok, NULL, "PATH", "tokenizer.json or its directory", 1},
        {"--text", TQP_OPT_IN_FILE, &text, NULL, "FILE", "text to encode, as one document", 1},
        {"--reps", TQP_OPT_INT, &reps, "3", "N", "timed encodings (best kept)", 0, 1, 1000},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write the result as JSON"},
    };
    tqp_cmd_spec spec = {"bench tokenizer", "Encoding speed of a tokenizer.json on one core.",
                         NULL, opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank != 0) return tqp_mpi_agree(MPI_COMM_WORLD, TQP_OK);
    tqp_hftok *t = NULL;
    char *buf = NULL;
    size_t len = 0, n = 0;
    double t0 = tqp_now(), load = 0, best = 1e300;
    tqp_status s = tqp_hftok_load(tok, &t);
    load = tqp_now() - t0;
    if (s == TQP_OK) s = tqp_file_read_all(text, &buf, &len);
    for (int r = 0; r < reps && s == TQP_OK; r++) {
        uint32_t *ids = NULL;
        double a = tqp_now();
        s = tqp_hftok_encode(t, buf, len, 1, &ids, &n);
        double e = tqp_now() - a;
        best = e < best ? e : best;
        free(ids);
    }
    if (s == TQP_OK) {
        char cpu[256];
        tqp_cpu_name(cpu, sizeof cpu);
        printf("%s: %zu bytes -> %zu tokens in %.3f s (best of %d): %.2f MB/s; loading %.3f s; %s\n",
               tok, len, n, best, reps, len / best / 1e6, load, cpu);
        if (json) {
            cJSON *d = cJSON_CreateObject();
            cJSON_AddStringToObject(d, "tokenizer", tok);
            cJSON_AddStringToObject(d, "text", text);
            cJSON_AddNumberToObject(d, "bytes", (double)len);
            cJSON_AddNumberToObject(d, "tokens", (double)n);
            cJSON_AddNumberToObject(d, "encode_seconds", best);
            cJSON_AddNumberToObject(d, "mb_per_s", len / best / 1e6);
            cJSON_AddNumberToObject(d, "load_seconds", load);
            cJSON_AddStringToObject(d, "cpu", cpu);
            s = tqp_json_write(json, d);
            cJSON_Delete(d);
        }
    }
    free(buf);
    tqp_hftok_destroy(&t);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}

tqp_status tqp_cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "tokenizer")) return bench_tokenizer(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "hessian")) return bench_hessian(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "trellis")) return tqp_bench_trellis(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "quantize-memory"))
        return tqp_bench_quantize_memory(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "matvec")) return tqp_bench_matvec(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "chol")) return tqp_bench_chol(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "infer")) return tqp_bench_infer(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: tqp bench <name> [options]\n\nbenchmarks:\n  hessian   Hessian "
               "accumulation rate vs plain OpenBLAS dsyrk/sgemm, and 1 -> P rank speed-up\n"
               "  trellis   trellis codes: Gaussian MSE, encoder weights/s vs reference and SIMD "
               "bound\n"
               "  quantize-memory  peak memory and step times of one matrix's quantization on a "
               "synthetic layer, beside tqp plan\n"
               "  matvec    batch-1 fused decode + matrix-vector product on trellis codes vs "
               "OpenBLAS sgemv\n"
               "  infer     end-to-end batch-1 decoding tokens/s: full precision vs each "
               "quantized format\n"
               "  chol      distributed Cholesky (pdpotrf) with the reproducible BLAS vs the "
               "system BLAS\n"
               "  tokenizer encoding speed of a tokenizer.json (tools/bench-tokenizer.sh sets it "
               "beside the reference)\n");
        return TQP_OK;
    }
    return tqp_error_set(TQP_EUSAGE, "name a benchmark (hessian, trellis, quantize-memory, matvec, infer, chol, tokenizer); see tqp bench --help");
}
