/* SPDX-License-Identifier: MIT */
/*
 * qcow2 driver: header validation of crafted headers, refcount entries of
 * every width, metadata caches and their options, refcount structure growth,
 * and concurrent allocating writes to one cluster.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vdisk/block.h>
#include <vdisk/block_driver.h>

#include "block/drivers/qcow2/qcow2.h"
#include "tests/lib/test.h"

static void put64(uint8_t *p, uint64_t v)
{
	qcow2_put_be64(p, v);
}
static void put32(uint8_t *p, uint32_t v)
{
	qcow2_put_be32(p, v);
}

static int create(const char *path, const char *options, const char *size)
{
	struct vd_opts *o = NULL;
	struct vd_error err = {0};
	int ret;

	if (vd_opts_parse(options ? options : "", NULL, &o, &err) < 0)
		return -EINVAL;
	vd_opts_set(o, "size", size);
	ret = vd_image_create(path, "qcow2", o, &err);
	if (ret < 0)
		fprintf(stderr, "create: %s\n", err.msg);
	vd_opts_free(o);
	return ret;
}

static int open_img(const char *path, const char *options, int flags, struct vd_node **n,
		    struct vd_error *err)
{
	struct vd_opts *o = NULL;
	int ret;

	if (vd_opts_parse(options ? options : "", NULL, &o, err) < 0)
		return -EINVAL;
	ret = vd_node_open(path, "qcow2", o, flags, n, err);
	vd_opts_free(o);
	return ret;
}

/* Patch @len bytes at @off of a fresh 1 MiB image, open it, return the result. */
static int open_patched(const char *opts, uint64_t off, const void *bytes, size_t len, int flags,
			char *msg)
{
	const char *path = test_path("crafted.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	int fd, ret;

	if (create(path, opts, "1M") < 0)
		return -999;
	fd = open(path, O_WRONLY);
	if (fd < 0 || pwrite(fd, bytes, len, (off_t)off) != (ssize_t)len) {
		if (fd >= 0)
			close(fd);
		return -998;
	}
	close(fd);
	ret = open_img(path, NULL, flags, &n, &err);
	if (msg)
		snprintf(msg, 512, "%s", err.msg);
	if (ret == 0) {
		uint8_t buf[4096];
		/* Must not crash reading whatever it accepted. */
		vd_node_pread(n, 0, buf, sizeof(buf));
		vd_node_unref(n);
	}
	return ret;
}

static int patch32(uint64_t off, uint32_t v, int flags)
{
	uint8_t b[4];
	put32(b, v);
	return open_patched(NULL, off, b, 4, flags, NULL);
}

static int patch64(uint64_t off, uint64_t v, int flags)
{
	uint8_t b[8];
	put64(b, v);
	return open_patched(NULL, off, b, 8, flags, NULL);
}

static void test_header_validation(void)
{
	char msg[512];
	uint8_t b[8];

	CHECK_EQ(patch32(0, 0x12345678, 0), -EINVAL); /* magic */
	CHECK_EQ(patch32(4, 1, 0), -ENOTSUP); /* version */
	CHECK_EQ(patch32(4, 4, 0), -ENOTSUP);
	CHECK_EQ(patch32(20, 8, 0), -EINVAL); /* cluster_bits */
	CHECK_EQ(patch32(20, 22, 0), -EINVAL);
	CHECK_EQ(patch32(20, 0xffffffff, 0), -EINVAL);
	CHECK_EQ(patch64(24, UINT64_MAX, 0), -EFBIG); /* size */
	CHECK_EQ(patch64(24, 1ull << 40, 0), -EINVAL); /* L1 too small for it */
	CHECK_EQ(patch32(32, 1, 0), -ENOTSUP); /* crypt_method */
	CHECK_EQ(patch32(36, 0, 0), -EINVAL); /* l1_size < needed */
	CHECK_EQ(patch32(36, 0x7fffffff, 0), -EFBIG); /* l1 above 32 MiB */
	CHECK_EQ(patch64(40, 0x30001, 0), -EINVAL); /* l1 offset unaligned */
	CHECK_EQ(patch64(40, 0, 0), -EINVAL); /* l1 over the header */
	CHECK_EQ(patch64(40, 0xfffffffffff0000ull, 0), -EINVAL); /* past 2^56 */
	CHECK_EQ(patch64(48, 0x10200, 0), -EINVAL); /* reftable unaligned */
	CHECK_EQ(patch32(56, 0, 0), -EINVAL); /* no reftable */
	CHECK_EQ(patch32(56, 1000, 0), -EINVAL); /* reftable above 8 MiB */
	CHECK_EQ(patch32(60, 70000, 0), -EINVAL); /* snapshots */
	CHECK_EQ(patch64(8, 0x20000, 0), -EINVAL); /* backing name outside cluster 0 */
	CHECK_EQ(patch32(96, 7, 0), -EINVAL); /* refcount_order */
	CHECK_EQ(patch32(100, 100, 0), -EINVAL); /* header_length */
	CHECK_EQ(patch32(100, 0x20000, 0), -EINVAL);
	/* Incompatible features. */
	put64(b, 1ull << 40);
	CHECK_EQ(open_patched(NULL, 72, b, 8, 0, msg), -ENOTSUP);
	CHECK(strstr(msg, "Unsupported qcow2 feature") != NULL);
	put64(b, QCOW2_INCOMPAT_DATA_FILE);
	CHECK_EQ(open_patched(NULL, 72, b, 8, 0, msg), -ENOTSUP);
	put64(b, QCOW2_INCOMPAT_COMPRESSION); /* bit without a type */
	CHECK_EQ(open_patched(NULL, 72, b, 8, 0, msg), -EINVAL);
	put64(b, QCOW2_INCOMPAT_EXTL2); /* on 4 KiB clusters */
	CHECK_EQ(open_patched("cluster_size=4096", 72, b, 8, 0, msg), -EINVAL);
	put64(b, QCOW2_INCOMPAT_CORRUPT);
	CHECK_EQ(open_patched(NULL, 72, b, 8, 0, msg), 0); /* read-only is fine */
	CHECK_EQ(open_patched(NULL, 72, b, 8, VD_OPEN_RDWR, msg), -EACCES);
	put64(b, QCOW2_INCOMPAT_DIRTY);
	CHECK_EQ(open_patched(NULL, 72, b, 8, 0, msg), 0);
	/* Read-write: refcounts rebuilt (check.c), then it opens. */
	CHECK_EQ(open_patched(NULL, 72, b, 8, VD_OPEN_RDWR, msg), 0);
	/* Compression type byte without the bit; unknown type. */
	b[0] = 1;
	CHECK_EQ(open_patched(NULL, 104, b, 1, 0, msg), -EINVAL);
	/* Unknown bit named from the feature table: make "bitmaps" entry
	 * (autoclear 0) an incompatible bit 0x20 entry. */
	{
		uint8_t e[2] = {0, 5};
		const char *path = test_path("crafted.qcow2");
		struct vd_error err = {0};
		struct vd_node *n = NULL;
		int fd;
		REQUIRE(create(path, NULL, "1M") == 0);
		fd = open(path, O_RDWR);
		/* Feature table starts at 112 + 8; entry 6 is "bitmaps". */
		REQUIRE(pwrite(fd, e, 2, 120 + 6 * 48) == 2);
		put64(b, 1ull << 5);
		REQUIRE(pwrite(fd, b, 8, 72) == 8);
		close(fd);
		CHECK_EQ(open_img(path, NULL, 0, &n, &err), -ENOTSUP);
		CHECK(strstr(err.msg, "bitmaps") != NULL);
		if (!strstr(err.msg, "bitmaps"))
			fprintf(stderr, "got: %s\n", err.msg);
	}
	/* Header extension longer than the cluster. */
	{
		uint8_t ext[8];
		put32(ext, 0x12345678);
		put32(ext + 4, 0x7fffffff);
		CHECK_EQ(open_patched(NULL, 112, ext, 8, 0, msg), -EINVAL);
		put32(ext, QCOW2_EXT_CRYPTO);
		put32(ext + 4, 8);
		CHECK_EQ(open_patched(NULL, 112, ext, 8, 0, msg), -ENOTSUP);
	}
}

static void test_refcount_entries(void)
{
	for (uint32_t order = 0; order <= 6; order++) {
		uint8_t block[512];
		uint64_t entries = 512 * 8 >> order;
		uint64_t max = order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;

		memset(block, 0, sizeof(block));
		for (uint64_t i = 0; i < entries; i++)
			qcow2_refcount_set_entry(block, order, i,
						 (i * 0x9e3779b97f4a7c15ull) & max);
		for (uint64_t i = 0; i < entries; i++)
			CHECK_EQ(qcow2_refcount_get_entry(block, order, i),
				 (i * 0x9e3779b97f4a7c15ull) & max);
		/* Setting one entry leaves its neighbours. */
		qcow2_refcount_set_entry(block, order, 5, max);
		CHECK(qcow2_refcount_get_entry(block, order, 5) == max);
		CHECK(qcow2_refcount_get_entry(block, order, 4) ==
		      ((4 * 0x9e3779b97f4a7c15ull) & max));
		CHECK(qcow2_refcount_get_entry(block, order, 6) ==
		      ((6 * 0x9e3779b97f4a7c15ull) & max));
	}
	/* The on-disk bit order below 8 bits: lowest bits first (as QEMU). */
	{
		uint8_t b[1] = {0};
		qcow2_refcount_set_entry(b, 0, 0, 1);
		CHECK_EQ(b[0], 1);
		qcow2_refcount_set_entry(b, 2, 1, 0xf);
		CHECK_EQ(b[0], 0xf1);
	}
}

static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)((i + seed) * 131 + (seed >> 3));
}

/* Scattered writes with tiny caches (constant eviction) read back right, and
 * again after reopening with default caches. */
static void test_small_caches(void)
{
	const char *path = test_path("cache.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	uint8_t *buf = malloc(70000), *back = malloc(70000);
	int ret;

	REQUIRE(buf && back);
	REQUIRE(create(path, "cluster_size=4096", "64M") == 0);
	ret = open_img(path, "l2-cache-size=1k,refcount-cache-size=1k,l2-cache-entry-size=512",
		       VD_OPEN_RDWR, &n, &err);
	REQUIRE(ret == 0);
	for (int i = 0; i < 40; i++) {
		fill(buf, 70000, (uint64_t)i);
		CHECK_EQ(vd_node_pwrite(n, (int64_t)i * 1600007 % (60 << 20), buf, 70000, 0), 0);
	}
	for (int i = 0; i < 40; i++) {
		fill(buf, 70000, (uint64_t)i);
		/* Later writes may overlap earlier ones: check the last one only. */
		if (i == 39) {
			CHECK_EQ(vd_node_pread(n, (int64_t)i * 1600007 % (60 << 20), back, 70000),
				 0);
			CHECK(memcmp(buf, back, 70000) == 0);
		}
	}
	vd_node_unref(n);
	REQUIRE(open_img(path, NULL, 0, &n, &err) == 0);
	fill(buf, 70000, 39);
	CHECK_EQ(vd_node_pread(n, (int64_t)39 * 1600007 % (60 << 20), back, 70000), 0);
	CHECK(memcmp(buf, back, 70000) == 0);
	vd_node_unref(n);

	/* Bad cache options. */
	CHECK_EQ(open_img(path, "l2-cache-entry-size=3000", 0, &n, &err), -EINVAL);
	CHECK_EQ(open_img(path, "l2-cache-entry-size=8192", 0, &n, &err), -EINVAL);
	CHECK_EQ(open_img(path, "l2-cache-size=1M,refcount-cache-size=1M,cache-size=2M", 0, &n,
			  &err),
		 -EINVAL);
	CHECK_EQ(open_img(path, "cache-clean-interval=99999999999", 0, &n, &err), -EINVAL);
	free(buf);
	free(back);
}

static int qemu_img_check(const char *path)
{
	char cmd[1024];
	if (system("command -v qemu-img >/dev/null 2>&1") != 0)
		return 0;
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s'", path);
	return system(cmd);
}

/* 512-byte clusters with 64-bit refcounts: a refcount block covers 64
 * clusters, the one-cluster table 64 blocks: writing 3 MiB grows both. */
static void test_refcount_growth(void)
{
	const char *path = test_path("grow.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	uint8_t *buf = malloc(1 << 20), *back = malloc(1 << 20);

	REQUIRE(buf && back);
	REQUIRE(create(path, "cluster_size=512,refcount_bits=64", "8M") == 0);
	REQUIRE(open_img(path, NULL, VD_OPEN_RDWR, &n, &err) == 0);
	for (int i = 0; i < 3; i++) {
		fill(buf, 1 << 20, (uint64_t)i + 100);
		CHECK_EQ(vd_node_pwrite(n, (int64_t)i << 20, buf, 1 << 20, 0), 0);
	}
	/* Free some and allocate again: freed clusters are reused. */
	CHECK_EQ(vd_node_pdiscard(n, 0, 1 << 20), 0);
	fill(buf, 1 << 20, 7);
	CHECK_EQ(vd_node_pwrite(n, 4 << 20, buf, 1 << 20, 0), 0);
	vd_node_unref(n);
	CHECK_EQ(qemu_img_check(path), 0);
	REQUIRE(open_img(path, NULL, 0, &n, &err) == 0);
	CHECK_EQ(vd_node_pread(n, 4 << 20, back, 1 << 20), 0);
	CHECK(memcmp(buf, back, 1 << 20) == 0);
	fill(buf, 1 << 20, 102);
	CHECK_EQ(vd_node_pread(n, 2 << 20, back, 1 << 20), 0);
	CHECK(memcmp(buf, back, 1 << 20) == 0);
	memset(buf, 0, 1 << 20);
	CHECK_EQ(vd_node_pread(n, 0, back, 1 << 20), 0);
	CHECK(memcmp(buf, back, 1 << 20) == 0);
	vd_node_unref(n);
	free(buf);
	free(back);
}

struct aio_state {
	int calls, ret;
};

static void aio_cb(void *opaque, int ret)
{
	struct aio_state *s = opaque;
	s->calls++;
	s->ret = ret;
}

/* Two writes into the two halves of one unallocated cluster, in flight
 * together: the cluster is allocated once and holds both halves. */
static void test_concurrent_allocation(void)
{
	const char *path = test_path("conc.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	uint8_t a[32768], b[32768], back[65536];
	struct vd_qiov qa, qb;
	struct aio_state sa = {0}, sb = {0};
	int64_t pnum = 0, map0 = -1, map1 = -1;
	struct vd_node *file = NULL;

	REQUIRE(create(path, NULL, "16M") == 0);
	REQUIRE(open_img(path, NULL, VD_OPEN_RDWR, &n, &err) == 0);
	memset(a, 0xaa, sizeof(a));
	memset(b, 0xbb, sizeof(b));
	vd_qiov_init_buf(&qa, a, sizeof(a));
	vd_qiov_init_buf(&qb, b, sizeof(b));
	vd_node_aio_pwritev(n, 65536, &qa, 0, aio_cb, &sa);
	vd_node_aio_pwritev(n, 65536 + 32768, &qb, 0, aio_cb, &sb);
	while (!sa.calls || !sb.calls)
		vd_loop_run_once(vd_loop_current(), true);
	CHECK_EQ(sa.ret, 0);
	CHECK_EQ(sb.ret, 0);
	CHECK_EQ(vd_node_pread(n, 65536, back, 65536), 0);
	CHECK(memcmp(back, a, 32768) == 0);
	CHECK(memcmp(back + 32768, b, 32768) == 0);
	CHECK(vd_node_block_status(n, 65536, 32768, &pnum, &map0, &file) & VD_BLOCK_OFFSET_VALID);
	CHECK(vd_node_block_status(n, 65536 + 32768, 32768, &pnum, &map1, &file) &
	      VD_BLOCK_OFFSET_VALID);
	CHECK_EQ(map1, map0 + 32768);
	vd_node_unref(n);
	/* Header, reftable, refblock, L1, L2, one data cluster. */
	{
		FILE *f = fopen(path, "rb");
		REQUIRE(f);
		fseek(f, 0, SEEK_END);
		CHECK_EQ(ftell(f), 6 * 65536);
		fclose(f);
	}
	CHECK_EQ(qemu_img_check(path), 0);
}

/* The corrupt bit: an L1 entry pointing at the refcount table makes the
 * next allocating write fail with -EIO, the node read-only and the image
 * corrupt for later read-write opens. */
static void test_corruption(void)
{
	const char *path = test_path("corrupt.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	uint8_t buf[512] = {1}, b[8];
	int fd;

	REQUIRE(create(path, NULL, "16M") == 0);
	fd = open(path, O_RDWR);
	REQUIRE(fd >= 0);
	/* L1[0] -> the refcount block at 0x20000, as a "COPIED" L2 table. */
	put64(b, 0x20000 | QCOW2_OFLAG_COPIED);
	REQUIRE(pwrite(fd, b, 8, 0x30000) == 8);
	close(fd);
	REQUIRE(open_img(path, NULL, VD_OPEN_RDWR, &n, &err) == 0);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, sizeof(buf), 0), -EIO);
	CHECK(vd_node_is_read_only(n));
	vd_node_unref(n);
	CHECK_EQ(open_img(path, NULL, VD_OPEN_RDWR, &n, &err), -EACCES);
}

/* Compressed clusters written by the driver read back; write-zeroes and
 * discard free clusters that later writes reuse; lazy refcounts set the
 * dirty bit while open and clear it on close. */
static void test_compress_zero_lazy(void)
{
	const char *path = test_path("misc.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	uint8_t buf[65536], back[65536], hdr[8];
	struct vd_qiov q;
	int64_t pnum = 0, map = 0;
	struct vd_node *file = NULL;
	int fd;

	REQUIRE(create(path, "lazy_refcounts=on", "4M") == 0);
	REQUIRE(open_img(path, NULL, VD_OPEN_RDWR, &n, &err) == 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i / 100);
	vd_qiov_init_buf(&q, buf, sizeof(buf));
	CHECK_EQ(vd_node_pwritev(n, 0, &q, VD_REQ_COMPRESSED), 0);
	CHECK_EQ(vd_node_pwritev(n, 65536, &q, VD_REQ_COMPRESSED), 0);
	/* Compression never overwrites (as QEMU). */
	CHECK_EQ(vd_node_pwritev(n, 0, &q, VD_REQ_COMPRESSED), -EIO);
	CHECK_EQ(vd_node_pread(n, 65536, back, sizeof(back)), 0);
	CHECK(memcmp(buf, back, sizeof(buf)) == 0);
	CHECK_EQ(vd_node_block_status(n, 0, 65536, &pnum, &map, &file),
		 VD_BLOCK_DATA | VD_BLOCK_ALLOCATED);
	/* The dirty bit is on disk while we are open. */
	fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0);
	CHECK_EQ(pread(fd, hdr, 8, 72), 8);
	CHECK(qcow2_be64(hdr) & QCOW2_INCOMPAT_DIRTY);
	/* Normal data, then zero it with unmap: reads zero, is a zero cluster. */
	CHECK_EQ(vd_node_pwrite(n, 3 * 65536, buf, sizeof(buf), 0), 0);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 3 * 65536, 65536, VD_REQ_MAY_UNMAP), 0);
	CHECK_EQ(vd_node_block_status(n, 3 * 65536, 65536, &pnum, &map, &file) & VD_BLOCK_ZERO,
		 VD_BLOCK_ZERO);
	CHECK_EQ(vd_node_pread(n, 3 * 65536, back, sizeof(back)), 0);
	memset(buf, 0, sizeof(buf));
	CHECK(memcmp(buf, back, sizeof(back)) == 0);
	CHECK_EQ(vd_node_pdiscard(n, 0, 2 * 65536), 0);
	CHECK_EQ(vd_node_pread(n, 0, back, sizeof(back)), 0);
	CHECK(memcmp(buf, back, sizeof(back)) == 0);
	vd_node_unref(n);
	CHECK_EQ(pread(fd, hdr, 8, 72), 8);
	CHECK_EQ(qcow2_be64(hdr) & QCOW2_INCOMPAT_DIRTY, 0);
	close(fd);
	CHECK_EQ(qemu_img_check(path), 0);
}

/* Backing names that look like protocols are not opened from the header;
 * the user may still name the backing, or none. */
static void test_backing_names(void)
{
	const char *path = test_path("overlay.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	int ret;

	REQUIRE(create(path, "backing_file=nbd:localhost:10809,backing_fmt=raw", "1M") == 0);
	ret = open_img(path, NULL, 0, &n, &err);
	CHECK_EQ(ret, -EINVAL);
	CHECK(strstr(err.msg, "protocol") != NULL);
	CHECK_EQ(open_img(path, NULL, VD_OPEN_NO_BACKING, &n, &err), 0);
	if (n)
		vd_node_unref(n);
	n = NULL;
	CHECK_EQ(open_img(path, "backing=null", 0, &n, &err), 0);
	if (n)
		vd_node_unref(n);
	REQUIRE(create(path, "backing_file=json:{},backing_fmt=raw", "1M") == 0);
	CHECK_EQ(open_img(path, NULL, 0, &n, &err), -EINVAL);
	/* Creation validation as qemu-img's. */
	CHECK_EQ(create(path, "compat=0.10,refcount_bits=8", "1M"), -EINVAL);
	CHECK_EQ(create(path, "compat=0.10,extended_l2=on", "1M"), -EINVAL);
	CHECK_EQ(create(path, "compat=0.10,compression_type=zstd", "1M"), -EINVAL);
	CHECK_EQ(create(path, "extended_l2=on,cluster_size=8192", "1M"), -EINVAL);
	CHECK_EQ(create(path, "cluster_size=3000", "1M"), -EINVAL);
	CHECK_EQ(create(path, "cluster_size=4M", "1M"), -EINVAL);
	CHECK_EQ(create(path, "refcount_bits=128", "1M"), -EINVAL);
}

/* Regression: a write that arrives while a bitmap operation or a resize
 * has stored the live bitmaps (and not yet loaded them again) must still
 * be recorded.  It used to run untracked in that window; now it waits for
 * the operation (qcow2_bitmaps_op_begin/end). */
struct bm_op {
	struct qcow2_state *s;
	struct vd_co_queue park;
	bool parked, done;
	int ret;
};

static void bm_op_co(void *opaque)
{
	struct bm_op *op = opaque;
	struct vd_error err = {0};

	qcow2_bitmaps_op_begin(op->s);
	op->ret = qcow2_bitmaps_store_live(op->s);
	op->parked = true;
	vd_co_queue_wait(&op->park); /* the operation's own I/O would yield here */
	if (op->ret == 0)
		op->ret = qcow2_bitmaps_load_live(op->s, &err);
	qcow2_bitmaps_op_end(op->s);
	op->done = true;
}

static void test_bitmap_track_during_op(void)
{
	const char *path = test_path("bmop.qcow2");
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	struct qcow2_state *s;
	struct bm_op op = {0};
	struct aio_state sa = {0};
	struct vd_qiov q;
	static uint8_t buf[65536];
	struct vd_co *co;

	REQUIRE(create(path, NULL, "16M") == 0);
	REQUIRE(open_img(path, NULL, VD_OPEN_RDWR, &n, &err) == 0);
	REQUIRE(vd_node_bitmap(n, VD_BITMAP_ADD, "b0", 65536, NULL, NULL, &err) == 0);
	s = n->opaque;
	REQUIRE(s->bitmaps_live && s->n_live == 1);
	CHECK_EQ(s->live[0].bits[0] & 0x02, 0);

	op.s = s;
	vd_co_queue_init(&op.park);
	co = vd_co_create(bm_op_co, &op);
	REQUIRE(co);
	vd_co_enter(co);
	while (!op.parked)
		vd_loop_run_once(vd_loop_current(), true);
	CHECK_EQ(op.ret, 0);
	CHECK(!s->bitmaps_live);

	memset(buf, 0x5a, sizeof(buf));
	vd_qiov_init_buf(&q, buf, sizeof(buf));
	vd_node_aio_pwritev(n, 65536, &q, 0, aio_cb, &sa);
	for (int i = 0; i < 20; i++)
		vd_loop_run_once(vd_loop_current(), false);
	CHECK_EQ(sa.calls, 0); /* waits for the operation */

	vd_co_queue_restart_all(&op.park);
	while (!op.done || !sa.calls)
		vd_loop_run_once(vd_loop_current(), true);
	CHECK_EQ(op.ret, 0);
	CHECK_EQ(sa.ret, 0);
	REQUIRE(s->bitmaps_live && s->n_live == 1);
	CHECK_EQ(s->live[0].bits[0] & 0x02, 0x02); /* cluster 1 recorded */
	vd_node_unref(n);
	CHECK_EQ(qemu_img_check(path), 0);
}

int main(void)
{
	struct vd_loop *loop;

	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	RUN(test_refcount_entries);
	RUN(test_header_validation);
	RUN(test_small_caches);
	RUN(test_refcount_growth);
	RUN(test_concurrent_allocation);
	RUN(test_corruption);
	RUN(test_compress_zero_lazy);
	RUN(test_backing_names);
	RUN(test_bitmap_track_during_op);
	return test_finish();
}
