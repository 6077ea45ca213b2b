/* The accept loop shared by the stream transports (see acceptor.h). */
#include "transport/acceptor.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fdn/error.h>

#include "base/compiler.h"
#include "base/error.h"

static void op_begin(struct fdn__acceptor *a, struct io_uring_sqe *sqe, struct fdn__io_op *op,
                     bool passive)
{
    io_uring_sqe_set_data(sqe, op);
    a->ops++;
    if (passive)
        fdn__worker_io_begin_passive(a->w);
    else
        fdn__worker_io_begin(a->w);
}

/* An operation delivered its final CQE. May end the acceptor. */
static void op_end(struct fdn__acceptor *a, bool passive)
{
    a->ops--;
    if (passive)
        fdn__worker_io_end_passive(a->w);
    else
        fdn__worker_io_end(a->w);
    if (!a->closing || a->ops)
        return;
    close(a->fd);
    a->fd = -1;
    a->on_closed(a, a->close_err);
}

static void arm_accept(struct fdn__acceptor *a)
{
    struct io_uring_sqe *sqe = fdn__worker_sqe(a->w);
    /* No address buffer: one would be shared by every CQE of the multishot;
     * getpeername() on the new socket is exact. */
    io_uring_prep_multishot_accept(sqe, a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    a->accept_armed = true;
    a->accept_passive = true;
    op_begin(a, sqe, &a->accept_op.io, true);
}

/* Errors that concern one pending connection, not the listener. */
static bool accept_error_is_transient(int err)
{
    return err == -ECONNABORTED || err == -EINTR || err == -EAGAIN || err == -EPROTO ||
           err == -EPERM;
}

static void accept_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    struct fdn__acceptor *a = fdn__container_of(op, struct fdn__acceptor_op, io)->a;
    int res = cqe->res;
    if (res >= 0) {
        if (a->closing)
            close(res);
        else
            a->on_accepted(a, res);
    } else if (res != -ECANCELED && !accept_error_is_transient(res) && !a->closing) {
        fdn__acceptor_close(a, FDN_ERR(res, "%s accept on %s: %s", a->transport, a->addr,
                                       fdn_strerror(res)));
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    bool passive = a->accept_passive;
    a->accept_armed = false;
    if (!a->closing)
        arm_accept(a);
    op_end(a, passive);
}

static void close_complete(fdn_worker *w, struct fdn__io_op *op, const struct io_uring_cqe *cqe)
{
    (void)w;
    (void)cqe;
    op_end(fdn__container_of(op, struct fdn__acceptor_op, io)->a, false);
}

void fdn__acceptor_start(struct fdn__acceptor *a, fdn_worker *w, int fd, const char *transport,
                         const char *addr, fdn__accepted_fn on_accepted,
                         fdn__acceptor_closed_fn on_closed)
{
    *a = (struct fdn__acceptor){
        .w = w, .fd = fd, .transport = transport, .addr = addr,
        .on_accepted = on_accepted, .on_closed = on_closed,
        .accept_op = {.io.complete = accept_complete, .a = a},
        .close_op = {.io.complete = close_complete, .a = a},
    };
    arm_accept(a);
}

int fdn__acceptor_addr(const struct fdn__acceptor *a, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s", a->addr);
    return n < 0 || (size_t)n >= len ? -ENOSPC : n;
}

void fdn__acceptor_close(struct fdn__acceptor *a, int err)
{
    if (a->closing)
        return;
    a->closing = true;
    a->close_err = err;
    if (a->accept_armed && a->accept_passive) {
        a->accept_passive = false;
        fdn__worker_io_end_passive(a->w);
        fdn__worker_io_begin(a->w);
    }
    struct io_uring_sqe *sqe = fdn__worker_sqe(a->w);
    io_uring_prep_cancel_fd(sqe, a->fd, IORING_ASYNC_CANCEL_ALL);
    op_begin(a, sqe, &a->close_op.io, false);
}
