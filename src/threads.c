/* Thread counts per rank (see include/tqp/threads.h). */
#define _GNU_SOURCE
#include "tqp/threads.h"

#include <cblas.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tqp_threads_auto(MPI_Comm comm)
{
    cpu_set_t mine;
    CPU_ZERO(&mine);
    if (sched_getaffinity(0, sizeof mine, &mine) != 0) CPU_SET(0, &mine);
    int cpus = CPU_COUNT(&mine), n = 1, me = 0, sharing = 0;
    MPI_Comm node;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return cpus > 0 ? cpus : 1;
    MPI_Comm_size(node, &n);
    MPI_Comm_rank(node, &me);
    cpu_set_t *all = tqp_malloc(sizeof(cpu_set_t) * (size_t)n);
    if (all && MPI_Allgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE,
                             node) == MPI_SUCCESS) {
        for (int r = 0; r < n; r++) {
            cpu_set_t both;
            CPU_AND(&both, &mine, &all[r]);
            sharing += CPU_COUNT(&both) > 0;
        }
    }
    free(all);
    MPI_Comm_free(&node);
    if (sharing < 1) sharing = 1;
    int t = cpus / sharing;
    return t < 1 ? 1 : t;
}

tqp_status tqp_threads_setup(MPI_Comm comm, int requested, int *threads)
{
    *threads = requested > 0 ? requested : tqp_threads_auto(comm);
    tqp_blas_threads_set(1);
    /* More threads than the CPUs a rank may run on still give the same bytes, only slowly:
     * say so once, with the launcher options that widen the mask. */
    cpu_set_t mine;
    CPU_ZERO(&mine);
    int cpus = sched_getaffinity(0, sizeof mine, &mine) == 0 ? CPU_COUNT(&mine) : *threads;
    int over = *threads > cpus, any = 0, rank = 0;
    MPI_Comm_rank(comm, &rank);
    if (MPI_Allreduce(&over, &any, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
        return tqp_error_set(TQP_EMPI, "thread count agreement failed");
    if (any && rank == 0)
        fprintf(stderr,
                "tqp: warning: --threads %d exceeds the %d CPU%s a rank may run on (its "
                "affinity mask); give each rank its cores (Open MPI: --bind-to none or "
                "--map-by slot:PE=%d; Slurm: --cpus-per-task=%d)\n",
                *threads, cpus, cpus == 1 ? "" : "s", *threads, *threads);
    return TQP_OK;
}

void tqp_blas_threads_set(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}

int tqp_blas_threads_get(void)
{
    return openblas_get_num_threads();
}
