/* Orthonormal Hadamard-type transforms for any n, the core of the randomized Hadamard
 * transform (RHT, ALGORITHMS.md section 3).
 *
 * Every n is written n = b * 2^k and transformed by  Ĥ_n = (B ⊗ H_{2^k}) / sqrt(2^k),  with
 * H_{2^k} the Sylvester matrix (applied by the fast Walsh-Hadamard transform, O(n k)) and B an
 * orthonormal b x b base (applied as a b x b matrix product, O(n b)):
 *   - b = 1: pure Sylvester;
 *   - B = H_b / sqrt(b), H_b from Paley I (b = q + 1, q prime, q ≡ 3 mod 4) or Paley II
 *     (b = 2(q + 1), q prime, q ≡ 1 mod 4), for the largest k that admits one;
 *   - fallback when no such b exists (172 = 43 * 4, 11008 = 43 * 256, any odd-heavy n): b is
 *     the odd part of n and B is a random orthogonal matrix (Haar, Gram-Schmidt of a Gaussian
 *     matrix drawn from a recorded seed), QuIP's randomized Kronecker construction.  It is
 *     exact (orthogonal to rounding), keeps the shapes, and costs O(n b).
 * Vectors are indexed i = r * 2^k + c (r < b, c < 2^k).
 */
#ifndef TQP_HAD_H
#define TQP_HAD_H

#include <stdint.h>

#include "tqp/error.h"

typedef enum {
    TQP_HAD_SYLVESTER, // b == 1
    TQP_HAD_PALEY1,
    TQP_HAD_PALEY2,
    TQP_HAD_RANDOM // fallback: random orthogonal base
} tqp_had_kind;

typedef struct {
    int n, b, k;       // n = b * 2^k
    tqp_had_kind kind;
    int q;             // Paley prime (0 otherwise)
    uint64_t seed;     // seed of the random base (fallback only)
    double *base;      // (b, b) orthonormal, row-major, owned
} tqp_had;

/* Plan the transform of order n; `seed` is used only by the fallback. */
tqp_status tqp_had_create(int n, uint64_t seed, tqp_had **out);
void tqp_had_destroy(tqp_had **h);

/* The unnormalized Walsh-Hadamard transform of x (len, a power of two) in float, in place: the
 * butterflies of the double transform, in its order (for the fused products' rotations). */
void tqp_fwht_f32(float *x, int64_t len);
/* x (n) <- Ĥ x, or Ĥ^T x with `transpose`.  scratch: n doubles. */
void tqp_had_apply(const tqp_had *h, double *x, int transpose, double *scratch);
/* Every row of X (rows, n) row-major: X <- X Ĥ^T (transpose = 0: each row x <- Ĥ x) or
 * X <- X Ĥ (transpose = 1: each row x <- Ĥ^T x).  scratch: n doubles. */
void tqp_had_apply_rows(const tqp_had *h, double *X, int64_t rows, int transpose,
                        double *scratch);

/* A ±1 Hadamard matrix of order b from Sylvester (b = 1, 2), Paley I or Paley II, written to
 * H (b, b) row-major.  Returns the kind, or -1 if no such construction exists for b. */
int tqp_hadamard_base(int b, int8_t *H, int *q);

/* A random orthogonal b x b matrix Q (row-major), a deterministic function of the seed: a
 * Gaussian matrix from splitmix64 streams, rows orthonormalized by Gram-Schmidt twice. */
void tqp_random_orthogonal(int b, uint64_t seed, double *Q);

/* One line: "n=5120: Paley I (q=19, b=20) x Sylvester 2^8". */
void tqp_had_describe(const tqp_had *h, char *buf, int cap);

#endif
