/* fdn-topo: shows a machine's topology and where Foundation would place its
 * workers, for this host or for a synthetic or recorded machine. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fdn/error.h>
#include <fdn/topology.h>

struct options {
    fdn_placement_config placement;
    const char *synthetic;
    const char *xml;
    const char *restrict_to;
    bool policy_given;
};

static void usage(FILE *to)
{
    fprintf(to,
            "usage: fdn-topo [options]\n"
            "Prints the machine topology and the CPUs chosen for the workers.\n"
            "\n"
            "  -w, --workers N          workers to place (default: one per allowed core)\n"
            "  -p, --policy POLICY      compact (default), spread or near-device\n"
            "  -d, --device NAME        device for near-device (implies it unless --policy\n"
            "                           says otherwise): interface name or PCI bus id\n"
            "  -s, --smt                allow SMT siblings once every core has a worker\n"
            "  -S, --synthetic DESC     use an hwloc synthetic topology, e.g.\n"
            "                           \"pack:2 numa:2 core:8 pu:2\"\n"
            "  -x, --xml FILE           use a topology recorded with lstopo --of xml\n"
            "  -r, --restrict CPULIST   only use these CPUs, e.g. 0-7,32-39\n"
            "  -h, --help               show this help\n");
}

static int fail(const char *what, int rc)
{
    const char *detail = fdn_errmsg();
    fprintf(stderr, "fdn-topo: %s: %s%s%s\n", what, fdn_strerror(rc), *detail ? ": " : "",
            detail);
    return EXIT_FAILURE;
}

static bool parse_policy(const char *text, fdn_placement_policy *policy)
{
    static const struct {
        const char *name;
        fdn_placement_policy policy;
    } policies[] = {
        {"compact", FDN_PLACE_COMPACT},
        {"spread", FDN_PLACE_SPREAD},
        {"near-device", FDN_PLACE_NEAR_DEVICE},
    };
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++) {
        if (strcmp(text, policies[i].name) == 0) {
            *policy = policies[i].policy;
            return true;
        }
    }
    return false;
}

static bool parse_workers(const char *text, int *workers)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < 0 || value > INT_MAX)
        return false;
    *workers = (int)value;
    return true;
}

/* Returns -1 to continue, or the exit status when the options say to stop. */
static int parse_options(int argc, char **argv, struct options *opts)
{
    static const struct option long_options[] = {
        {"workers", required_argument, NULL, 'w'},
        {"policy", required_argument, NULL, 'p'},
        {"device", required_argument, NULL, 'd'},
        {"smt", no_argument, NULL, 's'},
        {"synthetic", required_argument, NULL, 'S'},
        {"xml", required_argument, NULL, 'x'},
        {"restrict", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "w:p:d:sS:x:r:h", long_options, NULL)) != -1) {
        switch (c) {
        case 'w':
            if (!parse_workers(optarg, &opts->placement.workers)) {
                fprintf(stderr, "fdn-topo: --workers needs a non-negative number\n");
                return EXIT_FAILURE;
            }
            break;
        case 'p':
            if (!parse_policy(optarg, &opts->placement.policy)) {
                fprintf(stderr, "fdn-topo: unknown policy \"%s\"\n", optarg);
                return EXIT_FAILURE;
            }
            opts->policy_given = true;
            break;
        case 'd':
            opts->placement.device = optarg;
            break;
        case 's':
            opts->placement.use_smt = true;
            break;
        case 'S':
            opts->synthetic = optarg;
            break;
        case 'x':
            opts->xml = optarg;
            break;
        case 'r':
            opts->restrict_to = optarg;
            break;
        case 'h':
            usage(stdout);
            return EXIT_SUCCESS;
        default:
            usage(stderr);
            return EXIT_FAILURE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "fdn-topo: unexpected argument \"%s\"\n", argv[optind]);
        return EXIT_FAILURE;
    }
    if (opts->synthetic && opts->xml) {
        fprintf(stderr, "fdn-topo: --synthetic and --xml exclude each other\n");
        return EXIT_FAILURE;
    }
    /* Naming a device only makes sense for placing near it. */
    if (opts->placement.device && !opts->policy_given)
        opts->placement.policy = FDN_PLACE_NEAR_DEVICE;
    return -1;
}

static int load_topology(const struct options *opts, fdn_topology **topo)
{
    if (opts->synthetic)
        return fdn_topology_load_synthetic(opts->synthetic, topo);
    if (opts->xml)
        return fdn_topology_load_xml(opts->xml, topo);
    return fdn_topology_load_host(topo);
}

static int print_description(const fdn_topology *topo)
{
    int len = fdn_topology_describe(topo, NULL, 0);
    if (len < 0)
        return len;
    char *text = malloc((size_t)len + 1);
    if (!text)
        return -ENOMEM;
    len = fdn_topology_describe(topo, text, (size_t)len + 1);
    if (len >= 0)
        fputs(text, stdout);
    free(text);
    return len < 0 ? len : 0;
}

static int print_placement(const fdn_topology *topo, const fdn_placement_config *cfg)
{
    /* Never more workers than CPUs can be placed, so that is enough room. */
    int room = fdn_topology_num_cpus(topo);
    if (cfg->workers > room)
        room = cfg->workers;
    fdn_placement *placements = calloc((size_t)room, sizeof *placements);
    if (!placements)
        return -ENOMEM;
    int placed = fdn_placement_compute(topo, cfg, placements, room);
    if (placed >= 0) {
        printf("\nPlacement:\n%6s %5s %5s %5s\n", "worker", "cpu", "core", "numa");
        for (int i = 0; i < placed; i++)
            printf("%6d %5d %5d %5d\n", i, placements[i].cpu, placements[i].core,
                   placements[i].numa_node);
    }
    free(placements);
    return placed < 0 ? placed : 0;
}

int main(int argc, char **argv)
{
    struct options opts = {.placement = {.policy = FDN_PLACE_COMPACT}};
    int status = parse_options(argc, argv, &opts);
    if (status >= 0)
        return status;

    fdn_topology *topo = NULL;
    int rc = load_topology(&opts, &topo);
    if (rc < 0)
        return fail("cannot load the topology", rc);
    if (opts.restrict_to && (rc = fdn_topology_restrict(topo, opts.restrict_to)) < 0)
        status = fail("cannot restrict the allowed CPUs", rc);
    else if ((rc = print_description(topo)) < 0)
        status = fail("cannot describe the topology", rc);
    else if ((rc = print_placement(topo, &opts.placement)) < 0)
        status = fail("cannot place the workers", rc);
    else
        status = EXIT_SUCCESS;
    fdn_topology_destroy(topo);
    return status;
}
