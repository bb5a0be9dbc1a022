/* The resource planner behind `tqp plan`: memory per rank and per node, Viterbi work and time
 * for each phase of a run (Hessian collection, quantization, evaluation of the quantized file),
 * computed from a model configuration and the run's options without touching any data.
 *
 * The memory model follows what the code allocates and touches, buffer by buffer, at the moment
 * of each phase where the sum is largest (docs/planner.md lists every buffer):
 *  - Hessian collection (hessian.c, hacc.c, hstore.c, forward.c): the residual stream of the
 *    rank's windows, the forward workspace, one layer's fp32 weights, and per input group the
 *    int128 running sums of the rank's rows, the reduction buffer (the largest owner's block),
 *    the float64 rows, the staged inputs and one panel product; then either Open MPI's reduce
 *    temporary or, at the write, the transposed block.
 *  - Quantization (quantize.c, dist.c, chol.c, rot.c, tcq.c, qwriter.c), inside the rank's
 *    team: per input group the rank's rows of the rotated H with the transposes' buffers, and
 *    ScaLAPACK's local block of the factor with the triangle exchanged to build it; per matrix
 *    the rank's rows and columns of W with the transposes' blocks, its rows' rounding buffers
 *    and codes, and on a team's first rank the gathered codes.
 *  - Evaluation of the quantized file (eval.c, qfile.c): the token stream (every rank), a batch
 *    of residual streams, the forward workspace, the embedding and head, the layer as decoded so
 *    far and the decoding buffers of the matrix being decoded.
 * Not counted: the process's fixed runtime (MPI, libraries), file-backed pages of the mapped
 * checkpoint beyond the current layer, glibc heap retention of blocks under 32 MiB, and other
 * MPI/HDF5 internal buffers; results/plan_check.md measures each against real runs.
 *
 * Time is work over per-core rates (tqp_plan_rates_default; each rate names its source), for
 * the slowest rank of each phase.  It is an estimate: it assumes the rates measured on one or
 * two cores hold on each core of the target, and that communication and I/O run at the assumed
 * link and file-system bandwidths. */
#ifndef TQP_PLAN_H
#define TQP_PLAN_H

#include <stdint.h>

#include "tqp/error.h"
#include "tqp/model.h"
#include "tqp/quant.h"
#include "tqp/rot.h"

typedef enum {
    TQP_MEM_HESSIANS,    // Hessian sums, rows, working copies of H
    TQP_MEM_WEIGHTS,     // fp32 layer weights, rotated float64 W, embedding and head
    TQP_MEM_ACTIVATIONS, // residual streams, forward workspace, staged inputs, tokens
    TQP_MEM_FACTOR,      // Cholesky / LDL factor and ScaLAPACK's local block
    TQP_MEM_CODES,       // codes, gathered codes, packed streams
    TQP_MEM_SCRATCH,     // rotation transposes, Viterbi and band workspaces
    TQP_MEM_KINDS
} tqp_mem_kind;

const char *tqp_mem_kind_name(tqp_mem_kind k); // "hessians", "weights", ...

typedef enum { TQP_PHASE_HESSIAN, TQP_PHASE_QUANTIZE, TQP_PHASE_EVAL, TQP_PHASES } tqp_plan_phase;
const char *tqp_plan_phase_name(tqp_plan_phase p); // "hessian", "quantize", "eval"

typedef enum {
    TQP_RATE_SGEMM,    // GFLOP/s per core, fp32 sgemm (forward passes)
    TQP_RATE_HACC,     // GFLOP/s per core, exact Hessian accumulation (n^2 T counted)
    TQP_RATE_CHOL,     // GFLOP/s per rank, pdpotrf with nb = 32 (n^3 / 3P counted)
    TQP_RATE_DENSE,    // GFLOP/s per core, float64 level-3 BLAS (BlockLDLQ feedback)
    TQP_RATE_LEVEL2,   // GFLOP/s per core, LDLQ row feedback and proxy-loss products per row
    TQP_RATE_ROTATE,   // GFLOP/s per core, rotations: signs and FWHT passes
    TQP_RATE_ROTBASE,  // GFLOP/s per core, rotations: products with the odd-order base
    TQP_RATE_TRANSPOSE, // GB/s per core, rotations: float64 transposes
    TQP_RATE_TRELLIS1, // weights/s per core, trellis encoder, V = 1, L = 16
    TQP_RATE_TRELLIS2, // weights/s per core, trellis encoder, V = 2, L = 16
    TQP_RATE_BOUND1,   // weights/s per core, SIMD bound of the encoder, V = 1, L = 16
    TQP_RATE_BOUND2,   // weights/s per core, SIMD bound, V = 2
    TQP_RATE_DECODE,   // weights/s per core, unpacking codes
    TQP_RATE_E8P,      // weights/s per core, E8P nearest-point search (one stage)
    TQP_RATE_NET,      // GB/s per node link (assumed)
    TQP_RATE_SHM,      // GB/s per rank, Hessian reductions among the ranks of one node
    TQP_RATE_FS,       // GB/s aggregate file system (assumed)
    TQP_RATE_THREADS,  // fraction: speed-up per thread of the threaded phases (T threads run
                       // T x this as fast as one)
    TQP_RATE_COUNT
} tqp_rate_id;

typedef struct {
    const char *key;  // JSON key and option suffix: "sgemm_gflops"
    const char *unit; // "GFLOP/s", "weights/s", "GB/s"
    const char *use;  // what it prices
    double value;
    char source[200]; // where the value comes from
} tqp_plan_rate;

/* The compiled-in defaults, each with its source (a results/ file and the row it comes from,
 * or "assumed"). */
void tqp_plan_rates_default(tqp_plan_rate rates[TQP_RATE_COUNT]);
/* Override rates from a JSON object {"sgemm_gflops": 100, ...} (or {"rates": {...}}); a value is
 * a number or {"value": x, "source": "..."}.  Unknown keys and non-positive values are errors
 * naming the file. */
tqp_status tqp_plan_rates_load(const char *path, tqp_plan_rate rates[TQP_RATE_COUNT]);
/* Index of a rate by key, or -1. */
int tqp_plan_rate_find(const char *key);

typedef struct {
    tqp_config cfg;
    tqp_dtype dtype;     // stored weight type: F32 weights are borrowed from the map
    int ranks, nodes;    // P ranks placed in blocks of ceil(P / nodes) per node
    int threads;         // threads per rank (trellis bands)
    int teams;           // quantization teams asked (0: tqp quantize's default)
    int bits;            // K
    int trellis;         // 0: scalar grid, 1: trellis
    int e8p;             // 1: E8P lattice codebook (trellis 0): bands of 8 rows, BlockLDLQ b = 8
    int L, V;            // trellis state bits and weights per step
    tqp_rounding rounding;
    tqp_rot_kind rotation;
    int nsamples, ctx;   // calibration windows
    int batch;           // windows per Hessian reduction; 0: tqp hessian's default
    int eval_ctx;        // evaluation window
    int64_t eval_tokens; // tokens of the evaluation text
    tqp_plan_rate rates[TQP_RATE_COUNT];
} tqp_plan_input;

enum { TQP_PLAN_MAX_ITEMS = 32, TQP_PLAN_MAX_STEPS = 16 };

typedef struct {
    char name[64];
    char formula[96];
    tqp_mem_kind kind;
    double bytes;
} tqp_plan_item;

/* Resident memory of one rank at one moment: its buffers and their sum. */
typedef struct {
    char moment[96];
    int rank;
    tqp_plan_item items[TQP_PLAN_MAX_ITEMS];
    int n_items;
    double by_kind[TQP_MEM_KINDS];
    double total;
} tqp_plan_mem;

typedef struct {
    char name[64];
    char work[64];      // e.g. "1.2e15 flop"
    tqp_rate_id rate;   // the rate that prices it
    double seconds;
} tqp_plan_step;

typedef struct {
    tqp_plan_mem peak;        // the largest rank at its largest moment
    double node_peak;         // the most loaded node: sum of its ranks' peaks
    int node;                 // which node
    tqp_plan_step steps[TQP_PLAN_MAX_STEPS];
    int n_steps;
    double seconds;
} tqp_plan_phase_result;

/* One quantized matrix (q, k, v, o, gate, up, down). */
typedef struct {
    const char *name;
    int64_t m, n;
    tqp_plan_mem peak;    // the largest rank while this matrix (and its group's factor) is done
    double seconds;       // per layer, slowest rank
    double tiles, state_steps, ops; // trellis: tiles, Viterbi state updates and operations
    double viterbi_seconds, bound_seconds; // per layer, all ranks: one rank's share
} tqp_plan_matrix;

typedef struct {
    tqp_plan_input in;
    int ranks_per_node;
    int teams, team_ranks;            // quantization teams used, and the ranks of the largest
    double params, quantized_weights; // whole model
    double mapped_bytes;              // checkpoint size: file-backed pages, not counted
    int batch;                        // windows per Hessian reduction actually used
    tqp_plan_phase_result phase[TQP_PHASES];
    tqp_plan_matrix mats[7];
    double state_steps, ops, viterbi_core_seconds, bound_core_seconds; // whole model
    double seconds, core_hours;
    double peak_rank, peak_node; // over the phases
} tqp_plan;

/* Check the input (one-line usage errors naming the option) and compute the plan. */
tqp_status tqp_plan_compute(const tqp_plan_input *in, tqp_plan *out);

/* Bytes held by rank `rank` of P at the peak of a phase (the figures behind tqp_plan_compute,
 * exposed for tests). */
void tqp_plan_rank_memory(const tqp_plan_input *in, tqp_plan_phase phase, int rank,
                          tqp_plan_mem *mem);

/* Rank `rank`'s largest moment while matrix `mat` (0..6: q, k, v, o, gate, up, down) and its
 * input group's factorization are done. */
void tqp_plan_matrix_memory(const tqp_plan_input *in, int mat, int rank, tqp_plan_mem *mem);

/* The work the planner counts for rotating an (m, n) matrix on both sides as rot.c does (m
 * vectors of n, a transpose, n vectors of m, a transpose; a Hessian is (n, n)): work[0] flops of
 * signs, FWHT additions and scaling (priced at rotate_gflops), work[1] flops of products with
 * the odd-order Hadamard base or the Kronecker factors (rotate_base_gflops), work[2] bytes of
 * float64 transposed (transpose_gbs). */
void tqp_plan_rotation_work(tqp_rot_kind kind, int64_t m, int64_t n, double work[3]);
/* The same for one vector of length n: streaming flops and base-product flops. */
void tqp_plan_rotation_vector_work(tqp_rot_kind kind, int64_t n, double *stream, double *base);

/* Parameters of one layer (seven matrices and two norms) and of the whole model. */
int64_t tqp_plan_layer_params(const tqp_config *c);
int64_t tqp_plan_model_params(const tqp_config *c);

#endif
