/* `tqp hessian`: collect per-layer Hessians from calibration text into an HDF5 file. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/cli.h"
#include "tqp/forward.h"
#include "tqp/hessian.h"
#include "tqp/mpiutil.h"
#include "tqp/threads.h"

typedef struct {
    const char *model, *tokenizer, *text, *tokens, *out, *json, *seed;
    int nsamples, ctx, resume, force, sequential, batch, quiet, threads;
} hess_args;

static tqp_status parse_seed(const char *s, uint64_t *v)
{
    char *end;
    unsigned long long x = strtoull(s, &end, 10);
    if (!*s || *end || s[0] == '-')
        return tqp_error_set(TQP_EUSAGE, "--seed expects a non-negative integer");
    *v = x;
    return TQP_OK;
}

static tqp_status write_json(const hess_args *a, const tqp_hstore *st, const tqp_hessian_result *r,
                             int ranks)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "command", "hessian");
    cJSON_AddStringToObject(d, "tqp_version", TQP_VERSION);
    cJSON_AddStringToObject(d, "out", a->out);
    cJSON_AddStringToObject(d, "layers_dir", st->dir);
    cJSON_AddStringToObject(d, "model", a->model);
    cJSON_AddStringToObject(d, "model_fingerprint", st->meta.model_fingerprint);
    cJSON_AddStringToObject(d, "text_sha256", st->meta.text_sha256);
    cJSON_AddNumberToObject(d, "nsamples", a->nsamples);
    cJSON_AddNumberToObject(d, "ctx", a->ctx);
    cJSON_AddNumberToObject(d, "tokens_per_layer", (double)r->tokens);
    cJSON_AddNumberToObject(d, "layers", st->meta.n_layers);
    cJSON_AddNumberToObject(d, "layers_computed", r->layers_done);
    cJSON_AddNumberToObject(d, "layers_resumed", r->layers_skipped);
    cJSON_AddNumberToObject(d, "ranks", ranks);
    cJSON_AddNumberToObject(d, "threads", a->threads);
    cJSON_AddNumberToObject(d, "seconds", r->seconds);
    cJSON_AddNumberToObject(d, "accumulation_gflops", r->gflops);
    tqp_status s = tqp_json_write(a->json, d);
    cJSON_Delete(d);
    return s;
}

static tqp_status run(hess_args *a, int rank, int P)
{
    uint64_t seed = 0;
    if (a->seed) TQP_CHECK(parse_seed(a->seed, &seed));
    if (a->sequential)
        return tqp_error_set(TQP_EUSAGE,
                             "--sequential needs inputs from quantized "
                             "layers, which tqp quantize will provide; it is not available yet");
    if (a->resume && a->force)
        return tqp_error_set(TQP_EUSAGE, "--resume and --force exclude each other");
    TQP_CHECK(
        tqp_mpi_agree(MPI_COMM_WORLD, a->json && rank == 0 ? tqp_check_writable(a->json) : TQP_OK));
    TQP_CHECK(tqp_threads_setup(MPI_COMM_WORLD, a->threads, &a->threads));
    tqp_model *m = NULL;
    tqp_status s = tqp_mpi_agree(MPI_COMM_WORLD, tqp_model_load(a->model, &m));
    tqp_hstore st = {0};
    tqp_hessian_result r = {0};
    tqp_hessian_job job = {.model = a->model,
                           .tokenizer = a->tokenizer,
                           .text = a->text,
                           .tokens = a->tokens,
                           .out = a->out,
                           .nsamples = a->nsamples,
                           .ctx = a->ctx,
                           .random = a->seed != NULL,
                           .seed = seed,
                           .mode = a->force    ? TQP_RESUME_FORCE
                                   : a->resume ? TQP_RESUME_REQUIRE
                                               : TQP_RESUME_AUTO,
                           .batch = a->batch,
                           .quiet = a->quiet,
                           .threads = a->threads};
    if (s == TQP_OK) s = tqp_hessian_collect(MPI_COMM_WORLD, m, &job, &st, &r);
    if (s == TQP_OK && rank == 0) {
        printf("hessians for %d layers x 4 groups (%lld tokens each) in %s, layer files in %s\n",
               m->cfg.n_layers, (long long)r.tokens, a->out, st.dir);
        printf("%d layer%s computed, %d resumed; %d rank%s x %d thread%s, %.2f s, accumulation "
               "%.2f GFLOP/s\n",
               r.layers_done, r.layers_done == 1 ? "" : "s", r.layers_skipped, P, P == 1 ? "" : "s",
               a->threads, a->threads == 1 ? "" : "s", r.seconds, r.gflops);
        if (a->json) s = write_json(a, &st, &r, P);
    }
    tqp_hstore_close(&st);
    tqp_model_destroy(&m);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}

tqp_status tqp_cmd_hessian(int argc, char **argv)
{
    hess_args a;
    tqp_opt opts[] = {
        {"--model", TQP_OPT_IN_PATH, &a.model, NULL, "PATH",
         "llama2.c .bin or Hugging Face directory", 1},
        {"--tokenizer", TQP_OPT_IN_PATH, &a.tokenizer, NULL, "PATH",
         "tokenizer.json (or its directory) or llama2.c tokenizer.bin (default: tokenizer.json, "
         "tokenizer.bin or tok<vocab>.bin beside the model)"},
        {"--text", TQP_OPT_IN_FILES, &a.text, NULL, "PATH[,PATH...]",
         "calibration text: files in order, each a document (.jsonl: one per line)"},
        {"--tokens", TQP_OPT_IN_FILE, &a.tokens, NULL, "PATH",
         "pre-tokenized calibration input instead of --text (raw little-endian uint32)"},
        {"--nsamples", TQP_OPT_INT, &a.nsamples, "128", "N", "calibration windows", 0, 1, INT_MAX},
        {"--ctx", TQP_OPT_INT, &a.ctx, "256", "N", "tokens per window", 0, 2, 1 << 24},
        {"--seed", TQP_OPT_STRING, &a.seed, NULL, "S",
         "draw window starts at random from seed S (default: the first N windows in order)"},
        {"--out", TQP_OPT_OUT, &a.out, NULL, "FILE.h5",
         "Hessian index file; layer files go to FILE.h5.layers/", 1},
        {"--resume", TQP_OPT_FLAG, &a.resume, NULL, NULL,
         "require an existing output to resume (resuming is automatic when options match)"},
        {"--force", TQP_OPT_FLAG, &a.force, NULL, NULL,
         "discard an existing output and start over"},
        {"--sequential", TQP_OPT_FLAG, &a.sequential, NULL, NULL,
         "inputs from already-quantized layers (GPTQ); needs tqp quantize"},
        {"--batch", TQP_OPT_INT, &a.batch, "0", "N",
         "windows staged per reduction (0: about 256 MiB of staging)", 0, 0, 1 << 20},
        TQP_OPT_THREADS(&a.threads),
        {"--json", TQP_OPT_OUT, &a.json, NULL, "FILE", "also write a JSON summary to FILE"},
        {"--quiet", TQP_OPT_FLAG, &a.quiet, NULL, NULL, "no progress lines"},
    };
    tqp_cmd_spec spec = {"hessian",
                         "Collect per-layer Hessians H = sum x x^T from calibration text.",
                         "For every layer and input group (qkv, o, gate_up, down) the exact sum, "
                         "the token count and the mean input are reduced over the ranks and "
                         "committed layer by layer; the result is bit-identical for any rank "
                         "count. A killed run resumes at the first uncommitted layer when rerun "
                         "with the same options.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank, P;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    if (!a.text == !a.tokens)
        return tqp_error_set(TQP_EUSAGE, "give exactly one of --text and --tokens");
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    return run(&a, rank, P);
}
