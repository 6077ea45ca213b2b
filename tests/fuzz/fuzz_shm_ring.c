/* libFuzzer target: the shared-memory rings, their records and the express
 * boxes (transport/shm_ring.h) over a segment image that a hostile peer
 * scribbles on.
 *
 * The image is exactly one segment, allocated alone so that ASan sees any
 * access outside it; each side's pool is allocated alone too, so a REF that
 * passed the checks yet reached outside its pool would be caught reading.
 * This side consumes ring 0 and produces into ring 1, as the accepting side
 * does; an honest peer uses the same code from the other end. The input is
 * a script of steps, each an opcode byte and an 8-byte little-endian
 * operand:
 *   0  the peer writes a word (the operand)    1  the peer writes ring 1's head
 *      at an 8-aligned place of ring 0,
 *      by turns at this side's head
 *   2  this side receives what ring 0 and     3  this side sends: BYTES of
 *      box 0 hold                                 operand % 64 KiB, or a REF of
 *                                                 its pool (operand's top bit),
 *                                                 or into its box (bit 62, when
 *                                                 the bytes fit and it is free)
 *   4  the peer writes a byte anywhere        5  the peer produces honestly,
 *                                                 as 3 does
 *   6  the peer consumes ring 1 and box 1     7  this side releases what it
 *      honestly, releasing every loan            borrowed (RELEASE records)
 *   8  the peer writes a field of box 0: bits 62-63 of the operand pick the
 *      word (seq: this side's last taken plus the low 32 bits; length: bits
 *      32-39), the position or the acknowledgement (the low 62 bits)
 * The first input byte picks the ring size (4 KiB .. 64 KiB).
 *
 * Properties, besides ASan and UBSan: a position or record that passed the
 * checks is consistent (the readable bytes fit the ring, pieces lie inside
 * it, a REF lies inside its pool, a RELEASE names a loan); once refused, a
 * ring is not used again (the transport closes the connection); and while
 * the peer only behaves honestly nothing is refused, every byte arrives in
 * order (copied, by reference or through a box), and every loan comes
 * back. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "transport/shm_ring.h"

#define POOL_BYTES 65536u
#define BYTE_OF_STREAM(i, k) ((uint8_t)((i) * (k)))
#define BYTE_OF_POOL(i, k) ((uint8_t)((i) * 11 + (k)))  /* fixed: a lent buffer never changes */

/* One end: its rings, its pool, its loans both ways. */
struct end {
    struct fdn__shm_rx rx;
    struct fdn__shm_tx tx;
    uint8_t *pool;                       /* what it lends: BYTE_OF_POOL */
    bool lent[FDN__SHM_SLOTS];           /* its loans out */
    bool borrowed[FDN__SHM_SLOTS];       /* the other's loans it holds */
    uint32_t holding[FDN__SHM_SLOTS];    /* ... listed, to release without a scan */
    uint32_t num_holding;
    uint32_t to_release[FDN__SHM_SLOTS];
    uint32_t num_release;
    uint32_t rx_bytes_left;              /* of a BYTES record being read */
    uint64_t sent, received;             /* stream bytes */
    uint8_t pattern_k;                   /* its stream: byte i is (uint8_t)(i * k) */
    bool dead;
};

struct model {
    uint8_t *seg;
    size_t seg_bytes;
    uint32_t size;
    struct end us, peer;
    bool hostile;
};

static uint64_t operand(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void refused(struct model *m, struct end *e)
{
    FUZZ_CHECK(m->hostile); /* an honest peer is never refused */
    (void)e;
    e->dead = true;
}

/* Where a run reads bytes, so that ASan checks every one of them. */
static uint8_t sink[65536];

/* Byte i of stream k is stream_of(k)[i % 256 + j] for j < 65536: streams
 * repeat every 256 bytes, so one table per k serves every position, and
 * whole ranges are written and compared with memcpy and memcmp (a byte loop
 * under coverage instrumentation took most of a run). */
static const uint8_t *stream_of(uint8_t k)
{
    static uint8_t *tables[256];
    if (!tables[k] && (tables[k] = malloc(256 + 65536)))
        for (uint32_t i = 0; i < 256 + 65536; i++)
            tables[k][i] = BYTE_OF_STREAM(i, k);
    return tables[k];
}

/* Reads stream bytes at p: the receiver's expectations of the sender's
 * stream (only while everyone is honest). */
static void take_stream(struct model *m, struct end *e, const struct end *from, const uint8_t *p,
                        size_t n)
{
    memcpy(sink, p, n);
    if (!m->hostile)
        FUZZ_CHECK(memcmp(p, stream_of(from->pattern_k) + e->received % 256, n) == 0);
    e->received += n;
}

/* Consumes what e's inbound ring and box hold, in order, as shm.c does: at
 * most a ring's worth per call. */
static void receive(struct model *m, struct end *e, struct end *from)
{
    if (e->dead)
        return;
    uint64_t budget = m->size;
    while (budget) {
        if (e->rx_bytes_left) {
            size_t n;
            const uint8_t *p = fdn__shm_rx_piece(&e->rx, e->rx_bytes_left, &n);
            FUZZ_CHECK(n > 0 && n <= m->size - FDN__SHM_SLACK);
            FUZZ_CHECK(p >= e->rx.data && p + n <= e->rx.data + m->size);
            take_stream(m, e, from, p, n);
            e->rx_bytes_left -= (uint32_t)n;
            uint64_t used = n + (e->rx_bytes_left ? 0 : fdn__shm_align8(e->rx.head + n) -
                                                            (e->rx.head + n));
            fdn__shm_rx_consume(&e->rx, used);
            budget -= budget < used ? budget : used;
            continue;
        }
        struct fdn__shm_rec r;
        struct fdn__shm_box_msg box;
        int rc = fdn__shm_rx_next(&e->rx, &r, &box);
        if (rc == 0)
            return;
        if (rc < 0) {
            refused(m, e);
            return;
        }
        if (rc == FDN__SHM_NEXT_BOX) {
            FUZZ_CHECK(box.len > 0 && box.len <= FDN__SHM_BOX_BYTES);
            uint8_t bytes[FDN__SHM_BOX_BYTES];
            if (fdn__shm_rx_box_take(&e->rx, &e->tx, &box, bytes) < 0) {
                refused(m, e);
                return;
            }
            take_stream(m, e, from, bytes, box.len);
            budget -= budget < box.len ? budget : box.len;
            continue;
        }
        FUZZ_CHECK(r.rec_bytes <= m->size - FDN__SHM_SLACK && r.rec_bytes % 8 == 0);
        if (r.type == FDN__SHM_REC_BYTES) {
            FUZZ_CHECK(r.len > 0 && FDN__SHM_REC_HDR + r.len <= r.rec_bytes);
            fdn__shm_rx_consume(&e->rx, FDN__SHM_REC_HDR);
            budget -= budget < FDN__SHM_REC_HDR ? budget : FDN__SHM_REC_HDR;
            e->rx_bytes_left = r.len;
            continue;
        }
        budget -= budget < r.rec_bytes ? budget : r.rec_bytes;
        if (r.type == FDN__SHM_REC_REF) {
            if (!fdn__shm_ref_ok(&r, POOL_BYTES, e->borrowed)) {
                refused(m, e);
                return;
            }
            /* The bytes lie in the lender's pool; every one is read. */
            memcpy(sink, from->pool + r.offset, r.len);
            e->received += r.len;
            e->borrowed[r.slot] = true;
            e->holding[e->num_holding++] = r.slot;
        } else {
            FUZZ_CHECK(r.type == FDN__SHM_REC_RELEASE);
            if (!fdn__shm_release_ok(&r, e->lent)) {
                refused(m, e);
                return;
            }
            e->lent[r.slot] = false;
        }
        fdn__shm_rx_consume(&e->rx, r.rec_bytes);
    }
}

static int64_t space_of(struct model *m, struct end *e)
{
    if (e->dead)
        return -1;
    int64_t space = fdn__shm_tx_space(&e->tx);
    if (space < 0) {
        refused(m, e);
        return -1;
    }
    FUZZ_CHECK((uint64_t)space <= m->size - FDN__SHM_SLACK && space % 8 == 0);
    FUZZ_CHECK(e->tx.tail - e->tx.known_head <= m->size - FDN__SHM_SLACK);
    return space;
}

/* Writes e's RELEASE records for what it let go of. */
static void write_releases(struct model *m, struct end *e)
{
    int64_t space = space_of(m, e);
    if (space < 0)
        return;
    while (e->num_release && space >= FDN__SHM_REC_HDR) {
        uint32_t s = e->to_release[--e->num_release];
        e->borrowed[s] = false;   /* the lender's again once it reads this */
        fdn__shm_tx_release(&e->tx, s);
        space -= FDN__SHM_REC_HDR;
    }
}

static void release_all(struct model *m, struct end *e)
{
    while (e->num_holding)
        e->to_release[e->num_release++] = e->holding[--e->num_holding];
    write_releases(m, e);
}

/* e sends into its box, as shm.c does, when asked (bit 62), the n bytes
 * fit and the box is free. Returns whether it did. */
static bool produce_box(struct model *m, struct end *e, uint64_t want, size_t n)
{
    if (!(want >> 62 & 1) || n > FDN__SHM_BOX_BYTES)
        return false;
    int free = fdn__shm_tx_box_free(&e->tx);
    if (free < 0)
        refused(m, e);
    if (free <= 0)
        return false;
    memcpy(e->tx.box->bytes, stream_of(e->pattern_k) + e->sent % 256, n);
    fdn__shm_tx_box_publish(&e->tx, (uint32_t)n, e->rx.box_taken);
    e->sent += n;
    return true;
}

/* e sends: a REF of a range of its pool when asked and a slot is free, or
 * a box message when asked and possible, else a BYTES record of the
 * stream. */
static void produce(struct model *m, struct end *e, uint64_t want)
{
    int64_t space = space_of(m, e);
    if (space < 0)
        return;
    size_t n = (size_t)(want % 65536) + 1;
    if (!(want >> 63) && produce_box(m, e, want, n))
        return;
    if (e->dead || space < 2 * FDN__SHM_REC_HDR)
        return;
    if (want >> 63) {
        uint32_t slot = (uint32_t)(want >> 32) % FDN__SHM_SLOTS;
        uint32_t off = (uint32_t)(want >> 16) % POOL_BYTES;
        if (n > POOL_BYTES - off)
            n = POOL_BYTES - off;
        if (!e->lent[slot] && space >= FDN__SHM_REC_REF_BYTES) {
            fdn__shm_tx_ref(&e->tx, slot, off, (uint32_t)n);
            e->lent[slot] = true;
            e->sent += n;
            return;
        }
    }
    if (n > (uint64_t)space - FDN__SHM_REC_HDR)
        n = (size_t)space - FDN__SHM_REC_HDR;
    uint64_t at = fdn__shm_tx_bytes_open(&e->tx);
    fdn__shm_tx_write(&e->tx, stream_of(e->pattern_k) + e->sent % 256, n);
    fdn__shm_tx_bytes_close(&e->tx, at);
    FUZZ_CHECK(e->tx.tail - e->tx.known_head <= m->size - FDN__SHM_SLACK);
    e->sent += n;
}

/* The honest peer consumes what we sent and gives every loan back. */
static void peer_consume(struct model *m)
{
    receive(m, &m->peer, &m->us);
    if (!m->peer.dead)
        release_all(m, &m->peer);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A pool's bytes never change (nothing writes a lent buffer), so each is
 * filled once per process, not per input: the fill dominated a run. */
static uint8_t *pool_of(uint8_t k)
{
    static uint8_t *pools[256];
    if (!pools[k] && (pools[k] = malloc(POOL_BYTES)))
        for (uint32_t i = 0; i < POOL_BYTES; i++)
            pools[k][i] = BYTE_OF_POOL(i, k);
    return pools[k];
}

/* One segment per ring size, allocated alone (ASan sees outside it) and
 * kept: a fresh one per input cost page faults on every run. */
static uint8_t *segment_of(unsigned size_index, size_t bytes)
{
    static uint8_t *segs[5];
    if (!segs[size_index])
        segs[size_index] = aligned_alloc(64, bytes);
    return segs[size_index];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct model *m = calloc(1, sizeof *m);
    if (!m)
        return 0;
    m->size = FDN__SHM_MIN_RING << (data[0] % 5);
    m->seg_bytes = fdn__shm_seg_bytes(m->size);
    m->seg = segment_of(data[0] % 5, m->seg_bytes);
    m->us.pattern_k = 13;
    m->peer.pattern_k = 7;
    m->us.pool = pool_of(m->us.pattern_k);
    m->peer.pool = pool_of(m->peer.pattern_k);
    if (!m->seg || !m->us.pool || !m->peer.pool)
        goto out;
    memset(m->seg, 0, m->seg_bytes);
    fdn__shm_rx_init(&m->us.rx, m->seg, m->size, 0);
    fdn__shm_tx_init(&m->us.tx, m->seg, m->size, 1);
    fdn__shm_rx_init(&m->peer.rx, m->seg, m->size, 1);
    fdn__shm_tx_init(&m->peer.tx, m->seg, m->size, 0);
    for (size_t at = 1; at + 9 <= size; at += 9) {
        uint64_t v = operand(data + at + 1);
        switch (data[at] % 9) {
        case 0: {
            /* A forged header where this side reads next, or a word
             * anywhere (a stale lap, a record half written). */
            m->hostile = true;
            uint64_t pos = (at / 9) % 2 ? m->us.rx.head : v >> 40;
            uint8_t *ring0 = fdn__shm_data(m->seg, m->size, 0);
            memcpy(ring0 + (pos & (m->size - 1) & ~(uint64_t)7), &v, sizeof v);
            break;
        }
        case 1:
            m->hostile = true;
            atomic_store_explicit(&fdn__shm_ctl(m->seg, 1)->head, v, memory_order_relaxed);
            break;
        case 2:
            receive(m, &m->us, &m->peer);
            break;
        case 3:
            produce(m, &m->us, v);
            break;
        case 4:
            m->hostile = true;
            m->seg[v % m->seg_bytes] = (uint8_t)(v >> 56);
            break;
        case 5:
            produce(m, &m->peer, v);
            break;
        case 6:
            peer_consume(m);
            break;
        case 7:
            release_all(m, &m->us);
            break;
        case 8: {
            m->hostile = true;
            struct fdn__shm_box *box = fdn__shm_box(m->seg, 0);
            uint64_t low = v & ~(UINT64_C(3) << 62);
            if (v >> 62 == 0)
                atomic_store_explicit(&box->word,
                                      (uint32_t)(m->us.rx.box_taken + (uint32_t)v) |
                                          (v >> 32 & 0xff) << 32,
                                      memory_order_release);
            else if (v >> 62 == 1)
                atomic_store_explicit(&box->at, low, memory_order_relaxed);
            else
                atomic_store_explicit(&box->taken, (uint32_t)low, memory_order_relaxed);
            break;
        }
        }
    }
    if (!m->hostile) {
        /* Drain both ways: everything arrives, every loan comes back. A
         * call takes at most a ring's worth, and the box may hold more. */
        receive(m, &m->us, &m->peer);
        receive(m, &m->us, &m->peer);
        FUZZ_CHECK(m->us.received == m->peer.sent);
        for (int round = 0; round < 4; round++) {
            peer_consume(m);
            release_all(m, &m->us);
            receive(m, &m->us, &m->peer);
            receive(m, &m->peer, &m->us);
        }
        FUZZ_CHECK(!m->us.dead && !m->peer.dead);
        FUZZ_CHECK(m->peer.received == m->us.sent);
        for (uint32_t s = 0; s < FDN__SHM_SLOTS; s++)
            FUZZ_CHECK(!m->us.lent[s] && !m->peer.lent[s]);
    }
out:
    free(m);
    return 0;
}
