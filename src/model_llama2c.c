/* Reader for llama2.c's legacy fp32 checkpoint: seven int32 header fields (dim, hidden_dim,
 * n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means a separate
 * classifier follows), then each tensor for all layers in turn, then the unused RoPE tables
 * (seq_len * head_dim floats), then the classifier if not shared. */
#include "tqp/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { HEADER_BYTES = 7 * 4 };

/* Order of the tensors in the file (each stacked over layers). */
static const tqp_layer_tensor file_order_pre[] = {TQP_T_ATTN_NORM, TQP_T_Q,    TQP_T_K,
                                                  TQP_T_V,         TQP_T_O,    TQP_T_FFN_NORM,
                                                  TQP_T_GATE,      TQP_T_DOWN, TQP_T_UP};

/* The header's configuration; `data` holds the file's first `size` bytes (size: the file's). */
static tqp_status read_header(const char *path, const void *data, size_t size, tqp_config *c,
                              int *shared)
{
    if (size < HEADER_BYTES)
        return tqp_error_set(TQP_EINPUT, "%s: truncated: %zu bytes, the header alone is %d", path,
                             size, HEADER_BYTES);
    int32_t h[7];
    memcpy(h, data, sizeof h);
    memset(c, 0, sizeof *c);
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    *shared = h[5] > 0;
    c->vocab_size = h[5] == INT32_MIN ? 0 : abs(h[5]);
    c->max_seq_len = h[6];
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->rms_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->tied_embeddings = *shared;
    c->rope = TQP_ROPE_ADJACENT;
    if (c->n_heads > 0 && c->dim % c->n_heads != 0)
        return tqp_error_set(TQP_EINPUT, "%s: hidden size %d and %d heads do not divide", path,
                             c->dim, c->n_heads);
    return tqp_config_validate(c, path);
}

/* Bytes the file must have under config `c`. */
static uint64_t expected_size(const tqp_config *c, int shared)
{
    uint64_t floats = (uint64_t)c->vocab_size * c->dim; /* embedding */
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        int64_t r, k;
        tqp_layer_tensor_shape(c, (tqp_layer_tensor)t, &r, &k);
        floats += (uint64_t)c->n_layers * (uint64_t)(r * k);
    }
    floats += (uint64_t)c->dim;                              /* final norm */
    floats += (uint64_t)c->max_seq_len * c->head_dim;        /* freq_cis real + imag */
    if (!shared) floats += (uint64_t)c->vocab_size * c->dim; /* classifier */
    return HEADER_BYTES + 4 * floats;
}

/* The file's size must be the one the header implies. */
static tqp_status check_size(const char *path, const tqp_config *c, int shared, size_t size)
{
    uint64_t want = expected_size(c, shared);
    if (size < want)
        return tqp_error_set(TQP_EINPUT,
                             "%s: truncated: the header implies %llu bytes, the file "
                             "has %zu",
                             path, (unsigned long long)want, size);
    if (size != want)
        return tqp_error_set(TQP_EINPUT,
                             "%s: header sizes do not match the file: they imply "
                             "%llu bytes, the file has %zu",
                             path, (unsigned long long)want, size);
    return TQP_OK;
}

tqp_status tqp_config_read_llama2c(const char *path, tqp_config *cfg)
{
    struct stat sb;
    unsigned char hdr[HEADER_BYTES];
    FILE *f = fopen(path, "rb");
    if (!f) return tqp_error_set(TQP_ENOENT, "%s: cannot open", path);
    size_t got = fread(hdr, 1, sizeof hdr, f);
    int st = fstat(fileno(f), &sb);
    fclose(f);
    if (st != 0) return tqp_error_set(TQP_EIO, "%s: cannot stat", path);
    int shared = 0;
    TQP_CHECK(read_header(path, hdr, got < (size_t)sb.st_size ? got : (size_t)sb.st_size, cfg,
                          &shared));
    return check_size(path, cfg, shared, (size_t)sb.st_size);
}

static tqp_tensor_ref ref_at(const tqp_mmap *map, uint64_t *off, int64_t rows, int64_t cols)
{
    tqp_tensor_ref r = {.data = map->data + *off,
                        .dtype = TQP_DTYPE_F32,
                        .rows = rows,
                        .cols = cols,
                        .file = map->path};
    *off += 4 * (uint64_t)(rows * cols);
    return r;
}

tqp_status tqp_model_load_llama2c(const char *path, tqp_model *m)
{
    m->format = TQP_FORMAT_LLAMA2C;
    m->maps = tqp_calloc(1, sizeof *m->maps);
    if (!m->maps) return TQP_ENOMEM;
    TQP_CHECK(tqp_mmap_open(path, &m->maps[0]));
    m->n_maps = 1;
    const tqp_mmap *map = &m->maps[0];
    int shared = 0;
    TQP_CHECK(read_header(path, map->data, map->size, &m->cfg, &shared));
    const tqp_config *c = &m->cfg;
    TQP_CHECK(check_size(path, c, shared, map->size));
    m->layer = tqp_calloc((size_t)c->n_layers * TQP_T_LAYER_COUNT, sizeof *m->layer);
    if (!m->layer) return TQP_ENOMEM;
    uint64_t off = HEADER_BYTES;
    m->global[TQP_G_EMBED] = ref_at(map, &off, c->vocab_size, c->dim);
    for (size_t i = 0; i < sizeof file_order_pre / sizeof file_order_pre[0]; i++) {
        tqp_layer_tensor t = file_order_pre[i];
        int64_t r, k;
        tqp_layer_tensor_shape(c, t, &r, &k);
        for (int l = 0; l < c->n_layers; l++)
            m->layer[(size_t)l * TQP_T_LAYER_COUNT + t] = ref_at(map, &off, r, k);
    }
    m->global[TQP_G_NORM] = ref_at(map, &off, 1, c->dim);
    off += 4 * (uint64_t)c->max_seq_len * c->head_dim; /* skip freq_cis_real, freq_cis_imag */
    m->global[TQP_G_OUTPUT] =
        shared ? m->global[TQP_G_EMBED] : ref_at(map, &off, c->vocab_size, c->dim);
    return TQP_OK;
}
