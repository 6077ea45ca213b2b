/* Tests of the frame scheduler (core/frame_sched.c): strict priority, DWRR
 * shares, fragment granularity, per-channel order, credit stalls and grants,
 * queue limits, empty messages, chains mapped to iovecs, frames completed out
 * of order, teardown, small messages packed into shared frames; then seeded
 * random traffic on five channels (plainly, and packed) through
 * the scheduler, fdn__frame_iov() and the reassembler (core/reassembly.c),
 * every message checked byte for byte, once, in order. */
#include "core/frame_sched.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include <fdn/msg.h>
#include <fdn/worker.h>

#include "base/compiler.h"
#include "core/reassembly.h"
#include "test.h"
#include "test_data.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* ---- Helpers ------------------------------------------------------------ */

static uint64_t buffers_in_use(const fdn_pool *pool)
{
    fdn_pool_stats st;
    fdn_pool_stats_get(pool, &st);
    return st.buffers_in_use;
}

static uint64_t pool_allocs(const fdn_pool *pool)
{
    fdn_pool_stats st;
    fdn_pool_stats_get(pool, &st);
    return st.allocs;
}

static fdn_msg *alloc_msg(fdn_pool *pool, size_t len)
{
    fdn_msg *m = NULL;
    CHECK_OK(fdn_msg_alloc(pool, len, &m));
    return m;
}

/* A chain of buffers with the given payload sizes, filled with seed's pattern. */
static fdn_msg *make_chain(fdn_pool *pool, const size_t *sizes, int n, uint64_t seed)
{
    fdn_msg *head = NULL;
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        fdn_msg *b = alloc_msg(pool, sizes[i]);
        fill_pattern(fdn_msg_data(b), seed, offset, sizes[i]);
        offset += sizes[i];
        if (head)
            fdn_msg_chain(head, b);
        else
            head = b;
    }
    return head;
}

/* A message of len bytes split into 1..4 buffers at random points. */
static fdn_msg *make_random_chain(fdn_pool *pool, size_t len, uint64_t seed, uint64_t *rng)
{
    size_t sizes[4];
    int n = 1 + (int)random_below(rng, 4);
    size_t left = len;
    for (int i = 0; i < n - 1; i++) {
        sizes[i] = (size_t)random_below(rng, left + 1);
        left -= sizes[i];
    }
    sizes[n - 1] = left;
    return make_chain(pool, sizes, n, seed);
}

static struct fdn__sched *make_sched(uint32_t max_fragment)
{
    struct fdn__sched_config cfg = { .max_fragment = max_fragment };
    struct fdn__sched *s;
    CHECK_OK(fdn__sched_create(&cfg, &s));
    return s;
}

static void add_channel(struct fdn__sched *s, uint16_t id, uint8_t prio, uint16_t weight,
                        uint64_t credit_window, uint32_t max_msgs)
{
    struct fdn__sched_channel_config cfg = {
        .id = id, .prio = prio, .weight = weight, .credit_window = credit_window,
        .max_queued_msgs = max_msgs,
    };
    CHECK_OK(fdn__sched_add_channel(s, &cfg));
}

static struct fdn__sched_channel_stats channel_stats(const struct fdn__sched *s, uint16_t id)
{
    struct fdn__sched_channel_stats st;
    CHECK_OK(fdn__sched_channel_stats(s, id, &st));
    return st;
}

static struct fdn__frame next_frame(struct fdn__sched *s)
{
    struct fdn__frame f;
    CHECK_EQ(fdn__sched_next(s, 0, &f), 1);
    return f;
}

/* Takes the next frame and reports it done at once, as a transport whose
 * sends complete immediately would. */
static struct fdn__frame send_one(struct fdn__sched *s)
{
    struct fdn__frame f = next_frame(s);
    fdn__sched_frame_done(s, &f);
    return f;
}

/* Copies the frame's bytes through fdn__frame_iov(); returns the count. */
static size_t copy_frame(const struct fdn__frame *f, uint8_t *dst)
{
    struct iovec iov[16];
    int n = fdn__frame_iov(f, iov, 16);
    CHECK(n >= 0);
    size_t copied = 0;
    for (int i = 0; i < n; i++) {
        CHECK(iov[i].iov_len > 0);
        memcpy(dst + copied, iov[i].iov_base, iov[i].iov_len);
        copied += iov[i].iov_len;
    }
    CHECK_EQ(copied, f->len);
    return copied;
}

static void enqueue_ok(struct fdn__sched *s, uint16_t channel, fdn_msg *m, uint64_t msg_id)
{
    CHECK_OK(fdn__sched_enqueue(s, channel, m, msg_id));
}

static void destroy_all(struct fdn__sched *s, fdn_pool *pool, uint64_t expect_dropped)
{
    CHECK_EQ(fdn__sched_destroy(s), expect_dropped);
    CHECK_EQ(buffers_in_use(pool), 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* ---- Configuration ------------------------------------------------------ */

static void test_config_errors(void)
{
    struct fdn__sched *s;
    struct fdn__sched_config big = { .max_fragment = FDN__SCHED_MAX_FRAGMENT + 1 };
    CHECK_EQ(fdn__sched_create(&big, &s), -EINVAL);
    CHECK_OK(fdn__sched_create(NULL, &s));

    struct fdn__sched_channel_config cfg = { .id = 1, .prio = 8, .weight = 1,
                                             .max_queued_msgs = 1 };
    CHECK_EQ(fdn__sched_add_channel(s, &cfg), -EINVAL);
    cfg.prio = FDN_PRIO_LOWEST;
    cfg.weight = 0;
    CHECK_EQ(fdn__sched_add_channel(s, &cfg), -EINVAL);
    cfg.weight = FDN__SCHED_MAX_WEIGHT + 1;
    CHECK_EQ(fdn__sched_add_channel(s, &cfg), -EINVAL);
    cfg.weight = FDN__SCHED_MAX_WEIGHT;
    cfg.max_queued_msgs = 0;
    CHECK_EQ(fdn__sched_add_channel(s, &cfg), -EINVAL);
    cfg.max_queued_msgs = 1;
    CHECK_OK(fdn__sched_add_channel(s, &cfg));
    CHECK_EQ(fdn__sched_add_channel(s, &cfg), -EEXIST);

    struct fdn__frame f;
    CHECK_EQ(fdn__sched_next(s, 0, &f), 0);
    CHECK(!fdn__sched_has_ready(s, 0));
    CHECK_EQ(fdn__sched_grant(s, 2, 100), -ENOENT);
    struct fdn__sched_channel_stats st;
    CHECK_EQ(fdn__sched_channel_stats(s, 2, &st), -ENOENT);
    CHECK_EQ(fdn__sched_destroy(s), 0);
    CHECK_EQ(fdn__sched_destroy(NULL), 0);
}

/* ---- Priority and shares ------------------------------------------------- */

static void test_strict_priority(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1024);
    add_channel(s, 2, FDN_PRIO_LOWEST, 1000, 0, 64);
    add_channel(s, 1, FDN_PRIO_HIGHEST, 1, 0, 64);
    add_channel(s, 3, FDN_PRIO_DEFAULT, 1, 0, 64);

    /* Bulk first, so that arrival order cannot explain the result. */
    for (uint64_t i = 0; i < 10; i++)
        enqueue_ok(s, 2, alloc_msg(pool, 8 * KiB), 100 + i);
    for (uint64_t i = 0; i < 4; i++)
        enqueue_ok(s, 3, alloc_msg(pool, 2 * KiB), 200 + i);
    for (uint64_t i = 0; i < 5; i++)
        enqueue_ok(s, 1, alloc_msg(pool, 3000), i);

    /* 3000 bytes are three fragments: 5 urgent messages, then the middle class. */
    for (int i = 0; i < 15; i++)
        CHECK_EQ(send_one(s).channel, 1);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(send_one(s).channel, 3);
    CHECK_EQ(send_one(s).channel, 2);

    /* Urgent traffic arriving in the middle of bulk goes next. */
    enqueue_ok(s, 1, alloc_msg(pool, 64), 99);
    struct fdn__frame f = send_one(s);
    CHECK_EQ(f.channel, 1);
    CHECK(f.first && f.last);
    CHECK_EQ(f.msg_id, 99);

    int bulk_frames = 1;
    while (fdn__sched_has_ready(s, 0)) {
        CHECK_EQ(send_one(s).channel, 2);
        bulk_frames++;
    }
    CHECK_EQ(bulk_frames, 10 * 8);
    CHECK_EQ(channel_stats(s, 1).msgs_sent, 6);
    CHECK_EQ(channel_stats(s, 2).bytes_sent, 10 * 8 * KiB);
    destroy_all(s, pool, 0);
}

/* Lanes: each lane's channels are scheduled on their own, so a lane with
 * only bulk waiting has frames while the urgent lane has none, and moving a
 * ready channel to another lane moves its frames with it. */
static void test_lanes(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1024);
    struct fdn__sched_channel_config cfg = {.id = 1, .prio = FDN_PRIO_HIGHEST, .weight = 1,
                                            .max_queued_msgs = 8};
    CHECK_OK(fdn__sched_add_channel(s, &cfg));
    cfg = (struct fdn__sched_channel_config){.id = 2, .prio = FDN_PRIO_LOWEST, .lane = 1,
                                             .weight = 1, .max_queued_msgs = 8};
    CHECK_OK(fdn__sched_add_channel(s, &cfg));
    cfg.id = 3, cfg.lane = FDN__SCHED_MAX_LANES;
    CHECK_EQ(fdn__sched_add_channel(s, &cfg), -EINVAL);

    enqueue_ok(s, 2, alloc_msg(pool, 4 * KiB), 0);
    CHECK(!fdn__sched_has_ready(s, 0));
    CHECK(fdn__sched_has_ready(s, 1));
    CHECK(!fdn__sched_has_ready(s, FDN__SCHED_MAX_LANES));
    struct fdn__frame f;
    CHECK_EQ(fdn__sched_next(s, 0, &f), 0);
    enqueue_ok(s, 1, alloc_msg(pool, 64), 0);
    /* The lowest priority still goes on its own lane: no urgent frame is
     * ahead of it there. */
    CHECK_EQ(fdn__sched_next(s, 1, &f), 1);
    CHECK_EQ(f.channel, 2);
    fdn__sched_frame_done(s, &f);
    CHECK_EQ(fdn__sched_next(s, 0, &f), 1);
    CHECK_EQ(f.channel, 1);
    fdn__sched_frame_done(s, &f);

    /* Moved while ready: its remaining frames are lane 0's now. */
    CHECK_OK(fdn__sched_set_lane(s, 2, 0));
    CHECK(!fdn__sched_has_ready(s, 1));
    int frames = 0;
    while (fdn__sched_next(s, 0, &f) == 1) {
        CHECK_EQ(f.channel, 2);
        fdn__sched_frame_done(s, &f);
        frames++;
    }
    CHECK_EQ(frames, 3);
    CHECK_EQ(fdn__sched_set_lane(s, 2, FDN__SCHED_MAX_LANES), -EINVAL);
    CHECK_EQ(fdn__sched_set_lane(s, 9, 0), -ENOENT);
    destroy_all(s, pool, 0);
}

/* Keeps at least two messages of len bytes waiting on the channel, so that
 * it never leaves its round. */
static void keep_saturated(struct fdn__sched *s, fdn_pool *pool, uint16_t channel, size_t len,
                           uint64_t *next_id)
{
    while (channel_stats(s, channel).unscheduled_bytes < 2 * len)
        enqueue_ok(s, channel, alloc_msg(pool, len), (*next_id)++);
}

/* With whole fragments only, DWRR is exact: light, heavy x3, light, ... */
static void test_dwrr_exact_pattern(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, 10, 3, 1, 0, 16);
    add_channel(s, 11, 3, 3, 0, 16);
    uint64_t id = 0;
    for (int round = 0; round < 500; round++) {
        static const uint16_t expected[4] = { 10, 11, 11, 11 };
        for (int k = 0; k < 4; k++) {
            keep_saturated(s, pool, 10, 4000, &id);
            keep_saturated(s, pool, 11, 4000, &id);
            struct fdn__frame f = send_one(s);
            CHECK_EQ(f.channel, expected[k]);
            CHECK_EQ(f.len, 1000);
        }
    }
    CHECK_EQ(channel_stats(s, 11).bytes_sent, 3 * channel_stats(s, 10).bytes_sent);
    fdn__sched_destroy(s);
    CHECK_EQ(buffers_in_use(pool), 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* Random message sizes make fragments uneven; the deficit carries the
 * difference, so at every round boundary the weight-normalised byte counts
 * differ by less than one fragment (3*light - heavy within one quantum of
 * the heavy channel), and never by more than two. */
static void test_dwrr_weights_random_sizes(void)
{
    enum { FRAGMENT = 1000, LIGHT = 20, HEAVY = 21 };
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(FRAGMENT);
    add_channel(s, LIGHT, 5, 1, 0, 64);
    add_channel(s, HEAVY, 5, 3, 0, 64);
    /* A busy channel of another class must not disturb the shares. */
    add_channel(s, 22, 6, 1, 0, 64);
    uint64_t rng = 42, id = 0;
    int64_t light = 0, heavy = 0;
    uint16_t previous = 0;
    int boundaries = 0;
    for (int i = 0; i < 40000; i++) {
        const uint16_t saturated[2] = { LIGHT, HEAVY };
        for (int k = 0; k < 2; k++)
            while (channel_stats(s, saturated[k]).unscheduled_bytes < 4 * FRAGMENT)
                enqueue_ok(s, saturated[k],
                           alloc_msg(pool, 1 + (size_t)random_below(&rng, 3 * FRAGMENT)), id++);
        if (channel_stats(s, 22).queued_msgs == 0)
            enqueue_ok(s, 22, alloc_msg(pool, 100), id++);

        struct fdn__frame f = send_one(s);
        CHECK(f.channel != 22);
        if (f.channel == LIGHT && previous == HEAVY) {
            int64_t gap = 3 * light - heavy;
            CHECK(gap > -3 * FRAGMENT && gap < 3 * FRAGMENT);
            boundaries++;
        }
        if (f.channel == LIGHT)
            light += f.len;
        else
            heavy += f.len;
        int64_t gap = 3 * light - heavy;
        CHECK(gap >= -6 * FRAGMENT && gap <= 6 * FRAGMENT);
        previous = f.channel;
    }
    CHECK(boundaries > 1000);
    fdn__sched_destroy(s);
    CHECK_EQ(buffers_in_use(pool), 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* The fragment size the peer agreed, set after messages were queued: the
 * rest of a message goes in the smaller fragments; the size can never grow
 * past the one the scheduler was made with. */
static void test_max_fragment_lowered(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(4 * KiB);
    add_channel(s, 1, FDN_PRIO_DEFAULT, 1, 0, 4);
    enqueue_ok(s, 1, alloc_msg(pool, 10000), 1);
    struct fdn__frame f = send_one(s);
    CHECK_EQ(f.len, 4 * KiB);
    CHECK_OK(fdn__sched_set_max_fragment(s, 1000));
    uint64_t offset = 4 * KiB;
    do {
        f = send_one(s);
        CHECK_EQ(f.offset, offset);
        CHECK(f.len == 1000 || (f.last && f.len < 1000));
        offset += f.len;
    } while (!f.last);
    CHECK_EQ(offset, 10000);
    CHECK_EQ(fdn__sched_set_max_fragment(s, 0), -EINVAL);
    CHECK_EQ(fdn__sched_set_max_fragment(s, 4 * KiB + 1), -EINVAL);
    CHECK_OK(fdn__sched_set_max_fragment(s, 4 * KiB));
    destroy_all(s, pool, 0);
}

/* A 64 MiB bulk message delays a 64-byte urgent one by one fragment. */
static void test_fragment_granularity(void)
{
    fdn_pool *pool = make_pool(512 * MiB);
    struct fdn__sched *s = make_sched(64 * KiB);
    add_channel(s, 1, FDN_PRIO_HIGHEST, 1, 0, 4);
    add_channel(s, 2, FDN_PRIO_LOWEST, 1, 0, 4);
    enqueue_ok(s, 2, alloc_msg(pool, 64 * MiB), 7);

    struct fdn__frame bulk1 = next_frame(s);
    CHECK_EQ(bulk1.channel, 2);
    CHECK(bulk1.first && !bulk1.last);
    CHECK_EQ(bulk1.len, 64 * KiB);
    CHECK_EQ(bulk1.total_len, 64 * MiB);

    enqueue_ok(s, 1, alloc_msg(pool, 64), 8);
    struct fdn__frame urgent = next_frame(s);
    CHECK_EQ(urgent.channel, 1);
    CHECK(urgent.first && urgent.last);
    CHECK_EQ(urgent.len, 64);

    struct fdn__frame bulk2 = next_frame(s);
    CHECK_EQ(bulk2.channel, 2);
    CHECK_EQ(bulk2.offset, 64 * KiB);
    CHECK(!bulk2.first && !bulk2.last);

    fdn__sched_frame_done(s, &urgent);
    fdn__sched_frame_done(s, &bulk2);
    fdn__sched_frame_done(s, &bulk1);
    CHECK_EQ(channel_stats(s, 2).unscheduled_bytes, 64 * MiB - 128 * KiB);
    destroy_all(s, pool, 1);
}

/* ---- Order within a channel ---------------------------------------------- */

struct channel_cursor {
    uint64_t next_msg;   /* index into the channel's ids */
    uint64_t offset;     /* expected offset of its next frame */
};

/* Three equal channels, random sizes, frames completed at once: each channel's
 * frames walk its messages in order, each message from offset 0 to its end. */
static void test_fifo_without_interleaving(void)
{
    enum { CHANNELS = 3, MSGS = 40 };
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(512);
    uint64_t rng = 7;
    uint64_t sizes[CHANNELS][MSGS];
    for (uint16_t c = 0; c < CHANNELS; c++) {
        add_channel(s, c, 2, 1, 0, MSGS);
        for (uint64_t i = 0; i < MSGS; i++) {
            sizes[c][i] = random_below(&rng, 3000);
            enqueue_ok(s, c, alloc_msg(pool, sizes[c][i]), c * 1000 + i);
        }
    }
    struct channel_cursor cur[CHANNELS] = { { 0, 0 } };
    struct fdn__frame f;
    while (fdn__sched_next(s, 0, &f) == 1) {
        struct channel_cursor *cc = &cur[f.channel];
        CHECK(cc->next_msg < MSGS);
        CHECK_EQ(f.msg_id, f.channel * 1000 + cc->next_msg);
        CHECK_EQ(f.offset, cc->offset);
        CHECK_EQ(f.total_len, sizes[f.channel][cc->next_msg]);
        CHECK_EQ(f.first, f.offset == 0);
        CHECK_EQ(f.last, f.offset + f.len == f.total_len);
        cc->offset += f.len;
        if (f.last) {
            cc->next_msg++;
            cc->offset = 0;
        }
        fdn__sched_frame_done(s, &f);
    }
    for (int c = 0; c < CHANNELS; c++)
        CHECK_EQ(cur[c].next_msg, MSGS);
    destroy_all(s, pool, 0);
}

/* ---- Credit --------------------------------------------------------------- */

static void test_credit_stall_and_grant(void)
{
    enum { LIMITED = 1, FREE = 2 };
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, LIMITED, 4, 1, 5000, 8);
    add_channel(s, FREE, 4, 1, 0, 8);
    CHECK_EQ(channel_stats(s, FREE).credit, FDN__SCHED_UNLIMITED_CREDIT);
    for (uint64_t i = 0; i < 3; i++)
        enqueue_ok(s, LIMITED, alloc_msg(pool, 4000), i);
    for (uint64_t i = 0; i < 6; i++)
        enqueue_ok(s, FREE, alloc_msg(pool, 3000), 10 + i);

    /* The limited channel sends its 5000 bytes, then stalls; the other one
     * sends everything. */
    uint64_t sent[3] = { 0, 0, 0 };
    struct fdn__frame f;
    while (fdn__sched_next(s, 0, &f) == 1) {
        sent[f.channel] += f.len;
        fdn__sched_frame_done(s, &f);
    }
    CHECK_EQ(sent[LIMITED], 5000);
    CHECK_EQ(sent[FREE], 18000);
    CHECK(!fdn__sched_has_ready(s, 0));
    struct fdn__sched_channel_stats st = channel_stats(s, LIMITED);
    CHECK_EQ(st.credit, 0);
    CHECK_EQ(st.credit_stalls, 1);
    CHECK_EQ(st.msgs_sent, 1);
    CHECK_EQ(st.unscheduled_bytes, 7000);

    /* A grant smaller than a fragment shortens the fragment. */
    CHECK_OK(fdn__sched_grant(s, LIMITED, 300));
    CHECK(fdn__sched_has_ready(s, 0));
    f = send_one(s);
    CHECK_EQ(f.channel, LIMITED);
    CHECK_EQ(f.len, 300);
    CHECK_EQ(f.offset, 1000);
    CHECK_EQ(fdn__sched_next(s, 0, &f), 0);
    CHECK_EQ(channel_stats(s, LIMITED).credit_stalls, 2);

    /* Grants to a channel without a window change nothing. */
    CHECK_OK(fdn__sched_grant(s, FREE, 12345));
    CHECK_EQ(channel_stats(s, FREE).credit, FDN__SCHED_UNLIMITED_CREDIT);

    CHECK_OK(fdn__sched_grant(s, LIMITED, 1 * MiB));
    while (fdn__sched_next(s, 0, &f) == 1) {
        CHECK_EQ(f.channel, LIMITED);
        sent[LIMITED] += f.len;
        fdn__sched_frame_done(s, &f);
    }
    CHECK_EQ(sent[LIMITED] + 300, 12000);
    CHECK_EQ(channel_stats(s, LIMITED).credit, 1 * MiB - 6700);
    CHECK_EQ(channel_stats(s, LIMITED).credit_stalls, 2);
    destroy_all(s, pool, 0);
}

/* Empty messages need no credit, but keep their place behind stalled bytes. */
static void test_credit_and_empty_messages(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, 1, 0, 1, 100, 8);
    enqueue_ok(s, 1, alloc_msg(pool, 100), 1);
    enqueue_ok(s, 1, alloc_msg(pool, 0), 2);
    enqueue_ok(s, 1, alloc_msg(pool, 50), 3);
    enqueue_ok(s, 1, alloc_msg(pool, 0), 4);

    CHECK_EQ(send_one(s).msg_id, 1);
    struct fdn__frame f = send_one(s);
    CHECK_EQ(f.msg_id, 2);
    CHECK_EQ(f.len, 0);
    CHECK_EQ(fdn__sched_next(s, 0, &f), 0);   /* 3 waits for credit, and 4 behind it */
    CHECK_EQ(channel_stats(s, 1).credit_stalls, 1);

    /* Enqueueing onto a stalled channel is no new stall. */
    enqueue_ok(s, 1, alloc_msg(pool, 0), 5);
    CHECK_EQ(channel_stats(s, 1).credit_stalls, 1);

    CHECK_OK(fdn__sched_grant(s, 1, 50));
    CHECK_EQ(send_one(s).msg_id, 3);
    CHECK_EQ(send_one(s).msg_id, 4);
    CHECK_EQ(send_one(s).msg_id, 5);
    CHECK_EQ(fdn__sched_next(s, 0, &f), 0);
    CHECK_EQ(channel_stats(s, 1).credit_stalls, 1);   /* credit 0 but nothing to send */

    /* A message arriving at a channel with no credit is a stall at once. */
    enqueue_ok(s, 1, alloc_msg(pool, 10), 6);
    CHECK(!fdn__sched_has_ready(s, 0));
    CHECK_EQ(channel_stats(s, 1).credit_stalls, 2);
    destroy_all(s, pool, 1);
}

/* ---- Limits --------------------------------------------------------------- */

static void test_queue_limits(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, 1, 4, 1, 0, 4);
    struct fdn__sched_channel_config bytes_cfg = {
        .id = 2, .prio = 4, .weight = 1, .max_queued_msgs = 8, .max_queued_bytes = 10000,
    };
    CHECK_OK(fdn__sched_add_channel(s, &bytes_cfg));

    for (uint64_t i = 0; i < 4; i++)
        enqueue_ok(s, 1, alloc_msg(pool, 10), i);
    fdn_msg *extra = alloc_msg(pool, 10);
    CHECK_EQ(fdn__sched_enqueue(s, 1, extra, 4), -EAGAIN);
    CHECK_EQ(fdn__sched_enqueue(s, 1, extra, 4), -EAGAIN);
    CHECK_EQ(channel_stats(s, 1).refused, 2);
    CHECK_EQ(fdn__sched_enqueue(s, 9, extra, 4), -ENOENT);

    enqueue_ok(s, 2, alloc_msg(pool, 6000), 20);
    fdn_msg *too_many_bytes = alloc_msg(pool, 5000);
    CHECK_EQ(fdn__sched_enqueue(s, 2, too_many_bytes, 21), -EAGAIN);
    fdn_msg *never_fits = alloc_msg(pool, 10001);
    CHECK_EQ(fdn__sched_enqueue(s, 2, never_fits, 22), -EMSGSIZE);
    fdn_msg_free(never_fits);
    CHECK_EQ(channel_stats(s, 2).refused, 1);
    CHECK_EQ(channel_stats(s, 2).queued_bytes, 6000);

    /* Room returns as messages are released, not merely handed out. */
    struct fdn__frame f = next_frame(s);
    CHECK_EQ(f.channel, 1);
    CHECK(f.last);
    CHECK_EQ(fdn__sched_enqueue(s, 1, extra, 4), -EAGAIN);
    fdn__sched_frame_done(s, &f);
    enqueue_ok(s, 1, extra, 4);

    while (channel_stats(s, 2).queued_msgs > 0)
        send_one(s);
    CHECK_EQ(channel_stats(s, 1).queued_msgs, 0);   /* its quantum covers 100 tiny messages */
    enqueue_ok(s, 2, too_many_bytes, 21);
    destroy_all(s, pool, 1);
}

static void test_zero_length_message(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(0);
    add_channel(s, 3, 1, 1, 0, 4);
    enqueue_ok(s, 3, alloc_msg(pool, 0), 1);
    const size_t empty_parts[2] = { 0, 0 };
    enqueue_ok(s, 3, make_chain(pool, empty_parts, 2, 0), 2);

    for (uint64_t id = 1; id <= 2; id++) {
        struct fdn__frame f = next_frame(s);
        CHECK_EQ(f.msg_id, id);
        CHECK(f.first && f.last);
        CHECK_EQ(f.len, 0);
        CHECK_EQ(f.total_len, 0);
        CHECK_EQ(f.offset, 0);
        struct iovec iov[1];
        CHECK_EQ(fdn__frame_iov(&f, iov, 1), 0);
        fdn__sched_frame_done(s, &f);
    }
    struct fdn__frame f;
    CHECK_EQ(fdn__sched_next(s, 0, &f), 0);
    CHECK_EQ(channel_stats(s, 3).msgs_sent, 2);
    CHECK_EQ(channel_stats(s, 3).frames_sent, 2);
    destroy_all(s, pool, 0);
}

/* ---- Chains and iovecs ---------------------------------------------------- */

static void test_chain_to_iov(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(4096);
    add_channel(s, 1, 1, 1, 0, 4);
    const size_t parts[] = { 100, 0, 5000, 1, 20000, 0, 3 };
    size_t total = 0;
    for (size_t i = 0; i < FDN_ARRAY_SIZE(parts); i++)
        total += parts[i];
    enqueue_ok(s, 1, make_chain(pool, parts, (int)FDN_ARRAY_SIZE(parts), 77), 77);

    uint8_t frame_bytes[4096];
    uint64_t covered = 0;
    bool saw_split = false;
    struct fdn__frame f;
    while (fdn__sched_next(s, 0, &f) == 1) {
        CHECK_EQ(f.offset, covered);
        CHECK_EQ(copy_frame(&f, frame_bytes), f.len);
        CHECK(matches_pattern(frame_bytes, 77, f.offset, f.len));
        struct iovec one[1];
        int n = fdn__frame_iov(&f, one, 1);
        if (n == -ENOSPC)
            saw_split = true;
        else
            CHECK_EQ(n, 1);
        covered += f.len;
        fdn__sched_frame_done(s, &f);
    }
    CHECK_EQ(covered, total);
    CHECK(saw_split);
    destroy_all(s, pool, 0);
}

/* ---- Retention, acknowledgement and rewind ----------------------------------- */

static void add_retaining(struct fdn__sched *s, uint16_t id, uint64_t credit, uint32_t max_msgs)
{
    struct fdn__sched_channel_config cfg = {
        .id = id, .prio = 0, .weight = 1, .credit_window = credit,
        .max_queued_msgs = max_msgs, .retain = true,
    };
    CHECK_OK(fdn__sched_add_channel(s, &cfg));
}

/* A retaining channel keeps sent messages (counted as unacked, and against
 * its queue limit) until acknowledged, cumulatively. */
static void test_retain_until_acked(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_retaining(s, 1, 0, 3);
    for (uint64_t i = 0; i < 3; i++)
        enqueue_ok(s, 1, alloc_msg(pool, 600), i);
    for (int i = 0; i < 3; i++)
        send_one(s);
    struct fdn__sched_channel_stats st = channel_stats(s, 1);
    CHECK_EQ(st.msgs_sent, 3);
    CHECK_EQ(st.queued_msgs, 0);
    CHECK_EQ(st.unacked_msgs, 3);
    CHECK_EQ(st.unacked_bytes, 1800);
    CHECK_EQ(buffers_in_use(pool), 3);
    fdn_msg *more = alloc_msg(pool, 10);
    CHECK_EQ(fdn__sched_enqueue(s, 1, more, 3), -EAGAIN);   /* held until acked */

    CHECK_EQ(fdn__sched_ack(s, 1, 2), 1);
    CHECK_EQ(buffers_in_use(pool), 2);   /* messages 0 and 1 freed; 2 and more left */
    CHECK_EQ(channel_stats(s, 1).unacked_msgs, 1);
    CHECK_EQ(fdn__sched_ack(s, 1, 1), 0);   /* an older bound changes nothing */
    CHECK_EQ(fdn__sched_ack(s, 1, 2), 0);   /* nor the same one */
    CHECK_EQ(channel_stats(s, 1).unacked_msgs, 1);
    enqueue_ok(s, 1, more, 3);
    /* Acknowledging a message not sent yet is a false claim: refused whole. */
    CHECK_EQ(fdn__sched_ack(s, 1, 4), -EPROTO);
    CHECK_EQ(channel_stats(s, 1).unacked_msgs, 1);
    CHECK_EQ(fdn__sched_ack(s, 9, 1), -ENOENT);

    /* An ack that comes before the last frame is done releases at done. */
    struct fdn__frame f = next_frame(s);
    CHECK_OK(fdn__sched_ack(s, 1, 4));
    CHECK_EQ(buffers_in_use(pool), 1);
    fdn__sched_frame_done(s, &f);
    CHECK_EQ(buffers_in_use(pool), 0);
    st = channel_stats(s, 1);
    CHECK_EQ(st.unacked_msgs + st.queued_msgs, 0);
    destroy_all(s, pool, 0);
}

/* After a lost connection: acknowledge what the receiver has, rewind, and
 * the rest goes again from offset 0, in order, whole, the message cut in
 * the middle included; credit is what the receiver says. */
static void test_rewind_resends_in_order(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_retaining(s, 1, 100000, 16);
    uint64_t rng = 11;
    for (uint64_t i = 0; i < 6; i++) {
        fdn_msg *m = make_random_chain(pool, 2500, i, &rng);
        CHECK_OK(fdn__sched_enqueue_tagged(s, 1, m, i, (uint16_t)(i % 2), 100 + i));
    }
    /* Messages 0..2 sent (3 frames each), message 3 cut after one frame,
     * whose send is still out when the connection dies. */
    for (int i = 0; i < 9; i++)
        send_one(s);
    struct fdn__frame cut = next_frame(s);
    CHECK_EQ(cut.msg_id, 3);
    CHECK_EQ(cut.tag, 103);
    CHECK_EQ(cut.kind, 1);
    CHECK_EQ(fdn__sched_rewind(s, 1), -EBUSY);   /* a frame is still out */
    fdn__sched_frame_done(s, &cut);

    CHECK_OK(fdn__sched_ack(s, 1, 1));            /* the receiver has message 0 */
    CHECK_EQ(fdn__sched_rewind(s, 1), 3);         /* 1, 2 and the cut 3 go again */
    struct fdn__sched_channel_stats st = channel_stats(s, 1);
    CHECK_EQ(st.unacked_msgs, 0);
    CHECK_EQ(st.queued_msgs, 5);
    CHECK_EQ(st.unscheduled_bytes, 5 * 2500);
    CHECK_EQ(st.rewound_msgs, 3);
    CHECK_OK(fdn__sched_set_credit(s, 1, 0));     /* the receiver is full */
    struct fdn__frame none;
    CHECK_EQ(fdn__sched_next(s, 0, &none), 0);
    CHECK_OK(fdn__sched_grant(s, 1, 1 << 20));

    uint8_t buf[2500];
    for (uint64_t id = 1; id < 6; id++) {
        size_t at = 0;
        for (int k = 0; k < 3; k++) {
            struct fdn__frame f = next_frame(s);
            CHECK_EQ(f.msg_id, id);
            CHECK_EQ(f.offset, at);
            CHECK_EQ(f.first, k == 0);
            CHECK_EQ(f.tag, 100 + id);
            at += copy_frame(&f, buf + at);
            fdn__sched_frame_done(s, &f);
        }
        CHECK_EQ(at, 2500);
        uint8_t expect[2500];
        fill_pattern(expect, id, 0, sizeof expect);   /* make_chain's seed is the id */
        CHECK(memcmp(buf, expect, sizeof expect) == 0);
    }
    CHECK_EQ(fdn__sched_next(s, 0, &none), 0);
    st = channel_stats(s, 1);
    CHECK_EQ(st.msgs_sent, 6);           /* each counted once */
    CHECK_EQ(st.unacked_msgs, 5);
    CHECK_OK(fdn__sched_ack(s, 1, 6));
    CHECK_EQ(buffers_in_use(pool), 0);
    destroy_all(s, pool, 0);
}

/* A channel that does not retain rewinds only what it still holds: the
 * message cut in the middle restarts whole. */
static void test_rewind_without_retention(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, 2, 0, 1, 0, 4);
    enqueue_ok(s, 2, alloc_msg(pool, 1500), 7);
    enqueue_ok(s, 2, alloc_msg(pool, 10), 8);
    send_one(s);                                  /* half of message 7 */
    CHECK_EQ(fdn__sched_rewind(s, 2), 1);
    struct fdn__frame f = send_one(s);
    CHECK(f.msg_id == 7 && f.offset == 0 && f.len == 1000);
    f = send_one(s);
    CHECK(f.msg_id == 7 && f.last);
    CHECK_EQ(send_one(s).msg_id, 8);
    CHECK_EQ(buffers_in_use(pool), 0);
    CHECK_EQ(fdn__sched_rewind(s, 2), 0);
    CHECK_EQ(fdn__sched_rewind(s, 3), -ENOENT);
    destroy_all(s, pool, 0);
}

/* ---- Outstanding frames --------------------------------------------------- */

struct release_log {
    int calls;
    int unsent;
    uint64_t ids[16];
};

static void log_release(void *arg, uint16_t channel, uint64_t msg_id, fdn_msg *msg, bool sent)
{
    struct release_log *log = arg;
    CHECK_EQ(channel, 5);
    CHECK(log->calls < 16);
    log->ids[log->calls++] = msg_id;
    if (!sent)
        log->unsent++;
    fdn_msg_free(msg);
}

static void shuffle_frames(struct fdn__frame *frames, int n, uint64_t *rng)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)random_below(rng, (uint64_t)i + 1);
        struct fdn__frame t = frames[i];
        frames[i] = frames[j];
        frames[j] = t;
    }
}

/* Ten frames of a three-buffer message, done in random order: the buffers
 * stay allocated until the last done, whichever frame that is. */
static void test_frames_done_out_of_order(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, 1, 1, 1, 0, 2);
    const size_t parts[3] = { 3500, 3500, 3000 };
    uint64_t rng = 3;
    for (int trial = 0; trial < 20; trial++) {
        enqueue_ok(s, 1, make_chain(pool, parts, 3, 1), (uint64_t)trial);
        struct fdn__frame frames[10];
        for (int i = 0; i < 10; i++)
            frames[i] = next_frame(s);
        struct fdn__frame none;
        CHECK_EQ(fdn__sched_next(s, 0, &none), 0);
        CHECK(frames[9].last);
        shuffle_frames(frames, 10, &rng);
        for (int i = 0; i < 10; i++) {
            CHECK_EQ(buffers_in_use(pool), 3);
            fdn__sched_frame_done(s, &frames[i]);
        }
        CHECK_EQ(buffers_in_use(pool), 0);
    }
    CHECK_EQ(channel_stats(s, 1).msgs_sent, 20);
    destroy_all(s, pool, 0);
}

/* Frames of several messages outstanding on a two-slot ring: a younger
 * message whose frames finish first is released first, and slots are reused
 * only when free. */
static void test_release_callback_and_slot_reuse(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    struct release_log log = { 0 };
    struct fdn__sched_channel_config cfg = {
        .id = 5, .prio = 0, .weight = 1, .max_queued_msgs = 2,
        .release = log_release, .release_arg = &log,
    };
    CHECK_OK(fdn__sched_add_channel(s, &cfg));

    enqueue_ok(s, 5, alloc_msg(pool, 1500), 1);
    enqueue_ok(s, 5, alloc_msg(pool, 500), 2);
    struct fdn__frame a1 = next_frame(s), a2 = next_frame(s), b = next_frame(s);
    CHECK_EQ(b.msg_id, 2);
    fdn__sched_frame_done(s, &b);
    CHECK_EQ(log.calls, 1);
    CHECK_EQ(log.ids[0], 2);
    /* Message 2 is released but its slot waits for message 1's. */
    fdn_msg *third = alloc_msg(pool, 10);
    CHECK_EQ(fdn__sched_enqueue(s, 5, third, 3), -EAGAIN);
    fdn__sched_frame_done(s, &a2);
    CHECK_EQ(log.calls, 1);
    fdn__sched_frame_done(s, &a1);
    CHECK_EQ(log.calls, 2);
    CHECK_EQ(log.ids[1], 1);

    enqueue_ok(s, 5, third, 3);
    enqueue_ok(s, 5, alloc_msg(pool, 10), 4);
    CHECK_EQ(send_one(s).msg_id, 3);
    CHECK_EQ(log.ids[2], 3);
    enqueue_ok(s, 5, alloc_msg(pool, 10), 5);
    CHECK_EQ(log.unsent, 0);
    CHECK_EQ(fdn__sched_destroy(s), 2);
    CHECK_EQ(log.calls, 5);
    CHECK_EQ(log.unsent, 2);
    CHECK_EQ(buffers_in_use(pool), 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_destroy_drops_queued(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(256);
    add_channel(s, 1, 0, 1, 0, 8);
    add_channel(s, 2, 7, 1, 100, 8);
    uint64_t rng = 11;
    for (uint64_t i = 0; i < 5; i++) {
        enqueue_ok(s, 1, make_random_chain(pool, 1000, i, &rng), i);
        enqueue_ok(s, 2, make_random_chain(pool, 1000, i, &rng), i);
    }
    for (int i = 0; i < 6; i++)
        send_one(s);   /* channel 1 sends a message and a quarter */
    CHECK(buffers_in_use(pool) > 0);
    destroy_all(s, pool, 9);
}

/* ---- Packing ------------------------------------------------------------- */

static const struct fdn__sched_pack small_pack = {
    .max_msgs = 4, .max_msg_len = 100, .room = 1000, .per_msg = 4,
};

static struct fdn__frame next_packed(struct fdn__sched *s, const struct fdn__sched_pack *pk)
{
    struct fdn__frame f;
    CHECK_EQ(fdn__sched_next_packed(s, 0, pk, &f), 1);
    return f;
}

/* Takes the next frame and checks it: on channel 1, its first id, message
 * count and bytes, and that fdn__frame_msg names the messages enqueued with
 * those ids (sent[id]). */
static struct fdn__frame take_packed(struct fdn__sched *s, const struct fdn__sched_pack *pk,
                                     uint64_t first_id, uint32_t msgs, uint32_t len,
                                     fdn_msg *const *sent)
{
    struct fdn__frame f = next_packed(s, pk);
    CHECK_EQ(f.channel, 1);
    CHECK_EQ(f.msg_id, first_id);
    CHECK_EQ(f.msgs, msgs);
    CHECK_EQ(f.len, len);
    CHECK(f.first && f.last && f.offset == 0 && f.total_len == len);
    for (uint32_t i = 0; i < msgs; i++)
        CHECK(fdn__frame_msg(&f, i) == sent[first_id + i]);
    return f;
}

/* Whole plain messages of one channel share a frame, in order, up to
 * max_msgs and room; a message enqueued with a kind, or over max_msg_len,
 * goes alone and ends the pack before it. */
static void test_packing_rules(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, 1, 3, 1, 0, 64);
    fdn_msg *sent[32];
    uint64_t id = 0;
    for (int i = 0; i < 10; i++, id++)
        enqueue_ok(s, 1, sent[id] = alloc_msg(pool, 50), id);
    CHECK_OK(fdn__sched_enqueue_tagged(s, 1, sent[id] = alloc_msg(pool, 50), id, 1, 99));
    id++;
    for (int i = 0; i < 2; i++, id++)
        enqueue_ok(s, 1, sent[id] = alloc_msg(pool, 50), id);
    enqueue_ok(s, 1, sent[id] = alloc_msg(pool, 101), id);
    id++;
    for (int i = 0; i < 5; i++, id++)
        enqueue_ok(s, 1, sent[id] = alloc_msg(pool, 0), id);

    struct fdn__frame f[8];
    f[0] = take_packed(s, &small_pack, 0, 4, 200, sent);   /* max_msgs */
    f[1] = take_packed(s, &small_pack, 4, 4, 200, sent);
    f[2] = take_packed(s, &small_pack, 8, 2, 100, sent);   /* stops before the tagged one */
    f[3] = take_packed(s, &small_pack, 10, 1, 50, sent);
    CHECK_EQ(f[3].kind, 1);
    CHECK_EQ(f[3].tag, 99);
    struct fdn__sched_pack tight = small_pack;
    tight.room = 107;                              /* one 54-byte record, not two */
    f[4] = take_packed(s, &tight, 11, 1, 50, sent);
    f[5] = take_packed(s, &small_pack, 12, 1, 50, sent);   /* stops before the large one */
    f[6] = take_packed(s, &small_pack, 13, 1, 101, sent);
    f[7] = take_packed(s, &small_pack, 14, 4, 0, sent);   /* empty messages pack too */
    CHECK_EQ(channel_stats(s, 1).queued_msgs, 19);

    /* One done per frame releases every message in it. */
    for (int i = 0; i < 8; i++)
        fdn__sched_frame_done(s, &f[i]);
    struct fdn__sched_channel_stats st = channel_stats(s, 1);
    CHECK_EQ(st.msgs_sent, 18);
    CHECK_EQ(st.frames_sent, 8);
    CHECK_EQ(st.bytes_sent, 13 * 50 + 101);
    CHECK_EQ(buffers_in_use(pool), 1);
    take_packed(s, &small_pack, 18, 1, 0, sent);
    destroy_all(s, pool, 1);
}

/* Each packed message costs its channel's deficit: two channels of one
 * class still alternate a quantum each, and a more urgent channel's message
 * goes next, between two packed frames. */
static void test_packing_keeps_shares_and_priority(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);   /* quantum 1000 bytes */
    add_channel(s, 1, 4, 1, 0, 256);
    add_channel(s, 2, 4, 1, 0, 256);
    add_channel(s, 3, 0, 1, 0, 16);
    const struct fdn__sched_pack roomy = {
        .max_msgs = 128, .max_msg_len = 512, .room = 4096, .per_msg = 4,
    };
    uint64_t id = 0;
    for (int i = 0; i < 200; i++) {
        enqueue_ok(s, 1, alloc_msg(pool, 50), id++);
        enqueue_ok(s, 2, alloc_msg(pool, 50), id++);
    }
    for (int round = 0; round < 4; round++) {
        struct fdn__frame a = next_packed(s, &roomy);
        struct fdn__frame b = next_packed(s, &roomy);
        CHECK_EQ(a.channel, 1);
        CHECK_EQ(b.channel, 2);
        CHECK_EQ(a.msgs, 20);                   /* 20 x 50 bytes: the whole quantum */
        CHECK_EQ(b.msgs, 20);
        fdn__sched_frame_done(s, &a);
        fdn__sched_frame_done(s, &b);
        if (round == 1)
            enqueue_ok(s, 3, alloc_msg(pool, 50), id++);
        if (round == 1) {
            struct fdn__frame u = next_packed(s, &roomy);
            CHECK_EQ(u.channel, 3);
            CHECK_EQ(u.msgs, 1);
            fdn__sched_frame_done(s, &u);
        }
    }
    CHECK_EQ(channel_stats(s, 1).bytes_sent, channel_stats(s, 2).bytes_sent);
    destroy_all(s, pool, 2 * (200 - 80));
}

static bool whole_if_64(void *arg, unsigned lane, const fdn_msg *m)
{
    (void)arg;
    (void)lane;
    return fdn_msg_len(m) == 64;
}

/* A pack takes only messages its credit covers whole, and never one sent
 * whole by reference. */
static void test_packing_credit_and_whole(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    fdn__sched_set_whole(s, whole_if_64, NULL);
    add_channel(s, 1, 3, 1, 130, 64);
    fdn_msg *sent[8];
    for (uint64_t id = 0; id < 3; id++)
        enqueue_ok(s, 1, sent[id] = alloc_msg(pool, 50), id);
    /* Two fit the 130-byte window; 30 bytes are left for the third. */
    struct fdn__frame f = take_packed(s, &small_pack, 0, 2, 100, sent);
    struct fdn__frame cut = next_packed(s, &small_pack);
    CHECK_EQ(cut.msgs, 1);
    CHECK_EQ(cut.len, 30);                      /* a fragment, as without packing */
    CHECK(!cut.last);
    CHECK_EQ(fdn__sched_next_packed(s, 0, &small_pack, &(struct fdn__frame){0}), 0);
    CHECK_OK(fdn__sched_grant(s, 1, 1000));
    fdn__sched_frame_done(s, &f);
    fdn__sched_frame_done(s, &cut);
    fdn__sched_frame_done(s, (struct fdn__frame[]){next_packed(s, &small_pack)});

    enqueue_ok(s, 1, sent[3] = alloc_msg(pool, 10), 3);
    enqueue_ok(s, 1, sent[4] = alloc_msg(pool, 64), 4);   /* goes whole, by reference */
    enqueue_ok(s, 1, sent[5] = alloc_msg(pool, 10), 5);
    enqueue_ok(s, 1, sent[6] = alloc_msg(pool, 10), 6);
    f = take_packed(s, &small_pack, 3, 1, 10, sent);
    fdn__sched_frame_done(s, &f);
    f = take_packed(s, &small_pack, 4, 1, 64, sent);
    fdn__sched_frame_done(s, &f);
    f = take_packed(s, &small_pack, 5, 2, 20, sent);
    fdn__sched_frame_done(s, &f);
    destroy_all(s, pool, 0);
}

/* A retaining channel keeps packed messages until acknowledged, and a
 * rewind sends the unacknowledged ones again, packed anew from the first
 * of them. */
static void test_packed_frames_retained_and_rewound(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_retaining(s, 1, 100000, 16);
    fdn_msg *sent[8];
    for (uint64_t id = 0; id < 6; id++)
        enqueue_ok(s, 1, sent[id] = alloc_msg(pool, 40), id);
    struct fdn__sched_pack pk = small_pack;
    pk.max_msgs = 5;
    struct fdn__frame f = take_packed(s, &pk, 0, 5, 200, sent);
    CHECK_OK(fdn__sched_ack(s, 1, 2));          /* before done: released at done */
    CHECK_EQ(fdn__sched_ack(s, 1, 6), -EPROTO); /* message 5 was not handed out */
    CHECK_EQ(fdn__sched_rewind(s, 1), -EBUSY);
    fdn__sched_frame_done(s, &f);
    CHECK_EQ(buffers_in_use(pool), 4);
    struct fdn__sched_channel_stats st = channel_stats(s, 1);
    CHECK_EQ(st.unacked_msgs, 3);
    CHECK_EQ(st.queued_msgs, 1);

    CHECK_EQ(fdn__sched_rewind(s, 1), 3);
    f = take_packed(s, &small_pack, 2, 4, 160, sent);
    fdn__sched_frame_done(s, &f);
    CHECK_OK(fdn__sched_ack(s, 1, 6));
    CHECK_EQ(buffers_in_use(pool), 0);
    st = channel_stats(s, 1);
    CHECK_EQ(st.msgs_sent, 6);
    CHECK_EQ(st.rewound_msgs, 3);
    destroy_all(s, pool, 0);
}

/* ---- Handed out as queued ------------------------------------------------ */

/* A message that would be its lane's next pick, alone in its frame, is
 * handed out as it is queued; in every other case it is only queued and
 * the rules above pick, as if fdn__sched_enqueue_tagged had been called. */
static void test_enqueue_now(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1024);
    add_channel(s, 1, FDN_PRIO_LOWEST, 1, 0, 8);
    add_channel(s, 2, FDN_PRIO_HIGHEST, 1, 300, 8);
    struct fdn__sched_channel_config other = {.id = 3, .prio = FDN_PRIO_HIGHEST, .lane = 1,
                                              .weight = 1, .max_queued_msgs = 8};
    CHECK_OK(fdn__sched_add_channel(s, &other));
    struct fdn__frame f;

    /* An idle lane: out at once, whole, counted as any frame. */
    CHECK_EQ(fdn__sched_enqueue_now(s, 1, alloc_msg(pool, 100), 7, 0, 0, true, &f), 1);
    CHECK(f.first && f.last && f.channel == 1 && f.msg_id == 7 && f.len == 100 && f.msgs == 1);
    CHECK(!fdn__sched_has_ready(s, 0));
    CHECK_EQ(channel_stats(s, 1).queued_msgs, 1);
    CHECK_EQ(channel_stats(s, 1).unscheduled_bytes, 0);
    fdn__sched_frame_done(s, &f);
    CHECK_EQ(channel_stats(s, 1).msgs_sent, 1);
    CHECK_EQ(channel_stats(s, 1).queued_msgs, 0);

    /* Not asked, or its own channel has one queued: queued behind. Then
     * another channel of the lane is ready: queued, and the pick goes by
     * priority. */
    CHECK_EQ(fdn__sched_enqueue_now(s, 1, alloc_msg(pool, 50), 8, 0, 0, false, &f), 0);
    CHECK_EQ(fdn__sched_enqueue_now(s, 1, alloc_msg(pool, 60), 9, 0, 0, true, &f), 0);
    CHECK_EQ(fdn__sched_enqueue_now(s, 2, alloc_msg(pool, 64), 1, 0, 0, true, &f), 0);
    static const uint64_t order[] = {1, 8, 9};
    for (int i = 0; i < 3; i++)
        CHECK_EQ(send_one(s).msg_id, order[i]);

    /* Another lane's traffic does not count. */
    enqueue_ok(s, 3, alloc_msg(pool, 4 * KiB), 1);
    CHECK_EQ(fdn__sched_enqueue_now(s, 2, alloc_msg(pool, 64), 2, 0, 0, true, &f), 1);
    fdn__sched_frame_done(s, &f);
    CHECK(fdn__sched_has_ready(s, 1));

    /* Credit short (172 of 300 left): queued; the pick sends what credit
     * covers, and the rest once granted. */
    CHECK_EQ(fdn__sched_enqueue_now(s, 2, alloc_msg(pool, 200), 3, 0, 0, true, &f), 0);
    f = send_one(s);
    CHECK(f.msg_id == 3 && f.first && !f.last && f.len == 172);
    CHECK(!fdn__sched_has_ready(s, 0));
    CHECK_EQ(channel_stats(s, 2).credit_stalls, 1);
    CHECK_OK(fdn__sched_grant(s, 2, 28));
    f = send_one(s);
    CHECK(f.msg_id == 3 && f.last && f.len == 28);

    /* Over max_fragment: queued and cut as usual. */
    CHECK_EQ(fdn__sched_enqueue_now(s, 1, alloc_msg(pool, 3000), 10, 0, 0, true, &f), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(send_one(s).len, i < 2 ? 1024 : 3000 - 2048);
    CHECK(!fdn__sched_has_ready(s, 0));
    destroy_all(s, pool, 1);   /* lane 1's message, never picked */
}

/* A channel whose message went at once is left off its round with no
 * deficit, as if it had joined the round and left it: the shares afterwards
 * are test_dwrr_exact_pattern's, light first. */
static void test_enqueue_now_keeps_shares(void)
{
    fdn_pool *pool = make_pool(0);
    struct fdn__sched *s = make_sched(1000);
    add_channel(s, 10, 3, 1, 0, 16);
    add_channel(s, 11, 3, 3, 0, 16);
    struct fdn__frame f;
    uint64_t id = 0;
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(fdn__sched_enqueue_now(s, 10, alloc_msg(pool, 1000), id++, 0, 0, true, &f), 1);
        fdn__sched_frame_done(s, &f);
    }
    for (int round = 0; round < 100; round++) {
        static const uint16_t expected[4] = {10, 11, 11, 11};
        for (int k = 0; k < 4; k++) {
            keep_saturated(s, pool, 10, 4000, &id);
            keep_saturated(s, pool, 11, 4000, &id);
            CHECK_EQ(send_one(s).channel, expected[k]);
        }
    }
    fdn__sched_destroy(s);
    CHECK_EQ(buffers_in_use(pool), 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* ---- End to end ----------------------------------------------------------- */

enum { E2E_CHANNELS = 5, E2E_MSGS = 600, E2E_FRAGMENT = 4096, E2E_OUTSTANDING = 24 };
#define E2E_MAX_MESSAGE (256 * KiB)

struct e2e_channel {
    uint16_t id;
    uint8_t prio;
    uint16_t weight;
    uint64_t window;
    uint64_t ids[E2E_MSGS];     /* msg_ids in enqueue order */
    uint64_t lens[E2E_MSGS];
    uint64_t enqueued;
    uint64_t delivered;
    fdn_msg *pending;           /* refused with -EAGAIN, to retry */
    uint64_t pending_len;
    bool small_messages;        /* urgent traffic: requests of at most 1 KiB */
    fdn_msg *held[E2E_MSGS];    /* delivered, not yet released by the application */
    uint64_t released;          /* held[released..delivered) are still held */
};

struct e2e {
    struct fdn__sched *sched;
    struct fdn__reasm *reasm;
    fdn_pool *send_pool;
    fdn_pool *recv_pool;
    struct e2e_channel ch[E2E_CHANNELS];
    struct fdn__frame outstanding[E2E_OUTSTANDING];
    int num_outstanding;
    uint8_t wire[E2E_FRAGMENT];
    uint64_t next_msg_id;
    uint64_t rng;
    bool consumer_stopped;      /* channel 0's application releases nothing */
    bool pack;                  /* frames from fdn__sched_next_packed */
    bool at_once;               /* enqueues may hand a frame out (fdn__sched_enqueue_now) */
    uint64_t packed_frames, packed_msgs, at_once_frames;
};

/* Mostly small, some medium, a few large; all at most E2E_MAX_MESSAGE,
 * which the credit windows must cover (see core/reassembly.h). */
static size_t random_message_len(uint64_t *rng)
{
    uint64_t pick = random_below(rng, 100);
    if (pick < 60)
        return (size_t)random_below(rng, 1025);
    if (pick < 90)
        return (size_t)random_below(rng, 32 * KiB);
    if (pick < 97)
        return (size_t)random_below(rng, 128 * KiB);
    return 128 * KiB + (size_t)random_below(rng, E2E_MAX_MESSAGE - 128 * KiB + 1);
}

static void e2e_setup(struct e2e *t)
{
    static const struct { uint16_t id; uint8_t prio; uint16_t weight; uint64_t window; } spec[] = {
        { 30, 2, 1, 256 * KiB }, { 4, 0, 1, 0 }, { 17, 2, 5, 384 * KiB },
        { 9, 5, 10, 0 }, { 1000, 7, 3, 512 * KiB },
    };
    t->rng = 2024;
    t->send_pool = make_pool(0);
    t->recv_pool = make_pool(0);
    t->sched = make_sched(E2E_FRAGMENT);
    CHECK_OK(fdn__reasm_create(&t->reasm));
    for (int i = 0; i < E2E_CHANNELS; i++) {
        struct e2e_channel *c = &t->ch[i];
        c->id = spec[i].id;
        c->prio = spec[i].prio;
        c->weight = spec[i].weight;
        c->window = spec[i].window;
        c->small_messages = c->prio == FDN_PRIO_HIGHEST;
        add_channel(t->sched, c->id, c->prio, c->weight, c->window, 8);
        struct fdn__reasm_channel_config rc = {
            .id = c->id, .max_message = E2E_MAX_MESSAGE, .credit_window = c->window,
        };
        CHECK_OK(fdn__reasm_add_channel(t->reasm, &rc));
    }
}

static struct e2e_channel *e2e_channel_of(struct e2e *t, uint16_t id)
{
    for (int i = 0; i < E2E_CHANNELS; i++)
        if (t->ch[i].id == id)
            return &t->ch[i];
    CHECK(0);
    return NULL;
}

static void e2e_transmit(struct e2e *t, const struct fdn__frame *f);

/* Offers the channel its pending message, or a new one; keeps it on -EAGAIN.
 * With at_once, a message the scheduler hands out as it is queued goes on
 * the wire then, as peer.c sends it. */
static void e2e_offer(struct e2e *t, struct e2e_channel *c)
{
    if (!c->pending) {
        if (c->enqueued >= E2E_MSGS)
            return;
        uint64_t id = t->next_msg_id++;
        c->pending_len = c->small_messages ? (size_t)random_below(&t->rng, 1025)
                                           : random_message_len(&t->rng);
        c->pending = make_random_chain(t->send_pool, c->pending_len, id, &t->rng);
        c->ids[c->enqueued] = id;
        c->lens[c->enqueued] = c->pending_len;
    }
    bool now = t->at_once && t->num_outstanding < E2E_OUTSTANDING;
    struct fdn__frame *f = &t->outstanding[t->num_outstanding];
    int rc = fdn__sched_enqueue_now(t->sched, c->id, c->pending, c->ids[c->enqueued], 0, 0, now,
                                    f);
    if (rc == -EAGAIN)
        return;
    CHECK(rc == 0 || (rc == 1 && now));
    c->pending = NULL;
    c->enqueued++;
    if (rc == 1) {
        t->num_outstanding++;
        t->at_once_frames++;
        e2e_transmit(t, f);
    }
}

/* The application releases up to n of the messages it holds, oldest first;
 * the receiver grants the bytes back. */
static void e2e_consume(struct e2e *t, struct e2e_channel *c, uint64_t n)
{
    for (; n > 0 && c->released < c->delivered; n--) {
        fdn_msg *msg = c->held[c->released++];
        CHECK_OK(fdn__reasm_consumed(t->reasm, c->id, fdn_msg_len(msg)));
        fdn_msg_free(msg);
        uint64_t grant = fdn__reasm_credit_to_grant(t->reasm, c->id, c->window / 2);
        if (grant)
            CHECK_OK(fdn__sched_grant(t->sched, c->id, grant));
    }
}

static void e2e_check_delivery(struct e2e_channel *c, fdn_msg *msg, uint64_t msg_id)
{
    CHECK(c->delivered < c->enqueued);
    CHECK_EQ(msg_id, c->ids[c->delivered]);
    CHECK_EQ(fdn_msg_len(msg), c->lens[c->delivered]);
    CHECK(msg->next == NULL);
    CHECK(matches_pattern(fdn_msg_data(msg), msg_id, 0, fdn_msg_len(msg)));
    c->held[c->delivered++] = msg;
}

/* A packed frame: each message whole, as the receiver unpacks it. Its
 * number is the one the channel expects next (ids here are not consecutive
 * per channel, as a peer's sequence numbers are); the pattern check proves
 * it is that message. */
static void e2e_transmit_packed(struct e2e *t, const struct fdn__frame *f)
{
    struct e2e_channel *c = e2e_channel_of(t, f->channel);
    CHECK(f->first && f->last && f->offset == 0 && f->total_len == f->len);
    uint64_t bytes = 0;
    for (uint32_t i = 0; i < f->msgs; i++) {
        size_t len = 0;
        for (const fdn_msg *b = fdn__frame_msg(f, i); b; b = b->next) {
            memcpy(t->wire + len, fdn_msg_data(b), fdn_msg_len(b));
            len += fdn_msg_len(b);
        }
        CHECK(len <= 1024);
        bytes += len;
        uint64_t id = c->ids[c->delivered];
        CHECK(i > 0 || id == f->msg_id);
        fdn_msg *complete = NULL;
        CHECK_EQ(fdn__reasm_fragment(t->reasm, f->channel, id, 0, len, true, true, t->wire,
                                     len, t->recv_pool, &complete), 1);
        e2e_check_delivery(c, complete, id);
    }
    CHECK_EQ(bytes, f->len);
    t->packed_frames++;
    t->packed_msgs += f->msgs;
}

/* Puts one frame "on the wire": copies its bytes out through the iovecs and
 * feeds them to the receiver, as a transport would on both ends. */
static void e2e_transmit(struct e2e *t, const struct fdn__frame *f)
{
    if (f->msgs > 1) {
        e2e_transmit_packed(t, f);
        return;
    }
    copy_frame(f, t->wire);
    fdn_msg *complete = NULL;
    int rc = fdn__reasm_fragment(t->reasm, f->channel, f->msg_id, f->offset, f->total_len,
                                 f->first, f->last, t->wire, f->len, t->recv_pool, &complete);
    CHECK(rc == 0 || rc == 1);
    if (rc == 1)
        e2e_check_delivery(e2e_channel_of(t, f->channel), complete, f->msg_id);
}

static void e2e_complete_some(struct e2e *t, int keep)
{
    while (t->num_outstanding > keep) {
        int i = (int)random_below(&t->rng, (uint64_t)t->num_outstanding);
        fdn__sched_frame_done(t->sched, &t->outstanding[i]);
        t->outstanding[i] = t->outstanding[--t->num_outstanding];
    }
}

/* One step: some enqueues, some frames sent, some completions, and each
 * application releasing a message one step in three: slower than messages
 * arrive, so windows fill, senders stall and grants resume them. */
static void e2e_step(struct e2e *t)
{
    for (int i = t->consumer_stopped ? 1 : 0; i < E2E_CHANNELS; i++)
        e2e_consume(t, &t->ch[i], random_below(&t->rng, 3) == 0);
    for (int k = 0; k < 3; k++)
        e2e_offer(t, &t->ch[random_below(&t->rng, E2E_CHANNELS)]);
    int burst = 1 + (int)random_below(&t->rng, 16);
    for (int k = 0; k < burst && t->num_outstanding < E2E_OUTSTANDING; k++) {
        struct fdn__frame *f = &t->outstanding[t->num_outstanding];
        const struct fdn__sched_pack pk = {
            .max_msgs = 16, .max_msg_len = 1024, .room = 4096, .per_msg = 4,
        };
        int got = t->pack ? fdn__sched_next_packed(t->sched, 0, &pk, f)
                          : fdn__sched_next(t->sched, 0, f);
        if (got == 0)
            break;
        t->num_outstanding++;
        e2e_transmit(t, f);
    }
    e2e_complete_some(t, (int)random_below(&t->rng, E2E_OUTSTANDING));
}

static bool e2e_all_delivered(const struct e2e *t)
{
    for (int i = 0; i < E2E_CHANNELS; i++)
        if (t->ch[i].delivered < E2E_MSGS)
            return false;
    return true;
}

static void run_end_to_end(bool pack, bool at_once)
{
    static struct e2e t;
    memset(&t, 0, sizeof t);
    t.pack = pack;
    t.at_once = at_once;
    e2e_setup(&t);

    /* First the consumer of channel 0 holds what it receives: its window
     * fills and it stalls, while every other channel keeps flowing. */
    t.consumer_stopped = true;
    for (int step = 0; step < 1500; step++)
        e2e_step(&t);
    struct fdn__sched_channel_stats slow = channel_stats(t.sched, t.ch[0].id);
    struct fdn__reasm_channel_stats slow_rx;
    CHECK_OK(fdn__reasm_channel_stats(t.reasm, t.ch[0].id, &slow_rx));
    CHECK(slow.credit_stalls > 0);
    CHECK_EQ(slow.credit, 0);
    CHECK(slow.unscheduled_bytes > 0);
    CHECK_EQ(slow_rx.received_bytes, t.ch[0].window);
    uint64_t others = 0;
    for (int i = 1; i < E2E_CHANNELS; i++)
        others += t.ch[i].delivered;
    CHECK(others > 10 * t.ch[0].delivered);
    t.consumer_stopped = false;

    for (long step = 0; !e2e_all_delivered(&t); step++) {
        CHECK(step < 10000000);
        e2e_step(&t);
    }
    e2e_complete_some(&t, 0);
    for (int i = 0; i < E2E_CHANNELS; i++)
        e2e_consume(&t, &t.ch[i], E2E_MSGS);
    struct fdn__frame f;
    CHECK_EQ(fdn__sched_next(t.sched, 0, &f), 0);

    for (int i = 0; i < E2E_CHANNELS; i++) {
        struct e2e_channel *c = &t.ch[i];
        struct fdn__sched_channel_stats ss = channel_stats(t.sched, c->id);
        struct fdn__reasm_channel_stats rs;
        CHECK_OK(fdn__reasm_channel_stats(t.reasm, c->id, &rs));
        CHECK_EQ(ss.msgs_sent, E2E_MSGS);
        CHECK_EQ(ss.queued_msgs, 0);
        CHECK_EQ(rs.messages, E2E_MSGS);
        CHECK_EQ(rs.bytes, ss.bytes_sent);
        CHECK_EQ(rs.incomplete_bytes, 0);
        CHECK_EQ(rs.consumed_bytes, rs.received_bytes);
        /* Every window ran dry at some point and was refilled by grants. */
        if (c->window) {
            CHECK(ss.credit_stalls > 0);
            CHECK(rs.granted_bytes + c->window >= rs.received_bytes);
        }
    }
    CHECK_EQ(fdn__sched_destroy(t.sched), 0);
    fdn__reasm_destroy(t.reasm);
    CHECK_EQ(buffers_in_use(t.send_pool), 0);
    CHECK_EQ(buffers_in_use(t.recv_pool), 0);
    CHECK(pool_allocs(t.recv_pool) == E2E_CHANNELS * E2E_MSGS);
    /* Packing happened (and only when asked): a good part of the small
     * messages shared frames. */
    CHECK(pack ? t.packed_msgs > E2E_MSGS / 2 : t.packed_frames == 0);
    CHECK(t.packed_msgs >= 2 * t.packed_frames);
    CHECK(at_once ? t.at_once_frames > 0 : t.at_once_frames == 0);
    CHECK_OK(fdn_pool_destroy(t.send_pool));
    CHECK_OK(fdn_pool_destroy(t.recv_pool));
}

static void test_end_to_end(void) { run_end_to_end(false, false); }

/* The same traffic with small messages packed: the same guarantees, and
 * fewer frames than messages. */
static void test_end_to_end_packed(void) { run_end_to_end(true, false); }

/* Packed, and each message handed out as it is queued when it would be
 * the lane's next pick (as peer.c sends): the same guarantees. */
static void test_end_to_end_at_once(void) { run_end_to_end(true, true); }

int main(void)
{
    RUN(test_config_errors);
    RUN(test_strict_priority);
    RUN(test_lanes);
    RUN(test_dwrr_exact_pattern);
    RUN(test_dwrr_weights_random_sizes);
    RUN(test_fragment_granularity);
    RUN(test_max_fragment_lowered);
    RUN(test_fifo_without_interleaving);
    RUN(test_credit_stall_and_grant);
    RUN(test_credit_and_empty_messages);
    RUN(test_queue_limits);
    RUN(test_zero_length_message);
    RUN(test_chain_to_iov);
    RUN(test_frames_done_out_of_order);
    RUN(test_release_callback_and_slot_reuse);
    RUN(test_retain_until_acked);
    RUN(test_rewind_resends_in_order);
    RUN(test_rewind_without_retention);
    RUN(test_destroy_drops_queued);
    RUN(test_packing_rules);
    RUN(test_packing_keeps_shares_and_priority);
    RUN(test_packing_credit_and_whole);
    RUN(test_packed_frames_retained_and_rewound);
    RUN(test_enqueue_now);
    RUN(test_enqueue_now_keeps_shares);
    RUN(test_end_to_end);
    RUN(test_end_to_end_packed);
    RUN(test_end_to_end_at_once);
    return 0;
}
