/* The trellis against exhaustive search and independent formulas: the free Viterbi finds the
 * cheapest of all 2^(L + (N-1)KV) paths; the constrained pass finds the cheapest path with the
 * given overlap among all circular streams; the tail-biting encoder's stream decodes to the
 * reconstruction it reports, costs no less than the best circular stream, and is the best one
 * with its overlap (how often the heuristic overlap is the optimal one is printed); the fast encoder gives the reference's bytes; codes match their definitions; bad
 * parameters are errors. */
#include "check.h"
#include "testutil.h"
#include "tqp/quant.h"
#include "tqp/trellis.h"

/* Cost of the circular stream `bits` (N chunks of KV bits, chunk i = bits >> (i KV)): float64. */
static double stream_cost(const tqp_trellis *t, const float *x, uint64_t bits, uint32_t *st)
{
    int KV = t->K * t->V, N = t->T / t->V;
    uint32_t mask = (1u << t->L) - 1, cm = (1u << KV) - 1;
    double e = 0;
    for (int i = 0; i < N; i++) {
        uint32_t s = 0; /* the last L bits up to chunk i, circularly */
        for (int j = (t->L + KV - 1) / KV - 1; j >= 0; j--)
            s = ((s << KV) | (uint32_t)(bits >> (((i - j + N) % N) * KV) & cm)) & mask;
        if (st) st[i] = s;
        for (int v = 0; v < t->V; v++) {
            double d = (double)x[i * t->V + v] - t->table[s * t->V + v];
            e += d * d;
        }
    }
    return e;
}

/* Cost of a state path (float64) and whether consecutive states are linked. */
static double path_cost(const tqp_trellis *t, const float *x, const uint32_t *st, int *valid)
{
    int KV = t->K * t->V, N = t->T / t->V, sh = t->L - KV;
    double e = 0;
    *valid = 1;
    for (int i = 0; i < N; i++) {
        if (i > 0 && (st[i] >> KV) != (st[i - 1] & ((1u << sh) - 1))) *valid = 0;
        for (int v = 0; v < t->V; v++) {
            double d = (double)x[i * t->V + v] - t->table[st[i] * t->V + v];
            e += d * d;
        }
    }
    return e;
}

static void exhaustive(int L, int K, int V, int T, tqp_tcode code, int trials)
{
    tqp_trellis *t;
    CHECK(tqp_trellis_create(L, K, V, T, code, NULL, &t) == TQP_OK);
    if (!t) return;
    int KV = K * V, N = T / V, sh = L - KV, same_tb = 0;
    uint64_t s = (uint64_t)L * 1000 + K * 10 + V;
    float *x = malloc(sizeof(float) * T), *xh = malloc(sizeof(float) * T);
    uint32_t *st = malloc(sizeof(uint32_t) * N), *bst = malloc(sizeof(uint32_t) * N);
    uint8_t *packed = malloc(tqp_trellis_packed_bytes(t));
    for (int tr = 0; tr < trials; tr++) {
        for (int i = 0; i < T; i++) x[i] = (float)(t->rms * tu_normal(&s));
        /* free Viterbi vs all paths: start state, then N-1 chunks */
        double best = INFINITY;
        for (uint64_t p = 0; p < (1ull << (L + (N - 1) * KV)); p++) {
            bst[0] = (uint32_t)(p & ((1u << L) - 1));
            for (int i = 1; i < N; i++)
                bst[i] = ((bst[i - 1] << KV) | (uint32_t)(p >> (L + (i - 1) * KV) & ((1u << KV) - 1))) &
                         ((1u << L) - 1);
            int valid;
            best = fmin(best, path_cost(t, x, bst, &valid));
        }
        tqp_trellis_viterbi_ref(t, x, -1, -1, st);
        int valid;
        double got = path_cost(t, x, st, &valid);
        CHECK_MSG(valid && fabs(got - best) <= 1e-5 * (1 + best), "L=%d K=%d V=%d free: %.9g vs %.9g",
                  L, K, V, got, best);

        /* circular streams: the best overall and per overlap */
        double tb_best = INFINITY, *per = malloc(sizeof(double) << sh);
        for (int o = 0; o < (1 << sh); o++) per[o] = INFINITY;
        for (uint64_t b = 0; b < (1ull << (N * KV)); b++) {
            double c = stream_cost(t, x, b, bst);
            tb_best = fmin(tb_best, c);
            int o = (int)(bst[0] >> KV);
            per[o] = fmin(per[o], c);
        }
        double e = tqp_trellis_encode_ref(t, x, packed, xh);
        tqp_trellis_decode(t, packed, xh);
        double e2 = 0;
        for (int i = 0; i < T; i++) e2 += (double)(x[i] - xh[i]) * (x[i] - xh[i]);
        CHECK_MSG(fabs(e - e2) <= 1e-9 * (1 + e), "reported error %.9g, decoded %.9g", e, e2);
        CHECK_MSG(e >= tb_best - 1e-5 * (1 + tb_best), "tail-biting %.9g below the optimum %.9g", e,
                  tb_best);
        /* the constrained pass is optimal for its overlap */
        uint64_t bits = 0;
        for (int i = 0; i < (N * KV + 7) / 8; i++) bits |= (uint64_t)packed[i] << (8 * i);
        stream_cost(t, x, bits, bst);
        int o = (int)(bst[0] >> KV);
        CHECK_MSG(fabs(e - per[o]) <= 1e-5 * (1 + e), "overlap %d: %.9g vs best %.9g", o, e, per[o]);
        same_tb += fabs(e - tb_best) <= 1e-5 * (1 + e);
        /* the constrained Viterbi alone, for every overlap */
        for (int ov = 0; ov < (1 << sh); ov++) {
            tqp_trellis_viterbi_ref(t, x, ov, ov, st);
            double c = path_cost(t, x, st, &valid);
            CHECK(valid && (int)(st[0] >> KV) == ov && (int)(st[N - 1] & ((1u << sh) - 1)) == ov);
            CHECK_MSG(fabs(c - per[ov]) <= 1e-5 * (1 + c), "ov %d: %.9g vs %.9g", ov, c, per[ov]);
        }
        free(per);
    }
    printf("L=%d K=%d V=%d T=%d %s: tail-biting optimal in %d of %d trials\n", L, K, V, T,
           tqp_tcode_name(code), same_tb, trials);
    free(x), free(xh), free(st), free(bst), free(packed);
    tqp_trellis_destroy(&t);
}

/* The computed codes from their definitions, written differently here. */
static void test_codes(void)
{
    for (uint32_t s = 0; s < 70000; s += 7) {
        uint64_t x = (34038481ull * s + 76625530ull) & 0xffffffffull;
        int sum = 0;
        for (int b = 0; b < 4; b++) sum += (int)((x >> (8 * b)) & 0xff);
        CHECK(tqp_code_1mad(s) == (float)((sum - 510) / 147.800537109375));
        uint64_t y = (((89226354ull * s + 64248484ull) & 0xffffffffull) & 0x8FFF8FFFull) ^ 0x3B603B60ull;
        double v = 0;
        for (int h = 0; h < 2; h++) {
            uint32_t b = (uint32_t)(y >> (16 * h)) & 0xffff;
            int e = (int)(b >> 10 & 31), m = (int)(b & 1023), sg = b >> 15 ? -1 : 1;
            v += sg * (e ? ldexp(1024 + m, e - 25) : ldexp(m, -24));
        }
        CHECK(tqp_code_3inst(s) == (float)v);
    }
    /* Gaussian-like: mean ~0, variance ~1 for 1mad over all 16-bit states */
    double m = 0, v = 0;
    for (uint32_t s = 0; s < 65536; s++) m += tqp_code_1mad(s), v += tqp_code_1mad(s) * tqp_code_1mad(s);
    CHECK(fabs(m / 65536) < 0.01 && fabs(v / 65536 - 1) < 0.05);
}

static void test_bad_params(void)
{
    CHECK(tqp_trellis_check(17, 2, 1, 256, TQP_TCODE_1MAD) == TQP_EINPUT);
    CHECK(tqp_trellis_check(4, 2, 2, 256, TQP_TCODE_HYB) == TQP_EINPUT); /* K V >= L */
    CHECK(tqp_trellis_check(16, 2, 2, 255, TQP_TCODE_HYB) == TQP_EINPUT); /* T % V */
    CHECK(tqp_trellis_check(16, 2, 2, 256, TQP_TCODE_1MAD) == TQP_EINPUT); /* 1mad needs V 1 */
    CHECK(tqp_trellis_check(16, 2, 1, 256, TQP_TCODE_HYB) == TQP_EINPUT);
    CHECK(tqp_trellis_check(16, 5, 1, 256, TQP_TCODE_1MAD) == TQP_EINPUT);
    CHECK(tqp_trellis_check(16, 2, 1, 256, TQP_TCODE_3INST) == TQP_OK);
    CHECK(tqp_trellis_check(8, 4, 2, 256, TQP_TCODE_LUT) == TQP_EINPUT);
    CHECK(strstr(tqp_error_message(), "K*V = 8 must be less than L = 8") != NULL);
}

/* gf8 from its definition, computed another way: the product in GF(2^8) through log and
 * antilog tables of the generator 3 (x + 1), the bit reversal through a lookup of nibbles, the
 * levels from the Gaussian quantiles. */
static void test_gf8(void)
{
    int lg[256] = {0}, ex[255];
    for (int i = 0, v = 1; i < 255; i++) {
        ex[i] = v, lg[v] = i;
        v ^= v << 1; /* times x + 1, reduced by x^8 + x^4 + x^3 + x + 1 */
        if (v & 256) v ^= 0x11B;
    }
    static const uint8_t rev4[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
    int bad = 0;
    for (uint32_t s = 0; s < 65536; s++) {
        uint32_t lo = s & 255, hi = s >> 8;
        int a = rev4[lo & 15] << 4 | rev4[lo >> 4], b = rev4[hi & 15] << 4 | rev4[hi >> 4];
        int p = a && b ? ex[(lg[a] + lg[b]) % 255] : 0;
        bad += tqp_gf8_index(s) != (uint32_t)(p & 127);
        bad += tqp_code_gf8(s) != (float)tqp_gf8_levels[p & 127] / 47.0f;
    }
    CHECK_MSG(bad == 0, "gf8: %d values differ from the definition", bad);
    for (int k = 0; k < 128; k++) {
        double lo = -10, hi = 10, p = (k + 0.5) / 128; /* Phi^-1(p) by bisection */
        for (int it = 0; it < 200; it++) {
            double mid = (lo + hi) / 2;
            if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid;
            else hi = mid;
        }
        CHECK_MSG(tqp_gf8_levels[k] == (int)lrint(47 * lo), "gf8 level %d: %d", k,
                  tqp_gf8_levels[k]);
    }
}

/* Fast vs reference on random inputs at L = 16 and smaller: identical bytes. */
static void test_fast_vs_ref(void)
{
    static const struct { int L, K, V; tqp_tcode code; } cfg[] = {
        {16, 2, 1, TQP_TCODE_1MAD}, {16, 3, 1, TQP_TCODE_3INST}, {16, 4, 1, TQP_TCODE_1MAD},
        {16, 1, 1, TQP_TCODE_3INST}, {16, 2, 2, TQP_TCODE_HYB}, {16, 1, 2, TQP_TCODE_HYB},
        {12, 2, 1, TQP_TCODE_LUT}, {8, 2, 1, TQP_TCODE_1MAD}, {10, 2, 2, TQP_TCODE_LUT},
        {16, 2, 1, TQP_TCODE_GF8}};
    uint64_t s = 42;
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        tqp_trellis *t;
        CHECK(tqp_trellis_create(cfg[c].L, cfg[c].K, cfg[c].V, 256, cfg[c].code, NULL, &t) == TQP_OK);
        if (!t) continue;
        int nb = tqp_trellis_packed_bytes(t), same = 0, trials = 3;
        uint8_t *a = malloc(nb), *b = malloc(nb);
        float x[256], xa[256], xb[256];
        for (int tr = 0; tr < trials; tr++) {
            for (int i = 0; i < 256; i++) x[i] = (float)(t->rms * tu_normal(&s));
            double ea = tqp_trellis_encode_ref(t, x, a, xa), eb = tqp_trellis_encode(t, x, b, xb);
            same += !memcmp(a, b, nb) && ea == eb && !memcmp(xa, xb, sizeof xa);
        }
        CHECK_MSG(same == trials, "L=%d K=%d V=%d %s (%s): %d of %d identical", cfg[c].L, cfg[c].K,
                  cfg[c].V, tqp_tcode_name(cfg[c].code), tqp_trellis_isa(), same, trials);
        free(a), free(b);
        tqp_trellis_destroy(&t);
    }
}

int main(void)
{
    test_codes();
    test_gf8();
    test_bad_params();
    CHECK(tqp_trellis_check(16, 2, 2, 256, TQP_TCODE_GF8) == TQP_EINPUT); /* gf8 needs V 1 */
    CHECK(tqp_tcode_parse("gf8") == TQP_TCODE_GF8 && !strcmp(tqp_tcode_name(TQP_TCODE_GF8), "gf8"));
    exhaustive(4, 1, 1, 8, TQP_TCODE_1MAD, 20);
    exhaustive(5, 2, 1, 6, TQP_TCODE_3INST, 20);
    exhaustive(6, 1, 1, 10, TQP_TCODE_LUT, 10);
    exhaustive(5, 1, 2, 8, TQP_TCODE_HYB, 10);
    exhaustive(6, 2, 2, 6, TQP_TCODE_LUT, 10);
    /* every SIMD encoder this machine has: AVX-512, then AVX2 with AVX-512 masked off */
    printf("fast encoder: %s\n", tqp_trellis_isa());
    test_fast_vs_ref();
    setenv("TQP_NO_AVX512", "1", 1);
    printf("fast encoder: %s\n", tqp_trellis_isa());
    test_fast_vs_ref();
    return check_done();
}
