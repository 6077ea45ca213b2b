/* fdn-perf bw --verify: message layout, checksum and the receiver's
 * sequence tracker (see perf_verify.h). */
#include "perf_verify.h"

#include <stdlib.h>
#include <string.h>

#include "perf_proto.h"

#define FNV1A64_PRIME UINT64_C(0x100000001b3)
#define WORD_BITS 64u
#define MIN_WORDS 4u
#define MAX_WORDS (PERF_SEQ_MAX_WINDOW / WORD_BITS)

/* ---- Messages --------------------------------------------------------------- */

uint64_t perf_fnv1a64(uint64_t hash, const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        hash ^= p[i];
        hash *= FNV1A64_PRIME;
    }
    return hash;
}

/* The body's generator: xorshift64*, seeded so that no number gives the
 * all-zero state it cannot leave. */
static uint64_t body_state(uint64_t seq)
{
    uint64_t s = (seq + 1) * UINT64_C(0x9e3779b97f4a7c15);
    return s ? s : 1;
}

static uint64_t body_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(0x2545f4914f6cdd1d);
}

void perf_verify_fill(uint8_t *buf, size_t size, uint64_t seq)
{
    uint64_t state = body_state(seq);
    for (size_t at = PERF_VERIFY_HEADER_SIZE; at < size; at += 8) {
        uint8_t word[8];
        perf_store_le64(word, body_next(&state));
        memcpy(buf + at, word, size - at < 8 ? size - at : 8);
    }
    perf_store_le64(buf, seq);
    uint64_t hash = perf_fnv1a64(PERF_FNV1A64_BASIS, buf, 8);
    hash = perf_fnv1a64(hash, buf + PERF_VERIFY_HEADER_SIZE, size - PERF_VERIFY_HEADER_SIZE);
    perf_store_le64(buf + 8, hash);
}

bool perf_verify_check(const fdn_msg *msg, uint64_t size, uint64_t *seq)
{
    if (size < PERF_VERIFY_HEADER_SIZE || fdn_msg_total_len(msg) != size)
        return false;
    /* The header may straddle buffers of a chain: hash and gather it byte
     * by byte at its global offsets, the body a buffer at a time. */
    uint8_t header[PERF_VERIFY_HEADER_SIZE];
    uint64_t hash = PERF_FNV1A64_BASIS;
    size_t offset = 0;
    for (const fdn_msg *m = msg; m; m = m->next) {
        const uint8_t *p = fdn_msg_data(m);
        size_t len = fdn_msg_len(m), i = 0;
        for (; i < len && offset + i < PERF_VERIFY_HEADER_SIZE; i++) {
            header[offset + i] = p[i];
            if (offset + i < 8)
                hash = perf_fnv1a64(hash, p + i, 1);
        }
        hash = perf_fnv1a64(hash, p + i, len - i);
        offset += len;
    }
    if (hash != perf_load_le64(header + 8))
        return false;
    *seq = perf_load_le64(header);
    return true;
}

/* ---- Sequence tracker --------------------------------------------------------- */

/* Words of the window in use: up to the one holding the highest number. */
static size_t used_words(const struct perf_seq_tracker *t)
{
    if (!t->any || t->highest < t->start)
        return 0;
    uint64_t used = (t->highest - t->start) / WORD_BITS + 1;
    return used < t->words ? (size_t)used : t->words;
}

/* Moves the window up by n words (n <= words), counting the numbers of the
 * dropped words that never arrived as given up. Only the words in use are
 * moved: the rest are zero already. */
static void slide(struct perf_seq_tracker *t, size_t n)
{
    size_t used = used_words(t);
    for (size_t i = 0; i < n; i++)
        t->given_up += WORD_BITS - (uint64_t)__builtin_popcountll(t->bits[i]);
    if (n >= used) {
        memset(t->bits, 0, (used > n ? used : n) * sizeof *t->bits);
    } else {
        memmove(t->bits, t->bits + n, (used - n) * sizeof *t->bits);
        memset(t->bits + used - n, 0, n * sizeof *t->bits);
    }
    t->start += (uint64_t)n * WORD_BITS;
    t->full_words = t->full_words > n ? t->full_words - n : 0;
}

/* Makes the window reach number start + idx: grows it (doubling, up to the
 * cap), then slides it when the cap is not enough. Returns false when memory
 * runs out. */
static bool reach(struct perf_seq_tracker *t, uint64_t idx)
{
    uint64_t needed = idx / WORD_BITS + 1;
    if (needed > t->words && t->words < MAX_WORDS) {
        uint64_t grown = t->words ? 2 * (uint64_t)t->words : MIN_WORDS;
        if (grown < needed)
            grown = needed;
        if (grown > MAX_WORDS)
            grown = MAX_WORDS;
        uint64_t *bits = realloc(t->bits, grown * sizeof *bits);
        if (!bits)
            return false;
        memset(bits + t->words, 0, (grown - t->words) * sizeof *bits);
        t->bits = bits;
        t->words = grown;
    }
    if (needed > t->words) {
        uint64_t over = needed - t->words;
        if (over >= t->words) { /* the whole window and more is given up */
            slide(t, t->words);
            t->given_up += (over - t->words) * WORD_BITS;
            t->start += (over - t->words) * WORD_BITS;
        } else {
            slide(t, over);
        }
    }
    return true;
}

/* After a bit was set in word w: advance the count of leading full words,
 * and slide them out once they are at least as many as the words in use
 * after them (so each slide moves no more words than it drops: amortised
 * O(1) per number, and an in-order stream keeps the window one word long). */
static void compact(struct perf_seq_tracker *t, size_t w)
{
    if (w != t->full_words)
        return;
    while (t->full_words < t->words && t->bits[t->full_words] == UINT64_MAX)
        t->full_words++;
    if (t->full_words && t->full_words >= used_words(t) - t->full_words)
        slide(t, t->full_words); /* all full: nothing is given up */
}

enum perf_seq_result perf_seq_record(struct perf_seq_tracker *t, uint64_t seq)
{
    if (seq < t->start) {
        t->counts.duplicated++;
        return PERF_SEQ_DUPLICATE;
    }
    if (!reach(t, seq - t->start))
        return PERF_SEQ_NO_MEMORY;
    uint64_t idx = seq - t->start; /* the window may have slid */
    size_t w = (size_t)(idx / WORD_BITS);
    uint64_t bit = UINT64_C(1) << (idx % WORD_BITS);
    if (t->bits[w] & bit) {
        t->counts.duplicated++;
        return PERF_SEQ_DUPLICATE;
    }
    t->bits[w] |= bit;
    bool reordered = t->any && seq < t->highest;
    if (!t->any || seq > t->highest)
        t->highest = seq;
    t->any = true;
    t->counts.delivered++;
    t->counts.reordered += reordered;
    compact(t, w);
    return reordered ? PERF_SEQ_REORDERED : PERF_SEQ_NEW;
}

uint64_t perf_seq_delivered_below(const struct perf_seq_tracker *t, uint64_t sent)
{
    if (!t->any || t->highest < sent)
        return t->counts.delivered; /* the usual case: nothing at or above sent */
    /* Below the window everything arrived except what was given up (counted
     * as below sent: it is the oldest). */
    uint64_t below_start = sent < t->start ? sent : t->start;
    uint64_t n = below_start - (t->given_up < below_start ? t->given_up : below_start);
    if (sent > t->start) {
        uint64_t span = sent - t->start;
        size_t full = span / WORD_BITS < t->words ? (size_t)(span / WORD_BITS) : t->words;
        for (size_t i = 0; i < full; i++)
            n += (uint64_t)__builtin_popcountll(t->bits[i]);
        if (full < t->words && span % WORD_BITS)
            n += (uint64_t)__builtin_popcountll(t->bits[full] &
                                                ((UINT64_C(1) << (span % WORD_BITS)) - 1));
    }
    return n;
}

struct perf_verify_counts perf_seq_finish(const struct perf_seq_tracker *t, uint64_t sent)
{
    struct perf_verify_counts c = t->counts;
    uint64_t below = perf_seq_delivered_below(t, sent);
    c.corrupted += c.delivered - below; /* numbers the client never sent */
    c.delivered = below;
    c.lost = sent - below;
    return c;
}

void perf_seq_reset(struct perf_seq_tracker *t)
{
    free(t->bits);
    *t = (struct perf_seq_tracker){0};
}
