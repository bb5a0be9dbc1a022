/* The resource planner (see include/tqp/plan.h and docs/planner.md).  Every buffer below names
 * the allocation it stands for; keep them in step with the code they model. */
#include "tqp/plan.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/chol.h"
#include "tqp/forward.h"
#include "tqp/quantize.h"
#include "tqp/hacc.h"
#include "tqp/qfile.h"
#include "tqp/had.h"
#include "tqp/hessian.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"
#include "tqp/tcq.h"
#include "tqp/e8p.h"
#include "tqp/trellis.h"

/* ---- names ---- */

static const char *const kind_names[TQP_MEM_KINDS] = {"hessians", "weights", "activations",
                                                      "factor",   "codes",   "scratch"};
static const char *const phase_names[TQP_PHASES] = {"hessian", "quantize", "eval"};

const char *tqp_mem_kind_name(tqp_mem_kind k)
{
    return k < TQP_MEM_KINDS ? kind_names[k] : "?";
}

const char *tqp_plan_phase_name(tqp_plan_phase p)
{
    return p < TQP_PHASES ? phase_names[p] : "?";
}

/* ---- rates ---- */

void tqp_plan_rates_default(tqp_plan_rate r[TQP_RATE_COUNT])
{
    const tqp_plan_rate d[TQP_RATE_COUNT] = {
        [TQP_RATE_SGEMM] = {"sgemm_gflops", "GFLOP/s", "forward passes (fp32 sgemm)", 103.44,
                            "results/hessian_bench.md: sgemm, n = 8192, 1 core (AMD EPYC)"},
        [TQP_RATE_HACC] = {"hacc_gflops", "GFLOP/s", "exact Hessian accumulation, n^2 T per group",
                           46.5,
                           "results/hessian_bench.md: hacc, n = 8192, 1 core, 92% of dsyrk "
                           "(AMD EPYC)"},
        [TQP_RATE_CHOL] = {"chol_gflops", "GFLOP/s",
                           "Cholesky: pdpotrf at nb = 32 with its copies, n^3 / 3P per rank", 8.0,
                           "results/plan_check.md: tqp bench quantize-memory, n = 8192, 2 ranks "
                           "(Intel Xeon)"},
        [TQP_RATE_DENSE] = {"dense_gflops", "GFLOP/s", "float64 level-3 BLAS: BlockLDLQ feedback",
                            54.51,
                            "results/hessian_bench.md: dsyrk, n = 8192, 1 core (AMD EPYC)"},
        [TQP_RATE_LEVEL2] = {"level2_gflops", "GFLOP/s",
                             "per-row LDLQ feedback and proxy-loss products (dgemv, dsymv)", 5.0,
                             "results/plan_check.md: tqp bench quantize-memory, n = 8192, 2 "
                             "ranks, both cores busy (Intel Xeon)"},
        [TQP_RATE_ROTATE] = {"rotate_gflops", "GFLOP/s", "rotations: signs and FWHT passes", 3.2,
                             "results/plan_check.md: tqp bench quantize-memory, vectors of "
                             "8192 (Intel Xeon)"},
        [TQP_RATE_ROTBASE] = {"rotate_base_gflops", "GFLOP/s",
                              "rotations: products with the odd-order Hadamard base", 8.0,
                              "results/plan_check.md: tqp bench quantize-memory, vectors of "
                              "28672, base 28 (4.4-12.9 over runs) (Intel Xeon)"},
        [TQP_RATE_TRANSPOSE] = {"transpose_gbs", "GB/s", "rotations: float64 transposes", 0.4,
                                "results/plan_check.md: tqp bench quantize-memory, rotating H "
                                "of 8192 minus its vector passes (Intel Xeon)"},
        [TQP_RATE_TRELLIS1] = {"trellis_v1_wps", "weights/s", "trellis encoder, V = 1, L = 16",
                               108522,
                               "results/trellis_bench.md: 1mad, K = 2, AVX-512, 1 core (Intel Xeon)"},
        [TQP_RATE_TRELLIS2] = {"trellis_v2_wps", "weights/s", "trellis encoder, V = 2, L = 16",
                               150925, "results/trellis_bench.md: hyb, K = 2, AVX-512, 1 core (Intel Xeon)"},
        [TQP_RATE_BOUND1] = {"trellis_bound_v1_wps", "weights/s",
                             "SIMD bound of the encoder, V = 1, L = 16", 219823,
                             "results/trellis_bench.md: 1mad SIMD bound, AVX-512"},
        [TQP_RATE_BOUND2] = {"trellis_bound_v2_wps", "weights/s",
                             "SIMD bound of the encoder, V = 2, L = 16", 264824,
                             "results/trellis_bench.md: hyb SIMD bound, AVX-512"},
        [TQP_RATE_DECODE] = {"decode_wps", "weights/s", "unpacking codes (evaluation)", 8.36e8,
                             "results/trellis_bench.md: 1mad decode, 1 core"},
        [TQP_RATE_E8P] = {"e8p_wps", "weights/s",
                          "E8P nearest-point search, one stage (3 and 4 bits: two)", 5.57e6,
                          "results/e8p_bench.md: tqp bench trellis, 2 bits, 1 core (AMD EPYC)"},
        [TQP_RATE_NET] = {"net_gbs", "GB/s", "MPI traffic, per node link", 12.5,
                          "assumed: one 100 Gb/s link per node (not measured)"},
        [TQP_RATE_SHM] = {"shm_gbs", "GB/s",
                          "Hessian reductions inside a node (int128 sums), per rank", 3.8,
                          "results/hessian_bench.md: tqp bench hessian, 2 ranks of one node, "
                          "n = 8192 (AMD EPYC)"},
        [TQP_RATE_FS] = {"fs_gbs", "GB/s", "parallel file system, all nodes together", 5.0,
                         "assumed (not measured)"},
        [TQP_RATE_THREADS] = {"thread_efficiency", "fraction",
                              "speed-up per thread: forward passes and accumulation on T threads "
                              "run T x this as fast as on one",
                              0.9,
                              "results/hessian_bench.md: 1 -> 2 threads, hacc 1.81x at n = 8192, "
                              "Hessian phase 1.78x, evaluation 2.05x (AMD EPYC)"},
    };
    memcpy(r, d, sizeof d);
}

int tqp_plan_rate_find(const char *key)
{
    tqp_plan_rate d[TQP_RATE_COUNT];
    tqp_plan_rates_default(d);
    for (int i = 0; i < TQP_RATE_COUNT; i++)
        if (!strcmp(d[i].key, key)) return i;
    return -1;
}

tqp_status tqp_plan_rates_load(const char *path, tqp_plan_rate r[TQP_RATE_COUNT])
{
    char *buf;
    size_t len;
    TQP_CHECK(tqp_file_read_all(path, &buf, &len));
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return tqp_error_set(TQP_EINPUT, "%s: not a valid JSON object", path);
    }
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "rates");
    if (!cJSON_IsObject(obj)) obj = root;
    const cJSON *it;
    tqp_status s = TQP_OK;
    cJSON_ArrayForEach(it, obj)
    {
        int k = tqp_plan_rate_find(it->string);
        const cJSON *v = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "value") : it;
        const cJSON *src = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "source")
                                              : NULL;
        if (k < 0) {
            s = tqp_error_set(TQP_EINPUT, "%s: unknown rate '%s'", path, it->string);
            break;
        }
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || !isfinite(v->valuedouble)) {
            s = tqp_error_set(TQP_EINPUT, "%s: rate %s must be a positive number", path,
                              it->string);
            break;
        }
        r[k].value = v->valuedouble;
        snprintf(r[k].source, sizeof r[k].source, "%s%s%s", path,
                 cJSON_IsString(src) ? ": " : "", cJSON_IsString(src) ? src->valuestring : "");
    }
    cJSON_Delete(root);
    return s;
}

/* ---- shapes and small helpers ---- */

int64_t tqp_plan_layer_params(const tqp_config *c)
{
    int64_t p = 0, r, k;
    for (int t = 0; t < TQP_T_LAYER_COUNT; t++) {
        tqp_layer_tensor_shape(c, (tqp_layer_tensor)t, &r, &k);
        p += r * k;
    }
    return p;
}

int64_t tqp_plan_model_params(const tqp_config *c)
{
    int64_t g = (int64_t)c->vocab_size * c->dim * (c->tied_embeddings ? 1 : 2) + c->dim;
    return g + (int64_t)c->n_layers * tqp_plan_layer_params(c);
}

/* The seven matrices in quantization order: q, k, v, o, gate, up, down. */
static const tqp_layer_tensor mat_tensor[7] = {TQP_T_Q,    TQP_T_K,  TQP_T_V,   TQP_T_O,
                                               TQP_T_GATE, TQP_T_UP, TQP_T_DOWN};
static const char *const mat_names[7] = {"q", "k", "v", "o", "gate", "up", "down"};
static const int mat_group[7] = {TQP_GROUP_QKV,    TQP_GROUP_QKV,    TQP_GROUP_QKV, TQP_GROUP_O,
                                 TQP_GROUP_GATEUP, TQP_GROUP_GATEUP, TQP_GROUP_DOWN};

static void mat_shape(const tqp_config *c, int i, int64_t *m, int64_t *n)
{
    tqp_layer_tensor_shape(c, mat_tensor[i], m, n);
}

static double tri(double i)
{
    return i * (i + 1) / 2;
}

/* ScaLAPACK's numroc with the first block on process 0. */
static int64_t numroc(int64_t n, int64_t nb, int p, int np)
{
    int64_t blocks = n / nb, num = blocks / np * nb, extra = blocks % np;
    if (p < extra)
        num += nb;
    else if (p == extra)
        num += n % nb;
    return num;
}

static void item(tqp_plan_mem *m, tqp_mem_kind kind, double bytes, const char *name,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void item(tqp_plan_mem *m, tqp_mem_kind kind, double bytes, const char *name,
                 const char *fmt, ...)
{
    if (m->n_items == TQP_PLAN_MAX_ITEMS || bytes <= 0) return;
    tqp_plan_item *it = &m->items[m->n_items++];
    it->kind = kind;
    it->bytes = bytes;
    snprintf(it->name, sizeof it->name, "%s", name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->formula, sizeof it->formula, fmt, ap);
    va_end(ap);
}

static void mem_start(tqp_plan_mem *m, int rank, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mem_start(tqp_plan_mem *m, int rank, const char *fmt, ...)
{
    memset(m, 0, sizeof *m);
    m->rank = rank;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->moment, sizeof m->moment, fmt, ap);
    va_end(ap);
}

static void mem_sum(tqp_plan_mem *m)
{
    m->total = 0;
    memset(m->by_kind, 0, sizeof m->by_kind);
    for (int i = 0; i < m->n_items; i++) {
        m->by_kind[m->items[i].kind] += m->items[i].bytes;
        m->total += m->items[i].bytes;
    }
}

/* Keep the larger of *best and *cand. */
static void keep_max(tqp_plan_mem *best, const tqp_plan_mem *cand)
{
    if (cand->total > best->total) *best = *cand;
}

/* tqp_forward_create's workspace for windows of T tokens. */
static double forward_bytes(const tqp_config *c, int64_t T)
{
    int64_t qd = (int64_t)c->n_heads * c->head_dim, kvd = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t wide = qd > c->dim ? qd : c->dim;
    return 4.0 * (double)(T * wide + T * qd + 2 * T * kvd + T * T + 2 * T * c->hidden_dim +
                          64 * (int64_t)c->vocab_size + T * c->head_dim);
}

/* One layer's fp32 weights, held while the layer is processed. */
static void layer_weights(const tqp_plan_input *in, tqp_plan_mem *m)
{
    double lp = (double)tqp_plan_layer_params(&in->cfg);
    item(m, TQP_MEM_WEIGHTS, 4 * lp,
         in->dtype == TQP_DTYPE_F32 ? "layer weights (fp32, mapped file)"
                                    : "layer weights (fp32, converted)",
         "4 x %.4g layer parameters", lp);
}

/* The codebook's tile: rows per band and columns per block (16 trellis, 8 E8P, 1 scalar). */
static int tile_of(const tqp_plan_input *in)
{
    return in->trellis ? TQP_TCQ_TILE : in->e8p ? TQP_E8P_TILE : 1;
}

/* Rows of matrix (m rows) that rank r quantizes: whole bands of the codebook's tile. */
static int64_t my_rows(const tqp_plan_input *in, int64_t m, int r)
{
    long b, e;
    int t = tile_of(in);
    if (t == 1) {
        tqp_partition((long)m, in->ranks, r, &b, &e);
        return e - b;
    }
    long nb = (long)((m + t - 1) / t);
    tqp_partition(nb, in->ranks, r, &b, &e);
    int64_t r0 = (int64_t)b * t, r1 = (int64_t)e * t;
    return (r1 < m ? r1 : m) - (r0 < m ? r0 : m);
}

/* Packed trellis bytes of an (m, n) matrix: each tile of rows x w weights takes
 * ceil(rows w K / 8) bytes (tcq.c). */
static double trellis_bytes(int64_t m, int64_t n, int K)
{
    int64_t fr = m / TQP_TCQ_TILE, rr = m % TQP_TCQ_TILE, fc = n / TQP_TCQ_TILE,
            rc = n % TQP_TCQ_TILE;
    int64_t rows[2] = {TQP_TCQ_TILE, rr}, cols[2] = {TQP_TCQ_TILE, rc}, nr[2] = {fr, rr ? 1 : 0},
            nc[2] = {fc, rc ? 1 : 0};
    double b = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            b += (double)(nr[i] * nc[j]) * (double)((rows[i] * cols[j] * K + 7) / 8);
    return b;
}

static double code_bytes(const tqp_plan_input *in, int64_t m, int64_t n)
{
    if (in->e8p) return (double)tqp_e8p_matrix_bytes((int)m, (int)n, in->bits);
    return in->trellis ? trellis_bytes(m, n, in->bits)
                       : (double)(((int64_t)m * n * in->bits + 7) / 8);
}

/* The transform of order n = b 2^k that had.c builds: *b (0 if none) and *k.  Remembered,
 * since building it can cost a search over bases and the plan asks for each rank. */
static void had_shape(int n, int *b, int *k)
{
    static struct {
        int n, b, k;
    } seen[32];
    static int n_seen;
    for (int i = 0; i < n_seen; i++)
        if (seen[i].n == n) {
            *b = seen[i].b, *k = seen[i].k;
            return;
        }
    tqp_had *h = NULL;
    *b = 0, *k = 0;
    if (tqp_had_create(n, 1, &h) == TQP_OK) *b = h->b, *k = h->k;
    tqp_had_destroy(&h);
    tqp_error_clear();
    if (n_seen < 32) seen[n_seen].n = n, seen[n_seen].b = *b, seen[n_seen++].k = *k;
}

static int had_base(int n)
{
    int b, k;
    had_shape(n, &b, &k);
    return b;
}

/* Memory of the rotation sides for an (m, n) matrix: sign vectors and Hadamard bases. */
static double rot_side_bytes(const tqp_plan_input *in, int64_t m, int64_t n)
{
    if (in->rotation == TQP_ROT_RHT) {
        double bm = had_base((int)m), bn = had_base((int)n);
        return (double)(m + n) + 8 * (bm * bm + bn * bn);
    }
    if (in->rotation == TQP_ROT_KRON) {
        double s = 0;
        int64_t dims[2] = {m, n};
        for (int i = 0; i < 2; i++) {
            int64_t p = 1;
            for (int64_t d = 1; d * d <= dims[i]; d++)
                if (dims[i] % d == 0) p = d;
            s += 8.0 * (double)(p * p + (dims[i] / p) * (dims[i] / p));
        }
        return s;
    }
    return 0;
}

/* Work of rotating one vector of length n (rot.c, had.c), in two parts priced separately:
 * streaming passes (signs, the FWHT's additions, the scaling) and the small dense products
 * with the odd-order base b (b x b times b x n/b; Kronecker: both factors). */
static void rot_vec_work(tqp_rot_kind kind, int64_t n, double *stream, double *base)
{
    *stream = *base = 0;
    if (kind == TQP_ROT_RHT) {
        int bi, k;
        had_shape((int)n, &bi, &k);
        double m = (double)((int64_t)1 << k), b = bi;
        *stream = 2.0 * (double)n + (m > 1 ? b * m * log2(m) : 0); /* signs, FWHTs, scale/copy */
        *base = b > 1 ? 2 * b * (double)n : 0;
    } else if (kind == TQP_ROT_KRON) {
        int64_t p = 1;
        for (int64_t d = 1; d * d <= n; d++)
            if (n % d == 0) p = d;
        *base = 2.0 * (double)n * (double)(p + n / p);
    }
}

void tqp_plan_rotation_vector_work(tqp_rot_kind kind, int64_t n, double *stream, double *base)
{
    rot_vec_work(kind, n, stream, base);
}

void tqp_plan_rotation_work(tqp_rot_kind kind, int64_t m, int64_t n, double work[3])
{
    double sm, bm, sn, bn;
    work[0] = work[1] = work[2] = 0;
    if (kind == TQP_ROT_NONE) return;
    rot_vec_work(kind, n, &sn, &bn);
    rot_vec_work(kind, m, &sm, &bm);
    work[0] = (double)m * sn + (double)n * sm;
    work[1] = (double)m * bn + (double)n * bm;
    work[2] = 2.0 * 8.0 * (double)m * (double)n; /* rot.c's two transposes of float64 */
}

/* Seconds of rotating an (m, n) matrix on both sides on one core. */
static double rot_seconds(const tqp_plan_input *in, int64_t m, int64_t n)
{
    double w[3];
    tqp_plan_rotation_work(in->rotation, m, n, w);
    return w[0] / (in->rates[TQP_RATE_ROTATE].value * 1e9) +
           w[1] / (in->rates[TQP_RATE_ROTBASE].value * 1e9) +
           w[2] / (in->rates[TQP_RATE_TRANSPOSE].value * 1e9);
}

/* Add the three rotation steps (work summed in w over all rotations) to a phase. */
static void rot_steps(tqp_plan_phase_result *ph, const tqp_plan_input *in, const char *what,
                      const char *who, const double w[3]);

/* ---- Hessian collection ---- */

static int threads_of(const tqp_plan_input *in)
{
    return in->threads > 0 ? in->threads : 1;
}

/* tqp hessian's batch, never more than the windows of the rank with the most (hessian.c) */
static int hessian_batch(const tqp_plan_input *in)
{
    int b = in->batch > 0 ? in->batch : tqp_hessian_default_batch(&in->cfg, in->ctx);
    long most = (in->nsamples + in->ranks - 1) / in->ranks;
    return b > most ? (int)(most > 0 ? most : 1) : b;
}

/* Whether some batch of `local` windows in batches of `batch` leaves windows over after whole
 * rounds of T (then the threads share one window at a time, each with its own scores). */
static int shares_window(const tqp_plan_input *in, double local, double batch)
{
    double T = threads_of(in), last = fmod(local, batch);
    if (T <= 1 || local <= 0) return 0;
    return local < batch ? fmod(local, T) > 0 : fmod(batch, T) > 0 || fmod(last, T) > 0;
}

/* Threads forwarding windows at once: one per window of a batch, at most the threads. */
static int forward_threads(const tqp_plan_input *in, int batch, double windows)
{
    double t = threads_of(in);
    if (t > batch) t = batch;
    if (t > windows) t = windows;
    return t < 1 ? 1 : (int)t;
}

static double max_owner_cells(int n, int P)
{
    double most = 0;
    for (int r = 0; r < P; r++) {
        int64_t r0, r1;
        tqp_hacc_owner_rows(n, P, r, &r0, &r1);
        double c = tri((double)r1) - tri((double)r0);
        most = c > most ? c : most;
    }
    return most;
}

/* The buffers held while a layer's windows are forwarded and accumulated: residual streams,
 * forward workspace, tokens, the layer, and every group's accumulator (hacc.c). */
static void hessian_collect(const tqp_plan_input *in, int r, tqp_plan_mem *m)
{
    const tqp_config *c = &in->cfg;
    int P = in->ranks, B = hessian_batch(in);
    long w0, w1;
    tqp_partition(in->nsamples, P, r, &w0, &w1);
    double wl = (double)(w1 - w0), T = in->ctx;
    item(m, TQP_MEM_ACTIVATIONS, 4 * (wl > 0 ? wl : 1) * T * c->dim, "residual stream",
         "4 x %.0f windows x %d ctx x %d dim", wl, in->ctx, c->dim);
    int ft = forward_threads(in, B, wl);
    item(m, TQP_MEM_ACTIVATIONS, ft * forward_bytes(c, in->ctx), "forward workspaces",
         "%d thread%s x 4 x (ctx (2 dim + 2 kv + 2 ffn + hd) + ctx^2 + 64 vocab)", ft,
         ft == 1 ? "" : "s");
    if (shares_window(in, wl, B)) /* threads share a window: their scores */
        item(m, TQP_MEM_ACTIVATIONS, 4.0 * (threads_of(in) - 1) * T * T,
             "attention scores of the threads sharing a window", "4 x (T - 1) x ctx^2");
    item(m, TQP_MEM_ACTIVATIONS, 4 * (wl * T + 1), "calibration tokens", "4 x %.0f x %d", wl,
         in->ctx);
    layer_weights(in, m);
    double acc = 0, red = 0, rows = 0, stage = 0, small = 0;
    for (int g = 0; g < TQP_GROUP_COUNT; g++) {
        int n = tqp_group_width(c, (tqp_group)g);
        int64_t r0, r1;
        tqp_hacc_owner_rows(n, P, r, &r0, &r1);
        acc += 16 * (tri((double)r1) - tri((double)r0));
        red += 16 * max_owner_cells(n, P);
        rows += 8 * (double)(r1 - r0) * (double)r1;
        stage += 8 * (double)B * T * n;
        int64_t bt = (int64_t)B * in->ctx;
        double cols = n < TQP_HACC_COLS ? n : TQP_HACC_COLS;
        small += 8.0 * TQP_HACC_PANEL * cols * threads_of(in) + 40.0 * n +
                 12.0 * (double)(bt < 1024 ? bt : 1024);
    }
    item(m, TQP_MEM_HESSIANS, acc, "running sums, own rows (int128)",
         "16 x own lower-triangle cells, 4 groups");
    item(m, TQP_MEM_HESSIANS, red, "reduction buffer (int128)",
         "16 x largest owner's cells, 4 groups");
    item(m, TQP_MEM_HESSIANS, rows, "own rows in float64", "8 x own rows x row end, 4 groups");
    item(m, TQP_MEM_ACTIVATIONS, stage, "staged inputs (float64)",
         "8 x %d batch x %d ctx x (3 dim + ffn)", B, in->ctx);
    item(m, TQP_MEM_HESSIANS, small, "unit products and vectors",
         "8 x 256 x min(n, 1024) per thread + 40 n per group");
}

static void hessian_memory(const tqp_plan_input *in, int r, tqp_plan_mem *best)
{
    const tqp_config *c = &in->cfg;
    int P = in->ranks;
    double commit = 0, recv = 0;
    for (int g = 0; g < TQP_GROUP_COUNT; g++) {
        int n = tqp_group_width(c, (tqp_group)g);
        int64_t r0, r1;
        tqp_hacc_owner_rows(n, P, r, &r0, &r1);
        double tr = 8 * ((double)r0 * (double)(r1 - r0) + 1) + 8.0 * n; /* hstore write_h, mean */
        commit = tr > commit ? tr : commit;
        /* Open MPI's reduce with a user-defined operation allocates, on a rank that receives,
         * a temporary as large as the message (measured at 2 and 3 ranks): the rank's own
         * block at P = 2, any owner's block at P > 2, in messages of at most
         * TQP_HACC_REDUCE_CELLS cells (hacc.c) */
        double cells = P == 2 ? tri((double)r1) - tri((double)r0) : max_owner_cells(n, P);
        double t = P == 1 ? 0 : 16 * fmin(cells, TQP_HACC_REDUCE_CELLS);
        recv = t > recv ? t : recv;
    }
    tqp_plan_mem m;
    mem_start(&m, r, "layer: reducing the sums to their owners");
    hessian_collect(in, r, &m);
    item(&m, TQP_MEM_SCRATCH, recv, "MPI reduce temporary (Open MPI)",
         P > 2 ? "16 x min(largest owner's cells, 2^18)" : "16 x min(own cells, 2^18)");
    mem_sum(&m);
    keep_max(best, &m);
    mem_start(&m, r, "layer: writing the rows");
    hessian_collect(in, r, &m);
    item(&m, TQP_MEM_HESSIANS, commit, "write: transposed block",
         "8 x r0 x own rows (largest group)");
    mem_sum(&m);
    keep_max(best, &m);
    long w0, w1;
    tqp_partition(in->nsamples, P, r, &w0, &w1);
    double wl = (double)(w1 - w0), T = in->ctx;
    /* set-up: embedding converted to fp32 to start the residual streams */
    if (in->dtype != TQP_DTYPE_F32) {
        mem_start(&m, r, "set-up: embedding converted");
        item(&m, TQP_MEM_ACTIVATIONS, 4 * (wl > 0 ? wl : 1) * T * c->dim, "residual stream",
             "4 x %.0f windows x %d ctx x %d dim", wl, in->ctx, c->dim);
        item(&m, TQP_MEM_ACTIVATIONS, forward_bytes(c, in->ctx), "forward workspace",
             "see above");
        item(&m, TQP_MEM_WEIGHTS, 4.0 * c->vocab_size * c->dim, "embedding (fp32, converted)",
             "4 x %d vocab x %d dim", c->vocab_size, c->dim);
        mem_sum(&m);
        keep_max(best, &m);
    }
}

/* ---- quantization ---- */

/* Rows of rank r of n rows in tqp_partition, and the most rows of any other rank. */
static int64_t part_rows(int64_t n, int P, int r)
{
    long b, e;
    tqp_partition((long)n, P, r, &b, &e);
    return e - b;
}

static int64_t part_other_max(int64_t n, int P, int r)
{
    int64_t most = 0;
    for (int q = 0; q < P && q < 2 + r; q++) /* the first ranks hold the most */
        if (q != r && part_rows(n, P, q) > most) most = part_rows(n, P, q);
    return most;
}

/* Elements of the lower triangle (i >= j) of an (n, n) matrix in grid process (pr0, pc0)'s
 * block-cyclic part (block nb, grid pr x pc): what tqp_dfactor_load_rows receives there. */
static double local_lower(int64_t n, int nb, int pr0, int pc0, int pr, int pc)
{
    int64_t nblk = (n + nb - 1) / nb;
    double total = 0;
    for (int64_t ib = pr0; ib < nblk; ib += pr) {
        int64_t h = ib == nblk - 1 ? n - ib * nb : nb; /* rows of this block */
        int64_t left = ib > pc0 ? (ib - pc0 - 1) / pc + 1 : 0; /* my column blocks before ib */
        total += (double)h * nb * (double)left;
        if (ib % pc == pc0) total += (double)h * (h + 1) / 2; /* the diagonal block */
    }
    return total;
}

/* What a group holds while its matrices are rotated and gathered: my rows of H, and with LDLQ
 * (fac > 0) the factor's local block and its cached diagonal blocks. */
static void group_held(tqp_plan_mem *q, double H, int64_t hr, double fac, int64_t mloc,
                       int64_t nloc, double diag, int tile)
{
    item(q, TQP_MEM_HESSIANS, H, "my rows of the rotated mean H", "8 x %lld rows x n",
         (long long)hr);
    if (fac <= 0) return;
    item(q, TQP_MEM_FACTOR, fac, "factor, ScaLAPACK local block", "8 x %lld x %lld",
         (long long)mloc, (long long)nloc);
    item(q, TQP_MEM_FACTOR, diag, "diagonal blocks of the factor", "8 n x %d", tile);
}

/* The largest rank-memory moment for matrix i (with its group's Hessian and factor).  The
 * steps and buffers are those of quantize.c (row-distributed H and W, block-cyclic factor);
 * a Hessian without dead inputs is assumed (with dead inputs one more copy of the group's rows
 * of H is held while it is rotated and factored). */
static void quantize_matrix_memory(const tqp_plan_input *in, int i, int r, tqp_plan_mem *best)
{
    const tqp_config *c = &in->cfg;
    int P = in->ranks;
    int64_t m, n;
    mat_shape(c, i, &m, &n);
    double dn = (double)n, dm = (double)m;
    int ldlq = in->rounding == TQP_ROUND_LDLQ, rot = in->rotation != TQP_ROT_NONE;
    const char *gname = tqp_group_name((tqp_group)mat_group[i]);
    int64_t hr = part_rows(n, P, r), ho = part_other_max(n, P, r);
    double H = 8.0 * (double)hr * dn;
    tqp_plan_mem q;
    /* group: rotating my rows of H0 (two passes, two distributed transposes) */
    if (rot) {
        mem_start(&q, r, "%s group: rotating H", gname);
        item(&q, TQP_MEM_HESSIANS, H, "my rows of the rotated mean H", "8 x %lld rows x n, n = %lld",
             (long long)hr, (long long)n);
        item(&q, TQP_MEM_SCRATCH, H + 8.0 * dn + rot_side_bytes(in, n, n), "rotation transpose",
             "8 x %lld rows x n", (long long)hr);
        item(&q, TQP_MEM_SCRATCH, 16.0 * (double)hr * (double)ho, "transpose blocks (one peer)",
             "2 x 8 x %lld x %lld", (long long)hr, (long long)ho);
        mem_sum(&q);
        keep_max(best, &q);
    }
    /* group: my rows sent to their block-cyclic owners, then pdpotrf; the factor stays there */
    double fac = 0, diag = 0;
    int pr, pc;
    tqp_chol_grid_shape(P, &pr, &pc);
    int64_t mloc = numroc(n, TQP_CHOL_DEFAULT_NB, r / pc, pr), nloc = numroc(n, TQP_CHOL_DEFAULT_NB, r % pc, pc);
    int tile = tile_of(in);
    if (ldlq) {
        long h0, h1;
        tqp_partition((long)n, P, r, &h0, &h1);
        double sent = (double)(h1 * (h1 + 1) / 2 - h0 * (h0 + 1) / 2);
        double got = local_lower(n, TQP_CHOL_DEFAULT_NB, r / pc, r % pc, pr, pc);
        fac = 8.0 * (double)(mloc > 1 ? mloc : 1) * (double)(nloc > 1 ? nloc : 1);
        diag = 8.0 * (double)((n + tile - 1) / tile) * tile * tile;
        mem_start(&q, r, "%s group: Cholesky factorization", gname);
        item(&q, TQP_MEM_HESSIANS, H, "my rows of the rotated mean H", "8 x %lld rows x n",
             (long long)hr);
        item(&q, TQP_MEM_FACTOR, fac, "factor, ScaLAPACK local block",
             "8 x %lld x %lld (grid %dx%d, nb 32)", (long long)mloc, (long long)nloc, pr, pc);
        item(&q, TQP_MEM_SCRATCH, 8.0 * (sent + got), "lower triangle sent and received",
             "8 x (%.0f + %.0f)", sent, got);
        mem_sum(&q);
        keep_max(best, &q);
    }
    /* matrix: rotating W (my share of rows in, columns, my rows out) */
    long a0, a1;
    tqp_partition((long)m, P, r, &a0, &a1);
    int64_t ar = a1 - a0, ao = part_other_max(m, P, r), cr = part_rows(n, P, r),
            co = part_other_max(n, P, r), rows = my_rows(in, m, r), ro = 0;
    for (int q2 = 0; q2 < P; q2++)
        if (q2 != r && my_rows(in, m, q2) > ro) ro = my_rows(in, m, q2);
    double T = 8.0 * (double)cr * dm, in1 = 8.0 * (double)ar * dn, out1 = 8.0 * (double)rows * dn;
    double blk1 = 8.0 * ((double)ar * co + (double)ao * cr), blk2 = 8.0 * ((double)cr * ro + (double)co * rows);
    mem_start(&q, r, "%s: rotating W", mat_names[i]);
    group_held(&q, H, hr, ldlq ? fac : 0, mloc, nloc, diag, tile);
    item(&q, TQP_MEM_WEIGHTS, T, "columns of W (float64)", "8 x %lld columns x m, m = %lld",
         (long long)cr, (long long)m);
    if (in1 + blk1 > out1 + blk2)
        item(&q, TQP_MEM_WEIGHTS, in1 + blk1, "rows of W read, and transpose blocks",
             "8 x (%lld rows x n + blocks)", (long long)ar);
    else
        item(&q, TQP_MEM_WEIGHTS, out1 + blk2, "my rotated rows, and transpose blocks",
             "8 x (%lld rows x n + blocks)", (long long)rows);
    item(&q, TQP_MEM_SCRATCH, 8.0 * (dm > dn ? dm : dn) + rot_side_bytes(in, m, n),
         "rotation workspace", "8 max(m, n)");
    item(&q, TQP_MEM_CODES, (tile > 1 ? code_bytes(in, rows, n) : (double)rows * dn) + 16.0 * rows,
         "own codes and losses (allocated)", "%lld rows", (long long)rows);
    mem_sum(&q);
    keep_max(best, &q);
    /* matrix: rounding my rows */
    mem_start(&q, r, "%s: rounding", mat_names[i]);
    item(&q, TQP_MEM_HESSIANS, H, "my rows of the rotated mean H", "8 x %lld rows x n",
         (long long)hr);
    int panel = tile > 1 ? tile : 32;
    if (ldlq) {
        item(&q, TQP_MEM_FACTOR, fac, "factor, ScaLAPACK local block", "8 x %lld x %lld",
             (long long)mloc, (long long)nloc);
        item(&q, TQP_MEM_FACTOR, diag + 8.0 * dn * panel, "diagonal blocks and one panel of Lu",
             "8 n x (%d + %d)", tile, panel);
    }
    item(&q, TQP_MEM_WEIGHTS, 40.0 * rows * dn + 40, "my rows: W, x, feedback, errors, reconstruction",
         "5 x 8 x %lld rows x n", (long long)rows);
    /* the proxy loss's products pack 32 rows of H and 64 of mine (kept by the BLAS thread) */
    double rows_b = rows < 64 ? (double)rows : 64.0;
    item(&q, TQP_MEM_SCRATCH, 8.0 * (32 + rows_b) * dn, "reproducible BLAS packing",
         "8 x (32 + %.0f) x n", rows_b);
    if (in->e8p) {
        item(&q, TQP_MEM_CODES, code_bytes(in, rows, n) + 16.0 * rows, "own codes (bands of 8)",
             "%lld rows x n / 8 x K bytes", (long long)rows);
        item(&q, TQP_MEM_SCRATCH, 4.0 * TQP_E8P_CODES * TQP_E8P_DIM + 16384, "E8P point tables",
             "4 x 2^16 x 8 + residual stage");
    } else if (!in->trellis) {
        item(&q, TQP_MEM_CODES, 5.0 * rows * dn + 16.0 * rows + 8,
             "own codes (32-bit while rounding, then 1 byte)", "5 x %lld rows x n", (long long)rows);
    } else {
        int KV = in->bits * in->V, th = in->threads > 0 ? in->threads : 1;
        double G = ldexp(1, in->L - KV), S = ldexp(1, in->L), N = 256.0 / in->V;
        item(&q, TQP_MEM_CODES, code_bytes(in, rows, n) + 16.0 * rows, "own packed tiles",
             "%lld rows x n x K / 8", (long long)rows);
        int R = KV <= 3 ? 1 + 6 / KV : 1; /* the encoder keeps every R-th step's minima */
        double kept = ceil((N - 1) / R);
        item(&q, TQP_MEM_SCRATCH, 16.0 * n + th * (4 * S + 8 * G + 4 * kept * G),
             "loss and Viterbi workspace",
             "16 n + %d thread(s) x (4 x 2^L + 4 x (2 + %.0f kept steps) x 2^(L - KV))", th,
             kept);
        double lane_tables = (ldexp(1, KV) < 8 ? 2 : ldexp(1, KV) < 16 ? 1 : 0) * 4.0 * in->V * S;
        item(&q, TQP_MEM_SCRATCH, 4 * (8.0 * in->V * S + lane_tables), "trellis tables",
             "4 tile sizes x (8 V 2^L + lane-order copies)");
    }
    mem_sum(&q);
    keep_max(best, &q);
    /* matrix: codes gathered to rank 0 (the rotated rows freed) */
    if (r == 0) {
        mem_start(&q, r, "%s: codes gathered and packed (rank 0)", mat_names[i]);
        group_held(&q, H, hr, ldlq ? fac : 0, mloc, nloc, diag, tile);
        if (tile == 1 && n * in->bits % 8 == 0) { /* rows start on bytes: packed per rank */
            item(&q, TQP_MEM_CODES, 1.0 * rows * dn + 16.0 * rows + code_bytes(in, rows, n),
                 "own codes (1 byte) and packed", "%lld rows x n x (1 + K / 8)", (long long)rows);
            item(&q, TQP_MEM_CODES, code_bytes(in, m, n) + 16.0 * dm, "gathered stream (rank 0)",
                 "m n K / 8");
        } else if (tile == 1) {
            item(&q, TQP_MEM_CODES, 1.0 * rows * dn + 16.0 * rows, "own codes (1 byte)",
                 "%lld rows x n", (long long)rows);
            item(&q, TQP_MEM_CODES, dm * dn + 16.0 * dm, "gathered codes (rank 0)", "m n");
            item(&q, TQP_MEM_CODES, 4 * dm * dn, "32-bit codes for the writer (rank 0)", "4 m n");
            item(&q, TQP_MEM_CODES, code_bytes(in, m, n), "packed stream (rank 0)", "m n K / 8");
        } else {
            item(&q, TQP_MEM_CODES, code_bytes(in, rows, n) + 16.0 * rows, "own packed tiles",
                 "%lld rows x n x K / 8", (long long)rows);
            item(&q, TQP_MEM_CODES, code_bytes(in, m, n) + 16.0 * dm, "gathered tiles (rank 0)",
                 "m n K / 8");
        }
        mem_sum(&q);
        keep_max(best, &q);
    }
}

/* The quantization of rank r happens in its team (tqp_quant_teams: contiguous blocks of ranks):
 * *tin <- the input with the team's ranks, *tr <- r's place in it. */
static void team_of(const tqp_plan_input *in, int r, tqp_plan_input *tin, int *tr)
{
    int T = tqp_quant_teams(in->teams, in->ranks, in->cfg.n_layers);
    *tin = *in;
    *tr = r;
    for (int t = 0; t < T; t++) {
        long b, e;
        tqp_partition(in->ranks, T, t, &b, &e);
        if (r >= b && r < e) tin->ranks = (int)(e - b), *tr = (int)(r - b);
    }
}

static void quantize_memory(const tqp_plan_input *in, int r, tqp_plan_mem *best)
{
    tqp_plan_input tin;
    int tr;
    team_of(in, r, &tin, &tr);
    for (int i = 0; i < 7; i++) quantize_matrix_memory(&tin, i, tr, best);
    best->rank = r;
    /* rank 0 writes the embedding and head at the end a chunk (at most 1M values) at a time */
}

/* ---- evaluation of the quantized model ---- */

/* eval.c's batch of windows for a rank with `local` windows: 256 MiB of residual streams, at
 * least a window per thread, at most the rank's windows (at least 1). */
static double eval_batch(const tqp_plan_input *in, double local)
{
    double per = floor((256 << 20) / (4.0 * in->eval_ctx * in->cfg.dim));
    if (per < threads_of(in)) per = threads_of(in);
    return per < 1 ? 1 : per > local ? (local > 0 ? local : 1) : per;
}

/* What every moment of evaluation holds besides the decoded layer: tokens, residual streams,
 * forward workspace, embedding and head. */
static void eval_fixed(const tqp_plan_input *in, int r, tqp_plan_mem *e)
{
    const tqp_config *c = &in->cfg;
    long nw = (long)(in->eval_tokens / in->eval_ctx), w0, w1;
    tqp_partition(nw, in->ranks, r, &w0, &w1);
    double wbytes = 4.0 * in->eval_ctx * c->dim;
    long nb = (long)eval_batch(in, (double)(w1 - w0));
    int ft = (int)(threads_of(in) < nb ? threads_of(in) : nb);
    item(e, TQP_MEM_ACTIVATIONS, 4.0 * (double)in->eval_tokens, "token stream (every rank)",
         "4 x %lld tokens", (long long)in->eval_tokens);
    item(e, TQP_MEM_ACTIVATIONS, wbytes * nb, "residual streams (one batch)",
         "4 x %ld windows x %d ctx x %d dim", nb, in->eval_ctx, c->dim);
    item(e, TQP_MEM_ACTIVATIONS, ft * forward_bytes(c, in->eval_ctx), "forward workspaces",
         "%d thread%s x 4 x (ctx (2 dim + 2 kv + 2 ffn + hd) + ctx^2 + 64 vocab)", ft,
         ft == 1 ? "" : "s");
    if (shares_window(in, (double)(w1 - w0), (double)nb)) /* threads share a window */
        item(e, TQP_MEM_ACTIVATIONS, 4.0 * (threads_of(in) - 1) * in->eval_ctx * in->eval_ctx,
             "attention scores of the threads sharing a window", "4 x (T - 1) x ctx^2");
    item(e, TQP_MEM_WEIGHTS,
         4.0 * c->vocab_size * c->dim * (c->tied_embeddings ? 1 : 2) + 4.0 * c->dim,
         in->dtype == TQP_DTYPE_F32 ? "embedding and head (mapped file)"
                                    : "embedding and head (fp32, converted)",
         "4 x vocab x dim x %d", c->tied_embeddings ? 1 : 2);
}

/* qfile.c's source_layer decodes the matrices in order into a fresh fp32 layer and one float64
 * buffer: while matrix i is decoded, the layer holds the norms and matrices 0 .. i-1, and the
 * buffer's pages touched so far are those of the largest matrix decoded yet. */
static void eval_memory(const tqp_plan_input *in, int r, tqp_plan_mem *best)
{
    const tqp_config *c = &in->cfg;
    double done = 8.0 * c->dim, widest = 0; /* fp32 bytes of the layer filled so far */
    tqp_plan_mem e;
    /* rank r decodes matrices r, r + P, ... (the others arrive by broadcast afterwards) */
    for (int i = r % in->ranks; i < 7; i += in->ranks) {
        int64_t m, n;
        mat_shape(c, i, &m, &n);
        double cnt = (double)m * n;
        widest = cnt > widest ? cnt : widest;
        mem_start(&e, r, "decoding %s", mat_names[i]);
        eval_fixed(in, r, &e);
        item(&e, TQP_MEM_WEIGHTS, done, "decoded layer so far (fp32)",
             "4 x (norms + my matrices before %s)", mat_names[i]);
        item(&e, TQP_MEM_WEIGHTS, 8 * widest, "decoding buffer (float64)",
             "8 x largest matrix so far");
        item(&e, TQP_MEM_CODES, code_bytes(in, m, n), "packed codes read", "m n K / 8");
        if (!in->trellis && !in->e8p) item(&e, TQP_MEM_CODES, 4 * cnt, "32-bit codes", "4 m n");
        if (in->rotation != TQP_ROT_NONE)
            item(&e, TQP_MEM_SCRATCH, 8 * cnt + rot_side_bytes(in, m, n), "rotation transpose",
                 "8 m n");
        mem_sum(&e);
        keep_max(best, &e);
        done += 4 * cnt;
    }
    mem_start(&e, r, "forward pass through a decoded layer");
    eval_fixed(in, r, &e);
    item(&e, TQP_MEM_WEIGHTS, 4.0 * (double)tqp_plan_layer_params(c), "decoded layer (fp32)",
         "4 x layer parameters");
    mem_sum(&e);
    keep_max(best, &e);
}

void tqp_plan_matrix_memory(const tqp_plan_input *in, int mat, int rank, tqp_plan_mem *mem)
{
    memset(mem, 0, sizeof *mem);
    tqp_plan_input tin;
    int tr;
    team_of(in, rank, &tin, &tr);
    quantize_matrix_memory(&tin, mat, tr, mem);
    mem->rank = rank;
}

void tqp_plan_rank_memory(const tqp_plan_input *in, tqp_plan_phase phase, int rank,
                          tqp_plan_mem *mem)
{
    memset(mem, 0, sizeof *mem);
    if (phase == TQP_PHASE_HESSIAN)
        hessian_memory(in, rank, mem);
    else if (phase == TQP_PHASE_QUANTIZE)
        quantize_memory(in, rank, mem);
    else
        eval_memory(in, rank, mem);
}

/* ---- time ---- */

static void step(tqp_plan_phase_result *ph, const char *name, double work, const char *unit,
                 tqp_rate_id rate, double seconds)
{
    if (ph->n_steps == TQP_PLAN_MAX_STEPS) return;
    tqp_plan_step *s = &ph->steps[ph->n_steps++];
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->work, sizeof s->work, "%.3g %s", work, unit);
    s->rate = rate;
    s->seconds = seconds;
    ph->seconds += seconds;
}

static void rot_steps(tqp_plan_phase_result *ph, const tqp_plan_input *in, const char *what,
                      const char *who, const double w[3])
{
    if (in->rotation == TQP_ROT_NONE) return;
    static const char *const part[3] = {"signs and FWHT passes", "odd-order base products",
                                        "transposes"};
    static const char *const unit[3] = {"flop", "flop", "B"};
    static const tqp_rate_id id[3] = {TQP_RATE_ROTATE, TQP_RATE_ROTBASE, TQP_RATE_TRANSPOSE};
    char name[64];
    for (int k = 0; k < 3; k++) {
        if (w[k] <= 0) continue;
        snprintf(name, sizeof name, "%s: %s (%s)", what, part[k], who);
        step(ph, name, w[k], unit[k], id[k], w[k] / (in->rates[id[k]].value * 1e9));
    }
}

static double rate(const tqp_plan_input *in, tqp_rate_id id)
{
    return in->rates[id].value;
}

/* Trellis encoder weights/s per core for L state bits: the measured L = 16 rate scaled by
 * 2^(16 - L) (a step costs O(2^L)). */
static double trellis_rate(const tqp_plan_input *in, int bound)
{
    tqp_rate_id id = bound ? (in->V == 2 ? TQP_RATE_BOUND2 : TQP_RATE_BOUND1)
                           : (in->V == 2 ? TQP_RATE_TRELLIS2 : TQP_RATE_TRELLIS1);
    return rate(in, id) * ldexp(1, 16 - in->L);
}

/* How many times faster than one thread `wl` windows are forwarded on the threads (hessian.c,
 * eval.c): whole rounds of T windows on T threads, the rest one window at a time with the T
 * threads sharing its product blocks and heads, so every batch of b windows takes b / T window
 * times; thread_efficiency per thread. */
static double forward_speed(const tqp_plan_input *in, double wl)
{
    return threads_of(in) > 1 && wl > 0 ? threads_of(in) * rate(in, TQP_RATE_THREADS) : 1;
}

static void hessian_time(const tqp_plan *p, tqp_plan_phase_result *ph)
{
    const tqp_plan_input *in = &p->in;
    const tqp_config *c = &in->cfg;
    double layers = c->n_layers, wl = ceil((double)in->nsamples / in->ranks);
    double tok = wl * in->ctx, qd = (double)c->n_heads * c->head_dim;
    double lp = (double)tqp_plan_layer_params(c) - 2.0 * c->dim;
    double fwd = layers * tok * (2 * lp + 4.0 * in->ctx * qd);
    double eff = rate(in, TQP_RATE_THREADS);
    double fwd_speed = forward_speed(in, wl);
    step(ph, "forward passes (own windows, on the threads)", fwd, "flop",
         TQP_RATE_SGEMM, fwd / (rate(in, TQP_RATE_SGEMM) * 1e9 * fwd_speed));
    double acc = 0, red = 0, wr = 0;
    double flushes = ceil(wl / p->batch);
    for (int g = 0; g < TQP_GROUP_COUNT; g++) {
        double n = tqp_group_width(c, (tqp_group)g);
        acc += layers * n * n * tok;
        red += layers * flushes * 16 * tri(n);
        wr += layers * 8 * n * n;
    }
    double acc_speed = threads_of(in) > 1 ? threads_of(in) * eff : 1;
    step(ph, "accumulation (n^2 per token and group; threads by block)", acc, "flop",
         TQP_RATE_HACC, acc / (rate(in, TQP_RATE_HACC) * 1e9 * acc_speed));
    /* hacc.c reduces in two levels when the nodes hold the same number of ranks: inside each
     * node (every rank's sums once through shared memory), then one partial sum per node over
     * its link; otherwise every rank's sums cross the node's link */
    int rpn = p->ranks_per_node, nodes = (in->ranks + rpn - 1) / rpn;
    int two = in->ranks > 1 && rpn > 1 && nodes > 1 && in->ranks % rpn == 0;
    double inside = in->ranks > 1 && (two || nodes == 1) ? red : 0;
    double link = nodes < 2 ? 0 : two ? red : red * rpn;
    if (inside > 0)
        step(ph, "reductions to row owners inside each node (per rank)", inside, "B",
             TQP_RATE_SHM, inside / (rate(in, TQP_RATE_SHM) * 1e9));
    if (link > 0)
        step(ph,
             two ? "reductions to row owners across nodes (one sum per node link)"
                 : "reductions to row owners (per node link)",
             link, "B", TQP_RATE_NET, link / (rate(in, TQP_RATE_NET) * 1e9));
    step(ph, "writing H (all ranks)", wr, "B", TQP_RATE_FS, wr / (rate(in, TQP_RATE_FS) * 1e9));
}

static void quantize_time(tqp_plan *p, tqp_plan_phase_result *ph)
{
    /* T teams of (at most) Pt ranks: each round every team quantizes one layer; the time is
     * ceil(layers / T) rounds of one layer on Pt ranks (the file system and the write are
     * shared: they count every layer) */
    tqp_plan_input tin;
    int tr;
    team_of(&p->in, 0, &tin, &tr);
    const tqp_plan_input *in = &tin;
    const tqp_config *c = &in->cfg;
    int T = tqp_quant_teams(p->in.teams, p->in.ranks, c->n_layers);
    p->teams = T, p->team_ranks = in->ranks;
    double all_layers = c->n_layers, layers = ceil(all_layers / T), P = in->ranks,
           rpn = p->ranks_per_node;
    int th = in->threads > 0 ? in->threads : 1, ldlq = in->rounding == TQP_ROUND_LDLQ;
    double read = 0, rot[3] = {0, 0, 0}, chol = 0, ared = 0, l2 = 0, loss = 0, blk = 0, vit = 0, e8s = 0,
           gat = 0, wr = 0, net = 0, w[3];
    double away = in->ranks > 1 ? (P - 1) / P : 0; /* share of a transpose that leaves a rank */
    for (int g = 0; g < TQP_GROUP_COUNT; g++) {
        double n = tqp_group_width(c, (tqp_group)g);
        double share = (double)part_rows((int64_t)n, in->ranks, 0) / n; /* rank 0's rows */
        read += all_layers * 8 * n * n; /* each rank reads its own rows */
        tqp_plan_rotation_work(in->rotation, (int64_t)n, (int64_t)n, w);
        for (int k = 0; k < 3; k++) rot[k] += layers * w[k] * share; /* my rows of H0 */
        if (in->rotation != TQP_ROT_NONE) net += layers * rpn * 2 * 8 * n * n * share * away;
        int mats = 0;
        for (int i = 0; i < TQP_QMATS; i++) mats += tqp_qmat_group(i) == g;
        /* the proxy loss: every matrix takes all of H, broadcast panel by panel */
        net += in->ranks > 1 ? layers * mats * 8 * n * n * rpn : 0;
        if (ldlq) {
            chol += layers * n * n * n / 3 / P;
            net += layers * rpn * 4 * n * n * share * away; /* lower triangle to its owners */
            /* each matrix takes the n^2 / 2 elements of Lu panel by panel, by allreduce (about
             * twice the data through each rank's link) */
            ared += in->ranks > 1 ? layers * mats * 8 * n * n * rpn : 0;
        }
    }
    for (int i = 0; i < 7; i++) {
        tqp_plan_matrix *pm = &p->mats[i];
        double m = (double)pm->m, n = (double)pm->n, rows = (double)my_rows(in, pm->m, 0);
        double share = rows / m;
        tqp_plan_rotation_work(in->rotation, pm->m, pm->n, w);
        double rw = rot_seconds(in, pm->m, pm->n) * share;
        int blockwise = in->trellis || in->e8p;
        double r2 = ldlq && !blockwise ? rows * n * n : 0, rl = rows * 4 * n * n;
        double rb = blockwise && ldlq ? rows * n * n : 0;
        double rv = in->trellis ? rows * n : 0;
        /* E8P: one nearest-point search per 8 weights, two with the residual stage */
        double re = in->e8p ? rows * n * (in->bits > 2 ? 2 : 1) : 0;
        double bytes = code_bytes(in, pm->m, pm->n), cb = blockwise ? bytes : m * n;
        for (int k = 0; k < 3; k++) rot[k] += layers * w[k] * share;
        if (in->rotation != TQP_ROT_NONE) net += layers * rpn * 2 * 8 * m * n * share * away;
        l2 += layers * r2;
        loss += layers * rl;
        blk += layers * rb / th;
        vit += layers * rv / th;
        e8s += layers * re / th;
        gat += in->ranks > 1 ? layers * cb : 0;
        wr += all_layers * bytes;
        double sec = rw + r2 / (rate(in, TQP_RATE_LEVEL2) * 1e9) +
                     rl / (rate(in, TQP_RATE_DENSE) * 1e9) +
                     rb / th / (rate(in, TQP_RATE_DENSE) * 1e9) +
                     (in->trellis ? rv / th / trellis_rate(in, 0) : 0) +
                     re / th / rate(in, TQP_RATE_E8P);
        pm->seconds = sec;
        if (in->trellis) {
            pm->tiles = ceil(m / TQP_TCQ_TILE) * ceil(n / TQP_TCQ_TILE);
            pm->state_steps = 2.0 * ldexp(1, in->L) * m * n / in->V;
            pm->ops = pm->state_steps * tqp_trellis_ops_per_state(in->bits, in->V, 16);
            pm->viterbi_seconds = rv / th / trellis_rate(in, 0);
            pm->bound_seconds = rv / th / trellis_rate(in, 1);
            p->state_steps += layers * pm->state_steps;
            p->ops += layers * pm->ops;
            p->viterbi_core_seconds += layers * m * n / trellis_rate(in, 0);
            p->bound_core_seconds += layers * m * n / trellis_rate(in, 1);
        }
    }
    step(ph, "reading H (each rank its rows)", read, "B", TQP_RATE_FS,
         read / (rate(in, TQP_RATE_FS) * 1e9));
    rot_steps(ph, in, "rotating H and W", "own rows", rot);
    step(ph, "row exchanges and H panels (per node link)", net, "B", TQP_RATE_NET,
         net / (rate(in, TQP_RATE_NET) * 1e9));
    if (ldlq) {
        step(ph, "Cholesky, pdpotrf (n^3 / 3 over P)", chol, "flop", TQP_RATE_CHOL,
             chol / (rate(in, TQP_RATE_CHOL) * 1e9));
        step(ph, "panels of Lu to every rank (allreduce)", ared, "B", TQP_RATE_NET,
             ared / (rate(in, TQP_RATE_NET) * 1e9));
    }
    if (l2 > 0)
        step(ph, "LDLQ feedback per row", l2, "flop", TQP_RATE_LEVEL2,
             l2 / (rate(in, TQP_RATE_LEVEL2) * 1e9));
    step(ph, "proxy loss (2 products with H per row)", loss, "flop", TQP_RATE_DENSE,
         loss / (rate(in, TQP_RATE_DENSE) * 1e9));
    if ((in->trellis || in->e8p) && ldlq)
        step(ph, "BlockLDLQ feedback (dgemm per tile)", blk, "flop", TQP_RATE_DENSE,
             blk / (rate(in, TQP_RATE_DENSE) * 1e9));
    if (in->e8p)
        step(ph, "E8P nearest-point searches (own bands)", e8s, "weights", TQP_RATE_E8P,
             e8s / rate(in, TQP_RATE_E8P));
    if (in->trellis)
        step(ph, "Viterbi, tail-biting (own bands)", vit, "weights",
             in->V == 2 ? TQP_RATE_TRELLIS2 : TQP_RATE_TRELLIS1, vit / trellis_rate(in, 0));
    step(ph, "gathering codes to rank 0", gat, "B", TQP_RATE_NET,
         gat / (rate(in, TQP_RATE_NET) * 1e9));
    step(ph, "writing codes (rank 0)", wr, "B", TQP_RATE_FS, wr / (rate(in, TQP_RATE_FS) * 1e9));
}

static void eval_time(const tqp_plan *p, tqp_plan_phase_result *ph)
{
    const tqp_plan_input *in = &p->in;
    const tqp_config *c = &in->cfg;
    double layers = c->n_layers, nw = floor((double)in->eval_tokens / in->eval_ctx);
    double tok = ceil(nw / in->ranks) * in->eval_ctx, qd = (double)c->n_heads * c->head_dim;
    double lp = (double)tqp_plan_layer_params(c) - 2.0 * c->dim;
    /* each matrix is read and decoded once per job, matrix i by rank i mod P, and broadcast:
     * the time is that of the rank with the most to decode */
    double codes = 0, unpack = 0, rot[3] = {0, 0, 0}, w[3], most = -1;
    for (int r = 0; r < in->ranks && r < 7; r++) {
        double un = 0, ro[3] = {0, 0, 0};
        for (int i = r; i < 7; i += in->ranks) {
            int64_t m, n;
            mat_shape(c, i, &m, &n);
            un += layers * (double)m * n;
            tqp_plan_rotation_work(in->rotation, m, n, w);
            for (int k = 0; k < 3; k++) ro[k] += layers * w[k];
        }
        if (un > most) {
            most = un, unpack = un;
            memcpy(rot, ro, sizeof rot);
        }
    }
    for (int i = 0; i < 7; i++) {
        int64_t m, n;
        mat_shape(c, i, &m, &n);
        codes += layers * code_bytes(in, m, n);
    }
    double bc = in->ranks > 1 ? layers * 4.0 * lp * p->ranks_per_node : 0;
    step(ph, "reading codes (once per job)", codes, "B", TQP_RATE_FS,
         codes / (rate(in, TQP_RATE_FS) * 1e9));
    step(ph, "unpacking codes (matrix i on rank i mod P)", unpack, "weights", TQP_RATE_DECODE,
         unpack / rate(in, TQP_RATE_DECODE));
    rot_steps(ph, in, "inverse rotations", "the decoding rank", rot);
    step(ph, "decoded matrices to every rank (per node link)", bc, "B", TQP_RATE_NET,
         bc / (rate(in, TQP_RATE_NET) * 1e9));
    double fwd = tok * (layers * (2 * lp + 4.0 * in->eval_ctx * qd) + 2.0 * c->vocab_size * c->dim);
    /* threads take whole windows of a batch (eval.c: a batch holds a window per thread) */
    double speed = forward_speed(in, ceil(nw / in->ranks));
    step(ph, "forward passes and head (own windows, threads)", fwd,
         "flop", TQP_RATE_SGEMM, fwd / (rate(in, TQP_RATE_SGEMM) * 1e9 * speed));
}

/* ---- the plan ---- */

static tqp_status check_input(const tqp_plan_input *in)
{
    if (in->ranks < 1)
        return tqp_error_set(TQP_EUSAGE, "--ranks must be at least 1, got %d",
                             in->ranks);
    if (in->nodes < 1 || in->nodes > in->ranks)
        return tqp_error_set(TQP_EUSAGE, "--nodes must be 1..%d (the ranks), got %d",
                             in->ranks, in->nodes);
    if (in->threads < 1 || in->threads > 1024)
        return tqp_error_set(TQP_EUSAGE, "--threads must be 1..1024, got %d",
                             in->threads);
    if (in->nsamples < 1 || in->ctx < 2)
        return tqp_error_set(TQP_EUSAGE, "--nsamples %d and --ctx %d must be >= 1 and >= 2",
                             in->nsamples, in->ctx);
    if (in->ctx > in->cfg.max_seq_len || in->eval_ctx > in->cfg.max_seq_len)
        return tqp_error_set(TQP_EUSAGE,
                             "--ctx %d / --eval-ctx %d exceed the model's maximum "
                             "sequence length %d",
                             in->ctx, in->eval_ctx, in->cfg.max_seq_len);
    if (in->eval_ctx < 2 || in->eval_tokens < in->eval_ctx)
        return tqp_error_set(TQP_EUSAGE,
                             "--eval-tokens %lld must hold one window of --eval-ctx %d",
                             (long long)in->eval_tokens, in->eval_ctx);
    if (in->batch < 0)
        return tqp_error_set(TQP_EUSAGE, "--batch must be >= 0, got %d", in->batch);
    if (in->bits < 2 || in->bits > 4)
        return tqp_error_set(TQP_EUSAGE, "--bits must be 2, 3 or 4, got %d", in->bits);
    if (in->trellis) {
        tqp_status s = tqp_trellis_check(in->L, in->bits, in->V, 256,
                                         in->V == 2 ? TQP_TCODE_HYB : TQP_TCODE_1MAD);
        if (s != TQP_OK) return tqp_error_set(TQP_EUSAGE, "%s", tqp_error_message());
    }
    for (int i = 0; i < TQP_RATE_COUNT; i++)
        if (!(in->rates[i].value > 0) || !isfinite(in->rates[i].value))
            return tqp_error_set(TQP_EUSAGE, "rate %s must be positive",
                                 in->rates[i].key);
    return TQP_OK;
}

tqp_status tqp_plan_compute(const tqp_plan_input *in, tqp_plan *p)
{
    memset(p, 0, sizeof *p);
    TQP_CHECK(check_input(in));
    p->in = *in;
    const tqp_config *c = &in->cfg;
    int P = in->ranks;
    p->ranks_per_node = (P + in->nodes - 1) / in->nodes;
    p->batch = hessian_batch(in);
    p->params = (double)tqp_plan_model_params(c);
    p->mapped_bytes = p->params * (double)tqp_dtype_size(in->dtype);
    for (int i = 0; i < 7; i++) {
        p->mats[i].name = mat_names[i];
        mat_shape(c, i, &p->mats[i].m, &p->mats[i].n);
        p->quantized_weights += (double)c->n_layers * (double)(p->mats[i].m * p->mats[i].n);
    }
    /* memory: every rank, summed per node (rank r on node r / ranks_per_node) */
    for (int ph = 0; ph < TQP_PHASES; ph++) {
        tqp_plan_phase_result *res = &p->phase[ph];
        double node = 0;
        for (int r = 0; r < P; r++) {
            tqp_plan_mem m;
            tqp_plan_rank_memory(in, (tqp_plan_phase)ph, r, &m);
            if (m.total > res->peak.total) res->peak = m;
            node += m.total;
            if ((r + 1) % p->ranks_per_node == 0 || r == P - 1) {
                if (node > res->node_peak) res->node_peak = node, res->node = r / p->ranks_per_node;
                node = 0;
            }
        }
        p->peak_rank = res->peak.total > p->peak_rank ? res->peak.total : p->peak_rank;
        p->peak_node = res->node_peak > p->peak_node ? res->node_peak : p->peak_node;
    }
    for (int i = 0; i < 7; i++)
        for (int r = 0; r < P; r++) {
            tqp_plan_mem m;
            memset(&m, 0, sizeof m);
            quantize_matrix_memory(in, i, r, &m);
            if (m.total > p->mats[i].peak.total) p->mats[i].peak = m;
        }
    hessian_time(p, &p->phase[TQP_PHASE_HESSIAN]);
    quantize_time(p, &p->phase[TQP_PHASE_QUANTIZE]);
    eval_time(p, &p->phase[TQP_PHASE_EVAL]);
    for (int ph = 0; ph < TQP_PHASES; ph++) p->seconds += p->phase[ph].seconds;
    p->core_hours = p->seconds * P * (in->threads > 0 ? in->threads : 1) / 3600;
    return TQP_OK;
}
