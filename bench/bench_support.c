/* The C side of fdn-bench: see bench_support.h. */
#include "bench/bench_support.h"

#include <stdlib.h>

#include "base/compiler.h"
#include "core/pool.h"
#include "core/ring.h"
#include "core/timer_heap.h"

/* An opaque handle is the address of the internal struct itself, so no
 * indirection is added to the paths being measured. (The rings end in a
 * flexible array, so they cannot be wrapped in a struct of ours.) */
static struct fdn__spsc *spsc_of(fdnb_spsc *r) { return (struct fdn__spsc *)(void *)r; }
static struct fdn__mpsc *mpsc_of(fdnb_mpsc *r) { return (struct fdn__mpsc *)(void *)r; }

struct fdnb_timer_heap {
    struct fdn__timer_heap heap;
};

/* The rings want 64-byte aligned memory; aligned_alloc also wants the size
 * to be a multiple of the alignment, which the memsize functions give. */
static void *ring_memory(size_t bytes)
{
    return aligned_alloc(FDN_CACHELINE, fdn__align_up(bytes, FDN_CACHELINE));
}

fdnb_spsc *fdnb_spsc_create(uint32_t capacity)
{
    if (!fdn__ring_capacity_valid(capacity))
        return NULL;
    fdnb_spsc *r = ring_memory(fdn__spsc_memsize(capacity));
    if (r && fdn__spsc_init(spsc_of(r), capacity) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

void fdnb_spsc_destroy(fdnb_spsc *r) { free(r); }

unsigned fdnb_spsc_enqueue(fdnb_spsc *r, void *const *objs, unsigned n)
{
    return fdn__spsc_enqueue_burst(spsc_of(r), objs, n);
}

unsigned fdnb_spsc_dequeue(fdnb_spsc *r, void **objs, unsigned n)
{
    return fdn__spsc_dequeue_burst(spsc_of(r), objs, n);
}

fdnb_mpsc *fdnb_mpsc_create(uint32_t capacity)
{
    if (!fdn__ring_capacity_valid(capacity))
        return NULL;
    fdnb_mpsc *r = ring_memory(fdn__mpsc_memsize(capacity));
    if (r && fdn__mpsc_init(mpsc_of(r), capacity) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

void fdnb_mpsc_destroy(fdnb_mpsc *r) { free(r); }

unsigned fdnb_mpsc_enqueue(fdnb_mpsc *r, void *const *objs, unsigned n)
{
    return fdn__mpsc_enqueue_burst(mpsc_of(r), objs, n);
}

unsigned fdnb_mpsc_dequeue(fdnb_mpsc *r, void **objs, unsigned n)
{
    return fdn__mpsc_dequeue_burst(mpsc_of(r), objs, n);
}

fdnb_timer_heap *fdnb_timer_heap_create(void)
{
    fdnb_timer_heap *h = malloc(sizeof *h);
    if (h)
        fdn__timer_heap_init(&h->heap);
    return h;
}

void fdnb_timer_heap_destroy(fdnb_timer_heap *h)
{
    if (!h)
        return;
    fdn__timer_heap_fini(&h->heap);
    free(h);
}

int fdnb_timer_heap_insert(fdnb_timer_heap *h, fdn_timer *t)
{
    return fdn__timer_heap_insert(&h->heap, t);
}

void fdnb_timer_heap_remove(fdnb_timer_heap *h, fdn_timer *t)
{
    fdn__timer_heap_remove(&h->heap, t);
}

fdn_timer *fdnb_timer_heap_pop_expired(fdnb_timer_heap *h, uint64_t now_ns)
{
    return fdn__timer_heap_pop_expired(&h->heap, now_ns);
}

uint32_t fdnb_timer_heap_count(const fdnb_timer_heap *h)
{
    return fdn__timer_heap_count(&h->heap);
}

int fdnb_pool_reclaim(fdn_pool *pool) { return fdn__pool_reclaim(pool); }
