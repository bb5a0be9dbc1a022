/* fp32 Llama forward pass (RMSNorm, RoPE, grouped-query attention, SwiGLU), one window and one
 * layer per call, every product through OpenBLAS sgemm.  It computes activations only; it does
 * not load weights (model.c) or schedule windows over ranks (eval.c, hessian.c). */
#include "tqp/forward.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/threads.h"

enum { HEAD_ROWS = 64 }; /* logits are computed this many rows at a time */
/* Every product is computed in blocks of this many output columns, one sgemm each, whatever
 * the thread count: threads take whole blocks, so a window's values never depend on them. */
enum { FWD_COLS = 512 };

struct tqp_forward {
    tqp_config cfg;
    int max_tokens;
    float *xb;                  // (max_tokens, max(dim, qdim)) normalized input / attention output
    float *q;                   // (max_tokens, n_heads * head_dim)
    float *k;                   // (max_tokens, n_kv_heads * head_dim)
    float *v;                   // (max_tokens, n_kv_heads * head_dim)
    float *scores;              // (max_tokens, max_tokens) one head's attention matrix
    float *hb;                  // (max_tokens, hidden_dim) gate, then silu(gate) * up
    float *hb2;                 // (max_tokens, hidden_dim) up
    float *logits;              // (HEAD_ROWS, vocab)
    float *rope_cos, *rope_sin; // (max_tokens, head_dim / 2)
    int threads;                // threads for the blocks of each product and the heads
    float *scores_more;         // (threads - 1, max_tokens, max_tokens) other threads' scores
    int scores_threads;         // threads the score buffers serve
};

static const char *const group_names[TQP_GROUP_COUNT] = {"qkv", "o", "gate_up", "down"};

const char *tqp_group_name(tqp_group g)
{
    return group_names[g];
}

int tqp_group_width(const tqp_config *c, tqp_group g)
{
    switch (g) {
    case TQP_GROUP_O:
        return c->n_heads * c->head_dim;
    case TQP_GROUP_DOWN:
        return c->hidden_dim;
    default:
        return c->dim;
    }
}

static void fill_rope(tqp_forward *f)
{
    int half = f->cfg.head_dim / 2;
    for (int p = 0; p < f->max_tokens; p++)
        for (int j = 0; j < half; j++) {
            double freq = tqp_rope_inv_freq(&f->cfg, j);
            double a = p * freq;
            f->rope_cos[(size_t)p * half + j] = (float)cos(a);
            f->rope_sin[(size_t)p * half + j] = (float)sin(a);
        }
}

tqp_status tqp_forward_create(const tqp_config *cfg, int max_tokens, tqp_forward **out)
{
    *out = NULL;
    tqp_forward *f = tqp_calloc(1, sizeof *f);
    if (!f) return TQP_ENOMEM;
    f->cfg = *cfg;
    f->max_tokens = max_tokens;
    f->threads = f->scores_threads = 1;
    tqp_blas_threads_set(1); /* a window's products are single-threaded calls (forward.h) */
    size_t T = (size_t)max_tokens, qd = (size_t)cfg->n_heads * cfg->head_dim;
    size_t kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    size_t wide = qd > (size_t)cfg->dim ? qd : (size_t)cfg->dim;
    float **bufs[] = {&f->xb, &f->q,   &f->k,      &f->v,        &f->scores,
                      &f->hb, &f->hb2, &f->logits, &f->rope_cos, &f->rope_sin};
    size_t sizes[] = {T * wide,
                      T * qd,
                      T * kvd,
                      T * kvd,
                      T * T,
                      T * cfg->hidden_dim,
                      T * cfg->hidden_dim,
                      (size_t)HEAD_ROWS * cfg->vocab_size,
                      T * cfg->head_dim / 2,
                      T * cfg->head_dim / 2};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!(*bufs[i] = tqp_malloc_aligned(sizes[i] * sizeof(float)))) {
            tqp_forward_destroy(&f);
            return TQP_ENOMEM;
        }
    fill_rope(f);
    *out = f;
    return TQP_OK;
}

void tqp_forward_destroy(tqp_forward **pf)
{
    tqp_forward *f = *pf;
    if (!f) return;
    float *bufs[] = {f->xb, f->q,   f->k,      f->v,        f->scores,
                     f->hb, f->hb2, f->logits, f->rope_cos, f->rope_sin};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(f->scores_more);
    free(f);
    *pf = NULL;
}

void tqp_forward_embed(const tqp_forward *f, const float *embed, const uint32_t *tokens, int ntok,
                       float *x)
{
    size_t d = (size_t)f->cfg.dim;
    for (int t = 0; t < ntok; t++)
        memcpy(x + t * d, embed + tokens[t] * d, d * sizeof(float));
}

/* out (ntok, n) = rmsnorm(x (ntok, n)) * w (n); the mean square is accumulated in float64. */
static void rmsnorm(float *out, const float *x, const float *w, int ntok, int n, float eps)
{
    for (int t = 0; t < ntok; t++) {
        const float *xr = x + (size_t)t * n;
        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)xr[i] * xr[i];
        float scale = (float)(1.0 / sqrt(ss / n + eps));
        for (int i = 0; i < n; i++)
            out[(size_t)t * n + i] = w[i] * (scale * xr[i]);
    }
}

/* C (m, n) = A (m, k) * W (n, k)^T + beta * C, in blocks of FWD_COLS columns over f->threads */
static void matmul_wt(const tqp_forward *f, float *C, const float *A, const float *W, int m, int n,
                      int k, float beta)
{
    int nb = (n + FWD_COLS - 1) / FWD_COLS;
#pragma omp parallel for num_threads(f->threads) schedule(dynamic, 1) if (f->threads > 1 && nb > 1)
    for (int b = 0; b < nb; b++) {
        int c0 = b * FWD_COLS, w = n - c0 < FWD_COLS ? n - c0 : FWD_COLS;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, w, k, 1.0f, A, k,
                    W + (size_t)c0 * k, k, beta, C + c0, n);
    }
}

tqp_status tqp_forward_set_threads(tqp_forward *f, int threads)
{
    threads = threads > 1 ? threads : 1;
    if (threads > f->scores_threads) { /* a score matrix per thread for the heads */
        size_t tt = (size_t)f->max_tokens * f->max_tokens;
        float *more = tqp_malloc_aligned(sizeof(float) * tt * (size_t)(threads - 1));
        if (!more) return TQP_ENOMEM;
        free(f->scores_more);
        f->scores_more = more;
        f->scores_threads = threads;
    }
    f->threads = threads;
    return TQP_OK;
}

/* Rotate each head of x (ntok, nh * hd) by its position. */
static void rope(const tqp_forward *f, float *x, int ntok, int nh)
{
    int hd = f->cfg.head_dim, half = hd / 2;
    for (int t = 0; t < ntok; t++) {
        const float *c = f->rope_cos + (size_t)t * half, *s = f->rope_sin + (size_t)t * half;
        for (int h = 0; h < nh; h++) {
            float *v = x + (size_t)t * nh * hd + (size_t)h * hd;
            for (int j = 0; j < half; j++) {
                /* adjacent pairs (2j, 2j+1) for llama2.c, halves (j, j+half) for HF */
                float *a = f->cfg.rope == TQP_ROPE_ADJACENT ? &v[2 * j] : &v[j];
                float *b = f->cfg.rope == TQP_ROPE_ADJACENT ? &v[2 * j + 1] : &v[j + half];
                float a0 = *a, b0 = *b;
                *a = a0 * c[j] - b0 * s[j];
                *b = a0 * s[j] + b0 * c[j];
            }
        }
    }
}

/* exp(x) for x <= 0 (softmax arguments), branch-free so that loops over it vectorize:
 * 2^n * p(r) with r = x - n ln 2 in [-ln2/2, ln2/2] and a degree-6 Taylor polynomial
 * (relative error < 2e-7, about 2 ulp); x below -87 is clamped to -87 (exp = 1.6e-38,
 * negligible next to a softmax denominator >= 1). */
static inline float exp_neg(float x)
{
    x = x > -87.0f ? x : -87.0f;
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float p =
        1.0f +
        r * (1.0f +
             r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    union {
        int32_t i;
        float f;
    } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

#ifdef __SSE2__
#include <emmintrin.h>
/* exp_neg on 4 lanes: the same steps with SSE2 (part of every x86-64). */
static inline __m128 exp_neg4(__m128 x)
{
    x = _mm_max_ps(x, _mm_set1_ps(-87.0f));
    __m128i ni = _mm_cvtps_epi32(_mm_mul_ps(x, _mm_set1_ps(1.44269504f))); /* nearest */
    __m128 n = _mm_cvtepi32_ps(ni);
    __m128 r = _mm_sub_ps(_mm_sub_ps(x, _mm_mul_ps(n, _mm_set1_ps(0.693145752f))),
                          _mm_mul_ps(n, _mm_set1_ps(1.42860677e-6f)));
    static const float c[] = {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    __m128 p = _mm_set1_ps(c[0]);
    for (int k = 1; k < 7; k++)
        p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(c[k]));
    __m128i e = _mm_slli_epi32(_mm_add_epi32(ni, _mm_set1_epi32(127)), 23);
    return _mm_mul_ps(p, _mm_castsi128_ps(e));
}
#endif

/* r[j] = exp_neg(r[j] - mx) for j < n */
static void exp_shifted(float *r, int n, float mx)
{
    int j = 0;
#ifdef __SSE2__
    __m128 m = _mm_set1_ps(mx);
    for (; j + 4 <= n; j += 4)
        _mm_storeu_ps(r + j, exp_neg4(_mm_sub_ps(_mm_loadu_ps(r + j), m)));
#endif
    for (; j < n; j++)
        r[j] = exp_neg(r[j] - mx);
}

enum { LANES = 8 };

/* Row-wise causal softmax of S (ntok, ntok): row i covers columns 0..i (the last `window` of
 * them when window > 0), the rest become 0.  Reductions use LANES partial results in a fixed
 * order (vectorizable and deterministic). */
static void causal_softmax(float *S, int ntok, int window)
{
    for (int i = 0; i < ntok; i++) {
        int first = window > 0 && i + 1 > window ? i + 1 - window : 0;
        float *row = S + (size_t)i * ntok, *r = row + first, lane[LANES];
        int n = i + 1 - first, j;
        for (j = 0; j < first; j++)
            row[j] = 0;
        for (int l = 0; l < LANES; l++)
            lane[l] = r[0];
        for (j = 0; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++)
                lane[l] = r[j + l] > lane[l] ? r[j + l] : lane[l];
        float mx = lane[0];
        for (int l = 1; l < LANES; l++)
            mx = lane[l] > mx ? lane[l] : mx;
        for (; j < n; j++)
            mx = r[j] > mx ? r[j] : mx;
        exp_shifted(r, n, mx);
        for (int l = 0; l < LANES; l++)
            lane[l] = 0;
        for (j = 0; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++)
                lane[l] += r[j + l];
        float sum = 0;
        for (int l = 0; l < LANES; l++)
            sum += lane[l];
        for (; j < n; j++)
            sum += r[j];
        float inv = 1.0f / sum;
        for (j = 0; j < n; j++)
            r[j] *= inv;
        for (j = i + 1; j < ntok; j++)
            row[j] = 0;
    }
}

/* x (ntok, n) += b (n) on every row. */
static void add_bias(float *x, const float *b, int ntok, int n)
{
    for (int t = 0; t < ntok; t++)
        for (int i = 0; i < n; i++)
            x[(size_t)t * n + i] += b[i];
}

/* xb (ntok, qdim) = attention of q over k, v; kv head h / (n_heads / n_kv_heads) serves head h. */
static void attention(tqp_forward *f, int ntok)
{
    const tqp_config *c = &f->cfg;
    int hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int group = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    /* heads are independent: f->threads threads take whole heads, each its own scores */
#pragma omp parallel for num_threads(f->threads) schedule(dynamic, 1) if (f->threads > 1)
    for (int h = 0; h < c->n_heads; h++) {
        int kh = h / group, t = omp_get_thread_num();
        float *S = t == 0 ? f->scores
                          : f->scores_more + (size_t)(t - 1) * f->max_tokens * f->max_tokens;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ntok, ntok, hd, scale, f->q + h * hd,
                    qd, f->k + kh * hd, kvd, 0.0f, S, ntok);
        causal_softmax(S, ntok, c->sliding_window);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ntok, hd, ntok, 1.0f, S, ntok,
                    f->v + kh * hd, kvd, 0.0f, f->xb + h * hd, qd);
    }
}

static tqp_status capture(const tqp_forward_hooks *hk, int layer, tqp_group g, const float *x,
                          int ntok, int n)
{
    return hk && hk->capture ? hk->capture(hk->ctx, layer, g, x, ntok, n) : TQP_OK;
}

tqp_status tqp_forward_layer(tqp_forward *f, const tqp_layer_weights *lw, int layer, float *x,
                             int ntok, const tqp_forward_hooks *hooks)
{
    const tqp_config *c = &f->cfg;
    int d = c->dim, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int hid = c->hidden_dim;
    /* attention block */
    rmsnorm(f->xb, x, lw->w[TQP_T_ATTN_NORM], ntok, d, c->rms_eps);
    TQP_CHECK(capture(hooks, layer, TQP_GROUP_QKV, f->xb, ntok, d));
    matmul_wt(f, f->q, f->xb, lw->w[TQP_T_Q], ntok, qd, d, 0.0f);
    matmul_wt(f, f->k, f->xb, lw->w[TQP_T_K], ntok, kvd, d, 0.0f);
    matmul_wt(f, f->v, f->xb, lw->w[TQP_T_V], ntok, kvd, d, 0.0f);
    if (c->qkv_bias) { /* Qwen2 */
        add_bias(f->q, lw->w[TQP_T_Q_BIAS], ntok, qd);
        add_bias(f->k, lw->w[TQP_T_K_BIAS], ntok, kvd);
        add_bias(f->v, lw->w[TQP_T_V_BIAS], ntok, kvd);
    }
    if (c->qk_norm) { /* Qwen3: every head of every token, before RoPE */
        rmsnorm(f->q, f->q, lw->w[TQP_T_Q_NORM], ntok * c->n_heads, c->head_dim, c->rms_eps);
        rmsnorm(f->k, f->k, lw->w[TQP_T_K_NORM], ntok * c->n_kv_heads, c->head_dim, c->rms_eps);
    }
    rope(f, f->q, ntok, c->n_heads);
    rope(f, f->k, ntok, c->n_kv_heads);
    attention(f, ntok);
    TQP_CHECK(capture(hooks, layer, TQP_GROUP_O, f->xb, ntok, qd));
    matmul_wt(f, x, f->xb, lw->w[TQP_T_O], ntok, d, qd, 1.0f);
    /* feed-forward block */
    rmsnorm(f->xb, x, lw->w[TQP_T_FFN_NORM], ntok, d, c->rms_eps);
    TQP_CHECK(capture(hooks, layer, TQP_GROUP_GATEUP, f->xb, ntok, d));
    matmul_wt(f, f->hb, f->xb, lw->w[TQP_T_GATE], ntok, hid, d, 0.0f);
    matmul_wt(f, f->hb2, f->xb, lw->w[TQP_T_UP], ntok, hid, d, 0.0f);
    size_t nh = (size_t)ntok * hid;
    for (size_t i = 0; i < nh; i++) {
        float g = f->hb[i];
        f->hb[i] = g / (1.0f + expf(-g)) * f->hb2[i];
    }
    TQP_CHECK(capture(hooks, layer, TQP_GROUP_DOWN, f->hb, ntok, hid));
    matmul_wt(f, x, f->hb, lw->w[TQP_T_DOWN], ntok, d, hid, 1.0f);
    return TQP_OK;
}

void tqp_forward_logits(tqp_forward *f, const float *norm, const float *head, float *x, int ntok,
                        float *logits)
{
    const tqp_config *c = &f->cfg;
    rmsnorm(x, x, norm, ntok, c->dim, c->rms_eps);
    matmul_wt(f, logits, x, head, ntok, c->vocab_size, c->dim, 0.0f);
}

/* -log softmax(row)[target], in float64. */
static double row_nll(const float *row, int n, uint32_t target)
{
    float mx = row[0];
    for (int i = 1; i < n; i++)
        mx = row[i] > mx ? row[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)row[i] - mx);
    return log(sum) + mx - row[target];
}

double tqp_forward_nll(tqp_forward *f, const float *norm, const float *head, float *x,
                       const uint32_t *tokens, int ntok, int first)
{
    const tqp_config *c = &f->cfg;
    rmsnorm(x, x, norm, ntok, c->dim, c->rms_eps);
    double nll = 0;
    /* position p predicts token p + 1: rows first-1 .. ntok-2 */
    for (int p0 = first - 1; p0 < ntok - 1; p0 += HEAD_ROWS) {
        int rows = ntok - 1 - p0 < HEAD_ROWS ? ntok - 1 - p0 : HEAD_ROWS;
        matmul_wt(f, f->logits, x + (size_t)p0 * c->dim, head, rows, c->vocab_size, c->dim, 0.0f);
        for (int r = 0; r < rows; r++)
            nll +=
                row_nll(f->logits + (size_t)r * c->vocab_size, c->vocab_size, tokens[p0 + r + 1]);
    }
    return nll;
}

tqp_status tqp_forward_windows(tqp_forward **fw, int workspaces, int threads,
                               const tqp_layer_weights *lw,
                               int layer, float *x, size_t wsz, int ntok, long count,
                               const tqp_forward_hooks *(*hooks_of)(void *hctx, long w,
                                                                    tqp_forward_hooks *buf),
                               void *hctx)
{
    int T = threads > 1 ? threads : 1;
    long full = T > 1 && workspaces >= T ? count / T * T : 0, bad = -1;
    tqp_status first = TQP_OK;
    char why[512] = ""; /* messages are per thread: keep the failing window's */
#pragma omp parallel for num_threads(T) schedule(dynamic, 1) if (T > 1 && full > 0)
    for (long w = 0; w < full; w++) {
        tqp_forward_hooks buf;
        const tqp_forward_hooks *h = hooks_of ? hooks_of(hctx, w, &buf) : NULL;
        tqp_status ws = tqp_forward_layer(fw[omp_get_thread_num()], lw, layer, x + w * wsz,
                                          ntok, h);
        if (ws != TQP_OK) {
#pragma omp critical(tqp_forward_windows_error)
            if (bad < 0 || w < bad) {
                bad = w;
                first = ws;
                snprintf(why, sizeof why, "%s", tqp_error_message());
            }
        }
    }
    if (first != TQP_OK) return tqp_error_set(first, "%s", why);
    if (full == count) return TQP_OK;
    first = tqp_forward_set_threads(fw[0], T);
    for (long w = full; w < count && first == TQP_OK; w++) {
        tqp_forward_hooks buf;
        const tqp_forward_hooks *h = hooks_of ? hooks_of(hctx, w, &buf) : NULL;
        first = tqp_forward_layer(fw[0], lw, layer, x + w * wsz, ntok, h);
    }
    tqp_forward_set_threads(fw[0], 1);
    return first;
}
