/* SPDX-License-Identifier: MIT */
/*
 * VHDX: creating an image laid out as QEMU 7.2's qemu-img lays it out, so
 * that `qemu-img info` and `qemu-img check` agree on it:
 *
 *   0        file identifier ("vhdxfile", creator in UTF-16LE)
 *   64 KiB   header 1 (random sequence number), 128 KiB header 2 (+1)
 *   192 KiB  region table, 256 KiB its copy: BAT and metadata regions
 *   1 MiB    the log (log_size, empty)
 *   then     the BAT (1 MiB aligned, its length rounded up to 1 MiB)
 *   then     the metadata region (1 MiB): table, items from 64 KiB in
 *   BAT end + 5 MiB   the first payload block (room QEMU leaves)
 *
 * The BAT: every payload entry ZERO with block_state_zero (the default),
 * else FULLY_PRESENT over preallocated data for fixed, NOT_PRESENT (all
 * zero, so not written) for dynamic.  Sector-bitmap entries stay zero.
 * QEMU computes the entry count in 32 bits; for a 0-byte disk that gives
 * a huge BAT region, which we reproduce for identical layouts.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "block/drivers/vhdx/vhdx.h"

const char *const vhdx_create_opts[] = {"subformat", "block_size", "log_size", "block_state_zero",
					NULL};

static int write_all(int fd, const void *buf, size_t len, uint64_t off)
{
	ssize_t w = pwrite(fd, buf, len, (off_t)off);

	return w == (ssize_t)len ? 0 : (w < 0 ? -errno : -EIO);
}

static uint64_t round_mib(uint64_t v)
{
	return (v + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
}

static void put_region(uint8_t *e, const uint8_t *guid, uint64_t offset, uint32_t length)
{
	memcpy(e, guid, 16);
	st_le64(e + 16, offset);
	st_le32(e + 24, length);
	st_le32(e + 28, 0); /* QEMU marks neither region required */
}

static void put_item(uint8_t *e, const uint8_t *guid, uint32_t offset, uint32_t length,
		     uint32_t bits)
{
	memcpy(e, guid, 16);
	st_le32(e + 16, offset);
	st_le32(e + 20, length);
	st_le32(e + 24, bits);
}

int vhdx_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	static const char *const subformats[] = {"dynamic", "fixed", NULL};
	uint64_t size, block_size, log_size, bat_off, bat_len, md_off, data_off, file_len;
	uint64_t data_blocks, bat_entries;
	uint8_t *buf = NULL, *bat = NULL;
	uint32_t seq, chunk_ratio;
	int subformat, fd = -1, ret, chunk_bits = 0;
	bool zero_blocks, fixed;
	char creator[64];

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "subformat", subformats, 0, &subformat, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "block_size", 0, &block_size, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "log_size", VHDX_MiB, &log_size, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "block_state_zero", true, &zero_blocks, err);
	if (ret < 0)
		return ret;
	fixed = subformat == 1;
	size = (size + 511) & ~511ull; /* qemu-img rounds up to a sector */
	if (size > VHDX_MAX_IMAGE_SIZE)
		return vd_error_set(err, -EINVAL, "Image size too large; max of 64TB");
	if (log_size > UINT32_MAX)
		return vd_error_set(err, -EINVAL, "Log size must be smaller than 4 GB");
	if (log_size < VHDX_MiB || log_size % VHDX_MiB)
		return vd_error_set(err, -EINVAL, "Log size must be a multiple of 1 MB");
	if (block_size == 0) {
		/* QEMU's defaults, to keep the BAT small. */
		if (size > 32 * VHDX_TiB)
			block_size = 64 * VHDX_MiB;
		else if (size > 100ull * 1024 * VHDX_MiB)
			block_size = 32 * VHDX_MiB;
		else if (size > 1024 * VHDX_MiB)
			block_size = 16 * VHDX_MiB;
		else
			block_size = 8 * VHDX_MiB;
	}
	if (block_size < VHDX_MiB || block_size % VHDX_MiB)
		return vd_error_set(err, -EINVAL, "Block size must be a multiple of 1 MB");
	if (block_size & (block_size - 1))
		return vd_error_set(err, -EINVAL, "Block size must be a power of two");
	if (block_size > VHDX_BLOCK_SIZE_MAX)
		return vd_error_set(err, -EINVAL, "Block size must not exceed %llu",
				    (unsigned long long)VHDX_BLOCK_SIZE_MAX);

	chunk_ratio = (uint32_t)((uint64_t)VHDX_MAX_SECTORS_PER_BLOCK * 512 / block_size);
	while ((1u << chunk_bits) < chunk_ratio)
		chunk_bits++;
	data_blocks = (size + block_size - 1) / block_size;
	bat_entries = data_blocks + ((uint32_t)(data_blocks - 1) >> chunk_bits);
	bat_off = round_mib(VHDX_HEADER_SECTION_END + log_size);
	bat_len = round_mib(bat_entries * 8);
	md_off = round_mib(bat_off + bat_len);
	data_off = bat_off + bat_len + 5 * VHDX_MiB;
	file_len = fixed ? data_off + size : data_off;

	buf = calloc(1, VHDX_TABLE_SIZE);
	if (!buf)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = vd_error_setg_errno(err, -errno, "Could not create '%s'", filename);
		goto out;
	}
	if (ftruncate(fd, (off_t)file_len) < 0) {
		ret = vd_error_setg_errno(err, -errno, "Could not size '%s'", filename);
		goto out;
	}

	/* File identifier (2.2.1). */
	memcpy(buf, "vhdxfile", 8);
	snprintf(creator, sizeof(creator), "vdisk v%s", VDISK_VERSION);
	for (size_t i = 0; creator[i] && 8 + 2 * i + 1 < 8 + VHDX_FILE_ID_CREATOR_SIZE; i++)
		vhdx_st16(buf + 8 + 2 * i, (uint8_t)creator[i]);
	ret = write_all(fd, buf, 8 + VHDX_FILE_ID_CREATOR_SIZE, VHDX_FILE_ID_OFFSET);
	if (ret < 0)
		goto io_error;

	/* Headers (2.2.2): empty log at 1 MiB. */
	memset(buf, 0, VHDX_HEADER_SIZE);
	memcpy(buf, "head", 4);
	ret = vhdx_guid_generate(buf + VHDX_HDR_FILE_WRITE_GUID);
	if (ret == 0)
		ret = vhdx_guid_generate(buf + VHDX_HDR_DATA_WRITE_GUID);
	if (ret == 0 && getrandom(&seq, sizeof(seq), 0) != sizeof(seq))
		ret = -EIO;
	if (ret < 0)
		goto io_error;
	vhdx_st16(buf + VHDX_HDR_VERSION, 1);
	st_le32(buf + VHDX_HDR_LOG_LENGTH, (uint32_t)log_size);
	st_le64(buf + VHDX_HDR_LOG_OFFSET, VHDX_HEADER_SECTION_END);
	for (int i = 0; i < 2 && ret == 0; i++) {
		st_le64(buf + VHDX_HDR_SEQUENCE, (uint64_t)seq + (uint64_t)i);
		st_le32(buf + VHDX_HDR_CHECKSUM, 0);
		st_le32(buf + VHDX_HDR_CHECKSUM,
			vhdx_checksum(buf, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM));
		ret = write_all(fd, buf, VHDX_HEADER_SIZE,
				i ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET);
	}
	if (ret < 0)
		goto io_error;

	/* The BAT (2.5), when it is not all zero. */
	if (fixed || zero_blocks) {
		bat = calloc(1, bat_len);
		if (!bat) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory for the BAT");
			goto out;
		}
		for (uint64_t b = 0; b < data_blocks; b++) {
			uint64_t idx = b + (b >> chunk_bits), e;

			if (zero_blocks)
				e = VHDX_PAYLOAD_ZERO;
			else
				e = round_mib(data_off + b * block_size) |
				    VHDX_PAYLOAD_FULLY_PRESENT;
			st_le64(bat + 8 * idx, e);
		}
		ret = write_all(fd, bat, bat_len, bat_off);
		if (ret < 0)
			goto io_error;
	}

	/* Region table (2.2.3), twice. */
	memset(buf, 0, VHDX_TABLE_SIZE);
	memcpy(buf, "regi", 4);
	st_le32(buf + 8, 2);
	put_region(buf + 16, vhdx_guid_bat, bat_off, (uint32_t)bat_len);
	put_region(buf + 48, vhdx_guid_metadata, md_off, VHDX_MiB);
	st_le32(buf + 4, vhdx_checksum(buf, VHDX_TABLE_SIZE, 4));
	ret = write_all(fd, buf, VHDX_TABLE_SIZE, VHDX_REGION_TABLE1_OFFSET);
	if (ret == 0)
		ret = write_all(fd, buf, VHDX_TABLE_SIZE, VHDX_REGION_TABLE2_OFFSET);
	if (ret < 0)
		goto io_error;

	/* Metadata (2.6): the table, then the five items from 64 KiB; file
	 * parameters required, the others required and virtual-disk items. */
	memset(buf, 0, VHDX_TABLE_SIZE);
	memcpy(buf, "metadata", 8);
	vhdx_st16(buf + 10, 5);
	put_item(buf + 32, vhdx_guid_file_params, 65536, 8, 4);
	put_item(buf + 64, vhdx_guid_virtual_size, 65544, 8, 6);
	put_item(buf + 96, vhdx_guid_page83, 65552, 16, 6);
	put_item(buf + 128, vhdx_guid_logical_sector, 65568, 4, 6);
	put_item(buf + 160, vhdx_guid_physical_sector, 65572, 4, 6);
	ret = write_all(fd, buf, VHDX_TABLE_SIZE, md_off);
	if (ret < 0)
		goto io_error;
	memset(buf, 0, 40);
	st_le32(buf, (uint32_t)block_size);
	st_le32(buf + 4, fixed ? 1 : 0); /* leave_blocks_allocated */
	st_le64(buf + 8, size);
	ret = vhdx_guid_generate(buf + 16);
	st_le32(buf + 32, 512);
	st_le32(buf + 36, 512);
	if (ret == 0)
		ret = write_all(fd, buf, 40, md_off + 65536);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
io_error:
	if (ret < 0)
		vd_error_setg_errno(err, ret, "Could not write the VHDX image '%s'", filename);
out:
	if (fd >= 0)
		close(fd);
	free(bat);
	free(buf);
	return ret;
}
