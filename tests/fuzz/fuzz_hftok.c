/* The tokenizer.json reader on arbitrary bytes, then, for a tokenizer that loads, an encoding of
 * a fixed text (scripts, special tokens, whitespace) and of the input itself. */
#include "fuzz_util.h"
#include "tqp/hftok.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[600];
    if (!fuzz_write("tokenizer.json", data, size, path, sizeof path)) return 0;
    tqp_hftok *t = NULL;
    if (tqp_hftok_load(path, &t) != TQP_OK) return 0;
    static const char text[] = "Hello  world!\n\tI'M here <s> caf\xc3\xa9 e\xcc\x81 123456 "
                               "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 </s>  end";
    uint32_t *ids = NULL;
    size_t n = 0;
    if (tqp_hftok_encode(t, text, sizeof text - 1, 1, &ids, &n) == TQP_OK)
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= (uint32_t)tqp_hftok_vocab_size(t)) abort(); /* an id it cannot have */
    free(ids);
    ids = NULL;
    if (tqp_hftok_encode(t, (const char *)data, size, 0, &ids, &n) == TQP_OK) free(ids);
    tqp_hftok_destroy(&t);
    return 0;
}
