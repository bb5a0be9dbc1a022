/* AVX2 instance of the SIMD Viterbi pass (src/trellis_simd.h): 8 states per instruction,
 * minima with VMINPS.  Compiled with -mavx2 -ffp-contract=off; chosen at run
 * time on CPUs without AVX-512. */
#include <immintrin.h>

#define VW 8
#define LANE_SET 1
typedef __m256 vec;
typedef __m256i vidx;
#define V_LOAD(p) _mm256_load_ps(p)
#define V_BCAST_FEW(p, n)                                                                          \
    ((n) == 4 ? _mm256_broadcast_ps((const __m128 *)(p))                                           \
              : _mm256_castpd_ps(_mm256_broadcast_sd((const double *)(p))))
#define V_STORE(p, v) _mm256_store_ps(p, v)
#define V_SET1(f) _mm256_set1_ps(f)
#define V_MIN(a, b) _mm256_min_ps(a, b)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_EXPAND(idx, v) _mm256_permutevar8x32_ps(v, idx)
#define V_LOAD_IDX(p) _mm256_loadu_si256((const __m256i *)(p))
#define VITERBI_NAME tqp_trellis_viterbi_avx2
#define RATE_NAME tqp_trellis_vector_rate_avx2

#include "trellis_simd.h"

