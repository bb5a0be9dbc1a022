/* The SIMD Viterbi pass of the bitshift trellis, written once for any vector width: the
 * including file defines the vector type and operations below and the function name, and is
 * compiled with the matching instruction set and -ffp-contract=off.  It performs the
 * reference's arithmetic (trellis.h, invariants 1-3), VW states per instruction, one pass over
 * the states per step, in lane order (trellis.h, lane_comp): the previous minima arrive by
 * broadcast loads, the values of a group's 2^KV predecessors (states h * G + g) are reduced
 * with min into the next step's minimum, and the new minima are permuted back to group order
 * once per 2^KV vectors.  No comparison masks: every R-th step's minima are kept, and the
 * traceback recomputes the 2^KV candidates of the group on the path (and any minimum not kept)
 * with the same float operations, taking the first minimum (strict <, ascending h) as the
 * reference does.  Used when G >= VW.
 *
 * The includer defines: VW (lanes), LANE_SET (0 for 16 lanes, 1 for 8: trellis.h lane_comp),
 * vec, vidx, V_LOAD(p), V_BCAST_FEW(p, n) (n = 2, 4 or 8 floats repeated over the vector),
 * V_STORE(p, v), V_SET1(f), V_ADD/V_SUB/V_MUL/V_MIN(a, b) (V_MIN(a, b) = a < b ? a : b),
 * V_EXPAND(idx, v) (lane i <- v[idx[i]]), V_LOAD_IDX(p) (VW int32), VITERBI_NAME and
 * RATE_NAME. */
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "tqp/trellis.h"

float tqp_trellis_viterbi_ref(const tqp_trellis *t, const float *x, int start, int end,
                              uint32_t *states);

typedef struct {
    float *D;           // (2^L) 64-byte aligned: the last step's values
    float *hot[2];      // (G) 64-byte aligned: minima not kept for the traceback
    float *ring;        // (N - 1, G) 64-byte aligned: the group minima the traceback reads
    size_t cap_states, cap_hot, cap_ring;
} work;

static _Thread_local work w_;

static int reserve(size_t S, size_t G, size_t ring)
{
    if (S > w_.cap_states) {
        free(w_.D);
        w_.D = aligned_alloc(64, S * sizeof(float));
        w_.cap_states = w_.D ? S : 0;
    }
    if (G > w_.cap_hot) {
        free(w_.hot[0]), free(w_.hot[1]);
        w_.hot[0] = aligned_alloc(64, G * sizeof(float));
        w_.hot[1] = aligned_alloc(64, G * sizeof(float));
        w_.cap_hot = w_.hot[0] && w_.hot[1] ? G : 0;
    }
    if (ring > w_.cap_ring) {
        free(w_.ring);
        w_.ring = aligned_alloc(64, ring * sizeof(float));
        w_.cap_ring = w_.ring ? ring : 0;
    }
    return w_.cap_states >= S && w_.cap_hot >= G && w_.cap_ring >= ring;
}

/* D_i of the VW states of block s in lane order (trellis.h, lane_comp): where a vector holds
 * B = VW / 2^KV groups, lane l is state s + 2^KV (l mod B) + l / B, so its group minimum is
 * gm[s / 2^KV + l mod B]: the B minima broadcast, with no permute; otherwise lane l is s + l
 * and one minimum serves the vector.  Invariant 1's order of operations. */
static inline __attribute__((always_inline)) vec values(const float *c0, const float *c1, int V,
                                                        vec x0, vec x1, const float *gm, int KV,
                                                        uint32_t s)
{
    vec g = (1 << KV) < VW ? V_BCAST_FEW(gm + (s >> KV), VW >> KV) : V_SET1(gm[s >> KV]);
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
                                                             float *gn, float *Dlast)
{
    uint32_t G = 1u << sh, H = 1u << KV;
    int lanes = (1 << KV) < VW; /* lane order differs from state order */
    const float *c0 = lanes ? t->lane_comp[LANE_SET][0] : t->comp[0];
    const float *c1 = lanes ? t->lane_comp[LANE_SET][1] : t->comp[1];
    /* lane order -> state order: state offset k is lane (k mod 2^KV) B + k / 2^KV */
    int32_t order[VW];
    for (int k = 0; k < VW; k++) order[k] = lanes ? (k % (1 << KV)) * (VW >> KV) + k / (1 << KV) : k;
    const vidx unperm = V_LOAD_IDX(order);
    const vec x0 = V_SET1(xi[0]), x1 = V_SET1(V == 2 ? xi[1] : 0.f);
    if (Dlast) {
        for (uint32_t s = 0; s < (G << KV); s += VW) {
            vec v = values(c0, c1, V, x0, x1, gm, KV, s);
            V_STORE(Dlast + s, lanes ? V_EXPAND(unperm, v) : v);
        }
        return;
    }
    /* UNROLL chunks of groups at a time: independent dependency chains for the out-of-order
     * core.  G is a power of two >= VW; with fewer chunks, the extra ones repeat the first
     * (same values).  The minima over the 2^KV predecessors (states h G + g) come out in lane
     * order, since the blocks h G + g share g's permutation: one permute per VW groups. */
    enum { U = 4 };
    for (uint32_t g = 0; g < G; g += U * VW) {
        vec m[U];
        uint32_t gg[U];
        for (int u = 0; u < U; u++) {
            gg[u] = g + u * VW < G ? g + u * VW : g;
            m[u] = values(c0, c1, V, x0, x1, gm, KV, gg[u]);
        }
        for (uint32_t h = 1; h < H; h++)
            for (int u = 0; u < U; u++) {
                vec v = values(c0, c1, V, x0, x1, gm, KV, h * G + gg[u]);
                m[u] = V_MIN(v, m[u]); /* v < m ? v : m: the first minimum stays */
            }
        for (int u = 0; u < U; u++) V_STORE(gn + gg[u], lanes ? V_EXPAND(unperm, m[u]) : m[u]);
    }
}

/* step_body specialized for each (KV, V) a trellis can have: constant predecessor loops. */
#define STEP_CASE(kv, v)                                                                           \
    case (kv) * 4 + (v):                                                                           \
        step_body(t, xi, gm, kv, v, sh, gn, Dlast);                                                \
        return;
static void step(const tqp_trellis *t, const float *xi, const float *gm, int KV, int sh,
                 float *gn, float *Dlast)
{
    switch (KV * 4 + t->V) {
        STEP_CASE(1, 1) STEP_CASE(2, 1) STEP_CASE(3, 1) STEP_CASE(4, 1)
        STEP_CASE(2, 2) STEP_CASE(4, 2) STEP_CASE(6, 2) STEP_CASE(8, 2)
    default:
        step_body(t, xi, gm, KV, t->V, sh, gn, Dlast);
    }
}
#undef STEP_CASE

/* Where the group minima of each step live (VITERBI_NAME): steps keep, keep + R, keep + 2R, ...
 * in the ring, the others in two buffers that stay in cache. */
typedef struct {
    const tqp_trellis *t;
    const float *x;
    int KV, sh, start, keep, R;
    uint32_t G, H;
} trace;

static inline int kept(const trace *c, int i)
{
    return i >= c->keep && (i - c->keep) % c->R == 0;
}

static inline float *slot(const trace *c, int i)
{
    return kept(c, i) ? w_.ring + (size_t)((i - c->keep) / c->R) * c->G : w_.hot[i & 1];
}

/* cost_i(s), in the kernel's order of operations. */
static inline float cost_at(const trace *c, int i, uint32_t s)
{
    const float *xi = c->x + (size_t)i * c->t->V, *v = c->t->table + (size_t)s * c->t->V;
    float d = xi[0] - v[0], e = d * d;
    if (c->t->V == 2) {
        float d1 = xi[1] - v[1];
        e = e + d1 * d1;
    }
    return e;
}

static float gm_at(const trace *c, int q, uint32_t g);

/* D_i(s) as the kernel computes it: the previous step's group minimum plus the cost (step 0:
 * the cost, or infinity outside the start constraint). */
static float value_at(const trace *c, int i, uint32_t s)
{
    float e = cost_at(c, i, s);
    if (i == 0) return c->start < 0 || (int)(s >> c->KV) == c->start ? e : INFINITY;
    return gm_at(c, i - 1, s >> c->KV) + e;
}

/* The group minimum of step q: read where it was kept, or recomputed from the minima of the
 * steps before (at most R - 1 of them, 2^KV candidates each: exact, min is exact). */
static float gm_at(const trace *c, int q, uint32_t g)
{
    if (kept(c, q)) return slot(c, q)[g];
    float m = value_at(c, q, g);
    for (uint32_t h = 1; h < c->H; h++) {
        float v = value_at(c, q, (h << c->sh) | g);
        if (v < m) m = v;
    }
    return m;
}

float VITERBI_NAME(const tqp_trellis *t, const float *x, int start, int end, uint32_t *states,
                   int first)
{
    int KV = t->K * t->V, N = t->T / t->V, sh = t->L - KV;
    uint32_t S = 1u << t->L, G = 1u << sh, H = 1u << KV;
    if (first < 0) first = 0;
    /* The traceback to `first` reads the minima of steps first - 1 .. N - 3.  Only every R-th
     * of them is kept (from step keep on); a missing one costs (2^KV)^(R-1) recomputed values
     * at most, R chosen so that this stays near 64. */
    trace c = {t, x, KV, sh, start, first > 0 ? first - 1 : 0, KV <= 3 ? 1 + 6 / KV : 1, G, H};
    size_t kept_steps = (size_t)(N - 1 - c.keep + c.R - 1) / c.R;
    if (G < VW || S < VW || !reserve(S, G, kept_steps * G))
        return tqp_trellis_viterbi_ref(t, x, start, end, states);
    float *D = w_.D;
    /* step 0's group minima, then fused steps: step i's values fold into its minima (the min
     * over the 2^KV predecessors of each group); the last step's values go to D.  No
     * back-pointers: the traceback recomputes the 2^KV candidates of the one group on the
     * path, from the kept minima. */
    float *g0 = slot(&c, 0);
    for (uint32_t g = 0; g < G; g++) {
        float m = value_at(&c, 0, g);
        for (uint32_t h = 1; h < H; h++) {
            float v = value_at(&c, 0, (h << sh) | g);
            if (v < m) m = v;
        }
        g0[g] = m;
    }
    for (int i = 1; i < N; i++) {
        int last = i == N - 1;
        step(t, x + (size_t)i * t->V, slot(&c, i - 1), KV, sh, last ? NULL : slot(&c, i),
             last ? D : NULL);
    }
    float bc;
    states[N - 1] = tqp_trellis_best_end(D, S, G, end, &bc);
    for (int i = N - 1; i > first; i--) {
        uint32_t g = states[i] >> KV, best = g;
        float m = value_at(&c, i - 1, g);
        for (uint32_t h = 1; h < H; h++) {
            float v = value_at(&c, i - 1, (h << sh) | g);
            if (v < m) m = v, best = (h << sh) | g;
        }
        states[i - 1] = best;
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
