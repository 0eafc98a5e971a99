/* SPDX-License-Identifier: MIT */
/* Private interfaces between the files of the block core. */
#ifndef VDISK_BLOCK_INTERNAL_H
#define VDISK_BLOCK_INTERNAL_H

#include <vdisk/block_driver.h>

/* registry.c */
size_t vd_driver_count(void);
const struct vd_block_driver *vd_driver_at(size_t i);
/* The protocol driver a filename names: "nbd" for nbd:, nbd+tcp:, nbd+unix:
 * names, else "file". */
const char *vd_protocol_for_filename(const char *filename);

/* node.c */
/* Create @filename's protocol file with @opts (size, the protocol's own
 * options): the protocol's create, or for one without (nbd) QEMU's
 * fallback: the existing target, at least size bytes, its first sector
 * cleared. */
int vd_protocol_create(const char *filename, struct vd_opts *opts, struct vd_error *err);

/* accounting.c */
void vd_acct_done(struct vd_node *n, enum vd_acct_type type, int64_t bytes, int ret,
		  int64_t start_ns);
/* Count a request refused by validation; @n may be NULL (then nothing). */
void vd_acct_invalid(struct vd_node *n, enum vd_acct_type type);

/* io.c */
void vd_node_init_io(struct vd_node *n);
/* Sizes are whole 512-byte sectors, as QEMU counts them (total_sectors): a
 * 6-byte file is a 512-byte node whose tail reads as zeroes. */
void vd_node_round_size(struct vd_node *n);

/* probe.c */
/* How much of a file probing looks at: QEMU 7.2's BLOCK_PROBE_BUF_SIZE, one
 * sector (a vmdk descriptor whose version line ends past it is raw there). */
#define VD_PROBE_BYTES 512
/*
 * The format @buf (the first @len bytes of a file named @filename, NULL if
 * none) probes as: the name of the best match, with *drv its driver, or
 * NULL in *drv for a format QEMU knows and vdisk cannot open.  NULL (no
 * match) only when raw is not registered.
 */
const char *vd_probe_buffer(const uint8_t *buf, size_t len, const char *filename,
			    const struct vd_block_driver **drv);
/* Probe @filename (vd_probe_format), accepting a format that can name other
 * files when @allow_references. */
int vd_probe_file(const char *filename, bool allow_references, const char **format,
		  struct vd_error *err);
/* The same over the first bytes of an open node (a protocol, nbd://). */
int vd_probe_node(struct vd_node *n, const char *filename, bool allow_references,
		  const char **format, struct vd_error *err);

#endif
