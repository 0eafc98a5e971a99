/* SPDX-License-Identifier: MIT */
/*
 * fw_cfg, traditional interface (QEMU docs/specs/fw_cfg.txt, "Selector
 * Register", "Data Register"): writing a 16-bit key to the selector selects
 * an item and rewinds it; each byte read of the data register returns the next
 * byte, 0 past the end or for an item that does not exist.  As in QEMU 7.2's
 * combined port region, byte reads at either port read data and a 16-bit
 * write selects; guest data writes are ignored.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/trace.h>

#include <vdisk/fw_cfg.h>

#define FW_CFG_ENTRY_MASK 0x3fff
#define FW_CFG_ARCH_LOCAL 0x8000

struct fw_cfg_entry {
	uint8_t *data;
	size_t len;
};

struct vd_fw_cfg {
	struct fw_cfg_entry entries[FW_CFG_MAX_ENTRY];
	uint16_t cur_entry; /* UINT16_MAX: none */
	size_t cur_offset;
	struct vd_mem_region *mr;
	struct vd_address_space *io;
};

static void fw_cfg_select(struct vd_fw_cfg *fw, uint16_t key)
{
	fw->cur_offset = 0;
	if ((key & FW_CFG_ARCH_LOCAL) || (key & FW_CFG_ENTRY_MASK) >= FW_CFG_MAX_ENTRY)
		fw->cur_entry = UINT16_MAX;
	else
		fw->cur_entry = key & FW_CFG_ENTRY_MASK;
	vd_trace(fw_cfg_select, "key=0x%x", key);
}

static uint8_t fw_cfg_read_byte(struct vd_fw_cfg *fw)
{
	struct fw_cfg_entry *e;

	if (fw->cur_entry == UINT16_MAX)
		return 0;
	e = &fw->entries[fw->cur_entry];
	if (fw->cur_offset >= e->len)
		return 0;
	return e->data[fw->cur_offset++];
}

static uint64_t fw_cfg_io_read(void *opaque, uint64_t addr, unsigned size)
{
	/* QEMU accepts only byte reads here; others read as 0 (a refused
	 * access in QEMU's core reads 0). */
	return size == 1 ? fw_cfg_read_byte(opaque) : 0;
}

static void fw_cfg_io_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	if (size == 2)
		fw_cfg_select(opaque, (uint16_t)val);
}

static const struct vd_mem_ops fw_cfg_ops = {
	.read = fw_cfg_io_read,
	.write = fw_cfg_io_write,
	.valid_min = 1,
	.valid_max = 2,
	.impl_min = 1,
	.impl_max = 2,
};

int vd_fw_cfg_add_bytes(struct vd_fw_cfg *fw, uint16_t key, const void *data, size_t len)
{
	uint8_t *copy = NULL;

	if (key >= FW_CFG_MAX_ENTRY)
		return -EINVAL;
	if (len) {
		copy = malloc(len);
		if (!copy)
			return -ENOMEM;
		memcpy(copy, data, len);
	}
	free(fw->entries[key].data);
	fw->entries[key].data = copy;
	fw->entries[key].len = len;
	return 0;
}

int vd_fw_cfg_add_i16(struct vd_fw_cfg *fw, uint16_t key, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};

	return vd_fw_cfg_add_bytes(fw, key, b, sizeof(b));
}

int vd_fw_cfg_add_i32(struct vd_fw_cfg *fw, uint16_t key, uint32_t v)
{
	uint8_t b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (i * 8));
	return vd_fw_cfg_add_bytes(fw, key, b, sizeof(b));
}

int vd_fw_cfg_add_i64(struct vd_fw_cfg *fw, uint16_t key, uint64_t v)
{
	uint8_t b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (i * 8));
	return vd_fw_cfg_add_bytes(fw, key, b, sizeof(b));
}

struct vd_fw_cfg *vd_fw_cfg_new(struct vd_address_space *io, uint16_t base)
{
	struct vd_fw_cfg *fw = calloc(1, sizeof(*fw));
	static const uint8_t uuid[16];
	static const uint8_t file_dir[4]; /* big-endian count 0 */
	int ret = 0;

	if (!fw)
		return NULL;
	fw->cur_entry = UINT16_MAX;
	ret |= vd_fw_cfg_add_bytes(fw, FW_CFG_SIGNATURE, "QEMU", 4);
	/* Bit 0: the traditional interface.  No DMA interface (bit 1). */
	ret |= vd_fw_cfg_add_i32(fw, FW_CFG_ID, 1);
	ret |= vd_fw_cfg_add_bytes(fw, FW_CFG_UUID, uuid, sizeof(uuid));
	ret |= vd_fw_cfg_add_i16(fw, FW_CFG_NOGRAPHIC, 0);
	ret |= vd_fw_cfg_add_i16(fw, FW_CFG_NB_CPUS, 1);
	ret |= vd_fw_cfg_add_i16(fw, FW_CFG_MAX_CPUS, 1);
	ret |= vd_fw_cfg_add_bytes(fw, FW_CFG_FILE_DIR, file_dir, sizeof(file_dir));
	fw->mr = vd_mem_region_new_io("fwcfg", 2, &fw_cfg_ops, fw);
	if (ret || !fw->mr || vd_address_space_map(io, base, fw->mr, 0) < 0) {
		vd_mem_region_unref(fw->mr);
		fw->mr = NULL;
		vd_fw_cfg_free(fw);
		return NULL;
	}
	fw->io = io;
	return fw;
}

void vd_fw_cfg_free(struct vd_fw_cfg *fw)
{
	if (!fw)
		return;
	if (fw->mr) {
		vd_address_space_unmap(fw->io, fw->mr);
		vd_mem_region_unref(fw->mr);
	}
	for (int i = 0; i < FW_CFG_MAX_ENTRY; i++)
		free(fw->entries[i].data);
	free(fw);
}
