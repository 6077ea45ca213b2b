/* Per-channel send queues and the frame scheduler (see frame_sched.h).
 *
 * Data layout. Each lane has its own eight classes (class index = lane * 8 +
 * priority): lanes are separate connections, each drained on its own, so
 * priority only ever orders channels that share a lane. Each class keeps a
 * circular doubly linked list of its ready channels (the DWRR round), whose
 * head is the channel whose turn it is; a 64-bit mask says which classes have
 * a ready channel, so strict priority within a lane is one
 * count-trailing-zeros of that lane's byte. Only ready channels are on a round: an idle or
 * credit-stalled channel is off it, so picking a frame never scans channels
 * that cannot send.
 *
 * Each channel holds its messages in an array ring of descriptors sized by
 * max_queued_msgs. In ring order, the held messages are first those whose
 * last frame has been handed out (waiting for frames to be done), then those
 * not fully handed out yet, oldest first. A descriptor is retired (its slot
 * reusable) only from the oldest end, once its message was released; a
 * message whose frames complete before an older message's is released at
 * once and its slot retired when the older one goes. */
#include "core/frame_sched.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/worker.h>

#include "base/compiler.h"
#include "base/error.h"

struct msg_slot {
    fdn_msg *msg;                /* NULL once released */
    uint64_t msg_id;
    uint64_t total_len;
    uint64_t scheduled;          /* bytes handed out in frames so far */
    const fdn_msg *cursor_buf;   /* buffer holding byte `scheduled` (or the chain's end) */
    uint32_t cursor_off;         /* offset of that byte within cursor_buf's payload */
    uint32_t frames_out;         /* frames handed out and not yet done */
    bool last_handed_out;
    uint64_t tag;                /* the caller's, copied to frames */
    uint16_t kind;
    bool awaiting_ack;           /* retain: every frame done, kept until acknowledged */
    bool counted_sent;           /* stats.msgs_sent has counted it */
};

struct fdn__sched_channel {
    /* DWRR state; prev/next are meaningful only while on_round. */
    struct fdn__sched_channel *prev;
    struct fdn__sched_channel *next;
    uint64_t quantum;            /* weight * max_fragment */
    uint64_t deficit;
    bool on_round;
    bool quantum_given;          /* this turn's quantum is already in the deficit */
    bool stalled;                /* off the round for want of credit */
    bool credit_limited;
    uint8_t prio;
    uint8_t lane;
    uint16_t id;
    uint64_t credit;

    /* Descriptor ring. */
    struct msg_slot *slots;
    uint32_t capacity;
    uint32_t oldest;             /* slot of the oldest held message */
    uint32_t held;               /* messages held */
    uint32_t unscheduled;        /* of those, the newest ones not fully handed out */
    uint64_t max_held_bytes;     /* 0: no limit */
    uint64_t held_bytes;         /* payload bytes of the held messages */
    bool retain;
    uint64_t acked_upto;         /* retain: ids below it are acknowledged */

    fdn__sched_release_fn release;
    void *release_arg;
    struct fdn__sched_channel_stats stats;
};

struct prio_class {
    struct fdn__sched_channel *turn;  /* head of the round, NULL when none is ready */
};

struct fdn__sched {
    uint32_t max_fragment;
    uint32_t created_max_fragment;    /* what quanta were made from: the most */
    fdn__sched_whole_fn whole;        /* NULL: every message is fragmented */
    void *whole_arg;
    uint64_t ready_classes;           /* bit k set: classes[k] has a ready channel */
    struct prio_class classes[FDN__SCHED_MAX_LANES * FDN_PRIO_CLASSES];
    struct fdn__sched_channel **channels;  /* sorted by id, for lookups */
    uint32_t num_channels;
};

/* ---- Lookup --------------------------------------------------------------- */

static struct fdn__sched_channel *find_channel(const struct fdn__sched *s, uint16_t id)
{
    uint32_t lo = 0, hi = s->num_channels;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        struct fdn__sched_channel *c = s->channels[mid];
        if (c->id == id)
            return c;
        if (c->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Index at which a channel with this id belongs in the sorted array. */
static uint32_t insertion_index(const struct fdn__sched *s, uint16_t id)
{
    uint32_t lo = 0, hi = s->num_channels;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->channels[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* ---- Descriptor ring ------------------------------------------------------ */

/* The slot n places after slot (n < capacity), round the ring. */
static uint32_t slot_after(const struct fdn__sched_channel *c, uint32_t slot, uint32_t n)
{
    uint32_t i = slot + n;
    return i >= c->capacity ? i - c->capacity : i;
}

static uint32_t ring_index(const struct fdn__sched_channel *c, uint32_t from_oldest)
{
    return slot_after(c, c->oldest, from_oldest);
}

/* The oldest message not fully handed out; the channel must have one. */
static struct msg_slot *schedule_head(struct fdn__sched_channel *c)
{
    return &c->slots[ring_index(c, c->held - c->unscheduled)];
}

/* Frees slots from the oldest end while their messages are released. */
static void retire_released(struct fdn__sched_channel *c)
{
    uint32_t handed_out = c->held - c->unscheduled;
    while (handed_out > 0 && c->slots[c->oldest].msg == NULL) {
        c->oldest = ring_index(c, 1);
        c->held--;
        handed_out--;
    }
}

/* ---- Readiness and the DWRR rounds --------------------------------------- */

static uint64_t bytes_left(const struct msg_slot *m) { return m->total_len - m->scheduled; }

/* Can hand out a fragment now: something to send, and credit for it unless
 * it is an empty message. */
static bool channel_ready(struct fdn__sched_channel *c)
{
    if (c->unscheduled == 0)
        return false;
    return !c->credit_limited || c->credit > 0 || bytes_left(schedule_head(c)) == 0;
}

_Static_assert(FDN__SCHED_MAX_LANES * FDN_PRIO_CLASSES <= 64, "one ready bit per class");

static unsigned class_of(const struct fdn__sched_channel *c)
{
    return c->lane * FDN_PRIO_CLASSES + c->prio;
}

/* Joins the end of its class's round with an empty deficit. */
static void join_round(struct fdn__sched *s, struct fdn__sched_channel *c)
{
    struct prio_class *cls = &s->classes[class_of(c)];
    struct fdn__sched_channel *turn = cls->turn;
    if (turn) {
        c->prev = turn->prev;
        c->next = turn;
        turn->prev->next = c;
        turn->prev = c;
    } else {
        c->prev = c;
        c->next = c;
        cls->turn = c;
        s->ready_classes |= UINT64_C(1) << class_of(c);
    }
    c->on_round = true;
    c->deficit = 0;
    c->quantum_given = false;
}

/* Leaves the round; as in DWRR, an idle channel keeps no deficit. */
static void leave_round(struct fdn__sched *s, struct fdn__sched_channel *c)
{
    struct prio_class *cls = &s->classes[class_of(c)];
    if (c->next == c) {
        cls->turn = NULL;
        s->ready_classes &= ~(UINT64_C(1) << class_of(c));
    } else {
        c->prev->next = c->next;
        c->next->prev = c->prev;
        if (cls->turn == c)
            cls->turn = c->next;
    }
    c->on_round = false;
    c->deficit = 0;
    c->quantum_given = false;
}

static void mark_stalled(struct fdn__sched_channel *c)
{
    c->stalled = true;
    c->stats.credit_stalls++;
}

/* Puts an off-round channel where its state says it belongs. */
static void place_off_round(struct fdn__sched *s, struct fdn__sched_channel *c)
{
    if (channel_ready(c)) {
        c->stalled = false;
        join_round(s, c);
    } else if (c->unscheduled > 0 && !c->stalled) {
        mark_stalled(c);
    }
}

/* Takes an on-round channel off its round if it can no longer send. */
static void recheck_on_round(struct fdn__sched *s, struct fdn__sched_channel *c)
{
    if (channel_ready(c))
        return;
    leave_round(s, c);
    if (c->unscheduled > 0)
        mark_stalled(c);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

static uint32_t next_fragment_len(const struct fdn__sched *s, struct fdn__sched_channel *c)
{
    const struct msg_slot *m = schedule_head(c);
    uint64_t cap = s->max_fragment;
    if (s->whole && s->whole(s->whole_arg, c->lane, m->msg))
        cap = UINT32_MAX;   /* max_message never exceeds it */
    uint64_t len = min_u64(cap, bytes_left(m));
    if (c->credit_limited)
        len = min_u64(len, c->credit);
    return (uint32_t)len;
}

/* What a fragment takes from the deficit: its bytes, and at least one so
 * that empty messages cannot hold the turn forever. */
static uint64_t fragment_cost(uint32_t len) { return len ? len : 1; }

/* The channel whose turn it is and whose deficit covers its next fragment.
 * Every channel on the round is ready and a fresh quantum covers any
 * fragment of max_fragment, so this ends within one lap; a whole message
 * (fdn__sched_set_whole) costs its length too, and may take as many laps
 * as it has quanta, which keeps the class's byte shares fair. */
static struct fdn__sched_channel *pick_in_class(struct fdn__sched *s, struct prio_class *cls)
{
    for (;;) {
        struct fdn__sched_channel *c = cls->turn;
        if (!c->quantum_given) {
            c->deficit += c->quantum;
            c->quantum_given = true;
        }
        if (fragment_cost(next_fragment_len(s, c)) <= c->deficit)
            return c;
        c->quantum_given = false;
        cls->turn = c->next;
    }
}

/* ---- Fragments ------------------------------------------------------------ */

/* Moves the cursor len bytes on, landing on a buffer that still has bytes
 * (or NULL at the chain's end). */
static void advance_cursor(struct msg_slot *m, uint32_t len)
{
    const fdn_msg *b = m->cursor_buf;
    uint64_t off = m->cursor_off + (uint64_t)len;
    while (b && off >= b->len) {
        off -= b->len;
        b = b->next;
    }
    m->cursor_buf = b;
    m->cursor_off = (uint32_t)off;
}

static void hand_out_fragment(struct fdn__sched *s, struct fdn__sched_channel *c,
                              struct fdn__frame *out)
{
    struct msg_slot *m = schedule_head(c);
    uint32_t len = next_fragment_len(s, c);
    *out = (struct fdn__frame){
        .msg = m->msg,
        .msg_id = m->msg_id,
        .offset = m->scheduled,
        .total_len = m->total_len,
        .tag = m->tag,
        .kind = m->kind,
        .len = len,
        .msgs = 1,
        .channel = c->id,
        .first = m->scheduled == 0,
        .last = m->scheduled + len == m->total_len,
        .chan_ = c,
        .start_buf_ = m->cursor_buf,
        .start_off_ = m->cursor_off,
        .slot_ = (uint32_t)(m - c->slots),
    };
    advance_cursor(m, len);
    m->scheduled += len;
    m->frames_out++;
    c->deficit -= fragment_cost(len);
    c->stats.unscheduled_bytes -= len;
    if (c->credit_limited)
        c->credit -= len;
    if (out->last) {
        m->last_handed_out = true;
        c->unscheduled--;
    }
}

/* The ready bits of one lane's classes, in the low byte. */
static unsigned lane_ready(const struct fdn__sched *s, unsigned lane)
{
    if (lane >= FDN__SCHED_MAX_LANES)
        return 0;
    return (unsigned)(s->ready_classes >> (lane * FDN_PRIO_CLASSES)) & 0xffu;
}

/* Whether the channel's next message may join a packed frame that has used
 * `used` of pk->room (see fdn__sched_next_packed). */
static bool packable(const struct fdn__sched *s, struct fdn__sched_channel *c,
                     const struct fdn__sched_pack *pk, uint64_t used)
{
    const struct msg_slot *m = schedule_head(c);
    uint64_t len = m->total_len;
    return m->kind == 0 && m->scheduled == 0 && len <= pk->max_msg_len &&
           len + pk->per_msg <= pk->room - used && (!c->credit_limited || len <= c->credit) &&
           fragment_cost((uint32_t)len) <= c->deficit &&
           !(s->whole && s->whole(s->whole_arg, c->lane, m->msg));
}

int fdn__sched_next_packed(struct fdn__sched *s, unsigned lane, const struct fdn__sched_pack *pk,
                           struct fdn__frame *out)
{
    unsigned ready = lane_ready(s, lane);
    if (!ready)
        return 0;
    struct prio_class *cls = &s->classes[lane * FDN_PRIO_CLASSES + (unsigned)__builtin_ctz(ready)];
    struct fdn__sched_channel *c = pick_in_class(s, cls);
    /* The deficit covers the first message (pick_in_class): check the rest
     * of the rules before handing it out. */
    bool pack = pk->max_msgs > 1 && packable(s, c, pk, 0);
    hand_out_fragment(s, c, out);
    if (pack) {
        uint64_t used = out->len + (uint64_t)pk->per_msg;
        while (out->msgs < pk->max_msgs && c->unscheduled > 0 && packable(s, c, pk, used)) {
            struct fdn__frame more;
            hand_out_fragment(s, c, &more);   /* whole: packable() checked it fits */
            used += more.len + (uint64_t)pk->per_msg;
            out->len += more.len;
            out->msgs++;
        }
        out->total_len = out->len;
    }
    recheck_on_round(s, c);
    return 1;
}

int fdn__sched_next(struct fdn__sched *s, unsigned lane, struct fdn__frame *out)
{
    static const struct fdn__sched_pack one_per_frame = {.max_msgs = 1};
    return fdn__sched_next_packed(s, lane, &one_per_frame, out);
}

const fdn_msg *fdn__frame_msg(const struct fdn__frame *f, uint32_t i)
{
    const struct fdn__sched_channel *c = f->chan_;
    assert(i < f->msgs);
    return c->slots[slot_after(c, f->slot_, i)].msg;
}

bool fdn__sched_has_ready(const struct fdn__sched *s, unsigned lane)
{
    return lane_ready(s, lane) != 0;
}

int fdn__frame_iov(const struct fdn__frame *f, struct iovec *iov, int max)
{
    int n = 0;
    uint64_t left = f->len;
    uint32_t off = f->start_off_;
    for (const fdn_msg *b = f->start_buf_; left > 0; b = b->next, off = 0) {
        assert(b != NULL);
        uint32_t take = (uint32_t)min_u64(b->len - off, left);
        if (take == 0)
            continue;
        if (n >= max)
            return -ENOSPC;
        iov[n].iov_base = b->data + off;
        iov[n].iov_len = take;
        n++;
        left -= take;
    }
    return n;
}

/* ---- Completion and release ----------------------------------------------- */

static void release_msg(struct fdn__sched_channel *c, uint64_t msg_id, fdn_msg *msg, bool sent)
{
    if (c->release)
        c->release(c->release_arg, c->id, msg_id, msg, sent);
    else
        fdn_msg_free(msg);
}

/* Bookkeeping first, callback last, so the callback sees a consistent
 * channel and may enqueue on it. */
static void release_slot(struct fdn__sched_channel *c, struct msg_slot *m)
{
    fdn_msg *msg = m->msg;
    uint64_t msg_id = m->msg_id;
    if (m->awaiting_ack) {
        c->stats.unacked_msgs--;
        c->stats.unacked_bytes -= m->total_len;
    } else {
        c->stats.queued_msgs--;
        c->stats.queued_bytes -= m->total_len;
    }
    c->held_bytes -= m->total_len;
    m->msg = NULL;
    m->awaiting_ack = false;
    retire_released(c);
    release_msg(c, msg_id, msg, true);
}

/* Every frame of m is done: release it, or keep it until acknowledged. */
static void message_sent(struct fdn__sched_channel *c, struct msg_slot *m)
{
    if (!m->counted_sent) {
        m->counted_sent = true;
        c->stats.msgs_sent++;
    }
    if (!c->retain || m->msg_id < c->acked_upto) {
        release_slot(c, m);
        return;
    }
    m->awaiting_ack = true;
    c->stats.queued_msgs--;
    c->stats.queued_bytes -= m->total_len;
    c->stats.unacked_msgs++;
    c->stats.unacked_bytes += m->total_len;
}

void fdn__sched_frame_done(struct fdn__sched *s, const struct fdn__frame *f)
{
    (void)s;
    struct fdn__sched_channel *c = f->chan_;
    assert(c->slots[f->slot_].msg == f->msg);
    c->stats.frames_sent++;
    c->stats.bytes_sent += f->len;
    /* A packed frame's messages sit in consecutive slots, none retired
     * before its own release (a release callback's enqueue lands past them). */
    for (uint32_t i = 0; i < f->msgs; i++) {
        struct msg_slot *m = &c->slots[slot_after(c, f->slot_, i)];
        assert(m->msg && m->frames_out > 0);
        m->frames_out--;
        if (m->last_handed_out && m->frames_out == 0)
            message_sent(c, m);
    }
}

/* ---- Acknowledgement and rewind ------------------------------------------- */

int fdn__sched_ack(struct fdn__sched *s, uint16_t channel_id, uint64_t upto)
{
    struct fdn__sched_channel *c = find_channel(s, channel_id);
    if (!c)
        return FDN_ERR(-ENOENT, "ack for unknown channel %u", channel_id);
    if (upto <= c->acked_upto)
        return 0;
    /* Check first, so that a false claim changes nothing. */
    uint32_t handed_out = c->held - c->unscheduled;
    for (uint32_t i = handed_out; i < c->held; i++) {
        const struct msg_slot *m = &c->slots[ring_index(c, i)];
        if (m->msg_id < upto)
            return FDN_ERR(-EPROTO, "channel %u: ack up to %" PRIu64 " covers message %" PRIu64
                           ", not sent yet", channel_id, upto, m->msg_id);
        break;   /* ids grow: the later ones are higher still */
    }
    c->acked_upto = upto;
    /* Messages still with frames out are released by their last frame_done.
     * Ids grow along the ring, so the walk ends at the first one not
     * covered: an ACK costs what it acknowledges, not the whole window.
     * The callback may enqueue (at the ring's end): walk by index, and
     * retire once at the end. */
    for (uint32_t i = 0; i < handed_out; i++) {
        struct msg_slot *m = &c->slots[ring_index(c, i)];
        if (m->msg_id >= upto)
            break;
        if (m->msg && m->awaiting_ack) {
            fdn_msg *msg = m->msg;
            uint64_t msg_id = m->msg_id;
            c->stats.unacked_msgs--;
            c->stats.unacked_bytes -= m->total_len;
            c->held_bytes -= m->total_len;
            m->msg = NULL;
            m->awaiting_ack = false;
            release_msg(c, msg_id, msg, true);
        }
    }
    retire_released(c);
    return 1;
}

static void reset_cursor(struct msg_slot *m)
{
    m->scheduled = 0;
    m->cursor_buf = m->msg;
    m->cursor_off = 0;
    advance_cursor(m, 0);
    m->last_handed_out = false;
}

int fdn__sched_rewind(struct fdn__sched *s, uint16_t channel_id)
{
    struct fdn__sched_channel *c = find_channel(s, channel_id);
    if (!c)
        return FDN_ERR(-ENOENT, "rewind of unknown channel %u", channel_id);
    retire_released(c);
    for (uint32_t i = 0; i < c->held; i++) {
        const struct msg_slot *m = &c->slots[ring_index(c, i)];
        if (!m->msg || m->frames_out)
            return FDN_ERR(-EBUSY, "channel %u: rewind with frames still out", channel_id);
    }
    int rewound = 0;
    uint64_t unscheduled_bytes = 0;
    for (uint32_t i = 0; i < c->held; i++) {
        struct msg_slot *m = &c->slots[ring_index(c, i)];
        if (m->scheduled > 0 || m->last_handed_out)
            rewound++;
        if (m->awaiting_ack) {
            m->awaiting_ack = false;
            c->stats.unacked_msgs--;
            c->stats.unacked_bytes -= m->total_len;
            c->stats.queued_msgs++;
            c->stats.queued_bytes += m->total_len;
        }
        reset_cursor(m);
        unscheduled_bytes += m->total_len;
    }
    c->unscheduled = c->held;
    c->stats.unscheduled_bytes = unscheduled_bytes;
    c->stats.rewound_msgs += (uint64_t)rewound;
    if (c->on_round)
        recheck_on_round(s, c);
    else
        place_off_round(s, c);
    return rewound;
}

/* ---- Enqueue and credit --------------------------------------------------- */

/* -EAGAIN / -EMSGSIZE when the channel cannot take total_len more bytes. */
static int check_room(struct fdn__sched_channel *c, uint64_t total_len)
{
    if (c->max_held_bytes && total_len > c->max_held_bytes)
        return FDN_ERR(-EMSGSIZE, "a %" PRIu64 "-byte message exceeds channel %u's %" PRIu64
                       "-byte queue", total_len, c->id, c->max_held_bytes);
    bool full = c->held == c->capacity ||
                (c->max_held_bytes && total_len > c->max_held_bytes - c->held_bytes);
    if (full) {
        c->stats.refused++;
        return -EAGAIN;
    }
    return 0;
}

int fdn__sched_enqueue(struct fdn__sched *s, uint16_t channel_id, fdn_msg *msg, uint64_t msg_id)
{
    return fdn__sched_enqueue_tagged(s, channel_id, msg, msg_id, 0, 0);
}

/* Whether a message just queued on an idle channel may be handed out at
 * once (fdn__sched_enqueue_now): nothing else of its lane is ready, so the
 * pick would be this channel; it fits one frame; and credit covers it. */
static bool goes_now(const struct fdn__sched *s, const struct fdn__sched_channel *c,
                     uint64_t total_len)
{
    return lane_ready(s, c->lane) == 0 && total_len <= s->max_fragment &&
           (!c->credit_limited || total_len <= c->credit);
}

int fdn__sched_enqueue_now(struct fdn__sched *s, uint16_t channel_id, fdn_msg *msg,
                           uint64_t msg_id, uint16_t kind, uint64_t tag, bool now,
                           struct fdn__frame *out)
{
    struct fdn__sched_channel *c = find_channel(s, channel_id);
    if (!c)
        return FDN_ERR(-ENOENT, "enqueue on unknown channel %u", channel_id);
    uint64_t total_len = fdn_msg_total_len(msg);
    int rc = check_room(c, total_len);
    if (rc < 0)
        return rc;

    struct msg_slot *m = &c->slots[ring_index(c, c->held)];
    *m = (struct msg_slot){
        .msg = msg, .msg_id = msg_id, .total_len = total_len, .tag = tag, .kind = kind,
    };
    m->cursor_buf = msg;
    advance_cursor(m, 0);
    bool was_idle = c->unscheduled == 0;
    c->held++;
    c->unscheduled++;
    c->stats.queued_msgs++;
    c->stats.queued_bytes += total_len;
    c->held_bytes += total_len;
    c->stats.unscheduled_bytes += total_len;
    if (!was_idle)
        return 0;
    if (now && goes_now(s, c, total_len)) {
        /* What joining the round, the pick and leaving it would do, less
         * the round: an idle channel comes back off it with no deficit. */
        c->stalled = false;
        c->deficit = fragment_cost((uint32_t)total_len);
        hand_out_fragment(s, c, out);
        return 1;
    }
    place_off_round(s, c);
    return 0;
}

int fdn__sched_enqueue_tagged(struct fdn__sched *s, uint16_t channel_id, fdn_msg *msg,
                              uint64_t msg_id, uint16_t kind, uint64_t tag)
{
    return fdn__sched_enqueue_now(s, channel_id, msg, msg_id, kind, tag, false, NULL);
}

int fdn__sched_grant(struct fdn__sched *s, uint16_t channel_id, uint64_t bytes)
{
    struct fdn__sched_channel *c = find_channel(s, channel_id);
    if (!c)
        return FDN_ERR(-ENOENT, "credit granted for unknown channel %u", channel_id);
    if (!c->credit_limited)
        return 0;
    c->credit = bytes > UINT64_MAX - c->credit ? UINT64_MAX : c->credit + bytes;
    if (c->stalled)
        place_off_round(s, c);
    return 0;
}

int fdn__sched_set_credit(struct fdn__sched *s, uint16_t channel_id, uint64_t bytes)
{
    struct fdn__sched_channel *c = find_channel(s, channel_id);
    if (!c)
        return FDN_ERR(-ENOENT, "credit set for unknown channel %u", channel_id);
    if (!c->credit_limited)
        return FDN_ERR(-EINVAL, "channel %u: credit %" PRIu64 " for a channel without a window",
                       channel_id, bytes);
    c->credit = bytes;
    if (c->on_round)
        recheck_on_round(s, c);
    else if (c->stalled)
        place_off_round(s, c);
    return 0;
}

int fdn__sched_set_lane(struct fdn__sched *s, uint16_t channel_id, unsigned lane)
{
    struct fdn__sched_channel *c = find_channel(s, channel_id);
    if (!c)
        return FDN_ERR(-ENOENT, "lane set for unknown channel %u", channel_id);
    if (lane >= FDN__SCHED_MAX_LANES)
        return FDN_ERR(-EINVAL, "channel %u: lane %u is not in 0..%d", channel_id, lane,
                       FDN__SCHED_MAX_LANES - 1);
    /* A ready channel stays ready, now in its new lane's round; an idle or
     * stalled one joins a round when it would have anyway. */
    bool ready = c->on_round;
    if (ready)
        leave_round(s, c);
    c->lane = (uint8_t)lane;
    if (ready)
        join_round(s, c);
    return 0;
}

int fdn__sched_channel_stats(const struct fdn__sched *s, uint16_t channel_id,
                             struct fdn__sched_channel_stats *out)
{
    const struct fdn__sched_channel *c = find_channel(s, channel_id);
    if (!c)
        return FDN_ERR(-ENOENT, "no channel %u", channel_id);
    *out = c->stats;
    out->credit = c->credit_limited ? c->credit : FDN__SCHED_UNLIMITED_CREDIT;
    return 0;
}

/* ---- Set-up and teardown -------------------------------------------------- */

int fdn__sched_create(const struct fdn__sched_config *cfg, struct fdn__sched **out)
{
    uint32_t max_fragment = cfg && cfg->max_fragment ? cfg->max_fragment
                                                     : FDN__SCHED_DEFAULT_FRAGMENT;
    if (max_fragment > FDN__SCHED_MAX_FRAGMENT)
        return FDN_ERR(-EINVAL, "max_fragment %u is over %u", max_fragment,
                       FDN__SCHED_MAX_FRAGMENT);
    struct fdn__sched *s = calloc(1, sizeof *s);
    if (!s)
        return FDN_ERR(-ENOMEM, "no memory for a frame scheduler");
    s->max_fragment = s->created_max_fragment = max_fragment;
    *out = s;
    return 0;
}

int fdn__sched_set_max_fragment(struct fdn__sched *s, uint32_t max_fragment)
{
    if (max_fragment == 0 || max_fragment > s->created_max_fragment)
        return FDN_ERR(-EINVAL, "max_fragment %u is not in 1..%u", max_fragment,
                       s->created_max_fragment);
    s->max_fragment = max_fragment;
    return 0;
}

static int validate_channel(const struct fdn__sched *s, const struct fdn__sched_channel_config *cfg)
{
    if (cfg->prio > FDN_PRIO_LOWEST)
        return FDN_ERR(-EINVAL, "channel %u: priority %u is not a class (0..%d)", cfg->id,
                       cfg->prio, FDN_PRIO_LOWEST);
    if (cfg->lane >= FDN__SCHED_MAX_LANES)
        return FDN_ERR(-EINVAL, "channel %u: lane %u is not in 0..%d", cfg->id, cfg->lane,
                       FDN__SCHED_MAX_LANES - 1);
    if (cfg->weight < 1 || cfg->weight > FDN__SCHED_MAX_WEIGHT)
        return FDN_ERR(-EINVAL, "channel %u: weight %u is not in 1..%u", cfg->id, cfg->weight,
                       FDN__SCHED_MAX_WEIGHT);
    if (cfg->max_queued_msgs < 1 || cfg->max_queued_msgs > FDN__SCHED_MAX_QUEUED_MSGS)
        return FDN_ERR(-EINVAL, "channel %u: max_queued_msgs %u is not in 1..%u", cfg->id,
                       cfg->max_queued_msgs, FDN__SCHED_MAX_QUEUED_MSGS);
    if (find_channel(s, cfg->id))
        return FDN_ERR(-EEXIST, "channel %u already exists", cfg->id);
    return 0;
}

static struct fdn__sched_channel *new_channel(const struct fdn__sched *s,
                                              const struct fdn__sched_channel_config *cfg)
{
    struct fdn__sched_channel *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->slots = calloc(cfg->max_queued_msgs, sizeof *c->slots);
    if (!c->slots) {
        free(c);
        return NULL;
    }
    c->capacity = cfg->max_queued_msgs;
    c->id = cfg->id;
    c->prio = cfg->prio;
    c->lane = cfg->lane;
    c->quantum = (uint64_t)cfg->weight * s->created_max_fragment;
    c->credit_limited = cfg->credit_window != 0;
    c->credit = cfg->credit_window;
    c->max_held_bytes = cfg->max_queued_bytes;
    c->retain = cfg->retain;
    c->release = cfg->release;
    c->release_arg = cfg->release_arg;
    return c;
}

void fdn__sched_set_whole(struct fdn__sched *s, fdn__sched_whole_fn fn, void *arg)
{
    s->whole = fn;
    s->whole_arg = arg;
}

int fdn__sched_add_channel(struct fdn__sched *s, const struct fdn__sched_channel_config *cfg)
{
    int rc = validate_channel(s, cfg);
    if (rc < 0)
        return rc;
    struct fdn__sched_channel **grown =
        realloc(s->channels, (s->num_channels + 1) * sizeof *s->channels);
    if (!grown)
        return FDN_ERR(-ENOMEM, "no memory for channel %u", cfg->id);
    s->channels = grown;
    struct fdn__sched_channel *c = new_channel(s, cfg);
    if (!c)
        return FDN_ERR(-ENOMEM, "no memory for channel %u's %u descriptors", cfg->id,
                       cfg->max_queued_msgs);
    uint32_t at = insertion_index(s, cfg->id);
    memmove(&s->channels[at + 1], &s->channels[at],
            (s->num_channels - at) * sizeof *s->channels);
    s->channels[at] = c;
    s->num_channels++;
    return 0;
}

/* Releases the channel's held messages (sent = false) and frees it. */
static uint64_t drop_channel(struct fdn__sched_channel *c)
{
    uint64_t dropped = 0;
    for (uint32_t i = 0; i < c->held; i++) {
        struct msg_slot *m = &c->slots[ring_index(c, i)];
        if (m->msg) {
            release_msg(c, m->msg_id, m->msg, false);
            dropped++;
        }
    }
    free(c->slots);
    free(c);
    return dropped;
}

uint64_t fdn__sched_destroy(struct fdn__sched *s)
{
    if (!s)
        return 0;
    uint64_t dropped = 0;
    for (uint32_t i = 0; i < s->num_channels; i++)
        dropped += drop_channel(s->channels[i]);
    free(s->channels);
    free(s);
    return dropped;
}
