/* SPDX-License-Identifier: MIT */
/*
 * vd_node_snapshot_load_tmp (qemu-img convert -l): QEMU's checks and
 * messages in order, the id/name lookup rules, reads of the snapshot's
 * data (also past the end of a snapshot L1 table shorter than the image
 * needs) and the active state left as it was.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/block.h>

#include "tests/lib/test.h"

static struct vd_node *open_img(const char *path, const char *fmt, int flags)
{
	struct vd_error err = {0};
	struct vd_node *n = NULL;

	if (vd_node_open(path, fmt, NULL, flags, &n, &err) < 0) {
		fprintf(stderr, "open %s: %s\n", path, err.msg);
		return NULL;
	}
	return n;
}

static int create(const char *path, const char *fmt, const char *options, const char *size)
{
	struct vd_opts *o = NULL;
	struct vd_error err = {0};
	int ret;

	if (vd_opts_parse(options, NULL, &o, &err) < 0)
		return -EINVAL;
	vd_opts_set(o, "size", size);
	ret = vd_image_create(path, fmt, o, &err);
	vd_opts_free(o);
	return ret;
}

static bool filled(struct vd_node *n, int64_t off, int64_t len, uint8_t v)
{
	uint8_t *buf = malloc((size_t)len);
	bool ok = buf && vd_node_pread(n, off, buf, len) == 0;

	for (int64_t i = 0; ok && i < len; i++)
		ok = buf[i] == v;
	free(buf);
	return ok;
}

static void fill(struct vd_node *n, int64_t off, int64_t len, uint8_t v)
{
	uint8_t *buf = malloc((size_t)len);

	memset(buf, v, (size_t)len);
	CHECK_EQ(vd_node_pwrite(n, off, buf, len, 0), 0);
	free(buf);
}

static void test_load_tmp(void)
{
	const char *path = test_path("sn.qcow2"), *raw = test_path("r.raw");
	struct vd_error err = {0};
	struct vd_node *n;

	/* 512-byte clusters: an L1 entry covers 32 KiB; snapshot "a" is
	 * taken at 64 KiB (2 entries), the image then grows to 1 MiB. */
	REQUIRE(create(path, "qcow2", "cluster_size=512", "65536") == 0);
	n = open_img(path, "qcow2", VD_OPEN_RDWR);
	REQUIRE(n);
	fill(n, 0, 4096, 0x11);
	CHECK_EQ(vd_node_snapshot_create(n, "a", &err), 0);
	CHECK_EQ(vd_node_truncate(n, 1 << 20, false, VD_PREALLOC_OFF, &err), 0);
	fill(n, 0, 512, 0x22);
	fill(n, 512 * 1024, 4096, 0x33);
	CHECK_EQ(vd_node_snapshot_create(n, "b", &err), 0);
	fill(n, 0, 512, 0x44);
	/* Read-write: refused. */
	CHECK_EQ(vd_node_snapshot_load_tmp(n, "1", NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "Device is not readonly");
	vd_node_unref(n);

	n = open_img(path, "qcow2", 0);
	REQUIRE(n);
	vd_error_clear(&err);
	CHECK_EQ(vd_node_snapshot_load_tmp(n, NULL, NULL, &err), -EINVAL);
	CHECK_STR(err.msg, "snapshot_id and name are both NULL");
	vd_error_clear(&err);
	CHECK_EQ(vd_node_snapshot_load_tmp(n, "a", NULL, &err), -ENOENT); /* "a" is a name */
	CHECK_STR(err.msg, "Can't find snapshot");
	vd_error_clear(&err);
	CHECK_EQ(vd_node_snapshot_load_tmp(n, "1", "b", &err), -ENOENT); /* both must match */
	vd_error_clear(&err);
	CHECK_EQ(vd_node_snapshot_load_tmp_by_id_or_name(n, "a", &err), 0);
	CHECK_EQ(vd_node_size(n), 1 << 20); /* the image's size, as QEMU 7.2 */
	CHECK(filled(n, 0, 4096, 0x11));
	CHECK(filled(n, 512 * 1024, 4096, 0)); /* past the snapshot's L1 table */
	CHECK(filled(n, (1 << 20) - 4096, 4096, 0));
	vd_node_unref(n);

	n = open_img(path, "qcow2", 0);
	REQUIRE(n);
	CHECK_EQ(vd_node_snapshot_load_tmp(n, "2", "b", &err), 0);
	CHECK(filled(n, 0, 512, 0x22));
	CHECK(filled(n, 512, 3584, 0x11));
	CHECK(filled(n, 512 * 1024, 4096, 0x33));
	vd_node_unref(n);

	/* The active state is what it was. */
	n = open_img(path, "qcow2", 0);
	REQUIRE(n);
	CHECK(filled(n, 0, 512, 0x44));
	CHECK(filled(n, 512 * 1024, 4096, 0x33));
	vd_node_unref(n);

	/* A format without internal snapshots: QEMU's message. */
	REQUIRE(create(raw, "raw", "", "65536") == 0);
	n = open_img(raw, "raw", 0);
	REQUIRE(n);
	vd_error_clear(&err);
	CHECK_EQ(vd_node_snapshot_load_tmp_by_id_or_name(n, "a", &err), -ENOTSUP);
	CHECK_STR(err.msg, "Block format 'raw' used by device '' does not support temporarily "
			   "loading internal snapshots");
	vd_node_unref(n);
}

int main(void)
{
	struct vd_loop *loop;

	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	RUN(test_load_tmp);
	return test_finish();
}
