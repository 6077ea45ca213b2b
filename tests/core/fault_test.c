/* The fault layer's decision engine (core/fault.h): parsing good and bad
 * text, binding channel names, the layer being off, determinism from the
 * seed and salt, the rates over many draws, and which frames a rule takes.
 *
 * Rate checks are statistical, not timing: 10^5 draws per check, bounds of
 * 5 standard deviations, so a correct engine fails one about once in 3.5
 * million runs; and the seed is fixed, so a run is the same every time. */
#include <errno.h>
#include <stdlib.h>

#include "core/fault.h"
#include "test.h"

#define DRAWS 100000

/* The test's channel table, for fdn__fault_config_bind(). */
static int lookup_channel(void *arg, const char *name)
{
    (void)arg;
    static const char *const names[] = {"coordination", "events", "data", "gossip", "perf"};
    for (int i = 0; i < 5; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -ENOENT;
}

static void parse_bound(const char *text, struct fdn__fault_config *cfg)
{
    CHECK_OK(fdn__fault_config_parse(text, cfg));
    CHECK_OK(fdn__fault_config_bind(cfg, lookup_channel, NULL));
}

static struct fdn__fault_state *make_state(const char *text, uint64_t salt)
{
    struct fdn__fault_config cfg;
    parse_bound(text, &cfg);
    struct fdn__fault_state *s;
    CHECK_OK(fdn__fault_state_create(&cfg, salt, &s));
    CHECK(s != NULL);
    return s;
}

static bool same_action(struct fdn__fault_action a, struct fdn__fault_action b)
{
    return a.kind == b.kind && a.hold == b.hold && a.byte_index == b.byte_index &&
           a.xor_mask == b.xor_mask && a.until_ns == b.until_ns;
}

/* ---- Parsing ----------------------------------------------------------------- */

static void test_parse_full_example(void)
{
    struct fdn__fault_config cfg;
    CHECK_OK(fdn__fault_config_parse("seed=42,drop=0.01,dup=0.001,reorder=0.01:5,"
                                     "delay=0.05:200us-2ms,corrupt=0.0001,reset=0.001,"
                                     "dir=tx,channel=data|3,lane=0|7",
                                     &cfg));
    CHECK(cfg.seed_given);
    CHECK_EQ(cfg.seed, 42);
    CHECK_EQ(cfg.num_rules, 1);
    const struct fdn__fault_rule *r = &cfg.rules[0];
    CHECK_EQ(r->dirs, FDN__FAULT_TX);
    CHECK(!r->any_channel);
    CHECK_EQ(r->num_channels, 2);
    CHECK(strcmp(r->channels[0].name, "data") == 0 && r->channels[0].id == -1);
    CHECK(r->channels[1].name[0] == '\0' && r->channels[1].id == 3);
    CHECK_EQ(r->lanes[0], (1u << 0) | (1u << 7));
    CHECK(r->lanes[1] == 0 && r->lanes[2] == 0 && r->lanes[3] == 0);
    CHECK(r->rate[FDN__FAULT_DROP] == 0.01 && r->rate[FDN__FAULT_DUP] == 0.001);
    CHECK(r->rate[FDN__FAULT_REORDER] == 0.01 && r->reorder_max == 5);
    CHECK(r->rate[FDN__FAULT_DELAY] == 0.05);
    CHECK_EQ(r->delay_min_ns, 200000);
    CHECK_EQ(r->delay_max_ns, 2000000);
    CHECK(r->rate[FDN__FAULT_CORRUPT] == 0.0001 && r->rate[FDN__FAULT_RESET] == 0.001);
    /* Thresholds are cumulative and end at the sum of the rates. */
    for (int k = FDN__FAULT_DUP; k < FDN__FAULT_KIND_COUNT; k++)
        CHECK(r->threshold[k] >= r->threshold[k - 1]);
    double sum = 0.01 + 0.001 + 0.01 + 0.05 + 0.0001 + 0.001;
    double got = (double)r->threshold[FDN__FAULT_RESET] / 9007199254740992.0;
    CHECK(got - sum < 1e-12 && sum - got < 1e-12);
}

static void test_parse_defaults_and_groups(void)
{
    struct fdn__fault_config cfg;
    /* Off: nothing, spaces, a seed alone, empty groups. */
    const char *off[] = {NULL, "", "   ", "seed=7", ";;", " seed = 7 ; "};
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++) {
        CHECK_OK(fdn__fault_config_parse(off[i], &cfg));
        CHECK_EQ(cfg.num_rules, 0);
        CHECK(!fdn__fault_config_active(&cfg));
    }
    CHECK(cfg.seed_given && cfg.seed == 7);

    /* Defaults of a rule: both directions, every channel and lane. */
    CHECK_OK(fdn__fault_config_parse(" drop = 0.5 ", &cfg));
    CHECK_EQ(cfg.num_rules, 1);
    CHECK(!cfg.seed_given); /* a random seed was chosen, to be printed */
    CHECK_EQ(cfg.rules[0].dirs, FDN__FAULT_BOTH);
    CHECK(cfg.rules[0].any_channel);
    for (int i = 0; i < 4; i++)
        CHECK(cfg.rules[0].lanes[i] == UINT64_MAX);
    CHECK_EQ(cfg.rules[0].reorder_max, FDN__FAULT_DEFAULT_REORDER);

    /* Several rules, the seed in the second group; units; a fixed delay;
     * a zero-rate rule (it only shields its channel); rates adding up to 1. */
    CHECK_OK(fdn__fault_config_parse("channel=coordination,drop=0;seed=0x10,dir=rx,"
                                     "delay=1:1.5ms;dir=both,delay=0.5:10-20us,reset=0.5",
                                     &cfg));
    CHECK_EQ(cfg.num_rules, 3);
    CHECK_EQ(cfg.seed, 16);
    CHECK_EQ(cfg.rules[1].dirs, FDN__FAULT_RX);
    CHECK_EQ(cfg.rules[1].delay_min_ns, 1500000);
    CHECK_EQ(cfg.rules[1].delay_max_ns, 1500000);
    CHECK_EQ(cfg.rules[2].delay_min_ns, 10); /* a bare number is ns */
    CHECK_EQ(cfg.rules[2].delay_max_ns, 20000);
    CHECK_EQ(cfg.rules[2].threshold[FDN__FAULT_RESET], 1ull << 53);
}

static void test_parse_errors(void)
{
    static const struct {
        const char *text;
        const char *detail; /* a word the message must contain */
    } bad[] = {
        {"drop=2", "0 to 1"},
        {"drop=-0.1", "0 to 1"},
        {"drop=abc", "0 to 1"},
        {"drop=nan", "0 to 1"},
        {"drop=inf", "0 to 1"},
        {"drop=0x1p-3", "0 to 1"},
        {"drop=", "0 to 1"},
        {"drop", "key=value"},
        {"lose=0.1", "unknown key"},
        {"drop=0.1,drop=0.2", "twice"},
        {"drop=0.6,dup=0.6", "more than 1"},
        {"delay=0.1", "needs a duration"},
        {"delay=0.1:5ms-1ms", "shorter"},
        {"delay=0.1:2min", "durations"},
        {"delay=0.1:61s", "durations"},
        {"delay=2:1ms", "0 to 1"},
        {"reorder=0.1:0", "hold back"},
        {"reorder=0.1:2000", "hold back"},
        {"reorder=0.1:x", "hold back"},
        {"dir=up,drop=0.1", "tx, rx or both"},
        {"channel=,drop=0.1", "no channel"},
        {"channel=9bad,drop=0.1", "channel name"},
        {"channel=70000,drop=0.1", "channel name"},
        {"channel=a|b|c|d|e|f|g|h|i,drop=0.1", "at most"},
        {"channel=a_name_that_is_much_longer_than_32,drop=0.1", "channel name"},
        {"lane=256,drop=0.1", "lanes"},
        {"lane=,drop=0.1", "no lane"},
        {"dir=tx,channel=data", "sets no fault"},
        {"seed=1;seed=2", "twice"},
        {"seed=-1", "64-bit"},
        {"seed=18446744073709551616", "64-bit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct fdn__fault_config cfg;
        int rc = fdn__fault_config_parse(bad[i].text, &cfg);
        if (rc != -EINVAL || !strstr(fdn_errmsg(), bad[i].detail)) {
            fprintf(stderr, "\"%s\": rc %d, message \"%s\", expected -EINVAL and \"%s\"\n",
                    bad[i].text, rc, fdn_errmsg(), bad[i].detail);
            abort();
        }
        CHECK(strstr(fdn_errmsg(), "fault rule")); /* the user can find the place */
    }

    /* Too many rules, and too much text. */
    char text[8192] = "";
    for (int i = 0; i <= FDN__FAULT_MAX_RULES; i++)
        strcat(text, "drop=0.1;");
    CHECK_EQ(fdn__fault_config_parse(text, &(struct fdn__fault_config){0}), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "at most 16 rules"));
    memset(text, ' ', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    CHECK_EQ(fdn__fault_config_parse(text, &(struct fdn__fault_config){0}), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "at most"));
}

static void test_env(void)
{
    struct fdn__fault_config cfg;
    CHECK_OK(unsetenv(FDN__FAULT_ENV));
    CHECK_OK(fdn__fault_config_from_env(&cfg));
    CHECK(!fdn__fault_config_active(&cfg));

    CHECK_OK(setenv(FDN__FAULT_ENV, "seed=9,dup=0.25", 1));
    CHECK_OK(fdn__fault_config_from_env(&cfg));
    CHECK(cfg.num_rules == 1 && cfg.seed == 9 && cfg.rules[0].rate[FDN__FAULT_DUP] == 0.25);

    CHECK_OK(setenv(FDN__FAULT_ENV, "dup=lots", 1));
    CHECK_EQ(fdn__fault_config_from_env(&cfg), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "FDN_FAULTS: fault rule 1, \"dup=lots\""));
    CHECK_OK(unsetenv(FDN__FAULT_ENV));
}

/* Formatting gives text that parses back to the very same rules and seed. */
static void test_format_round_trip(void)
{
    const char *texts[] = {
        ("seed=42,drop=0.01,dup=0.001,reorder=0.01:5,delay=0.05:200us-2ms,corrupt=0.0001,"
         "reset=0.001,dir=tx,channel=data|3,lane=0|7|200"),
        "channel=coordination,drop=0;dir=rx,delay=1:1.5ms;dup=0.3333333333333333",
        "reorder=0:7,delay=0:1ms-2ms,reset=1e-9,lane=3",
        "drop=0.1", /* random seed: the text must carry it */
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        struct fdn__fault_config a, b;
        CHECK_OK(fdn__fault_config_parse(texts[i], &a));
        char text[4096];
        int n = fdn__fault_config_format(&a, text, sizeof text);
        CHECK(n > 0 && (size_t)n < sizeof text && strlen(text) == (size_t)n);
        CHECK_OK(fdn__fault_config_parse(text, &b));
        CHECK(b.seed_given && b.seed == a.seed);
        CHECK_EQ(b.num_rules, a.num_rules);
        CHECK(memcmp(a.rules, b.rules, a.num_rules * sizeof a.rules[0]) == 0);
        /* Truncation is snprintf's: NUL-terminated, the whole length returned. */
        char small[10];
        CHECK_EQ(fdn__fault_config_format(&a, small, sizeof small), n);
        CHECK_EQ(strlen(small), sizeof small - 1);
    }
}

/* ---- Binding and the off state ------------------------------------------------ */

static void test_bind_and_off(void)
{
    struct fdn__fault_config cfg;
    struct fdn__fault_state *s = (struct fdn__fault_state *)&cfg; /* must be overwritten */

    CHECK_OK(fdn__fault_config_parse("seed=1", &cfg));
    CHECK_OK(fdn__fault_state_create(&cfg, 5, &s));
    CHECK(s == NULL); /* off: the caller keeps NULL and never calls decide */
    fdn__fault_state_destroy(NULL);

    CHECK_OK(fdn__fault_config_parse("channel=perf|1,drop=0.5", &cfg));
    CHECK_EQ(fdn__fault_state_create(&cfg, 5, &s), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "not bound"));
    CHECK_OK(fdn__fault_config_bind(&cfg, lookup_channel, NULL));
    CHECK_EQ(cfg.rules[0].channels[0].id, 4);
    CHECK_EQ(cfg.rules[0].channels[1].id, 1);
    CHECK_OK(fdn__fault_state_create(&cfg, 5, &s));
    CHECK(s != NULL);
    fdn__fault_state_destroy(s);

    CHECK_OK(fdn__fault_config_parse("drop=0.1;channel=nosuch,drop=0.5", &cfg));
    CHECK_EQ(fdn__fault_config_bind(&cfg, lookup_channel, NULL), -EINVAL);
    CHECK(strstr(fdn_errmsg(), "fault rule 2: no channel named \"nosuch\""));
}

/* ---- Determinism ------------------------------------------------------------- */

#define EVERYTHING                                                                        \
    "drop=0.1,dup=0.1,reorder=0.1:8,delay=0.1:1us-1ms,corrupt=0.1,reset=0.05"

/* The decision sequence of a fixed frame pattern: both directions, several
 * channels, lanes and lengths. */
static void decide_sequence(struct fdn__fault_state *s, struct fdn__fault_action *out, int n)
{
    for (int i = 0; i < n; i++)
        out[i] = fdn__fault_decide(s, i % 3 ? FDN__FAULT_TX : FDN__FAULT_RX,
                                   (uint16_t)(i % 5), (uint8_t)(i % 2), (uint32_t)(i % 1500),
                                   1000000u * (uint64_t)i);
}

static int count_differences(const struct fdn__fault_action *a, const struct fdn__fault_action *b,
                             int n)
{
    int diff = 0;
    for (int i = 0; i < n; i++)
        diff += !same_action(a[i], b[i]);
    return diff;
}

static void test_determinism(void)
{
    enum { N = 5000 };
    static struct fdn__fault_action a[N], b[N];
    struct fdn__fault_state *s1 = make_state("seed=42," EVERYTHING, 7);
    struct fdn__fault_state *s2 = make_state("seed=42," EVERYTHING, 7);
    decide_sequence(s1, a, N);
    decide_sequence(s2, b, N);
    CHECK_EQ(count_differences(a, b, N), 0);
    fdn__fault_state_destroy(s1);
    fdn__fault_state_destroy(s2);

    /* Another salt (connection) or another seed: another sequence. With 40%
     * faults of 6 kinds, most of 5000 decisions must differ somewhere. */
    s1 = make_state("seed=42," EVERYTHING, 8);
    decide_sequence(s1, b, N);
    CHECK(count_differences(a, b, N) > N / 4);
    fdn__fault_state_destroy(s1);
    s1 = make_state("seed=43," EVERYTHING, 7);
    decide_sequence(s1, b, N);
    CHECK(count_differences(a, b, N) > N / 4);
    fdn__fault_state_destroy(s1);
}

/* Each direction has its own stream: tx decisions do not depend on how rx
 * frames interleave with them. */
static void test_directions_independent(void)
{
    enum { N = 2000 };
    static struct fdn__fault_action alone[N];
    struct fdn__fault_state *s = make_state("seed=5," EVERYTHING, 1);
    for (int i = 0; i < N; i++)
        alone[i] = fdn__fault_decide(s, FDN__FAULT_TX, 2, 0, 100, 0);
    fdn__fault_state_destroy(s);

    s = make_state("seed=5," EVERYTHING, 1);
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < i % 4; j++)
            fdn__fault_decide(s, FDN__FAULT_RX, 2, 0, 100, 0);
        CHECK(same_action(fdn__fault_decide(s, FDN__FAULT_TX, 2, 0, 100, 0), alone[i]));
    }
    fdn__fault_state_destroy(s);
}

/* ---- Rates ------------------------------------------------------------------- */

/* count out of DRAWS within 5 standard deviations of DRAWS * p (compared
 * squared: no libm). */
static void check_rate(const char *what, uint64_t count, double p)
{
    double mean = DRAWS * p, variance = DRAWS * p * (1 - p);
    double off = (double)count - mean;
    if (off * off > 25 * variance) {
        fprintf(stderr, "%s: %" PRIu64 " of %d, expected %.1f, variance %.1f (5 sigma)\n",
                what, count, DRAWS, mean, variance);
        abort();
    }
}

static void test_rates(void)
{
    static const double p[FDN__FAULT_KIND_COUNT] = {
        [FDN__FAULT_DROP] = 0.01,  [FDN__FAULT_DUP] = 0.02,     [FDN__FAULT_REORDER] = 0.03,
        [FDN__FAULT_DELAY] = 0.04, [FDN__FAULT_CORRUPT] = 0.05, [FDN__FAULT_RESET] = 0.001,
    };
    struct fdn__fault_state *s =
        make_state("seed=1234,drop=0.01,dup=0.02,reorder=0.03:4,delay=0.04:200us-2ms,"
                   "corrupt=0.05,reset=0.001", 99);
    const uint64_t now = 5000000000ull;
    uint64_t holds[5] = {0};
    for (int i = 0; i < DRAWS; i++) {
        uint32_t len = 1 + (uint32_t)i % 4096;
        struct fdn__fault_action a = fdn__fault_decide(s, i & 1 ? FDN__FAULT_TX : FDN__FAULT_RX,
                                                       (uint16_t)i, (uint8_t)i, len, now);
        switch (a.kind) {
        case FDN__FAULT_REORDER:
            CHECK(a.hold >= 1 && a.hold <= 4);
            holds[a.hold]++;
            break;
        case FDN__FAULT_DELAY:
            CHECK(a.until_ns >= now + 200000 && a.until_ns <= now + 2000000);
            break;
        case FDN__FAULT_CORRUPT:
            CHECK(a.byte_index < len && a.xor_mask != 0);
            break;
        default:
            break;
        }
    }
    struct fdn__fault_stats st;
    fdn__fault_stats_get(s, &st);
    CHECK_EQ(st.frames, DRAWS);
    uint64_t total = 0;
    for (int k = 0; k < FDN__FAULT_KIND_COUNT; k++)
        total += st.actions[k];
    CHECK_EQ(total, DRAWS);
    double faults = 0;
    for (int k = FDN__FAULT_DROP; k < FDN__FAULT_KIND_COUNT; k++) {
        check_rate(fdn__fault_kind_name(k), st.actions[k], p[k]);
        faults += p[k];
    }
    check_rate("pass", st.actions[FDN__FAULT_PASS], 1 - faults);
    /* Every hold length from 1 to 4 shows up (3000 reorders, about 750 each). */
    for (int h = 1; h <= 4; h++)
        CHECK(holds[h] > 0);
    fdn__fault_state_destroy(s);

    /* Certainties: rate 1 always, rate 0 never; an empty frame cannot be
     * corrupted and passes. */
    s = make_state("seed=3,channel=1,drop=1;channel=2,drop=0;channel=3,corrupt=1", 0);
    for (int i = 0; i < 1000; i++) {
        CHECK_EQ(fdn__fault_decide(s, FDN__FAULT_TX, 1, 0, 10, 0).kind, FDN__FAULT_DROP);
        CHECK_EQ(fdn__fault_decide(s, FDN__FAULT_RX, 2, 0, 10, 0).kind, FDN__FAULT_PASS);
        CHECK_EQ(fdn__fault_decide(s, FDN__FAULT_RX, 3, 0, 0, 0).kind, FDN__FAULT_PASS);
        CHECK_EQ(fdn__fault_decide(s, FDN__FAULT_RX, 3, 0, 1, 0).kind, FDN__FAULT_CORRUPT);
    }
    fdn__fault_state_destroy(s);
}

/* ---- Filtering --------------------------------------------------------------- */

static void test_filtering(void)
{
    /* data is channel 2 in lookup_channel. The first matching rule decides:
     * coordination is spared by a zero-rate rule before the catch-all. */
    struct fdn__fault_state *s = make_state("seed=11,dir=tx,channel=3,drop=1;"
                                            "channel=data,lane=1|3,dup=1;"
                                            "channel=coordination,drop=0;"
                                            "dir=rx,reset=1",
                                            0);
    static const struct {
        enum fdn__fault_dir dir;
        uint16_t channel;
        uint8_t lane;
        enum fdn__fault_kind expect;
    } cases[] = {
        {FDN__FAULT_TX, 3, 0, FDN__FAULT_DROP},     /* rule 1 */
        {FDN__FAULT_RX, 3, 0, FDN__FAULT_RESET},    /* rule 1 is tx only: rule 4 */
        {FDN__FAULT_TX, 2, 1, FDN__FAULT_DUP},      /* rule 2 */
        {FDN__FAULT_RX, 2, 3, FDN__FAULT_DUP},      /* rule 2, both directions */
        {FDN__FAULT_TX, 2, 0, FDN__FAULT_PASS},     /* lane 0: no rule for tx */
        {FDN__FAULT_RX, 2, 2, FDN__FAULT_RESET},    /* lane 2: rule 4 */
        {FDN__FAULT_RX, 0, 0, FDN__FAULT_PASS},     /* rule 3 shields coordination */
        {FDN__FAULT_TX, 4, 255, FDN__FAULT_PASS},   /* nothing matches */
    };
    for (int round = 0; round < 3; round++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            struct fdn__fault_action a =
                fdn__fault_decide(s, cases[i].dir, cases[i].channel, cases[i].lane, 64, 0);
            if (a.kind != cases[i].expect) {
                fprintf(stderr, "case %zu: %s, expected %s\n", i, fdn__fault_kind_name(a.kind),
                        fdn__fault_kind_name(cases[i].expect));
                abort();
            }
        }
    struct fdn__fault_stats st;
    fdn__fault_stats_get(s, &st);
    CHECK_EQ(st.frames, 24);
    CHECK_EQ(st.actions[FDN__FAULT_DROP], 3);
    CHECK_EQ(st.actions[FDN__FAULT_DUP], 6);
    CHECK_EQ(st.actions[FDN__FAULT_RESET], 6);
    CHECK_EQ(st.actions[FDN__FAULT_PASS], 9);
    fdn__fault_state_destroy(s);
}

/* ---- Describe ---------------------------------------------------------------- */

static void test_describe_replays(void)
{
    enum { N = 100 };
    struct fdn__fault_action seen[N];
    struct fdn__fault_state *s = make_state("drop=0.2,channel=data", 77); /* random seed */
    for (int i = 0; i < N; i++)
        seen[i] = fdn__fault_decide(s, FDN__FAULT_TX, 2, 0, 10, 0);
    char text[8192];
    int n = fdn__fault_describe(s, text, sizeof text);
    CHECK(n > 0 && (size_t)n < sizeof text);
    printf("%s\n", text);
    CHECK(strncmp(text, "fault layer: seed=", 18) == 0);
    CHECK(strstr(text, "(random) salt=77 FDN_FAULTS='"));
    CHECK(strstr(text, "frames=100 pass="));

    /* The quoted text, with the same salt, replays the same decisions. */
    char *quoted = strstr(text, "FDN_FAULTS='") + 12;
    *strchr(quoted, '\'') = '\0';
    struct fdn__fault_state *replay = make_state(quoted, 77);
    for (int i = 0; i < N; i++)
        CHECK(same_action(fdn__fault_decide(replay, FDN__FAULT_TX, 2, 0, 10, 0), seen[i]));
    fdn__fault_state_destroy(replay);
    fdn__fault_state_destroy(s);
    CHECK(strcmp(fdn__fault_kind_name(FDN__FAULT_REORDER), "reorder") == 0);
    CHECK(strcmp(fdn__fault_kind_name(FDN__FAULT_KIND_COUNT), "unknown") == 0);
}

int main(void)
{
    RUN(test_parse_full_example);
    RUN(test_parse_defaults_and_groups);
    RUN(test_parse_errors);
    RUN(test_env);
    RUN(test_format_round_trip);
    RUN(test_bind_and_off);
    RUN(test_determinism);
    RUN(test_directions_independent);
    RUN(test_rates);
    RUN(test_filtering);
    RUN(test_describe_replays);
    printf("fault: all tests passed\n");
    return 0;
}
