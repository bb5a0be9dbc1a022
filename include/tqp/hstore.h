/* The Hessian file: a small index HDF5 file (--out) plus one HDF5 file per committed layer in
 * the directory <out>.layers/, reached from the index through external links.
 *
 * Commit protocol (restart state machine), one layer at a time:
 *
 *     [absent] --write_layer()--> layer_NNN.h5.tmp --fsync + rename--> layer_NNN.h5 [committed]
 *                                                  \--write_index()--> index lists the layer
 *
 * Invariants:
 *  1. layer_NNN.h5 exists only once its data are complete and fsynced: the rename is the commit.
 *  2. The index (--out) is rewritten atomically (temporary file, fsync, rename) before the first
 *     layer and after every commit; it holds the run's identity (model fingerprint, text
 *     SHA-256, nsamples, ctx, seed, window mode, accumulation constants).
 *  3. On resume, layers 0 .. k-1 are kept where k is the first layer without a committed file;
 *     every later layer is recomputed.  Because the accumulation is exact and deterministic, a
 *     resumed run ends with the same bytes as an uninterrupted one.
 *  4. An existing index with another identity is never overwritten unless --force is given.
 */
#ifndef TQP_HSTORE_H
#define TQP_HSTORE_H

#include <mpi.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/hacc.h"

typedef struct {
    const char *model, *model_fingerprint, *text, *text_sha256;
    int nsamples, ctx, random, sequential;
    uint64_t seed;
    int n_layers;
    int width[4]; // input width of each group (qkv, o, gate_up, down)
} tqp_hessian_meta;

typedef enum {
    TQP_RESUME_AUTO,    // resume if the output exists with the same identity, else start
    TQP_RESUME_REQUIRE, // --resume: the output must exist with the same identity
    TQP_RESUME_FORCE    // --force: discard any existing output
} tqp_resume_mode;

typedef struct {
    char *out, *dir; // owned paths: the index file and the layer directory
    char *identity;  // owned JSON text
    tqp_hessian_meta meta;
    int committed; // layers [0, committed) are on disk
} tqp_hstore;

/* Collective.  Check or create the output and find the first uncommitted layer. */
tqp_status tqp_hstore_open(MPI_Comm comm, const char *out, const tqp_hessian_meta *meta,
                           tqp_resume_mode mode, tqp_hstore *st);
/* Collective.  Write layer `layer` from the four finalized accumulators with collective MPI-IO,
 * commit it, and update the index. */
tqp_status tqp_hstore_commit_layer(MPI_Comm comm, tqp_hstore *st, int layer,
                                   tqp_hacc *const acc[4]);
void tqp_hstore_close(tqp_hstore *st);

/* Layer file path: <out>.layers/layer_NNN.h5 (malloc'd). */
char *tqp_hstore_layer_path(const tqp_hstore *st, int layer);

/* A finished Hessian file opened for reading (any rank, serial HDF5, read-only). */
typedef struct {
    char *path, *dir;                    // owned: index file and layer directory
    char *model_fingerprint, *identity; // owned, from the index
    int n_layers;
} tqp_hfile;

/* Open and check an index: format, completeness (every layer committed), and that it was made
 * from the model with fingerprint `fingerprint` (TQP_EMISMATCH otherwise).  Errors name the
 * file. */
tqp_status tqp_hfile_open(const char *path, const char *fingerprint, int n_layers, tqp_hfile *hf);
/* H (n, n) row-major, the sum over tokens, and the token count of one layer and group.  A
 * stored matrix of another width is TQP_EINPUT naming the file, layer and group. */
tqp_status tqp_hfile_read(const tqp_hfile *hf, int layer, int group, int n, double *H,
                          int64_t *count);
/* The same for rows [r0, r1) of H only (H holds r1 - r0 rows of n). */
tqp_status tqp_hfile_read_rows(const tqp_hfile *hf, int layer, int group, int n, int r0, int r1,
                               double *H, int64_t *count);
void tqp_hfile_close(tqp_hfile *hf);

#endif
