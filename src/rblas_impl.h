/* Internal interface between rblas.c and its SIMD kernel (rblas_avx2.c).
 *
 * A level-3 product is computed in tiles of RB_MR x RB_NR elements.  A tile's operands are
 * read in place or from a zero-padded copy: element (r, k) of the A strip is a[k * as + r],
 * element (k, c) of the B panel is b[k * bsk + c * bsc].  Every kernel computes
 * acc[c * RB_MR + r] = fma chain over k = 0 .. K-1 of a(r, k) * b(k, c), starting from +0, in
 * ascending k (see include/tqp/rblas.h).  Compiled with -ffp-contract=off: the only fused
 * operations are the explicit ones. */
#ifndef TQP_RBLAS_IMPL_H
#define TQP_RBLAS_IMPL_H

enum { RB_MR = 8, RB_NR = 4 };

/* acc (RB_MR * RB_NR, column-major in the tile) <- the tile's fma chains. */
typedef struct {
    const double *a, *b;
    long as, bsk, bsc;
} rb_tile;

void tqp_rblas_tile_ref(int K, const rb_tile *t, double *acc);

/* The full tile finished into C: C(r, c) <- alpha * acc + beta * C(r, c) (beta == 0: alpha *
 * acc, C not read), for all RB_MR x RB_NR elements. */
void tqp_rblas_tile_c_ref(int K, const rb_tile *t, double alpha, double beta, double *C, int ldc);

/* y[r] <- fma(-x[r], t, y[r]) for r < m;  y[r] <- fma(t, x[r], y[r]) for r < m. */
void tqp_rblas_fnmadd_ref(int m, const double *x, double t, double *y);
void tqp_rblas_fmadd_ref(int m, const double *x, double t, double *y);

#ifdef TQP_HAVE_AVX2_RBLAS
void tqp_rblas_tile_avx2(int K, const rb_tile *t, double *acc);
void tqp_rblas_tile_c_avx2(int K, const rb_tile *t, double alpha, double beta, double *C, int ldc);
void tqp_rblas_fnmadd_avx2(int m, const double *x, double t, double *y);
void tqp_rblas_fmadd_avx2(int m, const double *x, double t, double *y);
#endif

#endif
