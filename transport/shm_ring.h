/* The shared-memory transport's segment layout and its single-producer,
 * single-consumer rings of records. Internal; the hot path, hence static
 * inline.
 *
 * One segment (a sealed memfd, created by the connecting side) holds two
 * rings, one per direction. Everything in it is position-independent: the
 * two processes map it at different addresses, so it holds positions and
 * flags, never pointers.
 *
 *   [0, 64)                      struct fdn__shm_seg_hdr (magic, version, size)
 *   [256, 512)                   ring 0's control: connecting side -> accepting side
 *   [512, 768)                   ring 1's control: accepting side -> connecting side
 *   [1024, 1152)                 box 0: connecting side -> accepting side
 *   [1280, 1408)                 box 1: accepting side -> connecting side
 *   [4096, 4096 + size)          ring 0's bytes
 *   [4096 + size, 4096 + 2*size) ring 1's bytes
 *
 * Positions (head, tail) count bytes since the connection began, modulo
 * 2^64; a byte at position p lives at data[p & (size - 1)]. The producer
 * owns tail and the bytes in [tail, head + size); the consumer owns head and
 * the records from head to the producer's tail.
 *
 * Publishing. A ring holds records, each starting with a nonzero 8-byte
 * header word, 8-aligned. The producer writes a record's body, then a zero
 * word just past its end (where the next header will go), and stores the
 * header last, with release order. The consumer spins on the word at head:
 * zero means nothing yet, anything else is a complete record. So a message
 * costs the consumer one cache line from the producer, the one holding the
 * header and (for a small record) its bytes, where a published tail
 * position would cost a second, read before them (measured: the two loads
 * took half of an idle fdn-perf server's time). Since the producer zeroes
 * the next header word before publishing, a stale word from an earlier lap
 * is never taken for a record; the zero word needs its own 8 bytes, so the
 * producer keeps FDN__SHM_SLACK bytes of the ring free.
 *
 * Trust. The peer can write anything into the segment at any moment. Each
 * side therefore keeps its own position (the consumer's head, the
 * producer's tail) in private memory and only publishes the consumer's
 * head; the peer's head is read once into a local, checked against the
 * ring size and against the last value that was valid (positions only move
 * forwards, and never past the other side's), and refused (-EBADMSG) when
 * it is not. A record's header is read once and its length checked against
 * the ring before use. No offset or length used to address memory ever
 * comes unchecked from the segment, so a hostile or corrupt peer can make
 * this side see garbage bytes, never read or write outside the ring. The
 * bytes themselves are the peer's to choose: core validates them as it
 * does bytes from a socket. */
#ifndef FDN_TRANSPORT_SHM_RING_H
#define FDN_TRANSPORT_SHM_RING_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/compiler.h"

#define FDN__SHM_MAGIC UINT64_C(0x3130484d534e4446) /* "FDNSHM01" little-endian */
#define FDN__SHM_VERSION 4u       /* 2: records, pools and loans; 3: headers publish;
                                     4: the express box */
#define FDN__SHM_DATA_OFFSET 4096u
#define FDN__SHM_MIN_RING (4u << 10)
#define FDN__SHM_MAX_RING (64u << 20)
#define FDN__SHM_SLACK 8u         /* ring bytes the producer leaves free: the zero word */

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
    _Alignas(64) _Atomic uint32_t space_wanted;  /* the producer sleeps until head moves */
    _Atomic uint32_t closed;              /* orderly end: no record after those written */
    /* Written by the consumer. */
    _Alignas(64) _Atomic uint64_t head;   /* bytes ever consumed */
    _Atomic uint32_t box_taken;           /* the last box message taken (its seq) */
    /* Set by the consumer before it sleeps; cleared by whichever side ends
     * the sleep (the producer, when it signals the consumer's eventfd). */
    _Alignas(64) _Atomic uint32_t sleeping;
};

#define FDN__SHM_CTL_OFFSET(dir) (256u + 256u * (unsigned)(dir))
#define FDN__SHM_BOX_OFFSET(dir) (1024u + 256u * (unsigned)(dir))
#define FDN__SHM_BOX_BYTES 104u   /* a box's payload: 128 bytes less its three words */

/* The express box of one direction (see "The box" below): two cache lines,
 * written by the producer only. */
struct fdn__shm_box {
    _Alignas(128) _Atomic uint64_t word;  /* seq (low 32 bits) | len (high 32); stored last */
    _Atomic uint64_t at;                  /* the ring position the message goes before */
    _Atomic uint32_t taken;               /* the last seq of the other direction's box
                                             this side has taken (an acknowledgement that
                                             rides along) */
    uint32_t reserved;
    uint8_t bytes[FDN__SHM_BOX_BYTES];
};

_Static_assert(sizeof(struct fdn__shm_box) == 128, "a box is two cache lines");

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

static inline struct fdn__shm_box *fdn__shm_box(void *seg, int dir)
{
    return (struct fdn__shm_box *)(void *)((uint8_t *)seg + FDN__SHM_BOX_OFFSET(dir));
}

static inline uint8_t *fdn__shm_data(void *seg, uint32_t ring_bytes, int dir)
{
    return (uint8_t *)seg + FDN__SHM_DATA_OFFSET + (size_t)ring_bytes * (unsigned)dir;
}

#define FDN__SHM_REC_BYTES 1u
#define FDN__SHM_REC_REF 2u
#define FDN__SHM_REC_RELEASE 3u
#define FDN__SHM_REC_HDR 8u       /* BYTES and RELEASE headers, and alignment */
#define FDN__SHM_REC_REF_BYTES 16u
#define FDN__SHM_SLOTS 1024u      /* loans a producer may have outstanding */
#define FDN__SHM_MAX_POOL (UINT32_C(1) << 31) /* offsets and lengths fit u32 */

static inline uint64_t fdn__shm_align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

/* A record as read from the ring, checked for form only. */
struct fdn__shm_rec {
    uint8_t type;             /* FDN__SHM_REC_* */
    uint32_t slot;            /* REF, RELEASE */
    uint32_t offset;          /* REF */
    uint32_t len;             /* BYTES, REF: stream bytes it stands for */
    uint32_t rec_bytes;       /* ring bytes the record takes, padding included */
};

static inline uint64_t fdn__shm_rec_word(uint32_t type, uint32_t arg)
{
    return (uint64_t)type | (uint64_t)arg << 32;
}

/* ---- Consumer ------------------------------------------------------------ */

/* The consumer's private view of one ring: head is the truth. */
struct fdn__shm_rx {
    struct fdn__shm_ctl *ctl;
    uint8_t *data;
    uint32_t size;            /* a power of two */
    uint32_t box_taken;       /* the inbound box's last message taken */
    uint64_t head;
    struct fdn__shm_box *box;
};

/* Binds r to the ring (and box) of direction dir of a segment whose rings
 * hold size bytes each. */
static inline void fdn__shm_rx_init(struct fdn__shm_rx *r, void *seg, uint32_t size, int dir)
{
    *r = (struct fdn__shm_rx){.ctl = fdn__shm_ctl(seg, dir), .data = fdn__shm_data(seg, size, dir),
                              .size = size, .box = fdn__shm_box(seg, dir)};
}

/* The first contiguous piece of the avail bytes at head (avail: what is
 * left of the record being read): its address and length (the rest, if
 * the bytes wrap, starts at data[0]). */
static inline const uint8_t *fdn__shm_rx_piece(const struct fdn__shm_rx *r, uint64_t avail,
                                               size_t *len)
{
    uint32_t off = (uint32_t)(r->head & (r->size - 1));
    uint64_t to_end = r->size - off;
    *len = (size_t)(avail < to_end ? avail : to_end);
    return r->data + off;
}

/* One 8-byte word of the ring at position pos (a multiple of 8), read
 * once: the peer may be changing it. */
static inline uint64_t fdn__shm_rx_word(const struct fdn__shm_rx *r, uint64_t pos)
{
    const uint64_t *p = (const uint64_t *)(const void *)(r->data + (pos & (r->size - 1)));
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Whether a record waits at head (head at a record's start). */
static inline bool fdn__shm_rx_ready(const struct fdn__shm_rx *r)
{
    return fdn__shm_rx_word(r, r->head) != 0;
}

/* Reads and checks the record at head. Returns 1 with *out filled, 0 when
 * the producer has published none there yet, or -EBADMSG. The acquire load
 * of the header makes the record's bytes visible. */
static inline int fdn__shm_rx_record(const struct fdn__shm_rx *r, struct fdn__shm_rec *out)
{
    if (r->head & 7)
        return -EBADMSG;
    const uint64_t *p = (const uint64_t *)(const void *)(r->data + (r->head & (r->size - 1)));
    uint64_t w = __atomic_load_n(p, __ATOMIC_ACQUIRE);
    if (w == 0)
        return 0;
    uint32_t type = (uint32_t)w, arg = (uint32_t)(w >> 32);
    *out = (struct fdn__shm_rec){.type = (uint8_t)type};
    switch (type) {
    case FDN__SHM_REC_BYTES:
        if (arg == 0 || FDN__SHM_REC_HDR + fdn__shm_align8(arg) > r->size - FDN__SHM_SLACK)
            return -EBADMSG;
        out->len = arg;
        out->rec_bytes = FDN__SHM_REC_HDR + (uint32_t)fdn__shm_align8(arg);
        return 1;
    case FDN__SHM_REC_REF: {
        uint64_t body = fdn__shm_rx_word(r, r->head + FDN__SHM_REC_HDR);
        out->slot = arg;
        out->offset = (uint32_t)body;
        out->len = (uint32_t)(body >> 32);
        out->rec_bytes = FDN__SHM_REC_REF_BYTES;
        return 1;
    }
    case FDN__SHM_REC_RELEASE:
        out->slot = arg;
        out->rec_bytes = FDN__SHM_REC_HDR;
        return 1;
    default:
        return -EBADMSG;
    }
}

/* A REF's range and slot, checked against the producer's pool (its size as
 * set up) and the consumer's loans (borrowed[slot]: lent and not yet
 * returned). Nothing of the pool may be touched before this passes. */
static inline bool fdn__shm_ref_ok(const struct fdn__shm_rec *r, uint64_t pool_bytes,
                                   const bool *borrowed)
{
    return r->slot < FDN__SHM_SLOTS && !borrowed[r->slot] && r->len > 0 &&
           (uint64_t)r->offset + r->len <= pool_bytes;
}

/* A RELEASE's slot, checked against the producer's loans (lent[slot]). */
static inline bool fdn__shm_release_ok(const struct fdn__shm_rec *r, const bool *lent)
{
    return r->slot < FDN__SHM_SLOTS && lent[r->slot];
}

/* Marks n bytes consumed (n within the record at head) and publishes head, so the
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
    uint32_t box_sent;        /* the outbound box's last message written */
    uint64_t tail;            /* bytes written (published or not) */
    uint64_t known_head;
    struct fdn__shm_box *box;
    uint32_t box_taken;       /* the last box message the consumer was seen to take */
};

static inline void fdn__shm_tx_init(struct fdn__shm_tx *t, void *seg, uint32_t size, int dir)
{
    *t = (struct fdn__shm_tx){.ctl = fdn__shm_ctl(seg, dir), .data = fdn__shm_data(seg, size, dir),
                              .size = size, .box = fdn__shm_box(seg, dir)};
}

/* Free space from the last valid head, without reading the segment. */
static inline uint64_t fdn__shm_tx_space_cached(const struct fdn__shm_tx *t)
{
    return t->size - FDN__SHM_SLACK - (t->tail - t->known_head);
}

/* Reads the consumer's head once and checks it: it may not be behind the
 * last valid head, nor ahead of tail, and a multiple of 8 (records).
 * Returns the free space, or -EBADMSG. */
static inline int64_t fdn__shm_tx_space(struct fdn__shm_tx *t)
{
    uint64_t head = atomic_load_explicit(&t->ctl->head, memory_order_acquire);
    if (head - t->known_head > t->tail - t->known_head || (head & 7))
        return -EBADMSG;
    t->known_head = head;
    return (int64_t)fdn__shm_tx_space_cached(t);
}

/* Copies n bytes (n <= the free space) at tail, wrapping; publishes
 * nothing. */
static inline void fdn__shm_tx_write(struct fdn__shm_tx *t, const void *src, size_t n)
{
    uint32_t off = (uint32_t)(t->tail & (t->size - 1));
    size_t first = t->size - off < n ? t->size - off : n;
    memcpy(t->data + off, src, first);
    if (fdn__unlikely(first < n))   /* wraps: rare, and a call saved per piece */
        memcpy(t->data, (const uint8_t *)src + first, n - first);
    t->tail += n;
}

/* Writes one 8-byte word at position pos (a multiple of 8, inside the
 * space the producer owns). */
static inline void fdn__shm_tx_word(struct fdn__shm_tx *t, uint64_t pos, uint64_t w, int order)
{
    uint64_t *p = (uint64_t *)(void *)(t->data + (pos & (t->size - 1)));
    __atomic_store_n(p, w, order);
}

/* Publishes the record begun at `at`, which ends at tail: zeroes the next
 * header word, then stores the header (release: after everything before). */
static inline void fdn__shm_tx_publish(struct fdn__shm_tx *t, uint64_t at, uint64_t header)
{
    fdn__shm_tx_word(t, t->tail, 0, __ATOMIC_RELAXED);
    fdn__shm_tx_word(t, at, header, __ATOMIC_RELEASE);
}

/* Appends and publishes a REF or RELEASE record (the caller checked the
 * space). */
static inline void fdn__shm_tx_ref(struct fdn__shm_tx *t, uint32_t slot, uint32_t offset,
                                   uint32_t len)
{
    uint64_t at = t->tail;
    fdn__shm_tx_word(t, at + FDN__SHM_REC_HDR, (uint64_t)offset | (uint64_t)len << 32,
                     __ATOMIC_RELAXED);
    t->tail += FDN__SHM_REC_REF_BYTES;
    fdn__shm_tx_publish(t, at, fdn__shm_rec_word(FDN__SHM_REC_REF, slot));
}

static inline void fdn__shm_tx_release(struct fdn__shm_tx *t, uint32_t slot)
{
    uint64_t at = t->tail;
    t->tail += FDN__SHM_REC_HDR;
    fdn__shm_tx_publish(t, at, fdn__shm_rec_word(FDN__SHM_REC_RELEASE, slot));
}

/* A BYTES record in the making: open reserves its header at tail, bytes
 * go in with fdn__shm_tx_write, close pads to 8 and publishes it. */
static inline uint64_t fdn__shm_tx_bytes_open(struct fdn__shm_tx *t)
{
    uint64_t at = t->tail;
    t->tail += FDN__SHM_REC_HDR;
    return at;
}

static inline void fdn__shm_tx_bytes_close(struct fdn__shm_tx *t, uint64_t at)
{
    uint64_t len = t->tail - at - FDN__SHM_REC_HDR;
    t->tail = at + FDN__SHM_REC_HDR + fdn__shm_align8(len);
    fdn__shm_tx_publish(t, at, fdn__shm_rec_word(FDN__SHM_REC_BYTES, (uint32_t)len));
}

/* ---- The box ------------------------------------------------------------- *
 *
 * Why. A ring moves each message through the next of its lines, one the
 * other core last held a lap ago; on this project's test host that costs
 * twice the floor of one line handed back and forth (docs/PERFORMANCE.md,
 * session 11). So each direction also has one fixed box of two cache
 * lines (after MPICH Nemesis's "fastbox"): a small message sent while the
 * box is free goes there, and a request and its answer each touch one
 * line that the two cores keep handing to each other.
 *
 * Order. A box message carries the ring position it goes before (`at`,
 * the producer's tail when it wrote the box): the consumer delivers the
 * ring's records up to that position, then the box, then the ring again.
 * The producer publishes ring records before the box word, both with
 * release order; the consumer reads the ring's header at head first and
 * the box word second, both with acquire order, so a box that goes before
 * the record it has just seen is never missed, and the records a box goes
 * after are visible once the box is.
 *
 * Taking. The consumer copies the message out, then stores the box's seq
 * as taken in its control line; the producer writes the box again only
 * once the box's last message is taken. It learns that from the `taken`
 * word of the box coming the other way (a request's answer acknowledges the
 * request with no line of its own), else from the control line, read only
 * when what it knew says the box is busy.
 *
 * Trust. As for the ring: the word is read once; a seq that is neither the
 * last taken nor the next, a length over the box, a position behind head or
 * inside a record, or an acknowledgement of a message never written, is
 * refused (-EBADMSG). The bytes are the peer's to choose, and are copied
 * out before use: the peer may rewrite them at any time. */

/* A box message as read, checked for form: len bytes wait in the box. */
struct fdn__shm_box_msg {
    uint32_t len;
    uint32_t taken;           /* the peer's acknowledgement of our box */
};

#define FDN__SHM_NEXT_RECORD 1   /* fdn__shm_rx_next: the ring's record at head */
#define FDN__SHM_NEXT_BOX 2      /* ... the box's message */

/* Whether the box holds a message not yet taken (the word only: for a
 * check before sleeping, or of what remains). */
static inline bool fdn__shm_rx_box_ready(const struct fdn__shm_rx *r)
{
    return (uint32_t)atomic_load_explicit(&r->box->word, memory_order_relaxed) != r->box_taken;
}

/* What comes next at head (which must be at a record's start), in order:
 * FDN__SHM_NEXT_RECORD with *rec filled (fdn__shm_rx_record), or
 * FDN__SHM_NEXT_BOX with *box filled, or 0 when nothing has come, or
 * -EBADMSG. */
static inline int fdn__shm_rx_next(const struct fdn__shm_rx *r, struct fdn__shm_rec *rec,
                                   struct fdn__shm_box_msg *box)
{
    int rc = fdn__shm_rx_record(r, rec);
    if (rc < 0)
        return rc;
    uint64_t w = atomic_load_explicit(&r->box->word, memory_order_acquire);
    uint32_t seq = (uint32_t)w;
    if (seq == r->box_taken)
        return rc;
    if (seq != r->box_taken + 1)
        return -EBADMSG;
    uint64_t at = atomic_load_explicit(&r->box->at, memory_order_relaxed);
    if (at != r->head) {
        /* The box goes after records not yet read: the ring must hold a
         * whole record at head. Read it again if it looked empty, since
         * the box word was read after it. */
        if (rc == 0)
            rc = fdn__shm_rx_record(r, rec);
        if (rc <= 0 || at - r->head > r->size || rec->rec_bytes > at - r->head)
            return -EBADMSG;
        return FDN__SHM_NEXT_RECORD;
    }
    uint32_t len = (uint32_t)(w >> 32);
    if (len == 0 || len > FDN__SHM_BOX_BYTES)
        return -EBADMSG;
    *box = (struct fdn__shm_box_msg){
        .len = len, .taken = atomic_load_explicit(&r->box->taken, memory_order_relaxed)};
    return FDN__SHM_NEXT_BOX;
}

/* Takes the consumer's word that it has taken our box's messages up to
 * seq taken: an acknowledgement of a message not yet written is refused
 * (-EBADMSG); an older one than already known changes nothing. */
static inline int fdn__shm_tx_box_acked(struct fdn__shm_tx *t, uint32_t taken)
{
    if ((int32_t)(taken - t->box_sent) > 0)
        return -EBADMSG;
    if ((int32_t)(taken - t->box_taken) > 0)
        t->box_taken = taken;
    return 0;
}

/* Takes the box message b (as fdn__shm_rx_next read it): first its
 * acknowledgement of our own box t, refused (-EBADMSG, nothing taken) when
 * it names a message never written; then its bytes, copied to dst, and
 * the message marked taken: from here the producer may write the box
 * again. */
static inline int fdn__shm_rx_box_take(struct fdn__shm_rx *r, struct fdn__shm_tx *t,
                                       const struct fdn__shm_box_msg *b, void *dst)
{
    if (fdn__shm_tx_box_acked(t, b->taken) < 0)
        return -EBADMSG;
    memcpy(dst, r->box->bytes, b->len);
    r->box_taken++;
    atomic_store_explicit(&r->ctl->box_taken, r->box_taken, memory_order_release);
    return 0;
}

/* Whether our box may be written: 1 when its last message is taken (read
 * from the consumer's control line only when not already known), 0 when
 * not yet, or -EBADMSG. */
static inline int fdn__shm_tx_box_free(struct fdn__shm_tx *t)
{
    if (t->box_taken == t->box_sent)
        return 1;
    int rc = fdn__shm_tx_box_acked(
        t, atomic_load_explicit(&t->ctl->box_taken, memory_order_acquire));
    return rc < 0 ? rc : t->box_taken == t->box_sent;
}

/* Publishes the len bytes (1..FDN__SHM_BOX_BYTES) the caller wrote into
 * t->box->bytes as the next box message, before the ring's next record,
 * acknowledging the other direction's box up to taken. The box must be
 * free (fdn__shm_tx_box_free). */
static inline void fdn__shm_tx_box_publish(struct fdn__shm_tx *t, uint32_t len, uint32_t taken)
{
    atomic_store_explicit(&t->box->at, t->tail, memory_order_relaxed);
    atomic_store_explicit(&t->box->taken, taken, memory_order_relaxed);
    t->box_sent++;
    atomic_store_explicit(&t->box->word, (uint64_t)t->box_sent | (uint64_t)len << 32,
                          memory_order_release);
}

#endif
