/* Internal to e8mv.c and its SIMD kernels: the prepared layout (include/tqp/e8mv.h).
 *
 * For band b (rows 8b .. 8b+7, the last padded with zero codes) and column block j, at
 * q = b * nb + j: k[8 q + r] the offset (8 x pattern: its first float in the table) of row r,
 * neg[8 q + r] its sign byte relative to the base (bit i: coordinate i negated), p[q] bit r:
 * row r's shift is -1/4.  Stage 2 at 4 bits has the same three arrays; at 3 bits only k2 (8 x
 * the E81B point).  Offsets rather than indexes spare the kernels a shift per row. */
#ifndef TQP_E8MV_IMPL_H
#define TQP_E8MV_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"

typedef struct {
    int bits, bands, nb;               // bands of 8 rows, column blocks of 8
    const uint16_t *k1, *k2;           // table offsets: first stage, second (3 and 4 bits)
    const uint8_t *neg1, *p1;          // first stage's signs and shifts
    const uint8_t *neg2, *p2;          // second stage's (4 bits only)
    const float *base;                 // (256, 8) pattern bases, 32-byte aligned
    const float *e81b;                 // (256, 8) the 3-bit stage's points
    const uint32_t *signs;             // (256, 8) byte -> sign bit of lane i when bit i is set
    const uint32_t *masks;             // (256, 8) byte -> all ones in lane i when bit i is set
    float sum_x;                       // the sum of xr (the products' shift terms)
    float inv_rs;                      // (float)(1 / rs)
} tqp_emv_layout;

/* The layout of W's stored codes (tqp_e8p_matrix_bytes of them): its bytes (tqp_emv_layout_size,
 * 64-byte aligned, the caller frees them) and *L pointing into them and at the tables. */
size_t tqp_emv_layout_size(int m, int n);
tqp_status tqp_emv_layout_build(const uint8_t *packed, int m, int n, int bits, double rs,
                                uint8_t **bytes, tqp_emv_layout *L);

/* z[8 b ..] for bands b0 .. b1-1 (8 values each, padded rows included) from xr (8 nb floats,
 * zero past n) and sx (nb block sums of xr). */
void tqp_emv_codes_avx512(const tqp_emv_layout *k, const float *xr, const float *sx, float *z,
                          int b0, int b1);
void tqp_emv_codes_avx2(const tqp_emv_layout *k, const float *xr, const float *sx, float *z,
                        int b0, int b1);
/* The decoded values of bands b0 .. b1-1 into W (8 nb columns, row-major, 8 rows per band,
 * band b0 first). */
void tqp_emv_decode_avx512(const tqp_emv_layout *k, float *W, int b0, int b1);
void tqp_emv_decode_avx2(const tqp_emv_layout *k, float *W, int b0, int b1);

/* The int16 layout (2 and 4 bits, AVX-512 VBMI + VNNI).  Values in quarter units: a first-
 * stage coordinate is sigma (4 c + 2) + tau, c in 0..3 its magnitude ((2 c + 1) / 2), sigma its
 * sign (the sign byte with the base's own negation of coordinate 7 folded in), tau the shift.
 * For band b, block j, q = b nb + j and half h (rows 4h .. 4h+3): mag[2 q + h] holds row 4h+r's
 * eight c at bits 16 r + 2 i; sgn[2 q + h] its sigma bits at bit 8 r + i (1: negative); tau[q]
 * bit r: row r's shift is -1/4.  25 bytes per 64 weights and stage: tqp_emv_layout_size. */
typedef struct {
    int bits, bands, nb;
    const uint64_t *mag[2]; // the two stages (the second at 4 bits only)
    const uint32_t *sgn[2];
    const uint8_t *tau[2];
    const uint32_t *masks; // (256, 8) byte -> all ones in lane i when bit i is set
    float inv_rs;
} tqp_emv_i16_layout;

tqp_status tqp_emv_i16_layout_build(const uint8_t *packed, int m, int n, int bits, double rs,
                                    uint8_t **bytes, tqp_emv_i16_layout *L);
/* z[8 b ..] for bands b0 .. b1-1 from xq (8 nb int16 activations, zero past n), sx its nb block
 * sums, stot their sum, step the activations' unit (xr ~ step xq). */
void tqp_emv_codes_i16(const tqp_emv_i16_layout *L, const int16_t *xq, const int32_t *sx,
                       double stot, double step, float *z, int b0, int b1);
void tqp_emv_decode_i16(const tqp_emv_i16_layout *L, float *W, int b0, int b1);

#endif
