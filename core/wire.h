/* Wire protocol version 1: the frame header codec. Internal. Pure functions,
 * no I/O, no allocation.
 *
 * Every frame is a header followed by frag_len payload bytes. All integers
 * are little-endian. The fixed header is 32 bytes:
 *
 *   offset size field       meaning
 *   ------ ---- ----------- ------------------------------------------------
 *        0    1 magic       0xFD (not a valid first byte of ASCII, UTF-8 or
 *                           TLS, so a stray client fails on its first byte)
 *        1    1 version     1
 *        2    1 type        enum fdn__frame_type
 *        3    1 hdr_words   header length in 8-byte words, extensions
 *                           included: 4, plus 4 with the TRACE extension,
 *                           plus 1 with the CORR extension (4, 5, 8 or 9).
 *                           It must equal what the flags imply; it lets
 *                           capture tools find the payload without knowing
 *                           the flags
 *        4    2 flags       FDN__FRAME_* bits; each type allows a subset
 *        6    2 channel     channel id (DATA, CREDIT, ACK), else 0
 *        8    8 word        per type: DATA the message's sequence number,
 *                           CREDIT bytes granted, ACK messages received,
 *                           PING/PONG opaque token, CLOSE reason, RESUME
 *                           entry count, HANDSHAKE 0
 *       16    4 frag_len    payload bytes after the header
 *       20    6 offset      (u48) position of this fragment in its message
 *       26    6 total_len   (u48) length of the whole message
 *
 * offset and total_len are 48-bit so that the header keeps the sequence
 * number, fragment length and both positions in 32 bytes; a message may
 * therefore be up to 2^48 - 1 bytes (256 TiB), far beyond any configured
 * max_message.
 *
 * Sequence numbers. A DATA message's word is its sequence number on its
 * channel in its direction: 0 for the first message of a session, then +1 per
 * message (requests and responses included); every fragment of a message
 * carries it. A session survives its connections (core/node_internal.h,
 * "Session resumption"), so the numbers do too: the receiver checks them, and
 * cumulative ACKs and the RESUME exchange refer to them.
 *
 * Extensions follow the fixed header in the order of their flag bits, the
 * lowest first: TRACE, then CORR. With FDN__FRAME_TRACE a 32-byte extension
 * carries a W3C trace context (ids in the byte order they are printed in):
 *
 *       +0   16 trace_id    must not be all zero
 *      +16    8 span_id     parent span id; must not be all zero
 *      +24    1 trace_flags W3C trace-flags (bit 0: sampled)
 *      +25    7 reserved    zero
 *
 * With FDN__FRAME_CORR an 8-byte extension (at 32, or at 64 after TRACE)
 * carries the correlation id of a response: the sequence number, on the same
 * channel in the other direction, of the request it answers:
 *
 *       +0    8 corr_id     any value
 *
 * PACKED DATA payload: several whole messages of the channel, consecutive
 * in its sequence (the first has the frame's word as its number, the next
 * word + 1, and so on), each as a record of its length and its bytes, back
 * to back, with no padding:
 *
 *       +0    4 len         bytes of the message (0 allowed)
 *       +4  len bytes
 *
 * A sender packs only when both ends offered FDN__CAP_PACKED in the
 * handshake, and only plain messages (no request, response or trace).
 *
 * RESUME payload: word entries of 16 bytes, one per channel, in any order:
 *
 *       +0    2 channel     <= max_channel, each at most once
 *       +2    2 reserved    zero
 *       +4    4 window      bytes of the channel's credit the sender may use
 *                           now (the receiver's window minus what it holds)
 *       +8    8 received    messages of the channel received complete: the
 *                           sequence number the receiver expects next
 *
 * Rules per type (anything else is rejected, naming the broken rule):
 *   DATA       flags FIRST, LAST, TRACE, REQUEST, RESPONSE, CORR, PACKED;
 *              channel <= max_channel; frag_len <= max_fragment;
 *              total_len <= max_message; offset + frag_len <= total_len;
 *              FIRST iff offset == 0; LAST iff offset + frag_len ==
 *              total_len; frag_len == 0 only for the empty message
 *              (total_len 0, FIRST|LAST); TRACE, REQUEST, RESPONSE and CORR
 *              only on the FIRST fragment (they describe the message);
 *              REQUEST and RESPONSE not both; CORR iff RESPONSE.
 *              PACKED: exactly FIRST|LAST|PACKED, frag_len >= 4 (one
 *              record at least); max_message bounds each message in it,
 *              not the frame (reassembly checks each, per channel); the
 *              records themselves are checked by fdn__packed_next().
 *   CREDIT     channel <= max_channel, word = bytes granted (> 0);
 *              no flags, no payload, offset and total_len 0.
 *   ACK        channel <= max_channel, word = messages received complete
 *              (any value, 0 included); otherwise as CREDIT.
 *   PING, PONG word = opaque token (a PONG echoes its PING's); channel,
 *              flags, payload, offset and total_len all 0.
 *   CLOSE      word = enum fdn__close_reason; otherwise as PING.
 *   RESUME     no flags, channel 0, word = entries (1..max_channel + 1),
 *              frag_len == total_len == 16 * word, offset 0 (one frame,
 *              never fragmented). The entries themselves are checked by
 *              fdn__resume_decode().
 *   HANDSHAKE  exactly FIRST|LAST (a handshake message is never
 *              fragmented), frag_len <= FDN__WIRE_HANDSHAKE_MAX whatever the
 *              limits (they are not negotiated yet), channel and word 0,
 *              offset 0, total_len == frag_len. Handshake frames always use
 *              this version-1 header; the version the handshake agrees on
 *              governs the frames after it. */
#ifndef FDN_CORE_WIRE_H
#define FDN_CORE_WIRE_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FDN__WIRE_MAGIC 0xFDu
#define FDN__WIRE_VERSION 1u

#define FDN__FRAME_HDR_SIZE 32u
#define FDN__FRAME_TRACE_SIZE 32u
#define FDN__FRAME_CORR_SIZE 8u
#define FDN__FRAME_MAX_HDR_SIZE (FDN__FRAME_HDR_SIZE + FDN__FRAME_TRACE_SIZE + FDN__FRAME_CORR_SIZE)
#define FDN__RESUME_ENTRY_SIZE 16u

/* Largest value the 48-bit offset and total_len fields hold. */
#define FDN__WIRE_MAX_U48 ((UINT64_C(1) << 48) - 1)

/* Largest handshake message (a HELLO with 256 channels needs 13 454 bytes). */
#define FDN__WIRE_HANDSHAKE_MAX 16384u

enum fdn__frame_type {
    FDN__FRAME_DATA = 1,
    FDN__FRAME_CREDIT = 2,
    FDN__FRAME_PING = 3,
    FDN__FRAME_PONG = 4,
    FDN__FRAME_CLOSE = 5,
    FDN__FRAME_HANDSHAKE = 6,
    FDN__FRAME_ACK = 7,
    FDN__FRAME_RESUME = 8,
};

/* Flag bits. Bits not listed are reserved and must be zero. */
#define FDN__FRAME_FIRST 0x0001u   /* first fragment of the message */
#define FDN__FRAME_LAST 0x0002u    /* last fragment of the message */
#define FDN__FRAME_TRACE 0x0004u   /* the trace extension follows the header */
#define FDN__FRAME_REQUEST 0x0008u /* the message is a request (its id: its sequence number) */
#define FDN__FRAME_RESPONSE 0x0010u /* the message answers the request named by CORR */
#define FDN__FRAME_CORR 0x0020u    /* the correlation extension follows (after TRACE) */
#define FDN__FRAME_PACKED 0x0040u  /* the payload is several whole messages (see above) */

/* Bytes a PACKED record adds before its message. */
#define FDN__PACKED_REC_HDR 4u

/* Handshake capability bits (core/handshake.h, HELLO capabilities). */
#define FDN__CAP_PACKED (UINT64_C(1) << 0)  /* decodes PACKED frames: send them to me */

/* Why a connection is closed, carried by CLOSE frames. */
enum fdn__close_reason {
    FDN__CLOSE_NORMAL = 0,          /* orderly shutdown of this connection */
    FDN__CLOSE_GOING_AWAY = 1,      /* the node is shutting down */
    FDN__CLOSE_PROTOCOL_ERROR = 2,  /* the peer sent a frame that failed decoding */
    FDN__CLOSE_LIMIT_EXCEEDED = 3,  /* credit, memory or size limit broken */
    FDN__CLOSE_IDLE_TIMEOUT = 4,    /* nothing received on this connection for the idle
                                       timeout, pings included: a lost connection, which
                                       the session resumes from, not its end */
    FDN__CLOSE_HANDSHAKE_FAILED = 5,/* version, cluster or channel mismatch */
    FDN__CLOSE_SESSION_UNKNOWN = 6, /* a resumption named a session that is gone */
    FDN__CLOSE_REASON_COUNT
};

/* W3C trace context (https://www.w3.org/TR/trace-context/), binary form. */
struct fdn__trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];     /* the parent span, "parent-id" in traceparent */
    uint8_t flags;          /* trace-flags */
};

/* What the receiver accepts. Configuration: the codec checks, never assumes. */
struct fdn__wire_limits {
    uint32_t max_fragment;  /* largest DATA frag_len */
    uint64_t max_message;   /* largest DATA total_len */
    uint16_t max_channel;   /* largest channel id in DATA, CREDIT, ACK and RESUME */
};

/* A decoded header, or one to encode. The 64-bit word at offset 8 has one
 * name per frame type; they share storage. */
struct fdn__frame_hdr {
    uint8_t type;           /* enum fdn__frame_type */
    uint16_t flags;         /* FDN__FRAME_* */
    uint16_t channel;
    uint32_t frag_len;
    union {
        uint64_t seq;           /* DATA: the message's sequence number */
        uint64_t msg_id;        /* DATA, the same (older name) */
        uint64_t credit_bytes;  /* CREDIT */
        uint64_t acked;         /* ACK: messages received complete */
        uint64_t resume_entries; /* RESUME */
        uint64_t ping_token;    /* PING, PONG */
        uint64_t close_reason;  /* CLOSE: enum fdn__close_reason */
    };
    uint64_t offset;        /* < 2^48 */
    uint64_t total_len;     /* < 2^48 */
    struct fdn__trace_ctx trace;  /* meaningful only with FDN__FRAME_TRACE */
    uint64_t corr_id;       /* meaningful only with FDN__FRAME_CORR */
};

/* Exactly what a header broke, for per-reason counters and logs. */
enum fdn__wire_error {
    FDN__WIRE_OK = 0,
    FDN__WIRE_BAD_MAGIC,            /* first byte is not 0xFD */
    FDN__WIRE_BAD_VERSION,          /* version byte is not 1 */
    FDN__WIRE_UNKNOWN_TYPE,
    FDN__WIRE_UNKNOWN_FLAGS,        /* a flag this type does not allow */
    FDN__WIRE_BAD_HEADER_LENGTH,    /* hdr_words disagrees with the flags */
    FDN__WIRE_RESERVED_NONZERO,     /* trace extension padding not zero */
    FDN__WIRE_FIELD_NOT_ZERO,       /* a field this type does not use is set */
    FDN__WIRE_FIELD_TOO_WIDE,       /* offset or total_len >= 2^48 (encoder side) */
    FDN__WIRE_CHANNEL_RANGE,        /* channel > max_channel */
    FDN__WIRE_FRAGMENT_TOO_LARGE,   /* frag_len > max_fragment */
    FDN__WIRE_MESSAGE_TOO_LARGE,    /* total_len > max_message */
    FDN__WIRE_FRAGMENT_BEYOND_END,  /* offset + frag_len > total_len */
    FDN__WIRE_FIRST_MISMATCH,       /* FIRST set but offset != 0, or the reverse */
    FDN__WIRE_LAST_MISMATCH,        /* LAST set but the fragment does not end
                                       the message, or the reverse */
    FDN__WIRE_EMPTY_FRAGMENT,       /* frag_len 0 in a non-empty message */
    FDN__WIRE_TRACE_NOT_FIRST,      /* TRACE on a fragment other than the first */
    FDN__WIRE_KIND_NOT_FIRST,       /* REQUEST, RESPONSE or CORR not on the first
                                       fragment */
    FDN__WIRE_KIND_CONFLICT,        /* REQUEST with RESPONSE, or CORR without
                                       RESPONSE or the reverse */
    FDN__WIRE_RESUME_LENGTH,        /* RESUME entry count 0, over max_channel + 1,
                                       or not matching frag_len */
    FDN__WIRE_TRACE_INVALID,        /* all-zero trace id or span id */
    FDN__WIRE_PAYLOAD_NOT_ALLOWED,  /* CREDIT, PING, PONG or CLOSE with payload */
    FDN__WIRE_CREDIT_ZERO,          /* CREDIT granting 0 bytes */
    FDN__WIRE_CLOSE_REASON,         /* unknown CLOSE reason */
    FDN__WIRE_HANDSHAKE_FRAGMENTED, /* HANDSHAKE without exactly FIRST|LAST */
    FDN__WIRE_HANDSHAKE_TOO_LARGE,  /* HANDSHAKE frag_len > FDN__WIRE_HANDSHAKE_MAX */
    FDN__WIRE_PACKED_FLAGS,         /* PACKED without exactly FIRST|LAST beside it */
    FDN__WIRE_PACKED_RECORD,        /* a PACKED payload shorter than a record, or a
                                       record running past the payload's end */
    FDN__WIRE_ERROR_COUNT
};

/* Bytes the encoded header takes: 32, plus 32 with FDN__FRAME_TRACE, plus 8
 * with FDN__FRAME_CORR. */
static inline size_t fdn__frame_hdr_size(const struct fdn__frame_hdr *h)
{
    return FDN__FRAME_HDR_SIZE + ((h->flags & FDN__FRAME_TRACE) ? FDN__FRAME_TRACE_SIZE : 0) +
           ((h->flags & FDN__FRAME_CORR) ? FDN__FRAME_CORR_SIZE : 0);
}

/* Writes h's header, fdn__frame_hdr_size(h) bytes, to buf, which the caller
 * guarantees is that large, and returns the size. h must pass
 * fdn__frame_validate() under the receiver's limits: the encoder checks
 * nothing (it is on the send path), it only asserts the encodable ranges. */
size_t fdn__frame_encode(const struct fdn__frame_hdr *h, uint8_t *buf);

/* Decodes the header at buf[0..len) without reading past len. Returns the
 * header bytes consumed (32, 40, 64 or 72; the payload follows), 0 when len is too
 * short to decide (read more and call again), or a negative errno when the
 * bytes can never become a valid header: -EPROTONOSUPPORT for another
 * version, -EMSGSIZE for a size over the limits, -EPROTO for anything else
 * malformed. *reason is set in every case (FDN__WIRE_OK unless an error);
 * errors also record a detail for fdn_errmsg(). A bad magic or version is
 * reported as soon as those bytes arrive. *out is meaningful only on
 * success. buf may be memory a peer can change meanwhile (an shm ring):
 * each field is copied into *out once and the copy is what is checked and
 * returned, so keep it that way. */
int fdn__frame_decode(const uint8_t *buf, size_t len, const struct fdn__wire_limits *lim,
                      struct fdn__frame_hdr *out, enum fdn__wire_error *reason);

/* Checks h against every rule above (as the decoder does), so a sender can
 * verify a header before encoding it. Returns 0 or the negative errno that
 * decoding it would give, with *reason set and fdn_errmsg() recorded. */
int fdn__frame_validate(const struct fdn__frame_hdr *h, const struct fdn__wire_limits *lim,
                        enum fdn__wire_error *reason);

/* Walks the records of a PACKED payload of len bytes. *pos is where the
 * next record starts (0 at first). Returns 1 with the message at
 * payload[*at .. *at + *msg_len) and *pos moved past it, 0 at the end of the
 * payload, or -EPROTO (*reason FDN__WIRE_PACKED_RECORD, fdn_errmsg() says
 * why) for a record cut short, or an empty payload. payload may change
 * meanwhile (an shm ring): each length is read once, checked and returned
 * as read. */
int fdn__packed_next(const uint8_t *payload, uint32_t len, uint32_t *pos, uint32_t *at,
                     uint32_t *msg_len, enum fdn__wire_error *reason);

/* One RESUME entry (see the payload layout above). */
struct fdn__resume_entry {
    uint16_t channel;
    uint32_t window;
    uint64_t received;
};

/* Writes count entries (16 bytes each) into buf. */
void fdn__resume_encode(const struct fdn__resume_entry *e, size_t count, uint8_t *buf);

/* Decodes entry i of a RESUME payload whose header passed the decoder.
 * Returns 0, or -EPROTO (fdn_errmsg() says why) for a channel over
 * max_channel or reserved bytes not zero. Duplicates are the caller's to
 * find: it knows its channels. */
int fdn__resume_decode(const uint8_t *payload, size_t i, const struct fdn__wire_limits *lim,
                       struct fdn__resume_entry *out);

/* Stable lower-case name ("fragment_too_large"), for counters and logs;
 * "unknown" for values outside the enum. */
const char *fdn__wire_error_name(enum fdn__wire_error e);

/* A CLOSE reason in words ("idle timeout"), for logs; "unknown" outside
 * the enum. */
const char *fdn__close_reason_name(uint64_t reason);

/* The errno a decoding failure with this reason returns (0 for FDN__WIRE_OK). */
int fdn__wire_error_errno(enum fdn__wire_error e);

/* Text form of a trace context: "00-<32 hex>-<16 hex>-<2 hex>", 55 chars. */
#define FDN__TRACEPARENT_LEN 55u

/* Parses a traceparent header value of len bytes (no NUL needed) as the W3C
 * spec says: lower-case hex only; version ff is invalid; version 00 must be
 * exactly 55 chars, while a later version may append "-..." fields, which
 * are ignored; all-zero trace id or parent id is invalid. Returns 0 or
 * -EINVAL (*out untouched). */
int fdn__traceparent_parse(const char *text, size_t len, struct fdn__trace_ctx *out);

/* Writes the version-00 traceparent of ctx and a NUL into out. */
void fdn__traceparent_format(const struct fdn__trace_ctx *ctx, char out[FDN__TRACEPARENT_LEN + 1]);

/* True when neither id is all zero, i.e. the context may be propagated. */
bool fdn__trace_ctx_valid(const struct fdn__trace_ctx *ctx);

/* ---- Little-endian access, shared by the wire and handshake codecs ------ */

/* Loads n <= 8 bytes as an unsigned integer. */
static inline uint64_t fdn__load_le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    memcpy(&v, p, n);   /* the first n bytes in memory are the low ones once converted */
    return le64toh(v);
}

static inline uint16_t fdn__load_le16(const uint8_t *p) { return (uint16_t)fdn__load_le(p, 2); }
static inline uint32_t fdn__load_le32(const uint8_t *p) { return (uint32_t)fdn__load_le(p, 4); }
static inline uint64_t fdn__load_le64(const uint8_t *p) { return fdn__load_le(p, 8); }

/* Stores the low n <= 8 bytes of v. */
static inline void fdn__store_le(uint8_t *p, uint64_t v, size_t n)
{
    v = htole64(v);
    memcpy(p, &v, n);
}

static inline void fdn__store_le16(uint8_t *p, uint16_t v) { fdn__store_le(p, v, 2); }
static inline void fdn__store_le32(uint8_t *p, uint32_t v) { fdn__store_le(p, v, 4); }
static inline void fdn__store_le64(uint8_t *p, uint64_t v) { fdn__store_le(p, v, 8); }

#endif
