/* Calibration windows: which `ctx`-token windows of a token stream are used, and each rank's
 * share of them.  By default the first `nsamples` non-overlapping windows; with a seed,
 * `nsamples` starts drawn uniformly from [0, ntokens - ctx] by splitmix64(seed) (start =
 * next() mod (ntokens - ctx + 1)).  Window k goes to the rank whose block holds k
 * (tqp_partition).  A pre-tokenized file is read in place by every rank (only its windows);
 * a text is tokenized on rank 0, which sends each rank its windows. */
#ifndef TQP_CALIB_H
#define TQP_CALIB_H

#include <mpi.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/model.h"

typedef struct {
    int nsamples, ctx;
    int random; // 1 if the starts were drawn from `seed`
    uint64_t seed;
    int64_t stream_tokens; // tokens in the whole stream
    long w0, w1;           // this rank's windows [w0, w1)
    uint32_t *tokens;      // (w1 - w0, ctx) this rank's windows, owned
    char sha256[65];       // of the text or token file
} tqp_calib;

/* Collective.  Exactly one of text_path and tokens_path is non-NULL. */
tqp_status tqp_calib_load(MPI_Comm comm, const tqp_model *m, const char *tokenizer,
                          const char *text_path, const char *tokens_path, int nsamples, int ctx,
                          int random, uint64_t seed, tqp_calib *c);
void tqp_calib_free(tqp_calib *c);

/* Window starts: (nsamples) token offsets, the same on every rank. */
tqp_status tqp_calib_starts(int64_t ntokens, int nsamples, int ctx, int random, uint64_t seed,
                            const char *what, int64_t *starts);

#endif
