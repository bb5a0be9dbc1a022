/* Hessian collection (ALGORITHMS.md section 1): calibration windows are forwarded layer by
 * layer; for each layer and each of the four input groups (qkv, o, gate_up, down) the exact
 * sum H = sum x x^T, the token count and the mean input are accumulated over all ranks
 * (hacc.h) and committed to the Hessian file (hstore.h) before the next layer starts.
 *
 * Only layer l's weights and the local windows' activations are in memory.  By default the
 * inputs of layer l come from the full-precision model (QuIP#/QTIP); the `sequential` mode
 * (inputs from already-quantized layers, GPTQ) needs a quantizer plugged in through
 * tqp_weight_source and is refused until one exists.
 */
#ifndef TQP_HESSIAN_H
#define TQP_HESSIAN_H

#include <mpi.h>

#include "tqp/calib.h"
#include "tqp/hstore.h"
#include "tqp/model.h"

typedef struct {
    int batch_windows; // windows staged per flush (memory: batch * ctx * width * 8 bytes)
    int progress;      // one line per layer on rank 0
    int threads;       // threads per rank: windows forwarded concurrently, panels accumulated
                       // concurrently (the file's bytes do not depend on it)
} tqp_hessian_options;

typedef struct {
    int layers_done, layers_skipped; // computed now / already committed
    int64_t tokens;                  // tokens per layer
    double seconds, gflops;          // wall time, accumulation GFLOP/s (all ranks)
} tqp_hessian_result;

/* Collective.  `st` comes from tqp_hstore_open; layers [st->committed, n_layers) are computed. */
tqp_status tqp_hessian_run(MPI_Comm comm, const tqp_model *m, const tqp_calib *cal, tqp_hstore *st,
                           const tqp_hessian_options *o, tqp_hessian_result *r);

/* A whole Hessian phase as the command line describes it. */
typedef struct {
    const char *model, *tokenizer, *text, *tokens, *out; // exactly one of text, tokens
    int nsamples, ctx, random;
    uint64_t seed;
    tqp_resume_mode mode;
    int batch; // windows per flush, 0: default
    int quiet;
    int threads; // threads per rank (>= 1)
} tqp_hessian_job;

/* Collective.  Load the calibration windows, open (or resume) the output, compute the layers
 * not yet committed.  *st stays open for the caller (tqp_hstore_close). */
tqp_status tqp_hessian_collect(MPI_Comm comm, const tqp_model *m, const tqp_hessian_job *job,
                               tqp_hstore *st, tqp_hessian_result *r);

/* Default windows per flush: about 256 MiB of float64 staging for the widest group. */
int tqp_hessian_default_batch(const tqp_config *cfg, int ctx);

#endif
