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

#endif
