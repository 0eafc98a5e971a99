/* SPDX-License-Identifier: MIT */
/*
 * Shared between util/aio.c and the engines (aio-uring.c, threadpool.c).
 * Not installed.
 */
#ifndef VDISK_UTIL_AIO_INTERNAL_H
#define VDISK_UTIL_AIO_INTERNAL_H

#include <vdisk/aio.h>

enum vd_aio_op {
	VD_AIO_OP_READ,
	VD_AIO_OP_WRITE,
	VD_AIO_OP_FSYNC,
	VD_AIO_OP_FDATASYNC,
	VD_AIO_OP_FALLOCATE,
	VD_AIO_OP_FUNC, /* thread pool only */
};

/*
 * One operation.  It lives on the waiting coroutine's stack from submission
 * until vd_aio_req_complete(); the engine must not touch it afterwards.
 */
struct vd_aio_req {
	enum vd_aio_op op;
	int fd;
	const struct vd_qiov *qiov;
	int64_t offset;
	int64_t len; /* fallocate */
	int mode; /* fallocate */
	vd_worker_fn *fn; /* VD_AIO_OP_FUNC */
	void *opaque;

	/* Engine bookkeeping. */
	size_t done_bytes; /* read/write: transferred so far */
	struct vd_qiov rest; /* the part still to do after a short transfer */
	struct vd_aio_req *next;

	struct vd_co *co;
	int ret;
	bool completed;
};

struct vd_aio {
	enum vd_aio_kind kind;
	struct vd_loop *loop;
	struct vd_aio_stats stats;
	/* Start @req; 0 means vd_aio_req_complete() will be called for it
	 * later, -errno means it failed at once and will not be. */
	int (*submit)(struct vd_aio *aio, struct vd_aio_req *req);
};

/* Record the result and wake the waiting coroutine. */
void vd_aio_req_complete(struct vd_aio_req *req, int ret);

/*
 * Point @req->rest at what is left after @req->done_bytes: the qiov itself
 * when nothing was transferred yet, else a slice.  Returns the vector to
 * submit, or NULL on ENOMEM.
 */
const struct vd_qiov *vd_aio_req_remaining(struct vd_aio_req *req);

/* Engine constructors, called by vd_aio_get() on first use. */
int vd_thread_pool_aio_get(struct vd_loop *loop, struct vd_aio **out);
#ifdef VD_HAVE_URING
int vd_uring_aio_get(struct vd_loop *loop, struct vd_aio **out);
bool vd_uring_probe(void);
#endif

#endif
