/* The planner against hand-computed figures for the bundled model's shape (dim 64, FFN 172,
 * 5 layers, 8 heads, 4 key/value heads, vocab 512): every buffer of the Hessian, quantization
 * and evaluation peaks written out here from the allocations in hacc.c, hessian.c, forward.c,
 * quantize.c, chol.c, eval.c and qfile.c, independently of plan.c's code; the Viterbi count;
 * the time of a step; and how memory per rank moves with the rank count. */
#include "check.h"
#include "tqp/plan.h"

static tqp_config stories(void)
{
    return (tqp_config){.dim = 64, .hidden_dim = 172, .n_layers = 5, .n_heads = 8,
                        .n_kv_heads = 4, .head_dim = 8, .vocab_size = 512, .max_seq_len = 512,
                        .rms_eps = 1e-5f, .rope_theta = 10000.0f, .tied_embeddings = 1,
                        .rope = TQP_ROPE_ADJACENT};
}

static tqp_plan_input input(tqp_config c, int P)
{
    tqp_plan_input in = {.cfg = c, .dtype = TQP_DTYPE_F32, .ranks = P, .nodes = 1, .threads = 1,
                         .bits = 2, .L = 16, .V = 1, .rounding = TQP_ROUND_LDLQ,
                         .rotation = TQP_ROT_NONE, .nsamples = 128, .ctx = 256,
                         .eval_ctx = 256, .eval_tokens = 158223};
    tqp_plan_rates_default(in.rates);
    return in;
}

static double tri(double i)
{
    return i * (i + 1) / 2;
}

/* forward.c's workspace for 256-token windows of the bundled model */
static const double forward_ws = 4.0 * (256 * 64 + 256 * 64 + 2 * 256 * 32 + 256 * 256 +
                                        2 * 256 * 172 + 64 * 512 + 256 * 8);
/* one layer: 2 norms, q, k, v, o, gate, up, down */
static const double layer_params = 64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 64 + 3 * 172 * 64;

static void hessian_one_rank(void)
{
    tqp_plan_input in = input(stories(), 1);
    tqp_plan_mem m;
    tqp_plan_rank_memory(&in, TQP_PHASE_HESSIAN, 0, &m);
    /* tqp hessian's default batch: 256 MiB / (ctx x widest x 8) = 762, capped at 64 */
    double want = 4.0 * 128 * 256 * 64   /* residual stream of 128 windows */
                  + forward_ws            /* forward workspace */
                  + 4.0 * (128 * 256 + 1) /* calibration tokens */
                  + 4 * layer_params;     /* the layer's fp32 weights (mapped file) */
    int widths[4] = {64, 64, 64, 172};
    for (int g = 0; g < 4; g++) {
        double n = widths[g];
        want += 16 * tri(n)                    /* running sums: one rank owns every row */
                + 16 * tri(n)                  /* reduction buffer */
                + 8 * n * n                    /* float64 rows */
                + 8.0 * 64 * 256 * n           /* staged inputs: 64 windows of 256 tokens */
                + 8.0 * 512 * n + 40 * n + 12288; /* unit product, vectors, window slots */
    }
    want += 8 + 8 * 172; /* commit of the down group: empty transposed block, mean */
    CHECK_NEAR(m.total, want, 1e-12);
    CHECK_NEAR(m.by_kind[TQP_MEM_WEIGHTS], 4 * layer_params, 1e-12);
    CHECK(strstr(m.moment, "writing") != NULL);
}

static void quantize_ranks(void)
{
    /* the down matrix (64 x 172) with LDLQ, no rotation, peaks at its rounding step: the rank's
     * rows of the rotated H (8 hr n), the factor's ScaLAPACK local block, the diagonal and one
     * 32-row panel of Lu (8 n x (1 + 32)), five float64 buffers of the own rows (W, x, feedback,
     * errors, reconstruction: 40 r n + 40), the own codes (5 r n + 16 r + 8) and the
     * reproducible BLAS's packing for the proxy loss (8 (32 + min(r, 64)) n) */
    double n = 172, m = 64, lu = 8 * n * 33;
    tqp_plan_input in = input(stories(), 1);
    tqp_plan_mem m0;
    tqp_plan_rank_memory(&in, TQP_PHASE_QUANTIZE, 0, &m0);
    CHECK_NEAR(m0.total, 8 * n * n + 8 * n * n + lu + (40 * m * n + 40) + (5 * m * n + 16 * m + 8) +
                             8 * (32 + 64) * n, 1e-12);
    CHECK(strstr(m0.moment, "down: rounding") != NULL);
    in = input(stories(), 2);
    tqp_plan_rank_memory(&in, TQP_PHASE_QUANTIZE, 0, &m0);
    /* 2 ranks: 86 rows of H and 32 rows of W each; grid 1 x 2, nb 32: rank 0 holds 172 rows and
     * 3 of the 6 column blocks (32, 32, 32), rank 1 the other three (32, 32, 12) */
    double rows2 = (40 * 32 * n + 40) + (5 * 32 * n + 16 * 32 + 8) + 8 * (32 + 32) * n;
    CHECK_NEAR(m0.by_kind[TQP_MEM_FACTOR], 8 * 172 * 96 + lu, 1e-12);
    CHECK_NEAR(m0.total, 8 * 86 * n + 8 * 172 * 96 + lu + rows2, 1e-12);
    tqp_plan_rank_memory(&in, TQP_PHASE_QUANTIZE, 1, &m0);
    CHECK_NEAR(m0.total, 8 * 86 * n + 8 * 172 * 76 + lu + rows2, 1e-12);
    /* nearest rounding: no factor; down's rounding (gate, 172 x 64, has a smaller H) */
    in = input(stories(), 1);
    in.rounding = TQP_ROUND_NEAREST;
    tqp_plan_rank_memory(&in, TQP_PHASE_QUANTIZE, 0, &m0);
    CHECK_NEAR(m0.total, 8 * n * n + (40 * m * n + 40) + (5 * m * n + 16 * m + 8) + 8 * (32 + 64) * n,
               1e-12);
}

static void eval_ranks(void)
{
    /* 158223 tokens: 618 windows of 256; a batch holds all of a rank's windows (under
     * 256 MiB); the peak is while down (64 x 172, the last matrix) is decoded: the layer holds
     * the norms and the six matrices before it, the float64 buffer one 172 x 64 matrix, plus
     * down's packed and 32-bit codes */
    double mn = 172 * 64;
    double fixed = 4.0 * 158223 + forward_ws + 4.0 * 512 * 64 + 4 * 64 /* tied head */ +
                   4 * (layer_params - mn) + 8 * mn + mn * 2 / 8 + 4 * mn;
    tqp_plan_input in = input(stories(), 1);
    tqp_plan_mem m;
    tqp_plan_rank_memory(&in, TQP_PHASE_EVAL, 0, &m);
    CHECK_NEAR(m.total, fixed + 618.0 * 256 * 64 * 4, 1e-12);
    /* 2 ranks: rank 1 decodes k, o and up only (matrix i on rank i mod 2) and receives the
     * others, so its peak is the forward pass through the whole decoded layer (4 x layer
     * parameters), with its 309 windows */
    in = input(stories(), 2);
    tqp_plan_rank_memory(&in, TQP_PHASE_EVAL, 1, &m);
    double base = 4.0 * 158223 + forward_ws + 4.0 * 512 * 64 + 4 * 64;
    CHECK_NEAR(m.total, base + 4 * layer_params + 309.0 * 256 * 64 * 4, 1e-12);
    CHECK(strstr(m.moment, "forward pass") != NULL);
}

static void viterbi_and_time(void)
{
    tqp_plan_input in = input(stories(), 1);
    in.trellis = 1;
    in.rotation = TQP_ROT_RHT;
    tqp_plan p;
    CHECK(tqp_plan_compute(&in, &p) == TQP_OK);
    /* q (64 x 64): 16 tiles; 2 passes x 2^16 states x 256 steps per tile; at K = 2, 4 ops each
     * (subtract, multiply, add, min) and a permute per 4 vectors of 16 */
    CHECK_NEAR(p.mats[0].tiles, 16, 0);
    CHECK_NEAR(p.mats[0].state_steps, 2.0 * 65536 * 64 * 64, 1e-12);
    CHECK_NEAR(p.mats[0].ops, 4.25 * 2.0 * 65536 * 64 * 64, 1e-12);
    CHECK_NEAR(p.ops, 4.25 * 2.0 * 65536 * 226560, 1e-12); /* all 35 matrices */
    /* one rank codes every band: q's Viterbi time is 4096 weights at the measured rate */
    CHECK_NEAR(p.mats[0].viterbi_seconds, 4096 / in.rates[TQP_RATE_TRELLIS1].value, 1e-12);
    /* L = 12 is 16 times faster per weight */
    in.L = 12;
    tqp_plan p12;
    CHECK(tqp_plan_compute(&in, &p12) == TQP_OK);
    CHECK_NEAR(p12.mats[0].viterbi_seconds * 16, p.mats[0].viterbi_seconds, 1e-12);
    /* the Hessian phase's forward step: 5 layers x 32768 tokens x (2 matrix params + 4 ctx qd) */
    const tqp_plan_step *st = &p.phase[TQP_PHASE_HESSIAN].steps[0];
    double flops = 5.0 * 32768 * (2 * (layer_params - 128) + 4.0 * 256 * 64);
    CHECK_NEAR(st->seconds, flops / (in.rates[TQP_RATE_SGEMM].value * 1e9), 1e-12);
    CHECK(st->rate == TQP_RATE_SGEMM);
    CHECK_NEAR(p.params, 5 * layer_params + 512.0 * 64 + 64, 0);
}

/* E8P: bands of 8 rows, m ceil(n / 8) K bytes of codes, BlockLDLQ feedback, and one nearest-
 * point search per weight (two with the residual stage at 3 and 4 bits) at the e8p rate. */
static const tqp_plan_step *find_step(const tqp_plan_phase_result *ph, const char *prefix)
{
    for (int i = 0; i < ph->n_steps; i++)
        if (!strncmp(ph->steps[i].name, prefix, strlen(prefix))) return &ph->steps[i];
    return NULL;
}

static void e8p_plan(void)
{
    for (int bits = 2; bits <= 4; bits++) {
        tqp_plan_input in = input(stories(), 1);
        in.e8p = 1, in.bits = bits, in.rotation = TQP_ROT_RHT;
        tqp_plan p;
        CHECK(tqp_plan_compute(&in, &p) == TQP_OK);
        const tqp_plan_phase_result *q = &p.phase[TQP_PHASE_QUANTIZE];
        const tqp_plan_step *st = find_step(q, "E8P nearest-point searches");
        CHECK(st != NULL && st->rate == TQP_RATE_E8P);
        double searches = 226560.0 * (bits > 2 ? 2 : 1); /* all 35 matrices, one rank */
        if (st) CHECK_NEAR(st->seconds, searches / in.rates[TQP_RATE_E8P].value, 1e-12);
        CHECK(find_step(q, "BlockLDLQ feedback") != NULL);
        CHECK(find_step(q, "LDLQ feedback per row") == NULL);
        CHECK(find_step(q, "Viterbi") == NULL);
        /* evaluation: down (64 x 172) is read as 64 x 22 codes of `bits` bytes, no 32-bit copy */
        tqp_plan_mem m;
        tqp_plan_rank_memory(&in, TQP_PHASE_EVAL, 0, &m);
        int packed = 0, wide = 0;
        for (int i = 0; i < m.n_items; i++) {
            if (!strcmp(m.items[i].name, "packed codes read"))
                packed = m.items[i].bytes == 64.0 * 22 * bits;
            if (!strcmp(m.items[i].name, "32-bit codes")) wide = 1;
        }
        CHECK_MSG(packed && !wide, "e8p %d bits: evaluation's codes", bits);
    }
    /* 3 ranks: the 64 rows of q are 8 bands, 3 + 3 + 2: rank 0's codes are 24 rows */
    tqp_plan_input in = input(stories(), 3);
    in.e8p = 1;
    tqp_plan_mem m;
    tqp_plan_matrix_memory(&in, 0, 0, &m);
    int found = 0;
    for (int i = 0; i < m.n_items; i++)
        if (!strcmp(m.items[i].name, "own codes (bands of 8)"))
            found = m.items[i].bytes == 24.0 * 8 * 2 + 16.0 * 24;
    CHECK_MSG(found, "e8p: rank 0's share of q in bands of 8");
}

static void scaling_70b(void)
{
    tqp_config c = {.dim = 8192, .hidden_dim = 28672, .n_layers = 80, .n_heads = 64,
                    .n_kv_heads = 8, .head_dim = 128, .vocab_size = 32000, .max_seq_len = 4096,
                    .rms_eps = 1e-5f, .rope_theta = 10000.0f, .rope = TQP_ROPE_HALF};
    int Ps[4] = {1, 4, 16, 64};
    double prev[3] = {0, 0, 0};
    for (int i = 0; i < 4; i++) {
        tqp_plan_input in = input(c, Ps[i]);
        in.dtype = TQP_DTYPE_BF16;
        in.ctx = in.eval_ctx = 4096;
        in.eval_tokens = 338535;
        tqp_plan p;
        CHECK(tqp_plan_compute(&in, &p) == TQP_OK);
        double h = p.phase[TQP_PHASE_HESSIAN].peak.total, q = p.phase[TQP_PHASE_QUANTIZE].peak.total,
               e = p.phase[TQP_PHASE_EVAL].peak.total;
        if (i) {
            CHECK_MSG(h < prev[0], "hessian per rank %g at P = %d vs %g", h, Ps[i], prev[0]);
            CHECK_MSG(q < prev[1], "quantize per rank %g at P = %d vs %g", q, Ps[i], prev[1]);
            CHECK_MSG(e <= prev[2], "eval per rank %g at P = %d vs %g", e, Ps[i], prev[2]);
        }
        /* nothing of size n x n or m x n is held whole: the quantization's peak per rank
         * falls with P and is under 4 GB at 64 ranks (it was 29.9 GB with replicated H) */
        if (Ps[i] == 64) CHECK_MSG(q <= 4e9, "quantize per rank %g at 64 ranks", q);
        prev[0] = h, prev[1] = q, prev[2] = e;
    }
}

static void bad_input(void)
{
    tqp_plan p;
    tqp_plan_input in = input(stories(), 0);
    CHECK(tqp_plan_compute(&in, &p) == TQP_EUSAGE);
    CHECK(strstr(tqp_error_message(), "--ranks") != NULL);
    in = input(stories(), 2);
    in.nodes = 3;
    CHECK(tqp_plan_compute(&in, &p) == TQP_EUSAGE);
    in = input(stories(), 2);
    in.ctx = 1024; /* beyond max_seq_len 512 */
    CHECK(tqp_plan_compute(&in, &p) == TQP_EUSAGE);
    in = input(stories(), 2);
    in.trellis = 1, in.L = 4, in.bits = 4; /* K V must stay below L */
    CHECK(tqp_plan_compute(&in, &p) == TQP_EUSAGE);
    CHECK(tqp_plan_rate_find("sgemm_gflops") == TQP_RATE_SGEMM);
    CHECK(tqp_plan_rate_find("nope") == -1);
}

/* Threads: the forward passes (whole rounds of T windows, the rest shared window by window)
 * and the accumulation run T x thread_efficiency as fast, evaluation likewise; each thread has
 * its own forward workspace and product buffer, and the threads sharing a window their scores. */
static void threads_plan(void)
{
    tqp_plan_input in = input(stories(), 1);
    tqp_plan p1, p3;
    CHECK(tqp_plan_compute(&in, &p1) == TQP_OK);
    in.threads = 3;
    CHECK(tqp_plan_compute(&in, &p3) == TQP_OK);
    double eff = in.rates[TQP_RATE_THREADS].value;
    for (int k = 0; k < 2; k++) /* forward passes, accumulation */
        CHECK_NEAR(p3.phase[TQP_PHASE_HESSIAN].steps[k].seconds,
                   p1.phase[TQP_PHASE_HESSIAN].steps[k].seconds / (3 * eff), 1e-12);
    int last = p1.phase[TQP_PHASE_EVAL].n_steps - 1;
    CHECK_NEAR(p3.phase[TQP_PHASE_EVAL].steps[last].seconds,
               p1.phase[TQP_PHASE_EVAL].steps[last].seconds / (3 * eff), 1e-12);
    /* memory: two more forward workspaces; per group, two more 512 x n product buffers; and,
     * batches of 64 windows leaving one over after rounds of 3, two more 256 x 256 scores */
    tqp_plan_mem m1, m3;
    in.threads = 1;
    tqp_plan_rank_memory(&in, TQP_PHASE_HESSIAN, 0, &m1);
    in.threads = 3;
    tqp_plan_rank_memory(&in, TQP_PHASE_HESSIAN, 0, &m3);
    CHECK_NEAR(m3.total - m1.total,
               2 * forward_ws + 2 * 8.0 * 512 * (3 * 64 + 172) + 2 * 4.0 * 256 * 256, 1e-12);
}

/* Seconds of the Hessian step whose name contains `key` (0 when the plan has no such step). */
static double step_seconds(const tqp_plan *p, const char *key)
{
    const tqp_plan_phase_result *ph = &p->phase[TQP_PHASE_HESSIAN];
    for (int k = 0; k < ph->n_steps; k++)
        if (strstr(ph->steps[k].name, key)) return ph->steps[k].seconds;
    return 0;
}

/* The reductions to the row owners: every rank's int128 lower triangles of the four groups,
 * once per batch of windows and layer; in two levels (inside each node at shm_gbs, then one sum
 * per node link at net_gbs) when the nodes hold the same number of ranks, otherwise every
 * rank's sums over the node's link. */
static void reductions_plan(void)
{
    tqp_plan_input in = input(stories(), 4);
    double red = 0;
    int widths[4] = {64, 64, 64, 172};
    for (int g = 0; g < 4; g++)
        red += 5 * 1 * 16 * tri(widths[g]); /* 5 layers, 32 windows per rank in 1 batch */
    double shm = in.rates[TQP_RATE_SHM].value * 1e9, net = in.rates[TQP_RATE_NET].value * 1e9;
    tqp_plan p;
    in.nodes = 2; /* 2 nodes of 2 ranks */
    CHECK(tqp_plan_compute(&in, &p) == TQP_OK);
    CHECK_NEAR(step_seconds(&p, "inside each node"), red / shm, 1e-12);
    CHECK_NEAR(step_seconds(&p, "across nodes"), red / net, 1e-12);
    in.nodes = 1; /* one node: shared memory only */
    CHECK(tqp_plan_compute(&in, &p) == TQP_OK);
    CHECK_NEAR(step_seconds(&p, "inside each node"), red / shm, 1e-12);
    CHECK(step_seconds(&p, "node link") == 0);
    in.ranks = 3, in.nodes = 2; /* nodes of 2 and 1 ranks: flat, 2 ranks' sums per link */
    red = 0;
    for (int g = 0; g < 4; g++)
        red += 5 * 1 * 16 * tri(widths[g]); /* 43 windows per rank, still one batch */
    CHECK(tqp_plan_compute(&in, &p) == TQP_OK);
    CHECK(step_seconds(&p, "inside each node") == 0);
    CHECK_NEAR(step_seconds(&p, "(per node link)"), 2 * red / net, 1e-12);
}

int main(void)
{
    threads_plan();
    reductions_plan();
    hessian_one_rank();
    quantize_ranks();
    eval_ranks();
    viterbi_and_time();
    e8p_plan();
    scaling_70b();
    bad_input();
    return check_done();
}
