/* SPDX-License-Identifier: MIT */
/*
 * qemu-img amend for qcow2: change what the creation options decided on an
 * existing image.  The steps and their order are QEMU 7.2's (the facts of
 * its qcow2_amend_options), so that the same command line fails or succeeds
 * the same way and leaves an image qemu-img reads as it would have left it:
 *
 *   1. upgrade compat=0.10 -> 1.1 first (the other changes may need v3);
 *   2. a new refcount width: a new refcount structure (check.c);
 *   3. backing_file/backing_fmt: only the ones the image already names
 *      (anything else is refused: that is what rebase is for);
 *   4. lazy_refcounts on/off (off leaves the image clean first);
 *   5. size: an exact resize;
 *   6. downgrade 1.1 -> 0.10 last: refused while v3-only features are in
 *      use (other refcount widths, extended L2 entries, an external data
 *      file, snapshots of another size, zstd-compressed clusters); zero
 *      clusters become data or unallocated clusters; the extensions v2
 *      readers do not know (feature table, bitmaps) are dropped.
 *
 * The header is rewritten whole (one write of cluster 0) from the state.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

/* qcow2.txt "Feature name table", as QEMU writes it. */
static const struct {
	uint8_t type, bit;
	const char *name;
} feature_names[] = {
	{0, 0, "dirty bit"},	    {0, 1, "corrupt bit"},	   {0, 2, "external data file"},
	{0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
	{2, 0, "bitmaps"},	    {2, 1, "raw external data"},
};

static bool put_ext(uint8_t *h, size_t cs, size_t *off, uint32_t type, const void *data,
		    uint32_t len)
{
	size_t need = 8 + (((size_t)len + 7) & ~(size_t)7);

	if (*off + need > cs)
		return false;
	qcow2_put_be32(h + *off, type);
	qcow2_put_be32(h + *off + 4, len);
	if (len)
		memcpy(h + *off + 8, data, len);
	*off += need;
	return true;
}

/* Rewrite cluster 0 from the state (QEMU's qcow2_update_header). */
int qcow2_write_header(struct qcow2_state *s, struct vd_error *err)
{
	size_t cs = s->cluster_size, off, name_len = 0;
	uint8_t *h = vd_memalign(4096, cs);
	struct vd_qiov q;
	int ret;

	if (!h)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	memset(h, 0, cs);
	qcow2_put_be32(h, QCOW2_MAGIC);
	qcow2_put_be32(h + 4, s->version);
	qcow2_put_be32(h + 20, s->cluster_bits);
	qcow2_put_be64(h + 24, s->size);
	qcow2_put_be32(h + 32, s->crypt_method);
	qcow2_put_be32(h + 36, s->l1_size);
	qcow2_put_be64(h + 40, s->l1_offset);
	qcow2_put_be64(h + 48, s->reftable_offset);
	qcow2_put_be32(h + 56, s->reftable_clusters);
	qcow2_put_be32(h + 60, s->nb_snapshots);
	qcow2_put_be64(h + 64, s->snapshots_offset);
	if (s->version >= 3) {
		qcow2_put_be64(h + 72, s->incompat);
		qcow2_put_be64(h + 80, s->compat);
		qcow2_put_be64(h + 88, s->autoclear);
		qcow2_put_be32(h + 96, s->refcount_order);
		qcow2_put_be32(h + 100, 112);
		h[104] = s->compression_type;
		off = 112;
	} else {
		off = 72;
	}
	/* Extensions in QEMU's order: backing format, data file, feature
	 * table, then the ones kept verbatim (bitmaps, unknown). */
	if (s->backing_file && s->backing_fmt &&
	    !put_ext(h, cs, &off, QCOW2_EXT_BACKING_FORMAT, s->backing_fmt,
		     (uint32_t)strlen(s->backing_fmt)))
		goto too_big;
	if (s->data_file && !put_ext(h, cs, &off, QCOW2_EXT_DATA_FILE, s->data_file,
				     (uint32_t)strlen(s->data_file)))
		goto too_big;
	if (s->version >= 3 && cs > 4096) {
		uint8_t table[sizeof(feature_names) / sizeof(feature_names[0]) * 48];

		memset(table, 0, sizeof(table));
		for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++) {
			table[48 * i] = feature_names[i].type;
			table[48 * i + 1] = feature_names[i].bit;
			strncpy((char *)table + 48 * i + 2, feature_names[i].name, 46);
		}
		if (!put_ext(h, cs, &off, QCOW2_EXT_FEATURE_TABLE, table, sizeof(table)))
			goto too_big;
	}
	for (struct qcow2_ext *e = s->unknown_exts; e; e = e->next) {
		/* v2 readers know no bitmaps: the downgrade drops them. */
		if (s->version < 3 && e->type == QCOW2_EXT_BITMAPS)
			continue;
		if (!put_ext(h, cs, &off, e->type, e->data, e->len))
			goto too_big;
	}
	if (!put_ext(h, cs, &off, QCOW2_EXT_END, NULL, 0))
		goto too_big;
	if (s->backing_file) {
		name_len = strlen(s->backing_file);
		if (off + name_len > cs)
			goto too_big;
		memcpy(h + off, s->backing_file, name_len);
		qcow2_put_be64(h + 8, off);
		qcow2_put_be32(h + 16, (uint32_t)name_len);
	}
	ret = qcow2_check_overlap(s, QCOW2_OL_MAIN_HEADER, 0, cs);
	if (ret == 0) {
		vd_qiov_init_buf(&q, h, cs);
		ret = vd_co_pwritev(s->node->file, 0, (int64_t)cs, &q, 0);
	}
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	free(h);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to update the image header");
	s->header_length = s->version >= 3 ? 112 : 72;
	s->backing_file_offset = s->backing_file ? off : 0;
	s->backing_file_size = (uint32_t)name_len;
	return 0;
too_big:
	free(h);
	return vd_error_set(err, -ENOSPC,
			    "Failed to update the image header: it does not fit "
			    "in the first cluster");
}

static int pread_file(struct qcow2_state *s, uint64_t off, void *buf, uint64_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, buf, len);
	return vd_co_preadv(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

/* Does any L2 table of the L1 table at @l1_offset hold a zero cluster?
 * (Snapshot tables: vdisk does not rewrite them; the downgrade refuses.) */
static int snapshot_has_zero_clusters(struct qcow2_state *s, uint64_t l1_offset, uint32_t l1_size,
				      uint64_t file_len, uint8_t *l2buf)
{
	uint64_t *l1;
	int ret = 0;

	if (!l1_size)
		return 0;
	if (l1_size > QCOW2_MAX_L1_BYTES / 8 || l1_offset & (s->cluster_size - 1) ||
	    l1_offset + (uint64_t)l1_size * 8 > file_len)
		return -EIO;
	l1 = malloc((size_t)l1_size * 8);
	if (!l1)
		return -ENOMEM;
	ret = pread_file(s, l1_offset, l1, (uint64_t)l1_size * 8);
	for (uint32_t i = 0; ret == 0 && i < l1_size; i++) {
		uint64_t l2 = qcow2_be64(&l1[i]) & QCOW2_L1E_OFFSET_MASK;

		if (!l2)
			continue;
		if (l2 & (s->cluster_size - 1) || l2 + s->cluster_size > file_len) {
			ret = -EIO;
			break;
		}
		ret = pread_file(s, l2, l2buf, s->cluster_size);
		for (uint64_t j = 0; ret == 0 && j < s->l2_entries; j++) {
			uint64_t e = qcow2_be64(l2buf + j * s->l2_entry_bytes);

			if (!(e & QCOW2_OFLAG_COMPRESSED) && (e & QCOW2_OFLAG_ZERO))
				ret = 1;
		}
		if (ret == 1)
			break;
	}
	free(l1);
	return ret;
}

/*
 * Turn the zero clusters of the active tables into what a v2 reader sees as
 * zeroes (QEMU's qcow2_expand_zero_clusters): an unallocated one without a
 * backing file becomes unallocated; with a backing file it gets a cluster
 * of zeroes; a preallocated one gets its cluster zeroed and keeps it.  The
 * data is written and flushed before the L2 entry that points to it.
 */
static int expand_zero_clusters(struct qcow2_state *s, struct vd_error *err)
{
	uint64_t cs = s->cluster_size, l2_span = s->l2_entries * cs;
	bool backing = s->backing_file != NULL;
	int ret = 0;

	for (uint64_t off = 0; off < s->size; off += cs) {
		uint64_t l1i = off / l2_span, i, entry, host;
		void *slice;

		if (l1i >= s->l1_size)
			break;
		if (!(s->l1[l1i] & QCOW2_L1E_OFFSET_MASK)) {
			off = (l1i + 1) * l2_span - cs;
			continue;
		}
		ret = qcow2_get_l2_slice(s, off, false, &slice, &i);
		if (ret < 0)
			goto fail;
		if (!slice)
			continue;
		entry = qcow2_l2_entry(s, slice, i);
		if ((entry & QCOW2_OFLAG_COMPRESSED) || !(entry & QCOW2_OFLAG_ZERO)) {
			qcow2_cache_put(&s->l2_cache, slice);
			continue;
		}
		host = entry & QCOW2_L2E_OFFSET_MASK;
		if (!host && !backing) {
			qcow2_set_l2_entry(s, slice, i, 0);
			qcow2_cache_mark_dirty(&s->l2_cache, slice);
			qcow2_cache_put(&s->l2_cache, slice);
			continue;
		}
		qcow2_cache_put(&s->l2_cache, slice);
		if (!host) {
			int64_t a = qcow2_alloc_clusters(s, cs);

			if (a < 0) {
				ret = (int)a;
				goto fail;
			}
			host = (uint64_t)a;
			entry = host | QCOW2_OFLAG_COPIED;
		} else {
			entry &= ~QCOW2_OFLAG_ZERO;
		}
		ret = qcow2_check_overlap(s, 0, host, cs);
		if (ret == 0)
			ret = vd_co_pwrite_zeroes(s->node->file, (int64_t)host, (int64_t)cs, 0);
		if (ret == 0)
			ret = vd_co_flush(s->node->file);
		if (ret == 0)
			ret = qcow2_get_l2_slice(s, off, false, &slice, &i);
		if (ret < 0)
			goto fail;
		if (!slice) {
			ret = -EIO;
			goto fail;
		}
		qcow2_set_l2_entry(s, slice, i, entry);
		qcow2_cache_mark_dirty(&s->l2_cache, slice);
		qcow2_cache_put(&s->l2_cache, slice);
	}
	ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		return 0;
fail:
	return vd_error_setg_errno(err, ret, "Failed to turn zero into data clusters");
}

/*
 * Is a zero cluster of the active tables shared with a snapshot: in an L2
 * table the snapshot shares (L1 entry without COPIED), or keeping a host
 * cluster the snapshot still reads (L2 entry without COPIED)?  Expanding it
 * in place would change the snapshot's data (QEMU 7.2 does, and loses it).
 */
static bool active_zero_shared(struct qcow2_state *s, int *ret)
{
	uint64_t cs = s->cluster_size, l2_span = s->l2_entries * cs;

	*ret = 0;
	for (uint64_t off = 0; off < s->size; off += cs) {
		uint64_t l1i = off / l2_span, i, e;
		void *slice;

		if (l1i >= s->l1_size)
			break;
		if (!(s->l1[l1i] & QCOW2_L1E_OFFSET_MASK)) {
			off = (l1i + 1) * l2_span - cs;
			continue;
		}
		*ret = qcow2_get_l2_slice(s, off, false, &slice, &i);
		if (*ret < 0)
			return false;
		if (!slice)
			continue;
		e = qcow2_l2_entry(s, slice, i);
		qcow2_cache_put(&s->l2_cache, slice);
		if (!(e & QCOW2_OFLAG_ZERO) || (e & QCOW2_OFLAG_COMPRESSED))
			continue;
		if (!(s->l1[l1i] & QCOW2_OFLAG_COPIED) ||
		    ((e & QCOW2_L2E_OFFSET_MASK) && !(e & QCOW2_OFLAG_COPIED)))
			return true;
	}
	return false;
}

static bool has_compressed_clusters(struct qcow2_state *s, int *ret)
{
	uint64_t cs = s->cluster_size, l2_span = s->l2_entries * cs;

	*ret = 0;
	for (uint64_t off = 0; off < s->size; off += cs) {
		uint64_t l1i = off / l2_span, i;
		void *slice;
		bool comp;

		if (l1i >= s->l1_size)
			break;
		if (!(s->l1[l1i] & QCOW2_L1E_OFFSET_MASK)) {
			off = (l1i + 1) * l2_span - cs;
			continue;
		}
		*ret = qcow2_get_l2_slice(s, off, false, &slice, &i);
		if (*ret < 0)
			return false;
		if (!slice)
			continue;
		comp = (qcow2_l2_entry(s, slice, i) & QCOW2_OFLAG_COMPRESSED) != 0;
		qcow2_cache_put(&s->l2_cache, slice);
		if (comp)
			return true;
	}
	return false;
}

static int downgrade(struct qcow2_state *s, struct vd_error *err)
{
	struct qcow2_snapshot *sn = NULL;
	uint64_t sn_bytes, file_len;
	uint8_t *l2buf = NULL;
	int64_t len;
	int ret;

	if (s->refcount_order != 4)
		return vd_error_set(err, -ENOTSUP, "compat=0.10 requires refcount_bits=16");
	if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
		return vd_error_set(err, -ENOTSUP, "Cannot downgrade an image with a data file");
	ret = qcow2_read_snapshots(s, &sn, &sn_bytes, err);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		if (sn[i].vm_state_size > UINT32_MAX || sn[i].disk_size != s->size) {
			ret = vd_error_set(err, -ENOTSUP,
					   "Internal snapshots prevent downgrade of image");
			goto out;
		}
	}
	/* Our refcounts are always exact: clearing the dirty bit is all
	 * QEMU's qcow2_mark_clean has to do here. */
	if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
		ret = qcow2_write_incompat(s, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Failed to make the image clean");
			goto out;
		}
		s->dirty_marked = false;
	}
	if (s->incompat & ~QCOW2_INCOMPAT_COMPRESSION) {
		ret = vd_error_set(err, -ENOTSUP,
				   "Cannot downgrade an image with incompatible features 0x%" PRIx64
				   " set",
				   (uint64_t)(s->incompat & ~QCOW2_INCOMPAT_COMPRESSION));
		goto out;
	}
	len = vd_node_size(s->node->file);
	file_len = len > 0 ? (uint64_t)len : 0;
	l2buf = malloc(s->cluster_size);
	if (!l2buf) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		ret = snapshot_has_zero_clusters(s, sn[i].l1_offset, sn[i].l1_size, file_len,
						 l2buf);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Failed to read the tables of snapshot %s",
					    sn[i].id);
			goto out;
		}
		if (ret) {
			ret = vd_error_set(err, -ENOTSUP,
					   "Cannot downgrade: snapshot %s has zero clusters, which "
					   "vdisk does not expand in snapshots",
					   sn[i].id);
			goto out;
		}
	}
	if (active_zero_shared(s, &ret)) {
		ret = vd_error_set(err, -ENOTSUP,
				   "Cannot downgrade: a zero cluster is shared with an internal "
				   "snapshot, whose data expanding it would change");
		goto out;
	}
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Failed to read the L2 tables");
		goto out;
	}
	s->compat = 0;
	s->autoclear = 0;
	ret = expand_zero_clusters(s, err);
	if (ret < 0)
		goto out;
	if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
		bool comp = has_compressed_clusters(s, &ret);

		if (ret < 0) {
			ret = vd_error_set(err, -EINVAL, "Failed to check block status");
			goto out;
		}
		if (comp) {
			ret = vd_error_set(err, -ENOTSUP,
					   "Cannot downgrade an image with zstd compression type "
					   "and existing compressed clusters");
			goto out;
		}
		s->incompat &= ~QCOW2_INCOMPAT_COMPRESSION;
		s->compression_type = QCOW2_COMPRESSION_ZLIB;
	}
	s->version = 2;
	ret = qcow2_write_header(s, err);
	if (ret < 0)
		s->version = 3;
out:
	free(l2buf);
	qcow2_free_snapshots(sn, s->nb_snapshots);
	return ret;
}

static int upgrade(struct qcow2_state *s, struct vd_error *err)
{
	struct qcow2_snapshot *sn = NULL;
	uint64_t sn_bytes;
	int ret = qcow2_read_snapshots(s, &sn, &sn_bytes, err);

	if (ret < 0)
		return ret;
	/* v3 snapshot entries carry the large VM state size and the disk size
	 * (16 bytes of extra data); QEMU and vdisk write them so in v2 too. */
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		if (sn[i].extra_size < 16) {
			ret = vd_error_set(err, -ENOTSUP,
					   "Failed to update the snapshot table: snapshot %s has "
					   "no v3 extra data (vdisk does not rewrite it)",
					   sn[i].id);
			break;
		}
	}
	qcow2_free_snapshots(sn, s->nb_snapshots);
	if (ret < 0)
		return ret;
	s->version = 3;
	ret = qcow2_write_header(s, err);
	if (ret < 0)
		s->version = 2;
	return ret;
}

static bool str_differs(const char *a, const char *b)
{
	if (!a || !b)
		return a != b;
	return strcmp(a, b) != 0;
}

int qcow2_co_amend(struct vd_node *n, struct vd_opts *opts, bool force, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	uint32_t old_version = s->version, new_version = old_version;
	uint64_t new_size = 0, refcount_bits = s->refcount_bits;
	bool lazy = (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0, new_lazy = lazy;
	const char *compat, *backing_file = NULL, *backing_fmt = NULL;
	bool has_backing_opt = false;
	int ret;

	(void)force;
	if (s->read_only)
		return vd_error_set(err, -EROFS, "The image is open read-only");

	/* The options, in the order of QEMU's amend option list. */
	if (vd_opts_has(opts, "size")) {
		ret = vd_opts_get_size(opts, "size", 0, &new_size, err);
		if (ret < 0)
			return ret;
	}
	compat = vd_opts_get(opts, "compat");
	if (compat) {
		if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
			new_version = 2;
		else if (!strcmp(compat, "1.1") || !strcmp(compat, "v3"))
			new_version = 3;
		else
			return vd_error_set(err, -EINVAL, "Unknown compatibility level %s", compat);
	}
	if (vd_opts_has(opts, "backing_file")) {
		backing_file = vd_opts_get(opts, "backing_file");
		has_backing_opt = true;
	}
	if (vd_opts_has(opts, "backing_fmt")) {
		backing_fmt = vd_opts_get(opts, "backing_fmt");
		has_backing_opt = true;
	}
	if (vd_opts_has(opts, "data_file")) {
		const char *v = vd_opts_get(opts, "data_file");

		if (v && !s->data_file)
			return vd_error_set(err, -EINVAL,
					    "data-file can only be set for images that use an "
					    "external data file");
		if (v && str_differs(v, s->data_file))
			return vd_error_set(err, -ENOTSUP,
					    "Changing the external data file is not supported by "
					    "vdisk");
	}
	if (vd_opts_has(opts, "data_file_raw")) {
		bool raw;

		ret = vd_opts_get_bool(opts, "data_file_raw", false, &raw, err);
		if (ret < 0)
			return ret;
		if (raw != ((s->autoclear & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0))
			return vd_error_set(err, -EINVAL,
					    "data-file-raw cannot be set on existing images");
	}
	if (vd_opts_has(opts, "lazy_refcounts")) {
		ret = vd_opts_get_bool(opts, "lazy_refcounts", lazy, &new_lazy, err);
		if (ret < 0)
			return ret;
	}
	if (vd_opts_has(opts, "refcount_bits")) {
		ret = vd_opts_get_u64(opts, "refcount_bits", refcount_bits, &refcount_bits, err);
		if (ret < 0 || refcount_bits == 0 || refcount_bits > 64 ||
		    (refcount_bits & (refcount_bits - 1)))
			return vd_error_set(err, -EINVAL,
					    "Refcount width must be a power of two and may not "
					    "exceed 64 bits");
	}
	for (int iter = 0;;) {
		const char *key, *value;
		const struct vd_opts *dict;

		if (!vd_opts_next(opts, &iter, &key, &value, &dict))
			break;
		if (!strcmp(key, "encrypt"))
			return vd_error_set(err, -EINVAL,
					    "Can't amend encryption options - encryption not "
					    "present");
	}
	ret = vd_opts_check_unused(opts, NULL, err);
	if (ret < 0)
		return ret;

	vd_co_mutex_lock(&s->lock);
	/* The bitmaps stay valid through amend (their clusters are counted by
	 * a refcount width change; a resize resizes them). */
	ret = qcow2_bitmaps_revalidate(s);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Failed to update the image header");
		goto out;
	}
	if (new_version > old_version) {
		ret = upgrade(s, err);
		if (ret < 0)
			goto out;
	}
	if (refcount_bits != s->refcount_bits) {
		uint32_t order = 0;

		if (new_version < 3 && refcount_bits != 16) {
			ret = vd_error_set(err, -EINVAL,
					   "Refcount widths other than 16 bits require "
					   "compatibility level 1.1 or above (use compat=1.1 or "
					   "greater)");
			goto out;
		}
		while ((1ull << order) < refcount_bits)
			order++;
		ret = qcow2_change_refcount_order(s, order, err);
		if (ret < 0)
			goto out;
	}
	if (has_backing_opt && (str_differs(backing_file, s->backing_file) ||
				str_differs(backing_fmt, s->backing_fmt))) {
		ret = vd_error_set(err, -EINVAL,
				   "Cannot amend the backing file\n"
				   "You can use 'qemu-img rebase' instead.");
		goto out;
	}
	if (new_lazy != lazy) {
		if (new_lazy) {
			if (new_version < 3) {
				ret = vd_error_set(err, -EINVAL,
						   "Lazy refcounts only supported with "
						   "compatibility level 1.1 and above (use "
						   "compat=1.1 or greater)");
				goto out;
			}
			s->compat |= QCOW2_COMPAT_LAZY_REFCOUNTS;
		} else {
			if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
				ret = qcow2_write_incompat(s, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
				if (ret < 0) {
					vd_error_setg_errno(err, ret,
							    "Failed to make the image clean");
					goto out;
				}
				s->dirty_marked = false;
			}
			s->compat &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
		}
		ret = qcow2_write_header(s, err);
		if (ret < 0) {
			s->compat ^= QCOW2_COMPAT_LAZY_REFCOUNTS;
			goto out;
		}
	}
	if (new_size) {
		/* The bitmaps are resized with the image. */
		ret = qcow2_truncate_live(s, new_size, err);
		s->data_changed = true;
		if (ret < 0)
			goto out;
		n->size = (int64_t)s->size;
	}
	if (new_version < old_version) {
		ret = downgrade(s, err);
		if (ret < 0)
			goto out;
		qcow2_bitmaps_free_live(s); /* dropped with the extension */
	}
	ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		vd_error_setg_errno(err, ret, "Failed to flush the metadata");
out:
	vd_co_mutex_unlock(&s->lock);
	return ret;
}
