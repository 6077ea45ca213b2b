/* Tests of the connection handshake (core/handshake.c): two state machines
 * talking in memory, the AUTH transcript recomputed independently from the
 * layout documented in handshake.h, every failure reason, tampering with
 * each HELLO byte, malformed messages, and the secret file helper. */
#include "core/handshake.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "base/compiler.h"
#include "test.h"

/* ---- Set-up --------------------------------------------------------------- */

static const struct fdn__wire_limits limits = {
    .max_fragment = 1 << 20,
    .max_message = UINT64_C(1) << 32,
    .max_channel = 1023,
};

static struct fdn__channel_desc channel(uint16_t id, const char *name, uint8_t flags)
{
    struct fdn__channel_desc c = {
        .id = id,
        .priority = 1,
        .flags = flags,
        .weight = 1,
        .lane = 0,
        .credit_window = 1 << 20,
        .max_message = 1 << 24,
    };
    snprintf(c.name, sizeof c.name, "%s", name);
    return c;
}

#define ORDERED_RELIABLE (FDN__CHANNEL_ORDERED | FDN__CHANNEL_RELIABLE)

/* One side's configuration; tests edit it before creating the machine. */
struct side {
    struct fdn__handshake_config cfg;
    struct fdn__channel_desc channels[FDN__HS_MAX_CHANNELS];
};

static void side_init(struct side *s, enum fdn__handshake_role role)
{
    memset(s, 0, sizeof *s);
    s->channels[0] = channel(1, "coordination", ORDERED_RELIABLE);
    s->channels[1] = channel(2, "data", FDN__CHANNEL_RELIABLE);
    s->channels[2] = channel(3, "gossip", 0);
    s->cfg = (struct fdn__handshake_config){
        .role = role,
        .incarnation = role == FDN__HS_CLIENT ? 11 : 22,
        .capabilities = role == FDN__HS_CLIENT ? 0x0f : 0x3c,
        .cluster_name = "test-cluster",
        .channels = s->channels,
        .channel_count = 3,
        .limits = limits,
    };
    memset(s->cfg.node_id, role == FDN__HS_CLIENT ? 0xc1 : 0x5e, FDN__HS_NODE_ID_SIZE);
    memset(s->cfg.secret, 0x42, FDN__HS_SECRET_SIZE);
}

static struct fdn__handshake *create(const struct side *s)
{
    struct fdn__handshake *hs = NULL;
    CHECK_OK(fdn__handshake_create(&s->cfg, &hs));
    return hs;
}

/* A copy of one message, as a transport would carry it. */
struct message {
    uint8_t bytes[FDN__WIRE_HANDSHAKE_MAX];
    size_t len;
};

static bool take_output(struct fdn__handshake *hs, struct message *m)
{
    const uint8_t *p;
    m->len = fdn__handshake_next_output(hs, &p);
    if (m->len)
        memcpy(m->bytes, p, m->len);
    return m->len != 0;
}

/* Everything a conversation sent, in order, per direction. */
struct log {
    struct message from_client[4];
    struct message from_server[4];
    int client_count, server_count;
};

/* Moves messages both ways until neither side has anything to send. */
static void converse(struct fdn__handshake *client, struct fdn__handshake *server,
                     struct log *log)
{
    bool moved = true;
    while (moved) {
        moved = false;
        struct message m;
        while (take_output(client, &m)) {
            CHECK(log->client_count < 4);
            log->from_client[log->client_count++] = m;
            fdn__handshake_feed(server, m.bytes, m.len);
            moved = true;
        }
        while (take_output(server, &m)) {
            CHECK(log->server_count < 4);
            log->from_server[log->server_count++] = m;
            fdn__handshake_feed(client, m.bytes, m.len);
            moved = true;
        }
    }
}

/* The AUTH tag recomputed from the transcript documented in handshake.h,
 * without the library's code: the nonce sits at offset 36 of each HELLO. */
static void reference_tag(const uint8_t secret[32], const char *prover,
                          const struct message *client_hello, const struct message *server_hello,
                          uint8_t tag[32])
{
    uint8_t transcript[11 + 6 + 4 * 32];
    uint8_t *p = transcript;
    memcpy(p, "fdn-auth-v1", 11);
    p += 11;
    memcpy(p, prover, 6);
    p += 6;
    crypto_hash_sha256(p, client_hello->bytes, client_hello->len);
    p += 32;
    crypto_hash_sha256(p, server_hello->bytes, server_hello->len);
    p += 32;
    memcpy(p, client_hello->bytes + 36, 32);
    p += 32;
    memcpy(p, server_hello->bytes + 36, 32);
    crypto_auth_hmacsha256(tag, transcript, sizeof transcript, secret);
}

static struct message auth_message(const uint8_t tag[32])
{
    struct message m = {.len = FDN__HS_AUTH_SIZE};
    m.bytes[0] = FDN__HS_MSG_AUTH;
    memcpy(m.bytes + 1, tag, 32);
    return m;
}

static void check_failed(struct fdn__handshake *hs, enum fdn__handshake_failure expected)
{
    if (fdn__handshake_failure(hs) != expected)
        fprintf(stderr, "expected %s, got %s: %s\n", fdn__handshake_failure_name(expected),
                fdn__handshake_failure_name(fdn__handshake_failure(hs)), fdn_errmsg());
    CHECK_EQ(fdn__handshake_status(hs), FDN__HS_FAILED);
    CHECK_EQ(fdn__handshake_failure(hs), expected);
    CHECK(fdn__handshake_result(hs) == NULL);
    CHECK(fdn__handshake_peer_hello(hs) == NULL);
}

static const struct fdn__channel_desc *find_channel(const struct fdn__handshake_result *r,
                                                    const char *name)
{
    for (unsigned i = 0; i < r->channel_count; i++) {
        if (strcmp(r->channels[i].name, name) == 0)
            return &r->channels[i];
    }
    return NULL;
}

/* ---- Success ---------------------------------------------------------------- */

static void test_both_sides_agree(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    c.cfg.version_min = 1, c.cfg.version_max = 3;
    s.cfg.version_min = 2, s.cfg.version_max = 5;
    c.channels[1].max_message = 1 << 20;   /* data: client smaller messages, bigger window */
    c.channels[1].credit_window = 4 << 20;
    c.channels[1].lane = 2;
    s.channels[1].max_message = 64 << 20;
    s.channels[1].lane = 4;
    s.channels[1].priority = 7;
    s.channels[2] = channel(4, "events", 0);   /* the server has events, not gossip */
    c.cfg.session = 0x5e55, c.cfg.lane = 2, c.cfg.lane_count = 3;
    s.cfg.session = 99, s.cfg.lane_count = 4;   /* a server's session is not its own */
    c.cfg.limits.max_fragment = 4096;          /* each sends the smaller frames */

    struct fdn__handshake *client = create(&c), *server = create(&s);
    struct log log = {0};
    converse(client, server, &log);
    CHECK_EQ(fdn__handshake_status(client), FDN__HS_DONE);
    CHECK_EQ(fdn__handshake_status(server), FDN__HS_DONE);
    CHECK_EQ(log.client_count, 2);   /* HELLO, AUTH */
    CHECK_EQ(log.server_count, 2);   /* HELLO, AUTH */

    const struct fdn__handshake_result *cr = fdn__handshake_result(client);
    const struct fdn__handshake_result *sr = fdn__handshake_result(server);
    CHECK_EQ(cr->version, 3);
    CHECK_EQ(sr->version, 3);
    CHECK(memcmp(cr->peer_node_id, s.cfg.node_id, FDN__HS_NODE_ID_SIZE) == 0);
    CHECK(memcmp(sr->peer_node_id, c.cfg.node_id, FDN__HS_NODE_ID_SIZE) == 0);
    CHECK(cr->peer_incarnation == 22 && sr->peer_incarnation == 11);
    CHECK(cr->peer_capabilities == 0x3c && cr->common_capabilities == 0x0c);
    CHECK(sr->common_capabilities == 0x0c);
    /* Lanes: the smaller count; the client's session and lane at both ends. */
    CHECK(cr->lane_count == 3 && sr->lane_count == 3);
    CHECK(cr->session == 0x5e55 && sr->session == 0x5e55);
    CHECK(cr->lane == 2 && sr->lane == 2);
    CHECK(cr->max_fragment == 4096 && sr->max_fragment == 4096);
    CHECK_EQ(fdn__handshake_peer_hello(server)->max_fragment, 4096);
    CHECK_EQ(fdn__handshake_peer_hello(client)->max_fragment, 1 << 20);

    for (int side = 0; side < 2; side++) {
        const struct fdn__handshake_result *r = side ? sr : cr;
        CHECK_EQ(r->channel_count, 2);
        CHECK(find_channel(r, "gossip") == NULL && find_channel(r, "events") == NULL);
        const struct fdn__channel_desc *coord = find_channel(r, "coordination");
        CHECK(coord && coord->id == 1 && coord->flags == ORDERED_RELIABLE);
        const struct fdn__channel_desc *data = find_channel(r, "data");
        CHECK(data && data->id == 2 && data->flags == FDN__CHANNEL_RELIABLE);
        CHECK(data->max_message == 1 << 20);
        CHECK_EQ(data->credit_window, 1 << 20);
        CHECK_EQ(data->lane, side ? 4 : 2);         /* each keeps its own */
        CHECK_EQ(data->priority, side ? 7 : 1);   /* each keeps its own */
    }
    CHECK_EQ(fdn__handshake_peer_hello(client)->channel_count, 3);
    CHECK(strcmp(fdn__handshake_peer_hello(client)->channels[2].name, "events") == 0);

    /* The tags on the wire are exactly the documented transcript's. */
    uint8_t tag[32];
    reference_tag(c.cfg.secret, "server", &log.from_client[0], &log.from_server[0], tag);
    CHECK(log.from_server[1].len == 33 && memcmp(log.from_server[1].bytes + 1, tag, 32) == 0);
    reference_tag(c.cfg.secret, "client", &log.from_client[0], &log.from_server[0], tag);
    CHECK(log.from_client[1].len == 33 && memcmp(log.from_client[1].bytes + 1, tag, 32) == 0);

    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);
}

/* The resume flag: a client's lane 0 carries it to the server's result; a
 * server never sends it (its client refuses one that does), and no lane but
 * 0 may carry it. */
static void test_resume_flag(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    c.cfg.session = 0xabc, c.cfg.resume = true;
    s.cfg.resume = true;   /* ignored: a server's HELLO says 0 */
    struct fdn__handshake *client = create(&c), *server = create(&s);
    struct log log = {0};
    converse(client, server, &log);
    CHECK_EQ(fdn__handshake_status(server), FDN__HS_DONE);
    CHECK(fdn__handshake_result(server)->resume);
    CHECK(fdn__handshake_result(client)->resume);
    CHECK(fdn__handshake_result(server)->session == 0xabc);
    CHECK_EQ(log.from_client[0].bytes[80], FDN__HS_FLAG_RESUME);
    CHECK_EQ(log.from_server[0].bytes[80], 0);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);

    /* Without it, no resumption. */
    c.cfg.resume = false;
    client = create(&c), server = create(&s);
    log = (struct log){0};
    converse(client, server, &log);
    CHECK(!fdn__handshake_result(server)->resume);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);

    /* A server HELLO claiming it: the client refuses it as malformed. */
    c.cfg.resume = true;
    client = create(&c), server = create(&s);
    struct message hello, server_hello;
    CHECK(take_output(client, &hello));
    fdn__handshake_feed(server, hello.bytes, hello.len);
    CHECK(take_output(server, &server_hello));
    server_hello.bytes[80] = FDN__HS_FLAG_RESUME;
    CHECK_EQ(fdn__handshake_feed(client, server_hello.bytes, server_hello.len), -EBADMSG);
    check_failed(client, FDN__HS_FAIL_MALFORMED);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);

    /* Only lane 0 resumes: the encoder refuses a lane 1 that says so. */
    struct fdn__hello h;
    CHECK_OK(fdn__hello_decode(hello.bytes, hello.len, &h));
    h.lane = 1;
    h.lane_count = 2;
    uint8_t buf[FDN__WIRE_HANDSHAKE_MAX];
    CHECK_EQ(fdn__hello_encode(&h, buf, sizeof buf), -EINVAL);
}

static void test_nonces_are_fresh(void)
{
    struct side c;
    side_init(&c, FDN__HS_CLIENT);
    struct fdn__handshake *a = create(&c), *b = create(&c);
    struct message ma, mb;
    CHECK(take_output(a, &ma) && take_output(b, &mb));
    CHECK_EQ(ma.len, mb.len);
    CHECK(memcmp(ma.bytes, mb.bytes, 36) == 0);
    CHECK(memcmp(ma.bytes + 36, mb.bytes + 36, 32) != 0);
    fdn__handshake_destroy(a);
    fdn__handshake_destroy(b);
}

/* ---- Failures ----------------------------------------------------------------- */

static void test_wrong_secret(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    memset(c.cfg.secret, 0x43, sizeof c.cfg.secret);
    struct fdn__handshake *client = create(&c), *server = create(&s);
    struct log log = {0};
    converse(client, server, &log);

    /* The server rejects the client's tag, and the client never got one of
     * the server's to guess the secret against: the server sent its HELLO
     * only. */
    check_failed(server, FDN__HS_FAIL_BAD_AUTH);
    CHECK_EQ(fdn__handshake_feed(server, NULL, 0), -EACCES);   /* sticky */
    CHECK_EQ(log.client_count, 2);   /* HELLO, AUTH */
    CHECK_EQ(log.server_count, 1);   /* HELLO */
    CHECK_EQ(log.from_server[0].bytes[0], FDN__HS_MSG_HELLO);
    CHECK_EQ(fdn__handshake_status(client), FDN__HS_IN_PROGRESS);

    /* A server without the secret (one the client dialled by mistake) can
     * only send a tag made with its own key: the client fails, and sends
     * nothing more. */
    uint8_t tag[32];
    uint8_t wrong[32];
    memset(wrong, 0x44, sizeof wrong);
    reference_tag(wrong, "server", &log.from_client[0], &log.from_server[0], tag);
    struct message auth = auth_message(tag);
    CHECK_EQ(fdn__handshake_feed(client, auth.bytes, auth.len), -EACCES);
    check_failed(client, FDN__HS_FAIL_BAD_AUTH);
    struct message m;
    CHECK(!take_output(client, &m));

    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);
}

/* The client's own tag sent back to it (reflection) is refused: the role
 * label makes the server's tag differ from the client's. */
static void test_reflected_auth(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    struct fdn__handshake *client = create(&c), *server = create(&s);
    struct message hello, server_hello, client_auth;
    CHECK(take_output(client, &hello));
    CHECK_EQ(fdn__handshake_feed(server, hello.bytes, hello.len), FDN__HS_IN_PROGRESS);
    CHECK(take_output(server, &server_hello));
    CHECK_EQ(fdn__handshake_feed(client, server_hello.bytes, server_hello.len),
             FDN__HS_IN_PROGRESS);
    CHECK(take_output(client, &client_auth));
    CHECK_EQ(fdn__handshake_feed(client, client_auth.bytes, client_auth.len), -EACCES);
    check_failed(client, FDN__HS_FAIL_BAD_AUTH);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);
}

/* Both sides reach the same diagnosis: the server answers with its HELLO
 * (never an AUTH) so that the client can tell what differs. */
static void check_mismatch(struct side *c, struct side *s, enum fdn__handshake_failure expected)
{
    struct fdn__handshake *client = create(c), *server = create(s);
    struct log log = {0};
    converse(client, server, &log);
    check_failed(client, expected);
    check_failed(server, expected);
    CHECK_EQ(log.client_count, 1);
    CHECK_EQ(log.server_count, 1);
    CHECK_EQ(log.from_server[0].bytes[0], FDN__HS_MSG_HELLO);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);
}

static void test_cluster_mismatch(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    s.cfg.cluster_name = "other-cluster";
    check_mismatch(&c, &s, FDN__HS_FAIL_CLUSTER_MISMATCH);
    CHECK(strstr(fdn_errmsg(), "cluster_mismatch") != NULL);
}

static void test_version_mismatch(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    c.cfg.version_min = 1, c.cfg.version_max = 1;
    s.cfg.version_min = 2, s.cfg.version_max = 3;
    check_mismatch(&c, &s, FDN__HS_FAIL_VERSION_MISMATCH);

    struct fdn__handshake *server = create(&s);
    struct fdn__handshake *client = create(&c);
    struct message m;
    CHECK(take_output(client, &m));
    CHECK_EQ(fdn__handshake_feed(server, m.bytes, m.len), -EPROTONOSUPPORT);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);
}

static void test_channel_conflicts(void)
{
    struct side c, s;

    side_init(&c, FDN__HS_CLIENT);   /* same name, another id */
    side_init(&s, FDN__HS_SERVER);
    s.channels[1].id = 9;
    check_mismatch(&c, &s, FDN__HS_FAIL_CHANNEL_CONFLICT);

    side_init(&c, FDN__HS_CLIENT);   /* same id, another name */
    side_init(&s, FDN__HS_SERVER);
    snprintf(s.channels[2].name, sizeof s.channels[2].name, "%s", "telemetry");
    check_mismatch(&c, &s, FDN__HS_FAIL_CHANNEL_CONFLICT);

    side_init(&c, FDN__HS_CLIENT);   /* same channel, another delivery class */
    side_init(&s, FDN__HS_SERVER);
    s.channels[1].flags = ORDERED_RELIABLE;
    check_mismatch(&c, &s, FDN__HS_FAIL_CHANNEL_CONFLICT);
}

/* The negotiation rule on its own: matched by name; min of sizes and window;
 * local priority, weight and lane; local order; one-sided ignored. */
static void test_negotiation_rule(void)
{
    struct fdn__channel_desc local[3] = {channel(5, "b", 0), channel(1, "a", ORDERED_RELIABLE),
                                         channel(7, "only-local", 0)};
    struct fdn__channel_desc peer[3] = {channel(1, "a", ORDERED_RELIABLE),
                                        channel(8, "only-peer", 0), channel(5, "b", 0)};
    local[0].max_message = 100, peer[2].max_message = 50;
    local[0].credit_window = 10, peer[2].credit_window = 20;
    local[0].lane = 3, peer[2].lane = 4;
    local[0].weight = 9, peer[2].weight = 2;
    local[0].priority = 4, peer[2].priority = 6;

    struct fdn__channel_desc agreed[3];
    uint16_t n = 99;
    CHECK_OK(fdn__channels_negotiate(local, 3, peer, 3, agreed, &n));
    CHECK_EQ(n, 2);
    CHECK(strcmp(agreed[0].name, "b") == 0 && strcmp(agreed[1].name, "a") == 0);
    CHECK(agreed[0].max_message == 50);
    CHECK_EQ(agreed[0].credit_window, 10);
    CHECK_EQ(agreed[0].lane, 3);
    CHECK_EQ(agreed[0].weight, 9);
    CHECK_EQ(agreed[0].priority, 4);

    CHECK_OK(fdn__channels_negotiate(local, 3, peer, 0, agreed, &n));
    CHECK_EQ(n, 0);
    peer[1].id = 7;   /* "only-peer" now takes the id of "only-local" */
    CHECK_EQ(fdn__channels_negotiate(local, 3, peer, 3, agreed, &n), -EPROTO);
    CHECK_EQ(fdn__channels_negotiate(peer, 3, local, 3, agreed, &n), -EPROTO);   /* symmetric */
}

/* Flipping any byte of either HELLO in flight never lets a side finish:
 * whichever side holds the true transcript refuses the other's tag. */
static void test_tampered_hellos(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    int bad_auth = 0;
    size_t hello_len = 0;

    for (size_t i = 0;; i++) {
        struct fdn__handshake *client = create(&c), *server = create(&s);
        struct message hello, tampered, server_hello, client_auth, m;
        CHECK(take_output(client, &hello));
        hello_len = hello.len;
        if (i == hello.len) {
            fdn__handshake_destroy(client);
            fdn__handshake_destroy(server);
            break;
        }
        tampered = hello;
        tampered.bytes[i] ^= 0xff;
        fdn__handshake_feed(server, tampered.bytes, tampered.len);
        if (fdn__handshake_status(server) == FDN__HS_IN_PROGRESS) {
            /* The server accepted the altered HELLO. The client, holding the
             * original, proves itself over the true transcript: the server
             * must refuse that tag and answer nothing... */
            CHECK(take_output(server, &server_hello));
            fdn__handshake_feed(client, server_hello.bytes, server_hello.len);
            CHECK(take_output(client, &client_auth));
            fdn__handshake_feed(server, client_auth.bytes, client_auth.len);
            check_failed(server, FDN__HS_FAIL_BAD_AUTH);
            CHECK(!take_output(server, &m));
            /* ...and the client must refuse a server tag made over the
             * server's (altered) view. */
            uint8_t tag[32];
            reference_tag(s.cfg.secret, "server", &tampered, &server_hello, tag);
            struct message auth = auth_message(tag);
            fdn__handshake_feed(client, auth.bytes, auth.len);
            check_failed(client, FDN__HS_FAIL_BAD_AUTH);
            bad_auth++;
        }
        CHECK(fdn__handshake_status(server) != FDN__HS_DONE);
        CHECK(fdn__handshake_status(client) != FDN__HS_DONE);
        fdn__handshake_destroy(client);
        fdn__handshake_destroy(server);
    }
    /* node id, incarnation, capabilities, nonce and priorities are free-form:
     * only the tags catch changes there. */
    CHECK(bad_auth >= 16 + 8 + 8 + 32);
    printf("   client HELLO of %zu bytes: %d flips caught by AUTH, the rest by checks\n",
           hello_len, bad_auth);

    /* The same for each byte of the server's HELLO on its way to the client:
     * if the client accepts the altered HELLO, its tag (over what it saw)
     * is refused by the server, which therefore never proves itself. */
    for (size_t i = 0;; i++) {
        struct fdn__handshake *client = create(&c), *server = create(&s);
        struct message hello, server_hello, client_auth;
        CHECK(take_output(client, &hello));
        fdn__handshake_feed(server, hello.bytes, hello.len);
        CHECK(take_output(server, &server_hello));
        bool past_end = i == server_hello.len;
        if (!past_end) {
            server_hello.bytes[i] ^= 0xff;
            fdn__handshake_feed(client, server_hello.bytes, server_hello.len);
            if (take_output(client, &client_auth)) {
                fdn__handshake_feed(server, client_auth.bytes, client_auth.len);
                check_failed(server, FDN__HS_FAIL_BAD_AUTH);
            }
            CHECK(fdn__handshake_status(client) != FDN__HS_DONE);
            CHECK(fdn__handshake_status(server) != FDN__HS_DONE);
        }
        fdn__handshake_destroy(client);
        fdn__handshake_destroy(server);
        if (past_end)
            break;
    }
}

/* ---- Malformed and unexpected messages -------------------------------------- */

static struct message client_hello(const struct side *c)
{
    struct fdn__handshake *client = create(c);
    struct message m;
    CHECK(take_output(client, &m));
    fdn__handshake_destroy(client);
    return m;
}

static void check_malformed_hello(const struct message *m)
{
    struct fdn__hello decoded;
    CHECK_EQ(fdn__hello_decode(m->bytes, m->len, &decoded), -EBADMSG);

    struct side s;
    side_init(&s, FDN__HS_SERVER);
    struct fdn__handshake *server = create(&s);
    CHECK_EQ(fdn__handshake_feed(server, m->bytes, m->len), -EBADMSG);
    check_failed(server, FDN__HS_FAIL_MALFORMED);
    struct message out;
    CHECK(!take_output(server, &out));   /* nothing for a broken peer */
    fdn__handshake_destroy(server);
}

static void test_truncated_hellos(void)
{
    struct side c;
    side_init(&c, FDN__HS_CLIENT);
    struct message full = client_hello(&c);
    for (size_t len = 0; len < full.len; len++) {
        struct message m = full;
        m.len = len;
        check_malformed_hello(&m);
    }
    struct message longer = full;
    longer.bytes[longer.len++] = 0;
    check_malformed_hello(&longer);
}

/* Byte positions in the HELLO that client_hello() builds: cluster name
 * "test-cluster" (12 bytes), then channels "coordination", "data", ... */
enum {
    AT_VERSION_MIN = 1,
    AT_CLUSTER_LEN = 3,
    AT_LANE = 76,
    AT_LANE_COUNT = 77,
    AT_CHANNEL_COUNT = 78,
    AT_FLAGS = 80,
    AT_RESERVED = 81,
    AT_MAX_FRAGMENT = 84,       /* 1 << 20: bytes 00 00 10 00 */
    AT_CLUSTER_NAME = 88,
    AT_FIRST_CHANNEL = 88 + 12,
    AT_SECOND_CHANNEL = AT_FIRST_CHANNEL + 20 + 12,
};

static void test_bad_fields(void)
{
    struct side c;
    side_init(&c, FDN__HS_CLIENT);
    const struct message good = client_hello(&c);
    struct message m;

    struct {
        size_t at;
        uint8_t value;
    } edits[] = {
        {AT_VERSION_MIN, 0},                        /* version 0 */
        {AT_VERSION_MIN, 2},                        /* min > max */
        {AT_CLUSTER_LEN, 0},                        /* empty cluster name */
        {AT_CLUSTER_LEN, 65},                       /* oversized cluster name */
        {AT_CLUSTER_LEN, 200},                      /* beyond the message */
        {AT_LANE_COUNT, 0},                         /* no lanes */
        {AT_LANE_COUNT, 9},                         /* more lanes than allowed */
        {AT_LANE, 1},                               /* lane 1 of 1 */
        {AT_FLAGS, 0x02},                           /* unknown HELLO flag */
        {AT_RESERVED, 1},                           /* reserved byte set */
        {AT_RESERVED + 2, 0x80},                    /* the last reserved byte */
        {AT_MAX_FRAGMENT + 2, 0},                   /* max_fragment 0 */
        {AT_CHANNEL_COUNT, 4},                      /* more entries than present */
        {AT_CHANNEL_COUNT, 2},                      /* fewer: trailing bytes */
        {AT_CHANNEL_COUNT + 1, 1},                  /* 259 channels */
        {AT_CLUSTER_NAME, ' '},                     /* space in the cluster name */
        {AT_CLUSTER_NAME, 0},                       /* NUL in the cluster name */
        {AT_FIRST_CHANNEL + 2, 0},                  /* empty channel name */
        {AT_FIRST_CHANNEL + 2, 33},                 /* oversized channel name */
        {AT_FIRST_CHANNEL + 4, 0},                  /* weight 0 (low byte; high is 0) */
        {AT_FIRST_CHANNEL + 6, 0x04},               /* unknown channel flag */
        {AT_FIRST_CHANNEL + 7, 8},                  /* lane out of range */
        {AT_FIRST_CHANNEL + 15, 0x01},              /* max_message >= 2^56 */
        {AT_FIRST_CHANNEL + 20, 0x7f},              /* DEL in a channel name */
        {AT_SECOND_CHANNEL, 1},                     /* duplicate id 1 */
    };
    for (size_t i = 0; i < FDN_ARRAY_SIZE(edits); i++) {
        m = good;
        m.bytes[edits[i].at] = edits[i].value;
        check_malformed_hello(&m);
    }

    /* A credit window of zero: four bytes to clear. */
    m = good;
    memset(m.bytes + AT_FIRST_CHANNEL + 16, 0, 4);
    check_malformed_hello(&m);

    /* max_fragment one under the least allowed, and the least itself. */
    struct fdn__hello least;
    m = good;
    memcpy(m.bytes + AT_MAX_FRAGMENT, (uint8_t[]){0xff, 0x01, 0, 0}, 4);   /* 511 */
    check_malformed_hello(&m);
    memcpy(m.bytes + AT_MAX_FRAGMENT, (uint8_t[]){0x00, 0x02, 0, 0}, 4);   /* 512 */
    CHECK_OK(fdn__hello_decode(m.bytes, m.len, &least));
    CHECK_EQ(least.max_fragment, FDN__HS_MIN_FRAGMENT);

    /* A duplicate name changes the length, so it goes through the encoder,
     * which refuses it as well. */
    struct fdn__hello h;
    CHECK_OK(fdn__hello_decode(good.bytes, good.len, &h));
    snprintf(h.channels[1].name, sizeof h.channels[1].name, "%s", "coordination");
    uint8_t buf[FDN__WIRE_HANDSHAKE_MAX];
    CHECK_EQ(fdn__hello_encode(&h, buf, sizeof buf), -EINVAL);   /* encoder refuses too */
    h.channels[1].id = 2;
    snprintf(h.channels[1].name, sizeof h.channels[1].name, "%s", "data");
    int len = fdn__hello_encode(&h, buf, sizeof buf);
    CHECK_EQ(len, (int)good.len);
    CHECK(memcmp(buf, good.bytes, good.len) == 0);
    CHECK_EQ(fdn__hello_encode(&h, buf, good.len - 1), -ENOSPC);
}

static void test_bad_auth_messages(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    for (size_t len = 0; len <= 40; len++) {
        if (len == FDN__HS_AUTH_SIZE)
            continue;
        struct fdn__handshake *client = create(&c), *server = create(&s);
        struct message m;
        CHECK(take_output(client, &m));
        fdn__handshake_feed(server, m.bytes, m.len);
        uint8_t auth[41] = {FDN__HS_MSG_AUTH};
        fdn__handshake_feed(server, auth, len);
        check_failed(server, FDN__HS_FAIL_MALFORMED);
        fdn__handshake_destroy(client);
        fdn__handshake_destroy(server);
    }

    /* Unknown message types are malformed, not unexpected. */
    struct fdn__handshake *server = create(&s);
    const uint8_t unknown[] = {3, 0, 0};
    CHECK_EQ(fdn__handshake_feed(server, unknown, sizeof unknown), -EBADMSG);
    check_failed(server, FDN__HS_FAIL_MALFORMED);
    fdn__handshake_destroy(server);
}

static void test_unexpected_order(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    uint8_t auth[FDN__HS_AUTH_SIZE] = {FDN__HS_MSG_AUTH};

    struct fdn__handshake *server = create(&s);   /* AUTH before any HELLO */
    CHECK_EQ(fdn__handshake_feed(server, auth, sizeof auth), -EPROTO);
    check_failed(server, FDN__HS_FAIL_UNEXPECTED);
    fdn__handshake_destroy(server);

    struct fdn__handshake *client = create(&c);
    CHECK_EQ(fdn__handshake_feed(client, auth, sizeof auth), -EPROTO);
    check_failed(client, FDN__HS_FAIL_UNEXPECTED);
    fdn__handshake_destroy(client);

    /* A second HELLO: the client already has the server's. */
    client = create(&c);
    server = create(&s);
    struct message hello, server_hello;
    CHECK(take_output(client, &hello));
    fdn__handshake_feed(server, hello.bytes, hello.len);
    CHECK(take_output(server, &server_hello));
    CHECK_EQ(fdn__handshake_feed(client, server_hello.bytes, server_hello.len), 0);
    CHECK_EQ(fdn__handshake_feed(client, server_hello.bytes, server_hello.len), -EPROTO);
    check_failed(client, FDN__HS_FAIL_UNEXPECTED);
    /* The server, awaiting AUTH, gets a HELLO again. */
    CHECK_EQ(fdn__handshake_feed(server, hello.bytes, hello.len), -EPROTO);
    check_failed(server, FDN__HS_FAIL_UNEXPECTED);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);

    /* Anything after DONE. */
    client = create(&c);
    server = create(&s);
    struct log log = {0};
    converse(client, server, &log);
    CHECK_EQ(fdn__handshake_status(server), FDN__HS_DONE);
    CHECK_EQ(fdn__handshake_feed(server, log.from_client[1].bytes, log.from_client[1].len),
             -EPROTO);
    check_failed(server, FDN__HS_FAIL_UNEXPECTED);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);
}

/* ---- Limits of the layout ------------------------------------------------------ */

static void fill_name(char *name, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        name[i] = (char)('a' + (seed + i * 7) % 26);
    name[len] = '\0';
}

/* The largest HELLO (64-byte cluster name, 256 channels with 32-byte
 * names) fits one frame and survives a whole handshake. */
static void test_largest_hello(void)
{
    struct side c, s;
    side_init(&c, FDN__HS_CLIENT);
    side_init(&s, FDN__HS_SERVER);
    char cluster[65];
    fill_name(cluster, 64, 0);
    c.cfg.cluster_name = s.cfg.cluster_name = cluster;
    for (unsigned i = 0; i < FDN__HS_MAX_CHANNELS; i++) {
        c.channels[i] = channel((uint16_t)(i * 3), "", (uint8_t)(i % 4));
        fill_name(c.channels[i].name, 32, i);
        snprintf(c.channels[i].name + 26, 7, "%06u", i);   /* unique */
        s.channels[i] = c.channels[i];
        s.channels[i].max_message = i;
    }
    c.cfg.channel_count = s.cfg.channel_count = FDN__HS_MAX_CHANNELS;

    struct fdn__handshake *client = create(&c), *server = create(&s);
    struct log log = {0};
    converse(client, server, &log);
    CHECK_EQ(log.from_client[0].len, 88 + 64 + 256 * (20 + 32));
    CHECK(log.from_client[0].len <= FDN__WIRE_HANDSHAKE_MAX);
    CHECK_EQ(fdn__handshake_status(client), FDN__HS_DONE);
    CHECK_EQ(fdn__handshake_status(server), FDN__HS_DONE);
    const struct fdn__handshake_result *r = fdn__handshake_result(client);
    CHECK_EQ(r->channel_count, FDN__HS_MAX_CHANNELS);
    CHECK(r->channels[255].max_message == 255);
    CHECK(strcmp(r->channels[255].name, c.channels[255].name) == 0);
    fdn__handshake_destroy(client);
    fdn__handshake_destroy(server);
}

static void check_config_refused(const struct side *c)
{
    struct fdn__handshake *hs = (struct fdn__handshake *)1;
    CHECK_EQ(fdn__handshake_create(&c->cfg, &hs), -EINVAL);
    CHECK(hs == (struct fdn__handshake *)1);
}

static void test_invalid_configs(void)
{
    struct side c;
    char long_name[80];
    fill_name(long_name, 65, 1);

    side_init(&c, FDN__HS_CLIENT);
    c.cfg.cluster_name = long_name;
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    c.cfg.cluster_name = "";
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    c.cfg.cluster_name = NULL;
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    c.cfg.channel_count = FDN__HS_MAX_CHANNELS + 1;
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    c.channels[0].id = limits.max_channel + 1;
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    c.channels[0].max_message = limits.max_message + 1;
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    memset(c.channels[0].name, 'x', sizeof c.channels[0].name);   /* no terminator */
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    c.cfg.version_min = 3, c.cfg.version_max = 2;
    check_config_refused(&c);
    side_init(&c, FDN__HS_CLIENT);
    c.cfg.role = (enum fdn__handshake_role)7;
    check_config_refused(&c);
}

static void test_failure_names(void)
{
    for (int f = 0; f < FDN__HS_FAIL_COUNT; f++) {
        const char *name = fdn__handshake_failure_name(f);
        CHECK(strcmp(name, "unknown") != 0);
        for (int other = 0; other < f; other++)
            CHECK(strcmp(name, fdn__handshake_failure_name(other)) != 0);
    }
    CHECK(strcmp(fdn__handshake_failure_name(FDN__HS_FAIL_COUNT), "unknown") == 0);
    CHECK(strcmp(fdn__handshake_failure_name(FDN__HS_FAIL_BAD_AUTH), "bad_auth") == 0);
}

/* ---- The secret file -------------------------------------------------------------- */

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    CHECK(f);
    fputs(text, f);
    CHECK(fclose(f) == 0);
    CHECK(chmod(path, mode) == 0);
}

static void test_secret_file(void)
{
    char dir[] = "/tmp/fdn-secret-XXXXXX";
    CHECK(mkdtemp(dir));
    char path[256], sub[256], subsub[256];
    snprintf(sub, sizeof sub, "%s/conf", dir);
    snprintf(subsub, sizeof subsub, "%s/conf/foundation", dir);
    snprintf(path, sizeof path, "%s/conf/foundation/cluster.secret", dir);

    uint8_t first[32], again[32];
    CHECK_OK(fdn__secret_load_or_create(path, first));
    struct stat st;
    CHECK(stat(path, &st) == 0);
    CHECK_EQ(st.st_mode & 07777, 0600);
    CHECK_EQ(st.st_size, 64);
    CHECK(stat(subsub, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_EQ(st.st_mode & 07777, 0700);

    FILE *f = fopen(path, "r");
    char text[80] = {0};
    CHECK(f && fread(text, 1, sizeof text, f) == 64);
    fclose(f);
    for (int i = 0; i < 64; i++)
        CHECK(strchr("0123456789abcdef", text[i]) != NULL);

    CHECK_OK(fdn__secret_load_or_create(path, again));
    CHECK(memcmp(first, again, 32) == 0);

    /* A hand-written secret with a final newline, mode 0400, is accepted. */
    char written[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
    write_file(path, written, 0400);
    CHECK_OK(fdn__secret_load_or_create(path, again));
    for (int i = 0; i < 32; i++)
        CHECK_EQ(again[i], i);

    /* Readable by others: refused, and the message says how to fix it. */
    CHECK(chmod(path, 0644) == 0);
    CHECK_EQ(fdn__secret_load_or_create(path, again), -EPERM);
    CHECK(strstr(fdn_errmsg(), "0644") && strstr(fdn_errmsg(), "chmod 600"));

    write_file(path, "not hex at all", 0600);
    CHECK_EQ(fdn__secret_load_or_create(path, again), -EINVAL);
    written[10] = 'x';
    write_file(path, written, 0600);
    CHECK_EQ(fdn__secret_load_or_create(path, again), -EINVAL);

    CHECK(unlink(path) == 0);
    CHECK(rmdir(subsub) == 0);
    CHECK(rmdir(sub) == 0);
    CHECK(rmdir(dir) == 0);
}

static void test_secret_default_path(void)
{
    char *saved_xdg = getenv("XDG_CONFIG_HOME") ? strdup(getenv("XDG_CONFIG_HOME")) : NULL;
    char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    char path[256];

    setenv("XDG_CONFIG_HOME", "/x/conf", 1);
    setenv("HOME", "/home/u", 1);
    CHECK_OK(fdn__secret_default_path(path, sizeof path));
    CHECK(strcmp(path, "/x/conf/foundation/cluster.secret") == 0);
    CHECK_EQ(fdn__secret_default_path(path, 10), -ENAMETOOLONG);

    setenv("XDG_CONFIG_HOME", "relative", 1);   /* ignored, as XDG says */
    CHECK_OK(fdn__secret_default_path(path, sizeof path));
    CHECK(strcmp(path, "/home/u/.config/foundation/cluster.secret") == 0);

    unsetenv("XDG_CONFIG_HOME");
    unsetenv("HOME");
    CHECK_EQ(fdn__secret_default_path(path, sizeof path), -ENOENT);

    if (saved_xdg)
        setenv("XDG_CONFIG_HOME", saved_xdg, 1);
    if (saved_home)
        setenv("HOME", saved_home, 1);
    free(saved_xdg);
    free(saved_home);
}

int main(void)
{
    RUN(test_both_sides_agree);
    RUN(test_nonces_are_fresh);
    RUN(test_resume_flag);
    RUN(test_wrong_secret);
    RUN(test_reflected_auth);
    RUN(test_cluster_mismatch);
    RUN(test_version_mismatch);
    RUN(test_channel_conflicts);
    RUN(test_negotiation_rule);
    RUN(test_tampered_hellos);
    RUN(test_truncated_hellos);
    RUN(test_bad_fields);
    RUN(test_bad_auth_messages);
    RUN(test_unexpected_order);
    RUN(test_largest_hello);
    RUN(test_invalid_configs);
    RUN(test_failure_names);
    RUN(test_secret_file);
    RUN(test_secret_default_path);
    return 0;
}
