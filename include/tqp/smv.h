/* Batch-1 inference on scalar-grid codes (the uniform grid of quant.h: RTN, GPTQ, QuIP): y = W x
 * straight from the packed codes, the same operator shape as the trellis and E8P ones
 * (matvec.h): W = s U^T Ŵ V with Ŵ's entries code - (2^b - 1) / 2.
 *
 * The codes stay as stored (a little-endian bit stream, row-major, b bits each, 1 <= b <= 8);
 * a row's product unpacks them in runs of 64 and looks each value up in a table of 2^b floats.
 * Plain C (the compiler vectorizes the dot product): the scalar grid is the ablation's
 * baseline, not a format tuned for speed.  Each row is summed in 8 lanes in a fixed order, so
 * the product does not depend on the thread count. */
#ifndef TQP_SMV_H
#define TQP_SMV_H

#include <stdint.h>

#include "tqp/error.h"
#include "tqp/rot.h"

typedef struct tqp_smv tqp_smv;

/* Prepare W (m, n) from its packed codes (tqp_pack_bytes(m n, bits) bytes, copied), the scale
 * and the rotation (NULL: none; borrowed, must outlive the operator). */
tqp_status tqp_smv_create(const uint8_t *packed, int m, int n, int bits, double scale,
                          const tqp_rot *rot, tqp_smv **out);
void tqp_smv_destroy(tqp_smv **op);
/* y (m) = W x (n).  Not thread-safe on one operator; threads share the rows. */
void tqp_smv_apply(tqp_smv *op, const float *x, float *y, int threads);
/* z (m) = Ŵ xr (n) in code units (no rotations, no scale). */
void tqp_smv_apply_codes(tqp_smv *op, const float *xr, float *z, int threads);

#endif
