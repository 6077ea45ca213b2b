/* Tests of the frame header codec (core/wire.c): the byte layout against a
 * hand-written frame, seeded random round trips of every frame type, every
 * truncation of valid headers (need more, never an error), one case per
 * validation rule with its exact reason, and the W3C traceparent helpers. */
#include "core/wire.h"

#include <errno.h>

#include "base/compiler.h"
#include "test.h"

/* ---- Helpers ------------------------------------------------------------ */

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi]. */
static uint64_t random_between(uint64_t *state, uint64_t lo, uint64_t hi)
{
    uint64_t span = hi - lo + 1;
    return span == 0 ? next_random(state) : lo + next_random(state) % span;
}

static const struct fdn__wire_limits limits = {
    .max_fragment = 65536,
    .max_message = UINT64_C(1) << 30,
    .max_channel = 255,
};

/* Limits that let every encodable size through, to exercise all 48 bits. */
static const struct fdn__wire_limits wide_limits = {
    .max_fragment = UINT32_MAX,
    .max_message = FDN__WIRE_MAX_U48,
    .max_channel = UINT16_MAX,
};

static void random_trace(uint64_t *rng, struct fdn__trace_ctx *t)
{
    for (size_t i = 0; i < sizeof t->trace_id; i++)
        t->trace_id[i] = (uint8_t)next_random(rng);
    for (size_t i = 0; i < sizeof t->span_id; i++)
        t->span_id[i] = (uint8_t)next_random(rng);
    t->trace_id[0] |= 1;   /* never all zero */
    t->span_id[0] |= 1;
    t->flags = (uint8_t)next_random(rng);
}

static struct fdn__frame_hdr random_data(uint64_t *rng, const struct fdn__wire_limits *lim)
{
    struct fdn__frame_hdr h = {.type = FDN__FRAME_DATA};
    h.channel = (uint16_t)random_between(rng, 0, lim->max_channel);
    h.msg_id = next_random(rng);
    h.total_len = next_random(rng) % 8 == 0 ? 0 : random_between(rng, 1, lim->max_message);
    if (h.total_len > 0) {
        uint64_t most = h.total_len < lim->max_fragment ? h.total_len : lim->max_fragment;
        h.frag_len = (uint32_t)random_between(rng, 1, most);
        switch (next_random(rng) % 3) {   /* make first and last fragments common */
        case 0:
            h.offset = 0;
            break;
        case 1:
            h.offset = h.total_len - h.frag_len;
            break;
        default:
            h.offset = random_between(rng, 0, h.total_len - h.frag_len);
        }
    }
    if (h.offset == 0)
        h.flags |= FDN__FRAME_FIRST;
    if (h.offset + h.frag_len == h.total_len)
        h.flags |= FDN__FRAME_LAST;
    if (h.offset == 0 && next_random(rng) % 2) {
        h.flags |= FDN__FRAME_TRACE;
        random_trace(rng, &h.trace);
    }
    if (h.offset == 0) {   /* a plain message, a request or a response */
        switch (next_random(rng) % 3) {
        case 1:
            h.flags |= FDN__FRAME_REQUEST;
            break;
        case 2:
            h.flags |= FDN__FRAME_RESPONSE | FDN__FRAME_CORR;
            h.corr_id = next_random(rng);
            break;
        }
    }
    return h;
}

static struct fdn__frame_hdr random_frame(uint64_t *rng, uint8_t type,
                                          const struct fdn__wire_limits *lim)
{
    struct fdn__frame_hdr h = {.type = type};
    switch (type) {
    case FDN__FRAME_DATA:
        return random_data(rng, lim);
    case FDN__FRAME_CREDIT:
        h.channel = (uint16_t)random_between(rng, 0, lim->max_channel);
        h.credit_bytes = random_between(rng, 1, UINT64_MAX);
        break;
    case FDN__FRAME_ACK:
        h.channel = (uint16_t)random_between(rng, 0, lim->max_channel);
        h.acked = next_random(rng) % 4 == 0 ? 0 : next_random(rng);
        break;
    case FDN__FRAME_RESUME:
        h.resume_entries = random_between(rng, 1, (uint64_t)lim->max_channel + 1 > 256
                                                      ? 256 : (uint64_t)lim->max_channel + 1);
        h.frag_len = (uint32_t)(h.resume_entries * FDN__RESUME_ENTRY_SIZE);
        h.total_len = h.frag_len;
        break;
    case FDN__FRAME_PING:
    case FDN__FRAME_PONG:
        h.ping_token = next_random(rng);
        break;
    case FDN__FRAME_CLOSE:
        h.close_reason = random_between(rng, 0, FDN__CLOSE_REASON_COUNT - 1);
        break;
    case FDN__FRAME_HANDSHAKE:
        h.flags = FDN__FRAME_FIRST | FDN__FRAME_LAST;
        h.frag_len = (uint32_t)random_between(rng, 0, FDN__WIRE_HANDSHAKE_MAX);
        h.total_len = h.frag_len;
        break;
    }
    return h;
}

static void check_same_header(const struct fdn__frame_hdr *a, const struct fdn__frame_hdr *b)
{
    CHECK_EQ(a->type, b->type);
    CHECK_EQ(a->flags, b->flags);
    CHECK_EQ(a->channel, b->channel);
    CHECK_EQ(a->frag_len, b->frag_len);
    CHECK(a->msg_id == b->msg_id);
    CHECK(a->offset == b->offset);
    CHECK(a->total_len == b->total_len);
    if (a->flags & FDN__FRAME_TRACE)
        CHECK(memcmp(&a->trace, &b->trace, sizeof a->trace) == 0);
    if (a->flags & FDN__FRAME_CORR)
        CHECK(a->corr_id == b->corr_id);
}

/* Encodes h and checks that it decodes to the same header. */
static void check_round_trip(const struct fdn__frame_hdr *h, const struct fdn__wire_limits *lim)
{
    uint8_t buf[FDN__FRAME_MAX_HDR_SIZE];
    enum fdn__wire_error reason = FDN__WIRE_ERROR_COUNT;
    CHECK_OK(fdn__frame_validate(h, lim, &reason));
    CHECK_EQ(reason, FDN__WIRE_OK);

    size_t size = fdn__frame_encode(h, buf);
    CHECK_EQ(size, fdn__frame_hdr_size(h));
    struct fdn__frame_hdr out;
    int rc = fdn__frame_decode(buf, size, lim, &out, &reason);
    CHECK_EQ(rc, (int)size);
    CHECK_EQ(reason, FDN__WIRE_OK);
    check_same_header(h, &out);
}

/* Decodes bytes that break exactly one rule and checks the reason. */
static void check_rejected(const uint8_t *buf, size_t len, const struct fdn__wire_limits *lim,
                           enum fdn__wire_error expected, bool *covered)
{
    struct fdn__frame_hdr out;
    enum fdn__wire_error reason = FDN__WIRE_OK;
    int rc = fdn__frame_decode(buf, len, lim, &out, &reason);
    if (reason != expected)
        fprintf(stderr, "expected %s, got %s (rc %d, %s)\n", fdn__wire_error_name(expected),
                fdn__wire_error_name(reason), rc, fdn_errmsg());
    CHECK_EQ(reason, expected);
    CHECK_EQ(rc, fdn__wire_error_errno(expected));
    CHECK(rc < 0);
    CHECK(strstr(fdn_errmsg(), fdn__wire_error_name(expected)) != NULL);
    covered[expected] = true;
}

/* Encodes h (which may break a rule: the encoder does not check) and checks
 * that both the decoder and fdn__frame_validate() name the expected rule. */
static void check_header_rejected(const struct fdn__frame_hdr *h, enum fdn__wire_error expected,
                                  bool *covered)
{
    uint8_t buf[FDN__FRAME_MAX_HDR_SIZE];
    size_t size = fdn__frame_encode(h, buf);
    check_rejected(buf, size, &limits, expected, covered);

    enum fdn__wire_error reason = FDN__WIRE_OK;
    CHECK_EQ(fdn__frame_validate(h, &limits, &reason), fdn__wire_error_errno(expected));
    CHECK_EQ(reason, expected);
}

static struct fdn__frame_hdr whole_message(uint16_t channel, uint32_t len)
{
    return (struct fdn__frame_hdr){
        .type = FDN__FRAME_DATA,
        .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST,
        .channel = channel,
        .frag_len = len,
        .msg_id = 42,
        .total_len = len,
    };
}

static const struct fdn__trace_ctx sample_trace = {
    .trace_id = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e,
                 0x0e, 0x47, 0x36},
    .span_id = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
    .flags = 0x01,
};

/* ---- Layout and round trips ----------------------------------------------- */

/* The bytes of one frame, written out by hand from the table in wire.h. */
static void test_layout_matches_the_table(void)
{
    struct fdn__frame_hdr h = {
        .type = FDN__FRAME_DATA,
        .flags = FDN__FRAME_LAST | FDN__FRAME_TRACE | FDN__FRAME_FIRST,
        .channel = 0x0102,
        .frag_len = 0x0a0b0c0d,
        .msg_id = UINT64_C(0x1112131415161718),
        .offset = 0,
        .total_len = UINT64_C(0x0a0b0c0d),
        .trace = sample_trace,
    };
    const uint8_t expected[64] = {
        0xfd, 0x01, 0x01, 0x08, 0x07, 0x00, 0x02, 0x01,             /* magic..channel */
        0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,             /* msg_id */
        0x0d, 0x0c, 0x0b, 0x0a,                                     /* frag_len */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00,                         /* offset */
        0x0d, 0x0c, 0x0b, 0x0a, 0x00, 0x00,                         /* total_len */
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, /* trace_id */
        0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,                         /* */
        0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7,             /* span_id */
        0x01, 0, 0, 0, 0, 0, 0, 0,                                  /* flags, reserved */
    };
    uint8_t buf[64];
    CHECK_EQ(fdn__frame_encode(&h, buf), 64);
    CHECK(memcmp(buf, expected, sizeof expected) == 0);
    check_round_trip(&h, &wide_limits);

    /* A response: the correlation extension after the trace extension. */
    h.flags |= FDN__FRAME_RESPONSE | FDN__FRAME_CORR;
    h.corr_id = UINT64_C(0x2122232425262728);
    uint8_t with_corr[72];
    CHECK_EQ(fdn__frame_encode(&h, with_corr), 72);
    CHECK_EQ(with_corr[3], 9);                                   /* hdr_words */
    CHECK_EQ(with_corr[4], 0x37);                                /* flags, low byte */
    CHECK(memcmp(with_corr + 8, expected + 8, 24) == 0);
    CHECK(memcmp(with_corr + 32, expected + 32, 32) == 0);       /* trace, unmoved */
    const uint8_t corr[8] = {0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21};
    CHECK(memcmp(with_corr + 64, corr, 8) == 0);
    check_round_trip(&h, &wide_limits);

    /* Without trace it follows the fixed header at once. */
    h.flags &= (uint16_t)~FDN__FRAME_TRACE;
    CHECK_EQ(fdn__frame_encode(&h, with_corr), 40);
    CHECK_EQ(with_corr[3], 5);
    CHECK(memcmp(with_corr + 32, corr, 8) == 0);
    check_round_trip(&h, &wide_limits);

    /* A RESUME payload entry. */
    struct fdn__resume_entry e = {.channel = 0x0102, .window = 0x03040506,
                                  .received = UINT64_C(0x0708090a0b0c0d0e)};
    const uint8_t entry[16] = {0x02, 0x01, 0, 0, 0x06, 0x05, 0x04, 0x03,
                               0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07};
    uint8_t ebuf[16];
    fdn__resume_encode(&e, 1, ebuf);
    CHECK(memcmp(ebuf, entry, 16) == 0);
    struct fdn__resume_entry back;
    CHECK_OK(fdn__resume_decode(ebuf, 0, &wide_limits, &back));
    CHECK(back.channel == e.channel && back.window == e.window && back.received == e.received);
    CHECK_EQ(fdn__resume_decode(ebuf, 0, &limits, &back), -EPROTO);   /* channel 258 > 255 */
    ebuf[0] = 1, ebuf[1] = 0, ebuf[2] = 1;                             /* reserved set */
    CHECK_EQ(fdn__resume_decode(ebuf, 0, &limits, &back), -EPROTO);
}

static void test_round_trip_every_type(void)
{
    static const uint8_t types[] = {FDN__FRAME_DATA, FDN__FRAME_CREDIT, FDN__FRAME_PING,
                                    FDN__FRAME_PONG, FDN__FRAME_CLOSE, FDN__FRAME_HANDSHAKE,
                                    FDN__FRAME_ACK, FDN__FRAME_RESUME};
    uint64_t rng = 20240601;
    for (size_t t = 0; t < FDN_ARRAY_SIZE(types); t++) {
        for (int i = 0; i < 2000; i++) {
            const struct fdn__wire_limits *lim = i % 2 ? &wide_limits : &limits;
            struct fdn__frame_hdr h = random_frame(&rng, types[t], lim);
            check_round_trip(&h, lim);
        }
    }
}

static void test_extreme_values_round_trip(void)
{
    struct fdn__frame_hdr h = {
        .type = FDN__FRAME_DATA,
        .flags = FDN__FRAME_LAST,
        .channel = UINT16_MAX,
        .frag_len = UINT32_MAX,
        .msg_id = UINT64_MAX,
        .offset = FDN__WIRE_MAX_U48 - UINT32_MAX,
        .total_len = FDN__WIRE_MAX_U48,
    };
    check_round_trip(&h, &wide_limits);

    struct fdn__frame_hdr empty = whole_message(0, 0);
    check_round_trip(&empty, &limits);
}

/* ---- Truncation ----------------------------------------------------------- */

/* Every proper prefix of a valid header needs more bytes; the whole header,
 * and the header followed by payload, decode to the header's size. */
static void check_every_truncation(const struct fdn__frame_hdr *h)
{
    uint8_t buf[FDN__FRAME_MAX_HDR_SIZE + 8];
    size_t size = fdn__frame_encode(h, buf);
    memset(buf + size, 0xee, sizeof buf - size);   /* payload bytes */

    struct fdn__frame_hdr out;
    enum fdn__wire_error reason;
    for (size_t len = 0; len < size; len++) {
        CHECK_EQ(fdn__frame_decode(buf, len, &limits, &out, &reason), 0);
        CHECK_EQ(reason, FDN__WIRE_OK);
    }
    CHECK_EQ(fdn__frame_decode(buf, size, &limits, &out, &reason), (int)size);
    CHECK_EQ(fdn__frame_decode(buf, sizeof buf, &limits, &out, &reason), (int)size);
}

static void test_truncation_needs_more(void)
{
    uint64_t rng = 7;
    static const uint8_t types[] = {FDN__FRAME_DATA, FDN__FRAME_CREDIT, FDN__FRAME_PING,
                                    FDN__FRAME_PONG, FDN__FRAME_CLOSE, FDN__FRAME_HANDSHAKE,
                                    FDN__FRAME_ACK, FDN__FRAME_RESUME};
    for (size_t t = 0; t < FDN_ARRAY_SIZE(types); t++) {
        for (int i = 0; i < 50; i++) {
            struct fdn__frame_hdr h = random_frame(&rng, types[t], &limits);
            check_every_truncation(&h);
        }
    }
    struct fdn__frame_hdr traced = whole_message(3, 100);
    traced.flags |= FDN__FRAME_TRACE;
    traced.trace = sample_trace;
    check_every_truncation(&traced);
    traced.flags |= FDN__FRAME_RESPONSE | FDN__FRAME_CORR;   /* 72 bytes */
    check_every_truncation(&traced);
    traced.flags &= (uint16_t)~FDN__FRAME_TRACE;              /* 40 bytes */
    check_every_truncation(&traced);
}

/* Frames back to back in one buffer, each header followed by its payload. */
static void test_decode_a_stream(void)
{
    uint8_t buf[512];
    size_t len = 0;
    struct fdn__frame_hdr sent[3] = {whole_message(1, 5), whole_message(2, 0),
                                     whole_message(3, 17)};
    sent[2].flags |= FDN__FRAME_TRACE;
    sent[2].trace = sample_trace;
    for (int i = 0; i < 3; i++) {
        len += fdn__frame_encode(&sent[i], buf + len);
        memset(buf + len, i, sent[i].frag_len);
        len += sent[i].frag_len;
    }

    size_t pos = 0;
    for (int i = 0; i < 3; i++) {
        struct fdn__frame_hdr got;
        enum fdn__wire_error reason;
        int rc = fdn__frame_decode(buf + pos, len - pos, &limits, &got, &reason);
        CHECK(rc > 0);
        check_same_header(&sent[i], &got);
        pos += (size_t)rc + got.frag_len;
    }
    CHECK_EQ(pos, len);
}

/* ---- One case per rule ------------------------------------------------------ */

static void test_preamble_rules(bool *covered)
{
    uint8_t buf[FDN__FRAME_MAX_HDR_SIZE];
    struct fdn__frame_hdr h = whole_message(1, 10);
    fdn__frame_encode(&h, buf);

    buf[0] = 'G';   /* an HTTP client: rejected on its first byte */
    check_rejected(buf, 1, &limits, FDN__WIRE_BAD_MAGIC, covered);
    buf[0] = FDN__WIRE_MAGIC;
    buf[1] = 2;     /* a future version: rejected on its second byte */
    check_rejected(buf, 2, &limits, FDN__WIRE_BAD_VERSION, covered);
    CHECK_EQ(fdn__wire_error_errno(FDN__WIRE_BAD_VERSION), -EPROTONOSUPPORT);
    buf[1] = FDN__WIRE_VERSION;

    buf[2] = 0;
    check_rejected(buf, 32, &limits, FDN__WIRE_UNKNOWN_TYPE, covered);
    buf[2] = FDN__FRAME_RESUME + 1;
    check_rejected(buf, 32, &limits, FDN__WIRE_UNKNOWN_TYPE, covered);
    buf[2] = FDN__FRAME_DATA;

    buf[3] = 5;
    check_rejected(buf, 32, &limits, FDN__WIRE_BAD_HEADER_LENGTH, covered);
    buf[3] = 4;
    buf[4] |= FDN__FRAME_TRACE;   /* TRACE claimed, hdr_words still 4 */
    check_rejected(buf, 32, &limits, FDN__WIRE_BAD_HEADER_LENGTH, covered);
    buf[4] = FDN__FRAME_FIRST | FDN__FRAME_LAST | FDN__FRAME_RESPONSE | FDN__FRAME_CORR;
    check_rejected(buf, 32, &limits, FDN__WIRE_BAD_HEADER_LENGTH, covered);  /* CORR: 5 */
    buf[3] = 8;
    check_rejected(buf, 32, &limits, FDN__WIRE_BAD_HEADER_LENGTH, covered);
}

static void test_flag_and_field_rules(bool *covered)
{
    struct fdn__frame_hdr h = whole_message(1, 10);
    h.flags |= 0x0080;
    check_header_rejected(&h, FDN__WIRE_UNKNOWN_FLAGS, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_ACK, .flags = FDN__FRAME_PACKED};
    check_header_rejected(&h, FDN__WIRE_UNKNOWN_FLAGS, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_ACK, .flags = FDN__FRAME_CORR};
    check_header_rejected(&h, FDN__WIRE_UNKNOWN_FLAGS, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_CREDIT, .credit_bytes = 1,
                                .flags = FDN__FRAME_REQUEST};
    check_header_rejected(&h, FDN__WIRE_UNKNOWN_FLAGS, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_PING, .flags = FDN__FRAME_FIRST};
    check_header_rejected(&h, FDN__WIRE_UNKNOWN_FLAGS, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_HANDSHAKE,
                                .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST | FDN__FRAME_TRACE};
    check_header_rejected(&h, FDN__WIRE_UNKNOWN_FLAGS, covered);

    h = (struct fdn__frame_hdr){.type = FDN__FRAME_PING, .channel = 1};
    check_header_rejected(&h, FDN__WIRE_FIELD_NOT_ZERO, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_CREDIT, .credit_bytes = 1, .total_len = 1};
    check_header_rejected(&h, FDN__WIRE_FIELD_NOT_ZERO, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_HANDSHAKE,
                                .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST, .msg_id = 1};
    check_header_rejected(&h, FDN__WIRE_FIELD_NOT_ZERO, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_ACK, .channel = 1, .acked = 5, .offset = 1};
    check_header_rejected(&h, FDN__WIRE_FIELD_NOT_ZERO, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_RESUME, .channel = 1, .resume_entries = 1,
                                .frag_len = 16, .total_len = 16};
    check_header_rejected(&h, FDN__WIRE_FIELD_NOT_ZERO, covered);
    h.channel = 0;
    h.total_len = 32;
    check_header_rejected(&h, FDN__WIRE_FIELD_NOT_ZERO, covered);

    /* Only a struct can hold these; the decoder never sees more than 48 bits. */
    enum fdn__wire_error reason;
    h = whole_message(1, 10);
    h.total_len = h.offset = UINT64_C(1) << 48;
    CHECK_EQ(fdn__frame_validate(&h, &wide_limits, &reason), -EPROTO);
    CHECK_EQ(reason, FDN__WIRE_FIELD_TOO_WIDE);
    covered[FDN__WIRE_FIELD_TOO_WIDE] = true;
}

static void test_limit_rules(bool *covered)
{
    struct fdn__frame_hdr h = whole_message(limits.max_channel + 1, 10);
    check_header_rejected(&h, FDN__WIRE_CHANNEL_RANGE, covered);
    h = (struct fdn__frame_hdr){
        .type = FDN__FRAME_CREDIT, .channel = limits.max_channel + 1, .credit_bytes = 1};
    check_header_rejected(&h, FDN__WIRE_CHANNEL_RANGE, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_ACK, .channel = limits.max_channel + 1};
    check_header_rejected(&h, FDN__WIRE_CHANNEL_RANGE, covered);

    /* RESUME: one entry per channel at most, exactly its payload. */
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_RESUME, .resume_entries = 0};
    check_header_rejected(&h, FDN__WIRE_RESUME_LENGTH, covered);
    h.resume_entries = (uint64_t)limits.max_channel + 2;
    h.frag_len = (uint32_t)(h.resume_entries * 16);
    h.total_len = h.frag_len;
    check_header_rejected(&h, FDN__WIRE_RESUME_LENGTH, covered);
    h.resume_entries = 2;
    h.frag_len = h.total_len = 31;
    check_header_rejected(&h, FDN__WIRE_RESUME_LENGTH, covered);

    h = whole_message(1, limits.max_fragment + 1);
    check_header_rejected(&h, FDN__WIRE_FRAGMENT_TOO_LARGE, covered);
    CHECK_EQ(fdn__wire_error_errno(FDN__WIRE_FRAGMENT_TOO_LARGE), -EMSGSIZE);

    h = whole_message(1, 100);
    h.flags = FDN__FRAME_FIRST;
    h.total_len = limits.max_message + 1;
    check_header_rejected(&h, FDN__WIRE_MESSAGE_TOO_LARGE, covered);
    CHECK_EQ(fdn__wire_error_errno(FDN__WIRE_MESSAGE_TOO_LARGE), -EMSGSIZE);

    h = (struct fdn__frame_hdr){.type = FDN__FRAME_HANDSHAKE,
                                .flags = FDN__FRAME_FIRST | FDN__FRAME_LAST,
                                .frag_len = FDN__WIRE_HANDSHAKE_MAX + 1,
                                .total_len = FDN__WIRE_HANDSHAKE_MAX + 1};
    check_header_rejected(&h, FDN__WIRE_HANDSHAKE_TOO_LARGE, covered);
    CHECK_EQ(fdn__wire_error_errno(FDN__WIRE_HANDSHAKE_TOO_LARGE), -EMSGSIZE);
}

static void test_fragment_rules(bool *covered)
{
    struct fdn__frame_hdr h = whole_message(1, 10);
    h.total_len = 9;
    check_header_rejected(&h, FDN__WIRE_FRAGMENT_BEYOND_END, covered);

    h = whole_message(1, 10);
    h.flags = FDN__FRAME_LAST;   /* offset 0 without FIRST */
    check_header_rejected(&h, FDN__WIRE_FIRST_MISMATCH, covered);
    h = whole_message(1, 10);
    h.offset = 10;
    h.total_len = 20;            /* FIRST at offset 10 */
    check_header_rejected(&h, FDN__WIRE_FIRST_MISMATCH, covered);

    h = whole_message(1, 10);
    h.total_len = 11;            /* LAST on a fragment ending before the end */
    check_header_rejected(&h, FDN__WIRE_LAST_MISMATCH, covered);
    h = whole_message(1, 10);
    h.flags = FDN__FRAME_FIRST;  /* the whole message, without LAST */
    check_header_rejected(&h, FDN__WIRE_LAST_MISMATCH, covered);

    h = whole_message(1, 0);
    h.offset = 5;
    h.total_len = 5;
    h.flags = FDN__FRAME_LAST;   /* an empty last fragment */
    check_header_rejected(&h, FDN__WIRE_EMPTY_FRAGMENT, covered);

    h = whole_message(1, 10);
    h.offset = 10;
    h.total_len = 20;
    h.flags = FDN__FRAME_LAST | FDN__FRAME_TRACE;
    h.trace = sample_trace;
    check_header_rejected(&h, FDN__WIRE_TRACE_NOT_FIRST, covered);

    h = (struct fdn__frame_hdr){.type = FDN__FRAME_HANDSHAKE, .flags = FDN__FRAME_FIRST,
                                .frag_len = 10, .total_len = 20};
    check_header_rejected(&h, FDN__WIRE_HANDSHAKE_FRAGMENTED, covered);
}

static void test_kind_rules(bool *covered)
{
    /* Request, response and correlation describe the message: first
     * fragment only. */
    static const uint16_t kinds[] = {FDN__FRAME_REQUEST, FDN__FRAME_RESPONSE | FDN__FRAME_CORR};
    for (size_t i = 0; i < FDN_ARRAY_SIZE(kinds); i++) {
        struct fdn__frame_hdr h = whole_message(1, 10);
        h.offset = 10;
        h.total_len = 20;
        h.flags = FDN__FRAME_LAST | kinds[i];
        check_header_rejected(&h, FDN__WIRE_KIND_NOT_FIRST, covered);
    }
    struct fdn__frame_hdr h = whole_message(1, 10);
    h.flags |= FDN__FRAME_REQUEST | FDN__FRAME_RESPONSE | FDN__FRAME_CORR;
    check_header_rejected(&h, FDN__WIRE_KIND_CONFLICT, covered);
    h = whole_message(1, 10);
    h.flags |= FDN__FRAME_RESPONSE;              /* a response that names nothing */
    check_header_rejected(&h, FDN__WIRE_KIND_CONFLICT, covered);
    h = whole_message(1, 10);
    h.flags |= FDN__FRAME_CORR;                  /* a correlation on a plain message */
    check_header_rejected(&h, FDN__WIRE_KIND_CONFLICT, covered);
    h.flags |= FDN__FRAME_REQUEST;
    check_header_rejected(&h, FDN__WIRE_KIND_CONFLICT, covered);
}

static void test_trace_rules(bool *covered)
{
    struct fdn__frame_hdr h = whole_message(1, 10);
    h.flags |= FDN__FRAME_TRACE;
    h.trace = sample_trace;
    memset(h.trace.trace_id, 0, sizeof h.trace.trace_id);
    check_header_rejected(&h, FDN__WIRE_TRACE_INVALID, covered);
    h.trace = sample_trace;
    memset(h.trace.span_id, 0, sizeof h.trace.span_id);
    check_header_rejected(&h, FDN__WIRE_TRACE_INVALID, covered);

    uint8_t buf[FDN__FRAME_MAX_HDR_SIZE];
    h.trace = sample_trace;
    fdn__frame_encode(&h, buf);
    buf[63] = 1;
    check_rejected(buf, sizeof buf, &limits, FDN__WIRE_RESERVED_NONZERO, covered);
}

static void test_control_rules(bool *covered)
{
    struct fdn__frame_hdr h = {.type = FDN__FRAME_PONG, .frag_len = 1};
    check_header_rejected(&h, FDN__WIRE_PAYLOAD_NOT_ALLOWED, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_CREDIT, .channel = 3};
    check_header_rejected(&h, FDN__WIRE_CREDIT_ZERO, covered);
    h = (struct fdn__frame_hdr){.type = FDN__FRAME_CLOSE, .close_reason = FDN__CLOSE_REASON_COUNT};
    check_header_rejected(&h, FDN__WIRE_CLOSE_REASON, covered);
}

/* A PACKED frame: whole, plain, and a record at least; its records are
 * checked by fdn__packed_next. */
static void test_packed_rules(bool *covered)
{
    struct fdn__frame_hdr h = whole_message(1, 10);
    h.flags |= FDN__FRAME_PACKED;
    check_round_trip(&h, &limits);
    /* max_message bounds the messages in it, not the frame. */
    struct fdn__wire_limits small = limits;
    small.max_message = 4;
    check_round_trip(&h, &small);

    const uint16_t not_with[] = {FDN__FRAME_TRACE, FDN__FRAME_REQUEST,
                                 FDN__FRAME_RESPONSE | FDN__FRAME_CORR};
    for (size_t i = 0; i < sizeof not_with / sizeof not_with[0]; i++) {
        h = whole_message(1, 10);
        h.flags |= FDN__FRAME_PACKED | not_with[i];
        h.trace = sample_trace;
        check_header_rejected(&h, FDN__WIRE_PACKED_FLAGS, covered);
    }
    h = whole_message(1, 10);
    h.flags = FDN__FRAME_FIRST | FDN__FRAME_PACKED;   /* a packed frame is never a fragment */
    h.total_len = 20;
    check_header_rejected(&h, FDN__WIRE_PACKED_FLAGS, covered);

    h = whole_message(1, 3);
    h.flags |= FDN__FRAME_PACKED;
    check_header_rejected(&h, FDN__WIRE_PACKED_RECORD, covered);
    h = whole_message(1, 0);
    h.flags |= FDN__FRAME_PACKED;
    check_header_rejected(&h, FDN__WIRE_PACKED_RECORD, covered);
    h = whole_message(1, 10);
    h.flags |= FDN__FRAME_PACKED;
    h.total_len = 11;
    check_header_rejected(&h, FDN__WIRE_LAST_MISMATCH, covered);
}

/* Reads the records of a payload: lengths seen, and the final result. */
static int walk_records(const uint8_t *p, uint32_t len, uint32_t *lens, uint32_t *ats, int max,
                        int *count)
{
    uint32_t pos = 0, at, n;
    enum fdn__wire_error why;
    int rc;
    *count = 0;
    while ((rc = fdn__packed_next(p, len, &pos, &at, &n, &why)) == 1) {
        CHECK(*count < max);
        CHECK_EQ(why, FDN__WIRE_OK);
        CHECK(at + n <= len);
        lens[*count] = n;
        ats[(*count)++] = at;
    }
    CHECK_EQ(why, rc == 0 ? FDN__WIRE_OK : FDN__WIRE_PACKED_RECORD);
    return rc;
}

static void test_packed_records(void)
{
    /* Three messages: 2 bytes, empty, 3 bytes. */
    const uint8_t payload[] = {2, 0, 0, 0, 'h', 'i', 0, 0, 0, 0, 3, 0, 0, 0, 'a', 'b', 'c'};
    uint32_t lens[8], ats[8];
    int count;
    CHECK_EQ(walk_records(payload, sizeof payload, lens, ats, 8, &count), 0);
    CHECK_EQ(count, 3);
    CHECK_EQ(lens[0], 2);
    CHECK_EQ(ats[0], 4);
    CHECK(memcmp(payload + ats[0], "hi", 2) == 0);
    CHECK_EQ(lens[1], 0);
    CHECK_EQ(lens[2], 3);
    CHECK(memcmp(payload + ats[2], "abc", 3) == 0);

    /* Cut anywhere inside a record: the walk ends in an error, never reads
     * past len, and delivers the records before the cut. */
    for (uint32_t len = 0; len < sizeof payload; len++) {
        bool on_boundary = len == 6 || len == 10;
        int rc = walk_records(payload, len, lens, ats, 8, &count);
        CHECK_EQ(rc, on_boundary ? 0 : -EPROTO);
        CHECK_EQ(count, len < 6 ? 0 : len < 10 ? 1 : 2);
        if (rc < 0)
            CHECK(strstr(fdn_errmsg(), "packed_record") != NULL);
    }

    /* A length past the end, and one that would wrap a 32-bit sum. */
    uint8_t bad[8] = {5, 0, 0, 0, 'x'};
    CHECK_EQ(walk_records(bad, 5, lens, ats, 8, &count), -EPROTO);
    fdn__store_le32(bad, UINT32_MAX);
    CHECK_EQ(walk_records(bad, 8, lens, ats, 8, &count), -EPROTO);
    CHECK_EQ(count, 0);
}

static void test_every_rule_has_its_reason(void)
{
    bool covered[FDN__WIRE_ERROR_COUNT] = {0};
    test_preamble_rules(covered);
    test_flag_and_field_rules(covered);
    test_limit_rules(covered);
    test_fragment_rules(covered);
    test_trace_rules(covered);
    test_kind_rules(covered);
    test_control_rules(covered);
    test_packed_rules(covered);
    for (int e = 1; e < FDN__WIRE_ERROR_COUNT; e++) {
        if (!covered[e])
            fprintf(stderr, "no test for %s\n", fdn__wire_error_name(e));
        CHECK(covered[e]);
    }
}

static void test_error_names(void)
{
    for (int e = 0; e < FDN__WIRE_ERROR_COUNT; e++) {
        const char *name = fdn__wire_error_name(e);
        CHECK(name && strcmp(name, "unknown") != 0);
        for (int other = 0; other < e; other++)
            CHECK(strcmp(name, fdn__wire_error_name(other)) != 0);
    }
    CHECK(strcmp(fdn__wire_error_name(FDN__WIRE_ERROR_COUNT), "unknown") == 0);
    CHECK(strcmp(fdn__wire_error_name((enum fdn__wire_error)-1), "unknown") == 0);
}

/* ---- Traceparent ------------------------------------------------------------ */

static int parse(const char *text, struct fdn__trace_ctx *out)
{
    return fdn__traceparent_parse(text, strlen(text), out);
}

static void test_traceparent_valid(void)
{
    static const char example[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    struct fdn__trace_ctx ctx;
    CHECK_OK(parse(example, &ctx));
    CHECK(memcmp(&ctx, &sample_trace, sizeof ctx) == 0);

    char text[FDN__TRACEPARENT_LEN + 1];
    fdn__traceparent_format(&ctx, text);
    CHECK(strcmp(text, example) == 0);

    /* A later version may append fields after a dash; they are ignored. */
    CHECK_OK(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-ever", &ctx));
    CHECK_EQ(ctx.flags, 0);
    CHECK_OK(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09", &ctx));
    CHECK_EQ(ctx.flags, 9);

    /* The parser reads len bytes, not up to a NUL. */
    CHECK_OK(fdn__traceparent_parse(example, FDN__TRACEPARENT_LEN, &ctx));
}

static void test_traceparent_invalid(void)
{
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",     /* 54 chars */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",   /* 00 with more */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",   /* no dash after */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* version ff */
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    /* upper case */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    /* zero parent id */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
    };
    for (size_t i = 0; i < FDN_ARRAY_SIZE(bad); i++) {
        struct fdn__trace_ctx ctx = sample_trace;
        if (parse(bad[i], &ctx) != -EINVAL) {
            fprintf(stderr, "accepted \"%s\"\n", bad[i]);
            CHECK(false);
        }
        CHECK(memcmp(&ctx, &sample_trace, sizeof ctx) == 0);   /* untouched */
    }
}

int main(void)
{
    RUN(test_layout_matches_the_table);
    RUN(test_round_trip_every_type);
    RUN(test_extreme_values_round_trip);
    RUN(test_truncation_needs_more);
    RUN(test_decode_a_stream);
    RUN(test_every_rule_has_its_reason);
    RUN(test_packed_records);
    RUN(test_error_names);
    RUN(test_traceparent_valid);
    RUN(test_traceparent_invalid);
    return 0;
}
