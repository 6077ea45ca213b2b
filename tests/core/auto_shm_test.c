/* Same-host shortcuts (core/transport.h, transport/same_host.c): a node
 * given a tcp:// address of its own host talks to the peer through shared
 * memory when the peer offers it, and through TCP, unseen, when it does not
 * or when either side is told not to. Two nodes on one application-driven
 * worker; lanes, session resumption over shm, and a resumption that falls
 * back to TCP once the shm listener has gone. Every wait is for an event,
 * bounded by an iteration cap so a bug fails instead of hanging. */
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

#include "core/node_internal.h"
#include "core/transport.h"
#include "test.h"
#define HARNESS_IDLE_WAITS 30000
#include "node_harness.h"
#include "transport/shm_internal.h"
#include "transport/tcp_internal.h"

static const uint8_t secret[] = "same host, same secret, 32 bytes";

struct side {
    struct link link;
    uint64_t arrivals[FDN_CHANNEL_FIRST_USER];
};

static void on_message(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    struct side *s = arg;
    s->arrivals[channel]++;
    fdn_msg_free(m);
}

static void make_node(struct side *s, bool no_shm)
{
    memset(s, 0, sizeof *s);
    fdn_node_config cfg = {.worker = w, .secret = secret, .secret_len = sizeof secret,
                           .no_same_host_shm = no_shm};
    CHECK_OK(fdn_node_create(&cfg, &s->link.node));
    link_watch(&s->link);
    for (int c = 0; c < FDN_CHANNEL_FIRST_USER; c++)
        CHECK_OK(fdn_channel_set_handler(s->link.node, c, on_message, s));
}

static void listen_on(struct side *s, const char *where, char *addr, size_t len)
{
    int idx = fdn_node_listen(s->link.node, where);
    CHECK_OK(idx);
    CHECK(fdn_node_listen_addr(s->link.node, idx, addr, len) > 0);
}


/* The transport every lane of p is on, or NULL when they differ. */
static const char *lanes_transport(const fdn_peer *p)
{
    const char *name = NULL;
    for (int i = 0; i < fdn_peer_lane_count(p); i++) {
        const struct fdn__lane *l = p->lanes[i];
        CHECK(l && l->conn);
        if (name && strcmp(name, l->conn->tp->name) != 0)
            return NULL;
        name = l->conn->tp->name;
    }
    return name;
}

static fdn_peer *connect_whole(struct side *server, struct side *client, const char *addr)
{
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(client->link.node, addr, &p));
    RUN_UNTIL(client->link.ups == 1 && server->link.ups == 1 && all_lanes_up(p) &&
              all_lanes_up(server->link.peer));
    CHECK_EQ(fdn_peer_lane_count(p), 2);
    return p;
}

/* A message each way on the urgent lane and on the data lane arrives. */
static void exchange(struct side *server, struct side *client, fdn_peer *p)
{
    uint64_t before_s = server->arrivals[FDN_CHANNEL_DATA];
    uint64_t before_c = client->arrivals[FDN_CHANNEL_COORDINATION];
    fdn_msg *m;
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(w), 300000, &m));
    memset(fdn_msg_data(m), 7, fdn_msg_len(m));
    CHECK_OK(fdn_send(p, FDN_CHANNEL_DATA, m));
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(w), 64, &m));
    CHECK_OK(fdn_send(server->link.peer, FDN_CHANNEL_COORDINATION, m));
    RUN_UNTIL(server->arrivals[FDN_CHANNEL_DATA] == before_s + 1 &&
              client->arrivals[FDN_CHANNEL_COORDINATION] == before_c + 1);
}

static void teardown(struct side *a, struct side *b)
{
    links_destroy(&a->link, &b->link);
    /* Each up peer told once. */
    CHECK_EQ(a->link.downs + b->link.downs, a->link.ups + b->link.ups);
    struct fdn__shm_stats ss;
    fdn__shm_stats_get(&ss);
    CHECK_EQ(ss.segments_mapped, 0);   /* every segment reclaimed */
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* ---- Tests ------------------------------------------------------------------ */

/* The names: the exact address first, then the wildcards TCP would also
 * deliver to; nothing for another host or another transport. */
static void test_shortcut_names(void)
{
    char names[3][FDN__ADDR_MAX];
    CHECK_EQ(fdn__same_host_dial_addrs("tcp://127.0.0.1:7000", names, 3), 3);
    CHECK(!strcmp(names[0], "shm://@fdn-tcp-127.0.0.1:7000"));
    CHECK(!strcmp(names[1], "shm://@fdn-tcp-0.0.0.0:7000"));
    CHECK(!strcmp(names[2], "shm://@fdn-tcp-[::]:7000"));
    CHECK_EQ(fdn__same_host_dial_addrs("tcp://127.0.0.1:7000", names, 1), 1);
    CHECK_EQ(fdn__same_host_dial_addrs("tcp://[::ffff:127.0.0.2]:7001", names, 3), 3);
    CHECK(!strcmp(names[0], "shm://@fdn-tcp-127.0.0.2:7001"));
    CHECK_EQ(fdn__same_host_dial_addrs("tcp://[::1]:7000", names, 3), 2);
    CHECK(!strcmp(names[0], "shm://@fdn-tcp-[::1]:7000"));
    CHECK(!strcmp(names[1], "shm://@fdn-tcp-[::]:7000"));
    CHECK_EQ(fdn__same_host_dial_addrs("tcp://0.0.0.0:7000", names, 3), 2);
    CHECK_EQ(fdn__same_host_dial_addrs("tcp://192.0.2.1:7000", names, 3), 0); /* TEST-NET-1 */
    CHECK_EQ(fdn__same_host_dial_addrs("shm://@fdn-tcp-127.0.0.1:7000", names, 3), 0);
    CHECK_EQ(fdn__same_host_dial_addrs("tcp://localhost:7000", names, 3), 0);
    char buf[FDN__ADDR_MAX];
    CHECK(fdn__same_host_listen_addr("tcp://0.0.0.0:7000", buf, sizeof buf) > 0);
    CHECK(!strcmp(buf, "shm://@fdn-tcp-0.0.0.0:7000"));
    CHECK_EQ(fdn__same_host_listen_addr("shm://@x", buf, sizeof buf), 0);
    CHECK_EQ(fdn__same_host_listen_addr("tcp://127.0.0.1:7000", buf, 10), -ENOSPC);
}

/* A tcp:// address of this host: the peer is over shm, every lane of it,
 * at both ends, and says so. */
static void test_loopback_tcp_goes_over_shm(void)
{
    struct side a, b;
    char addr[FDN__ADDR_MAX], shown[FDN__ADDR_MAX];
    make_node(&a, false);
    make_node(&b, false);
    listen_on(&a, "tcp://127.0.0.1:0", addr, sizeof addr);
    fdn_peer *p = connect_whole(&a, &b, addr);
    CHECK(!strcmp(fdn_peer_transport(p), "shm"));
    CHECK(!strcmp(fdn_peer_transport(a.link.peer), "shm"));
    CHECK(fdn_peer_addr(p, shown, sizeof shown) > 0);
    char expect[2 * FDN__ADDR_MAX];
    snprintf(expect, sizeof expect, "shm://@fdn-tcp-%s", addr + strlen("tcp://"));
    CHECK(!strcmp(shown, expect));
    CHECK(fdn_peer_addr(a.link.peer, shown, sizeof shown) > 0);
    CHECK(starts_with(shown, "shm://pid:"));
    CHECK(!strcmp(lanes_transport(p), "shm"));
    CHECK(!strcmp(lanes_transport(a.link.peer), "shm"));
    exchange(&a, &b, p);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    teardown(&a, &b);
}

/* A wildcard listener is found through its own name, after the exact one
 * misses. */
static void test_wildcard_listener(void)
{
    struct side a, b;
    char addr[FDN__ADDR_MAX], dial[FDN__ADDR_MAX];
    make_node(&a, false);
    make_node(&b, false);
    listen_on(&a, "tcp://0.0.0.0:0", addr, sizeof addr);
    snprintf(dial, sizeof dial, "tcp://127.0.0.1:%s", strrchr(addr, ':') + 1);
    fdn_peer *p = connect_whole(&a, &b, dial);
    CHECK(!strcmp(fdn_peer_transport(p), "shm"));
    CHECK(!strcmp(lanes_transport(p), "shm"));
    exchange(&a, &b, p);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    teardown(&a, &b);
}

/* Told not to, on either side: TCP. A server without the shm listener is a
 * shortcut that fails; the client falls back without a peer_down. */
static void test_told_otherwise_is_tcp(void)
{
    for (int which = 0; which < 2; which++) {
        struct side a, b;
        char addr[FDN__ADDR_MAX], shown[FDN__ADDR_MAX];
        make_node(&a, which == 0);   /* 0: the server has no shm listener */
        make_node(&b, which == 1);   /* 1: the client does not dial shm */
        listen_on(&a, "tcp://127.0.0.1:0", addr, sizeof addr);
        fdn_peer *p = connect_whole(&a, &b, addr);
        CHECK(!strcmp(fdn_peer_transport(p), "tcp"));
        CHECK(!strcmp(fdn_peer_transport(a.link.peer), "tcp"));
        CHECK(fdn_peer_addr(p, shown, sizeof shown) > 0);
        CHECK(!strcmp(shown, addr));
        CHECK(!strcmp(lanes_transport(p), "tcp"));
        exchange(&a, &b, p);
        CHECK_EQ(a.link.downs + b.link.downs, 0);
        CHECK_EQ(b.link.ups, 1);
        teardown(&a, &b);
    }
}

/* Something that is not a node listens on the TCP port: the shortcuts miss
 * and the dial reaches it over TCP. */
static void test_plain_tcp_listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    CHECK_OK(bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ? -errno : 0);
    CHECK_OK(listen(fd, 4) < 0 ? -errno : 0);
    CHECK_OK(getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ? -errno : 0);
    char addr[64];
    snprintf(addr, sizeof addr, "tcp://127.0.0.1:%u", ntohs(sa.sin_port));
    struct side b;
    make_node(&b, false);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(b.link.node, addr, &p));
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    RUN_UNTIL(poll(&pfd, 1, 0) == 1);
    int conn = accept(fd, NULL, NULL);
    CHECK(conn >= 0);
    CHECK(!strcmp(fdn_peer_transport(p), "tcp"));
    CHECK_EQ(b.link.downs, 0);
    fdn_node_destroy(b.link.node);
    CHECK_EQ(b.link.downs, 1);   /* the peer that never came up, at destroy */
    close(conn);
    close(fd);
}

/* Two nodes on the same port at two loopback addresses: each is reached at
 * its own (a port-only name would send both to whichever bound first). */
static void test_same_port_two_addresses(void)
{
    struct side a, c, b;
    char addr_a[FDN__ADDR_MAX], addr_c[FDN__ADDR_MAX], want[64];
    make_node(&a, false);
    make_node(&c, false);
    make_node(&b, false);
    listen_on(&a, "tcp://127.0.0.1:0", addr_a, sizeof addr_a);
    snprintf(want, sizeof want, "tcp://127.0.0.2:%s", strrchr(addr_a, ':') + 1);
    if (fdn_node_listen(c.link.node, want) < 0) {
        printf("   (127.0.0.2 cannot be bound here: skipped)\n");
        fdn_node_destroy(c.link.node);
        fdn_node_destroy(b.link.node);
        fdn_node_destroy(a.link.node);
        return;
    }
    CHECK(fdn_node_listen_addr(c.link.node, 0, addr_c, sizeof addr_c) > 0);
    fdn_peer *p = connect_whole(&c, &b, addr_c);
    CHECK(!strcmp(fdn_peer_transport(p), "shm"));
    CHECK(!memcmp(fdn_peer_node_id(p), c.link.node->node_id, sizeof c.link.node->node_id));
    CHECK_EQ(a.link.ups, 0);
    fdn_node_destroy(c.link.node);
    fdn_node_destroy(b.link.node);
    fdn_node_destroy(a.link.node);
}

/* From inside: one lane's transport closed under it, as a reset would. */
static bool kill_lane(fdn_peer *p, int index)
{
    struct fdn__lane *l = p ? p->lanes[index] : NULL;
    if (!l || !l->conn || !l->up || l->close_sent)
        return false;
    fdn__tp_conn_close(l->conn);
    return true;
}

/* A lane lost over shm: the session resumes over shm, lanes and all. */
static void test_resume_over_shm(void)
{
    struct side a, b;
    char addr[FDN__ADDR_MAX];
    make_node(&a, false);
    make_node(&b, false);
    listen_on(&a, "tcp://127.0.0.1:0", addr, sizeof addr);
    fdn_peer *p = connect_whole(&a, &b, addr);
    for (int round = 0; round < 2; round++) {
        /* The data lane from the client, then the urgent lane from the server. */
        CHECK(round == 0 ? kill_lane(p, 1) : kill_lane(a.link.peer, 0));
        RUN_UNTIL(!fdn_peer_is_up(p) || !fdn_peer_is_up(a.link.peer));
        RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
        CHECK(!strcmp(lanes_transport(p), "shm"));
        CHECK(!strcmp(fdn_peer_transport(p), "shm"));
        CHECK(!strcmp(fdn_peer_transport(a.link.peer), "shm"));
        exchange(&a, &b, p);
    }
    fdn_node_stats ns;
    fdn_node_stats_get(b.link.node, &ns);
    CHECK_EQ(ns.sessions_resumed, 2);
    CHECK_EQ(a.link.ups + b.link.ups, 2);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    teardown(&a, &b);
}

/* The shm listener goes while the session lives, then a lane is lost: the
 * redial of shm is refused and the session resumes over TCP. */
static void test_resume_falls_back_to_tcp(void)
{
    struct side a, b;
    char addr[FDN__ADDR_MAX];
    make_node(&a, false);
    make_node(&b, false);
    listen_on(&a, "tcp://127.0.0.1:0", addr, sizeof addr);
    fdn_peer *p = connect_whole(&a, &b, addr);
    CHECK(!strcmp(fdn_peer_transport(p), "shm"));
    CHECK(a.link.node->shortcuts[0].tp != NULL);
    fdn__tp_listener_close(a.link.node->shortcuts[0].tp);
    RUN_UNTIL(a.link.node->shortcuts[0].closed);
    CHECK(kill_lane(p, 0));
    RUN_UNTIL(!fdn_peer_is_up(p));
    RUN_UNTIL(all_lanes_up(p) && all_lanes_up(a.link.peer));
    CHECK(!strcmp(fdn_peer_transport(p), "tcp"));
    CHECK(!strcmp(fdn_peer_transport(a.link.peer), "tcp"));
    CHECK(!strcmp(lanes_transport(p), "tcp"));
    CHECK(!strcmp(lanes_transport(a.link.peer), "tcp"));
    exchange(&a, &b, p);
    fdn_node_stats ns;
    fdn_node_stats_get(b.link.node, &ns);
    CHECK_EQ(ns.sessions_resumed, 1);
    CHECK_EQ(a.link.downs + b.link.downs, 0);
    teardown(&a, &b);
}

int main(void)
{
    harness_start((size_t)256 << 20);
    RUN(test_shortcut_names);
    RUN(test_loopback_tcp_goes_over_shm);
    RUN(test_wildcard_listener);
    RUN(test_told_otherwise_is_tcp);
    RUN(test_plain_tcp_listener);
    RUN(test_same_port_two_addresses);
    RUN(test_resume_over_shm);
    RUN(test_resume_falls_back_to_tcp);
    harness_stop();
    return 0;
}
