/* Helpers shared by the subcommands: the token-stream loader (rank 0 reads, everyone gets the
 * ids), tokenizer discovery beside a model, and atomic JSON summaries. */
#include "tqp/cli.h"

#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tqp/gpu.h"
#include "tqp/hftok.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"
#include "tqp/tokenizer.h"

int tqp_is_hf_tokenizer(const char *path)
{
    struct stat st;
    size_t n = path ? strlen(path) : 0;
    if (!path || stat(path, &st) != 0) return 0;
    return S_ISDIR(st.st_mode) || (n >= 5 && !strcmp(path + n - 5, ".json"));
}

char *tqp_find_tokenizer(const tqp_model *m)
{
    char *copy = strdup(m->path), path[4096];
    const char *dir = m->format == TQP_FORMAT_HF ? m->path : dirname(copy);
    static const char *const names[] = {"tokenizer.json", "tokenizer.bin", NULL};
    struct stat st;
    char *found = NULL;
    for (int i = 0; i < 3 && !found; i++) {
        if (names[i])
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        else
            snprintf(path, sizeof path, "%s/tok%d.bin", dir, m->cfg.vocab_size);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) found = strdup(path);
    }
    if (!found)
        tqp_error_set(TQP_EUSAGE,
                      "%s: no tokenizer.json, tokenizer.bin or tok%d.bin beside the model; pass "
                      "--tokenizer or --tokens",
                      dir, m->cfg.vocab_size);
    free(copy);
    return found;
}

/* A tokenizer of either kind and the ids it has produced so far. */
typedef struct {
    tqp_tokenizer *l2c;
    tqp_hftok *hf;
    uint32_t *ids;
    size_t n, cap;
} doc_encoder;

static tqp_status append_ids(doc_encoder *e, const uint32_t *ids, size_t n)
{
    if (e->n + n > e->cap) {
        size_t cap = (e->n + n) * 2 + 1024;
        uint32_t *v = realloc(e->ids, cap * sizeof *v);
        if (!v) return tqp_error_set(TQP_ENOMEM, "out of memory holding %zu token ids", e->n + n);
        e->ids = v, e->cap = cap;
    }
    memcpy(e->ids + e->n, ids, n * sizeof *ids);
    e->n += n;
    return TQP_OK;
}

/* One document: llama2.c's convention, BOS first; a tokenizer.json's post-processor, and its
 * EOS between documents (after every document but the last). */
static tqp_status encode_doc(doc_encoder *e, const char *text, size_t len, int last)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    tqp_status s = e->hf ? tqp_hftok_encode(e->hf, text, len, 1, &ids, &n)
                         : tqp_tokenizer_encode(e->l2c, text, len, 1, 0, &ids, &n);
    if (s == TQP_OK) s = append_ids(e, ids, n);
    free(ids);
    if (s == TQP_OK && e->hf && !last && tqp_hftok_eos(e->hf) >= 0) {
        uint32_t eos = (uint32_t)tqp_hftok_eos(e->hf);
        s = append_ids(e, &eos, 1);
    }
    return s;
}

static int is_jsonl(const char *path)
{
    size_t n = strlen(path);
    return n >= 6 && !strcmp(path + n - 6, ".jsonl");
}

/* The documents of one file: the whole file, or one per line of a JSON-lines file. */
static tqp_status encode_file(doc_encoder *e, const char *path, const char *text, size_t len,
                              int last_file)
{
    if (!is_jsonl(path)) return encode_doc(e, text, len, last_file);
    size_t line_no = 0, docs = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) : len;
        line_no++;
        size_t k = at;
        while (k < end && (text[k] == ' ' || text[k] == '\t' || text[k] == '\r')) k++;
        if (k < end) {
            cJSON *o = cJSON_ParseWithLength(text + at, end - at);
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "text");
            tqp_status s = cJSON_IsString(t) ? TQP_OK
                                             : tqp_error_set(TQP_EINPUT, "%s:%zu: not a JSON "
                                                             "object with a string \"text\"",
                                                             path, line_no);
            /* the last document of the last file: is there another non-blank line? */
            size_t rest = nl ? end + 1 : len;
            while (rest < len && (text[rest] == ' ' || text[rest] == '\t' ||
                                  text[rest] == '\r' || text[rest] == '\n'))
                rest++;
            if (s == TQP_OK)
                s = encode_doc(e, t->valuestring, strlen(t->valuestring), last_file && rest >= len);
            cJSON_Delete(o);
            TQP_CHECK(s);
            docs++;
        }
        at = nl ? end + 1 : len;
    }
    if (!docs) return tqp_error_set(TQP_EINPUT, "%s: no documents", path);
    return TQP_OK;
}

static tqp_status read_local(const tqp_model *m, const char *tok_path, const char *text_paths,
                             const char *tokens_path, uint32_t **tokens, size_t *n, char sha[65])
{
    if (tokens_path) {
        TQP_CHECK(tqp_sha256_file(tokens_path, sha));
        return tqp_tokens_read(tokens_path, m->cfg.vocab_size, tokens, n);
    }
    if (!text_paths) return tqp_error_set(TQP_EUSAGE, "one of --text or --tokens is required");
    if (!m && !tqp_is_hf_tokenizer(tok_path))
        return tqp_error_set(TQP_EUSAGE, "--model is required unless --tokenizer is a "
                             "tokenizer.json (or the directory holding it)");
    char *found = tok_path ? NULL : tqp_find_tokenizer(m);
    if (!tok_path && !found) return TQP_EUSAGE;
    const char *tp = tok_path ? tok_path : found;
    doc_encoder e = {0};
    tqp_status s = tqp_is_hf_tokenizer(tp) ? tqp_hftok_load(tp, &e.hf)
                                           : tqp_tokenizer_load(tp, m->cfg.vocab_size, &e.l2c);
    if (s == TQP_OK && e.hf && m && tqp_hftok_vocab_size(e.hf) > m->cfg.vocab_size)
        s = tqp_error_set(TQP_EMISMATCH, "%s: ids up to %d, beyond the model's vocabulary of %d",
                          tp, tqp_hftok_vocab_size(e.hf) - 1, m->cfg.vocab_size);
    /* the files in order; the SHA-256 of one file, or of the list of the files' SHA-256s */
    char *list = strdup(text_paths), *save = NULL, digests[8192] = "";
    int nfiles = 0;
    for (const char *c = text_paths; *c; c++) nfiles += *c == ',';
    nfiles++;
    int k = 0;
    for (char *path = list ? strtok_r(list, ",", &save) : NULL; path && s == TQP_OK;
         path = strtok_r(NULL, ",", &save), k++) {
        char *text = NULL, one[65];
        size_t len = 0;
        s = tqp_file_read_all(path, &text, &len);
        if (s == TQP_OK) {
            tqp_sha256_hex(text, len, one);
            snprintf(digests + strlen(digests), sizeof digests - strlen(digests), "%s\n", one);
            if (nfiles == 1) memcpy(sha, one, 65);
            s = encode_file(&e, path, text, len, k == nfiles - 1);
            if (s != TQP_OK && strstr(tqp_error_message(), path) == NULL)
                tqp_error_set(s, "%s: %s", path, tqp_error_message());
        }
        free(text);
    }
    if (!list) s = tqp_error_set(TQP_ENOMEM, "out of memory");
    if (s == TQP_OK && nfiles > 1) tqp_sha256_hex(digests, strlen(digests), sha);
    free(list);
    free(found);
    tqp_tokenizer_destroy(&e.l2c);
    tqp_hftok_destroy(&e.hf);
    if (s != TQP_OK) {
        free(e.ids);
        return s;
    }
    *tokens = e.ids ? e.ids : malloc(sizeof(uint32_t));
    *n = e.n;
    return *tokens ? TQP_OK : tqp_error_set(TQP_ENOMEM, "out of memory");
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
