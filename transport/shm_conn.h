/* The shared-memory transport's connection, as its two files share it.
 * Internal to transport/shm*.c.
 *
 * shm.c holds a connection's life: set-up over the unix socket, its pools
 * and loans, the close protocol, and the listener. shm_data.c holds its
 * data path: the poller that reads and writes the rings and the box, and
 * the wake-ups. What each calls of the other is declared below; nothing on
 * the data path crosses the boundary but the counters. */
#ifndef FDN_TRANSPORT_SHM_CONN_H
#define FDN_TRANSPORT_SHM_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include "base/compiler.h"
#include "core/pool.h"
#include "core/transport.h"
#include "core/worker_internal.h"
#include "transport/send_queue.h"
#include "transport/shm_ring.h"

#define FDN__SHM_ADDR_MAX 112

/* The process-wide counters behind fdn__shm_stats_get (shm_internal.h). */
struct fdn__shm_counters {
    _Atomic uint64_t bad_rings, bad_setups, peer_deaths, wakeups_sent, segments_mapped;
    _Atomic uint64_t bad_records, refs_sent, refs_received, releases_sent, releases_received;
    _Atomic uint64_t loans_out, borrowed, pools_mapped, boxes_sent, boxes_received;
};

extern struct fdn__shm_counters fdn__shm_counters;

/* Adds n to one of them: SHM_COUNT(boxes_sent, 1). */
#define SHM_COUNT(field, n)                                                            \
    atomic_fetch_add_explicit(&fdn__shm_counters.field, (uint64_t)(int64_t)(n),       \
                              memory_order_relaxed)

struct shm_conn;

/* The peer's pool, mapped read-only, and the messages borrowed from it
 * (each loan's metadata at its slot). It outlives its connection while any
 * borrowed message does: refs counts the connection and every borrowed
 * message alive, and the last drop (on any thread) unmaps it. A borrowed
 * message's last free pushes it on `returned`, which the connection's
 * poller empties into RELEASE records. */
struct shm_loans {
    uint64_t refs;                        /* __atomic */
    fdn_msg *returned;                    /* __atomic; a stack linked through next */
    const uint8_t *map;
    size_t bytes;
    fdn_pool *meta;                       /* a foreign pool: its release is loan_returned */
    struct fdn__borrowed_msg msgs[FDN__SHM_SLOTS];
};

struct conn_op {
    struct fdn__io_op io;
    struct shm_conn *c;
    bool passive;             /* counted with fdn__worker_io_begin_passive */
};

struct shm_conn {
    struct fdn__tp_conn base;             /* first: what core holds */
    fdn_worker *w;
    const struct fdn__tp_conn_events *ev; /* NULL until conn_start for accepted ones */
    void *ctx;
    bool outbound;
    bool started;                         /* ev is set: callbacks may be made */
    bool ready;                           /* set-up done: the rings are in use */
    bool closing;
    bool paused;
    int close_err;
    uint32_t ops;                         /* SQEs awaiting their final CQE */

    int sock;                             /* the set-up socket; -1 once closed */
    int memfd;                            /* until it is sent (outbound) or mapped */
    int wake_fd;                          /* ours: the peer writes it to wake us */
    int peer_wake_fd;                     /* the peer's: we write it to wake the peer */
    int pidfd;                            /* the peer process, -1 when unknown */
    pid_t peer_pid;

    void *seg;                            /* the mapped segment, NULL when none */
    size_t seg_bytes;
    uint32_t ring_bytes;
    struct fdn__shm_rx rx;
    struct fdn__shm_tx tx;
    bool rx_sleep_armed;                  /* we set rx.ctl->sleeping */
    bool tx_sleep_armed;                  /* we set tx.ctl->space_wanted */

    /* Sends not yet reported; sq.cursor is the first with bytes not yet in
     * the ring. */
    struct fdn__send_queue sq;

    /* Our pool (buffers that cross by reference) and what the peer holds
     * of it: lent[slot] is the message of a loan not yet released. */
    fdn_pool *pool;
    const uint8_t *pool_base;             /* its region, once made: checked per iovec */
    int pool_fd;                          /* until it is sent */
    uint32_t pool_bytes;                  /* wanted, until the pool is made */
    fdn_msg *lent[FDN__SHM_SLOTS];
    bool lent_flag[FDN__SHM_SLOTS];       /* lent[slot] != NULL, for fdn__shm_release_ok */
    uint32_t free_slots[FDN__SHM_SLOTS];
    uint32_t num_free_slots;

    /* The peer's pool and what we hold of it. */
    struct shm_loans *in;
    bool borrowed[FDN__SHM_SLOTS];        /* a loan whose RELEASE is not yet written:
                                             until then the slot is not the peer's to
                                             lend again, so releases[] never holds a
                                             slot twice */
    uint32_t releases[FDN__SHM_SLOTS];    /* returned, RELEASE not yet written */
    uint32_t num_releases;
    uint32_t rx_bytes_left;               /* of the BYTES record being delivered */
    uint32_t rx_pad;                      /* its padding */

    struct fdn__poller poller;
    bool poller_added;

    /* Operations. sock_op is a POLL on the socket: during set-up it waits
     * for the peer's message, afterwards for its going. */
    struct conn_op connect_op, sock_op, pidfd_op, wake_op, close_op;
    bool sock_armed, pidfd_armed, wake_armed;
    uint64_t wake_buf;                    /* the eventfd READ writes it until its CQE */
    struct sockaddr_un peer_sa;           /* the CONNECT SQE reads it until its CQE */
    socklen_t peer_sa_len;
    char addr[FDN__SHM_ADDR_MAX];
};

static inline struct shm_conn *to_conn(struct fdn__tp_conn *c)
{
    return fdn__container_of(c, struct shm_conn, base);
}

/* ---- shm.c, for the data path -------------------------------------------- */

/* Submits sqe for op, counted until its final CQE (fdn__shm_op_end);
 * passive as fdn__worker_io_begin_passive. */
void fdn__shm_op_begin(struct shm_conn *c, struct io_uring_sqe *sqe, struct conn_op *op,
                       bool passive);

/* An operation delivered its final CQE; passive is how it was begun. May
 * free c. */
void fdn__shm_op_end(struct shm_conn *c, bool passive);

/* Starts closing with err (on_closed's argument) unless already closing. */
void fdn__shm_begin_close(struct shm_conn *c, int err);

/* ---- shm_data.c, for set-up ---------------------------------------------- */

/* Sets a new connection's poller and wake-up operation up (not started). */
void fdn__shm_data_init(struct shm_conn *c);

/* Set-up is done: arms the wake-up read and registers the poller. */
void fdn__shm_data_start(struct shm_conn *c);

/* Writes queued sends into the ring or the box while there is room; makes
 * no callback. Returns whether it wrote. */
int fdn__shm_flush_sends(struct shm_conn *c);

/* The transport's send op: queues s and writes what fits now. */
int fdn__shm_send(struct fdn__tp_conn *conn, struct fdn__tp_send *s);

#endif
