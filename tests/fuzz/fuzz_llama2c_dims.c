/* Structure-aware llama2.c headers: the fuzzer's bytes choose the seven header fields from
 * values near every bound the reader has (0, 1, powers of two and their neighbours, 2^24,
 * 4096, INT32_MAX, negative numbers) or take them verbatim; the file then has exactly the size
 * the header implies when that is small, or a size near it, so that the size check cannot
 * reject what a byte-level fuzzer would almost always truncate.  This is the harness that finds
 * a size computation that overflows. */
#include "fuzz_util.h"

static int32_t pick(const uint8_t *b)
{
    static const int32_t table[] = {0,
                                    1,
                                    2,
                                    3,
                                    4,
                                    8,
                                    16,
                                    64,
                                    172,
                                    512,
                                    4096,
                                    4097,
                                    65536,
                                    1 << 20,
                                    (1 << 24) - 1,
                                    1 << 24,
                                    (1 << 24) + 1,
                                    INT32_MAX,
                                    -1,
                                    -512,
                                    INT32_MIN,
                                    1 << 30,
                                    46341,
                                    32768};
    int32_t v;
    memcpy(&v, b + 1, 4);
    return b[0] & 0x80 ? v : table[b[0] % (sizeof table / sizeof table[0])];
}

/* The size the header implies, in a wide type (no overflow whatever the fields). */
static double implied(const int32_t h[7])
{
    double dim = h[0], hid = h[1], L = h[2], nh = h[3], kv = h[4],
           V = h[5] < 0 ? -(double)h[5] : h[5];
    double hd = nh > 0 ? (double)(h[0] / h[3]) : 0;
    double lay = 2 * dim + dim * nh * hd + 2 * dim * kv * hd + nh * hd * dim + 3 * dim * hid;
    return 28 + 4 * (V * dim + L * lay + dim + h[6] * hd + (h[5] < 0 ? V * dim : 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 7 * 5 + 2) return 0;
    int32_t h[7];
    for (int i = 0; i < 7; i++)
        h[i] = pick(data + 5 * i);
    double want = implied(h);
    int16_t delta;
    memcpy(&delta, data + 35, 2);
    double n = want <= (8 << 20) ? want : 28 + (size - 37) * 64.0;
    if (data[0] & 0x40) n += delta % 64; /* near, not at, the implied size */
    if (!(n >= 28) || n > (16 << 20)) n = 28;
    size_t bytes = (size_t)n;
    uint8_t *buf = calloc(bytes, 1);
    if (!buf) return 0;
    memcpy(buf, h, 28);
    for (size_t i = 28, j = 37; i < bytes && j < size; i++, j++)
        buf[i] = data[j];
    char path[600];
    const char *p = fuzz_write("dims.bin", buf, bytes, path, sizeof path);
    free(buf);
    if (!p) return 0;
    fuzz_load_checkpoint(p);
    return 0;
}
