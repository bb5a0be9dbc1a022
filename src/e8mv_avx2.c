/* AVX2 kernels of the fused decode + matrix-vector product on E8P codes (include/tqp/e8mv.h,
 * layout in src/e8mv_impl.h): one row per instruction, signs and shift bits from 256-entry
 * tables.  Compiled with -mavx2 -mfma; chosen at run time. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "e8mv_impl.h"

#define INLINE static inline __attribute__((always_inline))

INLINE __m256 signed_row(const tqp_emv_layout *L, const float *tab, unsigned k, unsigned neg)
{
    __m256 v = _mm256_load_ps(tab + k);
    return _mm256_xor_ps(v, _mm256_load_ps((const float *)(L->signs + 8 * neg)));
}

INLINE float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One stage over band b: out[r] = row r's product with xr.  neg NULL: no signs or shifts
 * (the 3-bit stage's E81B points). */
static void stage(const tqp_emv_layout *L, const float *tab, const uint16_t *k,
                  const uint8_t *neg, const uint8_t *p, const float *xr, const float *sx, int b,
                  float out[8])
{
    __m256 a[8], ps = _mm256_setzero_ps();
    for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
    size_t q = (size_t)b * L->nb;
    for (int j = 0; j < L->nb; j++, q++) {
        const uint16_t *kr = k + 8 * q;
        __m256 xb = _mm256_loadu_ps(xr + 8 * j);
        if (neg) {
            const uint8_t *nr = neg + 8 * q;
            for (int r = 0; r < 8; r++)
                a[r] = _mm256_fmadd_ps(signed_row(L, tab, kr[r], nr[r]), xb, a[r]);
            __m256 mk = _mm256_load_ps((const float *)(L->masks + 8 * p[q]));
            ps = _mm256_add_ps(ps, _mm256_and_ps(mk, _mm256_set1_ps(sx[j])));
        } else {
            for (int r = 0; r < 8; r++)
                a[r] = _mm256_fmadd_ps(_mm256_load_ps(tab + kr[r]), xb, a[r]);
        }
    }
    float pr[8];
    _mm256_storeu_ps(pr, ps);
    for (int r = 0; r < 8; r++) {
        out[r] = hsum8(a[r]);
        if (neg) out[r] += 0.25f * L->sum_x - 0.5f * pr[r];
    }
}

void tqp_emv_codes_avx2(const tqp_emv_layout *L, const float *xr, const float *sx, float *z,
                        int b0, int b1)
{
    for (int b = b0; b < b1; b++) {
        float o1[8], o2[8] = {0};
        stage(L, L->base, L->k1, L->neg1, L->p1, xr, sx, b, o1);
        if (L->bits == 4) stage(L, L->base, L->k2, L->neg2, L->p2, xr, sx, b, o2);
        else if (L->bits == 3) stage(L, L->e81b, L->k2, NULL, NULL, xr, sx, b, o2);
        for (int r = 0; r < 8; r++) z[8 * b + r] = L->bits > 2 ? o1[r] + L->inv_rs * o2[r] : o1[r];
    }
}

/* Row r of block q of one E8P stage: signed base plus the shift. */
INLINE __m256 values(const tqp_emv_layout *L, const uint16_t *k, const uint8_t *neg,
                     const uint8_t *p, size_t q, int r)
{
    __m256 v = signed_row(L, L->base, k[8 * q + r], neg[8 * q + r]);
    return _mm256_add_ps(v, _mm256_set1_ps((p[q] >> r) & 1 ? -0.25f : 0.25f));
}

void tqp_emv_decode_avx2(const tqp_emv_layout *L, float *W, int b0, int b1)
{
    size_t ld = (size_t)8 * L->nb;
    for (int b = b0; b < b1; b++) {
        float *Wb = W + (size_t)(b - b0) * 8 * ld;
        for (int j = 0; j < L->nb; j++) {
            size_t q = (size_t)b * L->nb + j;
            for (int r = 0; r < 8; r++) {
                __m256 v = values(L, L->k1, L->neg1, L->p1, q, r);
                if (L->bits > 2) {
                    __m256 w = L->bits == 4 ? values(L, L->k2, L->neg2, L->p2, q, r)
                                            : _mm256_load_ps(L->e81b + L->k2[8 * q + r]);
                    v = _mm256_add_ps(v, _mm256_mul_ps(w, _mm256_set1_ps(L->inv_rs)));
                }
                _mm256_storeu_ps(Wb + (size_t)r * ld + 8 * j, v);
            }
        }
    }
}
