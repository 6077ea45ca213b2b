/* Running helper programs (ip, tc, gnuplot) and the network-namespace
 * bottleneck: two namespaces of our own, fdnisoA-PID (client) and
 * fdnisoB-PID (server), joined by a veth pair with private addresses, and a
 * tbf qdisc on the client's end so that a queue builds in the client ->
 * server direction, the direction of the bulk stream. Nothing outside these
 * namespaces is touched, and deleting a namespace deletes its veth end. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "isolate.h"

int iso_run_command(char *const argv[], bool quiet)
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        if (quiet) {
            int null = open("/dev/null", O_WRONLY);
            if (null >= 0) {
                dup2(null, STDOUT_FILENO);
                dup2(null, STDERR_FILENO);
            }
        }
        execvp(argv[0], argv);
        fprintf(stderr, "fdn-isolate: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool iso_have_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        char file[4096 + 256];
        snprintf(dir, sizeof dir, "%.*s", (int)n, path);
        snprintf(file, sizeof file, "%s/%s", n ? dir : ".", name);
        if (access(file, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

/* Runs one `ip` or `tc` step, saying which one failed. */
static int step(char *const argv[])
{
    int rc = iso_run_command(argv, false);
    if (rc == 0)
        return 0;
    fprintf(stderr, "fdn-isolate: `");
    for (int i = 0; argv[i]; i++)
        fprintf(stderr, "%s%s", i ? " " : "", argv[i]);
    fprintf(stderr, "` failed (%d)\n", rc);
    return -EIO;
}

static int add_namespace(const char *name, bool *made)
{
    int rc = step((char *const[]){"ip", "netns", "add", (char *)name, NULL});
    *made = rc == 0;
    return rc;
}

static int set_up_link(const char *ns, const char *dev, const char *addr)
{
    int rc = 0;
    if (addr)
        rc = step((char *const[]){"ip", "-n", (char *)ns, "addr", "add", (char *)addr, "dev",
                                  (char *)dev, NULL});
    if (rc == 0)
        rc = step((char *const[]){"ip", "-n", (char *)ns, "link", "set", (char *)dev, "up",
                                  NULL});
    return rc;
}

int iso_netns_create(struct iso_netns *n, const char *rate)
{
    *n = (struct iso_netns){0};
    pid_t pid = getpid();
    /* 10.201.X.0/30: a private subnet that only exists inside our two
     * namespaces; X varies with the pid only to tell runs apart in traces. */
    unsigned subnet = (unsigned)pid % 256;
    char client_addr[32], server_addr[32];
    snprintf(n->client_ns, sizeof n->client_ns, "fdnisoA-%d", (int)pid);
    snprintf(n->server_ns, sizeof n->server_ns, "fdnisoB-%d", (int)pid);
    snprintf(client_addr, sizeof client_addr, "10.201.%u.1/30", subnet);
    snprintf(server_addr, sizeof server_addr, "10.201.%u.2/30", subnet);
    snprintf(n->server_ip, sizeof n->server_ip, "10.201.%u.2", subnet);

    int rc = add_namespace(n->client_ns, &n->client_made);
    if (rc == 0)
        rc = add_namespace(n->server_ns, &n->server_made);
    if (rc == 0)
        rc = step((char *const[]){"ip", "-n", n->client_ns, "link", "add", "vethA", "type",
                                  "veth", "peer", "name", "vethB", "netns", n->server_ns, NULL});
    if (rc == 0)
        rc = set_up_link(n->client_ns, "lo", NULL);
    if (rc == 0)
        rc = set_up_link(n->server_ns, "lo", NULL);
    if (rc == 0)
        rc = set_up_link(n->client_ns, "vethA", client_addr);
    if (rc == 0)
        rc = set_up_link(n->server_ns, "vethB", server_addr);
    /* burst 32kbit (4000 bytes) and latency 50ms, as the benchmark's
     * definition says: a shallow bucket and a queue that really builds. */
    if (rc == 0)
        rc = step((char *const[]){"tc", "-n", n->client_ns, "qdisc", "add", "dev", "vethA",
                                  "root", "tbf", "rate", (char *)rate, "burst", "32kbit",
                                  "latency", "50ms", NULL});
    if (rc < 0)
        iso_netns_destroy(n);
    return rc;
}

void iso_netns_destroy(struct iso_netns *n)
{
    if (n->client_made)
        step((char *const[]){"ip", "netns", "del", n->client_ns, NULL});
    if (n->server_made)
        step((char *const[]){"ip", "netns", "del", n->server_ns, NULL});
    n->client_made = n->server_made = false;
}
