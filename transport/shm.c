/* The shared-memory transport: processes on one host exchange bytes through
 * rings in a shared memfd segment (transport/shm_ring.h), and lend each
 * other buffers of a shared pool by reference; a unix socket only sets the
 * connection up and tells when the peer goes.
 *
 * Set-up. The connecting side creates the one segment (both rings), its
 * pool and its own wake-up eventfd before it connects, so that a failure
 * to get memory is reported by connect() itself; it seals the segment's
 * size (F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_SEAL) and, once connected, sends
 * a hello (magic, version, ring size, pool size) with the memfd, its
 * eventfd and its pool's memfd (SCM_RIGHTS) over a SOCK_SEQPACKET socket.
 * The accepting side checks the hello and both memfds (exact size, seals
 * present: a peer that could shrink a file would make our loads fault with
 * SIGBUS), maps them (the pool read-only), and answers with its own eventfd
 * and pool.
 * Why one segment made by the connecting side: one mapping and one message
 * per connection, and the side that asks for the connection pays for its
 * memory; the seals make the accepting side as safe as if it had made the
 * segment itself, and neither side ever trusts a value in it (shm_ring.h).
 * Each side then learns its peer's process (SO_PEERPIDFD, else SO_PEERCRED
 * and pidfd_open) and, from there on, the socket carries no byte: core's
 * handshake and authentication run over the rings exactly as over TCP.
 *
 * Pools (FDN__TP_REFS). Each side's pool is a memfd of its own, carved by
 * a region pool (core/pool.h) that core allocates from (tx_pool, behind
 * fdn_peer_msg_alloc). It is mapped writable here and then sealed with
 * F_SEAL_FUTURE_WRITE, so the peer, which gets the descriptor, can only map
 * it read-only: a hostile receiver can read our pool (it is meant for that
 * peer; the metadata of its buffers, pointers of ours included, is visible
 * too) but never change a byte of it.
 *
 * The data path (records, the box, the poller, wake-ups) is in shm_data.c;
 * shm_conn.h is what the two files share.
 *
 * Ends. An orderly close (core's) sets `closed` in the outbound ring after
 * its last record and shuts the socket down, which wakes the peer: the peer
 * delivers every record before the flag, then reports on_closed(0). A peer
 * that goes without that flag (killed, crashed, or closing after a protocol
 * error) is seen by a POLL on its pidfd or on the socket, and reported as
 * -ECONNRESET at once. A position or record that cannot be right closes the
 * connection with -EBADMSG and a detail in fdn_errmsg(), and is counted.
 * The segment is unmapped and every descriptor closed when the connection
 * finishes, so a dead peer's memory is reclaimed. Our buffers the peer
 * still held come back then (nothing allocates from that pool any more, so
 * none is reused under a peer that might still read it), and the pool
 * itself goes with its last buffer; the peer's pool stays mapped until the
 * last message borrowed from it is freed.
 *
 * Lifetimes are those of transport/tcp.c: every SQE is counted until its
 * final CQE; close submits a cancel, so on_closed always comes from a
 * completion; the connection object itself counts as a passive operation
 * from creation to its end, so the worker cannot detach while it exists.
 * The socket, pidfd and eventfd operations are passive
 * (fdn__worker_io_begin_passive): their events are rare, and a busy worker
 * need not ask the kernel for them on every pass. */
#include "transport/shm_internal.h"
#include "transport/shm_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <fdn/error.h>

#include "base/compiler.h"
#include "base/error.h"
#include "base/io.h"
#include "core/pool.h"
#include "core/worker_internal.h"
#include "transport/acceptor.h"
#include "transport/send_queue.h"
#include "transport/shm_ring.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010 /* Linux 5.1 */
#endif

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77 /* Linux 6.5; older headers lack it */
#endif

#define DEFAULT_NOTSENT_LOWAT (128u << 10)
#define DEFAULT_POOL_BYTES (64u << 20)
#define MIN_POOL_BYTES (1u << 20)
#define LISTEN_BACKLOG 1024
#define SETUP_FDS_MAX 4 /* room for more than expected, to tell "too many" */

/* ---- Counters ------------------------------------------------------------ */

struct fdn__shm_counters fdn__shm_counters;

void fdn__shm_stats_get(struct fdn__shm_stats *out)
{
#define LOAD(f) out->f = atomic_load_explicit(&fdn__shm_counters.f, memory_order_relaxed)
    LOAD(bad_rings);
    LOAD(bad_setups);
    LOAD(peer_deaths);
    LOAD(wakeups_sent);
    LOAD(segments_mapped);
    LOAD(bad_records);
    LOAD(refs_sent);
    LOAD(refs_received);
    LOAD(releases_sent);
    LOAD(releases_received);
    LOAD(loans_out);
    LOAD(borrowed);
    LOAD(pools_mapped);
    LOAD(boxes_sent);
    LOAD(boxes_received);
#undef LOAD
}

/* ---- Set-up messages ----------------------------------------------------- */

/* Connecting side -> accepting side, with [memfd, eventfd, pool memfd]. */
struct shm_hello {
    uint64_t magic;
    uint32_t version;
    uint32_t ring_bytes;
    uint32_t pool_bytes;      /* the sender's pool: its size */
    uint32_t reserved;        /* zero */
};

/* Accepting side -> connecting side, with [eventfd, pool memfd] when status
 * is 0. */
struct shm_reply {
    uint64_t magic;
    uint32_t version;
    int32_t status;           /* 0, or the negative errno that refused the hello */
    uint32_t pool_bytes;
    uint32_t reserved;
};

union setup_msg {
    struct shm_hello hello;
    struct shm_reply reply;
    uint8_t bytes[64];        /* a larger message is caught as too large, not truncated */
};

struct shm_listener {
    struct fdn__tp_listener base;         /* first: what core holds */
    struct fdn__acceptor acceptor;
    const struct fdn__tp_listener_events *ev;
    void *ctx;
    struct fdn__tp_options opt;
    char addr[FDN__SHM_ADDR_MAX];
    char unlink_path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* "" for abstract */
};

static inline struct shm_listener *to_listener(struct fdn__tp_listener *l)
{
    return fdn__container_of(l, struct shm_listener, base);
}

/* ---- Options and addresses ----------------------------------------------- */

static uint32_t round_up_pow2(uint64_t n)
{
    uint64_t p = 1;
    while (p < n)
        p <<= 1;
    return p > FDN__SHM_MAX_RING ? FDN__SHM_MAX_RING : (uint32_t)p;
}

/* Each ring holds twice the bytes a TCP socket may keep unsent: the same
 * bound on how long an urgent frame can wait behind bytes already handed to
 * the transport, with room for one batch being read while the next is
 * written. */
static uint32_t ring_bytes_for(const struct fdn__tp_options *opt)
{
    uint64_t lowat = opt && opt->notsent_lowat ? opt->notsent_lowat : DEFAULT_NOTSENT_LOWAT;
    uint32_t n = round_up_pow2(2 * lowat);
    return n < FDN__SHM_MIN_RING ? FDN__SHM_MIN_RING : n;
}

/* "@name" (abstract), "@" (any abstract name, listeners only) or a path. */
static int parse_addr(const char *addr, bool listening, struct sockaddr_un *sa, socklen_t *len)
{
    size_t n = addr ? strlen(addr) : 0;
    *sa = (struct sockaddr_un){.sun_family = AF_UNIX};
    if (n == 0)
        return FDN_ERR(-EINVAL, "shm address is empty: use @name or a socket path");
    if (n >= sizeof sa->sun_path)
        return FDN_ERR(-EINVAL, "shm address %s is over %zu bytes", addr,
                       sizeof sa->sun_path - 1);
    if (addr[0] == '@' && n == 1 && !listening)
        return FDN_ERR(-EINVAL, "shm address @ (any name) is for listeners only");
    memcpy(sa->sun_path, addr, n);
    if (addr[0] == '@')
        sa->sun_path[0] = '\0'; /* the abstract namespace */
    /* "@" alone: the family only, which makes bind pick a free name. */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (n == 1 && addr[0] == '@' ? 0 : n));
    return 0;
}

static int format_addr(const struct sockaddr_un *sa, socklen_t len, char *buf, size_t size)
{
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = len > off ? len - off : 0;
    if (n && sa->sun_path[0] == '\0') {
        if (n >= size) /* '@' + n - 1 bytes + NUL */
            return -ENOSPC;
        buf[0] = '@';
        memcpy(buf + 1, sa->sun_path + 1, n - 1);
        buf[n] = '\0';
        return (int)n;
    }
    n = strnlen(sa->sun_path, n);
    if (n >= size)
        return -ENOSPC;
    memcpy(buf, sa->sun_path, n);
    buf[n] = '\0';
    return (int)n;
}

/* Each connection's pool, from the options, in whole pages. */
static uint32_t pool_bytes_for(const struct fdn__tp_options *opt)
{
    uint64_t n = opt && opt->pool_bytes ? opt->pool_bytes : DEFAULT_POOL_BYTES;
    if (n < MIN_POOL_BYTES)
        n = MIN_POOL_BYTES;
    if (n > FDN__SHM_MAX_POOL)
        n = FDN__SHM_MAX_POOL;
    return (uint32_t)(n & ~(uint64_t)4095);
}

static int check_worker(fdn_worker *w)
{
    if (fdn_worker_current() != w)
        return FDN_ERR(-EPERM, "shm: worker %d used from a thread that does not own it",
                       fdn_worker_index(w));
    if (!fdn__worker_ring(w))
        return FDN_ERR(-EINVAL, "shm: worker %d has no io_uring (not attached?)",
                       fdn_worker_index(w));
    return 0;
}

/* ---- Connection: operations and the close protocol ---------------------- */

void fdn__shm_op_begin(struct shm_conn *c, struct io_uring_sqe *sqe, struct conn_op *op,
                       bool passive)
{
    io_uring_sqe_set_data(sqe, &op->io);
    op->passive = passive;
    c->ops++;
    if (passive)
        fdn__worker_io_begin_passive(c->w);
    else
        fdn__worker_io_begin(c->w);
}

static void conn_maybe_finish(struct shm_conn *c);

/* An operation delivered its final CQE; passive is how it was begun, read
 * before its completion handler ran (a handler may arm the same op again,
 * as active or passive, which rewrites op->passive). May free c. */
void fdn__shm_op_end(struct shm_conn *c, bool passive)
{
    c->ops--;
    if (passive)
        fdn__worker_io_end_passive(c->w);
    else
        fdn__worker_io_end(c->w);
    conn_maybe_finish(c);
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void unmap_segment(struct shm_conn *c)
{
    if (!c->seg)
        return;
    munmap(c->seg, c->seg_bytes);
    c->seg = NULL;
    SHM_COUNT(segments_mapped, -1);
}

/* ---- Pools and loans ----------------------------------------------------- */

static void pool_unmap(void *region, size_t bytes)
{
    munmap(region, bytes);
    SHM_COUNT(pools_mapped, -1);
}

/* Our pool: a memfd the peer maps read-only. It is mapped writable here
 * first, then sealed against any later write access (F_SEAL_FUTURE_WRITE):
 * the peer, which gets the descriptor, can map it only for reading, so a
 * hostile receiver can never change our buffers or their metadata. Size
 * seals keep our own loads from faulting. */
static int create_pool(struct shm_conn *c, uint32_t bytes)
{
    int fd = memfd_create("fdn-shm-pool", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return FDN_ERR(-errno, "shm: memfd_create (pool): %s", fdn_strerror(errno));
    c->pool_fd = fd;
    if (ftruncate(fd, (off_t)bytes) < 0)
        return FDN_ERR(-errno, "shm: sizing a %u-byte pool: %s", bytes, fdn_strerror(errno));
    void *map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        return FDN_ERR(-errno, "shm: mmap of a %u-byte pool: %s", bytes, fdn_strerror(errno));
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) <
        0) {
        int err = errno;
        munmap(map, bytes);
        return FDN_ERR(-err, "shm: sealing the pool: %s", fdn_strerror(err));
    }
    SHM_COUNT(pools_mapped, 1);
    int rc = fdn__pool_create_region(NULL, map, bytes, pool_unmap, &c->pool);
    if (rc < 0) {
        pool_unmap(map, bytes);
        return rc;
    }
    c->pool_base = map;
    c->pool_bytes = bytes;
    c->num_free_slots = FDN__SHM_SLOTS;
    for (uint32_t i = 0; i < FDN__SHM_SLOTS; i++)
        c->free_slots[i] = FDN__SHM_SLOTS - 1 - i;
    return 0;
}

static void loans_put(struct shm_loans *in)
{
    if (__atomic_sub_fetch(&in->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    munmap((void *)in->map, in->bytes);
    SHM_COUNT(pools_mapped, -1);
    fdn__pool_destroy_foreign(in->meta);
    free(in);
}

/* A borrowed message's last free, on any thread: its slot goes back to
 * the connection's poller (if it still has one), to be released. */
static void loan_returned(void *arg, fdn_msg *m)
{
    struct shm_loans *in = arg;
    fdn_msg *top = __atomic_load_n(&in->returned, __ATOMIC_RELAXED);
    do {
        m->next = top;
    } while (!__atomic_compare_exchange_n(&in->returned, &top, m, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));
    SHM_COUNT(borrowed, -1);
    loans_put(in); /* the last access */
}

/* The peer's pool: a sealed memfd of the size its set-up message named,
 * mapped read-only. */
static int map_peer_pool(struct shm_conn *c, int fd, uint32_t bytes)
{
    struct stat st;
    int seals = fcntl(fd, F_GET_SEALS);
    if (bytes < MIN_POOL_BYTES || bytes > FDN__SHM_MAX_POOL || bytes % 4096)
        return FDN_ERR(-EBADMSG, "shm: the peer's pool of %u bytes is not a multiple of 4 KiB "
                       "in %u..%u", bytes, MIN_POOL_BYTES, FDN__SHM_MAX_POOL);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != bytes)
        return FDN_ERR(-EBADMSG, "shm: the peer's pool is not a %u-byte memfd", bytes);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return FDN_ERR(-EBADMSG, "shm: the peer's pool is not sealed against shrinking "
                       "(it could make our reads fault)");
    struct shm_loans *in = calloc(1, sizeof *in);
    if (!in)
        return FDN_ERR(-ENOMEM, "shm: no memory for the peer's pool's loans");
    int rc = fdn__pool_create_foreign(loan_returned, in, &in->meta);
    if (rc < 0) {
        free(in);
        return rc;
    }
    void *map = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        rc = FDN_ERR(-errno, "shm: mmap of the peer's %u-byte pool: %s", bytes,
                     fdn_strerror(errno));
        fdn__pool_destroy_foreign(in->meta);
        free(in);
        return rc;
    }
    SHM_COUNT(pools_mapped, 1);
    in->map = map;
    in->bytes = bytes;
    in->refs = 1;
    c->in = in;
    return 0;
}

/* Ends the connection's part in both pools: what the peer still holds of
 * ours comes back (it will not release it now; nothing allocates from the
 * pool any more, so no buffer of it is reused while a peer may still read
 * it), and the peer's pool stays mapped while borrowed messages live. */
static void release_pools(struct shm_conn *c)
{
    for (uint32_t i = 0; i < FDN__SHM_SLOTS; i++) {
        if (!c->lent[i])
            continue;
        fdn_msg_free(c->lent[i]);
        c->lent[i] = NULL;
        c->lent_flag[i] = false;
        SHM_COUNT(loans_out, -1);
    }
    fdn__pool_region_put(c->pool);
    c->pool = NULL;
    c->pool_base = NULL;
    close_fd(&c->pool_fd);
    if (c->in)
        loans_put(c->in);
    c->in = NULL;
}

/* Nothing in flight: reports what is left, reclaims everything, frees c. */
static void conn_finish(struct shm_conn *c)
{
    if (c->poller_added)
        fdn__worker_remove_poller(c->w, &c->poller);
    unmap_segment(c);
    release_pools(c);
    close_fd(&c->sock);
    close_fd(&c->memfd);
    close_fd(&c->wake_fd);
    close_fd(&c->peer_wake_fd);
    close_fd(&c->pidfd);
    int send_err = c->close_err < 0 ? c->close_err : -ECANCELED;
    while (c->sq.head) {
        struct fdn__tp_send *s = fdn__send_queue_pop(&c->sq);
        if (c->started)
            c->ev->on_sent(c->ctx, s, send_err);
    }
    if (c->started)
        c->ev->on_closed(c->ctx, c->close_err);
    fdn__worker_io_end_passive(c->w); /* the object itself */
    free(c);
}

static void conn_maybe_finish(struct shm_conn *c)
{
    if (c->closing && c->ops == 0)
        conn_finish(c);
}

static void cancel_fd_ops(struct shm_conn *c, int fd)
{
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    fdn__shm_op_begin(c, sqe, &c->close_op, false);
}

/* A passive operation that close cancels becomes an active one: its final
 * CQE now holds up on_closed, and a busy worker asks for passive
 * completions only every FDN__PASSIVE_REAP_PASSES passes, which delayed
 * the report of a lost connection (and the session's resumption) by as
 * many passes. */
static void make_active(struct shm_conn *c, struct conn_op *op, bool armed)
{
    if (!armed || !op->passive)
        return;
    op->passive = false;
    fdn__worker_io_end_passive(c->w);
    fdn__worker_io_begin(c->w);
}

/* Starts closing with err (on_closed's argument) unless already closing.
 * An orderly close (err 0 or core's -ECANCELED) tells the peer through the
 * ring's closed flag that no record follows those written; any close shuts the
 * socket down, which wakes the peer. The cancel on the socket always
 * submits, so a completion drives the rest. */
void fdn__shm_begin_close(struct shm_conn *c, int err)
{
    if (c->closing)
        return;
    c->closing = true;
    c->close_err = err;
    if (c->ready && (err == 0 || err == -ECANCELED))
        atomic_store_explicit(&c->tx.ctl->closed, 1, memory_order_release);
    if (c->poller_added) {
        fdn__worker_remove_poller(c->w, &c->poller);
        c->poller_added = false;
    }
    make_active(c, &c->sock_op, c->sock_armed);
    make_active(c, &c->pidfd_op, c->pidfd_armed);
    make_active(c, &c->wake_op, c->wake_armed);
    shutdown(c->sock, SHUT_RDWR);
    cancel_fd_ops(c, c->sock);
    if (c->pidfd_armed)
        cancel_fd_ops(c, c->pidfd);
    if (c->wake_armed)
        cancel_fd_ops(c, c->wake_fd);
}

static void close_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    (void)cqe;
    struct conn_op *cop = fdn__container_of(op, struct conn_op, io);
    bool was_passive = cop->passive;
    fdn__shm_op_end(cop->c, was_passive);
}

/* The peer's end was seen (its process exited, or its socket closed). With
 * the closed flag set it was orderly, and what it wrote is still delivered
 * (the poller closes once the ring is drained); otherwise it is a reset. */
static void on_peer_gone(struct shm_conn *c, const char *how)
{
    if (c->closing)
        return;
    if (c->ready && atomic_load_explicit(&c->rx.ctl->closed, memory_order_acquire))
        return; /* the poller ends it, after the last byte */
    SHM_COUNT(peer_deaths, 1);
    fdn__shm_begin_close(c, FDN_ERR(-ECONNRESET, "shm: peer pid %d %s without closing "
                                    "the connection", (int)c->peer_pid, how));
}

/* ---- Connection: set-up -------------------------------------------------- */

static void sock_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe);
static void pidfd_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe);
static void connect_complete(fdn_worker *w, struct fdn__io_op *op,
                             const struct io_uring_cqe *cqe);

static void arm_poll(struct shm_conn *c, struct conn_op *op, int fd, unsigned events,
                     bool passive)
{
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    io_uring_prep_poll_add(sqe, fd, events);
    fdn__shm_op_begin(c, sqe, op, passive);
}

static void arm_sock_poll(struct shm_conn *c)
{
    /* During set-up: the peer's message. Afterwards nothing may come but
     * the end (EOF, hang-up, or a byte the protocol does not allow). */
    arm_poll(c, &c->sock_op, c->sock, POLLIN | POLLRDHUP, c->ready);
    c->sock_armed = true;
}

static struct shm_conn *conn_alloc(fdn_worker *w, bool outbound, int sock)
{
    struct shm_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->base.tp = &fdn__transport_shm;
    c->w = w;
    c->outbound = outbound;
    c->sock = sock;
    c->memfd = c->wake_fd = c->peer_wake_fd = c->pidfd = c->pool_fd = -1;
    c->connect_op = (struct conn_op){.io.complete = connect_complete, .c = c};
    c->sock_op = (struct conn_op){.io.complete = sock_complete, .c = c};
    c->pidfd_op = (struct conn_op){.io.complete = pidfd_complete, .c = c};
    c->close_op = (struct conn_op){.io.complete = close_complete, .c = c};
    fdn__shm_data_init(c);
    fdn__worker_io_begin_passive(w); /* the object itself, until conn_finish */
    return c;
}

/* Frees a connection that never submitted anything; the socket stays the
 * caller's. */
static void conn_destroy_unused(struct shm_conn *c)
{
    c->sock = -1;
    unmap_segment(c);
    release_pools(c);
    close_fd(&c->memfd);
    close_fd(&c->wake_fd);
    fdn__worker_io_end_passive(c->w);
    free(c);
}

/* Binds the rings to this side's directions: the connecting side produces
 * into ring 0 and consumes ring 1. */
static void bind_rings(struct shm_conn *c)
{
    int out = c->outbound ? 0 : 1;
    fdn__shm_tx_init(&c->tx, c->seg, c->ring_bytes, out);
    fdn__shm_rx_init(&c->rx, c->seg, c->ring_bytes, 1 - out);
}

static int map_segment(struct shm_conn *c, int memfd, size_t bytes)
{
    void *seg = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (seg == MAP_FAILED)
        return FDN_ERR(-errno, "shm: mmap of a %zu-byte segment: %s", bytes, fdn_strerror(errno));
    c->seg = seg;
    c->seg_bytes = bytes;
    SHM_COUNT(segments_mapped, 1);
    return 0;
}

/* The connecting side's segment: a sealed memfd holding both rings. */
static int create_segment(struct shm_conn *c, uint32_t ring_bytes)
{
    size_t bytes = fdn__shm_seg_bytes(ring_bytes);
    int fd = memfd_create("fdn-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return FDN_ERR(-errno, "shm: memfd_create: %s", fdn_strerror(errno));
    c->memfd = fd;
    if (ftruncate(fd, (off_t)bytes) < 0)
        return FDN_ERR(-errno, "shm: sizing a %zu-byte segment: %s", bytes, fdn_strerror(errno));
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
        return FDN_ERR(-errno, "shm: sealing the segment: %s", fdn_strerror(errno));
    int rc = map_segment(c, fd, bytes);
    if (rc < 0)
        return rc;
    c->ring_bytes = ring_bytes;
    struct fdn__shm_seg_hdr *h = c->seg;
    *h = (struct fdn__shm_seg_hdr){.magic = FDN__SHM_MAGIC, .version = FDN__SHM_VERSION,
                                   .ring_bytes = ring_bytes};
    bind_rings(c);
    return 0;
}

static int create_wake_fd(struct shm_conn *c)
{
    c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->wake_fd < 0)
        return FDN_ERR(-errno, "shm: eventfd: %s", fdn_strerror(errno));
    return 0;
}

/* A descriptor the peer says is its eventfd: we only ever write 8 bytes to
 * it, but a pipe or a socket there would let the peer make those writes
 * block or fill something else, so anything but an eventfd is refused
 * (when /proc is there to tell). */
static int check_eventfd(int fd)
{
    char path[64], target[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return errno == ENOENT ? 0 : FDN_ERR(-errno, "shm: readlink %s: %s", path,
                                             fdn_strerror(errno));
    target[n] = '\0';
    if (strcmp(target, "anon_inode:[eventfd]") != 0)
        return FDN_ERR(-EBADMSG, "shm: the peer's wake-up descriptor is %s, not an eventfd",
                       target);
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (!(flags & O_NONBLOCK) && fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0))
        return FDN_ERR(-errno, "shm: making the peer's eventfd non-blocking: %s",
                       fdn_strerror(errno));
    return 0;
}

/* The peer's process as a pidfd: SO_PEERPIDFD names it without a race
 * (Linux 6.5); before that, SO_PEERCRED's pid and pidfd_open, which could
 * name a recycled pid if the peer died in between, in which case the socket
 * still reports the end. Without either (a pid namespace that hides the
 * peer, a seccomp filter) the socket alone does. */
static void open_peer_pidfd(struct shm_conn *c)
{
    int fd = -1;
    socklen_t len = sizeof fd;
    if (getsockopt(c->sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len) == 0 && fd >= 0) {
        c->pidfd = fd;
        return;
    }
    if (c->peer_pid > 0) {
        long rc = syscall(SYS_pidfd_open, (pid_t)c->peer_pid, 0u);
        if (rc >= 0) {
            c->pidfd = (int)rc;
            fcntl(c->pidfd, F_SETFD, FD_CLOEXEC);
        }
    }
}

static void read_peer_cred(struct shm_conn *c)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(c->sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        c->peer_pid = cred.pid;
}

/* Both sides, once the segment and both eventfds are known. */
static void setup_done(struct shm_conn *c)
{
    open_peer_pidfd(c);
    c->ready = true;
    arm_sock_poll(c);
    if (c->pidfd >= 0) {
        arm_poll(c, &c->pidfd_op, c->pidfd, POLLIN, true);
        c->pidfd_armed = true;
    }
    fdn__shm_data_start(c);
}

/* Sends one set-up message, with fds. The socket is fresh and the message
 * tiny, so it never blocks; failing to send is failing to set up. */
static int send_setup(struct shm_conn *c, const void *msg, size_t len, const int *fds, int nfds)
{
    long n = fdn__send_fds(c->sock, msg, len, fds, nfds, MSG_DONTWAIT);
    if (n < 0)
        return FDN_ERR((int)n, "shm: sending the set-up message: %s", fdn_strerror((int)-n));
    return n == (long)len ? 0 : FDN_ERR(-EIO, "shm: set-up message cut short");
}

/* Receives one set-up message and the descriptors that came with it (all
 * of them, so none leaks whatever the peer sent). Returns its length, 0 at
 * EOF, -EAGAIN when nothing is there yet, or another negative errno. */
static int recv_setup(struct shm_conn *c, union setup_msg *msg, int *fds, int *nfds)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * SETUP_FDS_MAX)];
    } cbuf;
    memset(&cbuf, 0, sizeof cbuf);
    struct iovec iov = {.iov_base = msg, .iov_len = sizeof *msg};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf.buf,
                        .msg_controllen = sizeof cbuf.buf};
    *nfds = 0;
    ssize_t n = recvmsg(c->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k && *nfds < SETUP_FDS_MAX; i++)
            memcpy(&fds[(*nfds)++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
    }
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
        return FDN_ERR(-EBADMSG, "shm: set-up message too large, or with too many descriptors");
    return (int)n;
}

static void close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* The accepting side: checks the hello and its segment, maps it, answers. */
static int take_hello(struct shm_conn *c, const struct shm_hello *h, int len, int *fds, int nfds)
{
    if (len != (int)sizeof *h || h->magic != FDN__SHM_MAGIC)
        return FDN_ERR(-EBADMSG, "shm: the peer's hello is not one (%d bytes)", len);
    if (h->version != FDN__SHM_VERSION)
        return FDN_ERR(-EPROTONOSUPPORT, "shm: the peer speaks set-up version %u, not %u",
                       h->version, FDN__SHM_VERSION);
    if (!fdn__is_pow2(h->ring_bytes) || h->ring_bytes < FDN__SHM_MIN_RING ||
        h->ring_bytes > FDN__SHM_MAX_RING)
        return FDN_ERR(-EBADMSG, "shm: the peer's ring size %u is not a power of two in "
                       "%u..%u", h->ring_bytes, FDN__SHM_MIN_RING, FDN__SHM_MAX_RING);
    if (nfds != 3 || h->reserved)
        return FDN_ERR(-EBADMSG, "shm: the peer's hello came with %d descriptors, not 3%s", nfds,
                       h->reserved ? ", and reserved bytes set" : "");
    size_t bytes = fdn__shm_seg_bytes(h->ring_bytes);
    struct stat st;
    int seals = fcntl(fds[0], F_GET_SEALS);
    if (fstat(fds[0], &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != bytes)
        return FDN_ERR(-EBADMSG, "shm: the peer's segment is not a %zu-byte memfd", bytes);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return FDN_ERR(-EBADMSG, "shm: the peer's segment is not sealed against shrinking "
                       "(it could make our reads fault)");
    int rc = check_eventfd(fds[1]);
    if (rc < 0)
        return rc;
    rc = map_peer_pool(c, fds[2], h->pool_bytes);
    if (rc < 0)
        return rc;
    rc = map_segment(c, fds[0], bytes);
    if (rc < 0)
        return rc;
    c->ring_bytes = h->ring_bytes;
    bind_rings(c);
    rc = create_wake_fd(c);
    if (rc == 0)
        rc = create_pool(c, c->pool_bytes);
    if (rc < 0)
        return rc;
    struct shm_reply reply = {.magic = FDN__SHM_MAGIC, .version = FDN__SHM_VERSION,
                              .pool_bytes = c->pool_bytes};
    int out[2] = {c->wake_fd, c->pool_fd};
    rc = send_setup(c, &reply, sizeof reply, out, 2);
    if (rc < 0)
        return rc;
    close_fd(&c->pool_fd); /* the mappings keep the pools */
    close(fds[0]);
    close(fds[2]);
    c->peer_wake_fd = fds[1];
    return 0;
}

/* The connecting side: the accepting side's answer. */
static int take_reply(struct shm_conn *c, const struct shm_reply *r, int len, int *fds, int nfds)
{
    if (len != (int)sizeof *r || r->magic != FDN__SHM_MAGIC)
        return FDN_ERR(-EBADMSG, "shm: the peer's answer is not one (%d bytes)", len);
    if (r->status < 0)
        return FDN_ERR(r->status > -4096 ? r->status : -EPROTO,
                       "shm: the peer refused the set-up: %s", fdn_strerror(r->status));
    if (r->version != FDN__SHM_VERSION || nfds != 2 || r->reserved)
        return FDN_ERR(-EBADMSG, "shm: the peer's answer has version %u and %d descriptors",
                       r->version, nfds);
    int rc = check_eventfd(fds[0]);
    if (rc == 0)
        rc = map_peer_pool(c, fds[1], r->pool_bytes);
    if (rc < 0)
        return rc;
    close(fds[1]);
    c->peer_wake_fd = fds[0];
    return 0;
}

/* The set-up message came (or the socket ended). */
static void on_setup_readable(struct shm_conn *c)
{
    union setup_msg msg;
    int fds[SETUP_FDS_MAX], nfds;
    int len = recv_setup(c, &msg, fds, &nfds);
    if (len == -EAGAIN || len == -EINTR) {
        close_fds(fds, nfds);
        arm_sock_poll(c);
        return;
    }
    int rc;
    if (len == 0)
        rc = FDN_ERR(-ECONNRESET, "shm: the peer closed during set-up");
    else if (len < 0)
        rc = FDN_ERR(len, "shm: receiving the set-up message: %s", fdn_strerror(len));
    else
        rc = c->outbound ? take_reply(c, &msg.reply, len, fds, nfds)
                         : take_hello(c, &msg.hello, len, fds, nfds);
    if (rc < 0) {
        close_fds(fds, nfds);
        SHM_COUNT(bad_setups, len > 0);
        if (!c->outbound && len > 0) {
            struct shm_reply no = {.magic = FDN__SHM_MAGIC, .version = FDN__SHM_VERSION,
                                   .status = rc};
            send_setup(c, &no, sizeof no, NULL, 0); /* best effort: say why */
        }
        fdn__shm_begin_close(c, rc);
        if (c->outbound)
            c->ev->on_connected(c->ctx, rc);
        return;
    }
    setup_done(c);
    if (c->outbound)
        c->ev->on_connected(c->ctx, 0);
    if (!c->closing)
        fdn__shm_flush_sends(c);
}

static void sock_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct conn_op *cop = fdn__container_of(op, struct conn_op, io);
    bool was_passive = cop->passive;
    struct shm_conn *c = cop->c;
    c->sock_armed = false;
    if (!c->closing) {
        if (cqe->res < 0)
            fdn__shm_begin_close(c, FDN_ERR(cqe->res, "shm: polling the socket: %s",
                                            fdn_strerror(cqe->res)));
        else if (!c->ready)
            on_setup_readable(c);
        else
            on_peer_gone(c, "closed its socket");
    }
    fdn__shm_op_end(c, was_passive);
}

static void pidfd_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct conn_op *cop = fdn__container_of(op, struct conn_op, io);
    bool was_passive = cop->passive;
    struct shm_conn *c = cop->c;
    c->pidfd_armed = false;
    if (!c->closing && cqe->res > 0)
        on_peer_gone(c, "exited");
    fdn__shm_op_end(c, was_passive);
}

/* ---- Connection: outbound ------------------------------------------------ */

static void connect_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct conn_op *cop = fdn__container_of(op, struct conn_op, io);
    bool was_passive = cop->passive;
    struct shm_conn *c = cop->c;
    int res = cqe->res;
    if (!c->closing && res < 0) {
        fdn__shm_begin_close(c, FDN_ERR(res, "shm: connect to %s: %s", c->addr,
                                        fdn_strerror(res)));
        c->ev->on_connected(c->ctx, res);
    } else if (!c->closing) {
        read_peer_cred(c);
        struct shm_hello h = {.magic = FDN__SHM_MAGIC, .version = FDN__SHM_VERSION,
                              .ring_bytes = c->ring_bytes, .pool_bytes = c->pool_bytes};
        int fds[3] = {c->memfd, c->wake_fd, c->pool_fd};
        int rc = send_setup(c, &h, sizeof h, fds, 3);
        if (rc < 0) {
            fdn__shm_begin_close(c, rc);
            c->ev->on_connected(c->ctx, rc);
        } else {
            close_fd(&c->memfd); /* the mappings keep the segment and the pool */
            close_fd(&c->pool_fd);
            arm_sock_poll(c);
        }
    }
    fdn__shm_op_end(c, was_passive);
}

static int shm_connect(fdn_worker *w, const char *addr, const struct fdn__tp_options *opt,
                       const struct fdn__tp_conn_events *ev, void *ctx, struct fdn__tp_conn **out)
{
    struct sockaddr_un sa;
    socklen_t sa_len;
    int rc = check_worker(w);
    if (rc == 0)
        rc = parse_addr(addr, false, &sa, &sa_len);
    if (rc < 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return FDN_ERR(-errno, "shm: socket(AF_UNIX): %s", fdn_strerror(errno));
    struct shm_conn *c = conn_alloc(w, true, fd);
    if (!c) {
        close(fd);
        return FDN_ERR(-ENOMEM, "shm: no memory for a connection");
    }
    rc = create_segment(c, ring_bytes_for(opt));
    if (rc == 0)
        rc = create_wake_fd(c);
    if (rc == 0)
        rc = create_pool(c, pool_bytes_for(opt));
    if (rc < 0) {
        conn_destroy_unused(c);
        close(fd);
        return rc;
    }
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->peer_sa = sa;
    c->peer_sa_len = sa_len;
    c->ev = ev;
    c->ctx = ctx;
    c->started = true;
    struct io_uring_sqe *sqe = fdn__worker_sqe(w);
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->peer_sa, c->peer_sa_len);
    fdn__shm_op_begin(c, sqe, &c->connect_op, false);
    *out = &c->base;
    return 0;
}

/* ---- Connection: ops ----------------------------------------------------- */

static void shm_conn_start(struct fdn__tp_conn *conn, const struct fdn__tp_conn_events *ev,
                           void *ctx)
{
    struct shm_conn *c = to_conn(conn);
    c->ev = ev;
    c->ctx = ctx;
    c->started = true;
    if (!c->closing)
        arm_sock_poll(c); /* the hello */
}

static void shm_conn_close(struct fdn__tp_conn *conn)
{
    fdn__shm_begin_close(to_conn(conn), -ECANCELED);
}

static int shm_conn_peer_addr(struct fdn__tp_conn *conn, char *buf, size_t len)
{
    struct shm_conn *c = to_conn(conn);
    int n = c->outbound ? snprintf(buf, len, "%s", c->addr)
                        : snprintf(buf, len, "pid:%d", (int)c->peer_pid);
    return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

/* Every connection from one process shares its pid (SO_PEERCRED at accept):
 * the process is what a limit per address holds back here. */
static int shm_conn_peer_host(struct fdn__tp_conn *conn, char *buf, size_t len)
{
    struct shm_conn *c = to_conn(conn);
    int n = snprintf(buf, len, "pid:%d", (int)c->peer_pid);
    return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

static fdn_pool *shm_tx_pool(struct fdn__tp_conn *conn)
{
    struct shm_conn *c = to_conn(conn);
    return c->ready && !c->closing ? c->pool : NULL;
}

const void *fdn__shm_peer_pool(struct fdn__tp_conn *conn, size_t *bytes)
{
    struct shm_conn *c = to_conn(conn);
    *bytes = c->in ? c->in->bytes : 0;
    return c->in ? c->in->map : NULL;
}

static void shm_recv_pause(struct fdn__tp_conn *conn, bool paused)
{
    /* The poller looks at the flag before each piece it delivers. */
    to_conn(conn)->paused = paused;
}

/* ---- Listener ------------------------------------------------------------ */

static struct shm_listener *listener_of(struct fdn__acceptor *a)
{
    return fdn__container_of(a, struct shm_listener, acceptor);
}

/* A connection arrived: core sees it at once; its set-up runs after
 * conn_start, like any reading. */
static void take_accepted(struct fdn__acceptor *a, int fd)
{
    struct shm_listener *l = listener_of(a);
    struct shm_conn *c = conn_alloc(a->w, false, fd);
    if (!c) {
        close(fd);
        return;
    }
    read_peer_cred(c);
    c->pool_bytes = pool_bytes_for(&l->opt);
    l->ev->on_accept(l->ctx, &c->base);
}

static void listener_closed(struct fdn__acceptor *a, int err)
{
    struct shm_listener *l = listener_of(a);
    if (l->unlink_path[0])
        unlink(l->unlink_path);
    l->ev->on_closed(l->ctx, err);
    free(l);
}

static int shm_listen(fdn_worker *w, const char *addr, const struct fdn__tp_options *opt,
                      const struct fdn__tp_listener_events *ev, void *ctx,
                      struct fdn__tp_listener **out)
{
    struct sockaddr_un sa;
    socklen_t sa_len;
    int rc = check_worker(w);
    if (rc == 0)
        rc = parse_addr(addr, true, &sa, &sa_len);
    if (rc < 0)
        return rc;
    struct shm_listener *l = calloc(1, sizeof *l);
    if (!l)
        return FDN_ERR(-ENOMEM, "shm: no memory for a listener");
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        rc = FDN_ERR(-errno, "shm: socket(AF_UNIX): %s", fdn_strerror(errno));
    else if (bind(fd, (struct sockaddr *)&sa, sa_len) < 0)
        rc = FDN_ERR(-errno, "shm: bind %s: %s", addr, fdn_strerror(errno));
    else if (listen(fd, LISTEN_BACKLOG) < 0)
        rc = FDN_ERR(-errno, "shm: listen %s: %s", addr, fdn_strerror(errno));
    if (rc == 0) {
        struct sockaddr_un bound;
        socklen_t bound_len = sizeof bound;
        if (getsockname(fd, (struct sockaddr *)&bound, &bound_len) < 0)
            rc = FDN_ERR(-errno, "shm: getsockname: %s", fdn_strerror(errno));
        else if (format_addr(&bound, bound_len, l->addr, sizeof l->addr) < 0)
            rc = FDN_ERR(-ENAMETOOLONG, "shm: the bound name does not fit");
    }
    if (rc < 0) {
        if (fd >= 0)
            close(fd);
        free(l);
        return rc;
    }
    if (addr[0] != '@')
        snprintf(l->unlink_path, sizeof l->unlink_path, "%s", addr);
    l->base.tp = &fdn__transport_shm;
    l->ev = ev;
    l->ctx = ctx;
    l->opt = opt ? *opt : (struct fdn__tp_options){0};
    fdn__acceptor_start(&l->acceptor, w, fd, "shm", l->addr, take_accepted, listener_closed);
    *out = &l->base;
    return 0;
}

static int shm_listener_addr(struct fdn__tp_listener *tl, char *buf, size_t len)
{
    return fdn__acceptor_addr(&to_listener(tl)->acceptor, buf, len);
}

static void shm_listener_close(struct fdn__tp_listener *l)
{
    fdn__acceptor_close(&to_listener(l)->acceptor, -ECANCELED);
}

/* No FDN__TP_IO_URING: most events come from the shared rings, which each
 * connection polls through a worker poller it registers itself
 * (fdn__worker_add_poller), so the descriptor has no poll hook. */
const struct fdn__transport fdn__transport_shm = {
    .name = "shm",
    .scheme = "shm://",
    .caps = FDN__TP_RELIABLE | FDN__TP_REFS,
    .listen = shm_listen,
    .listener_addr = shm_listener_addr,
    .listener_close = shm_listener_close,
    .connect = shm_connect,
    .conn_start = shm_conn_start,
    .conn_close = shm_conn_close,
    .conn_peer_addr = shm_conn_peer_addr,
    .conn_peer_host = shm_conn_peer_host,
    .send = fdn__shm_send,
    .recv_pause = shm_recv_pause,
    .tx_pool = shm_tx_pool,
    .poll = NULL,
};
