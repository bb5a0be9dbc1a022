/* Shared test helpers: temporary directories, a deterministic RNG, writing small llama2.c
 * checkpoints, and running a model's forward pass to logits. */
#ifndef TQP_TEST_UTIL_H
#define TQP_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tqp/eval.h"
#include "tqp/forward.h"
#include "tqp/model.h"

/* xorshift64* */
static inline uint64_t tu_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}
static inline double tu_uniform(uint64_t *s)
{
    return (double)(tu_next(s) >> 11) / 9007199254740992.0;
}
static inline double tu_normal(uint64_t *s)
{
    double u = tu_uniform(s) + 1e-300, v = tu_uniform(s);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* A fresh directory under $TMPDIR or /tmp; the caller removes it with tu_rmdir. */
static inline char *tu_mkdtemp(void)
{
    static char buf[8][512];
    static int slot;
    const char *t = getenv("TMPDIR");
    char *b = buf[slot++ % 8];
    snprintf(b, 512, "%s/tqp-test-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(b);
}

static inline void tu_rmdir(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

static inline int tu_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return fclose(f) == 0 && w == len ? 0 : -1;
}

/* A random llama2.c-layout model held in fp32, tensors in llama2.c file order. */
typedef struct {
    tqp_config cfg;
    int shared;
    float *embed, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
} tu_model;

static inline float *tu_fill(uint64_t *s, size_t n, double scale, double mean)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(mean + scale * tu_normal(s));
    return p;
}

static inline void tu_model_random(tu_model *m, const tqp_config *c, int shared, uint64_t seed)
{
    uint64_t s = seed;
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    m->shared = shared;
    size_t L = c->n_layers, d = c->dim, qd = (size_t)c->n_heads * c->head_dim;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, h = c->hidden_dim, V = c->vocab_size;
    m->embed = tu_fill(&s, V * d, 1.0, 0);
    m->rms_att = tu_fill(&s, L * d, 0.1, 1.0);
    m->wq = tu_fill(&s, L * qd * d, 1.0 / sqrt((double)d), 0);
    m->wk = tu_fill(&s, L * kvd * d, 1.0 / sqrt((double)d), 0);
    m->wv = tu_fill(&s, L * kvd * d, 1.0 / sqrt((double)d), 0);
    m->wo = tu_fill(&s, L * d * qd, 1.0 / sqrt((double)qd), 0);
    m->rms_ffn = tu_fill(&s, L * d, 0.1, 1.0);
    m->w1 = tu_fill(&s, L * h * d, 1.0 / sqrt((double)d), 0);
    m->w2 = tu_fill(&s, L * d * h, 1.0 / sqrt((double)h), 0);
    m->w3 = tu_fill(&s, L * h * d, 1.0 / sqrt((double)d), 0);
    m->rms_final = tu_fill(&s, d, 0.1, 1.0);
    m->wcls = shared ? m->embed : tu_fill(&s, V * d, 1.0 / sqrt((double)d), 0);
}

static inline void tu_model_free(tu_model *m)
{
    float *p[] = {m->embed,   m->rms_att, m->wq, m->wk, m->wv,       m->wo,
                  m->rms_ffn, m->w1,      m->w2, m->w3, m->rms_final};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
    if (!m->shared) free(m->wcls);
}

/* Write m as a llama2.c checkpoint. */
static inline int tu_model_write_llama2c(const tu_model *m, const char *path)
{
    const tqp_config *c = &m->cfg;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int32_t hdr[7] = {c->dim,        c->hidden_dim, c->n_layers,
                      c->n_heads,    c->n_kv_heads, m->shared ? c->vocab_size : -c->vocab_size,
                      c->max_seq_len};
    fwrite(hdr, 4, 7, f);
    size_t L = c->n_layers, d = c->dim, qd = (size_t)c->n_heads * c->head_dim;
    size_t kvd = (size_t)c->n_kv_heads * c->head_dim, h = c->hidden_dim, V = c->vocab_size;
    struct {
        const float *p;
        size_t n;
    } parts[] = {{m->embed, V * d},    {m->rms_att, L * d},  {m->wq, L * qd * d},
                 {m->wk, L * kvd * d}, {m->wv, L * kvd * d}, {m->wo, L * d * qd},
                 {m->rms_ffn, L * d},  {m->w1, L * h * d},   {m->w2, L * d * h},
                 {m->w3, L * h * d},   {m->rms_final, d}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        fwrite(parts[i].p, 4, parts[i].n, f);
    size_t nf = (size_t)c->max_seq_len * c->head_dim;
    float *zeros = calloc(nf, sizeof *zeros);
    fwrite(zeros, 4, nf, f);
    free(zeros);
    if (!m->shared) fwrite(m->wcls, 4, V * d, f);
    return fclose(f);
}

static inline tqp_status tu_model_layer_(void *ctx, int l, tqp_layer_weights *lw)
{
    return tqp_model_layer_load(ctx, l, lw);
}

/* logits (ntok, vocab) of one window of tokens through the window forward, the layers' weights
 * from src (a quantized file's decoder, say) and the globals from the model. */
static inline tqp_status tu_logits_src(const tqp_model *m, const tqp_weight_source *src,
                                       const uint32_t *tokens, int ntok, float *logits)
{
    tqp_forward *fw;
    TQP_CHECK(tqp_forward_create(&m->cfg, ntok, &fw));
    float *x = malloc(sizeof(float) * (size_t)ntok * m->cfg.dim), *own[3] = {0};
    const float *embed, *norm, *head;
    tqp_status s = tqp_model_global_load(m, TQP_G_EMBED, &embed, &own[0]);
    if (s == TQP_OK) s = tqp_model_global_load(m, TQP_G_NORM, &norm, &own[1]);
    if (s == TQP_OK) s = tqp_model_global_load(m, TQP_G_OUTPUT, &head, &own[2]);
    if (s == TQP_OK) tqp_forward_embed(fw, embed, tokens, ntok, x);
    for (int l = 0; l < m->cfg.n_layers && s == TQP_OK; l++) {
        tqp_layer_weights lw;
        s = src->layer(src->ctx, l, &lw);
        if (s == TQP_OK) s = tqp_forward_layer(fw, &lw, l, x, ntok, NULL);
        tqp_layer_weights_release(&lw);
    }
    if (s == TQP_OK) tqp_forward_logits(fw, norm, head, x, ntok, logits);
    for (int i = 0; i < 3; i++)
        free(own[i]);
    free(x);
    tqp_forward_destroy(&fw);
    return s;
}

/* logits (ntok, vocab) of a loaded model for one window of tokens. */
static inline tqp_status tu_logits(const tqp_model *m, const uint32_t *tokens, int ntok,
                                   float *logits)
{
    tqp_weight_source src = {.layer = tu_model_layer_, .ctx = (void *)m};
    return tu_logits_src(m, &src, tokens, ntok, logits);
}

#endif
