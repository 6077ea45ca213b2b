/* Liveness (core/peer.c, "Liveness"): a lane that hears nothing pings, and
 * one that hears nothing for idle_timeout_ns is closed and its session
 * resumes. Node B lives on the harness's worker, driven by the test's
 * thread; node A, in the tests that need two, on a worker of its own driven
 * by a second thread that the test can freeze (it stops calling progress),
 * as a stopped process, a long GC pause or a silent partition would leave
 * it. Waits are for events, bounded; the freeze and the quiet spell are
 * the scenarios themselves, measured on the clock. Keepalive 20 ms, idle
 * timeout 100 ms. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <fdn/fdn.h>

#include "core/node_internal.h"
#include "test.h"
#include "node_harness.h"

static const uint8_t secret[] = "liveness is a property of lanes!";

#define MS ((uint64_t)1000 * 1000)
#define KEEPALIVE_NS (20 * MS)
#define IDLE_NS (100 * MS)

static const fdn_node_config liveness = {.keepalive_ns = KEEPALIVE_NS,
                                         .idle_timeout_ns = IDLE_NS};

/* For the tests that must see no idle timeout at all while two threads
 * run: a loaded 2-core machine may deschedule one of them for 100 ms, which
 * would be a true silence; 250 ms is far beyond what it does. */
#define STEADY_KEEPALIVE_NS (25 * MS)
#define STEADY_IDLE_NS (250 * MS)
static const fdn_node_config steady = {.keepalive_ns = STEADY_KEEPALIVE_NS,
                                       .idle_timeout_ns = STEADY_IDLE_NS};

/* ---- A node and what it sees (every field on its worker's thread) -------- */

struct side {
    struct link link;
    fdn_worker *worker;
    uint32_t expect;      /* the tag the next message must carry */
    uint32_t arrivals;
    uint32_t bad;         /* out of order, repeated or corrupted */
};

static void on_message(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    (void)channel;
    struct side *s = arg;
    uint32_t tag = UINT32_MAX;
    if (fdn_msg_len(m) >= 4)
        memcpy(&tag, fdn_msg_data(m), 4);
    if (tag != s->expect || !tagged_payload_ok(m, tag))
        s->bad++;
    s->expect = tag + 1;
    s->arrivals++;
    fdn_msg_free(m);
}

/* Runs on s->worker's thread. */
static void make_node(struct side *s, fdn_worker *wk, const fdn_node_config *extra)
{
    memset(s, 0, sizeof *s);
    s->worker = wk;
    fdn_node_config cfg = extra ? *extra : (fdn_node_config){0};
    cfg.worker = wk;
    cfg.secret = secret;
    cfg.secret_len = sizeof secret;
    cfg.no_same_host_shm = !harness_over_shm();
    CHECK_OK(fdn_node_create(&cfg, &s->link.node));
    link_watch(&s->link);
    /* Each test streams on one of them: one sequence of tags. */
    CHECK_OK(fdn_channel_set_handler(s->link.node, FDN_CHANNEL_COORDINATION, on_message, s));
    CHECK_OK(fdn_channel_set_handler(s->link.node, FDN_CHANNEL_DATA, on_message, s));
}

/* Message `tag` of len bytes from s's worker's pool, as make_tagged_msg()
 * builds it. */
static fdn_msg *tagged(struct side *s, size_t len, uint32_t tag)
{
    fdn_msg *m;
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(s->worker), len, &m));
    uint8_t *d = fdn_msg_data(m);
    memcpy(d, &tag, 4);
    for (size_t i = 4; i < fdn_msg_len(m); i++)
        d[i] = (uint8_t)(i * 131 + tag);
    return m;
}

static void send_tagged(struct side *s, uint32_t tag)
{
    CHECK(s->link.peer != NULL);
    CHECK_OK(fdn_send(s->link.peer, FDN_CHANNEL_COORDINATION, tagged(s, 200, tag)));
}


static void check_pool_empty(fdn_worker *wk)
{
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(wk), &ps);
    CHECK_EQ(ps.buffers_in_use, 0);
}

/* ---- Node A's worker, on a thread the test can freeze ---------------------- */

static struct {
    fdn_runtime *rt;
    fdn_worker *w;
    pthread_t thread;
    atomic_bool stop;
    atomic_bool freeze;     /* asked by the test */
    atomic_bool frozen;     /* the thread has stopped calling progress */
    sem_t thaw;
    struct side *a;         /* destroyed by the thread when it stops */
} drv;

static void *drive_a(void *arg)
{
    (void)arg;
    CHECK_OK(fdn_worker_attach(drv.w));
    while (!atomic_load(&drv.stop)) {
        if (atomic_load(&drv.freeze)) {
            atomic_store(&drv.frozen, true);
            while (sem_wait(&drv.thaw) < 0)
                CHECK(errno == EINTR);
            atomic_store(&drv.frozen, false);
            continue;
        }
        if (fdn_worker_progress(drv.w) == 0)
            fdn_worker_wait(drv.w, 1000000);
    }
    /* Destroying a node drives its worker: here, not from a task. */
    if (drv.a && drv.a->link.node) {
        fdn_node_destroy(drv.a->link.node);
        drv.a->link.node = NULL;
    }
    check_pool_empty(drv.w);
    CHECK_OK(fdn_worker_detach(drv.w));
    /* Not from the test's thread: that one is a worker (of the harness). */
    CHECK_OK(fdn_runtime_stop(drv.rt));
    fdn_runtime_destroy(drv.rt);
    return NULL;
}

static void start_a(struct side *a)
{
    fdn_runtime_config cfg = {.workers = 1, .app_driven_workers = 1, .no_pinning = true,
                              .pool = {.max_bytes = (size_t)256 << 20}};
    CHECK_OK(fdn_runtime_create(&cfg, &drv.rt));
    drv.w = fdn_runtime_worker(drv.rt, 0);
    drv.a = a;
    atomic_store(&drv.stop, false);
    atomic_store(&drv.freeze, false);
    atomic_store(&drv.frozen, false);
    CHECK(sem_init(&drv.thaw, 0, 0) == 0);
    CHECK(pthread_create(&drv.thread, NULL, drive_a, NULL) == 0);
}

static void stop_a(void)
{
    atomic_store(&drv.stop, true);
    CHECK(pthread_join(drv.thread, NULL) == 0);
    sem_destroy(&drv.thaw);
}

/* Runs fn(arg) on A's worker and waits for it, driving B's meanwhile. */
struct on_a {
    fdn_task task;
    void (*fn)(void *);
    void *arg;
    atomic_bool done;
};

static int on_a_task(fdn_worker *wk, fdn_task *t)
{
    (void)wk;
    struct on_a *c = t->arg;
    c->fn(c->arg);
    atomic_store(&c->done, true);
    return FDN_TASK_DONE;
}

static void on_a(void (*fn)(void *), void *arg)
{
    struct on_a c = {.fn = fn, .arg = arg};
    fdn_task_init(&c.task, on_a_task, &c, FDN_PRIO_HIGHEST);
    RUN_UNTIL(fdn_worker_post(drv.w, &c.task) == 0);
    RUN_UNTIL(atomic_load(&c.done));
}

/* What the test reads of A, copied on A's thread. */
struct a_view {
    struct side *a;
    const fdn_node_config *cfg;
    char addr[128];              /* in: where to connect; out: where A listens */
    uint32_t first_tag, count;   /* messages to send */
    bool up;                     /* every lane */
    fdn_lane_stats data_lane;    /* lane 2 */
    uint32_t arrivals, bad;
    int ups, downs;
    fdn_node_stats stats;
};

static void a_create(void *arg)
{
    struct a_view *v = arg;
    make_node(v->a, drv.w, v->cfg);
}

static void a_listen(void *arg)
{
    struct a_view *v = arg;
    link_listen_any(&v->a->link, v->addr, sizeof v->addr);
}

static void a_connect(void *arg)
{
    struct a_view *v = arg;
    CHECK_OK(fdn_node_connect(v->a->link.node, v->addr, &v->a->link.peer));
}

static void a_send(void *arg)
{
    struct a_view *v = arg;
    for (uint32_t i = 0; i < v->count; i++)
        send_tagged(v->a, v->first_tag + i);
}

static void a_look(void *arg)
{
    struct a_view *v = arg;
    v->up = all_lanes_up(v->a->link.peer);
    if (v->a->link.peer)
        CHECK_OK(fdn_peer_lane_stats(v->a->link.peer, 2, &v->data_lane));
    v->arrivals = v->a->arrivals;
    v->bad = v->a->bad;
    v->ups = v->a->link.ups;
    v->downs = v->a->link.downs;
    fdn_node_stats_get(v->a->link.node, &v->stats);
}

static struct a_view *look(struct a_view *v)
{
    on_a(a_look, v);
    return v;
}

/* A and B up with every lane, A the server or the client. */
static void pair_a_b(struct side *b, struct a_view *v, bool a_serves)
{
    on_a(a_create, v);
    make_node(b, w, v->cfg);
    if (a_serves) {
        on_a(a_listen, v);
        CHECK_OK(fdn_node_connect(b->link.node, v->addr, &b->link.peer));
    } else {
        link_listen_any(&b->link, v->addr, sizeof v->addr);
        on_a(a_connect, v);
    }
    RUN_UNTIL(all_lanes_up(b->link.peer) && look(v)->up);
}

static void teardown_a_b(struct side *b)
{
    fdn_node_destroy(b->link.node);
    check_pool_empty(w);
    stop_a();
}

/* ---- Tests ------------------------------------------------------------------- */

static void test_config_checked(void)
{
    fdn_node *n;
    fdn_node_config cfg = {.worker = w, .secret = secret, .secret_len = sizeof secret,
                           .keepalive_ns = 2000 * MS};   /* under the default 5 s idle */
    CHECK_OK(fdn_node_create(&cfg, &n));
    fdn_node_destroy(n);
    cfg.idle_timeout_ns = 2000 * MS;                     /* not more than the keepalive */
    CHECK_EQ(fdn_node_create(&cfg, &n), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "keepalive_ns") != NULL);
    cfg.keepalive_ns = 0;                                /* the default 1 s: fine */
    CHECK_OK(fdn_node_create(&cfg, &n));
    fdn_node_destroy(n);
    cfg.idle_timeout_ns = 500 * MS;    /* under 1 s: the default keepalive is a fifth */
    CHECK_OK(fdn_node_create(&cfg, &n));
    CHECK_EQ(n->keepalive_ns, 100 * MS);
    fdn_node_destroy(n);
    cfg.idle_timeout_ns = 4 * MS;      /* a fifth would be under 1 ms */
    CHECK_EQ(fdn_node_create(&cfg, &n), -EINVAL);
    cfg = (fdn_node_config){.worker = w, .secret = secret, .secret_len = sizeof secret,
                            .keepalive_ns = 1000};        /* under 1 ms */
    CHECK_EQ(fdn_node_create(&cfg, &n), -EINVAL);
}

/* A quiet, healthy session over 12 idle periods: pings keep every lane
 * alive, nothing times out, nothing resumes. */
static void test_quiet_session_stays_up(void)
{
    struct side a, b;
    struct a_view v = {.a = &a, .cfg = &steady};
    start_a(&a);
    pair_a_b(&b, &v, true);
    uint64_t start = fdn_now_ns();
    RUN_UNTIL(fdn_now_ns() - start >= 12 * STEADY_IDLE_NS);
    CHECK(all_lanes_up(b.link.peer));
    look(&v);
    CHECK(v.up);
    fdn_node_stats nb;
    fdn_node_stats_get(b.link.node, &nb);
    printf("   A: %" PRIu64 " pings, %" PRIu64 " pongs; B: %" PRIu64 " pings, %" PRIu64 " pongs\n",
           v.stats.pings_sent, v.stats.pongs_received, nb.pings_sent, nb.pongs_received);
    /* A lane pings after 25 ms of quiet: over a hundred in 3 s. */
    CHECK(v.stats.pongs_received + nb.pongs_received >= 24);
    CHECK(v.stats.pings_sent + nb.pings_sent >= v.stats.pongs_received + nb.pongs_received);
    CHECK_EQ(v.stats.idle_timeouts + nb.idle_timeouts, 0);
    CHECK_EQ(v.stats.sessions_interrupted + nb.sessions_interrupted, 0);
    CHECK_EQ(v.downs + b.link.downs, 0);
    teardown_a_b(&b);
}

/* A's worker stops (its thread stops calling progress) for longer than the
 * idle timeout. B hears nothing, times the lane out and its session goes
 * from up to resuming, with no peer_down. Reliable messages cross the
 * freeze both ways: sent by A just before it, by B before B notices, while
 * B's session is suspended, and after A wakes. When A wakes, its own lanes
 * have heard nothing for the whole freeze; what B sent meanwhile (B's
 * CLOSE, end of stream) is read before A's liveness checks run, and a
 * check that runs late restarts the lane's clock rather than blame B. The
 * session resumes and every message arrives exactly once, in order. */
#define PER_PHASE 100

static void frozen_peer(bool a_serves)
{
    struct side a, b;
    struct a_view v = {.a = &a, .cfg = &liveness};
    start_a(&a);
    pair_a_b(&b, &v, a_serves);
    uint32_t to_a = 0;
    for (; to_a < PER_PHASE; to_a++)
        send_tagged(&b, to_a);
    v.first_tag = 0;
    v.count = PER_PHASE;
    on_a(a_send, &v);

    atomic_store(&drv.freeze, true);
    RUN_UNTIL(atomic_load(&drv.frozen));
    uint64_t frozen_at = fdn_now_ns();
    for (; to_a < 2 * PER_PHASE; to_a++)
        send_tagged(&b, to_a);
    fdn_node_stats nb;
    RUN_UNTIL((fdn_node_stats_get(b.link.node, &nb), nb.idle_timeouts >= 1) &&
              !fdn_peer_is_up(b.link.peer));
    uint64_t noticed_ns = fdn_now_ns() - frozen_at;
    CHECK(nb.sessions_interrupted >= 1);
    CHECK_EQ(b.link.downs, 0);
    CHECK(b.link.peer != NULL);
    for (; to_a < 3 * PER_PHASE; to_a++)   /* queued while the session is suspended */
        send_tagged(&b, to_a);
    /* Frozen for at least 3 idle timeouts: A's lanes' silence, as A's
     * clock measures it, is well past its own idle timeout when it wakes. */
    RUN_UNTIL(fdn_now_ns() - frozen_at >= 3 * IDLE_NS);
    atomic_store(&drv.freeze, false);
    CHECK(sem_post(&drv.thaw) == 0);
    RUN_UNTIL(!atomic_load(&drv.frozen));
    for (; to_a < 4 * PER_PHASE; to_a++)
        send_tagged(&b, to_a);

    RUN_UNTIL(b.arrivals == PER_PHASE && (look(&v), v.arrivals == 4 * PER_PHASE));
    /* Settled: both ends up, every interruption resumed (should a loaded
     * machine stall a thread long enough to add one, it resumes too). */
    RUN_UNTIL(all_lanes_up(b.link.peer) &&
              (fdn_node_stats_get(b.link.node, &nb),
               nb.sessions_resumed == nb.sessions_interrupted) &&
              (look(&v), v.up && v.stats.sessions_resumed == v.stats.sessions_interrupted));
    printf("   B noticed after %" PRIu64 " ms; B: %" PRIu64 " idle timeouts, %" PRIu64
           " interrupted, %" PRIu64 " resumed; A: %" PRIu64 " idle timeouts, %" PRIu64
           " late checks, %" PRIu64 " resumed\n", noticed_ns / MS, nb.idle_timeouts,
           nb.sessions_interrupted, nb.sessions_resumed, v.stats.idle_timeouts,
           v.stats.heartbeat_stalls, v.stats.sessions_resumed);
    CHECK_EQ(v.bad + b.bad, 0);
    CHECK_EQ(v.arrivals, 4 * PER_PHASE);
    CHECK_EQ(b.arrivals, PER_PHASE);
    CHECK(nb.sessions_resumed >= 1);
    CHECK(v.stats.sessions_resumed >= 1);
    CHECK_EQ(nb.sessions_expired + v.stats.sessions_expired, 0);
    CHECK_EQ(v.downs + b.link.downs, 0);
    CHECK_EQ(v.ups + b.link.ups, 2);   /* resumed, not reconnected as a new session */
    teardown_a_b(&b);
}

static void test_frozen_server(void) { frozen_peer(true); }

/* B streams on the data channel, which has lane 2 to itself; A only
 * receives there (its ACKs and credit go on lane 1). A's lane 2 has sent
 * nothing, so it pings: on a slow link that is what keeps B's lane 2
 * alive, whose own PINGs would wait behind the stream. */
static void test_one_way_stream(void)
{
    struct side a, b;
    struct a_view v = {.a = &a, .cfg = &steady};
    start_a(&a);
    pair_a_b(&b, &v, true);
    uint32_t sent = 0;
    uint64_t start = fdn_now_ns();
    while (fdn_now_ns() - start < 30 * STEADY_KEEPALIVE_NS) {
        fdn_msg *m = tagged(&b, 32 << 10, sent);
        send_blocking(b.link.peer, FDN_CHANNEL_DATA, m);
        sent++;
        fdn_worker_progress(w);
    }
    RUN_UNTIL((look(&v), v.arrivals == sent));
    fdn_node_stats nb;
    fdn_node_stats_get(b.link.node, &nb);
    fdn_lane_stats bl;
    CHECK_OK(fdn_peer_lane_stats(b.link.peer, 2, &bl));
    printf("   %u messages; lane 2: the receiver sent %" PRIu64 " pings, the sender %" PRIu64
           "\n", sent, v.data_lane.pings_sent, bl.pings_sent);
    /* About one per keepalive + a check period: ~16 in 30 keepalives. */
    CHECK(v.data_lane.pings_sent >= 5);
    CHECK_EQ(v.bad, 0);
    CHECK_EQ(v.stats.idle_timeouts + nb.idle_timeouts, 0);
    CHECK_EQ(v.stats.sessions_interrupted + nb.sessions_interrupted, 0);
    teardown_a_b(&b);
}
static void test_frozen_client(void) { frozen_peer(false); }

/* Both nodes on one worker, which stops for 3 idle timeouts (a stopped
 * process, a VM paused): nothing was sent while it stood still, so when it
 * runs again every lane has heard nothing for longer than its idle timeout.
 * The checks run late, see that the silence was their own worker's, and
 * restart their clocks: no lane is closed, the session never resumes. */
static void test_worker_pause_is_not_peer_silence(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, w, &liveness);
    make_node(&b, w, &liveness);
    link_listen_any(&a.link, addr, sizeof addr);
    CHECK_OK(fdn_node_connect(b.link.node, addr, &b.link.peer));
    RUN_UNTIL(all_lanes_up(b.link.peer) && all_lanes_up(a.link.peer));
    /* The pause is the scenario here, not a way to wait for something. */
    struct timespec pause = {.tv_nsec = (long)(3 * IDLE_NS)};
    nanosleep(&pause, NULL);
    uint64_t start = fdn_now_ns();
    RUN_UNTIL(fdn_now_ns() - start >= 3 * IDLE_NS);
    fdn_node_stats na, nb;
    fdn_node_stats_get(a.link.node, &na);
    fdn_node_stats_get(b.link.node, &nb);
    CHECK(na.heartbeat_stalls >= 1 && nb.heartbeat_stalls >= 1);
    CHECK_EQ(na.idle_timeouts + nb.idle_timeouts, 0);
    CHECK_EQ(na.sessions_interrupted + nb.sessions_interrupted, 0);
    CHECK(all_lanes_up(a.link.peer) && all_lanes_up(b.link.peer));
    fdn_node_destroy(a.link.node);
    fdn_node_destroy(b.link.node);
    check_pool_empty(w);
}

int main(void)
{
    harness_start((size_t)256 << 20);
    RUN(test_config_checked);
    RUN(test_quiet_session_stays_up);
    RUN(test_one_way_stream);
    RUN(test_frozen_server);
    RUN(test_frozen_client);
    RUN(test_worker_pause_is_not_peer_silence);
    harness_stop();
    return 0;
}
