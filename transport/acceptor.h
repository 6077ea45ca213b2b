/* A listening socket's accept loop on its worker's io_uring: one multishot
 * accept, re-armed when the kernel ends it, cancelled on close. Internal;
 * the TCP and shm listeners each embed one and differ only in what they do
 * with an accepted descriptor.
 *
 * The accept is a passive operation (fdn__worker_io_begin_passive): a new
 * connection is a rare event, and an active operation in flight makes a
 * busy-polling worker ask the kernel for completions on every pass, a
 * system call that cost a listening fdn-perf server about a third of its
 * time and doubled its ping-pong latency over shm. A busy worker thus sees
 * a connection within FDN__PASSIVE_REAP_PASSES passes; a waiting one at
 * once. Closing makes the accept active again, so the close is not held up
 * by that delay. */
#ifndef FDN_TRANSPORT_ACCEPTOR_H
#define FDN_TRANSPORT_ACCEPTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/worker_internal.h"

struct fdn__acceptor;

/* A connection was accepted; the callee owns fd (it closes it to refuse). */
typedef void (*fdn__accepted_fn)(struct fdn__acceptor *a, int fd);

/* The acceptor is done: the listening socket is closed, nothing is in
 * flight. err is close's argument, or the error that ended accepting. The
 * last call: the callee may free the memory holding a. */
typedef void (*fdn__acceptor_closed_fn)(struct fdn__acceptor *a, int err);

struct fdn__acceptor_op {
    struct fdn__io_op io;
    struct fdn__acceptor *a;
};

struct fdn__acceptor {
    fdn_worker *w;
    int fd;                       /* the listening socket, owned from start */
    const char *transport;        /* "TCP", "shm": for errors */
    const char *addr;             /* the bound address, as listener_addr gives it */
    fdn__accepted_fn on_accepted;
    fdn__acceptor_closed_fn on_closed;
    bool closing;
    bool accept_armed;
    bool accept_passive;          /* counted as passive (until closing) */
    int close_err;
    uint32_t ops;                 /* awaiting a final CQE */
    struct fdn__acceptor_op accept_op, close_op;
};

/* Starts accepting on fd, a listening socket bound at addr, on w (owner
 * thread). transport and addr must outlive the acceptor. */
void fdn__acceptor_start(struct fdn__acceptor *a, fdn_worker *w, int fd, const char *transport,
                         const char *addr, fdn__accepted_fn on_accepted,
                         fdn__acceptor_closed_fn on_closed);

/* The bound address, for a transport's listener_addr: its length, or
 * -ENOSPC when len cannot hold it and its NUL. */
int fdn__acceptor_addr(const struct fdn__acceptor *a, char *buf, size_t len);

/* Stops accepting; on_closed(err) follows once the kernel lets go.
 * Idempotent (the first err stands). */
void fdn__acceptor_close(struct fdn__acceptor *a, int err);

#endif
