/* The avx512-gf8 kernel of the fused decode + matrix-vector product: code gf8 (trellis.h) at
 * K = 2 or 4, L = 16, on the byte layout of src/matvec_impl.h.  Compiled with -mavx512f -mavx512bw
 * -mavx512vl -mavx512vnni -mavx512vbmi -mavx512vbmi2 -mgfni; chosen at run time.
 *
 * One chunk is 64 bits of 8 tiles' streams (one per 64-bit lane, 8 bands side by side): 32
 * steps, rows 2k and 2k + 1 of the tiles.  Per chunk:
 *  - the byte A of each step (the stream bits [2i - 6, 2i + 2) of step i) comes out of one
 *    VPMULTISHIFTQB per 8 steps: 4 of them for the chunk, each for columns 4j .. 4j + 3 of both
 *    rows, from the chunk shifted right by 8 (j - 1) bits (j = 0: the previous chunk's last
 *    8 bits funnel-shifted in);
 *  - the byte B of step i is A of step i - 4: the previous group's bytes, and for j = 0 the
 *    last group of the previous chunk (row 2k - 1) and of this one (row 2k), one VPSHRDQ;
 *  - GF2P8MULB (A B in GF(2^8)), VPERMI2B into the 128 levels stored as level + 128 (unsigned
 *    bytes, the low 7 bits of the product index the table);
 *  - two VPDPBUSD per 64 weights: the unsigned levels times the activations' high and low
 *    signed bytes (x = 256 xh + xl, |x| <= 32639), exact int32 sums; the +128 of every level
 *    comes back out as 128 times the sum of x over the row, the same for every row.
 * The 16 accumulators (8 row pairs, high and low) stay in registers across the column tiles of
 * a segment (at most SEG tiles: |sum| < 2^31) and are added as int64 per row.
 *
 * K = 4 reads the same way: a K = 4 stream is a K = 2 stream whose odd half-steps are the
 * steps (the byte A of half-step 2i + 1 is step i's, and its byte B, A of half-step 2i - 3, is
 * step i - 2's A), so the chunk yields 32 values of which the 16 at odd half-steps are the row's
 * weights; their activation bytes sit at the odd byte positions of 64-bit words, zeros between.
 * Half the multiplies are wasted, the code bytes per weight double: at 4 bits the kernel reads
 * twice the bytes per weight of K = 2 at about the same instruction count per weight as 1mul's
 * int16 kernel.  A tile's 16 rows are 16 chunks, taken as two halves of 8 so that 16
 * accumulators still suffice; chunk 0 of a half follows the other half's chunk 7. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "matvec_impl.h"
#include "tqp/trellis.h"

#define INLINE static inline __attribute__((always_inline))
#ifndef PREFETCH
#define PREFETCH 2048
#endif
enum { SEG = 2048 }; /* column tiles per segment: 2048 * 16 * 253 * 128 < 2^31 */

/* Bit offsets of the 8 bytes A that one VPMULTISHIFTQB takes: columns 0..3 of row 2k (steps
 * 0..3: bits 2i - 6 + 8 of the source shifted by -8) and of row 2k + 1 (steps 16..19). */
#define CTL 0x2826242208060402ll

INLINE void tables(__m512i *t0, __m512i *t1)
{
    uint8_t u[128];
    for (int i = 0; i < 128; i++) u[i] = (uint8_t)(tqp_gf8_levels[i] + 128);
    *t0 = _mm512_loadu_si512(u);
    *t1 = _mm512_loadu_si512(u + 64);
}

/* The levels (+128) of chunk k of tile ct: v[j] = columns 4j .. 4j + 3 of rows 2k (bytes 0..3
 * of each lane) and 2k + 1 (bytes 4..7).  *xp: the previous chunk's 64 bits; *g3: its v[3]
 * bytes A. */
INLINE void chunk_levels(const uint64_t *Wt, int k, __m512i *xp, __m512i *g3, __m512i t0,
                         __m512i t1, __m512i v[4])
{
    const __m512i ctl = _mm512_set1_epi64(CTL);
    __m512i X = _mm512_load_si512(Wt + 8 * k);
    __m512i a0 = _mm512_multishift_epi64_epi8(ctl, _mm512_shrdi_epi64(*xp, X, 56));
    __m512i a1 = _mm512_multishift_epi64_epi8(ctl, X);
    __m512i a2 = _mm512_multishift_epi64_epi8(ctl, _mm512_srli_epi64(X, 8));
    __m512i a3 = _mm512_multishift_epi64_epi8(ctl, _mm512_srli_epi64(X, 16));
    __m512i b0 = _mm512_shrdi_epi64(*g3, a3, 32); /* steps -4..-1 and 12..15 */
    v[0] = _mm512_permutex2var_epi8(t0, _mm512_gf2p8mul_epi8(a0, b0), t1);
    v[1] = _mm512_permutex2var_epi8(t0, _mm512_gf2p8mul_epi8(a1, a0), t1);
    v[2] = _mm512_permutex2var_epi8(t0, _mm512_gf2p8mul_epi8(a2, a1), t1);
    v[3] = _mm512_permutex2var_epi8(t0, _mm512_gf2p8mul_epi8(a3, a2), t1);
    *xp = X;
    *g3 = a3;
}

/* The bytes of the chunk before chunk 0 (Wp: its 8 words; the stream is circular). */
INLINE void tile_start(const uint64_t *Wp, __m512i *xp, __m512i *g3)
{
    *xp = _mm512_load_si512(Wp);
    *g3 = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(CTL), _mm512_srli_epi64(*xp, 16));
}

/* K = 2: dword activations (both rows of the chunk take columns 4j .. 4j + 3); K = 4: qword
 * activations, zero under the bytes of the even half-steps. */
#define DOT(k, H, L)                                                                               \
    do {                                                                                           \
        __m512i v[4];                                                                              \
        chunk_levels(Wt, k, &xp, &g3, t0, t1, v);                                                  \
        for (int j = 0; j < 4; j++) {                                                              \
            __m512i ah = K == 2 ? _mm512_set1_epi32(x[2 * j]) : _mm512_set1_epi64(x8[2 * j]);      \
            __m512i al = K == 2 ? _mm512_set1_epi32(x[2 * j + 1]) : _mm512_set1_epi64(x8[2 * j + 1]); \
            H = _mm512_dpbusd_epi32(H, v[j], ah);                                                  \
            L = _mm512_dpbusd_epi32(L, v[j], al);                                                  \
        }                                                                                          \
    } while (0)

/* Group g: K = 2 in one pass (chunk c: rows 2c, 2c + 1), K = 4 in two halves (chunk c of half
 * h: row 8h + c, its predecessor for c = 0 the other half's last chunk). */
INLINE void codes_group(const tqp_tmv_gf8_layout *k, const void *xb, int64_t sx, double f,
                        float *z, int g, const int K)
{
    __m512i t0, t1;
    tables(&t0, &t1);
    const int ncb = k->ncb, halves = K / 2;
    int64_t tot[128] = {0};
    for (int hf = 0; hf < halves; hf++)
        for (int s0 = 0; s0 < ncb; s0 += SEG) {
            int s1 = ncb - s0 < SEG ? ncb : s0 + SEG;
            const uint64_t *base = k->words + (size_t)(g * halves + hf) * ncb * 64;
            const uint64_t *pbase = k->words + (size_t)(g * halves + halves - 1 - hf) * ncb * 64;
            __m512i h0, h1, h2, h3, h4, h5, h6, h7, l0, l1, l2, l3, l4, l5, l6, l7;
            h0 = h1 = h2 = h3 = h4 = h5 = h6 = h7 = _mm512_setzero_si512();
            l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = _mm512_setzero_si512();
            for (int ct = s0; ct < s1; ct++) {
                const uint64_t *Wt = base + (size_t)ct * 64;
                const int32_t *x = (const int32_t *)xb + 8 * ct;
                const int64_t *x8 = (const int64_t *)xb + 8 * ct;
                for (int l = 0; l < 8; l++)
                    _mm_prefetch((const char *)(Wt + 8 * l) + PREFETCH, _MM_HINT_T0);
                __m512i xp, g3;
                tile_start(pbase + (size_t)ct * 64 + 56, &xp, &g3);
                DOT(0, h0, l0);
                DOT(1, h1, l1);
                DOT(2, h2, l2);
                DOT(3, h3, l3);
                DOT(4, h4, l4);
                DOT(5, h5, l5);
                DOT(6, h6, l6);
                DOT(7, h7, l7);
            }
            int32_t hh[8][16], ll[8][16];
            __m512i H[8] = {h0, h1, h2, h3, h4, h5, h6, h7}, L[8] = {l0, l1, l2, l3, l4, l5, l6, l7};
            for (int c = 0; c < 8; c++) {
                _mm512_storeu_si512(hh[c], H[c]);
                _mm512_storeu_si512(ll[c], L[c]);
            }
            /* lane 2j + d of chunk c: row 16 j + 2c + d (K = 2) or 16 j + 8 hf + c (K = 4) */
            for (int c = 0; c < 8; c++)
                for (int e = 0; e < 16; e++) {
                    int r = K == 2 ? 16 * (e >> 1) + 2 * c + (e & 1) : 16 * (e >> 1) + 8 * hf + c;
                    tot[r] += 256 * (int64_t)hh[c][e] + ll[c][e];
                }
        }
    for (int r = 0; r < 128; r++) {
        int row = 128 * g + r;
        if (row >= k->m) break;
        z[row] = (float)((double)(tot[r] - 128 * sx) * f);
    }
}

static void codes_2(const tqp_tmv_gf8_layout *k, const void *xb, int64_t sx, double f, float *z,
                    int g)
{
    codes_group(k, xb, sx, f, z, g, 2);
}

static void codes_4(const tqp_tmv_gf8_layout *k, const void *xb, int64_t sx, double f, float *z,
                    int g)
{
    codes_group(k, xb, sx, f, z, g, 4);
}

void tqp_tmv_codes_gf8_avx512(const tqp_tmv_gf8_layout *k, const void *xb, int64_t sx, double f,
                              float *z, int g0, int g1)
{
    for (int g = g0; g < g1; g++) (k->K == 2 ? codes_2 : codes_4)(k, xb, sx, f, z, g);
}

double tqp_tmv_quantize_gf8_avx512(const float *x, int n, int K, int8_t *xb, int64_t *sx)
{
    int8_t *b2 = K == 2 ? xb : xb + 4 * n; /* K = 4: the K = 2 bytes after the qwords */
    __m512 mx = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    float m = _mm512_reduce_max_ps(mx);
    double step = m > 0 ? m / 32639.0 : 1;
    const __m512d inv = _mm512_set1_pd(1 / step);
    const __m256i bias = _mm256_set1_epi32(32768 + 128), c128 = _mm256_set1_epi32(128);
    __m512i sum = _mm512_setzero_si512();
    for (int i = 0; i < n; i += 8) {
        /* round to nearest even (the default rounding mode), as lrint */
        __m256i q = _mm512_cvtpd_epi32(_mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), inv));
        __m256i xh = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_add_epi32(q, bias), 8), c128);
        __m256i xl = _mm256_sub_epi32(q, _mm256_slli_epi32(xh, 8));
        __m128i h8 = _mm256_cvtepi32_epi8(xh), l8 = _mm256_cvtepi32_epi8(xl);
        _mm_storeu_si128((__m128i *)(b2 + 2 * i), _mm_unpacklo_epi32(h8, l8));
        sum = _mm512_add_epi64(sum, _mm512_cvtepi32_epi64(q));
    }
    *sx = _mm512_reduce_add_epi64(sum);
    /* K = 4: per 16-column block and group j, the qwords (high, low) of bytes
     * (0, x[2j], 0, x[2j + 1], 0, x[8 + 2j], 0, x[8 + 2j + 1]) */
    if (K == 4)
        for (int ct = 0; ct < n / 16; ct++)
            for (int j = 0; j < 4; j++)
                for (int hl = 0; hl < 2; hl++) {
                    int8_t *d = xb + 64 * ct + 16 * j + 8 * hl;
                    static const int col[4] = {0, 1, 8, 9};
                    for (int q = 0; q < 4; q++) {
                        int c = 2 * j + col[q];
                        d[2 * q] = 0;
                        d[2 * q + 1] = b2[32 * ct + 2 * (c & ~3) + 4 * hl + (c & 3)];
                    }
                }
    return step;
}

void tqp_tmv_decode_gf8_avx512(const tqp_tmv_gf8_layout *k, float *W, int g0, int g1)
{
    __m512i t0, t1;
    tables(&t0, &t1);
    const int ncb = k->ncb, n = k->n, K = k->K, halves = K / 2;
    for (int g = g0; g < g1; g++)
        for (int hf = 0; hf < halves; hf++)
            for (int ct = 0; ct < ncb; ct++) {
                const uint64_t *Wt = k->words + ((size_t)(g * halves + hf) * ncb + ct) * 64;
                const uint64_t *Wp =
                    k->words + ((size_t)(g * halves + halves - 1 - hf) * ncb + ct) * 64 + 56;
                __m512i xp, g3;
                tile_start(Wp, &xp, &g3);
                for (int c = 0; c < 8; c++) {
                    __m512i v[4];
                    uint8_t b[4][64];
                    chunk_levels(Wt, c, &xp, &g3, t0, t1, v);
                    for (int j = 0; j < 4; j++) _mm512_storeu_si512(b[j], v[j]);
                    for (int band = 0; band < 8; band++)
                        for (int q = 0; q < 16; q++) {
                            /* K = 2: step q of row 2c + d sits in group j = (q % 16) / 4, byte
                             * 4d + q % 4; K = 4: column q of row 8 hf + c is half-step 2q + 1,
                             * group (q % 8) / 2, byte 4 (q / 8) + 2 (q % 2) + 1 */
                            for (int d = 0; d < (K == 2 ? 2 : 1); d++) {
                                int row = 128 * g + 16 * band + (K == 2 ? 2 * c + d : 8 * hf + c);
                                if (row >= k->m) continue;
                                int j = K == 2 ? q / 4 : (q % 8) / 2;
                                int by = K == 2 ? 4 * d + q % 4 : 4 * (q / 8) + 2 * (q % 2) + 1;
                                W[(size_t)row * n + 16 * ct + q] =
                                    (float)((int)b[j][8 * band + by] - 128) / (float)TQP_GF8_SCALE;
                            }
                        }
                }
            }
}
