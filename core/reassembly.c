/* Per-channel reassembly of fragments into messages (see reassembly.h).
 *
 * Channels sit by value in an array sorted by id and are found by binary
 * search: a connection has few channels, and nothing outside this file
 * points into the array, so adding a channel may move it. Each fragment is fully
 * validated first; only then is state changed (allocate, copy, advance), so
 * a rejected fragment leaves the reassembler exactly as it was. */
#include "core/reassembly.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/error.h>

#include "base/compiler.h"
#include "base/error.h"

struct reasm_channel {
    uint16_t id;
    uint64_t max_message;
    uint64_t memory_budget;
    uint64_t credit_window;          /* 0: no flow control */

    fdn_msg *partial;                /* message in progress, NULL if none */
    uint64_t partial_id;
    uint64_t partial_total;
    uint64_t next_offset;            /* where the next fragment must start */

    uint64_t consumed_ungranted;     /* consumed and not yet returned as credit */
    uint64_t credit_limit;           /* received_bytes may grow up to this */
    struct fdn__reasm_channel_stats stats;
};

struct fdn__reasm {
    struct reasm_channel *channels;  /* sorted by id */
    uint32_t num_channels;
    enum fdn__reasm_error last_error;
};

/* One fragment as received, to pass around whole. */
struct fragment {
    uint64_t msg_id;
    uint64_t offset;
    uint64_t total_len;
    const uint8_t *payload;
    uint32_t len;
    bool first;
    bool last;
};

/* ---- Lookup --------------------------------------------------------------- */

/* Index of the channel with this id, or of where it belongs if absent. */
static uint32_t lower_bound(const struct fdn__reasm *r, uint16_t id)
{
    uint32_t lo = 0, hi = r->num_channels;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->channels[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct reasm_channel *find_channel(const struct fdn__reasm *r, uint16_t id)
{
    uint32_t i = lower_bound(r, id);
    return i < r->num_channels && r->channels[i].id == id ? &r->channels[i] : NULL;
}

/* ---- Validation ----------------------------------------------------------- */

/* Records why the fragment was refused and returns rc. */
static int reject(struct fdn__reasm *r, enum fdn__reasm_error why, int rc)
{
    r->last_error = why;
    return rc;
}

/* Bytes the peer may still send on the channel. */
static uint64_t credit_left(const struct reasm_channel *c)
{
    return c->credit_limit - c->stats.received_bytes;
}

/* Bytes of complete messages received and not yet consumed. */
static uint64_t held_complete(const struct reasm_channel *c)
{
    uint64_t in_progress = c->partial ? c->next_offset : 0;
    return c->stats.received_bytes - c->stats.consumed_bytes - c->stats.discarded_bytes -
           in_progress;
}

static int check_credit(struct fdn__reasm *r, const struct reasm_channel *c, uint32_t len)
{
    if (!c->credit_window || len <= credit_left(c))
        return 0;
    return reject(r, FDN__REASM_OVER_CREDIT,
                  FDN_ERR(-EPROTO, "channel %u: %u bytes received with %" PRIu64 " of credit",
                          c->id, len, credit_left(c)));
}

/* The checks of a first fragment, single or not, before any allocation. */
static int check_first(struct fdn__reasm *r, const struct reasm_channel *c,
                       const struct fragment *f)
{
    if (f->offset != 0)
        return reject(r, FDN__REASM_OUT_OF_ORDER,
                      FDN_ERR(-EPROTO, "channel %u: first fragment at offset %" PRIu64, c->id,
                              f->offset));
    if (f->total_len > c->max_message)
        return reject(r, FDN__REASM_OVER_MAX_MESSAGE,
                      FDN_ERR(-EPROTO, "channel %u: %" PRIu64 "-byte message over the %" PRIu64
                              "-byte maximum", c->id, f->total_len, c->max_message));
    bool ends_message = f->len == f->total_len;
    if (f->len > f->total_len || f->last != ends_message || (!f->last && f->len == 0))
        return reject(r, FDN__REASM_SIZE_MISMATCH,
                      FDN_ERR(-EPROTO, "channel %u: first fragment of %u bytes, %s, of a %"
                              PRIu64 "-byte message", c->id, f->len,
                              f->last ? "last" : "not last", f->total_len));
    if (!f->last && f->total_len > c->memory_budget)
        return reject(r, FDN__REASM_OVER_BUDGET,
                      FDN_ERR(-EPROTO, "channel %u: incomplete %" PRIu64 "-byte message over "
                              "the %" PRIu64 "-byte budget", c->id, f->total_len,
                              c->memory_budget));
    return check_credit(r, c, f->len);
}

/* The checks of a fragment continuing the message in progress. */
static int check_next(struct fdn__reasm *r, const struct reasm_channel *c,
                      const struct fragment *f)
{
    if (f->first)
        return reject(r, FDN__REASM_UNEXPECTED_FIRST,
                      FDN_ERR(-EPROTO, "channel %u: message %" PRIu64 " starts while %" PRIu64
                              " is in progress", c->id, f->msg_id, c->partial_id));
    if (f->msg_id != c->partial_id || f->offset != c->next_offset)
        return reject(r, FDN__REASM_OUT_OF_ORDER,
                      FDN_ERR(-EPROTO, "channel %u: fragment of message %" PRIu64 " at %" PRIu64
                              ", expected message %" PRIu64 " at %" PRIu64, c->id, f->msg_id,
                              f->offset, c->partial_id, c->next_offset));
    uint64_t room = c->partial_total - c->next_offset;
    bool ends_message = f->len == room;
    if (f->total_len != c->partial_total || f->len > room || f->len == 0 ||
        f->last != ends_message)
        return reject(r, FDN__REASM_SIZE_MISMATCH,
                      FDN_ERR(-EPROTO, "channel %u: %u bytes at %" PRIu64 " (%s) of a %" PRIu64
                              "-byte message said to be %" PRIu64, c->id, f->len, f->offset,
                              f->last ? "last" : "not last", c->partial_total, f->total_len));
    return check_credit(r, c, f->len);
}

/* ---- Delivery ------------------------------------------------------------- */

static void count_received(struct reasm_channel *c, uint32_t len)
{
    c->stats.received_bytes += len;
}

static int deliver(struct reasm_channel *c, fdn_msg *msg, uint64_t total_len, fdn_msg **complete)
{
    c->stats.messages++;
    c->stats.bytes += total_len;
    *complete = msg;
    return 1;
}

static int allocate(struct fdn__reasm *r, const struct reasm_channel *c, uint64_t total_len,
                    fdn_pool *pool, fdn_msg **out)
{
    int rc = fdn_msg_alloc(pool, (size_t)total_len, out);
    if (rc < 0)
        return reject(r, FDN__REASM_POOL_EXHAUSTED,
                      FDN_ERR(rc, "channel %u: no buffer for a %" PRIu64 "-byte message: %s",
                              c->id, total_len, fdn_strerror(rc)));
    return 0;
}

/* A message in one fragment: no state to keep between fragments. */
static int take_whole(struct fdn__reasm *r, struct reasm_channel *c, const struct fragment *f,
                      fdn_pool *pool, fdn_msg **complete)
{
    fdn_msg *msg;
    int rc = allocate(r, c, f->total_len, pool, &msg);
    if (rc < 0)
        return rc;
    if (f->len)
        memcpy(fdn_msg_data(msg), f->payload, f->len);
    count_received(c, f->len);
    return deliver(c, msg, f->total_len, complete);
}

static int start_message(struct fdn__reasm *r, struct reasm_channel *c, const struct fragment *f,
                         fdn_pool *pool)
{
    fdn_msg *msg;
    int rc = allocate(r, c, f->total_len, pool, &msg);
    if (rc < 0)
        return rc;
    memcpy(fdn_msg_data(msg), f->payload, f->len);
    count_received(c, f->len);
    c->partial = msg;
    c->partial_id = f->msg_id;
    c->partial_total = f->total_len;
    c->next_offset = f->len;
    c->stats.incomplete_bytes = f->total_len;
    return 0;
}

static int continue_message(struct reasm_channel *c, const struct fragment *f,
                            fdn_msg **complete)
{
    memcpy(fdn_msg_data(c->partial) + f->offset, f->payload, f->len);
    count_received(c, f->len);
    c->next_offset += f->len;
    if (!f->last)
        return 0;
    fdn_msg *msg = c->partial;
    c->partial = NULL;
    c->stats.incomplete_bytes = 0;
    return deliver(c, msg, c->partial_total, complete);
}

int fdn__reasm_fragment(struct fdn__reasm *r, uint16_t channel, uint64_t msg_id,
                        uint64_t offset, uint64_t total_len, bool first, bool last,
                        const uint8_t *payload, uint32_t len, fdn_pool *pool,
                        fdn_msg **complete)
{
    struct reasm_channel *c = find_channel(r, channel);
    if (fdn__unlikely(!c))
        return reject(r, FDN__REASM_UNKNOWN_CHANNEL,
                      FDN_ERR(-EPROTO, "fragment on unknown channel %u", channel));
    const struct fragment f = {
        .msg_id = msg_id, .offset = offset, .total_len = total_len,
        .payload = payload, .len = len, .first = first, .last = last,
    };
    int rc;
    if (c->partial) {
        rc = check_next(r, c, &f);
        return rc < 0 ? rc : continue_message(c, &f, complete);
    }
    if (!first)
        return reject(r, FDN__REASM_OUT_OF_ORDER,
                      FDN_ERR(-EPROTO, "channel %u: fragment of message %" PRIu64 " at %" PRIu64
                              " with no message in progress", channel, msg_id, offset));
    rc = check_first(r, c, &f);
    if (rc < 0)
        return rc;
    return last ? take_whole(r, c, &f, pool, complete) : start_message(r, c, &f, pool);
}

int fdn__reasm_adopt(struct fdn__reasm *r, uint16_t channel, uint64_t msg_id, uint64_t total_len,
                     fdn_msg *msg, fdn_msg **complete)
{
    struct reasm_channel *c = find_channel(r, channel);
    if (fdn__unlikely(!c))
        return reject(r, FDN__REASM_UNKNOWN_CHANNEL,
                      FDN_ERR(-EPROTO, "message on unknown channel %u", channel));
    const struct fragment f = {
        .msg_id = msg_id, .offset = 0, .total_len = total_len,
        .payload = fdn_msg_data(msg), .len = (uint32_t)fdn_msg_len(msg), .first = true,
        .last = true,
    };
    int rc = c->partial ? check_next(r, c, &f) : check_first(r, c, &f);
    if (rc < 0)
        return rc;
    count_received(c, f.len);
    return deliver(c, msg, total_len, complete);
}

enum fdn__reasm_error fdn__reasm_last_error(const struct fdn__reasm *r) { return r->last_error; }

const char *fdn__reasm_error_name(enum fdn__reasm_error e)
{
    switch (e) {
    case FDN__REASM_OK: return "ok";
    case FDN__REASM_UNKNOWN_CHANNEL: return "unknown channel";
    case FDN__REASM_OUT_OF_ORDER: return "fragment out of order";
    case FDN__REASM_UNEXPECTED_FIRST: return "message started while another is in progress";
    case FDN__REASM_SIZE_MISMATCH: return "fragment size mismatch";
    case FDN__REASM_OVER_MAX_MESSAGE: return "message over the channel's maximum size";
    case FDN__REASM_OVER_BUDGET: return "incomplete message over the channel's memory budget";
    case FDN__REASM_OVER_CREDIT: return "bytes beyond the channel's credit";
    case FDN__REASM_POOL_EXHAUSTED: return "no buffer for the message";
    }
    return "unknown reason";
}

/* ---- Receive credit ------------------------------------------------------- */

int fdn__reasm_consumed(struct fdn__reasm *r, uint16_t channel, uint64_t bytes)
{
    struct reasm_channel *c = find_channel(r, channel);
    if (!c)
        return FDN_ERR(-ENOENT, "consumed bytes on unknown channel %u", channel);
    uint64_t unconsumed = held_complete(c);
    if (bytes > unconsumed)
        return FDN_ERR(-ERANGE, "channel %u: %" PRIu64 " bytes consumed, only %" PRIu64
                       " received and not consumed", channel, bytes, unconsumed);
    c->stats.consumed_bytes += bytes;
    c->consumed_ungranted += bytes;
    return 0;
}

/* The largest threshold that cannot deadlock the channel (see reassembly.h). */
static uint64_t safe_threshold(const struct reasm_channel *c, uint64_t threshold)
{
    uint64_t cap = c->credit_window - c->max_message;
    return threshold < cap ? threshold : cap;
}

uint64_t fdn__reasm_credit_to_grant(struct fdn__reasm *r, uint16_t channel, uint64_t threshold)
{
    struct reasm_channel *c = find_channel(r, channel);
    if (!c || !c->credit_window || !c->consumed_ungranted ||
        c->consumed_ungranted < safe_threshold(c, threshold))
        return 0;
    uint64_t grant = c->consumed_ungranted;
    c->consumed_ungranted = 0;
    c->stats.granted_bytes += grant;
    c->credit_limit += grant;
    return grant;
}

int fdn__reasm_resume_channel(struct fdn__reasm *r, uint16_t channel, uint64_t *window_out)
{
    struct reasm_channel *c = find_channel(r, channel);
    if (!c)
        return FDN_ERR(-ENOENT, "resume of unknown channel %u", channel);
    if (c->partial) {
        c->stats.discarded_bytes += c->next_offset;
        c->stats.discarded_msgs++;
        fdn_msg_free(c->partial);
        c->partial = NULL;
        c->stats.incomplete_bytes = 0;
    }
    uint64_t held = held_complete(c);
    uint64_t avail = c->credit_window > held ? c->credit_window - held : 0;
    if (c->credit_window) {
        /* A fresh account: everything consumed so far is in avail. */
        c->consumed_ungranted = 0;
        c->credit_limit = c->stats.received_bytes + avail;
    }
    *window_out = avail;
    return 0;
}

int fdn__reasm_channel_stats(const struct fdn__reasm *r, uint16_t channel,
                             struct fdn__reasm_channel_stats *out)
{
    const struct reasm_channel *c = find_channel(r, channel);
    if (!c)
        return FDN_ERR(-ENOENT, "no channel %u", channel);
    *out = c->stats;
    return 0;
}

/* ---- Set-up and teardown -------------------------------------------------- */

int fdn__reasm_create(struct fdn__reasm **out)
{
    struct fdn__reasm *r = calloc(1, sizeof *r);
    if (!r)
        return FDN_ERR(-ENOMEM, "no memory for a reassembler");
    *out = r;
    return 0;
}

void fdn__reasm_destroy(struct fdn__reasm *r)
{
    if (!r)
        return;
    for (uint32_t i = 0; i < r->num_channels; i++)
        fdn_msg_free(r->channels[i].partial);
    free(r->channels);
    free(r);
}

int fdn__reasm_add_channel(struct fdn__reasm *r, const struct fdn__reasm_channel_config *cfg)
{
    if (cfg->max_message < 1 || cfg->max_message > UINT32_MAX)
        return FDN_ERR(-EINVAL, "channel %u: max_message %" PRIu64 " is not in 1..%" PRIu32,
                       cfg->id, cfg->max_message, UINT32_MAX);
    if (cfg->credit_window && cfg->credit_window < cfg->max_message)
        return FDN_ERR(-EINVAL, "channel %u: a %" PRIu64 "-byte credit window cannot carry a %"
                       PRIu64 "-byte message", cfg->id, cfg->credit_window, cfg->max_message);
    uint32_t at = lower_bound(r, cfg->id);
    if (at < r->num_channels && r->channels[at].id == cfg->id)
        return FDN_ERR(-EEXIST, "channel %u already exists", cfg->id);
    struct reasm_channel *grown =
        realloc(r->channels, (r->num_channels + 1) * sizeof *r->channels);
    if (!grown)
        return FDN_ERR(-ENOMEM, "no memory for channel %u", cfg->id);
    r->channels = grown;
    memmove(&grown[at + 1], &grown[at], (r->num_channels - at) * sizeof *grown);
    grown[at] = (struct reasm_channel){
        .id = cfg->id,
        .max_message = cfg->max_message,
        .memory_budget = cfg->memory_budget ? cfg->memory_budget : cfg->max_message,
        .credit_window = cfg->credit_window,
        .credit_limit = cfg->credit_window,
    };
    r->num_channels++;
    return 0;
}
