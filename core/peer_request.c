/* Requests and their responses over a peer's channels: the table of
 * requests waiting for an answer (by channel and sequence number, which is
 * what a RESPONSE names), their timeouts, cancelling, and failing them all
 * when the session ends. A request is an ordinary message of kind REQUEST
 * (fdn__peer_send), so it shares its channel's order, credit and
 * resumption. */
#include <errno.h>
#include <stdlib.h>

#include <fdn/error.h>

#include "base/error.h"
#include "core/peer_internal.h"
#include "core/worker_internal.h"

/* Pending requests are found by what a response names (channel and the
 * request's sequence number) and, for fdn_request_cancel, by the
 * application's handle. */
static struct fdn__pending_request **pending_bucket(fdn_peer *p, uint16_t channel, uint64_t seq)
{
    return &p->pending[(seq * FDN_MAX_CHANNELS + channel) % FDN__PENDING_BUCKETS];
}

static void unlink_pending(fdn_peer *p, struct fdn__pending_request *r)
{
    struct fdn__pending_request **slot = pending_bucket(p, r->channel, r->seq);
    while (*slot != r)
        slot = &(*slot)->next;
    *slot = r->next;
    p->pending_count--;
    fdn__timer_stop(p->node->worker, &r->timer);
}

static struct fdn__pending_request *take_pending(fdn_peer *p, uint16_t channel, uint64_t seq)
{
    struct fdn__pending_request *r = *pending_bucket(p, channel, seq);
    while (r && (r->channel != channel || r->seq != seq))
        r = r->next;
    if (r)
        unlink_pending(p, r);
    return r;
}

void fdn__peer_complete_request(fdn_peer *p, uint16_t channel, uint64_t seq, fdn_msg *resp)
{
    struct fdn__pending_request *r = take_pending(p, channel, seq);
    if (!r) { /* cancelled or timed out: nobody waits for it */
        p->rx[channel].drops++;
        fdn_msg_free(resp);
        return;
    }
    fdn_histogram_record(&p->rx[r->channel].rtt, fdn_now_ns() - r->start_ns);
    r->fn(p, 0, resp, r->arg);
    free(r);
}

static int request_timeout(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct fdn__pending_request *r = t->arg;
    fdn_peer *p = r->peer;
    unlink_pending(p, r);
    r->fn(p, -ETIMEDOUT, NULL, r->arg);
    free(r);
    return FDN_TASK_DONE;
}

int fdn_request(fdn_peer *p, int channel, fdn_msg *req, uint64_t timeout_ns, fdn_response_fn fn,
                void *arg, uint64_t *id_out)
{
    if (!fn)
        return FDN_ERR(-EINVAL, "fdn_request needs a callback");
    struct fdn__pending_request *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    uint64_t seq;
    int rc = fdn__peer_send(p, channel, req, FDN__FRAME_REQUEST, 0, &seq);
    if (rc < 0) {
        free(r);
        return rc;
    }
    *r = (struct fdn__pending_request){
        .id = ++p->node->next_request_id, .seq = seq, .channel = (uint16_t)channel,
        .start_ns = fdn_now_ns(), .fn = fn, .arg = arg, .peer = p,
    };
    fdn_timer_init(&r->timer, request_timeout, r, FDN_PRIO_HIGHEST);
    if (timeout_ns)
        fdn_timer_arm(p->node->worker, &r->timer, timeout_ns);
    struct fdn__pending_request **slot = pending_bucket(p, r->channel, seq);
    r->next = *slot;
    *slot = r;
    p->pending_count++;
    if (id_out)
        *id_out = r->id;
    return 0;
}

/* A scan: cancelling is rare, and the handle is not what responses name. */
int fdn_request_cancel(fdn_peer *p, uint64_t id)
{
    for (int b = 0; b < FDN__PENDING_BUCKETS; b++) {
        for (struct fdn__pending_request *r = p->pending[b]; r; r = r->next) {
            if (r->id != id)
                continue;
            unlink_pending(p, r);
            r->fn(p, -ECANCELED, NULL, r->arg);
            free(r);
            return 0;
        }
    }
    return -ENOENT;
}

int fdn_respond(fdn_peer *p, int channel, uint64_t request_id, fdn_msg *resp)
{
    return fdn__peer_send(p, channel, resp, FDN__FRAME_RESPONSE, request_id, NULL);
}

void fdn__peer_fail_requests(fdn_peer *p)
{
    fdn_worker *w = p->node->worker;
    for (int b = 0; b < FDN__PENDING_BUCKETS; b++) {
        struct fdn__pending_request *r;
        while ((r = p->pending[b])) {
            p->pending[b] = r->next;
            fdn__timer_stop(w, &r->timer);
            r->fn(p, -ENOTCONN, NULL, r->arg);
            free(r);
        }
    }
    p->pending_count = 0;
}
