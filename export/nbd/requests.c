/* SPDX-License-Identifier: MIT */
/*
 * The NBD transmission phase (proto.md "Transmission"): requests parsed from
 * the connection's input, checked once here (magic, flags, command, length,
 * range, read-only), then run through the export's backend.  READ and WRITE
 * go straight to the asynchronous calls; the other commands run in a
 * coroutine each.  Replies leave in completion order, which is not the
 * order of the requests: the cookie tells the client which is which.
 *
 * With structured replies negotiated, a READ answers with one chunk: an
 * NBD_REPLY_TYPE_OFFSET_HOLE when the data reads as zeroes, else
 * NBD_REPLY_TYPE_OFFSET_DATA; errors with NBD_REPLY_TYPE_ERROR.  Without
 * them (the Linux kernel client) every reply is a simple one.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <vdisk/backend.h>
#include <vdisk/coroutine.h>
#include <vdisk/iov.h>

#include "export/nbd/nbd-internal.h"

#define REQ_HDR_LEN 28
/* Extents in one BLOCK_STATUS reply. */
#define MAX_EXTENTS 1024

struct nbd_req {
	struct nbd_conn *c;
	uint16_t flags, type;
	uint64_t cookie, offset;
	uint32_t len;
	uint8_t *buf;
	int err; /* an NBD error found while checking: answered, not run */
	struct vd_qiov qiov;
};

static uint32_t nbd_errno(int ret)
{
	switch (-ret) {
	case 0:
		return NBD_SUCCESS;
	case EPERM:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

static void req_free(struct nbd_req *r)
{
	struct nbd_conn *c = r->c;

	if (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE)
		c->in_flight_bytes -= r->len;
	nbd_buf_put(c->srv, r->buf, r->len);
	free(r);
	nbd_conn_request_done(c);
}

static struct nbd_out *out_new(void)
{
	return calloc(1, sizeof(struct nbd_out));
}

static void chunk_header(uint8_t *h, uint16_t flags, uint16_t type, uint64_t cookie, uint32_t len)
{
	nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
	nbd_put16(h + 4, flags);
	nbd_put16(h + 6, type);
	nbd_put64(h + 8, cookie);
	nbd_put32(h + 16, len);
}

/* A reply without data: simple, or a structured error chunk. */
static void reply_status(struct nbd_req *r, uint32_t err)
{
	struct nbd_out *o = out_new();

	if (!o) {
		nbd_conn_close(r->c);
		return;
	}
	if (err && r->c->structured) {
		chunk_header(o->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, r->cookie, 6);
		nbd_put32(o->hdr + 20, err);
		nbd_put16(o->hdr + 24, 0);
		o->iov[0].iov_len = 26;
	} else if (r->c->structured &&
		   (r->type == NBD_CMD_READ || r->type == NBD_CMD_BLOCK_STATUS)) {
		chunk_header(o->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, r->cookie, 0);
		o->iov[0].iov_len = 20;
	} else {
		nbd_put32(o->hdr, NBD_SIMPLE_REPLY_MAGIC);
		nbd_put32(o->hdr + 4, err);
		nbd_put64(o->hdr + 8, r->cookie);
		o->iov[0].iov_len = 16;
	}
	o->iov[0].iov_base = o->hdr;
	o->niov = 1;
	nbd_conn_queue(r->c, o);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	while (n && ((uintptr_t)p & 7)) {
		if (*p)
			return false;
		p++;
		n--;
	}
	for (; n >= 32; p += 32, n -= 32) {
		const uint64_t *q = (const uint64_t *)p;
		if (q[0] | q[1] | q[2] | q[3])
			return false;
	}
	while (n--)
		if (*p++)
			return false;
	return true;
}

/* The header of a successful READ's data: simple, or an OFFSET_DATA chunk. */
static void data_header(struct nbd_out *o, const struct nbd_req *r)
{
	if (!r->c->structured) {
		nbd_put32(o->hdr, NBD_SIMPLE_REPLY_MAGIC);
		nbd_put32(o->hdr + 4, 0);
		nbd_put64(o->hdr + 8, r->cookie);
		o->iov[0].iov_len = 16;
	} else {
		chunk_header(o->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, r->cookie,
			     8 + r->len);
		nbd_put64(o->hdr + 20, r->offset);
		o->iov[0].iov_len = 28;
	}
	o->iov[0].iov_base = o->hdr;
	o->niov = 1;
}

static void read_done(void *opaque, int ret)
{
	struct nbd_req *r = opaque;
	struct nbd_conn *c = r->c;
	struct nbd_out *o;

	vd_qiov_destroy(&r->qiov);
	if (ret < 0 || c->dead) {
		if (!c->dead)
			reply_status(r, nbd_errno(ret));
		req_free(r);
		return;
	}
	o = out_new();
	if (!o) {
		nbd_conn_close(c);
		req_free(r);
		return;
	}
	if (c->structured && all_zero(r->buf, r->len)) {
		/* proto.md: OFFSET_HOLE, "reads as zeroes"; no data sent. */
		chunk_header(o->hdr, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE, r->cookie,
			     12);
		nbd_put64(o->hdr + 20, r->offset);
		nbd_put32(o->hdr + 28, r->len);
		o->iov[0].iov_base = o->hdr;
		o->iov[0].iov_len = 32;
		o->niov = 1;
	} else {
		data_header(o, r);
		o->iov[1].iov_base = r->buf;
		o->iov[1].iov_len = r->len;
		o->niov = 2;
		o->data = r->buf; /* the queue gives it back once sent */
		o->data_len = r->len;
		r->buf = NULL;
	}
	nbd_conn_queue(c, o);
	req_free(r);
}

/* A READ answered from the file itself (vd_blk_host_range): the header now,
 * the bytes by sendfile() when the queue reaches them.  False: not
 * possible here, read it into a buffer.  (No OFFSET_HOLE for zeroes: the
 * bytes are not looked at.) */
static bool read_zero_copy(struct nbd_req *r)
{
	struct nbd_conn *c = r->c;
	struct nbd_out *o;
	int64_t off;
	int fd;

	if (c->zc_queued >= NBD_ZC_MAX_QUEUED ||
	    vd_blk_host_range(c->exp->blk, (int64_t)r->offset, r->len, &fd, &off) < 0)
		return false;
	o = out_new();
	if (!o) {
		close(fd);
		return false;
	}
	data_header(o, r);
	o->zc_fd = fd;
	o->zc_off = off;
	o->zc_len = r->len;
	c->zc_queued++;
	nbd_conn_queue(c, o);
	req_free(r);
	return true;
}

static void status_done(void *opaque, int ret)
{
	struct nbd_req *r = opaque;

	vd_qiov_destroy(&r->qiov);
	reply_status(r, nbd_errno(ret));
	req_free(r);
}

/* --- commands run in a coroutine ------------------------------------------------ */

static uint32_t base_flags(int st)
{
	return (st & VD_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
	       (st & VD_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
}

/* One BLOCK_STATUS chunk for context @id; 0 or -errno. */
static int vd_coroutine_fn block_status_chunk(struct nbd_req *r, uint32_t id, bool last)
{
	struct vd_blk *blk = r->c->exp->blk;
	uint64_t off = r->offset, end = r->offset + r->len;
	unsigned max = r->flags & NBD_CMD_FLAG_REQ_ONE ? 1 : MAX_EXTENTS, n = 0;
	uint8_t *buf = malloc(8 + 8 * (size_t)max);
	struct nbd_out *o;

	if (!buf)
		return -ENOMEM;
	nbd_put32(buf, id);
	while (off < end) {
		int64_t pnum = 0;
		int depth = 0;
		/* As QEMU's server: both contexts through the whole chain. */
		int st = vd_blk_co_block_status_above(blk, (int64_t)off, (int64_t)(end - off),
						      &pnum, &depth);
		uint32_t flags;

		if (st < 0) {
			free(buf);
			return st;
		}
		if (pnum <= 0)
			break;
		if (id == NBD_CTX_BASE_ALLOCATION)
			flags = base_flags(st);
		else
			flags = (uint32_t)depth;
		if (n && nbd_get32(buf + 4 + 8 * (n - 1) + 4) == flags) {
			uint8_t *e = buf + 4 + 8 * (n - 1);
			nbd_put32(e, nbd_get32(e) + (uint32_t)pnum);
		} else {
			if (n == max)
				break;
			nbd_put32(buf + 4 + 8 * n, (uint32_t)pnum);
			nbd_put32(buf + 8 + 8 * n, flags);
			n++;
		}
		off += (uint64_t)pnum;
	}
	o = out_new();
	if (!o) {
		free(buf);
		return -ENOMEM;
	}
	chunk_header(o->hdr, last ? NBD_REPLY_FLAG_DONE : 0, NBD_REPLY_TYPE_BLOCK_STATUS, r->cookie,
		     4 + 8 * n);
	o->iov[0].iov_base = o->hdr;
	o->iov[0].iov_len = 20;
	o->iov[1].iov_base = buf;
	o->iov[1].iov_len = 4 + 8 * (size_t)n;
	o->niov = 2;
	o->data = buf;
	nbd_conn_queue(r->c, o);
	return 0;
}

static void vd_coroutine_fn req_co(void *opaque)
{
	struct nbd_req *r = opaque;
	struct nbd_conn *c = r->c;
	struct vd_blk *blk = c->exp->blk;
	int ret = 0;

	switch (r->type) {
	case NBD_CMD_FLUSH:
		ret = vd_blk_co_flush(blk);
		break;
	case NBD_CMD_TRIM:
		ret = vd_blk_co_pdiscard(blk, (int64_t)r->offset, r->len);
		/* Discard is advisory: a backend that cannot still succeeds. */
		if (ret == -ENOTSUP)
			ret = 0;
		if (ret == 0 && (r->flags & NBD_CMD_FLAG_FUA))
			ret = vd_blk_co_flush(blk);
		break;
	case NBD_CMD_WRITE_ZEROES: {
		int flags = 0;

		if (!(r->flags & NBD_CMD_FLAG_NO_HOLE))
			flags |= VD_REQ_MAY_UNMAP;
		if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
			flags |= VD_REQ_NO_FALLBACK;
		if (r->flags & NBD_CMD_FLAG_FUA)
			flags |= VD_REQ_FUA;
		ret = vd_blk_co_pwrite_zeroes(blk, (int64_t)r->offset, r->len, flags);
		break;
	}
	case NBD_CMD_CACHE:
		/* Advisory; the page cache already keeps what was read. */
		break;
	case NBD_CMD_BLOCK_STATUS:
		if (c->meta_base)
			ret = block_status_chunk(r, NBD_CTX_BASE_ALLOCATION, !c->meta_depth);
		if (ret == 0 && c->meta_depth)
			ret = block_status_chunk(r, NBD_CTX_ALLOCATION_DEPTH, true);
		if (ret == 0) {
			req_free(r);
			return;
		}
		break;
	}
	if (!c->dead)
		reply_status(r, nbd_errno(ret));
	req_free(r);
}

/* --- parsing ------------------------------------------------------------------- */

static void req_submit(struct nbd_req *r)
{
	struct nbd_conn *c = r->c;
	struct vd_co *co;

	if (r->err) {
		reply_status(r, r->err);
		req_free(r);
		return;
	}
	switch (r->type) {
	case NBD_CMD_READ:
		if (r->len == 0) {
			reply_status(r, 0);
			req_free(r);
			return;
		}
		if (c->srv->zero_copy && !c->tls && r->len >= NBD_ZC_MIN && read_zero_copy(r))
			return;
		r->buf = nbd_buf_get(c->srv, r->len);
		if (!r->buf) {
			reply_status(r, NBD_ENOMEM);
			req_free(r);
			return;
		}
		vd_qiov_init_buf(&r->qiov, r->buf, r->len);
		vd_blk_aio_preadv(c->exp->blk, (int64_t)r->offset, &r->qiov, 0, read_done, r);
		return;
	case NBD_CMD_WRITE:
		vd_qiov_init_buf(&r->qiov, r->buf, r->len);
		vd_blk_aio_pwritev(c->exp->blk, (int64_t)r->offset, &r->qiov,
				   r->flags & NBD_CMD_FLAG_FUA ? VD_REQ_FUA : 0, status_done, r);
		return;
	}
	co = vd_co_create(req_co, r);
	if (!co) {
		reply_status(r, NBD_ENOMEM);
		req_free(r);
		return;
	}
	vd_co_enter(co);
}

/* Check a request once, here; an error found is answered, not run. */
static uint32_t req_check(struct nbd_conn *c, struct nbd_req *r)
{
	uint16_t valid = NBD_CMD_FLAG_FUA;
	bool write = false;

	switch (r->type) {
	case NBD_CMD_READ:
		valid |= NBD_CMD_FLAG_DF;
		if (r->len > NBD_MAX_PAYLOAD)
			return NBD_EINVAL;
		break;
	case NBD_CMD_WRITE:
	case NBD_CMD_TRIM:
		write = true;
		break;
	case NBD_CMD_WRITE_ZEROES:
		valid |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
		write = true;
		break;
	case NBD_CMD_FLUSH:
		return r->flags & ~valid ? NBD_EINVAL : 0;
	case NBD_CMD_CACHE:
		break;
	case NBD_CMD_BLOCK_STATUS:
		valid |= NBD_CMD_FLAG_REQ_ONE;
		if (!c->structured || !(c->meta_base || c->meta_depth) || r->len == 0)
			return NBD_EINVAL;
		break;
	default:
		return NBD_EINVAL;
	}
	if (r->flags & ~valid)
		return NBD_EINVAL;
	if (write && !c->exp->writable)
		return NBD_EPERM;
	if (r->offset > (uint64_t)c->size || r->len > (uint64_t)c->size - r->offset)
		return r->type == NBD_CMD_WRITE || r->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
										   : NBD_EINVAL;
	return 0;
}

ssize_t nbd_requests_input(struct nbd_conn *c, const uint8_t *p, size_t n)
{
	struct nbd_req *r;

	if (n < REQ_HDR_LEN)
		return 0;
	if (nbd_get32(p) != NBD_REQUEST_MAGIC)
		return -1;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -1;
	r->c = c;
	r->flags = nbd_get16(p + 4);
	r->type = nbd_get16(p + 6);
	r->cookie = nbd_get64(p + 8);
	r->offset = nbd_get64(p + 16);
	r->len = nbd_get32(p + 24);
	if (r->type == NBD_CMD_DISC) {
		/* proto.md: finish what is in flight, then close. */
		free(r);
		c->in = NBD_IN_DONE;
		c->close_after_output = true;
		return REQ_HDR_LEN;
	}
	r->err = (int)req_check(c, r);
	if (r->type == NBD_CMD_WRITE && r->len > NBD_MAX_PAYLOAD) {
		/* The payload follows whatever we think of the request; one we
		 * will not buffer leaves no way to find the next header. */
		free(r);
		return -1;
	}
	if (r->type == NBD_CMD_READ && r->len > NBD_MAX_PAYLOAD)
		r->len = 0; /* answered EINVAL: no buffer */
	c->in_flight++;
	if (r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE)
		c->in_flight_bytes += r->len;
	if (r->type == NBD_CMD_WRITE) {
		if (r->len) {
			r->buf = nbd_buf_get(c->srv, r->len);
			if (!r->buf) {
				c->in_flight_bytes -= r->len;
				free(r);
				c->in_flight--;
				return -1;
			}
			c->payload_req = r;
			c->payload_got = 0;
			c->in = NBD_IN_PAYLOAD;
			return REQ_HDR_LEN;
		}
	}
	req_submit(r);
	return REQ_HDR_LEN;
}

void nbd_requests_payload_dst(struct nbd_conn *c, uint8_t **dst, size_t *need)
{
	struct nbd_req *r = c->payload_req;

	*dst = r->buf + c->payload_got;
	*need = r->len - c->payload_got;
}

void nbd_requests_payload_got(struct nbd_conn *c, size_t n)
{
	struct nbd_req *r = c->payload_req;

	c->payload_got += n;
	if (c->payload_got < r->len)
		return;
	c->payload_req = NULL;
	c->in = NBD_IN_REQUEST;
	req_submit(r);
}

void nbd_requests_abandon(struct nbd_conn *c)
{
	struct nbd_req *r = c->payload_req;

	if (!r)
		return;
	c->payload_req = NULL;
	c->in_flight_bytes -= r->len;
	nbd_buf_put(c->srv, r->buf, r->len);
	free(r);
	c->in_flight--;
}
