/* Hadamard-type orthonormal transforms for any n (see include/tqp/had.h). */
#include "tqp/had.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#include <immintrin.h>
#endif

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/rng.h"

static int is_prime(int q)
{
    if (q < 2) return 0;
    for (int d = 2; (long)d * d <= q; d++)
        if (q % d == 0) return 0;
    return 1;
}

/* Quadratic character of a modulo the prime q: 0, 1 or -1. */
static int chi(int a, int q, const int8_t *square)
{
    a %= q;
    if (a < 0) a += q;
    return a == 0 ? 0 : square[a] ? 1 : -1;
}

static int8_t *squares(int q)
{
    int8_t *sq = calloc((size_t)q, 1);
    if (sq)
        for (long x = 1; x < q; x++) sq[x * x % q] = 1;
    return sq;
}

/* Paley I: order q + 1, H = I + S with S = [[0, 1^T], [-1, Q]], Q_ij = chi(j - i). */
static int paley1(int q, int8_t *H)
{
    int b = q + 1;
    int8_t *sq = squares(q);
    if (!sq) return 0;
    for (int i = 0; i < b; i++)
        for (int j = 0; j < b; j++) {
            int s = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? -1 : chi(j - i, q, sq);
            H[i * b + j] = (int8_t)(s + (i == j));
        }
    free(sq);
    return 1;
}

/* Paley II: order 2(q + 1) from the symmetric conference matrix C = [[0, 1^T], [1, Q]]: each 0
 * becomes [[1, -1], [-1, -1]] and each ±1 becomes ±[[1, 1], [1, -1]]. */
static int paley2(int q, int8_t *H)
{
    int c = q + 1, b = 2 * c;
    int8_t *sq = squares(q);
    if (!sq) return 0;
    for (int i = 0; i < c; i++)
        for (int j = 0; j < c; j++) {
            int s = i == 0 ? (j == 0 ? 0 : 1) : j == 0 ? 1 : chi(j - i, q, sq);
            static const int8_t zero[2][2] = {{1, -1}, {-1, -1}}, one[2][2] = {{1, 1}, {1, -1}};
            for (int a = 0; a < 2; a++)
                for (int d = 0; d < 2; d++)
                    H[(2 * i + a) * b + 2 * j + d] = (int8_t)(s == 0 ? zero[a][d] : s * one[a][d]);
        }
    free(sq);
    return 1;
}

int tqp_hadamard_base(int b, int8_t *H, int *q)
{
    *q = 0;
    if (b == 1 || b == 2) {
        for (int i = 0; i < b; i++)
            for (int j = 0; j < b; j++) H[i * b + j] = (int8_t)(i & j ? -1 : 1);
        return TQP_HAD_SYLVESTER;
    }
    if (b % 4 != 0) return -1;
    if (is_prime(b - 1) && (b - 1) % 4 == 3 && paley1(b - 1, H)) {
        *q = b - 1;
        return TQP_HAD_PALEY1;
    }
    int c = b / 2 - 1;
    if (is_prime(c) && c % 4 == 1 && paley2(c, H)) {
        *q = c;
        return TQP_HAD_PALEY2;
    }
    return -1;
}

static double gauss(uint64_t *s)
{
    uint64_t z1 = tqp_splitmix64(s), z2 = tqp_splitmix64(s);
    double u = ((double)(z1 >> 11) + 0.5) / 9007199254740992.0;
    double v = (double)(z2 >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* A random orthogonal b x b matrix: rows of a Gaussian matrix orthonormalized by modified
 * Gram-Schmidt, twice (deterministic, no BLAS threading involved). */
void tqp_random_orthogonal(int b, uint64_t seed, double *Q)
{
    uint64_t s = seed;
    for (int i = 0; i < b * b; i++) Q[i] = gauss(&s);
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < b; i++) {
            double *qi = Q + (size_t)i * b;
            for (int j = 0; j < i; j++) {
                const double *qj = Q + (size_t)j * b;
                double d = 0;
                for (int t = 0; t < b; t++) d += qi[t] * qj[t];
                for (int t = 0; t < b; t++) qi[t] -= d * qj[t];
            }
            double nrm = 0;
            for (int t = 0; t < b; t++) nrm += qi[t] * qi[t];
            nrm = 1.0 / sqrt(nrm);
            for (int t = 0; t < b; t++) qi[t] *= nrm;
        }
}

static tqp_status make_base(tqp_had *h)
{
    h->base = tqp_malloc(sizeof(double) * (size_t)h->b * h->b);
    if (!h->base) return TQP_ENOMEM;
    if (h->kind == TQP_HAD_RANDOM) {
        tqp_random_orthogonal(h->b, h->seed, h->base);
        return TQP_OK;
    }
    int8_t *H = tqp_malloc((size_t)h->b * h->b);
    if (!H) return TQP_ENOMEM;
    int q;
    tqp_hadamard_base(h->b, H, &q);
    double sc = 1.0 / sqrt((double)h->b);
    for (int i = 0; i < h->b * h->b; i++) h->base[i] = H[i] * sc;
    free(H);
    return TQP_OK;
}

tqp_status tqp_had_create(int n, uint64_t seed, tqp_had **out)
{
    *out = NULL;
    if (n < 1) return tqp_error_set(TQP_EINPUT, "Hadamard order %d", n);
    int tz = __builtin_ctz((unsigned)n), b = 0, k = -1, q = 0, kind = -1;
    for (int kk = tz; kk >= 0 && kind < 0; kk--) {
        int bb = n >> kk;
        if (bb <= 2) { /* Sylvester: b = 1 (b = 2 only when n = 2) */
            kind = TQP_HAD_SYLVESTER, b = 1, k = tz;
            break;
        }
        if (bb % 4 == 0 && bb <= 4096) {
            int8_t *H = tqp_malloc((size_t)bb * bb);
            if (!H) return TQP_ENOMEM;
            kind = tqp_hadamard_base(bb, H, &q);
            free(H);
            if (kind >= 0) b = bb, k = kk;
        }
    }
    tqp_had *h = tqp_calloc(1, sizeof *h);
    if (!h) return TQP_ENOMEM;
    if (kind < 0) {
        kind = TQP_HAD_RANDOM, b = n >> tz, k = tz, q = 0;
        if (b > 4096) {
            free(h);
            return tqp_error_set(TQP_EINPUT, "no incoherence transform for n = %d: its odd part "
                                 "%d is larger than 4096", n, b);
        }
    }
    *h = (tqp_had){.n = n, .b = b, .k = k, .kind = (tqp_had_kind)kind, .q = q, .seed = seed};
    tqp_status s = make_base(h);
    if (s != TQP_OK) {
        tqp_had_destroy(&h);
        return s;
    }
    *out = h;
    return TQP_OK;
}

void tqp_had_destroy(tqp_had **ph)
{
    if (!*ph) return;
    free((*ph)->base);
    free(*ph);
    *ph = NULL;
}

/* In-place unnormalized Walsh-Hadamard transform of x (len, a power of two): the radix-2 stages
 * hlen = 1, 2, 4, ... in order, every butterfly (a + c, a - c) as written; the first three
 * stages are done per block of 8 and the rest two at a time (radix 4), which performs the same
 * additions on the same operands (bit-identical results) in fewer passes over x.  Built for
 * AVX-512, AVX2 and plain x86-64, chosen at load time (additions only: the same bits on each);
 * one body for double and float. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FWHT_X86 1
#define FWHT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FWHT_CLONES
#endif
#define FWHT_FIRST(T) /* stages 1, 2, 4 per block of 8 */                                          \
    for (int64_t i = 0; i < len; i += 8) {                                                         \
        T *p = x + i, a[8], b[8];                                                                  \
        for (int k = 0; k < 8; k += 2) a[k] = p[k] + p[k + 1], a[k + 1] = p[k] - p[k + 1];         \
        for (int k = 0; k < 8; k += 4)                                                             \
            for (int q = 0; q < 2; q++)                                                            \
                b[k + q] = a[k + q] + a[k + q + 2], b[k + q + 2] = a[k + q] - a[k + q + 2];        \
        for (int q = 0; q < 4; q++) p[q] = b[q] + b[q + 4], p[q + 4] = b[q] - b[q + 4];            \
    }
#define FWHT_REST(T) /* stages h, 2h, ... */                                                       \
    for (; 4 * h <= len; h *= 4)                                                                   \
        for (int64_t i = 0; i < len; i += 4 * h) {                                                 \
            T *p0 = x + i, *p1 = p0 + h, *p2 = p1 + h, *p3 = p2 + h;                               \
            for (int64_t j = 0; j < h; j++) {                                                      \
                T b0 = p0[j] + p1[j], b1 = p0[j] - p1[j];                                          \
                T b2 = p2[j] + p3[j], b3 = p2[j] - p3[j];                                          \
                p0[j] = b0 + b2, p2[j] = b0 - b2, p1[j] = b1 + b3, p3[j] = b1 - b3;                \
            }                                                                                      \
        }                                                                                          \
    for (; h < len; h <<= 1)                                                                       \
        for (int64_t i = 0; i < len; i += h << 1)                                                  \
            for (int64_t j = i; j < i + h; j++) {                                                  \
                T a = x[j], c = x[j + h];                                                          \
                x[j] = a + c;                                                                      \
                x[j + h] = a - c;                                                                  \
            }

FWHT_CLONES static void fwht(double *x, int64_t len)
{
    int64_t h = 1;
    if (len >= 8) {
        FWHT_FIRST(double)
        h = 8;
    }
    FWHT_REST(double)
}

FWHT_CLONES static void fwht_f32_rest(float *x, int64_t len, int64_t h)
{
    FWHT_REST(float)
}

#ifdef FWHT_X86
/* The first three stages on 16 floats at a time: per stage, a permutation brings each lane's
 * partner, the sum goes to the low lane of a pair and the difference (low minus high) to the
 * high lane: the butterflies of FWHT_FIRST, the same operands. */
__attribute__((target("avx512f"))) static void fwht_f32_first_avx512(float *x, int64_t len)
{
    const __m512i p1 = _mm512_set_epi32(14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1);
    const __m512i p2 = _mm512_set_epi32(13, 12, 15, 14, 9, 8, 11, 10, 5, 4, 7, 6, 1, 0, 3, 2);
    const __m512i p4 = _mm512_set_epi32(11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4);
    for (int64_t i = 0; i < len; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i), s;
        s = _mm512_permutexvar_ps(p1, v);
        v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xAAAA, s, v);
        s = _mm512_permutexvar_ps(p2, v);
        v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xCCCC, s, v);
        s = _mm512_permutexvar_ps(p4, v);
        v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xF0F0, s, v);
        _mm512_storeu_ps(x + i, v);
    }
}
#endif

void tqp_fwht_f32(float *x, int64_t len)
{
    if (len < 8) {
        fwht_f32_rest(x, len, 1);
        return;
    }
#ifdef FWHT_X86
    if (len >= 16 && __builtin_cpu_supports("avx512f")) fwht_f32_first_avx512(x, len);
    else
#endif
    {
        FWHT_FIRST(float)
    }
    fwht_f32_rest(x, len, 8);
}

void tqp_had_apply(const tqp_had *h, double *x, int transpose, double *scratch)
{
    int64_t m = (int64_t)1 << h->k;
    for (int r = 0; r < h->b; r++) fwht(x + r * m, m);
    double sc = 1.0 / sqrt((double)m);
    if (h->b == 1) {
        for (int64_t i = 0; i < m; i++) x[i] *= sc;
        return;
    }
    /* (b, m) view: scratch = B X (or B^T X), then scale back into x */
    cblas_dgemm(CblasRowMajor, transpose ? CblasTrans : CblasNoTrans, CblasNoTrans, h->b, (int)m,
                h->b, sc, h->base, h->b, x, (int)m, 0.0, scratch, (int)m);
    memcpy(x, scratch, sizeof(double) * (size_t)h->n);
}

void tqp_had_apply_rows(const tqp_had *h, double *X, int64_t rows, int transpose, double *scratch)
{
    for (int64_t r = 0; r < rows; r++) tqp_had_apply(h, X + r * h->n, transpose, scratch);
}

void tqp_had_describe(const tqp_had *h, char *buf, int cap)
{
    static const char *const names[] = {"Sylvester", "Paley I", "Paley II", "random orthogonal"};
    if (h->kind == TQP_HAD_SYLVESTER)
        snprintf(buf, (size_t)cap, "n=%d: Sylvester 2^%d", h->n, h->k);
    else if (h->kind == TQP_HAD_RANDOM)
        snprintf(buf, (size_t)cap, "n=%d: %s %d x %d (seed %llu) x Sylvester 2^%d (fallback)",
                 h->n, names[h->kind], h->b, h->b, (unsigned long long)h->seed, h->k);
    else
        snprintf(buf, (size_t)cap, "n=%d: %s (q=%d, b=%d) x Sylvester 2^%d", h->n,
                 names[h->kind], h->q, h->b, h->k);
}
