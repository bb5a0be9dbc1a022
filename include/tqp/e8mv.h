/* Batch-1 inference on E8P-coded weights (e8p.h): y = W x straight from the stored codes, the
 * fused decode + matrix-vector product, never materializing W.  The same operator shape as the
 * trellis one (matvec.h): W = s U^T Ŵ V, so y = s U^T (Ŵ (V x)).
 *
 * A code of the first stage is (pattern k, sign byte s); with p the parity of s the 8 values
 * are b_k with the coordinates of s XOR p negated, plus 1/4 (p = 0) or -1/4 (p = 1), b_k being
 * the pattern's base (its absolute values with coordinate 7 negated when their sum is odd).
 * So a row's product over a column block j is
 *
 *     sum_i (±b_ki) x_8j+i  +  (1 - 2p) / 4 * sum_i x_8j+i:
 *
 * the block sums of x are computed once per product, and the per-weight work is a table load
 * (256 bases of 8 floats, 8 KB: decoding is a lookup, not a hash), a sign flip and an FMA.
 * The 3- and 4-bit residual stage adds (E81B point or second E8P point) / rs.
 *
 * Kernels:
 *   - reference: plain C over the codes as stored (any shape);
 *   - avx512: the codes rewritten at preparation into, per band of 8 rows and column block,
 *     8 pattern bytes, 8 sign bytes (s XOR p: one 64-bit mask, 16 lanes = two rows per
 *     instruction) and the 8 shift bits in one byte; AVX-512 F/BW/VL;
 *   - avx512-i16 (the avx512 kernel at 2 and 4 bits where the CPU also has VBMI and VNNI, and
 *     TQP_NO_I16 is unset): values in quarter units as 16-bit integers, from a layout of the 2
 *     magnitude bits of every coordinate, a sign mask and the shift bits; int16 activations and
 *     VPDPWSSD (docs/matvec.md); products within the activations' int16 rounding;
 *   - avx2: the same layout, one row per instruction, signs from a 256-entry table; AVX2 + FMA.
 * A last band of fewer than 8 rows is padded with zero codes (its extra sums dropped) and a
 * last block narrower than 8 columns reads zeros past x's end.  The prepared layout holds
 * (2 + 1/8) bytes per 8 weights and stage, 1/16 more than the file.  AUTO picks avx512, else
 * avx2, else the reference.  Decoded values are bit-identical in every kernel; products
 * differ only by float rounding order.
 */
#ifndef TQP_E8MV_H
#define TQP_E8MV_H

#include <stdint.h>

#include "tqp/error.h"
#include "tqp/matvec.h"
#include "tqp/rot.h"

typedef struct tqp_emv tqp_emv;

/* Prepare W (m, n) from its stored E8P codes (tqp_e8p_matrix_bytes(m, n, bits) bytes, the
 * "e8p-bands-8" order), bits 2, 3 or 4, the residual stage scale rs (ignored at 2 bits), the
 * scale s and the rotation (NULL: none; borrowed).  Asking for a kernel this CPU cannot run is
 * an error naming the reason. */
tqp_status tqp_emv_create(const uint8_t *packed, int m, int n, int bits, double rs,
                          double scale, const tqp_rot *rot, tqp_tmv_kernel kernel,
                          tqp_emv **out);
void tqp_emv_destroy(tqp_emv **op);
const char *tqp_emv_kernel_name(const tqp_emv *op);
/* Why the AVX-512 / AVX2 kernel cannot run on this CPU (NULL if it can). */
const char *tqp_emv_avx512_unavailable(void);
const char *tqp_emv_avx2_unavailable(void);
/* Why the avx512 kernel does not take its int16 form for `bits` (NULL if it does). */
const char *tqp_emv_i16_unavailable(int bits);

/* y (m) = W x (n).  Not thread-safe on one operator; threads share the bands. */
void tqp_emv_apply(tqp_emv *op, const float *x, float *y, int threads);
/* z (m) = Ŵ xr (n) in code units (no rotations, no scale): the kernel alone. */
void tqp_emv_apply_codes(tqp_emv *op, const float *xr, float *z, int threads);
/* Ŵ (m, n) row-major in code units with the operator's kernel.  A value is the first stage's
 * point, plus at 3 and 4 bits the second's times (float)(1 / rs), rounded once after the
 * product and once after the sum.  TQP_ENOMEM when its per-thread buffers cannot be had. */
tqp_status tqp_emv_decode(tqp_emv *op, float *W, int threads);

/* The reference of the tests: W in float64 (tqp_e8p_decode_matrix, inverse rotation, scale)
 * and y = W x accumulated in float64.  W: (m, n) doubles of scratch. */
tqp_status tqp_emv_reference(const uint8_t *packed, int m, int n, int bits, double rs,
                             double scale, const tqp_rot *rot, const float *x, double *W,
                             double *y);

#endif
