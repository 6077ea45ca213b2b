/* The shared-memory transport. One application-driven worker holds both
 * ends of most connections; other processes play the peers that must be
 * survived: a child that streams and is killed with SIGKILL, and a hostile
 * peer written by hand here (set-up messages over the socket, then raw
 * writes into the segment) whose corrupt set-ups, ring positions, records
 * and box messages must close its connection, counted, and nothing else.
 * Two nodes then talk over shm:// across every default channel.
 *
 * Streams are windows onto one random pattern, so every received byte is
 * checked at its stream offset. No timing thresholds: every wait is for an
 * event, bounded by a pass budget. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fdn/fdn.h>
#include <fdn/node.h>

#include "base/io.h"
#include "test.h"
#include "transport/shm_internal.h"
#include "transport/shm_ring.h"

#define RNG_SEED 0x5eed5eed87654321u
#define PATTERN_LEN ((1u << 20) + 4099u) /* sends go up to 256 KiB */
#define MAX_PASSES 50000000L

#include "tp_harness.h"

#define ADDR_MAX 128

static const char *self_exe;

static void pattern_init(void)
{
    pattern = malloc(PATTERN_LEN);
    CHECK(pattern != NULL);
    uint64_t s = 0x1234567u;
    for (size_t i = 0; i < PATTERN_LEN; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        pattern[i] = (uint8_t)(s >> 56);
    }
}

/* Every segment and pool unmapped, every lent buffer back, every borrowed
 * message freed: what a leak here would keep is shared memory. */
static void check_released(void)
{
    struct fdn__shm_stats st;
    fdn__shm_stats_get(&st);
    CHECK_EQ(st.segments_mapped, 0);
    CHECK_EQ(st.pools_mapped, 0);
    CHECK_EQ(st.loans_out, 0);
    CHECK_EQ(st.borrowed, 0);
}

/* The next len bytes of ep's stream in 1 to 8 random pieces. Never
 * zero-copy: shm copies bytes into its ring, and lends (send_lent) where it
 * avoids the copy. */
static void send_bytes(struct endpoint *ep, size_t len)
{
    send_pattern(ep, len, (int)rng_range(1, 8), false);
}

/* Sends len bytes of the pattern from a buffer of the connection's own
 * pool, which the transport lends by reference. */
static void send_lent(struct endpoint *ep, size_t len)
{
    fdn_pool *pool = fdn__tp_tx_pool(ep->conn);
    CHECK(pool != NULL);
    struct test_send *t = new_send(ep, 1);
    CHECK_OK(fdn_msg_alloc(pool, len, &t->msg));
    size_t at = (size_t)((ep->tx_seed + ep->tx_bytes) % PATTERN_LEN);
    for (size_t i = 0; i < len; i++)
        fdn_msg_data(t->msg)[i] = pattern[(at + i) % PATTERN_LEN];
    t->iov[0] = (struct iovec){fdn_msg_data(t->msg), len};
    t->s.iovcnt = 1;
    t->s.iov_msg = &t->msg; /* the one iovec lies in msg */
    CHECK_OK(submit(ep, t, false));
    ep->tx_bytes += len;
}

/* ---- Tests --------------------------------------------------------------- */

static void test_registry_and_bad_addresses(void)
{
    setup();
    const char *rest;
    CHECK(fdn__transport_for("shm://@x", &rest) == tp);
    CHECK(strcmp(rest, "@x") == 0);
    CHECK_EQ(tp->caps, FDN__TP_RELIABLE | FDN__TP_REFS);
    struct fdn__tp_conn *c;
    struct fdn__tp_listener *l;
    struct endpoint ep = {0};
    CHECK_EQ(tp->connect(w, "", NULL, &ep_events, &ep, &c), -EINVAL);
    CHECK_EQ(tp->connect(w, "@", NULL, &ep_events, &ep, &c), -EINVAL);
    char longname[200];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK_EQ(tp->listen(w, longname, NULL, &acc_events, NULL, &l), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "over") != NULL);

    /* A name in use is refused; a name nobody listens on is refused at connect. */
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@fdn-shm-test-name", addr, sizeof addr));
    CHECK(strcmp(addr, "@fdn-shm-test-name") == 0);
    CHECK_EQ(tp->listen(w, "@fdn-shm-test-name", NULL, &acc_events, NULL, &l), -EADDRINUSE);
    stop_listener(&a);
    CHECK_OK(tp->connect(w, "@fdn-shm-test-nobody", NULL, &ep_events, &ep, &ep.conn));
    CHECK_EQ(ep.connected_calls, 0); /* never from inside the call */
    RUN_UNTIL(ep.closed_calls == 1);
    CHECK_EQ(ep.connected_calls, 1);
    CHECK_EQ(ep.connected_err, -ECONNREFUSED);
    CHECK_EQ(ep.closed_err, -ECONNREFUSED);

    /* A filesystem path works and is removed with its listener. */
    char path[64];
    snprintf(path, sizeof path, "/tmp/fdn-shm-test-%d.sock", (int)getpid());
    CHECK_OK(start_listener(&a, path, addr, sizeof addr));
    CHECK(strcmp(addr, path) == 0);
    CHECK(access(path, F_OK) == 0);
    struct endpoint client = {.check_rx = true}, server = {.check_rx = true};
    connect_pair(&a, path, NULL, &client, &server);
    send_bytes(&client, 1000);
    RUN_UNTIL(server.rx_bytes == 1000 && client.sends_reported == 1);
    char peer[64];
    CHECK(fdn__tp_conn_peer_addr(server.conn, peer, sizeof peer) > 0);
    char expect[64];
    snprintf(expect, sizeof expect, "pid:%d", (int)getpid());
    CHECK(strcmp(peer, expect) == 0);
    /* The host accept limits count by: the process, whichever side asks. */
    CHECK(fdn__tp_conn_peer_host(server.conn, peer, sizeof peer) > 0);
    CHECK(strcmp(peer, expect) == 0);
    close_and_wait(&client);
    RUN_UNTIL(server.closed_calls == 1);
    CHECK_EQ(server.closed_err, 0);
    stop_listener(&a);
    CHECK(access(path, F_OK) < 0);
    teardown();
}

/* Echo with random sizes through 4 KiB rings: nearly every send wraps, and
 * many do not fit at once. Pauses from inside on_recv now and then. */
static void test_echo_random_wrap(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    CHECK(addr[0] == '@' && strlen(addr) > 1);
    struct fdn__tp_options small = {.notsent_lowat = 2048}; /* 4 KiB rings */
    struct endpoint client = {.check_rx = true}, server = {.echo = true, .pause_every = 7};
    connect_pair(&a, addr, &small, &client, &server);
    uint64_t total = 0;
    for (int round = 0; round < 300; round++) {
        size_t len = rng_size(20000);
        send_bytes(&client, len);
        total += len;
        if (round % 10 == 0) {
            while (client.rx_bytes < total) {
                resume(&server);
                run_passes(1);
            }
        }
    }
    while (client.rx_bytes < total) {
        resume(&server);
        run_passes(1);
    }
    CHECK_EQ(client.rx_bytes, total);
    RUN_UNTIL(client.sends_reported == client.sends_queued &&
              server.sends_reported == server.sends_queued);
    CHECK_EQ(client.sends_failed, 0);
    close_and_wait(&server);
    RUN_UNTIL(client.closed_calls == 1);
    CHECK_EQ(client.closed_err, 0);
    stop_listener(&a);
    teardown();
}

/* 64 MB one way through the default rings, checked byte by byte. */
static void test_stream_one_way(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    struct endpoint client = {0}, server = {.check_rx = true};
    connect_pair(&a, addr, NULL, &client, &server);
    const uint64_t total = 64u << 20;
    while (client.tx_bytes < total) {
        if (client.sends_queued - client.sends_reported < 8)
            send_bytes(&client, (size_t)rng_range(1, 256 << 10));
        else
            run_passes(1);
    }
    RUN_UNTIL(server.rx_bytes >= client.tx_bytes);
    CHECK_EQ(server.rx_bytes, client.tx_bytes);
    close_and_wait(&client);
    RUN_UNTIL(server.closed_calls == 1);
    CHECK_EQ(server.closed_err, 0);
    stop_listener(&a);
    teardown();
}

#define MANY 40

static void test_many_connections(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    static struct endpoint clients[MANY], servers[MANY];
    for (int i = 0; i < MANY; i++) {
        clients[i] = (struct endpoint){.check_rx = true, .rx_seed = 1000u * (unsigned)i,
                                       .tx_seed = 77u * (unsigned)i};
        servers[i] = (struct endpoint){.check_rx = true, .rx_seed = 77u * (unsigned)i,
                                       .tx_seed = 1000u * (unsigned)i};
        CHECK_OK(tp->connect(w, addr, NULL, &ep_events, &clients[i], &clients[i].conn));
    }
    for (int i = 0; i < MANY; i++)
        take_accepted(&a, &servers[i]); /* accepted in connect order */
    RUN_UNTIL(clients[MANY - 1].connected_calls == 1);
    for (int r = 0; r < 5; r++)
        for (int i = 0; i < MANY; i++) {
            RUN_UNTIL(clients[i].connected_calls == 1);
            send_bytes(&clients[i], rng_size(50000));
            send_bytes(&servers[i], rng_size(50000));
        }
    for (int i = 0; i < MANY; i++) {
        RUN_UNTIL(servers[i].rx_bytes == clients[i].tx_bytes &&
                  clients[i].rx_bytes == servers[i].tx_bytes);
    }
    struct fdn__shm_stats st;
    fdn__shm_stats_get(&st);
    CHECK_EQ(st.segments_mapped, 2 * MANY); /* both ends map each segment */
    /* Close half from each side. */
    for (int i = 0; i < MANY; i++)
        fdn__tp_conn_close(i % 2 ? clients[i].conn : servers[i].conn);
    for (int i = 0; i < MANY; i++) {
        RUN_UNTIL(clients[i].closed_calls == 1 && servers[i].closed_calls == 1);
        CHECK_EQ(i % 2 ? servers[i].closed_err : clients[i].closed_err, 0);
        CHECK_EQ(i % 2 ? clients[i].closed_err : servers[i].closed_err, -ECANCELED);
    }
    stop_listener(&a);
    teardown();
}

/* Bytes written before an orderly close are all delivered, from either side;
 * sends queued but not yet in the ring at close get -ECANCELED. */
static void test_close_delivers_all(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    for (int side = 0; side < 2; side++) {
        struct endpoint client = {.check_rx = true}, server = {.check_rx = true};
        connect_pair(&a, addr, NULL, &client, &server);
        struct endpoint *tx = side ? &server : &client, *rx = side ? &client : &server;
        send_bytes(tx, 100000);
        RUN_UNTIL(tx->sends_reported == 1);
        rx->paused = true; /* hold the bytes in the ring while the sender closes */
        fdn__tp_recv_pause(rx->conn, true);
        send_bytes(tx, 100000);
        RUN_UNTIL(tx->sends_reported == 2);
        close_and_wait(tx);
        CHECK_EQ(tx->closed_err, -ECANCELED);
        run_passes(100);
        CHECK_EQ(rx->closed_calls, 0); /* paused: the end waits behind the data */
        resume(rx);
        RUN_UNTIL(rx->closed_calls == 1);
        CHECK_EQ(rx->closed_err, 0);
        CHECK_EQ(rx->rx_bytes, 200000);
    }
    /* Close with more queued than the ring holds: the rest is cancelled. */
    struct endpoint client = {0}, server = {.paused = true};
    connect_pair(&a, addr, NULL, &client, &server);
    fdn__tp_recv_pause(server.conn, true);
    for (int i = 0; i < 10; i++)
        send_bytes(&client, 200000);
    run_passes(50);
    fdn__tp_conn_close(client.conn);
    CHECK_EQ(fdn__tp_send(client.conn, &(struct fdn__tp_send){0}), -EPIPE);
    RUN_UNTIL(client.closed_calls == 1);
    CHECK(client.sends_failed > 0);
    CHECK_EQ(client.sends_ok + client.sends_failed, 10);
    fdn__tp_conn_close(server.conn);
    RUN_UNTIL(server.closed_calls == 1);
    stop_listener(&a);
    teardown();
}

/* ---- A peer process killed mid-stream ------------------------------------ */

/* The child: connects to addr and streams the pattern until killed. */
static int child_stream(const char *addr)
{
    fdn_runtime_config cfg = {.workers = 1, .app_driven_workers = 1, .no_pinning = true};
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    w = fdn_runtime_worker(rt, 0);
    CHECK_OK(fdn_worker_attach(w));
    struct endpoint ep = {0};
    CHECK_OK(tp->connect(w, addr, NULL, &ep_events, &ep, &ep.conn));
    RUN_UNTIL(ep.connected_calls == 1);
    CHECK_OK(ep.connected_err);
    for (;;) {
        if (ep.closed_calls)
            return 1;
        if (ep.sends_queued - ep.sends_reported < 4)
            send_bytes(&ep, 65536);
        if (fdn_worker_progress(w) == 0)
            fdn_worker_wait(w, 1000000);
    }
}

static pid_t spawn_child(const char *addr)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        execl(self_exe, self_exe, "--stream-child", addr, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void test_peer_killed(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    struct fdn__shm_stats before, after;
    fdn__shm_stats_get(&before);
    pid_t pid = spawn_child(addr);
    struct endpoint server = {.check_rx = true};
    take_accepted(&a, &server);
    RUN_UNTIL(server.rx_bytes > (4u << 20)); /* mid-stream */
    fdn__shm_stats_get(&after);
    CHECK_EQ(after.segments_mapped, before.segments_mapped + 1);
    CHECK_OK(kill(pid, SIGKILL));
    RUN_UNTIL(server.closed_calls == 1);
    CHECK_EQ(server.closed_err, -ECONNRESET);
    int status;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    fdn__shm_stats_get(&after);
    CHECK_EQ(after.segments_mapped, before.segments_mapped); /* reclaimed */
    CHECK_EQ(after.peer_deaths, before.peer_deaths + 1);

    /* The survivor keeps serving: another child, then one of its own. */
    pid = spawn_child(addr);
    struct endpoint again = {.check_rx = true};
    take_accepted(&a, &again);
    RUN_UNTIL(again.rx_bytes > (1u << 20));
    struct endpoint client = {.check_rx = true}, server2 = {.check_rx = true};
    connect_pair(&a, addr, NULL, &client, &server2);
    send_bytes(&client, 5000);
    send_bytes(&server2, 7000);
    RUN_UNTIL(server2.rx_bytes == 5000 && client.rx_bytes == 7000);
    CHECK_OK(kill(pid, SIGKILL));
    RUN_UNTIL(again.closed_calls == 1);
    CHECK_EQ(again.closed_err, -ECONNRESET);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    close_and_wait(&client);
    RUN_UNTIL(server2.closed_calls == 1);
    stop_listener(&a);
    teardown();
}

/* ---- A hostile peer, by hand --------------------------------------------- */

struct raw_peer {
    int sock, memfd, efd, peer_efd, pool_fd, peer_pool_fd;
    uint32_t ring;
    uint8_t *seg;
    size_t seg_bytes;
    uint8_t *pool;            /* ours, RAW_POOL_BYTES */
    const uint8_t *peer_pool; /* the server's, read-only */
    uint32_t peer_pool_bytes;
};

#define RAW_POOL_BYTES (1u << 20)

static int raw_send(int sock, const void *msg, size_t len, const int *fds, int nfds)
{
    return fdn__send_fds(sock, msg, len, fds, nfds, 0) == (long)len ? 0 : -1;
}

enum raw_flaw {
    RAW_OK, RAW_UNSEALED, RAW_SHORT, RAW_TWO_FDS, RAW_PIPE, RAW_BAD_RING, RAW_POOL_UNSEALED,
    RAW_POOL_SIZE
};

/* Connects to addr and sends a hello with the given flaw. The segment is
 * ours to scribble on afterwards. */
static void raw_connect(struct raw_peer *r, const char *addr, enum raw_flaw flaw)
{
    memset(r, 0, sizeof *r);
    r->peer_efd = r->peer_pool_fd = -1;
    r->ring = 4096;
    r->seg_bytes = fdn__shm_seg_bytes(r->ring);
    r->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    CHECK(r->sock >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(addr);
    memcpy(sa.sun_path, addr, n);
    sa.sun_path[0] = '\0';
    CHECK(connect(r->sock, (struct sockaddr *)&sa,
                  (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) == 0);
    r->memfd = memfd_create("raw", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(r->memfd >= 0);
    CHECK(ftruncate(r->memfd, (off_t)(r->seg_bytes - (flaw == RAW_SHORT ? 4096 : 0))) == 0);
    if (flaw != RAW_UNSEALED)
        CHECK(fcntl(r->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    if (flaw == RAW_SHORT)
        r->seg_bytes -= 4096; /* what is mapped, and unmapped */
    r->seg = mmap(NULL, r->seg_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
    CHECK(r->seg != MAP_FAILED);
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    r->pool_fd = memfd_create("raw-pool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    CHECK(r->pool_fd >= 0);
    CHECK(ftruncate(r->pool_fd, RAW_POOL_BYTES) == 0);
    if (flaw != RAW_POOL_UNSEALED)
        CHECK(fcntl(r->pool_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) == 0);
    r->pool = mmap(NULL, RAW_POOL_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, r->pool_fd, 0);
    CHECK(r->pool != MAP_FAILED);
    int pipefd[2];
    CHECK(pipe2(pipefd, O_CLOEXEC) == 0);
    struct {
        uint64_t magic;
        uint32_t version, ring_bytes, pool_bytes, reserved;
    } hello = {FDN__SHM_MAGIC, FDN__SHM_VERSION, flaw == RAW_BAD_RING ? 5000 : r->ring,
               flaw == RAW_POOL_SIZE ? 2 * RAW_POOL_BYTES : RAW_POOL_BYTES, 0};
    int fds[3] = {r->memfd, flaw == RAW_PIPE ? pipefd[1] : r->efd, r->pool_fd};
    CHECK(raw_send(r->sock, &hello, sizeof hello, fds, flaw == RAW_TWO_FDS ? 2 : 3) == 0);
    close(pipefd[0]);
    close(pipefd[1]);
}

/* Reads the answer; returns its status and takes the eventfd that came. */
static int raw_answer(struct raw_peer *r)
{
    struct {
        uint64_t magic;
        uint32_t version;
        int32_t status;
        uint32_t pool_bytes, reserved;
    } reply;
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 4)];
    } cbuf;
    struct iovec iov = {.iov_base = &reply, .iov_len = sizeof reply};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = sizeof cbuf.buf};
    ssize_t n = recvmsg(r->sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n <= 0)
        return n == 0 ? -ECONNRESET : -errno;
    CHECK_EQ(n, sizeof reply);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    if (cm && cm->cmsg_type == SCM_RIGHTS) {
        CHECK_EQ(cm->cmsg_len, CMSG_LEN(2 * sizeof(int)));
        memcpy(&r->peer_efd, CMSG_DATA(cm), sizeof(int));
        memcpy(&r->peer_pool_fd, CMSG_DATA(cm) + sizeof(int), sizeof(int));
        /* The server's pool is read-only to us, whatever we try. */
        CHECK(mmap(NULL, reply.pool_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r->peer_pool_fd,
                   0) == MAP_FAILED);
        CHECK(write(r->peer_pool_fd, "x", 1) < 0);
        r->peer_pool = mmap(NULL, reply.pool_bytes, PROT_READ, MAP_SHARED, r->peer_pool_fd, 0);
        CHECK(r->peer_pool != MAP_FAILED);
        r->peer_pool_bytes = reply.pool_bytes;
    }
    return reply.status;
}

static void raw_close(struct raw_peer *r)
{
    munmap(r->seg, r->seg_bytes);
    munmap(r->pool, RAW_POOL_BYTES);
    close(r->sock);
    close(r->memfd);
    close(r->efd);
    close(r->pool_fd);
    if (r->peer_efd >= 0)
        close(r->peer_efd);
    if (r->peer_pool_fd >= 0)
        close(r->peer_pool_fd);
    if (r->peer_pool)
        munmap((void *)r->peer_pool, r->peer_pool_bytes);
}

/* Writes one record word into the ring the raw peer produces (ring 0). */
static void raw_word(struct raw_peer *r, uint64_t pos, uint64_t word)
{
    uint8_t *data = fdn__shm_data(r->seg, r->ring, 0);
    memcpy(data + (pos & (r->ring - 1)), &word, 8);
}

/* A BYTES record of the pattern at pos, published as an honest producer
 * does (its bytes, the zero word after it, its header); returns the
 * position after it. */
static uint64_t raw_bytes(struct raw_peer *r, uint64_t pos, size_t len)
{
    uint64_t end = pos + 8 + fdn__shm_align8(len);
    memcpy(fdn__shm_data(r->seg, r->ring, 0) + ((pos + 8) & (r->ring - 1)), pattern, len);
    raw_word(r, end, 0);
    raw_word(r, pos, fdn__shm_rec_word(FDN__SHM_REC_BYTES, (uint32_t)len));
    return end;
}

/* A box message in the box the raw peer produces (box 0): len bytes of the
 * pattern from stream offset `from` (at most a box's worth is written),
 * before ring position at, acknowledging the server's box up to taken.
 * Published as an honest producer does: the word last. */
static void raw_box(struct raw_peer *r, uint32_t seq, uint32_t len, uint64_t at, uint32_t taken,
                    size_t from)
{
    struct fdn__shm_box *b = fdn__shm_box(r->seg, 0);
    memcpy(b->bytes, pattern + from, len < FDN__SHM_BOX_BYTES ? len : FDN__SHM_BOX_BYTES);
    atomic_store_explicit(&b->at, at, memory_order_relaxed);
    atomic_store_explicit(&b->taken, taken, memory_order_relaxed);
    atomic_store_explicit(&b->word, seq | (uint64_t)len << 32, memory_order_release);
}

/* Whether the server has published a record at the start of its ring. */
static bool server_published(const struct raw_peer *r)
{
    uint64_t word;
    memcpy(&word, fdn__shm_data(r->seg, r->ring, 1), 8);
    return word != 0;
}

static bool readable(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    return n >= 0 || errno != EAGAIN;
}

/* A raw peer with an honest set-up, and the server's end of it accepted
 * into server. */
static void raw_accept(struct acceptor *a, const char *addr, struct raw_peer *r,
                       struct endpoint *server)
{
    raw_connect(r, addr, RAW_OK);
    take_accepted(a, server);
    RUN_UNTIL(r->peer_efd >= 0 || raw_answer(r) == 0);
}

/* The server closed its end for an impossible record: -EBADMSG, said in
 * fdn_errmsg(), counted once as a bad record and not as a bad ring. */
static void check_closed_bad_record(const struct endpoint *server,
                                    const struct fdn__shm_stats *before)
{
    RUN_UNTIL(server->closed_calls == 1);
    CHECK_EQ(server->closed_err, -EBADMSG);
    CHECK(strstr(fdn_errmsg(), "impossible record") != NULL);
    struct fdn__shm_stats after;
    fdn__shm_stats_get(&after);
    CHECK_EQ(after.bad_records, before->bad_records + 1);
    CHECK_EQ(after.bad_rings, before->bad_rings);
}

static void test_bad_setups_refused(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    enum raw_flaw flaws[] = {RAW_UNSEALED, RAW_SHORT, RAW_TWO_FDS, RAW_PIPE, RAW_BAD_RING,
                             RAW_POOL_UNSEALED, RAW_POOL_SIZE};
    for (size_t i = 0; i < FDN_ARRAY_SIZE(flaws); i++) {
        struct fdn__shm_stats before, after;
        fdn__shm_stats_get(&before);
        struct raw_peer r;
        raw_connect(&r, addr, flaws[i]);
        struct endpoint server = {0};
        take_accepted(&a, &server);
        RUN_UNTIL(server.closed_calls == 1);
        CHECK(server.closed_err == -EBADMSG);
        CHECK(strstr(fdn_errmsg(), "shm") != NULL);
        CHECK_EQ(raw_answer(&r), -EBADMSG); /* told why */
        fdn__shm_stats_get(&after);
        CHECK_EQ(after.bad_setups, before.bad_setups + 1);
        CHECK_EQ(after.segments_mapped, 0);
        raw_close(&r);
    }
    stop_listener(&a);
    teardown();
}

/* Impossible headers, and an impossible head, written into the segment
 * close the connection with -EBADMSG, counted; the same listener keeps
 * serving. */
static void test_corrupt_ring_closes(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    for (int kind = 0; kind < 4; kind++) {
        struct fdn__shm_stats before, after;
        fdn__shm_stats_get(&before);
        struct raw_peer r;
        struct endpoint server = {.check_rx = kind == 0};
        raw_accept(&a, addr, &r, &server);
        struct fdn__shm_ctl *in = fdn__shm_ctl(r.seg, 0), *out = fdn__shm_ctl(r.seg, 1);
        if (kind == 0) {
            /* First some honest bytes, which arrive. */
            raw_bytes(&r, 0, 1000);
            RUN_UNTIL(server.rx_bytes == 1000);
            CHECK_EQ(atomic_load(&in->head), 1008);
            /* Then a record longer than the ring can hold. */
            raw_word(&r, 1008, fdn__shm_rec_word(FDN__SHM_REC_BYTES, r.ring - 8));
        } else if (kind == 1) {
            raw_word(&r, 0, fdn__shm_rec_word(FDN__SHM_REC_BYTES, 0)); /* empty */
        } else if (kind == 2) {
            raw_word(&r, 0, UINT64_MAX);                               /* no such type */
        } else {
            /* The server produces until its ring is full, then the peer
             * claims to have consumed bytes never written. */
            send_bytes(&server, 3 * r.ring);
            RUN_UNTIL(server_published(&r));
            run_passes(10);
            atomic_store(&out->head, r.ring + 100);
        }
        RUN_UNTIL(server.closed_calls == 1);
        CHECK_EQ(server.closed_err, -EBADMSG);
        CHECK(strstr(fdn_errmsg(), "impossible") != NULL);
        fdn__shm_stats_get(&after);
        if (kind < 3)
            CHECK_EQ(after.bad_records, before.bad_records + 1);
        else
            CHECK_EQ(after.bad_rings, before.bad_rings + 1);
        RUN_UNTIL(readable(r.sock)); /* the peer sees the end as a reset... */
        CHECK_EQ(atomic_load(&out->closed), 0); /* ...not as an orderly close */
        raw_close(&r);
    }
    /* Still serving. */
    struct endpoint client = {.check_rx = true}, server = {.check_rx = true};
    connect_pair(&a, addr, NULL, &client, &server);
    send_bytes(&client, 12345);
    RUN_UNTIL(server.rx_bytes == 12345);
    close_and_wait(&client);
    RUN_UNTIL(server.closed_calls == 1);
    stop_listener(&a);
    teardown();
}

/* A lent buffer crosses by reference both ways between two endpoints, and
 * comes back when the receiver lets it go. */
static void test_lend_both_ways(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    struct endpoint client = {.check_rx = true}, server = {.check_rx = true, .keep_refs = true};
    connect_pair(&a, addr, NULL, &client, &server);
    struct fdn__shm_stats st0, st;
    fdn__shm_stats_get(&st0);
    send_lent(&client, 100000);
    send_bytes(&client, 3000);      /* copied, after it in order */
    send_lent(&client, 5);
    RUN_UNTIL(server.num_kept == 2 && client.sends_reported == 3);
    CHECK_EQ(server.rx_bytes, 103005);
    size_t bytes;
    const uint8_t *pool = fdn__shm_peer_pool(server.conn, &bytes);
    for (int i = 0; i < 2; i++) {
        const uint8_t *d = fdn_msg_data(server.kept[i]);
        CHECK(d >= pool && d + fdn_msg_len(server.kept[i]) <= pool + bytes);
    }
    check_pattern(0, fdn_msg_data(server.kept[0]), 100000);
    check_pattern(103000, fdn_msg_data(server.kept[1]), 5);
    fdn__shm_stats_get(&st);
    CHECK_EQ(st.refs_sent - st0.refs_sent, 2);
    CHECK_EQ(st.loans_out, 2);        /* reported sent, still lent */
    for (int i = 0; i < 2; i++)
        fdn_msg_free(server.kept[i]);
    RUN_UNTIL((fdn__shm_stats_get(&st), st.loans_out == 0));
    CHECK_EQ(st.releases_received - st0.releases_received, 2);
    /* And the other way, without keeping: released at once. */
    server.tx_seed = 0;
    client.rx_seed = 0;
    send_lent(&server, 70000);
    RUN_UNTIL(client.rx_bytes == 70000);
    RUN_UNTIL((fdn__shm_stats_get(&st), st.loans_out == 0));
    close_and_wait(&client);
    RUN_UNTIL(server.closed_calls == 1);
    stop_listener(&a);
    teardown();
}

/* Small sends go through the box while it is free and through the ring
 * otherwise (copied, or lent from the pool), both ways at once (the echo),
 * with pauses: each side still receives one stream, in order. */
static void test_box_keeps_order(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    struct endpoint client = {.check_rx = true},
                    server = {.check_rx = true, .echo = true, .pause_every = 5};
    connect_pair(&a, addr, NULL, &client, &server);
    struct fdn__shm_stats st0, st;
    fdn__shm_stats_get(&st0);
    for (int i = 0; i < 4000; i++) {
        uint64_t kind = rng_range(0, 9);
        if (kind < 6)
            send_bytes(&client, (size_t)rng_range(1, FDN__SHM_BOX_BYTES));
        else if (kind < 9)
            send_bytes(&client, (size_t)rng_range(FDN__SHM_BOX_BYTES + 1, 3000));
        else
            send_lent(&client, (size_t)rng_range(1, 5000));
        if (rng_range(0, 2) == 0) {
            resume(&server);
            run_passes(1);
        }
        RUN_UNTIL_RESUMING(&server, client.sends_queued - client.sends_reported <= 64);
    }
    RUN_UNTIL_RESUMING(&server, client.rx_bytes >= client.tx_bytes);
    CHECK_EQ(client.rx_bytes, client.tx_bytes);
    CHECK_EQ(server.rx_bytes, client.tx_bytes);
    fdn__shm_stats_get(&st);
    CHECK(st.boxes_sent - st0.boxes_sent > 100);       /* both ways */
    CHECK(st.boxes_sent - st0.boxes_sent < 2 * 4000);  /* and the ring too */
    CHECK_EQ(st.boxes_received - st0.boxes_received, st.boxes_sent - st0.boxes_sent);
    CHECK_EQ(st.bad_records, st0.bad_records);
    close_and_wait(&client);
    RUN_UNTIL(server.closed_calls == 1);
    CHECK_EQ(server.closed_err, 0);
    stop_listener(&a);
    teardown();
}

/* Impossible records close the connection with -EBADMSG, counted as bad
 * records: an unknown type, a REF outside the pool or with a slot out of
 * range or already lent (also after the server let it go, while its
 * RELEASE waits for room), a RELEASE of a buffer not lent, or twice. A
 * valid REF first shows the raw peer's bytes arriving by reference. */
static void test_corrupt_records_close(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    for (int kind = 0; kind < 7; kind++) {
        struct fdn__shm_stats before, after;
        fdn__shm_stats_get(&before);
        struct raw_peer r;
        struct endpoint server = {.keep_refs = kind != 6};
        raw_accept(&a, addr, &r, &server);
        if (kind == 0) {
            raw_word(&r, 0, fdn__shm_rec_word(9, 0));
        } else if (kind == 1 || kind == 2) {
            raw_word(&r, 0, fdn__shm_rec_word(FDN__SHM_REC_REF, kind == 1 ? 0 : 5000));
            raw_word(&r, 8, (uint64_t)(RAW_POOL_BYTES - 8) | (uint64_t)(kind == 1 ? 100 : 8) << 32);
        } else if (kind == 3) {
            /* A REF the server takes, then the same slot again. */
            memcpy(r.pool + 4096, pattern, 1000);
            raw_word(&r, 0, fdn__shm_rec_word(FDN__SHM_REC_REF, 2));
            raw_word(&r, 8, 4096u | (uint64_t)1000 << 32);
            RUN_UNTIL(server.num_kept == 1);
            check_pattern(0, fdn_msg_data(server.kept[0]), 1000);
            size_t bytes;
            const uint8_t *pool = fdn__shm_peer_pool(server.conn, &bytes);
            CHECK(fdn_msg_data(server.kept[0]) == pool + 4096 && bytes == RAW_POOL_BYTES);
            raw_word(&r, 16, fdn__shm_rec_word(FDN__SHM_REC_REF, 2));
            raw_word(&r, 24, 0u | (uint64_t)8 << 32);
        } else if (kind == 4) {
            raw_word(&r, 0, fdn__shm_rec_word(FDN__SHM_REC_RELEASE, 3));
        } else if (kind == 6) {
            /* The server's ring full (we read none of it), a REF it takes
             * and lets go of at once, then the same slot again: its RELEASE
             * is not written yet, so the slot is still lent to the server.
             * (Accepting it let a peer add the slot to the pending RELEASEs
             * again and again, past the end of their array.) */
            send_bytes(&server, 3 * r.ring);
            RUN_UNTIL(server_published(&r));
            run_passes(3);
            /* Loans of slots 0, 1, ... until a RELEASE finds no room (the
             * BYTES may leave room for a few). */
            memcpy(r.pool + 4096, pattern, 1000);
            uint32_t slot = 0;
            struct fdn__shm_stats now = before;
            for (;; slot++) {
                CHECK(slot < 16);
                uint64_t released = now.releases_sent;
                raw_word(&r, 16 * slot + 8, 4096u | (uint64_t)1000 << 32);
                raw_word(&r, 16 * slot, fdn__shm_rec_word(FDN__SHM_REC_REF, slot));
                RUN_UNTIL(server.rx_bytes == 1000 * (slot + 1));
                run_passes(3);
                fdn__shm_stats_get(&now);
                CHECK_EQ(now.borrowed, before.borrowed);   /* let go of at once */
                if (now.releases_sent == released)
                    break;                                 /* and not said */
            }
            raw_word(&r, 16 * slot + 24, 4096u | (uint64_t)8 << 32);
            raw_word(&r, 16 * slot + 16, fdn__shm_rec_word(FDN__SHM_REC_REF, slot));
        } else {
            /* The server lends; we release it, then release it again. */
            send_lent(&server, 2000);
            RUN_UNTIL(server_published(&r));
            uint64_t w0, w1;
            memcpy(&w0, fdn__shm_data(r.seg, r.ring, 1), 8);
            memcpy(&w1, fdn__shm_data(r.seg, r.ring, 1) + 8, 8);
            CHECK_EQ((uint32_t)w0, FDN__SHM_REC_REF);
            CHECK_EQ((uint32_t)(w1 >> 32), 2000);
            CHECK((uint32_t)w1 + 2000 <= r.peer_pool_bytes);
            check_pattern(0, r.peer_pool + (uint32_t)w1, 2000); /* read where it lies */
            raw_word(&r, 0, fdn__shm_rec_word(FDN__SHM_REC_RELEASE, (uint32_t)(w0 >> 32)));
            RUN_UNTIL((fdn__shm_stats_get(&after), after.loans_out == 0));
            raw_word(&r, 8, fdn__shm_rec_word(FDN__SHM_REC_RELEASE, (uint32_t)(w0 >> 32)));
        }
        check_closed_bad_record(&server, &before);
        for (int i = 0; i < server.num_kept; i++) /* still readable after the close */
            check_pattern(0, fdn_msg_data(server.kept[i]), fdn_msg_len(server.kept[i]));
        for (int i = 0; i < server.num_kept; i++)
            fdn_msg_free(server.kept[i]);
        fdn__shm_stats_get(&after);
        CHECK_EQ(after.pools_mapped, 0);
        raw_close(&r);
    }
    stop_listener(&a);
    teardown();
}

/* Impossible box messages close the connection with -EBADMSG, counted as
 * bad records: one out of sequence (after an honest one, which arrives), of
 * no bytes or more than the box holds, placed behind head or inside a ring
 * record, acknowledging a box message the server never wrote; and, on the
 * server's own side, an acknowledgement in the control line of more box
 * messages than it wrote. */
static void test_corrupt_box_closes(void)
{
    setup();
    struct acceptor a;
    char addr[ADDR_MAX];
    CHECK_OK(start_listener(&a, "@", addr, sizeof addr));
    for (int kind = 0; kind < 7; kind++) {
        struct fdn__shm_stats before, after;
        fdn__shm_stats_get(&before);
        struct raw_peer r;
        struct endpoint server = {.check_rx = true};
        raw_accept(&a, addr, &r, &server);
        struct fdn__shm_ctl *in = fdn__shm_ctl(r.seg, 0), *out = fdn__shm_ctl(r.seg, 1);
        if (kind == 0) {
            raw_box(&r, 1, 40, 0, 0, 0);
            RUN_UNTIL(server.rx_bytes == 40);
            CHECK_EQ(atomic_load(&in->box_taken), 1);
            raw_box(&r, 3, 40, 0, 0, 40);
        } else if (kind == 1 || kind == 2) {
            raw_box(&r, 1, kind == 1 ? 0 : FDN__SHM_BOX_BYTES + 1, 0, 0, 0);
        } else if (kind == 3) {
            raw_bytes(&r, 0, 100);
            RUN_UNTIL(server.rx_bytes == 100);
            raw_box(&r, 1, 8, 0, 0, 100);
        } else if (kind == 4) {
            raw_box(&r, 1, 8, 16, 0, 100);
            raw_bytes(&r, 0, 100);
        } else if (kind == 5) {
            raw_box(&r, 1, 8, 0, 5, 0);
        } else {
            /* The server's first small send goes in its box; the peer
             * claims to have taken nine; the second send reads that. */
            send_bytes(&server, 20);
            RUN_UNTIL((uint32_t)atomic_load(&fdn__shm_box(r.seg, 1)->word) == 1);
            atomic_store(&out->box_taken, 9);
            send_bytes(&server, 20);
        }
        check_closed_bad_record(&server, &before);
        fdn__shm_stats_get(&after);
        CHECK_EQ(after.boxes_received - before.boxes_received, kind == 0);
        raw_close(&r);
    }
    stop_listener(&a);
    teardown();
}

/* ---- Two nodes ----------------------------------------------------------- */

static const uint8_t secret[] = "correct horse battery staple 42";

struct side {
    fdn_node *node;
    fdn_peer *up_peer;
    int ups, downs, last_down_reason;
    int arrivals[FDN_CHANNEL_FIRST_USER];
    uint32_t last_tag[FDN_CHANNEL_FIRST_USER];
    uint64_t bytes[FDN_CHANNEL_FIRST_USER];
    bool bad_order;
};

static void on_up(fdn_peer *p, void *arg)
{
    struct side *s = arg;
    s->up_peer = p;
    s->ups++;
}

static void on_down(fdn_peer *p, int reason, void *arg)
{
    struct side *s = arg;
    if (s->up_peer == p)
        s->up_peer = NULL;
    s->downs++;
    s->last_down_reason = reason;
}

static fdn_msg *make_msg(size_t len, uint32_t tag)
{
    fdn_msg *m;
    CHECK_OK(fdn_msg_alloc(fdn_worker_pool(w), len, &m));
    uint8_t *d = fdn_msg_data(m);
    for (size_t i = 0; i < len; i++)
        d[i] = (uint8_t)(i * 131 + tag);
    memcpy(d, &tag, 4);
    return m;
}

static void on_message(fdn_peer *p, int channel, fdn_msg *m, void *arg)
{
    (void)p;
    struct side *s = arg;
    uint32_t tag;
    CHECK(fdn_msg_len(m) >= 4);
    memcpy(&tag, fdn_msg_data(m), 4);
    if (s->arrivals[channel] && tag <= s->last_tag[channel])
        s->bad_order = true;
    s->last_tag[channel] = tag;
    s->arrivals[channel]++;
    size_t off = 0;
    for (fdn_msg *b = m; b; b = b->next) {
        const uint8_t *d = fdn_msg_data(b);
        for (size_t i = 0; i < fdn_msg_len(b); i++, off++)
            if (off >= 4)
                CHECK_EQ(d[i], (uint8_t)(off * 131 + tag));
        s->bytes[channel] += fdn_msg_len(b);
    }
    fdn_msg_free(m);
}

static void make_node(struct side *s)
{
    memset(s, 0, sizeof *s);
    fdn_node_config cfg = {.worker = w, .secret = secret, .secret_len = sizeof secret};
    CHECK_OK(fdn_node_create(&cfg, &s->node));
    fdn_node_events ev = {.peer_up = on_up, .peer_down = on_down, .arg = s};
    fdn_node_set_events(s->node, &ev);
    for (int c = 0; c < FDN_CHANNEL_FIRST_USER; c++)
        CHECK_OK(fdn_channel_set_handler(s->node, c, on_message, s));
}

struct reply_state {
    int calls, status;
    uint32_t tag;
};

static void on_request(fdn_peer *p, int channel, uint64_t id, fdn_msg *req, void *arg)
{
    (void)arg;
    CHECK_OK(fdn_respond(p, channel, id, req));
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

static void test_two_nodes(void)
{
    fdn_runtime_config cfg = {.workers = 1, .app_driven_workers = 1, .no_pinning = true,
                              .pool = {.max_bytes = (size_t)512 << 20}};
    fds_at_setup = count_fds();
    CHECK_OK(fdn_runtime_create(&cfg, &rt));
    w = fdn_runtime_worker(rt, 0);
    CHECK_OK(fdn_worker_attach(w));
    struct side a, b;
    make_node(&a);
    make_node(&b);
    CHECK_OK(fdn_channel_set_request_handler(a.node, FDN_CHANNEL_COORDINATION, on_request, NULL));
    int idx = fdn_node_listen(a.node, "shm://@");
    CHECK_OK(idx);
    char addr[ADDR_MAX];
    CHECK(fdn_node_listen_addr(a.node, idx, addr, sizeof addr) > 0);
    CHECK(strncmp(addr, "shm://@", 7) == 0);
    fdn_peer *p;
    CHECK_OK(fdn_node_connect(b.node, addr, &p));
    RUN_UNTIL(a.ups == 1 && b.ups == 1);

    /* Every default channel, in order within each; some messages larger
     * than a fragment (64 KiB), a 3 MiB one on data. */
    uint64_t sent_bytes[FDN_CHANNEL_FIRST_USER] = {0};
    int sent[FDN_CHANNEL_FIRST_USER] = {0};
    for (uint32_t i = 1; i <= 200; i++) {
        int channel = (int)(i % FDN_CHANNEL_FIRST_USER);
        size_t max = channel == FDN_CHANNEL_GOSSIP ? 60000
                     : channel == FDN_CHANNEL_DATA  ? 300000
                                                    : 150000;
        size_t len = i == 200 ? 3u << 20 : 4 + rng_size(max - 4);
        if (i == 200)
            channel = FDN_CHANNEL_DATA;
        fdn_msg *m = make_msg(len, i);
        int rc;
        while ((rc = fdn_send(p, channel, m)) == -EAGAIN)
            fdn_worker_progress(w);
        CHECK_OK(rc);
        sent[channel]++;
        sent_bytes[channel] += len;
    }
    for (int c = 0; c < FDN_CHANNEL_FIRST_USER; c++) {
        RUN_UNTIL(a.arrivals[c] == sent[c]);
        CHECK_EQ(a.bytes[c], sent_bytes[c]);
    }
    CHECK(!a.bad_order);

    /* Request / response on the coordination channel. */
    struct reply_state r = {0};
    CHECK_OK(fdn_request(p, FDN_CHANNEL_COORDINATION, make_msg(64, 4242), 0, on_reply, &r, NULL));
    RUN_UNTIL(r.calls == 1);
    CHECK_EQ(r.status, 0);
    CHECK_EQ(r.tag, 4242);

    /* And back the other way. */
    CHECK_OK(fdn_send(a.up_peer, FDN_CHANNEL_EVENTS, make_msg(100000, 9)));
    RUN_UNTIL(b.arrivals[FDN_CHANNEL_EVENTS] == 1);

    fdn_node_destroy(b.node);
    RUN_UNTIL(a.downs == 1);
    CHECK_EQ(a.last_down_reason, 0);
    fdn_node_destroy(a.node);
    fdn_pool_stats ps;
    fdn_pool_stats_get(fdn_worker_pool(w), &ps);
    CHECK_EQ(ps.buffers_in_use, 0);
    teardown();
}

int main(int argc, char **argv)
{
    tp = fdn__transport_for("shm://", NULL);
    CHECK(tp != NULL);
    self_exe = "/proc/self/exe";
    pattern_init();
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "--stream-child") == 0)
        return child_stream(argv[2]);
    RUN(test_registry_and_bad_addresses);
    RUN(test_echo_random_wrap);
    RUN(test_stream_one_way);
    RUN(test_many_connections);
    RUN(test_close_delivers_all);
    RUN(test_peer_killed);
    RUN(test_bad_setups_refused);
    RUN(test_corrupt_ring_closes);
    RUN(test_lend_both_ways);
    RUN(test_corrupt_records_close);
    RUN(test_box_keeps_order);
    RUN(test_corrupt_box_closes);
    RUN(test_two_nodes);
    free(pattern);
    return 0;
}
