/* Recording error details for fdn_errmsg(). Internal.
 *
 *     if (rc < 0)
 *         return FDN_ERR(rc, "hwloc cannot read %s", path);
 *
 * FDN_ERR records "file.c:LINE: message" in the thread-local buffer and
 * evaluates to the (negative errno) code, so a failure path stays one line. */
#ifndef FDN_BASE_ERROR_H
#define FDN_BASE_ERROR_H

int fdn__error(int code, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define FDN_ERR(code, ...) fdn__error((code), __FILE__, __LINE__, __VA_ARGS__)

/* The last detail without its "file.c:LINE: " prefix, for log lines that
 * say why something failed. */
const char *fdn__errmsg_detail(void);

#endif
