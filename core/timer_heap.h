/* The timer heap of one worker. Internal.
 *
 * A 4-ary min-heap of armed fdn_timer objects ordered by (deadline_ns, seq):
 * the earliest deadline first, and among equal deadlines the timer armed
 * first. Each timer records its own position in heap_index (UINT32_MAX when
 * it is not in any heap), so removal and re-arming cost O(log n) without a
 * search. Four children per node make the heap half as deep as a binary one,
 * and the four siblings compared on the way down sit next to each other in
 * the array.
 *
 * The heap belongs to one thread (the worker's owner) and is not
 * synchronised. It references the timers but does not own them: their memory
 * is the caller's and must stay valid while they are armed. The heap owns
 * only its array of pointers. */
#ifndef FDN_CORE_TIMER_HEAP_H
#define FDN_CORE_TIMER_HEAP_H

#include <stddef.h>
#include <stdint.h>

#include <fdn/worker.h>

struct fdn__timer_heap {
    fdn_timer **items;   /* items[0] is the earliest; NULL until the first insert */
    uint32_t count;
    uint32_t capacity;   /* length of items */
    uint64_t next_seq;   /* arm order given to the next inserted or re-armed timer */
};

/* An empty heap; allocates nothing. */
void fdn__timer_heap_init(struct fdn__timer_heap *h);

/* Frees the array and marks every timer still in the heap unarmed
 * (heap_index = UINT32_MAX); their tasks are not scheduled. The heap is
 * empty afterwards and may be used again. */
void fdn__timer_heap_fini(struct fdn__timer_heap *h);

/* Adds t, whose deadline_ns is already set and which must not be armed in
 * any heap, and gives it the next seq. Returns 0, or -ENOMEM when the array
 * cannot grow (t is then left unarmed). */
int fdn__timer_heap_insert(struct fdn__timer_heap *h, fdn_timer *t);

/* Takes t, which must be armed in h, out of the heap; t is unarmed after. */
void fdn__timer_heap_remove(struct fdn__timer_heap *h, fdn_timer *t);

/* Moves t, armed in h or not armed at all, to deadline_ns with a fresh seq,
 * so it fires after every timer already due at the same deadline. Returns 0,
 * or -ENOMEM when t was not armed and the array cannot grow (t is then left
 * unarmed, with the new deadline). */
int fdn__timer_heap_rearm(struct fdn__timer_heap *h, fdn_timer *t, uint64_t deadline_ns);

/* Takes out and returns the earliest timer if its deadline is <= now_ns,
 * else returns NULL. The returned timer is unarmed. */
fdn_timer *fdn__timer_heap_pop_expired(struct fdn__timer_heap *h, uint64_t now_ns);

/* The earliest timer, still armed, or NULL if the heap is empty. */
static inline fdn_timer *fdn__timer_heap_min(const struct fdn__timer_heap *h)
{
    return h->count ? h->items[0] : NULL;
}

static inline uint32_t fdn__timer_heap_count(const struct fdn__timer_heap *h)
{
    return h->count;
}

#endif
