/* Machine topology and worker placement (the numa/ layer).
 *
 * A topology is read from the host through hwloc, or built from an hwloc
 * synthetic description or a recorded XML file so that placement can be
 * reasoned about (and tested) for machines other than the one running.
 * Lifecycle: load -> (optionally restrict) -> query / place -> destroy.
 * A topology is immutable after loading except for fdn_topology_restrict();
 * concurrent readers are safe, a concurrent restrict is not. */
#ifndef FDN_TOPOLOGY_H
#define FDN_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fdn_topology fdn_topology;

/* Loads the running host, with I/O devices (NICs) and the process's allowed
 * CPUs (affinity mask intersected with the cgroup cpuset). */
int fdn_topology_load_host(fdn_topology **out);

/* Loads the running host without I/O devices: no PCI scan, so it is faster
 * (and touches no PCI library), and enough for every placement except
 * FDN_PLACE_NEAR_DEVICE. */
int fdn_topology_load_host_cpus(fdn_topology **out);

/* Builds a topology from an hwloc synthetic description, for example
 * "pack:2 numa:2 core:8 pu:2". Every CPU is allowed. No I/O devices. */
int fdn_topology_load_synthetic(const char *description, fdn_topology **out);

/* Loads a topology recorded with `lstopo --of xml` (I/O devices included when
 * recorded). Every CPU of the recording is allowed. */
int fdn_topology_load_xml(const char *path, fdn_topology **out);

/* Frees the topology. NULL is a no-op. */
void fdn_topology_destroy(fdn_topology *topo);

/* Narrows the allowed CPUs to those in cpulist ("0-3,8,10-11", Linux cpulist
 * syntax, OS indexes), intersected with what is already allowed. This is how a
 * cgroup cpuset or taskset is simulated on a synthetic topology. Returns the
 * number of CPUs left allowed, or -EINVAL for a malformed list, or -ENOENT when
 * nothing would be left (the topology is then unchanged). */
int fdn_topology_restrict(fdn_topology *topo, const char *cpulist);

/* Counts over the whole machine (not only allowed CPUs). */
int fdn_topology_num_cpus(const fdn_topology *topo);      /* logical CPUs (PUs) */
int fdn_topology_num_cores(const fdn_topology *topo);     /* physical cores */
int fdn_topology_num_packages(const fdn_topology *topo);  /* sockets */
int fdn_topology_num_numa_nodes(const fdn_topology *topo);
int fdn_topology_num_allowed_cpus(const fdn_topology *topo);

/* One logical CPU. CPU and NUMA node numbers are the kernel's (as in
 * sched_setaffinity and mbind); core, package and llc are logical indexes
 * (0..n-1 in topology order). */
typedef struct fdn_cpu_info {
    int os_index;   /* kernel CPU number, as in sched_setaffinity */
    int core;       /* physical core (logical index) */
    int package;    /* socket (logical index) */
    int numa_node;  /* kernel NUMA node number */
    int llc;        /* last-level cache domain (logical index), -1 if unknown */
    int smt_rank;   /* 0 for the first hardware thread of its core, 1.. for siblings */
    bool allowed;   /* this process may run here */
} fdn_cpu_info;

/* Describes the i-th logical CPU (0 <= i < fdn_topology_num_cpus).
 * Returns 0 or -EINVAL for an index out of range. */
int fdn_topology_cpu(const fdn_topology *topo, int i, fdn_cpu_info *out);

/* A PCI device or its OS device (network interface "eth0", RDMA "mlx5_0"). */
typedef struct fdn_device_info {
    char name[64];        /* OS device name, or the PCI bus id if it has none */
    char pci_bus_id[16];  /* "0000:3b:00.0", or "" */
    int numa_node;        /* nearest kernel NUMA node number, -1 if unknown */
} fdn_device_info;

/* Finds a device by OS name ("eth0") or PCI bus id ("0000:3b:00.0").
 * Returns 0, or -ENOENT when the topology has no such device. */
int fdn_topology_find_device(const fdn_topology *topo, const char *name,
                             fdn_device_info *out);

typedef enum fdn_placement_policy {
    /* Fill one NUMA node's cores before the next: keeps workers cache-close. */
    FDN_PLACE_COMPACT = 0,
    /* Round-robin across NUMA nodes (and packages): maximises memory bandwidth. */
    FDN_PLACE_SPREAD,
    /* Cores on the NUMA node nearest the named device first, then compact. */
    FDN_PLACE_NEAR_DEVICE,
} fdn_placement_policy;

typedef struct fdn_placement_config {
    fdn_placement_policy policy; /* default FDN_PLACE_COMPACT */
    int workers;          /* how many workers to place; 0 = one per allowed physical core */
    const char *device;   /* for FDN_PLACE_NEAR_DEVICE: OS name or PCI bus id */
    bool use_smt;         /* allow SMT siblings of used cores once every allowed
                             core has a worker; default false (then asking for more
                             workers than allowed cores is -ENOSPC) */
} fdn_placement_config;

/* Where one worker goes. */
typedef struct fdn_placement {
    int cpu;        /* kernel CPU number to pin to */
    int core;       /* physical core (logical index) */
    int numa_node;  /* kernel NUMA node whose memory the worker should use */
} fdn_placement;

/* Chooses CPUs for cfg->workers workers among the allowed CPUs, never two
 * workers on one CPU, and at most one per physical core unless use_smt.
 * Writes up to max_out entries. Returns the number of workers placed, or
 * -EINVAL (bad config), -ENOENT (device not found), -ENOSPC (not enough
 * allowed CPUs), -ERANGE (max_out too small). */
int fdn_placement_compute(const fdn_topology *topo, const fdn_placement_config *cfg,
                          fdn_placement *out, int max_out);

/* Pins the calling thread to one kernel CPU. Returns 0 or a negative errno
 * (-EINVAL if the CPU is not allowed for this process). */
int fdn_pin_current_thread(int os_cpu);

/* Writes a readable description of the topology (packages, NUMA nodes, cores,
 * caches, allowed CPUs, network devices and their NUMA nodes) into buf, NUL
 * terminated. Returns the length it needed, like snprintf. */
int fdn_topology_describe(const fdn_topology *topo, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
