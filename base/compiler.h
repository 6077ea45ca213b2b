/* Small compiler and layout helpers shared by every layer. Internal. */
#ifndef FDN_BASE_COMPILER_H
#define FDN_BASE_COMPILER_H

#include <stddef.h>

#define FDN_CACHELINE 64

#define fdn__likely(x) __builtin_expect(!!(x), 1)
#define fdn__unlikely(x) __builtin_expect(!!(x), 0)

/* The object that contains member `field` at address ptr. */
#define fdn__container_of(ptr, type, field) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, field)))

#define FDN_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline size_t fdn__align_up(size_t n, size_t align)
{
    return (n + align - 1) & ~(align - 1);
}

static inline int fdn__is_pow2(unsigned long n) { return n && !(n & (n - 1)); }

/* CPU relaxation inside spin loops. */
static inline void fdn__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif
