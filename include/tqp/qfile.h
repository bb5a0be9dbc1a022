/* The quantized model file: one HDF5 file holding, per layer and linear matrix, the packed
 * codes and everything a decoder needs (scale, codebook, bits, rotation kind and seeds, sign
 * vectors), the proxy loss and bits per weight, plus the unquantized tensors (embeddings,
 * norms, output head) so that the file and the model configuration rebuild the model.
 * Layout (docs/quantized-format.md):
 *
 *   /                      attributes: format "tqp-quantized", format_version, tqp_version,
 *                          options (JSON), config (JSON), model, model_fingerprint,
 *                          hessians, hessian_identity, summary figures, complete
 *   /trellis               trellis codebook only: L, K, V, code, LUT (docs/trellis.md)
 *   /embed, /norm[, /output]            fp32, unquantized
 *   /layer_NNN/attn_norm, ffn_norm      fp32, unquantized
 *   /layer_NNN/<q|k|v|o|gate|up|down>/  codes (uint8, packed little-endian bit stream),
 *                          sign_out, sign_in (rht: packed bits, 1 = -1), attributes
 *
 * The writer is serial (rank 0) and commits layer by layer into <out>.parts/ (below); the
 * file itself is assembled under a temporary name and renamed into place only when complete:
 * a crash leaves no partial output under the final name.  Every dataset carries a Fletcher-32
 * checksum; the root attribute "identity" (JSON) holds the options and input checksums that
 * determine the bytes, so that a rerun can resume or refuse.
 */
#ifndef TQP_QFILE_H
#define TQP_QFILE_H

#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/eval.h"
#include "tqp/model.h"
#include "tqp/quant.h"
#include "tqp/rot.h"
#include "tqp/trellis.h"

enum { TQP_QMATS = 7 }; /* q, k, v, o, gate, up, down */

/* Matrix i of a layer: its tensor, input group and short name. */
tqp_layer_tensor tqp_qmat_tensor(int i);
/* The dataset name of a per-layer vector stored unquantized in fp32 ("attn_norm", "ffn_norm",
 * "q_bias", "k_bias", "v_bias", "q_norm", "k_norm"), or NULL for a quantized matrix.  A vector
 * is stored when the architecture has it (its shape is not 0 x 0). */
const char *tqp_qfile_vector_name(tqp_layer_tensor t);
int tqp_qmat_group(int i);
const char *tqp_qmat_name(int i);

/* What is stored with one quantized matrix. */
typedef struct {
    int rows, cols, bits;
    const tqp_codebook *cb;
    tqp_rot_kind rotation;
    tqp_rounding rounding;
    uint64_t seed_out, seed_in;
    double scale, rho;
    double damp;         // final relative damping σ
    int damp_retries;    // factorization retries
    double proxy_rel;    // relative proxy loss
    double code_bits, total_bits; // per weight (trellis: stored stream bytes * 8 / weights)
    double resid_scale;  // E8P at 3 and 4 bits: the residual stage's scale (0: none)
    int rho_candidates;  // --scale-rho auto: the ρ tried (0: a fixed ρ), not stored
    double rho_search_seconds; // the extra rounding time the search cost, not stored
} tqp_qmat_info;

/* Total bits of one matrix: codes, the fp64 scale, both seeds, the sign vectors (rht) and the
 * fp64 residual scale (E8P at 3 and 4 bits). */
double tqp_qmat_total_bits(const tqp_qmat_info *q);

/* ---- writing (one rank) ----
 *
 * Per-layer commits (state diagram in src/cmd_quantize.c and docs/pipeline.md).  Layers are
 * written to <out>.parts/layer_NNN.h5.tmp.<pid>, then fsynced and renamed to layer_NNN.h5 (the
 * commit), and their SHA-256 recorded in <out>.parts/state.json (rewritten atomically) with the
 * run's identity.  On open, committed layers whose checksum no longer matches, and files not
 * listed, are removed and redone.  tqp_qwriter_finish assembles <out> from the parts (temporary
 * name, rename) and removes <out>.parts.  An existing complete <out> with the same identity
 * is verified dataset by dataset (Fletcher-32): if every layer reads back the run is complete;
 * otherwise its good layers are copied back into the parts and only the damaged ones redone. */
typedef struct {
    hid_t f;                  // the file being written, or -1
    char *path, *dir, *tmp;   // owned: output, <out>.parts, temporary file being written
    char *identity;           // owned JSON text: what determines the bytes
    int n_layers;
    unsigned char *committed; // per layer
    char (*sha)[65];          // SHA-256 of each committed layer file
    int complete;             // the output exists, verified, with this identity
    int worker;               // a team leader's writer: commits layer files, not the state
} tqp_qwriter;

/* Refuse (TQP_EMISMATCH, TQP_EUSAGE) an existing output or parts directory written with other
 * options, comparing only the members `identity` names; nothing is changed.  For a check
 * before long work whose results belong to the identity (the Hessians). */
tqp_status tqp_qwriter_precheck(const char *path, const char *identity, int force);
/* Open the run state for `path`: with `force` remove any previous output first; otherwise
 * refuse other options, verify what exists and set w->committed / w->complete. */
tqp_status tqp_qwriter_open(const char *path, const char *identity, int n_layers, int force,
                            tqp_qwriter *w);
/* A writer for another rank than the one that opened the output (a team leader, see
 * tqp_quantize_run): it writes and commits layer files in <path>.parts (fsync, rename, SHA-256
 * in w->sha) but leaves the state file to the opener, which records them with
 * tqp_qwriter_record.  A layer file renamed but not yet recorded is removed and redone by a
 * resumed run. */
tqp_status tqp_qwriter_open_worker(const char *path, int n_layers, tqp_qwriter *w);
/* The opener: layer `layer`'s file, committed by a worker with this SHA-256, enters the state. */
tqp_status tqp_qwriter_record(tqp_qwriter *w, int layer, const char *sha);
int tqp_qwriter_committed_count(const tqp_qwriter *w);
/* Start layer `layer`'s file (with its unquantized norms from the model). */
tqp_status tqp_qwriter_layer_begin(tqp_qwriter *w, const tqp_model *m, int layer);
/* One matrix: codes (rows * cols, values < 2^bits) are packed here; signs from the rotation. */
tqp_status tqp_qwriter_matrix(tqp_qwriter *w, int layer, int mat, const tqp_qmat_info *q,
                              const uint32_t *codes, const tqp_rot *rot);
/* The same with codes already packed (tile codebooks: the trellis streams, tcq.h). */
tqp_status tqp_qwriter_matrix_packed(tqp_qwriter *w, int layer, int mat, const tqp_qmat_info *q,
                                     const uint8_t *packed, size_t bytes, const tqp_rot *rot);
/* Close, fsync, rename, checksum and record the layer: the commit point. */
tqp_status tqp_qwriter_layer_commit(tqp_qwriter *w, int layer);
/* The stored information of a committed layer's matrices (from the output when complete). */
tqp_status tqp_qwriter_layer_infos(const tqp_qwriter *w, int layer, tqp_qmat_info *infos);
/* Every layer committed: write <out> (globals from the model, /trellis when `t`, the layers,
 * root attributes: identity, `attrs` members, complete), rename into place, remove the parts. */
tqp_status tqp_qwriter_finish(tqp_qwriter *w, const tqp_model *m, const tqp_trellis *t,
                              const char *attrs_json);
/* Remove the temporary file being written, if any (after a failure); commits stay. */
void tqp_qwriter_abort(tqp_qwriter *w);
/* tqp_qwriter_abort and free everything. */
void tqp_qwriter_close(tqp_qwriter *w);

/* The attributes of a stored matrix group. */
tqp_status tqp_qmat_read_info(hid_t g, tqp_qmat_info *q);

/* The quantized file's format_version: written by tqp_qwriter, the only one tqp_qfile_open
 * accepts. */
enum { TQP_QFILE_VERSION = 1 };

/* ---- reading ---- */
typedef struct tqp_qfile tqp_qfile;

/* Open a quantized file for the model `m` (its fingerprint and shapes must match). */
tqp_status tqp_qfile_open(const char *path, const tqp_model *m, tqp_qfile **out);
void tqp_qfile_close(tqp_qfile **q);
/* Decode only the matrices named in `list` ("q,k"; names as tqp_qmat_name) and take the
 * others from the full-precision model: an ablation of which matrices cost perplexity. */
tqp_status tqp_qfile_select(tqp_qfile *q, const char *list);
/* A weight source (eval.h) that decodes each layer (codes -> values -> inverse rotation),
 * collective on comm: each layer is read and decoded once per job, matrix i by rank i mod P,
 * and every matrix is broadcast to the other ranks (the same bits as decoding it there).  q
 * must be open on every rank of comm with the same selection. */
tqp_weight_source tqp_qfile_source_shared(tqp_qfile *q, MPI_Comm comm);
/* Matrices this process has decoded so far (tqp_qfile_decode calls). */
int64_t tqp_qfile_decoded(const tqp_qfile *q);
/* The matrix as stored and decoded: info and W (rows, cols) fp64 in the original basis. */
tqp_status tqp_qfile_decode(tqp_qfile *q, int layer, int mat, tqp_qmat_info *info, double *W);
/* The matrix as stored, for operators that compute with the codes (infer.h): its info, packed
 * codes (*packed owned, *bytes long) and rotation (destroy with tqp_rot_destroy), checked as
 * tqp_qfile_decode checks them.  The trellis family, once a trellis matrix has been read: */
tqp_status tqp_qfile_read_codes(tqp_qfile *q, int layer, int mat, tqp_qmat_info *info,
                                uint8_t **packed, size_t *bytes, tqp_rot *rot);
const tqp_trellis *tqp_qfile_trellis(const tqp_qfile *q); /* NULL before */
/* A per-layer vector stored in fp32 (norms, biases; nothing for a tensor this architecture
 * lacks), every value checked finite. */
tqp_status tqp_qfile_read_vector(tqp_qfile *q, int layer, tqp_layer_tensor t, float *dst);
/* A root string attribute (malloc'd) or NULL. */
char *tqp_qfile_attr(const tqp_qfile *q, const char *name);

#endif
