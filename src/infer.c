/* Batch-1 decoding with a KV cache (include/tqp/infer.h). */
#include "tqp/infer.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matvec_impl.h"
#include "tqp/e8p.h"
#include "tqp/forward.h"
#include "tqp/quant.h"
#include "tqp/rng.h"
#include "tqp/tcq.h"

/* Dense products in fixed blocks of rows, one sgemv each, whatever the thread count. */
enum { DENSE_ROWS = 64 };
/* Products of fewer weights, and attention over fewer cached values, run on one thread: the
 * threads' start-up costs more than they share (stories260K: 2 threads were 20 % slower).
 * The values do not depend on it. */
enum { THREAD_MIN_WORK = 1 << 18 };

const char *tqp_lin_kind_name(tqp_lin_kind k)
{
    static const char *const names[] = {"fp32", "trellis", "e8p", "scalar"};
    return names[k];
}

static const char *lin_kernel(const tqp_linear *l)
{
    switch (l->kind) {
    case TQP_LIN_TRELLIS: return tqp_tmv_kernel_name(l->tmv);
    case TQP_LIN_E8P: return tqp_emv_kernel_name(l->emv);
    case TQP_LIN_SCALAR: return "c";
    default: return "sgemv";
    }
}

/* The threads a product of l gets. */
static int lin_threads(const tqp_linear *l, int threads)
{
    return threads > 1 && (double)l->m * l->n >= THREAD_MIN_WORK ? threads : 1;
}

void tqp_linear_apply(tqp_linear *l, const float *x, float *y, int threads)
{
    threads = lin_threads(l, threads);
    switch (l->kind) {
    case TQP_LIN_TRELLIS: tqp_tmv_apply(l->tmv, x, y, threads); return;
    case TQP_LIN_E8P: tqp_emv_apply(l->emv, x, y, threads); return;
    case TQP_LIN_SCALAR: tqp_smv_apply(l->smv, x, y, threads); return;
    case TQP_LIN_DENSE: break;
    }
    int m = l->m, n = l->n, nb = (m + DENSE_ROWS - 1) / DENSE_ROWS;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && nb > 1)
    for (int b = 0; b < nb; b++) {
        int r0 = b * DENSE_ROWS, rows = m - r0 < DENSE_ROWS ? m - r0 : DENSE_ROWS;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, n, 1.0f, l->W + (size_t)r0 * n, n, x, 1,
                    0.0f, y + r0, 1);
    }
}

/* The codes-only product of a quantized linear (no rotations, no scale). */
static void linear_codes(tqp_linear *l, const float *xr, float *z, int threads)
{
    threads = lin_threads(l, threads);
    if (l->kind == TQP_LIN_TRELLIS) tqp_tmv_apply_codes(l->tmv, xr, z, threads);
    else if (l->kind == TQP_LIN_E8P) tqp_emv_apply_codes(l->emv, xr, z, threads);
    else tqp_smv_apply_codes(l->smv, xr, z, threads);
}

/* y[i] = mats[i] x for linears that read the same x (q, k, v; gate, up).  When they are all
 * quantized with one input rotation (the same kind and seed: one per input group), V x is
 * computed once and only the codes and the output rotation run per matrix: the same values as
 * applying each on its own. */
static void apply_group(tqp_infer *e, tqp_linear *mats, int n, const float *x, float **y,
                        int threads)
{
    int shared = 1;
    for (int i = 0; i < n; i++)
        shared &= mats[i].kind != TQP_LIN_DENSE && mats[i].rot.kind == mats[0].rot.kind &&
                  mats[i].rot.seed_in == mats[0].rot.seed_in && mats[i].n == mats[0].n;
    if (!shared || n < 2) {
        for (int i = 0; i < n; i++) tqp_linear_apply(&mats[i], x, y[i], threads);
        return;
    }
    tqp_mv_rotate_in(&mats[0].rot, x, e->xr, mats[0].n, e->dx, e->dscratch);
    for (int i = 0; i < n; i++) {
        linear_codes(&mats[i], e->xr, e->z, threads);
        tqp_mv_rotate_out(&mats[i].rot, mats[i].scale, e->z, y[i], mats[i].m, e->dx,
                          e->dscratch);
    }
}

void tqp_linear_destroy(tqp_linear *l)
{
    tqp_tmv_destroy(&l->tmv);
    tqp_emv_destroy(&l->emv);
    tqp_smv_destroy(&l->smv);
    tqp_rot_destroy(&l->rot);
    memset(l, 0, sizeof *l);
}

void tqp_linear_dense(tqp_linear *l, const float *W, int m, int n)
{
    memset(l, 0, sizeof *l);
    l->kind = TQP_LIN_DENSE, l->m = m, l->n = n, l->W = W;
    l->bytes = 4.0 * m * n;
}

tqp_status tqp_linear_quantized(const tqp_qmat_info *q, const tqp_trellis *t,
                                const uint8_t *packed, size_t bytes, tqp_rot *rot,
                                tqp_tmv_kernel kernel, tqp_linear *l)
{
    memset(l, 0, sizeof *l);
    l->m = q->rows, l->n = q->cols, l->scale = q->scale, l->bytes = (double)bytes;
    l->rot = *rot; /* moved: the operators borrow it from l, which must not move after this */
    memset(rot, 0, sizeof *rot);
    tqp_status s;
    if (TQP_CB_IS(q->cb, TQP_CB_TRELLIS)) {
        l->kind = TQP_LIN_TRELLIS;
        s = tqp_tmv_create(t, packed, q->rows, q->cols, q->scale, &l->rot, kernel, &l->tmv);
    } else if (TQP_CB_IS(q->cb, TQP_CB_E8P)) {
        l->kind = TQP_LIN_E8P;
        s = tqp_emv_create(packed, q->rows, q->cols, q->bits, q->resid_scale, q->scale, &l->rot,
                           kernel, &l->emv);
    } else {
        l->kind = TQP_LIN_SCALAR;
        s = tqp_smv_create(packed, q->rows, q->cols, q->bits, q->scale, &l->rot, &l->smv);
    }
    if (s != TQP_OK) tqp_linear_destroy(l);
    return s;
}

tqp_status tqp_infer_create(const tqp_config *cfg, int max_ctx, tqp_infer **out)
{
    *out = NULL;
    if (max_ctx < 1) return tqp_error_set(TQP_EUSAGE, "a cache of %d positions", max_ctx);
    tqp_infer *e = tqp_calloc(1, sizeof *e);
    if (!e) return TQP_ENOMEM;
    e->cfg = *cfg;
    e->max_ctx = max_ctx;
    size_t T = (size_t)max_ctx, qd = (size_t)cfg->n_heads * cfg->head_dim;
    size_t kvd = (size_t)cfg->n_kv_heads * cfg->head_dim, L = (size_t)cfg->n_layers;
    size_t wide = qd > (size_t)cfg->dim ? qd : (size_t)cfg->dim, half = cfg->head_dim / 2;
    e->layer = tqp_calloc(L, sizeof *e->layer);
    size_t big = wide > (size_t)cfg->hidden_dim ? wide : (size_t)cfg->hidden_dim;
    float **bufs[] = {&e->kcache, &e->vcache, &e->x,      &e->xb,       &e->q,
                      &e->k,      &e->v,      &e->att,    &e->hb,       &e->hb2,
                      &e->scores, &e->rope_cos, &e->rope_sin, &e->xr,   &e->z};
    size_t sizes[] = {L * T * kvd, L * T * kvd, cfg->dim, wide, qd, kvd, kvd, qd,
                      cfg->hidden_dim, cfg->hidden_dim, (size_t)cfg->n_heads * T, T * half,
                      T * half, big, big};
    e->dx = tqp_malloc(sizeof(double) * big);
    e->dscratch = tqp_malloc(sizeof(double) * big);
    tqp_status s = e->layer && e->dx && e->dscratch ? TQP_OK : TQP_ENOMEM;
    for (size_t i = 0; s == TQP_OK && i < sizeof sizes / sizeof sizes[0]; i++)
        if (!(*bufs[i] = tqp_malloc_aligned((sizes[i] ? sizes[i] : 1) * sizeof(float))))
            s = TQP_ENOMEM;
    if (s != TQP_OK) {
        tqp_infer_destroy(&e);
        return s;
    }
    for (size_t p = 0; p < T; p++) /* the forward's table (forward.c fill_rope) */
        for (size_t j = 0; j < half; j++) {
            double a = (int)p * tqp_rope_inv_freq(cfg, (int)j);
            e->rope_cos[p * half + j] = (float)cos(a);
            e->rope_sin[p * half + j] = (float)sin(a);
        }
    *out = e;
    return TQP_OK;
}

void tqp_infer_destroy(tqp_infer **pe)
{
    tqp_infer *e = *pe;
    if (!e) return;
    for (int l = 0; e->layer && l < e->cfg.n_layers; l++) {
        for (int i = 0; i < TQP_QMATS; i++) tqp_linear_destroy(&e->layer[l].mat[i]);
        tqp_layer_weights_release(&e->layer[l].lw);
        free(e->layer[l].owned);
    }
    free(e->layer);
    for (int i = 0; i < 3; i++) free(e->owned_globals[i]);
    float *bufs[] = {e->kcache, e->vcache, e->x,      e->xb,       e->q,
                     e->k,      e->v,      e->att,    e->hb,       e->hb2,
                     e->scores, e->rope_cos, e->rope_sin, e->xr,   e->z};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(e->dx), free(e->dscratch);
    free(e);
    *pe = NULL;
}

/* Layer l of the quantized file: every matrix as an operator on its codes, the vectors read. */
static tqp_status load_quantized_layer(tqp_infer *e, tqp_qfile *q, int l, tqp_tmv_kernel kernel)
{
    tqp_infer_layer *L = &e->layer[l];
    size_t off[TQP_T_LAYER_COUNT], total = 0;
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        int64_t r, c;
        tqp_layer_tensor_shape(&e->cfg, (tqp_layer_tensor)t, &r, &c);
        off[t] = total;
        if (tqp_qfile_vector_name((tqp_layer_tensor)t) && r * c != 0) total += (size_t)(r * c);
    }
    L->owned = tqp_malloc(sizeof(float) * (total ? total : 1));
    if (!L->owned) return TQP_ENOMEM;
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        int64_t r, c;
        tqp_layer_tensor_shape(&e->cfg, (tqp_layer_tensor)t, &r, &c);
        if (!tqp_qfile_vector_name((tqp_layer_tensor)t) || r * c == 0) continue;
        TQP_CHECK(tqp_qfile_read_vector(q, l, (tqp_layer_tensor)t, L->owned + off[t]));
        L->vec[t] = L->owned + off[t];
    }
    for (int i = 0; i < TQP_QMATS; i++) {
        tqp_qmat_info info;
        uint8_t *packed = NULL;
        size_t bytes = 0;
        tqp_rot rot;
        TQP_CHECK(tqp_qfile_read_codes(q, l, i, &info, &packed, &bytes, &rot));
        tqp_status s = tqp_linear_quantized(&info, tqp_qfile_trellis(q), packed, bytes, &rot, kernel,
                                            &L->mat[i]);
        tqp_rot_destroy(&rot);
        free(packed);
        if (s != TQP_OK)
            return tqp_error_set(s, "layer %d %s: %s", l, tqp_qmat_name(i), tqp_error_message());
    }
    return TQP_OK;
}

static tqp_status load_dense_layer(tqp_infer *e, const tqp_model *m, int l)
{
    tqp_infer_layer *L = &e->layer[l];
    TQP_CHECK(tqp_model_layer_load(m, l, &L->lw));
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) L->vec[t] = L->lw.w[t];
    for (int i = 0; i < TQP_QMATS; i++) {
        int64_t r, c;
        tqp_layer_tensor_shape(&e->cfg, tqp_qmat_tensor(i), &r, &c);
        tqp_linear_dense(&L->mat[i], L->lw.w[tqp_qmat_tensor(i)], (int)r, (int)c);
        L->vec[tqp_qmat_tensor(i)] = NULL;
    }
    return TQP_OK;
}

tqp_status tqp_infer_load(const tqp_model *m, tqp_qfile *q, int max_ctx, tqp_tmv_kernel kernel,
                          tqp_infer **out)
{
    tqp_infer *e = NULL;
    TQP_CHECK(tqp_infer_create(&m->cfg, max_ctx, &e));
    tqp_status s = tqp_model_global_load(m, TQP_G_EMBED, &e->embed, &e->owned_globals[0]);
    if (s == TQP_OK) s = tqp_model_global_load(m, TQP_G_NORM, &e->norm, &e->owned_globals[1]);
    if (s == TQP_OK) s = tqp_model_global_load(m, TQP_G_OUTPUT, &e->head, &e->owned_globals[2]);
    if (s == TQP_OK) tqp_linear_dense(&e->head_op, e->head, m->cfg.vocab_size, m->cfg.dim);
    for (int l = 0; l < m->cfg.n_layers && s == TQP_OK; l++)
        s = q ? load_quantized_layer(e, q, l, kernel) : load_dense_layer(e, m, l);
    if (s != TQP_OK) {
        tqp_infer_destroy(&e);
        return s;
    }
    *out = e;
    return TQP_OK;
}

void tqp_infer_reset(tqp_infer *e)
{
    e->pos = 0;
}

/* out (n) = rmsnorm(x (n)) * w, the mean square in float64 (forward.c's). */
static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = w[i] * (scale * x[i]);
}

/* Rotate the nh heads of x by position p. */
static void rope(const tqp_infer *e, float *x, int nh, int p)
{
    int hd = e->cfg.head_dim, half = hd / 2;
    const float *c = e->rope_cos + (size_t)p * half, *s = e->rope_sin + (size_t)p * half;
    for (int h = 0; h < nh; h++) {
        float *v = x + (size_t)h * hd;
        for (int j = 0; j < half; j++) {
            float *a = e->cfg.rope == TQP_ROPE_ADJACENT ? &v[2 * j] : &v[j];
            float *b = e->cfg.rope == TQP_ROPE_ADJACENT ? &v[2 * j + 1] : &v[j + half];
            float a0 = *a, b0 = *b;
            *a = a0 * c[j] - b0 * s[j];
            *b = a0 * s[j] + b0 * c[j];
        }
    }
}

/* att (qdim) = attention of e->q at position p over the cached positions of layer l. */
static void attention(tqp_infer *e, int l, int p, int threads)
{
    const tqp_config *c = &e->cfg;
    int hd = c->head_dim, kvd = c->n_kv_heads * hd, group = c->n_heads / c->n_kv_heads;
    int first = c->sliding_window > 0 && p + 1 > c->sliding_window ? p + 1 - c->sliding_window : 0;
    float scale = 1.0f / sqrtf((float)hd);
    const float *K = e->kcache + (size_t)l * e->max_ctx * kvd;
    const float *V = e->vcache + (size_t)l * e->max_ctx * kvd;
    if ((double)(p + 1 - first) * c->n_heads * hd < THREAD_MIN_WORK / 4) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int h = 0; h < c->n_heads; h++) {
        const float *q = e->q + (size_t)h * hd;
        float *S = e->scores + (size_t)h * e->max_ctx, mx = -INFINITY, sum = 0;
        int kh = h / group;
        for (int j = first; j <= p; j++) {
            const float *k = K + (size_t)j * kvd + (size_t)kh * hd;
            float d = 0;
            for (int i = 0; i < hd; i++) d += q[i] * k[i];
            S[j] = scale * d;
            mx = S[j] > mx ? S[j] : mx;
        }
        for (int j = first; j <= p; j++) sum += (S[j] = expf(S[j] - mx));
        float inv = 1.0f / sum, *o = e->att + (size_t)h * hd;
        for (int i = 0; i < hd; i++) o[i] = 0;
        for (int j = first; j <= p; j++) {
            const float *v = V + (size_t)j * kvd + (size_t)kh * hd;
            float w = S[j] * inv;
            for (int i = 0; i < hd; i++) o[i] += w * v[i];
        }
    }
}

tqp_status tqp_infer_step(tqp_infer *e, uint32_t token, float *logits, int threads)
{
    const tqp_config *c = &e->cfg;
    threads = threads > 1 ? threads : 1;
    if (e->pos >= e->max_ctx)
        return tqp_error_set(TQP_EUSAGE, "the cache holds %d positions, all used", e->max_ctx);
    if ((int)token >= c->vocab_size || (int)token < 0)
        return tqp_error_set(TQP_EINPUT, "token %u is outside the vocabulary (%d)", token,
                             c->vocab_size);
    int d = c->dim, hd = c->head_dim, kvd = c->n_kv_heads * hd, hid = c->hidden_dim, p = e->pos;
    memcpy(e->x, e->embed + (size_t)token * d, sizeof(float) * (size_t)d);
    for (int l = 0; l < c->n_layers; l++) {
        tqp_infer_layer *L = &e->layer[l];
        float *kc = e->kcache + ((size_t)l * e->max_ctx + p) * kvd;
        float *vc = e->vcache + ((size_t)l * e->max_ctx + p) * kvd;
        rmsnorm(e->xb, e->x, L->vec[TQP_T_ATTN_NORM], d, c->rms_eps);
        float *qkv[3] = {e->q, kc, vc};
        apply_group(e, &L->mat[0], 3, e->xb, qkv, threads);
        if (c->qkv_bias) {
            for (int i = 0; i < c->n_heads * hd; i++) e->q[i] += L->vec[TQP_T_Q_BIAS][i];
            for (int i = 0; i < kvd; i++) kc[i] += L->vec[TQP_T_K_BIAS][i];
            for (int i = 0; i < kvd; i++) vc[i] += L->vec[TQP_T_V_BIAS][i];
        }
        if (c->qk_norm) {
            for (int h = 0; h < c->n_heads; h++)
                rmsnorm(e->q + h * hd, e->q + h * hd, L->vec[TQP_T_Q_NORM], hd, c->rms_eps);
            for (int h = 0; h < c->n_kv_heads; h++)
                rmsnorm(kc + h * hd, kc + h * hd, L->vec[TQP_T_K_NORM], hd, c->rms_eps);
        }
        rope(e, e->q, c->n_heads, p);
        rope(e, kc, c->n_kv_heads, p);
        attention(e, l, p, threads);
        tqp_linear_apply(&L->mat[3], e->att, e->xb, threads);
        for (int i = 0; i < d; i++) e->x[i] += e->xb[i];
        rmsnorm(e->xb, e->x, L->vec[TQP_T_FFN_NORM], d, c->rms_eps);
        float *gu[2] = {e->hb, e->hb2};
        apply_group(e, &L->mat[4], 2, e->xb, gu, threads);
        for (int i = 0; i < hid; i++) {
            float g = e->hb[i];
            e->hb[i] = g / (1.0f + expf(-g)) * e->hb2[i];
        }
        tqp_linear_apply(&L->mat[6], e->hb, e->xb, threads);
        for (int i = 0; i < d; i++) e->x[i] += e->xb[i];
    }
    e->pos++;
    if (logits) {
        rmsnorm(e->xb, e->x, e->norm, d, c->rms_eps);
        tqp_linear_apply(&e->head_op, e->xb, logits, threads);
    }
    return TQP_OK;
}

double tqp_infer_bytes_per_token(const tqp_infer *e)
{
    double b = e->head_op.bytes;
    for (int l = 0; l < e->cfg.n_layers; l++)
        for (int i = 0; i < TQP_QMATS; i++) b += e->layer[l].mat[i].bytes;
    return b;
}

void tqp_infer_describe(const tqp_infer *e, char *buf, size_t cap)
{
    const tqp_linear *m = e->layer[0].mat;
    size_t n = (size_t)snprintf(buf, cap, "%s (%s", tqp_lin_kind_name(m[0].kind), lin_kernel(&m[0]));
    for (int i = 1; i < TQP_QMATS && n < cap; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= !strcmp(lin_kernel(&m[i]), lin_kernel(&m[j]));
        if (!seen) n += (size_t)snprintf(buf + n, cap - n, ", %s", lin_kernel(&m[i]));
    }
    if (n < cap) snprintf(buf + n, cap - n, ")");
}

/* order: ids by descending probability, ties by ascending id */
static const double *sort_prob;
static int by_prob(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_prob[i] != sort_prob[j]) return sort_prob[i] > sort_prob[j] ? -1 : 1;
    return i - j;
}

uint32_t tqp_sample(const float *logits, int vocab, double temperature, double top_p,
                    uint64_t *rng, int *order, double *prob)
{
    int best = 0;
    for (int i = 1; i < vocab; i++) best = logits[i] > logits[best] ? i : best;
    if (!(temperature > 0)) return (uint32_t)best;
    double sum = 0;
    for (int i = 0; i < vocab; i++) sum += prob[i] = exp(((double)logits[i] - logits[best]) / temperature);
    for (int i = 0; i < vocab; i++) prob[i] /= sum, order[i] = i;
    sort_prob = prob;
    qsort(order, (size_t)vocab, sizeof *order, by_prob);
    int keep = vocab;
    double cum = 0;
    if (top_p < 1)
        for (int i = 0; i < vocab; i++)
            if ((cum += prob[order[i]]) >= top_p) {
                keep = i + 1;
                break;
            }
    cum = 0;
    for (int i = 0; i < keep; i++) cum += prob[order[i]];
    double u = (double)(tqp_splitmix64(rng) >> 11) / 9007199254740992.0 * cum, acc = 0;
    for (int i = 0; i < keep; i++)
        if ((acc += prob[order[i]]) > u) return (uint32_t)order[i];
    return (uint32_t)order[keep - 1];
}
