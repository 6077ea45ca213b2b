/* One peer: its lanes (connections), and on each the handshake, frame
 * decoding, reassembly and delivery on the way in; frame scheduling,
 * batching and flow control on the way out; and an orderly end. Beside it
 * (core/peer_internal.h): requests and their timeouts (peer_request.c),
 * the lanes' liveness (peer_liveness.c) and the fault layer's side of a
 * lane (peer_faults.c).
 *
 * Head-of-line freedom lives here and in the scheduler:
 *  1. per-channel send queues, picked by priority then weighted round robin,
 *     one fragment at a time (core/frame_sched.c);
 *  2. per lane, at most max_inflight_bytes (bulk lanes: bulk_inflight_bytes)
 *     handed to the transport and not yet sent, and the kernel's unsent
 *     bytes bounded by TCP_NOTSENT_LOWAT, so an urgent frame never queues
 *     behind megabytes already given away;
 *  3. per-channel credit: a paused or slow consumer stops granting credit for
 *     its channel only, while the reader keeps draining the connection into
 *     the other channels' queues;
 *  4. lanes: bulk channels travel on connections of their own, so their
 *     bytes in the kernel and the network (and TCP's loss recovery) never
 *     sit in front of the urgent lane's;
 *  5. deliveries are tasks at their channel's priority, so the worker runs
 *     urgent handlers before bulk ones.
 *
 * Control frames (credit, ack, resume) travel on lane 0, the urgent lane; a
 * CLOSE goes on every lane (so that a lane's end without one is known to be
 * a loss, whatever order the connections' ends arrive in); a PONG answers on
 * the lane its PING came on. Session resumption is described in
 * core/node_internal.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <fdn/error.h>

#include "base/compiler.h"
#include "base/error.h"
#include "base/log.h"
#include "core/peer_internal.h"
#include "core/pool.h"
#include "core/worker_internal.h"

static void pump(struct fdn__lane *l);
static void peer_finish(fdn_peer *p);
static int finish_task(fdn_worker *w, fdn_task *t);
static void peer_suspend(fdn_peer *p);
static void notify_writable(fdn_peer *p);
static const struct fdn__tp_conn_events lane_conn_events;
static void lane_free(struct fdn__lane *l);
static void on_recv_result(struct fdn__lane *l, int rc);

/* The lane at index, or NULL when there is none (yet). */
static struct fdn__lane *lane_at(const fdn_peer *p, unsigned index)
{
    return index < FDN__MAX_LANES ? p->lanes[index] : NULL;
}

static void pump_lane(fdn_peer *p, unsigned index)
{
    struct fdn__lane *l = lane_at(p, index);
    if (l)
        pump(l);
}

/* ---- Control frames ------------------------------------------------------ */

/* Appends a control frame (header and payload) to the bytes that go out
 * ahead of the lane's next batch of data frames. */
static int queue_ctrl(struct fdn__lane *l, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    size_t hdr_len = fdn__frame_hdr_size(h);
    if (l->ctrl_len + hdr_len + h->frag_len > sizeof l->ctrl)
        return FDN_ERR(-ENOBUFS, "control queue of peer %s is full", l->peer->addr);
    fdn__frame_encode(h, l->ctrl + l->ctrl_len);
    l->ctrl_len += (uint32_t)hdr_len;
    if (h->frag_len && payload) {
        memcpy(l->ctrl + l->ctrl_len, payload, h->frag_len);
        l->ctrl_len += h->frag_len;
    }
    return 0;
}

static int queue_simple(struct fdn__lane *l, uint8_t type, uint16_t channel, uint64_t word)
{
    struct fdn__frame_hdr h = {.type = type, .channel = channel, .msg_id = word};
    return queue_ctrl(l, &h, NULL);
}

int fdn__lane_send_ctrl(struct fdn__lane *l, uint8_t type, uint16_t channel, uint64_t word)
{
    int rc = queue_simple(l, type, channel, word);
    pump(l);
    return rc;
}

/* Moves every message the handshake has for the peer into the control queue. */
static void queue_handshake_output(struct fdn__lane *l)
{
    const uint8_t *msg;
    size_t len;
    while ((len = fdn__handshake_next_output(l->hs, &msg)) > 0) {
        struct fdn__frame_hdr h = {
            .type = FDN__FRAME_HANDSHAKE,
            .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST,
            .frag_len = (uint32_t)len,
            .total_len = len,
        };
        queue_ctrl(l, &h, msg);
    }
}

/* ---- Lanes --------------------------------------------------------------- */

static int lane_timer(fdn_worker *w, fdn_task *t);
static int rx_resume_task(fdn_worker *w, fdn_task *t);
static int tx_resume_task(fdn_worker *w, fdn_task *t);

static int lane_create(fdn_peer *p, unsigned index, struct fdn__lane **out)
{
    fdn_node *n = p->node;
    struct fdn__lane *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    size_t stage = n->max_fragment > FDN__WIRE_HANDSHAKE_MAX ? n->max_fragment
                                                             : FDN__WIRE_HANDSHAKE_MAX;
    l->rx_stage = malloc(stage);
    l->batches = calloc(FDN__BATCHES, sizeof *l->batches);
    if (!l->rx_stage || !l->batches) {
        free(l->rx_stage);
        free(l->batches);
        free(l);
        return -ENOMEM;
    }
    l->peer = p;
    l->index = (uint8_t)index;
    l->max_inflight_bytes = n->max_inflight_bytes;
    fdn_timer_init(&l->timer, lane_timer, l, FDN_PRIO_HIGHEST);
    fdn__lane_liveness_init(l);
    fdn_task_init(&l->rx_resume, rx_resume_task, l, FDN_PRIO_DEFAULT);
    fdn_task_init(&l->tx_resume, tx_resume_task, l, FDN_PRIO_DEFAULT);
    if (n->faults) {
        int rc = fdn__lane_faults_create(l);
        if (rc < 0) {
            lane_free(l);
            return rc;
        }
    }
    *out = l;
    return 0;
}

/* An accepted connection gives back its places in the accept limits
 * (core/node.c): once its transport is gone, or its lane is freed first. */
static void release_places(struct fdn__lane *l)
{
    fdn__node_release(l->peer->node, l->host, l->pending);
    l->host = NULL;
    l->pending = false;
}

static void lane_free(struct fdn__lane *l)
{
    release_places(l);
    fdn__timer_stop(l->peer->node->worker, &l->heartbeat);
    fdn__worker_cancel_task(l->peer->node->worker, &l->rx_resume);
    fdn__worker_cancel_task(l->peer->node->worker, &l->tx_resume);
    if (l->faults)
        fdn__lane_faults_free(l);
    fdn__handshake_destroy(l->hs);
    free(l->rx_stage);
    free(l->batches);
    free(l);
}

/* A lane that carries an urgent channel keeps few bytes in flight, so an
 * urgent frame waits behind little; a bulk-only lane keeps enough to fill
 * the link. */
static uint64_t lane_budget(const fdn_peer *p, unsigned index)
{
    const fdn_node *n = p->node;
    for (int c = 0; c < n->num_channels; c++)
        if (p->channel_lane[c] == index && n->channels[c].cfg.priority < FDN_PRIO_DEFAULT)
            return n->max_inflight_bytes;
    return n->bulk_inflight_bytes;
}

/* Bulk-only lanes work in turns, so that their deep in-flight bound does
 * not turn into long stretches of work that urgent lanes wait behind on the
 * same worker. Receiving: completions are processed in arrival order,
 * whatever lane they belong to, so a ping that arrives behind a burst of
 * bulk buffers would wait until core has copied them all (up to a
 * megabyte: hundreds of microseconds); a bulk lane pauses after a turn's
 * bytes and resumes from a task at bulk priority, which the worker runs
 * after the urgent deliveries that arrived meanwhile. Sending: the kernel
 * copies a send's bytes when the worker submits, in submission order, so a
 * megabyte of bulk sends queued in one pass delays a ping's send in that
 * pass; a bulk lane hands over at most a turn's bytes, then waits for a
 * task at bulk priority. */
#define BULK_RX_BYTES_PER_TURN (128u << 10)
#define BULK_TX_BYTES_PER_TURN (64u << 10)

/* Sets a lane's bounds once its channels are known: in flight (see
 * lane_budget) and, for bulk-only lanes, a receive turn. */
static void lane_configure(const fdn_peer *p, struct fdn__lane *l)
{
    l->max_inflight_bytes = lane_budget(p, l->index);
    l->rx_turn_limit = l->max_inflight_bytes == p->node->bulk_inflight_bytes &&
                               p->node->bulk_inflight_bytes != p->node->max_inflight_bytes
                           ? BULK_RX_BYTES_PER_TURN
                           : 0;
}

/* The end of a bulk lane's receive turn: the worker ran the more urgent
 * tasks first; read on. */
static int rx_resume_task(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct fdn__lane *l = t->arg;
    l->rx_turn_bytes = 0;
    l->rx_turn_paused = false;
    if (l->conn && !l->closed && !(fdn__unlikely(l->faults) && fdn__lane_faults_rx_holding(l)))
        fdn__tp_recv_pause(l->conn, false);
    return FDN_TASK_DONE;
}

static void pump(struct fdn__lane *l);

static int tx_resume_task(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct fdn__lane *l = t->arg;
    l->tx_turn_bytes = 0;
    pump(l);
    return FDN_TASK_DONE;
}

static void end_rx_turn_if_due(struct fdn__lane *l, size_t len)
{
    if (!l->rx_turn_limit || l->rx_turn_paused || !l->conn)
        return;
    l->rx_turn_bytes += len;
    if (l->rx_turn_bytes < l->rx_turn_limit)
        return;
    l->rx_turn_paused = true;
    fdn__tp_recv_pause(l->conn, true);
    fdn_worker_schedule(l->peer->node->worker, &l->rx_resume);
}

void fdn__lane_close_transport(struct fdn__lane *l)
{
    if (l->conn && !l->close_sent) {
        l->close_sent = true;
        fdn__tp_conn_close(l->conn);
    }
}

/* Every transport has let go: the lanes' and the lost ones still closing. */
static bool all_lanes_closed(const fdn_peer *p)
{
    if (p->dying)
        return false;
    for (unsigned i = 0; i < FDN__MAX_LANES; i++)
        if (p->lanes[i] && !p->lanes[i]->closed)
            return false;
    return true;
}

/* Takes a lane off the peer (its connection is lost, or is being dropped)
 * onto the dying list: it is closed if it is not already, and freed by the
 * reap task once closed, never under a caller that may still be using it. */
static void lane_detach(fdn_peer *p, struct fdn__lane *l)
{
    fdn_worker *w = p->node->worker;
    p->lanes[l->index] = NULL;
    fdn__timer_stop(w, &l->timer);
    fdn__timer_stop(w, &l->heartbeat);
    if (l->faults)
        fdn__lane_faults_release_held(l);
    l->dying = true;
    l->next_dying = p->dying;
    p->dying = l;
    fdn__lane_close_transport(l);
    if (l->closed && !p->reap.queued)
        fdn_worker_schedule(w, &p->reap);
}

/* Dials the lane at index to the peer's address; the handshake follows once
 * the transport is up. */
static int dial_lane(fdn_peer *p, unsigned index)
{
    const char *rest;
    const struct fdn__transport *tp = fdn__transport_for(p->dial, &rest);
    if (!tp)
        return FDN_ERR(-EPROTONOSUPPORT, "no transport for address %s", p->dial);
    struct fdn__lane *l;
    int rc = lane_create(p, index, &l);
    if (rc < 0)
        return rc;
    rc = tp->connect(p->node->worker, rest, NULL, &lane_conn_events, l, &l->conn);
    if (rc < 0) {
        lane_free(l);
        return rc;
    }
    p->lanes[index] = l;
    return 0;
}

/* Outbound: dials lane 0 to the peer's dial choices from index `at` on,
 * stopping at the first whose dial starts. A choice can still fail once
 * started (on_connected moves on to the next then). Returns 0, or the
 * last choice's error when none could start. */
static int dial_choice(fdn_peer *p, unsigned at)
{
    int rc = -EINVAL;
    for (; at < p->num_dial_choices; at++) {
        p->dial_at = (uint8_t)at;
        snprintf(p->dial, sizeof p->dial, "%s", p->dial_choices[at]);
        snprintf(p->addr, sizeof p->addr, "%s", p->dial);
        rc = dial_lane(p, 0);
        if (rc == 0)
            break;
    }
    return rc;
}

/* p->addr: the peer's address as its connection sees it, behind the scheme
 * that names the transport. */
static void note_peer_addr(fdn_peer *p, struct fdn__tp_conn *conn)
{
    int n = snprintf(p->addr, sizeof p->addr, "%s", conn->tp->scheme);
    if (n > 0 && (size_t)n < sizeof p->addr)
        fdn__tp_conn_peer_addr(conn, p->addr + n, sizeof p->addr - (size_t)n);
}

/* ---- Failure and teardown ------------------------------------------------ */

void fdn__peer_say_end(const fdn_peer *p, const struct fdn__lane *l, int level, const char *fmt,
                       ...)
{
    if (!fdn__log_enabled(level))
        return;
    char reason[FDN__LOG_LINE_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    /* Every lane uses the transport lane 0 reached, which p->addr names. */
    fdn__node_log_end(p->node, level, p->addr, l ? l->index + 1 : 0, fdn_peer_transport(p), "%s",
                      reason);
}

/* A session's end in words: the errno's class, as the counters have it. */
static const char *fail_words(const fdn_peer *p, int reason, enum fdn__close_reason wire)
{
    switch (reason) {
    case 0: return wire == FDN__CLOSE_GOING_AWAY ? "node going away" : "closed by this node";
    case -EACCES: return "auth failed";
    case -EPROTONOSUPPORT: case -EPERM: return "handshake failed";
    case -EPROTO: case -EBADMSG: return "protocol error";
    case -EMSGSIZE: case -ENOSPC: return "limit exceeded";
    case -ETIMEDOUT: return p->announced_up ? "session expired" : "handshake timeout";
    case -ESTALE: return "resume refused";
    case -ECONNRESET: return "peer restarted";
    default: return fdn_strerror(reason);
    }
}

/* A lost connection in words: what this node did to it (end_why), else
 * what the transport says. */
static void loss_words(const struct fdn__lane *l, int err, char *buf, size_t len)
{
    if (l->end_why[0])
        snprintf(buf, len, "%s", l->end_why);
    else if (l->peer_idle)
        snprintf(buf, len, "idle timeout at the peer: it received nothing from us");
    else if (err == 0)
        snprintf(buf, len, "end of stream without CLOSE");
    else if (err == -ECONNRESET)
        snprintf(buf, len, "connection reset");
    else if (err == -ECONNABORTED)
        snprintf(buf, len, "connection aborted");
    else if (err == -ECANCELED)
        snprintf(buf, len, "connection closed by this node");
    else
        snprintf(buf, len, "%s", fdn_strerror(err));
}

static void count_failure(fdn_peer *p, int reason)
{
    fdn_node *n = p->node;
    if (reason == -ETIMEDOUT && p->announced_up) {
        n->stats.sessions_expired++;
        return;
    }
    switch (reason) {
    case -EACCES: n->stats.auth_failures++; break;
    case -EPROTONOSUPPORT: case -EPERM: n->stats.handshake_failures++; break;
    case -EPROTO: case -EBADMSG: n->stats.protocol_errors++; break;
    case -EMSGSIZE: case -ENOSPC: n->stats.limit_violations++; break;
    case -ETIMEDOUT: n->stats.handshake_timeouts++; break;
    default: break;
    }
}

/* Cancels the session's own timers (its deadline, redial and delayed ACK)
 * as it closes: none of them runs afterwards. Lanes stop their own. */
static void stop_session_timers(fdn_peer *p)
{
    fdn_worker *w = p->node->worker;
    fdn__timer_stop(w, &p->deadline);
    fdn__timer_stop(w, &p->redial);
    fdn__timer_stop(w, &p->ack_timer);
}

/* How long a closing connection may take to flush its last frames (CLOSE,
 * handshake diagnostics) before it is closed regardless. */
#define CLOSE_FLUSH_NS (1000ull * 1000 * 1000)

/* Ends the peer: says why on lane 0, flushes what every lane has in flight
 * (bounded by CLOSE_FLUSH_NS), then closes the transports. The peer is freed
 * once every transport reports on_closed, from a task of its own, so that a
 * callback that closes its peer never pulls it from under its caller. */
static void peer_fail_at(fdn_peer *p, const struct fdn__lane *at, int reason,
                         enum fdn__close_reason wire_reason)
{
    if (fdn__peer_closing(p))
        return;
    fdn_node *n = p->node;
    if (reason < 0) {
        count_failure(p, reason);
        /* The detail the failing call recorded; the words alone when it
         * begins with them ("handshake failed (cluster_mismatch): ..."). */
        const char *words = fail_words(p, reason, wire_reason);
        const char *detail = fdn__errmsg_detail();
        if (strncmp(detail, words, strlen(words)) == 0)
            fdn__peer_say_end(p, at, FDN_LOG_WARN, "%s", detail);
        else
            fdn__peer_say_end(p, at, FDN_LOG_WARN, "%s: %s", words, detail);
    } else {
        fdn__peer_say_end(p, at, FDN_LOG_INFO, "%s", fail_words(p, reason, wire_reason));
    }
    p->state = FDN__PEER_CLOSING;
    p->down_reason = reason;
    stop_session_timers(p);
    if (all_lanes_closed(p)) {
        if (!p->finish.queued)
            fdn_worker_schedule(n->worker, &p->finish);
        return;
    }
    for (unsigned i = 0; i < FDN__MAX_LANES; i++) {
        struct fdn__lane *l = p->lanes[i];
        if (!l || l->closed)
            continue;
        fdn_timer_cancel(n->worker, &l->timer);
        fdn__timer_stop(n->worker, &l->heartbeat);
        /* A peer that failed authentication gets nothing but a closed
         * connection (and a counter here): not even the reason. Every lane
         * says it, so that no lane's end looks like a loss to resume from. */
        if (l->hs && reason != -EACCES) {
            queue_simple(l, FDN__FRAME_CLOSE, 0, wire_reason);
            pump(l);
        }
        if (l->inflight_bytes == 0)
            fdn__lane_close_transport(l);
        else
            fdn_timer_arm(n->worker, &l->timer, CLOSE_FLUSH_NS);
    }
}

void fdn__peer_fail(fdn_peer *p, int reason, enum fdn__close_reason wire_reason)
{
    peer_fail_at(p, NULL, reason, wire_reason);
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

/* The transports have let go: tell the application, then free everything. */
static int finish_task(fdn_worker *w, fdn_task *t)
{
    (void)w;
    peer_finish(t->arg);
    return FDN_TASK_DONE;
}

/* Reliable messages the peer never acknowledged are lost with the session:
 * counted, so the sender is told (fdn_channel_stats.undelivered, and the
 * node's undelivered_msgs). */
static void count_undelivered(fdn_peer *p)
{
    for (int c = 0; c < p->node->num_channels; c++) {
        struct fdn__sched_channel_stats st;
        if (!fdn__peer_reliable(p, (unsigned)c) ||
            fdn__sched_channel_stats(p->sched, (uint16_t)c, &st) < 0)
            continue;
        uint64_t lost = st.queued_msgs + st.unacked_msgs;
        p->undelivered[c] += lost;
        p->node->stats.undelivered_msgs += lost;
    }
}

/* Reports the end of the session now: pending requests fail first, then
 * peer_down. The peer itself goes once its transports let go. */
static void tell_down(fdn_peer *p)
{
    fdn_node *n = p->node;
    if (p->down_told)
        return;
    p->down_told = true;
    fdn__peer_fail_requests(p);
    free_rx_queues(p);
    count_undelivered(p);
    if (p->announced_up || p->outbound) {
        n->stats.peers_down++;
        if (n->events.peer_down)
            n->events.peer_down(p, p->down_reason, n->events.arg);
    }
}

static void peer_finish(fdn_peer *p)
{
    fdn_node *n = p->node;
    fdn_worker *w = n->worker;
    tell_down(p);
    stop_session_timers(p);
    fdn__worker_cancel_task(w, &p->reap);
    if (n->faults) {   /* frames held back go back to the scheduler before it goes */
        for (unsigned i = 0; i < FDN__MAX_LANES; i++)
            if (p->lanes[i] && p->lanes[i]->faults)
                fdn__lane_faults_release_held(p->lanes[i]);
        for (struct fdn__lane *l = p->dying; l; l = l->next_dying)
            if (l->faults)
                fdn__lane_faults_release_held(l);
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        n->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    fdn__sched_destroy(p->sched);
    fdn__reasm_destroy(p->reasm);
    for (unsigned i = 0; i < FDN__MAX_LANES; i++)
        if (p->lanes[i])
            lane_free(p->lanes[i]);
    while (p->dying) {   /* none: the finish waits for them */
        struct fdn__lane *l = p->dying;
        p->dying = l->next_dying;
        lane_free(l);
    }
    free(p);
}

/* ---- Receiving ----------------------------------------------------------- */

static int deliver_task(fdn_worker *w, fdn_task *t);

/* Messages got through since the session resumed: its outage, if it had
 * one, is over (node_internal.h, "Session resumption"). */
static inline void session_progressed(fdn_peer *p)
{
    if (fdn__unlikely(p->outage_since))
        p->outage_since = 0;
}

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

/* Lane 0 when it can carry control frames of the session: up, and (after a
 * resumption) past our RESUME, which goes first. */
static struct fdn__lane *control_lane(const fdn_peer *p)
{
    struct fdn__lane *l = lane_at(p, 0);
    return l && l->up && p->state == FDN__PEER_UP ? l : NULL;
}

/* Queues an ACK of everything received complete on a reliable channel, if
 * there is anything new. A full control queue leaves it to the ack timer:
 * ACKs are cumulative, the next one says it all. */
static bool queue_ack(fdn_peer *p, uint16_t channel)
{
    struct fdn__rx_channel *rx = &p->rx[channel];
    struct fdn__lane *l = control_lane(p);
    if (!l || rx->received == rx->acked_sent || !fdn__peer_reliable(p, channel))
        return false;
    if (queue_simple(l, FDN__FRAME_ACK, channel, rx->received) < 0)
        return false;
    rx->acked_sent = rx->received;
    return true;
}

static int ack_timer_fired(fdn_worker *w, fdn_task *t)
{
    (void)w;
    fdn_peer *p = t->arg;
    bool any = false;
    for (int c = 0; c < p->node->num_channels; c++)
        any |= queue_ack(p, (uint16_t)c);
    if (any)
        pump(lane_at(p, 0));
    for (int c = 0; c < p->node->num_channels; c++)
        if (p->rx[c].usable && fdn__peer_reliable(p, (unsigned)c) &&
            p->rx[c].received != p->rx[c].acked_sent)
            fdn_timer_arm(p->node->worker, &p->ack_timer, FDN__ACK_DELAY_NS);
    return FDN_TASK_DONE;
}

/* A message of a reliable channel is complete: acknowledge it soon, at once
 * when FDN__ACK_EVERY have gathered. */
static void ack_soon(fdn_peer *p, uint16_t channel)
{
    struct fdn__rx_channel *rx = &p->rx[channel];
    if (rx->received - rx->acked_sent >= FDN__ACK_EVERY) {
        if (queue_ack(p, channel))
            pump(lane_at(p, 0));
    } else if (!fdn_timer_armed(&p->ack_timer) && !p->ack_timer.task.queued) {
        fdn_timer_arm(p->node->worker, &p->ack_timer, FDN__ACK_DELAY_NS);
    }
}

/* Grants the peer the credit that deliveries have freed, once enough has
 * accumulated to be worth a frame. Credit goes on lane 0, the urgent lane,
 * whatever lane the channel's data comes on, behind an ACK of the channel:
 * the sender learns a message arrived no later than it gets its bytes back,
 * so what it holds unacknowledged never exceeds the window. Without a lane
 * 0 (resuming) nothing is granted: the RESUME will say what the sender may
 * use. */
static void grant_credit(fdn_peer *p, uint16_t channel)
{
    struct fdn__lane *l = control_lane(p);
    if (!l)
        return;
    uint64_t grant = fdn__reasm_credit_to_grant(p->reasm, channel, p->rx[channel].window / 2);
    if (grant) {
        queue_ack(p, channel);
        queue_simple(l, FDN__FRAME_CREDIT, channel, grant);
        pump(l);
    }
}

/* Hands one message to the application, and counts it delivered: a
 * response to its request callback, a request to the request handler,
 * anything else to the message handler. */
static void deliver_one(fdn_peer *p, uint16_t channel, fdn_msg *m,
                        const struct fdn__rx_stash *what)
{
    struct fdn__channel *ch = &p->node->channels[channel];
    p->rx[channel].delivered++;
    if (what->kind == FDN__FRAME_RESPONSE) {
        fdn__peer_complete_request(p, channel, what->id, m);
    } else if (what->kind == FDN__FRAME_REQUEST && ch->on_request) {
        ch->on_request(p, channel, what->id, m, ch->on_request_arg);
    } else if (what->kind == 0 && ch->on_message) {
        ch->on_message(p, channel, m, ch->on_message_arg);
    } else {
        p->rx[channel].drops++;
        fdn_msg_free(m);
    }
}

#define DELIVER_BATCH 64             /* messages per run of a delivery task */
#define DELIVER_CHECK_EVERY 8        /* messages between credit and time-slice checks */
#define DELIVER_CHECK_BYTES (64u << 10) /* ... or bytes, whichever comes first */

/* Counts bytes the channel's handlers have had as consumed, and grants the
 * credit that frees. */
static void settle_credit(fdn_peer *p, struct fdn__rx_channel *rx, uint64_t bytes)
{
    fdn__reasm_consumed(p->reasm, rx->channel, bytes);
    grant_credit(p, rx->channel);
}

/* The delivery task of one channel: runs at the channel's priority, so the
 * worker delivers urgent channels first, and yields when its turn is long.
 * Credit goes back to the sender as messages are delivered, so a paused
 * channel stops granting while the others go on. */
static int deliver_task(fdn_worker *w, fdn_task *t)
{
    struct fdn__rx_channel *rx = t->arg;
    fdn_peer *p = rx->peer;
    unsigned budget = DELIVER_BATCH;
    uint64_t consumed = 0;
    while (rx->head && !rx->paused && budget--) {
        fdn_msg *m = rx->head;
        rx->head = m->qnext;
        if (!rx->head)
            rx->tail = NULL;
        rx->queued--;
        m->qnext = NULL;
        consumed += fdn_msg_total_len(m);
        struct fdn__rx_stash what;
        memcpy(&what, fdn__msg_scratch(m), sizeof what);  /* stashed by rx_message */
        deliver_one(p, rx->channel, m, &what);
        if (fdn__peer_closing(p))
            return FDN_TASK_DONE;
        /* Credit and the time slice are looked at every few messages, or
         * after any large one: per message, they cost a small message's
         * receiver a tenth of its time. */
        if (consumed >= DELIVER_CHECK_BYTES || budget % DELIVER_CHECK_EVERY == 0) {
            settle_credit(p, rx, consumed);
            consumed = 0;
            if (fdn_worker_should_yield(w))
                break;
        }
    }
    if (consumed)
        settle_credit(p, rx, consumed);
    return rx->head && !rx->paused ? FDN_TASK_YIELD : FDN_TASK_DONE;
}

/* Whether a complete message of the channel goes to its handler at once,
 * from the receive path, instead of through the delivery task: only on a
 * channel of the most urgent class, with nothing of its own queued before
 * it, while the worker is between tasks and no task of that class waits.
 * Then the run queue would have run its delivery next anyway, and nothing
 * decoded after it could have gone first; what is saved is the task's
 * queueing and the rest of the pass before it runs (about a fifth of a
 * small message's receive path, docs/PERFORMANCE.md, session 8). */
static bool deliver_now(const fdn_peer *p, const struct fdn__rx_channel *rx)
{
    return rx->deliver.prio == FDN_PRIO_HIGHEST && !rx->head && !rx->paused &&
           !fdn__peer_closing(p) && fdn__worker_class_free(p->node->worker, FDN_PRIO_HIGHEST);
}

/* A message is complete. Its kind and id (request, response or plain
 * message) are kept at the start of its headroom, which the application
 * never sees as payload (node creation checks the pool has that much
 * headroom), and it waits in its channel's queue for the delivery task,
 * unless it goes to its handler now (deliver_now). It counts as received
 * (and is acknowledged) now, not when consumed: the sender's retransmit
 * buffer need not wait for a slow consumer. */
static void rx_message(fdn_peer *p, uint16_t channel, fdn_msg *m)
{
    struct fdn__rx_channel *rx = &p->rx[channel];
    session_progressed(p);
    rx->received = rx->expected;
    if (fdn__peer_reliable(p, channel))
        ack_soon(p, channel);
    bool best_effort = p->node->channels[channel].cfg.delivery == FDN_BEST_EFFORT;
    if (best_effort && rx->paused) {
        /* Nobody is listening: drop rather than hold the window. */
        rx->drops++;
        settle_credit(p, rx, fdn_msg_total_len(m));
        fdn_msg_free(m);
        return;
    }
    if (deliver_now(p, rx)) {
        uint64_t bytes = fdn_msg_total_len(m);
        struct fdn__rx_stash what = rx->in_progress;
        deliver_one(p, channel, m, &what);
        if (!fdn__peer_closing(p))
            settle_credit(p, rx, bytes);
        return;
    }
    memcpy(fdn__msg_scratch(m), &rx->in_progress, sizeof rx->in_progress);
    rx_enqueue(rx, m);
    if (!rx->paused && !rx->deliver.queued)
        fdn_worker_schedule(p->node->worker, &rx->deliver);
}

/* The sequence number of a message's first fragment. On a reliable channel
 * it must be exactly the next: anything else means a frame was lost or
 * repeated below us, and the session resumes to recover it (-EILSEQ). On a
 * best-effort channel a gap is messages lost, counted; a repeat is never
 * sent, so it is an error there too. */
static int check_seq(fdn_peer *p, const struct fdn__frame_hdr *h)
{
    struct fdn__rx_channel *rx = &p->rx[h->channel];
    if (h->seq == rx->expected)
        return 0;
    if (h->seq > rx->expected && !fdn__peer_reliable(p, h->channel))
        return 0;
    p->node->stats.sequence_errors++;
    return FDN_ERR(-EILSEQ, "%s channel %u: message %" PRIu64 ", expected %" PRIu64, p->addr,
                   h->channel, h->seq, rx->expected);
}

/* A DATA frame. Its payload is at payload, or, when adopt is not NULL, is
 * adopt: a whole message that came by reference, delivered as it is (the
 * call takes adopt's reference whatever it returns). */
static int on_data_msg(fdn_peer *p, const struct fdn__frame_hdr *h, const uint8_t *payload,
                       fdn_msg *adopt)
{
    if (h->channel >= FDN_MAX_CHANNELS || !p->rx[h->channel].usable) {
        fdn_msg_free(adopt);
        return FDN_ERR(-EPROTO, "DATA frame from %s on channel %u, not agreed", p->addr,
                       h->channel);
    }
    struct fdn__rx_channel *rx = &p->rx[h->channel];
    bool first = h->flags & FDN__FRAME_FIRST;
    if (first) {
        int rc = check_seq(p, h);
        if (rc < 0) {
            fdn_msg_free(adopt);
            return rc;
        }
    }
    fdn_msg *done = NULL;
    int rc;
    if (adopt) {
        rc = fdn__reasm_adopt(p->reasm, h->channel, h->msg_id, h->total_len, adopt, &done);
        if (rc < 0)
            fdn_msg_free(adopt);
        else
            p->node->stats.zc_received++;
    } else {
        rc = fdn__reasm_fragment(p->reasm, h->channel, h->msg_id, h->offset, h->total_len,
                                 h->flags & FDN__FRAME_FIRST, h->flags & FDN__FRAME_LAST,
                                 payload, h->frag_len, p->node->pool, &done);
    }
    if (rc == -EPROTO) {
        /* A peer that breaks a limit is told apart from one that sends
         * nonsense: it is counted, and reported, as a limit violation. A
         * fragment out of its place is what a frame lost or repeated below
         * us looks like in mid-message: a sequence error, which resumes the
         * session (and drops the message in progress) like a gap between
         * messages does. */
        enum fdn__reasm_error why = fdn__reasm_last_error(p->reasm);
        if (why == FDN__REASM_OUT_OF_ORDER || why == FDN__REASM_UNEXPECTED_FIRST) {
            p->node->stats.sequence_errors++;
            return FDN_ERR(-EILSEQ, "%s channel %u: fragment out of place: %s", p->addr,
                           h->channel, fdn__reasm_error_name(why));
        }
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
    if (first) {   /* accepted: the message is this one now */
        rx->lost += h->seq - rx->expected;
        rx->expected = h->seq + 1;
        rx->in_progress = (struct fdn__rx_stash){
            .id = h->flags & FDN__FRAME_RESPONSE ? h->corr_id : h->seq,
            .kind = h->flags & FDN__MSG_KIND_MASK,
        };
    }
    if (rc == 1)
        rx_message(p, h->channel, done);
    return 0;
}

static int on_data(fdn_peer *p, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    return on_data_msg(p, h, payload, NULL);
}

/* A PACKED frame received: each message in turn, as if it had come in a
 * frame of its own, numbered from the frame's sequence number on. The
 * records are walked once before any message is taken, so that a frame
 * with a record cut short is refused whole, as any malformed frame is, not
 * after its first messages were delivered. (Over shm the payload may change
 * between the walks: the second checks every record again.) A message that
 * breaks a limit ends the frame there: those before it were taken, and
 * count as packed messages received; the frame counts only when whole. */
static int on_packed(struct fdn__lane *l, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    fdn_peer *p = l->peer;
    if (!l->packs)
        return FDN_ERR(-EPROTO, "PACKED frame from %s, which this connection did not agree to",
                       p->addr);
    struct fdn__frame_hdr one = {
        .type = FDN__FRAME_DATA,
        .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST,
        .channel = h->channel,
        .seq = h->seq,
    };
    enum fdn__wire_error why;
    int rc;
    for (int take = 0; take < 2; take++) {
        uint32_t pos = 0, at, len;
        while ((rc = fdn__packed_next(payload, h->frag_len, &pos, &at, &len, &why)) == 1) {
            if (!take)
                continue;
            one.frag_len = len;
            one.total_len = len;
            rc = on_data(p, &one, payload + at);
            if (rc < 0) {
                p->node->stats.packed_msgs_received += one.seq - h->seq;
                return rc;
            }
            one.seq++;
        }
        if (rc < 0)
            return FDN_ERR(rc, "bad frame from %s: %s", p->addr, fdn__wire_error_name(why));
    }
    p->node->stats.packed_frames_received++;
    p->node->stats.packed_msgs_received += one.seq - h->seq;
    return 0;
}

static int on_handshake_done(struct fdn__lane *l);

static int on_handshake_frame(struct fdn__lane *l, const uint8_t *payload, uint32_t len)
{
    if (l->up || !l->hs)
        return FDN_ERR(-EPROTO, "HANDSHAKE frame from %s after the handshake", l->peer->addr);
    int rc = fdn__handshake_feed(l->hs, payload, len);
    queue_handshake_output(l);
    if (rc == FDN__HS_DONE)
        rc = on_handshake_done(l);   /* may move l to another peer */
    pump(l);
    return rc < 0 ? rc : 0;
}

/* The peer acknowledges messages of a reliable channel: the scheduler lets
 * go of them, which makes room in the channel's queue. */
static int on_ack(fdn_peer *p, const struct fdn__frame_hdr *h)
{
    uint16_t c = h->channel;
    if (c >= FDN_MAX_CHANNELS || !p->rx[c].usable || !fdn__peer_reliable(p, c))
        return FDN_ERR(-EPROTO, "ACK from %s for channel %u", p->addr, c);
    if (h->acked > p->next_seq[c])
        return FDN_ERR(-EPROTO, "%s acknowledges %" PRIu64 " messages of channel %u, %" PRIu64
                       " sent", p->addr, h->acked, c, p->next_seq[c]);
    int rc = fdn__sched_ack(p->sched, c, h->acked);
    if (rc < 0)
        return rc;
    if (rc)
        session_progressed(p);
    notify_writable(p);
    return 0;
}

static int on_credit(fdn_peer *p, const struct fdn__frame_hdr *h)
{
    uint16_t c = h->channel;
    if (c >= FDN_MAX_CHANNELS || !p->rx[c].usable)
        return FDN_ERR(-EPROTO, "CREDIT frame from %s for channel %u", p->addr, c);
    if (p->resume_wait) {
        /* The peer grants only after its RESUME, which sets the base. */
        if (!p->resume_have)
            return FDN_ERR(-EPROTO, "CREDIT from %s before its RESUME", p->addr);
        uint64_t w = p->resume_in[c].window + h->credit_bytes;
        p->resume_in[c].window = w > UINT32_MAX ? UINT32_MAX : (uint32_t)w;
        return 0;
    }
    fdn__sched_grant(p->sched, c, h->credit_bytes);
    pump_lane(p, p->channel_lane[c]);
    return 0;
}

static int on_resume(struct fdn__lane *l, const struct fdn__frame_hdr *h, const uint8_t *payload);

/* One whole frame: header decoded, payload (frag_len bytes) at hand. */
static int on_frame(struct fdn__lane *l, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    fdn_peer *p = l->peer;
    bool up = l->up && p->state == FDN__PEER_UP;
    switch (h->type) {
    case FDN__FRAME_DATA:
        if (!up)
            return FDN_ERR(-EPROTO, "DATA frame from %s before the handshake finished", p->addr);
        if (h->flags & FDN__FRAME_PACKED)
            return on_packed(l, h, payload);
        if (fdn__unlikely(l->faults))
            return fdn__lane_faults_rx(l, h, payload);
        return on_data(p, h, payload);
    case FDN__FRAME_HANDSHAKE:
        return on_handshake_frame(l, payload, h->frag_len);
    case FDN__FRAME_CREDIT:
        if (!up)
            return FDN_ERR(-EPROTO, "CREDIT frame from %s before the handshake", p->addr);
        return on_credit(p, h);
    case FDN__FRAME_ACK:
        if (!up)
            return FDN_ERR(-EPROTO, "ACK frame from %s before the handshake", p->addr);
        return on_ack(p, h);
    case FDN__FRAME_RESUME:
        if (!up || l->index != 0)
            return FDN_ERR(-EPROTO, "RESUME frame from %s on lane %u", p->addr, l->index);
        return on_resume(l, h, payload);
    case FDN__FRAME_PING:
        queue_simple(l, FDN__FRAME_PONG, 0, h->ping_token);
        pump(l);
        return 0;
    case FDN__FRAME_PONG:
        l->pongs_received++;
        p->node->stats.pongs_received++;
        return 0;
    case FDN__FRAME_CLOSE:
        /* A join refused: only this lane is lost (its close follows), and
         * the session resumes (see join_session). */
        if (h->close_reason == FDN__CLOSE_SESSION_UNKNOWN && l->index != 0)
            return 0;
        if (h->close_reason == FDN__CLOSE_IDLE_TIMEOUT) {
            /* The peer heard nothing from us on this lane for too long and
             * drops the connection: a loss, which the session resumes
             * from, not the end of the session. */
            l->peer_idle = true;
            return 0;
        }
        /* The peer is leaving and says why; its transport close follows,
         * possibly as a reset (it may close with our bytes unread), which
         * must not turn an orderly goodbye into an error. */
        p->close_received = true;
        p->close_reason_in = h->close_reason;
        p->down_reason = h->close_reason == FDN__CLOSE_NORMAL ||
                                 h->close_reason == FDN__CLOSE_GOING_AWAY
                             ? 0
                             : -ECONNRESET;
        return 0;
    default:
        return FDN_ERR(-EPROTO, "frame type %u from %s", h->type, p->addr);
    }
}

/* Whether the lane's transport passes payloads by reference, so a DATA
 * frame may exceed max_fragment (its payload then must come that way).
 * Not with the fault layer on: it copies payloads into a buffer of
 * max_fragment, and sends nothing whole itself. */
static bool lane_refs(const struct fdn__lane *l)
{
    return l->conn && (l->conn->tp->caps & FDN__TP_REFS) && !l->faults;
}

/* Bytes from the transport: frames may start, end or be split anywhere.
 * A header is gathered in rx_hdr until the decoder has all of it (32 bytes,
 * or 64 with a trace extension); a payload that arrived whole is used where
 * it lies, one split across receives is staged. The lane's peer is looked
 * up afresh for every frame: a joining lane changes peers mid-receive. */
static int on_recv(struct fdn__lane *l, const uint8_t *data, size_t len)
{
    if (fdn__unlikely(l->faults) && fdn__lane_faults_rx_holding(l))
        return fdn__lane_faults_rx_keep(l, data, len);
    /* A lane being dropped reads nothing more: its session goes on, or
     * ends, without what it still had in flight. */
    while (!fdn__peer_closing(l->peer) && !l->dying) {
        if (!l->rx_in_payload) {
            if (len == 0)
                break;
            enum fdn__wire_error why;
            struct fdn__wire_limits lim = l->peer->limits;
            if (lane_refs(l) && lim.max_message > lim.max_fragment)
                lim.max_fragment = lim.max_message > UINT32_MAX ? UINT32_MAX
                                                                : (uint32_t)lim.max_message;
            /* A header that arrived whole is decoded where it lies (the
             * decoder checks its own copy of each field, so bytes a peer
             * changes in shared memory meanwhile cannot pass a check and
             * then be used differently); one split across receives is
             * gathered. */
            size_t take = 0;
            int rc = 0;
            if (l->rx_hdr_have == 0)
                rc = fdn__frame_decode(data, len, &lim, &l->rx_frame, &why);
            if (rc == 0) {
                take = FDN__FRAME_MAX_HDR_SIZE - l->rx_hdr_have;
                if (take > len)
                    take = len;
                memcpy(l->rx_hdr + l->rx_hdr_have, data, take);
                if (l->rx_hdr_have)
                    rc = fdn__frame_decode(l->rx_hdr, l->rx_hdr_have + take, &lim,
                                           &l->rx_frame, &why);
            }
            if (rc < 0)
                return FDN_ERR(rc, "bad frame from %s: %s", l->peer->addr,
                               fdn__wire_error_name(why));
            if (rc == 0) { /* the header continues in the next receive */
                l->rx_hdr_have += (uint32_t)take;
                break;
            }
            size_t used = (size_t)rc - l->rx_hdr_have;
            data += used;
            len -= used;
            l->rx_hdr_have = 0;
            l->rx_in_payload = true;
            l->rx_stage_have = 0;
            l->rx_need_ref = l->rx_frame.frag_len > l->peer->limits.max_fragment;
        }
        if (l->rx_need_ref) {
            if (len == 0)
                break; /* the payload's reference comes next */
            return FDN_ERR(-EMSGSIZE, "bad frame from %s: %s (%" PRIu32 " bytes, and not by "
                           "reference)", l->peer->addr,
                           fdn__wire_error_name(FDN__WIRE_FRAGMENT_TOO_LARGE),
                           l->rx_frame.frag_len);
        }
        uint32_t frag_len = l->rx_frame.frag_len;
        const uint8_t *payload = data;
        if (l->rx_stage_have == 0 && len >= frag_len) {
            data += frag_len;   /* whole in this receive: no copy */
            len -= frag_len;
        } else {
            uint32_t take = frag_len - l->rx_stage_have;
            if (take > len)
                take = (uint32_t)len;
            memcpy(l->rx_stage + l->rx_stage_have, data, take);
            l->rx_stage_have += take;
            data += take;
            len -= take;
            if (l->rx_stage_have < frag_len)
                break;
            payload = l->rx_stage;
        }
        l->rx_in_payload = false;
        int rc = on_frame(l, &l->rx_frame, payload);
        if (fdn__unlikely(rc != 0)) {
            if (rc == 2)   /* the fault layer holds the frame, and what follows */
                return fdn__lane_faults_rx_keep(l, data, len);
            return rc < 0 ? rc : 0;   /* 1: the fault layer reset the lane */
        }
    }
    return 0;
}

/* A payload by reference (FDN__TP_REFS). When it is exactly the payload of
 * the frame whose header was just decoded, and that frame is a whole DATA
 * message, the message is delivered as it is, without a copy; any other
 * frame is decoded from it in place; and bytes that are not one frame's
 * payload are taken like any bytes. Takes m's reference. */
static int on_recv_ref(struct fdn__lane *l, fdn_msg *m)
{
    if (fdn__peer_closing(l->peer) || l->dying) {
        fdn_msg_free(m);
        return 0;
    }
    if (!l->rx_in_payload || l->rx_stage_have || fdn_msg_len(m) != l->rx_frame.frag_len) {
        int rc = l->rx_need_ref ? FDN_ERR(-EMSGSIZE, "bad frame from %s: a %" PRIu32 "-byte "
                                          "payload came as %zu bytes by reference",
                                          l->peer->addr, l->rx_frame.frag_len, fdn_msg_len(m))
                                : on_recv(l, fdn_msg_data(m), fdn_msg_len(m));
        fdn_msg_free(m);
        return rc;
    }
    l->rx_in_payload = false;
    l->rx_need_ref = false;
    const struct fdn__frame_hdr *h = &l->rx_frame;
    fdn_peer *p = l->peer;
    const uint16_t whole = FDN__FRAME_FIRST | FDN__FRAME_LAST;
    if (h->type == FDN__FRAME_DATA && (h->flags & whole) == whole &&
        !(h->flags & FDN__FRAME_PACKED) && !l->faults && l->up && p->state == FDN__PEER_UP)
        return on_data_msg(p, h, NULL, m);
    int rc = on_frame(l, h, fdn_msg_data(m));
    fdn_msg_free(m);
    return rc < 0 ? rc : 0;
}

/* ---- Sending ------------------------------------------------------------- */

/* A batch not with the transport. The busy bits live in the lane: each
 * batch is kilobytes, and its own flag would cost a cache line per look. */
static struct fdn__batch *free_batch(struct fdn__lane *l)
{
    unsigned free = ~(unsigned)l->busy_batches & ((1u << FDN__BATCHES) - 1);
    return free ? &l->batches[__builtin_ctz(free)] : NULL;
}

_Static_assert(FDN__BATCHES <= 8, "one busy bit per batch");

static void batch_set_busy(struct fdn__lane *l, const struct fdn__batch *b, bool busy)
{
    uint8_t bit = (uint8_t)(1u << (b - l->batches));
    l->busy_batches = busy ? l->busy_batches | bit : l->busy_batches & (uint8_t)~bit;
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
    uint16_t flags = (uint16_t)((f->first ? FDN__FRAME_FIRST : 0) | (f->last ? FDN__FRAME_LAST : 0));
    /* The kind describes the message: on its first fragment only. */
    if (f->first && f->kind)
        flags |= f->kind | (f->kind == FDN__FRAME_RESPONSE ? FDN__FRAME_CORR : 0);
    struct fdn__frame_hdr h = {
        .type = FDN__FRAME_DATA,
        .flags = flags,
        .channel = f->channel,
        .frag_len = f->len,
        .seq = f->msg_id,
        .offset = f->offset,
        .total_len = f->total_len,
        .corr_id = f->tag,
    };
    size_t hdr_len = fdn__frame_encode(&h, b->hdr[k]);
    b->iov[*niov] = (struct iovec){b->hdr[k], hdr_len};
    b->iov_msg[*niov] = NULL;
    int n = fdn__frame_iov(f, &b->iov[*niov + 1], FDN__MAX_SEGMENTS);
    for (int i = 1; i <= n; i++)
        b->iov_msg[*niov + i] = f->msg;
    *niov += 1 + n;   /* n >= 0: the chain was bounded at fdn_send */
    b->frames[k] = *f;
    b->num_frames++;
    return hdr_len + f->len;
}

/* ---- Packing ---------------------------------------------------------------- *
 *
 * A stream of small messages pays per frame: a 32-byte header to encode,
 * send and decode, and a pass through the scheduler and the transport. So
 * when both ends agreed (FDN__CAP_PACKED), the scheduler hands out several
 * whole small messages of one channel as one frame (fdn__sched_next_packed:
 * each still costs its channel's credit and deficit, so priorities, shares
 * and credit hold), and the batch copies them, each behind its length, into
 * its pack buffer after one PACKED header (core/wire.h). The receiver
 * unpacks them into messages as if each had had a frame of its own. The
 * copy is of messages of at most FDN__PACK_MSG_MAX bytes, which a copying
 * transport copies anyway; larger ones, and those lent by reference, go in
 * frames of their own. Requests and responses are never packed: their
 * header carries what they are. Nor is anything while the fault layer is
 * on: its faults act on frames, and a node with rules does not offer the
 * capability, so neither end packs. */

/* What the batch's pack buffer can still take. */
static struct fdn__sched_pack pack_room(const struct fdn__lane *l, const struct fdn__batch *b)
{
    uint32_t left = FDN__PACK_BYTES - b->pack_used;
    uint32_t room = left > FDN__FRAME_HDR_SIZE ? left - FDN__FRAME_HDR_SIZE : 0;
    uint32_t max_fragment = l->peer->limits.max_fragment;
    return (struct fdn__sched_pack){
        .max_msgs = FDN__PACK_MAX_MSGS,
        .max_msg_len = FDN__PACK_MSG_MAX,
        .room = room < max_fragment ? room : max_fragment,
        .per_msg = FDN__PACKED_REC_HDR,
    };
}

/* Whether the batch's pack buffer cannot take a frame of the largest
 * message packed: the batch then ends, and the next one packs on. */
static bool pack_buffer_full(const struct fdn__batch *b)
{
    return FDN__PACK_BYTES - b->pack_used <
           FDN__FRAME_HDR_SIZE + FDN__PACKED_REC_HDR + FDN__PACK_MSG_MAX;
}

/* Adds a packed frame: header and records copied into the pack buffer,
 * one iovec. Returns the bytes it adds. */
static size_t add_packed(fdn_node *n, struct fdn__batch *b, int *niov, const struct fdn__frame *f)
{
    uint8_t *start = b->pack + b->pack_used;
    uint8_t *rec = start + FDN__FRAME_HDR_SIZE;
    for (uint32_t i = 0; i < f->msgs; i++) {
        uint8_t *len_at = rec;
        rec += FDN__PACKED_REC_HDR;
        for (const fdn_msg *m = fdn__frame_msg(f, i); m; m = m->next) {
            memcpy(rec, m->data, m->len);
            rec += m->len;
        }
        fdn__store_le32(len_at, (uint32_t)(rec - len_at - FDN__PACKED_REC_HDR));
    }
    uint32_t frag_len = (uint32_t)(rec - start - FDN__FRAME_HDR_SIZE);
    struct fdn__frame_hdr h = {
        .type = FDN__FRAME_DATA,
        .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST | FDN__FRAME_PACKED,
        .channel = f->channel,
        .frag_len = frag_len,
        .seq = f->msg_id,
        .total_len = frag_len,
    };
    fdn__frame_encode(&h, start);
    size_t bytes = FDN__FRAME_HDR_SIZE + frag_len;
    b->pack_used += (uint32_t)bytes;
    b->iov_msg[*niov] = NULL;
    b->iov[(*niov)++] = (struct iovec){start, bytes};
    b->frames[b->num_frames++] = *f;
    n->stats.packed_frames_sent++;
    n->stats.packed_msgs_sent += f->msgs;
    return bytes;
}

/* The lane's shared pool, when its transport has one (FDN__TP_REFS) and
 * the lane is up: messages in it cross whole and by reference. None while
 * the fault layer is on, which rewrites the bytes it sends. */
static fdn_pool *lane_zc_pool(const struct fdn__lane *l)
{
    if (!l || !l->up || !l->conn || l->dying || l->faults)
        return NULL;
    return fdn__tp_tx_pool(l->conn);
}

/* The scheduler's question (fdn__sched_whole_fn): a one-buffer message in
 * the lane's shared pool goes as one frame, whatever max_fragment is; its
 * descriptor takes a few bytes of the ring, so urgent frames do not wait
 * behind it. */
static bool sched_whole(void *arg, unsigned lane, const fdn_msg *m)
{
    fdn_peer *p = arg;
    if (m->next || m->pool == p->node->pool || lane >= FDN__MAX_LANES)
        return false;
    fdn_pool *zc = lane_zc_pool(p->lanes[lane]);
    return zc && m->pool == zc;
}

/* Whether the lane may send data frames now. After a resumption, data
 * waits until the peer's RESUME has said what it has (and the old lanes'
 * sends are all accounted for). */
static bool data_may_go(const struct fdn__lane *l)
{
    return l->up && l->peer->state == FDN__PEER_UP && !l->peer->resume_wait;
}

/* Whether a frame of len bytes asks the transport for a zero-copy send. */
static bool zerocopy_worth(const fdn_node *n, uint32_t len)
{
    return n->zerocopy_min && len >= n->zerocopy_min;
}

/* What the lane may have in flight before it starts another batch: its
 * bound, and on a bulk lane the end of this turn (see lane_configure). */
static uint64_t lane_send_cap(const struct fdn__lane *l)
{
    uint64_t cap = l->max_inflight_bytes;
    if (l->rx_turn_limit) {
        uint64_t turn_end = l->inflight_bytes + (BULK_TX_BYTES_PER_TURN - l->tx_turn_bytes);
        if (l->tx_turn_bytes >= BULK_TX_BYTES_PER_TURN)
            turn_end = l->inflight_bytes;
        if (turn_end < cap)
            cap = turn_end;
    }
    return cap;
}

/* Starts a batch with the control frames waiting, which go first. Returns
 * their bytes. */
static size_t batch_begin(struct fdn__lane *l, struct fdn__batch *b, int *niov)
{
    b->num_frames = 0;
    b->pack_used = 0;
    if (!l->ctrl_len)
        return 0;
    memcpy(b->ctrl, l->ctrl, l->ctrl_len);
    b->iov_msg[*niov] = NULL;
    b->iov[(*niov)++] = (struct iovec){b->ctrl, l->ctrl_len};
    size_t bytes = l->ctrl_len;
    l->ctrl_len = 0;
    return bytes;
}

/* Hands a batch to the transport. A transport that refuses is closing: the
 * frames count as done, their messages are released with the peer. */
static int batch_submit(struct fdn__lane *l, struct fdn__batch *b, int niov, size_t bytes,
                        uint64_t cost, bool big)
{
    /* The fault layer rewrites iovecs of its own: everything is copied
     * then (lane_zc_pool is NULL too, so nothing was sent whole). */
    b->send = (struct fdn__tp_send){.iov = b->iov, .iovcnt = niov, .len = bytes,
                                    .zerocopy = big,
                                    .iov_msg = l->faults ? NULL : b->iov_msg};
    batch_set_busy(l, b, true);
    b->cost = cost;
    l->inflight_bytes += cost;
    if (fdn__tp_send(l->conn, &b->send) == 0)
        return 0;
    batch_set_busy(l, b, false);
    l->inflight_bytes -= cost;
    for (int i = 0; i < b->num_frames; i++)
        fdn__sched_frame_done(l->peer->sched, &b->frames[i]);
    return -EPIPE;
}

/* A bulk lane counts what it put in flight since `start` against its turn. */
static void end_tx_turn_if_due(struct fdn__lane *l, uint64_t start)
{
    if (!l->rx_turn_limit || l->inflight_bytes <= start)
        return;
    l->tx_turn_bytes += (uint32_t)(l->inflight_bytes - start);
    if (l->tx_turn_bytes >= BULK_TX_BYTES_PER_TURN && !l->tx_resume.queued)
        fdn_worker_schedule(l->peer->node->worker, &l->tx_resume);
}

/* Whether the lane has a connection to send on: connected, its handshake
 * begun, and not being dropped. */
static bool lane_connected(const struct fdn__lane *l)
{
    return l && l->conn && l->hs && !l->dying;
}

/* Fills batches from the lane's control queue and the scheduler's channels
 * of this lane, and hands them to the transport while fewer than the lane's
 * max_inflight_bytes are outstanding. One batch is one transport send:
 * control bytes first, then data frames. */
static void pump(struct fdn__lane *l)
{
    if (!lane_connected(l))   /* not connected yet, or lost */
        return;
    if (fdn__unlikely(l->faults) && fdn__lane_faults_reset(l))
        return;
    fdn_peer *p = l->peer;
    bool data = data_may_go(l);
    uint64_t cap = lane_send_cap(l);
    uint64_t start = l->inflight_bytes;
    struct fdn__batch *b;
    while (l->inflight_bytes < cap && (b = free_batch(l))) {
        int niov = 0;
        size_t batch_bytes = batch_begin(l, b, &niov);
        uint64_t cost = batch_bytes;  /* a payload lent by reference costs a descriptor */
        bool big = false;
        fdn_pool *zc = lane_zc_pool(l);
        if (fdn__unlikely(l->faults) && data) {
            data = fdn__lane_faults_tx_ready(l, b, &niov, &batch_bytes);
            cost = batch_bytes;
        }
        while (data && b->num_frames < FDN__BATCH_FRAMES &&
               niov + FRAME_IOVECS <= (int)FDN_ARRAY_SIZE(b->iov) - FDN__FAULT_IOVECS &&
               l->inflight_bytes + cost < cap) {
            struct fdn__frame f;
            if (l->packs) {
                if (b->num_frames && pack_buffer_full(b))
                    break;
                struct fdn__sched_pack pk = pack_room(l, b);
                if (!fdn__sched_next_packed(p->sched, l->index, &pk, &f))
                    break;
            } else if (!fdn__sched_next(p->sched, l->index, &f)) {
                break;
            }
            if (fdn__unlikely(l->faults)) {
                data = fdn__lane_faults_tx(l, b, &niov, &batch_bytes, &f);
                cost = batch_bytes;
                continue;
            }
            if (f.msgs > 1) {
                size_t bytes = add_packed(p->node, b, &niov, &f);
                batch_bytes += bytes;
                cost += bytes;
                continue;
            }
            size_t bytes = add_frame(b, &niov, &f);
            batch_bytes += bytes;
            cost += zc && f.len && f.msg->pool == zc ? bytes - f.len + FDN__TP_REF_COST : bytes;
            big |= zerocopy_worth(p->node, f.len);
        }
        if (niov == 0)
            break;
        if (batch_submit(l, b, niov, batch_bytes, cost, big) < 0)
            return;
    }
    end_tx_turn_if_due(l, start);
    if (fdn__unlikely(l->faults) && fdn__lane_faults_reset(l))
        fdn__lane_close_transport(l);   /* after what was batched before the RESET */
}

/* ---- Sending at once ------------------------------------------------------ *
 *
 * A message sent while its lane has nothing else to send would be the
 * scheduler's next pick, alone in its frame: it goes out from fdn_send,
 * without joining a round to be picked from it and without a batch search
 * that finds nothing more (fdn__sched_enqueue_now). This is the ping-pong
 * case, one message in flight. The message must be one buffer of the
 * node's pool (never lent by reference, so it costs its bytes in flight),
 * and the lane must be free to send now: up, with data allowed, no fault
 * layer, a free batch and room under its in-flight bound. Otherwise the
 * message is queued and pump decides, as for any other. */

/* The batch a message may go out in at once, or NULL. */
static struct fdn__batch *send_now_batch(fdn_peer *p, struct fdn__lane *l, const fdn_msg *msg)
{
    if (!lane_connected(l) || l->faults || !data_may_go(l) || msg->next ||
        msg->pool != p->node->pool)
        return NULL;
    if (l->inflight_bytes + l->ctrl_len >= lane_send_cap(l))
        return NULL;
    return free_batch(l);
}

/* Sends the frame fdn__sched_enqueue_now handed out, behind any control
 * frames waiting. */
static void send_now(struct fdn__lane *l, struct fdn__batch *b, const struct fdn__frame *f)
{
    uint64_t start = l->inflight_bytes;
    int niov = 0;
    size_t bytes = batch_begin(l, b, &niov);
    bytes += add_frame(b, &niov, f);
    if (batch_submit(l, b, niov, bytes, bytes, zerocopy_worth(l->peer->node, f->len)) < 0)
        return;
    l->peer->node->stats.sent_at_once++;
    end_tx_turn_if_due(l, start);
}

static void notify_writable(fdn_peer *p)
{
    for (int c = 0; c < p->node->num_channels; c++) {
        struct fdn__rx_channel *rx = &p->rx[c];
        if (!rx->writable)
            continue;
        struct fdn__sched_channel_stats st;
        fdn__sched_channel_stats(p->sched, (uint16_t)c, &st);
        if (st.queued_msgs + st.unacked_msgs < p->node->channels[c].cfg.max_queued) {
            fdn_task *t = rx->writable;
            rx->writable = NULL;
            if (!t->queued)
                fdn_worker_schedule(p->node->worker, t);
        }
    }
}

static void on_sent(void *ctx, struct fdn__tp_send *send, int err)
{
    struct fdn__lane *l = ctx;
    fdn_peer *p = l->peer;
    struct fdn__batch *b = fdn__container_of(send, struct fdn__batch, send);
    (void)err; /* a failed send is followed by on_closed, which ends the peer */
    l->inflight_bytes -= b->cost;
    if (err == 0)
        l->bytes_sent += send->len;
    batch_set_busy(l, b, false);
    for (int i = 0; i < b->num_frames; i++)
        fdn__sched_frame_done(p->sched, &b->frames[i]);
    b->num_frames = 0;
    if (l->dying)
        return;
    if (fdn__peer_closing(p)) {
        pump(l);   /* a CLOSE may still wait for a batch */
        if (l->inflight_bytes == 0)
            fdn__lane_close_transport(l);
        return;
    }
    notify_writable(p);
    pump(l);
}

/* The lane's handshake is done and its channels are known: it carries
 * traffic within its bounds, and its liveness is checked from now on. */
static void lane_set_up(fdn_peer *p, struct fdn__lane *l)
{
    l->up = true;
    lane_configure(p, l);
    fdn__lane_liveness_start(l);
}

/* ---- Handshake ----------------------------------------------------------- */

/* The lane's timer: the handshake deadline; while closing, the flush bound.
 * A lane of a session that was up (a lane joining, or lane 0 redialled)
 * that does not finish its handshake is dropped like a lost connection:
 * on_closed decides whether the session resumes or tries again. */
static int lane_timer(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct fdn__lane *l = t->arg;
    fdn_peer *p = l->peer;
    uint64_t ms = p->node->handshake_timeout_ns / 1000000;
    if (fdn__peer_closing(p)) {
        fdn__lane_close_transport(l);
    } else if (p->announced_up) {
        p->node->stats.handshake_timeouts++;
        snprintf(l->end_why, sizeof l->end_why, "handshake timeout: none within %" PRIu64 " ms",
                 ms);
        fdn__lane_close_transport(l);
    } else {
        peer_fail_at(p, l, FDN_ERR(-ETIMEDOUT, "none within %" PRIu64 " ms", ms),
                     FDN__CLOSE_HANDSHAKE_FAILED);
    }
    return FDN_TASK_DONE;
}

static int start_handshake(struct fdn__lane *l)
{
    fdn_peer *p = l->peer;
    fdn_node *n = p->node;
    struct fdn__handshake_config cfg = {
        .role = p->outbound ? FDN__HS_CLIENT : FDN__HS_SERVER,
        .incarnation = n->incarnation,
        .session = p->session,
        .lane = l->index,
        .lane_count = n->lanes,
        .resume = p->outbound && l->index == 0 && p->state == FDN__PEER_RESUMING,
        .cluster_name = n->cluster,
        .channels = n->descs,
        .channel_count = (uint16_t)n->num_channels,
        .limits = p->limits,
        .capabilities = n->faults ? 0 : FDN__CAP_PACKED,   /* see "Packing" */
    };
    memcpy(cfg.node_id, n->node_id, sizeof cfg.node_id);
    memcpy(cfg.secret, n->secret, sizeof cfg.secret);
    int rc = fdn__handshake_create(&cfg, &l->hs);
    memset(cfg.secret, 0, sizeof cfg.secret);
    if (rc < 0)
        return rc;
    fdn_timer_arm(n->worker, &l->timer, n->handshake_timeout_ns);
    queue_handshake_output(l);
    pump(l);
    return 0;
}

/* Puts each channel on its lane: the one configured, or lane 0 when the
 * peer agreed to fewer lanes. */
static void map_lanes(fdn_peer *p)
{
    fdn_node *n = p->node;
    for (int c = 0; c < n->num_channels; c++) {
        unsigned lane = n->channels[c].cfg.lane - 1u;
        if (lane >= p->num_lanes)
            lane = 0;
        p->channel_lane[c] = (uint8_t)lane;
        fdn__sched_set_lane(p->sched, (uint16_t)c, lane);
    }
}

static int dial_other_lanes(fdn_peer *p)
{
    for (unsigned i = 1; i < p->num_lanes; i++) {
        int rc = dial_lane(p, i);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Lane 0 proved the peer has the secret and agreed on channels and lanes.
 * Each agreed channel gets the agreed limits at both ends: the sender's
 * credit starts at the agreed window, and the receiver enforces that window
 * and the agreed message size (a peer that agreed to less must not be
 * allowed more). The outbound side then dials the other lanes. */
static int open_session(fdn_peer *p, const struct fdn__handshake_result *res)
{
    fdn_node *n = p->node;
    /* Frames of the smaller max_fragment both ways: what each side sends,
     * and what it accepts. */
    int err = fdn__sched_set_max_fragment(p->sched, res->max_fragment);
    if (err < 0)
        return err;
    p->limits.max_fragment = res->max_fragment;
    memcpy(p->peer_node_id, res->peer_node_id, sizeof p->peer_node_id);
    p->peer_incarnation = res->peer_incarnation;
    p->session = res->session;
    p->num_lanes = res->lane_count;
    for (int i = 0; i < res->channel_count; i++) {
        const struct fdn__channel_desc *d = &res->channels[i];
        struct fdn__reasm_channel_config rc = {
            .id = d->id,
            .max_message = d->max_message,
            .credit_window = d->credit_window,
        };
        err = fdn__reasm_add_channel(p->reasm, &rc);
        if (!err)
            err = fdn__sched_set_credit(p->sched, d->id, d->credit_window);
        if (err < 0)
            return err;
        p->rx[d->id].usable = true;
        p->rx[d->id].window = d->credit_window;
        p->rx[d->id].max_message = d->max_message;
    }
    map_lanes(p);
    lane_set_up(p, p->lanes[0]);
    p->state = FDN__PEER_UP;
    p->announced_up = true;
    n->stats.peers_up++;
    if (n->events.peer_up)
        n->events.peer_up(p, n->events.arg);
    if (fdn__peer_closing(p) || !p->outbound)
        return 0;
    return dial_other_lanes(p);
}

/* A lane that joins or resumes a session must have agreed the session's
 * frame size: the same node in the same incarnation always does. */
static int check_same_frames(const fdn_peer *p, const struct fdn__handshake_result *res)
{
    if (res->max_fragment == p->limits.max_fragment)
        return 0;
    return FDN_ERR(-EPROTO, "%s agreed frames of %u bytes on lane %u, its session %u", p->addr,
                   res->max_fragment, res->lane, p->limits.max_fragment);
}

/* The inbound peer whose session a lane > 0 joins: the same node, the same
 * session, up, and that lane not taken. */
static fdn_peer *find_session(fdn_node *n, const fdn_peer *self,
                              const struct fdn__handshake_result *res)
{
    for (fdn_peer *q = n->peers; q; q = q->next) {
        if (q == self || q->outbound || q->state != FDN__PEER_UP || q->session != res->session)
            continue;
        if (memcmp(q->peer_node_id, res->peer_node_id, sizeof q->peer_node_id) != 0)
            continue;
        if (res->lane >= q->num_lanes || q->lanes[res->lane])
            return NULL;
        return q;
    }
    return NULL;
}

/* Moves an accepted connection's lane from the peer it was accepted on,
 * which never came up and goes quietly, to the session q it belongs to. */
static void move_lane(struct fdn__lane *l, fdn_peer *q, unsigned index)
{
    fdn_peer *tmp = l->peer;
    tmp->lanes[0] = NULL;
    tmp->state = FDN__PEER_CLOSING;
    fdn_worker_schedule(tmp->node->worker, &tmp->finish);
    l->peer = q;
    l->index = (uint8_t)index;
    q->lanes[index] = l;
    lane_set_up(q, l);
}

/* An accepted connection's handshake named a lane > 0 of a session: the
 * lane moves to that session's peer. */
static int join_session(struct fdn__lane *l, const struct fdn__handshake_result *res)
{
    fdn_peer *tmp = l->peer;
    fdn_peer *q = find_session(tmp->node, tmp, res);
    /* Not fatal to the session: the join may have crossed a resumption
     * (a stale connection holds the lane, or the session is between
     * connections). -ESTALE sends SESSION_UNKNOWN, which the client takes
     * as the loss of that lane, and it resumes. */
    if (!q) {
        tmp->node->stats.resumes_refused++;
        return FDN_ERR(-ESTALE, "%s joins lane %u of a session we do not have", tmp->addr,
                       res->lane);
    }
    int rc = check_same_frames(q, res);
    if (rc < 0)
        return rc;
    move_lane(l, q, res->lane);
    return 0;
}

/* ---- Session resumption -------------------------------------------------- */

/* A lost connection resumes the session, unless the peer said goodbye, the
 * session never came up, or the node is going away. */
static bool resumable(const fdn_peer *p)
{
    return p->announced_up && !p->close_received && !p->node->destroying &&
           (p->state == FDN__PEER_UP || p->state == FDN__PEER_RESUMING);
}

static uint64_t jittered(uint64_t ns)
{
    /* Between 3/4 and 5/4 of ns, so that many peers lost together do not
     * redial in lockstep. */
    return ns - ns / 4 + randombytes_uniform((uint32_t)(ns / 2 > UINT32_MAX ? UINT32_MAX : ns / 2 + 1));
}

static void schedule_redial(fdn_peer *p)
{
    uint64_t delay = p->redial_backoff_ns ? p->redial_backoff_ns : FDN__REDIAL_MIN_NS;
    p->redial_backoff_ns = delay * 2 > FDN__REDIAL_MAX_NS ? FDN__REDIAL_MAX_NS : delay * 2;
    fdn_timer_arm(p->node->worker, &p->redial, jittered(delay));
}

static int redial_fired(fdn_worker *w, fdn_task *t)
{
    (void)w;
    fdn_peer *p = t->arg;
    if (p->state != FDN__PEER_RESUMING || p->lanes[0])
        return FDN_TASK_DONE;
    if (dial_choice(p, p->dial_from) < 0)
        schedule_redial(p);
    return FDN_TASK_DONE;
}

static int deadline_fired(fdn_worker *w, fdn_task *t)
{
    (void)w;
    fdn_peer *p = t->arg;
    if (p->state == FDN__PEER_RESUMING)
        fdn__peer_fail(p, FDN_ERR(-ETIMEDOUT, "not resumed within %" PRIu64 " ms",
                                  p->node->session_timeout_ns / 1000000),
                       FDN__CLOSE_NORMAL);
    return FDN_TASK_DONE;
}

/* Every lane of the session is lost: they are all dropped, and the session
 * waits (inbound) or redials lane 0 (outbound) until it resumes or its
 * deadline passes. Requests stay pending; messages sent meanwhile queue.
 * A break soon after a resumption that let nothing through continues the
 * outage before it (node_internal.h): the deadline keeps its time and the
 * redials their back-off. */
static void peer_suspend(fdn_peer *p)
{
    fdn_node *n = p->node;
    fdn_worker *w = n->worker;
    uint64_t now = fdn_now_ns();
    bool continuing = p->outage_since && now - p->resumed_at < n->keepalive_ns;
    if (!continuing)
        p->outage_since = now;
    p->state = FDN__PEER_RESUMING;
    p->resume_wait = false;
    p->resume_have = false;
    n->stats.sessions_interrupted++;
    fdn__timer_stop(w, &p->ack_timer);
    for (unsigned i = 0; i < FDN__MAX_LANES; i++)
        if (p->lanes[i])
            lane_detach(p, p->lanes[i]);
    uint64_t end = p->outage_since + n->session_timeout_ns;
    fdn_timer_arm(w, &p->deadline, end > now ? end - now : 0);
    if (!p->outbound)
        return;
    if (continuing) {
        schedule_redial(p);
    } else {
        p->redial_backoff_ns = FDN__REDIAL_MIN_NS;
        fdn_timer_arm(w, &p->redial, jittered(FDN__REDIAL_FIRST_NS));
    }
}

/* Our half of the RESUME exchange, the first frame on the new lane 0: per
 * channel, what we received complete and the credit the sender may use. Any
 * message in progress is dropped here, before the peer can send again. */
static int send_resume(fdn_peer *p)
{
    struct fdn__resume_entry e[FDN_MAX_CHANNELS];
    uint8_t payload[FDN_MAX_CHANNELS * FDN__RESUME_ENTRY_SIZE];
    size_t count = 0;
    for (int c = 0; c < p->node->num_channels; c++) {
        struct fdn__rx_channel *rx = &p->rx[c];
        uint64_t window;
        if (!rx->usable || fdn__reasm_resume_channel(p->reasm, (uint16_t)c, &window) < 0)
            continue;
        rx->expected = rx->received;
        rx->acked_sent = rx->received;
        e[count++] = (struct fdn__resume_entry){
            .channel = (uint16_t)c,
            .window = window > UINT32_MAX ? UINT32_MAX : (uint32_t)window,
            .received = rx->received,
        };
    }
    if (count == 0)
        return FDN_ERR(-EPROTO, "no channel to resume with %s", p->addr);
    fdn__resume_encode(e, count, payload);
    struct fdn__frame_hdr h = {
        .type = FDN__FRAME_RESUME,
        .resume_entries = count,
        .frag_len = (uint32_t)(count * FDN__RESUME_ENTRY_SIZE),
        .total_len = count * FDN__RESUME_ENTRY_SIZE,
    };
    return queue_ctrl(p->lanes[0], &h, payload);
}

/* A new lane 0 is bound to the session: it is up again, and waits for the
 * peer's RESUME before any data goes. */
static int session_rebound(fdn_peer *p)
{
    fdn_worker *w = p->node->worker;
    fdn__timer_stop(w, &p->deadline);
    fdn__timer_stop(w, &p->redial);
    p->resumed_at = fdn_now_ns();
    p->state = FDN__PEER_UP;
    p->resume_wait = true;
    p->resume_have = false;
    lane_set_up(p, p->lanes[0]);
    p->node->stats.sessions_resumed++;
    int rc = send_resume(p);
    if (rc < 0)
        return rc;
    pump(p->lanes[0]);
    return 0;
}

/* The peer's RESUME has come and no old lane has a send outstanding: each
 * channel lets go of what the peer has, sends the rest again from its start,
 * and takes the credit the peer offers. */
static int apply_resume(fdn_peer *p)
{
    for (int c = 0; c < p->node->num_channels; c++) {
        if (!p->rx[c].usable)
            continue;
        const struct fdn__resume_entry *e = &p->resume_in[c];
        if (e->received > p->next_seq[c])
            return FDN_ERR(-EPROTO, "%s has %" PRIu64 " messages of channel %d, %" PRIu64
                           " were sent", p->addr, e->received, c, p->next_seq[c]);
        int rc = fdn__sched_ack(p->sched, (uint16_t)c, e->received);
        if (rc > 0)
            session_progressed(p);   /* the peer had more than it acknowledged */
        if (rc >= 0)
            rc = fdn__sched_rewind(p->sched, (uint16_t)c);
        if (rc < 0)
            return rc;
        p->retransmitted[c] += (uint64_t)rc;
        fdn__sched_set_credit(p->sched, (uint16_t)c, e->window);
    }
    p->resume_wait = false;
    p->resume_have = false;
    for (unsigned i = 0; i < p->num_lanes; i++)
        pump_lane(p, i);
    notify_writable(p);
    return 0;
}

static int on_resume(struct fdn__lane *l, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    fdn_peer *p = l->peer;
    if (!p->resume_wait || p->resume_have)
        return FDN_ERR(-EPROTO, "RESUME from %s outside a resumption", p->addr);
    bool seen[FDN_MAX_CHANNELS] = {false};
    int usable = 0;
    for (int c = 0; c < p->node->num_channels; c++)
        usable += p->rx[c].usable;
    if (h->resume_entries != (uint64_t)usable)
        return FDN_ERR(-EPROTO, "RESUME from %s has %" PRIu64 " channels, we agreed %d", p->addr,
                       h->resume_entries, usable);
    for (size_t i = 0; i < h->resume_entries; i++) {
        struct fdn__resume_entry e;
        int rc = fdn__resume_decode(payload, i, &p->limits, &e);
        if (rc < 0)
            return rc;
        if (e.channel >= FDN_MAX_CHANNELS || !p->rx[e.channel].usable || seen[e.channel])
            return FDN_ERR(-EPROTO, "RESUME from %s: channel %u unknown or twice", p->addr,
                           e.channel);
        seen[e.channel] = true;
        p->resume_in[e.channel] = e;
    }
    p->resume_have = true;
    return p->dying ? 0 : apply_resume(p);   /* else the reap task applies it */
}

/* Frees the dying lanes that are closed; once none is left, a closing peer
 * can finish and a resuming one apply the peer's RESUME. */
static int reap_task(fdn_worker *w, fdn_task *t)
{
    fdn_peer *p = t->arg;
    for (struct fdn__lane **at = &p->dying; *at;) {
        struct fdn__lane *l = *at;
        if (!l->closed) {
            at = &l->next_dying;
            continue;
        }
        *at = l->next_dying;
        fdn__timer_stop(w, &l->timer);
        lane_free(l);
    }
    if (p->dying)
        return FDN_TASK_DONE;
    if (fdn__peer_closing(p)) {
        if (all_lanes_closed(p) && !p->finish.queued)
            fdn_worker_schedule(w, &p->finish);
    } else if (p->resume_have) {
        int rc = apply_resume(p);
        if (rc < 0)
            fdn__peer_fail(p, rc, FDN__CLOSE_PROTOCOL_ERROR);
    }
    return FDN_TASK_DONE;
}

/* Outbound: the redialled lane 0 reached the peer. The same node in the same
 * incarnation resumes; anything else means the session is gone. */
static int resume_outbound(fdn_peer *p, const struct fdn__handshake_result *res)
{
    if (memcmp(res->peer_node_id, p->peer_node_id, sizeof p->peer_node_id) != 0 ||
        res->peer_incarnation != p->peer_incarnation)
        return FDN_ERR(-ECONNRESET, "%s restarted: the session is lost", p->addr);
    if (res->lane_count != p->num_lanes)
        return FDN_ERR(-EPROTO, "%s resumed with %u lanes, not %u", p->addr, res->lane_count,
                       p->num_lanes);
    int rc = check_same_frames(p, res);
    if (rc < 0)
        return rc;
    rc = session_rebound(p);
    return rc < 0 ? rc : dial_other_lanes(p);
}

/* Inbound: a client resumes a session. It must be one we hold for that node
 * and incarnation; if we still think it is up, its old connections are the
 * ones that are lost. */
static int resume_inbound(struct fdn__lane *l, const struct fdn__handshake_result *res)
{
    fdn_peer *tmp = l->peer;
    fdn_peer *q = tmp->node->peers;
    for (; q; q = q->next) {
        if (q != tmp && !q->outbound && q->session == res->session &&
            (q->state == FDN__PEER_UP || q->state == FDN__PEER_RESUMING) &&
            q->peer_incarnation == res->peer_incarnation &&
            memcmp(q->peer_node_id, res->peer_node_id, sizeof q->peer_node_id) == 0)
            break;
    }
    if (!q) {
        tmp->node->stats.resumes_refused++;
        return FDN_ERR(-ESTALE, "%s resumes session %016" PRIx64 ", which we do not have",
                       tmp->addr, res->session);
    }
    int rc = check_same_frames(q, res);
    if (rc < 0)
        return rc;
    if (q->state == FDN__PEER_UP) {
        /* The peer found our connections dead before we did. */
        fdn__peer_say_end(q, NULL, FDN_LOG_WARN,
                "connections lost: the peer resumed the session on a new connection");
        peer_suspend(q);
    }
    memcpy(q->addr, tmp->addr, sizeof q->addr);   /* it may come by another transport */
    move_lane(l, q, 0);
    return session_rebound(q);
}

/* Ends the session now, reporting it before the caller reports a new one
 * (its transports close in the background). */
static void end_session_now(fdn_peer *q, int reason)
{
    fdn__peer_fail(q, reason, FDN__CLOSE_GOING_AWAY);
    tell_down(q);
}

/* Inbound: a node opens a new session. Sessions of the same node in an
 * earlier incarnation are over: it restarted. */
static void end_old_incarnations(fdn_peer *p, const struct fdn__handshake_result *res)
{
    for (fdn_peer *q = p->node->peers; q; q = q->next) {
        if (q == p || q->outbound || !q->announced_up || fdn__peer_closing(q) ||
            q->peer_incarnation == res->peer_incarnation ||
            memcmp(q->peer_node_id, res->peer_node_id, sizeof q->peer_node_id) != 0)
            continue;
        end_session_now(q, FDN_ERR(-ECONNRESET, "%s restarted", q->addr));
    }
}

static int on_handshake_done(struct fdn__lane *l)
{
    fdn_peer *p = l->peer;
    const struct fdn__handshake_result *res = fdn__handshake_result(l->hs);
    fdn_timer_cancel(p->node->worker, &l->timer);
    l->packs = res->common_capabilities & FDN__CAP_PACKED;
    if (l->pending) {   /* authenticated: no longer counts as pending */
        l->pending = false;
        fdn__node_authenticated(p->node);
    }
    if (!p->outbound) {
        if (res->lane != 0)
            return join_session(l, res);
        if (res->resume)
            return resume_inbound(l, res);
        end_old_incarnations(p, res);
        return open_session(p, res);
    }
    if (l->index == 0)
        return p->state == FDN__PEER_RESUMING ? resume_outbound(p, res) : open_session(p, res);
    /* A lane we dialed must reach the node lane 0 reached. */
    if (memcmp(res->peer_node_id, p->peer_node_id, sizeof p->peer_node_id) != 0)
        return FDN_ERR(-EPROTO, "lane %u of %s reached another node", l->index, p->addr);
    int rc = check_same_frames(p, res);
    if (rc < 0)
        return rc;
    lane_set_up(p, l);
    return 0;
}

/* ---- Transport events ---------------------------------------------------- */

/* Lane 0 could not connect to a dial choice that has a successor (a
 * same-host shortcut the peer does not offer): the lane goes, unseen, and
 * the next choice is dialled. Returns false when there is none to try. */
static bool dial_next_choice(fdn_peer *p, struct fdn__lane *l, int err)
{
    if (fdn__peer_closing(p) || l->index != 0 || p->lanes[0] != l ||
        p->dial_at + 1u >= p->num_dial_choices)
        return false;
    fdn__peer_say_end(p, l, FDN_LOG_DEBUG, "connect failed: %s; dialling %s instead",
                      fdn_strerror(err), p->dial_choices[p->dial_at + 1u]);
    lane_detach(p, l);
    int rc = dial_choice(p, p->dial_at + 1u);
    if (rc < 0 && p->state == FDN__PEER_RESUMING)
        schedule_redial(p);
    else if (rc < 0)
        fdn__peer_fail(p, rc, FDN__CLOSE_NORMAL);
    return true;
}

static void on_connected(void *ctx, int err)
{
    struct fdn__lane *l = ctx;
    fdn_peer *p = l->peer;
    if (err < 0) {
        if (dial_next_choice(p, l, err))
            return;
        if (p->down_reason == 0 && !p->announced_up)
            p->down_reason = err;
        return; /* on_closed follows */
    }
    if (l->index == 0) {
        p->dial_from = p->dial_at;   /* lanes, and redials, use what worked */
        note_peer_addr(p, l->conn);
    }
    int rc = start_handshake(l);
    if (rc < 0)
        peer_fail_at(p, l, rc, FDN__CLOSE_PROTOCOL_ERROR);
}

static void after_recv(struct fdn__lane *l, int rc, size_t len);

static int on_recv_checked(void *ctx, const uint8_t *data, size_t len)
{
    struct fdn__lane *l = ctx;
    if (fdn__unlikely(l->faults) && fdn__lane_faults_reset(l))
        return 0;   /* reset by the fault layer: what is still in flight is lost */
    l->bytes_received += len;
    after_recv(l, on_recv(l, data, len), len);
    return 0; /* the transport is closed already, or the session goes on */
}

/* A payload by reference counts its bytes as received, and a descriptor's
 * worth in the lane's receive turn (what it took of the ring). */
static int on_recv_msg_checked(void *ctx, fdn_msg *m)
{
    struct fdn__lane *l = ctx;
    if (fdn__unlikely(l->faults) && fdn__lane_faults_reset(l)) {
        fdn_msg_free(m);
        return 0;
    }
    l->bytes_received += fdn_msg_len(m);
    after_recv(l, on_recv_ref(l, m), FDN__TP_REF_COST);
    return 0;
}

/* What a receive's result means for the session. */
static void after_recv(struct fdn__lane *l, int rc, size_t len)
{
    if (rc == 0)
        end_rx_turn_if_due(l, len);
    on_recv_result(l, rc);
}

/* What decoding received bytes found: a sequence gap resumes the session,
 * any other error ends it with the matching reason. */
static void on_recv_result(struct fdn__lane *l, int rc)
{
    if (rc == -EILSEQ && resumable(l->peer) && l->peer->state == FDN__PEER_UP) {
        /* A frame lost or repeated below us: drop the connections and
         * resume, which sends again exactly what is missing. */
        fdn__peer_say_end(l->peer, l, FDN_LOG_WARN,
                          "sequence error: %s; session interrupted, resuming",
                          fdn__errmsg_detail());
        peer_suspend(l->peer);
    } else if (rc < 0) {
        enum fdn__close_reason why = rc == -EACCES || rc == -EPERM || rc == -EPROTONOSUPPORT
                                         ? FDN__CLOSE_HANDSHAKE_FAILED
                                     : rc == -EMSGSIZE || rc == -ENOSPC ? FDN__CLOSE_LIMIT_EXCEEDED
                                     : rc == -ESTALE                    ? FDN__CLOSE_SESSION_UNKNOWN
                                                                        : FDN__CLOSE_PROTOCOL_ERROR;
        peer_fail_at(l->peer, l, rc, why);
    }
}

/* A session that cannot resume lost a connection (the peer said goodbye, or
 * it never came up): says how it ends. */
static void say_closed_under_us(const fdn_peer *p, const struct fdn__lane *l, int err)
{
    bool orderly = p->close_received ? p->close_reason_in == FDN__CLOSE_NORMAL ||
                                           p->close_reason_in == FDN__CLOSE_GOING_AWAY
                                     : p->down_reason == 0;
    int level = orderly ? FDN_LOG_INFO : FDN_LOG_WARN;
    char why[160];
    loss_words(l, err, why, sizeof why);
    if (p->close_received)
        fdn__peer_say_end(p, l, level, "closed by the peer: %s",
                          fdn__close_reason_name(p->close_reason_in));
    else if (!l->hs)
        fdn__peer_say_end(p, l, level, "connect failed: %s", fdn_strerror(p->down_reason));
    else if (!p->announced_up)
        fdn__peer_say_end(p, l, level, "handshake failed: %s",
                          err == 0 ? "the peer closed the connection" : why);
    else
        fdn__peer_say_end(p, l, level, "%s", why);
}

/* A lane's transport is gone. A dying lane only waits to be reaped. Else,
 * unless the peer was closing anyway: a session that was up resumes (a
 * redial that failed tries again), and one that never came up is lost. */
static void on_closed(void *ctx, int err)
{
    struct fdn__lane *l = ctx;
    fdn_peer *p = l->peer;
    fdn_worker *w = p->node->worker;
    l->conn = NULL;
    l->closed = true;
    release_places(l);
    fdn__timer_stop(w, &l->timer);
    fdn__timer_stop(w, &l->heartbeat);
    fdn__worker_cancel_task(w, &l->rx_resume);
    fdn__worker_cancel_task(w, &l->tx_resume);
    if (l->dying) {
        if (!p->reap.queued)
            fdn_worker_schedule(w, &p->reap);
        return;
    }
    if (!fdn__peer_closing(p) && resumable(p)) {
        char why[160];
        loss_words(l, err, why, sizeof why);
        if (p->state == FDN__PEER_UP) {
            fdn__peer_say_end(p, l, FDN_LOG_WARN, "%s; session interrupted, resuming", why);
            peer_suspend(p);          /* l goes with the others */
        } else {
            fdn__peer_say_end(p, l, FDN_LOG_INFO, "redial failed: %s; trying again", why);
            lane_detach(p, l);        /* a redial that failed */
            schedule_redial(p);
        }
        return;
    }
    if (!fdn__peer_closing(p)) {
        /* Closed under us. During the handshake even an orderly close is a
         * refusal (a server closes on clients that fail to authenticate). */
        if (p->down_reason == 0 && err != -ECANCELED && !p->close_received)
            p->down_reason = err;
        if (p->down_reason == 0 && p->state != FDN__PEER_UP && !p->announced_up)
            p->down_reason = -ECONNABORTED;
        say_closed_under_us(p, l, err);
        p->state = FDN__PEER_CLOSING;
        stop_session_timers(p);
        for (unsigned i = 0; i < FDN__MAX_LANES; i++)
            if (p->lanes[i])
                fdn__lane_close_transport(p->lanes[i]);
    }
    if (all_lanes_closed(p) && !p->finish.queued)
        fdn_worker_schedule(w, &p->finish);
}

static const struct fdn__tp_conn_events lane_conn_events = {
    .on_connected = on_connected,
    .on_recv = on_recv_checked,
    .on_recv_msg = on_recv_msg_checked,
    .on_sent = on_sent,
    .on_closed = on_closed,
};

/* An accepted connection is lane 0 of a fresh peer, which speaks second. */
void fdn__peer_attach(fdn_peer *p, struct fdn__tp_conn *conn, struct fdn__host_conns *host)
{
    struct fdn__lane *l;
    if (lane_create(p, 0, &l) < 0) {
        fdn__node_release(p->node, host, true);
        fdn__tp_conn_close(conn);
        fdn__peer_fail(p, FDN_ERR(-ENOMEM, "no memory for a connection's lane"),
                       FDN__CLOSE_NORMAL);
        return;
    }
    l->conn = conn;
    l->host = host;
    l->pending = true;
    p->lanes[0] = l;
    note_peer_addr(p, conn);
    fdn__tp_conn_start(conn, &lane_conn_events, l);
    int rc = start_handshake(l);
    if (rc < 0)
        fdn__peer_fail(p, rc, FDN__CLOSE_PROTOCOL_ERROR);
}

int fdn__peer_dial(fdn_peer *p, const char *addr)
{
    int n = p->node->no_same_host_shm
                ? 0
                : fdn__same_host_dial_addrs(addr, p->dial_choices, FDN__DIAL_CHOICES - 1);
    snprintf(p->dial_choices[n], sizeof p->dial_choices[n], "%s", addr);
    p->num_dial_choices = (uint8_t)(n + 1);
    p->dial_from = 0;
    return dial_choice(p, 0);
}

/* ---- For the fault layer ------------------------------------------------- *
 *
 * The data path's own functions stay static, so that the compiler inlines
 * them here; core/peer_faults.c reaches them through these. */

void fdn__lane_pump(struct fdn__lane *l) { pump(l); }

size_t fdn__batch_add_frame(struct fdn__batch *b, int *niov, const struct fdn__frame *f)
{
    return add_frame(b, niov, f);
}

int fdn__peer_on_data(fdn_peer *p, const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    return on_data(p, h, payload);
}

int fdn__lane_on_recv(struct fdn__lane *l, const uint8_t *data, size_t len)
{
    return on_recv(l, data, len);
}

void fdn__lane_on_recv_result(struct fdn__lane *l, int rc) { on_recv_result(l, rc); }

/* ---- Creation ------------------------------------------------------------ */

static int add_channels(fdn_peer *p)
{
    fdn_node *n = p->node;
    for (int c = 0; c < n->num_channels; c++) {
        const fdn_channel_config *cfg = &n->channels[c].cfg;
        p->channel_lane[c] = (uint8_t)(cfg->lane - 1);
        struct fdn__sched_channel_config sc = {
            .id = (uint16_t)c,
            .prio = (uint8_t)cfg->priority,
            .lane = p->channel_lane[c],
            .weight = cfg->weight,
            .credit_window = cfg->credit_window,
            .max_queued_msgs = cfg->max_queued,
            /* Reliable: kept until acknowledged, to resume from. */
            .retain = cfg->delivery == FDN_RELIABLE,
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
    p->num_lanes = 1;
    if (outbound)
        randombytes_buf(&p->session, sizeof p->session);
    p->limits = (struct fdn__wire_limits){
        .max_fragment = n->max_fragment,
        .max_message = n->max_message,
        .max_channel = FDN_MAX_CHANNELS - 1,
    };
    fdn_task_init(&p->finish, finish_task, p, FDN_PRIO_HIGHEST);
    fdn_task_init(&p->reap, reap_task, p, FDN_PRIO_HIGHEST);
    fdn_timer_init(&p->deadline, deadline_fired, p, FDN_PRIO_HIGHEST);
    fdn_timer_init(&p->redial, redial_fired, p, FDN_PRIO_HIGHEST);
    fdn_timer_init(&p->ack_timer, ack_timer_fired, p, FDN_PRIO_HIGHEST);
    struct fdn__sched_config sc = {.max_fragment = n->max_fragment};
    int rc = fdn__sched_create(&sc, &p->sched);
    if (!rc)
        fdn__sched_set_whole(p->sched, sched_whole, p);
    if (!rc)
        rc = fdn__reasm_create(&p->reasm);
    if (!rc)
        rc = add_channels(p);
    if (rc < 0) {
        fdn__sched_destroy(p->sched);
        fdn__reasm_destroy(p->reasm);
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

/* ---- Sending (public) ---------------------------------------------------- */

int fdn__peer_send(fdn_peer *p, int channel, fdn_msg *msg, uint16_t kind, uint64_t corr,
                   uint64_t *seq_out)
{
    fdn_node *n = p->node;
    if (channel < 0 || channel >= n->num_channels) {
        fdn_msg_free(msg);
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    }
    if (fdn__peer_closing(p)) {
        fdn_msg_free(msg);
        return -ENOTCONN;
    }
    if (p->announced_up && !p->rx[channel].usable) {
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
    uint64_t max = p->announced_up ? p->rx[channel].max_message
                                   : n->channels[channel].cfg.max_message;
    if (len > max) {
        fdn_msg_free(msg);
        return FDN_ERR(-EMSGSIZE, "%zu bytes over channel %d's max_message %" PRIu64, len,
                       channel, max);
    }
    uint64_t seq = p->next_seq[channel];
    struct fdn__lane *l = lane_at(p, p->channel_lane[channel]);
    struct fdn__batch *b = send_now_batch(p, l, msg);
    struct fdn__frame f;
    int rc = fdn__sched_enqueue_now(p->sched, (uint16_t)channel, msg, seq, kind, corr, b != NULL,
                                    &f);
    if (rc == -EAGAIN)
        return -EAGAIN;
    if (rc < 0) {
        fdn_msg_free(msg);
        return rc;
    }
    p->next_seq[channel] = seq + 1;   /* a number is used only by a queued message */
    if (seq_out)
        *seq_out = seq;
    if (rc == 1)
        send_now(l, b, &f);
    else
        pump(l);
    return 0;
}

int fdn_peer_msg_alloc(fdn_peer *p, int channel, size_t len, fdn_msg **out)
{
    fdn_node *n = p->node;
    if (channel < 0 || channel >= n->num_channels)
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    fdn_pool *zc = p->state == FDN__PEER_UP && len >= n->lend_min
                       ? lane_zc_pool(lane_at(p, p->channel_lane[channel]))
                       : NULL;
    if (zc && fdn_msg_alloc(zc, len, out) == 0) {
        n->stats.zc_allocs++;
        return 0;
    }
    n->stats.zc_fallbacks++;
    return fdn_msg_alloc(n->pool, len, out);
}

int fdn_send(fdn_peer *p, int channel, fdn_msg *msg)
{
    if (channel < 0 || channel >= FDN_MAX_CHANNELS) {
        fdn_msg_free(msg);
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    }
    return fdn__peer_send(p, channel, msg, 0, 0, NULL);
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

const char *fdn_peer_transport(const fdn_peer *p)
{
    const struct fdn__transport *tp = fdn__transport_for(p->addr, NULL);
    if (!tp && p->outbound)
        tp = fdn__transport_for(p->dial, NULL);
    return tp ? tp->name : NULL;
}

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
        .unacked_msgs = s.unacked_msgs,
        .unacked_bytes = s.unacked_bytes,
        .retransmitted_msgs = p->retransmitted[channel],
        .undelivered_msgs = p->undelivered[channel],
        .lost_msgs = rx->lost,
        .rtt_count = rx->rtt.count,
        .rtt_p50_ns = fdn_histogram_quantile(&rx->rtt, 0.5),
        .rtt_p99_ns = fdn_histogram_quantile(&rx->rtt, 0.99),
        .rtt_max_ns = rx->rtt.count ? rx->rtt.max : 0,
    };
    return 0;
}

int fdn_peer_lane_count(const fdn_peer *p) { return p->num_lanes; }

bool fdn_peer_lanes_up(const fdn_peer *p)
{
    if (p->state != FDN__PEER_UP)
        return false;
    for (unsigned i = 0; i < p->num_lanes; i++)
        if (!p->lanes[i] || !p->lanes[i]->up || p->lanes[i]->closed)
            return false;
    return true;
}

int fdn_peer_lane_stats(const fdn_peer *p, int lane, fdn_lane_stats *out)
{
    if (lane < 1 || lane > p->num_lanes)
        return FDN_ERR(-EINVAL, "no lane %d (the peer has %u)", lane, p->num_lanes);
    const struct fdn__lane *l = p->lanes[lane - 1];
    *out = (fdn_lane_stats){0};
    if (l) {
        *out = (fdn_lane_stats){
            .up = l->up && !l->closed,
            .bytes_sent = l->bytes_sent,
            .bytes_received = l->bytes_received,
            .inflight_bytes = l->inflight_bytes,
            .max_inflight_bytes = l->max_inflight_bytes,
            .pings_sent = l->pings_sent,
            .pongs_received = l->pongs_received,
        };
    }
    return 0;
}

int fdn_peer_channel_lane(const fdn_peer *p, int channel)
{
    if (channel < 0 || channel >= p->node->num_channels)
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    return p->channel_lane[channel] + 1;
}
