/* Two-sided orthogonal transforms of weights and Hessians (see include/tqp/rot.h). */
#include "tqp/rot.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/dist.h"
#include "tqp/mpiutil.h"
#include "tqp/rng.h"

static const char *const names[TQP_ROT_COUNT] = {"none", "rht", "kron"};

const char *tqp_rot_name(tqp_rot_kind k)
{
    return k >= 0 && k < TQP_ROT_COUNT ? names[k] : "?";
}

tqp_rot_kind tqp_rot_parse(const char *name)
{
    for (int k = 0; k < TQP_ROT_COUNT; k++)
        if (!strcmp(name, names[k])) return (tqp_rot_kind)k;
    return TQP_ROT_COUNT;
}

static tqp_status side_create(tqp_rot_kind kind, int n, uint64_t seed, tqp_rot_side *s)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    if (kind == TQP_ROT_RHT) {
        uint64_t st = seed;
        s->sign = tqp_malloc((size_t)n);
        if (!s->sign) return TQP_ENOMEM;
        for (int i = 0; i < n; i++) s->sign[i] = (tqp_splitmix64(&st) >> 63) ? -1 : 1;
        return tqp_had_create(n, tqp_splitmix64(&st), &s->had);
    }
    if (kind == TQP_ROT_KRON) {
        int p = 1;
        for (int d = 1; (long)d * d <= n; d++)
            if (n % d == 0) p = d;
        s->p = p, s->q = n / p;
        s->P = tqp_malloc(sizeof(double) * (size_t)p * p);
        s->Q = tqp_malloc(sizeof(double) * (size_t)s->q * s->q);
        if (!s->P || !s->Q) return TQP_ENOMEM;
        tqp_random_orthogonal(p, seed, s->P);
        tqp_random_orthogonal(s->q, seed ^ 0x6a09e667f3bcc908ull, s->Q);
    }
    return TQP_OK;
}

static void side_destroy(tqp_rot_side *s)
{
    tqp_had_destroy(&s->had);
    free(s->sign);
    free(s->P);
    free(s->Q);
    memset(s, 0, sizeof *s);
}

tqp_status tqp_rot_create(tqp_rot_kind kind, int m, int n, uint64_t seed_out, uint64_t seed_in,
                          tqp_rot *r)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->seed_out = seed_out;
    r->seed_in = seed_in;
    tqp_status s = side_create(kind, m, seed_out, &r->out);
    if (s == TQP_OK) s = side_create(kind, n, seed_in, &r->in);
    if (s != TQP_OK) tqp_rot_destroy(r);
    return s;
}

void tqp_rot_destroy(tqp_rot *r)
{
    side_destroy(&r->out);
    side_destroy(&r->in);
}

/* kron: x viewed as X (p, q) row-major; X <- P X Q^T (or P^T X Q). */
static void kron_apply(const tqp_rot_side *s, double *x, int inverse, double *scratch)
{
    CBLAS_TRANSPOSE tp = inverse ? CblasTrans : CblasNoTrans;
    CBLAS_TRANSPOSE tq = inverse ? CblasNoTrans : CblasTrans;
    cblas_dgemm(CblasRowMajor, tp, CblasNoTrans, s->p, s->q, s->p, 1.0, s->P, s->p, x, s->q, 0.0,
                scratch, s->q);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, tq, s->p, s->q, s->q, 1.0, scratch, s->q, s->Q, s->q,
                0.0, x, s->q);
}

void tqp_rot_side_apply(const tqp_rot_side *s, tqp_rot_kind kind, double *x, int inverse,
                        double *scratch)
{
    if (kind == TQP_ROT_KRON) {
        kron_apply(s, x, inverse, scratch);
    } else if (kind == TQP_ROT_RHT) {
        if (!inverse)
            for (int i = 0; i < s->n; i++) x[i] *= s->sign[i];
        tqp_had_apply(s->had, x, inverse, scratch);
        if (inverse)
            for (int i = 0; i < s->n; i++) x[i] *= s->sign[i];
    }
}

/* Apply a side to every row of X (rows, s->n). */
static void apply_rows(const tqp_rot_side *s, tqp_rot_kind kind, double *X, int64_t rows,
                       int inverse, double *scratch)
{
    for (int64_t r = 0; r < rows; r++)
        tqp_rot_side_apply(s, kind, X + r * s->n, inverse, scratch);
}

static void transpose(const double *A, int64_t rows, int64_t cols, double *T)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) T[j * rows + i] = A[i * cols + j];
}

/* X (m, n) <- L X R^T with L = left side, R = right side (or their transposes). */
static tqp_status two_sided(const tqp_rot_side *left, const tqp_rot_side *right, tqp_rot_kind kind,
                            double *X, int inverse)
{
    int64_t m = left->n, n = right->n;
    int64_t big = m > n ? m : n;
    double *T = tqp_malloc(sizeof(double) * (size_t)(m * n));
    double *scratch = tqp_malloc(sizeof(double) * (size_t)big);
    if (!T || !scratch) {
        free(T);
        free(scratch);
        return TQP_ENOMEM;
    }
    apply_rows(right, kind, X, m, inverse, scratch); /* rows: x <- R x, i.e. X R^T */
    transpose(X, m, n, T);
    apply_rows(left, kind, T, n, inverse, scratch); /* columns: c <- L c */
    transpose(T, n, m, X);
    free(T);
    free(scratch);
    return TQP_OK;
}

tqp_status tqp_rot_weights(const tqp_rot *r, double *W, int inverse)
{
    if (r->kind == TQP_ROT_NONE) return TQP_OK;
    return two_sided(&r->out, &r->in, r->kind, W, inverse);
}

tqp_status tqp_rot_hessian(const tqp_rot *r, double *H)
{
    if (r->kind == TQP_ROT_NONE) return TQP_OK;
    TQP_CHECK(two_sided(&r->in, &r->in, r->kind, H, 0));
    int64_t n = r->in.n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++) {
            double a = 0.5 * (H[i * n + j] + H[j * n + i]);
            H[i * n + j] = H[j * n + i] = a;
        }
    return TQP_OK;
}

tqp_status tqp_rot_weights_dist(MPI_Comm comm, const tqp_rot *r, const int64_t *in_off,
                                double **W, const int64_t *out_off)
{
    int P, me;
    MPI_Comm_size(comm, &P);
    MPI_Comm_rank(comm, &me);
    int64_t m = r->out.n, n = r->in.n, big = m > n ? m : n;
    int64_t *cp = tqp_malloc(sizeof(int64_t) * (size_t)(P + 1));
    if (cp) tqp_dist_offsets(n, P, cp);
    int64_t cols = cp ? cp[me + 1] - cp[me] : 0;
    double *T = tqp_malloc(sizeof(double) * (size_t)(cols * m + 1));
    double *scratch = tqp_malloc(sizeof(double) * (size_t)big);
    tqp_status s = tqp_mpi_agree(comm, cp && T && scratch ? TQP_OK : TQP_ENOMEM);
    int apply = r->kind != TQP_ROT_NONE;
    if (s == TQP_OK && apply) /* rows: x <- V x, i.e. W V^T */
        apply_rows(&r->in, r->kind, *W, in_off[me + 1] - in_off[me], 0, scratch);
    if (s == TQP_OK) s = tqp_dist_transpose(comm, m, n, in_off, cp, *W, T);
    free(*W); /* the input rows are never held beside the output rows */
    *W = NULL;
    if (s == TQP_OK && apply) apply_rows(&r->out, r->kind, T, cols, 0, scratch); /* columns */
    int64_t rows = out_off[me + 1] - out_off[me];
    if (s == TQP_OK) {
        *W = tqp_malloc(sizeof(double) * (size_t)(rows * n + 1));
        s = tqp_mpi_agree(comm, *W ? TQP_OK : TQP_ENOMEM);
    }
    if (s == TQP_OK) s = tqp_dist_transpose(comm, n, m, cp, out_off, T, *W);
    free(cp), free(T), free(scratch);
    if (s != TQP_OK) {
        free(*W);
        *W = NULL;
    }
    return s;
}

tqp_status tqp_rot_hessian_dist(MPI_Comm comm, const tqp_rot *r, const int64_t *off, double *Hr)
{
    if (r->kind == TQP_ROT_NONE) return TQP_OK;
    int me;
    MPI_Comm_rank(comm, &me);
    int64_t n = r->in.n, rows = off[me + 1] - off[me];
    double *T = tqp_malloc(sizeof(double) * (size_t)(rows * n + 1));
    double *scratch = tqp_malloc(sizeof(double) * (size_t)(n + 1));
    tqp_status s = tqp_mpi_agree(comm, T && scratch ? TQP_OK : TQP_ENOMEM);
    if (s == TQP_OK) {
        apply_rows(&r->in, r->kind, Hr, rows, 0, scratch); /* X = H V^T */
        s = tqp_dist_transpose(comm, n, n, off, off, Hr, T);
    }
    if (s == TQP_OK) {
        apply_rows(&r->in, r->kind, T, rows, 0, scratch); /* T = (V H) V^T = Y, X := Y^T */
        s = tqp_dist_transpose(comm, n, n, off, off, T, Hr);
    }
    /* Hr holds my rows of X, T my rows of X^T: the mean of the two, as tqp_rot_hessian */
    for (int64_t il = 0; s == TQP_OK && il < rows; il++) {
        int64_t i = off[me] + il;
        for (int64_t j = 0; j < n; j++)
            if (j != i) Hr[il * n + j] = 0.5 * (Hr[il * n + j] + T[il * n + j]);
    }
    free(T), free(scratch);
    return s;
}
