/* SPDX-License-Identifier: MIT */
/*
 * The "vpc" format: Connectix / Microsoft Virtual PC VHD images, fixed and
 * dynamic (differencing images are refused), as QEMU 7.2's block/vpc.c reads
 * and writes them.  Our reading of the spec and of QEMU's quirks is in
 * docs/formats.md ("vpc"); in short:
 *
 *   fixed:    guest data from byte 0, then a 512-byte footer at the end.
 *   dynamic:  a copy of the footer at 0, the dynamic disk header (1024
 *             bytes, "cxsparse") where footer.data_offset says, the block
 *             allocation table (BAT, big-endian 32-bit sector numbers, 0xffffffff
 *             = unallocated) where the header's table_offset says; each block
 *             is a sector bitmap followed by block_size bytes of data; the
 *             footer again after the last block.
 *
 * Every field of the footer and header is hostile until checked here, once,
 * at open: the BAT must lie inside the file (its size bounds the
 * allocation), every allocated block inside the file and clear of the
 * header and the BAT, and sizes are computed in 64 bits with their ranges
 * checked first (CVE-2014-0144 was vpc's BAT size, CVE-2014-0142 its block
 * size).
 *
 * Locking: s->lock (a coroutine mutex) covers the BAT, the end of file and
 * every metadata write; guest data moves outside it.  A block is published
 * in the in-memory BAT under the lock before its data is written, as QEMU
 * does: a reader meanwhile sees the new block's unwritten (zero) area.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "block/drivers.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define VHD_FOOTER_SIZE 512
#define VHD_DYN_HEADER_SIZE 1024
#define VHD_FIXED 2
#define VHD_DYNAMIC 3
#define VHD_DIFFERENCING 4
#define VHD_TIMESTAMP_BASE 946684800 /* 2000-01-01 00:00:00 UTC */
#define VHD_CHS_MAX_C 65535LL
#define VHD_CHS_MAX_H 16
#define VHD_CHS_MAX_S 255
#define VHD_MAX_SECTORS 0xff000000LL /* 2040 GiB */
#define VHD_MAX_GEOMETRY (VHD_CHS_MAX_C * VHD_CHS_MAX_H * VHD_CHS_MAX_S)
#define VHD_BAT_UNUSED 0xffffffffu
#define VHD_BLOCK_SIZE (2u << 20) /* what QEMU creates */

/* Footer fields (Virtual Hard Disk Image Format Specification, "Hard Disk
 * Footer Format"); all big-endian. */
enum {
	FT_COOKIE = 0, /* "conectix" */
	FT_FEATURES = 8,
	FT_VERSION = 12,
	FT_DATA_OFFSET = 16, /* dynamic header; all ones for fixed */
	FT_TIMESTAMP = 24,
	FT_CREATOR_APP = 28,
	FT_CREATOR_VER = 32, /* major (16), minor (16) */
	FT_CREATOR_OS = 36,
	FT_ORIG_SIZE = 40,
	FT_CURRENT_SIZE = 48,
	FT_CYLS = 56, /* 16 bits */
	FT_HEADS = 58, /* 8 */
	FT_SECS = 59, /* 8 */
	FT_TYPE = 60,
	FT_CHECKSUM = 64,
	FT_UUID = 68,
};

/* Dynamic disk header fields ("Dynamic Disk Header Format"). */
enum {
	DH_COOKIE = 0, /* "cxsparse" */
	DH_DATA_OFFSET = 8,
	DH_TABLE_OFFSET = 16,
	DH_VERSION = 24,
	DH_MAX_TABLE_ENTRIES = 28,
	DH_BLOCK_SIZE = 32,
	DH_CHECKSUM = 36,
};

struct vpc_state {
	struct vd_co_mutex lock;
	uint8_t footer[VHD_FOOTER_SIZE];
	bool fixed;
	uint32_t block_size, bitmap_size;
	uint32_t max_table_entries;
	uint32_t *bat; /* host-endian sector numbers */
	uint8_t *bitmap_full; /* one bit per BAT entry: its bitmap is all ones */
	uint64_t bat_offset;
	uint64_t free_data_block_offset; /* where the next block (and the footer) goes */
};

/* One's complement of the byte sum, the checksum field counted as zero. */
static uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	uint32_t sum = 0;

	for (size_t i = 0; i < len; i++)
		if (i < csum_off || i >= csum_off + 4)
			sum += buf[i];
	return ~sum;
}

/*
 * Virtual PC sizes a disk by its CHS geometry, Hyper-V and others by the
 * footer's current_size: QEMU decides by the creator application, and takes
 * current_size whenever the geometry is the maximum (too large for CHS).
 */
static bool vpc_ignore_current_size(const uint8_t *footer)
{
	const uint8_t *app = footer + FT_CREATOR_APP;

	return memcmp(app, "win ", 4) && memcmp(app, "qem2", 4) && memcmp(app, "d2v ", 4) &&
	       memcmp(app, "CTXS", 4) && memcmp(app, "tap\0", 4);
}

/* Read @len bytes at @offset of the child; zeroes past its end. */
static int read_meta(struct vd_node *n, uint64_t offset, void *buf, size_t len, int64_t file_size)
{
	struct vd_qiov q;
	size_t have = len;

	memset(buf, 0, len);
	if (offset >= (uint64_t)file_size)
		return 0;
	if ((uint64_t)file_size - offset < have)
		have = (size_t)((uint64_t)file_size - offset);
	vd_qiov_init_buf(&q, buf, have);
	return vd_co_preadv(n->file, (int64_t)offset, (int64_t)have, &q, 0);
}

static int write_meta(struct vd_node *n, uint64_t offset, const void *buf, size_t len)
{
	struct vd_qiov q;
	int ret;

	vd_qiov_init_buf(&q, (void *)buf, len);
	ret = vd_co_pwritev(n->file, (int64_t)offset, (int64_t)len, &q, 0);
	/* QEMU's bdrv_pwrite_sync: each metadata step is durable before the
	 * next one refers to it. */
	return ret < 0 ? ret : vd_co_flush(n->file);
}

static void vpc_close(struct vd_node *n);

static int open_dynamic(struct vd_node *n, int64_t file_size, struct vd_error *err)
{
	struct vpc_state *s = n->opaque;
	uint8_t dh[VHD_DYN_HEADER_SIZE];
	uint64_t data_offset = ld_be64(s->footer + FT_DATA_OFFSET);
	uint64_t size = (uint64_t)n->size, bat_bytes, bat_end, bat_alloc;
	struct vd_qiov q;
	int ret;

	if (data_offset > (uint64_t)file_size || (uint64_t)file_size - data_offset < sizeof(dh))
		return vd_error_set(err, -EINVAL,
				    "Dynamic VHD header offset %" PRIu64 " is outside the file",
				    data_offset);
	ret = read_meta(n, data_offset, dh, sizeof(dh), file_size);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Error reading dynamic VHD header");
	if (memcmp(dh + DH_COOKIE, "cxsparse", 8))
		return vd_error_set(err, -EINVAL, "Invalid header magic");

	s->block_size = ld_be32(dh + DH_BLOCK_SIZE);
	if (s->block_size < 512 || (s->block_size & (s->block_size - 1)))
		return vd_error_set(err, -EINVAL, "Invalid block size %" PRIu32, s->block_size);
	/* One bit per sector, rounded up to a sector: at most 512 KiB. */
	s->bitmap_size = ((s->block_size / (8 * 512)) + 511) & ~511u;
	s->max_table_entries = ld_be32(dh + DH_MAX_TABLE_ENTRIES);
	if (size / s->block_size > 0xffffffffu)
		return vd_error_set(err, -EINVAL, "Too many blocks");
	if ((uint64_t)s->max_table_entries * s->block_size < size)
		return vd_error_set(err, -EINVAL, "Page table too small");
	if (s->max_table_entries > INT_MAX / 4)
		return vd_error_set(err, -EINVAL, "Max Table Entries too large (%" PRIu32 ")",
				    s->max_table_entries);

	/* The BAT must be in the file: that bounds what we allocate for it by
	 * what the file holds, not by what the header claims. */
	s->bat_offset = ld_be64(dh + DH_TABLE_OFFSET);
	bat_bytes = (uint64_t)s->max_table_entries * 4;
	if (s->bat_offset > (uint64_t)file_size || (uint64_t)file_size - s->bat_offset < bat_bytes)
		return vd_error_set(err, -EINVAL,
				    "Block allocation table (%" PRIu64 " bytes at %" PRIu64
				    ") is outside the file",
				    bat_bytes, s->bat_offset);
	bat_alloc = bat_bytes ? bat_bytes : 4;
	s->bat = malloc(bat_alloc);
	s->bitmap_full = calloc(s->max_table_entries / 8 + 1, 1);
	if (!s->bat || !s->bitmap_full)
		return vd_error_set(err, -ENOMEM, "Unable to allocate memory for page table");
	if (bat_bytes) {
		vd_qiov_init_buf(&q, s->bat, bat_bytes);
		ret = vd_co_preadv(n->file, (int64_t)s->bat_offset, (int64_t)bat_bytes, &q, 0);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Error reading pagetable");
	}

	bat_end = s->bat_offset + bat_bytes;
	s->free_data_block_offset = (bat_end + 511) & ~511ull;
	for (uint32_t i = 0; i < s->max_table_entries; i++) {
		uint64_t start, next;

		s->bat[i] = ld_be32((const uint8_t *)&s->bat[i]);
		if (s->bat[i] == VHD_BAT_UNUSED)
			continue;
		start = (uint64_t)s->bat[i] * 512;
		next = start + s->bitmap_size + s->block_size;
		/* A block over the header or the BAT would have guest writes
		 * rewrite metadata (QEMU does not check this). */
		if ((start < bat_end && next > s->bat_offset) ||
		    (start < data_offset + sizeof(dh) && next > data_offset) ||
		    start < VHD_FOOTER_SIZE)
			return vd_error_set(err, -EINVAL,
					    "Block %" PRIu32 " at offset %" PRIu64
					    " overlaps the VHD metadata",
					    i, start);
		if (next > s->free_data_block_offset)
			s->free_data_block_offset = next;
	}
	if (s->free_data_block_offset > (uint64_t)file_size)
		return vd_error_set(err, -EINVAL,
				    "block-vpc: free_data_block_offset points after the end of "
				    "file. The image has been truncated.");
	return 0;
}

static int vpc_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	static const char *const calc_names[] = {"auto", "chs", "current_size", NULL};
	struct vpc_state *s = n->opaque;
	uint8_t *f = s->footer;
	int64_t file_size, sectors;
	uint32_t checksum;
	int calc, ret;

	vd_co_mutex_init(&s->lock);
	ret = vd_opts_get_enum(opts, "force_size_calc", calc_names, 0, &calc, err);
	if (ret < 0)
		return ret;
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Invalid file size");

	ret = read_meta(n, 0, f, VHD_FOOTER_SIZE, file_size);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Unable to read VHD header");
	if (memcmp(f + FT_COOKIE, "conectix", 8)) {
		/* No copy at the start: a fixed disk, footer at the end only. */
		if (file_size < VHD_FOOTER_SIZE)
			return vd_error_set(err, -EINVAL, "File too small for a VHD header");
		ret = read_meta(n, (uint64_t)file_size - VHD_FOOTER_SIZE, f, VHD_FOOTER_SIZE,
				file_size);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Unable to read VHD footer");
		if (memcmp(f + FT_COOKIE, "conectix", 8) || ld_be32(f + FT_TYPE) != VHD_FIXED)
			return vd_error_set(err, -EINVAL, "invalid VPC image");
		s->fixed = true;
	}
	checksum = ld_be32(f + FT_CHECKSUM);
	if (vpc_checksum(f, VHD_FOOTER_SIZE, FT_CHECKSUM) != checksum)
		return vd_error_set(err, -EINVAL, "Incorrect header checksum");
	/* QEMU takes the type from where the footer was found, so a footer
	 * copy at 0 makes a dynamic disk whatever its type field says; it
	 * refuses nothing else.  We refuse the types we cannot read. */
	if (!s->fixed && ld_be32(f + FT_TYPE) == VHD_DIFFERENCING)
		return vd_error_set(err, -ENOTSUP, "Differencing VHD images are not supported");

	sectors = (int64_t)ld_be16(f + FT_CYLS) * f[FT_HEADS] * f[FT_SECS];
	if ((calc == 0 && !vpc_ignore_current_size(f)) || calc == 2 ||
	    sectors == VHD_MAX_GEOMETRY) {
		uint64_t cur = ld_be64(f + FT_CURRENT_SIZE) / 512;
		sectors = cur > (uint64_t)VHD_MAX_SECTORS ? VHD_MAX_SECTORS + 1 : (int64_t)cur;
	}
	if (sectors > VHD_MAX_SECTORS)
		return vd_error_set(err, -EFBIG, "VHD image is larger than 2040 GiB");
	n->size = sectors * 512;

	if (s->fixed) {
		/* Stricter than QEMU: guest data that would run into the footer
		 * means a truncated image, not a disk to write the footer over. */
		if (n->size > file_size - VHD_FOOTER_SIZE)
			return vd_error_set(err, -EINVAL,
					    "Fixed VHD image is truncated (disk size %" PRId64
					    ", file size %" PRId64 ")",
					    n->size, file_size);
		n->supported_write_flags = VD_REQ_FUA;
		return 0;
	}
	ret = open_dynamic(n, file_size, err);
	if (ret < 0)
		vpc_close(n); /* the core calls close only after a successful open */
	return ret;
}

static void vpc_close(struct vd_node *n)
{
	struct vpc_state *s = n->opaque;

	free(s->bat);
	free(s->bitmap_full);
	s->bat = NULL;
	s->bitmap_full = NULL;
}

/* Host offset of guest @offset, or -1 when its block is not allocated.
 * With s->lock held. */
static int64_t image_offset(struct vpc_state *s, uint64_t offset)
{
	uint64_t index = offset / s->block_size;

	if (index >= s->max_table_entries || s->bat[index] == VHD_BAT_UNUSED)
		return -1;
	return (int64_t)((uint64_t)s->bat[index] * 512 + s->bitmap_size + offset % s->block_size);
}

/*
 * QEMU never reads the sector bitmaps and marks every sector of a block it
 * writes to as in use (all ones), so that Virtual PC does not take written
 * sectors for unused ones.  It rewrites the bitmap whenever a write goes to
 * another block than the last one; we remember per block that it is done.
 */
static int mark_bitmap(struct vd_node *n, uint32_t index)
{
	struct vpc_state *s = n->opaque;
	uint8_t *bitmap;
	int ret;

	if (s->bitmap_full[index / 8] & (1u << (index % 8)))
		return 0;
	bitmap = malloc(s->bitmap_size);
	if (!bitmap)
		return -ENOMEM;
	memset(bitmap, 0xff, s->bitmap_size);
	ret = write_meta(n, (uint64_t)s->bat[index] * 512, bitmap, s->bitmap_size);
	free(bitmap);
	if (ret == 0)
		s->bitmap_full[index / 8] |= (uint8_t)(1u << (index % 8));
	return ret;
}

/*
 * Allocate the block of guest @offset at the end of the file, in QEMU's
 * order: its bitmap (over the old footer), the footer after the block, then
 * the BAT entry.  With s->lock held.
 */
static int alloc_block(struct vd_node *n, uint64_t offset)
{
	struct vpc_state *s = n->opaque;
	uint32_t index = (uint32_t)(offset / s->block_size);
	uint64_t old_end = s->free_data_block_offset;
	uint64_t new_end = old_end + s->bitmap_size + s->block_size;
	uint8_t entry[4];
	int ret;

	assert(index < s->max_table_entries && s->bat[index] == VHD_BAT_UNUSED);
	if (old_end / 512 >= VHD_BAT_UNUSED || new_end > (uint64_t)VD_MAX_LENGTH)
		return -EFBIG;
	s->bat[index] = (uint32_t)(old_end / 512);
	ret = mark_bitmap(n, index);
	if (ret == 0)
		ret = write_meta(n, new_end, s->footer, VHD_FOOTER_SIZE);
	if (ret == 0) {
		st_be32(entry, s->bat[index]);
		ret = write_meta(n, s->bat_offset + 4ull * index, entry, 4);
	}
	if (ret < 0) {
		s->bat[index] = VHD_BAT_UNUSED;
		s->bitmap_full[index / 8] &= (uint8_t) ~(1u << (index % 8));
		return ret;
	}
	s->free_data_block_offset = new_end;
	return 0;
}

static int vpc_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags)
{
	struct vpc_state *s = n->opaque;
	struct vd_qiov local;
	int64_t done = 0;
	int ret = 0;

	if (s->fixed)
		return vd_co_preadv(n->file, offset, bytes, qiov, 0);
	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		int64_t chunk = s->block_size - (uint64_t)offset % s->block_size, host;

		if (chunk > bytes)
			chunk = bytes;
		vd_co_mutex_lock(&s->lock);
		host = image_offset(s, (uint64_t)offset);
		vd_co_mutex_unlock(&s->lock);
		if (host < 0) {
			vd_qiov_memset(qiov, (size_t)done, 0, (size_t)chunk);
		} else {
			vd_qiov_reset(&local);
			ret = vd_qiov_concat_slice(&local, qiov, (size_t)done, (size_t)chunk);
			if (ret == 0)
				ret = vd_co_preadv(n->file, host, chunk, &local, 0);
		}
		offset += chunk;
		bytes -= chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

static int vpc_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct vpc_state *s = n->opaque;
	struct vd_qiov local;
	int64_t done = 0;
	int ret = 0;

	if (s->fixed)
		return vd_co_pwritev(n->file, offset, bytes, qiov, flags);
	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		int64_t chunk = s->block_size - (uint64_t)offset % s->block_size, host;

		if (chunk > bytes)
			chunk = bytes;
		vd_co_mutex_lock(&s->lock);
		host = image_offset(s, (uint64_t)offset);
		if (host < 0)
			ret = alloc_block(n, (uint64_t)offset);
		else
			ret = mark_bitmap(n, (uint32_t)((uint64_t)offset / s->block_size));
		if (ret == 0)
			host = image_offset(s, (uint64_t)offset);
		vd_co_mutex_unlock(&s->lock);
		if (ret < 0)
			break;
		vd_qiov_reset(&local);
		ret = vd_qiov_concat_slice(&local, qiov, (size_t)done, (size_t)chunk);
		if (ret == 0)
			ret = vd_co_pwritev(n->file, host, chunk, &local, 0);
		offset += chunk;
		bytes -= chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

static int vpc_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file)
{
	struct vpc_state *s = n->opaque;
	int64_t host;

	if (s->fixed) {
		*pnum = bytes;
		*map = offset;
		*file = n->file;
		return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	}
	vd_co_mutex_lock(&s->lock);
	host = image_offset(s, (uint64_t)offset);
	*pnum = s->block_size - (uint64_t)offset % s->block_size;
	if (host < 0) {
		/* Unallocated blocks read as zeroes; gather them. */
		while (*pnum < bytes && image_offset(s, (uint64_t)(offset + *pnum)) < 0)
			*pnum += s->block_size;
	}
	vd_co_mutex_unlock(&s->lock);
	if (*pnum > bytes)
		*pnum = bytes;
	if (host < 0)
		return VD_BLOCK_ZERO;
	*map = host;
	*file = n->file;
	return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

static int vpc_co_flush(struct vd_node *n)
{
	vd_debug_event(n->file, VD_EV_FLUSH_TO_DISK);
	return 0;
}

static int vpc_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct vpc_state *s = n->opaque;

	if (!s->fixed)
		info->cluster_size = s->block_size;
	return 0;
}

static int vpc_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return len >= 8 && memcmp(buf, "conectix", 8) == 0 ? 100 : 0;
}

/*
 * The geometry of the VHD spec's appendix ("CHS calculation"), with QEMU's
 * extension to 255 sectors per track beyond 127 GiB.  It may round the
 * size down.
 */
static void calculate_geometry(int64_t total_sectors, unsigned *cyls, unsigned *heads,
			       unsigned *secs)
{
	int64_t cth;

	if (total_sectors > VHD_MAX_GEOMETRY)
		total_sectors = VHD_MAX_GEOMETRY;
	if (total_sectors >= 65535LL * 16 * 63) {
		*secs = 255;
		*heads = 16;
		cth = total_sectors / *secs;
	} else {
		*secs = 17;
		cth = total_sectors / *secs;
		*heads = (unsigned)((cth + 1023) / 1024);
		if (*heads < 4)
			*heads = 4;
		if (cth >= (int64_t)*heads * 1024 || *heads > 16) {
			*secs = 31;
			*heads = 16;
			cth = total_sectors / *secs;
		}
		if (cth >= (int64_t)*heads * 1024) {
			*secs = 63;
			*heads = 16;
			cth = total_sectors / *secs;
		}
	}
	*cyls = (unsigned)(cth / *heads);
}

/*
 * QEMU's calculate_rounded_image_size: the smallest geometry that holds
 * @size (growing the sector count until one does), or with force_size the
 * maximum geometry and the size as given.  The maximum geometry means
 * "use current_size".  Returns the disk size in sectors or -EFBIG.
 */
static int64_t rounded_sectors(uint64_t size, bool force_size, unsigned *c, unsigned *h,
			       unsigned *sec)
{
	int64_t want = (int64_t)(size / 512), total;

	*c = *h = *sec = 0;
	if (force_size) {
		*c = VHD_CHS_MAX_C;
		*h = VHD_CHS_MAX_H;
		*sec = VHD_CHS_MAX_S;
	} else {
		total = want < VHD_MAX_GEOMETRY ? want : VHD_MAX_GEOMETRY;
		for (int64_t i = 0; total > (int64_t)*c * *h * *sec; i++)
			calculate_geometry(total + i, c, h, sec);
	}
	if ((int64_t)*c * *h * *sec == VHD_MAX_GEOMETRY)
		return want > VHD_MAX_SECTORS ? -EFBIG : want;
	return (int64_t)*c * *h * *sec;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t w = pwrite(fd, buf, len, off);

	return w == (ssize_t)len ? 0 : (w < 0 ? -errno : -EIO);
}

static const char *const vpc_create_opts[] = {"subformat", "force_size", NULL};

static int vpc_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	static const char *const subformats[] = {"dynamic", "fixed", NULL};
	uint8_t footer[VHD_FOOTER_SIZE], dh[VHD_DYN_HEADER_SIZE];
	struct vd_opts *fopts;
	unsigned c, h, sec;
	uint64_t size, bat_entries = 0, bat_bytes = 0;
	int64_t sectors;
	bool force_size;
	int subformat, fd, ret;
	char sizebuf[32];

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "subformat", subformats, 0, &subformat, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "force_size", false, &force_size, err);
	if (ret < 0)
		return ret;
	if (size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EFBIG, "Disk size is too large, max size is 2040 GiB");
	/* qemu-img rounds the size up to a sector, then to the geometry. */
	size = (size + 511) & ~511ull;
	sectors = rounded_sectors(size, force_size, &c, &h, &sec);
	if (sectors < 0)
		return vd_error_set(err, -EFBIG, "Disk size is too large, max size is 2040 GiB");
	size = (uint64_t)sectors * 512;

	memset(footer, 0, sizeof(footer));
	memcpy(footer + FT_COOKIE, "conectix", 8);
	memcpy(footer + FT_CREATOR_APP, force_size ? "qem2" : "qemu", 4);
	memcpy(footer + FT_CREATOR_OS, "Wi2k", 4);
	st_be32(footer + FT_FEATURES, 2);
	st_be32(footer + FT_VERSION, 0x00010000);
	st_be64(footer + FT_DATA_OFFSET, subformat == 0 ? VHD_FOOTER_SIZE : UINT64_MAX);
	st_be32(footer + FT_TIMESTAMP, (uint32_t)(time(NULL) - VHD_TIMESTAMP_BASE));
	st_be16(footer + FT_CREATOR_VER, 5); /* Virtual PC 2007: 5.3 */
	st_be16(footer + FT_CREATOR_VER + 2, 3);
	st_be64(footer + FT_ORIG_SIZE, size);
	st_be64(footer + FT_CURRENT_SIZE, size);
	st_be16(footer + FT_CYLS, (uint16_t)c);
	footer[FT_HEADS] = (uint8_t)h;
	footer[FT_SECS] = (uint8_t)sec;
	st_be32(footer + FT_TYPE, subformat == 0 ? VHD_DYNAMIC : VHD_FIXED);
	if (getrandom(footer + FT_UUID, 16, 0) != 16)
		return vd_error_setg_errno(err, -errno, "Could not generate a UUID");
	footer[FT_UUID + 6] = (footer[FT_UUID + 6] & 0x0f) | 0x40; /* version 4 */
	footer[FT_UUID + 8] = (footer[FT_UUID + 8] & 0x3f) | 0x80;
	st_be32(footer + FT_CHECKSUM, vpc_checksum(footer, sizeof(footer), FT_CHECKSUM));

	/* The protocol file: data and footer for fixed, empty for dynamic. */
	fopts = vd_opts_new();
	snprintf(sizebuf, sizeof(sizebuf), "%" PRIu64, subformat == 0 ? 0 : size + VHD_FOOTER_SIZE);
	if (!fopts || vd_opts_set(fopts, "size", sizebuf) < 0) {
		vd_opts_free(fopts);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = vd_driver_file.create(filename, fopts, err);
	vd_opts_free(fopts);
	if (ret < 0)
		return ret;
	fd = open(filename, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Could not open '%s'", filename);

	if (subformat == 1) {
		ret = write_all(fd, footer, sizeof(footer), (off_t)size);
		goto out;
	}
	/* Dynamic, laid out as QEMU does: footer copy, header at 512, BAT at
	 * 1536 (all unused), footer after the BAT. */
	bat_entries = (size / 512 + VHD_BLOCK_SIZE / 512 - 1) / (VHD_BLOCK_SIZE / 512);
	bat_bytes = (bat_entries * 4 + 511) & ~511ull;
	ret = write_all(fd, footer, sizeof(footer), 0);
	if (ret == 0)
		ret = write_all(fd, footer, sizeof(footer), (off_t)(1536 + bat_bytes));
	if (ret == 0 && bat_bytes) {
		uint8_t *bat = malloc(bat_bytes);

		if (!bat) {
			ret = -ENOMEM;
		} else {
			memset(bat, 0xff, bat_bytes);
			ret = write_all(fd, bat, bat_bytes, 1536);
			free(bat);
		}
	}
	if (ret == 0) {
		memset(dh, 0, sizeof(dh));
		memcpy(dh + DH_COOKIE, "cxsparse", 8);
		/* The spec says 0xFFFFFFFF; Microsoft's tools want all 64 bits. */
		st_be64(dh + DH_DATA_OFFSET, UINT64_MAX);
		st_be64(dh + DH_TABLE_OFFSET, 1536);
		st_be32(dh + DH_VERSION, 0x00010000);
		st_be32(dh + DH_BLOCK_SIZE, VHD_BLOCK_SIZE);
		st_be32(dh + DH_MAX_TABLE_ENTRIES, (uint32_t)bat_entries);
		st_be32(dh + DH_CHECKSUM, vpc_checksum(dh, sizeof(dh), DH_CHECKSUM));
		ret = write_all(fd, dh, sizeof(dh), 512);
	}
out:
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Unable to create or write VHD header");
	return 0;
}

const struct vd_block_driver vd_driver_vpc = {
	.name = "vpc",
	.instance_size = sizeof(struct vpc_state),
	.is_format = true,
	.child_name = "file",
	.create_opts = vpc_create_opts,
	.probe = vpc_probe,
	.open = vpc_open,
	.close = vpc_close,
	.create = vpc_create,
	.co_preadv = vpc_co_preadv,
	.co_pwritev = vpc_co_pwritev,
	.co_flush = vpc_co_flush,
	.co_block_status = vpc_co_block_status,
	.get_info = vpc_get_info,
};
