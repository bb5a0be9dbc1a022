/* The optional CUDA back end: the trellis and E8P decoders and the fused decode + matrix-vector
 * products (docs/matvec.md) on a GPU.  Built when CMake finds nvcc (-DTQP_CUDA=AUTO|ON|OFF); without it,
 * or without a device, tqp_gpu_available says why and everything else refuses with that
 * reason.  Same layout and values as the CPU kernels (matvec.h): decoding is bit-identical to
 * the CPU, the product agrees within float rounding. */
#ifndef TQP_GPU_H
#define TQP_GPU_H

#include <stddef.h>
#include <stdint.h>

#include "tqp/error.h"
#include "tqp/trellis.h"

/* 1 when built with CUDA and device 0 is usable, with its description in `desc`; otherwise 0
 * and the reason in `desc` ("built without CUDA", "no CUDA device (...)"). */
int tqp_gpu_available(char *desc, size_t cap);

typedef struct tqp_gpu_tmv tqp_gpu_tmv;

/* Upload W (m, n), multiples of 16, from its packed codes (tcq layout) and code family. */
tqp_status tqp_gpu_tmv_create(const tqp_trellis *t, const uint8_t *packed, int m, int n,
                              tqp_gpu_tmv **out);
void tqp_gpu_tmv_destroy(tqp_gpu_tmv **op);
/* Ŵ (m, n) row-major in code units, decoded on the device. */
tqp_status tqp_gpu_tmv_decode(tqp_gpu_tmv *op, float *W);
/* z (m) = Ŵ xr (n) in code units, on the device (host vectors). */
tqp_status tqp_gpu_tmv_codes(tqp_gpu_tmv *op, const float *xr, float *z);

typedef struct {
    double seconds_ours, seconds_cublas, seconds_decode, copy_gbps, max_rel_diff;
} tqp_gpu_timing;
/* Device timings (best of reps): the fused product, cuBLAS fp16 GEMV on the same matrix
 * decoded to fp16, decoding to fp32, and the device's copy bandwidth. */
tqp_status tqp_gpu_tmv_bench(tqp_gpu_tmv *op, const float *xr, int reps, tqp_gpu_timing *t);

typedef struct tqp_gpu_emv tqp_gpu_emv;

/* Upload W (m, n) from its stored E8P codes (e8p.h, any shape; bits 2-4, stage scale rs). */
tqp_status tqp_gpu_emv_create(const uint8_t *packed, int m, int n, int bits, double rs,
                              tqp_gpu_emv **out);
void tqp_gpu_emv_destroy(tqp_gpu_emv **op);
/* Ŵ (m, n) row-major in code units, decoded on the device: the CPU kernels' values (e8mv.h). */
tqp_status tqp_gpu_emv_decode(tqp_gpu_emv *op, float *W);
/* z (m) = Ŵ xr (n) in code units, on the device (host vectors). */
tqp_status tqp_gpu_emv_codes(tqp_gpu_emv *op, const float *xr, float *z);

#endif
