/* The llama2.c checkpoint reader on arbitrary bytes: tqp_config_read and tqp_model_load, then
 * every tensor of a model that loads. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    if (!fuzz_write("model.bin", data, size, path, sizeof path)) return 0;
    fuzz_load_checkpoint(path);
    return 0;
}
