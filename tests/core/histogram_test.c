/* Log-linear histogram: exact small values, bounded relative error,
 * quantiles against a sorted reference, merge. */
#include <stdlib.h>

#include <fdn/histogram.h>

#include "test.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t next_random(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_small_values_are_exact(void)
{
    fdn_histogram h;
    fdn_histogram_reset(&h);
    for (uint64_t v = 0; v < 64; v++)
        fdn_histogram_record(&h, v);
    for (uint64_t v = 0; v < 64; v++)
        CHECK_EQ(fdn_histogram_quantile(&h, (double)(v + 1) / 64.0), v);
    CHECK_EQ(h.min, 0);
    CHECK_EQ(h.max, 63);
}

/* Every quantile is within 1/32 above the exact one (the bucket's upper
 * edge) and never below it. */
static void test_quantiles_match_reference(void)
{
    enum { N = 200000 };
    uint64_t *vals = malloc(N * sizeof *vals);
    fdn_histogram h;
    fdn_histogram_reset(&h);
    uint64_t seed = 42;
    for (int i = 0; i < N; i++) {
        /* Log-uniform over 1 ns .. 1 s. */
        uint64_t bits = next_random(&seed) % 30;
        vals[i] = (next_random(&seed) & ((UINT64_C(1) << bits) - 1)) + 1;
        fdn_histogram_record(&h, vals[i]);
    }
    qsort(vals, N, sizeof *vals, cmp_u64);
    const double qs[] = {0.001, 0.5, 0.9, 0.99, 0.999, 0.9999};
    for (unsigned i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        size_t rank = (size_t)(qs[i] * N + 0.999999);
        uint64_t exact = vals[rank - 1];
        uint64_t got = fdn_histogram_quantile(&h, qs[i]);
        CHECK(got >= exact);
        CHECK(got - exact <= exact / 32 + 1);
    }
    CHECK_EQ(fdn_histogram_quantile(&h, 1.0), vals[N - 1]);
    CHECK_EQ(fdn_histogram_quantile(&h, 0.0), vals[0]);
    CHECK_EQ(h.count, N);
    free(vals);
}

static void test_merge_and_clamp(void)
{
    fdn_histogram a, b;
    fdn_histogram_reset(&a);
    fdn_histogram_reset(&b);
    CHECK_EQ(fdn_histogram_quantile(&a, 0.5), 0);
    CHECK(fdn_histogram_mean(&a) == 0.0);
    fdn_histogram_record(&a, 10);
    fdn_histogram_record(&b, 1000);
    fdn_histogram_record(&b, UINT64_MAX); /* clamped bucket, true max kept */
    fdn_histogram_merge(&a, &b);
    CHECK_EQ(a.count, 3);
    CHECK_EQ(a.min, 10);
    CHECK_EQ(a.max, UINT64_MAX);
    CHECK_EQ(fdn_histogram_quantile(&a, 0.34), 1007); /* 1000 lies in bucket 992..1007 */
}

int main(void)
{
    RUN(test_small_values_are_exact);
    RUN(test_quantiles_match_reference);
    RUN(test_merge_and_clamp);
    return 0;
}
