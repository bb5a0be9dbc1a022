/* Helpers shared by the subcommands: the token-stream loader (rank 0 reads, everyone gets the
 * ids), tokenizer discovery beside a model, and atomic JSON summaries. */
#include "tqp/cli.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tqp/gpu.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"
#include "tqp/tokenizer.h"

char *tqp_find_tokenizer(const tqp_model *m)
{
    char *copy = strdup(m->path), path[4096];
    const char *dir = m->format == TQP_FORMAT_HF ? m->path : dirname(copy);
    struct stat st;
    snprintf(path, sizeof path, "%s/tokenizer.bin", dir);
    if (stat(path, &st) != 0) snprintf(path, sizeof path, "%s/tok%d.bin", dir, m->cfg.vocab_size);
    char *found = stat(path, &st) == 0 ? strdup(path) : NULL;
    if (!found)
        tqp_error_set(TQP_EUSAGE,
                      "%s: no tokenizer.bin or tok%d.bin beside the model; pass "
                      "--tokenizer or --tokens",
                      dir, m->cfg.vocab_size);
    free(copy);
    return found;
}

static tqp_status read_local(const tqp_model *m, const char *tok_path, const char *text_path,
                             const char *tokens_path, uint32_t **tokens, size_t *n, char sha[65])
{
    if (tokens_path) {
        TQP_CHECK(tqp_sha256_file(tokens_path, sha));
        return tqp_tokens_read(tokens_path, m->cfg.vocab_size, tokens, n);
    }
    if (!text_path) return tqp_error_set(TQP_EUSAGE, "one of --text or --tokens is required");
    char *found = tok_path ? NULL : tqp_find_tokenizer(m);
    if (!tok_path && !found) return TQP_EUSAGE;
    tqp_tokenizer *tk = NULL;
    char *text = NULL;
    size_t len = 0;
    tqp_status s = tqp_tokenizer_load(tok_path ? tok_path : found, m->cfg.vocab_size, &tk);
    if (s == TQP_OK) s = tqp_file_read_all(text_path, &text, &len);
    if (s == TQP_OK) {
        tqp_sha256_hex(text, len, sha);
        s = tqp_tokenizer_encode(tk, text, len, 1, 0, tokens, n);
        if (s != TQP_OK && strstr(tqp_error_message(), text_path) == NULL)
            tqp_error_set(s, "%s: %s", text_path, tqp_error_message());
    }
    free(text);
    free(found);
    tqp_tokenizer_destroy(&tk);
    return s;
}

tqp_status tqp_load_token_stream(MPI_Comm comm, const tqp_model *m, const char *tok_path,
                                 const char *text_path, const char *tokens_path, uint32_t **tokens,
                                 size_t *ntokens, char sha[65])
{
    int rank;
    MPI_Comm_rank(comm, &rank);
    *tokens = NULL;
    *ntokens = 0;
    tqp_status s = TQP_OK;
    if (rank == 0) s = read_local(m, tok_path, text_path, tokens_path, tokens, ntokens, sha);
    TQP_CHECK(tqp_mpi_agree(comm, s));
    unsigned long long n = *ntokens;
    TQP_MPI_CHECK(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, 0, comm));
    TQP_MPI_CHECK(MPI_Bcast(sha, 65, MPI_CHAR, 0, comm));
    if (rank != 0) {
        *tokens = tqp_malloc(n * sizeof **tokens);
        s = *tokens ? TQP_OK : TQP_ENOMEM;
    }
    TQP_CHECK(tqp_mpi_agree(comm, s));
    *ntokens = (size_t)n;
    for (size_t off = 0; off < *ntokens; off += (size_t)1 << 28) { /* count fits an int */
        size_t cnt = *ntokens - off < ((size_t)1 << 28) ? *ntokens - off : (size_t)1 << 28;
        TQP_MPI_CHECK(MPI_Bcast(*tokens + off, (int)cnt, MPI_UINT32_T, 0, comm));
    }
    return TQP_OK;
}

tqp_status tqp_json_write(const char *path, const cJSON *doc)
{
    char *txt = cJSON_Print(doc);
    if (!txt) return tqp_error_set(TQP_ENOMEM, "out of memory");
    size_t len = strlen(txt);
    char *buf = realloc(txt, len + 2);
    if (!buf) {
        free(txt);
        return tqp_error_set(TQP_ENOMEM, "out of memory");
    }
    buf[len] = '\n';
    tqp_status s = tqp_file_write_atomic(path, buf, len + 1);
    free(buf);
    return s;
}

int tqp_json_first_diff(const char *a, const char *b, char *buf, size_t cap)
{
    cJSON *x = cJSON_Parse(a), *y = cJSON_Parse(b), *it;
    int differ = 1;
    snprintf(buf, cap, "its identity is unreadable");
    if (x && y) {
        differ = 0;
        cJSON_ArrayForEach(it, y)
        {
            cJSON *o = cJSON_GetObjectItemCaseSensitive(x, it->string);
            char *va = o ? cJSON_PrintUnformatted(o) : strdup("(absent)");
            char *vb = cJSON_PrintUnformatted(it);
            differ = !(va && vb && !strcmp(va, vb));
            if (differ) snprintf(buf, cap, "%s is %s there, %s now", it->string, va, vb);
            free(va);
            free(vb);
            if (differ) break;
        }
    }
    cJSON_Delete(x);
    cJSON_Delete(y);
    return differ;
}

tqp_status tqp_check_validate_on(const char *where, int allow_none)
{
    if (!strcmp(where, "auto") || !strcmp(where, "cpu") || (allow_none && !strcmp(where, "none")))
        return TQP_OK;
    if (!strcmp(where, "gpu")) {
        char why[256];
        if (!tqp_gpu_available(why, sizeof why))
            return tqp_error_set(TQP_EUSAGE, "--validate-on gpu: no GPU here: %s (use auto or "
                                 "cpu)", why);
        return tqp_error_set(TQP_EUSAGE, "--validate-on gpu: evaluating on the GPU is not "
                             "implemented yet, only its decode and matvec kernels (use auto or "
                             "cpu)");
    }
    return tqp_error_set(TQP_EUSAGE, "--validate-on must be auto, cpu%s", allow_none ? " or none" : "");
}

/* The CPU's model name from /proc/cpuinfo ("unknown CPU" if none). */
void tqp_cpu_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p += 1 + (p[1] == ' ');
                p[strcspn(p, "\n")] = 0;
                snprintf(buf, cap, "%s", p);
            }
            break;
        }
    fclose(f);
}
