/* A strict parser for the kernel's cpulist format (cpuset.cpus, taskset -c,
 * /sys/devices/system/cpu/online). hwloc_bitmap_list_sscanf() is lenient and
 * would turn a typo into a different CPU set; a restriction that silently
 * means something else is worse than an error. */
#include "numa/topology_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>

#include "base/error.h"

/* Larger than any CONFIG_NR_CPUS, small enough that a typo cannot make us
 * allocate a huge bitmap. */
#define FDN_CPULIST_MAX_CPU 65535u

struct cpulist_cursor {
    const char *list; /* the whole list, for error messages */
    const char *at;
};

static int cpulist_error(const struct cpulist_cursor *c, const char *why)
{
    return FDN_ERR(-EINVAL, "malformed cpulist \"%s\" at offset %d: %s", c->list,
                   (int)(c->at - c->list), why);
}

static bool cursor_take(struct cpulist_cursor *c, char expected)
{
    if (*c->at != expected)
        return false;
    c->at++;
    return true;
}

/* Decimal digits only: strtoul would accept signs, blanks and hexadecimal. */
static int parse_number(struct cpulist_cursor *c, unsigned *out)
{
    if (!isdigit((unsigned char)*c->at))
        return cpulist_error(c, "expected a CPU number");
    unsigned value = 0;
    while (isdigit((unsigned char)*c->at)) {
        value = value * 10 + (unsigned)(*c->at - '0');
        if (value > FDN_CPULIST_MAX_CPU)
            return cpulist_error(c, "CPU number too large");
        c->at++;
    }
    *out = value;
    return 0;
}

/* The kernel's "first-last:used/group" form: of every group of CPUs
 * starting at first, the first `used` ones. */
struct cpu_range {
    unsigned first, last, used, group;
};

static int parse_stride(struct cpulist_cursor *c, struct cpu_range *range)
{
    int rc = parse_number(c, &range->used);
    if (rc == 0 && !cursor_take(c, '/'))
        rc = cpulist_error(c, "expected '/' in a used/group stride");
    if (rc == 0)
        rc = parse_number(c, &range->group);
    if (rc == 0 && (range->used == 0 || range->group == 0 || range->used > range->group))
        rc = cpulist_error(c, "stride needs 0 < used <= group");
    return rc;
}

static int parse_range(struct cpulist_cursor *c, struct cpu_range *range)
{
    int rc = parse_number(c, &range->first);
    range->last = range->first;
    range->used = range->group = 1;
    if (rc == 0 && cursor_take(c, '-')) {
        rc = parse_number(c, &range->last);
        if (rc == 0 && range->last < range->first)
            rc = cpulist_error(c, "range ends before it starts");
        if (rc == 0 && cursor_take(c, ':'))
            rc = parse_stride(c, range);
    }
    return rc;
}

static int add_range(hwloc_bitmap_t set, const struct cpu_range *range)
{
    for (unsigned start = range->first; start <= range->last; start += range->group) {
        unsigned end = start + range->used - 1;
        if (end > range->last)
            end = range->last;
        if (hwloc_bitmap_set_range(set, start, (int)end) < 0)
            return FDN_ERR(-ENOMEM, "cannot grow a cpuset");
    }
    return 0;
}

static void skip_blanks(struct cpulist_cursor *c)
{
    while (isspace((unsigned char)*c->at))
        c->at++;
}

int fdn__cpulist_parse(const char *cpulist, hwloc_bitmap_t set)
{
    struct cpulist_cursor c = {.list = cpulist, .at = cpulist};
    hwloc_bitmap_zero(set);
    skip_blanks(&c);
    /* An empty list is well formed: it names no CPU. */
    if (*c.at == '\0')
        return 0;
    for (;;) {
        struct cpu_range range;
        int rc = parse_range(&c, &range);
        if (rc == 0)
            rc = add_range(set, &range);
        if (rc < 0)
            return rc;
        if (!cursor_take(&c, ','))
            break;
    }
    skip_blanks(&c);
    if (*c.at != '\0')
        return cpulist_error(&c, "unexpected character");
    return 0;
}
