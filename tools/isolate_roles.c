/* The two roles of fdn-isolate: the server, which answers pings and consumes
 * (or, in the stalled scenario, refuses to consume) the bulk stream, and the
 * client, which sends both and measures. Each role owns one
 * application-driven, busy-polling worker, pinned to the one CPU the parent
 * left in its affinity mask, and drives it itself with fdn_worker_progress().
 *
 * Pings. One is outstanding at a time: the next is sent one period after the
 * previous was sent, or at once when its answer came later than that, so a
 * stall lowers the number of pings (reported) instead of piling them up.
 * Latency is counted from the moment the client tried to send the ping:
 * when the ping's channel is full (the fifo scenario), the wait for room in
 * the queue counts, as it would for an application.
 *
 * Bulk. The client keeps the data channel's send queue full: it sends until
 * -EAGAIN and asks fdn_send_notify() to call it back when there is room.
 * Each bulk message starts with a sequence number that the server checks.
 *
 * Throughput. Every ping answer carries the bytes the server has handed to
 * its bulk handler so far; the client divides the growth of that counter
 * between the first and the last answer of the window by the time between
 * them, so the figure is what the server confirmed, not what was sent. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <fdn/error.h>
#include <fdn/node.h>
#include <fdn/runtime.h>
#include <fdn/worker.h>

#include "isolate.h"

/* Shared by every node of every run: both ends must agree on it. */
static const uint8_t cluster_secret[] = "fdn-isolate head-of-line bench";

/* Offsets in a ping answer (64 bytes): the server's counters. */
#define PONG_BULK_BYTES 8
#define PONG_BULK_MSGS 16

/* How long a role waits for its peer before giving up. */
#define CONNECT_TIMEOUT_NS 20000000000ull

static int report_error(const char *role, const char *what, int rc)
{
    const char *detail = fdn_errmsg();
    fprintf(stderr, "fdn-isolate %s: %s: %s%s%s\n", role, what, fdn_strerror(rc),
            *detail ? ": " : "", detail);
    return rc;
}

/* ---- The worker and the node, the same for both roles -------------------- */

struct role_env {
    fdn_runtime *rt;
    fdn_worker *w;
    fdn_node *node;
    bool attached;
};

static int env_start(struct role_env *env, const struct iso_params *p, const char *role)
{
    fdn_runtime_config rc_cfg = {
        .workers = 1,
        .app_driven_workers = 1,
        .idle = FDN_IDLE_BUSY_POLL,
        .pool = {.max_bytes = iso_pool_bytes(p)},
    };
    int rc = fdn_runtime_create(&rc_cfg, &env->rt);
    if (rc < 0)
        return report_error(role, "runtime", rc);
    env->w = fdn_runtime_worker(env->rt, 0);
    rc = fdn_worker_attach(env->w);
    if (rc < 0)
        return report_error(role, "attach worker", rc);
    env->attached = true;
    /* Only the data channel is resized: bulk messages must fit it, and its
     * window and queue are counted in bulk messages (see isolate.h). */
    fdn_node_config cfg = {
        .worker = env->w,
        .secret = cluster_secret,
        .secret_len = sizeof cluster_secret,
        .data = {.max_message = p->bulk_size,
                 .credit_window = iso_data_window(p),
                 .max_queued = ISO_DATA_QUEUE_MESSAGES},
        /* --transport names the transport measured: tcp:// must stay TCP
         * on loopback too (shm is asked for as shm://). */
        .no_same_host_shm = true,
    };
    rc = fdn_node_create(&cfg, &env->node);
    if (rc < 0)
        return report_error(role, "node", rc);
    return 0;
}

static void env_stop(struct role_env *env)
{
    fdn_node_destroy(env->node);
    env->node = NULL;
    if (env->attached)
        fdn_worker_detach(env->w);
    fdn_runtime_destroy(env->rt);
    env->rt = NULL;
}

/* One pass of the worker; false (with the error reported) when it failed. */
static bool progress(struct role_env *env, const char *role)
{
    int rc = fdn_worker_progress(env->w);
    if (rc < 0) {
        report_error(role, "worker progress", rc);
        return false;
    }
    return true;
}

static uint64_t seconds_to_ns(double s) { return (uint64_t)(s * 1e9); }

static uint64_t load_u64(const fdn_msg *m, size_t offset)
{
    uint64_t v = 0;
    if (fdn_msg_len(m) >= offset + sizeof v)
        memcpy(&v, fdn_msg_data(m) + offset, sizeof v);
    return v;
}

static void store_u64(fdn_msg *m, size_t offset, uint64_t v)
{
    if (fdn_msg_len(m) >= offset + sizeof v)
        memcpy(fdn_msg_data(m) + offset, &v, sizeof v);
}

/* ---- Server -------------------------------------------------------------- */

struct server {
    struct role_env env;
    const struct iso_params *params;
    fdn_peer *peer;
    bool peer_gone;
    int error;
    uint64_t next_seq;
    struct iso_server_result result;
};

static void server_on_bulk(fdn_peer *peer, int channel, fdn_msg *msg, void *arg)
{
    (void)peer;
    (void)channel;
    struct server *s = arg;
    uint64_t seq = fdn_msg_len(msg) >= sizeof seq ? load_u64(msg, 0) : UINT64_MAX;
    if (seq != s->next_seq)
        s->result.seq_errors++;
    s->next_seq = seq + 1;
    s->result.bulk_msgs++;
    s->result.bulk_bytes += fdn_msg_total_len(msg);
    fdn_msg_free(msg);
}

/* Echoes the ping with the server's bulk counters in it. */
static void server_on_ping(fdn_peer *peer, int channel, uint64_t id, fdn_msg *req, void *arg)
{
    struct server *s = arg;
    store_u64(req, PONG_BULK_BYTES, s->result.bulk_bytes);
    store_u64(req, PONG_BULK_MSGS, s->result.bulk_msgs);
    s->result.requests++;
    int rc = fdn_respond(peer, channel, id, req);
    if (rc == -EAGAIN)
        fdn_msg_free(req); /* still ours; the client's ping will time out */
    if (rc < 0) {
        s->result.respond_errors++;
        report_error("server", "respond", rc);
    }
}

static void server_on_up(fdn_peer *peer, void *arg)
{
    struct server *s = arg;
    if (s->peer) { /* one client per server: anything else is a stray */
        fdn_peer_close(peer);
        return;
    }
    s->peer = peer;
    /* The stalled consumer: nothing on data is delivered, ever, so the
     * sender runs out of credit and only the other channels can move. */
    if (s->params->scenario == ISO_STALLED) {
        int rc = fdn_channel_pause(peer, FDN_CHANNEL_DATA, true);
        if (rc < 0)
            s->error = report_error("server", "pause data", rc);
    }
}

/* The client decides when the run ends, so its leaving is never an error
 * here, whatever the reason says: a client that failed reports it itself.
 * (An orderly close can arrive as -ECONNRESET: see the report.) */
static void server_on_down(fdn_peer *peer, int reason, void *arg)
{
    (void)reason;
    struct server *s = arg;
    if (peer != s->peer)
        return;
    s->peer = NULL;
    s->peer_gone = true;
}

static int server_set_handlers(struct server *s)
{
    fdn_node *n = s->env.node;
    fdn_node_events ev = {.peer_up = server_on_up, .peer_down = server_on_down, .arg = s};
    fdn_node_set_events(n, &ev);
    int rc = fdn_channel_set_handler(n, FDN_CHANNEL_DATA, server_on_bulk, s);
    if (rc == 0)
        rc = fdn_channel_set_request_handler(n, FDN_CHANNEL_COORDINATION, server_on_ping, s);
    if (rc == 0) /* the fifo scenario's pings */
        rc = fdn_channel_set_request_handler(n, FDN_CHANNEL_DATA, server_on_ping, s);
    return rc < 0 ? report_error("server", "handlers", rc) : 0;
}

static int server_listen(struct server *s, const char *host, int report_fd)
{
    char addr[128], bound[128];
    /* A host is listened on over TCP, any port; a whole address as it is. */
    if (strstr(host, "://"))
        snprintf(addr, sizeof addr, "%s", host);
    else
        snprintf(addr, sizeof addr, "tcp://%s:0", host);
    int index = fdn_node_listen(s->env.node, addr);
    if (index < 0)
        return report_error("server", addr, index);
    int rc = fdn_node_listen_addr(s->env.node, index, bound, sizeof bound);
    if (rc < 0)
        return report_error("server", "listen address", rc);
    return iso_write_listen(report_fd, bound);
}

/* Serves until the client has come and gone, bounded by the scenario's
 * length plus a generous margin in case the client never shows up. */
static int server_loop(struct server *s)
{
    uint64_t deadline = fdn_now_ns() + CONNECT_TIMEOUT_NS + ISO_WARMUP_NS +
                        seconds_to_ns(s->params->duration_s) + 2 * ISO_PING_TIMEOUT_NS;
    while (!s->peer_gone && !s->error) {
        if (!progress(&s->env, "server"))
            return -EIO;
        if (fdn_now_ns() > deadline) {
            fprintf(stderr, "fdn-isolate server: no client, or it never left\n");
            return -ETIMEDOUT;
        }
    }
    return s->error;
}

int iso_run_server(const struct iso_params *p, const char *listen_host, int report_fd)
{
    struct server s = {.params = p};
    int rc = env_start(&s.env, p, "server");
    if (rc == 0)
        rc = server_set_handlers(&s);
    if (rc == 0)
        rc = server_listen(&s, listen_host, report_fd);
    if (rc == 0)
        rc = server_loop(&s);
    env_stop(&s.env);
    if (rc == 0)
        rc = iso_write_server_result(report_fd, &s.result);
    return rc;
}

/* ---- Client -------------------------------------------------------------- */

struct client {
    struct role_env env;
    const struct iso_params *params;
    fdn_peer *peer;
    bool peer_up, peer_gone;
    bool closing;              /* the client is ending the connection itself */
    int error;
    int ping_channel;
    bool bulk_on;

    /* The ping under way: at most one. */
    bool ping_outstanding;
    fdn_msg *blocked_ping;     /* refused with -EAGAIN; waiting for room */
    uint64_t ping_tried_ns;    /* when the client first tried to send it */
    uint64_t next_ping_ns;
    uint64_t period_ns;
    uint64_t ping_seq;
    fdn_task ping_retry;

    /* The bulk stream. */
    fdn_msg *pending_bulk;     /* refused with -EAGAIN; sent first next time */
    uint64_t bulk_seq;
    fdn_task bulk_refill;

    /* The measurement window and the server's confirmations in it. */
    uint64_t window_start_ns, window_end_ns;
    bool have_first_pong;
    uint64_t first_pong_ns, first_pong_bytes, last_pong_ns, last_pong_bytes;
    struct iso_client_result *result;
};

static void client_fail(struct client *c, const char *what, int rc)
{
    if (!c->error)
        c->error = report_error("client", what, rc);
}

static bool client_ready(const struct client *c) { return c->peer_up && !c->peer_gone; }

static int bulk_make(struct client *c, fdn_msg **out)
{
    int rc = fdn_msg_alloc(fdn_worker_pool(c->env.w), c->params->bulk_size, out);
    if (rc < 0)
        return rc;
    /* Only the sequence number is written: filling a megabyte per message
     * would measure memset, not the messaging layer. */
    store_u64(*out, 0, c->bulk_seq++);
    return 0;
}

/* Sends bulk messages until the data channel is full, then asks to be called
 * back when it has room again. A ping waiting for room in the same channel
 * (fifo) goes first: the refill stands aside until it is in. */
static void bulk_fill(struct client *c)
{
    if (!c->bulk_on || c->blocked_ping || !client_ready(c) || c->error)
        return;
    for (;;) {
        int rc = c->pending_bulk ? 0 : bulk_make(c, &c->pending_bulk);
        if (rc == 0)
            rc = fdn_send(c->peer, FDN_CHANNEL_DATA, c->pending_bulk);
        if (rc == -EAGAIN)
            break;
        if (rc < 0) {
            client_fail(c, c->pending_bulk ? "bulk send" : "bulk message", rc);
            c->pending_bulk = NULL; /* fdn_send took it, whatever it returned */
            return;
        }
        c->pending_bulk = NULL;
    }
    int rc = fdn_send_notify(c->peer, FDN_CHANNEL_DATA, &c->bulk_refill);
    if (rc < 0)
        client_fail(c, "send notify", rc);
}

static int bulk_refill_task(fdn_worker *w, fdn_task *t)
{
    (void)w;
    bulk_fill(t->arg);
    return FDN_TASK_DONE;
}

static bool in_window(const struct client *c, uint64_t t)
{
    return t >= c->window_start_ns && t < c->window_end_ns;
}

static void note_pong(struct client *c, const fdn_msg *resp, uint64_t now)
{
    uint64_t bytes = load_u64(resp, PONG_BULK_BYTES);
    if (!c->have_first_pong) {
        c->have_first_pong = true;
        c->first_pong_ns = now;
        c->first_pong_bytes = bytes;
    }
    c->last_pong_ns = now;
    c->last_pong_bytes = bytes;
}

static void on_pong(fdn_peer *peer, int status, fdn_msg *resp, void *arg)
{
    (void)peer;
    struct client *c = arg;
    uint64_t now = fdn_now_ns();
    bool counted = in_window(c, c->ping_tried_ns);
    if (status == 0 && counted) {
        fdn_histogram_record(&c->result->one_way_ns, (now - c->ping_tried_ns) / 2);
        note_pong(c, resp, now);
    } else if (status == -ETIMEDOUT) {
        c->result->ping_timeouts += counted;
    } else if (status < 0 && !c->closing) {
        client_fail(c, "ping", status);
    }
    fdn_msg_free(resp);
    c->ping_outstanding = false;
    uint64_t scheduled = c->ping_tried_ns + c->period_ns;
    c->next_ping_ns = scheduled > now ? scheduled : now;
}

/* Hands the ping to Foundation; on -EAGAIN keeps it and waits for room. */
static void ping_submit(struct client *c, fdn_msg *ping)
{
    int rc = fdn_request(c->peer, c->ping_channel, ping, ISO_PING_TIMEOUT_NS, on_pong, c, NULL);
    if (rc == -EAGAIN) {
        c->blocked_ping = ping;
        /* Replaces the bulk stream's notification on a shared channel;
         * bulk_fill() asks again once the ping is in. */
        rc = fdn_send_notify(c->peer, c->ping_channel, &c->ping_retry);
        if (rc < 0)
            client_fail(c, "send notify", rc);
        return;
    }
    bool was_blocked = c->blocked_ping != NULL;
    c->blocked_ping = NULL;
    if (rc < 0)
        client_fail(c, "ping request", rc);
    else if (was_blocked)
        bulk_fill(c);
}

static int ping_retry_task(fdn_worker *w, fdn_task *t)
{
    (void)w;
    struct client *c = t->arg;
    if (c->blocked_ping && client_ready(c))
        ping_submit(c, c->blocked_ping);
    return FDN_TASK_DONE;
}

static void ping_start(struct client *c, uint64_t now)
{
    fdn_msg *ping;
    int rc = fdn_msg_alloc(fdn_worker_pool(c->env.w), ISO_PING_BYTES, &ping);
    if (rc < 0) {
        client_fail(c, "ping message", rc);
        return;
    }
    memset(fdn_msg_data(ping), 0, ISO_PING_BYTES);
    store_u64(ping, 0, c->ping_seq++);
    c->ping_outstanding = true;
    c->ping_tried_ns = now;
    ping_submit(c, ping);
}

static void client_on_up(fdn_peer *peer, void *arg)
{
    struct client *c = arg;
    if (peer == c->peer)
        c->peer_up = true;
}

static void client_on_down(fdn_peer *peer, int reason, void *arg)
{
    struct client *c = arg;
    if (peer != c->peer)
        return;
    c->peer_gone = true;
    if (!c->error && !c->closing)
        c->error = report_error("client", "connection to the server",
                                reason < 0 ? reason : -ECONNRESET);
}

static int client_connect(struct client *c, const char *addr)
{
    fdn_node_events ev = {.peer_up = client_on_up, .peer_down = client_on_down, .arg = c};
    fdn_node_set_events(c->env.node, &ev);
    int rc = fdn_node_connect(c->env.node, addr, &c->peer);
    if (rc < 0)
        return report_error("client", addr, rc);
    uint64_t deadline = fdn_now_ns() + CONNECT_TIMEOUT_NS;
    while (!c->peer_up && !c->error) {
        if (!progress(&c->env, "client"))
            return -EIO;
        if (fdn_now_ns() > deadline)
            return report_error("client", "handshake with the server", -ETIMEDOUT);
    }
    return c->error;
}

/* Pings on schedule until the window closes and the last ping is answered. */
static int client_loop(struct client *c)
{
    while (!c->error) {
        if (!progress(&c->env, "client"))
            return -EIO;
        uint64_t now = fdn_now_ns();
        if (c->ping_outstanding)
            continue;
        if (now >= c->window_end_ns)
            break;
        if (now >= c->next_ping_ns)
            ping_start(c, now);
    }
    return c->error;
}

static void client_collect(struct client *c)
{
    struct iso_client_result *r = c->result;
    if (c->have_first_pong && c->last_pong_ns > c->first_pong_ns) {
        r->bulk_bytes = c->last_pong_bytes - c->first_pong_bytes;
        r->bulk_seconds = (double)(c->last_pong_ns - c->first_pong_ns) / 1e9;
    }
    fdn_channel_stats st;
    if (fdn_peer_channel_stats(c->peer, FDN_CHANNEL_DATA, &st) == 0) {
        r->data_credit_stalls = st.credit_stalls;
        r->data_send_eagain = st.send_eagain;
    }
}

static int client_measure(struct client *c)
{
    const struct iso_params *p = c->params;
    c->ping_channel = p->scenario == ISO_FIFO ? FDN_CHANNEL_DATA : FDN_CHANNEL_COORDINATION;
    c->period_ns = (uint64_t)(1e9 / p->ping_rate_hz);
    fdn_task_init(&c->ping_retry, ping_retry_task, c, FDN_PRIO_HIGHEST);
    fdn_task_init(&c->bulk_refill, bulk_refill_task, c, FDN_PRIO_DEFAULT);
    uint64_t now = fdn_now_ns();
    c->next_ping_ns = now;
    c->window_start_ns = now + ISO_WARMUP_NS;
    c->window_end_ns = c->window_start_ns + seconds_to_ns(p->duration_s);
    c->bulk_on = p->scenario != ISO_IDLE;
    bulk_fill(c);
    int rc = client_loop(c);
    c->bulk_on = false;
    if (rc == 0)
        client_collect(c);
    return rc;
}

/* Messages the client still holds when it stops (refused with -EAGAIN). */
static void client_release(struct client *c)
{
    fdn_msg_free(c->pending_bulk);
    fdn_msg_free(c->blocked_ping);
    c->pending_bulk = c->blocked_ping = NULL;
}

int iso_run_client(const struct iso_params *p, const char *addr, int report_fd)
{
    static struct iso_client_result result; /* 9 KiB of histogram: not on the stack */
    memset(&result, 0, sizeof result);
    fdn_histogram_reset(&result.one_way_ns);
    struct client c = {.params = p, .result = &result};
    int rc = env_start(&c.env, p, "client");
    if (rc == 0)
        rc = client_connect(&c, addr);
    if (rc == 0)
        rc = client_measure(&c);
    client_release(&c);
    c.closing = true;
    env_stop(&c.env);
    if (rc == 0)
        rc = iso_write_client_result(report_fd, &result);
    return rc;
}
