/* AVX-512 instance of the SIMD Viterbi pass (src/trellis_simd.h): 16 states per instruction,
 * comparison results in mask registers.  Compiled with -mavx512f -mavx512bw -mavx512vl
 * -ffp-contract=off; chosen at run time. */
#include <immintrin.h>
#include <string.h>

#define VW 16
typedef __m512 vec;
typedef __m512i vidx;
#define V_LOAD(p) _mm512_load_ps(p)
#define V_LOAD_FEW(p, n)                                                                           \
    ((n) == 8   ? _mm512_castps256_ps512(_mm256_loadu_ps(p))                                       \
     : (n) == 4 ? _mm512_castps128_ps512(_mm_loadu_ps(p))                                          \
                : _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double *)(p)))))
#define V_STORE(p, v) _mm512_store_ps(p, v)
#define V_SET1(f) _mm512_set1_ps(f)
#define V_ADD(a, b) _mm512_add_ps(a, b)
#define V_SUB(a, b) _mm512_sub_ps(a, b)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_EXPAND(idx, v) _mm512_permutexvar_ps(idx, v)
#define V_IDX(shift)                                                                               \
    _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),     \
                      shift)
#define V_LT_BLEND(v, m, out)                                                                      \
    do {                                                                                           \
        __mmask16 lt_ = _mm512_cmp_ps_mask(v, m, _CMP_LT_OQ);                                      \
        m = _mm512_mask_blend_ps(lt_, m, v);                                                       \
        uint16_t bits_ = (uint16_t)lt_;                                                            \
        memcpy(out, &bits_, 2); /* little-endian: groups g .. g+7, then g+8 .. g+15 */              \
    } while (0)
#define VITERBI_NAME tqp_trellis_viterbi_avx512
#define RATE_NAME tqp_trellis_vector_rate_avx512

#include "trellis_simd.h"

