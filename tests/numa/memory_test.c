/* NUMA-local allocation: sizes, zeroing, the bound flag (checked against the
 * kernel's own view with get_mempolicy), the unbound fallbacks and the
 * current node. */
#include <dlfcn.h>
#include <errno.h>
#include <linux/mempolicy.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fdn/topology.h>

#include "numa/memory.h"
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

/* The policy the kernel applies at addr: MPOL_DEFAULT when unbound. */
static int policy_at(void *addr, unsigned long *nodemask, unsigned long maxnode)
{
    int mode = -1;
    long rc = syscall(SYS_get_mempolicy, &mode, nodemask, maxnode, addr, MPOL_F_ADDR);
    return rc == 0 ? mode : -errno;
}

static void check_binding(void *mem, int node, bool bound)
{
    unsigned long mask[64] = {0};
    int mode = policy_at(mem, mask, 64 * 8 * sizeof(unsigned long));
    if (mode == -ENOSYS)
        return; /* no NUMA support in this kernel: nothing to compare */
    CHECK(mode >= 0);
    if (!bound) {
        CHECK_EQ(mode, MPOL_DEFAULT);
        return;
    }
    CHECK_EQ(mode, MPOL_BIND);
    size_t bits = 8 * sizeof(unsigned long);
    CHECK((mask[(size_t)node / bits] >> ((size_t)node % bits)) & 1UL);
}

static void check_zeroed_and_writable(unsigned char *mem, size_t size)
{
    CHECK_EQ(mem[0], 0);
    CHECK_EQ(mem[size - 1], 0);
    memset(mem, 0xa5, size);
    CHECK_EQ(mem[size / 2], 0xa5);
}

static void test_sizes_on_current_node(void)
{
    static const size_t sizes[] = {1, 100, 4096, 4097, 65536, 1 << 20, (8 << 20) + 3};
    int node = fdn__numa_current_node();
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        bool bound = true;
        unsigned char *mem = fdn__numa_alloc(sizes[i], node, &bound);
        CHECK(mem != NULL);
        CHECK_EQ((uintptr_t)mem % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
        check_binding(mem, node, bound);
        check_zeroed_and_writable(mem, sizes[i]);
        fdn__numa_free(mem, sizes[i]);
        if (i == 0)
            printf("node %d: binding %s\n", node,
                   bound ? "accepted" : "refused by the kernel (fallback)");
    }
}

static void test_unbound(void)
{
    bool bound = true;
    unsigned char *mem = fdn__numa_alloc(10000, -1, &bound);
    CHECK(mem != NULL);
    CHECK(!bound);
    check_binding(mem, -1, false);
    check_zeroed_and_writable(mem, 10000);
    fdn__numa_free(mem, 10000);

    /* bound may be NULL. */
    mem = fdn__numa_alloc(4096, 0, NULL);
    CHECK(mem != NULL);
    check_zeroed_and_writable(mem, 4096);
    fdn__numa_free(mem, 4096);
}

/* Nodes that do not exist fall back to unbound memory, never to a crash. */
static void test_missing_nodes_fall_back(void)
{
    static const int nodes[] = {63, 64, 1000, 4095, 4096, 1 << 20, INT32_MAX};
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        bool bound = true;
        unsigned char *mem = fdn__numa_alloc(8192, nodes[i], &bound);
        CHECK(mem != NULL);
        CHECK(!bound);
        check_binding(mem, nodes[i], false);
        check_zeroed_and_writable(mem, 8192);
        fdn__numa_free(mem, 8192);
    }
}

static void test_impossible_sizes(void)
{
    errno = 0;
    CHECK(fdn__numa_alloc(0, -1, NULL) == NULL);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    bool bound = true;
    CHECK(fdn__numa_alloc(SIZE_MAX, 0, &bound) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(!bound);
    fdn__numa_free(NULL, 4096);
}

/* After pinning, the current node is the pinned CPU's node. */
static void test_current_node(void)
{
    cpu_set_t original;
    CHECK_EQ(sched_getaffinity(0, sizeof original, &original), 0);
    fdn_topology *topo = NULL;
    CHECK_OK(fdn_topology_load_host(&topo));
    for (int i = 0; i < fdn_topology_num_cpus(topo); i++) {
        fdn_cpu_info cpu;
        CHECK_OK(fdn_topology_cpu(topo, i, &cpu));
        if (!cpu.allowed)
            continue;
        CHECK_OK(fdn_pin_current_thread(cpu.os_index));
        CHECK_EQ(fdn__numa_current_node(), cpu.numa_node);
    }
    fdn_topology_destroy(topo);
    CHECK_EQ(sched_setaffinity(0, sizeof original, &original), 0);
}

int main(void)
{
    keep_pci_library_resident();
    RUN(test_sizes_on_current_node);
    RUN(test_unbound);
    RUN(test_missing_nodes_fall_back);
    RUN(test_impossible_sizes);
    RUN(test_current_node);
    return 0;
}
