/* Hugging Face `tokenizer.json` tokenizers (the "tokenizers" library's format), in C.
 *
 * The two model types the large open checkpoints use are implemented: BPE over byte-level
 * symbols with a regex pre-tokenizer (Llama 3.x, Qwen2.5, Qwen3: `ByteLevel`, `Split` with a
 * regex, run by PCRE2 with Unicode properties) and BPE over characters with byte fallback and the
 * `▁` metaspace convention (Llama 2, Mistral: `Prepend`/`Replace` normalizers or a `Metaspace`
 * pre-tokenizer).  Added tokens are matched in the raw text before anything else (leftmost,
 * longest), merges apply by rank, and the post-processor's `TemplateProcessing` adds the special
 * tokens of a single sequence.  Normalizers: NFC, NFKC, NFD, NFKD (utf8proc), Prepend, Replace
 * with a string pattern, Sequence.  Any other model type, normalizer, pre-tokenizer, processor or
 * option value is refused when the file is loaded, with a message naming it and the file.
 *
 * Encoding is O(n log n) in the text length: pre-tokenized pieces are merged with a heap of
 * candidate pairs, and pieces seen before in the same call come from a cache.
 */
#ifndef TQP_HFTOK_H
#define TQP_HFTOK_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"

typedef struct tqp_hftok tqp_hftok;

/* Load `path`: a tokenizer.json file, or a directory holding tokenizer.json (and, optionally,
 * tokenizer_config.json, read for its bos_token and eos_token). */
tqp_status tqp_hftok_load(const char *path, tqp_hftok **out);
void tqp_hftok_destroy(tqp_hftok **t);

/* One more than the largest token id (vocabulary and added tokens). */
int tqp_hftok_vocab_size(const tqp_hftok *t);
/* The SHA-256 (hex) of the tokenizer.json file: the tokenizer's identity. */
const char *tqp_hftok_sha256(const tqp_hftok *t);
/* The ids of the BOS and EOS tokens named by tokenizer_config.json (or the post-processor), -1
 * when there is none. */
int tqp_hftok_bos(const tqp_hftok *t);
int tqp_hftok_eos(const tqp_hftok *t);

/* Encode `len` bytes of UTF-8 `text` as one sequence into a malloc'd array of ids; with
 * `special` the post-processor's special tokens are added (what the reference library's
 * encode(text) returns).  Text that is not UTF-8 is a TQP_EINPUT error naming the byte offset. */
tqp_status tqp_hftok_encode(const tqp_hftok *t, const char *text, size_t len, int special,
                            uint32_t **ids, size_t *n);

/* The bytes token `id` stands for, into out (at most cap bytes): byte-level tokens mapped back
 * from the GPT-2 alphabet, metaspace tokens with U+2581 read as a space, byte-fallback <0xXX>
 * as the byte, added tokens verbatim.  An unknown id or a longer token is TQP_EINPUT. */
tqp_status tqp_hftok_decode(const tqp_hftok *t, uint32_t id, char *out, size_t cap, size_t *len);

#endif
