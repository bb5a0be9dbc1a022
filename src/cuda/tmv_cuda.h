/* The plain C interface of src/cuda/tmv.cu (compiled by nvcc), used by src/gpu.c only.
 * Functions return 0, or -1 with a message in err. */
#ifndef TQP_TMV_CUDA_H
#define TQP_TMV_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tmv_cuda tmv_cuda;

typedef struct {
    int m, n, L, K, V, code;  // code: tqp_tcode (0 1mad, 1 3inst, 2 hyb, 3 lut)
    const uint32_t *words;    // src/matvec_impl.h layout
    size_t nwords;            // its length (tqp_tmv_words_count)
    const float *table;       // (2^L, V) code values
    const float *hyb_lut;     // (512, 2) for hyb, else NULL
} tqp_tmv_cuda_spec;

typedef struct {
    double ours, cublas, decode; // seconds per call (best of the repetitions)
    double copy_gbps;            // device-to-device copy, bytes read + written per second / 1e9
    double maxrel;               // max |ours - cuBLAS| / max |cuBLAS|
} tqp_cuda_timing;

/* 1 and the device's name, model and driver if device 0 is usable; else 0 and the reason. */
int tqp_cuda_device(char *name, size_t cap);
int tqp_cuda_tmv_create(const tqp_tmv_cuda_spec *sp, tmv_cuda **out, char *err, size_t cap);
void tqp_cuda_tmv_destroy(tmv_cuda *k);
/* W (m, n) host, code units, bit-identical to the CPU decoders. */
int tqp_cuda_tmv_decode(tmv_cuda *k, float *W, char *err, size_t cap);
/* z (m) = Ŵ x in code units (host vectors). */
int tqp_cuda_tmv_codes(tmv_cuda *k, const float *x, float *z, char *err, size_t cap);
/* Device timings of decode, the fused product and cuBLAS fp16 GEMV on the decoded matrix. */
int tqp_cuda_tmv_bench(tmv_cuda *k, const float *x, int reps, tqp_cuda_timing *t, char *err,
                       size_t cap);

#ifdef __cplusplus
}
#endif

#endif
