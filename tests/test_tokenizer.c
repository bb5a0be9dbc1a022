/* Tests for the llama2.c tokenizer: the O(n log n) encoder is compared id for id against a
 * naive reference that follows llama2.c's O(n^2) encode() literally, plus known ids for the
 * bundled model, exact merge-order corner cases, and rejection of malformed files. */
#include "tqp/tokenizer.h"

#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* ---- helpers --------------------------------------------------------------------------- */

static char *temp_paths[64]; // (ntemp) created temporary files, owned, unlinked at the end
static int ntemp;

/* Write `n` bytes to a new temporary file and return its path (removed by cleanup()). */
static const char *temp_file(const void *data, size_t n)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/tqp_tok_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0 || ntemp == 64) {
        fprintf(stderr, "cannot create a temporary file in %s\n", path);
        exit(1);
    }
    ssize_t w = n ? write(fd, data, n) : 0;
    close(fd);
    CHECK(w == (ssize_t)n);
    temp_paths[ntemp] = strdup(path);
    return temp_paths[ntemp++];
}

static void cleanup(void)
{
    for (int i = 0; i < ntemp; i++) {
        CHECK_MSG(unlink(temp_paths[i]) == 0, "cannot remove %s", temp_paths[i]);
        free(temp_paths[i]);
    }
    ntemp = 0;
}

/* Read a whole file (exits on failure: the shared data must be there). */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    fclose(f);
    buf[got] = '\0';
    *len = got;
    return buf;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* ---- naive reference: llama2.c's encode(), step by step -------------------------------- */

typedef struct {
    int n;
    char **piece; // (n) piece bytes, owned
    int *plen;    // (n) piece lengths
    float *score; // (n) merge scores
    int *sorted;  // (n) ids sorted by (bytes, id)
    int *pair;    // (n * n) memo of concat lookups: id, -1 = absent, -2 = not computed yet
} ref_vocab;

static const ref_vocab *sort_vocab; // for qsort's comparator

static int cmp_bytes(const char *a, int na, const char *b, int nb)
{
    int c = memcmp(a, b, (size_t)(na < nb ? na : nb));
    return c ? c : (na > nb) - (na < nb);
}

static int cmp_ids(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    const ref_vocab *v = sort_vocab;
    int c = cmp_bytes(v->piece[a], v->plen[a], v->piece[b], v->plen[b]);
    return c ? c : (a > b) - (a < b);
}

/* Lowest id whose piece equals s[0..n), or -1 (binary search for the first match). */
static int ref_lookup(const ref_vocab *v, const char *s, int n)
{
    int lo = 0, hi = v->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2, id = v->sorted[mid];
        if (cmp_bytes(v->piece[id], v->plen[id], s, n) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == v->n) return -1;
    int id = v->sorted[lo];
    return cmp_bytes(v->piece[id], v->plen[id], s, n) == 0 ? id : -1;
}

static int ref_pair(const ref_vocab *v, int a, int b)
{
    int *memo = &v->pair[(size_t)a * (size_t)v->n + (size_t)b];
    if (*memo == -2) {
        char buf[512];
        memcpy(buf, v->piece[a], (size_t)v->plen[a]);
        memcpy(buf + v->plen[a], v->piece[b], (size_t)v->plen[b]);
        *memo = ref_lookup(v, buf, v->plen[a] + v->plen[b]);
    }
    return *memo;
}

static void ref_load(ref_vocab *v, const char *path, int n)
{
    size_t len;
    char *buf = slurp(path, &len), *p = buf + 4;
    v->n = n;
    v->piece = malloc((size_t)n * sizeof *v->piece);
    v->plen = malloc((size_t)n * sizeof *v->plen);
    v->score = malloc((size_t)n * sizeof *v->score);
    v->sorted = malloc((size_t)n * sizeof *v->sorted);
    for (int i = 0; i < n; i++) {
        memcpy(&v->score[i], p, 4);
        memcpy(&v->plen[i], p + 4, 4);
        v->piece[i] = malloc((size_t)v->plen[i] + 1);
        memcpy(v->piece[i], p + 8, (size_t)v->plen[i]);
        p += 8 + v->plen[i];
        v->sorted[i] = i;
    }
    free(buf);
    sort_vocab = v;
    qsort(v->sorted, (size_t)n, sizeof *v->sorted, cmp_ids);
    v->pair = malloc((size_t)n * (size_t)n * sizeof *v->pair);
    for (size_t i = 0; i < (size_t)n * (size_t)n; i++)
        v->pair[i] = -2;
}

static void ref_free(ref_vocab *v)
{
    for (int i = 0; i < v->n; i++)
        free(v->piece[i]);
    free(v->piece);
    free(v->plen);
    free(v->score);
    free(v->sorted);
    free(v->pair);
}

/* One pass of llama2.c's merge loop: merge the best pair; 0 when there is none. */
static int ref_merge_once(const ref_vocab *v, int *tok, size_t *n)
{
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_idx = 0;
    for (size_t i = 0; i + 1 < *n; i++) {
        int id = ref_pair(v, tok[i], tok[i + 1]);
        if (id != -1 && v->score[id] > best_score) {
            best_score = v->score[id];
            best_id = id;
            best_idx = i;
        }
    }
    if (best_id == -1) return 0;
    tok[best_idx] = best_id;
    for (size_t i = best_idx + 1; i + 1 < *n; i++)
        tok[i] = tok[i + 1];
    (*n)--;
    return 1;
}

/* llama2.c's code-point split (no BOS, no dummy prefix), appended at tok[n].  Returns the
 * new count. */
static size_t ref_split(const ref_vocab *v, const char *text, size_t len, int *tok, size_t n)
{
    char buf[8];
    int blen = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)text[i] & 0xC0) != 0x80) blen = 0;
        buf[blen++] = text[i];
        if (i + 1 < len && ((unsigned char)text[i + 1] & 0xC0) == 0x80 && blen < 4) continue;
        int id = ref_lookup(v, buf, blen);
        if (id != -1)
            tok[n++] = id;
        else
            for (int j = 0; j < blen; j++)
                tok[n++] = (unsigned char)buf[j] + 3;
        blen = 0;
    }
    return n;
}

/* llama2.c's encode(): tok needs room for len + 3 ids.  Returns the count. */
static size_t ref_encode(const ref_vocab *v, const char *text, size_t len, int bos, int eos,
                         int *tok)
{
    size_t n = 0;
    if (bos) tok[n++] = 1;
    if (len) tok[n++] = ref_lookup(v, " ", 1);
    n = ref_split(v, text, len, tok, n);
    while (ref_merge_once(v, tok, &n)) {
    }
    if (eos) tok[n++] = 2;
    return n;
}

/* ref_encode(bos = 1, eos = 0) of a long text, line by line: valid only when "\n" is not a
 * piece (so it becomes byte token 13) and no merge can involve token 13 (checked by
 * newline_is_a_wall()), since then merges never cross a newline. */
static size_t ref_encode_lines(const ref_vocab *v, const char *text, size_t len, int *tok)
{
    size_t n = 0, start = 0;
    tok[n++] = 1;
    tok[n++] = ref_lookup(v, " ", 1);
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != '\n') continue;
        size_t seg = ref_split(v, text + start, i - start, tok + n, 0);
        size_t from = start == 0 ? 0 : n; // the first line merges with BOS and the prefix
        seg += n - from;
        while (ref_merge_once(v, tok + from, &seg)) {
        }
        n = from + seg;
        if (i < len) tok[n++] = 13;
        start = i + 1;
    }
    return n;
}

/* Whether merges can never cross a newline in this vocabulary (see ref_encode_lines). */
static int newline_is_a_wall(const ref_vocab *v)
{
    if (ref_lookup(v, "\n", 1) != -1 || v->plen[13] != 6 || memcmp(v->piece[13], "<0x0A>", 6))
        return 0;
    for (int id = 0; id < v->n; id++) {
        if (id == 13) continue;
        if (v->plen[id] == 0) return 0; // "" + "<0x0A>" would be a piece
        for (int k = 0; k + 6 <= v->plen[id]; k++)
            if (memcmp(v->piece[id] + k, "<0x0A>", 6) == 0) return 0;
    }
    return 1;
}

/* Compare a whole file's encoding with the line-by-line naive reference. */
static void agree_lines(const tqp_tokenizer *t, const ref_vocab *v, const char *text, size_t len,
                        const char *what)
{
    CHECK_MSG(newline_is_a_wall(v), "%s: cannot compare line by line", what);
    uint32_t *got = NULL;
    size_t ngot = 0, i = 0;
    tqp_status st = tqp_tokenizer_encode(t, text, len, 1, 0, &got, &ngot);
    int *want = malloc((len + 3) * sizeof *want);
    size_t nwant = ref_encode_lines(v, text, len, want);
    while (st == TQP_OK && i < ngot && i < nwant && got[i] == (uint32_t)want[i])
        i++;
    CHECK_MSG(st == TQP_OK && ngot == nwant && i == nwant,
              "%s: %zu vs %zu tokens, first difference at %zu", what, ngot, nwant, i);
    free(got);
    free(want);
}

/* Encode with both encoders and compare; returns 1 when they agree. */
static int agree(const tqp_tokenizer *t, const ref_vocab *v, const char *text, size_t len, int bos,
                 int eos, const char *what)
{
    uint32_t *got = NULL;
    size_t ngot = 0;
    tqp_status st = tqp_tokenizer_encode(t, text, len, bos, eos, &got, &ngot);
    int *want = malloc((len + 3) * sizeof *want);
    size_t nwant = ref_encode(v, text, len, bos, eos, want);
    size_t i = 0;
    while (st == TQP_OK && i < ngot && i < nwant && got[i] == (uint32_t)want[i])
        i++;
    int ok = st == TQP_OK && ngot == nwant && i == nwant;
    CHECK_MSG(ok, "%s (bos %d eos %d): status %d (%s), %zu vs %zu tokens, first difference at %zu",
              what, bos, eos, (int)st, st ? tqp_error_message() : "", ngot, nwant, i);
    free(got);
    free(want);
    return ok;
}

/* ---- tests with the bundled tokenizer -------------------------------------------------- */

static void test_pieces(const tqp_tokenizer *t)
{
    size_t n = 0;
    CHECK(tqp_tokenizer_vocab_size(t) == 512);
    CHECK(strcmp(tqp_tokenizer_piece(t, 0, &n), "<unk>") == 0 && n == 5);
    CHECK(strcmp(tqp_tokenizer_piece(t, 1, NULL), "\n<s>\n") == 0);
    CHECK(strcmp(tqp_tokenizer_piece(t, 2, NULL), "\n</s>\n") == 0);
    CHECK(strcmp(tqp_tokenizer_piece(t, 13, &n), "<0x0A>") == 0 && n == 6);
    CHECK(strcmp(tqp_tokenizer_piece(t, 259, &n), " t") == 0 && n == 2);
}

static void test_strings(const tqp_tokenizer *t, const ref_vocab *v)
{
    static const char *const texts[] = {
        "Once upon a time, there was a little girl named Lily.",
        "Hello world",
        " leading space",
        "trailing space ",
        "  double  spaces  ",
        "a",
        " ",
        "\n",
        "line one\nline two\n\nline four\n",
        "The quick brown fox jumps over the lazy dog.",
        "héllo wörld — ☃ 日本語 😀",
        "\x01\x7f",
        "\xff\xfe abc",
        "\x80",
        "a\x80\x62 \x80\x80\x80\x80\x80\x80 c",
        "\xe6\x97",
        "\xf0\x9f\x98\x80\x80\x80",
        "<0x0A>",
        "x<0x0A>y <0x41> <0xZZ> <0x",
        "<s></s><unk>\n<s>\n",
        "\t\r\n\x1b[0m",
        "She said, \"I'm happy!\" and they played all day.",
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        for (int k = 0; k < 4; k++)
            agree(t, v, texts[i], strlen(texts[i]), k & 1, k >> 1, texts[i]);
    }
}

static void test_empty(const tqp_tokenizer *t)
{
    uint32_t *ids = NULL;
    size_t n = 99;
    CHECK(tqp_tokenizer_encode(t, "", 0, 1, 0, &ids, &n) == TQP_OK && n == 1 && ids[0] == 1);
    free(ids);
    CHECK(tqp_tokenizer_encode(t, NULL, 0, 0, 0, &ids, &n) == TQP_OK && n == 0);
    free(ids);
    CHECK(tqp_tokenizer_encode(t, "", 0, 1, 1, &ids, &n) == TQP_OK && n == 2 && ids[0] == 1 &&
          ids[1] == 2);
    free(ids);
    CHECK(tqp_tokenizer_encode(t, "", 0, 0, 1, &ids, &n) == TQP_OK && n == 1 && ids[0] == 2);
    free(ids);
}

static void test_nul(const tqp_tokenizer *t)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    tqp_status st = tqp_tokenizer_encode(t, "ab\0cd", 5, 1, 0, &ids, &n);
    CHECK(st == TQP_EINPUT && ids == NULL && n == 0);
    CHECK_MSG(contains(tqp_error_message(), "NUL byte at offset 2"), "%s", tqp_error_message());
}

/* Append one random element (vocab piece, byte, code point or whitespace) to s. */
static size_t random_element(const ref_vocab *v, char *s)
{
    static const char *const cps[] = {"é", "ö", "—", "☃", "日", "😀", "\xe6\x97", "\x80", "<0x"};
    uint32_t r = rnd(10);
    if (r < 5) {
        int id = (int)rnd((uint32_t)v->n);
        memcpy(s, v->piece[id], (size_t)v->plen[id]);
        return (size_t)v->plen[id];
    }
    if (r < 7) {
        s[0] = (char)(1 + rnd(255));
        return 1;
    }
    const char *c = r < 8 ? cps[rnd(9)] : (r < 9 ? " " : "\n");
    memcpy(s, c, strlen(c));
    return strlen(c);
}

static void test_random(const tqp_tokenizer *t, const ref_vocab *v, int count)
{
    char s[2048];
    int bad = 0;
    for (int i = 0; i < count && bad < 5; i++) {
        size_t len = 0, k = rnd(40);
        for (size_t j = 0; j < k; j++)
            len += random_element(v, s + len);
        char what[64];
        snprintf(what, sizeof what, "random string %d", i);
        bad += !agree(t, v, s, len, (int)rnd(2), (int)rnd(2), what);
    }
}

static void test_tinystories(const tqp_tokenizer *t, const ref_vocab *v)
{
    size_t len;
    char *text = slurp(data_path("text/tinystories_eval.txt"), &len);
    agree(t, v, text, len < 20000 ? len : 20000, 1, 0, "tinystories_eval.txt, first 20 KB");
    agree_lines(t, v, text, len, "tinystories_eval.txt, line by line");
    static const uint32_t head[] = {1,   368, 290, 421, 422, 381, 329, 302,
                                    278, 347, 433, 299, 387, 261, 418, 435};
    uint32_t *ids = NULL;
    size_t n = 0;
    CHECK(tqp_tokenizer_encode(t, text, len, 1, 0, &ids, &n) == TQP_OK);
    CHECK_MSG(n == 158223, "tinystories_eval.txt: %zu tokens", n);
    CHECK(n >= 16 && memcmp(ids, head, sizeof head) == 0);
    free(ids);
    free(text);
}

static void test_wikitext(const tqp_tokenizer *t, const ref_vocab *v)
{
    size_t len;
    char *text = slurp(data_path("text/wikitext2_test.raw"), &len);
    uint32_t *ids = NULL;
    size_t n = 0;
    double t0 = now();
    tqp_status st = tqp_tokenizer_encode(t, text, len, 1, 0, &ids, &n);
    double dt = now() - t0;
    CHECK(st == TQP_OK && n > 0);
    printf("wikitext2_test.raw: %zu bytes -> %zu tokens in %.3f s\n", len, n, dt);
    free(ids);
    agree(t, v, text, len < 30000 ? len : 30000, 1, 0, "wikitext2_test.raw, first 30 KB");
    agree_lines(t, v, text, len, "wikitext2_test.raw, line by line");
    free(text);
}

static void load_fails(const char *path, int vocab, tqp_status want, const char *why);

/* ---- merge-order corner cases on a hand-made vocabulary -------------------------------- */

typedef struct {
    const char *piece;
    float score;
} entry;

/* Serialize a tokenizer file: unk, BOS, EOS, the 256 byte tokens if `bytes`, then `extra`. */
static const char *write_vocab(const entry *extra, int nextra, int bytes, int *vocab)
{
    static char buf[65536];
    size_t off = 4;
    int32_t maxlen = 16;
    memcpy(buf, &maxlen, 4);
    int nbase = bytes ? 259 : 3;
    for (int i = 0; i < nbase + nextra; i++) {
        char tmp[16];
        const char *p = tmp;
        float s = 0.0f;
        if (i == 0)
            p = "<unk>";
        else if (i == 1)
            p = "\n<s>\n";
        else if (i == 2)
            p = "\n</s>\n";
        else if (i < nbase)
            snprintf(tmp, sizeof tmp, "<0x%02X>", i - 3);
        else
            p = extra[i - nbase].piece, s = extra[i - nbase].score;
        int32_t n = (int32_t)strlen(p);
        memcpy(buf + off, &s, 4);
        memcpy(buf + off + 4, &n, 4);
        memcpy(buf + off + 8, p, (size_t)n);
        off += 8 + (size_t)n;
    }
    *vocab = nbase + nextra;
    return temp_file(buf, off);
}

/* Encode text (no BOS/EOS) and compare with the expected pieces, given as ids. */
static void expect(const tqp_tokenizer *t, const ref_vocab *v, const char *text, const int *want,
                   size_t nwant)
{
    uint32_t *ids = NULL;
    size_t n = 0, i = 0;
    tqp_status st = tqp_tokenizer_encode(t, text, strlen(text), 0, 0, &ids, &n);
    while (st == TQP_OK && i < n && i < nwant && ids[i] == (uint32_t)want[i])
        i++;
    CHECK_MSG(st == TQP_OK && n == nwant && i == n, "\"%s\": %zu tokens, first difference at %zu",
              text, n, i);
    free(ids);
    agree(t, v, text, strlen(text), 0, 0, text);
}

static void test_corner_cases(void)
{
    const entry extra[] = {
        {" ", 0},    {"a", -100},  {"b", -100},     {"c", -100},    {"x", -100},
        {"y", -100}, {"z", -100},  {"p", -100},     {"q", -100},    {"r", -100},
        {"m", -100}, {"n", -100},  {"u", -100},     {"v", -100},    {"w", -100},
        {"ab", -1},  {"bc", -1},   {"xy", -0.0f},   {"yz", 0.0f},   {"pq", -1e10f},
        {"qr", -5},  {"mn", NAN},  {"uv", -3},      {"vw", -2},     {"uv", -1},
        {"aa", -4},  {"aaaa", -6}, {"abab", -0.5f}, {"\x80", -100}, {"\xf0\x9f\x98\x80", -100},
    };
    int vocab;
    const char *path = write_vocab(extra, (int)(sizeof extra / sizeof *extra), 1, &vocab);
    tqp_tokenizer *t = NULL;
    CHECK(tqp_tokenizer_load(path, vocab, &t) == TQP_OK);
    if (!t) return;
    ref_vocab v;
    ref_load(&v, path, vocab);
    int sp = 259, id_c = 262, id_z = 265, id_p = 266, id_q = 267, id_m = 269, id_n = 270;
    int id_u = 271, id_ab = 274, id_xy = 276, id_qr = 279, id_vw = 282, id_aa = 284;
    /* Equal scores: the leftmost pair merges first. */
    expect(t, &v, "abc", (int[]){sp, id_ab, id_c}, 3);
    /* -0 and +0 are equal scores too. */
    expect(t, &v, "xyz", (int[]){sp, id_xy, id_z}, 3);
    /* A score of -1e10 (or below) never merges; -5 does. */
    expect(t, &v, "pq", (int[]){sp, id_p, id_q}, 3);
    expect(t, &v, "pqr", (int[]){sp, id_p, id_qr}, 3);
    /* A NaN score never merges. */
    expect(t, &v, "mn", (int[]){sp, id_m, id_n}, 3);
    /* A duplicated piece resolves to its lowest id (score -3 here, not -1). */
    expect(t, &v, "uvw", (int[]){sp, id_u, id_vw}, 3);
    expect(t, &v, "uv", (int[]){sp, 281}, 2);
    /* Chains of merges: aa aa -> aaaa; ab ab -> abab. */
    expect(t, &v, "aaaa", (int[]){sp, 285}, 2);
    expect(t, &v, "aaa", (int[]){sp, id_aa, 260}, 3);
    expect(t, &v, "abab", (int[]){sp, 286}, 2);
    /* A code point is at most 4 bytes: further continuation bytes start a new one. */
    expect(t, &v, "\xf0\x9f\x98\x80\x80", (int[]){sp, 288, 287}, 3);
    expect(t, &v, "\x80\x80", (int[]){sp, 0x80 + 3, 0x80 + 3}, 3);
    char s[256];
    int bad = 0;
    for (int i = 0; i < 3000 && bad < 5; i++) {
        size_t len = rnd(60);
        for (size_t j = 0; j < len; j++)
            s[j] = "abcxyzpqrmnuvw \n\x80\xc3"[rnd(18)];
        s[len] = '\0';
        bad += !agree(t, &v, s, len, (int)rnd(2), (int)rnd(2), "random string, small vocab");
    }
    ref_free(&v);
    tqp_tokenizer_destroy(&t);
}

/* A vocabulary without " " cannot encode non-empty text, and one without byte tokens cannot
 * encode a byte that needs the fallback. */
static void test_tiny_vocab(void)
{
    const entry space[] = {{" ", 0}, {"a", -1}};
    int vocab;
    const char *path = write_vocab(space, 0, 1, &vocab);
    tqp_tokenizer *t = NULL;
    uint32_t *ids = NULL;
    size_t n = 0;
    CHECK(tqp_tokenizer_load(path, vocab, &t) == TQP_OK);
    CHECK(t && tqp_tokenizer_encode(t, "a", 1, 1, 0, &ids, &n) == TQP_EINPUT && !ids);
    CHECK_MSG(contains(tqp_error_message(), "no ' ' piece"), "%s", tqp_error_message());
    CHECK(t && tqp_tokenizer_encode(t, "", 0, 1, 0, &ids, &n) == TQP_OK && n == 1);
    free(ids);
    tqp_tokenizer_destroy(&t);
    CHECK(t == NULL);
    path = write_vocab(space, 2, 0, &vocab); // unk, BOS, EOS, " ", "a"
    load_fails(path, 4, TQP_EINPUT, "trailing bytes");
    CHECK(tqp_tokenizer_load(path, vocab, &t) == TQP_OK);
    CHECK(t && tqp_tokenizer_encode(t, "aa", 2, 1, 1, &ids, &n) == TQP_OK && n == 5);
    CHECK(n == 5 && ids[0] == 1 && ids[1] == 3 && ids[2] == 4 && ids[3] == 4 && ids[4] == 2);
    free(ids);
    ids = NULL;
    CHECK(t && tqp_tokenizer_encode(t, "ab", 2, 1, 0, &ids, &n) == TQP_EINPUT && !ids);
    CHECK_MSG(contains(tqp_error_message(), "byte 0x62 has no fallback token"), "%s",
              tqp_error_message());
    tqp_tokenizer_destroy(&t);
}

/* ---- malformed files ------------------------------------------------------------------- */

/* Load `path` expecting status `want` and a message naming the file and containing `why`. */
static void load_fails(const char *path, int vocab, tqp_status want, const char *why)
{
    tqp_tokenizer *t = (tqp_tokenizer *)&t; // must be reset to NULL
    tqp_status st = tqp_tokenizer_load(path, vocab, &t);
    const char *msg = tqp_error_message();
    CHECK_MSG(st == want && t == NULL, "%s: status %d: %s", path, (int)st, msg);
    CHECK_MSG(contains(msg, path) && contains(msg, why), "'%s' lacks '%s'", msg, why);
}

static void test_bad_tokenizer(void)
{
    size_t size;
    char *good = slurp(data_path("models/stories260K/tok512.bin"), &size);
    size_t cuts[] = {0, 2, 4, 4 + 5, 4 + 8 + 2, size / 2, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++)
        load_fails(temp_file(good, cuts[i]), 512, TQP_EINPUT, "truncated");
    size_t off = 4; // start of record 37
    for (int i = 0; i < 37; i++) {
        int32_t n;
        memcpy(&n, good + off + 4, 4);
        off += 8 + (size_t)n;
    }
    const char *path = temp_file(good, off + 5);
    char want[4200];
    snprintf(want, sizeof want, "%s: truncated: record 37 of 512 needs 8 bytes, 5 left", path);
    load_fails(path, 512, TQP_EINPUT, "record 37 of 512");
    CHECK_MSG(strcmp(tqp_error_message(), want) == 0, "%s", tqp_error_message());
    load_fails(temp_file(good, off + 10), 512, TQP_EINPUT, "record 37 of 512 needs");
    char *longer = malloc(size + 3);
    memcpy(longer, good, size);
    memcpy(longer + size, "xyz", 3);
    load_fails(temp_file(longer, size + 3), 512, TQP_EINPUT, "3 trailing bytes");
    load_fails(data_path("models/stories260K/tok512.bin"), 511, TQP_EINPUT, "trailing bytes");
    load_fails(data_path("models/stories260K/tok512.bin"), 513, TQP_EINPUT, "record 512 of 513");
    load_fails(data_path("models/stories260K/tok512.bin"), 0, TQP_EINPUT, "vocabulary size 0");
    load_fails(data_path("models/stories260K/tok512.bin"), -5, TQP_EINPUT, "vocabulary size -5");
    load_fails("/nonexistent/tqp/tok.bin", 512, TQP_ENOENT, "no such file");
    free(longer);
    free(good);
}

static void test_bad_lengths(void)
{
    unsigned char rec[4 + 8 + 8];
    int32_t max = 7, len = -1;
    float s = 0;
    memcpy(rec, &max, 4);
    memcpy(rec + 4, &s, 4);
    memcpy(rec + 8, &len, 4);
    memcpy(rec + 12, "abcdefgh", 8);
    load_fails(temp_file(rec, 12), 1, TQP_EINPUT, "length -1");
    len = 8; // > max_token_length 7
    memcpy(rec + 8, &len, 4);
    load_fails(temp_file(rec, 20), 1, TQP_EINPUT, "length 8");
    max = 8;
    memcpy(rec, &max, 4);
    tqp_tokenizer *t = NULL;
    CHECK(tqp_tokenizer_load(temp_file(rec, 20), 1, &t) == TQP_OK); // the same record is fine
    tqp_tokenizer_destroy(&t);
    max = -3;
    memcpy(rec, &max, 4);
    load_fails(temp_file(rec, 20), 1, TQP_EINPUT, "max_token_length -3");
    max = 1 << 30;
    memcpy(rec, &max, 4);
    load_fails(temp_file(rec, 20), 1, TQP_EINPUT, "max_token_length 1073741824");
}

/* Read a token file expecting failure with `why` (and the path) in the message. */
static void tokens_fail(const char *path, int vocab, tqp_status want, const char *why)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    tqp_status st = tqp_tokens_read(path, vocab, &ids, &n);
    const char *msg = tqp_error_message();
    CHECK_MSG(st == want && ids == NULL && n == 0, "%s: status %d: %s", path, (int)st, msg);
    CHECK_MSG(contains(msg, path) && contains(msg, why), "'%s' lacks '%s'", msg, why);
}

static void test_tokens_file(void)
{
    const uint8_t le[] = {5, 0, 0, 0, 0, 0, 0, 0, 0xff, 1, 0, 0, 0, 2, 0, 0};
    uint32_t *ids = NULL;
    size_t n = 0;
    CHECK(tqp_tokens_read(temp_file(le, 12), 512, &ids, &n) == TQP_OK);
    CHECK(n == 3 && ids && ids[0] == 5 && ids[1] == 0 && ids[2] == 511);
    free(ids);
    tokens_fail(temp_file(le, 6), 512, TQP_EINPUT, "not a multiple of 4");
    tokens_fail(temp_file(le, 16), 512, TQP_EINPUT, "token 512 at index 3 is >= vocab size 512");
    tokens_fail(temp_file(le, 0), 512, TQP_EINPUT, "no tokens");
    tokens_fail("/nonexistent/tqp/tokens.bin", 512, TQP_ENOENT, "no such file");
}

int main(void)
{
    const char *tokpath = data_path("models/stories260K/tok512.bin");
    tqp_tokenizer *t = NULL;
    CHECK_MSG(tqp_tokenizer_load(tokpath, 512, &t) == TQP_OK, "%s", tqp_error_message());
    if (t) {
        ref_vocab v;
        ref_load(&v, tokpath, 512);
        test_pieces(t);
        test_strings(t, &v);
        test_empty(t);
        test_nul(t);
        test_random(t, &v, 3000);
        test_tinystories(t, &v);
        test_wikitext(t, &v);
        ref_free(&v);
        tqp_tokenizer_destroy(&t);
    }
    test_corner_cases();
    test_tiny_vocab();
    test_bad_tokenizer();
    test_bad_lengths();
    test_tokens_file();
    cleanup();
    return check_done();
}
