/* The C side of fdn-bench: see bench_support.h. */
#include "bench/bench_support.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/compiler.h"
#include "core/pool.h"
#include "core/ring.h"
#include "core/timer_heap.h"
#include "transport/shm_ring.h"

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

/* ---- Shared-memory rings ------------------------------------------------ */

/* Each end's private view on lines of its own, as each process keeps its
 * own in the transport. */
struct fdnb_shm_end {
    _Alignas(FDN_CACHELINE) struct fdn__shm_tx tx;
    struct fdn__shm_rx rx;
};

struct fdnb_shm_pair {
    void *seg;
    bool use_box;
    struct fdnb_shm_end end[2];
};

fdnb_shm_pair *fdnb_shm_pair_create(uint32_t ring_bytes)
{
    if (ring_bytes < FDN__SHM_MIN_RING || ring_bytes > FDN__SHM_MAX_RING ||
        (ring_bytes & (ring_bytes - 1)))
        return NULL;
    fdnb_shm_pair *p = ring_memory(sizeof *p);
    if (!p)
        return NULL;
    size_t bytes = fdn__align_up(fdn__shm_seg_bytes(ring_bytes), 4096);
    p->seg = aligned_alloc(4096, bytes);
    if (!p->seg) {
        free(p);
        return NULL;
    }
    memset(p->seg, 0, bytes);   /* a fresh memfd reads as zeroes: no record yet */
    for (int e = 0; e < 2; e++) {
        fdn__shm_tx_init(&p->end[e].tx, p->seg, ring_bytes, e);
        fdn__shm_rx_init(&p->end[e].rx, p->seg, ring_bytes, 1 - e);
    }
    return p;
}

void fdnb_shm_pair_destroy(fdnb_shm_pair *p)
{
    if (!p)
        return;
    free(p->seg);
    free(p);
}

void fdnb_shm_pair_use_box(fdnb_shm_pair *p, bool on)
{
    p->use_box = on;
}

int fdnb_shm_send(fdnb_shm_pair *p, int end, const void *bytes, uint32_t len)
{
    struct fdn__shm_tx *t = &p->end[end].tx;
    if (p->use_box && len <= FDN__SHM_BOX_BYTES) {
        int free = fdn__shm_tx_box_free(t);
        if (free < 0)
            return free;
        if (free) {
            memcpy(t->box->bytes, bytes, len);
            fdn__shm_tx_box_publish(t, len, p->end[end].rx.box_taken);
            return 0;
        }
    }
    uint64_t need = FDN__SHM_REC_HDR + fdn__shm_align8(len);
    if (fdn__shm_tx_space_cached(t) < need) {
        int64_t space = fdn__shm_tx_space(t);
        if (space < 0)
            return (int)space;
        if ((uint64_t)space < need)
            return -EAGAIN;
    }
    uint64_t at = fdn__shm_tx_bytes_open(t);
    fdn__shm_tx_write(t, bytes, len);
    fdn__shm_tx_bytes_close(t, at);
    return 0;
}

int fdnb_shm_recv(fdnb_shm_pair *p, int end, void *buf, uint32_t cap)
{
    struct fdn__shm_rx *r = &p->end[end].rx;
    struct fdn__shm_rec rec;
    struct fdn__shm_box_msg box;
    int rc = fdn__shm_rx_next(r, &rec, &box);
    if (rc <= 0)
        return rc;
    if (rc == FDN__SHM_NEXT_BOX) {
        if (box.len > cap || fdn__shm_rx_box_take(r, &p->end[end].tx, &box, buf) < 0)
            return -EBADMSG;
        return (int)box.len;
    }
    if (rec.type != FDN__SHM_REC_BYTES || rec.len > cap)
        return -EBADMSG;
    fdn__shm_rx_consume(r, FDN__SHM_REC_HDR);
    uint32_t have = 0;
    while (have < rec.len) {   /* one piece, or two where the record wraps */
        size_t n;
        const uint8_t *piece = fdn__shm_rx_piece(r, rec.len - have, &n);
        memcpy((uint8_t *)buf + have, piece, n);
        have += (uint32_t)n;
        r->head += n;
    }
    fdn__shm_rx_consume(r, rec.rec_bytes - FDN__SHM_REC_HDR - rec.len);
    return (int)rec.len;
}
