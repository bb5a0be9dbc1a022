/* Perplexity with the stream-windows protocol (ALGORITHMS.md section 7): the token stream is
 * cut into non-overlapping windows of `ctx` tokens (the short tail is dropped), every token but
 * the first of each window is scored given the tokens before it in the window (or only the
 * second half with `half_window`, llama.cpp's convention), ppl = exp(sum NLL / scored).
 *
 * Windows are split over the ranks in contiguous blocks; each window's NLL (float64) is
 * gathered and summed in window order, so the result is bit-identical for any rank count.
 */
#ifndef TQP_EVAL_H
#define TQP_EVAL_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/model.h"

typedef struct {
    int ctx;         // window length in tokens
    int half_window; // score only tokens ctx/2+1 .. ctx-1 of each window
    int progress;    // print progress lines (rank 0)
    int threads;     // threads per rank, each forwarding whole windows (<= 1: one); the
                     // result does not depend on it
} tqp_eval_options;

typedef struct {
    double ppl, nll; // perplexity and mean NLL per scored token
    double nll_sum;  // float64 sum over scored tokens
    int64_t windows;
    int64_t tokens_scored;
    int64_t tokens_total; // tokens in the stream
    int ranks;
    double seconds, tokens_per_second; // wall time of the evaluation, tokens forwarded / s
} tqp_eval_result;

/* Source of fp32 layer weights: the model itself, or a quantized file's decoder.  A collective
 * source (collective = 1) must be called by every rank of the evaluation's communicator for the
 * same layers in the same order; tqp_eval_perplexity then runs the same number of batches on
 * every rank (a rank out of windows still takes part). */
typedef struct tqp_weight_source {
    tqp_status (*layer)(void *ctx, int l, tqp_layer_weights *lw);
    void *ctx;
    int collective;
} tqp_weight_source;

/* Collective on comm.  Every rank passes the same token stream. */
tqp_status tqp_eval_perplexity(MPI_Comm comm, const tqp_model *m, const tqp_weight_source *src,
                               const uint32_t *tokens, size_t ntokens, const tqp_eval_options *opt,
                               tqp_eval_result *res);

/* First scored token index within a window. */
int tqp_eval_first_scored(const tqp_eval_options *opt);

#endif
