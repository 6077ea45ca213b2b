/* Message buffers and pools: layout, editing, chains, references, limits,
 * ownership, and frees from other threads. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include <fdn/msg.h>

#include "core/pool.h"
#include "test.h"

#define METADATA ((sizeof(fdn_msg) + 63) & ~(size_t)63)
#define DEFAULT_HEADROOM 128u
#define MiB ((size_t)1 << 20)

static size_t page_bytes(void) { return (size_t)sysconf(_SC_PAGESIZE); }

/* The bytes one buffer of a class takes with the given headroom. */
static size_t class_buffer(unsigned cls, uint32_t headroom)
{
    return (METADATA + headroom + FDN_POOL_CLASS_PAYLOAD(cls) + 63) & ~(size_t)63;
}

static fdn_pool *make_pool(size_t max_bytes, uint32_t headroom)
{
    fdn_pool_config cfg = { .max_bytes = max_bytes, .headroom = headroom };
    fdn_pool *pool;
    CHECK_OK(fdn_pool_create(&cfg, &pool));
    return pool;
}

static fdn_pool_stats stats_of(const fdn_pool *pool)
{
    fdn_pool_stats s;
    fdn_pool_stats_get(pool, &s);
    return s;
}

static fdn_msg *alloc_ok(fdn_pool *pool, size_t len)
{
    fdn_msg *m = NULL;
    CHECK_OK(fdn_msg_alloc(pool, len, &m));
    CHECK(m != NULL);
    return m;
}

/* Fills the whole payload and reads it back, so ASan catches a short buffer. */
static void check_writable(fdn_msg *m, uint8_t pattern)
{
    memset(fdn_msg_data(m), pattern, fdn_msg_len(m));
    for (size_t i = 0; i < fdn_msg_len(m); i += 4093)
        CHECK_EQ(fdn_msg_data(m)[i], pattern);
    if (fdn_msg_len(m))
        CHECK_EQ(fdn_msg_data(m)[fdn_msg_len(m) - 1], pattern);
}

static void check_fresh(const fdn_msg *m, fdn_pool *pool, size_t len, uint32_t headroom)
{
    CHECK_EQ(fdn_msg_len(m), len);
    CHECK_EQ(fdn_msg_headroom(m), headroom);
    CHECK(m->start == (const uint8_t *)m + METADATA);
    CHECK(m->data == m->start + headroom);
    CHECK(m->next == NULL);
    CHECK(m->pool == pool);
    CHECK_EQ(__atomic_load_n(&m->refs, __ATOMIC_RELAXED), 1);
}

static void test_defaults(void)
{
    fdn_pool *pool;
    CHECK_OK(fdn_pool_create(NULL, &pool));
    fdn_pool_stats s = stats_of(pool);
    CHECK_EQ(s.max_bytes, 256 * MiB);
    CHECK_EQ(s.bytes_reserved, 0);
    CHECK_EQ(s.allocs, 0);
    CHECK_EQ(s.buffers_in_use, 0);
    CHECK(!s.numa_bound);

    fdn_msg *m = alloc_ok(pool, 0);
    check_fresh(m, pool, 0, DEFAULT_HEADROOM);
    CHECK_EQ(m->class_index, 0);
    /* The default slab is 256 KiB. */
    CHECK_EQ(stats_of(pool).bytes_reserved, 256 << 10);
    fdn_msg_free(m);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* Every class at its largest payload, and one byte more. */
static void test_every_class(void)
{
    fdn_pool *pool = make_pool(0, 0);
    for (unsigned cls = 0; cls < FDN_POOL_NUM_CLASSES; cls++) {
        size_t len = FDN_POOL_CLASS_PAYLOAD(cls);
        fdn_msg *full = alloc_ok(pool, len);
        check_fresh(full, pool, len, DEFAULT_HEADROOM);
        CHECK_EQ(full->class_index, cls);
        CHECK_EQ(full->mapped_bytes, 0);
        CHECK_EQ(fdn_msg_tailroom(full), 0);
        CHECK(full->end == (uint8_t *)full + class_buffer(cls, DEFAULT_HEADROOM));
        CHECK_EQ((uintptr_t)full->start % 64, 0);
        check_writable(full, (uint8_t)cls);

        fdn_msg *over = alloc_ok(pool, len + 1);
        CHECK_EQ(over->class_index, cls + 1);
        check_writable(over, (uint8_t)~cls);
        fdn_msg_free(full);
        fdn_msg_free(over);
    }
    fdn_pool_stats s = stats_of(pool);
    CHECK_EQ(s.buffers_in_use, 0);
    CHECK_EQ(s.allocs, 2 * FDN_POOL_NUM_CLASSES);
    CHECK_EQ(s.frees, 2 * FDN_POOL_NUM_CLASSES);
    CHECK_EQ(s.remote_frees, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_large_buffer(void)
{
    fdn_pool *pool = make_pool(0, 0);
    size_t len = 5 * MiB + 5; /* over the 4 MiB class */
    fdn_msg *m = alloc_ok(pool, len);
    check_fresh(m, pool, len, DEFAULT_HEADROOM);
    CHECK_EQ(m->class_index, FDN_POOL_NUM_CLASSES);
    CHECK_EQ(m->mapped_bytes % page_bytes(), 0);
    CHECK(m->mapped_bytes >= METADATA + DEFAULT_HEADROOM + len);
    CHECK(m->mapped_bytes < METADATA + DEFAULT_HEADROOM + len + page_bytes());
    CHECK(m->end == (uint8_t *)m + m->mapped_bytes);
    check_writable(m, 0x5a);
    CHECK_EQ(stats_of(pool).bytes_reserved, m->mapped_bytes);

    fdn_msg_free(m);
    fdn_pool_stats s = stats_of(pool);
    CHECK_EQ(s.bytes_reserved, 0);
    CHECK_EQ(s.buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_configured_headroom(void)
{
    const uint32_t headroom = 200;
    fdn_pool *pool = make_pool(0, headroom);
    fdn_msg *m = alloc_ok(pool, 0);
    check_fresh(m, pool, 0, headroom);
    /* Classes go by payload: headroom never pushes a payload up a class. */
    CHECK_EQ(m->class_index, 0);
    CHECK(fdn_msg_push(m, headroom) == m->start);
    fdn_msg_free(m);

    m = alloc_ok(pool, FDN_POOL_CLASS_PAYLOAD(2));
    CHECK_EQ(m->class_index, 2);
    CHECK(fdn_msg_tailroom(m) < 64); /* only the rounding to a cache line */
    CHECK(m->end == (uint8_t *)m + class_buffer(2, headroom));
    fdn_msg_free(m);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_invalid_config(void)
{
    fdn_pool *pool;
    fdn_pool_config too_much_headroom = { .headroom = FDN_POOL_MAX_HEADROOM + 1 };
    CHECK_EQ(fdn_pool_create(&too_much_headroom, &pool), -EINVAL);
    fdn_pool_config no_node = { .bind_numa = true, .numa_node = -1 };
    CHECK_EQ(fdn_pool_create(&no_node, &pool), -EINVAL);
}

/* Binding may be refused (containers): the pool works either way. */
static void test_numa_binding(void)
{
    fdn_pool_config cfg = { .bind_numa = true, .numa_node = 0 };
    fdn_pool *pool;
    CHECK_OK(fdn_pool_create(&cfg, &pool));
    fdn_msg *m = alloc_ok(pool, 1000);
    check_writable(m, 1);
    printf("numa_bound=%d\n", stats_of(pool).numa_bound);
    fdn_msg_free(m);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_push_pull_put_trim(void)
{
    fdn_pool *pool = make_pool(0, 0);
    fdn_msg *m = alloc_ok(pool, 10);
    uint8_t *payload = fdn_msg_data(m);
    size_t tailroom = fdn_msg_tailroom(m);
    CHECK_EQ(tailroom, FDN_POOL_CLASS_PAYLOAD(0) - 10);

    CHECK(fdn_msg_push(m, 0) == payload);
    CHECK(fdn_msg_push(m, DEFAULT_HEADROOM + 1) == NULL);
    CHECK(fdn_msg_push(m, DEFAULT_HEADROOM) == m->start);
    CHECK_EQ(fdn_msg_headroom(m), 0);
    CHECK_EQ(fdn_msg_len(m), DEFAULT_HEADROOM + 10);
    CHECK(fdn_msg_push(m, 1) == NULL);

    CHECK(fdn_msg_pull(m, DEFAULT_HEADROOM + 11) == NULL);
    CHECK(fdn_msg_pull(m, DEFAULT_HEADROOM) == payload);
    CHECK_EQ(fdn_msg_len(m), 10);

    CHECK(fdn_msg_put(m, tailroom + 1) == NULL);
    CHECK(fdn_msg_put(m, tailroom) == payload + 10);
    CHECK_EQ(fdn_msg_tailroom(m), 0);
    CHECK(fdn_msg_put(m, 1) == NULL);
    check_writable(m, 7);

    fdn_msg_trim(m, fdn_msg_len(m) + 1);
    CHECK_EQ(fdn_msg_len(m), 10 + tailroom);
    fdn_msg_trim(m, 3);
    CHECK_EQ(fdn_msg_len(m), 3);
    CHECK_EQ(fdn_msg_tailroom(m), tailroom + 7);

    CHECK(fdn_msg_pull(m, 3) == payload + 3);
    CHECK_EQ(fdn_msg_len(m), 0);
    CHECK(fdn_msg_pull(m, 1) == NULL);
    fdn_msg_free(m);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_chain_and_iov(void)
{
    fdn_pool *pool = make_pool(0, 0);
    fdn_msg *a = alloc_ok(pool, 10);
    fdn_msg *b = alloc_ok(pool, 2000);
    fdn_msg *c = alloc_ok(pool, 0);
    fdn_msg *d = alloc_ok(pool, 5);
    fdn_msg_chain(c, d);
    fdn_msg_chain(a, b);
    fdn_msg_chain(a, c);
    CHECK_EQ(fdn_msg_total_len(a), 2015);
    CHECK_EQ(fdn_msg_total_len(d), 5);

    struct iovec iov[4];
    CHECK_EQ(fdn_msg_to_iov(a, iov, 4), 4);
    const fdn_msg *expected[] = { a, b, c, d };
    for (int i = 0; i < 4; i++) {
        CHECK(iov[i].iov_base == expected[i]->data);
        CHECK_EQ(iov[i].iov_len, expected[i]->len);
    }
    CHECK_EQ(fdn_msg_to_iov(a, iov, 3), -ENOSPC);
    CHECK_EQ(fdn_msg_to_iov(a, iov, 0), -ENOSPC);
    CHECK_EQ(fdn_msg_to_iov(d, iov, 1), 1);

    CHECK_EQ(stats_of(pool).buffers_in_use, 4);
    fdn_msg_free(a);
    fdn_pool_stats s = stats_of(pool);
    CHECK_EQ(s.buffers_in_use, 0);
    CHECK_EQ(s.frees, 4);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* A chain's buffers go back to their own pools. */
static void test_chain_across_pools(void)
{
    fdn_pool *first = make_pool(0, 0);
    fdn_pool *second = make_pool(0, 0);
    fdn_msg *m = alloc_ok(first, 1);
    fdn_msg_chain(m, alloc_ok(second, 2));
    fdn_msg_chain(m, alloc_ok(second, 3));
    fdn_msg_chain(m, alloc_ok(first, 4));
    fdn_msg_free(m);
    CHECK_EQ(stats_of(first).frees, 2);
    CHECK_EQ(stats_of(second).frees, 2);
    CHECK_OK(fdn_pool_destroy(first));
    CHECK_OK(fdn_pool_destroy(second));
}

static void test_refcount(void)
{
    fdn_pool *pool = make_pool(0, 0);
    fdn_msg *m = alloc_ok(pool, 100);
    fdn_msg_chain(m, alloc_ok(pool, 100));
    CHECK(fdn_msg_ref(m) == m);
    CHECK_EQ(__atomic_load_n(&m->refs, __ATOMIC_RELAXED), 2);
    fdn_msg_free(m);
    CHECK_EQ(stats_of(pool).buffers_in_use, 2);
    CHECK_EQ(stats_of(pool).frees, 0);
    fdn_msg_free(m);
    CHECK_EQ(stats_of(pool).buffers_in_use, 0);
    CHECK_EQ(stats_of(pool).frees, 2);
    fdn_msg_free(NULL);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void run_thread(void *(*fn)(void *), void *arg)
{
    pthread_t thread;
    CHECK_EQ(pthread_create(&thread, NULL, fn, arg), 0);
    CHECK_EQ(pthread_join(thread, NULL), 0);
}

static void *free_elsewhere(void *arg)
{
    fdn_msg_free(arg);
    return NULL;
}

/* Small buffers: the pool fills max_bytes exactly (a last, partial slab),
 * then refuses; a free makes room again. */
static void test_max_bytes_small(void)
{
    size_t max_bytes = MiB + 3 * page_bytes();
    fdn_pool *pool = make_pool(max_bytes, 0);
    size_t capacity = max_bytes / class_buffer(0, DEFAULT_HEADROOM);
    fdn_msg **msgs = calloc(capacity, sizeof *msgs);
    CHECK(msgs != NULL);
    for (size_t i = 0; i < capacity; i++)
        msgs[i] = alloc_ok(pool, 0);
    CHECK_EQ(stats_of(pool).bytes_reserved, max_bytes);

    fdn_msg *m = NULL;
    CHECK_EQ(fdn_msg_alloc(pool, 0, &m), -ENOBUFS);
    CHECK(strstr(fdn_errmsg(), "max_bytes") != NULL);
    CHECK_EQ(stats_of(pool).alloc_failures, 1);
    /* Another class has no slab and no room for one. */
    CHECK_EQ(fdn_msg_alloc(pool, 500, &m), -ENOBUFS);
    CHECK_EQ(stats_of(pool).alloc_failures, 2);

    fdn_msg_free(msgs[17]);
    msgs[17] = alloc_ok(pool, 0);
    CHECK_EQ(stats_of(pool).alloc_failures, 2);
    CHECK_EQ(stats_of(pool).bytes_reserved, max_bytes);

    for (size_t i = 0; i < capacity; i++)
        fdn_msg_free(msgs[i]);
    free(msgs);
    CHECK_EQ(stats_of(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_max_bytes_large(void)
{
    fdn_pool *pool = make_pool(8 * MiB, 0);
    fdn_msg *first = alloc_ok(pool, 5 * MiB);
    fdn_msg *second = NULL;
    CHECK_EQ(fdn_msg_alloc(pool, 5 * MiB, &second), -ENOBUFS);
    CHECK_EQ(stats_of(pool).alloc_failures, 1);
    CHECK(stats_of(pool).bytes_reserved <= 8 * MiB);
    fdn_msg_free(first);
    second = alloc_ok(pool, 5 * MiB);
    check_writable(second, 3);

    /* Freed elsewhere, the mapping stays until the owner needs the room. */
    run_thread(free_elsewhere, second);
    CHECK(stats_of(pool).bytes_reserved > 5 * MiB);
    fdn_msg_free(alloc_ok(pool, 5 * MiB));
    CHECK_EQ(stats_of(pool).alloc_failures, 1);
    CHECK_EQ(stats_of(pool).bytes_reserved, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_msgsize(void)
{
    fdn_pool *pool = make_pool(0, 0);
    fdn_msg *m = NULL;
    if (SIZE_MAX > UINT32_MAX)
        CHECK_EQ(fdn_msg_alloc(pool, (size_t)UINT32_MAX + 1, &m), -EMSGSIZE);
    /* mapped_bytes is 32 bits: a buffer must fit its metadata and headroom
     * in 4 GiB too. */
    CHECK_EQ(fdn_msg_alloc(pool, UINT32_MAX, &m), -EMSGSIZE);
    CHECK(m == NULL);
    CHECK_EQ(stats_of(pool).alloc_failures, 0);
    CHECK_EQ(stats_of(pool).allocs, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void test_destroy_busy(void)
{
    fdn_pool *pool = make_pool(0, 0);
    fdn_msg *m = alloc_ok(pool, 64);
    CHECK_EQ(fdn_pool_destroy(pool), -EBUSY);
    fdn_msg_free(m);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* Freed buffers are reused: the pool does not grow. */
static void test_reuse(void)
{
    fdn_pool *pool = make_pool(0, 0);
    fdn_msg *m = alloc_ok(pool, 3000);
    fdn_msg *first = m;
    size_t reserved = stats_of(pool).bytes_reserved;
    fdn_msg_free(m);
    m = alloc_ok(pool, 2500);
    CHECK(m == first);
    fdn_msg_free(m);

    /* 32 such buffers fit the first 256 KiB slab: cycling through them
     * must never map another. */
    fdn_msg *batch[32];
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 32; i++)
            batch[i] = alloc_ok(pool, 3000);
        for (int i = 0; i < 32; i++)
            fdn_msg_free(batch[i]);
    }
    CHECK_EQ(stats_of(pool).bytes_reserved, reserved);
    CHECK_OK(fdn_pool_destroy(pool));
}

static void *alloc_elsewhere(void *arg)
{
    fdn_msg *m = NULL;
    CHECK_EQ(fdn_msg_alloc(arg, 10, &m), -EPERM);
    CHECK(m == NULL);
    CHECK(strstr(fdn_errmsg(), "own") != NULL);
    return NULL;
}

/* Off the owner thread: allocating fails, freeing goes through the remote
 * stack and the owner gets the same buffer back. */
static void test_other_threads(void)
{
    fdn_pool *pool = make_pool(0, 0);
    run_thread(alloc_elsewhere, pool);
    CHECK_EQ(stats_of(pool).allocs, 0);
    CHECK_EQ(stats_of(pool).alloc_failures, 0);

    fdn_msg *m = alloc_ok(pool, 10);
    fdn_msg *kept = alloc_ok(pool, 10);
    fdn_msg *remote = m;
    size_t reserved = stats_of(pool).bytes_reserved;
    run_thread(free_elsewhere, m);
    fdn_pool_stats s = stats_of(pool);
    CHECK_EQ(s.remote_frees, 1);
    CHECK_EQ(s.frees, 1);
    CHECK_EQ(s.buffers_in_use, 1);
    CHECK_EQ(fdn__pool_reclaim(pool), 1);
    CHECK_EQ(fdn__pool_reclaim(pool), 0);
    m = alloc_ok(pool, 10);
    CHECK(m == remote);
    CHECK_EQ(stats_of(pool).bytes_reserved, reserved);

    fdn_msg_free(kept);
    fdn_msg *again = alloc_ok(pool, 10);
    CHECK(again == kept);
    /* The free list is empty: the allocation itself reclaims. */
    run_thread(free_elsewhere, m);
    run_thread(free_elsewhere, again);
    m = alloc_ok(pool, 10);
    CHECK(m == again || m == remote);
    fdn_msg_free(m);
    CHECK_EQ(stats_of(pool).buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* A large buffer freed elsewhere keeps its memory until the owner reclaims. */
static void test_remote_large_free(void)
{
    fdn_pool *pool = make_pool(0, 0);
    fdn_msg *m = alloc_ok(pool, 5 * MiB);
    size_t mapped = m->mapped_bytes;
    run_thread(free_elsewhere, m);
    fdn_pool_stats s = stats_of(pool);
    CHECK_EQ(s.buffers_in_use, 0);
    CHECK_EQ(s.bytes_reserved, mapped);
    CHECK_EQ(fdn__pool_reclaim(pool), 1);
    CHECK_EQ(stats_of(pool).bytes_reserved, 0);

    /* Destroy reclaims by itself. */
    run_thread(free_elsewhere, alloc_ok(pool, 5 * MiB));
    CHECK_OK(fdn_pool_destroy(pool));
}

struct adopt_state {
    fdn_pool *pool;
    fdn_msg *kept;
};

static void *adopt_and_use(void *arg)
{
    struct adopt_state *st = arg;
    fdn_pool_adopt(st->pool);
    fdn_msg *m = alloc_ok(st->pool, 10);
    fdn_msg_free(m);
    CHECK_EQ(stats_of(st->pool).remote_frees, 0);
    st->kept = alloc_ok(st->pool, 10);
    return NULL;
}

static void test_adopt(void)
{
    fdn_pool *pool = make_pool(0, 0);
    struct adopt_state st = { .pool = pool };
    run_thread(adopt_and_use, &st);

    fdn_msg *m = NULL;
    CHECK_EQ(fdn_msg_alloc(pool, 10, &m), -EPERM);
    fdn_msg_free(st.kept);
    CHECK_EQ(stats_of(pool).remote_frees, 1);

    fdn_pool_adopt(pool);
    m = alloc_ok(pool, 10);
    CHECK(m == st.kept);
    fdn_msg_free(m);
    fdn_pool_stats s = stats_of(pool);
    CHECK_EQ(s.remote_frees, 1);
    CHECK_EQ(s.frees, 3);
    CHECK_EQ(s.buffers_in_use, 0);
    CHECK_OK(fdn_pool_destroy(pool));
}

/* The owner allocates and hands batches to two freeing threads through a
 * bounded queue, freeing some buffers itself, sharing some (two references)
 * and chaining some; the freeing threads take snapshots meanwhile. */
enum { STRESS_MSGS = 200000, BATCH = 128, QUEUE_BATCHES = 4, FREERS = 2 };
#define STRESS_MAX_BYTES (6 * MiB)

struct batch {
    int n;
    fdn_msg *msgs[BATCH];
};

struct handoff {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct batch *queue[QUEUE_BATCHES];
    unsigned head, count;
    bool done;
    fdn_pool *pool;
};

static void handoff_put(struct handoff *h, struct batch *b)
{
    pthread_mutex_lock(&h->lock);
    while (h->count == QUEUE_BATCHES)
        pthread_cond_wait(&h->changed, &h->lock);
    h->queue[(h->head + h->count++) % QUEUE_BATCHES] = b;
    pthread_cond_broadcast(&h->changed);
    pthread_mutex_unlock(&h->lock);
}

/* The next batch, or NULL once the owner is done and the queue is empty. */
static struct batch *handoff_take(struct handoff *h)
{
    pthread_mutex_lock(&h->lock);
    while (h->count == 0 && !h->done)
        pthread_cond_wait(&h->changed, &h->lock);
    struct batch *b = NULL;
    if (h->count) {
        b = h->queue[h->head];
        h->head = (h->head + 1) % QUEUE_BATCHES;
        h->count--;
        pthread_cond_broadcast(&h->changed);
    }
    pthread_mutex_unlock(&h->lock);
    return b;
}

static void *stress_freer(void *arg)
{
    struct handoff *h = arg;
    struct batch *b;
    while ((b = handoff_take(h))) {
        for (int i = 0; i < b->n; i++)
            fdn_msg_free(b->msgs[i]);
        free(b);
        fdn_pool_stats s = stats_of(h->pool);
        CHECK(s.bytes_reserved <= STRESS_MAX_BYTES);
        CHECK_EQ(s.max_bytes, STRESS_MAX_BYTES);
    }
    return NULL;
}

/* Writes the first and last payload bytes: enough to catch a short buffer
 * without making the test memset-bound. */
static void touch_ends(fdn_msg *m)
{
    if (fdn_msg_len(m)) {
        fdn_msg_data(m)[0] = 1;
        fdn_msg_data(m)[fdn_msg_len(m) - 1] = 2;
    }
}

static struct batch *new_batch(void)
{
    struct batch *b = calloc(1, sizeof *b);
    CHECK(b != NULL);
    return b;
}

/* Payload sizes over several classes, with a large buffer now and then. */
static size_t stress_len(unsigned attempt)
{
    static const size_t lens[] = { 0, 100, 700, 3000, 12000, 60000 };
    if (attempt % 4999 == 0)
        return 9 * MiB / 2; /* over the 4 MiB class: a mapping of its own */
    return lens[attempt % (sizeof lens / sizeof lens[0])];
}

static void test_cross_thread_frees(void)
{
    fdn_pool *pool = make_pool(STRESS_MAX_BYTES, 0);
    struct handoff h = { .pool = pool };
    CHECK_EQ(pthread_mutex_init(&h.lock, NULL), 0);
    CHECK_EQ(pthread_cond_init(&h.changed, NULL), 0);
    pthread_t freers[FREERS];
    for (int i = 0; i < FREERS; i++)
        CHECK_EQ(pthread_create(&freers[i], NULL, stress_freer, &h), 0);

    struct batch *b = new_batch();
    uint64_t refused = 0;
    unsigned attempt = 0;
    for (unsigned done = 0; done < STRESS_MSGS; attempt++) {
        fdn_msg *m = NULL;
        int rc = fdn_msg_alloc(pool, stress_len(attempt), &m);
        CHECK(stats_of(pool).bytes_reserved <= STRESS_MAX_BYTES);
        if (rc == -ENOBUFS) {
            /* Let the freeing threads catch up; try another size next. */
            refused++;
            handoff_put(&h, b);
            b = new_batch();
            fdn__pool_reclaim(pool);
            sched_yield();
            continue;
        }
        CHECK_OK(rc);
        done++;
        touch_ends(m);
        if (done % 8 == 0) {
            fdn_msg_free(m);
            continue;
        }
        if (done % 8 == 3) {
            fdn_msg *tail = NULL;
            if (fdn_msg_alloc(pool, 10, &tail) == 0)
                fdn_msg_chain(m, tail);
            else
                refused++;
        }
        if (done % 8 == 5 && b->n < BATCH - 1)
            b->msgs[b->n++] = fdn_msg_ref(m);
        b->msgs[b->n++] = m;
        if (b->n >= BATCH - 1) {
            handoff_put(&h, b);
            b = new_batch();
        }
        if (done % 1000 == 0)
            fdn__pool_reclaim(pool);
    }
    handoff_put(&h, b);

    pthread_mutex_lock(&h.lock);
    h.done = true;
    pthread_cond_broadcast(&h.changed);
    pthread_mutex_unlock(&h.lock);
    for (int i = 0; i < FREERS; i++)
        CHECK_EQ(pthread_join(freers[i], NULL), 0);

    fdn__pool_reclaim(pool);
    fdn_pool_stats s = stats_of(pool);
    printf("allocs=%" PRIu64 " remote_frees=%" PRIu64 " refused=%" PRIu64
           " reserved=%zu\n", s.allocs, s.remote_frees, refused, s.bytes_reserved);
    CHECK_EQ(s.buffers_in_use, 0);
    CHECK_EQ(s.frees, s.allocs);
    CHECK(s.remote_frees > 0);
    CHECK(s.remote_frees < s.frees);
    CHECK(s.bytes_reserved <= STRESS_MAX_BYTES);
    CHECK_EQ(s.alloc_failures, refused);
    pthread_cond_destroy(&h.changed);
    pthread_mutex_destroy(&h.lock);
    CHECK_OK(fdn_pool_destroy(pool));
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_every_class);
    RUN(test_large_buffer);
    RUN(test_configured_headroom);
    RUN(test_invalid_config);
    RUN(test_numa_binding);
    RUN(test_push_pull_put_trim);
    RUN(test_chain_and_iov);
    RUN(test_chain_across_pools);
    RUN(test_refcount);
    RUN(test_max_bytes_small);
    RUN(test_max_bytes_large);
    RUN(test_msgsize);
    RUN(test_destroy_busy);
    RUN(test_reuse);
    RUN(test_other_threads);
    RUN(test_remote_large_free);
    RUN(test_adopt);
    RUN(test_cross_thread_frees);
    return 0;
}
