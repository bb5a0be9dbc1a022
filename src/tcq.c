/* Trellis-coded quantization of matrices: tiles, BlockLDLQ, decoding (see include/tqp/tcq.h). */
#include "tqp/tcq.h"

#include <cblas.h>
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

/* Lu = C blockdiag(C_ii)^-1: each block column solved against its diagonal block. */
void tqp_tcq_block_factor(double *C, int n)
{
    for (int c0 = 0; c0 < n; c0 += TQP_TCQ_TILE) {
        int w = n - c0 < TQP_TCQ_TILE ? n - c0 : TQP_TCQ_TILE;
        double Cii[TQP_TCQ_TILE * TQP_TCQ_TILE];
        for (int i = 0; i < w; i++)
            for (int j = 0; j < w; j++) Cii[i * w + j] = C[(size_t)(c0 + i) * n + c0 + j];
        /* rows c0 .. n-1 of the block column: X <- X Cii^-1 */
        cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, n - c0, w,
                    1.0, Cii, w, C + (size_t)c0 * n + c0, n);
    }
}

tqp_status tqp_tcq_band(tqp_tcq *q, const double *Lu, int n, const double *x, int rows,
                        uint8_t *packed, double *xhat)
{
    size_t rn = (size_t)rows * n;
    double *a = tqp_malloc(sizeof(double) * rn), *e = tqp_malloc(sizeof(double) * rn);
    float y[TQP_TCQ_TILE * TQP_TCQ_TILE], yh[TQP_TCQ_TILE * TQP_TCQ_TILE];
    tqp_status s = a && e ? TQP_OK : TQP_ENOMEM;
    if (s == TQP_OK) memcpy(a, x, sizeof(double) * rn);
    int nb = (n + TQP_TCQ_TILE - 1) / TQP_TCQ_TILE;
    size_t *off = tqp_malloc(sizeof(size_t) * (size_t)nb); /* byte offset of each tile */
    if (!off) s = TQP_ENOMEM;
    for (int j = 0, pos = 0; s == TQP_OK && j < nb; j++) {
        int w = n - j * TQP_TCQ_TILE < TQP_TCQ_TILE ? n - j * TQP_TCQ_TILE : TQP_TCQ_TILE;
        off[j] = (size_t)pos;
        pos += (int)tile_bytes(q, rows * w);
    }
    for (int j = nb - 1; s == TQP_OK && j >= 0; j--) {
        int c0 = j * TQP_TCQ_TILE, w = n - c0 < TQP_TCQ_TILE ? n - c0 : TQP_TCQ_TILE;
        const tqp_trellis *t;
        s = tqp_tcq_member(q, rows * w, &t);
        if (s != TQP_OK) break;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < w; c++) y[r * w + c] = (float)a[(size_t)r * n + c0 + c];
        tqp_trellis_encode(t, y, packed + off[j], yh);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < w; c++) {
                size_t k = (size_t)r * n + c0 + c;
                xhat[k] = yh[r * w + c];
                e[k] = x[k] - xhat[k];
            }
        /* a[:, 0 .. c0) += E_blk Lu[c0 .. c0+w, 0 .. c0) */
        if (Lu && c0 > 0)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, c0, w, 1.0, e + c0, n,
                        Lu + (size_t)c0 * n, n, 1.0, a, n);
    }
    free(a), free(e), free(off);
    return s;
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
