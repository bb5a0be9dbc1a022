/* AVX-512 kernels of the fused decode + matrix-vector product on E8P codes (include/tqp/e8mv.h,
 * layout in src/e8mv_impl.h): two rows per instruction, 8 lanes each, one column block of 8
 * at a time.  Compiled with -mavx512f -mavx512bw -mavx512vl; chosen at run time. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "e8mv_impl.h"

#define INLINE static inline __attribute__((always_inline))

/* Rows r and r + 1 of a block: their table rows in the two halves, the lanes of the 16 sign
 * bits negated. */
INLINE __m512 pair(const float *tab, unsigned k0, unsigned k1, __mmask16 neg)
{
    __m512 v = _mm512_castps256_ps512(_mm256_load_ps(tab + k0));
    v = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(v),
                                            _mm256_castps_pd(_mm256_load_ps(tab + k1)), 1));
    return _mm512_mask_sub_ps(v, neg, _mm512_setzero_ps(), v);
}

INLINE __m512 xblock(const float *x)
{
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x))));
}

INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE void row_sums(const __m512 a[4], float out[8])
{
    for (int q = 0; q < 4; q++) {
        out[2 * q] = hsum8(_mm512_castps512_ps256(a[q]));
        out[2 * q + 1] = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a[q]), 1)));
    }
}

/* One column block of one E8P stage: the four pairs of rows, signs from the sign bytes.  The
 * offsets and sign bytes come in 64-bit loads and are taken apart in registers: the loads are
 * the bottleneck (a table row per row of the block). */
INLINE void block(const float *tab, const uint16_t *kr, const uint8_t *nr, __m512 xb, __m512 a[4])
{
    uint64_t k03, k47, ng;
    memcpy(&k03, kr, 8), memcpy(&k47, kr + 4, 8), memcpy(&ng, nr, 8);
    a[0] = _mm512_fmadd_ps(pair(tab, (uint16_t)k03, (uint16_t)(k03 >> 16), (__mmask16)ng), xb,
                           a[0]);
    a[1] = _mm512_fmadd_ps(pair(tab, (uint16_t)(k03 >> 32), (uint16_t)(k03 >> 48),
                                (__mmask16)(ng >> 16)), xb, a[1]);
    a[2] = _mm512_fmadd_ps(pair(tab, (uint16_t)k47, (uint16_t)(k47 >> 16),
                                (__mmask16)(ng >> 32)), xb, a[2]);
    a[3] = _mm512_fmadd_ps(pair(tab, (uint16_t)(k47 >> 32), (uint16_t)(k47 >> 48),
                                (__mmask16)(ng >> 48)), xb, a[3]);
}

/* One E8P stage over band b: out[r] = row r's product with xr. */
static void stage_e8p(const tqp_emv_layout *L, const uint16_t *k, const uint8_t *neg,
                      const uint8_t *p, const float *xr, const float *sx, int b, float out[8])
{
    const float *tab = L->base;
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
    __m256 ps = _mm256_setzero_ps();
    size_t q = (size_t)b * L->nb;
    int j = 0;
    for (; j + 1 < L->nb; j += 2, q += 2) {
        block(tab, k + 8 * q, neg + 8 * q, xblock(xr + 8 * j), a);
        block(tab, k + 8 * q + 8, neg + 8 * q + 8, xblock(xr + 8 * j + 8), a);
        ps = _mm256_mask_add_ps(ps, (__mmask8)p[q], ps, _mm256_set1_ps(sx[j]));
        ps = _mm256_mask_add_ps(ps, (__mmask8)p[q + 1], ps, _mm256_set1_ps(sx[j + 1]));
    }
    for (; j < L->nb; j++, q++) {
        block(tab, k + 8 * q, neg + 8 * q, xblock(xr + 8 * j), a);
        ps = _mm256_mask_add_ps(ps, (__mmask8)p[q], ps, _mm256_set1_ps(sx[j]));
    }
    float pr[8];
    _mm256_storeu_ps(pr, ps);
    row_sums(a, out);
    /* shifts: +1/4 of every block sum, -1/2 of those whose shift is -1/4 */
    for (int r = 0; r < 8; r++) out[r] += 0.25f * L->sum_x - 0.5f * pr[r];
}

/* The 3-bit stage: E81B points, no signs or shifts. */
static void stage_e81b(const tqp_emv_layout *L, const float *xr, int b, float out[8])
{
    const float *tab = L->e81b;
    __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                   _mm512_setzero_ps()};
    size_t q = (size_t)b * L->nb;
    for (int j = 0; j < L->nb; j++, q++) {
        const uint16_t *kr = L->k2 + 8 * q;
        __m512 xb = xblock(xr + 8 * j);
        for (int h = 0; h < 4; h++) a[h] = _mm512_fmadd_ps(pair(tab, kr[2 * h], kr[2 * h + 1], 0),
                                                           xb, a[h]);
    }
    row_sums(a, out);
}

void tqp_emv_codes_avx512(const tqp_emv_layout *L, const float *xr, const float *sx, float *z,
                          int b0, int b1)
{
    for (int b = b0; b < b1; b++) {
        float o1[8], o2[8] = {0};
        stage_e8p(L, L->k1, L->neg1, L->p1, xr, sx, b, o1);
        if (L->bits == 4) stage_e8p(L, L->k2, L->neg2, L->p2, xr, sx, b, o2);
        else if (L->bits == 3) stage_e81b(L, xr, b, o2);
        for (int r = 0; r < 8; r++) z[8 * b + r] = L->bits > 2 ? o1[r] + L->inv_rs * o2[r] : o1[r];
    }
}

/* Rows 2h, 2h + 1 of block q of one E8P stage: signed base plus the shifts. */
INLINE __m512 values(const float *tab, const uint16_t *k, const uint8_t *neg, const uint8_t *p,
                     size_t q, int h)
{
    uint16_t ng;
    memcpy(&ng, neg + 8 * q + 2 * h, 2);
    __m512 v = pair(tab, k[8 * q + 2 * h], k[8 * q + 2 * h + 1], ng);
    unsigned pb = p[q] >> (2 * h);
    __mmask16 minus = (__mmask16)((pb & 1 ? 0x00FFu : 0) | (pb & 2 ? 0xFF00u : 0));
    __m512 t = _mm512_mask_blend_ps(minus, _mm512_set1_ps(0.25f), _mm512_set1_ps(-0.25f));
    return _mm512_add_ps(v, t);
}

void tqp_emv_decode_avx512(const tqp_emv_layout *L, float *W, int b0, int b1)
{
    size_t ld = (size_t)8 * L->nb;
    for (int b = b0; b < b1; b++) {
        float *Wb = W + (size_t)(b - b0) * 8 * ld;
        for (int j = 0; j < L->nb; j++) {
            size_t q = (size_t)b * L->nb + j;
            for (int h = 0; h < 4; h++) {
                __m512 v = values(L->base, L->k1, L->neg1, L->p1, q, h);
                if (L->bits > 2) {
                    __m512 w = L->bits == 4 ? values(L->base, L->k2, L->neg2, L->p2, q, h)
                                            : pair(L->e81b, L->k2[8 * q + 2 * h],
                                                   L->k2[8 * q + 2 * h + 1], 0);
                    v = _mm512_add_ps(v, _mm512_mul_ps(w, _mm512_set1_ps(L->inv_rs)));
                }
                _mm256_storeu_ps(Wb + (size_t)(2 * h) * ld + 8 * j, _mm512_castps512_ps256(v));
                _mm256_storeu_ps(Wb + (size_t)(2 * h + 1) * ld + 8 * j,
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
            }
        }
    }
}
