/* `tqp tokenize`: write a text's token ids as a pre-tokenized file (raw little-endian uint32),
 * the format `--tokens` reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tqp/cli.h"
#include "tqp/hftok.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"

/* A Hugging Face tokenizer: a directory holding tokenizer.json, or a .json file. */
static int is_hf_tokenizer(const char *path)
{
    struct stat st;
    size_t n = path ? strlen(path) : 0;
    if (!path || stat(path, &st) != 0) return 0;
    return S_ISDIR(st.st_mode) || (n >= 5 && !strcmp(path + n - 5, ".json"));
}

/* The whole text as one document through a tokenizer.json, special tokens as its
 * post-processor adds them. */
static tqp_status hf_ids(const char *tok, const char *text, const tqp_model *m, uint32_t **ids,
                         size_t *n, char sha[65], char tok_sha[65])
{
    tqp_hftok *t = NULL;
    char *buf = NULL;
    size_t len = 0;
    TQP_CHECK(tqp_hftok_load(tok, &t));
    snprintf(tok_sha, 65, "%s", tqp_hftok_sha256(t));
    tqp_status s = tqp_file_read_all(text, &buf, &len);
    if (s == TQP_OK) {
        tqp_sha256_hex(buf, len, sha);
        s = tqp_hftok_encode(t, buf, len, 1, ids, n);
        if (s != TQP_OK) s = tqp_error_set(s, "%s: %s", text, tqp_error_message());
    }
    if (s == TQP_OK && m && tqp_hftok_vocab_size(t) > m->cfg.vocab_size)
        s = tqp_error_set(TQP_EMISMATCH, "%s: %d token ids, more than the model's vocabulary of %d",
                          tok, tqp_hftok_vocab_size(t), m->cfg.vocab_size);
    free(buf);
    tqp_hftok_destroy(&t);
    return s;
}

static tqp_status run(const char *model, const char *tok, const char *text, const char *out,
                      const char *json)
{
    tqp_model *m = NULL;
    int hf = is_hf_tokenizer(tok);
    if (!model && !hf)
        return tqp_error_set(TQP_EUSAGE, "--model is required unless --tokenizer is a "
                             "tokenizer.json (or the directory holding it)");
    if (model) TQP_CHECK(tqp_model_load(model, &m));
    uint32_t *ids = NULL;
    size_t n = 0;
    char sha[65], tok_sha[65] = "";
    tqp_status s = hf ? hf_ids(tok, text, m, &ids, &n, sha, tok_sha)
                      : tqp_load_token_stream(MPI_COMM_SELF, m, tok, text, NULL, &ids, &n, sha);
    if (s == TQP_OK) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        for (size_t i = 0; i < n; i++)
            ids[i] = __builtin_bswap32(ids[i]); /* little-endian */
#endif
        s = tqp_file_write_atomic(out, ids, n * sizeof *ids);
    }
    if (s == TQP_OK) printf("wrote %zu tokens to %s (text sha256 %s)\n", n, out, sha);
    if (s == TQP_OK && json) {
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "command", "tokenize");
        cJSON_AddStringToObject(d, "text", text);
        cJSON_AddStringToObject(d, "text_sha256", sha);
        if (*tok_sha) cJSON_AddStringToObject(d, "tokenizer_sha256", tok_sha);
        cJSON_AddStringToObject(d, "out", out);
        cJSON_AddNumberToObject(d, "tokens", (double)n);
        s = tqp_json_write(json, d);
        cJSON_Delete(d);
    }
    free(ids);
    tqp_model_destroy(&m);
    return s;
}

tqp_status tqp_cmd_tokenize(int argc, char **argv)
{
    const char *model, *tok, *text, *out, *json;
    tqp_opt opts[] = {
        {"--model", TQP_OPT_IN_PATH, &model, NULL, "PATH",
         "model whose vocabulary (and tokenizer beside it) to use; optional with a "
         "tokenizer.json"},
        {"--tokenizer", TQP_OPT_IN_PATH, &tok, NULL, "PATH",
         "tokenizer.json (or its directory, with tokenizer_config.json) or a llama2.c "
         "tokenizer.bin (default: tokenizer.bin or tok<vocab>.bin beside the model)"},
        {"--text", TQP_OPT_IN_FILE, &text, NULL, "PATH", "text file to tokenize", 1},
        {"--out", TQP_OPT_OUT, &out, NULL, "FILE", "token file to write", 1},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write a JSON summary to FILE"},
    };
    tqp_cmd_spec spec = {"tokenize", "Tokenize a text into a pre-tokenized token file.",
                         "The output is raw little-endian uint32 ids, the whole text as one "
                         "document: with a llama2.c tokenizer BOS first, exactly the stream that "
                         "tqp eval scores; with a tokenizer.json the special tokens its "
                         "post-processor adds. Pass it back with --tokens. Runs on rank 0.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    tqp_status s = rank == 0 ? run(model, tok, text, out, json) : TQP_OK;
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}
