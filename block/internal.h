/* SPDX-License-Identifier: MIT */
/* Private interfaces between the files of the block core. */
#ifndef VDISK_BLOCK_INTERNAL_H
#define VDISK_BLOCK_INTERNAL_H

#include <vdisk/block_driver.h>

/* registry.c */
size_t vd_driver_count(void);
const struct vd_block_driver *vd_driver_at(size_t i);

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

#endif
