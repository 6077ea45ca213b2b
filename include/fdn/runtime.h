/* The runtime: a set of workers placed on the machine's cores.
 *
 * Lifecycle: fdn_runtime_create (places workers, allocates their memory on
 * their NUMA nodes) -> fdn_runtime_start (starts the pinned threads of the
 * runtime-driven workers) -> ... -> fdn_runtime_stop (stops threads, drains
 * every ring and run queue, cancels timers) -> fdn_runtime_destroy.
 *
 * Two ways to run a worker, both first-class:
 *  - runtime-driven: the runtime creates a pinned thread that runs
 *    fdn_worker_run() until stop;
 *  - application-driven: an application thread calls fdn_worker_attach() and
 *    then drives the worker with fdn_worker_progress()/wait()/run(), as UCX
 *    workers are driven; it calls fdn_worker_detach() before the runtime stops.
 * The first app_driven_workers workers are application-driven, the rest are
 * runtime-driven. All of them can post tasks to each other. */
#ifndef FDN_RUNTIME_H
#define FDN_RUNTIME_H

#include <stdint.h>

#include <fdn/topology.h>
#include <fdn/worker.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fdn_runtime fdn_runtime;

typedef enum fdn_idle_strategy {
    FDN_IDLE_SPIN_THEN_SLEEP = 0, /* poll for spin_ns, then block in the kernel (default) */
    FDN_IDLE_BUSY_POLL,           /* never block: lowest latency, burns the core */
    FDN_IDLE_SLEEP,               /* block as soon as a pass finds nothing to do */
} fdn_idle_strategy;

/* Zero means "default" for every field. */
typedef struct fdn_runtime_config {
    int workers;                   /* default: one per allowed physical core */
    int app_driven_workers;        /* the first N workers are driven by the application */
    const fdn_topology *topology;  /* default: the host's, loaded by the runtime (with its
                                      PCI devices only for FDN_PLACE_NEAR_DEVICE) */
    fdn_placement_policy placement;/* default FDN_PLACE_COMPACT */
    const char *placement_device;  /* for FDN_PLACE_NEAR_DEVICE */
    bool no_pinning;               /* do not pin threads (placement still picks NUMA nodes) */
    bool use_smt;                  /* see fdn_placement_config.use_smt */
    fdn_idle_strategy idle;        /* default FDN_IDLE_SPIN_THEN_SLEEP */
    uint64_t spin_ns;              /* polling time before sleeping; default 50 us */
    uint32_t ring_entries;         /* capacity of each inbound ring (power of two); default 1024 */
    uint32_t uring_entries;        /* io_uring submission queue size; default 256 */
    uint32_t task_budget;          /* tasks run per pass before I/O is polled again; default 64 */
    uint64_t time_slice_ns;        /* fdn_worker_should_yield() threshold; default 100 us */
    fdn_pool_config pool;          /* each worker's pool; bind_numa/numa_node are set
                                      from placement, the rest defaults as in msg.h */
} fdn_runtime_config;

/* Places and allocates the workers. cfg may be NULL (defaults). Returns 0,
 * -EINVAL, -ENOSPC (more workers than allowed cores), -ENOMEM, or the error
 * of loading the host topology (see fdn_errmsg()). */
int fdn_runtime_create(const fdn_runtime_config *cfg, fdn_runtime **out);

/* Starts the runtime-driven workers' threads and returns once each has set up
 * its io_uring. Returns 0, -EALREADY, or the first worker's setup error (for
 * example -ENOSYS or -EPERM when io_uring is unavailable; the runtime is then
 * stopped again). */
int fdn_runtime_start(fdn_runtime *rt);

/* Stops and joins the runtime threads, then drains: tasks still in rings and
 * run queues are run (on the calling thread, in each worker's name) until
 * none is left; armed timers are cancelled. Posting then fails with
 * -ESHUTDOWN. Returns 0, -EBUSY while an application thread is still attached
 * to a worker, or -EDEADLK when called from a worker. Idempotent. */
int fdn_runtime_stop(fdn_runtime *rt);

/* What stop found and did, for reporting. */
typedef struct fdn_runtime_drain_report {
    uint64_t tasks_drained;     /* task function calls made by the drain */
    uint64_t timers_cancelled;  /* armed timers disarmed */
    uint64_t tasks_abandoned;   /* tasks that kept re-posting past the drain bound; 0 normally */
} fdn_runtime_drain_report;

void fdn_runtime_drain_report_get(const fdn_runtime *rt, fdn_runtime_drain_report *out);

/* Stops the runtime if needed and frees everything. NULL is a no-op. */
void fdn_runtime_destroy(fdn_runtime *rt);

int fdn_runtime_num_workers(const fdn_runtime *rt);

/* The index-th worker, or NULL when out of range. Valid until destroy. */
fdn_worker *fdn_runtime_worker(fdn_runtime *rt, int index);

/* Makes the calling thread the owner of an application-driven worker: pins
 * it (unless no_pinning), adopts the worker's pool and sets up its io_uring.
 * Returns 0, -EINVAL (a runtime-driven worker), -EBUSY (already attached), or
 * the io_uring setup error. */
int fdn_worker_attach(fdn_worker *w);

/* Releases the worker; another thread may attach it later. Tasks stay queued.
 * The thread's CPU affinity is restored. Owner thread only. Returns 0 or
 * -EPERM off the owner thread. */
int fdn_worker_detach(fdn_worker *w);

#ifdef __cplusplus
}
#endif
#endif
