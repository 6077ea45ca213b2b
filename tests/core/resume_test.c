/* Session resumption (core/node_internal.h): two nodes over loopback TCP on
 * one application-driven worker, connections killed from inside (the
 * transport closed under a lane) and from outside (shutdown() of the kernel
 * socket) while messages stream; requests across a resumption; a session
 * that expires; a peer node that restarts; a resumption of a session the
 * node does not have; and a best-effort channel that counts what it loses.
 * Raw peers speak the protocol by hand where a node would not misbehave.
 * No timing thresholds: every wait is for an event, bounded by an
 * iteration cap so that a bug fails instead of hanging. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fdn/fdn.h>
#include <fdn/node.h>

#include "core/handshake.h"
#include "core/node_internal.h"
#include "core/wire.h"
#include "test.h"
#define HARNESS_IDLE_WAITS 30000
#include "node_harness.h"
#include "raw_peer.h"

static const uint8_t secret[] = "resumption needs the same secret";

/* ---- Nodes and what they see --------------------------------------------- */

#define CHANNELS (FDN_CHANNEL_FIRST_USER + 1)

struct side {
    struct link link;
    char events[64];               /* 'U' and 'D' in the order they came */
    int num_events;
    uint64_t undelivered_at_down;  /* reliable channels, read in peer_down */
    /* Per channel: the tag the next message must carry, and what came. */
    uint32_t expect[CHANNELS];
    uint64_t arrivals[CHANNELS];
    uint64_t bad;                  /* out of order, repeated or corrupted */
};

static void on_up(fdn_peer *p, void *arg)
{
    struct side *s = arg;
    link_on_up(p, &s->link);
    if (s->num_events < (int)sizeof s->events)
        s->events[s->num_events++] = 'U';
}

static void on_down(fdn_peer *p, int reason, void *arg)
{
    struct side *s = arg;
    for (int c = 0; c < CHANNELS; c++) {
        fdn_channel_stats st;
        CHECK_OK(fdn_peer_channel_stats(p, c, &st));
        s->undelivered_at_down += st.undelivered_msgs;
    }
    link_on_down(p, reason, &s->link);
    if (s->num_events < (int)sizeof s->events)
        s->events[s->num_events++] = 'D';
}

/* Payload of message `tag`: the tag, then bytes derived from it, so that a
 * message that arrives corrupted, or as another message, is caught. */
/* Every channel's messages must come exactly once, in order: tags 0, 1, ...
 * On the best-effort channel a gap is allowed (messages lost), a step back
 * is not. */
static void on_message(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    struct side *s = arg;
    uint32_t tag = 0;
    if (fdn_msg_len(m) >= 4)
        memcpy(&tag, fdn_msg_data(m), 4);
    bool in_order = channel == FDN_CHANNEL_GOSSIP ? tag >= s->expect[channel]
                                                  : tag == s->expect[channel];
    if (!in_order || !tagged_payload_ok(m, tag)) {
        if (s->bad++ < 5)
            fprintf(stderr, "channel %d: message %u, expected %u%s\n", channel, tag,
                    s->expect[channel], tagged_payload_ok(m, tag) ? "" : " (corrupted)");
    }
    s->expect[channel] = tag + 1;
    s->arrivals[channel]++;
    fdn_msg_free(m);
}

static const fdn_channel_config user_channels[] = {
    {.name = "telemetry", .priority = 1, .max_message = 4096},
};

static void make_node(struct side *s, const fdn_node_config *extra)
{
    memset(s, 0, sizeof *s);
    fdn_node_config cfg = extra ? *extra : (fdn_node_config){0};
    cfg.worker = w;
    cfg.secret = secret;
    cfg.secret_len = sizeof secret;
    cfg.channels = user_channels;
    cfg.num_channels = 1;
    cfg.no_same_host_shm = !harness_over_shm();
    CHECK_OK(fdn_node_create(&cfg, &s->link.node));
    fdn_node_events ev = {.peer_up = on_up, .peer_down = on_down, .arg = s};
    fdn_node_set_events(s->link.node, &ev);
    for (int c = 0; c < CHANNELS; c++)
        CHECK_OK(fdn_channel_set_handler(s->link.node, c, on_message, s));
}

/* server listens, client connects; returns the client's peer once both are
 * up with every lane. */
static fdn_peer *pair_up(struct side *server, struct side *client, char *addr, size_t len)
{
    link_listen_any(&server->link, addr, len);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(client->link.node, addr, &p));
    RUN_UNTIL(client->link.ups == 1 && server->link.ups == 1 && all_lanes_up(p) &&
              all_lanes_up(server->link.peer));
    return p;
}

/* ---- Killing connections --------------------------------------------------- */

/* From inside: the transport of one lane closed under it, as a reset would. */
static bool kill_lane(fdn_peer *p, int index)
{
    if (!p || index >= FDN__MAX_LANES)
        return false;
    struct fdn__lane *l = p->lanes[index];
    if (!l || !l->conn || !l->up || l->close_sent)
        return false;
    fdn__tp_conn_close(l->conn);
    return true;
}

/* From outside: shutdown() of a kernel socket of ours connected to port (a
 * client-side lane), the n-th one found. The transport sees an end of
 * stream it did not ask for, and closes the descriptor itself. Over shm,
 * the socket is a lane's set-up socket (its peer is the listener named
 * "@fdn-tcp-HOST:PORT"), whose end the transport takes for its peer's. */
static bool is_lane_socket(int fd, int port)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_un un;
    } peer;
    socklen_t len = sizeof peer;
    int type = 0;
    socklen_t tlen = sizeof type;
    if (fd <= 2 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 ||
        getpeername(fd, &peer.sa, &len) < 0)
        return false;
    if (type == SOCK_STREAM && peer.sa.sa_family == AF_INET)
        return ntohs(peer.in.sin_port) == port;
    if (type != SOCK_SEQPACKET || peer.sa.sa_family != AF_UNIX ||
        len <= offsetof(struct sockaddr_un, sun_path) + 1 || peer.un.sun_path[0] != '\0')
        return false;
    char name[sizeof peer.un.sun_path + 1], want[32];
    size_t n = len - offsetof(struct sockaddr_un, sun_path) - 1;
    memcpy(name, peer.un.sun_path + 1, n);
    name[n] = '\0';
    snprintf(want, sizeof want, ":%d", port);
    return !strncmp(name, "fdn-tcp-", 8) && n >= strlen(want) &&
           !strcmp(name + n - strlen(want), want);
}

static bool shutdown_socket(int port, int n)
{
    DIR *dir = opendir("/proc/self/fd");
    CHECK(dir != NULL);
    int found = 0, victim = -1;
    struct dirent *e;
    while ((e = readdir(dir))) {
        int fd = atoi(e->d_name);
        if (!is_lane_socket(fd, port))
            continue;
        if (found++ == n % 2 || victim < 0)
            victim = fd;
    }
    closedir(dir);
    if (victim < 0)
        return false;
    CHECK_OK(shutdown(victim, SHUT_RDWR));
    return true;
}

static uint64_t retransmitted(const fdn_peer *p)
{
    uint64_t sum = 0;
    for (int c = 0; c < CHANNELS; c++) {
        fdn_channel_stats st;
        CHECK_OK(fdn_peer_channel_stats(p, c, &st));
        sum += st.retransmitted_msgs;
    }
    return sum;
}

/* ---- Tests ------------------------------------------------------------------ */

/* Losing a lane no longer loses the peer: the session resumes, on both
 * sides, with no event, and carries traffic again. */
static void test_lane_loss_resumes(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, NULL);
    make_node(&b, NULL);
    fdn_peer *p = pair_up(&a, &b, addr, sizeof addr);
    CHECK(kill_lane(p, 1));
    RUN_UNTIL(!fdn_peer_is_up(p) || !fdn_peer_is_up(a.link.peer));
    RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
    fdn_node_stats ns;
    fdn_node_stats_get(b.link.node, &ns);
    CHECK_EQ(ns.sessions_resumed, 1);
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_tagged_msg(3 << 20, 0)));
    CHECK_OK(fdn_send(a.link.peer, FDN_CHANNEL_COORDINATION, make_tagged_msg(100, 0)));
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == 1 && b.arrivals[FDN_CHANNEL_COORDINATION] == 1);
    CHECK_EQ(a.link.ups + b.link.ups, 2);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    CHECK_EQ(a.bad + b.bad, 0);
    links_destroy(&a.link, &b.link);
}

/* Streams on two reliable channels (both lanes), both ways, while lanes are
 * killed from inside on either side and from outside: every message arrives
 * exactly once, in order, intact, and no peer goes down. */
#define STREAM_DATA 1200
#define STREAM_COORD 3000
#define KILLS 10

static void test_stream_across_kills(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, NULL);
    make_node(&b, NULL);
    fdn_peer *p = pair_up(&a, &b, addr, sizeof addr);
    int kills = 0;
    uint32_t data_sent = 0, coord_sent = 0, back_sent = 0;
    while (data_sent < STREAM_DATA || coord_sent < STREAM_COORD) {
        if (data_sent < STREAM_DATA) {
            size_t len = 1 + (size_t)data_sent * 7919 % 250000;   /* up to 4 fragments */
            send_blocking(p, FDN_CHANNEL_DATA, make_tagged_msg(len, data_sent++));
        }
        for (int i = 0; i < 2 && coord_sent < STREAM_COORD; i++) {
            send_blocking(p, FDN_CHANNEL_COORDINATION,
                          make_tagged_msg(16 + coord_sent % 2000, coord_sent));
            coord_sent++;
        }
        if (a.link.peer && data_sent % 4 == 0)
            send_blocking(a.link.peer, FDN_CHANNEL_EVENTS, make_tagged_msg(300, back_sent++));
        fdn_worker_progress(w);
        /* A kill every 100 data messages, once the session is whole again. */
        if (data_sent >= 50u + 100u * (uint32_t)kills && kills < KILLS && all_lanes_up(p) &&
            all_lanes_up(a.link.peer)) {
            bool done;
            switch (kills % 5) {
            case 0: done = kill_lane(p, 1); break;           /* client, data lane */
            case 1: done = kill_lane(a.link.peer, 0); break;   /* server, urgent lane */
            case 2: done = kill_lane(p, 0); break;           /* client, urgent lane */
            case 3: done = kill_lane(a.link.peer, 1); break;   /* server, data lane */
            default: done = shutdown_socket(raw_port_of(addr), kills); break;
            }
            kills += done;
        }
    }
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] >= STREAM_DATA &&
              a.arrivals[FDN_CHANNEL_COORDINATION] >= STREAM_COORD &&
              b.arrivals[FDN_CHANNEL_EVENTS] >= back_sent);
    CHECK_EQ(a.bad + b.bad, 0);
    CHECK_EQ(a.arrivals[FDN_CHANNEL_DATA], STREAM_DATA);
    CHECK_EQ(a.arrivals[FDN_CHANNEL_COORDINATION], STREAM_COORD);
    CHECK_EQ(b.arrivals[FDN_CHANNEL_EVENTS], back_sent);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    CHECK_EQ(kills, KILLS);
    fdn_node_stats na, nb;
    fdn_node_stats_get(a.link.node, &na);
    fdn_node_stats_get(b.link.node, &nb);
    /* Every interruption ended in a resumption (two kills close together
     * may make one interruption of a side). */
    CHECK(na.sessions_interrupted >= KILLS / 2 && nb.sessions_interrupted >= KILLS / 2);
    CHECK_EQ(na.sessions_resumed, na.sessions_interrupted);
    CHECK_EQ(nb.sessions_resumed, nb.sessions_interrupted);
    CHECK_EQ(na.sessions_expired + nb.sessions_expired, 0);
    uint64_t again = retransmitted(p) + retransmitted(a.link.peer);
    printf("   %d kills, %" PRIu64 " messages sent again, %" PRIu64 " resumptions\n", kills,
           again, nb.sessions_resumed);
    CHECK(again > 0);
    /* Acknowledgements catch up: nothing stays held once all has arrived. */
    fdn_channel_stats st;
    RUN_UNTIL((fdn_peer_channel_stats(p, FDN_CHANNEL_DATA, &st), st.unacked_msgs == 0));
    links_destroy(&a.link, &b.link);
}

/* Requests sent across a resumption all get their one answer. */
struct replies {
    int calls, bad;
    uint32_t expect_mask[8];
};

static void echo_request(fdn_peer *p, int channel, uint64_t id, fdn_msg *req, void *arg)
{
    (void)arg;
    CHECK_OK(fdn_respond(p, channel, id, req));
}

static void on_reply(fdn_peer *p, int status, fdn_msg *resp, void *arg)
{
    (void)p;
    struct replies *r = arg;
    r->calls++;
    uint32_t tag;
    if (status != 0 || !resp) {
        r->bad++;
        return;
    }
    memcpy(&tag, fdn_msg_data(resp), 4);
    if (tag >= 256 || (r->expect_mask[tag / 32] & (1u << (tag % 32))) || !tagged_payload_ok(resp, tag))
        r->bad++;
    else
        r->expect_mask[tag / 32] |= 1u << (tag % 32);
    fdn_msg_free(resp);
}

static void test_requests_across_resume(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, NULL);
    make_node(&b, NULL);
    CHECK_OK(fdn_channel_set_request_handler(a.link.node, FDN_CHANNEL_COORDINATION, echo_request,
                                             NULL));
    CHECK_OK(fdn_channel_set_request_handler(a.link.node, FDN_CHANNEL_DATA, echo_request, NULL));
    fdn_peer *p = pair_up(&a, &b, addr, sizeof addr);
    struct replies r = {0};
    uint64_t ids[256];
    for (uint32_t i = 0; i < 256; i++) {
        int channel = i % 2 ? FDN_CHANNEL_DATA : FDN_CHANNEL_COORDINATION;
        size_t len = i % 2 ? 70000 : 100;
        CHECK_OK(fdn_request(p, channel, make_tagged_msg(len, i), 0, on_reply, &r, &ids[i]));
        for (uint32_t j = 0; j < i; j++)
            CHECK(ids[j] != ids[i]);   /* handles unique across channels */
        if (i == 100)
            CHECK(kill_lane(p, 0));
        if (i == 200) {
            RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
            CHECK(kill_lane(a.link.peer, 1));
        }
        fdn_worker_progress(w);
    }
    RUN_UNTIL(r.calls == 256);
    CHECK_EQ(r.bad, 0);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    fdn_channel_stats st;
    CHECK_OK(fdn_peer_channel_stats(p, FDN_CHANNEL_COORDINATION, &st));
    CHECK_EQ(st.rtt_count, 128);
    links_destroy(&a.link, &b.link);
}

/* ---- A raw client: a socket that speaks the protocol by hand ---------------- */

/* A one-fragment DATA message on the data channel. */
static bool raw_data(struct raw_peer *r, uint64_t seq, uint32_t tag)
{
    uint8_t payload[64];
    memcpy(payload, &tag, 4);
    for (size_t i = 4; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 131 + tag);
    struct fdn__frame_hdr h = {.type = FDN__FRAME_DATA, .channel = FDN_CHANNEL_DATA,
                               .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST, .seq = seq,
                               .frag_len = sizeof payload, .total_len = sizeof payload};
    return raw_send_frame(r->fd, &h, payload);
}

/* A session whose client vanishes waits for it (no event), then ends with
 * -ETIMEDOUT at the deadline, counting the reliable messages it had sent and
 * never had acknowledged. A message out of sequence on the way (a frame
 * lost below) is a session error that suspends the session, not an end. */
static void test_session_expires(void)
{
    struct side a;
    char addr[128];
    make_node(&a, &(fdn_node_config){.session_timeout_ns = 300 * 1000 * 1000ull, .lanes = 1});
    link_listen_any(&a.link, addr, sizeof addr);
    struct raw_peer r;
    raw_peer_connect(&r, addr);
    CHECK(raw_peer_handshake(&r, secret, sizeof secret,
                             (struct raw_hello){.node_id = 0x11, .incarnation = 1,
                                                .session = 0x5e55}));
    RUN_UNTIL(a.link.ups == 1);
    fdn_peer *q = a.link.peer;
    CHECK(raw_data(&r, 0, 0));
    CHECK(raw_data(&r, 1, 1));
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == 2);
    for (uint32_t i = 0; i < 3; i++)   /* never acknowledged by the raw client */
        CHECK_OK(fdn_send(q, FDN_CHANNEL_DATA, make_tagged_msg(1000, i)));
    CHECK(raw_data(&r, 3, 3));         /* message 2 "lost" */
    fdn_node_stats ns;
    RUN_UNTIL((fdn_node_stats_get(a.link.node, &ns), ns.sequence_errors == 1));
    RUN_UNTIL(!raw_pump(&r));          /* the node dropped the connection */
    raw_peer_close(&r);
    CHECK(!fdn_peer_is_up(q));
    CHECK_EQ(a.link.downs, 0);
    CHECK_EQ(a.arrivals[FDN_CHANNEL_DATA], 2);
    uint64_t start = fdn_now_ns();
    RUN_UNTIL(a.link.downs == 1);
    CHECK(fdn_now_ns() - start >= 200 * 1000 * 1000ull);   /* not before its time */
    CHECK_EQ(a.link.last_down_reason, -ETIMEDOUT);
    CHECK_EQ(a.undelivered_at_down, 3);
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.sessions_expired, 1);
    CHECK_EQ(ns.undelivered_msgs, 3);
    CHECK_EQ(ns.handshake_timeouts, 0);
    fdn_node_destroy(a.link.node);
}

/* A session that breaks again each time it resumes, before any message
 * gets through, is one outage: it ends session_timeout_ns after the first
 * break, on both sides, instead of resuming for ever, and its redials back
 * off meanwhile. The receiver's fault layer delivers every DATA frame of
 * the data channel twice, so the first fragment of a message of several is
 * always followed by itself: a sequence error, which resumes the session,
 * after which the sender starts the message again. */
static void test_resuming_without_progress_ends(void)
{
    struct side a, b;
    char addr[128];
    const uint64_t timeout = 400 * 1000 * 1000ull;
    make_node(&a, &(fdn_node_config){.session_timeout_ns = timeout, .lanes = 1});
    make_node(&b, &(fdn_node_config){.session_timeout_ns = timeout, .lanes = 1,
                                     .faults = "seed=7,dup=1,dir=rx,channel=data"});
    pair_up(&a, &b, addr, sizeof addr);
    CHECK_OK(fdn_send(a.link.peer, FDN_CHANNEL_DATA, make_tagged_msg(200000, 0)));
    RUN_UNTIL(a.link.downs == 1 && b.link.downs == 1);
    CHECK_EQ(b.link.last_down_reason, -ETIMEDOUT);
    CHECK_EQ(a.link.last_down_reason, -ETIMEDOUT);
    CHECK_EQ(a.undelivered_at_down, 1);
    CHECK_EQ(b.arrivals[FDN_CHANNEL_DATA], 0);
    fdn_node_stats ns;
    fdn_node_stats_get(b.link.node, &ns);
    CHECK_EQ(ns.sessions_expired, 1);
    CHECK(ns.sequence_errors >= 2);
    /* Redials 1 ms, then 10 ms doubling, after each break: a handful in
     * 400 ms, where a redial 1 ms after every break would make hundreds. */
    CHECK(ns.sessions_interrupted <= 30);
    printf("   %" PRIu64 " breaks before the session ended\n", ns.sessions_interrupted);
    links_destroy(&a.link, &b.link);
}

/* A node that comes back as a new incarnation starts a new session: the old
 * one (still up as far as the server knows) is reported down with
 * -ECONNRESET first, then the new one up. A resumption of a session the
 * node does not have is refused with a reason. */
static void test_new_incarnation_and_unknown_session(void)
{
    struct side a;
    char addr[128];
    make_node(&a, &(fdn_node_config){.lanes = 1});
    link_listen_any(&a.link, addr, sizeof addr);
    struct raw_peer first, second, stranger;
    raw_peer_connect(&first, addr);
    CHECK(raw_peer_handshake(&first, secret, sizeof secret,
                             (struct raw_hello){.node_id = 0x22, .incarnation = 1,
                                                .session = 0x1001}));
    RUN_UNTIL(a.link.ups == 1);

    raw_peer_connect(&second, addr);
    CHECK(raw_peer_handshake(&second, secret, sizeof secret,
                             (struct raw_hello){.node_id = 0x22, .incarnation = 2,
                                                .session = 0x2002}));
    RUN_UNTIL(a.link.ups == 2);
    CHECK_EQ(a.link.downs, 1);
    CHECK_EQ(a.link.last_down_reason, -ECONNRESET);
    CHECK_EQ(a.num_events, 3);
    CHECK(memcmp(a.events, "UDU", 3) == 0);   /* the old session down before the new up */
    RUN_UNTIL(!raw_pump(&first));   /* the old session's connection is closed */

    /* Resuming the old session, or any unknown one, is refused. */
    raw_peer_connect(&stranger, addr);
    CHECK(raw_peer_handshake(&stranger, secret, sizeof secret,
                             (struct raw_hello){.node_id = 0x22, .incarnation = 1,
                                                .session = 0x1001, .resume = true}));
    RUN_UNTIL(!raw_pump(&stranger));
    CHECK(stranger.got_close);
    CHECK_EQ(stranger.close_reason, FDN__CLOSE_SESSION_UNKNOWN);
    fdn_node_stats ns;
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.resumes_refused, 1);
    CHECK_EQ(a.link.ups, 2);
    raw_peer_close(&first);
    raw_peer_close(&second);
    raw_peer_close(&stranger);
    fdn_node_destroy(a.link.node);
}

/* The same with real nodes: a client node destroyed and created again
 * connects as a new session; the server's old one ends first. The old one
 * ended in order here (the client said goodbye), so it is down with 0. */
static void test_client_restart(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, NULL);
    make_node(&b, NULL);
    pair_up(&a, &b, addr, sizeof addr);
    fdn_node_destroy(b.link.node);
    RUN_UNTIL(a.link.downs == 1);
    CHECK_EQ(a.link.last_down_reason, 0);
    make_node(&b, NULL);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(b.link.node, addr, &p));
    RUN_UNTIL(a.link.ups == 2 && b.link.ups == 1 && all_lanes_up(p));
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, make_tagged_msg(5000, 0)));
    RUN_UNTIL(a.arrivals[FDN_CHANNEL_DATA] == 1);
    links_destroy(&a.link, &b.link);
}

/* A best-effort channel does not fail on loss: it counts the gap. The
 * receiver's connections are dropped while the sender streams, so whatever
 * was in flight is lost; the tags that arrive only ever go up, and what
 * arrived plus what was counted lost is what was sent. */
static void test_best_effort_counts_losses(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, NULL);
    make_node(&b, NULL);
    fdn_peer *p = pair_up(&a, &b, addr, sizeof addr);
    uint32_t sent = 0;
    fdn_channel_stats st = {0};
    for (int kills = 0; kills < 60; kills++) {
        for (int i = 0; i < 40; i++)
            send_blocking(p, FDN_CHANNEL_GOSSIP, make_tagged_msg(60000, sent++));
        RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
        CHECK(kill_lane(a.link.peer, 0));   /* gossip is on the urgent lane */
        CHECK_OK(fdn_peer_channel_stats(a.link.peer, FDN_CHANNEL_GOSSIP, &st));
        if (st.lost_msgs > 0)
            break;
    }
    /* Loss is likely but not certain on any one attempt: 60 tries. */
    CHECK(st.lost_msgs > 0);
    RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
    for (int i = 0; i < 10; i++)   /* a tail on a steady connection shows the last gap */
        send_blocking(p, FDN_CHANNEL_GOSSIP, make_tagged_msg(100, sent++));
    RUN_UNTIL(a.expect[FDN_CHANNEL_GOSSIP] == sent);
    CHECK_OK(fdn_peer_channel_stats(a.link.peer, FDN_CHANNEL_GOSSIP, &st));
    printf("   %u sent, %" PRIu64 " delivered, %" PRIu64 " lost\n", sent, st.msgs_delivered,
           st.lost_msgs);
    CHECK_EQ(st.msgs_delivered + st.lost_msgs, sent);
    CHECK_EQ(a.bad, 0);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    links_destroy(&a.link, &b.link);
}

/* Small messages go packed (several in a frame) while lanes are killed
 * under them: bursts are sent faster than the peer drains, and each kill
 * comes right after one, with packed frames in flight on both lanes. Every
 * message arrives exactly once, in order, intact; what was lost in flight
 * is sent again, and the lanes of the resumed session pack too. */
#define PACKED_BURSTS 24
#define PACKED_BURST 200

static void test_packed_stream_across_kills(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, NULL);
    make_node(&b, NULL);
    fdn_peer *p = pair_up(&a, &b, addr, sizeof addr);
    uint32_t sent = 0;
    int kills = 0;
    fdn_node_stats at_kill = {0}, na, nb;
    for (int burst = 0; burst < PACKED_BURSTS; burst++) {
        for (int i = 0; i < PACKED_BURST; i++, sent++) {
            size_t len = 4 + sent * 106u % 597u;   /* up to 600: some too large to pack */
            send_blocking(p, FDN_CHANNEL_EVENTS, make_tagged_msg(len, sent));
            send_blocking(p, FDN_CHANNEL_DATA, make_tagged_msg(len, sent));
        }
        /* A kill every third burst, once the session is whole again; the
         * last bursts see none. */
        if (burst % 3 == 1 && burst < PACKED_BURSTS - 3) {
            RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
            fdn_node_stats_get(a.link.node, &at_kill);
            fdn_peer *victim = kills % 2 ? a.link.peer : p;
            CHECK(kill_lane(victim, kills / 2 % 2));
            kills++;
        }
    }
    /* A killed lane loses frames, not their order: a sequence error here is
     * a message misnumbered, which would resume the session forever. */
    RUN_UNTIL((a.arrivals[FDN_CHANNEL_EVENTS] >= sent && a.arrivals[FDN_CHANNEL_DATA] >= sent) ||
              (fdn_node_stats_get(a.link.node, &na), na.sequence_errors > 0));
    fdn_node_stats_get(a.link.node, &na);
    fdn_node_stats_get(b.link.node, &nb);
    CHECK_EQ(na.sequence_errors, 0);
    CHECK_EQ(a.bad + b.bad, 0);
    CHECK_EQ(a.arrivals[FDN_CHANNEL_EVENTS], sent);
    CHECK_EQ(a.arrivals[FDN_CHANNEL_DATA], sent);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    printf("   %d kills, %" PRIu64 " sent again, %" PRIu64 " of %" PRIu64
           " messages received packed\n", kills, retransmitted(p), na.packed_msgs_received,
           2 * (uint64_t)sent);
    CHECK(na.sessions_interrupted >= 1 && na.sessions_resumed == na.sessions_interrupted);
    CHECK(nb.sessions_interrupted >= 1 && nb.sessions_resumed == nb.sessions_interrupted);
    CHECK(retransmitted(p) > 0);
    CHECK(nb.packed_msgs_sent >= 2 * nb.packed_frames_sent);
    CHECK(na.packed_frames_received > at_kill.packed_frames_received);   /* after the last kill */
    CHECK(na.packed_msgs_received <= nb.packed_msgs_sent);   /* the lost counted as sent */
    links_destroy(&a.link, &b.link);
}

/* An orderly close ends the session at once, on both sides, with 0: no
 * resumption is attempted. */
static void test_orderly_close_does_not_resume(void)
{
    struct side a, b;
    char addr[128];
    make_node(&a, NULL);
    make_node(&b, NULL);
    fdn_peer *p = pair_up(&a, &b, addr, sizeof addr);
    fdn_peer_close(p);
    RUN_UNTIL(a.link.downs == 1 && b.link.downs == 1);
    CHECK_EQ(a.link.last_down_reason, 0);
    CHECK_EQ(b.link.last_down_reason, 0);
    fdn_node_stats ns;
    fdn_node_stats_get(a.link.node, &ns);
    CHECK_EQ(ns.sessions_interrupted, 0);
    links_destroy(&a.link, &b.link);
}

int main(void)
{
    harness_start((size_t)1 << 30);
    RUN(test_lane_loss_resumes);
    RUN(test_orderly_close_does_not_resume);
    RUN(test_stream_across_kills);
    RUN(test_requests_across_resume);
    RUN(test_session_expires);
    RUN(test_resuming_without_progress_ends);
    RUN(test_new_incarnation_and_unknown_session);
    RUN(test_client_restart);
    RUN(test_best_effort_counts_losses);
    RUN(test_packed_stream_across_kills);
    harness_stop();
    return 0;
}
