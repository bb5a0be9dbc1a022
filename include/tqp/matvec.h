/* Batch-1 inference on trellis-coded weights: y = W x computed straight from the packed codes
 * (the fused decode + matrix-vector product), never materializing W.
 *
 * A stored matrix (tcq.h layout: tiles of 16 x 16, band by band) is, with its scale s and
 * rotation (rot.h),  W = s U^T Ŵ V,  so
 *
 *     y = s U^T (Ŵ (V x)):  rotate the activations (O(n log n) for RHT), one pass over the
 *                             codes, rotate the outputs back.
 *
 * Kernels:
 *   - reference: tile by tile with tqp_trellis_decode and a float dot product; any shape, any
 *     code (plain C, always available);
 *   - avx512: 16 bands at once, one band per lane.  At preparation the circular stream of each
 *     tile is rewritten with its chunks in reverse order (newest chunk lowest, as in the state),
 *     32-bit words interleaved across the 16 bands, so the state of step i in every lane is one
 *     funnel shift of two words (VPSHLDVD) and a mask; 1mad and 3inst are computed from the
 *     state (VPMULLD, then VPDPBUSD for 1mad's byte sum, bit operations for 3inst's two fp16
 *     halves), hyb and lut are gathered from the code table.  Same number of code bytes as the
 *     file (T K / 8 per tile).  Needs AVX-512 F/BW/VL, VNNI and VBMI2, full 16 x 16 tiles
 *     (m and n multiples of 16), and L <= 16;
 *   - avx2: the same layout, each group of 16 bands as two halves of 8 lanes; the funnel shift
 *     is two shifts and an or, 1mad's byte sum VPMADDUBSW + VPMADDWD.  Needs AVX2 and FMA.
 *   - avx512-i16 (code 1mul, L = 16, where avx512 runs): int16 levels and activations, VPDPWSSD;
 *   - avx512-gf8 (code gf8, L = 16, K = 2 or 4, where avx512 runs and the CPU has AVX512-VBMI
 *     and GFNI; TQP_NO_I16 turns it off): the byte layout of src/matvec_impl.h, per 64 weights
 *     (K = 2) one VPMULTISHIFTQB-cut byte per weight, one GF2P8MULB, one VPERMI2B into the
 *     levels and two VPDPBUSD with the activations' two bytes (16-bit activations, exact int32
 *     sums); K = 4 reads its stream as K = 2 half-steps and multiplies the odd ones.
 * The two integer kernels round the activations once to 16 bits (a relative error of at most
 * 2^-16 of max |x| per product).
 * AUTO takes avx512 (with its integer forms where they apply), else avx2, else the reference
 * kernel.
 * The decoded values are bit-identical in both kernels (they are the code table's); the sums
 * differ only by float rounding order.
 */
#ifndef TQP_MATVEC_H
#define TQP_MATVEC_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/rot.h"
#include "tqp/trellis.h"

typedef struct tqp_tmv tqp_tmv;

typedef enum { TQP_TMV_AUTO, TQP_TMV_REFERENCE, TQP_TMV_AVX512, TQP_TMV_AVX2 } tqp_tmv_kernel;

/* Prepare W (m, n) from its packed codes (tqp_tcq_matrix_bytes bytes, copied or rewritten), the
 * code family `t` (its L, K, V, code and LUT; any T), the scale and the rotation (NULL: none;
 * borrowed, must outlive the operator).  `kernel`: AUTO picks the fastest this CPU and shape
 * allow; asking for AVX512 where it cannot run is an error naming the reason. */
tqp_status tqp_tmv_create(const tqp_trellis *t, const uint8_t *packed, int m, int n,
                          double scale, const tqp_rot *rot, tqp_tmv_kernel kernel,
                          tqp_tmv **out);
void tqp_tmv_destroy(tqp_tmv **op);
/* The kernel in use: "avx512", "avx512-i16", "avx512-gf8", "avx2" or "reference". */
const char *tqp_tmv_kernel_name(const tqp_tmv *op);
/* Why the AVX-512 (or AVX2) kernel cannot run for this code/shape on this CPU (NULL if it can). */
const char *tqp_tmv_avx512_unavailable(const tqp_trellis *t, int m, int n);
const char *tqp_tmv_avx2_unavailable(const tqp_trellis *t, int m, int n);
/* Why the avx512-gf8 form cannot serve this code (NULL if it can, wherever avx512 runs). */
const char *tqp_tmv_gf8_unavailable(const tqp_trellis *t);

/* y (m) = W x (n), float.  Not thread-safe on one operator (it owns its work vectors); with
 * threads > 1 the bands are shared among OpenMP threads. */
void tqp_tmv_apply(tqp_tmv *op, const float *x, float *y, int threads);
/* Only the middle product z (m) = Ŵ xr (n) in code units (no rotations, no scale): the kernel
 * alone, for benchmarks and tests. */
void tqp_tmv_apply_codes(tqp_tmv *op, const float *xr, float *z, int threads);
/* Decode Ŵ (m, n) row-major, code units, with the operator's kernel: the decode-only rate. */
void tqp_tmv_decode(tqp_tmv *op, float *W, int threads);

/* The reference of the tests: W in float64 (tqp_tcq_decode, inverse rotation, scale) and
 * y = W x accumulated in float64.  W: (m, n) doubles of scratch. */
tqp_status tqp_tmv_reference(const tqp_trellis *t, const uint8_t *packed, int m, int n,
                             double scale, const tqp_rot *rot, const float *x, double *W,
                             double *y);

#endif
