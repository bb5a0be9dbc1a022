/* Internal to matvec.c and its SIMD kernels: the prepared layout (include/tqp/matvec.h).
 *
 * words: for each group of 16 bands (256 rows) and each 16-column block, the Wt = 256 K / 32
 * words of the 16 tiles, word w of band j at [w * 16 + j]: band 16 g + j's tile rewritten so
 * that its chunks (KV bits each) run from the most significant bit of word 0 onwards, chunk 0
 * first.  The state of step i is then the L bits that end at bit (i + 1) KV of this circular
 * stream.  Bands past the last (m not a multiple of 256) are zero words, their sums dropped. */
#ifndef TQP_MATVEC_IMPL_H
#define TQP_MATVEC_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/rot.h"

typedef struct {
    int m, n, L, K, V, code; // code: tqp_tcode
    int groups, ncb, Wt;     // groups of 16 bands, 16-column blocks, words per tile
    const uint32_t *words;   // 64-byte aligned
    const float *table;      // (2^L, V) code values (gathered codes)
} tqp_tmv_layout;

/* Words of the layout above for W (m, n) at K bits: groups * ncb * Wt * 16. */
size_t tqp_tmv_words_count(int m, int n, int K);
/* The words of the layout above for W (m, n), both multiples of 16, from tiles in tcq order:
 * tqp_tmv_words_count words, zeroed by the caller. */
void tqp_tmv_build_words(const uint8_t *packed, int m, int n, int K, int V, uint32_t *words);

/* z[16 g * 16 ..] for groups g0 .. g1-1: the products in code units, except 1mad, whose
 * values come out as (byte sum - 510): the caller divides by 147.800537109375. */
void tqp_tmv_codes_avx512(const tqp_tmv_layout *k, const float *xr, float *z, int g0, int g1);
/* Decode groups g0 .. g1-1 into W (m, n) row-major, in code units (bit-identical to the table). */
void tqp_tmv_decode_avx512(const tqp_tmv_layout *k, float *W, int g0, int g1);
/* The same two with AVX2 (src/matvec_avx2.c). */
void tqp_tmv_codes_avx2(const tqp_tmv_layout *k, const float *xr, float *z, int g0, int g1);
void tqp_tmv_decode_avx2(const tqp_tmv_layout *k, float *W, int g0, int g1);

/* The int16 layout of code 1mul (trellis.h), for the avx512-i16 kernel: per group of 16 bands
 * and pair q of 16-column blocks (2q, 2q + 1; a missing last block is zero codes, its
 * activations zero), the 16 K 16-bit words of the tiles' streams, word w at [32 w + 2 j + h]
 * for band j's tile 2q + h (most significant bit first, as the 32-bit layout).  A 32-bit lane
 * thus holds one band's two tiles, whose values multiply the activation pair (x[32q + c],
 * x[32q + 16 + c]) in one VPDPWSSD: both products belong to the band's row. */
typedef struct {
    int m, n, K, groups, npairs;
    const uint16_t *words; // 64-byte aligned
} tqp_tmv_i16_layout;

size_t tqp_tmv_i16_words_count(int m, int n, int K);
void tqp_tmv_build_i16(const uint8_t *packed, int m, int n, int K, uint16_t *words);
/* z[16 g * 16 ..] for groups g0 .. g1-1: sum over the row of level * activation, as float, for
 * activations xq quantized to int16 and given as pairs xp[16 q + c] = (xq[32 q + c],
 * xq[32 q + 16 + c]); the caller scales by the activations' step / 256. */
void tqp_tmv_codes_i16_avx512(const tqp_tmv_i16_layout *k, const int32_t *xp, float *z, int g0,
                              int g1);
/* Decode groups g0 .. g1-1 into W (m, n) row-major, code units (the levels / 256). */
void tqp_tmv_decode_i16_avx512(const tqp_tmv_i16_layout *k, float *W, int g0, int g1);

/* The byte layout of code gf8 at K = 2 or 4 (trellis.h), for the avx512-gf8 kernel
 * (src/matvec_gf8.c): per group g of 8 bands (128 rows), half h of the tiles' rows (K = 2: one
 * half, all 16 rows; K = 4: rows 0-7, then 8-15) and 16-column block ct, 8 chunks of 8 64-bit
 * words, word [64 ((g H + h) ncb + ct) + 8 c + j] (H = K / 2) holding bits
 * [64 (8 h + c), + 64) of band 8 g + j's tile stream, where bit b of step i's K bits is at bit
 * K i + K - 1 - b.  A byte cut out of the stream at bit K i + K - 8 is then step i's byte A of
 * gf8; at K = 4 step i is the half-step 2 i + 1 of the K = 2 reading.  Bands past the last are
 * zero words, their sums dropped. */
typedef struct {
    int m, n, K, groups, ncb;
    const uint64_t *words; // 64-byte aligned
} tqp_tmv_gf8_layout;

size_t tqp_tmv_gf8_words_count(int m, int n, int K);
void tqp_tmv_build_gf8(const uint8_t *packed, int m, int n, int K, uint64_t *words);
/* z[128 g ..] for groups g0 .. g1-1: f (sum over the row of level * xq - 128 sx), the
 * activations as tqp_tmv_quantize_gf8_avx512 wrote them; sx the sum of xq over the row. */
void tqp_tmv_codes_gf8_avx512(const tqp_tmv_gf8_layout *k, const void *xb, int64_t sx, double f,
                              float *z, int g0, int g1);
/* The activations of the kernel above from x (n, a multiple of 16): xq = lrint(x / step) in
 * double, step = max |x| / 32639 (1 when x is zero), xq = 256 xh + xl with xl in -128 .. 127, as
 * bytes in xb: K = 2 (2 n bytes): per 4 columns the 4 bytes xh, then the 4 bytes xl; K = 4 (6 n
 * bytes: 4 n, then the K = 2 bytes as scratch): per 16-column block and j = 0..3 two 64-bit words
 * (xh, then xl) of bytes (0, x[2j], 0, x[2j + 1], 0, x[8 + 2j], 0, x[8 + 2j + 1]).  *sx = sum of
 * xq.  Returns the step. */
double tqp_tmv_quantize_gf8_avx512(const float *x, int n, int K, int8_t *xb, int64_t *sx);
/* Decode groups g0 .. g1-1 into W (m, n) row-major, code units (the levels / 47). */
void tqp_tmv_decode_gf8_avx512(const tqp_tmv_gf8_layout *k, float *W, int g0, int g1);

/* The step of the int16 kernels' activations: max |x| / 32767 (1 when x is zero); each x[i]
 * is then lrint(x[i] / step), at most 32767 in magnitude. */
double tqp_mv_i16_step(const float *x, int n);

/* The rotations around a product in code units, shared by the trellis and E8P operators:
 * xr (n) = V x as floats, and y (m) = scale U^T z; rot NULL or of kind none: identity.  dx and
 * scratch: max(m, n) doubles each. */
void tqp_mv_rotate_in(const tqp_rot *rot, const float *x, float *xr, int n, double *dx,
                      double *scratch);
void tqp_mv_rotate_out(const tqp_rot *rot, double scale, const float *z, float *y, int m,
                       double *dx, double *scratch);

#endif
