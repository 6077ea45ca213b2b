#include "base/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <fdn/error.h>

static _Thread_local char errmsg[512];

int fdn__error(int code, const char *file, int line, const char *fmt, ...)
{
    const char *base = strrchr(file, '/');
    int n = snprintf(errmsg, sizeof errmsg, "%s:%d: ", base ? base + 1 : file, line);
    if (n >= 0 && (size_t)n < sizeof errmsg) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errmsg + n, sizeof errmsg - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *fdn_errmsg(void) { return errmsg; }

const char *fdn__errmsg_detail(void)
{
    /* Past "file.c:LINE: "; a message without that prefix is returned whole. */
    const char *colon = strchr(errmsg, ':');
    if (colon && colon[1] >= '0' && colon[1] <= '9') {
        const char *rest = strstr(colon + 1, ": ");
        if (rest)
            return rest + 2;
    }
    return errmsg;
}

const char *fdn_strerror(int err)
{
    /* strerror() may use a shared buffer for unknown values; strerrordesc_np
     * is thread-safe and static, and every errno Foundation returns is known. */
    const char *s = strerrordesc_np(err < 0 ? -err : err);
    return s ? s : "unknown error";
}
