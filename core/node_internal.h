/* Nodes and peers: the connection layer between the public messaging API
 * (include/fdn/node.h) and the transports. Internal.
 *
 * A peer is one connection to another node, and its protocol state:
 *
 *   transport bytes -> frame decoder -> handshake | reassembly -> per-channel
 *   receive queue -> delivery task (at the channel's priority) -> handler
 *
 *   fdn_send -> per-channel send queue (frame scheduler: priority, weighted
 *   round robin, credit) -> batches of frames -> transport, with at most
 *   max_inflight_bytes handed over and not yet sent
 *
 * Every DATA message carries its sequence number on its channel, in its
 * direction (core/wire.h). Request/response rides on DATA messages: a
 * request is flagged FDN__FRAME_REQUEST and its id is its sequence number; a
 * response is flagged FDN__FRAME_RESPONSE and names that id in its CORR
 * extension. The application's handle for a request it made (fdn_request's
 * *id) is a separate per-node counter, so it is unique across channels.
 *
 * Session resumption. A peer is a session, not a connection: it survives the
 * loss of its lanes. Reliable channels deliver every message exactly once,
 * in order, across the loss, or the session ends and the sender is told.
 *
 *  - The receiver checks each message's sequence number at its first
 *    fragment: on a reliable channel anything but the next one is a session
 *    error (the connections are dropped and the session resumes, which
 *    recovers a frame lost or duplicated below); on a best-effort channel a
 *    gap counts as lost messages and is accepted.
 *  - It acknowledges, on lane 0, the count of messages received complete
 *    (cumulative ACK): with every credit grant (so the sender's unacked bytes
 *    never exceed the credit window), every FDN__ACK_EVERY messages, and
 *    FDN__ACK_DELAY_NS after a message otherwise.
 *  - The sender's scheduler keeps every sent message of a reliable channel
 *    until it is acknowledged (core/frame_sched.h, retention).
 *  - When a lane of an UP peer is lost without a CLOSE (reset, EOF, a lane's
 *    handshake timing out, a sequence error), the peer is RESUMING: every
 *    lane is closed, the outbound side dials lane 0 again with exponential
 *    back-off and a HELLO that names the session with the resume flag, the
 *    inbound side waits. The server binds the new connection to the waiting
 *    session of the same node id, incarnation and session id.
 *  - Both sides then send RESUME (core/wire.h): per channel, the messages
 *    received complete and the credit the sender may use now; the receiver
 *    drops any message in progress first. Each sender, once it has the
 *    peer's RESUME and every old lane's sends have been reported, releases
 *    what the peer has, rewinds the rest to be sent again from the start,
 *    and takes the new credit. Then the client dials the other lanes.
 *  - A session that does not resume within session_timeout_ns ends with
 *    -ETIMEDOUT. A break less than keepalive_ns after a resumption, with
 *    no message received complete or acknowledged since, continues the
 *    same outage (its clock and its redial back-off go on): a session
 *    that breaks each time it resumes, a peer that misnumbers what it
 *    sends again, ends too instead of resuming for ever. A peer node that
 *    comes back as another incarnation ends the old session with
 *    -ECONNRESET before the new one is up; an orderly close (a CLOSE frame,
 *    sent on every lane) ends it at once. Reliable messages not
 *    acknowledged then are counted as undelivered.
 *
 * Everything runs on the node's worker; nothing here takes a lock. */
#ifndef FDN_CORE_NODE_INTERNAL_H
#define FDN_CORE_NODE_INTERNAL_H

#include <fdn/histogram.h>
#include <fdn/node.h>

#include "core/fault.h"
#include "core/frame_sched.h"
#include "core/handshake.h"
#include "core/reassembly.h"
#include "core/transport.h"
#include "core/wire.h"

/* The kind of a message: FDN__FRAME_REQUEST, FDN__FRAME_RESPONSE or 0. */
#define FDN__MSG_KIND_MASK (FDN__FRAME_REQUEST | FDN__FRAME_RESPONSE)

/* Acknowledgement cadence (see above) and the redial back-off. */
#define FDN__ACK_EVERY 32u
#define FDN__ACK_DELAY_NS (2ull * 1000 * 1000)
#define FDN__REDIAL_MIN_NS (10ull * 1000 * 1000)
/* fdn_peer_msg_alloc lends from this size on by default: below it a copy
 * into the ring costs less than a loan and its release (PERFORMANCE.md). */
#define FDN__LEND_MIN_DEFAULT 1024u
/* The first redial after a session that was up lost its connections: soon,
 * since the peer was there a moment ago (a redial that fails backs off from
 * FDN__REDIAL_MIN_NS); jittered like the others. */
#define FDN__REDIAL_FIRST_NS (1ull * 1000 * 1000)
#define FDN__REDIAL_MAX_NS (1000ull * 1000 * 1000)

/* A received message waits for delivery with this in its headroom. */
struct fdn__rx_stash {
    uint64_t id;                   /* request: its sequence number; response: corr */
    uint16_t kind;                 /* FDN__MSG_KIND_MASK bits */
};

#define FDN__MAX_LISTENERS 8
/* Dial choices of an outbound peer: up to 3 same-host shortcuts + the address given. */
#define FDN__DIAL_CHOICES 4

/* Frames per transport send, sends in flight per peer, and the most buffers
 * a message sent may chain (each becomes an iovec). */
#define FDN__BATCH_FRAMES 16
#define FDN__BATCHES 4   /* at most 8: struct fdn__lane's busy_batches */
#define FDN__MAX_SEGMENTS 64
/* Iovecs a batch keeps in reserve for the fault layer: a duplicated frame's
 * header and payload, or the two extra pieces of a payload with one byte
 * changed (core/peer.c, "Fault layer"). Unused when the layer is off. */
#define FDN__FAULT_IOVECS (1 + FDN__MAX_SEGMENTS + 2)
/* Control frames (handshake, resume, credit, ack, pong, close) waiting to go
 * out: a HELLO, a full RESUME, and a credit and an ack for every channel. */
#define FDN__CTRL_BYTES                                                                    \
    (FDN__WIRE_HANDSHAKE_MAX + FDN__FRAME_HDR_SIZE + 64 * FDN__RESUME_ENTRY_SIZE +          \
     (2 * 64 + 4) * FDN__FRAME_HDR_SIZE)

struct fdn__channel {
    bool defined;
    fdn_channel_config cfg;        /* defaults resolved; cfg.name points to name */
    char name[FDN__HS_CHANNEL_NAME_MAX + 1];
    fdn_recv_fn on_message;
    void *on_message_arg;
    fdn_request_fn on_request;
    void *on_request_arg;
};

struct fdn__listener {
    struct fdn__tp_listener *tp;
    fdn_node *node;
    bool closed;                   /* on_closed has come */
};

/* Packing (core/peer.c, "Packing"): small plain messages of one channel
 * share a frame, copied into the batch's pack buffer with their header. */
#define FDN__PACK_BYTES 4096u
#define FDN__PACK_MSG_MAX 512u         /* the largest message packed */
#define FDN__PACK_MAX_MSGS 128u

#define FDN__BATCH_IOVECS (1 + FDN__BATCH_FRAMES * 2 + FDN__MAX_SEGMENTS + FDN__FAULT_IOVECS)

/* One batch of frames handed to the transport in one send. */
struct fdn__batch {
    struct fdn__tp_send send;
    struct iovec iov[FDN__BATCH_IOVECS];
    fdn_msg *iov_msg[FDN__BATCH_IOVECS]; /* send.iov_msg: each iovec's message */
    uint64_t cost;                       /* what it counts in inflight_bytes */
    uint8_t ctrl[FDN__CTRL_BYTES];       /* control frames, sent first */
    uint8_t hdr[FDN__BATCH_FRAMES][FDN__FRAME_MAX_HDR_SIZE];
    struct fdn__frame frames[FDN__BATCH_FRAMES];
    int num_frames;
    uint32_t pack_used;                  /* bytes of pack[] the batch's packed frames hold */
    uint8_t pack[FDN__PACK_BYTES];
};

/* One channel's receive side at one peer. */
struct fdn__rx_channel {
    fdn_msg *head, *tail;          /* complete messages waiting, linked by qnext */
    uint64_t queued;
    struct fdn__rx_stash in_progress;  /* of the message being reassembled */
    uint64_t expected;             /* sequence number the next message must have */
    uint64_t received;             /* messages received complete (next to acknowledge) */
    uint64_t acked_sent;           /* the count last acknowledged to the sender */
    uint64_t lost;                 /* best effort: sequence gaps */
    fdn_task deliver;              /* at the channel's priority */
    fdn_peer *peer;
    uint16_t channel;
    bool paused;
    bool usable;                   /* both sides agreed on it */
    uint64_t window;               /* the agreed credit window */
    uint64_t max_message;          /* the agreed largest message */
    uint64_t delivered, drops;
    fdn_task *writable;            /* fdn_send_notify() */
    fdn_histogram rtt;             /* request round trips on this channel */
};

enum fdn__peer_state {
    FDN__PEER_CONNECTING,          /* outbound, transport not up yet */
    FDN__PEER_HANDSHAKE,
    FDN__PEER_UP,
    FDN__PEER_RESUMING,            /* lanes lost; redialling (outbound) or waiting */
    FDN__PEER_CLOSING,             /* close asked for; waiting for the transports */
};

struct fdn__pending_request {
    uint64_t id;                   /* the application's handle */
    uint64_t seq;                  /* the request's sequence number on its channel */
    uint16_t channel;
    uint64_t start_ns;
    fdn_response_fn fn;
    void *arg;
    fdn_timer timer;
    fdn_peer *peer;
    struct fdn__pending_request *next;   /* hash chain, by channel and seq */
};

#define FDN__PENDING_BUCKETS 256

/* Live connections accepted from one remote host (its transport's
 * conn_peer_host), kept while there is at least one. */
struct fdn__host_conns {
    struct fdn__host_conns *next;  /* hash chain */
    uint32_t conns;
    char host[FDN__ADDR_MAX];
};

#define FDN__HOST_BUCKETS 64
#define FDN__MAX_LANES FDN_MAX_LANES

/* One connection of a peer. Lane 0 opens the session (its handshake makes
 * the peer); the outbound side then opens lanes 1.. to the same address,
 * each authenticated by a handshake of its own that names the session. Each
 * lane has its own frame decoder and its own sender: control bytes, batches
 * in flight and a bound on bytes handed to its transport. A lane belongs to
 * one peer at a time; an accepted connection starts on a peer of its own and
 * moves to the peer it joins once its handshake says which. */
struct fdn__lane {
    fdn_peer *peer;
    uint8_t index;
    bool up;                       /* handshake done (lane > 0: bound to its peer) */
    bool close_sent;               /* the transport was asked to close */
    bool closed;                   /* on_closed came: conn is gone */
    bool packs;                    /* both ends agreed to PACKED frames (FDN__CAP_PACKED) */
    bool dying;                    /* lost with its session's other lanes: off the
                                      peer's lanes, on its dying list until reaped */
    struct fdn__lane *next_dying;
    struct fdn__tp_conn *conn;
    struct fdn__handshake *hs;
    fdn_timer timer;               /* handshake deadline, then the close flush bound */

    /* Frame decoder: a header gathered across receives, then its payload
     * (straight from the transport's buffer when whole, else staged). */
    uint8_t rx_hdr[FDN__FRAME_MAX_HDR_SIZE];
    uint32_t rx_hdr_have;
    bool rx_in_payload;
    struct fdn__frame_hdr rx_frame;
    uint8_t *rx_stage;             /* max(max_fragment, handshake max) bytes */
    uint32_t rx_stage_have;
    bool rx_need_ref;              /* a DATA frame over max_fragment: its payload must
                                      come by reference (FDN__TP_REFS), whole */

    /* Sender: control bytes waiting, batches in flight. */
    uint8_t ctrl[FDN__CTRL_BYTES];
    uint32_t ctrl_len;
    struct fdn__batch *batches;    /* FDN__BATCHES */
    uint8_t busy_batches;          /* bit i: batches[i] is with the transport */
    uint64_t inflight_bytes;
    uint64_t max_inflight_bytes;
    uint64_t bytes_sent, bytes_received;
    /* Bulk-only lanes read in turns (see BULK_RX_BYTES_PER_TURN). */
    uint32_t rx_turn_limit;        /* 0: no turns */
    uint32_t rx_turn_bytes;
    bool rx_turn_paused;
    fdn_task rx_resume;
    uint32_t tx_turn_bytes;
    fdn_task tx_resume;

    /* The fault layer's state for this connection (core/peer.c, "Fault
     * layer"): NULL when the node has no fault rule, and then no fault code
     * runs at all. */
    struct fdn__lane_faults *faults;

    /* Liveness (core/peer.c, "Liveness"): a timer every keepalive_ns / 2
     * while the lane is up compares bytes_received and bytes_sent with
     * what it saw last, so the data path costs nothing more. */
    fdn_timer heartbeat;
    uint64_t hb_seen_bytes;        /* bytes_received at the last check */
    uint64_t hb_quiet_since;       /* the check that last saw bytes arrive */
    uint64_t hb_seen_sent;         /* bytes_sent at the last check */
    uint64_t hb_mute_since;        /* the check that last saw bytes leave */
    uint64_t hb_last_check;
    uint64_t hb_last_ping;
    uint64_t pings_sent;           /* also the next PING's token */
    uint64_t pongs_received;
    bool peer_idle;                /* the peer closed this lane for idleness: a
                                      loss to resume from, not a goodbye */

    /* An accepted connection holds its place in the accept limits until its
     * transport is gone (host) and until it authenticates (pending). */
    struct fdn__host_conns *host;
    bool pending;

    /* Why this node closed the connection itself (a reset by the fault
     * layer, a handshake timeout, an idle timeout), for the line on_closed
     * says; "" when it did not. */
    char end_why[96];
};

struct fdn_peer {
    fdn_node *node;
    fdn_peer *prev, *next;         /* node's list */
    enum fdn__peer_state state;
    bool outbound;
    bool close_received;           /* the peer sent CLOSE: its reason stands */
    uint64_t close_reason_in;      /* ... and that reason (enum fdn__close_reason) */
    bool announced_up;             /* peer_up was reported */
    int down_reason;
    char addr[FDN__ADDR_MAX];      /* the peer's address, scheme first, for logs */
    char dial[FDN__ADDR_MAX];      /* outbound: the address lanes are opened to */
    /* Outbound: what fdn_node_connect may dial, best first: same-host
     * shortcuts (core/transport.h), then the address given. A choice that
     * cannot connect gives way to the next, unseen. Lane 0 starts at
     * dial_from (the choice that last connected; a resumption redials it
     * first), and the other lanes dial the choice lane 0 reached. */
    char dial_choices[FDN__DIAL_CHOICES][FDN__ADDR_MAX];
    uint8_t num_dial_choices, dial_at, dial_from;

    uint64_t session;              /* names the peer when lanes join or resume it */
    uint64_t peer_incarnation;
    uint8_t num_lanes;             /* agreed; 1 until the handshake says */
    struct fdn__lane *lanes[FDN__MAX_LANES];
    fdn_task finish;               /* frees the peer once its transports let go */
    bool down_told;                /* peer_down was reported ahead of the finish */

    /* Session resumption (see above). */
    struct fdn__lane *dying;       /* lanes of lost connections, until on_closed */
    fdn_task reap;                 /* frees closed dying lanes, then resumes */
    fdn_timer deadline;            /* RESUMING: the session's end */
    fdn_timer redial;              /* RESUMING, outbound: the next lane-0 dial */
    uint64_t redial_backoff_ns;
    uint64_t outage_since;         /* the first break of the outage; 0: none (see above) */
    uint64_t resumed_at;           /* when the session last resumed */
    fdn_timer ack_timer;
    bool resume_wait;              /* our RESUME sent; the peer's not applied yet */
    bool resume_have;              /* the peer's RESUME is in resume_in */
    struct fdn__resume_entry resume_in[FDN_MAX_CHANNELS];
    uint8_t peer_node_id[FDN__HS_NODE_ID_SIZE];

    struct fdn__sched *sched;      /* every lane's channels: one per channel */
    struct fdn__reasm *reasm;
    struct fdn__wire_limits limits;
    uint8_t channel_lane[FDN_MAX_CHANNELS];   /* the lane each channel is sent on */
    uint64_t next_seq[FDN_MAX_CHANNELS];      /* sequence number of the next message */
    uint64_t retransmitted[FDN_MAX_CHANNELS]; /* messages sent again after a resume */
    uint64_t undelivered[FDN_MAX_CHANNELS];   /* reliable, unacknowledged at the end */

    struct fdn__rx_channel rx[FDN_MAX_CHANNELS];
    struct fdn__pending_request *pending[FDN__PENDING_BUCKETS];
    uint64_t pending_count;
};

struct fdn_node {
    fdn_worker *worker;
    fdn_pool *pool;
    char cluster[FDN__HS_CLUSTER_NAME_MAX + 1];
    uint8_t secret[FDN__HS_SECRET_SIZE];
    uint8_t node_id[FDN__HS_NODE_ID_SIZE];
    uint64_t incarnation;
    uint32_t max_fragment;
    uint32_t max_inflight_bytes;   /* lanes with an urgent channel */
    uint32_t bulk_inflight_bytes;  /* lanes with bulk channels only */
    uint8_t lanes;
    uint32_t zerocopy_min;         /* 0: never */
    uint32_t lend_min;             /* fdn_peer_msg_alloc lends from this size on */
    uint64_t handshake_timeout_ns;
    uint64_t session_timeout_ns;
    uint64_t keepalive_ns;         /* liveness, per lane (core/peer.c, "Liveness") */
    uint64_t idle_timeout_ns;
    uint64_t max_message;          /* largest of all channels */

    struct fdn__channel channels[FDN_MAX_CHANNELS];
    int num_channels;              /* ids 0 .. num_channels-1 */
    struct fdn__channel_desc descs[FDN_MAX_CHANNELS];

    fdn_node_events events;
    struct fdn__listener listeners[FDN__MAX_LISTENERS];
    int num_listeners;
    /* listeners[i]'s same-host companion (core/transport.h), tp NULL and
     * closed true when it has none. */
    struct fdn__listener shortcuts[FDN__MAX_LISTENERS];
    bool no_same_host_shm;
    fdn_peer *peers;
    fdn_node_stats stats;

    /* Accept limits (core/node.c, "Accept limits"): live accepted
     * connections per remote host, and those not authenticated yet. */
    uint32_t max_conns_per_addr;
    uint32_t max_pending_handshakes;
    uint32_t pending_handshakes;
    struct fdn__host_conns *hosts[FDN__HOST_BUCKETS];
    uint64_t next_request_id;
    bool destroying;

    /* The fault layer (core/fault.h): the parsed and bound configuration, or
     * NULL when it is off (no rule in fdn_node_config.faults or FDN_FAULTS).
     * fault_conns numbers connections, for their states' salts; fault_totals
     * adds up the decisions of the connections already gone. */
    struct fdn__fault_config *faults;
    uint64_t fault_conns;
    struct fdn__fault_stats fault_totals;
};

/* Says that a connection or a session ended, and why, in one line at
 * level (FDN_LOG_WARN when abnormal, FDN_LOG_INFO when orderly): the node's
 * short id, the peer's address, the lane (1.., 0 for every lane of the
 * session, -1 when not known yet), the transport and the reason in words.
 * Every end goes through here, so that none is missed (docs/RELIABILITY.md,
 * "Every disconnect is counted and logged"). */
void fdn__node_log_end(const fdn_node *n, int level, const char *addr, int lane,
                       const char *transport, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Accept limits. An accepted connection holds a place among its host's
 * connections and among the pending handshakes (core/node.c, on_accept);
 * fdn__node_authenticated gives the pending one back once its handshake
 * succeeds, fdn__node_release what it still holds once it is gone. */
void fdn__node_authenticated(fdn_node *n);
void fdn__node_release(fdn_node *n, struct fdn__host_conns *host, bool pending);

/* core/peer.c */
int fdn__peer_create(fdn_node *node, bool outbound, fdn_peer **out);
/* Inbound: takes an accepted connection as the peer's lane 0, which speaks
 * second; its handshake says whether it opens a session or joins one. The
 * connection's places in the accept limits (host's, and a pending
 * handshake) pass to its lane, or are given back if it cannot have one. */
void fdn__peer_attach(fdn_peer *peer, struct fdn__tp_conn *conn, struct fdn__host_conns *host);
/* Outbound: dials addr (with its scheme) as lane 0. */
int fdn__peer_dial(fdn_peer *peer, const char *addr);
void fdn__peer_fail(fdn_peer *peer, int reason, enum fdn__close_reason wire_reason);

/* The fault layer's decisions so far: those of the connections gone
 * (fault_totals) plus those of every live lane. */
void fdn__node_fault_stats(const fdn_node *node, struct fdn__fault_stats *out);

/* Queues msg as the channel's next message, of kind 0, FDN__FRAME_REQUEST
 * or FDN__FRAME_RESPONSE (answering request corr); *seq_out (may be NULL)
 * gets its sequence number. Takes msg except on -EAGAIN. */
int fdn__peer_send(fdn_peer *peer, int channel, fdn_msg *msg, uint16_t kind, uint64_t corr,
                   uint64_t *seq_out);

#endif
