/* Stream-windows perplexity over MPI ranks (see include/tqp/eval.h).  Local windows are run in
 * batches, layer by layer, so only one layer's weights are converted at a time, the windows of
 * a batch split over the threads; per-window NLLs are gathered and summed in window order. */
#include "tqp/eval.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "tqp/forward.h"
#include "tqp/mpiutil.h"
#include "tqp/progress.h"

enum { BATCH_BYTES = 256 << 20 }; /* activation memory per batch of windows */

int tqp_eval_first_scored(const tqp_eval_options *opt)
{
    return opt->half_window ? opt->ctx / 2 + 1 : 1;
}

static tqp_status model_layer(void *ctx, int l, tqp_layer_weights *lw)
{
    return tqp_model_layer_load(ctx, l, lw);
}

/* Forward windows [w0, w0 + nb) through every layer and write their NLLs to nll[0..nb).  The
 * windows of a batch are split over the threads (fw: one workspace per thread); a window's
 * activations and NLL never depend on the thread that computes them. */
static tqp_status run_batch(MPI_Comm comm, const tqp_model *m, const tqp_weight_source *src,
                            tqp_forward **fw, int threads,
                            const uint32_t *tokens, long w0, int nb, const tqp_eval_options *o,
                            float *x, const float *embed, const float *norm, const float *head,
                            double *nll)
{
    const tqp_config *c = &m->cfg;
    size_t wsz = (size_t)o->ctx * c->dim;
    /* whole rounds of `threads` windows, then the rest one window at a time with the threads
     * sharing its products (forward.h), so that no thread waits for a short last round */
    int full = threads > 1 ? nb / threads * threads : nb, T = threads;
    for (int b = 0; b < nb; b++)
        tqp_forward_embed(fw[0], embed, tokens + (w0 + b) * o->ctx, o->ctx, x + b * wsz);
    for (int l = 0; l < c->n_layers; l++) {
        tqp_layer_weights lw;
        TQP_CHECK(src->layer(src->ctx, l, &lw));
        tqp_status s = tqp_forward_windows(fw, T, T, &lw, l, x, wsz, o->ctx, nb, NULL, NULL);
        tqp_layer_weights_release(&lw);
        if (src->collective) s = tqp_mpi_agree(comm, s); /* the next layer's call is collective */
        TQP_CHECK(s);
    }
#pragma omp parallel for num_threads(T) schedule(dynamic, 1) if (T > 1 && full > 0)
    for (int b = 0; b < full; b++)
        nll[b] = tqp_forward_nll(fw[omp_get_thread_num()], norm, head, x + b * wsz,
                                 tokens + (w0 + b) * o->ctx, o->ctx, tqp_eval_first_scored(o));
    if (full < nb) TQP_CHECK(tqp_forward_set_threads(fw[0], T));
    for (int b = full; b < nb; b++)
        nll[b] = tqp_forward_nll(fw[0], norm, head, x + b * wsz, tokens + (w0 + b) * o->ctx,
                                 o->ctx, tqp_eval_first_scored(o));
    tqp_forward_set_threads(fw[0], 1);
    return TQP_OK;
}

typedef struct {
    const float *embed, *norm, *head;
    float *owned[3];
} globals;

static tqp_status load_globals(const tqp_model *m, globals *g)
{
    TQP_CHECK(tqp_model_global_load(m, TQP_G_EMBED, &g->embed, &g->owned[0]));
    TQP_CHECK(tqp_model_global_load(m, TQP_G_NORM, &g->norm, &g->owned[1]));
    return tqp_model_global_load(m, TQP_G_OUTPUT, &g->head, &g->owned[2]);
}

/* The local share: windows [w0, w1) into nll[0 .. w1-w0). */
static tqp_status eval_local(MPI_Comm comm, const tqp_model *m, const tqp_weight_source *src,
                             const uint32_t *tokens, long w0, long w1, const tqp_eval_options *o,
                             int show, double *nll)
{
    const tqp_config *c = &m->cfg;
    size_t wbytes = (size_t)o->ctx * c->dim * sizeof(float);
    long per = (long)(BATCH_BYTES / wbytes);
    int threads = o->threads > 1 ? o->threads : 1;
    if (per < threads) per = threads; /* a window per thread at least */
    int nb_max = (int)(per < 1 ? 1 : per > w1 - w0 ? (w1 - w0 > 0 ? w1 - w0 : 1) : per);
    int nfw = threads < nb_max ? threads : nb_max; /* workspaces: windows forwarded at once */
    globals g = {0};
    tqp_forward **fw = tqp_calloc((size_t)nfw, sizeof *fw);
    float *x = tqp_malloc_aligned(wbytes * (size_t)nb_max);
    tqp_status s = x && fw ? TQP_OK : TQP_ENOMEM;
    for (int t = 0; t < nfw && s == TQP_OK; t++)
        s = tqp_forward_create(c, o->ctx, &fw[t]);
    if (s == TQP_OK && w1 > w0) s = load_globals(m, &g);
    tqp_progress pr;
    tqp_progress_init(&pr, "eval", (double)(w1 - w0) * o->ctx, "tok", show);
    /* a collective source: every rank runs as many batches as the rank with the most (a rank
     * out of windows runs empty ones, taking part in each layer's decoding) */
    long batches = (w1 - w0 + nb_max - 1) / nb_max;
    if (src->collective) {
        s = tqp_mpi_agree(comm, s);
        long most = batches;
        if (s == TQP_OK && MPI_Allreduce(&batches, &most, 1, MPI_LONG, MPI_MAX, comm) != MPI_SUCCESS)
            s = tqp_error_set(TQP_EMPI, "eval: batch count reduction failed");
        batches = most;
    }
    for (long b = 0; b < batches && s == TQP_OK; b++) {
        long w = w0 + b * nb_max;
        int nb = (int)(w >= w1 ? 0 : w1 - w < nb_max ? w1 - w : nb_max);
        s = run_batch(comm, m, src, fw, threads, tokens, w, nb, o, x, g.embed, g.norm, g.head,
                      nb ? nll + (w - w0) : nll);
        if (src->collective) s = tqp_mpi_agree(comm, s);
        tqp_progress_update(&pr, (double)(nb ? w + nb - w0 : w1 - w0) * o->ctx, "rank 0's share");
    }
    tqp_progress_finish(&pr, (double)(w1 - w0) * o->ctx, 0);
    for (int i = 0; i < 3; i++)
        free(g.owned[i]);
    for (int t = 0; fw && t < nfw; t++)
        tqp_forward_destroy(&fw[t]);
    free(fw);
    free(x);
    return s;
}

static tqp_status check_options(const tqp_model *m, size_t ntokens, const tqp_eval_options *o)
{
    if (o->ctx < 2)
        return tqp_error_set(TQP_EUSAGE, "--ctx %d: a window needs at least 2 tokens", o->ctx);
    if (o->ctx > m->cfg.max_seq_len)
        return tqp_error_set(TQP_EUSAGE,
                             "--ctx %d exceeds the model's maximum sequence length "
                             "%d",
                             o->ctx, m->cfg.max_seq_len);
    if (o->half_window && o->ctx < 4)
        return tqp_error_set(TQP_EUSAGE, "--half-window needs --ctx >= 4");
    if (ntokens < (size_t)o->ctx)
        return tqp_error_set(TQP_EINPUT, "the text has %zu tokens, fewer than one window of %d",
                             ntokens, o->ctx);
    return TQP_OK;
}

/* Gather every rank's per-window NLLs into window order and sum them in that order. */
static tqp_status gather_sum(MPI_Comm comm, long nw, const double *local, long w0, long w1,
                             double *sum)
{
    int P;
    MPI_Comm_size(comm, &P);
    int *counts = tqp_malloc(sizeof(int) * 2 * (size_t)P);
    double *all = tqp_malloc(sizeof(double) * (size_t)nw);
    if (tqp_mpi_agree(comm, counts && all ? TQP_OK : TQP_ENOMEM) != TQP_OK) {
        free(counts);
        free(all);
        return TQP_ENOMEM;
    }
    for (int r = 0; r < P; r++) {
        long b, e;
        tqp_partition(nw, P, r, &b, &e);
        counts[r] = (int)(e - b);
        counts[P + r] = (int)b;
    }
    int rc = MPI_Allgatherv(local, (int)(w1 - w0), MPI_DOUBLE, all, counts, counts + P, MPI_DOUBLE,
                            comm);
    *sum = 0;
    for (long w = 0; w < nw; w++)
        *sum += all[w];
    free(counts);
    free(all);
    return rc == MPI_SUCCESS ? TQP_OK : tqp_error_set(TQP_EMPI, "MPI_Allgatherv failed");
}

tqp_status tqp_eval_perplexity(MPI_Comm comm, const tqp_model *m, const tqp_weight_source *src,
                               const uint32_t *tokens, size_t ntokens, const tqp_eval_options *o,
                               tqp_eval_result *res)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    TQP_CHECK(check_options(m, ntokens, o));
    tqp_weight_source self = {model_layer, (void *)m};
    if (!src) src = &self;
    double t0 = tqp_now();
    long nw = (long)(ntokens / (size_t)o->ctx), w0, w1;
    tqp_partition(nw, P, rank, &w0, &w1);
    double *nll = tqp_calloc((size_t)(w1 - w0 + 1), sizeof *nll);
    tqp_status s = tqp_mpi_agree(comm, nll ? TQP_OK : TQP_ENOMEM); /* eval_local is collective */
    if (s == TQP_OK) s = eval_local(comm, m, src, tokens, w0, w1, o, o->progress && rank == 0, nll);
    s = tqp_mpi_agree(comm, s);
    double sum = 0;
    if (s == TQP_OK) s = gather_sum(comm, nw, nll, w0, w1, &sum);
    free(nll);
    TQP_CHECK(s);
    *res = (tqp_eval_result){
        .windows = nw, .nll_sum = sum, .ranks = P, .tokens_total = (int64_t)ntokens};
    res->tokens_scored = nw * (int64_t)(o->ctx - tqp_eval_first_scored(o));
    res->nll = sum / (double)res->tokens_scored;
    res->ppl = exp(res->nll);
    res->seconds = tqp_now() - t0;
    res->tokens_per_second = res->seconds > 0 ? (double)nw * o->ctx / res->seconds : 0;
    return TQP_OK;
}
