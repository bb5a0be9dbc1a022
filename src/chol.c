/* Cholesky factorization with ScaLAPACK pdpotrf (see include/tqp/chol.h).
 *
 * Layout: ScaLAPACK is column-major.  The local part `a` of rank (myr, myc) is an (lld, nloc)
 * column-major block holding the global elements (i, j) whose row block i / nb is dealt to
 * process row myr and column block j / nb to process column myc (block-cyclic from (0, 0)).
 * Element (i, j) of the ScaLAPACK matrix is taken from A[i * n + j], the row-major (i, j), so
 * ScaLAPACK sees A itself; pdpotrf("L") reads only its lower triangle and overwrites it with
 * the lower factor, and element (i, j), i >= j, goes back to L[i * n + j].
 *
 * Not done here: the BLACS are not shut down (no blacs_exit); each call builds its grid on
 * comm and frees it, with its system handle, before returning.
 */
#include "tqp/chol.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/mpiutil.h"
#include "tqp/rblas.h"

/* BLACS and ScaLAPACK (no header ships with them).  Fortran routines take every argument by
 * reference and, for each CHARACTER argument, a hidden length after the last argument. */
int Csys2blacs_handle(MPI_Comm comm);
void Cfree_blacs_system_handle(int handle);
void Cblacs_gridinit(int *ctxt, char *order, int nprow, int npcol);
void Cblacs_gridinfo(int ctxt, int *nprow, int *npcol, int *myrow, int *mycol);
void Cblacs_gridexit(int ctxt);
int numroc_(const int *n, const int *nb, const int *iproc, const int *isrcproc, const int *nprocs);
void descinit_(int *desc, const int *m, const int *n, const int *mb, const int *nb,
               const int *irsrc, const int *icsrc, const int *ctxt, const int *lld, int *info);
int pilaenv_(const int *ictxt, const char *prec, size_t prec_len);
void pdpotrf_(const char *uplo, const int *n, double *a, const int *ia, const int *ja,
              const int *desc, int *info, size_t uplo_len);

/* Largest elements per MPI_Allreduce call, well under INT_MAX. */
#define CHUNK ((size_t)1 << 27)

typedef struct {
    int sys, ctxt;      // BLACS system handle of comm, and the grid's context
    int pr, pc;         // grid shape
    int myr, myc;       // my place in it; myr < 0 if this rank is outside the grid
    int nb, mloc, nloc; // block size; my local rows and columns
    int lld;            // leading dimension of my local part, >= 1
} chol_grid;

void tqp_chol_grid_shape(int P, int *pr, int *pc)
{
    int r = 1;
    for (int d = 1; (long)d * d <= P; d++)
        if (P % d == 0) r = d;
    *pr = r;
    *pc = P / r;
}

/* Collective on comm: build the grid and the local layout for an (n, n) matrix. */
static void grid_open(MPI_Comm comm, int n, int nb, chol_grid *g)
{
    int P, zero = 0;
    MPI_Comm_size(comm, &P);
    tqp_chol_grid_shape(P, &g->pr, &g->pc);
    g->sys = Csys2blacs_handle(comm);
    g->ctxt = g->sys;
    char order[] = "Row";
    Cblacs_gridinit(&g->ctxt, order, g->pr, g->pc);
    Cblacs_gridinfo(g->ctxt, &g->pr, &g->pc, &g->myr, &g->myc);
    g->nb = nb;
    g->mloc = g->nloc = 0;
    if (g->myr >= 0 && g->myc >= 0) {
        g->mloc = numroc_(&n, &nb, &g->myr, &zero, &g->pr);
        g->nloc = numroc_(&n, &nb, &g->myc, &zero, &g->pc);
    } else {
        g->myr = -1;
    }
    g->lld = g->mloc > 1 ? g->mloc : 1;
}

static void grid_close(chol_grid *g)
{
    if (g->myr >= 0) Cblacs_gridexit(g->ctxt);
    Cfree_blacs_system_handle(g->sys);
}

/* Global index of local index l along a dimension dealt over np processes, for process p. */
static int64_t to_global(int64_t l, int nb, int p, int np)
{
    return (l / nb * np + p) * nb + l % nb;
}

/* a (lld, nloc) column-major <- my block-cyclic part of A (n, n) row-major. */
static void copy_local(const chol_grid *g, int n, const double *A, double *a)
{
    for (int64_t jl = 0; jl < g->nloc; jl++) {
        int64_t j = to_global(jl, g->nb, g->myc, g->pc);
        for (int64_t il = 0; il < g->mloc; il++) {
            int64_t i = to_global(il, g->nb, g->myr, g->pr);
            a[jl * g->lld + il] = A[i * n + j];
        }
    }
}

/* L (n, n) row-major <- zeros, except my local elements on or below the diagonal. */
static void place_factor(const chol_grid *g, int n, const double *a, double *L)
{
    memset(L, 0, sizeof(double) * (size_t)n * (size_t)n);
    for (int64_t jl = 0; jl < g->nloc; jl++) {
        int64_t j = to_global(jl, g->nb, g->myc, g->pc);
        for (int64_t il = 0; il < g->mloc; il++) {
            int64_t i = to_global(il, g->nb, g->myr, g->pr);
            if (i >= j) L[i * n + j] = a[jl * g->lld + il];
        }
    }
}

/* Collective: sum x (count) over comm in place, in chunks that fit an int count. */
static tqp_status allreduce_sum(MPI_Comm comm, double *x, size_t count)
{
    for (size_t off = 0; off < count; off += CHUNK) {
        size_t len = count - off < CHUNK ? count - off : CHUNK;
        TQP_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, x + off, (int)len, MPI_DOUBLE, MPI_SUM, comm));
    }
    return TQP_OK;
}

/* Grid ranks: desc <- the descriptor of my local part (outside the grid: nothing to do). */
static tqp_status describe(const chol_grid *g, int n, int *desc)
{
    int zero = 0, dinfo = 0;
    if (g->myr < 0) return TQP_OK;
    descinit_(desc, &n, &n, &g->nb, &g->nb, &zero, &zero, &g->ctxt, &g->lld, &dinfo);
    if (dinfo != 0)
        return tqp_error_set(TQP_EINTERNAL, "chol: descinit: argument %d is illegal", -dinfo);
    return TQP_OK;
}

static int64_t rblas_calls(void)
{
    tqp_rblas_counts c;
    tqp_rblas_get_counts(&c);
    return c.gemm + c.syrk + c.trsm + c.gemv + c.dot + c.axpy + c.scal + c.copy;
}

/* Grid ranks: PBLAS cuts its updates into pieces of pilaenv columns; a block no wider keeps
 * every panel in one piece on every grid (docs/quantize.md, "Determinism"). */
static tqp_status check_nb(const chol_grid *g)
{
    if (g->myr < 0) return TQP_OK;
    int pb = pilaenv_(&g->ctxt, "D", 1);
    if (g->nb > pb)
        return tqp_error_set(TQP_EINPUT,
                             "chol: block size %d is wider than PBLAS's internal block (%d): the "
                             "factor would depend on the grid",
                             g->nb, pb);
    return TQP_OK;
}

/* Collective: the same *info and status on every rank from each rank's pdpotrf info and its
 * count of calls that reached the reproducible BLAS (calls). */
static tqp_status agree_info(MPI_Comm comm, int n, int local, int64_t calls, int *info)
{
    int64_t mine[3] = {local, -local, calls}, most[3];
    TQP_MPI_CHECK(MPI_Allreduce(mine, most, 3, MPI_INT64_T, MPI_MAX, comm));
    if (n >= 2 && most[2] == 0)
        return tqp_error_set(TQP_EINTERNAL,
                             "chol: pdpotrf made no call to TQP's reproducible BLAS (is ScaLAPACK "
                             "linked statically?): the factor would depend on the rank count");
    *info = most[1] > 0 ? (int)-most[1] : (int)most[0];
    if (*info < 0)
        return tqp_error_set(TQP_EINTERNAL, "chol: pdpotrf: argument %d is illegal", -*info);
    if (*info > 0)
        return tqp_error_set(TQP_ENUMERIC,
                             "chol: %d x %d matrix is not positive definite: its leading minor "
                             "of order %d is not",
                             n, n, *info);
    return TQP_OK;
}

tqp_status tqp_chol_factor(MPI_Comm comm, int n, const double *A, double *L, int nb, int *info)
{
    *info = 0;
    if (n < 0) return tqp_error_set(TQP_EINPUT, "chol: negative order %d", n);
    if (n == 0) return TQP_OK;
    if (!tqp_rblas_bound())
        return tqp_error_set(TQP_EINTERNAL,
                             "chol: this executable does not export TQP's reproducible BLAS "
                             "(dgemm_ etc.) to ScaLAPACK: the factor would depend on the rank "
                             "count");
    chol_grid g;
    grid_open(comm, n, nb > 0 ? nb : TQP_CHOL_DEFAULT_NB, &g);
    double *a = tqp_malloc(sizeof(double) * (size_t)g.lld * (size_t)(g.nloc > 1 ? g.nloc : 1));
    int desc[9], one = 1, pinfo = 0;
    tqp_status s = a ? check_nb(&g) : TQP_ENOMEM;
    if (s == TQP_OK) s = describe(&g, n, desc);
    s = tqp_mpi_agree(comm, s);
    if (s == TQP_OK) {
        copy_local(&g, n, A, a);
        int64_t calls = rblas_calls();
        if (g.myr >= 0) pdpotrf_("L", &n, a, &one, &one, desc, &pinfo, 1);
        s = agree_info(comm, n, pinfo, rblas_calls() - calls, info);
    }
    if (s == TQP_OK) {
        place_factor(&g, n, a, L);
        s = allreduce_sum(comm, L, (size_t)n * (size_t)n);
    }
    free(a);
    grid_close(&g);
    return s;
}
