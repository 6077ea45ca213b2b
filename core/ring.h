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
 *   struct fdn__spsc  one producer thread, one consumer thread.
 *                     FastForward (Giacomoni, Moseley and Vachharajani,
 *                     PPoPP 2008): the slot itself is the signal, NULL
 *                     meaning free and anything else meaning full, so each
 *                     side keeps its index private and neither ever reads
 *                     the other's: in the steady state only slot lines move
 *                     between the two cores. It cannot carry NULL.
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

/* FastForward. Position p lives in slot p & mask, and the slot's content is
 * its state: NULL is free, any other pointer is published and not yet taken.
 * The producer writes position p only into a slot it sees NULL, the consumer
 * takes position p only from a slot it sees non-NULL and writes NULL back.
 * Positions are taken in order, so the slot at tail & mask holds either NULL
 * or the untaken position tail - capacity (the ring is full), and the slot
 * at head & mask holds either NULL or position head: no slot can be read as
 * belonging to another lap.
 *
 * Who writes what:
 *   tail, producer_mask   the producer only; nobody else reads them.
 *   head, consumer_mask   the consumer only. head is atomic (relaxed) only
 *                         so that fdn__spsc_empty() may read it from any
 *                         thread; no data path reads it but the consumer's.
 *   slots[]               the producer writes pointers into NULL slots, the
 *                         consumer writes NULL into the slots it takes.
 * The two index lines are private to their side, so they never move; the
 * slot lines move once per handoff, and that is the handoff itself. The
 * masks are copied into each side's line so no side reads the other's line
 * to index a slot. */
struct fdn__spsc {
    alignas(FDN_CACHELINE) uint32_t tail; /* next position to write; producer's */
    uint32_t producer_mask;

    alignas(FDN_CACHELINE) _Atomic uint32_t head; /* next position to take; consumer's */
    uint32_t consumer_mask;

    alignas(FDN_CACHELINE) void *_Atomic slots[];
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
    for (uint32_t i = 0; i < capacity; i++)
        atomic_init(&r->slots[i], NULL);
    r->tail = first_index;
    r->producer_mask = capacity - 1;
    atomic_init(&r->head, first_index);
    r->consumer_mask = capacity - 1;
    return 0;
}

/* Lays an empty ring of capacity slots (a power of two, at least 2) out in
 * the fdn__spsc_memsize(capacity) bytes at r, which must be 64-byte aligned.
 * Returns 0 or -EINVAL. Touches every slot, so the pages land on the NUMA
 * node of the memory's binding. The ring must reach the producer and
 * consumer threads through some synchronisation that happens after this
 * call. */
static inline int fdn__spsc_init(struct fdn__spsc *r, uint32_t capacity)
{
    return fdn__spsc_init_at(r, capacity, 0);
}

/* Usable slots: all of them (FastForward needs no empty slot to tell full
 * from empty). */
static inline uint32_t fdn__spsc_capacity(const struct fdn__spsc *r)
{
    return r->consumer_mask + 1;
}

/* Producer only. Enqueues objs[0..k) for the largest k <= n that fits and
 * returns k. The consumer sees the pointers one by one, in order, as each
 * slot's store publishes it.
 *
 * NULL cannot be enqueued (a NULL slot is a free one): the burst stops at
 * the first NULL in objs, as if the ring were full there, so enqueueing a
 * lone NULL returns 0 and changes nothing.
 *
 * Free slots run in position order from tail, because the consumer frees
 * them in that order; so when the last slot of the burst is free, all are,
 * and one load checks the whole burst. That acquire load pairs with the
 * consumer's release store of NULL into that slot, which the consumer's
 * reads of every earlier slot precede: the producer overwrites none of them
 * before the consumer has read it. When the ring has less room than the
 * burst, a binary search finds where the free run ends, with the same
 * argument for the last slot it sees NULL. Each slot's release store
 * publishes the pointer; what the producer wrote to the object it points to
 * before enqueueing it happens before the consumer's use of it. */
static inline unsigned fdn__spsc_enqueue_burst(struct fdn__spsc *r, void *const *objs, unsigned n)
{
    uint32_t mask = r->producer_mask;
    uint32_t tail = r->tail;
    unsigned count = fdn__ring_min(n, mask + 1);

    if (count == 0)
        return 0;
    if (atomic_load_explicit(&r->slots[(tail + count - 1) & mask], memory_order_acquire)) {
        /* Slot count - 1 is taken; find the first taken one before it. */
        unsigned lo = 0, hi = count - 1;
        while (lo < hi) {
            unsigned mid = lo + (hi - lo) / 2;
            if (atomic_load_explicit(&r->slots[(tail + mid) & mask], memory_order_acquire))
                hi = mid;
            else
                lo = mid + 1;
        }
        count = lo;
    }
    unsigned i;
    for (i = 0; i < count && objs[i]; i++)
        atomic_store_explicit(&r->slots[(tail + i) & mask], objs[i], memory_order_release);
    r->tail = tail + i;
    return i;
}

/* Consumer only. Dequeues up to n pointers into objs[0..k), oldest first,
 * taking published slots from head until the first free one, and returns k.
 *
 * The acquire load of each slot pairs with the producer's release store, so
 * the pointer, and what the producer wrote to its object, are visible. The
 * release store of NULL gives the slot back only after it has been read (see
 * fdn__spsc_enqueue_burst()). */
static inline unsigned fdn__spsc_dequeue_burst(struct fdn__spsc *r, void **objs, unsigned n)
{
    uint32_t mask = r->consumer_mask;
    uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    unsigned count = 0;

    while (count < n) {
        void *_Atomic *slot = &r->slots[(head + count) & mask];
        void *obj = atomic_load_explicit(slot, memory_order_acquire);
        if (!obj)
            break;
        objs[count++] = obj;
        atomic_store_explicit(slot, NULL, memory_order_release);
    }
    if (count)
        atomic_store_explicit(&r->head, head + count, memory_order_relaxed);
    return count;
}

/* Any thread. For the consumer the answer is exact: false means its next
 * dequeue returns at least one pointer (only the consumer takes pointers
 * out). For any other thread it is a snapshot that may already be stale
 * (head is read relaxed, and may be older than the slots it indexes).
 *
 * A consumer that goes to sleep when its ring is empty needs a seq_cst fence
 * between announcing that it sleeps and this check, and its producers one
 * between enqueueing and reading that announcement. That is a Dekker pair:
 *   consumer: sleeping = 1;  fence;  load slot[head]
 *   producer: store slot[p]; fence;  load sleeping
 * The two seq_cst fences are ordered one way or the other. If the
 * consumer's comes first, the producer's load sees sleeping = 1 and it
 * wakes the consumer. If the producer's comes first, the consumer's load of
 * slot[head] sees the last store to that slot made before the producer's
 * fence, or a later one. If head == p that store is the new pointer; if
 * head < p it is the pointer the producer stored at position head earlier,
 * which only the consumer's taking it would clear, and it has not (if
 * head > p the consumer took p already). So the consumer finds the ring
 * non-empty, and does not sleep. The slot store is the publication, so the
 * argument needs no shared index at all. */
static inline bool fdn__spsc_empty(const struct fdn__spsc *r)
{
    uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    return atomic_load_explicit(&r->slots[head & r->consumer_mask], memory_order_acquire) == NULL;
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
