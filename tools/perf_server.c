/* fdn-perf server: serves any number of client runs, one session per
 * connected client, until SIGINT or SIGTERM.
 *
 * A client's BEGIN names the measured channel and what to do with its
 * messages: echo them (lat: the received message itself goes back, so the
 * echo costs no allocation and no copy), count and free them (bw), or also
 * check each one's number and checksum (bw --verify, perf_verify.h). A STATS
 * request is answered with the count once the client's messages have all
 * arrived, so a bw client reports what the server really received; in a
 * verify run the answer adds delivered, lost, duplicated, reordered and
 * corrupted. Every session (client) has its own counters and tracker, reset
 * by each BEGIN, so any number of runs, one after another or side by side,
 * are accounted separately. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/error.h>

#include "perf.h"
#include "perf_proto.h"
#include "perf_verify.h"

/* A STATS request waiting for messages is answered anyway once nothing has
 * arrived for this long (a best-effort channel may have dropped some). */
#define STATS_QUIET_NS (2ull * 1000 * 1000 * 1000)

/* Arrivals are stamped with the clock on every this many (see on_message). */
#define STAMP_EVERY 64

/* How long an idle server (no client) sleeps between looks at the signal flag. */
#define IDLE_WAIT_NS (100ll * 1000 * 1000)

struct session {
    struct session *next;
    fdn_peer *peer;
    char addr[80];
    enum perf_ctl_mode mode;      /* 0 until BEGIN */
    int channel;                  /* the measured channel */
    uint64_t size;
    uint64_t messages, bytes, stray;
    uint64_t first_ns, last_ns;
    /* VERIFY: which numbers arrived; verify_failed when the tracker ran out
     * of memory (the run's account would be wrong, so STATS fails). */
    struct perf_seq_tracker seqs;
    bool verify_failed;
    /* Echoes the channel refused for now (-EAGAIN), oldest first, linked by
     * qnext: sent again before any newer echo, so order is kept. */
    fdn_msg *backlog_head, *backlog_tail;
    /* A STATS request waiting for its expected count. */
    bool stats_pending;
    int stats_channel;
    uint64_t stats_id, stats_expected, stats_asked_ns;
};

struct server {
    struct perf_env env;
    struct session *sessions;
};

static struct session *find_session(struct server *srv, const fdn_peer *peer)
{
    for (struct session *s = srv->sessions; s; s = s->next)
        if (s->peer == peer)
            return s;
    return NULL;
}

static const char *mode_name(enum perf_ctl_mode mode)
{
    switch (mode) {
    case PERF_CTL_ECHO: return "lat";
    case PERF_CTL_COUNT: return "bw";
    case PERF_CTL_VERIFY: return "bw --verify";
    }
    return "idle";
}

/* ---- Peers ------------------------------------------------------------------ */

static void on_peer_up(fdn_peer *peer, void *arg)
{
    struct server *srv = arg;
    struct session *s = calloc(1, sizeof *s);
    if (!s) {
        fprintf(stderr, "fdn-perf server: out of memory; closing a client\n");
        fdn_peer_close(peer);
        return;
    }
    s->peer = peer;
    if (fdn_peer_addr(peer, s->addr, sizeof s->addr) < 0)
        snprintf(s->addr, sizeof s->addr, "(unknown)");
    s->next = srv->sessions;
    srv->sessions = s;
    printf("client %s connected\n", s->addr);
}

static void free_backlog(struct session *s)
{
    while (s->backlog_head) {
        fdn_msg *m = s->backlog_head;
        s->backlog_head = m->qnext;
        fdn_msg_free(m);
    }
    s->backlog_tail = NULL;
}

static void on_peer_down(fdn_peer *peer, int reason, void *arg)
{
    struct server *srv = arg;
    for (struct session **slot = &srv->sessions; *slot; slot = &(*slot)->next) {
        struct session *s = *slot;
        if (s->peer != peer)
            continue;
        *slot = s->next;
        printf("client %s gone (%s): %s run, %" PRIu64 " messages, %" PRIu64 " bytes\n",
               s->addr, reason ? fdn_strerror(reason) : "closed", mode_name(s->mode),
               s->messages, s->bytes);
        free_backlog(s);
        perf_seq_reset(&s->seqs);
        free(s);
        return;
    }
}

/* ---- Control requests ------------------------------------------------------- */

/* Sends a reply; -EAGAIN leaves it to the caller to try again later. */
static int send_reply(fdn_peer *peer, int channel, uint64_t id, const struct perf_ctl_reply *r)
{
    fdn_msg *m;
    int rc = fdn_msg_alloc(fdn_worker_pool(fdn_worker_current()), perf_ctl_reply_size(r), &m);
    if (rc < 0)
        return rc;
    perf_ctl_reply_encode(r, fdn_msg_data(m));
    rc = fdn_respond(peer, channel, id, m);
    if (rc == -EAGAIN)
        fdn_msg_free(m);
    return rc;
}

/* Adds the verify account to a STATS reply, and logs it. */
static void add_verify(struct session *s, struct perf_ctl_reply *r)
{
    struct perf_verify_counts c = perf_seq_finish(&s->seqs, s->stats_expected);
    r->has_verify = true;
    r->delivered = c.delivered;
    r->lost = c.lost;
    r->duplicated = c.duplicated;
    r->reordered = c.reordered;
    r->corrupted = c.corrupted;
    if (s->verify_failed)
        r->status = -ENOMEM;
    printf("client %s: verify: %" PRIu64 " sent, %" PRIu64 " delivered, %" PRIu64 " lost, %"
           PRIu64 " duplicated, %" PRIu64 " reordered, %" PRIu64 " corrupted%s\n", s->addr,
           s->stats_expected, c.delivered, c.lost, c.duplicated, c.reordered, c.corrupted,
           s->verify_failed ? " (tracker out of memory: not trustworthy)" : "");
}

static int answer_stats(struct session *s)
{
    struct perf_ctl_reply r = {
        .op = PERF_CTL_STATS,
        .messages = s->messages,
        .bytes = s->bytes,
        .span_ns = s->messages ? s->last_ns - s->first_ns : 0,
    };
    if (s->mode == PERF_CTL_VERIFY)
        add_verify(s, &r);
    int rc = send_reply(s->peer, s->stats_channel, s->stats_id, &r);
    if (rc != -EAGAIN)
        s->stats_pending = false;
    return rc;
}

/* Whether every message the client sent has arrived. In a verify run only
 * distinct, intact numbers count: duplicates and corrupted messages must not
 * make STATS answer while real ones are still on the way. */
static bool all_arrived(const struct session *s)
{
    if (s->mode == PERF_CTL_VERIFY)
        return perf_seq_delivered_below(&s->seqs, s->stats_expected) >= s->stats_expected;
    return s->messages >= s->stats_expected;
}

static void begin_run(struct session *s, const struct perf_ctl_request *req, int channel,
                      uint64_t id)
{
    struct perf_ctl_reply r = {.op = PERF_CTL_BEGIN};
    if (req->mode != PERF_CTL_ECHO && req->mode != PERF_CTL_COUNT &&
        req->mode != PERF_CTL_VERIFY) {
        r.status = -EINVAL;
    } else if (req->mode == PERF_CTL_VERIFY && req->arg < PERF_VERIFY_HEADER_SIZE) {
        r.status = -EMSGSIZE; /* the client checks this first */
    } else {
        free_backlog(s);
        perf_seq_reset(&s->seqs);
        s->verify_failed = false;
        s->mode = (enum perf_ctl_mode)req->mode;
        s->channel = req->channel;
        s->size = req->arg;
        s->messages = s->bytes = s->stray = 0;
        s->first_ns = s->last_ns = 0;
        s->stats_pending = false;
        printf("client %s: %s run on channel %d, %" PRIu64 " B messages\n", s->addr,
               mode_name(s->mode), s->channel, s->size);
    }
    int rc = send_reply(s->peer, channel, id, &r);
    if (rc < 0) /* the client times out and says so */
        fprintf(stderr, "fdn-perf server: cannot answer BEGIN: %s\n", fdn_strerror(rc));
}

static void ask_stats(struct session *s, const struct perf_ctl_request *req, int channel,
                      uint64_t id)
{
    s->stats_pending = true;
    s->stats_channel = channel;
    s->stats_id = id;
    s->stats_expected = req->arg;
    s->stats_asked_ns = fdn_now_ns();
    if (all_arrived(s))
        answer_stats(s);
}

static void on_request(fdn_peer *peer, int channel, uint64_t id, fdn_msg *msg, void *arg)
{
    struct session *s = find_session(arg, peer);
    struct perf_ctl_request req;
    bool valid = msg->next == NULL &&
                 perf_ctl_request_decode(fdn_msg_data(msg), fdn_msg_len(msg), &req);
    fdn_msg_free(msg);
    if (!s)
        return;
    if (valid && req.op == PERF_CTL_BEGIN) {
        begin_run(s, &req, channel, id);
    } else if (valid && req.op == PERF_CTL_STATS) {
        ask_stats(s, &req, channel, id);
    } else {
        struct perf_ctl_reply r = {.op = valid ? req.op : 0, .status = -EBADMSG};
        send_reply(peer, channel, id, &r);
    }
}

/* ---- Measured messages ------------------------------------------------------ */

static void echo(struct session *s, int channel, fdn_msg *msg)
{
    if (!s->backlog_head) {
        int rc = fdn_send(s->peer, channel, msg); /* the message goes back as it came */
        if (rc != -EAGAIN)
            return;
    }
    msg->qnext = NULL;
    if (s->backlog_tail)
        s->backlog_tail->qnext = msg;
    else
        s->backlog_head = msg;
    s->backlog_tail = msg;
}

/* Checks one message of a verify run and records its number. */
static void verify(struct session *s, const fdn_msg *msg)
{
    uint64_t seq;
    if (!perf_verify_check(msg, s->size, &seq)) {
        perf_seq_corrupted(&s->seqs);
        return;
    }
    if (perf_seq_record(&s->seqs, seq) == PERF_SEQ_NO_MEMORY && !s->verify_failed) {
        s->verify_failed = true;
        fprintf(stderr, "fdn-perf server: client %s: no memory to track sequence numbers\n",
                s->addr);
    }
}

static void on_message(fdn_peer *peer, int channel, fdn_msg *msg, void *arg)
{
    struct session *s = find_session(arg, peer);
    if (!s || !s->mode || channel != s->channel) {
        if (s)
            s->stray++;
        fdn_msg_free(msg);
        return;
    }
    /* A clock read costs about as much as receiving a small message: the
     * arrivals are stamped on every STAMP_EVERY-th one, and on each once a
     * STATS waits for them, so the span falls short of the last arrival by
     * at most STAMP_EVERY - 1 of them (none when the STATS came first). */
    if (s->messages % STAMP_EVERY == 0 || s->stats_pending) {
        uint64_t now = fdn_now_ns();
        if (s->messages == 0)
            s->first_ns = now;
        s->last_ns = now;
    }
    s->messages++;
    s->bytes += fdn_msg_total_len(msg);
    if (s->mode == PERF_CTL_ECHO) {
        echo(s, channel, msg);
        return;
    }
    if (s->mode == PERF_CTL_VERIFY)
        verify(s, msg);
    fdn_msg_free(msg);
    if (s->stats_pending && all_arrived(s))
        answer_stats(s);
}

/* ---- Main loop -------------------------------------------------------------- */

static void flush_backlog(struct session *s)
{
    while (s->backlog_head) {
        fdn_msg *m = s->backlog_head;
        fdn_msg *next = m->qnext;
        if (fdn_send(s->peer, s->channel, m) == -EAGAIN)
            return;
        s->backlog_head = next;
    }
    s->backlog_tail = NULL;
}

/* Work that waits for a condition rather than an event: refused echoes and
 * replies, and STATS requests whose messages stopped coming. */
static void service_sessions(struct server *srv)
{
    for (struct session *s = srv->sessions; s; s = s->next) {
        if (s->backlog_head)
            flush_backlog(s);
        if (!s->stats_pending)
            continue;
        uint64_t since = s->last_ns > s->stats_asked_ns ? s->last_ns : s->stats_asked_ns;
        if (all_arrived(s) || fdn_now_ns() - since > STATS_QUIET_NS)
            answer_stats(s);
    }
}

static int listen_and_announce(struct server *srv, const struct perf_options *o)
{
    int index = fdn_node_listen(srv->env.node, o->addr);
    if (index < 0)
        return perf_fail(o->addr, index);
    char bound[128];
    int rc = fdn_node_listen_addr(srv->env.node, index, bound, sizeof bound);
    if (rc < 0)
        return perf_fail("cannot read the bound address", rc);
    printf("fdn-perf server: listening on %s\n", bound);
    return 0;
}

static void install_handlers(struct server *srv)
{
    fdn_node *node = srv->env.node;
    fdn_node_events ev = {.peer_up = on_peer_up, .peer_down = on_peer_down, .arg = srv};
    fdn_node_set_events(node, &ev);
    fdn_channel_set_request_handler(node, FDN_CHANNEL_COORDINATION, on_request, srv);
    for (int c = 0; c < PERF_NUM_CHANNELS; c++)
        fdn_channel_set_handler(node, c, on_message, srv);
}

static int serve(struct server *srv)
{
    while (!perf_stop_requested) {
        int rc = fdn_worker_progress(srv->env.w);
        if (rc < 0)
            return perf_fail("worker progress", rc);
        service_sessions(srv);
        /* Busy-poll while a client is connected; otherwise do not burn the core. */
        if (rc == 0 && !srv->sessions)
            fdn_worker_wait(srv->env.w, IDLE_WAIT_NS);
    }
    return 0;
}

int perf_run_server(const struct perf_options *o)
{
    /* One line per event, visible at once when stdout is a pipe or a file. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct server srv = {0};
    if (perf_env_open(&srv.env, o) < 0)
        return PERF_EXIT_RUNTIME;
    install_handlers(&srv);
    int rc = listen_and_announce(&srv, o);
    if (rc == 0)
        rc = serve(&srv);
    fdn_node_stats st;
    fdn_node_stats_get(srv.env.node, &st);
    perf_env_close(&srv.env); /* reports every client gone: sessions are freed */
    if (rc == 0)
        printf("fdn-perf server: stopped; %" PRIu64 " clients served, refused: %" PRIu64
               " wrong secret, %" PRIu64 " handshake, %" PRIu64 " protocol, %" PRIu64
               " limits, %" PRIu64 " timeouts, %" PRIu64 " over connection limits; %" PRIu64
               " connections found silent\n",
               st.peers_up, st.auth_failures, st.handshake_failures, st.protocol_errors,
               st.limit_violations, st.handshake_timeouts,
               st.refused_per_addr + st.refused_pending, st.idle_timeouts);
    return rc < 0 ? PERF_EXIT_RUNTIME : PERF_EXIT_OK;
}
