/* Row-distributed dense matrices: the layout in which the quantization phase holds a group's
 * Hessian and a matrix's rotated weights, so that no rank holds a whole n x n or m x n matrix.
 *
 * A row-distributed (m, n) matrix is given by offsets off[0 .. P] (off[0] = 0, off[P] = m,
 * non-decreasing): rank p holds rows [off[p], off[p+1]) row-major, (off[p+1] - off[p]) x n
 * doubles.  Everything here moves or combines values in an order fixed by the matrix, never by
 * the rank count: a transpose only moves values, and the sums below run in global index order,
 * so their results are the same bits for any P. */
#ifndef TQP_DIST_H
#define TQP_DIST_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"

/* off (P + 1) <- the offsets of tqp_partition(n, P, .). */
void tqp_dist_offsets(int64_t n, int P, int64_t *off);

/* Collective: each rank sends scount[q] doubles from sbuf + sdispl[q] to rank q and receives
 * rcount[q] doubles from q into rbuf + rdispl[q] (rcount[q] must equal q's scount[me]).  64-bit
 * counts: messages are cut into pieces an MPI count can hold. */
tqp_status tqp_dist_alltoallv(MPI_Comm comm, const double *sbuf, const int64_t *scount,
                              const int64_t *sdispl, double *rbuf, const int64_t *rcount,
                              const int64_t *rdispl);

/* Collective: T = A^T.  A (m, n) row-distributed by ra (this rank's rows in A); T (n, m)
 * row-distributed by rt (offsets over n; this rank's rows of A^T, m columns each, into T).
 * Besides A and T, one block for one peer each way (about 1/P of A). */
tqp_status tqp_dist_transpose(MPI_Comm comm, int64_t m, int64_t n, const int64_t *ra,
                              const int64_t *rt, const double *A, double *T);

/* Collective: *ss (on every rank) <- the sum of x[i]^2 over the concatenation of every rank's x
 * in rank order, accumulated left to right from 0 in one chain: each rank continues the
 * running sum of the rank before it.  The same bits as one loop over the whole vector. */
tqp_status tqp_dist_sumsq(MPI_Comm comm, const double *x, size_t count, double *ss);

/* Collective: the proxy loss terms of `rows` local rows against a row-distributed symmetric H
 * (n, n; offsets off, this rank's rows Hr): per row r,
 *   lb[2r] = D_r H D_r^T,   lb[2r + 1] = W_r H W_r^T
 * (D: the rows' errors, already scaled).  H reaches every rank in panels of rows (broadcast by
 * their owners); y_i = H_i . v is an fma chain over the columns in order (the reproducible
 * dgemm), and the form an fma chain of v_i y_i over i in order: the same bits for any rank
 * count, panel size and CPU.  Memory: one panel of 32 rows of H, and the reproducible BLAS's
 * packing of 32 + 64 rows of n (the local rows go through in blocks of 64). */
tqp_status tqp_dist_row_losses(MPI_Comm comm, const int64_t *off, const double *Hr, int n,
                               int rows, const double *D, const double *W, double *lb);

#endif
