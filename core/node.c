/* Nodes: configuration, the channel table, listeners, and the lifecycle of
 * peers. The protocol of one connection is in core/peer.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include <fdn/error.h>

#include "base/compiler.h"
#include "base/error.h"
#include "base/log.h"
#include "core/node_internal.h"
#include "core/worker_internal.h"

#define MiB ((uint64_t)1 << 20)

/* The four channels every node has (ids FDN_CHANNEL_*). */
static const fdn_channel_config default_channels[FDN_CHANNEL_FIRST_USER] = {
    [FDN_CHANNEL_COORDINATION] = {.name = "coordination", .priority = 0, .max_message = MiB},
    [FDN_CHANNEL_EVENTS] = {.name = "events", .priority = 2, .max_message = MiB},
    [FDN_CHANNEL_DATA] = {.name = "data", .priority = 4, .max_message = 64 * MiB},
    [FDN_CHANNEL_GOSSIP] = {.name = "gossip", .priority = 7, .delivery = FDN_BEST_EFFORT,
                            .max_message = 64 << 10},
};

/* Liveness defaults: a ping after 1 s of silence, dead after 5 s; the
 * check runs every keepalive / 2, which a keepalive under 1 ms would turn
 * into a busy timer. */
#define DEFAULT_KEEPALIVE_NS (1000ull * 1000 * 1000)
#define DEFAULT_IDLE_TIMEOUT_NS (5000ull * 1000 * 1000)
#define MIN_KEEPALIVE_NS (1000ull * 1000)

/* Accept limits: 64 connections from one host is 32 sessions of 2 lanes. */
#define DEFAULT_MAX_CONNS_PER_ADDR 64
#define DEFAULT_MAX_PENDING_HANDSHAKES 256

/* The largest credit window the handshake can carry (32 bits on the wire). */
#define MAX_WINDOW UINT32_MAX

static int resolve_channel(const fdn_channel_config *in, int id, uint8_t lanes,
                           struct fdn__channel *out)
{
    fdn_channel_config c = *in;
    size_t name_len = c.name ? strlen(c.name) : 0;
    if (name_len == 0 || name_len > FDN__HS_CHANNEL_NAME_MAX)
        return FDN_ERR(-EINVAL, "channel %d: name must be 1..%d bytes", id,
                       FDN__HS_CHANNEL_NAME_MAX);
    if (c.priority < FDN_PRIO_HIGHEST || c.priority > FDN_PRIO_LOWEST)
        return FDN_ERR(-EINVAL, "channel %s: priority %d outside 0..7", c.name, c.priority);
    if (!c.weight)
        c.weight = 1;
    if (c.weight > 1000)
        return FDN_ERR(-EINVAL, "channel %s: weight %u over 1000", c.name, c.weight);
    if (!c.max_message)
        c.max_message = 16 * MiB;
    if (!c.credit_window)
        c.credit_window = c.max_message > 4 * MiB ? c.max_message : 4 * MiB;
    if (!c.max_queued)
        c.max_queued = 1024;
    if (!c.lane)
        c.lane = 1;
    if (c.lane > lanes)
        return FDN_ERR(-EINVAL, "channel %s: lane %u, but the node has %u lanes", c.name, c.lane,
                       lanes);
    if (c.credit_window < c.max_message)
        return FDN_ERR(-EINVAL, "channel %s: credit_window %llu below max_message %llu (a "
                       "message must fit the window to be delivered)", c.name,
                       (unsigned long long)c.credit_window, (unsigned long long)c.max_message);
    if (c.credit_window > MAX_WINDOW)
        return FDN_ERR(-EINVAL, "channel %s: credit_window over 4 GiB - 1", c.name);
    if ((unsigned)c.delivery > FDN_BEST_EFFORT)
        return FDN_ERR(-EINVAL, "channel %s: unknown delivery class", c.name);
    memcpy(out->name, c.name, name_len + 1);
    c.name = out->name;
    out->cfg = c;
    out->defined = true;
    return 0;
}

static void describe_channel(const struct fdn__channel *ch, int id, struct fdn__channel_desc *d)
{
    *d = (struct fdn__channel_desc){
        .id = (uint16_t)id,
        .priority = (uint8_t)ch->cfg.priority,
        .flags = FDN__CHANNEL_ORDERED |
                 (ch->cfg.delivery == FDN_RELIABLE ? FDN__CHANNEL_RELIABLE : 0),
        .weight = ch->cfg.weight,
        .lane = (uint8_t)(ch->cfg.lane - 1),
        .credit_window = (uint32_t)ch->cfg.credit_window,
        .max_message = ch->cfg.max_message,
    };
    memcpy(d->name, ch->name, sizeof d->name);
}

static int build_channels(fdn_node *n, const fdn_node_config *cfg)
{
    if (cfg->num_channels < 0 || cfg->num_channels > FDN_MAX_CHANNELS - FDN_CHANNEL_FIRST_USER)
        return FDN_ERR(-EINVAL, "num_channels %d: at most %d user channels", cfg->num_channels,
                       FDN_MAX_CHANNELS - FDN_CHANNEL_FIRST_USER);
    for (int i = 0; i < FDN_CHANNEL_FIRST_USER; i++) {
        fdn_channel_config c = default_channels[i];
        if (i == FDN_CHANNEL_DATA) { /* the data channel's sizes may be overridden */
            c.weight = cfg->data.weight;
            c.max_message = cfg->data.max_message ? cfg->data.max_message : c.max_message;
            c.credit_window = cfg->data.credit_window;
            c.max_queued = cfg->data.max_queued;
            c.delivery = cfg->data.delivery;
            c.lane = cfg->data.lane ? cfg->data.lane : n->lanes >= 2 ? 2 : 1;
        }
        int rc = resolve_channel(&c, i, n->lanes, &n->channels[i]);
        if (rc < 0)
            return rc;
    }
    for (int i = 0; i < cfg->num_channels; i++) {
        int id = FDN_CHANNEL_FIRST_USER + i;
        int rc = resolve_channel(&cfg->channels[i], id, n->lanes, &n->channels[id]);
        if (rc < 0)
            return rc;
        for (int j = 0; j < id; j++)
            if (!strcmp(n->channels[j].name, n->channels[id].name))
                return FDN_ERR(-EINVAL, "channel name %s used twice", n->channels[id].name);
    }
    n->num_channels = FDN_CHANNEL_FIRST_USER + cfg->num_channels;
    for (int i = 0; i < n->num_channels; i++) {
        describe_channel(&n->channels[i], i, &n->descs[i]);
        if (n->channels[i].cfg.max_message > n->max_message)
            n->max_message = n->channels[i].cfg.max_message;
    }
    return 0;
}


/* The keepalive given, or by default 1 s but at most a fifth of the idle
 * timeout, so that setting only a short idle timeout just works. */
static uint64_t keepalive_for(uint64_t given, uint64_t idle)
{
    if (given)
        return given;
    return idle / 5 < DEFAULT_KEEPALIVE_NS ? idle / 5 : DEFAULT_KEEPALIVE_NS;
}
static int check_config(const fdn_node_config *cfg)
{
    if (!cfg || !cfg->worker)
        return FDN_ERR(-EINVAL, "a node needs a worker");
    if (fdn_worker_current() != cfg->worker)
        return FDN_ERR(-EPERM, "fdn_node_create must run on the node's worker");
    if (!cfg->secret || cfg->secret_len < 16)
        return FDN_ERR(-EINVAL, "the cluster secret must be at least 16 bytes");
    size_t cluster_len = cfg->cluster ? strlen(cfg->cluster) : 0;
    if (cluster_len > FDN__HS_CLUSTER_NAME_MAX)
        return FDN_ERR(-EINVAL, "cluster name over %d bytes", FDN__HS_CLUSTER_NAME_MAX);
    if (cfg->lanes > FDN_MAX_LANES)
        return FDN_ERR(-EINVAL, "%u lanes, at most %d", cfg->lanes, FDN_MAX_LANES);
    if (cfg->max_fragment &&
        (cfg->max_fragment < FDN__HS_MIN_FRAGMENT || cfg->max_fragment > FDN__SCHED_MAX_FRAGMENT))
        return FDN_ERR(-EINVAL, "max_fragment %u is not in %u..%u", cfg->max_fragment,
                       FDN__HS_MIN_FRAGMENT, FDN__SCHED_MAX_FRAGMENT);
    uint64_t idle = cfg->idle_timeout_ns ? cfg->idle_timeout_ns : DEFAULT_IDLE_TIMEOUT_NS;
    uint64_t keepalive = keepalive_for(cfg->keepalive_ns, idle);
    if (keepalive < MIN_KEEPALIVE_NS)
        return FDN_ERR(-EINVAL, "keepalive_ns %" PRIu64 " under 1 ms", keepalive);
    if (idle <= keepalive)
        return FDN_ERR(-EINVAL, "idle_timeout_ns %" PRIu64 " must be more than keepalive_ns %"
                       PRIu64 " (a quiet lane must have time to ping before it is dead)",
                       idle, keepalive);
    /* Received messages keep their kind and id in the headroom. */
    fdn_msg *probe;
    if (fdn_msg_alloc(fdn_worker_pool(cfg->worker), 0, &probe) == 0) {
        size_t headroom = fdn_msg_headroom(probe);
        fdn_msg_free(probe);
        if (headroom < sizeof(struct fdn__rx_stash))
            return FDN_ERR(-EINVAL, "the worker's pool needs at least %zu bytes of headroom",
                           sizeof(struct fdn__rx_stash));
    }
    return 0;
}

/* ---- Fault layer ---------------------------------------------------------- */

static int lookup_channel(void *arg, const char *name)
{
    return fdn_channel_lookup(arg, name);
}

/* The fault layer's rules: cfg->faults, else FDN_FAULTS. Parsed and bound to
 * the channel table once, here, so that a typo fails the node at creation
 * rather than going unnoticed; kept only when there is a rule, so that the
 * lanes' state pointers stay NULL (and the layer costs nothing) otherwise. */
static int setup_faults(fdn_node *n, const fdn_node_config *cfg)
{
    struct fdn__fault_config *fc = malloc(sizeof *fc);
    if (!fc)
        return -ENOMEM;
    int rc = cfg->faults ? fdn__fault_config_parse(cfg->faults, fc)
                         : fdn__fault_config_from_env(fc);
    if (rc == 0)
        rc = fdn__fault_config_bind(fc, lookup_channel, n);
    if (rc < 0 || !fdn__fault_config_active(fc)) {
        free(fc);
        return rc;
    }
    for (uint32_t i = 0; i < fc->num_rules; i++)
        for (unsigned c = 0; c < fc->rules[i].num_channels; c++)
            if (fc->rules[i].channels[c].id >= n->num_channels) {
                int id = fc->rules[i].channels[c].id;
                free(fc);
                return FDN_ERR(-EINVAL, "fault rule %u: no channel %d (the node has %d)",
                               i + 1, id, n->num_channels);
            }
    n->faults = fc;
    return 0;
}

int fdn_node_fault_report(const fdn_node *n, char *buf, size_t len)
{
    if (len)
        buf[0] = '\0';
    if (!n->faults)
        return 0;
    struct fdn__fault_stats st;
    fdn__node_fault_stats(n, &st);
    char text[4096], counts[512];
    fdn__fault_config_format(n->faults, text, sizeof text);
    size_t used = 0;
    counts[0] = '\0';
    for (int k = 0; k < FDN__FAULT_KIND_COUNT && used < sizeof counts; k++)
        used += (size_t)snprintf(counts + used, sizeof counts - used, " %s=%llu",
                                 fdn__fault_kind_name((enum fdn__fault_kind)k),
                                 (unsigned long long)st.actions[k]);
    return snprintf(buf, len, "fault layer: seed=%llu%s %s='%s' connections=%llu frames=%llu%s",
                    (unsigned long long)n->faults->seed, n->faults->seed_given ? "" : " (random)",
                    FDN__FAULT_ENV, text, (unsigned long long)n->fault_conns,
                    (unsigned long long)st.frames, counts);
}

int fdn_node_create(const fdn_node_config *cfg, fdn_node **out)
{
    int rc = check_config(cfg);
    if (rc < 0)
        return rc;
    if (sodium_init() < 0)
        return FDN_ERR(-EIO, "libsodium cannot initialise");
    fdn_node *n = calloc(1, sizeof *n);
    if (!n)
        return -ENOMEM;
    n->worker = cfg->worker;
    n->pool = fdn_worker_pool(cfg->worker);
    snprintf(n->cluster, sizeof n->cluster, "%s", cfg->cluster ? cfg->cluster : "foundation");
    /* Any secret length in, a 32-byte key out. */
    crypto_hash_sha256(n->secret, cfg->secret, cfg->secret_len);
    randombytes_buf(n->node_id, sizeof n->node_id);
    n->incarnation = fdn_now_ns();
    n->max_fragment = cfg->max_fragment ? cfg->max_fragment : 64 << 10;
    n->max_inflight_bytes = cfg->max_inflight_bytes ? cfg->max_inflight_bytes : 128 << 10;
    n->bulk_inflight_bytes = cfg->bulk_inflight_bytes ? cfg->bulk_inflight_bytes : 1 << 20;
    n->lanes = cfg->lanes ? cfg->lanes : 2;
    n->zerocopy_min = cfg->zerocopy_min;
    n->lend_min = cfg->lend_min ? cfg->lend_min : FDN__LEND_MIN_DEFAULT;
    n->no_same_host_shm = cfg->no_same_host_shm;
    n->handshake_timeout_ns = cfg->handshake_timeout_ns ? cfg->handshake_timeout_ns
                                                        : 5000000000ull;
    n->session_timeout_ns = cfg->session_timeout_ns ? cfg->session_timeout_ns
                                                    : 10000000000ull;
    n->max_conns_per_addr = cfg->max_conns_per_addr ? cfg->max_conns_per_addr
                                                    : DEFAULT_MAX_CONNS_PER_ADDR;
    n->max_pending_handshakes = cfg->max_pending_handshakes ? cfg->max_pending_handshakes
                                                            : DEFAULT_MAX_PENDING_HANDSHAKES;
    n->idle_timeout_ns = cfg->idle_timeout_ns ? cfg->idle_timeout_ns : DEFAULT_IDLE_TIMEOUT_NS;
    n->keepalive_ns = keepalive_for(cfg->keepalive_ns, n->idle_timeout_ns);
    rc = build_channels(n, cfg);
    if (rc == 0)
        rc = setup_faults(n, cfg);
    if (rc < 0) {
        sodium_memzero(n->secret, sizeof n->secret);
        free(n);
        return rc;
    }
    *out = n;
    return 0;
}

void fdn_node_set_events(fdn_node *n, const fdn_node_events *events) { n->events = *events; }

int fdn_channel_lookup(const fdn_node *n, const char *name)
{
    for (int i = 0; i < n->num_channels; i++)
        if (!strcmp(n->channels[i].name, name))
            return i;
    return -ENOENT;
}

int fdn_channel_set_handler(fdn_node *n, int channel, fdn_recv_fn fn, void *arg)
{
    if (channel < 0 || channel >= n->num_channels)
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    n->channels[channel].on_message = fn;
    n->channels[channel].on_message_arg = arg;
    return 0;
}

int fdn_channel_set_request_handler(fdn_node *n, int channel, fdn_request_fn fn, void *arg)
{
    if (channel < 0 || channel >= n->num_channels)
        return FDN_ERR(-EINVAL, "no channel %d", channel);
    n->channels[channel].on_request = fn;
    n->channels[channel].on_request_arg = arg;
    return 0;
}

void fdn_node_stats_get(const fdn_node *n, fdn_node_stats *out) { *out = n->stats; }

/* ---- Saying why connections end ------------------------------------------ */

void fdn__node_log_end(const fdn_node *n, int level, const char *addr, int lane,
                       const char *transport, const char *fmt, ...)
{
    if (!fdn__log_enabled(level))
        return;
    char reason[FDN__LOG_LINE_MAX / 2], where[24];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (lane > 0)
        snprintf(where, sizeof where, "lane %d", lane);
    else
        snprintf(where, sizeof where, "%s", lane == 0 ? "all lanes" : "lane ?");
    /* The first 4 bytes of the node id tell this process's nodes apart. */
    fdn__log(level, "node %02x%02x%02x%02x: %s %s (%s): %s", n->node_id[0], n->node_id[1],
             n->node_id[2], n->node_id[3], addr, where, transport ? transport : "?", reason);
}

/* ---- Accept limits ------------------------------------------------------- */

/* Anyone who can reach a listener can open connections: a flood from one
 * place, or from many that never finish a handshake, must not cost the node
 * its memory or its peers. An accepted connection beyond max_conns_per_addr
 * live ones from its host (lanes included), or beyond max_pending_handshakes
 * not yet authenticated in all, is closed at once, before a peer or a lane
 * is allocated for it; it is counted and said. An admitted connection's lane
 * holds its places until its handshake succeeds (the pending one) and its
 * transport is gone (its host's). */

static struct fdn__host_conns **host_slot(fdn_node *n, const char *host)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (const char *c = host; *c; c++)
        h = (h ^ (uint8_t)*c) * 16777619u;
    struct fdn__host_conns **at = &n->hosts[h % FDN__HOST_BUCKETS];
    while (*at && strcmp((*at)->host, host) != 0)
        at = &(*at)->next;
    return at;
}

/* Takes a place for a connection from host; NULL when out of memory. */
static struct fdn__host_conns *admit(fdn_node *n, const char *host)
{
    struct fdn__host_conns **at = host_slot(n, host);
    if (!*at) {
        struct fdn__host_conns *h = calloc(1, sizeof *h);
        if (!h)
            return NULL;
        snprintf(h->host, sizeof h->host, "%s", host);
        *at = h;
    }
    (*at)->conns++;
    n->pending_handshakes++;
    return *at;
}

void fdn__node_authenticated(fdn_node *n) { n->pending_handshakes--; }

void fdn__node_release(fdn_node *n, struct fdn__host_conns *host, bool pending)
{
    if (pending)
        n->pending_handshakes--;
    if (host && --host->conns == 0) {
        struct fdn__host_conns **at = host_slot(n, host->host);
        *at = host->next;
        free(host);
    }
}

/* Closes an accepted connection that gets nothing, and says why. */
static void refuse(fdn_node *n, struct fdn__tp_conn *conn, const char *addr, int level,
                   const char *why)
{
    fdn__node_log_end(n, level, addr, -1, conn->tp->name, "refused: %s", why);
    fdn__tp_conn_close(conn);
}

/* ---- Listeners ----------------------------------------------------------- */

static void on_accept(void *ctx, struct fdn__tp_conn *conn)
{
    struct fdn__listener *l = ctx;
    fdn_node *n = l->node;
    char addr[FDN__ADDR_MAX], host[FDN__ADDR_MAX], why[2 * FDN__ADDR_MAX];
    int len = snprintf(addr, sizeof addr, "%s", conn->tp->scheme);
    if (fdn__tp_conn_peer_addr(conn, addr + len, sizeof addr - (size_t)len) < 0)
        snprintf(addr + len, sizeof addr - (size_t)len, "?");
    if (n->destroying) {
        refuse(n, conn, addr, FDN_LOG_INFO, "node going away");
        return;
    }
    if (fdn__tp_conn_peer_host(conn, host, sizeof host) < 0)
        snprintf(host, sizeof host, "%s", addr);
    struct fdn__host_conns *h = *host_slot(n, host);
    if (h && h->conns >= n->max_conns_per_addr) {
        n->stats.refused_per_addr++;
        snprintf(why, sizeof why, "too many connections from %s (%u, max_conns_per_addr)", host,
                 h->conns);
        refuse(n, conn, addr, FDN_LOG_WARN, why);
        return;
    }
    if (n->pending_handshakes >= n->max_pending_handshakes) {
        n->stats.refused_pending++;
        snprintf(why, sizeof why, "too many pending handshakes (%u, max_pending_handshakes)",
                 n->pending_handshakes);
        refuse(n, conn, addr, FDN_LOG_WARN, why);
        return;
    }
    fdn_peer *p;
    if (!(h = admit(n, host)) || fdn__peer_create(n, false, &p) < 0) {
        if (h)
            fdn__node_release(n, h, true);
        refuse(n, conn, addr, FDN_LOG_WARN, "out of memory");
        return;
    }
    fdn__peer_attach(p, conn, h);
}

static void on_listener_closed(void *ctx, int err)
{
    struct fdn__listener *l = ctx;
    (void)err;
    l->closed = true;
    l->tp = NULL;
}

static const struct fdn__tp_listener_events listener_events = {
    .on_accept = on_accept,
    .on_closed = on_listener_closed,
};

/* Opens the same-host companion of listener index (core/transport.h). Not
 * having one costs only speed (same-host peers use TCP), so a failure is
 * logged once per process, not returned. */
static void listen_shortcut(fdn_node *n, int index)
{
    static atomic_bool said;
    char bound[FDN__ADDR_MAX], addr[FDN__ADDR_MAX];
    struct fdn__listener *s = &n->shortcuts[index];
    *s = (struct fdn__listener){.node = n, .closed = true};
    if (n->no_same_host_shm || fdn_node_listen_addr(n, index, bound, sizeof bound) < 0 ||
        fdn__same_host_listen_addr(bound, addr, sizeof addr) <= 0)
        return;
    const char *rest;
    const struct fdn__transport *tp = fdn__transport_for(addr, &rest);
    if (!tp)
        return;
    s->closed = false;
    int rc = tp->listen(n->worker, rest, NULL, &listener_events, s, &s->tp);
    if (rc < 0) {
        s->closed = true;
        s->tp = NULL;
        if (!atomic_exchange(&said, true))
            fdn__log(FDN_LOG_WARN, "%s has no same-host listener %s (%s); peers on this host "
                     "will use TCP. Said once.", bound, addr, fdn_errmsg());
    }
}

int fdn_node_listen(fdn_node *n, const char *addr)
{
    const char *rest;
    const struct fdn__transport *tp = fdn__transport_for(addr, &rest);
    if (!tp)
        return FDN_ERR(-EPROTONOSUPPORT, "no transport for address %s", addr);
    if (n->num_listeners == FDN__MAX_LISTENERS)
        return FDN_ERR(-ENOSPC, "a node listens on at most %d addresses", FDN__MAX_LISTENERS);
    struct fdn__listener *l = &n->listeners[n->num_listeners];
    *l = (struct fdn__listener){.node = n};
    int rc = tp->listen(n->worker, rest, NULL, &listener_events, l, &l->tp);
    if (rc < 0)
        return rc;
    int index = n->num_listeners++;
    listen_shortcut(n, index);
    return index;
}

int fdn_node_listen_addr(fdn_node *n, int index, char *buf, size_t len)
{
    if (index < 0 || index >= n->num_listeners || !n->listeners[index].tp)
        return -ENOENT;
    struct fdn__tp_listener *l = n->listeners[index].tp;
    int prefix = snprintf(buf, len, "%s", l->tp->scheme);
    if (prefix < 0 || (size_t)prefix >= len)
        return -ENOSPC;
    int rc = fdn__tp_listener_addr(l, buf + prefix, len - (size_t)prefix);
    return rc < 0 ? rc : prefix + rc;
}

/* ---- Connecting ---------------------------------------------------------- */

int fdn_node_connect(fdn_node *n, const char *addr, fdn_peer **out)
{
    const char *rest;
    const struct fdn__transport *tp = fdn__transport_for(addr, &rest);
    if (!tp)
        return FDN_ERR(-EPROTONOSUPPORT, "no transport for address %s", addr);
    if (strlen(addr) >= sizeof(((fdn_peer *)0)->dial))
        return FDN_ERR(-EINVAL, "address %s is too long", addr);
    fdn_peer *p;
    int rc = fdn__peer_create(n, true, &p);
    if (rc < 0)
        return rc;
    rc = fdn__peer_dial(p, addr);
    if (rc < 0) {
        p->outbound = false; /* nothing to report: the caller gets the error */
        fdn__peer_fail(p, rc, FDN__CLOSE_NORMAL);
        return rc;
    }
    *out = p;
    return 0;
}

/* ---- Teardown ------------------------------------------------------------ */

static bool everything_closed(const fdn_node *n)
{
    if (n->peers)
        return false;
    for (int i = 0; i < n->num_listeners; i++)
        if (!n->listeners[i].closed || !n->shortcuts[i].closed)
            return false;
    return true;
}

void fdn_node_destroy(fdn_node *n)
{
    if (!n)
        return;
    n->destroying = true;
    for (int i = 0; i < n->num_listeners; i++) {
        if (n->listeners[i].tp)
            fdn__tp_listener_close(n->listeners[i].tp);
        if (n->shortcuts[i].tp)
            fdn__tp_listener_close(n->shortcuts[i].tp);
    }
    for (fdn_peer *p = n->peers; p; p = p->next)
        fdn__peer_fail(p, 0, FDN__CLOSE_GOING_AWAY);
    /* The transports finish closing from completions: drive the worker until
     * they have. Each peer's close is bounded by its flush timer. */
    while (!everything_closed(n)) {
        if (fdn_worker_progress(n->worker) == 0)
            fdn_worker_wait(n->worker, 1000000);
    }
    if (n->faults) {
        /* The seed of a run with faults is worth more than its noise: a
         * warning, so it shows by default and reaches a log handler. (A
         * line is at most FDN__LOG_LINE_MAX; the seed comes first.) */
        char line[FDN__LOG_LINE_MAX];
        fdn_node_fault_report(n, line, sizeof line);
        fdn__log(FDN_LOG_WARN, "%s", line);
        free(n->faults);
    }
    sodium_memzero(n->secret, sizeof n->secret);
    free(n);
}
