/* SPDX-License-Identifier: MIT */
/*
 * qcow2 and backing chains: changing the backing file named in the header
 * (qemu-img rebase), emptying an overlay after a commit, and measuring the
 * size a new image would take (qemu-img measure, QEMU's qcow2_measure and
 * qcow2_calc_prealloc_size).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"
#include "block/drivers/qcow2/qcow2.h"

static size_t put_ext(uint8_t *buf, size_t off, uint32_t type, const void *data, uint32_t len)
{
	qcow2_put_be32(buf + off, type);
	qcow2_put_be32(buf + off + 4, len);
	if (len)
		memcpy(buf + off + 8, data, len);
	return off + 8 + ((len + 7u) & ~7u);
}

/*
 * qcow2.txt "Header": the backing file name lives in the first cluster,
 * after the header extensions.  The cluster is rebuilt: header fields as
 * they are, the backing format extension first (as QEMU writes it), the
 * other extensions in their order, the end marker, then the name; and
 * written with one write, as QEMU's qcow2_update_header does.
 */
int qcow2_co_change_backing_file(struct vd_node *n, const char *backing_file,
				 const char *backing_fmt, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	uint64_t cs = s->cluster_size;
	uint64_t ext_end = s->backing_file_offset ? s->backing_file_offset : cs;
	size_t name_len = backing_file ? strlen(backing_file) : 0;
	size_t fmt_len = backing_fmt ? strlen(backing_fmt) : 0;
	uint8_t *old = NULL, *h = NULL;
	char *new_file = NULL, *new_fmt = NULL;
	struct vd_qiov q;
	uint64_t off, pos;
	int ret;

	if (name_len > QCOW2_MAX_BACKING_NAME)
		return vd_error_set(err, -EINVAL, "Backing file name too long");
	if (fmt_len >= 16)
		return vd_error_set(err, -EINVAL, "Backing format name too long");
	if (s->data_file)
		return vd_error_set(err, -ENOTSUP,
				    "qcow2 images with an external data file are not supported");
	old = malloc(cs);
	h = calloc(1, cs);
	if ((backing_file && !(new_file = strdup(backing_file))) ||
	    (backing_fmt && backing_file && !(new_fmt = strdup(backing_fmt))) || !old || !h) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	vd_co_mutex_lock(&s->lock);
	vd_qiov_init_buf(&q, old, cs);
	ret = vd_co_preadv(n->file, 0, (int64_t)cs, &q, 0);
	if (ret < 0) {
		vd_co_mutex_unlock(&s->lock);
		vd_error_setg_errno(err, ret, "Could not read qcow2 header");
		goto out;
	}
	memcpy(h, old, s->header_length);
	off = s->header_length;
	if (new_fmt)
		off = put_ext(h, off, QCOW2_EXT_BACKING_FORMAT, new_fmt, (uint32_t)fmt_len);
	/* The other extensions as they are (validated at open). */
	pos = s->header_length;
	while (pos + 8 <= ext_end) {
		uint32_t type = qcow2_be32(old + pos);
		uint32_t len = qcow2_be32(old + pos + 4);
		uint64_t padded = ((uint64_t)len + 7) & ~7ull;

		if (type == QCOW2_EXT_END || len > ext_end - pos - 8)
			break;
		if (type != QCOW2_EXT_BACKING_FORMAT) {
			if (off + 8 + padded + 8 > cs) {
				ret = -ENOSPC;
				break;
			}
			off = put_ext(h, off, type, old + pos + 8, len);
		}
		pos += 8 + padded;
		if (pos > ext_end)
			break;
	}
	if (ret == 0 && off + 8 + name_len > cs)
		ret = -ENOSPC;
	if (ret < 0) {
		vd_co_mutex_unlock(&s->lock);
		vd_error_set(err, ret,
			     "Header extensions and backing file name do not fit in "
			     "the first cluster");
		goto out;
	}
	off = put_ext(h, off, QCOW2_EXT_END, NULL, 0);
	qcow2_put_be64(h + 8, name_len ? off : 0);
	qcow2_put_be32(h + 16, (uint32_t)name_len);
	if (name_len)
		memcpy(h + off, new_file, name_len);

	vd_qiov_init_buf(&q, h, cs);
	ret = vd_co_pwritev(n->file, 0, (int64_t)cs, &q, 0);
	if (ret == 0)
		ret = vd_co_flush(n->file);
	if (ret < 0) {
		vd_co_mutex_unlock(&s->lock);
		vd_error_setg_errno(err, ret, "Could not write the qcow2 header");
		goto out;
	}
	s->backing_file_offset = name_len ? off : 0;
	s->backing_file_size = (uint32_t)name_len;
	free(s->backing_file);
	free(s->backing_fmt);
	s->backing_file = new_file;
	s->backing_fmt = new_fmt;
	new_file = new_fmt = NULL;
	vd_co_mutex_unlock(&s->lock);
out:
	free(new_file);
	free(new_fmt);
	free(old);
	free(h);
	return ret;
}

/*
 * Every cluster of the active table unallocated (QEMU's qcow2_make_empty,
 * its fallback that discards everything: it works with snapshots and
 * bitmaps as well).  Clusters shared with snapshots keep their data there.
 */
int qcow2_co_make_empty(struct vd_node *n, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	int ret;

	vd_co_mutex_lock(&s->lock);
	ret = qcow2_mark_dirty(s);
	if (ret == 0 && s->size)
		ret = qcow2_wait_and_discard_full(s, 0, s->size);
	if (ret == 0)
		ret = qcow2_cache_write_back(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_write_back(s, &s->rb_cache);
	vd_co_mutex_unlock(&s->lock);
	if (ret == 0)
		ret = vd_co_flush(n);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not empty the image");
	return 0;
}

/* QEMU's qcow2_refcount_metadata_size: the fixed point where the refcount
 * blocks and table also count themselves. */
static uint64_t refcount_metadata_size(uint64_t clusters, uint64_t cs, unsigned refcount_order)
{
	uint64_t per_table_cluster = cs / 8;
	uint64_t per_block = cs * 8 / (1u << refcount_order);
	uint64_t table = 0, blocks = 0, n = 0, last;

	do {
		last = n;
		blocks = (clusters + table + blocks + per_block - 1) / per_block;
		table = (blocks + per_table_cluster - 1) / per_table_cluster;
		n = clusters + blocks + table;
	} while (n != last);
	return (blocks + table) * cs;
}

/* QEMU's qcow2_calc_prealloc_size: header, L2 tables, L1 table, refcount
 * structures and every data cluster. */
static uint64_t prealloc_size(uint64_t total, uint64_t cs, unsigned refcount_order, bool extl2)
{
	uint64_t aligned = (total + cs - 1) / cs * cs;
	uint64_t l2e = extl2 ? 16 : 8;
	uint64_t meta = cs, nl2e, nl1e;

	nl2e = aligned / cs;
	nl2e = (nl2e + cs / l2e - 1) / (cs / l2e) * (cs / l2e);
	meta += nl2e * l2e;
	nl1e = nl2e * l2e / cs;
	nl1e = (nl1e + cs / 8 - 1) / (cs / 8) * (cs / 8);
	meta += nl1e * 8;
	meta += refcount_metadata_size((meta + aligned) / cs, cs, refcount_order);
	return meta + aligned;
}

int qcow2_co_measure(struct vd_opts *opts, struct vd_node *in, struct vd_measure_info *info,
		     struct vd_error *err)
{
	static const char *const compress_names[] = {"zlib", "zstd", NULL};
	uint64_t cs, refcount_bits, size, required = 0, l2_tables;
	unsigned order = 0;
	bool extl2 = false, has_backing;
	int version = 3, prealloc = VD_PREALLOC_OFF, compression;
	const char *compat;
	int ret;

	ret = vd_opts_get_bool(opts, "extended_l2", false, &extl2, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "cluster_size", 65536, &cs, err);
	if (ret < 0)
		return ret;
	if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
		return vd_error_set(err, -EINVAL,
				    "Cluster size must be a power of two between 512 and 2048k");
	if (extl2 && cs < 16384)
		return vd_error_set(err, -EINVAL,
				    "Extended L2 entries are only supported with cluster sizes "
				    "of at least 16384 bytes");
	compat = vd_opts_get(opts, "compat");
	if (compat) {
		if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
			version = 2;
		else if (!strcmp(compat, "1.1") || !strcmp(compat, "v3"))
			version = 3;
		else
			return vd_error_set(err, -EINVAL, "Invalid compatibility level: '%s'",
					    compat);
	}
	ret = vd_opts_get_u64(opts, "refcount_bits", 16, &refcount_bits, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "preallocation", vd_prealloc_names, VD_PREALLOC_OFF,
				       &prealloc, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "compression_type", compress_names, 0, &compression,
				       err);
	if (ret < 0)
		return ret;
	if (refcount_bits == 0 || refcount_bits > 64 || (refcount_bits & (refcount_bits - 1)))
		return vd_error_set(err, -EINVAL,
				    "Refcount width must be a power of two and may not exceed "
				    "64 bits");
	if (version < 3 && refcount_bits != 16)
		return vd_error_set(err, -EINVAL,
				    "Different refcount widths than 16 bits require "
				    "compatibility level 1.1 or above (use compat=1.1 or "
				    "greater)");
	while ((1ull << order) < refcount_bits)
		order++;
	has_backing = vd_opts_get(opts, "backing_file") != NULL;
	vd_opts_get(opts, "backing_fmt");
	vd_opts_get(opts, "lazy_refcounts");
	vd_opts_get(opts, "data_file");

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret < 0)
		return ret;
	if (size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EFBIG, "Image size is too large");
	size = (size + cs - 1) / cs * cs;
	l2_tables = (size / cs + cs / (extl2 ? 16 : 8) - 1) / (cs / (extl2 ? 16 : 8));
	if (l2_tables * 8 > QCOW2_MAX_L1_BYTES)
		return vd_error_set(err, -EFBIG,
				    "The image size is too large (try using a larger cluster "
				    "size)");

	if (in) {
		int64_t ssize = vd_node_size(in), offset, pnum = 0;

		if (ssize < 0)
			return vd_error_setg_errno(err, (int)ssize,
						   "Unable to get image virtual_size");
		size = ((uint64_t)ssize + cs - 1) / cs * cs;
		if (has_backing) {
			/* What the new backing file shares with @in is unknown:
			 * every cluster may have to be written (as QEMU). */
			required = size;
		} else {
			for (offset = 0; offset < ssize; offset += pnum) {
				ret = vd_co_block_status_above(in, NULL, offset, ssize - offset,
							       &pnum, NULL, NULL, NULL);
				if (ret < 0)
					return vd_error_setg_errno(err, ret,
								   "Unable to get block status");
				if (pnum <= 0)
					break;
				if (ret & VD_BLOCK_ZERO)
					continue;
				if (ret & VD_BLOCK_DATA) {
					/* On to the end of the cluster; count what the
					 * clusters touched hold (QEMU's arithmetic). */
					pnum = (int64_t)(((uint64_t)(offset + pnum) + cs - 1) / cs *
							 cs) -
					       offset;
					required += (uint64_t)offset % cs + (uint64_t)pnum;
				}
			}
		}
	}
	if (prealloc == VD_PREALLOC_FULL || prealloc == VD_PREALLOC_FALLOC)
		required = size;

	info->fully_allocated = prealloc_size(size, cs, order, extl2);
	info->required = info->fully_allocated - size + required;
	info->has_bitmaps = version >= 3 && in && qcow2_supports_bitmaps(in);
	if (info->has_bitmaps)
		info->bitmaps = qcow2_bitmaps_size(in, cs);
	return 0;
}
