/* SPDX-License-Identifier: MIT */
/*
 * Engine-independent half of include/vdisk/aio.h: argument checks, the
 * coroutine side of waiting for a request, and engine selection.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>

#include <vdisk/aio.h>
#include <vdisk/trace.h>
#include <vdisk/coroutine.h>

#include "util/aio-internal.h"

const char *vd_aio_kind_name(enum vd_aio_kind kind)
{
	switch (kind) {
	case VD_AIO_THREADS:
		return "threads";
	case VD_AIO_IO_URING:
		return "io_uring";
	}
	return "unknown";
}

int vd_aio_kind_parse(const char *name, enum vd_aio_kind *out)
{
	if (!name)
		return -EINVAL;
	if (strcmp(name, "threads") == 0) {
		*out = VD_AIO_THREADS;
		return 0;
	}
	if (strcmp(name, "io_uring") == 0) {
		*out = VD_AIO_IO_URING;
		return 0;
	}
	return -EINVAL;
}

bool vd_aio_kind_available(enum vd_aio_kind kind)
{
	switch (kind) {
	case VD_AIO_THREADS:
		return true;
	case VD_AIO_IO_URING:
#ifdef VD_HAVE_URING
		return vd_uring_probe();
#else
		return false;
#endif
	}
	return false;
}

int vd_aio_get(struct vd_loop *loop, enum vd_aio_kind kind, struct vd_aio **out)
{
	*out = NULL;
	switch (kind) {
	case VD_AIO_THREADS:
		return vd_thread_pool_aio_get(loop, out);
	case VD_AIO_IO_URING:
#ifdef VD_HAVE_URING
		return vd_uring_aio_get(loop, out);
#else
		return -ENOTSUP;
#endif
	}
	return -EINVAL;
}

void vd_aio_get_stats(struct vd_aio *aio, struct vd_aio_stats *st)
{
	*st = aio->stats;
}

void vd_aio_req_complete(struct vd_aio_req *req, int ret)
{
	req->ret = ret;
	req->completed = true;
	/* Last touch of @req: the coroutine may return and free it. */
	vd_co_wake(req->co);
}

const struct vd_qiov *vd_aio_req_remaining(struct vd_aio_req *req)
{
	if (req->done_bytes == 0)
		return req->qiov;
	vd_qiov_reset(&req->rest);
	if (vd_qiov_concat_slice(&req->rest, req->qiov, req->done_bytes,
				 req->qiov->size - req->done_bytes) < 0)
		return NULL;
	return &req->rest;
}

/* Queue @req, wait for its completion, return its result. */
static int aio_co_run(struct vd_aio *aio, struct vd_aio_req *req)
{
	assert(vd_in_coroutine());
	/* A node that could not take an engine on its loop (vd_node_set_loop
	 * failed twice): its requests fail. */
	if (!aio)
		return -EIO;
	req->co = vd_co_self();
	vd_qiov_init(&req->rest, 0);
	aio->stats.ops++;
	vd_trace(host_io_submit, "engine %s op %d fd %d offset %" PRId64 " bytes %zu",
		 vd_aio_kind_name(aio->kind), (int)req->op, req->fd, req->offset,
		 req->qiov ? req->qiov->size : (size_t)req->len);
	int ret = aio->submit(aio, req);
	if (ret == 0) {
		/* Loop: only the completion may end the wait. */
		while (!req->completed)
			vd_co_yield();
		ret = req->ret;
	}
	vd_trace(host_io_complete, "engine %s op %d fd %d offset %" PRId64 " ret %d",
		 vd_aio_kind_name(aio->kind), (int)req->op, req->fd, req->offset, ret);
	vd_qiov_destroy(&req->rest);
	return ret;
}

static int aio_co_rw(struct vd_aio *aio, enum vd_aio_op op, int fd, const struct vd_qiov *qiov,
		     int64_t offset)
{
	/* The result is an int: larger transfers must be split by the caller. */
	if (!qiov || offset < 0 || qiov->size > INT_MAX || (int64_t)qiov->size > INT64_MAX - offset)
		return -EINVAL;
	if (qiov->size == 0)
		return 0;
	struct vd_aio_req req = {
		.op = op,
		.fd = fd,
		.qiov = qiov,
		.offset = offset,
	};
	return aio_co_run(aio, &req);
}

int vd_aio_co_preadv(struct vd_aio *aio, int fd, const struct vd_qiov *qiov, int64_t offset)
{
	return aio_co_rw(aio, VD_AIO_OP_READ, fd, qiov, offset);
}

int vd_aio_co_pwritev(struct vd_aio *aio, int fd, const struct vd_qiov *qiov, int64_t offset)
{
	return aio_co_rw(aio, VD_AIO_OP_WRITE, fd, qiov, offset);
}

int vd_aio_co_fsync(struct vd_aio *aio, int fd, bool datasync)
{
	struct vd_aio_req req = {
		.op = datasync ? VD_AIO_OP_FDATASYNC : VD_AIO_OP_FSYNC,
		.fd = fd,
	};
	return aio_co_run(aio, &req);
}

int vd_aio_co_fallocate(struct vd_aio *aio, int fd, int mode, int64_t offset, int64_t len)
{
	if (offset < 0 || len <= 0 || len > INT64_MAX - offset)
		return -EINVAL;
	struct vd_aio_req req = {
		.op = VD_AIO_OP_FALLOCATE,
		.fd = fd,
		.offset = offset,
		.len = len,
		.mode = mode,
	};
	return aio_co_run(aio, &req);
}

int vd_thread_pool_co(struct vd_loop *loop, vd_worker_fn *fn, void *opaque)
{
	struct vd_aio *aio;
	int ret = vd_thread_pool_aio_get(loop, &aio);
	if (ret < 0)
		return ret;
	struct vd_aio_req req = {
		.op = VD_AIO_OP_FUNC,
		.fn = fn,
		.opaque = opaque,
	};
	return aio_co_run(aio, &req);
}
