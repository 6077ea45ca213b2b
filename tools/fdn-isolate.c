/* fdn-isolate: Foundation's head-of-line isolation validator.
 *
 * Implements "Head-of-line isolation, the way it is judged" (BENCHMARKS.md):
 * two nodes in two processes; 64-byte request/response pings on the
 * coordination channel while a saturating stream of bulk messages flows on
 * the data channel in the same direction, in four scenarios (idle, bulk,
 * stalled consumer, everything on one FIFO channel); ping latency
 * percentiles for each, the ratios, and a verdict.
 *
 * Process layout. This parent runs no Foundation code. For each scenario it
 * starts a fresh server and a fresh client, this executable again
 * (/proc/self/exe with --role), each pinned to its own CPU, optionally each
 * inside its network namespace. The server listens on port 0 and reports the
 * bound address on a pipe; the client connects, measures, and reports its
 * histogram as a JSON line; the server reports what it received once the
 * client has left. Fresh processes per scenario mean that no queue, credit
 * or pool state of one scenario leaks into the next (the stalled scenario
 * ends with full queues).
 *
 * Exit status: 0 when every scenario ran, whatever the verdict (timings are
 * results, not assertions); 1 when the run failed; 2 for bad usage; 77 when
 * --netns-bottleneck is asked for without root. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fdn/worker.h>

#include "cli.h"
#include "isolate.h"

#define EXIT_USAGE 2
#define EXIT_SKIP 77

/* How long the parent waits for each step of a scenario before calling it a
 * failure: children that hang are killed, never waited for forever. */
#define SERVER_START_TIMEOUT_NS 20000000000ull
#define REPORT_MARGIN_NS 60000000000ull
#define EXIT_TIMEOUT_NS 20000000000ull

/* The fd on which a role writes its report lines. */
#define ROLE_REPORT_FD 3
#define ROLE_REPORT_FD_TEXT "3"

static const char *const scenario_names[ISO_SCENARIOS] = {
    [ISO_IDLE] = "idle", [ISO_BULK] = "bulk", [ISO_STALLED] = "stalled", [ISO_FIFO] = "fifo",
};

const char *iso_scenario_name(enum iso_scenario s) { return scenario_names[s]; }

int iso_scenario_parse(const char *name)
{
    for (int s = 0; s < ISO_SCENARIOS; s++)
        if (strcmp(name, scenario_names[s]) == 0)
            return s;
    return -1;
}

uint64_t iso_data_window(const struct iso_params *p)
{
    return ISO_DATA_WINDOW_MESSAGES * p->bulk_size;
}

size_t iso_pool_bytes(const struct iso_params *p)
{
    /* Sender: the queue, the window in flight and one refused message;
     * receiver: the window. Twice that, plus room for pings and slabs. */
    uint64_t per_side = (ISO_DATA_QUEUE_MESSAGES + ISO_DATA_WINDOW_MESSAGES + 1) * p->bulk_size;
    return (size_t)(2 * per_side + (64u << 20));
}

/* ---- Options ------------------------------------------------------------- */

struct options {
    struct iso_params params;
    const char *transport;
    const char *bottleneck;
    const char *json_path, *plot_path;
    int cpu_server, cpu_client;
    /* Set only when this process is one of the roles. */
    const char *role;
    const char *connect_addr;
    const char *listen_host;
    int report_fd;
};

#define MAX_BULK_SIZE (256ull << 20)

static void usage(FILE *to)
{
    fprintf(to,
            "usage: fdn-isolate [options]\n"
            "Measures whether Foundation keeps urgent messages free of head-of-line\n"
            "blocking: ping latency with no bulk traffic, with bulk traffic on another\n"
            "channel, with that channel's consumer stalled, and with everything on one\n"
            "FIFO channel. Exits 0 when the run completed, whatever the verdict.\n"
            "\n"
            "  --transport NAME          tcp or shm (shared memory; not with\n"
            "                            --netns-bottleneck); default tcp\n"
            "  --duration S              seconds measured per scenario (default 5)\n"
            "  --bulk-size BYTES         bulk message size (default 1048576)\n"
            "  --ping-rate HZ            pings per second (default 1000)\n"
            "  --netns-bottleneck RATE   run across a veth pair between two network\n"
            "                            namespaces with a tc tbf of RATE (e.g. 1gbit) on\n"
            "                            the client -> server side; needs root\n"
            "  --json FILE               write the results as JSON\n"
            "  --plot FILE.png           draw the latency distributions (needs gnuplot)\n"
            "  --cpu-server N            CPU of the server (default: first allowed)\n"
            "  --cpu-client N            CPU of the client (default: second allowed)\n"
            "  -h, --help                show this help\n");
}

static bool parse_double(const char *text, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min && v <= max))
        return false;
    *out = v;
    return true;
}

static bool parse_int(const char *text, int min, int max, int *out)
{
    uint64_t v;
    if (!cli_parse_u64(text, (uint64_t)min, (uint64_t)max, &v))
        return false;
    *out = (int)v;
    return true;
}

enum option_id {
    OPT_TRANSPORT = 256, OPT_DURATION, OPT_BULK_SIZE, OPT_PING_RATE, OPT_BOTTLENECK, OPT_JSON,
    OPT_PLOT, OPT_CPU_SERVER, OPT_CPU_CLIENT, OPT_ROLE, OPT_SCENARIO, OPT_REPORT_FD,
    OPT_CONNECT, OPT_LISTEN_HOST,
};

static bool apply_option(struct options *o, int id, const char *arg)
{
    struct iso_params *p = &o->params;
    switch (id) {
    case OPT_TRANSPORT:
        o->transport = arg;
        return strcmp(arg, "tcp") == 0 || strcmp(arg, "shm") == 0;
    case OPT_DURATION: return parse_double(arg, 0.01, 86400, &p->duration_s);
    case OPT_BULK_SIZE: return cli_parse_u64(arg, 64, MAX_BULK_SIZE, &p->bulk_size);
    case OPT_PING_RATE: return parse_double(arg, 0.1, 1e6, &p->ping_rate_hz);
    case OPT_BOTTLENECK: o->bottleneck = arg; return *arg != '\0';
    case OPT_JSON: o->json_path = arg; return true;
    case OPT_PLOT: o->plot_path = arg; return true;
    case OPT_CPU_SERVER: return parse_int(arg, 0, CPU_SETSIZE - 1, &o->cpu_server);
    case OPT_CPU_CLIENT: return parse_int(arg, 0, CPU_SETSIZE - 1, &o->cpu_client);
    case OPT_ROLE: o->role = arg; return !strcmp(arg, "server") || !strcmp(arg, "client");
    case OPT_SCENARIO: p->scenario = (enum iso_scenario)iso_scenario_parse(arg);
        return iso_scenario_parse(arg) >= 0;
    case OPT_REPORT_FD: return parse_int(arg, 0, INT_MAX, &o->report_fd);
    case OPT_CONNECT: o->connect_addr = arg; return true;
    case OPT_LISTEN_HOST: o->listen_host = arg; return true;
    default: return false;
    }
}

/* Returns -1 to go on, or the exit status when the options say to stop. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option long_options[] = {
        {"transport", required_argument, NULL, OPT_TRANSPORT},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"bulk-size", required_argument, NULL, OPT_BULK_SIZE},
        {"ping-rate", required_argument, NULL, OPT_PING_RATE},
        {"netns-bottleneck", required_argument, NULL, OPT_BOTTLENECK},
        {"json", required_argument, NULL, OPT_JSON},
        {"plot", required_argument, NULL, OPT_PLOT},
        {"cpu-server", required_argument, NULL, OPT_CPU_SERVER},
        {"cpu-client", required_argument, NULL, OPT_CPU_CLIENT},
        /* Internal: how the parent starts the roles. */
        {"role", required_argument, NULL, OPT_ROLE},
        {"scenario", required_argument, NULL, OPT_SCENARIO},
        {"report-fd", required_argument, NULL, OPT_REPORT_FD},
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"listen-host", required_argument, NULL, OPT_LISTEN_HOST},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){
        .params = {.duration_s = 5, .bulk_size = 1u << 20, .ping_rate_hz = 1000},
        .transport = "tcp", .cpu_server = -1, .cpu_client = -1, .report_fd = -1,
    };
    int c, index = 0;
    while ((c = getopt_long(argc, argv, "h", long_options, &index)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return EXIT_SUCCESS;
        }
        if (c == '?' || !apply_option(o, c, optarg)) {
            if (c != '?')
                fprintf(stderr, "fdn-isolate: bad value for --%s: %s\n",
                        long_options[index].name, optarg);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fdn-isolate: unexpected argument %s\n", argv[optind]);
        return EXIT_USAGE;
    }
    return -1;
}

/* ---- Roles --------------------------------------------------------------- */

static int run_role(const struct options *o)
{
    int rc;
    if (o->report_fd < 0)
        rc = -EINVAL;
    else if (!strcmp(o->role, "server"))
        rc = iso_run_server(&o->params, o->listen_host ? o->listen_host : "127.0.0.1",
                            o->report_fd);
    else
        rc = o->connect_addr ? iso_run_client(&o->params, o->connect_addr, o->report_fd)
                             : -EINVAL;
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- Signals: children die, namespaces are removed, then we die --------- */

static volatile sig_atomic_t stop_signal;
static volatile pid_t live_children[2];

static void on_stop_signal(int sig)
{
    stop_signal = sig;
    for (int i = 0; i < 2; i++)
        if (live_children[i] > 0)
            kill(live_children[i], SIGKILL);
}

/* Without SA_RESTART, so that a blocked poll() or waitpid() returns. */
static void catch_stop_signals(void)
{
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void die_of_stop_signal(void)
{
    signal(stop_signal, SIG_DFL);
    raise(stop_signal);
}

/* ---- Children ------------------------------------------------------------ */

struct line_reader {
    int fd;
    char *buf;
    size_t have, consumed;
};

struct child {
    const char *role;
    pid_t pid;
    int slot;                  /* index in live_children */
    struct line_reader reader;
};

/* Reads the child's next line (NUL-terminated, without '\n') into *line.
 * Returns 0, -ETIMEDOUT, -EPIPE when the child closed its end, or -EINTR
 * when a stop signal arrived. */
static int read_line(struct line_reader *r, uint64_t deadline_ns, char **line)
{
    memmove(r->buf, r->buf + r->consumed, r->have - r->consumed);
    r->have -= r->consumed;
    r->consumed = 0;
    for (;;) {
        char *nl = memchr(r->buf, '\n', r->have);
        if (nl) {
            *nl = '\0';
            r->consumed = (size_t)(nl - r->buf) + 1;
            *line = r->buf;
            return 0;
        }
        uint64_t now = fdn_now_ns();
        if (stop_signal)
            return -EINTR;
        if (now >= deadline_ns)
            return -ETIMEDOUT;
        if (r->have == ISO_LINE_MAX)
            return -EPROTO;
        int wait_ms = (int)((deadline_ns - now) / 1000000) + 1;
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        if (poll(&pfd, 1, wait_ms) <= 0)
            continue; /* timeout or signal: both checked above */
        ssize_t n = read(r->fd, r->buf + r->have, ISO_LINE_MAX - r->have);
        if (n == 0)
            return -EPIPE;
        if (n > 0)
            r->have += (size_t)n;
        else if (errno != EINTR)
            return -errno;
    }
}

struct spawn_args {
    const char *self;          /* our own executable */
    const struct iso_params *params;
    const char *role;
    const char *flag, *value;  /* --connect ADDR or --listen-host HOST */
    const char *netns;         /* run inside this namespace, or NULL */
    int cpu;
};

/* The role's command line: [ip netns exec NS] self --role ... */
static void build_argv(const struct spawn_args *a, char text[3][32], char **argv)
{
    int n = 0;
    if (a->netns) {
        argv[n++] = "ip";
        argv[n++] = "netns";
        argv[n++] = "exec";
        argv[n++] = (char *)a->netns;
    }
    snprintf(text[0], 32, "%.17g", a->params->duration_s);
    snprintf(text[1], 32, "%" PRIu64, a->params->bulk_size);
    snprintf(text[2], 32, "%.17g", a->params->ping_rate_hz);
    char *rest[] = {
        (char *)a->self, "--role", (char *)a->role, "--scenario",
        (char *)iso_scenario_name(a->params->scenario), "--report-fd", ROLE_REPORT_FD_TEXT, "--duration",
        text[0], "--bulk-size", text[1], "--ping-rate", text[2], (char *)a->flag,
        (char *)a->value, NULL,
    };
    memcpy(argv + n, rest, sizeof rest);
}

/* In the child, before exec: die with the parent, sit on one CPU, and write
 * reports to ROLE_REPORT_FD. */
static void become_role(const struct spawn_args *a, int report_fd, pid_t parent, char **argv)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(EXIT_FAILURE);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(a->cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) < 0) {
        fprintf(stderr, "fdn-isolate: cannot pin the %s to CPU %d: %s\n", a->role, a->cpu,
                strerror(errno));
        _exit(EXIT_FAILURE);
    }
    if (report_fd == ROLE_REPORT_FD) /* dup2 would keep FD_CLOEXEC */
        fcntl(report_fd, F_SETFD, 0);
    else if (dup2(report_fd, ROLE_REPORT_FD) < 0)
        _exit(EXIT_FAILURE);
    execvp(argv[0], argv);
    fprintf(stderr, "fdn-isolate: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static int spawn_role(const struct spawn_args *a, int slot, struct child *out)
{
    char text[3][32];
    char *argv[32];
    build_argv(a, text, argv);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -errno;
    *out = (struct child){.role = a->role, .slot = slot,
                          .reader = {.fd = fds[0], .buf = malloc(ISO_LINE_MAX)}};
    if (!out->reader.buf) {
        close(fds[0]);
        close(fds[1]);
        return -ENOMEM;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        become_role(a, fds[1], parent, argv);
    close(fds[1]);
    if (pid < 0)
        return -errno;
    out->pid = pid;
    live_children[slot] = pid;
    return 0;
}

/* Waits for the child's exit until the deadline, then kills it. Returns its
 * exit status (128 + signal when killed), or -EINTR. */
static int reap(struct child *c, uint64_t deadline_ns)
{
    if (c->pid <= 0)
        return 0;
    int status = 0;
    pid_t got;
    while ((got = waitpid(c->pid, &status, WNOHANG)) == 0 && !stop_signal &&
           fdn_now_ns() < deadline_ns)
        usleep(10000);
    if (got == 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &status, 0);
    }
    live_children[c->slot] = 0;
    c->pid = 0;
    if (stop_signal)
        return -EINTR;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void child_release(struct child *c)
{
    if (c->reader.buf) {
        close(c->reader.fd);
        free(c->reader.buf);
        c->reader.buf = NULL;
    }
}

/* ---- One scenario -------------------------------------------------------- */

struct parent {
    const struct options *opts;
    char self[PATH_MAX];
    struct iso_netns netns;
    bool use_netns;
    struct iso_run run;
};

static int explain(const char *scenario, const char *what, int rc)
{
    if (rc != -EINTR)
        fprintf(stderr, "fdn-isolate: %s: %s: %s\n", scenario, what, strerror(-rc));
    return rc;
}

static int start_server(struct parent *par, const struct iso_params *p, struct child *server,
                        char *addr, size_t addr_len)
{
    struct spawn_args a = {
        .self = par->self, .params = p, .role = "server", .flag = "--listen-host",
        /* A whole address is used as it is: shm listens on any free name. */
        .value = strcmp(par->run.transport, "shm") == 0 ? "shm://@"
                 : par->use_netns                       ? par->netns.server_ip
                                                        : "127.0.0.1",
        .netns = par->use_netns ? par->netns.server_ns : NULL, .cpu = par->run.cpu_server,
    };
    int rc = spawn_role(&a, 0, server);
    if (rc < 0)
        return explain(iso_scenario_name(p->scenario), "starting the server", rc);
    char *line;
    rc = read_line(&server->reader, fdn_now_ns() + SERVER_START_TIMEOUT_NS, &line);
    if (rc == 0)
        rc = iso_parse_listen(line, addr, addr_len);
    return rc < 0 ? explain(iso_scenario_name(p->scenario), "the server's address", rc) : 0;
}

static int run_client(struct parent *par, const struct iso_params *p, const char *addr,
                      struct child *client)
{
    struct spawn_args a = {
        .self = par->self, .params = p, .role = "client", .flag = "--connect", .value = addr,
        .netns = par->use_netns ? par->netns.client_ns : NULL, .cpu = par->run.cpu_client,
    };
    int rc = spawn_role(&a, 1, client);
    if (rc < 0)
        return explain(iso_scenario_name(p->scenario), "starting the client", rc);
    uint64_t deadline = fdn_now_ns() + ISO_WARMUP_NS + (uint64_t)(p->duration_s * 1e9) +
                        ISO_PING_TIMEOUT_NS + REPORT_MARGIN_NS;
    char *line;
    rc = read_line(&client->reader, deadline, &line);
    if (rc == 0)
        rc = iso_parse_client_result(line, &par->run.client[p->scenario]);
    return rc < 0 ? explain(iso_scenario_name(p->scenario), "the client's results", rc) : 0;
}

static int server_results(struct parent *par, const struct iso_params *p, struct child *server)
{
    char *line;
    int rc = read_line(&server->reader, fdn_now_ns() + REPORT_MARGIN_NS, &line);
    if (rc == 0)
        rc = iso_parse_server_result(line, &par->run.server[p->scenario]);
    return rc < 0 ? explain(iso_scenario_name(p->scenario), "the server's results", rc) : 0;
}

/* Both children must have exited 0 for the scenario to count. On failure they
 * are killed at once rather than waited for. */
static int finish_children(const char *scenario, struct child *server, struct child *client,
                           int rc)
{
    uint64_t deadline = rc == 0 ? fdn_now_ns() + EXIT_TIMEOUT_NS : 0;
    struct child *children[] = {client, server};
    for (int i = 0; i < 2; i++) {
        int status = reap(children[i], deadline);
        child_release(children[i]);
        if (status == -EINTR)
            rc = -EINTR;
        else if (status != 0 && rc == 0) {
            fprintf(stderr, "fdn-isolate: %s: the %s exited with status %d\n", scenario,
                    children[i]->role, status);
            rc = -ECHILD;
        }
    }
    return rc;
}

static int run_scenario(struct parent *par, enum iso_scenario s)
{
    struct iso_params p = par->opts->params;
    p.scenario = s;
    struct child server = {0}, client = {0};
    char addr[128];
    int rc = start_server(par, &p, &server, addr, sizeof addr);
    if (rc == 0)
        rc = run_client(par, &p, addr, &client);
    if (rc == 0)
        rc = server_results(par, &p, &server);
    rc = finish_children(iso_scenario_name(s), &server, &client, rc);
    if (rc == 0) {
        const fdn_histogram *h = &par->run.client[s].one_way_ns;
        fprintf(stderr, "fdn-isolate: %-8s %7" PRIu64 " pings, p99 %.1f us\n",
                iso_scenario_name(s), h->count, fdn_histogram_quantile(h, 0.99) / 1000.0);
    }
    return rc;
}

/* ---- The parent ---------------------------------------------------------- */

/* The first two CPUs we may run on, unless the options chose. */
static int choose_cpus(const struct options *o, struct iso_run *run)
{
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) < 0)
        return -errno;
    int found[2] = {-1, -1}, n = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && n < 2; cpu++)
        if (CPU_ISSET(cpu, &allowed))
            found[n++] = cpu;
    run->cpu_server = o->cpu_server >= 0 ? o->cpu_server : found[0];
    run->cpu_client = o->cpu_client >= 0 ? o->cpu_client : (n > 1 ? found[1] : found[0]);
    for (int i = 0; i < 2; i++) {
        int cpu = i ? run->cpu_client : run->cpu_server;
        if (cpu < 0 || !CPU_ISSET(cpu, &allowed)) {
            fprintf(stderr, "fdn-isolate: CPU %d is not one this process may use\n", cpu);
            return -EINVAL;
        }
    }
    if (run->cpu_server == run->cpu_client)
        fprintf(stderr, "fdn-isolate: warning: server and client share CPU %d; both busy-poll, "
                        "so latencies will mostly measure the CPU scheduler\n",
                run->cpu_server);
    return 0;
}

/* Checks what the run will need before spending minutes on it. */
static int preflight(const struct options *o, struct parent *par)
{
    if (o->plot_path && !iso_have_program("gnuplot")) {
        fprintf(stderr, "fdn-isolate: --plot needs gnuplot, which is not installed "
                        "(apt-get install gnuplot-nox)\n");
        return EXIT_FAILURE;
    }
    if (o->bottleneck && strcmp(o->transport, "shm") == 0) {
        fprintf(stderr, "fdn-isolate: --netns-bottleneck needs a network transport; shared "
                        "memory does not cross network namespaces\n");
        return EXIT_USAGE;
    }
    if (o->bottleneck && geteuid() != 0) {
        fprintf(stderr, "fdn-isolate: --netns-bottleneck creates network namespaces and needs "
                        "root; skipping\n");
        return EXIT_SKIP;
    }
    if (o->bottleneck && (!iso_have_program("ip") || !iso_have_program("tc"))) {
        fprintf(stderr, "fdn-isolate: --netns-bottleneck needs ip and tc (iproute2)\n");
        return EXIT_FAILURE;
    }
    ssize_t n = readlink("/proc/self/exe", par->self, sizeof par->self - 1);
    if (n < 0) {
        fprintf(stderr, "fdn-isolate: /proc/self/exe: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }
    par->self[n] = '\0';
    return choose_cpus(o, &par->run) < 0 ? EXIT_FAILURE : -1;
}

static int run_scenarios(struct parent *par)
{
    for (int s = 0; s < ISO_SCENARIOS; s++) {
        int rc = run_scenario(par, (enum iso_scenario)s);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int write_outputs(const struct options *o, const struct iso_run *run)
{
    struct iso_verdict v;
    iso_judge(run, &v);
    iso_print_report(run, &v);
    fflush(stdout);
    if (o->json_path) {
        int rc = iso_write_json(o->json_path, run, &v);
        if (rc < 0) {
            fprintf(stderr, "fdn-isolate: %s: %s\n", o->json_path, strerror(-rc));
            return rc;
        }
    }
    return o->plot_path ? iso_plot(o->plot_path, run) : 0;
}

static int run_parent(const struct options *o)
{
    static struct parent par; /* four histograms: not on the stack */
    par = (struct parent){.opts = o};
    int status = preflight(o, &par);
    if (status >= 0)
        return status;
    par.run.params = o->params;
    par.run.transport = o->transport;
    par.run.bottleneck = o->bottleneck;
    catch_stop_signals();
    int rc = 0;
    if (o->bottleneck) {
        rc = iso_netns_create(&par.netns, o->bottleneck);
        par.use_netns = rc == 0;
    }
    if (rc == 0)
        rc = run_scenarios(&par);
    if (par.use_netns)
        iso_netns_destroy(&par.netns);
    if (stop_signal)
        die_of_stop_signal();
    if (rc == 0)
        rc = write_outputs(o, &par.run);
    return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int main(int argc, char **argv)
{
    struct options o;
    int status = parse_options(argc, argv, &o);
    if (status >= 0)
        return status;
    if (o.role)
        return run_role(&o);
    return run_parent(&o);
}
