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

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/dist.h"
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

void tqp_chol_grid_shape(int P, int *pr, int *pc)
{
    int r = 1;
    for (int d = 1; (long)d * d <= P; d++)
        if (P % d == 0) r = d;
    *pr = r;
    *pc = P / r;
}

/* Global index of local index l along a dimension dealt over np processes, for process p. */
static int64_t to_global(int64_t l, int nb, int p, int np)
{
    return (l / nb * np + p) * nb + l % nb;
}

/* Process owning global index g along a dimension dealt over np processes, and its local index. */
static int owner(int64_t g, int nb, int np, int64_t *l)
{
    int64_t blk = g / nb;
    *l = blk / np * nb + g % nb;
    return (int)(blk % np);
}

static int64_t rblas_calls(void)
{
    tqp_rblas_counts c;
    tqp_rblas_get_counts(&c);
    return c.gemm + c.syrk + c.trsm + c.gemv + c.dot + c.axpy + c.scal + c.copy;
}

/* Grid ranks: PBLAS cuts its updates into pieces of pilaenv columns; a block no wider keeps
 * every panel in one piece on every grid (docs/quantize.md, "Determinism"). */
static tqp_status check_nb(const tqp_dfactor *f)
{
    if (f->myr < 0) return TQP_OK;
    int pb = pilaenv_(&f->ctxt, "D", 1);
    if (f->nb > pb)
        return tqp_error_set(TQP_EINPUT,
                             "chol: block size %d is wider than PBLAS's internal block (%d): the "
                             "factor would depend on the grid",
                             f->nb, pb);
    return TQP_OK;
}

tqp_status tqp_dfactor_open(MPI_Comm comm, int n, int nb, tqp_dfactor *f)
{
    memset(f, 0, sizeof *f);
    f->comm = comm, f->n = n, f->nb = nb > 0 ? nb : TQP_CHOL_DEFAULT_NB, f->myr = -1;
    if (n < 0) return tqp_error_set(TQP_EINPUT, "chol: negative order %d", n);
    if (!tqp_rblas_bound())
        return tqp_error_set(TQP_EINTERNAL,
                             "chol: this executable does not export TQP's reproducible BLAS "
                             "(dgemm_ etc.) to ScaLAPACK: the factor would depend on the rank "
                             "count");
    int P, zero = 0;
    MPI_Comm_size(comm, &P);
    tqp_chol_grid_shape(P, &f->pr, &f->pc);
    f->sys = Csys2blacs_handle(comm);
    f->ctxt = f->sys;
    char order[] = "Row";
    Cblacs_gridinit(&f->ctxt, order, f->pr, f->pc);
    f->grid = 1;
    Cblacs_gridinfo(f->ctxt, &f->pr, &f->pc, &f->myr, &f->myc);
    if (f->myr >= 0 && f->myc >= 0) {
        f->mloc = numroc_(&n, &f->nb, &f->myr, &zero, &f->pr);
        f->nloc = numroc_(&n, &f->nb, &f->myc, &zero, &f->pc);
    } else {
        f->myr = -1;
    }
    f->lld = f->mloc > 1 ? f->mloc : 1;
    f->a = tqp_malloc(sizeof(double) * (size_t)f->lld * (size_t)(f->nloc > 1 ? f->nloc : 1));
    tqp_status s = f->a ? check_nb(f) : TQP_ENOMEM;
    s = tqp_mpi_agree(comm, s);
    if (s != TQP_OK) tqp_dfactor_close(f);
    return s;
}

void tqp_dfactor_close(tqp_dfactor *f)
{
    if (f->grid) {
        if (f->myr >= 0) Cblacs_gridexit(f->ctxt);
        Cfree_blacs_system_handle(f->sys);
    }
    free(f->a);
    free(f->diag);
    memset(f, 0, sizeof *f);
}

void tqp_dfactor_load(tqp_dfactor *f, const double *A, double shift)
{
    int64_t n = f->n;
    for (int64_t jl = 0; jl < f->nloc; jl++) {
        int64_t j = to_global(jl, f->nb, f->myc, f->pc);
        for (int64_t il = 0; il < f->mloc; il++) {
            int64_t i = to_global(il, f->nb, f->myr, f->pr);
            double v = i >= j ? A[i * n + j] : 0.0;
            f->a[jl * f->lld + il] = i == j ? v + shift : v;
        }
    }
    free(f->diag);
    f->diag = NULL, f->diag_tile = 0;
}

/* Columns [j0, j1) of row i that are in block column jb and at or left of the diagonal. */
static int64_t block_cols(int64_t i, int64_t jb, int nb, int64_t *j0)
{
    *j0 = jb * nb;
    int64_t j1 = *j0 + nb < i + 1 ? *j0 + nb : i + 1;
    return j1 > *j0 ? j1 - *j0 : 0;
}

tqp_status tqp_dfactor_load_rows(tqp_dfactor *f, const int64_t *off, const double *Ar,
                                 double shift)
{
    int P, me;
    MPI_Comm_size(f->comm, &P);
    MPI_Comm_rank(f->comm, &me);
    int64_t n = f->n, nb = f->nb, j0;
    int64_t *cnt = tqp_calloc(4 * (size_t)P, sizeof(int64_t));
    if (tqp_mpi_agree(f->comm, cnt ? TQP_OK : TQP_ENOMEM) != TQP_OK) {
        free(cnt);
        return TQP_ENOMEM;
    }
    int64_t *sd = cnt + P, *rc = cnt + 2 * P, *rd = cnt + 3 * P;
    /* what I send to grid process (r, c) = rank r * pc + c: my rows in process row r, their
     * columns at or left of the diagonal in process column c, row by row, left to right */
    for (int64_t i = off[me]; i < off[me + 1]; i++) {
        int r = (int)(i / nb % f->pr);
        for (int64_t jb = 0; jb * nb <= i; jb++)
            cnt[r * f->pc + (int)(jb % f->pc)] += block_cols(i, jb, (int)nb, &j0);
    }
    if (f->myr >= 0)
        for (int q = 0; q < P; q++)
            for (int64_t i = off[q]; i < off[q + 1]; i++) {
                if (i / nb % f->pr != f->myr) continue;
                for (int64_t jb = f->myc; jb * nb <= i; jb += f->pc)
                    rc[q] += block_cols(i, jb, (int)nb, &j0);
            }
    int64_t so = 0, ro = 0;
    for (int q = 0; q < P; q++) sd[q] = so, so += cnt[q], rd[q] = ro, ro += rc[q];
    double *sbuf = tqp_malloc(sizeof(double) * (size_t)(so + 1));
    double *rbuf = tqp_malloc(sizeof(double) * (size_t)(ro + 1));
    int64_t *pos = tqp_malloc(sizeof(int64_t) * (size_t)P);
    tqp_status s = tqp_mpi_agree(f->comm, sbuf && rbuf && pos ? TQP_OK : TQP_ENOMEM);
    if (s == TQP_OK) {
        memcpy(pos, sd, sizeof(int64_t) * (size_t)P);
        for (int64_t i = off[me]; i < off[me + 1]; i++) {
            int r = (int)(i / nb % f->pr);
            for (int64_t jb = 0; jb * nb <= i; jb++) {
                int64_t w = block_cols(i, jb, (int)nb, &j0), *p = &pos[r * f->pc + (int)(jb % f->pc)];
                memcpy(sbuf + *p, Ar + (i - off[me]) * n + j0, sizeof(double) * (size_t)w);
                *p += w;
            }
        }
        s = tqp_dist_alltoallv(f->comm, sbuf, cnt, sd, rbuf, rc, rd);
    }
    if (s == TQP_OK && f->myr >= 0) {
        memset(f->a, 0, sizeof(double) * (size_t)f->lld * (size_t)f->nloc);
        for (int q = 0; q < P; q++) {
            const double *v = rbuf + rd[q];
            for (int64_t i = off[q]; i < off[q + 1]; i++) {
                if (i / nb % f->pr != f->myr) continue;
                int64_t il;
                owner(i, f->nb, f->pr, &il);
                for (int64_t jb = f->myc; jb * nb <= i; jb += f->pc) {
                    int64_t w = block_cols(i, jb, (int)nb, &j0), jl;
                    owner(j0, f->nb, f->pc, &jl);
                    for (int64_t c = 0; c < w; c++)
                        f->a[(jl + c) * f->lld + il] = j0 + c == i ? v[c] + shift : v[c];
                    v += w;
                }
            }
        }
    }
    free(f->diag);
    f->diag = NULL, f->diag_tile = 0;
    free(cnt), free(sbuf), free(rbuf), free(pos);
    return tqp_mpi_agree(f->comm, s);
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

tqp_status tqp_dfactor_factor(tqp_dfactor *f, int *info)
{
    *info = 0;
    if (f->n == 0) return TQP_OK;
    int desc[9], one = 1, zero = 0, pinfo = 0, dinfo = 0;
    if (f->myr >= 0) {
        descinit_(desc, &f->n, &f->n, &f->nb, &f->nb, &zero, &zero, &f->ctxt, &f->lld, &dinfo);
        if (dinfo != 0) pinfo = dinfo; /* an illegal argument, reported below */
    }
    int64_t calls = rblas_calls();
    if (f->myr >= 0 && dinfo == 0) pdpotrf_("L", &f->n, f->a, &one, &one, desc, &pinfo, 1);
    return agree_info(f->comm, f->n, pinfo, rblas_calls() - calls, info);
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

/* My element C[i][j] (global indices, i >= j, owned by me). */
static double local_el(const tqp_dfactor *f, int64_t i, int64_t j)
{
    int64_t il, jl;
    owner(i, f->nb, f->pr, &il);
    owner(j, f->nb, f->pc, &jl);
    return f->a[jl * f->lld + il];
}

static int mine(const tqp_dfactor *f, int64_t i, int64_t j)
{
    int64_t l;
    return f->myr >= 0 && owner(i, f->nb, f->pr, &l) == f->myr && owner(j, f->nb, f->pc, &l) == f->myc;
}

/* Collective: the diagonal blocks of C (tile x tile, row-major, block b at diag + b*tile*tile),
 * on every rank. */
static tqp_status cache_diag(tqp_dfactor *f, int tile)
{
    if (f->diag_tile == tile) return TQP_OK;
    free(f->diag);
    f->diag_tile = 0;
    int64_t nblk = (f->n + tile - 1) / tile;
    size_t count = (size_t)nblk * tile * tile;
    f->diag = tqp_calloc(count ? count : 1, sizeof(double));
    TQP_CHECK(tqp_mpi_agree(f->comm, f->diag ? TQP_OK : TQP_ENOMEM));
    for (int64_t b = 0; b < nblk; b++)
        for (int r = 0; r < tile && b * tile + r < f->n; r++)
            for (int c = 0; c <= r; c++)
                if (mine(f, b * tile + r, b * tile + c))
                    f->diag[(b * tile + r) * tile + c] = local_el(f, b * tile + r, b * tile + c);
    TQP_CHECK(allreduce_sum(f->comm, f->diag, count));
    f->diag_tile = tile;
    return TQP_OK;
}

void tqp_solve_block_row(const double *Cbb, int ld, int w, double *x)
{
    for (int j = w - 1; j >= 0; j--) {
        double t = x[j];
        for (int k = w - 1; k > j; k--) t = fma(-x[k], Cbb[(size_t)k * ld + j], t);
        x[j] = t / Cbb[(size_t)j * ld + j];
    }
}

tqp_status tqp_dfactor_lu_rows(tqp_dfactor *f, int tile, int r0, int r1, double *P)
{
    if (tile < 1 || f->nb % tile || r0 % tile || r0 < 0 || r1 > f->n || r0 > r1)
        return tqp_error_set(TQP_EINTERNAL, "chol: rows [%d, %d) of a tile-%d factor (nb %d)", r0,
                             r1, tile, f->nb);
    TQP_CHECK(cache_diag(f, tile));
    int64_t w = r1 - r0;
    memset(P, 0, sizeof(double) * (size_t)(w * r1));
    double x[TQP_CHOL_DEFAULT_NB];
    for (int64_t i = r0; i < r1; i++) {
        double *row = P + (i - r0) * r1;
        for (int64_t b0 = 0; b0 <= i; b0 += tile) {
            if (!mine(f, i, b0)) continue; /* a tile lies in one block column */
            if (i < b0 + tile) {           /* the block holding the diagonal: the identity */
                row[i] = 1.0;
                continue;
            }
            int bw = tile; /* a whole block left of the diagonal one */
            for (int c = 0; c < bw; c++) x[c] = local_el(f, i, b0 + c);
            tqp_solve_block_row(f->diag + b0 * tile, tile, bw, x);
            memcpy(row + b0, x, sizeof(double) * (size_t)bw);
        }
    }
    return allreduce_sum(f->comm, P, (size_t)(w * r1));
}

tqp_status tqp_dfactor_gather(tqp_dfactor *f, double *L)
{
    int64_t n = f->n;
    memset(L, 0, sizeof(double) * (size_t)(n * n));
    for (int64_t jl = 0; jl < f->nloc; jl++) {
        int64_t j = to_global(jl, f->nb, f->myc, f->pc);
        for (int64_t il = 0; il < f->mloc; il++) {
            int64_t i = to_global(il, f->nb, f->myr, f->pr);
            if (i >= j) L[i * n + j] = f->a[jl * f->lld + il];
        }
    }
    return allreduce_sum(f->comm, L, (size_t)(n * n));
}

tqp_status tqp_chol_factor(MPI_Comm comm, int n, const double *A, double *L, int nb, int *info)
{
    *info = 0;
    if (n < 0) return tqp_error_set(TQP_EINPUT, "chol: negative order %d", n);
    tqp_dfactor f;
    TQP_CHECK(tqp_dfactor_open(comm, n, nb, &f));
    tqp_dfactor_load(&f, A, 0.0);
    tqp_status s = tqp_dfactor_factor(&f, info);
    if (s == TQP_OK) s = tqp_dfactor_gather(&f, L);
    tqp_dfactor_close(&f);
    return s;
}
