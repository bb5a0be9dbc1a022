/* Reproducible local BLAS for ScaLAPACK (see include/tqp/rblas.h).
 *
 * The level-3 products are tiled (src/rblas_impl.h): strips of RB_MR rows of op(A), and in each
 * strip tiles of RB_NR columns of op(B), whose fma chains run in a kernel.  The operands are
 * copied into tile order first; copying changes no element's arithmetic.  Compiled with
 * -ffp-contract=off. */
#define _GNU_SOURCE
#include "tqp/rblas.h"

#include <dlfcn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rblas_impl.h"

/* ------------------------------------------------------------------------------------------ */
/* Kernel selection and bookkeeping */

static tqp_rblas_kernel active = TQP_RBLAS_AUTO; /* resolved on first use */
static tqp_rblas_counts counts;
static int passthrough;

static int have_avx2(void)
{
#ifdef TQP_HAVE_AVX2_RBLAS
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

tqp_rblas_kernel tqp_rblas_select(tqp_rblas_kernel k)
{
    if (k == TQP_RBLAS_AUTO || k == TQP_RBLAS_AVX2) k = have_avx2() ? TQP_RBLAS_AVX2 : TQP_RBLAS_REF;
    active = k;
    return k;
}

/* The first use resolves AUTO; TQP_RBLAS_KERNEL=ref|avx2 in the environment asks for one. */
static tqp_rblas_kernel kernel(void)
{
    if (active == TQP_RBLAS_AUTO) {
        const char *e = getenv("TQP_RBLAS_KERNEL");
        tqp_rblas_select(e && !strcmp(e, "ref") ? TQP_RBLAS_REF : TQP_RBLAS_AUTO);
    }
    return active;
}

tqp_rblas_kernel tqp_rblas_active(void)
{
    return kernel();
}

const char *tqp_rblas_kernel_name(tqp_rblas_kernel k)
{
    return k == TQP_RBLAS_AVX2 ? "avx2" : k == TQP_RBLAS_REF ? "ref" : "auto";
}

#define COUNT(field) __atomic_fetch_add(&counts.field, 1, __ATOMIC_RELAXED)

void tqp_rblas_get_counts(tqp_rblas_counts *c)
{
    c->gemm = __atomic_load_n(&counts.gemm, __ATOMIC_RELAXED);
    c->syrk = __atomic_load_n(&counts.syrk, __ATOMIC_RELAXED);
    c->trsm = __atomic_load_n(&counts.trsm, __ATOMIC_RELAXED);
    c->gemv = __atomic_load_n(&counts.gemv, __ATOMIC_RELAXED);
    c->dot = __atomic_load_n(&counts.dot, __ATOMIC_RELAXED);
    c->axpy = __atomic_load_n(&counts.axpy, __ATOMIC_RELAXED);
    c->scal = __atomic_load_n(&counts.scal, __ATOMIC_RELAXED);
    c->copy = __atomic_load_n(&counts.copy, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------------------------------ */
/* Plain C kernels */

void tqp_rblas_tile_ref(int K, const rb_tile *t, double *acc)
{
    for (int c = 0; c < RB_NR; c++)
        for (int r = 0; r < RB_MR; r++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s = fma(t->a[k * t->as + r], t->b[k * t->bsk + c * t->bsc], s);
            acc[c * RB_MR + r] = s;
        }
}

static inline double finish1(double alpha, double acc, double beta, const double *c)
{
    double t = alpha * acc;
    return beta == 0.0 ? t : t + beta * *c;
}

void tqp_rblas_tile_c_ref(int K, const rb_tile *t, double alpha, double beta, double *C, int ldc)
{
    double acc[RB_MR * RB_NR];
    tqp_rblas_tile_ref(K, t, acc);
    for (int c = 0; c < RB_NR; c++)
        for (int r = 0; r < RB_MR; r++)
            C[(size_t)c * ldc + r] = finish1(alpha, acc[c * RB_MR + r], beta, &C[(size_t)c * ldc + r]);
}

void tqp_rblas_fnmadd_ref(int m, const double *x, double t, double *y)
{
    for (int r = 0; r < m; r++) y[r] = fma(-x[r], t, y[r]);
}

void tqp_rblas_fmadd_ref(int m, const double *x, double t, double *y)
{
    for (int r = 0; r < m; r++) y[r] = fma(t, x[r], y[r]);
}

static void fmadd(int m, const double *x, double t, double *y)
{
#ifdef TQP_HAVE_AVX2_RBLAS
    if (kernel() == TQP_RBLAS_AVX2) {
        tqp_rblas_fmadd_avx2(m, x, t, y);
        return;
    }
#endif
    tqp_rblas_fmadd_ref(m, x, t, y);
}

static void fnmadd(int m, const double *x, double t, double *y)
{
#ifdef TQP_HAVE_AVX2_RBLAS
    if (kernel() == TQP_RBLAS_AVX2) {
        tqp_rblas_fnmadd_avx2(m, x, t, y);
        return;
    }
#endif
    tqp_rblas_fnmadd_ref(m, x, t, y);
}

/* ------------------------------------------------------------------------------------------ */
/* Level 3 */

static int is(char c, char u)
{
    return c == u || c == u + ('a' - 'A');
}

/* op(X)(i, k) for column-major X: X(i, k) or, transposed, X(k, i). */
static inline double opel(const double *X, int ld, int trans, int i, int k)
{
    return trans ? X[(size_t)i * ld + k] : X[(size_t)k * ld + i];
}

/* C <- beta C on the elements selected by tri ('N' all, 'L' i >= j, 'U' i <= j). */
static void scale_only(int m, int n, double beta, double *C, int ldc, char tri)
{
    if (beta == 1.0) return;
    for (int j = 0; j < n; j++) {
        int i0 = tri == 'L' ? j : 0, i1 = tri == 'U' ? (j + 1 < m ? j + 1 : m) : m;
        for (int i = i0; i < i1; i++) {
            double *c = &C[(size_t)j * ldc + i];
            *c = beta == 0.0 ? 0.0 : beta * *c;
        }
    }
}

/* C (m x n) <- alpha op(A) op(B) + beta C on the elements selected by tri.  Both operands are
 * first copied, zero-padded, into tile order (strips of RB_MR rows of op(A), panels of RB_NR
 * columns of op(B), k-major inside), so that the kernels read them sequentially whatever the
 * leading dimensions; then chunks of RB_NC columns are swept strip by strip. */
enum { RB_NC = 256 };

/* The calling thread's packing buffer, grown as needed and kept (allocating it anew for each
 * call costs more than the products: the pages are cleared every time). */
static __thread double *work_buf;
static __thread size_t work_len;

static double *work(size_t count)
{
    if (count > work_len) {
        free(work_buf);
        work_buf = malloc(sizeof(double) * count);
        if (!work_buf) abort(); /* the BLAS interface has no error return */
        work_len = count;
    }
    return work_buf;
}

static void product(int m, int n, int K, double alpha, const double *A, int lda, int ta,
                    const double *B, int ldb, int tb, double beta, double *C, int ldc, char tri)
{
    if (m <= 0 || n <= 0) return;
    if (alpha == 0.0 || K <= 0) {
        scale_only(m, n, beta, C, ldc, tri);
        return;
    }
    int avx2 = kernel() == TQP_RBLAS_AVX2;
    size_t ms = (size_t)(m + RB_MR - 1) / RB_MR, np = (size_t)(n + RB_NR - 1) / RB_NR;
    double *ap = work((ms * RB_MR + np * RB_NR) * (size_t)K), acc[RB_MR * RB_NR];
    double *bp = ap + ms * RB_MR * (size_t)K;
    for (size_t s = 0; s < ms; s++) {
        double *d = ap + s * RB_MR * (size_t)K;
        int i0 = (int)s * RB_MR, mr = m - i0 < RB_MR ? m - i0 : RB_MR;
        if (!ta && mr == RB_MR)
            for (int k = 0; k < K; k++, d += RB_MR) memcpy(d, A + (size_t)k * lda + i0, sizeof(double) * RB_MR);
        else
            for (int k = 0; k < K; k++, d += RB_MR)
                for (int r = 0; r < RB_MR; r++) d[r] = r < mr ? opel(A, lda, ta, i0 + r, k) : 0.0;
    }
    for (size_t p = 0; p < np; p++) {
        double *d = bp + p * RB_NR * (size_t)K;
        int j0 = (int)p * RB_NR, nr = n - j0 < RB_NR ? n - j0 : RB_NR;
        if (tb && nr == RB_NR)
            for (int k = 0; k < K; k++, d += RB_NR) memcpy(d, B + (size_t)k * ldb + j0, sizeof(double) * RB_NR);
        else if (nr == RB_NR)
            for (int c = 0; c < RB_NR; c++)
                for (int k = 0; k < K; k++) d[(size_t)k * RB_NR + c] = B[(size_t)(j0 + c) * ldb + k];
        else
            for (int k = 0; k < K; k++, d += RB_NR)
                for (int c = 0; c < RB_NR; c++) d[c] = c < nr ? opel(B, ldb, !tb, j0 + c, k) : 0.0;
    }
    rb_tile t = {.as = RB_MR, .bsk = RB_NR, .bsc = 1};
    for (int jc = 0; jc < n; jc += RB_NC) {
        int jend = n - jc < RB_NC ? n : jc + RB_NC;
        for (int i0 = 0; i0 < m; i0 += RB_MR) {
            int mr = m - i0 < RB_MR ? m - i0 : RB_MR;
            /* the tiles of this strip and chunk that hold elements of the triangle */
            int jlo = jc, jhi = jend;
            if (tri == 'U' && i0 / RB_NR * RB_NR > jlo) jlo = i0 / RB_NR * RB_NR;
            if (tri == 'L' && i0 + mr < jhi) jhi = i0 + mr;
            t.a = ap + (size_t)(i0 / RB_MR) * RB_MR * K;
            for (int j0 = jlo; j0 < jhi; j0 += RB_NR) {
                int nr = n - j0 < RB_NR ? n - j0 : RB_NR;
                double *c = C + (size_t)j0 * ldc + i0;
                t.b = bp + (size_t)(j0 / RB_NR) * RB_NR * K;
                int whole = mr == RB_MR && nr == RB_NR &&
                            (tri == 'N' || (tri == 'L' && i0 >= j0 + RB_NR - 1) ||
                             (tri == 'U' && i0 + RB_MR - 1 <= j0));
                if (whole) {
#ifdef TQP_HAVE_AVX2_RBLAS
                    if (avx2) {
                        tqp_rblas_tile_c_avx2(K, &t, alpha, beta, c, ldc);
                        continue;
                    }
#endif
                    tqp_rblas_tile_c_ref(K, &t, alpha, beta, c, ldc);
                    continue;
                }
#ifdef TQP_HAVE_AVX2_RBLAS
                if (avx2)
                    tqp_rblas_tile_avx2(K, &t, acc);
                else
#endif
                    tqp_rblas_tile_ref(K, &t, acc);
                for (int cc = 0; cc < nr; cc++)
                    for (int r = 0; r < mr; r++) {
                        int i = i0 + r, j = j0 + cc;
                        if ((tri == 'L' && i < j) || (tri == 'U' && i > j)) continue;
                        double *e = &c[(size_t)cc * ldc + r];
                        *e = finish1(alpha, acc[cc * RB_MR + r], beta, e);
                    }
            }
        }
    }
}

void tqp_rblas_dgemm(char ta, char tb, int m, int n, int k, double alpha, const double *A, int lda,
                     const double *B, int ldb, double beta, double *C, int ldc)
{
    product(m, n, k, alpha, A, lda, !is(ta, 'N'), B, ldb, !is(tb, 'N'), beta, C, ldc, 'N');
}

void tqp_rblas_dsyrk(char uplo, char trans, int n, int k, double alpha, const double *A, int lda,
                     double beta, double *C, int ldc)
{
    int t = !is(trans, 'N');
    /* 'N': A (n x k), C = A A^T; 'T': A (k x n), C = A^T A */
    product(n, n, k, alpha, A, lda, t, A, lda, !t, beta, C, ldc, is(uplo, 'U') ? 'U' : 'L');
}

void tqp_rblas_dtrsm(char side, char uplo, char ta, char diag, int m, int n, double alpha,
                     const double *A, int lda, double *B, int ldb)
{
    if (m <= 0 || n <= 0) return;
    int trans = !is(ta, 'N'), unit = is(diag, 'U');
    int upper = is(uplo, 'U') != trans; /* is op(A) upper triangular? */
    if (alpha != 1.0)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double *b = &B[(size_t)j * ldb + i];
                *b = alpha == 0.0 ? 0.0 : alpha * *b;
            }
    if (alpha == 0.0) return;
    if (!is(side, 'L')) {
        /* X op(A) = B: column j of X after the columns it depends on; whole columns at a time,
         * so each element still sees its terms in solving order. */
        for (int s = 0; s < n; s++) {
            int j = upper ? s : n - 1 - s;
            double *bj = B + (size_t)j * ldb;
            for (int u = 0; u < s; u++) {
                int k = upper ? u : n - 1 - u; /* solved before j */
                fnmadd(m, B + (size_t)k * ldb, opel(A, lda, trans, k, j), bj);
            }
            if (!unit) {
                double d = opel(A, lda, trans, j, j);
                for (int i = 0; i < m; i++) bj[i] = bj[i] / d;
            }
        }
        return;
    }
    /* op(A) X = B: row i of X after the rows it depends on, column by column. */
    for (int c = 0; c < n; c++) {
        double *x = B + (size_t)c * ldb;
        for (int s = 0; s < m; s++) {
            int i = upper ? m - 1 - s : s;
            double t = x[i];
            for (int u = 0; u < s; u++) {
                int k = upper ? m - 1 - u : u;
                t = fma(-x[k], opel(A, lda, trans, i, k), t);
            }
            x[i] = unit ? t : t / opel(A, lda, trans, i, i);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Levels 1 and 2 */

static int64_t start(int n, int inc)
{
    return inc >= 0 ? 0 : (int64_t)(1 - n) * inc;
}

double tqp_rblas_ddot(int n, const double *x, int incx, const double *y, int incy)
{
    double s = 0.0;
    int64_t ix = start(n, incx), iy = start(n, incy);
    for (int i = 0; i < n; i++, ix += incx, iy += incy) s = fma(x[ix], y[iy], s);
    return s;
}

void tqp_rblas_dgemv(char ta, int m, int n, double alpha, const double *A, int lda,
                     const double *x, int incx, double beta, double *y, int incy)
{
    int trans = !is(ta, 'N');
    int leny = trans ? n : m, lenx = trans ? m : n;
    if (m <= 0 || n <= 0) return;
    int64_t iy = start(leny, incy);
    for (int i = 0; i < leny; i++, iy += incy) {
        double *yi = &y[iy];
        if (alpha == 0.0) {
            *yi = beta == 0.0 ? 0.0 : beta * *yi;
            continue;
        }
        double s = 0.0;
        int64_t ix = start(lenx, incx);
        for (int k = 0; k < lenx; k++, ix += incx) s = fma(opel(A, lda, trans, i, k), x[ix], s);
        *yi = finish1(alpha, s, beta, yi);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Fortran entry points (every argument by reference; CHARACTER lengths are not used) */

#define NEXT(name, type)                                                                           \
    static type next_##name;                                                                       \
    if (passthrough && !next_##name) next_##name = (type)dlsym(RTLD_NEXT, #name);

typedef void (*gemm_f)(const char *, const char *, const int *, const int *, const int *,
                       const double *, const double *, const int *, const double *, const int *,
                       const double *, double *, const int *);
typedef void (*syrk_f)(const char *, const char *, const int *, const int *, const double *,
                       const double *, const int *, const double *, double *, const int *);
typedef void (*trsm_f)(const char *, const char *, const char *, const char *, const int *,
                       const int *, const double *, const double *, const int *, double *,
                       const int *);
typedef void (*gemv_f)(const char *, const int *, const int *, const double *, const double *,
                       const int *, const double *, const int *, const double *, double *,
                       const int *);
typedef double (*dot_f)(const int *, const double *, const int *, const double *, const int *);
typedef void (*axpy_f)(const int *, const double *, const double *, const int *, double *,
                       const int *);
typedef void (*scal_f)(const int *, const double *, double *, const int *);
typedef void (*copy_f)(const int *, const double *, const int *, double *, const int *);

void dgemm_(const char *ta, const char *tb, const int *m, const int *n, const int *k,
            const double *alpha, const double *A, const int *lda, const double *B, const int *ldb,
            const double *beta, double *C, const int *ldc);
void dsyrk_(const char *uplo, const char *trans, const int *n, const int *k, const double *alpha,
            const double *A, const int *lda, const double *beta, double *C, const int *ldc);
void dtrsm_(const char *side, const char *uplo, const char *ta, const char *diag, const int *m,
            const int *n, const double *alpha, const double *A, const int *lda, double *B,
            const int *ldb);
void dgemv_(const char *ta, const int *m, const int *n, const double *alpha, const double *A,
            const int *lda, const double *x, const int *incx, const double *beta, double *y,
            const int *incy);
double ddot_(const int *n, const double *x, const int *incx, const double *y, const int *incy);
void daxpy_(const int *n, const double *alpha, const double *x, const int *incx, double *y,
            const int *incy);
void dscal_(const int *n, const double *alpha, double *x, const int *incx);
void dcopy_(const int *n, const double *x, const int *incx, double *y, const int *incy);

void dgemm_(const char *ta, const char *tb, const int *m, const int *n, const int *k,
            const double *alpha, const double *A, const int *lda, const double *B, const int *ldb,
            const double *beta, double *C, const int *ldc)
{
    COUNT(gemm);
    NEXT(dgemm_, gemm_f)
    if (passthrough && next_dgemm_) {
        next_dgemm_(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    tqp_rblas_dgemm(*ta, *tb, *m, *n, *k, *alpha, A, *lda, B, *ldb, *beta, C, *ldc);
}

void dsyrk_(const char *uplo, const char *trans, const int *n, const int *k, const double *alpha,
            const double *A, const int *lda, const double *beta, double *C, const int *ldc)
{
    COUNT(syrk);
    NEXT(dsyrk_, syrk_f)
    if (passthrough && next_dsyrk_) {
        next_dsyrk_(uplo, trans, n, k, alpha, A, lda, beta, C, ldc);
        return;
    }
    tqp_rblas_dsyrk(*uplo, *trans, *n, *k, *alpha, A, *lda, *beta, C, *ldc);
}

void dtrsm_(const char *side, const char *uplo, const char *ta, const char *diag, const int *m,
            const int *n, const double *alpha, const double *A, const int *lda, double *B,
            const int *ldb)
{
    COUNT(trsm);
    NEXT(dtrsm_, trsm_f)
    if (passthrough && next_dtrsm_) {
        next_dtrsm_(side, uplo, ta, diag, m, n, alpha, A, lda, B, ldb);
        return;
    }
    tqp_rblas_dtrsm(*side, *uplo, *ta, *diag, *m, *n, *alpha, A, *lda, B, *ldb);
}

void dgemv_(const char *ta, const int *m, const int *n, const double *alpha, const double *A,
            const int *lda, const double *x, const int *incx, const double *beta, double *y,
            const int *incy)
{
    COUNT(gemv);
    NEXT(dgemv_, gemv_f)
    if (passthrough && next_dgemv_) {
        next_dgemv_(ta, m, n, alpha, A, lda, x, incx, beta, y, incy);
        return;
    }
    tqp_rblas_dgemv(*ta, *m, *n, *alpha, A, *lda, x, *incx, *beta, y, *incy);
}

double ddot_(const int *n, const double *x, const int *incx, const double *y, const int *incy)
{
    COUNT(dot);
    NEXT(ddot_, dot_f)
    if (passthrough && next_ddot_) return next_ddot_(n, x, incx, y, incy);
    return tqp_rblas_ddot(*n, x, *incx, y, *incy);
}

void daxpy_(const int *n, const double *alpha, const double *x, const int *incx, double *y,
            const int *incy)
{
    COUNT(axpy);
    NEXT(daxpy_, axpy_f)
    if (passthrough && next_daxpy_) {
        next_daxpy_(n, alpha, x, incx, y, incy);
        return;
    }
    if (*n <= 0 || *alpha == 0.0) return;
    if (*incx == 1 && *incy == 1) {
        fmadd(*n, x, *alpha, y);
        return;
    }
    int64_t ix = start(*n, *incx), iy = start(*n, *incy);
    for (int i = 0; i < *n; i++, ix += *incx, iy += *incy) y[iy] = fma(*alpha, x[ix], y[iy]);
}

void dscal_(const int *n, const double *alpha, double *x, const int *incx)
{
    COUNT(scal);
    NEXT(dscal_, scal_f)
    if (passthrough && next_dscal_) {
        next_dscal_(n, alpha, x, incx);
        return;
    }
    if (*n <= 0 || *incx <= 0) return;
    for (int64_t i = 0; i < *n; i++) x[i * *incx] = *alpha * x[i * *incx];
}

void dcopy_(const int *n, const double *x, const int *incx, double *y, const int *incy)
{
    COUNT(copy);
    NEXT(dcopy_, copy_f)
    if (passthrough && next_dcopy_) {
        next_dcopy_(n, x, incx, y, incy);
        return;
    }
    int64_t ix = start(*n, *incx), iy = start(*n, *incy);
    for (int i = 0; i < *n; i++, ix += *incx, iy += *incy) y[iy] = x[ix];
}

int tqp_rblas_passthrough(int on)
{
    if (on && !dlsym(RTLD_NEXT, "dgemm_")) return 0;
    passthrough = on;
    return 1;
}

int tqp_rblas_bound(void)
{
    return dlsym(RTLD_DEFAULT, "dgemm_") == (void *)dgemm_ &&
           dlsym(RTLD_DEFAULT, "dsyrk_") == (void *)dsyrk_ &&
           dlsym(RTLD_DEFAULT, "dtrsm_") == (void *)dtrsm_ &&
           dlsym(RTLD_DEFAULT, "dgemv_") == (void *)dgemv_ &&
           dlsym(RTLD_DEFAULT, "ddot_") == (void *)ddot_ &&
           dlsym(RTLD_DEFAULT, "daxpy_") == (void *)daxpy_ &&
           dlsym(RTLD_DEFAULT, "dscal_") == (void *)dscal_ &&
           dlsym(RTLD_DEFAULT, "dcopy_") == (void *)dcopy_;
}
