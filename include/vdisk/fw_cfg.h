/* SPDX-License-Identifier: MIT */
/*
 * QEMU's firmware configuration device (docs/specs/fw_cfg.txt), the
 * traditional I/O-port interface only: a 16-bit selector write and byte
 * reads of the selected item's data at the same 2-port region (on a PC,
 * 0x510 and 0x511).  Enough for test drivers (libqos) to size RAM.
 */
#ifndef VDISK_HW_FW_CFG_H
#define VDISK_HW_FW_CFG_H

#include <stddef.h>
#include <stdint.h>

#include <vdisk/memory.h>

#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_ID 0x01
#define FW_CFG_UUID 0x02
#define FW_CFG_RAM_SIZE 0x03
#define FW_CFG_NOGRAPHIC 0x04
#define FW_CFG_NB_CPUS 0x05
#define FW_CFG_MACHINE_ID 0x06
#define FW_CFG_MAX_CPUS 0x0f
#define FW_CFG_FILE_DIR 0x19
#define FW_CFG_MAX_ENTRY 0x40 /* QEMU's default: FW_CFG_FILE_FIRST + 32 slots */

struct vd_fw_cfg;

/* Map at @base in @io with the signature, ID (traditional interface only),
 * UUID, CPU counts and an empty file directory.  NULL on ENOMEM. */
struct vd_fw_cfg *vd_fw_cfg_new(struct vd_address_space *io, uint16_t base);
void vd_fw_cfg_free(struct vd_fw_cfg *fw);
/* Set item @key (< FW_CFG_MAX_ENTRY) to a copy of @data.  0 or -errno. */
int vd_fw_cfg_add_bytes(struct vd_fw_cfg *fw, uint16_t key, const void *data, size_t len);
int vd_fw_cfg_add_i16(struct vd_fw_cfg *fw, uint16_t key, uint16_t v); /* little-endian */
int vd_fw_cfg_add_i32(struct vd_fw_cfg *fw, uint16_t key, uint32_t v);
int vd_fw_cfg_add_i64(struct vd_fw_cfg *fw, uint16_t key, uint64_t v);

#endif
