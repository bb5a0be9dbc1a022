/* CUDA kernels of the trellis codes (include/tqp/gpu.h): decoding to fp32 and the fused
 * decode + matrix-vector product, on the layout of src/matvec_impl.h (the tiles' streams
 * rewritten with chunks in state order, 16 bands' words side by side).  A block of 256 threads
 * covers a group of 16 bands (256 rows): thread (j, r) = (t mod 16, t / 16) is row r of band j,
 * so the 16 threads of a row read 16 consecutive words.  Each state is one funnel shift of two
 * words and a mask; 1mad, 3inst and hyb are computed, lut is read from the code table.
 *
 * The product is split over column ranges (gridDim.y); each writes its partial sums and a
 * second kernel adds them in a fixed order, so results do not depend on scheduling.  Plain C
 * interface (tmv_cuda.h), called from src/gpu.c. */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cuda_util.h"
#include "tmv_cuda.h"

enum { CODE_1MAD = 0, CODE_3INST = 1, CODE_HYB = 2, CODE_LUT = 3 };

struct tmv_cuda {
    int m, n, L, K, V, code, groups, ncb, Wt, splits;
    uint32_t *words;   // device: the layout
    float *table;      // device: (2^L, V) code values (lut)
    float *lut;        // device: hyb's (512, 2)
    float *one_mad;    // device: the 1021 values of 1mad, (sum - 510) / 147.8..., as the CPU
    float *x, *part, *z, *W;
    __half *Wh, *xh, *yh;
    cublasHandle_t blas;
};

extern "C" int tqp_cuda_device(char *name, size_t cap)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(name, cap, "no CUDA device (%s)", cudaGetErrorString(e));
        return 0;
    }
    if (count == 0) {
        snprintf(name, cap, "no CUDA device");
        return 0;
    }
    cudaDeviceProp p;
    int driver = 0;
    cudaGetDeviceProperties(&p, 0);
    cudaDriverGetVersion(&driver);
    snprintf(name, cap, "%s (compute %d.%d, %.0f GiB, driver %d.%d)", p.name, p.major, p.minor,
             p.totalGlobalMem / 1073741824.0, driver / 1000, driver % 1000 / 10);
    return 1;
}

/* The state of step i of the lane's tile (tw: the tile's words, lane j). */
__device__ __forceinline__ uint32_t state_at(const uint32_t *tw, int Wt, int j, int e, uint32_t lmask)
{
    int wl = e >> 5, ia = wl - 1 < 0 ? wl - 1 + Wt : wl - 1, ib = wl >= Wt ? wl - Wt : wl;
    uint32_t a = tw[ia * 16 + j], b = tw[ib * 16 + j];
    return __funnelshift_l(b, a, e & 31) & lmask; /* high word of (a:b) << (e mod 32) */
}

/* 1mad's byte sum minus 510 (the value times 147.8...). */
__device__ __forceinline__ int mad_sum(uint32_t s)
{
    uint32_t x = 34038481u * s + 76625530u;
    return (int)__dp4a(x, 0x01010101u, 0u) - 510;
}

__device__ __forceinline__ float inst3(uint32_t s)
{
    uint32_t x = 89226354u * s + 64248484u, y = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
    float hi = __half2float(__ushort_as_half((unsigned short)(y >> 16)));
    float lo = __half2float(__ushort_as_half((unsigned short)(y & 0xFFFFu)));
    return __fadd_rn(hi, lo); /* as the CPU: f(hi) + f(lo), never contracted */
}

__device__ __forceinline__ float2 hyb(uint32_t s, const float *lut)
{
    uint32_t h = s * (s + 1u), idx = (h >> 6) & 511u;
    float a = lut[2 * idx], b = lut[2 * idx + 1];
    return make_float2((h >> 15 & 1u) ? -a : a, b);
}

/* Exact code values of state s, component 0 and 1 (V = 2). */
__device__ __forceinline__ float2 value(int code, int V, uint32_t s, const float *table,
                                        const float *lut, const float *one_mad)
{
    if (code == CODE_1MAD) return make_float2(one_mad[mad_sum(s) + 510], 0.f);
    if (code == CODE_3INST) return make_float2(inst3(s), 0.f);
    if (code == CODE_HYB) return hyb(s, lut);
    if (V == 1) return make_float2(table[s], 0.f);
    return make_float2(table[2 * s], table[2 * s + 1]);
}

__global__ void decode_kernel(tmv_cuda k, float *W)
{
    __shared__ float lut[1024], one_mad[1024];
    for (int i = threadIdx.x; i < 1024; i += blockDim.x) {
        if (k.code == CODE_HYB) lut[i] = k.lut[i];
        if (k.code == CODE_1MAD && i < 1021) one_mad[i] = k.one_mad[i];
    }
    __syncthreads();
    int g = blockIdx.x, cb = blockIdx.y, j = threadIdx.x & 15, r = threadIdx.x >> 4;
    int row = (16 * g + j) * 16 + r;
    if (row >= k.m) return;
    const uint32_t *tw = k.words + ((size_t)g * k.ncb + cb) * k.Wt * 16;
    uint32_t lmask = (1u << k.L) - 1;
    int KV = k.K * k.V, steps = 16 / k.V;
    float *out = W + (size_t)row * k.n + 16 * cb;
    for (int c = 0; c < steps; c++) {
        uint32_t s = state_at(tw, k.Wt, j, (r * steps + c + 1) * KV, lmask);
        float2 v = value(k.code, k.V, s, k.table, lut, one_mad);
        out[c * k.V] = v.x;
        if (k.V == 2) out[c * 2 + 1] = v.y;
    }
}

/* Partial sums of z over the column blocks of split blockIdx.y, in code units except 1mad
 * (sum - 510 units: the host divides). */
__global__ void codes_kernel(tmv_cuda k, const float *x, float *part)
{
    __shared__ float lut[1024];
    if (k.code == CODE_HYB)
        for (int i = threadIdx.x; i < 1024; i += blockDim.x) lut[i] = k.lut[i];
    __syncthreads();
    int g = blockIdx.x, sp = blockIdx.y, j = threadIdx.x & 15, r = threadIdx.x >> 4;
    int per = (k.ncb + gridDim.y - 1) / gridDim.y, cb0 = sp * per;
    int cb1 = cb0 + per < k.ncb ? cb0 + per : k.ncb;
    uint32_t lmask = (1u << k.L) - 1;
    int KV = k.K * k.V, steps = 16 / k.V;
    float acc = 0.f;
    for (int cb = cb0; cb < cb1; cb++) {
        const uint32_t *tw = k.words + ((size_t)g * k.ncb + cb) * k.Wt * 16;
        const float *xc = x + 16 * cb;
        for (int c = 0; c < steps; c++) {
            uint32_t s = state_at(tw, k.Wt, j, (r * steps + c + 1) * KV, lmask);
            if (k.code == CODE_1MAD) {
                acc = fmaf((float)mad_sum(s), xc[c], acc);
            } else {
                float2 v = value(k.code, k.V, s, k.table, lut, NULL);
                acc = fmaf(v.x, xc[c * k.V], acc);
                if (k.V == 2) acc = fmaf(v.y, xc[c * 2 + 1], acc);
            }
        }
    }
    int row = (16 * g + j) * 16 + r;
    if (row < k.m) part[(size_t)sp * k.m + row] = acc;
}

__global__ void reduce_kernel(const float *part, int splits, int m, float *z)
{
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= m) return;
    float s = 0.f;
    for (int i = 0; i < splits; i++) s += part[(size_t)i * m + row];
    z[row] = s;
}

__global__ void to_half_kernel(const float *a, __half *b, size_t count)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) b[i] = __float2half_rn(a[i]);
}

extern "C" int tqp_cuda_tmv_create(const tqp_tmv_cuda_spec *sp, tmv_cuda **out, char *err,
                                   size_t cap)
{
    *out = NULL;
    tmv_cuda *k = (tmv_cuda *)calloc(1, sizeof *k);
    if (!k) return snprintf(err, cap, "out of host memory"), -1;
    *out = k;
    k->m = sp->m, k->n = sp->n, k->L = sp->L, k->K = sp->K, k->V = sp->V, k->code = sp->code;
    k->groups = (sp->m + 255) / 256, k->ncb = sp->n / 16, k->Wt = 8 * sp->K;
    /* enough column splits to fill the device: about 8 blocks per multiprocessor */
    int sms = 1;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    k->splits = (8 * sms + k->groups - 1) / k->groups;
    if (k->splits > k->ncb) k->splits = k->ncb;
    if (k->splits < 1) k->splits = 1;
    size_t nw = sp->nwords;
    CU(cudaMalloc(&k->words, nw * 4), "cudaMalloc codes");
    CU(cudaMemcpy(k->words, sp->words, nw * 4, cudaMemcpyHostToDevice), "copying codes");
    size_t tf = ((size_t)1 << sp->L) * sp->V;
    CU(cudaMalloc(&k->table, tf * 4), "cudaMalloc code table");
    CU(cudaMemcpy(k->table, sp->table, tf * 4, cudaMemcpyHostToDevice), "copying code table");
    CU(cudaMalloc(&k->lut, 1024 * 4), "cudaMalloc LUT");
    if (sp->hyb_lut)
        CU(cudaMemcpy(k->lut, sp->hyb_lut, 1024 * 4, cudaMemcpyHostToDevice), "copying LUT");
    float one_mad[1021];
    for (int v = -510; v <= 510; v++) one_mad[v + 510] = (float)(v / 147.800537109375);
    CU(cudaMalloc(&k->one_mad, sizeof one_mad), "cudaMalloc 1mad values");
    CU(cudaMemcpy(k->one_mad, one_mad, sizeof one_mad, cudaMemcpyHostToDevice), "copying 1mad");
    CU(cudaMalloc(&k->x, (size_t)k->n * 4), "cudaMalloc x");
    CU(cudaMalloc(&k->z, (size_t)k->m * 4), "cudaMalloc z");
    CU(cudaMalloc(&k->part, (size_t)k->splits * k->m * 4), "cudaMalloc partial sums");
    return 0;
}

extern "C" void tqp_cuda_tmv_destroy(tmv_cuda *k)
{
    if (!k) return;
    cudaFree(k->words), cudaFree(k->table), cudaFree(k->lut), cudaFree(k->one_mad);
    cudaFree(k->x), cudaFree(k->z), cudaFree(k->part), cudaFree(k->W);
    cudaFree(k->Wh), cudaFree(k->xh), cudaFree(k->yh);
    if (k->blas) cublasDestroy(k->blas);
    free(k);
}

static int decode_device(tmv_cuda *k, char *err, size_t cap)
{
    if (!k->W) CU(cudaMalloc(&k->W, (size_t)k->m * k->n * 4), "cudaMalloc decoded matrix");
    decode_kernel<<<dim3(k->groups, k->ncb), 256>>>(*k, k->W);
    CU(cudaGetLastError(), "decode kernel");
    return 0;
}

extern "C" int tqp_cuda_tmv_decode(tmv_cuda *k, float *W, char *err, size_t cap)
{
    if (decode_device(k, err, cap)) return -1;
    CU(cudaMemcpy(W, k->W, (size_t)k->m * k->n * 4, cudaMemcpyDeviceToHost), "copying W back");
    return 0;
}

static int codes_device(tmv_cuda *k, char *err, size_t cap)
{
    codes_kernel<<<dim3(k->groups, k->splits), 256>>>(*k, k->x, k->part);
    reduce_kernel<<<(k->m + 255) / 256, 256>>>(k->part, k->splits, k->m, k->z);
    CU(cudaGetLastError(), "matvec kernels");
    return 0;
}

extern "C" int tqp_cuda_tmv_codes(tmv_cuda *k, const float *x, float *z, char *err, size_t cap)
{
    CU(cudaMemcpy(k->x, x, (size_t)k->n * 4, cudaMemcpyHostToDevice), "copying x");
    if (codes_device(k, err, cap)) return -1;
    CU(cudaMemcpy(z, k->z, (size_t)k->m * 4, cudaMemcpyDeviceToHost), "copying z back");
    if (k->code == CODE_1MAD)
        for (int i = 0; i < k->m; i++) z[i] = (float)(z[i] / 147.800537109375);
    return 0;
}

/* Best of `reps` timings of fn, in seconds, with CUDA events. */
#define TIME_BEST(best, reps, body)                                                                \
    do {                                                                                           \
        cudaEvent_t a_, b_;                                                                        \
        cudaEventCreate(&a_), cudaEventCreate(&b_);                                                \
        best = INFINITY;                                                                           \
        for (int r_ = 0; r_ < (reps); r_++) {                                                      \
            cudaEventRecord(a_);                                                                   \
            body;                                                                                  \
            cudaEventRecord(b_);                                                                   \
            cudaEventSynchronize(b_);                                                              \
            float ms_ = 0;                                                                         \
            cudaEventElapsedTime(&ms_, a_, b_);                                                    \
            if (ms_ * 1e-3 < best) best = ms_ * 1e-3;                                              \
        }                                                                                          \
        cudaEventDestroy(a_), cudaEventDestroy(b_);                                                \
    } while (0)

extern "C" int tqp_cuda_tmv_bench(tmv_cuda *k, const float *x, int reps, tqp_cuda_timing *t,
                                  char *err, size_t cap)
{
    size_t mn = (size_t)k->m * k->n;
    CU(cudaMemcpy(k->x, x, (size_t)k->n * 4, cudaMemcpyHostToDevice), "copying x");
    if (decode_device(k, err, cap)) return -1;
    CU(cudaDeviceSynchronize(), "decode");
    TIME_BEST(t->decode, reps, decode_device(k, err, cap));
    if (codes_device(k, err, cap)) return -1; /* warm-up */
    TIME_BEST(t->ours, reps, codes_device(k, err, cap));
    CU(cudaGetLastError(), "timed kernels");
    /* cuBLAS fp16 GEMV on the decoded matrix: W row-major (m, n) is column-major (n, m) */
    if (!k->Wh) CU(cudaMalloc(&k->Wh, mn * 2), "cudaMalloc fp16 matrix");
    if (!k->xh) CU(cudaMalloc(&k->xh, (size_t)k->n * 2), "cudaMalloc fp16 x");
    if (!k->yh) CU(cudaMalloc(&k->yh, (size_t)k->m * 2), "cudaMalloc fp16 y");
    to_half_kernel<<<(unsigned)((mn + 255) / 256), 256>>>(k->W, k->Wh, mn);
    to_half_kernel<<<(k->n + 255) / 256, 256>>>(k->x, k->xh, (size_t)k->n);
    CU(cudaGetLastError(), "fp16 conversion");
    if (!k->blas && cublasCreate(&k->blas) != CUBLAS_STATUS_SUCCESS)
        return snprintf(err, cap, "cublasCreate failed"), -1;
    const float one = 1.f, zero = 0.f;
    cublasStatus_t bs = CUBLAS_STATUS_SUCCESS;
#define GEMV                                                                                       \
    bs = cublasGemmEx(k->blas, CUBLAS_OP_T, CUBLAS_OP_N, k->m, 1, k->n, &one, k->Wh, CUDA_R_16F,  \
                      k->n, k->xh, CUDA_R_16F, k->n, &zero, k->yh, CUDA_R_16F, k->m,                \
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
    GEMV;
    if (bs != CUBLAS_STATUS_SUCCESS) return snprintf(err, cap, "cublasGemmEx failed (%d)", (int)bs), -1;
    TIME_BEST(t->cublas, reps, GEMV);
#undef GEMV
    /* the agreement of the two products (fp16 matrix: to about 1e-3) */
    float *z = (float *)malloc((size_t)k->m * 4);
    __half *yh = (__half *)malloc((size_t)k->m * 2);
    if (!z || !yh) return free(z), free(yh), snprintf(err, cap, "out of host memory"), -1;
    CU(cudaMemcpy(z, k->z, (size_t)k->m * 4, cudaMemcpyDeviceToHost), "copying z back");
    CU(cudaMemcpy(yh, k->yh, (size_t)k->m * 2, cudaMemcpyDeviceToHost), "copying y back");
    double num = 0, den = 0, sc = k->code == CODE_1MAD ? 1 / 147.800537109375 : 1;
    for (int i = 0; i < k->m; i++) {
        double a = z[i] * sc, b = __half2float(yh[i]);
        num = fmax(num, fabs(a - b)), den = fmax(den, fabs(b));
    }
    t->maxrel = den > 0 ? num / den : num;
    free(z), free(yh);
    /* the device's copy bandwidth: a device-to-device copy of the fp32 matrix, bytes read plus
     * bytes written over the time */
    float *dst = NULL;
    CU(cudaMalloc(&dst, mn * 4), "cudaMalloc copy target");
    double tc;
    TIME_BEST(tc, reps, cudaMemcpy(dst, k->W, mn * 4, cudaMemcpyDeviceToDevice));
    cudaFree(dst);
    t->copy_gbps = 2.0 * mn * 4 / tc / 1e9;
    return 0;
}
