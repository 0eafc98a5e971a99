/* SPDX-License-Identifier: MIT */
/* The built-in drivers, listed by the registry (block/registry.c). */
#ifndef VDISK_BLOCK_DRIVERS_H
#define VDISK_BLOCK_DRIVERS_H

#include <vdisk/block_driver.h>

extern const struct vd_block_driver vd_driver_file; /* "file": regular files, block devices */
extern const struct vd_block_driver vd_driver_raw; /* "raw": format with offset/size */
extern const struct vd_block_driver vd_driver_null_co; /* "null-co": reads zeroes */
extern const struct vd_block_driver vd_driver_null_aio; /* "null-aio": same, completes later */
extern const struct vd_block_driver vd_driver_blkdebug; /* "blkdebug": fault injection */
extern const struct vd_block_driver vd_driver_crash_sim; /* "crash-sim": power-cut simulation */
extern const struct vd_block_driver vd_driver_qcow2; /* "qcow2": QEMU copy-on-write v2/v3 */
extern const struct vd_block_driver vd_driver_nbd; /* "nbd": client of an NBD server */
extern const struct vd_block_driver vd_driver_vpc; /* "vpc": VHD fixed and dynamic */
extern const struct vd_block_driver vd_driver_vdi; /* "vdi": VirtualBox, dynamic and static */
extern const struct vd_block_driver vd_driver_luks; /* "luks": LUKS1 encryption */
extern const struct vd_block_driver vd_driver_vmdk; /* "vmdk": VMware sparse, flat, stream */
extern const struct vd_block_driver vd_driver_vhdx; /* "vhdx": Hyper-V VHDX fixed and dynamic */
extern const struct vd_block_driver vd_driver_qed; /* "qed": QEMU enhanced disk */
extern const struct vd_block_driver vd_driver_qcow; /* "qcow": QEMU qcow version 1, read-only */
extern const struct vd_block_driver vd_driver_parallels; /* "parallels": read-only */
extern const struct vd_block_driver vd_driver_bochs; /* "bochs": growing redolog, read-only */
extern const struct vd_block_driver vd_driver_cloop; /* "cloop": compressed loop, read-only */
extern const struct vd_block_driver vd_driver_dmg; /* "dmg": Apple disk image, read-only */
#ifdef VD_HAVE_RBD
extern const struct vd_block_driver vd_driver_rbd; /* "rbd": Ceph RBD images through librbd */
#endif

#endif
