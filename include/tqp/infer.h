/* Batch-1 decoding with a KV cache: one token at a time through every layer, each linear
 * computed straight from its stored form, never a decoded fp32 copy of a quantized matrix:
 *
 *   - full precision: y = W x from the model's fp32 weights (OpenBLAS sgemv in fixed blocks of
 *     rows that the threads share);
 *   - trellis codes: the fused decode + matvec (matvec.h);
 *   - E8P codes: e8mv.h;
 *   - scalar-grid codes (RTN, GPTQ, QuIP): smv.h.
 *
 * The math is the fp32 forward's (forward.c: RMSNorm with a float64 mean square, RoPE from the
 * same table, grouped-query attention with the sliding window, SwiGLU, the final RMSNorm and
 * head), position by position; attention reads the cached keys and values of the earlier
 * positions.  Every step's values depend on neither the thread count nor anything but the
 * tokens so far: threads share whole row blocks of each product and whole heads.
 */
#ifndef TQP_INFER_H
#define TQP_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/e8mv.h"
#include "tqp/error.h"
#include "tqp/matvec.h"
#include "tqp/model.h"
#include "tqp/qfile.h"
#include "tqp/smv.h"

typedef enum { TQP_LIN_DENSE, TQP_LIN_TRELLIS, TQP_LIN_E8P, TQP_LIN_SCALAR } tqp_lin_kind;

/* One linear map y (m) = W x (n). */
typedef struct {
    tqp_lin_kind kind;
    int m, n;
    const float *W;      // dense: (m, n) row-major, borrowed
    tqp_tmv *tmv;        // trellis, owned
    tqp_emv *emv;        // E8P, owned
    tqp_smv *smv;        // scalar grid, owned
    tqp_rot rot;         // the quantized matrix's rotation, owned
    double scale;        // the quantized matrix's scale
    double bytes;        // weight bytes one product reads (codes, or 4 m n)
} tqp_linear;

const char *tqp_lin_kind_name(tqp_lin_kind k); // "fp32", "trellis", "e8p", "scalar"
void tqp_linear_apply(tqp_linear *l, const float *x, float *y, int threads);
void tqp_linear_destroy(tqp_linear *l);
/* A dense fp32 matrix W (m, n), borrowed. */
void tqp_linear_dense(tqp_linear *l, const float *W, int m, int n);
/* A quantized matrix from its info, packed codes (`bytes` of them, borrowed: the operators copy
 * what they keep) and rotation (moved into l: rot is zeroed).  t: the trellis family (trellis
 * codes only). */
tqp_status tqp_linear_quantized(const tqp_qmat_info *q, const tqp_trellis *t,
                                const uint8_t *packed, size_t bytes, tqp_rot *rot,
                                tqp_tmv_kernel kernel, tqp_linear *l);

typedef struct {
    tqp_linear mat[TQP_QMATS];           // q, k, v, o, gate, up, down (qfile.h order)
    const float *vec[TQP_T_LAYER_COUNT]; // norms and biases (NULL where absent)
    tqp_layer_weights lw;                // full precision: the model's weights, to release
    float *owned;                        // quantized: the vectors read from the file
} tqp_infer_layer;

typedef struct tqp_infer {
    tqp_config cfg;
    int max_ctx, pos;                 // positions the cache holds, positions filled
    tqp_infer_layer *layer;           // (n_layers)
    const float *embed, *norm, *head; // (vocab, dim), (dim), (vocab, dim)
    float *owned_globals[3];
    tqp_linear head_op;               // dense, over head
    float *kcache, *vcache;           // (n_layers, max_ctx, kv_dim)
    float *x, *xb, *q, *k, *v, *att, *hb, *hb2, *scores; // work vectors; scores (n_heads, max_ctx)
    float *xr, *z;                    // a shared rotated input, a product in code units
    double *dx, *dscratch;            // the rotations' work (max width each)
    float *rope_cos, *rope_sin;       // (max_ctx, head_dim / 2)
} tqp_infer;

/* An engine with no weights yet (the caller fills layer[] and the globals; tqp_infer_load does),
 * a cache of max_ctx positions. */
tqp_status tqp_infer_create(const tqp_config *cfg, int max_ctx, tqp_infer **out);
void tqp_infer_destroy(tqp_infer **e);
/* The model's weights (q NULL: full precision) or the quantized file's codes. */
tqp_status tqp_infer_load(const tqp_model *m, tqp_qfile *q, int max_ctx, tqp_tmv_kernel kernel,
                          tqp_infer **out);
/* Forget the cached positions. */
void tqp_infer_reset(tqp_infer *e);
/* Feed `token` at position e->pos (< max_ctx: else TQP_EUSAGE) and, when logits is not NULL,
 * write the next token's logits (vocab). */
tqp_status tqp_infer_step(tqp_infer *e, uint32_t token, float *logits, int threads);
/* Weight bytes read per token: every linear of every layer and the head. */
double tqp_infer_bytes_per_token(const tqp_infer *e);
/* The kinds and kernels of the linears of layer 0, e.g. "trellis (avx512)" or, when they
 * differ, "trellis (avx512, reference)". */
void tqp_infer_describe(const tqp_infer *e, char *buf, size_t cap);

/* Sampling: temperature 0 is the argmax (the lowest id among equals); otherwise the softmax of
 * logits / temperature (float64), cut to the smallest set of most probable tokens whose
 * probability reaches top_p (ties by id), drawn with *rng (splitmix64). */
uint32_t tqp_sample(const float *logits, int vocab, double temperature, double top_p,
                    uint64_t *rng, int *order_scratch, double *prob_scratch);

#endif
