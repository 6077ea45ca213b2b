/* Writes the seed corpus of the fuzz targets: one file per frame type and
 * situation under <dir>/frame, and handshake conversations under
 * <dir>/handshake, all built with the real encoders and the settings in
 * fuzz_common.h, plus a traceparent header value for the text check of
 * fuzz_frame. Usage: fuzz_make_corpus tests/fuzz/corpus
 * HELLO nonces are random, so the handshake seeds differ on every run. */
#include <errno.h>
#include <stdbool.h>

#include "fuzz_common.h"

#define MAX_SEED 65536

/* A seed under construction. */
struct seed {
    uint8_t bytes[MAX_SEED];
    size_t len;
};

static void append(struct seed *s, const void *bytes, size_t len)
{
    FUZZ_CHECK(s->len + len <= sizeof s->bytes);
    memcpy(s->bytes + s->len, bytes, len);
    s->len += len;
}

static void write_seed(const char *dir, const char *sub, const char *name, const struct seed *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s->bytes, 1, s->len, f) != s->len || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

/* ---- Frames ------------------------------------------------------------ */

/* Appends h's header and frag_len payload bytes (or only the header). */
static void append_frame(struct seed *s, const struct fdn__frame_hdr *h, bool with_payload)
{
    uint8_t hdr[FDN__FRAME_MAX_HDR_SIZE];
    append(s, hdr, fdn__frame_encode(h, hdr));
    for (uint32_t i = 0; with_payload && i < h->frag_len; i++)
        append(s, &(uint8_t){(uint8_t)i}, 1);
}

static struct fdn__frame_hdr data_frame(uint16_t flags, uint64_t offset, uint32_t len,
                                        uint64_t total)
{
    return (struct fdn__frame_hdr){.type = FDN__FRAME_DATA, .flags = flags, .channel = 3,
                                   .frag_len = len, .msg_id = 77, .offset = offset,
                                   .total_len = total};
}

static void write_frame_seeds(const char *dir)
{
    const uint16_t first = FDN__FRAME_FIRST, last = FDN__FRAME_LAST;
    struct fdn__frame_hdr traced = data_frame(first | FDN__FRAME_TRACE, 0, 100, 300);
    memset(traced.trace.trace_id, 0x4b, sizeof traced.trace.trace_id);
    memset(traced.trace.span_id, 0x07, sizeof traced.trace.span_id);
    traced.trace.flags = 1;
    struct fdn__frame_hdr response = data_frame(first | last | FDN__FRAME_RESPONSE |
                                                FDN__FRAME_CORR, 0, 10, 10);
    response.corr_id = 76;
    struct fdn__frame_hdr traced_response = traced;
    traced_response.flags |= FDN__FRAME_RESPONSE | FDN__FRAME_CORR;
    traced_response.corr_id = 5;

    const struct {
        const char *name;
        struct fdn__frame_hdr h;
    } frames[] = {
        {"data_whole", data_frame(first | last, 0, 10, 10)},
        {"data_first_traced", traced},
        {"data_middle", data_frame(0, 100, 100, 300)},
        {"data_last", data_frame(last, 200, 100, 300)},
        {"data_empty", data_frame(first | last, 0, 0, 0)},
        {"data_request", data_frame(first | last | FDN__FRAME_REQUEST, 0, 10, 10)},
        {"data_response", response},
        {"data_response_traced", traced_response},
        {"ack", {.type = FDN__FRAME_ACK, .channel = 3, .acked = 78}},
        {"credit", {.type = FDN__FRAME_CREDIT, .channel = 3, .credit_bytes = 65536}},
        {"ping", {.type = FDN__FRAME_PING, .ping_token = 0x1234}},
        {"pong", {.type = FDN__FRAME_PONG, .ping_token = 0x1234}},
        {"close", {.type = FDN__FRAME_CLOSE, .close_reason = FDN__CLOSE_GOING_AWAY}},
        {"handshake", {.type = FDN__FRAME_HANDSHAKE, .flags = first | last, .frag_len = 20,
                       .total_len = 20}},
    };

    struct seed stream = {.len = 1};   /* selector 0: tight limits */
    for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
        struct seed s = {.len = 1};
        append_frame(&s, &frames[i].h, true);
        write_seed(dir, "frame", frames[i].name, &s);
        append_frame(&stream, &frames[i].h, true);
    }
    write_seed(dir, "frame", "stream", &stream);

    /* A RESUME frame with a valid payload of two entries. */
    const struct fdn__resume_entry entries[2] = {
        {.channel = 0, .window = 65536, .received = 10},
        {.channel = 3, .window = 0, .received = 78},
    };
    struct fdn__frame_hdr resume = {.type = FDN__FRAME_RESUME, .resume_entries = 2,
                                    .frag_len = 2 * FDN__RESUME_ENTRY_SIZE,
                                    .total_len = 2 * FDN__RESUME_ENTRY_SIZE};
    uint8_t payload[2 * FDN__RESUME_ENTRY_SIZE];
    fdn__resume_encode(entries, 2, payload);
    struct seed rs = {.len = 1};
    append_frame(&rs, &resume, false);
    append(&rs, payload, sizeof payload);
    write_seed(dir, "frame", "resume", &rs);

    /* A PACKED frame of three messages (5 bytes, empty, 2 bytes), and one
     * whose last record runs past the payload. */
    const uint8_t records[] = {5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o', 0, 0, 0, 0, 2, 0, 0, 0, 'o', 'k'};
    struct fdn__frame_hdr packed = data_frame(first | last | FDN__FRAME_PACKED, 0,
                                              sizeof records, sizeof records);
    struct seed ps = {.len = 1};
    append_frame(&ps, &packed, false);
    append(&ps, records, sizeof records);
    write_seed(dir, "frame", "packed", &ps);
    ps.bytes[ps.len - 6] = 3;   /* the last record claims 3 bytes where 2 remain */
    write_seed(dir, "frame", "packed_cut", &ps);

    struct seed truncated = {.len = 1};
    append_frame(&truncated, &frames[1].h, false);
    truncated.len = 1 + 40;   /* inside the trace extension */
    write_seed(dir, "frame", "truncated", &truncated);

    struct seed text = {0};   /* read as a traceparent too; its first byte selects limits */
    append(&text, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", FDN__TRACEPARENT_LEN);
    write_seed(dir, "frame", "traceparent", &text);

    struct seed wide = {.bytes = {1}, .len = 1};   /* selector 1: wide limits */
    struct fdn__frame_hdr big =
        data_frame(last, FDN__WIRE_MAX_U48 - 1000, 1000, FDN__WIRE_MAX_U48);
    big.channel = 60000;
    append_frame(&wide, &big, false);
    write_seed(dir, "frame", "wide", &wide);
}

/* ---- Handshakes --------------------------------------------------------- */

/* The HELLO a client with the fuzz configuration sends, decoded. */
static void fuzz_client_hello(struct fdn__hello *out)
{
    struct fdn__channel_desc channels[FUZZ_CHANNEL_COUNT];
    struct fdn__handshake_config cfg = fuzz_handshake_config(FDN__HS_CLIENT, channels);
    struct fdn__handshake *hs;
    FUZZ_CHECK(fdn__handshake_create(&cfg, &hs) == 0);
    const uint8_t *msg;
    size_t len = fdn__handshake_next_output(hs, &msg);
    FUZZ_CHECK(len > 0 && fdn__hello_decode(msg, len, out) == 0);
    fdn__handshake_destroy(hs);
}

static void append_message(struct seed *s, const uint8_t *msg, size_t len)
{
    uint8_t prefix[2];
    fdn__store_le16(prefix, (uint16_t)len);
    append(s, prefix, 2);
    append(s, msg, len);
}

static void append_hello(struct seed *s, const struct fdn__hello *h)
{
    static uint8_t buf[FDN__WIRE_HANDSHAKE_MAX];
    int len = fdn__hello_encode(h, buf, sizeof buf);
    FUZZ_CHECK(len > 0);
    append_message(s, buf, (size_t)len);
}

static void append_valid_auth_marker(struct seed *s)
{
    append_message(s, &(uint8_t){FUZZ_VALID_AUTH_MARKER}, 1);
}

/* A HELLO carrying every channel it may: the fuzz channels and more. */
static void largest_hello(struct fdn__hello *h)
{
    memset(h->cluster_name, 0, sizeof h->cluster_name);
    strcpy(h->cluster_name, "fuzz");
    for (unsigned i = FUZZ_CHANNEL_COUNT; i < FDN__HS_MAX_CHANNELS; i++) {
        h->channels[i] = fuzz_channel(i % FUZZ_CHANNEL_COUNT);
        h->channels[i].id = (uint16_t)(100 + i);
        snprintf(h->channels[i].name, sizeof h->channels[i].name,
                 "extra-channel-%03u-padding-xx", i);
    }
    h->channel_count = FDN__HS_MAX_CHANNELS;
}

static void write_handshake_seeds(const char *dir)
{
    static struct fdn__hello hello, changed;
    fuzz_client_hello(&hello);
    struct seed s;

    s = (struct seed){0};
    append_hello(&s, &hello);
    append_valid_auth_marker(&s);
    write_seed(dir, "handshake", "hello_auth", &s);

    append_hello(&s, &hello);   /* and a HELLO after DONE */
    write_seed(dir, "handshake", "hello_auth_hello", &s);

    s = (struct seed){0};
    append_hello(&s, &hello);
    uint8_t forged[FDN__HS_AUTH_SIZE] = {FDN__HS_MSG_AUTH, 1, 2, 3};
    append_message(&s, forged, sizeof forged);
    write_seed(dir, "handshake", "hello_forged_auth", &s);

    s = (struct seed){0};
    append_valid_auth_marker(&s);
    append_hello(&s, &hello);
    write_seed(dir, "handshake", "auth_first", &s);

    s = (struct seed){0};
    append_hello(&s, &hello);
    append_hello(&s, &hello);
    write_seed(dir, "handshake", "hello_twice", &s);

    changed = hello;
    strcpy(changed.cluster_name, "other");
    s = (struct seed){0};
    append_hello(&s, &changed);
    write_seed(dir, "handshake", "other_cluster", &s);

    changed = hello;
    changed.version_min = 3, changed.version_max = 4;
    s = (struct seed){0};
    append_hello(&s, &changed);
    write_seed(dir, "handshake", "no_common_version", &s);

    changed = hello;
    changed.channels[1].id = 9;
    s = (struct seed){0};
    append_hello(&s, &changed);
    write_seed(dir, "handshake", "channel_conflict", &s);

    changed = hello;
    largest_hello(&changed);
    s = (struct seed){0};
    append_hello(&s, &changed);
    append_valid_auth_marker(&s);
    write_seed(dir, "handshake", "largest_hello_auth", &s);

    s = (struct seed){0};
    append_hello(&s, &hello);
    s.len -= 7;   /* cut into the last channel's name, and say so in the prefix */
    fdn__store_le16(s.bytes, (uint16_t)(s.len - 2));
    write_seed(dir, "handshake", "truncated_hello", &s);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (with frame/ and handshake/ inside)\n", argv[0]);
        return 2;
    }
    write_frame_seeds(argv[1]);
    write_handshake_seeds(argv[1]);
    return 0;
}
