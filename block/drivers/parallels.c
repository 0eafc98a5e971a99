/* SPDX-License-Identifier: MIT */
/*
 * The "parallels" format (Parallels / Virtuozzo expandable disks), read
 * only: what QEMU 7.2's block/parallels.c reads.  See docs/formats.md
 * ("parallels").  Little-endian:
 *
 *   header (64 bytes): magic "WithoutFreeSpace" (old: BAT entries in
 *   sectors, 32-bit disk size) or "WithouFreSpacExt" (BAT entries in
 *   clusters, 64-bit size), version 2, heads, cylinders, tracks (sectors
 *   per cluster), BAT entries, size in sectors, in-use flag, data offset,
 *   flags, extension offset;
 *   BAT at 64: one 32-bit entry per cluster, 0 = unallocated (zeroes).
 *
 * CVE-2014-0142/0143/0144 were this header: tracks must be non-zero and the
 * cluster below 1 GiB, the BAT must lie in the file (its size bounds the
 * allocation), and each cluster's host offset is computed in 64 bits and
 * checked against the file before it is read.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"
#include "block/drivers/backing.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define PRL_HEADER_BYTES 64
#define PRL_VERSION 2
#define PRL_INUSE_MAGIC 0x746f6e59u

struct parallels_state {
	uint32_t tracks; /* sectors per cluster */
	uint32_t off_multiplier; /* BAT unit in sectors */
	uint32_t bat_size;
	uint32_t *bat;
	uint64_t file_size;
};

static void parallels_close(struct vd_node *n)
{
	struct parallels_state *s = n->opaque;

	free(s->bat);
	s->bat = NULL;
}

static int parallels_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct parallels_state *s = n->opaque;
	uint8_t h[PRL_HEADER_BYTES];
	uint64_t sectors, bat_bytes;
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
	s->file_size = (uint64_t)file_size;
	if (file_size < PRL_HEADER_BYTES)
		return vd_error_set(err, -EINVAL, "Image not in Parallels format");
	ret = vd_format_pread(n, 0, h, sizeof(h));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read the Parallels header");
	if (ld_le32(h + 16) != PRL_VERSION)
		return vd_error_set(err, -EINVAL, "Image not in Parallels format");
	s->tracks = ld_le32(h + 28);
	if (memcmp(h, "WithoutFreeSpace", 16) == 0) {
		s->off_multiplier = 1;
		sectors = ld_le64(h + 36) & 0xffffffffu;
	} else if (memcmp(h, "WithouFreSpacExt", 16) == 0) {
		s->off_multiplier = s->tracks;
		sectors = ld_le64(h + 36);
	} else {
		return vd_error_set(err, -EINVAL, "Image not in Parallels format");
	}
	if (s->tracks == 0)
		return vd_error_set(err, -EINVAL, "Invalid image: Zero sectors per track");
	if (s->tracks > INT32_MAX / 513)
		return vd_error_set(err, -EFBIG, "Invalid image: Too big cluster");
	s->bat_size = ld_le32(h + 32);
	if (s->bat_size > INT_MAX / 4)
		return vd_error_set(err, -EFBIG, "Catalog too large");
	if (sectors > (uint64_t)VD_MAX_LENGTH / 512)
		return vd_error_set(err, -EFBIG, "Invalid image: disk size too large");
	/* The BAT must be in the file: the file bounds the allocation. */
	bat_bytes = 4ull * s->bat_size;
	if (s->file_size - PRL_HEADER_BYTES < bat_bytes)
		return vd_error_set(err, -EINVAL,
				    "Parallels catalog (%" PRIu32 " entries) is outside the file",
				    s->bat_size);
	if (ld_le32(h + 44) == PRL_INUSE_MAGIC)
		vd_message(VD_MSG_WARNING, "parallels: image was not closed correctly; reading "
					   "it as it is");
	n->size = (int64_t)(sectors * 512);
	s->bat = malloc(bat_bytes ? bat_bytes : 4);
	if (!s->bat)
		return vd_error_set(err, -ENOMEM, "Could not allocate the Parallels catalog");
	ret = vd_format_pread(n, PRL_HEADER_BYTES, s->bat, bat_bytes);
	if (ret < 0) {
		parallels_close(n);
		return vd_error_setg_errno(err, ret, "Could not read the Parallels catalog");
	}
	for (uint32_t i = 0; i < s->bat_size; i++)
		s->bat[i] = ld_le32((const uint8_t *)&s->bat[i]);
	return 0;
}

/* Host byte offset of the cluster of guest @offset: 0 unallocated, -EIO
 * outside the file. */
static int64_t cluster_host(struct parallels_state *s, uint64_t offset)
{
	uint64_t index = offset / 512 / s->tracks, host;

	if (index >= s->bat_size || s->bat[index] == 0)
		return 0;
	host = (uint64_t)s->bat[index] * s->off_multiplier * 512;
	if (host >= s->file_size)
		return -EIO;
	return (int64_t)host;
}

static int parallels_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes,
			       struct vd_qiov *qiov, int flags)
{
	struct parallels_state *s = n->opaque;
	uint64_t cluster = (uint64_t)s->tracks * 512;
	struct vd_qiov local;
	size_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		uint64_t in = (uint64_t)offset % cluster;
		int64_t chunk = (int64_t)(cluster - in), host;

		if (chunk > bytes)
			chunk = bytes;
		host = cluster_host(s, (uint64_t)offset);
		if (host < 0) {
			ret = (int)host;
		} else if (host == 0) {
			ret = vd_format_read_backing(n, offset, chunk, qiov, done);
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

static int parallels_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes,
				     int64_t *pnum, int64_t *map, struct vd_node **file)
{
	struct parallels_state *s = n->opaque;
	uint64_t cluster = (uint64_t)s->tracks * 512, in = (uint64_t)offset % cluster;
	int64_t host = cluster_host(s, (uint64_t)offset);

	if (host < 0)
		return (int)host;
	*pnum = (int64_t)(cluster - in);
	if (host == 0)
		return 0;
	*map = host + (int64_t)in;
	*file = n->file;
	return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

static int parallels_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct parallels_state *s = n->opaque;

	info->cluster_size = (int64_t)s->tracks * 512;
	return 0;
}

static int parallels_probe(const uint8_t *buf, size_t len, const char *filename)
{
	if (len < PRL_HEADER_BYTES)
		return 0;
	if ((memcmp(buf, "WithoutFreeSpace", 16) == 0 ||
	     memcmp(buf, "WithouFreSpacExt", 16) == 0) &&
	    ld_le32(buf + 16) == PRL_VERSION)
		return 100;
	return 0;
}

const struct vd_block_driver vd_driver_parallels = {
	.name = "parallels",
	.instance_size = sizeof(struct parallels_state),
	.is_format = true,
	.child_name = "file",
	.child_has_metadata = true,
	.probe = parallels_probe,
	.open = parallels_open,
	.close = parallels_close,
	.co_preadv = parallels_co_preadv,
	.co_block_status = parallels_co_block_status,
	.get_info = parallels_get_info,
};
