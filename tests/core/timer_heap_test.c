/* Tests of the worker's timer heap (core/timer_heap.c): fixed scenarios for
 * each contract, then a long seeded random sequence of operations checked
 * step by step against a plain reference model, with the heap's structure
 * and every timer's heap_index validated after each step. */
#include "core/timer_heap.h"

#include <errno.h>

#include "test.h"

/* ---- Helpers ------------------------------------------------------------ */

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static int never_runs(fdn_worker *w, fdn_task *task)
{
    (void)w;
    (void)task;
    return FDN_TASK_DONE;
}

static void init_timers(fdn_timer *timers, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fdn_timer_init(&timers[i], never_runs, NULL, FDN_PRIO_DEFAULT);
}

static bool fires_before(const fdn_timer *a, const fdn_timer *b)
{
    return a->deadline_ns < b->deadline_ns ||
           (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
}

/* The heap's invariants: each stored timer knows its index, no child fires
 * before its parent (4 children per node), and the array has room. */
static void validate_heap(const struct fdn__timer_heap *h)
{
    CHECK(h->count <= h->capacity);
    for (uint32_t i = 0; i < h->count; i++) {
        CHECK_EQ(h->items[i]->heap_index, i);
        if (i > 0)
            CHECK(!fires_before(h->items[i], h->items[(i - 1) / 4]));
    }
}

static void insert_at(struct fdn__timer_heap *h, fdn_timer *t, uint64_t deadline_ns)
{
    t->deadline_ns = deadline_ns;
    CHECK_OK(fdn__timer_heap_insert(h, t));
}

/* ---- Fixed scenarios ---------------------------------------------------- */

static void test_empty_heap(void)
{
    struct fdn__timer_heap h;
    fdn__timer_heap_init(&h);
    CHECK(fdn__timer_heap_min(&h) == NULL);
    CHECK_EQ(fdn__timer_heap_count(&h), 0);
    CHECK(fdn__timer_heap_pop_expired(&h, UINT64_MAX) == NULL);
    fdn__timer_heap_fini(&h);
    fdn__timer_heap_fini(&h); /* fini leaves an empty heap that can be finished again */
}

static void test_pop_expired_respects_now(void)
{
    struct fdn__timer_heap h;
    fdn_timer t[3];
    fdn__timer_heap_init(&h);
    init_timers(t, 3);
    insert_at(&h, &t[2], 30);
    insert_at(&h, &t[0], 10);
    insert_at(&h, &t[1], 20);

    CHECK(fdn__timer_heap_min(&h) == &t[0]);
    CHECK(fdn__timer_heap_pop_expired(&h, 0) == NULL);
    CHECK(fdn__timer_heap_pop_expired(&h, 9) == NULL);
    CHECK_EQ(fdn__timer_heap_count(&h), 3);
    CHECK(fdn__timer_heap_pop_expired(&h, 20) == &t[0]);
    CHECK(!fdn_timer_armed(&t[0]));
    CHECK(fdn__timer_heap_pop_expired(&h, 20) == &t[1]);
    CHECK(fdn__timer_heap_pop_expired(&h, 20) == NULL);
    CHECK(fdn_timer_armed(&t[2]));
    CHECK(fdn__timer_heap_pop_expired(&h, UINT64_MAX) == &t[2]);
    CHECK_EQ(fdn__timer_heap_count(&h), 0);
    fdn__timer_heap_fini(&h);
}

/* Equal deadlines fire in arm order, and re-arming counts as arming again. */
static void test_ties_fire_first_armed_first(void)
{
    enum { N = 9 };
    struct fdn__timer_heap h;
    fdn_timer t[N];
    fdn__timer_heap_init(&h);
    init_timers(t, N);
    for (int i = 0; i < N; i++)
        insert_at(&h, &t[i], 100);
    CHECK_OK(fdn__timer_heap_rearm(&h, &t[0], 100)); /* armed: moves behind t[8] */
    fdn__timer_heap_remove(&h, &t[1]);
    CHECK(!fdn_timer_armed(&t[1]));
    CHECK_OK(fdn__timer_heap_rearm(&h, &t[1], 100)); /* unarmed: inserted last */
    validate_heap(&h);

    static const int order[N] = {2, 3, 4, 5, 6, 7, 8, 0, 1};
    for (int i = 0; i < N; i++)
        CHECK(fdn__timer_heap_pop_expired(&h, 100) == &t[order[i]]);
    CHECK(fdn__timer_heap_pop_expired(&h, 100) == NULL);
    fdn__timer_heap_fini(&h);
}

static void test_rearm_moves_both_ways(void)
{
    struct fdn__timer_heap h;
    fdn_timer t[3];
    fdn__timer_heap_init(&h);
    init_timers(t, 3);
    insert_at(&h, &t[0], 10);
    insert_at(&h, &t[1], 20);
    insert_at(&h, &t[2], 30);

    CHECK_OK(fdn__timer_heap_rearm(&h, &t[0], 25)); /* later: sinks */
    validate_heap(&h);
    CHECK(fdn__timer_heap_min(&h) == &t[1]);
    CHECK_OK(fdn__timer_heap_rearm(&h, &t[2], 5)); /* earlier: rises */
    validate_heap(&h);
    CHECK(fdn__timer_heap_min(&h) == &t[2]);
    CHECK_EQ(t[2].deadline_ns, 5);
    CHECK_EQ(fdn__timer_heap_count(&h), 3);
    fdn__timer_heap_fini(&h);
}

static void test_fini_unarms_remaining(void)
{
    enum { N = 100 };
    struct fdn__timer_heap h;
    fdn_timer t[N];
    fdn__timer_heap_init(&h);
    init_timers(t, N);
    for (int i = 0; i < N; i++)
        insert_at(&h, &t[i], (uint64_t)(i * 7 % 13));
    fdn__timer_heap_fini(&h);
    CHECK_EQ(fdn__timer_heap_count(&h), 0);
    CHECK(fdn__timer_heap_min(&h) == NULL);
    for (int i = 0; i < N; i++)
        CHECK(!fdn_timer_armed(&t[i]));

    /* The heap is usable again, and so are the timers. */
    insert_at(&h, &t[5], 1);
    CHECK(fdn__timer_heap_min(&h) == &t[5]);
    fdn__timer_heap_fini(&h);
    CHECK(!fdn_timer_armed(&t[5]));
}

/* Many timers force several doublings of the array; they come back out in
 * deadline order whatever order they went in. */
static void test_growth(void)
{
    enum { N = 50000 };
    struct fdn__timer_heap h;
    fdn_timer *t = calloc(N, sizeof(*t));
    CHECK(t != NULL);
    fdn__timer_heap_init(&h);
    init_timers(t, N);
    for (uint32_t i = 0; i < N; i++) {
        /* 7919 is prime and coprime with N: a permutation of 0..N-1. */
        insert_at(&h, &t[i], (uint64_t)i * 7919 % N);
        CHECK_EQ(fdn__timer_heap_count(&h), i + 1);
    }
    CHECK(h.capacity >= N);
    validate_heap(&h);
    for (uint64_t deadline = 0; deadline < N; deadline++) {
        fdn_timer *fired = fdn__timer_heap_pop_expired(&h, UINT64_MAX);
        CHECK(fired != NULL);
        CHECK_EQ(fired->deadline_ns, deadline);
    }
    CHECK_EQ(fdn__timer_heap_count(&h), 0);
    fdn__timer_heap_fini(&h);
    free(t);
}

/* ---- Random operations against a reference model ------------------------ */

/* The model keeps the armed timers in a sorted array, earliest first, and
 * its own copy of the seq each should carry. */
enum { MODEL_TIMERS = 512, MODEL_STEPS = 100000 };

struct model {
    fdn_timer *sorted[MODEL_TIMERS];
    uint32_t count;
    uint64_t next_seq;
};

static void model_add(struct model *m, fdn_timer *t)
{
    uint32_t at = m->count;
    while (at > 0 && fires_before(t, m->sorted[at - 1])) {
        m->sorted[at] = m->sorted[at - 1];
        at--;
    }
    m->sorted[at] = t;
    m->count++;
}

static void model_remove(struct model *m, const fdn_timer *t)
{
    uint32_t at = 0;
    while (m->sorted[at] != t)
        at++;
    memmove(&m->sorted[at], &m->sorted[at + 1], (m->count - at - 1) * sizeof(m->sorted[0]));
    m->count--;
}

/* Deadlines come from a narrow window so that ties are frequent. */
static uint64_t random_deadline(uint64_t *state, uint64_t base)
{
    return base + next_random(state) % 64;
}

static void random_step(struct fdn__timer_heap *h, struct model *m, fdn_timer *timers,
                        uint64_t *state, uint64_t *now)
{
    fdn_timer *t = &timers[next_random(state) % MODEL_TIMERS];
    unsigned op = (unsigned)(next_random(state) % 4);

    if (op == 0 && !fdn_timer_armed(t)) {
        t->deadline_ns = random_deadline(state, *now);
        CHECK_OK(fdn__timer_heap_insert(h, t));
        CHECK_EQ(t->seq, m->next_seq++);
        model_add(m, t);
    } else if (op == 1 && fdn_timer_armed(t)) {
        fdn__timer_heap_remove(h, t);
        CHECK(!fdn_timer_armed(t));
        model_remove(m, t);
    } else if (op == 2) {
        if (fdn_timer_armed(t))
            model_remove(m, t);
        CHECK_OK(fdn__timer_heap_rearm(h, t, random_deadline(state, *now)));
        CHECK_EQ(t->seq, m->next_seq++);
        model_add(m, t);
    } else if (op == 3) {
        *now += next_random(state) % 8;
        fdn_timer *fired = fdn__timer_heap_pop_expired(h, *now);
        if (m->count > 0 && m->sorted[0]->deadline_ns <= *now) {
            CHECK(fired == m->sorted[0]);
            CHECK(!fdn_timer_armed(fired));
            model_remove(m, fired);
        } else {
            CHECK(fired == NULL);
        }
    }
}

/* The armed timers are exactly the model's: every timer the model holds is
 * where its heap_index says, and no other timer claims to be armed. */
static void check_matches_model(const struct fdn__timer_heap *h, const struct model *m,
                                const fdn_timer *timers)
{
    validate_heap(h);
    CHECK_EQ(fdn__timer_heap_count(h), m->count);
    CHECK(fdn__timer_heap_min(h) == (m->count ? m->sorted[0] : NULL));
    for (uint32_t i = 0; i < m->count; i++) {
        const fdn_timer *t = m->sorted[i];
        CHECK(t->heap_index < h->count && h->items[t->heap_index] == t);
    }
    uint32_t armed = 0;
    for (uint32_t i = 0; i < MODEL_TIMERS; i++)
        armed += fdn_timer_armed(&timers[i]);
    CHECK_EQ(armed, m->count);
}

static void test_random_against_model(void)
{
    static fdn_timer timers[MODEL_TIMERS];
    static struct model m;
    struct fdn__timer_heap h;
    uint64_t state = 2024, now = 0;

    fdn__timer_heap_init(&h);
    init_timers(timers, MODEL_TIMERS);
    for (int step = 0; step < MODEL_STEPS; step++) {
        random_step(&h, &m, timers, &state, &now);
        check_matches_model(&h, &m, timers);
    }

    /* Drain: the heap must give back exactly the model's order. */
    for (uint32_t i = 0; i < m.count; i++)
        CHECK(fdn__timer_heap_pop_expired(&h, UINT64_MAX) == m.sorted[i]);
    CHECK_EQ(fdn__timer_heap_count(&h), 0);
    fdn__timer_heap_fini(&h);
}

int main(void)
{
    RUN(test_empty_heap);
    RUN(test_pop_expired_respects_now);
    RUN(test_ties_fire_first_armed_first);
    RUN(test_rearm_moves_both_ways);
    RUN(test_fini_unarms_remaining);
    RUN(test_growth);
    RUN(test_random_against_model);
    return 0;
}
