/* Writes a random llama2.c checkpoint of any shape (normal weights scaled by 1/sqrt(fan-in),
 * RMSNorm weights near 1), for tests that need a model wider than the bundled one.  The same
 * arguments give the same bytes.
 * Usage: mkmodel OUT.bin DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ SEED */
#include <math.h>
#include <stdint.h>

#include "testutil.h"

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: mkmodel OUT.bin DIM HIDDEN LAYERS HEADS KV_HEADS VOCAB SEQ SEED\n");
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
    c.head_dim = c.dim / c.n_heads;
    tu_model m;
    tu_model_random(&m, &c, 1, strtoull(argv[9], NULL, 10));
    int rc = tu_model_write_llama2c(&m, argv[1]);
    tu_model_free(&m);
    if (rc) fprintf(stderr, "mkmodel: %s: write failed\n", argv[1]);
    return rc ? 1 : 0;
}
