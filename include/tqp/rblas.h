/* Reproducible local BLAS: the double-precision BLAS routines that ScaLAPACK's factorization
 * calls, computed by TQP itself in one fixed order per output element.
 *
 * Why.  pdpotrf hands each rank's local pieces of the matrix to the BLAS (dgemm, dsyrk, dtrsm,
 * dgemv, ddot, dscal, daxpy, dcopy).  How a piece is cut depends on the grid, so the same
 * element of the factor is computed by calls of different shapes, at a different place inside
 * the call, and on 1x1 grids even by another PBLAS algorithm (dgemm into a work buffer and an
 * add, where other grids call dsyrk on the matrix itself).  A tuned BLAS rounds such an element
 * differently depending on the call's shape and the element's place in it (OpenBLAS's AVX-512
 * kernels do: small-matrix paths chosen by size, edge kernels), so the factor changed with the
 * rank count.  Here every output element is a function of the mathematical operands only:
 *
 *   gemm, syrk, gemv   acc = 0; for k ascending: acc = fma(op(A)_ik, op(B)_kj, acc);
 *                      c = (alpha == 0 or K == 0) ? beta*c : alpha*acc + beta*c
 *                      (beta == 0: alpha*acc, c not read; the sum of two rounded products)
 *   dot                acc = 0; for i ascending: acc = fma(x_i, y_i, acc)
 *   trsm               B <- alpha*B (alpha != 1), then for each unknown in the order it can be
 *                      solved: t = b; for each earlier-solved unknown x_k, in solving order:
 *                      t = fma(-x_k, T_k, t); x = t / T_diag (t with a unit diagonal)
 *   axpy, scal, copy   y = fma(alpha, x, y); x = alpha*x; y = x
 *
 * whatever the shape of the call, the place of the element in it, the transposition flags or
 * the instruction set (the AVX2+FMA kernel computes the same fma chain in its lanes as the
 * plain C reference; fma is correctly rounded, so both give the same bits).  Two presentations
 * of one operation (dgemm with beta = 0 followed by an add, or dsyrk on the matrix; dtrsm on
 * L^T or on an upper copy) give the same bits.
 *
 * How ScaLAPACK gets them.  This file's module defines the Fortran entry points dgemm_,
 * dsyrk_, dtrsm_, dgemv_, ddot_, dscal_, daxpy_ and dcopy_ in every TQP executable.  The
 * dynamic linker binds a shared library's references to the first definition in the global
 * scope, which is the executable's, so libscalapack's calls come here and never reach OpenBLAS
 * (TQP's own code calls OpenBLAS through the cblas_* entry points, which stay OpenBLAS's).
 * tqp_rblas_bound() checks the binding; tqp_chol_factor() refuses to run without it and
 * checks after each factorization that the calls did arrive.
 *
 * Not done here: complex or single-precision routines; the level-1/2 routines are plain C.
 */
#ifndef TQP_RBLAS_H
#define TQP_RBLAS_H

#include <stdint.h>

/* Kernel for the level-3 products.  AUTO: AVX2+FMA where the CPU has both, else REF. */
typedef enum { TQP_RBLAS_AUTO = 0, TQP_RBLAS_REF, TQP_RBLAS_AVX2 } tqp_rblas_kernel;

/* Select the kernel (process-wide; tests and benchmarks).  Returns the kernel that will run:
 * asking for AVX2 on a CPU without it gives REF. */
tqp_rblas_kernel tqp_rblas_select(tqp_rblas_kernel k);
/* The kernel in use (the first call resolves AUTO, or TQP_RBLAS_KERNEL=ref from the
 * environment: the plain C reference, for tests). */
tqp_rblas_kernel tqp_rblas_active(void);
const char *tqp_rblas_kernel_name(tqp_rblas_kernel k);

/* Calls received through the Fortran entry points since the process started. */
typedef struct {
    int64_t gemm, syrk, trsm, gemv, dot, axpy, scal, copy;
} tqp_rblas_counts;
void tqp_rblas_get_counts(tqp_rblas_counts *c);

/* 1 when the process's dgemm_, dsyrk_, dtrsm_, dgemv_ and ddot_ symbols resolve to this
 * module (so ScaLAPACK calls them), 0 otherwise. */
int tqp_rblas_bound(void);

/* Benchmarks only: forward the Fortran entry points to the next definition (the system BLAS)
 * instead, to time ScaLAPACK with it on the same data.  Returns 0 if that BLAS was not found.
 * Output computed this way is not rank-count invariant. */
int tqp_rblas_passthrough(int on);

/* The operations themselves, column-major with Fortran semantics (ta, tb: 'N' or 'T';
 * uplo 'L' or 'U'; side 'L' or 'R'; diag 'N' or 'U'). */
void tqp_rblas_dgemm(char ta, char tb, int m, int n, int k, double alpha, const double *A, int lda,
                     const double *B, int ldb, double beta, double *C, int ldc);
void tqp_rblas_dsyrk(char uplo, char trans, int n, int k, double alpha, const double *A, int lda,
                     double beta, double *C, int ldc);
void tqp_rblas_dtrsm(char side, char uplo, char ta, char diag, int m, int n, double alpha,
                     const double *A, int lda, double *B, int ldb);
void tqp_rblas_dgemv(char ta, int m, int n, double alpha, const double *A, int lda,
                     const double *x, int incx, double beta, double *y, int incy);
double tqp_rblas_ddot(int n, const double *x, int incx, const double *y, int incy);

#endif
