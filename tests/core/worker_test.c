/* A worker driven by the test's own thread: run-queue order, yielding,
 * budgets, timers, waiting, posting from other threads and backpressure. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <fdn/fdn.h>

#include "test.h"

static fdn_runtime *rt;
static fdn_worker *w;

/* Records the order in which tasks ran. */
static int order[64];
static int order_len;

struct step {
    fdn_task task;
    int id;
    int yields_left;
};

static int record(fdn_worker *worker, fdn_task *t)
{
    (void)worker;
    struct step *s = (struct step *)t->arg;
    order[order_len++] = s->id;
    if (s->yields_left > 0) {
        s->yields_left--;
        return FDN_TASK_YIELD;
    }
    return FDN_TASK_DONE;
}

static void step_init(struct step *s, int id, int prio, int yields)
{
    fdn_task_init(&s->task, record, s, prio);
    s->id = id;
    s->yields_left = yields;
}

static void run_until_idle(void)
{
    while (fdn_worker_progress(w) > 0)
        ;
}

static void setup(uint32_t ring_entries, uint32_t budget)
{
    fdn_runtime_config cfg = {
        .workers = 1,
        .app_driven_workers = 1,
        .no_pinning = true,
        .ring_entries = ring_entries,
        .task_budget = budget,
    };
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    w = fdn_runtime_worker(rt, 0);
    CHECK(w != NULL);
    CHECK_OK(fdn_worker_attach(w));
    CHECK(fdn_worker_current() == w);
    order_len = 0;
}

static void teardown(void)
{
    CHECK_OK(fdn_worker_detach(w));
    CHECK(fdn_worker_current() == NULL);
    CHECK_OK(fdn_runtime_stop(rt));
    fdn_runtime_destroy(rt);
}

static void test_priority_then_fifo(void)
{
    setup(0, 0);
    struct step s[5];
    step_init(&s[0], 0, 4, 0);
    step_init(&s[1], 1, 7, 0);
    step_init(&s[2], 2, 0, 0);
    step_init(&s[3], 3, 4, 0);
    step_init(&s[4], 4, 0, 0);
    for (int i = 0; i < 5; i++)
        CHECK_OK(fdn_worker_schedule(w, &s[i].task));
    CHECK_EQ(fdn_worker_schedule(w, &s[0].task), -EALREADY);
    run_until_idle();
    int want[] = {2, 4, 0, 3, 1};
    CHECK_EQ(order_len, 5);
    for (int i = 0; i < 5; i++)
        CHECK_EQ(order[i], want[i]);
    teardown();
}

static void test_yield_goes_behind_peers(void)
{
    setup(0, 0);
    struct step a, b;
    step_init(&a, 0, 4, 2);
    step_init(&b, 1, 4, 0);
    CHECK_OK(fdn_worker_schedule(w, &a.task));
    CHECK_OK(fdn_worker_schedule(w, &b.task));
    run_until_idle();
    int want[] = {0, 1, 0, 0};
    CHECK_EQ(order_len, 4);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(order[i], want[i]);
    fdn_worker_stats st;
    fdn_worker_stats_get(w, &st);
    CHECK_EQ(st.tasks_run, 4);
    CHECK_EQ(st.tasks_yielded, 2);
    teardown();
}

/* A bulk task that keeps yielding while an urgent one was made ready from
 * inside it: the urgent one runs at the next pick, and should_yield says so. */
static struct step urgent;
static int saw_should_yield;

static int bulk_spawning_urgent(fdn_worker *worker, fdn_task *t)
{
    (void)t;
    order[order_len++] = 100;
    if (order_len == 1) {
        CHECK(!fdn_worker_should_yield(worker));
        CHECK_OK(fdn_worker_schedule(worker, &urgent.task));
        saw_should_yield = fdn_worker_should_yield(worker);
        return FDN_TASK_YIELD;
    }
    return FDN_TASK_DONE;
}

static void test_urgent_overtakes_yielding_bulk(void)
{
    setup(0, 0);
    fdn_task bulk;
    fdn_task_init(&bulk, bulk_spawning_urgent, NULL, FDN_PRIO_LOWEST);
    step_init(&urgent, 1, FDN_PRIO_HIGHEST, 0);
    CHECK_OK(fdn_worker_schedule(w, &bulk));
    run_until_idle();
    CHECK(saw_should_yield);
    CHECK_EQ(order_len, 3);
    CHECK_EQ(order[0], 100);
    CHECK_EQ(order[1], 1);
    CHECK_EQ(order[2], 100);
    teardown();
}

/* A long task asks from its start and is told to yield once its slice is
 * used up (a slice that never ended would hang this test), and not before:
 * the slice is counted in TSC cycles where the counter is used, and a
 * wrong conversion would end it early. */
static int spin_until_told(fdn_worker *worker, fdn_task *t)
{
    (void)t;
    uint64_t checks = 0, start = fdn_now_ns();
    while (!fdn_worker_should_yield(worker))
        checks++;
    CHECK(fdn_now_ns() - start >= 100000 * 99 / 100);   /* the default slice, 100 us */
    order[order_len++] = checks > 0;
    return FDN_TASK_DONE;
}

static void test_time_slice_ends(void)
{
    setup(0, 0);
    fdn_task t;
    fdn_task_init(&t, spin_until_told, NULL, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_worker_schedule(w, &t));
    run_until_idle();
    CHECK_EQ(order_len, 1);
    CHECK_EQ(order[0], 1); /* it did run until the slice, not stop at once */
    teardown();
}

static void test_budget_bounds_a_pass(void)
{
    setup(0, 8);
    struct step s[20];
    for (int i = 0; i < 20; i++) {
        step_init(&s[i], i, 4, 0);
        CHECK_OK(fdn_worker_schedule(w, &s[i].task));
    }
    CHECK_EQ(fdn_worker_progress(w), 8);
    CHECK_EQ(fdn_worker_progress(w), 8);
    CHECK_EQ(fdn_worker_progress(w), 4);
    CHECK_EQ(fdn_worker_progress(w), 0);
    teardown();
}

static int timer_fired(fdn_worker *worker, fdn_task *t)
{
    (void)worker;
    order[order_len++] = (int)(intptr_t)t->arg;
    return FDN_TASK_DONE;
}

static void test_timers_order_and_cancel(void)
{
    setup(0, 0);
    fdn_timer t[4];
    for (int i = 0; i < 4; i++)
        fdn_timer_init(&t[i], timer_fired, (void *)(intptr_t)i, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_timer_arm(w, &t[0], 3000000));
    CHECK_OK(fdn_timer_arm(w, &t[1], 1000000));
    CHECK_OK(fdn_timer_arm(w, &t[2], 2000000));
    CHECK_OK(fdn_timer_arm(w, &t[3], 500000));
    CHECK(fdn_timer_armed(&t[3]));
    CHECK_OK(fdn_timer_cancel(w, &t[3]));
    CHECK_EQ(fdn_timer_cancel(w, &t[3]), -ENOENT);
    CHECK(!fdn_timer_armed(&t[3]));
    /* Re-arming moves a timer: 0 now fires before 1. */
    CHECK_OK(fdn_timer_arm(w, &t[0], 100000));
    while (order_len < 3) {
        CHECK_OK(fdn_worker_wait(w, -1)); /* wakes for the next deadline */
        fdn_worker_progress(w);
    }
    CHECK_EQ(order[0], 0);
    CHECK_EQ(order[1], 1);
    CHECK_EQ(order[2], 2);
    CHECK(!fdn_timer_armed(&t[0]));
    CHECK_EQ(fdn_timer_cancel(w, &t[0]), -ENOENT);
    fdn_worker_stats st;
    fdn_worker_stats_get(w, &st);
    CHECK_EQ(st.timers_fired, 3);
    teardown();
}

/* A task arms a timer for now while a later one is armed: it fires on
 * the pass after, although the worker had just worked out that nothing
 * was due for a while (the counter gate of fire_timers). */
static fdn_timer soon;

static int arm_soon(fdn_worker *worker, fdn_task *t)
{
    (void)t;
    CHECK_OK(fdn_timer_arm(worker, &soon, 0));
    return FDN_TASK_DONE;
}

static void test_timer_armed_for_now_fires_at_once(void)
{
    setup(0, 0);
    fdn_timer later;
    fdn_timer_init(&later, timer_fired, (void *)(intptr_t)1, FDN_PRIO_DEFAULT);
    fdn_timer_init(&soon, timer_fired, (void *)(intptr_t)2, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_timer_arm(w, &later, 10ull * 1000 * 1000 * 1000));
    struct step warm;
    step_init(&warm, 0, FDN_PRIO_DEFAULT, 0);
    fdn_worker_schedule(w, &warm.task);
    CHECK_EQ(fdn_worker_progress(w), 1);   /* worked, so it checked the timers */
    fdn_task arm;
    fdn_task_init(&arm, arm_soon, NULL, FDN_PRIO_DEFAULT);
    fdn_worker_schedule(w, &arm);
    CHECK_EQ(fdn_worker_progress(w), 2);   /* ran arm_soon, and its timer expired */
    CHECK_EQ(order_len, 1);
    CHECK_EQ(fdn_worker_progress(w), 1);
    CHECK_EQ(order_len, 2);
    CHECK_EQ(order[1], 2);
    CHECK_OK(fdn_timer_cancel(w, &later));
    teardown();
}

static void test_wait_times_out(void)
{
    setup(0, 0);
    uint64_t start = fdn_now_ns();
    CHECK_OK(fdn_worker_wait(w, 2000000));
    CHECK(fdn_now_ns() - start >= 1000000); /* it did block, for about 2 ms */
    CHECK_EQ(fdn_worker_progress(w), 0);
    teardown();
}

/* ---- Posting from another thread ---------------------------------------- */

static atomic_int posted_ran;

static int count_post(fdn_worker *worker, fdn_task *t)
{
    (void)t;
    CHECK(worker == w && fdn_worker_current() == w);
    atomic_fetch_add(&posted_ran, 1);
    return FDN_TASK_DONE;
}

static void *post_later(void *arg)
{
    usleep(20000); /* let the owner go to sleep first */
    CHECK_OK(fdn_worker_post(w, arg));
    return NULL;
}

static void test_post_wakes_a_sleeping_worker(void)
{
    setup(0, 0);
    fdn_task t;
    fdn_task_init(&t, count_post, NULL, FDN_PRIO_DEFAULT);
    pthread_t th;
    pthread_create(&th, NULL, post_later, &t);
    /* No timeout: if the wake-up were lost, this test would hang and fail. */
    while (!atomic_load(&posted_ran)) {
        CHECK_OK(fdn_worker_wait(w, -1));
        fdn_worker_progress(w);
    }
    pthread_join(th, NULL);
    fdn_worker_stats st;
    fdn_worker_stats_get(w, &st);
    CHECK(st.sleeps >= 1);
    CHECK_EQ(st.posts_received, 1);
    atomic_store(&posted_ran, 0);
    teardown();
}

struct backpressure {
    fdn_task tasks[10];
    int results[10];
    int batch_result;
};

static void *post_until_full(void *arg)
{
    struct backpressure *bp = arg;
    for (int i = 0; i < 6; i++)
        bp->results[i] = fdn_worker_post(w, &bp->tasks[i]);
    return NULL;
}

static void *post_batch(void *arg)
{
    struct backpressure *bp = arg;
    fdn_task *batch[4] = {&bp->tasks[6], &bp->tasks[7], &bp->tasks[8], &bp->tasks[9]};
    bp->batch_result = fdn_worker_post_batch(w, batch, 4);
    return NULL;
}

static void test_full_ring_is_backpressure(void)
{
    setup(4, 0);
    struct backpressure bp;
    for (int i = 0; i < 10; i++)
        fdn_task_init(&bp.tasks[i], count_post, NULL, FDN_PRIO_DEFAULT);
    pthread_t th;
    pthread_create(&th, NULL, post_until_full, &bp);
    pthread_join(th, NULL);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(bp.results[i], 0);
    CHECK_EQ(bp.results[4], -EAGAIN);
    CHECK_EQ(bp.results[5], -EAGAIN);
    fdn_worker_stats st;
    fdn_worker_stats_get(w, &st);
    CHECK_EQ(st.post_full, 2);
    run_until_idle();
    CHECK_EQ(atomic_load(&posted_ran), 4);

    /* Drained: there is room again, and a batch takes what fits. */
    pthread_create(&th, NULL, post_batch, &bp);
    pthread_join(th, NULL);
    CHECK_EQ(bp.batch_result, 4);
    run_until_idle();
    CHECK_EQ(atomic_load(&posted_ran), 8);
    atomic_store(&posted_ran, 0);
    teardown();
}

static void *progress_from_wrong_thread(void *arg)
{
    (void)arg;
    fdn_task t;
    fdn_task_init(&t, count_post, NULL, 0);
    CHECK_EQ(fdn_worker_progress(w), -EPERM);
    CHECK_EQ(fdn_worker_schedule(w, &t), -EPERM);
    CHECK_EQ(fdn_worker_attach(w), -EBUSY);
    return NULL;
}

static void test_owner_checks(void)
{
    setup(0, 0);
    pthread_t th;
    pthread_create(&th, NULL, progress_from_wrong_thread, NULL);
    pthread_join(th, NULL);
    CHECK_EQ(fdn_runtime_stop(rt), -EBUSY); /* still attached */
    teardown();
}

int main(void)
{
    RUN(test_priority_then_fifo);
    RUN(test_yield_goes_behind_peers);
    RUN(test_urgent_overtakes_yielding_bulk);
    RUN(test_time_slice_ends);
    RUN(test_budget_bounds_a_pass);
    RUN(test_timers_order_and_cancel);
    RUN(test_timer_armed_for_now_fires_at_once);
    RUN(test_wait_times_out);
    RUN(test_post_wakes_a_sleeping_worker);
    RUN(test_full_ring_is_backpressure);
    RUN(test_owner_checks);
    return 0;
}
