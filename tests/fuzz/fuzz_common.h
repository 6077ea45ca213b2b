/* What the fuzz targets and the corpus generator share: the frame limits
 * and the two handshake configurations, so that generated seeds decode and
 * reach DONE under exactly the settings the targets run with. */
#ifndef FDN_TESTS_FUZZ_COMMON_H
#define FDN_TESTS_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/handshake.h"
#include "core/wire.h"

/* A failed property: print it and abort, so libFuzzer saves the input. The
 * check stays active whatever NDEBUG says. */
#define FUZZ_CHECK(cond)                                                           \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__,    \
                    #cond);                                                        \
            abort();                                                               \
        }                                                                          \
    } while (0)

/* The first input byte of the frame target selects one of these: tight
 * limits reach the over-limit paths, wide ones every 48-bit value. */
static inline struct fdn__wire_limits fuzz_frame_limits(unsigned selector)
{
    if (selector & 1)
        return (struct fdn__wire_limits){
            .max_fragment = UINT32_MAX,
            .max_message = FDN__WIRE_MAX_U48,
            .max_channel = UINT16_MAX,
        };
    return (struct fdn__wire_limits){
        .max_fragment = 4096,
        .max_message = 65536,
        .max_channel = 15,
    };
}

/* In the handshake target's input, this one-byte message stands for "a
 * correct AUTH": the harness computes the tag (it knows the secret), so
 * the fuzzer can reach DONE and explore what follows it. */
#define FUZZ_VALID_AUTH_MARKER FDN__HS_MSG_AUTH

#define FUZZ_CHANNEL_COUNT 4
#define FUZZ_MAX_FRAGMENT (1u << 20)   /* the handshake settings' max_fragment */

static inline struct fdn__channel_desc fuzz_channel(unsigned i)
{
    static const char *const names[FUZZ_CHANNEL_COUNT] = {"coordination", "data", "gossip",
                                                          "events"};
    struct fdn__channel_desc c = {
        .id = (uint16_t)(i + 1),
        .priority = (uint8_t)(FUZZ_CHANNEL_COUNT - i),
        .flags = i < 2 ? FDN__CHANNEL_ORDERED | FDN__CHANNEL_RELIABLE : 0,
        .weight = 1,
        .lane = (uint8_t)(i % 2),
        .credit_window = 1u << 20,
        .max_message = 1u << 24,
    };
    strcpy(c.name, names[i]);
    return c;
}

/* channels must have room for FUZZ_CHANNEL_COUNT entries. The server speaks
 * versions 1..2, the client 1 only. */
static inline struct fdn__handshake_config
fuzz_handshake_config(enum fdn__handshake_role role, struct fdn__channel_desc *channels)
{
    for (unsigned i = 0; i < FUZZ_CHANNEL_COUNT; i++)
        channels[i] = fuzz_channel(i);
    struct fdn__handshake_config cfg = {
        .role = role,
        .version_min = 1,
        .version_max = role == FDN__HS_SERVER ? 2 : 1,
        .incarnation = 1,
        .capabilities = 3,
        .cluster_name = "fuzz",
        .channels = channels,
        .channel_count = FUZZ_CHANNEL_COUNT,
        .limits = {.max_fragment = FUZZ_MAX_FRAGMENT, .max_message = 1u << 30, .max_channel = 255},
    };
    memset(cfg.node_id, role == FDN__HS_SERVER ? 0x5e : 0xc1, sizeof cfg.node_id);
    memset(cfg.secret, 0x5a, sizeof cfg.secret);
    return cfg;
}

#endif
