/* Incoherence processing (ALGORITHMS.md section 3): the two-sided orthogonal transform of one
 * weight matrix W (m, n) and of its Hessian H (n, n).
 *
 *     W~ = U W V^T,   H~ = V H V^T,   proxy loss tr(dW H dW^T) invariant,
 *
 * with, for each kind:
 *   - none: U = I, V = I (RTN and GPTQ);
 *   - rht:  U = Ĥ_m diag(s_u), V = Ĥ_n diag(s_v), Ĥ the orthonormal Hadamard-type transform of
 *           had.h and s_u, s_v random signs (QuIP#/QTIP);
 *   - kron: U = A_m, V = A_n with A_n = P ⊗ Q a Kronecker product of two random orthogonal
 *           factors, n = p q with p the largest divisor of n not above sqrt(n) (QuIP).
 * Everything random is a function of two 64-bit seeds (derived from the run seed, the layer and
 * the matrix or its input group), recorded in the output so that a decoder regenerates it.  The transform does not
 * distribute work: callers give it whole rows or columns.
 */
#ifndef TQP_ROT_H
#define TQP_ROT_H

#include <stdint.h>

#include <mpi.h>

#include "tqp/error.h"
#include "tqp/had.h"

typedef enum { TQP_ROT_NONE, TQP_ROT_RHT, TQP_ROT_KRON, TQP_ROT_COUNT } tqp_rot_kind;

/* One side (an orthogonal n x n operator applied to vectors of length n). */
typedef struct {
    int n;
    tqp_had *had;   // rht: the Hadamard-type transform, owned
    int8_t *sign;   // rht: (n) ±1, owned
    int p, q;       // kron: n = p * q
    double *P, *Q;  // kron: (p, p) and (q, q) orthogonal, row-major, owned
} tqp_rot_side;

typedef struct {
    tqp_rot_kind kind;
    uint64_t seed_out, seed_in; // the seeds of U and V
    tqp_rot_side out, in;       // U acts on the m outputs, V on the n inputs
} tqp_rot;

const char *tqp_rot_name(tqp_rot_kind k); // "none", "rht", "kron"
/* Parse a name; returns TQP_ROT_COUNT if unknown. */
tqp_rot_kind tqp_rot_parse(const char *name);

/* U from seed_out, V from seed_in (matrices that share an input, and so a Hessian, can share
 * V and with it one rotated Hessian and one factorization). */
tqp_status tqp_rot_create(tqp_rot_kind kind, int m, int n, uint64_t seed_out, uint64_t seed_in,
                          tqp_rot *r);
void tqp_rot_destroy(tqp_rot *r);

/* x (len = side n) <- S x (inverse = 0) or S^T x (inverse = 1).  scratch: n doubles. */
void tqp_rot_side_apply(const tqp_rot_side *s, tqp_rot_kind kind, double *x, int inverse,
                        double *scratch);

/* W (m, n) row-major in place: W <- U W V^T (inverse = 0) or W <- U^T W V (inverse = 1). */
tqp_status tqp_rot_weights(const tqp_rot *r, double *W, int inverse);
/* H (n, n) row-major in place: H <- V H V^T.  The result is made exactly symmetric. */
tqp_status tqp_rot_hessian(const tqp_rot *r, double *H);

/* The same two transforms on row-distributed matrices (include/tqp/dist.h), collective on comm,
 * with the same bits as the whole-matrix functions: the rows are transformed where they are and
 * the columns after a distributed transpose.  Memory per rank: the local rows twice, plus one
 * block of them (about 1/P) each way while the blocks are exchanged.
 *   weights: *W holds rows in_off of W (m, n); it is freed and replaced by a new buffer with
 *            rows out_off of U W V^T (so the input and output rows are never held together;
 *            on failure *W is NULL);
 *   hessian: rows off of H (n, n) in Hr, in place -> rows of V H V^T, exactly symmetric. */
tqp_status tqp_rot_weights_dist(MPI_Comm comm, const tqp_rot *r, const int64_t *in_off,
                                double **W, const int64_t *out_off);
tqp_status tqp_rot_hessian_dist(MPI_Comm comm, const tqp_rot *r, const int64_t *off, double *Hr);

#endif
