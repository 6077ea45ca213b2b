/* fdn-perf clients: lat (ping-pong, one message in flight) and bw (one-way
 * streaming, optionally --verify: numbered and checksummed, perf_verify.h),
 * each framed by BEGIN and, for bw, STATS requests to the server
 * (perf_proto.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <fdn/error.h>

#include "perf.h"
#include "perf_proto.h"
#include "transport/shm_internal.h"

#define SECOND_NS (1000ull * 1000 * 1000)
#define CONNECT_TIMEOUT_NS (10 * SECOND_NS)
#define BEGIN_TIMEOUT_NS (10 * SECOND_NS)
/* STATS waits for the server to drain what is in flight: a credit window and
 * the send queue, at worst seconds on a slow link. */
#define STATS_TIMEOUT_NS (60 * SECOND_NS)
/* A ping whose echo has not come back by then is lost: fail, do not hang. */
#define ECHO_TIMEOUT_NS (5 * SECOND_NS)

struct client {
    struct perf_env env;
    struct perf_options *o;     /* a copy: transport becomes the one in use */
    fdn_peer *peer;
    int channel;
    bool settled;        /* the peer came up or went down */
    bool up, down;
    int down_reason;
    uint64_t bw_checks;  /* bw_finished calls: it reads the clock on some */
};

/* ---- Connection ------------------------------------------------------------- */

static void on_peer_up(fdn_peer *peer, void *arg)
{
    struct client *c = arg;
    (void)peer;
    c->up = c->settled = true;
}

/* A session that was up and ends says why, and what it could not deliver:
 * the server gone past --session-timeout (-ETIMEDOUT), or restarted as a
 * new incarnation (-ECONNRESET). */
static void on_peer_down(fdn_peer *peer, int reason, void *arg)
{
    struct client *c = arg;
    c->down = c->settled = true;
    c->down_reason = reason;
    if (!c->up || reason == 0)   /* never up, or an orderly close */
        return;
    uint64_t undelivered = 0;
    for (int ch = 0; ch < PERF_NUM_CHANNELS; ch++) {
        fdn_channel_stats st;
        if (fdn_peer_channel_stats(peer, ch, &st) == 0)
            undelivered += st.undelivered_msgs;
    }
    fprintf(stderr, "fdn-perf: session with %s ended: %s; %" PRIu64
            " reliable messages undelivered\n", c->o->addr,
            reason ? fdn_strerror(reason) : "closed by the server", undelivered);
}

/* The peer is up once its first lane is; the others (the data lane) follow
 * a moment later. Measuring starts once they are all up, so the first
 * messages do not fall back to copies (fdn_peer_msg_alloc) or wait for a
 * lane. Bounded: a lane that does not come leaves its channels' messages to
 * the fallback, counted in the zero-copy line. */
static void wait_lanes_up(struct client *c)
{
    uint64_t deadline = fdn_now_ns() + CONNECT_TIMEOUT_NS;
    for (;;) {
        if (fdn_peer_lanes_up(c->peer) || c->down || perf_stop_requested ||
            fdn_now_ns() > deadline)
            return;
        if (fdn_worker_progress(c->env.w) == 0)
            fdn_worker_wait(c->env.w, 1000000);
    }
}

static int connect_peer(struct client *c)
{
    fdn_node_events ev = {.peer_up = on_peer_up, .peer_down = on_peer_down, .arg = c};
    fdn_node_set_events(c->env.node, &ev);
    int rc = fdn_node_connect(c->env.node, c->o->addr, &c->peer);
    if (rc < 0)
        return perf_fail(c->o->addr, rc);
    rc = perf_drive_until(&c->env, &c->settled, CONNECT_TIMEOUT_NS, true);
    if (rc == 0 && c->down)
        rc = c->down_reason ? c->down_reason : -ECONNRESET;
    if (rc < 0) {
        char what[300];
        snprintf(what, sizeof what, "cannot connect to %s", c->o->addr);
        perf_fail(what, rc);
        /* A server refuses a wrong secret with a bare close: say what it
         * most likely means. */
        if (rc == -ECONNABORTED || rc == -EACCES || rc == -ECONNRESET)
            fprintf(stderr, "fdn-perf: the server closed the connection during the handshake; "
                            "do both ends use the same cluster secret (--secret-file)?\n");
        return rc;
    }
    wait_lanes_up(c);
    /* Report what carries the traffic: a tcp:// address of this host is
     * reached through shm unless --transport tcp said otherwise. */
    c->o->transport = fdn_peer_transport(c->peer);
    return 0;
}

/* ---- Control requests -------------------------------------------------------- */

struct control_call {
    bool done;
    int status;
    struct perf_ctl_reply reply;
    uint64_t done_ns;
};

static void on_control_reply(fdn_peer *peer, int status, fdn_msg *resp, void *arg)
{
    struct control_call *call = arg;
    (void)peer;
    call->done_ns = fdn_now_ns();
    call->status = status;
    if (resp) {
        if (resp->next || !perf_ctl_reply_decode(fdn_msg_data(resp), fdn_msg_len(resp),
                                                 &call->reply))
            call->status = -EBADMSG;
        else if (call->reply.status < 0)
            call->status = call->reply.status;
        fdn_msg_free(resp);
    }
    call->done = true;
}

/* Sends a control request and waits for its reply (a stop signal ends the
 * wait only when interruptible). The request is cancelled on any early
 * return, so its callback never outlives *call. */
static int control_call(struct client *c, const struct perf_ctl_request *req, uint64_t timeout_ns,
                        bool interruptible, struct control_call *call)
{
    *call = (struct control_call){0};
    fdn_msg *m;
    int rc = fdn_msg_alloc(fdn_worker_pool(c->env.w), PERF_CTL_REQUEST_SIZE, &m);
    if (rc < 0)
        return rc;
    perf_ctl_request_encode(req, fdn_msg_data(m));
    uint64_t id;
    while ((rc = fdn_request(c->peer, FDN_CHANNEL_COORDINATION, m, timeout_ns, on_control_reply,
                             call, &id)) == -EAGAIN)
        fdn_worker_progress(c->env.w);
    if (rc < 0)
        return rc;
    /* The request's own timeout ends the wait; the margin only guards it. */
    rc = perf_drive_until(&c->env, &call->done, timeout_ns + SECOND_NS, interruptible);
    if (rc < 0) {
        fdn_request_cancel(c->peer, id);
        return rc;
    }
    return call->status;
}

static int begin_run(struct client *c, enum perf_ctl_mode mode)
{
    struct perf_ctl_request req = {
        .op = PERF_CTL_BEGIN,
        .mode = (uint8_t)mode,
        .channel = (uint16_t)c->channel,
        .arg = c->o->size,
    };
    struct control_call call;
    int rc = control_call(c, &req, BEGIN_TIMEOUT_NS, true, &call);
    if (rc < 0)
        return perf_fail("the server did not start the run", rc);
    return 0;
}

/* ---- Messages ---------------------------------------------------------------- */

/* Messages the process has lent by reference so far (shm loans): each one
 * crossed with no copy. */
static uint64_t loans_so_far(void)
{
    struct fdn__shm_stats st;
    fdn__shm_stats_get(&st);
    return st.refs_sent;
}

/* A message of --size bytes with a recognisable pattern (never sent as
 * uninitialised memory), built the documented way: fdn_peer_msg_alloc, so
 * over shm it crosses by reference, with no copy. */
static int make_payload(struct client *c, fdn_msg **out)
{
    int rc = fdn_peer_msg_alloc(c->peer, c->channel, c->o->size, out);
    if (rc < 0)
        return perf_fail("cannot allocate a message", rc);
    uint8_t *d = fdn_msg_data(*out);
    for (size_t i = 0; i < c->o->size; i++)
        d[i] = (uint8_t)(i * 131 + 7);
    return 0;
}

/* A send the channel refused for a reason other than -EAGAIN. */
static int send_failed(const struct client *c, int rc)
{
    if (rc == -EMSGSIZE) {
        fprintf(stderr,
                "fdn-perf: --size %" PRIu64 " is over channel %s's largest message "
                "(use --channel perf or data for large messages)\n",
                c->o->size, c->o->channel);
        return PERF_EXIT_USAGE;
    }
    perf_fail("send", rc);
    return PERF_EXIT_RUNTIME;
}

/* ---- lat: ping-pong ------------------------------------------------------------ */

struct lat_state {
    struct client *c;
    struct perf_lat_result *res;
    uint64_t round_trips;     /* completed, warm-up included */
    uint64_t measure_end_ns;  /* with --duration: set when warm-up ends */
    uint64_t seq;             /* sequence number of the ping in flight */
    uint64_t sent_ns;
    fdn_msg *unsent;          /* refused with -EAGAIN; sent again from the loop */
    bool done;
    int error;
};

static bool lat_finished(const struct lat_state *st, uint64_t now)
{
    const struct perf_options *o = st->c->o;
    if (perf_stop_requested)
        return true;
    if (o->iters)
        return st->res->rtt.count >= o->iters;
    return st->round_trips >= o->warmup && now >= st->measure_end_ns;
}

static void lat_transmit(struct lat_state *st, fdn_msg *m)
{
    int rc = fdn_send(st->c->peer, st->c->channel, m);
    if (rc == -EAGAIN) {
        st->unsent = m;
    } else if (rc < 0) {
        st->error = rc;
        st->done = true;
    }
}

/* Numbers the ping and starts its clock (a refused ping keeps both: its
 * wait for the channel is part of its latency). */
static void lat_send(struct lat_state *st, fdn_msg *m)
{
    st->res->pings++;
    st->seq++;
    if (fdn_msg_len(m) >= sizeof st->seq)
        memcpy(fdn_msg_data(m), &st->seq, sizeof st->seq);
    st->sent_ns = fdn_now_ns();
    lat_transmit(st, m);
}

/* The next ping: a buffer from fdn_peer_msg_alloc, which over shm is in
 * the lane's shared pool and crosses by reference. Only its sequence
 * number is written: the rest is what the buffer held, an earlier ping's
 * pattern or zeros (a new pool's pages), never another message's bytes, so
 * the ping measures moving a message rather than writing one. A buffer of
 * the worker's pool (the fallback) gets the echo's bytes. The echo is
 * freed. NULL (and the run stopped) when there is no buffer. */
static fdn_msg *next_ping(struct lat_state *st, fdn_msg *echo)
{
    fdn_msg *m;
    int rc = fdn_peer_msg_alloc(st->c->peer, st->c->channel, st->c->o->size, &m);
    if (rc < 0) {
        fdn_msg_free(echo);
        st->error = rc;
        st->done = true;
        return NULL;
    }
    if (m->pool == fdn_worker_pool(st->c->env.w))
        memcpy(fdn_msg_data(m), fdn_msg_data(echo), fdn_msg_len(m));
    fdn_msg_free(echo);
    return m;
}

/* The echo is the whole message as sent: same length, same sequence number. */
static bool echo_matches(const struct lat_state *st, const fdn_msg *m)
{
    if (fdn_msg_total_len(m) != st->c->o->size)
        return false;
    uint64_t seq;
    if (m->next || fdn_msg_len(m) < sizeof seq)
        return true; /* too small to carry the number; the length had to match */
    memcpy(&seq, fdn_msg_data(m), sizeof seq);
    return seq == st->seq;
}

/* An echo arrived: measure it and send the same message again at once. */
static void on_echo(fdn_peer *peer, int channel, fdn_msg *m, void *arg)
{
    struct lat_state *st = arg;
    uint64_t now = fdn_now_ns();
    (void)peer;
    if (channel != st->c->channel || st->done) {
        fdn_msg_free(m);
        return;
    }
    if (!echo_matches(st, m)) {
        fdn_msg_free(m);
        st->error = -EBADMSG;
        st->done = true;
        return;
    }
    st->round_trips++;
    if (st->round_trips > st->c->o->warmup)
        fdn_histogram_record(&st->res->rtt, now - st->sent_ns);
    else if (st->round_trips == st->c->o->warmup)
        st->measure_end_ns = now + st->c->o->duration_ns;
    if (lat_finished(st, now)) {
        fdn_msg_free(m);
        st->done = true;
        return;
    }
    /* The echo is the server's copy; the next ping is a message of ours
     * again, so that each one can cross without a copy. */
    fdn_msg *ping = next_ping(st, m);
    if (ping)
        lat_send(st, ping);
}

/* Drives the worker until the run is done, resending a refused ping and
 * failing when an echo never comes or the server goes away. */
static void lat_drive(struct lat_state *st)
{
    struct client *c = st->c;
    for (unsigned polls = 1; !st->done; polls++) {
        int rc = fdn_worker_progress(c->env.w);
        if (rc < 0) {
            st->error = rc;
            return;
        }
        if (st->unsent) {
            fdn_msg *m = st->unsent;
            st->unsent = NULL;
            lat_transmit(st, m);
        }
        if (c->down) {
            st->error = -ECONNRESET;
            return;
        }
        if (polls % 256 == 0 && (perf_stop_requested ||
                                 fdn_now_ns() - st->sent_ns > ECHO_TIMEOUT_NS)) {
            st->error = perf_stop_requested ? 0 : -ETIMEDOUT;
            return;
        }
    }
}

static int run_lat(struct client *c)
{
    static struct perf_lat_result res; /* 9 KiB of buckets: not on the stack */
    fdn_histogram_reset(&res.rtt);
    res.warmup = c->o->warmup;
    res.pings = 0;
    struct lat_state st = {.c = c, .res = &res};
    uint64_t loans = loans_so_far();
    fdn_channel_set_handler(c->env.node, c->channel, on_echo, &st);
    int rc = begin_run(c, PERF_CTL_ECHO);
    if (rc < 0)
        return PERF_EXIT_RUNTIME;
    fdn_msg *m;
    if (make_payload(c, &m) < 0)
        return PERF_EXIT_RUNTIME;
    if (c->o->warmup == 0)
        st.measure_end_ns = fdn_now_ns() + c->o->duration_ns;
    lat_send(&st, m);
    if (!st.done)
        lat_drive(&st);
    fdn_msg_free(st.unsent);
    /* The echo in flight, if any, arrives to a handler that frees it. */
    fdn_channel_set_handler(c->env.node, c->channel, NULL, NULL);
    if (st.error == -EMSGSIZE)
        return send_failed(c, st.error);
    if (st.error < 0) {
        perf_fail(st.error == -EBADMSG ? "echo does not match the ping" : "ping-pong", st.error);
        return PERF_EXIT_RUNTIME;
    }
    if (res.rtt.count == 0) {
        fprintf(stderr, "fdn-perf: stopped before any measured round trip\n");
        return PERF_EXIT_RUNTIME;
    }
    res.zero_copy = loans_so_far() - loans;
    perf_report_lat(c->o, &res);
    return PERF_EXIT_OK;
}

/* ---- bw: streaming ------------------------------------------------------------- */

/* The clock is read on every BW_CLOCK_EVERY-th check: a read costs about
 * as much as a small send, and the rate is the server's count over the time
 * to its confirmation, so a deadline overrun by a few sends changes no
 * figure. */
#define BW_CLOCK_EVERY 64

static bool bw_finished(struct client *c, uint64_t sent, uint64_t end_ns)
{
    if (perf_stop_requested || c->down)
        return true;
    if (c->o->iters)
        return sent >= c->o->iters;
    return ++c->bw_checks % BW_CLOCK_EVERY == 0 && fdn_now_ns() >= end_ns;
}

/* Sends one message over and over, each send a reference to it: the channel
 * treats a shared message as read-only, so this is the zero-copy path (as
 * iperf3 and ucx_perftest send one buffer repeatedly). Sends as fast as the
 * channel accepts; a full channel (-EAGAIN) means progress and retry. */
static int stream(struct client *c, fdn_msg *payload, struct perf_bw_result *r, uint64_t start_ns)
{
    uint64_t end_ns = start_ns + c->o->duration_ns;
    while (!bw_finished(c, r->sent, end_ns)) {
        int rc = fdn_send(c->peer, c->channel, fdn_msg_ref(payload));
        if (rc == 0) {
            r->sent++;
            continue;
        }
        if (rc != -EAGAIN)
            return rc; /* the channel took (and dropped) the reference */
        fdn_msg_free(payload); /* the refused reference, not ours */
        if ((rc = fdn_worker_progress(c->env.w)) < 0)
            return rc;
    }
    return c->down ? (c->down_reason ? c->down_reason : -ECONNRESET) : 0;
}

/* --verify: every message is a buffer of its own, numbered 0, 1, 2, ... and
 * checksummed (perf_verify.h), so the one-buffer zero-copy stream above does
 * not apply. A refused message keeps its number and is offered again, so
 * the numbers the server sees are exactly 0 .. sent-1. */
static int stream_verified(struct client *c, struct perf_bw_result *r, uint64_t start_ns)
{
    uint64_t end_ns = start_ns + c->o->duration_ns;
    fdn_msg *m = NULL;
    int rc;
    while (!bw_finished(c, r->sent, end_ns)) {
        if (!m) {
            rc = fdn_peer_msg_alloc(c->peer, c->channel, c->o->size, &m);
            if (rc == -ENOBUFS) { /* queued messages hold the pool: let them go */
                m = NULL;
                if ((rc = fdn_worker_progress(c->env.w)) < 0)
                    return rc;
                continue;
            }
            if (rc < 0)
                return rc;
            perf_verify_fill(fdn_msg_data(m), c->o->size, r->sent);
        }
        rc = fdn_send(c->peer, c->channel, m);
        if (rc == 0) {
            m = NULL;
            r->sent++;
            continue;
        }
        if (rc != -EAGAIN)
            return rc; /* the channel took (and dropped) the message */
        if ((rc = fdn_worker_progress(c->env.w)) < 0) {
            fdn_msg_free(m);
            return rc;
        }
    }
    fdn_msg_free(m);
    return c->down ? (c->down_reason ? c->down_reason : -ECONNRESET) : 0;
}

static int ask_server_count(struct client *c, struct perf_bw_result *r)
{
    struct perf_ctl_request req = {.op = PERF_CTL_STATS, .arg = r->sent};
    struct control_call call;
    /* Not interruptible: a run stopped by Ctrl-C still reports what the
     * server received (a second Ctrl-C kills). */
    int rc = control_call(c, &req, STATS_TIMEOUT_NS, false, &call);
    if (rc < 0)
        return perf_fail("the server did not report its count", rc);
    r->confirmed = call.reply.messages;
    r->confirmed_bytes = call.reply.bytes;
    r->server_span_ns = call.reply.span_ns;
    r->elapsed_ns = call.done_ns;
    if (!c->o->verify)
        return 0;
    if (!call.reply.has_verify)
        return perf_fail("the server's count has no --verify account", -EBADMSG);
    r->verified = true;
    r->verify = (struct perf_verify_counts){
        .delivered = call.reply.delivered,
        .lost = call.reply.lost,
        .duplicated = call.reply.duplicated,
        .reordered = call.reply.reordered,
        .corrupted = call.reply.corrupted,
    };
    return 0;
}

static int run_bw(struct client *c)
{
    struct perf_bw_result r = {0};
    if (begin_run(c, c->o->verify ? PERF_CTL_VERIFY : PERF_CTL_COUNT) < 0)
        return PERF_EXIT_RUNTIME;
    uint64_t loans = loans_so_far();
    uint64_t start_ns = fdn_now_ns();
    int rc;
    if (c->o->verify) {
        rc = stream_verified(c, &r, start_ns);
    } else {
        fdn_msg *payload;
        if (make_payload(c, &payload) < 0)
            return PERF_EXIT_RUNTIME;
        start_ns = fdn_now_ns();
        rc = stream(c, payload, &r, start_ns);
        fdn_msg_free(payload); /* ours; queued sends hold their own references */
    }
    if (rc < 0)
        return send_failed(c, rc);
    if (ask_server_count(c, &r) < 0)
        return PERF_EXIT_RUNTIME;
    r.elapsed_ns -= start_ns;
    r.zero_copy = loans_so_far() - loans;
    fdn_node_stats ns;
    fdn_node_stats_get(c->env.node, &ns);
    fdn_channel_stats cs;
    r.interrupted = ns.sessions_interrupted;
    r.resumed = ns.sessions_resumed;
    r.idle_timeouts = ns.idle_timeouts;
    if (fdn_peer_channel_stats(c->peer, c->channel, &cs) == 0)
        r.retransmitted = cs.retransmitted_msgs;
    perf_report_bw(c->o, &r);
    return perf_bw_intact(&r) ? PERF_EXIT_OK : PERF_EXIT_VERIFY;
}

/* ---- Entry -------------------------------------------------------------------- */

static int run(struct client *c)
{
    c->channel = fdn_channel_lookup(c->env.node, c->o->channel);
    if (c->channel < 0) {
        fprintf(stderr, "fdn-perf: unknown channel \"%s\" (coordination, events, data, "
                        "gossip or perf)\n", c->o->channel);
        return PERF_EXIT_USAGE;
    }
    if (connect_peer(c) < 0)
        return PERF_EXIT_RUNTIME;
    return c->o->mode == PERF_LAT ? run_lat(c) : run_bw(c);
}

int perf_run_client(const struct perf_options *o)
{
    struct perf_options used = *o;
    struct client c = {.o = &used};
    if (perf_env_open(&c.env, o) < 0)
        return PERF_EXIT_RUNTIME;
    int status = run(&c);
    perf_env_close(&c.env);
    return status;
}
