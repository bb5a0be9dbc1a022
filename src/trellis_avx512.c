/* AVX-512 Viterbi pass for the bitshift trellis: the reference's arithmetic (trellis.h,
 * invariants 1-3) on 16 states per instruction.  Group minima are contiguous in the natural
 * state order (predecessor h of group g is state h * G + g); the new costs expand each group's
 * minimum over its 2^KV states with one permute.  Used when G = 2^(L-KV) >= 16; compiled with
 * -mavx512f -mavx512bw -ffp-contract=off. */
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

/* gm[g] = min over h of D[h G + g] (first minimum wins), bp[g] = its h. */
static void group_min(const float *D, int G, int H, float *gm, uint8_t *bp)
{
    for (int g = 0; g < G; g += 16) {
        __m512 m = _mm512_load_ps(D + g);
        __m512i a = _mm512_setzero_si512();
        for (int h = 1; h < H; h++) {
            __m512 v = _mm512_load_ps(D + (size_t)h * G + g);
            __mmask16 lt = _mm512_cmp_ps_mask(v, m, _CMP_LT_OQ);
            m = _mm512_mask_blend_ps(lt, m, v);
            a = _mm512_mask_blend_epi32(lt, a, _mm512_set1_epi32(h));
        }
        _mm512_store_ps(gm + g, m);
        _mm_storeu_si128((__m128i *)(bp + g), _mm512_cvtepi32_epi8(a));
    }
}

/* Dn[s] = gm[s >> KV] + cost(s) for every state. */
static void expand(const tqp_trellis *t, const float *xi, const float *gm, int KV, float *Dn)
{
    uint32_t S = 1u << t->L;
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
        _mm512_store_ps(Dn + s, _mm512_add_ps(g, e));
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
    for (int i = 1; i < N; i++) {
        group_min(D, (int)G, (int)H, gm, w_.bp + (size_t)i * G);
        expand(t, x + (size_t)i * t->V, gm, KV, Dn);
        float *tmp = D;
        D = Dn, Dn = tmp;
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
