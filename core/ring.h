/* Bounded lock-free rings of pointers between threads. Internal.
 *
 * Two kinds, each in the DPDK style: the caller provides the memory
 * (fdn__*_memsize() bytes, 64-byte aligned, typically NUMA-local to the
 * consumer), fdn__*_init() lays the ring out in it, and the data path is made
 * of burst functions that move up to n pointers and return how many they
 * moved. Neither kind allocates, blocks, or overwrites: a full ring accepts
 * fewer than n (possibly 0), and the caller turns that into -EAGAIN
 * backpressure. The rings hold no pointers of their own, only the payload
 * pointers they carry, so a ring may live in memory mapped at different
 * addresses; the payloads are opaque and stay owned by whoever enqueued them
 * until they are dequeued.
 *
 *   struct fdn__spsc  one producer thread, one consumer thread. Each side
 *                     publishes its index once per burst and keeps a cached
 *                     copy of the other side's index, so in the steady state
 *                     the two threads share no written cache line except the
 *                     slots themselves.
 *   struct fdn__mpsc  any number of producer threads, one consumer thread.
 *                     Dmitry Vyukov's bounded queue: each slot carries a
 *                     sequence number telling whose turn it is, so producers
 *                     only contend on one compare-and-swap of the producer
 *                     position and a preempted producer never stops the
 *                     others from enqueueing.
 *
 * Which thread is "the producer" or "the consumer" is a contract of the
 * caller: the rings do not check it. Handing a role to another thread is
 * fine as long as the handover itself synchronises (a mutex, a join, a
 * release/acquire pair). Indexes are free-running and wrap around modulo
 * their width; only the slot number is masked. */
#ifndef FDN_CORE_RING_H
#define FDN_CORE_RING_H

#include <errno.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/compiler.h"

/* Neither ring accepts more slots than this, so that the distance between
 * two free-running indexes always fits in their signed counterpart. */
#define FDN__RING_MAX_CAPACITY (UINT32_C(1) << 31)

static inline bool fdn__ring_capacity_valid(uint32_t capacity)
{
    return capacity >= 2 && capacity <= FDN__RING_MAX_CAPACITY && fdn__is_pow2(capacity);
}

static inline bool fdn__ring_memory_aligned(const void *mem)
{
    return ((uintptr_t)mem & (FDN_CACHELINE - 1)) == 0;
}

static inline unsigned fdn__ring_min(unsigned a, uint32_t b)
{
    return a < b ? a : (unsigned)b;
}

/* ---- Single producer, single consumer ----------------------------------- */

/* The producer's line holds what the producer writes: the tail it publishes
 * and its cached copy of the consumer's head. The consumer's line mirrors it.
 * Each line also carries its own copy of the mask so that neither side reads
 * the other's line to index a slot. */
struct fdn__spsc {
    alignas(FDN_CACHELINE) _Atomic uint32_t tail; /* written by the producer only */
    uint32_t producer_head_cache;                 /* producer's last view of head */
    uint32_t producer_mask;

    alignas(FDN_CACHELINE) _Atomic uint32_t head; /* written by the consumer only */
    uint32_t consumer_tail_cache;                 /* consumer's last view of tail */
    uint32_t consumer_mask;

    alignas(FDN_CACHELINE) void *slots[];
};

static inline size_t fdn__spsc_memsize(uint32_t capacity)
{
    return fdn__align_up(sizeof(struct fdn__spsc) + (size_t)capacity * sizeof(void *),
                         FDN_CACHELINE);
}

/* Like fdn__spsc_init(), but both indexes start at first_index instead of 0.
 * Production code has no reason to call it; tests use it to cross the 2^32
 * wrap of the free-running indexes without moving four billion pointers. */
static inline int fdn__spsc_init_at(struct fdn__spsc *r, uint32_t capacity, uint32_t first_index)
{
    if (!fdn__ring_capacity_valid(capacity) || !fdn__ring_memory_aligned(r))
        return -EINVAL;
    atomic_init(&r->tail, first_index);
    r->producer_head_cache = first_index;
    r->producer_mask = capacity - 1;
    atomic_init(&r->head, first_index);
    r->consumer_tail_cache = first_index;
    r->consumer_mask = capacity - 1;
    return 0;
}

/* Lays an empty ring of capacity slots (a power of two, at least 2) out in
 * the fdn__spsc_memsize(capacity) bytes at r, which must be 64-byte aligned.
 * Returns 0 or -EINVAL. The ring must reach the producer and consumer threads
 * through some synchronisation that happens after this call. */
static inline int fdn__spsc_init(struct fdn__spsc *r, uint32_t capacity)
{
    return fdn__spsc_init_at(r, capacity, 0);
}

static inline uint32_t fdn__spsc_capacity(const struct fdn__spsc *r)
{
    return r->consumer_mask + 1;
}

/* Producer only. Enqueues objs[0..k) for the largest k <= n that fits and
 * returns k; the slots become visible to the consumer all at once.
 *
 * The acquire load of head pairs with the consumer's release store: the
 * consumer has finished reading every slot it gave back before the producer
 * writes into it. The release store of tail publishes the slot writes. */
static inline unsigned fdn__spsc_enqueue_burst(struct fdn__spsc *r, void *const *objs, unsigned n)
{
    uint32_t mask = r->producer_mask;
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint32_t free_slots = mask + 1 - (tail - r->producer_head_cache);

    if (free_slots < n) {
        r->producer_head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
        free_slots = mask + 1 - (tail - r->producer_head_cache);
    }
    unsigned count = fdn__ring_min(n, free_slots);
    if (count == 0)
        return 0;
    for (unsigned i = 0; i < count; i++)
        r->slots[(tail + i) & mask] = objs[i];
    atomic_store_explicit(&r->tail, tail + count, memory_order_release);
    return count;
}

/* Consumer only. Dequeues up to n pointers into objs[0..k), oldest first,
 * and returns k.
 *
 * The acquire load of tail pairs with the producer's release store, so the
 * slots read here are the ones the producer wrote. The release store of
 * head hands the slots back only after they have been read. */
static inline unsigned fdn__spsc_dequeue_burst(struct fdn__spsc *r, void **objs, unsigned n)
{
    uint32_t mask = r->consumer_mask;
    uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint32_t ready = r->consumer_tail_cache - head;

    if (ready < n) {
        r->consumer_tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
        ready = r->consumer_tail_cache - head;
    }
    unsigned count = fdn__ring_min(n, ready);
    if (count == 0)
        return 0;
    for (unsigned i = 0; i < count; i++)
        objs[i] = r->slots[(head + i) & mask];
    atomic_store_explicit(&r->head, head + count, memory_order_release);
    return count;
}

/* Any thread. For the consumer the answer is exact: false means its next
 * dequeue returns at least one pointer (only the consumer takes pointers
 * out). For any other thread it is a snapshot that may already be stale.
 * A consumer that goes to sleep when its ring is empty needs a seq_cst fence
 * between announcing that it sleeps and this check, and its producers one
 * between enqueueing and reading that announcement. */
static inline bool fdn__spsc_empty(const struct fdn__spsc *r)
{
    uint32_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    return head == tail;
}

/* ---- Multiple producers, single consumer -------------------------------- */

/* Slot at position pos (slot number pos & mask) is in one of two states,
 * told apart by its sequence number:
 *   seq == pos      free: the producer that reserved pos may write it;
 *   seq == pos + 1  published: the consumer may read it.
 * Reading it sets seq = pos + capacity, which frees it for the next lap.
 * Positions are size_t and, on the 64-bit targets Foundation supports, never
 * wrap in practice, so a producer preempted between reading the producer
 * position and its compare-and-swap cannot be fooled by a full lap (ABA). */
struct fdn__mpsc_slot {
    _Atomic size_t seq;
    void *ptr;
};

struct fdn__mpsc {
    alignas(FDN_CACHELINE) _Atomic size_t tail; /* next position to reserve; producers CAS it */
    size_t producer_mask;

    alignas(FDN_CACHELINE) _Atomic size_t head; /* next position to read; written by the consumer */
    size_t consumer_mask;

    alignas(FDN_CACHELINE) struct fdn__mpsc_slot slots[];
};

static inline size_t fdn__mpsc_memsize(uint32_t capacity)
{
    return fdn__align_up(sizeof(struct fdn__mpsc) +
                             (size_t)capacity * sizeof(struct fdn__mpsc_slot),
                         FDN_CACHELINE);
}

/* Like fdn__mpsc_init(), but positions start at first_position. Tests only,
 * to cross the wrap of the free-running positions. */
static inline int fdn__mpsc_init_at(struct fdn__mpsc *r, uint32_t capacity, size_t first_position)
{
    if (!fdn__ring_capacity_valid(capacity) || !fdn__ring_memory_aligned(r))
        return -EINVAL;
    size_t mask = capacity - 1;
    for (size_t i = 0; i < capacity; i++) {
        size_t pos = first_position + i;
        atomic_init(&r->slots[pos & mask].seq, pos);
        r->slots[pos & mask].ptr = NULL;
    }
    atomic_init(&r->tail, first_position);
    r->producer_mask = mask;
    atomic_init(&r->head, first_position);
    r->consumer_mask = mask;
    return 0;
}

/* Lays an empty ring of capacity slots (a power of two, at least 2) out in
 * the fdn__mpsc_memsize(capacity) bytes at r, which must be 64-byte aligned.
 * Returns 0 or -EINVAL. Touches every slot, so the pages land on the NUMA
 * node of the memory's binding. */
static inline int fdn__mpsc_init(struct fdn__mpsc *r, uint32_t capacity)
{
    return fdn__mpsc_init_at(r, capacity, 0);
}

static inline uint32_t fdn__mpsc_capacity(const struct fdn__mpsc *r)
{
    return (uint32_t)r->consumer_mask + 1;
}

/* How many slots from position pos on, up to n, are free for this lap. The
 * acquire loads pair with the consumer's release stores of seq: the consumer
 * has read a slot's previous pointer before anyone may overwrite it. */
static inline unsigned fdn__mpsc_free_run(struct fdn__mpsc *r, size_t pos, unsigned n,
                                          ptrdiff_t *first_lag)
{
    size_t mask = r->producer_mask;
    unsigned run = 0;

    while (run < n) {
        size_t seq = atomic_load_explicit(&r->slots[(pos + run) & mask].seq,
                                          memory_order_acquire);
        ptrdiff_t lag = (ptrdiff_t)(seq - (pos + run));
        if (run == 0)
            *first_lag = lag;
        if (lag != 0)
            break;
        run++;
    }
    return run;
}

/* Any thread, concurrently with other producers. Enqueues objs[0..k) for the
 * largest k <= n that it can reserve as one run of consecutive free slots,
 * and returns k; 0 means the ring is full. It never waits for another
 * producer: when its compare-and-swap loses, it retries from the position
 * the winner left, and each retry means some producer made progress.
 *
 * The consumer sees the k pointers one by one, in order, as each slot's
 * release store of seq publishes it; a producer that reserved slots but has
 * not published them yet holds the consumer up at the first one, never the
 * other producers. */
static inline unsigned fdn__mpsc_enqueue_burst(struct fdn__mpsc *r, void *const *objs, unsigned n)
{
    size_t mask = r->producer_mask;
    size_t pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
    unsigned count;

    if (n == 0)
        return 0;
    for (;;) {
        ptrdiff_t first_lag = 0;
        count = fdn__mpsc_free_run(r, pos, n, &first_lag);
        if (count == 0 && first_lag < 0)
            return 0; /* the slot at pos still holds last lap's pointer: full */
        if (count == 0) {
            /* Another producer reserved pos since we read the position. */
            pos = atomic_load_explicit(&r->tail, memory_order_relaxed);
            fdn__cpu_relax();
            continue;
        }
        /* Relaxed suffices: the slots' seq loads above carry the ordering
         * with the consumer, and the position only hands out ownership. */
        if (atomic_compare_exchange_weak_explicit(&r->tail, &pos, pos + count,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    for (unsigned i = 0; i < count; i++) {
        struct fdn__mpsc_slot *slot = &r->slots[(pos + i) & mask];
        slot->ptr = objs[i];
        atomic_store_explicit(&slot->seq, pos + i + 1, memory_order_release);
    }
    return count;
}

/* Consumer only. Dequeues up to n pointers into objs[0..k), in position
 * order, stopping early at the first slot whose producer has not published
 * it yet; returns k.
 *
 * The acquire load of seq pairs with the producer's release store, so ptr is
 * the pointer that producer wrote. The release store of the next lap's seq
 * orders the read of ptr before any producer reuses the slot. head is only
 * informational for other threads (fdn__mpsc_empty()), so a relaxed store
 * is enough. */
static inline unsigned fdn__mpsc_dequeue_burst(struct fdn__mpsc *r, void **objs, unsigned n)
{
    size_t mask = r->consumer_mask;
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    unsigned count = 0;

    while (count < n) {
        size_t pos = head + count;
        struct fdn__mpsc_slot *slot = &r->slots[pos & mask];
        if (atomic_load_explicit(&slot->seq, memory_order_acquire) != pos + 1)
            break;
        objs[count++] = slot->ptr;
        atomic_store_explicit(&slot->seq, pos + mask + 1, memory_order_release);
    }
    if (count)
        atomic_store_explicit(&r->head, head + count, memory_order_relaxed);
    return count;
}

/* Any thread. For the consumer the answer is exact and matches what a
 * dequeue would do now: false means the next slot is published, true means
 * it is not (the ring may still hold reserved slots whose producers have not
 * finished, which dequeue could not take either). For other threads it is a
 * snapshot. The sleep protocol of fdn__spsc_empty() applies here too. */
static inline bool fdn__mpsc_empty(const struct fdn__mpsc *r)
{
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    const struct fdn__mpsc_slot *slot = &r->slots[head & r->consumer_mask];
    return atomic_load_explicit(&slot->seq, memory_order_acquire) != head + 1;
}

#endif
