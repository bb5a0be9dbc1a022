/* Writes a random Hugging Face checkpoint of one of the architectures TQP runs, for the shell
 * tests (tests/hfmodel.h).  The same arguments give the same bytes.
 * Usage: mkhf OUT_DIR ARCH DIM HIDDEN LAYERS HEADS KV_HEADS HEAD_DIM VOCAB SEQ SEED [WINDOW]
 *   ARCH: llama, mistral, qwen2 or qwen3 */
#include <math.h>

#include "hfmodel.h"

int main(int argc, char **argv)
{
    if (argc != 12 && argc != 13) {
        fprintf(stderr, "usage: mkhf OUT_DIR ARCH DIM HIDDEN LAYERS HEADS KV_HEADS HEAD_DIM VOCAB "
                        "SEQ SEED [WINDOW]\n");
        return 2;
    }
    static const char *const archs[] = {"llama", "mistral", "qwen2", "qwen3"};
    tqp_config c = {.rms_eps = 1e-6f, .rope_theta = 10000.0f, .rope = TQP_ROPE_HALF};
    c.arch = TQP_ARCH_COUNT;
    for (int a = 0; a < TQP_ARCH_COUNT; a++)
        if (!strcmp(argv[2], archs[a])) c.arch = (tqp_arch)a;
    c.dim = atoi(argv[3]), c.hidden_dim = atoi(argv[4]), c.n_layers = atoi(argv[5]);
    c.n_heads = atoi(argv[6]), c.n_kv_heads = atoi(argv[7]), c.head_dim = atoi(argv[8]);
    c.vocab_size = atoi(argv[9]), c.max_seq_len = atoi(argv[10]);
    c.sliding_window = argc == 13 ? atoi(argv[12]) : 0;
    c.qkv_bias = c.arch == TQP_ARCH_QWEN2;
    c.qk_norm = c.arch == TQP_ARCH_QWEN3;
    if (c.arch == TQP_ARCH_COUNT || c.n_layers > 64 || tqp_config_validate(&c, "mkhf") != TQP_OK) {
        fprintf(stderr, "mkhf: bad arguments: %s\n", tqp_error_message());
        return 2;
    }
    hf_model m;
    hf_model_random(&m, &c, strtoull(argv[11], NULL, 10));
    tqp_status s = hf_model_write(&m, argv[1], TQP_DTYPE_F32, NULL);
    hf_model_free(&m);
    if (s != TQP_OK) fprintf(stderr, "mkhf: %s\n", tqp_error_message());
    return s == TQP_OK ? 0 : 1;
}
