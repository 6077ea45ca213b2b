/* fdn-perf: one end's runtime, worker, cluster secret and node. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <fdn/error.h>
#include <fdn/topology.h>

#include "core/handshake.h"
#include "perf.h"

#define MiB ((uint64_t)1 << 20)

volatile sig_atomic_t perf_stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    perf_stop_requested = 1;
}

void perf_install_signal_handlers(void)
{
    /* SA_RESETHAND: a second Ctrl-C kills a run that no longer listens.
     * No SA_RESTART: a wait in the kernel returns at once. */
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = (int)SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int perf_fail(const char *what, int rc)
{
    const char *detail = fdn_errmsg();
    fprintf(stderr, "fdn-perf: %s: %s%s%s\n", what, fdn_strerror(rc), *detail ? ": " : "",
            detail);
    return rc;
}

/* ---- Channels -------------------------------------------------------------- */

/* Messages a sender may queue by default: as many as the credit window
 * holds (so the queue keeps the window full), at least 8, and at most the
 * library's default of 1024. Queueing a gigabyte of 1 MiB messages would
 * only make a timed run drain for long after its time is up. */
static uint32_t default_queue(uint64_t credit_window, uint64_t size)
{
    uint64_t n = credit_window / size;
    return (uint32_t)(n < 8 ? 8 : n > 1024 ? 1024 : n);
}

/* Sizes of the channels that carry measured bulk (data and perf). The
 * handshake agrees each channel's max_message and credit window as the
 * smaller of the two sides, so the server offers the ceiling and the client
 * asks for what its --size needs: max(size, 1 MiB) messages and a window of
 * four of them, at least 8 MiB, so that a stream never waits for credit
 * while one message is being delivered. The client must never ask for more
 * than the server offers: fdn_send() checks a message against the local
 * max_message only, and the receiver drops the connection over one larger
 * than the agreed size. */
static void bulk_channel_sizes(const struct perf_options *o, fdn_channel_config *c)
{
    if (o->mode == PERF_SERVER) {
        c->max_message = PERF_MAX_SIZE;
        c->credit_window = 4 * PERF_MAX_SIZE;
        return;
    }
    c->max_message = o->size > MiB ? o->size : MiB;
    c->credit_window = 4 * o->size > 8 * MiB ? 4 * o->size : 8 * MiB;
    c->max_queued = o->window ? o->window : default_queue(c->credit_window, o->size);
}

/* The channels fdn-perf adds to the four every node has: "perf", as urgent as
 * coordination but sized like data, for latency runs of messages over
 * coordination's 1 MiB. Both ends define the same set (same names, ids and
 * delivery), or the handshake would not agree on them. */
static void describe_channels(const struct perf_options *o, fdn_node_config *cfg,
                              fdn_channel_config user[PERF_USER_CHANNELS])
{
    user[0] = (fdn_channel_config){.name = "perf", .priority = 1};
    bulk_channel_sizes(o, &user[0]);
    bulk_channel_sizes(o, &cfg->data);
    cfg->channels = user;
    cfg->num_channels = PERF_USER_CHANNELS;
}

/* ---- Secret ---------------------------------------------------------------- */

/* --secret-file, else the per-user default path; created (0600, random) when
 * absent, so both ends on one machine share it without configuration. */
static int load_secret(const struct perf_options *o, uint8_t secret[FDN__HS_SECRET_SIZE])
{
    char path[PATH_MAX];
    const char *file = o->secret_file;
    if (!file) {
        int rc = fdn__secret_default_path(path, sizeof path);
        if (rc < 0)
            return perf_fail("no default secret path (set HOME or use --secret-file)", rc);
        file = path;
    }
    int rc = fdn__secret_load_or_create(file, secret);
    if (rc < 0) {
        char what[PATH_MAX + 32];
        snprintf(what, sizeof what, "cluster secret %s", file);
        perf_fail(what, rc);
    }
    return rc;
}

/* ---- Runtime and node ------------------------------------------------------ */

/* With --cpu the thread is pinned before the runtime is created, so the
 * placement (which chooses among the CPUs the thread may use) puts the worker
 * on that CPU and attach pins it there. Without --cpu nothing is pinned: two
 * ends started on one machine must not both land on the first core. */
static int open_worker(struct perf_env *env, const struct perf_options *o)
{
    int rc;
    if (o->cpu >= 0 && (rc = fdn_pin_current_thread(o->cpu)) < 0)
        return perf_fail("cannot pin to --cpu", rc);
    fdn_runtime_config cfg = {
        .workers = 1,
        .app_driven_workers = 1,
        .no_pinning = o->cpu < 0,
        .idle = FDN_IDLE_BUSY_POLL,
        /* A limit, not a reservation: room for the credit windows of the
         * largest messages plus what is in flight. */
        .pool = {.max_bytes = (size_t)16 * PERF_MAX_SIZE},
    };
    if ((rc = fdn_runtime_create(&cfg, &env->rt)) < 0)
        return perf_fail("cannot create the runtime", rc);
    env->w = fdn_runtime_worker(env->rt, 0);
    if ((rc = fdn_worker_attach(env->w)) < 0)
        return perf_fail("cannot attach the worker", rc);
    env->attached = true;
    if (o->cpu >= 0 && fdn_worker_cpu(env->w) != o->cpu)
        fprintf(stderr, "fdn-perf: warning: worker placed on CPU %d, not --cpu %d\n",
                fdn_worker_cpu(env->w), o->cpu);
    return 0;
}

static int open_node(struct perf_env *env, const struct perf_options *o)
{
    uint8_t secret[FDN__HS_SECRET_SIZE];
    int rc = load_secret(o, secret);
    if (rc < 0)
        return rc;
    fdn_channel_config user[PERF_USER_CHANNELS];
    fdn_node_config cfg = {
        .worker = env->w,
        .secret = secret,
        .secret_len = sizeof secret,
        .max_inflight_bytes = o->inflight, /* 0 keeps the library's default */
        .session_timeout_ns = o->session_timeout_ns,
        .idle_timeout_ns = o->idle_timeout_ns,
        .keepalive_ns = o->idle_timeout_ns / 5,   /* 0 with it: the default */
        .no_same_host_shm = o->transport_given && strcmp(o->transport, "tcp") == 0,
        .lend_min = o->lend_min,   /* 0 keeps the library's default */
    };
    describe_channels(o, &cfg, user);
    rc = fdn_node_create(&cfg, &env->node);
    explicit_bzero(secret, sizeof secret); /* the node keeps its own derived key */
    if (rc < 0)
        return perf_fail("cannot create the node", rc);
    /* With FDN_FAULTS set, the seed comes first: a run that hangs or is
     * killed can still be replayed. */
    char line[8192];
    if (fdn_node_fault_report(env->node, line, sizeof line) > 0)
        fprintf(stderr, "fdn-perf: %s\n", line);
    return 0;
}

int perf_env_open(struct perf_env *env, const struct perf_options *o)
{
    *env = (struct perf_env){0};
    int rc = open_worker(env, o);
    if (rc == 0)
        rc = open_node(env, o);
    if (rc < 0)
        perf_env_close(env);
    return rc;
}

void perf_env_close(struct perf_env *env)
{
    /* The node first: destroying it drives the worker until every
     * connection is closed, which needs the worker still attached. */
    fdn_node_destroy(env->node);
    env->node = NULL;
    if (env->attached) {
        int rc = fdn_worker_detach(env->w);
        if (rc < 0)
            perf_fail("cannot detach the worker", rc);
        env->attached = false;
    }
    if (env->rt) {
        int rc = fdn_runtime_stop(env->rt);
        if (rc < 0)
            perf_fail("cannot stop the runtime", rc);
        fdn_runtime_destroy(env->rt);
        env->rt = NULL;
    }
}

int perf_drive_until(struct perf_env *env, const bool *flag, uint64_t timeout_ns,
                     bool interruptible)
{
    uint64_t deadline = fdn_now_ns() + timeout_ns;
    for (unsigned polls = 1; !*flag; polls++) {
        if (interruptible && perf_stop_requested)
            return -EINTR;
        int rc = fdn_worker_progress(env->w);
        if (rc < 0)
            return rc;
        /* The clock is read now and then: a busy loop need not pay for it. */
        if (polls % 256 == 0 && fdn_now_ns() > deadline)
            return -ETIMEDOUT;
    }
    return 0;
}
