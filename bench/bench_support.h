/* Plain-C entry points into Foundation's internal rings, timer heap and pool
 * reclaim, for fdn-bench.
 *
 * core/ring.h is built on <stdatomic.h>, which C++17 cannot include, and the
 * other internal headers declare their functions without C linkage. This shim
 * keeps all of that on the C side: the C++ benchmark sees opaque types and
 * functions only. Each function is one call into the internal one, so the
 * cost a benchmark measures is the library's plus one direct call. */
#ifndef FDN_BENCH_SUPPORT_H
#define FDN_BENCH_SUPPORT_H

#include <stdint.h>

#include <fdn/msg.h>
#include <fdn/worker.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Rings -------------------------------------------------------------- */

/* A ring of pointers laid out in 64-byte aligned memory of its own.
 * capacity: a power of two >= 2. NULL when the memory cannot be had or the
 * capacity is invalid. The thread roles are those of core/ring.h. */
typedef struct fdnb_spsc fdnb_spsc;
fdnb_spsc *fdnb_spsc_create(uint32_t capacity);
void fdnb_spsc_destroy(fdnb_spsc *r);
unsigned fdnb_spsc_enqueue(fdnb_spsc *r, void *const *objs, unsigned n);
unsigned fdnb_spsc_dequeue(fdnb_spsc *r, void **objs, unsigned n);

typedef struct fdnb_mpsc fdnb_mpsc;
fdnb_mpsc *fdnb_mpsc_create(uint32_t capacity);
void fdnb_mpsc_destroy(fdnb_mpsc *r);
unsigned fdnb_mpsc_enqueue(fdnb_mpsc *r, void *const *objs, unsigned n);
unsigned fdnb_mpsc_dequeue(fdnb_mpsc *r, void **objs, unsigned n);

/* ---- Timer heap --------------------------------------------------------- */

/* An empty heap (core/timer_heap.h) on the heap of the process; NULL when
 * out of memory. destroy leaves every timer still in it unarmed. */
typedef struct fdnb_timer_heap fdnb_timer_heap;
fdnb_timer_heap *fdnb_timer_heap_create(void);
void fdnb_timer_heap_destroy(fdnb_timer_heap *h);
/* t->deadline_ns set, t unarmed. Returns 0 or -ENOMEM. */
int fdnb_timer_heap_insert(fdnb_timer_heap *h, fdn_timer *t);
/* t armed in h. */
void fdnb_timer_heap_remove(fdnb_timer_heap *h, fdn_timer *t);
fdn_timer *fdnb_timer_heap_pop_expired(fdnb_timer_heap *h, uint64_t now_ns);
uint32_t fdnb_timer_heap_count(const fdnb_timer_heap *h);

/* ---- Pool --------------------------------------------------------------- */

/* fdn__pool_reclaim(): takes back the buffers other threads freed. Owner
 * thread only. Returns how many it reclaimed. */
int fdnb_pool_reclaim(fdn_pool *pool);

/* ---- Shared-memory rings ------------------------------------------------ */

/* Two rings of transport/shm (one per direction), laid out as a segment of
 * that transport in memory of the process: what crosses between two
 * processes' cores with no Foundation layer above the ring. End 0 writes
 * ring 0 and reads ring 1; end 1 the other way round. Each end is used by
 * one thread. NULL when out of memory or ring_bytes is not a power of two
 * between 4 KiB and 64 MiB. */
typedef struct fdnb_shm_pair fdnb_shm_pair;
fdnb_shm_pair *fdnb_shm_pair_create(uint32_t ring_bytes);
void fdnb_shm_pair_destroy(fdnb_shm_pair *p);
/* From now on, sends whose bytes fit the express box go there while it is
 * free, as the transport's do (off at creation: the rings alone). */
void fdnb_shm_pair_use_box(fdnb_shm_pair *p, bool on);
/* Writes len bytes (1..ring_bytes/2) as one BYTES record, or as a box
 * message (see above), and publishes it, as the transport does a send.
 * Returns 0, -EAGAIN when the ring has no room, or -EBADMSG. */
int fdnb_shm_send(fdnb_shm_pair *p, int end, const void *bytes, uint32_t len);
/* Reads the next BYTES record or box message, in order, into buf (cap
 * bytes at least its length), as the transport's poller does, and frees
 * its space. Returns its length, 0 when none is published yet, or
 * -EBADMSG. */
int fdnb_shm_recv(fdnb_shm_pair *p, int end, void *buf, uint32_t cap);

#ifdef __cplusplus
}
#endif
#endif
