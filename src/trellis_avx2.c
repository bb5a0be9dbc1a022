/* AVX2 instance of the SIMD Viterbi pass (src/trellis_simd.h): 8 states per instruction,
 * comparison results through movemask.  Compiled with -mavx2 -ffp-contract=off; chosen at run
 * time on CPUs without AVX-512. */
#include <immintrin.h>

#define VW 8
typedef __m256 vec;
typedef __m256i vidx;
#define V_LOAD(p) _mm256_load_ps(p)
#define V_LOAD_FEW(p, n)                                                                           \
    ((n) == 4 ? _mm256_castps128_ps256(_mm_loadu_ps(p))                                            \
              : _mm256_castps128_ps256(_mm_castpd_ps(_mm_load_sd((const double *)(p)))))
#define V_STORE(p, v) _mm256_store_ps(p, v)
#define V_SET1(f) _mm256_set1_ps(f)
#define V_ADD(a, b) _mm256_add_ps(a, b)
#define V_SUB(a, b) _mm256_sub_ps(a, b)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_EXPAND(idx, v) _mm256_permutevar8x32_ps(v, idx)
#define V_IDX(shift) _mm256_srli_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), shift)
#define V_LT_BLEND(v, m, out)                                                                      \
    do {                                                                                           \
        __m256 lt_ = _mm256_cmp_ps(v, m, _CMP_LT_OQ);                                              \
        m = _mm256_blendv_ps(m, v, lt_);                                                           \
        *(out) = (uint8_t)_mm256_movemask_ps(lt_);                                                 \
    } while (0)
#define VITERBI_NAME tqp_trellis_viterbi_avx2
#define RATE_NAME tqp_trellis_vector_rate_avx2

#include "trellis_simd.h"

