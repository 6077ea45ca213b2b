/* The shared-memory rings and express boxes (transport/shm_ring.h) between
 * two threads, as two processes use them: each end sends and receives at
 * once, each message going in a BYTES record or, when it fits and the box
 * is free, in the box. Every message must arrive once, in order, with its
 * bytes, and both ways must use both paths. In the concurrent suite, so
 * that ThreadSanitizer checks the records' and the boxes' memory order. No
 * timing: each thread spins until its counts are reached. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "transport/shm_ring.h"

#define RING_BYTES 16384u
#define MESSAGES 40000u
#define MAX_LEN 300u

struct end {
    struct fdn__shm_tx tx;
    struct fdn__shm_rx rx;
    uint8_t k, peer_k;                 /* this end's stream, and the other's */
    uint64_t rng;
    uint64_t sent_msgs, sent_bytes, boxes_sent;
    uint64_t received_msgs, received_bytes, boxes_received;
};

/* Byte i of stream k. */
static uint8_t stream_byte(uint8_t k, uint64_t i)
{
    return (uint8_t)(i * k + (i >> 8));
}

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Sends the next message of len bytes as the transport would: in the box
 * when it fits and is free, else as a BYTES record. False when neither has
 * room yet. */
static bool send_one(struct end *e, uint32_t len)
{
    uint8_t buf[MAX_LEN];
    for (uint32_t i = 0; i < len; i++)
        buf[i] = stream_byte(e->k, e->sent_bytes + i);
    if (len <= FDN__SHM_BOX_BYTES) {
        int free = fdn__shm_tx_box_free(&e->tx);
        CHECK(free >= 0);
        if (free) {
            memcpy(e->tx.box->bytes, buf, len);
            fdn__shm_tx_box_publish(&e->tx, len, e->rx.box_taken);
            e->boxes_sent++;
            e->sent_bytes += len;
            return true;
        }
    }
    uint64_t need = FDN__SHM_REC_HDR + fdn__shm_align8(len);
    if (fdn__shm_tx_space_cached(&e->tx) < need) {
        int64_t space = fdn__shm_tx_space(&e->tx);
        CHECK(space >= 0);
        if ((uint64_t)space < need)
            return false;
    }
    uint64_t at = fdn__shm_tx_bytes_open(&e->tx);
    fdn__shm_tx_write(&e->tx, buf, len);
    fdn__shm_tx_bytes_close(&e->tx, at);
    e->sent_bytes += len;
    return true;
}

static void check_bytes(struct end *e, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(p[i], stream_byte(e->peer_k, e->received_bytes + i));
    e->received_bytes += n;
}

/* Takes up to 16 messages, in order, checking every byte. */
static void receive_some(struct end *e)
{
    for (int n = 0; n < 16; n++) {
        struct fdn__shm_rec rec;
        struct fdn__shm_box_msg box;
        int rc = fdn__shm_rx_next(&e->rx, &rec, &box);
        CHECK(rc >= 0);
        if (rc == 0)
            return;
        if (rc == FDN__SHM_NEXT_BOX) {
            uint8_t buf[FDN__SHM_BOX_BYTES];
            CHECK_OK(fdn__shm_rx_box_take(&e->rx, &e->tx, &box, buf));
            check_bytes(e, buf, box.len);
            e->boxes_received++;
        } else {
            CHECK_EQ(rec.type, FDN__SHM_REC_BYTES);
            fdn__shm_rx_consume(&e->rx, FDN__SHM_REC_HDR);
            /* One piece, or two at the wrap; the padding goes with the last,
             * as in shm.c, so the published head stays a multiple of 8. */
            for (uint32_t left = rec.len; left;) {
                size_t len;
                const uint8_t *piece = fdn__shm_rx_piece(&e->rx, left, &len);
                check_bytes(e, piece, len);
                left -= (uint32_t)len;
                fdn__shm_rx_consume(&e->rx, len + (left ? 0 : rec.rec_bytes - FDN__SHM_REC_HDR -
                                                                  rec.len));
            }
        }
        e->received_msgs++;
    }
}

/* Sends in bursts of 1 to 8 messages (7 in 10 small enough for the box),
 * receiving between them, until all are sent and all the other's taken. */
static void *run_end(void *arg)
{
    struct end *e = arg;
    while (e->sent_msgs < MESSAGES || e->received_msgs < MESSAGES) {
        unsigned burst = 1 + (unsigned)(next_random(&e->rng) % 8);
        for (unsigned i = 0; i < burst && e->sent_msgs < MESSAGES; i++) {
            uint64_t r = next_random(&e->rng);
            uint32_t len = r % 10 < 7 ? 1 + (uint32_t)(r >> 8) % FDN__SHM_BOX_BYTES
                                      : 1 + (uint32_t)(r >> 8) % MAX_LEN;
            if (!send_one(e, len))
                break;
            e->sent_msgs++;
        }
        receive_some(e);
    }
    return NULL;
}

int main(void)
{
    size_t bytes = fdn__shm_seg_bytes(RING_BYTES);
    void *seg = aligned_alloc(4096, bytes);
    CHECK(seg != NULL);
    memset(seg, 0, bytes);   /* a fresh memfd reads as zeroes */
    struct end ends[2] = {{.k = 7, .peer_k = 13, .rng = 1}, {.k = 13, .peer_k = 7, .rng = 2}};
    for (int i = 0; i < 2; i++) {
        fdn__shm_tx_init(&ends[i].tx, seg, RING_BYTES, i);
        fdn__shm_rx_init(&ends[i].rx, seg, RING_BYTES, 1 - i);
    }
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_create(&threads[i], NULL, run_end, &ends[i]), 0);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(pthread_join(threads[i], NULL), 0);
    for (int i = 0; i < 2; i++) {
        struct end *e = &ends[i], *peer = &ends[1 - i];
        CHECK_EQ(e->received_msgs, MESSAGES);
        CHECK_EQ(e->received_bytes, peer->sent_bytes);
        CHECK_EQ(e->boxes_received, peer->boxes_sent);
        /* Both paths were taken: the box, and the ring while it was busy. */
        CHECK(e->boxes_received > 0 && e->boxes_received < MESSAGES);
        printf("end %d: %llu of %u messages through the box\n", i,
               (unsigned long long)peer->boxes_sent, MESSAGES);
    }
    free(seg);
    return 0;
}
