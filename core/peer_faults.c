/* The seeded fault layer applied to a peer's lanes. core/fault.c decides;
 * this file carries the decisions out on the frames a lane sends and
 * receives. It runs only when the fault layer is on (l->faults), so the
 * data path in core/peer.c pays one predicted branch for it.
 *
 * It acts on DATA frames only, per lane:
 *
 *   tx (pump, as the scheduler hands a frame out)
 *     DROP     the frame is done without being sent
 *     DUP      it goes out twice, back to back
 *     CORRUPT  one payload byte goes out changed: the iovec is split around a
 *              changed copy of that byte, so the message's buffer (the
 *              application's, possibly shared) is never written
 *     DELAY    the frame is held until its time, and so is every later data
 *              frame of the lane: a TCP connection cannot let one overtake it
 *     REORDER  the same as DELAY, for hold x FAULT_REORDER_UNIT_NS: within one
 *              ordered byte stream "later frames first" can only be modelled
 *              as a delay (frames of different lanes do overtake each other)
 *     RESET    the frame is done unsent and the lane's transport is closed
 *   rx (on_frame, as a DATA frame is decoded)
 *     DROP, DUP and CORRUPT as above (CORRUPT on a copy of the payload),
 *     RESET closes the transport and reads nothing more from it;
 *     DELAY and REORDER hold the frame (a copy) and every byte received
 *     after it: decoding stops, the transport's reading is paused, and the
 *     rx release timer delivers the frame and then decodes the held bytes,
 *     which may hold again. The receiving side of a stream is as ordered as
 *     the sending side, so here too a reorder is a delay of hold x
 *     FAULT_REORDER_UNIT_NS; what it adds over tx is the receiver's view:
 *     acknowledgements, credit and deliveries stall while the bytes have
 *     arrived, and a lane lost while holding loses what it held.
 *
 * A dropped or repeated frame on a reliable channel is recovered the way a
 * frame lost below the session would be: the receiver sees the next frame
 * out of sequence (-EILSEQ), drops the connections, and the session resumes
 * and retransmits. A frame dropped last, with nothing after it to show the
 * gap, would wait for ever: so a drop on a reliable channel also arms the
 * lane's loss timer, which resets the lane after FAULT_LOSS_NS unless the
 * gap was found first (the connection that lost a frame is declared dead,
 * as a real transport's keep-alive would eventually do).
 *
 * Control frames (handshake, credit, ack, resume, ping, close) are never
 * faulted. They stand for the session layer's own reliable control channel,
 * which has no retransmission of its own because it rides on a connection
 * that either delivers everything or dies; faulting one would only exercise
 * the same reset-and-resume path that RESET already does, or wedge a
 * handshake until its timeout.
 *
 * Each lane's decisions come from its own random streams, salted with the
 * node's connection ordinal and the side (dialled or accepted), never with
 * an address, a port or a pointer: the same seed and the same order of
 * connections and frames give the same decisions. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fault.h"
#include "core/peer_internal.h"
#include "core/worker_internal.h"

#define FAULT_LOSS_NS (20ull * 1000 * 1000)
#define FAULT_REORDER_UNIT_NS (100ull * 1000)

struct fdn__lane_faults {
    struct fdn__fault_state *state;
    fdn_timer release;             /* a held frame's time has come */
    fdn_timer loss;                /* a dropped frame's gap was not seen in time */
    bool holding;
    bool reset;                    /* the layer closed the transport: no more I/O */
    uint64_t hold_until;
    struct fdn__frame held;        /* handed out by the scheduler, not sent yet */
    uint8_t *scratch;              /* rx CORRUPT: a copy of the payload */
    /* Receipt held back (rx DELAY and REORDER). */
    fdn_timer rx_release;          /* the held frame's time has come */
    bool rx_holding;
    struct fdn__frame_hdr rx_held; /* the frame, payload in rx_held_payload */
    uint8_t *rx_held_payload;      /* max_fragment bytes, allocated on first hold */
    uint8_t *rx_rest;              /* bytes received after it, in order */
    size_t rx_rest_len, rx_rest_cap;
    uint8_t flipped[FDN__BATCHES][FDN__BATCH_FRAMES];  /* tx CORRUPT: the changed byte */
};

static int fault_release_fired(fdn_worker *w, fdn_task *t)
{
    (void)w;
    fdn__lane_pump(t->arg);
    return FDN_TASK_DONE;
}

/* Resets the lane as a lost connection: on_closed follows and resumes the
 * session (or ends it, if it cannot resume). */
static void fault_reset(struct fdn__lane *l)
{
    l->faults->reset = true;
    snprintf(l->end_why, sizeof l->end_why, "reset by the fault layer");
    fdn__lane_close_transport(l);
}

static int fault_rx_release_fired(fdn_worker *w, fdn_task *t);

static int fault_loss_fired(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct fdn__lane *l = t->arg;
    if (!l->dying && !fdn__peer_closing(l->peer))
        fault_reset(l);
    return FDN_TASK_DONE;
}

int fdn__lane_faults_create(struct fdn__lane *l)
{
    fdn_node *n = l->peer->node;
    struct fdn__lane_faults *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->scratch = malloc(n->max_fragment);
    uint64_t salt = ++n->fault_conns << 1 | (l->peer->outbound ? 1u : 0u);
    int rc = f->scratch ? fdn__fault_state_create(n->faults, salt, &f->state) : -ENOMEM;
    if (rc < 0) {
        free(f->scratch);
        free(f);
        return rc;
    }
    fdn_timer_init(&f->release, fault_release_fired, l, FDN_PRIO_HIGHEST);
    fdn_timer_init(&f->loss, fault_loss_fired, l, FDN_PRIO_HIGHEST);
    fdn_timer_init(&f->rx_release, fault_rx_release_fired, l, FDN_PRIO_HIGHEST);
    l->faults = f;
    return 0;
}

/* Cancels the layer's timers: none of them runs afterwards. */
static void stop_timers(struct fdn__lane_faults *f, fdn_worker *w)
{
    fdn__timer_stop(w, &f->release);
    fdn__timer_stop(w, &f->loss);
    fdn__timer_stop(w, &f->rx_release);
}

/* A held frame goes back to the scheduler as done (unsent), so that the
 * session's accounting (unacknowledged, rewound) is complete; called when
 * the lane leaves its session and before the scheduler is destroyed. */
void fdn__lane_faults_release_held(struct fdn__lane *l)
{
    struct fdn__lane_faults *f = l->faults;
    stop_timers(f, l->peer->node->worker);
    f->rx_holding = false;   /* what the lane held on receipt is lost with it */
    f->rx_rest_len = 0;
    if (f->holding) {
        f->holding = false;
        fdn__sched_frame_done(l->peer->sched, &f->held);
    }
}

void fdn__lane_faults_free(struct fdn__lane *l)
{
    struct fdn__lane_faults *f = l->faults;
    fdn_node *n = l->peer->node;
    stop_timers(f, n->worker);
    struct fdn__fault_stats st;
    fdn__fault_stats_get(f->state, &st);
    n->fault_totals.frames += st.frames;
    for (int k = 0; k < FDN__FAULT_KIND_COUNT; k++)
        n->fault_totals.actions[k] += st.actions[k];
    fdn__fault_state_destroy(f->state);
    free(f->scratch);
    free(f->rx_held_payload);
    free(f->rx_rest);
    free(f);
    l->faults = NULL;
}

static void add_lane_fault_stats(const struct fdn__lane *l, struct fdn__fault_stats *out)
{
    if (!l || !l->faults)
        return;
    struct fdn__fault_stats st;
    fdn__fault_stats_get(l->faults->state, &st);
    out->frames += st.frames;
    for (int k = 0; k < FDN__FAULT_KIND_COUNT; k++)
        out->actions[k] += st.actions[k];
}

void fdn__node_fault_stats(const fdn_node *n, struct fdn__fault_stats *out)
{
    *out = n->fault_totals;
    for (const fdn_peer *p = n->peers; p; p = p->next) {
        for (unsigned i = 0; i < FDN__MAX_LANES; i++)
            add_lane_fault_stats(p->lanes[i], out);
        for (const struct fdn__lane *l = p->dying; l; l = l->next_dying)
            add_lane_fault_stats(l, out);
    }
}

/* A frame of the channel was dropped: on a reliable channel the loss must
 * come to light (see above). */
static void fault_lost(struct fdn__lane *l, uint16_t channel)
{
    struct fdn__lane_faults *f = l->faults;
    if (channel < FDN_MAX_CHANNELS && fdn__peer_reliable(l->peer, channel) &&
        !fdn_timer_armed(&f->loss) && !f->loss.task.queued)
        fdn_timer_arm(l->peer->node->worker, &f->loss, FAULT_LOSS_NS);
}

/* Replaces the payload iovecs b->iov[first .. *niov) by the same bytes with
 * byte `index` taken from *slot, which receives that byte xor mask. */
static void corrupt_iov(struct fdn__batch *b, int first, int *niov, uint32_t index,
                        uint8_t *slot, uint8_t mask)
{
    for (int i = first; i < *niov; i++) {
        size_t len = b->iov[i].iov_len;
        if (index >= len) {
            index -= (uint32_t)len;
            continue;
        }
        uint8_t *base = b->iov[i].iov_base;
        *slot = base[index] ^ mask;
        memmove(&b->iov[i + 3], &b->iov[i + 1], (size_t)(*niov - i - 1) * sizeof *b->iov);
        b->iov[i] = (struct iovec){base, index};
        b->iov[i + 1] = (struct iovec){slot, 1};
        b->iov[i + 2] = (struct iovec){base + index + 1, len - index - 1};
        *niov += 2;
        return;
    }
}

/* Before a batch takes data frames: a held frame goes first once its time
 * has come. Returns false while the lane's data must wait (or after a
 * reset). */
bool fdn__lane_faults_tx_ready(struct fdn__lane *l, struct fdn__batch *b, int *niov, size_t *bytes)
{
    struct fdn__lane_faults *f = l->faults;
    if (f->reset)
        return false;
    if (!f->holding)
        return true;
    uint64_t now = fdn_now_ns();
    if (now < f->hold_until) {
        if (!f->release.task.queued)
            fdn_timer_arm(l->peer->node->worker, &f->release, f->hold_until - now);
        return false;
    }
    f->holding = false;
    *bytes += fdn__batch_add_frame(b, niov, &f->held);
    return true;
}

/* The scheduler handed out frame f for batch b: decides its fate and adds it
 * (once, twice, changed) or not. Returns false when the lane's data must
 * stop for now: the frame is held, or the lane was reset. */
bool fdn__lane_faults_tx(struct fdn__lane *l, struct fdn__batch *b, int *niov, size_t *bytes,
                         const struct fdn__frame *f)
{
    struct fdn__lane_faults *lf = l->faults;
    fdn_peer *p = l->peer;
    uint64_t now = fdn_now_ns();
    struct fdn__fault_action a =
        fdn__fault_decide(lf->state, FDN__FAULT_TX, f->channel, l->index, f->len, now);
    int start = *niov;
    switch (a.kind) {
    case FDN__FAULT_DROP:
        fdn__sched_frame_done(p->sched, f);
        fault_lost(l, f->channel);
        return true;
    case FDN__FAULT_DUP: {
        size_t frame_bytes = fdn__batch_add_frame(b, niov, f);
        int n = *niov - start;   /* <= FDN__FAULT_IOVECS: the batch keeps that in reserve */
        memcpy(&b->iov[*niov], &b->iov[start], (size_t)n * sizeof *b->iov);
        *niov += n;
        *bytes += 2 * frame_bytes;
        return true;
    }
    case FDN__FAULT_CORRUPT:
        *bytes += fdn__batch_add_frame(b, niov, f);
        corrupt_iov(b, start + 1, niov, a.byte_index,
                    &lf->flipped[b - l->batches][b->num_frames - 1], a.xor_mask);
        return true;
    case FDN__FAULT_DELAY:
    case FDN__FAULT_REORDER:
        lf->held = *f;
        lf->holding = true;
        lf->hold_until = a.kind == FDN__FAULT_DELAY ? a.until_ns
                                                    : now + a.hold * FAULT_REORDER_UNIT_NS;
        fdn_timer_arm(p->node->worker, &lf->release, lf->hold_until - now);
        return false;
    case FDN__FAULT_RESET:
        fdn__sched_frame_done(p->sched, f);
        lf->reset = true;   /* the batch so far goes out; then the transport closes */
        snprintf(l->end_why, sizeof l->end_why, "reset by the fault layer");
        return false;
    default:
        *bytes += fdn__batch_add_frame(b, niov, f);
        return true;
    }
}

static int fault_rx_hold(struct fdn__lane *l, const struct fdn__frame_hdr *h,
                         const uint8_t *payload, uint64_t ns);

/* A DATA frame arrived on a lane with the fault layer on. Returns as
 * on_data(), or 1 when the lane was reset (read nothing more). */
int fdn__lane_faults_rx(struct fdn__lane *l, const struct fdn__frame_hdr *h,
                        const uint8_t *payload)
{
    struct fdn__lane_faults *f = l->faults;
    fdn_peer *p = l->peer;
    struct fdn__fault_action a = fdn__fault_decide(f->state, FDN__FAULT_RX, h->channel, l->index,
                                                   h->frag_len, fdn_now_ns());
    int rc;
    switch (a.kind) {
    case FDN__FAULT_DROP:
        fault_lost(l, h->channel);
        return 0;
    case FDN__FAULT_DUP:
        rc = fdn__peer_on_data(p, h, payload);
        return rc < 0 ? rc : fdn__peer_on_data(p, h, payload);
    case FDN__FAULT_CORRUPT:
        memcpy(f->scratch, payload, h->frag_len);   /* frag_len <= max_fragment: decoded */
        f->scratch[a.byte_index] ^= a.xor_mask;
        return fdn__peer_on_data(p, h, f->scratch);
    case FDN__FAULT_RESET:
        fault_reset(l);
        return 1;
    case FDN__FAULT_DELAY:
    case FDN__FAULT_REORDER:
        return fault_rx_hold(l, h, payload, a.kind == FDN__FAULT_DELAY
                                                ? a.until_ns - fdn_now_ns()
                                                : a.hold * FAULT_REORDER_UNIT_NS);
    default:
        return fdn__peer_on_data(p, h, payload);
    }
}

bool fdn__lane_faults_rx_holding(const struct fdn__lane *l) { return l->faults->rx_holding; }

bool fdn__lane_faults_reset(const struct fdn__lane *l) { return l->faults->reset; }

/* Keeps bytes received while a frame is held, after those already kept. */
int fdn__lane_faults_rx_keep(struct fdn__lane *l, const uint8_t *data, size_t len)
{
    struct fdn__lane_faults *f = l->faults;
    if (len == 0)
        return 0;
    if (f->rx_rest_len + len > f->rx_rest_cap) {
        size_t cap = f->rx_rest_cap ? f->rx_rest_cap : 65536;
        while (cap < f->rx_rest_len + len)
            cap *= 2;
        uint8_t *rest = realloc(f->rx_rest, cap);
        if (!rest)
            return -ENOMEM;
        f->rx_rest = rest;
        f->rx_rest_cap = cap;
    }
    memcpy(f->rx_rest + f->rx_rest_len, data, len);
    f->rx_rest_len += len;
    return 0;
}

/* Holds a received DATA frame for ns (DELAY, REORDER): the frame is copied,
 * the transport stops reading, and on_recv keeps what follows (returns 2 to
 * say so). Returns 2, or -ENOMEM. */
static int fault_rx_hold(struct fdn__lane *l, const struct fdn__frame_hdr *h,
                         const uint8_t *payload, uint64_t ns)
{
    struct fdn__lane_faults *f = l->faults;
    if (!f->rx_held_payload && !(f->rx_held_payload = malloc(l->peer->node->max_fragment)))
        return -ENOMEM;
    memcpy(f->rx_held_payload, payload, h->frag_len);   /* <= max_fragment: decoded */
    f->rx_held = *h;
    f->rx_holding = true;
    if (l->conn)
        fdn__tp_recv_pause(l->conn, true);
    fdn_timer_arm(l->peer->node->worker, &f->rx_release, ns);
    return 2;
}

/* The held frame's time has come: it is delivered, then the bytes that came
 * after it are decoded (and may be held again), then reading resumes. */
static int fault_rx_release_fired(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct fdn__lane *l = t->arg;
    struct fdn__lane_faults *f = l->faults;
    if (!f->rx_holding || l->dying || fdn__peer_closing(l->peer))
        return FDN_TASK_DONE;
    f->rx_holding = false;
    int rc = fdn__peer_on_data(l->peer, &f->rx_held, f->rx_held_payload);
    if (rc == 0 && f->rx_rest_len) {
        /* Decoding may hold again and keep what is left: into a new buffer. */
        uint8_t *rest = f->rx_rest;
        size_t len = f->rx_rest_len;
        f->rx_rest = NULL;
        f->rx_rest_len = f->rx_rest_cap = 0;
        rc = fdn__lane_on_recv(l, rest, len);
        free(rest);
    }
    if (rc == 0 && !f->rx_holding && l->conn && !l->rx_turn_paused)
        fdn__tp_recv_pause(l->conn, false);
    fdn__lane_on_recv_result(l, rc);
    return FDN_TASK_DONE;
}
