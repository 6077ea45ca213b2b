/* Tests of the SPSC and MPSC rings (core/ring.h): contracts checked
 * single-threaded on both kinds through one table of operations, then
 * producer and consumer threads moving tagged values that must each arrive
 * exactly once and in per-producer order. No test depends on timing. */
#include "core/ring.h"

#include <pthread.h>
#include <sched.h>
#include <semaphore.h>

#include "test.h"

/* ---- Helpers ------------------------------------------------------------ */

/* splitmix64: a small seeded generator so every run makes the same choices. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static unsigned random_burst(uint64_t *state, unsigned max)
{
    return 1 + (unsigned)(next_random(state) % max);
}

static void *alloc_ring(size_t size)
{
    void *mem = aligned_alloc(FDN_CACHELINE, size);
    CHECK(mem != NULL);
    memset(mem, 0xa5, size); /* init must not rely on zeroed memory */
    return mem;
}

/* Values travel as pointers; 0 is never used so a NULL slot would show. */
static void *tag(uint64_t value) { return (void *)(uintptr_t)value; }
static uint64_t untag(void *ptr) { return (uint64_t)(uintptr_t)ptr; }

/* Both kinds behind one table, so the single-threaded contracts are written
 * once. */
struct ring_kind {
    const char *name;
    size_t (*memsize)(uint32_t capacity);
    int (*init)(void *ring, uint32_t capacity);
    int (*init_at)(void *ring, uint32_t capacity, uint64_t first_index);
    unsigned (*enqueue)(void *ring, void *const *objs, unsigned n);
    unsigned (*dequeue)(void *ring, void **objs, unsigned n);
    bool (*empty)(const void *ring);
    uint32_t (*capacity)(const void *ring);
    uint64_t index_wrap; /* first index past which the free-running index wraps */
};

static int spsc_init(void *r, uint32_t c) { return fdn__spsc_init(r, c); }
static int spsc_init_at(void *r, uint32_t c, uint64_t i) { return fdn__spsc_init_at(r, c, (uint32_t)i); }
static unsigned spsc_enqueue(void *r, void *const *o, unsigned n) { return fdn__spsc_enqueue_burst(r, o, n); }
static unsigned spsc_dequeue(void *r, void **o, unsigned n) { return fdn__spsc_dequeue_burst(r, o, n); }
static bool spsc_empty(const void *r) { return fdn__spsc_empty(r); }
static uint32_t spsc_capacity(const void *r) { return fdn__spsc_capacity(r); }

static int mpsc_init(void *r, uint32_t c) { return fdn__mpsc_init(r, c); }
static int mpsc_init_at(void *r, uint32_t c, uint64_t i) { return fdn__mpsc_init_at(r, c, (size_t)i); }
static unsigned mpsc_enqueue(void *r, void *const *o, unsigned n) { return fdn__mpsc_enqueue_burst(r, o, n); }
static unsigned mpsc_dequeue(void *r, void **o, unsigned n) { return fdn__mpsc_dequeue_burst(r, o, n); }
static bool mpsc_empty(const void *r) { return fdn__mpsc_empty(r); }
static uint32_t mpsc_capacity(const void *r) { return fdn__mpsc_capacity(r); }

static const struct ring_kind kinds[] = {
    {"spsc", fdn__spsc_memsize, spsc_init, spsc_init_at, spsc_enqueue, spsc_dequeue,
     spsc_empty, spsc_capacity, (uint64_t)UINT32_MAX},
    {"mpsc", fdn__mpsc_memsize, mpsc_init, mpsc_init_at, mpsc_enqueue, mpsc_dequeue,
     mpsc_empty, mpsc_capacity, (uint64_t)SIZE_MAX},
};

static void *new_ring(const struct ring_kind *kind, uint32_t capacity, uint64_t first_index)
{
    void *ring = alloc_ring(kind->memsize(capacity));
    CHECK_EQ(kind->init_at(ring, capacity, first_index), 0);
    return ring;
}

/* ---- Single-threaded contracts ------------------------------------------- */

static void test_init_validation(void)
{
    static const uint32_t invalid[] = {0, 1, 3, 6, 100, 1000, (UINT32_C(1) << 31) + 2, UINT32_MAX};
    static const uint32_t valid[] = {2, 4, 64, 4096};

    for (size_t k = 0; k < FDN_ARRAY_SIZE(kinds); k++) {
        const struct ring_kind *kind = &kinds[k];
        void *mem = alloc_ring(kind->memsize(4096) + FDN_CACHELINE);

        for (size_t i = 0; i < FDN_ARRAY_SIZE(invalid); i++)
            CHECK_EQ(kind->init(mem, invalid[i]), -EINVAL);
        for (size_t i = 0; i < FDN_ARRAY_SIZE(valid); i++) {
            CHECK_EQ(kind->init(mem, valid[i]), 0);
            CHECK_EQ(kind->capacity(mem), valid[i]);
            CHECK(kind->empty(mem));
            CHECK_EQ(kind->memsize(valid[i]) % FDN_CACHELINE, 0);
        }
        /* The memory must be cache-line aligned. */
        CHECK_EQ(kind->init((char *)mem + 8, 4), -EINVAL);
        free(mem);
    }
    CHECK(fdn__spsc_memsize(8) >= sizeof(struct fdn__spsc) + 8 * sizeof(void *));
    CHECK(fdn__mpsc_memsize(8) >= sizeof(struct fdn__mpsc) + 8 * sizeof(struct fdn__mpsc_slot));
}

static void check_fill_exactly(const struct ring_kind *kind, uint64_t first_index)
{
    enum { CAPACITY = 8 };
    void *ring = new_ring(kind, CAPACITY, first_index);
    void *obj;

    for (uint64_t i = 1; i <= CAPACITY; i++) {
        obj = tag(i);
        CHECK_EQ(kind->enqueue(ring, &obj, 1), 1);
        CHECK(!kind->empty(ring));
    }
    obj = tag(99);
    CHECK_EQ(kind->enqueue(ring, &obj, 1), 0);
    for (uint64_t i = 1; i <= CAPACITY; i++) {
        CHECK(!kind->empty(ring));
        CHECK_EQ(kind->dequeue(ring, &obj, 1), 1);
        CHECK_EQ(untag(obj), i);
    }
    CHECK(kind->empty(ring));
    CHECK_EQ(kind->dequeue(ring, &obj, 1), 0);
    free(ring);
}

static void test_fill_to_capacity(void)
{
    for (size_t k = 0; k < FDN_ARRAY_SIZE(kinds); k++) {
        check_fill_exactly(&kinds[k], 0);
        check_fill_exactly(&kinds[k], kinds[k].index_wrap - 3);
    }
}

static void test_partial_bursts(void)
{
    for (size_t k = 0; k < FDN_ARRAY_SIZE(kinds); k++) {
        const struct ring_kind *kind = &kinds[k];
        void *ring = new_ring(kind, 16, 0);
        void *in[40], *out[40];

        for (unsigned i = 0; i < 40; i++)
            in[i] = tag(i + 1);
        CHECK_EQ(kind->enqueue(ring, in, 0), 0);
        CHECK(kind->empty(ring));
        CHECK_EQ(kind->enqueue(ring, in, 10), 10);
        CHECK_EQ(kind->enqueue(ring, in + 10, 10), 6); /* only the first 6 fit */
        CHECK_EQ(kind->enqueue(ring, in + 16, 10), 0);
        CHECK_EQ(kind->dequeue(ring, out, 0), 0);
        CHECK_EQ(kind->dequeue(ring, out, 4), 4);
        CHECK_EQ(kind->enqueue(ring, in + 16, 24), 4); /* the 4 freed slots */
        CHECK_EQ(kind->dequeue(ring, out + 4, 40), 16);
        for (unsigned i = 0; i < 20; i++)
            CHECK(out[i] == in[i]);
        CHECK(kind->empty(ring));
        free(ring);
    }
}

/* Random bursts against a counter model: the ring must hold exactly what the
 * model says, in order, while the indexes lap the mask thousands of times
 * and, starting just below the wrap, cross the end of their integer range. */
static void check_against_counter(const struct ring_kind *kind, uint32_t capacity,
                                  uint64_t first_index, uint64_t seed)
{
    void *ring = new_ring(kind, capacity, first_index);
    uint64_t state = seed, next_in = 1, next_out = 1;
    void *objs[64];

    for (int step = 0; step < 200000; step++) {
        unsigned n = random_burst(&state, 2 * capacity < 64 ? 2 * capacity : 64);
        uint64_t held = next_in - next_out;
        if (next_random(&state) & 1) {
            for (unsigned i = 0; i < n; i++)
                objs[i] = tag(next_in + i);
            unsigned expected = n < capacity - held ? n : (unsigned)(capacity - held);
            CHECK_EQ(kind->enqueue(ring, objs, n), expected);
            next_in += expected;
        } else {
            unsigned expected = n < held ? n : (unsigned)held;
            CHECK_EQ(kind->dequeue(ring, objs, n), expected);
            for (unsigned i = 0; i < expected; i++)
                CHECK_EQ(untag(objs[i]), next_out++);
        }
        CHECK_EQ(kind->empty(ring), next_in == next_out);
    }
    free(ring);
}

static void test_index_wrap_around(void)
{
    static const uint32_t capacities[] = {2, 4, 32};

    for (size_t k = 0; k < FDN_ARRAY_SIZE(kinds); k++) {
        const struct ring_kind *kind = &kinds[k];
        for (size_t c = 0; c < FDN_ARRAY_SIZE(capacities); c++) {
            uint32_t capacity = capacities[c];
            check_against_counter(kind, capacity, 0, 1 + c);
            check_against_counter(kind, capacity, kind->index_wrap - 1000, 10 + c);
            check_against_counter(kind, capacity, kind->index_wrap - capacity / 2, 20 + c);
        }
    }
}

/* A producer that reserved a slot and stalls before publishing it (as if
 * preempted) must not stop another producer: the second enqueue succeeds,
 * the consumer waits at the reserved slot, then takes both in order. */
static void test_mpsc_stalled_producer(void)
{
    struct fdn__mpsc *ring = alloc_ring(fdn__mpsc_memsize(8));
    CHECK_OK(fdn__mpsc_init(ring, 8));
    void *out[4];

    size_t stalled = atomic_fetch_add(&ring->tail, 1); /* reserve, do not publish */
    void *second = tag(2);
    CHECK_EQ(fdn__mpsc_enqueue_burst(ring, &second, 1), 1);
    CHECK(fdn__mpsc_empty(ring));
    CHECK_EQ(fdn__mpsc_dequeue_burst(ring, out, 4), 0);

    struct fdn__mpsc_slot *slot = &ring->slots[stalled & 7];
    slot->ptr = tag(1);
    atomic_store_explicit(&slot->seq, stalled + 1, memory_order_release);
    CHECK(!fdn__mpsc_empty(ring));
    CHECK_EQ(fdn__mpsc_dequeue_burst(ring, out, 4), 2);
    CHECK_EQ(untag(out[0]), 1);
    CHECK_EQ(untag(out[1]), 2);
    CHECK(fdn__mpsc_empty(ring));
    free(ring);
}

/* A NULL slot is a free one, so the SPSC ring refuses NULL: a lone NULL is
 * not enqueued, and a burst stops at its first NULL as if the ring were full
 * there. Nothing is lost or reordered around it. */
static void test_spsc_refuses_null(void)
{
    struct fdn__spsc *ring = alloc_ring(fdn__spsc_memsize(8));
    CHECK_OK(fdn__spsc_init(ring, 8));
    void *null_obj = NULL, *out[8];

    CHECK_EQ(fdn__spsc_enqueue_burst(ring, &null_obj, 1), 0);
    CHECK(fdn__spsc_empty(ring));
    CHECK_EQ(fdn__spsc_dequeue_burst(ring, out, 8), 0);

    void *burst[] = {tag(1), tag(2), NULL, tag(3)};
    CHECK_EQ(fdn__spsc_enqueue_burst(ring, burst, 4), 2);
    CHECK_EQ(fdn__spsc_enqueue_burst(ring, burst + 2, 2), 0);
    CHECK_EQ(fdn__spsc_enqueue_burst(ring, burst + 3, 1), 1);
    CHECK(!fdn__spsc_empty(ring));
    CHECK_EQ(fdn__spsc_dequeue_burst(ring, out, 8), 3);
    CHECK_EQ(untag(out[0]), 1);
    CHECK_EQ(untag(out[1]), 2);
    CHECK_EQ(untag(out[2]), 3);
    CHECK(fdn__spsc_empty(ring));

    /* Still usable to full capacity afterwards. */
    for (uint64_t i = 0; i < 8; i++) {
        void *obj = tag(10 + i);
        CHECK_EQ(fdn__spsc_enqueue_burst(ring, &obj, 1), 1);
    }
    CHECK_EQ(fdn__spsc_enqueue_burst(ring, burst, 1), 0);
    CHECK_EQ(fdn__spsc_dequeue_burst(ring, out, 8), 8);
    for (uint64_t i = 0; i < 8; i++)
        CHECK_EQ(untag(out[i]), 10 + i);
    free(ring);
}

/* ---- Threads ------------------------------------------------------------ */

/* On 2 cores the partner may not be running: give it the CPU rather than
 * spin through our whole time slice. */
static void back_off(void) { sched_yield(); }

enum { SPSC_VALUES = 10 * 1000 * 1000, SPSC_CAPACITY = 256 };

static void *spsc_producer(void *arg)
{
    struct fdn__spsc *ring = arg;
    uint64_t state = 42, next = 1;
    void *objs[64];

    while (next <= SPSC_VALUES) {
        unsigned n = random_burst(&state, 64);
        if (n > SPSC_VALUES - next + 1)
            n = (unsigned)(SPSC_VALUES - next + 1);
        for (unsigned i = 0; i < n; i++)
            objs[i] = tag(next + i);
        unsigned sent = fdn__spsc_enqueue_burst(ring, objs, n);
        next += sent;
        if (sent == 0)
            back_off();
    }
    return NULL;
}

static void test_spsc_threads(void)
{
    struct fdn__spsc *ring = alloc_ring(fdn__spsc_memsize(SPSC_CAPACITY));
    CHECK_OK(fdn__spsc_init(ring, SPSC_CAPACITY));
    pthread_t producer;
    CHECK_EQ(pthread_create(&producer, NULL, spsc_producer, ring), 0);

    uint64_t state = 7, expected = 1;
    void *objs[64];
    while (expected <= SPSC_VALUES) {
        /* For the consumer, "not empty" is a promise about the next dequeue. */
        bool was_empty = fdn__spsc_empty(ring);
        unsigned got = fdn__spsc_dequeue_burst(ring, objs, random_burst(&state, 64));
        CHECK(was_empty || got > 0);
        for (unsigned i = 0; i < got; i++)
            CHECK_EQ(untag(objs[i]), expected++);
        if (got == 0)
            back_off();
    }
    CHECK_EQ(pthread_join(producer, NULL), 0);
    CHECK(fdn__spsc_empty(ring));
    free(ring);
}

/* The sleep protocol of fdn__spsc_empty(): the consumer announces that it
 * sleeps, fences, and sleeps only if the ring is still empty; the producer
 * enqueues, fences, and posts a wake-up if it sees the announcement. A lost
 * wake-up would leave the consumer asleep on a non-empty ring and the test
 * would hang (and time out); spurious wake-ups are harmless. */
enum { SLEEPER_VALUES = 100 * 1000, SLEEPER_CAPACITY = 16 };

struct sleeper {
    struct fdn__spsc *ring;
    atomic_int sleeping;
    sem_t wake;
};

static void *sleeper_producer(void *arg)
{
    struct sleeper *s = arg;
    uint64_t state = 5, next = 1;
    void *objs[4];

    while (next <= SLEEPER_VALUES) {
        unsigned n = random_burst(&state, 4);
        if (n > SLEEPER_VALUES - next + 1)
            n = (unsigned)(SLEEPER_VALUES - next + 1);
        for (unsigned i = 0; i < n; i++)
            objs[i] = tag(next + i);
        unsigned sent = fdn__spsc_enqueue_burst(s->ring, objs, n);
        next += sent;
        if (sent == 0) {
            back_off();
            continue;
        }
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&s->sleeping, memory_order_relaxed) &&
            atomic_exchange_explicit(&s->sleeping, 0, memory_order_relaxed))
            CHECK_EQ(sem_post(&s->wake), 0);
    }
    return NULL;
}

static void test_spsc_sleep_protocol(void)
{
    struct sleeper s = {.ring = alloc_ring(fdn__spsc_memsize(SLEEPER_CAPACITY))};
    CHECK_OK(fdn__spsc_init(s.ring, SLEEPER_CAPACITY));
    atomic_init(&s.sleeping, 0);
    CHECK_EQ(sem_init(&s.wake, 0, 0), 0);
    pthread_t producer;
    CHECK_EQ(pthread_create(&producer, NULL, sleeper_producer, &s), 0);

    uint64_t expected = 1;
    void *objs[8];
    while (expected <= SLEEPER_VALUES) {
        unsigned got = fdn__spsc_dequeue_burst(s.ring, objs, 8);
        for (unsigned i = 0; i < got; i++)
            CHECK_EQ(untag(objs[i]), expected++);
        if (got)
            continue;
        atomic_store_explicit(&s.sleeping, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (!fdn__spsc_empty(s.ring)) {
            atomic_store_explicit(&s.sleeping, 0, memory_order_relaxed);
            continue;
        }
        while (sem_wait(&s.wake) != 0)
            CHECK_EQ(errno, EINTR);
    }
    CHECK_EQ(pthread_join(producer, NULL), 0);
    CHECK(fdn__spsc_empty(s.ring));
    CHECK_EQ(sem_destroy(&s.wake), 0);
    free(s.ring);
}

enum { MPSC_PRODUCERS = 4, MPSC_VALUES_EACH = 1000 * 1000, MPSC_CAPACITY = 1024 };

struct mpsc_producer_arg {
    struct fdn__mpsc *ring;
    uint64_t id;
};

/* Each value carries its producer in the high 32 bits and a per-producer
 * sequence number, starting at 1, in the low 32 bits. */
static void *mpsc_producer(void *arg)
{
    const struct mpsc_producer_arg *self = arg;
    uint64_t state = 1000 + self->id, next = 1;
    void *objs[32];

    while (next <= MPSC_VALUES_EACH) {
        unsigned n = random_burst(&state, 32);
        if (n > MPSC_VALUES_EACH - next + 1)
            n = (unsigned)(MPSC_VALUES_EACH - next + 1);
        for (unsigned i = 0; i < n; i++)
            objs[i] = tag(self->id << 32 | (next + i));
        unsigned sent = fdn__mpsc_enqueue_burst(self->ring, objs, n);
        next += sent;
        if (sent < n)
            back_off();
    }
    return NULL;
}

static void test_mpsc_threads(void)
{
    struct fdn__mpsc *ring = alloc_ring(fdn__mpsc_memsize(MPSC_CAPACITY));
    CHECK_OK(fdn__mpsc_init(ring, MPSC_CAPACITY));
    pthread_t producers[MPSC_PRODUCERS];
    struct mpsc_producer_arg args[MPSC_PRODUCERS];
    for (uint64_t p = 0; p < MPSC_PRODUCERS; p++) {
        args[p] = (struct mpsc_producer_arg){ring, p};
        CHECK_EQ(pthread_create(&producers[p], NULL, mpsc_producer, &args[p]), 0);
    }

    uint64_t expected[MPSC_PRODUCERS] = {1, 1, 1, 1};
    uint64_t state = 99, received = 0;
    void *objs[64];
    while (received < (uint64_t)MPSC_PRODUCERS * MPSC_VALUES_EACH) {
        bool was_empty = fdn__mpsc_empty(ring);
        unsigned got = fdn__mpsc_dequeue_burst(ring, objs, random_burst(&state, 64));
        CHECK(was_empty || got > 0);
        for (unsigned i = 0; i < got; i++) {
            uint64_t value = untag(objs[i]), producer = value >> 32;
            CHECK(producer < MPSC_PRODUCERS);
            CHECK_EQ(value & UINT32_MAX, expected[producer]++);
        }
        received += got;
        if (got == 0)
            back_off();
    }
    for (int p = 0; p < MPSC_PRODUCERS; p++) {
        CHECK_EQ(pthread_join(producers[p], NULL), 0);
        CHECK_EQ(expected[p], MPSC_VALUES_EACH + 1);
    }
    CHECK(fdn__mpsc_empty(ring));
    free(ring);
}

int main(void)
{
    RUN(test_init_validation);
    RUN(test_fill_to_capacity);
    RUN(test_partial_bursts);
    RUN(test_index_wrap_around);
    RUN(test_mpsc_stalled_producer);
    RUN(test_spsc_refuses_null);
    RUN(test_spsc_threads);
    RUN(test_spsc_sleep_protocol);
    RUN(test_mpsc_threads);
    return 0;
}
