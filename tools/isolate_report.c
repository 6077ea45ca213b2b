/* fdn-isolate's report: the table of ping latencies, the ratios that the
 * head-of-line claim is judged by, the verdict, the JSON file and the plot.
 * Every number printed here comes from the scenarios' histograms and the
 * server's confirmations; the only constants are the claim's thresholds. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "isolate.h"

static const struct {
    const char *label;  /* table heading */
    const char *key;    /* JSON key */
    double q;
} percentiles[] = {
    {"p50", "p50_us", 0.50},     {"p90", "p90_us", 0.90},       {"p99", "p99_us", 0.99},
    {"p99.9", "p999_us", 0.999}, {"p99.99", "p9999_us", 0.9999},
};
#define NUM_PERCENTILES (sizeof percentiles / sizeof percentiles[0])

static double ns_to_us(double ns) { return ns / 1000.0; }

static double quantile_us(const fdn_histogram *h, double q)
{
    return ns_to_us((double)fdn_histogram_quantile(h, q));
}

static double max_us(const fdn_histogram *h) { return h->count ? ns_to_us((double)h->max) : 0; }

static double p99_us(const struct iso_run *run, enum iso_scenario s)
{
    return quantile_us(&run->client[s].one_way_ns, 0.99);
}

static double bulk_gbytes_per_s(const struct iso_client_result *r)
{
    return r->bulk_seconds > 0 ? (double)r->bulk_bytes / r->bulk_seconds / 1e9 : 0;
}

/* numerator / denominator, or NaN when either scenario measured nothing. */
static double p99_ratio(const struct iso_run *run, enum iso_scenario num, enum iso_scenario den)
{
    double a = p99_us(run, num), b = p99_us(run, den);
    if (!run->client[num].one_way_ns.count || !run->client[den].one_way_ns.count || b <= 0)
        return NAN;
    return a / b;
}

/* ---- Verdict ------------------------------------------------------------- */

static const char *check_names[ISO_CHECKS] = {
    [ISO_CHECK_BULK] = "bulk p99 within 2x of idle p99",
    [ISO_CHECK_STALLED] = "stalled p99 within 2x of idle p99",
    [ISO_CHECK_FIFO] = "fifo p99 shows the head-of-line cost over bulk p99",
};

/* Adds "sep" and one check's sentence to the verdict text. */
static void append_check(char *buf, size_t cap, const char *sep, enum iso_check c, double ratio,
                         double limit)
{
    size_t len = strlen(buf);
    switch (c) {
    case ISO_CHECK_BULK:
        snprintf(buf + len, cap - len, "%sbulk p99 is %.2fx idle (limit %.0fx)", sep, ratio, limit);
        break;
    case ISO_CHECK_STALLED:
        snprintf(buf + len, cap - len, "%sstalled p99 is %.2fx idle (limit %.0fx)", sep, ratio,
                 limit);
        break;
    default:
        snprintf(buf + len, cap - len, "%sfifo p99 is %.2fx bulk (needs at least %.0fx)", sep,
                 ratio, limit);
        break;
    }
}

void iso_judge(const struct iso_run *run, struct iso_verdict *v)
{
    *v = (struct iso_verdict){0};
    v->ratio[ISO_CHECK_BULK] = p99_ratio(run, ISO_BULK, ISO_IDLE);
    v->ratio[ISO_CHECK_STALLED] = p99_ratio(run, ISO_STALLED, ISO_IDLE);
    v->ratio[ISO_CHECK_FIFO] = p99_ratio(run, ISO_FIFO, ISO_BULK);
    v->limit[ISO_CHECK_BULK] = ISO_MAX_ISOLATED_RATIO;
    v->limit[ISO_CHECK_STALLED] = ISO_MAX_ISOLATED_RATIO;
    v->limit[ISO_CHECK_FIFO] = run->bottleneck ? ISO_MIN_FIFO_RATIO_BOTTLENECK
                                               : ISO_MIN_FIFO_RATIO_LOOPBACK;
    /* NaN (nothing measured) fails every comparison, as it should. */
    v->pass[ISO_CHECK_BULK] = v->ratio[ISO_CHECK_BULK] <= v->limit[ISO_CHECK_BULK];
    v->pass[ISO_CHECK_STALLED] = v->ratio[ISO_CHECK_STALLED] <= v->limit[ISO_CHECK_STALLED];
    v->pass[ISO_CHECK_FIFO] = v->ratio[ISO_CHECK_FIFO] >= v->limit[ISO_CHECK_FIFO];
    v->holds = v->pass[ISO_CHECK_BULK] && v->pass[ISO_CHECK_STALLED] && v->pass[ISO_CHECK_FIFO];

    /* HOLDS lists every check; DOES NOT HOLD only those that failed. */
    snprintf(v->text, sizeof v->text, "%s", v->holds ? "HOLDS: " : "DOES NOT HOLD: ");
    const char *sep = "";
    for (int c = 0; c < ISO_CHECKS; c++) {
        if (v->holds || !v->pass[c]) {
            append_check(v->text, sizeof v->text, sep, (enum iso_check)c, v->ratio[c],
                         v->limit[c]);
            sep = "; ";
        }
    }
}

/* ---- Table --------------------------------------------------------------- */

static void print_header(const struct iso_run *run)
{
    const struct iso_params *p = &run->params;
    printf("fdn-isolate: head-of-line isolation over %s, ", run->transport);
    if (run->bottleneck)
        printf("veth between two network namespaces, tbf %s on the client -> server side\n",
               run->bottleneck);
    else
        printf("loopback\n");
    printf("server on CPU %d, client on CPU %d, fresh processes per scenario; "
           "%.3g s measured after %.1f s warm-up\n",
           run->cpu_server, run->cpu_client, p->duration_s, ISO_WARMUP_NS / 1e9);
    printf("%d-byte pings at %.0f/s (one outstanding); bulk: %" PRIu64
           "-byte messages, data window %" PRIu64 " bytes, send queue %d messages\n",
           ISO_PING_BYTES, p->ping_rate_hz, p->bulk_size, iso_data_window(p),
           ISO_DATA_QUEUE_MESSAGES);
    printf("one-way ping latency (RTT/2), microseconds\n\n");
}

static void print_row(const struct iso_run *run, enum iso_scenario s)
{
    const fdn_histogram *h = &run->client[s].one_way_ns;
    printf("%-9s", iso_scenario_name(s));
    for (size_t i = 0; i < NUM_PERCENTILES; i++)
        printf(" %9.1f", quantile_us(h, percentiles[i].q));
    printf(" %9.1f %9.1f %8" PRIu64 " %10.3f\n", max_us(h), ns_to_us(fdn_histogram_mean(h)),
           h->count, bulk_gbytes_per_s(&run->client[s]));
}

/* What makes a scenario's numbers suspect, said plainly under the table. */
static void print_warnings(const struct iso_run *run)
{
    for (int s = 0; s < ISO_SCENARIOS; s++) {
        const struct iso_client_result *c = &run->client[s];
        const struct iso_server_result *v = &run->server[s];
        if (c->ping_timeouts)
            printf("warning: %s: %" PRIu64 " pings unanswered within %.0f s (not in the "
                   "percentiles)\n",
                   iso_scenario_name((enum iso_scenario)s), c->ping_timeouts,
                   ISO_PING_TIMEOUT_NS / 1e9);
        if (v->seq_errors)
            printf("warning: %s: the server saw %" PRIu64 " bulk messages out of sequence\n",
                   iso_scenario_name((enum iso_scenario)s), v->seq_errors);
        if (v->respond_errors)
            printf("warning: %s: the server failed to answer %" PRIu64 " pings\n",
                   iso_scenario_name((enum iso_scenario)s), v->respond_errors);
    }
    if (!run->client[ISO_STALLED].data_credit_stalls)
        printf("warning: stalled: the data channel never ran out of credit, so the "
               "scenario did not stall it\n");
}

void iso_print_report(const struct iso_run *run, const struct iso_verdict *v)
{
    print_header(run);
    printf("%-9s", "scenario");
    for (size_t i = 0; i < NUM_PERCENTILES; i++)
        printf(" %9s", percentiles[i].label);
    printf(" %9s %9s %8s %10s\n", "max", "mean", "pings", "bulk GB/s");
    for (int s = 0; s < ISO_SCENARIOS; s++)
        print_row(run, (enum iso_scenario)s);
    printf("\n");
    print_warnings(run);
    printf("p99 ratios: bulk/idle %.2fx, stalled/idle %.2fx, fifo/bulk %.2fx "
           "(the cost Foundation removes)\n",
           v->ratio[ISO_CHECK_BULK], v->ratio[ISO_CHECK_STALLED], v->ratio[ISO_CHECK_FIFO]);
    for (int c = 0; c < ISO_CHECKS; c++)
        printf("check: %-52s %8.2fx %s %4.0fx  %s\n", check_names[c], v->ratio[c],
               c == ISO_CHECK_FIFO ? ">=" : "<=", v->limit[c], v->pass[c] ? "ok" : "FAILED");
    printf("%s\n", v->text);
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

/* JSON has no NaN: a ratio that could not be computed is null. */
static void json_number(FILE *f, double x)
{
    if (isfinite(x))
        fprintf(f, "%.6g", x);
    else
        fprintf(f, "null");
}

static void json_scenario(FILE *f, const struct iso_run *run, enum iso_scenario s)
{
    const struct iso_client_result *c = &run->client[s];
    const struct iso_server_result *v = &run->server[s];
    const fdn_histogram *h = &c->one_way_ns;
    fprintf(f, "    ");
    json_string(f, iso_scenario_name(s));
    fprintf(f, ": {");
    for (size_t i = 0; i < NUM_PERCENTILES; i++)
        fprintf(f, "\"%s\": %.3f, ", percentiles[i].key, quantile_us(h, percentiles[i].q));
    fprintf(f,
            "\"max_us\": %.3f, \"mean_us\": %.3f, \"min_us\": %.3f, \"messages\": %" PRIu64
            ", \"ping_timeouts\": %" PRIu64 ", \"bulk_gbytes_per_s\": %.6f, \"bulk_bytes\": %" PRIu64
            ", \"bulk_seconds\": %.6f, \"data_credit_stalls\": %" PRIu64
            ", \"data_send_eagain\": %" PRIu64 ", \"server_bulk_msgs\": %" PRIu64
            ", \"server_seq_errors\": %" PRIu64 ", \"server_requests\": %" PRIu64 "}",
            max_us(h), ns_to_us(fdn_histogram_mean(h)), h->count ? ns_to_us((double)h->min) : 0,
            h->count, c->ping_timeouts, bulk_gbytes_per_s(c), c->bulk_bytes, c->bulk_seconds,
            c->data_credit_stalls, c->data_send_eagain, v->bulk_msgs, v->seq_errors,
            v->requests);
}

static void json_verdict(FILE *f, const struct iso_verdict *v)
{
    static const char *keys[ISO_CHECKS] = {"bulk_over_idle_p99", "stalled_over_idle_p99",
                                           "fifo_over_bulk_p99"};
    fprintf(f, "  \"ratios\": {");
    for (int c = 0; c < ISO_CHECKS; c++) {
        fprintf(f, "%s\"%s\": ", c ? ", " : "", keys[c]);
        json_number(f, v->ratio[c]);
    }
    fprintf(f, "},\n  \"verdict\": {\"holds\": %s, \"text\": ", v->holds ? "true" : "false");
    json_string(f, v->text);
    fprintf(f, ", \"checks\": [");
    for (int c = 0; c < ISO_CHECKS; c++) {
        fprintf(f, "%s{\"name\": ", c ? ", " : "");
        json_string(f, check_names[c]);
        fprintf(f, ", \"ratio\": ");
        json_number(f, v->ratio[c]);
        fprintf(f, ", \"%s\": %.0f, \"pass\": %s}", c == ISO_CHECK_FIFO ? "min" : "max",
                v->limit[c], v->pass[c] ? "true" : "false");
    }
    fprintf(f, "]},\n");
}

static void json_config(FILE *f, const struct iso_run *run)
{
    const struct iso_params *p = &run->params;
    fprintf(f, "  \"config\": {\"transport\": ");
    json_string(f, run->transport);
    fprintf(f, ", \"path\": ");
    json_string(f, run->bottleneck ? "netns-veth-tbf" : "loopback");
    fprintf(f, ", \"bottleneck_rate\": ");
    if (run->bottleneck)
        json_string(f, run->bottleneck);
    else
        fprintf(f, "null");
    fprintf(f,
            ", \"duration_s\": %g, \"warmup_s\": %g, \"ping_rate_hz\": %g, \"ping_bytes\": %d"
            ", \"pings_outstanding\": 1, \"bulk_size\": %" PRIu64 ", \"data_max_message\": %" PRIu64
            ", \"data_credit_window\": %" PRIu64 ", \"data_max_queued\": %d"
            ", \"cpu_server\": %d, \"cpu_client\": %d, \"processes\": \"fresh per scenario\""
            ", \"latency\": \"one-way = RTT/2, from the first attempt to send\"}\n",
            p->duration_s, ISO_WARMUP_NS / 1e9, p->ping_rate_hz, ISO_PING_BYTES, p->bulk_size,
            p->bulk_size, iso_data_window(p), ISO_DATA_QUEUE_MESSAGES, run->cpu_server,
            run->cpu_client);
}

int iso_write_json(const char *path, const struct iso_run *run, const struct iso_verdict *v)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -errno;
    fprintf(f, "{\n  \"scenarios\": {\n");
    for (int s = 0; s < ISO_SCENARIOS; s++) {
        json_scenario(f, run, (enum iso_scenario)s);
        fprintf(f, s + 1 < ISO_SCENARIOS ? ",\n" : "\n");
    }
    fprintf(f, "  },\n");
    json_verdict(f, v);
    json_config(f, run);
    fprintf(f, "}\n");
    return fclose(f) == 0 ? 0 : -errno;
}

/* ---- Plot ---------------------------------------------------------------- */

/* Points of the distribution on an inverted-tail axis: for tails 1 - q from
 * 1 down to one sample (the maximum), 20 per decade. */
static void write_distribution(FILE *f, const fdn_histogram *h)
{
    double last_tail = 1.0 / (double)h->count;
    for (int i = 0;; i++) {
        double tail = pow(10.0, -i / 20.0);
        if (tail < last_tail)
            tail = last_tail;
        fprintf(f, "%.3f %.9g\n", quantile_us(h, 1.0 - tail), tail);
        if (tail <= last_tail)
            break;
    }
    fprintf(f, "%.3f %.9g\n\n\n", max_us(h), last_tail);
}

static int make_temp(char *path, FILE **out)
{
    int fd = mkstemp(path);
    if (fd < 0)
        return -errno;
    *out = fdopen(fd, "w");
    if (!*out) {
        close(fd);
        unlink(path);
        return -errno;
    }
    return 0;
}

static void write_script(FILE *f, const char *png, const char *data, const struct iso_run *run)
{
    fprintf(f,
            "set terminal pngcairo size 1100,700 font ',11'\n"
            "set output '%s'\n"
            "set title 'Foundation head-of-line isolation: ping one-way latency, %s over %s'\n"
            "set xlabel 'one-way latency (microseconds, RTT/2)'\n"
            "set ylabel 'percentile'\n"
            "set logscale xy\n"
            "set yrange [1:1e-5]\n"
            "set ytics ('p0' 1, 'p50' 0.5, 'p90' 0.1, 'p99' 0.01, 'p99.9' 0.001, "
            "'p99.99' 0.0001, 'p99.999' 0.00001)\n"
            "set grid xtics ytics mxtics\n"
            "set key left top\n"
            "plot",
            png, run->transport, run->bottleneck ? "a tbf bottleneck" : "loopback");
    const char *sep = " ";
    for (int s = 0; s < ISO_SCENARIOS; s++) {
        const fdn_histogram *h = &run->client[s].one_way_ns;
        if (!h->count)
            continue;
        fprintf(f, "%s'%s' index %d using 1:2 with steps lw 2 title '%s (p99 %.1f us)'", sep,
                data, s, iso_scenario_name((enum iso_scenario)s), quantile_us(h, 0.99));
        sep = ", \\\n     ";
    }
    fprintf(f, "\n");
}

int iso_plot(const char *png, const struct iso_run *run)
{
    if (!iso_have_program("gnuplot")) {
        fprintf(stderr, "fdn-isolate: --plot needs gnuplot (apt-get install gnuplot-nox)\n");
        return -ENOENT;
    }
    char data[] = "/tmp/fdn-isolate-data-XXXXXX", script[] = "/tmp/fdn-isolate-plot-XXXXXX";
    FILE *df, *sf;
    int rc = make_temp(data, &df);
    if (rc < 0)
        return rc;
    rc = make_temp(script, &sf);
    if (rc < 0) {
        fclose(df);
        unlink(data);
        return rc;
    }
    /* One block per scenario, empty ones included, so index s is scenario s. */
    for (int s = 0; s < ISO_SCENARIOS; s++) {
        if (run->client[s].one_way_ns.count)
            write_distribution(df, &run->client[s].one_way_ns);
        else
            fprintf(df, "\n\n");
    }
    write_script(sf, png, data, run);
    bool written = fclose(df) == 0 && fclose(sf) == 0;
    rc = written ? iso_run_command((char *const[]){"gnuplot", script, NULL}, false) : -EIO;
    unlink(data);
    unlink(script);
    if (rc != 0) {
        fprintf(stderr, "fdn-isolate: gnuplot failed (%d)\n", rc);
        return -EIO;
    }
    return 0;
}
