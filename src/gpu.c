/* The CUDA back end's C side (include/tqp/gpu.h): the layout is built here (matvec.c's) and
 * handed to src/cuda/tmv.cu; without CUDA every entry point reports why. */
#include "tqp/gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e8mv_impl.h"
#include "matvec_impl.h"

#ifdef TQP_HAVE_CUDA
#include "cuda/emv_cuda.h"
#include "cuda/tmv_cuda.h"

struct tqp_gpu_tmv {
    tmv_cuda *k;
};

int tqp_gpu_available(char *desc, size_t cap)
{
    if (getenv("TQP_NO_GPU")) {
        snprintf(desc, cap, "TQP_NO_GPU is set");
        return 0;
    }
    return tqp_cuda_device(desc, cap);
}

tqp_status tqp_gpu_tmv_create(const tqp_trellis *t, const uint8_t *packed, int m, int n,
                              tqp_gpu_tmv **out)
{
    *out = NULL;
    char why[256];
    if (!tqp_gpu_available(why, sizeof why))
        return tqp_error_set(TQP_EUSAGE, "GPU: %s", why);
    if (m <= 0 || n <= 0 || m % 16 || n % 16 || t->L > 16)
        return tqp_error_set(TQP_EINPUT, "GPU: %d x %d with L = %d: needs whole 16 x 16 tiles "
                             "and L <= 16", m, n, t->L);
    size_t nw = tqp_tmv_words_count(m, n, t->K);
    uint32_t *words = tqp_calloc(nw, sizeof *words);
    tqp_gpu_tmv *op = tqp_calloc(1, sizeof *op);
    if (!words || !op) {
        free(words), free(op);
        return TQP_ENOMEM;
    }
    tqp_tmv_build_words(packed, m, n, t->K, t->V, words);
    tqp_tmv_cuda_spec sp = {m, n, t->L, t->K, t->V, (int)t->code, words, nw, t->table,
                            t->code == TQP_TCODE_HYB ? t->lut : NULL};
    char err[256];
    int rc = tqp_cuda_tmv_create(&sp, &op->k, err, sizeof err);
    free(words);
    if (rc) {
        tqp_cuda_tmv_destroy(op->k);
        free(op);
        return tqp_error_set(TQP_EIO, "GPU: %s", err);
    }
    *out = op;
    return TQP_OK;
}

void tqp_gpu_tmv_destroy(tqp_gpu_tmv **op)
{
    if (!*op) return;
    tqp_cuda_tmv_destroy((*op)->k);
    free(*op);
    *op = NULL;
}

tqp_status tqp_gpu_tmv_decode(tqp_gpu_tmv *op, float *W)
{
    char err[256];
    if (tqp_cuda_tmv_decode(op->k, W, err, sizeof err))
        return tqp_error_set(TQP_EIO, "GPU: %s", err);
    return TQP_OK;
}

tqp_status tqp_gpu_tmv_codes(tqp_gpu_tmv *op, const float *xr, float *z)
{
    char err[256];
    if (tqp_cuda_tmv_codes(op->k, xr, z, err, sizeof err))
        return tqp_error_set(TQP_EIO, "GPU: %s", err);
    return TQP_OK;
}

tqp_status tqp_gpu_tmv_bench(tqp_gpu_tmv *op, const float *xr, int reps, tqp_gpu_timing *t)
{
    char err[256];
    tqp_cuda_timing c;
    if (tqp_cuda_tmv_bench(op->k, xr, reps, &c, err, sizeof err))
        return tqp_error_set(TQP_EIO, "GPU: %s", err);
    *t = (tqp_gpu_timing){c.ours, c.cublas, c.decode, c.copy_gbps, c.maxrel};
    return TQP_OK;
}

struct tqp_gpu_emv {
    emv_cuda *k;
};

tqp_status tqp_gpu_emv_create(const uint8_t *packed, int m, int n, int bits, double rs,
                              tqp_gpu_emv **out)
{
    *out = NULL;
    char why[256];
    if (!tqp_gpu_available(why, sizeof why))
        return tqp_error_set(TQP_EUSAGE, "GPU: %s", why);
    if (m <= 0 || n <= 0 || bits < 2 || bits > 4 || (bits > 2 && !(rs > 0)))
        return tqp_error_set(TQP_EINPUT, "GPU: E8P %d x %d at %d bits (rs %g)", m, n, bits, rs);
    uint8_t *bytes = NULL;
    tqp_emv_layout L;
    TQP_CHECK(tqp_emv_layout_build(packed, m, n, bits, rs, &bytes, &L));
    tqp_gpu_emv *op = tqp_calloc(1, sizeof *op);
    if (!op) {
        free(bytes);
        return TQP_ENOMEM;
    }
    tqp_emv_cuda_spec sp = {m, n, bits, L.bands, L.nb, bytes, tqp_emv_layout_size(m, n),
                            L.base, L.e81b, L.inv_rs};
    char err[256];
    int rc = tqp_cuda_emv_create(&sp, &op->k, err, sizeof err);
    free(bytes);
    if (rc) {
        tqp_cuda_emv_destroy(op->k);
        free(op);
        return tqp_error_set(TQP_EIO, "GPU: %s", err);
    }
    *out = op;
    return TQP_OK;
}

void tqp_gpu_emv_destroy(tqp_gpu_emv **op)
{
    if (!*op) return;
    tqp_cuda_emv_destroy((*op)->k);
    free(*op);
    *op = NULL;
}

tqp_status tqp_gpu_emv_decode(tqp_gpu_emv *op, float *W)
{
    char err[256];
    if (tqp_cuda_emv_decode(op->k, W, err, sizeof err))
        return tqp_error_set(TQP_EIO, "GPU: %s", err);
    return TQP_OK;
}

tqp_status tqp_gpu_emv_codes(tqp_gpu_emv *op, const float *xr, float *z)
{
    char err[256];
    if (tqp_cuda_emv_codes(op->k, xr, z, err, sizeof err))
        return tqp_error_set(TQP_EIO, "GPU: %s", err);
    return TQP_OK;
}

#else /* built without CUDA */

int tqp_gpu_available(char *desc, size_t cap)
{
    snprintf(desc, cap, "built without CUDA");
    return 0;
}

static tqp_status absent(void)
{
    return tqp_error_set(TQP_EUSAGE, "GPU: built without CUDA (no nvcc at configure time)");
}

tqp_status tqp_gpu_tmv_create(const tqp_trellis *t, const uint8_t *packed, int m, int n,
                              tqp_gpu_tmv **out)
{
    (void)t, (void)packed, (void)m, (void)n;
    *out = NULL;
    return absent();
}

void tqp_gpu_tmv_destroy(tqp_gpu_tmv **op)
{
    *op = NULL;
}

tqp_status tqp_gpu_tmv_decode(tqp_gpu_tmv *op, float *W)
{
    (void)op, (void)W;
    return absent();
}

tqp_status tqp_gpu_tmv_codes(tqp_gpu_tmv *op, const float *xr, float *z)
{
    (void)op, (void)xr, (void)z;
    return absent();
}

tqp_status tqp_gpu_tmv_bench(tqp_gpu_tmv *op, const float *xr, int reps, tqp_gpu_timing *t)
{
    (void)op, (void)xr, (void)reps, (void)t;
    return absent();
}

tqp_status tqp_gpu_emv_create(const uint8_t *packed, int m, int n, int bits, double rs,
                              tqp_gpu_emv **out)
{
    (void)packed, (void)m, (void)n, (void)bits, (void)rs;
    *out = NULL;
    return absent();
}

void tqp_gpu_emv_destroy(tqp_gpu_emv **op)
{
    *op = NULL;
}

tqp_status tqp_gpu_emv_decode(tqp_gpu_emv *op, float *W)
{
    (void)op, (void)W;
    return absent();
}

tqp_status tqp_gpu_emv_codes(tqp_gpu_emv *op, const float *xr, float *z)
{
    (void)op, (void)xr, (void)z;
    return absent();
}

#endif
