/* AVX-512 instance of the SIMD Viterbi pass (src/trellis_simd.h): 16 states per instruction,
 * minima with VMINPS.  Compiled with -mavx512f -mavx512bw -mavx512vl
 * -ffp-contract=off; chosen at run time. */
#include <immintrin.h>
#include <string.h>

#define VW 16
#define LANE_SET 0
typedef __m512 vec;
typedef __m512i vidx;
#define V_LOAD(p) _mm512_load_ps(p)
static inline __attribute__((always_inline)) __m512 bcast_few(const float *p, int n)
{
    if (n == 8) return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)p)));
    if (n == 4) return _mm512_broadcast_f32x4(_mm_loadu_ps(p));
    double d;
    memcpy(&d, p, sizeof d);
    return _mm512_castpd_ps(_mm512_set1_pd(d));
}
#define V_BCAST_FEW(p, n) bcast_few(p, n)
#define V_STORE(p, v) _mm512_store_ps(p, v)
#define V_SET1(f) _mm512_set1_ps(f)
#define V_MIN(a, b) _mm512_min_ps(a, b)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_EXPAND(idx, v) _mm512_permutexvar_ps(idx, v)
#define V_LOAD_IDX(p) _mm512_loadu_si512(p)
#define VITERBI_NAME tqp_trellis_viterbi_avx512
#define RATE_NAME tqp_trellis_vector_rate_avx512

#include "trellis_simd.h"

