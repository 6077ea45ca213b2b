/* A raw peer for the node-level tests: a plain TCP socket on loopback that
 * speaks the wire protocol by hand, to give a node what a real one never
 * would. Sockets are non-blocking; every wait runs the test's worker, so
 * the node under test keeps going. Include after node_harness.h. */
#ifndef FDN_TESTS_RAW_PEER_H
#define FDN_TESTS_RAW_PEER_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "core/handshake.h"
#include "core/wire.h"
#include "node_harness.h"

/* The port of a "tcp://127.0.0.1:PORT" address. */
static inline int raw_port_of(const char *addr) { return atoi(strrchr(addr, ':') + 1); }

/* A socket connected to 127.0.0.1:port; it has sent nothing yet. */
static inline int raw_tcp_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(fd >= 0);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
    CHECK(rc == 0 || errno == EINPROGRESS);
    RUN_UNTIL(poll(&(struct pollfd){.fd = fd, .events = POLLOUT}, 1, 0) == 1);
    return fd;
}

/* Sends all of buf, running the worker while the socket is full; false once
 * the node has closed the connection. */
static inline bool raw_send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *b = buf;
    while (len > 0) {
        ssize_t n = send(fd, b, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN)
            return false;
        if (n > 0) {
            b += n;
            len -= (size_t)n;
        } else if (fdn_worker_progress(w) == 0) {
            fdn_worker_wait(w, 100000);
        }
    }
    return true;
}

/* Sends one frame: its encoded header, then its payload. */
static inline bool raw_send_frame(int fd, const struct fdn__frame_hdr *h, const void *payload)
{
    uint8_t buf[FDN__FRAME_MAX_HDR_SIZE];
    size_t n = fdn__frame_encode(h, buf);
    return raw_send_all(fd, buf, n) && raw_send_all(fd, payload, h->frag_len);
}

/* ---- A raw client: the handshake by hand, then what the node sends ------- */

/* What the raw client accepts and declares: fragments and messages up to
 * 1 MiB. */
#define RAW_LIMITS                                                             \
    ((struct fdn__wire_limits){.max_fragment = 1 << 20, .max_message = 1 << 20, \
                               .max_channel = 63})

/* A raw client: its socket, its handshake (NULL until it starts one), the
 * bytes not yet a whole frame, and what the node sent it: PINGs, which it
 * never answers, and a CLOSE. */
struct raw_peer {
    int fd;
    struct fdn__handshake *hs;
    uint8_t in[65536];
    size_t have;
    int pings;
    bool got_close;
    uint64_t close_reason;
};

/* Connects r afresh to a node's "tcp://127.0.0.1:PORT". No Nagle: each
 * send leaves as written, so a test's cuts of a frame reach the node. */
static inline void raw_peer_connect(struct raw_peer *r, const char *addr)
{
    memset(r, 0, sizeof *r);
    r->fd = raw_tcp_connect(raw_port_of(addr));
    int one = 1;
    setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Reads what arrived, without blocking, and handles every whole frame:
 * handshake messages go to r->hs, PINGs are counted, a CLOSE is noted, the
 * rest is skipped. False once the node has closed the connection. */
static inline bool raw_pump(struct raw_peer *r)
{
    ssize_t n = recv(r->fd, r->in + r->have, sizeof r->in - r->have, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN))
        return false;
    if (n > 0)
        r->have += (size_t)n;
    struct fdn__frame_hdr h;
    enum fdn__wire_error why;
    int hl;
    while ((hl = fdn__frame_decode(r->in, r->have, &RAW_LIMITS, &h, &why)) > 0 &&
           r->have >= (size_t)hl + h.frag_len) {
        if (h.type == FDN__FRAME_HANDSHAKE && r->hs)
            fdn__handshake_feed(r->hs, r->in + hl, h.frag_len);
        r->pings += h.type == FDN__FRAME_PING;
        if (h.type == FDN__FRAME_CLOSE) {
            r->got_close = true;
            r->close_reason = h.close_reason;
        }
        memmove(r->in, r->in + hl + h.frag_len, r->have - (size_t)hl - h.frag_len);
        r->have -= (size_t)hl + h.frag_len;
    }
    return true;
}

/* What a raw client's HELLO says that differs between tests. All zeros:
 * lane 0 of a one-lane new session 0, at the library's wire version, as
 * node 00..00 in incarnation 0, offering no capability. */
struct raw_hello {
    uint8_t version_min, version_max;   /* both 0: FDN__WIRE_VERSION */
    uint8_t node_id;                    /* every byte of the node id */
    uint64_t incarnation;
    uint64_t session;
    uint8_t lane;                       /* of a session of lane + 1 lanes */
    bool resume;
    uint64_t capabilities;              /* FDN__CAP_* offered */
    uint64_t max_message;               /* of its data channel; 0: 1 MiB */
};

/* Runs r's handshake as a client that knows secret and declares one
 * channel, "data" (1 MiB window, and messages of hello.max_message). True once DONE; false once
 * it failed, the node closed the connection, or the worker idled out. */
static inline bool raw_peer_handshake(struct raw_peer *r, const uint8_t *secret,
                                      size_t secret_len, struct raw_hello hello)
{
    struct fdn__channel_desc desc = {.id = FDN_CHANNEL_DATA, .priority = 4, .flags = 3,
                                     .weight = 1, .lane = 0, .credit_window = 1 << 20,
                                     .max_message = hello.max_message ? hello.max_message
                                                                      : 1 << 20};
    strcpy(desc.name, "data");
    struct fdn__handshake_config cfg = {
        .role = FDN__HS_CLIENT, .version_min = hello.version_min,
        .version_max = hello.version_max, .incarnation = hello.incarnation,
        .session = hello.session, .lane = hello.lane, .lane_count = (uint8_t)(hello.lane + 1),
        .resume = hello.resume, .cluster_name = "foundation", .channels = &desc,
        .channel_count = 1, .limits = RAW_LIMITS, .capabilities = hello.capabilities,
    };
    memset(cfg.node_id, hello.node_id, sizeof cfg.node_id);
    /* Nodes hash their secret into the key (SHA-256); do the same. */
    crypto_hash_sha256(cfg.secret, secret, secret_len);
    CHECK_OK(fdn__handshake_create(&cfg, &r->hs));
    long idle = 0;
    for (;;) {
        const uint8_t *msg;
        size_t len;
        while ((len = fdn__handshake_next_output(r->hs, &msg)) > 0) {
            struct fdn__frame_hdr h = {.type = FDN__FRAME_HANDSHAKE,
                                       .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST,
                                       .frag_len = (uint32_t)len, .total_len = len};
            if (!raw_send_frame(r->fd, &h, msg))
                return false;
        }
        enum fdn__handshake_status st = fdn__handshake_status(r->hs);
        if (st != FDN__HS_IN_PROGRESS)
            return st == FDN__HS_DONE;
        if (fdn_worker_progress(w) == 0) {
            if (++idle >= HARNESS_IDLE_WAITS)
                return false;
            fdn_worker_wait(w, 1000000);
        }
        if (!raw_pump(r))
            return false;
    }
}

/* Closes the socket and ends the handshake, if r started one. */
static inline void raw_peer_close(struct raw_peer *r)
{
    close(r->fd);
    fdn__handshake_destroy(r->hs);
    r->hs = NULL;
}

#endif
