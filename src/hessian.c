/* Layer-by-layer Hessian collection over MPI ranks (see include/tqp/hessian.h).  Every rank
 * forwards its own windows; the capture hook stages each group's inputs, and every rank
 * flushes the same number of batches so that the collective reductions always match. */
#include "tqp/hessian.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "tqp/forward.h"
#include "tqp/mpiutil.h"
#include "tqp/progress.h"

enum { STAGE_BYTES = 256 << 20 };

int tqp_hessian_default_batch(const tqp_config *cfg, int ctx)
{
    int64_t widest = cfg->hidden_dim > cfg->dim ? cfg->hidden_dim : cfg->dim;
    int64_t per = (int64_t)ctx * widest * 8;
    int64_t b = STAGE_BYTES / (per ? per : 1);
    return (int)(b < 1 ? 1 : b > 64 ? 64 : b);
}

typedef struct {
    tqp_hacc *acc[TQP_GROUP_COUNT];
} capture_ctx;

/* What one thread's capture hook needs: the accumulators and the slot of the window it is
 * forwarding (its place in the batch, so the stage does not depend on the thread order). */
typedef struct {
    capture_ctx *cc;
    int slot, ctx;
} capture_slot;

static tqp_status capture(void *vctx, int layer, tqp_group g, const float *x, int ntok, int n)
{
    capture_slot *c = vctx;
    char what[64];
    snprintf(what, sizeof what, "layer %d %s", layer, tqp_group_name(g));
    return tqp_hacc_stage_at(c->cc->acc[g], c->slot, (int64_t)c->slot * c->ctx, x, ntok, what);
}

typedef struct {
    MPI_Comm comm;
    const tqp_model *m;
    const tqp_calib *cal;
    tqp_forward **fw; // one workspace per thread
    float *x;         // (local windows, ctx, dim) residual stream
    int batch, threads; // threads: for the accumulation
    int fthreads;       // threads forwarding windows (workspaces): min(threads, batch)
    double t_fwd, t_acc, t_write; // this layer's seconds: forward passes, accumulation, commit
} run_state;

/* Window w of a batch captures into stage slot w (its place in the batch). */
static const tqp_forward_hooks *hooks_of(void *hctx, long w, tqp_forward_hooks *buf)
{
    capture_slot *slots = hctx;
    *buf = (tqp_forward_hooks){capture, &slots[w]};
    return buf;
}

/* Forward local windows [w0, w1) through layer l (tqp_forward_windows on the rank's
 * workspaces), window w into stage slot w - w0 when cc is given. */
static tqp_status forward_windows(run_state *rs, int l, const tqp_layer_weights *lw, long w0,
                                  long w1, capture_ctx *cc)
{
    int ctx = rs->cal->ctx;
    size_t wsz = (size_t)ctx * rs->m->cfg.dim;
    capture_slot *slots = cc ? tqp_malloc(sizeof *slots * (size_t)(w1 - w0 + 1)) : NULL;
    if (cc && !slots) return TQP_ENOMEM;
    for (long w = w0; w < w1 && cc; w++)
        slots[w - w0] = (capture_slot){cc, (int)(w - w0), ctx};
    tqp_status s = tqp_forward_windows(rs->fw, rs->fthreads, rs->threads, lw, l, rs->x + w0 * wsz,
                                       wsz, ctx, w1 - w0, cc ? hooks_of : NULL, slots);
    free(slots);
    return s;
}

/* Forward the local windows through layer l without collecting (catching up on resume). */
static tqp_status pass_through(run_state *rs, int l)
{
    tqp_layer_weights lw;
    TQP_CHECK(tqp_model_layer_load(rs->m, l, &lw));
    tqp_status s = forward_windows(rs, l, &lw, 0, rs->cal->w1 - rs->cal->w0, NULL);
    tqp_layer_weights_release(&lw);
    return s;
}

/* Forward layer l over the local windows in batches, flushing every batch. */
static tqp_status collect_layer(run_state *rs, int l, const tqp_layer_weights *lw, capture_ctx *cc)
{
    int P;
    MPI_Comm_size(rs->comm, &P);
    long nloc = rs->cal->w1 - rs->cal->w0, most = (rs->cal->nsamples + P - 1) / P;
    long nb = (most + rs->batch - 1) / rs->batch;
    char what[64];
    for (long b = 0; b < nb; b++) {
        long w0 = b * rs->batch, w1 = (b + 1) * rs->batch < nloc ? (b + 1) * rs->batch : nloc;
        double t = tqp_now();
        tqp_status s = w1 > w0 ? forward_windows(rs, l, lw, w0, w1, cc) : TQP_OK;
        TQP_CHECK(tqp_mpi_agree(rs->comm, s));
        rs->t_fwd += tqp_now() - t;
        t = tqp_now();
        for (int g = 0; g < TQP_GROUP_COUNT; g++) {
            snprintf(what, sizeof what, "layer %d %s", l, tqp_group_name((tqp_group)g));
            TQP_CHECK(tqp_hacc_flush(cc->acc[g], what));
        }
        rs->t_acc += tqp_now() - t;
        snprintf(what, sizeof what, "hessian-reduce-%d", l);
        tqp_crash_point(what); /* between two reductions of layer l */
    }
    double t = tqp_now();
    for (int g = 0; g < TQP_GROUP_COUNT; g++)
        TQP_CHECK(tqp_hacc_finalize(cc->acc[g]));
    rs->t_acc += tqp_now() - t;
    return TQP_OK;
}

/* Layer l's Hessians into the accumulators of cc (made once for every layer, reset here). */
static tqp_status one_layer(run_state *rs, tqp_hstore *st, int l, capture_ctx *cc, double *flops)
{
    tqp_layer_weights lw;
    TQP_CHECK(tqp_mpi_agree(rs->comm, tqp_model_layer_load(rs->m, l, &lw)));
    for (int g = 0; g < TQP_GROUP_COUNT; g++)
        tqp_hacc_reset(cc->acc[g]);
    rs->t_fwd = rs->t_acc = rs->t_write = 0;
    tqp_status s = collect_layer(rs, l, &lw, cc);
    double t = tqp_now();
    if (s == TQP_OK) s = tqp_hstore_commit_layer(rs->comm, st, l, cc->acc);
    rs->t_write = tqp_now() - t;
    *flops = 0;
    for (int g = 0; g < TQP_GROUP_COUNT; g++)
        *flops += tqp_hacc_flops(cc->acc[g]);
    tqp_layer_weights_release(&lw);
    return s;
}

static tqp_status setup(run_state *rs)
{
    const tqp_config *c = &rs->m->cfg;
    long nloc = rs->cal->w1 - rs->cal->w0;
    size_t wsz = (size_t)rs->cal->ctx * c->dim;
    rs->x = tqp_malloc_aligned(sizeof(float) * wsz * (size_t)(nloc ? nloc : 1));
    rs->fw = tqp_calloc((size_t)rs->fthreads, sizeof *rs->fw);
    tqp_status s = rs->x && rs->fw ? TQP_OK : TQP_ENOMEM;
    for (int t = 0; t < rs->fthreads && s == TQP_OK; t++)
        s = tqp_forward_create(c, rs->cal->ctx, &rs->fw[t]);
    const float *embed;
    float *owned = NULL;
    if (s == TQP_OK) s = tqp_model_global_load(rs->m, TQP_G_EMBED, &embed, &owned);
    for (long w = 0; w < nloc && s == TQP_OK; w++)
        tqp_forward_embed(rs->fw[0], embed, rs->cal->tokens + w * rs->cal->ctx, rs->cal->ctx,
                          rs->x + w * wsz);
    free(owned);
    return tqp_mpi_agree(rs->comm, s);
}

static void report(const run_state *rs, int l, int L, double tokens, double dt, double flops,
                   double elapsed, int done, int remaining)
{
    fprintf(stderr,
            "hessian: layer %d/%d committed: %.0f tokens in %.2f s (forward %.2f s, accumulation "
            "%.2f s at %.2f GFLOP/s, writing %.2f s), %.0f tok/s, elapsed %.1f s, ETA %.1f s\n",
            l + 1, L, tokens, dt, rs->t_fwd, rs->t_acc,
            rs->t_acc > 0 ? flops / rs->t_acc * 1e-9 : 0, rs->t_write,
            dt > 0 ? tokens / dt : 0, elapsed, remaining * elapsed / done);
}

tqp_status tqp_hessian_run(MPI_Comm comm, const tqp_model *m, const tqp_calib *cal, tqp_hstore *st,
                           const tqp_hessian_options *o, tqp_hessian_result *r)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    run_state rs = {.comm = comm, .m = m, .cal = cal, .batch = o->batch_windows,
                    .threads = o->threads > 0 ? o->threads : 1};
    int P;
    MPI_Comm_size(comm, &P);
    /* A batch of more windows than a rank has stages nothing more, only memory (the sums are
     * exact, so neither the batch size nor the thread count changes a bit of the result). */
    long most = (cal->nsamples + P - 1) / P;
    if (rs.batch > most) rs.batch = (int)(most > 0 ? most : 1);
    rs.fthreads = rs.threads < rs.batch ? rs.threads : rs.batch; /* no idle workspaces */
    double t0 = tqp_now(), total_flops = 0;
    *r = (tqp_hessian_result){.layers_skipped = st->committed,
                              .tokens = (int64_t)cal->nsamples * cal->ctx};
    tqp_status s = setup(&rs);
    for (int l = 0; l < st->committed && s == TQP_OK; l++)
        s = tqp_mpi_agree(comm, pass_through(&rs, l));
    capture_ctx cc = {{0}};
    for (int g = 0; g < TQP_GROUP_COUNT && s == TQP_OK && st->committed < m->cfg.n_layers; g++)
        s = tqp_hacc_create(comm, tqp_group_width(&m->cfg, (tqp_group)g),
                            (int64_t)rs.batch * cal->ctx, rs.threads, &cc.acc[g]);
    s = tqp_mpi_agree(comm, s);
    double t_start = tqp_now();
    for (int l = st->committed; l < m->cfg.n_layers && s == TQP_OK; l++) {
        double tl = tqp_now(), fl = 0, fsum = 0;
        s = one_layer(&rs, st, l, &cc, &fl);
        if (s != TQP_OK) break;
        MPI_Allreduce(&fl, &fsum, 1, MPI_DOUBLE, MPI_SUM, comm);
        total_flops += fsum;
        r->layers_done++;
        if (o->progress && rank == 0)
            report(&rs, l, m->cfg.n_layers, (double)r->tokens, tqp_now() - tl, fsum, tqp_now() - t_start,
                   r->layers_done, m->cfg.n_layers - l - 1);
    }
    r->seconds = tqp_now() - t0;
    r->gflops = r->seconds > 0 ? total_flops / (tqp_now() - t_start) * 1e-9 : 0;
    for (int g = 0; g < TQP_GROUP_COUNT; g++)
        tqp_hacc_destroy(&cc.acc[g]);
    for (int t = 0; rs.fw && t < rs.fthreads; t++)
        tqp_forward_destroy(&rs.fw[t]);
    free(rs.fw);
    free(rs.x);
    return s;
}

tqp_status tqp_hessian_collect(MPI_Comm comm, const tqp_model *m, const tqp_hessian_job *job,
                               tqp_hstore *st, tqp_hessian_result *r)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    tqp_calib cal = {0};
    tqp_status s = tqp_calib_load(comm, m, job->tokenizer, job->text, job->tokens, job->nsamples,
                                  job->ctx, job->random, job->seed, &cal);
    char fp[65] = "";
    if (s == TQP_OK) s = tqp_model_fingerprint(m, fp);
    if (s == TQP_OK) {
        tqp_hessian_meta meta = {.model = job->model,
                                 .model_fingerprint = fp,
                                 .text = job->tokens ? job->tokens : job->text,
                                 .text_sha256 = cal.sha256,
                                 .nsamples = job->nsamples,
                                 .ctx = job->ctx,
                                 .random = job->random,
                                 .seed = job->seed,
                                 .n_layers = m->cfg.n_layers};
        for (int g = 0; g < TQP_GROUP_COUNT; g++)
            meta.width[g] = tqp_group_width(&m->cfg, (tqp_group)g);
        s = tqp_hstore_open(comm, job->out, &meta, job->mode, st);
    }
    if (s == TQP_OK && rank == 0 && st->committed > 0 && !job->quiet)
        fprintf(stderr, "hessian: resuming %s: layers 0..%d already committed\n", job->out,
                st->committed - 1);
    if (s == TQP_OK) {
        /* a batch smaller than the threads costs no speed: the threads share its windows */
        int batch = job->batch > 0 ? job->batch : tqp_hessian_default_batch(&m->cfg, job->ctx);
        tqp_hessian_options o = {.batch_windows = batch, .progress = !job->quiet,
                                 .threads = job->threads};
        s = tqp_hessian_run(comm, m, &cal, st, &o, r);
    }
    tqp_calib_free(&cal);
    return s;
}
