/* fdn-perf's control messages: requests on the coordination channel that
 * frame a measured run. They are requests (fdn_request), so they never mix
 * with the measured traffic, which is plain messages even when it shares the
 * coordination channel.
 *
 *   BEGIN(mode, channel, size) -> status        the server resets its counters
 *                                               and echoes (lat), counts (bw) or
 *                                               counts and checks (bw --verify)
 *   STATS(expected messages)   -> status, messages, bytes, span
 *                                               answered once the server has
 *                                               received `expected` messages,
 *                                               or when arrivals stop for a while;
 *                                               in a VERIFY run also delivered,
 *                                               lost, duplicated, reordered and
 *                                               corrupted (perf_verify.h), where
 *                                               `expected` is what the client sent
 *
 * Layout, little-endian:
 *   request:  0 magic u32 | 4 op u8 | 5 mode u8 | 6 channel u16 | 8 arg u64       (16 bytes)
 *   reply:    0 magic u32 | 4 op u8 | 5 pad[3]  | 8 status i32  | 12 pad u32
 *             | 16 messages u64 | 24 bytes u64 | 32 span_ns u64                 (40 bytes)
 *   STATS reply of a VERIFY run: the above, then
 *             40 delivered u64 | 48 lost u64 | 56 duplicated u64
 *             | 64 reordered u64 | 72 corrupted u64                             (80 bytes)
 * A server that predates VERIFY refuses that BEGIN with -EINVAL. */
#ifndef FDN_TOOLS_PERF_PROTO_H
#define FDN_TOOLS_PERF_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PERF_CTL_MAGIC 0x46525046u /* "FPRF" */
#define PERF_CTL_REQUEST_SIZE 16
#define PERF_CTL_REPLY_SIZE 40
#define PERF_CTL_VERIFY_REPLY_SIZE 80

enum perf_ctl_op {
    PERF_CTL_BEGIN = 1,
    PERF_CTL_STATS = 2,
};

enum perf_ctl_mode {
    PERF_CTL_ECHO = 1,   /* lat: send every message back on its channel */
    PERF_CTL_COUNT = 2,  /* bw: count and free */
    PERF_CTL_VERIFY = 3, /* bw --verify: count, check (perf_verify.h) and free */
};

struct perf_ctl_request {
    uint8_t op;
    uint8_t mode;
    uint16_t channel;
    uint64_t arg;        /* BEGIN: message size; STATS: messages the client sent */
};

struct perf_ctl_reply {
    uint8_t op;
    int32_t status;      /* 0 or a negative errno */
    uint64_t messages;
    uint64_t bytes;
    uint64_t span_ns;    /* first to last arrival, on the server's clock (read on
                            every 64th arrival: up to 63 short of the last) */
    bool has_verify;     /* the verify counters below are present */
    uint64_t delivered, lost, duplicated, reordered, corrupted;
};

static inline void perf_store_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void perf_store_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void perf_store_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint16_t perf_load_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t perf_load_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t perf_load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline void perf_ctl_request_encode(const struct perf_ctl_request *r, uint8_t *buf)
{
    perf_store_le32(buf, PERF_CTL_MAGIC);
    buf[4] = r->op;
    buf[5] = r->mode;
    perf_store_le16(buf + 6, r->channel);
    perf_store_le64(buf + 8, r->arg);
}

static inline bool perf_ctl_request_decode(const uint8_t *buf, size_t len,
                                           struct perf_ctl_request *out)
{
    if (len != PERF_CTL_REQUEST_SIZE || perf_load_le32(buf) != PERF_CTL_MAGIC)
        return false;
    out->op = buf[4];
    out->mode = buf[5];
    out->channel = perf_load_le16(buf + 6);
    out->arg = perf_load_le64(buf + 8);
    return true;
}

/* Bytes perf_ctl_reply_encode() writes for r. */
static inline size_t perf_ctl_reply_size(const struct perf_ctl_reply *r)
{
    return r->has_verify ? PERF_CTL_VERIFY_REPLY_SIZE : PERF_CTL_REPLY_SIZE;
}

static inline void perf_ctl_reply_encode(const struct perf_ctl_reply *r, uint8_t *buf)
{
    perf_store_le32(buf, PERF_CTL_MAGIC);
    buf[4] = r->op;
    buf[5] = buf[6] = buf[7] = 0;
    perf_store_le32(buf + 8, (uint32_t)r->status);
    perf_store_le32(buf + 12, 0);
    perf_store_le64(buf + 16, r->messages);
    perf_store_le64(buf + 24, r->bytes);
    perf_store_le64(buf + 32, r->span_ns);
    if (!r->has_verify)
        return;
    perf_store_le64(buf + 40, r->delivered);
    perf_store_le64(buf + 48, r->lost);
    perf_store_le64(buf + 56, r->duplicated);
    perf_store_le64(buf + 64, r->reordered);
    perf_store_le64(buf + 72, r->corrupted);
}

static inline bool perf_ctl_reply_decode(const uint8_t *buf, size_t len,
                                         struct perf_ctl_reply *out)
{
    if ((len != PERF_CTL_REPLY_SIZE && len != PERF_CTL_VERIFY_REPLY_SIZE) ||
        perf_load_le32(buf) != PERF_CTL_MAGIC)
        return false;
    out->op = buf[4];
    out->status = (int32_t)perf_load_le32(buf + 8);
    out->messages = perf_load_le64(buf + 16);
    out->bytes = perf_load_le64(buf + 24);
    out->span_ns = perf_load_le64(buf + 32);
    out->has_verify = len == PERF_CTL_VERIFY_REPLY_SIZE;
    if (out->has_verify) {
        out->delivered = perf_load_le64(buf + 40);
        out->lost = perf_load_le64(buf + 48);
        out->duplicated = perf_load_le64(buf + 56);
        out->reordered = perf_load_le64(buf + 64);
        out->corrupted = perf_load_le64(buf + 72);
    }
    return true;
}

#endif
