/* What the peer modules (core/peer*.c) share among themselves, and nothing
 * else includes. core/peer.c is the data path and owns the lanes;
 * peer_request.c keeps the requests waiting for a response;
 * peer_liveness.c checks that each lane still hears from its peer;
 * peer_faults.c applies the seeded fault layer to a lane's frames. Each
 * keeps everything else static, so that the data path's calls stay within
 * one file, where the compiler inlines them. */
#ifndef FDN_CORE_PEER_INTERNAL_H
#define FDN_CORE_PEER_INTERNAL_H

#include <stdint.h>

#include "core/node_internal.h"

static inline bool fdn__peer_closing(const fdn_peer *p) { return p->state == FDN__PEER_CLOSING; }

static inline bool fdn__peer_reliable(const fdn_peer *p, unsigned channel)
{
    return p->node->channels[channel].cfg.delivery == FDN_RELIABLE;
}

/* core/peer.c */

/* Queues a control frame of the given type (channel, and word in its
 * msg_id) on lane l and then sends what the lane may. -ENOBUFS when the
 * lane's control queue is full: the frame is not queued (the lane still
 * sends what it has). */
int fdn__lane_send_ctrl(struct fdn__lane *l, uint8_t type, uint16_t channel, uint64_t word);
/* Closes the lane's transport once (on_closed follows). */
void fdn__lane_close_transport(struct fdn__lane *l);
/* Says why lane l of p (NULL: the whole session) ended: the one line every
 * end gets (fdn__node_log_end). */
void fdn__peer_say_end(const fdn_peer *p, const struct fdn__lane *l, int level, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

/* The data path's steps the fault layer takes part in: they stay static in
 * core/peer.c, and these call them. */
void fdn__lane_pump(struct fdn__lane *l);
size_t fdn__batch_add_frame(struct fdn__batch *b, int *niov, const struct fdn__frame *f);
int fdn__peer_on_data(fdn_peer *p, const struct fdn__frame_hdr *h, const uint8_t *payload);
int fdn__lane_on_recv(struct fdn__lane *l, const uint8_t *data, size_t len);
void fdn__lane_on_recv_result(struct fdn__lane *l, int rc);

/* core/peer_request.c */

/* A RESPONSE to request seq of the channel: hands resp to the request's
 * callback, or drops it (counted) when nobody waits for it any more. */
void fdn__peer_complete_request(fdn_peer *peer, uint16_t channel, uint64_t seq, fdn_msg *resp);
/* The session ended: every request still waiting fails with -ENOTCONN. */
void fdn__peer_fail_requests(fdn_peer *peer);

/* core/peer_liveness.c */

/* Sets up the lane's heartbeat timer, at the lane's creation. */
void fdn__lane_liveness_init(struct fdn__lane *l);
/* The lane is up: its liveness is checked from now on. */
void fdn__lane_liveness_start(struct fdn__lane *l);

/* core/peer_faults.c: the fault layer's side of a lane with l->faults set.
 * Each is called only when it is. */

/* Sets up (0, or -ENOMEM) and frees the lane's fault state (l->faults). */
int fdn__lane_faults_create(struct fdn__lane *l);
void fdn__lane_faults_free(struct fdn__lane *l);
/* Gives a held frame back to the scheduler as done (unsent) and forgets
 * what was held on receipt: the lane leaves its session. */
void fdn__lane_faults_release_held(struct fdn__lane *l);
/* Whether the layer has reset the lane: no more I/O on it. */
bool fdn__lane_faults_reset(const struct fdn__lane *l);
/* Before a batch takes data frames: adds a held frame whose time has come.
 * false while the lane's data must wait. */
bool fdn__lane_faults_tx_ready(struct fdn__lane *l, struct fdn__batch *b, int *niov,
                               size_t *bytes);
/* The scheduler handed out f for batch b: adds it (once, twice, changed) or
 * not. false when the lane's data must stop for now. */
bool fdn__lane_faults_tx(struct fdn__lane *l, struct fdn__batch *b, int *niov, size_t *bytes,
                         const struct fdn__frame *f);
/* A DATA frame arrived: returns as on_data, or 1 when the lane was reset,
 * or 2 when the frame is held and on_recv must keep what follows. */
int fdn__lane_faults_rx(struct fdn__lane *l, const struct fdn__frame_hdr *h,
                        const uint8_t *payload);
/* Whether a received frame is held, and keeping the bytes after it. */
bool fdn__lane_faults_rx_holding(const struct fdn__lane *l);
int fdn__lane_faults_rx_keep(struct fdn__lane *l, const uint8_t *data, size_t len);

#endif
