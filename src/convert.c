/* `tqp convert`: a checkpoint written as a Hugging Face directory.  This is how the safetensors
 * reader is tested on a real model: the converted directory must give the same logits. */
#include "tqp/convert.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tqp/cli.h"
#include "tqp/io.h"
#include "tqp/safetensors.h"

void tqp_permute_rope_rows(float *w, int n_heads, int hd, int64_t cols, float *tmp)
{
    size_t rowb = (size_t)cols * sizeof(float);
    for (int h = 0; h < n_heads; h++) {
        float *head = w + (size_t)h * hd * cols;
        memcpy(tmp, head, rowb * (size_t)hd);
        for (int p = 0; p < 2; p++)
            for (int j = 0; j < hd / 2; j++)
                memcpy(head + (size_t)(p * (hd / 2) + j) * cols, tmp + (size_t)(2 * j + p) * cols,
                       rowb);
    }
}

typedef struct {
    const tqp_model *m;
    const tqp_tensor_ref *ref;
    int permute_heads; // 0: no permutation, else the head count of this q/k matrix
    const char *name;  // the tensor's name in the output
} fill_ctx;

static tqp_status fill(void *vctx, float *buf)
{
    const fill_ctx *c = vctx;
    size_t n = (size_t)(c->ref->rows * c->ref->cols);
    tqp_dtype_to_f32(c->ref->dtype, c->ref->data, buf, n);
    for (size_t i = 0; i < n; i++) /* never copy a weight that evaluation would refuse */
        if (!isfinite(buf[i]))
            return tqp_error_set(TQP_ENONFINITE, "%s: %s: non-finite weight %g at element %zu",
                                 c->ref->file, c->name, (double)buf[i], i);
    if (!c->permute_heads) return TQP_OK;
    int hd = c->m->cfg.head_dim;
    float *tmp = tqp_malloc((size_t)hd * (size_t)c->ref->cols * sizeof(float));
    if (!tmp) return TQP_ENOMEM;
    tqp_permute_rope_rows(buf, c->permute_heads, hd, c->ref->cols, tmp);
    free(tmp);
    return TQP_OK;
}

static cJSON *config_json(const tqp_config *c, tqp_dtype dtype)
{
    cJSON *d = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(d, "architectures");
    static const char *const model_type[TQP_ARCH_COUNT] = {"llama", "mistral", "qwen2", "qwen3"};
    cJSON_AddItemToArray(arch, cJSON_CreateString(tqp_arch_name(c->arch)));
    cJSON_AddStringToObject(d, "model_type", model_type[c->arch]);
    if (c->head_dim * c->n_heads != c->dim) cJSON_AddNumberToObject(d, "head_dim", c->head_dim);
    if (c->arch == TQP_ARCH_QWEN3 && c->qkv_bias) cJSON_AddBoolToObject(d, "attention_bias", 1);
    if (c->sliding_window > 0) cJSON_AddNumberToObject(d, "sliding_window", c->sliding_window);
    cJSON_AddNumberToObject(d, "hidden_size", c->dim);
    cJSON_AddNumberToObject(d, "intermediate_size", c->hidden_dim);
    cJSON_AddNumberToObject(d, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(d, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(d, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(d, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(d, "max_position_embeddings", c->max_seq_len);
    cJSON_AddNumberToObject(d, "rms_norm_eps", c->rms_eps);
    cJSON_AddNumberToObject(d, "rope_theta", c->rope_theta);
    if (c->rope_scaling != TQP_ROPE_SCALING_NONE) {
        cJSON *rs = cJSON_AddObjectToObject(d, "rope_scaling");
        int llama3 = c->rope_scaling == TQP_ROPE_SCALING_LLAMA3;
        cJSON_AddStringToObject(rs, "rope_type", llama3 ? "llama3" : "linear");
        cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        if (llama3) {
            cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
            cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                    c->rope_original_max_seq_len);
        }
    }
    cJSON_AddBoolToObject(d, "tie_word_embeddings", c->tied_embeddings);
    cJSON_AddStringToObject(d, "hidden_act", "silu");
    cJSON_AddNumberToObject(d, "bos_token_id", 1);
    cJSON_AddNumberToObject(d, "eos_token_id", 2);
    cJSON_AddStringToObject(d, "torch_dtype",
                            dtype == TQP_DTYPE_F32   ? "float32"
                            : dtype == TQP_DTYPE_F16 ? "float16"
                                                     : "bfloat16");
    return d;
}

static tqp_status copy_file(const char *from, const char *to)
{
    char *buf;
    size_t len;
    TQP_CHECK(tqp_file_read_all(from, &buf, &len));
    tqp_status s = tqp_file_write_atomic(to, buf, len);
    free(buf);
    return s;
}

/* One entry per tensor written, names owned by `names`. */
static tqp_status build_list(const tqp_model *m, tqp_dtype dtype, tqp_st_tensor *t, fill_ctx *fc,
                             char (*names)[128], int *count)
{
    const tqp_config *c = &m->cfg;
    int n = 0;
    for (int g = 0; g < TQP_G_COUNT; g++) {
        if (g == TQP_G_OUTPUT && c->tied_embeddings) continue;
        snprintf(names[n], 128, "%s.weight", tqp_global_tensor_name((tqp_global_tensor)g));
        fc[n] = (fill_ctx){m, &m->global[g], 0, names[n]};
        n++;
    }
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < TQP_T_LAYER_COUNT; k++) {
            int64_t rows, cols;
            tqp_layer_tensor_shape(c, (tqp_layer_tensor)k, &rows, &cols);
            if (rows * cols == 0) continue; /* not in this architecture */
            snprintf(names[n], 128, "model.layers.%d.%s.%s", l,
                     tqp_layer_tensor_name((tqp_layer_tensor)k),
                     tqp_layer_tensor_suffix((tqp_layer_tensor)k));
            int heads = k == TQP_T_Q ? c->n_heads : k == TQP_T_K ? c->n_kv_heads : 0;
            fc[n] = (fill_ctx){m, &m->layer[(size_t)l * TQP_T_LAYER_COUNT + k],
                               c->rope == TQP_ROPE_ADJACENT ? heads : 0, names[n]};
            n++;
        }
    for (int i = 0; i < n; i++) {
        const tqp_tensor_ref *r = fc[i].ref;
        t[i] = (tqp_st_tensor){.name = names[i],
                               .dtype = dtype,
                               .ndim = r->rows == 1 ? 1 : 2,
                               .fill = fill,
                               .fill_ctx = &fc[i]};
        t[i].shape[0] = r->rows == 1 ? r->cols : r->rows;
        t[i].shape[1] = r->rows == 1 ? 0 : r->cols;
    }
    *count = n;
    return TQP_OK;
}

tqp_status tqp_convert_to_hf(const tqp_model *m, const char *out_dir, tqp_dtype dtype,
                             const char *tokenizer)
{
    struct stat sb;
    if (stat(out_dir, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return tqp_error_set(TQP_EUSAGE, "%s: exists and is not a directory (--out)", out_dir);
    int created = mkdir(out_dir, 0755) == 0;
    if (!created && errno != EEXIST)
        return tqp_error_set(TQP_EIO, "%s: cannot create directory: %s", out_dir, strerror(errno));
    int cap = TQP_G_COUNT + m->cfg.n_layers * TQP_T_LAYER_COUNT, n = 0;
    tqp_st_tensor *t = tqp_calloc((size_t)cap, sizeof *t);
    fill_ctx *fc = tqp_calloc((size_t)cap, sizeof *fc);
    char(*names)[128] = tqp_calloc((size_t)cap, sizeof *names);
    char path[4096];
    tqp_status s = (t && fc && names) ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK) s = build_list(m, dtype, t, fc, names, &n);
    snprintf(path, sizeof path, "%s/model.safetensors", out_dir);
    if (s == TQP_OK) s = tqp_safetensors_write(path, t, n);
    if (s == TQP_OK) {
        cJSON *cfg = config_json(&m->cfg, dtype);
        snprintf(path, sizeof path, "%s/config.json", out_dir);
        s = tqp_json_write(path, cfg);
        cJSON_Delete(cfg);
    }
    snprintf(path, sizeof path, "%s/tokenizer.bin", out_dir);
    if (s == TQP_OK && tokenizer) s = copy_file(tokenizer, path);
    if (s != TQP_OK && created) { /* leave nothing behind that this call made */
        static const char *const made[] = {"model.safetensors", "config.json", "tokenizer.bin"};
        for (size_t i = 0; i < sizeof made / sizeof made[0]; i++) {
            snprintf(path, sizeof path, "%s/%s", out_dir, made[i]);
            unlink(path);
        }
        rmdir(out_dir);
    }
    free(t);
    free(fc);
    free(names);
    return s;
}
