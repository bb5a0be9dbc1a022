/* AVX2 kernels of the fused decode + matrix-vector product (include/tqp/matvec.h), for CPUs
 * without the AVX-512 kernel's instructions.  Same layout (src/matvec_impl.h): each group of
 * 16 bands is coded as two halves of 8 lanes, reading the low or high 32 bytes of every
 * 64-byte row of words.  The funnel shift is two shifts and an or; 1mad's byte sum is
 * VPMADDUBSW then VPMADDWD against ones; 3inst's fp16 halves are converted with shifts and
 * masks; hyb and lut are gathered.  Compiled with -mavx2 -mfma; chosen at run time. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "matvec_impl.h"
#include "tqp/trellis.h"

#define INLINE static inline __attribute__((always_inline))
#ifndef PREFETCH
#define PREFETCH 4096
#endif

/* The state of step k (0..31) of the period at p, for the 8 bands of half `h`. */
INLINE __m256i state_at(const uint32_t *p, __m256i prev, const int KV, const int k, int h,
                        __m256i lmask)
{
    const int e = (k + 1) * KV, wl = (e - 1) >> 5, cnt = e - 32 * wl; /* cnt in 1..32 */
    __m256i b = _mm256_load_si256((const __m256i *)(p + 16 * wl + 8 * h)), s;
    if (cnt == 32) {
        s = b;
    } else {
        __m256i a = wl ? _mm256_load_si256((const __m256i *)(p + 16 * (wl - 1) + 8 * h)) : prev;
        s = _mm256_or_si256(_mm256_sll_epi32(a, _mm_cvtsi32_si128(cnt)),
                            _mm256_srl_epi32(b, _mm_cvtsi32_si128(32 - cnt)));
    }
    return _mm256_and_si256(s, lmask);
}

/* V = 1 code values: 1mad as (byte sum - 510), the others exactly as the code table. */
INLINE __m256 value_v1(const int code, __m256i s, const float *table)
{
    if (code == TQP_TCODE_1MAD) {
        __m256i x = _mm256_add_epi32(_mm256_mullo_epi32(s, _mm256_set1_epi32(34038481)),
                                     _mm256_set1_epi32(76625530));
        __m256i pairs = _mm256_maddubs_epi16(x, _mm256_set1_epi8(1)); /* two bytes: <= 510 */
        __m256i sum = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        return _mm256_cvtepi32_ps(_mm256_sub_epi32(sum, _mm256_set1_epi32(510)));
    }
    if (code == TQP_TCODE_3INST) {
        /* as in the AVX-512 kernel: two normal fp16 with exponents 12..15 */
        __m256i x = _mm256_add_epi32(_mm256_mullo_epi32(s, _mm256_set1_epi32(89226354)),
                                     _mm256_set1_epi32(64248484));
        __m256i y = _mm256_xor_si256(_mm256_and_si256(x, _mm256_set1_epi32((int)0x8FFF8FFFu)),
                                     _mm256_set1_epi32(0x3B603B60));
        __m256i keep = _mm256_set1_epi32((int)0x81FFE000u), set = _mm256_set1_epi32(0x3E000000);
        __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srai_epi32(y, 3), keep), set);
        __m256i lo = _mm256_or_si256(
            _mm256_and_si256(_mm256_srai_epi32(_mm256_slli_epi32(y, 16), 3), keep), set);
        return _mm256_add_ps(_mm256_castsi256_ps(hi), _mm256_castsi256_ps(lo));
    }
    return _mm256_i32gather_ps(table, s, 4);
}

/* V = 2: the value pairs of lanes 0..3 (lo) and 4..7 (hi), interleaved (c0, c1) per lane. */
INLINE void pairs_v2(__m256i s, const float *table, __m256 *lo, __m256 *hi)
{
    *lo = _mm256_castpd_ps(_mm256_i32gather_pd((const double *)table, _mm256_castsi256_si128(s), 8));
    *hi = _mm256_castpd_ps(
        _mm256_i32gather_pd((const double *)table, _mm256_extracti128_si256(s, 1), 8));
}

/* Lane j: the sum of the pair of lane j (lo for j < 4, hi after). */
INLINE __m256 pair_sums(__m256 lo, __m256 hi)
{
    __m256 h = _mm256_hadd_ps(lo, hi); /* r0 r1 r4 r5 | r2 r3 r6 r7 */
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0xD8));
}

/* Component v (0 or 1) of lane j's pair. */
INLINE __m256 pair_part(__m256 lo, __m256 hi, int v)
{
    __m256 h = v ? _mm256_shuffle_ps(lo, hi, 0xDD) : _mm256_shuffle_ps(lo, hi, 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0xD8));
}

/* Write the sums of the 8 bands of half h (acc[r], lane j = row r of band 8 h + j). */
static void store_half(const tqp_tmv_layout *k, const __m256 *acc, int g, int h, float *z)
{
    float t[16][8];
    for (int r = 0; r < 16; r++) _mm256_storeu_ps(t[r], acc[r]);
    for (int j = 0; j < 8; j++) {
        int row0 = (16 * g + 8 * h + j) * 16;
        if (row0 >= k->m) break;
        for (int r = 0; r < 16; r++) z[row0 + r] = t[r][j];
    }
}

INLINE void codes_group(const tqp_tmv_layout *k, const float *xr, float *z, int g, const int V,
                        const int KV, const int code)
{
    const size_t tile = (size_t)k->Wt * 16;
    const uint32_t *Wg = k->words + (size_t)g * k->ncb * tile;
    const __m256i lmask = _mm256_set1_epi32((int)((1u << k->L) - 1));
    for (int h = 0; h < 2; h++) {
        if ((16 * g + 8 * h) * 16 >= k->m) break; /* no bands in this half */
        __m256 acc[16];
        for (int r = 0; r < 16; r++) acc[r] = _mm256_setzero_ps();
        for (int cb = 0; cb < k->ncb; cb++) {
            const uint32_t *Wt = Wg + cb * tile;
            const float *xc = xr + 16 * cb;
            __m256i prev = _mm256_load_si256((const __m256i *)(Wt + tile - 16 + 8 * h));
            if (V == 1) {
                for (int p = 0; p < 8; p++) {
                    const uint32_t *pp = Wt + 16 * KV * p;
                    for (int l = 0; l < KV; l++)
                        _mm_prefetch((const char *)(pp + 16 * l) + PREFETCH, _MM_HINT_T0);
                    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
#pragma GCC unroll 16
                    for (int c = 0; c < 16; c++)
                        a0 = _mm256_fmadd_ps(
                            value_v1(code, state_at(pp, prev, KV, c, h, lmask), k->table),
                            _mm256_set1_ps(xc[c]), a0);
#pragma GCC unroll 16
                    for (int c = 0; c < 16; c++)
                        a1 = _mm256_fmadd_ps(
                            value_v1(code, state_at(pp, prev, KV, 16 + c, h, lmask), k->table),
                            _mm256_set1_ps(xc[c]), a1);
                    acc[2 * p] = _mm256_add_ps(acc[2 * p], a0);
                    acc[2 * p + 1] = _mm256_add_ps(acc[2 * p + 1], a1);
                    prev = _mm256_load_si256((const __m256i *)(pp + 16 * (KV - 1) + 8 * h));
                }
            } else {
                for (int p = 0; p < 4; p++) {
                    const uint32_t *pp = Wt + 16 * KV * p;
                    for (int l = 0; l < KV; l++)
                        _mm_prefetch((const char *)(pp + 16 * l) + PREFETCH, _MM_HINT_T0);
                    for (int r = 0; r < 4; r++) {
                        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
#pragma GCC unroll 8
                        for (int c = 0; c < 8; c++) {
                            __m256 plo, phi;
                            pairs_v2(state_at(pp, prev, KV, 8 * r + c, h, lmask), k->table, &plo,
                                     &phi);
                            double xp;
                            memcpy(&xp, xc + 2 * c, sizeof xp); /* (x[2c], x[2c + 1]) */
                            __m256 xv = _mm256_castpd_ps(_mm256_set1_pd(xp));
                            lo = _mm256_fmadd_ps(plo, xv, lo);
                            hi = _mm256_fmadd_ps(phi, xv, hi);
                        }
                        acc[4 * p + r] = _mm256_add_ps(acc[4 * p + r], pair_sums(lo, hi));
                    }
                    prev = _mm256_load_si256((const __m256i *)(pp + 16 * (KV - 1) + 8 * h));
                }
            }
        }
        store_half(k, acc, g, h, z);
    }
}

INLINE void decode_group(const tqp_tmv_layout *k, float *W, int g, const int V, const int KV,
                         const int code)
{
    const size_t tile = (size_t)k->Wt * 16;
    const uint32_t *Wg = k->words + (size_t)g * k->ncb * tile;
    const __m256i lmask = _mm256_set1_epi32((int)((1u << k->L) - 1));
    float t[256][8];
    for (int h = 0; h < 2; h++) {
        if ((16 * g + 8 * h) * 16 >= k->m) break;
        for (int cb = 0; cb < k->ncb; cb++) {
            const uint32_t *Wt = Wg + cb * tile;
            __m256i prev = _mm256_load_si256((const __m256i *)(Wt + tile - 16 + 8 * h));
            for (int p = 0; p < 256 / (32 * V); p++) {
                const uint32_t *pp = Wt + 16 * KV * p;
#pragma GCC unroll 32
                for (int c = 0; c < 32; c++) {
                    __m256i s = state_at(pp, prev, KV, c, h, lmask);
                    if (V == 1) {
                        __m256 v = value_v1(code, s, k->table);
                        if (code == TQP_TCODE_1MAD) { /* (sum - 510) / 147.8..., as the CPU */
                            const __m256d rcp = _mm256_set1_pd(1 / 147.800537109375);
                            __m128 a = _mm256_cvtpd_ps(
                                _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), rcp));
                            __m128 b = _mm256_cvtpd_ps(
                                _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), rcp));
                            v = _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1);
                        }
                        _mm256_storeu_ps(t[32 * p + c], v);
                    } else {
                        __m256 lo, hi;
                        pairs_v2(s, k->table, &lo, &hi);
                        _mm256_storeu_ps(t[64 * p + 2 * c], pair_part(lo, hi, 0));
                        _mm256_storeu_ps(t[64 * p + 2 * c + 1], pair_part(lo, hi, 1));
                    }
                }
                prev = _mm256_load_si256((const __m256i *)(pp + 16 * (KV - 1) + 8 * h));
            }
            for (int j = 0; j < 8; j++) {
                int row0 = (16 * g + 8 * h + j) * 16;
                if (row0 >= k->m) break;
                for (int r = 0; r < 16; r++)
                    for (int c = 0; c < 16; c++)
                        W[(size_t)(row0 + r) * k->n + 16 * cb + c] = t[16 * r + c][j];
            }
        }
    }
}

#define CODES_NAME tqp_tmv_codes_avx2
#define DECODE_NAME tqp_tmv_decode_avx2
#include "matvec_simd.h"
