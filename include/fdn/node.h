/* Nodes, peers and channels: Foundation's messaging API.
 *
 * A node is one member of a cluster. It listens and connects over transports
 * ("tcp://127.0.0.1:7000"), authenticates every connection with the cluster
 * secret, and exchanges messages with its peers on named channels. Each
 * channel has its own priority, weight, delivery class, size limit and credit
 * window, and its own queues at both ends, so bulk traffic on one channel
 * never delays urgent traffic on another, and a consumer that stops reading
 * one channel never stops the others.
 *
 * Threads. A node belongs to one worker (cfg.worker). Every function here is
 * called on that worker's thread, and every callback runs there, from
 * fdn_worker_progress(). Other threads hand work to the node by posting a
 * task to its worker (fdn_worker_post).
 *
 * Ownership. fdn_send() and friends take the message (one reference) whatever
 * they return, except for -EAGAIN, where the caller keeps it to retry. A
 * receive handler owns the message it is given and frees it when done (it may
 * keep it as long as it likes: the buffer is not reused before that).
 *
 * Peers. A peer handle is valid from fdn_node_connect() (or the peer_up
 * event of an accepted peer) until the peer_down event returns.
 *
 * Sessions. A peer is a session that outlives its connections. When a
 * connection is lost without an orderly close (a reset, an end of stream, a
 * timeout), the connecting side dials again with exponential back-off and
 * the session resumes: on a reliable channel every message is delivered
 * exactly once and in order across the loss, or, if the session cannot
 * resume within session_timeout_ns, peer_down reports -ETIMEDOUT and the
 * messages the peer never acknowledged are counted as undelivered. While a
 * session resumes, fdn_peer_is_up() is false and sends queue as usual; no
 * event is reported. A peer node that restarts (a new incarnation) starts a
 * new session: the old one is reported down (-ECONNRESET) first. */
#ifndef FDN_NODE_H
#define FDN_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fdn/msg.h>
#include <fdn/worker.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fdn_node fdn_node;
typedef struct fdn_peer fdn_peer;

/* ---- Channels ------------------------------------------------------------ */

typedef enum fdn_delivery {
    FDN_RELIABLE = 0,   /* exactly once, in order, across lost connections, for
                           as long as the session lives */
    FDN_BEST_EFFORT,    /* a paused consumer drops (and counts) new messages; a
                           lost connection may lose messages (counted as lost) */
} fdn_delivery;

/* Zero means "default" for every numeric field. */
typedef struct fdn_channel_config {
    const char *name;        /* cluster-wide name, 1..32 bytes */
    int priority;            /* FDN_PRIO_HIGHEST (0) .. FDN_PRIO_LOWEST (7) */
    uint16_t weight;         /* share of its priority class, 1..1000; default 1 */
    fdn_delivery delivery;   /* default FDN_RELIABLE */
    uint64_t max_message;    /* largest message in bytes; default 16 MiB, up to 2^40 */
    uint64_t credit_window;  /* bytes the receiver buffers for this channel before
                                the sender must wait; default max(4 MiB,
                                max_message); never below max_message */
    uint32_t max_queued;     /* messages queued at the sender before -EAGAIN;
                                default 1024 */
    uint8_t lane;            /* which of a peer's connections carries the channel,
                                1..FDN_MAX_LANES; default (0): lane 1, shared by
                                the urgent channels. Channels on different lanes
                                share no TCP stream, so neither waits behind the
                                other's bytes in the kernel or the network. A lane
                                beyond the peer's agreed count falls back to 1 */
} fdn_channel_config;

/* The four channels every node has, with these ids. */
#define FDN_CHANNEL_COORDINATION 0  /* priority 0; 1 MiB messages */
#define FDN_CHANNEL_EVENTS 1        /* priority 2; 1 MiB messages */
#define FDN_CHANNEL_DATA 2          /* priority 4; 64 MiB messages, 64 MiB window */
#define FDN_CHANNEL_GOSSIP 3        /* priority 7; best effort, 64 KiB messages */
#define FDN_CHANNEL_FIRST_USER 4    /* user-defined channels follow, in config order */
#define FDN_MAX_CHANNELS 64
#define FDN_MAX_LANES 8             /* connections per peer */

/* ---- Nodes --------------------------------------------------------------- */

typedef struct fdn_node_config {
    fdn_worker *worker;              /* owner; required */
    const char *cluster;             /* cluster name, <= 64 bytes; default "foundation" */
    const uint8_t *secret;           /* cluster secret; required, at least 16 bytes */
    size_t secret_len;
    const fdn_channel_config *channels;  /* user-defined channels */
    int num_channels;
    fdn_channel_config data;         /* overrides for the default data channel
                                        (its name and priority stay); its lane
                                        defaults to 2, a connection of its own */
    uint8_t lanes;                   /* connections per peer, 1..FDN_MAX_LANES; default
                                        2: urgent channels on lane 1, bulk data on
                                        lane 2. Two nodes use the smaller count */
    uint32_t max_fragment;           /* payload bytes of the largest frame this node
                                        accepts, 512 .. 1 GiB; default 64 KiB. Two
                                        nodes send frames of the smaller */
    uint32_t max_inflight_bytes;     /* bytes handed to the transport per lane and not
                                        yet sent, on lanes that carry an urgent channel
                                        (priority above FDN_PRIO_DEFAULT); default
                                        128 KiB: an urgent frame waits behind at most
                                        this (fdn-isolate: 256 KiB added ~85 us to
                                        pings under bulk load) */
    uint32_t bulk_inflight_bytes;    /* the same for lanes that carry only bulk
                                        channels; default 1 MiB, deep enough to keep
                                        a fast link busy */
    uint64_t handshake_timeout_ns;   /* default 5 s */
    uint64_t session_timeout_ns;     /* how long a session whose connections are lost
                                        may take to resume before it ends with
                                        -ETIMEDOUT; default 10 s */
    uint64_t keepalive_ns;           /* a lane that has received nothing, or sent
                                        nothing, for this long sends a PING (the peer
                                        answers PONG); default 1 s or a fifth of
                                        idle_timeout_ns if less; at least 1 ms */
    uint64_t idle_timeout_ns;        /* a lane that has received nothing for this long
                                        is dead: it is closed (CLOSE "idle timeout",
                                        best effort) and its session resumes as after
                                        any lost connection, so a silent partition is
                                        noticed without waiting for TCP. Default 5 s;
                                        must be more than keepalive_ns. Lanes are
                                        checked every keepalive_ns / 2, so the end
                                        comes up to keepalive_ns after the timeout */
    uint32_t max_conns_per_addr;     /* live connections accepted from one place, lanes
                                        included: one IP address over TCP, one process
                                        over shm. A connection beyond it is closed at
                                        once, before anything is allocated for it, and
                                        counted (refused_per_addr). Default 64 */
    uint32_t max_pending_handshakes; /* accepted connections not yet authenticated, for
                                        the whole node; beyond it a new one is closed
                                        at once (refused_pending). Default 256. A
                                        pending connection waits at most
                                        handshake_timeout_ns */
    uint32_t zerocopy_min;           /* send frames of at least this many payload bytes
                                        with zero-copy (SEND_ZC); 0 (default): never.
                                        A zero-copy send completes only when the peer
                                        has acknowledged the data, so it ties
                                        max_inflight_bytes to the round trip; measured
                                        on loopback, it cut 1 MiB streaming to a tenth */
    uint32_t lend_min;               /* fdn_peer_msg_alloc lends (no copy, over shm)
                                        only messages of at least this many bytes;
                                        smaller ones are ordinary messages, copied: a
                                        loan and its release cost more than copying a
                                        small payload (docs/PERFORMANCE.md). 0:
                                        default 1 KiB; 1: lend every message */
    bool no_same_host_shm;           /* false (default): peers on this host talk through
                                        shared memory (shm://) even when given tcp://
                                        addresses. Each tcp:// listener also listens
                                        on a same-host shm socket, and fdn_node_connect
                                        to a tcp:// address of this host dials that
                                        first, falling back to TCP, unseen, when the
                                        peer has none. true: tcp:// stays TCP, both
                                        ways (explicit shm:// addresses still work) */
    const char *faults;              /* the seeded fault layer's rules, for tests
                                        (docs/RELIABILITY.md): drop, duplicate, delay,
                                        reorder, corrupt or reset DATA frames, e.g.
                                        "seed=42,drop=0.01,channel=data,dir=tx". NULL:
                                        the environment variable FDN_FAULTS, if set;
                                        "": off. Off (the default) costs one NULL test
                                        per frame. Bad text fails fdn_node_create with
                                        -EINVAL, the rule and item in fdn_errmsg() */
} fdn_node_config;

typedef struct fdn_node_events {
    /* A peer finished its handshake (either side). */
    void (*peer_up)(fdn_peer *peer, void *arg);
    /* A peer is gone: reason is 0 for an orderly close, else a negative errno
     * (-ECONNRESET, -EACCES for failed authentication, -EPROTO, ...). Pending
     * requests have had their callbacks (-ENOTCONN) first. The handle is
     * invalid after this returns. */
    void (*peer_down)(fdn_peer *peer, int reason, void *arg);
    void *arg;
} fdn_node_events;

/* Creates a node on cfg->worker (call on that worker's thread). Returns 0,
 * -EINVAL (bad config, with detail in fdn_errmsg()), or -ENOMEM. */
int fdn_node_create(const fdn_node_config *cfg, fdn_node **out);

/* Closes every listener and connection (CLOSE frames with reason "going
 * away"), runs the worker until the transports have let go, reports
 * peer_down for every peer, and frees the node. NULL is a no-op. */
void fdn_node_destroy(fdn_node *node);

void fdn_node_set_events(fdn_node *node, const fdn_node_events *events);

/* Listens on addr ("tcp://127.0.0.1:7000", "tcp://[::1]:0"). Returns an
 * index for fdn_node_listen_addr(), or -EINVAL, -EADDRINUSE, -EPROTONOSUPPORT
 * (unknown scheme). */
int fdn_node_listen(fdn_node *node, const char *addr);

/* The bound address of listener index, as "tcp://host:port". Returns the
 * length written, or -ENOENT / -ENOSPC. */
int fdn_node_listen_addr(fdn_node *node, int index, char *buf, size_t len);

/* Starts connecting to addr; the handshake follows. *out is usable at once:
 * messages sent before the handshake completes wait in their channels'
 * queues. Returns 0, -EINVAL, -EPROTONOSUPPORT. */
int fdn_node_connect(fdn_node *node, const char *addr, fdn_peer **out);

/* Closes the connection to a peer (orderly); peer_down follows. */
void fdn_peer_close(fdn_peer *peer);

/* The id of a channel by name, or -ENOENT. */
int fdn_channel_lookup(const fdn_node *node, const char *name);

/* The peer's node id (16 bytes) and address; valid once the peer is up.
 * The address names the transport in use: "tcp://127.0.0.1:7000",
 * "shm://@fdn-tcp-127.0.0.1:7000" (a same-host peer reached through shared
 * memory); an accepted peer shows its side, "tcp://127.0.0.1:51234" or
 * "shm://pid:4242". */
const uint8_t *fdn_peer_node_id(const fdn_peer *peer);
int fdn_peer_addr(const fdn_peer *peer, char *buf, size_t len);
/* The name of the transport the peer's connections use now ("tcp", "shm"),
 * or of the one being dialled while none is up. */
const char *fdn_peer_transport(const fdn_peer *peer);
bool fdn_peer_is_up(const fdn_peer *peer);   /* false while the session resumes */

/* ---- Sending and receiving ----------------------------------------------- */

/* Queues msg on the channel. Returns 0; -EAGAIN when the channel's send queue
 * is full (the caller keeps msg; see fdn_send_notify); -EMSGSIZE over the
 * channel's max_message; -ENOTCONN when the peer is gone; -EINVAL for an
 * unknown channel. */
int fdn_send(fdn_peer *peer, int channel, fdn_msg *msg);

/* Allocates a message of len payload bytes meant for fdn_send() to this
 * peer on this channel: the documented way to build one. When the lane
 * that carries the channel runs over shared memory (shm, also chosen
 * automatically for same-host peers), the buffer is in that connection's
 * shared pool and the message crosses with no copy at all: one frame
 * whatever max_fragment is, and the receiver's handler gets the sender's
 * buffer itself, read-only (fdn_msg_is_borrowed() in <fdn/msg.h>).
 * Otherwise (TCP, the lane not up, the pool full, len under the node's
 * lend_min or over 4 MiB) it is an
 * ordinary message of the worker's pool, so callers need one code path.
 * Either is counted (fdn_node_stats zc_allocs, zc_fallbacks). Returns 0,
 * -EINVAL for an unknown channel, or as fdn_msg_alloc().
 *
 * Such a buffer is readable by that peer's process from the moment it is
 * allocated (its whole pool is), so put in it only what that peer may
 * see; sent to anyone else it is copied. */
int fdn_peer_msg_alloc(fdn_peer *peer, int channel, size_t len, fdn_msg **out);

/* Schedules task on the node's worker once the channel accepts messages
 * again (at once if it already does). One pending notification per channel
 * and peer; a second replaces the first. */
int fdn_send_notify(fdn_peer *peer, int channel, fdn_task *task);

/* A message arrived on a channel. The handler owns msg. Handlers of a more
 * urgent channel run before those of a less urgent one: each channel's
 * deliveries are a task at the channel's priority. */
typedef void (*fdn_recv_fn)(fdn_peer *peer, int channel, fdn_msg *msg, void *arg);

/* Sets the receive handler of a channel for every peer of the node. A channel
 * without a handler frees what it receives (and counts it as dropped). */
int fdn_channel_set_handler(fdn_node *node, int channel, fdn_recv_fn fn, void *arg);

/* Stops (true) or resumes (false) delivering a channel of one peer, as a
 * consumer that cannot keep up would. Received messages wait in the channel's
 * receive queue; once the credit window is full the sender stalls on that
 * channel only, and every other channel keeps flowing. */
int fdn_channel_pause(fdn_peer *peer, int channel, bool paused);

/* ---- Request / response -------------------------------------------------- */

/* The outcome of a request: status 0 with the response (owned by the
 * callback), or -ETIMEDOUT, -ECANCELED, -ENOTCONN with resp NULL. Called
 * exactly once per successful fdn_request(). */
typedef void (*fdn_response_fn)(fdn_peer *peer, int status, fdn_msg *resp, void *arg);

/* Sends req on the channel as a request; fn runs when the response arrives
 * or timeout_ns passes (0: no timeout). *id (may be NULL) identifies it for
 * fdn_request_cancel(). Returns 0 or as fdn_send(). */
int fdn_request(fdn_peer *peer, int channel, fdn_msg *req, uint64_t timeout_ns,
                fdn_response_fn fn, void *arg, uint64_t *id);

/* Cancels a pending request: its callback runs now with -ECANCELED, and a
 * response arriving later is dropped. Returns 0 or -ENOENT. */
int fdn_request_cancel(fdn_peer *peer, uint64_t id);

/* A request arrived; answer it (now or later) with fdn_respond(). */
typedef void (*fdn_request_fn)(fdn_peer *peer, int channel, uint64_t request_id,
                               fdn_msg *req, void *arg);

int fdn_channel_set_request_handler(fdn_node *node, int channel, fdn_request_fn fn, void *arg);

/* Sends the response to request_id on the channel it came on. Returns as
 * fdn_send(). */
int fdn_respond(fdn_peer *peer, int channel, uint64_t request_id, fdn_msg *resp);

/* ---- Telemetry ----------------------------------------------------------- */

typedef struct fdn_channel_stats {
    uint64_t msgs_sent, bytes_sent;          /* handed to the transport, whole messages */
    uint64_t msgs_received, bytes_received;  /* reassembled */
    uint64_t msgs_delivered;                 /* passed to a handler */
    uint64_t queued_msgs, queued_bytes;      /* waiting in the send queue */
    uint64_t recv_queued_msgs;               /* waiting for a paused or busy consumer */
    uint64_t credit_stalls;                  /* times the sender ran out of credit */
    uint64_t send_eagain;                    /* fdn_send() refused: queue full */
    uint64_t drops;                          /* best-effort drops and messages without handler */
    uint64_t credit_available;               /* bytes the sender may still send */
    uint64_t rtt_count;                      /* request round trips measured */
    uint64_t rtt_p50_ns, rtt_p99_ns, rtt_max_ns;  /* from a log-linear histogram */
    uint64_t unacked_msgs, unacked_bytes;    /* reliable: sent, kept until the peer
                                                acknowledges them (at most the credit
                                                window in bytes) */
    uint64_t retransmitted_msgs;             /* sent again after a session resumed */
    uint64_t undelivered_msgs;               /* reliable, never acknowledged when the
                                                session ended (read it in peer_down) */
    uint64_t lost_msgs;                      /* best effort: lost with a connection
                                                (sequence gaps seen by the receiver) */
} fdn_channel_stats;

int fdn_peer_channel_stats(const fdn_peer *peer, int channel, fdn_channel_stats *out);

/* Why connections were refused or dropped, counted per node. */
typedef struct fdn_node_stats {
    uint64_t peers_up, peers_down;
    uint64_t handshake_failures;    /* version, cluster, channel table */
    uint64_t auth_failures;         /* wrong secret */
    uint64_t protocol_errors;       /* malformed frames */
    uint64_t limit_violations;      /* credit, size, memory */
    uint64_t handshake_timeouts;
    uint64_t sessions_interrupted;  /* sessions that lost their connections */
    uint64_t sessions_resumed;      /* ... and got them back (each side counts) */
    uint64_t sessions_expired;      /* ... and did not within session_timeout_ns */
    uint64_t resumes_refused;       /* resumptions, and joins of a lane, of a session
                                       this node does not have (or not that lane now) */
    uint64_t sequence_errors;       /* a message out of sequence (a frame lost below) */
    uint64_t undelivered_msgs;      /* reliable messages unacknowledged at a session's end */
    uint64_t zc_allocs;             /* fdn_peer_msg_alloc() from a shared pool */
    uint64_t zc_fallbacks;          /* ... from the worker's pool (no shared pool there,
                                       or it was full, or the size under lend_min or
                                       too large) */
    uint64_t zc_received;           /* messages delivered without a copy (borrowed) */
    uint64_t packed_frames_sent;    /* frames carrying several small messages of a channel */
    uint64_t packed_msgs_sent;      /* ... the messages in them */
    uint64_t packed_frames_received; /* ... taken whole */
    uint64_t packed_msgs_received;  /* ... the messages taken from them, up to one
                                       that broke a limit */
    uint64_t sent_at_once;          /* messages fdn_send() put straight into an idle
                                       lane's transport, without a scheduler pass */
    uint64_t idle_timeouts;         /* lanes closed because nothing came for idle_timeout_ns */
    uint64_t pings_sent;            /* PINGs on lanes quiet for keepalive_ns */
    uint64_t pongs_received;
    uint64_t heartbeat_stalls;      /* a lane's liveness check ran over keepalive_ns late:
                                       the worker had not run, so the silence it saw was
                                       not the peer's; the lane's clock restarted */
    uint64_t refused_per_addr;      /* accepted connections closed at once: max_conns_per_addr */
    uint64_t refused_pending;       /* ... max_pending_handshakes */
} fdn_node_stats;

void fdn_node_stats_get(const fdn_node *node, fdn_node_stats *out);

/* The fault layer's line, so that a failing run can be replayed: "fault
 * layer: seed=42 FDN_FAULTS='seed=42,...' connections=N frames=N pass=N
 * drop=N dup=N reorder=N delay=N corrupt=N reset=N". The text always names
 * the seed, also one chosen at random because none was given. Written NUL
 * terminated and truncated to len, as snprintf does; returns the length of
 * the whole line, or 0 (and "") when the layer is off. A node with the layer
 * on also logs this line as a warning (include/fdn/log.h: stderr unless the
 * application set a handler) when it is destroyed. */
int fdn_node_fault_report(const fdn_node *node, char *buf, size_t len);

/* One lane (connection) of a peer. */
typedef struct fdn_lane_stats {
    bool up;                         /* authenticated and carrying its channels */
    uint64_t bytes_sent;             /* handed to the transport and sent, frames included */
    uint64_t bytes_received;
    uint64_t inflight_bytes;         /* handed to the transport, not yet sent */
    uint64_t max_inflight_bytes;     /* its bound (max_ or bulk_inflight_bytes) */
    uint64_t pings_sent;             /* liveness: PINGs on this connection (it had
                                        received, or sent, nothing for keepalive_ns) */
    uint64_t pongs_received;
} fdn_lane_stats;

/* The lanes agreed with the peer (1 until it is up). */
int fdn_peer_lane_count(const fdn_peer *peer);

/* True once the peer is up and so is every lane it agreed on: the first
 * lane comes up with the peer, the others (the data lane) a moment later,
 * and until then their channels' messages wait or fall back to copies
 * (fdn_peer_msg_alloc). For a caller that wants to measure, or lend, from
 * the first message on. */
bool fdn_peer_lanes_up(const fdn_peer *peer);

/* Counters of lane 1..fdn_peer_lane_count(). Returns 0 or -EINVAL. */
int fdn_peer_lane_stats(const fdn_peer *peer, int lane, fdn_lane_stats *out);

/* The lane (1..) a channel's messages to this peer travel on. */
int fdn_peer_channel_lane(const fdn_peer *peer, int channel);

#ifdef __cplusplus
}
#endif
#endif
