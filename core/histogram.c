#include <fdn/histogram.h>

#include <string.h>

/* Bucket layout: index = (exponent << SUB_BITS) + mantissa, where values
 * below 2^(SUB_BITS+1) map to themselves (exponent 0 and 1 hold 0..63) and a
 * larger value v with highest bit b keeps its top SUB_BITS+1 bits. */
static unsigned bucket_of(uint64_t v)
{
    const unsigned linear = 1u << (FDN_HIST_SUB_BITS + 1);
    if (v < linear)
        return (unsigned)v;
    unsigned b = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = b - FDN_HIST_SUB_BITS;
    unsigned index = ((shift + 1) << FDN_HIST_SUB_BITS) + (unsigned)((v >> shift) & ((1u << FDN_HIST_SUB_BITS) - 1));
    return index < FDN_HIST_BUCKETS ? index : FDN_HIST_BUCKETS - 1;
}

/* The largest value that lands in bucket i. */
static uint64_t bucket_upper(unsigned i)
{
    const unsigned linear = 1u << (FDN_HIST_SUB_BITS + 1);
    if (i < linear)
        return i;
    unsigned shift = (i >> FDN_HIST_SUB_BITS) - 1;
    uint64_t mantissa = (1u << FDN_HIST_SUB_BITS) | (i & ((1u << FDN_HIST_SUB_BITS) - 1));
    return ((mantissa + 1) << shift) - 1;
}

void fdn_histogram_reset(fdn_histogram *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void fdn_histogram_record(fdn_histogram *h, uint64_t value)
{
    h->buckets[bucket_of(value)]++;
    h->count++;
    h->sum = h->sum + value < h->sum ? UINT64_MAX : h->sum + value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void fdn_histogram_merge(fdn_histogram *dst, const fdn_histogram *src)
{
    for (unsigned i = 0; i < FDN_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum = dst->sum + src->sum < dst->sum ? UINT64_MAX : dst->sum + src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t fdn_histogram_quantile(const fdn_histogram *h, double q)
{
    if (!h->count)
        return 0;
    if (q <= 0)
        return h->min;
    if (q >= 1)
        return h->max;
    /* The rank of the value at q, 1-based: the smallest with at least q of
     * the values at or below it. */
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < FDN_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = bucket_upper(i);
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double fdn_histogram_mean(const fdn_histogram *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}
