/* Hugging Face tokenizer.json: loading, normalization, pre-tokenization, BPE, post-processing.
 * See include/tqp/hftok.h for what is supported. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tqp/hftok.h"

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "tqp/io.h"

enum { MAX_STEPS = 8, MAX_TEMPLATE = 16 };

/* ---- hash maps ------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* Strings -> ids: the strings live in one arena, slots hold ids (-1 empty). */
typedef struct {
    char *arena;
    size_t used, cap;
    uint64_t *off; // (n_ids) offset of each id's string in the arena, UINT64_MAX if none
    uint32_t *len; // (n_ids)
    int32_t *slot;
    uint64_t mask;
    int n_ids;
} strmap;

static const char *sm_str(const strmap *m, int id, size_t *len)
{
    if (id < 0 || id >= m->n_ids || m->off[id] == UINT64_MAX) return NULL;
    if (len) *len = m->len[id];
    return m->arena + m->off[id];
}

static int sm_find(const strmap *m, const char *s, size_t n)
{
    if (!m->slot) return -1;
    for (uint64_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int id = m->slot[i];
        if (id < 0) return -1;
        if (m->len[id] == n && !memcmp(m->arena + m->off[id], s, n)) return id;
    }
}

/* Insert (s, id); the table must have room (built once, sized for every id). */
static tqp_status sm_put(strmap *m, const char *s, size_t n, int id)
{
    if (m->used + n + 1 > m->cap) {
        size_t cap = (m->cap + n + 1) * 2;
        char *a = realloc(m->arena, cap);
        if (!a) return tqp_error_set(TQP_ENOMEM, "out of memory (tokenizer strings)");
        m->arena = a, m->cap = cap;
    }
    memcpy(m->arena + m->used, s, n);
    m->arena[m->used + n] = 0;
    m->off[id] = m->used, m->len[id] = (uint32_t)n;
    m->used += n + 1;
    uint64_t i = hash_bytes(s, n) & m->mask;
    while (m->slot[i] >= 0) i = (i + 1) & m->mask;
    m->slot[i] = id;
    return TQP_OK;
}

static tqp_status sm_init(strmap *m, int n_ids)
{
    uint64_t size = 16;
    while (size < 2 * (uint64_t)n_ids) size *= 2;
    m->n_ids = n_ids;
    m->mask = size - 1;
    m->off = tqp_malloc(sizeof *m->off * (size_t)n_ids);
    m->len = tqp_calloc((size_t)n_ids, sizeof *m->len);
    m->slot = tqp_malloc(sizeof *m->slot * (size_t)size);
    if (!m->off || !m->len || !m->slot) return TQP_ENOMEM;
    memset(m->off, 0xff, sizeof *m->off * (size_t)n_ids);
    memset(m->slot, 0xff, sizeof *m->slot * (size_t)size);
    return TQP_OK;
}

static void sm_free(strmap *m)
{
    free(m->arena), free(m->off), free(m->len), free(m->slot);
    memset(m, 0, sizeof *m);
}

/* Pairs of ids -> (rank, merged id). */
typedef struct {
    uint64_t *key; // (a << 32 | b) + 1, 0 empty
    uint32_t *rank, *merged;
    uint64_t mask;
} pairmap;

static int pm_find(const pairmap *m, uint32_t a, uint32_t b, uint32_t *rank, uint32_t *merged)
{
    uint64_t k = ((uint64_t)a << 32 | b) + 1;
    for (uint64_t i = hash_u64(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == 0) return 0;
        if (m->key[i] == k) {
            *rank = m->rank[i], *merged = m->merged[i];
            return 1;
        }
    }
}

/* ---- the tokenizer --------------------------------------------------------------------- */

typedef enum { NORM_NFC, NORM_NFKC, NORM_NFD, NORM_NFKD, NORM_PREPEND, NORM_REPLACE } norm_kind;
typedef struct {
    norm_kind kind;
    char *a, *b; // Prepend: a; Replace: a -> b
} norm_step;

typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_METASPACE } pre_kind;
typedef struct {
    pre_kind kind;
    pcre2_code *re; // Split (regex or escaped string), ByteLevel with use_regex
    int add_prefix_space;
    char *replacement; // Metaspace
    int prepend;       // Metaspace: 0 never, 1 always, 2 first
    int split;         // Metaspace
} pre_step;

typedef struct {
    char *content;
    size_t len;
    int id, lstrip, rstrip;
} added_token;

struct tqp_hftok {
    char *path;
    char sha[65];
    strmap vocab;
    pairmap pairs;
    int n_ids;
    int byte_level;     // symbols are bytes mapped to the GPT-2 alphabet
    int byte_id[256];   // byte-level: the id of each byte's symbol; otherwise <0xXX> or -1
    int byte_fallback;  // character BPE: unknown characters become <0xXX> tokens
    int unk, fuse_unk;  // character BPE without byte fallback
    int ignore_merges;  // a piece that is in the vocabulary is taken whole
    norm_step norm[MAX_STEPS];
    int n_norm;
    pre_step pre[MAX_STEPS];
    int n_pre;
    added_token *added; // sorted by first byte, then longest first
    int n_added;
    int first_added[257]; // added[first_added[c] .. first_added[c + 1]) start with byte c
    int prefix[MAX_TEMPLATE], n_prefix, suffix[MAX_TEMPLATE], n_suffix;
    int bos, eos;
};

int tqp_hftok_vocab_size(const tqp_hftok *t)
{
    return t->n_ids;
}

const char *tqp_hftok_sha256(const tqp_hftok *t)
{
    return t->sha;
}

int tqp_hftok_bos(const tqp_hftok *t)
{
    return t->bos;
}

int tqp_hftok_eos(const tqp_hftok *t)
{
    return t->eos;
}

/* The GPT-2 byte-level alphabet: printable Latin-1 bytes stand for themselves, the others for
 * U+0100 + their rank among them. */
static int gpt2_printable(int b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static unsigned byte_char(int b)
{
    if (gpt2_printable(b)) return (unsigned)b;
    int n = 0;
    for (int c = 0; c < b; c++) n += !gpt2_printable(c);
    return 256u + (unsigned)n;
}

/* byte_char inverted, -1 if cp stands for no byte. */
static int char_byte(unsigned cp)
{
    if (cp < 256) return gpt2_printable((int)cp) ? (int)cp : -1;
    for (int b = 0, n = 0; b < 256; b++)
        if (!gpt2_printable(b) && n++ == (int)(cp - 256)) return b;
    return -1;
}

static int put_utf8(unsigned cp, char *out)
{
    return (int)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

/* Length of the UTF-8 sequence at p[0..n) or 0 if it is not well formed. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(p, (utf8proc_ssize_t)n, &cp);
    return k > 0 ? (size_t)k : 0;
}

/* ---- loading --------------------------------------------------------------------------- */

static tqp_status refuse(const char *path, const char *what, const char *name)
{
    return tqp_error_set(TQP_EINPUT, "%s: %s %s is not supported", path, what,
                         name ? name : "(unnamed)");
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *k, int def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : def;
}

static char *dup_str(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d) tqp_error_set(TQP_ENOMEM, "out of memory");
    return d;
}

static pcre2_code *compile_re(const char *path, const char *pattern, int literal)
{
    int err;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &err, &at,
                                   NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        tqp_error_set(TQP_EINPUT, "%s: pre-tokenizer regex: %s at offset %zu", path,
                      (const char *)msg, (size_t)at);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* plain matching when JIT is unavailable */
    return re;
}

/* GPT-2's pattern, which ByteLevel's use_regex applies. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static tqp_status load_normalizer(tqp_hftok *t, const cJSON *n)
{
    if (!n || cJSON_IsNull(n)) return TQP_OK;
    const char *type = jstr(n, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(n, "normalizers"))
            TQP_CHECK(load_normalizer(t, it));
        return TQP_OK;
    }
    if (t->n_norm == MAX_STEPS) return refuse(t->path, "a normalizer sequence this long", NULL);
    norm_step *s = &t->norm[t->n_norm];
    static const char *const unicode[] = {"NFC", "NFKC", "NFD", "NFKD"};
    for (int k = 0; k < 4; k++)
        if (type && !strcmp(type, unicode[k])) {
            s->kind = (norm_kind)k;
            t->n_norm++;
            return TQP_OK;
        }
    if (type && !strcmp(type, "Prepend") && jstr(n, "prepend")) {
        s->kind = NORM_PREPEND;
        if (!(s->a = dup_str(jstr(n, "prepend")))) return TQP_ENOMEM;
        t->n_norm++;
        return TQP_OK;
    }
    if (type && !strcmp(type, "Replace")) {
        const char *from = jstr(cJSON_GetObjectItemCaseSensitive(n, "pattern"), "String");
        const char *to = jstr(n, "content");
        if (!from || !*from || !to)
            return refuse(t->path, "normalizer Replace with a pattern other than a string", NULL);
        s->kind = NORM_REPLACE;
        if (!(s->a = dup_str(from)) || !(s->b = dup_str(to))) return TQP_ENOMEM;
        t->n_norm++;
        return TQP_OK;
    }
    return refuse(t->path, "normalizer", type);
}

static tqp_status load_pretokenizer(tqp_hftok *t, const cJSON *p)
{
    if (!p || cJSON_IsNull(p)) return TQP_OK;
    const char *type = jstr(p, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "pretokenizers"))
            TQP_CHECK(load_pretokenizer(t, it));
        return TQP_OK;
    }
    if (t->n_pre == MAX_STEPS) return refuse(t->path, "a pre-tokenizer sequence this long", NULL);
    pre_step *s = &t->pre[t->n_pre];
    if (type && !strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = jstr(pat, "Regex"), *lit = jstr(pat, "String");
        const char *behavior = jstr(p, "behavior");
        if (!behavior || strcmp(behavior, "Isolated"))
            return refuse(t->path, "Split behavior", behavior);
        if (jbool(p, "invert", 0)) return refuse(t->path, "Split with invert", "true");
        if (!re && !lit) return refuse(t->path, "Split pattern", NULL);
        s->kind = PRE_SPLIT;
        if (!(s->re = compile_re(t->path, re ? re : lit, re == NULL))) return TQP_EINPUT;
        t->n_pre++;
        return TQP_OK;
    }
    if (type && !strcmp(type, "ByteLevel")) {
        s->kind = PRE_BYTELEVEL;
        s->add_prefix_space = jbool(p, "add_prefix_space", 1);
        if (jbool(p, "use_regex", 1) && !(s->re = compile_re(t->path, gpt2_pattern, 0)))
            return TQP_EINPUT;
        t->byte_level = 1;
        t->n_pre++;
        return TQP_OK;
    }
    if (type && !strcmp(type, "Metaspace")) {
        const char *rep = jstr(p, "replacement"), *scheme = jstr(p, "prepend_scheme");
        s->kind = PRE_METASPACE;
        if (!(s->replacement = dup_str(rep ? rep : "\xe2\x96\x81"))) return TQP_ENOMEM;
        s->prepend = scheme ? (!strcmp(scheme, "always") ? 1 : !strcmp(scheme, "first") ? 2
                                                                  : !strcmp(scheme, "never") ? 0
                                                                                            : -1)
                            : jbool(p, "add_prefix_space", 1);
        if (s->prepend < 0) return refuse(t->path, "Metaspace prepend_scheme", scheme);
        s->split = jbool(p, "split", 1);
        t->n_pre++;
        return TQP_OK;
    }
    return refuse(t->path, "pre-tokenizer", type);
}

/* The ids of a special token of TemplateProcessing ("special_tokens": {name: {"ids": [...]}}). */
static tqp_status template_items(tqp_hftok *t, const cJSON *proc, const cJSON *items, int *dst,
                                 int *n, int *seen_seq)
{
    const cJSON *it, *specials = cJSON_GetObjectItemCaseSensitive(proc, "special_tokens");
    cJSON_ArrayForEach(it, items)
    {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        if (cJSON_GetObjectItemCaseSensitive(it, "Sequence")) {
            if (*seen_seq) return refuse(t->path, "a template with two sequences", NULL);
            *seen_seq = 1;
            continue;
        }
        const char *name = jstr(sp, "id");
        const cJSON *ids =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(specials, name), "ids");
        if (!name || !cJSON_IsArray(ids))
            return tqp_error_set(TQP_EINPUT, "%s: post-processor: special token %s has no ids",
                                 t->path, name ? name : "(unnamed)");
        const cJSON *id;
        cJSON_ArrayForEach(id, ids)
        {
            int *where = *seen_seq ? t->suffix : dst;
            int *count = *seen_seq ? &t->n_suffix : n;
            if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= t->n_ids ||
                *count == MAX_TEMPLATE)
                return tqp_error_set(TQP_EINPUT, "%s: post-processor: bad id for %s", t->path,
                                     name);
            where[(*count)++] = (int)id->valuedouble;
        }
    }
    return TQP_OK;
}

static tqp_status load_post(tqp_hftok *t, const cJSON *p)
{
    if (!p || cJSON_IsNull(p)) return TQP_OK;
    const char *type = jstr(p, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(p, "processors"))
            TQP_CHECK(load_post(t, it));
        return TQP_OK;
    }
    if (type && !strcmp(type, "ByteLevel")) return TQP_OK; /* offsets only */
    if (type && !strcmp(type, "TemplateProcessing")) {
        int seen = 0;
        return template_items(t, p, cJSON_GetObjectItemCaseSensitive(p, "single"), t->prefix,
                              &t->n_prefix, &seen);
    }
    return refuse(t->path, "post-processor", type);
}

static int cmp_added(const void *a, const void *b)
{
    const added_token *x = a, *y = b;
    unsigned char cx = (unsigned char)x->content[0], cy = (unsigned char)y->content[0];
    if (cx != cy) return cx < cy ? -1 : 1;
    return x->len > y->len ? -1 : x->len < y->len ? 1 : 0;
}

static tqp_status load_vocab(tqp_hftok *t, const cJSON *model, const cJSON *added)
{
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *it;
    if (!cJSON_IsObject(vocab)) return tqp_error_set(TQP_EINPUT, "%s: model has no vocab", t->path);
    int top = -1;
    cJSON_ArrayForEach(it, vocab)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > (1 << 24) ||
            it->valuedouble != (int)it->valuedouble)
            return tqp_error_set(TQP_EINPUT, "%s: vocab entry '%s' has a bad id", t->path,
                                 it->string);
        if ((int)it->valuedouble > top) top = (int)it->valuedouble;
    }
    cJSON_ArrayForEach(it, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > (1 << 24) ||
            !jstr(it, "content") || !*jstr(it, "content"))
            return tqp_error_set(TQP_EINPUT, "%s: an added token has a bad id or no content",
                                 t->path);
        if ((int)id->valuedouble > top) top = (int)id->valuedouble;
    }
    if (top < 0) return tqp_error_set(TQP_EINPUT, "%s: empty vocabulary", t->path);
    t->n_ids = top + 1;
    TQP_CHECK(sm_init(&t->vocab, t->n_ids));
    cJSON_ArrayForEach(it, vocab)
    {
        size_t n = strlen(it->string);
        int id = (int)it->valuedouble;
        if (sm_find(&t->vocab, it->string, n) >= 0 || sm_str(&t->vocab, id, NULL))
            return tqp_error_set(TQP_EINPUT, "%s: vocab entry '%s' (id %d) is not unique",
                                 t->path, it->string, id);
        TQP_CHECK(sm_put(&t->vocab, it->string, n, id));
    }
    int n_added = cJSON_GetArraySize(added);
    t->added = tqp_calloc((size_t)(n_added ? n_added : 1), sizeof *t->added);
    if (!t->added) return TQP_ENOMEM;
    cJSON_ArrayForEach(it, added)
    {
        added_token *a = &t->added[t->n_added++];
        if (!(a->content = dup_str(jstr(it, "content")))) return TQP_ENOMEM;
        a->len = strlen(a->content);
        a->id = (int)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
        a->lstrip = jbool(it, "lstrip", 0);
        a->rstrip = jbool(it, "rstrip", 0);
        if (jbool(it, "single_word", 0))
            return refuse(t->path, "added token with single_word", a->content);
        if (!sm_str(&t->vocab, a->id, NULL)) TQP_CHECK(sm_put(&t->vocab, a->content, a->len, a->id));
    }
    qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added);
    for (int c = 0, k = 0; c <= 256; c++) {
        while (k < t->n_added && (unsigned char)t->added[k].content[0] < c) k++;
        t->first_added[c] = k;
    }
    return TQP_OK;
}

static tqp_status load_merges(tqp_hftok *t, const cJSON *model)
{
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges"), *it;
    int n = cJSON_GetArraySize(merges);
    uint64_t size = 16;
    while (size < 2 * (uint64_t)(n + 1)) size *= 2;
    t->pairs.mask = size - 1;
    t->pairs.key = tqp_calloc((size_t)size, sizeof *t->pairs.key);
    t->pairs.rank = tqp_malloc(sizeof *t->pairs.rank * (size_t)size);
    t->pairs.merged = tqp_malloc(sizeof *t->pairs.merged * (size_t)size);
    if (!t->pairs.key || !t->pairs.rank || !t->pairs.merged) return TQP_ENOMEM;
    char *buf = NULL;
    size_t cap = 0;
    uint32_t rank = 0;
    tqp_status s = TQP_OK;
    cJSON_ArrayForEach(it, merges)
    {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(it)) { /* "a b" */
            const char *sp = strchr(it->valuestring, ' ');
            if (!sp) {
                s = tqp_error_set(TQP_EINPUT, "%s: merge %u '%s' has no space", t->path, rank,
                                  it->valuestring);
                break;
            }
            a = it->valuestring, na = (size_t)(sp - a), b = sp + 1, nb = strlen(b);
        } else if (cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring, na = strlen(a);
            b = cJSON_GetArrayItem(it, 1)->valuestring, nb = strlen(b);
        } else {
            s = tqp_error_set(TQP_EINPUT, "%s: merge %u is neither \"a b\" nor [a, b]", t->path,
                              rank);
            break;
        }
        if (na + nb + 1 > cap) {
            cap = 2 * (na + nb + 1);
            char *nbuf = realloc(buf, cap);
            if (!nbuf) {
                s = tqp_error_set(TQP_ENOMEM, "out of memory");
                break;
            }
            buf = nbuf;
        }
        memcpy(buf, a, na), memcpy(buf + na, b, nb);
        int ia = sm_find(&t->vocab, a, na), ib = sm_find(&t->vocab, b, nb);
        int im = sm_find(&t->vocab, buf, na + nb);
        if (ia < 0 || ib < 0 || im < 0) {
            s = tqp_error_set(TQP_EINPUT, "%s: merge %u (%.*s + %.*s) names a token not in the "
                              "vocabulary", t->path, rank, (int)na, a, (int)nb, b);
            break;
        }
        uint64_t k = ((uint64_t)ia << 32 | (uint32_t)ib) + 1, i = hash_u64(k) & t->pairs.mask;
        while (t->pairs.key[i] != 0 && t->pairs.key[i] != k) i = (i + 1) & t->pairs.mask;
        if (t->pairs.key[i] == 0) { /* the first (lowest) rank of a pair counts */
            t->pairs.key[i] = k;
            t->pairs.rank[i] = rank;
            t->pairs.merged[i] = (uint32_t)im;
        }
        rank++;
    }
    free(buf);
    return s;
}

static tqp_status load_model(tqp_hftok *t, const cJSON *model)
{
    const char *type = jstr(model, "type");
    if (!type || strcmp(type, "BPE")) return refuse(t->path, "model type", type);
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(drop) && drop->valuedouble != 0)
        return refuse(t->path, "BPE with dropout", "(not deterministic)");
    const char *csp = jstr(model, "continuing_subword_prefix"), *eow = jstr(model, "end_of_word_suffix");
    if ((csp && *csp) || (eow && *eow))
        return refuse(t->path, "BPE with a subword prefix or word suffix", csp && *csp ? csp : eow);
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    const char *unk = jstr(model, "unk_token");
    t->unk = unk ? sm_find(&t->vocab, unk, strlen(unk)) : -1;
    for (int b = 0; b < 256; b++) {
        char s[8];
        if (t->byte_level)
            t->byte_id[b] = sm_find(&t->vocab, s, (size_t)put_utf8(byte_char(b), s));
        else {
            snprintf(s, sizeof s, "<0x%02X>", b);
            t->byte_id[b] = sm_find(&t->vocab, s, strlen(s));
        }
        if (t->byte_level && t->byte_id[b] < 0)
            return tqp_error_set(TQP_EINPUT, "%s: byte-level vocabulary lacks the symbol of byte "
                                 "%d", t->path, b);
    }
    return TQP_OK;
}

/* bos_token / eos_token of tokenizer_config.json (a string or {"content": ...}). */
static int config_token(const tqp_hftok *t, const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : jstr(v, "content");
    return s ? sm_find(&t->vocab, s, strlen(s)) : -1;
}

tqp_status tqp_hftok_load(const char *path, tqp_hftok **out)
{
    *out = NULL;
    struct stat st;
    char file[4200], cfgpath[4200];
    int is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    snprintf(file, sizeof file, is_dir ? "%s/tokenizer.json" : "%s", path);
    tqp_hftok *t = tqp_calloc(1, sizeof *t);
    if (!t) return TQP_ENOMEM;
    t->bos = t->eos = -1;
    t->unk = -1;
    char *text = NULL;
    size_t len = 0;
    cJSON *doc = NULL, *cfg = NULL;
    tqp_status s = (t->path = dup_str(file)) ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK) s = tqp_file_read_all(file, &text, &len);
    if (s == TQP_OK) {
        tqp_sha256_hex(text, len, t->sha);
        doc = cJSON_ParseWithLength(text, len);
        if (!doc || !cJSON_IsObject(doc))
            s = tqp_error_set(TQP_EINPUT, "%s: not a JSON object (near byte %zu)", file,
                              doc ? (size_t)0 : (size_t)(cJSON_GetErrorPtr() - text));
    }
    free(text);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(doc, "model");
    if (s == TQP_OK && !cJSON_IsObject(model))
        s = tqp_error_set(TQP_EINPUT, "%s: no model", file);
    const char *mtype = jstr(model, "type");
    if (s == TQP_OK && (!mtype || strcmp(mtype, "BPE"))) s = refuse(file, "model type", mtype);
    /* the pre-tokenizer first: it says whether the model's symbols are byte-level */
    if (s == TQP_OK) s = load_pretokenizer(t, cJSON_GetObjectItemCaseSensitive(doc, "pre_tokenizer"));
    if (s == TQP_OK) s = load_normalizer(t, cJSON_GetObjectItemCaseSensitive(doc, "normalizer"));
    if (s == TQP_OK) s = load_vocab(t, model, cJSON_GetObjectItemCaseSensitive(doc, "added_tokens"));
    if (s == TQP_OK) s = load_merges(t, model);
    if (s == TQP_OK) s = load_model(t, model);
    if (s == TQP_OK) s = load_post(t, cJSON_GetObjectItemCaseSensitive(doc, "post_processor"));
    if (s == TQP_OK) {
        const char *slash = strrchr(file, '/');
        snprintf(cfgpath, sizeof cfgpath, "%.*stokenizer_config.json",
                 slash ? (int)(slash - file + 1) : 0, file);
        char *ctext = NULL;
        size_t clen;
        if (stat(cfgpath, &st) == 0) {
            s = tqp_file_read_all(cfgpath, &ctext, &clen);
            if (s == TQP_OK && !(cfg = cJSON_ParseWithLength(ctext, clen)))
                s = tqp_error_set(TQP_EINPUT, "%s: not JSON", cfgpath);
            free(ctext);
        }
        t->bos = config_token(t, cfg, "bos_token");
        t->eos = config_token(t, cfg, "eos_token");
        if (t->bos < 0 && t->n_prefix > 0) t->bos = t->prefix[0];
    }
    cJSON_Delete(doc);
    cJSON_Delete(cfg);
    if (s != TQP_OK) {
        tqp_hftok_destroy(&t);
        return s;
    }
    *out = t;
    return TQP_OK;
}

void tqp_hftok_destroy(tqp_hftok **pt)
{
    tqp_hftok *t = *pt;
    if (!t) return;
    sm_free(&t->vocab);
    free(t->pairs.key), free(t->pairs.rank), free(t->pairs.merged);
    for (int i = 0; i < t->n_norm; i++) free(t->norm[i].a), free(t->norm[i].b);
    for (int i = 0; i < t->n_pre; i++) {
        pcre2_code_free(t->pre[i].re);
        free(t->pre[i].replacement);
    }
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->path);
    free(t);
    *pt = NULL;
}

/* ---- encoding -------------------------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} buf_t;

static int buf_add(buf_t *b, const void *p, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap + n + 1) * 2;
        char *q = realloc(b->p, cap);
        if (!q) return 0;
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
    return 1;
}

/* Pieces of the pre-tokenized text: [start, end) byte ranges of one buffer. */
typedef struct {
    size_t *start, *end;
    size_t n, cap;
} pieces;

static int piece_add(pieces *ps, size_t a, size_t b)
{
    if (a == b) return 1;
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 256;
        size_t *s = realloc(ps->start, cap * sizeof *s), *e = s ? realloc(ps->end, cap * sizeof *e) : NULL;
        if (s) ps->start = s;
        if (!s || !e) return 0;
        ps->end = e, ps->cap = cap;
    }
    ps->start[ps->n] = a, ps->end[ps->n++] = b;
    return 1;
}

typedef struct {
    uint32_t *v;
    size_t n, cap;
} ids_t;

static int ids_add(ids_t *d, uint32_t id)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? 2 * d->cap : 1024;
        uint32_t *q = realloc(d->v, cap * sizeof *q);
        if (!q) return 0;
        d->v = q, d->cap = cap;
    }
    d->v[d->n++] = id;
    return 1;
}

static tqp_status nomem(void)
{
    return tqp_error_set(TQP_ENOMEM, "out of memory while tokenizing");
}

/* Normalize text into out. */
static tqp_status normalize(const tqp_hftok *t, const char *text, size_t len, buf_t *out)
{
    buf_t cur = {0};
    if (!buf_add(&cur, text, len)) return nomem();
    for (int i = 0; i < t->n_norm; i++) {
        const norm_step *s = &t->norm[i];
        buf_t next = {0};
        int ok = 1;
        if (s->kind <= NORM_NFKD) {
            static const int flags[] = {UTF8PROC_COMPOSE, UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
                                        UTF8PROC_DECOMPOSE, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT};
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t n = cur.n ? utf8proc_map((const utf8proc_uint8_t *)cur.p,
                                                      (utf8proc_ssize_t)cur.n, &dst,
                                                      (utf8proc_option_t)(UTF8PROC_STABLE |
                                                                          flags[s->kind]))
                                       : 0;
            if (n < 0) {
                free(cur.p);
                return tqp_error_set(TQP_EINPUT, "normalization failed: %s",
                                     utf8proc_errmsg(n));
            }
            ok = buf_add(&next, dst ? (const char *)dst : "", (size_t)n);
            free(dst);
        } else if (s->kind == NORM_PREPEND) {
            ok = cur.n == 0 || (buf_add(&next, s->a, strlen(s->a)) && buf_add(&next, cur.p, cur.n));
            if (cur.n == 0) ok = buf_add(&next, "", 0);
        } else { /* Replace */
            size_t na = strlen(s->a), nb = strlen(s->b);
            for (size_t k = 0; k < cur.n && ok;) {
                if (k + na <= cur.n && !memcmp(cur.p + k, s->a, na)) {
                    ok = buf_add(&next, s->b, nb);
                    k += na;
                } else {
                    ok = buf_add(&next, cur.p + k, 1);
                    k++;
                }
            }
            if (cur.n == 0) ok = buf_add(&next, "", 0);
        }
        free(cur.p);
        if (!ok) {
            free(next.p);
            return nomem();
        }
        cur = next;
    }
    *out = cur;
    return TQP_OK;
}

/* Split each piece of `b` by a regex, keeping the matches and the gaps between them. */
static tqp_status split_regex(const pcre2_code *re, const buf_t *b, pieces *in, pieces *out)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md) return nomem();
    tqp_status s = TQP_OK;
    for (size_t i = 0; i < in->n && s == TQP_OK; i++) {
        size_t at = in->start[i], end = in->end[i];
        while (at < end && s == TQP_OK) {
            int rc = pcre2_match(re, (PCRE2_SPTR)b->p, end, at, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                s = tqp_error_set(TQP_EINPUT, "pre-tokenizer regex failed (PCRE2 error %d)", rc);
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* an empty match: step over one character */
                size_t k = utf8_seq((const unsigned char *)b->p + ms, end - ms);
                if (!piece_add(out, at, ms + (k ? k : 1))) s = nomem();
                at = ms + (k ? k : 1);
                continue;
            }
            if (!piece_add(out, at, ms) || !piece_add(out, ms, me)) s = nomem();
            at = me;
        }
        if (s == TQP_OK && !piece_add(out, at, end)) s = nomem();
    }
    pcre2_match_data_free(md);
    return s;
}

/* Pre-tokenize segment text (normalized) into b and its pieces.  `first`: the segment starts
 * the text (Metaspace's prepend_scheme "first"). */
static tqp_status pretokenize(const tqp_hftok *t, buf_t *b, pieces *ps, int first)
{
    ps->n = 0;
    if (!piece_add(ps, 0, b->n)) return nomem();
    for (int i = 0; i < t->n_pre; i++) {
        const pre_step *st = &t->pre[i];
        pieces next = {0};
        tqp_status s = TQP_OK;
        if (st->kind == PRE_SPLIT) {
            s = split_regex(st->re, b, ps, &next);
        } else if (st->kind == PRE_BYTELEVEL) {
            if (st->add_prefix_space && b->n > 0 && b->p[0] != ' ') {
                buf_t nb = {0};
                if (!buf_add(&nb, " ", 1) || !buf_add(&nb, b->p, b->n)) return nomem();
                free(b->p);
                *b = nb;
                for (size_t k = 0; k < ps->n; k++) ps->start[k] += k > 0, ps->end[k]++;
            }
            if (st->re)
                s = split_regex(st->re, b, ps, &next);
            else
                for (size_t k = 0; k < ps->n && s == TQP_OK; k++)
                    if (!piece_add(&next, ps->start[k], ps->end[k])) s = nomem();
        } else { /* Metaspace: spaces become the replacement, prepended, split before each */
            size_t nr = strlen(st->replacement);
            buf_t nb = {0};
            int ok = 1;
            for (size_t k = 0; k < ps->n && ok; k++) {
                size_t a = nb.n;
                if ((st->prepend == 1 || (st->prepend == 2 && first && k == 0)) &&
                    !(ps->end[k] - ps->start[k] >= nr &&
                      !memcmp(b->p + ps->start[k], st->replacement, nr)))
                    ok = buf_add(&nb, st->replacement, nr);
                for (size_t j = ps->start[k]; j < ps->end[k] && ok; j++)
                    ok = b->p[j] == ' ' ? buf_add(&nb, st->replacement, nr)
                                        : buf_add(&nb, b->p + j, 1);
                if (!st->split) {
                    ok = ok && piece_add(&next, a, nb.n);
                    continue;
                }
                size_t from = a;
                for (size_t j = a + 1; j < nb.n && ok; j++)
                    if (j + nr <= nb.n && !memcmp(nb.p + j, st->replacement, nr)) {
                        ok = piece_add(&next, from, j);
                        from = j;
                    }
                ok = ok && piece_add(&next, from, nb.n);
            }
            free(b->p);
            *b = nb;
            if (!ok) s = nomem();
        }
        free(ps->start), free(ps->end);
        *ps = next;
        if (s != TQP_OK) return s;
    }
    return TQP_OK;
}

/* ---- BPE on one piece ---- */

typedef struct {
    uint32_t rank, left, a, b; // candidate: merge symbols left and its next (ids a, b)
} cand;

typedef struct {
    uint32_t *id;
    int32_t *prev, *next;
    cand *heap;
    size_t n, cap, nheap, capheap;
} bpe_work;

static int cand_less(const cand *x, const cand *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->left < y->left;
}

static int heap_push(bpe_work *w, cand c)
{
    if (w->nheap == w->capheap) {
        size_t cap = w->capheap ? 2 * w->capheap : 256;
        cand *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return 0;
        w->heap = h, w->capheap = cap;
    }
    size_t i = w->nheap++;
    while (i > 0 && cand_less(&c, &w->heap[(i - 1) / 2])) {
        w->heap[i] = w->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    w->heap[i] = c;
    return 1;
}

static cand heap_pop(bpe_work *w)
{
    cand top = w->heap[0], last = w->heap[--w->nheap];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= w->nheap) break;
        if (c + 1 < w->nheap && cand_less(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_less(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (w->nheap > 0) w->heap[i] = last;
    return top;
}

static int push_pair(const tqp_hftok *t, bpe_work *w, int32_t left)
{
    int32_t right = w->next[left];
    uint32_t rank, merged;
    if (right < 0 || !pm_find(&t->pairs, w->id[left], w->id[right], &rank, &merged)) return 1;
    return heap_push(w, (cand){rank, (uint32_t)left, w->id[left], w->id[right]});
}

static int reserve(bpe_work *w, size_t n)
{
    if (n <= w->cap) return 1;
    size_t cap = n * 2;
    uint32_t *id = realloc(w->id, cap * sizeof *id);
    if (id) w->id = id;
    int32_t *p = id ? realloc(w->prev, cap * sizeof *p) : NULL;
    if (p) w->prev = p;
    int32_t *q = p ? realloc(w->next, cap * sizeof *q) : NULL;
    if (q) w->next = q;
    if (!q) return 0;
    w->cap = cap;
    return 1;
}

static int has_byte_tokens(const tqp_hftok *t, const char *p, size_t k)
{
    for (size_t j = 0; j < k; j++)
        if (t->byte_id[(unsigned char)p[j]] < 0) return 0;
    return 1;
}

/* The ids of piece p[0..n) appended to out. */
static tqp_status bpe_piece(const tqp_hftok *t, bpe_work *w, const char *p, size_t n, ids_t *out)
{
    char tmp[8];
    if (t->ignore_merges) {
        int id;
        if (t->byte_level) {
            buf_t m = {0};
            for (size_t i = 0; i < n; i++)
                if (!buf_add(&m, tmp, (size_t)put_utf8(byte_char((unsigned char)p[i]), tmp)))
                    return nomem();
            id = sm_find(&t->vocab, m.p ? m.p : "", m.n);
            free(m.p);
        } else {
            id = sm_find(&t->vocab, p, n);
        }
        if (id >= 0) return ids_add(out, (uint32_t)id) ? TQP_OK : nomem();
    }
    if (!reserve(w, n + 1)) return nomem();
    w->n = 0;
    for (size_t i = 0; i < n;) { /* the initial symbols */
        if (t->byte_level) {
            w->id[w->n++] = (uint32_t)t->byte_id[(unsigned char)p[i++]];
            continue;
        }
        size_t k = utf8_seq((const unsigned char *)p + i, n - i);
        if (!k) k = 1;
        int id = sm_find(&t->vocab, p + i, k);
        if (id >= 0)
            w->id[w->n++] = (uint32_t)id;
        else if (t->byte_fallback && has_byte_tokens(t, p + i, k))
            for (size_t j = 0; j < k; j++) w->id[w->n++] = (uint32_t)t->byte_id[(unsigned char)p[i + j]];
        else if (t->unk >= 0) { /* (byte fallback without a token for every byte: unknown) */
            if (!(t->fuse_unk && w->n > 0 && w->id[w->n - 1] == (uint32_t)t->unk))
                w->id[w->n++] = (uint32_t)t->unk;
        } else
            return tqp_error_set(TQP_EINPUT, "character '%.*s' is not in the vocabulary and "
                                 "there is no unknown token", (int)k, p + i);
        i += k;
    }
    for (size_t i = 0; i < w->n; i++) {
        w->prev[i] = (int32_t)i - 1;
        w->next[i] = i + 1 < w->n ? (int32_t)i + 1 : -1;
    }
    w->nheap = 0;
    for (size_t i = 0; i + 1 < w->n; i++)
        if (!push_pair(t, w, (int32_t)i)) return nomem();
    while (w->nheap > 0) {
        cand c = heap_pop(w);
        int32_t l = (int32_t)c.left, r = w->next[l];
        /* stale: the left symbol was merged away, or either side changed */
        if (w->id[l] != c.a || r < 0 || w->id[r] != c.b || w->prev[l] == -2) continue;
        uint32_t rank = 0, merged = 0;
        pm_find(&t->pairs, c.a, c.b, &rank, &merged);
        w->id[l] = merged;
        w->next[l] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = l;
        w->prev[r] = -2; /* dead */
        w->id[r] = UINT32_MAX;
        if (w->prev[l] >= 0 && !push_pair(t, w, w->prev[l])) return nomem();
        if (!push_pair(t, w, l)) return nomem();
    }
    for (int32_t i = w->n ? 0 : -1; i >= 0; i = w->next[i])
        if (!ids_add(out, w->id[i])) return nomem();
    return TQP_OK;
}

/* A cache of pieces already encoded in this call (pieces repeat: words). */
typedef struct {
    uint64_t *key; // hash | 1, 0 empty
    uint32_t *at;  // (start in ids arena << 8 | count), count < 256
    char **text;
    uint32_t *len;
    ids_t arena;
    uint64_t mask, used;
} piece_cache;

enum { CACHE_MAX_PIECE = 64, CACHE_SLOTS = 1 << 20 };

static tqp_status encode_piece(const tqp_hftok *t, bpe_work *w, piece_cache *pc, const char *p,
                               size_t n, ids_t *out)
{
    uint64_t h = 0, i = 0;
    if (n <= CACHE_MAX_PIECE && pc->key) {
        h = hash_bytes(p, n) | 1;
        for (i = h & pc->mask; pc->key[i]; i = (i + 1) & pc->mask)
            if (pc->key[i] == h && pc->len[i] == n && !memcmp(pc->text[i], p, n)) {
                uint32_t at = pc->at[i] >> 8, cnt = pc->at[i] & 255;
                for (uint32_t k = 0; k < cnt; k++)
                    if (!ids_add(out, pc->arena.v[at + k])) return nomem();
                return TQP_OK;
            }
    }
    size_t before = out->n;
    TQP_CHECK(bpe_piece(t, w, p, n, out));
    size_t cnt = out->n - before;
    if (h && cnt < 256 && pc->used < pc->mask / 2 && pc->arena.n < (1u << 24) - 256) {
        char *copy = malloc(n ? n : 1);
        if (!copy) return TQP_OK; /* the cache is only a help */
        memcpy(copy, p, n);
        size_t at = pc->arena.n;
        for (size_t k = 0; k < cnt; k++)
            if (!ids_add(&pc->arena, out->v[before + k])) {
                free(copy);
                return TQP_OK;
            }
        pc->key[i] = h, pc->len[i] = (uint32_t)n, pc->text[i] = copy;
        pc->at[i] = (uint32_t)(at << 8 | cnt);
        pc->used++;
    }
    return TQP_OK;
}

static void cache_free(piece_cache *pc)
{
    for (uint64_t i = 0; pc->key && i <= pc->mask; i++)
        if (pc->key[i]) free(pc->text[i]);
    free(pc->key), free(pc->at), free(pc->text), free(pc->len), free(pc->arena.v);
}

/* Encode one segment of text (between added tokens). */
static tqp_status encode_segment(const tqp_hftok *t, bpe_work *w, piece_cache *pc, const char *p,
                                 size_t n, int first, ids_t *out)
{
    if (n == 0) return TQP_OK;
    buf_t b = {0};
    pieces ps = {0};
    tqp_status s = normalize(t, p, n, &b);
    if (s == TQP_OK) s = pretokenize(t, &b, &ps, first);
    for (size_t i = 0; i < ps.n && s == TQP_OK; i++)
        s = encode_piece(t, w, pc, b.p + ps.start[i], ps.end[i] - ps.start[i], out);
    free(b.p), free(ps.start), free(ps.end);
    return s;
}

/* The longest added token at text[i..len), or NULL. */
static const added_token *added_at(const tqp_hftok *t, const char *text, size_t len, size_t i)
{
    unsigned char c = (unsigned char)text[i];
    for (int k = t->first_added[c]; k < t->first_added[c + 1]; k++) {
        const added_token *a = &t->added[k];
        if (a->len <= len - i && !memcmp(text + i, a->content, a->len)) return a;
    }
    return NULL;
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

tqp_status tqp_hftok_encode(const tqp_hftok *t, const char *text, size_t len, int special,
                            uint32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    for (size_t i = 0; i < len;) { /* UTF-8, once (the regex matcher is told not to check) */
        size_t k = utf8_seq((const unsigned char *)text + i, len - i);
        if (!k) return tqp_error_set(TQP_EINPUT, "not UTF-8 at byte %zu", i);
        i += k;
    }
    ids_t out = {0};
    bpe_work w = {0};
    piece_cache pc = {0};
    size_t slots = 256; /* about one slot per 8 bytes of text, at most CACHE_SLOTS */
    while (slots < CACHE_SLOTS && slots < len / 8) slots *= 2;
    pc.mask = slots - 1;
    pc.key = calloc(slots, sizeof *pc.key);
    pc.at = malloc(slots * sizeof *pc.at);
    pc.text = malloc(slots * sizeof *pc.text);
    pc.len = malloc(slots * sizeof *pc.len);
    if (!pc.key || !pc.at || !pc.text || !pc.len) { /* run without the cache */
        free(pc.key), free(pc.at), free(pc.text), free(pc.len);
        memset(&pc, 0, sizeof pc);
    }
    tqp_status s = TQP_OK;
    for (int k = 0; special && k < t->n_prefix && s == TQP_OK; k++)
        if (!ids_add(&out, (uint32_t)t->prefix[k])) s = nomem();
    size_t seg = 0; /* start of the current run of ordinary text */
    for (size_t i = 0; i < len && s == TQP_OK;) {
        const added_token *a = t->n_added ? added_at(t, text, len, i) : NULL;
        if (!a) {
            i++;
            continue;
        }
        size_t end_text = i, next = i + a->len;
        if (a->lstrip)
            while (end_text > seg && is_space(text[end_text - 1])) end_text--;
        if (a->rstrip)
            while (next < len && is_space(text[next])) next++;
        s = encode_segment(t, &w, &pc, text + seg, end_text - seg, seg == 0, &out);
        if (s == TQP_OK && !ids_add(&out, (uint32_t)a->id)) s = nomem();
        i = seg = next;
    }
    if (s == TQP_OK) s = encode_segment(t, &w, &pc, text + seg, len - seg, seg == 0, &out);
    for (int k = 0; special && k < t->n_suffix && s == TQP_OK; k++)
        if (!ids_add(&out, (uint32_t)t->suffix[k])) s = nomem();
    free(w.id), free(w.prev), free(w.next), free(w.heap);
    cache_free(&pc);
    if (s != TQP_OK) {
        free(out.v);
        return s;
    }
    *ids = out.v ? out.v : malloc(sizeof(uint32_t));
    *n = out.n;
    return *ids ? TQP_OK : nomem();
}

tqp_status tqp_hftok_decode(const tqp_hftok *t, uint32_t id, char *out, size_t cap, size_t *len)
{
    size_t n = 0, o = 0;
    const char *p = id < (uint32_t)t->n_ids ? sm_str(&t->vocab, (int)id, &n) : NULL;
    *len = 0;
    if (!p) return tqp_error_set(TQP_EINPUT, "%s: no token with id %u", t->path, id);
    int added = 0;
    for (int k = 0; k < t->n_added; k++) added |= t->added[k].id == (int)id;
    if (added || (!t->byte_level && !(n == 6 && !strncmp(p, "<0x", 3) && p[5] == '>'))) {
        /* verbatim, with the metaspace mark (U+2581) read as a space */
        for (size_t i = 0; i < n && o < cap; i++) {
            if (!added && i + 2 < n && !memcmp(p + i, "\xe2\x96\x81", 3)) {
                out[o++] = ' ';
                i += 2;
            } else {
                out[o++] = p[i];
            }
        }
    } else if (!t->byte_level) { /* byte fallback <0xXX> */
        unsigned v;
        if (sscanf(p, "<0x%02X>", &v) == 1 && cap) out[o++] = (char)v;
    } else { /* byte-level: every character is one byte of the GPT-2 alphabet */
        const unsigned char *u = (const unsigned char *)p;
        for (size_t i = 0; i < n && o < cap;) {
            size_t k = utf8_seq(u + i, n - i);
            unsigned cp = k == 1 ? u[i] : k == 2 ? (u[i] & 31u) << 6 | (u[i + 1] & 63u)
                                              : 0xFFFFu;
            int b = char_byte(cp);
            if (b < 0) return tqp_error_set(TQP_EINPUT, "%s: token %u is not byte-level text",
                                            t->path, id);
            out[o++] = (char)b;
            i += k ? k : 1;
        }
    }
    if (o == cap) return tqp_error_set(TQP_EINPUT, "%s: token %u is too long", t->path, id);
    *len = o;
    return TQP_OK;
}
