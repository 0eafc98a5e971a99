/* SPDX-License-Identifier: MIT */
/*
 * The block drivers (block/drivers/): file on both engines and with O_DIRECT,
 * raw windows, null, blkdebug rules, and image locking, also against
 * QEMU's qemu-io and qemu-img when they are installed.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vdisk/aio.h>
#include <vdisk/block_driver.h>
#include <vdisk/iothread.h>

#include "tests/lib/test.h"

static struct vd_error last_err;

/* Open @path as @fmt with "key=value,..." options; NULL on failure
 * (the message is in last_err). */
static struct vd_node *open_img(const char *path, const char *fmt, const char *optstr, int flags)
{
	struct vd_opts *o = NULL;
	struct vd_node *n = NULL;
	int ret;

	vd_error_clear(&last_err);
	if (optstr && *optstr) {
		ret = vd_opts_parse(optstr, NULL, &o, &last_err);
		if (ret < 0)
			return NULL;
	}
	ret = vd_node_open(path, fmt, o, flags, &n, &last_err);
	vd_opts_free(o);
	return ret < 0 ? NULL : n;
}

static struct vd_node *open_tree(const char *optstr, int flags)
{
	struct vd_opts *o = NULL;
	struct vd_node *n = NULL;
	int ret;

	vd_error_clear(&last_err);
	ret = vd_opts_parse(optstr, NULL, &o, &last_err);
	if (ret < 0)
		return NULL;
	ret = vd_node_open_opts(o, flags, &n, &last_err);
	vd_opts_free(o);
	return ret < 0 ? NULL : n;
}

static int create_img(const char *path, const char *fmt, const char *optstr)
{
	struct vd_opts *o = NULL;
	int ret;

	vd_error_clear(&last_err);
	ret = vd_opts_parse(optstr, NULL, &o, &last_err);
	if (ret == 0)
		ret = vd_image_create(path, fmt, o, &last_err);
	vd_opts_free(o);
	return ret;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

static bool all_zero(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i])
			return false;
	return true;
}

static int64_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) < 0 ? -1 : st.st_size;
}

static int64_t file_alloc(const char *path)
{
	struct stat st;
	return stat(path, &st) < 0 ? -1 : (int64_t)st.st_blocks * 512;
}

/* --- create ----------------------------------------------------------------- */

static void test_create(void)
{
	const char *p = test_path("create.img");

	CHECK_EQ(create_img(p, "raw", "size=1000"), 0);
	CHECK_EQ(file_size(p), 1024); /* rounded up to sectors, as qemu-img */
	CHECK_EQ(create_img(p, "raw", "size=1M,preallocation=falloc"), 0);
	CHECK_EQ(file_size(p), 1 << 20);
	CHECK(file_alloc(p) >= 1 << 20);
	CHECK_EQ(create_img(p, "raw", "size=64k,preallocation=full"), 0);
	CHECK_EQ(file_size(p), 65536);
	CHECK(file_alloc(p) >= 65536);
	CHECK_EQ(create_img(p, "raw", "size=1M,preallocation=off,nocow=on"), 0);
	CHECK_EQ(file_alloc(p), 4096); /* the first block only, as qemu-img */
	CHECK_EQ(create_img(p, "raw", "size=1M,preallocation=metadata"), -ENOTSUP);
	CHECK(strstr(last_err.msg, "metadata") != NULL);
	CHECK_EQ(create_img(p, "raw", "preallocation=off"), -EINVAL);
	CHECK(strstr(last_err.msg, "size") != NULL);
	CHECK_EQ(create_img(p, "raw", "size=1M,preallocation=bogus"), -EINVAL);
	CHECK(strstr(last_err.msg, "preallocation") != NULL);
	CHECK_EQ(create_img(p, "file", "size=4k"), 0);
	CHECK_EQ(file_size(p), 4096);
}

/* --- file ------------------------------------------------------------------- */

static void file_rw(const char *aio)
{
	const char *p = test_path("rw.img");
	char opts[64];
	uint8_t *w = malloc(65536), *r = malloc(65536);
	struct vd_node *n;

	REQUIRE(w && r);
	REQUIRE(create_img(p, "raw", "size=1M") == 0);
	snprintf(opts, sizeof(opts), "aio=%s", aio);
	n = open_img(p, "file", opts, VD_OPEN_RDWR);
	if (!n)
		fprintf(stderr, "open: %s\n", last_err.msg);
	REQUIRE(n);
	CHECK_EQ(vd_node_size(n), 1 << 20);
	CHECK_EQ(n->limits.request_alignment, 1);
	fill(w, 65536, 1);
	CHECK_EQ(vd_node_pwrite(n, 4096, w, 65536, 0), 0);
	CHECK_EQ(vd_node_pread(n, 4096, r, 65536), 0);
	CHECK(memcmp(w, r, 65536) == 0);
	CHECK_EQ(vd_node_pread(n, 4097, r, 3), 0);
	CHECK(memcmp(w + 1, r, 3) == 0);
	CHECK_EQ(vd_node_pwrite(n, 10, w, 5, VD_REQ_FUA), 0);
	CHECK_EQ(vd_node_flush(n), 0);
	/* The top node does not grow. */
	CHECK_EQ(vd_node_pwrite(n, (1 << 20) - 1, w, 2, 0), -EIO);
	CHECK(vd_node_pread(n, 1 << 20, r, 1) < 0);
	vd_node_unref(n);

	/* Read-only nodes refuse writes; the data is there. */
	n = open_img(p, "file", opts, 0);
	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 0, w, 512, 0), -EROFS);
	CHECK_EQ(vd_node_pread(n, 10, r, 5), 0);
	CHECK(memcmp(w, r, 5) == 0);
	vd_node_unref(n);
	free(w);
	free(r);
}

static void test_file_threads(void)
{
	file_rw("threads");
}

static void test_file_io_uring(void)
{
	if (!vd_aio_kind_available(VD_AIO_IO_URING)) {
		fprintf(stderr, "  note: io_uring not available here\n");
		CHECK(open_img(test_path("x"), "file", "aio=io_uring", 0) == NULL);
		return;
	}
	file_rw("io_uring");
}

static void test_file_errors(void)
{
	struct vd_node *n;

	CHECK(open_img(test_path("missing.img"), "file", NULL, 0) == NULL);
	CHECK_EQ(last_err.code, -ENOENT);
	CHECK(strstr(last_err.msg, "missing.img") != NULL);
	CHECK(create_img(test_path("e.img"), "raw", "size=4k") == 0);
	CHECK(open_img(test_path("e.img"), "file", "aio=posix", 0) == NULL);
	CHECK(strstr(last_err.msg, "aio") != NULL);
	CHECK(open_img(test_path("e.img"), "file", "locking=maybe", 0) == NULL);
	CHECK(strstr(last_err.msg, "locking") != NULL);
	CHECK(open_img(test_path("e.img"), "file", "discard=sometimes", 0) == NULL);
	CHECK(open_img(test_path("e.img"), "file", "bogus=1", 0) == NULL);
	CHECK(strstr(last_err.msg, "bogus") != NULL);
	CHECK(open_img(test_tmpdir(), "file", NULL, 0) == NULL);
	n = open_img(test_path("e.img"), "raw", "file.aio=threads,file.discard=unmap", 0);
	CHECK(n != NULL);
	vd_node_unref(n);
}

/* O_DIRECT: unaligned requests and buffers go through the core's bounce and
 * read-modify-write paths; a file whose size is not aligned reads its tail. */
static void file_direct(const char *aio)
{
	const char *p = test_path("direct.img");
	uint8_t *w = malloc(16384), *r = malloc(16384), check[1000];
	char opts[64];
	struct vd_node *n;
	int fd;

	REQUIRE(w && r);
	REQUIRE(create_img(p, "raw", "size=64k") == 0);
	snprintf(opts, sizeof(opts), "cache.direct=on,aio=%s", aio);
	n = open_img(p, "file", opts, VD_OPEN_RDWR);
	if (!n) {
		fprintf(stderr, "  note: O_DIRECT not supported here: %s\n", last_err.msg);
		free(w);
		free(r);
		return;
	}
	CHECK(n->limits.request_alignment >= 512);
	CHECK(n->limits.min_mem_alignment >= 1);
	fill(w, 16384, 3);
	CHECK_EQ(vd_node_pwrite(n, 1, w + 1, 1000, 0), 0);
	CHECK_EQ(vd_node_pwrite(n, 5000, w + 3, 7000, 0), 0);
	CHECK_EQ(vd_node_pread(n, 1, r + 5, 1000), 0);
	CHECK(memcmp(r + 5, w + 1, 1000) == 0);
	CHECK_EQ(vd_node_pread(n, 5000, r + 1, 7000), 0);
	CHECK(memcmp(r + 1, w + 3, 7000) == 0);
	CHECK_EQ(vd_node_flush(n), 0);
	vd_node_unref(n);
	/* Through the page cache the bytes are where they belong. */
	fd = open(p, O_RDONLY);
	REQUIRE(fd >= 0);
	CHECK_EQ(pread(fd, check, 1000, 1), 1000);
	CHECK(memcmp(check, w + 1, 1000) == 0);
	CHECK_EQ(pread(fd, check, 1, 0), 1);
	CHECK_EQ(check[0], 0);
	close(fd);

	/* A 1000-byte file: the raw node's requests are padded past EOF. */
	fd = open(p, O_WRONLY | O_TRUNC);
	REQUIRE(fd >= 0);
	CHECK_EQ(write(fd, w, 1000), 1000);
	close(fd);
	snprintf(opts, sizeof(opts), "cache.direct=on,file.aio=%s", aio);
	n = open_img(p, "raw", opts, VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_size(n), 1024); /* whole sectors, as QEMU shows it */
	memset(r, 0xaa, 1024);
	CHECK_EQ(vd_node_pread(n, 0, r, 1024), 0);
	CHECK(memcmp(r, w, 1000) == 0);
	CHECK(all_zero(r + 1000, 24));
	CHECK_EQ(vd_node_pwrite(n, 990, w + 100, 10, 0), 0);
	CHECK_EQ(vd_node_pread(n, 980, r, 20), 0);
	CHECK(memcmp(r, w + 980, 10) == 0 && memcmp(r + 10, w + 100, 10) == 0);
	vd_node_unref(n);
	free(w);
	free(r);
}

static void test_file_direct(void)
{
	file_direct("threads");
	if (vd_aio_kind_available(VD_AIO_IO_URING))
		file_direct("io_uring");
}

static void test_file_discard_zeroes(void)
{
	const char *p = test_path("zero.img");
	uint8_t *w = malloc(1 << 20), *r = malloc(1 << 20);
	int64_t pnum = 0, map = -1;
	struct vd_node *n, *file = NULL;
	int ret;

	REQUIRE(w && r);
	REQUIRE(create_img(p, "raw", "size=1M") == 0);
	n = open_img(p, "file", NULL, VD_OPEN_RDWR);
	REQUIRE(n);
	fill(w, 1 << 20, 9);
	CHECK_EQ(vd_node_pwrite(n, 0, w, 1 << 20, 0), 0);
	CHECK_EQ(vd_node_flush(n), 0);
	ret = vd_node_block_status(n, 0, 1 << 20, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_DATA) && (ret & VD_BLOCK_OFFSET_VALID));
	CHECK_EQ(pnum, 1 << 20);
	CHECK(file == n);

	/* Discard punches a hole that reads back as zeroes. */
	CHECK_EQ(vd_node_pdiscard(n, 65536, 65536), 0);
	CHECK_EQ(vd_node_pread(n, 65536, r, 65536), 0);
	CHECK(all_zero(r, 65536));
	ret = vd_node_block_status(n, 65536, 1 << 19, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_ZERO) && !(ret & VD_BLOCK_DATA));
	CHECK_EQ(pnum, 65536);
	CHECK_EQ(map, 65536);
	ret = vd_node_block_status(n, 131072, 4096, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_DATA));
	CHECK_EQ(pnum, 4096);

	/* Write zeroes with and without unmap, aligned and not. */
	CHECK_EQ(vd_node_pwrite_zeroes(n, 200000, 70000, VD_REQ_MAY_UNMAP), 0);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 400001, 5000, 0), 0);
	CHECK_EQ(vd_node_pread(n, 0, r, 1 << 20), 0);
	CHECK(all_zero(r + 200000, 70000) && all_zero(r + 400001, 5000));
	CHECK(memcmp(r, w, 65536) == 0);
	CHECK(memcmp(r + 270000, w + 270000, 400001 - 270000) == 0);
	CHECK(memcmp(r + 405001, w + 405001, (1 << 20) - 405001) == 0);
	CHECK(file_alloc(p) < (1 << 20));
	vd_node_unref(n);

	/* Unaligned discard with O_DIRECT stays inside whole blocks. */
	n = open_img(p, "file", "cache.direct=on", VD_OPEN_RDWR);
	if (n) {
		CHECK_EQ(vd_node_pwrite(n, 0, w, 65536, 0), 0);
		CHECK_EQ(vd_node_pdiscard(n, 100, 10000), 0);
		CHECK_EQ(vd_node_pread(n, 0, r, 65536), 0);
		CHECK(memcmp(r, w, 100) == 0);
		CHECK(memcmp(r + 10100, w + 10100, 65536 - 10100) == 0);
		vd_node_unref(n);
	}
	free(w);
	free(r);
}

static void test_file_block_status(void)
{
	const char *p = test_path("bs.img");
	uint8_t buf[4096];
	int64_t pnum = 0, map = -1;
	struct vd_node *n, *file = NULL;
	int ret;

	REQUIRE(create_img(p, "raw", "size=1M") == 0);
	n = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	REQUIRE(n);
	/* A new image has its first 4 KiB written (QEMU's allocate_first_block),
	 * then a hole to the end. */
	ret = vd_node_block_status(n, 0, 1 << 20, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_DATA) && !(ret & VD_BLOCK_EOF));
	CHECK_EQ(pnum, 4096);
	ret = vd_node_block_status(n, 4096, 1 << 20, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_ZERO) && (ret & VD_BLOCK_EOF));
	CHECK_EQ(pnum, (1 << 20) - 4096);
	fill(buf, sizeof(buf), 5);
	CHECK_EQ(vd_node_pwrite(n, 65536, buf, 4096, 0), 0);
	CHECK_EQ(vd_node_flush(n), 0);
	ret = vd_node_block_status(n, 4096, 1 << 20, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_ZERO) && (ret & VD_BLOCK_ALLOCATED));
	CHECK_EQ(pnum, 65536 - 4096);
	ret = vd_node_block_status(n, 65536, 1 << 20, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_DATA) && (ret & VD_BLOCK_OFFSET_VALID));
	CHECK_EQ(pnum, 4096);
	CHECK_EQ(map, 65536);
	CHECK(file == vd_node_file_child(n));
	ret = vd_node_block_status(n, 65536 + 4096, 1 << 20, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_ZERO) && (ret & VD_BLOCK_EOF));
	CHECK_EQ(pnum, (1 << 20) - 65536 - 4096);
	ret = vd_node_block_status(n, 1 << 20, 512, &pnum, &map, &file);
	CHECK(ret >= 0);
	CHECK_EQ(pnum, 0);
	vd_node_unref(n);
}

static void test_file_truncate(void)
{
	const char *p = test_path("trunc.img");
	struct vd_error err = {0};
	uint8_t buf[512];
	struct vd_node *n;

	REQUIRE(create_img(p, "raw", "size=1M") == 0);
	n = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_truncate(n, 2 << 20, true, VD_PREALLOC_OFF, &err), 0);
	CHECK_EQ(vd_node_size(n), 2 << 20);
	CHECK_EQ(file_size(p), 2 << 20);
	CHECK_EQ(file_alloc(p), 4096); /* only the first block, written by create */
	CHECK_EQ(vd_node_truncate(n, 3 << 20, true, VD_PREALLOC_FALLOC, &err), 0);
	CHECK_EQ(file_size(p), 3 << 20);
	CHECK(file_alloc(p) >= 1 << 20);
	CHECK_EQ(vd_node_truncate(n, 4 << 20, true, VD_PREALLOC_FULL, &err), 0);
	CHECK(file_alloc(p) >= 2 << 20);
	CHECK_EQ(vd_node_pread(n, (4 << 20) - 512, buf, 512), 0);
	CHECK(all_zero(buf, 512));
	CHECK_EQ(vd_node_truncate(n, 512 << 10, true, VD_PREALLOC_OFF, &err), 0);
	CHECK_EQ(file_size(p), 512 << 10);
	CHECK_EQ(vd_node_size(n), 512 << 10);
	CHECK(vd_node_truncate(n, 1 << 20, true, VD_PREALLOC_METADATA, &err) < 0);
	CHECK(strstr(err.msg, "metadata") != NULL);
	vd_node_unref(n);
}

/* --- locking ---------------------------------------------------------------- */

static void test_locking(void)
{
	const char *p = test_path("lock.img");
	struct vd_node *a, *b;

	REQUIRE(create_img(p, "raw", "size=1M") == 0);
	/* OFD locks conflict between open file descriptions, even in one process. */
	a = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	REQUIRE(a);
	b = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	CHECK(b == NULL);
	CHECK_EQ(last_err.code, -EAGAIN);
	CHECK(strstr(last_err.msg, "Failed to get") && strstr(last_err.msg, "\"write\" lock"));
	CHECK(strstr(last_err.msg, "Is another process using the image") != NULL);
	/* Readers are fine next to a writer (it shares consistent read). */
	b = open_img(p, "raw", NULL, 0);
	CHECK(b != NULL);
	vd_node_unref(b);
	b = open_img(p, "raw", NULL, VD_OPEN_FORCE_SHARE);
	CHECK(b != NULL);
	vd_node_unref(b);
	b = open_img(p, "raw", "file.locking=off", VD_OPEN_RDWR);
	CHECK(b != NULL);
	vd_node_unref(b);
	/* Creating over an image in use fails before destroying it. */
	CHECK(create_img(p, "raw", "size=4k") < 0);
	CHECK_EQ(file_size(p), 1 << 20);
	vd_node_unref(a);

	/* A reader does not keep a writer out; closing releases everything. */
	a = open_img(p, "raw", NULL, 0);
	REQUIRE(a);
	b = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	CHECK(b != NULL);
	vd_node_unref(b);
	vd_node_unref(a);
	b = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	CHECK(b != NULL);
	vd_node_unref(b);
}

static bool have_prog(const char *name)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

static int run(const char *fmt, const char *arg)
{
	char cmd[1024];
	int st;
	snprintf(cmd, sizeof(cmd), fmt, arg);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Wait until another process holds a lock on @byte of @path. */
static bool wait_lock(const char *path, int byte)
{
	int fd = open(path, O_RDONLY);
	bool held = false;

	for (int i = 0; fd >= 0 && i < 200 && !held; i++) {
		struct flock fl = {
			.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};
		if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
			held = true;
		else
			usleep(20000);
	}
	if (fd >= 0)
		close(fd);
	return held;
}

/* Both directions against QEMU 7.2's own tools. */
static void test_locking_qemu(void)
{
	const char *p = test_path("qlock.img");
	char log[600];
	struct vd_node *n;
	FILE *q;

	if (!have_prog("qemu-io") || !have_prog("qemu-img")) {
		fprintf(stderr, "  note: qemu-io/qemu-img not installed, not checked\n");
		return;
	}
	REQUIRE(create_img(p, "raw", "size=1M") == 0);
	snprintf(log, sizeof(log), "%s", test_path("qemu.log"));

	/* We hold it read-write: qemu-io cannot write, can read; info -U works. */
	n = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK(run("qemu-io -f raw -c 'write 0 512' '%s' >/dev/null 2>&1", p) != 0);
	snprintf(log, sizeof(log),
		 "qemu-io -f raw -c 'write 0 512' '%s' 2>&1 | "
		 "grep -q 'Failed to get \"write\" lock'",
		 p);
	CHECK(system(log) == 0);
	CHECK_EQ(run("qemu-io -r -f raw -c 'read 0 512' '%s' >/dev/null 2>&1", p), 0);
	CHECK_EQ(run("qemu-img info -U '%s' >/dev/null 2>&1", p), 0);
	vd_node_unref(n);
	CHECK_EQ(run("qemu-io -f raw -c 'write 0 512' '%s' >/dev/null 2>&1", p), 0);

	/* qemu-io holds it read-write (bytes 100, 101): we cannot open for
	 * writing (we do not share write), but can read. */
	snprintf(log, sizeof(log), "qemu-io -f raw '%s' >/dev/null 2>&1", p);
	q = popen(log, "w");
	REQUIRE(q);
	CHECK(wait_lock(p, 101));
	n = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	CHECK(n == NULL);
	CHECK_EQ(last_err.code, -EAGAIN);
	CHECK(strstr(last_err.msg, "Failed to get shared \"write\" lock") != NULL);
	n = open_img(p, "raw", NULL, 0);
	CHECK(n != NULL);
	vd_node_unref(n);
	fputs("quit\n", q);
	pclose(q);
	n = open_img(p, "raw", NULL, VD_OPEN_RDWR);
	CHECK(n != NULL);
	vd_node_unref(n);
}

/* --- raw -------------------------------------------------------------------- */

static void test_raw_window(void)
{
	const char *p = test_path("window.img");
	uint8_t *w = malloc(1 << 20), *r = malloc(16384);
	struct vd_error err = {0};
	int64_t pnum, map;
	struct vd_node *n, *file;
	int fd, ret;

	REQUIRE(w && r);
	REQUIRE(create_img(p, "raw", "size=1M") == 0);
	fill(w, 1 << 20, 11);
	fd = open(p, O_WRONLY);
	REQUIRE(fd >= 0);
	CHECK_EQ(pwrite(fd, w, 1 << 20, 0), 1 << 20);
	close(fd);

	n = open_img(p, "raw", "offset=4096,size=8192", VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_size(n), 8192);
	CHECK_EQ(vd_node_pread(n, 0, r, 8192), 0);
	CHECK(memcmp(r, w + 4096, 8192) == 0);
	CHECK_EQ(vd_node_pread(n, 8000, r, 193), -EIO);
	memset(r, 0x5a, 100);
	CHECK_EQ(vd_node_pwrite(n, 8092, r, 100, 0), 0);
	ret = vd_node_block_status(n, 100, 8000, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_OFFSET_VALID));
	CHECK_EQ(map, 4196);
	CHECK(file == vd_node_file_child(n));
	CHECK(vd_node_truncate(n, 16384, true, VD_PREALLOC_OFF, &err) < 0);
	CHECK(strstr(err.msg, "Cannot resize fixed-size raw disks") != NULL);
	vd_node_unref(n);
	fd = open(p, O_RDONLY);
	REQUIRE(fd >= 0);
	CHECK_EQ(pread(fd, r, 200, 4096 + 8092 - 50), 200);
	CHECK(memcmp(r, w + 4096 + 8092 - 50, 50) == 0);
	CHECK(r[50] == 0x5a && r[149] == 0x5a);
	CHECK(memcmp(r + 150, w + 4096 + 8192, 50) == 0);
	close(fd);

	/* An unaligned offset, no size: up to the end of the file. */
	n = open_img(p, "raw", "offset=1000", 0);
	REQUIRE(n);
	/* QEMU rounds the size up to whole sectors: 2047 of them. */
	CHECK_EQ(vd_node_size(n), 2047 * 512);
	CHECK_EQ(vd_node_pread(n, 0, r, 512), 0);
	CHECK(memcmp(r, w + 1000, 512) == 0);
	vd_node_unref(n);

	/* With an offset, truncate sizes the file to offset + size (QEMU). */
	n = open_img(p, "raw", "offset=512", VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_truncate(n, 2 << 20, true, VD_PREALLOC_OFF, &err), 0);
	CHECK_EQ(vd_node_size(n), 2 << 20);
	CHECK_EQ(file_size(p), (2 << 20) + 512);
	vd_node_unref(n);

	/* Errors name what is wrong, as QEMU's. */
	CHECK(open_img(p, "raw", "size=1000", 0) == NULL);
	CHECK(strstr(last_err.msg, "multiple of 512") != NULL);
	CHECK(open_img(p, "raw", "offset=100M", 0) == NULL);
	CHECK(strstr(last_err.msg, "cannot be greater than size") != NULL);
	CHECK(open_img(p, "raw", "offset=1M,size=2M", 0) == NULL);
	CHECK(strstr(last_err.msg, "has to be smaller or equal") != NULL);
	CHECK(open_img(p, "raw", "offset=-1", 0) == NULL);
	CHECK(strstr(last_err.msg, "offset") != NULL);
	free(w);
	free(r);
}

static void test_raw_probe_create(void)
{
	const char *fmt = NULL;
	struct vd_error err = {0};

	CHECK(vd_driver_find("raw")->probe((const uint8_t *)"hello", 5, "x") == 1);
	CHECK_EQ(create_img(test_path("probe.img"), "raw", "size=64k"), 0);
	CHECK_EQ(vd_probe_format(test_path("probe.img"), &fmt, &err), 0);
	CHECK_STR(fmt, "raw");
}

/* --- null ------------------------------------------------------------------- */

static void test_null(void)
{
	uint8_t buf[4096];
	int64_t pnum, map;
	struct vd_node *n, *file;
	int64_t t0;
	int ret;

	n = open_img("null-co://", "null-co", NULL, VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_size(n), INT64_C(1) << 30);
	memset(buf, 0xff, sizeof(buf));
	CHECK_EQ(vd_node_pread(n, 12345, buf, sizeof(buf)), 0);
	CHECK(all_zero(buf, sizeof(buf)));
	CHECK_EQ(vd_node_pwrite(n, 0, buf, sizeof(buf), 0), 0);
	CHECK_EQ(vd_node_flush(n), 0);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 0, 1 << 20, 0), 0);
	CHECK_EQ(vd_node_pdiscard(n, 0, 1 << 20), 0);
	ret = vd_node_block_status(n, 0, 4096, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_DATA));
	vd_node_unref(n);

	n = open_img("null-aio://", "null-aio", "size=1M,read-zeroes=on,latency-ns=2000000", 0);
	REQUIRE(n);
	CHECK_EQ(vd_node_size(n), 1 << 20);
	memset(buf, 0xff, sizeof(buf));
	t0 = vd_clock_ns();
	CHECK_EQ(vd_node_pread(n, 0, buf, sizeof(buf)), 0);
	CHECK(vd_clock_ns() - t0 >= 2000000);
	CHECK(all_zero(buf, sizeof(buf)));
	ret = vd_node_block_status(n, 0, 4096, &pnum, &map, &file);
	CHECK(ret >= 0 && (ret & VD_BLOCK_ZERO));
	vd_node_unref(n);

	n = open_img("null-aio://", "null-aio", NULL, 0);
	REQUIRE(n);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_node_unref(n);

	CHECK(open_img("null-co://", "null-co", "size=abc", 0) == NULL);
	CHECK(strstr(last_err.msg, "size") != NULL);
	CHECK(open_img("null-co://", "null-co", "latency-ns=-5", 0) == NULL);
	CHECK(strstr(last_err.msg, "latency-ns") != NULL);
	CHECK(open_img("/some/file", "null-co", NULL, 0) == NULL);
}

/* --- blkdebug ----------------------------------------------------------------- */

static const char *dbg_img(void)
{
	const char *p = test_path("dbg.img");
	if (file_size(p) != 1 << 20)
		create_img(p, "raw", "size=1M");
	return p;
}

static struct vd_node *dbg_open(const char *rules, int flags)
{
	struct vd_node *n = open_img(dbg_img(), "blkdebug", rules, flags);
	if (!n)
		fprintf(stderr, "  blkdebug open (%s): %s\n", rules, last_err.msg);
	return n;
}

static void test_blkdebug_request_rules(void)
{
	uint8_t buf[8192] = {0};
	struct vd_node *n;

	/* once: the first read fails with the given errno, then it is gone. */
	n = dbg_open("inject-error.0.event=read,inject-error.0.errno=28,inject-error.0.once=on",
		     VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), -28);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_node_unref(n);

	/* after=2 without once: two pass, then every one fails; EIO default. */
	n = dbg_open("inject-error.0.event=write,inject-error.0.after=2", VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), -EIO);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), -EIO);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_node_unref(n);

	/* A byte range, and QEMU's sector; several rules, first match wins. */
	n = dbg_open("inject-error.0.event=read,inject-error.0.offset=64k,inject-error.0.length=4k,"
		     "inject-error.0.errno=61,"
		     "inject-error.1.event=read,inject-error.1.sector=256,inject-error.1.errno=62,"
		     "inject-error.1.immediately=on",
		     0);
	REQUIRE(n);
	CHECK_EQ(vd_node_pread(n, 0, buf, 8192), 0);
	CHECK_EQ(vd_node_pread(n, 60 << 10, buf, 4096), 0);
	CHECK_EQ(vd_node_pread(n, 60 << 10, buf, 4097), -61);
	CHECK_EQ(vd_node_pread(n, 68 << 10, buf, 4096), 0);
	CHECK_EQ(vd_node_pread(n, (68 << 10) - 1, buf, 1), -61);
	CHECK_EQ(vd_node_pread(n, 256 * 512 + 1, buf, 100), 0);
	CHECK_EQ(vd_node_pread(n, 256 * 512 - 100, buf, 101), -62);
	vd_node_unref(n);

	/* flush, discard, write_zeroes rules. */
	n = dbg_open("inject-error.0.event=flush,inject-error.0.errno=5,"
		     "inject-error.1.event=discard,inject-error.1.errno=6,"
		     "inject-error.2.event=write-zeroes,inject-error.2.errno=7",
		     VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	CHECK_EQ(vd_node_flush(n), -5);
	CHECK_EQ(vd_node_pdiscard(n, 0, 4096), -6);
	CHECK_EQ(vd_node_pwrite_zeroes(n, 0, 4096, 0), -7);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_node_unref(n);

	/* errno=0 injects nothing. */
	n = dbg_open("inject-error.0.event=read,inject-error.0.errno=0", 0);
	REQUIRE(n);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_node_unref(n);
}

static void test_blkdebug_events(void)
{
	uint8_t buf[4096] = {0};
	struct vd_node *n, *dbg;

	/* A metadata event arms its rule for the next request. */
	n = dbg_open(
		"inject-error.0.event=l2_update,inject-error.0.errno=28,inject-error.0.once=on",
		VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	vd_debug_event(n, VD_EV_L2_LOAD);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_debug_event(n, VD_EV_L2_UPDATE);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), -28);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	vd_debug_event(n, VD_EV_L2_UPDATE); /* once: gone for good */
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	vd_node_unref(n);

	/* Without once the rule stays armed; another event's rules replace it. */
	n = dbg_open("inject-error.0.event=l2_load,inject-error.0.errno=5,"
		     "inject-error.1.event=cluster_alloc,inject-error.1.errno=28",
		     VD_OPEN_RDWR);
	REQUIRE(n);
	vd_debug_event(n, VD_EV_L2_LOAD);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), -5);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), -5);
	vd_debug_event(n, VD_EV_REFBLOCK_LOAD); /* no rules: changes nothing */
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), -5);
	vd_debug_event(n, VD_EV_CLUSTER_ALLOC);
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), -28);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), -28);
	vd_node_unref(n);

	/* read_aio under raw: raw raises it before each read (QEMU). */
	{
		char t[512];
		snprintf(t, sizeof(t),
			 "driver=raw,file.driver=blkdebug,file.image.driver=file,"
			 "file.image.filename=%s,file.inject-error.0.event=read_aio,"
			 "file.inject-error.0.once=on,file.inject-error.0.errno=71",
			 dbg_img());
		n = open_tree(t, VD_OPEN_RDWR);
	}
	if (!n)
		fprintf(stderr, "  open: %s\n", last_err.msg);
	REQUIRE(n);
	dbg = vd_node_file_child(n);
	CHECK_STR(vd_node_format(dbg), "blkdebug");
	CHECK_EQ(vd_node_pwrite(n, 0, buf, 512, 0), 0);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), -71);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_node_unref(n);

	/* read_aio with nobody above to raise it: applies to reads. */
	n = dbg_open("inject-error.0.event=read_aio,inject-error.0.once=on", 0);
	REQUIRE(n);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), -EIO);
	CHECK_EQ(vd_node_pread(n, 0, buf, 512), 0);
	vd_node_unref(n);
}

static void test_blkdebug_config_align(void)
{
	const char *conf = test_path("blkdebug.conf");
	uint8_t w[1000], r[1000];
	char opts[600];
	struct vd_node *n;
	FILE *f = fopen(conf, "w");

	REQUIRE(f);
	fputs("# QEMU syntax\n[inject-error]\nevent = \"read\"\nerrno = \"7\"\nonce = \"on\"\n\n"
	      "[inject-error]\nevent = \"write\"\nsector = \"8\"\n",
	      f);
	fclose(f);
	snprintf(opts, sizeof(opts), "config=%s", conf);
	n = dbg_open(opts, VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_pread(n, 0, r, 512), -7);
	CHECK_EQ(vd_node_pread(n, 0, r, 512), 0);
	CHECK_EQ(vd_node_pwrite(n, 0, r, 512, 0), 0);
	CHECK_EQ(vd_node_pwrite(n, 4096, r, 512, 0), -EIO);
	vd_node_unref(n);

	f = fopen(conf, "w");
	REQUIRE(f);
	fputs("[set-state]\nstate = \"1\"\n", f);
	fclose(f);
	CHECK(open_img(dbg_img(), "blkdebug", opts, 0) == NULL);
	CHECK(strstr(last_err.msg, "set-state") != NULL);

	/* align=4096: the core pads and read-modify-writes for us. */
	n = dbg_open("align=4096,max-transfer=64k", VD_OPEN_RDWR);
	REQUIRE(n);
	CHECK_EQ(vd_node_limits(n)->request_alignment, 4096);
	CHECK_EQ(vd_node_limits(n)->max_transfer, 65536);
	fill(w, sizeof(w), 13);
	CHECK_EQ(vd_node_pwrite(n, 4000, w, 1000, 0), 0);
	CHECK_EQ(vd_node_pread(n, 4000, r, 1000), 0);
	CHECK(memcmp(w, r, 1000) == 0);
	{
		uint8_t *big = malloc(300000);
		REQUIRE(big);
		CHECK_EQ(vd_node_pread(n, 1, big, 300000), 0);
		CHECK(memcmp(big + 3999, w, 1000) == 0);
		free(big);
	}
	vd_node_unref(n);

	/* Bad options name the key. */
	CHECK(open_img(dbg_img(), "blkdebug", "inject-error.0.event=l3_update", 0) == NULL);
	CHECK(strstr(last_err.msg, "inject-error.0.event") != NULL);
	CHECK(open_img(dbg_img(), "blkdebug", "inject-error.0.event=read,inject-error.0.errno=x",
		       0) == NULL);
	CHECK(strstr(last_err.msg, "inject-error.0.errno") != NULL);
	CHECK(open_img(dbg_img(), "blkdebug", "inject-error.0.errno=5", 0) == NULL);
	CHECK(strstr(last_err.msg, "inject-error.0.event") != NULL);
	CHECK(open_img(dbg_img(), "blkdebug", "align=3000", 0) == NULL);
	CHECK(strstr(last_err.msg, "align") != NULL);
	CHECK(open_img(dbg_img(), "blkdebug", "inject-error.0.event=read,inject-error.0.bogus=1",
		       0) == NULL);
	CHECK(strstr(last_err.msg, "inject-error.0.bogus") != NULL);
	CHECK(open_img(dbg_img(), "blkdebug", "config=/nonexistent/blkdebug.conf", 0) == NULL);
}

static void on_alarm(int sig)
{
	static const char msg[] = "test-drivers: timed out (a request never completed)\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more we can do */
	}
	_exit(1);
}

/* --- moving between loops ------------------------------------------------------ */

struct loop_io {
	struct vd_node *n;
	uint8_t *w, *r;
	bool on_node_loop;
	int wret, rret;
};

static void loop_io_fn(void *opaque)
{
	struct loop_io *k = opaque;

	k->on_node_loop = vd_node_loop(k->n) == vd_loop_current() &&
			  vd_node_loop(k->n->file) == vd_loop_current();
	k->wret = vd_node_pwrite(k->n, 65536, k->w, 65536, VD_REQ_FUA);
	k->rret = vd_node_pread(k->n, 65536, k->r, 65536);
}

/* vd_node_set_loop(): a qcow2 node on a file child (each engine, with the
 * cache-clean timer) moves to an I/O thread and serves requests there (its
 * file driver submits to that loop's engine: the old loop's would never
 * complete them there), then comes back and serves them here. */
static void node_set_loop(const char *aio)
{
	const char *p = test_path("move.qcow2");
	uint8_t *w = malloc(65536), *r = malloc(65536);
	struct loop_io k = {.w = w, .r = r};
	struct vd_loop *home = vd_loop_current();
	struct vd_iothread *t;
	struct vd_error err = {0};
	char opts[96];
	struct vd_node *n;

	REQUIRE(w && r);
	REQUIRE(create_img(p, "qcow2", "size=4M") == 0);
	snprintf(opts, sizeof(opts), "file.aio=%s,cache-clean-interval=1", aio);
	n = open_img(p, "qcow2", opts, VD_OPEN_RDWR);
	REQUIRE(n);
	REQUIRE(vd_iothread_new("mv", &t) == 0);
	k.n = n;

	CHECK_EQ(vd_node_set_loop(n, vd_iothread_loop(t), &err), 0);
	CHECK(vd_node_loop(n) == vd_iothread_loop(t));
	CHECK(vd_node_loop(n->file) == vd_iothread_loop(t));
	fill(w, 65536, 7);
	CHECK_EQ(vd_loop_call_wait(vd_iothread_loop(t), loop_io_fn, &k), 0);
	CHECK(k.on_node_loop);
	CHECK_EQ(k.wret, 0);
	CHECK_EQ(k.rret, 0);
	CHECK(memcmp(w, r, 65536) == 0);

	CHECK_EQ(vd_node_set_loop(n, home, &err), 0);
	CHECK(vd_node_loop(n) == home && vd_node_loop(n->file) == home);
	memset(r, 0, 65536);
	loop_io_fn(&k);
	CHECK(k.on_node_loop);
	CHECK_EQ(k.wret, 0);
	CHECK_EQ(k.rret, 0);
	CHECK(memcmp(w, r, 65536) == 0);
	CHECK_EQ(vd_node_set_loop(n, NULL, &err), -EINVAL);
	CHECK(vd_node_loop(n) == home);

	vd_node_unref(n);
	vd_iothread_free(t);
	free(w);
	free(r);
}

static void test_node_set_loop_threads(void)
{
	node_set_loop("threads");
}

static void test_node_set_loop_io_uring(void)
{
	if (!vd_aio_kind_available(VD_AIO_IO_URING)) {
		test_skip("io_uring is not available here");
		return;
	}
	node_set_loop("io_uring");
}

int main(void)
{
	struct vd_loop *loop;

	signal(SIGPIPE, SIG_IGN);
	/* A lost wake-up would hang in vd_node_p*(): fail instead. */
	signal(SIGALRM, on_alarm);
	alarm(120);
	if (vd_loop_new(&loop) < 0) {
		fprintf(stderr, "no loop\n");
		return 1;
	}
	vd_loop_set_current(loop);
	RUN(test_create);
	RUN(test_file_threads);
	RUN(test_file_io_uring);
	RUN(test_file_errors);
	RUN(test_file_direct);
	RUN(test_file_discard_zeroes);
	RUN(test_file_block_status);
	RUN(test_file_truncate);
	RUN(test_locking);
	RUN(test_locking_qemu);
	RUN(test_raw_window);
	RUN(test_raw_probe_create);
	RUN(test_null);
	RUN(test_blkdebug_request_rules);
	RUN(test_blkdebug_events);
	RUN(test_blkdebug_config_align);
	RUN(test_node_set_loop_threads);
	RUN(test_node_set_loop_io_uring);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
	return test_finish();
}
