/* The safetensors container: an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then
 * the data, offsets relative to its start.  Reading validates everything against the file
 * size; writing streams tensors through a temporary file renamed into place. */
#ifndef TQP_SAFETENSORS_H
#define TQP_SAFETENSORS_H

#include <stdint.h>

#include "tqp/io.h"
#include "tqp/model.h"

typedef struct {
    char *name; // owned
    tqp_dtype dtype;
    int ndim;
    int64_t shape[4];
    const uint8_t *data; // borrowed from the map
    uint64_t begin, end; // offsets into the data section
} tqp_st_entry;

/* Parse and validate the header of a mapped safetensors file: header length within the file,
 * valid JSON, a known dtype (F32, F16, BF16), a shape whose size matches the byte range,
 * offsets inside the data section, no two tensors overlapping.  *entries is owned. */
tqp_status tqp_safetensors_parse(const tqp_mmap *map, tqp_st_entry **entries, int *n);
void tqp_safetensors_free(tqp_st_entry *entries, int n);
/* Entry by name, or NULL. */
const tqp_st_entry *tqp_safetensors_find(const tqp_st_entry *e, int n, const char *name);

/* A tensor to write: fp32 source data converted to `dtype` on the way out.  The data comes
 * from `data`, or, when that is NULL, from fill(fill_ctx, buf) into a scratch buffer (so a
 * writer never holds more than one converted tensor). */
typedef struct {
    const char *name;
    tqp_dtype dtype;
    int ndim; // 1 or 2
    int64_t shape[2];
    const float *data; // (shape[0] * shape[1]) or (shape[0]) fp32, borrowed; or NULL
    tqp_status (*fill)(void *fill_ctx, float *buf);
    void *fill_ctx;
} tqp_st_tensor;

/* Write the tensors in order to `path` (temporary file, fsync, rename). */
tqp_status tqp_safetensors_write(const char *path, const tqp_st_tensor *t, int n);

#endif
