/* fdn-perf: Foundation's latency and bandwidth tool, in the manner of
 * sockperf and ucx_perftest: a server, and clients that measure ping-pong
 * latency (lat) or one-way streaming bandwidth (bw) against it.
 *
 *   fdn-perf server --listen tcp://127.0.0.1:7000 --cpu 1
 *   fdn-perf lat --connect tcp://127.0.0.1:7000 --cpu 0 --size 64 --duration 5
 *   fdn-perf bw  --connect tcp://127.0.0.1:7000 --cpu 0 --size 1M --json
 *   fdn-perf bw  --connect tcp://127.0.0.1:7000 --size 4K --iters 100000 --verify
 *
 * Exit status: 0 success, 1 runtime error, 2 usage error, 3 bw --verify
 * found messages lost, duplicated, reordered or corrupted. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "perf.h"

#define DEFAULT_DURATION_NS (5ull * 1000 * 1000 * 1000)
#define DEFAULT_WARMUP 10000
#define MAX_WINDOW (1u << 20)

_Static_assert(PERF_VERIFY_HEADER_SIZE == 16, "the --verify usage error says 16 bytes");

static void usage(FILE *to)
{
    fprintf(to,
            "usage: fdn-perf server --listen ADDR [options]\n"
            "       fdn-perf lat --connect ADDR [options]   ping-pong latency\n"
            "       fdn-perf bw --connect ADDR [options]    one-way streaming bandwidth\n"
            "\n"
            "ADDR is tcp://HOST:PORT, or shm://@NAME (a unix socket in the abstract namespace;\n"
            "shm://@ listens on any free name) or shm://PATH for the shared-memory transport;\n"
            "without a scheme, --transport decides (default tcp). Both ends need the same\n"
            "cluster secret: by default ~/.config/foundation/cluster.secret, created (0600,\n"
            "random) when absent, so two ends on one machine agree without configuration.\n"
            "\n"
            "  -l, --listen ADDR        server: address to listen on (port 0: any free port;\n"
            "                           the bound address is printed)\n"
            "  -c, --connect ADDR       lat, bw: the server's address\n"
            "  -s, --size BYTES         payload per message, 1 .. 64M (K and M suffixes are\n"
            "                           KiB and MiB); default 64\n"
            "  -t, --duration SECONDS   measure this long (default 5; lat: after warm-up)\n"
            "  -n, --iters N            measure N messages instead of a duration\n"
            "  -w, --warmup N           lat: round trips before measuring (default %d)\n"
            "  -C, --channel NAME       coordination, events, data, gossip or perf (perf is\n"
            "                           as urgent as coordination, sized like data); default\n"
            "                           coordination for lat, data for bw\n"
            "  -W, --window N           messages this end may queue on the data and perf\n"
            "                           channels before a send must wait (default: as many\n"
            "                           as fill the credit window, 8 .. 1024)\n"
            "  -I, --inflight BYTES     bytes this end hands to the transport per\n"
            "                           connection before they are sent (the node's\n"
            "                           max_inflight_bytes; default: the library's 256K)\n"
            "  -L, --lend-min BYTES     messages of at least this size cross shm by\n"
            "                           reference (the node's lend_min; default: the\n"
            "                           library's 1K; 1: every message)\n"
            "  -a, --cpu N              pin this end to CPU N\n"
            "  -T, --transport NAME     tcp or shm (default: the address's scheme, else tcp);\n"
            "                           given, tcp is TCP even to this host (no same-host\n"
            "                           shared-memory shortcut), so that ss -K can cut it\n"
            "  -S, --session-timeout SECONDS\n"
            "                           how long a session whose connections were lost may\n"
            "                           take to resume before it ends (default 10)\n"
            "  -i, --idle-timeout MS    a connection that receives nothing for this long is\n"
            "                           dead and the session resumes (default 5000); it\n"
            "                           pings after a fifth of that. 5 .. 3600000\n"
            "  -k, --secret-file FILE   cluster secret file (created when absent)\n"
            "  -j, --json               lat, bw: print one JSON object\n"
            "  -V, --verify             bw: number every message and checksum it (FNV-1a-64,\n"
            "                           in a %d-byte header, so --size must be at least\n"
            "                           that); the server reports what was delivered, lost,\n"
            "                           duplicated, reordered and corrupted, and the exit\n"
            "                           status is 3 unless all of those but delivered are 0\n"
            "  -h, --help               show this help\n"
            "\n"
            "lat reports one-way latency (round trip / 2) percentiles in microseconds; bw\n"
            "reports messages/s and GB/s of payload that the server confirmed receiving,\n"
            "and no latency percentiles (a one-way stream has no round trip).\n"
            "\n"
            "FDN_FAULTS, if set, gives the seeded fault layer's rules (docs/RELIABILITY.md);\n"
            "each end then prints its \"fault layer: seed=...\" line to stderr at start and\n"
            "at exit, so that a failing run can be replayed.\n",
            DEFAULT_WARMUP, PERF_VERIFY_HEADER_SIZE);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "fdn-perf: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(fdn-perf --help shows the options)\n");
    return PERF_EXIT_USAGE;
}

/* ---- Values ------------------------------------------------------------------ */

/* A byte count with an optional K or M suffix (binary). */
static bool parse_size(const char *text, uint64_t *out)
{
    char buf[32];
    size_t len = strlen(text);
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, text, len + 1);
    unsigned shift = 0;
    char last = buf[len - 1];
    if (last == 'k' || last == 'K')
        shift = 10;
    else if (last == 'm' || last == 'M')
        shift = 20;
    if (shift)
        buf[len - 1] = '\0';
    uint64_t v;
    if (!cli_parse_u64(buf, 1, PERF_MAX_SIZE >> shift, &v))
        return false;
    *out = v << shift;
    return true;
}

static bool parse_seconds(const char *text, uint64_t *ns)
{
    char *end;
    errno = 0;
    double s = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(s) || s <= 0 || s > 1e6)
        return false;
    *ns = (uint64_t)(s * 1e9);
    return true;
}

/* An unknown transport is an error, not a silent fallback. */
static int set_transport(struct perf_options *o, const char *name)
{
    if (strcmp(name, "tcp") == 0 || strcmp(name, "shm") == 0) {
        o->transport = strcmp(name, "tcp") == 0 ? "tcp" : "shm";
        return -1;
    }
    return usage_error("unknown transport \"%s\" (tcp or shm)", name);
}

/* Accepts "tcp://host:port", "shm://@name" or an address without a scheme
 * (the transport's is added). A scheme picks the transport unless
 * --transport named another, which is an error. */
static int set_address(struct perf_options *o, const char *text, bool transport_given)
{
    const char *sep = strstr(text, "://");
    size_t scheme_len = sep ? (size_t)(sep - text) : 0;
    if (sep && !transport_given && scheme_len == 3 && strncmp(text, "shm", 3) == 0)
        set_transport(o, "shm");
    if (sep && (scheme_len != strlen(o->transport) ||
                strncmp(text, o->transport, scheme_len) != 0))
        return usage_error("address %s does not match --transport",
                           text);
    int n = sep ? snprintf(o->addr, sizeof o->addr, "%s", text)
                : snprintf(o->addr, sizeof o->addr, "%s://%s", o->transport, text);
    if (n < 0 || (size_t)n >= sizeof o->addr)
        return usage_error("address too long: %s", text);
    return -1;
}

/* ---- Command line ------------------------------------------------------------- */

struct raw_options {
    const char *listen, *connect, *transport;
    bool duration_given;
};

/* Applies one option. Returns -1 to go on, or an exit status. */
static int apply_option(int c, const char *arg, struct perf_options *o, struct raw_options *raw)
{
    uint64_t v;
    switch (c) {
    case 'l': raw->listen = arg; return -1;
    case 'c': raw->connect = arg; return -1;
    case 'T': raw->transport = arg; o->transport_given = true; return -1;
    case 'C': o->channel = arg; return -1;
    case 'k': o->secret_file = arg; return -1;
    case 'j': o->json = true; return -1;
    case 'V': o->verify = true; return -1;
    case 's':
        return parse_size(arg, &o->size) ? -1 : usage_error("--size %s: 1 .. 64M bytes", arg);
    case 'S':
        return parse_seconds(arg, &o->session_timeout_ns)
                   ? -1 : usage_error("--session-timeout %s: seconds, more than 0", arg);
    case 'i':
        if (!cli_parse_u64(arg, 5, 3600000, &v))
            return usage_error("--idle-timeout %s: 5 .. 3600000 milliseconds", arg);
        o->idle_timeout_ns = v * 1000000;
        return -1;
    case 't':
        raw->duration_given = true;
        return parse_seconds(arg, &o->duration_ns)
                   ? -1 : usage_error("--duration %s: seconds, more than 0", arg);
    case 'n':
        return cli_parse_u64(arg, 1, UINT64_MAX, &o->iters)
                   ? -1 : usage_error("--iters %s: a positive count", arg);
    case 'w':
        return cli_parse_u64(arg, 0, UINT64_MAX, &o->warmup)
                   ? -1 : usage_error("--warmup %s: a count", arg);
    case 'W':
        if (!cli_parse_u64(arg, 1, MAX_WINDOW, &v))
            return usage_error("--window %s: 1 .. 1048576 messages", arg);
        o->window = (uint32_t)v;
        return -1;
    case 'I':
        if (!parse_size(arg, &v))
            return usage_error("--inflight %s: 1 .. 64M bytes", arg);
        o->inflight = (uint32_t)v;
        return -1;
    case 'L':
        if (!parse_size(arg, &v))
            return usage_error("--lend-min %s: 1 .. 64M bytes", arg);
        o->lend_min = (uint32_t)v;
        return -1;
    case 'a':
        if (!cli_parse_u64(arg, 0, INT_MAX, &v))
            return usage_error("--cpu %s: a CPU number", arg);
        o->cpu = (int)v;
        return -1;
    case 'h':
        usage(stdout);
        return PERF_EXIT_OK;
    default:
        usage(stderr);
        return PERF_EXIT_USAGE;
    }
}

static int parse_mode(const char *word, struct perf_options *o)
{
    if (strcmp(word, "server") == 0)
        o->mode = PERF_SERVER;
    else if (strcmp(word, "lat") == 0)
        o->mode = PERF_LAT;
    else if (strcmp(word, "bw") == 0)
        o->mode = PERF_BW;
    else
        return usage_error("unknown command \"%s\" (server, lat or bw)", word);
    return -1;
}

/* Checks what only makes sense together and fills in the defaults. */
static int finish_options(struct perf_options *o, const struct raw_options *raw)
{
    int status;
    if (raw->transport && (status = set_transport(o, raw->transport)) >= 0)
        return status;
    bool server = o->mode == PERF_SERVER;
    if (server ? raw->connect != NULL : raw->listen != NULL)
        return usage_error("%s", server ? "--connect is for lat and bw"
                                        : "--listen is for the server");
    const char *addr = server ? raw->listen : raw->connect;
    if (!addr)
        return usage_error("%s", server ? "server needs --listen ADDR"
                                        : "lat and bw need --connect ADDR");
    if ((status = set_address(o, addr, raw->transport != NULL)) >= 0)
        return status;
    if (raw->duration_given && o->iters)
        return usage_error("%s", "--duration and --iters exclude each other");
    if (!o->iters && !raw->duration_given)
        o->duration_ns = DEFAULT_DURATION_NS;
    if (o->iters)
        o->duration_ns = 0;
    if (!o->channel)
        o->channel = o->mode == PERF_BW ? "data" : "coordination";
    if (o->verify && o->mode != PERF_BW)
        return usage_error("%s", "--verify is for bw");
    if (o->verify && o->size < PERF_VERIFY_HEADER_SIZE)
        return usage_error("%s", "--verify needs --size of at least 16 bytes: each message "
                                 "starts with its sequence number and checksum");
    return -1;
}

static int parse_options(int argc, char **argv, struct perf_options *o)
{
    static const struct option long_options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"connect", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 't'},
        {"iters", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},
        {"channel", required_argument, NULL, 'C'},
        {"window", required_argument, NULL, 'W'},
        {"inflight", required_argument, NULL, 'I'},
        {"lend-min", required_argument, NULL, 'L'},
        {"cpu", required_argument, NULL, 'a'},
        {"transport", required_argument, NULL, 'T'},
        {"session-timeout", required_argument, NULL, 'S'},
        {"idle-timeout", required_argument, NULL, 'i'},
        {"secret-file", required_argument, NULL, 'k'},
        {"json", no_argument, NULL, 'j'},
        {"verify", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || argv[1][0] == '-') {
        bool help = argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
        usage(help ? stdout : stderr);
        return help ? PERF_EXIT_OK : PERF_EXIT_USAGE;
    }
    int status = parse_mode(argv[1], o);
    if (status >= 0)
        return status;
    struct raw_options raw = {0};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "l:c:s:t:n:w:C:W:I:L:a:T:S:i:k:jVh", long_options, NULL)) != -1)
        if ((status = apply_option(c, optarg, o, &raw)) >= 0)
            return status;
    if (optind < argc)
        return usage_error("unexpected argument \"%s\"", argv[optind]);
    return finish_options(o, &raw);
}

int main(int argc, char **argv)
{
    struct perf_options o = {
        .transport = "tcp",
        .size = 64,
        .warmup = DEFAULT_WARMUP,
        .cpu = -1,
    };
    int status = parse_options(argc, argv, &o);
    if (status >= 0)
        return status;
    perf_install_signal_handlers();
    return o.mode == PERF_SERVER ? perf_run_server(&o) : perf_run_client(&o);
}
