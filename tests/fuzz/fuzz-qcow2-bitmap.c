/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for what qemu-img bitmap and amend parse and rewrite in a
 * qcow2 image: the bitmaps extension, the bitmap directory, bitmap tables
 * and data, and the tables a refcount width change and a downgrade walk.
 * Each input is written to a temporary file, opened read-write as qcow2 (no
 * backing files: the bitmaps are loaded and flagged in use), written to,
 * and put through bitmap merge/clear/disable/add/remove and
 * amend refcount_bits=8, size=, compat=0.10.  Every input must end in
 * clean errors or clean changes: no crash, no hang, no huge allocation.
 *
 * Built like fuzz-qcow2.c; the corpus is tests/fuzz/corpus/qcow2-bitmap/
 * (make-qcow2-bitmap-corpus.py).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vdisk/block.h>
#include <vdisk/loop.h>
#include <vdisk/opts.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void amend(struct vd_node *n, const char *opts)
{
	struct vd_error err = {0};
	struct vd_opts *o = NULL;

	if (vd_opts_parse(opts, NULL, &o, &err) == 0) {
		memset(&err, 0, sizeof(err));
		vd_node_amend(n, o, false, &err);
		vd_opts_free(o);
	}
}

static void exercise(struct vd_node *n)
{
	static const struct {
		enum vd_bitmap_action act;
		const char *name, *src;
	} ops[] = {
		{VD_BITMAP_MERGE, "b0", "b1"},	 {VD_BITMAP_CLEAR, "b1", NULL},
		{VD_BITMAP_DISABLE, "b0", NULL}, {VD_BITMAP_ADD, "new", NULL},
		{VD_BITMAP_REMOVE, "b0", NULL},
	};
	static const uint8_t buf[4096] = {1};
	struct vd_error err;

	/* Writes recorded in the bitmaps loaded at open (and, after the
	 * operations, in the ones loaded again). */
	vd_node_pwrite(n, 0, buf, sizeof(buf), 0);
	vd_node_pwrite_zeroes(n, 65536, 65536, 0);
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		memset(&err, 0, sizeof(err));
		if (vd_node_bitmap(n, ops[i].act, ops[i].name, 512, NULL, ops[i].src, &err) < 0 &&
		    !err.msg[0]) {
			fprintf(stderr, "bitmap op failed without a message\n");
			abort();
		}
	}
	vd_node_pwrite(n, 1 << 20, buf, sizeof(buf), 0);
	amend(n, "refcount_bits=8");
	amend(n, "size=2M");
	amend(n, "compat=0.10");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vd_loop *loop;
	char path[] = "/tmp/fuzz-qcow2-bitmap-XXXXXX";
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
	if (vd_node_open(path, "qcow2", NULL, VD_OPEN_RDWR | VD_OPEN_NO_BACKING, &n, &err) == 0) {
		exercise(n);
		vd_node_unref(n);
	} else if (!err.msg[0]) {
		fprintf(stderr, "open failed without a message\n");
		abort();
	}
	unlink(path);
	return 0;
}
