/* Batch-1 decoding (infer.h) against the window forward (forward.h) that tqp eval runs:
 *  - full precision, greedy: the engine's tokens are the argmax of the forward's logits of the
 *    same prefix, and its logits equal the forward's within fp32 tolerance at every step;
 *  - quantized files given on the command line (test_generate_cli.sh makes them): the logits
 *    computed from the codes equal those of the forward on the decoded fp32 weights, and
 *    nothing was decoded to build the engine;
 *    (the integer kernels, 1mul's, gf8's and E8P's, which round activations to 16 bits,
 *    within 5e-4);
 *  - 1 and 2 threads give bit-identical logits; the reference kernels agree with the SIMD ones;
 *  - the scalar-grid fused kernel (smv.h) against a float64 product of the decoded codes, with
 *    poisoned outputs and every shape remainder;
 *  - sampling: temperature 0 is the argmax, top-p cuts the tail, frequencies follow the
 *    softmax.
 * Usage: test_infer [--qfile FILE.h5 ...] */
#include <mpi.h>

#include "check.h"
#include "mvutil.h"
#include "testutil.h"
#include "tqp/eval.h"
#include "tqp/infer.h"
#include "tqp/quant.h"
#include "tqp/tokenizer.h"

/* Open MPI keeps allocations until exit; none of the leaks reported here has a TQP frame. */
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static char model_path[1024];

enum { GEN = 48 };

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) b = v[i] > v[b] ? i : b;
    return b;
}

/* Greedy decoding of GEN tokens after the prompt with engine e (threads), logits of every step
 * into L (GEN, vocab) and the tokens into seq (np + GEN). */
static tqp_status greedy(tqp_infer *e, const uint32_t *prompt, int np, int threads, uint32_t *seq,
                         float *L)
{
    int V = e->cfg.vocab_size;
    tqp_infer_reset(e);
    memcpy(seq, prompt, sizeof(uint32_t) * (size_t)np);
    for (int i = 0; i < np - 1; i++) TQP_CHECK(tqp_infer_step(e, prompt[i], NULL, threads));
    for (int g = 0; g < GEN; g++) {
        TQP_CHECK(tqp_infer_step(e, seq[np - 1 + g], L + (size_t)g * V, threads));
        seq[np + g] = (uint32_t)argmax(L + (size_t)g * V, V);
    }
    return TQP_OK;
}

/* max over the steps of max_i |a - b| / max(1, max_i |b|) */
static double worst_rel(const float *a, const float *b, int rows, int V, size_t ldb)
{
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double big = 1, d = 0;
        for (int i = 0; i < V; i++) {
            double bi = fabs(b[r * ldb + i]);
            big = bi > big ? bi : big;
            double di = fabs((double)a[(size_t)r * V + i] - b[r * ldb + i]);
            d = di > d || isnan(di) ? di : d;
        }
        d /= big;
        worst = d > worst || isnan(d) ? d : worst;
    }
    return worst;
}

/* The engine against the window forward on the same tokens, and its determinism. */
static void compare_engine(const char *what, const tqp_model *m, tqp_qfile *q,
                           const tqp_weight_source *src, const uint32_t *prompt, int np)
{
    int V = m->cfg.vocab_size, n = np + GEN;
    tqp_infer *e = NULL, *eref = NULL;
    uint32_t *seq = malloc(sizeof(uint32_t) * n), *seq2 = malloc(sizeof(uint32_t) * n);
    float *L = malloc(sizeof(float) * GEN * V), *L2 = malloc(sizeof(float) * GEN * V);
    float *F = malloc(sizeof(float) * (size_t)n * V);
    int64_t before = q ? tqp_qfile_decoded(q) : 0;
    CHECK(tqp_infer_load(m, q, n, TQP_TMV_AUTO, &e) == TQP_OK);
    if (!e) return;
    if (q) CHECK_MSG(tqp_qfile_decoded(q) == before, "%s: the engine decoded matrices", what);
    char desc[128];
    tqp_infer_describe(e, desc, sizeof desc);
    CHECK(greedy(e, prompt, np, 1, seq, L) == TQP_OK);
    /* the forward over prompt + GEN - 1 generated tokens: row np - 1 + g predicts token np + g */
    CHECK(tu_logits_src(m, src, seq, n - 1, F) == TQP_OK);
    double err = worst_rel(L, F + (size_t)(np - 1) * V, GEN, V, (size_t)V);
    printf("%s [%s]: %d steps, worst logit difference %.2e of the largest logit\n", what, desc,
           GEN, err);
    /* the integer kernels (1mul, gf8, E8P) round each product's activations to 16 bits
     * (matvec.h) */
    double tol = strstr(desc, "i16") || strstr(desc, "gf8") ? 5e-4 : 2e-5;
    CHECK_MSG(err <= tol, "%s: logits differ from the window forward by %.3g", what, err);
    /* greedy: each token is the forward's argmax, unless the top two are within tolerance */
    int agree = 0;
    for (int g = 0; g < GEN; g++) {
        const float *row = F + (size_t)(np - 1 + g) * V;
        int a = argmax(row, V);
        if ((uint32_t)a == seq[np + g] || fabsf(row[a] - row[seq[np + g]]) <= 1e-4f) agree++;
    }
    CHECK_MSG(agree == GEN, "%s: %d of %d greedy tokens agree with the forward's argmax", what,
              agree, GEN);
    /* two threads: the same bits */
    CHECK(greedy(e, prompt, np, 2, seq2, L2) == TQP_OK);
    CHECK_MSG(!memcmp(L, L2, sizeof(float) * GEN * V), "%s: 2 threads changed the logits", what);
    CHECK(!memcmp(seq, seq2, sizeof(uint32_t) * n));
    /* the plain C kernels: the same up to float rounding order */
    CHECK(tqp_infer_load(m, q, n, TQP_TMV_REFERENCE, &eref) == TQP_OK);
    if (eref) {
        CHECK(greedy(eref, prompt, np, 1, seq2, L2) == TQP_OK);
        double er = worst_rel(L2, L, GEN, V, (size_t)V);
        CHECK_MSG(er <= tol, "%s: reference kernels differ by %.3g", what, er);
    }
    /* the cache is full: one more step is refused, not written past the end */
    tqp_infer_reset(e);
    for (int i = 0; i < n; i++) tqp_infer_step(e, seq[i], NULL, 1);
    CHECK(tqp_infer_step(e, seq[0], NULL, 1) == TQP_EUSAGE);
    CHECK(tqp_infer_step(eref ? eref : e, (uint32_t)V, NULL, 1) != TQP_OK);
    tqp_infer_destroy(&e);
    tqp_infer_destroy(&eref);
    free(seq), free(seq2), free(L), free(L2), free(F);
}

/* The scalar-grid kernel against float64 on random codes, every remainder of the 64-code runs
 * and the 8 lanes, with and without a rotation. */
static void test_smv(void)
{
    static const int shapes[][2] = {{1, 1}, {3, 7}, {16, 64}, {17, 65}, {5, 130}, {64, 172}};
    uint64_t seed = 0x736d76;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int bits = 1; bits <= 8; bits++)
            for (int rk = 0; rk < 2; rk++) {
                int m = shapes[si][0], n = shapes[si][1];
                size_t count = (size_t)m * n, bytes = tqp_pack_bytes(count, bits);
                uint8_t *packed = malloc(bytes);
                uint32_t *codes = malloc(sizeof(uint32_t) * count);
                double *W = malloc(sizeof(double) * count), *yref = malloc(sizeof(double) * m);
                float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * m);
                for (size_t i = 0; i < count; i++)
                    codes[i] = (uint32_t)(tqp_splitmix64(&seed) >> 56) & ((1u << bits) - 1);
                tqp_pack_codes(codes, count, bits, packed);
                mv_random_floats(&seed, x, n);
                tqp_rot rot = {0};
                CHECK(tqp_rot_create(rk ? TQP_ROT_RHT : TQP_ROT_NONE, m, n, seed, seed + 1,
                                     &rot) == TQP_OK);
                double scale = 0.37;
                for (size_t i = 0; i < count; i++)
                    W[i] = scale * tqp_codebooks[TQP_CB_SCALAR].decode(codes[i], bits);
                CHECK(tqp_rot_weights(&rot, W, 1) == TQP_OK);
                for (int i = 0; i < m; i++) {
                    yref[i] = 0;
                    for (int j = 0; j < n; j++) yref[i] += W[(size_t)i * n + j] * x[j];
                }
                tqp_smv *op = NULL;
                CHECK(tqp_smv_create(packed, m, n, bits, scale, &rot, &op) == TQP_OK);
                for (int t = 1; t <= 2 && op; t++) {
                    for (int i = 0; i < m; i++) y[i] = NAN; /* every output must be written */
                    tqp_smv_apply(op, x, y, t);
                    int finite;
                    double err = mv_worst_error(y, yref, W, x, m, n, 1.0, &finite);
                    CHECK_MSG(finite && err < 1e-5, "smv %dx%d %d bits rot %d threads %d: %g", m,
                              n, bits, rk, t, err);
                }
                /* the values in code units, exactly: unit vectors pick out columns */
                if (op && !rk) {
                    float *e = calloc((size_t)n, sizeof(float)), *z = malloc(sizeof(float) * m);
                    int exact = 1;
                    for (int j = 0; j < n; j++) {
                        e[j] = 1;
                        tqp_smv_apply_codes(op, e, z, 1);
                        for (int i = 0; i < m; i++)
                            exact &= z[i] == (float)tqp_codebooks[TQP_CB_SCALAR].decode(
                                                 codes[(size_t)i * n + j], bits);
                        e[j] = 0;
                    }
                    CHECK_MSG(exact, "smv %dx%d %d bits: decoded values differ", m, n, bits);
                    free(e), free(z);
                }
                tqp_smv_destroy(&op);
                tqp_rot_destroy(&rot);
                free(packed), free(codes), free(W), free(yref), free(x), free(y);
            }
    tqp_smv *op = NULL;
    uint8_t b = 0;
    CHECK(tqp_smv_create(&b, 1, 1, 9, 1.0, NULL, &op) == TQP_EUSAGE && !op);
}

static void test_sample(void)
{
    enum { V = 6, DRAWS = 60000 };
    const float logits[V] = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f};
    int order[V], count[V] = {0};
    double prob[V], p[V], sum = 0;
    uint64_t rng = 7;
    CHECK(tqp_sample(logits, V, 0, 0.9, &rng, order, prob) == 1); /* the first of two equals */
    CHECK(rng == 7);                                               /* greedy draws nothing */
    for (int i = 0; i < V; i++) sum += p[i] = exp((logits[i] - 3.0) / 0.7);
    for (int i = 0; i < V; i++) p[i] /= sum;
    for (int d = 0; d < DRAWS; d++) count[tqp_sample(logits, V, 0.7, 1.0, &rng, order, prob)]++;
    for (int i = 0; i < V; i++) {
        double f = (double)count[i] / DRAWS, sd = sqrt(p[i] * (1 - p[i]) / DRAWS);
        CHECK_MSG(fabs(f - p[i]) <= 5 * sd + 1e-9, "token %d: frequency %g, probability %g", i,
                  f, p[i]);
    }
    /* top-p 0.5: the two most probable (ids 1 and 3, 0.36 each at T = 0.7) and nothing else */
    memset(count, 0, sizeof count);
    for (int d = 0; d < 4000; d++) count[tqp_sample(logits, V, 0.7, 0.5, &rng, order, prob)]++;
    CHECK(count[1] > 1500 && count[3] > 1500 && count[1] + count[3] == 4000);
    /* the same seed, the same draws */
    uint64_t r1 = 99, r2 = 99;
    int same = 1;
    for (int d = 0; d < 100; d++)
        same &= tqp_sample(logits, V, 1.0, 0.95, &r1, order, prob) ==
                tqp_sample(logits, V, 1.0, 0.95, &r2, order, prob);
    CHECK(same);
}

/* A random model wide enough that the products (512 x 512 and up) and the attention run on
 * both threads: the same comparisons. */
static void wide_model(void)
{
    tqp_config c = {.dim = 512, .hidden_dim = 1024, .n_layers = 2, .n_heads = 8,
                    .n_kv_heads = 4, .head_dim = 64, .vocab_size = 700, .max_seq_len = 256,
                    .rms_eps = 1e-5f, .rope_theta = 10000.0f, .rope = TQP_ROPE_ADJACENT};
    tu_model tm;
    tu_model_random(&tm, &c, 0, 99);
    char *dir = tu_mkdtemp(), path[600];
    snprintf(path, sizeof path, "%s/wide.bin", dir);
    CHECK(tu_model_write_llama2c(&tm, path) == 0);
    tu_model_free(&tm);
    tqp_model *m = NULL;
    CHECK(tqp_model_load(path, &m) == TQP_OK);
    if (m) {
        uint32_t prompt[200];
        uint64_t seed = 3;
        for (int i = 0; i < 200; i++) prompt[i] = (uint32_t)(tu_next(&seed) % 700);
        tqp_weight_source src = {.layer = tu_model_layer_, .ctx = m};
        compare_engine("wide random model", m, NULL, &src, prompt, 200);
    }
    tqp_model_destroy(&m);
    tu_rmdir(dir);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    const char *dir = getenv("TQP_DATA_DIR");
    snprintf(model_path, sizeof model_path, "%s/models/stories260K/stories260K.bin",
             dir && *dir ? dir : TQP_DEFAULT_DATA_DIR);
    test_sample();
    test_smv();
    tqp_model *m = NULL;
    tqp_tokenizer *tok = NULL;
    char tok_path[1100];
    snprintf(tok_path, sizeof tok_path, "%s/models/stories260K/tok512.bin",
             dir && *dir ? dir : TQP_DEFAULT_DATA_DIR);
    CHECK(tqp_model_load(model_path, &m) == TQP_OK);
    CHECK(m && tqp_tokenizer_load(tok_path, m->cfg.vocab_size, &tok) == TQP_OK);
    if (!m || !tok) return check_done();
    const char *text = "Once upon a time, a little fox";
    uint32_t *prompt = NULL;
    size_t np = 0;
    CHECK(tqp_tokenizer_encode(tok, text, strlen(text), 1, 0, &prompt, &np) == TQP_OK);
    tqp_weight_source msrc = {.layer = tu_model_layer_, .ctx = m};
    compare_engine("full precision", m, NULL, &msrc, prompt, (int)np);
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--qfile")) continue;
        tqp_qfile *q = NULL;
        CHECK_MSG(tqp_qfile_open(argv[i + 1], m, &q) == TQP_OK, "%s: %s", argv[i + 1],
                  tqp_error_message());
        if (!q) continue;
        tqp_weight_source qsrc = tqp_qfile_source_shared(q, MPI_COMM_WORLD);
        compare_engine(argv[i + 1], m, q, &qsrc, prompt, (int)np);
        tqp_qfile_close(&q);
    }
    free(prompt);
    tqp_tokenizer_destroy(&tok);
    tqp_model_destroy(&m);
    wide_model();
    int rc = check_done();
    MPI_Finalize();
    return rc;
}
