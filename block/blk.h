/* SPDX-License-Identifier: MIT */
/* The block backend's state, shared by block/backend.c (medium, policy,
 * tray) and block/blk-io.c (requests through the handle). */
#ifndef VDISK_BLOCK_BLK_H
#define VDISK_BLOCK_BLK_H

#include <vdisk/backend.h>

struct vd_blk {
	struct vd_blk *next, *prev; /* in the registry */
	struct vd_blk_registry *reg;
	int refcnt;
	char *name;
	char *qdev_id;
	struct vd_node *root;
	bool read_only;
	bool dev_attached;
	const struct vd_blk_dev_ops *dev_ops;
	void *dev_opaque;
	bool tray_open, locked;
	enum vd_blk_on_error on_read_error, on_write_error;
	bool iostatus_enabled;
	enum vd_blk_io_status iostatus;

	/* I/O (block/blk-io.c). */
	bool write_cache; /* what the device shows; applied to each medium */
	uint64_t in_flight; /* submitted, completion not yet run */
	struct vd_co_queue drain_waiters; /* vd_blk_drain() in coroutines */
	struct vd_blk_retry *retry_head, **retry_tail; /* oldest first */
};

#endif
