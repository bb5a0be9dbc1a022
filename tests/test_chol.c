/* tqp_chol_factor against LAPACK dpotrf on random SPD matrices of several orders and block
 * sizes (orders smaller than one block or than the grid included), matrices that are not
 * positive definite, sub-communicators, and the grid shapes.  Run under mpiexec with any rank
 * count; every rank checks its own copy of the factor, and the counts are summed on rank 0.
 * It prints a digest of one factor (n = 300, the default nb), which test_chol_ranks.sh compares
 * across rank counts.
 * Usage: test_chol [--probe: print the OpenBLAS core type and exit] */
#include <cblas.h>
#include <mpi.h>
#include <stdint.h>

#include "check.h"
#include "testutil.h"
#include "tqp/chol.h"
#include "tqp/rblas.h"
#include "tqp/tcq.h"
#include "tqp/io.h"

/* Open MPI keeps allocations until exit; leak checking would only report those. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}

/* LAPACK (OpenBLAS ships no lapacke.h here); the last argument is Fortran's hidden length. */
void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t len);

static int rank_;

/* A (n, n) row-major = B B^T + n I with B standard normal from `seed`; exactly symmetric. */
static double *random_spd(int n, uint64_t seed)
{
    double *B = malloc(sizeof(double) * n * n), *A = malloc(sizeof(double) * n * n);
    for (int i = 0; i < n * n; i++)
        B[i] = tu_normal(&seed);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double s = i == j ? n : 0;
            for (int k = 0; k < n; k++)
                s += B[i * n + k] * B[j * n + k];
            A[i * n + j] = A[j * n + i] = s;
        }
    free(B);
    return A;
}

/* The lower factor (n, n) row-major from LAPACK dpotrf, or NULL with *info > 0 if A is not
 * positive definite. */
static double *lapack_factor(int n, const double *A, int *info)
{
    double *c = malloc(sizeof(double) * n * n), *L = calloc((size_t)n * n, sizeof(double));
    memcpy(c, A, sizeof(double) * n * n); /* symmetric: also its column-major image */
    dpotrf_("L", &n, c, &n, info, 1);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++)
            L[i * n + j] = c[j * n + i];
    free(c);
    if (*info == 0) return L;
    free(L);
    return NULL;
}

static double max_abs(const double *x, size_t count)
{
    double m = 0;
    for (size_t i = 0; i < count; i++)
        m = fmax(m, fabs(x[i]));
    return m;
}

/* max |L L^T - A| / max |A| over the lower triangle. */
static double reconstruction_error(int n, const double *L, const double *A)
{
    double err = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0;
            for (int k = 0; k <= j; k++)
                s += L[i * n + k] * L[j * n + k];
            err = fmax(err, fabs(s - A[i * n + j]));
        }
    return err / max_abs(A, (size_t)n * n);
}

/* Collective: 1 on every rank if every rank of comm holds the same bytes in x. */
static int same_on_all_ranks(MPI_Comm comm, const double *x, size_t count)
{
    double *first = malloc(sizeof(double) * count);
    memcpy(first, x, sizeof(double) * count);
    MPI_Bcast(first, (int)count, MPI_DOUBLE, 0, comm);
    int same = memcmp(first, x, sizeof(double) * count) == 0, all;
    MPI_Allreduce(&same, &all, 1, MPI_INT, MPI_MIN, comm);
    free(first);
    return all;
}

/* Collective: the factor of a random SPD matrix on comm against dpotrf; *L_out (if not NULL)
 * receives the factor. */
static void check_spd(MPI_Comm comm, int n, int nb, uint64_t seed, double **L_out)
{
    double *A = random_spd(n, seed), *L = malloc(sizeof(double) * n * n);
    int info = -1, rinfo;
    double *ref = lapack_factor(n, A, &rinfo);
    tqp_status s = tqp_chol_factor(comm, n, A, L, nb, &info);
    CHECK_MSG(s == TQP_OK && info == 0, "n=%d nb=%d: %s (info %d)", n, nb, tqp_error_message(),
              info);
    double diff = 0, upper = 0;
    for (int i = 0; i < n * n; i++)
        diff = fmax(diff, fabs(L[i] - ref[i]));
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            upper = fmax(upper, fabs(L[i * n + j]));
    diff /= max_abs(ref, (size_t)n * n);
    CHECK_MSG(diff <= 1e-12, "n=%d nb=%d: relative difference from dpotrf %.3g", n, nb, diff);
    double rec = reconstruction_error(n, L, A);
    CHECK_MSG(rec <= 1e-12, "n=%d nb=%d: relative error of L L^T %.3g", n, nb, rec);
    CHECK_MSG(upper == 0, "n=%d nb=%d: upper triangle not zero (%g)", n, nb, upper);
    CHECK_MSG(same_on_all_ranks(comm, L, (size_t)n * n), "n=%d nb=%d: ranks differ", n, nb);
    free(A);
    free(ref);
    if (L_out)
        *L_out = L;
    else
        free(L);
}

/* Collective: A is not positive definite; every rank must get TQP_ENUMERIC and the same
 * info, equal to dpotrf's. */
static void check_not_pd(const char *what, int n, int nb, const double *A)
{
    double *L = malloc(sizeof(double) * n * n), *ref;
    int info = -1, rinfo, lo, hi;
    tqp_status s = tqp_chol_factor(MPI_COMM_WORLD, n, A, L, nb, &info);
    ref = lapack_factor(n, A, &rinfo);
    CHECK_MSG(s == TQP_ENUMERIC, "%s: status %s", what, tqp_strerror(s));
    CHECK_MSG(info > 0 && info == rinfo, "%s: info %d, dpotrf %d", what, info, rinfo);
    CHECK_MSG(strlen(tqp_error_message()) > 0, "%s: no message", what);
    MPI_Allreduce(&info, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&info, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    CHECK_MSG(lo == hi, "%s: info differs across ranks (%d .. %d)", what, lo, hi);
    free(ref);
    free(L);
}

/* diag(d) with d_i = 1 except d_bad = -1: fails at the leading minor of order bad + 1. */
static void check_negative_pivot(int n, int nb, int bad)
{
    double *A = calloc((size_t)n * n, sizeof(double));
    for (int i = 0; i < n; i++)
        A[i * n + i] = i == bad ? -1.0 : 1.0;
    char what[64];
    snprintf(what, sizeof what, "diag n=%d nb=%d bad=%d", n, nb, bad);
    check_not_pd(what, n, nb, A);
    free(A);
}

static void check_not_positive_definite(void)
{
    check_negative_pivot(5, 2, 1);
    check_negative_pivot(200, 16, 150); /* in a later block, owned by another rank */
    check_negative_pivot(3, 32, 0);
    int n = 64;
    uint64_t seed = 77;
    double *A = malloc(sizeof(double) * n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++)
            A[i * n + j] = A[j * n + i] = tu_normal(&seed);
    check_not_pd("random symmetric", n, 16, A);
    memset(A, 0, sizeof(double) * n * n);
    check_not_pd("zero", n, 16, A);
    free(A);
}

/* Only the lower triangle is read: garbage above the diagonal changes no bit. */
static void check_lower_only(void)
{
    int n = 172, nb = 16, info;
    double *A = random_spd(n, 5), *L = malloc(sizeof(double) * n * n);
    double *L2 = malloc(sizeof(double) * n * n);
    CHECK(tqp_chol_factor(MPI_COMM_WORLD, n, A, L, nb, &info) == TQP_OK);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            A[i * n + j] = NAN;
    CHECK(tqp_chol_factor(MPI_COMM_WORLD, n, A, L2, nb, &info) == TQP_OK);
    CHECK(memcmp(L, L2, sizeof(double) * n * n) == 0);
    free(A);
    free(L);
    free(L2);
}

/* nb <= 0 means the default block size. */
static void check_default_nb(void)
{
    int n = 200, info;
    double *A = random_spd(n, 9), *L = malloc(sizeof(double) * n * n);
    double *L2 = malloc(sizeof(double) * n * n);
    CHECK(tqp_chol_factor(MPI_COMM_WORLD, n, A, L, TQP_CHOL_DEFAULT_NB, &info) == TQP_OK);
    CHECK(tqp_chol_factor(MPI_COMM_WORLD, n, A, L2, 0, &info) == TQP_OK);
    CHECK(memcmp(L, L2, sizeof(double) * n * n) == 0);
    CHECK(tqp_chol_factor(MPI_COMM_WORLD, 0, A, L2, 0, &info) == TQP_OK && info == 0);
    free(A);
    free(L);
    free(L2);
}

/* Two halves of the world factor different matrices at the same time. */
static void check_subcomm(void)
{
    int color = rank_ % 2;
    MPI_Comm half;
    MPI_Comm_split(MPI_COMM_WORLD, color, rank_, &half);
    check_spd(half, 100, 16, 50 + (uint64_t)color, NULL);
    MPI_Comm_free(&half);
}

static void check_grid_shapes(void)
{
    static const int want[][3] = {{1, 1, 1},  {2, 1, 2},  {3, 1, 3},  {4, 2, 2},  {5, 1, 5},
                                  {6, 2, 3},  {7, 1, 7},  {8, 2, 4},  {9, 3, 3},  {12, 3, 4},
                                  {16, 4, 4}, {18, 3, 6}, {64, 8, 8}, {97, 1, 97}};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        int pr, pc;
        tqp_chol_grid_shape(want[k][0], &pr, &pc);
        CHECK_MSG(pr == want[k][1] && pc == want[k][2], "P=%d: %dx%d", want[k][0], pr, pc);
    }
}

/* The distributed factor's rounding rows: tile 1 gives Lu = C diag(C)^-1 (with Lu D Lu^T = A,
 * D = diag(C)^2), tile 16 the same bits as tqp_tcq_block_factor on the gathered factor; every
 * rank gets every row. */
static void check_lu_rows(void)
{
    int n = 200, info;
    double *A = random_spd(n, 77), *C = malloc(sizeof(double) * n * n);
    double *Lu = calloc((size_t)n * n, sizeof(double)), *B = malloc(sizeof(double) * n * n);
    double *P = malloc(sizeof(double) * 32 * n);
    tqp_dfactor f;
    CHECK(tqp_dfactor_open(MPI_COMM_WORLD, n, 0, &f) == TQP_OK);
    tqp_dfactor_load(&f, A, 0.0);
    CHECK(tqp_dfactor_factor(&f, &info) == TQP_OK && info == 0);
    CHECK(tqp_dfactor_gather(&f, C) == TQP_OK);
    int bad = 0;
    for (int k1 = n; k1 > 0;) { /* LDLQ panels, last first, as quantize.c asks for them */
        int k0 = (k1 - 1) / 32 * 32;
        CHECK(tqp_dfactor_lu_rows(&f, 1, k0, k1, P) == TQP_OK);
        for (int i = k0; i < k1; i++)
            for (int k = 0; k < k1; k++) {
                double want = k < i ? C[i * n + k] / C[k * n + k] : k == i ? 1.0 : 0.0;
                double got = P[(i - k0) * k1 + k];
                bad += memcmp(&got, &want, sizeof got) != 0;
                Lu[i * n + k] = got;
            }
        k1 = k0;
    }
    CHECK_MSG(bad == 0, "%d elements of Lu = C diag(C)^-1 differ", bad);
    double worst = 0, scale = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            long double sum = 0;
            for (int k = 0; k <= j; k++)
                sum += (long double)Lu[i * n + k] * C[k * n + k] * C[k * n + k] * Lu[j * n + k];
            worst = fmax(worst, fabs((double)(sum - A[i * n + j])));
            scale = fmax(scale, fabs(A[i * n + j]));
        }
    CHECK_MSG(worst <= 1e-12 * scale, "Lu D Lu^T - A: %g (scale %g)", worst, scale);
    memcpy(B, C, sizeof(double) * n * n);
    tqp_tcq_block_factor(B, n);
    bad = 0;
    for (int c0 = n - (n - 1) % 16 - 1; c0 >= 0; c0 -= 16) {
        int w = n - c0 < 16 ? n - c0 : 16;
        CHECK(tqp_dfactor_lu_rows(&f, 16, c0, c0 + w, P) == TQP_OK);
        for (int i = c0; i < c0 + w; i++)
            for (int k = 0; k < c0 + w; k++) bad += memcmp(&P[(i - c0) * (c0 + w) + k], &B[i * n + k], 8) != 0;
    }
    CHECK_MSG(bad == 0, "%d elements of the block factor differ from tqp_tcq_block_factor", bad);
    CHECK(tqp_dfactor_lu_rows(&f, 3, 0, 3, P) == TQP_EINTERNAL); /* 3 does not divide nb */
    tqp_dfactor_close(&f);
    free(A), free(C), free(Lu), free(B), free(P);
}

char *openblas_get_corename(void);

/* The digest case; rank 0 also reports how far it is from dpotrf. */
static void check_digest(int P)
{
    int n = 300, nb = TQP_CHOL_DEFAULT_NB, rinfo, pr, pc;
    double *L;
    check_spd(MPI_COMM_WORLD, n, nb, 2024, &L);
    if (rank_ == 0) {
        double *A = random_spd(n, 2024), *ref = lapack_factor(n, A, &rinfo), diff = 0;
        for (int i = 0; i < n * n; i++)
            diff = fmax(diff, fabs(L[i] - ref[i]));
        tqp_chol_grid_shape(P, &pr, &pc);
        printf("n=%d nb=%d grid %dx%d: max |L - dpotrf| = %.3g, bit-identical to dpotrf: %s\n", n,
               nb, pr, pc, diff, memcmp(L, ref, sizeof(double) * n * n) ? "no" : "yes");
        char hex[65];
        tqp_sha256_hex(L, sizeof(double) * n * n, hex);
        printf("digest %s (OpenBLAS core %s, reproducible BLAS kernel %s)\n", hex,
               openblas_get_corename(), tqp_rblas_kernel_name(tqp_rblas_active()));
        free(A);
        free(ref);
    }
    free(L);
}

/* The factorization runs on TQP's reproducible BLAS (include/tqp/rblas.h): the executable
 * exports it, pdpotrf calls it, and a block wider than PBLAS's internal one is refused. */
static void check_rblas(void)
{
    CHECK(tqp_rblas_bound());
    int n = 200, info;
    double *A = random_spd(n, 31), *L = malloc(sizeof(double) * n * n);
    tqp_rblas_counts c0, c1;
    tqp_rblas_get_counts(&c0);
    CHECK(tqp_chol_factor(MPI_COMM_WORLD, n, A, L, 32, &info) == TQP_OK);
    tqp_rblas_get_counts(&c1);
    long long mine = c1.gemm + c1.syrk - c0.gemm - c0.syrk, trsm = c1.trsm - c0.trsm, all, alltrsm;
    MPI_Allreduce(&mine, &all, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(&trsm, &alltrsm, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    CHECK_MSG(all > 0 && alltrsm > 0, "pdpotrf made %lld gemm/syrk and %lld trsm calls here", all,
              alltrsm);
    tqp_status s = tqp_chol_factor(MPI_COMM_WORLD, n, A, L, 64, &info);
    CHECK_MSG(s == TQP_EINPUT && strstr(tqp_error_message(), "PBLAS's internal block"),
              "nb = 64: %s", tqp_error_message());
    free(A);
    free(L);
}

/* Collective: the pass and fail counts of every rank, printed by rank 0. */
static int finish(void)
{
    int mine[2] = {check_passed_, check_failed_}, all[2];
    MPI_Reduce(mine, all, 2, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank_ != 0) return check_failed_ ? 1 : 0;
    check_passed_ = all[0];
    check_failed_ = all[1];
    return check_done();
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--probe")) { /* the OpenBLAS core, after running it */
        double a[96 * 96], c[96 * 96];
        for (int i = 0; i < 96 * 96; i++) a[i] = (i % 13) - 6;
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasTrans, 96, 96, 96, 1, a, 96, a, 96, 0, c, 96);
        cblas_dtrsm(CblasColMajor, CblasRight, CblasLower, CblasTrans, CblasUnit, 96, 96, 1, a, 96, c, 96);
        printf("core %s %g\n", openblas_get_corename(), cblas_ddot(96 * 96, a, 1, c, 1));
        return 0;
    }
    MPI_Init(&argc, &argv);
    int P;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    check_grid_shapes();
    static const int ns[] = {1, 5, 64, 172, 200, 300}, nbs[] = {7, 16, 32};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
        for (size_t b = 0; b < sizeof nbs / sizeof nbs[0]; b++)
            check_spd(MPI_COMM_WORLD, ns[a], nbs[b], 1000 + a, NULL);
    check_not_positive_definite();
    check_lower_only();
    check_default_nb();
    check_subcomm();
    check_rblas();
    check_lu_rows();
    check_digest(P);
    int rc = finish();
    MPI_Finalize();
    return rc;
}
