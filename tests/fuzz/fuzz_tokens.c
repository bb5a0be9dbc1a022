/* The pre-tokenized reader (--tokens) on arbitrary bytes, against the bundled model's vocabulary
 * and a vocabulary of one. */
#include "fuzz_util.h"
#include "tqp/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    if (!fuzz_write("ids.u32", data, size, path, sizeof path)) return 0;
    for (int v = 1; v <= 512; v += 511) {
        uint32_t *ids = NULL;
        size_t n = 0;
        if (tqp_tokens_read(path, v, &ids, &n) == TQP_OK) {
            for (size_t i = 0; i < n; i++)
                if (ids[i] >= (uint32_t)v) abort(); /* the reader promised ids below v */
            free(ids);
        }
    }
    return 0;
}
