/* SPDX-License-Identifier: MIT */
/*
 * The "bochs" format (Bochs growing redolog images), read only: what QEMU
 * 7.2's block/bochs.c reads.  See docs/formats.md ("bochs").  Little-endian:
 *
 *   header (512 bytes): magic "Bochs Virtual HD Image", type "Redolog",
 *   subtype "Growing" (each a NUL-terminated string in its field), version
 *   (1 or 2), header size (where the catalog starts), catalog entries,
 *   bitmap size, extent size, disk size (v1 at 84, v2 at 88);
 *   catalog: one 32-bit extent number per extent, 0xffffffff = unallocated;
 *   extents after the catalog: a sector bitmap then the extent's sectors;
 *   a sector whose bitmap bit is clear reads as zeroes.
 *
 * CVE-2014-0147/0148 were this header: the catalog is capped at QEMU's 1M
 * entries and must cover the disk, the extent size is a power of two
 * between 512 bytes and 8 MiB, the catalog must lie in the file, and every
 * offset is computed in 64 bits.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"
#include "block/drivers/backing.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define BOCHS_HEADER_BYTES 512
#define BOCHS_V1 0x10000u
#define BOCHS_V2 0x20000u
#define BOCHS_MAX_CATALOG 0x100000u
#define BOCHS_MAX_EXTENT 0x800000u
#define BOCHS_UNALLOCATED 0xffffffffu

struct bochs_state {
	uint32_t catalog_size;
	uint32_t *catalog;
	uint64_t data_offset;
	uint64_t bitmap_blocks, extent_blocks;
	uint32_t extent_size;
};

static void bochs_close(struct vd_node *n)
{
	struct bochs_state *s = n->opaque;

	free(s->catalog);
	s->catalog = NULL;
}

/* The field at @off is @want followed by its NUL (QEMU's strcmp). */
static bool field_is(const uint8_t *h, size_t off, size_t len, const char *want)
{
	size_t wl = strlen(want);

	return wl < len && memcmp(h + off, want, wl + 1) == 0;
}

static int bochs_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct bochs_state *s = n->opaque;
	uint8_t h[BOCHS_HEADER_BYTES];
	uint32_t version, header, bitmap;
	uint64_t disk, sectors, per_extent, cat_bytes;
	int64_t file_size;
	int ret;

	ret = vd_format_refuse_rdwr(n, flags, err);
	if (ret < 0)
		return ret;
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Invalid file size");
	if (file_size < BOCHS_HEADER_BYTES)
		return vd_error_set(err, -EINVAL, "Image not in Bochs format");
	ret = vd_format_pread(n, 0, h, sizeof(h));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read the Bochs header");
	version = ld_le32(h + 64);
	if (!field_is(h, 0, 32, "Bochs Virtual HD Image") || !field_is(h, 32, 16, "Redolog") ||
	    !field_is(h, 48, 16, "Growing") || (version != BOCHS_V1 && version != BOCHS_V2))
		return vd_error_set(err, -EINVAL, "Image not in Bochs format");
	disk = ld_le64(h + (version == BOCHS_V1 ? 84 : 88));
	sectors = disk / 512;
	if (sectors > (uint64_t)VD_MAX_LENGTH / 512)
		return vd_error_set(err, -EFBIG, "Bochs disk size %" PRIu64 " is too large", disk);
	header = ld_le32(h + 68);
	s->catalog_size = ld_le32(h + 72);
	bitmap = ld_le32(h + 76);
	s->extent_size = ld_le32(h + 80);
	/* QEMU's limit: what bximage needs for its largest image (~8 TB). */
	if (s->catalog_size > BOCHS_MAX_CATALOG)
		return vd_error_set(err, -EFBIG, "Catalog size is too large");
	if (s->extent_size < 512)
		return vd_error_set(err, -EINVAL, "Extent size must be at least 512");
	if (s->extent_size & (s->extent_size - 1))
		return vd_error_set(err, -EINVAL, "Extent size %" PRIu32 " is not a power of two",
				    s->extent_size);
	if (s->extent_size > BOCHS_MAX_EXTENT)
		return vd_error_set(err, -EINVAL, "Extent size %" PRIu32 " is too large",
				    s->extent_size);
	per_extent = s->extent_size / 512;
	if (s->catalog_size < (sectors + per_extent - 1) / per_extent)
		return vd_error_set(err, -EINVAL, "Catalog size is too small for this disk size");
	cat_bytes = 4ull * s->catalog_size;
	if (header > (uint64_t)file_size || (uint64_t)file_size - header < cat_bytes)
		return vd_error_set(err, -EINVAL, "Bochs catalog is outside the file");
	s->catalog = malloc(cat_bytes ? cat_bytes : 4);
	if (!s->catalog)
		return vd_error_set(err, -ENOMEM, "Could not allocate the Bochs catalog");
	ret = vd_format_pread(n, header, s->catalog, cat_bytes);
	if (ret < 0) {
		bochs_close(n);
		return vd_error_setg_errno(err, ret, "Could not read the Bochs catalog");
	}
	for (uint32_t i = 0; i < s->catalog_size; i++)
		s->catalog[i] = ld_le32((const uint8_t *)&s->catalog[i]);
	s->data_offset = header + cat_bytes;
	/* QEMU's arithmetic, in 64 bits (a zero bitmap size wraps in QEMU's
	 * 32-bit expression to 2^23 blocks; same here). */
	s->bitmap_blocks = 1 + (uint64_t)(uint32_t)(bitmap - 1) / 512;
	s->extent_blocks = 1 + (uint64_t)(s->extent_size - 1) / 512;
	n->size = (int64_t)(sectors * 512);
	return 0;
}

/*
 * Host offset of guest sector @sector: 0 when it reads as zeroes (extent
 * unallocated or bitmap bit clear), -errno on a read error or an offset
 * no file can hold.
 */
static int64_t sector_host(struct vd_node *n, uint64_t sector)
{
	struct bochs_state *s = n->opaque;
	uint64_t per_extent = s->extent_size / 512;
	uint64_t index = sector / per_extent, in = sector % per_extent, bitmap_off;
	uint8_t bit;
	int ret;

	if (index >= s->catalog_size || s->catalog[index] == BOCHS_UNALLOCATED)
		return 0;
	/* Up to 2^32 * (2^23 + 2^14) * 512 overflows 64 bits: checked. */
	if (__builtin_mul_overflow((uint64_t)s->catalog[index] * 512,
				   s->extent_blocks + s->bitmap_blocks, &bitmap_off) ||
	    bitmap_off > (uint64_t)VD_MAX_LENGTH - s->data_offset)
		return -EIO;
	bitmap_off += s->data_offset;
	if (bitmap_off + 512 * (s->bitmap_blocks + in) > (uint64_t)VD_MAX_LENGTH)
		return -EIO;
	ret = vd_format_pread(n, bitmap_off + in / 8, &bit, 1);
	if (ret < 0)
		return ret;
	if (!((bit >> (in % 8)) & 1))
		return 0;
	return (int64_t)(bitmap_off + 512 * (s->bitmap_blocks + in));
}

static int bochs_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   int flags)
{
	struct vd_qiov local;
	size_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		uint64_t in = (uint64_t)offset % 512;
		int64_t chunk = 512 - (int64_t)in;
		int64_t host = sector_host(n, (uint64_t)offset / 512);

		if (chunk > bytes)
			chunk = bytes;
		if (host < 0) {
			ret = (int)host;
		} else if (host == 0) {
			vd_qiov_memset(qiov, done, 0, (size_t)chunk);
		} else {
			vd_qiov_reset(&local);
			ret = vd_qiov_concat_slice(&local, qiov, done, (size_t)chunk);
			if (ret == 0)
				ret = vd_co_preadv(n->file, host + (int64_t)in, chunk, &local, 0);
		}
		offset += chunk;
		bytes -= chunk;
		done += (size_t)chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

/* Holes at extent granularity: an unallocated extent reads as zeroes. */
static int bochs_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
				 int64_t *map, struct vd_node **file)
{
	struct bochs_state *s = n->opaque;
	uint64_t index = (uint64_t)offset / s->extent_size;

	*pnum = (int64_t)(s->extent_size - (uint64_t)offset % s->extent_size);
	if (index >= s->catalog_size || s->catalog[index] == BOCHS_UNALLOCATED)
		return VD_BLOCK_ZERO;
	return VD_BLOCK_DATA;
}

static int bochs_probe(const uint8_t *buf, size_t len, const char *filename)
{
	uint32_t version;

	if (len < BOCHS_HEADER_BYTES)
		return 0;
	version = ld_le32(buf + 64);
	if (field_is(buf, 0, 32, "Bochs Virtual HD Image") && field_is(buf, 32, 16, "Redolog") &&
	    field_is(buf, 48, 16, "Growing") && (version == BOCHS_V1 || version == BOCHS_V2))
		return 100;
	return 0;
}

const struct vd_block_driver vd_driver_bochs = {
	.name = "bochs",
	.instance_size = sizeof(struct bochs_state),
	.is_format = true,
	.child_name = "file",
	.child_has_metadata = true,
	.probe = bochs_probe,
	.open = bochs_open,
	.close = bochs_close,
	.co_preadv = bochs_co_preadv,
	.co_block_status = bochs_co_block_status,
};
