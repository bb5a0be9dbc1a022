/* Tests for the tokenizer.json reader and encoder on small hand-made files: BPE against a naive
 * O(n^2) reference (apply the lowest-ranked adjacent pair, leftmost first, until none is left)
 * on random texts and random merges, over characters and over byte-level symbols; byte fallback,
 * the unknown token, added tokens with lstrip/rstrip, the post-processor's template, the
 * normalizers; and the refusal, by name, of every model type, step or option not implemented.
 * (tests/test_hftok_ref_cli.sh compares real tokenizers with the reference library.) */
#include "tqp/hftok.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"

static char *dir;

static const char *write_json(const char *name, cJSON *doc)
{
    static char path[8][600];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, 600, "%s/%s", dir, name);
    char *txt = cJSON_PrintUnformatted(doc);
    CHECK(tu_write_file(p, txt, strlen(txt)) == 0);
    free(txt);
    cJSON_Delete(doc);
    return p;
}

/* A BPE tokenizer.json: vocab tokens[0..n) with ids 0..n-1, merges as "a b" strings. */
static cJSON *bpe_doc(char **tokens, int n, char (*merges)[2][64], int nm)
{
    cJSON *doc = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(doc, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int i = 0; i < n; i++) cJSON_AddNumberToObject(vocab, tokens[i], i);
    cJSON *m = cJSON_AddArrayToObject(model, "merges");
    for (int i = 0; i < nm; i++) {
        char s[130];
        snprintf(s, sizeof s, "%s %s", merges[i][0], merges[i][1]);
        cJSON_AddItemToArray(m, cJSON_CreateString(s));
    }
    cJSON_AddArrayToObject(doc, "added_tokens");
    return doc;
}

/* ---- the naive reference ---- */

typedef struct {
    char s[512][64];
    int n;
} syms;

static int merge_rank(char (*merges)[2][64], int nm, const char *a, const char *b)
{
    for (int r = 0; r < nm; r++)
        if (!strcmp(merges[r][0], a) && !strcmp(merges[r][1], b)) return r;
    return -1;
}

static void naive_bpe(syms *w, char (*merges)[2][64], int nm)
{
    for (;;) {
        int best = -1, at = -1;
        for (int i = 0; i + 1 < w->n; i++) {
            int r = merge_rank(merges, nm, w->s[i], w->s[i + 1]);
            if (r >= 0 && (best < 0 || r < best)) best = r, at = i;
        }
        if (at < 0) return;
        strcat(w->s[at], w->s[at + 1]);
        memmove(w->s[at + 1], w->s[at + 2], sizeof w->s[0] * (size_t)(w->n - at - 2));
        w->n--;
    }
}

static int vocab_id(char **tokens, int n, const char *s)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(tokens[i], s)) return i;
    return -1;
}

/* The encoder's ids for text equal the naive BPE of its initial symbols w (no special tokens
   are configured by the random tests). */
static int same_as_naive(const tqp_hftok *t, const char *text, size_t len, syms *w,
                         char (*merges)[2][64], int nm, char **tokens, int n)
{
    naive_bpe(w, merges, nm);
    uint32_t *ids = NULL;
    size_t got = 0;
    CHECK(tqp_hftok_encode(t, text, len, 1, &ids, &got) == TQP_OK);
    int same = ids && got == (size_t)w->n;
    for (int i = 0; same && i < w->n; i++) same = (int)ids[i] == vocab_id(tokens, n, w->s[i]);
    free(ids);
    return same;
}

/* Random merges over an alphabet: each merge joins two existing tokens into a new one (or one
 * already there), as BPE training would. */
static void random_merges(uint64_t *rng, char **tokens, int *n, char (*merges)[2][64], int nm)
{
    for (int r = 0; r < nm; r++) {
        const char *a, *b;
        do {
            a = tokens[tu_next(rng) % (uint64_t)*n];
            b = tokens[tu_next(rng) % (uint64_t)*n];
        } while (strlen(a) + strlen(b) >= 60);
        snprintf(merges[r][0], 64, "%s", a);
        snprintf(merges[r][1], 64, "%s", b);
        char joined[128];
        snprintf(joined, sizeof joined, "%s%s", a, b);
        if (vocab_id(tokens, *n, joined) < 0) tokens[(*n)++] = strdup(joined);
    }
}

/* Decoding every id of the encoded text gives the text back, byte for byte. */
static int decodes_back(const tqp_hftok *t, const char *text, size_t len)
{
    uint32_t *ids = NULL;
    size_t nid = 0, got = 0, pl;
    char back[600], piece[256];
    int ok = tqp_hftok_encode(t, text, len, 0, &ids, &nid) == TQP_OK;
    for (size_t i = 0; ok && i < nid; i++) {
        ok = tqp_hftok_decode(t, ids[i], piece, sizeof piece, &pl) == TQP_OK &&
             got + pl <= sizeof back;
        if (ok) memcpy(back + got, piece, pl), got += pl;
    }
    free(ids);
    return ok && got == len && !memcmp(back, text, len);
}

static void test_char_bpe_random(void)
{
    uint64_t rng = 7;
    int fails = 0, decode_fails = 0;
    for (int trial = 0; trial < 40; trial++) {
        char *tokens[512];
        int n = 0;
        const char *alpha[] = {"a", "b", "c", "d", "\xc3\xa9"}; /* é: one character, 2 bytes */
        for (int i = 0; i < 5; i++) tokens[n++] = strdup(alpha[i]);
        static char merges[200][2][64];
        int nm = 10 + (int)(tu_next(&rng) % 100);
        random_merges(&rng, tokens, &n, merges, nm);
        const char *path = write_json("char.json", bpe_doc(tokens, n, merges, nm));
        tqp_hftok *t = NULL;
        CHECK_MSG(tqp_hftok_load(path, &t) == TQP_OK, "%s", tqp_error_message());
        for (int k = 0; t && k < 20; k++) {
            char text[400];
            size_t len = 0;
            syms w = {.n = 0};
            int chars = 1 + (int)(tu_next(&rng) % 150);
            for (int i = 0; i < chars; i++) {
                const char *c = alpha[tu_next(&rng) % 5];
                memcpy(text + len, c, strlen(c));
                len += strlen(c);
                snprintf(w.s[w.n++], 64, "%s", c);
            }
            fails += !same_as_naive(t, text, len, &w, merges, nm, tokens, n);
            decode_fails += !decodes_back(t, text, len);
        }
        tqp_hftok_destroy(&t);
        for (int i = 0; i < n; i++) free(tokens[i]);
    }
    CHECK_MSG(fails == 0, "%d of 800 random texts differ from the naive BPE", fails);
    CHECK_MSG(decode_fails == 0, "%d of 800 random texts do not decode back", decode_fails);
}

/* The GPT-2 byte-level alphabet, as in the Hugging Face tokenizers. */
static void byte_symbol(int b, char out[4])
{
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = b;
    if (!printable) {
        int k = 0;
        for (int c = 0; c < b; c++)
            k += !((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255));
        cp = 256 + k;
    }
    if (cp < 0x80)
        out[0] = (char)cp, out[1] = 0;
    else
        out[0] = (char)(0xc0 | cp >> 6), out[1] = (char)(0x80 | (cp & 63)), out[2] = 0;
}

static void test_byte_level_random(void)
{
    uint64_t rng = 11;
    int fails = 0, decode_fails = 0;
    const unsigned char bytes[] = {'a', 'b', ' ', 0xc3, 0xa9, '\n', 0x00};
    for (int trial = 0; trial < 20; trial++) {
        char *tokens[700];
        int n = 0;
        for (int b = 0; b < 256; b++) {
            char s[4];
            byte_symbol(b, s);
            tokens[n++] = strdup(s);
        }
        /* merges among the symbols of the bytes used */
        char *used[8];
        for (int i = 0; i < 7; i++) used[i] = tokens[bytes[i]];
        static char merges[200][2][64];
        int nm = 20 + (int)(tu_next(&rng) % 80), base = n;
        char **pool = malloc(sizeof *pool * 700);
        int np = 0;
        for (int i = 0; i < 7; i++) pool[np++] = used[i];
        for (int r = 0; r < nm; r++) {
            const char *a = pool[tu_next(&rng) % (uint64_t)np], *b = pool[tu_next(&rng) % (uint64_t)np];
            if (strlen(a) + strlen(b) >= 60) {
                r--;
                continue;
            }
            snprintf(merges[r][0], 64, "%s", a);
            snprintf(merges[r][1], 64, "%s", b);
            char joined[128];
            snprintf(joined, sizeof joined, "%s%s", a, b);
            if (vocab_id(tokens, n, joined) < 0) {
                tokens[n++] = strdup(joined);
                pool[np++] = tokens[n - 1];
            }
        }
        cJSON *doc = bpe_doc(tokens, n, merges, nm);
        cJSON *pre = cJSON_AddObjectToObject(doc, "pre_tokenizer");
        cJSON_AddStringToObject(pre, "type", "ByteLevel");
        cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
        cJSON_AddBoolToObject(pre, "use_regex", 0);
        const char *path = write_json("bytes.json", doc);
        tqp_hftok *t = NULL;
        CHECK_MSG(tqp_hftok_load(path, &t) == TQP_OK, "%s", tqp_error_message());
        for (int k = 0; t && k < 20; k++) {
            char text[300];
            syms w = {.n = 0};
            size_t len = 0;
            int count = 1 + (int)(tu_next(&rng) % 120);
            for (int i = 0; i < count; i++) {
                int j = (int)(tu_next(&rng) % 6); /* no NUL in most texts */
                if (j == 3) { /* é as its two bytes, kept together: the text stays UTF-8 */
                    text[len++] = (char)0xc3, text[len++] = (char)0xa9;
                    snprintf(w.s[w.n++], 64, "%s", used[3]);
                    snprintf(w.s[w.n++], 64, "%s", used[4]);
                } else {
                    j = j == 4 ? 6 : j; /* 4: the NUL byte */
                    text[len++] = (char)bytes[j];
                    snprintf(w.s[w.n++], 64, "%s", used[j]);
                }
            }
            fails += !same_as_naive(t, text, len, &w, merges, nm, tokens, n);
            decode_fails += !decodes_back(t, text, len);
        }
        tqp_hftok_destroy(&t);
        free(pool);
        for (int i = 0; i < n; i++) free(tokens[i]);
        (void)base;
    }
    CHECK_MSG(fails == 0, "%d of 400 random byte texts differ from the naive BPE", fails);
    CHECK_MSG(decode_fails == 0, "%d of 400 random byte texts do not decode back", decode_fails);
}

static uint32_t *encode(const tqp_hftok *t, const char *text, size_t *n)
{
    uint32_t *ids = NULL;
    tqp_status s = tqp_hftok_encode(t, text, strlen(text), 1, &ids, n);
    CHECK_MSG(s == TQP_OK, "'%s': %s", text, tqp_error_message());
    return ids;
}

static int ids_are(const uint32_t *ids, size_t n, const int *want, size_t nw)
{
    if (!ids || n != nw) return 0;
    for (size_t i = 0; i < n; i++)
        if ((int)ids[i] != want[i]) return 0;
    return 1;
}

/* Character BPE with the metaspace normalizers, byte fallback, added tokens and a template. */
static void test_features(void)
{
    char *tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab",
                      "<0x7A>", "<0xE2>", "<0x82>", "<0xAC>", "<0x20>"};
    /* ids:             0        1      2       3 (▁)           4    5    6 (▁a)             7 */
    char merges[2][2][64] = {{"\xe2\x96\x81", "a"}, {"a", "b"}};
    cJSON *doc = bpe_doc(tokens, 13, merges, 2);
    cJSON *model = cJSON_GetObjectItem(doc, "model");
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddItemToObject(doc, "normalizer",
                          cJSON_Parse("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
                                      "\"prepend\":\"\xe2\x96\x81\"},{\"type\":\"Replace\",\"pattern\""
                                      ":{\"String\":\" \"},\"content\":\"\xe2\x96\x81\"}]}"));
    cJSON *added = cJSON_GetObjectItem(doc, "added_tokens");
    cJSON_AddItemToArray(added, cJSON_Parse("{\"id\":1,\"content\":\"<s>\",\"special\":true}"));
    cJSON_AddItemToArray(added, cJSON_Parse("{\"id\":2,\"content\":\"</s>\",\"special\":true,"
                                            "\"lstrip\":true,\"rstrip\":true}"));
    cJSON_AddItemToObject(
        doc, "post_processor",
        cJSON_Parse("{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\"}},"
                    "{\"Sequence\":{\"id\":\"A\"}},{\"SpecialToken\":{\"id\":\"</s>\"}}],"
                    "\"special_tokens\":{\"<s>\":{\"ids\":[1]},\"</s>\":{\"ids\":[2]}}}"));
    const char *path = write_json("feat.json", doc);
    tqp_hftok *t = NULL;
    CHECK_MSG(tqp_hftok_load(path, &t) == TQP_OK, "%s", tqp_error_message());
    if (!t) return;
    CHECK(tqp_hftok_vocab_size(t) == 13);
    size_t n;
    uint32_t *ids = encode(t, "ab a", &n); /* ▁ab▁a: ▁a then b, then ▁a */
    CHECK_MSG(ids_are(ids, n, (int[]){1, 6, 5, 6, 2}, 5), "got %zu ids", n);
    free(ids);
    ids = encode(t, "az\xe2\x82\xac", &n); /* z and € are not in the vocabulary: their bytes */
    CHECK(ids_are(ids, n, (int[]){1, 6, 8, 9, 10, 11, 2}, 7));
    free(ids);
    ids = encode(t, "a  </s>  b", &n); /* </s> strips the spaces on both sides */
    CHECK(ids_are(ids, n, (int[]){1, 6, 2, 3, 5, 2}, 6));
    free(ids);
    ids = encode(t, "<s>", &n);
    CHECK(ids_are(ids, n, (int[]){1, 1, 2}, 3));
    free(ids);
    uint32_t *raw = NULL;
    CHECK(tqp_hftok_encode(t, "ab", 2, 0, &raw, &n) == TQP_OK && n == 2 && raw[0] == 6 &&
          raw[1] == 5); /* without the template */
    free(raw);
    CHECK(tqp_hftok_encode(t, "a\xff", 2, 1, &raw, &n) == TQP_EINPUT &&
          strstr(tqp_error_message(), "not UTF-8 at byte 1"));
    tqp_hftok_destroy(&t);

    /* no byte fallback: the unknown token, consecutive ones fused */
    doc = bpe_doc(tokens, 8, merges, 2);
    model = cJSON_GetObjectItem(doc, "model");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    CHECK(tqp_hftok_load(write_json("unk.json", doc), &t) == TQP_OK);
    if (t) {
        ids = encode(t, "azzb", &n);
        CHECK(ids_are(ids, n, (int[]){4, 0, 5}, 3));
        free(ids);
        tqp_hftok_destroy(&t);
    }
}

static void test_normalizers(void)
{
    /* NFC composes e + combining acute into é; NFKC also folds the ligature fi */
    char *tokens[] = {"\xc3\xa9", "e", "\xcc\x81", "f", "i", "\xef\xac\x81"};
    const char *forms[] = {"NFC", "NFKC", "NFD"};
    int want[3][3] = {{0, 5, -1}, {0, 3, 4}, {1, 2, 5}};
    for (int f = 0; f < 3; f++) {
        cJSON *doc = bpe_doc(tokens, 6, NULL, 0);
        cJSON *norm = cJSON_AddObjectToObject(doc, "normalizer");
        cJSON_AddStringToObject(norm, "type", forms[f]);
        tqp_hftok *t = NULL;
        CHECK(tqp_hftok_load(write_json("nfc.json", doc), &t) == TQP_OK);
        if (!t) continue;
        size_t n;
        uint32_t *ids = encode(t, "e\xcc\x81\xef\xac\x81", &n);
        int nw = want[f][2] < 0 ? 2 : 3;
        CHECK_MSG(ids_are(ids, n, want[f], (size_t)nw), "%s: %zu ids", forms[f], n);
        free(ids);
        tqp_hftok_destroy(&t);
    }
}

/* Each unsupported feature is refused when loading, naming it and the file. */
static void test_refusals(void)
{
    struct {
        const char *key, *json, *needle;
    } cases[] = {
        {"model", "{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}", "model type WordPiece is not supported"},
        {"model", "{\"type\":\"Unigram\",\"vocab\":[]}", "model type Unigram"},
        {"pre_tokenizer", "{\"type\":\"Whitespace\"}", "pre-tokenizer Whitespace is not supported"},
        {"pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\"}",
         "Split behavior Removed"},
        {"pre_tokenizer", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}",
         "pre-tokenizer regex"},
        {"normalizer", "{\"type\":\"Lowercase\"}", "normalizer Lowercase is not supported"},
        {"normalizer", "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\" \"}",
         "Replace with a pattern other than a string"},
        {"post_processor", "{\"type\":\"RobertaProcessing\"}", "post-processor RobertaProcessing"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *tokens[] = {"a", "b", "ab"};
        char merges[1][2][64] = {{"a", "b"}};
        cJSON *doc = bpe_doc(tokens, 3, merges, 1);
        cJSON_DeleteItemFromObject(doc, cases[k].key);
        cJSON_AddItemToObject(doc, cases[k].key, cJSON_Parse(cases[k].json));
        const char *path = write_json("bad.json", doc);
        tqp_hftok *t = NULL;
        tqp_status s = tqp_hftok_load(path, &t);
        CHECK_MSG(s == TQP_EINPUT && strstr(tqp_error_message(), cases[k].needle) &&
                      strstr(tqp_error_message(), "bad.json"),
                  "%s: status %d, '%s'", cases[k].needle, s, tqp_error_message());
        tqp_hftok_destroy(&t);
    }
    /* a merge that names a token not in the vocabulary; a dropout; not JSON */
    char *tokens[] = {"a", "b"};
    char merges[1][2][64] = {{"a", "b"}};
    tqp_hftok *t = NULL;
    CHECK(tqp_hftok_load(write_json("m.json", bpe_doc(tokens, 2, merges, 1)), &t) == TQP_EINPUT &&
          strstr(tqp_error_message(), "merge 0 (a + b) names a token not in the vocabulary"));
    cJSON *doc = bpe_doc(tokens, 2, NULL, 0);
    cJSON_AddNumberToObject(cJSON_GetObjectItem(doc, "model"), "dropout", 0.1);
    CHECK(tqp_hftok_load(write_json("d.json", doc), &t) == TQP_EINPUT &&
          strstr(tqp_error_message(), "dropout"));
    char path[600];
    snprintf(path, sizeof path, "%s/x.json", dir);
    tu_write_file(path, "{\"model\": ", 10);
    CHECK(tqp_hftok_load(path, &t) == TQP_EINPUT && strstr(tqp_error_message(), "x.json"));
    snprintf(path, sizeof path, "%s/none", dir);
    CHECK(tqp_hftok_load(path, &t) == TQP_ENOENT && strstr(tqp_error_message(), "none"));
}

int main(void)
{
    dir = tu_mkdtemp();
    test_char_bpe_random();
    test_byte_level_random();
    test_features();
    test_normalizers();
    test_refusals();
    tu_rmdir(dir);
    return check_done();
}
