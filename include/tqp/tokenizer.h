/* The llama2.c tokenizer (tokenizer.bin) and pre-tokenized token files.
 *
 * Encoding reproduces llama2.c's encode(text, bos, eos) exactly (BOS, dummy-prefix space,
 * UTF-8 code points looked up whole with byte fallback <0xXX> = byte + 3, then repeated merges
 * of the adjacent pair with the highest score, leftmost on ties), but in O(n log n) with a
 * priority queue instead of llama2.c's O(n^2) rescans.  See docs/ALGORITHMS (section 7).
 */
#ifndef TQP_TOKENIZER_H
#define TQP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"

typedef struct tqp_tokenizer tqp_tokenizer;

/* Load a llama2.c tokenizer file: int32 max_token_length, then `vocab_size` records of
 * {float32 score, int32 len, len bytes}.  The file does not store the vocabulary size; it
 * comes from the model.  A truncated file, a negative or absurd length, or trailing bytes are
 * TQP_EINPUT errors naming the file. */
tqp_status tqp_tokenizer_load(const char *path, int vocab_size, tqp_tokenizer **out);
void tqp_tokenizer_destroy(tqp_tokenizer **t);

int tqp_tokenizer_vocab_size(const tqp_tokenizer *t);
/* The piece of token `id` (borrowed, NUL-terminated; *len gets its length if non-NULL). */
const char *tqp_tokenizer_piece(const tqp_tokenizer *t, int id, size_t *len);

/* Encode `len` bytes of `text` (which must not contain NUL bytes: TQP_EINPUT) into a
 * malloc'd array of token ids.  bos/eos: prepend id 1 / append id 2. */
tqp_status tqp_tokenizer_encode(const tqp_tokenizer *t, const char *text, size_t len, int bos,
                                int eos, uint32_t **tokens, size_t *ntokens);

/* Read a pre-tokenized file: raw little-endian uint32 token ids, no header.  A size that is
 * not a multiple of 4 or an id >= vocab_size is a TQP_EINPUT error naming the file. */
tqp_status tqp_tokens_read(const char *path, int vocab_size, uint32_t **tokens, size_t *ntokens);

#endif
