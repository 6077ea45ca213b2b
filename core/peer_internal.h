/* What the peer modules (core/peer*.c) share among themselves, and nothing
 * else includes. core/peer.c is the data path and owns the lanes;
 * peer_liveness.c checks that each lane still hears from its peer. Each
 * keeps everything else static, so that the data path's calls stay within
 * one file, where the compiler inlines them. */
#ifndef FDN_CORE_PEER_INTERNAL_H
#define FDN_CORE_PEER_INTERNAL_H

#include <stdint.h>

#include "core/node_internal.h"

static inline bool fdn__peer_closing(const fdn_peer *p) { return p->state == FDN__PEER_CLOSING; }

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

/* core/peer_liveness.c */

/* Sets up the lane's heartbeat timer, at the lane's creation. */
void fdn__lane_liveness_init(struct fdn__lane *l);
/* The lane is up: its liveness is checked from now on. */
void fdn__lane_liveness_start(struct fdn__lane *l);

#endif
