/* `tqp bench quantize-memory`: the per-matrix quantization path of src/quantize.c on a synthetic
 * layer (one Llama-2-70B-shaped layer by default), with the peak resident memory of every rank
 * and the time of each step, beside what `tqp plan` predicts for the same matrix.
 *
 * The steps and buffers are those of quantize.c's group_load, factor_damped, quantize_matrix
 * and quantize_matrix_tcq, through the same public functions (tqp_hessian_prepare, tqp_rot_*,
 * tqp_dfactor_*, tqp_ldlq_panel, tqp_quad_form, tqp_tcq_band_tile, tqp_pack_codes): the layer's
 * fp32 weights are held, the group's Hessian H0 is replicated (and factored itself, with the
 * damping added in the factor's layout, as for a Hessian without dead inputs), the factor
 * stays in ScaLAPACK's block-cyclic layout and its rows are handed out panel by panel, the
 * rotated W is on every rank, codes are gathered to rank 0 and packed.  What differs:
 *  - H is a random SPD matrix, diag(d) + G G^T / k with d in [0.5, 1.5] and G (n, 32) Gaussian,
 *    written straight into H0 (the real path reads it from the Hessian file);
 *  - W is Gaussian (std 0.02) in its place of the layer; the layer's other matrices are zeros;
 *  - --rows R rounds only the first R rows of each rank's block (whole bands for the trellis),
 *    so that a run takes minutes; every buffer still has its full size and is touched, so the
 *    memory is that of the full matrix, and the time per row gives the rate for the rest;
 *  - nothing is written: the packed stream is made on rank 0 and dropped.
 * Memory is VmHWM (peak resident set) from /proc/self/status, and VmRSS before the first step
 * (the process's fixed overhead: MPI, HDF5, OpenBLAS). */
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

enum { STEPS = 8 };
static const char *const step_names[STEPS] = {
    "layer weights", "H generated", "H rotated (H0, Hf)", "Cholesky + factor",
    "W rotated",     "rows rounded", "codes gathered",    "codes packed (rank 0)"};

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

static void mark(measures *ms, int k, double t0)
{
    ms->sec[k] = tqp_now() - t0;
    ms->hwm[k] = proc_kb("VmHWM:") * 1024;
}

/* H0 (n, n) = diag(d) + G G^T / k: symmetric positive definite, fully written. */
static tqp_status make_hessian(int n, uint64_t seed, double *H)
{
    enum { K = 32 };
    double *G = tqp_malloc(sizeof(double) * (size_t)n * K);
    if (!G) return TQP_ENOMEM;
    uint64_t s = seed;
    for (size_t i = 0; i < (size_t)n * K; i++) G[i] = gauss(&s);
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasNoTrans, n, K, 1.0 / K, G, K, 0.0, H, n);
    for (int64_t i = 0; i < n; i++) {
        H[i * n + i] += 0.5 + (double)(tqp_splitmix64(&s) >> 11) / 9007199254740992.0;
        for (int64_t j = 0; j < i; j++) H[j * n + i] = H[i * n + j];
    }
    free(G);
    return TQP_OK;
}

/* Rows [r0, r1) of this rank: contiguous rows, or whole 16-row bands for the trellis. */
static void own_rows(const bench_cfg *b, int P, int rank, long *r0, long *r1)
{
    if (!b->in.trellis) {
        tqp_partition((long)b->m, P, rank, r0, r1);
        return;
    }
    long b0, b1, nb = (long)((b->m + TQP_TCQ_TILE - 1) / TQP_TCQ_TILE);
    tqp_partition(nb, P, rank, &b0, &b1);
    *r0 = b0 * TQP_TCQ_TILE;
    *r1 = b1 * TQP_TCQ_TILE < b->m ? b1 * TQP_TCQ_TILE : (long)b->m;
}

static size_t band_bytes(tqp_tcq *q, long r0, long r1, int n)
{
    size_t bytes = 0;
    for (long b = r0; b < r1; b += TQP_TCQ_TILE)
        bytes += tqp_tcq_band_bytes(q, (int)(r1 - b < TQP_TCQ_TILE ? r1 - b : TQP_TCQ_TILE), n);
    return bytes;
}

/* The group's Hessian as quantize.c's group_load: H0 rotated, then damped and factored
 * into the distributed factor f (the damping added in its layout). */
static tqp_status group_part(MPI_Comm comm, const bench_cfg *b, double *H0, tqp_dfactor *f,
                             measures *ms)
{
    const tqp_plan_input *in = &b->in;
    int n = (int)b->n;
    double md = 0, t0 = tqp_now();
    /* the synthetic H has no dead input: as in group_load, H0 itself is factored */
    tqp_status s = make_hessian(n, b->seed, H0);
    if (s == TQP_OK) s = tqp_hessian_prepare(H0, n, &md);
    mark(ms, 1, t0);
    t0 = tqp_now();
    uint64_t seed_in = tqp_seed_derive(b->seed, 0, (uint64_t)tqp_group_width(&in->cfg, 0));
    tqp_rot rot = {0};
    if (s == TQP_OK) s = tqp_rot_create(in->rotation, 1, n, 0, seed_in, &rot);
    if (s == TQP_OK) s = tqp_rot_hessian(&rot, H0);
    tqp_rot_destroy(&rot);
    mark(ms, 2, t0);
    t0 = tqp_now();
    if (s == TQP_OK && in->rounding == TQP_ROUND_LDLQ) { /* quantize.c's factor_damped */
        double sigma = 0.01;
        int info = 0;
        s = tqp_dfactor_open(comm, n, 0, f);
        if (s == TQP_OK) s = TQP_ENUMERIC;
        for (int tries = 0; s == TQP_ENUMERIC && tries <= TQP_DAMP_MAX_RETRIES; tries++) {
            tqp_dfactor_load(f, H0, sigma * md);
            s = tqp_dfactor_factor(f, &info);
            sigma *= 2;
        }
    }
    mark(ms, 3, t0);
    return s;
}

/* Scalar grid: quantize.c's quantize_matrix with --rows rows per rank. */
static tqp_status matrix_scalar(MPI_Comm comm, const bench_cfg *b, const float *W, const double *H0,
                                tqp_dfactor *f, measures *ms)
{
    const tqp_plan_input *in = &b->in;
    int P, rank, n = (int)b->n;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &rank);
    long r0, r1;
    own_rows(b, P, rank, &r0, &r1);
    size_t mn = (size_t)(b->m * b->n), local = (size_t)(r1 - r0);
    const tqp_codebook *cb = tqp_codebook_find("scalar");
    double *Wt = tqp_malloc(sizeof(double) * mn);
    int ldlq = in->rounding == TQP_ROUND_LDLQ;
    size_t rn = local * n + 1;
    double *X = tqp_malloc(sizeof(double) * rn), *A = tqp_malloc(sizeof(double) * rn);
    double *E = tqp_malloc(sizeof(double) * rn), *Xh = tqp_malloc(sizeof(double) * rn);
    uint32_t *c = tqp_malloc(sizeof(uint32_t) * rn);
    double *Pn = ldlq ? tqp_malloc(sizeof(double) * TQP_LDLQ_PANEL * (size_t)n) : NULL;
    double *d = tqp_malloc(sizeof(double) * 2 * (size_t)n);
    int work = X && A && E && Xh && c && d && (Pn || !ldlq);
    uint8_t *codes = tqp_malloc(local * n + 1);
    double *lb = tqp_malloc(sizeof(double) * (2 * local + 1));
    uint8_t *all_codes = rank == 0 ? tqp_malloc(mn) : NULL;
    double *all_lb = rank == 0 ? tqp_malloc(sizeof(double) * 2 * (size_t)b->m) : NULL;
    uint32_t *codes32 = rank == 0 ? tqp_malloc(sizeof(uint32_t) * mn) : NULL;
    tqp_rot rot = {0};
    tqp_status s = Wt && work && codes && lb && (rank || (all_codes && all_lb && codes32))
                       ? TQP_OK
                       : TQP_ENOMEM;
    double t0 = tqp_now();
    uint64_t seed_in = tqp_seed_derive(b->seed, 0, (uint64_t)tqp_group_width(&in->cfg, 0));
    if (s == TQP_OK) s = tqp_rot_create(in->rotation, (int)b->m, n, b->seed + 16, seed_in, &rot);
    for (size_t i = 0; s == TQP_OK && i < mn; i++) Wt[i] = W[i];
    if (s == TQP_OK) s = tqp_rot_weights(&rot, Wt, 0);
    double scale = s == TQP_OK ? tqp_quant_scale(Wt, mn, cb, in->bits, cb->default_rho(in->bits)) : 1;
    s = tqp_mpi_agree(comm, s);
    mark(ms, 4, t0);
    t0 = tqp_now();
    if (s == TQP_OK) {
        memset(codes, 0, local * n + 1);
        memset(lb, 0, sizeof(double) * (2 * local + 1));
        long todo = b->rows > 0 && b->rows < (long)local ? b->rows : (long)local;
        size_t tn = (size_t)todo * n; /* quantize.c's quantize_rows on the first todo rows */
        for (size_t i = 0; i < rn; i++) X[i] = i < local * n ? Wt[(size_t)r0 * n + i] / scale : 0;
        memcpy(A, X, sizeof(double) * rn);
        memset(E, 0, sizeof(double) * rn), memset(Xh, 0, sizeof(double) * rn), memset(c, 0, 4 * rn);
        if (ldlq) memset(Pn, 0, sizeof(double) * TQP_LDLQ_PANEL * (size_t)n);
        for (int k1 = n; s == TQP_OK && ldlq && k1 > 0;) {
            int k0 = (k1 - 1) / TQP_LDLQ_PANEL * TQP_LDLQ_PANEL;
            s = tqp_dfactor_lu_rows(f, 1, k0, k1, Pn);
            if (s == TQP_OK) tqp_ldlq_panel(cb, in->bits, Pn, k1, k0, k1, n, (int)todo, X, A, E, c, Xh);
            k1 = k0;
        }
        for (size_t i = 0; s == TQP_OK && !ldlq && i < tn; i++)
            c[i] = cb->quantize(X[i], in->bits, &Xh[i]);
        for (size_t i = 0; i < tn; i++) codes[i] = (uint8_t)c[i];
        tqp_row_losses(H0, Wt + (size_t)r0 * n, X, Xh, scale, (int)todo, n, lb, d);
        ms->rows_done = (double)todo;
    }
    mark(ms, 5, t0);
    t0 = tqp_now();
    if (s == TQP_OK) { /* quantize.c's gather_rows */
        int *cnt = tqp_malloc(sizeof(int) * 4 * (size_t)P);
        if (!cnt) s = TQP_ENOMEM;
        for (int p = 0; s == TQP_OK && p < P; p++) {
            long pb, pe;
            own_rows(b, P, p, &pb, &pe);
            cnt[p] = (int)((pe - pb) * n), cnt[P + p] = (int)(pb * n);
            cnt[2 * P + p] = (int)(2 * (pe - pb)), cnt[3 * P + p] = (int)(2 * pb);
        }
        if (s == TQP_OK &&
            (MPI_Gatherv(codes, cnt[rank], MPI_UINT8_T, all_codes, cnt, cnt + P, MPI_UINT8_T, 0,
                         comm) != MPI_SUCCESS ||
             MPI_Gatherv(lb, cnt[2 * P + rank], MPI_DOUBLE, all_lb, cnt + 2 * P, cnt + 3 * P,
                         MPI_DOUBLE, 0, comm) != MPI_SUCCESS))
            s = tqp_error_set(TQP_EMPI, "quantize-memory: gather failed");
        free(cnt);
    }
    mark(ms, 6, t0);
    t0 = tqp_now();
    if (s == TQP_OK && rank == 0) { /* qfile.c's tqp_qwriter_matrix, without the file */
        for (size_t i = 0; i < mn; i++) codes32[i] = all_codes[i];
        uint8_t *packed = tqp_malloc(tqp_pack_bytes(mn, in->bits) + 1);
        if (!packed) s = TQP_ENOMEM;
        if (packed) tqp_pack_codes(codes32, mn, in->bits, packed);
        mark(ms, 7, t0);
        free(packed);
    } else {
        mark(ms, 7, t0);
    }
    tqp_rot_destroy(&rot);
    free(Wt), free(codes), free(lb), free(all_codes), free(all_lb), free(codes32);
    free(X), free(A), free(E), free(Xh), free(c), free(Pn), free(d);
    return tqp_mpi_agree(comm, s);
}

/* Trellis: quantize.c's quantize_matrix_tcq (one thread per rank) with --rows rows per rank. */
static tqp_status matrix_trellis(MPI_Comm comm, const bench_cfg *b, const float *W,
                                 const double *H0, tqp_dfactor *f, measures *ms)
{
    const tqp_plan_input *in = &b->in;
    int P, rank, n = (int)b->n, tile = TQP_TCQ_TILE;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &rank);
    tqp_tcq *q = NULL;
    tqp_tcode code = in->V == 2 ? TQP_TCODE_HYB : TQP_TCODE_1MAD;
    TQP_CHECK(tqp_mpi_agree(comm, tqp_tcq_create(in->L, in->bits, in->V, code, NULL, &q)));
    long r0, r1;
    own_rows(b, P, rank, &r0, &r1);
    size_t mn = (size_t)(b->m * b->n), total = tqp_tcq_matrix_bytes(q, (int)b->m, n);
    size_t mine = band_bytes(q, r0, r1, n);
    double *Wt = tqp_malloc(sizeof(double) * mn);
    double *lb = tqp_malloc(sizeof(double) * (2 * (size_t)(r1 - r0) + 1));
    uint8_t *packed = tqp_malloc(mine + 1), *all = rank == 0 ? tqp_malloc(total) : NULL;
    double *all_lb = rank == 0 ? tqp_malloc(sizeof(double) * 2 * (size_t)b->m) : NULL;
    int ldlq = in->rounding == TQP_ROUND_LDLQ;
    size_t rn = (size_t)(r1 - r0) * n + 1;
    double *X = tqp_malloc(sizeof(double) * rn), *A = tqp_malloc(sizeof(double) * rn);
    double *E = tqp_malloc(sizeof(double) * rn), *Xh = tqp_malloc(sizeof(double) * rn);
    double *Pn = ldlq ? tqp_malloc(sizeof(double) * (size_t)tile * n) : NULL;
    double *d = tqp_malloc(sizeof(double) * 2 * (size_t)n);
    tqp_rot rot = {0};
    tqp_status s = Wt && lb && packed && X && A && E && Xh && d && (Pn || !ldlq) &&
                           (rank || (all && all_lb))
                       ? TQP_OK
                       : TQP_ENOMEM;
    double t0 = tqp_now();
    uint64_t seed_in = tqp_seed_derive(b->seed, 0, (uint64_t)tqp_group_width(&in->cfg, 0));
    if (s == TQP_OK) s = tqp_rot_create(in->rotation, (int)b->m, n, b->seed + 16, seed_in, &rot);
    for (size_t i = 0; s == TQP_OK && i < mn; i++) Wt[i] = W[i];
    if (s == TQP_OK) s = tqp_rot_weights(&rot, Wt, 0);
    double scale = 1;
    if (s == TQP_OK) {
        double ss = 0;
        for (size_t i = 0; i < mn; i++) ss += Wt[i] * Wt[i];
        scale = sqrt(ss / (double)mn) / tqp_tcq_base(q)->rms;
        if (!(scale > 0) || !isfinite(scale)) scale = 1;
    }
    if (s == TQP_OK) s = tqp_tcq_prepare(q, (int)(r1 - r0), n);
    s = tqp_mpi_agree(comm, s);
    mark(ms, 4, t0);
    t0 = tqp_now();
    if (s == TQP_OK) {
        memset(packed, 0, mine + 1);
        memset(lb, 0, sizeof(double) * (2 * (size_t)(r1 - r0) + 1));
        long last = b->rows > 0 && r0 + b->rows < r1 ? r0 + b->rows : r1;
        /* quantize.c's quantize_bands on the bands of the first rows, one thread */
        for (size_t i = 0; i < rn; i++) X[i] = i + 1 < rn ? Wt[(size_t)r0 * n + i] / scale : 0;
        memcpy(A, X, sizeof(double) * rn);
        memset(E, 0, sizeof(double) * rn), memset(Xh, 0, sizeof(double) * rn);
        if (ldlq) memset(Pn, 0, sizeof(double) * (size_t)tile * n);
        for (int j = (n + tile - 1) / tile - 1; s == TQP_OK && j >= 0; j--) {
            int c0 = j * tile, w = n - c0 < tile ? n - c0 : tile;
            if (ldlq && c0 > 0) s = tqp_dfactor_lu_rows(f, tile, c0, c0 + w, Pn);
            size_t off = 0;
            for (long bb = r0; bb < last && s == TQP_OK; bb += tile) {
                int rows = (int)(r1 - bb < tile ? r1 - bb : tile);
                size_t o = (size_t)(bb - r0) * n;
                s = tqp_tcq_band_tile(q, n, j, rows, X + o, A + o, E + o, Xh + o, packed + off,
                                      ldlq && c0 > 0 ? Pn : NULL, c0 + w);
                off += tqp_tcq_band_bytes(q, rows, n);
            }
        }
        if (s == TQP_OK) tqp_row_losses(H0, Wt + (size_t)r0 * n, X, Xh, scale, (int)(last - r0), n, lb, d);
        if (s == TQP_OK) ms->rows_done += (double)(last - r0);
    }
    s = tqp_mpi_agree(comm, s);
    mark(ms, 5, t0);
    t0 = tqp_now();
    if (s == TQP_OK) { /* quantize.c's gather_bytes */
        int *cnt = tqp_malloc(sizeof(int) * 4 * (size_t)P), pos = 0;
        if (!cnt) s = TQP_ENOMEM;
        for (int p = 0; s == TQP_OK && p < P; p++) {
            long pb, pe;
            own_rows(b, P, p, &pb, &pe);
            int bytes = (int)band_bytes(q, pb, pe, n);
            cnt[p] = bytes, cnt[P + p] = pos, pos += bytes;
            cnt[2 * P + p] = (int)(2 * (pe - pb)), cnt[3 * P + p] = (int)(2 * pb);
        }
        if (s == TQP_OK &&
            (MPI_Gatherv(packed, (int)mine, MPI_UINT8_T, all, cnt, cnt + P, MPI_UINT8_T, 0, comm) !=
                 MPI_SUCCESS ||
             MPI_Gatherv(lb, cnt[2 * P + rank], MPI_DOUBLE, all_lb, cnt + 2 * P, cnt + 3 * P,
                         MPI_DOUBLE, 0, comm) != MPI_SUCCESS))
            s = tqp_error_set(TQP_EMPI, "quantize-memory: gather failed");
        free(cnt);
    }
    mark(ms, 6, t0);
    mark(ms, 7, tqp_now()); /* the trellis stream is written as gathered */
    tqp_rot_destroy(&rot);
    free(Wt), free(lb), free(packed), free(all), free(all_lb);
    free(X), free(A), free(E), free(Xh), free(Pn), free(d);
    tqp_tcq_destroy(&q);
    return tqp_mpi_agree(comm, s);
}

static tqp_status run(MPI_Comm comm, const bench_cfg *b, measures *ms)
{
    const tqp_plan_input *in = &b->in;
    memset(ms, 0, sizeof *ms);
    ms->base_rss = proc_kb("VmRSS:") * 1024;
    double t0 = tqp_now();
    /* the layer's fp32 weights, as tqp_model_layer_load holds them for the whole layer */
    size_t lp = (size_t)tqp_plan_layer_params(&in->cfg), off = 0;
    float *layer = tqp_malloc_aligned(sizeof(float) * lp);
    TQP_CHECK(tqp_mpi_agree(comm, layer ? TQP_OK : TQP_ENOMEM));
    memset(layer, 0, sizeof(float) * lp);
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        int64_t r, c;
        tqp_layer_tensor_shape(&in->cfg, (tqp_layer_tensor)t, &r, &c);
        if (t == (int)mat_tensors[b->mat]) break;
        off += (size_t)(r * c);
    }
    float *W = layer + off;
    uint64_t s0 = b->seed ^ 0x1234;
    for (size_t i = 0; i < (size_t)(b->m * b->n); i++) W[i] = (float)(0.02 * gauss(&s0));
    mark(ms, 0, t0);
    size_t nn = (size_t)(b->n * b->n);
    double *H0 = tqp_malloc(sizeof(double) * nn);
    tqp_dfactor f = {0};
    tqp_status s = tqp_mpi_agree(comm, H0 ? TQP_OK : TQP_ENOMEM);
    if (s == TQP_OK) s = tqp_mpi_agree(comm, group_part(comm, b, H0, &f, ms));
    if (s == TQP_OK)
        s = in->trellis ? matrix_trellis(comm, b, W, H0, &f, ms)
                        : matrix_scalar(comm, b, W, H0, &f, ms);
    tqp_dfactor_close(&f);
    free(H0), free(layer);
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
    double tvn = all[0].vec_n, tvm = all[0].vec_m, th = all[0].sec[2];
    double stream_rate = 0, base_rate = 0, transpose_rate = 0;
    if (tvn > 0 && bn == 0) stream_rate = sn / tvn;
    if (tvm > 0 && bm == 0 && stream_rate == 0) stream_rate = sm / tvm;
    if (stream_rate > 0 && bm > 0 && tvm > sm / stream_rate) base_rate = bm / (tvm - sm / stream_rate);
    if (stream_rate > 0 && bn > 0 && tvn > sn / stream_rate) base_rate = bn / (tvn - sn / stream_rate);
    double th_vec = 2 * 2 * (double)b->n * tvn; /* two rotations of H, 2n vectors each */
    if (th > th_vec && tvn > 0) transpose_rate = 2 * 2 * 8 * n * n / (th - th_vec);
    double rows = all[0].rows_done, ldlq = in->rounding == TQP_ROUND_LDLQ;
    double l2 = rows * ((ldlq && !in->trellis ? n * n : 0) + 4 * n * n);
    double chol = ldlq ? n * n * n / 3 / P : 0;
    printf("\nrates (rank 0): rotation vectors %.3g ms (n = %lld) and %.3g ms (m = %lld): signs and "
           "FWHT %.3g GFLOP/s",
           tvn * 1e3, (long long)b->n, tvm * 1e3, (long long)b->m, stream_rate * 1e-9);
    if (base_rate > 0) printf(", odd-order base products %.3g GFLOP/s", base_rate * 1e-9);
    printf("; H rotated twice in %.2f s, of which transposes %.2f s (%.3g GB/s)", th,
           th - th_vec, transpose_rate * 1e-9);
    printf("; Cholesky step %.3g GFLOP/s per rank (n^3/3P, %.2f s, with copies and the factor's "
           "allreduce)",
           all[0].sec[3] > 0 ? chol / all[0].sec[3] * 1e-9 : 0, all[0].sec[3]);
    if (!in->trellis)
        printf("; %.0f rows in %.2f s, %.3f s per row, %.3g GFLOP/s per-row level-2 (%s)\n", rows,
               all[0].sec[5], rows > 0 ? all[0].sec[5] / rows : 0,
               all[0].sec[5] > 0 ? l2 / all[0].sec[5] * 1e-9 : 0,
               ldlq ? "n^2 LDLQ + 4 n^2 proxy loss" : "4 n^2 proxy loss");
    else
        printf("; %.0f rows in %.2f s, %.3f s per row, %.0f weights/s overall (Viterbi, "
               "BlockLDLQ and proxy loss together)\n",
               rows, all[0].sec[5], rows > 0 ? all[0].sec[5] / rows : 0,
               all[0].sec[5] > 0 ? rows * n / all[0].sec[5] : 0);
    printf("full matrix on %d rank%s at this speed: %.1f s for the rows (%.0f rows on rank 0)\n", P,
           P == 1 ? "" : "s", rows > 0 ? all[0].sec[5] / rows * ceil(m / P) : 0, ceil(m / P));
    cJSON_AddNumberToObject(doc, "rotate_gflops", stream_rate * 1e-9);
    cJSON_AddNumberToObject(doc, "transpose_gbs", transpose_rate * 1e-9);
    cJSON_AddNumberToObject(doc, "rotate_base_gflops", base_rate * 1e-9);
    cJSON_AddNumberToObject(doc, "chol_gflops", all[0].sec[3] > 0 ? chol / all[0].sec[3] * 1e-9 : 0);
    cJSON_AddNumberToObject(doc, "cholesky_seconds", all[0].sec[3]);
    cJSON_AddNumberToObject(doc, "rows_done_rank0", rows);
    cJSON_AddNumberToObject(doc, "rows_seconds_rank0", all[0].sec[5]);
    cJSON_AddNumberToObject(doc, "seconds_per_row", rows > 0 ? all[0].sec[5] / rows : 0);
    if (!in->trellis)
        cJSON_AddNumberToObject(doc, "level2_gflops",
                                all[0].sec[5] > 0 ? l2 / all[0].sec[5] * 1e-9 : 0);
    else
        cJSON_AddNumberToObject(doc, "row_weights_per_second",
                                all[0].sec[5] > 0 ? rows * n / all[0].sec[5] : 0);
}

tqp_status tqp_bench_quantize_memory(int argc, char **argv)
{
    const char *matrix, *codebook, *rounding, *rotation, *json;
    int synthetic, dim, ffn, heads, kv, bits, L, V, rows, seed;
    tqp_opt opts[] = {
        {"--synthetic", TQP_OPT_FLAG, &synthetic, NULL, NULL,
         "a synthetic layer (required: random SPD Hessian and Gaussian weights)", 1},
        {"--dim", TQP_OPT_INT, &dim, "8192", "N", "hidden size"},
        {"--ffn", TQP_OPT_INT, &ffn, "28672", "N", "FFN size"},
        {"--heads", TQP_OPT_INT, &heads, "64", "N", "attention heads"},
        {"--kv-heads", TQP_OPT_INT, &kv, "8", "N", "key/value heads"},
        {"--matrix", TQP_OPT_STRING, &matrix, "q", "M", "q, k, v, o, gate, up or down"},
        {"--codebook", TQP_OPT_STRING, &codebook, "scalar", "C", "scalar or trellis"},
        {"--rounding", TQP_OPT_STRING, &rounding, "ldlq", "R", "ldlq or nearest"},
        {"--rotation", TQP_OPT_STRING, &rotation, "rht", "R", "rht, kron or none"},
        {"--bits", TQP_OPT_INT, &bits, "2", "K", "bits per weight"},
        {"--trellis-L", TQP_OPT_INT, &L, "16", "L", "trellis state bits"},
        {"--trellis-V", TQP_OPT_INT, &V, "1", "V", "weights per trellis step"},
        {"--rows", TQP_OPT_INT, &rows, "0", "R",
         "rows rounded per rank (0: all; buffers keep the full size)"},
        {"--seed", TQP_OPT_INT, &seed, "1", "S", "seed of the synthetic data"},
        {"--json", TQP_OPT_STRING, &json, NULL, "FILE", "also write the measurements as JSON"},
    };
    tqp_cmd_spec spec = {
        "bench quantize-memory",
        "Peak memory and step times of one matrix's quantization on a synthetic layer.",
        "Runs quantize.c's per-matrix steps (damping, rotation, ScaLAPACK Cholesky, rounding, "
        "gathering) on a random SPD Hessian and Gaussian weights, on every rank of mpiexec, and "
        "prints each rank's peak resident memory beside tqp plan's figure for the same matrix.",
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
