/* zmq_perf: a libzmq peer for bench/compare.py, shaped like fdn-perf (same
 * commands, options and --json keys) so the comparison reads both alike.
 *
 *   zmq_perf server --listen tcp://127.0.0.1:7000 --cpu 1
 *   zmq_perf lat --connect tcp://127.0.0.1:7000 --cpu 0 --size 64 --duration 5 --json
 *   zmq_perf bw  --connect ipc:///tmp/zmq-perf.sock --cpu 0 --size 1M --json
 *
 * One PAIR socket on each side: one connection, ordered, no routing
 * envelope, the closest libzmq gets to a point-to-point channel.
 *
 * Protocol on that socket (the client speaks first):
 *   "lat" or "bw"      starts a run;
 *   payload messages   lat: the server sends each one back (the received
 *                      message itself, so the server copies nothing);
 *                      bw: the server counts them;
 *   an empty message   ends the run; the server answers lat with an empty
 *                      message and bw with 16 bytes: messages and bytes
 *                      received (two native-endian uint64: same host).
 * The server then waits for the next run; it stops on SIGINT or SIGTERM.
 *
 * What happens to the payload: the client hands its buffer to libzmq without
 * a copy (zmq_msg_init_data; the buffer is never written while a run is in
 * flight); libzmq's I/O thread writes it to the socket (one kernel copy) and
 * the receiving I/O thread reads it into a buffer of its own (one kernel
 * copy), which zmq_msg_recv hands to the application without copying. Each
 * side's application thread and I/O thread share its one pinned CPU.
 *
 * Latency is one-way, round trip / 2, in microseconds, exact percentiles of
 * every measured round trip. Bandwidth counts the payload the server
 * confirmed receiving, from the first send to the confirmation.
 *
 * Exit status: 0 success, 1 runtime error, 2 usage error. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2
#define MAX_SIZE (64ull << 20)
#define DEFAULT_WARMUP 1000
/* Messages queued per socket are bounded by bytes, not only by libzmq's
 * default of 1000 messages: 1000 x 4 MiB would leave seconds of backlog to
 * drain after the measured interval. */
#define QUEUE_BYTES (32ull << 20)

enum mode { MODE_SERVER, MODE_LAT, MODE_BW };

struct options {
    enum mode mode;
    const char *addr;
    uint64_t size;
    double duration_s;
    uint64_t iters;
    uint64_t warmup;
    int cpu;
    bool json;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: zmq_perf server --listen ADDR [--cpu N]\n"
            "       zmq_perf lat --connect ADDR [options]   ping-pong latency\n"
            "       zmq_perf bw --connect ADDR [options]    one-way streaming bandwidth\n"
            "\n"
            "ADDR is a libzmq endpoint: tcp://HOST:PORT or ipc://PATH.\n"
            "\n"
            "  -l, --listen ADDR        server: endpoint to bind\n"
            "  -c, --connect ADDR       lat, bw: the server's endpoint\n"
            "  -s, --size BYTES         payload per message, 1 .. 64M (K and M suffixes are\n"
            "                           KiB and MiB); default 64\n"
            "  -t, --duration SECONDS   measure this long (default 5)\n"
            "  -n, --iters N            measure N messages instead of a duration\n"
            "  -w, --warmup N           lat: round trips before measuring (default %d, and\n"
            "                           never more than a tenth of --duration)\n"
            "  -a, --cpu N              pin this process (and libzmq's I/O thread) to CPU N\n"
            "  -j, --json               lat, bw: print one JSON object\n"
            "  -h, --help               show this help\n",
            DEFAULT_WARMUP);
}

static int usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "zmq_perf: %s%s\n(zmq_perf --help shows the options)\n", what, arg);
    return EXIT_USAGE;
}

static bool parse_u64(const char *text, uint64_t max, uint64_t *out)
{
    char *end;
    if (!*text || *text < '0' || *text > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_size(const char *text, uint64_t *out)
{
    char buf[32];
    size_t len = strlen(text);
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, text, len + 1);
    unsigned shift = 0;
    if (buf[len - 1] == 'k' || buf[len - 1] == 'K')
        shift = 10;
    else if (buf[len - 1] == 'm' || buf[len - 1] == 'M')
        shift = 20;
    if (shift)
        buf[len - 1] = '\0';
    uint64_t v;
    if (!parse_u64(buf, MAX_SIZE >> shift, &v) || v == 0)
        return false;
    *out = v << shift;
    return true;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option long_options[] = {
        {"listen", required_argument, NULL, 'l'},  {"connect", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},    {"duration", required_argument, NULL, 't'},
        {"iters", required_argument, NULL, 'n'},   {"warmup", required_argument, NULL, 'w'},
        {"cpu", required_argument, NULL, 'a'},     {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    if (argc < 2 || argv[1][0] == '-') {
        bool help = argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"));
        usage(help ? stdout : stderr);
        return help ? 0 : EXIT_USAGE;
    }
    if (!strcmp(argv[1], "server"))
        o->mode = MODE_SERVER;
    else if (!strcmp(argv[1], "lat"))
        o->mode = MODE_LAT;
    else if (!strcmp(argv[1], "bw"))
        o->mode = MODE_BW;
    else
        return usage_error("unknown command ", argv[1]);

    const char *listen = NULL, *connect = NULL;
    bool duration_given = false;
    uint64_t v;
    char *end;
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "l:c:s:t:n:w:a:jh", long_options, NULL)) != -1) {
        switch (c) {
        case 'l': listen = optarg; break;
        case 'c': connect = optarg; break;
        case 'j': o->json = true; break;
        case 's':
            if (!parse_size(optarg, &o->size))
                return usage_error("--size: 1 .. 64M bytes, not ", optarg);
            break;
        case 't':
            errno = 0;
            o->duration_s = strtod(optarg, &end);
            if (errno || *end || end == optarg || !isfinite(o->duration_s) ||
                o->duration_s <= 0)
                return usage_error("--duration: seconds, more than 0, not ", optarg);
            duration_given = true;
            break;
        case 'n':
            if (!parse_u64(optarg, UINT64_MAX, &o->iters) || o->iters == 0)
                return usage_error("--iters: a positive count, not ", optarg);
            break;
        case 'w':
            if (!parse_u64(optarg, UINT64_MAX, &o->warmup))
                return usage_error("--warmup: a count, not ", optarg);
            break;
        case 'a':
            if (!parse_u64(optarg, CPU_SETSIZE - 1, &v))
                return usage_error("--cpu: a CPU number, not ", optarg);
            o->cpu = (int)v;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument ", argv[optind]);
    bool server = o->mode == MODE_SERVER;
    if (server ? connect != NULL : listen != NULL)
        return usage_error(server ? "--connect is for lat and bw" : "--listen is for the server",
                           "");
    o->addr = server ? listen : connect;
    if (!o->addr)
        return usage_error(server ? "server needs --listen ADDR" : "lat and bw need --connect ADDR",
                           "");
    if (duration_given && o->iters)
        return usage_error("--duration and --iters exclude each other", "");
    return -1;
}

/* ---- Sockets ------------------------------------------------------------------ */

static int fail(const char *what)
{
    fprintf(stderr, "zmq_perf: %s: %s\n", what, zmq_strerror(zmq_errno()));
    return EXIT_RUNTIME;
}

static void *open_pair(void *ctx, uint64_t size)
{
    void *s = zmq_socket(ctx, ZMQ_PAIR);
    if (!s)
        return NULL;
    uint64_t per_msg = size ? size : 1;
    int hwm = (int)(QUEUE_BYTES / per_msg);
    hwm = hwm < 8 ? 8 : hwm > 1000 ? 1000 : hwm;
    int linger = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    return s;
}

static void no_free(void *data, void *hint)
{
    (void)data;
    (void)hint;
}

/* Sends the caller's buffer without copying it: the buffer outlives the
 * socket and is never written during a run. */
static int send_buffer(void *s, void *buf, size_t len)
{
    zmq_msg_t m;
    if (zmq_msg_init_data(&m, buf, len, no_free, NULL) != 0)
        return -1;
    if (zmq_msg_send(&m, s, 0) < 0) {
        zmq_msg_close(&m);
        return -1;
    }
    return 0;
}

/* Receives one message; returns its size, or -1 (errno set by libzmq). */
static int64_t recv_discard(void *s)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    int n = zmq_msg_recv(&m, s, 0);
    int64_t len = n < 0 ? -1 : (int64_t)zmq_msg_size(&m);
    zmq_msg_close(&m);
    return len;
}

/* ---- Server ------------------------------------------------------------------- */

/* Serves one run after its "lat" or "bw" message; returns 0, or -1 when
 * interrupted or on a socket error. */
static int serve_run(void *s, bool lat)
{
    uint64_t counts[2] = {0, 0};
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s, 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        size_t len = zmq_msg_size(&m);
        if (len == 0) {
            zmq_msg_close(&m);
            break;
        }
        counts[0]++;
        counts[1] += len;
        if (lat) {
            /* Sending the received message moves it back: no copy. */
            if (zmq_msg_send(&m, s, 0) < 0) {
                zmq_msg_close(&m);
                return -1;
            }
        } else {
            zmq_msg_close(&m);
        }
    }
    int rc = lat ? zmq_send(s, "", 0, 0) : zmq_send(s, counts, sizeof counts, 0);
    return rc < 0 ? -1 : 0;
}

static int run_server(void *ctx, const struct options *o)
{
    void *s = open_pair(ctx, 1);
    if (!s)
        return fail("socket");
    if (zmq_bind(s, o->addr) != 0) {
        fprintf(stderr, "zmq_perf server: bind %s: %s\n", o->addr, zmq_strerror(zmq_errno()));
        zmq_close(s);
        return EXIT_RUNTIME;
    }
    char bound[256];
    size_t bound_len = sizeof bound;
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &bound_len) != 0)
        snprintf(bound, sizeof bound, "%s", o->addr);
    printf("zmq_perf server: listening on %s\n", bound);

    uint64_t runs = 0;
    while (!stop_requested) {
        char word[8];
        int n = zmq_recv(s, word, sizeof word - 1, 0);
        if (n < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        word[n < (int)sizeof word - 1 ? n : (int)sizeof word - 1] = '\0';
        bool lat = !strcmp(word, "lat");
        if (!lat && strcmp(word, "bw") != 0)
            continue; /* a stray end marker or payload: not the start of a run */
        if (serve_run(s, lat) != 0)
            break;
        runs++;
    }
    printf("zmq_perf server: stopped; %" PRIu64 " runs served\n", runs);
    zmq_close(s);
    return 0;
}

/* ---- Clients ------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The sample at rank q of the sorted round trips, halved, in microseconds. */
static double one_way_us(const uint64_t *sorted, size_t n, double q)
{
    size_t i = (size_t)ceil(q * (double)n);
    i = i == 0 ? 0 : i - 1;
    if (i >= n)
        i = n - 1;
    return (double)sorted[i] / 2e3;
}

static void print_run_head(const char *mode, const struct options *o)
{
    const char *transport = strncmp(o->addr, "ipc://", 6) == 0 ? "zmq-ipc" : "zmq-tcp";
    printf("{\"mode\": \"%s\", \"transport\": \"%s\", \"address\": \"%s\", \"channel\": \"pair\", "
           "\"size\": %" PRIu64,
           mode, transport, o->addr, o->size);
}

static bool done(const struct options *o, uint64_t count, uint64_t start, uint64_t now)
{
    if (stop_requested)
        return true;
    if (o->iters)
        return count >= o->iters;
    return (double)(now - start) >= o->duration_s * 1e9;
}

static int run_lat(void *s, const struct options *o, char *buf)
{
    size_t cap = o->iters ? (size_t)o->iters : 1u << 16, n = 0;
    uint64_t *rtt = malloc(cap * sizeof *rtt);
    if (!rtt) {
        fprintf(stderr, "zmq_perf: out of memory\n");
        return EXIT_RUNTIME;
    }
    if (zmq_send(s, "lat", 3, 0) < 0)
        goto sock_error;

    /* Warm-up: connection set-up, first-touch page faults, caches. */
    uint64_t warm_start = now_ns(), warmed = 0;
    double warm_limit_ns = o->iters ? INFINITY : o->duration_s * 1e8;
    while (warmed < o->warmup && (double)(now_ns() - warm_start) < warm_limit_ns) {
        if (send_buffer(s, buf, o->size) < 0 || recv_discard(s) < 0)
            goto sock_error;
        warmed++;
    }

    uint64_t start = now_ns(), t0 = start;
    while (!done(o, n, start, t0)) {
        if (send_buffer(s, buf, o->size) < 0)
            goto sock_error;
        int64_t len = recv_discard(s);
        if (len < 0)
            goto sock_error;
        if ((uint64_t)len != o->size) {
            fprintf(stderr, "zmq_perf: echo of %" PRId64 " bytes, sent %" PRIu64 "\n", len,
                    o->size);
            free(rtt);
            return EXIT_RUNTIME;
        }
        uint64_t t1 = now_ns();
        if (n == cap) {
            uint64_t *grown = realloc(rtt, 2 * cap * sizeof *rtt);
            if (!grown) {
                fprintf(stderr, "zmq_perf: out of memory\n");
                free(rtt);
                return EXIT_RUNTIME;
            }
            rtt = grown;
            cap *= 2;
        }
        rtt[n++] = t1 - t0;
        t0 = t1;
    }
    if (zmq_send(s, "", 0, 0) < 0 || recv_discard(s) < 0)
        goto sock_error;
    if (n == 0) {
        fprintf(stderr, "zmq_perf: no round trip measured\n");
        free(rtt);
        return EXIT_RUNTIME;
    }

    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)rtt[i];
    qsort(rtt, n, sizeof *rtt, cmp_u64);
    double p50 = one_way_us(rtt, n, 0.5), p90 = one_way_us(rtt, n, 0.9),
           p99 = one_way_us(rtt, n, 0.99), p999 = one_way_us(rtt, n, 0.999),
           p9999 = one_way_us(rtt, n, 0.9999), max = (double)rtt[n - 1] / 2e3,
           mean = sum / (double)n / 2e3;
    if (o->json) {
        print_run_head("lat", o);
        printf(", \"messages\": %zu, \"warmup\": %" PRIu64 ", \"p50_us\": %.3f, \"p90_us\": %.3f, "
               "\"p99_us\": %.3f, \"p999_us\": %.3f, \"p9999_us\": %.3f, \"max_us\": %.3f, "
               "\"mean_us\": %.3f}\n",
               n, warmed, p50, p90, p99, p999, p9999, max, mean);
    } else {
        printf("zmq_perf lat %s: %zu round trips of %" PRIu64 " B; one-way us: p50 %.3f  "
               "p90 %.3f  p99 %.3f  p99.9 %.3f  p99.99 %.3f  max %.3f  mean %.3f\n",
               o->addr, n, o->size, p50, p90, p99, p999, p9999, max, mean);
    }
    free(rtt);
    return 0;

sock_error:
    free(rtt);
    return fail("lat");
}

static int run_bw(void *s, const struct options *o, char *buf)
{
    if (zmq_send(s, "bw", 2, 0) < 0)
        return fail("bw");
    uint64_t start = now_ns(), now = start, sent = 0;
    while (!done(o, sent, start, now)) {
        if (send_buffer(s, buf, o->size) < 0)
            return fail("bw: send");
        sent++;
        /* Reading the clock costs little next to a send; every 16th keeps the
         * overshoot of a short run small whatever the size. */
        if ((sent & 15) == 0)
            now = now_ns();
    }
    uint64_t counts[2];
    if (zmq_send(s, "", 0, 0) < 0)
        return fail("bw: end");
    int n = zmq_recv(s, counts, sizeof counts, 0);
    uint64_t end = now_ns();
    if (n != (int)sizeof counts) {
        if (n < 0)
            return fail("bw: confirmation");
        fprintf(stderr, "zmq_perf: confirmation of %d bytes\n", n);
        return EXIT_RUNTIME;
    }
    double elapsed = (double)(end - start) / 1e9;
    double rate = (double)counts[0] / elapsed, gbps = (double)counts[1] / elapsed / 1e9;
    if (o->json) {
        print_run_head("bw", o);
        printf(", \"messages\": %" PRIu64 ", \"sent\": %" PRIu64 ", \"bytes\": %" PRIu64
               ", \"elapsed_s\": %.6f, \"messages_per_s\": %.1f, \"gbytes_per_s\": %.6f}\n",
               counts[0], sent, counts[1], elapsed, rate, gbps);
    } else {
        printf("zmq_perf bw %s: %" PRIu64 " of %" PRIu64 " messages of %" PRIu64
               " B confirmed in %.3f s: %.0f msg/s, %.3f GB/s\n",
               o->addr, counts[0], sent, o->size, elapsed, rate, gbps);
    }
    return counts[0] == sent ? 0 : EXIT_RUNTIME;
}

static int run_client(void *ctx, const struct options *o)
{
    char *buf = malloc(o->size);
    if (!buf) {
        fprintf(stderr, "zmq_perf: out of memory\n");
        return EXIT_RUNTIME;
    }
    memset(buf, 0xa5, o->size);
    void *s = open_pair(ctx, o->size);
    if (!s) {
        free(buf);
        return fail("socket");
    }
    int rc;
    if (zmq_connect(s, o->addr) != 0) {
        fprintf(stderr, "zmq_perf: connect %s: %s\n", o->addr, zmq_strerror(zmq_errno()));
        rc = EXIT_RUNTIME;
    } else {
        rc = o->mode == MODE_LAT ? run_lat(s, o, buf) : run_bw(s, o, buf);
    }
    /* The socket goes before the buffer: libzmq may still hold references
     * to it until the socket is closed and the context terminated. */
    zmq_close(s);
    zmq_ctx_term(ctx);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {.size = 64, .duration_s = 5.0, .warmup = DEFAULT_WARMUP, .cpu = -1};
    int status = parse_options(argc, argv, &o);
    if (status >= 0)
        return status;
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Pinned before the context exists, so libzmq's I/O thread inherits it. */
    if (o.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(o.cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0) {
            fprintf(stderr, "zmq_perf: cannot pin to CPU %d: %s\n", o.cpu, strerror(errno));
            return EXIT_RUNTIME;
        }
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    void *ctx = zmq_ctx_new();
    if (!ctx)
        return fail("context");
    if (o.mode == MODE_SERVER) {
        status = run_server(ctx, &o);
        zmq_ctx_term(ctx);
        return status;
    }
    return run_client(ctx, &o);
}
