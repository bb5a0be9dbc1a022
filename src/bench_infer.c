/* `tqp bench infer`: end-to-end batch-1 decoding (infer.h), full precision against each
 * quantized format in one run, on the bundled model's shape and on a synthetic model of
 * realistic width (layers of the Llama-2-7B shape, made in memory with random weights and
 * codes: the speed of a product does not depend on the values).  For each format: tokens/s on
 * one thread and on T, the weight bytes read per token, and what fraction of the machine's
 * read bandwidth (measured in the same run, one thread and T) that traffic is. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/cli.h"
#include "tqp/e8p.h"
#include "tqp/infer.h"
#include "tqp/progress.h"
#include "tqp/quant.h"
#include "tqp/rng.h"
#include "tqp/tcq.h"
#include "tqp/threads.h"

typedef struct {
    const char *name; // fp32, 1mad, 1mul, gf8, 3inst, hyb, e8p, scalar
    int trellis;      // a trellis code (then code)
    tqp_tcode code;
} format;

static const format formats[] = {
    {"fp32", 0, 0},
    {"1mad", 1, TQP_TCODE_1MAD},
    {"1mul", 1, TQP_TCODE_1MUL},
    {"gf8", 1, TQP_TCODE_GF8},
    {"3inst", 1, TQP_TCODE_3INST},
    {"hyb", 1, TQP_TCODE_HYB},
    {"e8p", 0, 0},
    {"scalar", 0, 0},
};

static void fill_floats(float *x, size_t n, double scale, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * ((double)(tqp_splitmix64(seed) >> 11) / 9007199254740992.0 - 0.5));
}

/* An engine for cfg with random weights of format f at `bits` (fp32: dense). */
static tqp_status synthetic_engine(const tqp_config *cfg, int ctx, const format *f, int bits,
                                   tqp_infer **out)
{
    tqp_infer *e = NULL;
    TQP_CHECK(tqp_infer_create(cfg, ctx, &e));
    uint64_t seed = 0x696e666572ull;
    size_t V = (size_t)cfg->vocab_size, d = (size_t)cfg->dim;
    tqp_status s = TQP_OK;
    for (int i = 0; i < 2 && s == TQP_OK; i++) {
        e->owned_globals[i] = tqp_malloc_aligned(sizeof(float) * V * d);
        if (!e->owned_globals[i]) s = TQP_ENOMEM;
        else fill_floats(e->owned_globals[i], V * d, 0.1, &seed);
    }
    e->owned_globals[2] = tqp_malloc(sizeof(float) * d);
    if (s == TQP_OK && !e->owned_globals[2]) s = TQP_ENOMEM;
    if (s == TQP_OK) {
        for (size_t i = 0; i < d; i++) e->owned_globals[2][i] = 1.0f;
        e->embed = e->owned_globals[0], e->head = e->owned_globals[1];
        e->norm = e->owned_globals[2];
        tqp_linear_dense(&e->head_op, e->head, (int)V, (int)d);
    }
    tqp_trellis *t = NULL;
    tqp_tcq *fam = NULL;
    if (s == TQP_OK && f->trellis) {
        int Vd = f->code == TQP_TCODE_HYB ? 2 : 1;
        s = tqp_trellis_create(16, bits, Vd, 256, f->code, NULL, &t);
        if (s == TQP_OK) s = tqp_tcq_create(16, bits, Vd, f->code, NULL, &fam);
    }
    for (int l = 0; l < cfg->n_layers && s == TQP_OK; l++) {
        tqp_infer_layer *L = &e->layer[l];
        size_t dense = 0, off = 0;
        for (int i = 0; i < TQP_QMATS && !strcmp(f->name, "fp32"); i++) {
            int64_t r, c;
            tqp_layer_tensor_shape(cfg, tqp_qmat_tensor(i), &r, &c);
            dense += (size_t)(r * c);
        }
        L->owned = tqp_malloc_aligned(sizeof(float) * (dense + 2 * d));
        if (!L->owned) s = TQP_ENOMEM;
        for (size_t i = 0; s == TQP_OK && i < 2 * d; i++) L->owned[dense + i] = 1.0f;
        if (s == TQP_OK) {
            L->vec[TQP_T_ATTN_NORM] = L->owned + dense;
            L->vec[TQP_T_FFN_NORM] = L->owned + dense + d;
        }
        for (int i = 0; i < TQP_QMATS && s == TQP_OK; i++) {
            int64_t r, c;
            tqp_layer_tensor_shape(cfg, tqp_qmat_tensor(i), &r, &c);
            tqp_linear *lin = &L->mat[i];
            if (!strcmp(f->name, "fp32")) {
                fill_floats(L->owned + off, (size_t)(r * c), 0.05, &seed);
                tqp_linear_dense(lin, L->owned + off, (int)r, (int)c);
                off += (size_t)(r * c);
                continue;
            }
            tqp_qmat_info q = {.rows = (int)r, .cols = (int)c, .bits = bits, .scale = 0.01,
                               .rotation = TQP_ROT_RHT};
            q.cb = &tqp_codebooks[f->trellis ? TQP_CB_TRELLIS
                                  : !strcmp(f->name, "e8p") ? TQP_CB_E8P : TQP_CB_SCALAR];
            q.resid_scale = !strcmp(f->name, "e8p") && bits > 2 ? tqp_e8p_resid_scale(bits) : 0;
            size_t bytes = f->trellis ? tqp_tcq_matrix_bytes(fam, q.rows, q.cols)
                           : !strcmp(f->name, "e8p") ? tqp_e8p_matrix_bytes(q.rows, q.cols, bits)
                                                     : tqp_pack_bytes((size_t)(r * c), bits);
            uint8_t *packed = tqp_malloc(bytes);
            tqp_rot rot = {0};
            /* as tqp quantize: one input rotation per layer and input group */
            uint64_t seed_in = 0x5eed0000ull + 16 * (uint64_t)l + (uint64_t)tqp_qmat_group(i);
            s = packed ? tqp_rot_create(TQP_ROT_RHT, q.rows, q.cols, seed, seed_in, &rot)
                       : TQP_ENOMEM;
            for (size_t k = 0; s == TQP_OK && k < bytes; k++)
                packed[k] = (uint8_t)(tqp_splitmix64(&seed) >> 56);
            if (s == TQP_OK) s = tqp_linear_quantized(&q, t, packed, bytes, &rot, TQP_TMV_AUTO, lin);
            tqp_rot_destroy(&rot);
            free(packed);
        }
    }
    tqp_tcq_destroy(&fam);
    tqp_trellis_destroy(&t);
    if (s != TQP_OK) {
        tqp_infer_destroy(&e);
        return s;
    }
    *out = e;
    return TQP_OK;
}

/* Read bandwidth: the best of 3 sums over `bytes` of memory, on `threads` threads, GB/s. */
static double read_bandwidth(const float *buf, size_t n, int threads)
{
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = tqp_now(), total = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
        for (size_t b = 0; b < n / 4096; b++) {
            float acc[16] = {0};
            const float *p = buf + b * 4096;
            for (int i = 0; i < 4096; i += 16)
                for (int k = 0; k < 16; k++) acc[k] += p[i + k];
            for (int k = 0; k < 16; k++) total += acc[k];
        }
        double dt = tqp_now() - t0, gbs = (double)n * 4 / dt / 1e9;
        if (total == 12345.678) printf(" "); /* keep the sum */
        best = gbs > best ? gbs : best;
    }
    return best;
}

typedef struct {
    const char *model, *fmt;
    double tps[2], bytes; // tokens/s on 1 and T threads, weight bytes per token
    double ltps[2], lbytes; // the same for the layers alone (no head)
    char kernel[128];
} bench_row;

/* Decode `tokens` tokens (after one warm-up step) on `threads` threads: tokens/s (logits NULL:
 * the layers alone, without the final norm and head). */
static tqp_status time_decode(tqp_infer *e, int tokens, int threads, float *logits, double *tps)
{
    tqp_infer_reset(e);
    uint64_t seed = 5;
    TQP_CHECK(tqp_infer_step(e, 1, logits, threads));
    double t0 = tqp_now();
    for (int i = 0; i < tokens; i++)
        TQP_CHECK(tqp_infer_step(e, (uint32_t)(tqp_splitmix64(&seed) % (uint64_t)e->cfg.vocab_size),
                                 logits, threads));
    *tps = tokens / (tqp_now() - t0);
    return TQP_OK;
}

tqp_status tqp_bench_infer(int argc, char **argv)
{
    const char *model, *fmts, *json;
    int layers, bits, threads, tokens, small_tokens, skip_small;
    tqp_opt opts[] = {
        {"--model", TQP_OPT_IN_PATH, &model, NULL, "PATH",
         "the small model whose shape to run (default: stories260K under $TQP_DATA_DIR, else "
         "../shared/data)"},
        {"--formats", TQP_OPT_STRING, &fmts, "fp32,1mad,1mul,gf8,e8p,scalar", "LIST",
         "formats, fp32 first as the baseline: fp32, 1mad, 1mul, gf8, 3inst, hyb, e8p, scalar"},
        {"--bits", TQP_OPT_INT, &bits, "2", "K", "bits per weight of the quantized formats", 0, 2,
         4},
        {"--layers", TQP_OPT_INT, &layers, "4", "N",
         "layers of the Llama-2-7B shape in the synthetic model (0: none)", 0, 0, 32},
        {"--tokens", TQP_OPT_INT, &tokens, "24", "N", "tokens timed on the synthetic model", 0, 1,
         4096},
        {"--small-tokens", TQP_OPT_INT, &small_tokens, "256", "N",
         "tokens timed on the small model", 0, 1, 4096},
        {"--skip-small", TQP_OPT_FLAG, &skip_small, NULL, NULL, "only the synthetic model"},
        {"--threads", TQP_OPT_INT, &threads, "2", "T", "the second thread count", 0, 1, 1024},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write the table as JSON"},
    };
    tqp_cmd_spec spec = {
        "bench infer",
        "End-to-end batch-1 decoding: tokens/s of full precision and each quantized format.",
        "Weights and codes are random (speed does not depend on them); the small model takes "
        "the bundled model's shape, the synthetic one --layers layers of dim 4096, FFN 11008, "
        "32 heads, vocabulary 32000 (head and embeddings fp32 in every format). The weight "
        "bytes read per token are set against the read bandwidth measured in the same run.",
        opts, (int)(sizeof opts / sizeof opts[0])};
    int help;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    tqp_blas_threads_set(1);
    /* the formats */
    const format *sel[8];
    int nsel = 0;
    char *copy = strdup(fmts), *save = NULL;
    tqp_status s = copy ? TQP_OK : TQP_ENOMEM;
    for (char *tk = copy ? strtok_r(copy, ",", &save) : NULL; tk && s == TQP_OK;
         tk = strtok_r(NULL, ",", &save)) {
        const format *f = NULL;
        for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
            if (!strcmp(tk, formats[i].name)) f = &formats[i];
        if (!f) s = tqp_error_set(TQP_EUSAGE, "--formats: unknown format '%s'", tk);
        else if (nsel == 8) s = tqp_error_set(TQP_EUSAGE, "--formats: at most 8");
        else sel[nsel++] = f;
    }
    free(copy);
    TQP_CHECK(s);
    if (strcmp(sel[0]->name, "fp32"))
        return tqp_error_set(TQP_EUSAGE, "--formats must start with fp32 (the baseline)");
    /* the models */
    tqp_config cfgs[2];
    const char *names[2];
    int ncfg = 0, ntok[2];
    if (!skip_small) {
        char path[4096];
        if (!model) {
            const char *dd = getenv("TQP_DATA_DIR");
            snprintf(path, sizeof path, "%s/models/stories260K/stories260K.bin",
                     dd && *dd ? dd : "../shared/data");
        }
        tqp_model_format mf;
        tqp_dtype dt;
        TQP_CHECK(tqp_config_read(model ? model : path, &cfgs[0], &mf, &dt));
        names[ncfg] = "stories260K shape", ntok[ncfg++] = small_tokens;
        if (model) names[0] = "--model shape";
    }
    if (layers > 0) {
        tqp_config c = {.dim = 4096, .hidden_dim = 11008, .n_layers = layers, .n_heads = 32,
                        .n_kv_heads = 32, .head_dim = 128, .vocab_size = 32000,
                        .max_seq_len = 4096, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
                        .rope = TQP_ROPE_HALF};
        cfgs[ncfg] = c;
        names[ncfg] = "Llama-2-7B layers";
        ntok[ncfg++] = tokens;
    }
    /* the machine's read bandwidth: 1 GiB, 1 thread and T */
    size_t nbw = (size_t)1 << 28;
    float *bw = tqp_malloc_aligned(sizeof(float) * nbw);
    if (!bw) return TQP_ENOMEM;
    uint64_t seed = 1;
    fill_floats(bw, nbw, 1.0, &seed);
    double band[2] = {read_bandwidth(bw, nbw, 1), read_bandwidth(bw, nbw, threads)};
    free(bw);
    bench_row rows[16];
    int nrow = 0;
    for (int c = 0; c < ncfg && s == TQP_OK; c++) {
        int ctx = ntok[c] + 2;
        float *logits = tqp_malloc(sizeof(float) * (size_t)cfgs[c].vocab_size);
        if (!logits) s = TQP_ENOMEM;
        for (int f = 0; f < nsel && s == TQP_OK; f++) {
            tqp_infer *e = NULL;
            fprintf(stderr, "bench infer: %s, %s: building...\n", names[c], sel[f]->name);
            s = synthetic_engine(&cfgs[c], ctx, sel[f], bits, &e);
            bench_row *r = &rows[nrow];
            r->model = names[c], r->fmt = sel[f]->name;
            if (s == TQP_OK) {
                r->bytes = tqp_infer_bytes_per_token(e);
                tqp_infer_describe(e, r->kernel, sizeof r->kernel);
                r->lbytes = r->bytes - e->head_op.bytes;
                s = time_decode(e, ntok[c], 1, logits, &r->tps[0]);
            }
            if (s == TQP_OK) s = time_decode(e, ntok[c], threads, logits, &r->tps[1]);
            if (s == TQP_OK) s = time_decode(e, ntok[c], 1, NULL, &r->ltps[0]);
            if (s == TQP_OK) s = time_decode(e, ntok[c], threads, NULL, &r->ltps[1]);
            if (s == TQP_OK) nrow++;
            tqp_infer_destroy(&e);
        }
        free(logits);
    }
    TQP_CHECK(s);
    char cpu[256];
    tqp_cpu_name(cpu, sizeof cpu);
    printf("CPU: %s; read bandwidth %.1f GB/s on 1 thread, %.1f GB/s on %d\n", cpu, band[0],
           band[1], threads);
    printf("%d-bit formats; weights and codes random; head and embeddings fp32 in every format\n\n",
           bits);
    printf("Whole model: every layer, the final norm and the fp32 head; layers: the layers "
           "alone.\n\n");
    printf("| model | format | kernels | MB/token | tokens/s, 1 thread | vs fp32 | tokens/s, "
           "%d threads | %d / 1 | layers MB/token | layers tokens/s, 1 thread | vs fp32 | "
           "layers tokens/s, %d threads | %d / 1 | layers GB/s, 1 thread | of bandwidth |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
           threads, threads, threads, threads);
    double base = 0, lbase = 0;
    for (int i = 0; i < nrow; i++) {
        bench_row *r = &rows[i];
        if (!strcmp(r->fmt, "fp32")) base = r->tps[0], lbase = r->ltps[0];
        double gbs = r->lbytes * r->ltps[0] / 1e9;
        printf("| %s | %s | %s | %.1f | %.2f | %.2fx | %.2f | %.2fx | %.1f | %.2f | %.2fx | %.2f "
               "| %.2fx | %.1f | %.0f%% |\n",
               r->model, r->fmt, r->kernel, r->bytes / 1e6, r->tps[0], r->tps[0] / base,
               r->tps[1], r->tps[1] / r->tps[0], r->lbytes / 1e6, r->ltps[0], r->ltps[0] / lbase,
               r->ltps[1], r->ltps[1] / r->ltps[0], gbs, 100 * gbs / band[0]);
    }
    if (json) {
        cJSON *d = cJSON_CreateObject(), *arr = cJSON_CreateArray();
        cJSON_AddStringToObject(d, "cpu", cpu);
        cJSON_AddNumberToObject(d, "bandwidth_gbs_1", band[0]);
        cJSON_AddNumberToObject(d, "bandwidth_gbs_T", band[1]);
        cJSON_AddNumberToObject(d, "threads", threads);
        cJSON_AddNumberToObject(d, "bits", bits);
        for (int i = 0; i < nrow; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", rows[i].model);
            cJSON_AddStringToObject(o, "format", rows[i].fmt);
            cJSON_AddStringToObject(o, "kernels", rows[i].kernel);
            cJSON_AddNumberToObject(o, "weight_bytes_per_token", rows[i].bytes);
            cJSON_AddNumberToObject(o, "tokens_per_second_1", rows[i].tps[0]);
            cJSON_AddNumberToObject(o, "tokens_per_second_T", rows[i].tps[1]);
            cJSON_AddNumberToObject(o, "layer_bytes_per_token", rows[i].lbytes);
            cJSON_AddNumberToObject(o, "layers_tokens_per_second_1", rows[i].ltps[0]);
            cJSON_AddNumberToObject(o, "layers_tokens_per_second_T", rows[i].ltps[1]);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON_AddItemToObject(d, "rows", arr);
        s = tqp_json_write(json, d);
        cJSON_Delete(d);
    }
    return s;
}
