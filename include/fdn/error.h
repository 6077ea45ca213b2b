/* Error conventions shared by every Foundation function.
 *
 * Functions return int: 0 or a positive count on success, a negative errno
 * on failure. Where the errno alone would not tell the caller what went wrong
 * (a topology file that hwloc rejects, io_uring refused by the kernel), the
 * failing function also records a human-readable detail in a thread-local
 * buffer, read with fdn_errmsg(). */
#ifndef FDN_ERROR_H
#define FDN_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* Text for a (negative or positive) errno value. Static storage; thread-safe. */
const char *fdn_strerror(int err);

/* The detail recorded by the last failing Foundation call on this thread,
 * "source.c:LINE: message", or "" if none. Valid until the next failing call
 * on this thread. Successful calls do not clear it. */
const char *fdn_errmsg(void);

#ifdef __cplusplus
}
#endif
#endif
