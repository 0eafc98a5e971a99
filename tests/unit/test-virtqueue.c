/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueues and virtio-blk request handling over a plain buffer as
 * guest memory: QEMU virtio-blk-test's layouts (3- and 2-descriptor,
 * indirect), event index, the invalid discard/write-zeroes cases, and every
 * malformed chain we know of, which must give NEEDS_RESET and nothing worse.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/block.h>
#include <vdisk/virtio-blk.h>

#include "tests/lib/test.h"

#define MEM_SIZE (1u << 20)
#define QSIZE 16
#define DESC 0x0000
#define AVAIL 0x1000
#define USED 0x2000
#define DESC2 0x3000 /* second queue */
#define AVAIL2 0x4000
#define USED2 0x5000
#define INDIRECT 0x8000
#define HDR 0x10000
#define DATA 0x20000
#define STATUS 0x30000
#define DISK_SIZE (1u << 20) /* 2048 sectors */

#include "tests/lib/blk.h"
#include "tests/lib/guest-mem.h"

static struct vd_loop *loop;
static struct vd_node *node;
static struct vd_blk *blk; /* on node */
static int notifies, breaks;
static bool use_packed;

static void on_notify(void *opaque, unsigned q)
{
	notifies++;
}

static void on_broken(void *opaque, const char *why)
{
	breaks++;
}

static const struct vd_virtio_blk_ops ops = {.notify = on_notify, .broken = on_broken};

struct dev {
	struct vd_virtio_blk *b;
	uint16_t next_desc[2];
	uint16_t avail_idx[2];
	uint16_t used_seen[2];
};

static const uint64_t ring_desc[2] = {DESC, DESC2}, ring_avail[2] = {AVAIL, AVAIL2},
		      ring_used[2] = {USED, USED2};

static int dev_init(struct dev *d, uint64_t features, bool ro, uint16_t nq)
{
	struct vd_virtio_blk_conf conf = {.blk = blk,
					  .num_queues = nq,
					  .queue_size = QSIZE,
					  .read_only = ro,
					  .serial = "vdisk-serial-0001"};
	int ret;

	memset(mem, 0, MEM_SIZE);
	memset(d, 0, sizeof(*d));
	notifies = breaks = 0;
	ret = vd_virtio_blk_new(&conf, &ops, NULL, &d->b);
	if (ret < 0)
		return ret;
	for (unsigned q = 0; q < nq && q < 2; q++) {
		struct vd_vq *vq = vd_virtio_blk_queue(d->b, q);
		vd_vq_init(vq, QSIZE, &gmem);
		vd_vq_set_rings(vq, mem + ring_desc[q], mem + ring_avail[q], mem + ring_used[q]);
	}
	/* Split rings unless the test asks for packed ones. */
	if (!use_packed)
		features &= ~(1ULL << VIRTIO_F_RING_PACKED);
	vd_virtio_blk_set_features(d->b, features & vd_virtio_blk_features(d->b));
	return 0;
}

struct seg {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
};

/* Write a chain of @n descriptors into @table (at free slots for the ring
 * table) and return its head. */
static uint16_t put_chain(struct dev *d, unsigned q, const struct seg *s, int n)
{
	uint16_t head = d->next_desc[q];

	for (int i = 0; i < n; i++) {
		uint16_t idx = (uint16_t)((head + i) % QSIZE);
		uint64_t a = ring_desc[q] + 16 * idx;
		w64(a, s[i].addr);
		w32(a + 8, s[i].len);
		w16(a + 12, s[i].flags | (i + 1 < n ? VRING_DESC_F_NEXT : 0));
		w16(a + 14, (uint16_t)((idx + 1) % QSIZE));
	}
	d->next_desc[q] = (uint16_t)((head + n) % QSIZE);
	return head;
}

static void publish(struct dev *d, unsigned q, uint16_t head)
{
	w16(ring_avail[q] + 4 + 2 * (d->avail_idx[q] % QSIZE), head);
	d->avail_idx[q]++;
	w16(ring_avail[q] + 2, d->avail_idx[q]);
}

static void run(struct dev *d, unsigned q)
{
	vd_virtio_blk_handle_queue(d->b, q);
	while (vd_virtio_blk_inflight(d->b, ~0u))
		vd_loop_run_once(loop, true);
}

/* The used entry for the next completed request: its length, or -1. */
static long long next_used(struct dev *d, unsigned q, uint16_t *id)
{
	uint16_t idx = r16(ring_used[q] + 2);
	uint64_t e;

	if (idx == d->used_seen[q])
		return -1;
	e = ring_used[q] + 4 + 8 * (d->used_seen[q] % QSIZE);
	d->used_seen[q]++;
	if (id)
		*id = (uint16_t)r32(e);
	return r32(e + 4);
}

static void hdr(uint64_t a, uint32_t type, uint64_t sector)
{
	w32(a, type);
	w32(a + 4, 0);
	w64(a + 8, sector);
}

/* 3-descriptor request: header, data, status. */
static int req3(struct dev *d, uint32_t type, uint64_t sector, uint32_t len, long long *used)
{
	struct seg s[3] = {{HDR, 16, 0},
			   {DATA, len, type == VIRTIO_BLK_T_OUT ? 0 : VRING_DESC_F_WRITE},
			   {STATUS, 1, VRING_DESC_F_WRITE}};
	uint16_t id = 0, head;

	hdr(HDR, type, sector);
	mem[STATUS] = 0xff;
	head = put_chain(d, 0, s, 3);
	publish(d, 0, head);
	run(d, 0);
	*used = next_used(d, 0, &id);
	if (*used >= 0 && id != head)
		return -2;
	return mem[STATUS];
}

static void test_basic_3desc(void)
{
	struct dev d;
	long long used;

	REQUIRE(dev_init(&d, ~0ULL & ~(1ULL << VIRTIO_F_EVENT_IDX), false, 1) == 0);
	memset(mem + DATA, 0, 512);
	memcpy(mem + DATA, "TEST", 5);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_OUT, 0, 512, &used), VIRTIO_BLK_S_OK);
	CHECK_EQ(used, 1);
	memset(mem + DATA, 0xee, 512);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, 0, 512, &used), VIRTIO_BLK_S_OK);
	CHECK_EQ(used, 513);
	CHECK(memcmp(mem + DATA, "TEST", 5) == 0);
	CHECK_EQ(notifies, 2);
	/* Past the end, unaligned length: IOERR (QEMU's sect_range_ok). */
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, DISK_SIZE / 512, 512, &used), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, 0, 100, &used), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_OUT, UINT64_MAX / 2, 512, &used), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(req3(&d, 2 /* SCSI_CMD */, 0, 512, &used), VIRTIO_BLK_S_UNSUPP);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_FLUSH, 0, 1, &used), VIRTIO_BLK_S_OK);
	CHECK(!vd_virtio_blk_needs_reset(d.b));
	vd_virtio_blk_free(d.b);
}

static void test_basic_2desc(void)
{
	struct dev d;
	uint16_t head;

	REQUIRE(dev_init(&d, ~0ULL, false, 1) == 0);
	/* OUT: header and data in one descriptor, then the status. */
	hdr(HDR, VIRTIO_BLK_T_OUT, 1);
	memset(mem + HDR + 16, 0x5a, 512);
	{
		struct seg s[2] = {{HDR, 528, 0}, {STATUS, 1, VRING_DESC_F_WRITE}};
		head = put_chain(&d, 0, s, 2);
	}
	mem[STATUS] = 0xff;
	publish(&d, 0, head);
	run(&d, 0);
	CHECK_EQ(next_used(&d, 0, NULL), 1);
	CHECK_EQ(mem[STATUS], 0);
	/* IN: header, then data and status in one 513-byte buffer. */
	hdr(HDR, VIRTIO_BLK_T_IN, 1);
	memset(mem + DATA, 0, 513);
	mem[DATA + 512] = 0xff;
	{
		struct seg s[2] = {{HDR, 16, 0}, {DATA, 513, VRING_DESC_F_WRITE}};
		head = put_chain(&d, 0, s, 2);
	}
	publish(&d, 0, head);
	run(&d, 0);
	CHECK_EQ(next_used(&d, 0, NULL), 513);
	CHECK_EQ(mem[DATA + 512], 0);
	CHECK_EQ(mem[DATA], 0x5a);
	CHECK_EQ(mem[DATA + 511], 0x5a);
	vd_virtio_blk_free(d.b);
}

static void test_indirect(void)
{
	struct dev d;
	uint16_t head;

	REQUIRE(dev_init(&d, ~0ULL, false, 1) == 0);
	CHECK(vd_virtio_blk_features(d.b) & (1ULL << VIRTIO_F_INDIRECT_DESC));
	hdr(HDR, VIRTIO_BLK_T_OUT, 2);
	memset(mem + HDR + 16, 0x77, 512);
	/* Table: 528 readable, 1 writable. */
	w64(INDIRECT, HDR);
	w32(INDIRECT + 8, 528);
	w16(INDIRECT + 12, VRING_DESC_F_NEXT);
	w16(INDIRECT + 14, 1);
	w64(INDIRECT + 16, STATUS);
	w32(INDIRECT + 24, 1);
	w16(INDIRECT + 28, VRING_DESC_F_WRITE);
	{
		struct seg s[1] = {{INDIRECT, 32, VRING_DESC_F_INDIRECT}};
		head = put_chain(&d, 0, s, 1);
	}
	mem[STATUS] = 0xff;
	publish(&d, 0, head);
	run(&d, 0);
	CHECK_EQ(next_used(&d, 0, NULL), 1);
	CHECK_EQ(mem[STATUS], 0);
	/* Read back: 16 readable, 513 writable. */
	hdr(HDR, VIRTIO_BLK_T_IN, 2);
	w32(INDIRECT + 8, 16);
	w64(INDIRECT + 16, DATA);
	w32(INDIRECT + 24, 513);
	memset(mem + DATA, 0, 513);
	mem[DATA + 512] = 0xff;
	{
		struct seg s[1] = {{INDIRECT, 32, VRING_DESC_F_INDIRECT}};
		head = put_chain(&d, 0, s, 1);
	}
	publish(&d, 0, head);
	run(&d, 0);
	CHECK_EQ(next_used(&d, 0, NULL), 513);
	CHECK_EQ(mem[DATA + 512], 0);
	CHECK_EQ(mem[DATA + 100], 0x77);
	CHECK(!vd_virtio_blk_needs_reset(d.b));
	vd_virtio_blk_free(d.b);
}

static void test_event_idx(void)
{
	struct dev d;
	long long used;

	REQUIRE(dev_init(&d, ~0ULL, false, 1) == 0);
	/* First completion always notifies. */
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_OUT, 0, 512, &used), 0);
	CHECK_EQ(notifies, 1);
	/* avail_event (used->ring[num]) tells the driver where to kick. */
	CHECK_EQ(r16(USED + 4 + 8 * QSIZE), 1);
	/* used_event = 2: the 2nd completion (used.idx 1 -> 2) is quiet,
	 * the 3rd (2 -> 3) notifies (QEMU virtio-blk-test "idx"). */
	w16(AVAIL + 4 + 2 * QSIZE, 2);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_OUT, 1, 512, &used), 0);
	CHECK_EQ(notifies, 1);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, 0, 512, &used), 0);
	CHECK_EQ(notifies, 2);
	CHECK_EQ(r16(USED + 2), 3);
	vd_virtio_blk_free(d.b);

	/* Without event index: NO_INTERRUPT suppresses notifications. */
	REQUIRE(dev_init(&d, ~0ULL & ~(1ULL << VIRTIO_F_EVENT_IDX), false, 1) == 0);
	w16(AVAIL, VRING_AVAIL_F_NO_INTERRUPT);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, 0, 512, &used), 0);
	CHECK_EQ(notifies, 0);
	w16(AVAIL, 0);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, 0, 512, &used), 0);
	CHECK_EQ(notifies, 1);
	vd_virtio_blk_free(d.b);
}

static void test_get_id(void)
{
	struct dev d;
	long long used;

	REQUIRE(dev_init(&d, ~0ULL, false, 1) == 0);
	memset(mem + DATA, 0xee, 64);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, &used), 0);
	CHECK_EQ(used, VIRTIO_BLK_ID_BYTES + 1);
	CHECK(memcmp(mem + DATA, "vdisk-serial-0001", 18) == 0);
	CHECK_EQ(mem[DATA + 18], 0xee);
	vd_virtio_blk_free(d.b);
}

/* DISCARD / WRITE_ZEROES with @nseg segments of {sector, num, flags}. */
static int dwz(struct dev *d, uint32_t type, uint64_t sector, uint32_t num, uint32_t flags,
	       int nseg)
{
	long long used;

	for (int i = 0; i < nseg; i++) {
		w64(DATA + 16 * i, sector);
		w32(DATA + 16 * i + 8, num);
		w32(DATA + 16 * i + 12, flags);
	}
	{
		struct seg s[3] = {{HDR, 16, 0},
				   {DATA, 16 * (uint32_t)nseg, 0},
				   {STATUS, 1, VRING_DESC_F_WRITE}};
		uint16_t head;

		hdr(HDR, type, 0);
		mem[STATUS] = 0xff;
		head = put_chain(d, 0, s, 3);
		publish(d, 0, head);
		run(d, 0);
		used = next_used(d, 0, NULL);
	}
	return used == 1 ? mem[STATUS] : -1;
}

static void test_discard_write_zeroes(void)
{
	struct dev d;
	long long used;

	REQUIRE(dev_init(&d, ~0ULL, false, 1) == 0);
	memset(mem + DATA, 0x33, 512);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_OUT, 4, 512, &used), 0);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_WRITE_ZEROES, 4, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, 1),
		 VIRTIO_BLK_S_OK);
	memset(mem + DATA, 0x11, 512);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, 4, 512, &used), 0);
	CHECK_EQ(mem[DATA], 0);
	CHECK_EQ(mem[DATA + 511], 0);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_DISCARD, 0, 1, 0, 1), VIRTIO_BLK_S_OK);
	/* QEMU's invalid cases (vhost-user-blk-test "basic"). */
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_DISCARD, 0, 1, 0, 2), VIRTIO_BLK_S_UNSUPP);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 0, 2), VIRTIO_BLK_S_UNSUPP);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_DISCARD, 0, 0xffffffff, 0, 1), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_WRITE_ZEROES, 0, 0xffffffff, 0, 1), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_DISCARD, DISK_SIZE / 512 + 1, 1, 0, 1), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_WRITE_ZEROES, DISK_SIZE / 512 + 1, 1, 0, 1),
		 VIRTIO_BLK_S_IOERR);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_DISCARD, 0, 1, ~0u, 1), VIRTIO_BLK_S_UNSUPP);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, ~0u, 1), VIRTIO_BLK_S_UNSUPP);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_DISCARD, 0, 1, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP, 1),
		 VIRTIO_BLK_S_UNSUPP);
	CHECK(!vd_virtio_blk_needs_reset(d.b));
	vd_virtio_blk_free(d.b);

	/* Not negotiated: UNSUPP. */
	REQUIRE(dev_init(&d,
			 ~0ULL & ~((1ULL << VIRTIO_BLK_F_DISCARD) |
				   (1ULL << VIRTIO_BLK_F_WRITE_ZEROES)),
			 false, 1) == 0);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_DISCARD, 0, 1, 0, 1), VIRTIO_BLK_S_UNSUPP);
	CHECK_EQ(dwz(&d, VIRTIO_BLK_T_WRITE_ZEROES, 0, 1, 0, 1), VIRTIO_BLK_S_UNSUPP);
	vd_virtio_blk_free(d.b);
}

static void test_read_only(void)
{
	struct dev d;
	long long used;
	uint64_t f;

	REQUIRE(dev_init(&d, ~0ULL, true, 1) == 0);
	f = vd_virtio_blk_features(d.b);
	CHECK(f & (1ULL << VIRTIO_BLK_F_RO));
	CHECK(!(f & (1ULL << VIRTIO_BLK_F_DISCARD)));
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_OUT, 0, 512, &used), VIRTIO_BLK_S_IOERR);
	CHECK_EQ(used, 1);
	CHECK_EQ(req3(&d, VIRTIO_BLK_T_IN, 0, 512, &used), VIRTIO_BLK_S_OK);
	vd_virtio_blk_free(d.b);
}

static void test_config(void)
{
	struct dev d;
	uint8_t c[VD_VIRTIO_BLK_CONFIG_SIZE], wce;
	uint64_t cap;
	uint16_t nq;

	REQUIRE(dev_init(&d, ~0ULL, false, 2) == 0);
	CHECK(vd_virtio_blk_features(d.b) & (1ULL << VIRTIO_BLK_F_MQ));
	CHECK_EQ(vd_virtio_blk_get_config(d.b, 0, c, sizeof(c)), 0);
	memcpy(&cap, c, 8);
	CHECK_EQ(le64toh(cap), DISK_SIZE / 512);
	CHECK_EQ(c[12], QSIZE - 2); /* seg_max */
	CHECK_EQ(c[20] | c[21] << 8, 512); /* blk_size */
	memcpy(&nq, c + 34, 2);
	CHECK_EQ(le16toh(nq), 2);
	CHECK_EQ(c[40], 1); /* max_discard_seg */
	CHECK_EQ(c[56], 1); /* write_zeroes_may_unmap */
	CHECK_EQ(vd_virtio_blk_get_config(d.b, 250, c, 10), -EINVAL);
	wce = 0;
	CHECK_EQ(vd_virtio_blk_set_config(d.b, VD_VIRTIO_BLK_CONFIG_WCE_OFFSET, &wce, 1), 0);
	CHECK(!vd_node_write_cache(node));
	wce = 1;
	vd_virtio_blk_set_config(d.b, VD_VIRTIO_BLK_CONFIG_WCE_OFFSET, &wce, 1);
	CHECK(vd_node_write_cache(node));
	vd_virtio_blk_free(d.b);

	REQUIRE(dev_init(&d, ~0ULL, false, 1) == 0);
	CHECK(!(vd_virtio_blk_features(d.b) & (1ULL << VIRTIO_BLK_F_MQ)));
	vd_virtio_blk_free(d.b);
}

static void test_multiqueue(void)
{
	struct dev d;
	struct seg s[3] = {{HDR, 16, 0}, {DATA, 512, 0}, {STATUS, 1, VRING_DESC_F_WRITE}};
	uint16_t head;

	REQUIRE(dev_init(&d, ~0ULL, false, 2) == 0);
	hdr(HDR, VIRTIO_BLK_T_OUT, 8);
	memset(mem + DATA, 0x42, 512);
	mem[STATUS] = 0xff;
	head = put_chain(&d, 1, s, 3);
	publish(&d, 1, head);
	run(&d, 1);
	CHECK_EQ(next_used(&d, 1, NULL), 1);
	CHECK_EQ(next_used(&d, 0, NULL), -1);
	CHECK_EQ(mem[STATUS], 0);
	/* A queue that does not exist is ignored. */
	vd_virtio_blk_handle_queue(d.b, 7);
	CHECK(vd_virtio_blk_queue(d.b, 2) == NULL);
	vd_virtio_blk_free(d.b);
}

static void test_stop_drains(void)
{
	struct dev d;
	struct seg s[3] = {
		{HDR, 16, 0}, {DATA, 4096, VRING_DESC_F_WRITE}, {STATUS, 1, VRING_DESC_F_WRITE}};
	uint16_t head;

	REQUIRE(dev_init(&d, ~0ULL, false, 1) == 0);
	hdr(HDR, VIRTIO_BLK_T_IN, 0);
	mem[STATUS] = 0xff;
	head = put_chain(&d, 0, s, 3);
	publish(&d, 0, head);
	vd_virtio_blk_handle_queue(d.b, 0);
	CHECK_EQ(vd_virtio_blk_inflight(d.b, 0), 1);
	CHECK_EQ(mem[STATUS], 0xff);
	vd_virtio_blk_stop_queue(d.b, 0);
	CHECK_EQ(vd_virtio_blk_inflight(d.b, 0), 0);
	CHECK_EQ(mem[STATUS], 0);
	CHECK_EQ(r16(USED + 2), 1);
	/* Reset: nothing more is written. */
	vd_virtio_blk_reset(d.b);
	CHECK(vd_virtio_blk_queue(d.b, 0)->num == 0);
	vd_virtio_blk_free(d.b);
}

/* Malformed chains: each must break the device, never crash it. */
enum bad {
	BAD_LOOP,
	BAD_NEXT_RANGE,
	BAD_HEAD_RANGE,
	BAD_ADDR,
	BAD_WRITE_THEN_READ,
	BAD_ZERO_LEN,
	BAD_HUGE_LEN,
	BAD_NESTED_INDIRECT,
	BAD_INDIRECT_NOT_NEGOTIATED,
	BAD_INDIRECT_SIZE,
	BAD_INDIRECT_NEXT,
	BAD_INDIRECT_LOOP,
	BAD_AVAIL_IDX,
	BAD_NO_HEADER,
	BAD_NO_STATUS,
	BAD_ADDR_WRAP,
	BAD_MAX,
};

static void test_malformed(void)
{
	for (int bad = 0; bad < BAD_MAX; bad++) {
		struct dev d;
		uint64_t feat = ~0ULL;
		struct seg s3[3] = {{HDR, 16, 0},
				    {DATA, 512, VRING_DESC_F_WRITE},
				    {STATUS, 1, VRING_DESC_F_WRITE}};
		uint16_t head;

		if (bad == BAD_INDIRECT_NOT_NEGOTIATED)
			feat &= ~(1ULL << VIRTIO_F_INDIRECT_DESC);
		REQUIRE(dev_init(&d, feat, false, 1) == 0);
		hdr(HDR, VIRTIO_BLK_T_IN, 0);
		mem[STATUS] = 0xff;
		head = put_chain(&d, 0, s3, 3);
		switch (bad) {
		case BAD_LOOP:
			w16(DESC + 16 * 2 + 12, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT);
			w16(DESC + 16 * 2 + 14, 1);
			w16(DESC + 16 * 1 + 12, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT);
			break;
		case BAD_NEXT_RANGE:
			w16(DESC + 14, QSIZE);
			break;
		case BAD_HEAD_RANGE:
			head = QSIZE + 3;
			break;
		case BAD_ADDR:
			w64(DESC + 16 + 0, MEM_SIZE + 4096);
			break;
		case BAD_WRITE_THEN_READ:
			w16(DESC + 16 + 12, VRING_DESC_F_NEXT); /* data readable */
			w16(DESC + 12, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT);
			break;
		case BAD_ZERO_LEN:
			w32(DESC + 16 + 8, 0);
			break;
		case BAD_HUGE_LEN:
			w32(DESC + 16 + 8, 0xffffffff);
			break;
		case BAD_NESTED_INDIRECT:
		case BAD_INDIRECT_NOT_NEGOTIATED:
		case BAD_INDIRECT_SIZE:
		case BAD_INDIRECT_NEXT:
		case BAD_INDIRECT_LOOP:
			/* desc 0: indirect -> table of 2: hdr, then an indirect or
			 * a normal entry. */
			w64(INDIRECT, HDR);
			w32(INDIRECT + 8, 16);
			w16(INDIRECT + 12, VRING_DESC_F_NEXT);
			w16(INDIRECT + 14, 1);
			w64(INDIRECT + 16, STATUS);
			w32(INDIRECT + 24, 1);
			w16(INDIRECT + 28, bad == BAD_NESTED_INDIRECT ? VRING_DESC_F_INDIRECT
								      : VRING_DESC_F_WRITE);
			if (bad == BAD_INDIRECT_LOOP) {
				w16(INDIRECT + 28, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT);
				w16(INDIRECT + 30, 0);
				w16(INDIRECT + 12, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE);
			}
			w64(DESC, INDIRECT);
			w32(DESC + 8, bad == BAD_INDIRECT_SIZE ? 17 : 32);
			w16(DESC + 12, VRING_DESC_F_INDIRECT |
					       (bad == BAD_INDIRECT_NEXT ? VRING_DESC_F_NEXT : 0));
			break;
		case BAD_AVAIL_IDX:
			d.avail_idx[0] = QSIZE + 5;
			break;
		case BAD_NO_HEADER:
			w32(DESC + 8, 8);
			break;
		case BAD_NO_STATUS:
			w16(DESC + 16 + 12, VRING_DESC_F_NEXT);
			w16(DESC + 32 + 12, 0);
			break;
		case BAD_ADDR_WRAP:
			w64(DESC + 16, UINT64_MAX - 100);
			break;
		}
		publish(&d, 0, head);
		run(&d, 0);
		if (!vd_virtio_blk_needs_reset(d.b))
			fprintf(stderr, "malformed case %d did not break the device\n", bad);
		CHECK(vd_virtio_blk_needs_reset(d.b));
		CHECK_EQ(breaks, 1);
		CHECK_EQ(r16(USED + 2), 0);
		/* Further kicks do nothing. */
		run(&d, 0);
		CHECK_EQ(r16(USED + 2), 0);
		/* A queue reset (the driver sets the queue up again) clears
		 * NEEDS_RESET. */
		vd_virtio_blk_reset_queue(d.b, 0);
		CHECK(!vd_virtio_blk_needs_reset(d.b));
		vd_virtio_blk_free(d.b);
	}
}

/* Packed ring (virtio 1.2 section 2.8): write, read back, an indirect
 * request, wrap-around past the ring end, and malformed chains. */
static void pdesc(unsigned i, uint64_t addr, uint32_t len, uint16_t id, uint16_t flags, bool wrap)
{
	w64(DESC + 16 * i, addr);
	w32(DESC + 16 * i + 8, len);
	w16(DESC + 16 * i + 12, id);
	if (wrap)
		flags |= VRING_PACKED_DESC_F_AVAIL;
	else
		flags |= VRING_PACKED_DESC_F_USED;
	w16(DESC + 16 * i + 14, flags);
}

static void test_packed(void)
{
	uint64_t feat = ~0ULL;
	unsigned slot = 0, used_slot = 0;
	bool wrap = true, used_wrap = true;
	struct dev d;

	use_packed = true;
	REQUIRE(dev_init(&d, feat, false, 1) == 0);
	use_packed = false;
	REQUIRE(vd_virtio_blk_queue(d.b, 0)->packed);
	/* Driver area: notifications enabled. */
	w16(AVAIL + 2, VRING_PACKED_EVENT_FLAG_ENABLE);
	for (int round = 0; round < 12; round++) {
		bool write = round % 2 == 0;
		uint16_t id = (uint16_t)(100 + round), f;
		unsigned s0 = slot;

		hdr(HDR, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, (uint64_t)round / 2);
		if (write)
			memset(mem + DATA, 0x10 + round, 512);
		else
			memset(mem + DATA, 0, 512);
		mem[STATUS] = 0xff;
		/* Three descriptors; the head is made available last. */
		for (int k = 2; k >= 0; k--) {
			unsigned i = (s0 + (unsigned)k) % QSIZE;
			bool wr = s0 + (unsigned)k >= QSIZE ? !wrap : wrap;
			uint64_t a = k == 0 ? HDR : k == 1 ? DATA : STATUS;
			uint32_t l = k == 0 ? 16 : k == 1 ? 512 : 1;
			uint16_t fl =
				(uint16_t)((k < 2 ? VRING_DESC_F_NEXT : 0) |
					   (k == 2 || (k == 1 && !write) ? VRING_DESC_F_WRITE : 0));
			pdesc(i, a, l, id, fl, wr);
		}
		slot += 3;
		if (slot >= QSIZE) {
			slot -= QSIZE;
			wrap = !wrap;
		}
		run(&d, 0);
		CHECK_EQ(mem[STATUS], 0);
		/* The used descriptor at used_slot. */
		f = r16(DESC + 16 * used_slot + 14);
		CHECK_EQ(!!(f & VRING_PACKED_DESC_F_USED), used_wrap);
		CHECK_EQ(!!(f & VRING_PACKED_DESC_F_AVAIL), used_wrap);
		CHECK_EQ(r16(DESC + 16 * used_slot + 12), id);
		CHECK_EQ(r32(DESC + 16 * used_slot + 8), write ? 1 : 513);
		used_slot += 3;
		if (used_slot >= QSIZE) {
			used_slot -= QSIZE;
			used_wrap = !used_wrap;
		}
		if (!write)
			CHECK_EQ(mem[DATA + 7], 0x10 + round - 1);
	}
	CHECK_EQ(notifies, 12);
	/* Indirect: one ring slot. */
	hdr(HDR, VIRTIO_BLK_T_IN, 0);
	w64(INDIRECT, HDR);
	w32(INDIRECT + 8, 16);
	w16(INDIRECT + 14, 0);
	w64(INDIRECT + 16, DATA);
	w32(INDIRECT + 24, 513);
	w16(INDIRECT + 30, VRING_DESC_F_WRITE);
	mem[DATA + 512] = 0xff;
	pdesc(slot, INDIRECT, 32, 7, VRING_DESC_F_INDIRECT, wrap);
	run(&d, 0);
	CHECK_EQ(mem[DATA + 512], 0);
	CHECK_EQ(r16(DESC + 16 * used_slot + 12), 7);
	CHECK(!vd_virtio_blk_needs_reset(d.b));
	/* Notifications disabled by the driver: none. */
	w16(AVAIL + 2, VRING_PACKED_EVENT_FLAG_DISABLE);
	slot = (slot + 1) % QSIZE;
	if (slot == 0)
		wrap = !wrap;
	pdesc(slot, INDIRECT, 32, 8, VRING_DESC_F_INDIRECT, wrap);
	notifies = 0;
	run(&d, 0);
	CHECK_EQ(notifies, 0);
	/* A chain longer than the ring (every slot says NEXT): broken. */
	slot = (slot + 1) % QSIZE;
	if (slot == 0)
		wrap = !wrap;
	for (unsigned k = 0; k < QSIZE; k++)
		pdesc((slot + k) % QSIZE, HDR, 16, 9, VRING_DESC_F_NEXT,
		      slot + k >= QSIZE ? !wrap : wrap);
	run(&d, 0);
	CHECK(vd_virtio_blk_needs_reset(d.b));
	vd_virtio_blk_free(d.b);
}

/*
 * Inflight tracking of packed rings (vhost-user.rst "Inflight I/O
 * tracking"), on the virtqueue alone: a ring that starts near its end so
 * that chains and completions cross the wrap, requests completed out of
 * order, and a back end killed between any two of the region stores of a
 * completion or of a take.
 */
#define PK_REGION 576 /* vd_vq_inflight_size(16, true) */
#define PK_STALE_BASE (0x8000u | 0x8000u << 16)
#define PK_FEATURES ((1ULL << VIRTIO_F_RING_PACKED) | (1ULL << VIRTIO_F_INDIRECT_DESC))

static uint8_t *pk_region;
/* The live queue's back-end memory, and that of the queues that recover
 * from copies. */
static uint16_t pk_state[6 * QSIZE], pk_scratch_state[6 * QSIZE];

struct pk_image {
	uint8_t region[PK_REGION];
	uint8_t ring[16 * QSIZE];
};

/* One store a back end makes: @len bytes at @off in the region, or in the
 * descriptor ring. */
struct pk_store {
	size_t off, len;
	bool ring;
};

static void pk_vq(struct vd_vq *vq, uint32_t base)
{
	vd_vq_init(vq, QSIZE, &gmem);
	vd_vq_set_features(vq, PK_FEATURES);
	vd_vq_set_rings(vq, mem + DESC, mem + AVAIL, mem + USED);
	vd_vq_set_base(vq, base);
}

/* A chain of @n descriptors from *slot on (readable ones, then a writable
 * one), buffer id @id. */
static void pk_chain(unsigned *slot, bool *wrap, uint16_t id, unsigned n)
{
	for (unsigned k = 0; k < n; k++) {
		uint16_t f = (uint16_t)((k + 1 < n ? VRING_DESC_F_NEXT : 0) |
					(k + 1 == n ? VRING_DESC_F_WRITE : 0));

		pdesc(*slot, DATA + 0x100 * k, 16, id, f, *wrap);
		if (++*slot == QSIZE) {
			*slot = 0;
			*wrap = !*wrap;
		}
	}
}

/* Pop until the ring is empty: the ids and slot counts in pop order. */
static int pk_pop_all(struct vd_vq *vq, uint16_t *ids, uint16_t *ndescs, int max)
{
	struct vd_vq_elem e;
	struct iovec iov[8];
	int n = 0, ret;

	while ((ret = vd_vq_pop(vq, &e, iov, 8)) == 1) {
		if (n == max)
			return -E2BIG;
		ids[n] = e.head;
		ndescs[n++] = e.ndescs;
	}
	return ret < 0 ? ret : n;
}

static void pk_save(struct pk_image *im, const uint8_t *region)
{
	memcpy(im->region, region, PK_REGION);
	memcpy(im->ring, mem + DESC, sizeof(im->ring));
}

static uint16_t pk_hdr16(const uint8_t *region, size_t off)
{
	uint16_t v;
	memcpy(&v, region + off, 2);
	return le16toh(v);
}

/* Offsets in QueueRegionPacked / DescStatePacked. */
#define PK_FREE_HEAD 12
#define PK_OLD_FREE_HEAD 14
#define PK_USED_IDX 16
#define PK_OLD_USED_IDX 18
#define PK_USED_WRAP 20
#define PK_OLD_USED_WRAP 21
#define PK_E(e, field) (32 + 32 * (size_t)(e) + (field))

/*
 * A back end killed after the first k of @nstores stores that took @before
 * to @after, for every k: a new one recovers from the region and the ring
 * as they were then, and pops @want (ids, in this order) and nothing else;
 * then a third one, recovering from what the second left, pops the same.
 * @done_from: the first k from which the operation counts as done (for a
 * completion: its used descriptor is published), with @used_done or
 * @used_before (GET_VRING_BASE's used half) as the result.  The second pass
 * recovers from what the first (its recovery and pops) left.
 */
static void pk_kill_points(const struct pk_image *before, const struct pk_image *after,
			   const struct pk_store *stores, int nstores, int done_from,
			   const uint16_t *want_done, int nwant_done, const uint16_t *want_before,
			   int nwant_before, uint16_t used_done, uint16_t used_before)
{
	static uint8_t region[PK_REGION] __attribute__((aligned(64)));
	struct pk_image saved;

	pk_save(&saved, after->region);
	for (int k = 0; k <= nstores; k++) {
		bool done = k >= done_from;
		const uint16_t *want = done ? want_done : want_before;
		int nwant = done ? nwant_done : nwant_before;

		for (int pass = 0; pass < 2; pass++) {
			struct vd_vq vq;
			uint16_t ids[QSIZE], nd[QSIZE];
			int n;

			if (pass == 0) {
				memcpy(region, before->region, PK_REGION);
				memcpy(mem + DESC, before->ring, sizeof(before->ring));
				for (int i = 0; i < k; i++) {
					const uint8_t *src =
						stores[i].ring ? after->ring : after->region;
					uint8_t *dst = stores[i].ring ? mem + DESC : region;

					memcpy(dst + stores[i].off, src + stores[i].off,
					       stores[i].len);
				}
			}
			pk_vq(&vq, PK_STALE_BASE);
			n = vd_vq_set_inflight(&vq, region, PK_REGION, pk_scratch_state);
			if (n < 0) {
				fprintf(stderr, "kill point %d pass %d: region refused\n", k, pass);
				CHECK(n >= 0);
				continue;
			}
			CHECK_EQ(vd_vq_get_base(&vq) >> 16, done ? used_done : used_before);
			n = pk_pop_all(&vq, ids, nd, QSIZE);
			CHECK_EQ(n, nwant);
			for (int i = 0; i < n && i < nwant; i++)
				if (ids[i] != want[i]) {
					fprintf(stderr,
						"kill point %d pass %d: pop %d is id %u, not %u\n",
						k, pass, i, ids[i], want[i]);
					CHECK_EQ(ids[i], want[i]);
				}
		}
	}
	memcpy(mem + DESC, saved.ring, sizeof(saved.ring));
}

static void test_packed_inflight(void)
{
	struct vd_vq vq;
	struct vd_vq_elem e;
	struct iovec iov[8];
	struct pk_image before, after;
	unsigned slot = 14;
	bool wrap = true;
	uint16_t ids[QSIZE], nd[QSIZE];
	int n;

	memset(mem, 0, MEM_SIZE);
	CHECK_EQ(vd_vq_inflight_size(QSIZE, true), PK_REGION);
	CHECK_EQ(vd_vq_inflight_size(QSIZE, false), 320);
	pk_region = aligned_alloc(64, PK_REGION);
	REQUIRE(pk_region);
	memset(pk_region, 0, PK_REGION);
	/* Slot 14 in the first lap, for both sides. */
	pk_vq(&vq, (14u | 0x8000u) | (14u | 0x8000u) << 16);
	CHECK_EQ(vd_vq_set_inflight(&vq, pk_region, PK_REGION - 1, pk_state), -EINVAL);
	REQUIRE(vd_vq_set_inflight(&vq, pk_region, PK_REGION, pk_state) == 0);
	CHECK_EQ(pk_hdr16(pk_region, 8), 1);
	CHECK_EQ(pk_hdr16(pk_region, 10), QSIZE);
	CHECK_EQ(pk_hdr16(pk_region, PK_USED_IDX), 14);
	CHECK_EQ(pk_region[PK_USED_WRAP], 1);

	/* A: 3 descriptors over the wrap (slots 14, 15, 0), B: 1, C: 2. */
	pk_chain(&slot, &wrap, 10, 3);
	pk_chain(&slot, &wrap, 11, 1);
	pk_chain(&slot, &wrap, 12, 2);
	n = pk_pop_all(&vq, ids, nd, QSIZE);
	REQUIRE(n == 3);
	CHECK(ids[0] == 10 && ids[1] == 11 && ids[2] == 12);
	CHECK(nd[0] == 3 && nd[1] == 1 && nd[2] == 2);
	/* Entries 0-2, 3, 4-5 from the free list; heads in flight, in order. */
	CHECK_EQ(pk_region[PK_E(0, 0)], 1);
	CHECK_EQ(pk_hdr16(pk_region, PK_E(0, 6)), 3);
	CHECK_EQ(pk_hdr16(pk_region, PK_E(0, 4)), 2);
	CHECK_EQ(pk_hdr16(pk_region, PK_E(2, 16)), 10);
	CHECK_EQ(pk_region[PK_E(3, 0)], 1);
	CHECK_EQ(pk_region[PK_E(4, 0)], 1);
	CHECK_EQ(pk_region[PK_E(1, 0)], 0);
	CHECK(pk_region[PK_E(0, 8)] == 0 && pk_region[PK_E(3, 8)] == 1 &&
	      pk_region[PK_E(4, 8)] == 2);
	CHECK_EQ(pk_hdr16(pk_region, PK_FREE_HEAD), 6);
	CHECK_EQ(pk_hdr16(pk_region, PK_OLD_FREE_HEAD), 6);

	/* B completes first: its used descriptor takes slot 14, A's head. */
	vd_vq_push(&vq, 11, 1, 0);
	CHECK_EQ(r16(DESC + 16 * 14 + 12), 11);
	CHECK_EQ(pk_region[PK_E(3, 0)], 0);
	CHECK_EQ(pk_hdr16(pk_region, PK_FREE_HEAD), 3);
	CHECK_EQ(pk_hdr16(pk_region, PK_E(3, 2)), 6);
	CHECK(pk_hdr16(pk_region, PK_USED_IDX) == 15 && pk_hdr16(pk_region, PK_OLD_USED_IDX) == 15);

	/* D: one indirect descriptor (slot 4), in B's old entry; killed
	 * between any two stores of the take, the request runs once: from
	 * the region (A, C, D by counter) or from the ring after A and C. */
	w64(INDIRECT, HDR);
	w32(INDIRECT + 8, 16);
	w16(INDIRECT + 14, 0);
	w64(INDIRECT + 16, STATUS);
	w32(INDIRECT + 24, 1);
	w16(INDIRECT + 30, VRING_DESC_F_WRITE);
	pdesc(slot, INDIRECT, 32, 13, VRING_DESC_F_INDIRECT, wrap);
	pk_save(&before, pk_region);
	REQUIRE(vd_vq_pop(&vq, &e, iov, 8) == 1);
	CHECK(e.head == 13 && e.ndescs == 1 && e.out_num == 1 && e.in_num == 1);
	pk_save(&after, pk_region);
	{
		static const struct pk_store take[] = {
			{PK_E(3, 16), 16, false},    {PK_E(3, 4), 2, false},
			{PK_E(3, 6), 2, false},	     {PK_E(3, 8), 8, false},
			{PK_E(3, 0), 1, false},	     {PK_FREE_HEAD, 2, false},
			{PK_OLD_FREE_HEAD, 2, false}};
		static const uint16_t want[] = {10, 12, 13};

		pk_kill_points(&before, &after, take, 7, 7, want, 3, want, 3, 15 | 0x8000,
			       15 | 0x8000);
	}

	/* C completes, crossing the wrap (slot 15 + 2 slots: slot 1 in the
	 * second lap).  Killed before its used descriptor is published, C
	 * runs again; after, it does not; never is the region left so that
	 * a recovery refuses it or gets the used index wrong. */
	pk_save(&before, pk_region);
	vd_vq_push(&vq, 12, 2, 16);
	pk_save(&after, pk_region);
	CHECK_EQ(vd_vq_get_base(&vq) >> 16, 1);
	{
		static const struct pk_store put[] = {
			{PK_E(5, 2), 2, false},	      {PK_FREE_HEAD, 2, false},
			{PK_USED_WRAP, 1, false},     {PK_USED_IDX, 2, false},
			{16 * 15 + 8, 6, true},	      {16 * 15 + 14, 2, true},
			{PK_E(4, 0), 1, false},	      {PK_OLD_FREE_HEAD, 2, false},
			{PK_OLD_USED_WRAP, 1, false}, {PK_OLD_USED_IDX, 2, false}};
		static const uint16_t want_done[] = {10, 13}, want_before[] = {10, 12, 13};

		pk_kill_points(&before, &after, put, 10, 6, want_done, 2, want_before, 3, 1,
			       15 | 0x8000);
	}

	/* A region that does not hold together is refused and left alone.
	 * The base: A and D in flight, entries 0-2 and 3. */
	{
		static uint8_t bad[PK_REGION] __attribute__((aligned(64)));
		struct {
			size_t off;
			uint16_t v;
			int width;
		} cases[] = {
			{PK_E(9, 2), 6, 2}, /* free list loops */
			{PK_E(15, 2), 15, 2}, /* ... onto itself */
			{PK_E(8, 2), 10, 2}, /* skips entry 9: on no list */
			{PK_E(8, 2), 17, 2}, /* link out of range */
			{PK_FREE_HEAD, 17, 2}, /* head out of range */
			{PK_OLD_FREE_HEAD, 1, 2}, /* free list into a chain */
			{PK_USED_IDX, 16, 2}, /* used index out of range */
			{PK_USED_WRAP, 2, 1}, /* wrap counter not 0 or 1 */
			{PK_OLD_USED_WRAP, 7, 1}, /* ... */
			{PK_E(0, 0), 2, 1}, /* inflight flag not 0 or 1 */
			{PK_E(0, 6), 0, 2}, /* chain of 0 entries */
			{PK_E(0, 6), 17, 2}, /* longer than the ring */
			{PK_E(0, 6), 2, 2}, /* ends before its last */
			{PK_E(0, 4), 1, 2}, /* last is not where it ends */
			{PK_E(0, 4), 16, 2}, /* last out of range */
			{PK_E(1, 2), 3, 2}, /* chain runs into D's */
			{PK_E(1, 2), 20, 2}, /* link out of range */
			{PK_E(1, 0), 1, 1}, /* a member in flight too */
			{PK_E(6, 0), 1, 1}, /* fine: free, flag cleared */
			{PK_E(0, 18), 0, 2}, /* inside a chain without NEXT */
			{PK_E(0, 18), VRING_DESC_F_NEXT | VRING_DESC_F_INDIRECT, 2},
			{PK_E(2, 18), VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2}, /* last goes on */
		};

		/* C is done: push A and D later; the region now. */
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			struct vd_vq bvq;
			bool fine = cases[i].off == PK_E(6, 0);

			memcpy(bad, pk_region, PK_REGION);
			if (cases[i].width == 1)
				bad[cases[i].off] = (uint8_t)cases[i].v;
			else
				memcpy(bad + cases[i].off, &(uint16_t){htole16(cases[i].v)}, 2);
			memcpy(after.region, bad, PK_REGION);
			pk_vq(&bvq, PK_STALE_BASE);
			n = vd_vq_set_inflight(&bvq, bad, PK_REGION, pk_scratch_state);
			if (fine) {
				CHECK_EQ(n, 2);
				CHECK_EQ(bad[PK_E(6, 0)], 0);
				continue;
			}
			if (n != -EINVAL)
				fprintf(stderr, "bad region case %zu: %d\n", i, n);
			CHECK_EQ(n, -EINVAL);
			CHECK(bvq.inflight == NULL);
			CHECK(memcmp(bad, after.region, PK_REGION) == 0);
			CHECK_EQ(vd_vq_pop(&bvq, &e, iov, 8), 0); /* untracked, ring empty */
		}
	}

	/* A and D complete: nothing is in flight for the next back end, and
	 * it starts where this one stopped. */
	vd_vq_push(&vq, 10, 3, 1);
	vd_vq_push(&vq, 13, 1, 1);
	{
		struct vd_vq nvq;

		pk_vq(&nvq, PK_STALE_BASE);
		CHECK_EQ(vd_vq_set_inflight(&nvq, pk_region, PK_REGION, pk_state), 0);
		CHECK_EQ(vd_vq_get_base(&nvq), vd_vq_get_base(&vq));
		CHECK_EQ(vd_vq_get_base(&nvq), 5 | 5u << 16);
		for (unsigned i = 0; i < QSIZE; i++)
			CHECK_EQ(pk_region[PK_E(i, 0)], 0);
	}

	/* A resubmitted chain whose copy the front end spoiled after the
	 * check (a buffer outside guest memory): the queue breaks, nothing
	 * worse. */
	{
		struct vd_vq nvq;

		pk_vq(&nvq, (5u) | (5u << 16));
		memset(pk_region, 0, PK_REGION);
		slot = 5;
		wrap = false;
		REQUIRE(vd_vq_set_inflight(&nvq, pk_region, PK_REGION, pk_state) == 0);
		pk_chain(&slot, &wrap, 20, 2);
		REQUIRE(vd_vq_pop(&nvq, &e, iov, 8) == 1);
		pk_vq(&nvq, PK_STALE_BASE);
		REQUIRE(vd_vq_set_inflight(&nvq, pk_region, PK_REGION, pk_state) == 1);
		memcpy(pk_region + PK_E(0, 24), &(uint64_t){htole64(MEM_SIZE)}, 8);
		CHECK_EQ(vd_vq_pop(&nvq, &e, iov, 8), -EIO);
		CHECK(nvq.broken);
	}
	free(pk_region);
}

/* The front end switches to packed rings while a split ring is tracked:
 * the region's layout no longer fits, tracking stops (and a pop works). */
static void test_inflight_layout_change(void)
{
	static uint8_t region[PK_REGION] __attribute__((aligned(64)));
	struct vd_vq vq;
	struct vd_vq_elem e;
	struct iovec iov[8];

	memset(mem, 0, MEM_SIZE);
	memset(region, 0, sizeof(region));
	vd_vq_init(&vq, QSIZE, &gmem);
	vd_vq_set_features(&vq, 1ULL << VIRTIO_F_VERSION_1);
	vd_vq_set_rings(&vq, mem + DESC, mem + AVAIL, mem + USED);
	REQUIRE(vd_vq_set_inflight(&vq, region, vd_vq_inflight_size(QSIZE, false), pk_state) == 0);
	CHECK(vq.inflight != NULL);
	vd_vq_set_features(&vq, PK_FEATURES);
	CHECK(vq.inflight == NULL && vq.entry_next == NULL);
	pdesc(0, DATA, 16, 3, VRING_DESC_F_WRITE, true);
	CHECK_EQ(vd_vq_pop(&vq, &e, iov, 8), 1);
	CHECK_EQ(e.head, 3);
	/* Back to split: nothing to stop. */
	vd_vq_set_features(&vq, 0);
	CHECK(vq.inflight == NULL);
}

static void test_bad_queue_setup(void)
{
	struct vd_vq vq;

	CHECK_EQ(vd_vq_init(&vq, 3, &gmem), -EINVAL);
	CHECK_EQ(vd_vq_init(&vq, 2048, &gmem), -EINVAL);
	CHECK_EQ(vd_vq_init(&vq, 256, &gmem), 0);
	CHECK(!vd_vq_ready(&vq)); /* no rings yet */
}

int main(void)
{
	struct vd_error err = {0};
	struct vd_opts *o = NULL;
	int ret;

	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	mem = calloc(1, MEM_SIZE);
	if (!mem)
		return 1;
	ret = vd_opts_parse("size=1M", NULL, &o, &err);
	if (ret == 0)
		ret = vd_image_create(test_path("disk.raw"), "raw", o, &err);
	vd_opts_free(o);
	if (ret == 0)
		ret = vd_node_open(test_path("disk.raw"), "raw", NULL, VD_OPEN_RDWR, &node, &err);
	if (ret < 0) {
		fprintf(stderr, "cannot open the test image: %s\n", err.msg);
		return 1;
	}
	blk = test_blk_on(node);
	if (!blk)
		return 1;
	RUN(test_bad_queue_setup);
	RUN(test_basic_3desc);
	RUN(test_basic_2desc);
	RUN(test_indirect);
	RUN(test_event_idx);
	RUN(test_get_id);
	RUN(test_discard_write_zeroes);
	RUN(test_read_only);
	RUN(test_config);
	RUN(test_multiqueue);
	RUN(test_stop_drains);
	RUN(test_malformed);
	RUN(test_packed);
	RUN(test_packed_inflight);
	RUN(test_inflight_layout_change);
	vd_blk_unref(blk);
	vd_node_unref(node);
	free(mem);
	vd_loop_free(loop);
	return test_finish();
}
