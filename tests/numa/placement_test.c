/* Worker placement on synthetic and recorded machines: every policy, SMT
 * siblings, restricted CPU sets and every error code. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>

#include <fdn/topology.h>

#include "test.h"

#define MAX_WORKERS 128

/* "pack:2 numa:2 core:8 pu:2": CPU i is on core i/2, NUMA node i/16 and
 * package i/32; the two PUs of a core are consecutive. */
#define DUAL_SOCKET "pack:2 numa:2 core:8 pu:2"

static fdn_topology *load_synthetic(const char *description)
{
    fdn_topology *topo = NULL;
    CHECK_OK(fdn_topology_load_synthetic(description, &topo));
    return topo;
}

static fdn_topology *load_data_xml(const char *name)
{
    const char *dir = getenv("FDN_TEST_DATA");
    if (!dir)
        SKIP("FDN_TEST_DATA is not set; run through meson test");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    fdn_topology *topo = NULL;
    CHECK_OK(fdn_topology_load_xml(path, &topo));
    return topo;
}

static fdn_cpu_info cpu_by_os_index(const fdn_topology *topo, int os_index)
{
    for (int i = 0; i < fdn_topology_num_cpus(topo); i++) {
        fdn_cpu_info cpu;
        CHECK_OK(fdn_topology_cpu(topo, i, &cpu));
        if (cpu.os_index == os_index)
            return cpu;
    }
    fprintf(stderr, "cpu %d is not in the topology\n", os_index);
    abort();
}

/* The guarantees every successful placement gives: allowed CPUs only, no CPU
 * twice, core and node reported as the topology says, and at most one worker
 * per core unless SMT was asked for. */
static void check_placement_invariants(const fdn_topology *topo, const fdn_placement *p, int n,
                                       bool use_smt)
{
    for (int i = 0; i < n; i++) {
        fdn_cpu_info cpu = cpu_by_os_index(topo, p[i].cpu);
        CHECK(cpu.allowed);
        CHECK_EQ(p[i].core, cpu.core);
        CHECK_EQ(p[i].numa_node, cpu.numa_node);
        for (int j = 0; j < i; j++) {
            CHECK(p[j].cpu != p[i].cpu);
            if (!use_smt)
                CHECK(p[j].core != p[i].core);
        }
    }
}

static int place(const fdn_topology *topo, fdn_placement_config cfg, fdn_placement *out)
{
    int n = fdn_placement_compute(topo, &cfg, out, MAX_WORKERS);
    if (n >= 0)
        check_placement_invariants(topo, out, n, cfg.use_smt);
    return n;
}

static void test_compact_fills_node_zero_first(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    fdn_placement p[MAX_WORKERS];
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 8}, p), 8);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(p[i].cpu, 2 * i); /* first PU of cores 0..7 */
        CHECK_EQ(p[i].core, i);
        CHECK_EQ(p[i].numa_node, 0);
    }
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 32}, p), 32);
    for (int i = 0; i < 32; i++) {
        CHECK_EQ(p[i].numa_node, i / 8);
        CHECK_EQ(p[i].cpu % 2, 0);
    }
    fdn_topology_destroy(topo);
}

static void test_spread_alternates_nodes_and_packages(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    fdn_placement p[MAX_WORKERS];
    CHECK_EQ(place(topo, (fdn_placement_config){.policy = FDN_PLACE_SPREAD, .workers = 8}, p),
             8);
    /* Nodes 0,1 are on package 0 and 2,3 on package 1: alternate both. */
    static const int nodes[] = {0, 2, 1, 3, 0, 2, 1, 3};
    static const int cpus[] = {0, 32, 16, 48, 2, 34, 18, 50};
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(p[i].numa_node, nodes[i]);
        CHECK_EQ(p[i].cpu, cpus[i]);
    }
    for (int i = 1; i < 8; i++)
        CHECK(p[i].numa_node != p[i - 1].numa_node);
    CHECK_EQ(place(topo, (fdn_placement_config){.policy = FDN_PLACE_SPREAD}, p), 32);
    fdn_topology_destroy(topo);
}

static void test_zero_workers_means_one_per_core(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    fdn_placement p[MAX_WORKERS];
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 0}, p), 32);
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 0, .use_smt = true}, p), 32);
    for (int i = 0; i < 32; i++)
        CHECK_EQ(cpu_by_os_index(topo, p[i].cpu).smt_rank, 0);
    fdn_topology_destroy(topo);
}

static void test_smt_siblings_only_when_cores_exhausted(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    fdn_placement p[MAX_WORKERS];
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 33}, p), -ENOSPC);
    CHECK(strlen(fdn_errmsg()) > 0);

    fdn_placement_config smt = {.workers = 33, .use_smt = true};
    CHECK_EQ(place(topo, smt, p), 33);
    for (int i = 0; i < 32; i++)
        CHECK_EQ(cpu_by_os_index(topo, p[i].cpu).smt_rank, 0);
    CHECK_EQ(p[32].cpu, 1); /* the sibling of the first core, in compact order */
    CHECK_EQ(p[32].core, 0);

    smt.workers = 64;
    CHECK_EQ(place(topo, smt, p), 64);
    for (int i = 32; i < 64; i++)
        CHECK_EQ(cpu_by_os_index(topo, p[i].cpu).smt_rank, 1);
    smt.workers = 65;
    CHECK_EQ(place(topo, smt, p), -ENOSPC);

    /* Siblings follow the policy's order too. */
    smt = (fdn_placement_config){.policy = FDN_PLACE_SPREAD, .workers = 34, .use_smt = true};
    CHECK_EQ(place(topo, smt, p), 34);
    CHECK_EQ(p[32].cpu, 1);
    CHECK_EQ(p[33].cpu, 33);
    fdn_topology_destroy(topo);
}

static void test_errors(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    fdn_placement p[MAX_WORKERS];
    fdn_placement_config cfg = {.workers = 8};
    CHECK_EQ(fdn_placement_compute(topo, &cfg, p, 4), -ERANGE);
    CHECK_EQ(fdn_placement_compute(topo, &cfg, NULL, 0), -ERANGE);
    CHECK_EQ(fdn_placement_compute(topo, &cfg, NULL, 8), -EINVAL);
    CHECK_EQ(fdn_placement_compute(topo, &cfg, p, -1), -EINVAL);
    CHECK_EQ(fdn_placement_compute(NULL, &cfg, p, 8), -EINVAL);
    CHECK_EQ(fdn_placement_compute(topo, NULL, p, 8), -EINVAL);

    cfg = (fdn_placement_config){.workers = -1};
    CHECK_EQ(fdn_placement_compute(topo, &cfg, p, MAX_WORKERS), -EINVAL);
    cfg = (fdn_placement_config){.policy = (fdn_placement_policy)42};
    CHECK_EQ(fdn_placement_compute(topo, &cfg, p, MAX_WORKERS), -EINVAL);
    cfg = (fdn_placement_config){.policy = FDN_PLACE_NEAR_DEVICE};
    CHECK_EQ(fdn_placement_compute(topo, &cfg, p, MAX_WORKERS), -EINVAL);
    cfg.device = "";
    CHECK_EQ(fdn_placement_compute(topo, &cfg, p, MAX_WORKERS), -EINVAL);
    /* A synthetic machine has no devices at all. */
    cfg.device = "eth0";
    CHECK_EQ(fdn_placement_compute(topo, &cfg, p, MAX_WORKERS), -ENOENT);
    CHECK(strstr(fdn_errmsg(), "eth0") != NULL);
    fdn_topology_destroy(topo);
}

static void test_single_node(void)
{
    fdn_topology *topo = load_synthetic("numa:1 core:4 pu:1");
    fdn_placement p[MAX_WORKERS];
    for (int policy = FDN_PLACE_COMPACT; policy <= FDN_PLACE_SPREAD; policy++) {
        fdn_placement_config cfg = {.policy = (fdn_placement_policy)policy};
        CHECK_EQ(place(topo, cfg, p), 4);
        for (int i = 0; i < 4; i++) {
            CHECK_EQ(p[i].cpu, i);
            CHECK_EQ(p[i].numa_node, 0);
        }
    }
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 5, .use_smt = true}, p), -ENOSPC);
    fdn_topology_destroy(topo);
}

static void test_four_packages(void)
{
    /* One node per package: 6 cores (12 PUs) each, 48 PUs in all. */
    fdn_topology *topo = load_synthetic("pack:4 numa:1 core:6 pu:2");
    CHECK_EQ(fdn_topology_num_cpus(topo), 48);
    fdn_placement p[MAX_WORKERS];
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 8}, p), 8);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(p[i].numa_node, i < 6 ? 0 : 1);
    CHECK_EQ(place(topo, (fdn_placement_config){.policy = FDN_PLACE_SPREAD, .workers = 8}, p),
             8);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ(p[i].numa_node, i % 4);
        CHECK_EQ(p[i].cpu, (i % 4) * 12 + (i / 4) * 2);
    }
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 25}, p), -ENOSPC);
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 48, .use_smt = true}, p), 48);
    fdn_topology_destroy(topo);
}

/* A cgroup cpuset of "0-7,32-39": the first 4 cores of node 0 and of node 2. */
static void test_restricted_placement(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    CHECK_EQ(fdn_topology_restrict(topo, "0-7,32-39"), 16);
    fdn_placement p[MAX_WORKERS];
    CHECK_EQ(place(topo, (fdn_placement_config){0}, p), 8);
    static const int compact[] = {0, 2, 4, 6, 32, 34, 36, 38};
    for (int i = 0; i < 8; i++)
        CHECK_EQ(p[i].cpu, compact[i]);
    CHECK_EQ(place(topo, (fdn_placement_config){.policy = FDN_PLACE_SPREAD}, p), 8);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(p[i].numa_node, i % 2 ? 2 : 0);
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 9}, p), -ENOSPC);
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 16, .use_smt = true}, p), 16);
    fdn_topology_destroy(topo);
}

/* When a core's first PU is not allowed, its allowed sibling stands in. */
static void test_restricted_to_siblings(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    CHECK_EQ(fdn_topology_restrict(topo, "1,2-3"), 3);
    fdn_placement p[MAX_WORKERS];
    CHECK_EQ(place(topo, (fdn_placement_config){0}, p), 2);
    CHECK_EQ(p[0].cpu, 1);
    CHECK_EQ(p[1].cpu, 2);
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 3, .use_smt = true}, p), 3);
    CHECK_EQ(p[2].cpu, 3);
    fdn_topology_destroy(topo);
}

static void test_deterministic(void)
{
    fdn_topology *topo = load_synthetic(DUAL_SOCKET);
    CHECK_EQ(fdn_topology_restrict(topo, "3-60"), 58);
    for (int policy = FDN_PLACE_COMPACT; policy <= FDN_PLACE_SPREAD; policy++) {
        fdn_placement a[MAX_WORKERS], b[MAX_WORKERS];
        fdn_placement_config cfg = {
            .policy = (fdn_placement_policy)policy, .workers = 40, .use_smt = true};
        CHECK_EQ(place(topo, cfg, a), 40);
        CHECK_EQ(place(topo, cfg, b), 40);
        CHECK(memcmp(a, b, sizeof(fdn_placement) * 40) == 0);
    }
    fdn_topology_destroy(topo);
}

/* dual-socket-nic.xml: 2 packages x 2 nodes x 4 cores x 2 PUs, CPUs
 * numbered like Intel servers (core c has CPUs c and c+16); the NIC ens1f0
 * (0000:3b:00.0) hangs below NUMA node 2, which holds CPUs 8-11,24-27. */
static void test_near_device(void)
{
    fdn_topology *topo = load_data_xml("dual-socket-nic.xml");
    fdn_placement p[MAX_WORKERS];
    const char *names[] = {"ens1f0", "0000:3b:00.0", "mlx5_0"};
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        fdn_placement_config cfg = {
            .policy = FDN_PLACE_NEAR_DEVICE, .device = names[n], .workers = 8};
        CHECK_EQ(place(topo, cfg, p), 8);
        for (int i = 0; i < 4; i++) {
            CHECK_EQ(p[i].numa_node, 2);
            CHECK_EQ(p[i].cpu, 8 + i);
        }
        /* Then the node sharing the NIC's package. */
        for (int i = 4; i < 8; i++)
            CHECK_EQ(p[i].numa_node, 3);
    }
    fdn_placement_config all = {
        .policy = FDN_PLACE_NEAR_DEVICE, .device = "ens1f0", .use_smt = true, .workers = 32};
    CHECK_EQ(place(topo, all, p), 32);
    CHECK_EQ(p[16].cpu, 24); /* first sibling pass starts near the NIC too */

    fdn_placement_config missing = {.policy = FDN_PLACE_NEAR_DEVICE, .device = "eth9"};
    CHECK_EQ(place(topo, missing, p), -ENOENT);
    fdn_topology_destroy(topo);
}

/* sda sits on a host bridge of unknown locality: NEAR_DEVICE is compact. */
static void test_near_device_unknown_locality(void)
{
    fdn_topology *topo = load_data_xml("dual-socket-nic.xml");
    fdn_placement near[MAX_WORKERS], compact[MAX_WORKERS];
    fdn_placement_config cfg = {.policy = FDN_PLACE_NEAR_DEVICE, .device = "sda", .workers = 10};
    CHECK_EQ(place(topo, cfg, near), 10);
    CHECK_EQ(place(topo, (fdn_placement_config){.workers = 10}, compact), 10);
    CHECK(memcmp(near, compact, sizeof(fdn_placement) * 10) == 0);
    fdn_topology_destroy(topo);
}

/* With the NIC's node outside the cpuset, its package's other node wins. */
static void test_near_device_node_not_allowed(void)
{
    fdn_topology *topo = load_data_xml("dual-socket-nic.xml");
    CHECK_EQ(fdn_topology_restrict(topo, "0-7,12-15"), 12);
    fdn_placement p[MAX_WORKERS];
    fdn_placement_config cfg = {.policy = FDN_PLACE_NEAR_DEVICE, .device = "ens1f0"};
    CHECK_EQ(place(topo, cfg, p), 12);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(p[i].numa_node, 3);
    CHECK_EQ(p[4].numa_node, 0);
    fdn_topology_destroy(topo);
}

int main(void)
{
    RUN(test_compact_fills_node_zero_first);
    RUN(test_spread_alternates_nodes_and_packages);
    RUN(test_zero_workers_means_one_per_core);
    RUN(test_smt_siblings_only_when_cores_exhausted);
    RUN(test_errors);
    RUN(test_single_node);
    RUN(test_four_packages);
    RUN(test_restricted_placement);
    RUN(test_restricted_to_siblings);
    RUN(test_deterministic);
    RUN(test_near_device);
    RUN(test_near_device_unknown_locality);
    RUN(test_near_device_node_not_allowed);
    return 0;
}
