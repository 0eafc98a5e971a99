/* SPDX-License-Identifier: MIT */
/*
 * The body of the image-format fuzz targets (fuzz-vpc.c, fuzz-vdi.c,
 * fuzz-qed.c): each input is written to a temporary file and opened as the
 * target's format, without backing files.  If it opens read-only, ranges are
 * read, block status walked, the image information taken and the check run;
 * then it is opened read-write and written to (first, middle and last
 * block, across a block boundary), read back and checked again.  Every input
 * must end in a clean error (with a message) or clean I/O: no crash, no
 * hang, no huge allocation, and what was written reads back.
 */
#ifndef VDISK_TESTS_FUZZ_IMAGE_H
#define VDISK_TESTS_FUZZ_IMAGE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vdisk/block.h>
#include <vdisk/loop.h>

#include "tests/fuzz/fuzz.h"

static void fuzz_image_read(struct vd_node *n)
{
	static uint8_t buf[256 * 1024];
	int64_t size = vd_node_size(n);
	int64_t offs[] = {0, 512, 65536 - 100, (1 << 20) - 512, size / 2, size - 4096, size - 1};
	struct vd_image_info info;
	struct vd_check_result res;
	struct vd_error err = {0};
	int64_t pos = 0;

	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		int64_t off = offs[i], len = sizeof(buf);
		if (off < 0 || off >= size)
			continue;
		if (len > size - off)
			len = size - off;
		vd_node_pread(n, off, buf, len);
	}
	for (int i = 0; i < 64 && pos < size; i++) {
		int64_t pnum = 0, map = 0;
		struct vd_node *file = NULL;
		int ret = vd_node_block_status(n, pos, size - pos, &pnum, &map, &file);
		if (ret < 0 || pnum <= 0)
			break;
		pos += pnum;
	}
	if (vd_node_get_info(n, &info, &err) == 0)
		vd_image_info_cleanup(&info);
	memset(&res, 0, sizeof(res));
	vd_node_check(n, &res, 0);
}

static void fuzz_image_write(struct vd_node *n)
{
	static uint8_t in[8192], out[8192];
	int64_t size = vd_node_size(n);
	int64_t offs[] = {0, (1 << 20) - 4096, (2 << 20) - 4096, size / 2, size - 8192};

	memset(in, 0x5a, sizeof(in));
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		int64_t off = offs[i] & ~511, len = sizeof(in);
		if (off < 0 || off >= size)
			continue;
		if (len > size - off)
			len = size - off;
		if (vd_node_pwrite(n, off, in, len, 0) < 0)
			continue;
		/* A write that succeeded reads back, unless a later step broke
		 * the image (then the read fails cleanly). */
		if (vd_node_pread(n, off, out, len) == 0)
			FUZZ_ASSERT(memcmp(in, out, (size_t)len) == 0);
	}
	vd_node_flush(n);
}

static int fuzz_image(const char *format, const uint8_t *data, size_t size)
{
	static struct vd_loop *loop;
	char path[] = "/tmp/fuzz-image-XXXXXX";
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	int fd;

	if (!loop) {
		if (vd_loop_new(&loop) < 0)
			return 0;
		vd_loop_set_current(loop);
	}
	fd = mkstemp(path);
	if (fd < 0)
		return 0;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		unlink(path);
		return 0;
	}
	close(fd);
	if (vd_node_open(path, format, NULL, VD_OPEN_NO_BACKING, &n, &err) == 0) {
		fuzz_image_read(n);
		vd_node_unref(n);
		err.code = 0;
		err.msg[0] = 0;
		if (vd_node_open(path, format, NULL, VD_OPEN_NO_BACKING | VD_OPEN_RDWR, &n, &err) ==
		    0) {
			fuzz_image_write(n);
			fuzz_image_read(n);
			vd_node_unref(n);
		}
	} else if (!err.msg[0]) {
		fprintf(stderr, "open failed without a message\n");
		abort();
	}
	unlink(path);
	return 0;
}

#endif
