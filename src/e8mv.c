/* The fused decode + matrix-vector product on E8P codes (include/tqp/e8mv.h): the tables, the
 * prepared layout, kernel choice, the plain C kernel and the float64 reference of the tests.
 * Compiled without contraction: a decoded value is one product and one sum in every kernel. */
#include "tqp/e8mv.h"

#include <pthread.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "e8mv_impl.h"
#include "matvec_impl.h"
#include "tqp/e8p.h"

struct tqp_emv {
    int m, n, bits;
    tqp_tmv_kernel kernel;
    double scale;
    const tqp_rot *rot;
    uint8_t *packed;         // reference: the codes as stored
    uint8_t *lay_bytes;      // SIMD: the rewritten codes (e8mv_impl.h), 64-byte aligned
    tqp_emv_layout lay;
    int i16;                 // avx512 at 2 and 4 bits with VBMI + VNNI: the int16 layout
    tqp_emv_i16_layout l16;
    int16_t *xq;             // (8 nb) its activations
    int32_t *sxq;            // (nb) their block sums
    float *xr, *sx, *z;      // (8 nb), (nb), (8 bands)
    double *dx, *scratch;    // (max(m, n)) each
};

static struct {
    float base[256][8] __attribute__((aligned(64)));
    float e81b[256][8] __attribute__((aligned(64)));
    uint32_t signs[256][8] __attribute__((aligned(64)));
    uint32_t masks[256][8] __attribute__((aligned(64)));
    uint16_t mag[256];  // the int16 layout: coordinate i's (|b| - 1/2) at bits 2i, 2i+1
    uint8_t odd[256];   // the base negates coordinate 7
} tabs;
static pthread_once_t tabs_once = PTHREAD_ONCE_INIT;

static void build_tabs(void)
{
    const uint8_t(*half)[TQP_E8P_DIM] = tqp_e8p_abs_half();
    const double(*e)[TQP_E8P_DIM] = tqp_e8p_e81b();
    for (int k = 0; k < 256; k++) {
        int sum = 0;
        for (int i = 0; i < 8; i++) {
            tabs.base[k][i] = half[k][i] / 2.0f;
            tabs.e81b[k][i] = (float)e[k][i];
            sum += half[k][i];
            tabs.signs[k][i] = (k >> i) & 1 ? 0x80000000u : 0;
            tabs.masks[k][i] = (k >> i) & 1 ? 0xFFFFFFFFu : 0;
        }
        if ((sum / 2) & 1) tabs.base[k][7] = -tabs.base[k][7];
        tabs.odd[k] = (uint8_t)((sum / 2) & 1);
        tabs.mag[k] = 0;
        for (int i = 0; i < 8; i++) tabs.mag[k] |= (uint16_t)((half[k][i] - 1) / 2 << (2 * i));
    }
}

static void tabs_init(void)
{
    pthread_once(&tabs_once, build_tabs);
}

const char *tqp_emv_avx512_unavailable(void)
{
#if defined(__x86_64__) && defined(TQP_HAVE_AVX512_E8MV)
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")))
        return "this CPU lacks AVX-512 F/BW/VL or FMA";
    if (getenv("TQP_NO_AVX512")) return "TQP_NO_AVX512 is set";
    return NULL;
#else
    return "built without the AVX-512 kernels";
#endif
}

const char *tqp_emv_i16_unavailable(int bits)
{
#if defined(__x86_64__) && defined(TQP_HAVE_AVX512_E8I16)
    const char *why = tqp_emv_avx512_unavailable();
    if (why) return why;
    if (!(__builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512vnni")))
        return "this CPU lacks AVX-512 VBMI/VNNI";
    if (getenv("TQP_NO_I16")) return "TQP_NO_I16 is set";
    if (bits == 3) return "3 bits (the E81B stage is a table of points)";
    return NULL;
#else
    (void)bits;
    return "built without the int16 kernel";
#endif
}

const char *tqp_emv_avx2_unavailable(void)
{
#if defined(__x86_64__) && defined(TQP_HAVE_AVX2_E8MV)
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return "this CPU lacks AVX2/FMA";
    return NULL;
#else
    return "built without the AVX2 kernels";
#endif
}

const char *tqp_emv_kernel_name(const tqp_emv *op)
{
    return op->i16                      ? "avx512-i16"
           : op->kernel == TQP_TMV_AVX512 ? "avx512" : op->kernel == TQP_TMV_AVX2 ? "avx2"
                                                                                : "reference";
}

/* One E8P code's pattern, sign byte relative to the base, and shift bit. */
static void split(uint16_t code, uint8_t *k, uint8_t *neg, int *p)
{
    unsigned s = code & 255u;
    *p = __builtin_parity(s);
    *k = (uint8_t)(code >> 8);
    *neg = (uint8_t)(s ^ (unsigned)*p);
}

/* The 8 first-stage values of a code: a table row, signs, the shift (exact in float). */
static void point(uint16_t code, float v[8])
{
    uint8_t k, neg;
    int p;
    split(code, &k, &neg, &p);
    float t = p ? -0.25f : 0.25f;
    for (int i = 0; i < 8; i++) v[i] = ((neg >> i) & 1 ? -tabs.base[k][i] : tabs.base[k][i]) + t;
}

/* The decoded values of one stored code (`bits` bytes). */
static void decode_code(const uint8_t *c, int bits, float inv_rs, float v[8])
{
    point((uint16_t)(c[0] | c[1] << 8), v);
    if (bits <= 2) return;
    float w[8];
    if (bits == 4) point((uint16_t)(c[2] | c[3] << 8), w);
    else memcpy(w, tabs.e81b[c[2]], sizeof w);
    for (int i = 0; i < 8; i++) {
        float d = w[i] * inv_rs;
        v[i] = v[i] + d;
    }
}

size_t tqp_emv_layout_size(int m, int n)
{
    return (size_t)((m + 7) / 8) * (size_t)((n + 7) / 8) * 50; /* two stages of 16 + 8 + 1 */
}

/* The zeroed bytes of either layout (the same size), the tables built. */
static uint8_t *layout_bytes(int m, int n)
{
    tabs_init();
    size_t lb = tqp_emv_layout_size(m, n);
    uint8_t *b = tqp_malloc_aligned(lb);
    if (b) memset(b, 0, lb);
    return b;
}

tqp_status tqp_emv_layout_build(const uint8_t *packed, int m, int n, int bits, double rs,
                                uint8_t **bytes, tqp_emv_layout *L)
{
    if (!(*bytes = layout_bytes(m, n))) return TQP_ENOMEM;
    *L = (tqp_emv_layout){.bits = bits, .bands = (m + 7) / 8, .nb = (n + 7) / 8,
                          .base = &tabs.base[0][0], .e81b = &tabs.e81b[0][0],
                          .signs = &tabs.signs[0][0], .masks = &tabs.masks[0][0],
                          .inv_rs = bits > 2 ? (float)(1.0 / rs) : 0.0f};
    int nb = L->nb;
    size_t q = (size_t)L->bands * nb;
    uint16_t *k1 = (uint16_t *)*bytes, *k2 = k1 + 8 * q;
    uint8_t *neg1 = (uint8_t *)(k2 + 8 * q), *p1 = neg1 + 8 * q, *neg2 = p1 + q, *p2 = neg2 + 8 * q;
    L->k1 = k1, L->neg1 = neg1, L->p1 = p1;
    L->k2 = bits > 2 ? k2 : NULL;
    L->neg2 = bits == 4 ? neg2 : NULL, L->p2 = bits == 4 ? p2 : NULL;
    size_t off = 0;
    for (int b = 0; b < L->bands; b++) {
        int rows = m - 8 * b < 8 ? m - 8 * b : 8;
        for (int j = 0; j < nb; j++) {
            size_t at = (size_t)b * nb + j;
            for (int r = 0; r < rows; r++, off += (size_t)bits) {
                const uint8_t *c = packed + off;
                uint8_t k;
                int p;
                split((uint16_t)(c[0] | c[1] << 8), &k, &neg1[8 * at + r], &p);
                k1[8 * at + r] = (uint16_t)(8 * k);
                p1[at] |= (uint8_t)(p << r);
                if (bits == 3) k2[8 * at + r] = (uint16_t)(8 * c[2]);
                if (bits == 4) {
                    split((uint16_t)(c[2] | c[3] << 8), &k, &neg2[8 * at + r], &p);
                    k2[8 * at + r] = (uint16_t)(8 * k);
                    p2[at] |= (uint8_t)(p << r);
                }
            }
        }
    }
    return TQP_OK;
}

tqp_status tqp_emv_i16_layout_build(const uint8_t *packed, int m, int n, int bits, double rs,
                                    uint8_t **bytes, tqp_emv_i16_layout *L)
{
    if (!(*bytes = layout_bytes(m, n))) return TQP_ENOMEM; /* 25 bytes per 64 weights, stage */
    *L = (tqp_emv_i16_layout){.bits = bits, .bands = (m + 7) / 8, .nb = (n + 7) / 8,
                              .masks = &tabs.masks[0][0],
                              .inv_rs = bits > 2 ? (float)(1.0 / rs) : 0.0f};
    int nb = L->nb, stages = bits == 4 ? 2 : 1;
    size_t q = (size_t)L->bands * nb;
    uint64_t *mag = (uint64_t *)*bytes;
    uint32_t *sgn = (uint32_t *)(mag + 4 * q);
    uint8_t *tau = (uint8_t *)(sgn + 4 * q);
    for (int s = 0; s < 2; s++) {
        L->mag[s] = s < stages ? mag + 2 * q * s : NULL;
        L->sgn[s] = s < stages ? sgn + 2 * q * s : NULL;
        L->tau[s] = s < stages ? tau + q * s : NULL;
    }
    size_t off = 0;
    for (int b = 0; b < L->bands; b++) {
        int rows = m - 8 * b < 8 ? m - 8 * b : 8;
        for (int j = 0; j < nb; j++) {
            size_t at = (size_t)b * nb + j;
            for (int r = 0; r < rows; r++, off += (size_t)bits)
                for (int s = 0; s < stages; s++) {
                    const uint8_t *c = packed + off + 2 * s;
                    uint8_t k, neg;
                    int p;
                    split((uint16_t)(c[0] | c[1] << 8), &k, &neg, &p);
                    size_t h = 2 * (q * s + at) + (size_t)(r / 4);
                    mag[h] |= (uint64_t)tabs.mag[k] << (16 * (r % 4));
                    sgn[h] |= (uint32_t)(neg ^ tabs.odd[k] << 7) << (8 * (r % 4));
                    tau[q * s + at] |= (uint8_t)(p << r);
                }
        }
    }
    return TQP_OK;
}

tqp_status tqp_emv_create(const uint8_t *packed, int m, int n, int bits, double rs,
                          double scale, const tqp_rot *rot, tqp_tmv_kernel kernel,
                          tqp_emv **out)
{
    *out = NULL;
    if (m <= 0 || n <= 0) return tqp_error_set(TQP_EINPUT, "e8p matvec: bad shape %d x %d", m, n);
    if (bits < 2 || bits > 4)
        return tqp_error_set(TQP_EINPUT, "e8p matvec: %d bits (2, 3 or 4)", bits);
    if (bits > 2 && !(rs > 0))
        return tqp_error_set(TQP_EINPUT, "e8p matvec: residual scale %g", rs);
    if (rot && rot->kind != TQP_ROT_NONE && (rot->out.n != m || rot->in.n != n))
        return tqp_error_set(TQP_EINPUT, "e8p matvec: rotation of %d x %d for a %d x %d matrix",
                             rot->out.n, rot->in.n, m, n);
    const char *why = tqp_emv_avx512_unavailable(), *why2 = tqp_emv_avx2_unavailable();
    if (kernel == TQP_TMV_AVX512 && why)
        return tqp_error_set(TQP_EUSAGE, "e8p matvec: the avx512 kernel cannot run: %s", why);
    if (kernel == TQP_TMV_AVX2 && why2)
        return tqp_error_set(TQP_EUSAGE, "e8p matvec: the avx2 kernel cannot run: %s", why2);
    if (kernel == TQP_TMV_AUTO)
        kernel = !why ? TQP_TMV_AVX512 : !why2 ? TQP_TMV_AVX2 : TQP_TMV_REFERENCE;
    tabs_init();
    tqp_emv *op = tqp_calloc(1, sizeof *op);
    if (!op) return TQP_ENOMEM;
    int nb = (n + 7) / 8, bands = (m + 7) / 8, big = m > n ? m : n;
    op->m = m, op->n = n, op->bits = bits, op->kernel = kernel, op->scale = scale, op->rot = rot;
    op->lay = (tqp_emv_layout){.bits = bits, .bands = bands, .nb = nb,
                               .inv_rs = bits > 2 ? (float)(1.0 / rs) : 0.0f};
    op->xr = tqp_malloc_aligned(sizeof(float) * 8 * (size_t)nb);
    op->sx = tqp_malloc_aligned(sizeof(float) * (size_t)nb);
    op->z = tqp_malloc_aligned(sizeof(float) * 8 * (size_t)bands);
    op->dx = tqp_malloc(sizeof(double) * (size_t)big);
    op->scratch = tqp_malloc(sizeof(double) * (size_t)big);
    tqp_status s = (!op->xr || !op->sx || !op->z || !op->dx || !op->scratch) ? TQP_ENOMEM : TQP_OK;
    if (s == TQP_OK) memset(op->xr, 0, sizeof(float) * 8 * (size_t)nb);
    size_t bytes = tqp_e8p_matrix_bytes(m, n, bits);
    op->i16 = kernel == TQP_TMV_AVX512 && !tqp_emv_i16_unavailable(bits);
    if (s == TQP_OK && op->i16) {
        op->xq = tqp_malloc_aligned(sizeof(int16_t) * 8 * (size_t)nb);
        op->sxq = tqp_malloc(sizeof(int32_t) * (size_t)nb);
        if (!op->xq || !op->sxq) s = TQP_ENOMEM;
        else memset(op->xq, 0, sizeof(int16_t) * 8 * (size_t)nb);
        if (s == TQP_OK) s = tqp_emv_i16_layout_build(packed, m, n, bits, rs, &op->lay_bytes,
                                                      &op->l16);
    } else if (s == TQP_OK && kernel == TQP_TMV_REFERENCE) {
        op->packed = tqp_malloc(bytes);
        if (!op->packed) s = TQP_ENOMEM;
        else memcpy(op->packed, packed, bytes);
    } else if (s == TQP_OK) {
        s = tqp_emv_layout_build(packed, m, n, bits, rs, &op->lay_bytes, &op->lay);
    }
    if (s != TQP_OK) {
        tqp_emv_destroy(&op);
        return s;
    }
    *out = op;
    return TQP_OK;
}

void tqp_emv_destroy(tqp_emv **pop)
{
    tqp_emv *op = *pop;
    if (!op) return;
    free(op->packed), free(op->lay_bytes), free(op->xq), free(op->sxq), free(op->xr), free(op->sx), free(op->z);
    free(op->dx), free(op->scratch);
    free(op);
    *pop = NULL;
}

static void codes_simd(const tqp_emv *op, const float *xr, float *z, int b)
{
#ifdef TQP_HAVE_AVX512_E8MV
    if (op->kernel == TQP_TMV_AVX512) tqp_emv_codes_avx512(&op->lay, xr, op->sx, z, b, b + 1);
#endif
#ifdef TQP_HAVE_AVX2_E8MV
    if (op->kernel == TQP_TMV_AVX2) tqp_emv_codes_avx2(&op->lay, xr, op->sx, z, b, b + 1);
#endif
    (void)op, (void)xr, (void)z, (void)b;
}

static void decode_simd(const tqp_emv *op, float *buf, int b)
{
#ifdef TQP_HAVE_AVX512_E8I16
    if (op->i16) {
        tqp_emv_decode_i16(&op->l16, buf, b, b + 1);
        return;
    }
#endif
#ifdef TQP_HAVE_AVX512_E8MV
    if (op->kernel == TQP_TMV_AVX512) tqp_emv_decode_avx512(&op->lay, buf, b, b + 1);
#endif
#ifdef TQP_HAVE_AVX2_E8MV
    if (op->kernel == TQP_TMV_AVX2) tqp_emv_decode_avx2(&op->lay, buf, b, b + 1);
#endif
    (void)op, (void)buf, (void)b;
}

/* Plain C over the stored codes: band b's rows of z. */
static void codes_reference(const tqp_emv *op, const float *xr, float *z, int b)
{
    int m = op->m, n = op->n, bits = op->bits, nb = op->lay.nb;
    int rows = m - 8 * b < 8 ? m - 8 * b : 8;
    const uint8_t *c = op->packed + (size_t)8 * b * nb * bits;
    for (int r = 0; r < rows; r++) z[8 * b + r] = 0;
    for (int j = 0; j < nb; j++) {
        int w = n - 8 * j < 8 ? n - 8 * j : 8;
        for (int r = 0; r < rows; r++, c += bits) {
            float v[8], acc = 0;
            decode_code(c, bits, op->lay.inv_rs, v);
            for (int i = 0; i < w; i++) acc += v[i] * xr[8 * j + i];
            z[8 * b + r] += acc;
        }
    }
}

void tqp_emv_apply_codes(tqp_emv *op, const float *xr, float *z, int threads)
{
    if (threads < 1) threads = 1;
    int B = op->lay.bands, nb = op->lay.nb;
    if (op->kernel == TQP_TMV_REFERENCE) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int b = 0; b < B; b++) codes_reference(op, xr, z, b);
        return;
    }
    float *zz = op->m % 8 ? op->z : z; /* a padded last band writes 8 rows */
#ifdef TQP_HAVE_AVX512_E8I16
    if (op->i16) { /* int16 activations (tqp_mv_i16_step) and their block sums */
        double step = tqp_mv_i16_step(xr, op->n), inv = 1 / step, stot = 0;
        for (int i = 0; i < op->n; i++) op->xq[i] = (int16_t)lrint(xr[i] * inv);
        for (int j = 0; j < nb; j++) {
            int32_t t = 0;
            for (int i = 0; i < 8; i++) t += op->xq[8 * j + i];
            op->sxq[j] = t;
            stot += t;
        }
        int G = (B + 3) / 4; /* groups of 4 bands share the loads of x */
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int g = 0; g < G; g++)
            tqp_emv_codes_i16(&op->l16, op->xq, op->sxq, stot, step, zz, 4 * g,
                              4 * g + 4 < B ? 4 * g + 4 : B);
    } else
#endif
    {
        /* x padded with zeros to whole blocks, and its block sums for the shifts */
        if (xr != op->xr) memcpy(op->xr, xr, sizeof(float) * (size_t)op->n);
        float tot = 0;
        for (int j = 0; j < nb; j++) {
            float s = 0;
            for (int i = 0; i < 8; i++) s += op->xr[8 * j + i];
            op->sx[j] = s;
            tot += s;
        }
        op->lay.sum_x = tot;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int b = 0; b < B; b++) codes_simd(op, op->xr, zz, b);
    }
    if (zz != z) memcpy(z, zz, sizeof(float) * (size_t)op->m);
}

void tqp_emv_apply(tqp_emv *op, const float *x, float *y, int threads)
{
    tqp_mv_rotate_in(op->rot, x, op->xr, op->n, op->dx, op->scratch);
    tqp_emv_apply_codes(op, op->xr, op->z, threads);
    tqp_mv_rotate_out(op->rot, op->scale, op->z, y, op->m, op->dx, op->scratch);
}

tqp_status tqp_emv_decode(tqp_emv *op, float *W, int threads)
{
    if (threads < 1) threads = 1;
    int m = op->m, n = op->n, bits = op->bits, nb = op->lay.nb, B = op->lay.bands;
    if (op->kernel == TQP_TMV_REFERENCE) {
        size_t off = 0;
        for (int b = 0; b < B; b++) {
            int rows = m - 8 * b < 8 ? m - 8 * b : 8;
            for (int j = 0; j < nb; j++) {
                int w = n - 8 * j < 8 ? n - 8 * j : 8;
                for (int r = 0; r < rows; r++, off += (size_t)bits) {
                    float v[8];
                    decode_code(op->packed + off, bits, op->lay.inv_rs, v);
                    memcpy(W + (size_t)(8 * b + r) * n + 8 * j, v, sizeof(float) * (size_t)w);
                }
            }
        }
        return TQP_OK;
    }
    float *bufs = tqp_malloc_aligned(sizeof(float) * 64 * (size_t)nb * (size_t)threads);
    if (!bufs) return TQP_ENOMEM;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *buf = bufs;
#ifdef _OPENMP
        buf += (size_t)64 * nb * (size_t)omp_get_thread_num();
#endif
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            decode_simd(op, buf, b);
            int rows = m - 8 * b < 8 ? m - 8 * b : 8;
            for (int r = 0; r < rows; r++)
                memcpy(W + (size_t)(8 * b + r) * n, buf + (size_t)r * 8 * nb,
                       sizeof(float) * (size_t)n);
        }
    }
    free(bufs);
    return TQP_OK;
}

tqp_status tqp_emv_reference(const uint8_t *packed, int m, int n, int bits, double rs,
                             double scale, const tqp_rot *rot, const float *x, double *W,
                             double *y)
{
    tqp_e8p_decode_matrix(packed, m, n, bits, rs, W);
    if (rot) TQP_CHECK(tqp_rot_weights(rot, W, 1)); /* U^T Ŵ V */
    for (int i = 0; i < m; i++) {
        double acc = 0;
        for (int j = 0; j < n; j++) acc += W[(size_t)i * n + j] * x[j];
        y[i] = scale * acc;
    }
    return TQP_OK;
}
