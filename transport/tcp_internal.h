/* The TCP transport's descriptor and its address helpers. Internal.
 *
 * Addresses are numeric only: "1.2.3.4:port" for IPv4 and "[v6]:port" for
 * IPv6. Host names are not resolved here (resolution blocks, and discovery
 * is the layer that turns names into addresses). */
#ifndef FDN_TRANSPORT_TCP_INTERNAL_H
#define FDN_TRANSPORT_TCP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/transport.h"

extern const struct fdn__transport fdn__transport_tcp;

/* Longest formatted address: "[" + INET6_ADDRSTRLEN + "]:65535". */
#define FDN__TCP_ADDR_MAX 56

/* Parses a numeric "host:port" into *out and *out_len. Port 0 is accepted
 * only when allow_port0 (listening on an ephemeral port). Returns 0, or
 * -EINVAL with the reason in fdn_errmsg(). */
int fdn__tcp_parse_addr(const char *addr, bool allow_port0, struct sockaddr_storage *out,
                        socklen_t *out_len);

/* Formats an AF_INET / AF_INET6 address as "1.2.3.4:port" or "[v6]:port"
 * into buf. Returns the length (without the NUL), -ENOSPC when buf is too
 * small, or -EAFNOSUPPORT for another family. */
int fdn__tcp_format_addr(const struct sockaddr *sa, char *buf, size_t len);

/* The same without the port, and IPv6 without brackets: "1.2.3.4", "::1". */
int fdn__tcp_format_host(const struct sockaddr *sa, char *buf, size_t len);

#endif
