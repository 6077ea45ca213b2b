/* Topology loading (host, synthetic, recorded XML), CPU queries, cpulist
 * restriction, device look-up, the description and thread pinning. */
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>

#include <fdn/topology.h>

#include "test.h"

/* hwloc's PCI plugin uses libpciaccess, whose allocations stay reachable
 * only from its own globals. hwloc unloads the plugin when the last topology
 * is destroyed, and LeakSanitizer then reports those blocks from an
 * "<unknown module>" at exit. Keeping the library resident keeps them
 * reachable, so a leak report here means a leak of ours. */
static void keep_pci_library_resident(void)
{
    void *lib = dlopen("libpciaccess.so.0", RTLD_NOW | RTLD_NODELETE);
    if (lib)
        dlclose(lib);
}

static fdn_topology *load_synthetic(const char *description)
{
    fdn_topology *topo = NULL;
    CHECK_OK(fdn_topology_load_synthetic(description, &topo));
    return topo;
}

static void data_path(char *path, size_t len, const char *name)
{
    const char *dir = getenv("FDN_TEST_DATA");
    if (!dir)
        SKIP("FDN_TEST_DATA is not set; run through meson test");
    snprintf(path, len, "%s/%s", dir, name);
}

static fdn_topology *load_data_xml(const char *name)
{
    char path[4096];
    data_path(path, sizeof path, name);
    fdn_topology *topo = NULL;
    CHECK_OK(fdn_topology_load_xml(path, &topo));
    return topo;
}

static bool cpu_allowed(const fdn_topology *topo, int os_index)
{
    for (int i = 0; i < fdn_topology_num_cpus(topo); i++) {
        fdn_cpu_info cpu;
        CHECK_OK(fdn_topology_cpu(topo, i, &cpu));
        if (cpu.os_index == os_index)
            return cpu.allowed;
    }
    return false;
}

static void test_synthetic_counts_and_cpus(void)
{
    fdn_topology *topo = load_synthetic("pack:2 numa:2 core:8 pu:2");
    CHECK_EQ(fdn_topology_num_cpus(topo), 64);
    CHECK_EQ(fdn_topology_num_cores(topo), 32);
    CHECK_EQ(fdn_topology_num_packages(topo), 2);
    CHECK_EQ(fdn_topology_num_numa_nodes(topo), 4);
    CHECK_EQ(fdn_topology_num_allowed_cpus(topo), 64);
    for (int i = 0; i < 64; i++) {
        fdn_cpu_info cpu;
        CHECK_OK(fdn_topology_cpu(topo, i, &cpu));
        CHECK_EQ(cpu.os_index, i);
        CHECK_EQ(cpu.core, i / 2);
        CHECK_EQ(cpu.smt_rank, i % 2);
        CHECK_EQ(cpu.numa_node, i / 16);
        CHECK_EQ(cpu.package, i / 32);
        CHECK_EQ(cpu.llc, -1); /* the description has no caches */
        CHECK(cpu.allowed);
    }
    fdn_cpu_info cpu;
    CHECK_EQ(fdn_topology_cpu(topo, 64, &cpu), -EINVAL);
    CHECK_EQ(fdn_topology_cpu(topo, -1, &cpu), -EINVAL);
    CHECK_EQ(fdn_topology_cpu(topo, 0, NULL), -EINVAL);
    fdn_topology_destroy(topo);
}

/* Without Package or Core levels the machine is one package and every PU a
 * core of its own. */
static void test_synthetic_without_cores(void)
{
    fdn_topology *topo = load_synthetic("numa:1 pu:4");
    CHECK_EQ(fdn_topology_num_cpus(topo), 4);
    CHECK_EQ(fdn_topology_num_cores(topo), 4);
    CHECK_EQ(fdn_topology_num_packages(topo), 1);
    fdn_cpu_info cpu;
    CHECK_OK(fdn_topology_cpu(topo, 3, &cpu));
    CHECK_EQ(cpu.core, 3);
    CHECK_EQ(cpu.smt_rank, 0);
    CHECK_EQ(cpu.package, 0);
    fdn_topology_destroy(topo);
}

static void test_restrict(void)
{
    fdn_topology *topo = load_synthetic("pack:2 numa:2 core:8 pu:2");
    CHECK_EQ(fdn_topology_restrict(topo, "0-7,32-39"), 16);
    CHECK_EQ(fdn_topology_num_allowed_cpus(topo), 16);
    CHECK_EQ(fdn_topology_num_cpus(topo), 64); /* counts stay whole-machine */
    CHECK(cpu_allowed(topo, 7));
    CHECK(!cpu_allowed(topo, 8));
    CHECK(cpu_allowed(topo, 32));
    CHECK(!cpu_allowed(topo, 40));

    /* A restriction only ever narrows. */
    CHECK_EQ(fdn_topology_restrict(topo, "4-35\n"), 8);
    CHECK_EQ(fdn_topology_restrict(topo, "0-3,40-63"), -ENOENT);
    CHECK(strstr(fdn_errmsg(), "0-3,40-63") != NULL);
    CHECK_EQ(fdn_topology_num_allowed_cpus(topo), 8);
    CHECK_EQ(fdn_topology_restrict(topo, ""), -ENOENT);
    CHECK_EQ(fdn_topology_num_allowed_cpus(topo), 8);
    fdn_topology_destroy(topo);
}

static void test_restrict_rejects_garbage(void)
{
    fdn_topology *topo = load_synthetic("pack:2 numa:2 core:8 pu:2");
    static const char *const garbage[] = {
        "abc", "1-", "-1", "3-1", "1,,2", "1,", ",1", "0x3", "1 2", "1;2",
        "0-7:0/4", "0-7:5/4", "0-7:2", "+1", "99999999999", "1-2-3",
    };
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        int rc = fdn_topology_restrict(topo, garbage[i]);
        if (rc != -EINVAL) {
            fprintf(stderr, "restrict(\"%s\") returned %d\n", garbage[i], rc);
            abort();
        }
        CHECK(strstr(fdn_errmsg(), "cpulist") != NULL);
        CHECK_EQ(fdn_topology_num_allowed_cpus(topo), 64);
    }
    CHECK_EQ(fdn_topology_restrict(topo, NULL), -EINVAL);
    /* The kernel's stride form: 2 of every 8 CPUs from 0 to 31. */
    CHECK_EQ(fdn_topology_restrict(topo, " 0-31:2/8 "), 8);
    CHECK(cpu_allowed(topo, 9));
    CHECK(!cpu_allowed(topo, 10));
    fdn_topology_destroy(topo);
}

static void test_bad_sources(void)
{
    fdn_topology *topo = NULL; /* must stay untouched on failure */
    fdn_topology *before = topo;
    int rc = fdn_topology_load_synthetic("pack:2 gizmo:3", &topo);
    CHECK(rc < 0);
    CHECK(strstr(fdn_errmsg(), "gizmo") != NULL);
    CHECK(topo == before);

    char path[4096];
    data_path(path, sizeof path, "no-such-machine.xml");
    rc = fdn_topology_load_xml(path, &topo);
    CHECK(rc < 0);
    CHECK(strstr(fdn_errmsg(), "no-such-machine.xml") != NULL);
    CHECK(topo == before);

    CHECK_EQ(fdn_topology_load_synthetic(NULL, &topo), -EINVAL);
    CHECK_EQ(fdn_topology_load_xml(NULL, &topo), -EINVAL);
    CHECK_EQ(fdn_topology_load_host(NULL), -EINVAL);
    fdn_topology_destroy(NULL);
}

/* host-2core.xml was recorded with `lstopo --of xml` on the 2-core VM these
 * tests were written on: one node, eth0 and vda on the PCI bus. */
static void test_recorded_host(void)
{
    fdn_topology *topo = load_data_xml("host-2core.xml");
    CHECK_EQ(fdn_topology_num_cpus(topo), 2);
    CHECK_EQ(fdn_topology_num_cores(topo), 2);
    CHECK_EQ(fdn_topology_num_numa_nodes(topo), 1);
    CHECK_EQ(fdn_topology_num_allowed_cpus(topo), 2);
    fdn_cpu_info cpu;
    CHECK_OK(fdn_topology_cpu(topo, 1, &cpu));
    CHECK_EQ(cpu.llc, 0); /* both cores share one L3 */

    fdn_device_info dev;
    CHECK_OK(fdn_topology_find_device(topo, "eth0", &dev));
    CHECK(strcmp(dev.name, "eth0") == 0);
    CHECK(strcmp(dev.pci_bus_id, "0000:00:03.0") == 0);
    CHECK_EQ(dev.numa_node, 0); /* the only node is near everything */
    CHECK_OK(fdn_topology_find_device(topo, "00:03.0", &dev));
    CHECK(strcmp(dev.name, "eth0") == 0);
    CHECK_EQ(fdn_topology_find_device(topo, "eth9", &dev), -ENOENT);
    CHECK(strstr(fdn_errmsg(), "eth9") != NULL);
    CHECK_EQ(fdn_topology_find_device(topo, "0000:00:03.0x", &dev), -ENOENT);
    fdn_topology_destroy(topo);
}

static void test_recorded_dual_socket(void)
{
    fdn_topology *topo = load_data_xml("dual-socket-nic.xml");
    CHECK_EQ(fdn_topology_num_cpus(topo), 32);
    CHECK_EQ(fdn_topology_num_cores(topo), 16);
    CHECK_EQ(fdn_topology_num_packages(topo), 2);
    CHECK_EQ(fdn_topology_num_numa_nodes(topo), 4);

    /* Intel-style numbering: the second thread of core c is CPU c + 16. */
    fdn_cpu_info cpu;
    CHECK_OK(fdn_topology_cpu(topo, 17, &cpu));
    CHECK_EQ(cpu.os_index, 24);
    CHECK_EQ(cpu.core, 8);
    CHECK_EQ(cpu.smt_rank, 1);
    CHECK_EQ(cpu.numa_node, 2);
    CHECK_EQ(cpu.package, 1);
    CHECK_EQ(cpu.llc, 2);

    fdn_device_info dev;
    CHECK_OK(fdn_topology_find_device(topo, "ens1f0", &dev));
    CHECK(strcmp(dev.pci_bus_id, "0000:3b:00.0") == 0);
    CHECK_EQ(dev.numa_node, 2);
    CHECK_OK(fdn_topology_find_device(topo, "0000:3b:00.0", &dev));
    CHECK(strcmp(dev.name, "ens1f0") == 0); /* the netdev, not mlx5_0 */
    CHECK_EQ(dev.numa_node, 2);
    CHECK_OK(fdn_topology_find_device(topo, "0000:3B:00.1", &dev));
    CHECK(strcmp(dev.name, "ens1f1") == 0);
    CHECK_EQ(dev.numa_node, 2);
    CHECK_OK(fdn_topology_find_device(topo, "mlx5_0", &dev));
    CHECK(strcmp(dev.pci_bus_id, "0000:3b:00.0") == 0);
    CHECK_EQ(dev.numa_node, 2);
    CHECK_OK(fdn_topology_find_device(topo, "sda", &dev));
    CHECK_EQ(dev.numa_node, -1); /* its host bridge hangs off the machine */
    /* The PCI bridge above the NIC has a bus id but is not a device. */
    CHECK_EQ(fdn_topology_find_device(topo, "0000:3a:00.0", &dev), -ENOENT);
    fdn_topology_destroy(topo);
}

static char *describe_alloc(const fdn_topology *topo)
{
    int len = fdn_topology_describe(topo, NULL, 0);
    CHECK(len > 0);
    char *text = malloc((size_t)len + 1);
    CHECK(text != NULL);
    CHECK_EQ(fdn_topology_describe(topo, text, (size_t)len + 1), len);
    CHECK_EQ(strlen(text), len);
    return text;
}

static void test_describe(void)
{
    fdn_topology *topo = load_data_xml("dual-socket-nic.xml");
    CHECK_EQ(fdn_topology_restrict(topo, "8-15"), 8);
    char *text = describe_alloc(topo);
    static const char *const expected[] = {
        "2 package(s)", "4 NUMA node(s)", "16 core(s)", "32 CPU(s)", "8 allowed",
        "package 1: NUMA nodes 2-3, CPUs 8-15,24-31", "node 2: CPUs 8-11,24-27",
        "core 8: CPUs 8,24 (NUMA node 2)", "L3 #2", "Allowed CPUs: 8-15",
        "ens1f0 (Net, PCI 0000:3b:00.0): NUMA node 2", "sda (Block, PCI 0000:00:17.0): NUMA node unknown",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        if (!strstr(text, expected[i])) {
            fprintf(stderr, "\"%s\" missing from:\n%s", expected[i], text);
            abort();
        }
    }

    /* snprintf semantics: a short buffer gets a NUL-terminated prefix and
     * the return value still tells the full length. */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    CHECK_EQ(fdn_topology_describe(topo, tiny, sizeof tiny), strlen(text));
    CHECK_EQ(strlen(tiny), sizeof tiny - 1);
    CHECK(strncmp(tiny, text, sizeof tiny - 1) == 0);
    char one = 'x';
    CHECK_EQ(fdn_topology_describe(topo, &one, 1), strlen(text));
    CHECK_EQ(one, '\0');
    CHECK_EQ(fdn_topology_describe(topo, NULL, 4), -EINVAL);
    free(text);
    fdn_topology_destroy(topo);
}

static cpu_set_t thread_affinity(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CHECK_EQ(sched_getaffinity(0, sizeof set, &set), 0);
    return set;
}

static void test_host(void)
{
    fdn_topology *topo = NULL;
    CHECK_OK(fdn_topology_load_host(&topo));
    CHECK(fdn_topology_num_cpus(topo) >= 1);
    CHECK(fdn_topology_num_cores(topo) >= 1);
    CHECK(fdn_topology_num_packages(topo) >= 1);
    CHECK(fdn_topology_num_numa_nodes(topo) >= 1);
    int allowed = fdn_topology_num_allowed_cpus(topo);
    CHECK(allowed >= 1 && allowed <= fdn_topology_num_cpus(topo));

    /* Every CPU the topology allows is one this process may run on. */
    cpu_set_t affinity = thread_affinity();
    for (int i = 0; i < fdn_topology_num_cpus(topo); i++) {
        fdn_cpu_info cpu;
        CHECK_OK(fdn_topology_cpu(topo, i, &cpu));
        CHECK(cpu.numa_node >= 0);
        if (cpu.allowed)
            CHECK(CPU_ISSET(cpu.os_index, &affinity));
    }
    char *text = describe_alloc(topo);
    CHECK(strstr(text, "Allowed CPUs: ") != NULL);
    free(text);
    fdn_topology_destroy(topo);
}

/* The CPU-only host load sees the same CPUs as the full one, and no devices. */
static void test_host_cpus_only(void)
{
    fdn_topology *full = NULL, *cpus = NULL;
    CHECK_OK(fdn_topology_load_host(&full));
    CHECK_OK(fdn_topology_load_host_cpus(&cpus));
    CHECK_EQ(fdn_topology_num_cpus(cpus), fdn_topology_num_cpus(full));
    CHECK_EQ(fdn_topology_num_cores(cpus), fdn_topology_num_cores(full));
    CHECK_EQ(fdn_topology_num_numa_nodes(cpus), fdn_topology_num_numa_nodes(full));
    CHECK_EQ(fdn_topology_num_allowed_cpus(cpus), fdn_topology_num_allowed_cpus(full));
    for (int i = 0; i < fdn_topology_num_cpus(full); i++) {
        fdn_cpu_info a, b;
        CHECK_OK(fdn_topology_cpu(full, i, &a));
        CHECK_OK(fdn_topology_cpu(cpus, i, &b));
        CHECK_EQ(a.os_index, b.os_index);
        CHECK_EQ(a.core, b.core);
        CHECK_EQ(a.package, b.package);
        CHECK_EQ(a.numa_node, b.numa_node);
        CHECK_EQ(a.llc, b.llc);
        CHECK_EQ(a.smt_rank, b.smt_rank);
        CHECK_EQ(a.allowed, b.allowed);
    }
    /* A NIC the full load finds (eth0 on most VMs) is absent without I/O. */
    fdn_device_info dev;
    if (fdn_topology_find_device(full, "eth0", &dev) == 0)
        CHECK_EQ(fdn_topology_find_device(cpus, "eth0", &dev), -ENOENT);
    fdn_topology_destroy(full);
    fdn_topology_destroy(cpus);
}

/* hwloc's own way of pretending to be another machine: the "host" is then
 * the recording, still intersected with this process's affinity. */
static void test_host_from_hwloc_xmlfile(void)
{
    char path[4096];
    data_path(path, sizeof path, "dual-socket-nic.xml");
    CHECK_EQ(setenv("HWLOC_XMLFILE", path, 1), 0);
    fdn_topology *topo = NULL;
    int rc = fdn_topology_load_host(&topo);
    CHECK_EQ(unsetenv("HWLOC_XMLFILE"), 0);
    CHECK_OK(rc);
    CHECK_EQ(fdn_topology_num_cpus(topo), 32);
    cpu_set_t affinity = thread_affinity();
    int expected = 0;
    for (int cpu = 0; cpu < 32; cpu++)
        expected += CPU_ISSET(cpu, &affinity) ? 1 : 0;
    CHECK_EQ(fdn_topology_num_allowed_cpus(topo), expected);
    fdn_device_info dev;
    CHECK_OK(fdn_topology_find_device(topo, "ens1f0", &dev));
    fdn_topology_destroy(topo);
}

/* A taskset-style affinity mask narrows the host's allowed CPUs. */
static void test_host_honours_affinity(void)
{
    cpu_set_t original = thread_affinity();
    if (CPU_COUNT(&original) < 2) {
        printf("   not run: needs two allowed CPUs to narrow the affinity\n");
        return;
    }
    int first = 0;
    while (!CPU_ISSET(first, &original))
        first++;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    CHECK_EQ(sched_setaffinity(0, sizeof one, &one), 0);

    fdn_topology *topo = NULL;
    int rc = fdn_topology_load_host(&topo);
    CHECK_EQ(sched_setaffinity(0, sizeof original, &original), 0);
    CHECK_OK(rc);
    CHECK_EQ(fdn_topology_num_allowed_cpus(topo), 1);
    CHECK(cpu_allowed(topo, first));
    fdn_topology_destroy(topo);
}

static void test_pinning(void)
{
    cpu_set_t original = thread_affinity();
    fdn_topology *topo = NULL;
    CHECK_OK(fdn_topology_load_host(&topo));
    for (int i = 0; i < fdn_topology_num_cpus(topo); i++) {
        fdn_cpu_info cpu;
        CHECK_OK(fdn_topology_cpu(topo, i, &cpu));
        if (!cpu.allowed)
            continue;
        CHECK_OK(fdn_pin_current_thread(cpu.os_index));
        CHECK_EQ(sched_getcpu(), cpu.os_index);
        cpu_set_t now = thread_affinity();
        CHECK_EQ(CPU_COUNT(&now), 1);
    }
    CHECK_EQ(fdn_pin_current_thread(-1), -EINVAL);
    int rc = fdn_pin_current_thread(fdn_topology_num_cpus(topo) + 4000);
    CHECK(rc < 0);
    CHECK(strlen(fdn_errmsg()) > 0);
    CHECK_EQ(fdn_pin_current_thread(1 << 30), -EINVAL);
    fdn_topology_destroy(topo);
    CHECK_EQ(sched_setaffinity(0, sizeof original, &original), 0);
}

int main(void)
{
    keep_pci_library_resident();
    RUN(test_synthetic_counts_and_cpus);
    RUN(test_synthetic_without_cores);
    RUN(test_restrict);
    RUN(test_restrict_rejects_garbage);
    RUN(test_bad_sources);
    RUN(test_recorded_host);
    RUN(test_recorded_dual_socket);
    RUN(test_describe);
    RUN(test_host);
    RUN(test_host_cpus_only);
    RUN(test_pinning);
    RUN(test_host_from_hwloc_xmlfile);
    RUN(test_host_honours_affinity);
    return 0;
}
