/* tqp_hessian_run end to end on a small random model: every stored H equals an explicit
 * long-double X^T X of the group inputs (captured here from the forward pass, window by window,
 * through the same layers), count equals the tokens seen, and mean equals sum x / count. */
#include <hdf5.h>
#include <mpi.h>

#include "check.h"
#include "testutil.h"
#include "tqp/calib.h"
#include "tqp/hessian.h"
#include "tqp/hstore.h"

/* Open MPI keeps allocations until exit; leak checking would only report those. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

enum { NS = 5, CTX = 12 };

typedef struct {
    long double *ref[TQP_GROUP_COUNT], *sum[TQP_GROUP_COUNT];
    int64_t count[TQP_GROUP_COUNT];
} refs;

static tqp_status record(void *ctx, int layer, tqp_group g, const float *x, int ntok, int n)
{
    refs *r = ctx;
    for (int t = 0; t < ntok; t++)
        for (int i = 0; i < n; i++) {
            r->sum[g][i] += x[t * n + i];
            for (int j = 0; j < n; j++)
                r->ref[g][i * n + j] += (long double)x[t * n + i] * x[t * n + j];
        }
    r->count[g] += ntok;
    return TQP_OK;
}

static double *read_dataset(const char *path, const char *name, size_t n)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f < 0 ? -1 : H5Dopen2(f, name, H5P_DEFAULT);
    double *buf = calloc(n, sizeof *buf);
    CHECK_MSG(d >= 0 && H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0,
              "cannot read %s:%s", path, name);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    return buf;
}

static void compare_layer(const tqp_hstore *st, int l, const tqp_config *c, refs *r)
{
    char *path = tqp_hstore_layer_path(st, l), name[64];
    for (int g = 0; g < TQP_GROUP_COUNT; g++) {
        int n = tqp_group_width(c, (tqp_group)g);
        snprintf(name, sizeof name, "/%s/H", tqp_group_name((tqp_group)g));
        double *H = read_dataset(path, name, (size_t)n * n), md = 0, mx = 0;
        for (int i = 0; i < n * n; i++) {
            md = fmax(md, fabsl(H[i] - r->ref[g][i]));
            mx = fmax(mx, fabsl(r->ref[g][i]));
        }
        CHECK_MSG(md <= 1e-12 * mx, "layer %d %s: relative error %.3g", l, name, md / mx);
        snprintf(name, sizeof name, "/%s/count", tqp_group_name((tqp_group)g));
        double *cnt = read_dataset(path, name, 1);
        /* count is int64 on disk; read_dataset converts it to double */
        CHECK(cnt[0] == (double)r->count[g] && r->count[g] == NS * CTX);
        snprintf(name, sizeof name, "/%s/mean", tqp_group_name((tqp_group)g));
        double *mean = read_dataset(path, name, (size_t)n), me = 0;
        for (int i = 0; i < n; i++)
            me = fmax(me, fabsl(mean[i] - r->sum[g][i] / r->count[g]));
        CHECK_MSG(me < 1e-12, "layer %d mean error %.3g", l, me);
        free(H), free(cnt), free(mean);
    }
    free(path);
}

/* Forward the windows through the model, recording each layer's group inputs, and compare. */
static void check_against_reference(const tqp_model *m, const uint32_t *tok, const tqp_hstore *st)
{
    const tqp_config *c = &m->cfg;
    tqp_forward *fw;
    CHECK(tqp_forward_create(c, CTX, &fw) == TQP_OK);
    float *x = malloc(sizeof(float) * NS * CTX * c->dim), *own = NULL;
    const float *embed;
    CHECK(tqp_model_global_load(m, TQP_G_EMBED, &embed, &own) == TQP_OK);
    for (int w = 0; w < NS; w++)
        tqp_forward_embed(fw, embed, tok + w * CTX, CTX, x + w * CTX * c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        refs r = {{0}};
        for (int g = 0; g < TQP_GROUP_COUNT; g++) {
            int n = tqp_group_width(c, (tqp_group)g);
            r.ref[g] = calloc((size_t)n * n, sizeof(long double));
            r.sum[g] = calloc((size_t)n, sizeof(long double));
        }
        tqp_layer_weights lw;
        CHECK(tqp_model_layer_load(m, l, &lw) == TQP_OK);
        tqp_forward_hooks hk = {record, &r};
        for (int w = 0; w < NS; w++)
            tqp_forward_layer(fw, &lw, l, x + w * CTX * c->dim, CTX, &hk);
        tqp_layer_weights_release(&lw);
        compare_layer(st, l, c, &r);
        for (int g = 0; g < TQP_GROUP_COUNT; g++)
            free(r.ref[g]), free(r.sum[g]);
    }
    free(own);
    free(x);
    tqp_forward_destroy(&fw);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char *dir = tu_mkdtemp(), bin[600], toks[600], out[600];
    snprintf(bin, sizeof bin, "%s/m.bin", dir);
    snprintf(toks, sizeof toks, "%s/t.u32", dir);
    snprintf(out, sizeof out, "%s/h.h5", dir);
    tqp_config c = {.dim = 48,
                    .hidden_dim = 40,
                    .n_layers = 2,
                    .n_heads = 6,
                    .n_kv_heads = 2,
                    .head_dim = 8,
                    .vocab_size = 37,
                    .max_seq_len = 32};
    tu_model tm;
    tu_model_random(&tm, &c, 1, 3);
    tu_model_write_llama2c(&tm, bin);
    uint32_t tok[NS * CTX + 7];
    uint64_t s = 5;
    for (int i = 0; i < NS * CTX + 7; i++)
        tok[i] = (uint32_t)(tu_next(&s) % 37);
    tu_write_file(toks, tok, sizeof tok);

    tqp_model *m = NULL;
    CHECK(tqp_model_load(bin, &m) == TQP_OK);
    tqp_calib cal;
    tqp_status st_ = tqp_calib_load(MPI_COMM_WORLD, m, NULL, NULL, toks, NS, CTX, 0, 0, &cal);
    CHECK_MSG(st_ == TQP_OK, "%s", tqp_error_message());
    tqp_hessian_meta meta = {.model = bin,
                             .model_fingerprint = "x",
                             .text = toks,
                             .text_sha256 = cal.sha256,
                             .nsamples = NS,
                             .ctx = CTX,
                             .n_layers = c.n_layers};
    for (int g = 0; g < TQP_GROUP_COUNT; g++)
        meta.width[g] = tqp_group_width(&c, (tqp_group)g);
    tqp_hstore st;
    CHECK(tqp_hstore_open(MPI_COMM_WORLD, out, &meta, TQP_RESUME_FORCE, &st) == TQP_OK);
    tqp_hessian_options o = {.batch_windows = 2};
    tqp_hessian_result r;
    st_ = tqp_hessian_run(MPI_COMM_WORLD, m, &cal, &st, &o, &r);
    CHECK_MSG(st_ == TQP_OK, "%s", tqp_error_message());
    CHECK(r.layers_done == 2 && r.tokens == NS * CTX);
    check_against_reference(m, tok, &st);

    tqp_hstore_close(&st);
    tqp_calib_free(&cal);
    tqp_model_destroy(&m);
    tu_model_free(&tm);
    tu_rmdir(dir);
    int rc = check_done();
    MPI_Finalize();
    return rc;
}
