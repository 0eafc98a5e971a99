/* SPDX-License-Identifier: MIT */
/*
 * "rbd": a protocol driver for Ceph RBD images through librbd (QEMU 7.2's
 * block/rbd.c is the reference for names, spellings and semantics).
 *
 *   rbd:pool[/namespace]/image[@snapshot][:key=value...]
 *   driver=rbd,pool=P,namespace=NS,image=I,snapshot=S,conf=FILE,user=ID
 *
 * In a file name, "conf" names a ceph.conf, "id" the client name, and every
 * other key goes to librados with rados_conf_set() (rados_osd_op_timeout,
 * rados_mon_op_timeout, client_mount_timeout, mon_host ...).  A backslash
 * escapes the next character, as QEMU's qemu_rbd_next_tok().
 *
 * Data requests use librbd's asynchronous API.  librbd completes them on its
 * own threads: the callback pushes the request on a lock-free list and sets
 * an eventfd; the node's loop pops the list and wakes the request's
 * coroutine (the pattern of util/threadpool.c).  The eventfd is watched only
 * while requests are in flight, so an idle image never keeps a loop awake.
 * librbd calls that have no asynchronous form (connect, resize, diff
 * iteration, snapshots) run on the loop's worker threads, so the loop never
 * waits for the cluster.  A cluster that does not answer fails requests after
 * rados_osd_op_timeout seconds (when set; librados waits forever otherwise).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"
#include "block/drivers/rbd-name.h"

#ifdef VD_HAVE_RBD

#include "block/drivers/rbd-lib.h"

#include <vdisk/aio.h>
#include <vdisk/loop.h>

#define RBD_MIN_OBJ_ORDER 12 /* QEMU: objects of at least 4 KiB */
#define RBD_MAX_OBJ_ORDER 25 /* librbd: at most 32 MiB */

struct rbd_req;

struct rbd_state {
	struct vd_node *node;
	struct rbd_spec spec;
	rados_t cluster;
	rados_ioctx_t io;
	rbd_image_t image;
	bool connected, have_io, have_image;
	uint64_t obj_size;

	/* Completions: librbd threads push, the loop pops. */
	struct vd_notifier notifier;
	struct rbd_req *done; /* lock-free stack */
	long inflight; /* loop thread only */
	struct vd_loop *fd_loop; /* where the eventfd handler is, if anywhere */
	struct vd_co_mutex resize_lock;
};

struct rbd_req {
	struct rbd_state *s;
	struct vd_co *co;
	struct rbd_req *next;
	ssize_t ret;
	bool finished;
};

/* --- names ---------------------------------------------------------------- */

/* The option tree (driver=rbd,pool=...), or the file name in it. */
static int read_spec(struct vd_opts *opts, struct rbd_spec *sp, struct vd_error *err)
{
	static const char *const keys[] = {"pool",     "namespace", "image",
					   "snapshot", "conf",	    "user"};
	char **dst[] = {&sp->pool, &sp->namespace, &sp->image, &sp->snapshot, &sp->conf, &sp->user};
	const char *fn = vd_opts_get(opts, "filename");
	int ret;

	if (fn && *fn) {
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
			if (vd_opts_has(opts, keys[i]))
				return vd_error_set(err, -EINVAL,
						    "No '%s' option allowed with a file name",
						    keys[i]);
		return rbd_parse_filename(fn, sp, err);
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = vd_opts_get(opts, keys[i]);
		if (v && (ret = rbd_set_str(dst[i], v)) < 0)
			return vd_error_set(err, ret, "Out of memory");
	}
	if (!sp->pool)
		return vd_error_set(err, -EINVAL, "Parameter 'pool' is missing");
	if (!sp->image)
		return vd_error_set(err, -EINVAL, "Parameter 'image' is missing");
	return 0;
}

/* --- connection ----------------------------------------------------------- */

struct connect_job {
	struct rbd_state *s;
	bool open_image, read_only, no_cache;
	char msg[256];
};

static int connect_cluster(struct rbd_state *s, struct connect_job *j)
{
	const struct rbd_spec *sp = &s->spec;
	int r;

	r = rbd_lib.rados_create(&s->cluster, sp->user);
	if (r < 0) {
		snprintf(j->msg, sizeof(j->msg), "error initializing");
		return r;
	}
	s->connected = true;
	/* QEMU: an explicit conf must be read; the default one may be absent. */
	r = rbd_lib.rados_conf_read_file(s->cluster, sp->conf);
	if (r < 0 && sp->conf) {
		snprintf(j->msg, sizeof(j->msg), "error reading conf file %s", sp->conf);
		return r;
	}
	for (int i = 0; i < sp->nkeys; i++) {
		r = rbd_lib.rados_conf_set(s->cluster, sp->keys[i], sp->values[i]);
		if (r < 0) {
			snprintf(j->msg, sizeof(j->msg), "invalid conf option %s", sp->keys[i]);
			return r;
		}
	}
	/* QEMU: cache=none turns the librbd cache off. */
	rbd_lib.rados_conf_set(s->cluster, "rbd_cache", j->no_cache ? "false" : "true");
	r = rbd_lib.rados_connect(s->cluster);
	if (r < 0) {
		snprintf(j->msg, sizeof(j->msg), "error connecting");
		return r;
	}
	r = rbd_lib.rados_ioctx_create(s->cluster, sp->pool, &s->io);
	if (r < 0) {
		snprintf(j->msg, sizeof(j->msg), "error opening pool %s", sp->pool);
		return r;
	}
	s->have_io = true;
	rbd_lib.rados_ioctx_set_namespace(s->io, sp->namespace ? sp->namespace : "");
	return 0;
}

static void disconnect_cluster(struct rbd_state *s)
{
	if (s->have_image)
		rbd_lib.rbd_close(s->image);
	if (s->have_io)
		rbd_lib.rados_ioctx_destroy(s->io);
	if (s->connected)
		rbd_lib.rados_shutdown(s->cluster);
	s->have_image = s->have_io = s->connected = false;
}

static int connect_worker(void *opaque)
{
	struct connect_job *j = opaque;
	struct rbd_state *s = j->s;
	const struct rbd_spec *sp = &s->spec;
	rbd_image_info_t st;
	int r;

	r = connect_cluster(s, j);
	if (r < 0 || !j->open_image)
		return r;
	r = j->read_only ? rbd_lib.rbd_open_read_only(s->io, sp->image, &s->image, sp->snapshot)
			 : rbd_lib.rbd_open(s->io, sp->image, &s->image, sp->snapshot);
	if (r < 0) {
		snprintf(j->msg, sizeof(j->msg), "error reading header from %s", sp->image);
		return r;
	}
	s->have_image = true;
	r = rbd_lib.rbd_stat(s->image, &st, sizeof(st));
	if (r < 0) {
		snprintf(j->msg, sizeof(j->msg), "error getting image info from %s", sp->image);
		return r;
	}
	/* librbd's own checks give 4 KiB .. 32 MiB; the limits divide by it. */
	if (st.obj_size < 512 || st.obj_size > (UINT64_C(1) << 30) ||
	    (st.obj_size & (st.obj_size - 1)) || st.size > (uint64_t)VD_MAX_LENGTH) {
		snprintf(j->msg, sizeof(j->msg), "unexpected object or image size in %s",
			 sp->image);
		return -EINVAL;
	}
	s->obj_size = st.obj_size;
	s->node->size = (int64_t)st.size;
	return 0;
}

/* --- completions ---------------------------------------------------------- */

static void rbd_completions(void *opaque)
{
	struct rbd_state *s = opaque;
	struct rbd_req *stack, *req = NULL;

	vd_notifier_test_and_clear(&s->notifier);
	stack = __atomic_exchange_n(&s->done, NULL, __ATOMIC_ACQUIRE);
	while (stack) { /* newest first: reverse into finishing order */
		struct rbd_req *next = stack->next;
		stack->next = req;
		req = stack;
		stack = next;
	}
	for (struct rbd_req *r = req; r; r = r->next)
		s->inflight--;
	/* Stop watching when nothing is owed: an idle image keeps no loop
	 * awake (and no fd handler survives a move to another loop).  Done
	 * before the wakes, which may submit again (and register again), and
	 * after which @s is not touched. */
	if (s->inflight == 0 && s->fd_loop) {
		vd_loop_set_fd_handler(s->fd_loop, s->notifier.fd, NULL, NULL, NULL);
		s->fd_loop = NULL;
	}
	while (req) {
		struct rbd_req *next = req->next;
		req->finished = true;
		vd_co_wake(req->co);
		req = next;
	}
}

/* On a librbd thread. */
static void rbd_complete_cb(rbd_completion_t c, void *arg)
{
	struct rbd_req *req = arg;
	struct rbd_state *s = req->s;
	struct rbd_req *old;

	req->ret = rbd_lib.rbd_aio_get_return_value(c);
	rbd_lib.rbd_aio_release(c);
	old = __atomic_load_n(&s->done, __ATOMIC_RELAXED);
	do {
		req->next = old;
	} while (!__atomic_compare_exchange_n(&s->done, &old, req, true, __ATOMIC_RELEASE,
					      __ATOMIC_RELAXED));
	if (!old)
		vd_notifier_set(&s->notifier);
}

enum rbd_op {
	RBD_READ,
	RBD_WRITE,
	RBD_FLUSH,
	RBD_DISCARD,
	RBD_ZEROES
};

/* Submit one operation and wait (yielding) for its completion. */
static ssize_t rbd_co_run(struct rbd_state *s, enum rbd_op op, uint64_t offset, uint64_t len,
			  const struct vd_qiov *qiov, int zero_flags)
{
	struct rbd_req req = {.s = s, .co = vd_co_self()};
	rbd_completion_t c;
	int r;

	r = rbd_lib.rbd_aio_create_completion(&req, rbd_complete_cb, &c);
	if (r < 0)
		return r;
	if (!s->fd_loop) {
		r = vd_loop_set_fd_handler(s->node->loop, s->notifier.fd, rbd_completions, NULL, s);
		if (r < 0) {
			rbd_lib.rbd_aio_release(c);
			return r;
		}
		s->fd_loop = s->node->loop;
	}
	switch (op) {
	case RBD_READ:
		r = rbd_lib.rbd_aio_readv(s->image, (const struct iovec *)qiov->iov, qiov->niov,
					  offset, c);
		break;
	case RBD_WRITE:
		r = rbd_lib.rbd_aio_writev(s->image, (const struct iovec *)qiov->iov, qiov->niov,
					   offset, c);
		break;
	case RBD_FLUSH:
		r = rbd_lib.rbd_aio_flush(s->image, c);
		break;
	case RBD_DISCARD:
		r = rbd_lib.rbd_aio_discard(s->image, offset, len, c);
		break;
	case RBD_ZEROES:
		r = rbd_lib.rbd_aio_write_zeroes(s->image, offset, (size_t)len, c, zero_flags, 0);
		break;
	}
	if (r < 0) {
		/* Not queued: the callback will not run. */
		rbd_lib.rbd_aio_release(c);
		if (s->inflight == 0 && s->fd_loop) {
			vd_loop_set_fd_handler(s->fd_loop, s->notifier.fd, NULL, NULL, NULL);
			s->fd_loop = NULL;
		}
		return r;
	}
	s->inflight++;
	while (!req.finished)
		vd_co_yield();
	return req.ret;
}

/* librbd's errors (ETIMEDOUT and the like) reach the block layer as they
 * are; the handle's error policy decides what the device sees.  A write
 * completes with 0 or the length written. */
static int rbd_result(ssize_t r)
{
	return r < 0 ? (int)r : 0;
}

/* --- driver entries --------------------------------------------------------- */

static int rbd_node_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct rbd_state *s = n->opaque;
	struct connect_job j = {.s = s, .open_image = true};
	int ret;

	s->node = n;
	s->notifier.fd = -1;
	vd_co_mutex_init(&s->resize_lock);
	ret = read_spec(opts, &s->spec, err);
	if (ret < 0)
		goto fail;
	/* QEMU: "rbd snapshots are read-only". */
	if (s->spec.snapshot && !n->read_only) {
		ret = vd_error_set(err, -EINVAL, "rbd snapshots are read-only");
		goto fail;
	}
	if (!rbd_lib_load(err)) {
		ret = -ENOTSUP;
		goto fail;
	}
	ret = vd_notifier_init(&s->notifier);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not create an eventfd");
		goto fail;
	}
	j.read_only = n->read_only;
	j.no_cache = n->cache_direct;
	ret = vd_thread_pool_co(n->loop, connect_worker, &j);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "%s", j.msg[0] ? j.msg : "rbd open failed");
		goto fail;
	}
	free(n->filename);
	n->filename = rbd_spec_filename(&s->spec);
	if (!n->filename) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	/* librbd takes any byte range and any iovec count up to IOV_MAX;
	 * discards and zeroes work best in whole objects (QEMU's limits). */
	n->limits.request_alignment = 1;
	n->limits.max_iov = IOV_MAX;
	n->limits.discard_alignment = (uint32_t)s->obj_size;
	n->limits.write_zeroes_alignment = (uint32_t)s->obj_size;
	n->limits.max_discard = (VD_REQUEST_MAX_BYTES / s->obj_size) * s->obj_size;
	n->limits.max_write_zeroes = n->limits.max_discard;
	n->supported_zero_flags = VD_REQ_MAY_UNMAP;
	return 0;

fail:
	disconnect_cluster(s);
	if (s->notifier.fd >= 0)
		vd_notifier_cleanup(&s->notifier);
	rbd_spec_free(&s->spec);
	return ret;
}

static void rbd_node_close(struct vd_node *n)
{
	struct rbd_state *s = n->opaque;

	/* The core drained the node: no completion is owed. */
	if (s->fd_loop)
		vd_loop_set_fd_handler(s->fd_loop, s->notifier.fd, NULL, NULL, NULL);
	disconnect_cluster(s);
	vd_notifier_cleanup(&s->notifier);
	rbd_spec_free(&s->spec);
}

struct resize_job {
	struct rbd_state *s;
	uint64_t size;
};

static int resize_worker(void *opaque)
{
	struct resize_job *j = opaque;

	return rbd_lib.rbd_resize(j->s->image, j->size);
}

/* Grow the image to @end (writes past the end of a growable node: qcow2 on
 * RBD); RBD cannot write past the image size. */
static int rbd_co_grow(struct rbd_state *s, int64_t end)
{
	struct vd_node *n = s->node;
	struct resize_job j = {.s = s, .size = (uint64_t)end};
	int ret = 0;

	vd_co_mutex_lock(&s->resize_lock);
	if (end > n->size) {
		ret = vd_thread_pool_co(n->loop, resize_worker, &j);
		if (ret == 0)
			n->size = end;
	}
	vd_co_mutex_unlock(&s->resize_lock);
	return ret;
}

static int rbd_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags)
{
	struct rbd_state *s = n->opaque;
	int64_t avail = n->size - offset;
	ssize_t r;

	/* Past the end of a growable node: zeroes. */
	if (avail <= 0) {
		vd_qiov_memset(qiov, 0, 0, (size_t)bytes);
		return 0;
	}
	r = rbd_co_run(s, RBD_READ, (uint64_t)offset, (uint64_t)bytes, qiov, 0);
	if (r < 0)
		return (int)r;
	/* librbd stops at the end of the image: the rest reads as zeroes. */
	if (r < bytes)
		vd_qiov_memset(qiov, (size_t)r, 0, (size_t)(bytes - r));
	return 0;
}

static int rbd_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct rbd_state *s = n->opaque;
	int ret;

	if (offset + bytes > n->size) {
		ret = rbd_co_grow(s, offset + bytes);
		if (ret < 0)
			return ret;
	}
	return rbd_result(rbd_co_run(s, RBD_WRITE, (uint64_t)offset, (uint64_t)bytes, qiov, 0));
}

static int rbd_co_flush(struct vd_node *n)
{
	return rbd_result(rbd_co_run(n->opaque, RBD_FLUSH, 0, 0, NULL, 0));
}

static int rbd_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	return rbd_result(
		rbd_co_run(n->opaque, RBD_DISCARD, (uint64_t)offset, (uint64_t)bytes, NULL, 0));
}

static int rbd_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct rbd_state *s = n->opaque;
	int zero_flags = 0;
	ssize_t r;

	if (offset + bytes > n->size) {
		int ret = rbd_co_grow(s, offset + bytes);
		if (ret < 0)
			return ret;
	}
	/* QEMU: without MAY_UNMAP the zeroes must stay allocated. */
	if (!(flags & VD_REQ_MAY_UNMAP))
		zero_flags = RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
	r = rbd_co_run(s, RBD_ZEROES, (uint64_t)offset, (uint64_t)bytes, NULL, zero_flags);
	return r < 0 ? (int)r : 0;
}

/* --- block status (QEMU's qemu_rbd_co_block_status) ----------------------- */

struct diff_job {
	struct rbd_state *s;
	uint64_t offset, bytes; /* the range asked about */
	uint8_t whole_object;
	/* The answer: the first extent from @offset. */
	uint64_t len;
	bool exists;
};

#define DIFF_STOP (-9000) /* our own code to end the iteration early */

static int diff_cb(uint64_t offs, size_t len, int exists, void *opaque)
{
	struct diff_job *j = opaque;

	if (!exists)
		return 0; /* a hole reads as zeroes, as an unallocated area */
	if (offs < j->offset) { /* whole objects may start before the range */
		uint64_t skip = j->offset - offs;
		if (skip >= len)
			return 0;
		offs = j->offset;
		len -= skip;
	}
	if (!j->exists && offs > j->offset) {
		/* Unallocated up to here. */
		j->len = offs - j->offset;
		return DIFF_STOP;
	}
	if (j->exists && offs > j->offset + j->len)
		return DIFF_STOP; /* allocated, then a gap */
	j->len = offs + len - j->offset;
	j->exists = true;
	return 0;
}

/* On a pool thread: rbd_get_features/flags may refresh the header from the
 * cluster (after another client changed it), so they are asked here too. */
static int diff_worker(void *opaque)
{
	struct diff_job *j = opaque;
	uint64_t features = 0, flags = 0;

	if (rbd_lib.rbd_get_features(j->s->image, &features) < 0 ||
	    rbd_lib.rbd_get_flags(j->s->image, &flags) < 0)
		return -EIO;
	if ((features & RBD_FEATURE_FAST_DIFF) && !(flags & RBD_FLAG_FAST_DIFF_INVALID)) {
		/* The object map answers at once, per object. */
		j->whole_object = 1;
	} else {
		/* Without it every object is asked: keep the range small. */
		uint64_t cap = 16 * j->s->obj_size;
		if (j->bytes > cap)
			j->bytes = cap;
	}
	return rbd_lib.rbd_diff_iterate2(j->s->image, NULL, j->offset, j->bytes, 1, j->whole_object,
					 diff_cb, j);
}

static int rbd_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file)
{
	struct rbd_state *s = n->opaque;
	struct diff_job j = {.s = s, .offset = (uint64_t)offset};
	int r;

	*pnum = bytes;
	*map = offset;
	*file = n;
	if (offset >= n->size)
		return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID | VD_BLOCK_EOF;
	if (bytes > n->size - offset)
		bytes = n->size - offset;
	*pnum = bytes;
	j.bytes = (uint64_t)bytes;
	r = vd_thread_pool_co(n->loop, diff_worker, &j);
	if (r < 0 && r != DIFF_STOP)
		return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	/* The worker may have narrowed the range. */
	bytes = (int64_t)j.bytes;
	if (!j.exists) {
		if (r == 0)
			j.len = (uint64_t)bytes; /* nothing allocated in the range */
		if (j.len == 0)
			j.len = (uint64_t)bytes;
		*pnum = (int64_t)j.len;
		return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
	}
	if (j.len > (uint64_t)bytes)
		j.len = (uint64_t)bytes;
	*pnum = (int64_t)j.len;
	return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

static int rbd_co_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
			   struct vd_error *err)
{
	struct rbd_state *s = n->opaque;
	struct resize_job j = {.s = s, .size = (uint64_t)size};
	int ret;

	if (prealloc != VD_PREALLOC_OFF)
		return vd_error_set(err, -ENOTSUP, "Unsupported preallocation mode '%s'",
				    vd_prealloc_names[prealloc]);
	if (s->spec.snapshot)
		return vd_error_set(err, -EROFS, "Can't resize an rbd snapshot");
	vd_co_mutex_lock(&s->resize_lock);
	ret = vd_thread_pool_co(n->loop, resize_worker, &j);
	if (ret == 0)
		n->size = size;
	vd_co_mutex_unlock(&s->resize_lock);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "failed to resize rbd image");
	return 0;
}

static int64_t rbd_get_allocated_size(struct vd_node *n)
{
	return -ENOTSUP; /* QEMU: "disk size: unavailable" */
}

static int rbd_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct rbd_state *s = n->opaque;

	info->cluster_size = (int64_t)s->obj_size;
	return 0;
}

/* --- snapshots ---------------------------------------------------------------- */

struct snap_job {
	struct rbd_state *s;
	const char *name;
	int op; /* 0 list, 1 create, 2 rollback, 3 remove */
	struct vd_snapshot_info *list;
	int count;
};

static int snap_list(struct snap_job *j)
{
	rbd_snap_info_t *snaps = NULL;
	int max = 16, r;

	for (;;) {
		snaps = calloc((size_t)max, sizeof(*snaps));
		if (!snaps)
			return -ENOMEM;
		r = rbd_lib.rbd_snap_list(j->s->image, snaps, &max);
		if (r != -ERANGE)
			break;
		free(snaps);
		if (max > 65536)
			return -ERANGE;
	}
	if (r < 0) {
		free(snaps);
		return r;
	}
	j->list = calloc(r ? (size_t)r : 1, sizeof(*j->list));
	if (!j->list) {
		rbd_lib.rbd_snap_list_end(snaps);
		free(snaps);
		return -ENOMEM;
	}
	/* QEMU's qemu_rbd_snap_list: the name is also the id, the size of the
	 * image at the snapshot goes into vm_state_size. */
	for (int i = 0; i < r; i++) {
		struct vd_snapshot_info *sn = &j->list[i];
		snprintf(sn->id, sizeof(sn->id), "%s", snaps[i].name);
		snprintf(sn->name, sizeof(sn->name), "%s", snaps[i].name);
		sn->vm_state_size = snaps[i].size;
		sn->icount = 0; /* QEMU leaves it 0, and prints it */
	}
	j->count = r;
	rbd_lib.rbd_snap_list_end(snaps);
	free(snaps);
	return r;
}

static int snap_worker(void *opaque)
{
	struct snap_job *j = opaque;

	switch (j->op) {
	case 0:
		return snap_list(j);
	case 1:
		return rbd_lib.rbd_snap_create(j->s->image, j->name);
	case 2:
		return rbd_lib.rbd_snap_rollback(j->s->image, j->name);
	default:
		return rbd_lib.rbd_snap_remove(j->s->image, j->name);
	}
}

static int rbd_snapshot_list(struct vd_node *n, struct vd_snapshot_info **out)
{
	struct snap_job j = {.s = n->opaque, .op = 0};
	int r = vd_thread_pool_co(n->loop, snap_worker, &j);

	if (r < 0)
		return r;
	*out = j.list;
	return j.count;
}

static int rbd_snapshot_op(struct vd_node *n, int op, const char *name, struct vd_error *err)
{
	struct rbd_state *s = n->opaque;
	struct snap_job j = {.s = s, .op = op, .name = name};
	static const char *const what[] = {"", "create", "rollback to", "remove"};
	int r;

	if (s->spec.snapshot)
		return vd_error_set(err, -EROFS, "The image is opened at a snapshot");
	r = vd_thread_pool_co(n->loop, snap_worker, &j);
	if (r < 0)
		return vd_error_setg_errno(err, r, "Failed to %s snapshot '%s'", what[op], name);
	if (op == 2) {
		uint64_t size;
		if (rbd_lib.rbd_get_size(s->image, &size) == 0)
			n->size = (int64_t)size;
	}
	return 0;
}

static int rbd_snapshot_create(struct vd_node *n, const struct vd_snapshot_info *sn,
			       struct vd_error *err)
{
	/* QEMU refuses a snapshot whose id differs from its name. */
	if (sn->id[0] && strcmp(sn->id, sn->name) != 0)
		return vd_error_set(err, -EINVAL, "ID and name must be identical for rbd");
	return rbd_snapshot_op(n, 1, sn->name, err);
}

static int rbd_snapshot_goto(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	return rbd_snapshot_op(n, 2, id_or_name, err);
}

static int rbd_snapshot_delete(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	return rbd_snapshot_op(n, 3, id_or_name, err);
}

/* --- create ------------------------------------------------------------------- */

struct create_job {
	struct rbd_state *s;
	uint64_t size;
	int order;
	char msg[256];
};

static int create_worker(void *opaque)
{
	struct create_job *j = opaque;
	struct connect_job cj = {.s = j->s};
	int order = j->order;
	int r;

	r = connect_worker(&cj);
	if (r < 0) {
		memcpy(j->msg, cj.msg, sizeof(j->msg));
		return r;
	}
	r = rbd_lib.rbd_create(j->s->io, j->s->spec.image, j->size, &order);
	if (r < 0)
		snprintf(j->msg, sizeof(j->msg), "error rbd create");
	return r;
}

static int rbd_create_image(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	struct rbd_state s = {0};
	struct create_job j = {.s = &s};
	uint64_t size, cluster_size;
	int ret;

	if (!vd_opts_has(opts, "size"))
		return vd_error_set(err, -EINVAL, "Image creation needs a size parameter");
	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret < 0)
		return ret;
	if (size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Image size must be less than 8 EiB!");
	ret = vd_opts_get_size(opts, "cluster_size", 0, &cluster_size, err);
	if (ret < 0)
		return ret;
	/* QEMU's qemu_rbd_do_create: the object size. */
	if (cluster_size) {
		if (cluster_size & (cluster_size - 1))
			return vd_error_set(err, -EINVAL, "obj size needs to be power of 2");
		if (cluster_size < (1u << RBD_MIN_OBJ_ORDER))
			return vd_error_set(err, -EINVAL, "obj size too small");
		if (cluster_size > (1u << RBD_MAX_OBJ_ORDER))
			return vd_error_set(err, -EINVAL, "obj size too large");
		j.order = __builtin_ctzll(cluster_size);
	}
	if (vd_opts_has(opts, "preallocation")) {
		const char *p = vd_opts_get(opts, "preallocation");
		if (strcmp(p, "off") != 0)
			return vd_error_set(err, -ENOTSUP, "Unsupported preallocation mode '%s'",
					    p);
	}
	ret = rbd_parse_filename(filename, &s.spec, err);
	if (ret < 0)
		goto out;
	if (s.spec.snapshot) {
		ret = vd_error_set(err, -EINVAL, "Can't use snapshot name for image creation");
		goto out;
	}
	if (!rbd_lib_load(err)) {
		ret = -ENOTSUP;
		goto out;
	}
	j.size = size;
	/* Not in a coroutine: a plain blocking call. */
	ret = create_worker(&j);
	if (ret < 0)
		vd_error_setg_errno(err, ret, "%s", j.msg);
out:
	disconnect_cluster(&s);
	rbd_spec_free(&s.spec);
	return ret;
}

static const char *const rbd_create_opts[] = {"cluster_size", "preallocation", NULL};

const struct vd_block_driver vd_driver_rbd = {
	.name = "rbd",
	.instance_size = sizeof(struct rbd_state),
	.create_opts = rbd_create_opts,
	.open = rbd_node_open,
	.close = rbd_node_close,
	.create = rbd_create_image,
	.co_preadv = rbd_co_preadv,
	.co_pwritev = rbd_co_pwritev,
	.co_flush = rbd_co_flush,
	.co_pdiscard = rbd_co_pdiscard,
	.co_pwrite_zeroes = rbd_co_pwrite_zeroes,
	.co_block_status = rbd_co_block_status,
	.co_truncate = rbd_co_truncate,
	.get_allocated_size = rbd_get_allocated_size,
	.get_info = rbd_get_info,
	.snapshot_list = rbd_snapshot_list,
	.snapshot_create = rbd_snapshot_create,
	.snapshot_goto = rbd_snapshot_goto,
	.snapshot_delete = rbd_snapshot_delete,
};

#endif /* VD_HAVE_RBD */
