/* The sender side of one connection: per-channel send queues and the frame
 * scheduler that decides which channel's bytes go on the wire next. Internal.
 *
 * Head-of-line freedom (DESIGN.md, "Messages and channels", parts 1 and 3)
 * rests on three rules implemented here:
 *
 * 1. Strict priority between classes. A frame of class p is chosen only when
 *    no channel of a more urgent class (smaller number) is ready.
 * 2. Deficit weighted round robin within a class, at fragment granularity.
 *    Each ready channel of the class, in turn, adds its quantum
 *    (weight * max_fragment bytes) to its deficit and then emits fragments
 *    while the next fragment's cost fits the deficit; a fragment costs its
 *    payload length, and a zero-length fragment costs one byte so that a
 *    stream of empty messages still ends its turn. A channel that leaves the
 *    ready set (queue drained, or credit exhausted) forgets its deficit, and
 *    one that joins it queues at the end of its class's round. Because
 *    fdn__sched_next() hands out one fragment per call and re-decides every
 *    time, a message of any size delays a more urgent one by at most the one
 *    fragment already handed out.
 * 3. Credit. A channel configured with a credit window may put on the wire
 *    only bytes the receiver has granted: the window at first, then every
 *    fdn__sched_grant(). A fragment is min(max_fragment, bytes left in the
 *    message, credit) long, so a channel with any credit makes progress and
 *    a window smaller than a fragment never deadlocks. A channel whose head
 *    message has bytes left and whose credit is 0 is credit-stalled: it is
 *    taken out of its class's round (counted once per stall) until a grant
 *    arrives, and every other channel keeps flowing. Zero-length messages
 *    carry no bytes and therefore need no credit. The receiver requires a
 *    window of at least the channel's largest message (core/reassembly.h
 *    says why), so a message never waits for credit that cannot come.
 *
 * 4. Lanes. Each channel travels on one lane (one connection of the peer);
 *    the rules above apply among the channels of a lane, and each lane is
 *    drained on its own, as fast as its connection takes bytes.
 *
 * Within one channel, messages leave in the order they were enqueued and the
 * fragments of one message are consecutive: the receiver reassembles at most
 * one message per channel at a time (core/reassembly.h).
 *
 * Ownership. fdn__sched_enqueue() takes the caller's reference to the
 * message. The scheduler holds it until every frame of the message has been
 * reported done with fdn__sched_frame_done(), then releases it: through the
 * channel's release callback if one is configured (a reliable channel keeps
 * the message for retransmission), else with fdn_msg_free(). A frame
 * returned by fdn__sched_next() points into the message's buffers; those
 * bytes stay valid and unchanged until that frame is done, however many
 * other frames are outstanding at the same time and in whatever order they
 * complete.
 *
 * Retention (reliable channels, session resumption). A channel configured
 * with `retain` keeps each message after its frames are done, until the
 * receiver acknowledges it (fdn__sched_ack(), cumulative: every message id
 * below a bound), and only then releases it. After a connection is lost the
 * caller acknowledges what the receiver says it has, then
 * fdn__sched_rewind() makes every message still held unsent again, from
 * offset 0, in its original order, so the session resumes with exactly the
 * messages the receiver lacks. A retaining channel's message ids must grow
 * in enqueue order (they are the channel's sequence numbers). Because a
 * receiver acknowledges a message no later than it grants back its credit,
 * the bytes held unacknowledged never exceed the credit window; and since
 * they count against max_queued_msgs and max_queued_bytes like queued ones,
 * the channel's memory stays bounded by its configuration.
 *
 * Limits. A message counts against its channel's queue limits from enqueue
 * until its release, because until then the scheduler holds its memory.
 * Enqueue never allocates: each channel's message descriptors live in an
 * array sized by its message limit when the channel is added.
 *
 * Threads: one scheduler per connection, used only by the thread that owns
 * the connection. Nothing here is synchronised. */
#ifndef FDN_CORE_FRAME_SCHED_H
#define FDN_CORE_FRAME_SCHED_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include <fdn/msg.h>

#define FDN__SCHED_DEFAULT_FRAGMENT (16u << 10)
#define FDN__SCHED_MAX_FRAGMENT (1u << 30)    /* largest max_fragment accepted */
#define FDN__SCHED_MAX_WEIGHT 1000u
#define FDN__SCHED_MAX_LANES 8                /* lanes (connections) per scheduler */
#define FDN__SCHED_MAX_QUEUED_MSGS (1u << 20) /* largest max_queued_msgs accepted */
#define FDN__SCHED_UNLIMITED_CREDIT UINT64_MAX /* stats.credit of a channel without a window */

struct fdn__sched;
struct fdn__sched_channel;

/* Receives a message the scheduler lets go of; the reference passes to the
 * callback. sent is true when every frame of the message was done, false when
 * fdn__sched_destroy() dropped it. Called from fdn__sched_frame_done(), the
 * callback may enqueue and grant on the same scheduler (its bookkeeping is
 * complete by then) but must not destroy it; called from fdn__sched_ack(),
 * it may enqueue but must not ack or rewind; called from
 * fdn__sched_destroy(), it must not touch the scheduler at all. */
typedef void (*fdn__sched_release_fn)(void *arg, uint16_t channel, uint64_t msg_id,
                                      fdn_msg *msg, bool sent);

/* Whether msg, next on a channel of lane, may go as one frame whatever
 * max_fragment is (peer.c: its buffer is in the lane's shared pool, and
 * crosses by reference). Asked at each decision; a message partly handed
 * out goes on in frames of whatever length the answer then allows. */
typedef bool (*fdn__sched_whole_fn)(void *arg, unsigned lane, const fdn_msg *msg);

struct fdn__sched_config {
    uint32_t max_fragment;  /* payload bytes of a frame, 1..FDN__SCHED_MAX_FRAGMENT;
                               0 selects FDN__SCHED_DEFAULT_FRAGMENT (16 KiB) */
};

struct fdn__sched_channel_config {
    uint16_t id;                  /* unique within the scheduler */
    uint8_t prio;                 /* class 0 (most urgent) .. FDN_PRIO_LOWEST */
    uint8_t lane;                 /* 0..FDN__SCHED_MAX_LANES-1: the connection it uses */
    uint16_t weight;              /* 1..FDN__SCHED_MAX_WEIGHT, share within the class */
    uint64_t credit_window;       /* initial credit in bytes; 0: no flow control */
    uint32_t max_queued_msgs;     /* 1..FDN__SCHED_MAX_QUEUED_MSGS messages held */
    uint64_t max_queued_bytes;    /* payload bytes held; 0: no byte limit */
    bool retain;                  /* keep sent messages until acknowledged */
    fdn__sched_release_fn release; /* NULL: fdn_msg_free() */
    void *release_arg;
};

/* One fragment to transmit. The first group of fields describes it for the
 * wire header; the fields ending in '_' are the scheduler's own, for
 * fdn__frame_iov() and fdn__sched_frame_done(). A frame may be copied; it
 * stays meaningful until fdn__sched_frame_done() is called for it (once). */
struct fdn__frame {
    fdn_msg *msg;          /* the whole message; read-only, held by the scheduler */
    uint64_t msg_id;
    uint64_t offset;       /* of the fragment's first byte within the message */
    uint64_t total_len;    /* payload bytes of the whole message */
    uint64_t tag;          /* the caller's, as enqueued (fdn__sched_enqueue_tagged) */
    uint32_t len;          /* payload bytes of this fragment; 0 only for an empty message;
                              a packed frame: of all its messages */
    uint32_t msgs;         /* messages in the frame: 1, or more when packed */
    uint16_t channel;
    uint16_t kind;         /* the caller's, as enqueued */
    bool first;            /* offset == 0 */
    bool last;             /* offset + len == total_len */

    struct fdn__sched_channel *chan_;
    const fdn_msg *start_buf_;  /* buffer of the chain holding byte `offset` */
    uint32_t start_off_;        /* offset of that byte within start_buf_'s payload */
    uint32_t slot_;             /* descriptor of the message in the channel's array */
};

struct fdn__sched_channel_stats {
    uint64_t queued_msgs;       /* held and not yet sent: enqueued, not every frame done
                                   (sent messages awaiting an ack are not counted) */
    uint64_t queued_bytes;      /* payload bytes of those */
    uint64_t unacked_msgs;      /* retain: sent, held until acknowledged */
    uint64_t unacked_bytes;     /* payload bytes of those */
    uint64_t rewound_msgs;      /* messages fdn__sched_rewind() made unsent again after
                                   some or all of their frames were handed out */
    uint64_t unscheduled_bytes; /* of those, bytes not yet handed out in a frame */
    uint64_t msgs_sent;         /* all their frames done (the first time: a message
                                   sent again after a rewind is not counted again) */
    uint64_t bytes_sent;        /* payload bytes of frames done */
    uint64_t frames_sent;       /* frames done */
    uint64_t credit_stalls;     /* times the channel stopped for want of credit */
    uint64_t refused;           /* enqueues refused with -EAGAIN */
    uint64_t credit;            /* bytes it may still send; FDN__SCHED_UNLIMITED_CREDIT
                                   without a window */
};

/* Creates an empty scheduler. cfg may be NULL (defaults). Returns 0,
 * -EINVAL for a max_fragment out of range, or -ENOMEM. */
int fdn__sched_create(const struct fdn__sched_config *cfg, struct fdn__sched **out);

/* Releases every message still held, through its channel's release callback
 * (sent = false) or fdn_msg_free(), frees the scheduler, and returns how many
 * messages were dropped that way. The transport must have finished with
 * every outstanding frame first: their bytes are released here. NULL: 0. */
uint64_t fdn__sched_destroy(struct fdn__sched *s);

/* Lets some messages go unfragmented (see fdn__sched_whole_fn). Credit
 * still applies: a whole message without the credit for it goes in the
 * frames the credit allows. */
void fdn__sched_set_whole(struct fdn__sched *s, fdn__sched_whole_fn fn, void *arg);

/* Adds a channel; it may be added while others carry traffic. Returns 0,
 * -EINVAL for a field out of range, -EEXIST for a duplicate id, or -ENOMEM. */
int fdn__sched_add_channel(struct fdn__sched *s, const struct fdn__sched_channel_config *cfg);

/* Queues msg (a chain of any number of buffers, possibly empty) behind the
 * channel's other messages. On 0 the scheduler owns the reference. On error
 * the caller keeps it: -EAGAIN when the channel holds max_queued_msgs
 * messages or the message does not fit beside the bytes held (backpressure,
 * counted in stats.refused); -EMSGSIZE when the message alone exceeds
 * max_queued_bytes and could never be queued; -ENOENT for an unknown channel. */
int fdn__sched_enqueue(struct fdn__sched *s, uint16_t channel_id, fdn_msg *msg, uint64_t msg_id);

/* The same, with two values of the caller's that every frame of the message
 * carries back (peer.c: the message's kind and correlation id). */
int fdn__sched_enqueue_tagged(struct fdn__sched *s, uint16_t channel_id, fdn_msg *msg,
                              uint64_t msg_id, uint16_t kind, uint64_t tag);

/* fdn__sched_enqueue_tagged(), and when `now` and the message would be the
 * lane's next pick as one whole frame (its channel had nothing queued, no
 * other channel of the lane is ready, it is at most max_fragment and credit
 * covers it), hands that frame out at once into *out and returns 1, as
 * fdn__sched_next() would have: the caller must send it (and report it
 * done) as any other frame. Returns 0 when the message was only queued. */
int fdn__sched_enqueue_now(struct fdn__sched *s, uint16_t channel_id, fdn_msg *msg,
                           uint64_t msg_id, uint16_t kind, uint64_t tag, bool now,
                           struct fdn__frame *out);

/* Picks the next fragment for lane by the rules above, among the channels on
 * that lane. Returns 1 with *out filled, or 0 when no channel of the lane can
 * send (all empty, or every one with data is credit-stalled). */
int fdn__sched_next(struct fdn__sched *s, unsigned lane, struct fdn__frame *out);

/* Packing: what fdn__sched_next_packed() may put in one frame. */
struct fdn__sched_pack {
    uint32_t max_msgs;     /* messages per frame, >= 1 */
    uint32_t max_msg_len;  /* the largest message packed */
    uint64_t room;         /* bytes the frame's messages may take, per_msg each included */
    uint32_t per_msg;      /* bytes each message takes beside its payload */
};

/* fdn__sched_next(), and then, when the frame is a whole message that may
 * be packed, more whole messages of the same channel, in order, in the same
 * frame (out->msgs of them, out->len their bytes; out->msg, msg_id, tag
 * and kind are the first one's, offset is 0, total_len is len, first and
 * last are true). A message may be packed when it was enqueued with kind 0,
 * is at most pk->max_msg_len bytes, is not sent whole by reference
 * (fdn__sched_set_whole), and fits what is left of pk->room, of the
 * channel's credit and of its deficit: each costs the scheduler what a
 * frame of it would, so priorities, shares and credit hold as without
 * packing. Packing stops at the first message that may not be packed;
 * that one goes in the next frame. fdn__frame_msg() names the messages,
 * and one fdn__sched_frame_done() reports them all. */
int fdn__sched_next_packed(struct fdn__sched *s, unsigned lane, const struct fdn__sched_pack *pk,
                           struct fdn__frame *out);

/* Message i (0 .. f->msgs - 1) of a frame. */
const fdn_msg *fdn__frame_msg(const struct fdn__frame *f, uint32_t i);

/* True when fdn__sched_next() would return a frame for lane. */
bool fdn__sched_has_ready(const struct fdn__sched *s, unsigned lane);

/* Moves a channel to another lane. Only before any of its frames is handed
 * out (the receiver reassembles a channel's frames in the order of one
 * connection). Returns 0, -ENOENT, or -EINVAL for a lane out of range. */
int fdn__sched_set_lane(struct fdn__sched *s, uint16_t channel_id, unsigned lane);

/* Fills up to max iovecs with the fragment's bytes [offset, offset + len) of
 * the message's chain, skipping empty buffers. Returns the number of iovecs
 * (0 for an empty fragment), or -ENOSPC when the fragment spans more than max
 * buffers. */
int fdn__frame_iov(const struct fdn__frame *f, struct iovec *iov, int max);

/* Reports that frame f is on the wire (or abandoned: the scheduler does not
 * care which) and its bytes are no longer needed by the transport. Call it
 * exactly once per frame returned by fdn__sched_next(), in any order. The
 * message is released when its last frame has been handed out and all of its
 * frames are done; a packed frame's messages, each in turn. */
void fdn__sched_frame_done(struct fdn__sched *s, const struct fdn__frame *f);

/* Adds bytes of credit granted by the receiver (saturating). A credit-stalled
 * channel becomes ready again. Channels without a window ignore grants.
 * Returns 0, or -ENOENT for an unknown channel (a peer's protocol error). */
int fdn__sched_grant(struct fdn__sched *s, uint16_t channel_id, uint64_t bytes);

/* Lowers the largest fragment to what the peer accepts, agreed in the
 * handshake after messages may already be queued. Quanta stay as they were
 * made, so a fresh one still covers any fragment. Returns 0, or -EINVAL for
 * 0 or a size over the one the scheduler was created with. */
int fdn__sched_set_max_fragment(struct fdn__sched *s, uint32_t max_fragment);

/* Replaces the channel's credit: the window the peer agreed to, known only
 * after the handshake while messages may already be queued, or what the
 * receiver says it can take when a session resumes (0 included: the channel
 * then waits for a grant). Call it while no frame of the channel is out.
 * Returns 0, -ENOENT, or -EINVAL for a channel without a window. */
int fdn__sched_set_credit(struct fdn__sched *s, uint16_t channel_id, uint64_t bytes);

/* The receiver has every message of the channel with an id below upto:
 * releases those held for retention (at once, or when their last frame is
 * done). A bound at or below an earlier one changes nothing. Returns 1 when
 * upto acknowledges more than before, 0 when not, -ENOENT, or -EPROTO
 * (nothing changed) when upto covers a message whose last frame was not
 * handed out yet: the receiver claims what it cannot have. */
int fdn__sched_ack(struct fdn__sched *s, uint16_t channel_id, uint64_t upto);

/* Makes every message the channel holds unsent again, from offset 0, in the
 * order they were enqueued: after a connection is lost, what was not
 * acknowledged (fdn__sched_ack() first) goes again, and a message cut in the
 * middle restarts whole. The channel must have no frame out (the lost
 * connection's sends were all reported done): -EBUSY otherwise. Returns the
 * number of messages that had frames handed out before (0 or more), or
 * -ENOENT. */
int fdn__sched_rewind(struct fdn__sched *s, uint16_t channel_id);

/* Counters of one channel. Returns 0 or -ENOENT. */
int fdn__sched_channel_stats(const struct fdn__sched *s, uint16_t channel_id,
                             struct fdn__sched_channel_stats *out);

#endif
