/* Accept limits (core/node.c, "Accept limits"): plain TCP sockets that
 * connect and never say HELLO, opened against a node with small limits.
 * The connection beyond max_conns_per_addr (lanes of real sessions
 * included) or beyond max_pending_handshakes is closed by the node at once,
 * the others stay open, the counters say which limit refused it, and once
 * the sockets are gone a real peer connects. Over shm the limit holds per
 * process. Every wait is for an event, bounded. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fdn/fdn.h>

#include "core/node_internal.h"
#include "test.h"
#include "node_harness.h"
#include "raw_peer.h"

static const uint8_t secret[] = "limits keep the door, not the house";

#define S ((uint64_t)1000 * 1000 * 1000)

static void make_node(struct link *s, fdn_node_config cfg, bool same_host_shm)
{
    memset(s, 0, sizeof *s);
    cfg.worker = w;
    cfg.secret = secret;
    cfg.secret_len = sizeof secret;
    cfg.no_same_host_shm = !same_host_shm;
    /* Sockets that never say HELLO stay pending for the whole test. */
    if (!cfg.handshake_timeout_ns)
        cfg.handshake_timeout_ns = 600 * S;
    CHECK_OK(fdn_node_create(&cfg, &s->node));
    link_watch(s);
}

/* True once the node has closed the socket: end of stream or a reset.
 * Bytes before that (a CLOSE frame at a handshake timeout) are read past. */
static bool raw_closed(int fd)
{
    char b[256];
    ssize_t n;
    while ((n = recv(fd, b, sizeof b, MSG_DONTWAIT)) > 0)
        continue;
    if (n == 0 || errno == ECONNRESET)
        return true;
    CHECK(errno == EAGAIN || errno == EWOULDBLOCK);
    return false;
}

static uint32_t conns_from(fdn_node *n, const char *host)
{
    uint32_t sum = 0;
    for (int b = 0; b < FDN__HOST_BUCKETS; b++)
        for (const struct fdn__host_conns *h = n->hosts[b]; h; h = h->next)
            if (!strcmp(h->host, host))
                sum += h->conns;
    return sum;
}

/* Nothing held any more: no host with a connection, nothing pending. */
static bool places_free(fdn_node *n)
{
    for (int b = 0; b < FDN__HOST_BUCKETS; b++)
        if (n->hosts[b])
            return false;
    return n->pending_handshakes == 0;
}

/* max_conns_per_addr 3: three silent sockets stay, the fourth is closed at
 * once. Once they are gone, a real session (2 lanes) takes two places of
 * 127.0.0.1, so one more socket fits and the next is refused again. */
static void test_per_addr_limit(void)
{
    struct link srv, cli;
    char addr[128];
    make_node(&srv, (fdn_node_config){.max_conns_per_addr = 3}, false);
    link_listen_any(&srv, addr, sizeof addr);
    int port = raw_port_of(addr);
    int fd[5];
    for (int i = 0; i < 4; i++)
        fd[i] = raw_tcp_connect(port);
    RUN_UNTIL(raw_closed(fd[3]));
    fdn_node_stats ns;
    fdn_node_stats_get(srv.node, &ns);
    CHECK_EQ(ns.refused_per_addr, 1);
    CHECK_EQ(ns.refused_pending, 0);
    /* Accepted in order: the first three were taken before the fourth. */
    for (int i = 0; i < 3; i++)
        CHECK(!raw_closed(fd[i]));
    CHECK_EQ(conns_from(srv.node, "127.0.0.1"), 3);
    CHECK_EQ(srv.node->pending_handshakes, 3);
    CHECK_EQ(srv.ups + srv.downs, 0);   /* none of them was ever a peer */

    for (int i = 0; i < 4; i++)
        close(fd[i]);
    RUN_UNTIL(places_free(srv.node));
    make_node(&cli, (fdn_node_config){0}, false);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(cli.node, addr, &p));
    RUN_UNTIL(all_lanes_up(p) && all_lanes_up(srv.peer));
    CHECK_EQ(fdn_peer_lane_count(p), 2);
    CHECK_EQ(conns_from(srv.node, "127.0.0.1"), 2);   /* lanes count */
    CHECK_EQ(srv.node->pending_handshakes, 0);        /* both authenticated */

    fd[0] = raw_tcp_connect(port);
    fd[1] = raw_tcp_connect(port);
    RUN_UNTIL(raw_closed(fd[1]));
    CHECK(!raw_closed(fd[0]));
    fdn_node_stats_get(srv.node, &ns);
    CHECK_EQ(ns.refused_per_addr, 2);
    CHECK(all_lanes_up(p));
    close(fd[0]);
    close(fd[1]);
    fdn_node_destroy(cli.node);
    fdn_node_destroy(srv.node);
}

/* max_pending_handshakes 2: two sockets that never say HELLO hold both
 * places; a third connection is refused, and so is a real client's (its
 * session fails: the node closed it before its HELLO). Once one socket
 * goes, the client's lanes get through one after the other (a lane stops
 * being pending when it authenticates). */
static void test_pending_limit(void)
{
    struct link srv, cli;
    char addr[128];
    make_node(&srv, (fdn_node_config){.max_pending_handshakes = 2}, false);
    link_listen_any(&srv, addr, sizeof addr);
    int port = raw_port_of(addr);
    int fd[3];
    for (int i = 0; i < 3; i++)
        fd[i] = raw_tcp_connect(port);
    RUN_UNTIL(raw_closed(fd[2]));
    CHECK(!raw_closed(fd[0]) && !raw_closed(fd[1]));
    fdn_node_stats ns;
    fdn_node_stats_get(srv.node, &ns);
    CHECK_EQ(ns.refused_pending, 1);
    CHECK_EQ(ns.refused_per_addr, 0);

    make_node(&cli, (fdn_node_config){0}, false);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(cli.node, addr, &p));
    RUN_UNTIL(cli.downs == 1);
    CHECK(cli.last_down_reason < 0);
    fdn_node_stats_get(srv.node, &ns);
    CHECK_EQ(ns.refused_pending, 2);

    close(fd[0]);
    RUN_UNTIL(srv.node->pending_handshakes == 1);
    CHECK_OK(fdn_node_connect(cli.node, addr, &p));
    RUN_UNTIL(all_lanes_up(p) && all_lanes_up(srv.peer));
    fdn_node_stats_get(srv.node, &ns);
    CHECK_EQ(ns.refused_pending, 2);
    CHECK_EQ(srv.node->pending_handshakes, 1);   /* fd[1], still silent */
    close(fd[1]);
    close(fd[2]);
    RUN_UNTIL(srv.node->pending_handshakes == 0);
    fdn_node_destroy(cli.node);
    fdn_node_destroy(srv.node);
}

/* A pending place is held at most handshake_timeout_ns: silent sockets are
 * closed then, and their places come back. */
static void test_pending_places_expire(void)
{
    struct link srv;
    char addr[128];
    make_node(&srv, (fdn_node_config){.max_pending_handshakes = 2,
                                      .handshake_timeout_ns = S / 5}, false);
    link_listen_any(&srv, addr, sizeof addr);
    int port = raw_port_of(addr);
    int fd[2] = {raw_tcp_connect(port), raw_tcp_connect(port)};
    RUN_UNTIL(raw_closed(fd[0]) && raw_closed(fd[1]));
    RUN_UNTIL(places_free(srv.node));
    fdn_node_stats ns;
    fdn_node_stats_get(srv.node, &ns);
    CHECK_EQ(ns.handshake_timeouts, 2);
    CHECK_EQ(ns.refused_pending, 0);
    close(fd[0]);
    close(fd[1]);
    fdn_node_destroy(srv.node);
}

/* Over shm a place belongs to the peer process ("pid:N"): this process's
 * first client takes both places of max_conns_per_addr 2; a second client
 * node of the same process is refused there, and reaches the node over TCP
 * instead, which counts 127.0.0.1 apart. */
static void test_shm_limit_per_process(void)
{
    struct link srv, c1, c2;
    char addr[128], pid[32];
    make_node(&srv, (fdn_node_config){.max_conns_per_addr = 2}, true);
    link_listen_any(&srv, addr, sizeof addr);
    make_node(&c1, (fdn_node_config){0}, true);
    fdn_peer *p1;
    CHECK_OK(fdn_node_connect(c1.node, addr, &p1));
    RUN_UNTIL(all_lanes_up(p1));
    CHECK(!strcmp(fdn_peer_transport(p1), "shm"));
    snprintf(pid, sizeof pid, "pid:%d", (int)getpid());
    CHECK_EQ(conns_from(srv.node, pid), 2);

    make_node(&c2, (fdn_node_config){0}, true);
    fdn_peer *p2;
    CHECK_OK(fdn_node_connect(c2.node, addr, &p2));
    RUN_UNTIL(all_lanes_up(p2));
    CHECK(!strcmp(fdn_peer_transport(p2), "tcp"));
    fdn_node_stats ns;
    fdn_node_stats_get(srv.node, &ns);
    CHECK_EQ(ns.refused_per_addr, 1);
    CHECK_EQ(conns_from(srv.node, pid), 2);
    CHECK_EQ(conns_from(srv.node, "127.0.0.1"), 2);
    CHECK_EQ(c2.downs, 0);
    fdn_node_destroy(c1.node);
    fdn_node_destroy(c2.node);
    fdn_node_destroy(srv.node);
}

int main(void)
{
    harness_start((size_t)256 << 20);
    RUN(test_per_addr_limit);
    RUN(test_pending_limit);
    RUN(test_pending_places_expire);
    RUN(test_shm_limit_per_process);
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(w), &ps);
    CHECK_EQ(ps.buffers_in_use, 0);
    harness_stop();
    return 0;
}
