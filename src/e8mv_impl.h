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

#endif
