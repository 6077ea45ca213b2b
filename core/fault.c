/* The seeded fault layer's decision engine (see fault.h).
 *
 * Randomness: xoshiro256** streams, seeded through splitmix64 as their
 * authors recommend, one per rule and direction. A decision takes one 53-bit
 * draw, compared with the rule's cumulative thresholds (drop, then dup,
 * reorder, delay, corrupt, reset), and a second draw only for an action that
 * has a parameter. Rates are turned into integer thresholds once, at parse
 * time, so deciding is integer compares only. */
#include "core/fault.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h> /* isfinite, a macro: no libm */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/error.h"

#define DRAW_BITS 53
#define DRAW_ONE (UINT64_C(1) << DRAW_BITS)   /* threshold of probability 1 */
#define MAX_TEXT 4096                          /* longest configuration text */

/* ---- Random streams -------------------------------------------------------- */

struct xoshiro {
    uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(struct xoshiro *x)
{
    uint64_t *s = x->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* A stream for one (seed, salt, rule, direction): the four inputs are mixed
 * through splitmix64 one after another, so that nearby salts or rules give
 * unrelated streams, and splitmix64 then fills the state (never all zero). */
static void xoshiro_seed(struct xoshiro *x, uint64_t seed, uint64_t salt, uint32_t rule,
                         uint32_t dir)
{
    uint64_t mix = seed;
    uint64_t key = splitmix64(&mix);
    mix = key ^ salt;
    key = splitmix64(&mix);
    mix = key ^ ((uint64_t)rule << 8 | dir);
    key = splitmix64(&mix);
    for (int i = 0; i < 4; i++)
        x->s[i] = splitmix64(&key);
}

/* Uniform in [0, 2^53). */
static uint64_t draw(struct xoshiro *x) { return xoshiro_next(x) >> (64 - DRAW_BITS); }

/* Uniform in [0, n), n > 0, by multiply-shift (bias below 2^-32 for the
 * ranges used here, irrelevant for fault injection). */
__extension__ typedef unsigned __int128 fault_u128;

static uint64_t draw_below(struct xoshiro *x, uint64_t n)
{
    return (uint64_t)(((fault_u128)xoshiro_next(x) * n) >> 64);
}

/* ---- Parsing ---------------------------------------------------------------- */

static const char *const kind_names[FDN__FAULT_KIND_COUNT] = {
    [FDN__FAULT_PASS] = "pass",       [FDN__FAULT_DROP] = "drop",
    [FDN__FAULT_DUP] = "dup",         [FDN__FAULT_REORDER] = "reorder",
    [FDN__FAULT_DELAY] = "delay",     [FDN__FAULT_CORRUPT] = "corrupt",
    [FDN__FAULT_RESET] = "reset",
};

const char *fdn__fault_kind_name(enum fdn__fault_kind kind)
{
    return (unsigned)kind < FDN__FAULT_KIND_COUNT ? kind_names[kind] : "unknown";
}

/* Where the parser is, for error messages: "fault rule 2, item
 * \"drop=x\"". */
struct parse_ctx {
    const char *origin;         /* "" or "FDN_FAULTS: " */
    unsigned rule;              /* 1-based, as a user counts */
    const char *item;           /* the whole key=value item, NUL-terminated */
};

#define PARSE_ERR(ctx, ...) parse_error((ctx), __FILE__, __LINE__, __VA_ARGS__)

__attribute__((format(printf, 4, 5)))
static int parse_error(const struct parse_ctx *ctx, const char *file, int line,
                       const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return fdn__error(-EINVAL, file, line, "%sfault rule %u, \"%s\": %s", ctx->origin, ctx->rule,
                      ctx->item, why);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

/* An unsigned integer, decimal or 0x hex, the whole text. */
static bool parse_u64(const char *text, uint64_t max, uint64_t *out)
{
    if (!isdigit((unsigned char)*text))
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 0);
    if (errno || *end || v > max)
        return false;
    *out = v;
    return true;
}

/* strtod() also reads hex, "inf" and "nan": a number here is decimal. */
static bool decimal_start(const char *text)
{
    return (isdigit((unsigned char)*text) || *text == '.') && !strpbrk(text, "xX");
}

/* A probability: a decimal number in [0, 1], the whole text. */
static bool parse_rate(const char *text, double *out)
{
    if (!decimal_start(text))
        return false;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || *end || !isfinite(v) || v < 0 || v > 1)
        return false;
    *out = v;
    return true;
}

/* A duration: a decimal number and a unit (ns, us, ms, s; none is ns). */
static bool parse_duration(const char *text, uint64_t *ns)
{
    static const struct {
        const char *suffix;
        double scale;
    } units[] = {{"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"", 1}};
    if (!decimal_start(text))
        return false;
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || !isfinite(v) || v < 0)
        return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].suffix) != 0)
            continue;
        double total = v * units[i].scale;
        if (total > (double)FDN__FAULT_MAX_DELAY_NS)
            return false;
        *ns = (uint64_t)(total + 0.5);
        return true;
    }
    return false;
}

/* Splits "head:tail" at the first ':'; tail is NULL without one. */
static char *split_colon(char *value, char **tail)
{
    char *colon = strchr(value, ':');
    *tail = NULL;
    if (colon) {
        *colon = '\0';
        *tail = colon + 1;
    }
    return value;
}

static int parse_reorder(const struct parse_ctx *ctx, char *value, struct fdn__fault_rule *r)
{
    char *max_text;
    char *rate_text = split_colon(value, &max_text);
    if (!parse_rate(rate_text, &r->rate[FDN__FAULT_REORDER]))
        return PARSE_ERR(ctx, "the rate must be a number from 0 to 1");
    uint64_t max = FDN__FAULT_DEFAULT_REORDER;
    if (max_text && (!parse_u64(max_text, FDN__FAULT_MAX_REORDER, &max) || max == 0))
        return PARSE_ERR(ctx, "frames to hold back: 1 .. %d", FDN__FAULT_MAX_REORDER);
    r->reorder_max = (uint32_t)max;
    return 0;
}

static int parse_delay(const struct parse_ctx *ctx, char *value, struct fdn__fault_rule *r)
{
    char *range;
    char *rate_text = split_colon(value, &range);
    if (!parse_rate(rate_text, &r->rate[FDN__FAULT_DELAY]))
        return PARSE_ERR(ctx, "the rate must be a number from 0 to 1");
    if (!range)
        return PARSE_ERR(ctx, "a delay needs a duration: delay=RATE:MIN[-MAX], e.g. "
                              "delay=0.05:200us-2ms");
    char *dash = strchr(range, '-');
    if (dash)
        *dash = '\0';
    if (!parse_duration(range, &r->delay_min_ns) ||
        (dash && !parse_duration(dash + 1, &r->delay_max_ns)))
        return PARSE_ERR(ctx, "durations are numbers with ns, us, ms or s, at most 60 s");
    if (!dash)
        r->delay_max_ns = r->delay_min_ns;
    if (r->delay_max_ns < r->delay_min_ns)
        return PARSE_ERR(ctx, "the longest delay is shorter than the shortest");
    return 0;
}

static int parse_dir(const struct parse_ctx *ctx, const char *value, struct fdn__fault_rule *r)
{
    if (strcmp(value, "tx") == 0)
        r->dirs = FDN__FAULT_TX;
    else if (strcmp(value, "rx") == 0)
        r->dirs = FDN__FAULT_RX;
    else if (strcmp(value, "both") == 0)
        r->dirs = FDN__FAULT_BOTH;
    else
        return PARSE_ERR(ctx, "the direction is tx, rx or both");
    return 0;
}

static bool valid_channel_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > FDN__FAULT_NAME_MAX || isdigit((unsigned char)name[0]))
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
            return false;
    return true;
}

/* channel=* or channel=A|B|...: names or ids. */
static int parse_channels(const struct parse_ctx *ctx, char *value, struct fdn__fault_rule *r)
{
    if (strcmp(value, "*") == 0) {
        r->any_channel = true;
        return 0;
    }
    r->any_channel = false;
    for (char *save = NULL, *tok = strtok_r(value, "|", &save); tok;
         tok = strtok_r(NULL, "|", &save)) {
        tok = trim(tok);
        if (r->num_channels == FDN__FAULT_MAX_CHANNELS)
            return PARSE_ERR(ctx, "at most %d channels per rule", FDN__FAULT_MAX_CHANNELS);
        struct fdn__fault_channel *c = &r->channels[r->num_channels];
        uint64_t id;
        if (parse_u64(tok, UINT16_MAX, &id)) {
            c->id = (int32_t)id;
            c->name[0] = '\0';
        } else if (valid_channel_name(tok)) {
            c->id = -1;
            strcpy(c->name, tok);
        } else {
            return PARSE_ERR(ctx, "\"%s\" is neither a channel id (0 .. 65535) nor a "
                                  "channel name", tok);
        }
        r->num_channels++;
    }
    if (r->num_channels == 0)
        return PARSE_ERR(ctx, "no channel given (use * for every channel)");
    return 0;
}

/* lane=* or lane=0|2|...: lane numbers. */
static int parse_lanes(const struct parse_ctx *ctx, char *value, struct fdn__fault_rule *r)
{
    memset(r->lanes, 0, sizeof r->lanes);
    if (strcmp(value, "*") == 0) {
        memset(r->lanes, 0xff, sizeof r->lanes);
        return 0;
    }
    bool any = false;
    for (char *save = NULL, *tok = strtok_r(value, "|", &save); tok;
         tok = strtok_r(NULL, "|", &save)) {
        uint64_t lane;
        if (!parse_u64(trim(tok), 255, &lane))
            return PARSE_ERR(ctx, "lanes are numbers 0 .. 255, '|' separated, or *");
        r->lanes[lane / 64] |= UINT64_C(1) << (lane % 64);
        any = true;
    }
    if (!any)
        return PARSE_ERR(ctx, "no lane given (use * for every lane)");
    return 0;
}

/* What a group of items has set so far, to refuse repeats and to tell a rule
 * from a group that only sets the seed. */
struct group {
    unsigned seen;          /* bit per key */
    bool has_action;
};

enum key {
    KEY_SEED, KEY_DROP, KEY_DUP, KEY_REORDER, KEY_DELAY, KEY_CORRUPT, KEY_RESET,
    KEY_DIR, KEY_CHANNEL, KEY_LANE, KEY_COUNT
};

static const char *const key_names[KEY_COUNT] = {
    "seed", "drop", "dup", "reorder", "delay", "corrupt", "reset", "dir", "channel", "lane",
};

static int find_key(const char *name)
{
    for (int k = 0; k < KEY_COUNT; k++)
        if (strcmp(name, key_names[k]) == 0)
            return k;
    return -1;
}

/* A plain rate item (drop, dup, corrupt, reset). */
static int parse_plain_rate(const struct parse_ctx *ctx, const char *value, double *rate)
{
    return parse_rate(value, rate) ? 0 : PARSE_ERR(ctx, "the rate must be a number from 0 to 1");
}

static int apply_item(const struct parse_ctx *ctx, int key, char *value,
                      struct fdn__fault_config *cfg, struct fdn__fault_rule *r)
{
    switch (key) {
    case KEY_SEED:
        if (cfg->seed_given)
            return PARSE_ERR(ctx, "the seed is given twice");
        if (!parse_u64(value, UINT64_MAX, &cfg->seed))
            return PARSE_ERR(ctx, "the seed is an unsigned 64-bit number");
        cfg->seed_given = true;
        return 0;
    case KEY_DROP: return parse_plain_rate(ctx, value, &r->rate[FDN__FAULT_DROP]);
    case KEY_DUP: return parse_plain_rate(ctx, value, &r->rate[FDN__FAULT_DUP]);
    case KEY_CORRUPT: return parse_plain_rate(ctx, value, &r->rate[FDN__FAULT_CORRUPT]);
    case KEY_RESET: return parse_plain_rate(ctx, value, &r->rate[FDN__FAULT_RESET]);
    case KEY_REORDER: return parse_reorder(ctx, value, r);
    case KEY_DELAY: return parse_delay(ctx, value, r);
    case KEY_DIR: return parse_dir(ctx, value, r);
    case KEY_CHANNEL: return parse_channels(ctx, value, r);
    case KEY_LANE: return parse_lanes(ctx, value, r);
    }
    return PARSE_ERR(ctx, "unknown key");
}

/* One "key=value" item of a group. */
static int parse_item(struct parse_ctx *ctx, char *item, struct group *g,
                      struct fdn__fault_config *cfg, struct fdn__fault_rule *r)
{
    ctx->item = item;
    char *eq = strchr(item, '=');
    if (!eq)
        return PARSE_ERR(ctx, "items are key=value");
    *eq = '\0';
    char *name = trim(item), *value = trim(eq + 1);
    int key = find_key(name);
    /* Errors quote the item whole again: put the '=' back for them. */
    char quoted[128];
    snprintf(quoted, sizeof quoted, "%s=%s", name, value);
    ctx->item = quoted;
    if (key < 0)
        return PARSE_ERR(ctx, "unknown key (seed, drop, dup, reorder, delay, corrupt, reset, "
                              "dir, channel, lane)");
    if (g->seen & (1u << key))
        return PARSE_ERR(ctx, "%s is given twice in this rule", name);
    g->seen |= 1u << key;
    if (key >= KEY_DROP && key <= KEY_RESET)
        g->has_action = true;
    return apply_item(ctx, key, value, cfg, r);
}

/* Turns the rule's rates into cumulative thresholds; their sum must not
 * exceed 1. */
static int finish_rule(const struct parse_ctx *ctx, struct fdn__fault_rule *r)
{
    double sum = 0;
    for (int k = FDN__FAULT_DROP; k < FDN__FAULT_KIND_COUNT; k++)
        sum += r->rate[k];
    if (sum > 1 + 1e-12)
        return FDN_ERR(-EINVAL, "%sfault rule %u: the rates add up to %g, more than 1",
                       ctx->origin, ctx->rule, sum);
    uint64_t cumulative = 0;
    for (int k = FDN__FAULT_DROP; k < FDN__FAULT_KIND_COUNT; k++) {
        cumulative += (uint64_t)(r->rate[k] * (double)DRAW_ONE + 0.5);
        r->threshold[k] = cumulative < DRAW_ONE ? cumulative : DRAW_ONE;
    }
    return 0;
}

static void default_rule(struct fdn__fault_rule *r)
{
    *r = (struct fdn__fault_rule){
        .dirs = FDN__FAULT_BOTH,
        .any_channel = true,
        .reorder_max = FDN__FAULT_DEFAULT_REORDER,
    };
    memset(r->lanes, 0xff, sizeof r->lanes);
}

/* One ';'-separated group: a rule, a seed alone, or nothing. */
static int parse_group(struct parse_ctx *ctx, char *text, struct fdn__fault_config *cfg)
{
    if (*trim(text) == '\0')
        return 0;
    if (cfg->num_rules == FDN__FAULT_MAX_RULES) {
        ctx->item = text;
        return PARSE_ERR(ctx, "at most %d rules", FDN__FAULT_MAX_RULES);
    }
    struct fdn__fault_rule *r = &cfg->rules[cfg->num_rules];
    default_rule(r);
    struct group g = {0};
    for (char *save = NULL, *item = strtok_r(text, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        item = trim(item);
        if (*item == '\0')
            continue;
        int rc = parse_item(ctx, item, &g, cfg, r);
        if (rc < 0)
            return rc;
    }
    if (!g.has_action) {
        if (g.seen & ~(1u << KEY_SEED))
            return FDN_ERR(-EINVAL, "%sfault rule %u selects frames (dir, channel, lane) but "
                           "sets no fault (drop, dup, reorder, delay, corrupt or reset)",
                           ctx->origin, ctx->rule);
        return 0; /* a seed alone: not a rule */
    }
    int rc = finish_rule(ctx, r);
    if (rc == 0)
        cfg->num_rules++;
    return rc;
}

static uint64_t random_seed(void)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed)
        return seed;
    /* No entropy yet (early boot): any seed will do, it is printed anyway. */
    uint64_t mix = (uint64_t)(uintptr_t)&seed ^ (uint64_t)getpid();
    return splitmix64(&mix);
}

/* Parses text; origin prefixes every error detail. */
static int parse_text(const char *text, struct fdn__fault_config *cfg, const char *origin)
{
    memset(cfg, 0, sizeof *cfg);
    size_t len = text ? strlen(text) : 0;
    if (len >= MAX_TEXT)
        return FDN_ERR(-EINVAL, "%sfault configuration of %zu bytes; at most %d", origin, len,
                       MAX_TEXT - 1);
    char copy[MAX_TEXT];
    memcpy(copy, text ? text : "", len + 1);
    struct parse_ctx ctx = {.origin = origin};
    for (char *save = NULL, *group = strtok_r(copy, ";", &save); group;
         group = strtok_r(NULL, ";", &save)) {
        ctx.rule = cfg->num_rules + 1;
        int rc = parse_group(&ctx, group, cfg);
        if (rc < 0)
            return rc;
    }
    if (!cfg->seed_given)
        cfg->seed = random_seed();
    return 0;
}

int fdn__fault_config_parse(const char *text, struct fdn__fault_config *cfg)
{
    return parse_text(text, cfg, "");
}

int fdn__fault_config_from_env(struct fdn__fault_config *cfg)
{
    return parse_text(getenv(FDN__FAULT_ENV), cfg, FDN__FAULT_ENV ": ");
}

int fdn__fault_config_bind(struct fdn__fault_config *cfg,
                           int (*lookup)(void *arg, const char *name), void *arg)
{
    for (uint32_t i = 0; i < cfg->num_rules; i++) {
        struct fdn__fault_rule *r = &cfg->rules[i];
        for (unsigned c = 0; c < r->num_channels; c++) {
            if (!r->channels[c].name[0])
                continue;
            int id = lookup(arg, r->channels[c].name);
            if (id < 0 || id > UINT16_MAX)
                return FDN_ERR(-EINVAL, "fault rule %" PRIu32 ": no channel named \"%s\"",
                               i + 1, r->channels[c].name);
            r->channels[c].id = id;
        }
    }
    return 0;
}

/* ---- Formatting ------------------------------------------------------------- */

/* snprintf into buf at *len, keeping the total length like snprintf. */
__attribute__((format(printf, 4, 5)))
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t room = *len < size ? size - *len : 0;
    int n = vsnprintf(room ? buf + *len : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n;
}

/* The shortest decimal text that reads back as the same double. */
static void format_rate(double rate, char out[32])
{
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(out, 32, "%.*g", digits, rate);
        if (strtod(out, NULL) == rate)
            return;
    }
}

/* Writes the rules' rates; zero rates are left out (a rule with none at all
 * writes drop=0, so it stays a rule), except reorder and delay when their
 * parameters differ from a parse's defaults. */
static void format_rates(const struct fdn__fault_rule *r, char *buf, size_t size, size_t *len)
{
    char rate[32];
    bool any = false;
    for (int k = FDN__FAULT_DROP; k < FDN__FAULT_KIND_COUNT; k++) {
        bool params = (k == FDN__FAULT_REORDER && r->reorder_max != FDN__FAULT_DEFAULT_REORDER) ||
                      (k == FDN__FAULT_DELAY && r->delay_max_ns != 0);
        if (r->rate[k] == 0 && !params)
            continue;
        format_rate(r->rate[k], rate);
        append(buf, size, len, ",%s=%s", kind_names[k], rate);
        if (k == FDN__FAULT_REORDER)
            append(buf, size, len, ":%" PRIu32, r->reorder_max);
        if (k == FDN__FAULT_DELAY)
            append(buf, size, len, ":%" PRIu64 "ns-%" PRIu64 "ns", r->delay_min_ns,
                   r->delay_max_ns);
        any = true;
    }
    if (!any)
        append(buf, size, len, ",drop=0");
}

static void format_rule(const struct fdn__fault_rule *r, char *buf, size_t size, size_t *len)
{
    static const char *const dir_names[] = {"", "tx", "rx", "both"};
    append(buf, size, len, "dir=%s,channel=", dir_names[r->dirs & 3]);
    if (r->any_channel)
        append(buf, size, len, "*");
    for (unsigned c = 0; !r->any_channel && c < r->num_channels; c++) {
        if (r->channels[c].name[0])
            append(buf, size, len, "%s%s", c ? "|" : "", r->channels[c].name);
        else
            append(buf, size, len, "%s%" PRId32, c ? "|" : "", r->channels[c].id);
    }
    bool all_lanes = true;
    for (int i = 0; i < 4; i++)
        all_lanes = all_lanes && r->lanes[i] == UINT64_MAX;
    append(buf, size, len, ",lane=%s", all_lanes ? "*" : "");
    for (unsigned lane = 0, first = 1; !all_lanes && lane < 256; lane++)
        if (r->lanes[lane / 64] >> (lane % 64) & 1) {
            append(buf, size, len, "%s%u", first ? "" : "|", lane);
            first = 0;
        }
    format_rates(r, buf, size, len);
}

int fdn__fault_config_format(const struct fdn__fault_config *cfg, char *buf, size_t size)
{
    size_t len = 0;
    if (size)
        buf[0] = '\0';
    append(buf, size, &len, "seed=%" PRIu64, cfg->seed);
    for (uint32_t i = 0; i < cfg->num_rules; i++) {
        append(buf, size, &len, "%s", i ? ";" : ",");
        format_rule(&cfg->rules[i], buf, size, &len);
    }
    return (int)len;
}

/* ---- Decisions -------------------------------------------------------------- */

struct fdn__fault_state {
    struct fdn__fault_config cfg;
    uint64_t salt;
    struct fdn__fault_stats stats;
    struct xoshiro streams[FDN__FAULT_MAX_RULES][2];   /* [rule][tx, rx] */
};

int fdn__fault_state_create(const struct fdn__fault_config *cfg, uint64_t salt,
                            struct fdn__fault_state **out)
{
    *out = NULL;
    if (!fdn__fault_config_active(cfg))
        return 0;
    for (uint32_t i = 0; i < cfg->num_rules; i++)
        for (unsigned c = 0; c < cfg->rules[i].num_channels; c++)
            if (cfg->rules[i].channels[c].id < 0)
                return FDN_ERR(-EINVAL, "fault rule %" PRIu32 ": channel \"%s\" is not bound "
                               "to an id (fdn__fault_config_bind)", i + 1,
                               cfg->rules[i].channels[c].name);
    struct fdn__fault_state *s = calloc(1, sizeof *s);
    if (!s)
        return FDN_ERR(-ENOMEM, "no memory for a fault layer state");
    s->cfg = *cfg;
    s->salt = salt;
    for (uint32_t i = 0; i < cfg->num_rules; i++)
        for (uint32_t d = 0; d < 2; d++)
            xoshiro_seed(&s->streams[i][d], cfg->seed, salt, i, d);
    *out = s;
    return 0;
}

void fdn__fault_state_destroy(struct fdn__fault_state *s) { free(s); }

static bool rule_matches(const struct fdn__fault_rule *r, enum fdn__fault_dir dir,
                         uint16_t channel, uint8_t lane)
{
    if (!(r->dirs & dir) || !(r->lanes[lane / 64] >> (lane % 64) & 1))
        return false;
    if (r->any_channel)
        return true;
    for (unsigned c = 0; c < r->num_channels; c++)
        if (r->channels[c].id == channel)
            return true;
    return false;
}

/* The kind a draw falls on: the first cumulative threshold above it. */
static enum fdn__fault_kind pick_kind(const struct fdn__fault_rule *r, uint64_t u)
{
    for (int k = FDN__FAULT_DROP; k < FDN__FAULT_KIND_COUNT; k++)
        if (u < r->threshold[k])
            return (enum fdn__fault_kind)k;
    return FDN__FAULT_PASS;
}

/* Draws the parameters of the chosen action. */
static void fill_action(const struct fdn__fault_rule *r, struct xoshiro *x, uint32_t frame_len,
                        uint64_t now_ns, struct fdn__fault_action *a)
{
    switch (a->kind) {
    case FDN__FAULT_REORDER:
        a->hold = 1 + (uint32_t)draw_below(x, r->reorder_max);
        break;
    case FDN__FAULT_DELAY:
        a->until_ns = now_ns + r->delay_min_ns +
                      draw_below(x, r->delay_max_ns - r->delay_min_ns + 1);
        break;
    case FDN__FAULT_CORRUPT:
        if (frame_len == 0) {
            a->kind = FDN__FAULT_PASS; /* nothing to flip */
            break;
        }
        {
            uint64_t v = xoshiro_next(x);
            a->byte_index = (uint32_t)(((v & UINT32_MAX) * frame_len) >> 32);
            a->xor_mask = (uint8_t)(1 + (v >> 32) % 255);
        }
        break;
    default:
        break;
    }
}

struct fdn__fault_action fdn__fault_decide(struct fdn__fault_state *s, enum fdn__fault_dir dir,
                                           uint16_t channel, uint8_t lane, uint32_t frame_len,
                                           uint64_t now_ns)
{
    struct fdn__fault_action a = {.kind = FDN__FAULT_PASS};
    s->stats.frames++;
    for (uint32_t i = 0; i < s->cfg.num_rules; i++) {
        const struct fdn__fault_rule *r = &s->cfg.rules[i];
        if (!rule_matches(r, dir, channel, lane))
            continue;
        struct xoshiro *x = &s->streams[i][dir == FDN__FAULT_TX ? 0 : 1];
        a.kind = pick_kind(r, draw(x));
        fill_action(r, x, frame_len, now_ns, &a);
        break;
    }
    s->stats.actions[a.kind]++;
    return a;
}

void fdn__fault_stats_get(const struct fdn__fault_state *s, struct fdn__fault_stats *out)
{
    *out = s->stats;
}

int fdn__fault_describe(const struct fdn__fault_state *s, char *buf, size_t size)
{
    size_t len = 0;
    if (size)
        buf[0] = '\0';
    append(buf, size, &len, "fault layer: seed=%" PRIu64 "%s salt=%" PRIu64 " %s='",
           s->cfg.seed, s->cfg.seed_given ? "" : " (random)", s->salt, FDN__FAULT_ENV);
    char text[MAX_TEXT * 2];
    fdn__fault_config_format(&s->cfg, text, sizeof text);
    append(buf, size, &len, "%s' frames=%" PRIu64, text, s->stats.frames);
    for (int k = 0; k < FDN__FAULT_KIND_COUNT; k++)
        append(buf, size, &len, " %s=%" PRIu64, kind_names[k], s->stats.actions[k]);
    return (int)len;
}
