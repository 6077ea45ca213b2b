/* The TCP transport, on the owner worker's io_uring.
 *
 * Every kernel operation is an SQE whose user_data is an fdn__io_op embedded
 * in the listener or connection; the worker calls its complete() for each
 * CQE, on the owner thread, from fdn_worker_progress(). Nothing here takes a
 * lock: a listener or connection is touched only by its owner thread.
 *
 * Listener: one multishot ACCEPT, re-armed when a CQE arrives without
 * IORING_CQE_F_MORE. Each accepted socket becomes a connection that does not
 * read until core calls conn_start().
 *
 * Receive: each connection registers a provided-buffer ring of its own
 * (unique buffer group id) and keeps one multishot RECV with
 * IOSQE_BUFFER_SELECT armed. A buffer goes back to the ring as soon as
 * on_recv() returns (core copies what it keeps). While core has paused the
 * connection, buffers that were already filled are held, in order, and
 * delivered on resume, so pausing loses nothing.
 *
 * Send: requests queue in FIFO order; exactly one SENDMSG (or SENDMSG_ZC)
 * is being written at a time, so bytes stay in order. One operation covers a
 * window of up to SEND_IOV_MAX iovecs that may span several requests of the
 * same kind (zero-copy or not). MSG_WAITALL makes the kernel finish the
 * whole window before completing, so a CQE normally means "all written".
 * A zero-copy operation keeps its slot until its notification CQE
 * (IORING_CQE_F_NOTIF): until then the pages may still be read, so no
 * request overlapping its bytes is reported. Reports go strictly in
 * submission order.
 *
 * Close (core's or a failure's): one ASYNC_CANCEL by fd cancels every
 * request of the socket; when every operation has delivered its final CQE
 * except zero-copy notifications, the socket is closed (abortively if
 * notifications are pending, so the kernel frees the queued pages and the
 * notifications come), and when those have come too, the buffer ring is
 * unregistered, unreported sends get on_sent(error), on_closed() runs and
 * the object is freed. Since close always submits that cancel, on_closed()
 * always comes from a completion, never from inside a call by core.
 *
 * Every SQE that will deliver a final CQE, and every registered buffer ring,
 * is counted with fdn__worker_io_begin/end, so the worker refuses to detach
 * (and destroy its ring) while a listener or connection still exists. */
#include "transport/tcp_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fdn/error.h>

#include "base/compiler.h"
#include "base/error.h"
#include "core/worker_internal.h"
#include "numa/memory.h"
#include "transport/acceptor.h"
#include "transport/send_queue.h"

#define DEFAULT_NOTSENT_LOWAT (128u << 10)
#define DEFAULT_RECV_BUFFER_BYTES (64u << 10)
#define DEFAULT_RECV_BUFFERS 16u
#define MAX_RECV_BUFFERS 32768u           /* the kernel's limit on a buffer ring */
#define MAX_RECV_BUFFER_BYTES (1u << 30)  /* a CQE's res must hold the length */
#define LISTEN_BACKLOG 1024

/* Requests at least this large with the zerocopy hint go out with
 * SENDMSG_ZC; below it, pinning pages and the extra notification CQE cost
 * more than the copy. */
#define ZEROCOPY_MIN_BYTES (16u << 10)

/* iovecs per send operation: core's batches (up to ~100 pieces) fit in one. */
#define SEND_IOV_MAX 128

/* Send operation slots: one being written plus zero-copy ones awaiting
 * their notification. When all are taken, sending waits for a notification. */
#define SEND_OPS 8

#define SEND_FLAGS (MSG_NOSIGNAL | MSG_WAITALL)

/* ---- Buffer group ids ---------------------------------------------------- */

/* Buffer group ids are 16 bits and must be unique within an io_uring. One
 * process-wide bitmap keeps them unique across every worker's ring; workers
 * on different threads allocate concurrently, hence the atomics. */
static _Atomic uint64_t bgid_used[65536 / 64];

static int bgid_alloc(void)
{
    for (size_t i = 0; i < FDN_ARRAY_SIZE(bgid_used); i++) {
        uint64_t word = atomic_load_explicit(&bgid_used[i], memory_order_relaxed);
        while (~word) {
            int bit = __builtin_ctzll(~word);
            if (atomic_compare_exchange_weak_explicit(&bgid_used[i], &word,
                                                      word | (UINT64_C(1) << bit),
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                return (int)(i * 64 + (size_t)bit);
        }
    }
    return -1;
}

static void bgid_free(int bgid)
{
    atomic_fetch_and_explicit(&bgid_used[bgid / 64], ~(UINT64_C(1) << (bgid % 64)),
                              memory_order_relaxed);
}

/* ---- Objects ------------------------------------------------------------- */

struct tcp_conn;
struct tcp_listener;

/* An operation of a connection: the SQE's user_data. */
struct conn_op {
    struct fdn__io_op io;
    struct tcp_conn *c;
};

/* A send operation. busy from submission to its final CQE; for zero-copy
 * that is the notification, and notif_pending marks the time between the
 * result and the notification. [start, end) are the stream bytes it wrote. */
struct send_op {
    struct fdn__io_op io;
    struct tcp_conn *c;
    uint64_t start, end;
    size_t bytes;          /* bytes asked for */
    bool busy;
    bool notif_pending;
};

/* A filled receive buffer held while core has paused the connection. */
struct held_buf {
    uint16_t bid;
    uint32_t len;
};

struct tcp_conn {
    struct fdn__tp_conn base;             /* first: what core holds */
    fdn_worker *w;
    int fd;                               /* -1 once closed */
    const struct fdn__tp_conn_events *ev; /* NULL until conn_start for accepted ones */
    void *ctx;
    bool connected;                       /* accepted, or the connect completed */
    bool started;                         /* ev is set: callbacks may be made */
    bool closing;
    int close_err;                        /* on_closed's argument */
    uint32_t ops;                         /* awaiting a final CQE, notifications included */
    uint32_t notifs;                      /* of those: zero-copy notifications only */
    struct sockaddr_storage peer;         /* the CONNECT SQE reads it until its CQE */
    socklen_t peer_len;

    /* Receive. */
    struct conn_op recv_op;
    bool recv_armed;                      /* the multishot RECV has not ended */
    bool recv_cancelling;                 /* a cancel for it is on its way */
    bool paused;                          /* core's wish */
    bool peer_eof;                        /* the peer closed; held data still to deliver */
    struct conn_op pause_cancel_op;
    bool pause_cancel_busy;               /* its CQE has not come yet */
    bool pause_cancel_again;              /* the recv re-armed meanwhile: cancel it after */
    struct io_uring_buf_ring *br;         /* ring entries, then the buffers; NULL when none */
    uint8_t *bufs;
    size_t recv_map_bytes;
    uint32_t nbufs, buf_bytes;
    int bgid;                             /* -1 when not registered */
    uint32_t held_head, held_count;

    /* Send: the requests not yet reported. head_start is the stream offset
     * of sq.head's first byte, written the number of bytes written so far. */
    struct fdn__send_queue sq;
    uint64_t head_start, written;
    bool send_busy;                       /* a send operation has not reported its result */
    struct send_op send_ops[SEND_OPS];
    struct msghdr msg;                    /* read by the kernel until the send's result */
    struct iovec iov[SEND_IOV_MAX];

    /* Control. */
    struct conn_op connect_op, close_op, kick_op;
    bool kick_armed;

    struct held_buf held[];               /* nbufs entries, a FIFO */
};

struct tcp_listener {
    struct fdn__tp_listener base;         /* first: what core holds */
    struct fdn__acceptor acceptor;
    const struct fdn__tp_listener_events *ev;
    void *ctx;
    struct fdn__tp_options opt;           /* resolved; for accepted connections */
    char addr[FDN__TCP_ADDR_MAX];
};

static inline struct tcp_conn *to_conn(struct fdn__tp_conn *c)
{
    return fdn__container_of(c, struct tcp_conn, base);
}

static inline struct tcp_listener *to_listener(struct fdn__tp_listener *l)
{
    return fdn__container_of(l, struct tcp_listener, base);
}

/* ---- Options ------------------------------------------------------------- */

static uint32_t round_up_pow2(uint32_t n)
{
    return n <= 1 ? 1 : UINT32_C(1) << (32 - __builtin_clz(n - 1));
}

static int resolve_options(const struct fdn__tp_options *opt, struct fdn__tp_options *out)
{
    *out = opt ? *opt : (struct fdn__tp_options){0};
    if (!out->notsent_lowat)
        out->notsent_lowat = DEFAULT_NOTSENT_LOWAT;
    if (!out->recv_buffer_bytes)
        out->recv_buffer_bytes = DEFAULT_RECV_BUFFER_BYTES;
    if (!out->recv_buffers)
        out->recv_buffers = DEFAULT_RECV_BUFFERS;
    if (out->recv_buffer_bytes > MAX_RECV_BUFFER_BYTES)
        return FDN_ERR(-EINVAL, "TCP recv_buffer_bytes %u is above %u", out->recv_buffer_bytes,
                       MAX_RECV_BUFFER_BYTES);
    if (out->recv_buffers > MAX_RECV_BUFFERS)
        return FDN_ERR(-EINVAL, "TCP recv_buffers %u is above %u", out->recv_buffers,
                       MAX_RECV_BUFFERS);
    out->recv_buffers = round_up_pow2(out->recv_buffers); /* a buffer ring's size */
    return 0;
}

/* Calls that create objects must come from the worker's owner thread, which
 * must have the worker's io_uring. */
static int check_worker(fdn_worker *w)
{
    if (fdn_worker_current() != w)
        return FDN_ERR(-EPERM, "TCP: worker %d used from a thread that does not own it",
                       fdn_worker_index(w));
    if (!fdn__worker_ring(w))
        return FDN_ERR(-EINVAL, "TCP: worker %d has no io_uring (not attached?)",
                       fdn_worker_index(w));
    return 0;
}

/* ---- Connection: operations and the close protocol ---------------------- */

/* Binds sqe to op and counts it until its final CQE (conn_op_end). */
static void conn_op_begin(struct tcp_conn *c, struct io_uring_sqe *sqe, struct fdn__io_op *op)
{
    io_uring_sqe_set_data(sqe, op);
    c->ops++;
    fdn__worker_io_begin(c->w);
}

static void conn_maybe_finish(struct tcp_conn *c);

/* An operation delivered its final CQE. May free c: the caller must not
 * touch c afterwards. */
static void conn_op_end(struct tcp_conn *c)
{
    c->ops--;
    fdn__worker_io_end(c->w);
    conn_maybe_finish(c);
}

/* Starts closing with err (on_closed's argument) unless already closing. The
 * cancel's CQE guarantees a completion that drives the rest, even when
 * nothing else is in flight. */
static void conn_begin_close(struct tcp_conn *c, int err)
{
    if (c->closing)
        return;
    c->closing = true;
    c->close_err = err;
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
    conn_op_begin(c, sqe, &c->close_op.io);
}

static void close_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    (void)cqe; /* the number cancelled, or -ENOENT: nothing to do either way */
    conn_op_end(fdn__container_of(op, struct conn_op, io)->c);
}

/* Closes the socket once only zero-copy notifications are outstanding. With
 * notifications pending, bytes may still sit unacknowledged in the socket;
 * an abortive close (linger 0) frees them, and with them the pages, so the
 * notifications come without waiting for a peer that may not be reading. */
static void conn_close_socket(struct tcp_conn *c)
{
    if (c->notifs) {
        struct linger abort_close = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &abort_close, sizeof abort_close);
    }
    close(c->fd);
    c->fd = -1;
}

static void conn_free_recv_buffers(struct tcp_conn *c)
{
    if (c->bgid >= 0) {
        struct io_uring *ring = fdn__worker_ring(c->w);
        if (ring)
            io_uring_unregister_buf_ring(ring, c->bgid);
        bgid_free(c->bgid);
        c->bgid = -1;
        fdn__worker_io_end(c->w);
    }
    if (c->br)
        fdn__numa_free(c->br, c->recv_map_bytes);
    c->br = NULL;
}

/* The last step: nothing is in flight. Reports what is left and frees c. */
static void conn_finish(struct tcp_conn *c)
{
    conn_free_recv_buffers(c);
    int send_err = c->close_err < 0 ? c->close_err : -ECANCELED;
    while (c->sq.head) {
        struct fdn__tp_send *s = fdn__send_queue_pop(&c->sq);
        if (c->started)
            c->ev->on_sent(c->ctx, s, send_err);
    }
    if (c->started)
        c->ev->on_closed(c->ctx, c->close_err);
    free(c);
}

static void conn_maybe_finish(struct tcp_conn *c)
{
    if (!c->closing || c->ops > c->notifs)
        return;
    if (c->fd >= 0)
        conn_close_socket(c);
    if (c->ops == 0)
        conn_finish(c);
}

/* A NOP whose completion runs deferred work (held data after a resume,
 * zero-length sends) from fdn_worker_progress(), since callbacks must never
 * run inside a call made by core. */
static void conn_kick(struct tcp_conn *c)
{
    if (c->kick_armed || c->closing)
        return;
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    io_uring_prep_nop(sqe);
    conn_op_begin(c, sqe, &c->kick_op.io);
    c->kick_armed = true;
}

/* ---- Connection: receive ------------------------------------------------- */

static uint8_t *recv_buf(struct tcp_conn *c, uint16_t bid)
{
    return c->bufs + (size_t)bid * c->buf_bytes;
}

/* Gives buffer bid back to the kernel. */
static void recycle_buf(struct tcp_conn *c, uint16_t bid)
{
    io_uring_buf_ring_add(c->br, recv_buf(c, bid), c->buf_bytes, bid,
                          io_uring_buf_ring_mask(c->nbufs), 0);
    io_uring_buf_ring_advance(c->br, 1);
}

static void arm_recv(struct tcp_conn *c)
{
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = (uint16_t)c->bgid;
    conn_op_begin(c, sqe, &c->recv_op.io);
    c->recv_armed = true;
    c->recv_cancelling = false;
}

/* Arms the receive if core wants data and nothing stands in the way. Held
 * buffers go first: the kick delivers them and then arms. */
static void recv_resume_if_wanted(struct tcp_conn *c)
{
    if (c->closing || c->paused || c->peer_eof || !c->started || !c->connected ||
        c->recv_armed)
        return;
    if (c->held_count)
        conn_kick(c);
    else
        arm_recv(c);
}

/* Cancels the armed receive (pause). One cancel SQE at a time: if the
 * previous one's CQE has not come, it is sent again from there. */
static void cancel_recv(struct tcp_conn *c)
{
    if (!c->recv_armed || c->recv_cancelling)
        return;
    if (c->pause_cancel_busy) {
        c->pause_cancel_again = true;
        return;
    }
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    io_uring_prep_cancel(sqe, &c->recv_op.io, 0);
    conn_op_begin(c, sqe, &c->pause_cancel_op.io);
    c->pause_cancel_busy = true;
    c->recv_cancelling = true;
}

static void pause_cancel_complete(fdn_worker *w, struct fdn__io_op *op,
                                  const struct io_uring_cqe *cqe)
{
    (void)w;
    (void)cqe; /* -ENOENT when the receive had ended on its own: fine */
    struct tcp_conn *c = fdn__container_of(op, struct conn_op, io)->c;
    c->pause_cancel_busy = false;
    if (c->pause_cancel_again) {
        c->pause_cancel_again = false;
        if (c->paused && !c->closing)
            cancel_recv(c);
    }
    conn_op_end(c);
}

/* Hands one buffer to core, then back to the kernel. */
static void deliver(struct tcp_conn *c, uint16_t bid, uint32_t len)
{
    int rc = c->ev->on_recv(c->ctx, recv_buf(c, bid), len);
    recycle_buf(c, bid);
    if (rc < 0)
        conn_begin_close(c, rc);
}

static void hold(struct tcp_conn *c, uint16_t bid, uint32_t len)
{
    uint32_t slot = (c->held_head + c->held_count) & (c->nbufs - 1);
    c->held[slot] = (struct held_buf){.bid = bid, .len = len};
    c->held_count++;
}

/* Delivers held buffers in arrival order while core keeps wanting them. */
static void deliver_held(struct tcp_conn *c)
{
    while (c->held_count && !c->paused && !c->closing) {
        struct held_buf h = c->held[c->held_head];
        c->held_head = (c->held_head + 1) & (c->nbufs - 1);
        c->held_count--;
        deliver(c, h.bid, h.len);
    }
}

/* Data arrived. Nothing is delivered once closing has begun; while paused,
 * or while older data is still held, it queues behind. */
static void take_data(struct tcp_conn *c, uint16_t bid, uint32_t len)
{
    if (c->closing)
        recycle_buf(c, bid);
    else if (c->paused || c->held_count)
        hold(c, bid, len);
    else
        deliver(c, bid, len);
}

/* The peer closed its side. Held data is delivered first (on resume). */
static void on_peer_eof(struct tcp_conn *c)
{
    if (c->closing)
        return;
    if (c->held_count)
        c->peer_eof = true;
    else
        conn_begin_close(c, 0);
}

static void recv_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct tcp_conn *c = fdn__container_of(op, struct conn_op, io)->c;
    int res = cqe->res;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        if (res > 0)
            take_data(c, bid, (uint32_t)res);
        else
            recycle_buf(c, bid);
    }
    if (res == 0)
        on_peer_eof(c);
    else if (res < 0 && res != -ENOBUFS && res != -ECANCELED && !c->closing)
        conn_begin_close(c, res);
    /* -ENOBUFS: every buffer is held (paused) or not yet back; the re-arm
     * below (or the resume) starts again. */
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    c->recv_armed = false;
    c->recv_cancelling = false;
    recv_resume_if_wanted(c);
    conn_op_end(c);
}

/* ---- Connection: send ---------------------------------------------------- */

static bool is_zerocopy(const struct fdn__tp_send *s)
{
    return s->zerocopy && s->len >= ZEROCOPY_MIN_BYTES;
}

static struct send_op *free_send_op(struct tcp_conn *c)
{
    for (int i = 0; i < SEND_OPS; i++)
        if (!c->send_ops[i].busy)
            return &c->send_ops[i];
    return NULL;
}

/* The first request from s on with bytes not yet written, or NULL. */
static struct fdn__tp_send *first_unwritten(struct fdn__tp_send *s)
{
    while (s && s->tp_done == s->len)
        s = s->tp_next;
    return s;
}

/* Copies the window of unwritten iovecs, from the cursor on, into c->iov:
 * requests of the cursor's kind (zero-copy or not), up to SEND_IOV_MAX
 * pieces. Returns the bytes in the window. */
static size_t gather_window(struct tcp_conn *c, bool zerocopy, int *niov)
{
    size_t bytes = 0, skip = c->sq.cursor->tp_done;
    int n = 0;
    for (struct fdn__tp_send *s = c->sq.cursor; s && n < SEND_IOV_MAX; s = s->tp_next) {
        if (s->len == 0)
            continue;
        if (is_zerocopy(s) != zerocopy)
            break;
        for (int i = 0; i < s->iovcnt && n < SEND_IOV_MAX; i++) {
            size_t piece = s->iov[i].iov_len;
            if (skip >= piece) {
                skip -= piece;
                continue;
            }
            c->iov[n++] = (struct iovec){
                .iov_base = (uint8_t *)s->iov[i].iov_base + skip,
                .iov_len = piece - skip,
            };
            bytes += piece - skip;
            skip = 0;
        }
    }
    *niov = n;
    return bytes;
}

/* Starts the next send operation if none is being written and a slot is
 * free. Makes no callback, so core's calls may use it. */
static void issue_send(struct tcp_conn *c)
{
    if (c->send_busy || !c->connected || c->closing || !c->sq.cursor)
        return;
    struct send_op *op = free_send_op(c);
    if (!op)
        return; /* every slot awaits a notification; the next one calls us */
    bool zerocopy = is_zerocopy(c->sq.cursor);
    int niov;
    size_t bytes = gather_window(c, zerocopy, &niov);
    c->msg = (struct msghdr){.msg_iov = c->iov, .msg_iovlen = (size_t)niov};
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    if (zerocopy)
        io_uring_prep_sendmsg_zc(sqe, c->fd, &c->msg, SEND_FLAGS);
    else
        io_uring_prep_sendmsg(sqe, c->fd, &c->msg, SEND_FLAGS);
    *op = (struct send_op){.io = op->io, .c = c, .bytes = bytes, .busy = true,
                           .start = c->written, .end = c->written};
    c->send_busy = true;
    conn_op_begin(c, sqe, &op->io);
}

/* n more bytes reached the kernel: moves the cursor along. */
static void advance_written(struct tcp_conn *c, size_t n)
{
    c->written += n;
    while (n) {
        struct fdn__tp_send *s = c->sq.cursor;
        size_t take = s->len - s->tp_done < n ? s->len - s->tp_done : n;
        s->tp_done += take;
        n -= take;
        if (s->tp_done == s->len)
            c->sq.cursor = first_unwritten(s->tp_next);
    }
}

/* True while a zero-copy operation that wrote some of the stream bytes
 * [start, end) has not had its notification: the kernel may still read them. */
static bool pages_in_kernel(const struct tcp_conn *c, uint64_t start, uint64_t end)
{
    for (int i = 0; i < SEND_OPS; i++) {
        const struct send_op *op = &c->send_ops[i];
        if (op->notif_pending && op->start < end && op->end > start)
            return true;
    }
    return false;
}

/* Reports finished requests, oldest first, stopping at the first that is
 * not fully written or whose pages the kernel may still read. on_sent() may
 * queue more sends or close: both are safe here. */
static void report_sent(struct tcp_conn *c)
{
    while (c->sq.head && c->connected) {
        struct fdn__tp_send *s = c->sq.head;
        uint64_t end = c->head_start + s->len;
        if (s->tp_done < s->len || pages_in_kernel(c, c->head_start, end))
            return;
        fdn__send_queue_pop(&c->sq);
        c->head_start = end;
        c->ev->on_sent(c->ctx, s, 0);
    }
}

static void on_send_result(struct tcp_conn *c, struct send_op *op, int res)
{
    if (res > 0) {
        advance_written(c, (size_t)res);
        op->end = c->written;
    }
    if (c->closing)
        return; /* cancelled or cut short by the close: nothing to report */
    if (res < 0)
        conn_begin_close(c, res);
    else if (res == 0 && op->bytes > 0)
        /* MSG_WAITALL only stops short on an error; 0 bytes would loop. */
        conn_begin_close(c, -EPIPE);
}

static void send_complete(fdn_worker *w, struct fdn__io_op *io, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct send_op *op = fdn__container_of(io, struct send_op, io);
    struct tcp_conn *c = op->c;
    bool final = !(cqe->flags & IORING_CQE_F_MORE);
    if (cqe->flags & IORING_CQE_F_NOTIF) {
        op->notif_pending = false;
        c->notifs--;
    } else {
        c->send_busy = false;
        on_send_result(c, op, cqe->res);
        if (!final) {
            op->notif_pending = true;
            c->notifs++;
            conn_maybe_finish(c); /* a close may now be waiting only for notifications */
        }
    }
    if (final)
        op->busy = false;
    report_sent(c);
    issue_send(c);
    if (final)
        conn_op_end(c);
}

/* ---- Connection: set-up -------------------------------------------------- */

static int set_socket_options(int fd, const struct fdn__tp_options *opt)
{
    int one = 1;
    int lowat = opt->notsent_lowat > INT32_MAX ? INT32_MAX : (int)opt->notsent_lowat;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        return FDN_ERR(-errno, "TCP_NODELAY: %s", fdn_strerror(errno));
    if (setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat) < 0)
        return FDN_ERR(-errno, "TCP_NOTSENT_LOWAT: %s", fdn_strerror(errno));
    return 0;
}

/* Maps the buffer ring and its buffers on the worker's NUMA node and
 * registers them under a fresh buffer group id. */
static int setup_recv_buffers(struct tcp_conn *c, const struct fdn__tp_options *opt)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t ring_bytes = fdn__align_up(opt->recv_buffers * sizeof(struct io_uring_buf), page);
    c->nbufs = opt->recv_buffers;
    c->buf_bytes = opt->recv_buffer_bytes;
    c->recv_map_bytes = ring_bytes + (size_t)c->nbufs * c->buf_bytes;
    void *mem = fdn__numa_alloc(c->recv_map_bytes, fdn_worker_numa_node(c->w), NULL);
    if (!mem)
        return FDN_ERR(-ENOMEM, "TCP: cannot map %zu bytes of receive buffers",
                       c->recv_map_bytes);
    c->br = mem;
    c->bufs = (uint8_t *)mem + ring_bytes;
    int bgid = bgid_alloc();
    if (bgid < 0)
        return FDN_ERR(-ENOBUFS, "TCP: all 65536 buffer group ids are in use");
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)mem,
        .ring_entries = c->nbufs,
        .bgid = (uint16_t)bgid,
    };
    int rc = io_uring_register_buf_ring(fdn__worker_ring(c->w), &reg, 0);
    if (rc < 0) {
        bgid_free(bgid);
        return FDN_ERR(rc, "TCP: io_uring_register_buf_ring: %s", fdn_strerror(rc));
    }
    /* The registration lives in the worker's ring like an operation in
     * flight: counting it makes detach (which destroys the ring) wait for
     * every connection, also paused or never-started ones with no SQE out. */
    fdn__worker_io_begin(c->w);
    c->bgid = bgid;
    io_uring_buf_ring_init(c->br);
    int mask = io_uring_buf_ring_mask(c->nbufs);
    for (uint32_t i = 0; i < c->nbufs; i++)
        io_uring_buf_ring_add(c->br, recv_buf(c, (uint16_t)i), c->buf_bytes, (uint16_t)i, mask,
                              (int)i);
    io_uring_buf_ring_advance(c->br, (int)c->nbufs);
    return 0;
}

static void connect_complete(fdn_worker *w, struct fdn__io_op *op,
                             const struct io_uring_cqe *cqe);
static void kick_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe);

static void conn_init_ops(struct tcp_conn *c)
{
    c->recv_op = (struct conn_op){.io.complete = recv_complete, .c = c};
    c->pause_cancel_op = (struct conn_op){.io.complete = pause_cancel_complete, .c = c};
    c->close_op = (struct conn_op){.io.complete = close_complete, .c = c};
    c->connect_op = (struct conn_op){.io.complete = connect_complete, .c = c};
    c->kick_op = (struct conn_op){.io.complete = kick_complete, .c = c};
    for (int i = 0; i < SEND_OPS; i++)
        c->send_ops[i] = (struct send_op){.io.complete = send_complete, .c = c};
}

/* Frees a connection that never submitted anything (set-up failed). The
 * socket stays the caller's. */
static void conn_destroy_unused(struct tcp_conn *c)
{
    conn_free_recv_buffers(c);
    free(c);
}

/* A connection on socket fd, with its options set and its receive buffers
 * registered, nothing submitted. On failure fd stays the caller's. */
static int conn_create(fdn_worker *w, int fd, const struct fdn__tp_options *opt,
                       struct tcp_conn **out)
{
    struct tcp_conn *c = calloc(1, sizeof *c + opt->recv_buffers * sizeof(struct held_buf));
    if (!c)
        return FDN_ERR(-ENOMEM, "TCP: no memory for a connection");
    c->base.tp = &fdn__transport_tcp;
    c->w = w;
    c->fd = fd;
    c->bgid = -1;
    conn_init_ops(c);
    int rc = set_socket_options(fd, opt);
    if (rc == 0)
        rc = setup_recv_buffers(c, opt);
    if (rc < 0) {
        conn_destroy_unused(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- Connection: outbound ------------------------------------------------ */

static void connect_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct tcp_conn *c = fdn__container_of(op, struct conn_op, io)->c;
    int res = cqe->res;
    /* A connect that core closed meanwhile reports nothing but on_closed. */
    if (!c->closing && res < 0) {
        /* Closing first: a conn_close() from the callback is then a no-op and
         * on_closed carries the real reason. */
        conn_begin_close(c, res);
        c->ev->on_connected(c->ctx, res);
    } else if (!c->closing) {
        c->connected = true;
        c->ev->on_connected(c->ctx, 0);
        recv_resume_if_wanted(c);
        report_sent(c);
        issue_send(c);
    }
    conn_op_end(c);
}

static int open_socket(int family)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return FDN_ERR(-errno, "TCP socket(%s): %s", family == AF_INET6 ? "AF_INET6" : "AF_INET",
                       fdn_strerror(errno));
    return fd;
}

static int tcp_connect(fdn_worker *w, const char *addr, const struct fdn__tp_options *opt,
                       const struct fdn__tp_conn_events *ev, void *ctx, struct fdn__tp_conn **out)
{
    struct fdn__tp_options o;
    struct sockaddr_storage sa;
    socklen_t sa_len;
    int rc = check_worker(w);
    if (rc == 0)
        rc = resolve_options(opt, &o);
    if (rc == 0)
        rc = fdn__tcp_parse_addr(addr, false, &sa, &sa_len);
    if (rc < 0)
        return rc;
    int fd = open_socket(sa.ss_family);
    if (fd < 0)
        return fd;
    struct tcp_conn *c;
    rc = conn_create(w, fd, &o, &c);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    c->peer = sa;
    c->peer_len = sa_len;
    c->ev = ev;
    c->ctx = ctx;
    c->started = true;
    struct io_uring_sqe *sqe = fdn__worker_sqe(w);
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&c->peer, c->peer_len);
    conn_op_begin(c, sqe, &c->connect_op.io);
    *out = &c->base;
    return 0;
}

/* ---- Connection: ops ----------------------------------------------------- */

static void tcp_conn_start(struct fdn__tp_conn *conn, const struct fdn__tp_conn_events *ev,
                           void *ctx)
{
    struct tcp_conn *c = to_conn(conn);
    c->ev = ev;
    c->ctx = ctx;
    c->started = true;
    recv_resume_if_wanted(c);
}

static void tcp_conn_close(struct fdn__tp_conn *conn)
{
    conn_begin_close(to_conn(conn), -ECANCELED);
}

static int tcp_conn_peer_addr(struct fdn__tp_conn *conn, char *buf, size_t len)
{
    return fdn__tcp_format_addr((const struct sockaddr *)&to_conn(conn)->peer, buf, len);
}

static int tcp_conn_peer_host(struct fdn__tp_conn *conn, char *buf, size_t len)
{
    return fdn__tcp_format_host((const struct sockaddr *)&to_conn(conn)->peer, buf, len);
}

static int tcp_send(struct fdn__tp_conn *conn, struct fdn__tp_send *s)
{
    struct tcp_conn *c = to_conn(conn);
    if (c->closing)
        return -EPIPE;
    if (!c->started)
        return FDN_ERR(-ENOTCONN, "TCP send on an accepted connection before conn_start");
    int rc = fdn__send_queue_push(&c->sq, s, "TCP");
    if (rc < 0)
        return rc;
    if (s->len == 0)
        conn_kick(c); /* nothing to write: reported, in order, from the kick */
    else
        issue_send(c);
    return 0;
}

static void tcp_recv_pause(struct fdn__tp_conn *conn, bool paused)
{
    struct tcp_conn *c = to_conn(conn);
    c->paused = paused;
    if (c->closing)
        return;
    if (paused)
        cancel_recv(c);
    else if (c->held_count && c->started)
        conn_kick(c);
    else
        recv_resume_if_wanted(c);
}

/* The kick: held data (after a resume), the close it may have delayed, then
 * sends that were reportable without any operation completing. */
static void kick_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    (void)cqe;
    struct tcp_conn *c = fdn__container_of(op, struct conn_op, io)->c;
    c->kick_armed = false;
    deliver_held(c);
    if (c->peer_eof && !c->held_count)
        conn_begin_close(c, 0);
    recv_resume_if_wanted(c);
    report_sent(c);
    issue_send(c);
    conn_op_end(c);
}

/* ---- Listener ------------------------------------------------------------ */

static struct tcp_listener *listener_of(struct fdn__acceptor *a)
{
    return fdn__container_of(a, struct tcp_listener, acceptor);
}

/* A connection arrived. One that cannot be set up (no memory, no buffer
 * group id) or is already gone (no peer address) is refused: closed before
 * core sees it. */
static void take_accepted(struct fdn__acceptor *a, int fd)
{
    struct tcp_listener *l = listener_of(a);
    struct tcp_conn *c;
    if (conn_create(a->w, fd, &l->opt, &c) < 0) {
        close(fd);
        return;
    }
    c->connected = true;
    c->peer_len = sizeof c->peer;
    if (getpeername(fd, (struct sockaddr *)&c->peer, &c->peer_len) < 0) {
        conn_destroy_unused(c);
        close(fd);
        return;
    }
    l->ev->on_accept(l->ctx, &c->base);
}

static void listener_closed(struct fdn__acceptor *a, int err)
{
    struct tcp_listener *l = listener_of(a);
    l->ev->on_closed(l->ctx, err);
    free(l);
}

/* A bound, listening socket for sa. */
static int open_listen_socket(const struct sockaddr_storage *sa, socklen_t sa_len,
                              const char *addr)
{
    int fd = open_socket(sa->ss_family);
    if (fd < 0)
        return fd;
    int one = 1, rc = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        rc = FDN_ERR(-errno, "TCP SO_REUSEADDR: %s", fdn_strerror(errno));
    else if (bind(fd, (const struct sockaddr *)sa, sa_len) < 0)
        rc = FDN_ERR(-errno, "TCP bind %s: %s", addr, fdn_strerror(errno));
    else if (listen(fd, LISTEN_BACKLOG) < 0)
        rc = FDN_ERR(-errno, "TCP listen %s: %s", addr, fdn_strerror(errno));
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static int format_bound_addr(int fd, char *buf, size_t len)
{
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &bound_len) < 0)
        return FDN_ERR(-errno, "TCP getsockname: %s", fdn_strerror(errno));
    return fdn__tcp_format_addr((const struct sockaddr *)&bound, buf, len);
}

static int tcp_listen(fdn_worker *w, const char *addr, const struct fdn__tp_options *opt,
                      const struct fdn__tp_listener_events *ev, void *ctx,
                      struct fdn__tp_listener **out)
{
    struct fdn__tp_options o;
    struct sockaddr_storage sa;
    socklen_t sa_len;
    int rc = check_worker(w);
    if (rc == 0)
        rc = resolve_options(opt, &o);
    if (rc == 0)
        rc = fdn__tcp_parse_addr(addr, true, &sa, &sa_len);
    if (rc < 0)
        return rc;
    struct tcp_listener *l = calloc(1, sizeof *l);
    if (!l)
        return FDN_ERR(-ENOMEM, "TCP: no memory for a listener");
    int fd = open_listen_socket(&sa, sa_len, addr);
    if (fd >= 0 && (rc = format_bound_addr(fd, l->addr, sizeof l->addr)) < 0)
        close(fd);
    if (fd < 0 || rc < 0) {
        free(l);
        return fd < 0 ? fd : rc;
    }
    l->base.tp = &fdn__transport_tcp;
    l->ev = ev;
    l->ctx = ctx;
    l->opt = o;
    fdn__acceptor_start(&l->acceptor, w, fd, "TCP", l->addr, take_accepted, listener_closed);
    *out = &l->base;
    return 0;
}

static int tcp_listener_addr(struct fdn__tp_listener *tl, char *buf, size_t len)
{
    return fdn__acceptor_addr(&to_listener(tl)->acceptor, buf, len);
}

static void tcp_listener_close(struct fdn__tp_listener *l)
{
    fdn__acceptor_close(&to_listener(l)->acceptor, -ECANCELED);
}

const struct fdn__transport fdn__transport_tcp = {
    .name = "tcp",
    .scheme = "tcp://",
    .caps = FDN__TP_RELIABLE | FDN__TP_ZEROCOPY | FDN__TP_IO_URING,
    .listen = tcp_listen,
    .listener_addr = tcp_listener_addr,
    .listener_close = tcp_listener_close,
    .connect = tcp_connect,
    .conn_start = tcp_conn_start,
    .conn_close = tcp_conn_close,
    .conn_peer_addr = tcp_conn_peer_addr,
    .conn_peer_host = tcp_conn_peer_host,
    .send = tcp_send,
    .recv_pause = tcp_recv_pause,
    .poll = NULL,
};
