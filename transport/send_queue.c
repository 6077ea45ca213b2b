/* The send queue shared by the TCP and shm transports (see send_queue.h). */
#include "transport/send_queue.h"

#include <errno.h>

#include "base/error.h"

static size_t iov_bytes(const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt; i++)
        n += iov[i].iov_len;
    return n;
}

int fdn__send_queue_push(struct fdn__send_queue *q, struct fdn__tp_send *s, const char *tp)
{
    if (s->iovcnt < 0 || iov_bytes(s->iov, s->iovcnt) != s->len)
        return FDN_ERR(-EINVAL, "%s send: len %zu differs from the iovecs' total", tp, s->len);
    s->tp_next = NULL;
    s->tp_done = 0;
    if (q->tail)
        q->tail->tp_next = s;
    else
        q->head = s;
    q->tail = s;
    if (!q->cursor && s->len > 0)
        q->cursor = s;
    return 0;
}

struct fdn__tp_send *fdn__send_queue_pop(struct fdn__send_queue *q)
{
    struct fdn__tp_send *s = q->head;
    q->head = s->tp_next;
    if (!q->head)
        q->tail = NULL;
    return s;
}
