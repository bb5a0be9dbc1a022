/* Distributed Cholesky factorization of a symmetric positive definite matrix with ScaLAPACK.
 *
 * Two interfaces.  tqp_chol_factor takes and returns whole matrices replicated on every rank
 * (tests and benchmarks; memory per rank two n x n matrices plus about n^2 / P).  tqp_dfactor
 * (what the quantization uses) loads the matrix from row-distributed rows or a replicated copy,
 * keeps the factor in ScaLAPACK's 2-D block-cyclic layout and hands out rows of the rounding
 * factor panel by panel: about n^2 / P per rank.  The factorization itself is pdpotrf on a 2-D
 * block-cyclic BLACS grid over the ranks of the communicator.  Assembling is exact: each
 * element is contributed by exactly one rank and summed with zeros, so every rank ends with the
 * same bits.  Only the lower triangle of A (i >= j in row-major) is read.
 *
 * Not done here: pivoting, damping or any repair of a matrix that is not positive definite
 * (that is reported, never fixed).
 */
#ifndef TQP_CHOL_H
#define TQP_CHOL_H

#include <mpi.h>
#include <stdint.h>

#include "tqp/error.h"

/* Default block size.  PBLAS splits its triangular solves and updates into pieces of pilaenv
 * (32) columns; with nb <= 32 every panel is one piece on every grid, so every element of the
 * factor receives the same operations for any rank count, and the reproducible BLAS
 * (include/tqp/rblas.h) computes each of them the same way whatever the shape of the local
 * call: the factor is bit-identical for any rank count on any CPU.  A wider block is refused
 * (measured: nb = 48 and 64 give different factors on different grids). */
enum { TQP_CHOL_DEFAULT_NB = 32 };

/* Collective on comm.  A: (n, n) row-major symmetric fp64, identical on every rank (borrowed).
 * On success L: (n, n) row-major fp64 (caller-allocated) holds the lower Cholesky factor,
 * A = L L^T, with zeros above the diagonal, identical (bit for bit) on every rank.
 * Computed with ScaLAPACK pdpotrf on a 2-D BLACS grid built from the ranks of comm
 * (pr x pc with pr <= pc, pr*pc = P, as square as possible; e.g. 1->1x1, 2->1x2, 4->2x2,
 * 6->2x3), block size nb (nb <= 0 means TQP_CHOL_DEFAULT_NB; wider than PBLAS's internal block:
 * TQP_EINPUT).  ScaLAPACK's local BLAS calls go to the reproducible BLAS; if this executable
 * does not bind them there, or pdpotrf made no call to it, TQP_EINTERNAL.  Each rank copies its block-cyclic
 * local part out of A, factors, then the factor is assembled on every rank by an MPI_Allreduce
 * (sum) of buffers where each element is contributed by exactly one rank (so the result is
 * exact).  If A is not positive definite, returns TQP_ENUMERIC with *info set to the pdpotrf
 * info (> 0: the order of the leading minor that is not positive definite); every rank returns
 * the same status.  *info = 0 on success. */
tqp_status tqp_chol_factor(MPI_Comm comm, int n, const double *A, double *L, int nb, int *info);

/* A factor that stays distributed: the lower Cholesky factor C of an (n, n) matrix in
 * ScaLAPACK's 2-D block-cyclic layout over the ranks of comm (the same grid, block size and
 * reproducible arithmetic as tqp_chol_factor, so the same bits), from which the rows of the
 * rounding factor Lu are handed out panel by panel.  Memory per rank: about n^2 / P doubles for
 * the local part, plus n * tile doubles of diagonal blocks once rows are asked for. */
typedef struct tqp_dfactor {
    MPI_Comm comm;
    int n, nb;
    int grid;                        // a BLACS grid is open (tqp_dfactor_close frees it)
    int sys, ctxt, pr, pc, myr, myc; // BLACS system handle, grid, my place (myr < 0: outside)
    int mloc, nloc, lld;             // my local rows and columns, leading dimension
    double *a;                       // (lld, nloc) column-major local part
    int diag_tile;                   // tile of the cached diagonal blocks (0: none cached)
    double *diag;                    // (n, diag_tile) row-major diagonal blocks of C
} tqp_dfactor;

/* Collective: the grid and the local part for order n, block size nb (<= 0: the default). */
tqp_status tqp_dfactor_open(MPI_Comm comm, int n, int nb, tqp_dfactor *f);
/* Local: my part <- the lower triangle of A (n, n) row-major, identical on every rank, plus
 * shift on the diagonal (the upper triangle is not read). */
void tqp_dfactor_load(tqp_dfactor *f, const double *A, double shift);
/* Collective: the same from a row-distributed A (include/tqp/dist.h: offsets off, this rank's
 * rows Ar): the lower triangle of each rank's rows goes to the ranks that own it in the
 * block-cyclic layout (only values move, so the local parts are those of tqp_dfactor_load). */
tqp_status tqp_dfactor_load_rows(tqp_dfactor *f, const int64_t *off, const double *Ar,
                                 double shift);
/* Collective: factor the loaded matrix in place (pdpotrf on the reproducible BLAS).  Not
 * positive definite: TQP_ENUMERIC with *info the order of the first minor that is not (the same
 * on every rank). */
tqp_status tqp_dfactor_factor(tqp_dfactor *f, int *info);
/* Collective: P (r1 - r0, r1) row-major <- rows [r0, r1) of the rounding factor, columns
 * [0, r1), after tqp_dfactor_factor:
 *   tile 1:  Lu = C diag(C)^-1 (LDLQ): Lu[i][k] = C[i][k] / C[k][k], 1 on the diagonal;
 *   tile t:  Lu = C blockdiag(C_bb)^-1 with t x t diagonal blocks (BlockLDLQ), each row's
 *            block b solved with tqp_solve_block_row; the identity on the diagonal blocks.
 * Zeros above the diagonal.  t must divide nb, and r0 be a multiple of t.  Every element is
 * computed by one rank and summed with zeros, so every rank gets the same bits. */
tqp_status tqp_dfactor_lu_rows(tqp_dfactor *f, int tile, int r0, int r1, double *P);
/* Collective: L (n, n) row-major <- C on every rank (zeros above the diagonal). */
tqp_status tqp_dfactor_gather(tqp_dfactor *f, double *L);
/* Frees the grid and the buffers; a zeroed (never opened) tqp_dfactor is left as it is. */
void tqp_dfactor_close(tqp_dfactor *f);

/* x (w) <- x C_bb^-1 for the lower triangular C_bb (w, w) row-major with leading dimension ld:
 * unknowns from last to first, each t = x_j, then t = fma(-x_k, C[k][j], t) for k from w-1 down
 * to j+1, then x_j = t / C[j][j].  The one definition of a BlockLDLQ row solve. */
void tqp_solve_block_row(const double *Cbb, int ld, int w, double *x);

/* The grid shape used for P ranks. */
void tqp_chol_grid_shape(int P, int *pr, int *pc);

#endif
