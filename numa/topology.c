/* Loading a machine topology through hwloc, and answering questions about
 * its CPUs. Devices live in device.c, the text description in describe.c. */
#include "numa/topology_internal.h"

#include <errno.h>
#include <hwloc/glibc-sched.h>
#include <sched.h>
#include <stdlib.h>

#include "base/error.h"

/* hwloc reports failures through errno, but some of its paths leave errno
 * at 0; a failure must still come back as a negative errno. */
static int hwloc_errno(void)
{
    return errno > 0 ? -errno : -EINVAL;
}

/* Returns NULL, with an fdn_errmsg detail, when memory runs out: that is
 * the only way creating an empty topology fails. */
static fdn_topology *topology_create(void)
{
    fdn_topology *topo = calloc(1, sizeof *topo);
    if (!topo) {
        FDN_ERR(-ENOMEM, "cannot allocate a topology");
        return NULL;
    }
    topo->allowed = hwloc_bitmap_alloc();
    if (!topo->allowed || hwloc_topology_init(&topo->hw) < 0) {
        FDN_ERR(-ENOMEM, "cannot initialise an hwloc topology");
        fdn_topology_destroy(topo);
        return NULL;
    }
    /* Disallowed CPUs stay in the tree so that counts describe the whole
     * machine; which CPUs we may use is tracked separately in `allowed`. */
    hwloc_topology_set_flags(topo->hw, HWLOC_TOPOLOGY_FLAG_INCLUDE_DISALLOWED);
    /* Keeping the important I/O objects (PCI devices with an OS device such
     * as a NIC, and the bridges above them) is what makes NEAR_DEVICE work;
     * for XML this keeps what the recording holds. */
    hwloc_topology_set_io_types_filter(topo->hw, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    return topo;
}

static int topology_load(fdn_topology *topo, const char *what)
{
    errno = 0;
    if (hwloc_topology_load(topo->hw) < 0)
        return FDN_ERR(hwloc_errno(), "hwloc cannot load the topology from %s", what);
    return 0;
}

/* A synthetic or recorded machine is not the one we run on, so its own
 * binding says nothing about us: every CPU it has is ours to place on. */
static int allow_every_cpu(fdn_topology *topo)
{
    if (hwloc_bitmap_copy(topo->allowed, hwloc_topology_get_topology_cpuset(topo->hw)) < 0)
        return FDN_ERR(-ENOMEM, "cannot copy the topology cpuset");
    return 0;
}

static int read_thread_affinity(hwloc_topology_t hw, hwloc_bitmap_t bound)
{
    cpu_set_t mask;
    CPU_ZERO(&mask);
    if (sched_getaffinity(0, sizeof mask, &mask) < 0)
        return FDN_ERR(-errno, "cannot read the thread CPU affinity");
    if (hwloc_cpuset_from_glibc_sched_affinity(hw, bound, &mask, sizeof mask) < 0)
        return FDN_ERR(-ENOMEM, "cannot convert the CPU affinity");
    return 0;
}

/* hwloc's process binding is the union over all threads, so one thread
 * having pinned itself does not hide the CPUs the others may use. */
static int read_process_binding(hwloc_topology_t hw, hwloc_bitmap_t bound)
{
    /* On a topology hwloc was told to take from elsewhere (HWLOC_XMLFILE,
     * say) it answers binding queries with every CPU; the kernel still
     * knows this thread's real mask. */
    if (!hwloc_topology_is_thissystem(hw))
        return read_thread_affinity(hw, bound);
    errno = 0;
    if (hwloc_get_cpubind(hw, bound, HWLOC_CPUBIND_PROCESS) < 0)
        return FDN_ERR(hwloc_errno(), "cannot read the process CPU binding");
    return 0;
}

/* The host's usable CPUs are those hwloc found allowed (the cgroup cpuset)
 * that the process is also bound to (taskset, sched_setaffinity). */
static int allow_host_cpus(fdn_topology *topo)
{
    hwloc_bitmap_t bound = hwloc_bitmap_alloc();
    if (!bound)
        return FDN_ERR(-ENOMEM, "cannot allocate a cpuset");
    int rc = read_process_binding(topo->hw, bound);
    if (rc == 0 && hwloc_bitmap_and(topo->allowed, hwloc_topology_get_allowed_cpuset(topo->hw),
                                    bound) < 0)
        rc = FDN_ERR(-ENOMEM, "cannot intersect cpusets");
    if (rc == 0 && hwloc_bitmap_and(topo->allowed, topo->allowed,
                                    hwloc_topology_get_topology_cpuset(topo->hw)) < 0)
        rc = FDN_ERR(-ENOMEM, "cannot intersect cpusets");
    if (rc == 0 && hwloc_bitmap_iszero(topo->allowed))
        rc = FDN_ERR(-ENOENT, "no CPU is both in the cgroup cpuset and the process affinity");
    hwloc_bitmap_free(bound);
    return rc;
}

static int load_finish(fdn_topology *topo, int rc, fdn_topology **out)
{
    if (rc < 0) {
        fdn_topology_destroy(topo);
        return rc;
    }
    *out = topo;
    return 0;
}

static int load_host(bool with_io, fdn_topology **out)
{
    if (!out)
        return FDN_ERR(-EINVAL, "out is NULL");
    fdn_topology *topo = topology_create();
    if (!topo)
        return -ENOMEM;
    if (!with_io)
        hwloc_topology_set_io_types_filter(topo->hw, HWLOC_TYPE_FILTER_KEEP_NONE);
    int rc = topology_load(topo, "this host");
    if (rc == 0)
        rc = allow_host_cpus(topo);
    return load_finish(topo, rc, out);
}

int fdn_topology_load_host(fdn_topology **out) { return load_host(true, out); }

int fdn_topology_load_host_cpus(fdn_topology **out) { return load_host(false, out); }

int fdn_topology_load_synthetic(const char *description, fdn_topology **out)
{
    if (!description || !out)
        return FDN_ERR(-EINVAL, "description or out is NULL");
    fdn_topology *topo = topology_create();
    if (!topo)
        return -ENOMEM;
    int rc = 0;
    errno = 0;
    if (hwloc_topology_set_synthetic(topo->hw, description) < 0)
        rc = FDN_ERR(hwloc_errno(), "hwloc rejects the synthetic description \"%s\"",
                     description);
    if (rc == 0)
        rc = topology_load(topo, description);
    if (rc == 0)
        rc = allow_every_cpu(topo);
    return load_finish(topo, rc, out);
}

int fdn_topology_load_xml(const char *path, fdn_topology **out)
{
    if (!path || !out)
        return FDN_ERR(-EINVAL, "path or out is NULL");
    fdn_topology *topo = topology_create();
    if (!topo)
        return -ENOMEM;
    int rc = 0;
    errno = 0;
    if (hwloc_topology_set_xml(topo->hw, path) < 0)
        rc = FDN_ERR(hwloc_errno(), "hwloc cannot read the XML topology %s", path);
    if (rc == 0)
        rc = topology_load(topo, path);
    if (rc == 0)
        rc = allow_every_cpu(topo);
    return load_finish(topo, rc, out);
}

void fdn_topology_destroy(fdn_topology *topo)
{
    if (!topo)
        return;
    hwloc_bitmap_free(topo->allowed);
    if (topo->hw)
        hwloc_topology_destroy(topo->hw);
    free(topo);
}

int fdn_topology_restrict(fdn_topology *topo, const char *cpulist)
{
    if (!topo || !cpulist)
        return FDN_ERR(-EINVAL, "topology or cpulist is NULL");
    hwloc_bitmap_t wanted = hwloc_bitmap_alloc();
    if (!wanted)
        return FDN_ERR(-ENOMEM, "cannot allocate a cpuset");
    int rc = fdn__cpulist_parse(cpulist, wanted);
    if (rc == 0 && hwloc_bitmap_and(wanted, wanted, topo->allowed) < 0)
        rc = FDN_ERR(-ENOMEM, "cannot intersect cpusets");
    if (rc == 0 && hwloc_bitmap_iszero(wanted))
        rc = FDN_ERR(-ENOENT, "no allowed CPU is in \"%s\"", cpulist);
    if (rc == 0 && hwloc_bitmap_copy(topo->allowed, wanted) < 0)
        rc = FDN_ERR(-ENOMEM, "cannot copy a cpuset");
    if (rc == 0)
        rc = hwloc_bitmap_weight(topo->allowed);
    hwloc_bitmap_free(wanted);
    return rc;
}

static int count_of(const fdn_topology *topo, hwloc_obj_type_t type)
{
    if (!topo)
        return FDN_ERR(-EINVAL, "topology is NULL");
    int n = hwloc_get_nbobjs_by_type(topo->hw, type);
    return n < 0 ? 0 : n;
}

int fdn_topology_num_cpus(const fdn_topology *topo)
{
    return count_of(topo, HWLOC_OBJ_PU);
}

/* A topology without a Core level (a synthetic "numa:1 pu:4") treats every
 * PU as its own core, here and in fdn_topology_cpu(). */
int fdn_topology_num_cores(const fdn_topology *topo)
{
    int cores = count_of(topo, HWLOC_OBJ_CORE);
    return cores == 0 ? fdn_topology_num_cpus(topo) : cores;
}

/* A machine without Package objects still is one socket. */
int fdn_topology_num_packages(const fdn_topology *topo)
{
    int packages = count_of(topo, HWLOC_OBJ_PACKAGE);
    return packages == 0 ? 1 : packages;
}

int fdn_topology_num_numa_nodes(const fdn_topology *topo)
{
    return count_of(topo, HWLOC_OBJ_NUMANODE);
}

int fdn_topology_num_allowed_cpus(const fdn_topology *topo)
{
    if (!topo)
        return FDN_ERR(-EINVAL, "topology is NULL");
    return hwloc_bitmap_weight(topo->allowed);
}

/* Memory children may be memory-side caches in front of the NUMA node. */
static hwloc_obj_t first_numa_below(hwloc_obj_t memory_child)
{
    hwloc_obj_t obj = memory_child;
    while (obj && obj->type != HWLOC_OBJ_NUMANODE)
        obj = obj->memory_first_child;
    return obj;
}

int fdn__nearest_numa_node(hwloc_obj_t obj)
{
    for (hwloc_obj_t up = obj; up; up = up->parent) {
        hwloc_obj_t node = first_numa_below(up->memory_first_child);
        if (node)
            return (int)node->os_index;
    }
    return -1;
}

/* The outermost data cache above the PU is its last-level cache. */
static int llc_index(hwloc_obj_t pu)
{
    int llc = -1;
    for (hwloc_obj_t up = pu->parent; up; up = up->parent) {
        if (hwloc_obj_type_is_dcache(up->type))
            llc = (int)up->logical_index;
    }
    return llc;
}

/* PUs of one core are numbered in topology order, so a PU's rank is the
 * number of its core's PUs before it. */
static int smt_rank(hwloc_topology_t hw, hwloc_obj_t core, hwloc_obj_t pu)
{
    int rank = 0;
    hwloc_obj_t sibling = NULL;
    while ((sibling = hwloc_get_next_obj_inside_cpuset_by_type(hw, core->cpuset, HWLOC_OBJ_PU,
                                                               sibling)) != NULL &&
           sibling != pu)
        rank++;
    return rank;
}

static int package_index(hwloc_topology_t hw, hwloc_obj_t pu)
{
    hwloc_obj_t package = hwloc_get_ancestor_obj_by_type(hw, HWLOC_OBJ_PACKAGE, pu);
    return package ? (int)package->logical_index : 0;
}

int fdn_topology_cpu(const fdn_topology *topo, int i, fdn_cpu_info *out)
{
    if (!topo || !out)
        return FDN_ERR(-EINVAL, "topology or out is NULL");
    if (i < 0 || i >= fdn_topology_num_cpus(topo))
        return FDN_ERR(-EINVAL, "cpu index %d is out of range", i);
    hwloc_obj_t pu = hwloc_get_obj_by_type(topo->hw, HWLOC_OBJ_PU, (unsigned)i);
    if (!pu)
        return FDN_ERR(-EINVAL, "hwloc has no PU with logical index %d", i);
    hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(topo->hw, HWLOC_OBJ_CORE, pu);
    *out = (fdn_cpu_info){
        .os_index = (int)pu->os_index,
        .core = core ? (int)core->logical_index : (int)pu->logical_index,
        .package = package_index(topo->hw, pu),
        .numa_node = fdn__nearest_numa_node(pu),
        .llc = llc_index(pu),
        .smt_rank = core ? smt_rank(topo->hw, core, pu) : 0,
        .allowed = hwloc_bitmap_isset(topo->allowed, pu->os_index),
    };
    return 0;
}
