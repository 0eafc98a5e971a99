/* SPDX-License-Identifier: MIT */
/*
 * The request path of the block layer.
 *
 * Every request passes, in this order:
 *   1. validation (check_request): the one place where range, overflow,
 *      read-only and size limits are checked;
 *   2. accounting (start time; counted at completion);
 *   3. tracking: the request is listed on the node so that drain can wait for
 *      it and overlapping requests can be serialised.  A request that must not
 *      overlap others (a read-modify-write of a partial block, or any write on
 *      a node whose driver asked for serialise_writes) waits for every
 *      overlapping request; others wait only for overlapping serialising ones;
 *   4. padding and bouncing: requests not aligned to the node's
 *      request_alignment, or whose buffers do not meet min_mem_alignment, go
 *      through an aligned bounce buffer (read-modify-write for writes);
 *   5. splitting at max_transfer and max_iov;
 *   6. the driver, and FUA emulation with a flush when the driver lacks it.
 *
 * All of it runs in a coroutine on the node's loop.  vd_aio_*() wrap it for
 * callers that want a completion callback, vd_node_p*() for synchronous
 * callers.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/internal.h"

/* Bounce buffers are used in chunks of this size (or one alignment unit). */
#define BOUNCE_CHUNK (1024 * 1024)
/* Largest zero buffer the write-zeroes fallback writes at once. */
#define ZERO_CHUNK (1024 * 1024)

const char *const vd_prealloc_names[] = {"off", "metadata", "falloc", "full", NULL};

static inline int64_t align_down(int64_t v, int64_t a)
{
	return v / a * a;
}

static inline int64_t align_up(int64_t v, int64_t a)
{
	return (v + a - 1) / a * a;
}

static inline int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

void vd_node_round_size(struct vd_node *n)
{
	if (n->size > 0 && n->size % 512)
		n->size = align_up(n->size, 512);
}

void vd_node_init_io(struct vd_node *n)
{
	n->tracked.next = n->tracked.prev = &n->tracked;
	vd_co_queue_init(&n->drain_waiters);
	vd_co_queue_init(&n->flush_waiters);
}

/* --- 1. validation ------------------------------------------------------- */

static int check_request(struct vd_node *n, int64_t offset, int64_t bytes,
			 const struct vd_qiov *qiov, bool write)
{
	if (!n || !n->drv)
		return -ENOMEDIUM;
	if (offset < 0 || bytes < 0)
		return -EINVAL;
	if (bytes > VD_REQUEST_MAX_BYTES)
		return -EINVAL;
	if (offset > VD_MAX_LENGTH - bytes)
		return -EINVAL;
	if (qiov && qiov->size < (size_t)bytes)
		return -EINVAL;
	if (write && n->read_only)
		return -EROFS;
	if (!n->growable && offset + bytes > n->size)
		return -EIO;
	return 0;
}

/* Discard and write-zeroes requests may be larger than one data request. */
static int check_range(struct vd_node *n, int64_t offset, int64_t bytes, bool write)
{
	if (!n || !n->drv)
		return -ENOMEDIUM;
	if (offset < 0 || bytes < 0 || offset > VD_MAX_LENGTH - bytes)
		return -EINVAL;
	if (write && n->read_only)
		return -EROFS;
	if (!n->growable && offset + bytes > n->size)
		return -EIO;
	return 0;
}

/* --- 3. tracking and serialisation --------------------------------------- */

static bool overlaps(const struct vd_tracked_req *r, int64_t offset, int64_t bytes)
{
	return offset < r->offset + r->bytes && r->offset < offset + bytes;
}

static void track_begin(struct vd_node *n, struct vd_tracked_req *req, int64_t offset,
			int64_t bytes, bool serialising, bool is_write)
{
	int64_t align = n->limits.request_alignment;

	req->offset = align_down(offset, align);
	req->bytes = align_up(offset + bytes, align) - req->offset;
	req->serialising = serialising;
	req->is_write = is_write;
	vd_co_queue_init(&req->waiters);

	/*
	 * Wait before listing ourselves: a listed request never waits, so two
	 * requests can never wait for each other.  Between the last check and
	 * the insertion nothing yields, so no conflict can slip in.
	 */
	if (serialising || n->serialising_in_flight > 0) {
		struct vd_tracked_req *r;
	again:
		for (r = n->tracked.next; r != &n->tracked; r = r->next) {
			if ((serialising || r->serialising) &&
			    overlaps(r, req->offset, req->bytes)) {
				vd_co_queue_wait(&r->waiters);
				goto again;
			}
		}
	}
	req->next = &n->tracked;
	req->prev = n->tracked.prev;
	n->tracked.prev->next = req;
	n->tracked.prev = req;
	if (serialising)
		n->serialising_in_flight++;
	n->in_flight++;
}

static void track_end(struct vd_node *n, struct vd_tracked_req *req)
{
	req->prev->next = req->next;
	req->next->prev = req->prev;
	if (req->serialising)
		n->serialising_in_flight--;
	vd_co_queue_restart_all(&req->waiters);
	assert(n->in_flight > 0);
	if (--n->in_flight == 0)
		vd_co_queue_restart_all(&n->drain_waiters);
}

/* --- 5/6. splitting and the driver --------------------------------------- */

static int64_t max_transfer(const struct vd_node *n)
{
	int64_t m = n->limits.max_transfer ? (int64_t)n->limits.max_transfer : VD_REQUEST_MAX_BYTES;
	m = min64(m, VD_REQUEST_MAX_BYTES);
	m = align_down(m, n->limits.request_alignment);
	return m > 0 ? m : n->limits.request_alignment;
}

static int max_iov(const struct vd_node *n)
{
	return n->limits.max_iov > 0 ? n->limits.max_iov : IOV_MAX;
}

static int call_driver(struct vd_node *n, bool write, int64_t offset, int64_t bytes,
		       struct vd_qiov *qiov, int flags)
{
	int ret;

	vd_trace(block_driver_rw, "node %p %s %s offset %" PRId64 " bytes %" PRId64 " flags 0x%x",
		 (void *)n, n->drv->name, write ? "write" : "read", offset, bytes, flags);
	if (write)
		ret = n->drv->co_pwritev ? n->drv->co_pwritev(n, offset, bytes, qiov, flags)
					 : -ENOTSUP;
	else
		ret = n->drv->co_preadv ? n->drv->co_preadv(n, offset, bytes, qiov, flags)
					: -ENOTSUP;
	if (ret < 0)
		vd_trace(block_driver_error, "node %p %s ret %d", (void *)n, n->drv->name, ret);
	return ret;
}

/*
 * An aligned request whose buffers meet the memory alignment: split it at
 * max_transfer and max_iov and hand the pieces to the driver in order.
 */
static int drv_rw(struct vd_node *n, bool write, int64_t offset, int64_t bytes,
		  const struct vd_qiov *qiov, size_t qiov_offset, int flags)
{
	int64_t maxt = max_transfer(n);
	int maxiov = max_iov(n);
	struct vd_qiov piece;
	int ret = 0;

	/* Fast path: one piece that is the caller's whole vector. */
	if (qiov_offset == 0 && (size_t)bytes == qiov->size && bytes <= maxt &&
	    qiov->niov <= maxiov) {
		vd_qiov_init_external(&piece, qiov->iov, qiov->niov);
		return call_driver(n, write, offset, bytes, &piece, flags);
	}

	vd_qiov_init(&piece, 0);
	while (bytes > 0) {
		int64_t len = min64(bytes, maxt);

		vd_qiov_reset(&piece);
		ret = vd_qiov_concat_slice(&piece, qiov, qiov_offset, (size_t)len);
		if (ret < 0)
			break;
		if (piece.niov > maxiov) {
			/*
			 * Too many fragments: shorten the piece to what the
			 * first max_iov entries cover, kept aligned.  If even
			 * that is below one alignment unit the caller must
			 * bounce (see needs_bounce).
			 */
			size_t covered = 0;
			for (int i = 0; i < maxiov; i++)
				covered += piece.iov[i].iov_len;
			len = align_down((int64_t)covered, n->limits.request_alignment);
			assert(len > 0);
			vd_qiov_reset(&piece);
			ret = vd_qiov_concat_slice(&piece, qiov, qiov_offset, (size_t)len);
			if (ret < 0)
				break;
		}
		ret = call_driver(n, write, offset, len, &piece, flags);
		if (ret < 0)
			break;
		offset += len;
		qiov_offset += (size_t)len;
		bytes -= len;
	}
	vd_qiov_destroy(&piece);
	return ret;
}

/* --- 6. flush and FUA ---------------------------------------------------- */

static int flush_node(struct vd_node *n);

static int drv_write(struct vd_node *n, int64_t offset, int64_t bytes, const struct vd_qiov *qiov,
		     size_t qiov_offset, int flags)
{
	bool fua = (flags & VD_REQ_FUA) != 0;
	int drv_flags = flags & (n->supported_write_flags | VD_REQ_COMPRESSED);
	int ret;

	ret = drv_rw(n, true, offset, bytes, qiov, qiov_offset, drv_flags);
	if (ret == 0) {
		n->write_gen++;
		if (fua && !(n->supported_write_flags & VD_REQ_FUA))
			ret = flush_node(n);
	}
	return ret;
}

/* --- 4. padding and bouncing --------------------------------------------- */

static bool needs_bounce(const struct vd_node *n, int64_t offset, int64_t bytes,
			 const struct vd_qiov *qiov)
{
	int64_t align = n->limits.request_alignment;

	if (offset % align || bytes % align)
		return true;
	if (n->limits.min_mem_alignment > 1 &&
	    !vd_qiov_is_aligned(qiov, n->limits.min_mem_alignment))
		return true;
	/* A vector with more entries than max_iov whose first max_iov entries
	 * cover less than one alignment unit cannot be split: bounce it. */
	if (qiov->niov > max_iov(n)) {
		size_t covered = 0;
		for (int i = 0; i < max_iov(n); i++)
			covered += qiov->iov[i].iov_len;
		if ((int64_t)covered < align)
			return true;
	}
	return false;
}

static void *bounce_alloc(const struct vd_node *n, size_t size)
{
	size_t a = n->limits.opt_mem_alignment;
	if (a < n->limits.min_mem_alignment)
		a = n->limits.min_mem_alignment;
	if (a < 4096)
		a = 4096;
	return vd_memalign(a, size);
}

static size_t bounce_chunk(const struct vd_node *n)
{
	int64_t align = n->limits.request_alignment;
	int64_t c = align_down(BOUNCE_CHUNK, align);
	if (c < align)
		c = align;
	return (size_t)min64(c, max_transfer(n));
}

/*
 * Read [offset, offset + bytes) into @qiov at @qiov_offset, or write it from
 * there (zeroes when @qiov is NULL), through an aligned bounce buffer, one
 * chunk at a time.  A write first reads the partial head and tail blocks
 * (read-modify-write); the caller holds a serialising tracked request over
 * the aligned range when the request is unaligned.
 */
static int bounce_rw(struct vd_node *n, bool write, int64_t offset, int64_t bytes,
		     const struct vd_qiov *qiov, size_t qiov_offset, int flags)
{
	int64_t align = n->limits.request_alignment;
	int64_t start = align_down(offset, align);
	int64_t end = align_up(offset + bytes, align);
	size_t chunk = bounce_chunk(n);
	char *buf = bounce_alloc(n, chunk);
	struct vd_qiov bq;
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	for (int64_t pos = start; pos < end; pos += (int64_t)chunk) {
		int64_t len = min64((int64_t)chunk, end - pos);
		int64_t copy_from = pos > offset ? pos : offset;
		int64_t copy_to = min64(pos + len, offset + bytes);
		char *part = buf + (copy_from - pos);
		size_t part_len = (size_t)(copy_to - copy_from);
		size_t qoff = qiov_offset + (size_t)(copy_from - offset);

		if (!write) {
			vd_qiov_init_buf(&bq, buf, (size_t)len);
			ret = drv_rw(n, false, pos, len, &bq, 0, flags);
			if (ret < 0)
				break;
			vd_qiov_from_buf(qiov, qoff, part, part_len);
			continue;
		}
		/* Partial head block: read it (RMW). */
		if (copy_from > pos) {
			vd_qiov_init_buf(&bq, buf, (size_t)align);
			ret = drv_rw(n, false, pos, align, &bq, 0, 0);
			if (ret < 0)
				break;
		}
		/* Partial tail block, unless the head read already covered it. */
		if (copy_to < pos + len && !(copy_from > pos && len == align)) {
			vd_qiov_init_buf(&bq, buf + len - align, (size_t)align);
			ret = drv_rw(n, false, pos + len - align, align, &bq, 0, 0);
			if (ret < 0)
				break;
		}
		if (qiov)
			vd_qiov_to_buf(qiov, qoff, part, part_len);
		else
			memset(part, 0, part_len);
		vd_qiov_init_buf(&bq, buf, (size_t)len);
		ret = drv_write(n, pos, len, &bq, 0, flags);
		if (ret < 0)
			break;
	}
	free(buf);
	return ret;
}

/* --- the public coroutine interface -------------------------------------- */

int vd_coroutine_fn vd_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes,
				 const struct vd_qiov *qiov, int flags)
{
	struct vd_tracked_req req;
	int64_t t0 = vd_clock_ns();
	int ret = check_request(n, offset, bytes, qiov, false);

	if (ret < 0) {
		vd_acct_invalid(n, VD_ACCT_READ);
		return ret;
	}
	if (bytes == 0)
		return 0;

	vd_trace(block_request, "node %p read offset %" PRId64 " bytes %" PRId64, (void *)n, offset,
		 bytes);
	track_begin(n, &req, offset, bytes, false, false);
	if (needs_bounce(n, offset, bytes, qiov))
		ret = bounce_rw(n, false, offset, bytes, qiov, 0, flags);
	else
		ret = drv_rw(n, false, offset, bytes, qiov, 0, flags);
	track_end(n, &req);
	vd_trace(block_request_done, "node %p read offset %" PRId64 " ret %d", (void *)n, offset,
		 ret);
	vd_acct_done(n, VD_ACCT_READ, bytes, ret, t0);
	return ret;
}

static bool unaligned(const struct vd_node *n, int64_t offset, int64_t bytes)
{
	int64_t align = n->limits.request_alignment;
	return offset % align || bytes % align;
}

int vd_coroutine_fn vd_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes,
				  const struct vd_qiov *qiov, int flags)
{
	struct vd_tracked_req req;
	int64_t t0 = vd_clock_ns();
	int ret = check_request(n, offset, bytes, qiov, true);

	if (ret < 0) {
		vd_acct_invalid(n, VD_ACCT_WRITE);
		return ret;
	}
	if (bytes == 0)
		return 0;
	if (!n->write_cache)
		flags |= VD_REQ_FUA;

	vd_trace(block_request, "node %p write offset %" PRId64 " bytes %" PRId64 " flags 0x%x",
		 (void *)n, offset, bytes, flags);
	track_begin(n, &req, offset, bytes, n->serialise_writes || unaligned(n, offset, bytes),
		    true);
	if (needs_bounce(n, offset, bytes, qiov))
		ret = bounce_rw(n, true, offset, bytes, qiov, 0, flags);
	else
		ret = drv_write(n, offset, bytes, qiov, 0, flags);
	vd_trace(block_request_done, "node %p write offset %" PRId64 " ret %d", (void *)n, offset,
		 ret);
	if (ret == 0 && n->growable && offset + bytes > n->size) {
		n->size = offset + bytes;
		vd_node_round_size(n);
	}
	track_end(n, &req);
	vd_acct_done(n, VD_ACCT_WRITE, bytes, ret, t0);
	return ret;
}

/*
 * Flush coalescing as QEMU does it: a flush whose writes were all covered by a
 * completed flush returns at once; concurrent flushes wait for the one in
 * progress and then check again.
 */
static int flush_node(struct vd_node *n)
{
	uint64_t gen = n->write_gen;
	int ret = 0;

	while (n->flush_active)
		vd_co_queue_wait(&n->flush_waiters);
	if (n->flushed_gen == gen && gen != 0)
		goto children;
	if (n->no_flush)
		goto done;

	n->flush_active = true;
	if (n->drv->co_flush)
		ret = n->drv->co_flush(n);
	n->flush_active = false;
	vd_co_queue_restart_all(&n->flush_waiters);
	if (ret < 0)
		return ret;
done:
	n->flushed_gen = gen;
children:
	if (n->file)
		ret = vd_co_flush(n->file);
	return ret;
}

int vd_coroutine_fn vd_co_flush(struct vd_node *n)
{
	struct vd_tracked_req req;
	int64_t t0 = vd_clock_ns();
	int ret;

	if (!n || !n->drv)
		return -ENOMEDIUM;
	/* A flush overlaps nothing: track it with an empty range, for drain. */
	track_begin(n, &req, 0, 0, false, false);
	ret = flush_node(n);
	track_end(n, &req);
	vd_acct_done(n, VD_ACCT_FLUSH, 0, ret, t0);
	return ret;
}

int vd_coroutine_fn vd_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	struct vd_tracked_req req;
	int64_t t0 = vd_clock_ns();
	int ret = check_range(n, offset, bytes, true);
	int64_t align, start, end, maxd;

	if (ret < 0) {
		vd_acct_invalid(n, VD_ACCT_DISCARD);
		return ret;
	}
	if (bytes == 0)
		return 0;

	/* Discard is advisory: only whole granules are passed down. */
	align = n->limits.discard_alignment ? n->limits.discard_alignment
					    : n->limits.request_alignment;
	start = align_up(offset, align);
	end = align_down(offset + bytes, align);
	/* The tail of the node counts as a whole granule. */
	if (offset + bytes == n->size && n->size > start)
		end = n->size;
	maxd = n->limits.max_discard ? (int64_t)n->limits.max_discard : VD_REQUEST_MAX_BYTES;
	maxd = align_down(maxd, align);
	if (maxd <= 0)
		maxd = align;

	/* discard=ignore: the request succeeds and nothing is deallocated. */
	if (!n->discard_unmap)
		end = start;
	track_begin(n, &req, offset, bytes, false, true);
	for (int64_t pos = start; pos < end && ret == 0;) {
		int64_t len = min64(end - pos, maxd);

		if (n->drv->co_pdiscard)
			ret = n->drv->co_pdiscard(n, pos, len);
		else if (n->drv->is_filter && n->file)
			ret = vd_co_pdiscard(n->file, pos, len);
		else
			ret = -ENOTSUP;
		if (ret == -ENOTSUP)
			ret = 0;
		pos += len;
	}
	if (ret == 0)
		n->write_gen++;
	track_end(n, &req);
	vd_acct_done(n, VD_ACCT_DISCARD, bytes, ret, t0);
	return ret;
}

/* Write zeroes with a zeroed buffer, for drivers without an efficient way. */
static int write_zero_buffer(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	int64_t chunk = min64(ZERO_CHUNK, max_transfer(n));
	void *buf;
	struct vd_qiov q;
	int ret = 0;

	chunk = align_down(chunk, n->limits.request_alignment);
	if (chunk <= 0)
		chunk = n->limits.request_alignment;
	buf = bounce_alloc(n, (size_t)min64(chunk, bytes));
	if (!buf)
		return -ENOMEM;
	memset(buf, 0, (size_t)min64(chunk, bytes));
	while (bytes > 0 && ret == 0) {
		int64_t len = min64(chunk, bytes);
		vd_qiov_init_buf(&q, buf, (size_t)len);
		ret = drv_write(n, offset, len, &q, 0, flags & VD_REQ_FUA);
		offset += len;
		bytes -= len;
	}
	free(buf);
	return ret;
}

/* The aligned middle of a write-zeroes request. */
static int zeroes_aligned(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	int64_t maxz = n->limits.max_write_zeroes ? (int64_t)n->limits.max_write_zeroes
						  : VD_REQUEST_MAX_BYTES;
	int drv_flags = flags & (n->supported_zero_flags | VD_REQ_MAY_UNMAP);
	bool fua = (flags & VD_REQ_FUA) != 0;
	int ret = 0;

	maxz = align_down(maxz, n->limits.request_alignment);
	if (maxz <= 0)
		maxz = n->limits.request_alignment;
	while (bytes > 0) {
		int64_t len = min64(bytes, maxz);

		ret = -ENOTSUP;
		if (n->drv->co_pwrite_zeroes)
			ret = n->drv->co_pwrite_zeroes(n, offset, len, drv_flags);
		else if (n->drv->is_filter && n->file)
			ret = vd_co_pwrite_zeroes(n->file, offset, len, flags);
		if (ret == -ENOTSUP && !(flags & VD_REQ_NO_FALLBACK))
			ret = write_zero_buffer(n, offset, len, flags);
		else if (ret == 0 && fua && !(n->supported_zero_flags & VD_REQ_FUA))
			ret = flush_node(n);
		if (ret < 0)
			return ret;
		offset += len;
		bytes -= len;
	}
	return 0;
}

int vd_coroutine_fn vd_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct vd_tracked_req req;
	int64_t t0 = vd_clock_ns();
	int ret = check_range(n, offset, bytes, true);
	int64_t align, start, end;

	if (ret < 0) {
		vd_acct_invalid(n, VD_ACCT_WRITE_ZEROES);
		return ret;
	}
	if (bytes == 0)
		return 0;
	if (!n->write_cache)
		flags |= VD_REQ_FUA;
	if (!n->discard_unmap)
		flags &= ~VD_REQ_MAY_UNMAP;

	align = n->limits.write_zeroes_alignment ? n->limits.write_zeroes_alignment
						 : n->limits.request_alignment;
	if (align < (int64_t)n->limits.request_alignment)
		align = n->limits.request_alignment;
	start = align_up(offset, align);
	end = align_down(offset + bytes, align);

	track_begin(n, &req, offset, bytes, n->serialise_writes || unaligned(n, offset, bytes),
		    true);
	if (start >= end) {
		/* Smaller than one granule: plain zero writes. */
		if (flags & VD_REQ_NO_FALLBACK)
			ret = -ENOTSUP;
		else
			ret = bounce_rw(n, true, offset, bytes, NULL, 0, flags & VD_REQ_FUA);
	} else {
		/* Head and tail outside the granules are written as zeroes. */
		if (offset < start && !(flags & VD_REQ_NO_FALLBACK))
			ret = bounce_rw(n, true, offset, start - offset, NULL, 0,
					flags & VD_REQ_FUA);
		else if (offset < start)
			ret = -ENOTSUP;
		if (ret == 0)
			ret = zeroes_aligned(n, start, end - start, flags);
		if (ret == 0 && end < offset + bytes) {
			if (flags & VD_REQ_NO_FALLBACK)
				ret = -ENOTSUP;
			else
				ret = bounce_rw(n, true, end, offset + bytes - end, NULL, 0,
						flags & VD_REQ_FUA);
		}
	}
	if (ret == 0) {
		n->write_gen++;
		if (n->growable && offset + bytes > n->size) {
			n->size = offset + bytes;
			vd_node_round_size(n);
		}
	}
	track_end(n, &req);
	vd_acct_done(n, VD_ACCT_WRITE_ZEROES, bytes, ret, t0);
	return ret;
}

int vd_coroutine_fn vd_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes,
				       int64_t *pnum, int64_t *map, struct vd_node **file)
{
	int64_t local_map = 0, num = 0;
	struct vd_node *local_file = NULL;
	int ret;

	if (!n || !n->drv)
		return -ENOMEDIUM;
	if (offset < 0 || bytes < 0 || offset > VD_MAX_LENGTH - bytes)
		return -EINVAL;
	if (offset >= n->size || bytes == 0) {
		*pnum = 0;
		return offset >= n->size ? VD_BLOCK_EOF : 0;
	}
	bytes = min64(bytes, n->size - offset);

	if (n->drv->co_block_status) {
		n->in_flight++;
		ret = n->drv->co_block_status(n, offset, bytes, &num, &local_map, &local_file);
		if (--n->in_flight == 0)
			vd_co_queue_restart_all(&n->drain_waiters);
		if (ret < 0)
			return ret;
		if (num <= 0 || num > bytes)
			num = bytes;
	} else if (n->drv->is_filter && n->file) {
		return vd_co_block_status(n->file, offset, bytes, pnum, map, file);
	} else {
		num = bytes;
		local_map = offset;
		local_file = n;
		ret = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	}
	if (ret & (VD_BLOCK_DATA | VD_BLOCK_ZERO))
		ret |= VD_BLOCK_ALLOCATED;
	if (offset + num == n->size)
		ret |= VD_BLOCK_EOF;
	*pnum = num;
	if (map)
		*map = local_map;
	if (file)
		*file = (ret & VD_BLOCK_OFFSET_VALID) ? local_file : NULL;
	return ret;
}

int vd_coroutine_fn vd_co_is_allocated_above(struct vd_node *top, struct vd_node *base,
					     int64_t offset, int64_t bytes, int64_t *pnum)
{
	int64_t want = bytes;

	if (!top || !top->drv)
		return -ENOMEDIUM;
	if (offset < 0 || bytes < 0)
		return -EINVAL;
	if (offset >= top->size) {
		*pnum = 0;
		return 0;
	}
	want = min64(want, top->size - offset);
	for (struct vd_node *p = top; p && p != base; p = p->backing) {
		int64_t num = 0;
		int ret;

		if (offset >= p->size) {
			/* Past the end of a shorter backing node: reads as zeroes,
			 * which belong to the overlay above it. */
			*pnum = want;
			return p == top ? 0 : 1;
		}
		ret = vd_co_block_status(p, offset, want, &num, NULL, NULL);
		if (ret < 0)
			return ret;
		if (ret & VD_BLOCK_ALLOCATED) {
			*pnum = num;
			return 1;
		}
		/* Unallocated here for num bytes: look further down for that much. */
		if (num > 0 && num < want)
			want = num;
	}
	*pnum = want;
	return 0;
}

static struct vd_node *skip_filters(struct vd_node *n)
{
	while (n && n->drv && n->drv->is_filter && n->file && !n->backing)
		n = n->file;
	return n;
}

int vd_coroutine_fn vd_co_block_status_above(struct vd_node *top, struct vd_node *base,
					     int64_t offset, int64_t bytes, int64_t *pnum,
					     int64_t *map, struct vd_node **file, int *depth)
{
	struct vd_node *p, *next;
	int64_t want, num = 0;
	int d = 0, ret;

	if (!top || !top->drv)
		return -ENOMEDIUM;
	if (offset < 0 || bytes < 0 || offset > VD_MAX_LENGTH - bytes)
		return -EINVAL;
	if (depth)
		*depth = 0;
	if (map)
		*map = 0;
	if (file)
		*file = NULL;
	if (offset >= top->size || bytes == 0) {
		*pnum = 0;
		return offset >= top->size ? VD_BLOCK_EOF : 0;
	}
	want = min64(bytes, top->size - offset);
	for (p = skip_filters(top);; p = next, d++) {
		ret = vd_co_block_status(p, offset, want, &num, map, file);
		if (ret < 0)
			return ret;
		if (num > 0 && num < want)
			want = num;
		if (ret & (VD_BLOCK_DATA | VD_BLOCK_ZERO))
			break;
		/* Unallocated here: the backing node answers, and where there
		 * is none (or it is shorter) the range reads as zeroes, as
		 * QEMU's bdrv_co_block_status says for a format with backing. */
		next = skip_filters(p->backing);
		if (next && next == skip_filters(base)) {
			ret = 0;
			break;
		}
		if (!next || offset >= next->size) {
			/* Where the node keeps storage for it (qcow2's
			 * unallocated subclusters of an allocated cluster)
			 * the offset stays valid. */
			ret = (ret & VD_BLOCK_OFFSET_VALID) | VD_BLOCK_ZERO;
			if (!(ret & VD_BLOCK_OFFSET_VALID)) {
				if (map)
					*map = 0;
				if (file)
					*file = NULL;
			}
			break;
		}
	}
	ret &= ~VD_BLOCK_EOF;
	if (offset + want == top->size)
		ret |= VD_BLOCK_EOF;
	*pnum = want;
	if (depth)
		*depth = d;
	return ret;
}

int vd_coroutine_fn vd_co_truncate(struct vd_node *n, int64_t size, bool exact,
				   enum vd_prealloc prealloc, struct vd_error *err)
{
	struct vd_tracked_req req;
	int64_t old;
	int ret;

	if (!n || !n->drv)
		return vd_error_set(err, -ENOMEDIUM, "No medium inserted");
	if (size < 0 || size > VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Invalid image size specified");
	if (n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	if (!n->drv->co_truncate)
		return vd_error_set(err, -ENOTSUP, "Image format driver does not support resize");

	/* Nothing may be in flight across the boundary while it moves. */
	old = n->size;
	int64_t from = size < old ? size : old;
	track_begin(n, &req, from, VD_MAX_LENGTH - from, true, true);
	ret = n->drv->co_truncate(n, size, exact, prealloc, err);
	if (ret < 0 && !vd_error_is_set(err))
		vd_error_setg_errno(err, ret, "Could not resize image");
	if (ret == 0) {
		n->write_gen++;
		vd_node_round_size(n);
	}
	track_end(n, &req);

	/* Grown over a backing file longer than the old size: the new range
	 * must read as zeroes, not as what the backing file has there (QEMU's
	 * bdrv_co_truncate with BDRV_REQ_ZERO_WRITE).  Done after the resize,
	 * so a crash in between can still show backing data there. */
	if (ret == 0 && size > old && n->backing) {
		int64_t blen = vd_node_size(n->backing);
		int64_t end = blen < n->size ? blen : n->size;
		if (blen > old && end > old) {
			ret = vd_co_pwrite_zeroes(n, old, end - old, 0);
			if (ret < 0)
				vd_error_setg_errno(
					err, ret,
					"Could not zero the grown range over the backing "
					"file");
		}
	}
	return ret;
}

/* --- the asynchronous interface ------------------------------------------ */

enum aio_type {
	AIO_READ,
	AIO_WRITE,
	AIO_FLUSH,
	AIO_DISCARD,
	AIO_ZEROES,
};

struct aio_req {
	struct vd_node *n;
	enum aio_type type;
	int64_t offset, bytes;
	const struct vd_qiov *qiov;
	int flags;
	vd_completion_fn *cb;
	void *opaque;
	int ret;
	bool done;
	bool returned; /* the submitting call has returned */
};

static void aio_complete_bh(void *opaque)
{
	struct aio_req *r = opaque;
	vd_completion_fn *cb = r->cb;
	void *cb_opaque = r->opaque;
	int ret = r->ret;

	free(r);
	cb(cb_opaque, ret);
}

static void aio_entry(void *opaque)
{
	struct aio_req *r = opaque;
	int ret;

	switch (r->type) {
	case AIO_READ:
		ret = vd_co_preadv(r->n, r->offset, r->bytes, r->qiov, r->flags);
		break;
	case AIO_WRITE:
		ret = vd_co_pwritev(r->n, r->offset, r->bytes, r->qiov, r->flags);
		break;
	case AIO_FLUSH:
		ret = vd_co_flush(r->n);
		break;
	case AIO_DISCARD:
		ret = vd_co_pdiscard(r->n, r->offset, r->bytes);
		break;
	case AIO_ZEROES:
		ret = vd_co_pwrite_zeroes(r->n, r->offset, r->bytes, r->flags);
		break;
	default:
		ret = -EINVAL;
	}
	r->ret = ret;
	r->done = true;
	/* Completed after the submitter returned: call back now. */
	if (r->returned)
		aio_complete_bh(r);
}

/* A completion that must not run inside the submitting call. */
static void aio_defer(struct vd_node *n, struct aio_req *r)
{
	struct vd_loop *loop = n && n->loop ? n->loop : vd_loop_current();

	if (loop && vd_loop_oneshot(loop, aio_complete_bh, r) == 0)
		return;
	/* No way to defer (ENOMEM): completing late is worse than completing
	 * inline, which callers must tolerate only in this out-of-memory case. */
	aio_complete_bh(r);
}

static void aio_submit(struct vd_node *n, enum aio_type type, int64_t offset, int64_t bytes,
		       const struct vd_qiov *qiov, int flags, vd_completion_fn *cb, void *opaque)
{
	struct aio_req *r = malloc(sizeof(*r));
	struct vd_co *co;

	if (!r) {
		cb(opaque, -ENOMEM);
		return;
	}
	*r = (struct aio_req){.n = n,
			      .type = type,
			      .offset = offset,
			      .bytes = bytes,
			      .qiov = qiov,
			      .flags = flags,
			      .cb = cb,
			      .opaque = opaque};
	co = vd_co_create(aio_entry, r);
	if (!co) {
		r->ret = -ENOMEM;
		aio_defer(n, r);
		return;
	}
	vd_co_enter(co);
	if (r->done)
		aio_defer(n, r);
	else
		r->returned = true;
}

void vd_node_aio_preadv(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov, int flags,
			vd_completion_fn *cb, void *opaque)
{
	aio_submit(n, AIO_READ, offset, (int64_t)qiov->size, qiov, flags, cb, opaque);
}

void vd_node_aio_pwritev(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov, int flags,
			 vd_completion_fn *cb, void *opaque)
{
	aio_submit(n, AIO_WRITE, offset, (int64_t)qiov->size, qiov, flags, cb, opaque);
}

void vd_node_aio_flush(struct vd_node *n, vd_completion_fn *cb, void *opaque)
{
	aio_submit(n, AIO_FLUSH, 0, 0, NULL, 0, cb, opaque);
}

void vd_node_aio_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes, vd_completion_fn *cb,
			  void *opaque)
{
	aio_submit(n, AIO_DISCARD, offset, bytes, NULL, 0, cb, opaque);
}

void vd_node_aio_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags,
			       vd_completion_fn *cb, void *opaque)
{
	aio_submit(n, AIO_ZEROES, offset, bytes, NULL, flags, cb, opaque);
}

/* --- the synchronous interface ------------------------------------------- */

struct sync_req {
	struct vd_node *n, *base;
	enum aio_type type;
	int64_t offset, bytes;
	const struct vd_qiov *qiov;
	int flags;
	int64_t *pnum, *map;
	struct vd_node **file;
	int ret;
};

static void sync_entry(void *opaque)
{
	struct sync_req *s = opaque;

	switch (s->type) {
	case AIO_READ:
		s->ret = vd_co_preadv(s->n, s->offset, s->bytes, s->qiov, s->flags);
		break;
	case AIO_WRITE:
		s->ret = vd_co_pwritev(s->n, s->offset, s->bytes, s->qiov, s->flags);
		break;
	case AIO_FLUSH:
		s->ret = vd_co_flush(s->n);
		break;
	case AIO_DISCARD:
		s->ret = vd_co_pdiscard(s->n, s->offset, s->bytes);
		break;
	case AIO_ZEROES:
		s->ret = vd_co_pwrite_zeroes(s->n, s->offset, s->bytes, s->flags);
		break;
	}
}

static int run_sync(struct sync_req *s)
{
	int ret = vd_co_run_sync(sync_entry, s);
	return ret < 0 ? ret : s->ret;
}

int vd_node_preadv(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov)
{
	struct sync_req s = {.n = n,
			     .type = AIO_READ,
			     .offset = offset,
			     .bytes = (int64_t)qiov->size,
			     .qiov = qiov};
	return run_sync(&s);
}

int vd_node_pwritev(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov, int flags)
{
	struct sync_req s = {.n = n,
			     .type = AIO_WRITE,
			     .offset = offset,
			     .bytes = (int64_t)qiov->size,
			     .qiov = qiov,
			     .flags = flags};
	return run_sync(&s);
}

int vd_node_pread(struct vd_node *n, int64_t offset, void *buf, int64_t bytes)
{
	struct vd_qiov q;

	if (bytes < 0)
		return -EINVAL;
	vd_qiov_init_buf(&q, buf, (size_t)bytes);
	return vd_node_preadv(n, offset, &q);
}

int vd_node_pwrite(struct vd_node *n, int64_t offset, const void *buf, int64_t bytes, int flags)
{
	struct vd_qiov q;

	if (bytes < 0)
		return -EINVAL;
	vd_qiov_init_buf(&q, (void *)buf, (size_t)bytes);
	return vd_node_pwritev(n, offset, &q, flags);
}

int vd_node_flush(struct vd_node *n)
{
	struct sync_req s = {.n = n, .type = AIO_FLUSH};
	return run_sync(&s);
}

int vd_node_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	struct sync_req s = {.n = n, .type = AIO_DISCARD, .offset = offset, .bytes = bytes};
	return run_sync(&s);
}

int vd_node_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct sync_req s = {
		.n = n, .type = AIO_ZEROES, .offset = offset, .bytes = bytes, .flags = flags};
	return run_sync(&s);
}

static void status_entry(void *opaque)
{
	struct sync_req *s = opaque;

	if (s->type == AIO_READ)
		s->ret = vd_co_block_status(s->n, s->offset, s->bytes, s->pnum, s->map, s->file);
	else
		s->ret = vd_co_is_allocated_above(s->n, s->base, s->offset, s->bytes, s->pnum);
}

int vd_node_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			 int64_t *map, struct vd_node **file)
{
	struct sync_req s = {.n = n,
			     .type = AIO_READ,
			     .offset = offset,
			     .bytes = bytes,
			     .pnum = pnum,
			     .map = map,
			     .file = file};
	int ret = vd_co_run_sync(status_entry, &s);
	return ret < 0 ? ret : s.ret;
}

int vd_node_is_allocated_above(struct vd_node *top, struct vd_node *base, int64_t offset,
			       int64_t bytes, int64_t *pnum)
{
	struct sync_req s = {.n = top,
			     .base = base,
			     .type = AIO_WRITE,
			     .offset = offset,
			     .bytes = bytes,
			     .pnum = pnum};
	int ret = vd_co_run_sync(status_entry, &s);
	return ret < 0 ? ret : s.ret;
}

struct truncate_req {
	struct vd_node *n;
	int64_t size;
	bool exact;
	enum vd_prealloc prealloc;
	struct vd_error *err;
	int ret;
};

static void truncate_entry(void *opaque)
{
	struct truncate_req *t = opaque;
	t->ret = vd_co_truncate(t->n, t->size, t->exact, t->prealloc, t->err);
}

int vd_node_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
		     struct vd_error *err)
{
	struct truncate_req t = {n, size, exact, prealloc, err, 0};
	int ret = vd_co_run_sync(truncate_entry, &t);
	return ret < 0 ? ret : t.ret;
}

static void drain_entry(void *opaque)
{
	struct vd_node *n = opaque;
	while (n->in_flight > 0)
		vd_co_queue_wait(&n->drain_waiters);
}

void vd_node_drain(struct vd_node *n)
{
	if (!n || n->in_flight == 0)
		return;
	if (vd_in_coroutine()) {
		drain_entry(n);
		return;
	}
	while (n->in_flight > 0)
		vd_loop_run_once(n->loop, true);
}
