/* What the node-level tests share: one application-driven worker that both
 * nodes of a test live on (so a test is single-threaded and replayable), a
 * bounded wait for a condition, and tagged payloads that reveal a message
 * corrupted or delivered as another. Include after test.h. */
#ifndef FDN_TESTS_NODE_HARNESS_H
#define FDN_TESTS_NODE_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/fdn.h>

#include "test.h"

static fdn_runtime *rt;
static fdn_worker *w;

/* Idle waits (up to 1 ms each) a RUN_UNTIL allows before it fails: a bug
 * fails the test instead of hanging it. A test may set its own before
 * including this header. */
#ifndef HARNESS_IDLE_WAITS
#define HARNESS_IDLE_WAITS 20000
#endif

/* Drives the worker until cond holds. */
#define RUN_UNTIL(cond)                                                        \
    do {                                                                       \
        long idle_ = 0;                                                        \
        while (!(cond)) {                                                      \
            if (fdn_worker_progress(w) == 0) {                                 \
                CHECK(++idle_ < HARNESS_IDLE_WAITS);                           \
                fdn_worker_wait(w, 1000000);                                   \
            }                                                                  \
        }                                                                      \
    } while (0)

/* Creates the runtime with one application-driven worker, pool_bytes in its
 * pool, and attaches the calling thread to it. */
static inline void harness_start(size_t pool_bytes)
{
    fdn_runtime_config cfg = {.workers = 1, .app_driven_workers = 1, .no_pinning = true,
                              .pool = {.max_bytes = pool_bytes}};
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    w = fdn_runtime_worker(rt, 0);
    CHECK_OK(fdn_worker_attach(w));
}

static inline void harness_stop(void)
{
    CHECK_OK(fdn_worker_detach(w));
    CHECK_OK(fdn_runtime_stop(rt));
    fdn_runtime_destroy(rt);
}

/* FDN_TEST_SAME_HOST_SHM=1 runs a suite through shared memory: the nodes'
 * same-host shortcut takes over the tcp:// addresses (see
 * core/transport.h). Otherwise it runs over TCP, as it reads. */
static inline bool harness_over_shm(void)
{
    const char *e = getenv("FDN_TEST_SAME_HOST_SHM");
    return e && e[0] == '1';
}

/* One node and what its peer_up/peer_down events told: the last peer that
 * came up (NULL again once that one goes down), how many came up and went
 * down, and the last reason given. A test uses it as it is, or embeds it in
 * a struct side of its own beside what the test counts. */
struct link {
    fdn_node *node;
    fdn_peer *peer;
    int ups, downs, last_down_reason;
};

/* peer_up and peer_down for fdn_node_events, with arg a struct link *. */
static inline void link_on_up(fdn_peer *p, void *arg)
{
    struct link *l = arg;
    l->peer = p;
    l->ups++;
}

/* Forgets p if it was the last peer up: its handle dies with this event. */
static inline void link_on_down(fdn_peer *p, int reason, void *arg)
{
    struct link *l = arg;
    if (l->peer == p)
        l->peer = NULL;
    l->downs++;
    l->last_down_reason = reason;
}

/* Points l's node's peer_up and peer_down events at l. */
static inline void link_watch(struct link *l)
{
    fdn_node_events ev = {.peer_up = link_on_up, .peer_down = link_on_down, .arg = l};
    fdn_node_set_events(l->node, &ev);
}

/* Makes l's node listen on a free loopback TCP port; addr gets the bound
 * address. */
static inline void link_listen_any(struct link *l, char *addr, size_t len)
{
    int idx = fdn_node_listen(l->node, "tcp://127.0.0.1:0");
    CHECK_OK(idx);
    CHECK(fdn_node_listen_addr(l->node, idx, addr, len) > 0);
}

/* Destroys the nodes of two links and checks that every message was
 * freed, sent or not. */
static inline void links_destroy(struct link *a, struct link *b)
{
    fdn_node_destroy(a->node);
    fdn_node_destroy(b->node);
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(w), &ps);
    CHECK_EQ(ps.buffers_in_use, 0);
}

/* Sends m, running the worker while the channel pushes back (as it does
 * while its queue is full, or a session resumes). Bounded like RUN_UNTIL:
 * a channel that never drains fails the test instead of hanging it. */
static inline void send_blocking(fdn_peer *p, int channel, fdn_msg *m)
{
    int rc;
    long idle = 0;
    while ((rc = fdn_send(p, channel, m)) == -EAGAIN) {
        if (fdn_worker_progress(w) == 0) {
            CHECK(++idle < HARNESS_IDLE_WAITS);
            fdn_worker_wait(w, 1000000);
        }
    }
    CHECK_OK(rc);
}

/* True once p (maybe not known yet) is up with every lane it agreed on up
 * too. */
static inline bool all_lanes_up(const fdn_peer *p)
{
    return p && fdn_peer_lanes_up(p);
}

/* Payload of message `tag` (at least 4 bytes): the tag, then bytes derived
 * from it. */
static inline fdn_msg *make_tagged_msg(size_t len, uint32_t tag)
{
    fdn_msg *m;
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(w), len < 4 ? 4 : len, &m));
    uint8_t *d = fdn_msg_data(m);
    memcpy(d, &tag, 4);
    for (size_t i = 4; i < fdn_msg_len(m); i++)
        d[i] = (uint8_t)(i * 131 + tag);
    return m;
}

/* True when m is exactly what make_tagged_msg() built for tag. */
static inline bool tagged_payload_ok(const fdn_msg *m, uint32_t tag)
{
    const uint8_t *d = fdn_msg_data(m);
    if (fdn_msg_len(m) < 4 || memcmp(d, &tag, 4) != 0)
        return false;
    for (size_t i = 4; i < fdn_msg_len(m); i++)
        if (d[i] != (uint8_t)(i * 131 + tag))
            return false;
    return true;
}

#endif
