/* fdn_topology_describe(): a readable account of the machine, for tools and
 * logs. The exact layout is for people, not for parsers. */
#include "numa/topology_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/error.h"

/* Accumulates text with snprintf semantics: writes what fits into buf and
 * counts everything, so the caller learns the length it needs. */
struct text {
    char *buf;
    size_t len;
    size_t needed;
};

__attribute__((format(printf, 2, 3)))
static void text_printf(struct text *t, const char *fmt, ...)
{
    char *dst = t->needed < t->len ? t->buf + t->needed : NULL;
    size_t room = t->needed < t->len ? t->len - t->needed : 0;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->needed += (size_t)n;
}

/* Prints a set as a cpulist ("0-3,8"); hwloc allocates the string. */
static void text_set(struct text *t, hwloc_const_bitmap_t set)
{
    char *list = NULL;
    if (set && hwloc_bitmap_list_asprintf(&list, set) >= 0 && list)
        text_printf(t, "%s", *list ? list : "none");
    else
        text_printf(t, "?");
    free(list);
}

static void describe_summary(struct text *t, const fdn_topology *topo)
{
    text_printf(t, "Machine: %d package(s), %d NUMA node(s), %d core(s), %d CPU(s), %d allowed\n",
                fdn_topology_num_packages(topo), fdn_topology_num_numa_nodes(topo),
                fdn_topology_num_cores(topo), fdn_topology_num_cpus(topo),
                fdn_topology_num_allowed_cpus(topo));
}

static void describe_packages(struct text *t, const fdn_topology *topo)
{
    text_printf(t, "Packages:\n");
    int n = hwloc_get_nbobjs_by_type(topo->hw, HWLOC_OBJ_PACKAGE);
    if (n <= 0) {
        /* The machine is one implicit package, as fdn_topology_num_packages says. */
        hwloc_obj_t root = hwloc_get_root_obj(topo->hw);
        text_printf(t, "  package 0 (implicit): CPUs ");
        text_set(t, root->cpuset);
        text_printf(t, "\n");
        return;
    }
    for (int i = 0; i < n; i++) {
        hwloc_obj_t pkg = hwloc_get_obj_by_type(topo->hw, HWLOC_OBJ_PACKAGE, (unsigned)i);
        if (!pkg)
            continue;
        text_printf(t, "  package %d: NUMA nodes ", i);
        text_set(t, pkg->nodeset);
        text_printf(t, ", CPUs ");
        text_set(t, pkg->cpuset);
        text_printf(t, "\n");
    }
}

static void describe_numa_nodes(struct text *t, const fdn_topology *topo)
{
    text_printf(t, "NUMA nodes:\n");
    hwloc_obj_t node = NULL;
    while ((node = hwloc_get_next_obj_by_type(topo->hw, HWLOC_OBJ_NUMANODE, node)) != NULL) {
        text_printf(t, "  node %u: CPUs ", node->os_index);
        text_set(t, node->cpuset);
        if (node->attr->numanode.local_memory)
            text_printf(t, ", %llu MiB",
                        (unsigned long long)(node->attr->numanode.local_memory >> 20));
        text_printf(t, "\n");
    }
}

static void describe_cores(struct text *t, const fdn_topology *topo)
{
    text_printf(t, "Cores:\n");
    hwloc_obj_t core = NULL;
    int shown = 0;
    while ((core = hwloc_get_next_obj_by_type(topo->hw, HWLOC_OBJ_CORE, core)) != NULL) {
        text_printf(t, "  core %u: CPUs ", core->logical_index);
        text_set(t, core->cpuset);
        text_printf(t, " (NUMA node %d)\n", fdn__nearest_numa_node(core));
        shown++;
    }
    if (shown == 0)
        text_printf(t, "  none reported: each CPU counts as a core\n");
}

/* The last-level cache is the outermost data cache level that exists. */
static hwloc_obj_type_t last_level_cache(hwloc_topology_t hw)
{
    static const hwloc_obj_type_t levels[] = {
        HWLOC_OBJ_L5CACHE, HWLOC_OBJ_L4CACHE, HWLOC_OBJ_L3CACHE,
        HWLOC_OBJ_L2CACHE, HWLOC_OBJ_L1CACHE,
    };
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (hwloc_get_nbobjs_by_type(hw, levels[i]) > 0)
            return levels[i];
    }
    return HWLOC_OBJ_TYPE_MAX;
}

static void describe_caches(struct text *t, const fdn_topology *topo)
{
    text_printf(t, "Last-level caches:\n");
    hwloc_obj_type_t type = last_level_cache(topo->hw);
    if (type == HWLOC_OBJ_TYPE_MAX) {
        text_printf(t, "  unknown\n");
        return;
    }
    hwloc_obj_t cache = NULL;
    while ((cache = hwloc_get_next_obj_by_type(topo->hw, type, cache)) != NULL) {
        text_printf(t, "  L%u #%u: %llu KiB, CPUs ", cache->attr->cache.depth,
                    cache->logical_index, (unsigned long long)(cache->attr->cache.size >> 10));
        text_set(t, cache->cpuset);
        text_printf(t, "\n");
    }
}

static void describe_device(struct text *t, const fdn_topology *topo, hwloc_obj_t dev)
{
    char type[32];
    hwloc_obj_type_snprintf(type, sizeof type, dev, 0);
    text_printf(t, "  %s (%s", dev->name, type);
    char bus_id[32];
    if (fdn__pci_bus_id(dev, bus_id, sizeof bus_id))
        text_printf(t, ", PCI %s", bus_id);
    int node = fdn__io_numa_node(topo, dev);
    if (node >= 0)
        text_printf(t, "): NUMA node %d\n", node);
    else
        text_printf(t, "): NUMA node unknown\n");
}

static void describe_devices(struct text *t, const fdn_topology *topo)
{
    text_printf(t, "Devices:\n");
    hwloc_obj_t dev = NULL;
    int shown = 0;
    while ((dev = hwloc_get_next_osdev(topo->hw, dev)) != NULL) {
        if (!dev->name)
            continue;
        describe_device(t, topo, dev);
        shown++;
    }
    if (shown == 0)
        text_printf(t, "  none\n");
}

int fdn_topology_describe(const fdn_topology *topo, char *buf, size_t len)
{
    if (!topo || (!buf && len > 0))
        return FDN_ERR(-EINVAL, "topology is NULL, or buf is NULL with len %zu", len);
    struct text t = {.buf = buf, .len = len};
    if (len > 0)
        buf[0] = '\0';
    describe_summary(&t, topo);
    describe_packages(&t, topo);
    describe_numa_nodes(&t, topo);
    describe_cores(&t, topo);
    describe_caches(&t, topo);
    text_printf(&t, "Allowed CPUs: ");
    text_set(&t, topo->allowed);
    text_printf(&t, "\n");
    describe_devices(&t, topo);
    if (t.needed > INT_MAX)
        return FDN_ERR(-EOVERFLOW, "the description needs %zu bytes", t.needed);
    return (int)t.needed;
}
