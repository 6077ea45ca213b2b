#include "core/wire.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>

#include "base/error.h"

/* Byte offsets of the fields (see the table in wire.h). */
enum {
    AT_MAGIC = 0,
    AT_VERSION = 1,
    AT_TYPE = 2,
    AT_HDR_WORDS = 3,
    AT_FLAGS = 4,
    AT_CHANNEL = 6,
    AT_WORD = 8,
    AT_FRAG_LEN = 16,
    AT_OFFSET = 20,
    AT_TOTAL_LEN = 26,
    U48_BYTES = 6,
    AT_TRACE_ID = FDN__FRAME_HDR_SIZE + 0,
    AT_SPAN_ID = FDN__FRAME_HDR_SIZE + 16,
    AT_TRACE_FLAGS = FDN__FRAME_HDR_SIZE + 24,
    AT_TRACE_RESERVED = FDN__FRAME_HDR_SIZE + 25,
    TRACE_RESERVED_BYTES = 7,

    RESUME_AT_CHANNEL = 0,
    RESUME_AT_RESERVED = 2,
    RESUME_AT_WINDOW = 4,
    RESUME_AT_RECEIVED = 8,
};

/* Where the correlation extension sits: after the trace extension if any. */
static size_t corr_at(uint16_t flags)
{
    return FDN__FRAME_HDR_SIZE + ((flags & FDN__FRAME_TRACE) ? FDN__FRAME_TRACE_SIZE : 0);
}

/* Records why a header was rejected and evaluates to the matching errno. */
#define REJECT(reason_out, e, fmt, ...)                                          \
    (*(reason_out) = (e),                                                        \
     FDN_ERR(fdn__wire_error_errno(e), "frame rejected (%s): " fmt,              \
             fdn__wire_error_name(e), __VA_ARGS__))

static const char *const wire_error_names[FDN__WIRE_ERROR_COUNT] = {
    [FDN__WIRE_OK] = "ok",
    [FDN__WIRE_BAD_MAGIC] = "bad_magic",
    [FDN__WIRE_BAD_VERSION] = "bad_version",
    [FDN__WIRE_UNKNOWN_TYPE] = "unknown_type",
    [FDN__WIRE_UNKNOWN_FLAGS] = "unknown_flags",
    [FDN__WIRE_BAD_HEADER_LENGTH] = "bad_header_length",
    [FDN__WIRE_RESERVED_NONZERO] = "reserved_nonzero",
    [FDN__WIRE_FIELD_NOT_ZERO] = "field_not_zero",
    [FDN__WIRE_FIELD_TOO_WIDE] = "field_too_wide",
    [FDN__WIRE_CHANNEL_RANGE] = "channel_range",
    [FDN__WIRE_FRAGMENT_TOO_LARGE] = "fragment_too_large",
    [FDN__WIRE_MESSAGE_TOO_LARGE] = "message_too_large",
    [FDN__WIRE_FRAGMENT_BEYOND_END] = "fragment_beyond_end",
    [FDN__WIRE_FIRST_MISMATCH] = "first_mismatch",
    [FDN__WIRE_LAST_MISMATCH] = "last_mismatch",
    [FDN__WIRE_EMPTY_FRAGMENT] = "empty_fragment",
    [FDN__WIRE_TRACE_NOT_FIRST] = "trace_not_first",
    [FDN__WIRE_KIND_NOT_FIRST] = "kind_not_first",
    [FDN__WIRE_KIND_CONFLICT] = "kind_conflict",
    [FDN__WIRE_RESUME_LENGTH] = "resume_length",
    [FDN__WIRE_TRACE_INVALID] = "trace_invalid",
    [FDN__WIRE_PAYLOAD_NOT_ALLOWED] = "payload_not_allowed",
    [FDN__WIRE_CREDIT_ZERO] = "credit_zero",
    [FDN__WIRE_CLOSE_REASON] = "close_reason",
    [FDN__WIRE_HANDSHAKE_FRAGMENTED] = "handshake_fragmented",
    [FDN__WIRE_HANDSHAKE_TOO_LARGE] = "handshake_too_large",
    [FDN__WIRE_PACKED_FLAGS] = "packed_flags",
    [FDN__WIRE_PACKED_RECORD] = "packed_record",
};

const char *fdn__wire_error_name(enum fdn__wire_error e)
{
    if ((unsigned)e >= FDN__WIRE_ERROR_COUNT)
        return "unknown";
    return wire_error_names[e];
}

static const char *const close_reason_names[FDN__CLOSE_REASON_COUNT] = {
    [FDN__CLOSE_NORMAL] = "normal",
    [FDN__CLOSE_GOING_AWAY] = "going away",
    [FDN__CLOSE_PROTOCOL_ERROR] = "protocol error",
    [FDN__CLOSE_LIMIT_EXCEEDED] = "limit exceeded",
    [FDN__CLOSE_IDLE_TIMEOUT] = "idle timeout",
    [FDN__CLOSE_HANDSHAKE_FAILED] = "handshake failed",
    [FDN__CLOSE_SESSION_UNKNOWN] = "session unknown",
};

const char *fdn__close_reason_name(uint64_t reason)
{
    return reason < FDN__CLOSE_REASON_COUNT ? close_reason_names[reason] : "unknown";
}

int fdn__wire_error_errno(enum fdn__wire_error e)
{
    switch (e) {
    case FDN__WIRE_OK:
        return 0;
    case FDN__WIRE_BAD_VERSION:
        return -EPROTONOSUPPORT;
    case FDN__WIRE_FRAGMENT_TOO_LARGE:
    case FDN__WIRE_MESSAGE_TOO_LARGE:
    case FDN__WIRE_HANDSHAKE_TOO_LARGE:
        return -EMSGSIZE;
    default:
        return -EPROTO;
    }
}

/* ---- Validation --------------------------------------------------------- */

/* The flags a frame type may carry; *known tells whether the type exists. */
static uint16_t allowed_flags(uint8_t type, bool *known)
{
    *known = true;
    switch (type) {
    case FDN__FRAME_DATA:
        return FDN__FRAME_FIRST | FDN__FRAME_LAST | FDN__FRAME_TRACE | FDN__FRAME_REQUEST |
               FDN__FRAME_RESPONSE | FDN__FRAME_CORR | FDN__FRAME_PACKED;
    case FDN__FRAME_HANDSHAKE:
        return FDN__FRAME_FIRST | FDN__FRAME_LAST;
    case FDN__FRAME_CREDIT:
    case FDN__FRAME_ACK:
    case FDN__FRAME_RESUME:
    case FDN__FRAME_PING:
    case FDN__FRAME_PONG:
    case FDN__FRAME_CLOSE:
        return 0;
    default:
        *known = false;
        return 0;
    }
}

static int check_type_and_flags(const struct fdn__frame_hdr *h, enum fdn__wire_error *reason)
{
    bool known;
    uint16_t allowed = allowed_flags(h->type, &known);
    if (!known)
        return REJECT(reason, FDN__WIRE_UNKNOWN_TYPE, "type %u", h->type);
    if (h->flags & ~allowed)
        return REJECT(reason, FDN__WIRE_UNKNOWN_FLAGS, "flags 0x%04x on type %u (allowed 0x%04x)",
                      h->flags, h->type, allowed);
    return 0;
}

/* Where a fragment sits in its message: shared by DATA and HANDSHAKE. */
static int check_fragment_position(const struct fdn__frame_hdr *h, enum fdn__wire_error *reason)
{
    uint64_t end = h->offset + h->frag_len;   /* < 2^49: no overflow */
    bool first = h->flags & FDN__FRAME_FIRST;
    bool last = h->flags & FDN__FRAME_LAST;

    if (end > h->total_len)
        return REJECT(reason, FDN__WIRE_FRAGMENT_BEYOND_END,
                      "offset %" PRIu64 " + frag_len %" PRIu32 " > total_len %" PRIu64, h->offset,
                      h->frag_len, h->total_len);
    if (first != (h->offset == 0))
        return REJECT(reason, FDN__WIRE_FIRST_MISMATCH, "FIRST %s at offset %" PRIu64,
                      first ? "set" : "clear", h->offset);
    if (last != (end == h->total_len))
        return REJECT(reason, FDN__WIRE_LAST_MISMATCH,
                      "LAST %s for a fragment ending at %" PRIu64 " of %" PRIu64,
                      last ? "set" : "clear", end, h->total_len);
    if (h->frag_len == 0 && h->total_len != 0)
        return REJECT(reason, FDN__WIRE_EMPTY_FRAGMENT, "at offset %" PRIu64 " of %" PRIu64,
                      h->offset, h->total_len);
    return 0;
}

/* Request, response and correlation describe the message: first fragment
 * only, a message is one kind, and a response names its request. */
static int check_kind(const struct fdn__frame_hdr *h, enum fdn__wire_error *reason)
{
    const uint16_t kind = FDN__FRAME_REQUEST | FDN__FRAME_RESPONSE | FDN__FRAME_CORR;
    if ((h->flags & kind) && h->offset != 0)
        return REJECT(reason, FDN__WIRE_KIND_NOT_FIRST, "flags 0x%04x at offset %" PRIu64,
                      h->flags, h->offset);
    bool request = h->flags & FDN__FRAME_REQUEST, response = h->flags & FDN__FRAME_RESPONSE;
    bool corr = h->flags & FDN__FRAME_CORR;
    if ((request && response) || corr != response)
        return REJECT(reason, FDN__WIRE_KIND_CONFLICT, "flags 0x%04x", h->flags);
    return 0;
}

/* A PACKED frame is whole and plain: the records carry the messages, and
 * each message's length is checked against its channel as it is unpacked. */
static int check_packed(const struct fdn__frame_hdr *h, enum fdn__wire_error *reason)
{
    const uint16_t whole = FDN__FRAME_FIRST | FDN__FRAME_LAST | FDN__FRAME_PACKED;
    if (h->flags != whole)
        return REJECT(reason, FDN__WIRE_PACKED_FLAGS, "flags 0x%04x", h->flags);
    if (h->frag_len < FDN__PACKED_REC_HDR)
        return REJECT(reason, FDN__WIRE_PACKED_RECORD, "frag_len %" PRIu32, h->frag_len);
    return check_fragment_position(h, reason);
}

static int check_data(const struct fdn__frame_hdr *h, const struct fdn__wire_limits *lim,
                      enum fdn__wire_error *reason)
{
    if (h->channel > lim->max_channel)
        return REJECT(reason, FDN__WIRE_CHANNEL_RANGE, "channel %u > %u", h->channel,
                      lim->max_channel);
    if (h->frag_len > lim->max_fragment)
        return REJECT(reason, FDN__WIRE_FRAGMENT_TOO_LARGE, "frag_len %" PRIu32 " > %" PRIu32,
                      h->frag_len, lim->max_fragment);
    if (h->flags & FDN__FRAME_PACKED)
        return check_packed(h, reason);
    if (h->total_len > lim->max_message)
        return REJECT(reason, FDN__WIRE_MESSAGE_TOO_LARGE, "total_len %" PRIu64 " > %" PRIu64,
                      h->total_len, lim->max_message);
    int rc = check_fragment_position(h, reason);
    if (rc < 0)
        return rc;
    if ((h->flags & FDN__FRAME_TRACE) && h->offset != 0)
        return REJECT(reason, FDN__WIRE_TRACE_NOT_FIRST, "at offset %" PRIu64, h->offset);
    return check_kind(h, reason);
}

static int check_handshake(const struct fdn__frame_hdr *h, enum fdn__wire_error *reason)
{
    if (h->flags != (FDN__FRAME_FIRST | FDN__FRAME_LAST))
        return REJECT(reason, FDN__WIRE_HANDSHAKE_FRAGMENTED, "flags 0x%04x", h->flags);
    if (h->channel != 0 || h->msg_id != 0)
        return REJECT(reason, FDN__WIRE_FIELD_NOT_ZERO, "handshake channel %u, word %" PRIu64,
                      h->channel, h->msg_id);
    if (h->frag_len > FDN__WIRE_HANDSHAKE_MAX)
        return REJECT(reason, FDN__WIRE_HANDSHAKE_TOO_LARGE, "frag_len %" PRIu32 " > %u",
                      h->frag_len, FDN__WIRE_HANDSHAKE_MAX);
    return check_fragment_position(h, reason);
}

/* RESUME: one frame whose payload is exactly its entries. */
static int check_resume(const struct fdn__frame_hdr *h, const struct fdn__wire_limits *lim,
                        enum fdn__wire_error *reason)
{
    if (h->channel != 0)
        return REJECT(reason, FDN__WIRE_FIELD_NOT_ZERO, "resume with channel %u", h->channel);
    uint64_t n = h->resume_entries;
    if (n == 0 || n > (uint64_t)lim->max_channel + 1 ||
        (uint64_t)h->frag_len != n * FDN__RESUME_ENTRY_SIZE)
        return REJECT(reason, FDN__WIRE_RESUME_LENGTH, "%" PRIu64 " entries in %" PRIu32
                      " bytes (max_channel %u)", n, h->frag_len, lim->max_channel);
    if (h->offset != 0 || h->total_len != h->frag_len)
        return REJECT(reason, FDN__WIRE_FIELD_NOT_ZERO,
                      "resume with offset %" PRIu64 ", total_len %" PRIu64, h->offset,
                      h->total_len);
    return 0;
}

/* CREDIT, ACK, PING, PONG and CLOSE: a header and nothing else. */
static int check_control(const struct fdn__frame_hdr *h, const struct fdn__wire_limits *lim,
                         enum fdn__wire_error *reason)
{
    if (h->frag_len != 0)
        return REJECT(reason, FDN__WIRE_PAYLOAD_NOT_ALLOWED, "type %u with frag_len %" PRIu32,
                      h->type, h->frag_len);
    if (h->offset != 0 || h->total_len != 0)
        return REJECT(reason, FDN__WIRE_FIELD_NOT_ZERO,
                      "type %u with offset %" PRIu64 ", total_len %" PRIu64, h->type, h->offset,
                      h->total_len);
    if (h->type == FDN__FRAME_CREDIT) {
        if (h->channel > lim->max_channel)
            return REJECT(reason, FDN__WIRE_CHANNEL_RANGE, "credit for channel %u > %u",
                          h->channel, lim->max_channel);
        if (h->credit_bytes == 0)
            return REJECT(reason, FDN__WIRE_CREDIT_ZERO, "channel %u", h->channel);
        return 0;
    }
    if (h->type == FDN__FRAME_ACK) {
        if (h->channel > lim->max_channel)
            return REJECT(reason, FDN__WIRE_CHANNEL_RANGE, "ack for channel %u > %u", h->channel,
                          lim->max_channel);
        return 0;
    }
    if (h->channel != 0)
        return REJECT(reason, FDN__WIRE_FIELD_NOT_ZERO, "type %u with channel %u", h->type,
                      h->channel);
    if (h->type == FDN__FRAME_CLOSE && h->close_reason >= FDN__CLOSE_REASON_COUNT)
        return REJECT(reason, FDN__WIRE_CLOSE_REASON, "reason %" PRIu64, h->close_reason);
    return 0;
}

/* Every rule that concerns the fixed header's values; type and flags known. */
static int check_semantics(const struct fdn__frame_hdr *h, const struct fdn__wire_limits *lim,
                           enum fdn__wire_error *reason)
{
    switch (h->type) {
    case FDN__FRAME_DATA:
        return check_data(h, lim, reason);
    case FDN__FRAME_HANDSHAKE:
        return check_handshake(h, reason);
    case FDN__FRAME_RESUME:
        return check_resume(h, lim, reason);
    default:
        return check_control(h, lim, reason);
    }
}

static int check_trace(const struct fdn__trace_ctx *t, enum fdn__wire_error *reason)
{
    if (!fdn__trace_ctx_valid(t))
        return REJECT(reason, FDN__WIRE_TRACE_INVALID, "%s", "all-zero trace id or span id");
    return 0;
}

int fdn__frame_validate(const struct fdn__frame_hdr *h, const struct fdn__wire_limits *lim,
                        enum fdn__wire_error *reason)
{
    *reason = FDN__WIRE_OK;
    int rc = check_type_and_flags(h, reason);
    if (rc < 0)
        return rc;
    if (h->offset > FDN__WIRE_MAX_U48 || h->total_len > FDN__WIRE_MAX_U48)
        return REJECT(reason, FDN__WIRE_FIELD_TOO_WIDE,
                      "offset %" PRIu64 " or total_len %" PRIu64 " over 48 bits", h->offset,
                      h->total_len);
    rc = check_semantics(h, lim, reason);
    if (rc < 0)
        return rc;
    if (h->flags & FDN__FRAME_TRACE)
        return check_trace(&h->trace, reason);
    return 0;
}

int fdn__packed_next(const uint8_t *payload, uint32_t len, uint32_t *pos, uint32_t *at,
                     uint32_t *msg_len, enum fdn__wire_error *reason)
{
    *reason = FDN__WIRE_OK;
    uint32_t p = *pos;
    if (p >= len)
        return len == 0 ? REJECT(reason, FDN__WIRE_PACKED_RECORD, "%s", "empty payload") : 0;
    if (len - p < FDN__PACKED_REC_HDR)
        return REJECT(reason, FDN__WIRE_PACKED_RECORD, "%" PRIu32 " bytes left at %" PRIu32,
                      len - p, p);
    uint32_t n = fdn__load_le32(payload + p);   /* read once: the copy is what counts */
    p += FDN__PACKED_REC_HDR;
    if (n > len - p)
        return REJECT(reason, FDN__WIRE_PACKED_RECORD,
                      "record of %" PRIu32 " bytes at %" PRIu32 ", %" PRIu32 " left", n,
                      p - FDN__PACKED_REC_HDR, len - p);
    *at = p;
    *msg_len = n;
    *pos = p + n;
    return 1;
}

/* ---- Encoding and decoding ---------------------------------------------- */

size_t fdn__frame_encode(const struct fdn__frame_hdr *h, uint8_t *buf)
{
    assert(h->offset <= FDN__WIRE_MAX_U48 && h->total_len <= FDN__WIRE_MAX_U48);
    size_t size = fdn__frame_hdr_size(h);

    buf[AT_MAGIC] = FDN__WIRE_MAGIC;
    buf[AT_VERSION] = FDN__WIRE_VERSION;
    buf[AT_TYPE] = h->type;
    buf[AT_HDR_WORDS] = (uint8_t)(size / 8);
    fdn__store_le16(buf + AT_FLAGS, h->flags);
    fdn__store_le16(buf + AT_CHANNEL, h->channel);
    fdn__store_le64(buf + AT_WORD, h->msg_id);
    fdn__store_le32(buf + AT_FRAG_LEN, h->frag_len);
    fdn__store_le(buf + AT_OFFSET, h->offset, U48_BYTES);
    fdn__store_le(buf + AT_TOTAL_LEN, h->total_len, U48_BYTES);
    if (h->flags & FDN__FRAME_TRACE) {
        memcpy(buf + AT_TRACE_ID, h->trace.trace_id, sizeof h->trace.trace_id);
        memcpy(buf + AT_SPAN_ID, h->trace.span_id, sizeof h->trace.span_id);
        buf[AT_TRACE_FLAGS] = h->trace.flags;
        memset(buf + AT_TRACE_RESERVED, 0, TRACE_RESERVED_BYTES);
    }
    if (h->flags & FDN__FRAME_CORR)
        fdn__store_le64(buf + corr_at(h->flags), h->corr_id);
    return size;
}

static void parse_fixed(const uint8_t *buf, struct fdn__frame_hdr *h)
{
    h->type = buf[AT_TYPE];
    h->flags = fdn__load_le16(buf + AT_FLAGS);
    h->channel = fdn__load_le16(buf + AT_CHANNEL);
    h->msg_id = fdn__load_le64(buf + AT_WORD);
    h->frag_len = fdn__load_le32(buf + AT_FRAG_LEN);
    h->offset = fdn__load_le(buf + AT_OFFSET, U48_BYTES);
    h->total_len = fdn__load_le(buf + AT_TOTAL_LEN, U48_BYTES);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t any = 0;
    for (size_t i = 0; i < n; i++)
        any |= p[i];
    return any == 0;
}

/* The trace extension at buf[32..64), which the caller has checked is there. */
static int parse_trace(const uint8_t *buf, struct fdn__trace_ctx *t, enum fdn__wire_error *reason)
{
    if (!all_zero(buf + AT_TRACE_RESERVED, TRACE_RESERVED_BYTES))
        return REJECT(reason, FDN__WIRE_RESERVED_NONZERO, "%s", "trace extension padding");
    memcpy(t->trace_id, buf + AT_TRACE_ID, sizeof t->trace_id);
    memcpy(t->span_id, buf + AT_SPAN_ID, sizeof t->span_id);
    t->flags = buf[AT_TRACE_FLAGS];
    return check_trace(t, reason);
}

/* Magic and version are judged as soon as their bytes are in, so a peer
 * speaking something else fails on its first bytes, not after 32. */
static int check_preamble(const uint8_t *buf, size_t len, enum fdn__wire_error *reason)
{
    if (len > AT_MAGIC && buf[AT_MAGIC] != FDN__WIRE_MAGIC)
        return REJECT(reason, FDN__WIRE_BAD_MAGIC, "first byte 0x%02x", buf[AT_MAGIC]);
    if (len > AT_VERSION && buf[AT_VERSION] != FDN__WIRE_VERSION)
        return REJECT(reason, FDN__WIRE_BAD_VERSION, "version %u, this node speaks %u",
                      buf[AT_VERSION], FDN__WIRE_VERSION);
    return 0;
}

int fdn__frame_decode(const uint8_t *buf, size_t len, const struct fdn__wire_limits *lim,
                      struct fdn__frame_hdr *out, enum fdn__wire_error *reason)
{
    *reason = FDN__WIRE_OK;
    int rc = check_preamble(buf, len, reason);
    if (rc < 0)
        return rc;
    if (len < FDN__FRAME_HDR_SIZE)
        return 0;

    /* Straight into *out (meaningful only on success): a header built on
     * the stack and copied out cost a tenth of a small message's path, in
     * stores forwarded to wider loads. */
    struct fdn__frame_hdr *h = out;
    parse_fixed(buf, h);
    rc = check_type_and_flags(h, reason);
    if (rc < 0)
        return rc;
    size_t size = fdn__frame_hdr_size(h);
    if ((size_t)buf[AT_HDR_WORDS] * 8 != size)
        return REJECT(reason, FDN__WIRE_BAD_HEADER_LENGTH, "hdr_words %u, flags imply %zu",
                      buf[AT_HDR_WORDS], size / 8);
    rc = check_semantics(h, lim, reason);
    if (rc < 0)
        return rc;
    if (len < size)
        return 0;
    if (h->flags & FDN__FRAME_TRACE) {
        rc = parse_trace(buf, &h->trace, reason);
        if (rc < 0)
            return rc;
    } else {
        memset(&h->trace, 0, sizeof h->trace);
    }
    h->corr_id = (h->flags & FDN__FRAME_CORR) ? fdn__load_le64(buf + corr_at(h->flags)) : 0;
    return (int)size;
}

/* ---- RESUME entries ----------------------------------------------------- */

void fdn__resume_encode(const struct fdn__resume_entry *e, size_t count, uint8_t *buf)
{
    for (size_t i = 0; i < count; i++, buf += FDN__RESUME_ENTRY_SIZE) {
        fdn__store_le16(buf + RESUME_AT_CHANNEL, e[i].channel);
        fdn__store_le16(buf + RESUME_AT_RESERVED, 0);
        fdn__store_le32(buf + RESUME_AT_WINDOW, e[i].window);
        fdn__store_le64(buf + RESUME_AT_RECEIVED, e[i].received);
    }
}

int fdn__resume_decode(const uint8_t *payload, size_t i, const struct fdn__wire_limits *lim,
                       struct fdn__resume_entry *out)
{
    const uint8_t *p = payload + i * FDN__RESUME_ENTRY_SIZE;
    uint16_t channel = fdn__load_le16(p + RESUME_AT_CHANNEL);
    if (channel > lim->max_channel)
        return FDN_ERR(-EPROTO, "resume entry %zu: channel %u > %u", i, channel,
                       lim->max_channel);
    if (fdn__load_le16(p + RESUME_AT_RESERVED) != 0)
        return FDN_ERR(-EPROTO, "resume entry %zu: reserved bytes not zero", i);
    *out = (struct fdn__resume_entry){
        .channel = channel,
        .window = fdn__load_le32(p + RESUME_AT_WINDOW),
        .received = fdn__load_le64(p + RESUME_AT_RECEIVED),
    };
    return 0;
}

/* ---- W3C traceparent ---------------------------------------------------- */

/* Field positions in "vv-<32 hex trace id>-<16 hex parent id>-<2 hex flags>". */
enum {
    TP_VERSION = 0,
    TP_TRACE_ID = 3,
    TP_SPAN_ID = 36,
    TP_FLAGS = 53,
};

bool fdn__trace_ctx_valid(const struct fdn__trace_ctx *ctx)
{
    return !all_zero(ctx->trace_id, sizeof ctx->trace_id) &&
           !all_zero(ctx->span_id, sizeof ctx->span_id);
}

/* Value of a lower-case hex digit, or -1: the spec forbids upper case. */
static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes 2 * n hex digits into n bytes; false on any other character. */
static bool parse_hex(const char *text, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static bool dashes_in_place(const char *text)
{
    return text[TP_TRACE_ID - 1] == '-' && text[TP_SPAN_ID - 1] == '-' &&
           text[TP_FLAGS - 1] == '-';
}

int fdn__traceparent_parse(const char *text, size_t len, struct fdn__trace_ctx *out)
{
    uint8_t version;
    struct fdn__trace_ctx ctx;

    if (len < FDN__TRACEPARENT_LEN)
        return FDN_ERR(-EINVAL, "traceparent of %zu chars, need %u", len, FDN__TRACEPARENT_LEN);
    if (!parse_hex(text + TP_VERSION, &version, 1) || version == 0xff)
        return FDN_ERR(-EINVAL, "traceparent version \"%.2s\" invalid", text);
    /* Version 00 is exactly 55 chars; later versions may append fields. */
    if (len > FDN__TRACEPARENT_LEN && (version == 0 || text[FDN__TRACEPARENT_LEN] != '-'))
        return FDN_ERR(-EINVAL, "traceparent version %02x with trailing data", version);
    if (!dashes_in_place(text) || !parse_hex(text + TP_TRACE_ID, ctx.trace_id, 16) ||
        !parse_hex(text + TP_SPAN_ID, ctx.span_id, 8) ||
        !parse_hex(text + TP_FLAGS, &ctx.flags, 1))
        return FDN_ERR(-EINVAL, "traceparent \"%.55s\" is not vv-<32>-<16>-<2> lower-case hex",
                       text);
    if (!fdn__trace_ctx_valid(&ctx))
        return FDN_ERR(-EINVAL, "traceparent with an all-zero trace id or parent id");
    *out = ctx;
    return 0;
}

static char *format_hex(char *p, const uint8_t *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        *p++ = digits[bytes[i] >> 4];
        *p++ = digits[bytes[i] & 0xf];
    }
    return p;
}

void fdn__traceparent_format(const struct fdn__trace_ctx *ctx, char out[FDN__TRACEPARENT_LEN + 1])
{
    char *p = out;
    *p++ = '0';
    *p++ = '0';
    *p++ = '-';
    p = format_hex(p, ctx->trace_id, sizeof ctx->trace_id);
    *p++ = '-';
    p = format_hex(p, ctx->span_id, sizeof ctx->span_id);
    *p++ = '-';
    p = format_hex(p, &ctx->flags, 1);
    *p = '\0';
}
