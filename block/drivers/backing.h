/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the format drivers outside qcow2 (qed, qcow): opening
 * the backing file an image header names, reading metadata from the
 * protocol child, and refusing read-write opens of read-only formats.
 */
#ifndef VDISK_BLOCK_DRIVERS_BACKING_H
#define VDISK_BLOCK_DRIVERS_BACKING_H

#include <stddef.h>
#include <stdint.h>

#include <vdisk/block_driver.h>

/* How deep a chain of backing files opened from headers may go. */
#define VD_MAX_BACKING_DEPTH 16

/*
 * Open n->backing as qcow2 does: a "backing" option given by the user wins
 * (a file name, a dictionary, or "null" for none); otherwise @name from the
 * header, resolved against the directory of the image, in format @fmt (NULL:
 * probed).  Names that look like a protocol or json: are refused.  Nothing is
 * opened with VD_OPEN_NO_BACKING.  The backing node is read-only.
 */
int vd_format_open_backing(struct vd_node *n, struct vd_opts *opts, int flags, const char *name,
			   const char *fmt, struct vd_error *err);

/* @name resolved against the directory of @overlay (malloc'd; NULL on ENOMEM). */
char *vd_format_resolve_backing(const char *overlay, const char *name);

/* Read @len bytes at @offset of n->file into @buf (coroutine). */
int vd_format_pread(struct vd_node *n, uint64_t offset, void *buf, size_t len);

/*
 * Read [@offset, @offset + @bytes) of the backing node into @qiov at @qoff:
 * zeroes where there is no backing node or past its end (coroutine).
 */
int vd_format_read_backing(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   size_t qoff);

/*
 * The read-only formats (bochs, cloop, dmg, and qcow and parallels, which
 * vdisk reads only): refuse a read-write open with QEMU's "Image is
 * read-only" (bdrv_apply_auto_read_only without auto-read-only).
 */
int vd_format_refuse_rdwr(struct vd_node *n, int flags, struct vd_error *err);

#endif
