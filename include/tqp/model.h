/* Llama-architecture checkpoints: llama2.c `.bin` files and Hugging Face directories
 * (config.json + safetensors), memory-mapped and exposed one layer at a time as fp32.
 *
 * Weights are never copied whole into memory: fp32 tensors are borrowed from the map when
 * aligned; F16/BF16 tensors (and unaligned fp32) are converted one layer at a time into a
 * buffer the caller releases.  Matrices use the Hugging Face orientation: (out, in) row-major,
 * y = W x.
 */
#ifndef TQP_MODEL_H
#define TQP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/io.h"

/* How query/key rows pair up for RoPE: llama2.c rotates adjacent pairs (2j, 2j+1); Hugging
 * Face rotates halves (j, j + head_dim/2) and permutes its q/k rows accordingly. */
typedef enum { TQP_ROPE_ADJACENT, TQP_ROPE_HALF } tqp_rope_layout;

/* RoPE frequency scaling of long-context checkpoints (config.json "rope_scaling"). */
typedef enum {
    TQP_ROPE_SCALING_NONE,
    TQP_ROPE_SCALING_LINEAR, // every frequency divided by factor
    TQP_ROPE_SCALING_LLAMA3, // Llama 3.1: low frequencies / factor, high kept, a ramp between
} tqp_rope_scaling;

/* The architectures TQP runs (config.json "architectures"). */
typedef enum {
    TQP_ARCH_LLAMA,   // LlamaForCausalLM (and llama2.c checkpoints)
    TQP_ARCH_MISTRAL, // MistralForCausalLM: a Llama with an optional sliding attention window
    TQP_ARCH_QWEN2,   // Qwen2ForCausalLM: biases on q, k and v
    TQP_ARCH_QWEN3,   // Qwen3ForCausalLM: RMSNorm of each q and k head before RoPE, head_dim free
    TQP_ARCH_COUNT
} tqp_arch;
/* "LlamaForCausalLM"... */
const char *tqp_arch_name(tqp_arch a);

typedef struct {
    int dim;        // hidden size
    int hidden_dim; // FFN intermediate size
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim; // dim / n_heads, unless config.json says otherwise (Qwen3)
    int vocab_size;
    int max_seq_len;
    float rms_eps;
    float rope_theta;
    int tied_embeddings; // output head shares the token embedding
    tqp_rope_layout rope;
    tqp_rope_scaling rope_scaling;
    float rope_factor;             // linear and llama3
    float rope_low_freq_factor;    // llama3
    float rope_high_freq_factor;   // llama3
    int rope_original_max_seq_len; // llama3: original_max_position_embeddings
    tqp_arch arch;
    int qkv_bias;       // q, k and v projections have biases (Qwen2)
    int qk_norm;        // RMSNorm over each q and k head, weights (head_dim) (Qwen3)
    int sliding_window; // a query attends to the last sliding_window positions only; 0: all
} tqp_config;

/* The rotary frequency (radians per position) of pair j, 0 <= j < head_dim / 2: rope_theta^(-2j /
 * head_dim), scaled as the configuration says. */
double tqp_rope_inv_freq(const tqp_config *cfg, int j);

typedef enum { TQP_DTYPE_F32, TQP_DTYPE_F16, TQP_DTYPE_BF16 } tqp_dtype;

/* Per-layer tensors, in the order used everywhere (HDF5 groups, safetensors names). */
typedef enum {
    TQP_T_ATTN_NORM, // (dim)
    TQP_T_Q,         // (n_heads * head_dim, dim)
    TQP_T_K,         // (n_kv_heads * head_dim, dim)
    TQP_T_V,         // (n_kv_heads * head_dim, dim)
    TQP_T_O,         // (dim, n_heads * head_dim)
    TQP_T_FFN_NORM,  // (dim)
    TQP_T_GATE,      // (hidden_dim, dim)
    TQP_T_UP,        // (hidden_dim, dim)
    TQP_T_DOWN,      // (dim, hidden_dim)
    /* present only in some architectures (shape 0 x 0 otherwise), never quantized */
    TQP_T_Q_BIAS, // (n_heads * head_dim) when qkv_bias
    TQP_T_K_BIAS, // (n_kv_heads * head_dim) when qkv_bias
    TQP_T_V_BIAS, // (n_kv_heads * head_dim) when qkv_bias
    TQP_T_Q_NORM, // (head_dim) when qk_norm
    TQP_T_K_NORM, // (head_dim) when qk_norm
    TQP_T_LAYER_COUNT
} tqp_layer_tensor;

/* Whole-model tensors. */
typedef enum {
    TQP_G_EMBED,  // (vocab_size, dim)
    TQP_G_NORM,   // (dim)
    TQP_G_OUTPUT, // (vocab_size, dim); aliases TQP_G_EMBED when tied
    TQP_G_COUNT
} tqp_global_tensor;

/* A tensor inside a mapped file (borrowed). */
typedef struct {
    const void *data; // rows * cols elements of `dtype`, borrowed from a map
    tqp_dtype dtype;
    int64_t rows, cols; // a vector has rows == 1
    const char *file;   // borrowed, for messages
} tqp_tensor_ref;

typedef enum { TQP_FORMAT_LLAMA2C, TQP_FORMAT_HF } tqp_model_format;

typedef struct tqp_model {
    tqp_config cfg;
    tqp_model_format format;
    char *path;     // owned: the .bin file or the HF directory
    tqp_mmap *maps; // (n_maps) owned
    int n_maps;
    tqp_tensor_ref global[TQP_G_COUNT];
    tqp_tensor_ref *layer; // (n_layers, TQP_T_LAYER_COUNT) owned
} tqp_model;

/* fp32 weights of one layer: each pointer is borrowed from the map or points into `owned`. */
typedef struct {
    const float *w[TQP_T_LAYER_COUNT];
    float *owned; // converted copies, NULL if everything was borrowed
} tqp_layer_weights;

/* Load a checkpoint: a llama2.c `.bin` file or a Hugging Face directory.  Every structural
 * problem (truncation, sizes that disagree, missing tensors, bad JSON...) is a TQP_EINPUT
 * error whose message names the file. */
tqp_status tqp_model_load(const char *path, tqp_model **out);
void tqp_model_destroy(tqp_model **m);

/* The configuration of a checkpoint without mapping its weights: a Hugging Face config.json
 * (the file, or a directory holding it) or a llama2.c `.bin` file (its header, checked against
 * the file's size).  *format tells which; *dtype is the stored weight type (llama2.c: F32; Hugging
 * Face: torch_dtype, BF16 when absent).  Unlike tqp_model_load, fields that only the forward pass
 * cares about (rope_scaling) are accepted: this is for planning.  Errors name the file. */
tqp_status tqp_config_read(const char *path, tqp_config *cfg, tqp_model_format *format,
                           tqp_dtype *dtype);

/* Shape (rows, cols) a tensor must have under `cfg`. */
void tqp_layer_tensor_shape(const tqp_config *cfg, tqp_layer_tensor t, int64_t *rows,
                            int64_t *cols);
void tqp_global_tensor_shape(const tqp_config *cfg, tqp_global_tensor t, int64_t *rows,
                             int64_t *cols);
/* Hugging Face names: "self_attn.q_proj", "model.embed_tokens"... (without ".weight"); the
 * suffix of a layer tensor's full name: "weight", or "bias" for the biases. */
const char *tqp_layer_tensor_name(tqp_layer_tensor t);
const char *tqp_layer_tensor_suffix(tqp_layer_tensor t);
const char *tqp_global_tensor_name(tqp_global_tensor t);

/* The most parameters a configuration may imply (2^42, about 4.4e12: ten times the largest
 * open model), so that every byte count derived from a valid configuration fits 64 bits. */
#define TQP_MAX_PARAMS 4398046511104.0

/* Check a configuration for absurd values (each dimension, their divisibility, and the total
 * size against TQP_MAX_PARAMS); `what` names its source in the message. */
tqp_status tqp_config_validate(const tqp_config *cfg, const char *what);

/* The fp32 weights of layer `l`.  Non-finite values are a TQP_ENONFINITE error naming the
 * layer and tensor.  Release with tqp_layer_weights_release. */
tqp_status tqp_model_layer_load(const tqp_model *m, int l, tqp_layer_weights *lw);
void tqp_layer_weights_release(tqp_layer_weights *lw);
/* Rows [r0, r1) of tensor t of layer l as fp64 in out ((r1 - r0) x cols), converted from the
 * stored type without touching the other rows.  Non-finite values are a TQP_ENONFINITE error
 * naming the file, layer, tensor and element. */
tqp_status tqp_model_tensor_rows(const tqp_model *m, int l, int t, int64_t r0, int64_t r1,
                                 double *out);

/* Rows [r0, r1) of a whole-model tensor as fp32 in out, without touching the others (and their
 * pages released, as tqp_model_tensor_rows).  Non-finite: TQP_ENONFINITE naming the file. */
tqp_status tqp_model_global_rows(const tqp_model *m, tqp_global_tensor t, int64_t r0, int64_t r1,
                                 float *out);
/* The fp32 data of a whole-model tensor: *out is borrowed or equal to *owned (free it). */
tqp_status tqp_model_global_load(const tqp_model *m, tqp_global_tensor t, const float **out,
                                 float **owned);

/* Convert `n` elements of `dtype` at `src` (any alignment) to fp32. */
void tqp_dtype_to_f32(tqp_dtype dtype, const void *src, float *dst, size_t n);
/* fp32 -> F16/BF16 with round-to-nearest-even (NaN stays NaN, overflow becomes Inf). */
uint16_t tqp_f32_to_f16(float f);
uint16_t tqp_f32_to_bf16(float f);
size_t tqp_dtype_size(tqp_dtype dtype);
const char *tqp_dtype_name(tqp_dtype dtype); // "F32", "F16", "BF16"

/* A quick identity of a checkpoint: SHA-256 over its configuration and, for each file, its
 * size and its first and last MiB (the whole file when it is at most 2 MiB). */
tqp_status tqp_model_fingerprint(const tqp_model *m, char hex[65]);

/* Internal to the loaders (model_llama2c.c, model_hf.c). */
tqp_status tqp_model_load_llama2c(const char *path, tqp_model *m);
tqp_status tqp_model_load_hf(const char *dir, tqp_model *m);
tqp_status tqp_config_read_llama2c(const char *path, tqp_config *cfg);
tqp_status tqp_config_read_hf(const char *json_path, tqp_config *cfg, tqp_dtype *dtype);

#endif
