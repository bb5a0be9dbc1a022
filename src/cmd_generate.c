/* `tqp generate`: batch-1 text generation with a KV cache, from the full-precision model or
 * straight from a quantized file's codes (include/tqp/infer.h). */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tqp/cli.h"
#include "tqp/hftok.h"
#include "tqp/infer.h"
#include "tqp/io.h"
#include "tqp/progress.h"
#include "tqp/threads.h"
#include "tqp/tokenizer.h"

/* llama2.c tokenizers; models trained on TinyStories-style streams end a text with BOS, the
 * separator of their training data, rather than EOS: both stop the generation. */
enum { BOS = 1, EOS = 2 };

/* Either tokenizer: a llama2.c tokenizer.bin or a Hugging Face tokenizer.json. */
typedef struct {
    tqp_tokenizer *l2;
    tqp_hftok *hf;
    int stop[2]; // ids that end the text (-1: none)
} gen_tok;

typedef struct {
    const char *model, *tokenizer, *quantized, *prompt, *prompt_file, *json;
    int max_tokens, threads, seed;
    double temperature, top_p;
} gen_args;

/* The bytes token `id` stands for after `prev`.  llama2.c's rules: a leading space is dropped
 * after BOS, <0xXX> is the byte XX; a tokenizer.json: tqp_hftok_decode into buf. */
static const char *piece_text(const gen_tok *gt, uint32_t prev, uint32_t id, char buf[256],
                              size_t *len)
{
    if (gt->hf) return tqp_hftok_decode(gt->hf, id, buf, 256, len) == TQP_OK ? buf : "";
    char *byte = buf;
    const char *p = tqp_tokenizer_piece(gt->l2, (int)id, len);
    unsigned v;
    if (prev == BOS && *len && p[0] == ' ') p++, (*len)--;
    if (*len == 6 && sscanf(p, "<0x%02X>", &v) == 1) {
        byte[0] = (char)v, byte[1] = 0, *len = 1;
        return byte;
    }
    return p;
}

/* Print a piece, except a lone byte that is neither printable nor white space. */
static void emit(const char *p, size_t len)
{
    if (len == 1 && !isprint((unsigned char)p[0]) && !isspace((unsigned char)p[0])) return;
    fwrite(p, 1, len, stdout);
    fflush(stdout);
}

static double peak_mib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) ? 0 : ru.ru_maxrss / 1024.0;
}

typedef struct {
    int prompt_tokens, generated;
    double prompt_s, gen_s, peak, bytes;
    const char *stop;
    char weights[128];
    uint32_t *ids;  // generated ids
    char *text;     // generated text
    size_t text_len;
} gen_result;

static tqp_status append_text(gen_result *r, const char *p, size_t len)
{
    char *t = realloc(r->text, r->text_len + len + 1);
    if (!t) return tqp_error_set(TQP_ENOMEM, "out of memory");
    memcpy(t + r->text_len, p, len);
    r->text_len += len;
    t[r->text_len] = 0;
    r->text = t;
    return TQP_OK;
}

static tqp_status write_json(const gen_args *a, const gen_result *r, int threads)
{
    cJSON *d = cJSON_CreateObject(), *ids = cJSON_CreateArray();
    cJSON_AddStringToObject(d, "command", "generate");
    cJSON_AddStringToObject(d, "tqp_version", TQP_VERSION);
    cJSON_AddStringToObject(d, "model", a->model);
    if (a->quantized) cJSON_AddStringToObject(d, "quantized", a->quantized);
    cJSON_AddStringToObject(d, "weights", r->weights);
    cJSON_AddNumberToObject(d, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(d, "generated_tokens", r->generated);
    for (int i = 0; i < r->generated; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(r->ids[i]));
    cJSON_AddItemToObject(d, "tokens", ids);
    cJSON_AddStringToObject(d, "text", r->text ? r->text : "");
    cJSON_AddStringToObject(d, "stop", r->stop);
    cJSON_AddNumberToObject(d, "prompt_seconds", r->prompt_s);
    cJSON_AddNumberToObject(d, "prompt_tokens_per_second", r->prompt_tokens / r->prompt_s);
    cJSON_AddNumberToObject(d, "generation_seconds", r->gen_s);
    cJSON_AddNumberToObject(d, "generation_tokens_per_second",
                            r->gen_s > 0 ? r->generated / r->gen_s : 0);
    cJSON_AddNumberToObject(d, "weight_bytes_per_token", r->bytes);
    cJSON_AddNumberToObject(d, "peak_memory_mib", r->peak);
    cJSON_AddNumberToObject(d, "threads", threads);
    cJSON_AddNumberToObject(d, "seed", a->seed);
    cJSON_AddNumberToObject(d, "temperature", a->temperature);
    cJSON_AddNumberToObject(d, "top_p", a->top_p);
    tqp_status s = tqp_json_write(a->json, d);
    cJSON_Delete(d);
    return s;
}

/* Feed the prompt, then sample until EOS or max_tokens, streaming the text. */
static tqp_status run(const gen_args *a, tqp_infer *e, const gen_tok *tok,
                      const uint32_t *prompt, int np, int threads, gen_result *r)
{
    int V = e->cfg.vocab_size;
    float *logits = tqp_malloc(sizeof(float) * (size_t)V);
    int *order = tqp_malloc(sizeof(int) * (size_t)V);
    double *prob = tqp_malloc(sizeof(double) * (size_t)V);
    r->ids = tqp_malloc(sizeof(uint32_t) * (size_t)a->max_tokens);
    tqp_status s = logits && order && prob && r->ids ? TQP_OK : TQP_ENOMEM;
    double t0 = tqp_now();
    for (int i = 0; i < np && s == TQP_OK; i++)
        s = tqp_infer_step(e, prompt[i], i == np - 1 ? logits : NULL, threads);
    r->prompt_s = tqp_now() - t0;
    uint64_t rng = (uint64_t)a->seed * 0x9e3779b97f4a7c15ull + 0x67656e6572617465ull;
    uint32_t prev = prompt[np - 1];
    r->stop = "max_tokens";
    t0 = tqp_now();
    while (s == TQP_OK && r->generated < a->max_tokens) {
        uint32_t next = tqp_sample(logits, V, a->temperature, a->top_p, &rng, order, prob);
        r->ids[r->generated++] = next;
        if ((int)next == tok->stop[0] || (int)next == tok->stop[1]) {
            r->stop = "eos";
            break;
        }
        char buf[256];
        size_t len;
        const char *p = piece_text(tok, prev, next, buf, &len);
        emit(p, len);
        s = append_text(r, p, len);
        prev = next;
        if (s == TQP_OK && r->generated < a->max_tokens)
            s = tqp_infer_step(e, next, logits, threads);
    }
    r->gen_s = tqp_now() - t0;
    free(logits), free(order), free(prob);
    return s;
}

tqp_status tqp_cmd_generate(int argc, char **argv)
{
    gen_args a;
    tqp_opt opts[] = {
        {"--model", TQP_OPT_IN_PATH, &a.model, NULL, "PATH",
         "llama2.c .bin checkpoint or Hugging Face directory", 1},
        {"--quantized", TQP_OPT_IN_FILE, &a.quantized, NULL, "FILE.h5",
         "generate with the quantized model in FILE.h5 (from tqp quantize of --model), every "
         "linear computed from its codes"},
        {"--tokenizer", TQP_OPT_IN_PATH, &a.tokenizer, NULL, "PATH",
         "tokenizer.json (or its directory) or llama2.c tokenizer.bin (default: tokenizer.json, "
         "tokenizer.bin or tok<vocab>.bin beside the model)"},
        {"--prompt", TQP_OPT_STRING, &a.prompt, NULL, "TEXT", "the text to continue"},
        {"--prompt-file", TQP_OPT_IN_FILE, &a.prompt_file, NULL, "PATH",
         "read the prompt from a file instead"},
        {"--max-tokens", TQP_OPT_INT, &a.max_tokens, "256", "N",
         "tokens to generate at most (prompt + N must fit the model's context)"},
        {"--temperature", TQP_OPT_DOUBLE, &a.temperature, "0.8", "T",
         "sampling temperature; 0: always the most probable token (greedy)"},
        {"--top-p", TQP_OPT_DOUBLE, &a.top_p, "0.9", "P",
         "sample from the most probable tokens whose probability reaches P (1: all)", 0, 0, 1},
        {"--seed", TQP_OPT_INT, &a.seed, "0", "S", "sampling seed: the same seed, the same text",
         0, 0, 2147483647},
        TQP_OPT_THREADS(&a.threads),
        {"--json", TQP_OPT_OUT, &a.json, NULL, "FILE",
         "also write the text, token ids, speeds and peak memory as JSON"},
    };
    tqp_cmd_spec spec = {
        "generate", "Generate text from a prompt (batch-1 decoding with a KV cache).",
        "The prompt is printed, then each token as it comes, until the end of the text (EOS, or "
        "BOS for models that separate texts with it) or --max-tokens. With "
        "--quantized every linear is computed from its stored codes by the fused decode + "
        "matvec kernels (trellis, E8P, scalar grid), never from a decoded fp32 copy. Speeds "
        "(prompt and generation tokens/s) and peak memory go to stderr at the end. One rank; "
        "the same --seed gives the same text for any --threads.",
        opts, (int)(sizeof opts / sizeof opts[0])};
    int help, size;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) return tqp_error_set(TQP_EUSAGE, "generate runs on one rank (got %d)", size);
    if (!a.prompt == !a.prompt_file)
        return tqp_error_set(TQP_EUSAGE, "give exactly one of --prompt and --prompt-file");
    if (a.max_tokens < 1)
        return tqp_error_set(TQP_EUSAGE, "--max-tokens %d: generate at least one token",
                             a.max_tokens);
    if (!(a.temperature >= 0) || !isfinite(a.temperature))
        return tqp_error_set(TQP_EUSAGE, "--temperature %g: must be 0 (greedy) or positive",
                             a.temperature);
    int threads;
    TQP_CHECK(tqp_threads_setup(MPI_COMM_WORLD, a.threads, &threads));
    char *text = NULL;
    size_t tlen = 0;
    if (a.prompt_file) {
        TQP_CHECK(tqp_file_read_all(a.prompt_file, &text, &tlen));
    } else {
        tlen = strlen(a.prompt);
        text = strdup(a.prompt);
        if (!text) return tqp_error_set(TQP_ENOMEM, "out of memory");
    }
    while (tlen && (text[tlen - 1] == '\n' || text[tlen - 1] == '\r')) text[--tlen] = 0;
    tqp_model *m = NULL;
    gen_tok tok = {.stop = {-1, -1}};
    tqp_qfile *qf = NULL;
    tqp_infer *e = NULL;
    uint32_t *prompt = NULL;
    size_t np = 0;
    char *tok_path = NULL;
    gen_result r = {0};
    tqp_status s = TQP_OK;
    if (!tlen)
        TQP_TRY(s, tqp_error_set(TQP_EUSAGE, "%s: the prompt is empty",
                                 a.prompt_file ? a.prompt_file : "--prompt"), out);
    TQP_TRY(s, tqp_model_load(a.model, &m), out);
    tok_path = a.tokenizer ? strdup(a.tokenizer) : tqp_find_tokenizer(m);
    if (!tok_path) TQP_TRY(s, TQP_ENOENT, out);
    if (tqp_is_hf_tokenizer(tok_path)) {
        TQP_TRY(s, tqp_hftok_load(tok_path, &tok.hf), out);
        if (tqp_hftok_vocab_size(tok.hf) > m->cfg.vocab_size)
            TQP_TRY(s, tqp_error_set(TQP_EMISMATCH, "%s: %d token ids, the model has %d",
                                     tok_path, tqp_hftok_vocab_size(tok.hf), m->cfg.vocab_size),
                    out);
        tok.stop[0] = tqp_hftok_eos(tok.hf);
        TQP_TRY(s, tqp_hftok_encode(tok.hf, text, tlen, 1, &prompt, &np), out);
    } else {
        TQP_TRY(s, tqp_tokenizer_load(tok_path, m->cfg.vocab_size, &tok.l2), out);
        tok.stop[0] = EOS, tok.stop[1] = BOS;
        TQP_TRY(s, tqp_tokenizer_encode(tok.l2, text, tlen, 1, 0, &prompt, &np), out);
    }
    if (!np) TQP_TRY(s, tqp_error_set(TQP_EUSAGE, "the prompt encodes to no tokens"), out);
    if ((long)np + a.max_tokens > m->cfg.max_seq_len)
        TQP_TRY(s, tqp_error_set(TQP_EUSAGE, "the prompt's %zu tokens + --max-tokens %d exceed "
                                 "the model's context of %d tokens", np, a.max_tokens,
                                 m->cfg.max_seq_len), out);
    if (a.quantized) TQP_TRY(s, tqp_qfile_open(a.quantized, m, &qf), out);
    TQP_TRY(s, tqp_infer_load(m, qf, (int)np + a.max_tokens, TQP_TMV_AUTO, &e), out);
    tqp_infer_describe(e, r.weights, sizeof r.weights);
    r.prompt_tokens = (int)np;
    r.bytes = tqp_infer_bytes_per_token(e);
    fwrite(text, 1, tlen, stdout);
    fflush(stdout);
    s = run(&a, e, &tok, prompt, (int)np, threads, &r);
    printf("\n");
    fflush(stdout);
    r.peak = peak_mib();
    if (s == TQP_OK) {
        fprintf(stderr,
                "prompt: %d tokens, %.1f tokens/s; generated: %d tokens (stop: %s), %.1f "
                "tokens/s; %s, %.1f MB of weights per token; %d thread%s; peak memory %.1f MiB\n",
                r.prompt_tokens, r.prompt_tokens / r.prompt_s, r.generated, r.stop,
                r.gen_s > 0 ? r.generated / r.gen_s : 0, r.weights, r.bytes / 1e6, threads,
                threads == 1 ? "" : "s", r.peak);
        if (a.json) s = write_json(&a, &r, threads);
    }
out:
    tqp_infer_destroy(&e);
    tqp_qfile_close(&qf);
    tqp_tokenizer_destroy(&tok.l2);
    tqp_hftok_destroy(&tok.hf);
    tqp_model_destroy(&m);
    free(tok_path), free(prompt), free(text), free(r.ids), free(r.text);
    return s;
}
