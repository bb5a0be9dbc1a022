/* The reproducible BLAS (include/tqp/rblas.h) against its definition, written out here as plain
 * loops: every output element of dgemm, dsyrk, dgemv, ddot and dtrsm must equal, bit for bit,
 * the fma chain that the header specifies, for both kernels (AVX2 where the CPU has it, and the
 * plain C reference), every transposition, shapes from empty to several tiles with ragged
 * edges, leading dimensions larger than needed and the special alpha/beta values.  Then the
 * properties the factorization relies on: an element does not depend on the call's shape or its
 * place in it; dsyrk equals dgemm on its triangle and leaves the other alone; dgemm into a
 * zeroed buffer followed by daxpy equals the direct update (the two PBLAS presentations); dtrsm
 * on L^T equals dtrsm on an upper copy.  Accuracy against long double, the Fortran entry
 * points (which this executable exports: tqp_rblas_bound), their call counts and the
 * pass-through to the system BLAS.  Built with -ffp-contract=off.
 * Usage: test_rblas */
#include <cblas.h>
#include <stdint.h>

#include "check.h"
#include "testutil.h"
#include "tqp/rblas.h"

void dgemm_(const char *, const char *, const int *, const int *, const int *, const double *,
            const double *, const int *, const double *, const int *, const double *, double *,
            const int *);
void dsyrk_(const char *, const char *, const int *, const int *, const double *, const double *,
            const int *, const double *, double *, const int *);
void daxpy_(const int *, const double *, const double *, const int *, double *, const int *);
double ddot_(const int *, const double *, const int *, const double *, const int *);

static uint64_t seed = 12345;

static double *randv(size_t n)
{
    double *v = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = tu_normal(&seed);
    return v;
}

static double opel(const double *X, int ld, char t, int i, int k)
{
    return t == 'N' ? X[(size_t)k * ld + i] : X[(size_t)i * ld + k];
}

/* The definition: acc = fma chain from +0 over k ascending; alpha*acc + beta*c. */
static double def_elem(int K, double alpha, const double *A, int lda, char ta, const double *B,
                       int ldb, char tb, double beta, double c, int i, int j)
{
    if (alpha == 0.0 || K == 0) return beta == 0.0 ? 0.0 : beta * c;
    double acc = 0.0;
    for (int k = 0; k < K; k++) acc = fma(opel(A, lda, ta, i, k), opel(B, ldb, tb, k, j), acc);
    double t = alpha * acc;
    return beta == 0.0 ? t : t + beta * c;
}

static int same_bits(const double *a, const double *b, size_t n)
{
    return memcmp(a, b, sizeof(double) * n) == 0;
}

static void check_gemm_case(int m, int n, int K, char ta, char tb, double alpha, double beta)
{
    int lda = (ta == 'N' ? m : K) + 3, ldb = (tb == 'N' ? K : n) + 2, ldc = m + 5;
    int acols = ta == 'N' ? K : m, bcols = tb == 'N' ? n : K;
    double *A = randv((size_t)lda * (acols ? acols : 1)), *B = randv((size_t)ldb * (bcols ? bcols : 1));
    double *C0 = randv((size_t)ldc * (n ? n : 1)), *C = malloc(sizeof(double) * ldc * (n ? n : 1));
    double *D = malloc(sizeof(double) * ldc * (n ? n : 1));
    memcpy(D, C0, sizeof(double) * ldc * (n ? n : 1));
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++)
            D[(size_t)j * ldc + i] = def_elem(K, alpha, A, lda, ta, B, ldb, tb, beta,
                                              C0[(size_t)j * ldc + i], i, j);
    memcpy(C, C0, sizeof(double) * ldc * (n ? n : 1));
    tqp_rblas_dgemm(ta, tb, m, n, K, alpha, A, lda, B, ldb, beta, C, ldc);
    CHECK_MSG(same_bits(C, D, (size_t)ldc * (n ? n : 1)),
              "dgemm %c%c m=%d n=%d k=%d alpha=%g beta=%g (%s) differs from the definition", ta,
              tb, m, n, K, alpha, beta, tqp_rblas_kernel_name(tqp_rblas_active()));
    free(A), free(B), free(C0), free(C), free(D);
}

static void check_gemm(void)
{
    static const int sizes[] = {0, 1, 3, 4, 7, 8, 9, 13, 16, 33};
    static const double ab[][2] = {{1, 1}, {-1, 1}, {0.7, 0}, {1.7, -0.3}, {0, 2.3}, {-1, 0}};
    const char t[] = "NT";
    for (int a = 0; a < 10; a++)
        for (int b = 0; b < 10; b++)
            for (int x = 0; x < 4; x++) {
                int m = sizes[a], n = sizes[b], K = sizes[(a + b + x) % 10];
                const double *s = ab[(a + 2 * b + x) % 6];
                check_gemm_case(m, n, K, t[x & 1], t[x >> 1], s[0], s[1]);
            }
    check_gemm_case(301, 77, 32, 'N', 'T', -1, 1); /* several strips and panels */
    check_gemm_case(45, 300, 29, 'N', 'N', -1, 1);
    check_gemm_case(64, 64, 100, 'T', 'T', 1, 0);
}

/* An element's bits do not depend on the call's shape or the element's place in it. */
static void check_position(void)
{
    int m = 37, n = 21, K = 32, ld = 64;
    double *A = randv((size_t)ld * K), *B = randv((size_t)ld * K), *C = randv((size_t)ld * n);
    double *big = malloc(sizeof(double) * ld * n);
    memcpy(big, C, sizeof(double) * ld * n);
    tqp_rblas_dgemm('N', 'T', m, n, K, -1, A, ld, B, ld, 1, big, ld);
    int bad = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double c = C[(size_t)j * ld + i];
            tqp_rblas_dgemm('N', 'T', 1, 1, K, -1, A + i, ld, B + j, ld, 1, &c, 1);
            bad += memcmp(&c, &big[(size_t)j * ld + i], sizeof c) != 0;
        }
    CHECK_MSG(bad == 0, "%d elements differ between the 37 x 21 call and 1 x 1 calls", bad);
    /* a sub-block starting at an odd row and column */
    double *sub = malloc(sizeof(double) * ld * n);
    memcpy(sub, C, sizeof(double) * ld * n);
    tqp_rblas_dgemm('N', 'T', m - 5, n - 3, K, -1, A + 5, ld, B + 3, ld, 1, sub + 3 * ld + 5, ld);
    bad = 0;
    for (int j = 3; j < n; j++)
        for (int i = 5; i < m; i++) bad += memcmp(&sub[j * ld + i], &big[j * ld + i], 8) != 0;
    CHECK_MSG(bad == 0, "%d elements differ in an offset sub-block", bad);
    free(A), free(B), free(C), free(big), free(sub);
}

/* dsyrk is dgemm on its triangle; the other triangle is untouched; the work-buffer
 * presentation (dgemm with beta = 0, then daxpy with 1) gives the same bits. */
static void check_syrk(void)
{
    static const int ns[] = {1, 5, 8, 12, 31, 70};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (int u = 0; u < 2; u++)
            for (int tr = 0; tr < 2; tr++) {
                int n = ns[a], K = 32, lda = (tr ? K : n) + 1, ldc = n + 2;
                char uplo = u ? 'U' : 'L', trans = tr ? 'T' : 'N';
                double *A = randv((size_t)lda * (tr ? n : K)), *C0 = randv((size_t)ldc * n);
                double *C = malloc(sizeof(double) * ldc * n), *G = malloc(sizeof(double) * ldc * n);
                memcpy(C, C0, sizeof(double) * ldc * n);
                memcpy(G, C0, sizeof(double) * ldc * n);
                tqp_rblas_dsyrk(uplo, trans, n, K, -1, A, lda, 1, C, ldc);
                tqp_rblas_dgemm(tr ? 'T' : 'N', tr ? 'N' : 'T', n, n, K, -1, A, lda, A, lda, 1, G, ldc);
                int bad = 0, touched = 0;
                for (int j = 0; j < n; j++)
                    for (int i = 0; i < ldc; i++) {
                        size_t e = (size_t)j * ldc + i;
                        int in = i < n && (u ? i <= j : i >= j);
                        if (in) bad += memcmp(&C[e], &G[e], 8) != 0;
                        else touched += memcmp(&C[e], &C0[e], 8) != 0;
                    }
                CHECK_MSG(bad == 0 && touched == 0, "dsyrk %c%c n=%d: %d differ from dgemm, %d outside touched",
                          uplo, trans, n, bad, touched);
                /* PBLAS on a 1 x 1 grid: W = -A A^T (beta 0), then C += W column by column */
                if (!u && !tr) {
                    double *W = malloc(sizeof(double) * n * n), *D = malloc(sizeof(double) * ldc * n);
                    memcpy(D, C0, sizeof(double) * ldc * n);
                    double m1 = -1, zero = 0, one = 1;
                    int inc = 1;
                    dgemm_("N", "T", &n, &n, &K, &m1, A, &lda, A, &lda, &zero, W, &n);
                    for (int j = 0; j < n; j++) {
                        int len = n - j;
                        daxpy_(&len, &one, W + (size_t)j * n + j, &inc, D + (size_t)j * ldc + j, &inc);
                    }
                    bad = 0;
                    for (int j = 0; j < n; j++)
                        for (int i = j; i < n; i++) bad += memcmp(&C[j * ldc + i], &D[j * ldc + i], 8) != 0;
                    CHECK_MSG(bad == 0, "n=%d: dgemm into a buffer + daxpy differs from dsyrk in %d", n, bad);
                    free(W), free(D);
                }
                free(A), free(C0), free(C), free(G);
            }
}

/* dtrsm against forward/back substitution written out in solving order. */
static void def_trsm(char side, char uplo, char ta, char diag, int m, int n, double alpha,
                     const double *A, int lda, double *B, int ldb)
{
    int upper = (uplo == 'U') != (ta == 'T');
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++)
            if (alpha != 1.0) B[(size_t)j * ldb + i] = alpha == 0.0 ? 0.0 : alpha * B[(size_t)j * ldb + i];
    if (alpha == 0.0) return;
    if (side == 'R') {
        for (int r = 0; r < m; r++)
            for (int s = 0; s < n; s++) {
                int j = upper ? s : n - 1 - s;
                double t = B[(size_t)j * ldb + r];
                for (int q = 0; q < s; q++) {
                    int k = upper ? q : n - 1 - q;
                    t = fma(-B[(size_t)k * ldb + r], opel(A, lda, ta, k, j), t);
                }
                B[(size_t)j * ldb + r] = diag == 'U' ? t : t / opel(A, lda, ta, j, j);
            }
    } else {
        for (int c = 0; c < n; c++)
            for (int s = 0; s < m; s++) {
                int i = upper ? m - 1 - s : s;
                double t = B[(size_t)c * ldb + i];
                for (int q = 0; q < s; q++) {
                    int k = upper ? m - 1 - q : q;
                    t = fma(-B[(size_t)c * ldb + k], opel(A, lda, ta, i, k), t);
                }
                B[(size_t)c * ldb + i] = diag == 'U' ? t : t / opel(A, lda, ta, i, i);
            }
    }
}

static void check_trsm(void)
{
    const char *sides = "LR", *uplos = "LU", *tas = "NT", *diags = "NU";
    for (int v = 0; v < 16; v++) {
        char side = sides[v & 1], uplo = uplos[(v >> 1) & 1], ta = tas[(v >> 2) & 1], diag = diags[v >> 3];
        int m = 19, n = 11, na = side == 'L' ? m : n, lda = na + 2, ldb = m + 1;
        double *A = randv((size_t)lda * na), *B = randv((size_t)ldb * n);
        for (int i = 0; i < na; i++) A[(size_t)i * lda + i] = 3 + fabs(A[(size_t)i * lda + i]);
        double *X = malloc(sizeof(double) * ldb * n), *D = malloc(sizeof(double) * ldb * n);
        for (int a = 0; a < 3; a++) {
            double alpha = a == 0 ? 1 : a == 1 ? -0.5 : 0;
            memcpy(X, B, sizeof(double) * ldb * n);
            memcpy(D, B, sizeof(double) * ldb * n);
            tqp_rblas_dtrsm(side, uplo, ta, diag, m, n, alpha, A, lda, X, ldb);
            def_trsm(side, uplo, ta, diag, m, n, alpha, A, lda, D, ldb);
            CHECK_MSG(same_bits(X, D, (size_t)ldb * n), "dtrsm %c%c%c%c alpha=%g differs from substitution",
                      side, uplo, ta, diag, alpha);
        }
        /* and it solves the system: op(A) X or X op(A) reproduces B (long double residual) */
        memcpy(X, B, sizeof(double) * ldb * n);
        tqp_rblas_dtrsm(side, uplo, ta, diag, m, n, 1, A, lda, X, ldb);
        double worst = 0;
        int upper = (uplo == 'U') != (ta == 'T');
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                long double s = 0;
                for (int k = 0; k < na; k++) {
                    int r = side == 'L' ? i : k, c = side == 'L' ? k : j; /* op(A)(r, c) */
                    if (upper ? r > c : r < c) continue;
                    double t = r == c && diag == 'U' ? 1.0 : opel(A, lda, ta, r, c);
                    s += (long double)t * (side == 'L' ? X[(size_t)j * ldb + k] : X[(size_t)k * ldb + i]);
                }
                worst = fmax(worst, fabs((double)(s - B[(size_t)j * ldb + i])));
            }
        CHECK_MSG(worst < 1e-10, "dtrsm %c%c%c%c residual %g", side, uplo, ta, diag, worst);
        free(A), free(B), free(X), free(D);
    }
    /* X L^T = B and X U = B with U = L^T: the same bits (two presentations of one solve) */
    int m = 50, n = 32;
    double *L = randv((size_t)n * n), *U = malloc(sizeof(double) * n * n), *B = randv((size_t)m * n);
    for (int i = 0; i < n; i++) L[(size_t)i * n + i] = 4 + fabs(L[(size_t)i * n + i]);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) U[(size_t)j * n + i] = L[(size_t)i * n + j];
    double *X1 = malloc(sizeof(double) * m * n), *X2 = malloc(sizeof(double) * m * n);
    memcpy(X1, B, sizeof(double) * m * n);
    memcpy(X2, B, sizeof(double) * m * n);
    tqp_rblas_dtrsm('R', 'L', 'T', 'N', m, n, 1, L, n, X1, m);
    tqp_rblas_dtrsm('R', 'U', 'N', 'N', m, n, 1, U, n, X2, m);
    CHECK_MSG(same_bits(X1, X2, (size_t)m * n), "RLTN and RUNN on the transposed copy differ");
    free(L), free(U), free(B), free(X1), free(X2);
}

static void check_level12(void)
{
    int m = 23, n = 17, lda = 25;
    double *A = randv((size_t)lda * n), *x = randv(64), *y0 = randv(64), *y = malloc(sizeof(double) * 64);
    for (int t = 0; t < 2; t++)
        for (int inc = -2; inc <= 2; inc += 4) {
            char ta = t ? 'T' : 'N';
            int leny = t ? n : m, lenx = t ? m : n;
            memcpy(y, y0, sizeof(double) * 64);
            tqp_rblas_dgemv(ta, m, n, -1, A, lda, x, inc, 0.5, y, 1);
            int bad = 0;
            for (int i = 0; i < leny; i++) {
                double acc = 0;
                for (int k = 0; k < lenx; k++) {
                    int xi = inc > 0 ? k * inc : (lenx - 1 - k) * -inc;
                    acc = fma(opel(A, lda, ta, i, k), x[xi], acc);
                }
                double want = -1 * acc + 0.5 * y0[i];
                bad += memcmp(&want, &y[i], 8) != 0;
            }
            CHECK_MSG(bad == 0, "dgemv %c incx=%d: %d elements differ", ta, inc, bad);
        }
    double acc = 0;
    for (int i = 0; i < 40; i++) acc = fma(x[i], y0[i], acc);
    double d = tqp_rblas_ddot(40, x, 1, y0, 1);
    CHECK(memcmp(&d, &acc, 8) == 0);
    int n40 = 40, one = 1;
    double f = ddot_(&n40, x, &one, y0, &one);
    CHECK(memcmp(&f, &acc, 8) == 0);
    free(A), free(x), free(y0), free(y);
}

/* The product is a product: close to a long double reference. */
static void check_accuracy(void)
{
    int m = 40, n = 30, K = 200;
    double *A = randv((size_t)m * K), *B = randv((size_t)K * n), *C = calloc((size_t)m * n, 8);
    tqp_rblas_dgemm('N', 'N', m, n, K, 1, A, m, B, K, 0, C, m);
    double worst = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            long double s = 0;
            for (int k = 0; k < K; k++) s += (long double)A[(size_t)k * m + i] * B[(size_t)j * K + k];
            worst = fmax(worst, fabs((double)(s - C[(size_t)j * m + i])));
        }
    CHECK_MSG(worst < 1e-12, "max |C - exact| = %g", worst);
    free(A), free(B), free(C);
}

/* The Fortran entry points: bound in this executable, counted, equal to the C functions;
 * the pass-through reaches the system BLAS (close, and counted too). */
static void check_entry_points(void)
{
    CHECK(tqp_rblas_bound());
    int m = 33, n = 20, K = 32;
    double *A = randv((size_t)m * K), *B = randv((size_t)n * K), *C0 = randv((size_t)m * n);
    double *C1 = malloc(sizeof(double) * m * n), *C2 = malloc(sizeof(double) * m * n);
    double *C3 = malloc(sizeof(double) * m * n), *S = calloc((size_t)m * m, sizeof(double));
    double al = -1, be = 1;
    memcpy(C1, C0, sizeof(double) * m * n);
    memcpy(C2, C0, sizeof(double) * m * n);
    memcpy(C3, C0, sizeof(double) * m * n);
    tqp_rblas_counts c0, c1;
    tqp_rblas_get_counts(&c0);
    dgemm_("N", "T", &m, &n, &K, &al, A, &m, B, &n, &be, C1, &m);
    dsyrk_("L", "N", &m, &K, &al, A, &m, &be, S, &m);
    tqp_rblas_get_counts(&c1);
    CHECK(c1.gemm == c0.gemm + 1 && c1.syrk == c0.syrk + 1);
    tqp_rblas_dgemm('N', 'T', m, n, K, -1, A, m, B, n, 1, C2, m);
    CHECK(same_bits(C1, C2, (size_t)m * n));
    CHECK(tqp_rblas_passthrough(1) == 1);
    memcpy(C1, C0, sizeof(double) * m * n);
    dgemm_("N", "T", &m, &n, &K, &al, A, &m, B, &n, &be, C1, &m);
    tqp_rblas_passthrough(0);
    memcpy(C3, C0, sizeof(double) * m * n); /* the system BLAS through its C interface */
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, m, n, K, -1, A, m, B, n, 1, C3, m);
    double worst = 0, sys = 0;
    for (int i = 0; i < m * n; i++) worst = fmax(worst, fabs(C1[i] - C2[i]));
    for (int i = 0; i < m * n; i++) sys = fmax(sys, fabs(C1[i] - C3[i]));
    CHECK_MSG(worst < 1e-12, "system BLAS differs by %g", worst);
    CHECK_MSG(sys == 0, "the pass-through differs from cblas_dgemm by %g", sys);
    tqp_rblas_get_counts(&c0);
    CHECK(c0.gemm == c1.gemm + 1);
    free(A), free(B), free(C0), free(C1), free(C2), free(C3), free(S);
}

int main(void)
{
    tqp_rblas_kernel ks[] = {TQP_RBLAS_REF, TQP_RBLAS_AVX2};
    for (int i = 0; i < 2; i++) {
        tqp_rblas_kernel got = tqp_rblas_select(ks[i]);
        if (got != ks[i]) {
            printf("skip: this CPU has no %s kernel\n", tqp_rblas_kernel_name(ks[i]));
            continue;
        }
        printf("kernel %s\n", tqp_rblas_kernel_name(got));
        check_gemm();
        check_position();
        check_syrk();
        check_trsm();
    }
    tqp_rblas_select(TQP_RBLAS_AUTO);
    check_level12();
    check_accuracy();
    check_entry_points();
    return check_done();
}
