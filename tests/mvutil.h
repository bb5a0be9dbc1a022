/* Helpers of the fused matrix-vector product tests (test_matvec.c, test_e8mv.c): random codes
 * and vectors from a splitmix64 state, and the worst relative error of a product. */
#ifndef TQP_TEST_MVUTIL_H
#define TQP_TEST_MVUTIL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "tqp/rng.h"

static inline void mv_random_bytes(uint64_t *seed, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(tqp_splitmix64(seed) >> 56);
}

/* uniform in [-1, 1) */
static inline void mv_random_floats(uint64_t *seed, float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = (float)((double)(tqp_splitmix64(seed) >> 11) / 9007199254740992.0 * 2 - 1);
}

/* max over rows of |y - yref| / (|scale| sum_j |W_ij x_j|); *all_finite: every y finite. */
static inline double mv_worst_error(const float *y, const double *yref, const double *W,
                                    const float *x, int m, int n, double scale, int *all_finite)
{
    double worst = 0;
    *all_finite = 1;
    for (int i = 0; i < m; i++) {
        if (!isfinite(y[i])) *all_finite = 0;
        double mag = 0;
        for (int j = 0; j < n; j++) mag += fabs(W[(size_t)i * n + j] * x[j]);
        double e = fabs(y[i] - yref[i]) / (fabs(scale) * mag + 1e-300);
        if (e > worst) worst = e;
    }
    return worst;
}

#endif
