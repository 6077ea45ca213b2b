/* libFuzzer target for the handshake state machine (core/handshake.c).
 *
 * Input: messages, each a 2-byte little-endian length and that many bytes
 * (a length past the end takes what is left). Every message is fed, in
 * order, to a server-role and to a client-role machine, each from its own
 * exactly-sized heap copy so that ASan sees any read past the message.
 *
 * A fuzzer cannot forge an HMAC, so the one-byte message
 * FUZZ_VALID_AUTH_MARKER is replaced by the correct AUTH for the machine
 * receiving it, computed here from the transcript as documented in
 * handshake.h; that lets the fuzzer reach DONE and what follows.
 *
 * Properties checked (besides memory safety, by ASan and UBSan):
 *   - a machine reaches DONE only on the message that carried a correct AUTH,
 *     after a HELLO it accepted, and its result matches that HELLO;
 *   - a failing machine queues nothing, except the server's own HELLO when it
 *     rejects a client HELLO for version, cluster or channel reasons;
 *   - each side queues at most its HELLO and its AUTH;
 *   - statuses, failures and return values agree. */
#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One machine under test and what the harness saw of its conversation. */
struct target {
    struct fdn__handshake *hs;
    enum fdn__handshake_role role;
    struct fdn__channel_desc channels[FUZZ_CHANNEL_COUNT];
    uint8_t secret[FDN__HS_SECRET_SIZE];
    uint8_t own_hello[FDN__WIRE_HANDSHAKE_MAX];   /* as it sent it */
    size_t own_hello_len;
    uint8_t peer_hello[FDN__WIRE_HANDSHAKE_MAX];  /* as it accepted it */
    size_t peer_hello_len;
    unsigned outputs;
};

static bool target_init(struct target *t, enum fdn__handshake_role role)
{
    memset(t, 0, sizeof *t);
    t->role = role;
    struct fdn__handshake_config cfg = fuzz_handshake_config(role, t->channels);
    memcpy(t->secret, cfg.secret, sizeof t->secret);
    return fdn__handshake_create(&cfg, &t->hs) == 0;
}

static bool failure_may_answer(enum fdn__handshake_failure f)
{
    return f == FDN__HS_FAIL_VERSION_MISMATCH || f == FDN__HS_FAIL_CLUSTER_MISMATCH ||
           f == FDN__HS_FAIL_CHANNEL_CONFLICT;
}

/* Takes what the machine queued and checks it may have queued it. */
static void drain_outputs(struct target *t)
{
    const uint8_t *msg;
    size_t len;
    while ((len = fdn__handshake_next_output(t->hs, &msg)) != 0) {
        FUZZ_CHECK(++t->outputs <= 2);
        if (msg[0] == FDN__HS_MSG_HELLO) {
            FUZZ_CHECK(t->own_hello_len == 0 && len <= sizeof t->own_hello);
            memcpy(t->own_hello, msg, len);
            t->own_hello_len = len;
        } else {
            FUZZ_CHECK(msg[0] == FDN__HS_MSG_AUTH && len == FDN__HS_AUTH_SIZE);
            FUZZ_CHECK(t->own_hello_len != 0 && t->peer_hello_len != 0);
        }
    }
}

/* The AUTH the machine's peer would send, from the documented transcript. */
static void correct_peer_auth(const struct target *t, uint8_t auth[FDN__HS_AUTH_SIZE])
{
    bool local_is_client = t->role == FDN__HS_CLIENT;
    const uint8_t *client_hello = local_is_client ? t->own_hello : t->peer_hello;
    const uint8_t *server_hello = local_is_client ? t->peer_hello : t->own_hello;
    size_t client_len = local_is_client ? t->own_hello_len : t->peer_hello_len;
    size_t server_len = local_is_client ? t->peer_hello_len : t->own_hello_len;

    uint8_t transcript[11 + 6 + 4 * 32];
    memcpy(transcript, "fdn-auth-v1", 11);
    memcpy(transcript + 11, local_is_client ? "server" : "client", 6);
    crypto_hash_sha256(transcript + 17, client_hello, client_len);
    crypto_hash_sha256(transcript + 49, server_hello, server_len);
    memcpy(transcript + 81, client_hello + 36, 32);   /* nonces: HELLO offset 36 */
    memcpy(transcript + 113, server_hello + 36, 32);
    auth[0] = FDN__HS_MSG_AUTH;
    crypto_auth_hmacsha256(auth + 1, transcript, sizeof transcript, t->secret);
}

static void check_done(const struct target *t)
{
    const struct fdn__handshake_result *r = fdn__handshake_result(t->hs);
    const struct fdn__hello *peer = fdn__handshake_peer_hello(t->hs);
    FUZZ_CHECK(r && peer);
    FUZZ_CHECK(memcmp(peer->nonce, t->peer_hello + 36, 32) == 0);
    FUZZ_CHECK(r->version >= 1 && r->version <= 2);
    FUZZ_CHECK(peer->max_fragment >= FDN__HS_MIN_FRAGMENT);
    FUZZ_CHECK(r->max_fragment == (peer->max_fragment < FUZZ_MAX_FRAGMENT ? peer->max_fragment
                                                                         : FUZZ_MAX_FRAGMENT));
    FUZZ_CHECK(r->channel_count <= FUZZ_CHANNEL_COUNT && r->channel_count <= peer->channel_count);
    for (unsigned i = 0; i < r->channel_count; i++) {
        const struct fdn__channel_desc *c = &r->channels[i];
        FUZZ_CHECK(c->id >= 1 && c->id <= FUZZ_CHANNEL_COUNT);
        FUZZ_CHECK(strcmp(c->name, t->channels[c->id - 1].name) == 0);
        FUZZ_CHECK(c->max_message <= t->channels[c->id - 1].max_message);
        FUZZ_CHECK(c->lane == t->channels[c->id - 1].lane);   /* the local side's */
    }
}

static void feed(struct target *t, const uint8_t *msg, size_t len)
{
    enum fdn__handshake_status before = fdn__handshake_status(t->hs);
    bool is_marker = len == 1 && msg[0] == FUZZ_VALID_AUTH_MARKER;
    bool can_authenticate = t->own_hello_len != 0 && t->peer_hello_len != 0;
    bool valid_auth = is_marker && can_authenticate;

    uint8_t *copy;
    if (valid_auth) {
        copy = malloc(FDN__HS_AUTH_SIZE);
        FUZZ_CHECK(copy);
        correct_peer_auth(t, copy);
        len = FDN__HS_AUTH_SIZE;
    } else {
        copy = malloc(len ? len : 1);
        FUZZ_CHECK(copy);
        memcpy(copy, msg, len);
    }

    unsigned outputs_before = t->outputs;
    int rc = fdn__handshake_feed(t->hs, copy, len);
    enum fdn__handshake_status after = fdn__handshake_status(t->hs);
    bool accepted_hello = before == FDN__HS_IN_PROGRESS && after == FDN__HS_IN_PROGRESS &&
                          len > 0 && copy[0] == FDN__HS_MSG_HELLO;
    if (accepted_hello) {
        FUZZ_CHECK(t->peer_hello_len == 0);
        memcpy(t->peer_hello, copy, len);
        t->peer_hello_len = len;
    }
    free(copy);
    drain_outputs(t);

    if (after == FDN__HS_FAILED) {
        FUZZ_CHECK(rc < 0);
        enum fdn__handshake_failure f = fdn__handshake_failure(t->hs);
        FUZZ_CHECK(f > FDN__HS_FAIL_NONE && f < FDN__HS_FAIL_COUNT);
        FUZZ_CHECK(strcmp(fdn__handshake_failure_name(f), "unknown") != 0);
        bool answered = t->outputs != outputs_before;
        FUZZ_CHECK(!answered || (t->role == FDN__HS_SERVER && before == FDN__HS_IN_PROGRESS &&
                                 failure_may_answer(f) && t->outputs == 1));
    } else {
        FUZZ_CHECK(rc == (int)after);
        FUZZ_CHECK(fdn__handshake_failure(t->hs) == FDN__HS_FAIL_NONE);
    }
    if (after == FDN__HS_DONE && before != FDN__HS_DONE) {
        FUZZ_CHECK(valid_auth);   /* never DONE without a correct AUTH */
        check_done(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct target *server = malloc(sizeof *server), *client = malloc(sizeof *client);
    FUZZ_CHECK(server && client);
    FUZZ_CHECK(target_init(server, FDN__HS_SERVER) && target_init(client, FDN__HS_CLIENT));
    drain_outputs(client);   /* its HELLO, which the input plays no part in */

    while (size >= 2) {
        size_t len = fdn__load_le16(data);
        data += 2, size -= 2;
        if (len > size)
            len = size;
        feed(server, data, len);
        feed(client, data, len);
        data += len, size -= len;
    }

    fdn__handshake_destroy(server->hs);
    fdn__handshake_destroy(client->hs);
    free(server);
    free(client);
    return 0;
}
