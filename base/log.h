/* Emitting log lines (include/fdn/log.h). Internal.
 *
 *     fdn__log(FDN_LOG_WARN, "%s: idle timeout", addr);
 *
 * The level is checked before anything is formatted; a line is formatted
 * once into a buffer on the caller's stack and handed over in one call, so
 * lines from several threads never interleave. Callers that must work to
 * build a line's arguments check fdn__log_enabled() first. */
#ifndef FDN_BASE_LOG_H
#define FDN_BASE_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <fdn/log.h>

/* Longest line, the NUL included. */
#define FDN__LOG_LINE_MAX 1024

/* The level in force; above FDN_LOG_DEBUG until FDN_LOG has been read, so
 * that the first check lets the line through to fdn__log, which reads it. */
extern _Atomic int fdn__log_threshold;

static inline bool fdn__log_enabled(int level)
{
    return level <= atomic_load_explicit(&fdn__log_threshold, memory_order_relaxed);
}

void fdn__log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fdn__vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#endif
