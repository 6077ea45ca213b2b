/* fdn-perf bw --verify: numbered, checksummed messages, and the receiver's
 * account of what arrived.
 *
 * Every message starts with a 16-byte header, then a body that depends on
 * the sequence number (so a body delivered under another message's header
 * does not check):
 *
 *   0 seq u64       0, 1, 2, ... per run, in the order the client sent them
 *   8 checksum u64  FNV-1a-64 (offset basis 0xcbf29ce484222325, prime
 *                   0x100000001b3) over bytes 0..8 and 16..len, i.e. the
 *                   whole message except the checksum itself
 *  16 body          the little-endian words of an xorshift64* stream seeded
 *                   with seq (the last word cut to the message's length)
 *
 * all little-endian. FNV-1a is a standard hash anyone can recompute from
 * outside; it is not fast (a multiply per byte), so a --verify run measures
 * the tool's own checking too and its throughput is not the plain bw figure.
 *
 * The receiver sorts each message into exactly one of:
 *   corrupted    wrong length, or the checksum does not match (its number is
 *                then not trusted, so it counts nowhere else); also a number
 *                the client says it never sent
 *   duplicated   a number already received
 *   delivered    a number received for the first time; of these, reordered
 *                counts those below the highest number received before them
 * and, once the client says how many it sent, lost = numbers never
 * received. A run is intact when lost, duplicated, reordered and corrupted
 * are all 0.
 *
 * Memory: the receiver keeps one bit per number from the lowest one it has
 * not received yet to the highest it has, so an in-order stream needs a few
 * words however long it runs. The window is capped at PERF_SEQ_MAX_WINDOW
 * numbers: past that, the oldest missing numbers are given up as lost, and
 * one of them arriving later counts as a duplicate (it can no longer be told
 * apart from one). */
#ifndef FDN_TOOLS_PERF_VERIFY_H
#define FDN_TOOLS_PERF_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fdn/msg.h>

#define PERF_VERIFY_HEADER_SIZE 16
#define PERF_SEQ_MAX_WINDOW ((uint64_t)1 << 30)   /* 128 MiB of bits */

/* Writes message seq of size bytes (size >= PERF_VERIFY_HEADER_SIZE) into
 * buf. */
void perf_verify_fill(uint8_t *buf, size_t size, uint64_t seq);

/* Checks a received message (one buffer or a chain) of the run's size.
 * Returns true with *seq set when its length and checksum are right. */
bool perf_verify_check(const fdn_msg *msg, uint64_t size, uint64_t *seq);

/* FNV-1a-64 of len bytes, continuing from hash (start with
 * PERF_FNV1A64_BASIS). */
#define PERF_FNV1A64_BASIS UINT64_C(0xcbf29ce484222325)
uint64_t perf_fnv1a64(uint64_t hash, const uint8_t *p, size_t len);

struct perf_verify_counts {
    uint64_t delivered, lost, duplicated, reordered, corrupted;
};

/* Which numbers have arrived (see above). Zero-initialised is empty. */
struct perf_seq_tracker {
    uint64_t start;          /* number of bit 0 of bits[0]; a multiple of 64 */
    uint64_t *bits;          /* window: bit i is number start + i */
    size_t words;
    size_t full_words;       /* leading words with every bit set */
    uint64_t highest;        /* meaningful when any */
    bool any;
    uint64_t given_up;       /* missing numbers dropped from a full window */
    struct perf_verify_counts counts;  /* lost is filled in by perf_seq_finish */
};

enum perf_seq_result {
    PERF_SEQ_NEW,            /* first time, in order */
    PERF_SEQ_REORDERED,      /* first time, below the highest seen */
    PERF_SEQ_DUPLICATE,
    PERF_SEQ_NO_MEMORY,      /* not recorded: the window could not grow */
};

/* Records one correctly checksummed message. */
enum perf_seq_result perf_seq_record(struct perf_seq_tracker *t, uint64_t seq);

/* Records a message that failed perf_verify_check(). */
static inline void perf_seq_corrupted(struct perf_seq_tracker *t) { t->counts.corrupted++; }

/* Numbers below sent received so far: what STATS waits for. */
uint64_t perf_seq_delivered_below(const struct perf_seq_tracker *t, uint64_t sent);

/* The account of a run whose client sent numbers 0 .. sent-1. */
struct perf_verify_counts perf_seq_finish(const struct perf_seq_tracker *t, uint64_t sent);

/* Frees the window and empties the tracker. */
void perf_seq_reset(struct perf_seq_tracker *t);

#endif
