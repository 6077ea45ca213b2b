/* The worker's state and its interface to the rest of core and to transports.
 * Internal: nothing here is part of the public API.
 *
 * Ownership: every field above the `shared` marker is read and written only
 * by the worker's owner thread (its runtime thread, the application thread
 * that attached it, or the thread draining it at stop). Fields below it are
 * atomics that other threads touch: the wake-up handshake, the stop flag and
 * counters that producers bump on their slow paths. */
#ifndef FDN_CORE_WORKER_INTERNAL_H
#define FDN_CORE_WORKER_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <fdn/runtime.h>

#include "base/compiler.h"
#include "core/ring.h"
#include "core/timer_heap.h"

/* An operation submitted to the worker's io_uring. Its address is the SQE's
 * user_data; the worker calls complete() for each of its CQEs, on the owner
 * thread. The op must stay alive until its last CQE has been delivered
 * (for multishot operations: until a CQE without IORING_CQE_F_MORE). */
struct fdn__io_op {
    void (*complete)(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe);
};

/* A source of events that are not io_uring completions (a shared-memory
 * ring, a device queue), polled by the worker on every progress pass. The
 * memory is the registrant's, typically embedded in a connection; it stays
 * registered from fdn__worker_add_poller() to fdn__worker_remove_poller().
 *
 * poll() runs on the owner thread once per pass, after completions and
 * before ready tasks, and returns how much work it did (0 when idle), so a
 * busy-polling worker keeps spinning while the source is active and a
 * spin-then-sleep worker sleeps only once every source is idle. It may make
 * callbacks into core, and may remove any poller, itself included.
 *
 * prepare_sleep() (may be NULL) runs when the worker is about to block in
 * the kernel, after it has published that it sleeps: it arms whatever makes
 * the source wake the worker (e.g. a "consumer sleeps" flag in shared memory
 * that tells the producer to signal an eventfd the worker reads), re-checks
 * the source behind a full fence, and returns false when work is already
 * there, in which case the worker does not block. It must not call back
 * into core. */
struct fdn__poller {
    int (*poll)(fdn_worker *w, struct fdn__poller *p);
    bool (*prepare_sleep)(fdn_worker *w, struct fdn__poller *p);
    struct fdn__poller *next, *prev;   /* the worker's list; private to it */
};

/* user_data of MSG_RING wake-ups: they carry no work, only end a wait. */
#define FDN__UD_WAKE 0ULL

struct fdn__run_list {
    fdn_task *head;
    fdn_task *tail;
};

/* Counters the owner writes with plain (relaxed load + relaxed store)
 * increments, so the hot path has no locked instruction, and any thread may
 * read. */
struct fdn__worker_counters {
    _Atomic uint64_t passes, tasks_run, tasks_yielded, posts_received;
    _Atomic uint64_t timers_fired, sleeps;
};

/* The fields are grouped by who writes them, one group per cache line or
 * more, so that posting to a worker does not take lines its owner writes on
 * every pass, and the other way round. */
struct fdn_worker {
    /* ---- read-mostly: set at creation, read by the owner and by posters ---- */
    fdn_runtime *rt;
    int index;
    int cpu;            /* kernel CPU to pin to, -1 when not pinned */
    int numa_node;      /* kernel NUMA node of the worker's memory */
    bool app_driven;
    size_t alloc_size;  /* bytes of this struct's NUMA-local mapping */
    int event_fd;       /* wake-ups from threads that have no ring */

    /* Inbound rings: in_spsc[i] carries tasks from worker i (NULL for i ==
     * index); in_mpsc carries tasks from threads that are not workers. */
    int num_peers;
    struct fdn__spsc **in_spsc;
    struct fdn__mpsc *in_mpsc;

    /* Configuration copied from the runtime (no pointer chase on the hot path). */
    fdn_idle_strategy idle;
    uint64_t spin_ns;
    uint64_t time_slice;      /* the task time slice, in TSC cycles when tsc_q16, else ns */
    uint32_t task_budget;
    uint32_t uring_entries;

    /* ---- owner only ---- */

    /* Run queue: one FIFO per priority class; bit p of mask set iff class p
     * has a task, so picking the most urgent class is one count-trailing-zeros. */
    _Alignas(FDN_CACHELINE) struct fdn__run_list runq[FDN_PRIO_CLASSES];
    uint32_t runq_mask;
    int running_prio;         /* class of the running task, FDN_PRIO_CLASSES when none */
    uint64_t slice_start;     /* the running task's first time read in should_yield(), or 0 */
    uint32_t yield_checks;    /* should_yield() calls by the running task */

    struct fdn__timer_heap timers;
    fdn_pool *pool;

    /* io_uring, set up on the owner thread (IORING_SETUP_SINGLE_ISSUER). */
    struct io_uring ring;
    bool ring_ready;
    bool can_msg_ring;
    bool deferred_taskrun;    /* IORING_SETUP_DEFER_TASKRUN: post completions on request */
    uint32_t inflight;        /* ops awaiting a final CQE, the eventfd read excluded */
    uint32_t inflight_passive; /* of those: passive ones (fdn__worker_io_begin_passive) */
    uint32_t passive_passes;  /* passes since completions were last asked for */
    uint32_t idle_passes;     /* passes in a row that found no work and did not check timers */
    bool timers_due;          /* the next pass checks timers (it follows a wait) */
    uint32_t tsc_q16;         /* fdn__tsc_cycles_per_ns_q16(), 0: no counter */
    uint64_t timer_gate_tsc;  /* no timer is due before the counter reaches it; 0: unknown */
    uint64_t event_buf;
    struct fdn__io_op event_read;

    struct fdn__poller *pollers;     /* registered pollers, a list */
    struct fdn__poller *poller_next; /* the poll loop's cursor (removal moves it) */

    pthread_t thread;         /* runtime-driven workers only */
    cpu_set_t saved_affinity; /* application thread's mask, restored at detach */

    struct fdn__worker_counters counters;

    /* ---- read by posters on every post; written only on sleep, wake-up,
     * attach and stop ---- */
    _Alignas(FDN_CACHELINE) _Atomic int sleeping;  /* owner is (about to be) blocked in the kernel */
    _Atomic int wake_pending;      /* a wake-up is on its way; others need not send one */
    _Atomic int ring_fd;           /* MSG_RING target; -1 while there is no ring */
    _Atomic int post_state;        /* FDN__POST_* */
    _Atomic bool stop_requested;
    _Atomic bool attached;         /* an application thread owns this worker */

    /* ---- written by posters ---- */
    _Alignas(FDN_CACHELINE) _Atomic int foreign_posters; /* non-worker threads inside a post */
    _Atomic uint64_t post_full;    /* posts refused with -EAGAIN */
    _Atomic uint64_t wakeups_sent; /* wake-ups sent to this worker */
};

enum {
    FDN__POST_OPEN = 0,      /* everyone may post */
    FDN__POST_WORKERS_ONLY,  /* stopping: only tasks run by the drain may post */
    FDN__POST_CLOSED,        /* stopped: every post fails with -ESHUTDOWN */
};

static inline void fdn__count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* ---- For core/runtime.c ---- */

struct fdn__worker_params {
    int index;
    int cpu;
    int numa_node;
    bool app_driven;
    int num_workers;
};

/* Creates a worker's state in memory on its NUMA node: run queue, timers,
 * inbound rings, pool, eventfd. No thread, no io_uring yet. */
int fdn__worker_create(fdn_runtime *rt, const fdn_runtime_config *cfg,
                       const struct fdn__worker_params *params, fdn_worker **out);

/* Frees the worker. Its pool must hold no buffers; if it still does, the pool
 * is leaked on purpose (freeing memory the application still references would
 * be worse) and -EBUSY returned. Caller: the thread that stopped the runtime. */
int fdn__worker_destroy(fdn_worker *w);

/* Binds the calling thread as owner: thread-local current worker, pool
 * adoption, and (setup_ring) the io_uring. Undo with fdn__worker_unbind. */
int fdn__worker_bind(fdn_worker *w, bool setup_ring);
void fdn__worker_unbind(fdn_worker *w);

/* One bounded drain step on the calling thread, which must be bound to w
 * (without a ring): takes a batch from the inbound rings and runs one task
 * budget. Returns the tasks run. */
uint64_t fdn__worker_drain_pass(fdn_worker *w);

/* Counts, and removes from the rings, what is still queued for w: called
 * once the drain gives up, so the report can say what was abandoned. */
uint64_t fdn__worker_queued(fdn_worker *w);

/* True when nothing is queued for w in any ring or its run queue. */
bool fdn__worker_quiescent(fdn_worker *w);

/* Disarms every timer; returns how many were armed. */
uint64_t fdn__worker_cancel_timers(fdn_worker *w);

/* Sets the post state (FDN__POST_*); for FDN__POST_WORKERS_ONLY it also waits
 * until no foreign thread is inside a post, so none can enqueue afterwards. */
void fdn__worker_set_post_state(fdn_worker *w, int state);

/* Takes a task off w's run queue if it is there (it was scheduled, or its
 * timer fired, and it has not run yet), so that the object holding it can be
 * freed. Returns whether it was queued. Owner thread; linear in the class. */
bool fdn__worker_cancel_task(fdn_worker *w, fdn_task *task);

/* Cancels a timer and takes its task off the run queue if it has fired and
 * not run yet: afterwards neither can run, and the timer may be freed. */
static inline void fdn__timer_stop(fdn_worker *w, fdn_timer *t)
{
    fdn_timer_cancel(w, t);
    fdn__worker_cancel_task(w, &t->task);
}

/* ---- For transports ---- */

/* A submission queue entry of w's ring, submitting what is queued first if
 * the queue is full. Owner thread only; never NULL once the ring is set up.
 * SQEs are submitted at the end of the current pass (or when the worker goes
 * to sleep), so a transport batches naturally by preparing several. */
struct io_uring_sqe *fdn__worker_sqe(fdn_worker *w);

/* Whether the worker is between tasks (polling its transports, reaping
 * completions) and no task of class prio or more urgent waits: work of
 * class prio done now, rather than queued, runs in the order the run queue
 * would have given it. */
static inline bool fdn__worker_class_free(const fdn_worker *w, unsigned prio)
{
    return w->running_prio == FDN_PRIO_CLASSES && !(w->runq_mask & ((2u << prio) - 1));
}

/* The worker's io_uring, for registering buffer rings. Owner thread only;
 * NULL while the worker has no ring (not attached). */
static inline struct io_uring *fdn__worker_ring(fdn_worker *w)
{
    return w->ring_ready ? &w->ring : NULL;
}

/* Counts an operation that will deliver a final CQE later; a worker with
 * operations in flight refuses to detach (its ring would go with it). */
static inline void fdn__worker_io_begin(fdn_worker *w) { w->inflight++; }
static inline void fdn__worker_io_end(fdn_worker *w) { w->inflight--; }

/* The same for a passive operation: one whose completion only reports a
 * rare event (a peer's death, a wake-up that comes only while the worker
 * sleeps), or a long-lived registration. With deferred task running, a
 * worker asks the kernel for completions on every pass while an active
 * operation is in flight, but while only passive ones are, on every
 * FDN__PASSIVE_REAP_PASSES-th pass and whenever it waits: a busy-polling
 * worker then makes no system call per pass, and still sees those events. */
#define FDN__PASSIVE_REAP_PASSES 128u
static inline void fdn__worker_io_begin_passive(fdn_worker *w)
{
    w->inflight++;
    w->inflight_passive++;
}
static inline void fdn__worker_io_end_passive(fdn_worker *w)
{
    w->inflight--;
    w->inflight_passive--;
}

/* Registers / unregisters a poller (struct fdn__poller). Owner thread only.
 * Removing one that is not registered is a no-op. */
void fdn__worker_add_poller(fdn_worker *w, struct fdn__poller *p);
void fdn__worker_remove_poller(fdn_worker *w, struct fdn__poller *p);

#endif
