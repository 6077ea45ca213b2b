/* Every disconnect is counted and logged (docs/RELIABILITY.md): a log
 * handler captures the lines while the test provokes a failed
 * authentication, an orderly close, an idle timeout followed by the
 * session's expiry, and a connection refused by a limit. Each end says
 * exactly one line per event, naming the node, the peer's address, the
 * lane, the transport and the reason, at WARN when abnormal and INFO when
 * orderly, and the matching counter moves. A raw client that completes the
 * handshake by hand and then stays silent plays the dead peer. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fdn/fdn.h>

#include "base/log.h"
#include "core/handshake.h"
#include "core/node_internal.h"
#include "core/wire.h"
#include "test.h"
#include "node_harness.h"
#include "raw_peer.h"

static const uint8_t secret[] = "every end says why, exactly once";
static const uint8_t wrong[] = "every end says why, exactly twice";

#define MS ((uint64_t)1000 * 1000)

/* ---- Captured lines ---------------------------------------------------------- */

#define MAX_LINES 64

static struct {
    int count;
    int level[MAX_LINES];
    char line[MAX_LINES][FDN__LOG_LINE_MAX];
} logged;

static void capture(int level, const char *line, void *arg)
{
    (void)arg;
    if (logged.count < MAX_LINES) {
        logged.level[logged.count] = level;
        snprintf(logged.line[logged.count], sizeof logged.line[0], "%s", line);
    }
    logged.count++;
}

static void forget_lines(void) { logged.count = 0; }

/* "node 1a2b3c4d: ", as every line of node n begins. */
static void node_prefix(const fdn_node *n, char *buf, size_t len)
{
    snprintf(buf, len, "node %02x%02x%02x%02x: ", n->node_id[0], n->node_id[1], n->node_id[2],
             n->node_id[3]);
}

static int lines_of(const fdn_node *n)
{
    char prefix[32];
    node_prefix(n, prefix, sizeof prefix);
    int found = 0;
    for (int i = 0; i < logged.count && i < MAX_LINES; i++)
        found += !strncmp(logged.line[i], prefix, strlen(prefix));
    return found;
}

/* The one line of node n that contains every one of the words (NULL
 * ended); fails unless there is exactly one, at level. */
static const char *the_line(const fdn_node *n, int level, const char *const *words)
{
    char prefix[32];
    node_prefix(n, prefix, sizeof prefix);
    const char *match = NULL;
    int found = 0;
    for (int i = 0; i < logged.count && i < MAX_LINES; i++) {
        const char *l = logged.line[i];
        bool all = !strncmp(l, prefix, strlen(prefix));
        for (const char *const *wd = words; all && *wd; wd++)
            all = strstr(l, *wd) != NULL;
        if (!all)
            continue;
        found++;
        match = l;
        CHECK_EQ(logged.level[i], level);
    }
    if (found != 1) {
        fprintf(stderr, "%d lines of %s with", found, prefix);
        for (const char *const *wd = words; *wd; wd++)
            fprintf(stderr, " \"%s\"", *wd);
        fprintf(stderr, "; captured:\n");
        for (int i = 0; i < logged.count && i < MAX_LINES; i++)
            fprintf(stderr, "  %s\n", logged.line[i]);
    }
    CHECK_EQ(found, 1);
    printf("   %s\n", match);
    return match;
}

#define THE_LINE(n, level, ...) the_line((n), (level), (const char *const[]){__VA_ARGS__, NULL})

/* ---- Nodes --------------------------------------------------------------------- */

static void make_node(struct link *s, const uint8_t *key, size_t key_len, fdn_node_config cfg)
{
    memset(s, 0, sizeof *s);
    cfg.worker = w;
    cfg.secret = key;
    cfg.secret_len = key_len;
    cfg.no_same_host_shm = true;
    CHECK_OK(fdn_node_create(&cfg, &s->node));
    link_watch(s);
}

static fdn_node_stats stats_of(const struct link *s)
{
    fdn_node_stats ns;
    fdn_node_stats_get(s->node, &ns);
    return ns;
}

/* ---- Tests ---------------------------------------------------------------------- */

/* A client with the wrong secret: the server says "auth failed" and counts
 * it; the client, which the server tells nothing, says its handshake failed. */
static void test_auth_failure(void)
{
    struct link srv, cli;
    char addr[128];
    make_node(&srv, secret, sizeof secret, (fdn_node_config){0});
    make_node(&cli, wrong, sizeof wrong, (fdn_node_config){0});
    link_listen_any(&srv, addr, sizeof addr);
    forget_lines();
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(cli.node, addr, &p));
    RUN_UNTIL(cli.downs == 1 && stats_of(&srv).auth_failures == 1 &&
              lines_of(srv.node) == 1 && lines_of(cli.node) == 1);
    THE_LINE(srv.node, FDN_LOG_WARN, "tcp://127.0.0.1:", "lane 1 (tcp)", ": auth failed: ");
    THE_LINE(cli.node, FDN_LOG_WARN, addr, "lane 1 (tcp)", ": handshake failed: ");
    CHECK_EQ(stats_of(&cli).peers_down, 1);
    fdn_node_destroy(cli.node);
    fdn_node_destroy(srv.node);
}

/* An orderly close: INFO on both ends, one line each, for a session of two
 * lanes. */
static void test_orderly_close(void)
{
    struct link srv, cli;
    char addr[128];
    make_node(&srv, secret, sizeof secret, (fdn_node_config){0});
    make_node(&cli, secret, sizeof secret, (fdn_node_config){0});
    link_listen_any(&srv, addr, sizeof addr);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(cli.node, addr, &p));
    RUN_UNTIL(srv.ups == 1 && cli.ups == 1 && fdn_peer_lane_count(p) == 2);
    fdn_lane_stats ls;
    RUN_UNTIL(fdn_peer_lane_stats(p, 2, &ls) == 0 && ls.up);
    forget_lines();
    fdn_peer_close(p);
    RUN_UNTIL(srv.downs == 1 && cli.downs == 1);
    CHECK_EQ(srv.last_down_reason, 0);
    THE_LINE(cli.node, FDN_LOG_INFO, addr, "all lanes (tcp)", ": closed by this node");
    THE_LINE(srv.node, FDN_LOG_INFO, "(tcp): closed by the peer: normal");
    CHECK_EQ(lines_of(cli.node), 1);
    CHECK_EQ(lines_of(srv.node), 1);
    CHECK_EQ(stats_of(&srv).peers_down, 1);
    fdn_node_destroy(cli.node);
    fdn_node_destroy(srv.node);
}

/* A peer that goes silent: the node pings it, then times the lane out (a
 * CLOSE "idle timeout" reaches the raw client), its session waits to be
 * resumed, and expires. Two events, two lines, two counters. */
static void test_idle_timeout_then_expiry(void)
{
    struct link srv;
    char addr[128];
    make_node(&srv, secret, sizeof secret,
              (fdn_node_config){.keepalive_ns = 20 * MS, .idle_timeout_ns = 100 * MS,
                                .session_timeout_ns = 300 * MS, .lanes = 1});
    link_listen_any(&srv, addr, sizeof addr);
    struct raw_peer r;
    raw_peer_connect(&r, addr);
    forget_lines();
    /* Lane 0 of a one-lane session, as a client with the right secret. */
    CHECK(raw_peer_handshake(&r, secret, sizeof secret,
                             (struct raw_hello){.node_id = 0x77, .incarnation = 1,
                                                .session = 0x5e55}));
    RUN_UNTIL(srv.ups == 1);
    RUN_UNTIL(!raw_pump(&r));   /* pinged, never answered, closed */
    CHECK(r.pings >= 1);
    CHECK(r.got_close);
    CHECK_EQ(r.close_reason, FDN__CLOSE_IDLE_TIMEOUT);
    fdn_node_stats ns = stats_of(&srv);
    CHECK_EQ(ns.idle_timeouts, 1);
    CHECK_EQ(ns.sessions_interrupted, 1);
    CHECK(ns.pings_sent >= 1);
    CHECK_EQ(ns.pongs_received, 0);
    THE_LINE(srv.node, FDN_LOG_WARN, "tcp://127.0.0.1:", "lane 1 (tcp)",
             ": idle timeout: nothing received for ", " ms; session interrupted, resuming");
    CHECK_EQ(srv.downs, 0);
    RUN_UNTIL(srv.downs == 1);
    CHECK_EQ(srv.last_down_reason, -ETIMEDOUT);
    CHECK_EQ(stats_of(&srv).sessions_expired, 1);
    THE_LINE(srv.node, FDN_LOG_WARN, "all lanes (tcp)",
             ": session expired: not resumed within 300 ms");
    CHECK_EQ(lines_of(srv.node), 2);
    raw_peer_close(&r);
    fdn_node_destroy(srv.node);
}

/* A connection over max_conns_per_addr is refused and says whence. */
static void test_refused_by_limit(void)
{
    struct link srv;
    char addr[128];
    make_node(&srv, secret, sizeof secret,
              (fdn_node_config){.max_conns_per_addr = 1, .handshake_timeout_ns = 60000 * MS});
    link_listen_any(&srv, addr, sizeof addr);
    forget_lines();
    struct raw_peer first, second;
    raw_peer_connect(&first, addr);
    raw_peer_connect(&second, addr);
    RUN_UNTIL(!raw_pump(&second));
    CHECK_EQ(stats_of(&srv).refused_per_addr, 1);
    THE_LINE(srv.node, FDN_LOG_WARN, "tcp://127.0.0.1:", "lane ? (tcp)",
             ": refused: too many connections from 127.0.0.1 (1, max_conns_per_addr)");
    CHECK_EQ(lines_of(srv.node), 1);
    CHECK(raw_pump(&first));
    raw_peer_close(&first);
    raw_peer_close(&second);
    fdn_node_destroy(srv.node);
}

int main(void)
{
    fdn_log_set_handler(capture, NULL);
    CHECK_OK(fdn_log_set_level(FDN_LOG_INFO));
    harness_start((size_t)256 << 20);
    RUN(test_auth_failure);
    RUN(test_orderly_close);
    RUN(test_idle_timeout_then_expiry);
    RUN(test_refused_by_limit);
    harness_stop();
    fdn_log_set_handler(NULL, NULL);
    return 0;
}
