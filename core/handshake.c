#include "core/handshake.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "base/error.h"
#include "base/io.h"

/* ---- HELLO layout (see handshake.h) ------------------------------------- */

enum {
    HELLO_AT_TYPE = 0,
    HELLO_AT_VERSION_MIN = 1,
    HELLO_AT_VERSION_MAX = 2,
    HELLO_AT_CLUSTER_LEN = 3,
    HELLO_AT_NODE_ID = 4,
    HELLO_AT_INCARNATION = 20,
    HELLO_AT_CAPABILITIES = 28,
    HELLO_AT_NONCE = 36,
    HELLO_AT_SESSION = 68,
    HELLO_AT_LANE = 76,
    HELLO_AT_LANE_COUNT = 77,
    HELLO_AT_CHANNEL_COUNT = 78,
    HELLO_AT_FLAGS = 80,
    HELLO_AT_RESERVED = 81,
    HELLO_RESERVED_BYTES = 3,
    HELLO_AT_MAX_FRAGMENT = 84,
    HELLO_FIXED_SIZE = 88,

    CHANNEL_AT_ID = 0,
    CHANNEL_AT_NAME_LEN = 2,
    CHANNEL_AT_PRIORITY = 3,
    CHANNEL_AT_WEIGHT = 4,
    CHANNEL_AT_FLAGS = 6,
    CHANNEL_AT_LANE = 7,
    CHANNEL_AT_MAX_MESSAGE = 8,
    CHANNEL_AT_CREDIT_WINDOW = 16,
    CHANNEL_FIXED_SIZE = 20,
};

#define CHANNEL_KNOWN_FLAGS (FDN__CHANNEL_ORDERED | FDN__CHANNEL_RELIABLE)
#define HELLO_KNOWN_FLAGS FDN__HS_FLAG_RESUME

/* The largest HELLO must fit one HANDSHAKE frame. */
_Static_assert(HELLO_FIXED_SIZE + FDN__HS_CLUSTER_NAME_MAX +
                       FDN__HS_MAX_CHANNELS * (CHANNEL_FIXED_SIZE + FDN__HS_CHANNEL_NAME_MAX) <=
                   FDN__WIRE_HANDSHAKE_MAX,
               "a full HELLO must fit a handshake frame");

/* ---- Rules shared by encoding (-EINVAL) and decoding (-EBADMSG) ---------- */

/* Names are printable ASCII without spaces, so logs and counters can show
 * them as they are. */
static bool is_name_char(uint8_t c) { return c >= 0x21 && c <= 0x7e; }

static bool is_printable_name(const uint8_t *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_name_char(s[i]))
            return false;
    }
    return true;
}

static int check_name(const char *name, size_t array_size, size_t max, int err,
                      const char *prefix, const char *what)
{
    size_t len = strnlen(name, array_size);   /* array_size: no terminator */
    if (len == 0 || len > max)
        return FDN_ERR(err, "%s: %s must be 1..%zu bytes", prefix, what, max);
    if (!is_printable_name((const uint8_t *)name, len))
        return FDN_ERR(err, "%s: %s has a byte outside printable ASCII", prefix, what);
    return 0;
}

static int check_channel(const struct fdn__channel_desc *c, unsigned index, int err,
                         const char *prefix)
{
    char what[32];
    snprintf(what, sizeof what, "channel %u name", index);
    int rc = check_name(c->name, sizeof c->name, FDN__HS_CHANNEL_NAME_MAX, err, prefix, what);
    if (rc < 0)
        return rc;
    if (c->flags & ~CHANNEL_KNOWN_FLAGS)
        return FDN_ERR(err, "%s: channel %s has unknown flags 0x%02x", prefix, c->name, c->flags);
    if (c->weight == 0 || c->credit_window == 0)
        return FDN_ERR(err, "%s: channel %s has weight %u, credit window %" PRIu32
                            " (each must be >= 1)",
                       prefix, c->name, c->weight, c->credit_window);
    if (c->lane >= FDN__HS_MAX_LANES)
        return FDN_ERR(err, "%s: channel %s on lane %u, lanes are 0..%d", prefix, c->name,
                       c->lane, FDN__HS_MAX_LANES - 1);
    if (c->max_message > FDN__WIRE_MAX_U48)
        return FDN_ERR(err, "%s: channel %s max_message %" PRIu64 " over 2^48 - 1", prefix,
                       c->name, c->max_message);
    return 0;
}

static int check_channels_unique(const struct fdn__channel_desc *t, uint16_t count, int err,
                                 const char *prefix)
{
    for (unsigned i = 1; i < count; i++) {
        for (unsigned j = 0; j < i; j++) {
            if (t[i].id == t[j].id)
                return FDN_ERR(err, "%s: channel id %u appears twice", prefix, t[i].id);
            if (strcmp(t[i].name, t[j].name) == 0)
                return FDN_ERR(err, "%s: channel name %s appears twice", prefix, t[i].name);
        }
    }
    return 0;
}

/* Every rule of the HELLO layout that a decoded struct can still break. */
static int check_hello(const struct fdn__hello *h, int err, const char *prefix)
{
    if (h->version_min == 0 || h->version_min > h->version_max)
        return FDN_ERR(err, "%s: version range %u..%u", prefix, h->version_min, h->version_max);
    if (h->lane_count == 0 || h->lane_count > FDN__HS_MAX_LANES || h->lane >= h->lane_count)
        return FDN_ERR(err, "%s: lane %u of %u (1..%d lanes)", prefix, h->lane, h->lane_count,
                       FDN__HS_MAX_LANES);
    if (h->flags & ~HELLO_KNOWN_FLAGS)
        return FDN_ERR(err, "%s: unknown flags 0x%02x", prefix, h->flags);
    if ((h->flags & FDN__HS_FLAG_RESUME) && h->lane != 0)
        return FDN_ERR(err, "%s: lane %u resumes a session (only lane 0 may)", prefix, h->lane);
    if (h->max_fragment < FDN__HS_MIN_FRAGMENT)
        return FDN_ERR(err, "%s: max_fragment %u, at least %u", prefix, h->max_fragment,
                       FDN__HS_MIN_FRAGMENT);
    int rc = check_name(h->cluster_name, sizeof h->cluster_name, FDN__HS_CLUSTER_NAME_MAX, err,
                        prefix, "cluster name");
    if (rc < 0)
        return rc;
    if (h->channel_count > FDN__HS_MAX_CHANNELS)
        return FDN_ERR(err, "%s: %u channels, at most %u", prefix, h->channel_count,
                       FDN__HS_MAX_CHANNELS);
    for (unsigned i = 0; i < h->channel_count; i++) {
        rc = check_channel(&h->channels[i], i, err, prefix);
        if (rc < 0)
            return rc;
    }
    return check_channels_unique(h->channels, h->channel_count, err, prefix);
}

/* ---- HELLO encoding ------------------------------------------------------ */

static size_t hello_size(const struct fdn__hello *h)
{
    size_t size = HELLO_FIXED_SIZE + strlen(h->cluster_name);
    for (unsigned i = 0; i < h->channel_count; i++)
        size += CHANNEL_FIXED_SIZE + strlen(h->channels[i].name);
    return size;
}

static uint8_t *encode_channel(uint8_t *p, const struct fdn__channel_desc *c)
{
    size_t name_len = strlen(c->name);
    fdn__store_le16(p + CHANNEL_AT_ID, c->id);
    p[CHANNEL_AT_NAME_LEN] = (uint8_t)name_len;
    p[CHANNEL_AT_PRIORITY] = c->priority;
    fdn__store_le16(p + CHANNEL_AT_WEIGHT, c->weight);
    p[CHANNEL_AT_FLAGS] = c->flags;
    p[CHANNEL_AT_LANE] = c->lane;
    fdn__store_le64(p + CHANNEL_AT_MAX_MESSAGE, c->max_message);
    fdn__store_le32(p + CHANNEL_AT_CREDIT_WINDOW, c->credit_window);
    memcpy(p + CHANNEL_FIXED_SIZE, c->name, name_len);
    return p + CHANNEL_FIXED_SIZE + name_len;
}

int fdn__hello_encode(const struct fdn__hello *h, uint8_t *buf, size_t cap)
{
    int rc = check_hello(h, -EINVAL, "invalid HELLO");
    if (rc < 0)
        return rc;
    size_t size = hello_size(h);
    if (size > cap)
        return FDN_ERR(-ENOSPC, "HELLO needs %zu bytes, buffer has %zu", size, cap);

    size_t cluster_len = strlen(h->cluster_name);
    buf[HELLO_AT_TYPE] = FDN__HS_MSG_HELLO;
    buf[HELLO_AT_VERSION_MIN] = h->version_min;
    buf[HELLO_AT_VERSION_MAX] = h->version_max;
    buf[HELLO_AT_CLUSTER_LEN] = (uint8_t)cluster_len;
    memcpy(buf + HELLO_AT_NODE_ID, h->node_id, FDN__HS_NODE_ID_SIZE);
    fdn__store_le64(buf + HELLO_AT_INCARNATION, h->incarnation);
    fdn__store_le64(buf + HELLO_AT_CAPABILITIES, h->capabilities);
    memcpy(buf + HELLO_AT_NONCE, h->nonce, FDN__HS_NONCE_SIZE);
    fdn__store_le64(buf + HELLO_AT_SESSION, h->session);
    buf[HELLO_AT_LANE] = h->lane;
    buf[HELLO_AT_LANE_COUNT] = h->lane_count;
    fdn__store_le16(buf + HELLO_AT_CHANNEL_COUNT, h->channel_count);
    buf[HELLO_AT_FLAGS] = h->flags;
    memset(buf + HELLO_AT_RESERVED, 0, HELLO_RESERVED_BYTES);
    fdn__store_le32(buf + HELLO_AT_MAX_FRAGMENT, h->max_fragment);
    memcpy(buf + HELLO_FIXED_SIZE, h->cluster_name, cluster_len);

    uint8_t *p = buf + HELLO_FIXED_SIZE + cluster_len;
    for (unsigned i = 0; i < h->channel_count; i++)
        p = encode_channel(p, &h->channels[i]);
    assert((size_t)(p - buf) == size);
    return (int)size;
}

/* ---- HELLO decoding ------------------------------------------------------ */

#define MALFORMED "malformed HELLO"

/* A cursor over untrusted bytes: every read states its length first. */
struct reader {
    const uint8_t *p;
    size_t left;
};

/* Takes n bytes, or returns NULL and takes nothing when fewer remain. */
static const uint8_t *take(struct reader *r, size_t n)
{
    if (n > r->left)
        return NULL;
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

/* Copies a length-prefixed name into a NUL-terminated array. */
static int take_name(struct reader *r, size_t len, size_t max, char *dst, const char *what)
{
    if (len == 0 || len > max)
        return FDN_ERR(-EBADMSG, MALFORMED ": %s length %zu, allowed 1..%zu", what, len, max);
    const uint8_t *bytes = take(r, len);
    if (!bytes)
        return FDN_ERR(-EBADMSG, MALFORMED ": %s of %zu bytes truncated", what, len);
    if (!is_printable_name(bytes, len))
        return FDN_ERR(-EBADMSG, MALFORMED ": %s has a byte outside printable ASCII", what);
    memcpy(dst, bytes, len);
    dst[len] = '\0';
    return 0;
}

static int decode_channel(struct reader *r, unsigned index, struct fdn__channel_desc *c)
{
    const uint8_t *fixed = take(r, CHANNEL_FIXED_SIZE);
    if (!fixed)
        return FDN_ERR(-EBADMSG, MALFORMED ": channel entry %u truncated", index);
    c->id = fdn__load_le16(fixed + CHANNEL_AT_ID);
    c->priority = fixed[CHANNEL_AT_PRIORITY];
    c->weight = fdn__load_le16(fixed + CHANNEL_AT_WEIGHT);
    c->flags = fixed[CHANNEL_AT_FLAGS];
    c->lane = fixed[CHANNEL_AT_LANE];
    c->max_message = fdn__load_le64(fixed + CHANNEL_AT_MAX_MESSAGE);
    c->credit_window = fdn__load_le32(fixed + CHANNEL_AT_CREDIT_WINDOW);

    char what[32];
    snprintf(what, sizeof what, "channel %u name", index);
    return take_name(r, fixed[CHANNEL_AT_NAME_LEN], FDN__HS_CHANNEL_NAME_MAX, c->name, what);
}

static void decode_hello_fixed(const uint8_t *fixed, struct fdn__hello *out)
{
    out->version_min = fixed[HELLO_AT_VERSION_MIN];
    out->version_max = fixed[HELLO_AT_VERSION_MAX];
    memcpy(out->node_id, fixed + HELLO_AT_NODE_ID, FDN__HS_NODE_ID_SIZE);
    out->incarnation = fdn__load_le64(fixed + HELLO_AT_INCARNATION);
    out->capabilities = fdn__load_le64(fixed + HELLO_AT_CAPABILITIES);
    memcpy(out->nonce, fixed + HELLO_AT_NONCE, FDN__HS_NONCE_SIZE);
    out->session = fdn__load_le64(fixed + HELLO_AT_SESSION);
    out->lane = fixed[HELLO_AT_LANE];
    out->lane_count = fixed[HELLO_AT_LANE_COUNT];
    out->channel_count = fdn__load_le16(fixed + HELLO_AT_CHANNEL_COUNT);
    out->flags = fixed[HELLO_AT_FLAGS];
    out->max_fragment = fdn__load_le32(fixed + HELLO_AT_MAX_FRAGMENT);
}

int fdn__hello_decode(const uint8_t *msg, size_t len, struct fdn__hello *out)
{
    struct reader r = {msg, len};
    const uint8_t *fixed = take(&r, HELLO_FIXED_SIZE);
    if (!fixed)
        return FDN_ERR(-EBADMSG, MALFORMED ": %zu bytes, the fixed part alone is %d", len,
                       HELLO_FIXED_SIZE);
    if (fixed[HELLO_AT_TYPE] != FDN__HS_MSG_HELLO)
        return FDN_ERR(-EBADMSG, MALFORMED ": message type %u", fixed[HELLO_AT_TYPE]);
    decode_hello_fixed(fixed, out);
    for (unsigned i = 0; i < HELLO_RESERVED_BYTES; i++)
        if (fixed[HELLO_AT_RESERVED + i] != 0)
            return FDN_ERR(-EBADMSG, MALFORMED ": reserved byte %u is 0x%02x",
                           HELLO_AT_RESERVED + i, fixed[HELLO_AT_RESERVED + i]);
    if (out->channel_count > FDN__HS_MAX_CHANNELS)
        return FDN_ERR(-EBADMSG, MALFORMED ": %u channels, at most %u", out->channel_count,
                       FDN__HS_MAX_CHANNELS);
    int rc = take_name(&r, fixed[HELLO_AT_CLUSTER_LEN], FDN__HS_CLUSTER_NAME_MAX,
                       out->cluster_name, "cluster name");
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < out->channel_count; i++) {
        rc = decode_channel(&r, i, &out->channels[i]);
        if (rc < 0)
            return rc;
    }
    if (r.left != 0)
        return FDN_ERR(-EBADMSG, MALFORMED ": %zu bytes after the last field", r.left);
    return check_hello(out, -EBADMSG, MALFORMED);
}

/* ---- Channel negotiation -------------------------------------------------- */

static const struct fdn__channel_desc *find_by_id(const struct fdn__channel_desc *t,
                                                  uint16_t count, uint16_t id)
{
    for (unsigned i = 0; i < count; i++) {
        if (t[i].id == id)
            return &t[i];
    }
    return NULL;
}

static const struct fdn__channel_desc *find_by_name(const struct fdn__channel_desc *t,
                                                    uint16_t count, const char *name)
{
    for (unsigned i = 0; i < count; i++) {
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    }
    return NULL;
}

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static struct fdn__channel_desc agree_channel(const struct fdn__channel_desc *local,
                                              const struct fdn__channel_desc *peer)
{
    struct fdn__channel_desc c = *local;
    c.max_message = MIN(local->max_message, peer->max_message);
    c.credit_window = MIN(local->credit_window, peer->credit_window);
    return c;
}

int fdn__channels_negotiate(const struct fdn__channel_desc *local, uint16_t local_count,
                            const struct fdn__channel_desc *peer, uint16_t peer_count,
                            struct fdn__channel_desc *agreed, uint16_t *agreed_count)
{
    uint16_t n = 0;
    for (unsigned i = 0; i < local_count; i++) {
        const struct fdn__channel_desc *mine = &local[i];
        const struct fdn__channel_desc *same_id = find_by_id(peer, peer_count, mine->id);
        if (same_id && strcmp(same_id->name, mine->name) != 0)
            return FDN_ERR(-EPROTO, "channel conflict: id %u is %s here, %s at the peer", mine->id,
                           mine->name, same_id->name);
        const struct fdn__channel_desc *theirs = find_by_name(peer, peer_count, mine->name);
        if (!theirs)
            continue;
        if (theirs->id != mine->id)
            return FDN_ERR(-EPROTO, "channel conflict: %s is id %u here, %u at the peer",
                           mine->name, mine->id, theirs->id);
        if (theirs->flags != mine->flags)
            return FDN_ERR(-EPROTO,
                           "channel conflict: %s has ordering/delivery flags 0x%x here, 0x%x at "
                           "the peer",
                           mine->name, mine->flags, theirs->flags);
        agreed[n++] = agree_channel(mine, theirs);
    }
    *agreed_count = n;
    return 0;
}

/* ---- The state machine --------------------------------------------------- */

enum hs_state {
    AWAIT_HELLO,
    AWAIT_AUTH,
    DONE,
    FAILED,
};

#define MAX_OUTPUTS 2   /* the server's HELLO and AUTH; the client's HELLO and AUTH */

struct fdn__handshake {
    enum fdn__handshake_role role;
    enum hs_state state;
    enum fdn__handshake_failure failure;
    int failure_errno;
    uint8_t secret[FDN__HS_SECRET_SIZE];

    struct fdn__hello local;
    uint8_t local_msg[FDN__WIRE_HANDSHAKE_MAX];   /* the local HELLO as sent */
    size_t local_len;
    uint8_t local_hash[crypto_hash_sha256_BYTES];

    struct fdn__hello peer;
    uint8_t peer_hash[crypto_hash_sha256_BYTES];  /* of the peer's HELLO as received */

    uint8_t auth_msg[FDN__HS_AUTH_SIZE];

    const uint8_t *outputs[MAX_OUTPUTS];   /* point into local_msg and auth_msg */
    size_t output_lens[MAX_OUTPUTS];
    unsigned outputs_queued;
    unsigned outputs_taken;

    struct fdn__handshake_result result;
};

static const char *const failure_names[FDN__HS_FAIL_COUNT] = {
    [FDN__HS_FAIL_NONE] = "none",
    [FDN__HS_FAIL_VERSION_MISMATCH] = "version_mismatch",
    [FDN__HS_FAIL_CLUSTER_MISMATCH] = "cluster_mismatch",
    [FDN__HS_FAIL_BAD_AUTH] = "bad_auth",
    [FDN__HS_FAIL_MALFORMED] = "malformed",
    [FDN__HS_FAIL_UNEXPECTED] = "unexpected_message",
    [FDN__HS_FAIL_CHANNEL_CONFLICT] = "channel_conflict",
};

const char *fdn__handshake_failure_name(enum fdn__handshake_failure f)
{
    if ((unsigned)f >= FDN__HS_FAIL_COUNT)
        return "unknown";
    return failure_names[f];
}

static int failure_errno(enum fdn__handshake_failure f)
{
    switch (f) {
    case FDN__HS_FAIL_VERSION_MISMATCH:
        return -EPROTONOSUPPORT;
    case FDN__HS_FAIL_CLUSTER_MISMATCH:
        return -EPERM;
    case FDN__HS_FAIL_BAD_AUTH:
        return -EACCES;
    case FDN__HS_FAIL_MALFORMED:
        return -EBADMSG;
    default:
        return -EPROTO;
    }
}

/* Enters FAILED for reason f; the detail is already in fdn_errmsg(). */
static int mark_failed(struct fdn__handshake *hs, enum fdn__handshake_failure f)
{
    hs->state = FAILED;
    hs->failure = f;
    hs->failure_errno = failure_errno(f);
    return hs->failure_errno;
}

#define FAIL(hs, f, fmt, ...)                                                        \
    (FDN_ERR(failure_errno(f), "handshake failed (%s): " fmt,                        \
             fdn__handshake_failure_name(f), __VA_ARGS__),                           \
     mark_failed((hs), (f)))

static void queue_output(struct fdn__handshake *hs, const uint8_t *msg, size_t len)
{
    assert(hs->outputs_queued < MAX_OUTPUTS);
    hs->outputs[hs->outputs_queued] = msg;
    hs->output_lens[hs->outputs_queued] = len;
    hs->outputs_queued++;
}

size_t fdn__handshake_next_output(struct fdn__handshake *hs, const uint8_t **msg)
{
    if (hs->outputs_taken == hs->outputs_queued)
        return 0;
    *msg = hs->outputs[hs->outputs_taken];
    return hs->output_lens[hs->outputs_taken++];
}

/* ---- Authentication ------------------------------------------------------ */

static const char auth_label[] = "fdn-auth-v1";
static const char *const role_labels[] = {
    [FDN__HS_CLIENT] = "client",
    [FDN__HS_SERVER] = "server",
};
#define AUTH_LABEL_LEN (sizeof auth_label - 1)
#define ROLE_LABEL_LEN 6

/* The AUTH tag that the side in role prover must send on this connection. */
static void compute_tag(const struct fdn__handshake *hs, enum fdn__handshake_role prover,
                        uint8_t tag[FDN__HS_TAG_SIZE])
{
    bool local_is_client = hs->role == FDN__HS_CLIENT;
    const uint8_t *client_hash = local_is_client ? hs->local_hash : hs->peer_hash;
    const uint8_t *server_hash = local_is_client ? hs->peer_hash : hs->local_hash;
    const uint8_t *client_nonce = local_is_client ? hs->local.nonce : hs->peer.nonce;
    const uint8_t *server_nonce = local_is_client ? hs->peer.nonce : hs->local.nonce;

    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, hs->secret, sizeof hs->secret);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)auth_label, AUTH_LABEL_LEN);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)role_labels[prover], ROLE_LABEL_LEN);
    crypto_auth_hmacsha256_update(&st, client_hash, crypto_hash_sha256_BYTES);
    crypto_auth_hmacsha256_update(&st, server_hash, crypto_hash_sha256_BYTES);
    crypto_auth_hmacsha256_update(&st, client_nonce, FDN__HS_NONCE_SIZE);
    crypto_auth_hmacsha256_update(&st, server_nonce, FDN__HS_NONCE_SIZE);
    crypto_auth_hmacsha256_final(&st, tag);
    sodium_memzero(&st, sizeof st);
}

static void queue_own_auth(struct fdn__handshake *hs)
{
    hs->auth_msg[0] = FDN__HS_MSG_AUTH;
    compute_tag(hs, hs->role, hs->auth_msg + 1);
    queue_output(hs, hs->auth_msg, sizeof hs->auth_msg);
}

static bool peer_tag_valid(const struct fdn__handshake *hs, const uint8_t *tag)
{
    enum fdn__handshake_role peer_role =
        hs->role == FDN__HS_CLIENT ? FDN__HS_SERVER : FDN__HS_CLIENT;
    uint8_t expected[FDN__HS_TAG_SIZE];
    compute_tag(hs, peer_role, expected);
    bool valid = sodium_memcmp(expected, tag, FDN__HS_TAG_SIZE) == 0;
    sodium_memzero(expected, sizeof expected);
    return valid;
}

/* ---- Agreement ------------------------------------------------------------ */

/* The symmetric checks both sides apply to the HELLO they receive. Fills
 * the result (exposed only once DONE). */
static int agree_with_peer(struct fdn__handshake *hs)
{
    const struct fdn__hello *mine = &hs->local, *theirs = &hs->peer;
    uint8_t low = MAX(mine->version_min, theirs->version_min);
    uint8_t high = MIN(mine->version_max, theirs->version_max);
    if (low > high)
        return FAIL(hs, FDN__HS_FAIL_VERSION_MISMATCH, "we speak %u..%u, the peer %u..%u",
                    mine->version_min, mine->version_max, theirs->version_min,
                    theirs->version_max);
    if (strcmp(mine->cluster_name, theirs->cluster_name) != 0)
        return FAIL(hs, FDN__HS_FAIL_CLUSTER_MISMATCH, "we are in %s, the peer in %s",
                    mine->cluster_name, theirs->cluster_name);

    struct fdn__handshake_result *res = &hs->result;
    if (fdn__channels_negotiate(mine->channels, mine->channel_count, theirs->channels,
                                theirs->channel_count, res->channels, &res->channel_count) < 0)
        return mark_failed(hs, FDN__HS_FAIL_CHANNEL_CONFLICT);
    res->version = high;
    memcpy(res->peer_node_id, theirs->node_id, FDN__HS_NODE_ID_SIZE);
    res->peer_incarnation = theirs->incarnation;
    res->peer_capabilities = theirs->capabilities;
    res->common_capabilities = mine->capabilities & theirs->capabilities;
    res->lane_count = MIN(mine->lane_count, theirs->lane_count);
    res->max_fragment = MIN(mine->max_fragment, theirs->max_fragment);
    res->session = hs->role == FDN__HS_CLIENT ? mine->session : theirs->session;
    res->lane = hs->role == FDN__HS_CLIENT ? mine->lane : theirs->lane;
    res->resume = ((hs->role == FDN__HS_CLIENT ? mine : theirs)->flags & FDN__HS_FLAG_RESUME) != 0;
    return 0;
}

/* ---- Feeding -------------------------------------------------------------- */

static int on_hello(struct fdn__handshake *hs, const uint8_t *msg, size_t len)
{
    if (fdn__hello_decode(msg, len, &hs->peer) < 0)
        return mark_failed(hs, FDN__HS_FAIL_MALFORMED);
    /* Only the client names (and so may resume) a session. */
    if (hs->role == FDN__HS_CLIENT && (hs->peer.flags & FDN__HS_FLAG_RESUME))
        return FAIL(hs, FDN__HS_FAIL_MALFORMED, "%s", "a server HELLO with the resume flag");
    crypto_hash_sha256(hs->peer_hash, msg, len);

    int rc = agree_with_peer(hs);
    if (rc < 0) {
        /* Let the client reach the same diagnosis; a HELLO is not secret. */
        if (hs->role == FDN__HS_SERVER)
            queue_output(hs, hs->local_msg, hs->local_len);
        return rc;
    }
    /* The server answers with its HELLO (the challenge: its nonce) and
     * nothing else; the client proves itself first, so a peer without the
     * secret never gets a tag of the server's to guess the secret against. */
    if (hs->role == FDN__HS_SERVER)
        queue_output(hs, hs->local_msg, hs->local_len);
    else
        queue_own_auth(hs);
    hs->state = AWAIT_AUTH;
    return FDN__HS_IN_PROGRESS;
}

static int on_auth(struct fdn__handshake *hs, const uint8_t *msg, size_t len)
{
    if (len != FDN__HS_AUTH_SIZE)
        return FAIL(hs, FDN__HS_FAIL_MALFORMED, "AUTH of %zu bytes, expected %d", len,
                    FDN__HS_AUTH_SIZE);
    if (!peer_tag_valid(hs, msg + 1))
        return FAIL(hs, FDN__HS_FAIL_BAD_AUTH, "the %s's tag does not match our secret",
                    hs->role == FDN__HS_CLIENT ? "server" : "client");
    /* The server proves itself only to a client that has proved itself. */
    if (hs->role == FDN__HS_SERVER)
        queue_own_auth(hs);
    hs->state = DONE;
    return FDN__HS_DONE;
}

static const char *state_name(enum hs_state s)
{
    switch (s) {
    case AWAIT_HELLO:
        return "awaiting HELLO";
    case AWAIT_AUTH:
        return "awaiting AUTH";
    case DONE:
        return "done";
    default:
        return "failed";
    }
}

int fdn__handshake_feed(struct fdn__handshake *hs, const uint8_t *msg, size_t len)
{
    if (hs->state == FAILED)
        return hs->failure_errno;
    if (len == 0)
        return FAIL(hs, FDN__HS_FAIL_MALFORMED, "%s", "empty handshake message");

    uint8_t type = msg[0];
    if (type != FDN__HS_MSG_HELLO && type != FDN__HS_MSG_AUTH)
        return FAIL(hs, FDN__HS_FAIL_MALFORMED, "unknown handshake message type %u", type);
    bool expected = (type == FDN__HS_MSG_HELLO && hs->state == AWAIT_HELLO) ||
                    (type == FDN__HS_MSG_AUTH && hs->state == AWAIT_AUTH);
    if (!expected)
        return FAIL(hs, FDN__HS_FAIL_UNEXPECTED, "%s while %s",
                    type == FDN__HS_MSG_HELLO ? "HELLO" : "AUTH", state_name(hs->state));
    return type == FDN__HS_MSG_HELLO ? on_hello(hs, msg, len) : on_auth(hs, msg, len);
}

enum fdn__handshake_status fdn__handshake_status(const struct fdn__handshake *hs)
{
    switch (hs->state) {
    case DONE:
        return FDN__HS_DONE;
    case FAILED:
        return FDN__HS_FAILED;
    default:
        return FDN__HS_IN_PROGRESS;
    }
}

enum fdn__handshake_failure fdn__handshake_failure(const struct fdn__handshake *hs)
{
    return hs->failure;
}

const struct fdn__handshake_result *fdn__handshake_result(const struct fdn__handshake *hs)
{
    return hs->state == DONE ? &hs->result : NULL;
}

const struct fdn__hello *fdn__handshake_peer_hello(const struct fdn__handshake *hs)
{
    return hs->state == DONE ? &hs->peer : NULL;
}

/* ---- Creation ------------------------------------------------------------- */

#define INVALID_CONFIG "invalid handshake config"

static int check_local_limits(const struct fdn__handshake_config *cfg)
{
    for (unsigned i = 0; i < cfg->channel_count; i++) {
        const struct fdn__channel_desc *c = &cfg->channels[i];
        if (c->id > cfg->limits.max_channel)
            return FDN_ERR(-EINVAL, INVALID_CONFIG ": channel id %u over max_channel %u", c->id,
                           cfg->limits.max_channel);
        if (c->max_message > cfg->limits.max_message)
            return FDN_ERR(-EINVAL,
                           INVALID_CONFIG ": channel %u max_message %" PRIu64
                                          " over the limit %" PRIu64,
                           c->id, c->max_message, cfg->limits.max_message);
    }
    return 0;
}

/* Builds the local HELLO from cfg; the encoder checks the remaining rules. */
static int build_local_hello(struct fdn__handshake *hs, const struct fdn__handshake_config *cfg)
{
    struct fdn__hello *h = &hs->local;

    if (cfg->role != FDN__HS_CLIENT && cfg->role != FDN__HS_SERVER)
        return FDN_ERR(-EINVAL, INVALID_CONFIG ": role %d", (int)cfg->role);
    if (!cfg->cluster_name || strnlen(cfg->cluster_name, sizeof h->cluster_name) >=
                                  sizeof h->cluster_name)
        return FDN_ERR(-EINVAL, INVALID_CONFIG ": cluster name missing or over %d bytes",
                       FDN__HS_CLUSTER_NAME_MAX);
    if (cfg->channel_count > FDN__HS_MAX_CHANNELS || (cfg->channel_count && !cfg->channels))
        return FDN_ERR(-EINVAL, INVALID_CONFIG ": %u channels", cfg->channel_count);
    int rc = check_local_limits(cfg);
    if (rc < 0)
        return rc;

    bool default_versions = cfg->version_min == 0 && cfg->version_max == 0;
    h->version_min = default_versions ? FDN__WIRE_VERSION : cfg->version_min;
    h->version_max = default_versions ? FDN__WIRE_VERSION : cfg->version_max;
    memcpy(h->node_id, cfg->node_id, FDN__HS_NODE_ID_SIZE);
    h->incarnation = cfg->incarnation;
    h->capabilities = cfg->capabilities;
    randombytes_buf(h->nonce, sizeof h->nonce);
    /* A server's HELLO is written before it knows which session the client
     * opens or joins: it says lane 0 of session 0, and its lane count. */
    bool client = cfg->role == FDN__HS_CLIENT;
    h->session = client ? cfg->session : 0;
    h->lane = client ? cfg->lane : 0;
    h->lane_count = cfg->lane_count ? cfg->lane_count : 1;
    h->flags = client && cfg->resume ? FDN__HS_FLAG_RESUME : 0;
    h->max_fragment = cfg->limits.max_fragment;
    strcpy(h->cluster_name, cfg->cluster_name);
    h->channel_count = cfg->channel_count;
    if (cfg->channel_count)
        memcpy(h->channels, cfg->channels, cfg->channel_count * sizeof *cfg->channels);

    rc = fdn__hello_encode(h, hs->local_msg, sizeof hs->local_msg);
    if (rc < 0)
        return rc;
    hs->local_len = (size_t)rc;
    crypto_hash_sha256(hs->local_hash, hs->local_msg, hs->local_len);
    return 0;
}

int fdn__handshake_create(const struct fdn__handshake_config *cfg, struct fdn__handshake **out)
{
    if (sodium_init() < 0)
        return FDN_ERR(-EIO, "libsodium failed to initialise");
    struct fdn__handshake *hs = calloc(1, sizeof *hs);
    if (!hs)
        return FDN_ERR(-ENOMEM, "no memory for a handshake (%zu bytes)", sizeof *hs);

    hs->role = cfg->role;
    hs->state = AWAIT_HELLO;
    memcpy(hs->secret, cfg->secret, sizeof hs->secret);
    int rc = build_local_hello(hs, cfg);
    if (rc < 0) {
        fdn__handshake_destroy(hs);
        return rc;
    }
    if (hs->role == FDN__HS_CLIENT)
        queue_output(hs, hs->local_msg, hs->local_len);
    *out = hs;
    return 0;
}

void fdn__handshake_destroy(struct fdn__handshake *hs)
{
    if (!hs)
        return;
    sodium_memzero(hs, sizeof *hs);
    free(hs);
}

/* ---- The cluster secret file ------------------------------------------------ */

#define SECRET_HEX_LEN (2 * FDN__HS_SECRET_SIZE)

int fdn__secret_default_path(char *buf, size_t cap)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    int n;

    /* The XDG spec says a relative XDG_CONFIG_HOME is to be ignored. */
    if (xdg && xdg[0] == '/')
        n = snprintf(buf, cap, "%s/foundation/cluster.secret", xdg);
    else if (home && home[0] == '/')
        n = snprintf(buf, cap, "%s/.config/foundation/cluster.secret", home);
    else
        return FDN_ERR(-ENOENT, "neither XDG_CONFIG_HOME nor HOME is an absolute path");
    if (n < 0 || (size_t)n >= cap)
        return FDN_ERR(-ENAMETOOLONG, "secret path needs %d bytes, buffer has %zu", n, cap);
    return 0;
}

/* Only the owner may read the secret, as ssh insists for private keys. */
static int check_secret_file(const char *path, const struct stat *st)
{
    if (!S_ISREG(st->st_mode))
        return FDN_ERR(-EINVAL, "secret %s is not a regular file", path);
    if (st->st_uid != geteuid())
        return FDN_ERR(-EPERM, "secret %s is owned by uid %u, not by us (uid %u)", path,
                       (unsigned)st->st_uid, (unsigned)geteuid());
    if (st->st_mode & (S_IRWXG | S_IRWXO))
        return FDN_ERR(-EPERM, "secret %s has mode %04o; it must be 0600 (chmod 600 %s)", path,
                       (unsigned)(st->st_mode & 07777), path);
    return 0;
}

static int parse_secret(const char *path, const char *text, size_t len,
                        uint8_t out[FDN__HS_SECRET_SIZE])
{
    if (len == SECRET_HEX_LEN + 1 && text[SECRET_HEX_LEN] == '\n')
        len--;
    size_t bin_len = 0;
    const char *end = NULL;
    if (len != SECRET_HEX_LEN ||
        sodium_hex2bin(out, FDN__HS_SECRET_SIZE, text, len, NULL, &bin_len, &end) != 0 ||
        bin_len != FDN__HS_SECRET_SIZE || end != text + len)
        return FDN_ERR(-EINVAL, "secret %s must hold %d hex digits", path, SECRET_HEX_LEN);
    return 0;
}

/* Reads an existing secret; -ENOENT when there is none. */
static int load_secret(const char *path, uint8_t out[FDN__HS_SECRET_SIZE])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return FDN_ERR(-errno, "cannot open secret %s: %s", path, strerror(errno));

    struct stat st;
    char text[SECRET_HEX_LEN + 2];
    ssize_t n = -1;
    int rc = fstat(fd, &st) < 0 ? FDN_ERR(-errno, "cannot stat secret %s", path)
                                : check_secret_file(path, &st);
    if (rc == 0) {
        n = read(fd, text, sizeof text);
        if (n < 0)
            rc = FDN_ERR(-errno, "cannot read secret %s: %s", path, strerror(errno));
    }
    close(fd);
    if (rc == 0)
        rc = parse_secret(path, text, (size_t)n, out);
    sodium_memzero(text, sizeof text);
    return rc;
}

/* Creates every missing directory above the file, mode 0700. */
static int make_parent_dirs(const char *path)
{
    char dir[4096];
    size_t len = strlen(path);
    if (len >= sizeof dir)
        return FDN_ERR(-ENAMETOOLONG, "secret path %s too long", path);
    memcpy(dir, path, len + 1);

    for (char *slash = strchr(dir + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
            return FDN_ERR(-errno, "cannot create directory %s: %s", dir, strerror(errno));
        *slash = '/';
    }
    return 0;
}

/* Writes a new random secret into an exclusive temporary file beside path,
 * then links it into place: -EEXIST when another process got there first. */
static int create_secret(const char *path, uint8_t out[FDN__HS_SECRET_SIZE])
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= sizeof tmp)
        return FDN_ERR(-ENAMETOOLONG, "secret path %s too long", path);
    int fd = mkostemp(tmp, O_CLOEXEC);   /* O_CREAT | O_EXCL, mode 0600 */
    if (fd < 0)
        return FDN_ERR(-errno, "cannot create %s: %s", tmp, strerror(errno));

    char hex[SECRET_HEX_LEN + 1];
    randombytes_buf(out, FDN__HS_SECRET_SIZE);
    sodium_bin2hex(hex, sizeof hex, out, FDN__HS_SECRET_SIZE);
    int rc = fchmod(fd, 0600) < 0 ? -errno : fdn__write_all(fd, hex, SECRET_HEX_LEN);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    sodium_memzero(hex, sizeof hex);
    if (rc == 0 && link(tmp, path) < 0)
        rc = -errno;
    unlink(tmp);
    if (rc == -EEXIST)
        return rc;
    if (rc < 0)
        return FDN_ERR(rc, "cannot write secret %s: %s", path, strerror(-rc));
    return 0;
}

int fdn__secret_load_or_create(const char *path, uint8_t out[FDN__HS_SECRET_SIZE])
{
    if (sodium_init() < 0)
        return FDN_ERR(-EIO, "libsodium failed to initialise");
    int rc = load_secret(path, out);
    if (rc != -ENOENT)
        return rc;
    rc = make_parent_dirs(path);
    if (rc < 0)
        return rc;
    rc = create_secret(path, out);
    if (rc == -EEXIST)   /* lost a race with another creator: use its secret */
        return load_secret(path, out);
    return rc;
}
