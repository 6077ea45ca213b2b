/* The CPU's time-stamp counter, for "has at least this much time passed?"
 * on hot paths, where a clock_gettime (about 25 ns through the vDSO here)
 * costs as much as the work it would time. Internal.
 *
 * Only where the kernel itself keeps time with the TSC (its clocksource is
 * "tsc"): it has then checked that the counter runs at a constant rate,
 * does not stop in idle states and agrees across CPUs, so a thread may
 * move between CPUs between two reads. Elsewhere (other clocksources,
 * other architectures) fdn__tsc_cycles_per_ns_q16() is 0 and callers read
 * the clock as before. */
#ifndef FDN_BASE_TSC_H
#define FDN_BASE_TSC_H

#include <stdbool.h>
#include <stdint.h>

/* Whether the kernel keeps time with the TSC (its clocksource is "tsc"). */
bool fdn__tsc_is_clocksource(void);

/* Counter cycles per nanosecond in 16.16 fixed point, measured once per
 * process against CLOCK_MONOTONIC (the first call spins about 200 µs); 0
 * when the counter must not be used. Thread-safe. */
uint32_t fdn__tsc_cycles_per_ns_q16(void);

/* The counter now: not ordered against surrounding loads and stores, which
 * a deadline check does not need. 0 where the counter is not used. */
static inline uint64_t fdn__tsc_now(void)
{
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    return 0;
#endif
}

#endif
