/* Fused decode + matvec on scalar-grid codes (include/tqp/smv.h). */
#include "tqp/smv.h"

#include <stdlib.h>
#include <string.h>

#include "matvec_impl.h"
#include "tqp/quant.h"

enum { RUN = 64, LANES = 8 };

struct tqp_smv {
    int m, n, bits;
    double scale;
    const tqp_rot *rot;
    uint8_t *packed;      // the codes, 8 zero bytes past the end (reads of 2 bytes)
    float lut[256];       // code -> value in code units
    float *xr, *z;        // (n), (m)
    double *dx, *scratch; // (max(m, n)) each
};

tqp_status tqp_smv_create(const uint8_t *packed, int m, int n, int bits, double scale,
                          const tqp_rot *rot, tqp_smv **out)
{
    *out = NULL;
    if (m < 1 || n < 1 || bits < 1 || bits > 8)
        return tqp_error_set(TQP_EUSAGE, "scalar matvec: bad shape (%d, %d) or %d bits", m, n,
                             bits);
    tqp_smv *op = tqp_calloc(1, sizeof *op);
    if (!op) return TQP_ENOMEM;
    size_t bytes = tqp_pack_bytes((size_t)m * n, bits), big = (size_t)(m > n ? m : n);
    op->m = m, op->n = n, op->bits = bits, op->scale = scale, op->rot = rot;
    op->packed = tqp_calloc(bytes + 8, 1);
    op->xr = tqp_malloc_aligned(sizeof(float) * (size_t)n);
    op->z = tqp_malloc_aligned(sizeof(float) * (size_t)m);
    op->dx = tqp_malloc(sizeof(double) * big);
    op->scratch = tqp_malloc(sizeof(double) * big);
    if (!op->packed || !op->xr || !op->z || !op->dx || !op->scratch) {
        tqp_smv_destroy(&op);
        return TQP_ENOMEM;
    }
    memcpy(op->packed, packed, bytes);
    const tqp_codebook *cb = &tqp_codebooks[TQP_CB_SCALAR];
    for (uint32_t c = 0; c < (1u << bits); c++) op->lut[c] = (float)cb->decode(c, bits);
    *out = op;
    return TQP_OK;
}

void tqp_smv_destroy(tqp_smv **pop)
{
    tqp_smv *op = *pop;
    if (!op) return;
    free(op->packed), free(op->xr), free(op->z), free(op->dx), free(op->scratch);
    free(op);
    *pop = NULL;
}

/* Row r's product: codes unpacked RUN at a time into values, summed in LANES lanes. */
static float row_dot(const tqp_smv *op, int r, const float *xr)
{
    int n = op->n, b = op->bits;
    unsigned mask = (1u << b) - 1;
    size_t bit = (size_t)r * n * b;
    float lane[LANES] = {0}, v[RUN];
    for (int c0 = 0; c0 < n; c0 += RUN) {
        int w = n - c0 < RUN ? n - c0 : RUN;
        for (int i = 0; i < w; i++, bit += b) {
            const uint8_t *p = op->packed + (bit >> 3);
            unsigned word = (unsigned)p[0] | (unsigned)p[1] << 8;
            v[i] = op->lut[(word >> (bit & 7)) & mask];
        }
        for (int i = w; i < RUN; i++) v[i] = 0;
        const float *x = xr + c0;
        int i = 0;
        for (; i + LANES <= w; i += LANES)
            for (int l = 0; l < LANES; l++) lane[l] += v[i + l] * x[i + l];
        for (; i < w; i++) lane[i % LANES] += v[i] * x[i];
    }
    float s = 0;
    for (int l = 0; l < LANES; l++) s += lane[l];
    return s;
}

void tqp_smv_apply_codes(tqp_smv *op, const float *xr, float *z, int threads)
{
    int m = op->m;
#pragma omp parallel for num_threads(threads > 1 ? threads : 1) schedule(static) if (threads > 1)
    for (int r = 0; r < m; r++) z[r] = row_dot(op, r, xr);
}

void tqp_smv_apply(tqp_smv *op, const float *x, float *y, int threads)
{
    tqp_mv_rotate_in(op->rot, x, op->xr, op->n, op->dx, op->scratch);
    tqp_smv_apply_codes(op, op->xr, op->z, threads);
    tqp_mv_rotate_out(op->rot, op->scale, op->z, y, op->m, op->dx, op->scratch);
}
