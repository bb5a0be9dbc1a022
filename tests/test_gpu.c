/* The CUDA back end against the CPU: for every code and K, decoding on the device gives the
 * CPU decoder's values bit for bit, and the fused product agrees with the CPU's float64
 * reference within float rounding on random data, every output written (poisoned with NaN
 * first).  Without a CUDA build or a device it prints why and exits 77 (skipped). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tqp/e8mv.h"
#include "tqp/e8p.h"
#include "tqp/gpu.h"
#include "tqp/matvec.h"
#include "tqp/rng.h"
#include "tqp/tcq.h"

static uint64_t seed_ = 777;

static void one(tqp_tcode code, int L, int K, int V, int m, int n)
{
    tqp_trellis *t = NULL;
    tqp_tcq *fam = NULL;
    CHECK(tqp_trellis_create(L, K, V, 256, code, NULL, &t) == TQP_OK);
    CHECK(tqp_tcq_create(L, K, V, code, NULL, &fam) == TQP_OK);
    size_t bytes = tqp_tcq_matrix_bytes(fam, m, n), mn = (size_t)m * n;
    uint8_t *packed = malloc(bytes);
    float *x = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * m);
    float *W = malloc(sizeof(float) * mn);
    double *Wc = malloc(sizeof(double) * mn), *zref = malloc(sizeof(double) * m);
    for (size_t i = 0; i < bytes; i++) packed[i] = (uint8_t)(tqp_splitmix64(&seed_) >> 56);
    for (int i = 0; i < n; i++)
        x[i] = (float)((double)(tqp_splitmix64(&seed_) >> 11) / 9007199254740992.0 * 2 - 1);
    CHECK(tqp_tcq_decode(fam, packed, m, n, Wc) == TQP_OK);
    tqp_gpu_tmv *op = NULL;
    tqp_status s = tqp_gpu_tmv_create(t, packed, m, n, &op);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    if (s == TQP_OK) {
        for (size_t i = 0; i < mn; i++) W[i] = NAN;
        CHECK(tqp_gpu_tmv_decode(op, W) == TQP_OK);
        size_t bad = 0;
        for (size_t i = 0; i < mn; i++) bad += !((float)Wc[i] == W[i]);
        CHECK_MSG(bad == 0, "%s K=%d V=%d %dx%d: %zu decoded values differ from the CPU",
                  tqp_tcode_name(code), K, V, m, n, bad);
        for (int i = 0; i < m; i++) z[i] = NAN;
        CHECK(tqp_gpu_tmv_codes(op, x, z) == TQP_OK);
        double worst = 0;
        int finite = 1;
        for (int i = 0; i < m; i++) {
            double acc = 0, mag = 0;
            for (int j = 0; j < n; j++) {
                acc += Wc[(size_t)i * n + j] * x[j];
                mag += fabs(Wc[(size_t)i * n + j] * x[j]);
            }
            zref[i] = acc;
            if (!isfinite(z[i])) finite = 0;
            worst = fmax(worst, fabs(z[i] - acc) / (mag + 1e-300));
        }
        CHECK_MSG(finite, "%s: an output was not written", tqp_tcode_name(code));
        CHECK_MSG(worst < 2e-5, "%s K=%d V=%d %dx%d: relative error %.3g", tqp_tcode_name(code),
                  K, V, m, n, worst);
    }
    tqp_gpu_tmv_destroy(&op);
    tqp_tcq_destroy(&fam);
    tqp_trellis_destroy(&t);
    free(packed), free(x), free(z), free(W), free(Wc), free(zref);
}

/* E8P: the device decodes the CPU kernels' values bit for bit; the product agrees with the
 * float64 reference of the codebook's points. */
static void one_e8p(int bits, int m, int n)
{
    double rs = tqp_e8p_resid_scale(bits);
    size_t bytes = tqp_e8p_matrix_bytes(m, n, bits), mn = (size_t)m * n;
    uint8_t *packed = malloc(bytes);
    float *x = malloc(sizeof(float) * n), *z = malloc(sizeof(float) * m);
    float *W = malloc(sizeof(float) * mn), *Wcpu = malloc(sizeof(float) * mn);
    double *Wd = malloc(sizeof(double) * mn), *zref = malloc(sizeof(double) * m);
    for (size_t i = 0; i < bytes; i++) packed[i] = (uint8_t)(tqp_splitmix64(&seed_) >> 56);
    for (int i = 0; i < n; i++)
        x[i] = (float)((double)(tqp_splitmix64(&seed_) >> 11) / 9007199254740992.0 * 2 - 1);
    tqp_emv *cpu = NULL;
    CHECK(tqp_emv_create(packed, m, n, bits, rs, 1.0, NULL, TQP_TMV_REFERENCE, &cpu) == TQP_OK);
    if (cpu) CHECK(tqp_emv_decode(cpu, Wcpu, 1) == TQP_OK);
    tqp_emv_destroy(&cpu);
    CHECK(tqp_emv_reference(packed, m, n, bits, rs, 1.0, NULL, x, Wd, zref) == TQP_OK);
    tqp_gpu_emv *op = NULL;
    tqp_status s = tqp_gpu_emv_create(packed, m, n, bits, rs, &op);
    CHECK_MSG(s == TQP_OK, "%s", tqp_error_message());
    if (s == TQP_OK) {
        for (size_t i = 0; i < mn; i++) W[i] = NAN;
        CHECK(tqp_gpu_emv_decode(op, W) == TQP_OK);
        CHECK_MSG(!memcmp(W, Wcpu, sizeof(float) * mn), "e8p %d bits %dx%d: decoded values "
                  "differ from the CPU", bits, m, n);
        for (int i = 0; i < m; i++) z[i] = NAN;
        CHECK(tqp_gpu_emv_codes(op, x, z) == TQP_OK);
        double worst = 0;
        int finite = 1;
        for (int i = 0; i < m; i++) {
            double mag = 0;
            for (int j = 0; j < n; j++) mag += fabs(Wd[(size_t)i * n + j] * x[j]);
            if (!isfinite(z[i])) finite = 0;
            worst = fmax(worst, fabs(z[i] - zref[i]) / (mag + 1e-300));
        }
        CHECK_MSG(finite, "e8p: an output was not written");
        CHECK_MSG(worst < 2e-5, "e8p %d bits %dx%d: relative error %.3g", bits, m, n, worst);
    }
    tqp_gpu_emv_destroy(&op);
    free(packed), free(x), free(z), free(W), free(Wcpu), free(Wd), free(zref);
}

int main(void)
{
    char desc[256];
    if (!tqp_gpu_available(desc, sizeof desc)) {
        printf("test_gpu skipped: %s\n", desc);
        return 77;
    }
    printf("GPU: %s\n", desc);
    for (int K = 1; K <= 4; K++) {
        one(TQP_TCODE_1MAD, 16, K, 1, 272, 48);
        one(TQP_TCODE_3INST, 16, K, 1, 272, 48);
        one(TQP_TCODE_HYB, 16, K, 2, 272, 48);
        one(TQP_TCODE_LUT, 12, K, 1, 256, 32);
        one(TQP_TCODE_LUT, 12, K, 2, 256, 32);
        if (K >= 2) {
            one_e8p(K, 272, 48);
            one_e8p(K, 13, 21); /* a padded band, a narrower block */
            one_e8p(K, 1000, 172);
        }
    }
    one(TQP_TCODE_1MAD, 16, 2, 1, 1024, 4096); /* many column splits */
    /* refused: edge tiles */
    tqp_trellis *t = NULL;
    tqp_gpu_tmv *op = NULL;
    uint8_t codes[4096] = {0};
    tqp_trellis_create(16, 2, 1, 256, TQP_TCODE_1MAD, NULL, &t);
    CHECK(tqp_gpu_tmv_create(t, codes, 40, 24, &op) != TQP_OK);
    tqp_trellis_destroy(&t);
    return check_done();
}
