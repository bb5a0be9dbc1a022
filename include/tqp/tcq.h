/* Trellis-coded quantization of whole matrices (QTIP): W (m, n) is cut into row bands of 16
 * rows and column blocks of 16 columns; each tile (the last band and block may be smaller) is
 * one trellis sequence of T = rows x cols weights in row-major order, coded by trellis.h.
 * Rounding is BlockLDLQ (ALGORITHMS.md section 4) with the 16-column blocks: blocks from last
 * to first, each tile coded from W_blk + sum over later blocks of (W_j - Ŵ_j) Lu_{j,blk}, with
 * Lu = C blockdiag(C_ii)^-1 the block unit-lower factor; or nearest (no feedback).
 *
 * Stored codes: the tiles' packed streams, ceil(T K / 8) bytes each, band by band and, within
 * a band, column block by column block.  Bands are independent given Lu: the unit of work that
 * ranks share.
 */
#ifndef TQP_TCQ_H
#define TQP_TCQ_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/trellis.h"

enum { TQP_TCQ_TILE = 16 };

typedef struct tqp_tcq tqp_tcq;

/* A family of trellises (one per tile size met) sharing L, K, V, the code and its LUT (NULL:
 * the default LUT). */
tqp_status tqp_tcq_create(int L, int K, int V, tqp_tcode code, const float *lut, tqp_tcq **out);
void tqp_tcq_destroy(tqp_tcq **q);
/* The T = 256 member: its rms, LUT (lut_bits, V) and parameters describe the family. */
const tqp_trellis *tqp_tcq_base(const tqp_tcq *q);

/* Create the members for every tile size of bands of up to 16 rows and of `rows` rows in total
 * (the last band may be shorter) over n columns, so that coding bands concurrently creates
 * nothing. */
tqp_status tqp_tcq_prepare(tqp_tcq *q, int rows, int n);
/* The member for tiles of T weights, created on first use (after tqp_tcq_prepare for the
 * shape, a lookup only: safe from several threads). */
tqp_status tqp_tcq_member(tqp_tcq *q, int T, const tqp_trellis **t);
/* Bytes of one band of `rows` rows and n columns, and of a whole (m, n) matrix. */
size_t tqp_tcq_band_bytes(const tqp_tcq *q, int rows, int n);
size_t tqp_tcq_matrix_bytes(const tqp_tcq *q, int m, int n);

/* Block unit-lower factor from the lower Cholesky factor C (n, n) row-major, in place: the
 * same bits as tqp_dfactor_lu_rows with tile TQP_TCQ_TILE (include/tqp/chol.h). */
void tqp_tcq_block_factor(double *C, int n);

/* One column tile j (columns c0 = 16 j .. c0 + w) of a band of `rows` rows: the tile of a (x
 * plus the feedback of later tiles) is coded into its place in the band's packed codes
 * (`packed` is the band's start), its reconstruction into xhat and x - xhat into e; then, with
 * P (w, c0) the rows [c0, c0 + w) of the block factor Lu, columns [0, c0), leading dimension
 * ldp, the earlier columns get the feedback a[:, 0 .. c0) += E_tile P through the reproducible
 * BLAS (each element the same bits however many rows are coded together).  P NULL: none
 * (nearest).  x, a, e, xhat: (rows, n) row-major.  Tiles go from last to first. */
tqp_status tqp_tcq_band_tile(tqp_tcq *q, int n, int j, int rows, const double *x, double *a,
                             double *e, double *xhat, uint8_t *packed, const double *P, int ldp);

/* Decode a whole matrix (m, n) from its packed codes (matrix_bytes), in units of the scale. */
tqp_status tqp_tcq_decode(tqp_tcq *q, const uint8_t *packed, int m, int n, double *X);

#endif
