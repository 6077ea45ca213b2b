/* Calibration of the time-stamp counter (see tsc.h). */
#include "base/tsc.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define CLOCKSOURCE "/sys/devices/system/clocksource/clocksource0/current_clocksource"

/* Long enough that the two clock reads' jitter (tens of ns) is under 0.1 %
 * of it; short enough not to be noticed once per process. */
#define CALIBRATION_NS 200000u

static uint32_t cycles_per_ns_q16;
static pthread_once_t calibrated = PTHREAD_ONCE_INIT;

static uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool fdn__tsc_is_clocksource(void)
{
    FILE *f = fopen(CLOCKSOURCE, "re");
    if (!f)
        return false;
    char name[32] = "";
    bool tsc = fgets(name, sizeof name, f) && strcmp(name, "tsc\n") == 0;
    fclose(f);
    return tsc;
}

static void calibrate(void)
{
#if defined(__x86_64__)
    if (!fdn__tsc_is_clocksource())
        return;
    uint64_t t0 = monotonic_ns(), c0 = fdn__tsc_now();
    uint64_t t1, c1;
    do {
        t1 = monotonic_ns();
        c1 = fdn__tsc_now();
    } while (t1 - t0 < CALIBRATION_NS);
    uint64_t q16 = ((c1 - c0) << 16) / (t1 - t0);
    /* A counter slower than 1 MHz or faster than 64 GHz is not a TSC. */
    if (q16 >= (1u << 16) / 1000 && q16 <= UINT32_MAX)
        cycles_per_ns_q16 = (uint32_t)q16;
#endif
}

uint32_t fdn__tsc_cycles_per_ns_q16(void)
{
    pthread_once(&calibrated, calibrate);
    return cycles_per_ns_q16;
}
