/* Per-worker buffer pools.
 *
 * Small buffers (up to the largest size class) are carved from slabs mapped
 * on the pool's NUMA node; each class keeps a LIFO free list that only the
 * owner thread touches, so the local alloc/free fast path takes no lock and
 * no atomic read-modify-write. Slabs are carved lazily (a bump pointer per
 * class), so a fresh slab's pages are faulted in only as buffers are used,
 * and they stay mapped until the pool is destroyed.
 *
 * Larger buffers get a mapping of their own, unmapped when freed.
 *
 * Other threads return buffers through a lock-free stack (Treiber push); the
 * owner takes the whole stack with one exchange, so pops never race and the
 * stack has no ABA problem. Each remote free is counted after its push, and
 * that count is its last access to the pool: a pool whose counts say "no
 * buffer in use" may be destroyed at once.
 *
 * Two internal kinds of pool share this code (core/pool.h):
 * - A region pool carves its slabs from one mapping it is given (a shared
 *   memory segment a transport hands to its peer), has no large buffers,
 *   and counts holds: one for its creator and one per buffer in use. The
 *   last drop, on whatever thread, destroys it, so the segment stays mapped
 *   while any of its buffers is out, however long its connection lasted.
 * - A foreign pool owns no memory: its messages' buffers belong to somebody
 *   else (a peer process's segment), and the last free of each one calls the
 *   pool's release function instead of returning it anywhere. */
#include "core/pool.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include <fdn/error.h>

#include "base/compiler.h"
#include "base/error.h"
#include "numa/memory.h"

#define DEFAULT_MAX_BYTES ((size_t)256 << 20)
#define DEFAULT_HEADROOM 128u
#define DEFAULT_SLAB_BYTES (256u << 10)

/* The fdn_msg padded to a cache line, so that start is line-aligned. */
#define METADATA_BYTES \
    ((sizeof(fdn_msg) + FDN_CACHELINE - 1) & ~(size_t)(FDN_CACHELINE - 1))

struct slab {
    void *mem;
    size_t bytes;
};

struct fdn_pool {
    /* Read-mostly: every freeing thread reads owner, so these fields share no
     * cache line with the state the owner writes on every call. */
    const char *owner;     /* &owner_token of the owner thread; __atomic access */
    uint32_t buffer_bytes[FDN_POOL_NUM_CLASSES]; /* metadata + headroom + payload, line-rounded */
    uint32_t headroom;
    uint32_t overhead;     /* METADATA_BYTES + headroom */
    size_t max_bytes;
    size_t slab_bytes;     /* page-rounded */
    size_t page_bytes;
    int node;              /* NUMA node to bind to, or -1 */
    /* Region pools: slabs come from [region, region + region_bytes), and
     * region_unmap lets the region go when the last hold is dropped. */
    uint8_t *region;
    size_t region_bytes;
    void (*region_unmap)(void *region, size_t bytes);
    /* Foreign pools: called for each buffer's last free, on any thread. */
    void (*release)(void *arg, fdn_msg *m);
    void *release_arg;

    /* Owner-only state. The counters are written with relaxed atomic stores
     * (a plain store on common CPUs) so that snapshots taken on other threads
     * are race-free. The fast path touches the first two lines only. */
    _Alignas(FDN_CACHELINE) fdn_msg *free_list[FDN_POOL_NUM_CLASSES];
    uint64_t allocs;
    uint64_t local_frees;
    uint64_t alloc_failures;
    size_t bytes_reserved;
    bool numa_bound;
    uint8_t *carve_next[FDN_POOL_NUM_CLASSES];  /* uncarved rest of the newest slab */
    size_t carve_left[FDN_POOL_NUM_CLASSES];

    /* Every slab, for destroy. Cold. */
    struct slab *slabs;
    size_t num_slabs;
    size_t slab_capacity;

    /* Written by other threads: on a line of its own so that remote frees do
     * not steal the owner's lines. */
    _Alignas(FDN_CACHELINE) fdn_msg *remote_stack;  /* linked through next */
    uint64_t remote_frees;
    uint64_t holds;        /* region pools: 1 for the creator + buffers in use */
};

/* Each thread's address of this variable identifies the thread. The
 * initial-exec model makes reading it one instruction even when the library
 * is built as position-independent code (no __tls_get_addr call). */
static _Thread_local char owner_token __attribute__((tls_model("initial-exec")));

static bool is_owner(const fdn_pool *pool)
{
    return __atomic_load_n(&pool->owner, __ATOMIC_RELAXED) == &owner_token;
}

static void owner_add(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

static void set_reserved(fdn_pool *pool, size_t bytes)
{
    __atomic_store_n(&pool->bytes_reserved, bytes, __ATOMIC_RELAXED);
}

static size_t room_left(const fdn_pool *pool)
{
    return pool->max_bytes - pool->bytes_reserved;
}

/* The smallest class whose payload capacity (64 << class) holds len bytes,
 * or FDN_POOL_NUM_CLASSES: the number of bits of len - 1 beyond the first 6. */
static unsigned class_for(uint64_t len)
{
    if (len <= FDN_POOL_CLASS_PAYLOAD(0))
        return 0;
    unsigned bits = 64u - (unsigned)__builtin_clzll(len - 1);
    unsigned index = bits - 6u;
    return index < FDN_POOL_NUM_CLASSES ? index : FDN_POOL_NUM_CLASSES;
}

static void destroy_region_pool(fdn_pool *pool);

/* Drops n holds of a region pool; the last one destroys it. Any thread;
 * the caller's last access to the pool. */
static void region_drop(fdn_pool *pool, uint64_t n)
{
    if (__atomic_sub_fetch(&pool->holds, n, __ATOMIC_ACQ_REL) == 0)
        destroy_region_pool(pool);
}

/* Maps bytes on the pool's node and counts them as reserved; a region pool
 * takes them from its region instead (page-aligned, never given back). */
static void *map_counted(fdn_pool *pool, size_t bytes)
{
    if (pool->region) {
        if (bytes > room_left(pool))
            return NULL;
        void *mem = pool->region + pool->bytes_reserved;
        set_reserved(pool, pool->bytes_reserved + bytes);
        return mem;
    }
    bool bound = false;
    void *mem = fdn__numa_alloc(bytes, pool->node, &bound);
    if (!mem)
        return NULL;
    if (pool->node >= 0 && !bound)
        __atomic_store_n(&pool->numa_bound, false, __ATOMIC_RELAXED);
    set_reserved(pool, pool->bytes_reserved + bytes);
    return mem;
}

static void unmap_counted(fdn_pool *pool, void *mem, size_t bytes)
{
    fdn__numa_free(mem, bytes);
    set_reserved(pool, pool->bytes_reserved - bytes);
}

/* Returns one buffer to the owner's side: the free list, or the OS. */
static void give_back(fdn_pool *pool, fdn_msg *m)
{
    if (m->class_index < FDN_POOL_NUM_CLASSES) {
        m->next = pool->free_list[m->class_index];
        pool->free_list[m->class_index] = m;
    } else {
        unmap_counted(pool, m, m->mapped_bytes);
    }
}

int fdn__pool_reclaim(fdn_pool *pool)
{
    /* A load first: an idle worker polls this, and an exchange would take the
     * cache line away from the freeing threads every time. */
    if (!__atomic_load_n(&pool->remote_stack, __ATOMIC_RELAXED))
        return 0;
    fdn_msg *m = __atomic_exchange_n(&pool->remote_stack, NULL, __ATOMIC_ACQUIRE);
    int reclaimed = 0;
    while (m) {
        fdn_msg *next = m->next;
        give_back(pool, m);
        m = next;
        reclaimed++;
    }
    return reclaimed;
}

static int record_slab(fdn_pool *pool, void *mem, size_t bytes)
{
    if (pool->num_slabs == pool->slab_capacity) {
        size_t capacity = pool->slab_capacity ? 2 * pool->slab_capacity : 16;
        struct slab *slabs = realloc(pool->slabs, capacity * sizeof *slabs);
        if (!slabs)
            return -ENOMEM;
        pool->slabs = slabs;
        pool->slab_capacity = capacity;
    }
    pool->slabs[pool->num_slabs++] = (struct slab){ mem, bytes };
    return 0;
}

/* Bytes of the next slab for buffers of buffer_bytes: the configured slab,
 * grown to one buffer, shrunk to what max_bytes still allows. 0 if not even
 * one buffer fits. */
static size_t next_slab_bytes(const fdn_pool *pool, size_t buffer_bytes)
{
    size_t want = fdn__align_up(buffer_bytes > pool->slab_bytes ? buffer_bytes : pool->slab_bytes,
                                pool->page_bytes);
    size_t room = room_left(pool) & ~(pool->page_bytes - 1);
    size_t bytes = want < room ? want : room;
    return bytes >= buffer_bytes ? bytes : 0;
}

/* Maps a new slab for class cls and makes it the class's carving area. The
 * rest of the previous slab (smaller than one buffer) stays unused. */
static int grow_class(fdn_pool *pool, unsigned cls)
{
    size_t bytes = next_slab_bytes(pool, pool->buffer_bytes[cls]);
    if (!bytes)
        return FDN_ERR(-ENOBUFS, "pool holds %zu of max_bytes %zu: no room for a %u-byte buffer",
                       pool->bytes_reserved, pool->max_bytes, pool->buffer_bytes[cls]);
    void *mem = map_counted(pool, bytes);
    if (!mem)
        return FDN_ERR(-ENOBUFS, "cannot map a %zu-byte slab: %s", bytes, fdn_strerror(errno));
    if (record_slab(pool, mem, bytes) < 0) {
        unmap_counted(pool, mem, bytes);
        return FDN_ERR(-ENOBUFS, "no memory to record a slab");
    }
    pool->carve_next[cls] = mem;
    pool->carve_left[cls] = bytes;
    return 0;
}

/* The slow path of a small allocation, taken when the class's free list is
 * empty: buffers freed by other threads first (warm, already counted), then
 * the uncarved part of the newest slab, then a new slab. */
__attribute__((noinline))
static int take_small_slow(fdn_pool *pool, unsigned cls, fdn_msg **out)
{
    fdn__pool_reclaim(pool);
    fdn_msg *m = pool->free_list[cls];
    if (m) {
        pool->free_list[cls] = m->next;
        *out = m;
        return 0;
    }
    uint32_t buffer_bytes = pool->buffer_bytes[cls];
    if (pool->carve_left[cls] < buffer_bytes) {
        int rc = grow_class(pool, cls);
        if (rc < 0)
            return rc;
    }
    *out = (fdn_msg *)(void *)pool->carve_next[cls];
    pool->carve_next[cls] += buffer_bytes;
    pool->carve_left[cls] -= buffer_bytes;
    return 0;
}

/* Maps a buffer of its own for total bytes; *mapped is the page-rounded size. */
__attribute__((noinline))
static int take_large(fdn_pool *pool, uint64_t total, fdn_msg **out, uint32_t *mapped)
{
    if (pool->region)
        return FDN_ERR(-ENOBUFS, "a shared pool has no buffers over %u bytes",
                       FDN_POOL_CLASS_PAYLOAD(FDN_POOL_NUM_CLASSES - 1));
    uint64_t bytes = fdn__align_up(total, pool->page_bytes);
    if (bytes > UINT32_MAX)
        return FDN_ERR(-EMSGSIZE, "a %" PRIu64 "-byte buffer does not fit mapped_bytes", bytes);
    if (bytes > room_left(pool)) {
        /* Large buffers freed remotely still hold their memory: drop them. */
        fdn__pool_reclaim(pool);
        if (bytes > room_left(pool))
            return FDN_ERR(-ENOBUFS,
                           "pool holds %zu of max_bytes %zu: no room for %" PRIu64 " bytes",
                           pool->bytes_reserved, pool->max_bytes, bytes);
    }
    void *mem = map_counted(pool, bytes);
    if (!mem)
        return FDN_ERR(-ENOBUFS, "cannot map a %" PRIu64 "-byte buffer: %s", bytes,
                       fdn_strerror(errno));
    *out = mem;
    *mapped = (uint32_t)bytes;
    return 0;
}

static void init_msg(fdn_pool *pool, fdn_msg *m, size_t len, unsigned cls, size_t buffer_bytes,
                     uint32_t mapped)
{
    m->start = (uint8_t *)m + METADATA_BYTES;
    m->data = m->start + pool->headroom;
    m->len = (uint32_t)len;
    m->class_index = cls;
    m->end = (uint8_t *)m + buffer_bytes;
    m->next = NULL;
    m->qnext = NULL;
    m->pool = pool;
    __atomic_store_n(&m->refs, 1, __ATOMIC_RELAXED);
    m->mapped_bytes = mapped;
}

int fdn_msg_alloc(fdn_pool *pool, size_t len, fdn_msg **out)
{
    if (fdn__unlikely(!is_owner(pool)))
        return FDN_ERR(-EPERM, "fdn_msg_alloc: the calling thread does not own the pool");
    if (fdn__unlikely(len > UINT32_MAX))
        return FDN_ERR(-EMSGSIZE, "fdn_msg_alloc: %zu bytes is over the 4 GiB limit", len);

    unsigned cls = class_for(len);
    fdn_msg *m = NULL;
    uint32_t mapped = 0;
    size_t buffer_bytes;
    int rc = 0;
    if (fdn__likely(cls < FDN_POOL_NUM_CLASSES)) {
        buffer_bytes = pool->buffer_bytes[cls];
        m = pool->free_list[cls];
        if (fdn__likely(m != NULL))
            pool->free_list[cls] = m->next;
        else
            rc = take_small_slow(pool, cls, &m);
    } else {
        rc = take_large(pool, (uint64_t)pool->overhead + len, &m, &mapped);
        buffer_bytes = mapped;
    }
    if (fdn__unlikely(rc < 0)) {
        if (rc == -ENOBUFS)
            owner_add(&pool->alloc_failures, 1);
        return rc;
    }
    init_msg(pool, m, len, cls, buffer_bytes, mapped);
    owner_add(&pool->allocs, 1);
    if (fdn__unlikely(pool->region != NULL))
        __atomic_fetch_add(&pool->holds, 1, __ATOMIC_RELAXED);
    *out = m;
    return 0;
}

/* Returns n buffers of the owner's pool, linked from first. */
static void return_local(fdn_pool *pool, fdn_msg *first, uint64_t n)
{
    fdn_msg *m = first;
    for (uint64_t i = 0; i < n; i++) {
        fdn_msg *next = m->next;
        give_back(pool, m);
        m = next;
    }
    owner_add(&pool->local_frees, n);
    if (fdn__unlikely(pool->region != NULL))
        region_drop(pool, n);
}

/* Pushes the n buffers first..last (already linked) onto the pool's remote
 * stack with one CAS. */
static void push_remote(fdn_pool *pool, fdn_msg *first, fdn_msg *last, uint64_t n)
{
    fdn_msg *top = __atomic_load_n(&pool->remote_stack, __ATOMIC_RELAXED);
    do {
        last->next = top;
    } while (!__atomic_compare_exchange_n(&pool->remote_stack, &top, first, true,
                                          __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    /* The last access to the pool: once the count says every buffer is back,
     * the owner may destroy it. Release so that a reader of the count also
     * sees the push. */
    __atomic_fetch_add(&pool->remote_frees, n, __ATOMIC_RELEASE);
    if (fdn__unlikely(pool->region != NULL))
        region_drop(pool, n); /* then this is the last access */
}

/* A foreign pool's buffers go to its release function, one by one; the
 * function may end the pool with the last one, so nothing of the pool is
 * read after. */
static void release_foreign(fdn_pool *pool, fdn_msg *first, uint64_t n)
{
    void (*release)(void *, fdn_msg *) = pool->release;
    void *arg = pool->release_arg;
    for (uint64_t i = 0; i < n; i++) {
        fdn_msg *next = first->next;
        release(arg, first);
        first = next;
    }
}

/* Returns every buffer of a chain to its own pool, runs of buffers from the
 * same pool at once. */
static void release_chain(fdn_msg *m)
{
    while (m) {
        fdn_pool *pool = m->pool;
        fdn_msg *last = m;
        uint64_t n = 1;
        while (last->next && last->next->pool == pool) {
            last = last->next;
            n++;
        }
        fdn_msg *rest = last->next;
        if (fdn__unlikely(pool->release != NULL))
            release_foreign(pool, m, n);
        else if (is_owner(pool))
            return_local(pool, m, n);
        else
            push_remote(pool, m, last, n);
        m = rest;
    }
}

void fdn_msg_free(fdn_msg *msg)
{
    if (!msg)
        return;
    /* A sole holder needs no read-modify-write: nobody else may change refs.
     * Acquire pairs with earlier holders' releasing decrements, so their
     * accesses to the buffers happen before the buffers are reused. */
    if (__atomic_load_n(&msg->refs, __ATOMIC_ACQUIRE) != 1 &&
        __atomic_sub_fetch(&msg->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    release_chain(msg);
}

void fdn_msg_chain(fdn_msg *msg, fdn_msg *tail)
{
    assert(__atomic_load_n(&tail->refs, __ATOMIC_RELAXED) == 1);
    fdn_msg *last = msg;
    while (last->next)
        last = last->next;
    last->next = tail;
}

int fdn_msg_to_iov(const fdn_msg *msg, struct iovec *iov, int max)
{
    int n = 0;
    for (const fdn_msg *m = msg; m; m = m->next) {
        if (n >= max)
            return -ENOSPC;
        iov[n].iov_base = m->data;
        iov[n].iov_len = m->len;
        n++;
    }
    return n;
}

size_t fdn_msg_total_len(const fdn_msg *msg)
{
    size_t total = 0;
    for (const fdn_msg *m = msg; m; m = m->next)
        total += m->len;
    return total;
}

/* cfg with every zero field replaced by its default. */
static fdn_pool_config resolved_config(const fdn_pool_config *cfg)
{
    fdn_pool_config c = cfg ? *cfg : (fdn_pool_config){ 0 };
    if (!c.max_bytes)
        c.max_bytes = DEFAULT_MAX_BYTES;
    if (!c.headroom)
        c.headroom = DEFAULT_HEADROOM;
    if (!c.slab_bytes)
        c.slab_bytes = DEFAULT_SLAB_BYTES;
    return c;
}

static int validate_config(const fdn_pool_config *c)
{
    if (c->headroom > FDN_POOL_MAX_HEADROOM)
        return FDN_ERR(-EINVAL, "headroom %u is over FDN_POOL_MAX_HEADROOM (%u)", c->headroom,
                       FDN_POOL_MAX_HEADROOM);
    if (c->bind_numa && c->numa_node < 0)
        return FDN_ERR(-EINVAL, "bind_numa needs a NUMA node, not %d", c->numa_node);
    return 0;
}

int fdn_pool_create(const fdn_pool_config *cfg, fdn_pool **out)
{
    fdn_pool_config c = resolved_config(cfg);
    int rc = validate_config(&c);
    if (rc < 0)
        return rc;

    /* The pool lives on its node like its buffers: the free-list heads are
     * touched on every call. The mapping is page-aligned, as the cache-line
     * alignment of the struct's groups needs, and already zeroed. */
    int node = c.bind_numa ? c.numa_node : -1;
    bool bound = false;
    fdn_pool *pool = fdn__numa_alloc(sizeof *pool, node, &bound);
    if (!pool)
        return FDN_ERR(-ENOMEM, "cannot map a pool: %s", fdn_strerror(errno));

    pool->owner = &owner_token;
    pool->headroom = c.headroom;
    pool->overhead = (uint32_t)METADATA_BYTES + c.headroom;
    /* Line-rounded so that every carved buffer starts on a cache line. */
    for (unsigned cls = 0; cls < FDN_POOL_NUM_CLASSES; cls++)
        pool->buffer_bytes[cls] =
            (uint32_t)fdn__align_up(pool->overhead + FDN_POOL_CLASS_PAYLOAD(cls), FDN_CACHELINE);
    pool->max_bytes = c.max_bytes;
    pool->page_bytes = (size_t)sysconf(_SC_PAGESIZE);
    pool->slab_bytes = fdn__align_up(c.slab_bytes, pool->page_bytes);
    pool->node = node;
    pool->numa_bound = c.bind_numa && bound;
    *out = pool;
    return 0;
}

struct counts {
    uint64_t allocs;
    uint64_t local_frees;
    uint64_t remote_frees;
};

static struct counts read_counts(const fdn_pool *pool)
{
    struct counts c;
    c.remote_frees = __atomic_load_n(&pool->remote_frees, __ATOMIC_ACQUIRE);
    c.local_frees = __atomic_load_n(&pool->local_frees, __ATOMIC_RELAXED);
    c.allocs = __atomic_load_n(&pool->allocs, __ATOMIC_RELAXED);
    return c;
}

static uint64_t frees_of(struct counts c) { return c.local_frees + c.remote_frees; }

/* Off the owner thread the counters are read one at a time, so a free may be
 * seen without its allocation: clamp rather than wrap. */
static uint64_t in_use_of(struct counts c)
{
    return c.allocs > frees_of(c) ? c.allocs - frees_of(c) : 0;
}

int fdn_pool_destroy(fdn_pool *pool)
{
    if (!pool)
        return 0;
    /* Counts first, reclaim second: every remote free counted here was pushed
     * before it was counted, so the reclaim unmaps its buffer if large. */
    uint64_t in_use = in_use_of(read_counts(pool));
    fdn__pool_reclaim(pool);
    if (in_use > 0)
        return FDN_ERR(-EBUSY, "%" PRIu64 " buffers of the pool are still allocated", in_use);

    for (size_t i = 0; i < pool->num_slabs; i++)
        fdn__numa_free(pool->slabs[i].mem, pool->slabs[i].bytes);
    free(pool->slabs);
    fdn__numa_free(pool, sizeof *pool);
    return 0;
}

int fdn__pool_create_region(const fdn_pool_config *cfg, void *region, size_t bytes,
                            void (*unmap)(void *region, size_t bytes), fdn_pool **out)
{
    fdn_pool_config c = resolved_config(cfg);
    c.max_bytes = bytes;
    c.bind_numa = false;
    int rc = fdn_pool_create(&c, out);
    if (rc < 0)
        return rc;
    fdn_pool *pool = *out;
    if ((uintptr_t)region % pool->page_bytes) {
        fdn__numa_free(pool, sizeof *pool);
        return FDN_ERR(-EINVAL, "a pool region must be page-aligned");
    }
    pool->region = region;
    pool->region_bytes = bytes;
    pool->region_unmap = unmap;
    pool->max_bytes = bytes & ~(pool->page_bytes - 1);
    pool->holds = 1;
    return 0;
}

void fdn__pool_region_put(fdn_pool *pool)
{
    if (pool)
        region_drop(pool, 1);
}

static void destroy_region_pool(fdn_pool *pool)
{
    void (*unmap)(void *, size_t) = pool->region_unmap;
    void *region = pool->region;
    size_t bytes = pool->region_bytes;
    free(pool->slabs);
    fdn__numa_free(pool, sizeof *pool);
    if (unmap)
        unmap(region, bytes);
}

int fdn__pool_create_foreign(void (*release)(void *arg, fdn_msg *m), void *arg, fdn_pool **out)
{
    int rc = fdn_pool_create(NULL, out);
    if (rc < 0)
        return rc;
    (*out)->release = release;
    (*out)->release_arg = arg;
    (*out)->max_bytes = 0; /* it allocates nothing */
    return 0;
}

void fdn__pool_destroy_foreign(fdn_pool *pool)
{
    if (pool)
        fdn__numa_free(pool, sizeof *pool);
}

void fdn_pool_adopt(fdn_pool *pool)
{
    __atomic_store_n(&pool->owner, &owner_token, __ATOMIC_RELEASE);
}

void fdn_pool_stats_get(const fdn_pool *pool, fdn_pool_stats *out)
{
    struct counts c = read_counts(pool);
    *out = (fdn_pool_stats){
        .bytes_reserved = __atomic_load_n(&pool->bytes_reserved, __ATOMIC_RELAXED),
        .max_bytes = pool->max_bytes,
        .allocs = c.allocs,
        .alloc_failures = __atomic_load_n(&pool->alloc_failures, __ATOMIC_RELAXED),
        .frees = frees_of(c),
        .remote_frees = c.remote_frees,
        .buffers_in_use = in_use_of(c),
        .numa_bound = __atomic_load_n(&pool->numa_bound, __ATOMIC_RELAXED),
    };
}
