/* Cross-rank error agreement and work partitioning. */
#include "tqp/mpiutil.h"

#include "tqp/io.h"

#include <stdlib.h>
#include <string.h>

tqp_status tqp_mpi_agree(MPI_Comm comm, tqp_status local)
{
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int mine = local != TQP_OK ? rank : size, first = size;
    TQP_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
    if (first == size) return TQP_OK;
    struct {
        int status;
        char msg[1024];
    } e = {0};
    if (rank == first) {
        e.status = local;
        strncpy(e.msg, tqp_error_message(), sizeof e.msg - 1);
    }
    TQP_MPI_CHECK(MPI_Bcast(&e, (int)sizeof e, MPI_BYTE, first, comm));
    tqp_error_set((tqp_status)e.status, "%s", e.msg);
    return (tqp_status)e.status;
}

void tqp_partition(long n, int P, int r, long *begin, long *end)
{
    long q = n / P, rem = n % P;
    *begin = r * q + (r < rem ? r : rem);
    *end = *begin + q + (r < rem ? 1 : 0);
}

tqp_status tqp_node_comm(MPI_Comm comm, MPI_Comm *node)
{
    int rank, P;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &P);
    const char *e = getenv("TQP_NODE_RANKS");
    char *end = NULL;
    long k = e ? strtol(e, &end, 10) : 0;
    if (e && *end == '\0' && k > 0 && P % k == 0) {
        TQP_MPI_CHECK(MPI_Comm_split(comm, (int)(rank / k), rank, node));
        return TQP_OK;
    }
    TQP_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, node));
    return TQP_OK;
}

tqp_status tqp_node_memory(MPI_Comm comm, double *bytes, double *ranks_here)
{
    MPI_Comm node;
    int n = 1;
    TQP_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
    MPI_Comm_size(node, &n);
    MPI_Comm_free(&node);
    *bytes = tqp_physical_memory();
    *ranks_here = n;
    return TQP_OK;
}
