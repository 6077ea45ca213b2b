/* libFuzzer target for reassembly (core/reassembly.c).
 *
 * Input: one byte choosing the channel configuration (see configure()), then
 * records, each an op byte and its fields, little-endian:
 *
 *   op % 8 == 1     CONSUMED  channel u8 | bytes u16: the application
 *                             releases bytes (also the oldest held message)
 *   op % 8 == 2     GRANT     channel u8 | threshold u16
 *   op % 8 == 7     RESUME    channel u8: the session resumes on a new
 *                             connection (fdn__reasm_resume_channel())
 *   any other op    FRAGMENT  channel u8 | msg_id u8 | flags u8 (bit 0 first,
 *                             bit 1 last) | offset u16 | total_len u16 |
 *                             len u16, then min(len, what is left) payload
 *                             bytes (the length passed is what was taken)
 *
 * A record cut short by the end of the input ends the run. Channel bytes
 * select among five ids, four configured and one not. Properties checked on
 * every call (besides ASan and UBSan):
 *   - a fragment returns 1, 0, -EPROTO or -ENOBUFS, and 1 only with a
 *     message; -EPROTO always carries a reason (not OK, not pool
 *     exhaustion) and a fresh fdn_errmsg() detail; -ENOBUFS carries
 *     POOL_EXHAUSTED;
 *   - a refused fragment changes none of the channel's counters;
 *   - a completed message has the fragment's total_len and exactly the
 *     bytes of the fragments accepted for it (a shadow copy is kept);
 *   - a flow-controlled channel never holds more than its window plus what
 *     it granted; consumed never exceeds received; a grant only returns
 *     consumed bytes (until the channel's first RESUME, which starts the
 *     credit account afresh; after it only the other properties hold);
 *   - RESUME drops the message in progress (nothing is left incomplete) and
 *     never offers more than the window.
 * Completed messages are held (up to 8) and released by CONSUMED records,
 * and the pool is small (192 KiB), so a few large messages in progress
 * exhaust it and the backpressure path (-ENOBUFS) is reached.
 *
 * Build with -DFUZZ_REASM_TRACE to print each fragment's outcome (to check
 * what a seed reaches: make_corpus.py describes each seed's intent). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include <fdn/error.h>

#include "base/error.h"
#include "core/reassembly.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NUM_IDS 5
#define CONFIGURED 4
#define MAX_HELD 8
#define SHADOW_MAX 65536

static const uint16_t channel_ids[NUM_IDS] = {0, 1, 7, 300, 9}; /* 9 is not configured */

/* The input being read. */
struct reader {
    const uint8_t *p;
    size_t left;
};

static bool take(struct reader *r, void *out, size_t n)
{
    if (r->left < n)
        return false;
    memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

static bool take_u8(struct reader *r, uint8_t *v) { return take(r, v, 1); }

static bool take_u16(struct reader *r, uint16_t *v)
{
    uint8_t b[2];
    if (!take(r, b, 2))
        return false;
    *v = (uint16_t)(b[0] | b[1] << 8);
    return true;
}

/* What the harness knows of a channel, to check the reassembler against. */
struct shadow {
    uint64_t max_message, credit_window;
    bool resumed;                   /* the credit checks no longer apply */
    uint8_t bytes[SHADOW_MAX];      /* the message in progress, as accepted */
    uint64_t len;
};

struct harness {
    struct fdn__reasm *r;
    fdn_pool *pool;
    struct shadow ch[CONFIGURED];
    fdn_msg *held[MAX_HELD];
    uint16_t held_channel[MAX_HELD];
    unsigned num_held;
};

/* A pool of its own per input, so that an input replays alone exactly as it
 * ran (no slabs carried over from earlier inputs) and destroying it checks
 * that every buffer came back. Small slabs, so that one size class does not
 * take the whole pool. */
static fdn_pool *make_pool(void)
{
    fdn_pool *p;
    fdn_pool_config cfg = {.max_bytes = 192u << 10, .slab_bytes = 64u << 10};
    FUZZ_CHECK(fdn_pool_create(&cfg, &p) == 0);
    return p;
}

/* The selector's bits choose, per channel: max_message, whether it is
 * flow-controlled, and a memory budget below max_message or not. */
static void configure(struct harness *h, uint8_t selector)
{
    static const uint64_t max_messages[] = {1, 100, 4096, 65536};
    FUZZ_CHECK(fdn__reasm_create(&h->r) == 0);
    for (unsigned i = 0; i < CONFIGURED; i++) {
        unsigned bits = (selector >> (2 * i)) & 3;
        uint64_t max = max_messages[(i + bits) % 4];
        struct fdn__reasm_channel_config cfg = {
            .id = channel_ids[i],
            .max_message = max,
            .memory_budget = bits & 1 ? max / 2 + 1 : 0,
            .credit_window = bits & 2 ? 2 * max : 0,
        };
        FUZZ_CHECK(fdn__reasm_add_channel(h->r, &cfg) == 0);
        h->ch[i] = (struct shadow){.max_message = max, .credit_window = cfg.credit_window};
    }
    /* A duplicate and an invalid channel are refused. */
    struct fdn__reasm_channel_config dup = {.id = channel_ids[0], .max_message = 1};
    FUZZ_CHECK(fdn__reasm_add_channel(h->r, &dup) == -EEXIST);
    struct fdn__reasm_channel_config bad = {.id = 500, .max_message = 10, .credit_window = 5};
    FUZZ_CHECK(fdn__reasm_add_channel(h->r, &bad) == -EINVAL);
}

static int channel_index(uint8_t selector) { return selector % NUM_IDS; }

static struct fdn__reasm_channel_stats stats_of(const struct harness *h, uint16_t id)
{
    struct fdn__reasm_channel_stats st = {0};
    FUZZ_CHECK(fdn__reasm_channel_stats(h->r, id, &st) == 0);
    return st;
}

static void check_flow(const struct harness *h, int i)
{
    if (h->ch[i].resumed)
        return;
    struct fdn__reasm_channel_stats st = stats_of(h, channel_ids[i]);
    FUZZ_CHECK(st.consumed_bytes <= st.received_bytes);
    FUZZ_CHECK(st.granted_bytes <= st.consumed_bytes);
    if (h->ch[i].credit_window)
        FUZZ_CHECK(st.received_bytes <= h->ch[i].credit_window + st.granted_bytes);
}

static void hold(struct harness *h, uint16_t id, fdn_msg *m)
{
    if (h->num_held == MAX_HELD) { /* the oldest is released unreported */
        fdn_msg_free(h->held[0]);
        memmove(h->held, h->held + 1, (MAX_HELD - 1) * sizeof h->held[0]);
        memmove(h->held_channel, h->held_channel + 1, (MAX_HELD - 1) * sizeof(uint16_t));
        h->num_held--;
    }
    h->held[h->num_held] = m;
    h->held_channel[h->num_held++] = id;
}

/* Checks the outcome of a fragment against the shadow and the counters. */
static void check_fragment(struct harness *h, int i, int rc, fdn_msg *complete, uint64_t total,
                           bool first, const uint8_t *payload, uint16_t len,
                           const struct fdn__reasm_channel_stats *before)
{
    uint16_t id = channel_ids[i];
    if (rc < 0) {
        enum fdn__reasm_error why = fdn__reasm_last_error(h->r);
        if (rc == -EPROTO)
            FUZZ_CHECK(why != FDN__REASM_OK && why != FDN__REASM_POOL_EXHAUSTED &&
                       strcmp(fdn__reasm_error_name(why), "unknown reason") != 0);
        else
            FUZZ_CHECK(rc == -ENOBUFS && why == FDN__REASM_POOL_EXHAUSTED);
        FUZZ_CHECK(strstr(fdn_errmsg(), "fuzz-sentinel") == NULL && fdn_errmsg()[0]);
        if (i < CONFIGURED) {
            struct fdn__reasm_channel_stats after = stats_of(h, id);
            FUZZ_CHECK(memcmp(before, &after, sizeof after) == 0);
        }
        return;
    }
    FUZZ_CHECK(i < CONFIGURED && (rc == 0 || rc == 1));
    struct shadow *s = &h->ch[i];
    if (first)
        s->len = 0;
    FUZZ_CHECK(s->len + len <= total && total <= s->max_message);
    memcpy(s->bytes + s->len, payload, len);
    s->len += len;
    if (rc == 0)
        return;
    FUZZ_CHECK(complete && s->len == total && fdn_msg_total_len(complete) == total);
    FUZZ_CHECK(total == 0 || memcmp(fdn_msg_data(complete), s->bytes, total) == 0);
    hold(h, id, complete);
    check_flow(h, i);
}

static bool do_fragment(struct harness *h, struct reader *in)
{
    uint8_t sel, msg_id, flags;
    uint16_t offset, total, len;
    if (!take_u8(in, &sel) || !take_u8(in, &msg_id) || !take_u8(in, &flags) ||
        !take_u16(in, &offset) || !take_u16(in, &total) || !take_u16(in, &len))
        return false;
    if (len > in->left)
        len = (uint16_t)in->left;
    const uint8_t *payload = in->p;
    in->p += len;
    in->left -= len;

    int i = channel_index(sel);
    struct fdn__reasm_channel_stats before = {0};
    if (i < CONFIGURED)
        before = stats_of(h, channel_ids[i]);
    fdn_msg *complete = NULL;
    fdn__error(0, "fuzz-sentinel", 0, "%s", "not set by reassembly");
    bool first = flags & 1;
    int rc = fdn__reasm_fragment(h->r, channel_ids[i], msg_id, offset, total, first,
                                 flags & 2, payload, len, h->pool, &complete);
    FUZZ_CHECK((rc == 1) == (complete != NULL));
#ifdef FUZZ_REASM_TRACE
    fprintf(stderr, "fragment ch %u msg %u %s%s off %u total %u len %u: %d %s\n", channel_ids[i],
            msg_id, first ? "F" : "-", flags & 2 ? "L" : "-", offset, total, len, rc,
            rc < 0 ? fdn__reasm_error_name(fdn__reasm_last_error(h->r)) : "");
#endif
    check_fragment(h, i, rc, complete, total, first, payload, len, &before);
    return true;
}

/* Releases the oldest held message of the channel, if any, and reports bytes
 * consumed (any amount: more than received must be refused). */
static bool do_consumed(struct harness *h, struct reader *in)
{
    uint8_t sel;
    uint16_t bytes;
    if (!take_u8(in, &sel) || !take_u16(in, &bytes))
        return false;
    int i = channel_index(sel);
    for (unsigned k = 0; k < h->num_held; k++)
        if (h->held_channel[k] == channel_ids[i]) {
            fdn_msg_free(h->held[k]);
            memmove(h->held + k, h->held + k + 1, (h->num_held - k - 1) * sizeof h->held[0]);
            memmove(h->held_channel + k, h->held_channel + k + 1,
                    (h->num_held - k - 1) * sizeof(uint16_t));
            h->num_held--;
            break;
        }
    int rc = fdn__reasm_consumed(h->r, channel_ids[i], bytes);
    if (i >= CONFIGURED) {
        FUZZ_CHECK(rc == -ENOENT);
        return true;
    }
    FUZZ_CHECK(rc == 0 || rc == -ERANGE);
    check_flow(h, i);
    return true;
}

static bool do_grant(struct harness *h, struct reader *in)
{
    uint8_t sel;
    uint16_t threshold;
    if (!take_u8(in, &sel) || !take_u16(in, &threshold))
        return false;
    int i = channel_index(sel);
    struct fdn__reasm_channel_stats before = {0};
    if (i < CONFIGURED)
        before = stats_of(h, channel_ids[i]);
    uint64_t grant = fdn__reasm_credit_to_grant(h->r, channel_ids[i], threshold);
    if (i >= CONFIGURED || !h->ch[i].credit_window) {
        FUZZ_CHECK(grant == 0);
        return true;
    }
    struct fdn__reasm_channel_stats after = stats_of(h, channel_ids[i]);
    FUZZ_CHECK(after.granted_bytes == before.granted_bytes + grant);
    check_flow(h, i);
    return true;
}

static bool do_resume(struct harness *h, struct reader *in)
{
    uint8_t sel;
    if (!take_u8(in, &sel))
        return false;
    int i = channel_index(sel);
    uint64_t window = UINT64_MAX;
    int rc = fdn__reasm_resume_channel(h->r, channel_ids[i], &window);
    if (i >= CONFIGURED) {
        FUZZ_CHECK(rc == -ENOENT);
        return true;
    }
    FUZZ_CHECK(rc == 0 && window <= h->ch[i].credit_window);
    h->ch[i].resumed = true;
    h->ch[i].len = 0;
    FUZZ_CHECK(stats_of(h, channel_ids[i]).incomplete_bytes == 0);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static struct harness h; /* the shadows are large: not on the stack */
    memset(&h, 0, sizeof h);
    h.pool = make_pool();
    configure(&h, data[0]);
    struct reader in = {.p = data + 1, .left = size - 1};
    for (bool more = true; more;) {
        uint8_t op;
        if (!take_u8(&in, &op))
            break;
        switch (op % 8) {
        case 1: more = do_consumed(&h, &in); break;
        case 2: more = do_grant(&h, &in); break;
        case 7: more = do_resume(&h, &in); break;
        default: more = do_fragment(&h, &in); break;
        }
    }
    for (unsigned k = 0; k < h.num_held; k++)
        fdn_msg_free(h.held[k]);
    fdn__reasm_destroy(h.r); /* frees messages in progress */
    FUZZ_CHECK(fdn_pool_destroy(h.pool) == 0); /* -EBUSY if a buffer leaked */
    return 0;
}
