/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for virtqueues (hw/virtio/virtqueue.c) and virtio-blk request
 * parsing (hw/virtio/virtio-blk.c): the input is a small header and then the
 * contents of a fake guest memory holding the rings, indirect tables,
 * request headers and buffers.
 *
 *   byte 0   bit 0 packed ring, bit 1 INDIRECT_DESC, bit 2 EVENT_IDX,
 *            bit 3 through virtio-blk (null-co node) instead of raw pop/push,
 *            bit 4 an inflight region (vhost-user, in the layout of
 *            the ring: split or packed) from the input,
 *            bit 5 read-only device,
 *            bit 6 (raw pops, with bit 4) a back end killed: the first
 *            pass leaves every other request in flight, then a new queue
 *            starts over from the region and the rings
 *   byte 1   log2 of the queue size (mod 8: 1..128 entries)
 *   byte 2   max_iov for raw pops (0: VD_VQ_MAX_IOV)
 *   bytes 3-6  SET_VRING_BASE value
 *   bytes 7-8  added to avail.idx between the two passes
 *   then     guest memory: two RAM regions of 32 KiB at guest-physical
 *            0x1000 and 0x9000 (so a buffer may span both), the input fills
 *            them from the start; the rings sit at the start of the first
 *            (descriptors at 0, driver area at 0x800, device area at 0xc00);
 *            with bit 4 the inflight region comes first from the input.
 *
 * Invariants: no crash; every mapped buffer lies inside guest RAM (each
 * region is its own allocation, so AddressSanitizer also catches a stray
 * access); a pop that fails leaves the queue broken with a reason, and
 * through virtio-blk a broken queue means NEEDS_RESET and the broken hook
 * ran; used entries name heads inside the ring; nothing stays in flight.
 * With an inflight region the queue took (the region held together), if
 * the queue did not break: a back end starting over from the region finds
 * nothing in flight, and a packed ring's indices where our used index is.
 * With bit 6: the new queue resubmits exactly the requests left in flight
 * (by buffer id and slot count; split rings: when their heads differ),
 * and a packed ring's used index is where the old queue left it.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/virtqueue/ (make
 * check); tests/fuzz/run-libfuzzer.sh virtqueue SECONDS runs a campaign.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/backend.h>
#include <vdisk/loop.h>
#include <vdisk/opts.h>
#include <vdisk/virtio-blk.h>
#include <vdisk/virtio.h>

#include "tests/fuzz/fuzz.h"

#define REGION_SIZE 0x8000
#define GPA0 0x1000
#define GPA1 0x9000
#define HDR 9

struct fake_mem {
	uint8_t *ram[2];
};

static void *fake_map(void *opaque, uint64_t addr, uint64_t *len)
{
	struct fake_mem *m = opaque;
	static const uint64_t base[2] = {GPA0, GPA1};

	for (int i = 0; i < 2; i++) {
		if (addr >= base[i] && addr - base[i] < REGION_SIZE) {
			uint64_t off = addr - base[i];

			if (*len > REGION_SIZE - off)
				*len = REGION_SIZE - off;
			return m->ram[i] + off;
		}
	}
	return NULL;
}

static bool in_ram(const struct fake_mem *m, const struct iovec *iov)
{
	for (int i = 0; i < 2; i++) {
		const uint8_t *p = iov->iov_base;

		if (p >= m->ram[i] && p < m->ram[i] + REGION_SIZE &&
		    iov->iov_len <= (size_t)(m->ram[i] + REGION_SIZE - p))
			return true;
	}
	return false;
}

struct blk_state {
	bool broken_called;
	unsigned notifies;
};

static void on_notify(void *opaque, unsigned q)
{
	((struct blk_state *)opaque)->notifies++;
}

static void on_broken(void *opaque, const char *why)
{
	FUZZ_ASSERT(why != NULL);
	((struct blk_state *)opaque)->broken_called = true;
}

static const struct vd_virtio_blk_ops blk_ops = {.notify = on_notify, .broken = on_broken};

/* A backend on a null-co node, read-only or not; kept for the process. */
static struct vd_blk *null_blk(bool read_only)
{
	static struct vd_blk *blks[2];
	struct vd_node *node = NULL;
	struct vd_error err = {0};
	struct vd_opts *o = NULL;

	if (blks[read_only])
		return blks[read_only];
	if (vd_opts_parse("driver=null-co,size=1M,read-zeroes=on", NULL, &o, &err) < 0)
		return NULL;
	if (vd_node_open_opts(o, read_only ? 0 : VD_OPEN_RDWR, &node, &err) == 0 &&
	    vd_blk_new(NULL, NULL, &blks[read_only]) == 0 &&
	    vd_blk_insert_node(blks[read_only], node) < 0) {
		vd_blk_unref(blks[read_only]);
		blks[read_only] = NULL;
	}
	if (node)
		vd_node_unref(node);
	vd_opts_free(o);
	return blks[read_only];
}

static void setup_queue(struct vd_vq *vq, unsigned num, struct vd_virtio_mem *mem,
			struct fake_mem *fm, uint64_t features, uint32_t base)
{
	vd_vq_init(vq, num, mem);
	vd_vq_set_features(vq, features);
	vd_vq_set_rings(vq, fm->ram[0], fm->ram[0] + 0x800, fm->ram[0] + 0xc00);
	vd_vq_set_base(vq, base);
}

static void raw_pass(struct vd_vq *vq, struct fake_mem *fm, struct iovec *iov, unsigned max_iov)
{
	struct vd_vq_elem e;
	int ret;

	/* At most num requests can be outstanding; stop well after. */
	for (unsigned n = 0; n < 2 * vq->num + 2; n++) {
		ret = vd_vq_pop(vq, &e, iov, max_iov);
		if (ret <= 0) {
			if (ret < 0)
				FUZZ_ASSERT(vq->broken && vq->error);
			return;
		}
		FUZZ_ASSERT(e.out_num + e.in_num <= max_iov);
		if (!vq->packed)
			FUZZ_ASSERT(e.head < vq->num);
		for (unsigned i = 0; i < e.out_num + e.in_num; i++)
			FUZZ_ASSERT(in_ram(fm, &iov[i]));
		/* Touch every byte: a wrong mapping shows up under ASan. */
		for (unsigned i = e.out_num; i < e.out_num + e.in_num; i++)
			memset(iov[i].iov_base, 0xa5, iov[i].iov_len);
		vd_vq_push(vq, e.head, e.ndescs, (uint32_t)e.in_len);
		vd_vq_should_notify(vq);
	}
}

/* Everything @vq took was completed: a new back end over the same region
 * (and the same rings) has nothing to resubmit, and a packed ring goes on
 * where @vq stopped. */
static void check_restart(struct vd_vq *vq, unsigned num, struct vd_virtio_mem *mem,
			  struct fake_mem *fm, uint64_t features, uint32_t base, uint8_t *inflight,
			  size_t inflight_size, uint16_t *state)
{
	struct vd_vq again;
	int n;

	if (!inflight || !vq->inflight || vq->broken)
		return;
	FUZZ_ASSERT(vq->inuse == 0);
	setup_queue(&again, num, mem, fm, features, base);
	n = vd_vq_set_inflight(&again, inflight, inflight_size, state);
	FUZZ_ASSERT(n == 0);
	if (vq->packed) {
		/* Nothing in flight: it takes the next request where the
		 * used index is. */
		FUZZ_ASSERT(again.used_idx == vq->used_idx && again.used_wrap == vq->used_wrap);
		FUZZ_ASSERT(again.last_avail_idx == vq->used_idx &&
			    again.avail_wrap == vq->used_wrap);
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_u16(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* Bit 6: pop, complete every other request and leave the rest in flight;
 * then a back end that starts over from the region must take those (and
 * the resubmissions @vq had not taken yet) first.  Split rings keep one
 * flag per head: only checked when no head was taken twice. */
static void killed_pass(struct vd_vq *vq, unsigned num, struct vd_virtio_mem *mem,
			struct fake_mem *fm, uint64_t features, uint32_t base, struct iovec *iov,
			unsigned max_iov, uint8_t *inflight, size_t inflight_size, uint16_t *state)
{
	static uint32_t left[128], again_ids[128];
	static uint16_t heads[2 * 128 + 2];
	struct vd_vq again;
	struct vd_vq_elem e;
	unsigned nleft = 0, nheads = 0, want;
	int ret;

	for (unsigned k = 0; k < 2 * vq->num + 2; k++) {
		ret = vd_vq_pop(vq, &e, iov, max_iov);
		if (ret <= 0) {
			if (ret < 0)
				FUZZ_ASSERT(vq->broken && vq->error);
			break;
		}
		for (unsigned i = 0; i < e.out_num + e.in_num; i++)
			FUZZ_ASSERT(in_ram(fm, &iov[i]));
		heads[nheads++] = e.head;
		if (k % 2 == 0) {
			FUZZ_ASSERT(nleft < 128);
			left[nleft++] = (uint32_t)e.head << 16 | e.ndescs;
		} else {
			vd_vq_push(vq, e.head, e.ndescs, (uint32_t)e.in_len);
		}
	}
	if (!vq->inflight)
		return;
	if (!vq->packed) {
		qsort(heads, nheads, sizeof(heads[0]), cmp_u16);
		for (unsigned i = 1; i < nheads; i++)
			if (heads[i] == heads[i - 1])
				return;
	}
	want = nleft + vq->resubmit_num - vq->resubmit_pos;
	setup_queue(&again, num, mem, fm, features, base);
	ret = vd_vq_set_inflight(&again, inflight, inflight_size, state);
	FUZZ_ASSERT(ret >= 0 && (unsigned)ret == want);
	if (vq->packed)
		FUZZ_ASSERT(again.used_idx == vq->used_idx && again.used_wrap == vq->used_wrap);
	/* Resubmissions @vq never took may not map: only compare when every
	 * one of them is a request @vq took (and mapped) before. */
	if (want != nleft)
		return;
	for (unsigned i = 0; i < want; i++) {
		FUZZ_ASSERT(vd_vq_pop(&again, &e, iov, max_iov) == 1);
		again_ids[i] = (uint32_t)e.head << 16 | e.ndescs;
	}
	qsort(left, nleft, sizeof(left[0]), cmp_u32);
	qsort(again_ids, nleft, sizeof(again_ids[0]), cmp_u32);
	FUZZ_ASSERT(memcmp(left, again_ids, nleft * sizeof(left[0])) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vd_loop *loop;
	static struct iovec iov[VD_VQ_MAX_IOV];
	struct fake_mem fm;
	struct vd_virtio_mem mem = {.map = fake_map, .opaque = &fm};
	uint8_t flags;
	unsigned num, max_iov;
	uint32_t base;
	uint16_t bump;
	uint64_t features = 1ULL << VIRTIO_F_VERSION_1;
	uint8_t *inflight = NULL;
	static uint16_t state[6 * 128], state2[6 * 128];
	size_t inflight_size = 0;

	if (!loop) {
		if (vd_loop_new(&loop) < 0)
			return 0;
		vd_loop_set_current(loop);
	}
	if (size < HDR)
		return 0;
	flags = data[0];
	num = 1u << (data[1] & 7);
	max_iov = data[2] ? data[2] : VD_VQ_MAX_IOV;
	memcpy(&base, data + 3, 4);
	memcpy(&bump, data + 7, 2);
	data += HDR;
	size -= HDR;
	if (flags & 1)
		features |= 1ULL << VIRTIO_F_RING_PACKED;
	if (flags & 2)
		features |= 1ULL << VIRTIO_F_INDIRECT_DESC;
	if (flags & 4)
		features |= 1ULL << VIRTIO_F_EVENT_IDX;
	if (flags & 16) {
		inflight_size = vd_vq_inflight_size(num, flags & 1);
		inflight = calloc(1, inflight_size);
		if (!inflight)
			return 0;
		memcpy(inflight, data, size < inflight_size ? size : inflight_size);
		data += size < inflight_size ? size : inflight_size;
		size -= size < inflight_size ? size : inflight_size;
	}
	fm.ram[0] = calloc(1, REGION_SIZE);
	fm.ram[1] = calloc(1, REGION_SIZE);
	if (!fm.ram[0] || !fm.ram[1])
		goto out;
	memcpy(fm.ram[0], data, size < REGION_SIZE ? size : REGION_SIZE);
	if (size > REGION_SIZE)
		memcpy(fm.ram[1], data + REGION_SIZE,
		       size - REGION_SIZE < REGION_SIZE ? size - REGION_SIZE : REGION_SIZE);

	if (!(flags & 8)) {
		struct vd_vq vq;

		setup_queue(&vq, num, &mem, &fm, features, base);
		FUZZ_ASSERT(vd_vq_inflight_state_len(num) <= sizeof(state) / sizeof(state[0]));
		if (inflight && vd_vq_set_inflight(&vq, inflight, inflight_size, state) >= 0)
			FUZZ_ASSERT(vq.resubmit_num <= vq.num);
		else
			FUZZ_ASSERT(vq.inflight == NULL);
		if (flags & 64) {
			killed_pass(&vq, num, &mem, &fm, features, base, iov, max_iov, inflight,
				    inflight_size, state2);
			goto out;
		}
		raw_pass(&vq, &fm, iov, max_iov);
		/* The driver adds more (or moves the index anywhere). */
		if (!vq.packed && !vq.broken) {
			uint16_t idx;

			memcpy(&idx, fm.ram[0] + 0x802, 2);
			idx = (uint16_t)(idx + bump);
			memcpy(fm.ram[0] + 0x802, &idx, 2);
		}
		vd_vq_set_notification(&vq, true);
		vd_vq_has_work(&vq);
		raw_pass(&vq, &fm, iov, max_iov);
		vd_vq_get_base(&vq);
		check_restart(&vq, num, &mem, &fm, features, base, inflight, inflight_size, state2);
	} else {
		struct vd_blk *blk = null_blk(flags & 32);
		struct vd_virtio_blk_conf conf = {
			.blk = blk, .num_queues = 1, .queue_size = (uint16_t)num, .serial = "fuzz"};
		struct blk_state st = {0};
		struct vd_virtio_blk *b;
		uint16_t used_start;
		struct vd_vq *vq;
		const uint64_t ring_bits = (1ULL << VIRTIO_F_RING_PACKED) |
					   (1ULL << VIRTIO_F_INDIRECT_DESC) |
					   (1ULL << VIRTIO_F_EVENT_IDX);

		if (!blk || vd_virtio_blk_new(&conf, &blk_ops, &st, &b) < 0)
			goto out;
		vq = vd_virtio_blk_queue(b, 0);
		vd_vq_init(vq, num, &mem);
		vd_virtio_blk_set_features(b, features | (vd_virtio_blk_features(b) & ~ring_bits));
		vd_vq_set_rings(vq, fm.ram[0], fm.ram[0] + 0x800, fm.ram[0] + 0xc00);
		vd_vq_set_base(vq, base);
		if (inflight)
			vd_vq_set_inflight(vq, inflight, inflight_size, state);
		used_start = vq->used_idx;
		vd_virtio_blk_handle_queue(b, 0);
		/* Requests complete on the loop: let them, then again. */
		vd_virtio_blk_stop_queue(b, 0);
		if (!vq->packed && !vq->broken) {
			uint16_t idx;

			memcpy(&idx, fm.ram[0] + 0x802, 2);
			idx = (uint16_t)(idx + bump);
			memcpy(fm.ram[0] + 0x802, &idx, 2);
		}
		vd_virtio_blk_handle_queue(b, 0);
		vd_virtio_blk_stop_queue(b, 0);
		FUZZ_ASSERT(vd_virtio_blk_inflight(b, 0) == 0);
		if (vq->broken)
			FUZZ_ASSERT(vd_virtio_blk_needs_reset(b) && st.broken_called);
		if (vd_virtio_blk_needs_reset(b))
			FUZZ_ASSERT(st.broken_called);
		if (!vd_virtio_blk_needs_reset(b))
			check_restart(vq, num, &mem, &fm, features, base, inflight, inflight_size,
				      state2);
		if (!vq->packed && vq->num) {
			/* The entries this run added (the ring held the input's
			 * bytes before). */
			uint16_t used_idx, added;

			memcpy(&used_idx, fm.ram[0] + 0xc02, 2);
			added = (uint16_t)(used_idx - used_start);
			for (uint16_t k = 0; k < num && k < added; k++) {
				uint32_t id;

				memcpy(&id,
				       fm.ram[0] + 0xc04 + 8 * (size_t)((used_idx - 1 - k) % num),
				       4);
				FUZZ_ASSERT(id < num);
			}
		}
		vd_virtio_blk_free(b);
	}
out:
	free(fm.ram[0]);
	free(fm.ram[1]);
	free(inflight);
	return 0;
}
