/* SPDX-License-Identifier: MIT */
/*
 * The names of RBD images, as QEMU 7.2 spells them (block/rbd.c,
 * qemu_rbd_parse_filename): rbd:pool[/namespace]/image[@snapshot][:key=value...].
 * Separate from the driver (no librbd here) so that the fuzz target
 * (tests/fuzz/fuzz-rbd-name.c) builds everywhere.
 */
#ifndef VDISK_BLOCK_DRIVERS_RBD_NAME_H
#define VDISK_BLOCK_DRIVERS_RBD_NAME_H

#include <vdisk/error.h>

#define RBD_MAX_CONF 32 /* librados options in one name */

/* What a name or an option tree says to open.  Strings are malloc'd; the
 * optional ones are NULL when absent. */
struct rbd_spec {
	char *pool, *namespace, *image, *snapshot;
	char *conf; /* "conf=": a ceph.conf to read */
	char *user; /* "id=": the client name */
	int nkeys; /* other keys, for rados_conf_set() */
	char *keys[RBD_MAX_CONF], *values[RBD_MAX_CONF];
};

/*
 * Parse @filename ("rbd:..."; a backslash escapes the next character) into
 * @sp, which must be zeroed.  Returns 0, or -errno with @err set and @sp
 * partly filled (free it with rbd_spec_free()).  On success pool and image
 * are set and non-empty.
 */
int rbd_parse_filename(const char *filename, struct rbd_spec *sp, struct vd_error *err);
void rbd_spec_free(struct rbd_spec *sp);
/* Replace *dst with a copy of @v: 0 or -ENOMEM. */
int rbd_set_str(char **dst, const char *v);
/* The name in the file-name spelling (malloc'd; NULL on ENOMEM). */
char *rbd_spec_filename(const struct rbd_spec *sp);

#endif
