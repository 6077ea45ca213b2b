/* Strict parsing and formatting of numeric TCP addresses. Every rejection
 * says what was wrong in fdn_errmsg(), since a typo in a configuration file
 * is the usual cause. */
#include "transport/tcp_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "base/error.h"

/* Longer hosts cannot be numeric addresses (an IPv6 text form is at most
 * INET6_ADDRSTRLEN - 1 characters). */
#define HOST_MAX INET6_ADDRSTRLEN

/* Parses the decimal port after the host: 1 to 5 digits, no sign, <= 65535. */
static int parse_port(const char *addr, const char *p, bool allow_port0, in_port_t *out)
{
    if (*p == '\0')
        return FDN_ERR(-EINVAL, "address \"%s\": missing port after ':'", addr);
    unsigned long port = 0;
    int digits = 0;
    for (; *p; p++, digits++) {
        if (*p < '0' || *p > '9' || digits == 5)
            return FDN_ERR(-EINVAL, "address \"%s\": the port must be a decimal number "
                           "from 0 to 65535", addr);
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535)
        return FDN_ERR(-EINVAL, "address \"%s\": port %lu is above 65535", addr, port);
    if (port == 0 && !allow_port0)
        return FDN_ERR(-EINVAL, "address \"%s\": port 0 is only valid for listening", addr);
    *out = htons((in_port_t)port);
    return 0;
}

static int parse_v6(const char *addr, struct sockaddr_storage *out, socklen_t *out_len,
                    bool allow_port0)
{
    const char *close = strchr(addr, ']');
    if (!close)
        return FDN_ERR(-EINVAL, "address \"%s\": '[' without a closing ']'", addr);
    size_t host_len = (size_t)(close - (addr + 1));
    if (host_len == 0 || host_len >= HOST_MAX)
        return FDN_ERR(-EINVAL, "address \"%s\": the IPv6 address inside [] is empty or "
                       "too long", addr);
    char host[HOST_MAX];
    memcpy(host, addr + 1, host_len);
    host[host_len] = '\0';
    if (strchr(host, '%'))
        return FDN_ERR(-EINVAL, "address \"%s\": zone ids (%%eth0) are not supported", addr);
    if (close[1] != ':')
        return FDN_ERR(-EINVAL, "address \"%s\": expected ':port' after ']'", addr);

    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
    memset(out, 0, sizeof *out);
    sin6->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
        return FDN_ERR(-EINVAL, "address \"%s\": \"%s\" is not a numeric IPv6 address",
                       addr, host);
    *out_len = sizeof *sin6;
    return parse_port(addr, close + 2, allow_port0, &sin6->sin6_port);
}

static int parse_v4(const char *addr, struct sockaddr_storage *out, socklen_t *out_len,
                    bool allow_port0)
{
    const char *colon = strrchr(addr, ':');
    if (!colon)
        return FDN_ERR(-EINVAL, "address \"%s\": expected host:port", addr);
    if (memchr(addr, ':', (size_t)(colon - addr)))
        return FDN_ERR(-EINVAL, "address \"%s\": IPv6 addresses go in brackets, "
                       "as in [::1]:7000", addr);
    size_t host_len = (size_t)(colon - addr);
    if (host_len == 0 || host_len >= HOST_MAX)
        return FDN_ERR(-EINVAL, "address \"%s\": the host is empty or too long", addr);
    char host[HOST_MAX];
    memcpy(host, addr, host_len);
    host[host_len] = '\0';

    struct sockaddr_in *sin = (struct sockaddr_in *)out;
    memset(out, 0, sizeof *out);
    sin->sin_family = AF_INET;
    /* inet_pton accepts exactly four decimal parts, unlike inet_aton
     * ("127.1", "0x7f.0.0.1"), so a typo cannot mean another host. */
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return FDN_ERR(-EINVAL, "address \"%s\": \"%s\" is not a dotted-quad IPv4 address "
                       "(host names are not resolved: give a numeric address)", addr, host);
    *out_len = sizeof *sin;
    return parse_port(addr, colon + 1, allow_port0, &sin->sin_port);
}

int fdn__tcp_parse_addr(const char *addr, bool allow_port0, struct sockaddr_storage *out,
                        socklen_t *out_len)
{
    if (!addr || !*addr)
        return FDN_ERR(-EINVAL, "empty TCP address (expected host:port)");
    if (addr[0] == '[')
        return parse_v6(addr, out, out_len, allow_port0);
    return parse_v4(addr, out, out_len, allow_port0);
}

int fdn__tcp_format_host(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, host,
                  sizeof host);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, host,
                  sizeof host);
    else
        return -EAFNOSUPPORT;
    int n = snprintf(buf, len, "%s", host);
    return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

int fdn__tcp_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    int n;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        n = snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        n = snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
    } else {
        return -EAFNOSUPPORT;
    }
    if (n < 0 || (size_t)n >= len)
        return -ENOSPC;
    return n;
}
