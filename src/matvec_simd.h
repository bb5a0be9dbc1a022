/* The instances and dispatch of a SIMD matvec kernel file (matvec_avx512.c, matvec_avx2.c),
 * written once: the includer defines codes_group and decode_group (always inlined, with V, KV
 * and the code as constants) and CODES_NAME and DECODE_NAME, the two entry points of
 * matvec_impl.h. */
#ifndef CODES_NAME
#error "define CODES_NAME and DECODE_NAME before including matvec_simd.h"
#endif

/* One instance per (V, KV, code) so that every index is a constant. */
#define INSTANCE(V, KV, CODE)                                                                      \
    static void codes_##V##_##KV##_##CODE(const tqp_tmv_layout *k, const float *xr, float *z,      \
                                          int g0, int g1)                                          \
    {                                                                                              \
        for (int g = g0; g < g1; g++) codes_group(k, xr, z, g, V, KV, CODE);                       \
    }                                                                                              \
    static void decode_##V##_##KV##_##CODE(const tqp_tmv_layout *k, float *W, int g0, int g1)      \
    {                                                                                              \
        for (int g = g0; g < g1; g++) decode_group(k, W, g, V, KV, CODE);                          \
    }

#define V1_CODE(KV)                                                                                \
    INSTANCE(1, KV, TQP_TCODE_1MAD) INSTANCE(1, KV, TQP_TCODE_3INST) INSTANCE(1, KV, TQP_TCODE_LUT)
V1_CODE(1)
V1_CODE(2)
V1_CODE(3)
V1_CODE(4)
INSTANCE(2, 2, TQP_TCODE_LUT)
INSTANCE(2, 4, TQP_TCODE_LUT)
INSTANCE(2, 6, TQP_TCODE_LUT)
INSTANCE(2, 8, TQP_TCODE_LUT)

typedef void (*codes_fn)(const tqp_tmv_layout *, const float *, float *, int, int);
typedef void (*decode_fn)(const tqp_tmv_layout *, float *, int, int);

#define ROW_V1(KV)                                                                                 \
    {codes_1_##KV##_TQP_TCODE_1MAD, codes_1_##KV##_TQP_TCODE_3INST, codes_1_##KV##_TQP_TCODE_LUT}
#define DROW_V1(KV)                                                                                \
    {decode_1_##KV##_TQP_TCODE_1MAD, decode_1_##KV##_TQP_TCODE_3INST,                            \
     decode_1_##KV##_TQP_TCODE_LUT}

static const codes_fn codes_v1[4][3] = {ROW_V1(1), ROW_V1(2), ROW_V1(3), ROW_V1(4)};
static const decode_fn decode_v1[4][3] = {DROW_V1(1), DROW_V1(2), DROW_V1(3), DROW_V1(4)};
static const codes_fn codes_v2[4] = {codes_2_2_TQP_TCODE_LUT, codes_2_4_TQP_TCODE_LUT,
                                     codes_2_6_TQP_TCODE_LUT, codes_2_8_TQP_TCODE_LUT};
static const decode_fn decode_v2[4] = {decode_2_2_TQP_TCODE_LUT, decode_2_4_TQP_TCODE_LUT,
                                       decode_2_6_TQP_TCODE_LUT, decode_2_8_TQP_TCODE_LUT};

static int v1_col(int code)
{
    return code == TQP_TCODE_1MAD ? 0 : code == TQP_TCODE_3INST ? 1 : 2;
}

void CODES_NAME(const tqp_tmv_layout *k, const float *xr, float *z, int g0, int g1)
{
    if (k->V == 1) codes_v1[k->K - 1][v1_col(k->code)](k, xr, z, g0, g1);
    else codes_v2[k->K - 1](k, xr, z, g0, g1);
}

void DECODE_NAME(const tqp_tmv_layout *k, float *W, int g0, int g1)
{
    if (k->V == 1) decode_v1[k->K - 1][v1_col(k->code)](k, W, g0, g1);
    else decode_v2[k->K - 1](k, W, g0, g1);
}
