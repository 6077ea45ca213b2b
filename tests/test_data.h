/* Seeded data for tests: a fast PRNG (splitmix64) and message payloads
 * that are a pure function of (seed, position), so that either side of a
 * test can regenerate what the other should have, without keeping a copy of
 * a 64 MiB message: byte i is byte i % 8 of word i / 8. */
#ifndef FDN_TESTS_TEST_DATA_H
#define FDN_TESTS_TEST_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fdn/msg.h>

#include "test.h"

static inline uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static inline uint64_t random_below(uint64_t *state, uint64_t n)
{
    return next_random(state) % n;
}

static inline uint64_t pattern_word(uint64_t seed, uint64_t k)
{
    uint64_t state = (seed << 40) ^ k;
    return next_random(&state);
}

static inline void fill_pattern(uint8_t *dst, uint64_t seed, uint64_t offset, size_t len)
{
    uint64_t word = 0;
    for (size_t i = 0; i < len; i++) {
        uint64_t pos = offset + i;
        if (i == 0 || (pos & 7) == 0)
            word = pattern_word(seed, pos >> 3);
        dst[i] = (uint8_t)(word >> (8 * (pos & 7)));
    }
}

static inline bool matches_pattern(const uint8_t *src, uint64_t seed, uint64_t offset, size_t len)
{
    uint64_t word = 0;
    for (size_t i = 0; i < len; i++) {
        uint64_t pos = offset + i;
        if (i == 0 || (pos & 7) == 0)
            word = pattern_word(seed, pos >> 3);
        if (src[i] != (uint8_t)(word >> (8 * (pos & 7))))
            return false;
    }
    return true;
}

static inline fdn_pool *make_pool(size_t max_bytes)
{
    fdn_pool_config cfg = { .max_bytes = max_bytes };
    fdn_pool *pool;
    CHECK_OK(fdn_pool_create(&cfg, &pool));
    return pool;
}

#endif
