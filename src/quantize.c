/* The quantization phase, layer by layer and matrix by matrix (see include/tqp/quantize.h). */
#include "tqp/quantize.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/chol.h"
#include "tqp/dist.h"
#include "tqp/events.h"
#include "tqp/forward.h"
#include "tqp/mpiutil.h"
#include "tqp/progress.h"
#include "tqp/rng.h"
#include "tqp/e8p.h"
#include "tqp/tcq.h"


typedef struct {
    MPI_Comm comm;
    int rank, P;
    const tqp_config *cfg;
    const tqp_model *m;       // for the writer's layer records; NULL in tqp_quantize_matrix_only
    const tqp_qsource *src;
    const tqp_quant_options *o;
    tqp_qwriter *w;           // rank 0; NULL: nothing is written
    long rows_limit;          // > 0: each rank rounds only its first rows (measurements)
} qctx;

static void qstep(const qctx *q, tqp_qstep st)
{
    if (q->src->step) q->src->step(q->src->ctx, st);
}

/* One input group's Hessian, ready for its matrices.  Nothing of size n x n is held: the
 * rotated Hessian is row-distributed and the factor block-cyclic. */
typedef struct {
    int n, g;
    uint64_t seed_in;
    int64_t *off;     // (P + 1) row offsets of the row-distributed H0 (include/tqp/dist.h)
    double *H0;       // my rows of the rotated mean Hessian, undamped: the proxy loss's H
    tqp_dfactor f;    // LDLQ: the Cholesky factor C of the damped, rotated H, distributed
    double damp;      // final σ
    int retries;
} group_state;

static void group_free(group_state *gs)
{
    free(gs->off);
    free(gs->H0);
    tqp_dfactor_close(&gs->f); /* nothing to do if never opened */
    memset(gs, 0, sizeof *gs);
}

/* Cholesky of Hf + σ md I with σ doubling on failure, into the distributed factor (the damped
 * matrix is formed only in each rank's block-cyclic part). */
static tqp_status factor_damped(MPI_Comm comm, const double *Hf, double md, int n, double sigma,
                                int verbose, const char *what, group_state *gs)
{
    TQP_CHECK(tqp_dfactor_open(comm, n, 0, &gs->f));
    tqp_status s = TQP_ENUMERIC;
    int info = 0;
    for (gs->retries = 0; gs->retries <= TQP_DAMP_MAX_RETRIES; gs->retries++) {
        s = tqp_dfactor_load_rows(&gs->f, gs->off, Hf, sigma * md);
        if (s == TQP_OK) s = tqp_dfactor_factor(&gs->f, &info);
        if (s != TQP_ENUMERIC) break;
        if (verbose)
            fprintf(stderr,
                    "quantize: %s: Cholesky failed with damping %g (leading minor %d is not "
                    "positive definite); retrying with %g\n",
                    what, sigma, info, 2 * sigma);
        sigma *= 2;
    }
    if (s == TQP_ENUMERIC)
        return tqp_error_set(TQP_ENUMERIC,
                             "%s: Hessian not positive definite even with damping %g after %d "
                             "retries",
                             what, sigma / 2, TQP_DAMP_MAX_RETRIES);
    TQP_CHECK(s);
    gs->damp = sigma;
    return TQP_OK;
}

/* Local: my rows of H (over the token count) checked; the whole diagonal is gathered so that
 * every rank sees the same mean diagonal (summed in index order) and the
 * same dead inputs. */
static tqp_status check_rows(MPI_Comm comm, const group_state *gs, double *diag, double *md,
                             int *dead)
{
    int P, me, n = gs->n;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    int64_t rows = gs->off[me + 1] - gs->off[me];
    tqp_status s = TQP_OK;
    for (int64_t i = 0; i < rows * n && s == TQP_OK; i++)
        if (!isfinite(gs->H0[i])) s = tqp_error_set(TQP_ENONFINITE, "non-finite Hessian entry");
    TQP_CHECK(tqp_mpi_agree(comm, s));
    int *cnt = tqp_malloc(sizeof(int) * 2 * (size_t)P);
    s = tqp_mpi_agree(comm, cnt ? TQP_OK : TQP_ENOMEM);
    if (s != TQP_OK) {
        free(cnt);
        return s;
    }
    for (int p = 0; p < P; p++) cnt[p] = (int)(gs->off[p + 1] - gs->off[p]), cnt[P + p] = (int)gs->off[p];
    for (int64_t i = 0; i < rows; i++) diag[gs->off[me] + i] = gs->H0[i * n + gs->off[me] + i];
    int rc = MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DOUBLE, diag, cnt, cnt + P, MPI_DOUBLE, comm);
    free(cnt);
    if (rc != MPI_SUCCESS) return tqp_error_set(TQP_EMPI, "quantize: diagonal gather failed");
    double tr = 0;
    *dead = 0;
    for (int j = 0; j < n; j++) tr += diag[j], *dead |= diag[j] == 0;
    *md = tr / n;
    if (!(*md > 0)) return tqp_error_set(TQP_EINPUT, "all-zero (or negative-trace) Hessian");
    return TQP_OK;
}

/* Collective: the group's Hessian read by rows (each rank its own), checked, rotated and
 * factored, all in the row-distributed and block-cyclic layouts. */
static tqp_status group_load(const qctx *q, int layer, int g, int n, int verbose,
                             group_state *gs)
{
    MPI_Comm comm = q->comm;
    const tqp_quant_options *o = q->o;
    const char *hpath = q->src->hessian_path;
    char what[64];
    snprintf(what, sizeof what, "layer %d %s", layer, tqp_group_name((tqp_group)g));
    int P, me;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    int64_t count = 0;
    gs->n = n, gs->g = g;
    gs->seed_in = tqp_seed_derive(o->seed, (uint64_t)layer, (uint64_t)g);
    gs->off = tqp_malloc(sizeof(int64_t) * (size_t)(P + 1));
    if (gs->off) tqp_dist_offsets(n, P, gs->off);
    int64_t r0 = gs->off ? gs->off[me] : 0, rows = gs->off ? gs->off[me + 1] - r0 : 0;
    gs->H0 = tqp_malloc(sizeof(double) * (size_t)(rows * n + 1));
    double *diag = tqp_malloc(sizeof(double) * (size_t)(n + 1));
    double *Hf = NULL, md = 0; /* the matrix to factor when it is not H0 itself */
    tqp_rot rot = {0};
    tqp_status s = gs->off && gs->H0 && diag ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK)
        s = q->src->hessian_rows(q->src->ctx, layer, g, n, (int)r0, (int)(r0 + rows), gs->H0, &count);
    if (s == TQP_OK && count <= 0)
        s = tqp_error_set(TQP_EINPUT, "%s: %s: token count %lld", hpath, what, (long long)count);
    s = tqp_mpi_agree(comm, s);
    int dead = 0;
    if (s == TQP_OK) {
        for (int64_t i = 0; i < rows * n; i++) gs->H0[i] /= (double)count;
        s = check_rows(comm, gs, diag, &md, &dead);
        if (s != TQP_OK && s != TQP_ENOMEM && s != TQP_EMPI)
            s = tqp_error_set(s, "%s: %s: %s", hpath, what, tqp_error_message());
    }
    /* Dead inputs (a zero diagonal) get 1 in the matrix that is factored but not in H0 (the
     * proxy loss's): only then is a second copy made and rotated.  Otherwise the factored
     * matrix is H0 itself, rotated once, and the damping is added in the factor's layout. */
    if (s == TQP_OK && dead) {
        Hf = tqp_malloc(sizeof(double) * (size_t)(rows * n + 1));
        s = tqp_mpi_agree(comm, Hf ? TQP_OK : TQP_ENOMEM);
        if (s == TQP_OK) {
            memcpy(Hf, gs->H0, sizeof(double) * (size_t)(rows * n));
            for (int64_t i = 0; i < rows; i++)
                if (diag[r0 + i] == 0) Hf[i * n + r0 + i] = 1.0;
        }
    }
    free(diag);
    qstep(q, TQP_QSTEP_H_READ);
    if (s == TQP_OK) s = tqp_mpi_agree(comm, tqp_rot_create(o->rotation, 1, n, 0, gs->seed_in, &rot));
    if (s == TQP_OK) s = tqp_rot_hessian_dist(comm, &rot, gs->off, gs->H0);
    if (s == TQP_OK && Hf) s = tqp_rot_hessian_dist(comm, &rot, gs->off, Hf);
    qstep(q, TQP_QSTEP_H_ROTATED);
    if (s == TQP_OK && o->rounding == TQP_ROUND_LDLQ) {
        /* the rounding factor Lu (C diag(C)^-1, or C blockdiag(C_ii)^-1 for BlockLDLQ) is handed
         * out panel by panel from the distributed C while the rows are coded */
        s = factor_damped(comm, Hf ? Hf : gs->H0, md, n, o->damp, verbose, what, gs);
    } else {
        gs->damp = o->damp, gs->retries = 0;
    }
    qstep(q, TQP_QSTEP_FACTORED);
    tqp_rot_destroy(&rot);
    free(Hf);
    return s;
}

/* Collective: the proxy loss terms of my rows (lb, zeros past `done`) from the errors of the
 * rounded rows, with A and E no longer held (freed by the caller). */
static tqp_status row_losses(const qctx *q, group_state *gs, const double *Wr, const double *X,
                             const double *Xh, double scale, int rows, int done, double *lb)
{
    size_t rn = (size_t)rows * gs->n;
    double *D = tqp_malloc(sizeof(double) * (rn + 1));
    tqp_status s = tqp_mpi_agree(q->comm, D ? TQP_OK : TQP_ENOMEM);
    if (s == TQP_OK) {
        for (size_t i = 0; i < rn; i++) D[i] = (Xh[i] - X[i]) * scale;
        memset(lb, 0, sizeof(double) * 2 * (size_t)rows);
        s = tqp_dist_row_losses(q->comm, gs->off, gs->H0, gs->n, done, D, Wr, lb);
    }
    free(D);
    return s;
}

/* Collective: my rows Wr (rows, n) of the rotated W (scaled here) into codes (uint8, one per
 * weight) and, per row, the pair (proxy loss, w H w^T) in lb.  LDLQ takes the panels of Lu from
 * the distributed factor in the same order on every rank (also on ranks without rows). */
static tqp_status quantize_rows(const qctx *q, group_state *gs, const double *Wr, double scale,
                                int rows, uint8_t *codes, double *lb)
{
    const tqp_quant_options *o = q->o;
    int n = gs->n, ldlq = o->rounding == TQP_ROUND_LDLQ;
    int done = q->rows_limit > 0 && q->rows_limit < rows ? (int)q->rows_limit : rows;
    size_t rn = (size_t)rows * n;
    double *X = tqp_malloc(sizeof(double) * (rn + 1)), *A = tqp_malloc(sizeof(double) * (rn + 1));
    double *E = tqp_malloc(sizeof(double) * (rn + 1)), *Xh = tqp_malloc(sizeof(double) * (rn + 1));
    uint32_t *c = tqp_malloc(sizeof(uint32_t) * (rn + 1));
    double *P = ldlq ? tqp_malloc(sizeof(double) * TQP_LDLQ_PANEL * (size_t)n) : NULL;
    tqp_status s = X && A && E && Xh && c && (P || !ldlq) ? TQP_OK : TQP_ENOMEM;
    s = tqp_mpi_agree(q->comm, s);
    if (s == TQP_OK) {
        for (size_t i = 0; i < rn; i++) X[i] = Wr[i] / scale;
        memcpy(A, X, sizeof(double) * rn);
        if (done < rows) /* rows left alone: zeros, every buffer touched at its full size */
            memset(E, 0, sizeof(double) * rn), memset(Xh, 0, sizeof(double) * rn),
                memset(c, 0, sizeof(uint32_t) * rn);
    }
    for (int k1 = n; s == TQP_OK && ldlq && k1 > 0;) {
        int k0 = (k1 - 1) / TQP_LDLQ_PANEL * TQP_LDLQ_PANEL;
        s = tqp_dfactor_lu_rows(&gs->f, 1, k0, k1, P);
        if (s == TQP_OK) tqp_ldlq_panel(o->cb, o->bits, P, k1, k0, k1, n, done, X, A, E, c, Xh);
        k1 = k0;
    }
    if (s == TQP_OK && !ldlq)
        for (size_t i = 0; i < (size_t)done * n; i++) c[i] = o->cb->quantize(X[i], o->bits, &Xh[i]);
    for (size_t i = 0; s == TQP_OK && i < rn; i++) codes[i] = (uint8_t)c[i];
    free(A), free(E), free(c), free(P);
    if (s == TQP_OK) s = row_losses(q, gs, Wr, X, Xh, scale, rows, done, lb);
    free(X), free(Xh);
    qstep(q, TQP_QSTEP_ROUNDED);
    return s;
}


/* Collective: *Wr <- my rows [out_off[me], out_off[me + 1]) of the rotated weights of matrix
 * `mat` (allocated here).  Each rank reads a block of rows of W (its share of tqp_partition),
 * transforms them, and the columns are transformed after a distributed transpose
 * (tqp_rot_weights_dist): no rank holds the whole matrix.  *ss <- the sum of squares of the
 * rotated matrix in row order (tqp_dist_sumsq, the same bits as one loop over it). */
static tqp_status rotated_weights(const qctx *q, int layer, int mat, group_state *gs, int64_t m,
                                  int n, const int64_t *out_off, tqp_rot *rot, double **Wr,
                                  uint64_t *seed_out, double *ss)
{
    *Wr = NULL;
    *seed_out = tqp_seed_derive(q->o->seed, (uint64_t)layer, 16u + (uint64_t)mat);
    TQP_CHECK(tqp_mpi_agree(q->comm, tqp_rot_create(q->o->rotation, (int)m, n, *seed_out,
                                                    gs->seed_in, rot)));
    int64_t *in_off = tqp_malloc(sizeof(int64_t) * (size_t)(q->P + 1));
    if (in_off) tqp_dist_offsets(m, q->P, in_off);
    int64_t a = in_off ? in_off[q->rank] : 0, b = in_off ? in_off[q->rank + 1] : 0;
    double *W = tqp_malloc(sizeof(double) * (size_t)((b - a) * n + 1));
    tqp_status s = tqp_mpi_agree(q->comm, in_off && W ? TQP_OK : TQP_ENOMEM);
    if (s == TQP_OK) s = tqp_mpi_agree(q->comm, q->src->weight_rows(q->src->ctx, layer, mat, a, b, W));
    if (s == TQP_OK) s = tqp_rot_weights_dist(q->comm, rot, in_off, &W, out_off);
    int64_t mine = out_off[q->rank + 1] - out_off[q->rank];
    if (s == TQP_OK) s = tqp_dist_sumsq(q->comm, W, (size_t)(mine * n), ss);
    free(in_off);
    if (s != TQP_OK) free(W);
    else *Wr = W;
    qstep(q, TQP_QSTEP_W_ROTATED);
    return s;
}

/* Row offsets (P + 1) of each rank's rows (my_rows) of an m-row matrix. */
static int64_t *row_offsets(const qctx *q, int64_t m);

/* Rank 0: the matrix's record from the gathered (loss, base) pairs. */
static void matrix_info(const qctx *q, int64_t m, int n, uint64_t seed_out, group_state *gs,
                        double scale, double rho, const double *all_lb, double code_bits,
                        const double search[2], tqp_qmat_info *info)
{
    const tqp_quant_options *o = q->o;
    double L = 0, B = 0;
    for (int64_t r = 0; r < m; r++) L += all_lb[2 * r], B += all_lb[2 * r + 1];
    *info = (tqp_qmat_info){.rows = (int)m, .cols = n, .bits = o->bits, .cb = o->cb,
                            .rotation = o->rotation, .rounding = o->rounding,
                            .seed_out = seed_out, .seed_in = gs->seed_in, .scale = scale,
                            .rho = rho, .damp = gs->damp, .damp_retries = gs->retries,
                            .proxy_rel = B > 0 ? L / B : 0, .code_bits = code_bits,
                            .resid_scale = TQP_CB_IS(o->cb, TQP_CB_E8P)
                                               ? tqp_e8p_resid_scale(o->bits)
                                               : 0,
                            .rho_candidates = (int)search[0], .rho_search_seconds = search[1]};
    info->total_bits = tqp_qmat_total_bits(info);
}

/* Rows [r0, r1) of this rank for the matrix: whole 16-row bands for the trellis. */
static void my_rows(const qctx *q, int64_t m, int rank, long *r0, long *r1)
{
    int tile = q->o->cb->tile;
    if (!tile) {
        tqp_partition((long)m, q->P, rank, r0, r1);
        return;
    }
    long b0, b1, nb = (long)((m + tile - 1) / tile);
    tqp_partition(nb, q->P, rank, &b0, &b1);
    *r0 = b0 * tile < m ? b0 * tile : (long)m; /* a rank without a band: [m, m) */
    *r1 = b1 * tile < m ? b1 * tile : (long)m;
}

/* Trellis: bands of rows [r0, r1) of the scaled rotated W into packed codes and (loss, base)
 * pairs per row. */
static int64_t *row_offsets(const qctx *q, int64_t m)
{
    int64_t *off = tqp_malloc(sizeof(int64_t) * (size_t)(q->P + 1));
    if (!off) return NULL;
    for (int p = 0; p < q->P; p++) {
        long b, e;
        my_rows(q, m, p, &b, &e);
        off[p] = b;
    }
    off[q->P] = m;
    return off;
}

/* Packed bytes of the bands covering rows [r0, r1) (r0 at a band start). */
static size_t rows_bytes(const qctx *q, long r0, long r1, int n)
{
    int tile = q->o->cb->tile;
    size_t bytes = 0;
    for (long b = r0; b < r1; b += tile) {
        int rows = (int)(r1 - b < tile ? r1 - b : tile);
        bytes += q->o->tcq ? tqp_tcq_band_bytes(q->o->tcq, rows, n)
                           : tqp_e8p_band_bytes(rows, n, q->o->bits);
    }
    return bytes;
}

/* Collective: bands of rows [r0, r1) of the scaled rotated W (my rows, in Wr) into packed codes and (loss,
 * base) pairs per row.  Tiles go from the last column block to the first; for each, every rank
 * takes that block's rows of Lu from the distributed factor (BlockLDLQ), then `threads` threads
 * code the tile of each of its bands (a band's result is the same whichever thread codes it, and
 * whatever other rows are coded). */
static tqp_status quantize_bands(const qctx *q, group_state *gs, const double *Wr, double scale,
                                 long r0, long r1, int n, uint8_t *packed, double *lb)
{
    int tile = q->o->cb->tile, threads = q->o->threads > 0 ? q->o->threads : 1;
    int ldlq = q->o->rounding == TQP_ROUND_LDLQ, ntiles = (n + tile - 1) / tile;
    long nb = (r1 - r0 + tile - 1) / tile, nbd = nb;
    if (q->rows_limit > 0 && (q->rows_limit + tile - 1) / tile < nb)
        nbd = (q->rows_limit + tile - 1) / tile; /* bands coded (measurements) */
    int done = (int)(r0 + nbd * tile < r1 ? nbd * tile : r1 - r0);
    size_t rn = (size_t)(r1 - r0) * n;
    size_t *off = tqp_malloc(sizeof(size_t) * (size_t)(nb + 1));
    double *X = tqp_malloc(sizeof(double) * (rn + 1)), *A = tqp_malloc(sizeof(double) * (rn + 1));
    double *E = tqp_malloc(sizeof(double) * (rn + 1)), *Xh = tqp_malloc(sizeof(double) * (rn + 1));
    double *P = ldlq ? tqp_malloc(sizeof(double) * (size_t)tile * n) : NULL;
    tqp_status s = off && X && A && E && Xh && (P || !ldlq) ? TQP_OK : TQP_ENOMEM;
    for (long i = 0; s == TQP_OK && i <= nb; i++) /* each band's byte offset */
        off[i] = i ? off[i - 1] + rows_bytes(q, r0 + (i - 1) * tile, r0 + i * tile < r1 ? r0 + i * tile : r1, n) : 0;
    if (s == TQP_OK && q->o->tcq) s = tqp_tcq_prepare(q->o->tcq, (int)(r1 - r0), n);
    if (s == TQP_OK) {
        for (size_t i = 0; i < rn; i++) X[i] = Wr[i] / scale;
        memcpy(A, X, sizeof(double) * rn);
        if (nbd < nb) /* bands left alone: zeros, every buffer touched at its full size */
            memset(E, 0, sizeof(double) * rn), memset(Xh, 0, sizeof(double) * rn),
                memset(packed, 0, off[nb]);
    }
    s = tqp_mpi_agree(q->comm, s);
    for (int j = ntiles - 1; s == TQP_OK && j >= 0; j--) {
        int c0 = j * tile, w = n - c0 < tile ? n - c0 : tile;
        const double *Pj = NULL;
        if (ldlq && c0 > 0) {
            s = tqp_dfactor_lu_rows(&gs->f, tile, c0, c0 + w, P);
            Pj = P;
        }
        if (s != TQP_OK) break;
        tqp_status first = TQP_OK;
        char why[512] = ""; /* messages are per thread: keep the failing thread's */
#pragma omp parallel for num_threads(threads) schedule(dynamic)
        for (long i = 0; i < nbd; i++) {
            long b = r0 + i * tile;
            int rows = (int)(r1 - b < tile ? r1 - b : tile);
            size_t o = (size_t)(b - r0) * n;
            tqp_status bs = TQP_OK;
            if (q->o->tcq)
                bs = tqp_tcq_band_tile(q->o->tcq, n, j, rows, X + o, A + o, E + o, Xh + o,
                                       packed + off[i], Pj, c0 + w);
            else
                tqp_e8p_band_tile(n, j, rows, q->o->bits, tqp_e8p_resid_scale(q->o->bits), X + o,
                                  A + o, E + o, Xh + o, packed + off[i], Pj, c0 + w);
            if (bs != TQP_OK) {
#pragma omp critical
                if (first == TQP_OK) {
                    first = bs;
                    snprintf(why, sizeof why, "%s", tqp_error_message());
                }
            }
        }
        s = first == TQP_OK ? TQP_OK : tqp_error_set(first, "%s", why);
        s = tqp_mpi_agree(q->comm, s);
    }
    free(A), free(E), free(P);
    if (s == TQP_OK) s = row_losses(q, gs, Wr, X, Xh, scale, (int)(r1 - r0), done, lb);
    free(off), free(X), free(Xh);
    qstep(q, TQP_QSTEP_ROUNDED);
    return s;
}


/* How a rank's codes travel to rank 0: a byte per code, the scalar grid's packed bits, or
 * the trellis's packed bands. */
typedef enum { CODES_BYTES, CODES_PACKED, CODES_BANDS } codes_form;

static size_t codes_len(const qctx *q, codes_form f, long b, long e, int n)
{
    if (f == CODES_BANDS) return rows_bytes(q, b, e, n);
    size_t cnt = (size_t)(e - b) * n;
    return f == CODES_PACKED ? tqp_pack_bytes(cnt, q->o->bits) : cnt;
}

/* Collective: every rank's codes (len bytes, its rows in my_rows order) and (loss, base) pairs
 * to rank 0, concatenated in rank order (which is row order). */
static tqp_status gather_codes(const qctx *q, codes_form f, int64_t m, int n, const uint8_t *mine,
                               size_t len, const double *lb, uint8_t *all, double *all_lb)
{
    int *cnt = tqp_malloc(sizeof(int) * 4 * (size_t)q->P);
    /* MPI counts are ints: the matrix's codes must fit (m n K / 8 bytes, or m n unpacked) */
    tqp_status s = cnt ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK && codes_len(q, f, 0, (long)m, n) > INT_MAX)
        s = tqp_error_set(TQP_EINPUT, "quantize: a %lld x %d matrix's codes exceed one MPI message",
                          (long long)m, n);
    s = tqp_mpi_agree(q->comm, s);
    if (s != TQP_OK) {
        free(cnt);
        return s;
    }
    int *dsp = cnt + q->P, *cnt2 = cnt + 2 * q->P, *dsp2 = cnt + 3 * q->P, pos = 0;
    for (int p = 0; p < q->P; p++) {
        long b, e;
        my_rows(q, m, p, &b, &e);
        cnt[p] = (int)codes_len(q, f, b, e, n), dsp[p] = pos, pos += cnt[p];
        cnt2[p] = (int)(2 * (e - b)), dsp2[p] = (int)(2 * b);
    }
    int rc = MPI_Gatherv(mine, (int)len, MPI_UINT8_T, all, cnt, dsp, MPI_UINT8_T, 0, q->comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Gatherv(lb, cnt2[q->rank], MPI_DOUBLE, all_lb, cnt2, dsp2, MPI_DOUBLE, 0, q->comm);
    free(cnt);
    return rc == MPI_SUCCESS ? TQP_OK : tqp_error_set(TQP_EMPI, "quantize: gather failed");
}

const double tqp_rho_factors[TQP_RHO_CANDIDATES] = {0.88, 0.94, 1.0, 1.06, 1.12};

/* The whole matrix's proxy loss from every rank's (loss, base) pairs of its `rows` rows: the
 * losses gathered in row order (ranks hold consecutive rows) and summed in that order, the same
 * bits on every rank whatever the rank count. */
static tqp_status total_loss(const qctx *q, long rows, const double *lb, double *out)
{
    int *cnt = tqp_malloc(sizeof(int) * 2 * (size_t)q->P), *dsp = cnt ? cnt + q->P : NULL;
    int mine = (int)(2 * rows);
    tqp_status s = cnt ? TQP_OK : TQP_ENOMEM;
    s = tqp_mpi_agree(q->comm, s);
    if (s != TQP_OK) {
        free(cnt);
        return s;
    }
    long total = 0;
    int rc = MPI_Allgather(&mine, 1, MPI_INT, cnt, 1, MPI_INT, q->comm);
    for (int p = 0; rc == MPI_SUCCESS && p < q->P; p++) dsp[p] = (int)total, total += cnt[p];
    double *all = rc == MPI_SUCCESS ? tqp_malloc(sizeof(double) * (size_t)(total + 1)) : NULL;
    s = tqp_mpi_agree(q->comm, rc != MPI_SUCCESS ? TQP_EMPI : all ? TQP_OK : TQP_ENOMEM);
    if (s == TQP_OK &&
        MPI_Allgatherv(lb, mine, MPI_DOUBLE, all, cnt, dsp, MPI_DOUBLE, q->comm) != MPI_SUCCESS)
        s = tqp_error_set(TQP_EMPI, "quantize: gathering the proxy losses failed");
    double L = 0;
    for (long i = 0; s == TQP_OK && i < total; i += 2) L += all[i];
    *out = L;
    free(all), free(cnt);
    return tqp_mpi_agree(q->comm, s);
}

/* Rounds the rows at one scale: quantize_bands or quantize_rows behind one signature. */
typedef tqp_status (*round_fn)(const qctx *q, group_state *gs, const double *Wr, double scale,
                               long r0, long r1, int n, uint8_t *codes, double *lb);

static tqp_status quantize_rows_fn(const qctx *q, group_state *gs, const double *Wr,
                                   double scale, long r0, long r1, int n, uint8_t *codes,
                                   double *lb)
{
    (void)n;
    return quantize_rows(q, gs, Wr, scale, (int)(r1 - r0), codes, lb);
}

/* s = RMS(W) / (RMS(codebook) rho) from the sum of squares of the mn weights; 1 when that is
 * not a positive number (an all-zero matrix codes to the middle points). */
static double scale_of(double ss, size_t mn, double cb_rms, double rho)
{
    double rms = mn ? sqrt(ss / (double)mn) : 0, s = rms / (cb_rms * rho);
    return s > 0 && isfinite(s) ? s : 1.0;
}

/* Round at ρ (fixed), or with TQP_RHO_AUTO at each candidate around the default, keeping the
 * codes and (loss, base) pairs of the best.  ss, mn, cb_rms: the scale's terms (scale_of).
 * search[0]: the candidates tried (0 when ρ is fixed), search[1]: the seconds the candidates
 * beyond the first took. */
static tqp_status round_with_rho(const qctx *q, group_state *gs, const double *Wr, double ss,
                                 size_t mn, double cb_rms, double rho_default, long r0, long r1,
                                 int n, uint8_t *codes, size_t code_bytes, double *lb,
                                 round_fn fn, double *rho_out, double *scale_out,
                                 double search[2])
{
    const tqp_quant_options *o = q->o;
    search[0] = search[1] = 0;
    if (o->rho != TQP_RHO_AUTO) {
        *rho_out = o->rho > 0 ? o->rho : rho_default;
        *scale_out = scale_of(ss, mn, cb_rms, *rho_out);
        return fn(q, gs, Wr, *scale_out, r0, r1, n, codes, lb);
    }
    size_t lbn = 2 * (size_t)(r1 - r0);
    uint8_t *best_codes = tqp_malloc(code_bytes + 1);
    double *best_lb = tqp_malloc(sizeof(double) * (lbn + 1));
    tqp_status s = tqp_mpi_agree(q->comm, best_codes && best_lb ? TQP_OK : TQP_ENOMEM);
    double best = INFINITY, t0 = MPI_Wtime(), first = 0;
    for (int c = 0; s == TQP_OK && c < TQP_RHO_CANDIDATES; c++) {
        double rho = rho_default * tqp_rho_factors[c], scale = scale_of(ss, mn, cb_rms, rho), L = 0;
        s = fn(q, gs, Wr, scale, r0, r1, n, codes, lb);
        if (s == TQP_OK) s = total_loss(q, r1 - r0, lb, &L);
        if (c == 0) first = MPI_Wtime() - t0;
        if (s == TQP_OK && L < best) { /* the first of equals */
            best = L, *rho_out = rho, *scale_out = scale;
            memcpy(best_codes, codes, code_bytes);
            memcpy(best_lb, lb, sizeof(double) * lbn);
        }
    }
    if (s == TQP_OK) {
        memcpy(codes, best_codes, code_bytes);
        memcpy(lb, best_lb, sizeof(double) * lbn);
        search[0] = TQP_RHO_CANDIDATES;
        search[1] = MPI_Wtime() - t0 - first;
    }
    free(best_codes), free(best_lb);
    return s;
}

static tqp_status quantize_matrix_tcq(const qctx *q, int layer,
                                      int mat, group_state *gs, tqp_qmat_info *info)
{
    const tqp_quant_options *o = q->o;
    int64_t mr, nc;
    tqp_layer_tensor_shape(q->cfg, tqp_qmat_tensor(mat), &mr, &nc);
    int n = (int)nc;
    long r0, r1;
    my_rows(q, mr, q->rank, &r0, &r1);
    size_t mn = (size_t)(mr * nc);
    size_t total = o->tcq ? tqp_tcq_matrix_bytes(o->tcq, (int)mr, n)
                          : tqp_e8p_matrix_bytes((int)mr, n, o->bits);
    size_t mine = rows_bytes(q, r0, r1, n);
    int64_t *off = row_offsets(q, mr);
    double *Wr = NULL, *lb = tqp_malloc(sizeof(double) * (2 * (size_t)(r1 - r0) + 1));
    uint8_t *packed = tqp_malloc(mine + 1), *all = NULL;
    double *all_lb = NULL;
    tqp_rot rot = {0};
    tqp_status s = off && lb && packed ? TQP_OK : TQP_ENOMEM;
    s = tqp_mpi_agree(q->comm, s);
    uint64_t seed_out = 0;
    double ss = 0;
    if (s == TQP_OK) s = rotated_weights(q, layer, mat, gs, mr, n, off, &rot, &Wr, &seed_out, &ss);
    double rho_default = o->cb->default_rho(o->bits);
    double rho = rho_default, scale = 1, search[2] = {0, 0};
    if (s == TQP_OK)
        s = round_with_rho(q, gs, Wr, ss, mn,
                           o->tcq ? tqp_tcq_base(o->tcq)->rms : o->cb->rms(o->bits),
                           rho_default, r0, r1, n, packed, mine, lb, quantize_bands, &rho,
                           &scale, search);
    s = tqp_mpi_agree(q->comm, s);
    free(Wr);
    Wr = NULL;
    if (s == TQP_OK && q->rank == 0) { /* rank 0's whole-matrix buffers, after the rounding */
        all = tqp_malloc(total), all_lb = tqp_malloc(sizeof(double) * 2 * (size_t)mr);
        if (!all || !all_lb) s = TQP_ENOMEM;
    }
    s = tqp_mpi_agree(q->comm, s);
    if (s == TQP_OK) s = gather_codes(q, CODES_BANDS, mr, n, packed, mine, lb, all, all_lb);
    qstep(q, TQP_QSTEP_GATHERED);
    if (s == TQP_OK && q->rank == 0) {
        matrix_info(q, mr, n, seed_out, gs, scale, rho, all_lb, 8.0 * (double)total / (double)mn,
                    search, info);
        if (q->w) s = tqp_qwriter_matrix_packed(q->w, layer, mat, info, all, total, &rot);
    }
    qstep(q, TQP_QSTEP_WRITTEN);
    tqp_rot_destroy(&rot);
    free(off), free(Wr), free(lb), free(packed), free(all), free(all_lb);
    return tqp_mpi_agree(q->comm, s);
}


static tqp_status quantize_matrix(const qctx *q, int layer, int mat,
                                  group_state *gs, tqp_qmat_info *info)
{
    if (q->o->cb->tile) return quantize_matrix_tcq(q, layer, mat, gs, info);
    const tqp_quant_options *o = q->o;
    int64_t mr, nc;
    tqp_layer_tensor_shape(q->cfg, tqp_qmat_tensor(mat), &mr, &nc);
    int n = (int)nc;
    long r0, r1;
    tqp_partition((long)mr, q->P, q->rank, &r0, &r1);
    size_t mn = (size_t)(mr * nc), local = (size_t)(r1 - r0);
    int64_t *off = row_offsets(q, mr);
    double *Wr = NULL;
    uint8_t *codes = tqp_malloc(local * n + 1);
    double *lb = tqp_malloc(sizeof(double) * (2 * local + 1));
    uint8_t *all_codes = NULL;
    double *all_lb = NULL;
    uint32_t *codes32 = NULL;
    tqp_rot rot = {0};
    tqp_status s = off && codes && lb ? TQP_OK : TQP_ENOMEM;
    s = tqp_mpi_agree(q->comm, s);
    uint64_t seed_out = 0;
    double ss = 0;
    if (s == TQP_OK) s = rotated_weights(q, layer, mat, gs, mr, n, off, &rot, &Wr, &seed_out, &ss);
    double rho_default = o->cb->default_rho(o->bits), rho = rho_default, scale = 1;
    double search[2] = {0, 0};
    if (s == TQP_OK)
        s = round_with_rho(q, gs, Wr, ss, mn, o->cb->rms(o->bits), rho_default, r0, r1, n,
                           codes, local * n, lb, quantize_rows_fn, &rho, &scale, search);
    free(Wr);
    Wr = NULL;
    /* rank 0's whole-matrix buffers, after the rounding: the packed stream when every row
     * starts on a byte (n K a multiple of 8, as for every real model), else the codes */
    int aligned = (size_t)n * (size_t)o->bits % 8 == 0;
    if (s == TQP_OK && q->rank == 0) {
        all_codes = tqp_malloc(aligned ? tqp_pack_bytes(mn, o->bits) + 1 : mn);
        all_lb = tqp_malloc(sizeof(double) * 2 * (size_t)mr);
        codes32 = aligned ? NULL : tqp_malloc(sizeof(uint32_t) * mn);
        if (!all_codes || !all_lb || (!aligned && !codes32)) s = TQP_ENOMEM;
    }
    s = tqp_mpi_agree(q->comm, s);
    if (s == TQP_OK && aligned) { /* rows start on bytes: each rank packs its own */
        size_t pb = tqp_pack_bytes(local * n, o->bits);
        uint8_t *mine = tqp_malloc(pb + 1);
        s = tqp_mpi_agree(q->comm, mine ? TQP_OK : TQP_ENOMEM);
        if (s == TQP_OK) {
            tqp_pack_codes_u8(codes, local * n, o->bits, mine);
            s = gather_codes(q, CODES_PACKED, mr, n, mine, pb, lb, all_codes, all_lb);
        }
        free(mine);
    } else if (s == TQP_OK) {
        s = gather_codes(q, CODES_BYTES, mr, n, codes, local * n, lb, all_codes, all_lb);
    }
    qstep(q, TQP_QSTEP_GATHERED);
    if (s == TQP_OK && q->rank == 0) {
        matrix_info(q, mr, n, seed_out, gs, scale, rho, all_lb, o->bits, search, info);
        if (aligned && q->w)
            s = tqp_qwriter_matrix_packed(q->w, layer, mat, info, all_codes,
                                          tqp_pack_bytes(mn, o->bits), &rot);
        for (size_t i = 0; !aligned && i < mn; i++) codes32[i] = all_codes[i];
        if (!aligned && q->w) s = tqp_qwriter_matrix(q->w, layer, mat, info, codes32, &rot);
    }
    qstep(q, TQP_QSTEP_WRITTEN);
    tqp_rot_destroy(&rot);
    free(off), free(Wr), free(codes), free(lb), free(all_codes), free(all_lb), free(codes32);
    return tqp_mpi_agree(q->comm, s);
}

static int64_t plain_params(const tqp_config *c)
{
    int64_t p = (int64_t)c->vocab_size * c->dim * (c->tied_embeddings ? 1 : 2) + c->dim;
    return p + (int64_t)c->n_layers * 2 * c->dim;
}

static int64_t layer_weights(const tqp_config *c)
{
    int64_t total = 0, r, k;
    for (int i = 0; i < TQP_QMATS; i++) {
        tqp_layer_tensor_shape(c, tqp_qmat_tensor(i), &r, &k);
        total += r * k;
    }
    return total;
}

static tqp_status quantize_layer(const qctx *q, int layer,
                                 tqp_qmat_info *infos, tqp_progress *pr, double *done)
{
    const tqp_config *c = q->cfg;
    tqp_status s = TQP_OK; /* each matrix's rows are read where they are rotated */
    if (q->rank == 0) s = tqp_qwriter_layer_begin(q->w, q->m, layer);
    s = tqp_mpi_agree(q->comm, s);
    for (int g = 0; g < TQP_GROUP_COUNT && s == TQP_OK; g++) {
        group_state gs = {0};
        int n = tqp_group_width(c, (tqp_group)g);
        s = tqp_mpi_agree(q->comm, group_load(q, layer, g, n, q->rank == 0 && q->o->progress, &gs));
        for (int i = 0; i < TQP_QMATS && s == TQP_OK; i++) {
            if (tqp_qmat_group(i) != g) continue;
            s = quantize_matrix(q, layer, i, &gs, &infos[i]);
            if (s != TQP_OK) break;
            if (i == 3) {
                char point[64];
                snprintf(point, sizeof point, "quantize-layer-%d", layer);
                tqp_crash_point(point);
            }
            int64_t r, k;
            tqp_layer_tensor_shape(c, tqp_qmat_tensor(i), &r, &k);
            char extra[128];
            snprintf(extra, sizeof extra, "layer %d/%d %s: proxy %.4g", layer + 1, c->n_layers,
                     tqp_qmat_name(i), q->rank == 0 ? infos[i].proxy_rel : 0.0);
            *done += (double)(r * k);
            if (pr) tqp_progress_update(pr, *done, extra);
        }
        group_free(&gs);
    }
    if (s == TQP_OK && q->rank == 0) s = tqp_qwriter_layer_commit(q->w, layer);
    return tqp_mpi_agree(q->comm, s);
}

/* One line per committed layer (every event is a line, also in Slurm logs) and its event. */
static void layer_done(const qctx *q, int layer, const tqp_qmat_info *infos, double seconds,
                       double weights, double elapsed, double eta, int resumed)
{
    if (q->rank != 0) return;
    double proxy = 0;
    for (int i = 0; i < TQP_QMATS; i++) proxy += infos[i].proxy_rel / TQP_QMATS;
    if (q->o->progress && !resumed)
        fprintf(stderr,
                "quantize: layer %d/%d committed: %.0f weights in %.2f s (%.3g weights/s), mean "
                "proxy %.4g; elapsed %.1f s, ETA %.1f s\n",
                layer + 1, q->cfg->n_layers, weights, seconds,
                seconds > 0 ? weights / seconds : 0.0, proxy, elapsed, eta);
    cJSON *e = tqp_event_begin(resumed ? "layer_kept" : "layer_committed");
    cJSON_AddStringToObject(e, "phase", "quantize");
    cJSON_AddNumberToObject(e, "layer", layer);
    cJSON_AddNumberToObject(e, "weights", weights);
    cJSON_AddNumberToObject(e, "proxy_loss_mean", proxy);
    if (!resumed) {
        cJSON_AddNumberToObject(e, "seconds", seconds);
        cJSON_AddNumberToObject(e, "weights_per_second", seconds > 0 ? weights / seconds : 0);
        cJSON_AddNumberToObject(e, "eta_seconds", eta);
    }
    tqp_event_end(e);
}

static void result_summarize(tqp_quant_result *r, const tqp_model *m, const tqp_quant_options *o)
{
    double bits_code = 0, bits_total = 0, proxy = 0;
    r->weights = 0;
    for (int i = 0; i < r->n_mats; i++) {
        double wts = (double)r->mats[i].rows * r->mats[i].cols;
        r->weights += (int64_t)wts;
        bits_code += wts * r->mats[i].code_bits;
        bits_total += wts * r->mats[i].total_bits;
        proxy += r->mats[i].proxy_rel;
    }
    r->bpw_code = r->weights ? bits_code / (double)r->weights : 0;
    if (o->tcq) { /* the shared trellis LUT (hyb, lut), stored once, counted in the total */
        const tqp_trellis *t = tqp_tcq_base(o->tcq);
        bits_total += 32.0 * tqp_trellis_lut_entries(t->code, t->L) * t->V;
    }
    r->bpw_total = r->weights ? bits_total / (double)r->weights : 0;
    r->proxy_mean = r->n_mats ? proxy / r->n_mats : 0;
    r->plain_params = plain_params(&m->cfg);
}

/* The inputs of a real run: the Hessian file and the model. */
typedef struct {
    const tqp_model *m;
    const tqp_hfile *hf;
} file_inputs;

static tqp_status file_hessian_rows(void *ctx, int layer, int group, int n, int r0, int r1,
                                    double *H, int64_t *count)
{
    const file_inputs *f = ctx;
    return tqp_hfile_read_rows(f->hf, layer, group, n, r0, r1, H, count);
}

static tqp_status file_weight_rows(void *ctx, int layer, int mat, int64_t r0, int64_t r1,
                                   double *W)
{
    const file_inputs *f = ctx;
    return tqp_model_tensor_rows(f->m, layer, tqp_qmat_tensor(mat), r0, r1, W);
}

tqp_status tqp_quantize_matrix_only(MPI_Comm comm, const tqp_config *cfg, const tqp_qsource *src,
                                    const tqp_quant_options *o, int mat, long rows_limit,
                                    tqp_qmat_info *info)
{
    qctx q = {.comm = comm, .cfg = cfg, .src = src, .o = o, .rows_limit = rows_limit};
    MPI_Comm_rank(comm, &q.rank);
    MPI_Comm_size(comm, &q.P);
    memset(info, 0, sizeof *info);
    group_state gs = {0};
    int g = tqp_qmat_group(mat);
    tqp_status s = tqp_mpi_agree(comm, group_load(&q, 0, g, tqp_group_width(cfg, (tqp_group)g), 0, &gs));
    if (s == TQP_OK) s = quantize_matrix(&q, 0, mat, &gs, info);
    group_free(&gs);
    return s;
}

int tqp_quant_teams(int teams, int P, int layers)
{
    int t = teams > 0 ? teams : P / TQP_TEAM_RANKS;
    if (t > P) t = P;
    if (t > layers) t = layers;
    return t < 1 ? 1 : t;
}

/* What a team's first rank reports for the layer it finished in a round. */
typedef struct {
    int layer; // -1: none this round
    char sha[65];
    double seconds;
    tqp_qmat_info infos[TQP_QMATS];
} layer_report;

/* Collective on comm: *out <- the output path of rank 0's writer, on every rank (malloc'd). */
static tqp_status shared_path(MPI_Comm comm, const tqp_qwriter *w, int rank, char **out)
{
    int len = rank == 0 ? (int)strlen(w->path) : 0;
    TQP_MPI_CHECK(MPI_Bcast(&len, 1, MPI_INT, 0, comm));
    *out = tqp_malloc((size_t)len + 1);
    TQP_CHECK(tqp_mpi_agree(comm, *out ? TQP_OK : TQP_ENOMEM));
    if (rank == 0) memcpy(*out, w->path, (size_t)len + 1);
    TQP_MPI_CHECK(MPI_Bcast(*out, len + 1, MPI_CHAR, 0, comm));
    return TQP_OK;
}

tqp_status tqp_quantize_run(MPI_Comm comm, const tqp_model *m, const tqp_hfile *hf,
                            const tqp_quant_options *o, tqp_qwriter *w, tqp_quant_result *r)
{
    memset(r, 0, sizeof *r);
    file_inputs fi = {m, hf};
    tqp_qsource src = {.hessian_rows = file_hessian_rows, .weight_rows = file_weight_rows,
                       .ctx = &fi, .hessian_path = hf->path};
    qctx q = {.comm = comm, .cfg = &m->cfg, .m = m, .src = &src, .o = o, .w = w};
    MPI_Comm_rank(comm, &q.rank);
    MPI_Comm_size(comm, &q.P);
    const tqp_config *c = &m->cfg;
    r->n_mats = c->n_layers * TQP_QMATS;
    r->mats = tqp_calloc((size_t)r->n_mats, sizeof *r->mats);
    unsigned char *keep = tqp_calloc((size_t)c->n_layers + 1, 1);
    int *todo_l = tqp_calloc((size_t)c->n_layers + 1, sizeof(int));
    layer_report *rep = tqp_calloc((size_t)q.P, sizeof *rep);
    if (tqp_mpi_agree(comm, r->mats && keep && todo_l && rep ? TQP_OK : TQP_ENOMEM) != TQP_OK) {
        free(keep), free(todo_l), free(rep);
        return TQP_ENOMEM; /* r->mats is freed by tqp_quant_result_free */
    }
    if (q.rank == 0)
        for (int l = 0; l < c->n_layers; l++) keep[l] = w->complete || w->committed[l];
    MPI_Bcast(keep, c->n_layers, MPI_UNSIGNED_CHAR, 0, comm);
    double lw = (double)layer_weights(c), todo = 0;
    int ntodo = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (!keep[l]) todo += lw, todo_l[ntodo++] = l;
    /* teams: contiguous blocks of ranks; my team's communicator and writer */
    int T = tqp_quant_teams(o->teams, q.P, ntodo > 0 ? ntodo : 1), team = 0;
    for (int t = 0; t < T; t++) {
        long b, e;
        tqp_partition(q.P, T, t, &b, &e);
        if (q.rank >= b && q.rank < e) team = t;
    }
    qctx tq = q;
    tqp_qwriter ww;
    memset(&ww, 0, sizeof ww);
    ww.f = -1;
    char *path = NULL;
    tqp_status s = T > 1 ? shared_path(comm, w, q.rank, &path) : TQP_OK;
    int split = 0;
    if (s == TQP_OK && T > 1) {
        if (MPI_Comm_split(comm, team, q.rank, &tq.comm) == MPI_SUCCESS)
            split = 1;
        else
            s = tqp_error_set(TQP_EMPI, "quantize: cannot split the ranks into %d teams", T);
    }
    s = tqp_mpi_agree(comm, s);
    if (s == TQP_OK && T > 1) {
        MPI_Comm_rank(tq.comm, &tq.rank);
        MPI_Comm_size(tq.comm, &tq.P);
        if (tq.rank == 0 && q.rank != 0) s = tqp_qwriter_open_worker(path, c->n_layers, &ww);
        tq.w = tq.rank == 0 ? (q.rank == 0 ? w : &ww) : NULL;
        s = tqp_mpi_agree(comm, s);
    }
    double t0 = tqp_now(), done = 0;
    tqp_alloc_largest_reset();
    tqp_progress pr;
    tqp_progress_init(&pr, "quantize", todo, "weights", q.rank == 0 && o->progress);
    for (int l = 0; l < c->n_layers && s == TQP_OK; l++) {
        if (!keep[l]) continue;
        tqp_qmat_info *infos = r->mats + (size_t)l * TQP_QMATS;
        if (q.rank == 0) s = tqp_qwriter_layer_infos(w, l, infos);
        s = tqp_mpi_agree(comm, s);
        if (s == TQP_OK) layer_done(&q, l, infos, 0, lw, 0, 0, 1);
    }
    /* rounds of T layers: team t takes the t-th; then rank 0 records and reports them all */
    for (int k0 = 0; k0 < ntodo && s == TQP_OK; k0 += T) {
        layer_report mine;
        memset(&mine, 0, sizeof mine);
        mine.layer = -1;
        int l = k0 + team < ntodo ? todo_l[k0 + team] : -1;
        double tl = tqp_now(), team_done = 0;
        if (l >= 0) {
            s = quantize_layer(&tq, l, mine.infos, team == 0 ? &pr : NULL,
                               team == 0 ? &done : &team_done);
            if (s == TQP_OK && tq.rank == 0) {
                mine.layer = l, mine.seconds = tqp_now() - tl;
                memcpy(mine.sha, tq.w->sha[l], sizeof mine.sha);
            }
        }
        s = tqp_mpi_agree(comm, s);
        if (s == TQP_OK &&
            MPI_Gather(&mine, (int)sizeof mine, MPI_BYTE, rep, (int)sizeof mine, MPI_BYTE, 0,
                       comm) != MPI_SUCCESS)
            s = tqp_error_set(TQP_EMPI, "quantize: gathering the round's layers failed");
        for (int p = 0; s == TQP_OK && q.rank == 0 && p < q.P; p++) {
            int rl = rep[p].layer;
            if (rl < 0) continue;
            tqp_qmat_info *infos = r->mats + (size_t)rl * TQP_QMATS;
            memcpy(infos, rep[p].infos, sizeof rep[p].infos);
            for (int i = 0; i < TQP_QMATS; i++) infos[i].cb = o->cb; /* pointers are per process */
            if (p != 0) {
                s = tqp_qwriter_record(w, rl, rep[p].sha);
                done += lw;
                tqp_progress_update(&pr, done, "");
            }
        }
        s = tqp_mpi_agree(comm, s);
        for (int p = 0; s == TQP_OK && q.rank == 0 && p < q.P; p++) {
            if (rep[p].layer < 0) continue;
            double el = tqp_now() - t0;
            layer_done(&q, rep[p].layer, r->mats + (size_t)rep[p].layer * TQP_QMATS,
                       rep[p].seconds, lw, el, done > 0 ? el * (todo - done) / done : 0, 0);
        }
    }
    free(keep), free(todo_l), free(rep), free(path);
    if (split) MPI_Comm_free(&tq.comm);
    tqp_qwriter_close(&ww);
    tqp_progress_finish(&pr, done, 0);
    TQP_CHECK(s);
    double mine = (double)tqp_alloc_largest();
    TQP_MPI_CHECK(MPI_Allreduce(&mine, &r->largest_alloc, 1, MPI_DOUBLE, MPI_MAX, comm));
    result_summarize(r, m, o);
    r->seconds = tqp_now() - t0;
    return TQP_OK;
}

void tqp_quant_result_free(tqp_quant_result *r)
{
    free(r->mats);
    memset(r, 0, sizeof *r);
}
