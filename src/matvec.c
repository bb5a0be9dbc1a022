/* The fused decode + matrix-vector product on trellis codes (include/tqp/matvec.h): layout,
 * kernel choice, the plain C kernel, the rotations around the product, and the float64
 * reference of the tests. */
#include "tqp/matvec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "matvec_impl.h"
#include "tqp/tcq.h"

struct tqp_tmv {
    int m, n;
    int i16;                 // code 1mul on avx512: the int16 layout and kernel
    uint16_t *w16;           // its words
    tqp_tmv_i16_layout l16;
    int32_t *xp;             // activation pairs (16 npairs)
    int gf8;                 // code gf8 at K = 2 or 4 on avx512 with GFNI + VBMI: the byte kernel
    uint64_t *w8;            // its words
    tqp_tmv_gf8_layout l8;
    int8_t *xb;              // its activation bytes (2 n at K = 2, 6 n at K = 4)
    tqp_tmv_kernel kernel;
    double scale, divisor;   // kernel units per code unit (1mad in avx512: 147.8...; else 1)
    const tqp_rot *rot;
    tqp_tcq *fam;            // the code family (reference kernel: members per tile size)
    uint8_t *packed;         // reference kernel: the codes as stored
    uint32_t *words;         // avx512: the rewritten streams (matvec_impl.h)
    tqp_tmv_layout lay;
    float *xr, *z;           // (n), (m)
    double *dx, *scratch;    // (max(m, n)) each
};


const char *tqp_tmv_avx512_unavailable(const tqp_trellis *t, int m, int n)
{
#if defined(__x86_64__) && defined(TQP_HAVE_AVX512_MATVEC)
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
          __builtin_cpu_supports("avx512vbmi2")))
        return "this CPU lacks AVX-512 F/BW/VL/VNNI/VBMI2";
    if (getenv("TQP_NO_AVX512")) return "TQP_NO_AVX512 is set";
    if (m % 16 || n % 16) return "the shape is not a multiple of 16 x 16 tiles";
    if (t->L > 16) return "L > 16";
    return NULL;
#else
    (void)t, (void)m, (void)n;
    return "built without the AVX-512 kernels";
#endif
}

const char *tqp_tmv_gf8_unavailable(const tqp_trellis *t)
{
#if defined(__x86_64__) && defined(TQP_HAVE_AVX512_GF8)
    if (t->code != TQP_TCODE_GF8 || t->V != 1) return "the code is not gf8";
    if (t->L != 16 || (t->K != 2 && t->K != 4)) return "it needs L = 16 and K = 2 or 4";
    if (!(__builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni")))
        return "this CPU lacks AVX512-VBMI/GFNI";
    if (getenv("TQP_NO_I16")) return "TQP_NO_I16 is set";
    return NULL;
#else
    (void)t;
    return "built without the avx512-gf8 kernel";
#endif
}

const char *tqp_tmv_avx2_unavailable(const tqp_trellis *t, int m, int n)
{
#if defined(__x86_64__) && defined(TQP_HAVE_AVX2_MATVEC)
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return "this CPU lacks AVX2/FMA";
    if (m % 16 || n % 16) return "the shape is not a multiple of 16 x 16 tiles";
    if (t->L > 16) return "L > 16";
    return NULL;
#else
    (void)t, (void)m, (void)n;
    return "built without the AVX2 kernels";
#endif
}

const char *tqp_tmv_kernel_name(const tqp_tmv *op)
{
    return op->i16                        ? "avx512-i16"
           : op->gf8                      ? "avx512-gf8"
           : op->kernel == TQP_TMV_AVX512 ? "avx512"
           : op->kernel == TQP_TMV_AVX2   ? "avx2"
                                          : "reference";
}

static int simd(const tqp_tmv *op)
{
    return op->kernel == TQP_TMV_AVX512 || op->kernel == TQP_TMV_AVX2;
}

/* Group g with the operator's SIMD kernel (only those built can have been chosen). */
static void codes_simd(const tqp_tmv *op, const float *xr, float *z, int g)
{
#ifdef TQP_HAVE_AVX512_MATVEC
    if (op->kernel == TQP_TMV_AVX512) tqp_tmv_codes_avx512(&op->lay, xr, z, g, g + 1);
#endif
#ifdef TQP_HAVE_AVX2_MATVEC
    if (op->kernel == TQP_TMV_AVX2) tqp_tmv_codes_avx2(&op->lay, xr, z, g, g + 1);
#endif
    (void)op, (void)xr, (void)z, (void)g;
}

static void decode_simd(const tqp_tmv *op, float *W, int g)
{
#ifdef TQP_HAVE_AVX512_GF8
    if (op->gf8) {
        tqp_tmv_decode_gf8_avx512(&op->l8, W, g, g + 1);
        return;
    }
#endif
#ifdef TQP_HAVE_AVX512_MATVEC
    if (op->i16) tqp_tmv_decode_i16_avx512(&op->l16, W, g, g + 1);
    else if (op->kernel == TQP_TMV_AVX512) tqp_tmv_decode_avx512(&op->lay, W, g, g + 1);
#endif
#ifdef TQP_HAVE_AVX2_MATVEC
    if (op->kernel == TQP_TMV_AVX2) tqp_tmv_decode_avx2(&op->lay, W, g, g + 1);
#endif
    (void)op, (void)W, (void)g;
}

/* Chunk i (KV bits at bit i KV) of a little-endian packed stream. */
static uint32_t chunk(const uint8_t *p, int i, int KV)
{
    uint32_t c = 0;
    for (int b = 0; b < KV; b++) {
        int pos = i * KV + b;
        c |= (uint32_t)(p[pos >> 3] >> (pos & 7) & 1) << b;
    }
    return c;
}

size_t tqp_tmv_i16_words_count(int m, int n, int K)
{
    return (size_t)((m + 255) / 256) * (size_t)((n / 16 + 1) / 2) * (size_t)(16 * K) * 32;
}

void tqp_tmv_build_i16(const uint8_t *packed, int m, int n, int K, uint16_t *words)
{
    int bands = m / 16, ncb = n / 16, groups = (m + 255) / 256, np = (ncb + 1) / 2;
    size_t tile_bytes = (size_t)32 * K, tile = (size_t)16 * K * 32;
    for (int g = 0; g < groups; g++)
        for (int q = 0; q < np; q++) {
            uint16_t *Wq = words + ((size_t)g * np + q) * tile;
            for (int j = 0; j < 16 && 16 * g + j < bands; j++)
                for (int h = 0; h < 2 && 2 * q + h < ncb; h++) {
                    const uint8_t *src =
                        packed + ((size_t)(16 * g + j) * ncb + 2 * q + h) * tile_bytes;
                    for (int i = 0; i < 256; i++) {
                        uint32_t c = chunk(src, i, K);
                        for (int b = 0; b < K; b++) {
                            int pos = i * K + b; /* most significant bit of the chunk first */
                            uint16_t bit = (uint16_t)(c >> (K - 1 - b) & 1);
                            Wq[(size_t)(pos >> 4) * 32 + 2 * j + h] |=
                                (uint16_t)(bit << (15 - (pos & 15)));
                        }
                    }
                }
        }
}

size_t tqp_tmv_gf8_words_count(int m, int n, int K)
{
    return (size_t)((m + 127) / 128) * (size_t)(K / 2) * (size_t)(n / 16) * 64;
}

void tqp_tmv_build_gf8(const uint8_t *packed, int m, int n, int K, uint64_t *words)
{
    int bands = m / 16, ncb = n / 16, H = K / 2;
    for (int b = 0; b < bands; b++)
        for (int ct = 0; ct < ncb; ct++) {
            const uint8_t *src = packed + ((size_t)b * ncb + ct) * 32 * K;
            for (int i = 0; i < 256; i++) {
                uint32_t c = chunk(src, i, K);
                for (int bit = 0; bit < K; bit++) {
                    int pos = K * i + K - 1 - bit, r = pos >> 6; /* chunk r: half r / 8 */
                    uint64_t *Wt = words + ((size_t)((b / 8) * H + r / 8) * ncb + ct) * 64;
                    Wt[8 * (r % 8) + b % 8] |= (uint64_t)(c >> bit & 1) << (pos & 63);
                }
            }
        }
}

size_t tqp_tmv_words_count(int m, int n, int K)
{
    return (size_t)((m + 255) / 256) * (size_t)(n / 16) * (size_t)(8 * K) * 16;
}

void tqp_tmv_build_words(const uint8_t *packed, int m, int n, int K, int V, uint32_t *words)
{
    int KV = K * V, N = 256 / V, bands = m / 16, ncb = n / 16, groups = (m + 255) / 256;
    size_t tile_bytes = (size_t)32 * K, tile = (size_t)8 * K * 16;
    for (int g = 0; g < groups; g++)
        for (int cb = 0; cb < ncb; cb++) {
            uint32_t *Wt = words + ((size_t)g * ncb + cb) * tile;
            for (int j = 0; j < 16 && 16 * g + j < bands; j++) {
                const uint8_t *src = packed + ((size_t)(16 * g + j) * ncb + cb) * tile_bytes;
                for (int i = 0; i < N; i++) {
                    uint32_t c = chunk(src, i, KV);
                    for (int q = 0; q < KV; q++) {
                        int pos = i * KV + q; /* most significant bit of the chunk first */
                        uint32_t bit = c >> (KV - 1 - q) & 1;
                        Wt[(size_t)(pos >> 5) * 16 + j] |= bit << (31 - (pos & 31));
                    }
                }
            }
        }
}

tqp_status tqp_tmv_create(const tqp_trellis *t, const uint8_t *packed, int m, int n,
                          double scale, const tqp_rot *rot, tqp_tmv_kernel kernel,
                          tqp_tmv **out)
{
    *out = NULL;
    if (m <= 0 || n <= 0) return tqp_error_set(TQP_EINPUT, "matvec: bad shape %d x %d", m, n);
    if (rot && rot->kind != TQP_ROT_NONE && (rot->out.n != m || rot->in.n != n))
        return tqp_error_set(TQP_EINPUT, "matvec: rotation of %d x %d for a %d x %d matrix",
                             rot->out.n, rot->in.n, m, n);
    const char *why = tqp_tmv_avx512_unavailable(t, m, n), *why2 = tqp_tmv_avx2_unavailable(t, m, n);
    if (kernel == TQP_TMV_AVX512 && why)
        return tqp_error_set(TQP_EUSAGE, "matvec: the avx512 kernel cannot run: %s", why);
    if (kernel == TQP_TMV_AVX2 && why2)
        return tqp_error_set(TQP_EUSAGE, "matvec: the avx2 kernel cannot run: %s", why2);
    if (kernel == TQP_TMV_AUTO)
        kernel = !why ? TQP_TMV_AVX512 : !why2 ? TQP_TMV_AVX2 : TQP_TMV_REFERENCE;
    tqp_tmv *op = tqp_calloc(1, sizeof *op);
    if (!op) return TQP_ENOMEM;
    op->m = m, op->n = n, op->kernel = kernel, op->scale = scale, op->rot = rot, op->divisor = 1;
    tqp_status s = tqp_tcq_create(t->L, t->K, t->V, t->code, t->lut, &op->fam);
    if (s == TQP_OK) s = tqp_tcq_prepare(op->fam, m, n);
    int big = m > n ? m : n;
    op->xr = tqp_malloc_aligned(sizeof(float) * (size_t)n);
    op->z = tqp_malloc_aligned(sizeof(float) * (size_t)m);
    op->dx = tqp_malloc(sizeof(double) * (size_t)big);
    op->scratch = tqp_malloc(sizeof(double) * (size_t)big);
    if (s == TQP_OK && (!op->xr || !op->z || !op->dx || !op->scratch)) s = TQP_ENOMEM;
    if (s == TQP_OK && kernel == TQP_TMV_REFERENCE) {
        size_t bytes = tqp_tcq_matrix_bytes(op->fam, m, n);
        op->packed = tqp_malloc(bytes);
        if (!op->packed) s = TQP_ENOMEM;
        else memcpy(op->packed, packed, bytes);
    }
    op->i16 = kernel == TQP_TMV_AVX512 && t->code == TQP_TCODE_1MUL && t->V == 1 && t->L == 16;
    if (s == TQP_OK && op->i16) {
        tqp_tmv_i16_layout *k = &op->l16;
        *k = (tqp_tmv_i16_layout){.m = m, .n = n, .K = t->K, .groups = (m + 255) / 256,
                                  .npairs = (n / 16 + 1) / 2};
        size_t nw = tqp_tmv_i16_words_count(m, n, t->K);
        op->w16 = tqp_malloc_aligned(sizeof(uint16_t) * nw);
        op->xp = tqp_malloc_aligned(sizeof(int32_t) * 16 * (size_t)k->npairs);
        if (!op->w16 || !op->xp) {
            s = TQP_ENOMEM;
        } else {
            memset(op->w16, 0, sizeof(uint16_t) * nw);
            tqp_tmv_build_i16(packed, m, n, t->K, op->w16);
            k->words = op->w16;
        }
    } else if (s == TQP_OK && kernel == TQP_TMV_AVX512 && !tqp_tmv_gf8_unavailable(t)) {
        op->gf8 = 1;
        tqp_tmv_gf8_layout *k = &op->l8;
        *k = (tqp_tmv_gf8_layout){
            .m = m, .n = n, .K = t->K, .groups = (m + 127) / 128, .ncb = n / 16};
        size_t nw = tqp_tmv_gf8_words_count(m, n, t->K);
        op->w8 = tqp_malloc_aligned(sizeof(uint64_t) * nw);
        op->xb = tqp_malloc_aligned((size_t)(t->K == 2 ? 2 : 6) * (size_t)n);
        if (!op->w8 || !op->xb) {
            s = TQP_ENOMEM;
        } else {
            memset(op->w8, 0, sizeof(uint64_t) * nw);
            tqp_tmv_build_gf8(packed, m, n, t->K, op->w8);
            k->words = op->w8;
        }
    } else if (s == TQP_OK && (kernel == TQP_TMV_AVX512 || kernel == TQP_TMV_AVX2)) {
        const tqp_trellis *b = tqp_tcq_base(op->fam);
        tqp_tmv_layout *k = &op->lay;
        *k = (tqp_tmv_layout){.m = m, .n = n, .L = t->L, .K = t->K, .V = t->V, .code = t->code,
                              .groups = (m + 255) / 256, .ncb = n / 16, .Wt = 8 * t->K,
                              .table = b->table};
        size_t nw = tqp_tmv_words_count(m, n, t->K);
        op->words = tqp_malloc_aligned(sizeof(uint32_t) * nw);
        if (!op->words) {
            s = TQP_ENOMEM;
        } else {
            memset(op->words, 0, sizeof(uint32_t) * nw);
            tqp_tmv_build_words(packed, m, n, t->K, t->V, op->words);
            k->words = op->words;
            if (t->code == TQP_TCODE_1MAD) op->divisor = 147.800537109375;
        }
    }
    if (s != TQP_OK) {
        tqp_tmv_destroy(&op);
        return s;
    }
    *out = op;
    return TQP_OK;
}

void tqp_tmv_destroy(tqp_tmv **pop)
{
    tqp_tmv *op = *pop;
    if (!op) return;
    tqp_tcq_destroy(&op->fam);
    free(op->w16), free(op->xp), free(op->w8), free(op->xb);
    free(op->packed), free(op->words), free(op->xr), free(op->z), free(op->dx), free(op->scratch);
    free(op);
    *pop = NULL;
}

/* Plain C: tile by tile, decode and dot, bands [b0, b1). */
static void codes_reference(tqp_tmv *op, const float *xr, float *z, int b0, int b1)
{
    float yh[TQP_TCQ_TILE * TQP_TCQ_TILE];
    int m = op->m, n = op->n;
    size_t off = tqp_tcq_matrix_bytes(op->fam, 16 * b0 < m ? 16 * b0 : m, n);
    for (int b = b0; b < b1; b++) {
        int r0 = 16 * b, rows = m - r0 < 16 ? m - r0 : 16;
        for (int r = 0; r < rows; r++) z[r0 + r] = 0;
        for (int c0 = 0; c0 < n; c0 += 16) {
            int w = n - c0 < 16 ? n - c0 : 16;
            const tqp_trellis *t = NULL;
            tqp_tcq_member(op->fam, rows * w, &t); /* created by tqp_tcq_prepare */
            tqp_trellis_decode(t, op->packed + off, yh);
            off += (size_t)tqp_trellis_packed_bytes(t);
            for (int r = 0; r < rows; r++) {
                float acc = 0;
                for (int c = 0; c < w; c++) acc += yh[r * w + c] * xr[c0 + c];
                z[r0 + r] += acc;
            }
        }
    }
}

double tqp_mv_i16_step(const float *x, int n)
{
    float mx = 0;
    for (int i = 0; i < n; i++) mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx;
    return mx > 0 ? mx / 32767.0 : 1;
}

/* The activations as int16 (step: tqp_mv_i16_step, round to nearest) in the pairs of the int16
 * layout; returns the step. */
static double quantize_pairs(const tqp_tmv *op, const float *xr)
{
    int n = op->n, np = op->l16.npairs;
    double step = tqp_mv_i16_step(xr, n), inv = 1 / step;
    for (int q = 0; q < np; q++)
        for (int c = 0; c < 16; c++) {
            int i0 = 32 * q + c, i1 = i0 + 16;
            int32_t a = i0 < n ? (int32_t)lrint(xr[i0] * inv) : 0;
            int32_t b = i1 < n ? (int32_t)lrint(xr[i1] * inv) : 0;
            op->xp[16 * q + c] = (int32_t)((uint32_t)(uint16_t)a | (uint32_t)b << 16);
        }
    return step;
}

void tqp_tmv_apply_codes(tqp_tmv *op, const float *xr, float *z, int threads)
{
    if (threads < 1) threads = 1;
#ifdef TQP_HAVE_AVX512_GF8
    if (op->gf8) {
        int64_t sx;
        double f = tqp_tmv_quantize_gf8_avx512(xr, op->n, op->l8.K, op->xb, &sx) / TQP_GF8_SCALE;
        int G = op->l8.groups;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int g = 0; g < G; g++) tqp_tmv_codes_gf8_avx512(&op->l8, op->xb, sx, f, z, g, g + 1);
        return;
    }
#endif
#ifdef TQP_HAVE_AVX512_MATVEC
    if (op->i16) {
        double f = quantize_pairs(op, xr) / 256;
        int G = op->l16.groups;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int g = 0; g < G; g++) tqp_tmv_codes_i16_avx512(&op->l16, op->xp, z, g, g + 1);
        for (int i = 0; i < op->m; i++) z[i] = (float)(z[i] * f);
        return;
    }
#endif
    if (simd(op)) {
        int G = op->lay.groups;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int g = 0; g < G; g++) codes_simd(op, xr, z, g);
        if (op->divisor != 1)
            for (int i = 0; i < op->m; i++) z[i] = (float)(z[i] / op->divisor);
    } else {
        int B = (op->m + 15) / 16;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int b = 0; b < B; b++) codes_reference(op, xr, z, b, b + 1);
    }
}

/* An RHT side whose Hadamard part is a plain Sylvester transform (n a power of two): the
 * rotations of a product then run in float, in place, with no conversions (about a quarter of
 * the double path's time; the rounding is far below the kernels' own). */
static int rht_sylvester(const tqp_rot *rot, const tqp_rot_side *s)
{
    return rot && rot->kind == TQP_ROT_RHT && s->had->b == 1;
}

void tqp_mv_rotate_in(const tqp_rot *rot, const float *x, float *xr, int n, double *dx,
                      double *scratch)
{
    if (!rot || rot->kind == TQP_ROT_NONE) {
        memcpy(xr, x, sizeof(float) * (size_t)n);
        return;
    }
    if (rht_sylvester(rot, &rot->in)) { /* V x = Ĥ (s ⊙ x) */
        const int8_t *sg = rot->in.sign;
        for (int i = 0; i < n; i++) xr[i] = sg[i] < 0 ? -x[i] : x[i];
        tqp_fwht_f32(xr, n);
        float sc = (float)(1 / sqrt((double)n));
        for (int i = 0; i < n; i++) xr[i] *= sc;
        return;
    }
    for (int i = 0; i < n; i++) dx[i] = x[i];
    tqp_rot_side_apply(&rot->in, rot->kind, dx, 0, scratch); /* V x */
    for (int i = 0; i < n; i++) xr[i] = (float)dx[i];
}

void tqp_mv_rotate_out(const tqp_rot *rot, double scale, const float *z, float *y, int m,
                       double *dx, double *scratch)
{
    if (!rot || rot->kind == TQP_ROT_NONE) {
        for (int i = 0; i < m; i++) y[i] = (float)(scale * z[i]);
        return;
    }
    if (rht_sylvester(rot, &rot->out)) { /* U^T z = s ⊙ (Ĥ z), Ĥ symmetric */
        float *t = (float *)dx; /* m doubles hold m floats */
        memcpy(t, z, sizeof(float) * (size_t)m);
        tqp_fwht_f32(t, m);
        const int8_t *sg = rot->out.sign;
        double f = scale / sqrt((double)m);
        for (int i = 0; i < m; i++) y[i] = (float)(sg[i] < 0 ? -(f * t[i]) : f * t[i]);
        return;
    }
    for (int i = 0; i < m; i++) dx[i] = z[i];
    tqp_rot_side_apply(&rot->out, rot->kind, dx, 1, scratch); /* U^T z */
    for (int i = 0; i < m; i++) y[i] = (float)(scale * dx[i]);
}

void tqp_tmv_apply(tqp_tmv *op, const float *x, float *y, int threads)
{
    tqp_mv_rotate_in(op->rot, x, op->xr, op->n, op->dx, op->scratch);
    tqp_tmv_apply_codes(op, op->xr, op->z, threads);
    tqp_mv_rotate_out(op->rot, op->scale, op->z, y, op->m, op->dx, op->scratch);
}

void tqp_tmv_decode(tqp_tmv *op, float *W, int threads)
{
    if (threads < 1) threads = 1;
    int m = op->m, n = op->n;
    if (simd(op)) {
        int G = op->gf8 ? op->l8.groups : op->i16 ? op->l16.groups : op->lay.groups;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int g = 0; g < G; g++) decode_simd(op, W, g);
        return;
    }
    float yh[TQP_TCQ_TILE * TQP_TCQ_TILE];
    size_t off = 0;
    for (int r0 = 0; r0 < m; r0 += 16) {
        int rows = m - r0 < 16 ? m - r0 : 16;
        for (int c0 = 0; c0 < n; c0 += 16) {
            int w = n - c0 < 16 ? n - c0 : 16;
            const tqp_trellis *t = NULL;
            tqp_tcq_member(op->fam, rows * w, &t);
            tqp_trellis_decode(t, op->packed + off, yh);
            off += (size_t)tqp_trellis_packed_bytes(t);
            for (int r = 0; r < rows; r++)
                memcpy(W + (size_t)(r0 + r) * n + c0, yh + r * w, sizeof(float) * (size_t)w);
        }
    }
}

tqp_status tqp_tmv_reference(const tqp_trellis *t, const uint8_t *packed, int m, int n,
                             double scale, const tqp_rot *rot, const float *x, double *W,
                             double *y)
{
    tqp_tcq *fam = NULL;
    TQP_CHECK(tqp_tcq_create(t->L, t->K, t->V, t->code, t->lut, &fam));
    tqp_status s = tqp_tcq_decode(fam, packed, m, n, W);
    tqp_tcq_destroy(&fam);
    TQP_CHECK(s);
    if (rot) TQP_CHECK(tqp_rot_weights(rot, W, 1)); /* U^T Ŵ V */
    for (int i = 0; i < m; i++) {
        double acc = 0;
        for (int j = 0; j < n; j++) acc += W[(size_t)i * n + j] * x[j];
        y[i] = scale * acc;
    }
    return TQP_OK;
}
