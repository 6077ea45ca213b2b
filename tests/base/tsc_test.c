/* The time-stamp counter (base/tsc.h): used exactly where the kernel keeps
 * time with it, calibrated once, and counting forward on every CPU. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

#include "base/tsc.h"
#include "test.h"

static void test_used_where_the_kernel_uses_it(void)
{
    uint32_t q16 = fdn__tsc_cycles_per_ns_q16();
#if defined(__x86_64__)
    CHECK_EQ(q16 != 0, fdn__tsc_is_clocksource());
#else
    CHECK_EQ(q16, 0);
#endif
    CHECK_EQ(fdn__tsc_cycles_per_ns_q16(), q16);   /* measured once */
    printf("   clocksource tsc: %s, %.3f cycles/ns\n", fdn__tsc_is_clocksource() ? "yes" : "no",
           q16 / 65536.0);
}

/* A thread that moves across every CPU it may run on reads a counter that
 * never goes back: what lets a driven worker migrate between two reads. */
static void test_forward_across_cpus(void)
{
    if (!fdn__tsc_cycles_per_ns_q16()) {
        printf("   skipped: the counter is not used here\n");
        return;
    }
    cpu_set_t allowed;
    CHECK_OK(sched_getaffinity(0, sizeof allowed, &allowed));
    uint64_t last = fdn__tsc_now();
    for (int round = 0; round < 100; round++) {
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
            if (!CPU_ISSET(cpu, &allowed))
                continue;
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            CHECK_OK(sched_setaffinity(0, sizeof one, &one));
            uint64_t now = fdn__tsc_now();
            CHECK(now >= last);
            last = now;
        }
    }
    CHECK_OK(sched_setaffinity(0, sizeof allowed, &allowed));
}

int main(void)
{
    RUN(test_used_where_the_kernel_uses_it);
    RUN(test_forward_across_cpus);
    return 0;
}
