/* Two nodes over loopback TCP on one application-driven worker: handshake,
 * every channel class, priorities, a stalled consumer, request/response,
 * backpressure, and the peers that must be refused (wrong secret, other
 * cluster, wrong version, garbage, credit violations), using a raw peer that
 * speaks the protocol by hand. No timing thresholds: every wait is for an
 * event, bounded by an iteration cap so a bug fails instead of hanging. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fdn/fdn.h>
#include <fdn/node.h>

#include "core/handshake.h"
#include "core/node_internal.h"
#include "core/wire.h"
#include "test.h"
#include "node_harness.h"
#include "raw_peer.h"

static const uint8_t secret[] = "correct horse battery staple 42";

/* ---- Per-node bookkeeping ------------------------------------------------ */

struct side {
    struct link link;
    /* Arrivals: channel and first payload byte, in delivery order. */
    int arrivals;
    int arrival_channel[4096];
    uint32_t arrival_tag[4096];
    uint64_t bytes_received;
    uint64_t checksum;
};

static uint64_t fnv(const uint8_t *d, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

static void on_message(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    struct side *s = arg;
    uint32_t tag = 0;
    if (fdn_msg_len(m) >= 4)
        memcpy(&tag, fdn_msg_data(m), 4);
    if (s->arrivals < 4096) {
        s->arrival_channel[s->arrivals] = channel;
        s->arrival_tag[s->arrivals] = tag;
    }
    s->arrivals++;
    for (fdn_msg *b = m; b; b = b->next) {
        s->bytes_received += fdn_msg_len(b);
        s->checksum = fnv(fdn_msg_data(b), fdn_msg_len(b), s->checksum);
    }
    fdn_msg_free(m);
}

static const fdn_channel_config user_channels[] = {
    {.name = "telemetry", .priority = 1, .max_message = 4096},
};

static void make_node(struct side *s, const char *cluster, const uint8_t *key, size_t key_len,
                      const fdn_node_config *extra)
{
    memset(s, 0, sizeof *s);
    s->checksum = 14695981039346656037ull;
    fdn_node_config cfg = extra ? *extra : (fdn_node_config){0};
    cfg.worker = w;
    cfg.cluster = cluster;
    cfg.secret = key;
    cfg.secret_len = key_len;
    cfg.channels = user_channels;
    cfg.num_channels = 1;
    cfg.no_same_host_shm = !harness_over_shm();
    CHECK_OK(fdn_node_create(&cfg, &s->link.node));
    link_watch(&s->link);
    for (int c = 0; c < FDN_CHANNEL_FIRST_USER + 1; c++)
        CHECK_OK(fdn_channel_set_handler(s->link.node, c, on_message, s));
}

/* server listens, client connects; returns the client's peer once both are up. */
static fdn_peer *pair_up(struct side *server, struct side *client)
{
    char addr[128];
    link_listen_any(&server->link, addr, sizeof addr);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(client->link.node, addr, &p));
    RUN_UNTIL(client->link.ups == 1 && server->link.ups == 1);
    CHECK(fdn_peer_is_up(p));
    CHECK(memcmp(fdn_peer_node_id(p), fdn_peer_node_id(server->link.peer), 16) != 0);
    return p;
}

static fdn_msg *make_msg(size_t len, uint32_t tag)
{
    fdn_msg *m;
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(w), len, &m));
    uint8_t *d = fdn_msg_data(m);
    for (size_t i = 0; i < len; i++)
        d[i] = (uint8_t)(i * 131 + tag);
    if (len >= 4)
        memcpy(d, &tag, 4);
    return m;
}

/* ---- Tests --------------------------------------------------------------- */

static void test_every_channel_in_order(void)
{
    struct side a, b;
    make_node(&a, NULL, secret, sizeof secret, NULL);
    make_node(&b, NULL, secret, sizeof secret, NULL);
    fdn_peer *p = pair_up(&a, &b);
    CHECK_EQ(fdn_channel_lookup(b.link.node, "telemetry"), FDN_CHANNEL_FIRST_USER);
    CHECK_EQ(fdn_channel_lookup(b.link.node, "nope"), -ENOENT);

    uint64_t seed = 7, expect = 14695981039346656037ull, bytes = 0;
    int sent = 0;
    for (int i = 0; i < 400; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int channel = (int)(seed >> 33) % (FDN_CHANNEL_FIRST_USER + 1);
        size_t max = channel == FDN_CHANNEL_DATA ? 3u << 20 : channel == FDN_CHANNEL_GOSSIP ? 60000 : channel == 4 ? 4096 : 100000;
        size_t len = (seed >> 13) % max;
        fdn_msg *m = make_msg(len, (uint32_t)i);
        send_blocking(p, channel, m);
        sent++;
        (void)expect;
        bytes += len;
    }
    RUN_UNTIL(a.arrivals == sent);
    CHECK_EQ(a.bytes_received, bytes);
    /* Within a channel, arrival order is send order. */
    uint32_t last[8];
    memset(last, 0xff, sizeof last);
    for (int i = 0; i < a.arrivals && i < 4096; i++) {
        int c = a.arrival_channel[i];
        uint32_t tag = a.arrival_tag[i];
        if (tag == 0 && i > 0)
            continue; /* messages under 4 bytes carry no tag */
        if (last[c] != 0xffffffffu)
            CHECK(tag > last[c]);
        last[c] = tag;
    }
    fdn_channel_stats st;
    CHECK_OK(fdn_peer_channel_stats(p, FDN_CHANNEL_DATA, &st));
    CHECK(st.msgs_sent > 0 && st.bytes_sent > 0);
    CHECK_OK(fdn_peer_channel_stats(a.link.peer, FDN_CHANNEL_DATA, &st));
    CHECK(st.msgs_received > 0 && st.msgs_delivered == st.msgs_received);
    links_destroy(&a.link, &b.link);
}

/* An urgent message queued behind a 64 MiB bulk message on a less urgent
 * channel arrives first: on one lane because the bulk message is sent one
 * fragment at a time, on two because it travels on a connection of its own. */
static void urgent_overtakes_bulk(uint8_t lanes)
{
    struct side a, b;
    fdn_node_config cfg = {.lanes = lanes};
    make_node(&a, NULL, secret, sizeof secret, &cfg);
    make_node(&b, NULL, secret, sizeof secret, &cfg);
    fdn_peer *p = pair_up(&a, &b);
    CHECK_EQ(fdn_peer_channel_lane(p, FDN_CHANNEL_DATA), lanes);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_msg(64u << 20, 1)));
    CHECK_OK(fdn_send(p, FDN_CHANNEL_COORDINATION, make_msg(64, 2)));
    RUN_UNTIL(a.arrivals == 2);
    CHECK_EQ(a.arrival_channel[0], FDN_CHANNEL_COORDINATION);
    CHECK_EQ(a.arrival_channel[1], FDN_CHANNEL_DATA);
    links_destroy(&a.link, &b.link);
}

static void test_urgent_overtakes_bulk(void)
{
    urgent_overtakes_bulk(1);
    urgent_overtakes_bulk(2);
}

/* ---- Lanes ----------------------------------------------------------------- */

static bool lane_up(const fdn_peer *p, int lane)
{
    fdn_lane_stats ls;
    return p && fdn_peer_lane_stats(p, lane, &ls) == 0 && ls.up;
}

/* Two lanes by default: the client dials the second once the first is up,
 * the server binds it to the same peer (one peer_up on each side), and each
 * channel's bytes travel on its own lane. */
static void test_lanes_carry_their_channels(void)
{
    struct side a, b;
    fdn_node_config cfg = {.lanes = 3, .data = {.lane = 3}};
    make_node(&a, NULL, secret, sizeof secret, &cfg);
    make_node(&b, NULL, secret, sizeof secret, &cfg);
    fdn_peer *p = pair_up(&a, &b);
    CHECK_EQ(fdn_peer_lane_count(p), 3);
    RUN_UNTIL(lane_up(p, 2) && lane_up(p, 3) && lane_up(a.link.peer, 2) &&
              lane_up(a.link.peer, 3));
    CHECK_EQ(a.link.ups, 1);
    CHECK_EQ(b.link.ups, 1);
    CHECK_EQ(fdn_peer_channel_lane(p, FDN_CHANNEL_COORDINATION), 1);
    CHECK_EQ(fdn_peer_channel_lane(p, FDN_CHANNEL_DATA), 3);
    CHECK_EQ(fdn_peer_lane_stats(p, 4, &(fdn_lane_stats){0}), -EINVAL);

    fdn_lane_stats before[4], after;
    for (int l = 1; l <= 3; l++)
        CHECK_OK(fdn_peer_lane_stats(p, l, &before[l]));
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_msg(8u << 20, 1)));
    CHECK_OK(fdn_send(p, FDN_CHANNEL_COORDINATION, make_msg(100, 2)));
    RUN_UNTIL(a.arrivals == 2);
    CHECK_OK(fdn_peer_lane_stats(p, 3, &after));
    CHECK(after.bytes_sent - before[3].bytes_sent >= 8u << 20);
    CHECK_EQ(after.max_inflight_bytes, 1u << 20);   /* bulk only: the deep default */
    CHECK_OK(fdn_peer_lane_stats(p, 1, &after));
    CHECK(after.bytes_sent - before[1].bytes_sent < 1u << 20);  /* the ping, no bulk */
    CHECK_EQ(after.max_inflight_bytes, 128u << 10);
    CHECK_OK(fdn_peer_lane_stats(p, 2, &after));
    CHECK_EQ(after.bytes_sent, before[2].bytes_sent);           /* nothing mapped there */
    CHECK_OK(fdn_peer_lane_stats(a.link.peer, 3, &after));
    CHECK(after.bytes_received >= 8u << 20);

    /* Back the other way, and a request on the data lane answered there. */
    CHECK_OK(fdn_send(a.link.peer, FDN_CHANNEL_DATA, make_msg(3u << 20, 3)));
    RUN_UNTIL(b.arrivals == 1);
    CHECK_EQ(b.bytes_received, 3u << 20);
    links_destroy(&a.link, &b.link);
}

/* Two nodes use the smaller lane count; channels on lanes beyond it fall
 * back to lane 1. */
static void test_lane_count_negotiated_down(void)
{
    struct side a, b;
    make_node(&a, NULL, secret, sizeof secret, &(fdn_node_config){.lanes = 1});
    make_node(&b, NULL, secret, sizeof secret, &(fdn_node_config){.lanes = 4});
    fdn_peer *p = pair_up(&a, &b);
    CHECK_EQ(fdn_peer_lane_count(p), 1);
    CHECK_EQ(fdn_peer_lane_count(a.link.peer), 1);
    CHECK_EQ(fdn_peer_channel_lane(p, FDN_CHANNEL_DATA), 1);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_msg(2u << 20, 1)));
    CHECK_OK(fdn_send(a.link.peer, FDN_CHANNEL_DATA, make_msg(2u << 20, 2)));
    RUN_UNTIL(a.arrivals == 1 && b.arrivals == 1);
    links_destroy(&a.link, &b.link);

    /* A channel on a lane the node does not have is a configuration error. */
    fdn_node *n;
    fdn_node_config bad = {.worker = w, .secret = secret, .secret_len = sizeof secret,
                           .lanes = 2, .data = {.lane = 3}};
    CHECK_EQ(fdn_node_create(&bad, &n), -EINVAL);
    bad.data.lane = 0;
    bad.lanes = FDN_MAX_LANES + 1;
    CHECK_EQ(fdn_node_create(&bad, &n), -EINVAL);
}

/* Losing any lane no longer loses the peer: the session resumes (see
 * resume_test.c), without an event on either side. */
static void test_lane_loss_resumes_session(void)
{
    struct side a, b;
    make_node(&a, NULL, secret, sizeof secret, NULL);
    make_node(&b, NULL, secret, sizeof secret, NULL);
    fdn_peer *p = pair_up(&a, &b);
    RUN_UNTIL(lane_up(p, 2) && lane_up(a.link.peer, 2));
    fdn__tp_conn_close(p->lanes[1]->conn);
    RUN_UNTIL(!fdn_peer_is_up(p));
    RUN_UNTIL(fdn_peer_is_up(p) && lane_up(p, 2) && lane_up(a.link.peer, 2));
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_msg(1 << 20, 1)));
    RUN_UNTIL(a.arrivals == 1);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    links_destroy(&a.link, &b.link);
}

/* The data consumer stops: the data channel stalls on credit while the
 * coordination channel keeps delivering; resuming delivers everything. */
static void test_stalled_consumer_does_not_block_others(void)
{
    struct side a, b;
    fdn_node_config small = {.data = {.max_message = 1 << 20, .credit_window = 2 << 20}};
    make_node(&a, NULL, secret, sizeof secret, &small);
    make_node(&b, NULL, secret, sizeof secret, &small);
    fdn_peer *p = pair_up(&a, &b);
    CHECK_OK(fdn_channel_pause(a.link.peer, FDN_CHANNEL_DATA, true));
    for (int i = 0; i < 10; i++)
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_msg(1 << 20, (uint32_t)i)));
    /* Run until the sender has used its window. */
    fdn_channel_stats st;
    RUN_UNTIL((fdn_peer_channel_stats(p, FDN_CHANNEL_DATA, &st), st.credit_stalls > 0));
    for (int i = 0; i < 50; i++)
        CHECK_OK(fdn_send(p, FDN_CHANNEL_COORDINATION, make_msg(64, 1000u + (uint32_t)i)));
    RUN_UNTIL(a.arrivals == 50);
    for (int i = 0; i < 50; i++)
        CHECK_EQ(a.arrival_channel[i], FDN_CHANNEL_COORDINATION);
    CHECK_OK(fdn_peer_channel_stats(a.link.peer, FDN_CHANNEL_DATA, &st));
    CHECK(st.recv_queued_msgs >= 1 && st.recv_queued_msgs <= 2); /* the window, no more */
    CHECK_OK(fdn_channel_pause(a.link.peer, FDN_CHANNEL_DATA, false));
    RUN_UNTIL(a.arrivals == 60);
    links_destroy(&a.link, &b.link);
}

/* An urgent message goes to its handler from the receive path only when
 * nothing of its class waits (core/peer.c, deliver_now): one decoded while
 * another peer's urgent delivery sits in the run queue goes after it, in
 * the order the run queue gives, not before. (Over shm the second message
 * is decoded in the very pass that runs the queued delivery; over TCP it
 * arrives a pass later, and the order holds either way.) */
static void test_urgent_deliveries_keep_their_order(void)
{
    struct side a, b, c;
    make_node(&a, NULL, secret, sizeof secret, NULL);
    make_node(&b, NULL, secret, sizeof secret, NULL);
    make_node(&c, NULL, secret, sizeof secret, NULL);
    fdn_peer *to_a_from_b = pair_up(&a, &b);
    fdn_peer *b_at_a = a.link.peer;
    char addr[128];
    link_listen_any(&a.link, addr, sizeof addr);
    fdn_peer *to_a_from_c;
    CHECK_OK(fdn_node_connect(c.link.node, addr, &to_a_from_c));
    RUN_UNTIL(c.link.ups == 1 && a.link.ups == 2);

    CHECK_OK(fdn_channel_pause(b_at_a, FDN_CHANNEL_COORDINATION, true));
    CHECK_OK(fdn_send(to_a_from_b, FDN_CHANNEL_COORDINATION, make_msg(64, 1)));
    fdn_channel_stats st;
    RUN_UNTIL((fdn_peer_channel_stats(b_at_a, FDN_CHANNEL_COORDINATION, &st),
               st.recv_queued_msgs == 1));
    CHECK_OK(fdn_send(to_a_from_c, FDN_CHANNEL_COORDINATION, make_msg(64, 2)));
    CHECK_OK(fdn_channel_pause(b_at_a, FDN_CHANNEL_COORDINATION, false)); /* queues b's */
    RUN_UNTIL(a.arrivals == 2);
    CHECK_EQ(a.arrival_tag[0], 1);
    CHECK_EQ(a.arrival_tag[1], 2);

    /* With nothing waiting, the next ones go at once, in order. */
    for (uint32_t i = 3; i < 10; i++)
        CHECK_OK(fdn_send(to_a_from_b, FDN_CHANNEL_COORDINATION, make_msg(64, i)));
    RUN_UNTIL(a.arrivals == 9);
    for (int i = 0; i < 9; i++)
        CHECK_EQ(a.arrival_tag[i], (uint32_t)i + 1);
    fdn_node_destroy(c.link.node);
    links_destroy(&a.link, &b.link);
}

/* ---- Request / response -------------------------------------------------- */

struct reply_state {
    int calls, status;
    uint32_t tag;
};

static void on_request(fdn_peer *p, int channel, uint64_t id, fdn_msg *req, void *arg)
{
    int *mode = arg;
    if (*mode == 0) { /* echo */
        CHECK_OK(fdn_respond(p, channel, id, req));
    } else {          /* never answer */
        fdn_msg_free(req);
    }
}

static void on_reply(fdn_peer *p, int status, fdn_msg *resp, void *arg)
{
    (void)p;
    struct reply_state *r = arg;
    r->calls++;
    r->status = status;
    if (resp) {
        memcpy(&r->tag, fdn_msg_data(resp), 4);
        fdn_msg_free(resp);
    }
}

static void test_request_response(void)
{
    struct side a, b;
    make_node(&a, NULL, secret, sizeof secret, NULL);
    make_node(&b, NULL, secret, sizeof secret, NULL);
    int mode = 0;
    CHECK_OK(fdn_channel_set_request_handler(a.link.node, FDN_CHANNEL_COORDINATION, on_request,
                                             &mode));
    fdn_peer *p = pair_up(&a, &b);

    struct reply_state r[3] = {{0}};
    uint64_t id;
    CHECK_OK(fdn_request(p, FDN_CHANNEL_COORDINATION, make_msg(64, 77), 0, on_reply, &r[0], &id));
    RUN_UNTIL(r[0].calls == 1);
    CHECK_EQ(r[0].status, 0);
    CHECK_EQ(r[0].tag, 77);
    CHECK_EQ(fdn_request_cancel(p, id), -ENOENT);

    mode = 1; /* the server stops answering */
    CHECK_OK(fdn_request(p, FDN_CHANNEL_COORDINATION, make_msg(64, 78), 20000000, on_reply,
                         &r[1], NULL));
    RUN_UNTIL(r[1].calls == 1);
    CHECK_EQ(r[1].status, -ETIMEDOUT);

    CHECK_OK(fdn_request(p, FDN_CHANNEL_COORDINATION, make_msg(64, 79), 0, on_reply, &r[2], &id));
    CHECK_OK(fdn_request_cancel(p, id));
    CHECK_EQ(r[2].calls, 1);
    CHECK_EQ(r[2].status, -ECANCELED);

    fdn_channel_stats st;
    CHECK_OK(fdn_peer_channel_stats(p, FDN_CHANNEL_COORDINATION, &st));
    CHECK_EQ(st.rtt_count, 1);
    CHECK(st.rtt_p50_ns > 0 && st.rtt_p50_ns <= st.rtt_max_ns);

    /* A request still pending when the peer goes down gets -ENOTCONN. */
    struct reply_state late = {0};
    CHECK_OK(fdn_request(p, FDN_CHANNEL_COORDINATION, make_msg(64, 80), 0, on_reply, &late, NULL));
    fdn_node_destroy(a.link.node);
    RUN_UNTIL(late.calls == 1);
    CHECK_EQ(late.status, -ENOTCONN);
    RUN_UNTIL(b.link.downs == 1);
    fdn_node_destroy(b.link.node);
}

/* ---- Backpressure -------------------------------------------------------- */

static int writable_runs;

static int on_writable(fdn_worker *worker, fdn_task *t)
{
    (void)worker;
    (void)t;
    writable_runs++;
    return FDN_TASK_DONE;
}

static void test_full_channel_is_eagain(void)
{
    struct side a, b;
    fdn_node_config cfg = {.data = {.max_message = 1 << 20, .credit_window = 1 << 20,
                                    .max_queued = 4}};
    make_node(&a, NULL, secret, sizeof secret, &cfg);
    make_node(&b, NULL, secret, sizeof secret, &cfg);
    fdn_peer *p = pair_up(&a, &b);
    CHECK_OK(fdn_channel_pause(a.link.peer, FDN_CHANNEL_DATA, true));
    int accepted = 0, rc;
    fdn_msg *m = make_msg(1 << 20, 0);
    while ((rc = fdn_send(p, FDN_CHANNEL_DATA, m)) == 0) {
        accepted++;
        m = make_msg(1 << 20, (uint32_t)accepted);
        fdn_worker_progress(w);
    }
    CHECK_EQ(rc, -EAGAIN); /* bounded: the caller still owns m */
    CHECK(accepted >= 4 && accepted <= 6);
    fdn_channel_stats st;
    CHECK_OK(fdn_peer_channel_stats(p, FDN_CHANNEL_DATA, &st));
    CHECK_EQ(st.send_eagain, 1);
    fdn_task t;
    fdn_task_init(&t, on_writable, NULL, FDN_PRIO_DEFAULT);
    CHECK_OK(fdn_send_notify(p, FDN_CHANNEL_DATA, &t));
    CHECK_OK(fdn_channel_pause(a.link.peer, FDN_CHANNEL_DATA, false));
    RUN_UNTIL(writable_runs == 1);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    RUN_UNTIL(a.arrivals == accepted + 1);
    links_destroy(&a.link, &b.link);
}

/* Limits are what both ends agreed: a node that allows 64 MiB talking to
 * one that allows 1 MiB refuses 2 MiB at fdn_send, not on the wire. */
static void test_agreed_size_limit(void)
{
    struct side a, b;
    fdn_node_config small = {.data = {.max_message = 1 << 20}};
    make_node(&a, NULL, secret, sizeof secret, &small);
    make_node(&b, NULL, secret, sizeof secret, NULL);
    fdn_peer *p = pair_up(&a, &b);
    CHECK_EQ(fdn_send(p, FDN_CHANNEL_DATA, make_msg(2 << 20, 1)), -EMSGSIZE);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_msg(1 << 20, 2)));
    RUN_UNTIL(a.arrivals == 1);
    fdn_node_stats ns;
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.limit_violations, 0);
    links_destroy(&a.link, &b.link);
}

/* Two nodes configured with different max_fragment talk at the smaller
 * one, both ways: a message of many fragments, and small messages packed
 * into frames, none over what the smaller side accepts. */
static void test_agreed_fragment_size(void)
{
    struct side a, b;
    fdn_node_config small = {.max_fragment = 4096};
    make_node(&a, NULL, secret, sizeof secret, &small);
    make_node(&b, NULL, secret, sizeof secret, NULL);
    fdn_peer *to_a = pair_up(&a, &b);
    fdn_peer *to_b = a.link.peer;
    uint64_t expect = 14695981039346656037ull;
    for (uint32_t i = 0; i < 64; i++) {
        fdn_msg *m = make_msg(i ? 200 : 200000, i);
        expect = fnv(fdn_msg_data(m), fdn_msg_len(m), expect);
        fdn_msg *copy = make_msg(i ? 200 : 200000, i);
        CHECK_OK(fdn_send(to_a, FDN_CHANNEL_DATA, m));
        CHECK_OK(fdn_send(to_b, FDN_CHANNEL_DATA, copy));
    }
    RUN_UNTIL(a.arrivals == 64 && b.arrivals == 64);
    CHECK_EQ(a.checksum, expect);
    CHECK_EQ(b.checksum, expect);
    for (struct side *s = &a; s; s = s == &a ? &b : NULL) {
        fdn_node_stats ns;
        fdn_node_stats_get(s->link.node, &ns);
        CHECK_EQ(ns.limit_violations, 0);
        CHECK_EQ(ns.sessions_resumed, 0);
    }
    links_destroy(&a.link, &b.link);

    /* Frames too small to be worth their header are a configuration error. */
    fdn_node *n;
    fdn_node_config bad = {.worker = w, .secret = secret, .secret_len = sizeof secret,
                           .max_fragment = 511};
    CHECK_EQ(fdn_node_create(&bad, &n), -EINVAL);
    bad.max_fragment = 512;
    CHECK_OK(fdn_node_create(&bad, &n));
    fdn_node_destroy(n);
}

/* Zero-copy sends (opt-in) deliver the same bytes. */
static void test_zerocopy_sends(void)
{
    struct side a, b;
    fdn_node_config zc = {.zerocopy_min = 16384};
    make_node(&a, NULL, secret, sizeof secret, &zc);
    make_node(&b, NULL, secret, sizeof secret, &zc);
    fdn_peer *p = pair_up(&a, &b);
    uint64_t expect = 14695981039346656037ull;
    for (int i = 0; i < 8; i++) {
        fdn_msg *m = make_msg((size_t)(100000 + i * 77777), (uint32_t)i);
        expect = fnv(fdn_msg_data(m), fdn_msg_len(m), expect);
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    }
    RUN_UNTIL(a.arrivals == 8);
    CHECK_EQ(a.checksum, expect);
    links_destroy(&a.link, &b.link);
}

/* Twenty clients on one server, traffic both ways, then half close from the
 * client side and the server closes the rest: every close is reported once,
 * as orderly, on both sides, and nothing is left allocated. */
#define MANY 20

static fdn_peer *server_peers[MANY];
static int server_peer_count;

static void on_server_up(fdn_peer *p, void *arg)
{
    link_on_up(p, arg);
    server_peers[server_peer_count++] = p;
}

/* A handle is invalid once peer_down returns: forget it. */
static void on_server_down(fdn_peer *p, int reason, void *arg)
{
    for (int i = 0; i < server_peer_count; i++)
        if (server_peers[i] == p)
            server_peers[i] = NULL;
    link_on_down(p, reason, arg);
}

static void on_echo(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)arg;
    CHECK_OK(fdn_send(p, channel, m)); /* the same buffer goes back */
}

static void test_many_peers_and_clean_close(void)
{
    struct side server, clients[MANY];
    char addr[128];
    make_node(&server, NULL, secret, sizeof secret, NULL);
    fdn_node_events ev = {.peer_up = on_server_up, .peer_down = on_server_down,
                          .arg = &server.link};
    fdn_node_set_events(server.link.node, &ev);
    CHECK_OK(fdn_channel_set_handler(server.link.node, FDN_CHANNEL_EVENTS, on_echo, NULL));
    server_peer_count = 0;
    link_listen_any(&server.link, addr, sizeof addr);
    fdn_peer *peers[MANY];
    for (int i = 0; i < MANY; i++) {
        make_node(&clients[i], NULL, secret, sizeof secret, NULL);
        CHECK_OK(fdn_node_connect(clients[i].link.node, addr, &peers[i]));
    }
    RUN_UNTIL(server.link.ups == MANY);
    for (int i = 0; i < MANY; i++) {
        RUN_UNTIL(clients[i].link.ups == 1);
        for (int k = 0; k < 10; k++)
            CHECK_OK(fdn_send(peers[i], FDN_CHANNEL_EVENTS, make_msg(1000, (uint32_t)k)));
    }
    for (int i = 0; i < MANY; i++)
        RUN_UNTIL(clients[i].arrivals == 10);

    for (int i = 0; i < MANY / 2; i++)   /* clients close */
        fdn_peer_close(peers[i]);
    for (int i = 0; i < MANY / 2; i++)
        RUN_UNTIL(clients[i].link.downs == 1);
    RUN_UNTIL(server.link.downs == MANY / 2);
    CHECK_EQ(server.link.last_down_reason, 0);
    /* The server closes the others: find them among its peers still up. */
    for (int i = 0; i < server_peer_count; i++)
        if (server_peers[i])
            fdn_peer_close(server_peers[i]);
    RUN_UNTIL(server.link.downs == MANY);
    for (int i = MANY / 2; i < MANY; i++) {
        RUN_UNTIL(clients[i].link.downs == 1);
        CHECK_EQ(clients[i].link.last_down_reason, 0);
    }
    for (int i = 0; i < MANY; i++)
        fdn_node_destroy(clients[i].link.node);
    fdn_node_destroy(server.link.node);
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(w), &ps);
    CHECK_EQ(ps.buffers_in_use, 0);
}

/* ---- Peers that must be refused ------------------------------------------ */

static void test_wrong_secret_and_cluster(void)
{
    static const uint8_t other[] = "a different secret of 32 bytes!";
    struct side a, b;
    char addr[128];
    make_node(&a, NULL, secret, sizeof secret, NULL);
    make_node(&b, NULL, other, sizeof other, NULL);
    link_listen_any(&a.link, addr, sizeof addr);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(b.link.node, addr, &p));
    /* The client proves itself first; the server refuses it, counts it and
     * closes without a word. */
    RUN_UNTIL(b.link.downs == 1);
    CHECK_EQ(b.link.last_down_reason, -ECONNABORTED);
    CHECK_EQ(a.link.ups + b.link.ups, 0);
    fdn_node_stats ns;
    RUN_UNTIL((fdn_node_stats_get(a.link.node, &ns), ns.auth_failures == 1));
    fdn_node_destroy(b.link.node);

    make_node(&b, "another-cluster", secret, sizeof secret, NULL);
    CHECK_OK(fdn_node_connect(b.link.node, addr, &p));
    RUN_UNTIL(b.link.downs == 1);
    CHECK_EQ(b.link.last_down_reason, -EPERM);
    fdn_node_stats_get(a.link.node, &ns);
    CHECK(ns.handshake_failures >= 1);
    links_destroy(&a.link, &b.link);
}

/* A raw peer's HELLO at version 1, the one nodes speak. */
static const struct raw_hello speaks_v1 = {.version_min = 1, .version_max = 1};

static void test_raw_peers_refused(void)
{
    struct side a;
    char addr[128];
    make_node(&a, NULL, secret, sizeof secret, NULL);
    link_listen_any(&a.link, addr, sizeof addr);
    fdn_node_stats ns;

    /* Garbage: not even a frame. */
    struct raw_peer r;
    raw_peer_connect(&r, addr);
    CHECK_EQ(send(r.fd, "GET / HTTP/1.1\r\n\r\n", 18, MSG_NOSIGNAL), 18);
    RUN_UNTIL(!raw_pump(&r));
    raw_peer_close(&r);
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.protocol_errors, 1);

    /* A version the node does not speak. */
    raw_peer_connect(&r, addr);
    CHECK(!raw_peer_handshake(&r, secret, sizeof secret,
                              (struct raw_hello){.version_min = 2, .version_max = 3}));
    raw_peer_close(&r);
    RUN_UNTIL((fdn_node_stats_get(a.link.node, &ns), ns.handshake_failures == 1));

    /* Authenticated, then more DATA than the agreed 1 MiB window while the
     * node's consumer is paused (so it grants nothing back): the node must
     * cut the peer off for breaking its limits. */
    raw_peer_connect(&r, addr);
    CHECK(raw_peer_handshake(&r, secret, sizeof secret, speaks_v1));
    RUN_UNTIL(a.link.ups == 1);
    CHECK_OK(fdn_channel_pause(a.link.peer, FDN_CHANNEL_DATA, true));
    static uint8_t chunk[1 << 16];
    bool open = true;
    for (uint64_t msg_id = 0; msg_id < 2 && open; msg_id++) {
        for (uint32_t off = 0; off < (1u << 20) && open; off += sizeof chunk) {
            struct fdn__frame_hdr h = {
                .type = FDN__FRAME_DATA, .channel = FDN_CHANNEL_DATA, .msg_id = msg_id,
                .frag_len = sizeof chunk, .offset = off, .total_len = 1 << 20,
                .flags = (uint16_t)((off == 0 ? FDN__FRAME_FIRST : 0) |
                                    (off + sizeof chunk == (1u << 20) ? FDN__FRAME_LAST : 0)),
            };
            open = raw_send_frame(r.fd, &h, chunk);
        }
    }
    RUN_UNTIL(!raw_pump(&r));
    raw_peer_close(&r);
    RUN_UNTIL(a.link.downs == 1);
    CHECK_EQ(a.link.last_down_reason, -ENOSPC);
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.limit_violations, 1);
    CHECK_EQ(ns.protocol_errors, 1); /* the garbage, earlier */

    /* An authenticated connection that claims to be lane 1 of a session the
     * node never opened is refused, and never becomes a peer. */
    raw_peer_connect(&r, addr);
    CHECK(raw_peer_handshake(&r, secret, sizeof secret,
                             (struct raw_hello){.version_min = 1, .version_max = 1,
                                                .session = 0x1234, .lane = 1}));
    RUN_UNTIL(!raw_pump(&r));
    raw_peer_close(&r);
    RUN_UNTIL((fdn_node_stats_get(a.link.node, &ns), ns.resumes_refused == 1));
    CHECK_EQ(ns.protocol_errors, 1);
    CHECK_EQ(a.link.ups, 1);
    CHECK_EQ(a.link.downs, 1);
    fdn_node_destroy(a.link.node);
}

/* The node reads a byte stream, and a frame may be cut anywhere, its header
 * too: a header that arrived whole is decoded where it lies, one cut across
 * receives is gathered first. A raw peer writes 64 messages, every other
 * one with a trace extension (a 64-byte header), in pieces of 1 to 13 bytes
 * with the worker running between them: every message arrives, in order,
 * with its bytes intact. */
static void test_frames_cut_anywhere(void)
{
    struct side a;
    char addr[128];
    /* The raw peer never resumes: a short session timeout ends it soon. */
    const fdn_node_config brief = {.session_timeout_ns = 200 * 1000 * 1000};
    make_node(&a, NULL, secret, sizeof secret, &brief);
    link_listen_any(&a.link, addr, sizeof addr);
    struct raw_peer r;
    raw_peer_connect(&r, addr);
    CHECK(raw_peer_handshake(&r, secret, sizeof secret, speaks_v1));
    RUN_UNTIL(a.link.ups == 1);

    enum { MSGS = 64 };
    static uint8_t stream[MSGS * (FDN__FRAME_MAX_HDR_SIZE + 4 + MSGS)];
    size_t len = 0;
    uint64_t sum = 14695981039346656037ull;
    for (uint32_t i = 0; i < MSGS; i++) {
        uint8_t payload[4 + MSGS];
        size_t n = 4 + i;
        memcpy(payload, &i, 4);
        for (size_t k = 4; k < n; k++)
            payload[k] = (uint8_t)(i * 7 + k);
        struct fdn__frame_hdr h = {
            .type = FDN__FRAME_DATA, .channel = FDN_CHANNEL_DATA, .seq = i,
            .frag_len = (uint32_t)n, .total_len = n,
            .flags = (uint16_t)(FDN__FRAME_FIRST | FDN__FRAME_LAST |
                                (i % 2 ? FDN__FRAME_TRACE : 0)),
        };
        memset(h.trace.trace_id, 0xab, sizeof h.trace.trace_id);
        memset(h.trace.span_id, 0xcd, sizeof h.trace.span_id);
        len += fdn__frame_encode(&h, stream + len);
        memcpy(stream + len, payload, n);
        len += n;
        sum = fnv(payload, n, sum);
    }
    static const size_t cuts[] = {1, 2, 3, 5, 7, 11, 13};
    for (size_t off = 0, k = 0; off < len; k++) {
        size_t n = cuts[k % (sizeof cuts / sizeof cuts[0])];
        if (n > len - off)
            n = len - off;
        CHECK(raw_send_all(r.fd, stream + off, n));
        off += n;
        for (int pass = 0; pass < 16; pass++)
            fdn_worker_progress(w);
    }
    RUN_UNTIL(a.arrivals == MSGS);
    for (uint32_t i = 0; i < MSGS; i++) {
        CHECK_EQ(a.arrival_channel[i], FDN_CHANNEL_DATA);
        CHECK_EQ(a.arrival_tag[i], i);
    }
    CHECK_EQ(a.checksum, sum);
    CHECK_EQ(a.link.downs, 0);
    raw_peer_close(&r);
    RUN_UNTIL(a.link.downs == 1);
    fdn_node_destroy(a.link.node);
}

/* ---- Packing ------------------------------------------------------------- */

/* Message i of a stream of small messages: 0 to 600 bytes (some too large
 * to pack), every byte derived from i and its place (the first four carry
 * all of i), so a message lost, repeated, reordered or cut is caught. */
static size_t small_len(uint32_t i) { return (size_t)(i * 106u % 601u); }

static uint8_t small_byte(uint32_t i, size_t k)
{
    return (uint8_t)((i >> (k % 4 * 8)) ^ (k * 131));
}

static fdn_msg *small_msg(uint32_t i)
{
    fdn_msg *m;
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(w), small_len(i), &m));
    for (size_t k = 0; k < small_len(i); k++)
        ((uint8_t *)fdn_msg_data(m))[k] = small_byte(i, k);
    return m;
}

/* What a stream's receiver saw: per channel, the index the next message
 * must have; and how many were not what they should be. */
struct small_stream {
    uint32_t next[FDN_CHANNEL_FIRST_USER];
    int bad;
};

static void on_small(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    struct small_stream *s = arg;
    uint32_t i = s->next[channel]++;
    bool ok = !m->next && fdn_msg_len(m) == small_len(i);
    for (size_t k = 0; ok && k < fdn_msg_len(m); k++)
        ok = ((const uint8_t *)fdn_msg_data(m))[k] == small_byte(i, k);
    s->bad += !ok;
    fdn_msg_free(m);
}

/* Responses must come back in order, each with its request's bytes. */
struct small_replies {
    uint32_t next;
    int bad;
};

static void on_small_reply(fdn_peer *p, int status, fdn_msg *resp, void *arg)
{
    (void)p;
    struct small_replies *r = arg;
    r->bad += status != 0 || !resp || !tagged_payload_ok(resp, r->next);
    r->next++;
    fdn_msg_free(resp);
}

static fdn_node_stats node_stats(const fdn_node *n)
{
    fdn_node_stats ns;
    fdn_node_stats_get(n, &ns);
    return ns;
}

static uint64_t sequence_errors(fdn_node *n) { return node_stats(n).sequence_errors; }

/* Small messages streamed in bursts, faster than the peer drains them, so
 * the lanes find many queued when they pump: on a reliable channel (its
 * own lane) with requests among them, and on a best-effort one. Every
 * message arrives once, in order, intact, every request is answered, and
 * packed frames carried many of them; what one node counts as sent packed
 * the other counts as received packed. Requests and responses never go
 * packed (the responder, which sends nothing else, packs nothing), nor do
 * messages over FDN__PACK_MSG_MAX. A message misnumbered in a packed frame
 * is a sequence error, which resumes the session to send it again, and
 * again: the waits stop at the first. */
static void test_small_messages_packed(void)
{
    enum { SMALL = 3000, BURST = 250 };
    struct side a, b;
    fdn_node_config deep = {.data = {.max_queued = 2 * SMALL}};   /* requests never wait */
    make_node(&a, NULL, secret, sizeof secret, &deep);
    make_node(&b, NULL, secret, sizeof secret, &deep);
    int echo = 0;
    struct small_stream in = {0};
    CHECK_OK(fdn_channel_set_request_handler(a.link.node, FDN_CHANNEL_DATA, on_request, &echo));
    CHECK_OK(fdn_channel_set_handler(a.link.node, FDN_CHANNEL_DATA, on_small, &in));
    CHECK_OK(fdn_channel_set_handler(a.link.node, FDN_CHANNEL_GOSSIP, on_small, &in));
    fdn_peer *p = pair_up(&a, &b);
    RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
    struct small_replies r = {0};
    uint32_t requests = 0;
    for (uint32_t i = 0; i < SMALL; i++) {
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, small_msg(i)));
        send_blocking(p, FDN_CHANNEL_GOSSIP, small_msg(i));
        if (i % 97 == 0)
            CHECK_OK(fdn_request(p, FDN_CHANNEL_DATA, make_tagged_msg(64, requests++), 0,
                                 on_small_reply, &r, NULL));
        if (i % BURST == BURST - 1) {
            fdn_worker_progress(w);
            CHECK_EQ(sequence_errors(a.link.node), 0);
        }
    }
    RUN_UNTIL((in.next[FDN_CHANNEL_DATA] == SMALL && in.next[FDN_CHANNEL_GOSSIP] == SMALL &&
               r.next == requests) || sequence_errors(a.link.node));
    CHECK_EQ(sequence_errors(a.link.node), 0);
    CHECK_EQ(in.bad + r.bad, 0);
    CHECK_EQ(a.arrivals + b.arrivals, 0);   /* nothing delivered as a plain message elsewhere */
    fdn_node_stats sa, sb;
    fdn_node_stats_get(b.link.node, &sb);
    fdn_node_stats_get(a.link.node, &sa);
    printf("   %" PRIu64 " messages in %" PRIu64 " packed frames\n", sb.packed_msgs_sent,
           sb.packed_frames_sent);
    CHECK(sb.packed_frames_sent > 0);
    CHECK(sb.packed_msgs_sent >= 2 * sb.packed_frames_sent);
    CHECK_EQ(sa.packed_frames_received, sb.packed_frames_sent);
    CHECK_EQ(sa.packed_msgs_received, sb.packed_msgs_sent);
    CHECK_EQ(sa.packed_frames_sent + sb.packed_frames_received, 0);
    CHECK_EQ(sa.protocol_errors + sb.protocol_errors, 0);

    /* A burst of messages just over FDN__PACK_MSG_MAX: each in a frame of
     * its own. */
    for (uint32_t i = 0; i < BURST; i++)
        send_blocking(p, FDN_CHANNEL_EVENTS, make_msg(FDN__PACK_MSG_MAX + 1 + i % 64, i));
    RUN_UNTIL(a.arrivals == BURST);
    fdn_node_stats after;
    fdn_node_stats_get(b.link.node, &after);
    CHECK_EQ(after.packed_frames_sent, sb.packed_frames_sent);
    links_destroy(&a.link, &b.link);
}

/* A message sent while its lane has nothing else to send goes straight
 * to the transport (sent_at_once): each of a ping-pong's. A burst goes at
 * once only while the lane has a free batch; the rest queue, and pump sends
 * them packed. Either way every message arrives once, in order, intact. */
static void test_idle_lane_sends_at_once(void)
{
    enum { PINGS = 200, BURST = 300 };
    struct side a, b;
    make_node(&a, NULL, secret, sizeof secret, NULL);
    make_node(&b, NULL, secret, sizeof secret, NULL);
    struct small_stream in = {0};
    CHECK_OK(fdn_channel_set_handler(a.link.node, FDN_CHANNEL_DATA, on_small, &in));
    fdn_peer *p = pair_up(&a, &b);
    RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
    uint64_t before = node_stats(b.link.node).sent_at_once;
    for (uint32_t i = 0; i < PINGS; i++) {
        CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, small_msg(i)));
        RUN_UNTIL(in.next[FDN_CHANNEL_DATA] == i + 1);
    }
    CHECK_EQ(node_stats(b.link.node).sent_at_once - before, PINGS);

    before = node_stats(b.link.node).sent_at_once;
    for (uint32_t i = PINGS; i < PINGS + BURST; i++)
        send_blocking(p, FDN_CHANNEL_DATA, small_msg(i));
    RUN_UNTIL(in.next[FDN_CHANNEL_DATA] == PINGS + BURST);
    fdn_node_stats ns = node_stats(b.link.node);
    uint64_t at_once = ns.sent_at_once - before;
    printf("   burst: %" PRIu64 " of %d at once, %" PRIu64 " packed\n", at_once, BURST,
           ns.packed_msgs_sent);
    CHECK(at_once >= 1 && at_once < BURST);
    CHECK(ns.packed_msgs_sent > 0);
    CHECK_EQ(in.bad, 0);
    CHECK_EQ(a.arrivals, 0);
    CHECK_EQ(sequence_errors(a.link.node), 0);
    links_destroy(&a.link, &b.link);
}


/* Sends a PACKED frame on the data channel: messages first .. first + n - 1
 * of the small stream, numbered from seq; the last record's length claims
 * `over` bytes more than follow it. */
static bool raw_send_packed(const struct raw_peer *r, uint64_t seq, uint32_t first, uint32_t n,
                            uint32_t over)
{
    static uint8_t payload[4096];
    uint32_t len = 0;
    for (uint32_t i = first; i < first + n; i++) {
        uint32_t bytes = (uint32_t)small_len(i);
        fdn__store_le32(payload + len, bytes + (i + 1 == first + n ? over : 0));
        len += FDN__PACKED_REC_HDR;
        for (size_t k = 0; k < bytes; k++)
            payload[len++] = small_byte(i, k);
    }
    struct fdn__frame_hdr h = {
        .type = FDN__FRAME_DATA, .channel = FDN_CHANNEL_DATA, .seq = seq, .frag_len = len,
        .total_len = len, .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST | FDN__FRAME_PACKED,
    };
    return raw_send_frame(r->fd, &h, payload);
}

/* Sends a PACKED frame the node must refuse, and waits until it has closed
 * the connection. */
static void raw_send_packed_refused(struct raw_peer *r, uint64_t seq, uint32_t first,
                                    uint32_t n, uint32_t over)
{
    raw_send_packed(r, seq, first, n, over);
    RUN_UNTIL(!raw_pump(r));
    raw_peer_close(r);
}

/* Connects a raw peer offering caps, and data messages of at most
 * max_message (0: the raw peer's default), once the node's previous peer
 * is gone. */
static void raw_packer_up(struct raw_peer *r, struct side *a, const char *addr, uint64_t caps,
                          uint64_t max_message)
{
    raw_peer_connect(r, addr);
    CHECK(raw_peer_handshake(r, secret, sizeof secret,
                             (struct raw_hello){.version_min = 1, .version_max = 1,
                                                .node_id = (uint8_t)(a->link.ups + 1),
                                                .capabilities = caps,
                                                .max_message = max_message}));
    RUN_UNTIL(a->link.peer != NULL);
}

/* PACKED frames from a raw peer: refused where the connection did not agree
 * to them; unpacked in order where it did, until a record runs past the
 * payload; and numbered like any message, so a gap is a sequence error. */
static void test_packed_frames_checked(void)
{
    struct side a;
    char addr[128];
    make_node(&a, NULL, secret, sizeof secret, NULL);
    struct small_stream in = {0};
    CHECK_OK(fdn_channel_set_handler(a.link.node, FDN_CHANNEL_DATA, on_small, &in));
    link_listen_any(&a.link, addr, sizeof addr);
    fdn_node_stats ns;

    /* Not offered: a well-formed PACKED frame is a protocol error. */
    struct raw_peer r;
    raw_packer_up(&r, &a, addr, 0, 0);
    raw_send_packed_refused(&r, 0, 0, 3, 0);
    RUN_UNTIL(a.link.downs == 1);
    CHECK_EQ(a.link.last_down_reason, -EPROTO);
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.protocol_errors, 1);
    CHECK_EQ(ns.packed_frames_received, 0);
    CHECK_EQ(in.next[FDN_CHANNEL_DATA], 0);

    /* Offered: three messages (the first empty) in one frame arrive in
     * order; then a frame whose last record runs past its end is a
     * protocol error, and what came before it stays delivered. */
    raw_packer_up(&r, &a, addr, FDN__CAP_PACKED, 0);
    CHECK(raw_send_packed(&r, 0, 0, 3, 0));
    RUN_UNTIL(in.next[FDN_CHANNEL_DATA] == 3);
    CHECK_EQ(in.bad, 0);
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.packed_frames_received, 1);
    CHECK_EQ(ns.packed_msgs_received, 3);
    raw_send_packed_refused(&r, 3, 3, 2, 1);
    RUN_UNTIL(a.link.downs == 2);
    CHECK_EQ(a.link.last_down_reason, -EPROTO);
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.protocol_errors, 2);
    CHECK_EQ(ns.packed_frames_received, 1);
    CHECK_EQ(in.next[FDN_CHANNEL_DATA], 3);
    CHECK_EQ(in.bad, 0);

    /* Offered, but numbered past the next message of a reliable channel:
     * a sequence error, as an ordinary frame's would be, and nothing of it
     * delivered. */
    memset(&in, 0, sizeof in);
    raw_packer_up(&r, &a, addr, FDN__CAP_PACKED, 0);
    raw_send_packed_refused(&r, 1, 0, 3, 0);
    RUN_UNTIL((fdn_node_stats_get(a.link.node, &ns), ns.sequence_errors == 1));
    CHECK_EQ(ns.protocol_errors, 2);
    CHECK_EQ(ns.packed_frames_received, 1);
    CHECK_EQ(in.next[FDN_CHANNEL_DATA], 0);

    /* Agreed messages of at most 500 bytes: of messages 0..5 (0 to 530
     * bytes) in one frame the first five are taken, and counted as packed
     * messages received; the sixth breaks the limit and ends the session
     * (which drops what it had not delivered yet), and the frame is not
     * counted whole. */
    raw_packer_up(&r, &a, addr, FDN__CAP_PACKED, 500);
    CHECK(small_len(5) > 500 && small_len(4) <= 500);
    raw_send_packed_refused(&r, 0, 0, 6, 0);
    RUN_UNTIL((fdn_node_stats_get(a.link.node, &ns), ns.limit_violations == 1));
    CHECK(in.next[FDN_CHANNEL_DATA] <= 5);
    CHECK_EQ(in.bad, 0);
    CHECK_EQ(ns.packed_frames_received, 1);
    CHECK_EQ(ns.packed_msgs_received, 3 + 5);
    fdn_node_destroy(a.link.node);
}

int main(void)
{
    /* Both nodes share one worker and so one pool, which keeps its slabs:
     * room for the largest test's peak (64 MiB sent and 64 MiB received)
     * after the others. */
    harness_start((size_t)1 << 30);
    RUN(test_every_channel_in_order);
    RUN(test_urgent_overtakes_bulk);
    RUN(test_lanes_carry_their_channels);
    RUN(test_lane_count_negotiated_down);
    RUN(test_lane_loss_resumes_session);
    RUN(test_stalled_consumer_does_not_block_others);
    RUN(test_urgent_deliveries_keep_their_order);
    RUN(test_request_response);
    RUN(test_full_channel_is_eagain);
    RUN(test_agreed_size_limit);
    RUN(test_agreed_fragment_size);
    RUN(test_zerocopy_sends);
    RUN(test_many_peers_and_clean_close);
    RUN(test_wrong_secret_and_cluster);
    RUN(test_raw_peers_refused);
    RUN(test_frames_cut_anywhere);
    RUN(test_small_messages_packed);
    RUN(test_idle_lane_sends_at_once);
    RUN(test_packed_frames_checked);
    harness_stop();
    return 0;
}
