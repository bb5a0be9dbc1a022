/* Writing a checkpoint as a Hugging Face Llama directory (config.json + model.safetensors). */
#ifndef TQP_CONVERT_H
#define TQP_CONVERT_H

#include "tqp/model.h"

/* Write `m` to directory `out_dir` (created if missing) with tensors stored as `dtype`.
 * llama2.c models get the q/k row permutation that Hugging Face's rotate-half RoPE expects.
 * If `tokenizer` is non-NULL it is copied to out_dir/tokenizer.bin.  Each file is written
 * atomically; tensors are converted one at a time. */
tqp_status tqp_convert_to_hf(const tqp_model *m, const char *out_dir, tqp_dtype dtype,
                             const char *tokenizer);

/* Row permutation from adjacent-pair to rotate-half RoPE layout, for a (n_heads * head_dim,
 * cols) matrix: HF row h*hd + p*(hd/2) + j takes llama2.c row h*hd + 2j + p. */
void tqp_permute_rope_rows(float *w, int n_heads, int head_dim, int64_t cols, float *tmp);

#endif
