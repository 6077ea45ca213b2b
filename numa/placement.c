/* fdn_placement_compute(): choosing CPUs for workers.
 *
 * The allowed CPUs are grouped into cores and the cores into NUMA nodes,
 * all in topology order. A policy only decides the order in which nodes are
 * visited (and, for SPREAD, that they are visited one core at a time); the
 * first pass takes each core's first allowed CPU, and with use_smt later
 * passes take the sibling CPUs in the same order. Everything is derived from
 * topology order, so the same topology and config always give the same
 * answer. Only the public topology API is used here. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include <fdn/topology.h>

#include "base/error.h"

/* An allowed core: its allowed CPUs are cpus[first_cpu .. first_cpu+ncpus),
 * in SMT rank order. */
struct core_slot {
    int first_cpu;
    int ncpus;
};

/* A NUMA node holding allowed cores: node_cores[first .. first+count) are
 * indexes into cores, in topology order. `key` orders nodes for a policy. */
struct node_group {
    int numa_node;
    int package;
    int first;
    int count;
    int key;
    int index;
};

struct plan {
    fdn_cpu_info *cpus; /* allowed CPUs, topology order */
    int ncpus;
    struct core_slot *cores;
    int ncores;
    struct node_group *nodes;
    int nnodes;
    int *node_cores;
    int *order; /* the policy's core visiting order, ncores entries */
};

static void plan_free(struct plan *plan)
{
    free(plan->cpus);
    free(plan->cores);
    free(plan->nodes);
    free(plan->node_cores);
    free(plan->order);
}

static int plan_alloc(struct plan *plan, int n)
{
    size_t count = n > 0 ? (size_t)n : 1;
    *plan = (struct plan){
        .cpus = calloc(count, sizeof *plan->cpus),
        .cores = calloc(count, sizeof *plan->cores),
        .nodes = calloc(count, sizeof *plan->nodes),
        .node_cores = calloc(count, sizeof *plan->node_cores),
        .order = calloc(count, sizeof *plan->order),
    };
    if (plan->cpus && plan->cores && plan->nodes && plan->node_cores && plan->order)
        return 0;
    plan_free(plan);
    return FDN_ERR(-ENOMEM, "cannot allocate a placement plan for %d CPUs", n);
}

/* Adds an allowed CPU. hwloc numbers PUs depth-first, so the PUs of one core
 * are consecutive and a new core starts whenever the core index changes. */
static void plan_add_cpu(struct plan *plan, const fdn_cpu_info *cpu)
{
    bool same_core = plan->ncpus > 0 && plan->cpus[plan->ncpus - 1].core == cpu->core;
    if (!same_core)
        plan->cores[plan->ncores++] = (struct core_slot){.first_cpu = plan->ncpus};
    plan->cores[plan->ncores - 1].ncpus++;
    plan->cpus[plan->ncpus++] = *cpu;
}

static int plan_collect_cpus(struct plan *plan, const fdn_topology *topo)
{
    int n = fdn_topology_num_cpus(topo);
    for (int i = 0; i < n; i++) {
        fdn_cpu_info cpu;
        int rc = fdn_topology_cpu(topo, i, &cpu);
        if (rc < 0)
            return rc;
        if (cpu.allowed)
            plan_add_cpu(plan, &cpu);
    }
    return 0;
}

static int find_or_add_node(struct plan *plan, const fdn_cpu_info *cpu)
{
    for (int n = 0; n < plan->nnodes; n++) {
        if (plan->nodes[n].numa_node == cpu->numa_node)
            return n;
    }
    plan->nodes[plan->nnodes] = (struct node_group){
        .numa_node = cpu->numa_node,
        .package = cpu->package,
        .index = plan->nnodes,
    };
    return plan->nnodes++;
}

/* Groups the cores by NUMA node, nodes in order of first appearance (which
 * is topology order), cores within a node in topology order. */
static void plan_group_nodes(struct plan *plan)
{
    int *node_of_core = plan->order; /* scratch: order is computed later */
    for (int c = 0; c < plan->ncores; c++) {
        int n = find_or_add_node(plan, &plan->cpus[plan->cores[c].first_cpu]);
        node_of_core[c] = n;
        plan->nodes[n].count++;
    }
    int first = 0;
    for (int n = 0; n < plan->nnodes; n++) {
        plan->nodes[n].first = first;
        first += plan->nodes[n].count;
        plan->nodes[n].count = 0;
    }
    for (int c = 0; c < plan->ncores; c++) {
        struct node_group *node = &plan->nodes[node_of_core[c]];
        plan->node_cores[node->first + node->count++] = c;
    }
}

static int compare_nodes(const void *a, const void *b)
{
    const struct node_group *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static void sort_nodes(struct plan *plan)
{
    qsort(plan->nodes, (size_t)plan->nnodes, sizeof *plan->nodes, compare_nodes);
}

/* SPREAD visits the first node of every package, then the second of every
 * package, and so on, so that consecutive workers alternate packages as
 * well as nodes. */
static void key_nodes_for_spread(struct plan *plan)
{
    int npackages = 0;
    int *package_order = plan->order; /* scratch: order is computed later */
    for (int n = 0; n < plan->nnodes; n++) {
        struct node_group *node = &plan->nodes[n];
        int ordinal = 0, rank = 0;
        while (ordinal < npackages && package_order[ordinal] != node->package)
            ordinal++;
        if (ordinal == npackages)
            package_order[npackages++] = node->package;
        for (int m = 0; m < n; m++)
            rank += plan->nodes[m].package == node->package;
        node->key = rank * plan->nnodes + ordinal;
    }
}

/* NEAR_DEVICE visits the device's node first, then the other nodes of its
 * package (they share the device's I/O path), then the rest. */
static void key_nodes_near(struct plan *plan, int device_node, int device_package)
{
    for (int n = 0; n < plan->nnodes; n++) {
        struct node_group *node = &plan->nodes[n];
        node->key = (node->numa_node != device_node) + (node->package != device_package);
    }
}

static void order_compact(struct plan *plan)
{
    int k = 0;
    for (int n = 0; n < plan->nnodes; n++) {
        const struct node_group *node = &plan->nodes[n];
        for (int i = 0; i < node->count; i++)
            plan->order[k++] = plan->node_cores[node->first + i];
    }
}

static void order_round_robin(struct plan *plan)
{
    int k = 0;
    for (int round = 0; k < plan->ncores; round++) {
        for (int n = 0; n < plan->nnodes; n++) {
            const struct node_group *node = &plan->nodes[n];
            if (round < node->count)
                plan->order[k++] = plan->node_cores[node->first + round];
        }
    }
}

/* The package of a NUMA node among all CPUs (allowed or not), so that a
 * device on a node we may not use still pulls workers to its package. */
static int package_of_node(const fdn_topology *topo, int numa_node)
{
    int n = fdn_topology_num_cpus(topo);
    for (int i = 0; i < n; i++) {
        fdn_cpu_info cpu;
        if (fdn_topology_cpu(topo, i, &cpu) == 0 && cpu.numa_node == numa_node)
            return cpu.package;
    }
    return -1;
}

static int device_node(const fdn_topology *topo, const char *device, int *node)
{
    fdn_device_info info;
    int rc = fdn_topology_find_device(topo, device, &info);
    if (rc < 0)
        return rc;
    *node = info.numa_node;
    return 0;
}

static int plan_order(struct plan *plan, const fdn_topology *topo,
                      const fdn_placement_config *cfg)
{
    if (cfg->policy == FDN_PLACE_SPREAD) {
        key_nodes_for_spread(plan);
        sort_nodes(plan);
        order_round_robin(plan);
        return 0;
    }
    if (cfg->policy == FDN_PLACE_NEAR_DEVICE) {
        int node;
        int rc = device_node(topo, cfg->device, &node);
        if (rc < 0)
            return rc;
        /* A device of unknown locality gives no preference: plain compact. */
        if (node >= 0) {
            key_nodes_near(plan, node, package_of_node(topo, node));
            sort_nodes(plan);
        }
    }
    order_compact(plan);
    return 0;
}

static fdn_placement placement_of(const fdn_cpu_info *cpu)
{
    return (fdn_placement){
        .cpu = cpu->os_index,
        .core = cpu->core,
        .numa_node = cpu->numa_node,
    };
}

/* Pass 0 takes every core's first allowed CPU in policy order; pass r takes
 * the r-th sibling of the cores that have one. */
static int plan_emit(const struct plan *plan, int workers, fdn_placement *out)
{
    int placed = 0;
    for (int pass = 0; placed < workers; pass++) {
        for (int i = 0; i < plan->ncores && placed < workers; i++) {
            const struct core_slot *core = &plan->cores[plan->order[i]];
            if (pass < core->ncpus)
                out[placed++] = placement_of(&plan->cpus[core->first_cpu + pass]);
        }
    }
    return placed;
}

static int plan_place(const struct plan *plan, const fdn_placement_config *cfg,
                      fdn_placement *out, int max_out)
{
    int workers = cfg->workers ? cfg->workers : plan->ncores;
    int capacity = cfg->use_smt ? plan->ncpus : plan->ncores;
    if (workers > capacity)
        return FDN_ERR(-ENOSPC, "%d workers asked for, %d allowed %s", workers, capacity,
                       cfg->use_smt ? "CPUs" : "cores (use_smt is off)");
    if (workers > max_out)
        return FDN_ERR(-ERANGE, "%d workers do not fit in %d placements", workers, max_out);
    return plan_emit(plan, workers, out);
}

static int validate(const fdn_topology *topo, const fdn_placement_config *cfg,
                    const fdn_placement *out, int max_out)
{
    if (!topo || !cfg)
        return FDN_ERR(-EINVAL, "topology or config is NULL");
    if (cfg->workers < 0)
        return FDN_ERR(-EINVAL, "negative worker count %d", cfg->workers);
    if (cfg->policy != FDN_PLACE_COMPACT && cfg->policy != FDN_PLACE_SPREAD &&
        cfg->policy != FDN_PLACE_NEAR_DEVICE)
        return FDN_ERR(-EINVAL, "unknown placement policy %d", (int)cfg->policy);
    if (cfg->policy == FDN_PLACE_NEAR_DEVICE && (!cfg->device || !*cfg->device))
        return FDN_ERR(-EINVAL, "NEAR_DEVICE placement needs a device name");
    if (max_out < 0 || (!out && max_out > 0))
        return FDN_ERR(-EINVAL, "bad output array (max_out %d)", max_out);
    return 0;
}

int fdn_placement_compute(const fdn_topology *topo, const fdn_placement_config *cfg,
                          fdn_placement *out, int max_out)
{
    int rc = validate(topo, cfg, out, max_out);
    if (rc < 0)
        return rc;
    struct plan plan;
    rc = plan_alloc(&plan, fdn_topology_num_cpus(topo));
    if (rc < 0)
        return rc;
    rc = plan_collect_cpus(&plan, topo);
    if (rc == 0) {
        plan_group_nodes(&plan);
        rc = plan_order(&plan, topo, cfg);
    }
    if (rc == 0)
        rc = plan_place(&plan, cfg, out, max_out);
    plan_free(&plan);
    return rc;
}
