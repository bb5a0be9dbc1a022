/* The forward pass of every architecture against a float64 reference written here from the
 * models' definitions, token by token with a KV cache: Llama, Mistral with a sliding window
 * shorter than the window of tokens, Qwen2 (q/k/v biases), Qwen3 (RMSNorm of each q and k head
 * before the rotate-half RoPE, a head size that is not hidden / heads, with and without biases);
 * random checkpoints written as Hugging Face directories and loaded by the library.  Also: a
 * configuration's architecture features come from config.json, and what TQP does not run is
 * refused by name. */
#include <math.h>

#include "check.h"
#include "hfmodel.h"

static int verbose = 1;

static void rmsnorm64(double *o, const double *x, const float *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) o[i] = w[i] * x[i] * sc;
}

static void matvec64(double *o, const float *W, const float *b, const double *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = b ? b[r] : 0;
        for (int c = 0; c < cols; c++) s += (double)W[(size_t)r * cols + c] * x[c];
        o[r] = s;
    }
}

/* rotate-half RoPE: pair (j, j + hd/2) of each head turned by pos * theta^(-2j/hd) */
static void rope_half(double *v, int nh, int hd, int pos, double theta)
{
    for (int h = 0; h < nh; h++)
        for (int j = 0; j < hd / 2; j++) {
            double a = pos * pow(theta, -2.0 * j / hd), c = cos(a), s = sin(a);
            double *x = v + h * hd, x0 = x[j], x1 = x[j + hd / 2];
            x[j] = x0 * c - x1 * s;
            x[j + hd / 2] = x0 * s + x1 * c;
        }
}

/* logits (ntok, vocab) of the reference model */
static void reference(const hf_model *m, const uint32_t *tok, int ntok, double *logits)
{
    const tqp_config *c = &m->cfg;
    int d = c->dim, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int hid = c->hidden_dim, L = c->n_layers, V = c->vocab_size, group = c->n_heads / c->n_kv_heads;
    double *kc = calloc((size_t)L * ntok * kvd, sizeof *kc), *vc = calloc((size_t)L * ntok * kvd, sizeof *vc);
    double *x = malloc(sizeof *x * d), *xn = malloc(sizeof *xn * d), *q = malloc(sizeof *q * qd);
    double *att = malloc(sizeof *att * qd), *o = malloc(sizeof *o * d), *sc = malloc(sizeof *sc * ntok);
    double *g = malloc(sizeof *g * hid), *u = malloc(sizeof *u * hid), *dn = malloc(sizeof *dn * d);
    for (int p = 0; p < ntok; p++) {
        for (int i = 0; i < d; i++) x[i] = m->embed[(size_t)tok[p] * d + i];
        for (int l = 0; l < L; l++) {
            float *const *t = m->t[l];
            double *k = kc + ((size_t)l * ntok + p) * kvd, *v = vc + ((size_t)l * ntok + p) * kvd;
            rmsnorm64(xn, x, t[TQP_T_ATTN_NORM], d, c->rms_eps);
            matvec64(q, t[TQP_T_Q], t[TQP_T_Q_BIAS], xn, qd, d);
            matvec64(k, t[TQP_T_K], t[TQP_T_K_BIAS], xn, kvd, d);
            matvec64(v, t[TQP_T_V], t[TQP_T_V_BIAS], xn, kvd, d);
            if (c->qk_norm) {
                for (int h = 0; h < c->n_heads; h++) rmsnorm64(q + h * hd, q + h * hd, t[TQP_T_Q_NORM], hd, c->rms_eps);
                for (int h = 0; h < c->n_kv_heads; h++) rmsnorm64(k + h * hd, k + h * hd, t[TQP_T_K_NORM], hd, c->rms_eps);
            }
            rope_half(q, c->n_heads, hd, p, c->rope_theta);
            rope_half(k, c->n_kv_heads, hd, p, c->rope_theta);
            int first = c->sliding_window > 0 && p + 1 > c->sliding_window ? p + 1 - c->sliding_window : 0;
            for (int h = 0; h < c->n_heads; h++) {
                int kh = h / group;
                double mx = -1e300, sum = 0;
                for (int j = first; j <= p; j++) {
                    const double *kj = kc + ((size_t)l * ntok + j) * kvd + kh * hd;
                    double s = 0;
                    for (int i = 0; i < hd; i++) s += q[h * hd + i] * kj[i];
                    sc[j] = s / sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = first; j <= p; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int i = 0; i < hd; i++) {
                    double a = 0;
                    for (int j = first; j <= p; j++) a += sc[j] / sum * vc[((size_t)l * ntok + j) * kvd + kh * hd + i];
                    att[h * hd + i] = a;
                }
            }
            matvec64(o, t[TQP_T_O], NULL, att, d, qd);
            for (int i = 0; i < d; i++) x[i] += o[i];
            rmsnorm64(xn, x, t[TQP_T_FFN_NORM], d, c->rms_eps);
            matvec64(g, t[TQP_T_GATE], NULL, xn, hid, d);
            matvec64(u, t[TQP_T_UP], NULL, xn, hid, d);
            for (int i = 0; i < hid; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
            matvec64(dn, t[TQP_T_DOWN], NULL, g, d, hid);
            for (int i = 0; i < d; i++) x[i] += dn[i];
        }
        rmsnorm64(xn, x, m->norm, d, c->rms_eps);
        matvec64(logits + (size_t)p * V, m->head, NULL, xn, V, d);
    }
    free(kc), free(vc), free(x), free(xn), free(q), free(att), free(o), free(sc), free(g), free(u), free(dn);
}

static void arch_case(const char *dir, const char *name, tqp_config c, uint64_t seed,
                      tqp_dtype dtype)
{
    c.rms_eps = 1e-6f, c.rope_theta = 10000.0f, c.rope = TQP_ROPE_HALF;
    c.qkv_bias = c.qkv_bias || c.arch == TQP_ARCH_QWEN2;
    c.qk_norm = c.arch == TQP_ARCH_QWEN3;
    hf_model m;
    hf_model_random(&m, &c, seed);
    hf_model_round(&m, dtype); /* the reference runs on exactly the weights stored */
    char path[600], what[128];
    snprintf(what, sizeof what, "%s %s", name, tqp_dtype_name(dtype));
    snprintf(path, sizeof path, "%s/%s_%s", dir, name, tqp_dtype_name(dtype));
    CHECK_MSG(hf_model_write(&m, path, dtype, NULL) == TQP_OK, "%s: %s", what, tqp_error_message());
    tqp_model *lm = NULL;
    tqp_status s = tqp_model_load(path, &lm);
    CHECK_MSG(s == TQP_OK, "%s: %s", what, tqp_error_message());
    if (s == TQP_OK) {
        const tqp_config *k = &lm->cfg;
        CHECK_MSG(k->arch == c.arch && k->head_dim == c.head_dim && k->qkv_bias == c.qkv_bias &&
                      k->qk_norm == c.qk_norm && k->sliding_window == c.sliding_window,
                  "%s: config read back differs", what);
        enum { NTOK = 19 };
        uint32_t tok[NTOK];
        for (int i = 0; i < NTOK; i++) tok[i] = (uint32_t)((i * 7 + 3) % c.vocab_size);
        float *got = malloc(sizeof(float) * NTOK * c.vocab_size);
        double *want = malloc(sizeof(double) * NTOK * c.vocab_size);
        s = tu_logits(lm, tok, NTOK, got);
        CHECK_MSG(s == TQP_OK, "%s: %s", what, tqp_error_message());
        reference(&m, tok, NTOK, want);
        double md = 0, mb = 0;
        for (size_t i = 0; i < (size_t)NTOK * c.vocab_size; i++) {
            md = fmax(md, fabs(got[i] - want[i]));
            mb = fmax(mb, fabs(want[i]));
        }
        /* 1e-5 of the largest logit: fp32 arithmetic against float64 */
        CHECK_MSG(md <= 1e-5 * mb, "%s: logits differ from the reference by %.3g of %.3g", what, md, mb);
        if (verbose) printf("%-16s max |logit - reference| %.3g of %.3g (%.2g)\n", what, md, mb, md / mb);
        free(got), free(want);
    }
    tqp_model_destroy(&lm);
    hf_model_free(&m);
}

/* config.json features: refused by name where TQP does not run them. */
static void test_refusals(const char *dir)
{
    tqp_config c = {.dim = 16, .hidden_dim = 24, .n_layers = 1, .n_heads = 2, .n_kv_heads = 1,
                    .head_dim = 8, .vocab_size = 20, .max_seq_len = 32, .arch = TQP_ARCH_LLAMA,
                    .rms_eps = 1e-6f, .rope_theta = 10000.0f};
    hf_model m;
    hf_model_random(&m, &c, 5);
    char path[600], cfg[700];
    snprintf(path, sizeof path, "%s/refuse", dir);
    CHECK(hf_model_write(&m, path, TQP_DTYPE_F32, NULL) == TQP_OK);
    hf_model_free(&m);
    /* a Qwen2 bias one element short */
    tqp_config q2 = c;
    q2.arch = TQP_ARCH_QWEN2, q2.qkv_bias = 1;
    hf_model_random(&m, &q2, 6);
    snprintf(path, sizeof path, "%s/shortbias", dir);
    CHECK(hf_model_write(&m, path, TQP_DTYPE_F32, "model.layers.0.self_attn.v_proj.bias") == TQP_OK);
    hf_model_free(&m);
    tqp_model *sm = NULL;
    tqp_status ss = tqp_model_load(path, &sm);
    CHECK_MSG(ss == TQP_EINPUT && strstr(tqp_error_message(), "model.safetensors: tensor "
                                         "model.layers.0.self_attn.v_proj.bias has shape [7]"),
              "status %d '%s'", ss, tqp_error_message());
    tqp_model_destroy(&sm);
    snprintf(path, sizeof path, "%s/refuse", dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", path);
    struct {
        const char *from, *to, *needle;
    } cases[] = {
        {"\"LlamaForCausalLM\"", "\"GPTNeoXForCausalLM\"", "architecture GPTNeoXForCausalLM is not supported"},
        {"\"model_type\"", "\"attention_bias\": true, \"model_type\"", "attention_bias is not supported for LlamaForCausalLM"},
        {"\"model_type\"", "\"mlp_bias\": true, \"model_type\"", "mlp_bias is not supported"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char *text = NULL;
        size_t len;
        CHECK(tqp_file_read_all(cfg, &text, &len) == TQP_OK);
        char *at = text ? strstr(text, cases[k].from) : NULL;
        CHECK(at != NULL);
        if (!at) {
            free(text);
            continue;
        }
        char bad[800], out[8192];
        snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, cases[k].to, at + strlen(cases[k].from));
        snprintf(bad, sizeof bad, "%s/bad%zu", dir, k);
        mkdir(bad, 0755);
        char bcfg[900], bst[900], st[900];
        snprintf(bcfg, sizeof bcfg, "%s/config.json", bad);
        snprintf(bst, sizeof bst, "%s/model.safetensors", bad);
        snprintf(st, sizeof st, "%s/model.safetensors", path);
        tu_write_file(bcfg, out, strlen(out));
        CHECK(symlink(st, bst) == 0);
        tqp_model *lm = NULL;
        tqp_status s = tqp_model_load(bad, &lm);
        CHECK_MSG(s == TQP_EINPUT && strstr(tqp_error_message(), cases[k].needle),
                  "%s: status %d '%s'", cases[k].needle, s, tqp_error_message());
        tqp_model_destroy(&lm);
        free(text);
    }
}

int main(void)
{
    char *dir = tu_mkdtemp();
    tqp_config base = {.dim = 32, .hidden_dim = 48, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2,
                       .head_dim = 8, .vocab_size = 40, .max_seq_len = 64};
    tqp_config c = base;
    for (int dt = 0; dt < 3; dt++) {
        tqp_dtype dtype = (tqp_dtype)dt;
        c = base, c.arch = TQP_ARCH_LLAMA;
        arch_case(dir, "llama", c, 1, dtype);
        c.arch = TQP_ARCH_MISTRAL, c.sliding_window = 5;
        arch_case(dir, "mistral", c, 2, dtype);
        c = base, c.arch = TQP_ARCH_QWEN2, c.tied_embeddings = 1;
        arch_case(dir, "qwen2", c, 3, dtype);
        c = base, c.arch = TQP_ARCH_QWEN3, c.head_dim = 12; /* heads x head_dim = 48, not 32 */
        arch_case(dir, "qwen3", c, 4, dtype);
        c.qkv_bias = 1; /* attention_bias: true */
        arch_case(dir, "qwen3_bias", c, 5, dtype);
    }
    test_refusals(dir);
    tu_rmdir(dir);
    return check_done();
}
