/* The llama2.c tokenizer reader on arbitrary bytes (the vocabulary size, which the file does
 * not store, taken from the first input byte), then an encoding of a fixed text and of the
 * input's own bytes with a tokenizer that loads. */
#include "fuzz_util.h"
#include "tqp/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const int vocab[] = {512, 1, 2, 3, 256, 259, 1000, 32000};
    int v = vocab[data[0] % 8];
    char path[600];
    if (!fuzz_write("tok.bin", data + 1, size - 1, path, sizeof path)) return 0;
    tqp_tokenizer *t = NULL;
    if (tqp_tokenizer_load(path, v, &t) == TQP_OK) {
        static const char text[] =
            "Once upon a time, there was a little girl named Lily. \xe2\x96\x81 \xff";
        uint32_t *ids = NULL;
        size_t n = 0;
        if (tqp_tokenizer_encode(t, text, sizeof text - 1, 1, 1, &ids, &n) == TQP_OK)
            for (size_t i = 0; i < n; i++)
                tqp_tokenizer_piece(t, (int)ids[i], NULL);
        free(ids);
        ids = NULL;
        size_t len = strnlen((const char *)data + 1, size - 1);
        if (tqp_tokenizer_encode(t, (const char *)data + 1, len, 0, 0, &ids, &n) == TQP_OK)
            free(ids);
        tqp_tokenizer_destroy(&t);
    }
    return 0;
}
