/* The shared-memory transport's descriptor and what its tests look at.
 * Internal.
 *
 * Addresses name a unix socket, used only to set a connection up:
 * "shm://@name" is `name` in Linux's abstract namespace (no file; gone with
 * its listener; scoped to the network namespace), "shm://@" on a listener
 * picks a free abstract name (like port 0; listener_addr tells which), and
 * anything else is a filesystem path ("shm:///run/app.sock"), which the
 * listener creates and removes when it closes. */
#ifndef FDN_TRANSPORT_SHM_INTERNAL_H
#define FDN_TRANSPORT_SHM_INTERNAL_H

#include <stdint.h>

#include "core/transport.h"

extern const struct fdn__transport fdn__transport_shm;

/* Process-wide counters, for tests and diagnostics (relaxed snapshots). */
struct fdn__shm_stats {
    uint64_t bad_rings;       /* connections closed because a ring held impossible positions */
    uint64_t bad_setups;      /* set-up messages refused (size, fds, segment, seals) */
    uint64_t peer_deaths;     /* connections whose peer vanished without an orderly close */
    uint64_t wakeups_sent;    /* eventfd writes to a sleeping peer */
    uint64_t segments_mapped; /* segments currently mapped by this process */
    uint64_t bad_records;     /* connections closed for an impossible record, REF or RELEASE */
    uint64_t refs_sent;       /* ranges of our pools lent by reference */
    uint64_t refs_received;   /* ranges of peers' pools borrowed */
    uint64_t releases_sent;   /* loans given back to peers */
    uint64_t releases_received; /* loans peers gave back */
    uint64_t loans_out;       /* now: our buffers peers hold (until RELEASE or the end) */
    uint64_t borrowed;        /* now: peers' buffers held here (borrowed messages alive) */
    uint64_t pools_mapped;    /* now: pools mapped, ours (until their last buffer is
                                 freed) and peers' (until their last borrowed message is) */
    uint64_t boxes_sent;      /* sends that went in the express box (shm_ring.h) */
    uint64_t boxes_received;  /* box messages taken */
};

void fdn__shm_stats_get(struct fdn__shm_stats *out);

/* The peer's pool as mapped here (read-only), or NULL before set-up: where
 * the payloads of messages borrowed over this connection lie. Owner thread. */
const void *fdn__shm_peer_pool(struct fdn__tp_conn *conn, size_t *bytes);

#endif
