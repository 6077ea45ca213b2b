/* The TCP transport over loopback, driven by one application-driven worker
 * that holds both ends of every connection: addresses, accept and connect,
 * byte-exact streams (echo with random sizes, pieces and zero-copy; 100 MB
 * one way; 50 connections at once), receive pause and resume, errors from
 * on_recv, peer close, close with sends in flight, refused connects, and a
 * worker that detaches once everything is closed.
 *
 * Every stream is a window onto one random pattern, so a receiver checks
 * each byte against the pattern at its stream offset: stronger than a
 * checksum, and it names the first wrong offset. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fdn/fdn.h>

#include "test.h"

#define RNG_SEED 0x5eed5eed12345678u
#define PATTERN_LEN ((8u << 20) + 4099u) /* sends go up to 4 MiB */

#include "tp_harness.h"

#define ADDR_MAX 64

static void pattern_init(void)
{
    pattern = malloc(PATTERN_LEN);
    CHECK(pattern != NULL);
    for (size_t i = 0; i < PATTERN_LEN; i += 8) {
        uint64_t r = rng_next();
        memcpy(pattern + i, &r, PATTERN_LEN - i < 8 ? PATTERN_LEN - i : 8);
    }
}

/* TCP holds nothing but its sockets, which teardown() counts. */
static void check_released(void) {}

/* ---- Tests -------------------------------------------------------------- */

static void test_registry_and_bad_addresses(void)
{
    const char *rest = NULL;
    CHECK(fdn__transport_for("tcp://127.0.0.1:1", &rest) == tp);
    CHECK(strcmp(rest, "127.0.0.1:1") == 0);
    CHECK(fdn__transport_for("udp://127.0.0.1:1", &rest) == NULL);
    CHECK(fdn__transport_for("127.0.0.1:1", &rest) == NULL);
    CHECK(strcmp(tp->name, "tcp") == 0);
    CHECK_EQ(tp->caps, FDN__TP_RELIABLE | FDN__TP_ZEROCOPY | FDN__TP_IO_URING);
    CHECK(tp->poll == NULL);

    setup();
    static const char *const bad[] = {
        "", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:80x", "127.0.0.1:0080000", "127.1:80", "1.2.3.4.5:80", "01.2.3.4:80",
        "localhost:80", "::1:80", "[::1]", "[::1]:", "[::1]80", "[::1:80", "[]:80",
        "[fe80::1%lo]:80", "[127.0.0.1]:80", "[::1]:99999", " 127.0.0.1:80",
    };
    struct acceptor a = {0};
    struct endpoint ep = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = tp->listen(w, bad[i], NULL, &acc_events, &a, &a.l);
        if (rc != -EINVAL)
            fprintf(stderr, "listen(\"%s\") returned %d\n", bad[i], rc);
        CHECK_EQ(rc, -EINVAL);
        CHECK(strlen(fdn_errmsg()) > 0);
        CHECK_EQ(tp->connect(w, bad[i], NULL, &ep_events, &ep, &ep.conn), -EINVAL);
    }
    CHECK_EQ(tp->connect(w, "localhost:80", NULL, &ep_events, &ep, &ep.conn), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "numeric") != NULL);
    CHECK_EQ(tp->connect(w, "127.0.0.1:0", NULL, &ep_events, &ep, &ep.conn), -EINVAL);
    struct fdn__tp_options huge = {.recv_buffers = 1u << 20};
    CHECK_EQ(tp->listen(w, "127.0.0.1:0", &huge, &acc_events, &a, &a.l), -EINVAL);
    CHECK_EQ(a.closed_calls, 0);
    CHECK_EQ(ep.closed_calls + ep.connected_calls, 0);
    teardown();
}

/* Listen on port 0, accept, start, exchange a little, read addresses, close.
 * Returns listen's error. */
static int basic_exchange(const char *listen_addr, const char *host_prefix)
{
    struct acceptor a;
    char addr[ADDR_MAX];
    int rc = start_listener(&a, listen_addr, addr, sizeof addr);
    if (rc < 0)
        return rc;
    CHECK(strncmp(addr, host_prefix, strlen(host_prefix)) == 0);
    CHECK(strcmp(addr + strlen(host_prefix), "0") != 0); /* a real port was chosen */
    char tiny[4];
    CHECK_EQ(fdn__tp_listener_addr(a.l, tiny, sizeof tiny), -ENOSPC);

    struct endpoint client = {.check_rx = true, .rx_seed = 1000};
    struct endpoint server = {.check_rx = true, .tx_seed = 1000};
    connect_pair(&a, addr, NULL, &client, &server);
    CHECK_EQ(fdn_worker_detach(w), -EBUSY); /* receives are in flight */
    char peer[ADDR_MAX];
    CHECK(fdn__tp_conn_peer_addr(client.conn, peer, sizeof peer) > 0);
    CHECK(strcmp(peer, addr) == 0);
    CHECK(fdn__tp_conn_peer_addr(server.conn, peer, sizeof peer) > 0);
    CHECK(strncmp(peer, host_prefix, strlen(host_prefix)) == 0);
    CHECK_EQ(fdn__tp_conn_peer_addr(server.conn, tiny, sizeof tiny), -ENOSPC);
    /* The host accept limits count by: the address without port or
     * brackets ("127.0.0.1:" -> "127.0.0.1", "[::1]:" -> "::1"). */
    char host[ADDR_MAX], want[ADDR_MAX];
    bool v6 = host_prefix[0] == '[';
    snprintf(want, sizeof want, "%.*s", (int)strlen(host_prefix) - 1 - 2 * v6, host_prefix + v6);
    CHECK(fdn__tp_conn_peer_host(server.conn, host, sizeof host) > 0);
    CHECK(strcmp(host, want) == 0);
    CHECK_EQ(fdn__tp_conn_peer_host(server.conn, tiny, 2), -ENOSPC);

    send_pattern(&client, 5, 2, false);
    send_pattern(&server, 100000, 3, true);
    RUN_UNTIL(server.rx_bytes == 5 && client.rx_bytes == 100000 && client.sends_ok == 1 &&
              server.sends_ok == 1);

    close_and_wait(&client);
    CHECK_EQ(client.closed_err, -ECANCELED);
    RUN_UNTIL(server.closed_calls == 1);
    CHECK_EQ(server.closed_err, 0);
    stop_listener(&a);
    return 0;
}

static void test_ipv4_basic(void)
{
    setup();
    CHECK_OK(basic_exchange("127.0.0.1:0", "127.0.0.1:"));
    teardown();
}

static void test_ipv6_basic(void)
{
    setup();
    int rc = basic_exchange("[::1]:0", "[::1]:");
    if (rc == -EAFNOSUPPORT || rc == -EADDRNOTAVAIL)
        printf("SKIP (this sub-test only): IPv6 loopback unavailable: %s\n", fdn_errmsg());
    else
        CHECK_OK(rc);
    teardown();
}

/* The client sends random sizes (1 B .. 4 MiB) in random pieces, some
 * zero-copy, at most 8 outstanding; the server echoes copies back in random
 * pieces, some zero-copy; the client checks the echo byte for byte. */
static void test_echo_random(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {.check_rx = true, .rx_seed = 777, .tx_seed = 777};
    struct endpoint server = {.echo = true, .check_rx = true, .rx_seed = 777};
    connect_pair(&a, addr, NULL, &client, &server);

    const int sends = 80;
    while (client.sends_queued < (uint64_t)sends) {
        size_t len = rng_size(4u << 20);
        int pieces = (int)rng_range(1, len < 300 ? len : 300);
        send_pattern(&client, len, pieces, rng_next() & 1);
        RUN_UNTIL(client.sends_queued - client.sends_reported < 8);
    }
    RUN_UNTIL(client.rx_bytes == client.tx_bytes && client.sends_reported == (uint64_t)sends &&
              server.sends_reported == server.sends_queued);
    CHECK_EQ(client.sends_failed + server.sends_failed, 0);
    CHECK_EQ(server.rx_bytes, client.tx_bytes);
    CHECK_EQ(server.tx_bytes, client.tx_bytes);

    close_and_wait(&server);
    RUN_UNTIL(client.closed_calls == 1);
    CHECK_EQ(client.closed_err, 0);
    stop_listener(&a);
    teardown();
}

/* 100 MB one way, 1 MiB-ish sends (every other one zero-copy), at most 4
 * outstanding: the sender never queues more than 4 sends. */
static void test_stream_100mb(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {.tx_seed = 42};
    struct endpoint server = {.check_rx = true, .rx_seed = 42};
    connect_pair(&a, addr, NULL, &client, &server);

    const uint64_t total = 100u * 1000 * 1000;
    while (client.tx_bytes < total) {
        size_t len = (size_t)rng_range(1u << 19, 3u << 19);
        if (len > total - client.tx_bytes)
            len = (size_t)(total - client.tx_bytes);
        send_pattern(&client, len, (int)rng_range(1, 4), client.sends_queued % 2 == 0);
        RUN_UNTIL(client.sends_queued - client.sends_reported < 4);
    }
    RUN_UNTIL(server.rx_bytes == total && client.sends_reported == client.sends_queued);
    CHECK_EQ(client.bytes_sent_ok, total);
    close_and_wait(&client);
    RUN_UNTIL(server.closed_calls == 1);
    CHECK_EQ(server.closed_err, 0);
    stop_listener(&a);
    teardown();
}

/* 50 connections at once, each echoing its own stream; sends are queued
 * before the connections are up. */
#define MANY 50

static struct endpoint clients[MANY], servers[MANY];

static bool all_echoed(void)
{
    for (int i = 0; i < MANY; i++)
        if (clients[i].rx_bytes != clients[i].tx_bytes ||
            clients[i].sends_reported != clients[i].sends_queued)
            return false;
    return true;
}

static bool all_closed(void)
{
    for (int i = 0; i < MANY; i++)
        if (!clients[i].closed_calls || !servers[i].closed_calls)
            return false;
    return true;
}

static void test_many_connections(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    for (int i = 0; i < MANY; i++) {
        uint64_t seed = (uint64_t)i * 104729u;
        clients[i] = (struct endpoint){.check_rx = true, .rx_seed = seed, .tx_seed = seed};
        servers[i] = (struct endpoint){.echo = true};
        CHECK_OK(tp->connect(w, addr, NULL, &ep_events, &clients[i], &clients[i].conn));
        for (int k = 0; k < 4; k++)
            send_pattern(&clients[i], rng_size(256u << 10), (int)rng_range(1, 40), k & 1);
    }
    RUN_UNTIL(a.accepted == MANY);
    for (int i = 0; i < MANY; i++) {
        servers[i].conn = a.conns[i];
        fdn__tp_conn_start(a.conns[i], &ep_events, &servers[i]);
    }
    RUN_UNTIL(all_echoed());
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ(clients[i].connected_calls, 1);
        CHECK_EQ(clients[i].connected_err, 0);
        CHECK_EQ(clients[i].sends_failed, 0);
        fdn__tp_conn_close(clients[i].conn);
    }
    RUN_UNTIL(all_closed());
    for (int i = 0; i < MANY; i++) {
        CHECK_EQ(servers[i].closed_err, 0);
        CHECK_EQ(servers[i].sends_failed, 0);
    }
    stop_listener(&a);
    teardown();
}

/* Pausing stops on_recv at once (even from inside on_recv, with data already
 * received by the kernel); resuming continues with nothing lost. Then the
 * receiver pauses every third delivery and the test resumes it. */
static void test_recv_pause(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {.tx_seed = 5};
    struct endpoint server = {.check_rx = true, .rx_seed = 5, .pause_every = 1};
    connect_pair(&a, addr, NULL, &client, &server);

    for (int i = 0; i < 32; i++)
        send_pattern(&client, 256u << 10, 3, i % 4 == 0);
    RUN_UNTIL(server.paused);
    CHECK_EQ(server.recv_calls, 1);
    run_passes(200); /* an on_recv here would fail the test */
    CHECK_EQ(server.recv_calls, 1);

    server.pause_every = 3;
    RUN_UNTIL_RESUMING(&server, server.rx_bytes == client.tx_bytes);

    /* Pause and resume from outside any callback, twice in a row each. */
    server.pause_every = 0;
    resume(&server);
    server.paused = true;
    fdn__tp_recv_pause(server.conn, true);
    fdn__tp_recv_pause(server.conn, true);
    uint64_t before = server.rx_bytes;
    send_pattern(&client, 1u << 20, 5, false);
    run_passes(100);
    CHECK_EQ(server.rx_bytes, before);
    server.paused = false;
    fdn__tp_recv_pause(server.conn, false);
    fdn__tp_recv_pause(server.conn, false);
    RUN_UNTIL(server.rx_bytes == client.tx_bytes && client.sends_reported == client.sends_queued);
    CHECK_EQ(client.sends_failed, 0);

    close_and_wait(&server);
    RUN_UNTIL(client.closed_calls == 1);
    stop_listener(&a);
    teardown();
}

/* on_recv returning an error closes the connection with it; the peer sees
 * the connection end. */
static void test_recv_error_closes(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {0};
    struct endpoint server = {.recv_error = -EPROTO};
    connect_pair(&a, addr, NULL, &client, &server);
    for (int i = 0; i < 8; i++)
        send_pattern(&client, 64u << 10, 2, false);
    RUN_UNTIL(server.closed_calls == 1);
    CHECK_EQ(server.closed_err, -EPROTO);
    CHECK_EQ(server.recv_calls, 1);
    RUN_UNTIL(client.closed_calls == 1);
    CHECK(client.closed_err == 0 || client.closed_err == -ECONNRESET ||
          client.closed_err == -EPIPE);
    stop_listener(&a);
    teardown();
}

/* The peer closes after its sends are reported: every byte arrives, then
 * on_closed(0). The receiver pauses itself every other delivery, so the end
 * of the stream may arrive while data is held: it must still come last. */
static void test_peer_close_delivers_all(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {.tx_seed = 99};
    struct endpoint server = {.check_rx = true, .rx_seed = 99, .pause_every = 2};
    connect_pair(&a, addr, NULL, &client, &server);
    for (int i = 0; i < 24; i++)
        send_pattern(&client, rng_size(1u << 20), 4, i % 3 == 0);
    RUN_UNTIL_RESUMING(&server, client.sends_reported == client.sends_queued);
    CHECK_EQ(client.sends_failed, 0);
    close_and_wait(&client);
    CHECK_EQ(client.closed_err, -ECANCELED);
    RUN_UNTIL_RESUMING(&server, server.closed_calls == 1);
    CHECK_EQ(server.closed_err, 0);
    CHECK_EQ(server.rx_bytes, client.tx_bytes);
    stop_listener(&a);
    teardown();
}

/* Close with sends in flight (the receiver does not read, so they cannot
 * finish): each send is reported exactly once, in order, before on_closed;
 * close is idempotent, also from inside on_sent; sending afterwards fails. */
static void test_close_with_sends_in_flight(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {.close_in_on_sent = true};
    struct endpoint server = {.paused = true};
    CHECK_OK(tp->connect(w, addr, NULL, &ep_events, &client, &client.conn));
    RUN_UNTIL(client.connected_calls == 1 && a.accepted == 1);
    server.conn = a.conns[0];
    fdn__tp_recv_pause(server.conn, true); /* before start: never reads */
    fdn__tp_conn_start(server.conn, &ep_events, &server);

    for (int i = 0; i < 16; i++)
        send_pattern(&client, (1u << 20) + (size_t)i, 70 + i * 10, i % 2 == 0);
    run_passes(100);
    CHECK(client.sends_reported < client.sends_queued); /* the socket is full */
    fdn__tp_conn_close(client.conn);
    fdn__tp_conn_close(client.conn);
    uint8_t byte = 1;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct fdn__tp_send late = {.iov = &iov, .iovcnt = 1, .len = 1};
    int rc = fdn__tp_send(client.conn, &late);
    CHECK(rc == -EPIPE || rc == -ENOTCONN);
    RUN_UNTIL(client.closed_calls == 1);
    CHECK_EQ(client.closed_err, -ECANCELED);
    CHECK_EQ(client.sends_reported, 16);
    CHECK(client.sends_failed > 0);
    CHECK_EQ(client.first_send_err, -ECANCELED);

    close_and_wait(&server);
    CHECK_EQ(server.recv_calls, 0);
    stop_listener(&a);
    teardown();
}

/* A refused connect: on_connected(-ECONNREFUSED), sends queued meanwhile
 * fail, then on_closed. A connect closed at once reports only on_closed. */
static void test_connect_refused_and_cancelled(void)
{
    setup();
    /* A bound socket that does not listen: connecting to it is refused, and
     * keeping it open keeps the port from being reused meanwhile. */
    int hole = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(hole >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    CHECK_EQ(bind(hole, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t len = sizeof sin;
    CHECK_EQ(getsockname(hole, (struct sockaddr *)&sin, &len), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", ntohs(sin.sin_port));

    struct endpoint ep = {0};
    CHECK_OK(tp->connect(w, addr, NULL, &ep_events, &ep, &ep.conn));
    send_pattern(&ep, 1000, 2, false);
    RUN_UNTIL(ep.closed_calls == 1);
    CHECK_EQ(ep.connected_calls, 1);
    CHECK_EQ(ep.connected_err, -ECONNREFUSED);
    CHECK_EQ(ep.closed_err, -ECONNREFUSED);
    CHECK_EQ(ep.sends_failed, 1);
    CHECK_EQ(ep.first_send_err, -ECONNREFUSED);
    close(hole);

    struct acceptor a;
    char laddr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", laddr, sizeof laddr));
    struct endpoint quick = {0};
    CHECK_OK(tp->connect(w, laddr, NULL, &ep_events, &quick, &quick.conn));
    fdn__tp_conn_close(quick.conn);
    RUN_UNTIL(quick.closed_calls == 1);
    CHECK_EQ(quick.connected_calls, 0);
    CHECK_EQ(quick.closed_err, -ECANCELED);
    /* Whatever the listener accepted meanwhile is refused unstarted. */
    for (int i = 0; i < a.accepted; i++)
        fdn__tp_conn_close(a.conns[i]);
    stop_listener(&a);
    teardown();
}

/* An accepted connection closed before conn_start gets no callback (it has
 * no events) and is freed; its peer sees the end. */
static void test_close_unstarted(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {0};
    CHECK_OK(tp->connect(w, addr, NULL, &ep_events, &client, &client.conn));
    RUN_UNTIL(client.connected_calls == 1 && a.accepted == 1);
    uint8_t byte = 7;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct fdn__tp_send early = {.iov = &iov, .iovcnt = 1, .len = 1};
    CHECK_EQ(fdn__tp_send(a.conns[0], &early), -ENOTCONN);
    fdn__tp_conn_close(a.conns[0]);
    fdn__tp_conn_close(a.conns[0]);
    RUN_UNTIL(client.closed_calls == 1);
    CHECK_EQ(client.closed_err, 0);
    stop_listener(&a);
    teardown();
}

/* A zero-length send is reported in order, from the worker loop. */
static void test_zero_length_send(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "127.0.0.1:0", addr, sizeof addr));
    struct endpoint client = {0};
    struct endpoint server = {.check_rx = true};
    connect_pair(&a, addr, NULL, &client, &server);
    CHECK_OK(submit(&client, new_send(&client, 1), false));
    CHECK_EQ(client.sends_reported, 0); /* never from inside the call */
    send_pattern(&client, 3000, 3, false);
    CHECK_OK(submit(&client, new_send(&client, 1), false));
    RUN_UNTIL(client.sends_reported == 3 && server.rx_bytes == 3000);
    CHECK_EQ(client.sends_ok, 3);
    close_and_wait(&client);
    RUN_UNTIL(server.closed_calls == 1);
    stop_listener(&a);
    teardown();
}

int main(void)
{
    tp = fdn__transport_for("tcp://", NULL);
    CHECK(tp != NULL);
    pattern_init();
    RUN(test_registry_and_bad_addresses);
    RUN(test_ipv4_basic);
    RUN(test_ipv6_basic);
    RUN(test_zero_length_send);
    RUN(test_echo_random);
    RUN(test_stream_100mb);
    RUN(test_many_connections);
    RUN(test_recv_pause);
    RUN(test_recv_error_closes);
    RUN(test_peer_close_delivers_all);
    RUN(test_close_with_sends_in_flight);
    RUN(test_connect_refused_and_cancelled);
    RUN(test_close_unstarted);
    free(pattern);
    return 0;
}
