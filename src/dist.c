/* Row-distributed dense matrices (see include/tqp/dist.h). */
#include "tqp/dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/mpiutil.h"
#include "tqp/rblas.h"

/* Largest piece of one message, in doubles (well under INT_MAX). */
#define PIECE ((int64_t)1 << 27)
/* Rows of H per broadcast panel in tqp_dist_row_losses (the result does not depend on it). */
#define LOSS_PANEL 32
/* Rows of the local block per product in tqp_dist_row_losses (the result does not depend on
 * it either). */
#define LOSS_ROWS 64

void tqp_dist_offsets(int64_t n, int P, int64_t *off)
{
    for (int p = 0; p <= P; p++) {
        long b, e;
        if (p == P) {
            off[p] = n;
            break;
        }
        tqp_partition((long)n, P, p, &b, &e);
        off[p] = b;
    }
}

static int64_t pieces(int64_t count)
{
    return (count + PIECE - 1) / PIECE;
}

/* Collective with one peer pair: send count doubles to dst and receive rcount from src, in
 * pieces an MPI count can hold, each tagged with its index. */
static tqp_status exchange(MPI_Comm comm, const double *sbuf, int64_t count, int dst, double *rbuf,
                           int64_t rcount, int src)
{
    int64_t ns = pieces(count), nr = pieces(rcount), np = ns > nr ? ns : nr;
    int rc = MPI_SUCCESS;
    /* piece i of each direction at step i: the partner posts the matching piece at its own
     * step i, which it reaches since its count of steps includes that piece */
    for (int64_t i = 0; i < np && rc == MPI_SUCCESS; i++) {
        MPI_Request req[2];
        int nreq = 0;
        int64_t o = i * PIECE;
        if (i < nr)
            rc = MPI_Irecv(rbuf + o, (int)(rcount - o < PIECE ? rcount - o : PIECE), MPI_DOUBLE,
                           src, (int)(i & 0x7fff), comm, &req[nreq++]);
        if (i < ns && rc == MPI_SUCCESS)
            rc = MPI_Isend(sbuf + o, (int)(count - o < PIECE ? count - o : PIECE), MPI_DOUBLE,
                           dst, (int)(i & 0x7fff), comm, &req[nreq++]);
        if (rc == MPI_SUCCESS) rc = MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    }
    return rc == MPI_SUCCESS ? TQP_OK
                             : tqp_error_set(TQP_EMPI, "block exchange with ranks %d and %d failed",
                                             dst, src);
}

tqp_status tqp_dist_alltoallv(MPI_Comm comm, const double *sbuf, const int64_t *scount,
                              const int64_t *sdispl, double *rbuf, const int64_t *rcount,
                              const int64_t *rdispl)
{
    int P, me;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    if (scount[me]) memcpy(rbuf + rdispl[me], sbuf + sdispl[me], sizeof(double) * (size_t)scount[me]);
    tqp_status st = TQP_OK;
    for (int k = 1; k < P && st == TQP_OK; k++) {
        int dst = (me + k) % P, src = (me - k + P) % P;
        st = exchange(comm, sbuf + sdispl[dst], scount[dst], dst, rbuf + rdispl[src],
                      rcount[src], src);
    }
    return st;
}

tqp_status tqp_dist_transpose(MPI_Comm comm, int64_t m, int64_t n, const int64_t *ra,
                              const int64_t *rt, const double *A, double *T)
{
    int P, me;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    int64_t mine = ra[me + 1] - ra[me], cols = rt[me + 1] - rt[me], sb = 0, rb = 0;
    for (int q = 0; q < P; q++) {
        if (q == me) continue;
        int64_t so = mine * (rt[q + 1] - rt[q]), ro = (ra[q + 1] - ra[q]) * cols;
        sb = so > sb ? so : sb, rb = ro > rb ? ro : rb;
    }
    /* my own block moves in place; each other rank's block goes through one send and one
     * receive buffer, one peer pair at a time (step k: to me + k, from me - k) */
    double *sbuf = tqp_malloc(sizeof(double) * (size_t)(sb + 1));
    double *rbuf = tqp_malloc(sizeof(double) * (size_t)(rb + 1));
    tqp_status s = tqp_mpi_agree(comm, sbuf && rbuf ? TQP_OK : TQP_ENOMEM);
    for (int64_t j = 0; s == TQP_OK && j < cols; j++)
        for (int64_t i = 0; i < mine; i++) T[j * m + ra[me] + i] = A[i * n + rt[me] + j];
    for (int k = 1; s == TQP_OK && k < P; k++) {
        int dst = (me + k) % P, src = (me - k + P) % P;
        int64_t dc = rt[dst + 1] - rt[dst], sr = ra[src + 1] - ra[src];
        for (int64_t j = 0; j < dc; j++) /* my rows x dst's columns, column by column */
            for (int64_t i = 0; i < mine; i++) sbuf[j * mine + i] = A[i * n + rt[dst] + j];
        s = exchange(comm, sbuf, mine * dc, dst, rbuf, sr * cols, src);
        for (int64_t j = 0; s == TQP_OK && j < cols && sr; j++)
            memcpy(T + j * m + ra[src], rbuf + j * sr, sizeof(double) * (size_t)sr);
    }
    free(sbuf), free(rbuf);
    return s;
}

tqp_status tqp_dist_sumsq(MPI_Comm comm, const double *x, size_t count, double *ss)
{
    int P, me;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    double acc = 0;
    if (me > 0) TQP_MPI_CHECK(MPI_Recv(&acc, 1, MPI_DOUBLE, me - 1, 0, comm, MPI_STATUS_IGNORE));
    for (size_t i = 0; i < count; i++) acc += x[i] * x[i];
    if (me < P - 1) TQP_MPI_CHECK(MPI_Send(&acc, 1, MPI_DOUBLE, me + 1, 0, comm));
    TQP_MPI_CHECK(MPI_Bcast(&acc, 1, MPI_DOUBLE, P - 1, comm));
    *ss = acc;
    return TQP_OK;
}

tqp_status tqp_dist_row_losses(MPI_Comm comm, const int64_t *off, const double *Hr, int n,
                               int rows, const double *D, const double *W, double *lb)
{
    int P, me;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    double *Hp = tqp_malloc(sizeof(double) * ((size_t)LOSS_PANEL * n + 1));
    double *Y = tqp_malloc(sizeof(double) * (2 * (size_t)LOSS_ROWS * LOSS_PANEL + 1));
    tqp_status s = tqp_mpi_agree(comm, Hp && Y ? TQP_OK : TQP_ENOMEM);
    for (int r = 0; s == TQP_OK && r < 2 * rows; r++) lb[r] = 0;
    double *Yw = Y + (size_t)LOSS_ROWS * LOSS_PANEL;
    for (int q = 0; s == TQP_OK && q < P; q++)
        for (int64_t i0 = off[q]; s == TQP_OK && i0 < off[q + 1]; i0 += LOSS_PANEL) {
            int w = (int)(off[q + 1] - i0 < LOSS_PANEL ? off[q + 1] - i0 : LOSS_PANEL);
            if (q == me) memcpy(Hp, Hr + (i0 - off[me]) * n, sizeof(double) * (size_t)w * n);
            if (MPI_Bcast(Hp, w * n, MPI_DOUBLE, q, comm) != MPI_SUCCESS) {
                s = tqp_error_set(TQP_EMPI, "proxy loss: broadcast of Hessian rows failed");
                break;
            }
            /* blocks of LOSS_ROWS rows, so that the reproducible BLAS packs at most
             * (LOSS_PANEL + LOSS_ROWS) n values (each element is its own chain: the same bits) */
            for (int r0 = 0; r0 < rows; r0 += LOSS_ROWS) {
                int rb = rows - r0 < LOSS_ROWS ? rows - r0 : LOSS_ROWS;
                const double *Db = D + (size_t)r0 * n, *Wb = W + (size_t)r0 * n;
                /* column-major (w, rb): Y[r][c] = sum_k H[i0 + c][k] v_r[k] */
                tqp_rblas_dgemm('T', 'N', w, rb, n, 1.0, Hp, n, Db, n, 0.0, Y, w);
                tqp_rblas_dgemm('T', 'N', w, rb, n, 1.0, Hp, n, Wb, n, 0.0, Yw, w);
                for (int r = 0; r < rb; r++) {
                    const double *d = Db + (size_t)r * n + i0, *x = Wb + (size_t)r * n + i0;
                    double a = lb[2 * (r0 + r)], b = lb[2 * (r0 + r) + 1];
                    for (int c = 0; c < w; c++) {
                        a = fma(d[c], Y[(size_t)r * w + c], a);
                        b = fma(x[c], Yw[(size_t)r * w + c], b);
                    }
                    lb[2 * (r0 + r)] = a, lb[2 * (r0 + r) + 1] = b;
                }
            }
        }
    free(Hp), free(Y);
    return s;
}
