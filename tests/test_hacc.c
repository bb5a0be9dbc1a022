/* The exact Hessian accumulator against an independent long-double X^T X, on windows of
 * several lengths and a width that crosses a panel boundary.  Run under mpiexec with any rank
 * count and batch size, it prints a digest of the whole matrix, which test_hessian_ranks.sh
 * compares across runs: the bits must not depend on any of them.  With threads > 1 the windows
 * of a batch are staged concurrently into their slots, last window first, and the flush splits
 * its panels over the threads.  It also prints whether the reductions went in two levels
 * (TQP_NODE_RANKS=k takes ranks in groups of k as nodes).
 * Usage: test_hacc [batch_windows [threads [width]]] */
#include <mpi.h>

#include "check.h"
#include "testutil.h"
#include "tqp/hacc.h"
#include "tqp/io.h"
#include "tqp/mpiutil.h"

/* Open MPI keeps allocations until exit; leak checking would only report those. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

__int128 tqp_hacc_to_fix_for_test(double v);

static void test_to_fix(void)
{
    uint64_t s = 99;
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        double v = tu_normal(&s) * ldexp(1.0, (int)(tu_next(&s) % 120) - 80);
        if (i % 7 == 0) v = ldexp((double)(int64_t)(tu_next(&s) % 2001) - 1000.5, -64); /* ties */
        if (fabs(v) >= 9.2e18) continue;
        __int128 want = (__int128)nearbyintl((long double)v * 18446744073709551616.0L);
        bad += tqp_hacc_to_fix_for_test(v) != want;
    }
    CHECK_MSG(bad == 0, "%d fixed-point conversions differ from long double", bad);
}

enum { NWIN = 11 };
static int N = 600; /* a width past one panel (512); 1300 also crosses column blocks */

static int win_len(int w)
{
    return 17 + (w * 37) % 50;
}

/* Window w's inputs: deterministic from w alone; some inputs dead, one an outlier. */
static void fill_window(int w, float *x)
{
    uint64_t s = 1000 + (uint64_t)w;
    for (int t = 0; t < win_len(w); t++)
        for (int j = 0; j < N; j++) {
            double v = tu_normal(&s) * (j == 7 ? 300.0 : 1.0 + j % 5);
            x[(size_t)t * N + j] = j % 97 == 3 ? 0.0f : (float)v;
        }
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, P, batch = argc > 1 ? atoi(argv[1]) : 3, threads = argc > 2 ? atoi(argv[2]) : 1;
    if (argc > 3) N = atoi(argv[3]);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    if (rank == 0) test_to_fix();
    long w0, w1;
    tqp_partition(NWIN, P, rank, &w0, &w1);
    long most = (NWIN + P - 1) / P, nb = (most + batch - 1) / batch;
    tqp_hacc *h = NULL;
    CHECK(tqp_hacc_create(MPI_COMM_WORLD, N, (int64_t)batch * 80, threads, &h) == TQP_OK);
    float *x = malloc(sizeof(float) * 80 * N);
    for (long b = 0; b < nb; b++) {
        if (threads == 1) {
            for (long w = w0 + b * batch; w < w1 && w < w0 + (b + 1) * batch; w++) {
                fill_window((int)w, x);
                CHECK(tqp_hacc_stage(h, x, win_len((int)w), "test") == TQP_OK);
            }
        } else {
            int bad = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1) reduction(+ : bad)
            for (long i = batch - 1; i >= 0; i--) {
                long w = w0 + b * batch + i;
                if (w >= w1) continue;
                float *xw = malloc(sizeof(float) * 80 * N);
                fill_window((int)w, xw);
                bad += tqp_hacc_stage_at(h, (int)i, 80 * i, xw, win_len((int)w), "test") != TQP_OK;
                free(xw);
            }
            CHECK(bad == 0);
        }
        CHECK(tqp_hacc_flush(h, "test") == TQP_OK);
    }
    CHECK(tqp_hacc_finalize(h) == TQP_OK);
    /* gather the full matrix on rank 0 */
    int64_t r0, r1;
    const double *rows = tqp_hacc_rows(h, &r0, &r1);
    double *full = calloc((size_t)N * N, sizeof *full), *mine = calloc((size_t)N * N, sizeof *mine);
    for (int64_t i = r0; i < r1; i++)
        for (int64_t j = 0; j < r1; j++) {
            mine[i * N + j] = rows[(i - r0) * r1 + j];
            if (j < r0) mine[j * N + i] = rows[(i - r0) * r1 + j];
        }
    MPI_Reduce(mine, full, N * N, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        /* independent reference in long double, window by window */
        long double *ref = calloc((size_t)N * N, sizeof *ref), *cs = calloc((size_t)N, sizeof *cs);
        long cnt = 0;
        for (int w = 0; w < NWIN; w++) {
            fill_window(w, x);
            for (int t = 0; t < win_len(w); t++, cnt++)
                for (int i = 0; i < N; i++) {
                    cs[i] += x[t * N + i];
                    for (int j = 0; j < N; j++)
                        ref[i * N + j] += (long double)x[t * N + i] * x[t * N + j];
                }
        }
        double md = 0, mx = 0, sym = 0;
        for (int i = 0; i < N * N; i++) {
            md = fmax(md, fabsl(full[i] - ref[i]));
            mx = fmax(mx, fabsl(ref[i]));
        }
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++)
                sym = fmax(sym, fabs(full[i * N + j] - full[j * N + i]));
        CHECK_MSG(md / mx <= 1e-12, "relative error %.3g", md / mx);
        CHECK(sym == 0);
        CHECK(tqp_hacc_count(h) == cnt);
        double cerr = 0;
        for (int i = 0; i < N; i++)
            cerr = fmax(cerr, fabsl(tqp_hacc_colsum(h)[i] - cs[i]));
        CHECK_MSG(cerr < 1e-9, "column sum error %.3g", cerr);
        CHECK(full[3 * N + 3] == 0 && full[3 * N + 10] == 0); /* dead input */
        char hex[65];
        tqp_sha256_hex(full, sizeof(double) * N * N, hex);
        printf("digest %s\n", hex);
        printf("levels %d\n", tqp_hacc_two_level(h) ? 2 : 1);
        free(ref);
        free(cs);
    }
    free(full);
    free(mine);
    free(x);
    tqp_hacc_destroy(&h);
    int rc = rank == 0 ? check_done() : 0;
    MPI_Finalize();
    return rc;
}
