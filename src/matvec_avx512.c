/* AVX-512 kernels of the fused decode + matrix-vector product (include/tqp/matvec.h, layout in
 * src/matvec_impl.h): one band per lane, 16 bands per instruction.  Compiled with
 * -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512vbmi2; chosen at run time.
 *
 * A period is KV words of a tile, 32 steps: the state of step k ends at bit (k + 1) KV of the
 * period, so with KV a compile-time constant every word index and shift count is a constant.
 * V = 1: a period is two rows of the tile; V = 2: four rows (eight steps each). */
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

/* VPSHLDD with its count as an immediate (non-destructive, unlike the variable form): the
 * count is a constant wherever the kernels call it, so the switch folds away. */
INLINE __m512i shld(__m512i a, __m512i b, const int cnt)
{
    switch (cnt) {
#define C_(i) case i: return _mm512_shldi_epi32(a, b, i);
        C_(1) C_(2) C_(3) C_(4) C_(5) C_(6) C_(7) C_(8) C_(9) C_(10) C_(11) C_(12) C_(13) C_(14)
        C_(15) C_(16) C_(17) C_(18) C_(19) C_(20) C_(21) C_(22) C_(23) C_(24) C_(25) C_(26)
        C_(27) C_(28) C_(29) C_(30) C_(31)
#undef C_
    default: return a;
    }
}

/* The state of step k (0..31) of the period at p (word w of lane j at p[16 w + j]); prev: the
 * word before the period (the tile's last word for the first period: the stream is circular). */
INLINE __m512i state_at(const uint32_t *p, __m512i prev, const int KV, const int k, __m512i lmask)
{
    const int e = (k + 1) * KV, wl = (e - 1) >> 5, cnt = e - 32 * wl; /* cnt in 1..32 */
    __m512i b = _mm512_load_si512(p + 16 * wl), s;
    if (cnt == 32) {
        s = b;
    } else {
        __m512i a = wl ? _mm512_load_si512(p + 16 * (wl - 1)) : prev;
        s = shld(a, b, cnt); /* high word of (a:b) << cnt */
    }
    return _mm512_and_si512(s, lmask);
}

/* V = 1 code values: 1mad as (byte sum - 510), the others exactly as the code table. */
INLINE __m512 value_v1(const int code, __m512i s, const float *table)
{
    if (code == TQP_TCODE_1MAD) {
        __m512i x = _mm512_add_epi32(_mm512_mullo_epi32(s, _mm512_set1_epi32(34038481)),
                                     _mm512_set1_epi32(76625530));
        __m512i sum = _mm512_dpbusd_epi32(_mm512_set1_epi32(-510), x,
                                          _mm512_set1_epi32(0x01010101));
        return _mm512_cvtepi32_ps(sum);
    }
    if (code == TQP_TCODE_3INST) {
        __m512i x = _mm512_add_epi32(_mm512_mullo_epi32(s, _mm512_set1_epi32(89226354)),
                                     _mm512_set1_epi32(64248484));
        /* y = (x & 0x8FFF8FFF) ^ 0x3B603B60: two fp16 whose exponents are 011xx (12..15),
         * normal numbers, so each converts by moving its bits and rebiasing the exponent:
         * f32 = sign | (exponent + 112) << 23 | mantissa << 13.  After an arithmetic shift
         * right by 3 of the half in the high 16 bits, the exponent sits in bits 27..23 as
         * 011xx; keeping the sign and bits 24..13 and setting bits 29..25 gives 011111xx. */
        __m512i y = _mm512_ternarylogic_epi32(x, _mm512_set1_epi32((int)0x8FFF8FFFu),
                                              _mm512_set1_epi32(0x3B603B60), 0x6A);
        __m512i keep = _mm512_set1_epi32((int)0x81FFE000u), set = _mm512_set1_epi32(0x3E000000);
        __m512i hi = _mm512_ternarylogic_epi32(_mm512_srai_epi32(y, 3), keep, set, 0xEA);
        __m512i lo = _mm512_ternarylogic_epi32(_mm512_srai_epi32(_mm512_slli_epi32(y, 16), 3),
                                               keep, set, 0xEA);
        return _mm512_add_ps(_mm512_castsi512_ps(hi), _mm512_castsi512_ps(lo));
    }
    return _mm512_i32gather_ps(s, table, 4);
}

static const int even_idx[16] = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
static const int odd_idx[16] = {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31};

/* V = 2: the value pairs of lanes 0..7 (lo) and 8..15 (hi), interleaved (c0, c1) per lane. */
INLINE void pairs_v2(__m512i s, const float *table, __m512 *lo, __m512 *hi)
{
    *lo = _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_castsi512_si256(s), table, 8));
    *hi = _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_extracti64x4_epi64(s, 1), table, 8));
}

/* Lane j of the result: a[2j] + a[2j + 1] over the 32 lanes of (lo, hi). */
INLINE __m512 pair_sums(__m512 lo, __m512 hi)
{
    __m512i e = _mm512_loadu_si512(even_idx), o = _mm512_loadu_si512(odd_idx);
    return _mm512_add_ps(_mm512_permutex2var_ps(lo, e, hi), _mm512_permutex2var_ps(lo, o, hi));
}

/* Write the 16 x 16 sums (acc[r], lane j = row r of band j) of group g to z. */
static void store_group(const tqp_tmv_layout *k, const __m512 *acc, int g, float *z)
{
    float t[16][16];
    for (int r = 0; r < 16; r++) _mm512_storeu_ps(t[r], acc[r]);
    for (int j = 0; j < 16; j++) {
        int row0 = (16 * g + j) * 16;
        if (row0 >= k->m) break;
        for (int r = 0; r < 16; r++) z[row0 + r] = t[r][j];
    }
}

INLINE void codes_group(const tqp_tmv_layout *k, const float *xr, float *z, int g, const int V,
                        const int KV, const int code)
{
    const size_t tile = (size_t)k->Wt * 16;
    const uint32_t *Wg = k->words + (size_t)g * k->ncb * tile;
    const __m512i lmask = _mm512_set1_epi32((int)((1u << k->L) - 1));
    __m512 acc[16];
    for (int r = 0; r < 16; r++) acc[r] = _mm512_setzero_ps();
    for (int cb = 0; cb < k->ncb; cb++) {
        const uint32_t *Wt = Wg + cb * tile;
        const float *xc = xr + 16 * cb;
        __m512i prev = _mm512_load_si512(Wt + tile - 16);
        if (V == 1) {
            for (int p = 0; p < 8; p++) {
                const uint32_t *pp = Wt + 16 * KV * p;
                for (int l = 0; l < KV; l++) /* the codes PREFETCH bytes ahead, one line a word */
                    _mm_prefetch((const char *)(pp + 16 * l) + PREFETCH, _MM_HINT_T0);
                __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++)
                    a0 = _mm512_fmadd_ps(value_v1(code, state_at(pp, prev, KV, c, lmask), k->table),
                                         _mm512_set1_ps(xc[c]), a0);
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++)
                    a1 = _mm512_fmadd_ps(
                        value_v1(code, state_at(pp, prev, KV, 16 + c, lmask), k->table),
                        _mm512_set1_ps(xc[c]), a1);
                acc[2 * p] = _mm512_add_ps(acc[2 * p], a0);
                acc[2 * p + 1] = _mm512_add_ps(acc[2 * p + 1], a1);
                prev = _mm512_load_si512(pp + 16 * (KV - 1));
            }
        } else {
            for (int p = 0; p < 4; p++) {
                const uint32_t *pp = Wt + 16 * KV * p;
                for (int l = 0; l < KV; l++)
                    _mm_prefetch((const char *)(pp + 16 * l) + PREFETCH, _MM_HINT_T0);
#pragma GCC unroll 4
                for (int r = 0; r < 4; r++) {
                    __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
#pragma GCC unroll 8
                    for (int c = 0; c < 8; c++) {
                        __m512 plo, phi;
                        pairs_v2(state_at(pp, prev, KV, 8 * r + c, lmask), k->table, &plo, &phi);
                        double xp;
                        memcpy(&xp, xc + 2 * c, sizeof xp); /* (x[2c], x[2c + 1]) */
                        __m512 xv = _mm512_castpd_ps(_mm512_set1_pd(xp));
                        lo = _mm512_fmadd_ps(plo, xv, lo);
                        hi = _mm512_fmadd_ps(phi, xv, hi);
                    }
                    acc[4 * p + r] = _mm512_add_ps(acc[4 * p + r], pair_sums(lo, hi));
                }
                prev = _mm512_load_si512(pp + 16 * (KV - 1));
            }
        }
    }
    store_group(k, acc, g, z);
}

/* Decoded values of the group's tiles in column block cb: vals[i] lane j = weight i of band
 * j's tile. */
INLINE void decode_tiles(const tqp_tmv_layout *k, const uint32_t *Wt, __m512 *vals, const int V,
                         const int KV, const int code)
{
    const size_t tile = (size_t)k->Wt * 16;
    const __m512i lmask = _mm512_set1_epi32((int)((1u << k->L) - 1));
    __m512i prev = _mm512_load_si512(Wt + tile - 16);
    const int periods = 256 / (32 * V);
    for (int p = 0; p < periods; p++) {
        const uint32_t *pp = Wt + 16 * KV * p;
#pragma GCC unroll 32
        for (int c = 0; c < 32; c++) {
            __m512i s = state_at(pp, prev, KV, c, lmask);
            if (V == 1) {
                vals[32 * p + c] = value_v1(code, s, k->table);
            } else {
                __m512 lo, hi;
                pairs_v2(s, k->table, &lo, &hi);
                __m512i e = _mm512_loadu_si512(even_idx), o = _mm512_loadu_si512(odd_idx);
                vals[64 * p + 2 * c] = _mm512_permutex2var_ps(lo, e, hi);
                vals[64 * p + 2 * c + 1] = _mm512_permutex2var_ps(lo, o, hi);
            }
        }
        prev = _mm512_load_si512(pp + 16 * (KV - 1));
    }
}

/* r[i] lane j -> r[j] lane i (16 x 16 floats): pairs, quads, then 128-bit lanes twice. */
static inline void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8)
        for (int i = 0; i < 4; i++) {
            t[h + i] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0x88);
            t[h + i + 4] = _mm512_shuffle_f32x4(r[h + i], r[h + i + 4], 0xDD);
        }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

INLINE void decode_group(const tqp_tmv_layout *k, float *W, int g, const int V, const int KV,
                         const int code)
{
    const size_t tile = (size_t)k->Wt * 16;
    const uint32_t *Wg = k->words + (size_t)g * k->ncb * tile;
    __m512 vals[256];
    for (int cb = 0; cb < k->ncb; cb++) {
        decode_tiles(k, Wg + cb * tile, vals, V, KV, code);
        if (code == TQP_TCODE_1MAD) /* (sum - 510) / 147.8...: the float64 product with the
                                     * reciprocal rounds to the same float for all 1021 sums */
            for (int i = 0; i < 256; i++) {
                const __m512d rcp = _mm512_set1_pd(1 / 147.800537109375);
                __m256 lo = _mm512_castps512_ps256(vals[i]);
                __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(vals[i]), 1));
                lo = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(lo), rcp));
                hi = _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_cvtps_pd(hi), rcp));
                vals[i] = _mm512_castpd_ps(_mm512_insertf64x4(
                    _mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
            }
        for (int r = 0; r < 16; r++) {
            __m512 *v = vals + 16 * r; /* v[c] lane j: row r, column c of band j */
            transpose16(v);            /* v[j] lane c */
            for (int j = 0; j < 16; j++) {
                int row = (16 * g + j) * 16 + r;
                if (row >= k->m) break;
                float *dst = W + (size_t)row * k->n + 16 * cb;
                if (((uintptr_t)dst & 63) == 0) /* whole lines: no read for ownership */
                    _mm512_stream_ps(dst, v[j]);
                else
                    _mm512_storeu_ps(dst, v[j]);
            }
        }
    }
    _mm_sfence();
}

#define CODES_NAME tqp_tmv_codes_avx512
#define DECODE_NAME tqp_tmv_decode_avx512
#include "matvec_simd.h"

/* ---- code 1mul on the int16 layout (matvec_impl.h): 32 lanes of 16 bits, two tiles of a band
 * per 32-bit lane; per step one funnel shift (the state), a multiply and a shift (the hash), a
 * two-register word permute (the level) and VPDPWSSD with the activation pair, accumulated
 * exactly in int32 over a row of the tile pair (16 steps: at most 32 x 619 x 32767 < 2^31) and
 * then added as float. */

INLINE __m512i shld16(__m512i a, __m512i b, const int cnt)
{
    switch (cnt) {
#define C_(i) case i: return _mm512_shldi_epi16(a, b, i);
        C_(1) C_(2) C_(3) C_(4) C_(5) C_(6) C_(7) C_(8) C_(9) C_(10) C_(11) C_(12) C_(13) C_(14)
        C_(15)
#undef C_
    default: return a;
    }
}

/* The 16-bit state of step i of the tile pair at Wq (word w at Wq[32 w]): the bits
 * [e - 16, e) of the stream, e = (i + 1) K; prev is the last word (the stream is circular). */
INLINE __m512i state16(const uint16_t *Wq, __m512i prev, const int K, const int i)
{
    const int e = (i + 1) * K, wl = (e - 1) >> 4, cnt = e - 16 * wl; /* cnt in 1..16 */
    __m512i b = _mm512_load_si512(Wq + 32 * wl);
    if (cnt == 16) return b;
    __m512i a = wl ? _mm512_load_si512(Wq + 32 * (wl - 1)) : prev;
    return shld16(a, b, cnt);
}

/* The int16 levels of 32 states. */
INLINE __m512i level16(__m512i s, __m512i t0, __m512i t1)
{
    __m512i h = _mm512_srli_epi16(_mm512_mullo_epi16(s, _mm512_set1_epi16(TQP_1MUL_MULT)), 10);
    return _mm512_permutex2var_epi16(t0, h, t1);
}

INLINE void level_tables(__m512i *t0, __m512i *t1)
{
    *t0 = _mm512_loadu_si512(tqp_1mul_levels);
    *t1 = _mm512_loadu_si512(tqp_1mul_levels + 32);
}

INLINE void codes_i16_group(const tqp_tmv_i16_layout *k, const int32_t *xp, float *z, int g,
                            const int K)
{
    const size_t tile = (size_t)16 * K * 32;
    const uint16_t *Wg = k->words + (size_t)g * k->npairs * tile;
    __m512i t0, t1;
    level_tables(&t0, &t1);
    __m512 facc[16];
    for (int r = 0; r < 16; r++) facc[r] = _mm512_setzero_ps();
    for (int q = 0; q < k->npairs; q++) {
        const uint16_t *Wq = Wg + q * tile;
        const int32_t *x = xp + 16 * q;
        __m512i prev = _mm512_load_si512(Wq + tile - 32);
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++) {
            for (int l = 0; l < K; l++) /* a row uses K words: prefetch them PREFETCH ahead */
                _mm_prefetch((const char *)(Wq + 32 * (K * r + l)) + PREFETCH, _MM_HINT_T0);
            __m512i acc = _mm512_setzero_si512();
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++)
                acc = _mm512_dpwssd_epi32(acc, level16(state16(Wq, prev, K, 16 * r + c), t0, t1),
                                          _mm512_set1_epi32(x[c]));
            facc[r] = _mm512_add_ps(facc[r], _mm512_cvtepi32_ps(acc));
        }
    }
    float t[16][16];
    for (int r = 0; r < 16; r++) _mm512_storeu_ps(t[r], facc[r]);
    for (int j = 0; j < 16; j++) {
        int row0 = (16 * g + j) * 16;
        if (row0 >= k->m) break;
        for (int r = 0; r < 16; r++) z[row0 + r] = t[r][j];
    }
}

INLINE void decode_i16_group(const tqp_tmv_i16_layout *k, float *W, int g, const int K)
{
    const size_t tile = (size_t)16 * K * 32;
    const uint16_t *Wg = k->words + (size_t)g * k->npairs * tile;
    int ncb = k->n / 16;
    __m512i t0, t1;
    level_tables(&t0, &t1);
    int16_t lv[256][32];
    for (int q = 0; q < k->npairs; q++) {
        const uint16_t *Wq = Wg + q * tile;
        __m512i prev = _mm512_load_si512(Wq + tile - 32);
#pragma GCC unroll 16
        for (int i = 0; i < 256; i++)
            _mm512_storeu_si512(lv[i], level16(state16(Wq, prev, K, i), t0, t1));
        for (int j = 0; j < 16; j++)
            for (int h = 0; h < 2 && 2 * q + h < ncb; h++)
                for (int i = 0; i < 256; i++) {
                    int row = (16 * g + j) * 16 + i / 16;
                    if (row >= k->m) break;
                    W[(size_t)row * k->n + 16 * (2 * q + h) + i % 16] =
                        (float)lv[i][2 * j + h] / 256.0f;
                }
    }
}

#define I16_INSTANCE(K)                                                                            \
    static void codes_i16_##K(const tqp_tmv_i16_layout *k, const int32_t *xp, float *z, int g0,   \
                              int g1)                                                              \
    {                                                                                              \
        for (int g = g0; g < g1; g++) codes_i16_group(k, xp, z, g, K);                             \
    }                                                                                              \
    static void decode_i16_##K(const tqp_tmv_i16_layout *k, float *W, int g0, int g1)             \
    {                                                                                              \
        for (int g = g0; g < g1; g++) decode_i16_group(k, W, g, K);                                \
    }
I16_INSTANCE(1)
I16_INSTANCE(2)
I16_INSTANCE(3)
I16_INSTANCE(4)

void tqp_tmv_codes_i16_avx512(const tqp_tmv_i16_layout *k, const int32_t *xp, float *z, int g0,
                              int g1)
{
    static void (*const fn[4])(const tqp_tmv_i16_layout *, const int32_t *, float *, int,
                               int) = {codes_i16_1, codes_i16_2, codes_i16_3, codes_i16_4};
    fn[k->K - 1](k, xp, z, g0, g1);
}

void tqp_tmv_decode_i16_avx512(const tqp_tmv_i16_layout *k, float *W, int g0, int g1)
{
    static void (*const fn[4])(const tqp_tmv_i16_layout *, float *, int, int) = {
        decode_i16_1, decode_i16_2, decode_i16_3, decode_i16_4};
    fn[k->K - 1](k, W, g0, g1);
}
