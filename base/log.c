#include "base/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/io.h"

_Atomic int fdn__log_threshold = FDN_LOG_DEBUG + 1;

static pthread_once_t env_once = PTHREAD_ONCE_INIT;

/* The handler and its argument change together, so they are read and
 * written under a lock; the call itself is made outside it, so a handler
 * that logs, or sets a handler, cannot deadlock. */
static pthread_mutex_t handler_lock = PTHREAD_MUTEX_INITIALIZER;
static fdn_log_fn handler;
static void *handler_arg;

static const char *const level_names[] = {"off", "error", "warn", "info", "debug"};

static void read_env(void)
{
    int level = FDN_LOG_WARN;
    const char *e = getenv("FDN_LOG");
    if (e && *e) {
        int found = -1;
        for (int i = FDN_LOG_OFF; i <= FDN_LOG_DEBUG; i++)
            if (!strcasecmp(e, level_names[i]))
                found = i;
        if (found >= 0) {
            level = found;
        } else {
            /* Said on stderr whatever the handler: the application may not
             * have set one yet, and nobody else would tell. */
            char line[160];
            int n = snprintf(line, sizeof line,
                             "fdn: FDN_LOG=%.40s not understood (error, warn, info, debug or "
                             "off); using warn\n", e);
            if (n > 0)
                fdn__write_all(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n
                                                                            : sizeof line - 1);
        }
    }
    atomic_store_explicit(&fdn__log_threshold, level, memory_order_relaxed);
}

int fdn_log_set_level(int level)
{
    if (level < FDN_LOG_OFF || level > FDN_LOG_DEBUG)
        return -EINVAL;
    /* FDN_LOG first, so that reading it later cannot undo this. */
    pthread_once(&env_once, read_env);
    atomic_store_explicit(&fdn__log_threshold, level, memory_order_relaxed);
    return 0;
}

int fdn_log_level(void)
{
    pthread_once(&env_once, read_env);
    return atomic_load_explicit(&fdn__log_threshold, memory_order_relaxed);
}

void fdn_log_set_handler(fdn_log_fn fn, void *arg)
{
    pthread_mutex_lock(&handler_lock);
    handler = fn;
    handler_arg = fn ? arg : NULL;
    pthread_mutex_unlock(&handler_lock);
}

/* One write per line, so that lines of several threads (and processes
 * sharing the descriptor) do not interleave. */
static void write_stderr(const char *line)
{
    char buf[FDN__LOG_LINE_MAX + 8];
    int n = snprintf(buf, sizeof buf, "fdn: %s\n", line);
    if (n > 0)
        fdn__write_all(STDERR_FILENO, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void fdn__vlog(int level, const char *fmt, va_list ap)
{
    if (!fdn__log_enabled(level))
        return;
    pthread_once(&env_once, read_env);
    if (level <= FDN_LOG_OFF || !fdn__log_enabled(level))
        return;
    char line[FDN__LOG_LINE_MAX];
    vsnprintf(line, sizeof line, fmt, ap);
    pthread_mutex_lock(&handler_lock);
    fdn_log_fn fn = handler;
    void *arg = handler_arg;
    pthread_mutex_unlock(&handler_lock);
    if (fn)
        fn(level, line, arg);
    else
        write_stderr(line);
}

void fdn__log(int level, const char *fmt, ...)
{
    if (!fdn__log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    fdn__vlog(level, fmt, ap);
    va_end(ap);
}
