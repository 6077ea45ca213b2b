/* Small I/O helpers shared by every layer and the tools. Internal. */
#ifndef FDN_BASE_IO_H
#define FDN_BASE_IO_H

#include <stddef.h>

/* Writes all len bytes of buf to fd, retrying short writes and EINTR.
 * Returns 0 or a negative errno. For blocking descriptors. */
int fdn__write_all(int fd, const void *buf, size_t len);

#endif
