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

#endif
