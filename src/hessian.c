/* Layer-by-layer Hessian collection over MPI ranks (see include/tqp/hessian.h).  Every rank
 * forwards its own windows; the capture hook stages each group's inputs, and every rank
 * flushes the same number of batches so that the collective reductions always match. */
#include "tqp/hessian.h"

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

static tqp_status capture(void *vctx, int layer, tqp_group g, const float *x, int ntok, int n)
{
    capture_ctx *c = vctx;
    char what[64];
    snprintf(what, sizeof what, "layer %d %s", layer, tqp_group_name(g));
    return tqp_hacc_stage(c->acc[g], x, ntok, what);
}

typedef struct {
    MPI_Comm comm;
    const tqp_model *m;
    const tqp_calib *cal;
    tqp_forward *fw;
    float *x; // (local windows, ctx, dim) residual stream
    int batch;
} run_state;

/* Forward the local windows through layer l without collecting (catching up on resume). */
static tqp_status pass_through(run_state *rs, int l)
{
    tqp_layer_weights lw;
    TQP_CHECK(tqp_model_layer_load(rs->m, l, &lw));
    int ctx = rs->cal->ctx;
    size_t wsz = (size_t)ctx * rs->m->cfg.dim;
    tqp_status s = TQP_OK;
    for (long w = 0; w < rs->cal->w1 - rs->cal->w0 && s == TQP_OK; w++)
        s = tqp_forward_layer(rs->fw, &lw, l, rs->x + w * wsz, ctx, NULL);
    tqp_layer_weights_release(&lw);
    return s;
}

/* Forward layer l over the local windows in batches, flushing every batch. */
static tqp_status collect_layer(run_state *rs, int l, const tqp_layer_weights *lw, capture_ctx *cc)
{
    int P, ctx = rs->cal->ctx;
    MPI_Comm_size(rs->comm, &P);
    long nloc = rs->cal->w1 - rs->cal->w0, most = (rs->cal->nsamples + P - 1) / P;
    long nb = (most + rs->batch - 1) / rs->batch;
    size_t wsz = (size_t)ctx * rs->m->cfg.dim;
    tqp_forward_hooks hooks = {capture, cc};
    char what[64];
    for (long b = 0; b < nb; b++) {
        tqp_status s = TQP_OK;
        for (long w = b * rs->batch; w < nloc && w < (b + 1) * rs->batch && s == TQP_OK; w++)
            s = tqp_forward_layer(rs->fw, lw, l, rs->x + w * wsz, ctx, &hooks);
        TQP_CHECK(tqp_mpi_agree(rs->comm, s));
        for (int g = 0; g < TQP_GROUP_COUNT; g++) {
            snprintf(what, sizeof what, "layer %d %s", l, tqp_group_name((tqp_group)g));
            TQP_CHECK(tqp_hacc_flush(cc->acc[g], what));
        }
        snprintf(what, sizeof what, "hessian-reduce-%d", l);
        tqp_crash_point(what); /* between two reductions of layer l */
    }
    for (int g = 0; g < TQP_GROUP_COUNT; g++)
        TQP_CHECK(tqp_hacc_finalize(cc->acc[g]));
    return TQP_OK;
}

static tqp_status one_layer(run_state *rs, tqp_hstore *st, int l, double *flops)
{
    const tqp_config *c = &rs->m->cfg;
    tqp_layer_weights lw;
    TQP_CHECK(tqp_mpi_agree(rs->comm, tqp_model_layer_load(rs->m, l, &lw)));
    capture_ctx cc = {{0}};
    tqp_status s = TQP_OK;
    for (int g = 0; g < TQP_GROUP_COUNT && s == TQP_OK; g++)
        s = tqp_hacc_create(rs->comm, tqp_group_width(c, (tqp_group)g),
                            (int64_t)rs->batch * rs->cal->ctx, &cc.acc[g]);
    s = tqp_mpi_agree(rs->comm, s);
    if (s == TQP_OK) s = collect_layer(rs, l, &lw, &cc);
    if (s == TQP_OK) s = tqp_hstore_commit_layer(rs->comm, st, l, cc.acc);
    *flops = 0;
    for (int g = 0; g < TQP_GROUP_COUNT; g++) {
        if (cc.acc[g]) *flops += tqp_hacc_flops(cc.acc[g]);
        tqp_hacc_destroy(&cc.acc[g]);
    }
    tqp_layer_weights_release(&lw);
    return s;
}

static tqp_status setup(run_state *rs)
{
    const tqp_config *c = &rs->m->cfg;
    long nloc = rs->cal->w1 - rs->cal->w0;
    size_t wsz = (size_t)rs->cal->ctx * c->dim;
    rs->x = tqp_malloc_aligned(sizeof(float) * wsz * (size_t)(nloc ? nloc : 1));
    tqp_status s = rs->x ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK) s = tqp_forward_create(c, rs->cal->ctx, &rs->fw);
    const float *embed;
    float *owned = NULL;
    if (s == TQP_OK) s = tqp_model_global_load(rs->m, TQP_G_EMBED, &embed, &owned);
    for (long w = 0; w < nloc && s == TQP_OK; w++)
        tqp_forward_embed(rs->fw, embed, rs->cal->tokens + w * rs->cal->ctx, rs->cal->ctx,
                          rs->x + w * wsz);
    free(owned);
    return tqp_mpi_agree(rs->comm, s);
}

static void report(int l, int L, double tokens, double dt, double flops, double elapsed, int done,
                   int remaining)
{
    fprintf(stderr,
            "hessian: layer %d/%d committed: %.0f tokens in %.2f s, %.0f tok/s, "
            "accumulation %.2f GFLOP/s, elapsed %.1f s, ETA %.1f s\n",
            l + 1, L, tokens, dt, dt > 0 ? tokens / dt : 0, dt > 0 ? flops / dt * 1e-9 : 0, elapsed,
            remaining * elapsed / done);
}

tqp_status tqp_hessian_run(MPI_Comm comm, const tqp_model *m, const tqp_calib *cal, tqp_hstore *st,
                           const tqp_hessian_options *o, tqp_hessian_result *r)
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    run_state rs = {.comm = comm, .m = m, .cal = cal, .batch = o->batch_windows};
    int P;
    MPI_Comm_size(comm, &P);
    /* A batch of more windows than a rank has stages nothing more, only memory (the sums are
     * exact, so the batch size never changes a bit of the result). */
    long most = (cal->nsamples + P - 1) / P;
    if (rs.batch > most) rs.batch = (int)(most > 0 ? most : 1);
    double t0 = tqp_now(), total_flops = 0;
    *r = (tqp_hessian_result){.layers_skipped = st->committed,
                              .tokens = (int64_t)cal->nsamples * cal->ctx};
    tqp_status s = setup(&rs);
    for (int l = 0; l < st->committed && s == TQP_OK; l++)
        s = tqp_mpi_agree(comm, pass_through(&rs, l));
    double t_start = tqp_now();
    for (int l = st->committed; l < m->cfg.n_layers && s == TQP_OK; l++) {
        double tl = tqp_now(), fl = 0, fsum = 0;
        s = one_layer(&rs, st, l, &fl);
        if (s != TQP_OK) break;
        MPI_Allreduce(&fl, &fsum, 1, MPI_DOUBLE, MPI_SUM, comm);
        total_flops += fsum;
        r->layers_done++;
        if (o->progress && rank == 0)
            report(l, m->cfg.n_layers, (double)r->tokens, tqp_now() - tl, fsum, tqp_now() - t_start,
                   r->layers_done, m->cfg.n_layers - l - 1);
    }
    r->seconds = tqp_now() - t0;
    r->gflops = r->seconds > 0 ? total_flops / (tqp_now() - t_start) * 1e-9 : 0;
    tqp_forward_destroy(&rs.fw);
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
        tqp_hessian_options o = {.batch_windows = job->batch > 0
                                                      ? job->batch
                                                      : tqp_hessian_default_batch(&m->cfg, job->ctx),
                                 .progress = !job->quiet};
        s = tqp_hessian_run(comm, m, &cal, st, &o, r);
    }
    tqp_calib_free(&cal);
    return s;
}
