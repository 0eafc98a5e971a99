/* SPDX-License-Identifier: MIT */
/*
 * The vmdk driver's private declarations, shared by vmdk.c (open, the
 * descriptor, information), io.c (reads, writes, block status, check) and
 * create.c.  The layout we read is in docs/formats.md ("vmdk").
 */
#ifndef VDISK_BLOCK_DRIVERS_VMDK_H
#define VDISK_BLOCK_DRIVERS_VMDK_H

#include <stdbool.h>
#include <stdint.h>

#include "block/drivers.h"

#define VMDK4_MAGIC 0x4b444d56u /* "KDMV", big-endian at offset 0 */
#define VMDK3_MAGIC 0x434f5744u /* "COWD" */
#define VMDK4_FLAG_NL_DETECT (1u << 0)
#define VMDK4_FLAG_RGD (1u << 1)
#define VMDK4_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK4_FLAG_COMPRESS (1u << 16)
#define VMDK4_FLAG_MARKER (1u << 17)
#define VMDK4_COMPRESSION_DEFLATE 1
#define VMDK4_GD_AT_END UINT64_MAX
#define VMDK_GTE_ZEROED 1u
#define VMDK_EXTENT_MAX_SECTORS (1ull << 32) /* grain table entries are 32-bit */
/* Stricter than QEMU (1 GiB): no image in use has grains above 64 KiB, and a
 * grain is one allocation on every write and compressed read. */
#define VMDK_MAX_GRAIN_SECTORS 2048u
#define VMDK_MAX_GD_ENTRIES (32u * 1024 * 1024) /* QEMU's "L1 size too big" */
#define VMDK_MAX_EXTENTS 4096 /* a 2 TiB twoGbMaxExtent* needs 1024 */
#define VMDK_MAX_DESC (1u << 20) /* QEMU reads at most 1 MiB - 1 of it */
#define VMDK_MAX_NAME 511 /* QEMU's extent name limit (%511[...]) */
#define VMDK_GT_CACHE 16

/* The VMDK4 sparse header (Virtual Disk Format 5.0, "Hosted Sparse Extent
 * Header"), little-endian, after the 4-byte magic. */
enum {
	H4_VERSION = 4,
	H4_FLAGS = 8,
	H4_CAPACITY = 12, /* sectors */
	H4_GRANULARITY = 20, /* sectors per grain */
	H4_DESC_OFFSET = 28, /* sectors */
	H4_DESC_SIZE = 36, /* sectors */
	H4_NUM_GTES = 44, /* entries per grain table (32-bit) */
	H4_RGD_OFFSET = 48, /* sectors */
	H4_GD_OFFSET = 56, /* sectors */
	H4_GRAIN_OFFSET = 64, /* sectors: end of the metadata */
	H4_FILLER = 72,
	H4_CHECK_BYTES = 73, /* "\n \r\n" */
	H4_COMPRESS = 77, /* 16 bits */
	H4_SIZE = 79,
};

/* The VMDK3 ("COWD") header of ESX vmfsSparse extents, all 32-bit. */
enum {
	H3_VERSION = 4,
	H3_FLAGS = 8,
	H3_DISK_SECTORS = 12,
	H3_GRANULARITY = 16,
	H3_GD_OFFSET = 20, /* sectors */
	H3_GD_SIZE = 24, /* entries */
	H3_SIZE = 44,
};

enum vmdk_extent_type {
	VMDK_FLAT,
	VMDK_SPARSE,
	VMDK_VMFS,
	VMDK_VMFSSPARSE
};

struct vmdk_gt_cache {
	uint32_t sector; /* grain table's sector; 0: empty slot */
	uint32_t uses;
	uint32_t *entries; /* host-endian */
};

struct vmdk_extent {
	struct vd_node *file; /* n->file, or a child we own */
	bool owned;
	const char *type; /* "FLAT", "SPARSE", ... ; "" for the image file itself */
	bool flat, compressed, has_marker, zero_grain;
	int version;
	uint64_t sectors; /* guest sectors in this extent */
	uint64_t start; /* first guest sector */
	uint64_t flat_offset; /* bytes into the file (flat) */
	/* sparse */
	uint64_t meta_end; /* grain_offset in bytes: nothing allocated below */
	uint32_t grain_sectors;
	uint32_t gt_entries;
	uint32_t gd_entries;
	uint32_t *gd, *rgd; /* host-endian grain table sectors; rgd may be NULL */
	uint64_t next_grain; /* sector where the next grain goes */
	struct vmdk_gt_cache cache[VMDK_GT_CACHE];
};

struct vmdk_state {
	struct vd_co_mutex lock;
	struct vmdk_extent *extents;
	int num_extents, cap_extents;
	uint32_t cid, parent_cid;
	bool cid_updated, parent_checked, parent_ok;
	char *create_type;
	char *parent_hint; /* parentFileNameHint, NULL if none */
	/* The descriptor: where it is (in n->file) and its text length. */
	uint64_t desc_offset;
	uint32_t desc_len;
	char *desc; /* the text, NUL-terminated */
};

/* io.c */
int vmdk_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		   int flags);
int vmdk_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		    int flags);
int vmdk_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags);
int vmdk_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			 int64_t *map, struct vd_node **file);
int vmdk_co_check(struct vd_node *n, struct vd_check_result *res, int fix);

/* vmdk.c: rewrite the CID in the descriptor (on the first write). */
int vmdk_update_cid(struct vd_node *n);

/* create.c */
extern const char *const vmdk_create_opts[];
int vmdk_create(const char *filename, struct vd_opts *opts, struct vd_error *err);

#endif
