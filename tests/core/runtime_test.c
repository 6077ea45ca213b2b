/* Runtimes with threads of their own and mixed with application-driven
 * workers: start/stop cycles, cross-worker traffic under each idle strategy,
 * many producers, pools across workers, and the drain at shutdown. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#include <fdn/fdn.h>

#include "test.h"

static int allowed_cpus(void)
{
    cpu_set_t set;
    sched_getaffinity(0, sizeof set, &set);
    return CPU_COUNT(&set);
}

/* ---- Ping-pong between two workers -------------------------------------- */

struct pingpong {
    fdn_task task;
    fdn_runtime *rt;
    uint64_t remaining;     /* hops left; touched only by the worker running the task */
    uint64_t hops;
    atomic_bool done;
    int wrong_cpu;          /* a hop ran off its worker's CPU */
};

static int hop(fdn_worker *w, fdn_task *t)
{
    struct pingpong *pp = t->arg;
    if (fdn_worker_cpu(w) >= 0 && sched_getcpu() != fdn_worker_cpu(w))
        pp->wrong_cpu++;
    pp->hops++;
    if (--pp->remaining == 0) {
        atomic_store_explicit(&pp->done, true, memory_order_release);
        return FDN_TASK_DONE;
    }
    fdn_worker *other = fdn_runtime_worker(pp->rt, 1 - fdn_worker_index(w));
    /* The other worker drains its ring every pass, so a full ring is transient. */
    while (fdn_worker_post(other, t) == -EAGAIN)
        ;
    return FDN_TASK_DONE;
}

static void wait_done(atomic_bool *done)
{
    while (!atomic_load_explicit(done, memory_order_acquire))
        usleep(100);
}

static void pingpong_runtime(fdn_idle_strategy idle, bool pin, uint64_t hops)
{
    fdn_runtime_config cfg = {.workers = 2, .idle = idle, .no_pinning = !pin};
    fdn_runtime *rt;
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    CHECK_OK(fdn_runtime_start(rt));
    CHECK_EQ(fdn_runtime_start(rt), -EALREADY);
    struct pingpong pp = {.rt = rt, .remaining = hops};
    fdn_task_init(&pp.task, hop, &pp, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_worker_post(fdn_runtime_worker(rt, 0), &pp.task));
    wait_done(&pp.done);
    CHECK_EQ(pp.hops, hops);
    CHECK_EQ(pp.wrong_cpu, 0);
    CHECK_OK(fdn_runtime_stop(rt));
    fdn_worker_stats s0, s1;
    fdn_worker_stats_get(fdn_runtime_worker(rt, 0), &s0);
    fdn_worker_stats_get(fdn_runtime_worker(rt, 1), &s1);
    CHECK_EQ(s0.tasks_run + s1.tasks_run, hops);
    if (idle == FDN_IDLE_SLEEP)
        CHECK(s0.sleeps + s1.sleeps > 0);
    if (idle == FDN_IDLE_BUSY_POLL) /* nobody sleeps, so nobody is woken */
        CHECK_EQ(s0.wakeups_sent + s1.wakeups_sent, 0);
    fdn_runtime_destroy(rt);
}

static void test_pingpong_each_idle_strategy(void)
{
    bool pin = allowed_cpus() >= 2;
    pingpong_runtime(FDN_IDLE_SLEEP, pin, 20000);
    pingpong_runtime(FDN_IDLE_SPIN_THEN_SLEEP, pin, 20000);
    pingpong_runtime(FDN_IDLE_BUSY_POLL, pin, 200000);
}

static void test_start_stop_cycles(void)
{
    for (int i = 0; i < 20; i++) {
        fdn_runtime_config cfg = {.workers = 3, .no_pinning = true, .idle = i % 3};
        fdn_runtime *rt;
        CHECK_OK(fdn_runtime_create(&cfg, &rt));
        CHECK_EQ(fdn_runtime_num_workers(rt), 3);
        CHECK_OK(fdn_runtime_start(rt));
        CHECK_OK(fdn_runtime_stop(rt));
        CHECK_OK(fdn_runtime_stop(rt)); /* idempotent */
        fdn_runtime_destroy(rt);
    }
}

/* ---- Many producers ------------------------------------------------------ */

#define PRODUCERS 4
#define PER_PRODUCER 50000

struct counted {
    fdn_task task;
    uint64_t *counter;  /* owned by the receiving worker: no atomics needed */
};

static int bump(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct counted *c = t->arg;
    (*c->counter)++;
    return FDN_TASK_DONE;
}

struct producer {
    fdn_worker *target;
    struct counted *items;
    uint64_t full;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        int rc;
        while ((rc = fdn_worker_post(p->target, &p->items[i].task)) == -EAGAIN)
            p->full++;
        CHECK_OK(rc);
    }
    return NULL;
}

static void test_many_foreign_producers(void)
{
    fdn_runtime_config cfg = {.workers = 1, .no_pinning = true, .ring_entries = 256};
    fdn_runtime *rt;
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    CHECK_OK(fdn_runtime_start(rt));
    uint64_t counter = 0;
    struct producer prod[PRODUCERS];
    pthread_t th[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        prod[i] = (struct producer){.target = fdn_runtime_worker(rt, 0)};
        prod[i].items = calloc(PER_PRODUCER, sizeof *prod[i].items);
        for (int j = 0; j < PER_PRODUCER; j++) {
            prod[i].items[j].counter = &counter;
            fdn_task_init(&prod[i].items[j].task, bump, &prod[i].items[j], j % FDN_PRIO_CLASSES);
        }
        pthread_create(&th[i], NULL, produce, &prod[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(th[i], NULL);
    CHECK_OK(fdn_runtime_stop(rt)); /* whatever is still queued is drained */
    CHECK_EQ(counter, (uint64_t)PRODUCERS * PER_PRODUCER);
    fdn_worker_stats st;
    fdn_worker_stats_get(fdn_runtime_worker(rt, 0), &st);
    fdn_runtime_drain_report rep;
    fdn_runtime_drain_report_get(rt, &rep);
    CHECK_EQ(st.posts_received, (uint64_t)PRODUCERS * PER_PRODUCER);
    CHECK_EQ(rep.tasks_abandoned, 0);
    for (int i = 0; i < PRODUCERS; i++)
        free(prod[i].items);
    fdn_runtime_destroy(rt);
}

/* ---- An application thread drives worker 0, the runtime worker 1 --------- */

static void test_app_driven_with_runtime_worker(void)
{
    fdn_runtime_config cfg = {
        .workers = 2,
        .app_driven_workers = 1,
        .no_pinning = allowed_cpus() < 2,
        .idle = FDN_IDLE_SLEEP,
    };
    fdn_runtime *rt;
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    CHECK_OK(fdn_runtime_start(rt));
    fdn_worker *w0 = fdn_runtime_worker(rt, 0);
    CHECK_EQ(fdn_worker_attach(fdn_runtime_worker(rt, 1)), -EINVAL);
    CHECK_OK(fdn_worker_attach(w0));
    /* An odd number of hops ends on worker 0, so the wait below always has a
     * post to wake it for the last one. */
    struct pingpong pp = {.rt = rt, .remaining = 10001};
    fdn_task_init(&pp.task, hop, &pp, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_worker_schedule(w0, &pp.task));
    while (!atomic_load_explicit(&pp.done, memory_order_acquire)) {
        if (fdn_worker_progress(w0) == 0)
            CHECK_OK(fdn_worker_wait(w0, -1));
    }
    CHECK_EQ(pp.hops, 10001);
    CHECK_EQ(pp.wrong_cpu, 0);
    CHECK_EQ(fdn_runtime_stop(rt), -EBUSY);
    CHECK_OK(fdn_worker_detach(w0));
    CHECK_OK(fdn_runtime_stop(rt));
    fdn_runtime_destroy(rt);
}

/* ---- Buffers allocated on one worker, freed on another -------------------- */

#define MSGS 20000

struct carrier {
    fdn_task task;
    fdn_runtime *rt;
    fdn_msg *msg;
    int sent;
    atomic_int freed;
};

static int free_on_worker1(fdn_worker *w, fdn_task *t)
{
    struct carrier *c = t->arg;
    CHECK_EQ(fdn_worker_index(w), 1);
    CHECK_EQ(fdn_msg_data(c->msg)[0], (uint8_t)(c->sent & 0xff));
    fdn_msg_free(c->msg);
    c->msg = NULL;
    atomic_fetch_add_explicit(&c->freed, 1, memory_order_release);
    return FDN_TASK_DONE;
}

/* Worker 0 sends MSGS messages from its pool, one in flight at a time, each
 * carried by c->task to worker 1, which frees it there. */
static int send_from_worker0(fdn_worker *w, fdn_task *t)
{
    struct carrier *c = t->arg;
    CHECK_EQ(fdn_worker_index(w), 0);
    if (c->sent == MSGS)
        return FDN_TASK_DONE;
    if (atomic_load_explicit(&c->freed, memory_order_acquire) != c->sent)
        return FDN_TASK_YIELD;
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(w), 100 + (size_t)(c->sent % 5000), &c->msg));
    fdn_msg_data(c->msg)[0] = (uint8_t)(++c->sent & 0xff);
    fdn_task_init(&c->task, free_on_worker1, c, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_worker_post(fdn_runtime_worker(c->rt, 1), &c->task));
    return FDN_TASK_YIELD;
}

static void test_pool_buffers_cross_workers(void)
{
    fdn_runtime_config cfg = {.workers = 2, .no_pinning = true, .idle = FDN_IDLE_BUSY_POLL};
    fdn_runtime *rt;
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    CHECK_OK(fdn_runtime_start(rt));
    struct carrier c = {.rt = rt};
    fdn_task sender;
    fdn_task_init(&sender, send_from_worker0, &c, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_worker_post(fdn_runtime_worker(rt, 0), &sender));
    while (atomic_load_explicit(&c.freed, memory_order_acquire) != MSGS)
        usleep(100);
    CHECK_OK(fdn_runtime_stop(rt));
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(fdn_runtime_worker(rt, 0)), &ps);
    CHECK_EQ(ps.allocs, MSGS);
    CHECK_EQ(ps.remote_frees, MSGS);
    CHECK_EQ(ps.buffers_in_use, 0);
    fdn_runtime_destroy(rt); /* destroy checks the pool is empty (ASan: no leak) */
}

/* ---- Stop drains what is queued, refuses what comes after ---------------- */

static atomic_int drained_runs;

static int count_and_repost(fdn_worker *w, fdn_task *t)
{
    atomic_fetch_add(&drained_runs, 1);
    fdn_runtime *rt = t->arg;
    if (fdn_worker_index(w) == 0) {
        /* During the drain, a task may still hand work to another worker. */
        fdn_task_init(t, count_and_repost, rt, FDN_PRIO_DEFAULT);
        CHECK_OK(fdn_worker_post(fdn_runtime_worker(rt, 1), t));
    }
    return FDN_TASK_DONE;
}

static int never_done(fdn_worker *w, fdn_task *t)
{
    (void)w;
    (void)t;
    return FDN_TASK_YIELD;
}

static int nothing(fdn_worker *w, fdn_task *t)
{
    (void)w;
    (void)t;
    return FDN_TASK_DONE;
}

static void test_stop_drains_and_reports(void)
{
    /* Both workers application-driven and never driven: everything posted
     * stays queued until stop. */
    fdn_runtime_config cfg = {.workers = 2, .app_driven_workers = 2, .no_pinning = true};
    fdn_runtime *rt;
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    fdn_task tasks[100];
    for (int i = 0; i < 100; i++) {
        fdn_task_init(&tasks[i], count_and_repost, rt, i % FDN_PRIO_CLASSES);
        CHECK_OK(fdn_worker_post(fdn_runtime_worker(rt, 0), &tasks[i]));
    }
    fdn_task forever;
    fdn_task_init(&forever, never_done, NULL, FDN_PRIO_LOWEST);
    CHECK_OK(fdn_worker_post(fdn_runtime_worker(rt, 1), &forever));

    /* A timer armed on worker 1 by its owner, then left armed. */
    fdn_worker *w1 = fdn_runtime_worker(rt, 1);
    CHECK_OK(fdn_worker_attach(w1));
    fdn_timer timer;
    fdn_timer_init(&timer, nothing, NULL, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_timer_arm(w1, &timer, 60ull * 1000000000));
    CHECK_OK(fdn_worker_detach(w1));

    CHECK_OK(fdn_runtime_stop(rt));
    CHECK_EQ(atomic_load(&drained_runs), 200); /* 100 on worker 0, reposted to 1 */
    fdn_runtime_drain_report rep;
    fdn_runtime_drain_report_get(rt, &rep);
    CHECK(rep.tasks_drained >= 200);
    CHECK_EQ(rep.tasks_abandoned, 1);   /* the task that never finishes */
    CHECK_EQ(rep.timers_cancelled, 1);
    CHECK(!fdn_timer_armed(&timer));

    fdn_task late;
    fdn_task_init(&late, nothing, NULL, 0);
    CHECK_EQ(fdn_worker_post(fdn_runtime_worker(rt, 0), &late), -ESHUTDOWN);
    CHECK_EQ(fdn_worker_attach(fdn_runtime_worker(rt, 0)), -ESHUTDOWN);
    fdn_runtime_destroy(rt);
}

static int stop_from_worker(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct pingpong *pp = t->arg;
    CHECK_EQ(fdn_runtime_stop(pp->rt), -EDEADLK);
    atomic_store(&pp->done, true);
    return FDN_TASK_DONE;
}

static void test_config_errors(void)
{
    fdn_runtime *rt;
    fdn_runtime_config bad_ring = {.workers = 1, .no_pinning = true, .ring_entries = 3};
    CHECK_EQ(fdn_runtime_create(&bad_ring, &rt), -EINVAL);
    fdn_runtime_config bad_app = {.workers = 1, .app_driven_workers = 2, .no_pinning = true};
    CHECK_EQ(fdn_runtime_create(&bad_app, &rt), -EINVAL);
    fdn_runtime_config bad_idle = {.workers = 1, .no_pinning = true, .idle = 42};
    CHECK_EQ(fdn_runtime_create(&bad_idle, &rt), -EINVAL);

    fdn_runtime_config ok = {.workers = 1, .no_pinning = true};
    CHECK_OK(fdn_runtime_create(&ok, &rt));
    CHECK(fdn_runtime_worker(rt, 1) == NULL);
    CHECK(fdn_runtime_worker(rt, -1) == NULL);
    CHECK_OK(fdn_runtime_start(rt));
    struct pingpong pp = {.rt = rt};
    fdn_task_init(&pp.task, stop_from_worker, &pp, 0);
    CHECK_OK(fdn_worker_post(fdn_runtime_worker(rt, 0), &pp.task));
    wait_done(&pp.done);
    fdn_runtime_destroy(rt);
}

/* ---- Placement from a synthetic machine ----------------------------------- */

static void test_synthetic_placement(void)
{
    fdn_topology *topo;
    CHECK_OK(fdn_topology_load_synthetic("pack:2 numa:2 core:4 pu:2", &topo));
    fdn_runtime_config cfg = {
        .workers = 4,
        .topology = topo,
        .placement = FDN_PLACE_SPREAD,
        .no_pinning = true, /* these CPUs do not exist here */
    };
    fdn_runtime *rt;
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    fdn_topology_destroy(topo); /* the runtime keeps no reference */
    int seen[4] = {0};
    for (int i = 0; i < 4; i++) {
        int node = fdn_worker_numa_node(fdn_runtime_worker(rt, i));
        CHECK(node >= 0 && node < 4);
        seen[node]++;
        CHECK_EQ(fdn_worker_cpu(fdn_runtime_worker(rt, i)), -1);
    }
    for (int i = 0; i < 4; i++)
        CHECK_EQ(seen[i], 1); /* spread: one worker per NUMA node */
    /* Memory on nodes this host lacks falls back to unbound, and works. */
    CHECK_OK(fdn_runtime_start(rt));
    CHECK_OK(fdn_runtime_stop(rt));
    fdn_runtime_destroy(rt);

    /* Pinned, the same placement names CPUs this host does not have. */
    CHECK_OK(fdn_topology_load_synthetic("pack:2 numa:2 core:4 pu:2", &topo));
    cfg.topology = topo;
    cfg.no_pinning = false;
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    fdn_topology_destroy(topo);
    int rc = fdn_runtime_start(rt);
    if (allowed_cpus() < 16)
        CHECK(rc < 0);
    fdn_runtime_destroy(rt);
}

int main(void)
{
    RUN(test_pingpong_each_idle_strategy);
    RUN(test_start_stop_cycles);
    RUN(test_many_foreign_producers);
    RUN(test_app_driven_with_runtime_worker);
    RUN(test_pool_buffers_cross_workers);
    RUN(test_stop_drains_and_reports);
    RUN(test_config_errors);
    RUN(test_synthetic_placement);
    return 0;
}
