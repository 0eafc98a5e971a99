/* SPDX-License-Identifier: MIT */
/*
 * The "qcow" format, version 1 (QEMU's original copy-on-write format), read
 * only: what QEMU 7.2's block/qcow.c reads.  Layout (big-endian; see
 * docs/formats.md "qcow"):
 *
 *   header (48 bytes): magic "QFI\xfb", version 1, backing file name
 *   (offset, size), mtime, size in bytes, cluster_bits, l2_bits, crypt
 *   method, L1 table offset;
 *   L1: 64-bit offsets of L2 tables (0 = none), enough to cover the size;
 *   L2: 2^l2_bits 64-bit cluster descriptors: 0 unallocated (backing file
 *   or zeroes), bit 63 set: compressed (raw deflate), its size in the
 *   cluster_bits bits below bit 63 and its offset in the rest; else the
 *   offset of the cluster.
 *
 * CVE-2014-0222 / 0223 were this header: cluster_bits and l2_bits are
 * bounded as QEMU does (512 B..64 KiB each), the L1 size is computed
 * without overflow and must lie in the file, as must every table and
 * cluster before it is read.  Encrypted images are refused.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "block/drivers.h"
#include "block/drivers/backing.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define QCOW_MAGIC 0x514649fbu
#define QCOW_VERSION 1
#define QCOW_HEADER_BYTES 48
#define QCOW_OFLAG_COMPRESSED (1ull << 63)
#define QCOW_MAX_L1_BYTES (32u << 20) /* ours: 2 PiB of 64 KiB clusters */
#define QCOW_L2_CACHE 16
#define QCOW_MAX_BACKING_NAME 1023

struct qcow_l2 {
	uint64_t offset;
	uint64_t *table; /* host-endian */
	uint64_t used;
};

struct qcow_state {
	struct vd_co_mutex lock;
	unsigned cluster_bits, l2_bits;
	uint32_t cluster_size, l2_size;
	uint64_t cluster_offset_mask;
	uint64_t l1_size, l1_offset;
	uint64_t *l1;
	uint64_t file_size;
	struct qcow_l2 l2[QCOW_L2_CACHE];
	uint64_t stamp;
	char *backing_file;
};

static void qcow_close(struct vd_node *n)
{
	struct qcow_state *s = n->opaque;

	for (int i = 0; i < QCOW_L2_CACHE; i++) {
		free(s->l2[i].table);
		s->l2[i].table = NULL;
	}
	free(s->l1);
	free(s->backing_file);
	s->l1 = NULL;
	s->backing_file = NULL;
}

static int qcow_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct qcow_state *s = n->opaque;
	uint8_t h[QCOW_HEADER_BYTES];
	uint64_t size, backing_off, l1_bytes;
	uint32_t backing_size, crypt, version;
	unsigned shift;
	int64_t file_size;
	int ret;

	vd_co_mutex_init(&s->lock);
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
	if (file_size < QCOW_HEADER_BYTES)
		return vd_error_set(err, -EINVAL, "Image not in qcow format (file too short)");
	ret = vd_format_pread(n, 0, h, sizeof(h));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read the qcow header");

	/* QEMU's checks, in its order and words. */
	if (ld_be32(h) != QCOW_MAGIC)
		return vd_error_set(err, -EINVAL, "Image not in qcow format");
	version = ld_be32(h + 4);
	if (version != QCOW_VERSION)
		return vd_error_set(err, -ENOTSUP,
				    "qcow (v%d) does not support qcow version %" PRIu32,
				    QCOW_VERSION, version);
	backing_off = ld_be64(h + 8);
	backing_size = ld_be32(h + 16);
	size = ld_be64(h + 24);
	s->cluster_bits = h[32];
	s->l2_bits = h[33];
	crypt = ld_be32(h + 36);
	s->l1_offset = ld_be64(h + 40);
	if (size <= 1)
		return vd_error_set(err, -EINVAL,
				    "Image size is too small (must be at least 2 bytes)");
	if (s->cluster_bits < 9 || s->cluster_bits > 16)
		return vd_error_set(err, -EINVAL, "Cluster size must be between 512 and 64k");
	/* l2_bits counts 8-byte entries: an L2 table is 512 B..64 KiB. */
	if (s->l2_bits < 9 - 3 || s->l2_bits > 16 - 3)
		return vd_error_set(err, -EINVAL, "L2 table size must be between 512 and 64k");
	if (crypt > 1)
		return vd_error_set(err, -EINVAL, "invalid encryption method in qcow header");
	if (crypt)
		return vd_error_set(err, -ENOTSUP,
				    "Use of AES-CBC encrypted qcow images is no longer supported: "
				    "decrypt it with qemu-img convert");
	if (size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Image too large");
	s->cluster_size = 1u << s->cluster_bits;
	s->l2_size = 1u << s->l2_bits;
	s->cluster_offset_mask = (1ull << (63 - s->cluster_bits)) - 1;
	shift = s->cluster_bits + s->l2_bits;
	s->l1_size = (size + (1ull << shift) - 1) >> shift;
	l1_bytes = s->l1_size * 8;
	if (s->l1_size > INT_MAX / 8 || l1_bytes > QCOW_MAX_L1_BYTES)
		return vd_error_set(err, -EINVAL, "Image too large");
	if (s->l1_offset > s->file_size || s->file_size - s->l1_offset < l1_bytes)
		return vd_error_set(err, -EINVAL,
				    "qcow L1 table (%" PRIu64 " bytes at %" PRIu64
				    ") is outside the file",
				    l1_bytes, s->l1_offset);
	n->size = (int64_t)(size & ~511ull); /* QEMU: total_sectors = size / 512 */

	s->l1 = malloc(l1_bytes ? l1_bytes : 8);
	if (!s->l1)
		return vd_error_set(err, -ENOMEM, "Could not allocate the qcow L1 table");
	ret = vd_format_pread(n, s->l1_offset, s->l1, l1_bytes);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read the qcow L1 table");
		goto fail;
	}
	for (uint64_t i = 0; i < s->l1_size; i++)
		s->l1[i] = ld_be64((const uint8_t *)&s->l1[i]);

	if (backing_off) {
		if (backing_size > QCOW_MAX_BACKING_NAME) {
			ret = vd_error_set(err, -EINVAL, "Backing file name too long");
			goto fail;
		}
		if (backing_off > s->file_size || s->file_size - backing_off < backing_size) {
			ret = vd_error_set(err, -EINVAL,
					   "qcow backing file name is outside the file");
			goto fail;
		}
		s->backing_file = calloc(1, (size_t)backing_size + 1);
		if (!s->backing_file) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
		ret = vd_format_pread(n, backing_off, s->backing_file, backing_size);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read the qcow backing file name");
			goto fail;
		}
		if (!s->backing_file[0]) {
			free(s->backing_file);
			s->backing_file = NULL;
		}
	}
	ret = vd_format_open_backing(n, opts, flags, s->backing_file, NULL, err);
	if (ret < 0)
		goto fail;
	return 0;
fail:
	qcow_close(n);
	return ret;
}

/* The L2 table at @offset (checked by the caller), cached.  With s->lock. */
static int l2_get(struct vd_node *n, uint64_t offset, uint64_t **out)
{
	struct qcow_state *s = n->opaque;
	struct qcow_l2 *victim = &s->l2[0];
	int ret;

	for (int i = 0; i < QCOW_L2_CACHE; i++) {
		if (s->l2[i].table && s->l2[i].offset == offset) {
			s->l2[i].used = ++s->stamp;
			*out = s->l2[i].table;
			return 0;
		}
		if (!s->l2[i].table || (victim->table && s->l2[i].used < victim->used))
			victim = &s->l2[i];
	}
	if (!victim->table && !(victim->table = malloc((size_t)s->l2_size * 8)))
		return -ENOMEM;
	victim->offset = UINT64_MAX;
	ret = vd_format_pread(n, offset, victim->table, (size_t)s->l2_size * 8);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < s->l2_size; i++)
		victim->table[i] = ld_be64((const uint8_t *)&victim->table[i]);
	victim->offset = offset;
	victim->used = ++s->stamp;
	*out = victim->table;
	return 0;
}

/* The descriptor of the cluster of guest @offset (0: unallocated), its
 * table and target checked against the file. */
static int lookup(struct vd_node *n, uint64_t offset, uint64_t *desc)
{
	struct qcow_state *s = n->opaque;
	uint64_t l1i = offset >> (s->cluster_bits + s->l2_bits), l2off, *l2, d;
	int ret;

	*desc = 0;
	if (l1i >= s->l1_size)
		return -EIO;
	l2off = s->l1[l1i];
	if (!l2off)
		return 0;
	if (l2off > s->file_size || s->file_size - l2off < (uint64_t)s->l2_size * 8)
		return -EIO;
	vd_co_mutex_lock(&s->lock);
	ret = l2_get(n, l2off, &l2);
	if (ret == 0)
		d = l2[(offset >> s->cluster_bits) & (s->l2_size - 1)];
	vd_co_mutex_unlock(&s->lock);
	if (ret < 0)
		return ret;
	if (d & QCOW_OFLAG_COMPRESSED) {
		uint64_t coff = d & s->cluster_offset_mask;
		uint64_t csize = (d >> (63 - s->cluster_bits)) & (s->cluster_size - 1);

		if (coff >= s->file_size || csize == 0)
			return -EIO;
	} else if (d && d >= s->file_size) {
		return -EIO;
	}
	*desc = d;
	return 0;
}

/* Inflate the compressed cluster @desc into @out (cluster_size bytes), as
 * QEMU's decompress_buffer: raw deflate, exactly one cluster out. */
static int read_compressed(struct vd_node *n, uint64_t desc, uint8_t *out)
{
	struct qcow_state *s = n->opaque;
	uint64_t coff = desc & s->cluster_offset_mask;
	uint64_t csize = (desc >> (63 - s->cluster_bits)) & (s->cluster_size - 1);
	z_stream z = {0};
	uint8_t *in;
	int ret, zr;

	/* What the descriptor claims, cut at the end of the file. */
	if (csize > s->file_size - coff)
		csize = s->file_size - coff;
	in = malloc(csize);
	if (!in)
		return -ENOMEM;
	ret = vd_format_pread(n, coff, in, csize);
	if (ret == 0) {
		if (inflateInit2(&z, -12) != Z_OK) {
			free(in);
			return -ENOMEM;
		}
		z.next_in = in;
		z.avail_in = (uInt)csize;
		z.next_out = out;
		z.avail_out = s->cluster_size;
		zr = inflate(&z, Z_FINISH);
		if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || z.avail_out != 0)
			ret = -EIO;
		inflateEnd(&z);
	}
	free(in);
	return ret;
}

static int qcow_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct qcow_state *s = n->opaque;
	struct vd_qiov local;
	uint8_t *cbuf = NULL;
	size_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		uint64_t in = (uint64_t)offset & (s->cluster_size - 1), desc;
		int64_t chunk = s->cluster_size - (int64_t)in;

		if (chunk > bytes)
			chunk = bytes;
		ret = lookup(n, (uint64_t)offset, &desc);
		if (ret < 0)
			break;
		if (!desc) {
			ret = vd_format_read_backing(n, offset, chunk, qiov, done);
		} else if (desc & QCOW_OFLAG_COMPRESSED) {
			if (!cbuf && !(cbuf = malloc(s->cluster_size))) {
				ret = -ENOMEM;
				break;
			}
			ret = read_compressed(n, desc, cbuf);
			if (ret == 0)
				vd_qiov_from_buf(qiov, done, cbuf + in, (size_t)chunk);
		} else {
			vd_qiov_reset(&local);
			ret = vd_qiov_concat_slice(&local, qiov, done, (size_t)chunk);
			if (ret == 0)
				ret = vd_co_preadv(n->file, (int64_t)(desc + in), chunk, &local, 0);
		}
		offset += chunk;
		bytes -= chunk;
		done += (size_t)chunk;
	}
	free(cbuf);
	vd_qiov_destroy(&local);
	return ret;
}

static int qcow_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
				int64_t *map, struct vd_node **file)
{
	struct qcow_state *s = n->opaque;
	uint64_t in = (uint64_t)offset & (s->cluster_size - 1), desc;
	int ret = lookup(n, (uint64_t)offset, &desc);

	if (ret < 0)
		return ret;
	*pnum = (int64_t)(s->cluster_size - in);
	if (!desc)
		return 0;
	if (desc & QCOW_OFLAG_COMPRESSED)
		return VD_BLOCK_DATA;
	*map = (int64_t)(desc + in);
	*file = n->file;
	return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

static int qcow_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct qcow_state *s = n->opaque;

	info->cluster_size = s->cluster_size;
	if (s->backing_file) {
		info->backing_filename = strdup(s->backing_file);
		info->full_backing_filename =
			n->backing && n->backing->filename
				? strdup(n->backing->filename)
				: vd_format_resolve_backing(n->file ? n->file->filename : NULL,
							    s->backing_file);
		if (!info->backing_filename || !info->full_backing_filename)
			return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	return 0;
}

static int qcow_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return len >= QCOW_HEADER_BYTES && ld_be32(buf) == QCOW_MAGIC &&
			       ld_be32(buf + 4) == QCOW_VERSION
		       ? 100
		       : 0;
}

const struct vd_block_driver vd_driver_qcow = {
	.name = "qcow",
	.instance_size = sizeof(struct qcow_state),
	.is_format = true,
	.references_files = true,
	.child_name = "file",
	.child_has_metadata = true,
	.probe = qcow_probe,
	.open = qcow_open,
	.close = qcow_close,
	.co_preadv = qcow_co_preadv,
	.co_block_status = qcow_co_block_status,
	.get_info = qcow_get_info,
};
