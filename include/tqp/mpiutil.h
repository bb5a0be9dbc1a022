/* MPI helpers: error agreement across ranks and a checked-call wrapper.  Every function here
 * is collective on the communicator it is given. */
#ifndef TQP_MPIUTIL_H
#define TQP_MPIUTIL_H

#include <mpi.h>

#include "tqp/error.h"

/* Wrap an MPI call: on failure record TQP_EMPI with the call's text and return. */
#define TQP_MPI_CHECK(call)                                                                        \
    do {                                                                                           \
        int tqp_mpi_rc_ = (call);                                                                  \
        if (tqp_mpi_rc_ != MPI_SUCCESS)                                                            \
            return tqp_error_set(TQP_EMPI, "%s:%d: %s failed (code %d)", __FILE__, __LINE__,       \
                                 #call, tqp_mpi_rc_);                                              \
    } while (0)

/* Collective.  Every rank passes its local status; all ranks return the status of the lowest
 * failing rank (TQP_OK if none failed), and every rank's error message becomes that rank's
 * message.  Call it after any phase that can fail on some ranks only, before the next
 * collective, so that a local failure never leaves the other ranks waiting. */
tqp_status tqp_mpi_agree(MPI_Comm comm, tqp_status local);

/* Collective.  The physical memory of this rank's node in bytes (0 if unknown) and the number
 * of ranks of `comm` that share it. */
tqp_status tqp_node_memory(MPI_Comm comm, double *bytes, double *ranks_here);

/* Collective.  The ranks of `comm` that share this rank's node (MPI_COMM_TYPE_SHARED), or, when
 * the environment sets TQP_NODE_RANKS=k and k divides the rank count, ranks r / k taken as one
 * node (to exercise node-aware code on one machine).  Free *node with MPI_Comm_free. */
tqp_status tqp_node_comm(MPI_Comm comm, MPI_Comm *node);

/* Block partition of n items over P ranks: rank r owns [*begin, *end). */
void tqp_partition(long n, int P, int r, long *begin, long *end);

#endif
