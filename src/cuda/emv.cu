/* CUDA kernels of the E8P codes (include/tqp/gpu.h): decoding to fp32 and the fused decode +
 * matrix-vector product, on the layout of src/e8mv_impl.h (per band of 8 rows and column block
 * of 8: 8 table offsets, 8 sign bytes, a byte of shift bits; a second stage at 3 and 4 bits).
 * The 256 pattern bases and the 256 E81B points live in shared memory (16 KB): decoding is a
 * table lookup, a sign per coordinate and the shift.  A thread is one row; a block of 256
 * threads covers 32 bands, and the column blocks are split over gridDim.y; a second kernel
 * adds the partial sums in a fixed order, so results do not depend on scheduling.  Values are
 * one product and one sum, never contracted (__fmul_rn, __fadd_rn), as on the CPU. */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_util.h"
#include "emv_cuda.h"

struct emv_cuda {
    int m, n, bits, bands, nb, splits;
    float inv_rs;
    uint8_t *layout;          // device
    const uint16_t *k1, *k2;  // device pointers into layout
    const uint8_t *neg1, *p1, *neg2, *p2;
    float *tabs;              // device: base (256 x 8) then e81b (256 x 8)
    float *x, *sx, *part, *z, *W;
};

/* Coordinate i of a first-stage (or 4-bit second-stage) point: the signed base plus the shift. */
__device__ __forceinline__ float coord(const float *base, unsigned off, unsigned neg, unsigned p,
                                       int i)
{
    float b = base[off + i];
    return __fadd_rn((neg >> i) & 1 ? -b : b, p ? -0.25f : 0.25f);
}

/* The 8 decoded values of row r of band b, block j. */
__device__ __forceinline__ void values(const emv_cuda &k, const float *tabs, size_t q, int r,
                                       float v[8])
{
    const float *base = tabs, *e81b = tabs + 2048;
    unsigned o1 = k.k1[8 * q + r], n1 = k.neg1[8 * q + r], p1 = (k.p1[q] >> r) & 1;
    for (int i = 0; i < 8; i++) v[i] = coord(base, o1, n1, p1, i);
    if (k.bits <= 2) return;
    unsigned o2 = k.k2[8 * q + r];
    for (int i = 0; i < 8; i++) {
        float w = k.bits == 4 ? coord(base, o2, k.neg2[8 * q + r], (k.p2[q] >> r) & 1, i)
                              : e81b[o2 + i];
        v[i] = __fadd_rn(v[i], __fmul_rn(w, k.inv_rs));
    }
}

__device__ void load_tabs(const emv_cuda &k, float *tabs)
{
    for (int i = threadIdx.x; i < 4096; i += blockDim.x) tabs[i] = k.tabs[i];
    __syncthreads();
}

/* Thread: row 8 (32 blockIdx.x + t / 8) + t mod 8; blockIdx.y: a column block. */
__global__ void emv_decode_kernel(emv_cuda k, float *W)
{
    __shared__ float tabs[4096];
    load_tabs(k, tabs);
    int b = 32 * blockIdx.x + threadIdx.x / 8, r = threadIdx.x % 8, j = blockIdx.y;
    int row = 8 * b + r;
    if (b >= k.bands || row >= k.m) return;
    float v[8];
    values(k, tabs, (size_t)b * k.nb + j, r, v);
    int w = k.n - 8 * j < 8 ? k.n - 8 * j : 8;
    for (int i = 0; i < w; i++) W[(size_t)row * k.n + 8 * j + i] = v[i];
}

/* Partial sums of the rows over the column blocks of split blockIdx.y: the signed pattern
 * against x, plus the shift times the block's sum of x. */
__global__ void emv_codes_kernel(emv_cuda k, const float *x, const float *sx, float *part)
{
    __shared__ float tabs[4096];
    load_tabs(k, tabs);
    int b = 32 * blockIdx.x + threadIdx.x / 8, r = threadIdx.x % 8, sp = blockIdx.y;
    if (b >= k.bands) return;
    int per = (k.nb + gridDim.y - 1) / gridDim.y, j0 = sp * per;
    int j1 = j0 + per < k.nb ? j0 + per : k.nb;
    const float *base = tabs, *e81b = tabs + 2048;
    float acc1 = 0.f, acc2 = 0.f;
    for (int j = j0; j < j1; j++) {
        size_t q = (size_t)b * k.nb + j;
        const float *xb = x + 8 * j;
        unsigned o = k.k1[8 * q + r], ng = k.neg1[8 * q + r];
        float d = 0.f;
        for (int i = 0; i < 8; i++) {
            float bv = base[o + i];
            d = fmaf((ng >> i) & 1 ? -bv : bv, xb[i], d);
        }
        acc1 += d + ((k.p1[q] >> r) & 1 ? -0.25f : 0.25f) * sx[j];
        if (k.bits == 4) {
            o = k.k2[8 * q + r], ng = k.neg2[8 * q + r];
            d = 0.f;
            for (int i = 0; i < 8; i++) {
                float bv = base[o + i];
                d = fmaf((ng >> i) & 1 ? -bv : bv, xb[i], d);
            }
            acc2 += d + ((k.p2[q] >> r) & 1 ? -0.25f : 0.25f) * sx[j];
        } else if (k.bits == 3) {
            o = k.k2[8 * q + r];
            d = 0.f;
            for (int i = 0; i < 8; i++) d = fmaf(e81b[o + i], xb[i], d);
            acc2 += d;
        }
    }
    int row = 8 * b + r;
    if (row < k.m) part[(size_t)sp * k.m + row] = k.bits > 2 ? acc1 + k.inv_rs * acc2 : acc1;
}

/* x's block sums (x padded with zeros to 8 nb). */
__global__ void emv_sums_kernel(const float *x, int nb, float *sx)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= nb) return;
    float s = 0.f;
    for (int i = 0; i < 8; i++) s += x[8 * j + i];
    sx[j] = s;
}

__global__ void emv_reduce_kernel(const float *part, int splits, int m, float *z)
{
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= m) return;
    float s = 0.f;
    for (int i = 0; i < splits; i++) s += part[(size_t)i * m + row];
    z[row] = s;
}

extern "C" int tqp_cuda_emv_create(const tqp_emv_cuda_spec *sp, emv_cuda **out, char *err,
                                   size_t cap)
{
    *out = NULL;
    emv_cuda *k = (emv_cuda *)calloc(1, sizeof *k);
    if (!k) return snprintf(err, cap, "out of host memory"), -1;
    *out = k;
    k->m = sp->m, k->n = sp->n, k->bits = sp->bits, k->bands = sp->bands, k->nb = sp->nb;
    k->inv_rs = sp->inv_rs;
    int sms = 1, blocks = (k->bands + 31) / 32;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    k->splits = (8 * sms + blocks - 1) / blocks;
    if (k->splits > k->nb) k->splits = k->nb;
    if (k->splits < 1) k->splits = 1;
    CU(cudaMalloc(&k->layout, sp->layout_bytes), "cudaMalloc codes");
    CU(cudaMemcpy(k->layout, sp->layout, sp->layout_bytes, cudaMemcpyHostToDevice), "copying codes");
    size_t q = (size_t)k->bands * k->nb;
    k->k1 = (const uint16_t *)k->layout, k->k2 = k->k1 + 8 * q;
    k->neg1 = (const uint8_t *)(k->k2 + 8 * q), k->p1 = k->neg1 + 8 * q;
    k->neg2 = k->p1 + q, k->p2 = k->neg2 + 8 * q;
    CU(cudaMalloc(&k->tabs, 4096 * 4), "cudaMalloc tables");
    CU(cudaMemcpy(k->tabs, sp->base, 2048 * 4, cudaMemcpyHostToDevice), "copying tables");
    CU(cudaMemcpy(k->tabs + 2048, sp->e81b, 2048 * 4, cudaMemcpyHostToDevice), "copying tables");
    CU(cudaMalloc(&k->x, (size_t)8 * k->nb * 4), "cudaMalloc x");
    CU(cudaMalloc(&k->sx, (size_t)k->nb * 4), "cudaMalloc block sums");
    CU(cudaMalloc(&k->part, (size_t)k->splits * k->m * 4), "cudaMalloc partial sums");
    CU(cudaMalloc(&k->z, (size_t)k->m * 4), "cudaMalloc z");
    return 0;
}

extern "C" void tqp_cuda_emv_destroy(emv_cuda *k)
{
    if (!k) return;
    cudaFree(k->layout), cudaFree(k->tabs), cudaFree(k->x), cudaFree(k->sx);
    cudaFree(k->part), cudaFree(k->z), cudaFree(k->W);
    free(k);
}

extern "C" int tqp_cuda_emv_decode(emv_cuda *k, float *W, char *err, size_t cap)
{
    size_t mn = (size_t)k->m * k->n;
    if (!k->W) CU(cudaMalloc(&k->W, mn * 4), "cudaMalloc W");
    emv_decode_kernel<<<dim3((k->bands + 31) / 32, k->nb), 256>>>(*k, k->W);
    CU(cudaGetLastError(), "decode kernel");
    CU(cudaMemcpy(W, k->W, mn * 4, cudaMemcpyDeviceToHost), "copying W back");
    return 0;
}

extern "C" int tqp_cuda_emv_codes(emv_cuda *k, const float *x, float *z, char *err, size_t cap)
{
    CU(cudaMemset(k->x, 0, (size_t)8 * k->nb * 4), "clearing x");
    CU(cudaMemcpy(k->x, x, (size_t)k->n * 4, cudaMemcpyHostToDevice), "copying x");
    emv_sums_kernel<<<(k->nb + 255) / 256, 256>>>(k->x, k->nb, k->sx);
    emv_codes_kernel<<<dim3((k->bands + 31) / 32, k->splits), 256>>>(*k, k->x, k->sx, k->part);
    emv_reduce_kernel<<<(k->m + 255) / 256, 256>>>(k->part, k->splits, k->m, k->z);
    CU(cudaGetLastError(), "product kernels");
    CU(cudaMemcpy(z, k->z, (size_t)k->m * 4, cudaMemcpyDeviceToHost), "copying z back");
    return 0;
}
