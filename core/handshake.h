/* The connection handshake: HELLO exchange, version and channel-table
 * negotiation, and mutual authentication from a cluster secret. Internal.
 * Pure state machine, no I/O: the caller moves its messages in HANDSHAKE
 * frames (core/wire.h), one message per frame, before any other frame.
 *
 * Messages. Little-endian; every length is explicit and checked; a message
 * must end exactly where its last field ends.
 *
 *   HELLO (88 + cluster_len + sum(20 + name_len) bytes, at most 13 464)
 *     offset size field
 *          0    1 type           1 (FDN__HS_MSG_HELLO)
 *          1    1 version_min    protocol versions this node speaks,
 *          2    1 version_max    1 <= min <= max
 *          3    1 cluster_len    1..64
 *          4   16 node_id        random, fixed for the node's life
 *         20    8 incarnation    grows at each restart of the node
 *         28    8 capabilities   bitmask (meaning defined by core)
 *         36   32 nonce          fresh random bytes for this handshake
 *         68    8 session        client: the session (peer) this connection
 *                                opens (lane 0) or joins (lane > 0); server: 0
 *         76    1 lane           client: this connection's lane; server: 0
 *         77    1 lane_count     lanes this side uses per peer, 1..8;
 *                                lane < lane_count
 *         78    2 channel_count  0..256
 *         80    1 flags          FDN__HS_FLAG_*; other bits must be zero.
 *                                Client only (a server sends 0):
 *                                FDN__HS_FLAG_RESUME on lane 0 says the
 *                                connection resumes session `session`, which
 *                                lost its connections, instead of opening it
 *         81    3 reserved       zero
 *         84    4 max_fragment   payload bytes of the largest DATA frame this
 *                                side accepts, >= FDN__HS_MIN_FRAGMENT
 *         88    n cluster_name   cluster_len printable ASCII bytes (0x21..0x7e)
 *          then channel_count entries of 20 + name_len bytes:
 *          +0    2 id            unique in the table
 *          +2    1 name_len      1..32
 *          +3    1 priority      higher is more urgent
 *          +4    2 weight        >= 1, share within a priority level
 *          +6    1 flags         FDN__CHANNEL_ORDERED | FDN__CHANNEL_RELIABLE
 *          +7    1 lane          the lane this side sends the channel on, 0..7
 *          +8    8 max_message   <= 2^48 - 1
 *         +16    4 credit_window >= 1 byte
 *         +20    n name          printable ASCII, unique in the table
 *
 *   AUTH (33 bytes)
 *          0    1 type           2 (FDN__HS_MSG_AUTH)
 *          1   32 tag            HMAC-SHA256(cluster secret, transcript)
 *
 * Transcript (145 bytes; the secret itself never crosses the wire):
 *     "fdn-auth-v1"                 11 bytes, domain separation
 *     "client" or "server"           6 bytes, the role of the side proving
 *     SHA-256(client HELLO)         32 bytes, the HELLO exactly as sent
 *     SHA-256(server HELLO)         32 bytes
 *     client nonce, server nonce    32 + 32 bytes
 * A change to any HELLO byte on the way changes one side's transcript, so
 * the AUTH tags stop matching; the role label stops a tag being reflected
 * back to its author; the nonces make every tag fresh. Tags are compared in
 * constant time.
 *
 * Order:
 *     client -> HELLO
 *     server -> HELLO            (the challenge: the server's nonce)
 *     client -> AUTH
 *     server -> AUTH             (only once the client's AUTH is verified)
 * The server is DONE when it has verified the client's AUTH and queued its
 * own; the client is DONE when it has verified the server's AUTH. The client
 * proves itself first because the server is the side any stranger can
 * reach: a peer without the secret gets the server's HELLO (node id, cluster
 * name, channel table, nonce: nothing secret), never a tag it could guess
 * the secret against offline, then a closed connection, and the server
 * counts a bad_auth. A client only talks to servers it chose to dial.
 *
 * Failure. Both sides apply the same symmetric checks to the HELLO they
 * receive: a common version, the same cluster name, no channel conflict.
 * When the server rejects a client HELLO for one of those, it still queues
 * its own HELLO (never an AUTH), so that the client reaches the same
 * diagnosis instead of seeing a bare close. On every other failure (a
 * malformed or unexpected message, a bad AUTH) nothing more is queued: a
 * peer without the secret gets a closed connection and the local side a
 * reason for its counters. After FAILED the caller sends what
 * fdn__handshake_next_output() still yields, then closes.
 *
 * Channel negotiation. Channel ids are cluster-wide names for the same
 * channel, so the tables are matched by name, and a conflict fails the
 * handshake: the same name with a different id, the same id with a
 * different name, or the same channel with a different ordering or delivery
 * class (FDN__CHANNEL_ORDERED, FDN__CHANNEL_RELIABLE). A channel only one
 * side knows is not a conflict (rolling upgrades add channels); it is simply
 * not usable on this connection. Each channel both know is agreed as:
 * id, name and flags as both have them; max_message and credit_window the
 * minimum of the two sides (what both can honour); priority, weight and
 * lane the local side's (they steer the local scheduler only). The agreed
 * table keeps the local table's order. Frames are agreed the same way:
 * each side sends DATA frames of at most the smaller max_fragment.
 *
 * Lanes. A peer may be reached over several connections (lanes), so that
 * bulk channels and urgent ones do not share a TCP stream. Lane 0 opens the
 * session: the client picks a random session id and both sides agree on
 * min(lane_count) lanes. The client then opens lanes 1.. as connections of
 * their own, each with a full handshake (so each is authenticated) whose
 * HELLO names the session and the lane; the caller binds them to the peer.
 * Session, lane and lane count are in the HELLO, hence in the transcript
 * both AUTH tags cover.
 *
 * Resumption. A session outlives its connections (core/node_internal.h):
 * when they are lost, the client dials lane 0 again with the same session
 * id and FDN__HS_FLAG_RESUME; the handshake is the usual full one (so the
 * resuming side proves it has the secret), and the caller binds the
 * connection to the waiting session of the same node id and incarnation, or
 * refuses it. The flag is in the transcript like every HELLO byte. */
#ifndef FDN_CORE_HANDSHAKE_H
#define FDN_CORE_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/wire.h"

#define FDN__HS_NODE_ID_SIZE 16
#define FDN__HS_NONCE_SIZE 32
#define FDN__HS_SECRET_SIZE 32
#define FDN__HS_TAG_SIZE 32
#define FDN__HS_CLUSTER_NAME_MAX 64
#define FDN__HS_CHANNEL_NAME_MAX 32
#define FDN__HS_MAX_CHANNELS 256
#define FDN__HS_AUTH_SIZE (1 + FDN__HS_TAG_SIZE)
#define FDN__HS_MAX_LANES 8
/* The smallest max_fragment a HELLO may state: below it the 32-byte frame
 * header would be over 6 % of every full frame, and a peer could make the
 * other side cut every message into slivers. */
#define FDN__HS_MIN_FRAGMENT 512u

/* HELLO flags. */
#define FDN__HS_FLAG_RESUME 0x01u     /* client, lane 0: resume session, not open it */

enum fdn__hs_msg_type {
    FDN__HS_MSG_HELLO = 1,
    FDN__HS_MSG_AUTH = 2,
};

/* Channel flags. Other bits are reserved and must be zero. */
#define FDN__CHANNEL_ORDERED 0x01u    /* delivered in send order */
#define FDN__CHANNEL_RELIABLE 0x02u   /* no loss, no duplicates across resets */

/* One channel-table entry, as announced in a HELLO or as agreed. */
struct fdn__channel_desc {
    uint16_t id;
    uint8_t priority;
    uint8_t flags;          /* FDN__CHANNEL_* */
    uint16_t weight;
    uint8_t lane;           /* the lane the announcing side sends it on */
    uint32_t credit_window; /* bytes */
    uint64_t max_message;   /* bytes */
    char name[FDN__HS_CHANNEL_NAME_MAX + 1];   /* NUL-terminated */
};

/* A HELLO message, decoded. */
struct fdn__hello {
    uint8_t version_min;
    uint8_t version_max;
    uint8_t node_id[FDN__HS_NODE_ID_SIZE];
    uint64_t incarnation;
    uint64_t capabilities;
    uint8_t nonce[FDN__HS_NONCE_SIZE];
    uint64_t session;
    uint8_t lane;
    uint8_t lane_count;
    uint8_t flags;                /* FDN__HS_FLAG_* */
    uint32_t max_fragment;        /* >= FDN__HS_MIN_FRAGMENT */
    char cluster_name[FDN__HS_CLUSTER_NAME_MAX + 1];   /* NUL-terminated */
    uint16_t channel_count;
    struct fdn__channel_desc channels[FDN__HS_MAX_CHANNELS];
};

/* Encodes h into buf[0..cap). Returns the message length, -EINVAL (with
 * fdn_errmsg() naming the field) when h breaks a rule of the layout above,
 * or -ENOSPC when cap is too small (FDN__WIRE_HANDSHAKE_MAX always does). */
int fdn__hello_encode(const struct fdn__hello *h, uint8_t *buf, size_t cap);

/* Decodes and checks the HELLO in msg[0..len), never reading past len.
 * Returns 0, or -EBADMSG with fdn_errmsg() naming the first broken field. */
int fdn__hello_decode(const uint8_t *msg, size_t len, struct fdn__hello *out);

/* Agrees the channel tables as described above. agreed has room for
 * local_count entries. Returns 0 with *agreed_count set, or -EPROTO with
 * fdn_errmsg() naming the conflicting channel. Both tables must have passed
 * the HELLO checks (unique ids and names). */
int fdn__channels_negotiate(const struct fdn__channel_desc *local, uint16_t local_count,
                            const struct fdn__channel_desc *peer, uint16_t peer_count,
                            struct fdn__channel_desc *agreed, uint16_t *agreed_count);

enum fdn__handshake_role {
    FDN__HS_CLIENT,   /* opened the connection; speaks first */
    FDN__HS_SERVER,
};

enum fdn__handshake_status {
    FDN__HS_IN_PROGRESS = 0,
    FDN__HS_DONE = 1,
    FDN__HS_FAILED = 2,
};

/* Why a handshake failed; each has a name for counters and logs. */
enum fdn__handshake_failure {
    FDN__HS_FAIL_NONE = 0,
    FDN__HS_FAIL_VERSION_MISMATCH,  /* no version in both ranges (-EPROTONOSUPPORT) */
    FDN__HS_FAIL_CLUSTER_MISMATCH,  /* the peer names another cluster (-EPERM) */
    FDN__HS_FAIL_BAD_AUTH,          /* the peer's AUTH tag is wrong (-EACCES) */
    FDN__HS_FAIL_MALFORMED,         /* a message breaks its layout (-EBADMSG) */
    FDN__HS_FAIL_UNEXPECTED,        /* a valid message at the wrong time (-EPROTO) */
    FDN__HS_FAIL_CHANNEL_CONFLICT,  /* see "Channel negotiation" (-EPROTO) */
    FDN__HS_FAIL_COUNT
};

/* What one side brings to the handshake. The struct is copied by create;
 * cluster_name and channels only need to live until create returns. */
struct fdn__handshake_config {
    enum fdn__handshake_role role;
    uint8_t version_min;          /* 0 in both selects FDN__WIRE_VERSION */
    uint8_t version_max;
    uint8_t node_id[FDN__HS_NODE_ID_SIZE];
    uint64_t incarnation;
    uint64_t capabilities;
    uint64_t session;             /* client: the session opened or joined */
    uint8_t lane;                 /* client: this connection's lane */
    uint8_t lane_count;           /* lanes per peer this side uses; 0 means 1 */
    bool resume;                  /* client, lane 0: resume the session */
    const char *cluster_name;     /* 1..64 printable ASCII */
    const struct fdn__channel_desc *channels;
    uint16_t channel_count;       /* <= 256 */
    uint8_t secret[FDN__HS_SECRET_SIZE];
    /* The local side's limits: every local channel's id must be
     * <= max_channel and its max_message <= max_message; max_fragment (at
     * least FDN__HS_MIN_FRAGMENT) is announced in the HELLO. */
    struct fdn__wire_limits limits;
};

/* What a finished handshake agreed. */
struct fdn__handshake_result {
    uint8_t version;              /* highest version in both ranges */
    uint8_t peer_node_id[FDN__HS_NODE_ID_SIZE];
    uint64_t peer_incarnation;
    uint64_t peer_capabilities;
    uint64_t common_capabilities; /* local & peer */
    uint64_t session;             /* the client's session id */
    uint8_t lane;                 /* the client's lane */
    uint8_t lane_count;           /* min of both sides' lane counts */
    bool resume;                  /* the client resumes the session */
    uint32_t max_fragment;        /* min of both sides': what each may send */
    uint16_t channel_count;
    struct fdn__channel_desc channels[FDN__HS_MAX_CHANNELS];
};

/* One side of one connection's handshake. Owned by the connection; not
 * synchronised. */
struct fdn__handshake;

/* Creates the state machine with a fresh nonce. A client's HELLO is queued
 * at once (fdn__handshake_next_output); a server waits for the client's.
 * Returns 0, -EINVAL (fdn_errmsg() says which field), -ENOMEM, or -EIO when
 * libsodium cannot initialise. */
int fdn__handshake_create(const struct fdn__handshake_config *cfg, struct fdn__handshake **out);

/* Wipes the secret and frees hs. NULL is a no-op. */
void fdn__handshake_destroy(struct fdn__handshake *hs);

/* Feeds the payload of one received HANDSHAKE frame. Returns
 * FDN__HS_IN_PROGRESS, FDN__HS_DONE, or a negative errno once FAILED (see
 * enum fdn__handshake_failure; fdn_errmsg() has the detail). After FAILED
 * every call returns the same errno and changes nothing; a message fed after
 * DONE is unexpected and fails the handshake. Then drain the output. */
int fdn__handshake_feed(struct fdn__handshake *hs, const uint8_t *msg, size_t len);

/* Takes the next message to send: sets *msg (valid until hs is fed again or
 * destroyed) and returns its length, or returns 0 when nothing is waiting.
 * Each message goes out as one HANDSHAKE frame, in the order taken. */
size_t fdn__handshake_next_output(struct fdn__handshake *hs, const uint8_t **msg);

enum fdn__handshake_status fdn__handshake_status(const struct fdn__handshake *hs);
enum fdn__handshake_failure fdn__handshake_failure(const struct fdn__handshake *hs);

/* Stable lower-case name ("bad_auth"); "unknown" outside the enum. */
const char *fdn__handshake_failure_name(enum fdn__handshake_failure f);

/* The agreed parameters, or NULL until DONE. Owned by hs. */
const struct fdn__handshake_result *fdn__handshake_result(const struct fdn__handshake *hs);

/* The peer's HELLO as received (its identity and whole channel table), or
 * NULL until DONE. Owned by hs. */
const struct fdn__hello *fdn__handshake_peer_hello(const struct fdn__handshake *hs);

/* ---- The cluster secret file, for tools ---------------------------------- */

/* Writes $XDG_CONFIG_HOME/foundation/cluster.secret (when that variable is
 * an absolute path) or $HOME/.config/foundation/cluster.secret into buf.
 * Returns 0, -ENOENT when neither variable is usable, or -ENAMETOOLONG. */
int fdn__secret_default_path(char *buf, size_t cap);

/* Reads the 32-byte secret stored hex-encoded (64 hex digits, optionally a
 * final newline) at path, like Erlang's cookie. The file must be a regular
 * file owned by the effective user with no group or other permission bits
 * (0600 or 0400), else -EPERM. When the file does not exist, creates its
 * missing directories (0700) and the file (0600) with 32 random bytes: the
 * content is written to an O_EXCL temporary file and linked into place, so
 * no reader sees a partial secret and concurrent creators agree on one.
 * Returns 0, -EPERM, -EINVAL (not 64 hex digits or not a regular file), or
 * another negative errno from the file system; fdn_errmsg() says why. */
int fdn__secret_load_or_create(const char *path, uint8_t out[FDN__HS_SECRET_SIZE]);

#endif
