/* Trellis-coded quantization of matrices: tiles, BlockLDLQ, decoding (see include/tqp/tcq.h). */
#include "tqp/tcq.h"

#include "tqp/chol.h"
#include "tqp/rblas.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_SIZES = 8 };

struct tqp_tcq {
    int L, K, V;
    tqp_tcode code;
    tqp_trellis *base;          // T = 256
    tqp_trellis *by[MAX_SIZES]; // other tile sizes, created on first use
    int T[MAX_SIZES], n;
};

tqp_status tqp_tcq_create(int L, int K, int V, tqp_tcode code, const float *lut, tqp_tcq **out)
{
    *out = NULL;
    tqp_tcq *q = tqp_calloc(1, sizeof *q);
    if (!q) return TQP_ENOMEM;
    *q = (tqp_tcq){.L = L, .K = K, .V = V, .code = code};
    tqp_status s = tqp_trellis_create(L, K, V, TQP_TCQ_TILE * TQP_TCQ_TILE, code, lut, &q->base);
    if (s != TQP_OK) {
        free(q);
        return s;
    }
    *out = q;
    return TQP_OK;
}

void tqp_tcq_destroy(tqp_tcq **pq)
{
    if (!*pq) return;
    tqp_trellis_destroy(&(*pq)->base);
    for (int i = 0; i < (*pq)->n; i++) tqp_trellis_destroy(&(*pq)->by[i]);
    free(*pq);
    *pq = NULL;
}

const tqp_trellis *tqp_tcq_base(const tqp_tcq *q)
{
    return q->base;
}

tqp_status tqp_tcq_member(tqp_tcq *q, int T, const tqp_trellis **t)
{
    if (T == q->base->T) return *t = q->base, TQP_OK;
    for (int i = 0; i < q->n; i++)
        if (q->T[i] == T) return *t = q->by[i], TQP_OK;
    if (q->n == MAX_SIZES) return tqp_error_set(TQP_EINTERNAL, "too many tile sizes");
    TQP_CHECK(tqp_trellis_create(q->L, q->K, q->V, T, q->code, q->base->lut, &q->by[q->n]));
    q->T[q->n] = T;
    *t = q->by[q->n++];
    return TQP_OK;
}

tqp_status tqp_tcq_prepare(tqp_tcq *q, int rows, int n)
{
    const tqp_trellis *t;
    int r[2] = {rows < TQP_TCQ_TILE ? rows : TQP_TCQ_TILE, rows % TQP_TCQ_TILE};
    int w[2] = {n < TQP_TCQ_TILE ? n : TQP_TCQ_TILE, n % TQP_TCQ_TILE};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            if (r[i] > 0 && w[j] > 0) TQP_CHECK(tqp_tcq_member(q, r[i] * w[j], &t));
    return TQP_OK;
}

static size_t tile_bytes(const tqp_tcq *q, int T)
{
    return ((size_t)T * q->K + 7) / 8;
}

size_t tqp_tcq_band_bytes(const tqp_tcq *q, int rows, int n)
{
    size_t b = 0;
    for (int c0 = 0; c0 < n; c0 += TQP_TCQ_TILE) {
        int w = n - c0 < TQP_TCQ_TILE ? n - c0 : TQP_TCQ_TILE;
        b += tile_bytes(q, rows * w);
    }
    return b;
}

size_t tqp_tcq_matrix_bytes(const tqp_tcq *q, int m, int n)
{
    size_t b = 0;
    for (int r0 = 0; r0 < m; r0 += TQP_TCQ_TILE)
        b += tqp_tcq_band_bytes(q, m - r0 < TQP_TCQ_TILE ? m - r0 : TQP_TCQ_TILE, n);
    return b;
}

/* Lu = C blockdiag(C_ii)^-1: each row's blocks solved against their diagonal blocks with
 * tqp_solve_block_row, as tqp_dfactor_lu_rows does (the same bits); the identity on the
 * diagonal blocks. */
void tqp_tcq_block_factor(double *C, int n)
{
    double x[TQP_TCQ_TILE];
    for (int c0 = n - (n - 1) % TQP_TCQ_TILE - 1; n > 0 && c0 >= 0; c0 -= TQP_TCQ_TILE) {
        int w = n - c0 < TQP_TCQ_TILE ? n - c0 : TQP_TCQ_TILE;
        for (int i = c0 + w; i < n; i++) { /* rows below the diagonal block */
            double *row = C + (size_t)i * n + c0;
            memcpy(x, row, sizeof(double) * (size_t)w);
            tqp_solve_block_row(C + (size_t)c0 * n + c0, n, w, x);
            memcpy(row, x, sizeof(double) * (size_t)w);
        }
        for (int i = c0; i < c0 + w; i++) /* the diagonal block */
            for (int j = c0; j < c0 + w; j++) C[(size_t)i * n + j] = i == j ? 1.0 : 0.0;
    }
}

tqp_status tqp_tcq_band_tile(tqp_tcq *q, int n, int j, int rows, const double *x, double *a,
                             double *e, double *xhat, uint8_t *packed, const double *P, int ldp)
{
    int c0 = j * TQP_TCQ_TILE, w = n - c0 < TQP_TCQ_TILE ? n - c0 : TQP_TCQ_TILE;
    float y[TQP_TCQ_TILE * TQP_TCQ_TILE], yh[TQP_TCQ_TILE * TQP_TCQ_TILE];
    const tqp_trellis *t;
    TQP_CHECK(tqp_tcq_member(q, rows * w, &t));
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < w; c++) y[r * w + c] = (float)a[(size_t)r * n + c0 + c];
    tqp_trellis_encode(t, y, packed + (size_t)j * tile_bytes(q, rows * TQP_TCQ_TILE), yh);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < w; c++) {
            size_t k = (size_t)r * n + c0 + c;
            xhat[k] = yh[r * w + c];
            e[k] = x[k] - xhat[k];
        }
    /* a[:, 0 .. c0) += E_tile P: in column-major terms a^T += P^T E_tile^T */
    if (P && c0 > 0) tqp_rblas_dgemm('N', 'N', c0, rows, w, 1.0, P, ldp, e + c0, n, 1.0, a, n);
    return TQP_OK;
}

tqp_status tqp_tcq_decode(tqp_tcq *q, const uint8_t *packed, int m, int n, double *X)
{
    float yh[TQP_TCQ_TILE * TQP_TCQ_TILE];
    size_t off = 0;
    for (int r0 = 0; r0 < m; r0 += TQP_TCQ_TILE) {
        int rows = m - r0 < TQP_TCQ_TILE ? m - r0 : TQP_TCQ_TILE;
        for (int c0 = 0; c0 < n; c0 += TQP_TCQ_TILE) {
            int w = n - c0 < TQP_TCQ_TILE ? n - c0 : TQP_TCQ_TILE;
            const tqp_trellis *t;
            TQP_CHECK(tqp_tcq_member(q, rows * w, &t));
            tqp_trellis_decode(t, packed + off, yh);
            off += tile_bytes(q, rows * w);
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < w; c++) X[(size_t)(r0 + r) * n + c0 + c] = yh[r * w + c];
        }
    }
    return TQP_OK;
}
