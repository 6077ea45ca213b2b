/* Pinning the calling thread to one CPU. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include <fdn/topology.h>

#include "base/error.h"

/* Beyond any CONFIG_NR_CPUS; bounds the mask we allocate for a bad number. */
#define FDN_PIN_MAX_CPU 65535

/* The kernel is the judge of what this process may use: it refuses a CPU
 * outside the cgroup cpuset or one that does not exist (EINVAL). A thread
 * may still widen a taskset mask, as sched_setaffinity always allows. */
int fdn_pin_current_thread(int os_cpu)
{
    if (os_cpu < 0 || os_cpu > FDN_PIN_MAX_CPU)
        return FDN_ERR(-EINVAL, "cpu %d is not a valid CPU number", os_cpu);
    cpu_set_t *set = CPU_ALLOC((size_t)os_cpu + 1);
    if (!set)
        return FDN_ERR(-ENOMEM, "cannot allocate a CPU mask for cpu %d", os_cpu);
    size_t size = CPU_ALLOC_SIZE((size_t)os_cpu + 1);
    CPU_ZERO_S(size, set);
    CPU_SET_S((size_t)os_cpu, size, set);
    int rc = pthread_setaffinity_np(pthread_self(), size, set);
    CPU_FREE(set);
    if (rc != 0)
        return FDN_ERR(-rc, "the kernel refuses to pin this thread to cpu %d: %s", os_cpu,
                       strerror(rc));
    return 0;
}
