/* Writes a random llama2.c checkpoint of any shape (normal weights scaled by 1/sqrt(fan-in),
 * RMSNorm weights near 1), for tests that need a model wider than the bundled one.  The same
 * arguments give the same bytes.  DEAD (optional, default 0) zeroes the first DEAD weights of
 * every layer's two RMSNorms, so that those inputs of the q/k/v and gate/up matrices are dead
 * (their Hessian diagonal is zero).
 * Usage: mkmodel OUT.bin DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ SEED [DEAD] */
#include <math.h>
#include <stdint.h>

#include "testutil.h"

int main(int argc, char **argv)
{
    if (argc != 10 && argc != 11) {
        fprintf(stderr,
                "usage: mkmodel OUT.bin DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ SEED [DEAD]\n");
        return 2;
    }
    tqp_config c = {0};
    c.dim = atoi(argv[2]), c.hidden_dim = atoi(argv[3]), c.n_layers = atoi(argv[4]);
    c.n_heads = atoi(argv[5]), c.n_kv_heads = atoi(argv[6]), c.vocab_size = atoi(argv[7]);
    c.max_seq_len = atoi(argv[8]);
    if (c.dim < 1 || c.hidden_dim < 1 || c.n_layers < 1 || c.n_heads < 1 || c.n_kv_heads < 1 ||
        c.vocab_size < 1 || c.max_seq_len < 1 || c.dim % c.n_heads || c.n_heads % c.n_kv_heads) {
        fprintf(stderr, "mkmodel: bad shape\n");
        return 2;
    }
    int dead = argc == 11 ? atoi(argv[10]) : 0;
    if (dead < 0 || dead > c.dim) {
        fprintf(stderr, "mkmodel: bad DEAD\n");
        return 2;
    }
    c.head_dim = c.dim / c.n_heads;
    tu_model m;
    tu_model_random(&m, &c, 1, strtoull(argv[9], NULL, 10));
    for (int l = 0; l < c.n_layers; l++)
        for (int i = 0; i < dead; i++) m.rms_att[l * c.dim + i] = m.rms_ffn[l * c.dim + i] = 0;
    int rc = tu_model_write_llama2c(&m, argv[1]);
    tu_model_free(&m);
    if (rc) fprintf(stderr, "mkmodel: %s: write failed\n", argv[1]);
    return rc ? 1 : 0;
}
