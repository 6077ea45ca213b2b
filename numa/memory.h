/* NUMA-local memory for pools, rings and worker state. Internal. */
#ifndef FDN_NUMA_MEMORY_H
#define FDN_NUMA_MEMORY_H

#include <stdbool.h>
#include <stddef.h>

/* Maps size bytes (rounded up to whole pages) of zeroed memory and binds it
 * to kernel NUMA node `node` (-1: no binding). Where the kernel does not
 * permit binding (EPERM in a container, ENOSYS, a node that does not exist)
 * the memory stays unbound and *bound is false: a fallback, not an error.
 * bound may be NULL. Returns NULL (errno set) only when no memory could be
 * mapped at all. Free with fdn__numa_free() and the same size. */
void *fdn__numa_alloc(size_t size, int node, bool *bound);

void fdn__numa_free(void *mem, size_t size);

/* The kernel NUMA node of the CPU the calling thread runs on, or 0. */
int fdn__numa_current_node(void);

#endif
