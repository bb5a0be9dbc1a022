/* Shared by the fuzz targets: the fuzzer's bytes as a file (the parsers under test read paths),
 * and a model walk that touches every tensor a loaded checkpoint exposes. */
#ifndef TQP_FUZZ_UTIL_H
#define TQP_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tqp/model.h"

/* A scratch directory of this process, made once: $TMPDIR/tqp-fuzz-<pid>. */
static inline const char *fuzz_dir(void)
{
    static char dir[512];
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/tqp-fuzz-%ld", t && *t ? t : "/tmp", (long)getpid());
        mkdir(dir, 0755);
    }
    return dir;
}

/* Write `n` bytes to <fuzz_dir>/<name>; returns the path (static storage per call site's
 * buffer), or NULL if the write failed. */
static inline const char *fuzz_write(const char *name, const void *data, size_t n, char *path,
                                     size_t cap)
{
    snprintf(path, cap, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    int ok = fwrite(data, 1, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? path : NULL;
}

/* Every layer and whole-model tensor of a loaded model, and one row through the row reader,
 * as the pipeline would touch them.  Sizes are bounded by the caller's inputs. */
static inline void fuzz_walk_model(const tqp_model *m)
{
    for (int l = 0; l < m->cfg.n_layers; l++) {
        tqp_layer_weights lw;
        if (tqp_model_layer_load(m, l, &lw) == TQP_OK) tqp_layer_weights_release(&lw);
        int64_t r, c;
        tqp_layer_tensor_shape(&m->cfg, TQP_T_Q, &r, &c);
        double *row = malloc(sizeof(double) * (size_t)c);
        if (row) tqp_model_tensor_rows(m, l, TQP_T_Q, 0, 1, row);
        free(row);
    }
    for (int g = 0; g < TQP_G_COUNT; g++) {
        const float *p;
        float *owned = NULL;
        if (tqp_model_global_load(m, (tqp_global_tensor)g, &p, &owned) == TQP_OK) free(owned);
    }
}

/* Read a checkpoint the way the commands do: its configuration alone (tqp plan), then the whole
 * model and every tensor when it loads. */
static inline void fuzz_load_checkpoint(const char *path)
{
    tqp_config cfg;
    tqp_model_format fmt;
    tqp_dtype dt;
    tqp_config_read(path, &cfg, &fmt, &dt);
    tqp_model *m = NULL;
    if (tqp_model_load(path, &m) == TQP_OK) fuzz_walk_model(m);
    tqp_model_destroy(&m);
}

#endif
