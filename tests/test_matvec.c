/* The fused decode + matrix-vector product (matvec.h) against a float64 reference built from
 * independent pieces (tqp_tcq_decode, the inverse rotation, a plain double dot product):
 *  - decoding with the operator's kernel reproduces the tcq decoder bit for bit, for every
 *    code and K (random streams: every bit pattern is a valid circular stream);
 *  - y = W x within float tolerance of the reference for each kernel, every output written
 *    (outputs poisoned with NaN first), threads give identical bytes;
 *  - the check can fail: one changed code byte moves the result beyond the tolerance;
 *  - the avx512 kernel is refused with a reason where it cannot run. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "mvutil.h"
#include "tqp/matvec.h"
#include "tqp/rng.h"
#include "tqp/tcq.h"

static uint64_t seed_ = 12345;


static void one(tqp_tcode code, int L, int K, int V, int m, int n, tqp_rot_kind rk,
                tqp_tmv_kernel kernel)
{
    tqp_trellis *t = NULL;
    CHECK(tqp_trellis_create(L, K, V, 256, code, NULL, &t) == TQP_OK);
    tqp_tcq *fam = NULL;
    CHECK(tqp_tcq_create(L, K, V, code, NULL, &fam) == TQP_OK);
    size_t bytes = tqp_tcq_matrix_bytes(fam, m, n);
    uint8_t *packed = malloc(bytes);
    mv_random_bytes(&seed_, packed, bytes);
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * m);
    float *y2 = malloc(sizeof(float) * m), *Wf = malloc(sizeof(float) * (size_t)m * n);
    double *W = malloc(sizeof(double) * (size_t)m * n), *yref = malloc(sizeof(double) * m);
    double *Wc = malloc(sizeof(double) * (size_t)m * n);
    mv_random_floats(&seed_, x, n);
    double scale = 0.0123;
    tqp_rot rot;
    CHECK(tqp_rot_create(rk, m, n, 0x1111 + (uint64_t)m, 0x2222 + (uint64_t)n, &rot) == TQP_OK);
    tqp_tmv *op = NULL;
    tqp_status s = tqp_tmv_create(t, packed, m, n, scale, &rot, kernel, &op);
    CHECK_MSG(s == TQP_OK, "create %s K=%d V=%d %dx%d", tqp_tcode_name(code), K, V, m, n);
    if (s != TQP_OK) goto out;
    const char *kname = tqp_tmv_kernel_name(op);

    /* decode: the kernel's values are the tcq decoder's, bit for bit */
    CHECK(tqp_tcq_decode(fam, packed, m, n, Wc) == TQP_OK);
    for (size_t i = 0; i < (size_t)m * n; i++) Wf[i] = NAN;
    tqp_tmv_decode(op, Wf, 1);
    size_t bad = 0;
    for (size_t i = 0; i < (size_t)m * n; i++) bad += !((float)Wc[i] == Wf[i]);
    CHECK_MSG(bad == 0, "%s %s K=%d V=%d %dx%d: %zu decoded values differ", kname,
              tqp_tcode_name(code), K, V, m, n, bad);

    /* y = W x */
    CHECK(tqp_tmv_reference(t, packed, m, n, scale, &rot, x, W, yref) == TQP_OK);
    for (int i = 0; i < m; i++) y[i] = NAN, y2[i] = NAN;
    tqp_tmv_apply(op, x, y, 1);
    tqp_tmv_apply(op, x, y2, 2);
    int finite;
    double err = mv_worst_error(y, yref, W, x, m, n, scale, &finite);
    CHECK_MSG(finite, "%s: an output was not written", kname);
    /* the integer kernels round the activations to 16 bits (max |x| / 32767 or / 32639) */
    int i16 = !strcmp(kname, "avx512-i16") || !strcmp(kname, "avx512-gf8");
    if (kernel == TQP_TMV_AVX512 && code == TQP_TCODE_GF8 && L == 16 && (K == 2 || K == 4) &&
        !tqp_tmv_gf8_unavailable(t))
        CHECK_MSG(!strcmp(kname, "avx512-gf8"), "gf8 at K = %d ran in %s", K, kname);
    CHECK_MSG(err < (i16 ? 1e-4 : 2e-5), "%s %s K=%d V=%d %dx%d rot %s: relative error %.3g", kname,
              tqp_tcode_name(code), K, V, m, n, tqp_rot_name(rk), err);
    CHECK_MSG(!memcmp(y, y2, sizeof(float) * m), "%s: 2 threads differ from 1", kname);

    /* the comparison can fail: change one code byte (the middle of the matrix); the result
     * must move by far more than the kernel's own rounding error */
    tqp_tmv *op2 = NULL;
    packed[bytes / 2] ^= 0x5a;
    CHECK(tqp_tmv_create(t, packed, m, n, scale, &rot, kernel, &op2) == TQP_OK);
    packed[bytes / 2] ^= 0x5a;
    if (op2) {
        tqp_tmv_apply(op2, x, y2, 1);
        double e1 = 0, e2 = 0;
        for (int i = 0; i < m; i++) {
            e1 = fmax(e1, fabs(y[i] - yref[i]));
            e2 = fmax(e2, fabs(y2[i] - yref[i]));
        }
        CHECK_MSG(e2 > (i16 ? 10 : 100) * e1, "%s: a changed code byte moved y by %.3g, rounding %.3g", kname,
                  e2, e1);
        tqp_tmv_destroy(&op2);
    }
    tqp_tmv_destroy(&op);
out:
    tqp_rot_destroy(&rot);
    tqp_tcq_destroy(&fam);
    tqp_trellis_destroy(&t);
    free(packed), free(x), free(y), free(y2), free(Wf), free(W), free(yref), free(Wc);
}

static void all_codes(tqp_tmv_kernel kernel, int m, int n)
{
    for (int K = 1; K <= 4; K++) {
        one(TQP_TCODE_1MAD, 16, K, 1, m, n, TQP_ROT_RHT, kernel);
        one(TQP_TCODE_3INST, 16, K, 1, m, n, TQP_ROT_RHT, kernel);
        one(TQP_TCODE_HYB, 16, K, 2, m, n, TQP_ROT_RHT, kernel);
        one(TQP_TCODE_LUT, 12, K, 1, m, n, TQP_ROT_NONE, kernel);
        one(TQP_TCODE_LUT, 12, K, 2, m, n, TQP_ROT_KRON, kernel);
        one(TQP_TCODE_1MUL, 16, K, 1, m, n, TQP_ROT_RHT, kernel); /* avx512: the int16 kernel */
        one(TQP_TCODE_GF8, 16, K, 1, m, n, TQP_ROT_RHT, kernel);  /* K = 2, 4: the byte kernel */
    }
}

int main(void)
{
    /* the plain C kernel, on whole and edge tiles */
    all_codes(TQP_TMV_REFERENCE, 64, 48);
    one(TQP_TCODE_1MAD, 16, 2, 1, 40, 24, TQP_ROT_RHT, TQP_TMV_AUTO); /* edges: reference */
    one(TQP_TCODE_HYB, 16, 3, 2, 172, 64, TQP_ROT_RHT, TQP_TMV_REFERENCE);

    tqp_trellis *t = NULL;
    tqp_trellis_create(16, 2, 1, 256, TQP_TCODE_1MAD, NULL, &t);
    const char *why = tqp_tmv_avx512_unavailable(t, 256, 256);
    if (why) {
        printf("avx512 kernel skipped: %s\n", why);
    } else {
        /* one group, a partial group (17 bands), and two groups with 12 column blocks */
        all_codes(TQP_TMV_AVX512, 256, 32);
        all_codes(TQP_TMV_AVX512, 272, 48);
        one(TQP_TCODE_1MAD, 16, 2, 1, 512, 192, TQP_ROT_RHT, TQP_TMV_AVX512);
        one(TQP_TCODE_3INST, 16, 2, 1, 512, 192, TQP_ROT_RHT, TQP_TMV_AUTO);
        one(TQP_TCODE_1MAD, 10, 3, 1, 256, 64, TQP_ROT_RHT, TQP_TMV_AVX512); /* L < 16 */
        /* 1mul's int16 layout: a single column block (the pair's second tile absent), three
         * groups, L < 16 (the gathering kernel) */
        one(TQP_TCODE_1MUL, 16, 2, 1, 528, 16, TQP_ROT_RHT, TQP_TMV_AVX512);
        one(TQP_TCODE_1MUL, 16, 4, 1, 512, 192, TQP_ROT_KRON, TQP_TMV_AUTO);
        one(TQP_TCODE_1MUL, 12, 2, 1, 256, 64, TQP_ROT_NONE, TQP_TMV_AVX512);
        /* gf8's byte layout (K = 2): groups of 8 bands, partial (1 band, 9 bands, 33 bands), one
         * column block, more column blocks than a segment of int32 sums (2048) */
        one(TQP_TCODE_GF8, 16, 2, 1, 16, 16, TQP_ROT_NONE, TQP_TMV_AVX512);
        one(TQP_TCODE_GF8, 16, 2, 1, 144, 96, TQP_ROT_KRON, TQP_TMV_AVX512);
        one(TQP_TCODE_GF8, 16, 2, 1, 528, 16, TQP_ROT_RHT, TQP_TMV_AUTO);
        one(TQP_TCODE_GF8, 16, 2, 1, 32, 16 * 2049, TQP_ROT_NONE, TQP_TMV_AVX512);
        one(TQP_TCODE_GF8, 12, 2, 1, 256, 64, TQP_ROT_NONE, TQP_TMV_AVX512); /* L < 16 */
        /* K = 4: two halves of the tiles' rows, each chunk's predecessor in the other half */
        one(TQP_TCODE_GF8, 16, 4, 1, 16, 16, TQP_ROT_NONE, TQP_TMV_AVX512);
        one(TQP_TCODE_GF8, 16, 4, 1, 144, 96, TQP_ROT_KRON, TQP_TMV_AVX512);
        one(TQP_TCODE_GF8, 16, 4, 1, 32, 16 * 2049, TQP_ROT_NONE, TQP_TMV_AVX512);
        one(TQP_TCODE_GF8, 16, 3, 1, 144, 32, TQP_ROT_RHT, TQP_TMV_AVX512); /* K = 3: gathers */
        /* TQP_NO_I16: gf8 in the gathering avx512 kernel */
        setenv("TQP_NO_I16", "1", 1);
        one(TQP_TCODE_GF8, 16, 2, 1, 272, 48, TQP_ROT_RHT, TQP_TMV_AVX512);
        unsetenv("TQP_NO_I16");
    }
    const char *why2 = tqp_tmv_avx2_unavailable(t, 256, 256);
    if (why2) {
        printf("avx2 kernel skipped: %s\n", why2);
    } else {
        all_codes(TQP_TMV_AVX2, 256, 32);
        all_codes(TQP_TMV_AVX2, 272, 48); /* 17 bands: the second half of a group is empty */
        one(TQP_TCODE_1MAD, 16, 2, 1, 264 + 120, 192, TQP_ROT_RHT, TQP_TMV_AVX2);
        one(TQP_TCODE_1MAD, 10, 3, 1, 256, 64, TQP_ROT_RHT, TQP_TMV_AVX2); /* L < 16 */
    }
    /* refused with a reason: edge tiles */
    tqp_tmv *op = NULL;
    uint8_t codes[4096] = {0};
    CHECK(tqp_tmv_create(t, codes, 40, 24, 1.0, NULL, TQP_TMV_AVX512, &op) != TQP_OK);
    CHECK(tqp_tmv_create(t, codes, 40, 24, 1.0, NULL, TQP_TMV_AVX2, &op) != TQP_OK);
    CHECK(tqp_tmv_avx512_unavailable(t, 40, 24) != NULL);
    CHECK(tqp_tmv_avx2_unavailable(t, 40, 24) != NULL);
    /* without AVX-512, AUTO takes AVX2 where there is one */
    setenv("TQP_NO_AVX512", "1", 1);
    CHECK(tqp_tmv_create(t, codes, 32, 32, 1.0, NULL, TQP_TMV_AUTO, &op) == TQP_OK);
    if (op) CHECK(!strcmp(tqp_tmv_kernel_name(op), why2 ? "reference" : "avx2"));
    tqp_tmv_destroy(&op);
    tqp_trellis_destroy(&t);
    return check_done();
}
