#include "core/timer_heap.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#define TIMER_HEAP_ARITY 4
#define TIMER_HEAP_INITIAL_CAPACITY 16

/* heap_index of a timer in no heap; also bounds the array, since a valid
 * index must differ from it. */
#define TIMER_UNARMED UINT32_MAX

static bool fires_before(const fdn_timer *a, const fdn_timer *b)
{
    if (a->deadline_ns != b->deadline_ns)
        return a->deadline_ns < b->deadline_ns;
    return a->seq < b->seq;
}

/* Used by assertions only. */
__attribute__((unused)) static bool is_armed_in(const struct fdn__timer_heap *h,
                                               const fdn_timer *t)
{
    return t->heap_index < h->count && h->items[t->heap_index] == t;
}

/* Every write into the array goes through here, so heap_index never lags. */
static void place(struct fdn__timer_heap *h, fdn_timer *t, uint32_t index)
{
    h->items[index] = t;
    t->heap_index = index;
}

static uint32_t parent_of(uint32_t index) { return (index - 1) / TIMER_HEAP_ARITY; }

static void sift_up(struct fdn__timer_heap *h, uint32_t index)
{
    fdn_timer *t = h->items[index];

    while (index > 0) {
        uint32_t parent = parent_of(index);
        if (!fires_before(t, h->items[parent]))
            break;
        place(h, h->items[parent], index);
        index = parent;
    }
    place(h, t, index);
}

/* The earliest of index's children, or TIMER_UNARMED if it has none. */
static uint32_t earliest_child(const struct fdn__timer_heap *h, uint32_t index)
{
    uint64_t first = (uint64_t)index * TIMER_HEAP_ARITY + 1;
    if (first >= h->count)
        return TIMER_UNARMED;

    uint32_t last = first + TIMER_HEAP_ARITY <= h->count ? (uint32_t)first + TIMER_HEAP_ARITY
                                                         : h->count;
    uint32_t best = (uint32_t)first;
    for (uint32_t child = best + 1; child < last; child++) {
        if (fires_before(h->items[child], h->items[best]))
            best = child;
    }
    return best;
}

static void sift_down(struct fdn__timer_heap *h, uint32_t index)
{
    fdn_timer *t = h->items[index];

    for (;;) {
        uint32_t child = earliest_child(h, index);
        if (child == TIMER_UNARMED || !fires_before(h->items[child], t))
            break;
        place(h, h->items[child], index);
        index = child;
    }
    place(h, t, index);
}

/* Restores heap order around index after its timer's key changed or a
 * different timer moved there; only one of the two directions can apply. */
static void restore(struct fdn__timer_heap *h, uint32_t index)
{
    if (index > 0 && fires_before(h->items[index], h->items[parent_of(index)]))
        sift_up(h, index);
    else
        sift_down(h, index);
}

static int grow(struct fdn__timer_heap *h)
{
    /* Doubling must keep every index below TIMER_UNARMED. */
    if (h->capacity > TIMER_UNARMED / 2)
        return -ENOMEM;

    uint32_t capacity = h->capacity ? h->capacity * 2 : TIMER_HEAP_INITIAL_CAPACITY;
    size_t bytes;
    if (__builtin_mul_overflow((size_t)capacity, sizeof(*h->items), &bytes))
        return -ENOMEM;
    fdn_timer **items = realloc(h->items, bytes);
    if (!items)
        return -ENOMEM;
    h->items = items;
    h->capacity = capacity;
    return 0;
}

void fdn__timer_heap_init(struct fdn__timer_heap *h)
{
    h->items = NULL;
    h->count = 0;
    h->capacity = 0;
    h->next_seq = 0;
}

void fdn__timer_heap_fini(struct fdn__timer_heap *h)
{
    for (uint32_t i = 0; i < h->count; i++)
        h->items[i]->heap_index = TIMER_UNARMED;
    free(h->items);
    fdn__timer_heap_init(h);
}

int fdn__timer_heap_insert(struct fdn__timer_heap *h, fdn_timer *t)
{
    assert(t->heap_index == TIMER_UNARMED);
    if (h->count == h->capacity) {
        int rc = grow(h);
        if (rc < 0)
            return rc;
    }
    t->seq = h->next_seq++;
    place(h, t, h->count++);
    sift_up(h, t->heap_index);
    return 0;
}

void fdn__timer_heap_remove(struct fdn__timer_heap *h, fdn_timer *t)
{
    assert(is_armed_in(h, t));
    uint32_t index = t->heap_index;
    fdn_timer *last = h->items[--h->count];

    t->heap_index = TIMER_UNARMED;
    if (last != t) {
        place(h, last, index);
        restore(h, index);
    }
}

int fdn__timer_heap_rearm(struct fdn__timer_heap *h, fdn_timer *t, uint64_t deadline_ns)
{
    t->deadline_ns = deadline_ns;
    if (t->heap_index == TIMER_UNARMED)
        return fdn__timer_heap_insert(h, t);

    assert(is_armed_in(h, t));
    t->seq = h->next_seq++;
    restore(h, t->heap_index);
    return 0;
}

fdn_timer *fdn__timer_heap_pop_expired(struct fdn__timer_heap *h, uint64_t now_ns)
{
    fdn_timer *earliest = fdn__timer_heap_min(h);
    if (!earliest || earliest->deadline_ns > now_ns)
        return NULL;
    fdn__timer_heap_remove(h, earliest);
    return earliest;
}
