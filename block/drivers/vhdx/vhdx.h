/* SPDX-License-Identifier: MIT */
/*
 * The "vhdx" format driver: Microsoft's VHDX ([MS-VHDX] v1.0), fixed and
 * dynamic disks as QEMU 7.2's block/vhdx.c reads, writes and creates them;
 * differencing disks are refused.  docs/formats.md ("vhdx") has the layout
 * and our reading of QEMU's quirks.  The driver is in four parts:
 *
 *   header.c   file identifier, the two headers (choice and update), the
 *              region table and the metadata items;
 *   log.c      the metadata log: finding the active sequence, replaying it,
 *              and writing one entry for a BAT update;
 *   vhdx.c     open (the BAT and its checks), close, I/O, block status;
 *   create.c   new images laid out as qemu-img lays them out.
 *
 * All on-disk integers are little-endian and read byte by byte; GUIDs are
 * kept as their 16 on-disk bytes and compared as such.
 */
#ifndef VDISK_BLOCK_DRIVERS_VHDX_H
#define VDISK_BLOCK_DRIVERS_VHDX_H

#include <stdbool.h>
#include <stdint.h>

#include "block/drivers.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define VHDX_KiB 1024ull
#define VHDX_MiB (1024ull * 1024)
#define VHDX_TiB (1024ull * 1024 * 1024 * 1024)

/* Fixed offsets of the header section (the first MiB), [MS-VHDX] 2.1. */
#define VHDX_FILE_ID_OFFSET 0
#define VHDX_HEADER1_OFFSET (64 * VHDX_KiB)
#define VHDX_HEADER2_OFFSET (128 * VHDX_KiB)
#define VHDX_REGION_TABLE1_OFFSET (192 * VHDX_KiB)
#define VHDX_REGION_TABLE2_OFFSET (256 * VHDX_KiB)
#define VHDX_HEADER_SECTION_END VHDX_MiB
#define VHDX_HEADER_SIZE (4 * VHDX_KiB) /* the part of a header the checksum covers */
#define VHDX_TABLE_SIZE (64 * VHDX_KiB) /* a region table, the metadata table */
#define VHDX_MAX_TABLE_ENTRIES 2047
#define VHDX_FILE_ID_CREATOR_SIZE 512

/* Header fields (2.2.2). */
enum {
	VHDX_HDR_SIGNATURE = 0, /* "head" */
	VHDX_HDR_CHECKSUM = 4,
	VHDX_HDR_SEQUENCE = 8,
	VHDX_HDR_FILE_WRITE_GUID = 16,
	VHDX_HDR_DATA_WRITE_GUID = 32,
	VHDX_HDR_LOG_GUID = 48,
	VHDX_HDR_LOG_VERSION = 64, /* 16 bits */
	VHDX_HDR_VERSION = 66, /* 16 bits */
	VHDX_HDR_LOG_LENGTH = 68, /* 32 bits */
	VHDX_HDR_LOG_OFFSET = 72,
};

/* Limits (2.2.4, 2.6.2): QEMU takes the same. */
#define VHDX_BLOCK_SIZE_MIN VHDX_MiB
#define VHDX_BLOCK_SIZE_MAX (256 * VHDX_MiB)
#define VHDX_MAX_IMAGE_SIZE (64 * VHDX_TiB)
#define VHDX_MAX_SECTORS_PER_BLOCK (1u << 23) /* sectors one bitmap block covers */

/* BAT entries (2.5): state in the low 3 bits, file offset in MiB above bit 20. */
enum {
	VHDX_PAYLOAD_NOT_PRESENT = 0,
	VHDX_PAYLOAD_UNDEFINED = 1,
	VHDX_PAYLOAD_ZERO = 2,
	VHDX_PAYLOAD_UNMAPPED = 3,
	VHDX_PAYLOAD_UNMAPPED_V095 = 5, /* what draft 0.95 called UNMAPPED */
	VHDX_PAYLOAD_FULLY_PRESENT = 6,
	VHDX_PAYLOAD_PARTIALLY_PRESENT = 7, /* differencing disks only */
};
#define VHDX_BAT_STATE_MASK 7ull
#define VHDX_BAT_OFFSET_MASK 0xfffffffffff00000ull

/* The log (2.3): 4 KiB sectors, entries of a 64-byte header and 32-byte
 * descriptors, then one data sector per data descriptor. */
#define VHDX_LOG_SECTOR 4096u
#define VHDX_LOG_HEADER_SIZE 64u
#define VHDX_LOG_DESC_SIZE 32u
#define VHDX_LOG_DATA_PAYLOAD 4084u /* data sector bytes between its 8 and 4 */

/* Known GUIDs as their on-disk bytes (first three fields little-endian). */
extern const uint8_t vhdx_guid_bat[16], vhdx_guid_metadata[16];
extern const uint8_t vhdx_guid_file_params[16], vhdx_guid_virtual_size[16];
extern const uint8_t vhdx_guid_page83[16], vhdx_guid_logical_sector[16];
extern const uint8_t vhdx_guid_physical_sector[16], vhdx_guid_parent_locator[16];

/* A byte range of the file that belongs to one structure. */
struct vhdx_region {
	uint64_t start, end;
};
#define VHDX_MAX_REGIONS (4 + VHDX_MAX_TABLE_ENTRIES)

struct vhdx_state {
	struct vd_co_mutex lock; /* BAT, headers, log, end of file */
	struct vd_node *node;

	/* Both headers as read or last written; headers[cur] is the current. */
	uint8_t headers[2][VHDX_HEADER_SIZE];
	int cur;
	uint8_t session_guid[16]; /* our file_write_guid */
	bool first_visible_write; /* data_write_guid not yet renewed */

	uint64_t log_offset;
	uint32_t log_length;
	uint64_t log_sequence; /* sequence number of the next entry we write */
	bool log_replayed; /* on this open (qemu-img check counts it as a fix) */

	uint64_t bat_offset, metadata_offset;
	uint32_t bat_length, metadata_length;

	/* Metadata items. */
	uint32_t block_size, logical_sector_size, physical_sector_size;
	uint32_t file_params_bits;
	uint64_t virtual_size;
	uint8_t page83[16];

	int block_bits; /* log2(block_size) */
	int chunk_ratio_bits; /* log2(payload blocks per sector-bitmap block) */
	uint64_t data_blocks, bat_entries;
	uint64_t *bat; /* host-endian entries */
	int bat_corruptions; /* bad entries a check's open let through */

	/* Everything that is not payload: the header section, the log, the
	 * region table's regions; payload blocks may not overlap them. */
	struct vhdx_region regions[VHDX_MAX_REGIONS];
	int n_regions;
};

/* header.c */
int vhdx_read_headers(struct vd_node *n, int64_t file_size, struct vd_error *err);
int vhdx_read_region_table(struct vd_node *n, int64_t file_size, struct vd_error *err);
int vhdx_read_metadata(struct vd_node *n, struct vd_error *err);
/* Write the next header twice (both copies current), as QEMU's
 * vhdx_update_headers: new data_write_guid if @new_data_guid, the log GUID
 * set to @log_guid unless NULL.  With s->lock held (or at open). */
int vhdx_update_headers(struct vd_node *n, bool new_data_guid, const uint8_t *log_guid);
/* Add [start, start + length) to the structure list unless it overlaps one. */
int vhdx_region_add(struct vhdx_state *s, uint64_t start, uint64_t length);
bool vhdx_region_overlaps(const struct vhdx_state *s, uint64_t start, uint64_t length);
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off);
int vhdx_guid_generate(uint8_t guid[16]);
bool vhdx_guid_is_zero(const uint8_t *guid);

/* log.c */
/* Find the active log sequence and, when there is one, replay it (refused
 * with -EPERM on a read-only open, as QEMU).  At open, after the headers. */
int vhdx_log_replay(struct vd_node *n, bool writable, int64_t *file_size, struct vd_error *err);
/* Write @len bytes at file offset @offset through the log, as QEMU's
 * vhdx_log_write_and_flush: flush, log entry, flush, write in place, flush,
 * empty the log.  With s->lock held. */
int vhdx_log_write_and_flush(struct vd_node *n, const void *data, uint32_t len, uint64_t offset);

/* Read @len bytes at @offset of the file; zeroes past its end. */
int vhdx_read(struct vd_node *n, uint64_t offset, void *buf, size_t len);
/* Write and flush (QEMU's bdrv_pwrite_sync). */
int vhdx_write_sync(struct vd_node *n, uint64_t offset, const void *buf, size_t len);

static inline uint16_t vhdx_ld16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static inline void vhdx_st16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* create.c */
extern const char *const vhdx_create_opts[];
int vhdx_create(const char *filename, struct vd_opts *opts, struct vd_error *err);

#endif
