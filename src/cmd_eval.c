/* `tqp eval`: perplexity of a checkpoint on a text with the stream-windows protocol. */
#include <stdio.h>
#include <stdlib.h>

#include "tqp/cli.h"
#include "tqp/eval.h"
#include "tqp/mpiutil.h"
#include "tqp/qfile.h"
#include "tqp/threads.h"

typedef struct {
    const char *model, *tokenizer, *text, *tokens, *json, *quantized, *only, *validate_on;
    int ctx, half_window, quiet, threads;
} eval_args;

static void print_result(const eval_args *a, const tqp_eval_result *r, const char *sha)
{
    if (a->quantized)
        printf("quantized model %s%s%s\n", a->quantized, a->only ? ", only matrices " : "",
               a->only ? a->only : "");
    printf("perplexity %.6f  (mean NLL %.6f over %lld tokens in %lld windows of %d%s)\n", r->ppl,
           r->nll, (long long)r->tokens_scored, (long long)r->windows, a->ctx,
           a->half_window ? ", second halves only" : "");
    printf("text %s  sha256 %s  (%lld tokens)\n", a->tokens ? a->tokens : a->text, sha,
           (long long)r->tokens_total);
    printf("%d rank%s x %d thread%s, %.2f s, %.0f tokens/s\n", r->ranks, r->ranks == 1 ? "" : "s",
           a->threads, a->threads == 1 ? "" : "s", r->seconds, r->tokens_per_second);
}

static tqp_status write_json(const eval_args *a, const tqp_model *m, const tqp_eval_result *r,
                             const char *sha, int64_t decoded)
{
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "command", "eval");
    cJSON_AddStringToObject(d, "tqp_version", TQP_VERSION);
    cJSON_AddStringToObject(d, "model", a->model);
    if (a->quantized) cJSON_AddStringToObject(d, "quantized", a->quantized);
    if (a->only) cJSON_AddStringToObject(d, "only", a->only);
    cJSON_AddStringToObject(d, "text", a->tokens ? a->tokens : a->text);
    cJSON_AddStringToObject(d, "text_sha256", sha);
    cJSON_AddNumberToObject(d, "ppl", r->ppl);
    cJSON_AddNumberToObject(d, "nll", r->nll);
    cJSON_AddNumberToObject(d, "nll_sum", r->nll_sum);
    cJSON_AddNumberToObject(d, "windows", (double)r->windows);
    cJSON_AddNumberToObject(d, "tokens_scored", (double)r->tokens_scored);
    cJSON_AddNumberToObject(d, "tokens_total", (double)r->tokens_total);
    cJSON_AddNumberToObject(d, "ctx", a->ctx);
    cJSON_AddBoolToObject(d, "half_window", a->half_window);
    cJSON_AddNumberToObject(d, "ranks", r->ranks);
    cJSON_AddNumberToObject(d, "threads", a->threads);
    cJSON_AddNumberToObject(d, "seconds", r->seconds);
    cJSON_AddNumberToObject(d, "tokens_per_second", r->tokens_per_second);
    cJSON_AddNumberToObject(d, "layers", m->cfg.n_layers);
    if (a->quantized) /* over all ranks: each matrix once per job and batch round */
        cJSON_AddNumberToObject(d, "matrices_decoded", (double)decoded);
    tqp_status s = tqp_json_write(a->json, d);
    cJSON_Delete(d);
    return s;
}

tqp_status tqp_cmd_eval(int argc, char **argv)
{
    eval_args a;
    tqp_opt opts[] = {
        {"--model", TQP_OPT_IN_PATH, &a.model, NULL, "PATH",
         "llama2.c .bin checkpoint or Hugging Face directory", 1},
        {"--tokenizer", TQP_OPT_IN_PATH, &a.tokenizer, NULL, "PATH",
         "tokenizer.json (or its directory) or llama2.c tokenizer.bin (default: tokenizer.json, "
         "tokenizer.bin or tok<vocab>.bin beside the model)"},
        {"--text", TQP_OPT_IN_FILES, &a.text, NULL, "PATH[,PATH...]",
         "text to score: files in order, each a document (.jsonl: one per line)"},
        {"--tokens", TQP_OPT_IN_FILE, &a.tokens, NULL, "PATH",
         "pre-tokenized input instead of --text: raw little-endian uint32 ids"},
        {"--quantized", TQP_OPT_IN_FILE, &a.quantized, NULL, "FILE.h5",
         "evaluate the quantized model in FILE.h5 (from tqp quantize of --model)"},
        {"--only", TQP_OPT_STRING, &a.only, NULL, "LIST",
         "with --quantized: decode only these matrices (e.g. q,k), the rest full precision"},
        {"--validate-on", TQP_OPT_STRING, &a.validate_on, "auto", "D",
         "where to evaluate: auto or cpu (the CPU; gpu is refused: not implemented)"},
        {"--ctx", TQP_OPT_INT, &a.ctx, "256", "N", "window length in tokens", 0, 2, 1 << 24},
        {"--half-window", TQP_OPT_FLAG, &a.half_window, NULL, NULL,
         "score only the second half of each window (llama.cpp's convention)"},
        TQP_OPT_THREADS(&a.threads),
        {"--json", TQP_OPT_OUT, &a.json, NULL, "FILE", "also write a JSON summary to FILE"},
        {"--quiet", TQP_OPT_FLAG, &a.quiet, NULL, NULL, "no progress lines"},
    };
    tqp_cmd_spec spec = {"eval", "Perplexity of a model on a text (stream-windows protocol).",
                         "The text is tokenized as one string (BOS + text), cut into "
                         "non-overlapping windows of --ctx tokens (the tail is dropped), and every "
                         "token but the first of each window is scored. Windows are spread over "
                         "the MPI ranks and the threads of each rank; the result is identical for "
                         "any rank and thread count.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    if (!a.text == !a.tokens)
        return tqp_error_set(TQP_EUSAGE, "give exactly one of --text and --tokens");
    if (a.only && !a.quantized)
        return tqp_error_set(TQP_EUSAGE, "--only needs --quantized");
    TQP_CHECK(tqp_check_validate_on(a.validate_on, 0));
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    TQP_CHECK(
        tqp_mpi_agree(MPI_COMM_WORLD, a.json && rank == 0 ? tqp_check_writable(a.json) : TQP_OK));
    TQP_CHECK(tqp_threads_setup(MPI_COMM_WORLD, a.threads, &a.threads));
    tqp_model *m = NULL;
    tqp_status s = tqp_mpi_agree(MPI_COMM_WORLD, tqp_model_load(a.model, &m));
    if (s != TQP_OK) {
        tqp_model_destroy(&m);
        return s;
    }
    uint32_t *tokens = NULL;
    size_t n = 0;
    char sha[65] = "";
    tqp_eval_options eo = {.ctx = a.ctx, .half_window = a.half_window, .progress = !a.quiet,
                           .threads = a.threads};
    tqp_eval_result r;
    tqp_qfile *qf = NULL;
    tqp_weight_source src;
    if (a.quantized) {
        s = tqp_mpi_agree(MPI_COMM_WORLD, tqp_qfile_open(a.quantized, m, &qf));
        if (s == TQP_OK && a.only) s = tqp_qfile_select(qf, a.only);
        if (s == TQP_OK) src = tqp_qfile_source_shared(qf, MPI_COMM_WORLD);
    }
    if (s == TQP_OK)
        s = tqp_load_token_stream(MPI_COMM_WORLD, m, a.tokenizer, a.text, a.tokens, &tokens, &n,
                                  sha);
    if (s == TQP_OK)
        s = tqp_eval_perplexity(MPI_COMM_WORLD, m, qf ? &src : NULL, tokens, n, &eo, &r);
    int64_t decoded = qf ? tqp_qfile_decoded(qf) : 0, all_decoded = 0;
    if (s == TQP_OK)
        MPI_Reduce(&decoded, &all_decoded, 1, MPI_INT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
    if (s == TQP_OK && rank == 0) {
        print_result(&a, &r, sha);
        if (a.json) s = write_json(&a, m, &r, sha, all_decoded);
    }
    free(tokens);
    tqp_qfile_close(&qf);
    tqp_model_destroy(&m);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}
