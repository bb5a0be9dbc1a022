/* AVX-512 Viterbi pass for the bitshift trellis: the reference's arithmetic (trellis.h,
 * invariants 1-3) on 16 states per instruction, one pass over the states per step: each
 * group's minimum is expanded over its 2^KV states with one permute, and the new values of a
 * group's 2^KV predecessors (states h * G + g) are reduced in registers into the next step's
 * minimum, keeping only the comparison masks for the traceback.  Used when G = 2^(L-KV) >= 16;
 * compiled with -mavx512f -mavx512bw -mavx512vl -ffp-contract=off. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

#include "tqp/trellis.h"

float tqp_trellis_viterbi_ref(const tqp_trellis *t, const float *x, int start, int end,
                              uint32_t *states);

typedef struct {
    float *D, *Dn, *gm; // (2^L), (2^L), (G) 64-byte aligned
    uint16_t *bp;       // (N, H - 1, G / 16) comparison masks
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

/* D_i(s) = gm[s >> KV] + cost(s) for 16 consecutive states from s (invariant 1's order). */
static inline __attribute__((always_inline)) __m512 values(const float *c0, const float *c1,
                                                            int V, __m512 x0, __m512 x1,
                                                            const float *gm, __m512i idx, int KV,
                                                            uint32_t s)
{
    __m512 g = KV < 4 ? _mm512_permutexvar_ps(idx, _mm512_loadu_ps(gm + (s >> KV)))
                      : _mm512_set1_ps(gm[s >> KV]);
    __m512 d = _mm512_sub_ps(x0, _mm512_load_ps(c0 + s));
    __m512 e = _mm512_mul_ps(d, d);
    if (V == 2) {
        __m512 d1 = _mm512_sub_ps(x1, _mm512_load_ps(c1 + s));
        e = _mm512_add_ps(e, _mm512_mul_ps(d1, d1));
    }
    return _mm512_add_ps(g, e);
}

/* One step, fused with the next step's group minima: for 16 groups g at a time, the values of
 * their 2^KV predecessors h G + g (h ascending) are computed and reduced in registers (strict
 * <, so the first minimum wins, as the reference); each comparison's 16-bit mask is stored, and
 * the back-pointer of group g is the last h whose mask has g's bit (0 if none).  With Dlast,
 * the values are stored instead (the last step). */
static inline __attribute__((always_inline)) void step_body(const tqp_trellis *t, const float *xi,
                                                             const float *gm, int KV, int V, int sh,
                                                             float *gn, uint16_t *masks,
                                                             float *Dlast)
{
    uint32_t G = 1u << sh, H = 1u << KV;
    const float *c0 = t->comp[0], *c1 = t->comp[1];
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i idx = _mm512_srli_epi32(lane, KV < 4 ? KV : 4);
    const __m512 x0 = _mm512_set1_ps(xi[0]), x1 = _mm512_set1_ps(V == 2 ? xi[1] : 0.f);
    if (Dlast) {
        for (uint32_t s = 0; s < (G << KV); s += 16)
            _mm512_store_ps(Dlast + s, values(c0, c1, V, x0, x1, gm, idx, KV, s));
        return;
    }
    for (uint32_t g = 0; g < G; g += 16) {
        __m512 m = values(c0, c1, V, x0, x1, gm, idx, KV, g);
        for (uint32_t h = 1; h < H; h++) {
            __m512 v = values(c0, c1, V, x0, x1, gm, idx, KV, h * G + g);
            __mmask16 lt = _mm512_cmp_ps_mask(v, m, _CMP_LT_OQ);
            m = _mm512_mask_blend_ps(lt, m, v);
            masks[(size_t)(h - 1) * (G / 16) + g / 16] = (uint16_t)lt;
        }
        _mm512_store_ps(gn + g, m);
    }
}

/* step_body specialized for each (KV, V) a trellis can have, so that the predecessor loop has
 * a constant trip count and no run-time branches. */
#define STEP_CASE(kv, v)                                                                           \
    case (kv) * 4 + (v):                                                                           \
        step_body(t, xi, gm, kv, v, sh, gn, masks, Dlast);                                         \
        return;
static void step(const tqp_trellis *t, const float *xi, const float *gm, int KV, int sh,
                 float *gn, uint16_t *masks, float *Dlast)
{
    switch (KV * 4 + t->V) {
        STEP_CASE(1, 1) STEP_CASE(2, 1) STEP_CASE(3, 1) STEP_CASE(4, 1)
        STEP_CASE(2, 2) STEP_CASE(4, 2) STEP_CASE(6, 2) STEP_CASE(8, 2)
    default:
        step_body(t, xi, gm, KV, t->V, sh, gn, masks, Dlast);
    }
}
#undef STEP_CASE

static uint32_t backpointer(const uint16_t *masks, uint32_t G, uint32_t H, uint32_t g)
{
    for (uint32_t h = H - 1; h >= 1; h--)
        if (masks[(size_t)(h - 1) * (G / 16) + g / 16] >> (g % 16) & 1) return h;
    return 0;
}

float tqp_trellis_viterbi_avx512(const tqp_trellis *t, const float *x, int start, int end,
                                 uint32_t *states)
{
    int KV = t->K * t->V, N = t->T / t->V, sh = t->L - KV;
    uint32_t S = 1u << t->L, G = 1u << sh, H = 1u << KV;
    size_t per_step = (size_t)(H - 1) * (G / 16);
    if (G < 16 || S < 16 || !reserve(S, sizeof(uint16_t) * (size_t)N * per_step))
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
    /* step 0's group minima (masks as the kernel keeps them), then fused steps: step i's values
     * fold into step i + 1's minima */
    uint16_t *mk = w_.bp + per_step;
    for (size_t k = 0; k < per_step; k++) mk[k] = 0;
    for (uint32_t g = 0; g < G; g++) {
        float m = D[g];
        for (uint32_t h = 1; h < H; h++)
            if (D[(h << sh) | g] < m) {
                m = D[(h << sh) | g];
                mk[(size_t)(h - 1) * (G / 16) + g / 16] |= (uint16_t)(1u << (g % 16));
            }
        gm[g] = m;
    }
    for (int i = 1; i < N; i++) {
        int last = i == N - 1;
        step(t, x + (size_t)i * t->V, gm, KV, sh, Dn, last ? NULL : w_.bp + (size_t)(i + 1) * per_step,
             last ? D : NULL);
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

double tqp_trellis_vector_rate_avx512(double (*now)(void))
{
    __m512 a[8], one = _mm512_set1_ps(1e-7f);
    for (int k = 0; k < 8; k++) a[k] = _mm512_set1_ps((float)k);
    long iters = 20000000;
    double t0 = now();
    for (long i = 0; i < iters; i++)
        for (int k = 0; k < 8; k++) a[k] = _mm512_add_ps(a[k], one);
    double dt = now() - t0;
    __m512 sum = a[0];
    for (int k = 1; k < 8; k++) sum = _mm512_add_ps(sum, a[k]);
    volatile float sink = _mm512_reduce_add_ps(sum);
    (void)sink;
    return 8.0 * iters / dt;
}
