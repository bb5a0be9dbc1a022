/* Reader for Hugging Face Llama directories: config.json (LlamaForCausalLM fields) and one
 * model.safetensors or several shards listed in model.safetensors.index.json.  Tensors stay
 * in the memory maps; only their places, dtypes and shapes are recorded here. */
#include "tqp/model.h"
#include "tqp/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* An integer field; `def` < 0 means required. */
static tqp_status json_int(const char *path, const cJSON *root, const char *key, int def, int *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        if (def < 0) return tqp_error_set(TQP_EINPUT, "%s: missing field %s", path, key);
        *v = def;
        return TQP_OK;
    }
    if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
        fabs(it->valuedouble) > 1e9)
        return tqp_error_set(TQP_EINPUT, "%s: field %s is not an integer", path, key);
    *v = (int)it->valuedouble;
    return TQP_OK;
}

static tqp_status json_num(const char *path, const cJSON *root, const char *key, double def,
                           float *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!it || cJSON_IsNull(it)) {
        *v = (float)def;
        return TQP_OK;
    }
    if (!cJSON_IsNumber(it))
        return tqp_error_set(TQP_EINPUT, "%s: field %s is not a number", path, key);
    *v = (float)it->valuedouble;
    return TQP_OK;
}

/* rope_scaling: llama3 and linear are run; any other type is refused when `strict` (the forward
 * pass would be wrong) and ignored otherwise (planning needs only shapes). */
static tqp_status rope_scaling(const char *path, const cJSON *root, int strict, tqp_config *c)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return TQP_OK;
    if (!cJSON_IsObject(rs))
        return tqp_error_set(TQP_EINPUT, "%s: rope_scaling is not an object", path);
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(ty)) ty = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *type = cJSON_IsString(ty) ? ty->valuestring : "(none)";
    if (!strcmp(type, "default")) return TQP_OK;
    if (!strcmp(type, "linear") || !strcmp(type, "llama3")) {
        c->rope_scaling = type[1] == 'i' ? TQP_ROPE_SCALING_LINEAR : TQP_ROPE_SCALING_LLAMA3;
        TQP_CHECK(json_num(path, rs, "factor", NAN, &c->rope_factor));
        if (c->rope_scaling == TQP_ROPE_SCALING_LLAMA3) {
            TQP_CHECK(json_num(path, rs, "low_freq_factor", 1.0, &c->rope_low_freq_factor));
            TQP_CHECK(json_num(path, rs, "high_freq_factor", 4.0, &c->rope_high_freq_factor));
            TQP_CHECK(json_int(path, rs, "original_max_position_embeddings", 8192,
                               &c->rope_original_max_seq_len));
        }
        return TQP_OK;
    }
    if (strict)
        return tqp_error_set(TQP_EINPUT,
                             "%s: rope_scaling type %s is not supported (llama3 and linear are)",
                             path, type);
    return TQP_OK;
}

/* The architecture named by "architectures" (a Llama when absent). */
static tqp_status check_arch(const char *path, const cJSON *root, tqp_arch *out)
{
    *out = TQP_ARCH_LLAMA;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (!cJSON_IsArray(arch) || cJSON_GetArraySize(arch) == 0) return TQP_OK;
    const cJSON *a;
    cJSON_ArrayForEach(a, arch)
    {
        for (int k = 0; k < TQP_ARCH_COUNT && cJSON_IsString(a); k++)
            if (!strcmp(a->valuestring, tqp_arch_name((tqp_arch)k))) {
                *out = (tqp_arch)k;
                return TQP_OK;
            }
    }
    a = cJSON_GetArrayItem(arch, 0);
    return tqp_error_set(TQP_EINPUT,
                         "%s: architecture %s is not supported (LlamaForCausalLM, "
                         "MistralForCausalLM, Qwen2ForCausalLM and Qwen3ForCausalLM are)",
                         path, cJSON_IsString(a) ? a->valuestring : "(not a string)");
}

static int json_true(const cJSON *root, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, key));
}

/* What each architecture adds to a Llama: biases, q/k norms, a sliding window. */
static tqp_status arch_features(const char *path, const cJSON *root, tqp_config *c)
{
    if (json_true(root, "mlp_bias"))
        return tqp_error_set(TQP_EINPUT, "%s: mlp_bias is not supported", path);
    if (c->arch == TQP_ARCH_QWEN2) c->qkv_bias = 1;
    if (c->arch == TQP_ARCH_QWEN3) c->qk_norm = 1;
    if (json_true(root, "attention_bias")) {
        /* Qwen3 may set it (then q, k and v have biases); a Llama's would also bias o_proj */
        if (c->arch != TQP_ARCH_QWEN3)
            return tqp_error_set(TQP_EINPUT, "%s: attention_bias is not supported for %s", path,
                                 tqp_arch_name(c->arch));
        c->qkv_bias = 1;
    }
    int window = 0;
    TQP_CHECK(json_int(path, root, "sliding_window", 0, &window));
    /* Qwen configs carry a window that only applies with use_sliding_window */
    int qwen = c->arch == TQP_ARCH_QWEN2 || c->arch == TQP_ARCH_QWEN3;
    if (qwen && json_true(root, "use_sliding_window"))
        return tqp_error_set(TQP_EINPUT, "%s: use_sliding_window is not supported for %s", path,
                             tqp_arch_name(c->arch));
    if (!qwen) c->sliding_window = window > 0 ? window : 0;
    return TQP_OK;
}

static tqp_status parse_config(const char *path, const cJSON *root, int strict, tqp_config *c)
{
    memset(c, 0, sizeof *c);
    TQP_CHECK(check_arch(path, root, &c->arch));
    TQP_CHECK(json_int(path, root, "hidden_size", -1, &c->dim));
    TQP_CHECK(json_int(path, root, "intermediate_size", -1, &c->hidden_dim));
    TQP_CHECK(json_int(path, root, "num_hidden_layers", -1, &c->n_layers));
    TQP_CHECK(json_int(path, root, "num_attention_heads", -1, &c->n_heads));
    TQP_CHECK(json_int(path, root, "num_key_value_heads", c->n_heads, &c->n_kv_heads));
    TQP_CHECK(json_int(path, root, "vocab_size", -1, &c->vocab_size));
    TQP_CHECK(json_int(path, root, "max_position_embeddings", 2048, &c->max_seq_len));
    TQP_CHECK(json_num(path, root, "rms_norm_eps", 1e-6, &c->rms_eps));
    TQP_CHECK(json_num(path, root, "rope_theta", 10000.0, &c->rope_theta));
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
    if (tie && !cJSON_IsBool(tie) && !cJSON_IsNull(tie))
        return tqp_error_set(TQP_EINPUT, "%s: field tie_word_embeddings is not a boolean", path);
    c->tied_embeddings = cJSON_IsTrue(tie);
    /* head_dim: hidden / heads unless given (Qwen3 gives one that is not) */
    const cJSON *hdj = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (hdj && !cJSON_IsNull(hdj)) {
        TQP_CHECK(json_int(path, root, "head_dim", 0, &c->head_dim));
    } else {
        if (c->n_heads > 0 && c->dim % c->n_heads != 0)
            return tqp_error_set(TQP_EINPUT, "%s: hidden size %d and %d heads do not divide",
                                 path, c->dim, c->n_heads);
        c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    }
    TQP_CHECK(arch_features(path, root, c));
    c->rope = TQP_ROPE_HALF;
    TQP_CHECK(rope_scaling(path, root, strict, c));
    return tqp_config_validate(c, path);
}

static tqp_status read_json(const char *path, cJSON **out)
{
    char *buf;
    size_t len;
    TQP_CHECK(tqp_file_read_all(path, &buf, &len));
    *out = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!*out || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        return tqp_error_set(TQP_EINPUT, "%s: not a valid JSON object", path);
    }
    return TQP_OK;
}

tqp_status tqp_config_read_hf(const char *path, tqp_config *cfg, tqp_dtype *dtype)
{
    cJSON *root = NULL;
    TQP_CHECK(read_json(path, &root));
    tqp_status s = parse_config(path, root, 0, cfg);
    /* the stored dtype: "torch_dtype" (or "dtype" in newer files); BF16 when absent */
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (!cJSON_IsString(dt)) dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
    *dtype = TQP_DTYPE_BF16;
    if (s == TQP_OK && cJSON_IsString(dt)) {
        if (!strcmp(dt->valuestring, "float32"))
            *dtype = TQP_DTYPE_F32;
        else if (!strcmp(dt->valuestring, "float16"))
            *dtype = TQP_DTYPE_F16;
        else if (strcmp(dt->valuestring, "bfloat16"))
            s = tqp_error_set(TQP_EINPUT, "%s: torch_dtype %s is not float32, float16 or bfloat16",
                              path, dt->valuestring);
    }
    cJSON_Delete(root);
    return s;
}

/* One mapped shard and its parsed header. */
typedef struct {
    tqp_st_entry *e;
    int n;
} shard;

typedef struct {
    const char *dir;
    cJSON *weight_map; // NULL for a single model.safetensors
    char **files;      // (n_files) owned basenames
    int n_files;
    shard *shards; // (n_files)
} hf_state;

static int file_index(const hf_state *st, const char *base)
{
    for (int i = 0; i < st->n_files; i++)
        if (!strcmp(st->files[i], base)) return i;
    return -1;
}

static tqp_status list_files(hf_state *st, char *path, size_t cap)
{
    snprintf(path, cap, "%s/model.safetensors.index.json", st->dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(path, cap, "%s/model.safetensors", st->dir);
        if (stat(path, &sb) != 0)
            return tqp_error_set(TQP_EINPUT,
                                 "%s: no model.safetensors or "
                                 "model.safetensors.index.json",
                                 st->dir);
        st->files = tqp_calloc(1, sizeof *st->files);
        if (!st->files) return TQP_ENOMEM;
        st->files[st->n_files++] = strdup("model.safetensors");
        return TQP_OK;
    }
    cJSON *idx;
    TQP_CHECK(read_json(path, &idx));
    st->weight_map = cJSON_DetachItemFromObjectCaseSensitive(idx, "weight_map");
    cJSON_Delete(idx);
    if (!cJSON_IsObject(st->weight_map))
        return tqp_error_set(TQP_EINPUT, "%s: no weight_map object", path);
    st->files = tqp_calloc((size_t)cJSON_GetArraySize(st->weight_map) + 1, sizeof *st->files);
    if (!st->files) return TQP_ENOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, st->weight_map)
    {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/'))
            return tqp_error_set(TQP_EINPUT,
                                 "%s: weight_map entry %s is not a file in the "
                                 "directory",
                                 path, it->string);
        if (file_index(st, it->valuestring) < 0) st->files[st->n_files++] = strdup(it->valuestring);
    }
    return TQP_OK;
}

static tqp_status map_shards(hf_state *st, tqp_model *m)
{
    m->maps = tqp_calloc((size_t)st->n_files, sizeof *m->maps);
    st->shards = tqp_calloc((size_t)st->n_files, sizeof *st->shards);
    if (!m->maps || !st->shards) return TQP_ENOMEM;
    char path[4096];
    for (int i = 0; i < st->n_files; i++) {
        snprintf(path, sizeof path, "%s/%s", st->dir, st->files[i]);
        TQP_CHECK(tqp_mmap_open(path, &m->maps[i]));
        m->n_maps++;
        TQP_CHECK(tqp_safetensors_parse(&m->maps[i], &st->shards[i].e, &st->shards[i].n));
    }
    return TQP_OK;
}

/* Find tensor `name` with the shape (rows, cols) (rows == 1: a vector) and record it. */
static tqp_status bind(const hf_state *st, const tqp_model *m, const char *name, int64_t rows,
                       int64_t cols, tqp_tensor_ref *ref)
{
    int f = 0;
    if (st->weight_map) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(st->weight_map, name);
        if (!cJSON_IsString(it))
            return tqp_error_set(TQP_EINPUT, "%s/model.safetensors.index.json: missing tensor %s",
                                 st->dir, name);
        f = file_index(st, it->valuestring);
    }
    const char *file = m->maps[f].path;
    const tqp_st_entry *e = tqp_safetensors_find(st->shards[f].e, st->shards[f].n, name);
    if (!e) return tqp_error_set(TQP_EINPUT, "%s: missing tensor %s", file, name);
    int ok = rows == 1 ? (e->ndim == 1 && e->shape[0] == cols)
                       : (e->ndim == 2 && e->shape[0] == rows && e->shape[1] == cols);
    if (!ok) {
        char have[64], want[64];
        if (e->ndim > 1)
            snprintf(have, sizeof have, "[%lld, %lld]", (long long)e->shape[0],
                     (long long)e->shape[1]);
        else
            snprintf(have, sizeof have, "[%lld]", (long long)e->shape[0]);
        if (rows == 1)
            snprintf(want, sizeof want, "[%lld]", (long long)cols);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)rows, (long long)cols);
        return tqp_error_set(TQP_EINPUT, "%s: tensor %s has shape %s but the config implies %s",
                             file, name, have, want);
    }
    *ref = (tqp_tensor_ref){
        .data = e->data, .dtype = e->dtype, .rows = rows, .cols = cols, .file = file};
    return TQP_OK;
}

static tqp_status bind_all(const hf_state *st, tqp_model *m)
{
    const tqp_config *c = &m->cfg;
    char name[256];
    int64_t r, k;
    for (int g = 0; g < TQP_G_COUNT; g++) {
        if (g == TQP_G_OUTPUT && c->tied_embeddings) continue;
        tqp_global_tensor_shape(c, (tqp_global_tensor)g, &r, &k);
        snprintf(name, sizeof name, "%s.weight", tqp_global_tensor_name((tqp_global_tensor)g));
        TQP_CHECK(bind(st, m, name, r, k, &m->global[g]));
    }
    if (c->tied_embeddings) m->global[TQP_G_OUTPUT] = m->global[TQP_G_EMBED];
    m->layer = tqp_calloc((size_t)c->n_layers * TQP_T_LAYER_COUNT, sizeof *m->layer);
    if (!m->layer) return TQP_ENOMEM;
    for (int l = 0; l < c->n_layers; l++)
        for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
            tqp_layer_tensor_shape(c, (tqp_layer_tensor)t, &r, &k);
            if (r * k == 0) continue; /* not in this architecture */
            snprintf(name, sizeof name, "model.layers.%d.%s.%s", l,
                     tqp_layer_tensor_name((tqp_layer_tensor)t),
                     tqp_layer_tensor_suffix((tqp_layer_tensor)t));
            TQP_CHECK(bind(st, m, name, r, k, &m->layer[(size_t)l * TQP_T_LAYER_COUNT + t]));
        }
    return TQP_OK;
}

tqp_status tqp_model_load_hf(const char *dir, tqp_model *m)
{
    m->format = TQP_FORMAT_HF;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *cfg = NULL;
    tqp_status s = read_json(path, &cfg);
    if (s == TQP_OK) s = parse_config(path, cfg, 1, &m->cfg);
    cJSON_Delete(cfg);
    if (s != TQP_OK) return s;
    hf_state st = {.dir = dir};
    s = list_files(&st, path, sizeof path);
    if (s == TQP_OK) s = map_shards(&st, m);
    if (s == TQP_OK) s = bind_all(&st, m);
    for (int i = 0; i < st.n_files; i++) {
        if (st.shards) tqp_safetensors_free(st.shards[i].e, st.shards[i].n);
        free(st.files[i]);
    }
    free(st.shards);
    free(st.files);
    cJSON_Delete(st.weight_map);
    return s;
}
