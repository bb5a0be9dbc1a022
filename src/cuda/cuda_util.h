/* Error reporting shared by the CUDA sources (tmv.cu, emv.cu): CU(call, what) returns -1 from
 * the enclosing function with "what: CUDA's message" in (err, cap). */
#ifndef TQP_CUDA_UTIL_H
#define TQP_CUDA_UTIL_H

#include <cuda_runtime.h>

#include <stdio.h>

static inline int cu_fail(char *err, size_t cap, const char *what, cudaError_t e)
{
    snprintf(err, cap, "%s: %s", what, cudaGetErrorString(e));
    return -1;
}

#define CU(call, what)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cu_fail(err, cap, what, e_);                                 \
    } while (0)

#endif
