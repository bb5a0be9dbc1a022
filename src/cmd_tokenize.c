/* `tqp tokenize`: write a text's token ids as a pre-tokenized file (raw little-endian uint32),
 * the format `--tokens` reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tqp/cli.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"

static tqp_status run(const char *model, const char *tok, const char *text, const char *out,
                      const char *json)
{
    tqp_model *m = NULL;
    if (model) TQP_CHECK(tqp_model_load(model, &m));
    uint32_t *ids = NULL;
    size_t n = 0;
    char sha[65], tok_sha[65] = "", tok_file[4200];
    tqp_status s = tqp_load_token_stream(MPI_COMM_SELF, m, tok, text, NULL, &ids, &n, sha);
    if (s == TQP_OK && tok && tqp_is_hf_tokenizer(tok)) { /* the tokenizer's identity */
        struct stat st;
        int dir = stat(tok, &st) == 0 && S_ISDIR(st.st_mode);
        snprintf(tok_file, sizeof tok_file, dir ? "%s/tokenizer.json" : "%s", tok);
        s = tqp_sha256_file(tok_file, tok_sha);
    }
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
        {"--text", TQP_OPT_IN_FILES, &text, NULL, "PATH[,PATH...]",
         "text files to tokenize (a .jsonl file: one {\"text\": ...} document per line)", 1},
        {"--out", TQP_OPT_OUT, &out, NULL, "FILE", "token file to write", 1},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write a JSON summary to FILE"},
    };
    tqp_cmd_spec spec = {"tokenize", "Tokenize a text into a pre-tokenized token file.",
                         "The output is raw little-endian uint32 ids, each file one document (a "
                         ".jsonl file one per line), exactly the stream that tqp eval scores: with "
                         "a llama2.c tokenizer BOS first in each; with a tokenizer.json what its "
                         "post-processor adds, and its EOS between documents. Pass it back with "
                         "--tokens. Runs on rank 0.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    tqp_status s = rank == 0 ? run(model, tok, text, out, json) : TQP_OK;
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}
