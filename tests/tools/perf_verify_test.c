/* fdn-perf bw --verify (tools/perf_verify.c): the message layout and its
 * checksum, over single buffers and chains, and the receiver's account of
 * delivered, lost, duplicated, reordered and corrupted numbers, including a
 * window that has to give numbers up. */
#include <stdlib.h>

#include "perf_proto.h"
#include "perf_verify.h"
#include "test.h"

/* A message of n buffers cut from buf at the given lengths (no pool: the
 * check only reads data, len and next). */
static void make_chain(fdn_msg *bufs, uint8_t *data, const size_t *lens, int n)
{
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        bufs[i] = (fdn_msg){.data = data + at, .len = (uint32_t)lens[i],
                            .next = i + 1 < n ? &bufs[i + 1] : NULL};
        at += lens[i];
    }
}

static bool check_flat(uint8_t *data, size_t size, uint64_t expect_size, uint64_t *seq)
{
    fdn_msg m;
    make_chain(&m, data, &size, 1);
    return perf_verify_check(&m, expect_size, seq);
}

static void test_fnv_vectors(void)
{
    /* Published FNV-1a-64 test vectors. */
    CHECK(perf_fnv1a64(PERF_FNV1A64_BASIS, (const uint8_t *)"", 0) == 0xcbf29ce484222325ull);
    CHECK(perf_fnv1a64(PERF_FNV1A64_BASIS, (const uint8_t *)"a", 1) == 0xaf63dc4c8601ec8cull);
    CHECK(perf_fnv1a64(PERF_FNV1A64_BASIS, (const uint8_t *)"foobar", 6) ==
          0x85944171f73967e8ull);
}

static void test_fill_and_check(void)
{
    static const size_t sizes[] = {16, 17, 23, 24, 100, 4096};
    uint8_t buf[4096];
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t size = sizes[s];
        for (uint64_t seq = 0; seq < 50; seq++) {
            perf_verify_fill(buf, size, seq * 977);
            uint64_t got = ~0ull;
            CHECK(check_flat(buf, size, size, &got));
            CHECK_EQ(got, seq * 977);
            CHECK(perf_load_le64(buf) == seq * 977);
        }
        /* The wrong length for the run. */
        uint64_t got;
        CHECK(!check_flat(buf, size, size + 1, &got));
    }
    /* Too short to hold the header. */
    uint64_t got;
    CHECK(!check_flat(buf, 8, 8, &got));
}

/* Any one flipped bit anywhere, the checksum included, is caught. */
static void test_corruption_detected(void)
{
    uint8_t buf[64];
    uint64_t seq;
    for (size_t i = 0; i < sizeof buf; i++)
        for (int b = 0; b < 8; b++) {
            perf_verify_fill(buf, sizeof buf, 12345);
            buf[i] ^= (uint8_t)(1u << b);
            CHECK(!check_flat(buf, sizeof buf, sizeof buf, &seq));
        }
    /* A body delivered under another message's header. */
    uint8_t a[64], b[64];
    perf_verify_fill(a, sizeof a, 7);
    perf_verify_fill(b, sizeof b, 8);
    memcpy(a + PERF_VERIFY_HEADER_SIZE, b + PERF_VERIFY_HEADER_SIZE,
           sizeof a - PERF_VERIFY_HEADER_SIZE);
    CHECK(!check_flat(a, sizeof a, sizeof a, &seq));
}

/* Chains cut anywhere, the header split too, check as the flat message. */
static void test_chains(void)
{
    uint8_t buf[300];
    perf_verify_fill(buf, sizeof buf, 99);
    static const size_t cuts[][4] = {
        {1, 299, 0, 0}, {5, 5, 290, 0}, {8, 8, 284, 0}, {15, 1, 1, 283}, {16, 284, 0, 0},
        {100, 100, 100, 0}, {299, 1, 0, 0},
    };
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        int n = cuts[c][2] == 0 ? 2 : cuts[c][3] == 0 ? 3 : 4;
        fdn_msg bufs[4];
        make_chain(bufs, buf, cuts[c], n);
        uint64_t seq = 0;
        CHECK(perf_verify_check(bufs, sizeof buf, &seq));
        CHECK_EQ(seq, 99);
        buf[200] ^= 1;
        CHECK(!perf_verify_check(bufs, sizeof buf, &seq));
        buf[200] ^= 1;
    }
}

static struct perf_verify_counts run(const uint64_t *seqs, size_t n, uint64_t sent)
{
    struct perf_seq_tracker t = {0};
    for (size_t i = 0; i < n; i++)
        CHECK(perf_seq_record(&t, seqs[i]) != PERF_SEQ_NO_MEMORY);
    struct perf_verify_counts c = perf_seq_finish(&t, sent);
    perf_seq_reset(&t);
    return c;
}

#define CHECK_COUNTS(c, d, l, du, r, co)                                              \
    do {                                                                              \
        CHECK_EQ((c).delivered, d);                                                   \
        CHECK_EQ((c).lost, l);                                                        \
        CHECK_EQ((c).duplicated, du);                                                 \
        CHECK_EQ((c).reordered, r);                                                   \
        CHECK_EQ((c).corrupted, co);                                                  \
    } while (0)

static void test_tracker_cases(void)
{
    struct perf_verify_counts c;
    c = run((const uint64_t[]){0, 1, 2, 3}, 4, 4);
    CHECK_COUNTS(c, 4, 0, 0, 0, 0);
    c = run((const uint64_t[]){0, 2, 1, 3}, 4, 4);
    CHECK_COUNTS(c, 4, 0, 0, 1, 0);
    c = run((const uint64_t[]){0, 1, 1, 0, 2}, 5, 3);
    CHECK_COUNTS(c, 3, 0, 2, 0, 0);
    c = run((const uint64_t[]){0, 1, 3}, 3, 4);
    CHECK_COUNTS(c, 3, 1, 0, 0, 0);
    c = run((const uint64_t[]){0, 1, 3}, 3, 6); /* the tail never came */
    CHECK_COUNTS(c, 3, 3, 0, 0, 0);
    c = run(NULL, 0, 10);
    CHECK_COUNTS(c, 0, 10, 0, 0, 0);
    c = run((const uint64_t[]){0, 1, 2, 3, 4}, 5, 3); /* 3 and 4 were never sent */
    CHECK_COUNTS(c, 3, 0, 0, 0, 2);

    struct perf_seq_tracker t = {0};
    perf_seq_record(&t, 0);
    perf_seq_corrupted(&t);
    CHECK_EQ(perf_seq_delivered_below(&t, 1), 1);
    c = perf_seq_finish(&t, 2);
    CHECK_COUNTS(c, 1, 1, 0, 0, 1);
    perf_seq_reset(&t);
}

/* A long in-order stream keeps the window a few words; a big gap grows it,
 * and filling the gap shrinks it again. */
static void test_tracker_window(void)
{
    struct perf_seq_tracker t = {0};
    for (uint64_t s = 0; s < 1000000; s++)
        CHECK_EQ(perf_seq_record(&t, s), PERF_SEQ_NEW);
    CHECK(t.words <= 4);
    CHECK(t.start >= 1000000 - 4 * 64);
    CHECK_EQ(perf_seq_delivered_below(&t, 1000000), 1000000);

    const uint64_t base = 1000000, gap = 500000;
    CHECK_EQ(perf_seq_record(&t, base + gap), PERF_SEQ_NEW);
    CHECK(t.words * 64 > gap);
    CHECK_EQ(perf_seq_delivered_below(&t, base + gap), base);       /* the scan path */
    CHECK_EQ(perf_seq_delivered_below(&t, base + gap + 1), base + 1);
    for (uint64_t s = base; s < base + gap; s++)
        CHECK_EQ(perf_seq_record(&t, s), PERF_SEQ_REORDERED);
    CHECK_EQ(perf_seq_record(&t, base + 3), PERF_SEQ_DUPLICATE);
    CHECK(t.start > base + gap - 4 * 64); /* slid back up */
    struct perf_verify_counts c = perf_seq_finish(&t, base + gap + 1);
    CHECK_COUNTS(c, base + gap + 1, 0, 1, gap, 0);
    perf_seq_reset(&t);
}

/* A number too far ahead for the capped window: the oldest missing numbers
 * are given up as lost, and one of them arriving late counts as a
 * duplicate. */
static void test_tracker_gives_up(void)
{
    struct perf_seq_tracker t = {0};
    const uint64_t far = 3 * PERF_SEQ_MAX_WINDOW;
    CHECK_EQ(perf_seq_record(&t, 0), PERF_SEQ_NEW);
    CHECK_EQ(perf_seq_record(&t, 1), PERF_SEQ_NEW);
    CHECK_EQ(perf_seq_record(&t, far), PERF_SEQ_NEW);
    CHECK(t.words * 64 == PERF_SEQ_MAX_WINDOW);
    CHECK(t.start > 0 && far - t.start < PERF_SEQ_MAX_WINDOW);
    CHECK_EQ(perf_seq_record(&t, 5), PERF_SEQ_DUPLICATE);
    struct perf_verify_counts c = perf_seq_finish(&t, far + 1);
    CHECK_COUNTS(c, 3, far + 1 - 3, 1, 0, 0);
    perf_seq_reset(&t);
}

int main(void)
{
    RUN(test_fnv_vectors);
    RUN(test_fill_and_check);
    RUN(test_corruption_detected);
    RUN(test_chains);
    RUN(test_tracker_cases);
    RUN(test_tracker_window);
    RUN(test_tracker_gives_up);
    printf("perf_verify: all tests passed\n");
    return 0;
}
