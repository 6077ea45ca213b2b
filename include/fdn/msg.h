/* Message buffers and the per-worker pools they come from.
 *
 * A message is one buffer, or a chain of buffers (scatter/gather), taken from
 * a pool. Each buffer holds its metadata, then headroom (room for protocol
 * headers to be prepended without a copy), then the payload, then tailroom.
 *
 * Ownership: fdn_msg_alloc() returns a message with one reference, owned by
 * the caller. Passing a message to a send function transfers that reference.
 * fdn_msg_ref() adds a reference (for example to keep a received message while
 * also handing it on); fdn_msg_free() drops one, and the last drop returns
 * every buffer of the chain to its pool. A message with more than one
 * reference is shared and must be treated as read-only.
 *
 * Borrowed messages: a message received over shared memory without a copy
 * (fdn_peer_msg_alloc() in <fdn/node.h>) has its payload in the sending
 * process's memory, mapped read-only here: fdn_msg_is_borrowed() is true,
 * it has no headroom or tailroom, and writing into its payload faults. It
 * is freed like any other (on any thread); the sender gets the buffer back
 * when the last reference goes, so holding one holds a buffer of the
 * sender's pool. Sending it on copies the bytes.
 *
 * Threads: a pool has one owner thread (its worker's), which alone may
 * allocate from it. Any thread may free: a buffer freed on another thread is
 * pushed onto a lock-free list that the owner reclaims on its next
 * allocation, so memory always returns to its own NUMA node.
 *
 * Limits: a pool never holds more than max_bytes. Exhaustion is -ENOBUFS,
 * never an abort. */
#ifndef FDN_MSG_H
#define FDN_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fdn_pool fdn_pool;

/* Size classes by payload capacity: powers of two from 64 B (class 0) to
 * 4 MiB (class 16), so a payload never wastes more than half its buffer and
 * a power-of-two payload fits its class exactly. Each buffer also holds the
 * metadata and the pool's headroom. A payload over 4 MiB gets a buffer of its
 * own, mapped for it and unmapped when freed, still counted against
 * max_bytes. */
#define FDN_POOL_NUM_CLASSES 17
#define FDN_POOL_CLASS_PAYLOAD(cls) ((uint32_t)64 << (cls))
#define FDN_POOL_MAX_HEADROOM 65536u
/* class_index of a borrowed buffer (see above). */
#define FDN_MSG_BORROWED (FDN_POOL_NUM_CLASSES + 1)

typedef struct fdn_pool_config {
    size_t max_bytes;      /* memory the pool may hold; default 256 MiB */
    uint32_t headroom;     /* bytes kept in front of every payload; default 128,
                              at most FDN_POOL_MAX_HEADROOM */
    uint32_t slab_bytes;   /* memory taken from the OS at once for small classes
                              (at least one buffer of the class); default 256 KiB */
    bool bind_numa;        /* bind the memory to numa_node; default false */
    int numa_node;         /* kernel NUMA node, used when bind_numa */
} fdn_pool_config;

typedef struct fdn_pool_stats {
    size_t bytes_reserved;     /* memory the pool holds from the OS */
    size_t max_bytes;          /* the configured limit */
    uint64_t allocs;           /* successful fdn_msg_alloc() calls */
    uint64_t alloc_failures;   /* -ENOBUFS returned */
    uint64_t frees;            /* buffers returned, local and remote */
    uint64_t remote_frees;     /* buffers returned by other threads */
    uint64_t buffers_in_use;   /* allocated and not yet returned */
    bool numa_bound;           /* the kernel accepted the NUMA binding */
} fdn_pool_stats;

/* Creates a pool owned by the calling thread. cfg may be NULL (defaults).
 * Returns 0, -EINVAL, or -ENOMEM. */
int fdn_pool_create(const fdn_pool_config *cfg, fdn_pool **out);

/* Frees the pool and its memory. Returns 0, or -EBUSY (and frees nothing)
 * while any of its buffers is still allocated. Owner thread only. */
int fdn_pool_destroy(fdn_pool *pool);

/* Makes the calling thread the pool's owner. Only valid while no other thread
 * uses the pool as its owner (a worker calls this when its thread starts). */
void fdn_pool_adopt(fdn_pool *pool);

/* Snapshot of the pool's counters. Exact on the owner thread; approximate
 * (but never torn) elsewhere. */
void fdn_pool_stats_get(const fdn_pool *pool, fdn_pool_stats *out);

/* The layout is public so that the accessors below inline; treat every field
 * as read-only and change a message only through these functions. */
typedef struct fdn_msg {
    uint8_t *data;          /* first payload byte of this buffer */
    uint32_t len;           /* payload bytes in this buffer */
    uint32_t class_index;   /* size class, FDN_POOL_NUM_CLASSES for a large buffer,
                               FDN_MSG_BORROWED for a borrowed one */
    uint8_t *start;         /* first byte after the metadata: headroom = data - start */
    uint8_t *end;           /* one past the buffer: tailroom = end - (data + len) */
    struct fdn_msg *next;   /* next buffer of the chain, or NULL */
    fdn_pool *pool;         /* pool the buffer returns to */
    uint32_t refs;          /* references to the chain (meaningful on its head);
                               accessed only with __atomic builtins so the header
                               stays valid C++ */
    uint32_t mapped_bytes;  /* size of a large buffer's own mapping, else 0 */
    struct fdn_msg *qnext;  /* free for whoever holds the message to queue it
                               (the library uses it while the message is its own) */
} fdn_msg;

/* Allocates a one-buffer message with len bytes of payload (uninitialised)
 * and the pool's headroom. Owner thread only. Returns 0, -ENOBUFS when the
 * pool is at max_bytes or the OS refuses memory, -EPERM off the owner thread,
 * or -EMSGSIZE for len over 4 GiB (precisely: when the buffer, metadata and
 * headroom included, would not fit the 32-bit mapped_bytes). */
int fdn_msg_alloc(fdn_pool *pool, size_t len, fdn_msg **out);

/* Drops one reference; the last one returns every buffer of the chain to its
 * pool. Any thread. NULL is a no-op. */
void fdn_msg_free(fdn_msg *msg);

/* Appends tail's chain to msg's chain. tail must be unshared (one reference)
 * and not part of another chain; its reference passes to msg. */
void fdn_msg_chain(fdn_msg *msg, fdn_msg *tail);

/* Fills up to max iovecs with the chain's payload. Returns the number of
 * buffers, or -ENOSPC when the chain has more than max. */
int fdn_msg_to_iov(const fdn_msg *msg, struct iovec *iov, int max);

/* Total payload bytes over the chain. */
size_t fdn_msg_total_len(const fdn_msg *msg);

static inline uint8_t *fdn_msg_data(const fdn_msg *m) { return m->data; }
/* True when the payload is another process's memory, mapped read-only. */
static inline bool fdn_msg_is_borrowed(const fdn_msg *m)
{
    return m->class_index == FDN_MSG_BORROWED;
}
static inline size_t fdn_msg_len(const fdn_msg *m) { return m->len; }
static inline size_t fdn_msg_headroom(const fdn_msg *m) { return (size_t)(m->data - m->start); }
static inline size_t fdn_msg_tailroom(const fdn_msg *m)
{
    return (size_t)(m->end - (m->data + m->len));
}

/* Extends the payload n bytes to the front (into the headroom) and returns the
 * new first byte, or NULL if the headroom is smaller than n. */
static inline uint8_t *fdn_msg_push(fdn_msg *m, size_t n)
{
    if (n > fdn_msg_headroom(m))
        return NULL;
    m->data -= n;
    m->len += (uint32_t)n;
    return m->data;
}

/* Removes n bytes from the front of the payload and returns the new first
 * byte, or NULL if the payload is shorter than n. */
static inline uint8_t *fdn_msg_pull(fdn_msg *m, size_t n)
{
    if (n > m->len)
        return NULL;
    m->data += n;
    m->len -= (uint32_t)n;
    return m->data;
}

/* Extends the payload n bytes at the end (into the tailroom) and returns the
 * first of the new bytes, or NULL if the tailroom is smaller than n. */
static inline uint8_t *fdn_msg_put(fdn_msg *m, size_t n)
{
    if (n > fdn_msg_tailroom(m))
        return NULL;
    uint8_t *p = m->data + m->len;
    m->len += (uint32_t)n;
    return p;
}

/* Shortens the payload to len bytes (no-op if it is not longer). */
static inline void fdn_msg_trim(fdn_msg *m, size_t len)
{
    if (len < m->len)
        m->len = (uint32_t)len;
}

/* Adds a reference to the chain and returns msg. Any thread holding one. */
static inline fdn_msg *fdn_msg_ref(fdn_msg *m)
{
    __atomic_fetch_add(&m->refs, 1, __ATOMIC_RELAXED);
    return m;
}

#ifdef __cplusplus
}
#endif
#endif
