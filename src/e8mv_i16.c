/* The int16 kernel of the fused decode + matrix-vector product on E8P codes (include/tqp/e8mv.h,
 * layout in src/e8mv_impl.h), 2 and 4 bits.  Per 32 weights (four rows of a column block of 8):
 * VPMULTISHIFTQB puts each coordinate's two magnitude bits in its 16-bit lane, VPTERNLOGD makes
 * 4 c + 2, a masked subtraction negates where the sign is negative (the mask loaded from the
 * layout), and VPDPWSSD multiplies by the int16 activations, summed exactly in int32; the
 * shifts (+-1/4 per row and block) come from the activations' block sums, one AND with a row
 * mask and one add per 64 weights.  No multiply and no table: three simple operations per 32 weights decode.
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512vbmi; chosen at run time. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "e8mv_impl.h"

#define INLINE static inline __attribute__((always_inline))

/* Blocks summed in int32 before the sums go to float: a dword takes two products of at most
 * 14 x 32767 per block (|4c + 2| <= 14, |xq| <= 32767), and 2048 blocks of them stay below
 * 2^31 (1.88e9); a row's shift sum takes at most 8 x 32767 per block. */
#define CHUNK 2048

typedef struct {
    __m512i ctl, keep, two;
} consts;

INLINE consts make_consts(void)
{
    uint8_t c[64];
    for (int p = 0; p < 64; p++) /* low byte of lane L: the 8 bits from 2L - 2, c at bits 2-3 */
        c[p] = p & 1 ? 0 : (uint8_t)((p - 2) & 63);
    return (consts){_mm512_loadu_si512(c), _mm512_set1_epi16(0x000C), _mm512_set1_epi16(2)};
}

/* sigma (4 c + 2) of rows 4h .. 4h+3 of block q, 32 lanes (quarter units, shift not added). */
INLINE __m512i values(const uint64_t *mag, const uint32_t *sgn, size_t q, int h, const consts *k)
{
    uint64_t mw;
    memcpy(&mw, mag + 2 * q + h, 8);
    __mmask32 neg = _load_mask32((__mmask32 *)(sgn + 2 * q + h));
    __m512i x = _mm512_multishift_epi64_epi8(k->ctl, _mm512_set1_epi64((long long)mw));
    __m512i w = _mm512_ternarylogic_epi32(x, k->keep, k->two, 0xEA); /* (x & 12) | 2 */
    return _mm512_mask_sub_epi16(w, neg, _mm512_setzero_si512(), w);
}

/* All ones in the rows whose bit is set in t. */
INLINE __m256i rowmask(const tqp_emv_i16_layout *L, unsigned t)
{
    return _mm256_load_si256((const __m256i *)(L->masks + 8 * t));
}

/* Block j of bands b .. b+nbd-1 into their sums a[d][half] and shift sums t[d]. */
INLINE void one_block(const tqp_emv_i16_layout *L, const uint64_t *mag, const uint32_t *sgn,
                      const uint8_t *tau, const int16_t *xq, const int32_t *sx, int b,
                      const int nbd, int j, const consts *k, __m512i a[][2], __m256i *t)
{
    __m512i x = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xq + 8 * j)));
    __m256i sj = _mm256_set1_epi32(sx[j]);
#pragma GCC unroll 4
    for (int d = 0; d < nbd; d++) {
        size_t q = (size_t)(b + d) * L->nb + (size_t)j;
        a[d][0] = _mm512_dpwssd_epi32(a[d][0], values(mag, sgn, q, 0, k), x);
        a[d][1] = _mm512_dpwssd_epi32(a[d][1], values(mag, sgn, q, 1, k), x);
        t[d] = _mm256_add_epi32(t[d], _mm256_and_si256(rowmask(L, tau[q]), sj));
    }
}

/* One stage over bands b .. b+nbd-1 (nbd of them, 1, 2 or 4: each block of x is loaded once for
 * all): out[d][r] = row r of band b+d's product with xq, in quarter units of xq's unit.  The
 * shifts: tau = +1 everywhere gives stot (the sum of xq), and each block whose shift is -1
 * takes twice its block sum sx[j] off, added per row through a row mask.  A band's sums are
 * exact int32 per chunk of blocks whatever nbd is, so its result does not depend on nbd. */
INLINE void stage(const tqp_emv_i16_layout *L, int s, const int16_t *xq, const int32_t *sx,
                  double stot, int b, const int nbd, double out[][8])
{
    enum { MAXB = 4 };
    const int U = nbd == 1 ? 2 : 1; /* one band: two blocks at a time, four sums all the same */
    const consts k = make_consts();
    const uint64_t *mag = L->mag[s];
    const uint32_t *sgn = L->sgn[s];
    const uint8_t *tau = L->tau[s];
    __m512 f[MAXB][2];
    double tneg[MAXB][8] = {{0}};
    for (int d = 0; d < nbd; d++) f[d][0] = f[d][1] = _mm512_setzero_ps();
    for (int c0 = 0; c0 < L->nb; c0 += CHUNK) {
        int c1 = c0 + CHUNK < L->nb ? c0 + CHUNK : L->nb, j = c0;
        __m512i a[2][MAXB][2];
        __m256i t[MAXB];
        for (int d = 0; d < nbd; d++) {
            t[d] = _mm256_setzero_si256();
            for (int u = 0; u < 2; u++) a[u][d][0] = a[u][d][1] = _mm512_setzero_si512();
        }
        for (; j + U <= c1; j += U)
#pragma GCC unroll 2
            for (int u = 0; u < U; u++) one_block(L, mag, sgn, tau, xq, sx, b, nbd, j + u, &k, a[u], t);
        if (j < c1) one_block(L, mag, sgn, tau, xq, sx, b, nbd, j, &k, a[0], t);
        for (int d = 0; d < nbd; d++) {
            for (int h = 0; h < 2; h++)
                f[d][h] = _mm512_add_ps(
                    f[d][h], _mm512_cvtepi32_ps(_mm512_add_epi32(a[0][d][h], a[1][d][h])));
            int32_t tt[8];
            _mm256_storeu_si256((__m256i *)tt, t[d]);
            for (int r = 0; r < 8; r++) tneg[d][r] += tt[r];
        }
    }
    for (int d = 0; d < nbd; d++) {
        float u[2][16];
        _mm512_storeu_ps(u[0], f[d][0]);
        _mm512_storeu_ps(u[1], f[d][1]);
        for (int r = 0; r < 8; r++) {
            const float *v = u[r / 4] + 4 * (r % 4);
            out[d][r] = (double)v[0] + v[1] + v[2] + v[3] + stot - 2 * tneg[d][r];
        }
    }
}

/* Bands b .. b+nbd-1, both stages. */
INLINE void bands(const tqp_emv_i16_layout *L, const int16_t *xq, const int32_t *sx, double stot,
                  double unit, float *z, int b, const int nbd)
{
    double o1[4][8], o2[4][8] = {{0}};
    stage(L, 0, xq, sx, stot, b, nbd, o1);
    if (L->bits == 4) stage(L, 1, xq, sx, stot, b, nbd, o2);
    for (int d = 0; d < nbd; d++)
        for (int r = 0; r < 8; r++)
            z[8 * (b + d) + r] = (float)(unit * (o1[d][r] + L->inv_rs * o2[d][r]));
}

void tqp_emv_codes_i16(const tqp_emv_i16_layout *L, const int16_t *xq, const int32_t *sx,
                       double stot, double step, float *z, int b0, int b1)
{
    double unit = 0.25 * step;
    int b = b0;
    for (; b + 4 <= b1; b += 4) bands(L, xq, sx, stot, unit, z, b, 4);
    for (; b + 2 <= b1; b += 2) bands(L, xq, sx, stot, unit, z, b, 2);
    for (; b < b1; b++) bands(L, xq, sx, stot, unit, z, b, 1);
}

void tqp_emv_decode_i16(const tqp_emv_i16_layout *L, float *W, int b0, int b1)
{
    const consts k = make_consts();
    size_t ld = (size_t)8 * L->nb;
    for (int b = b0; b < b1; b++) {
        float *Wb = W + (size_t)(b - b0) * 8 * ld;
        for (int j = 0; j < L->nb; j++) {
            size_t q = (size_t)b * L->nb + j;
            for (int h = 0; h < 2; h++) {
                int16_t v[32], w[32];
                _mm512_storeu_si512(v, values(L->mag[0], L->sgn[0], q, h, &k));
                if (L->bits == 4) _mm512_storeu_si512(w, values(L->mag[1], L->sgn[1], q, h, &k));
                for (int i = 0; i < 32; i++) {
                    int r = 4 * h + i / 8; /* exact: the codebook's values */
                    float a = (float)(v[i] + (L->tau[0][q] >> r & 1 ? -1 : 1)) * 0.25f;
                    if (L->bits == 4) {
                        float d = (float)(w[i] + (L->tau[1][q] >> r & 1 ? -1 : 1)) * 0.25f;
                        d = d * L->inv_rs;
                        a = a + d;
                    }
                    Wb[(size_t)(4 * h + i / 8) * ld + 8 * j + i % 8] = a;
                }
            }
        }
    }
}
