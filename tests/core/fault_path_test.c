/* The fault layer in the frame path (core/peer.c, "Fault layer"): two nodes
 * on one application-driven worker, one or both with fault rules, stream
 * messages (several fragments some of them) and every reliable message must
 * arrive exactly once, in order and intact, whatever the layer drops,
 * duplicates, delays, holds back or resets; a drop with nothing after it is
 * found by the loss timer; CORRUPT changes what arrives and never the
 * sender's buffer; bad rules fail node creation with a detail; a node
 * without rules has no fault state at all. Every wait is for an event,
 * bounded by an iteration cap. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/fdn.h>
#include <fdn/node.h>

#include "core/node_internal.h"
#include "test.h"
#define HARNESS_IDLE_WAITS 60000
#include "node_harness.h"

static const uint8_t secret[] = "the fault layer needs a secret too";

struct side {
    struct link link;
    uint32_t expect[FDN_CHANNEL_FIRST_USER];
    uint64_t arrivals[FDN_CHANNEL_FIRST_USER];
    uint64_t out_of_order, corrupted;
};

/* Tags must come 0, 1, 2, ... and intact. A corrupted tag is counted as
 * corruption, not as disorder. */
static void on_message(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    struct side *s = arg;
    uint32_t tag = s->expect[channel];
    if (!tagged_payload_ok(m, tag)) {
        uint32_t got = 0;
        memcpy(&got, fdn_msg_data(m), 4);
        if (got != tag && tagged_payload_ok(m, got) && s->out_of_order++ < 5)
            fprintf(stderr, "channel %d: message %u, expected %u\n", channel, got, tag);
        else
            s->corrupted++;
    }
    s->expect[channel] = tag + 1;
    s->arrivals[channel]++;
    fdn_msg_free(m);
}

static int make_node(struct side *s, const char *faults)
{
    memset(s, 0, sizeof *s);
    fdn_node_config cfg = {
        .worker = w,
        .secret = secret,
        .secret_len = sizeof secret,
        .faults = faults ? faults : "",
    };
    int rc = fdn_node_create(&cfg, &s->link.node);
    if (rc < 0)
        return rc;
    link_watch(&s->link);
    for (int c = 0; c < FDN_CHANNEL_FIRST_USER; c++)
        CHECK_OK(fdn_channel_set_handler(s->link.node, c, on_message, s));
    return 0;
}

static fdn_peer *pair_up(struct side *server, struct side *client)
{
    char addr[128];
    link_listen_any(&server->link, addr, sizeof addr);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(client->link.node, addr, &p));
    RUN_UNTIL(client->link.ups == 1 && server->link.ups == 1 && all_lanes_up(p) &&
              all_lanes_up(server->link.peer));
    return p;
}

/* ---- Tests ------------------------------------------------------------------ */

static void test_bad_rules_refused(void)
{
    struct side s;
    CHECK_EQ(make_node(&s, "seed=1,drop=2"), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "fault rule 1") != NULL);
    CHECK_EQ(make_node(&s, "drop=0.1,channel=nosuch"), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "nosuch") != NULL);
    CHECK_EQ(make_node(&s, "drop=0.1,channel=9"), -EINVAL);
    /* The environment is read only when the config says nothing. */
    setenv(FDN__FAULT_ENV, "dup=oops", 1);
    CHECK_EQ(make_node(&s, NULL), 0);   /* "" in make_node: off, the variable unread */
    fdn_node_destroy(s.link.node);
    fdn_node_config cfg = {.worker = w, .secret = secret, .secret_len = sizeof secret};
    fdn_node *n;
    CHECK_EQ(fdn_node_create(&cfg, &n), -EINVAL);
    CHECK(strstr(fdn_errmsg(), FDN__FAULT_ENV) != NULL);
    setenv(FDN__FAULT_ENV, "seed=5,drop=0.5,channel=data", 1);
    CHECK_OK(fdn_node_create(&cfg, &n));
    char line[1024];
    CHECK(fdn_node_fault_report(n, line, sizeof line) > 0);
    CHECK(strstr(line, "seed=5") != NULL);
    fdn_node_destroy(n);
    unsetenv(FDN__FAULT_ENV);
}

/* Off means no state: the data path's only cost is the NULL test. */
static void test_off_has_no_state(void)
{
    struct side a, b;
    CHECK_OK(make_node(&a, NULL));
    CHECK_OK(make_node(&b, "   "));
    fdn_peer *p = pair_up(&a, &b);
    CHECK(a.link.node->faults == NULL && b.link.node->faults == NULL);
    for (int i = 0; i < fdn_peer_lane_count(p); i++)
        CHECK(p->lanes[i]->faults == NULL && a.link.peer->lanes[i]->faults == NULL);
    char line[64] = "x";
    CHECK_EQ(fdn_node_fault_report(a.link.node, line, sizeof line), 0);
    CHECK_EQ(line[0], '\0');
    links_destroy(&a.link, &b.link);
}

#define STREAM_DATA 600
#define STREAM_COORD 1200

/* Both directions of both nodes faulted, on every channel: data messages of
 * up to four fragments (so that drops and repeats land in mid-message too)
 * and small urgent ones. */
static void test_reliable_stream_survives(void)
{
    static const char rules[] =
        "seed=20261101,drop=0.004,dup=0.004,delay=0.01:20us-400us,reorder=0.004:4,reset=0.002";
    struct side a, b;
    CHECK_OK(make_node(&a, rules));
    CHECK_OK(make_node(&b, rules));
    fdn_peer *p = pair_up(&a, &b);
    uint32_t data_sent = 0, coord_sent = 0;
    while (data_sent < STREAM_DATA || coord_sent < STREAM_COORD) {
        if (data_sent < STREAM_DATA) {
            size_t len = 1 + (size_t)data_sent * 7919 % 250000;
            send_blocking(p, FDN_CHANNEL_DATA, make_tagged_msg(len, data_sent++));
        }
        for (int i = 0; i < 2 && coord_sent < STREAM_COORD; i++, coord_sent++)
            send_blocking(p, FDN_CHANNEL_COORDINATION, make_tagged_msg(16 + coord_sent % 2000,
                                                                coord_sent));
        fdn_worker_progress(w);
    }
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] >= STREAM_DATA &&
              a.arrivals[FDN_CHANNEL_COORDINATION] >= STREAM_COORD);
    /* Whatever is still on its way would be a duplicate: give it time. */
    for (int i = 0; i < 2000; i++)
        fdn_worker_progress(w);
    CHECK_EQ(a.out_of_order + a.corrupted, 0);
    CHECK_EQ(a.arrivals[FDN_CHANNEL_DATA], STREAM_DATA);
    CHECK_EQ(a.arrivals[FDN_CHANNEL_COORDINATION], STREAM_COORD);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    struct fdn__fault_stats fa, fb;
    fdn__node_fault_stats(a.link.node, &fa);
    fdn__node_fault_stats(b.link.node, &fb);
    printf("   frames %" PRIu64 " drop %" PRIu64 " dup %" PRIu64 " delay %" PRIu64
           " reorder %" PRIu64 " reset %" PRIu64 "\n",
           fa.frames + fb.frames, fa.actions[FDN__FAULT_DROP] + fb.actions[FDN__FAULT_DROP],
           fa.actions[FDN__FAULT_DUP] + fb.actions[FDN__FAULT_DUP],
           fa.actions[FDN__FAULT_DELAY] + fb.actions[FDN__FAULT_DELAY],
           fa.actions[FDN__FAULT_REORDER] + fb.actions[FDN__FAULT_REORDER],
           fa.actions[FDN__FAULT_RESET] + fb.actions[FDN__FAULT_RESET]);
    for (int k = FDN__FAULT_DROP; k <= FDN__FAULT_DELAY; k++)
        CHECK(fa.actions[k] + fb.actions[k] > 0);
    fdn_node_stats na, nb;
    fdn_node_stats_get(a.link.node, &na);
    fdn_node_stats_get(b.link.node, &nb);
    CHECK(na.sessions_resumed > 0 && nb.sessions_resumed > 0);
    CHECK(na.sequence_errors > 0);
    links_destroy(&a.link, &b.link);
}

/* One message and nothing after it: a drop leaves no gap for the receiver
 * to see, so the loss timer resets the lane and the session resends. */
static void test_tail_drop_found(void)
{
    struct side a, b;
    CHECK_OK(make_node(&a, NULL));
    CHECK_OK(make_node(&b, "seed=3,drop=0.7,channel=data,dir=tx"));
    fdn_peer *p = pair_up(&a, &b);
    for (uint32_t i = 0; i < 3; i++) {
        send_blocking(p, FDN_CHANNEL_DATA, make_tagged_msg(100, i));
        RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == i + 1u);
    }
    CHECK_EQ(a.out_of_order + a.corrupted, 0);
    struct fdn__fault_stats st;
    fdn__node_fault_stats(b.link.node, &st);
    CHECK(st.actions[FDN__FAULT_DROP] > 0);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    links_destroy(&a.link, &b.link);
}

/* Receipt held back: the receiver's layer delays and holds frames (and the
 * bytes behind them) on both lanes. Holding loses nothing, so every message
 * arrives once, in order, with no session interrupted. */
static void test_rx_hold_keeps_order(void)
{
    struct side a, b;
    CHECK_OK(make_node(&a, "seed=77,delay=0.05:20us-300us,reorder=0.05:4,dir=rx"));
    CHECK_OK(make_node(&b, NULL));
    fdn_peer *p = pair_up(&a, &b);
    for (uint32_t i = 0; i < 300; i++) {
        send_blocking(p, FDN_CHANNEL_DATA, make_tagged_msg(1 + (size_t)i * 4099 % 150000, i));
        send_blocking(p, FDN_CHANNEL_COORDINATION, make_tagged_msg(32 + i % 700, i));
        fdn_worker_progress(w);
    }
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == 300 && a.arrivals[FDN_CHANNEL_COORDINATION] == 300);
    CHECK_EQ(a.out_of_order + a.corrupted, 0);
    struct fdn__fault_stats st;
    fdn__node_fault_stats(a.link.node, &st);
    CHECK(st.actions[FDN__FAULT_DELAY] > 0 && st.actions[FDN__FAULT_REORDER] > 0);
    fdn_node_stats na;
    fdn_node_stats_get(a.link.node, &na);
    CHECK_EQ(na.sessions_interrupted, 0);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    links_destroy(&a.link, &b.link);
}

/* CORRUPT changes what arrives, one byte, on either side, and never the
 * sender's message (here shared, as fdn-perf's zero-copy stream shares). */
static void test_corrupt_leaves_sender_alone(void)
{
    const char *rules[] = {"seed=9,corrupt=1,channel=data,dir=tx",
                           "seed=9,corrupt=1,channel=data,dir=rx"};
    for (int r = 0; r < 2; r++) {
        struct side a, b;
        CHECK_OK(make_node(&a, r == 1 ? rules[r] : NULL));
        CHECK_OK(make_node(&b, r == 0 ? rules[r] : NULL));
        fdn_peer *p = pair_up(&a, &b);
        fdn_msg *m = make_tagged_msg(70000, 0);   /* two fragments */
        for (int i = 0; i < 4; i++)
            send_blocking(p, FDN_CHANNEL_DATA, fdn_msg_ref(m));
        RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == 4);
        CHECK_EQ(a.corrupted, 4);
        a.expect[FDN_CHANNEL_DATA] = 0;
        CHECK(tagged_payload_ok(m, 0));
        fdn_msg_free(m);
        /* The coordination channel has no rule: untouched. */
        send_blocking(p, FDN_CHANNEL_COORDINATION, make_tagged_msg(5000, 0));
        RUN_UNTIL(a.arrivals[FDN_CHANNEL_COORDINATION] == 1);
        CHECK_EQ(a.corrupted, 4);
        links_destroy(&a.link, &b.link);
    }
}

int main(void)
{
    unsetenv(FDN__FAULT_ENV);
    harness_start((size_t)1 << 30);
    RUN(test_bad_rules_refused);
    RUN(test_off_has_no_state);
    RUN(test_reliable_stream_survives);
    RUN(test_tail_drop_found);
    RUN(test_rx_hold_keeps_order);
    RUN(test_corrupt_leaves_sender_alone);
    harness_stop();
    return 0;
}
