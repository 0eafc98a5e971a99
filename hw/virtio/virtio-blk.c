/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk request handling (virtio 1.2 section 5.2), shared by every
 * transport.
 *
 * A request (5.2.6) is a chain: a 16-byte device-readable header {le32 type,
 * le32 reserved, le64 sector}, the data (readable for OUT, writable for IN
 * and GET_ID, readable {le64 sector, le32 num_sectors, le32 flags} segments
 * for DISCARD and WRITE_ZEROES), and a final device-writable status byte.  The
 * layout of the chain is free (VIRTIO_F_ANY_LAYOUT is implied by VERSION_1):
 * the header and the data may share a descriptor, so parsing works on the
 * byte streams, not on descriptor boundaries.
 *
 * Status values follow QEMU 7.2's hw/block/virtio-blk.c where the spec leaves
 * a choice: a range outside the disk or unaligned to the logical block is
 * IOERR; DISCARD/WRITE_ZEROES with more than one segment, unknown flags, or
 * UNMAP on a discard are UNSUPP; more sectors than the advertised maximum is
 * IOERR.  A missing header or status byte is a driver bug that makes the
 * device NEEDS_RESET (QEMU's virtio_error).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/backend.h>
#include <vdisk/coroutine.h>
#include <vdisk/virtio-blk.h>

#include "hw/virtio/le.h"

#define SECTOR_BITS 9
#define MAX_QUEUES 64
/* Bounce buffers of the reads in flight, per device: past this, reads wait
 * for earlier ones (one read alone may always go, whatever its size). */
#define BOUNCE_BUDGET (64u << 20)
#define BOUNCE_ALIGN 4096

struct vblk_queue {
	struct vd_vq vq;
	unsigned inflight; /* in the block layer, orphans included */
	unsigned waiting; /* reads waiting for bounce budget */
	unsigned generation; /* bumped by a reset: older requests are orphans */
};

struct vblk_req;

struct vd_virtio_blk {
	struct vd_blk *blk;
	const struct vd_virtio_blk_ops *ops;
	void *opaque;
	uint16_t num_queues, queue_size;
	uint32_t lbs;
	bool read_only;
	char serial[VIRTIO_BLK_ID_BYTES + 1];
	uint64_t features; /* negotiated */
	bool broken;
	struct iovec *scratch; /* VD_VQ_MAX_IOV entries for vd_vq_pop */
	struct vblk_queue *queues;
	bool merge; /* request-merging */
	/* conf->bounce_reads: reads land in bounce buffers, copied into guest
	 * memory only when the request completes for the current generation
	 * with DMA allowed. */
	bool bounce_reads;
	size_t bounce_bytes; /* allocated to requests now */
	struct vblk_req *waiting, **waiting_tail; /* over the budget, in order */
	bool starting; /* start_waiting() is running */
	/* vd_virtio_blk_set_dma(false): completions are parked until DMA is
	 * allowed again (or a reset drops them). */
	bool dma_off;
	struct vblk_req *parked, **parked_tail;
	struct vd_co_queue drain_waiters; /* vd_virtio_blk_drain() in coroutines */
};

struct vblk_req {
	struct vd_virtio_blk *b;
	unsigned q;
	uint16_t head, ndescs;
	uint32_t used_len;
	uint8_t *status;
	/* What was submitted, to submit it again after a retry. */
	uint32_t type;
	int64_t offset, bytes;
	int flags;
	unsigned generation;
	struct vd_blk_retry retry; /* on the backend's retry list (stop policy) */
	struct vblk_req *next; /* on b->waiting or b->parked */
	/* A bounced read: the guest's data buffers, and the bounce buffer the
	 * block layer reads into (qiov points at it). */
	struct iovec *data_iov;
	int data_niov;
	void *bounce;
	size_t bounce_len;
	bool data_valid; /* the read succeeded: copy the bounce buffer out */
	uint8_t parked_status;
	struct vd_qiov qiov;
	struct iovec iov[];
};

static void req_submit(struct vblk_req *r);
static void start_waiting(struct vd_virtio_blk *b);

static void bounce_release(struct vblk_req *r)
{
	if (r->bounce) {
		free(r->bounce);
		r->bounce = NULL;
		r->b->bounce_bytes -= r->bounce_len;
	}
}

/* Unlink from a singly linked list with a tail pointer the requests of
 * queue @q (all with ~0u); @fn gets each. */
static void take_list(struct vblk_req **head, struct vblk_req ***tail, unsigned q,
		      void (*fn)(struct vblk_req *r))
{
	struct vblk_req **p = head;

	while (*p) {
		struct vblk_req *r = *p;

		if (q == ~0u || r->q == q) {
			*p = r->next;
			fn(r);
		} else {
			p = &r->next;
		}
	}
	*tail = p;
}

static void drop_req(struct vblk_req *r)
{
	bounce_release(r);
	free(r);
}

static void drop_waiting_req(struct vblk_req *r)
{
	r->b->queues[r->q].waiting--;
	drop_req(r);
}

/* No request of the device is in the block layer any more: wake the
 * coroutines in vd_virtio_blk_drain(). */
static void maybe_wake_drain(struct vd_virtio_blk *b)
{
	if (!vd_co_queue_empty(&b->drain_waiters) && vd_virtio_blk_inflight(b, ~0u) == 0)
		vd_co_queue_restart_all(&b->drain_waiters);
}

static struct vblk_req *retry_req(const struct vd_blk_retry *r)
{
	return (struct vblk_req *)((const char *)r - offsetof(struct vblk_req, retry));
}

struct retry_match {
	struct vd_virtio_blk *b;
	unsigned q;
};

static bool retry_of_queue(const struct vd_blk_retry *r, void *opaque)
{
	const struct retry_match *m = opaque;
	const struct vblk_req *req = retry_req(r);

	return req->b == m->b && (m->q == ~0u || req->q == m->q);
}

/* "cont": the request goes to the block layer again, counted in flight. */
static void retry_resubmit(struct vd_blk_retry *r)
{
	struct vblk_req *req = retry_req(r);

	req->b->queues[req->q].inflight++;
	req_submit(req);
}

static void retry_drop(struct vd_blk_retry *r)
{
	drop_req(retry_req(r));
}

/* Forget the requests of queue @q (all with ~0u) that are not in the block
 * layer: kept for a retry, waiting for bounce budget, or parked while DMA is
 * off.  They complete nowhere (QEMU's virtio_blk_reset detaches the kept
 * ones). */
static void drop_kept(struct vd_virtio_blk *b, unsigned q)
{
	struct retry_match m = {b, q};

	vd_blk_retry_drop(b->blk, retry_of_queue, retry_drop, &m);
	take_list(&b->waiting, &b->waiting_tail, q, drop_waiting_req);
	take_list(&b->parked, &b->parked_tail, q, drop_req);
}

int vd_virtio_blk_new(const struct vd_virtio_blk_conf *conf, const struct vd_virtio_blk_ops *ops,
		      void *opaque, struct vd_virtio_blk **out)
{
	struct vd_virtio_blk *b;
	uint32_t lbs = conf->logical_block_size ? conf->logical_block_size : 512;

	if (!conf->blk || conf->num_queues < 1 || conf->num_queues > MAX_QUEUES)
		return -EINVAL;
	if (lbs < 512 || lbs > 65536 || (lbs & (lbs - 1)))
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->queues = calloc(conf->num_queues, sizeof(*b->queues));
	b->scratch = calloc(VD_VQ_MAX_IOV, sizeof(*b->scratch));
	if (!b->queues || !b->scratch) {
		free(b->queues);
		free(b->scratch);
		free(b);
		return -ENOMEM;
	}
	b->blk = conf->blk;
	b->waiting_tail = &b->waiting;
	b->parked_tail = &b->parked;
	b->bounce_reads = conf->bounce_reads;
	b->merge = !conf->no_merge;
	vd_co_queue_init(&b->drain_waiters);
	vd_blk_ref(b->blk);
	b->ops = ops;
	b->opaque = opaque;
	b->num_queues = conf->num_queues;
	b->queue_size = conf->queue_size ? conf->queue_size : 256;
	b->lbs = lbs;
	b->read_only = conf->read_only || !vd_blk_is_writable(conf->blk);
	if (conf->serial) {
		strncpy(b->serial, conf->serial, VIRTIO_BLK_ID_BYTES);
		b->serial[VIRTIO_BLK_ID_BYTES] = '\0';
	}
	*out = b;
	return 0;
}

void vd_virtio_blk_free(struct vd_virtio_blk *b)
{
	if (!b)
		return;
	/* Nothing waiting may start once the queues are stopped. */
	take_list(&b->waiting, &b->waiting_tail, ~0u, drop_waiting_req);
	for (unsigned q = 0; q < b->num_queues; q++) {
		vd_virtio_blk_stop_queue(b, q);
		drop_kept(b, q);
	}
	vd_blk_unref(b->blk);
	free(b->scratch);
	free(b->queues);
	free(b);
}

uint64_t vd_virtio_blk_features(const struct vd_virtio_blk *b)
{
	uint64_t f = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_INDIRECT_DESC) |
		     (1ULL << VIRTIO_F_EVENT_IDX) | (1ULL << VIRTIO_F_RING_PACKED) |
		     (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |
		     (1ULL << VIRTIO_BLK_F_TOPOLOGY) | (1ULL << VIRTIO_BLK_F_FLUSH) |
		     (1ULL << VIRTIO_BLK_F_CONFIG_WCE);

	if (b->num_queues > 1)
		f |= 1ULL << VIRTIO_BLK_F_MQ;
	if (b->read_only)
		f |= 1ULL << VIRTIO_BLK_F_RO;
	else
		f |= (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
	return f;
}

void vd_virtio_blk_set_features(struct vd_virtio_blk *b, uint64_t features)
{
	b->features = features & vd_virtio_blk_features(b);
	for (unsigned q = 0; q < b->num_queues; q++)
		vd_vq_set_features(&b->queues[q].vq, b->features);
}

uint16_t vd_virtio_blk_num_queues(const struct vd_virtio_blk *b)
{
	return b->num_queues;
}

struct vd_vq *vd_virtio_blk_queue(struct vd_virtio_blk *b, unsigned q)
{
	return q < b->num_queues ? &b->queues[q].vq : NULL;
}

struct vd_blk *vd_virtio_blk_backend(const struct vd_virtio_blk *b)
{
	return b->blk;
}

void vd_virtio_blk_resized(struct vd_virtio_blk *b)
{
	if (b->ops && b->ops->config_changed)
		b->ops->config_changed(b->opaque);
}

bool vd_virtio_blk_needs_reset(const struct vd_virtio_blk *b)
{
	return b->broken;
}

static bool has_feature(const struct vd_virtio_blk *b, int bit)
{
	return b->features & (1ULL << bit);
}

static uint32_t sectors_cap(uint64_t bytes)
{
	uint64_t s;

	if (bytes == 0 || bytes > (uint64_t)VD_REQUEST_MAX_BYTES)
		bytes = VD_REQUEST_MAX_BYTES;
	s = bytes >> SECTOR_BITS;
	return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static uint32_t max_discard_sectors(const struct vd_virtio_blk *b)
{
	return sectors_cap(vd_blk_limits(b->blk)->max_discard);
}

static uint32_t max_write_zeroes_sectors(const struct vd_virtio_blk *b)
{
	return sectors_cap(vd_blk_limits(b->blk)->max_write_zeroes);
}

/* Section 5.2.4, struct virtio_blk_config. */
static void fill_config(struct vd_virtio_blk *b, uint8_t *c)
{
	const struct vd_limits *l = vd_blk_limits(b->blk);
	int64_t size = vd_blk_getlength(b->blk);
	uint32_t align = l->request_alignment > b->lbs ? l->request_alignment : b->lbs;
	uint32_t dalign = l->discard_alignment ? l->discard_alignment : align;
	uint32_t seg_max = b->queue_size > 2 ? b->queue_size - 2u : 1u;

	memset(c, 0, 256);
	st64(c + 0, size > 0 ? (uint64_t)size >> SECTOR_BITS : 0); /* capacity */
	st32(c + 8, 0); /* size_max: not offered */
	st32(c + 12, seg_max); /* seg_max */
	st32(c + 20, b->lbs); /* blk_size */
	c[24] = 0; /* physical_block_exp */
	c[25] = 0; /* alignment_offset */
	st16(c + 26, (uint16_t)(align / b->lbs)); /* min_io_size */
	st32(c + 28, 0); /* opt_io_size */
	c[32] = vd_blk_write_cache(b->blk) ? 1 : 0; /* writeback */
	st16(c + 34, b->num_queues);
	st32(c + 36, max_discard_sectors(b));
	st32(c + 40, 1); /* max_discard_seg */
	st32(c + 44, dalign >> SECTOR_BITS ? dalign >> SECTOR_BITS : 1);
	st32(c + 48, max_write_zeroes_sectors(b));
	st32(c + 52, 1); /* max_write_zeroes_seg */
	c[56] = 1; /* write_zeroes_may_unmap */
}

int vd_virtio_blk_get_config(struct vd_virtio_blk *b, uint32_t offset, void *buf, uint32_t len)
{
	uint8_t c[256];

	if (offset > sizeof(c) || len > sizeof(c) - offset)
		return -EINVAL;
	fill_config(b, c);
	memcpy(buf, c + offset, len);
	return 0;
}

int vd_virtio_blk_set_config(struct vd_virtio_blk *b, uint32_t offset, const void *buf,
			     uint32_t len)
{
	const uint8_t *p = buf;

	if (offset > 256 || len > 256 - offset)
		return -EINVAL;
	/* Only writeback is driver-writable (5.2.5, with CONFIG_WCE). */
	if (offset <= VD_VIRTIO_BLK_CONFIG_WCE_OFFSET &&
	    offset + len > VD_VIRTIO_BLK_CONFIG_WCE_OFFSET)
		vd_blk_set_write_cache(b->blk, p[VD_VIRTIO_BLK_CONFIG_WCE_OFFSET - offset] != 0);
	return 0;
}

static void set_broken(struct vd_virtio_blk *b, struct vd_vq *vq, const char *why)
{
	vd_vq_set_broken(vq, why);
	if (!b->broken) {
		b->broken = true;
		if (b->ops && b->ops->broken)
			b->ops->broken(b->opaque, why);
	}
}

/* Write the request's results into guest memory: the data of a bounced
 * read, the status byte, the used entry; notify. */
static void req_push(struct vblk_req *r, uint8_t status)
{
	struct vd_virtio_blk *b = r->b;
	struct vblk_queue *qs = &b->queues[r->q];

	if (r->bounce && r->data_valid)
		vd_iov_from_buf(r->data_iov, r->data_niov, 0, r->bounce, r->bounce_len);
	bounce_release(r);
	*r->status = status;
	vd_vq_push(&qs->vq, r->head, r->ndescs, r->used_len);
	if (vd_vq_should_notify(&qs->vq) && b->ops && b->ops->notify)
		b->ops->notify(b->opaque, r->q);
	free(r);
}

/* The request is done (it was counted in flight); with DMA off its results
 * wait on b->parked. */
static void req_complete(struct vblk_req *r, uint8_t status)
{
	struct vd_virtio_blk *b = r->b;

	b->queues[r->q].inflight--;
	if (b->dma_off) {
		r->parked_status = status;
		r->next = NULL;
		*b->parked_tail = r;
		b->parked_tail = &r->next;
	} else {
		req_push(r, status);
	}
	start_waiting(b);
	maybe_wake_drain(b);
}

static void req_cb(void *opaque, int ret)
{
	struct vblk_req *r = opaque;
	struct vd_virtio_blk *b = r->b;
	struct vblk_queue *qs = &b->queues[r->q];

	if (r->generation != qs->generation) {
		/* Orphaned by a reset: the rings are gone, write nothing (a
		 * bounced read's data stays in its bounce buffer). */
		qs->inflight--;
		drop_req(r);
		start_waiting(b);
		maybe_wake_drain(b);
		return;
	}
	if (ret < 0) {
		/* QEMU's virtio_blk_handle_rw_error: only IN is a read. */
		switch (vd_blk_handle_error(b->blk, r->type == VIRTIO_BLK_T_IN, ret)) {
		case VD_BLK_ACTION_STOP:
			/* The bounce buffer goes back to the budget until
			 * the retry. */
			qs->inflight--;
			bounce_release(r);
			vd_blk_retry_keep(b->blk, &r->retry);
			start_waiting(b);
			maybe_wake_drain(b);
			return;
		case VD_BLK_ACTION_IGNORE:
			ret = 0;
			break;
		case VD_BLK_ACTION_REPORT:
		default:
			break;
		}
	}
	r->data_valid = ret >= 0;
	req_complete(r, ret < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
}

/* A bounced read may take its buffer now: the budget has room, or nothing
 * else holds any. */
static bool bounce_fits(const struct vd_virtio_blk *b, size_t len)
{
	return b->bounce_bytes == 0 ||
	       (b->bounce_bytes <= BOUNCE_BUDGET && len <= BOUNCE_BUDGET - b->bounce_bytes);
}

/* Hand a bounced read to the block layer with a fresh bounce buffer; it is
 * counted in flight.  Without memory it fails (IOERR). */
static void bounce_submit(struct vblk_req *r)
{
	struct vd_virtio_blk *b = r->b;

	r->bounce = vd_memalign(BOUNCE_ALIGN, r->bounce_len);
	if (!r->bounce) {
		r->data_valid = false;
		req_complete(r, VIRTIO_BLK_S_IOERR);
		return;
	}
	b->bounce_bytes += r->bounce_len;
	vd_qiov_init_buf(&r->qiov, r->bounce, r->bounce_len);
	vd_blk_aio_preadv(b->blk, r->offset, &r->qiov, 0, req_cb, r);
}

/* Start the reads waiting for bounce budget that fit now, in order. */
static void start_waiting(struct vd_virtio_blk *b)
{
	if (b->starting)
		return; /* a completion inside bounce_submit: the loop below goes on */
	b->starting = true;
	while (b->waiting && bounce_fits(b, b->waiting->bounce_len)) {
		struct vblk_req *r = b->waiting;

		b->waiting = r->next;
		if (!b->waiting)
			b->waiting_tail = &b->waiting;
		b->queues[r->q].waiting--;
		b->queues[r->q].inflight++;
		bounce_submit(r);
	}
	b->starting = false;
}

/* A read, through a bounce buffer when the device wants them; reads over
 * the budget wait their turn (not counted in flight meanwhile). */
static void read_submit(struct vblk_req *r)
{
	struct vd_virtio_blk *b = r->b;

	if (!b->bounce_reads) {
		vd_blk_aio_preadv(b->blk, r->offset, &r->qiov, 0, req_cb, r);
		return;
	}
	if (b->waiting || !bounce_fits(b, r->bounce_len)) {
		b->queues[r->q].inflight--;
		b->queues[r->q].waiting++;
		r->next = NULL;
		*b->waiting_tail = r;
		b->waiting_tail = &r->next;
		return;
	}
	bounce_submit(r);
}

/* Hand the request to the block layer (again, after a retry). */
static void req_submit(struct vblk_req *r)
{
	struct vd_blk *blk = r->b->blk;

	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		read_submit(r);
		break;
	case VIRTIO_BLK_T_OUT:
		vd_blk_aio_pwritev(blk, r->offset, &r->qiov, 0, req_cb, r);
		break;
	case VIRTIO_BLK_T_FLUSH:
		vd_blk_aio_flush(blk, req_cb, r);
		break;
	case VIRTIO_BLK_T_DISCARD:
		vd_blk_aio_pdiscard(blk, r->offset, r->bytes, req_cb, r);
		break;
	case VIRTIO_BLK_T_WRITE_ZEROES:
		vd_blk_aio_pwrite_zeroes(blk, r->offset, r->bytes, r->flags, req_cb, r);
		break;
	}
}

/* QEMU's virtio_blk_sect_range_ok. */
static bool sect_range_ok(struct vd_virtio_blk *b, uint64_t sector, uint64_t bytes)
{
	uint64_t nb = bytes >> SECTOR_BITS;
	int64_t size = vd_blk_getlength(b->blk);
	uint64_t total = size > 0 ? (uint64_t)size >> SECTOR_BITS : 0;

	if (bytes > (uint64_t)VD_REQUEST_MAX_BYTES)
		return false;
	if (sector & ((b->lbs >> SECTOR_BITS) - 1))
		return false;
	if (bytes % b->lbs)
		return false;
	return sector <= total && nb <= total - sector;
}

/* Drop the first @skip bytes of the iovec array, in place.  Returns the new
 * count. */
static int iov_skip(struct iovec *iov, int n, size_t skip)
{
	int i = 0;

	while (i < n && skip >= iov[i].iov_len)
		skip -= iov[i++].iov_len;
	if (i < n) {
		iov[i].iov_base = (uint8_t *)iov[i].iov_base + skip;
		iov[i].iov_len -= skip;
	}
	memmove(iov, iov + i, (size_t)(n - i) * sizeof(*iov));
	return n - i;
}

/* Drop the last byte (the status) of the iovec array.  Returns the new
 * count. */
static int iov_drop_last_byte(struct iovec *iov, int n)
{
	if (n == 0)
		return 0;
	iov[n - 1].iov_len--;
	return iov[n - 1].iov_len ? n : n - 1;
}

/*
 * Request merging (QEMU's virtio_blk_submit_multireq): the reads or writes
 * taken from the ring in one pass are collected, sorted by offset, and runs
 * of adjacent ones go to the block layer as one request; each completes with
 * the merged request's result (an error goes through io_error one by one).
 * Bounced reads are not merged.
 */
#define MERGE_MAX_REQS 32
#define MERGE_MAX_IOV 1024

struct merge_batch {
	struct vblk_req *r[MERGE_MAX_REQS];
	int n;
};

struct vblk_merged {
	int n;
	struct vblk_req *r[MERGE_MAX_REQS];
	struct vd_qiov qiov;
	struct iovec iov[];
};

static void merged_cb(void *opaque, int ret)
{
	struct vblk_merged *m = opaque;

	for (int i = 0; i < m->n; i++)
		req_cb(m->r[i], ret);
	free(m);
}

static void merged_submit(struct vd_virtio_blk *b, struct vblk_req **r, int n, int niov)
{
	bool is_write = r[0]->type == VIRTIO_BLK_T_OUT;
	struct vblk_merged *m = malloc(sizeof(*m) + (size_t)niov * sizeof(struct iovec));
	int k = 0;

	if (!m) {
		for (int i = 0; i < n; i++)
			req_submit(r[i]);
		return;
	}
	m->n = n;
	for (int i = 0; i < n; i++) {
		m->r[i] = r[i];
		memcpy(m->iov + k, r[i]->qiov.iov, (size_t)r[i]->qiov.niov * sizeof(struct iovec));
		k += r[i]->qiov.niov;
	}
	vd_qiov_init_external(&m->qiov, m->iov, niov);
	vd_blk_acct_merged(b->blk, is_write ? VD_ACCT_WRITE : VD_ACCT_READ, (unsigned)n - 1);
	if (is_write)
		vd_blk_aio_pwritev(b->blk, r[0]->offset, &m->qiov, 0, merged_cb, m);
	else
		vd_blk_aio_preadv(b->blk, r[0]->offset, &m->qiov, 0, merged_cb, m);
}

static void batch_submit(struct vd_virtio_blk *b, struct merge_batch *mb)
{
	const struct vd_limits *lim = vd_blk_limits(b->blk);
	uint64_t max_bytes = VD_REQUEST_MAX_BYTES;
	struct vblk_req **r = mb->r;
	int n = mb->n, i, j;

	mb->n = 0;
	if (lim->max_transfer && lim->max_transfer < max_bytes)
		max_bytes = lim->max_transfer;
	/* By offset; stable, so equal offsets keep the ring's order. */
	for (i = 1; i < n; i++) {
		struct vblk_req *x = r[i];

		for (j = i; j > 0 && r[j - 1]->offset > x->offset; j--)
			r[j] = r[j - 1];
		r[j] = x;
	}
	for (i = 0; i < n; i = j) {
		int64_t end = r[i]->offset + (int64_t)r[i]->qiov.size;
		uint64_t bytes = r[i]->qiov.size;
		int niov = r[i]->qiov.niov;

		for (j = i + 1; j < n; j++) {
			if (r[j]->offset != end || niov + r[j]->qiov.niov > MERGE_MAX_IOV ||
			    bytes + r[j]->qiov.size > max_bytes)
				break;
			end += (int64_t)r[j]->qiov.size;
			bytes += r[j]->qiov.size;
			niov += r[j]->qiov.niov;
		}
		if (j - i == 1)
			req_submit(r[i]);
		else
			merged_submit(b, r + i, j - i, niov);
	}
}

/* A read or write ready for the block layer: into the batch when it can be
 * merged, which is submitted first when it holds the other kind or is full. */
static void rw_submit(struct vd_virtio_blk *b, struct merge_batch *mb, struct vblk_req *r)
{
	if (!b->merge || !mb || (r->type == VIRTIO_BLK_T_IN && b->bounce_reads)) {
		if (mb)
			batch_submit(b, mb);
		req_submit(r);
		return;
	}
	if (mb->n && (mb->n == MERGE_MAX_REQS || mb->r[0]->type != r->type))
		batch_submit(b, mb);
	mb->r[mb->n++] = r;
}

/* DISCARD and WRITE_ZEROES with one segment (5.2.6.2); QEMU's order of
 * checks and statuses. */
static void handle_dwz(struct vblk_req *r, const struct vd_vq_elem *e, bool wz)
{
	struct vd_virtio_blk *b = r->b;
	uint8_t seg[16];
	uint64_t sector;
	uint32_t num, flags, max;

	if (!has_feature(b, wz ? VIRTIO_BLK_F_WRITE_ZEROES : VIRTIO_BLK_F_DISCARD)) {
		req_complete(r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	if (r->qiov.size > sizeof(seg)) { /* more than one segment */
		req_complete(r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	vd_qiov_to_buf(&r->qiov, 0, seg, sizeof(seg));
	sector = ld64(seg);
	num = ld32(seg + 8);
	flags = ld32(seg + 12);
	max = wz ? max_write_zeroes_sectors(b) : max_discard_sectors(b);
	if (num > max || !sect_range_ok(b, sector, (uint64_t)num << SECTOR_BITS)) {
		req_complete(r, VIRTIO_BLK_S_IOERR);
		return;
	}
	if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) ||
	    (!wz && (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP))) {
		req_complete(r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
	if (b->read_only) {
		req_complete(r, VIRTIO_BLK_S_IOERR);
		return;
	}
	if (num == 0) {
		req_complete(r, VIRTIO_BLK_S_OK);
		return;
	}
	r->type = wz ? VIRTIO_BLK_T_WRITE_ZEROES : VIRTIO_BLK_T_DISCARD;
	r->offset = (int64_t)(sector << SECTOR_BITS);
	r->bytes = (int64_t)num << SECTOR_BITS;
	r->flags = wz && (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) ? VD_REQ_MAY_UNMAP : 0;
	req_submit(r);
	(void)e;
}

static void handle_request(struct vd_virtio_blk *b, unsigned q, const struct vd_vq_elem *e,
			   struct iovec *iov, struct merge_batch *mb)
{
	struct vblk_queue *qs = &b->queues[q];
	unsigned n = e->out_num + e->in_num;
	struct vblk_req *r;
	struct iovec *last;
	uint8_t hdr[16];
	uint32_t type;
	uint64_t sector;
	int niov;

	/* 5.2.6.1: the header and the status byte must be there. */
	if (e->out_len < sizeof(hdr)) {
		set_broken(b, &qs->vq, "virtio-blk missing header");
		return;
	}
	if (e->in_len < 1) {
		set_broken(b, &qs->vq, "virtio-blk missing status byte");
		return;
	}
	r = malloc(sizeof(*r) + n * sizeof(struct iovec));
	if (!r) {
		/* No memory for bookkeeping: fail this request in place. */
		last = &iov[n - 1];
		((uint8_t *)last->iov_base)[last->iov_len - 1] = VIRTIO_BLK_S_IOERR;
		vd_vq_push(&qs->vq, e->head, e->ndescs,
			   (uint32_t)(e->in_len > UINT32_MAX ? UINT32_MAX : e->in_len));
		if (vd_vq_should_notify(&qs->vq) && b->ops && b->ops->notify)
			b->ops->notify(b->opaque, q);
		return;
	}
	memcpy(r->iov, iov, n * sizeof(struct iovec));
	r->bounce = NULL;
	r->data_valid = false;
	r->b = b;
	r->q = q;
	r->head = e->head;
	r->ndescs = e->ndescs;
	r->used_len = e->in_len > UINT32_MAX ? UINT32_MAX : (uint32_t)e->in_len;
	last = &r->iov[n - 1];
	r->status = (uint8_t *)last->iov_base + last->iov_len - 1;
	r->generation = qs->generation;
	r->retry.resubmit = retry_resubmit;
	qs->inflight++;

	vd_iov_to_buf(r->iov, (int)e->out_num, 0, hdr, sizeof(hdr));
	type = ld32(hdr) & ~VIRTIO_BLK_T_BARRIER;
	sector = ld64(hdr + 8);
	r->type = type;
	r->offset = (int64_t)(sector << SECTOR_BITS);
	/* What the batch holds reaches the block layer before anything else
	 * does (a flush after the writes it covers). */
	if (type != VIRTIO_BLK_T_IN && type != VIRTIO_BLK_T_OUT)
		batch_submit(b, mb);

	switch (type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_GET_ID:
		/* Data: the writable buffers without the status byte. */
		niov = iov_drop_last_byte(r->iov + e->out_num, (int)e->in_num);
		vd_qiov_init_external(&r->qiov, r->iov + e->out_num, niov);
		if (type == VIRTIO_BLK_T_GET_ID) {
			size_t len = strlen(b->serial) + 1;

			if (len > VIRTIO_BLK_ID_BYTES)
				len = VIRTIO_BLK_ID_BYTES;
			vd_qiov_from_buf(&r->qiov, 0, b->serial, len);
			req_complete(r, VIRTIO_BLK_S_OK);
			return;
		}
		if (!sect_range_ok(b, sector, r->qiov.size)) {
			req_complete(r, VIRTIO_BLK_S_IOERR);
			return;
		}
		if (r->qiov.size == 0) {
			req_complete(r, VIRTIO_BLK_S_OK);
			return;
		}
		/* For a bounce: the guest's buffers, and how much to read. */
		r->data_iov = r->iov + e->out_num;
		r->data_niov = niov;
		r->bounce_len = r->qiov.size;
		rw_submit(b, mb, r);
		return;
	case VIRTIO_BLK_T_OUT:
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		/* Data: the readable buffers after the header. */
		niov = iov_skip(r->iov, (int)e->out_num, sizeof(hdr));
		vd_qiov_init_external(&r->qiov, r->iov, niov);
		if (type != VIRTIO_BLK_T_OUT) {
			handle_dwz(r, e, type == VIRTIO_BLK_T_WRITE_ZEROES);
			return;
		}
		if (!sect_range_ok(b, sector, r->qiov.size) || b->read_only) {
			req_complete(r, VIRTIO_BLK_S_IOERR);
			return;
		}
		if (r->qiov.size == 0) {
			req_complete(r, VIRTIO_BLK_S_OK);
			return;
		}
		rw_submit(b, mb, r);
		return;
	case VIRTIO_BLK_T_FLUSH:
		vd_qiov_init_external(&r->qiov, NULL, 0);
		req_submit(r);
		return;
	default:
		req_complete(r, VIRTIO_BLK_S_UNSUPP);
		return;
	}
}

void vd_virtio_blk_handle_queue(struct vd_virtio_blk *b, unsigned q)
{
	struct vd_vq *vq;
	struct vd_vq_elem e;
	int ret;

	if (q >= b->num_queues || b->broken)
		return;
	vq = &b->queues[q].vq;
	/* The transport may have broken the queue while setting it up (a
	 * ring base out of range): that too is NEEDS_RESET. */
	if (vq->broken) {
		set_broken(b, vq, vq->error ? vq->error : "virtqueue error");
		return;
	}
	if (!vd_vq_ready(vq))
		return;
	/* Suppress kicks while we drain the ring, then re-check after
	 * re-enabling them to close the race (2.7.10). */
	for (;;) {
		struct merge_batch mb = {.n = 0};

		vd_vq_set_notification(vq, false);
		while ((ret = vd_vq_pop(vq, &e, b->scratch, VD_VQ_MAX_IOV)) == 1) {
			handle_request(b, q, &e, b->scratch, &mb);
			if (b->broken) {
				batch_submit(b, &mb);
				return;
			}
		}
		batch_submit(b, &mb);
		if (ret < 0) {
			set_broken(b, vq, vq->error ? vq->error : "virtqueue error");
			return;
		}
		vd_vq_set_notification(vq, true);
		if (!vd_vq_has_work(vq))
			break;
	}
}

unsigned vd_virtio_blk_inflight(const struct vd_virtio_blk *b, unsigned q)
{
	unsigned n = 0;

	if (q != ~0u)
		return q < b->num_queues ? b->queues[q].inflight : 0;
	for (unsigned i = 0; i < b->num_queues; i++)
		n += b->queues[i].inflight;
	return n;
}

void vd_virtio_blk_stop_queue(struct vd_virtio_blk *b, unsigned q)
{
	struct vd_loop *loop = vd_blk_loop(b->blk);

	if (q >= b->num_queues)
		return;
	/* Block-layer requests cannot be revoked once submitted: wait for
	 * them, so their completions write guest memory before we return and
	 * never after.  Reads waiting for bounce budget start as others
	 * finish. */
	while (b->queues[q].inflight || b->queues[q].waiting)
		vd_loop_run_once(loop, true);
}

void vd_virtio_blk_reset_queue(struct vd_virtio_blk *b, unsigned q)
{
	if (q >= b->num_queues)
		return;
	vd_virtio_blk_stop_queue(b, q);
	vd_virtio_blk_reset_queue_nowait(b, q);
}

void vd_virtio_blk_reset(struct vd_virtio_blk *b)
{
	for (unsigned q = 0; q < b->num_queues; q++)
		vd_virtio_blk_stop_queue(b, q);
	vd_virtio_blk_reset_nowait(b);
}

void vd_virtio_blk_reset_queue_nowait(struct vd_virtio_blk *b, unsigned q)
{
	if (q >= b->num_queues)
		return;
	b->queues[q].generation++;
	drop_kept(b, q);
	memset(&b->queues[q].vq, 0, sizeof(b->queues[q].vq));
	/* NEEDS_RESET stays while another queue is still broken. */
	b->broken = false;
	for (unsigned i = 0; i < b->num_queues; i++)
		if (b->queues[i].vq.broken)
			b->broken = true;
	start_waiting(b);
}

void vd_virtio_blk_reset_nowait(struct vd_virtio_blk *b)
{
	for (unsigned q = 0; q < b->num_queues; q++) {
		b->queues[q].generation++;
		memset(&b->queues[q].vq, 0, sizeof(b->queues[q].vq));
	}
	drop_kept(b, ~0u);
	b->features = 0;
	b->broken = false;
	b->dma_off = false;
}

void vd_virtio_blk_set_dma(struct vd_virtio_blk *b, bool enabled)
{
	b->dma_off = !enabled;
	if (!enabled)
		return;
	/* In completion order; a notification may reach the transport,
	 * which must not disable DMA from it. */
	while (b->parked && !b->dma_off) {
		struct vblk_req *r = b->parked;

		b->parked = r->next;
		if (!b->parked)
			b->parked_tail = &b->parked;
		req_push(r, r->parked_status);
		start_waiting(b);
	}
}

unsigned vd_virtio_blk_parked(const struct vd_virtio_blk *b)
{
	unsigned n = 0;

	for (const struct vblk_req *r = b->parked; r; r = r->next)
		n++;
	return n;
}

void vd_virtio_blk_drain(struct vd_virtio_blk *b)
{
	while (vd_virtio_blk_inflight(b, ~0u)) {
		if (vd_in_coroutine())
			vd_co_queue_wait(&b->drain_waiters);
		else
			vd_loop_run_once(vd_blk_loop(b->blk), true);
	}
}

void vd_virtio_blk_restart(struct vd_virtio_blk *b)
{
	vd_blk_retry_all(b->blk);
}

unsigned vd_virtio_blk_kept(const struct vd_virtio_blk *b)
{
	return vd_blk_retry_count(b->blk);
}
