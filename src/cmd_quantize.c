/* `tqp quantize`: the whole pipeline in one MPI job, crash-safe and resumable.
 *
 * State diagram of a run (docs/pipeline.md).  Phases, in order; each is skipped when its result
 * is already on disk with the same identity (options, versions, input checksums):
 *
 *   start --check_options()/tqp_qwriter_precheck()--> [refused: other options, exit 2]
 *     |
 *     v
 *   HESSIANS  collect() -> tqp_hessian_collect(): layer by layer into OUT.hessians.h5
 *     |        (its own per-layer commits, include/tqp/hstore.h); skipped with --hessians
 *     v
 *   OPEN      tqp_qwriter_open(): read OUT.parts/state.json, verify committed layers (SHA-256),
 *     |        verify an existing OUT (Fletcher-32 per dataset) and salvage its good layers
 *     v
 *   QUANTIZE  tqp_quantize_run(), per layer l:
 *     |          absent --tqp_qwriter_layer_begin()--> writing (layer_NNN.h5.tmp.PID)
 *     |          writing --tqp_qwriter_layer_commit(): fsync, rename--> committed
 *     |          committed --state.json rewritten with its SHA-256--> recorded
 *     |          recorded --checksum mismatch on open--> absent (redone)
 *     |          writing --crash--> absent (the temporary file is removed on open)
 *     v
 *   ASSEMBLE  tqp_qwriter_finish(): OUT.tmp.PID from the parts, fsync, rename to OUT
 *     |        (the run's commit point), then OUT.parts removed
 *     v
 *   VALIDATE  validate(): perplexity of the full-precision and the quantized model on
 *     |        --eval-text (read-only; redone on a rerun)
 *     v
 *   done      summary line, --json summary, "run_done" event
 *
 * A crash anywhere leaves committed work in place; rerunning the same command resumes at the
 * first uncommitted layer.  Every phase change, commit and result is also a line of the JSON
 * event log OUT.events.jsonl (include/tqp/events.h).
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tqp/cli.h"
#include "tqp/eval.h"
#include "tqp/events.h"
#include "tqp/hessian.h"
#include "tqp/mpiutil.h"
#include "tqp/progress.h"
#include "tqp/qfile.h"
#include "tqp/quantize.h"
#include "tqp/threads.h"
#include "tqp/tcq.h"

typedef struct {
    const char *model, *tokenizer, *hessians, *text, *tokens, *out, *json, *rotation, *rounding;
    const char *codebook, *seed, *code, *eval_text, *validate_on, *rho;
    int nsamples, ctx, bits, quiet, force, tL, tV, threads, eval_ctx, teams;
    double damp;
} quant_args;

static tqp_status parse(const quant_args *a, tqp_quant_options *o)
{
    char *end;
    memset(o, 0, sizeof *o);
    o->bits = a->bits;
    o->rotation = tqp_rot_parse(a->rotation);
    o->rounding = tqp_rounding_parse(a->rounding);
    o->cb = tqp_codebook_find(a->codebook);
    o->damp = a->damp;
    if (!strcmp(a->rho, "auto")) {
        o->rho = TQP_RHO_AUTO;
    } else {
        o->rho = strtod(a->rho, &end);
        if (end == a->rho || *end || !isfinite(o->rho) || o->rho < 0 || o->rho > 10)
            return tqp_error_set(TQP_EUSAGE, "--scale-rho '%s': a number in [0, 10] or auto",
                                 a->rho);
    }
    o->progress = !a->quiet;
    o->threads = a->threads;
    o->teams = a->teams;
    if (a->teams < 0 || a->teams > 1 << 20)
        return tqp_error_set(TQP_EUSAGE, "--teams must be 0 (automatic) or a positive count");
    o->seed = strtoull(a->seed, &end, 10);
    if (!*a->seed || *end || a->seed[0] == '-')
        return tqp_error_set(TQP_EUSAGE, "--seed expects a non-negative integer");
    if (o->rotation == TQP_ROT_COUNT)
        return tqp_error_set(TQP_EUSAGE, "--rotation must be none, rht or kron");
    if (o->rounding == TQP_ROUND_COUNT)
        return tqp_error_set(TQP_EUSAGE, "--rounding must be nearest or ldlq");
    if (!o->cb)
        return tqp_error_set(TQP_EUSAGE, "unknown --codebook '%s' (known: scalar, trellis, e8p)",
                             a->codebook);
    if (a->code && !TQP_CB_IS(o->cb, TQP_CB_TRELLIS))
        return tqp_error_set(TQP_EUSAGE, "--code applies to --codebook trellis");
    if (o->bits < 2 || o->bits > 4)
        return tqp_error_set(TQP_EUSAGE, "--bits must be 2, 3 or 4");
    if (o->bits < o->cb->min_bits || o->bits > o->cb->max_bits)
        return tqp_error_set(TQP_EUSAGE, "--codebook %s takes --bits %d to %d", o->cb->name,
                             o->cb->min_bits, o->cb->max_bits);
    if (!(o->damp > 0) || o->damp > 10)
        return tqp_error_set(TQP_EUSAGE, "--damp must be in (0, 10]");
    if (!a->hessians == !(a->text || a->tokens))
        return tqp_error_set(TQP_EUSAGE,
                             "give --hessians FILE, or --text/--tokens to collect "
                             "them first");
    if (a->text && a->tokens)
        return tqp_error_set(TQP_EUSAGE, "give only one of --text and --tokens");
    TQP_CHECK(tqp_check_validate_on(a->validate_on, 1));
    if (a->eval_ctx < 2 || a->eval_ctx > 1 << 20)
        return tqp_error_set(TQP_EUSAGE, "--eval-ctx must be at least 2");
    return TQP_OK;
}

/* Options and provenance, as root attributes and in the JSON summary. */
static cJSON *describe(const quant_args *a, const tqp_quant_options *o, const char *hpath,
                       const tqp_hfile *hf, const tqp_model *m, const char *fp)
{
    cJSON *d = cJSON_CreateObject();
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(d, "model", a->model);
    cJSON_AddStringToObject(d, "model_fingerprint", fp);
    cJSON_AddStringToObject(d, "hessians", hpath);
    cJSON_AddStringToObject(d, "hessian_identity", hf->identity);
    cJSON_AddNumberToObject(d, "bits", o->bits);
    cJSON_AddStringToObject(d, "rotation", tqp_rot_name(o->rotation));
    cJSON_AddStringToObject(d, "rounding", tqp_rounding_name(o->rounding));
    cJSON_AddStringToObject(d, "codebook", o->cb->name);
    cJSON_AddNumberToObject(d, "damp", o->damp);
    if (o->rho == TQP_RHO_AUTO)
        cJSON_AddStringToObject(d, "scale_rho", "auto");
    else
        cJSON_AddNumberToObject(d, "scale_rho", o->rho > 0 ? o->rho : o->cb->default_rho(o->bits));
    if (o->tcq) {
        const tqp_trellis *t = tqp_tcq_base(o->tcq);
        cJSON_AddStringToObject(d, "trellis_code", tqp_tcode_name(t->code));
        cJSON_AddNumberToObject(d, "trellis_L", t->L);
        cJSON_AddNumberToObject(d, "trellis_V", t->V);
    }
    cJSON_AddStringToObject(d, "seed", seed);
    cJSON *c = cJSON_AddObjectToObject(d, "config");
    const tqp_config *k = &m->cfg;
    cJSON_AddNumberToObject(c, "dim", k->dim);
    cJSON_AddNumberToObject(c, "hidden_dim", k->hidden_dim);
    cJSON_AddNumberToObject(c, "n_layers", k->n_layers);
    cJSON_AddNumberToObject(c, "n_heads", k->n_heads);
    cJSON_AddNumberToObject(c, "n_kv_heads", k->n_kv_heads);
    cJSON_AddNumberToObject(c, "vocab_size", k->vocab_size);
    cJSON_AddNumberToObject(c, "max_seq_len", k->max_seq_len);
    cJSON_AddNumberToObject(c, "rms_eps", k->rms_eps);
    cJSON_AddNumberToObject(c, "rope_theta", k->rope_theta);
    cJSON_AddBoolToObject(c, "tied_embeddings", k->tied_embeddings);
    cJSON_AddStringToObject(c, "rope", k->rope == TQP_ROPE_ADJACENT ? "adjacent" : "half");
    /* what else rebuilding the model from this file and config.json takes */
    cJSON_AddStringToObject(c, "architecture", tqp_arch_name(k->arch));
    cJSON_AddNumberToObject(c, "head_dim", k->head_dim);
    cJSON_AddBoolToObject(c, "qkv_bias", k->qkv_bias);
    cJSON_AddBoolToObject(c, "qk_norm", k->qk_norm);
    cJSON_AddNumberToObject(c, "sliding_window", k->sliding_window);
    /* the tokenizer the calibration text went through (its file's SHA-256) */
    char *tok = a->tokenizer ? strdup(a->tokenizer) : tqp_find_tokenizer(m), tsha[65], file[4200];
    if (tok) {
        struct stat st;
        int dir = stat(tok, &st) == 0 && S_ISDIR(st.st_mode);
        snprintf(file, sizeof file, dir ? "%s/tokenizer.json" : "%s", tok);
        if (tqp_sha256_file(file, tsha) == TQP_OK) {
            cJSON_AddStringToObject(d, "tokenizer", file);
            cJSON_AddStringToObject(d, "tokenizer_sha256", tsha);
        }
        free(tok);
    }
    tqp_error_clear();
    if (k->rope_scaling != TQP_ROPE_SCALING_NONE) { /* (absent otherwise: old identities hold) */
        cJSON *rs = cJSON_AddObjectToObject(c, "rope_scaling");
        cJSON_AddStringToObject(rs, "type",
                                k->rope_scaling == TQP_ROPE_SCALING_LLAMA3 ? "llama3" : "linear");
        cJSON_AddNumberToObject(rs, "factor", k->rope_factor);
        cJSON_AddNumberToObject(rs, "low_freq_factor", k->rope_low_freq_factor);
        cJSON_AddNumberToObject(rs, "high_freq_factor", k->rope_high_freq_factor);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                k->rope_original_max_seq_len);
    }
    return d;
}

/* --scale-rho auto: the matrices searched in this run, their candidates, the extra rounding
 * seconds, and the least and greatest ρ chosen. */
typedef struct {
    int mats, candidates;
    double seconds, rho_min, rho_max;
} rho_search;

static rho_search search_of(const tqp_quant_result *r)
{
    rho_search x = {0, 0, 0, INFINITY, -INFINITY};
    for (int i = 0; r->mats && i < r->n_mats; i++) {
        const tqp_qmat_info *m = &r->mats[i];
        if (m->rho_candidates <= 0) continue;
        x.mats++, x.candidates = m->rho_candidates, x.seconds += m->rho_search_seconds;
        x.rho_min = fmin(x.rho_min, m->rho), x.rho_max = fmax(x.rho_max, m->rho);
    }
    return x;
}

static void add_summary(cJSON *d, const tqp_quant_result *r)
{
    cJSON_AddNumberToObject(d, "bits_per_weight_code", r->bpw_code);
    cJSON_AddNumberToObject(d, "bits_per_weight_total", r->bpw_total);
    cJSON_AddNumberToObject(d, "proxy_loss_mean", r->proxy_mean);
    cJSON_AddNumberToObject(d, "quantized_weights", (double)r->weights);
    cJSON_AddNumberToObject(d, "unquantized_params", (double)r->plain_params);
}

static tqp_status write_json(const quant_args *a, cJSON *d, const tqp_quant_result *r, int P,
                             double seconds)
{
    cJSON_AddStringToObject(d, "command", "quantize");
    cJSON_AddStringToObject(d, "tqp_version", TQP_VERSION);
    cJSON_AddStringToObject(d, "out", a->out);
    cJSON_AddNumberToObject(d, "ranks", P);
    cJSON_AddNumberToObject(d, "seconds", seconds);
    cJSON_AddNumberToObject(d, "seconds_quantize", r->seconds);
    cJSON_AddNumberToObject(d, "quantize_largest_allocation_bytes", r->largest_alloc);
    /* the ρ search of this run (not in the file: its seconds vary, and a resumed run searched
     * only the layers it did; every matrix's ρ is in the file) */
    rho_search x = search_of(r);
    if (x.mats) {
        cJSON *o = cJSON_AddObjectToObject(d, "scale_rho_search");
        cJSON_AddNumberToObject(o, "matrices", x.mats);
        cJSON_AddNumberToObject(o, "candidates", x.candidates);
        cJSON_AddNumberToObject(o, "extra_seconds", x.seconds);
        cJSON_AddNumberToObject(o, "rho_min", x.rho_min);
        cJSON_AddNumberToObject(o, "rho_max", x.rho_max);
    }
    cJSON *mats = cJSON_AddArrayToObject(d, "matrices");
    for (int i = 0; i < r->n_mats; i++) {
        const tqp_qmat_info *q = &r->mats[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "layer", i / TQP_QMATS);
        cJSON_AddStringToObject(e, "matrix", tqp_qmat_name(i % TQP_QMATS));
        cJSON_AddNumberToObject(e, "rows", q->rows);
        cJSON_AddNumberToObject(e, "cols", q->cols);
        cJSON_AddNumberToObject(e, "proxy_loss", q->proxy_rel);
        cJSON_AddNumberToObject(e, "scale", q->scale);
        cJSON_AddNumberToObject(e, "damp", q->damp);
        cJSON_AddNumberToObject(e, "code_bits", q->code_bits);
        cJSON_AddNumberToObject(e, "total_bits", q->total_bits);
        cJSON_AddItemToArray(mats, e);
    }
    return tqp_json_write(a->json, d);
}

/* Collect Hessians into <out>.hessians.h5 first (resuming a previous collection). */
static tqp_status collect(const quant_args *a, const tqp_model *m, char **hpath)
{
    size_t n = strlen(a->out) + 16;
    *hpath = malloc(n);
    if (!*hpath) return TQP_ENOMEM;
    snprintf(*hpath, n, "%s.hessians.h5", a->out);
    tqp_hessian_job job = {.model = a->model, .tokenizer = a->tokenizer, .text = a->text,
                           .tokens = a->tokens, .out = *hpath, .nsamples = a->nsamples,
                           .ctx = a->ctx, .mode = a->force ? TQP_RESUME_FORCE : TQP_RESUME_AUTO,
                           .quiet = a->quiet, .threads = a->threads};
    tqp_hstore st = {0};
    tqp_hessian_result r = {0};
    tqp_status s = tqp_hessian_collect(MPI_COMM_WORLD, m, &job, &st, &r);
    tqp_hstore_close(&st);
    return s;
}

/* What determines the output's bytes, stored in the file and the state file and compared on a
 * rerun.  Without the Hessian identity (hid NULL) for the check before the Hessians exist. */
static char *identity_json(const tqp_quant_options *o, const char *fp, const char *hid)
{
    cJSON *d = cJSON_CreateObject();
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON_AddNumberToObject(d, "format_version", 1);
    cJSON_AddStringToObject(d, "tqp_version", TQP_VERSION);
    cJSON_AddStringToObject(d, "model_fingerprint", fp);
    cJSON_AddNumberToObject(d, "bits", o->bits);
    cJSON_AddStringToObject(d, "rotation", tqp_rot_name(o->rotation));
    cJSON_AddStringToObject(d, "rounding", tqp_rounding_name(o->rounding));
    cJSON_AddStringToObject(d, "codebook", o->cb->name);
    if (o->tcq) {
        const tqp_trellis *t = tqp_tcq_base(o->tcq);
        cJSON_AddStringToObject(d, "trellis_code", tqp_tcode_name(t->code));
        cJSON_AddNumberToObject(d, "trellis_L", t->L);
        cJSON_AddNumberToObject(d, "trellis_V", t->V);
    }
    cJSON_AddNumberToObject(d, "damp", o->damp);
    cJSON_AddNumberToObject(d, "scale_rho", o->rho);
    cJSON_AddStringToObject(d, "seed", seed);
    if (hid) cJSON_AddStringToObject(d, "hessian_identity", hid);
    char *txt = cJSON_PrintUnformatted(d);
    cJSON_Delete(d);
    return txt;
}

static void print_summary(const quant_args *a, const tqp_quant_options *o,
                          const tqp_quant_result *r, int P, int resumed_all)
{
    printf("quantized %lld weights in %d matrices to %s: %d-bit %s, rotation %s, rounding %s%s\n",
           (long long)r->weights, r->n_mats, a->out, o->bits, o->cb->name,
           tqp_rot_name(o->rotation), tqp_rounding_name(o->rounding),
           resumed_all ? " (already complete)" : "");
    printf("bits per weight: %.4f code, %.4f total; mean relative proxy loss %.6g; %lld "
           "unquantized parameters; %d rank%s, %.2f s\n",
           r->bpw_code, r->bpw_total, r->proxy_mean, (long long)r->plain_params, P,
           P == 1 ? "" : "s", r->seconds);
    rho_search x = search_of(r);
    if (x.mats)
        printf("scale search (--scale-rho auto): %d candidates for each of %d matrices, rho %.4g "
               "to %.4g chosen; %.2f s of extra rounding\n",
               x.candidates, x.mats, x.rho_min, x.rho_max, x.seconds);
    fflush(stdout);
}

static void phase_event(const char *event, const char *phase, double seconds)
{
    cJSON *e = tqp_event_begin(event);
    cJSON_AddStringToObject(e, "phase", phase);
    if (seconds >= 0) cJSON_AddNumberToObject(e, "seconds", seconds);
    tqp_event_end(e);
}

static void phase_line(int rank, const quant_args *a, const char *what)
{
    if (rank == 0 && !a->quiet) {
        fprintf(stderr, "quantize: %s\n", what);
        fflush(stderr);
    }
}

/* Perplexity of the full-precision and the quantized model on the evaluation text. */
static tqp_status validate(const quant_args *a, const tqp_model *m, int rank, cJSON *d)
{
    uint32_t *tokens = NULL;
    size_t n = 0;
    char sha[65] = "";
    tqp_eval_options eo = {.ctx = a->eval_ctx, .progress = !a->quiet, .threads = a->threads};
    tqp_eval_result rf = {0}, rq = {0};
    tqp_qfile *qf = NULL;
    tqp_weight_source src;
    double t0 = tqp_now();
    if (rank == 0) phase_event("phase_start", "validate", -1);
    phase_line(rank, a, "phase 4/4: validation, perplexity of the full-precision and the quantized model");
    tqp_status s = tqp_load_token_stream(MPI_COMM_WORLD, m, a->tokenizer, a->eval_text, NULL,
                                         &tokens, &n, sha);
    if (s == TQP_OK) s = tqp_eval_perplexity(MPI_COMM_WORLD, m, NULL, tokens, n, &eo, &rf);
    tqp_crash_point("validate");
    if (s == TQP_OK) s = tqp_mpi_agree(MPI_COMM_WORLD, tqp_qfile_open(a->out, m, &qf));
    if (s == TQP_OK) {
        src = tqp_qfile_source_shared(qf, MPI_COMM_WORLD);
        s = tqp_eval_perplexity(MPI_COMM_WORLD, m, &src, tokens, n, &eo, &rq);
    }
    if (s == TQP_OK && rank == 0) {
        printf("perplexity %.6f full precision, %.6f quantized (ratio %.3f); %s, ctx %d, %lld "
               "tokens scored; %.0f and %.0f tokens/s on the CPU\n",
               rf.ppl, rq.ppl, rq.ppl / rf.ppl, a->eval_text, a->eval_ctx,
               (long long)rq.tokens_scored, rf.tokens_per_second, rq.tokens_per_second);
        cJSON_AddNumberToObject(d, "ppl_full_precision", rf.ppl);
        cJSON_AddNumberToObject(d, "ppl_quantized", rq.ppl);
        cJSON *v = cJSON_AddObjectToObject(d, "validation");
        cJSON_AddStringToObject(v, "validate_on", "cpu");
        cJSON_AddStringToObject(v, "text", a->eval_text);
        cJSON_AddStringToObject(v, "text_sha256", sha);
        cJSON_AddNumberToObject(v, "ctx", a->eval_ctx);
        cJSON_AddNumberToObject(v, "windows", (double)rq.windows);
        cJSON_AddNumberToObject(v, "tokens_scored", (double)rq.tokens_scored);
        cJSON_AddNumberToObject(v, "tokens_per_second_full_precision", rf.tokens_per_second);
        cJSON_AddNumberToObject(v, "tokens_per_second_quantized", rq.tokens_per_second);
        cJSON *e = tqp_event_begin("phase_done");
        cJSON_AddStringToObject(e, "phase", "validate");
        cJSON_AddNumberToObject(e, "seconds", tqp_now() - t0);
        cJSON_AddNumberToObject(e, "ppl_full_precision", rf.ppl);
        cJSON_AddNumberToObject(e, "ppl_quantized", rq.ppl);
        tqp_event_end(e);
    }
    tqp_qfile_close(&qf);
    free(tokens);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}

static tqp_status open_events(const quant_args *a, int P)
{
    TQP_CHECK(tqp_check_writable(a->out));
    if (a->json) TQP_CHECK(tqp_check_writable(a->json));
    size_t n = strlen(a->out) + 16;
    char *p = malloc(n);
    if (!p) return TQP_ENOMEM;
    snprintf(p, n, "%s.events.jsonl", a->out);
    tqp_status s = tqp_events_open(p);
    free(p);
    cJSON *e = tqp_event_begin("run_start");
    cJSON_AddStringToObject(e, "command", "quantize");
    cJSON_AddStringToObject(e, "tqp_version", TQP_VERSION);
    cJSON_AddStringToObject(e, "out", a->out);
    cJSON_AddNumberToObject(e, "ranks", P);
    cJSON_AddNumberToObject(e, "threads", a->threads);
    cJSON_AddNumberToObject(e, "bits", a->bits);
    cJSON_AddStringToObject(e, "codebook", a->codebook);
    tqp_event_end(e);
    return s;
}

static tqp_status run(const quant_args *a, const tqp_quant_options *o, int rank, int P)
{
    double t0 = tqp_now();
    TQP_CHECK(tqp_mpi_agree(MPI_COMM_WORLD, rank == 0 ? open_events(a, P) : TQP_OK));
    tqp_model *m = NULL;
    tqp_status s = tqp_mpi_agree(MPI_COMM_WORLD, tqp_model_load(a->model, &m));
    char *hpath = NULL, *id = NULL, fp[65] = "";
    if (s == TQP_OK) s = tqp_model_fingerprint(m, fp);
    if (s == TQP_OK && rank == 0) { /* refuse other options before any long work */
        id = identity_json(o, fp, NULL);
        s = id ? tqp_qwriter_precheck(a->out, id, a->force) : TQP_ENOMEM;
        free(id);
        id = NULL;
    }
    s = tqp_mpi_agree(MPI_COMM_WORLD, s);
    if (s == TQP_OK && !a->hessians) {
        double th = tqp_now();
        if (rank == 0) phase_event("phase_start", "hessians", -1);
        phase_line(rank, a, "phase 1/4: Hessians from the calibration text");
        s = collect(a, m, &hpath);
        if (s == TQP_OK && rank == 0) phase_event("phase_done", "hessians", tqp_now() - th);
    }
    tqp_hfile hf = {0};
    const char *hp = a->hessians ? a->hessians : hpath;
    if (s == TQP_OK) s = tqp_mpi_agree(MPI_COMM_WORLD, tqp_hfile_open(hp, fp, m->cfg.n_layers, &hf));
    tqp_qwriter w = {.f = -1};
    if (s == TQP_OK && rank == 0) {
        id = identity_json(o, fp, hf.identity);
        s = id ? tqp_qwriter_open(a->out, id, m->cfg.n_layers, a->force, &w) : TQP_ENOMEM;
    }
    s = tqp_mpi_agree(MPI_COMM_WORLD, s);
    int complete = rank == 0 ? w.complete : 0, kept = rank == 0 ? tqp_qwriter_committed_count(&w) : 0;
    MPI_Bcast(&complete, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (s == TQP_OK && rank == 0) {
        if (complete && !a->quiet)
            fprintf(stderr, "quantize: %s is complete with these options; nothing to quantize\n", a->out);
        else if (kept && !a->quiet)
            fprintf(stderr, "quantize: resuming: %d of %d layers already committed in %s.parts\n",
                    kept, m->cfg.n_layers, a->out);
        cJSON *e = tqp_event_begin(complete ? "resume_complete" : kept ? "resume" : "fresh_start");
        cJSON_AddNumberToObject(e, "layers_committed", complete ? m->cfg.n_layers : kept);
        cJSON_AddNumberToObject(e, "n_layers", m->cfg.n_layers);
        tqp_event_end(e);
    }
    tqp_quant_result r = {0};
    double tq = tqp_now();
    if (s == TQP_OK) {
        if (rank == 0) phase_event("phase_start", "quantize", -1);
        if (!complete) phase_line(rank, a, "phase 2/4: quantizing layer by layer");
        s = tqp_quantize_run(MPI_COMM_WORLD, m, &hf, o, &w, &r);
        if (s == TQP_OK && rank == 0) phase_event("phase_done", "quantize", tqp_now() - tq);
    }
    cJSON *d = s == TQP_OK ? describe(a, o, hp, &hf, m, fp) : NULL;
    if (d) add_summary(d, &r);
    if (s == TQP_OK && rank == 0 && !complete) {
        double ta = tqp_now();
        phase_event("phase_start", "assemble", -1);
        phase_line(rank, a, "phase 3/4: assembling the output file");
        char *attrs = cJSON_PrintUnformatted(d);
        s = attrs ? tqp_qwriter_finish(&w, m, o->tcq ? tqp_tcq_base(o->tcq) : NULL, attrs)
                  : TQP_ENOMEM;
        free(attrs);
        if (s == TQP_OK) phase_event("phase_done", "assemble", tqp_now() - ta);
    }
    s = tqp_mpi_agree(MPI_COMM_WORLD, s);
    if (s == TQP_OK && rank == 0) print_summary(a, o, &r, P, complete);
    if (s == TQP_OK && a->eval_text && strcmp(a->validate_on, "none"))
        s = validate(a, m, rank, d);
    else if (s == TQP_OK)
        phase_line(rank, a, "validation skipped (no --eval-text, or --validate-on none)");
    if (s == TQP_OK && rank == 0) {
        printf("output %s\n", a->out);
        if (a->json) s = write_json(a, d, &r, P, tqp_now() - t0);
        cJSON *e = tqp_event_begin("run_done");
        cJSON_AddNumberToObject(e, "seconds", tqp_now() - t0);
        cJSON_AddNumberToObject(e, "bits_per_weight_total", r.bpw_total);
        tqp_event_end(e);
    }
    if (s != TQP_OK && rank == 0) {
        cJSON *e = tqp_event_begin("run_failed");
        cJSON_AddStringToObject(e, "error", tqp_error_message());
        cJSON_AddNumberToObject(e, "exit_status", tqp_exit_code(s));
        tqp_event_end(e);
    }
    if (rank == 0) tqp_qwriter_close(&w);
    tqp_events_close();
    free(id);
    cJSON_Delete(d);
    tqp_quant_result_free(&r);
    tqp_hfile_close(&hf);
    free(hpath);
    tqp_model_destroy(&m);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}

tqp_status tqp_cmd_quantize(int argc, char **argv)
{
    quant_args a;
    tqp_opt opts[] = {
        {"--model", TQP_OPT_IN_PATH, &a.model, NULL, "PATH",
         "llama2.c .bin or Hugging Face directory", 1},
        {"--tokenizer", TQP_OPT_IN_PATH, &a.tokenizer, NULL, "PATH",
         "tokenizer.json (or its directory) or llama2.c tokenizer.bin (default: beside the "
         "model)"},
        {"--hessians", TQP_OPT_IN_FILE, &a.hessians, NULL, "FILE.h5",
         "Hessians from tqp hessian (else give --text or --tokens)"},
        {"--text", TQP_OPT_IN_FILES, &a.text, NULL, "PATH[,PATH...]",
         "calibration text (files in order, each a document; .jsonl: one per line): collect "
         "Hessians into OUT.hessians.h5 first"},
        {"--tokens", TQP_OPT_IN_FILE, &a.tokens, NULL, "PATH",
         "pre-tokenized calibration input instead of --text"},
        {"--nsamples", TQP_OPT_INT, &a.nsamples, "128", "N", "calibration windows (with --text)", 0, 1, INT_MAX},
        {"--ctx", TQP_OPT_INT, &a.ctx, "256", "N", "tokens per calibration window", 0, 2, 1 << 24},
        {"--out", TQP_OPT_OUT, &a.out, NULL, "FILE.h5", "quantized model file", 1},
        {"--bits", TQP_OPT_INT, &a.bits, "2", "B", "bits per weight: 2, 3 or 4"},
        {"--rotation", TQP_OPT_STRING, &a.rotation, "rht", "R",
         "incoherence processing: none, rht (randomized Hadamard) or kron (random Kronecker)"},
        {"--rounding", TQP_OPT_STRING, &a.rounding, "ldlq", "R", "nearest or ldlq"},
        {"--codebook", TQP_OPT_STRING, &a.codebook, "scalar", "C",
         "quantizer: scalar (uniform grid), trellis (QTIP bitshift trellis, BlockLDLQ) or e8p "
         "(QuIP#'s E8 lattice codebook, residual stage at 3 and 4 bits, BlockLDLQ)"},
        {"--code", TQP_OPT_STRING, &a.code, NULL, "C",
         "trellis code: 1mad, 1mul, gf8, 3inst (V 1), hyb (V 2) or lut (default 1mad); gf8 "
         "(2 and 4 bits) and 1mul are the ones the integer inference kernels run"},
        {"--trellis-L", TQP_OPT_INT, &a.tL, "16", "L", "trellis state bits (at most 16)"},
        {"--trellis-V", TQP_OPT_INT, &a.tV, "0", "V", "weights per trellis step (0: the code's)"},
        TQP_OPT_THREADS(&a.threads),
        {"--teams", TQP_OPT_INT, &a.teams, "0", "T",
         "teams of ranks quantizing different layers at once (0: one per 64 ranks, at most "
         "one per layer); the output does not depend on it", 0, 0, 1 << 20},
        {"--damp", TQP_OPT_DOUBLE, &a.damp, "0.01", "SIGMA",
         "relative damping of H (doubled on each failed factorization)", 0, 0, 1e6},
        {"--scale-rho", TQP_OPT_STRING, &a.rho, "0", "RHO|auto",
         "scale s = RMS(W)/(RMS(codebook) rho), rho in [0, 10]; 0: the codebook's default for "
         "the bit width; auto: per matrix, the least proxy loss of 5 values around it"},
        {"--seed", TQP_OPT_STRING, &a.seed, "0", "S", "run seed for signs and rotations"},
        {"--eval-text", TQP_OPT_IN_FILES, &a.eval_text, NULL, "PATH",
         "validate: perplexity of the full-precision and the quantized model on this text"},
        {"--eval-ctx", TQP_OPT_INT, &a.eval_ctx, "256", "N", "validation window length in tokens", 0, 2, 1 << 20},
        {"--validate-on", TQP_OPT_STRING, &a.validate_on, "auto", "D",
         "where validation runs: auto, cpu or none (gpu: in builds with CUDA)"},
        {"--force", TQP_OPT_FLAG, &a.force, NULL, NULL,
         "start over: remove an existing output, its parts and its Hessians"},
        {"--json", TQP_OPT_OUT, &a.json, NULL, "FILE", "also write a JSON summary to FILE"},
        {"--quiet", TQP_OPT_FLAG, &a.quiet, NULL, NULL, "no progress lines"},
    };
    tqp_cmd_spec spec = {
        "quantize", "Quantize a model's linear layers to 2-4 bits per weight.",
        "The whole pipeline: Hessians (with --text), quantization layer by layer, assembly of "
        "one HDF5 file, and validation (with --eval-text). RTN = --rotation none --rounding "
        "nearest; GPTQ = --rotation none --rounding ldlq; QuIP = --rotation rht --rounding ldlq "
        "--codebook scalar (the default); QTIP = --codebook trellis. Every layer is committed "
        "to OUT.parts/ as it completes; rerunning the same command after a crash or preemption "
        "resumes, and a rerun with other options is refused (--force starts over). The output "
        "is renamed into place when complete and is bit-identical for any rank count. Events "
        "are logged to OUT.events.jsonl.",
        opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank, P;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    tqp_quant_options o;
    TQP_CHECK(tqp_threads_setup(MPI_COMM_WORLD, a.threads, &a.threads));
    TQP_CHECK(parse(&a, &o));
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    if (TQP_CB_IS(o.cb, TQP_CB_TRELLIS)) {
        tqp_tcode c = tqp_tcode_parse(a.code ? a.code : "1mad");
        if (c == TQP_TCODE_COUNT)
            return tqp_error_set(TQP_EUSAGE, "unknown --code '%s' (1mad, 1mul, gf8, 3inst, hyb, lut)", a.code);
        int V = a.tV > 0 ? a.tV : c == TQP_TCODE_HYB ? 2 : 1;
        TQP_CHECK(tqp_trellis_check(a.tL, o.bits, V, 256, c));
        TQP_CHECK(tqp_tcq_create(a.tL, o.bits, V, c, NULL, &o.tcq));
    }
    tqp_status s = run(&a, &o, rank, P);
    tqp_tcq_destroy(&o.tcq);
    return s;
}
