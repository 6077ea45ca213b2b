/* The pipe protocol between fdn-isolate's roles and its parent: one JSON
 * object per line, flat, with numbers and at most one array ("hist", the
 * histogram's non-empty buckets as [index, count] pairs). Writer and reader
 * live side by side here so that they cannot drift apart; the reader accepts
 * exactly what the writer produces, nothing more general. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/io.h"
#include "isolate.h"

/* A line under construction; overflow is sticky and reported at the end. */
struct line {
    char *buf;
    size_t len, cap;
    bool overflow;
};

static void line_printf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void line_printf(struct line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(l->buf + l->len, l->cap - l->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= l->cap - l->len)
        l->overflow = true;
    else
        l->len += (size_t)n;
}

static int line_send(int fd, struct line *l)
{
    line_printf(l, "}\n");
    return l->overflow ? -ENOSPC : fdn__write_all(fd, l->buf, l->len);
}

int iso_write_listen(int fd, const char *addr)
{
    char buf[256];
    struct line l = {.buf = buf, .cap = sizeof buf};
    line_printf(&l, "{\"role\":\"server\",\"listen\":\"%s\"", addr);
    return line_send(fd, &l);
}

int iso_write_server_result(int fd, const struct iso_server_result *r)
{
    char buf[512];
    struct line l = {.buf = buf, .cap = sizeof buf};
    line_printf(&l,
                "{\"role\":\"server\",\"bulk_msgs\":%" PRIu64 ",\"bulk_bytes\":%" PRIu64
                ",\"seq_errors\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"respond_errors\":%" PRIu64,
                r->bulk_msgs, r->bulk_bytes, r->seq_errors, r->requests, r->respond_errors);
    return line_send(fd, &l);
}

static void line_histogram(struct line *l, const fdn_histogram *h)
{
    line_printf(l, ",\"hist_count\":%" PRIu64 ",\"hist_min\":%" PRIu64 ",\"hist_max\":%" PRIu64
                   ",\"hist_sum\":%" PRIu64 ",\"hist\":[",
                h->count, h->min, h->max, h->sum);
    const char *sep = "";
    for (int i = 0; i < FDN_HIST_BUCKETS; i++) {
        if (h->buckets[i]) {
            line_printf(l, "%s[%d,%" PRIu64 "]", sep, i, h->buckets[i]);
            sep = ",";
        }
    }
    line_printf(l, "]");
}

int iso_write_client_result(int fd, const struct iso_client_result *r)
{
    struct line l = {.buf = malloc(ISO_LINE_MAX), .cap = ISO_LINE_MAX};
    if (!l.buf)
        return -ENOMEM;
    line_printf(&l,
                "{\"role\":\"client\",\"ping_timeouts\":%" PRIu64 ",\"bulk_bytes\":%" PRIu64
                ",\"bulk_seconds\":%.9f,\"data_credit_stalls\":%" PRIu64
                ",\"data_send_eagain\":%" PRIu64,
                r->ping_timeouts, r->bulk_bytes, r->bulk_seconds, r->data_credit_stalls,
                r->data_send_eagain);
    line_histogram(&l, &r->one_way_ns);
    int rc = line_send(fd, &l);
    free(l.buf);
    return rc;
}

/* ---- Reading ------------------------------------------------------------- */

/* The text right after "key": in line, or NULL. */
static const char *value_of(const char *line, const char *key)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":", key);
    const char *at = strstr(line, pattern);
    return at ? at + strlen(pattern) : NULL;
}

static bool get_u64(const char *line, const char *key, uint64_t *out)
{
    const char *v = value_of(line, key);
    if (!v || *v < '0' || *v > '9')
        return false;
    char *end;
    errno = 0;
    *out = strtoull(v, &end, 10);
    return errno == 0 && end != v;
}

static bool get_double(const char *line, const char *key, double *out)
{
    const char *v = value_of(line, key);
    if (!v)
        return false;
    char *end;
    *out = strtod(v, &end);
    return end != v;
}

static bool is_role(const char *line, const char *role)
{
    const char *v = value_of(line, "role");
    size_t n = strlen(role);
    return v && v[0] == '"' && strncmp(v + 1, role, n) == 0 && v[n + 1] == '"';
}

int iso_parse_listen(const char *line, char *addr, size_t len)
{
    const char *v = value_of(line, "listen");
    if (!is_role(line, "server") || !v || *v != '"')
        return -EPROTO;
    const char *end = strchr(v + 1, '"');
    if (!end || (size_t)(end - v - 1) >= len)
        return -EPROTO;
    memcpy(addr, v + 1, (size_t)(end - v - 1));
    addr[end - v - 1] = '\0';
    return 0;
}

int iso_parse_server_result(const char *line, struct iso_server_result *r)
{
    bool ok = is_role(line, "server") && get_u64(line, "bulk_msgs", &r->bulk_msgs) &&
              get_u64(line, "bulk_bytes", &r->bulk_bytes) &&
              get_u64(line, "seq_errors", &r->seq_errors) &&
              get_u64(line, "requests", &r->requests) &&
              get_u64(line, "respond_errors", &r->respond_errors);
    return ok ? 0 : -EPROTO;
}

/* Parses "[[i,c],[i,c],...]" into the buckets; the counts must add up. */
static bool get_buckets(const char *line, fdn_histogram *h)
{
    const char *p = value_of(line, "hist");
    if (!p || *p++ != '[')
        return false;
    uint64_t total = 0;
    while (*p == '[') {
        char *end;
        unsigned long index = strtoul(p + 1, &end, 10);
        if (*end != ',' || index >= FDN_HIST_BUCKETS)
            return false;
        uint64_t count = strtoull(end + 1, &end, 10);
        if (*end != ']')
            return false;
        h->buckets[index] = count;
        total += count;
        p = end + 1;
        if (*p == ',')
            p++;
    }
    return *p == ']' && total == h->count;
}

int iso_parse_client_result(const char *line, struct iso_client_result *r)
{
    memset(r, 0, sizeof *r);
    fdn_histogram_reset(&r->one_way_ns);
    fdn_histogram *h = &r->one_way_ns;
    bool ok = is_role(line, "client") && get_u64(line, "ping_timeouts", &r->ping_timeouts) &&
              get_u64(line, "bulk_bytes", &r->bulk_bytes) &&
              get_double(line, "bulk_seconds", &r->bulk_seconds) &&
              get_u64(line, "data_credit_stalls", &r->data_credit_stalls) &&
              get_u64(line, "data_send_eagain", &r->data_send_eagain) &&
              get_u64(line, "hist_count", &h->count) && get_u64(line, "hist_min", &h->min) &&
              get_u64(line, "hist_max", &h->max) && get_u64(line, "hist_sum", &h->sum) &&
              get_buckets(line, h);
    return ok ? 0 : -EPROTO;
}
