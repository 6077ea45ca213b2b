/* Log-linear latency histograms (as HdrHistogram): values from 0 to 2^40
 * (1 100 s in nanoseconds) with a relative error under 1/32, in 1 152 fixed
 * buckets, so recording is a few instructions and never allocates. Values
 * below 64 are exact; above, each power of two is split into 32 buckets.
 * Not synchronised: one writer, or merge per-thread histograms. */
#ifndef FDN_HISTOGRAM_H
#define FDN_HISTOGRAM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FDN_HIST_SUB_BITS 5
#define FDN_HIST_MAX_BITS 40
#define FDN_HIST_BUCKETS ((FDN_HIST_MAX_BITS - FDN_HIST_SUB_BITS + 1) << FDN_HIST_SUB_BITS)

typedef struct fdn_histogram {
    uint64_t count;
    uint64_t min, max;
    uint64_t sum;   /* for the mean; saturates instead of wrapping */
    uint64_t buckets[FDN_HIST_BUCKETS];
} fdn_histogram;

void fdn_histogram_reset(fdn_histogram *h);

/* Records one value; values over 2^40 - 1 are clamped into the last bucket
 * (max still reports the true value). */
void fdn_histogram_record(fdn_histogram *h, uint64_t value);

/* Adds src's counts to dst. */
void fdn_histogram_merge(fdn_histogram *dst, const fdn_histogram *src);

/* The value at quantile q (0.0 .. 1.0, e.g. 0.999): the upper edge of the
 * bucket holding it, clamped to [min, max]; 0 for an empty histogram. */
uint64_t fdn_histogram_quantile(const fdn_histogram *h, double q);

/* Mean of the recorded values, 0 when empty. */
double fdn_histogram_mean(const fdn_histogram *h);

#ifdef __cplusplus
}
#endif
#endif
