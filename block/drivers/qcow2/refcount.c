/* SPDX-License-Identifier: MIT */
/*
 * qcow2 refcounts (qcow2.txt "Host cluster management"): a refcount table of
 * refcount block offsets; each block is one cluster of refcount_bits-wide
 * entries, one per host cluster.  Also cluster allocation.  Callers hold
 * s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

/*
 * Entry @index of a refcount block of width 1 << @order bits.  Below 8 bits
 * the entries are packed from the least significant bit of each byte (as
 * QEMU's get_refcount_ro0..2); 8 bits and above are big-endian integers.
 */
uint64_t qcow2_refcount_get_entry(const void *block, uint32_t order, uint64_t index)
{
	const uint8_t *b = block;

	switch (order) {
	case 0:
	case 1:
	case 2: {
		uint32_t bits = 1u << order, per_byte = 8 / bits;
		return (b[index / per_byte] >> ((index % per_byte) * bits)) & ((1u << bits) - 1);
	}
	case 3:
		return b[index];
	case 4:
		return (uint64_t)b[2 * index] << 8 | b[2 * index + 1];
	case 5:
		return qcow2_be32(b + 4 * index);
	default:
		return qcow2_be64(b + 8 * index);
	}
}

void qcow2_refcount_set_entry(void *block, uint32_t order, uint64_t index, uint64_t value)
{
	uint8_t *b = block;

	switch (order) {
	case 0:
	case 1:
	case 2: {
		uint32_t bits = 1u << order, per_byte = 8 / bits;
		uint32_t shift = (uint32_t)(index % per_byte) * bits;
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
		b[index / per_byte] =
			(uint8_t)((b[index / per_byte] & ~mask) | ((value << shift) & mask));
		break;
	}
	case 3:
		b[index] = (uint8_t)value;
		break;
	case 4:
		b[2 * index] = (uint8_t)(value >> 8);
		b[2 * index + 1] = (uint8_t)value;
		break;
	case 5:
		qcow2_put_be32(b + 4 * index, (uint32_t)value);
		break;
	default:
		qcow2_put_be64(b + 8 * index, value);
		break;
	}
}

/* Load and validate the refcount table at open. */
int qcow2_load_reftable(struct qcow2_state *s, struct vd_error *err)
{
	uint64_t bytes = (uint64_t)s->reftable_clusters * s->cluster_size;
	struct vd_qiov q;
	uint8_t *buf;
	int ret;

	/* Validated by the header parser: bytes <= QCOW2_MAX_REFTABLE_BYTES. */
	s->reftable_size = bytes / 8;
	buf = malloc(bytes ? bytes : 1);
	s->reftable = calloc(s->reftable_size ? s->reftable_size : 1, sizeof(uint64_t));
	if (!buf || !s->reftable) {
		free(buf);
		return vd_error_set(err, -ENOMEM, "Could not allocate the refcount table");
	}
	if (bytes) {
		vd_qiov_init_buf(&q, buf, bytes);
		ret = vd_co_preadv(s->node->file, (int64_t)s->reftable_offset, (int64_t)bytes, &q,
				   0);
		if (ret < 0) {
			free(buf);
			return vd_error_setg_errno(err, ret, "Could not read the refcount table");
		}
	}
	for (uint64_t i = 0; i < s->reftable_size; i++)
		s->reftable[i] = qcow2_be64(buf + 8 * i);
	free(buf);
	return 0;
}

/* The host offset of refcount block @rbi; 0 if not allocated, -EIO if invalid. */
static int64_t refblock_offset(struct qcow2_state *s, uint64_t rbi)
{
	uint64_t off;

	if (rbi >= s->reftable_size)
		return 0;
	off = s->reftable[rbi] & QCOW2_REFT_OFFSET_MASK;
	if (!off)
		return 0;
	if (qcow2_offset_into_cluster(s, off) || off >= QCOW2_MAX_HOST_OFFSET)
		return -EIO;
	return (int64_t)off;
}

int qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster_index, uint64_t *refcount)
{
	uint64_t rbi = cluster_index >> s->rb_bits;
	int64_t off = refblock_offset(s, rbi);
	void *block;
	int ret;

	if (off < 0)
		return qcow2_signal_corruption(s,
					       "Refblock offset %#" PRIx64 " unaligned "
					       "(reftable index: %#" PRIx64 ")",
					       s->reftable[rbi], rbi);
	if (off == 0) {
		*refcount = 0;
		return 0;
	}
	ret = qcow2_cache_get(s, &s->rb_cache, (uint64_t)off, false, &block);
	if (ret < 0)
		return ret;
	*refcount = qcow2_refcount_get_entry(block, s->refcount_order,
					     cluster_index & ((1ull << s->rb_bits) - 1));
	qcow2_cache_put(&s->rb_cache, block);
	return 0;
}

/* First run of @n free clusters at or after cluster @start.  Returns the
 * cluster index or -errno (-EFBIG past the largest host offset). */
static int64_t find_free_run(struct qcow2_state *s, uint64_t n, uint64_t start)
{
	uint64_t idx = start, run = 0, rc;
	uint64_t limit = QCOW2_MAX_HOST_OFFSET >> s->cluster_bits;
	int ret;

	while (run < n) {
		if (idx + 1 > limit)
			return -EFBIG;
		ret = qcow2_get_refcount(s, idx, &rc);
		if (ret < 0)
			return ret;
		idx++;
		if (rc)
			run = 0;
		else
			run++;
	}
	return (int64_t)(idx - n);
}

#define MAX_NEW_BLOCKS 64

/*
 * Make refcount block @target exist.  New refcount blocks (and, when the
 * table is too small, a new table) go into one area of free clusters that
 * describes itself: the new blocks hold the refcounts of the area.  Order:
 * blocks and table written and flushed before the header or table entry
 * that points to them; the old table freed only after the header switched.
 */
static int grow_refcounts(struct qcow2_state *s, uint64_t target)
{
	struct vd_node *file = s->node->file;
	uint64_t set[MAX_NEW_BLOCKS];
	uint64_t m = 1, t = 0, nset = 0, new_entries = s->reftable_size;
	uint64_t per_block = 1ull << s->rb_bits;
	int64_t area = -1;
	uint8_t *buf = NULL;
	struct vd_qiov q;
	int ret;

	for (int iter = 0;; iter++) {
		uint64_t m2, t2, max_rb = target;

		if (iter > 16)
			return -EIO;
		area = find_free_run(s, m + t, s->free_cluster_index);
		if (area < 0)
			return (int)area;
		nset = 0;
		set[nset++] = target;
		for (uint64_t c = (uint64_t)area; c < (uint64_t)area + m + t; c++) {
			uint64_t rbi = c >> s->rb_bits;
			bool have = false;
			if (refblock_offset(s, rbi) != 0)
				continue;
			for (uint64_t j = 0; j < nset; j++)
				have |= set[j] == rbi;
			if (have)
				continue;
			if (nset == MAX_NEW_BLOCKS)
				return -EFBIG;
			set[nset++] = rbi;
			if (rbi > max_rb)
				max_rb = rbi;
		}
		m2 = nset;
		t2 = 0;
		new_entries = s->reftable_size;
		if (max_rb >= s->reftable_size) {
			new_entries = (max_rb + 1) + (max_rb + 1) / 2;
			if (new_entries * 8 > QCOW2_MAX_REFTABLE_BYTES)
				new_entries = QCOW2_MAX_REFTABLE_BYTES / 8;
			if (max_rb >= new_entries)
				return -EFBIG;
			t2 = (new_entries * 8 + s->cluster_size - 1) >> s->cluster_bits;
			new_entries = (t2 << s->cluster_bits) / 8;
		}
		if (m2 <= m && t2 <= t) {
			t = t2; /* the area may be larger than what is used */
			break;
		}
		m = m2 > m ? m2 : m;
		t = t2 > t ? t2 : t;
	}

	/* Area layout: [area, area + t) table, then the nset blocks. */
	uint64_t used = t + nset;
	qcow2_note_used(s, (uint64_t)area << s->cluster_bits, used << s->cluster_bits);
	/* Area clusters covered by existing blocks get their refcount first. */
	for (uint64_t c = (uint64_t)area; c < (uint64_t)area + used; c++) {
		if (refblock_offset(s, c >> s->rb_bits) != 0) {
			ret = qcow2_update_refcount(s, c << s->cluster_bits, s->cluster_size, 1);
			if (ret < 0)
				return ret;
		}
	}
	ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		return ret;

	buf = vd_memalign(4096, s->cluster_size);
	if (!buf)
		return -ENOMEM;
	for (uint64_t j = 0; j < nset; j++) {
		uint64_t boff = ((uint64_t)area + t + j) << s->cluster_bits;
		memset(buf, 0, s->cluster_size);
		for (uint64_t c = (uint64_t)area; c < (uint64_t)area + used; c++)
			if ((c >> s->rb_bits) == set[j])
				qcow2_refcount_set_entry(buf, s->refcount_order,
							 c & (per_block - 1), 1);
		ret = qcow2_check_overlap(s, 0, boff, s->cluster_size);
		if (ret < 0)
			goto out;
		qcow2_cache_discard(&s->rb_cache, boff, s->cluster_size);
		qcow2_cache_discard(&s->l2_cache, boff, s->cluster_size);
		vd_debug_event(file, VD_EV_REFBLOCK_ALLOC);
		vd_qiov_init_buf(&q, buf, s->cluster_size);
		ret = vd_co_pwritev(file, (int64_t)boff, (int64_t)s->cluster_size, &q, 0);
		if (ret < 0)
			goto out;
	}

	if (t > 0) {
		/* A new, bigger table. */
		uint64_t tbytes = t << s->cluster_bits;
		uint64_t toff = (uint64_t)area << s->cluster_bits;
		uint64_t old_off = s->reftable_offset, old_clusters = s->reftable_clusters;
		uint64_t *table = calloc(new_entries, sizeof(uint64_t));
		uint8_t *tbuf = vd_memalign(4096, tbytes);
		uint8_t hdr[12];

		if (!table || !tbuf) {
			free(table);
			free(tbuf);
			ret = -ENOMEM;
			goto out;
		}
		memcpy(table, s->reftable, s->reftable_size * sizeof(uint64_t));
		for (uint64_t j = 0; j < nset; j++)
			table[set[j]] = ((uint64_t)area + t + j) << s->cluster_bits;
		memset(tbuf, 0, tbytes);
		for (uint64_t i = 0; i < new_entries; i++)
			qcow2_put_be64(tbuf + 8 * i, table[i]);
		ret = qcow2_check_overlap(s, 0, toff, tbytes);
		if (ret == 0) {
			vd_debug_event(file, VD_EV_REFTABLE_UPDATE);
			vd_qiov_init_buf(&q, tbuf, tbytes);
			ret = vd_co_pwritev(file, (int64_t)toff, (int64_t)tbytes, &q, 0);
		}
		free(tbuf);
		if (ret == 0)
			ret = vd_co_flush(file);
		if (ret < 0) {
			free(table);
			goto out;
		}
		/* qcow2.txt "Header": refcount_table_offset (48) and _clusters (56). */
		qcow2_put_be64(hdr, toff);
		qcow2_put_be32(hdr + 8, (uint32_t)t);
		vd_qiov_init_buf(&q, hdr, sizeof(hdr));
		ret = vd_co_pwritev(file, 48, sizeof(hdr), &q, 0);
		if (ret == 0)
			ret = vd_co_flush(file);
		if (ret < 0) {
			free(table);
			goto out;
		}
		free(s->reftable);
		s->reftable = table;
		s->reftable_size = new_entries;
		s->reftable_offset = toff;
		s->reftable_clusters = (uint32_t)t;
		qcow2_overlap_remove(s, QCOW2_OL_REFCOUNT_TABLE_BITNR, old_off,
				     old_clusters << s->cluster_bits);
		qcow2_overlap_add(s, QCOW2_OL_REFCOUNT_TABLE_BITNR, toff, tbytes);
		for (uint64_t j = 0; j < nset; j++)
			qcow2_overlap_add(s, QCOW2_OL_REFCOUNT_BLOCK_BITNR,
					  ((uint64_t)area + t + j) << s->cluster_bits,
					  s->cluster_size);
		ret = qcow2_update_refcount(s, old_off, old_clusters << s->cluster_bits, -1);
	} else {
		ret = vd_co_flush(file);
		for (uint64_t j = 0; j < nset && ret == 0; j++) {
			uint8_t e[8];
			uint64_t boff = ((uint64_t)area + t + j) << s->cluster_bits;
			qcow2_put_be64(e, boff);
			ret = qcow2_check_overlap(s, QCOW2_OL_REFCOUNT_TABLE,
						  s->reftable_offset + set[j] * 8, 8);
			if (ret < 0)
				break;
			vd_debug_event(file, VD_EV_REFTABLE_UPDATE);
			vd_qiov_init_buf(&q, e, 8);
			ret = vd_co_pwritev(file, (int64_t)(s->reftable_offset + set[j] * 8), 8, &q,
					    0);
			if (ret == 0) {
				s->reftable[set[j]] = boff;
				qcow2_overlap_add(s, QCOW2_OL_REFCOUNT_BLOCK_BITNR, boff,
						  s->cluster_size);
			}
		}
	}
out:
	free(buf);
	return ret;
}

void qcow2_note_used(struct qcow2_state *s, uint64_t offset, uint64_t len)
{
	if (offset + len > s->fresh_from)
		s->fresh_from = offset + len;
}

int qcow2_update_refcount(struct qcow2_state *s, uint64_t offset, uint64_t len, int addend)
{
	uint64_t first, last;
	int ret;

	if (len == 0)
		return 0;
	first = offset >> s->cluster_bits;
	last = (offset + len - 1) >> s->cluster_bits;
	for (uint64_t idx = first; idx <= last; idx++) {
		uint64_t rbi = idx >> s->rb_bits, cur, val;
		int64_t boff = refblock_offset(s, rbi);
		void *block;

		if (boff < 0)
			return qcow2_signal_corruption(s,
						       "Refblock offset %#" PRIx64
						       " unaligned (reftable index: %#" PRIx64 ")",
						       s->reftable[rbi], rbi);
		if (boff == 0) {
			if (addend < 0)
				return qcow2_signal_corruption(
					s, "Freeing cluster %#" PRIx64 " without a refcount block",
					idx << s->cluster_bits);
			ret = grow_refcounts(s, rbi);
			if (ret < 0)
				return ret;
			boff = refblock_offset(s, rbi);
			if (boff <= 0)
				return -EIO;
		}
		/* A refcount table entry of a crafted image may name another
		 * table: refuse before changing it (its write-back is checked
		 * too, but other metadata would already depend on it). */
		ret = qcow2_check_overlap(s, QCOW2_OL_REFCOUNT_BLOCK, (uint64_t)boff,
					  s->cluster_size);
		if (ret < 0)
			return ret;
		ret = qcow2_cache_get(s, &s->rb_cache, (uint64_t)boff, false, &block);
		if (ret < 0)
			return ret;
		cur = qcow2_refcount_get_entry(block, s->refcount_order,
					       idx & ((1ull << s->rb_bits) - 1));
		if (addend > 0 && cur >= s->refcount_max) {
			qcow2_cache_put(&s->rb_cache, block);
			return -ERANGE;
		}
		if (addend < 0 && cur == 0) {
			qcow2_cache_put(&s->rb_cache, block);
			return qcow2_signal_corruption(s, "Refcount underflow at cluster %#" PRIx64,
						       idx << s->cluster_bits);
		}
		val = addend > 0 ? cur + 1 : cur - 1;
		if (cur == 0)
			qcow2_note_used(s, idx << s->cluster_bits, s->cluster_size);
		qcow2_refcount_set_entry(block, s->refcount_order, idx & ((1ull << s->rb_bits) - 1),
					 val);
		qcow2_cache_mark_dirty(&s->rb_cache, block);
		qcow2_cache_put(&s->rb_cache, block);
		if (val == 0) {
			uint64_t off = idx << s->cluster_bits;
			if (idx < s->free_cluster_index)
				s->free_cluster_index = idx;
			/* The cluster that compressed writes were filling is free
			 * and may come back as anything: stop appending to it.
			 * (QEMU 7.2's qcow2_alloc_bytes() lacks this and puts
			 * compressed bytes into a data cluster then.) */
			if (s->free_byte_offset && s->free_byte_offset >> s->cluster_bits == idx)
				s->free_byte_offset = 0;
			qcow2_cache_discard(&s->l2_cache, off, s->cluster_size);
			qcow2_cache_discard(&s->rb_cache, off, s->cluster_size);
		}
	}
	return 0;
}

int64_t qcow2_alloc_clusters(struct qcow2_state *s, uint64_t size)
{
	uint64_t n = (size + s->cluster_size - 1) >> s->cluster_bits;
	int64_t idx;
	int ret;

	vd_debug_event(s->node->file, VD_EV_CLUSTER_ALLOC);
	idx = find_free_run(s, n, s->free_cluster_index);
	if (idx < 0)
		return idx;
	/* Skip a leading run of used clusters next time. */
	if ((uint64_t)idx == s->free_cluster_index)
		s->free_cluster_index = (uint64_t)idx + n;
	else if (s->free_cluster_index < (uint64_t)idx + n)
		s->free_cluster_index = (uint64_t)idx + n;
	ret = qcow2_update_refcount(s, (uint64_t)idx << s->cluster_bits, n << s->cluster_bits, 1);
	if (ret < 0)
		return ret;
	return idx << s->cluster_bits;
}

int qcow2_free_l2_entry(struct qcow2_state *s, uint64_t entry)
{
	uint64_t off, len;
	int ret;

	if (entry & QCOW2_OFLAG_COMPRESSED) {
		uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
		off = entry & s->coffset_mask;
		len = sectors * 512 - (off & 511);
	} else if (entry & QCOW2_L2E_OFFSET_MASK) {
		off = entry & QCOW2_L2E_OFFSET_MASK;
		len = s->cluster_size;
	} else {
		return 0;
	}
	/* Callers check first (qcow2_check_free_l2_entry), before they change
	 * anything; this is the last line. */
	ret = qcow2_check_free_overlap(s, off, len);
	if (ret < 0)
		return ret;
	return qcow2_update_refcount(s, off, len, -1);
}

int qcow2_check_free_l2_entry(struct qcow2_state *s, uint64_t entry)
{
	if (entry & QCOW2_OFLAG_COMPRESSED) {
		uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
		uint64_t off = entry & s->coffset_mask;
		return qcow2_check_free_overlap(s, off, sectors * 512 - (off & 511));
	}
	if (entry & QCOW2_L2E_OFFSET_MASK)
		return qcow2_check_free_overlap(s, entry & QCOW2_L2E_OFFSET_MASK, s->cluster_size);
	return 0;
}
