/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk (hw/virtio/virtio-blk.c) on one split queue in fake guest memory.
 *
 * For transports that never wait (include/vdisk/virtio-blk.h, bounce_reads):
 * an orphaned read writes nothing, not even its data; with DMA off
 * completions are parked until it is back; reads over the bounce budget wait
 * their turn; vd_virtio_blk_drain() yields in a coroutine.  That disk is
 * null-co with a latency, so that requests are surely in flight.
 *
 * Request merging: adjacent reads or writes taken in one pass reach the
 * file as one request each run, with the data where it belongs; a flush
 * splits the batch; request-merging=off and bounced reads do not merge.
 * That disk is a raw file, whose file node counts the requests.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/block.h>
#include <vdisk/coroutine.h>
#include <vdisk/opts.h>
#include <vdisk/virtio-blk.h>

#include "tests/lib/test.h"

#define MEM_SIZE (2u << 20)
#define QSIZE 128
#define DESC 0x0000
#define AVAIL 0x1000
#define USED 0x2000
#define HDR 0x10000
#define STATUS 0x10100 /* one status byte per request, 16 apart */
#define DATA 0x100000 /* 1 MiB */
#define DATA_SIZE (1u << 20)

#include "tests/lib/blk.h"
#include "tests/lib/guest-mem.h"

static struct vd_loop *loop;
static struct vd_node *node;
static struct vd_blk *blk; /* on node */
static int notifies;

static void on_notify(void *opaque, unsigned q)
{
	notifies++;
}

static const struct vd_virtio_blk_ops ops = {.notify = on_notify};

static uint16_t used_idx(void)
{
	uint16_t v;

	memcpy(&v, mem + USED + 2, 2);
	return le16toh(v);
}

struct dev {
	struct vd_virtio_blk *b;
	uint16_t next_desc, avail_idx;
};

static int dev_init_conf(struct dev *d, const struct vd_virtio_blk_conf *conf);

static int dev_init(struct dev *d, bool bounce)
{
	struct vd_virtio_blk_conf conf = {
		.blk = blk, .num_queues = 1, .queue_size = QSIZE, .bounce_reads = bounce};

	return dev_init_conf(d, &conf);
}

static int dev_init_conf(struct dev *d, const struct vd_virtio_blk_conf *conf)
{
	struct vd_vq *vq;
	int ret;

	memset(mem, 0, MEM_SIZE);
	memset(d, 0, sizeof(*d));
	notifies = 0;
	ret = vd_virtio_blk_new(conf, &ops, NULL, &d->b);
	if (ret < 0)
		return ret;
	vq = vd_virtio_blk_queue(d->b, 0);
	vd_vq_init(vq, QSIZE, &gmem);
	vd_vq_set_rings(vq, mem + DESC, mem + AVAIL, mem + USED);
	vd_virtio_blk_set_features(d->b, 1ULL << VIRTIO_F_VERSION_1);
	return 0;
}

static void put_desc(struct dev *d, uint64_t addr, uint32_t len, uint16_t flags, bool last)
{
	uint64_t a = DESC + 16 * d->next_desc;

	w64(a, addr);
	w32(a + 8, len);
	w16(a + 12, flags | (last ? 0 : VRING_DESC_F_NEXT));
	w16(a + 14, (uint16_t)((d->next_desc + 1) % QSIZE));
	d->next_desc = (uint16_t)((d->next_desc + 1) % QSIZE);
}

/* A read of @chunks times the 1 MiB data area (the same guest buffer each
 * time) from sector 0, with status byte @n; made available, not kicked. */
static void add_read(struct dev *d, int n, unsigned chunks)
{
	uint16_t head = d->next_desc;

	w32(HDR + 32 * n, VIRTIO_BLK_T_IN);
	w32(HDR + 32 * n + 4, 0);
	w64(HDR + 32 * n + 8, 0);
	mem[STATUS + 16 * n] = 0xff;
	put_desc(d, HDR + 32 * n, 16, 0, false);
	for (unsigned i = 0; i < chunks; i++)
		put_desc(d, DATA, DATA_SIZE, VRING_DESC_F_WRITE, false);
	put_desc(d, STATUS + 16 * n, 1, VRING_DESC_F_WRITE, true);
	w16(AVAIL + 4 + 2 * (d->avail_idx % QSIZE), head);
	d->avail_idx++;
	w16(AVAIL + 2, d->avail_idx);
}

static bool data_is(uint8_t v)
{
	for (unsigned i = 0; i < DATA_SIZE; i++)
		if (mem[DATA + i] != v)
			return false;
	return true;
}

static void settle(struct vd_virtio_blk *b)
{
	while (vd_virtio_blk_inflight(b, ~0u))
		vd_loop_run_once(loop, true);
	while (vd_loop_run_once(loop, false))
		;
}

/* A reset orphans a read in flight: with bounce buffers its data never
 * reaches the guest; without, it does (why transports that do not wait
 * want them). */
static void test_orphaned_read(void)
{
	for (int bounce = 1; bounce >= 0; bounce--) {
		struct dev d;

		REQUIRE(dev_init(&d, bounce) == 0);
		memset(mem + DATA, 0xaa, DATA_SIZE);
		add_read(&d, 0, 1);
		vd_virtio_blk_handle_queue(d.b, 0);
		CHECK_EQ(vd_virtio_blk_inflight(d.b, 0), 1);
		vd_virtio_blk_reset_nowait(d.b);
		settle(d.b);
		CHECK_EQ(mem[STATUS], 0xff);
		CHECK_EQ(used_idx(), 0);
		CHECK_EQ(notifies, 0);
		CHECK(data_is(0xaa) == (bool)bounce);
		vd_virtio_blk_free(d.b);
	}
}

/* DMA off with a read in flight: it completes into the parking, nothing in
 * guest memory changes; DMA on: data, status, used entry, notification. */
static void test_parked(void)
{
	struct dev d;

	REQUIRE(dev_init(&d, true) == 0);
	memset(mem + DATA, 0xaa, DATA_SIZE);
	add_read(&d, 0, 1);
	vd_virtio_blk_handle_queue(d.b, 0);
	vd_virtio_blk_set_dma(d.b, false);
	settle(d.b);
	CHECK_EQ(vd_virtio_blk_parked(d.b), 1);
	CHECK_EQ(mem[STATUS], 0xff);
	CHECK_EQ(used_idx(), 0);
	CHECK(data_is(0xaa));
	vd_virtio_blk_set_dma(d.b, true);
	CHECK_EQ(vd_virtio_blk_parked(d.b), 0);
	CHECK_EQ(mem[STATUS], VIRTIO_BLK_S_OK);
	CHECK_EQ(used_idx(), 1);
	CHECK_EQ(notifies, 1);
	CHECK(data_is(0));

	/* Parked, then a reset: dropped, and DMA is on again. */
	memset(mem + DATA, 0xaa, DATA_SIZE);
	add_read(&d, 1, 1);
	vd_virtio_blk_handle_queue(d.b, 0);
	vd_virtio_blk_set_dma(d.b, false);
	settle(d.b);
	vd_virtio_blk_reset_nowait(d.b);
	CHECK_EQ(vd_virtio_blk_parked(d.b), 0);
	vd_virtio_blk_set_dma(d.b, true);
	CHECK_EQ(mem[STATUS + 16], 0xff);
	CHECK_EQ(used_idx(), 1);
	CHECK(data_is(0xaa));
	vd_virtio_blk_free(d.b);
}

/* Two reads of 33 MiB each (the 64 MiB budget holds one): the second
 * waits, not counted in flight, and starts when the first is done; a reset
 * drops a waiting read. */
static void test_budget(void)
{
	struct dev d;

	REQUIRE(dev_init(&d, true) == 0);
	add_read(&d, 0, 33);
	add_read(&d, 1, 33);
	vd_virtio_blk_handle_queue(d.b, 0);
	CHECK_EQ(vd_virtio_blk_inflight(d.b, 0), 1);
	settle(d.b);
	CHECK_EQ(used_idx(), 2);
	CHECK_EQ(mem[STATUS], VIRTIO_BLK_S_OK);
	CHECK_EQ(mem[STATUS + 16], VIRTIO_BLK_S_OK);

	memset(mem + DATA, 0xaa, DATA_SIZE);
	add_read(&d, 2, 33);
	add_read(&d, 3, 33);
	vd_virtio_blk_handle_queue(d.b, 0);
	vd_virtio_blk_reset_nowait(d.b);
	settle(d.b);
	CHECK_EQ(mem[STATUS + 32], 0xff);
	CHECK_EQ(mem[STATUS + 48], 0xff);
	CHECK_EQ(used_idx(), 2);
	CHECK(data_is(0xaa));
	vd_virtio_blk_free(d.b);
}

struct drain_ctx {
	struct vd_virtio_blk *b;
	uint8_t status_at_return;
	uint16_t used_at_return;
};

static void drain_entry(void *opaque)
{
	struct drain_ctx *c = opaque;

	vd_virtio_blk_drain(c->b);
	c->status_at_return = mem[STATUS];
	c->used_at_return = used_idx();
}

/* vd_virtio_blk_drain() in a coroutine (QMP stop's): returns once the
 * request is complete. */
static void test_drain_coroutine(void)
{
	struct dev d;
	struct drain_ctx c = {0};

	REQUIRE(dev_init(&d, true) == 0);
	add_read(&d, 0, 1);
	vd_virtio_blk_handle_queue(d.b, 0);
	c.b = d.b;
	CHECK_EQ(vd_co_run_sync(drain_entry, &c), 0);
	CHECK_EQ(c.status_at_return, VIRTIO_BLK_S_OK);
	CHECK_EQ(c.used_at_return, 1);
	vd_virtio_blk_free(d.b);
}

/* --- request merging ------------------------------------------------------- */

/* Request @n: @type at @sector, @len bytes of guest memory at @buf (for
 * FLUSH, none); made available, not kicked. */
static void add_rw(struct dev *d, int n, uint32_t type, uint64_t sector, uint64_t buf, uint32_t len)
{
	uint16_t head = d->next_desc;

	w32(HDR + 32 * n, type);
	w32(HDR + 32 * n + 4, 0);
	w64(HDR + 32 * n + 8, sector);
	mem[STATUS + 16 * n] = 0xff;
	put_desc(d, HDR + 32 * n, 16, 0, false);
	if (len)
		put_desc(d, buf, len, type == VIRTIO_BLK_T_IN ? VRING_DESC_F_WRITE : 0, false);
	put_desc(d, STATUS + 16 * n, 1, VRING_DESC_F_WRITE, true);
	w16(AVAIL + 4 + 2 * (d->avail_idx % QSIZE), head);
	d->avail_idx++;
	w16(AVAIL + 2, d->avail_idx);
}

/* The file's byte at @off. */
static uint8_t pattern(uint64_t off)
{
	return (uint8_t)((off >> 9) * 7 + 1);
}

static struct vd_node *open_file_disk(void)
{
	const char *p = test_path("merge.raw");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	uint8_t *buf = malloc(1 << 20);
	FILE *f = fopen(p, "w");

	if (!buf || !f) {
		free(buf);
		if (f)
			fclose(f);
		return NULL;
	}
	for (unsigned i = 0; i < (1u << 20); i++)
		buf[i] = pattern(i);
	if (fwrite(buf, 1, 1 << 20, f) != 1 << 20) {
		fclose(f);
		free(buf);
		return NULL;
	}
	fclose(f);
	free(buf);
	if (vd_node_open(p, "raw", NULL, VD_OPEN_RDWR, &n, &err) < 0) {
		fprintf(stderr, "open %s: %s\n", p, err.msg);
		return NULL;
	}
	return n;
}

static uint64_t file_ops(struct vd_node *n, enum vd_acct_type t)
{
	struct vd_acct_stats st;

	vd_node_get_stats(vd_node_file_child(n), &st);
	return st.op[t].ops;
}

static bool guest_holds_file(uint64_t buf, uint64_t sector, uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		if (mem[buf + i] != pattern((sector << 9) + i))
			return false;
	return true;
}

/* Five reads in one pass: sectors 0, 8, 16 (adjacent), 40, 32 (adjacent,
 * in the other order in the ring): two reads reach the file, every guest
 * buffer gets its own data, the node counts five reads, three merged. */
static void merged_reads(bool no_merge, bool bounce, uint64_t want_file_reads)
{
	static const uint64_t sectors[] = {0, 8, 16, 40, 32};
	struct vd_node *disk = open_file_disk();
	struct vd_virtio_blk_conf conf = {
		.num_queues = 1, .queue_size = QSIZE, .no_merge = no_merge, .bounce_reads = bounce};
	struct vd_acct_stats st;
	struct dev d;

	REQUIRE(disk);
	conf.blk = test_blk_on(disk);
	REQUIRE(conf.blk);
	REQUIRE(dev_init_conf(&d, &conf) == 0);
	for (int i = 0; i < 5; i++)
		add_rw(&d, i, VIRTIO_BLK_T_IN, sectors[i], DATA + 4096 * (uint64_t)i, 4096);
	vd_virtio_blk_handle_queue(d.b, 0);
	settle(d.b);
	CHECK_EQ(used_idx(), 5);
	for (int i = 0; i < 5; i++) {
		CHECK_EQ(mem[STATUS + 16 * i], VIRTIO_BLK_S_OK);
		CHECK(guest_holds_file(DATA + 4096 * (uint64_t)i, sectors[i], 4096));
	}
	CHECK_EQ(file_ops(disk, VD_ACCT_READ), want_file_reads);
	vd_node_get_stats(disk, &st);
	CHECK_EQ(st.op[VD_ACCT_READ].ops, 5);
	CHECK_EQ(st.op[VD_ACCT_READ].merged, 5 - want_file_reads);
	vd_virtio_blk_free(d.b);
	vd_blk_unref(conf.blk);
	vd_node_unref(disk);
}

static void test_merge_reads(void)
{
	merged_reads(false, false, 2);
}

static void test_merge_off(void)
{
	merged_reads(true, false, 5);
}

static void test_merge_not_bounced(void)
{
	merged_reads(false, true, 5);
}

/* Writes at sectors 8, 0 (adjacent), FLUSH, 16, 24 (adjacent): the flush
 * comes after the first pair is submitted; two writes and one flush reach
 * the file, and it holds each guest buffer where it belongs. */
static void test_merge_writes_flush(void)
{
	static const uint64_t sectors[] = {8, 0, 0, 16, 24};
	struct vd_node *disk = open_file_disk();
	struct vd_virtio_blk_conf conf = {.num_queues = 1, .queue_size = QSIZE};
	uint8_t back[4096];
	struct dev d;

	REQUIRE(disk);
	conf.blk = test_blk_on(disk);
	REQUIRE(conf.blk);
	REQUIRE(dev_init_conf(&d, &conf) == 0);
	for (int i = 0; i < 5; i++) {
		memset(mem + DATA + 4096 * i, 0xc0 + i, 4096);
		if (i == 2)
			add_rw(&d, i, VIRTIO_BLK_T_FLUSH, 0, 0, 0);
		else
			add_rw(&d, i, VIRTIO_BLK_T_OUT, sectors[i], DATA + 4096 * (uint64_t)i,
			       4096);
	}
	vd_virtio_blk_handle_queue(d.b, 0);
	settle(d.b);
	CHECK_EQ(used_idx(), 5);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(mem[STATUS + 16 * i], VIRTIO_BLK_S_OK);
	CHECK_EQ(file_ops(disk, VD_ACCT_WRITE), 2);
	CHECK_EQ(file_ops(disk, VD_ACCT_FLUSH), 1);
	for (int i = 0; i < 5; i++) {
		if (i == 2)
			continue;
		CHECK_EQ(vd_node_pread(disk, (int64_t)sectors[i] << 9, back, 4096), 0);
		CHECK(back[0] == 0xc0 + i && back[4095] == 0xc0 + i);
	}
	vd_virtio_blk_free(d.b);
	vd_blk_unref(conf.blk);
	vd_node_unref(disk);
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
	ret = vd_opts_parse("size=128M,latency-ns=20000000,read-zeroes=on", NULL, &o, &err);
	if (ret == 0)
		ret = vd_node_open("null-co://", "null-co", o, VD_OPEN_RDWR, &node, &err);
	vd_opts_free(o);
	if (ret < 0) {
		fprintf(stderr, "cannot open null-co: %s\n", err.msg);
		return 1;
	}
	blk = test_blk_on(node);
	if (!blk)
		return 1;
	RUN(test_orphaned_read);
	RUN(test_parked);
	RUN(test_budget);
	RUN(test_drain_coroutine);
	RUN(test_merge_reads);
	RUN(test_merge_off);
	RUN(test_merge_not_bounced);
	RUN(test_merge_writes_flush);
	vd_blk_unref(blk);
	vd_node_unref(node);
	free(mem);
	vd_loop_free(loop);
	return test_finish();
}
