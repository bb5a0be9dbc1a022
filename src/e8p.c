/* E8P codebook: construction, decoding and the exact nearest-point search (include/tqp/e8p.h,
 * docs/e8p.md). */
#include "tqp/e8p.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "tqp/rblas.h"

/* Positions of the three 1/2 coordinates of QuIP#'s 29 norm^2-12 patterns (the other five are
 * 3/2), in its order. */
static const uint8_t norm12_halves[29][3] = {
    {1, 2, 3}, {0, 2, 3}, {0, 1, 3}, {0, 1, 2}, {3, 6, 7}, {3, 5, 7}, {3, 4, 7}, {3, 5, 6},
    {3, 4, 6}, {3, 4, 5}, {2, 6, 7}, {2, 5, 7}, {2, 4, 7}, {2, 5, 6}, {2, 4, 6}, {2, 4, 5},
    {1, 6, 7}, {1, 5, 7}, {1, 4, 7}, {1, 5, 6}, {1, 4, 6}, {0, 4, 5}, {0, 6, 7}, {0, 5, 7},
    {0, 4, 7}, {0, 5, 6}, {0, 4, 6}, {0, 1, 4}, {2, 3, 7},
};

static struct {
    uint8_t half[TQP_E8P_ABS][TQP_E8P_DIM]; // |a| in half units (odd)
    uint8_t odd[TQP_E8P_ABS];               // sum of a is odd: the base negates coordinate 7
    double norm[TQP_E8P_ABS];               // |a|^2
    double at[TQP_E8P_DIM][TQP_E8P_ABS];    // a transposed, for the search
    double rms;
    float pts[TQP_E8P_CODES][TQP_E8P_DIM]; // every point (exact in float: multiples of 1/4)
    double e81b[256][TQP_E8P_DIM];          // the 3-bit residual stage's points
} tab;
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;

static void build(void)
{
    int k = 0;
    /* half units h in {1, 3, 5, 7}^8 with sum h^2 <= 40 (|a|^2 <= 10), odometer order with the
     * last coordinate fastest: ascending lexicographic order */
    for (int c = 0; c < 1 << 16; c++) {
        uint8_t h[TQP_E8P_DIM];
        int ss = 0;
        for (int i = 0; i < TQP_E8P_DIM; i++) {
            h[i] = (uint8_t)(2 * ((c >> (2 * (TQP_E8P_DIM - 1 - i))) & 3) + 1);
            ss += h[i] * h[i];
        }
        if (ss <= 40 && k < TQP_E8P_ABS) memcpy(tab.half[k++], h, TQP_E8P_DIM);
    }
    for (int r = 0; r < 29 && k < TQP_E8P_ABS; r++, k++) {
        memset(tab.half[k], 3, TQP_E8P_DIM);
        for (int j = 0; j < 3; j++)
            tab.half[k][norm12_halves[r][j]] = 1;
    }
    double ss = 0;
    for (k = 0; k < TQP_E8P_ABS; k++) {
        int sh = 0;
        tab.norm[k] = 0;
        for (int i = 0; i < TQP_E8P_DIM; i++) {
            double a = tab.half[k][i] / 2.0;
            sh += tab.half[k][i];
            tab.norm[k] += a * a;
            tab.at[i][k] = a;
        }
        tab.odd[k] = (uint8_t)((sh / 2) & 1);
        /* over the 2^8 signs and both shifts the cross terms cancel: |a|^2 + 8 / 16 per point */
        ss += tab.norm[k] + 0.5;
    }
    tab.rms = sqrt(ss / (TQP_E8P_ABS * TQP_E8P_DIM));
}

static void decode_into(uint16_t code, double out[TQP_E8P_DIM]);

/* E81B: the points of E8 with |v|^2 <= 2 (integer vectors in ascending lexicographic order,
 * then the half-integer ones: coordinates in {-1, 0, 1} and {-1/2, 1/2}, the only ones within
 * the ball), then 2 e_i for every i and -2 e_i for i < 7: 1 + 112 + 128 + 15 points. */
static void build_e81b(void)
{
    int k = 0;
    for (int half = 0; half < 2; half++) {
        int base = half ? 2 : 3, count = half ? 1 << 8 : 6561;
        for (int c = 0; c < count; c++) {
            int v[TQP_E8P_DIM], ss = 0, sum = 0, rest = c; /* half units, the last fastest */
            for (int i = TQP_E8P_DIM - 1; i >= 0; i--, rest /= base)
                v[i] = half ? 2 * (rest % 2) - 1 : 2 * (rest % 3 - 1);
            for (int i = 0; i < TQP_E8P_DIM; i++)
                ss += v[i] * v[i], sum += v[i];
            if (ss > 8 || (sum / 2) % 2 || k >= 256) continue;
            for (int i = 0; i < TQP_E8P_DIM; i++)
                tab.e81b[k][i] = v[i] / 2.0;
            k++;
        }
    }
    for (int j = 0; j < 15 && k < 256; j++, k++) {
        memset(tab.e81b[k], 0, sizeof tab.e81b[k]);
        tab.e81b[k][j % 8] = j < 8 ? 2.0 : -2.0;
    }
}

static void build_all(void)
{
    build();
    build_e81b();
    for (int c = 0; c < TQP_E8P_CODES; c++) {
        double d[TQP_E8P_DIM];
        decode_into((uint16_t)c, d);
        for (int i = 0; i < TQP_E8P_DIM; i++)
            tab.pts[c][i] = (float)d[i];
    }
}

static void init(void)
{
    pthread_once(&tab_once, build_all);
}

const uint8_t (*tqp_e8p_abs_half(void))[TQP_E8P_DIM]
{
    init();
    return (const uint8_t(*)[TQP_E8P_DIM])tab.half;
}

double tqp_e8p_rms(void)
{
    init();
    return tab.rms;
}

void tqp_e8p_decode(uint16_t code, double out[TQP_E8P_DIM])
{
    init();
    for (int i = 0; i < TQP_E8P_DIM; i++)
        out[i] = tab.pts[code][i];
}

static void decode_into(uint16_t code, double out[TQP_E8P_DIM])
{
    int k = code >> 8, s = code & 255, p = __builtin_parity((unsigned)s);
    int neg = s ^ p ^ (tab.odd[k] << 7); /* relative to |a|: the base's coordinate 7 */
    double shift = p ? -0.25 : 0.25;
    for (int i = 0; i < TQP_E8P_DIM; i++) {
        double a = tab.half[k][i] / 2.0;
        out[i] = ((neg >> i) & 1 ? -a : a) + shift;
    }
}

void tqp_e8p_decode_f(uint16_t code, float out[TQP_E8P_DIM])
{
    double d[TQP_E8P_DIM];
    tqp_e8p_decode(code, d);
    for (int i = 0; i < TQP_E8P_DIM; i++)
        out[i] = (float)d[i];
}

/* For y = x - shift: the best pattern k and its score |a|^2 - 2 <y, v> (the distance minus
 * |y|^2) over the signed vectors v of every pattern with an even coordinate sum: the signs of
 * y, and when their sum is odd one sign changed where a_i |y_i| is smallest. */
static double best_pattern(const double y[TQP_E8P_DIM], int *kbest, int *negbest)
{
    double ay[TQP_E8P_DIM];
    int neg = 0;
    for (int i = 0; i < TQP_E8P_DIM; i++) {
        ay[i] = fabs(y[i]);
        neg |= (y[i] < 0) << i;
    }
    int npar = __builtin_parity((unsigned)neg);
    double score[TQP_E8P_ABS], low[TQP_E8P_ABS];
    for (int k = 0; k < TQP_E8P_ABS; k++) {
        double pr = tab.at[0][k] * ay[0];
        score[k] = pr;
        low[k] = pr;
    }
    for (int i = 1; i < TQP_E8P_DIM; i++)
        for (int k = 0; k < TQP_E8P_ABS; k++) {
            double pr = tab.at[i][k] * ay[i];
            score[k] += pr;
            low[k] = pr < low[k] ? pr : low[k];
        }
    double best = INFINITY;
    int kb = 0;
    for (int k = 0; k < TQP_E8P_ABS; k++) {
        double d = score[k] - ((tab.odd[k] ^ npar) ? 2 * low[k] : 0);
        double sc = tab.norm[k] - 2 * d;
        if (sc < best) best = sc, kb = k;
    }
    if (tab.odd[kb] ^ npar) { /* change the sign where a_i |y_i| is smallest (the first) */
        int at = 0;
        double lo = INFINITY;
        for (int i = 0; i < TQP_E8P_DIM; i++) {
            double pr = tab.at[i][kb] * ay[i];
            if (pr < lo) lo = pr, at = i;
        }
        neg ^= 1 << at;
    }
    *kbest = kb;
    *negbest = neg;
    return best;
}

uint16_t tqp_e8p_nearest(const double x[TQP_E8P_DIM], double out[TQP_E8P_DIM])
{
    init();
    double y[TQP_E8P_DIM], sc[2];
    int k[2], neg[2];
    for (int p = 0; p < 2; p++) {
        double shift = p ? -0.25 : 0.25;
        for (int i = 0; i < TQP_E8P_DIM; i++)
            y[i] = x[i] - shift;
        sc[p] = best_pattern(y, &k[p], &neg[p]);
    }
    /* the scores exclude |x - shift|^2 = |x|^2 - 2 shift sum(x) + 8 shift^2, which differs
     * between the shifts by -2 shift sum(x) */
    double sx = 0;
    for (int i = 0; i < TQP_E8P_DIM; i++)
        sx += x[i];
    double d0 = sc[0] - 0.5 * sx, d1 = sc[1] + 0.5 * sx;
    int p = d1 < d0;
    int s = neg[p] ^ (tab.odd[k[p]] << 7) ^ p; /* signs relative to the base, then the parity */
    uint16_t code = (uint16_t)((k[p] << 8) | s);
    if (out) tqp_e8p_decode(code, out);
    return code;
}

uint16_t tqp_e8p_nearest_w(const double *x, int w, double out[TQP_E8P_DIM])
{
    if (w >= TQP_E8P_DIM) return tqp_e8p_nearest(x, out);
    init();
    double best = INFINITY;
    int bc = 0;
    for (int c = 0; c < TQP_E8P_CODES; c++) {
        double d = 0;
        for (int i = 0; i < w; i++)
            d += (x[i] - tab.pts[c][i]) * (x[i] - tab.pts[c][i]);
        if (d < best) best = d, bc = c;
    }
    if (out) tqp_e8p_decode((uint16_t)bc, out);
    return (uint16_t)bc;
}

double tqp_e8p_resid_scale(int bits)
{
    return bits == 3 ? 2.04 : bits == 4 ? 3.7 : 0;
}

const double (*tqp_e8p_e81b(void))[TQP_E8P_DIM]
{
    init();
    return (const double(*)[TQP_E8P_DIM])tab.e81b;
}

/* The nearest E81B point over the first w coordinates (the first of equals). */
static int nearest_e81b(const double *x, int w)
{
    double best = INFINITY;
    int bk = 0;
    for (int k = 0; k < 256; k++) {
        double d = 0;
        for (int i = 0; i < w; i++)
            d += (x[i] - tab.e81b[k][i]) * (x[i] - tab.e81b[k][i]);
        if (d < best) best = d, bk = k;
    }
    return bk;
}

void tqp_e8p_encode(const double *x, int w, int bits, double rs, uint8_t *code, double *xhat)
{
    double y[TQP_E8P_DIM] = {0}, p[TQP_E8P_DIM];
    memcpy(y, x, sizeof(double) * (size_t)w);
    uint16_t c = tqp_e8p_nearest_w(y, w, p);
    code[0] = (uint8_t)(c & 255), code[1] = (uint8_t)(c >> 8);
    for (int i = 0; i < w; i++)
        xhat[i] = p[i];
    if (bits <= 2) return;
    double r[TQP_E8P_DIM] = {0};
    for (int i = 0; i < w; i++)
        r[i] = (y[i] - p[i]) * rs;
    if (bits == 4) {
        c = tqp_e8p_nearest_w(r, w, p);
        code[2] = (uint8_t)(c & 255), code[3] = (uint8_t)(c >> 8);
    } else {
        int k = nearest_e81b(r, w);
        code[2] = (uint8_t)k;
        memcpy(p, tab.e81b[k], sizeof p);
    }
    for (int i = 0; i < w; i++)
        xhat[i] += p[i] / rs;
}

void tqp_e8p_decode_vec(const uint8_t *code, int bits, double rs, double out[TQP_E8P_DIM])
{
    tqp_e8p_decode((uint16_t)(code[0] | code[1] << 8), out);
    if (bits <= 2) return;
    double p[TQP_E8P_DIM];
    if (bits == 4) tqp_e8p_decode((uint16_t)(code[2] | code[3] << 8), p);
    else memcpy(p, tab.e81b[code[2]], sizeof p);
    for (int i = 0; i < TQP_E8P_DIM; i++)
        out[i] += p[i] / rs;
}

size_t tqp_e8p_band_bytes(int rows, int n, int bits)
{
    return (size_t)rows * (size_t)bits * (size_t)((n + TQP_E8P_TILE - 1) / TQP_E8P_TILE);
}

size_t tqp_e8p_matrix_bytes(int m, int n, int bits)
{
    return tqp_e8p_band_bytes(m, n, bits);
}

void tqp_e8p_band_tile(int n, int j, int rows, int bits, double rs, const double *x, double *a,
                       double *e, double *xhat, uint8_t *packed, const double *P, int ldp)
{
    int c0 = j * TQP_E8P_TILE, w = n - c0 < TQP_E8P_TILE ? n - c0 : TQP_E8P_TILE;
    uint8_t *codes = packed + (size_t)j * rows * bits;
    for (int r = 0; r < rows; r++) {
        double yh[TQP_E8P_DIM];
        size_t k = (size_t)r * n + c0;
        tqp_e8p_encode(a + k, w, bits, rs, codes + (size_t)r * bits, yh);
        for (int c = 0; c < w; c++) {
            xhat[k + c] = yh[c];
            e[k + c] = x[k + c] - yh[c];
        }
    }
    /* a[:, 0 .. c0) += E_block P: in column-major terms a^T += P^T E_block^T */
    if (P && c0 > 0) tqp_rblas_dgemm('N', 'N', c0, rows, w, 1.0, P, ldp, e + c0, n, 1.0, a, n);
}

void tqp_e8p_decode_matrix(const uint8_t *packed, int m, int n, int bits, double rs, double *X)
{
    init();
    size_t off = 0;
    for (int r0 = 0; r0 < m; r0 += TQP_E8P_TILE) {
        int rows = m - r0 < TQP_E8P_TILE ? m - r0 : TQP_E8P_TILE;
        for (int c0 = 0; c0 < n; c0 += TQP_E8P_TILE) {
            int w = n - c0 < TQP_E8P_TILE ? n - c0 : TQP_E8P_TILE;
            for (int r = 0; r < rows; r++, off += (size_t)bits) {
                double v[TQP_E8P_DIM];
                tqp_e8p_decode_vec(packed + off, bits, rs, v);
                memcpy(X + (size_t)(r0 + r) * n + c0, v, sizeof(double) * (size_t)w);
            }
        }
    }
}
