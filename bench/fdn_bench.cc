// fdn-bench: micro-benchmarks of Foundation's worker, rings, pools and timers.
//
// The project's measurement rules (BENCHMARKS.md) apply: both ends of every
// cross-thread measurement are pinned to the first two CPUs this process may
// use, set-up and warm-up stay outside the timed loop, and the figures are
// meant to be read as ratios against BM_cacheline_pingpong measured in the
// same run (see bench/run.py), never as pass/fail.
//
// Everything internal (rings, timer heap, pool reclaim) is reached through
// the C shim bench_support.h: core/ring.h needs <stdatomic.h>, which C++17
// cannot include.
#include <benchmark/benchmark.h>

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fdn/error.h>
#include <fdn/msg.h>
#include <fdn/node.h>
#include <fdn/runtime.h>
#include <fdn/topology.h>
#include <fdn/worker.h>

#include "bench/bench_support.h"

namespace {

// ---- Machine and threads ---------------------------------------------------

// The CPUs this process may use, ascending. Read once in main(), before any
// benchmark pins the main thread and narrows what sched_getaffinity reports.
std::vector<int> g_cpus;

std::vector<int> read_allowed_cpus()
{
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return cpus;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &set))
            cpus.push_back(cpu);
    return cpus;
}

std::string cpu_list(const std::vector<int> &cpus)
{
    std::string s;
    for (int cpu : cpus)
        s += (s.empty() ? "" : ",") + std::to_string(cpu);
    return s;
}

// Takes the first `needed` allowed CPUs into cpus, or marks the benchmark
// skipped with the reason and returns false.
bool take_cpus(benchmark::State &state, size_t needed, std::vector<int> *cpus)
{
    if (g_cpus.size() < needed) {
        std::string why = "needs " + std::to_string(needed) + " allowed CPUs, the process has " +
                          std::to_string(g_cpus.size()) + " (sched_getaffinity: " +
                          cpu_list(g_cpus) + ")";
        state.SkipWithError(why.c_str());
        return false;
    }
    cpus->assign(g_cpus.begin(), g_cpus.begin() + static_cast<std::ptrdiff_t>(needed));
    state.SetLabel("cpus " + cpu_list(*cpus));
    return true;
}

// Skips the benchmark with the library's own explanation of a failed call.
void skip_fdn(benchmark::State &state, const char *call, int rc)
{
    std::string why = std::string(call) + ": " + fdn_strerror(rc);
    const char *detail = fdn_errmsg();
    if (detail && *detail)
        why += std::string(" (") + detail + ")";
    state.SkipWithError(why.c_str());
}

inline void cpu_relax()
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

// Pins the calling thread for the guard's lifetime, then restores the mask it
// had, so one benchmark's pinning never leaks into the next.
class PinGuard {
public:
    explicit PinGuard(int cpu)
    {
        saved_ok_ = sched_getaffinity(0, sizeof saved_, &saved_) == 0;
        rc_ = fdn_pin_current_thread(cpu);
    }
    ~PinGuard()
    {
        if (saved_ok_)
            sched_setaffinity(0, sizeof saved_, &saved_);
    }
    PinGuard(const PinGuard &) = delete;
    PinGuard &operator=(const PinGuard &) = delete;
    int rc() const { return rc_; }

private:
    cpu_set_t saved_{};
    bool saved_ok_ = false;
    int rc_ = 0;
};

// The first of two threads on two CPUs: take_cpus, then the calling thread
// pinned to the first CPU while the seat lives (the second is for the
// other thread). ok() is false when the benchmark was skipped instead.
class FirstOfTwoCpus {
public:
    explicit FirstOfTwoCpus(benchmark::State &state)
    {
        if (!take_cpus(state, 2, &cpus_))
            return;
        pin_.emplace(cpus_[0]);
        if (pin_->rc() < 0)
            skip_fdn(state, "fdn_pin_current_thread", pin_->rc());
        else
            ok_ = true;
    }
    bool ok() const { return ok_; }
    int other_cpu() const { return cpus_[1]; }

private:
    std::vector<int> cpus_;
    std::optional<PinGuard> pin_;
    bool ok_ = false;
};

// Helper threads, each pinned to a CPU, sharing one stop flag. spawn() returns
// once the thread runs on its CPU, so no timed loop includes a thread start;
// destruction stops and joins them, so no early return leaves one spinning.
class Crew {
public:
    Crew() = default;
    Crew(const Crew &) = delete;
    Crew &operator=(const Crew &) = delete;
    ~Crew() { stop(); }

    // Runs fn(stop_flag) on a new thread pinned to cpu. Returns 0, or the
    // pinning error (the thread has then ended without running fn).
    template <class Fn>
    int spawn(int cpu, Fn fn)
    {
        std::atomic<int> pinned{1}; // 1: pending, else the pinning result
        threads_.emplace_back([this, cpu, fn, &pinned]() mutable {
            int rc = fdn_pin_current_thread(cpu);
            pinned.store(rc, std::memory_order_release); // last touch of `pinned`
            if (rc == 0)
                fn(stop_);
        });
        int rc;
        while ((rc = pinned.load(std::memory_order_acquire)) == 1)
            std::this_thread::yield();
        return rc;
    }

    // Release: a thread that reads the flag set also sees everything this
    // thread did before (the remote-free benchmark drains on that promise).
    void stop()
    {
        stop_.store(true, std::memory_order_release);
        for (std::thread &t : threads_)
            t.join();
        threads_.clear();
    }

private:
    // On a line of its own: the helpers poll it while the main thread works.
    alignas(64) std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

// Wall time of a timed loop, for counters derived from it (one-way latency).
class LoopClock {
public:
    LoopClock() : start_(std::chrono::steady_clock::now()) {}
    double elapsed_ns() const
    {
        return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start_)
            .count();
    }

private:
    std::chrono::steady_clock::time_point start_;
};

// One-way latency = round trip / 2, as sockperf and ucx_perftest report it.
void set_one_way_ns(benchmark::State &state, double loop_ns)
{
    state.counters["one_way_ns"] =
        benchmark::Counter(loop_ns / 2.0, benchmark::Counter::kAvgIterations);
}

// Round trips done before timing: caches, branch predictors and the other
// thread's spin loop are warm when the clock starts.
constexpr int kWarmupRoundTrips = 20000;

// ---- 1. The physical floor -------------------------------------------------

// One cache line handed back and forth. The pinger writes odd values and
// waits for the next even one; the ponger answers each odd value v with v+1.
struct alignas(64) PingPongLine {
    std::atomic<uint64_t> value{0};
};

void pong(PingPongLine &line, const std::atomic<bool> &stop)
{
    for (;;) {
        uint64_t v = line.value.load(std::memory_order_acquire);
        if (v & 1) {
            line.value.store(v + 1, std::memory_order_release);
            continue;
        }
        // Only polled while idle, so it never delays an answer.
        if (stop.load(std::memory_order_acquire))
            return;
        cpu_relax();
    }
}

// One round trip from an even value; returns the next even value.
inline uint64_t ping(PingPongLine &line, uint64_t even)
{
    line.value.store(even + 1, std::memory_order_release);
    while (line.value.load(std::memory_order_acquire) != even + 2)
        cpu_relax();
    return even + 2;
}

void BM_cacheline_pingpong(benchmark::State &state)
{
    std::vector<int> cpus;
    if (!take_cpus(state, 2, &cpus))
        return;
    PinGuard pin(cpus[0]);
    if (pin.rc() < 0)
        return skip_fdn(state, "fdn_pin_current_thread", pin.rc());
    PingPongLine line;
    Crew crew;
    int rc = crew.spawn(cpus[1], [&line](const std::atomic<bool> &stop) { pong(line, stop); });
    if (rc < 0)
        return skip_fdn(state, "fdn_pin_current_thread (ponger)", rc);

    uint64_t v = 0;
    for (int i = 0; i < kWarmupRoundTrips; i++)
        v = ping(line, v);
    LoopClock clock;
    for (auto _ : state)
        v = ping(line, v);
    set_one_way_ns(state, clock.elapsed_ns());
}

// ---- 1b. What a ring costs the floor --------------------------------------

// The timed part of a ping-pong whose pinger is pinned already: pong(stop)
// runs on ponger_cpu, round_trip() runs `warmup` times and then timed, and
// the one-way time is reported. A round trip that returns false ends the run
// with `error` (only a broken ring makes one).
template <class Pong, class RoundTrip>
void run_pingpong(benchmark::State &state, int ponger_cpu, Pong pong, RoundTrip round_trip,
                  const char *error, int warmup = kWarmupRoundTrips)
{
    Crew crew;
    int rc = crew.spawn(ponger_cpu, pong);
    if (rc < 0)
        return skip_fdn(state, "fdn_pin_current_thread (ponger)", rc);
    for (int i = 0; i < warmup; i++)
        if (!round_trip())
            return state.SkipWithError(error);
    LoopClock clock;
    for (auto _ : state)
        if (!round_trip())
            return state.SkipWithError(error);
    set_one_way_ns(state, clock.elapsed_ns());
}

// The floor again, but as a ring moves data: each direction has its own
// lines, and message i goes in line i % range(0) of its direction. With one
// line per direction this is the floor with the two directions apart; with
// many, every message lands in a line the other core last saw a lap ago,
// which is what any ring does (transport/shm's walks its whole size).
struct alignas(64) RingLine {
    std::atomic<uint64_t> value{0};
};

void ring_lines_pong(const std::vector<RingLine> &in, std::vector<RingLine> &out,
                     const std::atomic<bool> &stop)
{
    const size_t lines = in.size();
    for (uint64_t i = 1;;) {
        if (in[i % lines].value.load(std::memory_order_acquire) == i) {
            out[i % lines].value.store(i, std::memory_order_release);
            i++;
            continue;
        }
        if (stop.load(std::memory_order_acquire))
            return;
        cpu_relax();
    }
}

void BM_cacheline_ring_pingpong(benchmark::State &state)
{
    auto lines = static_cast<size_t>(state.range(0));
    FirstOfTwoCpus seat(state);
    if (!seat.ok())
        return;
    std::vector<RingLine> out(lines), in(lines);
    uint64_t i = 1;
    run_pingpong(
        state, seat.other_cpu(),
        [&out, &in](const std::atomic<bool> &stop) { ring_lines_pong(out, in, stop); },
        [&]() {
            out[i % lines].value.store(i, std::memory_order_release);
            while (in[i % lines].value.load(std::memory_order_acquire) != i)
                cpu_relax();
            i++;
            return true;
        },
        "");
}

// ---- 1c. The shared-memory ring alone, beside the floor ---------------------

// A record handed back and forth through the two rings of transport/shm, with
// nothing of Foundation above them: the pinger writes a BYTES record of
// range(0) bytes into ring 0 and spins until the answer is in ring 1; the
// ponger reads each record and writes it back. 40 bytes is what an 8-byte
// message takes on the wire (its 32-byte frame header and itself), so
// against BM_cacheline_pingpong this is what the ring's records cost, and
// against fdn-perf over shm what everything above the ring does.

// Each end's buffer: any record the benchmark sends fits.
constexpr uint32_t kShmRecordMax = 256;

// The ponger's loop. A malformed record (only a broken ring could make one)
// ends it with `failed` set, which the pinger's wait checks, so a broken ring
// makes the benchmark fail, not hang.
void shm_pong(fdnb_shm_pair *pair, std::atomic<bool> &failed, const std::atomic<bool> &stop)
{
    alignas(64) uint8_t buf[kShmRecordMax];
    for (;;) {
        int n = fdnb_shm_recv(pair, 1, buf, kShmRecordMax);
        if (n > 0) {
            while (fdnb_shm_send(pair, 1, buf, (uint32_t)n) == -EAGAIN)
                cpu_relax();
            continue;
        }
        if (n < 0) {
            failed.store(true, std::memory_order_release);
            return;
        }
        if (stop.load(std::memory_order_acquire))
            return;
        cpu_relax();
    }
}

// One round trip; false when either end read a malformed record.
inline bool shm_ping(fdnb_shm_pair *pair, const std::atomic<bool> &failed, uint8_t *buf,
                     uint32_t len)
{
    if (fdnb_shm_send(pair, 0, buf, len) < 0)
        return false;
    int n;
    while ((n = fdnb_shm_recv(pair, 0, buf, kShmRecordMax)) == 0) {
        if (failed.load(std::memory_order_relaxed))
            return false;
        cpu_relax();
    }
    return n == (int)len;
}

// The rings, and the express box while it is free (as transport/shm sends
// a message that fits it), or the rings alone.
void shm_pingpong(benchmark::State &state, bool use_box)
{
    auto len = static_cast<uint32_t>(state.range(0));
    if (len > kShmRecordMax)
        return state.SkipWithError("a record over the benchmark's buffers");
    FirstOfTwoCpus seat(state);
    if (!seat.ok())
        return;
    // The transport's default size (twice the 128 KiB it may hold unsent).
    std::unique_ptr<fdnb_shm_pair, void (*)(fdnb_shm_pair *)> pair(
        fdnb_shm_pair_create(256u << 10), fdnb_shm_pair_destroy);
    if (!pair)
        return state.SkipWithError("fdnb_shm_pair_create: out of memory");
    fdnb_shm_pair_use_box(pair.get(), use_box);
    std::atomic<bool> failed{false};
    alignas(64) uint8_t buf[kShmRecordMax] = {};
    run_pingpong(
        state, seat.other_cpu(),
        [&pair, &failed](const std::atomic<bool> &stop) { shm_pong(pair.get(), failed, stop); },
        [&]() { return shm_ping(pair.get(), failed, buf, len); },
        "malformed record or box message");
}

void BM_shm_ring_pingpong(benchmark::State &state)
{
    shm_pingpong(state, false);
}

// The same through the express box (transport/shm_ring.h, "The box"): one
// fixed pair of lines per direction, so against BM_cacheline_ring_pingpong
// /lines:1 this is what the box's words and copies cost.
void BM_shm_box_pingpong(benchmark::State &state)
{
    shm_pingpong(state, true);
}

// ---- 1d. The copy floor: the copies of a large message's round trip ----

// What fdn-perf lat over shm copies from lend_min up, and nothing else: the
// ping crosses by reference (here a number published in a line), the echo
// is copied into shared memory by the ponger (from a buffer of its own that
// it only reads, as the server reads the lent ping) and out of it by the
// pinger. Against fdn-shm at these sizes this is the part of the time that
// is the machine moving bytes between two cores. All buffers start at the
// same page offset: memcpy's speed depends on where the destination lies
// relative to the source, and this is its best case.
struct alignas(64) CopyTurn {
    std::atomic<uint64_t> value{0};
};

struct PageFree {
    void operator()(uint8_t *p) const { std::free(p); }
};
using PageBuffer = std::unique_ptr<uint8_t, PageFree>;

PageBuffer page_buffer(size_t bytes)
{
    size_t rounded = (bytes + 4095) & ~static_cast<size_t>(4095);
    auto *p = static_cast<uint8_t *>(std::aligned_alloc(4096, rounded));
    if (p)
        std::memset(p, 0x5a, rounded);   // faulted in before the clock starts
    return PageBuffer(p);
}

void copy_pong(const uint8_t *echo, uint8_t *shared, size_t bytes, const CopyTurn &sent,
               CopyTurn &answered, const std::atomic<bool> &stop)
{
    for (uint64_t i = 1;;) {
        if (sent.value.load(std::memory_order_acquire) == i) {
            std::memcpy(shared, echo, bytes);
            answered.value.store(i, std::memory_order_release);
            i++;
            continue;
        }
        if (stop.load(std::memory_order_acquire))
            return;
        cpu_relax();
    }
}

// Warm-up by bytes, not round trips: 20000 round trips of 4 MiB would copy
// 160 GB before the clock starts.
constexpr size_t kCopyWarmupBytes = 16u << 20;

void BM_copy_pingpong(benchmark::State &state)
{
    auto bytes = static_cast<size_t>(state.range(0));
    FirstOfTwoCpus seat(state);
    if (!seat.ok())
        return;
    PageBuffer echo = page_buffer(bytes), shared = page_buffer(bytes), got = page_buffer(bytes);
    if (!echo || !shared || !got)
        return state.SkipWithError("aligned_alloc: out of memory");
    CopyTurn sent, answered;
    uint64_t i = 1;
    int warmup = static_cast<int>(std::max<size_t>(16, kCopyWarmupBytes / bytes));
    run_pingpong(
        state, seat.other_cpu(),
        [&](const std::atomic<bool> &stop) {
            copy_pong(echo.get(), shared.get(), bytes, sent, answered, stop);
        },
        [&]() {
            sent.value.store(i, std::memory_order_release);
            while (answered.value.load(std::memory_order_acquire) != i)
                cpu_relax();
            std::memcpy(got.get(), shared.get(), bytes);
            i++;
            return true;
        },
        "", warmup);
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                            static_cast<int64_t>(bytes));
}

// ---- Runtimes ---------------------------------------------------------------

// A started runtime whose worker 0 the calling thread has attached. The
// destructor detaches first (stop refuses while a worker is attached), then
// stops and frees the runtime: no thread or mapping outlives the benchmark.
class AttachedRuntime {
public:
    AttachedRuntime() = default;
    AttachedRuntime(const AttachedRuntime &) = delete;
    AttachedRuntime &operator=(const AttachedRuntime &) = delete;
    ~AttachedRuntime()
    {
        if (home_)
            fdn_worker_detach(home_);
        fdn_runtime_destroy(rt_);
    }

    // Returns true, or marks the benchmark skipped with the failing call.
    bool open(benchmark::State &state, const fdn_runtime_config &cfg)
    {
        int rc = fdn_runtime_create(&cfg, &rt_);
        if (rc < 0)
            return skip_fdn(state, "fdn_runtime_create", rc), false;
        rc = fdn_runtime_start(rt_);
        if (rc < 0)
            return skip_fdn(state, "fdn_runtime_start", rc), false;
        fdn_worker *w = fdn_runtime_worker(rt_, 0);
        rc = fdn_worker_attach(w);
        if (rc < 0)
            return skip_fdn(state, "fdn_worker_attach", rc), false;
        home_ = w;
        return true;
    }

    fdn_worker *home() const { return home_; }
    fdn_worker *worker(int i) const { return fdn_runtime_worker(rt_, i); }

private:
    fdn_runtime *rt_ = nullptr;
    fdn_worker *home_ = nullptr;
};

// Configuration of a runtime whose only worker the benchmark thread drives.
fdn_runtime_config one_app_worker()
{
    fdn_runtime_config cfg{};
    cfg.workers = 1;
    cfg.app_driven_workers = 1;
    return cfg;
}

std::string worker_cpus_label(const AttachedRuntime &rt, int n)
{
    std::string s;
    for (int i = 0; i < n; i++)
        s += (i ? "," : "") + std::to_string(fdn_worker_cpu(rt.worker(i)));
    return "cpus " + s;
}

// ---- 2. Worker to worker round trip ----------------------------------------

// A task that travels worker 0 -> worker 1 -> worker 0.
struct Bounce {
    fdn_task task;
    fdn_worker *home = nullptr; // worker 0, driven by the benchmark thread
    bool back = false;          // set on worker 0, so only that thread touches it
};

int bounce_fn(fdn_worker *w, fdn_task *t)
{
    Bounce *b = static_cast<Bounce *>(t->arg);
    if (w == b->home) {
        b->back = true;
        return FDN_TASK_DONE;
    }
    // On worker 1: send the task home through worker 1's SPSC ring to worker
    // 0. Re-posting a task from its own function is the usual reply pattern:
    // the worker does not touch a task after its function returns DONE.
    // A full ring cannot happen with one task in flight; yielding retries.
    return fdn_worker_post(b->home, t) == 0 ? FDN_TASK_DONE : FDN_TASK_YIELD;
}

// Posts the task to worker 1 and drives worker 0 until it comes back.
// Returns 0 or the post's error (-ESHUTDOWN: nothing would come back).
inline int round_trip(Bounce &b, fdn_worker *away)
{
    b.back = false;
    int rc;
    while ((rc = fdn_worker_post(away, &b.task)) == -EAGAIN)
        fdn_worker_progress(b.home);
    if (rc < 0)
        return rc;
    while (!b.back)
        fdn_worker_progress(b.home);
    return 0;
}

void BM_worker_msg_roundtrip(benchmark::State &state)
{
    Bounce bounce;
    fdn_task_init(&bounce.task, bounce_fn, &bounce, FDN_PRIO_DEFAULT);
    fdn_runtime_config cfg{};
    cfg.workers = 2;
    cfg.app_driven_workers = 1;
    cfg.idle = FDN_IDLE_BUSY_POLL;
    AttachedRuntime rt;
    if (!rt.open(state, cfg))
        return;
    bounce.home = rt.home();
    fdn_worker *away = rt.worker(1);
    state.SetLabel(worker_cpus_label(rt, 2));

    int rc = 0;
    for (int i = 0; rc == 0 && i < kWarmupRoundTrips; i++)
        rc = round_trip(bounce, away);
    LoopClock clock;
    for (auto _ : state) {
        if (rc < 0 || (rc = round_trip(bounce, away)) < 0) {
            skip_fdn(state, "fdn_worker_post", rc);
            break;
        }
    }
    set_one_way_ns(state, clock.elapsed_ns());
}

// ---- 3, 4. Ring throughput --------------------------------------------------

constexpr uint32_t kRingCapacity = 1024;
constexpr unsigned kMaxBatch = 128;
constexpr int kWarmupItems = 1 << 17;

struct SpscOps {
    using Ring = fdnb_spsc;
    static Ring *create(uint32_t capacity) { return fdnb_spsc_create(capacity); }
    static void destroy(Ring *r) { fdnb_spsc_destroy(r); }
    static unsigned enqueue(Ring *r, void *const *objs, unsigned n)
    {
        return fdnb_spsc_enqueue(r, objs, n);
    }
    static unsigned dequeue(Ring *r, void **objs, unsigned n)
    {
        return fdnb_spsc_dequeue(r, objs, n);
    }
};

struct MpscOps {
    using Ring = fdnb_mpsc;
    static Ring *create(uint32_t capacity) { return fdnb_mpsc_create(capacity); }
    static void destroy(Ring *r) { fdnb_mpsc_destroy(r); }
    static unsigned enqueue(Ring *r, void *const *objs, unsigned n)
    {
        return fdnb_mpsc_enqueue(r, objs, n);
    }
    static unsigned dequeue(Ring *r, void **objs, unsigned n)
    {
        return fdnb_mpsc_dequeue(r, objs, n);
    }
};

template <class Ops>
using RingPtr = std::unique_ptr<typename Ops::Ring, void (*)(typename Ops::Ring *)>;

// Enqueues bursts of `batch` until stopped. A burst the ring only partly
// accepts is finished before the next begins, as a real sender would do.
template <class Ops>
void produce(typename Ops::Ring *ring, unsigned batch, const std::atomic<bool> &stop)
{
    static int token; // the rings carry opaque pointers: any non-null one will do
    std::array<void *, kMaxBatch> objs;
    objs.fill(&token);
    unsigned sent = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        unsigned k = Ops::enqueue(ring, objs.data(), batch - sent);
        sent += k;
        if (sent == batch)
            sent = 0;
        else if (k == 0)
            cpu_relax();
    }
}

// Takes exactly n items, in bursts of at most n.
template <class Ops>
inline void consume(typename Ops::Ring *ring, void **objs, unsigned n)
{
    for (unsigned got = 0; got < n;) {
        unsigned k = Ops::dequeue(ring, objs + got, n - got);
        if (k == 0)
            cpu_relax();
        got += k;
    }
}

// One iteration = one burst of `batch` items dequeued by the benchmark thread
// (CPU A) from producers pinned on the next CPUs; items_per_second is the
// figure of merit.
template <class Ops>
void ring_throughput(benchmark::State &state, unsigned batch, size_t producers)
{
    std::vector<int> cpus;
    if (!take_cpus(state, 1 + producers, &cpus))
        return;
    RingPtr<Ops> ring(Ops::create(kRingCapacity), Ops::destroy);
    if (!ring) {
        state.SkipWithError("cannot allocate the ring");
        return;
    }
    PinGuard pin(cpus[0]);
    if (pin.rc() < 0)
        return skip_fdn(state, "fdn_pin_current_thread", pin.rc());
    Crew crew; // destroyed (stopped, joined) before the ring
    for (size_t i = 0; i < producers; i++) {
        typename Ops::Ring *r = ring.get();
        int rc = crew.spawn(cpus[1 + i], [r, batch](const std::atomic<bool> &stop) {
            produce<Ops>(r, batch, stop);
        });
        if (rc < 0)
            return skip_fdn(state, "fdn_pin_current_thread (producer)", rc);
    }

    std::array<void *, kMaxBatch> objs;
    for (int got = 0; got < kWarmupItems; got += static_cast<int>(batch))
        consume<Ops>(ring.get(), objs.data(), batch);
    for (auto _ : state)
        consume<Ops>(ring.get(), objs.data(), batch);
    state.SetItemsProcessed(state.iterations() * batch);
}

void BM_spsc_ring_throughput(benchmark::State &state)
{
    ring_throughput<SpscOps>(state, static_cast<unsigned>(state.range(0)), 1);
}

void BM_mpsc_ring_throughput(benchmark::State &state)
{
    ring_throughput<MpscOps>(state, static_cast<unsigned>(state.range(0)),
                             static_cast<size_t>(state.range(1)));
}

// ---- 5, 6. Buffer pools ----------------------------------------------------

// A pool owned by the constructing thread, destroyed on it. Remote frees are
// reclaimed first, so destroy only refuses if a buffer was lost on the way.
class OwnedPool {
public:
    OwnedPool() : rc_(fdn_pool_create(nullptr, &pool_)) {}
    OwnedPool(const OwnedPool &) = delete;
    OwnedPool &operator=(const OwnedPool &) = delete;
    ~OwnedPool() { destroy(); }
    int rc() const { return rc_; }
    fdn_pool *get() const { return pool_; }

    // Destroys the pool at the end of a benchmark that ran to completion: a
    // pool that still counts buffers in use fails the run rather than being
    // leaked quietly (its memory is mapped, so LeakSanitizer would not see it).
    void close(benchmark::State &state)
    {
        int rc = destroy();
        if (rc < 0 && !state.error_occurred())
            skip_fdn(state, "fdn_pool_destroy", rc);
    }

private:
    int destroy()
    {
        if (!pool_)
            return 0;
        fdnb_pool_reclaim(pool_);
        int rc = fdn_pool_destroy(pool_);
        pool_ = nullptr;
        return rc;
    }

    fdn_pool *pool_ = nullptr;
    int rc_;
};

// Which path of the pool a payload of len bytes takes: the payload capacity
// of its size class, or a mapping of its own (over the largest class).
std::string pool_path_label(fdn_pool *pool, size_t len)
{
    fdn_msg *m = nullptr;
    if (fdn_msg_alloc(pool, len, &m) < 0)
        return "";
    std::string label = m->class_index < FDN_POOL_NUM_CLASSES
                            ? "class " + std::to_string(FDN_POOL_CLASS_PAYLOAD(m->class_index)) + " B"
                            : "own mapping " + std::to_string(m->mapped_bytes) + " B";
    fdn_msg_free(m);
    return label;
}

// Pins the benchmark thread to the first allowed CPU, for single-threaded
// benchmarks. Returns false (benchmark skipped) when that is impossible.
bool pin_one(benchmark::State &state, std::unique_ptr<PinGuard> *pin)
{
    std::vector<int> cpus;
    if (!take_cpus(state, 1, &cpus))
        return false;
    pin->reset(new PinGuard(cpus[0]));
    if ((*pin)->rc() < 0)
        return skip_fdn(state, "fdn_pin_current_thread", (*pin)->rc()), false;
    return true;
}

// The "cpus ..." label of take_cpus() followed by more notes.
void add_label(benchmark::State &state, const std::string &note)
{
    state.SetLabel("cpus " + std::to_string(g_cpus.at(0)) + "; " + note);
}

void BM_pool_alloc_free(benchmark::State &state)
{
    const size_t len = static_cast<size_t>(state.range(0));
    std::unique_ptr<PinGuard> pin;
    if (!pin_one(state, &pin))
        return;
    OwnedPool pool;
    if (pool.rc() < 0)
        return skip_fdn(state, "fdn_pool_create", pool.rc());
    // Also the warm-up: the class's first slab is mapped here, not timed.
    add_label(state, pool_path_label(pool.get(), len));

    for (auto _ : state) {
        fdn_msg *m;
        int rc = fdn_msg_alloc(pool.get(), len, &m);
        if (rc < 0) {
            skip_fdn(state, "fdn_msg_alloc", rc);
            break;
        }
        benchmark::DoNotOptimize(m);
        fdn_msg_free(m);
    }
    state.SetItemsProcessed(state.iterations());
    pool.close(state);
}

constexpr size_t kBatchBuffers = 64;
constexpr size_t kBatchPayload = 64;

// Allocates n buffers into msgs; on failure frees what it got and returns rc.
int alloc_batch(fdn_pool *pool, fdn_msg **msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = fdn_msg_alloc(pool, kBatchPayload, &msgs[i]);
        if (rc < 0) {
            while (i--)
                fdn_msg_free(msgs[i]);
            return rc;
        }
    }
    return 0;
}

// 64 buffers held at once: the free list is walked 64 deep both ways, as
// when a worker fills a batch of sends before any completes.
void BM_pool_alloc_free_batch(benchmark::State &state)
{
    std::unique_ptr<PinGuard> pin;
    if (!pin_one(state, &pin))
        return;
    OwnedPool pool;
    if (pool.rc() < 0)
        return skip_fdn(state, "fdn_pool_create", pool.rc());
    std::array<fdn_msg *, kBatchBuffers> msgs;
    int rc = alloc_batch(pool.get(), msgs.data(), msgs.size()); // warm-up: carve the slab
    for (size_t i = 0; rc == 0 && i < msgs.size(); i++)
        fdn_msg_free(msgs[i]);

    for (auto _ : state) {
        if (rc < 0 || (rc = alloc_batch(pool.get(), msgs.data(), msgs.size())) < 0) {
            skip_fdn(state, "fdn_msg_alloc", rc);
            break;
        }
        benchmark::DoNotOptimize(msgs.data());
        for (fdn_msg *m : msgs)
            fdn_msg_free(m);
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kBatchBuffers));
    add_label(state, std::to_string(kBatchBuffers) + " x " + std::to_string(kBatchPayload) + " B");
    pool.close(state);
}

// The other side of BM_pool_remote_free: frees whatever the ring brings until
// stopped, then drains the ring so that every buffer is back in the pool.
void free_from_ring(fdnb_spsc *ring, const std::atomic<bool> &stop)
{
    std::array<void *, 32> objs;
    for (;;) {
        unsigned k = fdnb_spsc_dequeue(ring, objs.data(), static_cast<unsigned>(objs.size()));
        for (unsigned i = 0; i < k; i++)
            fdn_msg_free(static_cast<fdn_msg *>(objs[i]));
        if (k)
            continue;
        // Acquire: the owner enqueued everything before it set the flag.
        if (stop.load(std::memory_order_acquire)) {
            while ((k = fdnb_spsc_dequeue(ring, objs.data(), static_cast<unsigned>(objs.size()))))
                for (unsigned i = 0; i < k; i++)
                    fdn_msg_free(static_cast<fdn_msg *>(objs[i]));
            return;
        }
        cpu_relax();
    }
}

// Allocates one buffer and hands it to the freeing thread. The allocation
// takes back the remotely freed buffers whenever its free list runs dry.
inline int alloc_and_hand_over(fdn_pool *pool, fdnb_spsc *ring)
{
    fdn_msg *m;
    int rc = fdn_msg_alloc(pool, kBatchPayload, &m);
    if (rc < 0)
        return rc;
    void *obj = m;
    while (fdnb_spsc_enqueue(ring, &obj, 1) == 0)
        cpu_relax();
    return 0;
}

// One iteration = one buffer allocated on the owner (CPU A), freed on CPU B
// (the Treiber-stack push), and reclaimed by the owner's later allocations.
void BM_pool_remote_free(benchmark::State &state)
{
    FirstOfTwoCpus seat(state);
    if (!seat.ok())
        return;
    OwnedPool pool; // destroyed after the crew has freed every buffer
    if (pool.rc() < 0)
        return skip_fdn(state, "fdn_pool_create", pool.rc());
    RingPtr<SpscOps> ring(fdnb_spsc_create(kRingCapacity), fdnb_spsc_destroy);
    if (!ring) {
        state.SkipWithError("cannot allocate the ring");
        return;
    }
    Crew crew;
    fdnb_spsc *r = ring.get();
    int rc = crew.spawn(seat.other_cpu(),
                        [r](const std::atomic<bool> &stop) { free_from_ring(r, stop); });
    if (rc < 0)
        return skip_fdn(state, "fdn_pin_current_thread (freeing thread)", rc);

    for (int i = 0; rc == 0 && i < kWarmupItems; i++)
        rc = alloc_and_hand_over(pool.get(), r);
    for (auto _ : state) {
        if (rc < 0 || (rc = alloc_and_hand_over(pool.get(), r)) < 0) {
            skip_fdn(state, "fdn_msg_alloc", rc);
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
    crew.stop(); // every buffer is back on the pool's remote stack after this
    pool.close(state);
}

// ---- 7, 8. Timers -----------------------------------------------------------

constexpr uint64_t kTimerSeed = 20240611;
constexpr size_t kProbeDeadlines = 4096; // power of two: cycled with a mask

int never_runs(fdn_worker *, fdn_task *) { return FDN_TASK_DONE; }

// Deadlines (or delays) spread over one hour of nanoseconds, seeded so that
// every run builds the same heap.
std::vector<uint64_t> random_times(size_t n, uint64_t base, std::mt19937_64 &rng)
{
    std::uniform_int_distribution<uint64_t> spread(0, UINT64_C(3600000000000));
    std::vector<uint64_t> times(n);
    for (uint64_t &t : times)
        t = base + spread(rng);
    return times;
}

void init_timers(std::vector<fdn_timer> &timers)
{
    for (fdn_timer &t : timers)
        fdn_timer_init(&t, never_runs, nullptr, FDN_PRIO_DEFAULT);
}

using HeapPtr = std::unique_ptr<fdnb_timer_heap, void (*)(fdnb_timer_heap *)>;

// Arm + cancel of one timer, its deadline drawn from the same distribution as
// the `armed` timers already in the heap: the internal heap alone.
void BM_timer_arm_cancel(benchmark::State &state)
{
    const size_t armed = static_cast<size_t>(state.range(0));
    std::unique_ptr<PinGuard> pin;
    if (!pin_one(state, &pin))
        return;
    std::mt19937_64 rng(kTimerSeed);
    std::vector<fdn_timer> timers(armed); // before the heap: outlives it
    init_timers(timers);
    HeapPtr heap(fdnb_timer_heap_create(), fdnb_timer_heap_destroy);
    if (!heap) {
        state.SkipWithError("cannot allocate the timer heap");
        return;
    }
    std::vector<uint64_t> deadlines = random_times(armed, 0, rng);
    for (size_t i = 0; i < armed; i++) {
        timers[i].deadline_ns = deadlines[i];
        if (fdnb_timer_heap_insert(heap.get(), &timers[i]) < 0) {
            state.SkipWithError("fdn__timer_heap_insert: out of memory");
            return;
        }
    }
    std::vector<uint64_t> probes = random_times(kProbeDeadlines, 0, rng);
    fdn_timer probe;
    fdn_timer_init(&probe, never_runs, nullptr, FDN_PRIO_DEFAULT);

    size_t i = 0;
    for (auto _ : state) {
        probe.deadline_ns = probes[i++ & (kProbeDeadlines - 1)];
        if (fdnb_timer_heap_insert(heap.get(), &probe) < 0) {
            state.SkipWithError("fdn__timer_heap_insert: out of memory");
            break;
        }
        fdnb_timer_heap_remove(heap.get(), &probe);
    }
    state.SetItemsProcessed(state.iterations());
}

// The same through the public API on an attached worker: adds the owner
// check and the clock read of fdn_timer_arm.
void BM_timer_arm_cancel_api(benchmark::State &state)
{
    const size_t armed = static_cast<size_t>(state.range(0));
    std::mt19937_64 rng(kTimerSeed);
    std::vector<fdn_timer> timers(armed); // before the runtime: its stop disarms them
    init_timers(timers);
    AttachedRuntime rt;
    if (!rt.open(state, one_app_worker()))
        return;
    fdn_worker *w = rt.home();
    state.SetLabel(worker_cpus_label(rt, 1));
    // At least an hour away: none can fire while the benchmark runs.
    const uint64_t hour = UINT64_C(3600000000000);
    std::vector<uint64_t> delays = random_times(armed, hour, rng);
    for (size_t i = 0; i < armed; i++) {
        int rc = fdn_timer_arm(w, &timers[i], delays[i]);
        if (rc < 0)
            return skip_fdn(state, "fdn_timer_arm", rc);
    }
    std::vector<uint64_t> probes = random_times(kProbeDeadlines, hour, rng);
    fdn_timer probe;
    fdn_timer_init(&probe, never_runs, nullptr, FDN_PRIO_DEFAULT);

    size_t i = 0;
    for (auto _ : state) {
        int rc = fdn_timer_arm(w, &probe, probes[i++ & (kProbeDeadlines - 1)]);
        if (rc == 0)
            rc = fdn_timer_cancel(w, &probe);
        if (rc < 0) {
            skip_fdn(state, "fdn_timer_arm/cancel", rc);
            break;
        }
    }
    state.SetItemsProcessed(state.iterations());
}

// N timers inserted in a seeded random order with deadlines in the past, then
// all popped: only the popping is timed (manual time), reported per timer.
void BM_timer_expire(benchmark::State &state)
{
    const size_t n = static_cast<size_t>(state.range(0));
    std::unique_ptr<PinGuard> pin;
    if (!pin_one(state, &pin))
        return;
    std::mt19937_64 rng(kTimerSeed);
    std::vector<fdn_timer> timers(n);
    init_timers(timers);
    HeapPtr heap(fdnb_timer_heap_create(), fdnb_timer_heap_destroy);
    if (!heap) {
        state.SkipWithError("cannot allocate the timer heap");
        return;
    }
    std::vector<uint64_t> deadlines = random_times(n, 0, rng);
    const uint64_t now = UINT64_MAX; // every deadline is past

    double popped_ns = 0;
    for (auto _ : state) {
        for (size_t i = 0; i < n; i++) {
            timers[i].deadline_ns = deadlines[i];
            if (fdnb_timer_heap_insert(heap.get(), &timers[i]) < 0) {
                state.SkipWithError("fdn__timer_heap_insert: out of memory");
                return;
            }
        }
        auto start = std::chrono::steady_clock::now();
        size_t popped = 0;
        while (fdnb_timer_heap_pop_expired(heap.get(), now))
            popped++;
        auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
        state.SetIterationTime(took.count());
        popped_ns += took.count() * 1e9;
        if (popped != n) {
            state.SkipWithError("pop_expired returned fewer timers than were inserted");
            break;
        }
    }
    state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(n));
    state.counters["ns_per_timer"] =
        benchmark::Counter(popped_ns / static_cast<double>(n), benchmark::Counter::kAvgIterations);
}

// ---- 9. Local dispatch --------------------------------------------------------

int count_run(fdn_worker *, fdn_task *t)
{
    ++*static_cast<uint64_t *>(t->arg);
    return FDN_TASK_DONE;
}

// fdn_worker_schedule + one fdn_worker_progress pass that runs the task: the
// cost of dispatching a task on the worker that owns it.
void BM_worker_schedule_run(benchmark::State &state)
{
    uint64_t runs = 0;
    fdn_task task;
    fdn_task_init(&task, count_run, &runs, FDN_PRIO_DEFAULT);
    AttachedRuntime rt;
    if (!rt.open(state, one_app_worker()))
        return;
    fdn_worker *w = rt.home();
    state.SetLabel(worker_cpus_label(rt, 1));

    for (int i = 0; i < kWarmupRoundTrips; i++) {
        fdn_worker_schedule(w, &task);
        fdn_worker_progress(w);
    }
    for (auto _ : state) {
        fdn_worker_schedule(w, &task);
        fdn_worker_progress(w);
    }
    if (runs != static_cast<uint64_t>(state.iterations()) + kWarmupRoundTrips)
        state.SkipWithError("a scheduled task did not run in the next progress pass");
    state.SetItemsProcessed(state.iterations());
}

// ---- 10. A message through two nodes on one worker --------------------------

// Two nodes on the benchmark thread's worker, connected over a transport,
// play ping-pong on the coordination channel: each iteration is one round
// trip, the ping and its echo each going through everything a message goes
// through between two processes (fdn_send, the frame scheduler, the
// transport, frame decoding, reassembly, delivery at the channel's
// priority, the handler) except the wait for the other core. So one_way_ns
// is the software cost of one message, the part of fdn-perf's latency that
// does not depend on where the machine placed the two cores.
struct NodePair {
    fdn_node *server = nullptr, *client = nullptr;
    fdn_peer *peer = nullptr;      // the client's view of the server
    fdn_peer *accepted = nullptr;  // the server's view of the client
    uint64_t echoes = 0;           // echoes the client received (ping-pong)
    uint64_t received = 0;         // messages the server received (stream)
    ~NodePair();
};

void on_ping(fdn_peer *peer, int channel, fdn_msg *m, void *)
{
    if (fdn_send(peer, channel, m) == -EAGAIN)
        fdn_msg_free(m);
}

void on_echo_count(fdn_peer *, int, fdn_msg *m, void *arg)
{
    ++static_cast<NodePair *>(arg)->echoes;
    fdn_msg_free(m);
}

void on_server_peer_up(fdn_peer *peer, void *arg)
{
    static_cast<NodePair *>(arg)->accepted = peer;
}

// Which channel the two nodes use, and the handler each sets on it (NULL:
// none); the handlers' arg is the NodePair.
struct PairSetup {
    int channel;
    fdn_recv_fn server_handler, client_handler;
};

// Creates the two nodes on w, connected over shm or TCP, and waits until
// every lane is up. Skips the benchmark and returns false when that fails.

bool open_pair(benchmark::State &state, fdn_worker *w, bool tcp, const PairSetup &setup,
               NodePair &pair)
{
    static const uint8_t secret[] = "fdn-bench node ping-pong secret";
    fdn_node_config cfg{};
    cfg.worker = w;
    cfg.secret = secret;
    cfg.secret_len = sizeof secret - 1;
    cfg.no_same_host_shm = true;
    int rc = fdn_node_create(&cfg, &pair.server);
    if (rc == 0)
        rc = fdn_node_create(&cfg, &pair.client);
    if (rc < 0)
        return skip_fdn(state, "fdn_node_create", rc), false;
    fdn_node_events ev{};
    ev.peer_up = on_server_peer_up;
    ev.arg = &pair;
    fdn_node_set_events(pair.server, &ev);
    if (setup.server_handler)
        fdn_channel_set_handler(pair.server, setup.channel, setup.server_handler, &pair);
    if (setup.client_handler)
        fdn_channel_set_handler(pair.client, setup.channel, setup.client_handler, &pair);
    char addr[128];
    rc = fdn_node_listen(pair.server, tcp ? "tcp://127.0.0.1:0" : "shm://@");
    if (rc >= 0)
        rc = fdn_node_listen_addr(pair.server, rc, addr, sizeof addr);
    if (rc >= 0)
        rc = fdn_node_connect(pair.client, addr, &pair.peer);
    if (rc < 0)
        return skip_fdn(state, "listen or connect", rc), false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    auto up = [&] {
        return pair.peer && pair.accepted && fdn_peer_lanes_up(pair.peer) &&
               fdn_peer_lanes_up(pair.accepted);
    };
    while (!up() && std::chrono::steady_clock::now() < deadline)
        fdn_worker_progress(w);
    if (!up())
        state.SkipWithError("the two nodes did not connect");
    return up();
}

NodePair::~NodePair()
{
    fdn_node_destroy(client);
    fdn_node_destroy(server);
}

// A runtime with one application-driven worker, and the two nodes on it
// connected over the transport the benchmark's first argument names (0 shm,
// 1 TCP); the second argument is the message size. Members go in reverse:
// the nodes before the runtime.
struct OneWorkerPair {
    AttachedRuntime rt;
    fdn_worker *w = nullptr;
    NodePair pair;
    size_t size = 0;

    bool open(benchmark::State &state, const PairSetup &setup)
    {
        size = static_cast<size_t>(state.range(1));
        state.SetLabel(std::string(state.range(0) ? "tcp" : "shm") + ", " +
                       std::to_string(size) + " B, one worker");
        if (!rt.open(state, one_app_worker()))
            return false;
        w = rt.home();
        return open_pair(state, w, state.range(0), setup, pair);
    }

    // A message of size bytes from the worker's pool, filled; NULL when the
    // pool has none.
    fdn_msg *message() const
    {
        fdn_msg *m;
        if (fdn_msg_alloc(fdn_worker_pool(w), size, &m) < 0)
            return nullptr;
        std::memset(fdn_msg_data(m), 0x5a, size);
        return m;
    }

    // Makes progress until done() holds; false on an error or after
    // max_passes passes (a lost message fails instead of hanging).
    template <class Done> bool progress_until(Done done, long max_passes) const
    {
        for (long passes = 0; !done(); passes++)
            if (passes > max_passes || fdn_worker_progress(w) < 0)
                return false;
        return true;
    }
};

void BM_node_pingpong_one_worker(benchmark::State &state)
{
    OneWorkerPair one;
    if (!one.open(state, {FDN_CHANNEL_COORDINATION, on_ping, on_echo_count}))
        return;
    NodePair &pair = one.pair;
    auto round_trip = [&]() {
        uint64_t want = pair.echoes + 1;
        fdn_msg *m = one.message();
        if (!m)
            return false;
        if (fdn_send(pair.peer, FDN_CHANNEL_COORDINATION, m) < 0)
            return false;
        return one.progress_until([&] { return pair.echoes >= want; }, 1000000);
    };
    bool ok = true;
    for (int i = 0; ok && i < kWarmupRoundTrips; i++)
        ok = round_trip();
    if (ok) {
        LoopClock clock;
        for (auto _ : state)
            if (!round_trip()) {
                ok = false;
                break;
            }
        set_one_way_ns(state, clock.elapsed_ns());
    }
    if (!ok)
        state.SkipWithError("a ping was refused or its echo never came");
}

// ---- 11. A stream through two nodes on one worker ---------------------------

// The same two nodes; the client streams messages on the data channel (a
// reliable channel with a credit window) and the server's handler counts and
// frees them. Each iteration sends one message; when the channel is full
// (-EAGAIN) the worker makes progress until it takes it. The clock stops
// once the server has received every message sent. So msg_ns is what one
// message of a stream costs the sender and the receiver together, the
// software part of fdn-perf bw's rate without the other core.
void on_stream_count(fdn_peer *, int, fdn_msg *m, void *arg)
{
    ++static_cast<NodePair *>(arg)->received;
    fdn_msg_free(m);
}

void BM_node_stream_one_worker(benchmark::State &state)
{
    OneWorkerPair one;
    if (!one.open(state, {FDN_CHANNEL_DATA, on_stream_count, nullptr}))
        return;
    fdn_worker *w = one.w;
    NodePair &pair = one.pair;
    uint64_t sent = 0;
    auto send_one = [&]() {
        fdn_msg *m = one.message();
        if (!m)
            return false;
        int rc;
        for (int passes = 0; (rc = fdn_send(pair.peer, FDN_CHANNEL_DATA, m)) == -EAGAIN; passes++)
            if (passes > 1000000 || fdn_worker_progress(w) < 0)
                break;
        if (rc < 0) {
            fdn_msg_free(m);
            return false;
        }
        sent++;
        return true;
    };
    auto drain = [&]() {
        return one.progress_until([&] { return pair.received >= sent; }, 10000000);
    };
    bool ok = true;
    for (int i = 0; ok && i < kWarmupRoundTrips; i++)
        ok = send_one();
    ok = ok && drain();
    if (ok) {
        LoopClock clock;
        for (auto _ : state)
            if (!send_one()) {
                ok = false;
                break;
            }
        ok = ok && drain();
        state.counters["msg_ns"] =
            benchmark::Counter(clock.elapsed_ns(), benchmark::Counter::kAvgIterations);
    }
    state.SetItemsProcessed(state.iterations());
    if (!ok)
        state.SkipWithError("a message was refused or never arrived");
}

} // namespace

// Multi-threaded benchmarks are timed in real time: the helper threads' work
// is invisible to the main thread's CPU clock. The others use it too, so that
// every ns/op and items/s in the report means the same thing.
BENCHMARK(BM_cacheline_pingpong)->UseRealTime();
BENCHMARK(BM_cacheline_ring_pingpong)->ArgName("lines")->Arg(1)->Arg(256)->UseRealTime();
BENCHMARK(BM_shm_ring_pingpong)->ArgName("bytes")->Arg(40)->UseRealTime();
BENCHMARK(BM_shm_box_pingpong)->ArgName("bytes")->Arg(40)->UseRealTime();
// bench/compare.py's default sizes from 512 B up (it runs the floor at those).
BENCHMARK(BM_copy_pingpong)
    ->ArgName("bytes")
    ->Arg(512)
    ->Arg(4 << 10)
    ->Arg(64 << 10)
    ->Arg(1 << 20)
    ->Arg(4 << 20)
    ->UseRealTime();
BENCHMARK(BM_worker_msg_roundtrip)->UseRealTime();
BENCHMARK(BM_spsc_ring_throughput)
    ->ArgName("batch")
    ->Arg(1)
    ->Arg(8)
    ->Arg(32)
    ->Arg(128)
    ->UseRealTime();
BENCHMARK(BM_mpsc_ring_throughput)
    ->ArgNames({"batch", "producers"})
    ->Args({1, 1})
    ->Args({32, 1})
    ->Args({1, 2})
    ->Args({32, 2})
    ->UseRealTime();
BENCHMARK(BM_pool_alloc_free)
    ->ArgName("bytes")
    ->Arg(64)
    ->Arg(1500)
    ->Arg(16384)
    ->Arg(1 << 20)
    ->Arg(4 << 20)
    ->Arg(8 << 20)
    ->UseRealTime();
BENCHMARK(BM_pool_alloc_free_batch)->UseRealTime();
BENCHMARK(BM_pool_remote_free)->UseRealTime();
BENCHMARK(BM_timer_arm_cancel)->ArgName("armed")->Arg(0)->Arg(1000)->Arg(100000)->UseRealTime();
BENCHMARK(BM_timer_arm_cancel_api)->ArgName("armed")->Arg(0)->Arg(1000)->Arg(100000)->UseRealTime();
BENCHMARK(BM_timer_expire)->ArgName("timers")->Arg(1000)->Arg(100000)->UseManualTime();
BENCHMARK(BM_worker_schedule_run)->UseRealTime();
BENCHMARK(BM_node_pingpong_one_worker)
    ->ArgNames({"tcp", "bytes"})
    ->Args({0, 8})
    ->Args({0, 64})
    ->Args({1, 8})
    ->UseRealTime();
BENCHMARK(BM_node_stream_one_worker)
    ->ArgNames({"tcp", "bytes"})
    ->Args({0, 64})
    ->Args({0, 1024})
    ->Args({1, 64})
    ->UseRealTime();

// hwloc's PCI plugin (loaded with the host topology by every runtime) keeps
// libpciaccess allocations reachable only from that library's globals; hwloc
// unloads the plugin with the last topology, and LeakSanitizer then reports
// them from an "<unknown module>". Keeping the library resident keeps them
// reachable, as tests/numa does, so a leak report under ASan is a real one.
static void keep_pci_library_resident()
{
    void *lib = dlopen("libpciaccess.so.0", RTLD_NOW | RTLD_NODELETE);
    if (lib)
        dlclose(lib);
}

int main(int argc, char **argv)
{
    keep_pci_library_resident();
    g_cpus = read_allowed_cpus();
    benchmark::AddCustomContext("allowed_cpus", cpu_list(g_cpus));
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv))
        return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
