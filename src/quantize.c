/* The quantization phase, layer by layer and matrix by matrix (see include/tqp/quantize.h). */
#include "tqp/quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/chol.h"
#include "tqp/events.h"
#include "tqp/forward.h"
#include "tqp/mpiutil.h"
#include "tqp/progress.h"
#include "tqp/rng.h"
#include "tqp/tcq.h"


tqp_status tqp_hessian_prepare(double *H, int n, double *mean_diag)
{
    double tr = 0;
    for (int64_t i = 0; i < (int64_t)n * n; i++)
        if (!isfinite(H[i])) return tqp_error_set(TQP_ENONFINITE, "non-finite Hessian entry");
    for (int j = 0; j < n; j++) tr += H[(int64_t)j * n + j];
    *mean_diag = tr / n;
    if (!(*mean_diag > 0))
        return tqp_error_set(TQP_EINPUT, "all-zero (or negative-trace) Hessian");
    for (int j = 0; j < n; j++)
        if (H[(int64_t)j * n + j] == 0) H[(int64_t)j * n + j] = 1.0; /* dead input */
    return TQP_OK;
}

/* One input group's Hessian, ready for its matrices. */
typedef struct {
    int n, g;
    uint64_t seed_in;
    double *H0;       // (n, n) rotated mean Hessian, undamped: the proxy loss's H
    tqp_dfactor f;    // LDLQ: the Cholesky factor C of the damped, rotated H, distributed
    double damp;      // final σ
    int retries;
} group_state;

static void group_free(group_state *gs)
{
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
        tqp_dfactor_load(&gs->f, Hf, sigma * md);
        s = tqp_dfactor_factor(&gs->f, &info);
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

static tqp_status group_load(MPI_Comm comm, const tqp_hfile *hf, int layer, int g, int n,
                             const tqp_quant_options *o, int verbose, group_state *gs)
{
    char what[64];
    snprintf(what, sizeof what, "layer %d %s", layer, tqp_group_name((tqp_group)g));
    int64_t nn = (int64_t)n * n, count = 0;
    gs->n = n, gs->g = g;
    gs->seed_in = tqp_seed_derive(o->seed, (uint64_t)layer, (uint64_t)g);
    gs->H0 = tqp_malloc(sizeof(double) * (size_t)nn);
    double *Hf = NULL, md = 0; /* the matrix to factor when it is not H0 itself */
    tqp_rot rot = {0};
    tqp_status s = gs->H0 ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK) s = tqp_hfile_read(hf, layer, g, n, gs->H0, &count);
    if (s == TQP_OK && count <= 0)
        s = tqp_error_set(TQP_EINPUT, "%s: %s: token count %lld", hf->path, what, (long long)count);
    if (s == TQP_OK) {
        int dead = 0;
        for (int64_t i = 0; i < nn; i++) gs->H0[i] /= (double)count;
        for (int64_t j = 0; j < n; j++) dead |= gs->H0[j * n + j] == 0;
        /* Dead inputs (a zero diagonal) get 1 in the matrix that is factored but not in H0 (the
         * proxy loss's): only then is a second copy made and rotated.  Otherwise the factored
         * matrix is H0 itself, rotated once, and the damping is added in the factor's layout. */
        if (dead && (Hf = tqp_malloc(sizeof(double) * (size_t)nn)) == NULL) s = TQP_ENOMEM;
        if (s == TQP_OK && Hf) memcpy(Hf, gs->H0, sizeof(double) * (size_t)nn);
        if (s == TQP_OK) s = tqp_hessian_prepare(Hf ? Hf : gs->H0, n, &md);
        if (s != TQP_OK && s != TQP_ENOMEM)
            s = tqp_error_set(s, "%s: %s: %s", hf->path, what, tqp_error_message());
    }
    if (s == TQP_OK) s = tqp_rot_create(o->rotation, 1, n, 0, gs->seed_in, &rot);
    if (s == TQP_OK) s = tqp_rot_hessian(&rot, gs->H0);
    if (s == TQP_OK && Hf) s = tqp_rot_hessian(&rot, Hf);
    if (s == TQP_OK && o->rounding == TQP_ROUND_LDLQ) {
        /* the rounding factor Lu (C diag(C)^-1, or C blockdiag(C_ii)^-1 for BlockLDLQ) is handed
         * out panel by panel from the distributed C while the rows are coded */
        s = factor_damped(comm, Hf ? Hf : gs->H0, md, n, o->damp, verbose, what, gs);
    } else {
        gs->damp = o->damp, gs->retries = 0;
    }
    tqp_rot_destroy(&rot);
    free(Hf);
    return s;
}

/* Collective: rows [r0, r1) of the rotated W (scaled here) into codes (uint8, one per weight)
 * and, per row, the pair (proxy loss, w H w^T) in lb.  LDLQ takes the panels of Lu from the
 * distributed factor in the same order on every rank (also on ranks without rows). */
static tqp_status quantize_rows(MPI_Comm comm, group_state *gs, const tqp_quant_options *o,
                                const double *Wt, double scale, int64_t r0, int64_t r1,
                                uint8_t *codes, double *lb)
{
    int n = gs->n, rows = (int)(r1 - r0), ldlq = o->rounding == TQP_ROUND_LDLQ;
    size_t rn = (size_t)rows * n;
    double *X = tqp_malloc(sizeof(double) * (rn + 1)), *A = tqp_malloc(sizeof(double) * (rn + 1));
    double *E = tqp_malloc(sizeof(double) * (rn + 1)), *Xh = tqp_malloc(sizeof(double) * (rn + 1));
    uint32_t *c = tqp_malloc(sizeof(uint32_t) * (rn + 1));
    double *P = ldlq ? tqp_malloc(sizeof(double) * TQP_LDLQ_PANEL * (size_t)n) : NULL;
    double *d = tqp_malloc(sizeof(double) * 2 * (size_t)n);
    tqp_status s = X && A && E && Xh && c && d && (P || !ldlq) ? TQP_OK : TQP_ENOMEM;
    s = tqp_mpi_agree(comm, s);
    if (s == TQP_OK) {
        for (size_t i = 0; i < rn; i++) X[i] = Wt[(size_t)r0 * n + i] / scale;
        memcpy(A, X, sizeof(double) * rn);
    }
    for (int k1 = n; s == TQP_OK && ldlq && k1 > 0;) {
        int k0 = (k1 - 1) / TQP_LDLQ_PANEL * TQP_LDLQ_PANEL;
        s = tqp_dfactor_lu_rows(&gs->f, 1, k0, k1, P);
        if (s == TQP_OK) tqp_ldlq_panel(o->cb, o->bits, P, k1, k0, k1, n, rows, X, A, E, c, Xh);
        k1 = k0;
    }
    if (s == TQP_OK && !ldlq)
        for (size_t i = 0; i < rn; i++) c[i] = o->cb->quantize(X[i], o->bits, &Xh[i]);
    for (size_t i = 0; s == TQP_OK && i < rn; i++) codes[i] = (uint8_t)c[i];
    if (s == TQP_OK) tqp_row_losses(gs->H0, Wt + (size_t)r0 * n, X, Xh, scale, rows, n, lb, d);
    free(X), free(A), free(E), free(Xh), free(c), free(P), free(d);
    return s;
}

typedef struct {
    MPI_Comm comm;
    int rank, P;
    const tqp_model *m;
    const tqp_quant_options *o;
    tqp_qwriter *w;
} qctx;

/* Gather everyone's codes and losses to rank 0, in row order. */
static tqp_status gather_rows(const qctx *q, int64_t m, int n, const uint8_t *codes,
                              const double *lb, uint8_t *all_codes, double *all_lb)
{
    int *cnt = tqp_malloc(sizeof(int) * 4 * (size_t)q->P);
    if (!cnt) return TQP_ENOMEM;
    int *dsp = cnt + q->P, *cnt2 = cnt + 2 * q->P, *dsp2 = cnt + 3 * q->P;
    for (int p = 0; p < q->P; p++) {
        long b, e;
        tqp_partition((long)m, q->P, p, &b, &e);
        cnt[p] = (int)((e - b) * n), dsp[p] = (int)(b * n);
        cnt2[p] = (int)(2 * (e - b)), dsp2[p] = (int)(2 * b);
    }
    int rc = MPI_Gatherv(codes, cnt[q->rank], MPI_UINT8_T, all_codes, cnt, dsp, MPI_UINT8_T, 0,
                         q->comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Gatherv(lb, cnt2[q->rank], MPI_DOUBLE, all_lb, cnt2, dsp2, MPI_DOUBLE, 0, q->comm);
    free(cnt);
    return rc == MPI_SUCCESS ? TQP_OK : tqp_error_set(TQP_EMPI, "quantize: gather failed");
}

/* The rotated weights of matrix `mat` (every rank computes all of them: rotations mix rows). */
static tqp_status rotated_weights(const qctx *q, const tqp_layer_weights *lw, int layer, int mat,
                                  group_state *gs, int64_t m, int n, tqp_rot *rot,
                                  double *Wt, uint64_t *seed_out)
{
    *seed_out = tqp_seed_derive(q->o->seed, (uint64_t)layer, 16u + (uint64_t)mat);
    TQP_CHECK(tqp_rot_create(q->o->rotation, (int)m, n, *seed_out, gs->seed_in, rot));
    const float *W = lw->w[tqp_qmat_tensor(mat)];
    for (size_t i = 0; i < (size_t)m * n; i++) Wt[i] = W[i];
    return tqp_rot_weights(rot, Wt, 0);
}

/* Rank 0: the matrix's record from the gathered (loss, base) pairs. */
static void matrix_info(const qctx *q, int64_t m, int n, uint64_t seed_out, group_state *gs,
                        double scale, double rho, const double *all_lb, double code_bits,
                        tqp_qmat_info *info)
{
    const tqp_quant_options *o = q->o;
    double L = 0, B = 0;
    for (int64_t r = 0; r < m; r++) L += all_lb[2 * r], B += all_lb[2 * r + 1];
    *info = (tqp_qmat_info){.rows = (int)m, .cols = n, .bits = o->bits, .cb = o->cb,
                            .rotation = o->rotation, .rounding = o->rounding,
                            .seed_out = seed_out, .seed_in = gs->seed_in, .scale = scale,
                            .rho = rho, .damp = gs->damp, .damp_retries = gs->retries,
                            .proxy_rel = B > 0 ? L / B : 0, .code_bits = code_bits};
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
    *r0 = b0 * tile;
    *r1 = b1 * tile < m ? b1 * tile : (long)m;
}

/* Trellis: bands of rows [r0, r1) of the scaled rotated W into packed codes and (loss, base)
 * pairs per row. */
/* Packed bytes of the bands covering rows [r0, r1) (r0 at a band start). */
static size_t rows_bytes(const qctx *q, long r0, long r1, int n)
{
    int tile = q->o->cb->tile;
    size_t bytes = 0;
    for (long b = r0; b < r1; b += tile)
        bytes += tqp_tcq_band_bytes(q->o->tcq, (int)(r1 - b < tile ? r1 - b : tile), n);
    return bytes;
}

/* Collective: bands of rows [r0, r1) of the scaled rotated W into packed codes and (loss,
 * base) pairs per row.  Tiles go from the last column block to the first; for each, every rank
 * takes that block's rows of Lu from the distributed factor (BlockLDLQ), then `threads` threads
 * code the tile of each of its bands (a band's result is the same whichever thread codes it, and
 * whatever other rows are coded). */
static tqp_status quantize_bands(const qctx *q, group_state *gs, const double *Wt, double scale,
                                 long r0, long r1, int n, uint8_t *packed, double *lb)
{
    int tile = q->o->cb->tile, threads = q->o->threads > 0 ? q->o->threads : 1;
    int ldlq = q->o->rounding == TQP_ROUND_LDLQ, ntiles = (n + tile - 1) / tile;
    long nb = (r1 - r0 + tile - 1) / tile;
    size_t rn = (size_t)(r1 - r0) * n;
    size_t *off = tqp_malloc(sizeof(size_t) * (size_t)(nb + 1));
    double *X = tqp_malloc(sizeof(double) * (rn + 1)), *A = tqp_malloc(sizeof(double) * (rn + 1));
    double *E = tqp_malloc(sizeof(double) * (rn + 1)), *Xh = tqp_malloc(sizeof(double) * (rn + 1));
    double *P = ldlq ? tqp_malloc(sizeof(double) * (size_t)tile * n) : NULL;
    tqp_status s = off && X && A && E && Xh && (P || !ldlq) ? TQP_OK : TQP_ENOMEM;
    for (long i = 0; s == TQP_OK && i <= nb; i++) /* each band's byte offset */
        off[i] = i ? off[i - 1] + rows_bytes(q, r0 + (i - 1) * tile, r0 + i * tile < r1 ? r0 + i * tile : r1, n) : 0;
    if (s == TQP_OK) s = tqp_tcq_prepare(q->o->tcq, (int)(r1 - r0), n);
    if (s == TQP_OK) {
        for (size_t i = 0; i < rn; i++) X[i] = Wt[(size_t)r0 * n + i] / scale;
        memcpy(A, X, sizeof(double) * rn);
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
        for (long i = 0; i < nb; i++) {
            long b = r0 + i * tile;
            int rows = (int)(r1 - b < tile ? r1 - b : tile);
            size_t o = (size_t)(b - r0) * n;
            tqp_status bs = tqp_tcq_band_tile(q->o->tcq, n, j, rows, X + o, A + o, E + o, Xh + o,
                                              packed + off[i], Pj, c0 + w);
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
    double *d = s == TQP_OK ? tqp_malloc(sizeof(double) * 2 * (size_t)n) : NULL;
    if (s == TQP_OK && !d) s = TQP_ENOMEM;
    if (s == TQP_OK) tqp_row_losses(gs->H0, Wt + (size_t)r0 * n, X, Xh, scale, (int)(r1 - r0), n, lb, d);
    free(off), free(X), free(A), free(E), free(Xh), free(P), free(d);
    return s;
}

static tqp_status gather_bytes(const qctx *q, int64_t m, int n, const uint8_t *mine, size_t len,
                               const double *lb, uint8_t *all, double *all_lb)
{
    int *cnt = tqp_malloc(sizeof(int) * 4 * (size_t)q->P);
    if (!cnt) return TQP_ENOMEM;
    int *dsp = cnt + q->P, *cnt2 = cnt + 2 * q->P, *dsp2 = cnt + 3 * q->P, pos = 0;
    for (int p = 0; p < q->P; p++) {
        long b, e;
        my_rows(q, m, p, &b, &e);
        size_t bytes = rows_bytes(q, b, e, n);
        cnt[p] = (int)bytes, dsp[p] = pos, pos += (int)bytes;
        cnt2[p] = (int)(2 * (e - b)), dsp2[p] = (int)(2 * b);
    }
    int rc = MPI_Gatherv(mine, (int)len, MPI_UINT8_T, all, cnt, dsp, MPI_UINT8_T, 0, q->comm);
    if (rc == MPI_SUCCESS)
        rc = MPI_Gatherv(lb, cnt2[q->rank], MPI_DOUBLE, all_lb, cnt2, dsp2, MPI_DOUBLE, 0, q->comm);
    free(cnt);
    return rc == MPI_SUCCESS ? TQP_OK : tqp_error_set(TQP_EMPI, "quantize: gather failed");
}

static tqp_status quantize_matrix_tcq(const qctx *q, const tqp_layer_weights *lw, int layer,
                                      int mat, group_state *gs, tqp_qmat_info *info)
{
    const tqp_quant_options *o = q->o;
    int64_t mr, nc;
    tqp_layer_tensor_shape(&q->m->cfg, tqp_qmat_tensor(mat), &mr, &nc);
    int n = (int)nc;
    long r0, r1;
    my_rows(q, mr, q->rank, &r0, &r1);
    size_t mn = (size_t)(mr * nc), total = tqp_tcq_matrix_bytes(o->tcq, (int)mr, n);
    size_t mine = rows_bytes(q, r0, r1, n);
    double *Wt = tqp_malloc(sizeof(double) * mn), *lb = tqp_malloc(sizeof(double) * (2 * (size_t)(r1 - r0) + 1));
    uint8_t *packed = tqp_malloc(mine + 1), *all = q->rank == 0 ? tqp_malloc(total) : NULL;
    double *all_lb = q->rank == 0 ? tqp_malloc(sizeof(double) * 2 * (size_t)mr) : NULL;
    tqp_rot rot = {0};
    tqp_status s = Wt && lb && packed && (q->rank || (all && all_lb)) ? TQP_OK : TQP_ENOMEM;
    uint64_t seed_out = 0;
    if (s == TQP_OK) s = rotated_weights(q, lw, layer, mat, gs, mr, n, &rot, Wt, &seed_out);
    double rho = o->rho > 0 ? o->rho : 1.0, scale = 1;
    if (s == TQP_OK) {
        double ss = 0;
        for (size_t i = 0; i < mn; i++) ss += Wt[i] * Wt[i];
        scale = sqrt(ss / (double)mn) / (tqp_tcq_base(o->tcq)->rms * rho);
        if (!(scale > 0) || !isfinite(scale)) scale = 1;
    }
    if (s == TQP_OK) s = quantize_bands(q, gs, Wt, scale, r0, r1, n, packed, lb);
    s = tqp_mpi_agree(q->comm, s);
    if (s == TQP_OK) s = gather_bytes(q, mr, n, packed, mine, lb, all, all_lb);
    if (s == TQP_OK && q->rank == 0) {
        matrix_info(q, mr, n, seed_out, gs, scale, rho, all_lb, 8.0 * (double)total / (double)mn,
                    info);
        s = tqp_qwriter_matrix_packed(q->w, layer, mat, info, all, total, &rot);
    }
    tqp_rot_destroy(&rot);
    free(Wt), free(lb), free(packed), free(all), free(all_lb);
    return tqp_mpi_agree(q->comm, s);
}

static tqp_status quantize_matrix(const qctx *q, const tqp_layer_weights *lw, int layer, int mat,
                                  group_state *gs, tqp_qmat_info *info)
{
    if (q->o->cb->tile) return quantize_matrix_tcq(q, lw, layer, mat, gs, info);
    const tqp_quant_options *o = q->o;
    int64_t mr, nc;
    tqp_layer_tensor_shape(&q->m->cfg, tqp_qmat_tensor(mat), &mr, &nc);
    int n = (int)nc;
    long r0, r1;
    tqp_partition((long)mr, q->P, q->rank, &r0, &r1);
    size_t mn = (size_t)(mr * nc), local = (size_t)(r1 - r0);
    double *Wt = tqp_malloc(sizeof(double) * mn);
    uint8_t *codes = tqp_malloc(local * n + 1);
    double *lb = tqp_malloc(sizeof(double) * (2 * local + 1));
    uint8_t *all_codes = q->rank == 0 ? tqp_malloc(mn) : NULL;
    double *all_lb = q->rank == 0 ? tqp_malloc(sizeof(double) * 2 * (size_t)mr) : NULL;
    uint32_t *codes32 = q->rank == 0 ? tqp_malloc(sizeof(uint32_t) * mn) : NULL;
    tqp_rot rot = {0};
    tqp_status s = Wt && codes && lb && (q->rank || (all_codes && all_lb && codes32))
                       ? TQP_OK
                       : TQP_ENOMEM;
    uint64_t seed_out = 0;
    if (s == TQP_OK) s = rotated_weights(q, lw, layer, mat, gs, mr, n, &rot, Wt, &seed_out);
    double rho = o->rho > 0 ? o->rho : o->cb->default_rho(o->bits), scale = 1;
    if (s == TQP_OK) scale = tqp_quant_scale(Wt, mn, o->cb, o->bits, rho);
    s = tqp_mpi_agree(q->comm, s);
    if (s == TQP_OK) s = quantize_rows(q->comm, gs, o, Wt, scale, r0, r1, codes, lb);
    if (s == TQP_OK) s = gather_rows(q, mr, n, codes, lb, all_codes, all_lb);
    if (s == TQP_OK && q->rank == 0) {
        matrix_info(q, mr, n, seed_out, gs, scale, rho, all_lb, o->bits, info);
        for (size_t i = 0; i < mn; i++) codes32[i] = all_codes[i];
        s = tqp_qwriter_matrix(q->w, layer, mat, info, codes32, &rot);
    }
    tqp_rot_destroy(&rot);
    free(Wt), free(codes), free(lb), free(all_codes), free(all_lb), free(codes32);
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

static tqp_status quantize_layer(const qctx *q, const tqp_hfile *hf, int layer,
                                 tqp_qmat_info *infos, tqp_progress *pr, double *done)
{
    const tqp_config *c = &q->m->cfg;
    tqp_layer_weights lw;
    TQP_CHECK(tqp_mpi_agree(q->comm, tqp_model_layer_load(q->m, layer, &lw)));
    tqp_status s = TQP_OK;
    if (q->rank == 0) s = tqp_qwriter_layer_begin(q->w, q->m, layer);
    s = tqp_mpi_agree(q->comm, s);
    for (int g = 0; g < TQP_GROUP_COUNT && s == TQP_OK; g++) {
        group_state gs = {0};
        int n = tqp_group_width(c, (tqp_group)g);
        s = tqp_mpi_agree(q->comm, group_load(q->comm, hf, layer, g, n, q->o,
                                               q->rank == 0 && q->o->progress, &gs));
        for (int i = 0; i < TQP_QMATS && s == TQP_OK; i++) {
            if (tqp_qmat_group(i) != g) continue;
            s = quantize_matrix(q, &lw, layer, i, &gs, &infos[i]);
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
            tqp_progress_update(pr, *done, extra);
        }
        group_free(&gs);
    }
    tqp_layer_weights_release(&lw);
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
                layer + 1, q->m->cfg.n_layers, weights, seconds,
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

tqp_status tqp_quantize_run(MPI_Comm comm, const tqp_model *m, const tqp_hfile *hf,
                            const tqp_quant_options *o, tqp_qwriter *w, tqp_quant_result *r)
{
    memset(r, 0, sizeof *r);
    qctx q = {.comm = comm, .m = m, .o = o, .w = w};
    MPI_Comm_rank(comm, &q.rank);
    MPI_Comm_size(comm, &q.P);
    const tqp_config *c = &m->cfg;
    r->n_mats = c->n_layers * TQP_QMATS;
    r->mats = tqp_calloc((size_t)r->n_mats, sizeof *r->mats);
    unsigned char *keep = tqp_calloc((size_t)c->n_layers + 1, 1);
    TQP_CHECK(tqp_mpi_agree(comm, r->mats && keep ? TQP_OK : TQP_ENOMEM));
    if (q.rank == 0)
        for (int l = 0; l < c->n_layers; l++) keep[l] = w->complete || w->committed[l];
    MPI_Bcast(keep, c->n_layers, MPI_UNSIGNED_CHAR, 0, comm);
    double lw = (double)layer_weights(c), todo = 0;
    for (int l = 0; l < c->n_layers; l++) todo += keep[l] ? 0 : lw;
    double t0 = tqp_now(), done = 0;
    tqp_progress pr;
    tqp_progress_init(&pr, "quantize", todo, "weights", q.rank == 0 && o->progress);
    tqp_status s = TQP_OK;
    for (int l = 0; l < c->n_layers && s == TQP_OK; l++) {
        tqp_qmat_info *infos = r->mats + (size_t)l * TQP_QMATS;
        if (keep[l]) {
            if (q.rank == 0) s = tqp_qwriter_layer_infos(w, l, infos);
            s = tqp_mpi_agree(comm, s);
            if (s == TQP_OK) layer_done(&q, l, infos, 0, lw, 0, 0, 1);
            continue;
        }
        double tl = tqp_now();
        s = quantize_layer(&q, hf, l, infos, &pr, &done);
        double el = tqp_now() - t0;
        if (s == TQP_OK)
            layer_done(&q, l, infos, tqp_now() - tl, lw, el, done > 0 ? el * (todo - done) / done : 0, 0);
    }
    free(keep);
    tqp_progress_finish(&pr, done, 0);
    TQP_CHECK(s);
    result_summarize(r, m, o);
    r->seconds = tqp_now() - t0;
    return TQP_OK;
}

void tqp_quant_result_free(tqp_quant_result *r)
{
    free(r->mats);
    memset(r, 0, sizeof *r);
}
