/* The llama2.c tokenizer: loads tokenizer.bin, encodes text with llama2.c's exact merge rules in
 * O(n log n) (a linked list of symbols and a heap of candidate merges), and reads token files. */
#include "tqp/tokenizer.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/io.h"

#define MAX_PIECE_LEN 65536       // a larger max_token_length is taken as a corrupt header
#define MERGE_FLOOR   -1e10f      // llama2.c's initial best score: only scores above it merge
#define MAX_TEXT      0x7ffffff0u // symbol slots are int32 and positions uint32
#define FNV_SEED      2166136261u
#define FNV_PRIME     16777619u
#define ID_BOS        1
#define ID_EOS        2
#define BYTE_BASE     3 // byte b falls back to token b + 3 (<0xXX>)

struct tqp_tokenizer {
    int vocab_size;
    float *scores;    // (vocab_size) merge scores, owned
    uint32_t *offset; // (vocab_size) start of each piece in `bytes`, owned
    uint32_t *len;    // (vocab_size) piece lengths in bytes, owned
    uint32_t *hash;   // (vocab_size) FNV-1a hash of each piece, owned
    char *bytes;      // (total piece bytes + vocab_size) pieces, each NUL-terminated, owned
    int32_t *table;   // (mask + 1) open-addressing slots: token id or -1 if empty, owned
    uint32_t mask;
};

/* ---- file reading ---------------------------------------------------------------------- */

/* Read a whole file into a malloc'd buffer of *len bytes (io.c checks that it is a regular
 * file: a directory is bad input, not a read error). */
static tqp_status slurp(const char *path, unsigned char **buf, size_t *len)
{
    char *b = NULL;
    TQP_CHECK(tqp_file_read_all(path, &b, len));
    *buf = (unsigned char *)b;
    return TQP_OK;
}

static uint32_t rd_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int32_t rd_i32(const unsigned char *p)
{
    uint32_t u = rd_u32(p);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static float rd_f32(const unsigned char *p)
{
    uint32_t u = rd_u32(p);
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* ---- piece lookup ---------------------------------------------------------------------- */

static uint32_t fnv(uint32_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * FNV_PRIME;
    return h;
}

static const char *piece(const tqp_tokenizer *t, int32_t id)
{
    return t->bytes + t->offset[id];
}

/* Id of the piece a[0..na) + b[0..nb), whose FNV-1a hash is h; -1 if it is not in the vocab. */
static int32_t find(const tqp_tokenizer *t, uint32_t h, const char *a, size_t na, const char *b,
                    size_t nb)
{
    for (uint32_t i = (h ^ (h >> 16)) & t->mask;; i = (i + 1) & t->mask) {
        int32_t id = t->table[i];
        if (id < 0) return -1;
        if (t->hash[id] != h || t->len[id] != na + nb) continue;
        const char *p = piece(t, id);
        if (memcmp(p, a, na) == 0 && memcmp(p + na, b, nb) == 0) return id;
    }
}

static int32_t find_str(const tqp_tokenizer *t, const char *s, size_t n)
{
    return find(t, fnv(FNV_SEED, s, n), s, n, "", 0);
}

/* Id of the piece that concatenates pieces a and b, hashed without building the string. */
static int32_t find_pair(const tqp_tokenizer *t, int32_t a, int32_t b)
{
    const char *pb = piece(t, b);
    uint32_t h = fnv(t->hash[a], pb, t->len[b]);
    return find(t, h, piece(t, a), t->len[a], pb, t->len[b]);
}

/* Index every piece.  Ids are inserted in increasing order and a piece already present is
 * skipped, so a duplicated piece always resolves to its lowest id. */
static tqp_status build_table(tqp_tokenizer *t)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)t->vocab_size)
        cap *= 2;
    t->table = tqp_malloc(cap * sizeof *t->table);
    if (!t->table) return TQP_ENOMEM;
    memset(t->table, 0xff, cap * sizeof *t->table);
    t->mask = (uint32_t)(cap - 1);
    for (int32_t id = 0; id < t->vocab_size; id++) {
        uint32_t h = t->hash[id];
        if (find(t, h, piece(t, id), t->len[id], "", 0) >= 0) continue;
        uint32_t i = (h ^ (h >> 16)) & t->mask;
        while (t->table[i] >= 0)
            i = (i + 1) & t->mask;
        t->table[i] = id;
    }
    return TQP_OK;
}

/* ---- loading --------------------------------------------------------------------------- */

static tqp_status truncated(const char *path, int rec, int vocab, size_t need, size_t left)
{
    return tqp_error_set(TQP_EINPUT, "%s: truncated: record %d of %d needs %zu bytes, %zu left",
                         path, rec, vocab, need, left);
}

/* Check the layout of a tokenizer file (records are numbered by token id, from 0) and total
 * the piece bytes. */
static tqp_status scan(const char *path, const unsigned char *buf, size_t size, int vocab,
                       size_t *total)
{
    if (size < 4)
        return tqp_error_set(TQP_EINPUT, "%s: truncated: max_token_length needs 4 bytes, %zu left",
                             path, size);
    int32_t max = rd_i32(buf);
    if (max <= 0 || max > MAX_PIECE_LEN)
        return tqp_error_set(TQP_EINPUT, "%s: max_token_length %d is outside [1, %d]", path,
                             (int)max, MAX_PIECE_LEN);
    size_t off = 4;
    *total = 0;
    for (int i = 0; i < vocab; i++) {
        if (size - off < 8) return truncated(path, i, vocab, 8, size - off);
        int32_t n = rd_i32(buf + off + 4);
        if (n < 0 || n > max)
            return tqp_error_set(TQP_EINPUT,
                                 "%s: record %d of %d has length %d, outside [0, %d] "
                                 "(max_token_length)",
                                 path, i, vocab, (int)n, (int)max);
        if (size - off - 8 < (size_t)n) return truncated(path, i, vocab, 8 + (size_t)n, size - off);
        off += 8 + (size_t)n;
        *total += (size_t)n;
    }
    if (off != size)
        return tqp_error_set(TQP_EINPUT,
                             "%s: %zu trailing bytes after the last of %d records "
                             "(wrong vocabulary size?)",
                             path, size - off, vocab);
    return TQP_OK;
}

/* Copy the validated records into t's arrays. */
static void fill(tqp_tokenizer *t, const unsigned char *buf)
{
    size_t off = 4, at = 0;
    for (int i = 0; i < t->vocab_size; i++) {
        uint32_t n = rd_u32(buf + off + 4);
        t->scores[i] = rd_f32(buf + off);
        t->offset[i] = (uint32_t)at;
        t->len[i] = n;
        memcpy(t->bytes + at, buf + off + 8, n);
        t->bytes[at + n] = '\0';
        t->hash[i] = fnv(FNV_SEED, t->bytes + at, n);
        at += n + 1;
        off += 8 + n;
    }
}

static tqp_status alloc_vocab(tqp_tokenizer *t, size_t total)
{
    size_t v = (size_t)t->vocab_size;
    t->scores = tqp_malloc(v * sizeof *t->scores);
    t->offset = t->scores ? tqp_malloc(v * sizeof *t->offset) : NULL;
    t->len = t->offset ? tqp_malloc(v * sizeof *t->len) : NULL;
    t->hash = t->len ? tqp_malloc(v * sizeof *t->hash) : NULL;
    t->bytes = t->hash ? tqp_malloc(total + v) : NULL;
    return t->bytes ? TQP_OK : TQP_ENOMEM;
}

tqp_status tqp_tokenizer_load(const char *path, int vocab_size, tqp_tokenizer **out)
{
    *out = NULL;
    if (vocab_size <= 0)
        return tqp_error_set(TQP_EINPUT, "%s: vocabulary size %d must be positive", path,
                             vocab_size);
    unsigned char *buf;
    size_t size, total = 0;
    TQP_CHECK(slurp(path, &buf, &size));
    tqp_status st = scan(path, buf, size, vocab_size, &total);
    if (st == TQP_OK && total + (size_t)vocab_size > UINT32_MAX)
        st = tqp_error_set(TQP_EINPUT, "%s: %zu bytes of pieces is too many", path, total);
    tqp_tokenizer *t = st == TQP_OK ? tqp_calloc(1, sizeof *t) : NULL;
    if (st == TQP_OK && !t) st = TQP_ENOMEM;
    if (t) {
        t->vocab_size = vocab_size;
        st = alloc_vocab(t, total);
        if (st == TQP_OK) fill(t, buf);
        if (st == TQP_OK) st = build_table(t);
        if (st != TQP_OK) tqp_tokenizer_destroy(&t);
    }
    free(buf);
    *out = t;
    return st;
}

void tqp_tokenizer_destroy(tqp_tokenizer **t)
{
    if (!t || !*t) return;
    free((*t)->scores);
    free((*t)->offset);
    free((*t)->len);
    free((*t)->hash);
    free((*t)->bytes);
    free((*t)->table);
    free(*t);
    *t = NULL;
}

int tqp_tokenizer_vocab_size(const tqp_tokenizer *t)
{
    return t->vocab_size;
}

const char *tqp_tokenizer_piece(const tqp_tokenizer *t, int id, size_t *len)
{
    assert(id >= 0 && id < t->vocab_size);
    if (len) *len = t->len[id];
    return piece(t, id);
}

/* ---- encoding -------------------------------------------------------------------------- */

/* A candidate merge of the symbol at slot `pos` with its right neighbour.  It is still valid
 * when popped if those two symbols hold ids a and b: the pair then exists with exactly this
 * key, whichever pushes created it. */
typedef struct {
    uint64_t key; // ordered score in the high 32 bits, UINT32_MAX - pos in the low 32
    int32_t a, b; // ids of the left and right symbol when pushed
} cand;

typedef struct {
    const tqp_tokenizer *t;
    int32_t *id;   // (n) token id per symbol slot, -1 once merged into its left neighbour, owned
    int32_t *prev; // (n) previous live slot or -1, owned
    int32_t *next; // (n) next live slot or -1, owned
    cand *heap;    // (cap) binary max-heap on key, owned
    size_t n, nheap, cap;
} merger;

/* Map a score to an unsigned integer with the same order.  -0 and +0 compare equal in
 * llama2.c's float comparison, so they must get the same key and tie by position. */
static uint32_t order_bits(float s)
{
    if (s == 0.0f) s = 0.0f;
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

static tqp_status heap_push(merger *m, cand c)
{
    if (m->nheap == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        cand *h = realloc(m->heap, cap * sizeof *h);
        if (!h)
            return tqp_error_set(TQP_ENOMEM, "out of memory growing the merge heap to %zu", cap);
        m->heap = h;
        m->cap = cap;
    }
    size_t i = m->nheap++;
    while (i > 0 && m->heap[(i - 1) / 2].key < c.key) {
        m->heap[i] = m->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    m->heap[i] = c;
    return TQP_OK;
}

static cand heap_pop(merger *m)
{
    cand top = m->heap[0], last = m->heap[--m->nheap];
    size_t i = 0, n = m->nheap;
    for (size_t c = 1; c < n; c = 2 * i + 1) {
        if (c + 1 < n && m->heap[c + 1].key > m->heap[c].key) c++;
        if (m->heap[c].key <= last.key) break;
        m->heap[i] = m->heap[c];
        i = c;
    }
    if (n) m->heap[i] = last;
    return top;
}

/* Push the pair (left, its right neighbour) if its concatenation is a piece that llama2.c
 * would consider (score > -1e10; a NaN score never merges). */
static tqp_status push_pair(merger *m, int32_t left)
{
    if (left < 0 || m->next[left] < 0) return TQP_OK;
    int32_t a = m->id[left], b = m->id[m->next[left]];
    int32_t id = find_pair(m->t, a, b);
    if (id < 0 || !(m->t->scores[id] > MERGE_FLOOR)) return TQP_OK;
    uint64_t key = (uint64_t)order_bits(m->t->scores[id]) << 32 | (UINT32_MAX - (uint32_t)left);
    return heap_push(m, (cand){key, a, b});
}

/* Merge the pair at slot `left` into its left symbol. */
static void merge_at(merger *m, int32_t left, int32_t id)
{
    int32_t r = m->next[left];
    m->id[left] = id;
    m->id[r] = -1;
    m->next[left] = m->next[r];
    if (m->next[r] >= 0) m->prev[m->next[r]] = left;
}

/* Repeatedly merge the best pair (highest score, leftmost on ties) until none is left. */
static tqp_status merge_all(merger *m)
{
    for (size_t i = 0; i < m->n; i++) {
        m->prev[i] = (int32_t)i - 1;
        m->next[i] = i + 1 < m->n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < m->n; i++)
        TQP_CHECK(push_pair(m, (int32_t)i));
    while (m->nheap) {
        cand c = heap_pop(m);
        int32_t left = (int32_t)(UINT32_MAX - (uint32_t)c.key);
        int32_t r = m->next[left];
        if (m->id[left] != c.a || r < 0 || m->id[r] != c.b) continue; // stale
        merge_at(m, left, find_pair(m->t, c.a, c.b));
        TQP_CHECK(push_pair(m, m->prev[left]));
        TQP_CHECK(push_pair(m, left));
    }
    return TQP_OK;
}

/* Append the token(s) for one code point: its piece, or one byte-fallback token per byte. */
static tqp_status code_point(const tqp_tokenizer *t, const char *s, size_t n, merger *m)
{
    int32_t id = find_str(t, s, n);
    if (id >= 0) {
        m->id[m->n++] = id;
        return TQP_OK;
    }
    for (size_t i = 0; i < n; i++) {
        int32_t b = (unsigned char)s[i] + BYTE_BASE;
        if (b >= t->vocab_size)
            return tqp_error_set(TQP_EINPUT, "byte 0x%02X has no fallback token (vocab size %d)",
                                 (unsigned)(unsigned char)s[i], t->vocab_size);
        m->id[m->n++] = b;
    }
    return TQP_OK;
}

/* The symbols before merging: BOS, the dummy-prefix " ", then each UTF-8 code point.  Like
 * llama2.c, a code point is a byte plus the continuation bytes after it, at most 4 bytes. */
static tqp_status split(merger *m, const char *text, size_t len, int bos)
{
    const tqp_tokenizer *t = m->t;
    if (bos) m->id[m->n++] = ID_BOS;
    if (len == 0) return TQP_OK;
    int32_t space = find_str(t, " ", 1);
    if (space < 0) return tqp_error_set(TQP_EINPUT, "tokenizer has no ' ' piece");
    m->id[m->n++] = space;
    for (size_t i = 0, j; i < len; i = j) {
        for (j = i + 1; j < len && j - i < 4 && ((unsigned char)text[j] & 0xC0) == 0x80;)
            j++;
        TQP_CHECK(code_point(t, text + i, j - i, m));
    }
    return TQP_OK;
}

static tqp_status check_text(const tqp_tokenizer *t, const char *text, size_t len, int bos, int eos)
{
    if (len > MAX_TEXT)
        return tqp_error_set(TQP_EINPUT, "text of %zu bytes is too long (limit %u)", len, MAX_TEXT);
    const char *nul = len ? memchr(text, '\0', len) : NULL;
    if (nul)
        return tqp_error_set(TQP_EINPUT, "text contains a NUL byte at offset %zu",
                             (size_t)(nul - text));
    if ((bos && ID_BOS >= t->vocab_size) || (eos && ID_EOS >= t->vocab_size))
        return tqp_error_set(TQP_EINPUT, "vocab size %d has no BOS/EOS token", t->vocab_size);
    return TQP_OK;
}

static void merger_free(merger *m)
{
    free(m->id);
    free(m->prev);
    free(m->next);
    free(m->heap);
}

/* Copy the live symbols, then EOS, into a new array. */
static tqp_status collect(const merger *m, int eos, uint32_t **tokens, size_t *ntokens)
{
    size_t k = 0;
    for (int32_t i = m->n ? 0 : -1; i >= 0; i = m->next[i])
        k++;
    uint32_t *out = tqp_malloc((k + 1) * sizeof *out);
    if (!out) return TQP_ENOMEM;
    k = 0;
    for (int32_t i = m->n ? 0 : -1; i >= 0; i = m->next[i])
        out[k++] = (uint32_t)m->id[i];
    if (eos) out[k++] = ID_EOS;
    *tokens = out;
    *ntokens = k;
    return TQP_OK;
}

tqp_status tqp_tokenizer_encode(const tqp_tokenizer *t, const char *text, size_t len, int bos,
                                int eos, uint32_t **tokens, size_t *ntokens)
{
    *tokens = NULL;
    *ntokens = 0;
    TQP_CHECK(check_text(t, text, len, bos, eos));
    size_t cap = len + 2; // BOS, dummy prefix, at most one symbol per byte
    merger m = {.t = t};
    m.id = tqp_malloc(cap * sizeof *m.id);
    m.prev = m.id ? tqp_malloc(cap * sizeof *m.prev) : NULL;
    m.next = m.prev ? tqp_malloc(cap * sizeof *m.next) : NULL;
    tqp_status st = m.next ? TQP_OK : TQP_ENOMEM;
    if (st == TQP_OK) st = split(&m, text, len, bos);
    if (st == TQP_OK) st = merge_all(&m);
    if (st == TQP_OK) st = collect(&m, eos, tokens, ntokens);
    merger_free(&m);
    return st;
}

/* ---- token files ----------------------------------------------------------------------- */

tqp_status tqp_tokens_read(const char *path, int vocab_size, uint32_t **tokens, size_t *ntokens)
{
    *tokens = NULL;
    *ntokens = 0;
    if (vocab_size <= 0)
        return tqp_error_set(TQP_EINPUT, "%s: vocabulary size %d must be positive", path,
                             vocab_size);
    unsigned char *buf;
    size_t size;
    TQP_CHECK(slurp(path, &buf, &size));
    tqp_status st = TQP_OK;
    if (size == 0)
        st = tqp_error_set(TQP_EINPUT, "%s: no tokens (empty file)", path);
    else if (size % 4)
        st = tqp_error_set(TQP_EINPUT, "%s: size %zu bytes is not a multiple of 4", path, size);
    uint32_t *ids = (uint32_t *)(void *)buf; // decoded in place: malloc'd memory is aligned
    for (size_t i = 0; st == TQP_OK && i < size / 4; i++) {
        ids[i] = rd_u32(buf + 4 * i);
        if (ids[i] >= (uint32_t)vocab_size)
            st = tqp_error_set(TQP_EINPUT, "%s: token %u at index %zu is >= vocab size %d", path,
                               ids[i], i, vocab_size);
    }
    if (st != TQP_OK) {
        free(buf);
        return st;
    }
    uint32_t *fit = realloc(ids, size); // give back the read buffer's slack
    *tokens = fit ? fit : ids;
    *ntokens = size / 4;
    return TQP_OK;
}
