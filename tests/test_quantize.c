/* The quantization phase end to end on the bundled model, in process: every decoded matrix
 * (codes -> values -> inverse rotation) reproduces, against the original W and H in the
 * original basis, the relative proxy loss recorded for it (computed independently here in long
 * double); scalar codes without rotation decode to grid points; bits per weight add up;
 * the same holds for the trellis codebook (QTIP: BlockLDLQ over 16 x 16 tiles);
 * damping retries on an indefinite Hessian are recorded, and a hopeless one, an all-zero or a
 * non-finite one, or one of the wrong width, is a clear error. */
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "tqp/h5util.h"
#include "tqp/hessian.h"
#include "tqp/quantize.h"
#include "tqp/tcq.h"

/* Open MPI keeps allocations until exit; leak checking would only report those. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

static char dir[4096], hpath[4200];
static tqp_model *model;
static char fp[65];

static void collect(void)
{
    tqp_hessian_job job = {.model = data_path("models/stories260K/stories260K.bin"),
                           .text = data_path("text/tinystories_calib.txt"),
                           .out = hpath, .nsamples = 16, .ctx = 256, .quiet = 1,
                           .mode = TQP_RESUME_FORCE};
    tqp_hstore st = {0};
    tqp_hessian_result r;
    CHECK(tqp_hessian_collect(MPI_COMM_WORLD, model, &job, &st, &r) == TQP_OK);
    tqp_hstore_close(&st);
}

static tqp_status quantize(const char *hfile, const char *out, tqp_quant_options *o,
                           tqp_quant_result *r)
{
    tqp_hfile hf;
    TQP_CHECK(tqp_hfile_open(hfile, fp, model->cfg.n_layers, &hf));
    tqp_qwriter w;
    char id[200];
    snprintf(id, sizeof id, "{\"model_fingerprint\": \"%s\"}", fp);
    tqp_status s = tqp_qwriter_open(out, id, model->cfg.n_layers, 1, &w);
    if (s == TQP_OK) s = tqp_quantize_run(MPI_COMM_WORLD, model, &hf, o, &w, r);
    char attrs[200];
    snprintf(attrs, sizeof attrs, "{\"model_fingerprint\": \"%s\"}", fp);
    if (s == TQP_OK)
        s = tqp_qwriter_finish(&w, model, o->tcq ? tqp_tcq_base(o->tcq) : NULL, attrs);
    tqp_qwriter_close(&w);
    tqp_hfile_close(&hf);
    return s;
}

/* tr(dW H dW^T) / tr(W H W^T) in long double, original basis. */
static double proxy_ref(const float *W, const double *What, const double *H, int m, int n)
{
    long double num = 0, den = 0;
    for (int r = 0; r < m; r++)
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                long double di = What[r * n + i] - W[r * n + i], dj = What[r * n + j] - W[r * n + j];
                num += di * H[i * n + j] * dj;
                den += (long double)W[r * n + i] * H[i * n + j] * W[r * n + j];
            }
    return (double)(num / den);
}

static void check_file(const char *out, const tqp_quant_options *o, const tqp_quant_result *r)
{
    tqp_qfile *q;
    CHECK(tqp_qfile_open(out, model, &q) == TQP_OK);
    if (!q) return;
    tqp_hfile hf;
    CHECK(tqp_hfile_open(hpath, fp, model->cfg.n_layers, &hf) == TQP_OK);
    double worst = 0, bits_bad = 0, off_grid = 0, wsum = 0, bsum = 0, csum = 0;
    int e8p = TQP_CB_IS(o->cb, TQP_CB_E8P);
    for (int l = 0; l < model->cfg.n_layers; l++) {
        tqp_layer_weights lw;
        CHECK(tqp_model_layer_load(model, l, &lw) == TQP_OK);
        for (int i = 0; i < TQP_QMATS; i++) {
            int64_t m, n, cnt;
            tqp_layer_tensor_shape(&model->cfg, tqp_qmat_tensor(i), &m, &n);
            double *W = malloc(sizeof(double) * m * n), *H = malloc(sizeof(double) * n * n);
            tqp_qmat_info info;
            CHECK(tqp_qfile_decode(q, l, i, &info, W) == TQP_OK);
            CHECK(tqp_hfile_read(&hf, l, tqp_qmat_group(i), (int)n, H, &cnt) == TQP_OK);
            for (int64_t k = 0; k < n * n; k++) H[k] /= (double)cnt;
            double ref = proxy_ref(lw.w[tqp_qmat_tensor(i)], W, H, (int)m, (int)n);
            worst = fmax(worst, fabs(ref - info.proxy_rel) / ref);
            CHECK_NEAR(info.proxy_rel, r->mats[l * TQP_QMATS + i].proxy_rel, 0);
            /* E8P: 8 x bits bits per row and block of 8 columns (the last may be narrower),
             * and the residual stage's fp64 scale at 3 and 4 bits */
            double code = e8p ? 8.0 * o->bits * m * ((n + 7) / 8) : (double)(m * n * o->bits);
            double expect = (code + 192.0 + (o->rotation == TQP_ROT_RHT ? m + n : 0) +
                             (e8p && o->bits > 2 ? 64 : 0)) /
                            (double)(m * n);
            csum += code;
            bits_bad = fmax(bits_bad, fabs(info.total_bits - expect));
            wsum += (double)(m * n), bsum += expect * (double)(m * n);
            if (o->rotation == TQP_ROT_NONE && !o->tcq && !e8p) /* decoded values: grid points */
                for (int64_t k = 0; k < m * n; k++) {
                    double g = W[k] / info.scale + 0.5 * ((1 << o->bits) - 1);
                    off_grid = fmax(off_grid, fabs(g - nearbyint(g)));
                    off_grid = fmax(off_grid, g < -1e-9 || g > (1 << o->bits) - 1 + 1e-9);
                }
            free(W), free(H);
        }
        tqp_layer_weights_release(&lw);
    }
    CHECK_MSG(worst < 1e-8, "%s: recorded proxy loss differs from the decoded one by %.3g",
              out, worst);
    CHECK_MSG(bits_bad < 1e-12, "total bits off by %.3g", bits_bad);
    CHECK_MSG(off_grid < 1e-9, "decoded values off the grid by %.3g", off_grid);
    /* the model total adds the shared trellis LUT (hyb, lut), stored once */
    if (o->tcq) {
        const tqp_trellis *t = tqp_tcq_base(o->tcq);
        bsum += 32.0 * tqp_trellis_lut_entries(t->code, t->L) * t->V;
    }
    CHECK_NEAR(r->bpw_code, csum / wsum, 1e-12);
    CHECK(e8p || r->bpw_code == o->bits);
    CHECK_NEAR(r->bpw_total, bsum / wsum, 1e-12);
    tqp_hfile_close(&hf);
    tqp_qfile_close(&q);
}

static double run_config(tqp_rot_kind rot, tqp_rounding rnd, int bits, const char *code)
{
    int e8p = code && !strcmp(code, "e8p");
    tqp_quant_options o = {.bits = bits, .rotation = rot, .rounding = rnd,
                           .cb = tqp_codebook_find(e8p ? "e8p" : code ? "trellis" : "scalar"),
                           .damp = 0.01, .seed = 3};
    if (code && !e8p) {
        tqp_tcode c = tqp_tcode_parse(code);
        CHECK(tqp_tcq_create(16, bits, c == TQP_TCODE_HYB ? 2 : 1, c, NULL, &o.tcq) == TQP_OK);
    }
    char out[4300];
    snprintf(out, sizeof out, "%s/q_%s_%s_%d_%s.h5", dir, tqp_rot_name(rot),
             tqp_rounding_name(rnd), bits, code ? code : "scalar");
    tqp_quant_result r;
    tqp_status s = quantize(hpath, out, &o, &r);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    if (s == TQP_OK) check_file(out, &o, &r);
    double proxy = s == TQP_OK ? r.proxy_mean : NAN;
    tqp_quant_result_free(&r);
    tqp_tcq_destroy(&o.tcq);
    return proxy;
}

/* Copy the Hessian file and replace layer 0's o-group H by f(H). */
static void doctor(const char *name, void (*f)(double *H, int n))
{
    char cmd[13000], path[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/%s' '%s/%s.layers' && cp '%s' '%s/%s' && cp -r '%s.layers' '%s/%s.layers'",
             dir, name, dir, name, hpath, dir, name, hpath, dir, name);
    CHECK(system(cmd) == 0);
    snprintf(path, sizeof path, "%s/%s.layers/layer_000.h5", dir, name);
    int n = model->cfg.dim;
    double *H = malloc(sizeof(double) * n * n);
    hid_t file = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT), d = H5Dopen2(file, "/o/H", H5P_DEFAULT);
    CHECK(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, H) >= 0);
    f(H, n);
    CHECK(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, H) >= 0);
    H5Dclose(d);
    H5Fclose(file);
    free(H);
}

static double mean_diag(const double *H, int n)
{
    double t = 0;
    for (int j = 0; j < n; j++) t += H[j * n + j];
    return t / n;
}
/* One negative diagonal entry: indefinite; rescued by a few doublings of σ (mild) or beyond
 * any damping TQP tries while the trace stays positive (wild). */
static void shift_mild(double *H, int n) { H[0] = -0.015 * mean_diag(H, n); }
static void shift_wild(double *H, int n) { H[0] = -0.5 * n * mean_diag(H, n); }
static void zero(double *H, int n) { memset(H, 0, sizeof(double) * n * n); }
static void poison(double *H, int n) { H[n + 3] = NAN; }

static void test_bad_hessians(void)
{
    tqp_quant_options o = {.bits = 2, .rotation = TQP_ROT_RHT, .rounding = TQP_ROUND_LDLQ,
                           .cb = tqp_codebook_find("scalar"), .damp = 0.01, .seed = 1};
    tqp_quant_result r;
    char hp[4300], out[4300];
    snprintf(out, sizeof out, "%s/bad.h5", dir);

    doctor("mild.h5", shift_mild);
    snprintf(hp, sizeof hp, "%s/mild.h5", dir);
    CHECK_MSG(quantize(hp, out, &o, &r) == TQP_OK, "%s", tqp_error_message());
    if (r.mats) {
        tqp_qmat_info *oi = &r.mats[3]; /* layer 0, o */
        CHECK_MSG(oi->damp_retries >= 1 && oi->damp > 0.01, "retries %d, damp %g",
                  oi->damp_retries, oi->damp);
        CHECK(r.mats[0].damp_retries == 0 && r.mats[0].damp == 0.01);
    }
    tqp_quant_result_free(&r);

    struct {
        const char *name;
        void (*f)(double *, int);
        tqp_status want;
        const char *msg;
    } cases[] = {{"wild.h5", shift_wild, TQP_ENUMERIC, "layer 0 o: Hessian not positive definite"},
                 {"zero.h5", zero, TQP_EINPUT, "layer 0 o: all-zero"},
                 {"nan.h5", poison, TQP_ENONFINITE, "layer_000.h5: layer 0 o: H[1][3] is not finite"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        doctor(cases[k].name, cases[k].f);
        unlink(out);
        snprintf(hp, sizeof hp, "%s/%s", dir, cases[k].name);
        tqp_status s = quantize(hp, out, &o, &r);
        CHECK_MSG(s == cases[k].want && strstr(tqp_error_message(), cases[k].msg),
                  "%s: status %d, message '%s'", cases[k].name, s, tqp_error_message());
        CHECK_MSG(access(out, F_OK) != 0, "%s: output left behind", cases[k].name);
        tqp_quant_result_free(&r);
    }

    /* wrong width and another model's file */
    tqp_hfile hf;
    int64_t cnt;
    double *H = malloc(sizeof(double) * 100 * 100);
    CHECK(tqp_hfile_open(hpath, fp, model->cfg.n_layers, &hf) == TQP_OK);
    CHECK(tqp_hfile_read(&hf, 0, TQP_GROUP_QKV, 100, H, &cnt) == TQP_EINPUT);
    CHECK(strstr(tqp_error_message(), "shape (64, 64), expected (100, 100)") != NULL);
    tqp_hfile_close(&hf);
    CHECK(tqp_hfile_open(hpath, "0123456789abcdef", model->cfg.n_layers, &hf) == TQP_EMISMATCH);
    CHECK(strstr(tqp_error_message(), "another model") != NULL);
    free(H);
}

/* A /trellis LUT of the wrong size, or a code that does not exist: decoding refuses the file. */
static void test_bad_lut(void)
{
    char out[4300];
    snprintf(out, sizeof out, "%s/q_none_nearest_3_hyb.h5", dir);
    hid_t f = H5Fopen(out, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0 && H5Ldelete(f, "/trellis/lut", H5P_DEFAULT) >= 0);
    float small[100 * 2] = {0};
    hsize_t dims[2] = {100, 2};
    CHECK(tqp_h5_write(f, "/trellis/lut", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, dims, small) == TQP_OK);
    H5Fclose(f);
    tqp_qfile *q;
    CHECK(tqp_qfile_open(out, model, &q) == TQP_OK);
    double *W = malloc(sizeof(double) * 64 * 64);
    tqp_qmat_info info;
    CHECK(tqp_qfile_decode(q, 0, 0, &info, W) == TQP_EINPUT);
    CHECK_MSG(strstr(tqp_error_message(), "LUT of the wrong size") != NULL, "%s", tqp_error_message());
    tqp_qfile_close(&q);
    free(W);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char *d = tu_mkdtemp();
    snprintf(dir, sizeof dir, "%s", d);
    snprintf(hpath, sizeof hpath, "%s/h.h5", dir);
    tqp_status ms = tqp_model_load(data_path("models/stories260K/stories260K.bin"), &model);
    CHECK_MSG(ms == TQP_OK, "%s (set TQP_DATA_DIR)", tqp_error_message());
    if (ms != TQP_OK) {
        tu_rmdir(dir);
        int rc = check_done();
        MPI_Finalize();
        return rc;
    }
    CHECK(tqp_model_fingerprint(model, fp) == TQP_OK);
    collect();
    double quip = run_config(TQP_ROT_RHT, TQP_ROUND_LDLQ, 2, NULL);
    run_config(TQP_ROT_NONE, TQP_ROUND_NEAREST, 3, NULL);
    double gptq = run_config(TQP_ROT_NONE, TQP_ROUND_LDLQ, 2, NULL);
    run_config(TQP_ROT_KRON, TQP_ROUND_LDLQ, 4, NULL);
    double qtip = run_config(TQP_ROT_RHT, TQP_ROUND_LDLQ, 2, "1mad");
    double tnear = run_config(TQP_ROT_RHT, TQP_ROUND_NEAREST, 2, "3inst");
    double e8 = run_config(TQP_ROT_RHT, TQP_ROUND_LDLQ, 2, "e8p");
    double e8near = run_config(TQP_ROT_RHT, TQP_ROUND_NEAREST, 2, "e8p");
    double e83 = run_config(TQP_ROT_RHT, TQP_ROUND_LDLQ, 3, "e8p");
    double e84 = run_config(TQP_ROT_RHT, TQP_ROUND_LDLQ, 4, "e8p");
    run_config(TQP_ROT_NONE, TQP_ROUND_NEAREST, 4, "e8p");
    run_config(TQP_ROT_NONE, TQP_ROUND_NEAREST, 3, "hyb");
    /* at 2 bits: QTIP < QuIP < GPTQ in proxy loss, and BlockLDLQ helps the trellis too */
    CHECK_MSG(qtip < quip && quip < gptq && qtip < tnear, "QTIP %.4f, QuIP %.4f, GPTQ %.4f, "
              "trellis nearest %.4f", qtip, quip, gptq, tnear);
    /* E8P (QuIP#) lies between the trellis and the scalar grid; BlockLDLQ helps it */
    CHECK_MSG(qtip < e8 && e8 < quip && e8 < e8near, "QTIP %.4f, E8P %.4f, QuIP %.4f, E8P nearest "
              "%.4f", qtip, e8, quip, e8near);
    /* the residual stages: each bit lowers the loss (about 4x per bit, as for a Gaussian) */
    CHECK_MSG(e83 < e8 / 2.5 && e84 < e83 / 2.5, "E8P 2, 3, 4 bits: %.4f %.4f %.4f", e8, e83, e84);
    test_bad_hessians();
    test_bad_lut();
    tqp_model_destroy(&model);
    tu_rmdir(dir);
    int rc = check_done();
    MPI_Finalize();
    return rc;
}
