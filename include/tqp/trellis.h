/* The bitshift trellis of QTIP (ALGORITHMS.md section 6): codes, the tail-biting Viterbi
 * encoder, packing and decoding of one sequence of T weights.
 *
 * A state is an L-bit integer; a step shifts in KV bits, s' = ((s << KV) | b) mod 2^L, and
 * emits the V-vector c(s').  A sequence of T weights is N = T / V states.
 *
 * Invariants (tests/test_trellis.c checks each):
 *  1. Costs are float32, cost(s) = sum over the V components of (x - c(s))^2, accumulated as
 *     D_t(s) = min over predecessors + cost_t(s), in exactly this order of operations in every
 *     implementation (compiled without floating-point contraction), so the reference and the
 *     SIMD encoders choose identical paths.
 *  2. Ties go to the lowest index: the lowest predecessor h in a group, the lowest final state.
 *  3. The predecessors of s' are the 2^KV states (h << (L - KV)) | (s' >> KV): one minimum per
 *     group g = s' >> KV serves all 2^KV states of the group, so a step costs O(2^L).
 *  4. Tail-biting (QTIP): a free Viterbi pass over the sequence rotated by N/2 steps gives the
 *     state at the original position 0; its high L - KV bits, the overlap, fix the start (s_0 >>
 *     KV = overlap) and the end (s_{N-1} mod 2^(L-KV) = overlap) of a second, constrained pass.
 *  5. The stored stream is the low KV bits of every state, N KV = T K bits: s_t is the last L
 *     bits of the circular stream up to and including chunk t.
 */
#ifndef TQP_TRELLIS_H
#define TQP_TRELLIS_H

#include <stdint.h>

#include "tqp/error.h"

typedef enum {
    TQP_TCODE_1MAD,
    TQP_TCODE_3INST,
    TQP_TCODE_HYB,
    TQP_TCODE_LUT,
    TQP_TCODE_1MUL, // one 16-bit multiply and a 64-entry table: built for int16 SIMD kernels
    TQP_TCODE_GF8,  // one GF(2^8) multiply of the state's two bytes and a 128-entry table:
                    // built for byte SIMD kernels (GFNI, VBMI)
    TQP_TCODE_COUNT
} tqp_tcode;

enum { TQP_HYB_Q = 9, TQP_TRELLIS_MAX_L = 16, TQP_TRELLIS_MAX_T = 4096 };

typedef struct {
    int L, K, V, T;   // state bits, bits per weight, weights per step, weights per sequence
    tqp_tcode code;
    int lut_bits;     // hyb: Q (9); lut: L; others 0
    float *lut;       // (2^lut_bits, V) owned, hyb and lut only
    float *table;     // (2^L, V) owned: c(s) for every state
    float *comp[2];   // (2^L) owned: component v of c(s), for the SIMD encoders
    float *lane_comp[2][2]; // [w][v] (2^L) owned: comp[v] with the states of each block of
                            // 16 (w = 0) or 8 (w = 1) permuted, lane l <- state
                            // 2^KV (l mod B) + l / B, B = lanes / 2^KV; NULL when 2^KV >= lanes
    double rms;       // RMS of the code over all states and components
} tqp_trellis;

const char *tqp_tcode_name(tqp_tcode c); // "1mad", "3inst", "hyb", "lut", "1mul", "gf8"
tqp_tcode tqp_tcode_parse(const char *name); // TQP_TCODE_COUNT if unknown

/* Check parameters: L <= 16, K in 1..4, V in {1, 2}, K V < L, T <= 4096 divisible by V, at least
 * ceil(L / KV) steps, and a code that exists for V.  The message names the bad parameter. */
tqp_status tqp_trellis_check(int L, int K, int V, int T, tqp_tcode code);

/* lut: NULL for the default table (hyb: k-means centroids of a 2-D standard Gaussian from a
 * fixed seed; lut: i.i.d. standard Gaussian values from a fixed seed), else (2^lut_bits, V)
 * values, copied. */
tqp_status tqp_trellis_create(int L, int K, int V, int T, tqp_tcode code, const float *lut,
                              tqp_trellis **out);
void tqp_trellis_destroy(tqp_trellis **t);
/* Table size of a code's LUT in entries (0 for computed codes). */
int tqp_trellis_lut_entries(tqp_tcode code, int L);

/* The value(s) of state s under a computed code (V values); exposed for tests and kernels. */
float tqp_code_1mad(uint32_t s);
float tqp_code_3inst(uint32_t s);
void tqp_code_hyb(uint32_t s, const float *lut, float out[2]);
/* 1mul: c(s) = Q[h] / 256 with h = ((s * 0xC2B3) mod 2^16) >> 10 (bits 10..15 of one 16-bit
 * multiply) and Q the 64 quantiles of N(0,1) at (k + 1/2) / 64 times 256, rounded: integers of
 * at most 10 bits, so that a kernel can look the values up as int16 (VPERMI2W) and multiply
 * them with int16 activations exactly (docs/trellis.md, "1mul"). */
enum { TQP_1MUL_MULT = 0xC2B3, TQP_1MUL_LEVELS = 64 };
extern const int16_t tqp_1mul_levels[TQP_1MUL_LEVELS];
static inline uint32_t tqp_1mul_index(uint32_t s)
{
    return ((s * TQP_1MUL_MULT) & 0xFFFFu) >> 10;
}
float tqp_code_1mul(uint32_t s);
/* gf8: c(s) = Q[h] / 47 with h = (A B in GF(2^8) mod x^8 + x^4 + x^3 + x + 1) mod 128, where
 * A and B are the low and the high byte of the 16-bit state, each with its bits reversed
 * (bit 0 <-> bit 7), and Q the 128 quantiles of N(0,1) at (k + 1/2) / 128 times 47, rounded:
 * integers in -125 .. 125, so that a kernel can look the values up as bytes (VPERMI2B) after
 * one GF2P8MULB of two bytes that VPMULTISHIFTQB cuts out of the stream (docs/trellis.md,
 * "gf8").  A depends on the newest 8 bits, B on the 8 before: B of step t is A of step t - 4. */
enum { TQP_GF8_SCALE = 47, TQP_GF8_LEVELS = 128 };
extern const int8_t tqp_gf8_levels[TQP_GF8_LEVELS];
uint32_t tqp_gf8_index(uint32_t s);
float tqp_code_gf8(uint32_t s);

/* Bytes of one packed sequence: T K / 8 rounded up. */
int tqp_trellis_packed_bytes(const tqp_trellis *t);

/* Encode x (T) with the reference (plain C) tail-biting Viterbi: packed stream (packed_bytes)
 * and the reconstruction xhat (T).  Returns the squared error. */
double tqp_trellis_encode_ref(const tqp_trellis *t, const float *x, uint8_t *packed, float *xhat);
/* The same with the fastest encoder this CPU has (bit-identical output). */
double tqp_trellis_encode(const tqp_trellis *t, const float *x, uint8_t *packed, float *xhat);
/* xhat (T) from a packed stream. */
void tqp_trellis_decode(const tqp_trellis *t, const uint8_t *packed, float *xhat);

/* One Viterbi pass (reference): states (N) of the best path whose first state satisfies
 * (s >> KV) == start (or any, start < 0) and whose last satisfies (s mod 2^(L-KV)) == end (or
 * any).  Returns the path cost (float accumulation, invariant 1). */
float tqp_trellis_viterbi_ref(const tqp_trellis *t, const float *x, int start, int end,
                              uint32_t *states);
/* The last state of the best path: the lowest-index minimum of D (2^L) among states whose low
 * L - KV bits (mask G - 1) equal `end` (any if end < 0); its cost in *cost.  Shared by the
 * encoders. */
uint32_t tqp_trellis_best_end(const float *D, uint32_t S, uint32_t G, int end, float *cost);
/* Name of the encoder tqp_trellis_encode uses ("avx512", "avx2" or "reference"; setting
 * TQP_NO_AVX512 in the environment skips AVX-512, for tests and comparisons), and its lanes. */
const char *tqp_trellis_isa(void);
int tqp_trellis_simd_lanes(void);
/* Vector-lane operations per state and step of the SIMD encoders, with `lanes` lanes: subtract,
 * multiply, add (and twice more for V = 2: 7 in all), min; plus one permute per 2^KV vectors
 * when 2^KV < lanes (returning the minima to state order).  The count behind the SIMD bound of
 * tqp bench trellis and tqp plan's Viterbi work. */
double tqp_trellis_ops_per_state(int K, int V, int lanes);
/* Independent vector additions per second on this core with the encoder's vectors (0 for the
 * reference): the rate behind tqp bench trellis's SIMD bound. */
double tqp_bench_vector_rate(void);

/* The default scale factor ρ of trellis-coded matrices at K bits (s = RMS(W) / (RMS(code) ρ)),
 * chosen from measurements on real Hessians (docs/trellis.md, "Scale"). */
double tqp_trellis_default_rho(int K);

#endif
