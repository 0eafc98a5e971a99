/* SPDX-License-Identifier: MIT */
/*
 * Requests through a block backend (see "I/O" in include/vdisk/backend.h):
 * the checks every user of a medium needs (no medium, read-only, range) done
 * once, in-flight counting for drain, the write-cache setting, and the
 * retry list of the "stop" error policy.  QEMU's block/block-backend.c has
 * the same role (blk_check_byte_request, blk_inc_in_flight, blk_drain).
 *
 * The node graph below does its own validation and accounting: a request
 * that passes here is an ordinary node request.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include <vdisk/backend.h>
#include <vdisk/trace.h>

#include "block/blk.h"
#include "block/internal.h"

/* Limits of a backend without a medium: nothing to fit. */
static const struct vd_limits no_medium_limits = {
	.request_alignment = 1,
	.min_mem_alignment = 1,
	.opt_mem_alignment = 1,
};

enum blk_op {
	BLK_READ,
	BLK_WRITE,
	BLK_FLUSH,
	BLK_DISCARD,
	BLK_ZEROES,
};

static bool op_writes(enum blk_op op)
{
	return op == BLK_WRITE || op == BLK_DISCARD || op == BLK_ZEROES;
}

/* The rules of the handle (QEMU's blk_check_byte_request and the
 * blk_is_available / read-only checks of blk_co_pwritev). */
static int blk_check(const struct vd_blk *blk, enum blk_op op, int64_t offset, int64_t bytes)
{
	int64_t size;

	if (!blk->root)
		return -ENOMEDIUM;
	if (op_writes(op) && !vd_blk_is_writable(blk))
		return -EROFS;
	if (op == BLK_FLUSH)
		return 0;
	if (offset < 0 || bytes < 0 || bytes > VD_REQUEST_MAX_BYTES)
		return -EINVAL;
	size = vd_node_size(blk->root);
	if (size < 0)
		return (int)size;
	if (offset > size || bytes > size - offset)
		return -EIO;
	return 0;
}

static void blk_inc_in_flight(struct vd_blk *blk)
{
	blk->in_flight++;
}

static void blk_dec_in_flight(struct vd_blk *blk)
{
	if (--blk->in_flight == 0 && !vd_co_queue_empty(&blk->drain_waiters))
		vd_co_queue_restart_all(&blk->drain_waiters);
}

/* The request itself, on the medium, once blk_check() passed.  In a
 * coroutine. */
static int vd_coroutine_fn blk_dispatch(struct vd_blk *blk, enum blk_op op, int64_t offset,
					int64_t bytes, const struct vd_qiov *qiov, int flags)
{
	struct vd_node *n = blk->root;

	switch (op) {
	case BLK_READ:
		return vd_co_preadv(n, offset, bytes, qiov, flags);
	case BLK_WRITE:
		return vd_co_pwritev(n, offset, bytes, qiov, flags);
	case BLK_FLUSH:
		return vd_co_flush(n);
	case BLK_DISCARD:
		return vd_co_pdiscard(n, offset, bytes);
	case BLK_ZEROES:
		return vd_co_pwrite_zeroes(n, offset, bytes, flags);
	}
	return -EINVAL;
}

static int vd_coroutine_fn blk_do(struct vd_blk *blk, enum blk_op op, int64_t offset, int64_t bytes,
				  const struct vd_qiov *qiov, int flags)
{
	int ret = blk_check(blk, op, offset, bytes);

	return ret < 0 ? ret : blk_dispatch(blk, op, offset, bytes, qiov, flags);
}

static int vd_coroutine_fn blk_co(struct vd_blk *blk, enum blk_op op, int64_t offset, int64_t bytes,
				  const struct vd_qiov *qiov, int flags)
{
	int ret;

	blk_inc_in_flight(blk);
	ret = blk_do(blk, op, offset, bytes, qiov, flags);
	blk_dec_in_flight(blk);
	return ret;
}

int vd_coroutine_fn vd_blk_co_preadv(struct vd_blk *blk, int64_t offset, int64_t bytes,
				     const struct vd_qiov *qiov, int flags)
{
	return blk_co(blk, BLK_READ, offset, bytes, qiov, flags);
}

int vd_coroutine_fn vd_blk_co_pwritev(struct vd_blk *blk, int64_t offset, int64_t bytes,
				      const struct vd_qiov *qiov, int flags)
{
	return blk_co(blk, BLK_WRITE, offset, bytes, qiov, flags);
}

int vd_coroutine_fn vd_blk_co_flush(struct vd_blk *blk)
{
	return blk_co(blk, BLK_FLUSH, 0, 0, NULL, 0);
}

int vd_coroutine_fn vd_blk_co_pdiscard(struct vd_blk *blk, int64_t offset, int64_t bytes)
{
	return blk_co(blk, BLK_DISCARD, offset, bytes, NULL, 0);
}

int vd_coroutine_fn vd_blk_co_pwrite_zeroes(struct vd_blk *blk, int64_t offset, int64_t bytes,
					    int flags)
{
	return blk_co(blk, BLK_ZEROES, offset, bytes, NULL, flags);
}

int vd_coroutine_fn vd_blk_co_block_status(struct vd_blk *blk, int64_t offset, int64_t bytes,
					   int64_t *pnum, int64_t *map)
{
	int ret = blk_check(blk, BLK_READ, offset, bytes);

	if (ret < 0)
		return ret;
	blk_inc_in_flight(blk);
	ret = vd_co_block_status(blk->root, offset, bytes, pnum, map, NULL);
	blk_dec_in_flight(blk);
	return ret;
}

int vd_coroutine_fn vd_blk_co_block_status_above(struct vd_blk *blk, int64_t offset, int64_t bytes,
						 int64_t *pnum, int *depth)
{
	int ret = blk_check(blk, BLK_READ, offset, bytes);
	int d = 0;

	if (ret < 0)
		return ret;
	blk_inc_in_flight(blk);
	ret = vd_co_block_status_above(blk->root, NULL, offset, bytes, pnum, NULL, NULL, &d);
	blk_dec_in_flight(blk);
	if (ret >= 0 && depth)
		*depth = ret & VD_BLOCK_ALLOCATED ? d + 1 : 0;
	return ret;
}

int vd_blk_host_range(struct vd_blk *blk, int64_t offset, int64_t bytes, int *fd,
		      int64_t *host_offset)
{
	int64_t t0 = vd_clock_ns();
	int ret = blk_check(blk, BLK_READ, offset, bytes);
	int own;

	if (ret < 0)
		return ret;
	ret = vd_node_host_range(blk->root, offset, bytes, &own, host_offset);
	if (ret < 0)
		return ret;
	/* A descriptor of its own: the node may close or reopen its file
	 * before the caller has read. */
	*fd = fcntl(own, F_DUPFD_CLOEXEC, 0);
	if (*fd < 0)
		return -ENOTSUP;
	vd_acct_done(blk->root, VD_ACCT_READ, bytes, 0, t0);
	return 0;
}

/* --- asynchronous requests ----------------------------------------------- */

struct blk_aio {
	struct vd_blk *blk;
	enum blk_op op;
	int64_t offset, bytes;
	const struct vd_qiov *qiov;
	int flags;
	vd_completion_fn *cb;
	void *opaque;
	int ret;
	bool done;
	bool returned; /* the submitting call has returned */
};

static void blk_aio_complete(void *opaque)
{
	struct blk_aio *r = opaque;
	struct vd_blk *blk = r->blk;
	vd_completion_fn *cb = r->cb;
	void *cb_opaque = r->opaque;
	int ret = r->ret;

	free(r);
	cb(cb_opaque, ret);
	/* After the callback: a drain that returns has seen it run.  The
	 * reference taken at submission keeps @blk alive through a callback
	 * that drops the caller's last one. */
	blk_dec_in_flight(blk);
	vd_blk_unref(blk);
}

static void blk_aio_entry(void *opaque)
{
	struct blk_aio *r = opaque;

	/* Checked at submission, and entered at once: nothing changed since. */
	r->ret = blk_dispatch(r->blk, r->op, r->offset, r->bytes, r->qiov, r->flags);
	r->done = true;
	if (r->returned)
		blk_aio_complete(r);
}

/* A completion that must not run inside the submitting call. */
static void blk_aio_defer(struct blk_aio *r)
{
	if (vd_loop_oneshot(vd_blk_loop(r->blk), blk_aio_complete, r) == 0)
		return;
	/* Out of memory: completing inline is the lesser evil. */
	blk_aio_complete(r);
}

static void blk_aio_submit(struct vd_blk *blk, enum blk_op op, int64_t offset, int64_t bytes,
			   const struct vd_qiov *qiov, int flags, vd_completion_fn *cb,
			   void *opaque)
{
	struct blk_aio *r = malloc(sizeof(*r));
	struct vd_co *co;

	if (!r) {
		cb(opaque, -ENOMEM);
		return;
	}
	*r = (struct blk_aio){.blk = blk,
			      .op = op,
			      .offset = offset,
			      .bytes = bytes,
			      .qiov = qiov,
			      .flags = flags,
			      .cb = cb,
			      .opaque = opaque};
	vd_blk_ref(blk);
	blk_inc_in_flight(blk);
	/* Refused requests skip the coroutine. */
	r->ret = blk_check(blk, op, offset, bytes);
	if (r->ret < 0) {
		blk_aio_defer(r);
		return;
	}
	co = vd_co_create(blk_aio_entry, r);
	if (!co) {
		r->ret = -ENOMEM;
		blk_aio_defer(r);
		return;
	}
	vd_co_enter(co);
	if (r->done)
		blk_aio_defer(r);
	else
		r->returned = true;
}

void vd_blk_aio_preadv(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov, int flags,
		       vd_completion_fn *cb, void *opaque)
{
	blk_aio_submit(blk, BLK_READ, offset, (int64_t)qiov->size, qiov, flags, cb, opaque);
}

void vd_blk_aio_pwritev(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov, int flags,
			vd_completion_fn *cb, void *opaque)
{
	blk_aio_submit(blk, BLK_WRITE, offset, (int64_t)qiov->size, qiov, flags, cb, opaque);
}

void vd_blk_aio_flush(struct vd_blk *blk, vd_completion_fn *cb, void *opaque)
{
	blk_aio_submit(blk, BLK_FLUSH, 0, 0, NULL, 0, cb, opaque);
}

void vd_blk_aio_pdiscard(struct vd_blk *blk, int64_t offset, int64_t bytes, vd_completion_fn *cb,
			 void *opaque)
{
	blk_aio_submit(blk, BLK_DISCARD, offset, bytes, NULL, 0, cb, opaque);
}

void vd_blk_aio_pwrite_zeroes(struct vd_blk *blk, int64_t offset, int64_t bytes, int flags,
			      vd_completion_fn *cb, void *opaque)
{
	blk_aio_submit(blk, BLK_ZEROES, offset, bytes, NULL, flags, cb, opaque);
}

/* --- synchronous requests ------------------------------------------------ */

struct blk_sync {
	struct vd_blk *blk;
	enum blk_op op;
	int64_t offset, bytes;
	const struct vd_qiov *qiov;
	int flags;
	int ret;
};

static void blk_sync_entry(void *opaque)
{
	struct blk_sync *s = opaque;

	s->ret = blk_co(s->blk, s->op, s->offset, s->bytes, s->qiov, s->flags);
}

static int blk_syncv(struct vd_blk *blk, enum blk_op op, int64_t offset, int64_t bytes,
		     const struct vd_qiov *qiov, int flags)
{
	struct blk_sync s = {blk, op, offset, bytes, qiov, flags, 0};
	int ret = vd_co_run_sync(blk_sync_entry, &s);

	return ret < 0 ? ret : s.ret;
}

static int blk_sync(struct vd_blk *blk, enum blk_op op, int64_t offset, int64_t bytes,
		    const void *buf, int flags)
{
	struct vd_qiov q;

	if (!buf)
		return blk_syncv(blk, op, offset, bytes, NULL, flags);
	if (bytes < 0)
		return -EINVAL;
	vd_qiov_init_buf(&q, (void *)buf, (size_t)bytes);
	return blk_syncv(blk, op, offset, bytes, &q, flags);
}

int vd_blk_preadv(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov)
{
	return blk_syncv(blk, BLK_READ, offset, (int64_t)qiov->size, qiov, 0);
}

int vd_blk_pwritev(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov, int flags)
{
	return blk_syncv(blk, BLK_WRITE, offset, (int64_t)qiov->size, qiov, flags);
}

int vd_blk_pread(struct vd_blk *blk, int64_t offset, void *buf, int64_t bytes)
{
	return blk_sync(blk, BLK_READ, offset, bytes, buf, 0);
}

int vd_blk_pwrite(struct vd_blk *blk, int64_t offset, const void *buf, int64_t bytes, int flags)
{
	return blk_sync(blk, BLK_WRITE, offset, bytes, buf, flags);
}

int vd_blk_flush(struct vd_blk *blk)
{
	return blk_sync(blk, BLK_FLUSH, 0, 0, NULL, 0);
}

int vd_blk_pdiscard(struct vd_blk *blk, int64_t offset, int64_t bytes)
{
	return blk_sync(blk, BLK_DISCARD, offset, bytes, NULL, 0);
}

int vd_blk_pwrite_zeroes(struct vd_blk *blk, int64_t offset, int64_t bytes, int flags)
{
	return blk_sync(blk, BLK_ZEROES, offset, bytes, NULL, flags);
}

/* --- drain, properties --------------------------------------------------- */

void vd_blk_drain(struct vd_blk *blk)
{
	if (vd_in_coroutine()) {
		while (blk->in_flight > 0)
			vd_co_queue_wait(&blk->drain_waiters);
		return;
	}
	while (blk->in_flight > 0)
		vd_loop_run_once(vd_blk_loop(blk), true);
}

uint64_t vd_blk_in_flight(const struct vd_blk *blk)
{
	return blk->in_flight;
}

int64_t vd_blk_getlength(const struct vd_blk *blk)
{
	return blk->root ? vd_node_size(blk->root) : -ENOMEDIUM;
}

const struct vd_limits *vd_blk_limits(const struct vd_blk *blk)
{
	return blk->root ? vd_node_limits(blk->root) : &no_medium_limits;
}

struct vd_loop *vd_blk_loop(const struct vd_blk *blk)
{
	struct vd_loop *loop = blk->root ? vd_node_loop(blk->root) : NULL;

	return loop ? loop : vd_loop_current();
}

bool vd_blk_is_writable(const struct vd_blk *blk)
{
	return !blk->read_only && !(blk->root && vd_node_is_read_only(blk->root));
}

void vd_blk_set_write_cache(struct vd_blk *blk, bool enabled)
{
	blk->write_cache = enabled;
	if (blk->root)
		vd_node_set_write_cache(blk->root, enabled);
}

bool vd_blk_write_cache(const struct vd_blk *blk)
{
	return blk->write_cache;
}

void vd_blk_get_stats(const struct vd_blk *blk, struct vd_acct_stats *st)
{
	if (blk->root)
		vd_node_get_stats(blk->root, st);
	else
		*st = (struct vd_acct_stats){0};
}

void vd_blk_acct_merged(struct vd_blk *blk, enum vd_acct_type type, unsigned count)
{
	if (blk->root)
		vd_node_acct_merged(blk->root, type, count);
}

/* --- the error policy and the retry list --------------------------------- */

enum vd_blk_error_action vd_blk_handle_error(struct vd_blk *blk, bool is_read, int error)
{
	enum vd_blk_error_action a = vd_blk_get_error_action(blk, is_read, error);

	vd_trace(blk_io_error, "blk=%s read=%d error=%d action=%s", blk->name, is_read,
		 error < 0 ? -error : error, vd_blk_action_names[a]);
	vd_blk_report_error(blk, a, is_read, error);
	return a;
}

void vd_blk_retry_keep(struct vd_blk *blk, struct vd_blk_retry *r)
{
	r->next = NULL;
	*blk->retry_tail = r;
	blk->retry_tail = &r->next;
}

void vd_blk_retry_all(struct vd_blk *blk)
{
	struct vd_blk_retry *list = blk->retry_head;

	/* Detach first: a resubmitted request that fails again is kept anew,
	 * for the next "cont". */
	blk->retry_head = NULL;
	blk->retry_tail = &blk->retry_head;
	while (list) {
		struct vd_blk_retry *r = list;

		list = r->next;
		r->next = NULL;
		r->resubmit(r);
	}
}

void vd_blk_retry_drop(struct vd_blk *blk,
		       bool (*match)(const struct vd_blk_retry *r, void *opaque),
		       void (*drop)(struct vd_blk_retry *r), void *opaque)
{
	struct vd_blk_retry **p = &blk->retry_head;

	while (*p) {
		struct vd_blk_retry *r = *p;

		if (!match || match(r, opaque)) {
			*p = r->next;
			drop(r);
		} else {
			p = &r->next;
		}
	}
	blk->retry_tail = p;
}

unsigned vd_blk_retry_count(const struct vd_blk *blk)
{
	unsigned n = 0;

	for (const struct vd_blk_retry *r = blk->retry_head; r; r = r->next)
		n++;
	return n;
}
