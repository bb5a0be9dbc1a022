/* AVX2+FMA kernels of the reproducible BLAS (see src/rblas_impl.h).  Each lane holds one
 * output element and runs the same fma chain as the plain C reference, so both give the same
 * bits.  Built with -mavx2 -mfma -ffp-contract=off. */
#include <immintrin.h>

#include "rblas_impl.h"

/* The 8 x 4 tile's accumulators: two vectors of rows per column. */
#define TILE_LOOP(K, t)                                                                            \
    __m256d a00 = _mm256_setzero_pd(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00,      \
            a30 = a00, a31 = a00;                                                                  \
    const double *pa = (t)->a, *pb = (t)->b;                                                       \
    long as = (t)->as, bsk = (t)->bsk, bsc = (t)->bsc;                                             \
    for (int k = 0; k < (K); k++, pa += as, pb += bsk) {                                           \
        __m256d x0 = _mm256_loadu_pd(pa), x1 = _mm256_loadu_pd(pa + 4);                            \
        __m256d y = _mm256_broadcast_sd(pb);                                                       \
        a00 = _mm256_fmadd_pd(x0, y, a00), a01 = _mm256_fmadd_pd(x1, y, a01);                      \
        y = _mm256_broadcast_sd(pb + bsc);                                                         \
        a10 = _mm256_fmadd_pd(x0, y, a10), a11 = _mm256_fmadd_pd(x1, y, a11);                      \
        y = _mm256_broadcast_sd(pb + 2 * bsc);                                                     \
        a20 = _mm256_fmadd_pd(x0, y, a20), a21 = _mm256_fmadd_pd(x1, y, a21);                      \
        y = _mm256_broadcast_sd(pb + 3 * bsc);                                                     \
        a30 = _mm256_fmadd_pd(x0, y, a30), a31 = _mm256_fmadd_pd(x1, y, a31);                      \
    }

void tqp_rblas_tile_avx2(int K, const rb_tile *t, double *acc)
{
    TILE_LOOP(K, t)
    _mm256_storeu_pd(acc + 0, a00), _mm256_storeu_pd(acc + 4, a01);
    _mm256_storeu_pd(acc + 8, a10), _mm256_storeu_pd(acc + 12, a11);
    _mm256_storeu_pd(acc + 16, a20), _mm256_storeu_pd(acc + 20, a21);
    _mm256_storeu_pd(acc + 24, a30), _mm256_storeu_pd(acc + 28, a31);
}

/* alpha * acc + beta * C as two rounded products and one rounded sum (no FMA). */
static inline void finish(double *c, __m256d acc, __m256d alpha, __m256d beta, int read)
{
    __m256d t = _mm256_mul_pd(alpha, acc);
    if (read) t = _mm256_add_pd(t, _mm256_mul_pd(beta, _mm256_loadu_pd(c)));
    _mm256_storeu_pd(c, t);
}

void tqp_rblas_tile_c_avx2(int K, const rb_tile *t, double alpha, double beta, double *C, int ldc)
{
    TILE_LOOP(K, t)
    __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
    int read = beta != 0.0;
    finish(C, a00, va, vb, read), finish(C + 4, a01, va, vb, read);
    C += ldc;
    finish(C, a10, va, vb, read), finish(C + 4, a11, va, vb, read);
    C += ldc;
    finish(C, a20, va, vb, read), finish(C + 4, a21, va, vb, read);
    C += ldc;
    finish(C, a30, va, vb, read), finish(C + 4, a31, va, vb, read);
}

void tqp_rblas_fnmadd_avx2(int m, const double *x, double t, double *y)
{
    __m256d vt = _mm256_set1_pd(t);
    int r = 0;
    for (; r + 4 <= m; r += 4)
        _mm256_storeu_pd(y + r, _mm256_fnmadd_pd(_mm256_loadu_pd(x + r), vt, _mm256_loadu_pd(y + r)));
    for (; r < m; r++) y[r] = __builtin_fma(-x[r], t, y[r]);
}

void tqp_rblas_fmadd_avx2(int m, const double *x, double t, double *y)
{
    __m256d vt = _mm256_set1_pd(t);
    int r = 0;
    for (; r + 4 <= m; r += 4)
        _mm256_storeu_pd(y + r, _mm256_fmadd_pd(vt, _mm256_loadu_pd(x + r), _mm256_loadu_pd(y + r)));
    for (; r < m; r++) y[r] = __builtin_fma(t, x[r], y[r]);
}
