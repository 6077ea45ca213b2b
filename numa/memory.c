/* NUMA-local memory without libnuma: anonymous mappings bound with mbind(2).
 * Nothing is touched here, so each page is placed by the binding when it is
 * first written (MAP_POPULATE would fault the pages in before the binding
 * existed, on whatever node this thread happens to run). */
#include "numa/memory.h"

#include <errno.h>
#include <linux/mempolicy.h>
#include <sched.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/compiler.h"
#include "base/error.h"

/* The mask we pass to mbind is on the stack; no kernel supports more nodes
 * than this (MAX_NUMNODES is at most 1024), so a larger node number cannot
 * exist and is simply left unbound. */
#define FDN_NUMA_MAX_NODES 4096
#define FDN_BITS_PER_LONG (8 * sizeof(unsigned long))

static size_t page_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

/* Returns whether the kernel accepted the binding. Every failure (EPERM in
 * a container without CAP_SYS_NICE-style rights, ENOSYS, EINVAL for a node
 * that does not exist or is outside our cpuset.mems) leaves the mapping
 * with the default policy, which is a usable fallback. */
static bool bind_to_node(void *mem, size_t len, int node)
{
    if (node >= FDN_NUMA_MAX_NODES)
        return false;
    unsigned long mask[FDN_NUMA_MAX_NODES / FDN_BITS_PER_LONG] = {0};
    mask[(size_t)node / FDN_BITS_PER_LONG] = 1UL << ((size_t)node % FDN_BITS_PER_LONG);
    /* The kernel reads maxnode - 1 bits, hence node + 2 to include `node`. */
    unsigned long maxnode = (unsigned long)node + 2;
    int saved = errno;
    long rc = syscall(SYS_mbind, mem, len, MPOL_BIND, mask, maxnode, 0);
    errno = saved;
    return rc == 0;
}

void *fdn__numa_alloc(size_t size, int node, bool *bound)
{
    if (bound)
        *bound = false;
    size_t page = page_size();
    if (size == 0 || size > SIZE_MAX - page) {
        int err = size == 0 ? EINVAL : ENOMEM;
        FDN_ERR(-err, "cannot map %zu bytes", size);
        errno = err;
        return NULL;
    }
    size_t len = fdn__align_up(size, page);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        int err = errno;
        FDN_ERR(-err, "mmap of %zu bytes failed", len);
        errno = err;
        return NULL;
    }
    bool ok = node >= 0 && bind_to_node(mem, len, node);
    if (bound)
        *bound = ok;
    return mem;
}

void fdn__numa_free(void *mem, size_t size)
{
    if (!mem || size == 0)
        return;
    munmap(mem, fdn__align_up(size, page_size()));
}

int fdn__numa_current_node(void)
{
    unsigned cpu = 0, node = 0;
    if (getcpu(&cpu, &node) != 0)
        return 0;
    return (int)node;
}
