/* E8P: QuIP#'s 8-dimensional codebook of 2^16 points of the lattice E8 shifted by 1/4 (2 bits
 * per weight).  docs/e8p.md has the construction; in short:
 *
 *  - 256 absolute-value patterns a (coordinates in {1/2, 3/2, 5/2}): the 227
 *    patterns |v| of the points v of D8 + 1/2 (half-integer coordinates, even sum) with
 *    |v|^2 <= 10, in ascending lexicographic order, then 29 patterns of norm^2 12 (five 3/2
 *    and three 1/2), in QuIP#'s order;
 *  - a code is 16 bits: abs index = code >> 8, sign byte s = code & 255.  p = parity of s;
 *    the signs applied are s' = s ^ p (bit i: coordinate i negative), which has an even number
 *    of bits; they are applied to the base b = a with coordinate 7 negated when the sum of a is
 *    odd, so that every signed vector has an even coordinate sum (a point of D8 + 1/2); the
 *    point is that vector + 1/4 (p = 0) or - 1/4 (p = 1).  D8 + 1/2 + 1/4 and D8 + 1/2 - 1/4 =
 *    D8 + 1/4 are both in E8 + 1/4.
 *
 * Every one of the 2^16 codes is a distinct point; |point|^2 <= 16.5 (a norm-12 pattern with
 * 8 of its coordinate sum 9 aligned with the +1/4 shift: 12 + 8 / 2 + 1/2).
 */
#ifndef TQP_E8P_H
#define TQP_E8P_H

#include <stddef.h>
#include <stdint.h>

enum { TQP_E8P_DIM = 8, TQP_E8P_ABS = 256, TQP_E8P_CODES = 1 << 16 };

/* The 256 absolute-value patterns in half units (odd integers: a_i = h[k][i] / 2). */
const uint8_t (*tqp_e8p_abs_half(void))[TQP_E8P_DIM];

/* The point of a code, exactly (multiples of 1/4). */
void tqp_e8p_decode(uint16_t code, double out[TQP_E8P_DIM]);
void tqp_e8p_decode_f(uint16_t code, float out[TQP_E8P_DIM]);

/* The code of a point of the codebook nearest to x (squared Euclidean distance), and that
 * point in out (if not NULL).  Exact: the distances it compares are computed without rounding
 * whenever the coordinates of x are within 2^20 of each other in magnitude (float64 sums of
 * products of a float and a multiple of 1/4); among equally near points it returns the first in
 * the order (shift +1/4 before -1/4, abs index ascending, then the fewest sign changes from
 * the signs of x - shift, the lowest coordinate flipped first). */
uint16_t tqp_e8p_nearest(const double x[TQP_E8P_DIM], double out[TQP_E8P_DIM]);

/* RMS of the coordinates over all 2^16 points (the scale divides it out). */
double tqp_e8p_rms(void);

/* The nearest point over the first w coordinates only (1 <= w <= 8; the rest of the point is
 * ignored): by the search above for w = 8, by brute force over the 2^16 points otherwise (the
 * lowest code among equals).  The last, narrower column block of a matrix whose width is not
 * a multiple of 8. */
uint16_t tqp_e8p_nearest_w(const double *x, int w, double out[TQP_E8P_DIM]);

/* 3 and 4 bits: a second stage codes the residual r = (x - p1) * rs of the first point p1 and
 * the reconstruction is p1 + p2 / rs (QuIP#'s residual vector quantization): at 4 bits p2 is
 * the nearest E8P point (16 more bits), at 3 bits the nearest of 256 points of E8 ("E81B", 8
 * more bits: 0, the 240 points of norm^2 2, and 2 e_i for all i and -2 e_i for i < 7).  rs is
 * the stage scale, recorded per matrix (tqp_e8p_resid_scale gives the defaults: 2.04 at 3 bits,
 * QuIP#'s value; 3.7 at 4 bits, where Gaussian samples measured 0.00849 against 0.00879 with
 * QuIP#'s 3.45, each at its best rho; docs/e8p.md). */
double tqp_e8p_resid_scale(int bits);
/* The 256 points of the 3-bit residual stage, in order. */
const double (*tqp_e8p_e81b(void))[TQP_E8P_DIM];
/* One vector's code (`bits` bytes: the E8P code, 2 bytes little-endian, then the residual's)
 * for its first w coordinates, and the reconstruction of those in xhat. */
void tqp_e8p_encode(const double *x, int w, int bits, double rs, uint8_t *code, double *xhat);
void tqp_e8p_decode_vec(const uint8_t *code, int bits, double rs, double out[TQP_E8P_DIM]);

/* Matrices (BlockLDLQ with 8-column blocks, include/tqp/quant.h): W (m, n) in units of the scale
 * is cut into bands of up to 8 rows and column blocks of 8 (the last may be narrower); a block
 * of a row is one code of `bits` bytes.  Stored codes: band by band, within a band block by
 * block, within a block row by row. */
enum { TQP_E8P_TILE = 8 };
size_t tqp_e8p_band_bytes(int rows, int n, int bits);
size_t tqp_e8p_matrix_bytes(int m, int n, int bits);
/* Column block j of a band of `rows` rows: as tqp_tcq_band_tile (tcq.h), with the E8P encoding
 * for every row of the block: x + feedback in a is coded into packed (the band's start),
 * its reconstruction into xhat and x - xhat into e; with P (w, c0) the rows [c0, c0 + w) of
 * the block factor Lu (leading dimension ldp), the earlier columns get a[:, 0 .. c0) +=
 * E_block P through the reproducible BLAS; P NULL: nearest rounding. */
void tqp_e8p_band_tile(int n, int j, int rows, int bits, double rs, const double *x, double *a,
                       double *e, double *xhat, uint8_t *packed, const double *P, int ldp);
/* Decode a whole matrix (m, n) from its codes (tqp_e8p_matrix_bytes), in units of the scale. */
void tqp_e8p_decode_matrix(const uint8_t *packed, int m, int n, int bits, double rs, double *X);

#endif
