/* Exact distributed Hessian accumulation in 128-bit fixed point (see include/tqp/hacc.h for the
 * invariants).  Staging converts windows to float64; a flush computes, for each owner's rows,
 * every staged window's panel products with dgemm, rounds them to fixed point, and reduces
 * them to the owner with an exact integer sum. */
#include "tqp/hacc.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/mpiutil.h"
#include "tqp/threads.h"

typedef __int128 fix;
#define FIX_ONE   18446744073709551616.0 /* 2^64 */
#define FIX_LIMIT 9223372036854775808.0  /* 2^63: largest |value| representable */

struct tqp_hacc {
    MPI_Comm comm;
    int P, rank, n;
    int64_t r0, r1;   // my rows
    fix *acc;         // (r1 - r0, r1) my rows' running sums
    fix *colsum;      // (n) local column sums
    double *rows;     // (r1 - r0, r1) float64 result after finalize
    double *colsum_d; // (n) global column sums after finalize
    int64_t count, count_global;
    double bound_global; // upper bound on every |H_ij| so far (sum of window diagonal maxima)
    double flops;
    int threads;
    /* staging: window slots, each at a token offset of the stage */
    double *stage; // (max_batch_tokens, n) float64 copies of staged windows
    int64_t max_tokens, staged_tokens;
    int *win_len;         // (max windows) token count of each slot (0: empty)
    int64_t *win_off;     // (max windows) token offset of each slot
    int n_win, max_win;   // n_win: slots appended by tqp_hacc_stage
    double bound_local;   // sum over staged windows of their diagonal maxima
    fix *send;            // one owner's contributions, packed like acc
    double *prod;         // (threads, TQP_HACC_PANEL, TQP_HACC_COLS) each thread's unit product
    double *wdiag, *wsum; // (n) one window's diagonal and column sums at the flush
    MPI_Datatype t128;
    MPI_Op add;
    /* two-level reduction (equal node sizes, several nodes of several ranks): an owner's sums are
     * first reduced inside each node to the rank with the owner's node-local index, then across
     * the nodes among those ranks, so one partial sum per node crosses the network */
    MPI_Comm node, cross; // ranks of my node; ranks of my node-local index on every node
    int *local_of, *cross_of; // (P) node-local index and cross rank of every rank
    int two_level, local;
    double reduce_seconds, reduce_bytes;
};

/* First panel of `rank`: the smallest p with p^2 * P >= rank * NP^2, so that every rank owns
 * about the same number of lower-triangle cells (rows near the end are longer). */
static int64_t first_panel(int64_t np, int P, int rank)
{
    int64_t p = (int64_t)((double)np * sqrt((double)rank / P));
    while (p > 0 && (p - 1) * (p - 1) * P >= (int64_t)rank * np * np)
        p--;
    while (p * p * P < (int64_t)rank * np * np)
        p++;
    return p;
}

void tqp_hacc_owner_rows(int n, int P, int rank, int64_t *r0, int64_t *r1)
{
    int64_t np = (n + TQP_HACC_PANEL - 1) / TQP_HACC_PANEL;
    int64_t p0 = first_panel(np, P, rank), p1 = first_panel(np, P, rank + 1);
    *r0 = p0 * TQP_HACC_PANEL < n ? p0 * TQP_HACC_PANEL : n;
    *r1 = p1 * TQP_HACC_PANEL < n ? p1 * TQP_HACC_PANEL : n;
}

/* MPI reduction: exact 128-bit sum (unsigned arithmetic, so overflow is defined; the range is
 * guarded separately). */
static void add128(void *in, void *inout, int *len, MPI_Datatype *t)
{
    const unsigned __int128 *a = in;
    unsigned __int128 *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] += a[i];
}

/* Elements of rows [0, i) of a packed lower triangle. */
static int64_t tri(int64_t i)
{
    return i * (i + 1) / 2;
}

/* The largest packed block any owner has. */
static int64_t max_owner_cells(int n, int P)
{
    int64_t most = 0, r0, r1;
    for (int r = 0; r < P; r++) {
        tqp_hacc_owner_rows(n, P, r, &r0, &r1);
        if (tri(r1) - tri(r0) > most) most = tri(r1) - tri(r0);
    }
    return most;
}

/* The widest unit of a flush (columns of a product buffer): min(n, TQP_HACC_COLS). */
static int64_t unit_cols(int n)
{
    return n < TQP_HACC_COLS ? n : TQP_HACC_COLS;
}

/* Zero `bytes` at p in 1 MiB pieces over `threads` threads (page faults and memory writes
 * are the cost of a large accumulator; threads share them). */
static void zero_threads(void *p, size_t bytes, int threads)
{
    const size_t piece = (size_t)1 << 20;
    int64_t np = (int64_t)((bytes + piece - 1) / piece);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && np > 1)
    for (int64_t i = 0; i < np; i++) {
        size_t off = (size_t)i * piece;
        memset((char *)p + off, 0, bytes - off < piece ? bytes - off : piece);
    }
}

/* malloc and touch every page now, so that page faults do not land in the timed work. */
static void *alloc_touched(size_t bytes, int threads)
{
    void *p = tqp_malloc_aligned(bytes ? bytes : 1);
    if (p) zero_threads(p, bytes, threads);
    return p;
}

static tqp_status alloc_buffers(tqp_hacc *h)
{
    int64_t mine = tri(h->r1) - tri(h->r0), most = max_owner_cells(h->n, h->P);
    h->acc = alloc_touched((size_t)mine * sizeof(fix), h->threads);
    h->colsum = tqp_calloc((size_t)h->n, sizeof(fix));
    h->colsum_d = tqp_calloc((size_t)h->n, sizeof(double));
    h->stage = alloc_touched((size_t)(h->max_tokens * h->n) * sizeof(double), h->threads);
    h->rows = alloc_touched((size_t)((h->r1 - h->r0) * h->r1) * sizeof(double), h->threads);
    h->wdiag = tqp_malloc(sizeof(double) * (size_t)h->n);
    h->wsum = tqp_malloc(sizeof(double) * (size_t)h->n);
    h->send = alloc_touched((size_t)most * sizeof(fix), h->threads);
    h->prod = alloc_touched((size_t)h->threads * TQP_HACC_PANEL * unit_cols(h->n) * sizeof(double),
                            h->threads);
    h->max_win = (int)(h->max_tokens < 1024 ? h->max_tokens : 1024);
    h->win_len = tqp_calloc((size_t)h->max_win, sizeof(int));
    h->win_off = tqp_calloc((size_t)h->max_win, sizeof(int64_t));
    return h->acc && h->colsum && h->colsum_d && h->stage && h->send && h->prod && h->win_len &&
                   h->win_off && h->rows && h->wdiag && h->wsum
               ? TQP_OK
               : TQP_ENOMEM;
}

/* The node and cross communicators of the two-level reduction, or h->two_level = 0 when the
 * nodes differ in size or there is only one node or one rank per node (a flat reduction). */
static tqp_status setup_levels(tqp_hacc *h)
{
    h->node = h->cross = MPI_COMM_NULL;
    TQP_CHECK(tqp_node_comm(h->comm, &h->node));
    int s, lo, hi, cr;
    MPI_Comm_size(h->node, &s);
    MPI_Comm_rank(h->node, &h->local);
    TQP_MPI_CHECK(MPI_Allreduce(&s, &lo, 1, MPI_INT, MPI_MIN, h->comm));
    TQP_MPI_CHECK(MPI_Allreduce(&s, &hi, 1, MPI_INT, MPI_MAX, h->comm));
    h->two_level = lo == hi && s > 1 && s < h->P;
    if (!h->two_level) return TQP_OK;
    TQP_MPI_CHECK(MPI_Comm_split(h->comm, h->local, h->rank, &h->cross));
    MPI_Comm_rank(h->cross, &cr);
    h->local_of = tqp_malloc(sizeof(int) * (size_t)h->P);
    h->cross_of = tqp_malloc(sizeof(int) * (size_t)h->P);
    TQP_CHECK(tqp_mpi_agree(h->comm, h->local_of && h->cross_of ? TQP_OK : TQP_ENOMEM));
    TQP_MPI_CHECK(MPI_Allgather(&h->local, 1, MPI_INT, h->local_of, 1, MPI_INT, h->comm));
    TQP_MPI_CHECK(MPI_Allgather(&cr, 1, MPI_INT, h->cross_of, 1, MPI_INT, h->comm));
    return TQP_OK;
}

tqp_status tqp_hacc_create(MPI_Comm comm, int n, int64_t max_batch_tokens, int threads,
                           tqp_hacc **out)
{
    *out = NULL;
    tqp_hacc *h = tqp_calloc(1, sizeof *h);
    if (!h) return TQP_ENOMEM;
    h->comm = comm;
    /* threaded OpenBLAS splits a product differently for other thread counts (and rounds
     * differently): the units of invariant 1 are single-threaded calls */
    tqp_blas_threads_set(1);
    MPI_Comm_size(comm, &h->P);
    MPI_Comm_rank(comm, &h->rank);
    h->n = n;
    h->max_tokens = max_batch_tokens;
    h->threads = threads < 1 ? 1 : threads;
    tqp_hacc_owner_rows(n, h->P, h->rank, &h->r0, &h->r1);
    tqp_status s = alloc_buffers(h);
    if (s == TQP_OK && (MPI_Type_contiguous(16, MPI_BYTE, &h->t128) != MPI_SUCCESS ||
                        MPI_Type_commit(&h->t128) != MPI_SUCCESS ||
                        MPI_Op_create(add128, 1, &h->add) != MPI_SUCCESS))
        s = tqp_error_set(TQP_EMPI, "cannot create the 128-bit MPI sum");
    s = tqp_mpi_agree(comm, s);
    if (s == TQP_OK) s = setup_levels(h);
    if (s != TQP_OK) {
        tqp_hacc_destroy(&h);
        return s;
    }
    *out = h;
    return TQP_OK;
}

void tqp_hacc_reset(tqp_hacc *h)
{
    zero_threads(h->acc, sizeof(fix) * (size_t)(tri(h->r1) - tri(h->r0)), h->threads);
    memset(h->colsum, 0, sizeof(fix) * (size_t)h->n);
    memset(h->colsum_d, 0, sizeof(double) * (size_t)h->n);
    memset(h->win_len, 0, sizeof(int) * (size_t)h->max_win);
    h->count = h->count_global = 0;
    h->bound_global = h->bound_local = h->flops = 0;
    h->reduce_seconds = h->reduce_bytes = 0;
    h->staged_tokens = 0;
    h->n_win = 0;
}

void tqp_hacc_destroy(tqp_hacc **ph)
{
    tqp_hacc *h = *ph;
    if (!h) return;
    if (h->add != MPI_OP_NULL && h->add) MPI_Op_free(&h->add);
    if (h->t128 != MPI_DATATYPE_NULL && h->t128) MPI_Type_free(&h->t128);
    if (h->node != MPI_COMM_NULL && h->node) MPI_Comm_free(&h->node);
    if (h->cross != MPI_COMM_NULL && h->cross) MPI_Comm_free(&h->cross);
    free(h->local_of);
    free(h->cross_of);
    void *bufs[] = {h->acc,     h->colsum, h->rows, h->colsum_d, h->stage,
                    h->win_len, h->send,   h->prod, h->wdiag,    h->wsum, h->win_off};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(h);
    *ph = NULL;
}

/* round(v * 2^64) for |v| < 2^63, ties to even, without library calls or branches on the data:
 * split |v| into its integer part hi (exact, below 2^63) and the fraction f = |v| - hi in
 * [0, 1), which is exact; f * 2^64 is exact and below 2^64, and is rounded to an integer by
 * adding and subtracting 2^52 when below 2^52 (above, it is one already); it is converted in
 * two halves around 2^63 with signed conversions.  A negative v negates the 128 bits with a
 * mask, (r ^ m) - m.  Random signs made the branches of a plain version mispredict often. */
static inline fix to_fix(double v)
{
    const double two52 = 4503599627370496.0, two63 = 9223372036854775808.0;
    double a = fabs(v);
    int64_t hi = (int64_t)a;
    double f = (a - (double)hi) * FIX_ONE;
    double g = f < two52 ? (f + two52) - two52 : f;
    uint64_t big = g >= two63;
    uint64_t lo = (uint64_t)(int64_t)(g - (double)big * two63) ^ (big << 63);
    uint64_t neg = (uint64_t)0 - (uint64_t)(v < 0);
    unsigned __int128 r = ((unsigned __int128)(uint64_t)hi << 64) | lo;
    unsigned __int128 m = ((unsigned __int128)neg << 64) | neg;
    return (fix)((r ^ m) - m);
}

fix tqp_hacc_to_fix_for_test(double v);
fix tqp_hacc_to_fix_for_test(double v)
{
    return to_fix(v);
}

tqp_status tqp_hacc_stage_at(tqp_hacc *h, int slot, int64_t offset, const float *x, int ntok,
                             const char *what)
{
    if (slot < 0 || slot >= h->max_win || offset < 0 || ntok < 0 || offset + ntok > h->max_tokens)
        return tqp_error_set(TQP_EINTERNAL, "%s: Hessian stage full", what);
    int n = h->n;
    double *dst = h->stage + offset * n;
    for (int t = 0; t < ntok; t++) {
        const float *xr = x + (size_t)t * n;
        double *dr = dst + (size_t)t * n;
        int bad = 0;
        for (int j = 0; j < n; j++) {
            double v = xr[j];
            bad |= !isfinite(v);
            dr[j] = v;
        }
        for (int j = 0; bad && j < n; j++)
            if (!isfinite(xr[j]))
                return tqp_error_set(TQP_ENONFINITE,
                                     "%s: non-finite activation %g (token %d of "
                                     "a window, input %d)",
                                     what, (double)xr[j], t, j);
    }
    h->win_off[slot] = offset;
    h->win_len[slot] = ntok;
    return TQP_OK;
}

tqp_status tqp_hacc_stage(tqp_hacc *h, const float *x, int ntok, const char *what)
{
    if (h->staged_tokens + ntok > h->max_tokens || h->n_win == h->max_win)
        return tqp_error_set(TQP_EINTERNAL, "%s: Hessian stage full", what);
    TQP_CHECK(tqp_hacc_stage_at(h, h->n_win, h->staged_tokens, x, ntok, what));
    h->n_win++;
    h->staged_tokens += ntok;
    return TQP_OK;
}

/* The staged windows' column sums (in token order, rounded once per window), token count and
 * range bound, in slot order. */
static void account_windows(tqp_hacc *h)
{
    int n = h->n;
    for (int k = 0; k < h->max_win; k++) {
        if (!h->win_len[k]) continue;
        const double *restrict x = h->stage + h->win_off[k] * n;
        double *restrict wd = h->wdiag, *restrict ws = h->wsum, dmax = 0;
        memset(wd, 0, sizeof(double) * (size_t)n);
        memset(ws, 0, sizeof(double) * (size_t)n);
        for (int t = 0; t < h->win_len[k]; t++) /* each column in token order (vectorized by j) */
            for (int j = 0; j < n; j++) {
                double v = x[(size_t)t * n + j];
                wd[j] += v * v;
                ws[j] += v;
            }
        for (int j = 0; j < n; j++) {
            dmax = h->wdiag[j] > dmax ? h->wdiag[j] : dmax;
            h->colsum[j] += to_fix(h->wsum[j]);
        }
        h->bound_local += dmax;
        h->count += h->win_len[k];
    }
}

/* One unit of a flush: rows [i0, i1) (a panel) by columns [c0, c1) of send (packed lower
 * triangle from row `base`) = fixed-point sum over the staged windows of X[:, i0:i1]^T
 * X[:, c0:c1], each window's product rounded on its own.  A unit is either a block of columns
 * before the panel (dgemm, c1 <= i0) or the panel's diagonal block (c0 = i0, c1 = i1: its lower
 * triangle by dsyrk).  Units and their shapes depend on n alone, never on the rank or thread
 * that computes them. */
static double unit_contribution(tqp_hacc *h, int64_t i0, int64_t i1, int64_t c0, int64_t c1,
                                int64_t base, double *prod)
{
    int n = h->n, first = 1, diag = c0 == i0, w = (int)(c1 - c0);
    double flops = 0;
    for (int k = 0; k < h->max_win; k++) {
        int T = h->win_len[k];
        if (!T) continue;
        const double *x = h->stage + h->win_off[k] * n;
        if (diag)
            cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (int)(i1 - i0), T, 1.0, x + i0, n,
                        0.0, prod, w);
        else
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(i1 - i0), w, T, 1.0, x + i0,
                        n, x + c0, n, 0.0, prod, w);
        flops += (diag ? (double)(w + 1) : 2.0 * w) * (double)(i1 - i0) * T;
        for (int64_t i = i0; i < i1; i++) {
            fix *dst = h->send + tri(i) - base + c0;
            const double *src = prod + (i - i0) * w;
            int64_t e = diag ? i - c0 + 1 : w;
            if (first)
                for (int64_t j = 0; j < e; j++)
                    dst[j] = to_fix(src[j]);
            else
                for (int64_t j = 0; j < e; j++)
                    dst[j] += to_fix(src[j]);
        }
        first = 0;
    }
    if (first)
        for (int64_t i = i0; i < i1; i++)
            memset(h->send + tri(i) - base + c0, 0,
                   sizeof(fix) * (size_t)(diag ? i - c0 + 1 : w));
    return flops;
}

/* The units of rows [r0, r1): for each panel, column blocks of TQP_HACC_COLS before it, then
 * its diagonal block; unit u's rows and columns in *i0 .. *c1.  Returns the unit count. */
static int64_t units(int64_t r0, int64_t r1, int64_t u, int64_t *i0, int64_t *i1, int64_t *c0,
                     int64_t *c1)
{
    int64_t cnt = 0;
    for (int64_t p0 = r0; p0 < r1; p0 += TQP_HACC_PANEL) {
        int64_t p1 = p0 + TQP_HACC_PANEL < r1 ? p0 + TQP_HACC_PANEL : r1;
        int64_t nb = (p0 + TQP_HACC_COLS - 1) / TQP_HACC_COLS + 1; /* column blocks + diagonal */
        if (u >= cnt && u < cnt + nb) {
            int64_t b = u - cnt;
            *i0 = p0, *i1 = p1;
            *c0 = b * TQP_HACC_COLS < p0 ? b * TQP_HACC_COLS : p0;
            *c1 = *c0 == p0 ? p1 : (*c0 + TQP_HACC_COLS < p0 ? *c0 + TQP_HACC_COLS : p0);
        }
        cnt += nb;
    }
    return cnt;
}

/* send (rows [r0, r1), packed lower triangle) = fixed-point sum over staged windows of X^T X.
 * Units are disjoint blocks of send, so threads take whole units (the last, longest rows
 * first); each unit's integers do not depend on which thread computes it. */
static void owner_contribution(tqp_hacc *h, int64_t r0, int64_t r1)
{
    int64_t d, nu = units(r0, r1, -1, &d, &d, &d, &d), base = tri(r0);
    double flops = 0;
#pragma omp parallel for num_threads(h->threads) schedule(dynamic, 1) reduction(+ : flops) \
    if (h->threads > 1 && nu > 1)
    for (int64_t u = nu - 1; u >= 0; u--) {
        int64_t i0 = 0, i1 = 0, c0 = 0, c1 = 0;
        units(r0, r1, u, &i0, &i1, &c0, &c1);
        double *prod = h->prod + (size_t)omp_get_thread_num() * TQP_HACC_PANEL * unit_cols(h->n);
        flops += unit_contribution(h, i0, i1, c0, c1, base, prod);
    }
    h->flops += flops;
}

static tqp_status check_range(tqp_hacc *h, const char *what)
{
    double b = 0;
    TQP_MPI_CHECK(MPI_Allreduce(&h->bound_local, &b, 1, MPI_DOUBLE, MPI_SUM, h->comm));
    h->bound_global += b;
    if (h->bound_global >= FIX_LIMIT / 2)
        return tqp_error_set(TQP_ENUMERIC,
                             "%s: Hessian entries may reach %.3g, beyond the exact "
                             "fixed-point range (2^62)",
                             what, h->bound_global);
    return TQP_OK;
}

/* Reduce cnt cells of send to `root` of comm in pieces of TQP_HACC_REDUCE_CELLS: MPI takes a
 * temporary buffer of a message's size for a user-defined sum, and one of a whole owner's block
 * (hundreds of MB) is mapped and faulted in afresh for every call (25 times slower, measured
 * on 2 ranks at n = 4096); pieces of 4 MiB reuse the same memory. */
enum { REDUCE_CELLS = TQP_HACC_REDUCE_CELLS };
static tqp_status reduce_pieces(tqp_hacc *h, int cnt, int root, int in_place, MPI_Comm comm)
{
    for (int off = 0; off < cnt; off += REDUCE_CELLS) {
        int m = cnt - off < REDUCE_CELLS ? cnt - off : REDUCE_CELLS;
        fix *p = h->send + off;
        TQP_MPI_CHECK(MPI_Reduce(in_place ? MPI_IN_PLACE : (void *)p, p, m, h->t128, h->add, root,
                                 comm));
    }
    return TQP_OK;
}

/* send (cnt cells of owner's rows) summed over every rank into owner's send: flat, or inside
 * each node to the rank of the owner's node-local index and then across the nodes among those
 * ranks.  Exact in any order (integer sums). */
static tqp_status reduce_to(tqp_hacc *h, int owner, int cnt)
{
    double t = MPI_Wtime();
    if (!h->two_level) {
        TQP_CHECK(reduce_pieces(h, cnt, owner, owner == h->rank, h->comm));
    } else {
        int root = h->local_of[owner];
        TQP_CHECK(reduce_pieces(h, cnt, root, h->local == root, h->node));
        if (h->local == root)
            TQP_CHECK(reduce_pieces(h, cnt, h->cross_of[owner], owner == h->rank, h->cross));
    }
    h->reduce_seconds += MPI_Wtime() - t;
    h->reduce_bytes += 16.0 * cnt;
    return TQP_OK;
}

tqp_status tqp_hacc_flush(tqp_hacc *h, const char *what)
{
    account_windows(h);
    TQP_CHECK(check_range(h, what));
    int64_t mine = tri(h->r1) - tri(h->r0);
    for (int owner = 0; owner < h->P; owner++) {
        int64_t r0, r1;
        tqp_hacc_owner_rows(h->n, h->P, owner, &r0, &r1);
        if (r1 <= r0) continue;
        owner_contribution(h, r0, r1);
        TQP_CHECK(reduce_to(h, owner, (int)(tri(r1) - tri(r0))));
        if (owner == h->rank)
#pragma omp parallel for num_threads(h->threads) schedule(static) if (h->threads > 1)
            for (int64_t i = 0; i < mine; i++)
                h->acc[i] = (fix)((unsigned __int128)h->acc[i] + (unsigned __int128)h->send[i]);
    }
    memset(h->win_len, 0, sizeof(int) * (size_t)h->max_win);
    h->staged_tokens = 0;
    h->n_win = 0;
    h->bound_local = 0;
    return TQP_OK;
}

tqp_status tqp_hacc_finalize(tqp_hacc *h)
{
    int64_t nr = h->r1 - h->r0, w = h->r1;
    for (int k = 0; k < h->max_win; k++)
        if (h->win_len[k]) return tqp_error_set(TQP_EINTERNAL, "finalize with staged windows");
    /* the lower triangle is authoritative: convert it row by row, then mirror it inside the
     * owner's diagonal block, 64 x 64 blocks at a time (a transpose that stays in cache) */
#pragma omp parallel for num_threads(h->threads) schedule(static) if (h->threads > 1)
    for (int64_t i = 0; i < nr; i++) {
        int64_t gi = h->r0 + i;
        const fix *src = h->acc + tri(gi) - tri(h->r0);
        double *dst = h->rows + i * w;
        for (int64_t j = 0; j <= gi; j++)
            dst[j] = (double)src[j] / FIX_ONE;
    }
    enum { TB = 64 };
#pragma omp parallel for num_threads(h->threads) schedule(dynamic, 1) if (h->threads > 1)
    for (int64_t ib = 0; ib < nr; ib += TB)
        for (int64_t jb = ib; jb < nr; jb += TB)
            for (int64_t i = ib; i < ib + TB && i < nr; i++)
                for (int64_t j = jb > i + 1 ? jb : i + 1; j < jb + TB && j < nr; j++)
                    h->rows[i * w + h->r0 + j] = h->rows[j * w + h->r0 + i];
    fix *cs = tqp_malloc(sizeof(fix) * (size_t)h->n);
    TQP_CHECK(tqp_mpi_agree(h->comm, cs ? TQP_OK : TQP_ENOMEM));
    memcpy(cs, h->colsum, sizeof(fix) * (size_t)h->n);
    int rc = MPI_Allreduce(MPI_IN_PLACE, cs, h->n, h->t128, h->add, h->comm);
    for (int j = 0; j < h->n; j++)
        h->colsum_d[j] = (double)cs[j] / FIX_ONE;
    free(cs);
    long long c = h->count, g = 0;
    if (rc == MPI_SUCCESS) rc = MPI_Allreduce(&c, &g, 1, MPI_LONG_LONG, MPI_SUM, h->comm);
    h->count_global = g;
    return rc == MPI_SUCCESS ? TQP_OK : tqp_error_set(TQP_EMPI, "Hessian reduction failed");
}

const double *tqp_hacc_rows(const tqp_hacc *h, int64_t *r0, int64_t *r1)
{
    *r0 = h->r0;
    *r1 = h->r1;
    return h->rows;
}

const double *tqp_hacc_colsum(const tqp_hacc *h)
{
    return h->colsum_d;
}
int64_t tqp_hacc_count(const tqp_hacc *h)
{
    return h->count_global;
}
double tqp_hacc_flops(const tqp_hacc *h)
{
    return h->flops;
}
double tqp_hacc_reduce_seconds(const tqp_hacc *h, double *bytes)
{
    if (bytes) *bytes = h->reduce_bytes;
    return h->reduce_seconds;
}
int tqp_hacc_two_level(const tqp_hacc *h)
{
    return h->two_level;
}
