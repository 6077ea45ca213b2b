/* The shared-memory transport's data path (shm.c sets connections up and
 * ends them; shm_conn.h is what the two share).
 *
 * Data path. The rings carry records (shm_ring.h): a send's ranges that lie
 * in our pool, and whose message core named (fdn__tp_send.iov_msg), go as
 * REF records (offset, length, and a slot naming the loan), and we keep a
 * reference on the message until the peer's RELEASE of that slot; any
 * other range is COPIED into BYTES records, consecutive ranges into one. A
 * flush whose bytes all fit the express box, none to be lent, goes there
 * instead while the box is free (shm_ring.h, "The box": one pair of lines
 * reused, where the ring would take fresh ones). A send is reported once
 * its bytes are in the ring or the box: a loan outlives it.
 * Receives hand core BYTES payloads straight from the ring, at most two
 * contiguous pieces per record (the wrap), which core copies; a REF becomes
 * a borrowed message (fdn_msg_is_borrowed: local metadata, payload in the
 * peer's pool as mapped here, read-only) handed to core's on_recv_msg,
 * which keeps it or copies from it. Its last free, on any thread, queues
 * the slot on the loans' lock-free list; the poller turns those into
 * RELEASE records. A free on another thread while this worker sleeps is
 * released when it next wakes. FDN__TP_ZEROCOPY (the kernel's send path)
 * is not claimed: there is no kernel copy to avoid.
 *
 * Trust. Every record is read once and checked before use (shm_ring.h); a
 * REF's slot must be free on our side and its range inside the peer's pool
 * as set up; a RELEASE must name a slot we lent. Anything else closes the
 * connection with -EBADMSG, a detail in fdn_errmsg() and a count
 * (bad_records), never a fault. The borrowed payload itself is the peer's:
 * it could change it while core or a handler reads it, as it could change
 * bytes in the ring, and both are validated as bytes from a socket are.
 *
 * Polling and wake-ups. Each connection registers a poller with its worker
 * (fdn__worker_add_poller): every progress pass reads the header word at the
 * inbound ring's head and the inbound box's word (shm_ring.h), and the
 * outbound head only when the space it knew of runs out, so while both
 * sides are busy no system call is made.
 * Before its worker blocks, a connection publishes "sleeping" in the
 * inbound ring (and "space wanted" in the outbound one if sends wait for
 * room), issues a full fence and re-checks; a producer publishes its records,
 * issues a full fence and then reads the flag, and only if it is set (and
 * it wins the exchange that clears it) writes the consumer's eventfd. This
 * is the Dekker handshake of core/worker.c: one of the two always sees the
 * other's write. The eventfd has a READ armed on the consumer's io_uring,
 * whose completion ends the worker's wait.
 *
 * A connection's poller and wake-up read start when its set-up is done
 * (fdn__shm_data_start) and go with the close protocol (shm.c). */
#include "transport/shm_conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <fdn/error.h>

#include "base/error.h"

/* ---- Broken rings and records -------------------------------------------- */

/* A ring position that cannot be right: the peer is broken or hostile.
 * what names the position, [lo, hi] the range it had to be in. */
static void ring_corrupt(struct shm_conn *c, const char *what, uint64_t lo, uint64_t hi)
{
    SHM_COUNT(bad_rings, 1);
    fdn__shm_begin_close(c, FDN_ERR(-EBADMSG, "shm: peer pid %d wrote an impossible %s into "
                                    "the shared ring (it must lie in %llu..%llu, ring of %u "
                                    "bytes); connection closed", (int)c->peer_pid, what,
                                    (unsigned long long)lo, (unsigned long long)hi, c->ring_bytes));
}

/* A record that cannot be right (shm_ring.h lists the rules). */
__attribute__((format(printf, 2, 3)))
static void record_corrupt(struct shm_conn *c, const char *fmt, ...)
{
    char why[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    SHM_COUNT(bad_records, 1);
    fdn__shm_begin_close(c, FDN_ERR(-EBADMSG, "shm: peer pid %d wrote an impossible record "
                                    "into the shared ring: %s; connection closed",
                                    (int)c->peer_pid, why));
}

static void tx_corrupt(struct shm_conn *c)
{
    ring_corrupt(c, "head", c->tx.known_head, c->tx.tail);
}

/* ---- Connection: wake-ups ------------------------------------------------ */

static void signal_peer(struct shm_conn *c)
{
    uint64_t one = 1;
    /* EAGAIN: the counter is saturated, a wake-up is pending anyway. */
    ssize_t rc = write(c->peer_wake_fd, &one, sizeof one);
    (void)rc;
    SHM_COUNT(wakeups_sent, 1);
}

/* The producer half of the handshake: called after publishing. Wakes the
 * peer if it published that it sleeps on `flag`, and wins clearing it. */
static void wake_peer_if_waiting(struct shm_conn *c, _Atomic uint32_t *flag)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(flag, memory_order_relaxed) &&
        atomic_exchange_explicit(flag, 0, memory_order_acq_rel))
        signal_peer(c);
}

static void arm_wake_read(struct shm_conn *c)
{
    struct io_uring_sqe *sqe = fdn__worker_sqe(c->w);
    io_uring_prep_read(sqe, c->wake_fd, &c->wake_buf, sizeof c->wake_buf, 0);
    fdn__shm_op_begin(c, sqe, &c->wake_op, true);
    c->wake_armed = true;
}

/* The peer woke us: the CQE itself ended the worker's wait; the poller
 * does the work. Read again for the next one. */
static void wake_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct conn_op *cop = fdn__container_of(op, struct conn_op, io);
    bool was_passive = cop->passive;
    struct shm_conn *c = cop->c;
    c->wake_armed = false;
    if (!c->closing && cqe->res < 0 && cqe->res != -EINTR && cqe->res != -EAGAIN)
        fdn__shm_begin_close(c, FDN_ERR(cqe->res, "shm: reading the wake-up eventfd: %s",
                                        fdn_strerror(cqe->res)));
    else if (!c->closing)
        arm_wake_read(c);
    fdn__shm_op_end(c, was_passive);
}

/* ---- Connection: the poller ---------------------------------------------- */

/* A REF: the peer lends us [offset, offset + len) of its pool under slot.
 * Checked against the pool and our loans before anything is touched, then
 * handed to core as a borrowed message (or its bytes, for a core that does
 * not take messages). */
static int take_ref(struct shm_conn *c, const struct fdn__shm_rec *r)
{
    struct shm_loans *in = c->in;
    if (!fdn__shm_ref_ok(r, in->bytes, c->borrowed)) {
        if (r->slot >= FDN__SHM_SLOTS || c->borrowed[r->slot])
            record_corrupt(c, "REF with slot %u, %s", r->slot,
                           r->slot >= FDN__SHM_SLOTS ? "out of range" : "already lent to us");
        else
            record_corrupt(c, "REF of [%u, +%u) outside the peer's %zu-byte pool", r->offset,
                           r->len, in->bytes);
        return -EBADMSG;
    }
    fdn__shm_rx_consume(&c->rx, r->rec_bytes);
    uint8_t *data = (uint8_t *)(uintptr_t)(in->map + r->offset);
    fdn_msg *m = &in->msgs[r->slot].msg;
    *m = (fdn_msg){.data = data, .len = r->len, .class_index = FDN_MSG_BORROWED, .start = data,
                   .end = data + r->len, .pool = in->meta, .refs = 1};
    c->borrowed[r->slot] = true;
    __atomic_fetch_add(&in->refs, 1, __ATOMIC_RELAXED);
    SHM_COUNT(refs_received, 1);
    SHM_COUNT(borrowed, 1);
    if (c->ev->on_recv_msg)
        return c->ev->on_recv_msg(c->ctx, m);
    int rc = c->ev->on_recv(c->ctx, m->data, m->len);
    fdn_msg_free(m);
    return rc;
}

/* A RELEASE: the peer is done with our buffer of that slot. */
static int take_release(struct shm_conn *c, const struct fdn__shm_rec *r)
{
    if (!fdn__shm_release_ok(r, c->lent_flag)) {
        record_corrupt(c, "RELEASE of slot %u, %s", r->slot,
                       r->slot >= FDN__SHM_SLOTS ? "out of range" : "not lent");
        return -EBADMSG;
    }
    fdn__shm_rx_consume(&c->rx, r->rec_bytes);
    fdn_msg *m = c->lent[r->slot];
    c->lent[r->slot] = NULL;
    c->lent_flag[r->slot] = false;
    c->free_slots[c->num_free_slots++] = r->slot;
    SHM_COUNT(releases_received, 1);
    SHM_COUNT(loans_out, -1);
    fdn_msg_free(m);
    return 0;
}

/* Loans core has let go of since the last pass: their RELEASE records wait
 * to be written (write_releases), and each slot is the peer's to lend again
 * once its RELEASE is. */
static void collect_returned(struct shm_conn *c)
{
    if (!c->in || !__atomic_load_n(&c->in->returned, __ATOMIC_RELAXED))
        return;
    fdn_msg *m = __atomic_exchange_n(&c->in->returned, NULL, __ATOMIC_ACQUIRE);
    while (m) {
        fdn_msg *next = m->next;
        uint32_t slot = (uint32_t)((struct fdn__borrowed_msg *)(void *)m - c->in->msgs);
        c->releases[c->num_releases++] = slot;
        m = next;
    }
}

/* A box message: taken (its acknowledgement of our box checked, its bytes
 * copied out: the peer may write the box again once it is taken), then
 * handed to core. */
static int take_box(struct shm_conn *c, const struct fdn__shm_box_msg *b, uint64_t *budget)
{
    uint8_t bytes[FDN__SHM_BOX_BYTES];
    if (fdn__shm_rx_box_take(&c->rx, &c->tx, b, bytes) < 0) {
        record_corrupt(c, "a box message acknowledges our box message %u; we wrote %u",
                       b->taken, c->tx.box_sent);
        return -EBADMSG;
    }
    *budget -= *budget < b->len ? *budget : b->len;
    SHM_COUNT(boxes_received, 1);
    return c->ev->on_recv(c->ctx, bytes, b->len);
}

/* Hands core the next piece of the BYTES record being read. */
static int deliver_bytes(struct shm_conn *c, uint64_t *budget)
{
    size_t n;
    const uint8_t *piece = fdn__shm_rx_piece(&c->rx, c->rx_bytes_left, &n);
    int rc = c->ev->on_recv(c->ctx, piece, n);
    c->rx_bytes_left -= (uint32_t)n;
    uint64_t used = n + (c->rx_bytes_left ? 0 : c->rx_pad);
    fdn__shm_rx_consume(&c->rx, used);
    *budget -= *budget < used ? *budget : used;
    return rc;
}

/* Whether the peer has closed its end and every record before that has
 * been read: closed is set after the last header, so once it is seen, no
 * record at head means none will come. */
static bool peer_closed_after_all(const struct shm_conn *c)
{
    return atomic_load_explicit(&c->rx.ctl->closed, memory_order_acquire) &&
           !fdn__shm_rx_ready(&c->rx) && !fdn__shm_rx_box_ready(&c->rx);
}

/* Delivers what the peer has written, at most one ring's worth: record by
 * record, each read once and checked before use. */
static int poll_recv(struct shm_conn *c)
{
    int work = 0;
    uint64_t budget = c->ring_bytes;
    while (!c->paused && !c->closing && budget) {
        int rc;
        if (c->rx_bytes_left) {
            rc = deliver_bytes(c, &budget);
        } else {
            struct fdn__shm_rec r;
            struct fdn__shm_box_msg box;
            rc = fdn__shm_rx_next(&c->rx, &r, &box);
            if (rc == 0) {
                if (work == 0 && peer_closed_after_all(c)) {
                    fdn__shm_begin_close(c, 0);
                    return 1;
                }
                break;
            }
            if (rc < 0) {
                record_corrupt(c, "malformed record or box at position %llu",
                               (unsigned long long)c->rx.head);
                break;
            }
            if (rc == FDN__SHM_NEXT_BOX) {
                rc = take_box(c, &box, &budget);
            } else if (r.type == FDN__SHM_REC_BYTES) {
                /* The header now; the bytes as they are delivered. */
                fdn__shm_rx_consume(&c->rx, FDN__SHM_REC_HDR);
                c->rx_bytes_left = r.len;
                c->rx_pad = r.rec_bytes - FDN__SHM_REC_HDR - r.len;
                budget -= budget < FDN__SHM_REC_HDR ? budget : FDN__SHM_REC_HDR;
                continue;
            } else {
                budget -= budget < r.rec_bytes ? budget : r.rec_bytes;
                rc = r.type == FDN__SHM_REC_REF ? take_ref(c, &r) : take_release(c, &r);
            }
        }
        work++;
        if (rc < 0)
            fdn__shm_begin_close(c, rc);
    }
    if (work && !c->closing)
        wake_peer_if_waiting(c, &c->rx.ctl->space_wanted);
    return work;
}

/* Whether [p, p + len) lies in our pool's region (one subtraction: an
 * address below the base wraps to a huge offset). */
static bool in_own_pool(const struct shm_conn *c, const void *p, size_t len)
{
    uintptr_t off = (uintptr_t)p - (uintptr_t)c->pool_base;
    return c->pool_base && off <= c->pool_bytes && len <= c->pool_bytes - off;
}

/* Whether iov[i] of s can cross by reference: it lies in our pool, core
 * named its message, and a slot is free. */
static bool can_lend(const struct shm_conn *c, const struct fdn__tp_send *s, int i)
{
    return s->iov_msg && s->iov_msg[i] && c->num_free_slots && s->iov[i].iov_len &&
           s->iov[i].iov_len <= UINT32_MAX && in_own_pool(c, s->iov[i].iov_base, s->iov[i].iov_len);
}

/* Lends iov[i] of s to the peer: a REF record, and a reference on its
 * message until the RELEASE. */
static void lend(struct shm_conn *c, const struct fdn__tp_send *s, int i)
{
    uint32_t slot = c->free_slots[--c->num_free_slots];
    c->lent[slot] = fdn_msg_ref(s->iov_msg[i]);
    c->lent_flag[slot] = true;
    fdn__shm_tx_ref(&c->tx, slot, (uint32_t)((const uint8_t *)s->iov[i].iov_base - c->pool_base),
                    (uint32_t)s->iov[i].iov_len);
    SHM_COUNT(refs_sent, 1);
    SHM_COUNT(loans_out, 1);
}

/* Writes queued RELEASE records while the ring has room. */
static void write_releases(struct shm_conn *c, uint64_t *space)
{
    while (c->num_releases && *space >= FDN__SHM_REC_HDR) {
        uint32_t slot = c->releases[--c->num_releases];
        c->borrowed[slot] = false;
        fdn__shm_tx_release(&c->tx, slot);
        *space -= FDN__SHM_REC_HDR;
        SHM_COUNT(releases_sent, 1);
    }
}

/* Bytes the queue wants to write, roughly: when the cached space covers
 * them, the peer's head need not be read. */
static uint64_t wanted_space(const struct shm_conn *c)
{
    uint64_t n = (uint64_t)c->num_releases * FDN__SHM_REC_HDR;
    if (c->sq.cursor)
        n += c->sq.cursor->len - c->sq.cursor->tp_done + 2 * FDN__SHM_REC_REF_BYTES;
    return n;
}

/* Ends the BYTES record begun at open_at. Its padding fits the space left:
 * the space was a multiple of 8 when the record began, and the record's
 * bytes did not exceed it. */
static void close_bytes(struct shm_conn *c, uint64_t open_at, uint64_t *space)
{
    uint64_t before = c->tx.tail;
    fdn__shm_tx_bytes_close(&c->tx, open_at);
    *space -= c->tx.tail - before;
}

/* The bytes queued from the cursor on, when all of them fit the box and
 * none would cross by reference; else 0. */
static uint32_t box_fit(const struct shm_conn *c)
{
    uint32_t len = 0;
    for (const struct fdn__tp_send *s = c->sq.cursor; s; s = s->tp_next) {
        if (s->len - s->tp_done > FDN__SHM_BOX_BYTES - len)
            return 0;
        for (int i = 0; i < s->iovcnt; i++)
            if (can_lend(c, s, i))
                return 0;
        len += (uint32_t)(s->len - s->tp_done);
    }
    return len;
}

/* Writes every queued send (box_fit said they fit) into the box and
 * publishes it. */
static void write_box(struct shm_conn *c, uint32_t len)
{
    uint8_t *dst = c->tx.box->bytes;
    for (struct fdn__tp_send *s = c->sq.cursor; s; s = s->tp_next) {
        size_t skip = s->tp_done;
        for (int i = 0; i < s->iovcnt; i++) {
            size_t piece = s->iov[i].iov_len;
            if (skip >= piece) {
                skip -= piece;
                continue;
            }
            memcpy(dst, (const uint8_t *)s->iov[i].iov_base + skip, piece - skip);
            dst += piece - skip;
            skip = 0;
        }
        s->tp_done = s->len;
    }
    c->sq.cursor = NULL;
    fdn__shm_tx_box_publish(&c->tx, len, c->rx.box_taken);
    SHM_COUNT(boxes_sent, 1);
}

/* Writes queued sends into the outbound ring while it has room: ranges of
 * our pool as REF records, anything else copied into BYTES records (one
 * record for a run of consecutive ranges). Makes no callback, so core's
 * calls may use it. Returns whether it wrote. */
static int flush_sends(struct shm_conn *c)
{
    if (!c->ready || c->closing || (!c->sq.cursor && !c->num_releases))
        return 0;
    uint64_t space = fdn__shm_tx_space_cached(&c->tx);
    if (space < wanted_space(c)) {
        int64_t s = fdn__shm_tx_space(&c->tx);
        if (s < 0) {
            tx_corrupt(c);
            return 1;
        }
        space = (uint64_t)s;
    }
    uint64_t start = c->tx.tail;
    write_releases(c, &space);
    uint32_t box_len = c->sq.cursor ? box_fit(c) : 0;
    if (box_len) {
        int free = fdn__shm_tx_box_free(&c->tx);
        if (free < 0) {
            record_corrupt(c, "the control line acknowledges a box message we never wrote "
                           "(we wrote %u)", c->tx.box_sent);
            return 1;
        }
        if (free) {
            write_box(c, box_len);
            wake_peer_if_waiting(c, &c->tx.ctl->sleeping);
            return 1;
        }
    }
    bool open = false;
    uint64_t open_at = 0;
    while (c->sq.cursor && space) {
        struct fdn__tp_send *s = c->sq.cursor;
        size_t skip = s->tp_done;
        for (int i = 0; i < s->iovcnt && space; i++) {
            size_t piece = s->iov[i].iov_len;
            if (skip >= piece) {
                skip -= piece;
                continue;
            }
            if (skip == 0 && can_lend(c, s, i)) {
                if (open)
                    close_bytes(c, open_at, &space);
                open = false;
                if (space < FDN__SHM_REC_REF_BYTES)
                    goto full;
                lend(c, s, i);
                space -= FDN__SHM_REC_REF_BYTES;
                s->tp_done += piece;
                continue;
            }
            if (!open) {
                if (space < 2 * FDN__SHM_REC_HDR)
                    goto full;
                open_at = fdn__shm_tx_bytes_open(&c->tx);
                space -= FDN__SHM_REC_HDR;
                open = true;
            }
            size_t n = piece - skip < space ? piece - skip : (size_t)space;
            fdn__shm_tx_write(&c->tx, (const uint8_t *)s->iov[i].iov_base + skip, n);
            s->tp_done += n;
            space -= n;
            skip = 0;
        }
        if (s->tp_done < s->len)
            break;
        c->sq.cursor = s->tp_next;
        while (c->sq.cursor && c->sq.cursor->len == 0)
            c->sq.cursor = c->sq.cursor->tp_next;
    }
full:
    if (open)
        close_bytes(c, open_at, &space);
    if (c->tx.tail == start)
        return 0;
    wake_peer_if_waiting(c, &c->tx.ctl->sleeping);
    return 1;
}

/* Reports sends whose bytes are all in the ring, oldest first. on_sent may
 * send more or close: both are safe here. */
static int report_sent(struct shm_conn *c)
{
    int n = 0;
    while (c->sq.head && !c->closing && c->sq.head->tp_done == c->sq.head->len) {
        struct fdn__tp_send *s = fdn__send_queue_pop(&c->sq);
        c->ev->on_sent(c->ctx, s, 0);
        n++;
    }
    return n;
}

static int conn_poll(fdn_worker *w, struct fdn__poller *p)
{
    (void)w;
    struct shm_conn *c = fdn__container_of(p, struct shm_conn, poller);
    if (c->rx_sleep_armed) {
        atomic_store_explicit(&c->rx.ctl->sleeping, 0, memory_order_relaxed);
        c->rx_sleep_armed = false;
    }
    if (c->tx_sleep_armed) {
        atomic_store_explicit(&c->tx.ctl->space_wanted, 0, memory_order_relaxed);
        c->tx_sleep_armed = false;
    }
    int work = 0;
    if (!c->paused)
        work += poll_recv(c);
    collect_returned(c);
    work += flush_sends(c);
    work += report_sent(c);
    return work;
}

/* Publishes "wake me" for what this connection waits on, then re-checks. */
static bool conn_prepare_sleep(fdn_worker *w, struct fdn__poller *p)
{
    (void)w;
    struct shm_conn *c = fdn__container_of(p, struct shm_conn, poller);
    if (c->closing)
        return true;
    if (c->sq.head && c->sq.head->tp_done == c->sq.head->len)
        return false; /* reports pending */
    if (c->in && __atomic_load_n(&c->in->returned, __ATOMIC_RELAXED))
        return false; /* loans to release */
    bool want_space = c->sq.cursor != NULL || c->num_releases;
    if (!c->paused) {
        atomic_store_explicit(&c->rx.ctl->sleeping, 1, memory_order_relaxed);
        c->rx_sleep_armed = true;
    }
    if (want_space) {
        atomic_store_explicit(&c->tx.ctl->space_wanted, 1, memory_order_relaxed);
        c->tx_sleep_armed = true;
    }
    atomic_thread_fence(memory_order_seq_cst);
    if (!c->paused &&
        (c->rx_bytes_left || fdn__shm_rx_ready(&c->rx) || fdn__shm_rx_box_ready(&c->rx) ||
         atomic_load_explicit(&c->rx.ctl->closed, memory_order_relaxed)))
        return false;
    if (want_space &&
        atomic_load_explicit(&c->tx.ctl->head, memory_order_relaxed) != c->tx.known_head)
        return false;
    return true;
}

/* ---- Start and the send op ----------------------------------------------- */

void fdn__shm_data_init(struct shm_conn *c)
{
    c->wake_op = (struct conn_op){.io.complete = wake_complete, .c = c};
    c->poller = (struct fdn__poller){.poll = conn_poll, .prepare_sleep = conn_prepare_sleep};
}

void fdn__shm_data_start(struct shm_conn *c)
{
    arm_wake_read(c);
    fdn__worker_add_poller(c->w, &c->poller);
    c->poller_added = true;
}

int fdn__shm_flush_sends(struct shm_conn *c) { return flush_sends(c); }

int fdn__shm_send(struct fdn__tp_conn *conn, struct fdn__tp_send *s)
{
    struct shm_conn *c = to_conn(conn);
    if (c->closing)
        return -EPIPE;
    if (!c->started)
        return FDN_ERR(-ENOTCONN, "shm send on an accepted connection before conn_start");
    int rc = fdn__send_queue_push(&c->sq, s, "shm");
    if (rc < 0)
        return rc;
    flush_sends(c); /* reported from the poller, never from inside this call */
    return 0;
}
