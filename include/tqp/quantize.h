/* The quantization phase (ALGORITHMS.md sections 2-5): for every layer and linear matrix,
 * Hessian -> damping -> rotation -> ScaLAPACK Cholesky -> LDLQ or nearest rounding with the
 * chosen codebook -> packed codes in the quantized file (qfile.h).
 *
 * Work split (nothing of size n x n or m x n is held whole by any rank): each rank reads its
 * block of rows of the group's Hessian (include/tqp/dist.h), checks it (the diagonal is
 * gathered so every rank sees the same mean), rotates it distributed (rows in place, columns
 * after a distributed transpose) and sends the lower triangle to its owners in ScaLAPACK's
 * block-cyclic layout, where pdpotrf factors it; the factor stays there and its rows are
 * handed out panel by panel while the rows of W are coded.  Each rank reads a block of rows of
 * W and the rotation of W is distributed the same way; the rows of the rotated W are then
 * split over the ranks in contiguous blocks, each row quantized on its own (quant.h,
 * invariant 3) or, for the trellis, each band of 16 rows (tcq.h; bands also spread over
 * threads).  The proxy loss streams the rotated H in panels to every rank.  Codes and per-row
 * losses are gathered to rank 0, which writes the file.  Every value is computed by a fixed
 * sequence of operations whatever the rank count, so the output is bit-identical for any rank
 * count.  Memory per rank: about 8 (2 n^2 / P + 5 m n / P) bytes for the largest matrix (m
 * outputs, n inputs), plus the codes on rank 0; see docs/quantize.md.
 *
 * Seeds: the input-side transform V of a matrix comes from (run seed, layer, input group), so
 * q, k, v (and gate, up) share one rotated Hessian and one factorization; the output side U
 * from (run seed, layer, matrix).
 */
#ifndef TQP_QUANTIZE_H
#define TQP_QUANTIZE_H

#include <mpi.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/hstore.h"
#include "tqp/model.h"
#include "tqp/qfile.h"
#include "tqp/quant.h"
#include "tqp/rot.h"

typedef struct {
    int bits;
    tqp_rot_kind rotation;
    tqp_rounding rounding;
    const tqp_codebook *cb;
    struct tqp_tcq *tcq; // trellis family when cb is the trellis (borrowed), else NULL
    double damp;   // relative damping σ (ALGORITHMS.md section 2)
    double rho;    // scale ρ; 0: the codebook's default for `bits`; TQP_RHO_AUTO: per matrix,
                   // the candidate of tqp_quant_rho_candidates with the least proxy loss
    uint64_t seed; // run seed
    int progress;  // one line per matrix on rank 0
    int threads;   // threads per rank for the trellis bands (<= 1: one)
    int teams;     // teams of ranks quantizing different layers at once (<= 0: the default)
} tqp_quant_options;

/* Ranks per team by default: with more ranks than this, tqp_quantize_run splits them into
 * teams of about this size (at most one per layer), each team quantizing its own layers. */
enum { TQP_TEAM_RANKS = 64 };
/* The number of teams tqp_quantize_run uses for `teams` asked (<= 0: P / TQP_TEAM_RANKS) on
 * P ranks with `layers` layers to quantize: at least 1, at most P and at most `layers`. */
int tqp_quant_teams(int teams, int P, int layers);

enum { TQP_DAMP_MAX_RETRIES = 12 }; /* σ doubles at most this many times */

/* --scale-rho auto: each matrix is rounded at ρ = the default times each factor below and keeps
 * the one of least proxy loss (the first of equals).  The losses are gathered in row order and
 * summed in that order on every rank, so the choice does not depend on the rank count. */
#define TQP_RHO_AUTO (-1.0)
enum { TQP_RHO_CANDIDATES = 5 };
extern const double tqp_rho_factors[TQP_RHO_CANDIDATES];

typedef struct {
    tqp_qmat_info *mats; // (n_layers * TQP_QMATS) on rank 0, owned
    int n_mats;
    double proxy_mean;              // mean relative proxy loss over matrices
    double bpw_code, bpw_total;     // weighted by weights
    int64_t weights;                // quantized weights
    int64_t plain_params;           // unquantized parameters (embeddings, norms, head)
    double seconds;
    double largest_alloc;           // largest single allocation of any rank in the phase, bytes
} tqp_quant_result;

/* Collective.  Quantize every layer of m with the Hessians of hf; rank 0 writes w (opened by
 * the caller on rank 0; ignored elsewhere), committing each layer as it completes.  With T
 * teams (tqp_quant_teams), the ranks are split into T contiguous teams; the layers to do are
 * dealt round-robin, team t taking the t-th of each round of T, and a team's first rank writes
 * its layers' files (a worker writer), which rank 0 records at the end of the round.  A layer's
 * bytes do not depend on the team that makes it or its size, so the output does not depend on
 * T or P.  Layers
 * already committed in w (a resumed run) are skipped and their stored information read back,
 * so *r describes the whole model either way. */
tqp_status tqp_quantize_run(MPI_Comm comm, const tqp_model *m, const tqp_hfile *hf,
                            const tqp_quant_options *o, tqp_qwriter *w, tqp_quant_result *r);
void tqp_quant_result_free(tqp_quant_result *r);

/* The steps of a group and of a matrix, in order (a group's three, then each matrix's four). */
typedef enum {
    TQP_QSTEP_H_READ,     // my rows of the group's Hessian read and checked
    TQP_QSTEP_H_ROTATED,  // ... rotated (distributed)
    TQP_QSTEP_FACTORED,   // damped Cholesky factor, block-cyclic (LDLQ only; else a no-op)
    TQP_QSTEP_W_ROTATED,  // my rows of the rotated W
    TQP_QSTEP_ROUNDED,    // my rows coded, their proxy loss terms computed
    TQP_QSTEP_GATHERED,   // codes and losses on rank 0
    TQP_QSTEP_WRITTEN,    // the matrix written by rank 0 (when there is a writer)
    TQP_QSTEPS
} tqp_qstep;

/* Where the quantization reads its inputs: by rows, each rank its own (so no rank reads a whole
 * matrix), and an optional hook called on every rank after each step (for measurements).
 * tqp_quantize_run reads the Hessian file and the model through one of these. */
typedef struct {
    /* rows [r0, r1) of the group's summed Hessian (n, n) into H, and its token count */
    tqp_status (*hessian_rows)(void *ctx, int layer, int group, int n, int r0, int r1, double *H,
                               int64_t *count);
    /* rows [r0, r1) of matrix mat (tqp_qmat order) of the layer as fp64 */
    tqp_status (*weight_rows)(void *ctx, int layer, int mat, int64_t r0, int64_t r1, double *W);
    void (*step)(void *ctx, tqp_qstep step); // may be NULL
    void *ctx;
    const char *hessian_path; // for messages
} tqp_qsource;

/* Collective: matrix mat of layer 0 of a model shaped cfg, from src, with its group's Hessian,
 * exactly as tqp_quantize_run does it, but nothing is written (rank 0 gets *info).  rows_limit
 * > 0: each rank codes only its first rows_limit rows (whole bands for the trellis), the others
 * are zeros; every buffer keeps its full size.  For tqp bench quantize-memory. */
tqp_status tqp_quantize_matrix_only(MPI_Comm comm, const tqp_config *cfg, const tqp_qsource *src,
                                    const tqp_quant_options *o, int mat, long rows_limit,
                                    tqp_qmat_info *info);


#endif
