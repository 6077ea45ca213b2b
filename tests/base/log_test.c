/* The log module (include/fdn/log.h, base/log.c): FDN_LOG read once and
 * overridden by fdn_log_set_level, lines filtered by level before they are
 * formatted, a handler that receives whole lines, the default handler's one
 * write to stderr, and lines from several threads that never interleave. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fdn/log.h>

#include "base/log.h"
#include "test.h"

struct capture {
    pthread_mutex_t lock;
    int lines;
    int last_level;
    char last[FDN__LOG_LINE_MAX];
    int bad;                       /* lines not as some thread wrote them */
};

static void capture_line(int level, const char *line, void *arg)
{
    struct capture *c = arg;
    pthread_mutex_lock(&c->lock);
    c->lines++;
    c->last_level = level;
    snprintf(c->last, sizeof c->last, "%s", line);
    /* The threads' lines: "thread T line N " then T repeated 200 times. */
    int t, n, used;
    if (sscanf(line, "thread %d line %d %n", &t, &n, &used) == 2) {
        size_t len = strlen(line + used);
        bool whole = len == 200;
        for (size_t i = 0; whole && i < len; i++)
            whole = line[used + i] == (char)('a' + t);
        c->bad += !whole;
    }
    pthread_mutex_unlock(&c->lock);
}

static struct capture cap = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* An argument whose evaluation the level check must not need: a filtered
 * line is never formatted, so it is never called. */
static int formatted;
static const char *counted(const char *s)
{
    formatted++;
    return s;
}

static void test_env_read_once(void)
{
    /* main() set FDN_LOG=info before anything logged. */
    CHECK_EQ(fdn_log_level(), FDN_LOG_INFO);
    setenv("FDN_LOG", "debug", 1);   /* read once: too late now */
    CHECK_EQ(fdn_log_level(), FDN_LOG_INFO);
}

static void test_levels_and_handler(void)
{
    fdn_log_set_handler(capture_line, &cap);
    CHECK_EQ(fdn_log_set_level(FDN_LOG_DEBUG + 1), -EINVAL);
    CHECK_EQ(fdn_log_set_level(-1), -EINVAL);
    CHECK_OK(fdn_log_set_level(FDN_LOG_WARN));
    int before = cap.lines;
    formatted = 0;
    if (fdn__log_enabled(FDN_LOG_INFO))
        fdn__log(FDN_LOG_INFO, "%s", counted("not shown"));
    fdn__log(FDN_LOG_DEBUG, "not shown either %d", 1);
    CHECK_EQ(cap.lines, before);
    CHECK_EQ(formatted, 0);
    fdn__log(FDN_LOG_WARN, "peer %s lane %d: %s", "tcp://10.0.0.1:7000", 2, "idle timeout");
    CHECK_EQ(cap.lines, before + 1);
    CHECK_EQ(cap.last_level, FDN_LOG_WARN);
    CHECK(!strcmp(cap.last, "peer tcp://10.0.0.1:7000 lane 2: idle timeout"));
    fdn__log(FDN_LOG_ERROR, "worse");
    CHECK_EQ(cap.lines, before + 2);
    CHECK_OK(fdn_log_set_level(FDN_LOG_OFF));
    fdn__log(FDN_LOG_ERROR, "silenced");
    CHECK_EQ(cap.lines, before + 2);
    CHECK_OK(fdn_log_set_level(FDN_LOG_INFO));
    /* Long lines are cut, never overrun. */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    fdn__log(FDN_LOG_INFO, "%s", big);
    CHECK_EQ(strlen(cap.last), FDN__LOG_LINE_MAX - 1);
}

/* The default handler: "fdn: <line>\n" on stderr. */
static void test_default_handler_writes_stderr(void)
{
    fdn_log_set_handler(NULL, NULL);
    int fds[2];
    CHECK(pipe(fds) == 0);
    int saved = dup(STDERR_FILENO);
    CHECK(saved >= 0);
    CHECK(dup2(fds[1], STDERR_FILENO) >= 0);
    fdn__log(FDN_LOG_WARN, "lane %d: %s", 1, "connection reset");
    fflush(stderr);
    CHECK(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fds[1]);
    char got[128] = {0};
    ssize_t n = read(fds[0], got, sizeof got - 1);
    close(fds[0]);
    CHECK(n > 0);
    CHECK(!strcmp(got, "fdn: lane 1: connection reset\n"));
}

#define THREADS 4
#define LINES_PER_THREAD 2000

static void *log_lines(void *arg)
{
    int t = (int)(intptr_t)arg;
    char tail[201];
    memset(tail, 'a' + t, 200);
    tail[200] = '\0';
    for (int i = 0; i < LINES_PER_THREAD; i++)
        fdn__log(FDN_LOG_INFO, "thread %d line %d %s", t, i, tail);
    return NULL;
}

/* Lines from several threads arrive whole, one call each; the handler may
 * be changed meanwhile (here: set again to itself). */
static void test_threads(void)
{
    fdn_log_set_handler(capture_line, &cap);
    CHECK_OK(fdn_log_set_level(FDN_LOG_INFO));
    int before = cap.lines;
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, log_lines, (void *)(intptr_t)t) == 0);
    for (int i = 0; i < 100; i++)
        fdn_log_set_handler(capture_line, &cap);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    CHECK_EQ(cap.lines - before, THREADS * LINES_PER_THREAD);
    CHECK_EQ(cap.bad, 0);
    fdn_log_set_handler(NULL, NULL);
}

int main(void)
{
    setenv("FDN_LOG", "info", 1);
    RUN(test_env_read_once);
    RUN(test_levels_and_handler);
    RUN(test_default_handler_writes_stderr);
    RUN(test_threads);
    return 0;
}
