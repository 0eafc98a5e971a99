/* SPDX-License-Identifier: MIT */
/*
 * qcow2 cluster mapping (qcow2.txt "Cluster mapping", "Extended L2
 * Entries"): guest offset -> L1 entry -> L2 table (cached in slices) ->
 * host cluster, allocation of L2 tables, and the L2 updates of discard and
 * write-zeroes.  Callers hold s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

#define BITMAP_ALL_ALLOC 0xffffffffull
#define BITMAP_ALL_ZERO 0xffffffff00000000ull

uint64_t qcow2_l2_entry(const struct qcow2_state *s, const void *slice, uint64_t i)
{
	return qcow2_be64((const uint8_t *)slice + i * s->l2_entry_bytes);
}

uint64_t qcow2_l2_bitmap(const struct qcow2_state *s, const void *slice, uint64_t i)
{
	if (!s->extl2)
		return 0;
	return qcow2_be64((const uint8_t *)slice + i * s->l2_entry_bytes + 8);
}

void qcow2_set_l2_entry(struct qcow2_state *s, void *slice, uint64_t i, uint64_t entry)
{
	qcow2_put_be64((uint8_t *)slice + i * s->l2_entry_bytes, entry);
}

void qcow2_set_l2_bitmap(struct qcow2_state *s, void *slice, uint64_t i, uint64_t bitmap)
{
	if (s->extl2)
		qcow2_put_be64((uint8_t *)slice + i * s->l2_entry_bytes + 8, bitmap);
}

/* Type of subcluster @sc of a cluster described by @entry/@bitmap. */
enum qcow2_sc_type qcow2_sc_type(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
				 unsigned sc)
{
	uint64_t off = entry & QCOW2_L2E_OFFSET_MASK;

	if (entry & QCOW2_OFLAG_COMPRESSED)
		return QCOW2_SC_COMPRESSED;
	if (off && qcow2_offset_into_cluster(s, off))
		return QCOW2_SC_INVALID;
	if (!s->extl2) {
		if (entry & QCOW2_OFLAG_ZERO)
			return QCOW2_SC_ZERO;
		return off ? QCOW2_SC_NORMAL : QCOW2_SC_UNALLOCATED;
	}
	/* qcow2.txt "Extended L2 Entries": bits 0-31 allocated, 32-63 zero. */
	bool alloc = (bitmap >> sc) & 1, zero = (bitmap >> (32 + sc)) & 1;
	if (alloc && zero)
		return QCOW2_SC_INVALID;
	if (zero)
		return QCOW2_SC_ZERO;
	if (alloc)
		return off ? QCOW2_SC_NORMAL : QCOW2_SC_INVALID;
	return QCOW2_SC_UNALLOCATED;
}

/* The L2 table offset in L1 entry @l1i: 0 when none, -EIO when corrupt. */
static int64_t l2_table_offset(struct qcow2_state *s, uint64_t l1i)
{
	uint64_t off = s->l1[l1i] & QCOW2_L1E_OFFSET_MASK;

	if (off && qcow2_offset_into_cluster(s, off))
		return qcow2_signal_corruption(
			s, "L2 table offset %#" PRIx64 " unaligned (L1 index: %#" PRIx64 ")", off,
			l1i);
	if (off && off < s->cluster_size)
		return qcow2_signal_corruption(s,
					       "L2 table at offset %#" PRIx64
					       " overlaps the header (L1 index: %#" PRIx64 ")",
					       off, l1i);
	return (int64_t)off;
}

static int write_l1_entry(struct qcow2_state *s, uint64_t l1i, uint64_t entry)
{
	uint8_t buf[8];
	struct vd_qiov q;
	int ret;

	ret = qcow2_check_overlap(s, QCOW2_OL_ACTIVE_L1, s->l1_offset + l1i * 8, 8);
	if (ret < 0)
		return ret;
	qcow2_put_be64(buf, entry);
	vd_debug_event(s->node->file, VD_EV_L1_UPDATE);
	vd_qiov_init_buf(&q, buf, 8);
	return vd_co_pwritev(s->node->file, (int64_t)(s->l1_offset + l1i * 8), 8, &q, 0);
}

/*
 * Allocate an L2 table for L1 index @l1i (copying a shared one).  Order:
 * refcount on disk, then the table, then the L1 entry (QEMU's l2_allocate).
 */
static int alloc_l2_table(struct qcow2_state *s, uint64_t l1i)
{
	struct vd_node *file = s->node->file;
	uint64_t old = s->l1[l1i] & QCOW2_L1E_OFFSET_MASK;
	int64_t new;
	int ret;

	new = qcow2_alloc_clusters(s, s->cluster_size);
	if (new < 0)
		return (int)new;
	/* Checked before the new refcount reaches the disk: a refused
	 * allocation leaves the file as it was. */
	ret = qcow2_check_overlap(s, 0, (uint64_t) new, s->cluster_size);
	if (ret < 0)
		goto fail;
	ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		goto fail;
	vd_debug_event(file, VD_EV_L2_ALLOC_WRITE);
	if (old) {
		/* A table shared with a snapshot: copy it (its current content
		 * may be in the cache). */
		uint8_t *buf = vd_memalign(4096, s->cluster_size);
		struct vd_qiov q;
		if (!buf) {
			ret = -ENOMEM;
			goto fail;
		}
		ret = qcow2_cache_write_back(s, &s->l2_cache);
		vd_qiov_init_buf(&q, buf, s->cluster_size);
		if (ret == 0)
			ret = vd_co_preadv(file, (int64_t)old, (int64_t)s->cluster_size, &q, 0);
		if (ret == 0)
			ret = vd_co_pwritev(file, new, (int64_t)s->cluster_size, &q, 0);
		free(buf);
	} else {
		ret = vd_co_pwrite_zeroes(file, new, (int64_t)s->cluster_size, 0);
	}
	if (ret == 0)
		ret = vd_co_flush(file);
	if (ret < 0)
		goto fail;
	qcow2_cache_discard(&s->l2_cache, (uint64_t) new, s->cluster_size);
	ret = write_l1_entry(s, l1i, (uint64_t) new | QCOW2_OFLAG_COPIED);
	if (ret < 0)
		goto fail;
	s->l1[l1i] = (uint64_t) new | QCOW2_OFLAG_COPIED;
	qcow2_overlap_add(s, QCOW2_OL_ACTIVE_L2_BITNR, (uint64_t) new, s->cluster_size);
	if (old) {
		/* Still an L2 table of the snapshots that share it (inactive
		 * L2, indexed apart), no longer one of the active L1. */
		qcow2_overlap_remove(s, QCOW2_OL_ACTIVE_L2_BITNR, old, s->cluster_size);
		/* The L1 write must reach the disk before the refcount drop. */
		qcow2_cache_depends_on_flush(&s->rb_cache);
		ret = qcow2_update_refcount(s, old, s->cluster_size, -1);
	}
	return ret;
fail:
	qcow2_update_refcount(s, (uint64_t) new, s->cluster_size, -1);
	return ret;
}

int qcow2_get_l2_slice(struct qcow2_state *s, uint64_t offset, bool alloc, void **slice,
		       uint64_t *index)
{
	uint64_t cluster = offset >> s->cluster_bits;
	uint64_t l1i = cluster >> s->l2_bits;
	uint64_t l2i = cluster & (s->l2_entries - 1);
	uint64_t slice_start = l2i & ~(s->l2_slice_entries - 1);
	int64_t l2off;
	int ret;

	*slice = NULL;
	if (l1i >= s->l1_size) {
		/* The header check guarantees that the active L1 covers the
		 * disk; a snapshot's may be shorter (taken before a resize):
		 * past its end nothing is allocated, as in QEMU. */
		return s->tmp_snapshot && !alloc ? 0 : -EIO;
	}
	l2off = l2_table_offset(s, l1i);
	if (l2off < 0)
		return (int)l2off;
	if (alloc && (!l2off || !(s->l1[l1i] & QCOW2_OFLAG_COPIED))) {
		ret = alloc_l2_table(s, l1i);
		if (ret < 0)
			return ret;
		l2off = (int64_t)(s->l1[l1i] & QCOW2_L1E_OFFSET_MASK);
	} else if (alloc) {
		/* The caller is about to change this table: refuse now, before
		 * anything is allocated for it, if an L1 entry of a crafted
		 * image made another table (or the header) its L2 table. */
		ret = qcow2_check_overlap(s, QCOW2_OL_ACTIVE_L2, (uint64_t)l2off, s->cluster_size);
		if (ret < 0)
			return ret;
	}
	if (!l2off)
		return 0;
	ret = qcow2_cache_get(s, &s->l2_cache, (uint64_t)l2off + slice_start * s->l2_entry_bytes,
			      false, slice);
	if (ret < 0)
		return ret;
	*index = l2i - slice_start;
	return 0;
}

int qcow2_get_mapping(struct qcow2_state *s, uint64_t offset, uint64_t bytes, struct qcow2_map *m)
{
	uint64_t slice_bytes = s->l2_slice_entries << s->cluster_bits;
	uint64_t to_slice_end = slice_bytes - (offset & (slice_bytes - 1));
	uint64_t i, pos, end, entry, bitmap;
	unsigned sc;
	void *slice;
	int ret;

	if (bytes > to_slice_end)
		bytes = to_slice_end;
	memset(m, 0, sizeof(*m));
	ret = qcow2_get_l2_slice(s, offset, false, &slice, &i);
	if (ret < 0)
		return ret;
	if (!slice) {
		m->type = QCOW2_SC_UNALLOCATED;
		m->bytes = bytes;
		return 0;
	}
	entry = qcow2_l2_entry(s, slice, i);
	bitmap = qcow2_l2_bitmap(s, slice, i);
	sc = (unsigned)(qcow2_offset_into_cluster(s, offset) >> s->sc_bits);
	m->type = qcow2_sc_type(s, entry, bitmap, sc);
	m->l2_entry = entry;
	m->l2_bitmap = bitmap;
	if (m->type == QCOW2_SC_INVALID) {
		qcow2_cache_put(&s->l2_cache, slice);
		return qcow2_signal_corruption(s,
					       "Invalid L2 entry %#" PRIx64 " (bitmap %#" PRIx64
					       ") for guest offset %#" PRIx64,
					       entry, bitmap, offset);
	}
	if (m->type == QCOW2_SC_NORMAL) {
		m->host = (entry & QCOW2_L2E_OFFSET_MASK) + qcow2_offset_into_cluster(s, offset);
		if (m->host + bytes < m->host ||
		    (entry & QCOW2_L2E_OFFSET_MASK) + s->cluster_size > QCOW2_MAX_HOST_OFFSET) {
			qcow2_cache_put(&s->l2_cache, slice);
			return qcow2_signal_corruption(s, "Host offset %#" PRIx64 " out of range",
						       entry);
		}
	}
	if (m->type == QCOW2_SC_COMPRESSED) {
		/* One compressed cluster at a time. */
		end = qcow2_start_of_cluster(s, offset) + s->cluster_size;
		m->bytes = (end - offset < bytes) ? end - offset : bytes;
		qcow2_cache_put(&s->l2_cache, slice);
		return 0;
	}
	/* Extend over subclusters and clusters of the same kind. */
	pos = (offset & ~(s->sc_size - 1)) + s->sc_size;
	end = offset + bytes;
	while (pos < end) {
		uint64_t ci = i + ((pos >> s->cluster_bits) - (offset >> s->cluster_bits));
		uint64_t e = qcow2_l2_entry(s, slice, ci), b = qcow2_l2_bitmap(s, slice, ci);
		unsigned psc = (unsigned)(qcow2_offset_into_cluster(s, pos) >> s->sc_bits);
		enum qcow2_sc_type t = qcow2_sc_type(s, e, b, psc);

		if (t != m->type)
			break;
		if (t == QCOW2_SC_NORMAL &&
		    ((e & QCOW2_L2E_OFFSET_MASK) + qcow2_offset_into_cluster(s, pos) !=
			     m->host + (pos - offset) ||
		     (e & QCOW2_OFLAG_COPIED) != (entry & QCOW2_OFLAG_COPIED) ||
		     (e & QCOW2_L2E_OFFSET_MASK) + s->cluster_size > QCOW2_MAX_HOST_OFFSET))
			break;
		pos += s->sc_size;
	}
	m->bytes = (pos < end ? pos : end) - offset;
	qcow2_cache_put(&s->l2_cache, slice);
	return 0;
}

/* Does cluster @entry have host storage (normal, preallocated zero, compressed)? */
static bool has_host(const struct qcow2_state *s, uint64_t entry)
{
	return (entry & QCOW2_OFLAG_COMPRESSED) || (entry & QCOW2_L2E_OFFSET_MASK);
}

/*
 * qcow2.txt: discard makes whole clusters unallocated.  Unless @full, a v3
 * image keeps them reading as zeroes (zero flag, or all-zero subclusters)
 * where they would otherwise expose backing data or had data: QEMU's
 * discard_in_l2_slice.
 */
int qcow2_discard_clusters(struct qcow2_state *s, uint64_t offset, uint64_t bytes, bool full)
{
	uint64_t end = offset + bytes;
	bool backing = s->node->backing != NULL;
	int ret = 0;

	while (offset < end && ret == 0) {
		uint64_t i = 0, n;
		void *slice;

		/* An L2 table shared with a snapshot (no COPIED flag) is copied
		 * before it changes, or the snapshot would lose the clusters;
		 * a missing one is made only to write zero flags over a backing
		 * file. */
		uint64_t l1i = offset >> (s->cluster_bits + s->l2_bits);
		bool shared = l1i < s->l1_size && (s->l1[l1i] & QCOW2_L1E_OFFSET_MASK) &&
			      !(s->l1[l1i] & QCOW2_OFLAG_COPIED);
		ret = qcow2_get_l2_slice(s, offset, shared || (!full && backing && s->version >= 3),
					 &slice, &i);
		if (ret < 0)
			break;
		/* (i is only set when there is a slice: count from the offset.) */
		n = s->l2_slice_entries - ((offset >> s->cluster_bits) & (s->l2_slice_entries - 1));
		if (n > (end - offset + s->cluster_size - 1) >> s->cluster_bits)
			n = (end - offset + s->cluster_size - 1) >> s->cluster_bits;
		if (!slice) {
			offset += n << s->cluster_bits;
			continue;
		}
		for (uint64_t k = 0; k < n && ret == 0; k++) {
			uint64_t old = qcow2_l2_entry(s, slice, i + k);
			uint64_t oldb = qcow2_l2_bitmap(s, slice, i + k);
			uint64_t ne = 0, nb = 0;

			if (full) {
				ne = nb = 0;
			} else if (backing || has_host(s, old)) {
				if (s->extl2)
					nb = BITMAP_ALL_ZERO;
				else
					ne = s->version >= 3 ? QCOW2_OFLAG_ZERO : 0;
			} else {
				continue;
			}
			if (ne == old && nb == oldb)
				continue;
			ret = qcow2_check_free_l2_entry(s, old);
			if (ret < 0)
				break;
			qcow2_set_l2_entry(s, slice, i + k, ne);
			qcow2_set_l2_bitmap(s, slice, i + k, nb);
			qcow2_cache_mark_dirty(&s->l2_cache, slice);
			if (has_host(s, old)) {
				/* The cleared entry reaches the disk first. */
				ret = qcow2_cache_set_dependency(s, &s->rb_cache, &s->l2_cache);
				if (ret == 0)
					ret = qcow2_free_l2_entry(s, old);
			}
		}
		qcow2_cache_put(&s->l2_cache, slice);
		offset += n << s->cluster_bits;
	}
	return ret;
}

/*
 * Write-zeroes on whole clusters (or subclusters with extended L2) of a v3
 * image: QEMU's zero_in_l2_slice / zero_l2_subclusters.
 */
int qcow2_zero_clusters(struct qcow2_state *s, uint64_t offset, uint64_t bytes, int flags)
{
	uint64_t end = offset + bytes;
	int ret = 0;

	if (s->version < 3)
		return -ENOTSUP;
	while (offset < end && ret == 0) {
		uint64_t i, cstart = qcow2_start_of_cluster(s, offset);
		uint64_t cend = cstart + s->cluster_size;
		void *slice;

		ret = qcow2_get_l2_slice(s, offset, true, &slice, &i);
		if (ret < 0)
			break;
		while (offset < end && ret == 0) {
			uint64_t old = qcow2_l2_entry(s, slice, i);
			uint64_t oldb = qcow2_l2_bitmap(s, slice, i);
			bool whole = offset == cstart && (end >= cend || end >= s->size);
			uint64_t ne = old, nb = oldb;
			bool unmap = false;

			if (whole) {
				unmap = (old & QCOW2_OFLAG_COMPRESSED) ||
					((flags & VD_REQ_MAY_UNMAP) && has_host(s, old));
				ne = unmap ? 0 : old;
				if (s->extl2)
					nb = BITMAP_ALL_ZERO;
				else
					ne |= QCOW2_OFLAG_ZERO;
			} else {
				/* Subclusters of one cluster (extended L2 only). */
				unsigned first = (unsigned)((offset - cstart) >> s->sc_bits);
				uint64_t stop = end < cend ? end : cend;
				unsigned last =
					(unsigned)((stop - cstart + s->sc_size - 1) >> s->sc_bits);
				uint64_t mask = 0;
				if (!s->extl2 || (old & QCOW2_OFLAG_COMPRESSED)) {
					ret = -ENOTSUP;
					break;
				}
				for (unsigned k = first; k < last; k++)
					mask |= 1ull << k;
				nb = (oldb & ~mask) | (mask << 32);
			}
			if (unmap)
				ret = qcow2_check_free_l2_entry(s, old);
			if (ret < 0)
				break;
			if (ne != old || nb != oldb) {
				qcow2_set_l2_entry(s, slice, i, ne);
				qcow2_set_l2_bitmap(s, slice, i, nb);
				qcow2_cache_mark_dirty(&s->l2_cache, slice);
				if (unmap) {
					ret = qcow2_cache_set_dependency(s, &s->rb_cache,
									 &s->l2_cache);
					if (ret == 0)
						ret = qcow2_free_l2_entry(s, old);
				}
			}
			offset = cend < end ? cend : end;
			cstart = cend;
			cend += s->cluster_size;
			if (++i == s->l2_slice_entries)
				break;
		}
		qcow2_cache_put(&s->l2_cache, slice);
	}
	return ret;
}
