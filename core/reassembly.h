/* The receiver side of one connection: reassembly of fragments into messages,
 * per channel, and the accounting behind receive credit. Internal.
 *
 * The sender's frame scheduler (core/frame_sched.h) sends the fragments of
 * one message consecutively within a channel, first to last, so each channel
 * has at most one message in progress; any other sequence is the peer's
 * protocol violation. Every fragment is checked against the channel's
 * limits and the message in progress before anything is allocated or
 * copied: a rejected fragment changes no state, and an oversized message is
 * refused before its memory is taken from the pool.
 *
 * Memory: the destination message is allocated whole (total_len bytes, one
 * buffer) when its first fragment arrives. A channel's memory budget bounds
 * what a peer can pin with a message it has started and not finished: a
 * multi-fragment message whose total_len exceeds the budget is refused at its
 * first fragment. A single-fragment message is never incomplete, so only
 * max_message applies to it.
 *
 * Receive credit (DESIGN.md, head-of-line freedom part 3). The sender may
 * put on the wire credit_window bytes of a channel, plus what the receiver
 * grants. The receiver grants back what the application has consumed: when
 * the application releases a message it received, the caller reports its
 * size with fdn__reasm_consumed(); fdn__reasm_credit_to_grant() then returns
 * the bytes to send the peer in a CREDIT frame once at least a threshold
 * (typically half the window) has accumulated, so grants are few and large.
 * A stalled consumer stops granting, which stops that channel's sender, while
 * the reader keeps draining the connection for the other channels. A peer
 * that sends beyond its credit is in violation (FDN__REASM_OVER_CREDIT). A
 * channel with credit_window 0 has no flow control: nothing is checked or
 * granted.
 *
 * Because a message is granted back only once the application releases it,
 * and it cannot be delivered before all of its bytes have arrived, a message
 * larger than the window could never be completed: the window must be at
 * least max_message, which fdn__reasm_add_channel() enforces. For the same
 * reason the threshold of a grant is capped at credit_window - max_message:
 * when the sender has used all its credit and the application has released
 * everything delivered, the bytes waiting to be granted are more than that
 * (only part of one message is unreleased), so the grant always goes out and
 * the channel cannot deadlock, whatever threshold the caller asks for. The
 * receiver's
 * memory for a flow-controlled channel is then bounded by the window (bytes
 * received and not released) plus the unreceived rest of the one message in
 * progress (allocated whole at its first fragment).
 *
 * A complete message's bytes count as held from arrival until consumed; the
 * bytes of a message in progress that fdn__reasm_resume_channel() drops
 * count as discarded, never as consumed, and are not granted back: the
 * resumed account starts from what is held then.
 *
 * Errors: fdn__reasm_fragment() returns -EPROTO for every protocol violation
 * (the caller disconnects, fdn__reasm_last_error() giving the reason), and
 * -ENOBUFS (reason FDN__REASM_POOL_EXHAUSTED) when the pool has no memory for
 * a new message: not the peer's fault. The fragment was then not consumed;
 * the caller may stop reading the connection and offer the same fragment
 * again once memory was freed (backpressure), or give up.
 *
 * Threads: one reassembler per connection, used only by the thread that owns
 * the connection and the pool it allocates from. */
#ifndef FDN_CORE_REASSEMBLY_H
#define FDN_CORE_REASSEMBLY_H

#include <stdbool.h>
#include <stdint.h>

#include <fdn/msg.h>

enum fdn__reasm_error {
    FDN__REASM_OK = 0,
    FDN__REASM_UNKNOWN_CHANNEL,   /* no such channel configured */
    FDN__REASM_OUT_OF_ORDER,      /* not the next offset of the message in progress,
                                     another msg_id, a continuation with no message
                                     in progress, or a first fragment not at offset 0 */
    FDN__REASM_UNEXPECTED_FIRST,  /* a first fragment while a message is in progress */
    FDN__REASM_SIZE_MISMATCH,     /* total_len differs from the message's, the fragment
                                     runs past total_len, a last fragment does not end
                                     the message or a non-last one does, or an empty
                                     fragment of a non-empty message */
    FDN__REASM_OVER_MAX_MESSAGE,  /* total_len above the channel's max_message */
    FDN__REASM_OVER_BUDGET,       /* an incomplete message above the memory budget */
    FDN__REASM_OVER_CREDIT,       /* bytes beyond the credit the peer was given */
    FDN__REASM_POOL_EXHAUSTED,    /* the pool refused the message: not a violation */
};

struct fdn__reasm;

struct fdn__reasm_channel_config {
    uint16_t id;              /* unique within the reassembler */
    uint64_t max_message;     /* largest total_len accepted, 1..UINT32_MAX */
    uint64_t memory_budget;   /* largest incomplete message; 0: max_message */
    uint64_t credit_window;   /* bytes the sender may send before any grant, at least
                                 max_message; 0: no flow control */
};

struct fdn__reasm_channel_stats {
    uint64_t messages;         /* messages completed and handed to the caller */
    uint64_t bytes;            /* their payload bytes */
    uint64_t incomplete_bytes; /* size of the message in progress, 0 if none */
    uint64_t received_bytes;   /* payload bytes of accepted fragments */
    uint64_t consumed_bytes;   /* reported with fdn__reasm_consumed() */
    uint64_t granted_bytes;    /* returned by fdn__reasm_credit_to_grant() */
    uint64_t discarded_msgs;   /* incomplete messages dropped by fdn__reasm_resume_channel() */
    uint64_t discarded_bytes;  /* their bytes received so far */
};

/* Creates an empty reassembler. Returns 0 or -ENOMEM. */
int fdn__reasm_create(struct fdn__reasm **out);

/* Frees the messages in progress and the reassembler. NULL is a no-op. */
void fdn__reasm_destroy(struct fdn__reasm *r);

/* Adds a channel. Returns 0, -EINVAL for a limit out of range (max_message
 * 0 or over UINT32_MAX, a credit window below max_message), -EEXIST for a
 * duplicate id, or -ENOMEM. */
int fdn__reasm_add_channel(struct fdn__reasm *r, const struct fdn__reasm_channel_config *cfg);

/* Takes in one fragment: len bytes of payload at offset of message msg_id
 * (total_len bytes in all) on channel. The payload is copied; the caller
 * keeps its buffer. The destination is allocated from pool at the message's
 * first fragment. Returns 1 with *complete set when this fragment completes
 * the message (the caller owns it), 0 when more fragments are needed, or a
 * negative errno (-EPROTO, -ENOBUFS, or another error of fdn_msg_alloc())
 * with the reason in fdn__reasm_last_error() and a detail in fdn_errmsg(). */
int fdn__reasm_fragment(struct fdn__reasm *r, uint16_t channel, uint64_t msg_id,
                        uint64_t offset, uint64_t total_len, bool first, bool last,
                        const uint8_t *payload, uint32_t len, fdn_pool *pool,
                        fdn_msg **complete);

/* Takes in a whole message that arrived in one frame as a buffer of its
 * own (a payload passed by reference: msg's len bytes are the message of
 * total_len bytes, which must be equal). The same checks as a single
 * fragment's; then the message itself is what completes, no copy. Returns 1
 * with *complete = msg (the reference passes on), or as fdn__reasm_fragment
 * (the caller keeps msg). */
int fdn__reasm_adopt(struct fdn__reasm *r, uint16_t channel, uint64_t msg_id, uint64_t total_len,
                     fdn_msg *msg, fdn_msg **complete);

/* The reason of the last failed fdn__reasm_fragment(), FDN__REASM_OK before
 * any failure. */
enum fdn__reasm_error fdn__reasm_last_error(const struct fdn__reasm *r);

/* A short fixed name for a reason, for logs and disconnect messages. */
const char *fdn__reasm_error_name(enum fdn__reasm_error e);

/* Records that the application released bytes of messages received on the
 * channel, freeing that much window. Returns 0, -ENOENT for an unknown
 * channel, or -ERANGE (nothing recorded) when more bytes would be consumed
 * than were received. */
int fdn__reasm_consumed(struct fdn__reasm *r, uint16_t channel, uint64_t bytes);

/* The credit to grant the peer now: every byte consumed and not yet granted,
 * once that is at least the threshold (and not zero); else 0. The threshold
 * used is the smaller of threshold and credit_window - max_message (see
 * above). What it returns counts as granted, so the caller must send it.
 * Call it after fdn__reasm_consumed(). Always 0 for a channel without a
 * credit window or an unknown one. */
uint64_t fdn__reasm_credit_to_grant(struct fdn__reasm *r, uint16_t channel, uint64_t threshold);

/* A session resumes over a new connection (core/node_internal.h): the
 * message in progress on the channel is dropped (the sender restarts it
 * whole), and the credit account starts afresh. *window_out is the credit
 * the sender may use from now on: the window minus the bytes of complete
 * messages not yet consumed (the receiver still holds them), 0 for a channel
 * without a window. Grants continue from there. Returns 0 or -ENOENT. */
int fdn__reasm_resume_channel(struct fdn__reasm *r, uint16_t channel, uint64_t *window_out);

/* Counters of one channel. Returns 0 or -ENOENT. */
int fdn__reasm_channel_stats(const struct fdn__reasm *r, uint16_t channel,
                             struct fdn__reasm_channel_stats *out);

#endif
