/* SPDX-License-Identifier: MIT */
/*
 * The io_uring engine: one ring of URING_ENTRIES per loop.
 *
 * Batching: requests only prepare SQEs and schedule one bottom half, which
 * submits everything queued during the loop iteration with a single
 * io_uring_submit().  Completions: the ring fd is watched by the loop (it is
 * readable while the CQ is not empty) and every CQE is reaped in one go.
 * At most cq_entries requests are in the ring, so the CQ cannot overflow;
 * the rest wait on a list in submission order.
 */
#ifdef VD_HAVE_URING

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/uio.h>

#include <vdisk/aio.h>
#include <vdisk/loop.h>

#include "util/aio-internal.h"
#include "util/loop-internal.h"

#define URING_ENTRIES 256
#define URING_REAP_BATCH 64

struct uring_engine {
	struct vd_aio aio; /* first: vd_aio_get() hands out &u->aio */
	struct io_uring ring;
	struct vd_bh *submit_bh;
	unsigned inflight; /* requests holding an SQE or CQE slot */
	unsigned max_inflight; /* CQ size */
	long requests; /* accepted and not yet completed, for the assert */
	struct vd_aio_req *wait_head, *wait_tail; /* no room in the ring */
};

static void uring_submit_now(struct uring_engine *u)
{
	int r;
	do {
		r = io_uring_submit(&u->ring);
		u->aio.stats.submit_calls++;
	} while (r == -EINTR);
	/* -EAGAIN/-EBUSY: the kernel is short of resources or CQ space; the
	 * SQEs stay in the ring and the next reap schedules another try. */
}

static void uring_reap(void *opaque);

static void uring_submit_bh(void *opaque)
{
	struct uring_engine *u = opaque;
	if (!io_uring_sq_ready(&u->ring))
		return;
	uring_submit_now(u);
	/* Page-cache hits complete inside io_uring_enter(): reap them now
	 * rather than after another trip through epoll_wait(). */
	if (io_uring_cq_ready(&u->ring))
		uring_reap(u);
}

/* Put @req in the ring.  0, -EAGAIN (no SQE even after submitting), or
 * -errno for a request that cannot be started. */
static int uring_prep(struct uring_engine *u, struct vd_aio_req *req)
{
	const struct vd_qiov *q = NULL;

	if (req->op == VD_AIO_OP_READ || req->op == VD_AIO_OP_WRITE) {
		q = vd_aio_req_remaining(req);
		if (!q)
			return -ENOMEM;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
	if (!sqe) {
		/* SQ full: submit what we have now and take a fresh slot. */
		uring_submit_now(u);
		sqe = io_uring_get_sqe(&u->ring);
		if (!sqe)
			return -EAGAIN;
	}

	switch (req->op) {
	case VD_AIO_OP_READ:
	case VD_AIO_OP_WRITE: {
		/* More than IOV_MAX vectors is EINVAL; the rest goes as if the
		 * transfer had been short. */
		unsigned niov = q->niov > IOV_MAX ? IOV_MAX : (unsigned)q->niov;
		uint64_t off = (uint64_t)req->offset + req->done_bytes;
		if (req->op == VD_AIO_OP_READ)
			io_uring_prep_readv(sqe, req->fd, q->iov, niov, off);
		else
			io_uring_prep_writev(sqe, req->fd, q->iov, niov, off);
		break;
	}
	case VD_AIO_OP_FSYNC:
		io_uring_prep_fsync(sqe, req->fd, 0);
		break;
	case VD_AIO_OP_FDATASYNC:
		io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
		break;
	case VD_AIO_OP_FALLOCATE:
		io_uring_prep_fallocate(sqe, req->fd, req->mode, req->offset, req->len);
		break;
	case VD_AIO_OP_FUNC:
		/* Not an io_uring operation; vd_thread_pool_co() never gets here. */
		io_uring_prep_nop(sqe);
		break;
	}
	io_uring_sqe_set_data(sqe, req);
	u->inflight++;
	vd_bh_schedule(u->submit_bh);
	return 0;
}

static void uring_wait_append(struct uring_engine *u, struct vd_aio_req *req)
{
	req->next = NULL;
	if (u->wait_tail)
		u->wait_tail->next = req;
	else
		u->wait_head = req;
	u->wait_tail = req;
}

/* Queue @req (new or resubmitted); -errno if it cannot be started. */
static int uring_queue(struct uring_engine *u, struct vd_aio_req *req)
{
	/* Keep submission order: nobody overtakes the waiters. */
	if (u->wait_head || u->inflight >= u->max_inflight) {
		uring_wait_append(u, req);
		return 0;
	}
	int r = uring_prep(u, req);
	if (r == -EAGAIN) {
		uring_wait_append(u, req);
		return 0;
	}
	return r;
}

static void uring_finish(struct uring_engine *u, struct vd_aio_req *req, int ret)
{
	u->requests--;
	vd_loop_inflight_add(u->aio.loop, -1);
	vd_aio_req_complete(req, ret);
}

/* Resubmit after a short transfer or a transient error. */
static void uring_requeue(struct uring_engine *u, struct vd_aio_req *req)
{
	int r = uring_queue(u, req);
	if (r < 0)
		uring_finish(u, req, r);
}

static void uring_handle_cqe(struct uring_engine *u, struct vd_aio_req *req, int res)
{
	if (res == -EINTR || res == -EAGAIN) {
		uring_requeue(u, req);
		return;
	}
	if (req->op != VD_AIO_OP_READ && req->op != VD_AIO_OP_WRITE) {
		uring_finish(u, req, res);
		return;
	}
	if (res < 0) {
		uring_finish(u, req, res);
		return;
	}
	if (res == 0) {
		/* End of file for a read; a write that makes no progress would
		 * otherwise loop forever. */
		uring_finish(u, req, req->op == VD_AIO_OP_READ ? (int)req->done_bytes : -EIO);
		return;
	}
	req->done_bytes += (size_t)res;
	if (req->done_bytes >= req->qiov->size)
		uring_finish(u, req, (int)req->done_bytes);
	else
		uring_requeue(u, req);
}

static void uring_reap(void *opaque)
{
	struct uring_engine *u = opaque;
	struct {
		struct vd_aio_req *req;
		int res;
	} batch[URING_REAP_BATCH];
	unsigned n;

	do {
		struct io_uring_cqe *cqe;
		unsigned head;
		n = 0;
		/* Copy out and advance before handling: handlers wake coroutines
		 * that may queue more work or even run the loop. */
		io_uring_for_each_cqe(&u->ring, head, cqe)
		{
			batch[n].req = io_uring_cqe_get_data(cqe);
			batch[n].res = cqe->res;
			if (++n == URING_REAP_BATCH)
				break;
		}
		io_uring_cq_advance(&u->ring, n);
		u->inflight -= n;

		/* Freed slots go to the waiters first, in order. */
		while (u->wait_head && u->inflight < u->max_inflight) {
			struct vd_aio_req *req = u->wait_head;
			u->wait_head = req->next;
			if (!u->wait_head)
				u->wait_tail = NULL;
			int r = uring_prep(u, req);
			if (r == -EAGAIN) {
				req->next = u->wait_head;
				u->wait_head = req;
				if (!u->wait_tail)
					u->wait_tail = req;
				break;
			}
			if (r < 0)
				uring_finish(u, req, r);
		}
		for (unsigned i = 0; i < n; i++)
			uring_handle_cqe(u, batch[i].req, batch[i].res);
	} while (n == URING_REAP_BATCH);

	/* SQEs left behind by an -EBUSY submit get another chance. */
	if (io_uring_sq_ready(&u->ring))
		vd_bh_schedule(u->submit_bh);
}

/* Adaptive polling: completions are in the shared CQ ring, no syscall. */
static bool uring_poll(void *opaque)
{
	struct uring_engine *u = opaque;

	return io_uring_cq_ready(&u->ring) > 0;
}

static int uring_submit(struct vd_aio *aio, struct vd_aio_req *req)
{
	struct uring_engine *u = (struct uring_engine *)aio;
	int r = uring_queue(u, req);
	if (r < 0)
		return r;
	u->requests++;
	vd_loop_inflight_add(aio->loop, 1);
	return 0;
}

static void uring_destroy(void *obj)
{
	struct uring_engine *u = obj;

	/* Freeing a loop with requests in flight is a caller bug. */
	assert(u->requests == 0);
	vd_bh_delete(u->submit_bh);
	vd_loop_set_internal_fd_handler(u->aio.loop, u->ring.ring_fd, NULL, NULL, NULL);
	io_uring_queue_exit(&u->ring);
	free(u);
}

/* Errors that mean "this kernel or sandbox does not do io_uring". */
static int uring_init_error(int r)
{
	if (r == -ENOSYS || r == -EPERM || r == -EACCES || r == -EINVAL || r == -EOPNOTSUPP)
		return -ENOTSUP;
	return r;
}

bool vd_uring_probe(void)
{
	/* 0 unknown, 1 available, 2 not. */
	static int state;
	int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
	if (s == 0) {
		struct io_uring ring;
		int r = io_uring_queue_init(4, &ring, 0);
		if (r == 0)
			io_uring_queue_exit(&ring);
		/* Only a definite refusal is cached; ENOMEM may pass. */
		s = r == 0 ? 1 : 2;
		if (r == 0 || uring_init_error(r) == -ENOTSUP)
			__atomic_store_n(&state, s, __ATOMIC_RELEASE);
	}
	return s == 1;
}

int vd_uring_aio_get(struct vd_loop *loop, struct vd_aio **out)
{
	struct uring_engine *u = vd_loop_slot_get(loop, VD_LOOP_SLOT_URING);
	int ret;

	if (u) {
		*out = &u->aio;
		return 0;
	}
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->aio.kind = VD_AIO_IO_URING;
	u->aio.loop = loop;
	u->aio.submit = uring_submit;

	ret = io_uring_queue_init(URING_ENTRIES, &u->ring, 0);
	if (ret < 0) {
		ret = uring_init_error(ret);
		goto err_free;
	}
	u->max_inflight = u->ring.cq.ring_entries;
	u->submit_bh = vd_bh_new(loop, uring_submit_bh, u);
	if (!u->submit_bh) {
		ret = -ENOMEM;
		goto err_ring;
	}
	ret = vd_loop_set_internal_fd_handler(loop, u->ring.ring_fd, uring_reap, NULL, u);
	if (ret < 0)
		goto err_bh;
	vd_loop_set_fd_poll(loop, u->ring.ring_fd, uring_poll);

	vd_loop_slot_set(loop, VD_LOOP_SLOT_URING, u, uring_destroy);
	*out = &u->aio;
	return 0;

err_bh:
	vd_bh_delete(u->submit_bh);
err_ring:
	io_uring_queue_exit(&u->ring);
err_free:
	free(u);
	return ret;
}

#endif /* VD_HAVE_URING */
