/* One connection to another node: handshake, frame decoding, reassembly and
 * delivery on the way in; frame scheduling, batching and flow control on the
 * way out; requests and their timeouts; and an orderly end.
 *
 * Head-of-line freedom lives here and in the scheduler:
 *  1. per-channel send queues, picked by priority then weighted round robin,
 *     one fragment at a time (core/frame_sched.c);
 *  2. at most max_inflight_bytes handed to the transport and not yet sent,
 *     and the kernel's unsent bytes bounded by TCP_NOTSENT_LOWAT, so an urgent
 *     frame never queues behind megabytes already given away;
 *  3. per-channel credit: a paused or slow consumer stops granting credit for
 *     its channel only, while the reader keeps draining the connection into
 *     the other channels' queues;
 *  5. deliveries are tasks at their channel's priority, so the worker runs
 *     urgent handlers before bulk ones. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/compiler.h"
#include "base/error.h"
#include "core/node_internal.h"
#include "core/worker_internal.h"

static void pump(fdn_peer *p);
static void peer_finish(fdn_peer *p);
static int finish_task(fdn_worker *w, fdn_task *t);

static bool closing(const fdn_peer *p) { return p->state == FDN__PEER_CLOSING; }

/* ---- Control frames ------------------------------------------------------ */

/* Appends a control frame (header and payload) to the bytes that go out
 * ahead of the next batch of data frames. */
static int queue_ctrl(fdn_peer *p, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    size_t hdr_len = fdn__frame_hdr_size(h);
    if (p->ctrl_len + hdr_len + h->frag_len > sizeof p->ctrl)
        return FDN_ERR(-ENOBUFS, "control queue of peer %s is full", p->addr);
    fdn__frame_encode(h, p->ctrl + p->ctrl_len);
    p->ctrl_len += (uint32_t)hdr_len;
    if (h->frag_len && payload) {
        memcpy(p->ctrl + p->ctrl_len, payload, h->frag_len);
        p->ctrl_len += h->frag_len;
    }
    return 0;
}

static void queue_simple(fdn_peer *p, uint8_t type, uint16_t channel, uint64_t word)
{
    struct fdn__frame_hdr h = {.type = type, .channel = channel, .msg_id = word};
    queue_ctrl(p, &h, NULL);
}

/* Moves every message the handshake has for the peer into the control queue. */
static void queue_handshake_output(fdn_peer *p)
{
    const uint8_t *msg;
    size_t len;
    while ((len = fdn__handshake_next_output(p->hs, &msg)) > 0) {
        struct fdn__frame_hdr h = {
            .type = FDN__FRAME_HANDSHAKE,
            .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST,
            .frag_len = (uint32_t)len,
            .total_len = len,
        };
        queue_ctrl(p, &h, msg);
    }
}

/* ---- Failure and teardown ------------------------------------------------ */

static void count_failure(fdn_node *n, int reason)
{
    switch (reason) {
    case -EACCES: n->stats.auth_failures++; break;
    case -EPROTONOSUPPORT: case -EPERM: n->stats.handshake_failures++; break;
    case -EPROTO: case -EBADMSG: n->stats.protocol_errors++; break;
    case -EMSGSIZE: case -ENOSPC: n->stats.limit_violations++; break;
    case -ETIMEDOUT: n->stats.handshake_timeouts++; break;
    default: break;
    }
}

/* How long a closing connection may take to flush its last frames (CLOSE,
 * handshake diagnostics) before it is closed regardless. */
#define CLOSE_FLUSH_NS (1000ull * 1000 * 1000)

static void close_transport(fdn_peer *p)
{
    if (p->conn && !p->close_sent) {
        p->close_sent = true;
        fdn__tp_conn_close(p->conn);
    }
}

/* Ends the connection: says why on the wire, flushes what is in flight
 * (bounded by CLOSE_FLUSH_NS), then closes the transport. The peer is freed
 * once the transport reports on_closed, from a task of its own, so that a
 * callback that closes its peer never pulls it from under its caller. */
void fdn__peer_fail(fdn_peer *p, int reason, enum fdn__close_reason wire_reason)
{
    if (closing(p))
        return;
    fdn_node *n = p->node;
    if (reason < 0)
        count_failure(n, reason);
    p->state = FDN__PEER_CLOSING;
    p->down_reason = reason;
    fdn_timer_cancel(n->worker, &p->hs_timer);
    if (!p->conn) {
        fdn_worker_schedule(n->worker, &p->finish);
        return;
    }
    /* A peer that failed authentication gets nothing but a closed
     * connection (and a counter here): not even the reason. */
    if (reason != -EACCES) {
        queue_simple(p, FDN__FRAME_CLOSE, 0, wire_reason);
        pump(p);
    }
    if (p->inflight_bytes == 0)
        close_transport(p);
    else
        fdn_timer_arm(n->worker, &p->hs_timer, CLOSE_FLUSH_NS);
}

static void fail_pending_requests(fdn_peer *p)
{
    fdn_worker *w = p->node->worker;
    for (int b = 0; b < FDN__PENDING_BUCKETS; b++) {
        struct fdn__pending_request *r;
        while ((r = p->pending[b])) {
            p->pending[b] = r->next;
            fdn_timer_cancel(w, &r->timer);
            fdn__worker_cancel_task(w, &r->timer.task);
            r->fn(p, -ENOTCONN, NULL, r->arg);
            free(r);
        }
    }
    p->pending_count = 0;
}

static void free_rx_queues(fdn_peer *p)
{
    for (int c = 0; c < FDN_MAX_CHANNELS; c++) {
        struct fdn__rx_channel *rx = &p->rx[c];
        fdn__worker_cancel_task(p->node->worker, &rx->deliver);
        while (rx->head) {
            fdn_msg *m = rx->head;
            rx->head = m->qnext;
            fdn_msg_free(m);
        }
        rx->tail = NULL;
        rx->queued = 0;
    }
}

/* The transport has let go: tell the application, then free everything. */
static int finish_task(fdn_worker *w, fdn_task *t)
{
    (void)w;
    peer_finish(t->arg);
    return FDN_TASK_DONE;
}

static void peer_finish(fdn_peer *p)
{
    fdn_node *n = p->node;
    fdn_worker *w = n->worker;
    fdn_timer_cancel(w, &p->hs_timer);
    fdn__worker_cancel_task(w, &p->hs_timer.task);
    fail_pending_requests(p);
    free_rx_queues(p);
    bool tell = p->announced_up || p->outbound;
    if (tell) {
        n->stats.peers_down++;
        if (n->events.peer_down)
            n->events.peer_down(p, p->down_reason, n->events.arg);
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        n->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    fdn__sched_destroy(p->sched);
    fdn__reasm_destroy(p->reasm);
    fdn__handshake_destroy(p->hs);
    free(p->rx_stage);
    free(p->batches);
    free(p);
}

/* ---- Receiving ----------------------------------------------------------- */

static int deliver_task(fdn_worker *w, fdn_task *t);

static void rx_enqueue(struct fdn__rx_channel *rx, fdn_msg *m)
{
    m->qnext = NULL;
    if (rx->tail)
        rx->tail->qnext = m;
    else
        rx->head = m;
    rx->tail = m;
    rx->queued++;
}

/* Grants the peer the credit that deliveries have freed, once enough has
 * accumulated to be worth a frame. */
static void grant_credit(fdn_peer *p, uint16_t channel)
{
    uint64_t grant = fdn__reasm_credit_to_grant(p->reasm, channel, p->rx[channel].window / 2);
    if (grant) {
        queue_simple(p, FDN__FRAME_CREDIT, channel, grant);
        pump(p);
    }
}

static void complete_request(fdn_peer *p, uint64_t id, fdn_msg *resp);

/* Hands one message to the application: a response to its request callback,
 * a request to the request handler, anything else to the message handler. */
static void deliver_one(fdn_peer *p, uint16_t channel, fdn_msg *m, uint64_t msg_id)
{
    struct fdn__channel *ch = &p->node->channels[channel];
    if (msg_id & FDN__MSG_ID_RESPONSE) {
        complete_request(p, msg_id & FDN__MSG_ID_MASK, m);
    } else if ((msg_id & FDN__MSG_ID_REQUEST) && ch->on_request) {
        ch->on_request(p, channel, msg_id & FDN__MSG_ID_MASK, m, ch->on_request_arg);
    } else if (!(msg_id & FDN__MSG_ID_REQUEST) && ch->on_message) {
        ch->on_message(p, channel, m, ch->on_message_arg);
    } else {
        p->rx[channel].drops++;
        fdn_msg_free(m);
    }
}

/* The delivery task of one channel: runs at the channel's priority, so the
 * worker delivers urgent channels first, and yields when its turn is long.
 * Credit goes back to the sender as messages are delivered, so a paused
 * channel stops granting while the others go on. */
static int deliver_task(fdn_worker *w, fdn_task *t)
{
    struct fdn__rx_channel *rx = t->arg;
    fdn_peer *p = rx->peer;
    unsigned budget = 64;
    while (rx->head && !rx->paused && budget--) {
        fdn_msg *m = rx->head;
        rx->head = m->qnext;
        if (!rx->head)
            rx->tail = NULL;
        rx->queued--;
        m->qnext = NULL;
        size_t len = fdn_msg_total_len(m);
        uint64_t msg_id;
        memcpy(&msg_id, m->start, sizeof msg_id);  /* stashed by rx_message */
        rx->delivered++;
        fdn__reasm_consumed(p->reasm, rx->channel, len);
        deliver_one(p, rx->channel, m, msg_id);
        if (closing(p))
            return FDN_TASK_DONE;
        grant_credit(p, rx->channel);
        if (fdn_worker_should_yield(w))
            break;
    }
    return rx->head && !rx->paused ? FDN_TASK_YIELD : FDN_TASK_DONE;
}

/* A message is complete. Its id (which says request, response or plain
 * message) is kept in the first 8 bytes of its headroom, which the
 * application never sees as payload (node creation checks the pool has that
 * much headroom), and it waits in its channel's queue for the delivery task. */
static void rx_message(fdn_peer *p, uint16_t channel, fdn_msg *m)
{
    struct fdn__rx_channel *rx = &p->rx[channel];
    uint64_t msg_id = rx->in_progress_id;
    memcpy(m->start, &msg_id, sizeof msg_id);
    bool best_effort = p->node->channels[channel].cfg.delivery == FDN_BEST_EFFORT;
    if (best_effort && rx->paused) {
        /* Nobody is listening: drop rather than hold the window. */
        rx->drops++;
        fdn__reasm_consumed(p->reasm, channel, fdn_msg_total_len(m));
        fdn_msg_free(m);
        grant_credit(p, channel);
        return;
    }
    rx_enqueue(rx, m);
    if (!rx->paused && !rx->deliver.queued)
        fdn_worker_schedule(p->node->worker, &rx->deliver);
}

static int on_data(fdn_peer *p, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    if (p->state != FDN__PEER_UP)
        return FDN_ERR(-EPROTO, "DATA frame from %s before the handshake finished", p->addr);
    if (h->channel >= FDN_MAX_CHANNELS || !p->rx[h->channel].usable)
        return FDN_ERR(-EPROTO, "DATA frame from %s on channel %u, not agreed", p->addr,
                       h->channel);
    if (h->flags & FDN__FRAME_FIRST)
        p->rx[h->channel].in_progress_id = h->msg_id;
    fdn_msg *done = NULL;
    int rc = fdn__reasm_fragment(p->reasm, h->channel, h->msg_id, h->offset, h->total_len,
                                 h->flags & FDN__FRAME_FIRST, h->flags & FDN__FRAME_LAST,
                                 payload, h->frag_len, p->node->pool, &done);
    if (rc == -EPROTO) {
        /* A peer that breaks a limit is told apart from one that sends
         * nonsense: it is counted, and reported, as a limit violation. */
        enum fdn__reasm_error why = fdn__reasm_last_error(p->reasm);
        if (why == FDN__REASM_OVER_CREDIT || why == FDN__REASM_OVER_BUDGET)
            return FDN_ERR(-ENOSPC, "%s on channel %u: %s", p->addr, h->channel,
                           fdn__reasm_error_name(why));
        if (why == FDN__REASM_OVER_MAX_MESSAGE)
            return FDN_ERR(-EMSGSIZE, "%s on channel %u: %s", p->addr, h->channel,
                           fdn__reasm_error_name(why));
    }
    if (rc < 0)
        return rc == -ENOBUFS ? FDN_ERR(-ENOBUFS, "pool exhausted receiving from %s", p->addr)
                              : rc;
    if (rc == 1)
        rx_message(p, h->channel, done);
    return 0;
}

static int on_handshake_done(fdn_peer *p);

static int on_handshake_frame(fdn_peer *p, const uint8_t *payload, uint32_t len)
{
    if (p->state != FDN__PEER_HANDSHAKE)
        return FDN_ERR(-EPROTO, "HANDSHAKE frame from %s after the handshake", p->addr);
    int rc = fdn__handshake_feed(p->hs, payload, len);
    queue_handshake_output(p);
    if (rc < 0) {
        pump(p);
        return rc;
    }
    if (rc == FDN__HS_DONE)
        rc = on_handshake_done(p);
    pump(p);
    return rc < 0 ? rc : 0;
}

/* One whole frame: header decoded, payload (frag_len bytes) at hand. */
static int on_frame(fdn_peer *p, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    switch (h->type) {
    case FDN__FRAME_DATA:
        return on_data(p, h, payload);
    case FDN__FRAME_HANDSHAKE:
        return on_handshake_frame(p, payload, h->frag_len);
    case FDN__FRAME_CREDIT:
        if (p->state != FDN__PEER_UP || h->channel >= FDN_MAX_CHANNELS ||
            !p->rx[h->channel].usable)
            return FDN_ERR(-EPROTO, "CREDIT frame from %s for channel %u", p->addr, h->channel);
        fdn__sched_grant(p->sched, h->channel, h->credit_bytes);
        pump(p);
        return 0;
    case FDN__FRAME_PING:
        queue_simple(p, FDN__FRAME_PONG, 0, h->ping_token);
        pump(p);
        return 0;
    case FDN__FRAME_PONG:
        return 0;
    case FDN__FRAME_CLOSE:
        /* The peer is leaving and says why; its transport close follows,
         * possibly as a reset (it may close with our bytes unread), which
         * must not turn an orderly goodbye into an error. */
        p->close_received = true;
        p->down_reason = h->close_reason == FDN__CLOSE_NORMAL ||
                                 h->close_reason == FDN__CLOSE_GOING_AWAY
                             ? 0
                             : -ECONNRESET;
        return 0;
    default:
        return FDN_ERR(-EPROTO, "frame type %u from %s", h->type, p->addr);
    }
}

/* Bytes from the transport: frames may start, end or be split anywhere.
 * A header is gathered in rx_hdr until the decoder has all of it (32 bytes,
 * or 64 with a trace extension); a payload that arrived whole is used where
 * it lies, one split across receives is staged. */
static int on_recv(void *ctx, const uint8_t *data, size_t len)
{
    fdn_peer *p = ctx;
    while (!closing(p)) {
        if (!p->rx_in_payload) {
            if (len == 0)
                break;
            size_t take = FDN__FRAME_MAX_HDR_SIZE - p->rx_hdr_have;
            if (take > len)
                take = len;
            memcpy(p->rx_hdr + p->rx_hdr_have, data, take);
            enum fdn__wire_error why;
            int rc = fdn__frame_decode(p->rx_hdr, p->rx_hdr_have + take, &p->limits,
                                       &p->rx_frame, &why);
            if (rc < 0)
                return FDN_ERR(rc, "bad frame from %s: %s", p->addr, fdn__wire_error_name(why));
            if (rc == 0) { /* the header continues in the next receive */
                p->rx_hdr_have += (uint32_t)take;
                break;
            }
            size_t used = (size_t)rc - p->rx_hdr_have;
            data += used;
            len -= used;
            p->rx_hdr_have = 0;
            p->rx_in_payload = true;
            p->rx_stage_have = 0;
        }
        uint32_t frag_len = p->rx_frame.frag_len;
        const uint8_t *payload = data;
        if (p->rx_stage_have == 0 && len >= frag_len) {
            data += frag_len;   /* whole in this receive: no copy */
            len -= frag_len;
        } else {
            uint32_t take = frag_len - p->rx_stage_have;
            if (take > len)
                take = (uint32_t)len;
            memcpy(p->rx_stage + p->rx_stage_have, data, take);
            p->rx_stage_have += take;
            data += take;
            len -= take;
            if (p->rx_stage_have < frag_len)
                break;
            payload = p->rx_stage;
        }
        p->rx_in_payload = false;
        int rc = on_frame(p, &p->rx_frame, payload);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* ---- Sending ------------------------------------------------------------- */

static struct fdn__batch *free_batch(fdn_peer *p)
{
    for (int i = 0; i < FDN__BATCHES; i++)
        if (!p->batches[i].busy)
            return &p->batches[i];
    return NULL;
}

/* Iovecs one frame may need: its header and one per buffer it spans
 * (fdn_send refuses chains of more than FDN__MAX_SEGMENTS buffers). */
#define FRAME_IOVECS (1 + FDN__MAX_SEGMENTS)

/* Adds one data frame to the batch: its header in b->hdr[k], then iovecs
 * pointing at its payload in the message's buffers (no copy). Returns the
 * bytes it adds. */
static size_t add_frame(struct fdn__batch *b, int *niov, const struct fdn__frame *f)
{
    int k = b->num_frames;
    struct fdn__frame_hdr h = {
        .type = FDN__FRAME_DATA,
        .flags = (uint16_t)((f->first ? FDN__FRAME_FIRST : 0) | (f->last ? FDN__FRAME_LAST : 0)),
        .channel = f->channel,
        .frag_len = f->len,
        .msg_id = f->msg_id,
        .offset = f->offset,
        .total_len = f->total_len,
    };
    size_t hdr_len = fdn__frame_encode(&h, b->hdr[k]);
    b->iov[*niov] = (struct iovec){b->hdr[k], hdr_len};
    int n = fdn__frame_iov(f, &b->iov[*niov + 1], FDN__MAX_SEGMENTS);
    *niov += 1 + n;   /* n >= 0: the chain was bounded at fdn_send */
    b->frames[k] = *f;
    b->num_frames++;
    return hdr_len + f->len;
}

/* Fills batches from the control queue and the scheduler and hands them to
 * the transport while fewer than max_inflight_bytes are outstanding. One
 * batch is one transport send: control bytes first, then data frames. */
static void pump(fdn_peer *p)
{
    if (!p->conn || p->state == FDN__PEER_CONNECTING)
        return;
    struct fdn__batch *b;
    while (p->inflight_bytes < p->node->max_inflight_bytes && (b = free_batch(p))) {
        int niov = 0;
        b->num_frames = 0;
        if (p->ctrl_len) {
            memcpy(b->ctrl, p->ctrl, p->ctrl_len);
            b->iov[niov++] = (struct iovec){b->ctrl, p->ctrl_len};
            p->ctrl_len = 0;
        }
        size_t batch_bytes = niov ? b->iov[0].iov_len : 0;
        bool big = false;
        while (p->state == FDN__PEER_UP && b->num_frames < FDN__BATCH_FRAMES &&
               niov + FRAME_IOVECS <= (int)FDN_ARRAY_SIZE(b->iov) &&
               p->inflight_bytes + batch_bytes < p->node->max_inflight_bytes) {
            struct fdn__frame f;
            if (!fdn__sched_next(p->sched, &f))
                break;
            batch_bytes += add_frame(b, &niov, &f);
            big |= p->node->zerocopy_min && f.len >= p->node->zerocopy_min;
        }
        if (niov == 0)
            return;
        b->send = (struct fdn__tp_send){.iov = b->iov, .iovcnt = niov, .len = batch_bytes,
                                        .zerocopy = big};
        b->busy = true;
        p->inflight_bytes += batch_bytes;
        if (fdn__tp_send(p->conn, &b->send) < 0) {
            /* Closing: the frames count as done; their messages are
             * released with the peer. */
            b->busy = false;
            p->inflight_bytes -= batch_bytes;
            for (int i = 0; i < b->num_frames; i++)
                fdn__sched_frame_done(p->sched, &b->frames[i]);
            return;
        }
    }
}

static void notify_writable(fdn_peer *p)
{
    for (int c = 0; c < p->node->num_channels; c++) {
        struct fdn__rx_channel *rx = &p->rx[c];
        if (!rx->writable)
            continue;
        struct fdn__sched_channel_stats st;
        fdn__sched_channel_stats(p->sched, (uint16_t)c, &st);
        if (st.queued_msgs < p->node->channels[c].cfg.max_queued) {
            fdn_task *t = rx->writable;
            rx->writable = NULL;
            if (!t->queued)
                fdn_worker_schedule(p->node->worker, t);
        }
    }
}

static void on_sent(void *ctx, struct fdn__tp_send *send, int err)
{
    fdn_peer *p = ctx;
    struct fdn__batch *b = fdn__container_of(send, struct fdn__batch, send);
    (void)err; /* a failed send is followed by on_closed, which ends the peer */
    p->inflight_bytes -= send->len;
    b->busy = false;
    for (int i = 0; i < b->num_frames; i++)
        fdn__sched_frame_done(p->sched, &b->frames[i]);
    b->num_frames = 0;
    if (closing(p)) {
        if (p->inflight_bytes == 0)
            close_transport(p);
        return;
    }
    notify_writable(p);
    pump(p);
}

/* ---- Handshake ----------------------------------------------------------- */

/* The handshake timer; while closing, the same timer bounds the flush. */
static int handshake_timeout(fdn_worker *w, fdn_task *t)
{
    (void)w;
    fdn_peer *p = t->arg;
    if (closing(p))
        close_transport(p);
    else
        fdn__peer_fail(p, FDN_ERR(-ETIMEDOUT, "handshake with %s timed out", p->addr),
                       FDN__CLOSE_HANDSHAKE_FAILED);
    return FDN_TASK_DONE;
}

static int start_handshake(fdn_peer *p)
{
    fdn_node *n = p->node;
    struct fdn__handshake_config cfg = {
        .role = p->outbound ? FDN__HS_CLIENT : FDN__HS_SERVER,
        .incarnation = n->incarnation,
        .cluster_name = n->cluster,
        .channels = n->descs,
        .channel_count = (uint16_t)n->num_channels,
        .limits = p->limits,
    };
    memcpy(cfg.node_id, n->node_id, sizeof cfg.node_id);
    memcpy(cfg.secret, n->secret, sizeof cfg.secret);
    int rc = fdn__handshake_create(&cfg, &p->hs);
    memset(cfg.secret, 0, sizeof cfg.secret);
    if (rc < 0)
        return rc;
    p->state = FDN__PEER_HANDSHAKE;
    fdn_timer_arm(n->worker, &p->hs_timer, n->handshake_timeout_ns);
    queue_handshake_output(p);
    pump(p);
    return 0;
}

/* The peer proved it has the secret and agreed on channels. Each agreed
 * channel gets the agreed limits at both ends: the sender's credit starts at
 * the agreed window, and the receiver enforces that window and the agreed
 * message size (a peer that agreed to less must not be allowed more). */
static int on_handshake_done(fdn_peer *p)
{
    fdn_node *n = p->node;
    const struct fdn__handshake_result *res = fdn__handshake_result(p->hs);
    fdn_timer_cancel(n->worker, &p->hs_timer);
    memcpy(p->peer_node_id, res->peer_node_id, sizeof p->peer_node_id);
    for (int i = 0; i < res->channel_count; i++) {
        const struct fdn__channel_desc *d = &res->channels[i];
        struct fdn__reasm_channel_config rc = {
            .id = d->id,
            .max_message = d->max_message,
            .credit_window = d->credit_window,
        };
        int err = fdn__reasm_add_channel(p->reasm, &rc);
        if (!err)
            err = fdn__sched_set_credit(p->sched, d->id, d->credit_window);
        if (err < 0)
            return err;
        p->rx[d->id].usable = true;
        p->rx[d->id].window = d->credit_window;
        p->rx[d->id].max_message = d->max_message;
    }
    p->state = FDN__PEER_UP;
    p->announced_up = true;
    n->stats.peers_up++;
    if (n->events.peer_up)
        n->events.peer_up(p, n->events.arg);
    return 0;
}

/* ---- Transport events ---------------------------------------------------- */

static void on_connected(void *ctx, int err)
{
    fdn_peer *p = ctx;
    if (err < 0) {
        p->down_reason = err;
        return; /* on_closed follows */
    }
    fdn__tp_conn_peer_addr(p->conn, p->addr, sizeof p->addr);
    int rc = start_handshake(p);
    if (rc < 0)
        fdn__peer_fail(p, rc, FDN__CLOSE_PROTOCOL_ERROR);
}

static int on_recv_checked(void *ctx, const uint8_t *data, size_t len)
{
    fdn_peer *p = ctx;
    int rc = on_recv(p, data, len);
    if (rc < 0) {
        enum fdn__close_reason why = rc == -EACCES || rc == -EPERM || rc == -EPROTONOSUPPORT
                                         ? FDN__CLOSE_HANDSHAKE_FAILED
                                     : rc == -EMSGSIZE || rc == -ENOSPC ? FDN__CLOSE_LIMIT_EXCEEDED
                                                                        : FDN__CLOSE_PROTOCOL_ERROR;
        fdn__peer_fail(p, rc, why);
    }
    return 0; /* fdn__peer_fail has closed the transport already */
}

static void on_closed(void *ctx, int err)
{
    fdn_peer *p = ctx;
    p->conn = NULL;
    if (!closing(p)) {
        /* Closed under us. During the handshake even an orderly close is a
         * refusal (a server closes on clients that fail to authenticate). */
        if (p->down_reason == 0 && err != -ECANCELED && !p->close_received)
            p->down_reason = err;
        if (p->down_reason == 0 && p->state != FDN__PEER_UP)
            p->down_reason = -ECONNABORTED;
        p->state = FDN__PEER_CLOSING;
    }
    fdn_timer_cancel(p->node->worker, &p->hs_timer);
    fdn__worker_cancel_task(p->node->worker, &p->hs_timer.task);
    if (!p->finish.queued)
        fdn_worker_schedule(p->node->worker, &p->finish);
}

const struct fdn__tp_conn_events fdn__peer_conn_events = {
    .on_connected = on_connected,
    .on_recv = on_recv_checked,
    .on_sent = on_sent,
    .on_closed = on_closed,
};

/* An accepted connection is attached to a fresh peer, which speaks second. */
void fdn__peer_attach(fdn_peer *p, struct fdn__tp_conn *conn)
{
    p->conn = conn;
    fdn__tp_conn_peer_addr(conn, p->addr, sizeof p->addr);
    fdn__tp_conn_start(conn, &fdn__peer_conn_events, p);
    int rc = start_handshake(p);
    if (rc < 0)
        fdn__peer_fail(p, rc, FDN__CLOSE_PROTOCOL_ERROR);
}

/* ---- Creation ------------------------------------------------------------ */

static int add_channels(fdn_peer *p)
{
    fdn_node *n = p->node;
    for (int c = 0; c < n->num_channels; c++) {
        const fdn_channel_config *cfg = &n->channels[c].cfg;
        struct fdn__sched_channel_config sc = {
            .id = (uint16_t)c,
            .prio = (uint8_t)cfg->priority,
            .weight = cfg->weight,
            .credit_window = cfg->credit_window,
            .max_queued_msgs = cfg->max_queued,
        };
        int err = fdn__sched_add_channel(p->sched, &sc);
        if (err < 0)
            return err;
        struct fdn__rx_channel *rx = &p->rx[c];
        rx->peer = p;
        rx->channel = (uint16_t)c;
        fdn_task_init(&rx->deliver, deliver_task, rx, cfg->priority);
        fdn_histogram_reset(&rx->rtt);
    }
    return 0;
}

int fdn__peer_create(fdn_node *n, bool outbound, fdn_peer **out)
{
    fdn_peer *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->node = n;
    p->outbound = outbound;
    p->state = outbound ? FDN__PEER_CONNECTING : FDN__PEER_HANDSHAKE;
    p->limits = (struct fdn__wire_limits){
        .max_fragment = n->max_fragment,
        .max_message = n->max_message,
        .max_channel = FDN_MAX_CHANNELS - 1,
    };
    fdn_timer_init(&p->hs_timer, handshake_timeout, p, FDN_PRIO_HIGHEST);
    fdn_task_init(&p->finish, finish_task, p, FDN_PRIO_HIGHEST);
    size_t stage = n->max_fragment > FDN__WIRE_HANDSHAKE_MAX ? n->max_fragment
                                                             : FDN__WIRE_HANDSHAKE_MAX;
    p->rx_stage = malloc(stage);
    p->batches = calloc(FDN__BATCHES, sizeof *p->batches);
    struct fdn__sched_config sc = {.max_fragment = n->max_fragment};
    int rc = p->rx_stage && p->batches ? fdn__sched_create(&sc, &p->sched) : -ENOMEM;
    if (!rc)
        rc = fdn__reasm_create(&p->reasm);
    if (!rc)
        rc = add_channels(p);
    if (rc < 0) {
        fdn__sched_destroy(p->sched);
        fdn__reasm_destroy(p->reasm);
        free(p->rx_stage);
        free(p->batches);
        free(p);
        return rc;
    }
    snprintf(p->addr, sizeof p->addr, "(connecting)");
    p->next = n->peers;
    if (n->peers)
        n->peers->prev = p;
    n->peers = p;
    *out = p;
    return 0;
}

/* ---- Requests ------------------------------------------------------------ */

static struct fdn__pending_request **pending_slot(fdn_peer *p, uint64_t id)
{
    struct fdn__pending_request **slot = &p->pending[id % FDN__PENDING_BUCKETS];
    while (*slot && (*slot)->id != id)
        slot = &(*slot)->next;
    return slot;
}

static struct fdn__pending_request *take_pending(fdn_peer *p, uint64_t id)
{
    struct fdn__pending_request **slot = pending_slot(p, id);
    struct fdn__pending_request *r = *slot;
    if (r) {
        *slot = r->next;
        p->pending_count--;
        fdn_timer_cancel(p->node->worker, &r->timer);
        fdn__worker_cancel_task(p->node->worker, &r->timer.task);
    }
    return r;
}

static void complete_request(fdn_peer *p, uint64_t id, fdn_msg *resp)
{
    struct fdn__pending_request *r = take_pending(p, id);
    if (!r) { /* cancelled or timed out: nobody waits for it */
        p->rx[0].drops++;
        fdn_msg_free(resp);
        return;
    }
    fdn_histogram_record(&p->rx[r->channel].rtt, fdn_now_ns() - r->start_ns);
    r->fn(p, 0, resp, r->arg);
    free(r);
}

static int request_timeout(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct fdn__pending_request *r = t->arg;
    fdn_peer *p = r->peer;
    r = take_pending(p, r->id);
    if (r) {
        r->fn(p, -ETIMEDOUT, NULL, r->arg);
        free(r);
    }
    return FDN_TASK_DONE;
}

int fdn_request(fdn_peer *p, int channel, fdn_msg *req, uint64_t timeout_ns, fdn_response_fn fn,
                void *arg, uint64_t *id_out)
{
    if (!fn)
        return FDN_ERR(-EINVAL, "fdn_request needs a callback");
    struct fdn__pending_request *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    uint64_t id = ++p->node->next_request_id & FDN__MSG_ID_MASK;
    int rc = fdn__peer_send(p, channel, req, id | FDN__MSG_ID_REQUEST);
    if (rc < 0) {
        free(r);
        return rc;
    }
    *r = (struct fdn__pending_request){
        .id = id, .channel = (uint16_t)channel, .start_ns = fdn_now_ns(),
        .fn = fn, .arg = arg, .peer = p,
    };
    fdn_timer_init(&r->timer, request_timeout, r, FDN_PRIO_HIGHEST);
    if (timeout_ns)
        fdn_timer_arm(p->node->worker, &r->timer, timeout_ns);
    struct fdn__pending_request **slot = &p->pending[id % FDN__PENDING_BUCKETS];
    r->next = *slot;
    *slot = r;
    p->pending_count++;
    if (id_out)
        *id_out = id;
    return 0;
}

int fdn_request_cancel(fdn_peer *p, uint64_t id)
{
    struct fdn__pending_request *r = take_pending(p, id);
    if (!r)
        return -ENOENT;
    r->fn(p, -ECANCELED, NULL, r->arg);
    free(r);
    return 0;
}

int fdn_respond(fdn_peer *p, int channel, uint64_t request_id, fdn_msg *resp)
{
    return fdn__peer_send(p, channel, resp, (request_id & FDN__MSG_ID_MASK) | FDN__MSG_ID_RESPONSE);
}

/* ---- Sending (public) ---------------------------------------------------- */

int fdn__peer_send(fdn_peer *p, int channel, fdn_msg *msg, uint64_t msg_id)
{
    fdn_node *n = p->node;
    if (channel < 0 || channel >= n->num_channels) {
        fdn_msg_free(msg);
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    }
    if (closing(p)) {
        fdn_msg_free(msg);
        return -ENOTCONN;
    }
    if (p->state == FDN__PEER_UP && !p->rx[channel].usable) {
        fdn_msg_free(msg);
        return FDN_ERR(-EPROTO, "channel %d is not known to peer %s", channel, p->addr);
    }
    size_t len = 0;
    int segments = 0;
    for (const fdn_msg *m = msg; m; m = m->next, segments++)
        len += m->len;
    if (segments > FDN__MAX_SEGMENTS) {
        fdn_msg_free(msg);
        return FDN_ERR(-EINVAL, "a message of %d buffers (at most %d)", segments,
                       FDN__MAX_SEGMENTS);
    }
    /* Once up, the limit is what both ends agreed (the smaller of the two). */
    uint64_t max = p->state == FDN__PEER_UP ? p->rx[channel].max_message
                                            : n->channels[channel].cfg.max_message;
    if (len > max) {
        fdn_msg_free(msg);
        return FDN_ERR(-EMSGSIZE, "%zu bytes over channel %d's max_message %" PRIu64, len,
                       channel, max);
    }
    int rc = fdn__sched_enqueue(p->sched, (uint16_t)channel, msg, msg_id);
    if (rc == -EAGAIN)
        return -EAGAIN;
    if (rc < 0) {
        fdn_msg_free(msg);
        return rc;
    }
    pump(p);
    return 0;
}

int fdn_send(fdn_peer *p, int channel, fdn_msg *msg)
{
    if (channel < 0 || channel >= FDN_MAX_CHANNELS) {
        fdn_msg_free(msg);
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    }
    return fdn__peer_send(p, channel, msg, p->next_msg_id[channel]++ & FDN__MSG_ID_MASK);
}

int fdn_send_notify(fdn_peer *p, int channel, fdn_task *task)
{
    if (channel < 0 || channel >= p->node->num_channels)
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    p->rx[channel].writable = task;
    notify_writable(p);
    return 0;
}

int fdn_channel_pause(fdn_peer *p, int channel, bool paused)
{
    if (channel < 0 || channel >= p->node->num_channels)
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    struct fdn__rx_channel *rx = &p->rx[channel];
    rx->paused = paused;
    if (!paused && rx->head && !rx->deliver.queued)
        fdn_worker_schedule(p->node->worker, &rx->deliver);
    return 0;
}

void fdn_peer_close(fdn_peer *p) { fdn__peer_fail(p, 0, FDN__CLOSE_NORMAL); }

const uint8_t *fdn_peer_node_id(const fdn_peer *p) { return p->peer_node_id; }

int fdn_peer_addr(const fdn_peer *p, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s", p->addr);
    return (size_t)n < len ? n : -ENOSPC;
}

bool fdn_peer_is_up(const fdn_peer *p) { return p->state == FDN__PEER_UP; }

int fdn_peer_channel_stats(const fdn_peer *p, int channel, fdn_channel_stats *out)
{
    if (channel < 0 || channel >= p->node->num_channels)
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    /* Channels the peer did not agree to (or not yet) have no receive side. */
    struct fdn__sched_channel_stats s = {0};
    struct fdn__reasm_channel_stats r = {0};
    fdn__sched_channel_stats(p->sched, (uint16_t)channel, &s);
    if (p->rx[channel].usable)
        fdn__reasm_channel_stats(p->reasm, (uint16_t)channel, &r);
    const struct fdn__rx_channel *rx = &p->rx[channel];
    *out = (fdn_channel_stats){
        .msgs_sent = s.msgs_sent,
        .bytes_sent = s.bytes_sent,
        .msgs_received = r.messages,
        .bytes_received = r.bytes,
        .msgs_delivered = rx->delivered,
        .queued_msgs = s.queued_msgs,
        .queued_bytes = s.queued_bytes,
        .recv_queued_msgs = rx->queued,
        .credit_stalls = s.credit_stalls,
        .send_eagain = s.refused,
        .drops = rx->drops,
        .credit_available = s.credit,
        .rtt_count = rx->rtt.count,
        .rtt_p50_ns = fdn_histogram_quantile(&rx->rtt, 0.5),
        .rtt_p99_ns = fdn_histogram_quantile(&rx->rtt, 0.99),
        .rtt_max_ns = rx->rtt.count ? rx->rtt.max : 0,
    };
    return 0;
}
