/* SPDX-License-Identifier: MIT */
/*
 * qcow2 resize (QEMU 7.2's qcow2_co_truncate): growing makes the L1 table
 * big enough (a new table, exactly the size needed, switched in the header
 * with one write); shrinking discards the clusters past the new end, frees
 * the L2 tables past it, frees refcount blocks that describe nothing any
 * more and truncates the file after the last used cluster.  Version 3
 * images with internal snapshots are resized too (each snapshot keeps its
 * own L1 table and disk size), version 2 ones refused, as QEMU 7.2 does.
 * Only preallocation=off.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

static int write_at(struct qcow2_state *s, uint64_t off, const void *buf, uint64_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, (void *)buf, len);
	return vd_co_pwritev(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

static uint64_t size_to_l1(const struct qcow2_state *s, uint64_t size)
{
	uint32_t shift = s->cluster_bits + s->l2_bits;

	return (size + (1ull << shift) - 1) >> shift;
}

/* QEMU's qcow2_grow_l1_table with exact_size: new table, flushed, then the
 * header's l1_size and l1_table_offset (bytes 36..47) in one write, then the
 * old table freed. */
static int grow_l1(struct qcow2_state *s, uint64_t new_size)
{
	uint64_t bytes = new_size * 8, old_off = s->l1_offset, old_size = s->l1_size;
	uint64_t *l1;
	uint8_t *buf, hdr[12];
	int64_t off;
	int ret;

	if (new_size <= s->l1_size)
		return 0;
	if (bytes > QCOW2_MAX_L1_BYTES)
		return -EFBIG;
	l1 = calloc(new_size, sizeof(uint64_t));
	buf = calloc(1, bytes);
	if (!l1 || !buf) {
		free(l1);
		free(buf);
		return -ENOMEM;
	}
	memcpy(l1, s->l1, old_size * 8);
	for (uint64_t i = 0; i < new_size; i++)
		qcow2_put_be64(buf + 8 * i, l1[i]);
	off = qcow2_alloc_clusters(s, bytes);
	ret = off < 0 ? (int)off : qcow2_cache_flush(s, &s->rb_cache);
	if (ret == 0)
		ret = qcow2_check_overlap(s, 0, (uint64_t)off, bytes);
	vd_debug_event(s->node->file, VD_EV_L1_UPDATE);
	if (ret == 0)
		ret = write_at(s, (uint64_t)off, buf, bytes);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	free(buf);
	if (ret < 0) {
		if (off >= 0)
			qcow2_update_refcount(s, (uint64_t)off, bytes, -1);
		free(l1);
		return ret;
	}
	qcow2_put_be32(hdr, (uint32_t)new_size);
	qcow2_put_be64(hdr + 4, (uint64_t)off);
	ret = write_at(s, 36, hdr, sizeof(hdr));
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	free(s->l1);
	s->l1 = l1;
	s->l1_size = (uint32_t)new_size;
	s->l1_offset = (uint64_t)off;
	qcow2_overlap_remove(s, QCOW2_OL_ACTIVE_L1_BITNR, old_off, old_size * 8);
	qcow2_overlap_add(s, QCOW2_OL_ACTIVE_L1_BITNR, (uint64_t)off, bytes);
	return qcow2_update_refcount(s, old_off, old_size * 8, -1);
}

/* QEMU's qcow2_shrink_l1_table: L1 entries past @new_size zeroed on disk
 * first, then their L2 tables freed.  l1_size stays. */
static int shrink_l1(struct qcow2_state *s, uint64_t new_size)
{
	int ret;

	if (new_size >= s->l1_size)
		return 0;
	ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_check_overlap(s, QCOW2_OL_ACTIVE_L1, s->l1_offset + new_size * 8,
					  (s->l1_size - new_size) * 8);
	if (ret == 0)
		ret = vd_co_pwrite_zeroes(s->node->file, (int64_t)(s->l1_offset + new_size * 8),
					  (int64_t)((s->l1_size - new_size) * 8), 0);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		return ret;
	for (uint64_t i = new_size; i < s->l1_size; i++) {
		uint64_t l2 = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
		s->l1[i] = 0;
		if (!l2)
			continue;
		qcow2_cache_discard(&s->l2_cache, l2, s->cluster_size);
		qcow2_overlap_remove(s, QCOW2_OL_ACTIVE_L2_BITNR, l2, s->cluster_size);
		ret = qcow2_update_refcount(s, l2, s->cluster_size, -1);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* QEMU's qcow2_shrink_reftable: refcount blocks whose only used entry is
 * their own cluster are dropped from the table (the table written first),
 * then freed. */
static int shrink_reftable(struct qcow2_state *s)
{
	uint64_t n = s->reftable_size, per_block = 1ull << s->rb_bits;
	uint64_t *table = calloc(n ? n : 1, sizeof(uint64_t));
	uint8_t *buf = calloc(n ? n : 1, 8);
	bool *unused = calloc(n ? n : 1, sizeof(bool));
	int ret = 0;

	if (!table || !buf || !unused) {
		ret = -ENOMEM;
		goto out;
	}
	ret = qcow2_cache_flush(s, &s->rb_cache);
	for (uint64_t i = 0; ret == 0 && i < n; i++) {
		uint64_t off = s->reftable[i] & QCOW2_REFT_OFFSET_MASK;
		bool zero = true;
		void *block;

		table[i] = s->reftable[i];
		if (!off)
			continue;
		ret = qcow2_cache_get(s, &s->rb_cache, off, false, &block);
		if (ret < 0)
			break;
		for (uint64_t j = 0; j < per_block && zero; j++) {
			bool self = (off >> s->cluster_bits) == i * per_block + j;
			if (!self && qcow2_refcount_get_entry(block, s->refcount_order, j))
				zero = false;
		}
		qcow2_cache_put(&s->rb_cache, block);
		if (zero) {
			table[i] = 0;
			unused[i] = true;
		}
	}
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < n; i++)
		qcow2_put_be64(buf + 8 * i, table[i]);
	ret = qcow2_check_overlap(s, QCOW2_OL_REFCOUNT_TABLE, s->reftable_offset, n * 8);
	if (ret == 0)
		ret = write_at(s, s->reftable_offset, buf, n * 8);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		goto out;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t off = s->reftable[i] & QCOW2_REFT_OFFSET_MASK;
		if (!unused[i])
			continue;
		qcow2_cache_discard(&s->rb_cache, off, s->cluster_size);
		qcow2_overlap_remove(s, QCOW2_OL_REFCOUNT_BLOCK_BITNR, off, s->cluster_size);
		s->reftable[i] = 0;
		if ((off >> s->cluster_bits) / per_block != i) {
			/* Its refcount is in a block still in the table. */
			ret = qcow2_update_refcount(s, off, s->cluster_size, -1);
			if (ret < 0)
				break;
		}
	}
	s->free_cluster_index = 0;
out:
	free(table);
	free(buf);
	free(unused);
	return ret;
}

/* The file ends after the last cluster with a refcount. */
static int truncate_tail(struct qcow2_state *s)
{
	int64_t len = vd_node_size(s->node->file);
	uint64_t last, rc;
	int ret;

	if (len < 0)
		return (int)len;
	ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		return ret;
	last = ((uint64_t)len + s->cluster_size - 1) >> s->cluster_bits;
	while (last > 1) {
		ret = qcow2_get_refcount(s, last - 1, &rc);
		if (ret < 0)
			return ret;
		if (rc)
			break;
		last--;
	}
	if ((last << s->cluster_bits) < (uint64_t)len)
		vd_co_truncate(s->node->file, (int64_t)(last << s->cluster_bits), false,
			       VD_PREALLOC_OFF, NULL); /* not fatal (QEMU warns) */
	return 0;
}

int qcow2_truncate_locked(struct qcow2_state *s, uint64_t new_size, struct vd_error *err)
{
	uint64_t l1_needed = size_to_l1(s, new_size);
	uint8_t be[8];
	int ret;

	if (l1_needed * 8 > QCOW2_MAX_L1_BYTES)
		return vd_error_set(err, -EFBIG, "Image size too large");
	/* Version 3 snapshot table entries record their own disk size, so
	 * QEMU resizes such images; version 2 ones cannot say it. */
	if (s->nb_snapshots && s->version < 3)
		return vd_error_set(err, -ENOTSUP, "Can't resize a v2 image which has snapshots");
	ret = qcow2_mark_dirty(s);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not update the image");
	if (new_size < s->size) {
		uint64_t from = qcow2_round_up_cluster(s, new_size);
		if (from < s->size) {
			/* No request reaches past the new end: the caller drained.
			 * L2 tables shared with snapshots are copied before they
			 * change, as for any discard. */
			ret = qcow2_discard_clusters(s, from, s->size - from, true);
			if (ret < 0)
				return vd_error_setg_errno(err, ret,
							   "Failed to discard cropped clusters");
		}
		ret = shrink_l1(s, l1_needed);
		if (ret < 0)
			return vd_error_setg_errno(err, ret,
						   "Failed to reduce the number of L2 tables");
		ret = shrink_reftable(s);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Failed to discard unused refblocks");
		ret = truncate_tail(s);
	} else {
		ret = grow_l1(s, l1_needed);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Failed to grow the L1 table");
	}
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	/* qcow2.txt "Header": size (24). */
	qcow2_put_be64(be, new_size);
	if (ret == 0)
		ret = write_at(s, 24, be, 8);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to update the image size");
	s->size = new_size;
	s->node->size = (int64_t)new_size;
	return 0;
}

int qcow2_grow_l1(struct qcow2_state *s, uint64_t entries)
{
	return grow_l1(s, entries);
}

int qcow2_co_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
		      struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	int ret;

	s->data_changed = true;
	(void)exact;
	if (size < 0 || (uint64_t)size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Invalid image size");
	if (size % 512)
		return vd_error_set(err, -EINVAL, "The new size must be a multiple of 512");
	if (s->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	if (prealloc != VD_PREALLOC_OFF)
		return vd_error_set(err, -ENOTSUP, "Unsupported preallocation mode '%s'",
				    vd_prealloc_names[prealloc]);
	/* Growing over a longer backing file zeroes the new range afterwards
	 * (vd_co_truncate); version 2 has no zero flag, and QEMU 7.2 refuses
	 * rather than write the zeroes, leaving the size as it was. */
	if (s->version < 3 && n->backing && (uint64_t)size > s->size &&
	    vd_node_size(n->backing) > (int64_t)s->size)
		return vd_error_setg_errno(err, -ENOTSUP, "Failed to zero out new clusters");
	vd_co_mutex_lock(&s->lock);
	ret = qcow2_truncate_live(s, (uint64_t)size, err);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

/* With live bitmaps, as QEMU: they are resized with the image (stored,
 * resized on disk, loaded again); an inconsistent one refuses the resize. */
int qcow2_truncate_live(struct qcow2_state *s, uint64_t size, struct vd_error *err)
{
	bool live = s->bitmaps_live;
	int ret;

	qcow2_bitmaps_op_begin(s);
	ret = qcow2_bitmaps_store_live(s);
	if (ret < 0) {
		qcow2_bitmaps_op_end(s);
		return vd_error_setg_errno(err, ret, "Could not store the bitmaps");
	}
	ret = qcow2_truncate_with_bitmaps(s, size, err);
	if (live) {
		struct vd_error e2 = {0};
		int r2 = qcow2_bitmaps_load_live(s, &e2);

		if (r2 < 0 && ret == 0)
			ret = vd_error_set(err, r2, "%s", e2.msg);
	}
	qcow2_bitmaps_op_end(s);
	return ret;
}
