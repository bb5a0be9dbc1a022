/* AVX-512 Viterbi pass for the bitshift trellis: the reference's arithmetic (trellis.h,
 * invariants 1-3) on 16 states per instruction, one pass over the states per step: each
 * group's minimum is expanded over its 2^KV states with one permute, and the new values are
 * folded at once into the next step's group minima (predecessor h of group g is state
 * h * G + g, so the natural order visits h in ascending order).  Used when G = 2^(L-KV) >= 16;
 * compiled with -mavx512f -mavx512bw -mavx512vl -ffp-contract=off. */
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

#include "tqp/trellis.h"

float tqp_trellis_viterbi_ref(const tqp_trellis *t, const float *x, int start, int end,
                              uint32_t *states);

typedef struct {
    float *D, *Dn, *gm; // (2^L), (2^L), (G) 64-byte aligned
    uint8_t *bp;        // (N, G)
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

/* One step, fused: for every state s (natural order, so h = s >> sh runs 0 .. H-1 over blocks
 * of G states), D_i(s) = gm[s >> KV] + cost(s) is computed and immediately folded into the next
 * step's group minimum gn[g], g = s mod G (strict <, ascending h: the first minimum wins, as
 * the reference), with its h in bp (the next step's back-pointers).  With `last`, D_i is
 * stored in Dlast instead. */
static void step(const tqp_trellis *t, const float *xi, const float *gm, int KV, int sh,
                 float *gn, uint8_t *bp, float *Dlast)
{
    uint32_t S = 1u << t->L, G = 1u << sh;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i idx = _mm512_srli_epi32(lane, KV < 4 ? KV : 4);
    const __m512 x0 = _mm512_set1_ps(xi[0]), x1 = _mm512_set1_ps(t->V == 2 ? xi[1] : 0.f);
    for (uint32_t s = 0; s < S; s += 16) {
        __m512 g;
        if (KV < 4) /* 16 states span 16 >> KV groups */
            g = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(gm + (s >> KV)));
        else
            g = _mm512_set1_ps(gm[s >> KV]);
        __m512 d = _mm512_sub_ps(x0, _mm512_load_ps(t->comp[0] + s));
        __m512 e = _mm512_mul_ps(d, d);
        if (t->V == 2) {
            __m512 d1 = _mm512_sub_ps(x1, _mm512_load_ps(t->comp[1] + s));
            e = _mm512_add_ps(e, _mm512_mul_ps(d1, d1));
        }
        __m512 v = _mm512_add_ps(g, e);
        if (Dlast) {
            _mm512_store_ps(Dlast + s, v);
            continue;
        }
        uint32_t gi = s & (G - 1), h = s >> sh;
        if (h == 0) {
            _mm512_store_ps(gn + gi, v);
            _mm_storeu_si128((__m128i *)(bp + gi), _mm_setzero_si128());
            continue;
        }
        __m512 m = _mm512_load_ps(gn + gi);
        __mmask16 lt = _mm512_cmp_ps_mask(v, m, _CMP_LT_OQ);
        _mm512_store_ps(gn + gi, _mm512_mask_blend_ps(lt, m, v));
        __m128i b = _mm_loadu_si128((const __m128i *)(bp + gi));
        _mm_storeu_si128((__m128i *)(bp + gi), _mm_mask_mov_epi8(b, lt, _mm_set1_epi8((char)h)));
    }
}

float tqp_trellis_viterbi_avx512(const tqp_trellis *t, const float *x, int start, int end,
                                 uint32_t *states)
{
    int KV = t->K * t->V, N = t->T / t->V, sh = t->L - KV;
    uint32_t S = 1u << t->L, G = 1u << sh, H = 1u << KV;
    if (G < 16 || S < 16 || !reserve(S, (size_t)N * G))
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
    /* step 0's group minima, then fused steps: step i-1's values fold into step i's minima */
    for (uint32_t g = 0; g < G; g++) {
        float m = D[g];
        uint8_t arg = 0;
        for (uint32_t h = 1; h < H; h++)
            if (D[(h << sh) | g] < m) m = D[(h << sh) | g], arg = (uint8_t)h;
        gm[g] = m;
        w_.bp[G + g] = arg;
    }
    for (int i = 1; i < N; i++) {
        int last = i == N - 1;
        step(t, x + (size_t)i * t->V, gm, KV, sh, Dn, last ? NULL : w_.bp + (size_t)(i + 1) * G,
             last ? D : NULL);
        float *tmp = gm;
        gm = Dn, Dn = tmp;
    }
    uint32_t best = 0;
    float bc = INFINITY;
    for (uint32_t s = 0; s < S; s++)
        if ((end < 0 || (int)(s & (G - 1)) == end) && D[s] < bc) bc = D[s], best = s;
    states[N - 1] = best;
    for (int i = N - 1; i > 0; i--) {
        uint32_t g = states[i] >> KV;
        states[i - 1] = ((uint32_t)w_.bp[(size_t)i * G + g] << sh) | g;
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
