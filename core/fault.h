/* The seeded fault layer's decision engine (DESIGN.md: "every transport
 * passes through a seeded fault layer"). Internal.
 *
 * What it is. A pure decision function: for each frame a connection is about
 * to send (tx) or has just received (rx), fdn__fault_decide() says what to do
 * with it: pass it, drop it, send or deliver it twice, hold it back behind N
 * later frames, hold it until a time, flip bits of one byte, or reset the
 * connection. It performs none of these itself; the transport path that calls
 * it does, so this module has no I/O, no clock and no allocation after
 * create, and is tested on its own.
 *
 * The model: Aeron's loss generators. Aeron's C media driver can put a
 * "loss" interceptor into its UDP transport bindings
 * (AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS=loss, with arguments such as
 * "rate=0.1|seed=42|recv-msg-mask=0x9"), and its Java driver has debug
 * channel endpoints that ask a LossGenerator about every datagram: a seeded
 * random stream that answers "drop this one?", optionally only for some
 * frame types or streams. This layer asks the same question per frame, per
 * direction, and per channel or lane (Aeron's stream and session), and
 * widens the answer from "drop" to drop, duplicate, reorder, delay, corrupt
 * and reset, each with its own rate, because a reliable session protocol has
 * to survive all of them. As in Aeron, the seed makes a run replayable: the
 * same seed and the same frame sequence give the same decisions, so a
 * failure found once can be reproduced from the seed it printed
 * (fdn__fault_describe()). Unlike Aeron's process-wide generator, each
 * connection has its own streams (see Determinism).
 *
 * Why frames, not bytes. Aeron's generators work on UDP datagrams, which the
 * network may lose whole. Foundation's main transport is TCP: inside one
 * connection TCP never loses, duplicates or reorders bytes, and cutting a
 * byte stream at arbitrary points would only test the frame decoder's
 * handling of garbage (the fuzz targets do that). The failures a reliable
 * channel must survive are frame-sized: a frame that never arrives because
 * the connection carrying it died, a frame retransmitted after resumption
 * and so seen twice, a frame that overtakes another one sent on another
 * lane. So decisions are made per whole frame, before it enters the stream
 * (tx) or after it left it (rx). Dropping a frame on a reliable channel then
 * leaves a gap in the channel's sequence numbers that nothing inside the
 * connection will fill; it is recovered by session resumption (the peer sees
 * the gap or stops acknowledging, the connection is reset, the session
 * resumes and the sender retransmits what was not acknowledged), which is
 * exactly what the fault tests exercise. RESET tests the same path directly.
 * CORRUPT flips one byte of a frame's payload; with no checksum on the wire
 * (TCP already has one), it reaches the application unless the session layer
 * checks it, and fdn-perf bw --verify counts it.
 *
 * Configuration text (option or environment variable FDN_FAULTS): rules
 * separated by ';', each a list of key=value items separated by ',':
 *
 *     seed=42,drop=0.01,dup=0.001,reorder=0.01:3,delay=0.05:200us-2ms,
 *     corrupt=0.0001,reset=0.001,dir=tx,channel=data|3,lane=*
 *
 *   seed=N          the run's seed (decimal or 0x hex); once in the whole
 *                   text. Absent: a random seed, printed by
 *                   fdn__fault_describe() so the run can still be replayed.
 *   drop=P          probability of each action per frame, 0 <= P <= 1; the
 *   dup=P           probabilities of one rule add up to at most 1 (one draw
 *   corrupt=P       decides among them)
 *   reset=P
 *   reorder=P[:N]   hold the frame back until 1..N (uniform) later frames of
 *                   the same direction have passed; N defaults to 3, max 1024
 *   delay=P:D[-D2]  hold the frame for D, or uniform in [D, D2]; units ns,
 *                   us, ms, s (a bare number is ns); at most 60 s
 *   dir=tx|rx|both  the direction(s) the rule applies to; default both
 *   channel=C|C..   channel names or ids, '|' separated, or *; default *
 *   lane=L|L..      lane numbers 0..255, '|' separated, or *; default *
 *
 * A group holding only seed= is not a rule. A frame is decided by the first
 * rule that matches its direction, channel and lane (so put specific rules
 * first: "channel=coordination,drop=0;drop=0.01" spares coordination); a
 * frame no rule matches passes and consumes no randomness. At most
 * FDN__FAULT_MAX_RULES rules. Channel names are bound to ids by
 * fdn__fault_config_bind() once the channel table is known.
 *
 * Determinism. Each connection's state has one random stream per rule and
 * direction, seeded from (seed, connection salt, rule, direction), so the
 * decisions of one rule in one direction depend only on the order of the
 * frames that rule sees in that direction: not on the other direction's
 * timing, nor on frames of channels other rules take. For an exactly
 * repeatable run across channels whose frames interleave by timing, give
 * each such channel its own rule. The salt distinguishes connections; it
 * must be stable from run to run (a connection's ordinal at its node, or
 * peer id and lane), never an address, port or pointer.
 *
 * Zero cost when off. When the configuration has no rule (the default: empty
 * text, FDN_FAULTS unset), fdn__fault_state_create() gives a NULL state, the
 * caller keeps that NULL and tests it before the call, and no fdn__fault_*
 * function is called on the data path at all:
 *
 *     if (fdn__unlikely(conn->faults != NULL))
 *         act = fdn__fault_decide(conn->faults, FDN__FAULT_TX, ch, lane, len, now);
 *
 * Errors: parsing is user input, so every failure is -EINVAL with a
 * fdn_errmsg() detail naming the rule and the item.
 *
 * Threads: a config is a plain value, copied freely and read-only once
 * bound. A state belongs to the thread that owns its connection. */
#ifndef FDN_CORE_FAULT_H
#define FDN_CORE_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FDN__FAULT_MAX_RULES 16
#define FDN__FAULT_MAX_CHANNELS 8       /* channel entries per rule */
#define FDN__FAULT_NAME_MAX 32          /* as FDN__HS_CHANNEL_NAME_MAX */
#define FDN__FAULT_MAX_REORDER 1024
#define FDN__FAULT_DEFAULT_REORDER 3
#define FDN__FAULT_MAX_DELAY_NS (60ull * 1000 * 1000 * 1000)
#define FDN__FAULT_ENV "FDN_FAULTS"

/* Directions, as bits so a rule can hold both. */
enum fdn__fault_dir {
    FDN__FAULT_TX = 1,
    FDN__FAULT_RX = 2,
    FDN__FAULT_BOTH = 3,
};

enum fdn__fault_kind {
    FDN__FAULT_PASS = 0,
    FDN__FAULT_DROP,        /* discard the frame */
    FDN__FAULT_DUP,         /* send or deliver the frame twice */
    FDN__FAULT_REORDER,     /* hold it until `hold` later frames of this direction passed */
    FDN__FAULT_DELAY,       /* hold it until `until_ns` */
    FDN__FAULT_CORRUPT,     /* xor byte `byte_index` of the frame with `xor_mask` */
    FDN__FAULT_RESET,       /* abort the connection (the frame goes nowhere) */
    FDN__FAULT_KIND_COUNT
};

/* A channel a rule names. */
struct fdn__fault_channel {
    int32_t id;                             /* -1 until a name is bound */
    char name[FDN__FAULT_NAME_MAX + 1];     /* "" when given as a number */
};

/* One rule: which frames it takes, and the rate of each action as a
 * cumulative threshold of a 53-bit uniform draw. */
struct fdn__fault_rule {
    uint8_t dirs;                           /* FDN__FAULT_TX and/or _RX */
    bool any_channel;
    uint8_t num_channels;
    struct fdn__fault_channel channels[FDN__FAULT_MAX_CHANNELS];
    uint64_t lanes[4];                      /* bitmap of lanes 0..255 */
    double rate[FDN__FAULT_KIND_COUNT];     /* as written; [PASS] unused */
    uint64_t threshold[FDN__FAULT_KIND_COUNT]; /* cumulative, in units of 2^-53 */
    uint32_t reorder_max;                   /* REORDER holds 1..reorder_max frames */
    uint64_t delay_min_ns, delay_max_ns;
};

struct fdn__fault_config {
    uint64_t seed;
    bool seed_given;                        /* false: chosen at random by the parser */
    uint32_t num_rules;                     /* 0: the fault layer is off */
    struct fdn__fault_rule rules[FDN__FAULT_MAX_RULES];
};

/* One decision. Only the fields of its kind are meaningful. */
struct fdn__fault_action {
    enum fdn__fault_kind kind;
    uint32_t hold;              /* REORDER: frames to let pass first, >= 1 */
    uint32_t byte_index;        /* CORRUPT: < frame_len */
    uint8_t xor_mask;           /* CORRUPT: never 0 */
    uint64_t until_ns;          /* DELAY: now_ns + the drawn delay */
};

struct fdn__fault_stats {
    uint64_t frames;                        /* decide() calls */
    uint64_t actions[FDN__FAULT_KIND_COUNT];/* decisions per kind, PASS included */
};

struct fdn__fault_state;

/* Parses configuration text into *cfg (see above). NULL or "" (or only
 * spaces) gives a config with no rules. Returns 0 or -EINVAL with a detail
 * in fdn_errmsg(); *cfg is meaningful only on success. */
int fdn__fault_config_parse(const char *text, struct fdn__fault_config *cfg);

/* Parses the environment variable FDN_FAULTS (unset: no rules). Errors as
 * fdn__fault_config_parse(), the detail naming the variable. */
int fdn__fault_config_from_env(struct fdn__fault_config *cfg);

/* True when cfg has at least one rule, i.e. a state will exist. */
static inline bool fdn__fault_config_active(const struct fdn__fault_config *cfg)
{
    return cfg->num_rules > 0;
}

/* Resolves every channel name in cfg to an id with lookup(arg, name), which
 * returns the id (>= 0) or a negative errno for an unknown name
 * (fdn_channel_lookup() has this shape). Numbers need no binding. Returns 0,
 * or -EINVAL naming the rule and the unknown channel. */
int fdn__fault_config_bind(struct fdn__fault_config *cfg,
                           int (*lookup)(void *arg, const char *name), void *arg);

/* Writes cfg as text that parses back to the same rules and seed (the seed
 * always written, so the text replays a run whose seed was random), NUL
 * terminated, truncated to size. Returns the length of the whole text, as
 * snprintf does. */
int fdn__fault_config_format(const struct fdn__fault_config *cfg, char *buf, size_t size);

/* Creates a connection's state: copies cfg and seeds its streams from
 * (cfg->seed, salt). With no rule in cfg, sets *out to NULL and returns 0:
 * the layer is off and the caller must not call anything else here. Returns
 * 0, -EINVAL for a channel name not bound yet, or -ENOMEM. */
int fdn__fault_state_create(const struct fdn__fault_config *cfg, uint64_t salt,
                            struct fdn__fault_state **out);

/* Frees the state. NULL is a no-op. */
void fdn__fault_state_destroy(struct fdn__fault_state *s);

/* Decides the fate of one frame of frame_len bytes on channel and lane in
 * direction dir (FDN__FAULT_TX or _RX), at now_ns (used only for DELAY's
 * until_ns). A CORRUPT drawn for an empty frame becomes PASS. Counts the
 * decision. s must not be NULL. */
struct fdn__fault_action fdn__fault_decide(struct fdn__fault_state *s, enum fdn__fault_dir dir,
                                           uint16_t channel, uint8_t lane, uint32_t frame_len,
                                           uint64_t now_ns);

void fdn__fault_stats_get(const struct fdn__fault_state *s, struct fdn__fault_stats *out);

/* "fault layer: seed=42 salt=7 FDN_FAULTS='seed=42,drop=0.01' frames=N
 * drop=N dup=N ...": what a failing run prints so it can be replayed.
 * Returns the length as snprintf does. */
int fdn__fault_describe(const struct fdn__fault_state *s, char *buf, size_t size);

/* Fixed lower-case name of a kind ("drop"), "unknown" outside the enum. */
const char *fdn__fault_kind_name(enum fdn__fault_kind kind);

#endif
