/* Small I/O helpers shared by every layer and the tools. Internal. */
#ifndef FDN_BASE_IO_H
#define FDN_BASE_IO_H

#include <stddef.h>

/* Writes all len bytes of buf to fd, retrying short writes and EINTR.
 * Returns 0 or a negative errno. For blocking descriptors. */
int fdn__write_all(int fd, const void *buf, size_t len);

#define FDN__SEND_FDS_MAX 8

/* Sends one message of len bytes on a unix socket with nfds descriptors
 * (SCM_RIGHTS, at most FDN__SEND_FDS_MAX), sendmsg flags ORed with
 * MSG_NOSIGNAL. Returns the bytes sent or a negative errno. */
long fdn__send_fds(int sock, const void *msg, size_t len, const int *fds, int nfds, int flags);

#endif
