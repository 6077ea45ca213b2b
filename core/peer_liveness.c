/* Liveness of a peer's lanes: heartbeats, PINGs, and the idle timeout that
 * declares a silent lane dead. Apart from the data path: it runs only from
 * a timer, every keepalive_ns / 2 per lane, and reads only what the data
 * path counts anyway.
 *
 * Every lane that is up checks, every keepalive_ns / 2, whether it has
 * received anything since its last check. bytes_received, which receiving
 * counts anyway, is the stamp: the data path pays nothing more, and no
 * timer is armed per frame. A lane that has received nothing for
 * keepalive_ns sends a PING (the peer answers PONG on the same lane; any
 * byte counts). So does a lane that has sent nothing for that long: a lane
 * that only streams one way receives nothing but PONGs, and its own PING
 * may wait behind a megabyte in flight on a slow link, so the receiving
 * end's PINGs are what keep it alive. A lane that has received nothing for
 * idle_timeout_ns is dead, as a silent partition leaves it: it says CLOSE
 * "idle timeout" (best effort: the path may be gone) and closes its
 * transport, and on_closed resumes the session as after any lost
 * connection. Each end checks on its own; a CLOSE "idle timeout" received
 * is a loss to resume from too, not a goodbye.
 *
 * A check that runs over keepalive_ns late finds the worker was not running
 * (stopped, descheduled, a long task): the silence it measured was its own,
 * not the peer's. Whatever arrived meanwhile is read in the same pass before
 * the check runs (a pass reaps completions before it runs tasks), and more
 * may be on its way; so the lane's clock restarts and it pings at once,
 * rather than close a connection that may well be fine. A worker stalled for
 * longer than the peer's idle_timeout_ns finds its connections closed by the
 * peer when it wakes, and resumes. */
#include <inttypes.h>
#include <stdio.h>

#include "base/log.h"
#include "core/peer_internal.h"
#include "core/worker_internal.h"

void fdn__lane_liveness_start(struct fdn__lane *l)
{
    fdn_node *n = l->peer->node;
    uint64_t now = fdn_now_ns();
    l->hb_seen_bytes = l->bytes_received;
    l->hb_quiet_since = now;
    l->hb_seen_sent = l->bytes_sent;
    l->hb_mute_since = now;
    l->hb_last_check = now;
    l->hb_last_ping = now;
    fdn_timer_arm(n->worker, &l->heartbeat, n->keepalive_ns / 2);
}

static void send_ping(struct fdn__lane *l, uint64_t now)
{
    if (fdn__lane_send_ctrl(l, FDN__FRAME_PING, 0, l->pings_sent + 1) < 0)
        return;   /* the control queue is full: the next check pings */
    l->hb_last_ping = now;
    l->pings_sent++;
    l->peer->node->stats.pings_sent++;
}

/* Closes a lane nothing came from for quiet_ns; on_closed says so. */
static void idle_timeout(struct fdn__lane *l, uint64_t quiet_ns)
{
    l->peer->node->stats.idle_timeouts++;
    snprintf(l->end_why, sizeof l->end_why, "idle timeout: nothing received for %" PRIu64 " ms",
             quiet_ns / 1000000);
    fdn__lane_send_ctrl(l, FDN__FRAME_CLOSE, 0, FDN__CLOSE_IDLE_TIMEOUT);
    fdn__lane_close_transport(l);
}

static int heartbeat_fired(fdn_worker *w, fdn_task *t)
{
    struct fdn__lane *l = t->arg;
    fdn_node *n = l->peer->node;
    if (!l->up || l->dying || l->close_sent || fdn__peer_closing(l->peer))
        return FDN_TASK_DONE;
    uint64_t now = fdn_now_ns();
    if (now - l->hb_last_check > n->keepalive_ns) {
        n->stats.heartbeat_stalls++;
        fdn__peer_say_end(l->peer, l, FDN_LOG_DEBUG,
                          "liveness check %" PRIu64 " ms late (the worker did not run): the "
                          "lane's clock restarts", (now - l->hb_last_check) / 1000000);
        l->hb_seen_bytes = l->bytes_received;
        l->hb_quiet_since = now;
        send_ping(l, now);
    } else if (l->bytes_received != l->hb_seen_bytes) {
        l->hb_seen_bytes = l->bytes_received;
        l->hb_quiet_since = now;
    }
    if (l->bytes_sent != l->hb_seen_sent) {
        l->hb_seen_sent = l->bytes_sent;
        l->hb_mute_since = now;
    }
    l->hb_last_check = now;
    uint64_t quiet = now - l->hb_quiet_since;
    if (quiet >= n->idle_timeout_ns) {
        idle_timeout(l, quiet);
        return FDN_TASK_DONE;
    }
    if ((quiet >= n->keepalive_ns || now - l->hb_mute_since >= n->keepalive_ns) &&
        now - l->hb_last_ping >= n->keepalive_ns)
        send_ping(l, now);
    fdn_timer_arm(w, &l->heartbeat, n->keepalive_ns / 2);
    return FDN_TASK_DONE;
}

void fdn__lane_liveness_init(struct fdn__lane *l)
{
    fdn_timer_init(&l->heartbeat, heartbeat_fired, l, FDN_PRIO_HIGHEST);
}
