/* The table of quantizers ("codebooks", ALGORITHMS.md section 5) and the two rounding rules
 * that drive them: nearest (no feedback) and LDLQ (section 4).
 *
 * A codebook maps a value already divided by the matrix scale to a code of `bits` bits and
 * back; ablations select entries by name.  Later codebooks (trellis, E8P) are further entries.
 *
 * LDLQ invariants (the tests check each):
 *  1. Columns are processed from last to first; column k is rounded from
 *     w_k + sum_{j>k} (w_j - ŵ_j) Lu_{j,k}, with the ORIGINAL w_j (ALGORITHMS.md section 4).
 *  2. Hence ŵ - w = η Lu^{-1} with η the rounding errors, and the proxy loss with the factored
 *     H is sum_k D_kk η_k^2.
 *  3. Each row is processed on its own, by the same sequence of operations whatever rank or
 *     batch holds it: results are identical for any distribution of rows.
 */
#ifndef TQP_QUANT_H
#define TQP_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"

typedef enum { TQP_CB_SCALAR, TQP_CB_TRELLIS, TQP_CB_E8P, TQP_CB_COUNT } tqp_codebook_id;

typedef struct {
    const char *name;
    int min_bits, max_bits;
    /* 0: element-wise (the functions below, LDLQ per column); > 0: a block quantizer with
     * BlockLDLQ over column blocks of `tile` (the trellis: 16 x 16 tiles, tcq.h, its family
     * supplying the RMS; E8P: one 8-vector per row and block, e8p.h); quantize and decode are
     * NULL. */
    int tile;
    /* RMS of the codebook's points (the scale divides it out). */
    double (*rms)(int bits);
    /* Gaussian ρ: with it the scale puts the points where they minimize the MSE of a Gaussian. */
    double (*gaussian_rho)(int bits);
    /* Default ρ (tqp quantize), from measurements on real Hessians with LDLQ
     * (results/scale_rho.md): the Gaussian ρ for the scalar grid (a larger scale lowered its
     * proxy loss but not its perplexity), the least proxy loss of a grid for E8P and the trellis
     * (tqp_trellis_default_rho). */
    double (*default_rho)(int bits);
    /* Code of the point nearest to x, and that point's value. */
    uint32_t (*quantize)(double x, int bits, double *value);
    double (*decode)(uint32_t code, int bits);
} tqp_codebook;

extern const tqp_codebook tqp_codebooks[TQP_CB_COUNT];
#define TQP_CB_IS(cb, id) ((cb) == &tqp_codebooks[id])
/* NULL if unknown. */
const tqp_codebook *tqp_codebook_find(const char *name);

typedef enum { TQP_ROUND_NEAREST, TQP_ROUND_LDLQ, TQP_ROUND_COUNT } tqp_rounding;
const char *tqp_rounding_name(tqp_rounding r);
tqp_rounding tqp_rounding_parse(const char *name); // TQP_ROUND_COUNT if unknown

/* Matrix scale s = RMS(W) / (RMS(codebook) * rho) for W (count values). */
double tqp_quant_scale(const double *W, size_t count, const tqp_codebook *cb, int bits,
                       double rho);
/* The same from the sum of squares ss of the count values. */
double tqp_quant_scale_ss(double ss, size_t count, const tqp_codebook *cb, int bits, double rho);

/* LDLQ works on panels of columns [k0, k1) aligned to TQP_LDLQ_PANEL, from the last to the
 * first: within a panel column by column, then the panel's errors fed back to all earlier
 * columns at once. */
enum { TQP_LDLQ_PANEL = 32 };

/* One LDLQ panel [k0, k1) for `rows` rows at once.  P: rows [k0, k1) of the unit lower factor
 * Lu, columns [0, k1), leading dimension ldp.  W (rows, n): the rows (in units of the scale);
 * A (rows, n): W plus the feedback so far (updated: columns [0, k0) get this panel's); E: the
 * errors w - ŵ of columns [k0, k1) (written); codes, What (rows, n): columns [k0, k1) written.
 * The feedback goes through the reproducible BLAS, so a row gets the same bits whatever rows
 * are coded with it. */
void tqp_ldlq_panel(const tqp_codebook *cb, int bits, const double *P, int ldp, int k0, int k1,
                    int n, int rows, const double *W, double *A, double *E, uint32_t *codes,
                    double *What);

/* Quantize one row w (n) of W / s.  Lu: (n, n) row-major unit lower triangular factor
 * (ignored for nearest rounding).  Writes codes (n) and the reconstruction what (n), both in
 * units of the scale.  scratch: 2 n doubles.  LDLQ: tqp_ldlq_panel over the panels. */
void tqp_quant_row(const tqp_codebook *cb, int bits, tqp_rounding rnd, const double *Lu, int n,
                   const double *w, uint32_t *codes, double *what, double *scratch);

/* Bit packing: `count` codes of `bits` bits each into a little-endian bit stream of
 * ceil(count * bits / 8) bytes; and back. */
size_t tqp_pack_bytes(size_t count, int bits);
void tqp_pack_codes(const uint32_t *codes, size_t count, int bits, uint8_t *out);
/* The same from one byte per code (bits <= 8). */
void tqp_pack_codes_u8(const uint8_t *codes, size_t count, int bits, uint8_t *out);
void tqp_unpack_codes(const uint8_t *in, size_t count, int bits, uint32_t *codes);

#endif
