/* The quantization phase (ALGORITHMS.md sections 2-5): for every layer and linear matrix,
 * Hessian -> damping -> rotation -> ScaLAPACK Cholesky -> LDLQ or nearest rounding with the
 * chosen codebook -> packed codes in the quantized file (qfile.h).
 *
 * Work split: every rank reads the group's Hessian and computes the same rotated, damped matrix
 * (deterministic, identical bytes); the Cholesky factor is computed with pdpotrf on a 2-D grid
 * of all ranks and assembled on every rank; the rows of the rotated W are split over the ranks
 * in contiguous blocks, each row quantized on its own (quant.h, invariant 3) or, for the
 * trellis, each band of 16 rows (tcq.h; bands also spread over threads), and codes and per-row
 * losses are gathered to rank 0, which writes the file.  Hence the output is
 * bit-identical for any rank count.  Memory per rank: about 4 n^2 + 2 m n doubles for the
 * largest matrix (m outputs, n inputs); see docs/quantize.md.
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
    double rho;    // scale ρ; <= 0: the codebook's default for `bits` (trellis: 1)
    uint64_t seed; // run seed
    int progress;  // one line per matrix on rank 0
    int threads;   // threads per rank for the trellis bands (<= 1: one)
} tqp_quant_options;

enum { TQP_DAMP_MAX_RETRIES = 12 }; /* σ doubles at most this many times */

typedef struct {
    tqp_qmat_info *mats; // (n_layers * TQP_QMATS) on rank 0, owned
    int n_mats;
    double proxy_mean;              // mean relative proxy loss over matrices
    double bpw_code, bpw_total;     // weighted by weights
    int64_t weights;                // quantized weights
    int64_t plain_params;           // unquantized parameters (embeddings, norms, head)
    double seconds;
} tqp_quant_result;

/* Collective.  Quantize every layer of m with the Hessians of hf; rank 0 writes w (opened by
 * the caller on rank 0; ignored elsewhere), committing each layer as it completes.  Layers
 * already committed in w (a resumed run) are skipped and their stored information read back,
 * so *r describes the whole model either way. */
tqp_status tqp_quantize_run(MPI_Comm comm, const tqp_model *m, const tqp_hfile *hf,
                            const tqp_quant_options *o, tqp_qwriter *w, tqp_quant_result *r);
void tqp_quant_result_free(tqp_quant_result *r);

/* Damping (section 2) of a mean Hessian H (n, n): dead inputs (H_jj = 0) get H_jj = 1;
 * returns mean(diag H) of the input in *mean_diag.  A non-finite entry or an all-zero H is an
 * error whose message is completed by the caller. */
tqp_status tqp_hessian_prepare(double *H, int n, double *mean_diag);

#endif
