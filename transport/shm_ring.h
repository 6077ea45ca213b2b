/* The shared-memory transport's segment layout and its single-producer,
 * single-consumer byte rings. Internal; the hot path, hence static inline.
 *
 * One segment (a sealed memfd, created by the connecting side) holds two
 * rings, one per direction. Everything in it is position-independent: the
 * two processes map it at different addresses, so it holds positions and
 * flags, never pointers.
 *
 *   [0, 64)                      struct fdn__shm_seg_hdr (magic, version, size)
 *   [256, 512)                   ring 0's control: connecting side -> accepting side
 *   [512, 768)                   ring 1's control: accepting side -> connecting side
 *   [4096, 4096 + size)          ring 0's bytes
 *   [4096 + size, 4096 + 2*size) ring 1's bytes
 *
 * Positions (head, tail) count bytes since the connection began, modulo
 * 2^64; a byte at position p lives at data[p & (size - 1)]. The producer
 * owns tail and the bytes in [tail, head + size); the consumer owns head and
 * the bytes in [head, tail).
 *
 * Trust. The peer can write anything into the segment at any moment. Each
 * side therefore keeps its own position (the consumer's head, the
 * producer's tail) in private memory and only publishes it; the peer's
 * position is read once into a local, checked against the ring size and
 * against the last value that was valid (positions only move forwards, and
 * never past the other side's), and refused (-EBADMSG) when it is not. No
 * offset or length used to address memory ever comes unchecked from the
 * segment, so a hostile or corrupt peer can make this side see garbage
 * bytes, never read or write outside the ring. The bytes themselves are the
 * peer's to choose: core validates them as it does bytes from a socket. */
#ifndef FDN_TRANSPORT_SHM_RING_H
#define FDN_TRANSPORT_SHM_RING_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FDN__SHM_MAGIC UINT64_C(0x3130484d534e4446) /* "FDNSHM01" little-endian */
#define FDN__SHM_VERSION 1u
#define FDN__SHM_DATA_OFFSET 4096u
#define FDN__SHM_MIN_RING (4u << 10)
#define FDN__SHM_MAX_RING (64u << 20)

struct fdn__shm_seg_hdr {
    uint64_t magic;
    uint32_t version;
    uint32_t ring_bytes;      /* each ring's size: a power of two */
};

/* One ring's control block. Each group of fields sits on its own cache
 * line, written by one side only (except the wake-up exchanges), so the
 * two sides do not take each other's lines on every operation. */
struct fdn__shm_ctl {
    /* Written by the producer. */
    _Alignas(64) _Atomic uint64_t tail;   /* bytes ever published */
    _Atomic uint32_t space_wanted;        /* the producer sleeps until head moves */
    _Atomic uint32_t closed;              /* orderly end: no byte after tail will come */
    /* Written by the consumer. */
    _Alignas(64) _Atomic uint64_t head;   /* bytes ever consumed */
    /* Set by the consumer before it sleeps; cleared by whichever side ends
     * the sleep (the producer, when it signals the consumer's eventfd). */
    _Alignas(64) _Atomic uint32_t sleeping;
};

#define FDN__SHM_CTL_OFFSET(dir) (256u + 256u * (unsigned)(dir))

_Static_assert(sizeof(struct fdn__shm_ctl) <= 256, "a ring's control block fits its slot");
_Static_assert(sizeof(struct fdn__shm_seg_hdr) <= 256, "the header fits its slot");

/* Bytes of a segment whose rings hold ring_bytes each. */
static inline size_t fdn__shm_seg_bytes(uint32_t ring_bytes)
{
    return FDN__SHM_DATA_OFFSET + 2 * (size_t)ring_bytes;
}

static inline struct fdn__shm_ctl *fdn__shm_ctl(void *seg, int dir)
{
    return (struct fdn__shm_ctl *)(void *)((uint8_t *)seg + FDN__SHM_CTL_OFFSET(dir));
}

static inline uint8_t *fdn__shm_data(void *seg, uint32_t ring_bytes, int dir)
{
    return (uint8_t *)seg + FDN__SHM_DATA_OFFSET + (size_t)ring_bytes * (unsigned)dir;
}

/* ---- Consumer ------------------------------------------------------------ */

/* The consumer's private view of one ring: head is the truth, known_tail
 * the last tail that passed the checks. */
struct fdn__shm_rx {
    struct fdn__shm_ctl *ctl;
    uint8_t *data;
    uint32_t size;            /* a power of two */
    uint64_t head;
    uint64_t known_tail;
};

static inline void fdn__shm_rx_init(struct fdn__shm_rx *r, struct fdn__shm_ctl *ctl,
                                    uint8_t *data, uint32_t size)
{
    *r = (struct fdn__shm_rx){.ctl = ctl, .data = data, .size = size};
}

/* Reads the producer's tail once and checks it: it may not be behind the
 * last valid tail, nor more than size ahead of head. Returns the bytes
 * readable (0 when none), or -EBADMSG. The acquire load makes the bytes
 * before tail visible. */
static inline int64_t fdn__shm_rx_avail(struct fdn__shm_rx *r)
{
    uint64_t tail = atomic_load_explicit(&r->ctl->tail, memory_order_acquire);
    uint64_t avail = tail - r->head;
    if (avail > r->size || avail < r->known_tail - r->head)
        return -EBADMSG;
    r->known_tail = tail;
    return (int64_t)avail;
}

/* The first contiguous piece of the avail bytes at head: its address and
 * length (the rest, if the bytes wrap, starts at data[0]). */
static inline const uint8_t *fdn__shm_rx_piece(const struct fdn__shm_rx *r, uint64_t avail,
                                               size_t *len)
{
    uint32_t off = (uint32_t)(r->head & (r->size - 1));
    uint64_t to_end = r->size - off;
    *len = (size_t)(avail < to_end ? avail : to_end);
    return r->data + off;
}

/* Marks n bytes consumed (n <= the last avail) and publishes head, so the
 * producer may reuse their space. */
static inline void fdn__shm_rx_consume(struct fdn__shm_rx *r, uint64_t n)
{
    r->head += n;
    atomic_store_explicit(&r->ctl->head, r->head, memory_order_release);
}

/* ---- Producer ------------------------------------------------------------ */

/* The producer's private view: tail is the truth, known_head the last head
 * that passed the checks. */
struct fdn__shm_tx {
    struct fdn__shm_ctl *ctl;
    uint8_t *data;
    uint32_t size;
    uint64_t tail;            /* bytes written (published or not) */
    uint64_t known_head;
};

static inline void fdn__shm_tx_init(struct fdn__shm_tx *t, struct fdn__shm_ctl *ctl,
                                    uint8_t *data, uint32_t size)
{
    *t = (struct fdn__shm_tx){.ctl = ctl, .data = data, .size = size};
}

/* Free space from the last valid head, without reading the segment. */
static inline uint64_t fdn__shm_tx_space_cached(const struct fdn__shm_tx *t)
{
    return t->size - (t->tail - t->known_head);
}

/* Reads the consumer's head once and checks it: it may not be behind the
 * last valid head, nor ahead of tail. Returns the free space, or -EBADMSG. */
static inline int64_t fdn__shm_tx_space(struct fdn__shm_tx *t)
{
    uint64_t head = atomic_load_explicit(&t->ctl->head, memory_order_acquire);
    if (head - t->known_head > t->tail - t->known_head)
        return -EBADMSG;
    t->known_head = head;
    return (int64_t)fdn__shm_tx_space_cached(t);
}

/* Copies n bytes (n <= the free space) at tail, wrapping; does not publish. */
static inline void fdn__shm_tx_write(struct fdn__shm_tx *t, const void *src, size_t n)
{
    uint32_t off = (uint32_t)(t->tail & (t->size - 1));
    size_t first = t->size - off < n ? t->size - off : n;
    memcpy(t->data + off, src, first);
    memcpy(t->data, (const uint8_t *)src + first, n - first);
    t->tail += n;
}

/* Makes every byte written so far visible to the consumer. */
static inline void fdn__shm_tx_publish(struct fdn__shm_tx *t)
{
    atomic_store_explicit(&t->ctl->tail, t->tail, memory_order_release);
}

#endif
