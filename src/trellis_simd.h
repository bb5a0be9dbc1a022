/* The SIMD Viterbi pass of the bitshift trellis, written once for any vector width: the
 * including file defines the vector type and operations below and the function name, and is
 * compiled with the matching instruction set and -ffp-contract=off.  It performs the
 * reference's arithmetic (trellis.h, invariants 1-3), VW states per instruction, one pass over
 * the states per step: each group's minimum is expanded over its 2^KV states with one permute,
 * and the values of a group's 2^KV predecessors (states h * G + g) are reduced in registers into
 * the next step's minimum (strict <, ascending h: the first minimum wins), keeping only the
 * comparison masks (one bit per group and h >= 1) for the traceback.  Used when G >= VW.
 *
 * The includer defines: VW (lanes), vec, vidx, V_LOAD(p), V_LOAD_FEW(p, n) (n = 2, 4 or 8
 * floats into the low lanes, the rest undefined), V_STORE(p, v),
 * V_SET1(f), V_ADD/V_SUB/V_MUL(a, b), V_EXPAND(idx, v) (lane i <- v[idx[i]]), V_IDX(shift)
 * (lane i -> i >> shift), V_LT_BLEND(v, m, mask) (mask <- bits of v < m, m <- min),
 * VITERBI_NAME and RATE_NAME. */
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/trellis.h"

float tqp_trellis_viterbi_ref(const tqp_trellis *t, const float *x, int start, int end,
                              uint32_t *states);

typedef struct {
    float *D, *Dn, *gm; // (2^L), (2^L), (G) 64-byte aligned
    uint8_t *bp;        // (N, H - 1, G / 8) comparison masks, bit g % 8 of byte g / 8
    size_t cap_states, cap_bp;
} work;

static _Thread_local work w_;

static int reserve(size_t S, size_t bp)
{
    if (S > w_.cap_states) {
        free(w_.D), free(w_.Dn), free(w_.gm);
        w_.D = aligned_alloc(64, S * sizeof(float));
        w_.Dn = aligned_alloc(64, S * sizeof(float));
        w_.gm = aligned_alloc(64, S * sizeof(float));
        w_.cap_states = w_.D && w_.Dn && w_.gm ? S : 0;
    }
    if (bp > w_.cap_bp) {
        free(w_.bp);
        w_.bp = malloc(bp);
        w_.cap_bp = w_.bp ? bp : 0;
    }
    return w_.cap_states >= S && w_.cap_bp >= bp;
}

/* D_i(s) = gm[s >> KV] + cost(s) for VW consecutive states from s (invariant 1's order). */
static inline __attribute__((always_inline)) vec values(const float *c0, const float *c1, int V,
                                                        vec x0, vec x1, const float *gm,
                                                        vidx idx, int KV, uint32_t s)
{
    /* only the VW >> KV minima needed are loaded (no cache-line splits), then spread */
    vec g = (1 << KV) < VW ? V_EXPAND(idx, V_LOAD_FEW(gm + (s >> KV), VW >> KV))
                           : V_SET1(gm[s >> KV]);
    vec d = V_SUB(x0, V_LOAD(c0 + s));
    vec e = V_MUL(d, d);
    if (V == 2) {
        vec d1 = V_SUB(x1, V_LOAD(c1 + s));
        e = V_ADD(e, V_MUL(d1, d1));
    }
    return V_ADD(g, e);
}

static inline __attribute__((always_inline)) void step_body(const tqp_trellis *t, const float *xi,
                                                             const float *gm, int KV, int V, int sh,
                                                             float *gn, uint8_t *masks,
                                                             float *Dlast)
{
    uint32_t G = 1u << sh, H = 1u << KV;
    const float *c0 = t->comp[0], *c1 = t->comp[1];
    const vidx idx = V_IDX((1 << KV) < VW ? KV : 0);
    const vec x0 = V_SET1(xi[0]), x1 = V_SET1(V == 2 ? xi[1] : 0.f);
    if (Dlast) {
        for (uint32_t s = 0; s < (G << KV); s += VW)
            V_STORE(Dlast + s, values(c0, c1, V, x0, x1, gm, idx, KV, s));
        return;
    }
    /* UNROLL chunks of groups at a time: independent dependency chains (compare, blend) for
     * the out-of-order core.  G is a power of two >= VW; with fewer chunks, the extra ones
     * repeat the first (same values, same masks). */
    enum { U = 4 };
    for (uint32_t g = 0; g < G; g += U * VW) {
        vec m[U];
        uint32_t gg[U];
        for (int u = 0; u < U; u++) {
            gg[u] = g + u * VW < G ? g + u * VW : g;
            m[u] = values(c0, c1, V, x0, x1, gm, idx, KV, gg[u]);
        }
        for (uint32_t h = 1; h < H; h++)
            for (int u = 0; u < U; u++) {
                vec v = values(c0, c1, V, x0, x1, gm, idx, KV, h * G + gg[u]);
                V_LT_BLEND(v, m[u], masks + (size_t)(h - 1) * (G / 8) + gg[u] / 8);
            }
        for (int u = 0; u < U; u++) V_STORE(gn + gg[u], m[u]);
    }
}

/* step_body specialized for each (KV, V) a trellis can have: constant predecessor loops. */
#define STEP_CASE(kv, v)                                                                           \
    case (kv) * 4 + (v):                                                                           \
        step_body(t, xi, gm, kv, v, sh, gn, masks, Dlast);                                         \
        return;
static void step(const tqp_trellis *t, const float *xi, const float *gm, int KV, int sh,
                 float *gn, uint8_t *masks, float *Dlast)
{
    switch (KV * 4 + t->V) {
        STEP_CASE(1, 1) STEP_CASE(2, 1) STEP_CASE(3, 1) STEP_CASE(4, 1)
        STEP_CASE(2, 2) STEP_CASE(4, 2) STEP_CASE(6, 2) STEP_CASE(8, 2)
    default:
        step_body(t, xi, gm, KV, t->V, sh, gn, masks, Dlast);
    }
}
#undef STEP_CASE

static uint32_t backpointer(const uint8_t *masks, uint32_t G, uint32_t H, uint32_t g)
{
    for (uint32_t h = H - 1; h >= 1; h--)
        if (masks[(size_t)(h - 1) * (G / 8) + g / 8] >> (g % 8) & 1) return h;
    return 0;
}

float VITERBI_NAME(const tqp_trellis *t, const float *x, int start, int end, uint32_t *states)
{
    int KV = t->K * t->V, N = t->T / t->V, sh = t->L - KV;
    uint32_t S = 1u << t->L, G = 1u << sh, H = 1u << KV;
    size_t per_step = (size_t)(H - 1) * (G / 8);
    if (G < VW || S < VW || !reserve(S, (size_t)N * per_step))
        return tqp_trellis_viterbi_ref(t, x, start, end, states);
    float *D = w_.D, *Dn = w_.Dn, *gm = w_.gm;
    for (uint32_t s = 0; s < S; s++) { /* step 0, as the reference */
        const float *c = t->table + (size_t)s * t->V;
        float d = x[0] - c[0], e = d * d;
        if (t->V == 2) {
            float d1 = x[1] - c[1];
            e = e + d1 * d1;
        }
        D[s] = start < 0 || (int)(s >> KV) == start ? e : INFINITY;
    }
    /* step 0's group minima (masks as the kernel keeps them), then fused steps: step i's
     * values fold into step i + 1's minima */
    uint8_t *mk = w_.bp + per_step;
    memset(mk, 0, per_step);
    for (uint32_t g = 0; g < G; g++) {
        float m = D[g];
        for (uint32_t h = 1; h < H; h++)
            if (D[(h << sh) | g] < m) {
                m = D[(h << sh) | g];
                mk[(size_t)(h - 1) * (G / 8) + g / 8] |= (uint8_t)(1u << (g % 8));
            }
        gm[g] = m;
    }
    for (int i = 1; i < N; i++) {
        int last = i == N - 1;
        step(t, x + (size_t)i * t->V, gm, KV, sh, Dn,
             last ? NULL : w_.bp + (size_t)(i + 1) * per_step, last ? D : NULL);
        float *tmp = gm;
        gm = Dn, Dn = tmp;
    }
    float bc;
    states[N - 1] = tqp_trellis_best_end(D, S, G, end, &bc);
    for (int i = N - 1; i > 0; i--) {
        uint32_t g = states[i] >> KV;
        states[i - 1] = (backpointer(w_.bp + (size_t)i * per_step, G, H, g) << sh) | g;
    }
    return bc;
}

/* Independent vector additions per second on this core (the bound of tqp bench trellis). */
double RATE_NAME(double (*now)(void))
{
    vec a[8], one = V_SET1(1e-7f);
    for (int k = 0; k < 8; k++) a[k] = V_SET1((float)k);
    long iters = 20000000;
    double t0 = now();
    for (long i = 0; i < iters; i++)
        for (int k = 0; k < 8; k++) a[k] = V_ADD(a[k], one);
    double dt = now() - t0;
    for (int k = 1; k < 8; k++) a[0] = V_ADD(a[0], a[k]);
    alignas(64) float out[VW];
    V_STORE(out, a[0]);
    volatile float sink = out[0];
    (void)sink;
    return 8.0 * iters / dt;
}
