/* tqp bench chol: the distributed Cholesky factorization (tqp_chol_factor, pdpotrf at nb = 32)
 * with TQP's reproducible BLAS against the same call with ScaLAPACK's BLAS calls passed through
 * to the system BLAS (OpenBLAS), on the same matrix, alternately, in one run.  Prints one row per
 * order: the best of --repeat times of each, GFLOP/s (n^3 / 3 flops), their ratio, and the
 * largest difference between the two factors.  The time covers the whole call: copying the
 * local part out, pdpotrf, and assembling the factor on every rank. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/chol.h"
#include "tqp/cli.h"
#include "tqp/mpiutil.h"
#include "tqp/rblas.h"
#include "tqp/rng.h"

char *openblas_get_corename(void);

typedef struct {
    int n;
    double t_rep, t_sys, maxdiff;
} chol_row;

/* A (n, n) symmetric, diagonally dominant: the same on every rank. */
static void spd(int n, double *A)
{
    uint64_t s = 0x5eed + (uint64_t)n;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < i; j++)
            A[(size_t)i * n + j] = A[(size_t)j * n + i] = (double)(tqp_splitmix64(&s) >> 11) * 0x1p-53 - 0.5;
        A[(size_t)i * n + i] = 0.5 * n + 1;
    }
}

static tqp_status time_one(int n, const double *A, double *L, int sys, double *t)
{
    int info;
    if (!tqp_rblas_passthrough(sys))
        return tqp_error_set(TQP_EINTERNAL, "bench chol: no system BLAS found to compare with");
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    tqp_status s = tqp_chol_factor(MPI_COMM_WORLD, n, A, L, 0, &info);
    MPI_Barrier(MPI_COMM_WORLD);
    *t = MPI_Wtime() - t0;
    tqp_rblas_passthrough(0);
    return s;
}

static tqp_status bench_n(int n, int repeat, chol_row *r)
{
    size_t nn = (size_t)n * n;
    double *A = tqp_malloc(sizeof(double) * nn), *L = tqp_malloc(sizeof(double) * nn);
    double *L2 = tqp_malloc(sizeof(double) * nn);
    tqp_status s = A && L && L2 ? TQP_OK : TQP_ENOMEM;
    s = tqp_mpi_agree(MPI_COMM_WORLD, s);
    r->n = n, r->t_rep = r->t_sys = INFINITY, r->maxdiff = 0;
    if (s == TQP_OK) spd(n, A);
    for (int k = 0; s == TQP_OK && k < repeat; k++) {
        double t = 0;
        s = time_one(n, A, L, 0, &t);
        if (s == TQP_OK) r->t_rep = fmin(r->t_rep, t), s = time_one(n, A, L2, 1, &t);
        if (s == TQP_OK) r->t_sys = fmin(r->t_sys, t);
    }
    for (size_t i = 0; s == TQP_OK && i < nn; i++) r->maxdiff = fmax(r->maxdiff, fabs(L[i] - L2[i]));
    free(A), free(L), free(L2);
    return s;
}

tqp_status tqp_bench_chol(int argc, char **argv)
{
    const char *orders, *json;
    int repeat;
    tqp_opt opts[] = {
        {"--orders", TQP_OPT_STRING, &orders, "1024,2048,4096", "N,N,...", "matrix orders"},
        {"--repeat", TQP_OPT_INT, &repeat, "3", "R", "runs of each BLAS per order (best kept)", 0, 1, 1000},
        {"--json", TQP_OPT_OUT, &json, NULL, "FILE", "also write the rows as JSON"},
    };
    tqp_cmd_spec spec = {"bench chol",
                         "Distributed Cholesky with the reproducible BLAS vs the system BLAS.",
                         "Run under mpiexec: every order is factored on all ranks (pdpotrf, nb = "
                         "32), alternately with each BLAS, on the same matrix.",
                         opts, (int)(sizeof opts / sizeof opts[0])};
    int help, P, rank;
    TQP_CHECK(tqp_opts_parse(&spec, argc, argv, &help));
    if (help) return TQP_OK;
    if (repeat < 1) return tqp_error_set(TQP_EUSAGE, "--repeat must be >= 1");
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    chol_row rows[16];
    int nrows = 0;
    char *copy = strdup(orders), *save = NULL;
    tqp_status s = copy ? TQP_OK : TQP_ENOMEM;
    for (char *tok = copy ? strtok_r(copy, ",", &save) : NULL; tok && nrows < 16 && s == TQP_OK;
         tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long n = strtol(tok, &end, 10);
        if (*end || n < 1 || n > 46340)
            s = tqp_error_set(TQP_EUSAGE, "bad order '%s' (1 .. 46340)", tok);
        else
            s = bench_n((int)n, repeat, &rows[nrows++]);
    }
    free(copy);
    if (s != TQP_OK || rank != 0) return tqp_mpi_agree(MPI_COMM_WORLD, s);
    char cpu[256];
    int pr, pc;
    tqp_cpu_name(cpu, sizeof cpu);
    tqp_chol_grid_shape(P, &pr, &pc);
    const char *kern = tqp_rblas_kernel_name(tqp_rblas_active()), *core = openblas_get_corename();
    printf("CPU: %s; OpenBLAS core %s; reproducible BLAS kernel %s; %d rank(s), grid %dx%d, "
           "nb = %d; best of %d\n\n",
           cpu, core, kern, P, pr, pc, TQP_CHOL_DEFAULT_NB, repeat);
    printf("| n | reproducible s | GFLOP/s | OpenBLAS s | GFLOP/s | reproducible / OpenBLAS time | "
           "max |L_rep - L_sys| |\n|---|---|---|---|---|---|---|\n");
    cJSON *d = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(d, "rows");
    cJSON_AddStringToObject(d, "cpu", cpu);
    cJSON_AddStringToObject(d, "openblas_core", core);
    cJSON_AddStringToObject(d, "rblas_kernel", kern);
    cJSON_AddNumberToObject(d, "ranks", P);
    for (int i = 0; i < nrows; i++) {
        double f = pow(rows[i].n, 3) / 3 / 1e9;
        printf("| %d | %.3f | %.2f | %.3f | %.2f | %.2f | %.2g |\n", rows[i].n, rows[i].t_rep,
               f / rows[i].t_rep, rows[i].t_sys, f / rows[i].t_sys, rows[i].t_rep / rows[i].t_sys,
               rows[i].maxdiff);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "n", rows[i].n);
        cJSON_AddNumberToObject(o, "seconds_reproducible", rows[i].t_rep);
        cJSON_AddNumberToObject(o, "seconds_system", rows[i].t_sys);
        cJSON_AddNumberToObject(o, "max_abs_diff", rows[i].maxdiff);
        cJSON_AddItemToArray(arr, o);
    }
    if (json) s = tqp_json_write(json, d);
    cJSON_Delete(d);
    return tqp_mpi_agree(MPI_COMM_WORLD, s);
}
