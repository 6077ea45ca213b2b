/* Zero-copy messages over shared memory (fdn_peer_msg_alloc): a message
 * built in a lane's shared pool crosses as one descriptor, whatever its
 * size and max_fragment, and the receiver's handler reads the sender's
 * buffer itself, mapped read-only; freeing it gives the buffer back. And
 * what is not zero-copy falls back to an ordinary message: a TCP peer, a
 * full pool, a size over the largest class. Urgent messages share a ring
 * with megabytes of loans and are not held up. A peer killed while each
 * side holds the other's buffers is reclaimed: ours come back, and the
 * dead peer's pool stays mapped until we free what we borrowed.
 *
 * Two nodes on one application-driven worker (the killed peer is a forked
 * process). Every wait is for an event, bounded by the harness. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fdn/fdn.h>
#include <fdn/node.h>

#include "core/node_internal.h"
#include "core/transport.h"
#include "core/worker_internal.h"
#include "test.h"
#define HARNESS_IDLE_WAITS 30000
#include "node_harness.h"
#include "transport/shm_internal.h"

static const uint8_t secret[] = "zero copy, same secret, 32 bytes";

#define HELD_MAX 64

struct side {
    fdn_node *node;
    fdn_peer *up_peer;
    int ups, downs;
    uint64_t arrivals[FDN_CHANNEL_FIRST_USER];
    bool hold;                    /* keep data messages instead of freeing them */
    fdn_msg *held[HELD_MAX];
    int num_held;
    uint64_t data_when_urgent;    /* data arrivals when the last urgent one came */
};

static void on_up(fdn_peer *p, void *arg)
{
    struct side *s = arg;
    s->up_peer = p;
    s->ups++;
}

static void on_down(fdn_peer *p, int reason, void *arg)
{
    (void)reason;
    struct side *s = arg;
    if (s->up_peer == p)
        s->up_peer = NULL;
    s->downs++;
}

static void on_message(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    struct side *s = arg;
    s->arrivals[channel]++;
    if (channel == FDN_CHANNEL_COORDINATION)
        s->data_when_urgent = s->arrivals[FDN_CHANNEL_DATA];
    if (s->hold && channel == FDN_CHANNEL_DATA) {
        CHECK(s->num_held < HELD_MAX);
        s->held[s->num_held++] = m;
        return;
    }
    fdn_msg_free(m);
}

static void make_node(struct side *s, bool no_shm, bool data_on_lane_1)
{
    memset(s, 0, sizeof *s);
    fdn_node_config cfg = {.worker = w, .secret = secret, .secret_len = sizeof secret,
                           .no_same_host_shm = no_shm, .session_timeout_ns = 300000000,
                           .lend_min = 1};   /* every size by reference */
    if (data_on_lane_1)
        cfg.data.lane = 1;
    CHECK_OK(fdn_node_create(&cfg, &s->node));
    fdn_node_events ev = {.peer_up = on_up, .peer_down = on_down, .arg = s};
    fdn_node_set_events(s->node, &ev);
    for (int c = 0; c < FDN_CHANNEL_FIRST_USER; c++)
        CHECK_OK(fdn_channel_set_handler(s->node, c, on_message, s));
}


/* b connects to a; returns b's peer once every lane is up at both ends. */
static fdn_peer *pair(struct side *a, struct side *b)
{
    char addr[FDN__ADDR_MAX];
    int idx = fdn_node_listen(a->node, "tcp://127.0.0.1:0");
    CHECK_OK(idx);
    CHECK(fdn_node_listen_addr(a->node, idx, addr, sizeof addr) > 0);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(b->node, addr, &p));
    RUN_UNTIL(a->ups == 1 && b->ups == 1 && all_lanes_up(p) && all_lanes_up(a->up_peer));
    return p;
}

static void teardown(struct side *a, struct side *b)
{
    fdn_node_destroy(a->node);
    fdn_node_destroy(b->node);
    RUN_UNTIL(w->inflight == 0);
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(w), &ps);
    CHECK_EQ(ps.buffers_in_use, 0);
    struct fdn__shm_stats ss;
    fdn__shm_stats_get(&ss);
    CHECK_EQ(ss.segments_mapped, 0);
    CHECK_EQ(ss.pools_mapped, 0);   /* every pool, ours and borrowed, let go */
    CHECK_EQ(ss.loans_out, 0);
    CHECK_EQ(ss.borrowed, 0);
}

/* Fills m as make_tagged_msg() would. */
static void tag_msg(fdn_msg *m, uint32_t tag)
{
    uint8_t *d = fdn_msg_data(m);
    memcpy(d, &tag, 4);
    for (size_t i = 4; i < fdn_msg_len(m); i++)
        d[i] = (uint8_t)(i * 131 + tag);
}

/* The receiving lane's view of the sender's pool. */
static bool in_peer_pool(const fdn_peer *p, int channel, const fdn_msg *m)
{
    const struct fdn__lane *l = p->lanes[p->channel_lane[channel]];
    size_t bytes;
    const uint8_t *pool = fdn__shm_peer_pool(l->conn, &bytes);
    const uint8_t *d = fdn_msg_data(m);
    return pool && d >= pool && d + fdn_msg_len(m) <= pool + bytes;
}

static uint64_t in_use(fdn_pool *pool)
{
    fdn_pool_stats st;
    fdn_pool_stats_get(pool, &st);
    return st.buffers_in_use;
}

/* ---- Tests ------------------------------------------------------------------ */

/* 8 B to 4 MiB, over max_fragment included: one REF each, the handler gets
 * the sender's buffer, intact, and its free gives the buffer back. */
static void test_sizes_cross_without_copy(void)
{
    struct side a, b;
    make_node(&a, false, false);
    make_node(&b, false, false);
    a.hold = true;
    fdn_peer *p = pair(&a, &b);
    CHECK(!strcmp(fdn_peer_transport(p), "shm"));
    static const size_t sizes[] = {8, 64, 1000, 65536, 65537, 1 << 20, 3000000, 4 << 20};
    for (size_t i = 0; i < FDN_ARRAY_SIZE(sizes); i++) {
        fdn_node_stats ns1;
        struct fdn__shm_stats ss0, ss1;
        fdn__shm_stats_get(&ss0);
        fdn_msg *m;
        CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, sizes[i], &m));
        fdn_pool *shared = m->pool;
        CHECK(shared != fdn_worker_pool(w));
        tag_msg(m, (uint32_t)i + 1);
        fdn_lane_stats ls0, ls1;
        CHECK_OK(fdn_peer_lane_stats(p, 2, &ls0));
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
        RUN_UNTIL(a.num_held == 1);
        fdn_msg *got = a.held[0];
        CHECK(fdn_msg_is_borrowed(got));
        CHECK(in_peer_pool(a.up_peer, FDN_CHANNEL_DATA, got));
        CHECK_EQ(fdn_msg_len(got), sizes[i]);
        CHECK(tagged_payload_ok(got, (uint32_t)i + 1));
        CHECK_EQ(fdn_msg_headroom(got), 0);
        CHECK(fdn_msg_push(got, 1) == NULL);   /* read-only: nothing to grow into */
        fdn_node_stats_get(a.node, &ns1);
        fdn__shm_stats_get(&ss1);
        CHECK_EQ(ss1.refs_sent, ss0.refs_sent + 1);
        CHECK_EQ(ss1.refs_received, ss0.refs_received + 1);
        CHECK_EQ(ns1.zc_received, i + 1);
        CHECK_OK(fdn_peer_lane_stats(p, 2, &ls1));
        /* One frame: its 32-byte header in a BYTES record, and the REF. */
        CHECK_EQ(ls1.bytes_sent - ls0.bytes_sent, 32 + sizes[i]);
        CHECK(in_use(shared) >= 1);
        a.num_held = 0;
        fdn_msg_free(got);
        RUN_UNTIL(in_use(shared) == 0);        /* released, and acknowledged */
        fdn__shm_stats_get(&ss1);
        CHECK_EQ(ss1.loans_out, 0);
        CHECK_EQ(ss1.borrowed, 0);
    }
    fdn_node_stats ns;
    fdn_node_stats_get(b.node, &ns);
    CHECK_EQ(ns.zc_allocs, FDN_ARRAY_SIZE(sizes));
    CHECK_EQ(ns.zc_fallbacks, 0);
    teardown(&a, &b);
}

static void *free_on_thread(void *m)
{
    fdn_msg_free(m);
    return NULL;
}

static void free_elsewhere(fdn_msg *m)
{
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, free_on_thread, m), 0);
    CHECK_EQ(pthread_join(t, NULL), 0);
}

/* The last free of a borrowed message, and of a buffer of a shared pool,
 * may come from any thread: the loan is still released, the buffer still
 * returns to its pool. */
static void test_free_on_another_thread(void)
{
    struct side a, b;
    make_node(&a, false, false);
    make_node(&b, false, false);
    a.hold = true;
    fdn_peer *p = pair(&a, &b);
    fdn_msg *m;
    CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 100000, &m));
    fdn_pool *shared = m->pool;
    tag_msg(m, 77);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    RUN_UNTIL(a.num_held == 1);
    CHECK(fdn_msg_is_borrowed(a.held[0]));
    free_elsewhere(a.held[0]);
    a.num_held = 0;
    RUN_UNTIL(in_use(shared) == 0);
    struct fdn__shm_stats ss;
    fdn__shm_stats_get(&ss);
    CHECK_EQ(ss.loans_out, 0);
    CHECK_EQ(ss.borrowed, 0);
    /* Allocated here, never sent, freed there. */
    CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 5000, &m));
    CHECK(m->pool == shared);
    free_elsewhere(m);
    fdn_pool_stats st;
    fdn_pool_stats_get(shared, &st);
    CHECK_EQ(st.buffers_in_use, 0);
    CHECK(st.remote_frees >= 1);
    teardown(&a, &b);
}

/* A session that resumes sends again, on a new connection, what the peer
 * never got: messages of the old connection's pool then go as copies, and
 * that pool goes once they are acknowledged. */
static void test_resume_copies_old_loans(void)
{
    struct side a, b;
    make_node(&a, false, false);
    make_node(&b, false, false);
    a.hold = true;
    fdn_peer *p = pair(&a, &b);
    struct fdn__shm_stats ss;
    fdn__shm_stats_get(&ss);
    CHECK_EQ(ss.pools_mapped, 8);   /* two lanes; each side maps its pool and the other's */
    enum { N = 4 };
    for (uint32_t i = 0; i < N; i++) {
        fdn_msg *m;
        CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 300000, &m));
        CHECK(m->pool != fdn_worker_pool(w));
        tag_msg(m, 40 + i);
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    }
    /* The receiver's data lane goes before it reads a byte of them. */
    struct fdn__lane *l = a.up_peer->lanes[a.up_peer->channel_lane[FDN_CHANNEL_DATA]];
    fdn__tp_conn_close(l->conn);
    RUN_UNTIL(a.num_held == N);
    for (uint32_t i = 0; i < N; i++) {
        CHECK(!fdn_msg_is_borrowed(a.held[i]));   /* sent again, copied */
        CHECK(tagged_payload_ok(a.held[i], 40 + i));
        fdn_msg_free(a.held[i]);
    }
    fdn_node_stats ns;
    fdn_node_stats_get(b.node, &ns);
    CHECK(ns.sessions_resumed >= 1);
    fdn_channel_stats cs;
    CHECK_OK(fdn_peer_channel_stats(p, FDN_CHANNEL_DATA, &cs));
    CHECK_EQ(cs.retransmitted_msgs, N);
    /* Acknowledged: the old pools are gone, the new ones remain. */
    RUN_UNTIL(all_lanes_up(p) && (fdn__shm_stats_get(&ss), ss.pools_mapped == 8));
    CHECK_EQ(a.downs + b.downs, 0);
    teardown(&a, &b);
}

/* Where zero copy cannot be, an ordinary message, counted. */
static void test_fallbacks(void)
{
    /* A TCP peer. */
    struct side a, b;
    make_node(&a, true, false);
    make_node(&b, true, false);
    fdn_peer *p = pair(&a, &b);
    CHECK(!strcmp(fdn_peer_transport(p), "tcp"));
    fdn_msg *m;
    CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 1000, &m));
    CHECK(m->pool == fdn_worker_pool(w));
    tag_msg(m, 7);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == 1);
    fdn_node_stats ns;
    fdn_node_stats_get(b.node, &ns);
    CHECK_EQ(ns.zc_allocs, 0);
    CHECK_EQ(ns.zc_fallbacks, 1);
    CHECK_EQ(fdn_peer_msg_alloc(p, 99, 10, &m), -EINVAL);
    teardown(&a, &b);

    /* Over shm: a size over the largest class, then a pool used up. */
    make_node(&a, false, false);
    make_node(&b, false, false);
    p = pair(&a, &b);
    CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, (4 << 20) + 1, &m));
    CHECK(m->pool == fdn_worker_pool(w));
    fdn_msg_free(m);
    fdn_msg *taken[64];
    int n = 0;
    for (;;) {
        CHECK(n < 64);
        CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 4 << 20, &taken[n]));
        if (taken[n++]->pool == fdn_worker_pool(w))
            break;
    }
    CHECK(n > 4);   /* the default pool holds more than a few */
    fdn_pool_stats st;
    fdn_pool_stats_get(taken[0]->pool, &st);
    CHECK(st.alloc_failures >= 1);
    fdn_node_stats_get(b.node, &ns);
    CHECK_EQ(ns.zc_allocs, (uint64_t)n - 1);
    CHECK_EQ(ns.zc_fallbacks, 2);
    /* The last one, copied, still arrives; the others are dropped unsent. */
    tag_msg(taken[n - 1], 9);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, taken[n - 1]));
    for (int i = 0; i < n - 1; i++)
        fdn_msg_free(taken[i]);
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == 1);
    fdn_node_stats_get(a.node, &ns);
    CHECK_EQ(ns.zc_received, 0);
    teardown(&a, &b);
}

/* Urgent and bulk on one lane, so one ring: 8 loans of 4 MiB in flight and
 * held undelivered at the receiver (its data channel paused) do not keep an
 * urgent message from being delivered. */
static void test_urgent_beside_loans(void)
{
    struct side a, b;
    make_node(&a, false, true);
    make_node(&b, false, true);
    fdn_peer *p = pair(&a, &b);
    CHECK_EQ(p->channel_lane[FDN_CHANNEL_DATA], p->channel_lane[FDN_CHANNEL_COORDINATION]);
    CHECK_OK(fdn_channel_pause(a.up_peer, FDN_CHANNEL_DATA, true));
    struct fdn__shm_stats ss0, ss1;
    fdn__shm_stats_get(&ss0);
    enum { BIG = 8 };
    for (uint32_t i = 0; i < BIG; i++) {
        fdn_msg *m;
        CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 4 << 20, &m));
        CHECK(m->pool != fdn_worker_pool(w));
        tag_msg(m, 100 + i);
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    }
    fdn_msg *u = make_tagged_msg(64, 1);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_COORDINATION, u));
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_COORDINATION] == 1);
    fdn__shm_stats_get(&ss1);
    CHECK_EQ(a.data_when_urgent, 0);
    CHECK_EQ(ss1.borrowed - ss0.borrowed, BIG);   /* all in flight, held by a's core */
    a.hold = true;
    CHECK_OK(fdn_channel_pause(a.up_peer, FDN_CHANNEL_DATA, false));
    RUN_UNTIL(a.num_held == BIG);
    for (int i = 0; i < BIG; i++) {
        CHECK(fdn_msg_is_borrowed(a.held[i]));
        CHECK(tagged_payload_ok(a.held[i], 100 + (uint32_t)i));
        fdn_msg_free(a.held[i]);
    }
    teardown(&a, &b);
}

/* ---- A peer killed while each side holds the other's buffers ------------ */

#define CHILD_COUNT 4

/* The child (this program again, "child ADDR"): a node of its own that
 * connects, sends `count` zero-copy messages, keeps every one it receives,
 * and runs until killed. */
static void child_main(const char *addr, int count)
{
    harness_start((size_t)256 << 20);
    struct side *s = calloc(1, sizeof *s);
    make_node(s, false, false);
    s->hold = true;
    fdn_peer *p;
    if (fdn_node_connect(s->node, addr, &p) < 0)
        _exit(4);
    int sent = 0;
    for (;;) {
        if (fdn_worker_progress(w) == 0)
            fdn_worker_wait(w, 1000000);
        if (sent < count && all_lanes_up(p)) {
            fdn_msg *m;
            if (fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 1 << 20, &m) < 0 ||
                m->pool == fdn_worker_pool(w)) {
                fprintf(stderr, "child: no shared buffer\n");
                _exit(5);
            }
            tag_msg(m, 500 + (uint32_t)sent);
            if (fdn_send(p, FDN_CHANNEL_DATA, m) < 0)
                _exit(6);
            sent++;
        }
    }
}

static void test_peer_killed_with_loans(void)
{
    struct side a;
    make_node(&a, false, false);
    a.hold = true;
    char addr[FDN__ADDR_MAX];
    int idx = fdn_node_listen(a.node, "tcp://127.0.0.1:0");
    CHECK_OK(idx);
    CHECK(fdn_node_listen_addr(a.node, idx, addr, sizeof addr) > 0);
    enum { COUNT = CHILD_COUNT };
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl("/proc/self/exe", "zerocopy_test", "child", addr, (char *)NULL);
        _exit(127);
    }
    RUN_UNTIL(a.ups == 1 && all_lanes_up(a.up_peer) && a.num_held == COUNT);
    fdn_peer *p = a.up_peer;
    CHECK(!strcmp(fdn_peer_transport(p), "shm"));
    /* Ours to the child, which keeps them. */
    fdn_pool *shared = NULL;
    for (uint32_t i = 0; i < COUNT; i++) {
        fdn_msg *m;
        CHECK_OK(fdn_peer_msg_alloc(p, FDN_CHANNEL_DATA, 1 << 20, &m));
        shared = m->pool;
        CHECK(shared != fdn_worker_pool(w));
        tag_msg(m, 900 + i);
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    }
    struct fdn__shm_stats ss;
    RUN_UNTIL((fdn__shm_stats_get(&ss), ss.loans_out == COUNT));
    CHECK_EQ(ss.borrowed, COUNT);
    CHECK_EQ(kill(pid, SIGKILL), 0);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    /* The session cannot resume: it ends, and the messages it retained go. */
    RUN_UNTIL(a.downs == 1);               /* after every connection has finished */
    fdn__shm_stats_get(&ss);
    CHECK_EQ(ss.loans_out, 0);             /* ours, reclaimed from the dead peer */
    CHECK_EQ(ss.segments_mapped, 0);
    CHECK_EQ(ss.pools_mapped, 1);          /* the dead peer's data pool: we hold from it */
    for (int i = 0; i < COUNT; i++) {      /* and it is still there to read */
        CHECK(fdn_msg_is_borrowed(a.held[i]));
        CHECK(tagged_payload_ok(a.held[i], 500 + (uint32_t)i));
        fdn_msg_free(a.held[i]);
    }
    fdn__shm_stats_get(&ss);
    CHECK_EQ(ss.borrowed, 0);
    CHECK_EQ(ss.pools_mapped, 0);          /* unmapped with the last borrowed message */
    fdn_node_destroy(a.node);
    RUN_UNTIL(w->inflight == 0);
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(w), &ps);
    CHECK_EQ(ps.buffers_in_use, 0);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "child"))
        child_main(argv[2], CHILD_COUNT);
    harness_start((size_t)256 << 20);
    RUN(test_sizes_cross_without_copy);
    RUN(test_free_on_another_thread);
    RUN(test_resume_copies_old_loans);
    RUN(test_fallbacks);
    RUN(test_urgent_beside_loans);
    RUN(test_peer_killed_with_loans);
    harness_stop();
    return 0;
}
