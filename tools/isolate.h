/* fdn-isolate: Foundation's head-of-line isolation validator.
 *
 * The parent process (tools/fdn-isolate.c) runs four scenarios. For each it
 * starts a fresh server and a fresh client, both this same executable
 * re-executed with --role, each on its own CPU; the client measures and both
 * report to the parent as JSON lines on a pipe (tools/isolate_proto.c). The
 * roles themselves, the only code that talks to Foundation, are in
 * tools/isolate_roles.c; the report (table, verdict, JSON file, plot) in
 * tools/isolate_report.c; the optional network-namespace bottleneck in
 * tools/isolate_netns.c. */
#ifndef FDN_TOOLS_ISOLATE_H
#define FDN_TOOLS_ISOLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <fdn/histogram.h>

/* Measurement constants. They shape the experiment, they are not results. */
#define ISO_WARMUP_NS 500000000ull            /* traffic before measuring starts */
#define ISO_PING_BYTES 64                     /* request and response payload */
#define ISO_PING_TIMEOUT_NS 10000000000ull    /* a ping unanswered this long is lost */
#define ISO_DATA_WINDOW_MESSAGES 4            /* data credit window, in bulk messages */
#define ISO_DATA_QUEUE_MESSAGES 4             /* data send queue (max_queued) */

/* The claim's checks: what "within" and "shows the cost" mean. */
#define ISO_MAX_ISOLATED_RATIO 2.0            /* bulk, stalled p99 <= 2x idle p99 */
#define ISO_MIN_FIFO_RATIO_LOOPBACK 20.0      /* fifo p99 >= 20x bulk p99 */
#define ISO_MIN_FIFO_RATIO_BOTTLENECK 10.0    /* the same across a tc bottleneck */

enum iso_scenario {
    ISO_IDLE,     /* pings alone */
    ISO_BULK,     /* pings on coordination, a saturating stream on data */
    ISO_STALLED,  /* as bulk, with the server's data consumer paused */
    ISO_FIFO,     /* pings and the stream both on the data channel */
    ISO_SCENARIOS
};

const char *iso_scenario_name(enum iso_scenario s);
/* The scenario of that name, or -1. */
int iso_scenario_parse(const char *name);

/* What both roles of one scenario need to know. */
struct iso_params {
    enum iso_scenario scenario;
    double duration_s;        /* measured time, after the warm-up */
    uint64_t bulk_size;       /* bytes per bulk message */
    double ping_rate_hz;
};

/* Data channel limits derived from the bulk size (identical at both ends). */
uint64_t iso_data_window(const struct iso_params *p);
/* Pool size of each role's worker: room for the window and queue, twice. */
size_t iso_pool_bytes(const struct iso_params *p);

/* What the client measured in one scenario. */
struct iso_client_result {
    fdn_histogram one_way_ns;     /* RTT/2 of every ping sent in the window */
    uint64_t ping_timeouts;       /* pings of the window that got no answer */
    uint64_t bulk_bytes;          /* bulk bytes the server confirmed in the window */
    double bulk_seconds;          /* the span those bytes were counted over */
    uint64_t data_credit_stalls;  /* times the data channel ran out of credit */
    uint64_t data_send_eagain;    /* fdn_send() refusals on the data channel */
};

/* What the server counted over its whole life. */
struct iso_server_result {
    uint64_t bulk_msgs, bulk_bytes;
    uint64_t seq_errors;          /* bulk messages out of order or missing */
    uint64_t requests;            /* pings answered */
    uint64_t respond_errors;      /* fdn_respond() failures */
};

/* ---- Roles (isolate_roles.c): return 0 or a negative errno --------------- */

/* Listens on tcp://listen_host:0, reports the bound address, serves one
 * client, then reports its counters once that client has gone. */
int iso_run_server(const struct iso_params *p, const char *listen_host, int report_fd);
/* Connects to addr, warms up, measures, and reports. */
int iso_run_client(const struct iso_params *p, const char *addr, int report_fd);

/* ---- The pipe protocol (isolate_proto.c) --------------------------------- */

/* The longest line: every histogram bucket as "[1151,18446744073709551615],". */
#define ISO_LINE_MAX (FDN_HIST_BUCKETS * 32 + 1024)

/* Each writes one JSON line; 0 or a negative errno. */
int iso_write_listen(int fd, const char *addr);
int iso_write_client_result(int fd, const struct iso_client_result *r);
int iso_write_server_result(int fd, const struct iso_server_result *r);
/* Each parses one line written by its counterpart; 0 or -EPROTO. */
int iso_parse_listen(const char *line, char *addr, size_t len);
int iso_parse_client_result(const char *line, struct iso_client_result *r);
int iso_parse_server_result(const char *line, struct iso_server_result *r);

/* ---- Report (isolate_report.c) ------------------------------------------- */

struct iso_run {
    struct iso_params params;     /* scenario field unused */
    const char *transport;
    const char *bottleneck;       /* tc rate, or NULL on loopback */
    int cpu_server, cpu_client;
    struct iso_client_result client[ISO_SCENARIOS];
    struct iso_server_result server[ISO_SCENARIOS];
};

enum iso_check { ISO_CHECK_BULK, ISO_CHECK_STALLED, ISO_CHECK_FIFO, ISO_CHECKS };

struct iso_verdict {
    double ratio[ISO_CHECKS];     /* bulk/idle, stalled/idle, fifo/bulk at p99 */
    double limit[ISO_CHECKS];
    bool pass[ISO_CHECKS];
    bool holds;
    char text[512];               /* "HOLDS: ..." or "DOES NOT HOLD: ..." */
};

void iso_judge(const struct iso_run *run, struct iso_verdict *v);
void iso_print_report(const struct iso_run *run, const struct iso_verdict *v);
int iso_write_json(const char *path, const struct iso_run *run, const struct iso_verdict *v);
/* Draws the four latency distributions with gnuplot. */
int iso_plot(const char *png, const struct iso_run *run);

/* ---- Processes and namespaces (isolate_netns.c) -------------------------- */

/* Runs argv (searched in PATH) and waits: its exit status, or a negative
 * errno when it could not run. quiet sends its output to /dev/null. */
int iso_run_command(char *const argv[], bool quiet);
/* True when an executable of that name is in PATH. */
bool iso_have_program(const char *name);

struct iso_netns {
    char client_ns[32], server_ns[32];
    char server_ip[16];
    bool client_made, server_made;
};

/* Two namespaces joined by a veth pair, with a tbf qdisc of the given rate on
 * the client's side. Needs root. On failure everything made is removed. */
int iso_netns_create(struct iso_netns *n, const char *rate);
/* Removes what iso_netns_create made; safe to call twice. */
void iso_netns_destroy(struct iso_netns *n);

#endif
