/* The plain C interface of src/cuda/emv.cu (compiled by nvcc), used by src/gpu.c only: the
 * fused decode + matrix-vector product on E8P codes.  Functions return 0, or -1 with a message
 * in err. */
#ifndef TQP_EMV_CUDA_H
#define TQP_EMV_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct emv_cuda emv_cuda;

typedef struct {
    int m, n, bits, bands, nb;   // bands of 8 rows, column blocks of 8
    const uint8_t *layout;       // src/e8mv_impl.h's bytes (tqp_emv_layout_size)
    size_t layout_bytes;
    const float *base, *e81b;    // (256, 8) each
    float inv_rs;
} tqp_emv_cuda_spec;

int tqp_cuda_emv_create(const tqp_emv_cuda_spec *sp, emv_cuda **out, char *err, size_t cap);
void tqp_cuda_emv_destroy(emv_cuda *k);
/* W (m, n) host, code units, bit-identical to the CPU kernels. */
int tqp_cuda_emv_decode(emv_cuda *k, float *W, char *err, size_t cap);
/* z (m) = Ŵ x in code units (host vectors). */
int tqp_cuda_emv_codes(emv_cuda *k, const float *x, float *z, char *err, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
