/* `tqp bench trellis`: quality and speed of the trellis codes, in one table from one run.
 *
 * Quality: mean squared error on i.i.d. N(0, 1) samples for each code at K = 2, 3, 4, L = 16
 * (best of seven scales, rho = 0.87 to 1.18, chosen on the first 64 sequences and then
 * measured on all, and reported), beside the rate-distortion bound 2^-2K and scalar Lloyd-Max.
 * Speed: weights/s of the fast encoder (two Viterbi passes per sequence, tail-biting) on one
 * core and on all ranks, and of the reference encoder in the same run; and the SIMD lower
 * bound: the kernel's arithmetic vector instructions per weight over the measured rate of
 * independent vector additions (of the kernel's width) on this core.  Decoding speed (unpack +
 * table lookups, one core) is reported beside it.  E8P, QuIP#'s 8-dimensional lattice codebook
 * (3 and 4 bits with its residual stage), is measured on the same samples (MSE at the best of
 * five scales around its Gaussian rho, and the speed of its exact nearest-point search). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <mpi.h>

#include "tqp/cli.h"
#include "tqp/e8p.h"
#include "tqp/quant.h"
#include "tqp/mpiutil.h"
#include "tqp/progress.h"
#include "tqp/rng.h"
#include "tqp/trellis.h"

/* Scalar Lloyd-Max MSE for a unit Gaussian (Max 1960): 1..4 bits. */
static const double lloyd_max[5] = {0, 0.3634, 0.1175, 0.03454, 0.009497};

static double gauss(uint64_t *s)
{
    double u = ((double)(tqp_splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
    double v = (double)(tqp_splitmix64(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* Squared error of sequences [q0, q1) of x at scale a (x / a encoded, error in x units). */
static double mse_part(const tqp_trellis *t, const float *x, long q0, long q1, double a)
{
    float y[256], yh[256];
    uint8_t p[128];
    double e = 0;
    for (long q = q0; q < q1; q++) {
        for (int i = 0; i < t->T; i++) y[i] = (float)(x[q * t->T + i] / a);
        tqp_trellis_encode(t, y, p, yh);
        for (int i = 0; i < t->T; i++) {
            double d = x[q * t->T + i] - a * yh[i];
            e += d * d;
        }
    }
    return e;
}

/* Collective: the sequences are split over the ranks; sums in rank order (fixed). */
static double mse_all(MPI_Comm comm, const tqp_trellis *t, const float *x, long nseq, double a)
{
    int P, r;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &r);
    long q0 = nseq * r / P, q1 = nseq * (r + 1) / P;
    double e = mse_part(t, x, q0, q1, a), *all = malloc(sizeof(double) * P), sum = 0;
    MPI_Allgather(&e, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, comm);
    for (int i = 0; i < P; i++) sum += all[i];
    free(all);
    return sum / ((double)nseq * t->T);
}

static double best_scale(MPI_Comm comm, const tqp_trellis *t, const float *x, long nseq,
                         double *mse)
{
    static const double f[7] = {0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15}; /* rho = 1 / f */
    double best = 1, be = INFINITY;
    for (int k = 0; k < 7; k++) {
        double a = f[k] / t->rms, e = mse_all(comm, t, x, nseq < 64 ? nseq : 64, a);
        if (e < be) be = e, best = a;
    }
    *mse = mse_all(comm, t, x, nseq, best);
    return best;
}


typedef struct {
    const char *code;
    int K, V;
    double mse, scale, rho; // rho: the scale as s = RMS / (RMS(code) rho)
} mse_row;

typedef struct {
    const char *code;
    int V;
    double fast_core, fast_all, ref_core, bound, decode;
} speed_row;

/* Encoder speed for one configuration: fast on rank 0 alone, fast on every rank at once,
 * reference on rank 0 (one sequence). */
static void speed(MPI_Comm comm, tqp_trellis *t, int nseq, speed_row *row)
{
    int P, r;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &r);
    float x[256], xh[256];
    uint8_t p[128];
    uint64_t s = 99;
    for (int i = 0; i < t->T; i++) x[i] = (float)(gauss(&s) * t->rms);
    double t0 = tqp_now();
    if (r == 0)
        for (int q = 0; q < nseq; q++) tqp_trellis_encode(t, x, p, xh);
    double one = tqp_now() - t0;
    MPI_Barrier(comm);
    t0 = tqp_now();
    for (int q = 0; q < nseq; q++) tqp_trellis_encode(t, x, p, xh);
    double mine = tqp_now() - t0, slowest;
    MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, comm);
    t0 = tqp_now();
    if (r == 0) tqp_trellis_encode_ref(t, x, p, xh);
    double ref = tqp_now() - t0;
    row->fast_core = nseq * (double)t->T / one;
    row->fast_all = P * nseq * (double)t->T / slowest;
    row->ref_core = t->T / ref;
    /* decoding: unpack the stream and look the states up, rank 0 */
    int reps = 20000;
    t0 = tqp_now();
    if (r == 0)
        for (int q = 0; q < reps; q++) tqp_trellis_decode(t, p, xh);
    row->decode = (double)reps * t->T / (tqp_now() - t0);
    /* arithmetic vector instructions per step, one per `lanes` states (trellis.h:
     * tqp_trellis_ops_per_state); two passes per sequence of T / V steps */
    int lanes = tqp_trellis_simd_lanes();
    double per_step = (double)(1u << t->L) / lanes * tqp_trellis_ops_per_state(t->K, t->V, lanes);
    double per_weight = 2.0 * per_step / t->V;
    row->bound = tqp_bench_vector_rate() / per_weight;
}

/* E8P (QuIP#'s lattice codebook; 3 and 4 bits with its residual stage): the MSE of the exact
 * encoder on the same samples at the best of five scales around the codebook's Gaussian rho
 * (x 0.94 .. 1.06), and the 2-bit search's weights/s on one core. */
typedef struct {
    double mse[5], rho[5], wps; // by bits 2 .. 4
    double ldlq_wps[5];         // the whole BlockLDLQ coder, by bits
} e8p_row;

enum { E8P_LDLQ_ROWS = 64, E8P_LDLQ_COLS = 4096 };

/* The BlockLDLQ coder as tqp quantize runs it (tqp_e8p_band_tile, 8 bands of 8 rows, 8-column
 * blocks from the last to the first, each block's errors fed back to every earlier column
 * through the reproducible BLAS) on E8P_LDLQ_ROWS x E8P_LDLQ_COLS N(0,1) weights: weights/s on
 * one core.  The factor's block rows are random (one buffer for all blocks: the cost does not
 * depend on its values), small enough that the feedback stays bounded. */
static double e8p_ldlq_rate(const float *x, long nx, int bits)
{
    int m = E8P_LDLQ_ROWS, n = E8P_LDLQ_COLS, nt = n / TQP_E8P_TILE;
    size_t mn = (size_t)m * n;
    if ((long)mn > nx) return 0;
    double *X = tqp_malloc(sizeof(double) * mn), *A = tqp_malloc(sizeof(double) * mn);
    double *E = tqp_malloc(sizeof(double) * mn), *Xh = tqp_malloc(sizeof(double) * mn);
    double *P = tqp_malloc(sizeof(double) * (size_t)n * TQP_E8P_TILE);
    uint8_t *packed = tqp_malloc(tqp_e8p_matrix_bytes(m, n, bits));
    double rate = 0;
    if (X && A && E && Xh && P && packed) {
        uint64_t seed = 0x65387031646c71ull;
        for (size_t i = 0; i < (size_t)n * TQP_E8P_TILE; i++)
            P[i] = 0.02 * ((double)(tqp_splitmix64(&seed) >> 11) / 9007199254740992.0 - 0.5);
        for (size_t i = 0; i < mn; i++) X[i] = A[i] = x[i] * 0.94;
        double t0 = tqp_now();
        for (int j = nt - 1; j >= 0; j--)
            for (int b = 0; b < m / TQP_E8P_TILE; b++) {
                size_t o = (size_t)b * TQP_E8P_TILE * n;
                tqp_e8p_band_tile(n, j, TQP_E8P_TILE, bits, tqp_e8p_resid_scale(bits), X + o,
                                  A + o, E + o, Xh + o,
                                  packed + tqp_e8p_band_bytes(b * TQP_E8P_TILE, n, bits),
                                  j ? P : NULL, n);
            }
        rate = (double)mn / (tqp_now() - t0);
    }
    free(X), free(A), free(E), free(Xh), free(P), free(packed);
    return rate;
}

static double e8p_mse(const float *x, long n, int bits, double rho)
{
    double a = 1.0 / (tqp_e8p_rms() * rho), e = 0; /* x / a has the codebook's RMS x rho */
    double rs = tqp_e8p_resid_scale(bits);
    for (long q = 0; q + TQP_E8P_DIM <= n; q += TQP_E8P_DIM) {
        double y[TQP_E8P_DIM], yh[TQP_E8P_DIM];
        uint8_t code[4];
        for (int i = 0; i < TQP_E8P_DIM; i++) y[i] = x[q + i] / a;
        tqp_e8p_encode(y, TQP_E8P_DIM, bits, rs, code, yh);
        for (int i = 0; i < TQP_E8P_DIM; i++) {
            double d = x[q + i] - a * yh[i];
            e += d * d;
        }
    }
    return e / (double)(n / TQP_E8P_DIM * TQP_E8P_DIM);
}

static void e8p_bench(const float *x, long n, e8p_row *r)
{
    static const double f[5] = {0.94, 0.97, 1.0, 1.03, 1.06};
    const tqp_codebook *cb = tqp_codebook_find("e8p");
    for (int bits = 2; bits <= 4; bits++) {
        r->mse[bits] = INFINITY;
        for (int i = 0; i < 5; i++) {
            double rho = cb->gaussian_rho(bits) * f[i], e = e8p_mse(x, n, bits, rho);
            if (e < r->mse[bits]) r->mse[bits] = e, r->rho[bits] = rho;
        }
    }
    double t0 = tqp_now();
    e8p_mse(x, n, 2, r->rho[2]);
    r->wps = (double)n / (tqp_now() - t0);
    for (int bits = 2; bits <= 4; bits++) r->ldlq_wps[bits] = e8p_ldlq_rate(x, n, bits);
}

static void print_tables(const mse_row *m, int nm, const speed_row *sp, int ns, int P, long n,
                         const e8p_row *e8)
{
    printf("Trellis codes, L = 16, T = 256: MSE on %ld i.i.d. N(0,1) samples (best of 7 scales, "
           "rho 0.87-1.18; E8P: 5 around its default)\n\n", n);
    printf("| code | K | V | MSE | bound 2^-2K | MSE / bound | scalar Lloyd-Max | best rho |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < nm; i++)
        printf("| %s | %d | %d | %.5f | %.5f | %.3f | %.5f | %.3f |\n", m[i].code, m[i].K,
               m[i].V, m[i].mse, pow(2, -2.0 * m[i].K), m[i].mse / pow(2, -2.0 * m[i].K),
               lloyd_max[m[i].K], m[i].rho);
    for (int K = 2; K <= 4; K++)
        printf("| e8p (QuIP#, rho %.3f) | %d | 8 | %.5f | %.5f | %.3f | %.5f | %.3f |\n",
               e8->rho[K], K, e8->mse[K], pow(2, -2.0 * K), e8->mse[K] / pow(2, -2.0 * K),
               lloyd_max[K], e8->rho[K]);
    printf("\nE8P nearest-point search (exact, 2^16 points): %.3g weights/s, 1 core\n", e8->wps);
    if (e8->ldlq_wps[2] > 0)
        printf("E8P BlockLDLQ coder (search + feedback, %d x %d, 8-column blocks), 1 core: "
               "%.3g weights/s at 2 bits, %.3g at 3, %.3g at 4\n", E8P_LDLQ_ROWS, E8P_LDLQ_COLS,
               e8->ldlq_wps[2], e8->ldlq_wps[3], e8->ldlq_wps[4]);
    printf("\nEncoder, L = 16, K = 2 (%s kernel; tail-biting: two Viterbi passes per sequence)\n\n",
           tqp_trellis_isa());
    printf("| code | V | weights/s, 1 core | weights/s, %d rank%s | reference weights/s, 1 core | "
           "speed-up | SIMD bound weights/s | fraction of bound | decode weights/s, 1 core |\n",
           P, P == 1 ? "" : "s");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < ns; i++)
        printf("| %s | %d | %.0f | %.0f | %.0f | %.1fx | %.0f | %.0f%% | %.3g |\n", sp[i].code,
               sp[i].V, sp[i].fast_core, sp[i].fast_all, sp[i].ref_core,
               sp[i].fast_core / sp[i].ref_core, sp[i].bound,
               sp[i].bound > 0 ? 100 * sp[i].fast_core / sp[i].bound : 0.0, sp[i].decode);
}

static tqp_status write_json(const char *path, const mse_row *m, int nm, const speed_row *sp,
                             int ns, int P, long n, const e8p_row *e8)
{
    cJSON *d = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(d, "mse");
    cJSON *e8a = cJSON_AddArrayToObject(d, "e8p");
    for (int K = 2; K <= 4; K++) {
        cJSON *e8o = cJSON_CreateObject();
        cJSON_AddNumberToObject(e8o, "K", K);
        cJSON_AddNumberToObject(e8o, "rho", e8->rho[K]);
        cJSON_AddNumberToObject(e8o, "resid_scale", tqp_e8p_resid_scale(K));
        cJSON_AddNumberToObject(e8o, "mse", e8->mse[K]);
        cJSON_AddItemToArray(e8a, e8o);
    }
    cJSON_AddNumberToObject(d, "e8p_search_weights_per_second", e8->wps);
    cJSON *lw = cJSON_AddArrayToObject(d, "e8p_ldlq_weights_per_second"); /* bits 2, 3, 4 */
    for (int K = 2; K <= 4; K++) cJSON_AddItemToArray(lw, cJSON_CreateNumber(e8->ldlq_wps[K]));
    cJSON_AddStringToObject(d, "command", "bench trellis");
    cJSON_AddStringToObject(d, "kernel", tqp_trellis_isa());
    cJSON_AddNumberToObject(d, "ranks", P);
    cJSON_AddNumberToObject(d, "samples", (double)n);
    for (int i = 0; i < nm; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "code", m[i].code);
        cJSON_AddNumberToObject(e, "K", m[i].K);
        cJSON_AddNumberToObject(e, "V", m[i].V);
        cJSON_AddNumberToObject(e, "L", 16);
        cJSON_AddNumberToObject(e, "mse", m[i].mse);
        cJSON_AddNumberToObject(e, "rho", m[i].rho);
        cJSON_AddNumberToObject(e, "bound", pow(2, -2.0 * m[i].K));
        cJSON_AddItemToArray(a, e);
    }
    a = cJSON_AddArrayToObject(d, "encoder");
    for (int i = 0; i < ns; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "code", sp[i].code);
        cJSON_AddNumberToObject(e, "L", 16);
        cJSON_AddNumberToObject(e, "K", 2);
        cJSON_AddNumberToObject(e, "V", sp[i].V);
        cJSON_AddNumberToObject(e, "weights_per_second", sp[i].fast_core);
        cJSON_AddNumberToObject(e, "weights_per_second_all_ranks", sp[i].fast_all);
        cJSON_AddNumberToObject(e, "weights_per_second_reference", sp[i].ref_core);
        cJSON_AddNumberToObject(e, "simd_bound_weights_per_second", sp[i].bound);
        cJSON_AddNumberToObject(e, "decode_weights_per_second", sp[i].decode);
        cJSON_AddItemToArray(a, e);
    }
    tqp_status s = tqp_json_write(path, d);
    cJSON_Delete(d);
    return s;
}

tqp_status tqp_bench_trellis(int argc, char **argv)
{
    int samples, speed_seqs, P, rank;
    const char *json;
    tqp_opt opts[] = {
        {"--samples", TQP_OPT_INT, &samples, "1048576", "N", "Gaussian samples for the MSE", 0, 1, 1 << 27},
        {"--speed-seqs", TQP_OPT_INT, &speed_seqs, "16", "N", "sequences per speed measurement", 0, 1, 1 << 20},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write the results as JSON"},
    };
    tqp_cmd_spec spec = {"bench trellis",
                         "Trellis codes: Gaussian MSE and encoder throughput, one table.",
                         "Run under mpiexec to use every core: the MSE sequences are split over "
                         "the ranks; speed is measured on rank 0 alone, then on all ranks.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    if (samples < 256 || speed_seqs < 1)
        return tqp_error_set(TQP_EUSAGE, "--samples must be >= 256 and --speed-seqs >= 1");
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    long nseq = samples / 256, n = nseq * 256;
    float *x = tqp_malloc(sizeof(float) * (size_t)n);
    TQP_CHECK(tqp_mpi_agree(MPI_COMM_WORLD, x ? TQP_OK : TQP_ENOMEM));
    uint64_t s = 2024;
    for (long i = 0; i < n; i++) x[i] = (float)gauss(&s);
    static const struct { tqp_tcode code; int V; } codes[5] = {
        {TQP_TCODE_1MAD, 1}, {TQP_TCODE_3INST, 1}, {TQP_TCODE_HYB, 2}, {TQP_TCODE_1MUL, 1},
        {TQP_TCODE_GF8, 1}};
    mse_row m[15];
    speed_row sp[5];
    int nm = 0, ns = 0;
    tqp_status st = TQP_OK;
    for (int c = 0; c < 5 && st == TQP_OK; c++)
        for (int K = 2; K <= 4 && st == TQP_OK; K++) {
            tqp_trellis *t = NULL;
            st = tqp_trellis_create(16, K, codes[c].V, 256, codes[c].code, NULL, &t);
            if (st != TQP_OK) break;
            m[nm] = (mse_row){tqp_tcode_name(codes[c].code), K, codes[c].V, 0, 0};
            m[nm].scale = best_scale(MPI_COMM_WORLD, t, x, nseq, &m[nm].mse);
            m[nm].rho = 1.0 / (m[nm].scale * t->rms);
            if (rank == 0)
                fprintf(stderr, "bench trellis: %s K=%d MSE %.5f\n", m[nm].code, K, m[nm].mse);
            nm++;
            if (K == 2) {
                sp[ns].code = tqp_tcode_name(codes[c].code);
                sp[ns].V = codes[c].V;
                speed(MPI_COMM_WORLD, t, speed_seqs, &sp[ns++]);
            }
            tqp_trellis_destroy(&t);
        }
    e8p_row e8 = {0};
    if (st == TQP_OK && rank == 0) {
        e8p_bench(x, n, &e8);
        fprintf(stderr, "bench trellis: e8p MSE %.5f %.5f %.5f (K = 2, 3, 4)\n", e8.mse[2],
                e8.mse[3], e8.mse[4]);
    }
    free(x);
    if (st == TQP_OK && rank == 0) {
        print_tables(m, nm, sp, ns, P, n, &e8);
        if (json) st = write_json(json, m, nm, sp, ns, P, n, &e8);
    }
    return tqp_mpi_agree(MPI_COMM_WORLD, st);
}
