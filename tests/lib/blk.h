/* SPDX-License-Identifier: MIT */
/* A device's view of a node in unit tests: an anonymous backend on it. */
#ifndef VDISK_TEST_BLK_H
#define VDISK_TEST_BLK_H

#include <vdisk/backend.h>

/* A backend outside any registry with @n as medium (takes a reference on
 * @n); NULL on failure.  vd_blk_unref() it when done. */
static inline struct vd_blk *test_blk_on(struct vd_node *n)
{
	struct vd_blk *blk = NULL;

	if (!n || vd_blk_new(NULL, NULL, &blk) < 0)
		return NULL;
	if (vd_blk_insert_node(blk, n) < 0) {
		vd_blk_unref(blk);
		return NULL;
	}
	return blk;
}

#endif
