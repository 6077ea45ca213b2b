/* The runtime: places workers, runs the runtime-driven ones on pinned
 * threads, and stops everything without losing a queued task. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/runtime.h>

#include "base/error.h"
#include "core/worker_internal.h"

/* Drain passes before stop gives up on tasks that keep re-posting forever. */
#define DRAIN_MAX_PASSES 100000

struct fdn_runtime {
    fdn_runtime_config cfg;       /* with defaults filled in */
    int num_workers;
    fdn_worker **workers;
    bool started;
    bool stopped;
    fdn_runtime_drain_report report;

    /* Start-up handshake: each runtime thread reports its set-up result. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int threads_ready;
    int first_error;
};

static void apply_defaults(fdn_runtime_config *cfg)
{
    if (!cfg->spin_ns)
        cfg->spin_ns = 50000;
    if (!cfg->ring_entries)
        cfg->ring_entries = 1024;
    if (!cfg->uring_entries)
        cfg->uring_entries = 256;
    if (!cfg->task_budget)
        cfg->task_budget = 64;
    if (!cfg->time_slice_ns)
        cfg->time_slice_ns = 100000;
}

static int validate(const fdn_runtime_config *cfg)
{
    if (cfg->workers < 0 || cfg->app_driven_workers < 0 ||
        (cfg->workers && cfg->app_driven_workers > cfg->workers))
        return FDN_ERR(-EINVAL, "workers %d / app_driven_workers %d", cfg->workers,
                       cfg->app_driven_workers);
    if (!fdn__is_pow2(cfg->ring_entries) || cfg->ring_entries < 2)
        return FDN_ERR(-EINVAL, "ring_entries %u is not a power of two >= 2", cfg->ring_entries);
    if ((unsigned)cfg->idle > FDN_IDLE_SLEEP)
        return FDN_ERR(-EINVAL, "unknown idle strategy %d", (int)cfg->idle);
    return 0;
}

/* Chooses a CPU and NUMA node per worker. Pinned workers need a core each;
 * unpinned ones may outnumber the cores and take NUMA nodes round-robin from
 * the placement of one worker per allowed core. */
static int place_workers(const fdn_runtime_config *cfg, const fdn_topology *topo,
                         fdn_placement **out, int *num_workers)
{
    int ncpus = fdn_topology_num_cpus(topo);
    fdn_placement *all = calloc((size_t)ncpus, sizeof *all);
    if (!all)
        return -ENOMEM;
    fdn_placement_config pcfg = {
        .policy = cfg->placement,
        .workers = cfg->no_pinning ? 0 : cfg->workers,
        .device = cfg->placement_device,
        .use_smt = cfg->use_smt,
    };
    int placed = fdn_placement_compute(topo, &pcfg, all, ncpus);
    int n = cfg->workers ? cfg->workers : placed;
    fdn_placement *chosen = placed > 0 ? calloc((size_t)n, sizeof *chosen) : NULL;
    if (placed > 0 && chosen) {
        for (int i = 0; i < n; i++) {
            chosen[i] = all[i % placed];
            if (cfg->no_pinning)
                chosen[i].cpu = -1;
        }
        *out = chosen;
        *num_workers = n;
    }
    free(all);
    if (placed <= 0)
        return placed ? placed : FDN_ERR(-ENOSPC, "no allowed CPU to place workers on");
    return chosen ? 0 : -ENOMEM;
}

int fdn_runtime_create(const fdn_runtime_config *user_cfg, fdn_runtime **out)
{
    fdn_runtime_config cfg = user_cfg ? *user_cfg : (fdn_runtime_config){0};
    apply_defaults(&cfg);
    int rc = validate(&cfg);
    if (rc < 0)
        return rc;

    fdn_topology *own_topo = NULL;
    const fdn_topology *topo = cfg.topology;
    if (!topo) {
        /* Only near-device placement needs the PCI devices. */
        rc = cfg.placement == FDN_PLACE_NEAR_DEVICE ? fdn_topology_load_host(&own_topo)
                                                    : fdn_topology_load_host_cpus(&own_topo);
        if (rc < 0)
            return rc;
        topo = own_topo;
    }
    fdn_placement *placement = NULL;
    int n = 0;
    rc = place_workers(&cfg, topo, &placement, &n);
    fdn_topology_destroy(own_topo);
    cfg.topology = NULL; /* not kept: the caller's may go away after create */
    if (rc < 0)
        return rc;
    if (cfg.app_driven_workers > n) {
        free(placement);
        return FDN_ERR(-EINVAL, "app_driven_workers %d > workers %d", cfg.app_driven_workers, n);
    }

    fdn_runtime *rt = calloc(1, sizeof *rt);
    fdn_worker **workers = calloc((size_t)n, sizeof *workers);
    if (!rt || !workers) {
        free(rt);
        free(workers);
        free(placement);
        return -ENOMEM;
    }
    rt->cfg = cfg;
    rt->workers = workers;
    pthread_mutex_init(&rt->lock, NULL);
    pthread_cond_init(&rt->cond, NULL);
    for (int i = 0; i < n; i++) {
        struct fdn__worker_params params = {
            .index = i,
            .cpu = placement[i].cpu,
            .numa_node = placement[i].numa_node,
            .app_driven = i < cfg.app_driven_workers,
            .num_workers = n,
        };
        rc = fdn__worker_create(rt, &cfg, &params, &rt->workers[i]);
        if (rc < 0)
            break;
        rt->num_workers++;
    }
    free(placement);
    if (rc < 0) {
        rt->stopped = true;
        fdn_runtime_destroy(rt);
        return rc;
    }
    *out = rt;
    return 0;
}

static void report_ready(fdn_runtime *rt, int rc)
{
    pthread_mutex_lock(&rt->lock);
    if (rc < 0 && !rt->first_error)
        rt->first_error = rc;
    rt->threads_ready++;
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
}

static void *worker_thread(void *arg)
{
    fdn_worker *w = arg;
    int rc = w->cpu >= 0 ? fdn_pin_current_thread(w->cpu) : 0;
    if (rc == 0)
        rc = fdn__worker_bind(w, true);
    report_ready(w->rt, rc);
    if (rc < 0)
        return NULL;
    fdn_worker_run(w);
    fdn__worker_unbind(w);
    return NULL;
}

static void join_threads(fdn_runtime *rt, int started)
{
    for (int i = 0, seen = 0; i < rt->num_workers && seen < started; i++) {
        fdn_worker *w = rt->workers[i];
        if (w->app_driven)
            continue;
        fdn_worker_stop(w);
        pthread_join(w->thread, NULL);
        seen++;
    }
}

int fdn_runtime_start(fdn_runtime *rt)
{
    if (rt->started || rt->stopped)
        return -EALREADY;
    int started = 0, rc = 0;
    for (int i = 0; i < rt->num_workers; i++) {
        fdn_worker *w = rt->workers[i];
        if (w->app_driven)
            continue;
        rc = -pthread_create(&w->thread, NULL, worker_thread, w);
        if (rc < 0) {
            FDN_ERR(rc, "cannot start the thread of worker %d", i);
            break;
        }
        started++;
    }
    pthread_mutex_lock(&rt->lock);
    while (rt->threads_ready < started)
        pthread_cond_wait(&rt->cond, &rt->lock);
    if (!rc)
        rc = rt->first_error;
    pthread_mutex_unlock(&rt->lock);
    rt->started = true;
    if (rc < 0) {
        join_threads(rt, started);
        rt->started = false;
        rt->threads_ready = 0;
        rt->first_error = 0;
    }
    return rc;
}

/* Runs every queued task to completion, each worker's in its own name on the
 * calling thread, until a whole round finds nothing or the bound is hit. */
static void drain(fdn_runtime *rt)
{
    fdn_runtime_drain_report *rep = &rt->report;
    for (int pass = 0; pass < DRAIN_MAX_PASSES; pass++) {
        uint64_t ran = 0;
        for (int i = 0; i < rt->num_workers; i++) {
            fdn_worker *w = rt->workers[i];
            fdn__worker_bind(w, false);
            ran += fdn__worker_drain_pass(w);
            fdn__worker_unbind(w);
        }
        rep->tasks_drained += ran;
        if (!ran)
            break;
    }
    for (int i = 0; i < rt->num_workers; i++) {
        fdn_worker *w = rt->workers[i];
        fdn__worker_bind(w, false);
        rep->tasks_abandoned += fdn__worker_queued(w);
        rep->timers_cancelled += fdn__worker_cancel_timers(w);
        fdn__worker_unbind(w);
    }
}

int fdn_runtime_stop(fdn_runtime *rt)
{
    if (rt->stopped)
        return 0;
    for (int i = 0; i < rt->num_workers; i++)
        if (atomic_load(&rt->workers[i]->attached))
            return FDN_ERR(-EBUSY, "worker %d is still attached to an application thread", i);
    if (fdn_worker_current())
        return FDN_ERR(-EDEADLK, "fdn_runtime_stop called from worker %d",
                       fdn_worker_index(fdn_worker_current()));

    /* Foreign threads may no longer post; workers may, until they are joined
     * and the drain has run what they posted. */
    for (int i = 0; i < rt->num_workers; i++)
        fdn__worker_set_post_state(rt->workers[i], FDN__POST_WORKERS_ONLY);
    if (rt->started)
        join_threads(rt, rt->num_workers);
    drain(rt);
    for (int i = 0; i < rt->num_workers; i++)
        fdn__worker_set_post_state(rt->workers[i], FDN__POST_CLOSED);
    rt->stopped = true;
    return 0;
}

void fdn_runtime_drain_report_get(const fdn_runtime *rt, fdn_runtime_drain_report *out)
{
    *out = rt->report;
}

void fdn_runtime_destroy(fdn_runtime *rt)
{
    if (!rt)
        return;
    if (fdn_runtime_stop(rt) < 0)
        return; /* still attached or called from a worker: freeing would be unsafe */
    for (int i = 0; i < rt->num_workers; i++)
        fdn__worker_destroy(rt->workers[i]);
    pthread_cond_destroy(&rt->cond);
    pthread_mutex_destroy(&rt->lock);
    free(rt->workers);
    free(rt);
}

int fdn_runtime_num_workers(const fdn_runtime *rt) { return rt->num_workers; }

fdn_worker *fdn_runtime_worker(fdn_runtime *rt, int index)
{
    return index >= 0 && index < rt->num_workers ? rt->workers[index] : NULL;
}

int fdn_worker_attach(fdn_worker *w)
{
    if (!w->app_driven)
        return FDN_ERR(-EINVAL, "worker %d is runtime-driven", w->index);
    if (w->rt->stopped)
        return FDN_ERR(-ESHUTDOWN, "the runtime of worker %d is stopped", w->index);
    bool expected = false;
    if (!atomic_compare_exchange_strong(&w->attached, &expected, true))
        return FDN_ERR(-EBUSY, "worker %d is already attached", w->index);
    sched_getaffinity(0, sizeof w->saved_affinity, &w->saved_affinity);
    int rc = w->cpu >= 0 ? fdn_pin_current_thread(w->cpu) : 0;
    if (rc == 0)
        rc = fdn__worker_bind(w, true);
    if (rc < 0) {
        sched_setaffinity(0, sizeof w->saved_affinity, &w->saved_affinity);
        atomic_store(&w->attached, false);
    }
    return rc;
}

int fdn_worker_detach(fdn_worker *w)
{
    if (fdn_worker_current() != w)
        return FDN_ERR(-EPERM, "worker %d detached from a thread that does not own it",
                       w->index);
    if (w->inflight)
        return FDN_ERR(-EBUSY, "worker %d has %u I/O operations in flight", w->index,
                       w->inflight);
    fdn__worker_unbind(w);
    sched_setaffinity(0, sizeof w->saved_affinity, &w->saved_affinity);
    atomic_store(&w->attached, false);
    return 0;
}
