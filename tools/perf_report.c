/* fdn-perf results: a table for people, or one JSON object for machines.
 *
 * Latency is one-way, half the round trip, as sockperf and ucx_perftest
 * report it. Percentiles come from an fdn_histogram of round trips: each is
 * the upper edge of its bucket (relative error under 1/32), so they read at
 * most about 3% high, never low.
 *
 * Bandwidth counts only the messages the server confirmed receiving, over
 * the time from the first send to the server's confirmation. A one-way
 * stream has no per-message round trip, so bw reports no latency keys.
 *
 * With --verify, bw adds the server's account of the numbered messages
 * (perf_verify.h): a "verify" line in the table, a "verify" object in the
 * JSON, and a line on stderr when the run was not intact. */
#include <stdio.h>

#include "perf.h"

#define NS_PER_US 1000.0
#define NS_PER_S 1e9

struct lat_summary {
    double p50, p90, p99, p999, p9999, max, mean; /* one-way, microseconds */
};

static double one_way_us(double rtt_ns) { return rtt_ns / 2.0 / NS_PER_US; }

static struct lat_summary summarize(const fdn_histogram *h)
{
    return (struct lat_summary){
        .p50 = one_way_us((double)fdn_histogram_quantile(h, 0.50)),
        .p90 = one_way_us((double)fdn_histogram_quantile(h, 0.90)),
        .p99 = one_way_us((double)fdn_histogram_quantile(h, 0.99)),
        .p999 = one_way_us((double)fdn_histogram_quantile(h, 0.999)),
        .p9999 = one_way_us((double)fdn_histogram_quantile(h, 0.9999)),
        .max = one_way_us((double)h->max),
        .mean = one_way_us(fdn_histogram_mean(h)),
    };
}

/* A JSON string: the address is the user's text. */
static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void print_json_run(const char *mode, const struct perf_options *o)
{
    printf("{\"mode\": \"%s\", \"transport\": ", mode);
    print_json_string(o->transport);
    printf(", \"address\": ");
    print_json_string(o->addr);
    printf(", \"channel\": ");
    print_json_string(o->channel);
    printf(", \"size\": %llu", (unsigned long long)o->size);
}

void perf_report_lat(const struct perf_options *o, const struct perf_lat_result *r)
{
    struct lat_summary s = summarize(&r->rtt);
    unsigned long long messages = (unsigned long long)r->rtt.count;
    if (o->json) {
        print_json_run("lat", o);
        printf(", \"messages\": %llu, \"warmup\": %llu, \"p50_us\": %.3f, \"p90_us\": %.3f, "
               "\"p99_us\": %.3f, \"p999_us\": %.3f, \"p9999_us\": %.3f, \"max_us\": %.3f, "
               "\"mean_us\": %.3f, \"pings\": %llu, \"zero_copy\": %llu}\n",
               messages, (unsigned long long)r->warmup, s.p50, s.p90, s.p99, s.p999, s.p9999,
               s.max, s.mean, (unsigned long long)r->pings, (unsigned long long)r->zero_copy);
        return;
    }
    printf("fdn-perf lat: %s, channel %s, %llu B, %llu messages (after %llu warm-up)\n",
           o->addr, o->channel, (unsigned long long)o->size, messages,
           (unsigned long long)r->warmup);
    printf("one-way latency (round trip / 2), us:\n");
    printf("%10s %10s %10s %10s %10s %10s %10s\n", "p50", "p90", "p99", "p99.9", "p99.99",
           "max", "mean");
    printf("%10.3f %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f\n", s.p50, s.p90, s.p99, s.p999,
           s.p9999, s.max, s.mean);
    printf("zero-copy: %llu of %llu pings lent by reference (shm); echoes are copies\n",
           (unsigned long long)r->zero_copy, (unsigned long long)r->pings);
}

static void print_verify_json(const struct perf_verify_counts *v)
{
    printf(", \"verify\": {\"delivered\": %llu, \"lost\": %llu, \"duplicated\": %llu, "
           "\"reordered\": %llu, \"corrupted\": %llu}",
           (unsigned long long)v->delivered, (unsigned long long)v->lost,
           (unsigned long long)v->duplicated, (unsigned long long)v->reordered,
           (unsigned long long)v->corrupted);
}

static void print_verify_table(const struct perf_verify_counts *v, bool intact)
{
    printf("verify (FNV-1a-64 per message): %s\n", intact ? "intact" : "NOT INTACT");
    printf("%14s %10s %10s %10s %10s\n", "delivered", "lost", "duplicated", "reordered",
           "corrupted");
    printf("%14llu %10llu %10llu %10llu %10llu\n", (unsigned long long)v->delivered,
           (unsigned long long)v->lost, (unsigned long long)v->duplicated,
           (unsigned long long)v->reordered, (unsigned long long)v->corrupted);
}

/* Also said on stderr, so a JSON consumer's log shows why the exit status
 * is PERF_EXIT_VERIFY. */
static void warn_not_intact(const struct perf_bw_result *r)
{
    const struct perf_verify_counts *v = &r->verify;
    fprintf(stderr, "fdn-perf: --verify: of %llu messages sent, %llu lost, %llu duplicated, "
                    "%llu reordered, %llu corrupted\n",
            (unsigned long long)r->sent, (unsigned long long)v->lost,
            (unsigned long long)v->duplicated, (unsigned long long)v->reordered,
            (unsigned long long)v->corrupted);
}

void perf_report_bw(const struct perf_options *o, const struct perf_bw_result *r)
{
    bool intact = perf_bw_intact(r);
    if (!intact)
        warn_not_intact(r);
    double seconds = (double)r->elapsed_ns / NS_PER_S;
    double rate = seconds > 0 ? (double)r->confirmed / seconds : 0;
    double gbytes = seconds > 0 ? (double)r->confirmed_bytes / seconds / 1e9 : 0;
    if (o->json) {
        print_json_run("bw", o);
        printf(", \"messages\": %llu, \"sent\": %llu, \"bytes\": %llu, \"elapsed_s\": %.6f, "
               "\"server_span_s\": %.6f, \"messages_per_s\": %.1f, \"gbytes_per_s\": %.6f",
               (unsigned long long)r->confirmed, (unsigned long long)r->sent,
               (unsigned long long)r->confirmed_bytes, seconds,
               (double)r->server_span_ns / NS_PER_S, rate, gbytes);
        printf(", \"session\": {\"interrupted\": %llu, \"resumed\": %llu, "
               "\"retransmitted\": %llu, \"idle_timeouts\": %llu}",
               (unsigned long long)r->interrupted, (unsigned long long)r->resumed,
               (unsigned long long)r->retransmitted, (unsigned long long)r->idle_timeouts);
        printf(", \"zero_copy\": %llu", (unsigned long long)r->zero_copy);
        if (r->verified)
            print_verify_json(&r->verify);
        printf("}\n");
        return;
    }
    printf("fdn-perf bw: %s, channel %s, %llu B: %llu sent, %llu received by the server "
           "in %.3f s\n",
           o->addr, o->channel, (unsigned long long)o->size, (unsigned long long)r->sent,
           (unsigned long long)r->confirmed, seconds);
    printf("%14s %10s %10s\n", "messages/s", "GB/s", "Gbit/s");
    printf("%14.1f %10.3f %10.3f\n", rate, gbytes, gbytes * 8);
    printf("zero-copy: %llu of %llu messages lent by reference (shm)%s\n",
           (unsigned long long)r->zero_copy, (unsigned long long)r->sent,
           r->verified ? "" : "; without --verify the server does not read payloads");
    if (r->interrupted)
        printf("session: lost its connections %llu times (%llu found silent), resumed %llu "
               "times, %llu messages sent again\n",
               (unsigned long long)r->interrupted, (unsigned long long)r->idle_timeouts,
               (unsigned long long)r->resumed, (unsigned long long)r->retransmitted);
    if (r->verified)
        print_verify_table(&r->verify, intact);
}
