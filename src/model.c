/* Format-independent model code: tensor names and shapes, configuration checks, dtype
 * conversion and per-layer fp32 access.  The format readers are model_llama2c.c and
 * model_hf.c. */
#include "tqp/model.h"

#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <sys/stat.h>

static const char *const layer_names[TQP_T_LAYER_COUNT] = {
    [TQP_T_ATTN_NORM] = "input_layernorm", [TQP_T_Q] = "self_attn.q_proj",
    [TQP_T_K] = "self_attn.k_proj",        [TQP_T_V] = "self_attn.v_proj",
    [TQP_T_O] = "self_attn.o_proj",        [TQP_T_FFN_NORM] = "post_attention_layernorm",
    [TQP_T_GATE] = "mlp.gate_proj",        [TQP_T_UP] = "mlp.up_proj",
    [TQP_T_DOWN] = "mlp.down_proj",        [TQP_T_Q_BIAS] = "self_attn.q_proj",
    [TQP_T_K_BIAS] = "self_attn.k_proj",   [TQP_T_V_BIAS] = "self_attn.v_proj",
    [TQP_T_Q_NORM] = "self_attn.q_norm",   [TQP_T_K_NORM] = "self_attn.k_norm",
};

static const char *const arch_names[TQP_ARCH_COUNT] = {
    [TQP_ARCH_LLAMA] = "LlamaForCausalLM",
    [TQP_ARCH_MISTRAL] = "MistralForCausalLM",
    [TQP_ARCH_QWEN2] = "Qwen2ForCausalLM",
    [TQP_ARCH_QWEN3] = "Qwen3ForCausalLM",
};

const char *tqp_arch_name(tqp_arch a)
{
    return a >= 0 && a < TQP_ARCH_COUNT ? arch_names[a] : "unknown";
}

const char *tqp_layer_tensor_suffix(tqp_layer_tensor t)
{
    return t >= TQP_T_Q_BIAS && t <= TQP_T_V_BIAS ? "bias" : "weight";
}

static const char *const global_names[TQP_G_COUNT] = {
    [TQP_G_EMBED] = "model.embed_tokens",
    [TQP_G_NORM] = "model.norm",
    [TQP_G_OUTPUT] = "lm_head",
};

const char *tqp_layer_tensor_name(tqp_layer_tensor t)
{
    return layer_names[t];
}
const char *tqp_global_tensor_name(tqp_global_tensor t)
{
    return global_names[t];
}

void tqp_layer_tensor_shape(const tqp_config *c, tqp_layer_tensor t, int64_t *rows, int64_t *cols)
{
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t shape[TQP_T_LAYER_COUNT][2] = {
        [TQP_T_ATTN_NORM] = {1, c->dim},
        [TQP_T_Q] = {q, c->dim},
        [TQP_T_K] = {kv, c->dim},
        [TQP_T_V] = {kv, c->dim},
        [TQP_T_O] = {c->dim, q},
        [TQP_T_FFN_NORM] = {1, c->dim},
        [TQP_T_GATE] = {c->hidden_dim, c->dim},
        [TQP_T_UP] = {c->hidden_dim, c->dim},
        [TQP_T_DOWN] = {c->dim, c->hidden_dim},
        [TQP_T_Q_BIAS] = {c->qkv_bias ? 1 : 0, c->qkv_bias ? q : 0},
        [TQP_T_K_BIAS] = {c->qkv_bias ? 1 : 0, c->qkv_bias ? kv : 0},
        [TQP_T_V_BIAS] = {c->qkv_bias ? 1 : 0, c->qkv_bias ? kv : 0},
        [TQP_T_Q_NORM] = {c->qk_norm ? 1 : 0, c->qk_norm ? c->head_dim : 0},
        [TQP_T_K_NORM] = {c->qk_norm ? 1 : 0, c->qk_norm ? c->head_dim : 0},
    };
    *rows = shape[t][0];
    *cols = shape[t][1];
}

void tqp_global_tensor_shape(const tqp_config *c, tqp_global_tensor t, int64_t *rows, int64_t *cols)
{
    *rows = t == TQP_G_NORM ? 1 : c->vocab_size;
    *cols = c->dim;
}

tqp_status tqp_config_validate(const tqp_config *c, const char *what)
{
    const int big = 1 << 20;
    struct {
        const char *name;
        int v;
    } ints[] = {
        {"hidden size", c->dim},
        {"intermediate size", c->hidden_dim},
        {"layer count", c->n_layers},
        {"attention head count", c->n_heads},
        {"key/value head count", c->n_kv_heads},
        {"vocabulary size", c->vocab_size},
        {"maximum sequence length", c->max_seq_len},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].v <= 0 || ints[i].v > big * 16)
            return tqp_error_set(TQP_EINPUT, "%s: %s %d is out of range", what, ints[i].name,
                                 ints[i].v);
    if (c->n_layers > 4096 || c->n_heads > 4096)
        return tqp_error_set(TQP_EINPUT, "%s: %d layers / %d heads is absurd", what, c->n_layers,
                             c->n_heads);
    if (c->n_heads % c->n_kv_heads != 0 || c->head_dim <= 0 || c->head_dim > c->dim * 4)
        return tqp_error_set(TQP_EINPUT,
                             "%s: hidden size %d, %d heads of %d and %d key/value heads do not "
                             "fit",
                             what, c->dim, c->n_heads, c->head_dim, c->n_kv_heads);
    if (c->sliding_window < 0 || c->arch < 0 || c->arch >= TQP_ARCH_COUNT)
        return tqp_error_set(TQP_EINPUT, "%s: sliding window %d or architecture is out of range",
                             what, c->sliding_window);
    if (c->head_dim % 2 != 0)
        return tqp_error_set(TQP_EINPUT, "%s: head size %d is odd (RoPE needs pairs)", what,
                             c->head_dim);
    if (!(c->rms_eps > 0 && c->rms_eps < 1))
        return tqp_error_set(TQP_EINPUT, "%s: rms_norm_eps %g is not in (0, 1)", what,
                             (double)c->rms_eps);
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return tqp_error_set(TQP_EINPUT, "%s: rope_theta %g is not positive", what,
                             (double)c->rope_theta);
    if (c->rope_scaling != TQP_ROPE_SCALING_NONE &&
        !(c->rope_factor > 0 && isfinite(c->rope_factor)))
        return tqp_error_set(TQP_EINPUT, "%s: rope_scaling factor %g is not positive", what,
                             (double)c->rope_factor);
    if (c->rope_scaling == TQP_ROPE_SCALING_LLAMA3 &&
        !(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
          isfinite(c->rope_high_freq_factor) && c->rope_original_max_seq_len > 0))
        return tqp_error_set(TQP_EINPUT,
                             "%s: rope_scaling llama3 needs 0 < low_freq_factor (%g) < "
                             "high_freq_factor (%g) and original_max_position_embeddings > 0 (%d)",
                             what, (double)c->rope_low_freq_factor,
                             (double)c->rope_high_freq_factor, c->rope_original_max_seq_len);
    /* Each dimension is bounded above, but their products are not: counted in double (exact
     * well past the bound), so that every size computed from a configuration that passes fits
     * 64 bits with room to spare, whatever the header said. */
    double params = 2.0 * c->vocab_size * (double)c->dim + c->dim +
                    (double)c->max_seq_len * c->head_dim;
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        int64_t r, k;
        tqp_layer_tensor_shape(c, (tqp_layer_tensor)t, &r, &k);
        params += (double)c->n_layers * (double)r * (double)k;
    }
    if (params > TQP_MAX_PARAMS)
        return tqp_error_set(TQP_EINPUT,
                             "%s: the dimensions imply %.3g parameters, more than the %.3g TQP "
                             "handles (hidden %d, intermediate %d, %d layers, vocabulary %d)",
                             what, params, TQP_MAX_PARAMS, c->dim, c->hidden_dim, c->n_layers,
                             c->vocab_size);
    return TQP_OK;
}

double tqp_rope_inv_freq(const tqp_config *c, int j)
{
    double inv = pow((double)c->rope_theta, -2.0 * j / c->head_dim);
    if (c->rope_scaling == TQP_ROPE_SCALING_LINEAR) return inv / c->rope_factor;
    if (c->rope_scaling != TQP_ROPE_SCALING_LLAMA3) return inv;
    /* wavelengths shorter than original / high are kept, longer than original / low are
     * divided by the factor, and those between interpolate the two linearly in original/λ */
    double wavelen = 2 * M_PI / inv, orig = c->rope_original_max_seq_len;
    double lo = c->rope_low_freq_factor, hi = c->rope_high_freq_factor;
    if (wavelen < orig / hi) return inv;
    if (wavelen > orig / lo) return inv / c->rope_factor;
    double smooth = (orig / wavelen - lo) / (hi - lo);
    return (1 - smooth) * inv / c->rope_factor + smooth * inv;
}

size_t tqp_dtype_size(tqp_dtype d)
{
    return d == TQP_DTYPE_F32 ? 4 : 2;
}

const char *tqp_dtype_name(tqp_dtype d)
{
    return d == TQP_DTYPE_F32 ? "F32" : d == TQP_DTYPE_F16 ? "F16" : "BF16";
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, man = h & 0x3ff, bits;
    if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { /* subnormal: normalize */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void tqp_dtype_to_f32(tqp_dtype d, const void *src, float *dst, size_t n)
{
    const uint8_t *s = src;
    if (d == TQP_DTYPE_F32) {
        memcpy(dst, src, n * 4);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        if (d == TQP_DTYPE_F16) {
            dst[i] = f16_to_f32(h);
        } else {
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
    }
}

uint16_t tqp_f32_to_bf16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x40); /* quiet NaN */
    b += 0x7fffu + ((b >> 16) & 1);
    return (uint16_t)(b >> 16);
}

uint16_t tqp_f32_to_f16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000, a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: Inf */
    if (a < 0x38800000u) {                                  /* below 2^-14: subnormal */
        float mag;
        memcpy(&mag, &a, 4);
        /* 2^-24 is the subnormal step; nearbyint rounds half to even. */
        return (uint16_t)(sign | (uint32_t)nearbyintf(mag * 16777216.0f));
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1) - (112u << 23); /* round to nearest even */
    return (uint16_t)(sign | (r >> 13));
}

static tqp_status tensor_to_f32(const tqp_tensor_ref *t, const float **out, float *buf)
{
    size_t n = (size_t)(t->rows * t->cols);
    if (t->dtype == TQP_DTYPE_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = t->data;
        return TQP_OK;
    }
    tqp_dtype_to_f32(t->dtype, t->data, buf, n);
    *out = buf;
    return TQP_OK;
}

static int needs_copy(const tqp_tensor_ref *t)
{
    return t->dtype != TQP_DTYPE_F32 || ((uintptr_t)t->data % sizeof(float)) != 0;
}

static tqp_status check_finite(const float *x, size_t n, const char *file, const char *what,
                               int layer)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return tqp_error_set(TQP_ENONFINITE,
                                 "%s: layer %d %s: non-finite weight %g at element %zu", file,
                                 layer, what, (double)x[i], i);
    return TQP_OK;
}

tqp_status tqp_model_layer_load(const tqp_model *m, int l, tqp_layer_weights *lw)
{
    memset(lw, 0, sizeof *lw);
    const tqp_tensor_ref *refs = &m->layer[(size_t)l * TQP_T_LAYER_COUNT];
    size_t total = 0;
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++)
        if (needs_copy(&refs[t])) total += (size_t)(refs[t].rows * refs[t].cols);
    if (total && !(lw->owned = tqp_malloc_aligned(total * sizeof(float)))) return TQP_ENOMEM;
    float *next = lw->owned;
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        size_t n = (size_t)(refs[t].rows * refs[t].cols);
        tensor_to_f32(&refs[t], &lw->w[t], next);
        if (needs_copy(&refs[t])) next += n;
        tqp_status s = check_finite(lw->w[t], n, refs[t].file, layer_names[t], l);
        if (s != TQP_OK) {
            tqp_layer_weights_release(lw);
            return s;
        }
    }
    return TQP_OK;
}

/* Rows [r0, r1) of a mapped tensor as fp32 into out, checked finite (the message names the
 * file, `what` and the element). */
static tqp_status ref_rows(const tqp_tensor_ref *r, const char *what, int64_t r0, int64_t r1,
                           float *out)
{
    size_t cols = (size_t)r->cols, es = tqp_dtype_size(r->dtype), n = (size_t)(r1 - r0) * cols;
    tqp_dtype_to_f32(r->dtype, (const char *)r->data + (size_t)r0 * cols * es, out, n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(out[i]))
            return tqp_error_set(TQP_ENONFINITE, "%s: %s: non-finite weight %g at element %lld",
                                 r->file, what, (double)out[i],
                                 (long long)((size_t)r0 * cols + i));
    return TQP_OK;
}

/* The whole pages of rows [r0, r1) leave this process's resident set (they stay in the page
 * cache; a later read maps them again): reading a tensor by rows never accumulates it. */
static void release_rows(const tqp_tensor_ref *r, int64_t r0, int64_t r1)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), row = (uintptr_t)r->cols * tqp_dtype_size(r->dtype);
    uintptr_t a = (uintptr_t)r->data + (uintptr_t)r0 * row, b = (uintptr_t)r->data + (uintptr_t)r1 * row;
    a = (a + pg - 1) / pg * pg, b = b / pg * pg;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

tqp_status tqp_model_tensor_rows(const tqp_model *m, int l, int t, int64_t r0, int64_t r1,
                                 double *out)
{
    const tqp_tensor_ref *r = &m->layer[(size_t)l * TQP_T_LAYER_COUNT + t];
    size_t cols = (size_t)r->cols;
    float *row = tqp_malloc(sizeof(float) * (cols + 1));
    if (!row) return TQP_ENOMEM;
    char what[96];
    snprintf(what, sizeof what, "layer %d %s", l, layer_names[t]);
    tqp_status s = TQP_OK;
    for (int64_t i = r0; i < r1 && s == TQP_OK; i++) {
        s = ref_rows(r, what, i, i + 1, row);
        for (size_t j = 0; s == TQP_OK && j < cols; j++) out[(size_t)(i - r0) * cols + j] = row[j];
    }
    free(row);
    release_rows(r, r0, r1);
    return s;
}

tqp_status tqp_model_global_rows(const tqp_model *m, tqp_global_tensor t, int64_t r0, int64_t r1,
                                 float *out)
{
    const tqp_tensor_ref *r = &m->global[t];
    tqp_status s = ref_rows(r, global_names[t], r0, r1, out);
    release_rows(r, r0, r1);
    return s;
}

void tqp_layer_weights_release(tqp_layer_weights *lw)
{
    free(lw->owned);
    memset(lw, 0, sizeof *lw);
}

tqp_status tqp_model_global_load(const tqp_model *m, tqp_global_tensor t, const float **out,
                                 float **owned)
{
    const tqp_tensor_ref *r = &m->global[t];
    size_t n = (size_t)(r->rows * r->cols);
    *owned = NULL;
    if (needs_copy(r) && !(*owned = tqp_malloc_aligned(n * sizeof(float)))) return TQP_ENOMEM;
    tensor_to_f32(r, out, *owned);
    for (size_t i = 0; i < n; i++)
        if (!isfinite((*out)[i])) {
            free(*owned);
            *owned = NULL;
            return tqp_error_set(TQP_ENONFINITE, "%s: %s: non-finite weight %g at element %zu",
                                 r->file, global_names[t], (double)(*out)[i], i);
        }
    return TQP_OK;
}

tqp_status tqp_model_load(const char *path, tqp_model **out)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return tqp_error_set(TQP_ENOENT, "%s: no such file or directory", path);
    tqp_model *m = tqp_calloc(1, sizeof *m);
    if (!m) return TQP_ENOMEM;
    m->path = strdup(path);
    tqp_status s =
        S_ISDIR(st.st_mode) ? tqp_model_load_hf(path, m) : tqp_model_load_llama2c(path, m);
    if (s != TQP_OK) {
        tqp_model_destroy(&m);
        return s;
    }
    *out = m;
    return TQP_OK;
}

tqp_status tqp_config_read(const char *path, tqp_config *cfg, tqp_model_format *format,
                           tqp_dtype *dtype)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return tqp_error_set(TQP_ENOENT, "%s: no such file or directory", path);
    char json[4096];
    const char *file = path;
    int is_json = 0;
    if (S_ISDIR(st.st_mode)) { /* a Hugging Face directory: its config.json */
        snprintf(json, sizeof json, "%s/config.json", path);
        if (stat(json, &st) != 0)
            return tqp_error_set(TQP_ENOENT, "%s: no config.json in the directory", path);
        file = json, is_json = 1;
    } else { /* a JSON object starts with '{'; anything else is read as a llama2.c header */
        FILE *f = fopen(path, "rb");
        if (!f) return tqp_error_set(TQP_ENOENT, "%s: cannot open", path);
        int c;
        while ((c = fgetc(f)) == ' ' || c == '\t' || c == '\n' || c == '\r') {}
        fclose(f);
        is_json = c == '{';
    }
    *format = is_json ? TQP_FORMAT_HF : TQP_FORMAT_LLAMA2C;
    if (!is_json) {
        *dtype = TQP_DTYPE_F32;
        return tqp_config_read_llama2c(path, cfg);
    }
    return tqp_config_read_hf(file, cfg, dtype);
}

void tqp_model_destroy(tqp_model **pm)
{
    tqp_model *m = *pm;
    if (!m) return;
    for (int i = 0; i < m->n_maps; i++)
        tqp_mmap_close(&m->maps[i]);
    free(m->maps);
    free(m->layer);
    free(m->path);
    free(m);
    *pm = NULL;
}

tqp_status tqp_model_fingerprint(const tqp_model *m, char hex[65])
{
    /* config, then per file: size and the first and last MiB (the whole file when smaller) */
    const size_t edge = (size_t)1 << 20;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx) return tqp_error_set(TQP_ENOMEM, "out of memory");
    const tqp_config *c = &m->cfg;
    char cfg[512];
    int len =
        snprintf(cfg, sizeof cfg, "%d %d %d %d %d %d %d %.9g %.9g %d %d", c->dim, c->hidden_dim,
                 c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size, c->max_seq_len,
                 (double)c->rms_eps, (double)c->rope_theta, c->tied_embeddings, (int)c->rope);
    if (c->arch != TQP_ARCH_LLAMA || c->qkv_bias || c->qk_norm || c->sliding_window ||
        c->head_dim * c->n_heads != c->dim) /* (absent for Llamas: old fingerprints hold) */
        len += snprintf(cfg + len, sizeof cfg - (size_t)len, " arch %d %d %d %d %d", (int)c->arch,
                        c->head_dim, c->qkv_bias, c->qk_norm, c->sliding_window);
    if (c->rope_scaling != TQP_ROPE_SCALING_NONE) /* (absent otherwise: old fingerprints hold) */
        len += snprintf(cfg + len, sizeof cfg - (size_t)len, " rope_scaling %d %.9g %.9g %.9g %d",
                        (int)c->rope_scaling, (double)c->rope_factor,
                        (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor,
                        c->rope_original_max_seq_len);
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, cfg, (size_t)len);
    for (int i = 0; i < m->n_maps; i++) {
        const tqp_mmap *mp = &m->maps[i];
        uint64_t size = mp->size;
        EVP_DigestUpdate(ctx, &size, sizeof size);
        if (mp->size <= 2 * edge) {
            if (mp->size) EVP_DigestUpdate(ctx, mp->data, mp->size);
        } else {
            EVP_DigestUpdate(ctx, mp->data, edge);
            EVP_DigestUpdate(ctx, mp->data + mp->size - edge, edge);
        }
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);
    for (unsigned i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return TQP_OK;
}
