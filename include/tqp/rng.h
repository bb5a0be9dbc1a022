/* The one pseudo-random generator of TQP: splitmix64, chosen because its stream is a pure
 * function of a 64-bit state (reproducible on any rank, in any order of draws that is itself
 * deterministic), and seeds derived from (run seed, layer, matrix) by hashing. */
#ifndef TQP_RNG_H
#define TQP_RNG_H

#include <stdint.h>

/* Next value of the stream whose state is *s. */
static inline uint64_t tqp_splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A seed for one object from a run seed and two indices (e.g. layer and matrix). */
static inline uint64_t tqp_seed_derive(uint64_t run_seed, uint64_t a, uint64_t b)
{
    uint64_t s = run_seed ^ 0x5851f42d4c957f2dull;
    uint64_t x = tqp_splitmix64(&s) ^ (a * 0x2545f4914f6cdd1dull);
    x = tqp_splitmix64(&x) ^ (b * 0x9e3779b97f4a7c15ull);
    return tqp_splitmix64(&x);
}

#endif
