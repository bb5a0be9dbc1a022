/* Checkpoint loaders: dtype conversions, and every kind of bad input the loaders must reject
 * with a one-line error naming the file (truncation, lying headers, bad config fields, bad
 * safetensors headers, missing tensors, non-finite weights). */
#include <math.h>

#include "check.h"
#include "testutil.h"
#include "tqp/safetensors.h"

/* Load `path` and expect failure with status `want` and `needle` in the message. */
static void expect_fail(const char *path, tqp_status want, const char *needle)
{
    tqp_model *m = NULL;
    tqp_error_clear();
    tqp_status s = tqp_model_load(path, &m);
    const char *msg = tqp_error_message();
    CHECK_MSG(s == want, "%s: status %s, want %s (%s)", path, tqp_strerror(s), tqp_strerror(want),
              msg);
    CHECK_MSG(strstr(msg, needle) != NULL, "message '%s' lacks '%s'", msg, needle);
    CHECK(strchr(msg, '\n') == NULL);
    CHECK(m == NULL);
    tqp_model_destroy(&m);
}

static void test_f16_bf16(void)
{
    float f[4];
    uint16_t h[4] = {0x3C00, 0xC000, 0x7BFF, 0x0001};
    tqp_dtype_to_f32(TQP_DTYPE_F16, h, f, 4);
    CHECK(f[0] == 1.0f && f[1] == -2.0f && f[2] == 65504.0f && f[3] == ldexpf(1, -24));
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) { /* every non-NaN half survives f16 -> f32 -> f16 */
        uint16_t x = (uint16_t)i, y;
        float v;
        tqp_dtype_to_f32(TQP_DTYPE_F16, &x, &v, 1);
        if (isnan(v)) continue;
        y = tqp_f32_to_f16(v);
        bad += y != x;
        tqp_dtype_to_f32(TQP_DTYPE_BF16, &x, &v, 1);
        if (!isnan(v)) bad += tqp_f32_to_bf16(v) != x;
    }
    CHECK_MSG(bad == 0, "%d values did not round-trip", bad);
    /* round to nearest even */
    uint32_t tie = 0x3F808000u, up = 0x3F818000u;
    float a, b;
    memcpy(&a, &tie, 4);
    memcpy(&b, &up, 4);
    CHECK(tqp_f32_to_bf16(a) == 0x3F80 && tqp_f32_to_bf16(b) == 0x3F82);
    CHECK(tqp_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3C00);     /* tie: down to even */
    CHECK(tqp_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3C02); /* tie: up to even */
    CHECK(tqp_f32_to_f16(1e6f) == 0x7C00 && tqp_f32_to_f16(-1e6f) == 0xFC00);
    CHECK(tqp_f32_to_f16(ldexpf(1, -25)) == 0x0000); /* tie between 0 and the smallest */
    CHECK(tqp_f32_to_f16(ldexpf(3, -26)) == 0x0001);
}

/* ---- llama2.c ---- */

static tqp_config small_cfg(void)
{
    return (tqp_config){.dim = 8,
                        .hidden_dim = 12,
                        .n_layers = 2,
                        .n_heads = 2,
                        .n_kv_heads = 1,
                        .head_dim = 4,
                        .vocab_size = 5,
                        .max_seq_len = 4,
                        .rms_eps = 1e-5f,
                        .rope_theta = 10000.0f};
}

static void truncate_copy(const char *src, const char *dst, long keep, long extra)
{
    FILE *f = fopen(src, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = calloc((size_t)n + (size_t)extra + 1, 1);
    CHECK(fread(b, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    CHECK(tu_write_file(dst, b, keep >= 0 ? (size_t)keep : (size_t)(n + extra)) == 0);
    free(b);
}

static void patch_int(const char *path, long off, int32_t v)
{
    FILE *f = fopen(path, "r+b");
    fseek(f, off, SEEK_SET);
    fwrite(&v, 4, 1, f);
    fclose(f);
}

static void test_llama2c_bad(const char *dir)
{
    char good[600], bad[600];
    snprintf(good, sizeof good, "%s/good.bin", dir);
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    tqp_config c = small_cfg();
    tu_model tm;
    tu_model_random(&tm, &c, 0, 5);
    tu_model_write_llama2c(&tm, good);
    tqp_model *m = NULL;
    CHECK_MSG(tqp_model_load(good, &m) == TQP_OK, "%s", tqp_error_message());
    CHECK(m && m->cfg.n_kv_heads == 1 && !m->cfg.tied_embeddings);
    tqp_model_destroy(&m);

    truncate_copy(good, bad, 10, 0);
    expect_fail(bad, TQP_EINPUT, "truncated");
    truncate_copy(good, bad, 600, 0);
    expect_fail(bad, TQP_EINPUT, "truncated");
    truncate_copy(good, bad, -1, 4);
    expect_fail(bad, TQP_EINPUT, "do not match");
    truncate_copy(good, bad, -1, 0);
    patch_int(bad, 12, 3); /* 3 heads do not divide dim 8 */
    expect_fail(bad, TQP_EINPUT, "bad.bin");
    truncate_copy(good, bad, -1, 0);
    patch_int(bad, 0, -8);
    expect_fail(bad, TQP_EINPUT, "hidden size");
    truncate_copy(good, bad, -1, 0);
    patch_int(bad, 4, 1 << 30);
    expect_fail(bad, TQP_EINPUT, "bad.bin");
    expect_fail("/nonexistent/model.bin", TQP_ENOENT, "/nonexistent/model.bin");

    /* a NaN in layer 1's up projection (w3, the last per-layer tensor) */
    tm.w3[(size_t)1 * c.hidden_dim * c.dim + 3] = NAN;
    tu_model_write_llama2c(&tm, bad);
    CHECK(tqp_model_load(bad, &m) == TQP_OK);
    tqp_layer_weights lw;
    CHECK(tqp_model_layer_load(m, 0, &lw) == TQP_OK);
    tqp_layer_weights_release(&lw);
    tqp_status s = tqp_model_layer_load(m, 1, &lw);
    CHECK(s == TQP_ENONFINITE);
    CHECK_MSG(strstr(tqp_error_message(), "layer 1 mlp.up_proj"), "%s", tqp_error_message());
    tqp_model_destroy(&m);
    tu_model_free(&tm);
}

/* ---- Hugging Face ---- */

typedef struct {
    const char *drop;   // tensor to leave out
    const char *mutate; // tensor to change
    const char *dtype;  // its dtype text
    int64_t rows;       // its first dimension (0: keep)
    long shift_begin;   // added to its begin offset
    long extra_end;     // added to its end offset
} st_case;

/* Write a safetensors file for config small_cfg() (tied embeddings) with one mutation. */
static void write_hf(const char *dir, const st_case *k, const char *config_override)
{
    tqp_config c = small_cfg();
    char path[700], json[16384], *p = json;
    snprintf(path, sizeof path, "%s/config.json", dir);
    const char *cfg =
        config_override
            ? config_override
            : "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8, "
              "\"intermediate_size\": 12, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
              "\"num_key_value_heads\": 1, \"vocab_size\": 5, \"rms_norm_eps\": 1e-5, "
              "\"rope_theta\": 10000.0, \"max_position_embeddings\": 4, \"tie_word_embeddings\": "
              "true}";
    tu_write_file(path, cfg, strlen(cfg));
    p += sprintf(p, "{");
    long off = 0;
    char name[128];
    for (int i = -2; i < c.n_layers * TQP_T_LAYER_COUNT; i++) {
        int64_t r, cc;
        if (i < 0) {
            tqp_global_tensor g = i == -2 ? TQP_G_EMBED : TQP_G_NORM;
            tqp_global_tensor_shape(&c, g, &r, &cc);
            snprintf(name, sizeof name, "%s.weight", tqp_global_tensor_name(g));
        } else {
            tqp_layer_tensor t = (tqp_layer_tensor)(i % TQP_T_LAYER_COUNT);
            tqp_layer_tensor_shape(&c, t, &r, &cc);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", i / TQP_T_LAYER_COUNT,
                     tqp_layer_tensor_name(t));
        }
        if (k->drop && !strcmp(name, k->drop)) continue;
        int mut = k->mutate && !strcmp(name, k->mutate);
        const char *dt = mut && k->dtype ? k->dtype : "F32";
        if (mut && k->rows) r = k->rows;
        long len = (long)(r * cc) * 4, b = off + (mut ? k->shift_begin : 0);
        long e = off + len + (mut ? k->extra_end : 0);
        if (r == 1)
            p += sprintf(
                p, "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [%lld], \"data_offsets\": [%ld, %ld]}",
                p == json + 1 ? "" : ", ", name, dt, (long long)cc, b, e);
        else
            p += sprintf(p,
                         "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [%lld, %lld], \"data_offsets\": "
                         "[%ld, %ld]}",
                         p == json + 1 ? "" : ", ", name, dt, (long long)r, (long long)cc, b, e);
        off += len;
    }
    p += sprintf(p, "}");
    size_t hl = strlen(json);
    size_t total = 8 + hl + (size_t)off;
    uint8_t *buf = calloc(total, 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(hl >> (8 * i));
    memcpy(buf + 8, json, hl);
    float one = 1.0f;
    for (size_t i = 8 + hl; i + 4 <= total; i += 4)
        memcpy(buf + i, &one, 4);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    tu_write_file(path, buf, total);
    free(buf);
}

static void hf_case(const char *dir, const st_case *k, const char *cfg, tqp_status want,
                    const char *needle)
{
    write_hf(dir, k, cfg);
    if (want == TQP_OK) {
        tqp_model *m = NULL;
        tqp_status s = tqp_model_load(dir, &m);
        CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
        tqp_model_destroy(&m);
    } else {
        expect_fail(dir, want, needle);
    }
}

static void test_hf_bad(const char *dir)
{
    st_case ok = {0};
    hf_case(dir, &ok, NULL, TQP_OK, NULL);
    const char *q0 = "model.layers.0.self_attn.q_proj.weight";
    st_case missing = {.drop = "model.layers.1.mlp.down_proj.weight"};
    hf_case(dir, &missing, NULL, TQP_EINPUT, "missing tensor model.layers.1.mlp.down_proj");
    st_case shape = {.mutate = q0, .rows = 4};
    hf_case(dir, &shape, NULL, TQP_EINPUT, "config implies");
    st_case dtype = {.mutate = q0, .dtype = "I8"};
    hf_case(dir, &dtype, NULL, TQP_EINPUT, "dtype I8");
    st_case dsize = {.mutate = q0, .dtype = "F16"}; /* F32-sized range for an F16 tensor */
    hf_case(dir, &dsize, NULL, TQP_EINPUT, "bytes for a shape");
    st_case oob = {
        .mutate = "model.layers.1.mlp.down_proj.weight", .shift_begin = 4, .extra_end = 4};
    hf_case(dir, &oob, NULL, TQP_EINPUT, "outside");
    st_case overlap = {.mutate = q0, .shift_begin = -4, .extra_end = -4};
    hf_case(dir, &overlap, NULL, TQP_EINPUT, "overlap");

    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    write_hf(dir, &ok, NULL);
    truncate_copy(path, path, 200, 0); /* header length now exceeds the file */
    expect_fail(dir, TQP_EINPUT, "longer than the file");
    const char *junk = "\x10\0\0\0\0\0\0\0{\"a\": [1, 2,,]}";
    tu_write_file(path, junk, 8 + 16);
    expect_fail(dir, TQP_EINPUT, "not a valid JSON");
    tu_write_file(path, "abc", 3);
    expect_fail(dir, TQP_EINPUT, "truncated");

    /* config.json problems */
    hf_case(dir, &ok,
            "{\"intermediate_size\": 12, \"num_hidden_layers\": 2, "
            "\"num_attention_heads\": 2, \"vocab_size\": 5}",
            TQP_EINPUT, "missing field hidden_size");
    hf_case(dir, &ok,
            "{\"hidden_size\": 8, \"intermediate_size\": 12, \"num_hidden_layers\": 2, "
            "\"num_attention_heads\": 0, \"vocab_size\": 5}",
            TQP_EINPUT, "config.json");
    hf_case(dir, &ok,
            "{\"hidden_size\": 8, \"intermediate_size\": 12, \"num_hidden_layers\": 2, "
            "\"num_attention_heads\": 2, \"vocab_size\": 5, \"rms_norm_eps\": 7}",
            TQP_EINPUT, "rms_norm_eps");
    hf_case(dir, &ok, "{\"hidden_size\": \"big\", \"intermediate_size\": 12}", TQP_EINPUT,
            "not an integer");
    hf_case(dir, &ok, "{\"hidden_size\": 8,", TQP_EINPUT, "not a valid JSON");
    hf_case(dir, &ok, "{\"architectures\": [\"GPT2LMHeadModel\"], \"hidden_size\": 8}", TQP_EINPUT,
            "architecture GPT2LMHeadModel is not supported");
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    expect_fail(dir, TQP_ENOENT, "config.json");
}

static void test_hf_index(const char *dir)
{
    st_case ok = {0};
    write_hf(dir, &ok, NULL);
    char path[700], from[700];
    snprintf(from, sizeof from, "%s/model.safetensors", dir);
    snprintf(path, sizeof path, "%s/model-00001-of-00001.safetensors", dir);
    CHECK(rename(from, path) == 0);
    /* an index that points at a shard that does not exist for one tensor */
    char json[8192], *p = json;
    p += sprintf(p, "{\"metadata\": {}, \"weight_map\": {\"model.embed_tokens.weight\": "
                    "\"model-00001-of-00001.safetensors\", \"model.norm.weight\": "
                    "\"model-00001-of-00001.safetensors\"");
    for (int l = 0; l < 2; l++)
        for (int t = 0; t < TQP_T_LAYER_COUNT; t++)
            p += sprintf(p, ", \"model.layers.%d.%s.weight\": \"%s\"", l,
                         tqp_layer_tensor_name((tqp_layer_tensor)t),
                         l == 1 && t == TQP_T_DOWN ? "model-00002-of-00002.safetensors"
                                                   : "model-00001-of-00001.safetensors");
    sprintf(p, "}}");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    tu_write_file(path, json, strlen(json));
    expect_fail(dir, TQP_ENOENT, "model-00002-of-00002.safetensors");
    /* fix the index: everything in the one shard */
    char *bad = strstr(json, "model-00002-of-00002");
    memcpy(bad, "model-00001-of-00001", 20);
    tu_write_file(path, json, strlen(json));
    tqp_model *m = NULL;
    tqp_status s = tqp_model_load(dir, &m);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    CHECK(m && m->n_maps == 1 && m->cfg.tied_embeddings &&
          m->global[TQP_G_OUTPUT].data == m->global[TQP_G_EMBED].data);
    tqp_model_destroy(&m);
    unlink(path);
}

/* The bundled model: header fields, tied classifier. */
static void test_bundled(void)
{
    tqp_model *m = NULL;
    tqp_status s = tqp_model_load(data_path("models/stories260K/stories260K.bin"), &m);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    if (!m) return;
    tqp_config *c = &m->cfg;
    CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5 && c->n_heads == 8 &&
          c->n_kv_heads == 4 && c->vocab_size == 512 && c->max_seq_len == 512);
    CHECK(c->tied_embeddings && c->rope == TQP_ROPE_ADJACENT);
    tqp_model_destroy(&m);
}

/* RoPE scaling against the published rule, computed here from its definition for the Llama 3.1
 * parameters (theta 500000, head size 128, factor 8, low 1, high 4, original 8192): pairs whose
 * wavelength is under 8192/4 keep their frequency, over 8192/1 divide it by 8, and between
 * blend the two with weight (8192/wavelength - 1) / 3 on the unscaled one. */
static void test_rope_scaling(void)
{
    tqp_config c = {.head_dim = 128, .rope_theta = 500000.0f};
    for (int j = 0; j < 64; j++) CHECK(tqp_rope_inv_freq(&c, j) == pow(500000.0, -2.0 * j / 128));
    c.rope_scaling = TQP_ROPE_SCALING_LINEAR;
    c.rope_factor = 4;
    for (int j = 0; j < 64; j++)
        CHECK_NEAR(tqp_rope_inv_freq(&c, j), pow(500000.0, -2.0 * j / 128) / 4, 1e-15);
    c.rope_scaling = TQP_ROPE_SCALING_LLAMA3;
    c.rope_factor = 8, c.rope_low_freq_factor = 1, c.rope_high_freq_factor = 4;
    c.rope_original_max_seq_len = 8192;
    int kept = 0, divided = 0, blended = 0;
    for (int j = 0; j < 64; j++) {
        double f = pow(500000.0, -2.0 * j / 128), lambda = 2 * 3.14159265358979323846 / f, want;
        if (lambda < 2048) {
            want = f, kept++;
        } else if (lambda > 8192) {
            want = f / 8, divided++;
        } else {
            double w = (8192 / lambda - 1) / 3;
            want = w * f + (1 - w) * f / 8, blended++;
        }
        CHECK_NEAR(tqp_rope_inv_freq(&c, j), want, 1e-12);
    }
    CHECK_MSG(kept > 0 && divided > 0 && blended > 0, "regimes %d %d %d", kept, divided, blended);
    /* a factor of 1 changes nothing */
    c.rope_factor = 1;
    for (int j = 0; j < 64; j++)
        CHECK_NEAR(tqp_rope_inv_freq(&c, j), pow(500000.0, -2.0 * j / 128), 1e-15);
}

int main(void)
{
    char *dir = tu_mkdtemp();
    test_f16_bf16();
    test_rope_scaling();
    test_bundled();
    test_llama2c_bad(dir);
    test_hf_bad(dir);
    test_hf_index(dir);
    tu_rmdir(dir);
    return check_done();
}
