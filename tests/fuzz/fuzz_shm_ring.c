/* libFuzzer target: the shared-memory rings (transport/shm_ring.h) over a
 * segment image that a hostile peer scribbles on.
 *
 * The image is exactly one segment, allocated alone so that ASan sees any
 * access outside it. This side consumes ring 0 and produces into ring 1,
 * as the accepting side does; the input is a script of steps, each an
 * opcode byte and an 8-byte little-endian operand:
 *   0  the peer writes ring 0's tail          1  the peer writes ring 1's head
 *   2  this side receives what ring 0 holds   3  this side sends operand % 64 KiB bytes
 *   4  the peer writes a byte anywhere        5  the peer produces honestly into ring 0
 *   6  the peer consumes honestly from ring 1
 * The first input byte picks the ring size (4 KiB .. 64 KiB).
 *
 * Properties, besides ASan and UBSan: a position that passed the checks is
 * consistent (the readable bytes fit the ring, pieces lie inside it, the
 * producer never has more than the ring outstanding); once refused, a ring
 * is not used again (the transport closes the connection); and while the
 * peer only behaves honestly, every byte arrives, in order. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "transport/shm_ring.h"

struct model {
    uint8_t *seg;
    size_t seg_bytes;
    uint32_t size;
    struct fdn__shm_rx rx;     /* ours: ring 0 */
    struct fdn__shm_tx tx;     /* ours: ring 1 */
    struct fdn__shm_rx peer_rx; /* the honest peer's consumer of ring 1 */
    struct fdn__shm_tx peer_tx; /* the honest peer's producer into ring 0 */
    bool rx_dead, tx_dead, hostile;
    uint64_t peer_sent, received; /* the honest stream into ring 0: byte i is (uint8_t)(i * 7) */
    uint64_t sent, peer_received; /* ours into ring 1: byte i is (uint8_t)(i * 13) */
};

static uint64_t operand(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void receive(struct model *m)
{
    if (m->rx_dead)
        return;
    int64_t avail = fdn__shm_rx_avail(&m->rx);
    if (avail < 0) {
        FUZZ_CHECK(m->hostile); /* an honest peer is never refused */
        m->rx_dead = true;
        return;
    }
    FUZZ_CHECK((uint64_t)avail <= m->size);
    FUZZ_CHECK(m->rx.known_tail - m->rx.head == (uint64_t)avail);
    uint64_t left = (uint64_t)avail;
    int pieces = 0;
    while (left) {
        size_t n;
        const uint8_t *p = fdn__shm_rx_piece(&m->rx, left, &n);
        FUZZ_CHECK(n > 0 && n <= left);
        FUZZ_CHECK(p >= m->rx.data && p + n <= m->rx.data + m->size);
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < n; i++) {
            sink ^= p[i]; /* every byte handed to core is read */
            if (!m->hostile)
                FUZZ_CHECK(p[i] == (uint8_t)((m->received + i) * 7));
        }
        (void)sink;
        m->received += n;
        fdn__shm_rx_consume(&m->rx, n);
        left -= n;
        FUZZ_CHECK(++pieces <= 2);
    }
}

static void send_bytes(struct model *m, uint64_t want)
{
    if (m->tx_dead)
        return;
    int64_t space = fdn__shm_tx_space(&m->tx);
    if (space < 0) {
        FUZZ_CHECK(m->hostile);
        m->tx_dead = true;
        return;
    }
    FUZZ_CHECK((uint64_t)space <= m->size);
    FUZZ_CHECK(m->tx.tail - m->tx.known_head <= m->size);
    uint8_t buf[65536];
    size_t n = (size_t)(want % sizeof buf);
    if (n > (uint64_t)space)
        n = (size_t)space;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)((m->sent + i) * 13);
    fdn__shm_tx_write(&m->tx, buf, n);
    fdn__shm_tx_publish(&m->tx);
    m->sent += n;
}

/* The honest peer, using the same code from the other end. */
static void peer_produce(struct model *m, uint64_t want)
{
    int64_t space = fdn__shm_tx_space(&m->peer_tx);
    if (space <= 0)
        return; /* refused only once we or the script broke ring 0 */
    uint8_t buf[4096];
    size_t n = (size_t)(want % sizeof buf);
    if (n > (uint64_t)space)
        n = (size_t)space;
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)((m->peer_sent + i) * 7);
    fdn__shm_tx_write(&m->peer_tx, buf, n);
    fdn__shm_tx_publish(&m->peer_tx);
    m->peer_sent += n;
}

static void peer_consume(struct model *m)
{
    int64_t avail = fdn__shm_rx_avail(&m->peer_rx);
    if (avail <= 0)
        return;
    while (avail) {
        size_t n;
        const uint8_t *p = fdn__shm_rx_piece(&m->peer_rx, (uint64_t)avail, &n);
        for (size_t i = 0; i < n; i++)
            if (!m->hostile)
                FUZZ_CHECK(p[i] == (uint8_t)((m->peer_received + i) * 13));
        m->peer_received += n;
        fdn__shm_rx_consume(&m->peer_rx, n);
        avail -= (int64_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct model m = {.size = FDN__SHM_MIN_RING << (data[0] % 5)};
    m.seg_bytes = fdn__shm_seg_bytes(m.size);
    m.seg = aligned_alloc(64, m.seg_bytes);
    if (!m.seg)
        return 0;
    memset(m.seg, 0, m.seg_bytes);
    fdn__shm_rx_init(&m.rx, fdn__shm_ctl(m.seg, 0), fdn__shm_data(m.seg, m.size, 0), m.size);
    fdn__shm_tx_init(&m.tx, fdn__shm_ctl(m.seg, 1), fdn__shm_data(m.seg, m.size, 1), m.size);
    fdn__shm_rx_init(&m.peer_rx, fdn__shm_ctl(m.seg, 1), fdn__shm_data(m.seg, m.size, 1),
                     m.size);
    fdn__shm_tx_init(&m.peer_tx, fdn__shm_ctl(m.seg, 0), fdn__shm_data(m.seg, m.size, 0),
                     m.size);
    for (size_t at = 1; at + 9 <= size; at += 9) {
        uint64_t v = operand(data + at + 1);
        switch (data[at] % 7) {
        case 0:
            m.hostile = true;
            atomic_store_explicit(&fdn__shm_ctl(m.seg, 0)->tail, v, memory_order_relaxed);
            break;
        case 1:
            m.hostile = true;
            atomic_store_explicit(&fdn__shm_ctl(m.seg, 1)->head, v, memory_order_relaxed);
            break;
        case 2:
            receive(&m);
            break;
        case 3:
            send_bytes(&m, v);
            break;
        case 4:
            m.hostile = true;
            m.seg[v % m.seg_bytes] = (uint8_t)(v >> 56);
            break;
        case 5:
            peer_produce(&m, v);
            break;
        case 6:
            peer_consume(&m);
            break;
        }
    }
    if (!m.hostile) {
        receive(&m);
        FUZZ_CHECK(m.received == m.peer_sent);
    }
    free(m.seg);
    return 0;
}
