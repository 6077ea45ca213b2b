/* Tests of reassembly (core/reassembly.c): seeded random messages from 0 B to
 * 64 MiB, cut at random fragment sizes and interleaved across channels,
 * reassembled byte for byte; every protocol violation with its reason and
 * without side effects; limits checked before allocation; memory budget;
 * pool exhaustion as backpressure; receive-credit accounting; teardown. */
#include "core/reassembly.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include <fdn/msg.h>

#include "test.h"
#include "test_data.h"

#define KiB ((uint64_t)1 << 10)
#define MiB ((uint64_t)1 << 20)

/* ---- Helpers ------------------------------------------------------------ */

static fdn_pool_stats pool_stats(const fdn_pool *pool)
{
    fdn_pool_stats st;
    fdn_pool_stats_get(pool, &st);
    return st;
}

static struct fdn__reasm *make_reasm(void)
{
    struct fdn__reasm *r;
    CHECK_OK(fdn__reasm_create(&r));
    return r;
}

static void add_channel(struct fdn__reasm *r, uint16_t id, uint64_t max_message,
                        uint64_t budget, uint64_t window)
{
    struct fdn__reasm_channel_config cfg = {
        .id = id, .max_message = max_message, .memory_budget = budget, .credit_window = window,
    };
    CHECK_OK(fdn__reasm_add_channel(r, &cfg));
}

static struct fdn__reasm_channel_stats channel_stats(const struct fdn__reasm *r, uint16_t id)
{
    struct fdn__reasm_channel_stats st;
    CHECK_OK(fdn__reasm_channel_stats(r, id, &st));
    return st;
}

/* A fragment under test, with a payload in the message's pattern. */
struct frag {
    uint16_t channel;
    uint64_t msg_id;
    uint64_t offset;
    uint64_t total;
    uint32_t len;
    bool first;
    bool last;
};

static uint8_t scratch[2 * 1024 * 1024];

static int feed(struct fdn__reasm *r, fdn_pool *pool, struct frag f, fdn_msg **complete)
{
    CHECK(f.len <= sizeof scratch);
    fill_pattern(scratch, f.msg_id, f.offset, f.len);
    return fdn__reasm_fragment(r, f.channel, f.msg_id, f.offset, f.total, f.first, f.last,
                               scratch, f.len, pool, complete);
}

/* Feeds a fragment that must be refused with -EPROTO for the given reason,
 * and checks that nothing was allocated. */
static void expect_violation(struct fdn__reasm *r, fdn_pool *pool, struct frag f,
                             enum fdn__reasm_error why)
{
    uint64_t allocs = pool_stats(pool).allocs;
    fdn_msg *complete = NULL;
    CHECK_EQ(feed(r, pool, f, &complete), -EPROTO);
    CHECK_EQ(fdn__reasm_last_error(r), why);
    CHECK(complete == NULL);
    CHECK_EQ(pool_stats(pool).allocs, allocs);
    CHECK(strlen(fdn_errmsg()) > 0);
}

static void expect_more(struct fdn__reasm *r, fdn_pool *pool, struct frag f)
{
    fdn_msg *complete = NULL;
    CHECK_EQ(feed(r, pool, f, &complete), 0);
    CHECK(complete == NULL);
}

/* Feeds the fragment that completes a message and checks it whole. */
static void expect_complete(struct fdn__reasm *r, fdn_pool *pool, struct frag f)
{
    fdn_msg *complete = NULL;
    CHECK_EQ(feed(r, pool, f, &complete), 1);
    CHECK(complete != NULL);
    CHECK_EQ(fdn_msg_len(complete), f.total);
    CHECK(matches_pattern(fdn_msg_data(complete), f.msg_id, 0, f.total));
    fdn_msg_free(complete);
}

static struct frag whole(uint16_t channel, uint64_t msg_id, uint32_t len)
{
    return (struct frag){ channel, msg_id, 0, len, len, true, true };
}

/* ---- Random traffic ------------------------------------------------------- */

enum { RT_CHANNELS = 4, RT_MSGS = 60 };

struct rt_channel {
    uint16_t id;
    uint64_t lens[RT_MSGS];
    uint64_t ids[RT_MSGS];
    int sent_msgs;           /* messages whose last fragment went out */
    uint64_t offset;         /* of the next fragment of message sent_msgs */
    int delivered;
};

/* Sizes from 0 B to 64 MiB, large ones rare (about 200 MB in all), so the
 * test stays fast even under sanitizers. */
static uint64_t random_size(uint64_t *rng, int channel, int index)
{
    if (channel == 0 && (index == 10 || index == 40))
        return 64 * MiB;                     /* the largest, exactly */
    uint64_t pick = random_below(rng, 100);
    if (pick < 10)
        return 0;
    if (pick < 60)
        return random_below(rng, 4 * KiB);
    if (pick < 90)
        return random_below(rng, 256 * KiB);
    return random_below(rng, 4 * MiB);
}

/* Cuts fragments as a sender with a random fragment size would: anything
 * from one byte to the scratch buffer, and often the whole rest. */
static uint32_t random_fragment(uint64_t *rng, uint64_t left)
{
    uint64_t len = random_below(rng, 2) ? left : 1 + random_below(rng, sizeof scratch);
    if (len > sizeof scratch)
        len = sizeof scratch;
    return (uint32_t)(len < left ? len : left);
}

static void rt_send_fragment(struct fdn__reasm *r, fdn_pool *pool, struct rt_channel *c,
                             uint64_t *rng)
{
    uint64_t total = c->lens[c->sent_msgs];
    uint32_t len = random_fragment(rng, total - c->offset);
    struct frag f = { c->id, c->ids[c->sent_msgs], c->offset, total, len,
                      c->offset == 0, c->offset + len == total };
    fdn_msg *complete = NULL;
    int rc = feed(r, pool, f, &complete);
    if (!f.last) {
        CHECK_EQ(rc, 0);
        c->offset += len;
        return;
    }
    CHECK_EQ(rc, 1);
    CHECK_EQ(f.msg_id, c->ids[c->delivered]);
    CHECK_EQ(fdn_msg_len(complete), total);
    CHECK(matches_pattern(fdn_msg_data(complete), f.msg_id, 0, total));
    fdn_msg_free(complete);
    c->delivered++;
    c->sent_msgs++;
    c->offset = 0;
}

static void test_random_interleaved(void)
{
    fdn_pool *pool = make_pool(1024 * MiB);
    struct fdn__reasm *r = make_reasm();
    static struct rt_channel ch[RT_CHANNELS];
    uint64_t rng = 99, next_id = 1;
    for (int c = 0; c < RT_CHANNELS; c++) {
        ch[c] = (struct rt_channel){ .id = (uint16_t)(100 + 37 * c) };
        add_channel(r, ch[c].id, 64 * MiB, 0, 0);
        for (int i = 0; i < RT_MSGS; i++) {
            ch[c].lens[i] = random_size(&rng, c, i);
            ch[c].ids[i] = next_id++;
        }
    }
    uint64_t max_in_use = 0;
    for (;;) {
        int live[RT_CHANNELS], n = 0;
        for (int c = 0; c < RT_CHANNELS; c++)
            if (ch[c].sent_msgs < RT_MSGS)
                live[n++] = c;
        if (n == 0)
            break;
        rt_send_fragment(r, pool, &ch[live[random_below(&rng, (uint64_t)n)]], &rng);
        uint64_t in_use = pool_stats(pool).buffers_in_use;
        max_in_use = in_use > max_in_use ? in_use : max_in_use;
    }
    /* At most one message in progress per channel, and nothing kept. */
    CHECK(max_in_use <= RT_CHANNELS);
    for (int c = 0; c < RT_CHANNELS; c++) {
        CHECK_EQ(ch[c].delivered, RT_MSGS);
        struct fdn__reasm_channel_stats st = channel_stats(r, ch[c].id);
        CHECK_EQ(st.messages, RT_MSGS);
        CHECK_EQ(st.incomplete_bytes, 0);
        uint64_t bytes = 0;
        for (int i = 0; i < RT_MSGS; i++)
            bytes += ch[c].lens[i];
        CHECK_EQ(st.bytes, bytes);
        CHECK_EQ(st.received_bytes, bytes);
    }
    fdn__reasm_destroy(r);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* ---- Violations ----------------------------------------------------------- */

static void test_configuration(void)
{
    struct fdn__reasm *r = make_reasm();
    struct fdn__reasm_channel_config cfg = { .id = 1, .max_message = 0 };
    CHECK_EQ(fdn__reasm_add_channel(r, &cfg), -EINVAL);
    cfg.max_message = (uint64_t)UINT32_MAX + 1;
    CHECK_EQ(fdn__reasm_add_channel(r, &cfg), -EINVAL);
    cfg.max_message = 1000;
    cfg.credit_window = 999;   /* a 1000-byte message could never be granted */
    CHECK_EQ(fdn__reasm_add_channel(r, &cfg), -EINVAL);
    cfg.credit_window = 1000;
    CHECK_OK(fdn__reasm_add_channel(r, &cfg));
    CHECK_EQ(fdn__reasm_add_channel(r, &cfg), -EEXIST);
    /* Ids added out of order are still found. */
    for (int id = 60; id > 1; id -= 7)
        add_channel(r, (uint16_t)id, 100, 0, 0);
    struct fdn__reasm_channel_stats st;
    CHECK_OK(fdn__reasm_channel_stats(r, 4, &st));
    CHECK_OK(fdn__reasm_channel_stats(r, 60, &st));
    CHECK_EQ(fdn__reasm_channel_stats(r, 5, &st), -ENOENT);
    CHECK_EQ(fdn__reasm_last_error(r), FDN__REASM_OK);
    for (int e = FDN__REASM_OK; e <= FDN__REASM_POOL_EXHAUSTED; e++)
        CHECK(strlen(fdn__reasm_error_name((enum fdn__reasm_error)e)) > 0);
    fdn__reasm_destroy(r);
    fdn__reasm_destroy(NULL);
}

/* Every violation without a message in progress. */
static void test_violations_at_start(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 5, 1000, 500, 0);

    expect_violation(r, pool, whole(6, 1, 10), FDN__REASM_UNKNOWN_CHANNEL);
    expect_violation(r, pool, (struct frag){ 5, 1, 100, 400, 100, false, false },
                     FDN__REASM_OUT_OF_ORDER);
    expect_violation(r, pool, (struct frag){ 5, 1, 10, 400, 100, true, false },
                     FDN__REASM_OUT_OF_ORDER);
    /* Size limits are checked before anything is allocated. */
    expect_violation(r, pool, (struct frag){ 5, 1, 0, 1001, 100, true, false },
                     FDN__REASM_OVER_MAX_MESSAGE);
    expect_violation(r, pool, whole(5, 1, 1001), FDN__REASM_OVER_MAX_MESSAGE);
    expect_violation(r, pool, (struct frag){ 5, 1, 0, (uint64_t)1 << 40, 100, true, false },
                     FDN__REASM_OVER_MAX_MESSAGE);
    expect_violation(r, pool, (struct frag){ 5, 1, 0, 600, 100, true, false },
                     FDN__REASM_OVER_BUDGET);
    /* A message in one fragment is never incomplete: only max_message holds. */
    expect_complete(r, pool, whole(5, 2, 600));
    /* First fragments whose length contradicts the flags. */
    expect_violation(r, pool, (struct frag){ 5, 3, 0, 400, 400, true, false },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 3, 0, 400, 300, true, true },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 3, 0, 400, 401, true, false },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 3, 0, 400, 0, true, false },
                     FDN__REASM_SIZE_MISMATCH);
    CHECK_EQ(channel_stats(r, 5).messages, 1);
    CHECK_EQ(channel_stats(r, 5).received_bytes, 600);

    fdn__reasm_destroy(r);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* Every violation against a message in progress; none disturbs it. */
static void test_violations_in_progress(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 5, 1000, 500, 0);
    add_channel(r, 8, 1000, 0, 0);

    expect_more(r, pool, (struct frag){ 5, 1, 0, 400, 100, true, false });
    CHECK_EQ(channel_stats(r, 5).incomplete_bytes, 400);
    uint64_t allocs = pool_stats(pool).allocs;

    expect_violation(r, pool, (struct frag){ 5, 2, 0, 400, 100, true, false },
                     FDN__REASM_UNEXPECTED_FIRST);
    expect_violation(r, pool, whole(5, 2, 10), FDN__REASM_UNEXPECTED_FIRST);
    expect_violation(r, pool, (struct frag){ 5, 1, 200, 400, 100, false, false },
                     FDN__REASM_OUT_OF_ORDER);
    expect_violation(r, pool, (struct frag){ 5, 1, 0, 400, 100, false, false },
                     FDN__REASM_OUT_OF_ORDER);
    expect_violation(r, pool, (struct frag){ 5, 3, 100, 400, 100, false, false },
                     FDN__REASM_OUT_OF_ORDER);
    expect_violation(r, pool, (struct frag){ 5, 1, 100, 500, 100, false, false },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 1, 100, 400, 400, false, true },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 1, 100, 400, 300, false, false },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 1, 100, 400, 100, false, true },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 1, 100, 400, 0, false, false },
                     FDN__REASM_SIZE_MISMATCH);
    expect_violation(r, pool, (struct frag){ 5, 1, 100, 400, 0, false, true },
                     FDN__REASM_SIZE_MISMATCH);

    /* Another channel is independent of this one's message. */
    expect_complete(r, pool, whole(8, 9, 50));

    expect_more(r, pool, (struct frag){ 5, 1, 100, 400, 150, false, false });
    expect_complete(r, pool, (struct frag){ 5, 1, 250, 400, 150, false, true });
    CHECK_EQ(pool_stats(pool).allocs, allocs + 1);
    struct fdn__reasm_channel_stats st = channel_stats(r, 5);
    CHECK_EQ(st.messages, 1);
    CHECK_EQ(st.bytes, 400);
    CHECK_EQ(st.incomplete_bytes, 0);

    /* Once complete, a continuation is out of order again. */
    expect_violation(r, pool, (struct frag){ 5, 1, 400, 400, 0, false, true },
                     FDN__REASM_OUT_OF_ORDER);
    fdn__reasm_destroy(r);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* ---- Memory -------------------------------------------------------------- */

static void test_memory_budget(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 1, 1 * MiB, 64 * KiB, 0);
    add_channel(r, 2, 1 * MiB, 0, 0);   /* budget defaults to max_message */

    expect_violation(r, pool, (struct frag){ 1, 1, 0, 64 * KiB + 1, 1000, true, false },
                     FDN__REASM_OVER_BUDGET);
    expect_more(r, pool, (struct frag){ 1, 2, 0, 64 * KiB, 1000, true, false });
    expect_complete(r, pool, (struct frag){ 1, 2, 1000, 64 * KiB, 64 * KiB - 1000, false, true });
    expect_complete(r, pool, whole(1, 3, 200 * KiB));

    expect_more(r, pool, (struct frag){ 2, 4, 0, 1 * MiB, 1000, true, false });
    expect_complete(r, pool, (struct frag){ 2, 4, 1000, 1 * MiB, 1 * MiB - 1000, false, true });
    fdn__reasm_destroy(r);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* An empty pool is backpressure, not a violation: nothing changes, and the
 * same fragment is accepted once memory is back. */
static void test_pool_exhaustion(void)
{
    /* Sizes well above the pool's largest size class, so that each takes a
     * buffer of its own and the arithmetic does not depend on the classes. */
    fdn_pool *pool = make_pool(64 * MiB);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 1, 64 * MiB, 0, 0);

    fdn_msg *hog = NULL;
    CHECK_OK(fdn_msg_alloc(pool, 40 * MiB, &hog));
    struct frag start = { 1, 1, 0, 32 * MiB, 4096, true, false };
    fdn_msg *complete = NULL;
    uint64_t failures = pool_stats(pool).alloc_failures;
    CHECK_EQ(feed(r, pool, start, &complete), -ENOBUFS);
    CHECK_EQ(fdn__reasm_last_error(r), FDN__REASM_POOL_EXHAUSTED);
    CHECK_EQ(pool_stats(pool).alloc_failures, failures + 1);
    CHECK_EQ(channel_stats(r, 1).incomplete_bytes, 0);
    CHECK_EQ(channel_stats(r, 1).received_bytes, 0);
    CHECK_EQ(feed(r, pool, (struct frag){ 1, 2, 0, 32 * MiB, (uint32_t)(2 * MiB), true, false },
                  &complete), -ENOBUFS);

    /* Small messages still fit. */
    expect_complete(r, pool, whole(1, 3, 100));

    /* Memory is back: the refused fragment is accepted as it was. */
    fdn_msg_free(hog);
    expect_more(r, pool, start);
    uint64_t at = start.len;
    for (; 32 * MiB - at > sizeof scratch; at += sizeof scratch)
        expect_more(r, pool, (struct frag){ 1, 1, at, 32 * MiB, sizeof scratch, false, false });
    expect_complete(r, pool, (struct frag){ 1, 1, at, 32 * MiB, (uint32_t)(32 * MiB - at),
                                            false, true });
    fdn__reasm_destroy(r);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_teardown_frees_in_progress(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 1, 1 * MiB, 0, 0);
    add_channel(r, 2, 8 * MiB, 0, 0);
    expect_more(r, pool, (struct frag){ 1, 1, 0, 5000, 100, true, false });
    expect_more(r, pool, (struct frag){ 2, 2, 0, 4 * MiB, 100, true, false });
    CHECK_EQ(pool_stats(pool).buffers_in_use, 2);
    fdn__reasm_destroy(r);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_single_fragment_and_empty(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 3, 100, 0, 0);
    fdn_msg *complete = NULL;
    CHECK_EQ(fdn__reasm_fragment(r, 3, 1, 0, 0, true, true, NULL, 0, pool, &complete), 1);
    CHECK(complete != NULL);
    CHECK_EQ(fdn_msg_len(complete), 0);
    fdn_msg_free(complete);
    expect_complete(r, pool, whole(3, 2, 100));
    CHECK_EQ(channel_stats(r, 3).messages, 2);
    CHECK_EQ(pool_stats(pool).allocs, 2);
    fdn__reasm_destroy(r);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* ---- Receive credit ------------------------------------------------------- */

/* A session resumes: the message in progress is dropped (its sender starts
 * it again whole), and the sender gets the window minus what is held
 * complete and not consumed; grants go on from there. */
static void test_resume_channel(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 1, 4000, 0, 10000);
    add_channel(r, 2, 1000, 0, 0);

    expect_complete(r, pool, whole(1, 1, 3000));                      /* held */
    expect_complete(r, pool, whole(1, 2, 1000));
    CHECK_OK(fdn__reasm_consumed(r, 1, 1000));                        /* message 2 */
    expect_more(r, pool, (struct frag){ 1, 3, 0, 4000, 2500, true, false });
    uint64_t window;
    CHECK_OK(fdn__reasm_resume_channel(r, 1, &window));
    CHECK_EQ(window, 10000 - 3000);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);                    /* partial freed */
    struct fdn__reasm_channel_stats st = channel_stats(r, 1);
    CHECK_EQ(st.discarded_msgs, 1);
    CHECK_EQ(st.discarded_bytes, 2500);
    CHECK_EQ(st.incomplete_bytes, 0);

    /* Message 3 again, whole, from offset 0; the new credit is enforced. */
    expect_more(r, pool, (struct frag){ 1, 3, 0, 4000, 2500, true, false });
    expect_complete(r, pool, (struct frag){ 1, 3, 2500, 4000, 1500, false, true });
    expect_complete(r, pool, whole(1, 4, 3000));
    expect_violation(r, pool, whole(1, 5, 1), FDN__REASM_OVER_CREDIT);
    /* Discarded bytes are never consumed; held ones are, and come back. */
    CHECK_EQ(fdn__reasm_consumed(r, 1, 10001), -ERANGE);
    CHECK_OK(fdn__reasm_consumed(r, 1, 10000));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 1, 0), 10000);
    expect_complete(r, pool, whole(1, 5, 4000));

    /* Nothing in progress and nothing held: the whole window. */
    CHECK_OK(fdn__reasm_consumed(r, 1, 4000));
    CHECK_OK(fdn__reasm_resume_channel(r, 1, &window));
    CHECK_EQ(window, 10000);
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 1, 0), 0);   /* the resume gave it all */
    CHECK_OK(fdn__reasm_resume_channel(r, 2, &window));
    CHECK_EQ(window, 0);                                /* no flow control */
    CHECK_EQ(fdn__reasm_resume_channel(r, 9, &window), -ENOENT);
    fdn__reasm_destroy(r);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_credit_accounting(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__reasm *r = make_reasm();
    add_channel(r, 1, 6001, 0, 10000);   /* grant threshold capped at 3999 */
    add_channel(r, 2, 64 * KiB, 0, 0);
    add_channel(r, 3, 1000, 0, 10000);   /* cap 9000: a threshold of 5000 holds */

    expect_complete(r, pool, whole(1, 1, 4000));
    expect_more(r, pool, (struct frag){ 1, 2, 0, 6001, 2000, true, false });
    CHECK_OK(fdn__reasm_consumed(r, 1, 3000));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 1, 5000), 0);
    CHECK_OK(fdn__reasm_consumed(r, 1, 900));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 1, 5000), 0);
    CHECK_EQ(fdn__reasm_consumed(r, 1, 2101), -ERANGE);   /* only 2100 unconsumed */

    /* The window is full at 10000 bytes: one more is a violation. */
    expect_more(r, pool, (struct frag){ 1, 2, 2000, 6001, 4000, false, false });
    expect_violation(r, pool, (struct frag){ 1, 2, 6000, 6001, 1, false, true },
                     FDN__REASM_OVER_CREDIT);
    expect_violation(r, pool, whole(1, 3, 1), FDN__REASM_UNEXPECTED_FIRST);

    /* 4000 consumed reaches the capped threshold: all of it is granted, once.
     * Without the cap this channel would be stuck: the sender has no credit
     * for the last byte, and 4000 < 5000 would never grow. */
    CHECK_OK(fdn__reasm_consumed(r, 1, 100));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 1, 5000), 4000);
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 1, 0), 0);
    expect_complete(r, pool, (struct frag){ 1, 2, 6000, 6001, 1, false, true });
    expect_complete(r, pool, whole(1, 4, 3999));
    expect_violation(r, pool, whole(1, 5, 1), FDN__REASM_OVER_CREDIT);
    /* Empty messages carry no bytes and need no credit. */
    expect_complete(r, pool, whole(1, 6, 0));

    struct fdn__reasm_channel_stats st = channel_stats(r, 1);
    CHECK_EQ(st.received_bytes, 14000);
    CHECK_EQ(st.consumed_bytes, 4000);
    CHECK_EQ(st.granted_bytes, 4000);
    CHECK_OK(fdn__reasm_consumed(r, 1, 10000));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 1, 0), 10000);

    for (uint64_t i = 0; i < 5; i++)
        expect_complete(r, pool, whole(3, 20 + i, 1000));
    CHECK_OK(fdn__reasm_consumed(r, 3, 4000));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 3, 5000), 0);
    CHECK_OK(fdn__reasm_consumed(r, 3, 1000));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 3, 5000), 5000);

    /* Without a window nothing is enforced or granted. */
    for (uint64_t i = 0; i < 4; i++)
        expect_complete(r, pool, whole(2, 10 + i, (uint32_t)(60 * KiB)));
    CHECK_OK(fdn__reasm_consumed(r, 2, 240 * KiB));
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 2, 0), 0);

    CHECK_EQ(fdn__reasm_consumed(r, 9, 1), -ENOENT);
    CHECK_EQ(fdn__reasm_credit_to_grant(r, 9, 0), 0);
    fdn__reasm_destroy(r);
    CHECK_EQ(pool_stats(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

int main(void)
{
    RUN(test_configuration);
    RUN(test_single_fragment_and_empty);
    RUN(test_violations_at_start);
    RUN(test_violations_in_progress);
    RUN(test_memory_budget);
    RUN(test_pool_exhaustion);
    RUN(test_teardown_frees_in_progress);
    RUN(test_credit_accounting);
    RUN(test_resume_channel);
    RUN(test_random_interleaved);
    return 0;
}
