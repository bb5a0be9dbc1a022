/* Exact, rank-count-invariant accumulation of H = sum over tokens of x x^T, distributed by rows.
 *
 * Invariants (why the result is bit-identical for any number of ranks and any arrival order):
 *  1. The unit of rounding is one window: each window's contribution to a row panel is one
 *     dgemm of a fixed shape (TQP_HACC_PANEL rows x ctx x panel end), the same whatever rank
 *     computes it.
 *  2. That contribution is rounded once to fixed point, value * 2^64, in a 128-bit integer.
 *  3. Integer addition is associative and commutative, so summing the windows in any order, in
 *     any grouping and with any MPI reduction tree gives the same integers.
 *  4. Converting the final integers to float64 is a deterministic function.
 *  5. Threads split a flush by those blocks (disjoint parts of the sums), each computed by one
 *     thread with single-threaded BLAS calls of invariant 1, so the thread count changes
 *     nothing.
 * The fixed point covers |H_ij| < 2^63 with a resolution of 2^-64; a sum that could leave that
 * range is an error (checked per batch from the windows' diagonal maxima), never a wrap-around.
 *
 * Layout: rows are split over the ranks in contiguous blocks of whole panels, sized so that each
 * rank owns about the same number of lower-triangle cells; a rank holds only its rows, columns
 * 0 .. end of its block, so memory per rank for the result is about n^2 / (2P) cells.  The lower
 * triangle is authoritative; the full symmetric matrix is produced on output.
 */
#ifndef TQP_HACC_H
#define TQP_HACC_H

#include <mpi.h>
#include <stdint.h>

#include "tqp/error.h"

enum { TQP_HACC_PANEL = 512, TQP_HACC_COLS = 1024, TQP_HACC_FRAC_BITS = 64 };
/* Cells (int128) per MPI_Reduce call of the reductions to the owners: MPI's temporary for a
 * user-defined sum is one message, so a message of at most 4 MiB stays in reused memory. */
enum { TQP_HACC_REDUCE_CELLS = 1 << 18 };

typedef struct tqp_hacc tqp_hacc;

/* Collective.  An accumulator for n x n sums; windows of up to `max_batch_tokens` tokens in
 * total are staged between flushes.  A flush's products and roundings are split over `threads`
 * OpenMP threads by blocks of rows and columns (the integers never depend on the split). */
tqp_status tqp_hacc_create(MPI_Comm comm, int n, int64_t max_batch_tokens, int threads,
                           tqp_hacc **out);
void tqp_hacc_destroy(tqp_hacc **h);
/* Local.  Back to empty sums (as created), keeping the memory: the next layer's accumulator. */
void tqp_hacc_reset(tqp_hacc *h);

/* Local.  Stage one window's inputs x (ntok, n) row-major fp32 for the next flush.  `what`
 * names the matrix in errors (a non-finite value is TQP_ENONFINITE). */
tqp_status tqp_hacc_stage(tqp_hacc *h, const float *x, int ntok, const char *what);

/* Local, thread-safe for distinct slots and non-overlapping token ranges: stage one window in
 * slot `slot` (0 .. min(max_batch_tokens, 1024) - 1) at token `offset` of the stage, so that
 * threads forwarding different windows stage them concurrently.  Do not mix with
 * tqp_hacc_stage between two flushes.  The flush visits the slots in order. */
tqp_status tqp_hacc_stage_at(tqp_hacc *h, int slot, int64_t offset, const float *x, int ntok,
                             const char *what);

/* Collective.  Add every rank's staged windows to the distributed sums and clear the stage.
 * Every rank must call it the same number of times (with nothing staged if need be). */
tqp_status tqp_hacc_flush(tqp_hacc *h, const char *what);

/* Collective.  Convert to float64: afterwards tqp_hacc_rows and tqp_hacc_colsum are valid. */
tqp_status tqp_hacc_finalize(tqp_hacc *h);

/* This rank's rows [*r0, *r1) of H, each with columns 0 .. *r1 - 1 (row-major, borrowed);
 * the block [r0, r1) x [r0, r1) is exactly symmetric. */
const double *tqp_hacc_rows(const tqp_hacc *h, int64_t *r0, int64_t *r1);
/* Sum over all tokens of x (n), and the token count, on every rank (borrowed). */
const double *tqp_hacc_colsum(const tqp_hacc *h);
int64_t tqp_hacc_count(const tqp_hacc *h);
/* Floating-point operations spent in the accumulation products so far on this rank. */
double tqp_hacc_flops(const tqp_hacc *h);
/* Local.  Seconds spent in the reductions to the owners since the last reset, and their bytes
 * (each owner's int128 cells, counted once per flush) in *bytes if not NULL. */
double tqp_hacc_reduce_seconds(const tqp_hacc *h, double *bytes);
/* Local.  Whether the reductions go in two levels (inside each node, then across nodes). */
int tqp_hacc_two_level(const tqp_hacc *h);

/* Rows [r0, r1) owned by `rank` of P for an n x n matrix (whole panels, contiguous, about
 * n^2 / (2P) lower-triangle cells each). */
void tqp_hacc_owner_rows(int n, int P, int rank, int64_t *r0, int64_t *r1);

#endif
