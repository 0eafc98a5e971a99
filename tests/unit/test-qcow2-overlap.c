/* SPDX-License-Identifier: MIT */
/*
 * The qcow2 metadata-cluster index (block/drivers/qcow2/overlap.c): insert,
 * remove and query edge cases, reference counting per class, hostile
 * offsets, deletion that keeps probe chains intact, the extent fallback past
 * the slot budget; and the overlap-check options on a real image.
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

#define CB 16 /* 64 KiB clusters */
#define CS (1ull << CB)

static void test_empty_and_ranges(void)
{
	struct qcow2_ol_index ix;

	qcow2_ol_init(&ix, CB);
	CHECK_EQ(qcow2_ol_query(&ix, 0, CS), 0);
	CHECK_EQ(qcow2_ol_query(&ix, 0, 0), 0);
	CHECK_EQ(qcow2_ol_add(&ix, QCOW2_OL_ACTIVE_L1_BITNR, 3 * CS, 8), 0);
	/* Cluster granularity: the rest of the cluster is protected too. */
	CHECK_EQ(qcow2_ol_query(&ix, 3 * CS + CS - 1, 1), QCOW2_OL_ACTIVE_L1);
	CHECK_EQ(qcow2_ol_query(&ix, 3 * CS - 1, 1), 0);
	CHECK_EQ(qcow2_ol_query(&ix, 3 * CS - 1, 2), QCOW2_OL_ACTIVE_L1);
	CHECK_EQ(qcow2_ol_query(&ix, 4 * CS, CS), 0);
	CHECK_EQ(qcow2_ol_query(&ix, 0, 100 * CS), QCOW2_OL_ACTIVE_L1);
	/* A zero-length add protects nothing. */
	CHECK_EQ(qcow2_ol_add(&ix, QCOW2_OL_SNAPSHOT_TABLE_BITNR, 9 * CS, 0), 0);
	CHECK_EQ(qcow2_ol_query(&ix, 9 * CS, CS), 0);
	/* Several classes on one cluster: all reported. */
	CHECK_EQ(qcow2_ol_add(&ix, QCOW2_OL_ACTIVE_L2_BITNR, 3 * CS, CS), 0);
	CHECK_EQ(qcow2_ol_query(&ix, 3 * CS, 1), QCOW2_OL_ACTIVE_L1 | QCOW2_OL_ACTIVE_L2);
	CHECK_EQ(qcow2_ol_add(&ix, 99, 0, CS), -EINVAL);
	CHECK_STR(qcow2_ol_name(QCOW2_OL_INACTIVE_L2_BITNR), "inactive L2 table");
	CHECK_STR(qcow2_ol_name(QCOW2_OL_MAIN_HEADER_BITNR), "qcow2_header");
	qcow2_ol_destroy(&ix);
}

static void test_refcounts(void)
{
	struct qcow2_ol_index ix;

	qcow2_ol_init(&ix, CB);
	/* One L2 table named by two L1 entries (a corrupt image): it stays
	 * protected until both references are gone. */
	qcow2_ol_add(&ix, QCOW2_OL_ACTIVE_L2_BITNR, 5 * CS, CS);
	qcow2_ol_add(&ix, QCOW2_OL_ACTIVE_L2_BITNR, 5 * CS, CS);
	qcow2_ol_add(&ix, QCOW2_OL_INACTIVE_L2_BITNR, 5 * CS, CS);
	qcow2_ol_remove(&ix, QCOW2_OL_ACTIVE_L2_BITNR, 5 * CS, CS);
	CHECK_EQ(qcow2_ol_query(&ix, 5 * CS, CS), QCOW2_OL_ACTIVE_L2 | QCOW2_OL_INACTIVE_L2);
	qcow2_ol_remove(&ix, QCOW2_OL_ACTIVE_L2_BITNR, 5 * CS, CS);
	CHECK_EQ(qcow2_ol_query(&ix, 5 * CS, CS), QCOW2_OL_INACTIVE_L2);
	/* Removing what is not there changes nothing. */
	qcow2_ol_remove(&ix, QCOW2_OL_ACTIVE_L2_BITNR, 5 * CS, CS);
	qcow2_ol_remove(&ix, QCOW2_OL_REFCOUNT_BLOCK_BITNR, 77 * CS, CS);
	CHECK_EQ(qcow2_ol_query(&ix, 5 * CS, CS), QCOW2_OL_INACTIVE_L2);
	qcow2_ol_remove(&ix, QCOW2_OL_INACTIVE_L2_BITNR, 5 * CS, CS);
	CHECK_EQ(qcow2_ol_query(&ix, 5 * CS, CS), 0);
	CHECK_EQ(ix.used, 0);
	/* A saturated count is never released. */
	for (int i = 0; i < 300; i++)
		qcow2_ol_add(&ix, QCOW2_OL_REFCOUNT_BLOCK_BITNR, 6 * CS, CS);
	for (int i = 0; i < 400; i++)
		qcow2_ol_remove(&ix, QCOW2_OL_REFCOUNT_BLOCK_BITNR, 6 * CS, CS);
	CHECK_EQ(qcow2_ol_query(&ix, 6 * CS, CS), QCOW2_OL_REFCOUNT_BLOCK);
	qcow2_ol_destroy(&ix);
}

static void test_hostile_offsets(void)
{
	struct qcow2_ol_index ix;
	uint64_t top = QCOW2_MAX_HOST_OFFSET;

	qcow2_ol_init(&ix, CB);
	/* Ranges that wrap or pass 2^56 are clipped, never overflow. */
	CHECK_EQ(qcow2_ol_add(&ix, QCOW2_OL_INACTIVE_L1_BITNR, top - CS, UINT64_MAX), 0);
	CHECK_EQ(qcow2_ol_query(&ix, top - CS, 1), QCOW2_OL_INACTIVE_L1);
	CHECK_EQ(qcow2_ol_query(&ix, top - 2 * CS, CS), 0);
	CHECK_EQ(qcow2_ol_query(&ix, UINT64_MAX - 10, 100), 0);
	CHECK_EQ(qcow2_ol_query(&ix, top - 1, UINT64_MAX), QCOW2_OL_INACTIVE_L1);
	CHECK_EQ(qcow2_ol_add(&ix, QCOW2_OL_INACTIVE_L1_BITNR, UINT64_MAX, 8), 0);
	CHECK_EQ(qcow2_ol_add(&ix, QCOW2_OL_INACTIVE_L1_BITNR, top, CS), 0);
	CHECK_EQ(ix.used, 1);
	qcow2_ol_remove(&ix, QCOW2_OL_INACTIVE_L1_BITNR, top - CS, UINT64_MAX);
	CHECK_EQ(ix.used, 0);
	qcow2_ol_destroy(&ix);
}

/* Many clusters whose hashes collide in a small table: removing some in
 * every order must keep the others findable (backward-shift deletion). */
static void test_delete_keeps_chains(void)
{
	struct qcow2_ol_index ix;
	const int n = 5000;
	int ok = 1;

	qcow2_ol_init(&ix, 9);
	for (int i = 0; i < n; i++)
		qcow2_ol_add(&ix, QCOW2_OL_ACTIVE_L2_BITNR, (uint64_t)i * 7919 * 512, 512);
	CHECK_EQ(ix.used, (uint64_t)n);
	for (int i = 0; i < n; i += 3)
		qcow2_ol_remove(&ix, QCOW2_OL_ACTIVE_L2_BITNR, (uint64_t)i * 7919 * 512, 512);
	for (int i = 0; i < n; i++) {
		unsigned want = i % 3 ? QCOW2_OL_ACTIVE_L2 : 0;
		if (qcow2_ol_query(&ix, (uint64_t)i * 7919 * 512, 512) != want)
			ok = 0;
	}
	CHECK(ok);
	/* Clusters next to indexed ones are not reported. */
	CHECK_EQ(qcow2_ol_query(&ix, 7919 * 512 + 512, 512), 0);
	/* A query larger than the table walks the table instead. */
	CHECK_EQ(qcow2_ol_query(&ix, 0, 1ull << 40), QCOW2_OL_ACTIVE_L2);
	CHECK_EQ(qcow2_ol_query(&ix, (uint64_t)n * 7919 * 512, 1ull << 40), 0);
	qcow2_ol_remove_class(&ix, QCOW2_OL_ACTIVE_L2_BITNR);
	CHECK_EQ(ix.used, 0);
	CHECK_EQ(qcow2_ol_query(&ix, 0, 1ull << 40), 0);
	qcow2_ol_destroy(&ix);
}

static void test_budget_extents(void)
{
	struct qcow2_ol_index ix;

	qcow2_ol_init(&ix, 9);
	ix.max_slots = 100;
	qcow2_ol_add(&ix, QCOW2_OL_ACTIVE_L2_BITNR, 0, 512);
	/* 1000 clusters do not fit: kept as one extent. */
	CHECK_EQ(qcow2_ol_add(&ix, QCOW2_OL_INACTIVE_L1_BITNR, 512 * 10, 512 * 1000), 0);
	CHECK_EQ(ix.used, 1);
	CHECK_EQ(ix.nextents, 1);
	CHECK_EQ(qcow2_ol_query(&ix, 512 * 1009, 1), QCOW2_OL_INACTIVE_L1);
	CHECK_EQ(qcow2_ol_query(&ix, 512 * 1010, 512), 0);
	CHECK_EQ(qcow2_ol_query(&ix, 0, 512 * 11), QCOW2_OL_ACTIVE_L2 | QCOW2_OL_INACTIVE_L1);
	qcow2_ol_remove(&ix, QCOW2_OL_INACTIVE_L1_BITNR, 512 * 10, 512 * 1000);
	CHECK_EQ(ix.nextents, 0);
	CHECK_EQ(qcow2_ol_query(&ix, 512 * 500, 1), 0);
	qcow2_ol_add(&ix, QCOW2_OL_INACTIVE_L1_BITNR, 512 * 10, 512 * 1000);
	qcow2_ol_clear(&ix);
	CHECK_EQ(qcow2_ol_query(&ix, 0, 1ull << 30), 0);
	qcow2_ol_destroy(&ix);
}

/* The options, on an image whose L2 entry names the refcount table. */
static int run_write(const char *opts, char *msg)
{
	const char *path = test_path("ol.qcow2");
	struct vd_opts *o = NULL, *co = NULL;
	struct vd_error err = {0};
	struct vd_node *n = NULL;
	uint8_t b[8], buf[512];
	int fd, ret;

	unlink(path);
	vd_opts_parse("", NULL, &co, &err);
	vd_opts_set(co, "size", "16M");
	ret = vd_image_create(path, "qcow2", co, &err);
	vd_opts_free(co);
	if (ret < 0)
		return ret;
	fd = open(path, O_RDWR);
	if (fd < 0)
		return -errno;
	/* L1 at 0x30000; a new L2 at 0x40000; its entry 0 -> the reftable. */
	qcow2_put_be64(b, 0x40000 | QCOW2_OFLAG_COPIED);
	ret = pwrite(fd, b, 8, 0x30000) == 8 ? 0 : -EIO;
	qcow2_put_be64(b, 0x10000 | QCOW2_OFLAG_COPIED);
	if (ret == 0)
		ret = pwrite(fd, b, 8, 0x40000) == 8 ? 0 : -EIO;
	if (ret == 0 && ftruncate(fd, 0x50000) < 0)
		ret = -errno;
	close(fd);
	if (ret < 0)
		return ret;
	if (vd_opts_parse(opts, NULL, &o, &err) < 0) {
		snprintf(msg, 512, "%.300s", err.msg);
		return -EINVAL;
	}
	ret = vd_node_open(path, "qcow2", o, VD_OPEN_RDWR, &n, &err);
	vd_opts_free(o);
	if (ret < 0) {
		snprintf(msg, 512, "%.300s", err.msg);
		return ret;
	}
	memset(buf, 0x5a, sizeof(buf));
	ret = vd_node_pwrite(n, 0, buf, sizeof(buf), 0);
	vd_node_unref(n);
	return ret;
}

static void test_options(void)
{
	char msg[512] = "";

	CHECK_EQ(run_write("", msg), -EIO);
	CHECK_EQ(run_write("overlap-check=cached", msg), -EIO);
	CHECK_EQ(run_write("overlap-check=constant", msg), -EIO);
	CHECK_EQ(run_write("overlap-check=all", msg), -EIO);
	CHECK_EQ(run_write("overlap-check.template=all", msg), -EIO);
	CHECK_EQ(run_write("overlap-check.refcount-table=off", msg), 0);
	CHECK_EQ(run_write("overlap-check.template=none,overlap-check.refcount-table=on", msg),
		 -EIO);
	CHECK_EQ(run_write("overlap-check=none", msg), 0);
	CHECK_EQ(run_write("overlap-check=some", msg), -EINVAL);
	CHECK(strstr(msg, "Unsupported value 'some' for qcow2 option 'overlap-check'") != NULL);
	CHECK_EQ(run_write("overlap-check.active-l2=maybe", msg), -EINVAL);
}

int main(void)
{
	struct vd_loop *loop;

	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	RUN(test_empty_and_ranges);
	RUN(test_refcounts);
	RUN(test_hostile_offsets);
	RUN(test_delete_keeps_chains);
	RUN(test_budget_extents);
	RUN(test_options);
	return test_finish();
}
