/* The fp32 Llama forward pass, one window (sequence) and one layer at a time, with OpenBLAS
 * sgemm for every matrix product.  A window is the unit of work: its results never depend on
 * which rank or batch computes it, which is what makes evaluation rank-count invariant.
 *
 * The layer is split into the four linear groups that share an input (ALGORITHMS.md section 1);
 * a capture hook sees each group's input, which is how Hessians are collected.
 */
#ifndef TQP_FORWARD_H
#define TQP_FORWARD_H

#include <stdint.h>

#include "tqp/error.h"
#include "tqp/model.h"

typedef enum {
    TQP_GROUP_QKV,    // input of q, k, v: attention RMSNorm output, width dim
    TQP_GROUP_O,      // input of o: attention output, width n_heads * head_dim
    TQP_GROUP_GATEUP, // input of gate, up: FFN RMSNorm output, width dim
    TQP_GROUP_DOWN,   // input of down: silu(gate) * up, width hidden_dim
    TQP_GROUP_COUNT
} tqp_group;

const char *tqp_group_name(tqp_group g); // "qkv", "o", "gate_up", "down"
/* Input width of group g. */
int tqp_group_width(const tqp_config *cfg, tqp_group g);

typedef struct {
    /* Called for each window and group with its input x: (ntok, n) row-major fp32, borrowed
     * for the duration of the call.  A non-OK return stops the forward pass. */
    tqp_status (*capture)(void *ctx, int layer, tqp_group g, const float *x, int ntok, int n);
    void *ctx;
} tqp_forward_hooks;

typedef struct tqp_forward tqp_forward;

/* Workspace for windows of up to `max_tokens` tokens.  Sets OpenBLAS to one thread: a window's
 * products must not depend on how threaded OpenBLAS would split them (threads of the caller
 * take whole windows, one workspace each). */
tqp_status tqp_forward_create(const tqp_config *cfg, int max_tokens, tqp_forward **out);
void tqp_forward_destroy(tqp_forward **f);

/* Threads for one window (default 1): each product is computed in fixed blocks of 512 output
 * columns and the attention head by head, which threads share, so the values are the same for
 * any count.  For a caller with fewer windows than threads; with as many windows, threads take
 * windows.  More threads than before allocate a score matrix (max_tokens^2 floats) for each. */
tqp_status tqp_forward_set_threads(tqp_forward *f, int threads);

/* x (ntok, dim) = rows of `embed` (vocab, dim) selected by tokens. */
void tqp_forward_embed(const tqp_forward *f, const float *embed, const uint32_t *tokens, int ntok,
                       float *x);

/* Apply layer `layer` to the residual stream x (ntok, dim) in place.  hooks may be NULL. */
tqp_status tqp_forward_layer(tqp_forward *f, const tqp_layer_weights *lw, int layer, float *x,
                             int ntok, const tqp_forward_hooks *hooks);

/* Windows [0, count) of x (window w at x + w wsz, ntok tokens each) through layer `layer` on
 * `threads` threads: whole rounds of `threads` windows, one per thread and workspace (when there
 * are that many workspaces in fw), then the windows left one at a time on fw[0] with the
 * threads sharing its products, so that no thread waits for a short last round.  hooks_of(hctx, w, buf) gives window w's hooks (NULL function: none).
 * A window's result does not depend on the thread; the first failure in window order is kept. */
tqp_status tqp_forward_windows(tqp_forward **fw, int workspaces, int threads,
                               const tqp_layer_weights *lw,
                               int layer, float *x, size_t wsz, int ntok, long count,
                               const tqp_forward_hooks *(*hooks_of)(void *hctx, long w,
                                                                    tqp_forward_hooks *buf),
                               void *hctx);

/* Final RMSNorm (norm: (dim)) and output head (head: (vocab, dim)) on x (ntok, dim) in place
 * (x is normalized), then the summed negative log-likelihood (float64) of tokens[t] given
 * positions < t, for t in [first, ntok).  Logits are computed in row blocks. */
double tqp_forward_nll(tqp_forward *f, const float *norm, const float *head, float *x,
                       const uint32_t *tokens, int ntok, int first);

/* Final RMSNorm and head into logits (ntok, vocab); x is normalized in place. */
void tqp_forward_logits(tqp_forward *f, const float *norm, const float *head, float *x, int ntok,
                        float *logits);

#endif
