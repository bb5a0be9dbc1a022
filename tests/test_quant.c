/* Quantizers and rounding against independent float64 references: LDLQ's proxy loss equals
 * sum_k D_kk η_k^2 and its Ŵ equals a plain GPTQ (inverse-Hessian) implementation run on the
 * reversed column order; LDLQ beats nearest rounding on correlated SPD Hessians; the RHT and
 * the Kronecker rotation leave the proxy loss invariant and invert; packing round-trips; the
 * default scale reaches the Lloyd-Max-uniform MSE on Gaussian data. */
#include "check.h"
#include "testutil.h"
#include "tqp/quant.h"
#include "tqp/rot.h"

/* Lower Cholesky factor C of A (n, n), plain loops. */
static int cholesky(const double *A, int n, double *C)
{
    memset(C, 0, sizeof(double) * (size_t)n * n);
    for (int j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (int t = 0; t < j; t++) d -= C[j * n + t] * C[j * n + t];
        if (d <= 0) return -1;
        C[j * n + j] = sqrt(d);
        for (int i = j + 1; i < n; i++) {
            double v = A[i * n + j];
            for (int t = 0; t < j; t++) v -= C[i * n + t] * C[j * n + t];
            C[i * n + j] = v / C[j * n + j];
        }
    }
    return 0;
}

/* Inverse of an SPD matrix through its Cholesky factor (columns of C^-T C^-1). */
static void spd_inverse(const double *A, int n, double *Ai)
{
    double *C = malloc(sizeof(double) * n * n), *x = malloc(sizeof(double) * n);
    cholesky(A, n, C);
    for (int c = 0; c < n; c++) {
        for (int i = 0; i < n; i++) { /* C y = e_c */
            double v = i == c;
            for (int t = 0; t < i; t++) v -= C[i * n + t] * x[t];
            x[i] = v / C[i * n + i];
        }
        for (int i = n - 1; i >= 0; i--) { /* C^T z = y */
            double v = x[i];
            for (int t = i + 1; t < n; t++) v -= C[t * n + i] * x[t];
            x[i] = v / C[i * n + i];
        }
        for (int i = 0; i < n; i++) Ai[i * n + c] = x[i];
    }
    free(C), free(x);
}

/* H = X^T X / T + eps I for T samples of correlated inputs (a random mixing of N(0,1)). */
static void random_spd(int n, uint64_t *s, double corr, double *H)
{
    int T = 4 * n;
    double *M = malloc(sizeof(double) * n * n), *X = malloc(sizeof(double) * T * n);
    for (int i = 0; i < n * n; i++) M[i] = tu_normal(s) * corr + (i % (n + 1) == 0);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < n; j++) {
            double v = 0;
            for (int k = 0; k < n; k++) v += M[j * n + k] * ((k * 7 + t) % 5 - 2.0 + tu_normal(s));
            X[t * n + j] = v;
        }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double v = 0;
            for (int t = 0; t < T; t++) v += X[t * n + i] * X[t * n + j];
            H[i * n + j] = v / T + (i == j) * 1e-3;
        }
    free(M), free(X);
}

/* Lu = C diag(C)^-1 and D = diag(C)^2 from the Cholesky factor of H. */
static void ldl(const double *H, int n, double *Lu, double *D)
{
    cholesky(H, n, Lu);
    for (int k = 0; k < n; k++) D[k] = Lu[k * n + k] * Lu[k * n + k];
    for (int i = 0; i < n; i++)
        for (int k = 0; k <= i; k++) Lu[i * n + k] /= sqrt(D[k]);
}

static double proxy(const double *H, const double *W, const double *What, int m, int n)
{
    double *d = malloc(sizeof(double) * n), *sc = malloc(sizeof(double) * n), l = 0;
    for (int r = 0; r < m; r++) {
        for (int k = 0; k < n; k++) d[k] = What[r * n + k] - W[r * n + k];
        double v = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) v += d[i] * H[i * n + j] * d[j];
        l += v;
    }
    free(d), free(sc);
    return l;
}

/* Plain GPTQ (Frantar et al.), first to last column, on the inverse Hessian's upper Cholesky
 * factor, with the same codebook. */
static void gptq_row(const tqp_codebook *cb, int bits, const double *Hinv, int n, const double *w0,
                     double *what)
{
    /* U upper with Hinv = U^T U: the transpose of the lower Cholesky factor */
    double *C = malloc(sizeof(double) * n * n), *U = malloc(sizeof(double) * n * n);
    double *w = malloc(sizeof(double) * n);
    cholesky(Hinv, n, C);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) U[i * n + j] = C[j * n + i];
    memcpy(w, w0, sizeof(double) * n);
    for (int j = 0; j < n; j++) {
        double v;
        cb->quantize(w[j], bits, &v);
        what[j] = v;
        double err = (w[j] - v) / U[j * n + j];
        for (int t = j + 1; t < n; t++) w[t] -= err * U[j * n + t];
    }
    free(C), free(U), free(w);
}

static void test_ldlq(void)
{
    const tqp_codebook *cb = tqp_codebook_find("scalar");
    int n = 40, m = 12, bits = 8;
    uint64_t s = 11;
    double *H = malloc(sizeof(double) * n * n), *Lu = malloc(sizeof(double) * n * n);
    double *D = malloc(sizeof(double) * n), *W = malloc(sizeof(double) * m * n);
    double *Wh = malloc(sizeof(double) * m * n), *Wg = malloc(sizeof(double) * m * n);
    double *sc = malloc(sizeof(double) * 2 * n), *eta = malloc(sizeof(double) * n);
    double *Hr = malloc(sizeof(double) * n * n), *Hri = malloc(sizeof(double) * n * n);
    double *wr = malloc(sizeof(double) * n), *gr = malloc(sizeof(double) * n);
    uint32_t *codes = malloc(sizeof(uint32_t) * n);
    random_spd(n, &s, 0.3, H);
    ldl(H, n, Lu, D);
    for (int i = 0; i < m * n; i++) W[i] = 30 * tu_normal(&s) / 3;
    double bound = 0, eta_max = 0;
    for (int r = 0; r < m; r++) {
        tqp_quant_row(cb, bits, TQP_ROUND_LDLQ, Lu, n, W + r * n, codes, Wh + r * n, sc);
        for (int k = 0; k < n; k++) { /* η = (ŵ - w) Lu */
            double v = 0;
            for (int j = k; j < n; j++) v += (Wh[r * n + j] - W[r * n + j]) * Lu[j * n + k];
            eta[k] = v;
            bound += D[k] * v * v;
            eta_max = fmax(eta_max, fabs(v));
        }
        for (int k = 0; k < n; k++) CHECK(fabs(cb->decode(codes[k], bits) - Wh[r * n + k]) == 0);
    }
    CHECK_MSG(eta_max <= 0.5 + 1e-9, "rounding error %.6f exceeds half a step", eta_max);
    CHECK_NEAR(proxy(H, W, Wh, m, n), bound, 1e-9);

    /* GPTQ on the reversed column order */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) Hr[i * n + j] = H[(n - 1 - i) * n + (n - 1 - j)];
    spd_inverse(Hr, n, Hri);
    int same = 0;
    for (int r = 0; r < m; r++) {
        for (int k = 0; k < n; k++) wr[k] = W[r * n + n - 1 - k];
        gptq_row(cb, bits, Hri, n, wr, gr);
        for (int k = 0; k < n; k++) {
            Wg[r * n + n - 1 - k] = gr[k];
            same += gr[k] == Wh[r * n + n - 1 - k];
        }
    }
    CHECK_MSG(same == m * n, "GPTQ and LDLQ agree on %d of %d weights", same, m * n);
    CHECK_NEAR(proxy(H, W, Wg, m, n), proxy(H, W, Wh, m, n), 1e-9);
    free(H), free(Lu), free(D), free(W), free(Wh), free(Wg), free(sc), free(eta), free(Hr);
    free(Hri), free(wr), free(gr), free(codes);
}

/* LDLQ <= nearest in proxy loss, at 2, 3 and 4 bits, on correlated random Hessians. */
static void test_ldlq_beats_nearest(void)
{
    const tqp_codebook *cb = tqp_codebook_find("scalar");
    int n = 64, m = 16, wins = 0, cases = 0;
    uint64_t s = 5;
    double *H = malloc(sizeof(double) * n * n), *Lu = malloc(sizeof(double) * n * n);
    double *D = malloc(sizeof(double) * n), *W = malloc(sizeof(double) * m * n);
    double *A = malloc(sizeof(double) * m * n), *B = malloc(sizeof(double) * m * n);
    double *sc = malloc(sizeof(double) * 2 * n);
    uint32_t *codes = malloc(sizeof(uint32_t) * n);
    for (int trial = 0; trial < 6; trial++) {
        random_spd(n, &s, 0.5, H);
        ldl(H, n, Lu, D);
        for (int bits = 2; bits <= 4; bits++) {
            for (int i = 0; i < m * n; i++) W[i] = tu_normal(&s);
            double sc_ = tqp_quant_scale(W, (size_t)m * n, cb, bits, cb->default_rho(bits));
            for (int i = 0; i < m * n; i++) W[i] /= sc_;
            for (int r = 0; r < m; r++) {
                tqp_quant_row(cb, bits, TQP_ROUND_LDLQ, Lu, n, W + r * n, codes, A + r * n, sc);
                tqp_quant_row(cb, bits, TQP_ROUND_NEAREST, Lu, n, W + r * n, codes, B + r * n, sc);
            }
            double la = proxy(H, W, A, m, n), lb = proxy(H, W, B, m, n);
            wins += la <= lb;
            cases++;
            CHECK_MSG(la <= lb, "trial %d, %d bits: LDLQ %.4g > nearest %.4g", trial, bits, la, lb);
        }
    }
    CHECK(wins == cases);
    free(H), free(Lu), free(D), free(W), free(A), free(B), free(sc), free(codes);
}

static void test_rotation(tqp_rot_kind kind, int m, int n)
{
    uint64_t s = 99;
    double *H = malloc(sizeof(double) * n * n), *W = malloc(sizeof(double) * m * n);
    double *Q = malloc(sizeof(double) * m * n), *W0 = malloc(sizeof(double) * m * n);
    random_spd(n, &s, 0.4, H);
    for (int i = 0; i < m * n; i++) {
        W0[i] = W[i] = tu_normal(&s);
        Q[i] = W[i] + 0.1 * tu_normal(&s);
    }
    double before = proxy(H, W, Q, m, n);
    tqp_rot r;
    CHECK(tqp_rot_create(kind, m, n, 1234, 5678, &r) == TQP_OK);
    CHECK(tqp_rot_weights(&r, W, 0) == TQP_OK);
    CHECK(tqp_rot_weights(&r, Q, 0) == TQP_OK);
    CHECK(tqp_rot_hessian(&r, H) == TQP_OK);
    double after = proxy(H, W, Q, m, n);
    CHECK_MSG(fabs(after - before) <= 1e-10 * before, "%s %dx%d: proxy %.15g -> %.15g",
              tqp_rot_name(kind), m, n, before, after);
    double moved = 0, back = 0;
    for (int i = 0; i < m * n; i++) moved = fmax(moved, fabs(W[i] - W0[i]));
    CHECK(tqp_rot_weights(&r, W, 1) == TQP_OK);
    for (int i = 0; i < m * n; i++) back = fmax(back, fabs(W[i] - W0[i]));
    CHECK_MSG(moved > 0.1 && back < 1e-12, "%s: moved %.3g, inverse error %.3g",
              tqp_rot_name(kind), moved, back);
    tqp_rot_destroy(&r);
    free(H), free(W), free(Q), free(W0);
}

static void test_pack(void)
{
    uint64_t s = 3;
    for (int bits = 1; bits <= 8; bits++) {
        size_t count = 1001;
        uint32_t *c = malloc(sizeof(uint32_t) * count), *d = malloc(sizeof(uint32_t) * count);
        uint8_t *p = malloc(tqp_pack_bytes(count, bits));
        for (size_t i = 0; i < count; i++) c[i] = (uint32_t)(tu_next(&s) & ((1u << bits) - 1));
        tqp_pack_codes(c, count, bits, p);
        tqp_unpack_codes(p, count, bits, d);
        CHECK(!memcmp(c, d, sizeof(uint32_t) * count));
        CHECK(tqp_pack_bytes(count, bits) == (count * bits + 7) / 8);
        free(c), free(d), free(p);
    }
}

/* The Gaussian ρ on N(0,1) data: the MSE of the optimal uniform quantizer (Max 1960); it is
 * also the default (results/scale_rho.md). */
static void test_gaussian_mse(void)
{
    static const double max_mse[] = {0, 0.3634, 0.1188, 0.03744, 0.01154};
    const tqp_codebook *cb = tqp_codebook_find("scalar");
    size_t n = 1 << 18;
    double *x = malloc(sizeof(double) * n);
    uint64_t s = 8;
    for (size_t i = 0; i < n; i++) x[i] = tu_normal(&s);
    for (int bits = 1; bits <= 4; bits++) {
        CHECK(cb->default_rho(bits) == cb->gaussian_rho(bits));
        double sc = tqp_quant_scale(x, n, cb, bits, cb->gaussian_rho(bits)), e = 0, v;
        for (size_t i = 0; i < n; i++) {
            cb->quantize(x[i] / sc, bits, &v);
            e += (v * sc - x[i]) * (v * sc - x[i]);
        }
        CHECK_MSG(fabs(e / n - max_mse[bits]) < 0.03 * max_mse[bits], "%d bits: MSE %.5f vs %.5f",
                  bits, e / n, max_mse[bits]);
    }
    CHECK(tqp_codebook_find("nope") == NULL);
    free(x);
}

int main(void)
{
    test_ldlq();
    test_ldlq_beats_nearest();
    test_rotation(TQP_ROT_RHT, 24, 20);
    test_rotation(TQP_ROT_RHT, 172, 64);
    test_rotation(TQP_ROT_RHT, 64, 172);
    test_rotation(TQP_ROT_KRON, 30, 172);
    test_rotation(TQP_ROT_KRON, 64, 36);
    test_pack();
    test_gaussian_mse();
    return check_done();
}
