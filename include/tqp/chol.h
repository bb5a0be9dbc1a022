/* Distributed Cholesky factorization of a symmetric positive definite matrix with ScaLAPACK.
 *
 * The input and the factor are whole matrices replicated on every rank; only the factorization
 * itself is distributed (pdpotrf on a 2-D block-cyclic BLACS grid over the ranks of the
 * communicator).  Assembling the factor is exact: each element of L is contributed by exactly
 * one rank and summed with zeros, so every rank ends with the same bits.  Only the lower
 * triangle of A (i >= j in row-major) is read.
 *
 * Not done here: pivoting, damping or any repair of a matrix that is not positive definite
 * (that is reported, never fixed), and distributed input or output (memory per rank is two
 * n x n matrices plus about n^2 / P for the local part).
 */
#ifndef TQP_CHOL_H
#define TQP_CHOL_H

#include <mpi.h>

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

/* The grid shape used for P ranks. */
void tqp_chol_grid_shape(int P, int *pr, int *pc);

#endif
