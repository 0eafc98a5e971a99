/* SPDX-License-Identifier: MIT */
/*
 * The "vdi" format: VirtualBox disk images, dynamic and static, as QEMU
 * 7.2's block/vdi.c reads, writes, creates and checks them.  Our reading of
 * the format and of QEMU's choices is in docs/formats.md ("vdi"); in short:
 *
 *   a 512-byte header (little-endian fields after 64 bytes of text), the
 *   block map (one 32-bit entry per block of the disk: the index of the data
 *   block in the file, 0xffffffff never allocated, 0xfffffffe discarded;
 *   both read as zeroes) at offset_bmap, data blocks of block_size (1 MiB,
 *   the only size QEMU accepts) from offset_data on, numbered in the order
 *   they were allocated; the header's blocks_allocated is the next number.
 *
 * Header fields are hostile until checked here, once, at open
 * (CVE-2014-0143/0144 were vdi's block count and map size): the map must
 * lie in the file (which bounds its allocation) and clear of the header and
 * the data area; a new block's number must stay below blocks_in_image and
 * above every number the map already holds (else writes fail with EIO:
 * QEMU would hand out a block twice).
 *
 * Locking: s->lock (a coroutine mutex) serialises allocations: the whole
 * new block (guest data, zeroes around it) is written under it, then the
 * header (blocks_allocated) and the map sector, and only then is the entry
 * published in memory, so a concurrent writer to the same block waits and
 * then writes into the allocated block.  Writes to allocated blocks and all
 * reads take no lock.
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
#include <unistd.h>

#include "block/drivers.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_TYPE_DYNAMIC 1
#define VDI_TYPE_STATIC 2
#define VDI_TEXT "<<< QEMU VM Virtual Disk Image >>>\n"
#define VDI_UNALLOCATED 0xffffffffu
#define VDI_DISCARDED 0xfffffffeu
#define VDI_IS_ALLOCATED(x) ((x) < VDI_DISCARDED)
#define VDI_BLOCK_SIZE (1u << 20)
/* QEMU's limit: the map, rounded up to a sector, stays below INT_MAX. */
#define VDI_BLOCKS_IN_IMAGE_MAX ((uint32_t)((INT_MAX + 1u - 512u) / 4))
#define VDI_DISK_SIZE_MAX ((uint64_t)VDI_BLOCKS_IN_IMAGE_MAX * VDI_BLOCK_SIZE)

/* Header fields (little-endian), after the 64-byte text. */
enum {
	H_SIGNATURE = 64,
	H_VERSION = 68,
	H_HEADER_SIZE = 72,
	H_IMAGE_TYPE = 76,
	H_IMAGE_FLAGS = 80,
	H_DESCRIPTION = 84, /* 256 bytes */
	H_OFFSET_BMAP = 340,
	H_OFFSET_DATA = 344,
	H_CYLINDERS = 348,
	H_HEADS = 352,
	H_SECTORS = 356,
	H_SECTOR_SIZE = 360,
	H_DISK_SIZE = 368, /* 64 bits */
	H_BLOCK_SIZE = 376,
	H_BLOCK_EXTRA = 380,
	H_BLOCKS_IN_IMAGE = 384,
	H_BLOCKS_ALLOCATED = 388,
	H_UUID_IMAGE = 392,
	H_UUID_LAST_SNAP = 408,
	H_UUID_LINK = 424,
	H_UUID_PARENT = 440,
	VDI_HEADER_SIZE = 512,
};

struct vdi_state {
	struct vd_co_mutex lock;
	uint8_t header[VDI_HEADER_SIZE]; /* as on disk, blocks_allocated kept current */
	uint32_t image_type;
	uint32_t block_size;
	uint32_t blocks_in_image, blocks_allocated;
	uint64_t offset_bmap, offset_data;
	uint32_t *bmap; /* host-endian, a whole number of sectors */
	uint64_t bmap_bytes;
	/* The highest data block a map entry names: a new block must come
	 * after it, or two entries would share one (a corrupt count). */
	uint32_t max_in_use;
	bool any_in_use;
};

static bool is_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int vdi_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct vdi_state *s = n->opaque;
	uint8_t *h = s->header;
	uint64_t disk_size;
	uint32_t version, sector_size;
	int64_t file_size;
	struct vd_qiov q;
	int ret;

	vd_co_mutex_init(&s->lock);
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Could not get the image size");
	if (file_size < VDI_HEADER_SIZE)
		return vd_error_set(err, -EINVAL, "Image not in VDI format (file too short)");
	vd_qiov_init_buf(&q, h, VDI_HEADER_SIZE);
	ret = vd_co_preadv(n->file, 0, VDI_HEADER_SIZE, &q, 0);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read VDI header");

	disk_size = ld_le64(h + H_DISK_SIZE);
	version = ld_le32(h + H_VERSION);
	sector_size = ld_le32(h + H_SECTOR_SIZE);
	s->image_type = ld_le32(h + H_IMAGE_TYPE);
	s->block_size = ld_le32(h + H_BLOCK_SIZE);
	s->blocks_in_image = ld_le32(h + H_BLOCKS_IN_IMAGE);
	s->blocks_allocated = ld_le32(h + H_BLOCKS_ALLOCATED);
	s->offset_bmap = ld_le32(h + H_OFFSET_BMAP);
	s->offset_data = ld_le32(h + H_OFFSET_DATA);

	/* QEMU's checks, in QEMU's order and words. */
	if (disk_size > VDI_DISK_SIZE_MAX)
		return vd_error_set(err, -ENOTSUP,
				    "Unsupported VDI image size (size is 0x%" PRIx64
				    ", max supported is 0x%" PRIx64 ")",
				    disk_size, VDI_DISK_SIZE_MAX);
	/* VBoxManage convertfromraw makes odd sizes: round up to a sector. */
	disk_size = (disk_size + 511) & ~511ull;
	if (ld_le32(h + H_SIGNATURE) != VDI_SIGNATURE)
		return vd_error_set(err, -EINVAL,
				    "Image not in VDI format (bad signature %08" PRIx32 ")",
				    ld_le32(h + H_SIGNATURE));
	if (version != VDI_VERSION_1_1)
		return vd_error_set(err, -ENOTSUP,
				    "unsupported VDI image (version %" PRIu32 ".%" PRIu32 ")",
				    version >> 16, version & 0xffff);
	if (s->offset_bmap % 512)
		return vd_error_set(err, -ENOTSUP,
				    "unsupported VDI image (unaligned block map offset 0x%" PRIx64
				    ")",
				    s->offset_bmap);
	if (s->offset_data % 512)
		return vd_error_set(err, -ENOTSUP,
				    "unsupported VDI image (unaligned data offset 0x%" PRIx64 ")",
				    s->offset_data);
	if (sector_size != 512)
		return vd_error_set(err, -ENOTSUP,
				    "unsupported VDI image (sector size %" PRIu32 " is not 512)",
				    sector_size);
	if (s->block_size != VDI_BLOCK_SIZE)
		return vd_error_set(err, -ENOTSUP,
				    "unsupported VDI image (block size %" PRIu32 " is not %u)",
				    s->block_size, VDI_BLOCK_SIZE);
	if (disk_size > (uint64_t)s->blocks_in_image * s->block_size)
		return vd_error_set(err, -ENOTSUP,
				    "unsupported VDI image (disk size %" PRIu64
				    ", image bitmap has "
				    "room for %" PRIu64 ")",
				    disk_size, (uint64_t)s->blocks_in_image * s->block_size);
	if (!is_zero(h + H_UUID_LINK, 16))
		return vd_error_set(err, -ENOTSUP, "unsupported VDI image (non-NULL link UUID)");
	if (!is_zero(h + H_UUID_PARENT, 16))
		return vd_error_set(err, -ENOTSUP, "unsupported VDI image (non-NULL parent UUID)");
	if (s->blocks_in_image > VDI_BLOCKS_IN_IMAGE_MAX)
		return vd_error_set(err, -ENOTSUP,
				    "unsupported VDI image (too many blocks %" PRIu32
				    ", max is %" PRIu32 ")",
				    s->blocks_in_image, VDI_BLOCKS_IN_IMAGE_MAX);

	/* Ours: the map in the file, clear of the header and the data. */
	s->bmap_bytes = ((uint64_t)s->blocks_in_image * 4 + 511) & ~511ull;
	if (s->offset_bmap < VDI_HEADER_SIZE ||
	    s->offset_bmap + s->bmap_bytes > (uint64_t)file_size)
		return vd_error_set(err, -EINVAL,
				    "VDI block map (%" PRIu64 " bytes at 0x%" PRIx64
				    ") is not inside the file after the header",
				    s->bmap_bytes, s->offset_bmap);
	if (s->offset_data < s->offset_bmap + s->bmap_bytes)
		return vd_error_set(err, -EINVAL,
				    "VDI data offset 0x%" PRIx64 " overlaps the block map",
				    s->offset_data);
	if (s->image_type != VDI_TYPE_DYNAMIC && s->image_type != VDI_TYPE_STATIC)
		return vd_error_set(err, -ENOTSUP, "unsupported VDI image (type %" PRIu32 ")",
				    s->image_type);

	s->bmap = vd_memalign(4096, s->bmap_bytes ? s->bmap_bytes : 512);
	if (!s->bmap)
		return vd_error_set(err, -ENOMEM, "Could not allocate the VDI block map");
	if (s->bmap_bytes) {
		vd_qiov_init_buf(&q, s->bmap, s->bmap_bytes);
		ret = vd_co_preadv(n->file, (int64_t)s->offset_bmap, (int64_t)s->bmap_bytes, &q, 0);
		if (ret < 0) {
			free(s->bmap); /* close is called only after a successful open */
			s->bmap = NULL;
			return vd_error_setg_errno(err, ret, "Could not read the VDI block map");
		}
	}
	for (uint64_t i = 0; i < s->bmap_bytes / 4; i++) {
		s->bmap[i] = ld_le32((const uint8_t *)&s->bmap[i]);
		if (i < s->blocks_in_image && VDI_IS_ALLOCATED(s->bmap[i]) &&
		    (!s->any_in_use || s->bmap[i] > s->max_in_use)) {
			s->max_in_use = s->bmap[i];
			s->any_in_use = true;
		}
	}
	n->size = (int64_t)disk_size;
	return 0;
}

static void vdi_close(struct vd_node *n)
{
	struct vdi_state *s = n->opaque;

	free(s->bmap);
	s->bmap = NULL;
}

static uint64_t data_offset(const struct vdi_state *s, uint32_t entry, uint64_t in_block)
{
	return s->offset_data + (uint64_t)entry * s->block_size + in_block;
}

static int vdi_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags)
{
	struct vdi_state *s = n->opaque;
	struct vd_qiov local;
	int64_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		uint64_t index = (uint64_t)offset / s->block_size;
		uint64_t in_block = (uint64_t)offset % s->block_size;
		int64_t chunk = (int64_t)(s->block_size - in_block);
		uint32_t entry;

		if (chunk > bytes)
			chunk = bytes;
		/* n->size <= blocks_in_image * block_size (checked at open). */
		assert(index < s->blocks_in_image);
		entry = s->bmap[index];
		if (!VDI_IS_ALLOCATED(entry)) {
			vd_qiov_memset(qiov, (size_t)done, 0, (size_t)chunk);
		} else {
			vd_qiov_reset(&local);
			ret = vd_qiov_concat_slice(&local, qiov, (size_t)done, (size_t)chunk);
			if (ret == 0)
				ret = vd_co_preadv(n->file,
						   (int64_t)data_offset(s, entry, in_block), chunk,
						   &local, 0);
		}
		offset += chunk;
		bytes -= chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

/*
 * Allocate the block @index and write the guest bytes of @qiov at @done
 * (@chunk of them, at @in_block) into it, zeroes around them.  Then the
 * header and the map sector: blocks_allocated first, so that a crash
 * between the two leaves a block counted and unused (check reports it),
 * never two map entries for one block.  With s->lock held.
 */
static int alloc_block(struct vd_node *n, uint32_t index, uint64_t in_block, int64_t chunk,
		       struct vd_qiov *qiov, int64_t done)
{
	struct vdi_state *s = n->opaque;
	uint32_t entry = s->blocks_allocated;
	uint64_t sector = (uint64_t)index * 4 / 512;
	uint8_t *block, *map;
	struct vd_qiov q;
	int ret;

	/* A header that counts more blocks than the image has is corrupt:
	 * the next block would go anywhere (QEMU writes it there). */
	if (entry >= s->blocks_in_image || (s->any_in_use && entry <= s->max_in_use))
		return -EIO;
	block = vd_memalign(4096, s->block_size);
	if (!block)
		return -ENOMEM;
	memset(block, 0, s->block_size);
	vd_qiov_to_buf(qiov, (size_t)done, block + in_block, (size_t)chunk);
	vd_qiov_init_buf(&q, block, s->block_size);
	ret = vd_co_pwritev(n->file, (int64_t)data_offset(s, entry, 0), s->block_size, &q, 0);
	free(block);
	if (ret < 0)
		return ret;

	st_le32(s->header + H_BLOCKS_ALLOCATED, entry + 1);
	vd_qiov_init_buf(&q, s->header, VDI_HEADER_SIZE);
	ret = vd_co_pwritev(n->file, 0, VDI_HEADER_SIZE, &q, 0);
	if (ret < 0) {
		st_le32(s->header + H_BLOCKS_ALLOCATED, entry);
		return ret;
	}
	s->blocks_allocated = entry + 1;

	map = malloc(512);
	if (!map)
		return -ENOMEM;
	for (int i = 0; i < 128; i++) {
		uint32_t e = i + sector * 128 == index ? entry : s->bmap[sector * 128 + i];
		st_le32(map + 4 * i, e);
	}
	vd_qiov_init_buf(&q, map, 512);
	ret = vd_co_pwritev(n->file, (int64_t)(s->offset_bmap + sector * 512), 512, &q, 0);
	free(map);
	if (ret == 0) {
		s->bmap[index] = entry;
		s->max_in_use = entry;
		s->any_in_use = true;
	}
	return ret;
}

static int vdi_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct vdi_state *s = n->opaque;
	struct vd_qiov local;
	int64_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		uint32_t index = (uint32_t)((uint64_t)offset / s->block_size);
		uint64_t in_block = (uint64_t)offset % s->block_size;
		int64_t chunk = (int64_t)(s->block_size - in_block);
		uint32_t entry;

		if (chunk > bytes)
			chunk = bytes;
		assert(index < s->blocks_in_image);
		entry = s->bmap[index];
		if (!VDI_IS_ALLOCATED(entry)) {
			vd_co_mutex_lock(&s->lock);
			entry = s->bmap[index];
			if (!VDI_IS_ALLOCATED(entry)) {
				ret = alloc_block(n, index, in_block, chunk, qiov, done);
				vd_co_mutex_unlock(&s->lock);
				goto next;
			}
			/* Allocated by a concurrent writer meanwhile. */
			vd_co_mutex_unlock(&s->lock);
		}
		vd_qiov_reset(&local);
		ret = vd_qiov_concat_slice(&local, qiov, (size_t)done, (size_t)chunk);
		if (ret == 0)
			ret = vd_co_pwritev(n->file, (int64_t)data_offset(s, entry, in_block),
					    chunk, &local, 0);
	next:
		offset += chunk;
		bytes -= chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

static int vdi_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file)
{
	struct vdi_state *s = n->opaque;
	uint64_t index = (uint64_t)offset / s->block_size;
	uint64_t in_block = (uint64_t)offset % s->block_size;
	uint32_t entry = s->bmap[index];

	*pnum = (int64_t)(s->block_size - in_block);
	if (!VDI_IS_ALLOCATED(entry)) {
		/* Gather the run of unallocated blocks. */
		while (*pnum < bytes && ++index < s->blocks_in_image &&
		       !VDI_IS_ALLOCATED(s->bmap[index]))
			*pnum += s->block_size;
		if (*pnum > bytes)
			*pnum = bytes;
		return VD_BLOCK_ZERO;
	}
	if (*pnum > bytes)
		*pnum = bytes;
	*map = (int64_t)data_offset(s, entry, in_block);
	*file = n->file;
	return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

static int vdi_co_flush(struct vd_node *n)
{
	vd_debug_event(n->file, VD_EV_FLUSH_TO_DISK);
	return 0;
}

/*
 * qemu-img check for vdi (QEMU's vdi_co_check): every allocated entry names
 * a block below blocks_in_image, no block is named twice, and the count
 * matches the header's blocks_allocated.  No repairs (-ENOTSUP).
 */
static int vdi_co_check(struct vd_node *n, struct vd_check_result *res, int fix)
{
	struct vdi_state *s = n->opaque;
	uint32_t *owner, allocated = 0;

	if (fix)
		return -ENOTSUP;
	owner = malloc(((size_t)s->blocks_in_image + 1) * sizeof(uint32_t));
	if (!owner) {
		res->check_errors++;
		return -ENOMEM;
	}
	memset(owner, 0xff, ((size_t)s->blocks_in_image + 1) * sizeof(uint32_t));
	for (uint32_t block = 0; block < s->blocks_in_image; block++) {
		uint32_t entry = s->bmap[block];

		if (!VDI_IS_ALLOCATED(entry))
			continue;
		if (entry >= s->blocks_in_image) {
			vd_message(VD_MSG_ERROR,
				   "ERROR: block index %" PRIu32 " too large, is %" PRIu32, block,
				   entry);
			res->corruptions++;
			continue;
		}
		allocated++;
		if (VDI_IS_ALLOCATED(owner[entry])) {
			vd_message(VD_MSG_ERROR,
				   "ERROR: block index %" PRIu32 " also used by %" PRIu32,
				   owner[entry], block);
			res->corruptions++;
		} else {
			owner[entry] = block;
		}
	}
	if (allocated != s->blocks_allocated) {
		vd_message(VD_MSG_ERROR,
			   "ERROR: allocated blocks mismatch, is %" PRIu32 ", should be %" PRIu32,
			   allocated, s->blocks_allocated);
		res->corruptions++;
	}
	free(owner);
	return 0;
}

static int vdi_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct vdi_state *s = n->opaque;

	info->cluster_size = s->block_size;
	return 0;
}

static int vdi_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return len >= VDI_HEADER_SIZE && ld_le32(buf + H_SIGNATURE) == VDI_SIGNATURE ? 100 : 0;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t w = pwrite(fd, buf, len, off);

	return w == (ssize_t)len ? 0 : (w < 0 ? -errno : -EIO);
}

static const char *const vdi_create_opts[] = {"static", NULL};

static int vdi_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	uint8_t h[VDI_HEADER_SIZE];
	struct vd_opts *fopts;
	uint64_t size, blocks, bmap_bytes, file_size;
	uint8_t *bmap = NULL;
	bool is_static;
	char sizebuf[32];
	int fd, ret;

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "static", false, &is_static, err);
	if (ret < 0)
		return ret;
	size = size > UINT64_MAX - 511 ? UINT64_MAX : (size + 511) & ~511ull;
	if (size > VDI_DISK_SIZE_MAX)
		return vd_error_set(err, -ENOTSUP,
				    "Unsupported VDI image size (size is 0x%" PRIx64
				    ", max supported is 0x%" PRIx64 ")",
				    size, VDI_DISK_SIZE_MAX);
	blocks = (size + VDI_BLOCK_SIZE - 1) / VDI_BLOCK_SIZE;
	bmap_bytes = (blocks * 4 + 511) & ~511ull;

	memset(h, 0, sizeof(h));
	memcpy(h, VDI_TEXT, sizeof(VDI_TEXT) - 1);
	st_le32(h + H_SIGNATURE, VDI_SIGNATURE);
	st_le32(h + H_VERSION, VDI_VERSION_1_1);
	st_le32(h + H_HEADER_SIZE, 0x180);
	st_le32(h + H_IMAGE_TYPE, is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
	st_le32(h + H_OFFSET_BMAP, 0x200);
	st_le32(h + H_OFFSET_DATA, (uint32_t)(0x200 + bmap_bytes));
	st_le32(h + H_SECTOR_SIZE, 512);
	st_le64(h + H_DISK_SIZE, size);
	st_le32(h + H_BLOCK_SIZE, VDI_BLOCK_SIZE);
	st_le32(h + H_BLOCKS_IN_IMAGE, (uint32_t)blocks);
	st_le32(h + H_BLOCKS_ALLOCATED, is_static ? (uint32_t)blocks : 0);
	if (getrandom(h + H_UUID_IMAGE, 32, 0) != 32)
		return vd_error_setg_errno(err, -errno, "Could not generate a UUID");
	for (int i = 0; i < 2; i++) { /* RFC 4122 version 4, in VDI's byte order */
		uint8_t *u = h + H_UUID_IMAGE + 16 * i;
		u[7] = (u[7] & 0x0f) | 0x40;
		u[8] = (u[8] & 0x3f) | 0x80;
	}

	file_size = is_static ? 0x200 + bmap_bytes + blocks * VDI_BLOCK_SIZE : 0;
	fopts = vd_opts_new();
	snprintf(sizebuf, sizeof(sizebuf), "%" PRIu64, file_size);
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
	ret = write_all(fd, h, sizeof(h), 0);
	if (ret == 0 && bmap_bytes) {
		bmap = malloc(bmap_bytes);
		if (!bmap) {
			ret = -ENOMEM;
		} else {
			memset(bmap, 0, bmap_bytes);
			for (uint64_t i = 0; i < blocks; i++)
				st_le32(bmap + 4 * i, is_static ? (uint32_t)i : VDI_UNALLOCATED);
			ret = write_all(fd, bmap, bmap_bytes, 0x200);
			free(bmap);
		}
	}
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Error writing VDI image '%s'", filename);
	return 0;
}

const struct vd_block_driver vd_driver_vdi = {
	.name = "vdi",
	.instance_size = sizeof(struct vdi_state),
	.is_format = true,
	.child_name = "file",
	.create_opts = vdi_create_opts,
	.probe = vdi_probe,
	.open = vdi_open,
	.close = vdi_close,
	.create = vdi_create,
	.co_preadv = vdi_co_preadv,
	.co_pwritev = vdi_co_pwritev,
	.co_flush = vdi_co_flush,
	.co_block_status = vdi_co_block_status,
	.co_check = vdi_co_check,
	.get_info = vdi_get_info,
};
