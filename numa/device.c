/* Finding I/O devices (NICs, RDMA adapters, disks) and their NUMA locality. */
#include "numa/topology_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"

int fdn__io_numa_node(const struct fdn_topology *topo, hwloc_obj_t io)
{
    hwloc_obj_t anchor = hwloc_get_non_io_ancestor_obj(topo->hw, io);
    if (!anchor || !anchor->nodeset || hwloc_bitmap_iszero(anchor->nodeset))
        return -1;
    /* hwloc hangs a device whose locality the firmware did not report on
     * the machine itself; on a multi-node machine that says nothing. */
    if (!anchor->parent && hwloc_bitmap_weight(anchor->nodeset) > 1)
        return -1;
    /* A device local to a package that holds several nodes (sub-NUMA
     * clustering) is equally near all of them; the first is as good as any
     * and keeps the answer deterministic. */
    return hwloc_bitmap_first(anchor->nodeset);
}

static hwloc_obj_t find_osdev(hwloc_topology_t hw, const char *name)
{
    hwloc_obj_t dev = NULL;
    while ((dev = hwloc_get_next_osdev(hw, dev)) != NULL) {
        if (dev->name && strcmp(dev->name, name) == 0)
            return dev;
    }
    return NULL;
}

struct pci_address {
    unsigned domain, bus, dev, func;
};

/* Hex digits only: sscanf's %x would also take signs, blanks and a "0x"
 * prefix, so "0000:3b:00.0x" would match a device. */
static bool parse_hex(const char **text, unsigned max_digits, unsigned *out)
{
    unsigned value = 0, digits = 0;
    while (isxdigit((unsigned char)**text) && digits < max_digits) {
        char c = (char)tolower((unsigned char)**text);
        value = value * 16 + (unsigned)(isdigit((unsigned char)c) ? c - '0' : c - 'a' + 10);
        digits++;
        (*text)++;
    }
    *out = value;
    return digits > 0;
}

/* Accepts "0000:3b:00.0" and the domain-less "3b:00.0" that lspci prints. */
static bool parse_pci_address(const char *text, struct pci_address *addr)
{
    unsigned first, second;
    if (!parse_hex(&text, 8, &first) || *text++ != ':' || !parse_hex(&text, 2, &second))
        return false;
    if (*text == ':') {
        text++;
        addr->domain = first;
        addr->bus = second;
        if (!parse_hex(&text, 2, &addr->dev))
            return false;
    } else {
        addr->domain = 0;
        addr->bus = first;
        addr->dev = second;
    }
    return *text++ == '.' && parse_hex(&text, 1, &addr->func) && *text == '\0';
}

static bool pci_matches(hwloc_obj_t pci, const struct pci_address *addr)
{
    const struct hwloc_pcidev_attr_s *attr = &pci->attr->pcidev;
    return attr->domain == addr->domain && attr->bus == addr->bus &&
           attr->dev == addr->dev && attr->func == addr->func;
}

/* PCI bridges carry a bus id too, but only endpoint devices are useful to
 * place workers near. */
static hwloc_obj_t find_pcidev(hwloc_topology_t hw, const char *busid)
{
    struct pci_address addr;
    if (!parse_pci_address(busid, &addr))
        return NULL;
    hwloc_obj_t pci = NULL;
    while ((pci = hwloc_get_next_pcidev(hw, pci)) != NULL) {
        if (pci_matches(pci, &addr))
            return pci;
    }
    return NULL;
}

static hwloc_obj_t pci_device_of(hwloc_obj_t dev)
{
    hwloc_obj_t up = dev;
    while (up && up->type == HWLOC_OBJ_OS_DEVICE)
        up = up->parent;
    return up && up->type == HWLOC_OBJ_PCI_DEVICE ? up : NULL;
}

bool fdn__pci_bus_id(hwloc_obj_t dev, char *buf, size_t len)
{
    hwloc_obj_t pci = pci_device_of(dev);
    if (!pci) {
        if (len > 0)
            buf[0] = '\0';
        return false;
    }
    const struct hwloc_pcidev_attr_s *attr = &pci->attr->pcidev;
    snprintf(buf, len, "%04x:%02x:%02x.%01x", (unsigned)attr->domain, (unsigned)attr->bus,
             (unsigned)attr->dev, (unsigned)attr->func);
    return true;
}

/* A NIC's PCI function may carry several OS devices (a netdev and an RDMA
 * device); the network interface is the name people look for. */
static hwloc_obj_t preferred_osdev(hwloc_obj_t pci)
{
    hwloc_obj_t first = NULL;
    for (hwloc_obj_t child = pci->io_first_child; child; child = child->next_sibling) {
        if (child->type != HWLOC_OBJ_OS_DEVICE || !child->name)
            continue;
        if (child->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK)
            return child;
        if (!first)
            first = child;
    }
    return first;
}

static void fill_device_info(const fdn_topology *topo, hwloc_obj_t dev, fdn_device_info *out)
{
    hwloc_obj_t osdev = dev->type == HWLOC_OBJ_OS_DEVICE ? dev : preferred_osdev(dev);
    memset(out, 0, sizeof *out);
    fdn__pci_bus_id(dev, out->pci_bus_id, sizeof out->pci_bus_id);
    if (osdev)
        snprintf(out->name, sizeof out->name, "%s", osdev->name);
    else
        snprintf(out->name, sizeof out->name, "%s", out->pci_bus_id);
    out->numa_node = fdn__io_numa_node(topo, dev);
}

int fdn_topology_find_device(const fdn_topology *topo, const char *name,
                             fdn_device_info *out)
{
    if (!topo || !name || !out)
        return FDN_ERR(-EINVAL, "topology, name or out is NULL");
    hwloc_obj_t dev = find_osdev(topo->hw, name);
    if (!dev)
        dev = find_pcidev(topo->hw, name);
    if (!dev)
        return FDN_ERR(-ENOENT, "the topology has no device named \"%s\"", name);
    fill_device_info(topo, dev, out);
    return 0;
}
