/* Workers: Foundation's schedulers.
 *
 * A worker is bound to one thread at a time (its owner) and, normally, pinned
 * to one CPU. It owns an io_uring, a timer heap, a run queue of ready tasks
 * ordered by priority class, a buffer pool on its NUMA node, and inbound
 * rings through which other threads hand it tasks. Everything a worker owns
 * is touched only by its owner thread: cross-worker work is a posted task,
 * never a lock.
 *
 * Tasks run to completion. A task that has more to do returns FDN_TASK_YIELD
 * and runs again after everything of higher priority and its peers of equal
 * priority; long tasks ask fdn_worker_should_yield() so one handler cannot
 * starve urgent ones.
 *
 * Workers come from a runtime (runtime.h), which either runs them on pinned
 * threads of its own or lets application threads attach and drive them with
 * fdn_worker_progress() / fdn_worker_wait() / fdn_worker_run(). */
#ifndef FDN_WORKER_H
#define FDN_WORKER_H

#include <stdbool.h>
#include <stdint.h>

#include <fdn/msg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fdn_worker fdn_worker;

/* Priority classes: 0 is the most urgent. Channels map onto these. */
#define FDN_PRIO_HIGHEST 0
#define FDN_PRIO_DEFAULT 4
#define FDN_PRIO_LOWEST 7
#define FDN_PRIO_CLASSES 8

/* Return values of a task function. */
#define FDN_TASK_DONE 0   /* finished; the worker no longer references the task */
#define FDN_TASK_YIELD 1  /* more to do: run again later at the same priority */

struct fdn_task;
typedef int (*fdn_task_fn)(fdn_worker *w, struct fdn_task *task);

/* A unit of work. The memory is the caller's (typically embedded in a larger
 * object, recovered with container_of-style arithmetic), so scheduling never
 * allocates. From schedule/post until the function returns FDN_TASK_DONE the
 * worker references the task: it must stay alive and must not be scheduled
 * again meanwhile. Fields are private after fdn_task_init(). */
typedef struct fdn_task {
    fdn_task_fn fn;
    void *arg;               /* free for the owner of the task */
    struct fdn_task *next;   /* run-queue link */
    uint8_t prio;
    uint8_t queued;
} fdn_task;

static inline void fdn_task_init(fdn_task *t, fdn_task_fn fn, void *arg, int prio)
{
    t->fn = fn;
    t->arg = arg;
    t->next = 0;
    t->prio = (uint8_t)(prio < FDN_PRIO_HIGHEST ? FDN_PRIO_HIGHEST
                        : prio > FDN_PRIO_LOWEST ? FDN_PRIO_LOWEST : prio);
    t->queued = 0;
}

/* Makes a task ready on the calling thread's own worker w. Owner thread only.
 * Returns 0, or -EALREADY if the task is already queued. */
int fdn_worker_schedule(fdn_worker *w, fdn_task *task);

/* Hands a task to worker target from any thread: through the single-producer
 * ring from the caller's worker when the caller is one of the runtime's
 * workers, otherwise through the target's shared inbound ring. A sleeping
 * target is woken (io_uring MSG_RING from a worker, an eventfd write from
 * other threads); a busy one is not disturbed by any system call.
 * Returns 0; -EAGAIN when the ring is full (the caller keeps the task and may
 * retry: backpressure, never silent loss); -ESHUTDOWN once the target's
 * runtime is stopping. */
int fdn_worker_post(fdn_worker *target, fdn_task *task);

/* Posts up to n tasks in one batch (one wake-up at most). Returns how many
 * were posted (the first ones; the caller keeps the rest), or -ESHUTDOWN. */
int fdn_worker_post_batch(fdn_worker *target, fdn_task *const *tasks, unsigned n);

/* True when the running task should return FDN_TASK_YIELD soon: a task of
 * higher priority is waiting, or its time slice is used up. The clock is read
 * on every fourth call only (a task that asks once per item of work pays for
 * no clock read until its fourth item), and the slice is measured from the
 * first read, so a long task should ask from its start and then often enough
 * that four calls are short next to the slice. Owner thread. */
bool fdn_worker_should_yield(fdn_worker *w);

/* The worker the calling thread owns, or NULL. */
fdn_worker *fdn_worker_current(void);

/* Index within the runtime, the CPU it is pinned to (-1 if not pinned), and
 * the kernel NUMA node whose memory it uses. */
int fdn_worker_index(const fdn_worker *w);
int fdn_worker_cpu(const fdn_worker *w);
int fdn_worker_numa_node(const fdn_worker *w);

/* The worker's buffer pool: allocate from it on the owner thread only. */
fdn_pool *fdn_worker_pool(fdn_worker *w);

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC). */
uint64_t fdn_now_ns(void);

/* ---- Timers ------------------------------------------------------------ */

/* A one-shot timer; its task is scheduled (at the task's priority) when the
 * deadline passes. Memory is the caller's, as for tasks. Fields are private. */
typedef struct fdn_timer {
    fdn_task task;
    uint64_t deadline_ns;
    uint64_t seq;            /* arm order: equal deadlines fire first-armed first */
    uint32_t heap_index;     /* position in the worker's heap; UINT32_MAX when unarmed */
} fdn_timer;

static inline void fdn_timer_init(fdn_timer *t, fdn_task_fn fn, void *arg, int prio)
{
    fdn_task_init(&t->task, fn, arg, prio);
    t->deadline_ns = 0;
    t->seq = 0;
    t->heap_index = UINT32_MAX;
}

/* Arms (or re-arms) the timer to fire at fdn_now_ns() + delay_ns, on worker w.
 * Owner thread only. Returns 0 or -ENOMEM. */
int fdn_timer_arm(fdn_worker *w, fdn_timer *t, uint64_t delay_ns);

/* Disarms the timer. Owner thread only. Returns 0, or -ENOENT if it was not
 * armed (already fired or never armed). Once fired, its task is on the run
 * queue and cancel no longer stops it. */
int fdn_timer_cancel(fdn_worker *w, fdn_timer *t);

static inline bool fdn_timer_armed(const fdn_timer *t) { return t->heap_index != UINT32_MAX; }

/* ---- Driving a worker from an application thread ------------------------ */

/* One non-blocking pass: inbound rings, expired timers, io_uring completions
 * and a budget of ready tasks, highest priority first. Returns the amount of
 * work done (0 when idle) or a negative errno. Owner thread only. */
int fdn_worker_progress(fdn_worker *w);

/* Sleeps until work arrives, the next timer is due, or timeout_ns passes
 * (negative: no timeout). Returns 0 or a negative errno. Owner thread only. */
int fdn_worker_wait(fdn_worker *w, int64_t timeout_ns);

/* Runs progress and the runtime's idle strategy until fdn_worker_stop().
 * Returns 0 or a negative errno. Owner thread only. */
int fdn_worker_run(fdn_worker *w);

/* Asks fdn_worker_run() to return after its current pass. Any thread. */
void fdn_worker_stop(fdn_worker *w);

/* Counters of one worker, readable from any thread (relaxed snapshots). */
typedef struct fdn_worker_stats {
    uint64_t passes;          /* progress passes */
    uint64_t tasks_run;       /* task function calls */
    uint64_t tasks_yielded;   /* of those, returned FDN_TASK_YIELD */
    uint64_t posts_received;  /* tasks taken from inbound rings */
    uint64_t post_full;       /* posts to this worker refused with -EAGAIN */
    uint64_t timers_fired;
    uint64_t sleeps;          /* times the worker blocked in the kernel */
    uint64_t wakeups_sent;    /* system calls made to wake this worker */
} fdn_worker_stats;

void fdn_worker_stats_get(const fdn_worker *w, fdn_worker_stats *out);

#ifdef __cplusplus
}
#endif
#endif
