/* What the transport tests share: one application-driven worker that holds
 * both ends of every connection (so a test is single-threaded and its
 * callbacks come in an order it can check), bounded waits, endpoints that
 * count and check every callback of the transport ops table, and listeners
 * whose accepted ends a test starts itself. tcp_test.c and shm_test.c both
 * drive their transport through `tp` alone, so one copy serves both and a
 * check added here is made of every transport.
 *
 * Streams are windows onto one random pattern: a receiver checks each byte
 * against the pattern at its stream offset, which is stronger than a
 * checksum and names the first wrong offset.
 *
 * Before including, after test.h, a test defines:
 *   RNG_SEED     its seed (each test keeps its own sequence of sizes)
 *   PATTERN_LEN  the pattern's length, at least its largest send (a send
 *                wraps around the pattern once at most); its pattern_init()
 *                fills `pattern`
 *   MAX_PASSES   optionally, passes a wait may take (default 20M) */
#ifndef FDN_TESTS_TRANSPORT_TP_HARNESS_H
#define FDN_TESTS_TRANSPORT_TP_HARNESS_H

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <fdn/fdn.h>

#include "core/transport.h"
#include "core/worker_internal.h"
#include "test.h"

#if !defined(RNG_SEED) || !defined(PATTERN_LEN)
#error "define RNG_SEED and PATTERN_LEN before including tp_harness.h"
#endif

static const struct fdn__transport *tp;
static fdn_runtime *rt;
static fdn_worker *w;

/* ---- Random numbers and the pattern ------------------------------------- */

static uint64_t rng_state = RNG_SEED;

static inline uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(uint64_t lo, uint64_t hi) { return lo + rng_next() % (hi - lo + 1); }

/* A size from 1 to max, log-uniform: as many tiny sends as huge ones. */
static inline size_t rng_size(size_t max)
{
    int bits = (int)rng_range(0, 63 - (uint64_t)__builtin_clzll(max));
    size_t lo = (size_t)1 << bits, hi = lo * 2 - 1 < max ? lo * 2 - 1 : max;
    return (size_t)rng_range(lo, hi);
}

/* Stream byte i is pattern[(seed + i) % PATTERN_LEN]; an odd length makes
 * every window start at another alignment. */
static uint8_t *pattern;

static inline void check_pattern(uint64_t offset, const uint8_t *data, size_t len)
{
    size_t at = (size_t)(offset % PATTERN_LEN);
    while (len) {
        size_t n = PATTERN_LEN - at < len ? PATTERN_LEN - at : len;
        if (memcmp(data, pattern + at, n) != 0) {
            size_t i = 0;
            while (data[i] == pattern[at + i])
                i++;
            fprintf(stderr, "stream byte at offset %llu is wrong\n",
                    (unsigned long long)(offset + i));
            abort();
        }
        data += n;
        len -= n;
        offset += n;
        at = 0;
    }
}

/* ---- Endpoints: one side of a connection -------------------------------- */

struct endpoint {
    struct fdn__tp_conn *conn;
    int connected_calls, connected_err;
    int closed_calls, closed_err;

    /* Receive side. */
    bool check_rx;           /* compare every byte with the pattern from rx_seed */
    uint64_t rx_seed, rx_bytes;
    int recv_calls;
    bool paused;             /* the test paused it: on_recv must not come */
    int pause_every;         /* pause from inside every n-th on_recv (0: never) */
    int recv_error;          /* returned from on_recv (0: continue) */
    bool failed_recv;        /* returned recv_error once: nothing may follow */
    bool echo;               /* send back a copy of everything received */
    bool keep_refs;          /* keep borrowed messages (on_recv_msg) in kept[] */
    fdn_msg *kept[8];
    int num_kept;

    /* Send side. */
    uint64_t tx_seed, tx_bytes;          /* pattern offset, bytes queued */
    uint64_t sends_queued, sends_reported, sends_ok, sends_failed;
    uint64_t bytes_sent_ok;
    int first_send_err;
    bool close_in_on_sent;   /* call conn_close from on_sent (re-entrancy) */
};

/* A send and the memory it points to; freed when on_sent reports it. */
struct test_send {
    struct fdn__tp_send s;   /* first: on_sent gets &s */
    struct endpoint *ep;
    uint64_t seq;
    uint8_t *copy;           /* owned bytes (echo), or NULL for pattern windows */
    fdn_msg *msg;            /* a message of the connection's pool, lent (FDN__TP_REFS) */
    int max_iov;
    struct iovec iov[];
};

/* Splits [base, base + len) into `pieces` iovecs with random cuts. */
static inline void add_pieces(struct test_send *t, uint8_t *base, size_t len, int pieces)
{
    while (len) {
        size_t n = pieces <= 1 ? len : (size_t)rng_range(0, len / (size_t)pieces * 2);
        if (n > len)
            n = len;
        CHECK(t->s.iovcnt < t->max_iov);
        t->iov[t->s.iovcnt++] = (struct iovec){.iov_base = base, .iov_len = n};
        base += n;
        len -= n;
        pieces--;
    }
}

static inline struct test_send *new_send(struct endpoint *ep, int max_iov)
{
    struct test_send *t = calloc(1, sizeof *t + (size_t)max_iov * sizeof(struct iovec));
    CHECK(t != NULL);
    t->ep = ep;
    t->max_iov = max_iov;
    t->s.iov = t->iov;
    return t;
}

static inline int submit(struct endpoint *ep, struct test_send *t, bool zerocopy)
{
    t->seq = ep->sends_queued;
    t->s.zerocopy = zerocopy;
    for (int i = 0; i < t->s.iovcnt; i++)
        t->s.len += t->iov[i].iov_len;
    int rc = fdn__tp_send(ep->conn, &t->s);
    if (rc == 0)
        ep->sends_queued++;
    return rc;
}

/* Queues the next len bytes of ep's pattern stream, in about `pieces` iovecs. */
static inline void send_pattern(struct endpoint *ep, size_t len, int pieces, bool zerocopy)
{
    struct test_send *t = new_send(ep, pieces + 2);
    size_t at = (size_t)((ep->tx_seed + ep->tx_bytes) % PATTERN_LEN);
    size_t first = PATTERN_LEN - at < len ? PATTERN_LEN - at : len;
    add_pieces(t, pattern + at, first, pieces);
    add_pieces(t, pattern, len - first, 1); /* the wrap, if any */
    CHECK_OK(submit(ep, t, zerocopy));
    ep->tx_bytes += len;
}

/* The echo: a copy in random pieces, zero-copy now and then where the
 * transport has it (a transport without it draws no random bit for it, so
 * its test's sequence of sizes does not depend on this). */
static inline void send_copy(struct endpoint *ep, const uint8_t *data, size_t len)
{
    int pieces = (int)rng_range(1, 8);
    struct test_send *t = new_send(ep, pieces + 1);
    t->copy = malloc(len);
    CHECK(t->copy != NULL);
    memcpy(t->copy, data, len);
    add_pieces(t, t->copy, len, pieces);
    CHECK_OK(submit(ep, t, (tp->caps & FDN__TP_ZEROCOPY) && (rng_next() & 1)));
    ep->tx_bytes += len;
}

static inline void ep_on_connected(void *ctx, int err)
{
    struct endpoint *ep = ctx;
    CHECK_EQ(ep->connected_calls, 0);
    CHECK_EQ(ep->closed_calls, 0);
    ep->connected_calls++;
    ep->connected_err = err;
}

static inline int ep_on_recv(void *ctx, const uint8_t *data, size_t len)
{
    struct endpoint *ep = ctx;
    CHECK_EQ(ep->closed_calls, 0);
    CHECK(!ep->paused);
    CHECK(!ep->failed_recv);
    CHECK(len > 0);
    if (ep->check_rx)
        check_pattern(ep->rx_seed + ep->rx_bytes, data, len);
    ep->rx_bytes += len;
    ep->recv_calls++;
    if (ep->echo)
        send_copy(ep, data, len);
    if (ep->pause_every && ep->recv_calls % ep->pause_every == 0) {
        ep->paused = true;
        fdn__tp_recv_pause(ep->conn, true);
    }
    if (ep->recv_error) {
        ep->failed_recv = true;
        return ep->recv_error;
    }
    return 0;
}

/* Only transports with FDN__TP_REFS call it: a payload the peer lent by
 * reference. Checked as bytes unless the test keeps the messages. */
static inline int ep_on_recv_msg(void *ctx, fdn_msg *m)
{
    struct endpoint *ep = ctx;
    CHECK(fdn_msg_is_borrowed(m));
    if (!ep->keep_refs) {
        int rc = ep_on_recv(ctx, fdn_msg_data(m), fdn_msg_len(m));
        fdn_msg_free(m);
        return rc;
    }
    CHECK(ep->num_kept < 8);
    ep->kept[ep->num_kept++] = m;
    ep->rx_bytes += fdn_msg_len(m);
    return 0;
}

static inline void ep_on_sent(void *ctx, struct fdn__tp_send *s, int err)
{
    struct endpoint *ep = ctx;
    struct test_send *t = (struct test_send *)s;
    CHECK(t->ep == ep);
    CHECK_EQ(ep->closed_calls, 0);
    CHECK_EQ(t->seq, ep->sends_reported); /* in submission order, each once */
    ep->sends_reported++;
    if (err == 0) {
        ep->sends_ok++;
        ep->bytes_sent_ok += s->len;
        CHECK_EQ(ep->sends_failed, 0); /* no success after a failure */
    } else {
        if (!ep->sends_failed)
            ep->first_send_err = err;
        ep->sends_failed++;
        if (ep->close_in_on_sent)
            fdn__tp_conn_close(ep->conn);
    }
    free(t->copy);
    fdn_msg_free(t->msg); /* the transport keeps its own reference while lent */
    free(t);
}

static inline void ep_on_closed(void *ctx, int err)
{
    struct endpoint *ep = ctx;
    CHECK_EQ(ep->closed_calls, 0);
    CHECK_EQ(ep->sends_reported, ep->sends_queued); /* every send first */
    ep->closed_calls++;
    ep->closed_err = err;
}

static const struct fdn__tp_conn_events ep_events = {
    .on_connected = ep_on_connected,
    .on_recv = ep_on_recv,
    .on_recv_msg = ep_on_recv_msg,
    .on_sent = ep_on_sent,
    .on_closed = ep_on_closed,
};

/* Lifts a pause that ep made from its on_recv (pause_every); a closed
 * connection is gone, so there is nothing to lift. */
static inline void resume(struct endpoint *ep)
{
    if (ep && ep->paused && ep->closed_calls == 0) {
        ep->paused = false;
        fdn__tp_recv_pause(ep->conn, false);
    }
}

/* ---- Driving the worker ------------------------------------------------- */

/* Bounds every wait, so a bug fails the test instead of hanging it. */
#ifndef MAX_PASSES
#define MAX_PASSES 20000000L
#endif
#define MAX_IDLE_WAITS 20000L /* 1 ms each */

struct loop_budget {
    long passes, idle;
};

static inline bool pump(struct loop_budget *b)
{
    if (++b->passes > MAX_PASSES)
        return false;
    int rc = fdn_worker_progress(w);
    CHECK(rc >= 0);
    if (rc == 0) {
        if (++b->idle > MAX_IDLE_WAITS)
            return false;
        CHECK_OK(fdn_worker_wait(w, 1000000));
    }
    return true;
}

/* Runs the worker until cond holds; resumes ep (if not NULL) whenever it
 * paused itself from on_recv. Giving up, it says what the worker still
 * waits for. */
#define RUN_UNTIL_RESUMING(ep, cond)                                                     \
    do {                                                                                 \
        struct loop_budget budget_ = {0};                                                \
        while (!(cond)) {                                                                \
            resume(ep);                                                                  \
            if (!pump(&budget_)) {                                                       \
                fprintf(stderr,                                                          \
                        "%s:%d: RUN_UNTIL(%s) gave up (passes %ld idle %ld inflight %u " \
                        "passive %u)\n",                                                 \
                        __FILE__, __LINE__, #cond, budget_.passes, budget_.idle,         \
                        w->inflight, w->inflight_passive);                               \
                abort();                                                                 \
            }                                                                            \
        }                                                                                \
    } while (0)

#define RUN_UNTIL(cond) RUN_UNTIL_RESUMING(NULL, cond)

/* Runs n passes (waiting when idle): time for things that must NOT happen. */
static inline void run_passes(int n)
{
    struct loop_budget b = {0};
    for (int i = 0; i < n; i++)
        CHECK(pump(&b));
}

/* ---- Set-up and tear-down ----------------------------------------------- */

/* Open file descriptors: a test must end with as many as it began with, so
 * every socket (and segment) the transport opened was closed. */
static inline int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int fds_at_setup;

static inline void setup(void)
{
    fds_at_setup = count_fds();
    fdn_runtime_config cfg = {.workers = 1, .app_driven_workers = 1, .no_pinning = true};
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    w = fdn_runtime_worker(rt, 0);
    int rc = fdn_worker_attach(w);
    if (rc == -ENOSYS || rc == -EPERM)
        SKIP("io_uring unavailable: %s", fdn_errmsg());
    CHECK_OK(rc);
}

/* Each test defines it: what its transport must have let go once the
 * runtime is destroyed, beyond descriptors. Checked before them, so a leak
 * is named by what leaked rather than by a count of descriptors. */
static void check_released(void);

static inline void teardown(void)
{
    RUN_UNTIL(w->inflight == 0);
    CHECK(w->pollers == NULL);
    CHECK_OK(fdn_worker_detach(w));
    CHECK_OK(fdn_runtime_stop(rt));
    fdn_runtime_destroy(rt);
    check_released();
    CHECK_EQ(count_fds(), fds_at_setup);
}

/* ---- Listeners ---------------------------------------------------------- */

#define MAX_ACCEPTED 64

/* conns[] in accept order; take_accepted() starts them one by one, or a
 * test reaches into conns[] for ends it must not start yet. */
struct acceptor {
    struct fdn__tp_listener *l;
    struct fdn__tp_conn *conns[MAX_ACCEPTED];
    int accepted, taken;
    int closed_calls, closed_err;
};

static inline void acc_on_accept(void *ctx, struct fdn__tp_conn *conn)
{
    struct acceptor *a = ctx;
    CHECK_EQ(a->closed_calls, 0);
    CHECK(a->accepted < MAX_ACCEPTED);
    a->conns[a->accepted++] = conn;
}

static inline void acc_on_closed(void *ctx, int err)
{
    struct acceptor *a = ctx;
    CHECK_EQ(a->closed_calls, 0);
    a->closed_calls++;
    a->closed_err = err;
}

static const struct fdn__tp_listener_events acc_events = {
    .on_accept = acc_on_accept,
    .on_closed = acc_on_closed,
};

/* Listens on `at`; *addr gets the bound address. Returns listen's error,
 * for a test that expects one (an IPv6 loopback that is not there). */
static inline int start_listener(struct acceptor *a, const char *at, char *addr, size_t len)
{
    memset(a, 0, sizeof *a);
    int rc = tp->listen(w, at, NULL, &acc_events, a, &a->l);
    if (rc < 0)
        return rc;
    rc = fdn__tp_listener_addr(a->l, addr, len);
    CHECK(rc > 0);
    CHECK_EQ((size_t)rc, strlen(addr));
    return 0;
}

static inline void stop_listener(struct acceptor *a)
{
    fdn__tp_listener_close(a->l);
    fdn__tp_listener_close(a->l); /* idempotent */
    RUN_UNTIL(a->closed_calls == 1);
    CHECK_EQ(a->closed_err, -ECANCELED);
}

/* Starts the next accepted end as ep, waiting for it to be accepted. */
static inline struct fdn__tp_conn *take_accepted(struct acceptor *a, struct endpoint *ep)
{
    RUN_UNTIL(a->accepted > a->taken);
    struct fdn__tp_conn *c = a->conns[a->taken++];
    ep->conn = c;
    fdn__tp_conn_start(c, &ep_events, ep);
    return c;
}

/* Connects client to addr (with opt, or the defaults) and starts the
 * accepted end as server. The server is started before the client is
 * waited for: a transport may finish its set-up only then (shm reads the
 * client's set-up on a started end). */
static inline void connect_pair(struct acceptor *a, const char *addr,
                                const struct fdn__tp_options *opt, struct endpoint *client,
                                struct endpoint *server)
{
    CHECK_OK(tp->connect(w, addr, opt, &ep_events, client, &client->conn));
    take_accepted(a, server);
    RUN_UNTIL(client->connected_calls == 1);
    CHECK_OK(client->connected_err);
}

static inline void close_and_wait(struct endpoint *ep)
{
    fdn__tp_conn_close(ep->conn);
    RUN_UNTIL(ep->closed_calls == 1);
}

#endif
