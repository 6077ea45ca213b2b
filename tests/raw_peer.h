/* A raw peer for the node-level tests: a plain TCP socket on loopback that
 * speaks the wire protocol by hand, to give a node what a real one never
 * would. Sockets are non-blocking; every wait runs the test's worker, so
 * the node under test keeps going. Include after node_harness.h. */
#ifndef FDN_TESTS_RAW_PEER_H
#define FDN_TESTS_RAW_PEER_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

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

#endif
