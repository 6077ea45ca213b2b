#include <errno.h>
#include <liburing.h>

#include <fdn/topology.h>
#include <fdn/version.h>

const char *fdn_version(void) { return FDN_VERSION_STRING; }

static void probe_io_uring(fdn_capabilities *caps)
{
    struct io_uring ring;
    if (io_uring_queue_init(4, &ring, 0) < 0)
        return;
    caps->io_uring = true;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (probe) {
        caps->io_uring_msg_ring = io_uring_opcode_supported(probe, IORING_OP_MSG_RING);
        caps->io_uring_send_zc = io_uring_opcode_supported(probe, IORING_OP_SEND_ZC);
        io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
}

int fdn_capabilities_probe(fdn_capabilities *caps)
{
    *caps = (fdn_capabilities){0};
    probe_io_uring(caps);
    fdn_topology *topo;
    int rc = fdn_topology_load_host_cpus(&topo);
    if (rc < 0)
        return rc;
    caps->numa_nodes = fdn_topology_num_numa_nodes(topo);
    caps->cpus_allowed = fdn_topology_num_allowed_cpus(topo);
    fdn_topology_destroy(topo);
    return 0;
}
