/* The sends a connection has accepted and not yet reported, oldest first:
 * the queue the TCP and shm transports both keep. Internal. Each transport
 * decides when the head is done (all its bytes written, and for TCP the
 * kernel done with its pages) and reports it with on_sent. */
#ifndef FDN_TRANSPORT_SEND_QUEUE_H
#define FDN_TRANSPORT_SEND_QUEUE_H

#include "core/transport.h"

struct fdn__send_queue {
    struct fdn__tp_send *head, *tail;
    struct fdn__tp_send *cursor;   /* the first with bytes not yet written, or NULL */
};

/* Checks that s->len is its iovecs' total (the byte accounting trusts it:
 * a mismatch would stall the stream) and appends it, its progress zeroed.
 * Returns 0, or -EINVAL naming the transport tp. */
int fdn__send_queue_push(struct fdn__send_queue *q, struct fdn__tp_send *s, const char *tp);

/* Removes and returns the oldest send; the queue must not be empty. */
struct fdn__tp_send *fdn__send_queue_pop(struct fdn__send_queue *q);

#endif
