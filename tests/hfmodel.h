/* Random Hugging Face checkpoints of every architecture TQP runs (Llama, Mistral with a sliding
 * window, Qwen2 with q/k/v biases, Qwen3 with q/k norms and a free head size), written as
 * config.json + model.safetensors through the library's safetensors writer.  Used by test_arch
 * (against a float64 reference) and by the mkhf tool of the shell tests. */
#ifndef TQP_TEST_HFMODEL_H
#define TQP_TEST_HFMODEL_H

#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "testutil.h"
#include "tqp/safetensors.h"

typedef struct {
    tqp_config cfg;
    float *embed, *norm, *head;            // head == embed when tied
    float *t[64][TQP_T_LAYER_COUNT];        // per layer; NULL where the architecture has none
} hf_model;

static inline void hf_model_random(hf_model *m, const tqp_config *c, uint64_t seed)
{
    uint64_t s = seed;
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    size_t d = c->dim, V = c->vocab_size;
    m->embed = tu_fill(&s, V * d, 1.0, 0);
    m->norm = tu_fill(&s, d, 0.1, 1.0);
    m->head = c->tied_embeddings ? m->embed : tu_fill(&s, V * d, 1.0 / sqrt((double)d), 0);
    for (int l = 0; l < c->n_layers && l < 64; l++)
        for (int k = 0; k < TQP_T_LAYER_COUNT; k++) {
            int64_t r, cols;
            tqp_layer_tensor_shape(c, (tqp_layer_tensor)k, &r, &cols);
            if (r * cols == 0) continue;
            int norm = k == TQP_T_ATTN_NORM || k == TQP_T_FFN_NORM || k == TQP_T_Q_NORM ||
                       k == TQP_T_K_NORM;
            int bias = k >= TQP_T_Q_BIAS && k <= TQP_T_V_BIAS;
            m->t[l][k] = tu_fill(&s, (size_t)(r * cols), norm ? 0.1 : bias ? 0.5 : 1.0 / sqrt((double)cols),
                                 norm ? 1.0 : 0);
        }
}

static inline void hf_model_free(hf_model *m)
{
    free(m->embed), free(m->norm);
    if (!m->cfg.tied_embeddings) free(m->head);
    for (int l = 0; l < 64; l++)
        for (int k = 0; k < TQP_T_LAYER_COUNT; k++) free(m->t[l][k]);
}

/* Round every weight of m to what `dtype` stores (so that a file in that dtype holds exactly m). */
static inline void hf_model_round(hf_model *m, tqp_dtype dtype)
{
    if (dtype == TQP_DTYPE_F32) return;
    const tqp_config *c = &m->cfg;
    float *g[3] = {m->embed, m->norm, c->tied_embeddings ? NULL : m->head};
    size_t gn[3] = {(size_t)c->vocab_size * c->dim, (size_t)c->dim, (size_t)c->vocab_size * c->dim};
    for (int l = -1; l < c->n_layers; l++)
        for (int k = 0; k < (l < 0 ? 3 : TQP_T_LAYER_COUNT); k++) {
            float *p = l < 0 ? g[k] : m->t[l][k];
            size_t n = gn[k < 3 ? k : 0];
            if (l >= 0) {
                int64_t r, cols;
                tqp_layer_tensor_shape(c, (tqp_layer_tensor)k, &r, &cols);
                n = (size_t)(r * cols);
            }
            for (size_t i = 0; p && i < n; i++) {
                uint16_t h = dtype == TQP_DTYPE_F16 ? tqp_f32_to_f16(p[i]) : tqp_f32_to_bf16(p[i]);
                tqp_dtype_to_f32(dtype, &h, &p[i], 1);
            }
        }
}

/* Write m as a Hugging Face directory (created if absent) with tensors in `dtype`; the tensor
 * named `short_tensor` (NULL: none) is written one element short, for the tests of bad input. */
static inline tqp_status hf_model_write(const hf_model *m, const char *dir, tqp_dtype dtype,
                                        const char *short_tensor)
{
    const tqp_config *c = &m->cfg;
    mkdir(dir, 0755);
    static const char *const types[TQP_ARCH_COUNT] = {"llama", "mistral", "qwen2", "qwen3"};
    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(tqp_arch_name(c->arch)));
    cJSON_AddStringToObject(j, "model_type", types[c->arch]);
    cJSON_AddNumberToObject(j, "hidden_size", c->dim);
    cJSON_AddNumberToObject(j, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_seq_len);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->rms_eps);
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied_embeddings);
    if (c->sliding_window) cJSON_AddNumberToObject(j, "sliding_window", c->sliding_window);
    if (c->arch == TQP_ARCH_QWEN2 || c->arch == TQP_ARCH_QWEN3) {
        cJSON_AddNumberToObject(j, "sliding_window", 4096); /* present, off: as Qwen ships it */
        cJSON_AddBoolToObject(j, "use_sliding_window", 0);
    }
    if (c->arch == TQP_ARCH_QWEN3 && c->qkv_bias) cJSON_AddBoolToObject(j, "attention_bias", 1);
    cJSON_AddStringToObject(j, "torch_dtype", dtype == TQP_DTYPE_F32   ? "float32"
                                              : dtype == TQP_DTYPE_F16 ? "float16"
                                                                       : "bfloat16");
    char path[4096], *txt = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/config.json", dir);
    int ok = tu_write_file(path, txt, strlen(txt)) == 0;
    free(txt);
    if (!ok) return tqp_error_set(TQP_EIO, "%s: cannot write", path);
    tqp_st_tensor t[3 + 64 * TQP_T_LAYER_COUNT];
    static char names[3 + 64 * TQP_T_LAYER_COUNT][128];
    int n = 0;
    const float *g[3] = {m->embed, m->norm, m->head};
    for (int k = 0; k < (c->tied_embeddings ? 2 : 3); k++) {
        snprintf(names[n], 128, "%s.weight", tqp_global_tensor_name((tqp_global_tensor)k));
        int64_t r, cols;
        tqp_global_tensor_shape(c, (tqp_global_tensor)k, &r, &cols);
        t[n] = (tqp_st_tensor){.name = names[n], .dtype = dtype, .ndim = r == 1 ? 1 : 2,
                               .shape = {r == 1 ? cols : r, r == 1 ? 0 : cols}, .data = g[k]};
        n++;
    }
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < TQP_T_LAYER_COUNT; k++) {
            if (!m->t[l][k]) continue;
            int64_t r, cols;
            tqp_layer_tensor_shape(c, (tqp_layer_tensor)k, &r, &cols);
            snprintf(names[n], 128, "model.layers.%d.%s.%s", l,
                     tqp_layer_tensor_name((tqp_layer_tensor)k),
                     tqp_layer_tensor_suffix((tqp_layer_tensor)k));
            t[n] = (tqp_st_tensor){.name = names[n], .dtype = dtype, .ndim = r == 1 ? 1 : 2,
                                   .shape = {r == 1 ? cols : r, r == 1 ? 0 : cols},
                                   .data = m->t[l][k]};
            if (short_tensor && !strcmp(names[n], short_tensor)) t[n].shape[r == 1 ? 0 : 1]--;
            n++;
        }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    return tqp_safetensors_write(path, t, n);
}

#endif
