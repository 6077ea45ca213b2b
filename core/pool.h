/* Buffer pool internals for the worker loop. Internal.
 *
 * The public side of pools (create, alloc, free, stats) is in <fdn/msg.h>. */
#ifndef FDN_CORE_POOL_H
#define FDN_CORE_POOL_H

#include <fdn/msg.h>

/* Takes every buffer that other threads have freed to this pool since the
 * last reclaim: small buffers go back on their class free lists, large ones
 * are unmapped. Owner thread only. Returns how many buffers were reclaimed
 * (0 when there were none, at the cost of one atomic load), so the worker can
 * call it whenever a pass of its loop finds nothing else to do. */
int fdn__pool_reclaim(fdn_pool *pool);

/* ---- Region pools: buffers in a shared segment -------------------------- */

/* Creates a pool owned by the calling thread whose slabs are carved from
 * [region, region + bytes) (page-aligned), never from the OS, and which has
 * no buffer over the largest size class (-ENOBUFS). cfg's headroom and
 * slab_bytes apply; max_bytes is the region. The pool holds itself once for
 * its creator and once per buffer in use: when fdn__pool_region_put() has
 * dropped the creator's hold and the last buffer is freed (on any thread),
 * the pool is freed and unmap(region, bytes) called, if not NULL. */
int fdn__pool_create_region(const fdn_pool_config *cfg, void *region, size_t bytes,
                            void (*unmap)(void *region, size_t bytes), fdn_pool **out);

/* Drops the creator's hold (see above). NULL is a no-op. */
void fdn__pool_region_put(fdn_pool *pool);

/* ---- Foreign pools: buffers somebody else owns -------------------------- */

/* A pool that allocates nothing: the creator builds messages (metadata of
 * its own, payload anywhere) whose pool is this one, and the last
 * fdn_msg_free() of each buffer, on any thread, calls release(arg, m)
 * instead of returning it to a free list. The creator frees it with
 * fdn__pool_destroy_foreign() once no such message is left. */
int fdn__pool_create_foreign(void (*release)(void *arg, fdn_msg *m), void *arg, fdn_pool **out);
void fdn__pool_destroy_foreign(fdn_pool *pool);

/* Received messages keep core's bookkeeping (kind, id) out of the payload:
 * in the headroom of an ordinary buffer, in the scratch bytes that follow
 * the metadata of a borrowed one (whose headroom is none: its payload is
 * the peer's read-only memory). */
#define FDN__MSG_SCRATCH_BYTES 64u

struct fdn__borrowed_msg {
    fdn_msg msg;
    _Alignas(8) uint8_t scratch[FDN__MSG_SCRATCH_BYTES];
};

static inline uint8_t *fdn__msg_scratch(fdn_msg *m)
{
    return fdn_msg_is_borrowed(m) ? ((struct fdn__borrowed_msg *)(void *)m)->scratch : m->start;
}

#endif
