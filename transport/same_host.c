/* Same-host shortcuts: a TCP listener is also reachable through shared
 * memory, and a dial to a TCP address of this host tries that first.
 *
 * The shm listener that accompanies a TCP listener bound at HOST:PORT is
 * named "@fdn-tcp-HOST:PORT" in the abstract unix namespace, HOST:PORT
 * exactly as fdn_node_listen_addr() prints the TCP side ("127.0.0.1:7000",
 * "0.0.0.0:7000", "[::1]:7000"). Abstract names are scoped to the network
 * namespace, as local TCP addresses are: a process that can see the name is
 * one that could reach the TCP listener through this host's own stack, so
 * it can share memory with it. (A process in another namespace with the
 * same port sees neither.)
 *
 * Why the bound host is in the name, not just the port: several nodes on
 * one host may listen on the same port at different addresses (127.0.0.1,
 * 127.0.0.2, ... is the usual way to run a small cluster on one machine),
 * and a port-only name would send all of them to whichever bound it first.
 * The dialling side therefore asks for the listeners TCP itself would
 * deliver to, in the kernel's order: the exact address, then the wildcard
 * of the same family, then, for IPv4, the IPv6 wildcard (it accepts IPv4
 * too unless IPV6_V6ONLY). Linux refuses a listener on HOST:PORT while a
 * wildcard listens on PORT and the reverse, so at most one of these names
 * exists, and it belongs to the node TCP would have reached. A name that
 * does not exist is refused at once (ECONNREFUSED, no timeout), so the
 * misses cost a few microseconds on the dial path only. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/transport.h"
#include "transport/tcp_internal.h"

#define SHORTCUT_PREFIX "shm://@fdn-tcp-"
#define TCP_SCHEME "tcp://"

/* An IPv4-mapped IPv6 address ("[::ffff:127.0.0.1]:7000") reaches IPv4
 * listeners: it is dialled, and named, as the IPv4 address it maps. */
static void unmap_v4(struct sockaddr_storage *ss)
{
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
        return;
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_port = s6->sin6_port};
    memcpy(&v4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &v4, sizeof v4);
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)(const void *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* Whether a connection to ss stays on this host (in this network
 * namespace): loopback, the unspecified address (which Linux connects to
 * loopback), or an address of one of our interfaces. */
static bool is_this_host(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        in_addr_t a = ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr);
        if ((a >> 24) == 127 || a == INADDR_ANY)
            return true;
    } else {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a))
            return true;
    }
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) < 0)
        return false; /* unknown: TCP, which always works */
    bool found = false;
    for (struct ifaddrs *i = ifs; i && !found; i = i->ifa_next)
        found = i->ifa_addr && same_ip(i->ifa_addr, ss);
    freeifaddrs(ifs);
    return found;
}

static int shortcut_name(const char *hostport, char *buf, size_t len)
{
    int n = snprintf(buf, len, SHORTCUT_PREFIX "%s", hostport);
    return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

int fdn__same_host_listen_addr(const char *bound, char *buf, size_t len)
{
    if (strncmp(bound, TCP_SCHEME, strlen(TCP_SCHEME)) != 0)
        return 0; /* only TCP listeners have a shortcut */
    return shortcut_name(bound + strlen(TCP_SCHEME), buf, len);
}

int fdn__same_host_dial_addrs(const char *addr, char (*out)[FDN__ADDR_MAX], int max)
{
    struct sockaddr_storage ss;
    socklen_t ss_len;
    if (strncmp(addr, TCP_SCHEME, strlen(TCP_SCHEME)) != 0 ||
        fdn__tcp_parse_addr(addr + strlen(TCP_SCHEME), false, &ss, &ss_len) < 0)
        return 0; /* not TCP, or malformed: the dial itself will say why */
    unmap_v4(&ss);
    if (!is_this_host(&ss))
        return 0;
    in_port_t port = ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                             : ((struct sockaddr_in6 *)&ss)->sin6_port;
    struct sockaddr_in any4 = {.sin_family = AF_INET, .sin_port = port};
    struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_port = port};
    const struct sockaddr *names[3] = {(const struct sockaddr *)&ss, NULL, NULL};
    int count = 1;
    if (ss.ss_family == AF_INET) {
        if (((struct sockaddr_in *)&ss)->sin_addr.s_addr != INADDR_ANY)
            names[count++] = (const struct sockaddr *)&any4;
        names[count++] = (const struct sockaddr *)&any6;
    } else if (!IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)&ss)->sin6_addr)) {
        names[count++] = (const struct sockaddr *)&any6;
    }
    int n = 0;
    for (int i = 0; i < count && n < max; i++) {
        char hostport[FDN__TCP_ADDR_MAX];
        if (fdn__tcp_format_addr(names[i], hostport, sizeof hostport) < 0 ||
            shortcut_name(hostport, out[n], FDN__ADDR_MAX) < 0)
            continue;
        n++;
    }
    return n;
}
