/* The fused decode + matrix-vector product on E8P codes (e8mv.h) against a float64 reference
 * built from independent pieces (tqp_e8p_decode_matrix, the inverse rotation, a plain double
 * dot product), for 2, 3 and 4 bits:
 *  - the plain C kernel decodes the codebook's points (bit for bit at 2 bits, within float
 *    rounding of the float64 residual sum at 3 and 4), and every SIMD kernel decodes exactly
 *    the plain C kernel's values (random codes: every 16-bit value is a code);
 *  - y = W x within float tolerance of the reference for each kernel, every output written
 *    (outputs poisoned with NaN first), 2 threads give the bytes of 1;
 *  - every shape remainder: rows not a multiple of 8 (a padded last band), columns not a
 *    multiple of 8 (a narrower last block), single rows and columns;
 *  - the check can fail: one changed code byte moves the result beyond the tolerance;
 *  - a kernel that cannot run is refused with a reason. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mvutil.h"
#include "tqp/e8mv.h"
#include "tqp/e8p.h"
#include "tqp/rng.h"

static uint64_t seed_ = 424242;

/* The plain C kernel's decoded values of these codes (the SIMD kernels' ground truth). */
static float *reference_decode(const uint8_t *packed, int m, int n, int bits, double rs)
{
    tqp_emv *op = NULL;
    float *W = malloc(sizeof(float) * (size_t)m * n);
    CHECK(tqp_emv_create(packed, m, n, bits, rs, 1.0, NULL, TQP_TMV_REFERENCE, &op) == TQP_OK);
    if (op) CHECK(tqp_emv_decode(op, W, 1) == TQP_OK);
    tqp_emv_destroy(&op);
    return W;
}

static void one(int bits, int m, int n, tqp_rot_kind rk, tqp_tmv_kernel kernel)
{
    double rs = bits == 2 ? 0 : tqp_e8p_resid_scale(bits);
    size_t bytes = tqp_e8p_matrix_bytes(m, n, bits);
    uint8_t *packed = malloc(bytes);
    mv_random_bytes(&seed_, packed, bytes);
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * m);
    float *y2 = malloc(sizeof(float) * m), *Wf = malloc(sizeof(float) * (size_t)m * n);
    double *W = malloc(sizeof(double) * (size_t)m * n), *yref = malloc(sizeof(double) * m);
    mv_random_floats(&seed_, x, n);
    double scale = -0.0377;
    tqp_rot rot;
    CHECK(tqp_rot_create(rk, m, n, 0x3131 + (uint64_t)m, 0x4242 + (uint64_t)n, &rot) == TQP_OK);
    tqp_emv *op = NULL;
    tqp_status s = tqp_emv_create(packed, m, n, bits, rs, scale, &rot, kernel, &op);
    CHECK_MSG(s == TQP_OK, "create %d bits %dx%d", bits, m, n);
    if (s != TQP_OK) goto out;
    const char *kname = tqp_emv_kernel_name(op);
    int i16 = !strcmp(kname, "avx512-i16");
    if (kernel == TQP_TMV_AVX512) /* the int16 form wherever this CPU and the bits allow it */
        CHECK_MSG(i16 == !tqp_emv_i16_unavailable(bits), "%d bits: kernel %s", bits, kname);

    /* decode */
    for (size_t i = 0; i < (size_t)m * n; i++) Wf[i] = NAN;
    CHECK(tqp_emv_decode(op, Wf, 1) == TQP_OK);
    tqp_e8p_decode_matrix(packed, m, n, bits, rs, W);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)m * n; i++)
        bad += bits == 2 ? !((float)W[i] == Wf[i])
                         : !(fabs(Wf[i] - W[i]) <= 0x1p-22 * fmax(1, fabs(W[i])));
    CHECK_MSG(bad == 0, "%s %d bits %dx%d: %zu decoded values off the codebook's", kname, bits,
              m, n, bad);
    if (kernel != TQP_TMV_REFERENCE) {
        float *Wr = reference_decode(packed, m, n, bits, rs);
        CHECK_MSG(!memcmp(Wr, Wf, sizeof(float) * (size_t)m * n),
                  "%s %d bits %dx%d: decoded values differ from the plain C kernel's", kname,
                  bits, m, n);
        for (size_t i = 0; i < (size_t)m * n; i++) Wf[i] = NAN;
        CHECK(tqp_emv_decode(op, Wf, 2) == TQP_OK);
        CHECK_MSG(!memcmp(Wr, Wf, sizeof(float) * (size_t)m * n), "%s: 2-thread decode", kname);
        free(Wr);
    }

    /* y = W x */
    CHECK(tqp_emv_reference(packed, m, n, bits, rs, scale, &rot, x, W, yref) == TQP_OK);
    for (int i = 0; i < m; i++) y[i] = NAN, y2[i] = NAN;
    tqp_emv_apply(op, x, y, 1);
    tqp_emv_apply(op, x, y2, 2);
    int finite;
    double err = mv_worst_error(y, yref, W, x, m, n, scale, &finite);
    CHECK_MSG(finite, "%s: an output was not written", kname);
    /* the int16 kernel rounds the activations to 15 bits once per product */
    CHECK_MSG(err < (i16 ? 1e-4 : 2e-5), "%s %d bits %dx%d rot %s: relative error %.3g", kname,
              bits, m, n, tqp_rot_name(rk), err);
    if (getenv("TQP_TEST_VERBOSE"))
        printf("%s %d bits %dx%d: relative error %.3g\n", kname, bits, m, n, err);
    CHECK_MSG(!memcmp(y, y2, sizeof(float) * m), "%s: 2 threads differ from 1", kname);

    /* the comparison can fail: one changed code byte, the sign byte of the middle code, in an
     * odd number of bits: its shift changes, which moves every coordinate */
    size_t mid = (size_t)bits * (bytes / (size_t)bits / 2);
    tqp_emv *op2 = NULL;
    packed[mid] ^= 0x5b;
    CHECK(tqp_emv_create(packed, m, n, bits, rs, scale, &rot, kernel, &op2) == TQP_OK);
    packed[mid] ^= 0x5b;
    if (op2) {
        tqp_emv_apply(op2, x, y2, 1);
        double e1 = 0, e2 = 0;
        for (int i = 0; i < m; i++) {
            e1 = fmax(e1, fabs(y[i] - yref[i]));
            e2 = fmax(e2, fabs(y2[i] - yref[i]));
        }
        CHECK_MSG(e2 > (i16 ? 10 : 100) * e1, "%s %d bits %dx%d: a changed code byte moved y by %.3g, "
                  "rounding %.3g", kname, bits, m, n, e2, e1);
        tqp_emv_destroy(&op2);
    }
    tqp_emv_destroy(&op);
out:
    tqp_rot_destroy(&rot);
    free(packed), free(x), free(y), free(y2), free(Wf), free(W), free(yref);
}

static void all_shapes(tqp_tmv_kernel kernel)
{
    for (int bits = 2; bits <= 4; bits++) {
        one(bits, 64, 128, TQP_ROT_RHT, kernel);
        one(bits, 8, 8, TQP_ROT_NONE, kernel);
        one(bits, 13, 21, TQP_ROT_NONE, kernel); /* a padded band, a block of 5 columns */
        one(bits, 172, 64, TQP_ROT_RHT, kernel); /* 21.5 bands */
        one(bits, 64, 172, TQP_ROT_RHT, kernel); /* a block of 4 columns */
        one(bits, 1, 9, TQP_ROT_NONE, kernel);
        one(bits, 7, 1, TQP_ROT_NONE, kernel);
        one(bits, 9, 16408, TQP_ROT_NONE, kernel); /* 2051 blocks: past a 2048-block int32 sum */
        one(bits, 56, 24, TQP_ROT_NONE, kernel);   /* 7 bands: groups of 4, 2 and 1 */
    }
}

int main(void)
{
    all_shapes(TQP_TMV_REFERENCE);
    const char *why = tqp_emv_avx512_unavailable();
    if (why) printf("avx512 kernel skipped: %s\n", why);
    else all_shapes(TQP_TMV_AVX512);
    const char *why16 = tqp_emv_i16_unavailable(2);
    if (why16) printf("int16 kernel skipped: %s\n", why16);
    else { /* and the float avx512 kernel at 2 and 4 bits, as CPUs without VBMI/VNNI run it */
        setenv("TQP_NO_I16", "1", 1);
        CHECK(tqp_emv_i16_unavailable(2) != NULL);
        all_shapes(TQP_TMV_AVX512);
        unsetenv("TQP_NO_I16");
    }
    const char *why2 = tqp_emv_avx2_unavailable();
    if (why2) printf("avx2 kernel skipped: %s\n", why2);
    else all_shapes(TQP_TMV_AVX2);

    /* refusals: bad bits, a missing stage scale; without AVX-512 AUTO takes AVX2 */
    tqp_emv *op = NULL;
    uint8_t codes[512] = {0};
    CHECK(tqp_emv_create(codes, 8, 8, 5, 1.0, 1.0, NULL, TQP_TMV_AUTO, &op) != TQP_OK);
    CHECK(tqp_emv_create(codes, 8, 8, 3, 0.0, 1.0, NULL, TQP_TMV_AUTO, &op) != TQP_OK);
    CHECK(tqp_emv_create(codes, 0, 8, 2, 0.0, 1.0, NULL, TQP_TMV_AUTO, &op) != TQP_OK);
    setenv("TQP_NO_AVX512", "1", 1);
    CHECK(tqp_emv_avx512_unavailable() != NULL);
    CHECK(tqp_emv_create(codes, 8, 8, 2, 0.0, 1.0, NULL, TQP_TMV_AVX512, &op) != TQP_OK);
    CHECK(tqp_emv_create(codes, 16, 16, 2, 0.0, 1.0, NULL, TQP_TMV_AUTO, &op) == TQP_OK);
    if (op) CHECK(!strcmp(tqp_emv_kernel_name(op), why2 ? "reference" : "avx2"));
    tqp_emv_destroy(&op);
    return check_done();
}
