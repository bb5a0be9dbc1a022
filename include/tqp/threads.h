/* Threads within a rank.  Every phase (Hessian collection, quantization, evaluation) splits its
 * work over OpenMP threads in units whose results do not depend on which thread computes them
 * (a window, a row panel, a band of rows), so the thread count never changes a bit of any
 * output.  OpenBLAS is kept to one thread inside those units: our threads call it concurrently,
 * and a product's rounding must not depend on how OpenBLAS would split it. */
#ifndef TQP_THREADS_H
#define TQP_THREADS_H

#include <mpi.h>

#include "tqp/error.h"

/* Collective on comm.  The threads this rank should run: the CPUs of its affinity mask divided
 * by the ranks of its node whose masks overlap it (so an unbound launch of P ranks on a node of
 * C cores gives C / P each, a launch that binds each rank to its own cores gives those cores,
 * e.g. srun --cpus-per-task).  At least 1. */
int tqp_threads_auto(MPI_Comm comm);

/* Collective.  Resolve a --threads value (0: tqp_threads_auto) into *threads, the same rule on
 * every rank, and set OpenBLAS to one thread. */
tqp_status tqp_threads_setup(MPI_Comm comm, int requested, int *threads);

/* OpenBLAS's own thread count (a benchmark compares against threaded BLAS). */
void tqp_blas_threads_set(int n);
int tqp_blas_threads_get(void);

#endif
