/* SPDX-License-Identifier: MIT */
/*
 * Virtqueues (virtio 1.2 sections 2.7 and 2.8: split and packed rings) over
 * an abstract guest memory, shared by every virtio transport: the emulated
 * machine's RAM and a vhost-user front end's memory table.
 *
 * The transport maps the three ring areas itself (it knows whether their
 * addresses are guest-physical or front-end virtual) and hands host pointers
 * to vd_vq_set_rings().  Buffer addresses inside descriptors (and indirect
 * tables) are guest-physical and go through struct vd_virtio_mem.
 *
 * Everything the guest wrote is untrusted: indices, lengths, addresses, flags.
 * A violation of the ring protocol (a descriptor loop, an index out of range,
 * a readable descriptor after a writable one, an unmappable buffer, a zero or
 * huge length, a nested indirect table) marks the queue broken: vd_vq_pop()
 * returns -EIO from then on, and the device enters NEEDS_RESET (virtio 1.2
 * section 2.1.2).  Nothing the guest writes makes this code crash.
 *
 * Threading: a queue is used from one thread (its device's loop).
 */
#ifndef VDISK_VIRTIO_H
#define VDISK_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Feature bits (virtio 1.2 section 6 and 5.2.3). */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29
#define VIRTIO_F_VERSION_1 32
#define VIRTIO_F_RING_PACKED 34

/* Device status bits (section 2.1). */
#define VIRTIO_STATUS_NEEDS_RESET 64

/* Split-ring descriptor flags (section 2.7.5). */
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_DESC_F_INDIRECT 4
/* Packed-ring descriptor flags and event suppression (section 2.8). */
#define VRING_PACKED_DESC_F_AVAIL (1u << 7)
#define VRING_PACKED_DESC_F_USED (1u << 15)
#define VRING_PACKED_EVENT_FLAG_ENABLE 0
#define VRING_PACKED_EVENT_FLAG_DISABLE 1
#define VRING_PACKED_EVENT_FLAG_DESC 2
/* used.flags / avail.flags (sections 2.7.7, 2.7.10). */
#define VRING_USED_F_NO_NOTIFY 1
#define VRING_AVAIL_F_NO_INTERRUPT 1

/* Largest queue we accept (QEMU's VIRTQUEUE_MAX_SIZE). */
#define VD_VQ_MAX_SIZE 1024
/* Most iovec entries one element may map to (descriptors can split at RAM
 * region boundaries). */
#define VD_VQ_MAX_IOV 1088

/* Ring layout sizes for a queue of @num entries (section 2.7). */
static inline size_t vd_vring_desc_size(unsigned num)
{
	return 16 * (size_t)num;
}
static inline size_t vd_vring_avail_size(unsigned num)
{
	return 6 + 2 * (size_t)num; /* flags, idx, ring[num], used_event */
}
static inline size_t vd_vring_used_size(unsigned num)
{
	return 6 + 8 * (size_t)num; /* flags, idx, ring[num], avail_event */
}
/* Packed: the descriptor ring is vd_vring_desc_size(); both event
 * suppression areas are 4 bytes. */
#define VD_VRING_PACKED_EVENT_SIZE 4

/*
 * Guest memory.  @map returns a host pointer for guest-physical @addr and
 * shortens *len to the bytes that are contiguous from there (at least 1), or
 * returns NULL if @addr is not guest RAM.  It must not fail for any other
 * reason and must not wrap past 2^64.
 */
struct vd_virtio_mem {
	void *(*map)(void *opaque, uint64_t addr, uint64_t *len);
	void *opaque;
};

/* The emulated machine's guest RAM (hw/virtio/virtio-mem.c): @as is the
 * memory address space; only RAM is mapped. */
struct vd_address_space;
void vd_virtio_mem_init_as(struct vd_virtio_mem *mem, struct vd_address_space *as);

/* Map exactly [addr, addr + len) contiguously, or NULL. */
void *vd_virtio_mem_map_all(const struct vd_virtio_mem *mem, uint64_t addr, uint64_t len);

struct vd_vq {
	unsigned num; /* 0: not set up */
	/* Host pointers of the rings (little-endian layout, section 2.7). */
	uint8_t *desc, *avail, *used;
	const struct vd_virtio_mem *mem;
	bool event_idx, indirect;
	bool packed; /* section 2.8: desc = ring, avail = driver area, used =
		      * device area (4 bytes each) */
	bool avail_wrap, used_wrap; /* packed wrap counters */
	bool broken;
	uint16_t last_avail_idx; /* next avail entry to take */
	uint16_t used_idx; /* shadow of used.idx */
	uint16_t signalled_used; /* used.idx at the last notification */
	bool signalled_used_valid;
	bool notification; /* kicks wanted (vd_vq_set_notification) */
	unsigned inuse; /* popped and not yet pushed */
	const char *error; /* why it broke (static string) */
	/* vhost-user inflight tracking: see vd_vq_set_inflight().  The
	 * queue's region, NULL: off. */
	uint8_t *inflight;
	uint64_t inflight_counter;
	/* To take again, oldest first: split heads, packed region entries. */
	uint16_t *resubmit;
	unsigned resubmit_num, resubmit_pos;
	/* Packed: the region's free list and in-flight chains, mirrored in
	 * back-end memory so that the region (the front end can write it) is
	 * only written while the ring runs.  Per region entry: next link,
	 * last entry and buffer id of a chain it heads, next chain in its id
	 * bucket; bucket heads by id & (num - 1).  num ends entry_next lists
	 * (free_head == num: no free entry), VD_VQ_INFLIGHT_NONE id lists. */
	uint16_t *entry_next, *entry_last, *entry_id, *id_next, *id_bucket;
	uint16_t free_head;
};

#define VD_VQ_INFLIGHT_NONE 0xffff

/* One request popped from the ring: out (device-readable) buffers first,
 * then in (device-writable) ones, in the caller's iovec array. */
struct vd_vq_elem {
	uint16_t head; /* split: head index; packed: buffer id */
	uint16_t ndescs; /* ring slots the chain used (packed) */
	unsigned out_num, in_num;
	uint64_t out_len, in_len; /* bytes */
};

/* Set up (or take down with num 0) a queue.  @num must be a power of two
 * up to VD_VQ_MAX_SIZE.  Resets the indices to 0.  Call
 * vd_vq_set_features() before vd_vq_set_rings() and vd_vq_set_base() (the
 * ring layout depends on RING_PACKED). */
int vd_vq_init(struct vd_vq *vq, unsigned num, const struct vd_virtio_mem *mem);
void vd_vq_set_rings(struct vd_vq *vq, void *desc, void *avail, void *used);
/* Also stops inflight tracking if RING_PACKED changes. */
void vd_vq_set_features(struct vd_vq *vq, uint64_t features);
/* Where to start: vhost-user SET_VRING_BASE.  Split: the next avail index
 * (the used index is read from the ring).  Packed: bits 0-14 next avail
 * slot, 15 its wrap counter, 16-31 the same for the used side. */
void vd_vq_set_base(struct vd_vq *vq, uint32_t base);
/* The same encoding back (GET_VRING_BASE). */
uint32_t vd_vq_get_base(const struct vd_vq *vq);
bool vd_vq_ready(const struct vd_vq *vq);

/*
 * Take the next available element, mapping its buffers into @iov (capacity
 * @max_iov).  Returns 1 with *elem filled, 0 if the ring is empty, -EIO if
 * the queue is (or just became) broken, -ENOBUFS if more than @max_iov
 * entries would be needed (also breaks the queue).
 */
int vd_vq_pop(struct vd_vq *vq, struct vd_vq_elem *elem, struct iovec *iov, unsigned max_iov);
/* Return an element: used entry {head, len}, then used.idx (section 2.7.8);
 * packed: one used descriptor, @ndescs slots skipped (2.8.7). */
void vd_vq_push(struct vd_vq *vq, uint16_t head, uint16_t ndescs, uint32_t len);
/* Should the driver be notified now (section 2.7.10: event index or
 * NO_INTERRUPT)?  Updates the event-index state: call once per
 * notification decision and notify when true. */
bool vd_vq_should_notify(struct vd_vq *vq);
/* Ask for kicks (or suppress them): used.flags NO_NOTIFY or avail_event. */
void vd_vq_set_notification(struct vd_vq *vq, bool enable);
/* True if avail.idx != last_avail_idx. */
bool vd_vq_has_work(struct vd_vq *vq);
/* Mark broken (a device-level protocol violation). */
void vd_vq_set_broken(struct vd_vq *vq, const char *why);

/*
 * Inflight I/O tracking (QEMU docs/interop/vhost-user.rst, "Inflight I/O
 * tracking"): a region per queue, shared with the front end, that survives
 * a back end that dies: a new one finds there the requests it must process
 * again.  Two layouts, chosen by VIRTIO_F_RING_PACKED:
 *
 * split   a 16-byte header {le64 features, le16 version, le16 desc_num, le16
 *         last_batch_head, le16 used_idx} then desc_num 16-byte entries {u8
 *         inflight, u8 pad[5], le16 next, le64 counter}, one per head;
 * packed  a 32-byte header {le64 features, le16 version, le16 desc_num, le16
 *         free_head, le16 old_free_head, le16 used_idx, le16 old_used_idx, u8
 *         used_wrap_counter, u8 old_used_wrap_counter, pad} then desc_num
 *         32-byte entries {u8 inflight, u8 pad, le16 next, le16 last, le16
 *         num, le64 counter, le16 id, le16 flags, le32 len, le64 addr}: a
 *         copy of every descriptor taken, in a chain of entries taken from a
 *         free list; the old_* fields commit a completion at once.
 *
 * Size of one queue's region (a multiple of 64 bytes, as libvhost-user and
 * DPDK lay queues out):
 */
size_t vd_vq_inflight_size(unsigned num, bool packed);
/* Back-end memory that tracking a queue of @num entries needs, in uint16_t
 * entries (the caller allocates it, once, outside the I/O path). */
size_t vd_vq_inflight_state_len(unsigned num);
/*
 * Start tracking queue @vq (features and rings set) in @region (@size bytes,
 * at least vd_vq_inflight_size(vq->num, vq->packed)), and recover what a
 * previous back end left there.  @state: vd_vq_inflight_state_len(vq->num)
 * entries of caller-owned memory, kept until tracking stops.
 *
 * A region of version 0 (new) or for another ring size is initialised, and
 * the indices stay as SET_VRING_BASE put them.  Otherwise, as the spec's
 * "When reconnecting" steps say: split, the last batch of used entries is
 * reconciled with used.idx, the heads still marked in flight are queued and
 * the next avail index becomes used.idx plus their count (libvhost-user's
 * vu_check_queue_inflights); packed, a completion cut short is committed
 * if its used descriptor reached the ring and rolled back otherwise, entries
 * on the free list are no longer in flight, the chains still in flight are
 * queued, and the used index, wrap counter and next avail slot come from
 * the region (a front end has no other record of them for a packed ring).
 * vd_vq_pop() returns the queued requests first, oldest (lowest counter)
 * first.
 *
 * The region is the front end's: a packed region whose header or lists do
 * not hold together (index out of range, loop, an entry on two lists or on
 * none, a chain that does not end where it says) is refused.  Returns the
 * number of requests queued, or -EINVAL (region refused, too small, no
 * rings): tracking stays off.  A NULL @region turns tracking off (0).
 */
int vd_vq_set_inflight(struct vd_vq *vq, void *region, size_t size, uint16_t *state);

#ifdef __cplusplus
}
#endif

#endif
