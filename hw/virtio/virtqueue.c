/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueues (virtio 1.2 section 2.7) with indirect descriptors
 * (2.7.5.3) and event index suppression (2.7.7, 2.7.10), over guest memory
 * reached through struct vd_virtio_mem.
 *
 * Ring fields are read once into locals before they are checked, so a guest
 * that changes them concurrently cannot make a checked value differ from the
 * used one.  Memory ordering follows 2.7.13: read avail.idx, then (acquire)
 * the ring entries; write used entries, then (release) used.idx.
 */
#include <errno.h>
#include <string.h>

#include <vdisk/virtio.h>

#include "hw/virtio/le.h"

/* Inflight region of one queue (vhost-user.rst "Inflight I/O tracking"):
 * le64 features, le16 version, le16 desc_num, le16 last_batch_head, le16
 * used_idx (offsets 0, 8, 10, 12, 14 of the header; the pointer kept in
 * vq->inflight is the header + 8), then 16-byte descriptor states. */
#define INFLIGHT_HDR 8
#define INFLIGHT_VERSION 1

/* avail.idx and used.idx are shared with a concurrently running driver. */
static inline uint16_t load_idx(const uint8_t *p)
{
	return le16toh(__atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE));
}

static inline void store_idx(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, htole16(v), __ATOMIC_RELEASE);
}

void *vd_virtio_mem_map_all(const struct vd_virtio_mem *mem, uint64_t addr, uint64_t len)
{
	uint64_t got = len;
	void *p;

	if (len == 0 || addr + len < addr)
		return NULL;
	p = mem->map(mem->opaque, addr, &got);
	if (!p || got < len)
		return NULL;
	return p;
}

int vd_vq_init(struct vd_vq *vq, unsigned num, const struct vd_virtio_mem *mem)
{
	if (num > VD_VQ_MAX_SIZE || (num & (num - 1)))
		return -EINVAL;
	memset(vq, 0, sizeof(*vq));
	vq->num = num;
	vq->mem = mem;
	vq->notification = true;
	vq->avail_wrap = vq->used_wrap = true; /* 2.8.1: both start at 1 */
	return 0;
}

void vd_vq_set_rings(struct vd_vq *vq, void *desc, void *avail, void *used)
{
	vq->desc = desc;
	vq->avail = avail;
	vq->used = used;
	/* Continue where the ring is (vhost-user: a restarted back end). */
	if (used && !vq->packed)
		vq->used_idx = load_idx(vq->used + 2);
	vq->signalled_used_valid = false;
}

void vd_vq_set_features(struct vd_vq *vq, uint64_t features)
{
	vq->event_idx = features & (1ULL << VIRTIO_F_EVENT_IDX);
	vq->indirect = features & (1ULL << VIRTIO_F_INDIRECT_DESC);
	vq->packed = features & (1ULL << VIRTIO_F_RING_PACKED);
}

void vd_vq_set_base(struct vd_vq *vq, uint32_t base)
{
	uint16_t last_avail_idx = (uint16_t)base;

	if (vq->packed) {
		/* vhost-user: bits 0-14 the next avail slot, bit 15 its wrap
		 * counter; bits 16-30 and 31 the same for the used side (0:
		 * where the avail side is). */
		uint16_t used = (uint16_t)(base >> 16);

		if (!used)
			used = last_avail_idx;
		vq->last_avail_idx = last_avail_idx & 0x7fff;
		vq->avail_wrap = last_avail_idx >> 15;
		vq->used_idx = used & 0x7fff;
		vq->used_wrap = used >> 15;
		if (vq->num && (vq->last_avail_idx >= vq->num || vq->used_idx >= vq->num))
			vd_vq_set_broken(vq, "ring base out of range");
		vq->signalled_used_valid = false;
		vq->inuse = 0;
		return;
	}
	vq->last_avail_idx = last_avail_idx;
	vq->used_idx = vq->used ? load_idx(vq->used + 2) : last_avail_idx;
	vq->signalled_used_valid = false;
	vq->inuse = 0;
}

uint32_t vd_vq_get_base(const struct vd_vq *vq)
{
	if (vq->packed)
		return (uint32_t)(vq->last_avail_idx | (vq->avail_wrap ? 0x8000u : 0)) |
		       (uint32_t)(vq->used_idx | (vq->used_wrap ? 0x8000u : 0)) << 16;
	return vq->last_avail_idx;
}

bool vd_vq_ready(const struct vd_vq *vq)
{
	return vq->num && vq->desc && vq->avail && vq->used && !vq->broken;
}

void vd_vq_set_broken(struct vd_vq *vq, const char *why)
{
	if (!vq->broken) {
		vq->broken = true;
		vq->error = why;
	}
}

static int fail(struct vd_vq *vq, const char *why)
{
	vd_vq_set_broken(vq, why);
	return -EIO;
}

/*
 * An indirect descriptor (2.7.5.3.1, 2.8.19): only with the feature, never
 * together with NEXT, a whole table of 16-byte descriptors in guest memory.
 * Maps it into *@table; the number of entries, or -EIO (queue broken).
 */
static int map_indirect(struct vd_vq *vq, uint64_t addr, uint32_t len, uint16_t flags,
			const uint8_t **table)
{
	if (!vq->indirect)
		return fail(vq, "indirect descriptor not negotiated");
	if (flags & VRING_DESC_F_NEXT)
		return fail(vq, "indirect descriptor with NEXT");
	if (len == 0 || len % 16 || len / 16 > VD_VQ_MAX_SIZE)
		return fail(vq, "bad indirect table size");
	*table = vd_virtio_mem_map_all(vq->mem, addr, len);
	if (!*table)
		return fail(vq, "indirect table outside guest memory");
	return (int)(len / 16);
}

static int map_buffer(struct vd_vq *vq, uint64_t addr, uint32_t len, struct iovec *iov,
		      unsigned *niov, unsigned max_iov);
static void inflight_set(struct vd_vq *vq, uint16_t head);
static int split_pop(struct vd_vq *vq, struct vd_vq_elem *elem, struct iovec *iov,
		     unsigned max_iov);
static void packed_push(struct vd_vq *vq, uint16_t id, uint16_t ndescs, uint32_t len);
static bool packed_should_notify(struct vd_vq *vq);
static void packed_set_notification(struct vd_vq *vq, bool enable);

static bool packed_desc_avail(struct vd_vq *vq, unsigned i, bool wrap)
{
	uint16_t f = le16toh(__atomic_load_n((const uint16_t *)(vq->desc + 16 * (size_t)i + 14),
					     __ATOMIC_ACQUIRE));

	/* 2.8.1: available when AVAIL matches the wrap counter and USED
	 * does not. */
	return !!(f & VRING_PACKED_DESC_F_AVAIL) == wrap &&
	       !!(f & VRING_PACKED_DESC_F_USED) != wrap;
}

bool vd_vq_has_work(struct vd_vq *vq)
{
	if (!vd_vq_ready(vq))
		return false;
	if (vq->packed)
		return packed_desc_avail(vq, vq->last_avail_idx, vq->avail_wrap);
	if (vq->resubmit_pos < vq->resubmit_num)
		return true;
	return load_idx(vq->avail + 2) != vq->last_avail_idx;
}

/*
 * Packed virtqueues (virtio 1.2 section 2.8).  A chain is consecutive in the
 * ring (wrapping at num); its buffer id is in its last descriptor (2.8.6).
 * The device writes one used descriptor per chain and skips as many slots
 * as the chain had (2.8.7).  An indirect descriptor stands for its whole
 * table, which is used in order (2.8.19).
 */
static int packed_pop(struct vd_vq *vq, struct vd_vq_elem *elem, struct iovec *iov,
		      unsigned max_iov)
{
	unsigned i = vq->last_avail_idx, count = 0, niov = 0;
	bool wrap = vq->avail_wrap, seen_write = false;
	uint64_t out_len = 0, in_len = 0;
	uint16_t id = 0;

	if (!packed_desc_avail(vq, i, wrap))
		return 0;
	if (vq->inuse >= vq->num)
		return fail(vq, "virtqueue size exceeded");
	elem->out_num = 0;
	for (;;) {
		const uint8_t *d = vq->desc + 16 * (size_t)i;
		uint64_t addr = ld64(d);
		uint32_t len = ld32(d + 8);
		uint16_t flags = ld16(d + 14);
		const uint8_t *table = NULL;
		unsigned tn = 1;

		id = ld16(d + 12);
		if (++count > vq->num)
			return fail(vq, "descriptor chain longer than the ring");
		if (flags & VRING_DESC_F_INDIRECT) {
			int n = map_indirect(vq, addr, len, flags, &table);
			if (n < 0)
				return n;
			tn = (unsigned)n;
		}
		for (unsigned t = 0; t < tn; t++) {
			const uint8_t *td = table ? table + 16 * (size_t)t : d;
			uint16_t tf = table ? ld16(td + 14) : flags;
			uint64_t ta = table ? ld64(td) : addr;
			uint32_t tl = table ? ld32(td + 8) : len;
			int ret;

			if (table && (tf & VRING_DESC_F_INDIRECT))
				return fail(vq, "nested indirect table");
			if (tf & VRING_DESC_F_WRITE) {
				ret = map_buffer(vq, ta, tl, iov, &niov, max_iov);
				if (ret < 0)
					return ret;
				seen_write = true;
				in_len += tl;
			} else {
				if (seen_write)
					return fail(vq, "readable descriptor after writable");
				ret = map_buffer(vq, ta, tl, iov, &niov, max_iov);
				if (ret < 0)
					return ret;
				elem->out_num = niov;
				out_len += tl;
			}
		}
		if (++i >= vq->num) {
			i = 0;
			wrap = !wrap;
		}
		if (table || !(flags & VRING_DESC_F_NEXT))
			break;
	}
	elem->head = id;
	elem->ndescs = (uint16_t)count;
	elem->in_num = niov - elem->out_num;
	elem->out_len = out_len;
	elem->in_len = in_len;
	vq->last_avail_idx = (uint16_t)i;
	vq->avail_wrap = wrap;
	vq->inuse++;
	if (vq->event_idx && vq->notification)
		packed_set_notification(vq, true);
	return 1;
}

static void packed_push(struct vd_vq *vq, uint16_t id, uint16_t ndescs, uint32_t len)
{
	uint8_t *d = vq->desc + 16 * (size_t)vq->used_idx;
	uint16_t flags = len ? VRING_DESC_F_WRITE : 0;

	if (vq->used_wrap)
		flags |= VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
	st32(d + 8, len);
	st16(d + 12, id);
	/* 2.8.21: id and len are visible before the flags that publish them. */
	__atomic_store_n((uint16_t *)(d + 14), htole16(flags), __ATOMIC_RELEASE);
	if (ndescs == 0 || ndescs > vq->num)
		ndescs = 1;
	vq->used_idx = (uint16_t)(vq->used_idx + ndescs);
	if (vq->used_idx >= vq->num) {
		vq->used_idx = (uint16_t)(vq->used_idx - vq->num);
		vq->used_wrap = !vq->used_wrap;
	}
	if (vq->inuse)
		vq->inuse--;
}

/* Driver and device event suppression structures (2.8.10): le16
 * off_wrap, le16 flags. */
static bool packed_should_notify(struct vd_vq *vq)
{
	uint16_t off_wrap = ld16(vq->avail), flags = ld16(vq->avail + 2);
	uint16_t old = vq->signalled_used, new_idx = vq->used_idx;
	bool valid = vq->signalled_used_valid;
	int off;

	vq->signalled_used = new_idx;
	vq->signalled_used_valid = true;
	if (flags == VRING_PACKED_EVENT_FLAG_DISABLE)
		return false;
	if (flags == VRING_PACKED_EVENT_FLAG_ENABLE || !vq->event_idx)
		return true;
	off = off_wrap & 0x7fff;
	if (vq->used_wrap != (off_wrap >> 15))
		off -= (int)vq->num;
	return !valid || (uint16_t)(new_idx - (uint16_t)off - 1) < (uint16_t)(new_idx - old);
}

static void packed_set_notification(struct vd_vq *vq, bool enable)
{
	if (vq->event_idx && enable) {
		st16(vq->used, (uint16_t)(vq->last_avail_idx | (vq->avail_wrap ? 0x8000 : 0)));
		st16(vq->used + 2, VRING_PACKED_EVENT_FLAG_DESC);
	} else {
		st16(vq->used + 2,
		     enable ? VRING_PACKED_EVENT_FLAG_ENABLE : VRING_PACKED_EVENT_FLAG_DISABLE);
	}
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

int vd_vq_pop(struct vd_vq *vq, struct vd_vq_elem *elem, struct iovec *iov, unsigned max_iov)
{
	if (vq->broken)
		return -EIO;
	if (!vd_vq_ready(vq))
		return 0;
	return vq->packed ? packed_pop(vq, elem, iov, max_iov) : split_pop(vq, elem, iov, max_iov);
}

/* Map one descriptor's buffer into iovecs (it may span RAM regions). */
static int map_buffer(struct vd_vq *vq, uint64_t addr, uint32_t len, struct iovec *iov,
		      unsigned *niov, unsigned max_iov)
{
	if (len == 0)
		return fail(vq, "zero-sized buffer");
	if (addr + len < addr)
		return fail(vq, "buffer wraps the address space");
	while (len) {
		uint64_t got = len;
		void *p = vq->mem->map(vq->mem->opaque, addr, &got);

		if (!p || got == 0)
			return fail(vq, "buffer outside guest memory");
		if (got > len)
			got = len;
		if (*niov >= max_iov) {
			vd_vq_set_broken(vq, "too many buffers");
			return -ENOBUFS;
		}
		iov[*niov].iov_base = p;
		iov[*niov].iov_len = got;
		(*niov)++;
		addr += got;
		len -= (uint32_t)got;
	}
	return 0;
}

static int split_pop(struct vd_vq *vq, struct vd_vq_elem *elem, struct iovec *iov, unsigned max_iov)
{
	const uint8_t *table;
	unsigned max, i, steps = 0, niov = 0;
	uint16_t avail_idx, head;
	bool in_indirect = false, seen_write = false, resubmitted = false;
	uint64_t out_len = 0, in_len = 0;

	if (vq->broken)
		return -EIO;
	if (!vd_vq_ready(vq))
		return 0;
	if (vq->inuse >= vq->num)
		return fail(vq, "virtqueue size exceeded");
	if (vq->resubmit_pos < vq->resubmit_num) {
		/* A request a previous back end took and did not finish. */
		head = vq->resubmit[vq->resubmit_pos];
		resubmitted = true;
	} else {
		avail_idx = load_idx(vq->avail + 2);
		if (avail_idx == vq->last_avail_idx)
			return 0;
		/* 2.7.6: the driver never has more than num entries
		 * outstanding. */
		if ((uint16_t)(avail_idx - vq->last_avail_idx) > vq->num)
			return fail(vq, "avail index moved too far");
		head = ld16(vq->avail + 4 + 2 * (vq->last_avail_idx % vq->num));
	}
	if (head >= vq->num)
		return fail(vq, "head index out of range");

	table = vq->desc;
	max = vq->num;
	i = head;
	elem->out_num = elem->in_num = 0;
	for (;;) {
		const uint8_t *d;
		uint64_t addr;
		uint32_t len;
		uint16_t flags, next;

		/* A chain visits each descriptor at most once (2.7.5.2: no
		 * chain longer than the queue size, hence no loops). */
		if (++steps > max)
			return fail(vq, "descriptor loop");
		d = table + 16 * (size_t)i;
		addr = ld64(d);
		len = ld32(d + 8);
		flags = ld16(d + 12);
		next = ld16(d + 14);

		if (flags & VRING_DESC_F_INDIRECT) {
			/* 2.7.5.3.1: never nested (map_indirect checks the
			 * rest). */
			if (in_indirect)
				return fail(vq, "nested indirect table");
			int n = map_indirect(vq, addr, len, flags, &table);
			if (n < 0)
				return n;
			in_indirect = true;
			max = (unsigned)n;
			steps = 0;
			i = 0;
			continue;
		}
		if (flags & VRING_DESC_F_WRITE) {
			int ret = map_buffer(vq, addr, len, iov, &niov, max_iov);
			if (ret < 0)
				return ret;
			seen_write = true;
			in_len += len;
		} else {
			int ret;

			/* 2.7.4.2: device-readable before device-writable. */
			if (seen_write)
				return fail(vq, "readable descriptor after writable");
			ret = map_buffer(vq, addr, len, iov, &niov, max_iov);
			if (ret < 0)
				return ret;
			elem->out_num = niov;
			out_len += len;
		}
		if (!(flags & VRING_DESC_F_NEXT))
			break;
		if (next >= max)
			return fail(vq, "next index out of range");
		i = next;
	}
	elem->head = head;
	elem->ndescs = 1;
	elem->in_num = niov - elem->out_num;
	elem->out_len = out_len;
	elem->in_len = in_len;
	if (resubmitted) {
		vq->resubmit_pos++;
	} else {
		vq->last_avail_idx++;
		if (vq->inflight)
			inflight_set(vq, head);
	}
	vq->inuse++;
	/* 2.7.10: with event index, ask for a kick when the driver adds past
	 * what we have taken. */
	if (vq->event_idx && vq->notification)
		st16(vq->used + 4 + 8 * (size_t)vq->num, vq->last_avail_idx);
	return 1;
}

void vd_vq_push(struct vd_vq *vq, uint16_t head, uint16_t ndescs, uint32_t len)
{
	uint8_t *e;

	if (!vq->used || !vq->num)
		return;
	if (vq->packed) {
		packed_push(vq, head, ndescs, len);
		return;
	}
	e = vq->used + 4 + 8 * (size_t)(vq->used_idx % vq->num);
	/* Inflight tracking: name the batch before used.idx moves, so that a
	 * back end dying in between can be told apart on restart. */
	if (vq->inflight && head < vq->num)
		st16(vq->inflight + 4, head);
	st32(e, head);
	st32(e + 4, len);
	vq->used_idx++;
	/* 2.7.8: the entry is visible before the index that covers it. */
	store_idx(vq->used + 2, vq->used_idx);
	if (vq->inflight && head < vq->num) {
		__atomic_store_n(vq->inflight + INFLIGHT_HDR + 16 * (size_t)head, 0,
				 __ATOMIC_RELEASE);
		store_idx(vq->inflight + 6, vq->used_idx);
	}
	if (vq->inuse)
		vq->inuse--;
}

bool vd_vq_should_notify(struct vd_vq *vq)
{
	uint16_t old, new_idx, event;
	bool valid;

	if (!vq->avail)
		return false;
	/* The used.idx store must be visible before we read the driver's
	 * suppression fields (2.7.10). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (vq->packed)
		return packed_should_notify(vq);
	if (!vq->event_idx)
		return !(ld16(vq->avail) & VRING_AVAIL_F_NO_INTERRUPT);
	valid = vq->signalled_used_valid;
	old = vq->signalled_used;
	new_idx = vq->used_idx;
	vq->signalled_used = new_idx;
	vq->signalled_used_valid = true;
	event = ld16(vq->avail + 4 + 2 * (size_t)vq->num);
	/* vring_need_event: notify if used_event lies in (old, new]. */
	return !valid || (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

void vd_vq_set_notification(struct vd_vq *vq, bool enable)
{
	vq->notification = enable;
	if (!vq->used || !vq->avail)
		return;
	if (vq->packed) {
		packed_set_notification(vq, enable);
		return;
	}
	if (vq->event_idx) {
		if (enable)
			st16(vq->used + 4 + 8 * (size_t)vq->num, load_idx(vq->avail + 2));
	} else {
		uint16_t f = ld16(vq->used);
		st16(vq->used, enable ? f & ~VRING_USED_F_NO_NOTIFY : f | VRING_USED_F_NO_NOTIFY);
	}
	/* The flag is visible before we look at avail.idx again. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* --- inflight tracking ---------------------------------------------------- */

size_t vd_vq_inflight_size(unsigned num)
{
	return (16 + 16 * (size_t)num + 63) & ~(size_t)63;
}

static void inflight_set(struct vd_vq *vq, uint16_t head)
{
	uint8_t *d = vq->inflight + INFLIGHT_HDR + 16 * (size_t)head;

	st64(d + 8, vq->inflight_counter++);
	__atomic_store_n(d, 1, __ATOMIC_RELEASE);
}

int vd_vq_set_inflight(struct vd_vq *vq, void *region, size_t size, uint16_t *resubmit)
{
	uint8_t *r = region, *h;
	uint16_t used_idx;
	uint64_t max_counter = 0;
	unsigned n = 0;

	vq->inflight = NULL;
	vq->resubmit = NULL;
	vq->resubmit_num = vq->resubmit_pos = 0;
	if (!r || !resubmit || vq->packed || !vq->num || !vq->used ||
	    size < vd_vq_inflight_size(vq->num))
		return -EINVAL;
	/* vq->inflight points at version, so that offsets 0/2/4/6 are
	 * version, desc_num, last_batch_head, used_idx. */
	h = r + 8;
	used_idx = load_idx(vq->used + 2);
	if (ld16(h) != INFLIGHT_VERSION || ld16(h + 2) != vq->num) {
		/* A fresh region (version 0) or one for another ring size:
		 * nothing to recover. */
		memset(h + INFLIGHT_HDR, 0, 16 * (size_t)vq->num);
		st16(h + 2, (uint16_t)vq->num);
		st16(h + 4, 0);
		st16(h + 6, used_idx);
		st16(h, INFLIGHT_VERSION);
		vq->inflight = h;
		vq->inflight_counter = 0;
		vq->resubmit = resubmit;
		return 0;
	} else {
		/* The previous back end published used.idx but died before
		 * clearing its last batch: that head is done. */
		if (ld16(h + 6) != used_idx) {
			uint16_t last = ld16(h + 4);

			if (last < vq->num)
				h[INFLIGHT_HDR + 16 * (size_t)last] = 0;
			st16(h + 6, used_idx);
		}
		for (unsigned i = 0; i < vq->num; i++) {
			uint8_t *d = h + INFLIGHT_HDR + 16 * (size_t)i;
			uint64_t counter = ld64(d + 8);
			unsigned j;

			if (d[0] != 1) {
				d[0] = 0;
				continue;
			}
			if (counter >= max_counter)
				max_counter = counter + 1;
			/* Oldest first: insertion by counter. */
			for (j = n; j > 0 && ld64(h + INFLIGHT_HDR + 16 * (size_t)resubmit[j - 1] +
						  8) > counter;
			     j--)
				resubmit[j] = resubmit[j - 1];
			resubmit[j] = (uint16_t)i;
			n++;
		}
	}
	vq->inflight = h;
	vq->inflight_counter = max_counter;
	vq->resubmit = resubmit;
	vq->resubmit_num = n;
	/* Every request taken was either completed (used.idx) or is still
	 * in flight (libvhost-user's vu_check_queue_inflights). */
	vq->used_idx = used_idx;
	vq->last_avail_idx = (uint16_t)(used_idx + n);
	vq->inuse = 0;
	vq->signalled_used_valid = false;
	return (int)n;
}
