/* The one list of transports built into this library. Adding a transport
 * means adding its descriptor here, under the meson option that builds it. */
#include <string.h>

#include "core/transport.h"
#include "transport/shm_internal.h"
#include "transport/tcp_internal.h"

const struct fdn__transport *const fdn__transports[] = {
    &fdn__transport_tcp,
    &fdn__transport_shm,
    NULL,
};

const struct fdn__transport *fdn__transport_for(const char *addr, const char **rest)
{
    if (!addr)
        return NULL;
    for (const struct fdn__transport *const *t = fdn__transports; *t; t++) {
        size_t n = strlen((*t)->scheme);
        if (strncmp(addr, (*t)->scheme, n) == 0) {
            if (rest)
                *rest = addr + n;
            return *t;
        }
    }
    return NULL;
}
