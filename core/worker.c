/* The worker loop: inbound rings -> timers -> io_uring completions -> pollers
 * -> ready tasks by priority, then the idle strategy.
 *
 * Waking a sleeping worker follows a Dekker-style handshake. The owner
 * publishes `sleeping = 1`, issues a full fence and re-checks its rings
 * before blocking; a producer publishes its ring entry, issues a full fence
 * and then reads `sleeping`. At least one of them sees the other's write, so
 * either the owner finds the entry or the producer sends a wake-up. Among
 * several producers only the one that flips `wake_pending` from 0 to 1 sends
 * it. While the owner is busy (`sleeping == 0`) producers make no system
 * call at all.
 *
 * Pollers (shared-memory transports) run once per pass and take part in the
 * same handshake: before blocking, each publishes its own "sleeping" flag to
 * its producer and re-checks its source (prepare_sleep). */
#include "core/worker_internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <fdn/error.h>

#include "base/error.h"
#include "base/tsc.h"
#include "core/pool.h"
#include "numa/memory.h"

/* Tasks taken from one ring in one pass: bounds the time a flood from one
 * producer can hold the loop away from timers, I/O and urgent tasks. */
#define INBOUND_BATCH 64

/* should_yield() reads the clock on every this many calls. */
#define YIELD_CLOCK_EVERY 4u

/* A pass that found no work checks the timers only on every this many such
 * passes in a row (see fdn_worker_progress). */
#define IDLE_TIMER_CHECK_PASSES 16u

/* How far ahead the timer gate (see fire_timers) may reach: it bounds what
 * an error in the counter's calibration can delay a timer by, to a 1/1000
 * of this. */
#define TIMER_GATE_MAX_NS 100000u

static _Thread_local fdn_worker *current_worker;

uint64_t fdn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

fdn_worker *fdn_worker_current(void) { return current_worker; }
int fdn_worker_index(const fdn_worker *w) { return w->index; }
int fdn_worker_cpu(const fdn_worker *w) { return w->cpu; }
int fdn_worker_numa_node(const fdn_worker *w) { return w->numa_node; }
fdn_pool *fdn_worker_pool(fdn_worker *w) { return w->pool; }

/* ---- Run queue ----------------------------------------------------------- */

static void runq_push(fdn_worker *w, fdn_task *t)
{
    struct fdn__run_list *list = &w->runq[t->prio];
    t->next = NULL;
    t->queued = 1;
    if (list->tail)
        list->tail->next = t;
    else
        list->head = t;
    list->tail = t;
    w->runq_mask |= 1u << t->prio;
}

static fdn_task *runq_pop(fdn_worker *w)
{
    int prio = __builtin_ctz(w->runq_mask);
    struct fdn__run_list *list = &w->runq[prio];
    fdn_task *t = list->head;
    list->head = t->next;
    if (!list->head) {
        list->tail = NULL;
        w->runq_mask &= ~(1u << prio);
    }
    t->next = NULL;
    t->queued = 0;
    return t;
}

int fdn_worker_schedule(fdn_worker *w, fdn_task *task)
{
    if (fdn__unlikely(current_worker != w))
        return FDN_ERR(-EPERM, "worker %d scheduled from a thread that does not own it", w->index);
    if (task->queued)
        return -EALREADY;
    runq_push(w, task);
    return 0;
}

bool fdn__worker_cancel_task(fdn_worker *w, fdn_task *task)
{
    if (!task->queued)
        return false;
    struct fdn__run_list *list = &w->runq[task->prio];
    fdn_task *prev = NULL;
    for (fdn_task *t = list->head; t; prev = t, t = t->next) {
        if (t != task)
            continue;
        if (prev)
            prev->next = t->next;
        else
            list->head = t->next;
        if (list->tail == t)
            list->tail = prev;
        if (!list->head)
            w->runq_mask &= ~(1u << task->prio);
        t->next = NULL;
        t->queued = 0;
        return true;
    }
    return false;
}

bool fdn_worker_should_yield(fdn_worker *w)
{
    /* A more urgent class than the running one has work. */
    if (w->runq_mask & ((1u << w->running_prio) - 1))
        return true;
    /* The clock costs about 25 ns through the vDSO, as much as delivering
     * a small message: time is read on every YIELD_CLOCK_EVERY-th check,
     * from the TSC where it is usable, and the slice starts at the first
     * read, so tasks that ask rarely (or run one short item) pay for none. */
    if (++w->yield_checks % YIELD_CLOCK_EVERY)
        return false;
    uint64_t now = w->tsc_q16 ? fdn__tsc_now() : fdn_now_ns();
    if (!w->slice_start) {
        w->slice_start = now;
        return false;
    }
    return now - w->slice_start >= w->time_slice;
}

/* Runs up to the task budget, most urgent first. A task is not touched after
 * it returns FDN_TASK_DONE: its memory may already be gone. */
static unsigned run_tasks(fdn_worker *w)
{
    if (!w->runq_mask)
        return 0;
    unsigned ran = 0, yielded = 0;
    while (w->runq_mask && ran < w->task_budget) {
        fdn_task *t = runq_pop(w);
        w->running_prio = t->prio;
        w->slice_start = 0;
        w->yield_checks = 0;
        int rc = t->fn(w, t);
        ran++;
        if (rc == FDN_TASK_YIELD) {
            yielded++;
            if (!t->queued) /* it may have rescheduled itself already */
                runq_push(w, t);
        }
    }
    w->running_prio = FDN_PRIO_CLASSES;
    fdn__count(&w->counters.tasks_run, ran);
    fdn__count(&w->counters.tasks_yielded, yielded);
    return ran;
}

/* ---- Inbound rings ------------------------------------------------------- */

static unsigned drain_inbound(fdn_worker *w)
{
    void *batch[INBOUND_BATCH];
    unsigned total = 0;
    for (int i = 0; i < w->num_peers; i++) {
        struct fdn__spsc *r = w->in_spsc[i];
        if (!r)
            continue;
        unsigned n = fdn__spsc_dequeue_burst(r, batch, INBOUND_BATCH);
        for (unsigned j = 0; j < n; j++)
            runq_push(w, batch[j]);
        total += n;
    }
    unsigned n = fdn__mpsc_dequeue_burst(w->in_mpsc, batch, INBOUND_BATCH);
    for (unsigned j = 0; j < n; j++)
        runq_push(w, batch[j]);
    total += n;
    if (total)
        fdn__count(&w->counters.posts_received, total);
    return total;
}

static bool inbound_empty(const fdn_worker *w)
{
    for (int i = 0; i < w->num_peers; i++)
        if (w->in_spsc[i] && !fdn__spsc_empty(w->in_spsc[i]))
            return false;
    return fdn__mpsc_empty(w->in_mpsc);
}

bool fdn__worker_quiescent(fdn_worker *w) { return !w->runq_mask && inbound_empty(w); }

/* ---- Posting ------------------------------------------------------------- */

static void wake_by_eventfd(fdn_worker *target)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
    ssize_t rc = write(target->event_fd, &one, sizeof one);
    (void)rc;
}

/* Wakes target if it sleeps. `self` is the posting worker (or NULL): when it
 * has a ring, MSG_RING posts a completion straight into the target's ring;
 * otherwise an eventfd write does the same through the target's pending read. */
static void wake_if_sleeping(fdn_worker *target, fdn_worker *self)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (!atomic_load_explicit(&target->sleeping, memory_order_relaxed))
        return;
    if (atomic_exchange_explicit(&target->wake_pending, 1, memory_order_acq_rel))
        return;
    atomic_fetch_add_explicit(&target->wakeups_sent, 1, memory_order_relaxed);
    int fd = atomic_load_explicit(&target->ring_fd, memory_order_acquire);
    if (self && self->ring_ready && self->can_msg_ring && fd >= 0) {
        struct io_uring_sqe *sqe = fdn__worker_sqe(self);
        io_uring_prep_msg_ring(sqe, fd, 0, FDN__UD_WAKE, 0);
        sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
        sqe->user_data = FDN__UD_WAKE;
        if (io_uring_submit(&self->ring) >= 0)
            return;
    }
    wake_by_eventfd(target);
}

static unsigned enqueue_foreign(fdn_worker *target, fdn_task *const *tasks, unsigned n,
                                int *err)
{
    /* The poster count lets stop() wait out posts that passed the state
     * check before it closed the worker, so none lands after the drain. */
    atomic_fetch_add_explicit(&target->foreign_posters, 1, memory_order_seq_cst);
    unsigned k = 0;
    if (atomic_load_explicit(&target->post_state, memory_order_seq_cst) == FDN__POST_OPEN)
        k = fdn__mpsc_enqueue_burst(target->in_mpsc, (void *const *)tasks, n);
    else
        *err = -ESHUTDOWN;
    atomic_fetch_sub_explicit(&target->foreign_posters, 1, memory_order_release);
    return k;
}

int fdn_worker_post_batch(fdn_worker *target, fdn_task *const *tasks, unsigned n)
{
    fdn_worker *self = current_worker;
    if (n == 0)
        return 0;
    if (self == target) {
        for (unsigned i = 0; i < n; i++)
            if (!tasks[i]->queued)
                runq_push(self, tasks[i]);
        return (int)n;
    }
    int err = 0;
    unsigned k;
    if (self && self->rt == target->rt) {
        if (atomic_load_explicit(&target->post_state, memory_order_acquire) == FDN__POST_CLOSED)
            return -ESHUTDOWN;
        k = fdn__spsc_enqueue_burst(target->in_spsc[self->index], (void *const *)tasks, n);
    } else {
        k = enqueue_foreign(target, tasks, n, &err);
        if (err)
            return err;
    }
    if (k < n)
        atomic_fetch_add_explicit(&target->post_full, 1, memory_order_relaxed);
    if (k)
        wake_if_sleeping(target, self);
    return (int)k;
}

int fdn_worker_post(fdn_worker *target, fdn_task *task)
{
    int rc = fdn_worker_post_batch(target, &task, 1);
    return rc == 0 ? -EAGAIN : rc < 0 ? rc : 0;
}

void fdn__worker_set_post_state(fdn_worker *w, int state)
{
    atomic_store_explicit(&w->post_state, state, memory_order_seq_cst);
    while (atomic_load_explicit(&w->foreign_posters, memory_order_acquire))
        fdn__cpu_relax();
}

/* ---- Timers -------------------------------------------------------------- */

int fdn_timer_arm(fdn_worker *w, fdn_timer *t, uint64_t delay_ns)
{
    if (fdn__unlikely(current_worker != w))
        return FDN_ERR(-EPERM, "timer armed on worker %d from a thread that does not own it",
                       w->index);
    int rc = fdn__timer_heap_rearm(&w->timers, t, fdn_now_ns() + delay_ns);
    if (rc == 0 && fdn__timer_heap_min(&w->timers) == t)
        w->timer_gate_tsc = 0;   /* earlier than the gate was set for */
    return rc;
}

int fdn_timer_cancel(fdn_worker *w, fdn_timer *t)
{
    if (fdn__unlikely(current_worker != w))
        return FDN_ERR(-EPERM, "timer cancelled on worker %d from a thread that does not own it",
                       w->index);
    if (!fdn_timer_armed(t))
        return -ENOENT;
    fdn__timer_heap_remove(&w->timers, t);
    return 0;
}

/* After a clock read at now: no timer is due before the counter reaches
 * timer_gate_tsc, set a little short of the earliest deadline (or of
 * TIMER_GATE_MAX_NS, when that is further). 0 without a usable counter. */
static void set_timer_gate(fdn_worker *w, uint64_t now)
{
    w->timer_gate_tsc = 0;
    if (!w->tsc_q16)
        return;
    fdn_timer *next = fdn__timer_heap_min(&w->timers);
    uint64_t ahead = next && next->deadline_ns - now < TIMER_GATE_MAX_NS
                         ? next->deadline_ns - now
                         : TIMER_GATE_MAX_NS;
    uint64_t cycles = ahead * w->tsc_q16 >> 16;
    w->timer_gate_tsc = fdn__tsc_now() + cycles - cycles / 1024;
}

/* Queues the tasks of expired timers. The clock is read only once the
 * counter has passed the gate: a busy worker checks its timers on every
 * pass, and a counter read costs a fraction of a clock read. */
static unsigned fire_timers(fdn_worker *w)
{
    if (!fdn__timer_heap_count(&w->timers))
        return 0;
    if (w->timer_gate_tsc && fdn__tsc_now() < w->timer_gate_tsc)
        return 0;
    uint64_t now = fdn_now_ns();
    unsigned fired = 0;
    fdn_timer *t;
    while ((t = fdn__timer_heap_pop_expired(&w->timers, now))) {
        if (!t->task.queued)
            runq_push(w, &t->task);
        fired++;
    }
    if (fired)
        fdn__count(&w->counters.timers_fired, fired);
    set_timer_gate(w, now);
    return fired;
}

uint64_t fdn__worker_cancel_timers(fdn_worker *w)
{
    uint64_t armed = fdn__timer_heap_count(&w->timers);
    fdn__timer_heap_fini(&w->timers);
    fdn__timer_heap_init(&w->timers);
    return armed;
}

/* ---- io_uring ------------------------------------------------------------ */

struct io_uring_sqe *fdn__worker_sqe(fdn_worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    while (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

static void arm_event_read(fdn_worker *w)
{
    struct io_uring_sqe *sqe = fdn__worker_sqe(w);
    io_uring_prep_read(sqe, w->event_fd, &w->event_buf, sizeof w->event_buf, 0);
    io_uring_sqe_set_data(sqe, &w->event_read);
}

/* The eventfd read completed: someone woke us. Read again for the next one. */
static void event_read_complete(fdn_worker *w, struct fdn__io_op *op,
                                const struct io_uring_cqe *cqe)
{
    (void)op;
    (void)cqe;
    if (w->ring_ready)
        arm_event_read(w);
}

/* ---- Pollers ------------------------------------------------------------ */

void fdn__worker_add_poller(fdn_worker *w, struct fdn__poller *p)
{
    p->prev = NULL;
    p->next = w->pollers;
    if (w->pollers)
        w->pollers->prev = p;
    w->pollers = p;
}

void fdn__worker_remove_poller(fdn_worker *w, struct fdn__poller *p)
{
    if (!p->prev && w->pollers != p)
        return; /* not registered */
    if (w->poller_next == p)
        w->poller_next = p->next;
    if (p->prev)
        p->prev->next = p->next;
    else
        w->pollers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->next = p->prev = NULL;
}

/* The cursor lives in the worker so that a poll() which removes the next
 * poller (closing another connection) does not leave the loop on freed memory. */
static unsigned run_pollers(fdn_worker *w)
{
    unsigned work = 0;
    for (struct fdn__poller *p = w->pollers; p; p = w->poller_next) {
        w->poller_next = p->next;
        int n = p->poll(w, p);
        if (n > 0)
            work += (unsigned)n;
    }
    w->poller_next = NULL;
    return work;
}

/* True when every poller agrees to block (see struct fdn__poller). */
static bool pollers_may_sleep(fdn_worker *w)
{
    for (struct fdn__poller *p = w->pollers; p; p = p->next)
        if (p->prepare_sleep && !p->prepare_sleep(w, p))
            return false;
    return true;
}

static unsigned reap_completions(fdn_worker *w)
{
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&w->ring, head, cqe) {
        struct fdn__io_op *op = io_uring_cqe_get_data(cqe);
        if (op)
            op->complete(w, op, cqe);
        n++;
    }
    io_uring_cq_advance(&w->ring, n);
    return n;
}

static int setup_ring(fdn_worker *w)
{
    /* DEFER_TASKRUN: completions are posted only when the owner asks
     * (fdn_worker_progress calls io_uring_get_events while I/O is in flight,
     * and waiting asks too). Without it the kernel interrupts a busy-polling
     * worker to post each completion: measured with fdn-perf, 64 B ping-pong
     * p50 went from 17.5 to 6.7 us and p99 from milliseconds to 31 us. */
    struct io_uring_params p = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                 IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CLAMP,
    };
    int rc = io_uring_queue_init_params(w->uring_entries, &w->ring, &p);
    if (rc == -EINVAL) { /* kernel before 6.1: no DEFER_TASKRUN, maybe no SINGLE_ISSUER */
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CLAMP;
        rc = io_uring_queue_init_params(w->uring_entries, &w->ring, &p);
    }
    w->deferred_taskrun = rc == 0 && (p.flags & IORING_SETUP_DEFER_TASKRUN);
    if (rc < 0)
        return FDN_ERR(rc, "io_uring_setup failed for worker %d: %s (disabled by the "
                       "kernel.io_uring_disabled sysctl, a seccomp filter, or a kernel "
                       "older than 5.19?)", w->index, fdn_strerror(rc));
    if (!(p.features & IORING_FEAT_EXT_ARG)) {
        io_uring_queue_exit(&w->ring);
        return FDN_ERR(-ENOSYS, "io_uring lacks IORING_FEAT_EXT_ARG (kernel 5.11+ needed)");
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&w->ring);
    w->can_msg_ring = probe && io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
    io_uring_free_probe(probe);
    w->ring_ready = true;
    arm_event_read(w);
    io_uring_submit(&w->ring);
    atomic_store_explicit(&w->ring_fd, w->ring.ring_fd, memory_order_release);
    return 0;
}

static void teardown_ring(fdn_worker *w)
{
    if (!w->ring_ready)
        return;
    atomic_store_explicit(&w->ring_fd, -1, memory_order_release);
    w->ring_ready = false;
    /* Closing the ring cancels the pending eventfd read; nothing else is in
     * flight (callers check inflight before detaching). */
    io_uring_queue_exit(&w->ring);
}

/* ---- The loop ------------------------------------------------------------ */

int fdn_worker_progress(fdn_worker *w)
{
    if (fdn__unlikely(current_worker != w))
        return FDN_ERR(-EPERM, "worker %d progressed from a thread that does not own it",
                       w->index);
    unsigned work = drain_inbound(w);
    if (w->ring_ready) {
        /* With deferred task running, completions are posted only on
         * request: ask while I/O is in flight (only now and then while all
         * of it is passive). A worker that only moves tasks between rings,
         * or polls shared memory, makes no system call here. */
        if (w->deferred_taskrun && w->inflight &&
            (w->inflight > w->inflight_passive ||
             ++w->passive_passes >= FDN__PASSIVE_REAP_PASSES)) {
            w->passive_passes = 0;
            io_uring_get_events(&w->ring);
        }
        work += reap_completions(w);
    }
    if (w->pollers)
        work += run_pollers(w);
    work += run_tasks(w);
    if (w->ring_ready && io_uring_sq_ready(&w->ring))
        io_uring_submit(&w->ring);
    /* Timers last, and not on every idle pass: reading the clock costs
     * about 25 ns, as much as the rest of an idle pass, and a busy-polling
     * worker notices a message up to one pass late. So a pass that worked
     * (its replies are already on their way) or followed a wait checks
     * them, and otherwise every IDLE_TIMER_CHECK_PASSES-th pass does: a
     * timer fires at most that many idle passes late, well under a
     * microsecond. Timers that fire run their tasks on the next pass. */
    if (work || w->timers_due || ++w->idle_passes >= IDLE_TIMER_CHECK_PASSES) {
        w->idle_passes = 0;
        w->timers_due = false;
        work += fire_timers(w);
    }
    if (!work)
        work += (unsigned)fdn__pool_reclaim(w->pool);
    fdn__count(&w->counters.passes, 1);
    return (int)work;
}

/* Blocks in io_uring until a completion (work or a wake-up), the next timer,
 * or timeout_ns (< 0: none). Returns at once if work is already waiting. */
static int sleep_until_work(fdn_worker *w, int64_t timeout_ns)
{
    /* wake_pending is cleared here, before sleeping is published, and not on
     * the way out: a producer may set it after the owner decided not to sleep
     * (its wake-up then arrives as a spurious completion), and a flag left
     * set would make every later producer skip the wake-up the owner needs. */
    atomic_store_explicit(&w->wake_pending, 0, memory_order_relaxed);
    atomic_store_explicit(&w->sleeping, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    if (!fdn__worker_quiescent(w) || atomic_load(&w->stop_requested) ||
        !pollers_may_sleep(w)) {
        atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
        return 0;
    }
    fdn_timer *next = fdn__timer_heap_min(&w->timers);
    if (next) {
        uint64_t now = fdn_now_ns();
        int64_t until = next->deadline_ns > now ? (int64_t)(next->deadline_ns - now) : 0;
        if (timeout_ns < 0 || until < timeout_ns)
            timeout_ns = until;
    }
    int rc = 0;
    if (timeout_ns != 0) {
        struct __kernel_timespec ts = {
            .tv_sec = timeout_ns / 1000000000,
            .tv_nsec = timeout_ns % 1000000000,
        };
        struct io_uring_cqe *cqe;
        fdn__count(&w->counters.sleeps, 1);
        rc = io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1,
                                              timeout_ns > 0 ? &ts : NULL, NULL);
        if (rc == -ETIME || rc == -EINTR || rc > 0)
            rc = 0;
    }
    atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
    w->timers_due = true;   /* woken by a deadline, maybe */
    w->timer_gate_tsc = 0;
    return rc;
}

int fdn_worker_wait(fdn_worker *w, int64_t timeout_ns)
{
    if (fdn__unlikely(current_worker != w))
        return FDN_ERR(-EPERM, "worker %d waited on from a thread that does not own it",
                       w->index);
    if (!w->ring_ready)
        return FDN_ERR(-EINVAL, "worker %d has no io_uring (not attached?)", w->index);
    return sleep_until_work(w, timeout_ns);
}

int fdn_worker_run(fdn_worker *w)
{
    if (fdn__unlikely(current_worker != w || !w->ring_ready))
        return FDN_ERR(-EPERM, "worker %d run from a thread that does not own it", w->index);
    uint64_t idle_since = 0;
    while (!atomic_load_explicit(&w->stop_requested, memory_order_acquire)) {
        int rc = fdn_worker_progress(w);
        if (rc < 0)
            return rc;
        if (rc > 0) {
            idle_since = 0;
            continue;
        }
        if (w->idle == FDN_IDLE_BUSY_POLL) {
            fdn__cpu_relax();
            continue;
        }
        if (w->idle == FDN_IDLE_SPIN_THEN_SLEEP) {
            uint64_t now = fdn_now_ns();
            if (!idle_since)
                idle_since = now;
            if (now - idle_since < w->spin_ns) {
                fdn__cpu_relax();
                continue;
            }
        }
        idle_since = 0;
        rc = sleep_until_work(w, -1);
        if (rc < 0)
            return rc;
    }
    atomic_store_explicit(&w->stop_requested, false, memory_order_relaxed);
    return 0;
}

void fdn_worker_stop(fdn_worker *w)
{
    atomic_store_explicit(&w->stop_requested, true, memory_order_release);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&w->sleeping, memory_order_relaxed))
        wake_by_eventfd(w);
}

void fdn_worker_stats_get(const fdn_worker *w, fdn_worker_stats *out)
{
    const struct fdn__worker_counters *c = &w->counters;
    out->passes = atomic_load_explicit(&c->passes, memory_order_relaxed);
    out->tasks_run = atomic_load_explicit(&c->tasks_run, memory_order_relaxed);
    out->tasks_yielded = atomic_load_explicit(&c->tasks_yielded, memory_order_relaxed);
    out->posts_received = atomic_load_explicit(&c->posts_received, memory_order_relaxed);
    out->post_full = atomic_load_explicit(&w->post_full, memory_order_relaxed);
    out->timers_fired = atomic_load_explicit(&c->timers_fired, memory_order_relaxed);
    out->sleeps = atomic_load_explicit(&c->sleeps, memory_order_relaxed);
    out->wakeups_sent = atomic_load_explicit(&w->wakeups_sent, memory_order_relaxed);
}

/* ---- Life cycle ---------------------------------------------------------- */

/* All of a worker's memory (struct, ring pointer table, rings) comes from one
 * mapping on its NUMA node: the consumer side of every inbound ring is local. */
int fdn__worker_create(fdn_runtime *rt, const fdn_runtime_config *cfg,
                       const struct fdn__worker_params *params, fdn_worker **out)
{
    size_t spsc_size = fdn__align_up(fdn__spsc_memsize(cfg->ring_entries), FDN_CACHELINE);
    size_t mpsc_size = fdn__align_up(fdn__mpsc_memsize(cfg->ring_entries), FDN_CACHELINE);
    size_t table_size = fdn__align_up((size_t)params->num_workers * sizeof(void *), FDN_CACHELINE);
    size_t head_size = fdn__align_up(sizeof(fdn_worker), FDN_CACHELINE);
    size_t total = head_size + table_size + mpsc_size +
                   (size_t)(params->num_workers - 1) * spsc_size;

    bool bound;
    char *mem = fdn__numa_alloc(total, params->numa_node, &bound);
    if (!mem)
        return FDN_ERR(-ENOMEM, "cannot map %zu bytes for worker %d", total, params->index);
    fdn_worker *w = (fdn_worker *)mem;
    *w = (fdn_worker){
        .rt = rt,
        .index = params->index,
        .cpu = params->cpu,
        .numa_node = params->numa_node,
        .app_driven = params->app_driven,
        .alloc_size = total,
        .idle = cfg->idle,
        .spin_ns = cfg->spin_ns,
        .task_budget = cfg->task_budget,
        .tsc_q16 = fdn__tsc_cycles_per_ns_q16(),
        .uring_entries = cfg->uring_entries,
        .running_prio = FDN_PRIO_CLASSES,
        .num_peers = params->num_workers,
        .event_fd = -1,
        .event_read = {.complete = event_read_complete},
    };
    w->time_slice = cfg->time_slice_ns;
    if (w->tsc_q16)   /* in counter cycles; one too long to count (days) never ends */
        w->time_slice = cfg->time_slice_ns <= UINT64_MAX / w->tsc_q16
                            ? cfg->time_slice_ns * w->tsc_q16 >> 16
                            : UINT64_MAX;
    atomic_init(&w->ring_fd, -1);
    fdn__timer_heap_init(&w->timers);

    char *p = mem + head_size;
    w->in_spsc = (struct fdn__spsc **)(void *)p;
    p += table_size;
    w->in_mpsc = (struct fdn__mpsc *)(void *)p;
    fdn__mpsc_init(w->in_mpsc, cfg->ring_entries);
    p += mpsc_size;
    for (int i = 0; i < params->num_workers; i++) {
        if (i == params->index)
            continue;
        w->in_spsc[i] = (struct fdn__spsc *)(void *)p;
        fdn__spsc_init(w->in_spsc[i], cfg->ring_entries);
        p += spsc_size;
    }

    int rc;
    w->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->event_fd < 0) {
        rc = FDN_ERR(-errno, "eventfd: %s", fdn_strerror(errno));
        goto fail;
    }
    fdn_pool_config pool_cfg = cfg->pool;
    pool_cfg.bind_numa = params->numa_node >= 0;
    pool_cfg.numa_node = params->numa_node;
    rc = fdn_pool_create(&pool_cfg, &w->pool);
    if (rc < 0)
        goto fail;
    *out = w;
    return 0;
fail:
    if (w->event_fd >= 0)
        close(w->event_fd);
    fdn__numa_free(mem, total);
    return rc;
}

int fdn__worker_destroy(fdn_worker *w)
{
    int rc = 0;
    if (w->pool) {
        fdn_pool_adopt(w->pool);
        rc = fdn_pool_destroy(w->pool);
    }
    fdn__timer_heap_fini(&w->timers);
    close(w->event_fd);
    fdn__numa_free(w, w->alloc_size);
    return rc;
}

int fdn__worker_bind(fdn_worker *w, bool setup)
{
    if (current_worker && current_worker != w)
        return FDN_ERR(-EBUSY, "this thread already owns worker %d", current_worker->index);
    current_worker = w;
    fdn_pool_adopt(w->pool);
    if (setup && !w->ring_ready) {
        int rc = setup_ring(w);
        if (rc < 0) {
            current_worker = NULL;
            return rc;
        }
    }
    return 0;
}

void fdn__worker_unbind(fdn_worker *w)
{
    teardown_ring(w);
    if (current_worker == w)
        current_worker = NULL;
}

uint64_t fdn__worker_drain_pass(fdn_worker *w)
{
    drain_inbound(w);
    return run_tasks(w);
}

uint64_t fdn__worker_queued(fdn_worker *w)
{
    uint64_t n = 0;
    for (int p = 0; p < FDN_PRIO_CLASSES; p++)
        for (fdn_task *t = w->runq[p].head; t; t = t->next)
            n++;
    void *batch[INBOUND_BATCH];
    unsigned k;
    for (int i = 0; i < w->num_peers; i++)
        while (w->in_spsc[i] && (k = fdn__spsc_dequeue_burst(w->in_spsc[i], batch, INBOUND_BATCH)))
            n += k;
    while ((k = fdn__mpsc_dequeue_burst(w->in_mpsc, batch, INBOUND_BATCH)))
        n += k;
    return n;
}
