/* `tqp plan`: memory per rank and node, Viterbi work and time of a run, from a configuration
 * (see include/tqp/plan.h and docs/planner.md).  Nothing is read but the configuration. */
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/cli.h"
#include "tqp/mpiutil.h"
#include "tqp/plan.h"
#include "tqp/trellis.h"

typedef struct {
    const char *config, *codebook, *rounding, *rotation, *dtype, *rates, *json;
    int synthetic, ranks, nodes, threads, teams, bits, L, V, nsamples, ctx, batch, eval_ctx, eval_tokens;
    int dim, ffn, heads, kv_heads, layers, vocab;
    double rate[TQP_RATE_COUNT];
} plan_args;

/* ---- formatting ---- */

static const char *gb(double b, char *buf, size_t cap)
{
    if (b >= 1e9)
        snprintf(buf, cap, "%.2f GB", b / 1e9);
    else if (b >= 1e6)
        snprintf(buf, cap, "%.1f MB", b / 1e6);
    else if (b >= 1e3)
        snprintf(buf, cap, "%.1f kB", b / 1e3);
    else
        snprintf(buf, cap, "%.0f B", b);
    return buf;
}

static const char *dur(double s, char *buf, size_t cap)
{
    if (s < 120)
        snprintf(buf, cap, "%.3g s", s);
    else if (s < 7200)
        snprintf(buf, cap, "%.1f min", s / 60);
    else
        snprintf(buf, cap, "%.2f h", s / 3600);
    return buf;
}

static const char *const mat_label[7] = {"q", "k", "v", "o", "gate", "up", "down"};

static void print_items(const tqp_plan_mem *m)
{
    char b[32];
    printf("| buffer | kind | bytes | formula |\n|---|---|---|---|\n");
    for (int i = 0; i < m->n_items; i++)
        printf("| %s | %s | %s | %s |\n", m->items[i].name, tqp_mem_kind_name(m->items[i].kind),
               gb(m->items[i].bytes, b, sizeof b), m->items[i].formula);
    printf("| **total** | | **%s** | |\n", gb(m->total, b, sizeof b));
}

static void print_plan(const plan_args *a, const tqp_plan *p, const char *what,
                       tqp_model_format fmt)
{
    const tqp_plan_input *in = &p->in;
    const tqp_config *c = &in->cfg;
    char b1[32], b2[32], b3[32];
    printf("tqp plan: %s", what);
    if (!a->synthetic)
        printf(" (%s, %s weights)", fmt == TQP_FORMAT_HF ? "Hugging Face config" : "llama2.c checkpoint",
               tqp_dtype_name(in->dtype));
    printf("\nmodel: dim %d, FFN %d, %d layer%s, %d heads (%d key/value), head size %d, vocab %d%s; "
           "%.4g parameters, %.4g of them in %d quantized matrices\n",
           c->dim, c->hidden_dim, c->n_layers, c->n_layers == 1 ? "" : "s", c->n_heads,
           c->n_kv_heads, c->head_dim,
           c->vocab_size, c->tied_embeddings ? " (tied head)" : "", p->params,
           p->quantized_weights, 7 * c->n_layers);
    printf("run: %d rank%s on %d node%s (%d per node), %d thread%s per rank; calibration %d windows "
           "x %d tokens, %d window%s per reduction; %d-bit %s",
           in->ranks, in->ranks == 1 ? "" : "s", in->nodes, in->nodes == 1 ? "" : "s",
           p->ranks_per_node, in->threads, in->threads == 1 ? "" : "s", in->nsamples, in->ctx,
           p->batch, p->batch == 1 ? "" : "s", in->bits,
           in->trellis ? "trellis" : in->e8p ? "E8P lattice (QuIP#)" : "scalar grid");
    if (in->trellis) printf(" (L %d, V %d, %s)", in->L, in->V, in->V == 2 ? "hyb" : "1mad");
    printf(", rotation %s, rounding %s; quantization in %d team%s of up to %d rank%s; evaluation "
           "of %lld tokens in windows of %d\n\n",
           tqp_rot_name(in->rotation), tqp_rounding_name(in->rounding), p->teams,
           p->teams == 1 ? "" : "s", p->team_ranks, p->team_ranks == 1 ? "" : "s",
           (long long)in->eval_tokens, in->eval_ctx);

    printf("Memory per rank at each phase's peak (the largest rank; GB = 1e9 bytes)\n\n");
    printf("| phase | rank | moment | hessians | weights | activations | factor | codes | "
           "scratch | per rank | per node |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int ph = 0; ph < TQP_PHASES; ph++) {
        const tqp_plan_phase_result *r = &p->phase[ph];
        printf("| %s | %d | %s |", tqp_plan_phase_name((tqp_plan_phase)ph), r->peak.rank,
               r->peak.moment);
        for (int k = 0; k < TQP_MEM_KINDS; k++) printf(" %s |", gb(r->peak.by_kind[k], b1, sizeof b1));
        printf(" **%s** | %s |\n", gb(r->peak.total, b1, sizeof b1), gb(r->node_peak, b2, sizeof b2));
    }
    printf("\nPeak: %s per rank, %s per node (%d ranks per node). Not counted: each process's "
           "fixed runtime (measured on one node: about 23 MB at MPI start-up and 5-10 MB of "
           "OpenBLAS, HDF5 and ScaLAPACK working memory, results/plan_check.md) and the checkpoint's file-backed pages beyond the current "
           "layer (up to %s, reclaimable).\n",
           gb(p->peak_rank, b1, sizeof b1), gb(p->peak_node, b2, sizeof b2), p->ranks_per_node,
           gb(p->mapped_bytes, b3, sizeof b3));

    static const char *const titles[TQP_PHASES] = {
        "Hessian collection (per layer: activations per window, the layer's weights, the "
        "accumulators of the four input groups and their reduction, then the write)",
        "Quantization (per input group: the rank's rows of H and its block of the Cholesky "
        "factor; per matrix: its rows of the rotated weights and their codes)",
        "Evaluation of the quantized model (tqp eval --quantized)"};
    for (int ph = 0; ph < TQP_PHASES; ph++) {
        const tqp_plan_mem *m = &p->phase[ph].peak;
        printf("\n%s: rank %d at its peak, %s\n\n", titles[ph], m->rank, m->moment);
        print_items(m);
    }

    printf("\nQuantization per matrix (one layer; the largest rank while the matrix and its "
           "group's factor are done)\n\n");
    printf("| matrix | m x n | peak per rank | moment | time per layer |%s\n",
           in->trellis ? " tiles | Viterbi state updates | ops | Viterbi per layer | at SIMD bound |"
                       : "");
    printf("|---|---|---|---|---|%s\n", in->trellis ? "---|---|---|---|---|" : "");
    for (int i = 0; i < 7; i++) {
        const tqp_plan_matrix *m = &p->mats[i];
        printf("| %s | %lld x %lld | %s | %s | %s |", mat_label[i], (long long)m->m,
               (long long)m->n, gb(m->peak.total, b1, sizeof b1), m->peak.moment,
               dur(m->seconds, b2, sizeof b2));
        if (in->trellis)
            printf(" %.4g | %.4g | %.4g | %s | %s |", m->tiles, m->state_steps, m->ops,
                   dur(m->viterbi_seconds, b1, sizeof b1), dur(m->bound_seconds, b3, sizeof b3));
        printf("\n");
    }
    if (in->trellis)
        printf("\nViterbi: each 16 x 16 tile (T = 256 weights) takes 2 tail-biting passes of T / V = "
               "%d steps over 2^L = %.0f states; each state and step costs %.4g vector-lane "
               "operations (subtract, multiply, add, min%s, and a permute per 2^KV vectors when "
               "2^KV < 16), as in tqp bench "
               "trellis's SIMD bound. Whole model: %.4g state updates, %.4g operations (%.4g "
               "AVX-512 instructions of 16 lanes); %.4g core-hours at the measured rate "
               "(%.0f weights/s per core at L = %d), %.4g at the SIMD bound.\n",
               256 / in->V, ldexp(1, in->L), tqp_trellis_ops_per_state(in->bits, in->V, 16),
               in->V == 2 ? ", and three more for the second component" : "", p->state_steps,
               p->ops, p->ops / 16, p->viterbi_core_seconds / 3600,
               in->rates[in->V == 2 ? TQP_RATE_TRELLIS2 : TQP_RATE_TRELLIS1].value *
                   ldexp(1, 16 - in->L),
               in->L, p->bound_core_seconds / 3600);

    printf("\nTime (the slowest rank of each phase, all layers)\n\n");
    printf("| phase | step | work | rate | time |\n|---|---|---|---|---|\n");
    for (int ph = 0; ph < TQP_PHASES; ph++) {
        const tqp_plan_phase_result *r = &p->phase[ph];
        for (int i = 0; i < r->n_steps; i++) {
            const tqp_plan_rate *rt = &in->rates[r->steps[i].rate];
            double v = rt->value;
            if (r->steps[i].rate >= TQP_RATE_TRELLIS1 && r->steps[i].rate <= TQP_RATE_BOUND2)
                v *= ldexp(1, 16 - in->L);
            printf("| %s | %s | %s | %.4g %s%s (%s) | %s |\n",
                   tqp_plan_phase_name((tqp_plan_phase)ph), r->steps[i].name, r->steps[i].work, v,
                   rt->unit, r->steps[i].rate >= TQP_RATE_NET ? "" : " per core", rt->key,
                   dur(r->steps[i].seconds, b1, sizeof b1));
        }
        printf("| **%s** | | | | **%s** |\n", tqp_plan_phase_name((tqp_plan_phase)ph),
               dur(r->seconds, b1, sizeof b1));
    }
    printf("\nTotal: %s on %d rank%s x %d thread%s (%.4g core-hours).\n",
           dur(p->seconds, b1, sizeof b1), in->ranks, in->ranks == 1 ? "" : "s", in->threads,
           in->threads == 1 ? "" : "s", p->core_hours);

    printf("\nRates (per core unless a link or the file system; override with --rate-<key> or "
           "--rates FILE)\n\n| key | value | unit | prices | source |\n|---|---|---|---|---|\n");
    for (int i = 0; i < TQP_RATE_COUNT; i++)
        printf("| %s | %.4g | %s | %s | %s |\n", in->rates[i].key, in->rates[i].value,
               in->rates[i].unit, in->rates[i].use, in->rates[i].source);
}

/* ---- JSON ---- */

static cJSON *mem_json(const tqp_plan_mem *m, int items)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rank", m->rank);
    cJSON_AddStringToObject(o, "moment", m->moment);
    for (int k = 0; k < TQP_MEM_KINDS; k++)
        cJSON_AddNumberToObject(o, tqp_mem_kind_name((tqp_mem_kind)k), m->by_kind[k]);
    cJSON_AddNumberToObject(o, "total", m->total);
    if (items) {
        cJSON *a = cJSON_AddArrayToObject(o, "items");
        for (int i = 0; i < m->n_items; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", m->items[i].name);
            cJSON_AddStringToObject(e, "kind", tqp_mem_kind_name(m->items[i].kind));
            cJSON_AddNumberToObject(e, "bytes", m->items[i].bytes);
            cJSON_AddStringToObject(e, "formula", m->items[i].formula);
            cJSON_AddItemToArray(a, e);
        }
    }
    return o;
}

static tqp_status write_json(const char *path, const char *what, const tqp_plan *p)
{
    const tqp_plan_input *in = &p->in;
    const tqp_config *c = &in->cfg;
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "command", "plan");
    cJSON_AddStringToObject(d, "tqp_version", TQP_VERSION);
    cJSON_AddStringToObject(d, "config_path", what);
    cJSON *cf = cJSON_AddObjectToObject(d, "config");
    cJSON_AddNumberToObject(cf, "dim", c->dim);
    cJSON_AddNumberToObject(cf, "hidden_dim", c->hidden_dim);
    cJSON_AddNumberToObject(cf, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(cf, "n_heads", c->n_heads);
    cJSON_AddNumberToObject(cf, "n_kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(cf, "vocab_size", c->vocab_size);
    cJSON_AddBoolToObject(cf, "tied_embeddings", c->tied_embeddings);
    cJSON_AddStringToObject(cf, "dtype", tqp_dtype_name(in->dtype));
    cJSON_AddNumberToObject(d, "params", p->params);
    cJSON_AddNumberToObject(d, "quantized_weights", p->quantized_weights);
    cJSON_AddNumberToObject(d, "ranks", in->ranks);
    cJSON_AddNumberToObject(d, "nodes", in->nodes);
    cJSON_AddNumberToObject(d, "ranks_per_node", p->ranks_per_node);
    cJSON_AddNumberToObject(d, "threads", in->threads);
    cJSON_AddNumberToObject(d, "quantize_teams", p->teams);
    cJSON_AddNumberToObject(d, "quantize_team_ranks", p->team_ranks);
    cJSON_AddNumberToObject(d, "bits", in->bits);
    cJSON_AddStringToObject(d, "codebook", in->trellis ? "trellis" : in->e8p ? "e8p" : "scalar");
    if (in->trellis) {
        cJSON_AddNumberToObject(d, "trellis_L", in->L);
        cJSON_AddNumberToObject(d, "trellis_V", in->V);
    }
    cJSON_AddStringToObject(d, "rotation", tqp_rot_name(in->rotation));
    cJSON_AddStringToObject(d, "rounding", tqp_rounding_name(in->rounding));
    cJSON_AddNumberToObject(d, "nsamples", in->nsamples);
    cJSON_AddNumberToObject(d, "ctx", in->ctx);
    cJSON_AddNumberToObject(d, "batch", p->batch);
    cJSON_AddNumberToObject(d, "eval_tokens", (double)in->eval_tokens);
    cJSON_AddNumberToObject(d, "eval_ctx", in->eval_ctx);
    cJSON_AddNumberToObject(d, "peak_memory_per_rank", p->peak_rank);
    cJSON_AddNumberToObject(d, "peak_memory_per_node", p->peak_node);
    cJSON_AddNumberToObject(d, "mapped_checkpoint_bytes", p->mapped_bytes);
    cJSON_AddNumberToObject(d, "seconds", p->seconds);
    cJSON_AddNumberToObject(d, "core_hours", p->core_hours);
    for (int ph = 0; ph < TQP_PHASES; ph++) { /* each phase's peak, and every rank's */
        char key[64];
        snprintf(key, sizeof key, "%s_peak_per_rank", tqp_plan_phase_name((tqp_plan_phase)ph));
        cJSON_AddNumberToObject(d, key, p->phase[ph].peak.total);
        snprintf(key, sizeof key, "%s_per_rank", tqp_plan_phase_name((tqp_plan_phase)ph));
        cJSON *arr = cJSON_AddArrayToObject(d, key);
        for (int r = 0; r < in->ranks; r++) {
            tqp_plan_mem m;
            tqp_plan_rank_memory(in, (tqp_plan_phase)ph, r, &m);
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(m.total));
        }
    }
    cJSON *phs = cJSON_AddObjectToObject(d, "phases");
    for (int ph = 0; ph < TQP_PHASES; ph++) {
        const tqp_plan_phase_result *r = &p->phase[ph];
        cJSON *o = cJSON_AddObjectToObject(phs, tqp_plan_phase_name((tqp_plan_phase)ph));
        cJSON_AddItemToObject(o, "memory_per_rank", mem_json(&r->peak, 1));
        cJSON_AddNumberToObject(o, "memory_per_node", r->node_peak);
        cJSON_AddNumberToObject(o, "peak_node", r->node);
        cJSON_AddNumberToObject(o, "seconds", r->seconds);
        cJSON *st = cJSON_AddArrayToObject(o, "steps");
        for (int i = 0; i < r->n_steps; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "name", r->steps[i].name);
            cJSON_AddStringToObject(e, "work", r->steps[i].work);
            cJSON_AddStringToObject(e, "rate", in->rates[r->steps[i].rate].key);
            cJSON_AddNumberToObject(e, "seconds", r->steps[i].seconds);
            cJSON_AddItemToArray(st, e);
        }
    }
    cJSON *ms = cJSON_AddArrayToObject(d, "matrices");
    for (int i = 0; i < 7; i++) {
        const tqp_plan_matrix *m = &p->mats[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "matrix", mat_label[i]);
        cJSON_AddNumberToObject(e, "rows", (double)m->m);
        cJSON_AddNumberToObject(e, "cols", (double)m->n);
        cJSON_AddItemToObject(e, "memory_per_rank", mem_json(&m->peak, 0));
        cJSON_AddNumberToObject(e, "seconds_per_layer", m->seconds);
        if (in->trellis) {
            cJSON_AddNumberToObject(e, "tiles", m->tiles);
            cJSON_AddNumberToObject(e, "viterbi_state_steps", m->state_steps);
            cJSON_AddNumberToObject(e, "viterbi_ops", m->ops);
            cJSON_AddNumberToObject(e, "viterbi_seconds_per_layer", m->viterbi_seconds);
            cJSON_AddNumberToObject(e, "viterbi_bound_seconds_per_layer", m->bound_seconds);
        }
        cJSON_AddItemToArray(ms, e);
    }
    cJSON *v = cJSON_AddObjectToObject(d, "viterbi");
    cJSON_AddNumberToObject(v, "states", in->trellis ? ldexp(1, in->L) : 0);
    cJSON_AddNumberToObject(v, "steps_per_tile", in->trellis ? 2 * 256 / in->V : 0);
    cJSON_AddNumberToObject(v, "ops_per_state_step", in->trellis ? (in->V == 2 ? 9 : 6) : 0);
    cJSON_AddNumberToObject(v, "state_steps", p->state_steps);
    cJSON_AddNumberToObject(v, "ops", p->ops);
    cJSON_AddNumberToObject(v, "core_hours", p->viterbi_core_seconds / 3600);
    cJSON_AddNumberToObject(v, "bound_core_hours", p->bound_core_seconds / 3600);
    cJSON *rs = cJSON_AddObjectToObject(d, "rates");
    for (int i = 0; i < TQP_RATE_COUNT; i++) {
        cJSON *e = cJSON_AddObjectToObject(rs, in->rates[i].key);
        cJSON_AddNumberToObject(e, "value", in->rates[i].value);
        cJSON_AddStringToObject(e, "unit", in->rates[i].unit);
        cJSON_AddStringToObject(e, "source", in->rates[i].source);
    }
    tqp_status s = tqp_json_write(path, d);
    cJSON_Delete(d);
    return s;
}

/* ---- options ---- */

static tqp_status build_input(plan_args *a, tqp_plan_input *in, tqp_model_format *fmt)
{
    memset(in, 0, sizeof *in);
    if (!a->config == !a->synthetic)
        return tqp_error_set(TQP_EUSAGE, "give exactly one of --config and --synthetic");
    int shape_opts = a->dim || a->ffn || a->heads || a->kv_heads || a->layers || a->vocab;
    if (shape_opts && !a->synthetic)
        return tqp_error_set(TQP_EUSAGE,
                             "--dim, --ffn, --heads, --kv-heads, --layers and --vocab "
                             "go with --synthetic");
    *fmt = TQP_FORMAT_HF;
    if (a->synthetic) { /* one Llama-2-70B-shaped layer unless overridden */
        tqp_config *c = &in->cfg;
        c->dim = a->dim ? a->dim : 8192;
        c->hidden_dim = a->ffn ? a->ffn : 28672;
        c->n_heads = a->heads ? a->heads : 64;
        c->n_kv_heads = a->kv_heads ? a->kv_heads : 8;
        c->n_layers = a->layers ? a->layers : 1;
        c->vocab_size = a->vocab ? a->vocab : 32000;
        c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
        c->max_seq_len = 1 << 20;
        c->rms_eps = 1e-5f;
        c->rope_theta = 10000.0f;
        c->rope = TQP_ROPE_HALF;
        TQP_CHECK(tqp_config_validate(c, "--synthetic"));
        in->dtype = TQP_DTYPE_BF16;
    } else {
        TQP_CHECK(tqp_config_read(a->config, &in->cfg, fmt, &in->dtype));
    }
    if (a->dtype) {
        if (!strcmp(a->dtype, "f32"))
            in->dtype = TQP_DTYPE_F32;
        else if (!strcmp(a->dtype, "f16"))
            in->dtype = TQP_DTYPE_F16;
        else if (!strcmp(a->dtype, "bf16"))
            in->dtype = TQP_DTYPE_BF16;
        else
            return tqp_error_set(TQP_EUSAGE, "--dtype must be f32, f16 or bf16, got '%s'",
                                 a->dtype);
    }
    in->ranks = a->ranks;
    in->nodes = a->nodes;
    in->threads = a->threads;
    in->teams = a->teams;
    if (a->teams < 0) return tqp_error_set(TQP_EUSAGE, "--teams must be 0 (automatic) or positive");
    in->bits = a->bits;
    if (!strcmp(a->codebook, "scalar") || !strcmp(a->codebook, "trellis") ||
        !strcmp(a->codebook, "e8p")) {
        in->trellis = !strcmp(a->codebook, "trellis");
        in->e8p = !strcmp(a->codebook, "e8p");
    } else {
        return tqp_error_set(TQP_EUSAGE, "--codebook must be scalar, trellis or e8p, got '%s'",
                             a->codebook);
    }
    in->L = a->L;
    in->V = a->V;
    in->rounding = tqp_rounding_parse(a->rounding);
    if (in->rounding == TQP_ROUND_COUNT)
        return tqp_error_set(TQP_EUSAGE, "--rounding must be nearest or ldlq, got '%s'",
                             a->rounding);
    in->rotation = tqp_rot_parse(a->rotation);
    if (in->rotation == TQP_ROT_COUNT)
        return tqp_error_set(TQP_EUSAGE, "--rotation must be none, rht or kron, got '%s'",
                             a->rotation);
    in->nsamples = a->nsamples;
    in->ctx = a->ctx;
    in->batch = a->batch;
    in->eval_ctx = a->eval_ctx > 0 ? a->eval_ctx : a->ctx;
    in->eval_tokens = a->eval_tokens;
    tqp_plan_rates_default(in->rates);
    if (a->rates) TQP_CHECK(tqp_plan_rates_load(a->rates, in->rates));
    for (int i = 0; i < TQP_RATE_COUNT; i++) {
        if (a->rate[i] < 0 || (a->rate[i] != 0 && !isfinite(a->rate[i])))
            return tqp_error_set(TQP_EUSAGE, "--rate-%s must be positive",
                                 in->rates[i].key);
        if (a->rate[i] > 0) {
            in->rates[i].value = a->rate[i];
            snprintf(in->rates[i].source, sizeof in->rates[i].source, "--rate-%s",
                     in->rates[i].key);
        }
    }
    return TQP_OK;
}

tqp_status tqp_cmd_plan(int argc, char **argv)
{
    plan_args a;
    memset(&a, 0, sizeof a);
    tqp_plan_rate defaults[TQP_RATE_COUNT];
    tqp_plan_rates_default(defaults);
    char rate_names[TQP_RATE_COUNT][48], rate_help[TQP_RATE_COUNT][160];
    tqp_opt opts[32 + TQP_RATE_COUNT] = {
        {"--config", TQP_OPT_IN_PATH, &a.config, NULL, "PATH",
         "Hugging Face config.json (or its directory) or llama2.c .bin checkpoint"},
        {"--synthetic", TQP_OPT_FLAG, &a.synthetic, NULL, NULL,
         "plan one Llama-2-70B-shaped layer (dim 8192, FFN 28672, 64 heads, 8 KV heads) instead"},
        {"--dim", TQP_OPT_INT, &a.dim, NULL, "N", "with --synthetic: hidden size (8192)", 0, 1, 1 << 24},
        {"--ffn", TQP_OPT_INT, &a.ffn, NULL, "N", "with --synthetic: FFN size (28672)", 0, 1, 1 << 24},
        {"--heads", TQP_OPT_INT, &a.heads, NULL, "N", "with --synthetic: attention heads (64)", 0, 1, 4096},
        {"--kv-heads", TQP_OPT_INT, &a.kv_heads, NULL, "N", "with --synthetic: key/value heads (8)", 0, 1, 4096},
        {"--layers", TQP_OPT_INT, &a.layers, NULL, "N", "with --synthetic: layers (1)", 0, 1, 4096},
        {"--vocab", TQP_OPT_INT, &a.vocab, NULL, "N", "with --synthetic: vocabulary (32000)", 0, 1, 1 << 24},
        {"--ranks", TQP_OPT_INT, &a.ranks, NULL, "P", "MPI ranks of the planned run", 1, 1, 1 << 24},
        {"--nodes", TQP_OPT_INT, &a.nodes, "1", "N", "nodes; ranks are placed in blocks", 0, 1, 1 << 24},
        {"--threads", TQP_OPT_INT, &a.threads, "1", "T",
         "threads per rank, for every phase (windows, accumulation blocks, trellis bands)", 0, 1,
         1024},
        {"--teams", TQP_OPT_INT, &a.teams, "0", "T",
         "quantization teams, as tqp quantize --teams (0: its default)", 0, 0, 1 << 20},
        {"--bits", TQP_OPT_INT, &a.bits, "2", "K", "bits per weight: 2, 3 or 4"},
        {"--codebook", TQP_OPT_STRING, &a.codebook, "scalar", "C", "scalar, trellis or e8p"},
        {"--rounding", TQP_OPT_STRING, &a.rounding, "ldlq", "R", "ldlq or nearest"},
        {"--rotation", TQP_OPT_STRING, &a.rotation, "rht", "R", "rht, kron or none"},
        {"--trellis-L", TQP_OPT_INT, &a.L, "16", "L", "trellis state bits"},
        {"--trellis-V", TQP_OPT_INT, &a.V, "1", "V", "weights per trellis step (1: 1mad, 2: hyb)"},
        {"--nsamples", TQP_OPT_INT, &a.nsamples, "128", "N", "calibration windows", 0, 1, INT_MAX},
        {"--ctx", TQP_OPT_INT, &a.ctx, "256", "N", "tokens per calibration window", 0, 2, 1 << 24},
        {"--batch", TQP_OPT_INT, &a.batch, "0", "N",
         "windows per Hessian reduction (0: tqp hessian's default)", 0, 0, 1 << 20},
        {"--eval-tokens", TQP_OPT_INT, &a.eval_tokens, "300000", "N",
         "tokens of the evaluation text", 0, 1, INT_MAX},
        {"--eval-ctx", TQP_OPT_INT, &a.eval_ctx, "0", "N", "evaluation window (0: --ctx)", 0, 0, 1 << 24},
        {"--dtype", TQP_OPT_STRING, &a.dtype, NULL, "D",
         "stored weights f32, f16 or bf16 (default: the checkpoint's; bf16 for --synthetic)"},
        {"--rates", TQP_OPT_IN_FILE, &a.rates, NULL, "FILE",
         "JSON object of rates overriding the defaults (keys as in the rates table)"},
        {"--json", TQP_OPT_OUT, &a.json, NULL, "FILE", "also write the plan as JSON"},
    };
    int n_opts = 0; /* the options above: those before the first empty slot */
    while (n_opts < 32 && opts[n_opts].name) n_opts++;
    for (int i = 0; i < TQP_RATE_COUNT; i++) {
        snprintf(rate_names[i], sizeof rate_names[i], "--rate-%s", defaults[i].key);
        snprintf(rate_help[i], sizeof rate_help[i], "%s, %s (default %.4g)", defaults[i].use,
                 defaults[i].unit, defaults[i].value);
        opts[n_opts++] = (tqp_opt){rate_names[i], TQP_OPT_DOUBLE, &a.rate[i], NULL, "X",
                                   rate_help[i]};
    }
    tqp_cmd_spec spec = {
        "plan", "Plan a run: memory per rank and node, Viterbi work and time per phase.",
        "Reads only the configuration. Memory follows the buffers the code allocates at each "
        "phase's peak; time divides each step's work by a measured per-core rate (the rates table "
        "names each source). See docs/planner.md.",
        opts, n_opts};
    int help, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    tqp_plan_input in;
    tqp_model_format fmt;
    TQP_CHECK(build_input(&a, &in, &fmt));
    if (a.json && rank == 0) TQP_CHECK(tqp_check_writable(a.json));
    tqp_plan *p = tqp_calloc(1, sizeof *p);
    if (!p) return TQP_ENOMEM;
    tqp_status s = tqp_plan_compute(&in, p);
    char what[512];
    if (a.synthetic)
        snprintf(what, sizeof what, "synthetic model: %d layer(s) of dim %d, FFN %d, %d heads, %d KV heads",
                 in.cfg.n_layers, in.cfg.dim, in.cfg.hidden_dim, in.cfg.n_heads, in.cfg.n_kv_heads);
    else
        snprintf(what, sizeof what, "%s", a.config);
    if (s == TQP_OK && rank == 0) {
        print_plan(&a, p, what, fmt);
        if (a.json) s = write_json(a.json, what, p);
    }
    free(p);
    return s;
}
