/* SPDX-License-Identifier: MIT */
/*
 * Split and packed virtqueues (virtio 1.2 sections 2.7 and 2.8) with
 * indirect descriptors (2.7.5.3, 2.8.19) and event suppression (2.7.7,
 * 2.7.10, 2.8.10), over guest memory reached through struct vd_virtio_mem,
 * and vhost-user inflight tracking of both (at the end of the file).
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
 * offsets in the header both layouts share (le64 features first), in the
 * split one (QueueRegionSplit, DescStateSplit) and in the packed one
 * (QueueRegionPacked, DescStatePacked). */
#define INFLIGHT_VERSION_OFF 8
#define INFLIGHT_DESC_NUM 10
#define INFLIGHT_VERSION 1

#define SPLIT_LAST_BATCH_HEAD 12
#define SPLIT_USED_IDX 14
#define SPLIT_HDR 16
#define SPLIT_ENTRY 16
#define SPLIT_E_INFLIGHT 0
#define SPLIT_E_COUNTER 8

#define PACKED_FREE_HEAD 12
#define PACKED_OLD_FREE_HEAD 14
#define PACKED_USED_IDX 16
#define PACKED_OLD_USED_IDX 18
#define PACKED_USED_WRAP 20
#define PACKED_OLD_USED_WRAP 21
#define PACKED_HDR 32
#define PACKED_ENTRY 32
#define PACKED_E_INFLIGHT 0
#define PACKED_E_NEXT 2
#define PACKED_E_LAST 4
#define PACKED_E_NUM 6
#define PACKED_E_COUNTER 8
#define PACKED_E_ID 16
#define PACKED_E_FLAGS 18
#define PACKED_E_LEN 20
#define PACKED_E_ADDR 24

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
	bool packed = features & (1ULL << VIRTIO_F_RING_PACKED);

	/* An inflight region is laid out for one kind of ring: tracking
	 * stops when the kind changes (vd_vq_set_inflight() again). */
	if (vq->inflight && packed != vq->packed)
		vd_vq_set_inflight(vq, NULL, 0, NULL);
	vq->event_idx = features & (1ULL << VIRTIO_F_EVENT_IDX);
	vq->indirect = features & (1ULL << VIRTIO_F_INDIRECT_DESC);
	vq->packed = packed;
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
static void packed_inflight_record(struct vd_vq *vq, uint16_t entry, uint64_t addr, uint32_t len,
				   uint16_t id, uint16_t flags);
static void packed_inflight_take(struct vd_vq *vq, uint16_t head, uint16_t last, uint16_t next_free,
				 unsigned count, uint16_t id);
static void packed_inflight_insert(struct vd_vq *vq, uint16_t head);
static uint16_t packed_inflight_put(struct vd_vq *vq, uint16_t id, uint16_t used_idx,
				    bool used_wrap);
static void packed_inflight_commit(struct vd_vq *vq, uint16_t head);
static const uint8_t *packed_entry(const struct vd_vq *vq, uint16_t entry);
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
	if (vq->resubmit_pos < vq->resubmit_num)
		return true;
	if (vq->packed)
		return packed_desc_avail(vq, vq->last_avail_idx, vq->avail_wrap);
	return load_idx(vq->avail + 2) != vq->last_avail_idx;
}

/*
 * Packed virtqueues (virtio 1.2 section 2.8).  A chain is consecutive in the
 * ring (wrapping at num); its buffer id is in its last descriptor (2.8.6).
 * The device writes one used descriptor per chain and skips as many slots
 * as the chain had (2.8.7).  An indirect descriptor stands for its whole
 * table, which is used in order (2.8.19).
 */

/* What a chain mapped so far. */
struct packed_chain {
	unsigned niov;
	bool seen_write;
	uint64_t out_len, in_len;
};

/*
 * One descriptor of a chain, read once (from the ring, or from the inflight
 * region for a resubmitted chain): map its buffer, or its table's buffers.
 * 1 if the chain ends with it, 0 if it goes on (NEXT), -errno if the queue
 * broke.
 */
static int packed_map_desc(struct vd_vq *vq, uint64_t addr, uint32_t len, uint16_t flags,
			   struct vd_vq_elem *elem, struct packed_chain *ch, struct iovec *iov,
			   unsigned max_iov)
{
	const uint8_t *table = NULL;
	unsigned tn = 1;

	if (flags & VRING_DESC_F_INDIRECT) {
		int n = map_indirect(vq, addr, len, flags, &table);
		if (n < 0)
			return n;
		tn = (unsigned)n;
	}
	for (unsigned t = 0; t < tn; t++) {
		const uint8_t *td = table ? table + 16 * (size_t)t : NULL;
		uint16_t tf = table ? ld16(td + 14) : flags;
		uint64_t ta = table ? ld64(td) : addr;
		uint32_t tl = table ? ld32(td + 8) : len;
		int ret;

		if (table && (tf & VRING_DESC_F_INDIRECT))
			return fail(vq, "nested indirect table");
		if (tf & VRING_DESC_F_WRITE) {
			ret = map_buffer(vq, ta, tl, iov, &ch->niov, max_iov);
			if (ret < 0)
				return ret;
			ch->seen_write = true;
			ch->in_len += tl;
		} else {
			if (ch->seen_write)
				return fail(vq, "readable descriptor after writable");
			ret = map_buffer(vq, ta, tl, iov, &ch->niov, max_iov);
			if (ret < 0)
				return ret;
			elem->out_num = ch->niov;
			ch->out_len += tl;
		}
	}
	return table || !(flags & VRING_DESC_F_NEXT);
}

static void packed_elem(struct vd_vq_elem *elem, const struct packed_chain *ch, uint16_t id,
			unsigned count)
{
	elem->head = id;
	elem->ndescs = (uint16_t)count;
	elem->in_num = ch->niov - elem->out_num;
	elem->out_len = ch->out_len;
	elem->in_len = ch->in_len;
}

/*
 * A chain a previous back end took and did not finish, from the copy the
 * inflight region keeps of its descriptors (the ring slots may hold other
 * descriptors by now).  vd_vq_set_inflight() checked the chain's links; the
 * descriptors themselves are checked here, as the ring's are.
 */
static int packed_resubmit_pop(struct vd_vq *vq, struct vd_vq_elem *elem, struct iovec *iov,
			       unsigned max_iov)
{
	uint16_t head = vq->resubmit[vq->resubmit_pos], entry = head;
	struct packed_chain ch = {0};
	unsigned count = 0;
	int ret;

	if (vq->inuse >= vq->num)
		return fail(vq, "virtqueue size exceeded");
	elem->out_num = 0;
	for (;;) {
		const uint8_t *e = packed_entry(vq, entry);

		if (++count > vq->num)
			return fail(vq, "inflight chain longer than the ring");
		ret = packed_map_desc(vq, ld64(e + PACKED_E_ADDR), ld32(e + PACKED_E_LEN),
				      ld16(e + PACKED_E_FLAGS), elem, &ch, iov, max_iov);
		if (ret < 0)
			return ret;
		if (entry == vq->entry_last[head])
			break;
		if (ret)
			return fail(vq, "inflight chain ends before its last entry");
		entry = vq->entry_next[entry];
		if (entry >= vq->num)
			return fail(vq, "inflight chain ends before its last entry");
	}
	if (!ret)
		return fail(vq, "inflight chain goes on past its last entry");
	packed_elem(elem, &ch, vq->entry_id[head], count);
	packed_inflight_insert(vq, head);
	vq->resubmit_pos++;
	vq->inuse++;
	return 1;
}

static int packed_pop(struct vd_vq *vq, struct vd_vq_elem *elem, struct iovec *iov,
		      unsigned max_iov)
{
	unsigned i = vq->last_avail_idx, count = 0;
	bool wrap = vq->avail_wrap;
	struct packed_chain ch = {0};
	uint16_t id = 0, entry = vq->free_head, last = entry;
	int ret;

	if (vq->resubmit_pos < vq->resubmit_num)
		return packed_resubmit_pop(vq, elem, iov, max_iov);
	if (!packed_desc_avail(vq, i, wrap))
		return 0;
	if (vq->inuse >= vq->num)
		return fail(vq, "virtqueue size exceeded");
	elem->out_num = 0;
	do {
		const uint8_t *d = vq->desc + 16 * (size_t)i;
		uint64_t addr = ld64(d);
		uint32_t len = ld32(d + 8);
		uint16_t flags = ld16(d + 14);

		id = ld16(d + 12);
		if (++count > vq->num)
			return fail(vq, "descriptor chain longer than the ring");
		if (vq->inflight) {
			/* One free entry per descriptor in flight: only a
			 * driver that offers slots again before they were used
			 * runs out. */
			if (entry >= vq->num)
				return fail(vq, "more descriptors in flight than the ring holds");
			packed_inflight_record(vq, entry, addr, len, id, flags);
			last = entry;
			entry = vq->entry_next[entry];
		}
		ret = packed_map_desc(vq, addr, len, flags, elem, &ch, iov, max_iov);
		if (ret < 0)
			return ret;
		if (++i >= vq->num) {
			i = 0;
			wrap = !wrap;
		}
	} while (!ret);
	packed_elem(elem, &ch, id, count);
	if (vq->inflight)
		packed_inflight_take(vq, vq->free_head, last, entry, count, id);
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
	uint16_t flags = len ? VRING_DESC_F_WRITE : 0, used_idx;
	uint16_t head = VD_VQ_INFLIGHT_NONE;
	bool used_wrap = vq->used_wrap;

	if (ndescs == 0 || ndescs > vq->num)
		ndescs = 1;
	used_idx = (uint16_t)(vq->used_idx + ndescs);
	if (used_idx >= vq->num) {
		used_idx = (uint16_t)(used_idx - vq->num);
		used_wrap = !used_wrap;
	}
	/* vhost-user.rst, "When supplying used buffers": the region says the
	 * chain is free and where the used index goes before the driver can
	 * see the used descriptor. */
	if (vq->inflight)
		head = packed_inflight_put(vq, id, used_idx, used_wrap);
	if (vq->used_wrap)
		flags |= VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
	st32(d + 8, len);
	st16(d + 12, id);
	/* 2.8.21: id and len are visible before the flags that publish them. */
	__atomic_store_n((uint16_t *)(d + 14), htole16(flags), __ATOMIC_RELEASE);
	vq->used_idx = used_idx;
	vq->used_wrap = used_wrap;
	if (vq->inflight)
		packed_inflight_commit(vq, head);
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
		st16(vq->inflight + SPLIT_LAST_BATCH_HEAD, head);
	st32(e, head);
	st32(e + 4, len);
	vq->used_idx++;
	/* 2.7.8: the entry is visible before the index that covers it. */
	store_idx(vq->used + 2, vq->used_idx);
	if (vq->inflight && head < vq->num) {
		__atomic_store_n(vq->inflight + SPLIT_HDR + SPLIT_ENTRY * (size_t)head, 0,
				 __ATOMIC_RELEASE);
		store_idx(vq->inflight + SPLIT_USED_IDX, vq->used_idx);
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

/* --- inflight tracking (vhost-user.rst "Inflight I/O tracking") ----------- */

size_t vd_vq_inflight_size(unsigned num, bool packed)
{
	if (packed)
		return (PACKED_HDR + PACKED_ENTRY * (size_t)num + 63) & ~(size_t)63;
	return (SPLIT_HDR + SPLIT_ENTRY * (size_t)num + 63) & ~(size_t)63;
}

size_t vd_vq_inflight_state_len(unsigned num)
{
	/* resubmit, entry_next, entry_last, entry_id, id_next, id_bucket */
	return 6 * (size_t)num;
}

/* Region stores a back end killed at any point must leave in program
 * order (the region outlives us; the front end does not read it while we
 * run). */
static void region_st8(uint8_t *p, uint8_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static void region_st16(uint8_t *p, uint16_t v)
{
	__atomic_store_n((uint16_t *)p, htole16(v), __ATOMIC_RELEASE);
}

/* --- split rings: a flag and a counter per head --- */

static void inflight_set(struct vd_vq *vq, uint16_t head)
{
	uint8_t *d = vq->inflight + SPLIT_HDR + SPLIT_ENTRY * (size_t)head;

	st64(d + SPLIT_E_COUNTER, vq->inflight_counter++);
	__atomic_store_n(d + SPLIT_E_INFLIGHT, 1, __ATOMIC_RELEASE);
}

static int split_set_inflight(struct vd_vq *vq, uint8_t *h, uint16_t *resubmit)
{
	uint8_t *ent = h + SPLIT_HDR;
	uint16_t used_idx = load_idx(vq->used + 2);
	uint64_t max_counter = 0;
	unsigned n = 0;

	if (ld16(h + INFLIGHT_VERSION_OFF) != INFLIGHT_VERSION ||
	    ld16(h + INFLIGHT_DESC_NUM) != vq->num) {
		/* A fresh region (version 0) or one for another ring size:
		 * nothing to recover. */
		memset(ent, 0, SPLIT_ENTRY * (size_t)vq->num);
		st16(h + INFLIGHT_DESC_NUM, (uint16_t)vq->num);
		st16(h + SPLIT_LAST_BATCH_HEAD, 0);
		st16(h + SPLIT_USED_IDX, used_idx);
		region_st16(h + INFLIGHT_VERSION_OFF, INFLIGHT_VERSION);
		vq->inflight = h;
		vq->inflight_counter = 0;
		vq->resubmit = resubmit;
		return 0;
	}
	/* The previous back end published used.idx but died before clearing
	 * its last batch: that head is done. */
	if (ld16(h + SPLIT_USED_IDX) != used_idx) {
		uint16_t last = ld16(h + SPLIT_LAST_BATCH_HEAD);

		if (last < vq->num)
			ent[SPLIT_ENTRY * (size_t)last + SPLIT_E_INFLIGHT] = 0;
		st16(h + SPLIT_USED_IDX, used_idx);
	}
	for (unsigned i = 0; i < vq->num; i++) {
		uint8_t *d = ent + SPLIT_ENTRY * (size_t)i;
		uint64_t counter = ld64(d + SPLIT_E_COUNTER);
		unsigned j;

		if (d[SPLIT_E_INFLIGHT] != 1) {
			d[SPLIT_E_INFLIGHT] = 0;
			continue;
		}
		if (counter >= max_counter)
			max_counter = counter + 1;
		/* Oldest first: insertion by counter. */
		for (j = n; j > 0 && ld64(ent + SPLIT_ENTRY * (size_t)resubmit[j - 1] +
					  SPLIT_E_COUNTER) > counter;
		     j--)
			resubmit[j] = resubmit[j - 1];
		resubmit[j] = (uint16_t)i;
		n++;
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

/*
 * --- packed rings: copies of the descriptors taken, in chains of entries --
 *
 * The free list and each chain in flight are linked through the entries'
 * next fields; a chain's head entry has its length (num), last entry and
 * counter.  We keep the links in back-end memory too (vq->entry_*) and only
 * write them to the region while the ring runs.
 *
 * Taking a chain fills free entries from free_head on, then makes the head
 * in flight and moves free_head and old_free_head past the chain; a back
 * end killed before old_free_head moved leaves a chain the next one rolls
 * back to the free list, where the head's flag is cleared (and the ring
 * still offers the chain: it is taken again).
 *
 * Completing a chain puts it back on the free list and moves used_idx and
 * used_wrap_counter, then publishes the used descriptor, then clears the
 * head's flag, then copies the three into their old_* fields: until then a
 * new back end decides from the ring (is the descriptor at old_used_idx
 * still the one the driver made available?) whether to commit or roll back.
 * The stores are ordered so that every point in between is one of the two:
 * used_wrap_counter before used_idx and old_used_wrap_counter before
 * old_used_idx, so that a half-written pair never looks like a completion
 * of its own; see packed_lap_distance().
 */

static uint8_t *packed_entry_mut(const struct vd_vq *vq, uint16_t entry)
{
	return vq->inflight + PACKED_HDR + PACKED_ENTRY * (size_t)entry;
}

static const uint8_t *packed_entry(const struct vd_vq *vq, uint16_t entry)
{
	return packed_entry_mut(vq, entry);
}

/* A descriptor of a chain being taken, into the free entry @entry. */
static void packed_inflight_record(struct vd_vq *vq, uint16_t entry, uint64_t addr, uint32_t len,
				   uint16_t id, uint16_t flags)
{
	uint8_t *e = packed_entry_mut(vq, entry);

	st16(e + PACKED_E_ID, id);
	st16(e + PACKED_E_FLAGS, flags);
	st32(e + PACKED_E_LEN, len);
	st64(e + PACKED_E_ADDR, addr);
}

/* Chains handed out, by buffer id (push names them so). */
static void packed_inflight_insert(struct vd_vq *vq, uint16_t head)
{
	uint16_t b = vq->entry_id[head] & (uint16_t)(vq->num - 1);

	vq->id_next[head] = vq->id_bucket[b];
	vq->id_bucket[b] = head;
}

/* The chain of @count entries from @head to @last was taken (all of it
 * checked and mapped); @next_free is the entry after it. */
static void packed_inflight_take(struct vd_vq *vq, uint16_t head, uint16_t last, uint16_t next_free,
				 unsigned count, uint16_t id)
{
	uint8_t *e = packed_entry_mut(vq, head);

	st16(e + PACKED_E_LAST, last);
	st16(e + PACKED_E_NUM, (uint16_t)count);
	st64(e + PACKED_E_COUNTER, vq->inflight_counter++);
	region_st8(e + PACKED_E_INFLIGHT, 1);
	region_st16(vq->inflight + PACKED_FREE_HEAD, next_free);
	region_st16(vq->inflight + PACKED_OLD_FREE_HEAD, next_free);
	vq->free_head = next_free;
	vq->entry_last[head] = last;
	vq->entry_id[head] = id;
	packed_inflight_insert(vq, head);
}

/* The chain with buffer @id completes: back on the free list, and the used
 * index moves.  Returns its head entry, or VD_VQ_INFLIGHT_NONE if no chain
 * handed out has that id (then only the index moves). */
static uint16_t packed_inflight_put(struct vd_vq *vq, uint16_t id, uint16_t used_idx,
				    bool used_wrap)
{
	uint16_t *link = &vq->id_bucket[id & (uint16_t)(vq->num - 1)];
	uint16_t head = *link;

	while (head != VD_VQ_INFLIGHT_NONE && vq->entry_id[head] != id) {
		link = &vq->id_next[head];
		head = *link;
	}
	if (head != VD_VQ_INFLIGHT_NONE) {
		uint16_t last = vq->entry_last[head];

		*link = vq->id_next[head];
		vq->entry_next[last] = vq->free_head;
		region_st16(packed_entry_mut(vq, last) + PACKED_E_NEXT, vq->free_head);
		region_st16(vq->inflight + PACKED_FREE_HEAD, head);
		vq->free_head = head;
	}
	region_st8(vq->inflight + PACKED_USED_WRAP, used_wrap);
	region_st16(vq->inflight + PACKED_USED_IDX, used_idx);
	return head;
}

/* The used descriptor is published: the completion is final. */
static void packed_inflight_commit(struct vd_vq *vq, uint16_t head)
{
	if (head != VD_VQ_INFLIGHT_NONE)
		region_st8(packed_entry_mut(vq, head) + PACKED_E_INFLIGHT, 0);
	region_st16(vq->inflight + PACKED_OLD_FREE_HEAD, vq->free_head);
	region_st8(vq->inflight + PACKED_OLD_USED_WRAP, vq->used_wrap);
	region_st16(vq->inflight + PACKED_OLD_USED_IDX, vq->used_idx);
}

/*
 * How far the used position (@idx, @wrap) is ahead of (@old_idx,
 * @old_wrap), in ring slots, 0 .. 2 * num - 1 (a position and its wrap
 * counter name a slot in a cycle of two laps).  A completion in progress
 * is 1 .. num ahead.  A distance past num is a completion whose old_*
 * fields were half copied (old_used_wrap_counter first): it was published.
 */
static unsigned packed_lap_distance(unsigned num, uint16_t idx, bool wrap, uint16_t old_idx,
				    bool old_wrap)
{
	unsigned pos = idx + (wrap ? 0 : num), old = old_idx + (old_wrap ? 0 : num);

	return (pos + 2 * num - old) % (2 * num);
}

/* Is the descriptor at @slot no longer what the driver made available in
 * the lap of @wrap (2.8.1): did a used descriptor reach it? */
static bool packed_slot_used(const struct vd_vq *vq, uint16_t slot, bool wrap)
{
	uint16_t f = ld16(vq->desc + 16 * (size_t)slot + 14);
	uint16_t avail = wrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;

	return (f & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) != avail;
}

static void packed_inflight_init(struct vd_vq *vq, uint8_t *h)
{
	memset(h + PACKED_HDR, 0, PACKED_ENTRY * (size_t)vq->num);
	for (unsigned i = 0; i < vq->num; i++) {
		st16(h + PACKED_HDR + PACKED_ENTRY * (size_t)i + PACKED_E_NEXT, (uint16_t)(i + 1));
		vq->entry_next[i] = (uint16_t)(i + 1);
	}
	st64(h, 0);
	st16(h + INFLIGHT_DESC_NUM, (uint16_t)vq->num);
	st16(h + PACKED_FREE_HEAD, 0);
	st16(h + PACKED_OLD_FREE_HEAD, 0);
	st16(h + PACKED_USED_IDX, vq->used_idx);
	st16(h + PACKED_OLD_USED_IDX, vq->used_idx);
	h[PACKED_USED_WRAP] = h[PACKED_OLD_USED_WRAP] = vq->used_wrap;
	/* Last: a back end killed before this finds version 0 again. */
	region_st16(h + INFLIGHT_VERSION_OFF, INFLIGHT_VERSION);
	vq->free_head = 0;
}

/*
 * "When reconnecting", for a region some back end filled: check that it
 * holds together, commit or roll back a completion cut short, and queue
 * the chains in flight.  Everything is read and checked before anything is
 * written, so a region we refuse is left as it was.  The number of chains
 * queued, or -EINVAL.
 */
static int packed_inflight_recover(struct vd_vq *vq, uint8_t *h)
{
	const unsigned num = vq->num;
	uint8_t seen[VD_VQ_MAX_SIZE / 8] = {0};
	uint16_t free_head = ld16(h + PACKED_FREE_HEAD);
	uint16_t old_free_head = ld16(h + PACKED_OLD_FREE_HEAD);
	uint16_t used_idx = ld16(h + PACKED_USED_IDX), old_used_idx = ld16(h + PACKED_OLD_USED_IDX);
	uint8_t used_wrap = h[PACKED_USED_WRAP], old_used_wrap = h[PACKED_OLD_USED_WRAP];
	uint64_t max_counter = 0;
	unsigned nseen = 0, n = 0, slots = 0, dist;
	bool commit, rollback;

	if (used_idx >= num || old_used_idx >= num || used_wrap > 1 || old_used_wrap > 1 ||
	    free_head > num || old_free_head > num)
		return -EINVAL;
	/* Step 1: a completion in progress whose used descriptor reached the
	 * ring is committed; step 2: anything else in progress (a chain being
	 * taken, a completion not published) is rolled back. */
	dist = packed_lap_distance(num, used_idx, used_wrap, old_used_idx, old_used_wrap);
	commit = dist > num || (dist > 0 && packed_slot_used(vq, old_used_idx, old_used_wrap));
	rollback = !commit && (dist > 0 || free_head != old_free_head);
	if (commit) {
		old_free_head = free_head;
		old_used_idx = used_idx;
		old_used_wrap = used_wrap;
	} else {
		free_head = old_free_head;
		used_idx = old_used_idx;
		used_wrap = old_used_wrap;
	}
	/* Step 3: the free list, each entry at most once. */
	for (uint16_t e = free_head; e < num; e = vq->entry_next[e]) {
		if (seen[e / 8] & (1u << (e % 8)))
			return -EINVAL;
		seen[e / 8] |= (uint8_t)(1u << (e % 8));
		nseen++;
		/* Read once: the list is walked again below from our copy. */
		vq->entry_next[e] = ld16(h + PACKED_HDR + PACKED_ENTRY * (size_t)e + PACKED_E_NEXT);
		if (vq->entry_next[e] > num)
			return -EINVAL;
	}
	/* Step 4: every other entry belongs to exactly one chain in flight,
	 * which ends at its head's last entry after num entries. */
	for (uint16_t i = 0; i < num; i++) {
		const uint8_t *hd = h + PACKED_HDR + PACKED_ENTRY * (size_t)i;
		uint16_t count, last, e = i, flags;
		uint64_t counter;
		unsigned j;

		if (seen[i / 8] & (1u << (i % 8)) || hd[PACKED_E_INFLIGHT] == 0)
			continue;
		if (hd[PACKED_E_INFLIGHT] != 1)
			return -EINVAL;
		count = ld16(hd + PACKED_E_NUM);
		last = ld16(hd + PACKED_E_LAST);
		if (count == 0 || count > num || last >= num)
			return -EINVAL;
		for (unsigned k = 0;; k++) {
			const uint8_t *d = h + PACKED_HDR + PACKED_ENTRY * (size_t)e;

			/* Only heads are ever in flight. */
			if (seen[e / 8] & (1u << (e % 8)) || (k > 0 && d[PACKED_E_INFLIGHT] != 0))
				return -EINVAL;
			seen[e / 8] |= (uint8_t)(1u << (e % 8));
			nseen++;
			flags = ld16(d + PACKED_E_FLAGS);
			vq->entry_next[e] = ld16(d + PACKED_E_NEXT);
			if (k + 1 == count) {
				/* Linked when the chain is freed. */
				vq->entry_next[e] = (uint16_t)num;
				break;
			}
			/* Inside a chain: NEXT, and no indirect table
			 * (2.8.19: an indirect descriptor ends its chain). */
			if (!(flags & VRING_DESC_F_NEXT) || (flags & VRING_DESC_F_INDIRECT) ||
			    vq->entry_next[e] >= num)
				return -EINVAL;
			e = vq->entry_next[e];
		}
		if (e != last || (flags & VRING_DESC_F_NEXT))
			return -EINVAL;
		vq->entry_last[i] = last;
		vq->entry_id[i] = ld16(h + PACKED_HDR + PACKED_ENTRY * (size_t)last + PACKED_E_ID);
		counter = ld64(hd + PACKED_E_COUNTER);
		if (counter >= max_counter)
			max_counter = counter + 1;
		/* Oldest first: insertion by counter. */
		for (j = n;
		     j > 0 && ld64(h + PACKED_HDR + PACKED_ENTRY * (size_t)vq->resubmit[j - 1] +
				   PACKED_E_COUNTER) > counter;
		     j--)
			vq->resubmit[j] = vq->resubmit[j - 1];
		vq->resubmit[j] = i;
		n++;
		slots += count;
	}
	if (nseen != num)
		return -EINVAL; /* an entry on no list: it would be lost */

	/* The region holds together: write the outcome, in an order a back
	 * end killed here leaves recoverable the same way. */
	if (rollback) {
		/* used_idx before used_wrap_counter: half done, this is still
		 * a completion in progress (distance num at most). */
		region_st16(h + PACKED_FREE_HEAD, free_head);
		region_st16(h + PACKED_USED_IDX, used_idx);
		region_st8(h + PACKED_USED_WRAP, used_wrap);
	} else if (commit) {
		/* As packed_inflight_commit(). */
		region_st16(h + PACKED_OLD_FREE_HEAD, old_free_head);
		region_st8(h + PACKED_OLD_USED_WRAP, old_used_wrap);
		region_st16(h + PACKED_OLD_USED_IDX, old_used_idx);
	}
	/* Step 3 proper: nothing on the free list is in flight. */
	for (uint16_t e = free_head; e < num; e = vq->entry_next[e])
		region_st8(packed_entry_mut(vq, e) + PACKED_E_INFLIGHT, 0);
	vq->free_head = free_head;
	vq->inflight_counter = max_counter;
	vq->resubmit_num = n;
	/* The chains in flight fill the slots from the used index on: the
	 * next one to take comes after them. */
	vq->used_idx = used_idx;
	vq->used_wrap = used_wrap;
	vq->last_avail_idx = (uint16_t)(used_idx + slots);
	vq->avail_wrap = used_wrap;
	if (vq->last_avail_idx >= num) {
		vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - num);
		vq->avail_wrap = !vq->avail_wrap;
	}
	vq->inuse = 0;
	vq->signalled_used_valid = false;
	return (int)n;
}

static int packed_set_inflight(struct vd_vq *vq, uint8_t *h, uint16_t *state)
{
	const unsigned num = vq->num;
	int n = 0;

	vq->resubmit = state;
	vq->entry_next = state + num;
	vq->entry_last = state + 2 * num;
	vq->entry_id = state + 3 * num;
	vq->id_next = state + 4 * num;
	vq->id_bucket = state + 5 * num;
	vq->inflight = h; /* packed_entry() */
	if (vq->used_idx >= num || vq->last_avail_idx >= num) {
		n = -EINVAL;
	} else if (ld16(h + INFLIGHT_VERSION_OFF) != INFLIGHT_VERSION ||
		   ld16(h + INFLIGHT_DESC_NUM) != num) {
		/* A fresh region (version 0) or one for another ring size:
		 * nothing to recover. */
		packed_inflight_init(vq, h);
		vq->inflight_counter = 0;
	} else {
		n = packed_inflight_recover(vq, h);
	}
	if (n < 0) {
		vq->inflight = NULL;
		vq->resubmit_num = 0;
		return n;
	}
	for (unsigned i = 0; i < num; i++)
		vq->id_bucket[i] = VD_VQ_INFLIGHT_NONE;
	return n;
}

int vd_vq_set_inflight(struct vd_vq *vq, void *region, size_t size, uint16_t *state)
{
	vq->inflight = NULL;
	vq->resubmit = NULL;
	vq->resubmit_num = vq->resubmit_pos = 0;
	vq->entry_next = vq->entry_last = vq->entry_id = vq->id_next = vq->id_bucket = NULL;
	if (!region)
		return 0;
	if (!state || !vq->num || !vq->desc || !vq->avail || !vq->used ||
	    size < vd_vq_inflight_size(vq->num, vq->packed))
		return -EINVAL;
	if (vq->packed)
		return packed_set_inflight(vq, region, state);
	return split_set_inflight(vq, region, state);
}
