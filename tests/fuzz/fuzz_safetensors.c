/* The safetensors reader on arbitrary bytes, inside a Hugging Face directory whose config.json
 * is fixed (a 2-layer model of width 16, as tools/fuzz-corpus.sh makes for the seeds): the
 * header parse directly, then the whole model load and every tensor of a model that loads. */
#include "fuzz_util.h"
#include "tqp/io.h"
#include "tqp/safetensors.h"

static const char config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 16, "
    "\"intermediate_size\": 32, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"vocab_size\": 64, \"max_position_embeddings\": 64, "
    "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000, \"tie_word_embeddings\": true, "
    "\"torch_dtype\": \"float32\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600], cpath[600];
    if (!fuzz_write("hf/config.json", config, sizeof config - 1, cpath, sizeof cpath)) {
        char dir[600];
        snprintf(dir, sizeof dir, "%s/hf", fuzz_dir());
        mkdir(dir, 0755);
        if (!fuzz_write("hf/config.json", config, sizeof config - 1, cpath, sizeof cpath)) return 0;
    }
    const char *p = fuzz_write("hf/model.safetensors", data, size, path, sizeof path);
    if (!p) return 0;
    tqp_mmap map;
    if (tqp_mmap_open(p, &map) == TQP_OK) {
        tqp_st_entry *e = NULL;
        int n = 0;
        if (tqp_safetensors_parse(&map, &e, &n) == TQP_OK) tqp_safetensors_free(e, n);
        tqp_mmap_close(&map);
    }
    char dir[600];
    snprintf(dir, sizeof dir, "%s/hf", fuzz_dir());
    tqp_model *m = NULL;
    if (tqp_model_load(dir, &m) == TQP_OK) fuzz_walk_model(m);
    tqp_model_destroy(&m);
    return 0;
}
