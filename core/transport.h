/* The contract between core and a transport. Internal.
 *
 * A transport moves bytes of one connection, in order and reliably, between
 * two nodes. It knows nothing of frames, channels or messages: core gives it
 * byte ranges to send and receives byte ranges from it, and does all framing,
 * scheduling and reassembly above. A transport is a const descriptor (struct
 * fdn__transport) registered in transport/registry.c, the one list the meson
 * options decide; core reaches it only through the static inline wrappers at
 * the end of this file, never through ->ops by hand.
 *
 * Threads. A listener or connection belongs to the worker it was created on
 * (its "owner"). Every operation on it is made on the owner thread, and every
 * callback runs on the owner thread, from fdn_worker_progress(): from the
 * completion of an io_uring operation, or from the transport's poll hook for
 * transports whose events are not io_uring completions. A callback must not
 * call back into the transport's locked state: transports hold no locks.
 *
 * Lifetimes. Close is idempotent, never blocks, and is always followed by
 * exactly one on_closed() callback once the transport has nothing in flight
 * (no SQE, no zero-copy notification pending); only then does the transport
 * free its object. Core never frees a transport object, and must not touch it
 * after on_closed() returns.
 *
 * Errors: negative errno; where it helps, a detail in fdn_errmsg(). */
#ifndef FDN_CORE_TRANSPORT_H
#define FDN_CORE_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <fdn/msg.h>
#include <fdn/worker.h>

struct fdn__transport;

/* Every transport's connection and listener objects begin with these, so the
 * wrappers can find the descriptor. */
struct fdn__tp_conn {
    const struct fdn__transport *tp;
};

struct fdn__tp_listener {
    const struct fdn__transport *tp;
};

/* One send: a list of byte ranges written in order, after every send queued
 * before it on the same connection. The request and the memory its iovecs
 * point to are the caller's and must stay untouched until on_sent() reports
 * it; the transport may keep a pointer to both until then. */
struct fdn__tp_send {
    const struct iovec *iov;
    int iovcnt;
    size_t len;                 /* total bytes of iov, filled in by the caller */
    bool zerocopy;              /* a hint: large payload, worth IORING_OP_SEND_ZC;
                                   on_sent then comes after the kernel let go */
    /* Optional (NULL: none): iov_msg[i] is the message (the head of its
     * chain) holding iov[i]'s bytes, or NULL for bytes of no message (frame
     * headers). A transport with FDN__TP_REFS passes a range lying in its
     * own pool (tx_pool) by reference instead of copying it, and then takes
     * a reference of its own on iov_msg[i] (fdn_msg_ref) that it drops when
     * the peer lets the buffer go: on_sent may come long before that. */
    fdn_msg *const *iov_msg;
    /* Private to the transport from fdn__tp_send() to on_sent(). */
    struct fdn__tp_send *tp_next;
    size_t tp_done;
};

/* Events of one connection, set by core. ctx is core's, passed back as is. */
struct fdn__tp_conn_events {
    /* Outbound connections only: the connection is up (err == 0), or could not
     * be made (err < 0; on_closed follows). */
    void (*on_connected)(void *ctx, int err);

    /* Bytes arrived. [data, data + len) is valid only during the call: core
     * copies what it keeps. Returning a negative errno makes the transport
     * close the connection (core found a protocol error); 0 continues. Core
     * may call fdn__tp_recv_pause() from here to stop reading. */
    int (*on_recv)(void *ctx, const uint8_t *data, size_t len);

    /* Optional (NULL: the transport calls on_recv with msg's bytes, then
     * frees msg). FDN__TP_REFS transports: the peer passed msg's payload
     * by reference (a borrowed message, fdn_msg_is_borrowed()); it is the
     * next part of the byte stream, in order with on_recv's bytes. Core owns
     * the reference: it keeps msg (delivering it without a copy) or copies
     * what it needs and frees it. Either way the peer gets its buffer back
     * when the last reference goes. Returns as on_recv. */
    int (*on_recv_msg)(void *ctx, fdn_msg *msg);

    /* A send finished: all its bytes were handed to the kernel and, for
     * zero-copy, the kernel no longer reads the memory (err == 0); or the
     * connection failed first (err < 0). Sends complete in submission order. */
    void (*on_sent)(void *ctx, struct fdn__tp_send *send, int err);

    /* The connection is gone: the peer closed it (err == 0), it failed
     * (err < 0, e.g. -ECONNRESET), or core closed it (err == -ECANCELED).
     * Sends not yet reported get on_sent(-ECANCELED) first. The last call. */
    void (*on_closed)(void *ctx, int err);
};

/* Events of a listener. */
struct fdn__tp_listener_events {
    /* A connection was accepted on the listener's worker. Core must call
     * fdn__tp_conn_start() on it (now or later, on the same worker) before
     * any data is read, or fdn__tp_conn_close() to refuse it. */
    void (*on_accept)(void *ctx, struct fdn__tp_conn *conn);
    /* The listener failed (err < 0) or was closed (-ECANCELED). The last call. */
    void (*on_closed)(void *ctx, int err);
};

/* Capabilities of a transport. */
#define FDN__TP_RELIABLE 0x1u   /* bytes are never lost or reordered while the connection lives */
#define FDN__TP_ZEROCOPY 0x2u   /* zero-copy sends are supported */
#define FDN__TP_IO_URING 0x4u   /* events come from the worker's io_uring (no poll hook) */
#define FDN__TP_REFS 0x8u       /* has a shared pool per connection (tx_pool): its buffers
                                   cross by reference, whole, in any size (see
                                   fdn__tp_send.iov_msg and on_recv_msg) */

/* Ring bytes a range passed by reference takes, for in-flight accounting:
 * such a range costs the transport a descriptor, not its length. */
#define FDN__TP_REF_COST 16u

/* Connection options common to every transport; zero means default. */
struct fdn__tp_options {
    uint32_t notsent_lowat;     /* bytes the kernel may hold unsent (TCP_NOTSENT_LOWAT);
                                   default 128 KiB: bounds how long an urgent frame
                                   can wait behind bytes already handed to a socket */
    uint32_t recv_buffer_bytes; /* size of each receive buffer; default 64 KiB */
    uint32_t recv_buffers;      /* receive buffers per connection; default 16 */
    uint32_t pool_bytes;        /* FDN__TP_REFS: each connection's shared pool;
                                   default 64 MiB (address space: pages are used
                                   as buffers are) */
};

struct fdn__transport {
    const char *name;           /* "tcp" */
    const char *scheme;         /* address prefix, "tcp://" */
    uint32_t caps;              /* FDN__TP_* */

    /* ---- Control ---- */

    /* Starts listening on addr (the part after the scheme, e.g.
     * "127.0.0.1:7000", "[::1]:7000", "0.0.0.0:0" for any port). Accepted
     * connections belong to w. Returns 0 and *out, or -EADDRINUSE, -EINVAL
     * (malformed address, with detail), -EAFNOSUPPORT. */
    int (*listen)(fdn_worker *w, const char *addr, const struct fdn__tp_options *opt,
                  const struct fdn__tp_listener_events *ev, void *ctx,
                  struct fdn__tp_listener **out);

    /* The bound address as "host:port" (useful after port 0). Returns the
     * length written, or -ENOSPC if len is too small. */
    int (*listener_addr)(struct fdn__tp_listener *l, char *buf, size_t len);

    /* Stops accepting; on_closed(-ECANCELED) follows. Idempotent. */
    void (*listener_close)(struct fdn__tp_listener *l);

    /* Starts connecting to addr; events go to ev/ctx (on_connected first).
     * Returns 0 and *out (usable at once: sends queue until connected), or
     * -EINVAL for a malformed address. */
    int (*connect)(fdn_worker *w, const char *addr, const struct fdn__tp_options *opt,
                   const struct fdn__tp_conn_events *ev, void *ctx, struct fdn__tp_conn **out);

    /* Attaches events to an accepted connection and starts reading. */
    void (*conn_start)(struct fdn__tp_conn *c, const struct fdn__tp_conn_events *ev, void *ctx);

    /* Closes; on_closed(-ECANCELED) follows once nothing is in flight.
     * Idempotent. Bytes already queued may or may not be sent. */
    void (*conn_close)(struct fdn__tp_conn *c);

    /* The peer's address as "host:port". Returns the length, or -ENOSPC. */
    int (*conn_peer_addr)(struct fdn__tp_conn *c, char *buf, size_t len);

    /* What names the peer's side for per-address connection limits
     * (fdn_node_config.max_conns_per_addr): the part of its address that
     * every connection from the same place shares. TCP: the IP address
     * without the port ("10.0.0.1", "::1"); shm: the peer process
     * ("pid:4242"). Returns the length, or -ENOSPC. */
    int (*conn_peer_host)(struct fdn__tp_conn *c, char *buf, size_t len);

    /* ---- Data path ---- */

    /* Queues a send (see struct fdn__tp_send). Returns 0, or -ENOTCONN /
     * -EPIPE when the connection is closing (the send is not queued). */
    int (*send)(struct fdn__tp_conn *c, struct fdn__tp_send *s);

    /* Stops or resumes delivering on_recv() (receive-side backpressure when
     * core cannot take more, e.g. its pool is exhausted). */
    void (*recv_pause)(struct fdn__tp_conn *c, bool paused);

    /* FDN__TP_REFS only (else NULL): the connection's shared pool, from
     * which core allocates messages that can cross by reference, or NULL
     * while it has none (not set up, closing). Owner thread; the pool's
     * buffers stay valid after the connection ends (the pool lives until
     * its last buffer is freed). */
    fdn_pool *(*tx_pool)(struct fdn__tp_conn *c);

    /* For transports without FDN__TP_IO_URING: called by the worker on every
     * pass; returns how much work it did. NULL otherwise, and NULL for
     * transports that register a poller per connection instead
     * (fdn__worker_add_poller in core/worker_internal.h), as shm does. */
    int (*poll)(fdn_worker *w);
};

/* The transport registered for addr's scheme ("tcp://..."), or NULL. *rest
 * is set to the address after the scheme. */
const struct fdn__transport *fdn__transport_for(const char *addr, const char **rest);

/* Every registered transport, NULL-terminated (the meson options decide). */
extern const struct fdn__transport *const fdn__transports[];

/* ---- Same-host shortcuts (transport/same_host.c) ----
 *
 * A node reaches a peer on its own host through shared memory instead of
 * TCP when both ends allow it: a TCP listener gets a companion listener of
 * a faster same-host transport, and a dial to a TCP address of this host
 * tries that companion first (falling back to the address as given). The
 * policy, and which transports it pairs, live in the transport layer; core
 * only asks these two questions. Addresses include their scheme. */

/* Longest address core keeps for a dial, scheme included. */
#define FDN__ADDR_MAX 96

/* The address of the companion listener that should accompany a listener
 * bound at `bound` ("tcp://127.0.0.1:7000", the bound port, never 0).
 * Returns its length, 0 when bound's transport has none, or -ENOSPC. */
int fdn__same_host_listen_addr(const char *bound, char *buf, size_t len);

/* The companion addresses to try, best first, before dialling addr, when
 * addr names this host (loopback or an address of one of its interfaces).
 * Writes at most max into out and returns how many (0: dial addr as is).
 * Looks the host's interfaces up (getifaddrs): a dial-time cost. */
int fdn__same_host_dial_addrs(const char *addr, char (*out)[FDN__ADDR_MAX], int max);

/* ---- Wrappers: the only way core calls a transport ---- */

static inline int fdn__tp_send(struct fdn__tp_conn *c, struct fdn__tp_send *s)
{
    return c->tp->send(c, s);
}

static inline void fdn__tp_recv_pause(struct fdn__tp_conn *c, bool paused)
{
    c->tp->recv_pause(c, paused);
}

static inline fdn_pool *fdn__tp_tx_pool(struct fdn__tp_conn *c)
{
    return c->tp->tx_pool ? c->tp->tx_pool(c) : NULL;
}

static inline void fdn__tp_conn_start(struct fdn__tp_conn *c, const struct fdn__tp_conn_events *ev,
                                      void *ctx)
{
    c->tp->conn_start(c, ev, ctx);
}

static inline void fdn__tp_conn_close(struct fdn__tp_conn *c) { c->tp->conn_close(c); }

static inline int fdn__tp_conn_peer_addr(struct fdn__tp_conn *c, char *buf, size_t len)
{
    return c->tp->conn_peer_addr(c, buf, len);
}

static inline int fdn__tp_conn_peer_host(struct fdn__tp_conn *c, char *buf, size_t len)
{
    return c->tp->conn_peer_host(c, buf, len);
}

static inline void fdn__tp_listener_close(struct fdn__tp_listener *l)
{
    l->tp->listener_close(l);
}

static inline int fdn__tp_listener_addr(struct fdn__tp_listener *l, char *buf, size_t len)
{
    return l->tp->listener_addr(l, buf, len);
}

#endif
