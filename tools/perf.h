/* fdn-perf: the pieces shared by its server and its clients (lat, bw).
 *
 * One process is one node on one application-driven worker, driven by the
 * main thread in a busy-polling loop, as sockperf and ucx_perftest drive
 * their sockets and workers. */
#ifndef FDN_TOOLS_PERF_H
#define FDN_TOOLS_PERF_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fdn/histogram.h>
#include <fdn/node.h>
#include <fdn/runtime.h>

#include "perf_verify.h"

/* Exit statuses. */
#define PERF_EXIT_OK 0
#define PERF_EXIT_RUNTIME 1
#define PERF_EXIT_USAGE 2
#define PERF_EXIT_VERIFY 3   /* bw --verify: something was lost, duplicated,
                                reordered or corrupted */

/* The largest --size: the server's channel ceilings below must hold it. */
#define PERF_MAX_SIZE ((uint64_t)64 << 20)

/* fdn-perf's channels: the four every node has, then "perf" (perf_env.c). */
#define PERF_USER_CHANNELS 1
#define PERF_NUM_CHANNELS (FDN_CHANNEL_FIRST_USER + PERF_USER_CHANNELS)

enum perf_mode {
    PERF_SERVER,
    PERF_LAT,
    PERF_BW,
};

struct perf_options {
    enum perf_mode mode;
    const char *transport;      /* "tcp" */
    char addr[256];             /* listen or connect address, with its scheme */
    uint64_t size;              /* payload bytes per message */
    uint64_t duration_ns;       /* run length after warm-up (0 with --iters) */
    uint64_t iters;             /* measured messages (0 with --duration) */
    uint64_t warmup;            /* lat: round trips not measured */
    const char *channel;        /* channel name */
    int cpu;                    /* CPU to pin to, or -1 */
    bool json;
    bool verify;                /* bw: number and checksum every message */
    const char *secret_file;    /* NULL: the library's default path */
    uint32_t window;            /* messages queued at the sender on data and perf
                                   (max_queued); 0: fill the credit window */
    uint32_t lend_min;          /* the node's lend_min; 0 default */
    uint32_t inflight;          /* bytes handed to the transport and not yet sent
                                   (max_inflight_bytes); 0 default */
    uint64_t session_timeout_ns; /* the node's session_timeout_ns; 0 default */
    uint64_t idle_timeout_ns;   /* the node's idle_timeout_ns (keepalive a fifth of
                                   it); 0 default */
    bool transport_given;       /* --transport: tcp means TCP, also to this host
                                   (no same-host shared-memory shortcut) */
};

/* Everything one end owns, created and destroyed in one place. */
struct perf_env {
    fdn_runtime *rt;
    fdn_worker *w;
    fdn_node *node;
    bool attached;
};

/* Set by SIGINT/SIGTERM; every loop of the tool checks it. */
extern volatile sig_atomic_t perf_stop_requested;

void perf_install_signal_handlers(void);

/* Prints "fdn-perf: what: strerror(rc): fdn_errmsg()" and returns rc. */
int perf_fail(const char *what, int rc);

/* Pins the thread (--cpu), creates the runtime with one application-driven,
 * busy-polling worker, attaches it, loads the cluster secret and creates the
 * node with fdn-perf's channel set sized for this end. Returns 0 or a
 * negative errno (reported already); on failure nothing is left open. */
int perf_env_open(struct perf_env *env, const struct perf_options *o);

/* Destroys the node (while the worker is still attached, so its transports
 * can finish), detaches, stops and destroys the runtime. Idempotent. */
void perf_env_close(struct perf_env *env);

/* Drives the worker until *flag is true. Returns 0, -ETIMEDOUT after
 * timeout_ns, -EINTR on a stop signal when interruptible, or a progress
 * error. */
int perf_drive_until(struct perf_env *env, const bool *flag, uint64_t timeout_ns,
                     bool interruptible);

/* ---- Roles ---------------------------------------------------------------- */

int perf_run_server(const struct perf_options *o);
int perf_run_client(const struct perf_options *o);

/* ---- Results -------------------------------------------------------------- */

struct perf_lat_result {
    fdn_histogram rtt;          /* round trips in ns; one-way is half */
    uint64_t warmup;
    uint64_t pings;             /* sent, warm-up included */
    uint64_t zero_copy;         /* of those, lent by reference (shm: no copy at all) */
};

struct perf_bw_result {
    uint64_t sent;              /* messages the channel accepted */
    uint64_t confirmed;         /* messages the server received */
    uint64_t confirmed_bytes;
    uint64_t elapsed_ns;        /* first send to the server's confirmation */
    uint64_t server_span_ns;    /* server's first to last arrival */
    uint64_t interrupted;       /* times the session lost its connections */
    uint64_t resumed;           /* ... and got them back */
    uint64_t idle_timeouts;     /* connections this end found silent for its idle
                                   timeout (how it noticed a silent partition) */
    uint64_t retransmitted;     /* messages of the channel sent again after a resume */
    uint64_t zero_copy;         /* messages lent by reference (shm: no copy at all) */
    bool verified;              /* --verify: the server's account below */
    struct perf_verify_counts verify;
};

/* True when a verified run lost, duplicated, reordered or corrupted
 * nothing. */
static inline bool perf_bw_intact(const struct perf_bw_result *r)
{
    const struct perf_verify_counts *v = &r->verify;
    return !r->verified || (v->lost == 0 && v->duplicated == 0 && v->reordered == 0 &&
                            v->corrupted == 0);
}

void perf_report_lat(const struct perf_options *o, const struct perf_lat_result *r);
void perf_report_bw(const struct perf_options *o, const struct perf_bw_result *r);

#endif
