/* The forward pass against an independent float64 reference written here: token by token with
 * a KV cache, llama2.c style (adjacent-pair RoPE), on small random models with grouped-query
 * attention, shared and separate classifiers.  Also: the converted Hugging Face directory
 * (rotate-half RoPE, permuted q/k rows) gives the same logits in F32, and close ones in F16/BF16.
 */
#include <math.h>

#include "check.h"
#include "testutil.h"
#include "tqp/convert.h"

/* ---- float64 reference ---- */

static void ref_rmsnorm(double *o, const double *x, const float *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        o[i] = w[i] * x[i] * sc;
}

/* o (rows) = W (rows, cols) x (cols) */
static void ref_matvec(double *o, const float *W, const double *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)W[(size_t)r * cols + c] * x[c];
        o[r] = s;
    }
}

static void ref_rope(double *v, int nh, int hd, int pos, double theta)
{
    for (int h = 0; h < nh; h++)
        for (int j = 0; j < hd / 2; j++) {
            double a = pos * pow(theta, -2.0 * j / hd), c = cos(a), s = sin(a);
            double *p = v + h * hd + 2 * j, x0 = p[0], x1 = p[1];
            p[0] = x0 * c - x1 * s;
            p[1] = x0 * s + x1 * c;
        }
}

/* logits (ntok, vocab) in float64 */
static void ref_forward(const tu_model *m, const uint32_t *tok, int ntok, double *logits)
{
    const tqp_config *c = &m->cfg;
    int d = c->dim, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int hid = c->hidden_dim, L = c->n_layers, grp = c->n_heads / c->n_kv_heads;
    double *x = calloc(d, 8), *xb = calloc(qd > d ? qd : d, 8), *q = calloc(qd, 8);
    double *att = calloc(qd, 8), *h1 = calloc(hid, 8), *h3 = calloc(hid, 8), *t = calloc(d, 8);
    double *kc = calloc((size_t)L * ntok * kvd, 8), *vc = calloc((size_t)L * ntok * kvd, 8);
    double *sc = calloc(ntok, 8);
    for (int p = 0; p < ntok; p++) {
        for (int i = 0; i < d; i++)
            x[i] = m->embed[(size_t)tok[p] * d + i];
        for (int l = 0; l < L; l++) {
            double *k = kc + ((size_t)l * ntok + p) * kvd, *v = vc + ((size_t)l * ntok + p) * kvd;
            ref_rmsnorm(xb, x, m->rms_att + l * d, d, c->rms_eps);
            ref_matvec(q, m->wq + (size_t)l * qd * d, xb, qd, d);
            ref_matvec(k, m->wk + (size_t)l * kvd * d, xb, kvd, d);
            ref_matvec(v, m->wv + (size_t)l * kvd * d, xb, kvd, d);
            ref_rope(q, c->n_heads, hd, p, c->rope_theta);
            ref_rope(k, c->n_kv_heads, hd, p, c->rope_theta);
            for (int h = 0; h < c->n_heads; h++) {
                int kh = h / grp;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= p; j++) {
                    const double *kj = kc + ((size_t)l * ntok + j) * kvd + kh * hd;
                    double s = 0;
                    for (int i = 0; i < hd; i++)
                        s += q[h * hd + i] * kj[i];
                    sc[j] = s / sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= p; j++)
                    sum += (sc[j] = exp(sc[j] - mx));
                for (int i = 0; i < hd; i++) {
                    double o = 0;
                    for (int j = 0; j <= p; j++)
                        o += sc[j] / sum * vc[((size_t)l * ntok + j) * kvd + kh * hd + i];
                    att[h * hd + i] = o;
                }
            }
            ref_matvec(t, m->wo + (size_t)l * d * qd, att, d, qd);
            for (int i = 0; i < d; i++)
                x[i] += t[i];
            ref_rmsnorm(xb, x, m->rms_ffn + l * d, d, c->rms_eps);
            ref_matvec(h1, m->w1 + (size_t)l * hid * d, xb, hid, d);
            ref_matvec(h3, m->w3 + (size_t)l * hid * d, xb, hid, d);
            for (int i = 0; i < hid; i++)
                h1[i] = h1[i] / (1 + exp(-h1[i])) * h3[i];
            ref_matvec(t, m->w2 + (size_t)l * d * hid, h1, d, hid);
            for (int i = 0; i < d; i++)
                x[i] += t[i];
        }
        ref_rmsnorm(xb, x, m->rms_final, d, c->rms_eps);
        ref_matvec(logits + (size_t)p * c->vocab_size, m->wcls, xb, c->vocab_size, d);
    }
    double *all[] = {x, xb, q, att, h1, h3, t, kc, vc, sc};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
}

/* max |a - b| / max |b| */
static double rel_diff_f(const float *a, const double *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs(a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return md / mb;
}

static double rel_diff_ff(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / mb;
}

static float *model_logits(const char *path, const uint32_t *tok, int ntok, int *vocab)
{
    tqp_model *m = NULL;
    tqp_status s = tqp_model_load(path, &m);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    if (s != TQP_OK) return NULL;
    *vocab = m->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * (size_t)ntok * m->cfg.vocab_size);
    s = tu_logits(m, tok, ntok, lg);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    tqp_model_destroy(&m);
    return lg;
}

static void convert_to(const char *bin, const char *dir, tqp_dtype dt)
{
    tqp_model *m = NULL;
    CHECK(tqp_model_load(bin, &m) == TQP_OK);
    tqp_status s = tqp_convert_to_hf(m, dir, dt, NULL);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    tqp_model_destroy(&m);
}

static void random_model_case(const tqp_config *c, int shared, uint64_t seed, int ntok)
{
    char *dir = tu_mkdtemp(), bin[600], hf[600];
    snprintf(bin, sizeof bin, "%s/m.bin", dir);
    snprintf(hf, sizeof hf, "%s/hf", dir);
    tu_model tm;
    tu_model_random(&tm, c, shared, seed);
    CHECK(tu_model_write_llama2c(&tm, bin) == 0);
    uint32_t *tok = malloc(sizeof *tok * ntok);
    uint64_t s = seed * 7 + 1;
    for (int i = 0; i < ntok; i++)
        tok[i] = (uint32_t)(tu_next(&s) % c->vocab_size);
    double *ref = malloc(sizeof *ref * (size_t)ntok * c->vocab_size);
    ref_forward(&tm, tok, ntok, ref);
    int V = 0;
    float *got = model_logits(bin, tok, ntok, &V);
    size_t n = (size_t)ntok * c->vocab_size;
    if (got) {
        double e = rel_diff_f(got, ref, n);
        CHECK_MSG(e < 2e-5, "llama2.c logits vs float64 reference: rel diff %.3g", e);
    }
    const tqp_dtype dts[] = {TQP_DTYPE_F32, TQP_DTYPE_F16, TQP_DTYPE_BF16};
    const double tol[] = {1e-5, 5e-3, 4e-2};
    for (int i = 0; i < 3 && got; i++) {
        convert_to(bin, hf, dts[i]);
        float *hg = model_logits(hf, tok, ntok, &V);
        if (hg) {
            double e = rel_diff_ff(hg, got, n);
            CHECK_MSG(e <= tol[i], "HF %s logits vs .bin: rel diff %.3g", tqp_dtype_name(dts[i]),
                      e);
        }
        free(hg);
    }
    free(got);
    free(ref);
    free(tok);
    tu_model_free(&tm);
    tu_rmdir(dir);
}

/* The q/k permutation is a pure row permutation: every row lands exactly once. */
static void test_permutation(void)
{
    int nh = 3, hd = 8, cols = 2;
    float w[3 * 8 * 2], tmp[8 * 2];
    for (int i = 0; i < nh * hd * cols; i++)
        w[i] = (float)(i / cols);
    tqp_permute_rope_rows(w, nh, hd, cols, tmp);
    for (int h = 0; h < nh; h++)
        for (int p = 0; p < 2; p++)
            for (int j = 0; j < hd / 2; j++)
                CHECK(w[(h * hd + p * hd / 2 + j) * cols] == (float)(h * hd + 2 * j + p));
}

int main(void)
{
    tqp_config c = {.dim = 48,
                    .hidden_dim = 40,
                    .n_layers = 2,
                    .n_heads = 6,
                    .n_kv_heads = 2,
                    .head_dim = 8,
                    .vocab_size = 37,
                    .max_seq_len = 32,
                    .rms_eps = 1e-5f,
                    .rope_theta = 10000.0f,
                    .rope = TQP_ROPE_ADJACENT};
    test_permutation();
    random_model_case(&c, 1, 11, 32); /* GQA 6/2, shared classifier */
    random_model_case(&c, 0, 12, 17); /* separate classifier, odd length */
    c.n_kv_heads = 6;
    c.n_layers = 3;
    random_model_case(&c, 0, 13, 9); /* plain multi-head attention */
    return check_done();
}
