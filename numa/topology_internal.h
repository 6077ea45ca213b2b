/* The numa/ layer's shared view of a loaded topology. Internal to numa/. */
#ifndef FDN_NUMA_TOPOLOGY_INTERNAL_H
#define FDN_NUMA_TOPOLOGY_INTERNAL_H

#include <hwloc.h>
#include <stdbool.h>
#include <stddef.h>

#include <fdn/topology.h>

/* The topology owns both hwloc objects. `allowed` holds kernel CPU numbers
 * (PU os indexes) and is never empty: loading fails rather than leave it
 * empty, and fdn_topology_restrict() refuses to empty it. */
struct fdn_topology {
    hwloc_topology_t hw;
    hwloc_bitmap_t allowed;
};

/* Parses a Linux cpulist ("0-3,8,10-11", also the kernel's "0-15:2/4"
 * stride form; surrounding white space is ignored) into set, which it
 * replaces. Returns 0, -EINVAL for a malformed list (with an fdn_errmsg
 * detail) or -ENOMEM. */
int fdn__cpulist_parse(const char *cpulist, hwloc_bitmap_t set);

/* The kernel number of the NUMA node whose memory is closest to obj (a PU
 * or any normal object), or -1 when the topology has no NUMA node above it. */
int fdn__nearest_numa_node(hwloc_obj_t obj);

/* The kernel NUMA node nearest an I/O object, or -1 when its locality is
 * unknown (attached to the whole machine while the machine has several
 * nodes). */
int fdn__io_numa_node(const struct fdn_topology *topo, hwloc_obj_t io);

/* Writes the PCI bus id ("0000:3b:00.0") of dev, a PCI device or an OS
 * device on one, into buf. Returns false (buf = "") when dev is on no PCI
 * device. */
bool fdn__pci_bus_id(hwloc_obj_t dev, char *buf, size_t len);

#endif
