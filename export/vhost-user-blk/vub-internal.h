/* SPDX-License-Identifier: MIT */
/* Private to export/vhost-user-blk: the export object and its connections. */
#ifndef VDISK_VUB_INTERNAL_H
#define VDISK_VUB_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/export.h>
#include <vdisk/loop.h>

struct vub_conn;
struct vd_blk;

struct vd_export {
	char *id;
	struct vd_loop *loop;
	char *path; /* socket file we created, removed at free */
	int listen_fd;
	bool writable;
	uint16_t num_queues;
	uint32_t lbs;
	char *serial;
	struct vub_conn *conns;
	int nconns;
	/* An anonymous backend on the node: every request goes through it,
	 * and block_resize reaches us through its device callbacks (QEMU's
	 * export BlockBackend with its resize callback). */
	struct vd_blk *blk;
};

/* Serve a connected socket (takes ownership of @fd). 0 or -errno. */
int vub_conn_new(struct vd_export *e, int fd);
/* Drain and close one connection. */
void vub_conn_free(struct vub_conn *c);
/* The config space changed (resize): send CONFIG_CHANGE_MSG if the front
 * end gave a back-end channel. */
void vub_conn_config_changed(struct vub_conn *c);
/* The next connection in the export's list. */
struct vub_conn *vub_conn_next(struct vub_conn *c);

#endif
