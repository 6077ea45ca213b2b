/* libFuzzer target for the frame decoder (core/wire.c).
 *
 * Input: one byte selecting the limits (fuzz_common.h), then a byte stream
 * read as a connection would: decode a header, skip its payload, repeat;
 * stop at the first error or when more bytes are needed. Properties checked
 * on every header (besides memory safety, by ASan and UBSan):
 *   - the result and *reason agree (0 and OK, or the reason's errno);
 *   - a header that decodes re-encodes to exactly the bytes it came from,
 *     and passes fdn__frame_validate() under the same limits;
 *   - every proper prefix of a header that decodes needs more bytes;
 *   - a decoded header's size is what its extension flags (TRACE, CORR) say,
 *     and a response carries CORR while nothing else does;
 *   - each entry of a whole RESUME payload either decodes to a value that
 *     encodes back to the same 16 bytes or is refused;
 *   - a whole PACKED payload walks record by record, each record inside
 *     the payload and right after the one before, to exactly its end or to
 *     a packed_record error.
 * The same bytes, read as text, also go through the traceparent parser: a
 * context it accepts formats back to text that parses to the same context,
 * and to the very same text when the input was version 00. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_outcome(int rc, enum fdn__wire_error reason)
{
    if (rc > 0)
        FUZZ_CHECK(reason == FDN__WIRE_OK && (rc == 32 || rc == 40 || rc == 64 || rc == 72));
    else if (rc == 0)
        FUZZ_CHECK(reason == FDN__WIRE_OK);
    else
        FUZZ_CHECK(reason != FDN__WIRE_OK && reason < FDN__WIRE_ERROR_COUNT &&
                   rc == fdn__wire_error_errno(reason));
}

static void check_round_trip(const uint8_t *bytes, size_t size, const struct fdn__frame_hdr *h,
                             const struct fdn__wire_limits *lim)
{
    uint8_t again[FDN__FRAME_MAX_HDR_SIZE];
    FUZZ_CHECK(fdn__frame_hdr_size(h) == size);
    FUZZ_CHECK(fdn__frame_encode(h, again) == size);
    FUZZ_CHECK(memcmp(again, bytes, size) == 0);

    enum fdn__wire_error reason;
    FUZZ_CHECK(fdn__frame_validate(h, lim, &reason) == 0 && reason == FDN__WIRE_OK);
}

static void check_extensions(const struct fdn__frame_hdr *h, size_t size)
{
    size_t expect = FDN__FRAME_HDR_SIZE + (h->flags & FDN__FRAME_TRACE ? 32 : 0) +
                    (h->flags & FDN__FRAME_CORR ? 8 : 0);
    FUZZ_CHECK(size == expect);
    bool response = h->flags & FDN__FRAME_RESPONSE, corr = h->flags & FDN__FRAME_CORR;
    FUZZ_CHECK(response == corr);
    FUZZ_CHECK(!(response && (h->flags & FDN__FRAME_REQUEST)));
    if (h->flags & (FDN__FRAME_REQUEST | FDN__FRAME_RESPONSE | FDN__FRAME_TRACE))
        FUZZ_CHECK(h->type == FDN__FRAME_DATA && h->offset == 0);
}

static void check_resume_payload(const struct fdn__frame_hdr *h, const uint8_t *payload,
                                 const struct fdn__wire_limits *lim)
{
    FUZZ_CHECK(h->frag_len == h->resume_entries * FDN__RESUME_ENTRY_SIZE);
    for (size_t i = 0; i < h->resume_entries; i++) {
        struct fdn__resume_entry e;
        if (fdn__resume_decode(payload, i, lim, &e) != 0)
            continue;
        FUZZ_CHECK(e.channel <= lim->max_channel);
        uint8_t again[FDN__RESUME_ENTRY_SIZE];
        fdn__resume_encode(&e, 1, again);
        FUZZ_CHECK(memcmp(again, payload + i * FDN__RESUME_ENTRY_SIZE, sizeof again) == 0);
    }
}

/* A PACKED payload: the records the walk accepts lie inside it, one after
 * another, and it ends exactly at the payload's end or with an error. */
static void check_packed_payload(const struct fdn__frame_hdr *h, const uint8_t *payload)
{
    FUZZ_CHECK(h->type == FDN__FRAME_DATA && h->frag_len >= FDN__PACKED_REC_HDR &&
               h->total_len == h->frag_len && h->offset == 0);
    uint32_t pos = 0, at, n, end = 0;
    enum fdn__wire_error why;
    int rc;
    while ((rc = fdn__packed_next(payload, h->frag_len, &pos, &at, &n, &why)) == 1) {
        FUZZ_CHECK(why == FDN__WIRE_OK);
        FUZZ_CHECK(at == end + FDN__PACKED_REC_HDR && n <= h->frag_len - at && pos == at + n);
        FUZZ_CHECK(fdn__load_le32(payload + end) == n);
        end = pos;
    }
    FUZZ_CHECK(rc == 0 ? why == FDN__WIRE_OK && end == h->frag_len
                       : rc == -EPROTO && why == FDN__WIRE_PACKED_RECORD && end < h->frag_len);
}

static void check_prefixes_need_more(const uint8_t *bytes, size_t size,
                                     const struct fdn__wire_limits *lim)
{
    for (size_t len = 0; len < size; len++) {
        struct fdn__frame_hdr h;
        enum fdn__wire_error reason;
        FUZZ_CHECK(fdn__frame_decode(bytes, len, lim, &h, &reason) == 0);
    }
}

static void check_traceparent(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct fdn__trace_ctx ctx, again;
    if (fdn__traceparent_parse(text, size, &ctx) != 0)
        return;
    FUZZ_CHECK(fdn__trace_ctx_valid(&ctx));

    char formatted[FDN__TRACEPARENT_LEN + 1];
    fdn__traceparent_format(&ctx, formatted);
    FUZZ_CHECK(strlen(formatted) == FDN__TRACEPARENT_LEN);
    FUZZ_CHECK(fdn__traceparent_parse(formatted, FDN__TRACEPARENT_LEN, &again) == 0);
    FUZZ_CHECK(memcmp(&ctx, &again, sizeof ctx) == 0);
    if (text[0] == '0' && text[1] == '0')
        FUZZ_CHECK(size == FDN__TRACEPARENT_LEN && memcmp(formatted, text, size) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_traceparent(data, size);
    if (size == 0)
        return 0;
    const struct fdn__wire_limits lim = fuzz_frame_limits(data[0]);
    data++, size--;

    size_t pos = 0;
    while (pos < size) {
        struct fdn__frame_hdr h;
        enum fdn__wire_error reason = FDN__WIRE_ERROR_COUNT;
        int rc = fdn__frame_decode(data + pos, size - pos, &lim, &h, &reason);
        check_outcome(rc, reason);
        if (rc <= 0)
            break;
        check_round_trip(data + pos, (size_t)rc, &h, &lim);
        check_prefixes_need_more(data + pos, (size_t)rc, &lim);
        check_extensions(&h, (size_t)rc);
        pos += (size_t)rc;
        if (h.frag_len > size - pos)
            break;   /* the payload has not all arrived */
        if (h.type == FDN__FRAME_RESUME)
            check_resume_payload(&h, data + pos, &lim);
        if (h.flags & FDN__FRAME_PACKED)
            check_packed_payload(&h, data + pos);
        pos += h.frag_len;
    }
    return 0;
}
