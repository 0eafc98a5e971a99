/* SPDX-License-Identifier: MIT */
/*
 * qcow2 internal snapshots (qcow2.txt "Snapshots"): the snapshot table, read
 * with every field bounds-checked, and the list operation.  The table is
 * untrusted: entry sizes, string lengths and the extra data are validated
 * before anything is allocated from them.  Callers hold s->lock (or run with
 * no request in flight, as the image operations do).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

void qcow2_free_snapshots(struct qcow2_snapshot *sn, uint32_t n)
{
	if (!sn)
		return;
	for (uint32_t i = 0; i < n; i++) {
		free(sn[i].id);
		free(sn[i].name);
		free(sn[i].extra);
	}
	free(sn);
}

static int read_at(struct qcow2_state *s, uint64_t off, void *buf, uint64_t len)
{
	struct vd_qiov q;

	if (len == 0)
		return 0;
	vd_qiov_init_buf(&q, buf, len);
	return vd_co_preadv(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

/*
 * qcow2.txt "Snapshot table entry":
 *   0 l1_table_offset(8) 8 l1_size(4) 12 id_str_size(2) 14 name_size(2)
 *   16 date_sec(4) 20 date_nsec(4) 24 vm_clock_nsec(8) 32 vm_state_size(4)
 *   36 extra_data_size(4) 40 extra data, id, name, padding to 8.
 * Extra data: vm_state_size_large(8), disk_size(8), icount(8).
 */
int qcow2_read_snapshots(struct qcow2_state *s, struct qcow2_snapshot **out, uint64_t *table_bytes,
			 struct vd_error *err)
{
	return qcow2_read_snapshots_repair(s, out, table_bytes, NULL, err);
}

/* With @dropped (check -r all): an entry with more extra data than
 * QCOW2_MAX_SNAPSHOT_EXTRA keeps its first QCOW2_MAX_SNAPSHOT_EXTRA bytes
 * and is counted there, as QEMU's qcow2_do_read_snapshots(repair=true). */
int qcow2_read_snapshots_repair(struct qcow2_state *s, struct qcow2_snapshot **out,
				uint64_t *table_bytes, uint32_t *dropped, struct vd_error *err)
{
	struct qcow2_snapshot *sn;
	uint64_t off = s->snapshots_offset;
	uint8_t h[40];
	int ret;

	*out = NULL;
	*table_bytes = 0;
	if (s->nb_snapshots == 0)
		return 0;
	if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS)
		return vd_error_set(err, -EFBIG, "Too many snapshots");
	sn = calloc(s->nb_snapshots, sizeof(*sn));
	if (!sn)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	for (uint32_t i = 0; i < s->nb_snapshots; i++) {
		struct qcow2_snapshot *e = &sn[i];
		uint32_t id_len, name_len, extra;

		ret = read_at(s, off, h, sizeof(h));
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read the snapshot table");
			goto fail;
		}
		e->l1_offset = qcow2_be64(h);
		e->l1_size = qcow2_be32(h + 8);
		id_len = (uint32_t)h[12] << 8 | h[13];
		name_len = (uint32_t)h[14] << 8 | h[15];
		e->date_sec = qcow2_be32(h + 16);
		e->date_nsec = qcow2_be32(h + 20);
		e->vm_clock = qcow2_be64(h + 24);
		e->vm_state_size = qcow2_be32(h + 32);
		extra = qcow2_be32(h + 36);
		e->disk_size = s->size;
		e->icount = UINT64_MAX;
		if (extra > QCOW2_MAX_SNAPSHOT_EXTRA && !dropped) {
			ret = vd_error_set(err, -EFBIG,
					   "Too much extra metadata in snapshot table entry %u", i);
			goto fail;
		}
		off += sizeof(h);
		if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
			vd_message(VD_MSG_ERROR,
				   "Discarding too much extra metadata in snapshot table entry %u "
				   "(%u > %u)",
				   i, extra, QCOW2_MAX_SNAPSHOT_EXTRA);
			(*dropped)++;
			e->extra_size = QCOW2_MAX_SNAPSHOT_EXTRA;
		} else {
			e->extra_size = extra;
		}
		e->extra = malloc(e->extra_size ? e->extra_size : 1);
		e->id = calloc(1, id_len + 1);
		e->name = calloc(1, name_len + 1);
		if (!e->extra || !e->id || !e->name) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
		ret = read_at(s, off, e->extra, e->extra_size);
		if (ret == 0)
			ret = read_at(s, off + extra, e->id, id_len);
		if (ret == 0)
			ret = read_at(s, off + extra + id_len, e->name, name_len);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read the snapshot table");
			goto fail;
		}
		if (e->extra_size >= 8)
			e->vm_state_size = qcow2_be64(e->extra);
		if (e->extra_size >= 16)
			e->disk_size = qcow2_be64(e->extra + 8);
		if (e->extra_size >= 24)
			e->icount = qcow2_be64(e->extra + 16);
		off += (uint64_t)extra + id_len + name_len;
		off = (off + 7) & ~7ull;
		if (off - s->snapshots_offset > QCOW2_MAX_SNAPSHOTS_BYTES) {
			ret = vd_error_set(err, -EFBIG, "Snapshot table too large");
			goto fail;
		}
	}
	*out = sn;
	*table_bytes = off - s->snapshots_offset;
	return (int)s->nb_snapshots;
fail:
	qcow2_free_snapshots(sn, s->nb_snapshots);
	return ret;
}

int qcow2_snapshot_list(struct vd_node *n, struct vd_snapshot_info **out)
{
	struct qcow2_state *s = n->opaque;
	struct qcow2_snapshot *sn;
	struct vd_snapshot_info *info;
	uint64_t bytes;
	int count;

	*out = NULL;
	vd_co_mutex_lock(&s->lock);
	count = qcow2_read_snapshots(s, &sn, &bytes, NULL);
	vd_co_mutex_unlock(&s->lock);
	if (count <= 0)
		return count;
	info = calloc((size_t)count, sizeof(*info));
	if (!info) {
		qcow2_free_snapshots(sn, (uint32_t)count);
		return -ENOMEM;
	}
	for (int i = 0; i < count; i++) {
		snprintf(info[i].id, sizeof(info[i].id), "%s", sn[i].id);
		snprintf(info[i].name, sizeof(info[i].name), "%s", sn[i].name);
		info[i].vm_state_size = sn[i].vm_state_size;
		info[i].date_sec = sn[i].date_sec;
		info[i].date_nsec = sn[i].date_nsec;
		info[i].vm_clock_nsec = sn[i].vm_clock;
		info[i].icount = sn[i].icount;
	}
	qcow2_free_snapshots(sn, (uint32_t)count);
	*out = info;
	return count;
}

/* --- writing ------------------------------------------------------------- */

static int write_at(struct qcow2_state *s, uint64_t off, const void *buf, uint64_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, (void *)buf, len);
	return vd_co_pwritev(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

/* QEMU's qcow2_validate_table for a snapshot's L1 table. */
static int validate_l1(struct qcow2_state *s, const struct qcow2_snapshot *sn)
{
	if (sn->l1_size > QCOW2_MAX_L1_BYTES / 8 || qcow2_offset_into_cluster(s, sn->l1_offset) ||
	    (sn->l1_size && sn->l1_offset < s->cluster_size) ||
	    sn->l1_offset >= QCOW2_MAX_HOST_OFFSET ||
	    (uint64_t)sn->l1_size * 8 > QCOW2_MAX_HOST_OFFSET - sn->l1_offset)
		return -EFBIG;
	return 0;
}

static uint64_t entry_bytes(const struct qcow2_snapshot *sn)
{
	uint64_t len = 40 + (uint64_t)sn->extra_size + strlen(sn->id) + strlen(sn->name);
	return (len + 7) & ~7ull;
}

/* The snapshot table as it goes to disk (qcow2.txt "Snapshot table entry"). */
static uint8_t *serialize_snapshots(const struct qcow2_snapshot *sn, uint32_t n, uint64_t *bytes)
{
	uint64_t pos = 0;
	uint8_t *buf;

	*bytes = 0;
	for (uint32_t i = 0; i < n; i++)
		*bytes += entry_bytes(&sn[i]);
	buf = calloc(1, *bytes ? *bytes : 1);
	if (!buf)
		return NULL;
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *e = buf + pos;
		size_t id_len = strlen(sn[i].id), name_len = strlen(sn[i].name);
		qcow2_put_be64(e, sn[i].l1_offset);
		qcow2_put_be32(e + 8, sn[i].l1_size);
		e[12] = (uint8_t)(id_len >> 8);
		e[13] = (uint8_t)id_len;
		e[14] = (uint8_t)(name_len >> 8);
		e[15] = (uint8_t)name_len;
		qcow2_put_be32(e + 16, sn[i].date_sec);
		qcow2_put_be32(e + 20, sn[i].date_nsec);
		qcow2_put_be64(e + 24, sn[i].vm_clock);
		qcow2_put_be32(e + 32, sn[i].vm_state_size > UINT32_MAX
					       ? 0
					       : (uint32_t)sn[i].vm_state_size);
		qcow2_put_be32(e + 36, sn[i].extra_size);
		memcpy(e + 40, sn[i].extra, sn[i].extra_size);
		memcpy(e + 40 + sn[i].extra_size, sn[i].id, id_len);
		memcpy(e + 40 + sn[i].extra_size + id_len, sn[i].name, name_len);
		pos += entry_bytes(&sn[i]);
	}
	return buf;
}

/* --- copy-on-write switch ------------------------------------------------ */

/*
 * Creating or deleting a snapshot changes refcounts of data clusters and
 * the COPIED flags of the active L2 entries that mirror them ("refcount ==
 * 1").  They live in different clusters, so no order of in-place writes is
 * atomic: a power cut (or a disk that stops accepting writes) between them
 * leaves flags that disagree with refcounts, which qemu-img check counts as
 * corruption (QEMU 7.2 has the same window).  Instead the new state is
 * written beside the old one and switched to by one header write:
 *
 *  - the active L1 table and every active L2 table are copied to fresh
 *    clusters, the copies' COPIED flags computed from the new refcounts;
 *  - each refcount block whose entries change is copied with the changes
 *    applied, and the refcount table is copied pointing to those copies;
 *  - the snapshot table is written anew;
 *  - then bytes 36..71 of the header (l1_size, l1_table_offset,
 *    refcount_table_offset, refcount_table_clusters, nb_snapshots,
 *    snapshots_offset: one sector, written whole or not at all) switch to
 *    all of it at once.
 *
 * Before the switch the fresh clusters are only allocated (leaks after a
 * cut); after it, the clusters nothing references any more (the old
 * refcount table and blocks, the old snapshot table, and on delete the old
 * active tables and the deleted snapshot's) are freed in place, where a cut
 * leaves leaks again.  Costs: every active L2 table is read twice and
 * written once per operation (QEMU reads them all and writes those it
 * changes), and the snapshot no longer shares L2 tables with the active
 * layer (one more cluster per L2 table).
 */
struct cow {
	struct {
		uint64_t idx; /* cluster index */
		int64_t d;
	} * dl;
	size_t n, cap;
	struct {
		uint64_t off, len;
	} * post; /* freed after the switch */
	size_t np, capp;
};

static void cow_merge(struct cow *c);

static void cow_free(struct cow *c)
{
	free(c->dl);
	free(c->post);
}

static int cow_delta(struct qcow2_state *s, struct cow *c, uint64_t off, uint64_t len, int d)
{
	uint64_t first = off >> s->cluster_bits, last = (off + len - 1) >> s->cluster_bits;

	for (uint64_t i = first; i <= last; i++) {
		/* Many references to few clusters (a crafted image can name one
		 * cluster from every entry): sum them up before growing, so the
		 * array stays within one entry per cluster of the file. */
		if (c->n == c->cap && c->cap >= (1u << 20)) {
			cow_merge(c);
			/* Still mostly distinct: grow below. */
			if (c->n <= c->cap / 2)
				goto add;
		}
		if (c->n == c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 1024;
			void *p = realloc(c->dl, cap * sizeof(*c->dl));
			if (!p)
				return -ENOMEM;
			c->dl = p;
			c->cap = cap;
		}
	add:
		c->dl[c->n].idx = i;
		c->dl[c->n].d = d;
		c->n++;
	}
	return 0;
}

static int cow_post(struct cow *c, uint64_t off, uint64_t len)
{
	if (!len)
		return 0;
	if (c->np == c->capp) {
		size_t cap = c->capp ? c->capp * 2 : 64;
		void *p = realloc(c->post, cap * sizeof(*c->post));
		if (!p)
			return -ENOMEM;
		c->post = p;
		c->capp = cap;
	}
	c->post[c->np].off = off;
	c->post[c->np].len = len;
	c->np++;
	return 0;
}

static int cmp_idx(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Sort by cluster and sum: one entry per cluster, none with d == 0. */
static void cow_merge(struct cow *c)
{
	size_t w = 0;

	if (!c->n)
		return;
	qsort(c->dl, c->n, sizeof(*c->dl), cmp_idx);
	for (size_t r = 0; r < c->n; r++) {
		if (w && c->dl[w - 1].idx == c->dl[r].idx)
			c->dl[w - 1].d += c->dl[r].d;
		else
			c->dl[w++] = c->dl[r];
	}
	c->n = 0;
	for (size_t r = 0; r < w; r++)
		if (c->dl[r].d)
			c->dl[c->n++] = c->dl[r];
}

static int64_t cow_delta_of(const struct cow *c, uint64_t idx)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->dl[mid].idx == idx)
			return c->dl[mid].d;
		if (c->dl[mid].idx < idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* One whole L2 table (cluster_size bytes) from the file. */
static int read_l2(struct qcow2_state *s, uint64_t l1e, uint32_t i, uint8_t *buf)
{
	uint64_t off = l1e & QCOW2_L1E_OFFSET_MASK;

	if (qcow2_offset_into_cluster(s, off) || off < s->cluster_size)
		return qcow2_signal_corruption(
			s, "L2 table offset %#" PRIx64 " invalid (L1 index %#" PRIx32 ")", off, i);
	return read_at(s, off, buf, s->cluster_size);
}

/* Count the references of one L2 table's entries with @d. */
static int cow_l2_refs(struct qcow2_state *s, struct cow *c, const uint8_t *l2, int d)
{
	for (uint64_t j = 0; j < s->l2_entries; j++) {
		uint64_t e = qcow2_l2_entry(s, l2, j);
		uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
		int ret = 0;

		if (e & QCOW2_OFLAG_COMPRESSED) {
			uint64_t coff = e & s->coffset_mask;
			uint64_t n = ((e >> s->csize_shift) & s->csize_mask) + 1;
			ret = cow_delta(s, c, coff, n * 512 - (coff & 511), d);
		} else if (off) {
			if (qcow2_offset_into_cluster(s, off))
				return qcow2_signal_corruption(s, "Cluster %#" PRIx64 " unaligned",
							       off);
			ret = cow_delta(s, c, off, s->cluster_size, d);
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Allocate @bytes (in the current refcount structure) and note them in
 * @a, so that a switch that never happens can give them back. */
static int64_t cow_alloc(struct qcow2_state *s, struct cow *a, uint64_t bytes)
{
	int64_t off = qcow2_alloc_clusters(s, bytes);
	int ret;

	if (off < 0)
		return off;
	ret = cow_post(a, (uint64_t)off, bytes);
	return ret < 0 ? ret : off;
}

/*
 * The switch itself: @c holds the refcount changes of data clusters (the
 * caller counted them) and what to free afterwards; @src_l1 (s->l1_size
 * entries) the L1 table whose L2 tables, copied, become the active layer's
 * (the active one, or on apply the snapshot's); @sn/@n the new snapshot
 * table; @old_sn_bytes the size of the current one.
 */
static int cow_switch(struct qcow2_state *s, struct cow *c, const uint64_t *src_l1,
		      const struct qcow2_snapshot *sn, uint32_t n, uint64_t old_sn_bytes)
{
	uint64_t cs = s->cluster_size, l1_bytes = (uint64_t)s->l1_size * 8, sn_bytes = 0;
	uint64_t *new_l2 = NULL, *blocks = NULL, *new_block = NULL, *new_l1 = NULL;
	uint64_t rt_clusters = 0, nblocks = 0, new_rt = 0, new_l1_off = 0, sn_off = 0;
	uint64_t old_rt;
	uint32_t old_rt_clusters;
	uint8_t *sbuf = NULL, *buf = NULL, hdr[36];
	struct cow alloc = {0}; /* clusters allocated here (in ->post) */
	bool header_written = false;
	int64_t off;
	int ret;

	new_l2 = calloc(s->l1_size + 1, sizeof(*new_l2));
	new_l1 = calloc(s->l1_size + 1, sizeof(*new_l1));
	buf = malloc(cs);
	if (!new_l2 || !new_l1 || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	if (n) {
		sbuf = serialize_snapshots(sn, n, &sn_bytes);
		if (!sbuf) {
			ret = -ENOMEM;
			goto out;
		}
		if (sn_bytes > QCOW2_MAX_SNAPSHOTS_BYTES) {
			ret = -EFBIG;
			goto out;
		}
	}
	cow_merge(c);

	/* 1. Allocations, in the current refcount structure (leaks if the
	 * switch never comes). */
	for (uint32_t i = 0; i < s->l1_size; i++) {
		if (!(src_l1[i] & QCOW2_L1E_OFFSET_MASK))
			continue;
		off = cow_alloc(s, &alloc, cs);
		if (off < 0) {
			ret = (int)off;
			goto out;
		}
		new_l2[i] = (uint64_t)off;
	}
	if (l1_bytes) {
		off = cow_alloc(s, &alloc, l1_bytes);
		if (off < 0) {
			ret = (int)off;
			goto out;
		}
		new_l1_off = (uint64_t)off;
	}
	if (sn_bytes) {
		off = cow_alloc(s, &alloc, sn_bytes);
		if (off < 0) {
			ret = (int)off;
			goto out;
		}
		sn_off = (uint64_t)off;
	}
	/* The refcount blocks that change: one copy each. */
	blocks = calloc(c->n + 1, sizeof(*blocks));
	new_block = calloc(c->n + 1, sizeof(*new_block));
	if (!blocks || !new_block) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < c->n; i++) {
		uint64_t rbi = c->dl[i].idx >> s->rb_bits;
		if (nblocks && blocks[nblocks - 1] == rbi)
			continue;
		if (rbi >= s->reftable_size || !(s->reftable[rbi] & QCOW2_REFT_OFFSET_MASK)) {
			ret = qcow2_signal_corruption(s,
						      "Cluster %#" PRIx64 " has no refcount block",
						      c->dl[i].idx << s->cluster_bits);
			goto out;
		}
		blocks[nblocks++] = rbi;
	}
	for (uint64_t i = 0; i < nblocks; i++) {
		off = cow_alloc(s, &alloc, cs);
		if (off < 0) {
			ret = (int)off;
			goto out;
		}
		new_block[i] = (uint64_t)off;
	}
	/* The refcount table copy; allocating it may grow the table itself,
	 * then once more with the new size (the first copy is freed after). */
	for (int tries = 0;; tries++) {
		rt_clusters = s->reftable_clusters;
		off = cow_alloc(s, &alloc, rt_clusters * cs);
		if (off < 0) {
			ret = (int)off;
			goto out;
		}
		if (rt_clusters == s->reftable_clusters) {
			new_rt = (uint64_t)off;
			break;
		}
		ret = cow_post(c, (uint64_t)off, rt_clusters * cs);
		if (ret == 0 && tries >= 4)
			ret = -EFBIG;
		if (ret < 0)
			goto out;
	}
	/* The allocations on disk before anything refers to them. */
	ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		goto out;

	/* 2. The copies of the active L2 tables, COPIED from the new
	 * refcounts, and the new active L1 table. */
	for (uint32_t i = 0; i < s->l1_size; i++) {
		if (!new_l2[i]) {
			new_l1[i] = src_l1[i] & ~QCOW2_OFLAG_COPIED;
			continue;
		}
		ret = read_l2(s, src_l1[i], i, buf);
		if (ret < 0)
			goto out;
		for (uint64_t j = 0; j < s->l2_entries; j++) {
			uint64_t e = qcow2_l2_entry(s, buf, j), rc, ne;
			uint64_t doff = e & QCOW2_L2E_OFFSET_MASK;
			int64_t v;

			if ((e & QCOW2_OFLAG_COMPRESSED) || !doff)
				continue;
			ret = qcow2_get_refcount(s, doff >> s->cluster_bits, &rc);
			if (ret < 0)
				goto out;
			v = (int64_t)rc + cow_delta_of(c, doff >> s->cluster_bits);
			ne = v == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
			if (ne != e)
				qcow2_set_l2_entry(s, buf, j, ne);
		}
		ret = qcow2_check_overlap(s, 0, new_l2[i], cs);
		if (ret == 0) {
			vd_debug_event(s->node->file, VD_EV_L2_UPDATE);
			ret = write_at(s, new_l2[i], buf, cs);
		}
		if (ret < 0)
			goto out;
		new_l1[i] = new_l2[i] | QCOW2_OFLAG_COPIED;
	}
	if (l1_bytes) {
		uint8_t *l1buf = malloc(l1_bytes);
		if (!l1buf) {
			ret = -ENOMEM;
			goto out;
		}
		for (uint32_t i = 0; i < s->l1_size; i++)
			qcow2_put_be64(l1buf + 8 * i, new_l1[i]);
		ret = qcow2_check_overlap(s, 0, new_l1_off, l1_bytes);
		if (ret == 0) {
			vd_debug_event(s->node->file, VD_EV_L1_UPDATE);
			ret = write_at(s, new_l1_off, l1buf, l1_bytes);
		}
		free(l1buf);
		if (ret < 0)
			goto out;
	}
	/* 3. The snapshot table. */
	if (sn_bytes) {
		ret = qcow2_check_overlap(s, 0, sn_off, sn_bytes);
		if (ret == 0)
			ret = write_at(s, sn_off, sbuf, sn_bytes);
		if (ret < 0)
			goto out;
	}
	/* 4. The refcount block copies with the changes, and the table. */
	{
		size_t k = 0;
		for (uint64_t b = 0; b < nblocks; b++) {
			uint64_t old = s->reftable[blocks[b]] & QCOW2_REFT_OFFSET_MASK;
			void *block;

			ret = qcow2_cache_get(s, &s->rb_cache, old, false, &block);
			if (ret < 0)
				goto out;
			memcpy(buf, block, cs);
			qcow2_cache_put(&s->rb_cache, block);
			for (; k < c->n && (c->dl[k].idx >> s->rb_bits) == blocks[b]; k++) {
				uint64_t i = c->dl[k].idx & ((1ull << s->rb_bits) - 1);
				int64_t v = (int64_t)qcow2_refcount_get_entry(
						    buf, s->refcount_order, i) +
					    c->dl[k].d;
				if (v < 0) {
					ret = qcow2_signal_corruption(
						s, "Refcount underflow at cluster %#" PRIx64,
						c->dl[k].idx << s->cluster_bits);
					goto out;
				}
				if ((uint64_t)v > s->refcount_max) {
					ret = -ERANGE;
					goto out;
				}
				qcow2_refcount_set_entry(buf, s->refcount_order, i, (uint64_t)v);
			}
			ret = qcow2_check_overlap(s, 0, new_block[b], cs);
			if (ret == 0) {
				vd_debug_event(s->node->file, VD_EV_REFBLOCK_UPDATE);
				ret = write_at(s, new_block[b], buf, cs);
			}
			if (ret < 0)
				goto out;
		}
	}
	{
		uint64_t rt_bytes = rt_clusters * cs;
		uint8_t *rtbuf = calloc(1, rt_bytes);
		uint64_t k = 0;

		if (!rtbuf) {
			ret = -ENOMEM;
			goto out;
		}
		for (uint64_t i = 0; i < s->reftable_size && i < rt_bytes / 8; i++) {
			uint64_t v = s->reftable[i];
			while (k < nblocks && blocks[k] < i)
				k++;
			if (k < nblocks && blocks[k] == i)
				v = new_block[k];
			qcow2_put_be64(rtbuf + 8 * i, v);
		}
		ret = qcow2_check_overlap(s, 0, new_rt, rt_bytes);
		if (ret == 0) {
			vd_debug_event(s->node->file, VD_EV_REFTABLE_UPDATE);
			ret = write_at(s, new_rt, rtbuf, rt_bytes);
		}
		free(rtbuf);
		if (ret < 0)
			goto out;
	}
	ret = vd_co_flush(s->node->file);
	if (ret < 0)
		goto out;

	/* 5. The switch: qcow2.txt "Header" bytes 36..71, one sector.  (The
	 * allocations above may have moved the refcount table already.) */
	old_rt = s->reftable_offset;
	old_rt_clusters = s->reftable_clusters;
	qcow2_put_be32(hdr, s->l1_size);
	qcow2_put_be64(hdr + 4, l1_bytes ? new_l1_off : s->l1_offset);
	qcow2_put_be64(hdr + 12, new_rt);
	qcow2_put_be32(hdr + 20, (uint32_t)rt_clusters);
	qcow2_put_be32(hdr + 24, n);
	qcow2_put_be64(hdr + 28, sn_off);
	header_written = true; /* even if it fails: it may have landed */
	ret = write_at(s, 36, hdr, sizeof(hdr));
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		goto out;

	/* 6. In memory as on disk. */
	for (uint32_t i = 0; i < s->l1_size; i++) {
		if (s->l1[i] & QCOW2_L1E_OFFSET_MASK)
			qcow2_cache_discard(&s->l2_cache, s->l1[i] & QCOW2_L1E_OFFSET_MASK, cs);
		if (src_l1[i] & QCOW2_L1E_OFFSET_MASK)
			qcow2_cache_discard(&s->l2_cache, src_l1[i] & QCOW2_L1E_OFFSET_MASK, cs);
	}
	memcpy(s->l1, new_l1, l1_bytes);
	if (l1_bytes)
		s->l1_offset = new_l1_off;
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t old = s->reftable[blocks[b]] & QCOW2_REFT_OFFSET_MASK;
		qcow2_cache_discard(&s->rb_cache, old, cs);
		s->reftable[blocks[b]] = new_block[b];
		cow_post(c, old, cs);
	}
	s->reftable_offset = new_rt;
	s->nb_snapshots = n;
	cow_post(c, old_rt, (uint64_t)old_rt_clusters * cs);
	if (s->snapshots_offset && old_sn_bytes)
		cow_post(c, s->snapshots_offset, old_sn_bytes);
	s->snapshots_offset = sn_off;

	/* 7. Free what nothing references any more: a cut here leaks. */
	for (size_t i = 0; i < c->np; i++)
		if (qcow2_update_refcount(s, c->post[i].off, c->post[i].len, -1) < 0)
			break;
	qcow2_cache_flush(s, &s->rb_cache);
	ret = 0;
out:
	if (ret < 0 && !header_written) {
		/* Nothing refers to the new clusters: give them back (a leak if
		 * this fails too). */
		for (size_t i = 0; i < alloc.np; i++)
			if (qcow2_update_refcount(s, alloc.post[i].off, alloc.post[i].len, -1) < 0)
				break;
		qcow2_cache_flush(s, &s->rb_cache);
	}
	cow_free(&alloc);
	free(new_l2);
	free(new_l1);
	free(blocks);
	free(new_block);
	free(sbuf);
	free(buf);
	return ret;
}

/*
 * Write @n snapshots as a new table, then switch the header to it
 * (nb_snapshots and snapshots_offset in one write), then free the old one
 * (QEMU's qcow2_write_snapshots).  A crash leaves the old or the new table,
 * plus leaks.
 */
static int write_snapshots(struct qcow2_state *s, const struct qcow2_snapshot *sn, uint32_t n,
			   uint64_t old_bytes)
{
	uint64_t bytes = 0, old_off = s->snapshots_offset;
	int64_t off = 0;
	uint8_t *buf = NULL, hdr[12];
	int ret;

	if (n > QCOW2_MAX_SNAPSHOTS)
		return -EFBIG;
	if (n) {
		buf = serialize_snapshots(sn, n, &bytes);
		if (!buf)
			return -ENOMEM;
		if (bytes > QCOW2_MAX_SNAPSHOTS_BYTES) {
			free(buf);
			return -EFBIG;
		}
		off = qcow2_alloc_clusters(s, bytes);
		if (off < 0) {
			free(buf);
			return (int)off;
		}
		/* Everything the table points to is on disk before it. */
		ret = qcow2_cache_flush(s, &s->l2_cache);
		if (ret == 0)
			ret = qcow2_cache_flush(s, &s->rb_cache);
		if (ret == 0)
			ret = qcow2_check_overlap(s, 0, (uint64_t)off, bytes);
		if (ret == 0)
			ret = write_at(s, (uint64_t)off, buf, bytes);
		if (ret == 0)
			ret = vd_co_flush(s->node->file);
		free(buf);
		if (ret < 0) {
			qcow2_update_refcount(s, (uint64_t)off, bytes, -1);
			return ret;
		}
	}
	/* qcow2.txt "Header": nb_snapshots (60), snapshots_offset (64). */
	qcow2_put_be32(hdr, n);
	qcow2_put_be64(hdr + 4, (uint64_t)off);
	ret = write_at(s, 60, hdr, sizeof(hdr));
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		return ret;
	s->nb_snapshots = n;
	s->snapshots_offset = (uint64_t)off;
	if (old_off && old_bytes)
		ret = qcow2_update_refcount(s, old_off, old_bytes, -1);
	return ret;
}

/*
 * check -r all: write @sn (repaired entries) as the snapshot table, as a
 * snapshot operation does; *@new_bytes is its size.  An incomplete entry of a
 * version 3 image (less than 16 bytes of extra data) gets the extra data
 * QEMU's repair gives it: vm_state_size_large, the current disk size, no
 * icount.
 */
int qcow2_rewrite_snapshots(struct qcow2_state *s, struct qcow2_snapshot *sn, uint32_t n,
			    uint64_t old_bytes, uint64_t *new_bytes)
{
	int ret;

	for (uint32_t i = 0; i < n; i++) {
		if (s->version >= 3 && sn[i].extra_size < 16) {
			uint8_t *x = calloc(1, 24);
			if (!x)
				return -ENOMEM;
			memcpy(x, sn[i].extra, sn[i].extra_size);
			qcow2_put_be64(x, sn[i].vm_state_size);
			qcow2_put_be64(x + 8, s->size);
			qcow2_put_be64(x + 16, UINT64_MAX);
			free(sn[i].extra);
			sn[i].extra = x;
			sn[i].extra_size = 24;
			sn[i].disk_size = s->size;
			sn[i].icount = UINT64_MAX;
		}
	}
	ret = write_snapshots(s, sn, n, old_bytes);
	*new_bytes = 0;
	for (uint32_t i = 0; ret == 0 && i < n; i++)
		*new_bytes += entry_bytes(&sn[i]);
	return ret;
}

/* An ID first, then a name (QEMU's find_snapshot_by_id_or_name). */
static int find_snapshot(const struct qcow2_snapshot *sn, int n, const char *id_or_name)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(sn[i].id, id_or_name))
			return i;
	for (int i = 0; i < n; i++)
		if (!strcmp(sn[i].name, id_or_name))
			return i;
	return -ENOENT;
}

static int load(struct qcow2_state *s, struct qcow2_snapshot **sn, uint64_t *bytes,
		struct vd_error *err)
{
	int n = qcow2_read_snapshots(s, sn, bytes, err);

	if (n < 0 && !vd_error_is_set(err))
		vd_error_setg_errno(err, n, "Could not read the snapshot table");
	return n;
}

int qcow2_snapshot_create(struct vd_node *n, const struct vd_snapshot_info *info,
			  struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	struct qcow2_snapshot *sn = NULL, *all = NULL, *e;
	uint64_t bytes, id_max = 0, l1_bytes = (uint64_t)s->l1_size * 8;
	int64_t l1_off = -1;
	uint8_t *buf = NULL;
	struct cow c = {0};
	char id[32];
	int count, ret;

	vd_co_mutex_lock(&s->lock);
	count = load(s, &sn, &bytes, err);
	if (count < 0) {
		ret = count;
		goto out;
	}
	if (count >= QCOW2_MAX_SNAPSHOTS) {
		ret = vd_error_set(err, -EFBIG, "Too many snapshots");
		goto out;
	}
	/* The next free numeric ID (QEMU's find_new_snapshot_id). */
	for (int i = 0; i < count; i++) {
		uint64_t v = strtoull(sn[i].id, NULL, 10);
		if (v > id_max)
			id_max = v;
	}
	if (info->id[0])
		snprintf(id, sizeof(id), "%.31s", info->id);
	else
		snprintf(id, sizeof(id), "%" PRIu64, id_max + 1);
	for (int i = 0; i < count; i++) {
		if (!strcmp(sn[i].id, id)) {
			ret = vd_error_set(err, -EEXIST, "Snapshot ID '%s' already exists", id);
			goto out;
		}
	}
	if (strlen(info->name) > UINT16_MAX) {
		ret = vd_error_set(err, -EINVAL, "Snapshot name too long");
		goto out;
	}

	/* 1. The references of the active L1 table, which the snapshot
	 * takes as it is (its L1 and L2 tables become the snapshot's): every
	 * data cluster gains one (cow_switch()). */
	ret = qcow2_mark_dirty(s);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		goto fail_msg;
	buf = malloc(s->cluster_size);
	if (!buf) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	for (uint32_t i = 0; i < s->l1_size; i++) {
		if (!(s->l1[i] & QCOW2_L1E_OFFSET_MASK))
			continue;
		ret = read_l2(s, s->l1[i], i, buf);
		if (ret == 0)
			ret = cow_l2_refs(s, &c, buf, 1);
		if (ret < 0)
			goto fail_msg;
	}
	l1_off = l1_bytes ? (int64_t)s->l1_offset : 0;

	/* 2. The table with the new entry, then the header. */
	all = realloc(sn, sizeof(*sn) * ((size_t)count + 1));
	if (!all) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	sn = all;
	e = &sn[count];
	memset(e, 0, sizeof(*e));
	count++;
	e->l1_offset = (uint64_t)l1_off;
	e->l1_size = s->l1_size;
	e->id = strdup(id);
	e->name = strdup(info->name);
	e->extra = calloc(1, 24);
	if (!e->id || !e->name || !e->extra) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	e->date_sec = info->date_sec;
	e->date_nsec = info->date_nsec;
	e->vm_clock = info->vm_clock_nsec;
	e->vm_state_size = 0;
	e->disk_size = s->size;
	e->icount = info->icount;
	/* Extra data: vm_state_size_large, disk_size, icount. */
	e->extra_size = 24;
	qcow2_put_be64(e->extra, 0);
	qcow2_put_be64(e->extra + 8, s->size);
	qcow2_put_be64(e->extra + 16, info->icount);
	ret = cow_switch(s, &c, s->l1, sn, (uint32_t)count, bytes);
	if (ret < 0)
		goto fail_msg;
	ret = 0;
	goto out;
fail_msg:
	vd_error_setg_errno(err, ret, "Could not create snapshot '%s'", info->name);
out:
	free(buf);
	cow_free(&c);
	qcow2_free_snapshots(sn, count > 0 ? (uint32_t)count : 0);
	/* Tables moved (snapshot table, L1 tables): index them anew. */
	if (s->ol_ready && !s->read_only)
		qcow2_overlap_rebuild(s);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

/*
 * Load the snapshot table and find @id_or_name in it, with a valid L1 table:
 * its index, or -errno with @not_found (QEMU words it per command) or the
 * reason in @err.  *@count is what qcow2_free_snapshots() takes afterwards.
 */
static int load_and_find(struct qcow2_state *s, const char *id_or_name, const char *not_found,
			 struct qcow2_snapshot **sn, uint64_t *bytes, int *count,
			 struct vd_error *err)
{
	int idx;

	*count = load(s, sn, bytes, err);
	if (*count < 0)
		return *count;
	idx = find_snapshot(*sn, *count, id_or_name);
	if (idx < 0)
		return vd_error_set(err, -ENOENT, "%s", not_found);
	if (validate_l1(s, &(*sn)[idx]) < 0)
		return vd_error_set(err, -EFBIG, "Snapshot L1 table offset invalid");
	return idx;
}

int qcow2_snapshot_goto(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	struct qcow2_snapshot *sn = NULL;
	uint64_t bytes, *new_l1 = NULL;
	uint8_t *buf = NULL, *l2 = NULL;
	struct cow c = {0};
	int count, idx, ret;

	s->data_changed = true;

	vd_co_mutex_lock(&s->lock);
	idx = load_and_find(s, id_or_name, "Can't find snapshot", &sn, &bytes, &count, err);
	if (idx < 0) {
		ret = idx;
		goto out;
	}
	/* A snapshot of another disk size: the image takes the snapshot's
	 * size first (QEMU 7.2's qcow2_snapshot_goto), and the active L1 is
	 * made large enough for the snapshot's. */
	if (sn[idx].disk_size != s->size) {
		if (sn[idx].disk_size % 512 || sn[idx].disk_size > (uint64_t)VD_MAX_LENGTH) {
			ret = vd_error_set(err, -EINVAL,
					   "Snapshot '%s' has an invalid disk size %" PRIu64,
					   id_or_name, sn[idx].disk_size);
			goto out;
		}
		ret = qcow2_truncate_locked(s, sn[idx].disk_size, err);
		if (ret < 0)
			goto out;
	}
	if (sn[idx].l1_size > s->l1_size) {
		ret = qcow2_grow_l1(s, sn[idx].l1_size);
		if (ret < 0)
			goto fail_msg;
	}
	ret = qcow2_mark_dirty(s);
	if (ret < 0)
		goto fail_msg;
	/* The snapshot's L1, padded with zeroes to the active size. */
	buf = calloc(s->l1_size ? s->l1_size : 1, 8);
	new_l1 = calloc(s->l1_size ? s->l1_size : 1, 8);
	if (!buf || !new_l1) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	ret = read_at(s, sn[idx].l1_offset, buf, (uint64_t)sn[idx].l1_size * 8);
	if (ret < 0)
		goto fail_msg;
	for (uint32_t i = 0; i < s->l1_size; i++)
		new_l1[i] = qcow2_be64(buf + 8 * i);
	/* The snapshot's L2 tables, copied, become the active layer's: every
	 * data cluster they name gains a reference and every one the active
	 * tables name loses one (in the switch, with the COPIED flags); the
	 * active L1 and L2 tables are freed once nothing names them
	 * (cow_switch()). */
	ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		goto fail_msg;
	l2 = malloc(s->cluster_size);
	if (!l2) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	for (uint32_t i = 0; i < s->l1_size; i++) {
		if (new_l1[i] & QCOW2_L1E_OFFSET_MASK) {
			ret = read_l2(s, new_l1[i], i, l2);
			if (ret == 0)
				ret = cow_l2_refs(s, &c, l2, 1);
			if (ret < 0)
				goto fail_msg;
		}
		if (s->l1[i] & QCOW2_L1E_OFFSET_MASK) {
			ret = read_l2(s, s->l1[i], i, l2);
			if (ret == 0)
				ret = cow_l2_refs(s, &c, l2, -1);
			if (ret == 0)
				ret = cow_post(&c, s->l1[i] & QCOW2_L1E_OFFSET_MASK,
					       s->cluster_size);
			if (ret < 0)
				goto fail_msg;
		}
	}
	ret = cow_post(&c, s->l1_offset, (uint64_t)s->l1_size * 8);
	if (ret == 0)
		ret = cow_switch(s, &c, new_l1, sn, (uint32_t)count, bytes);
	if (ret == 0)
		goto out;
fail_msg:
	vd_error_setg_errno(err, ret, "Could not apply snapshot '%s'", id_or_name);
out:
	free(buf);
	free(new_l1);
	free(l2);
	cow_free(&c);
	qcow2_free_snapshots(sn, count > 0 ? (uint32_t)count : 0);
	/* Tables moved (snapshot table, L1 tables): index them anew. */
	if (s->ol_ready && !s->read_only)
		qcow2_overlap_rebuild(s);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

int qcow2_snapshot_delete(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	struct qcow2_snapshot *sn = NULL, victim;
	uint64_t bytes, *l1 = NULL;
	uint8_t *buf = NULL, *l2 = NULL;
	struct cow c = {0};
	int count, idx, ret;

	vd_co_mutex_lock(&s->lock);
	idx = load_and_find(s, id_or_name, "Can't find the snapshot", &sn, &bytes, &count, err);
	if (idx < 0) {
		ret = idx;
		goto out;
	}
	victim = sn[idx];
	l1 = calloc(victim.l1_size ? victim.l1_size : 1, 8);
	buf = malloc(victim.l1_size ? (size_t)victim.l1_size * 8 : 1);
	if (!l1 || !buf) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	ret = read_at(s, victim.l1_offset, buf, (uint64_t)victim.l1_size * 8);
	if (ret < 0)
		goto fail_msg;
	for (uint32_t i = 0; i < victim.l1_size; i++)
		l1[i] = qcow2_be64(buf + 8 * i);
	/* What goes away with it: one reference of each data cluster its L2
	 * tables name (in the switch: the COPIED flags of the active layer
	 * follow), then, once nothing names them, its L1 and L2 tables and the
	 * active ones the switch replaces with copies (cow_switch()). */
	ret = qcow2_mark_dirty(s);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		goto fail_msg;
	l2 = malloc(s->cluster_size);
	if (!l2) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	for (uint32_t i = 0; i < victim.l1_size; i++) {
		if (!(l1[i] & QCOW2_L1E_OFFSET_MASK))
			continue;
		ret = read_l2(s, l1[i], i, l2);
		if (ret == 0)
			ret = cow_l2_refs(s, &c, l2, -1);
		if (ret == 0)
			ret = cow_post(&c, l1[i] & QCOW2_L1E_OFFSET_MASK, s->cluster_size);
		if (ret < 0)
			goto fail_msg;
	}
	ret = cow_post(&c, victim.l1_offset, (uint64_t)victim.l1_size * 8);
	for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++)
		if (s->l1[i] & QCOW2_L1E_OFFSET_MASK)
			ret = cow_post(&c, s->l1[i] & QCOW2_L1E_OFFSET_MASK, s->cluster_size);
	if (ret == 0)
		ret = cow_post(&c, s->l1_offset, (uint64_t)s->l1_size * 8);
	if (ret < 0)
		goto fail_msg;
	memmove(&sn[idx], &sn[idx + 1], sizeof(*sn) * (size_t)(count - idx - 1));
	count--;
	ret = cow_switch(s, &c, s->l1, sn, (uint32_t)count, bytes);
	free(victim.id);
	free(victim.name);
	free(victim.extra);
	victim.id = victim.name = NULL;
	victim.extra = NULL;
	if (ret == 0)
		goto out;
fail_msg:
	vd_error_setg_errno(err, ret, "Could not delete snapshot '%s'", id_or_name);
out:
	free(buf);
	free(l1);
	free(l2);
	cow_free(&c);
	qcow2_free_snapshots(sn, count > 0 ? (uint32_t)count : 0);
	/* Tables moved (snapshot table, L1 tables): index them anew. */
	if (s->ol_ready && !s->read_only)
		qcow2_overlap_rebuild(s);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

/* --- a snapshot as the source of reads ------------------------------------ */

/* QEMU's find_snapshot_by_id_and_name: with both, both must match. */
static int find_by_id_and_name(const struct qcow2_snapshot *sn, int n, const char *id,
			       const char *name)
{
	for (int i = 0; i < n; i++) {
		if (id && strcmp(sn[i].id, id))
			continue;
		if (name && strcmp(sn[i].name, name))
			continue;
		return i;
	}
	return -ENOENT;
}

/*
 * The metadata a snapshot's tables must stay clear of: the header, the
 * active L1 table, the refcount table and blocks, the snapshot table, the
 * bitmap directory and the other snapshots' L1 tables.  L2 tables the
 * snapshot shares with the active state or other snapshots are legitimate
 * (refcount > 1) and are not in it.
 *
 * Kept as host ranges sorted and merged into disjoint ones, each with the
 * classes (QCOW2_OL_*) it holds: a lookup is a binary search, so a hostile
 * image (65536 snapshots, a 4M-entry L1 table) costs O((ranges + entries)
 * log ranges), not ranges times entries.
 */
struct tmp_range {
	uint64_t start, end; /* bytes, [start, end) */
	unsigned mask;
};
struct tmp_ranges {
	struct tmp_range *r;
	size_t n, cap;
};

static int tmp_add(struct tmp_ranges *t, unsigned bitnr, uint64_t offset, uint64_t bytes)
{
	if (!bytes)
		return 0;
	/* Untrusted offsets: clip below 2^56, as the overlap index does. */
	if (offset >= QCOW2_MAX_HOST_OFFSET)
		return 0;
	if (bytes > QCOW2_MAX_HOST_OFFSET - offset)
		bytes = QCOW2_MAX_HOST_OFFSET - offset;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct tmp_range *r = realloc(t->r, cap * sizeof(*r));
		if (!r)
			return -ENOMEM;
		t->r = r;
		t->cap = cap;
	}
	t->r[t->n++] = (struct tmp_range){offset, offset + bytes, 1u << bitnr};
	return 0;
}

static int cmp_range(const void *a, const void *b)
{
	const struct tmp_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void tmp_merge(struct tmp_ranges *t)
{
	size_t out = 0;

	if (!t->n)
		return;
	qsort(t->r, t->n, sizeof(*t->r), cmp_range);
	for (size_t i = 1; i < t->n; i++) {
		struct tmp_range *last = &t->r[out];
		if (t->r[i].start < last->end) {
			if (t->r[i].end > last->end)
				last->end = t->r[i].end;
			last->mask |= t->r[i].mask;
		} else {
			t->r[++out] = t->r[i];
		}
	}
	t->n = out + 1;
}

/* The classes of the merged ranges [offset, offset + bytes) touches. */
static unsigned tmp_query(const struct tmp_ranges *t, uint64_t offset, uint64_t bytes)
{
	size_t lo = 0, hi = t->n;
	unsigned mask = 0;

	/* The first range that ends after @offset. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t->r[mid].end <= offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < t->n && t->r[i].start < offset + bytes; i++)
		mask |= t->r[i].mask;
	return mask;
}

static int tmp_build(struct qcow2_state *s, struct tmp_ranges *t, const struct qcow2_snapshot *sn,
		     int count, int idx, uint64_t table_bytes)
{
	uint64_t cs = s->cluster_size;
	int ret;

	ret = tmp_add(t, QCOW2_OL_MAIN_HEADER_BITNR, 0, cs);
	if (ret == 0)
		ret = tmp_add(t, QCOW2_OL_ACTIVE_L1_BITNR, s->l1_offset, (uint64_t)s->l1_size * 8);
	if (ret == 0)
		ret = tmp_add(t, QCOW2_OL_REFCOUNT_TABLE_BITNR, s->reftable_offset,
			      (uint64_t)s->reftable_clusters * cs);
	for (uint64_t i = 0; ret == 0 && i < s->reftable_size; i++) {
		uint64_t off = s->reftable[i] & QCOW2_REFT_OFFSET_MASK;
		if (off)
			ret = tmp_add(t, QCOW2_OL_REFCOUNT_BLOCK_BITNR, off, cs);
	}
	if (ret == 0)
		ret = tmp_add(t, QCOW2_OL_SNAPSHOT_TABLE_BITNR, s->snapshots_offset, table_bytes);
	if (ret == 0 && s->ol_bitmap_dir_bytes)
		ret = tmp_add(t, QCOW2_OL_BITMAP_DIRECTORY_BITNR, s->ol_bitmap_dir_offset,
			      s->ol_bitmap_dir_bytes);
	for (int i = 0; ret == 0 && i < count; i++) {
		uint64_t bytes = (uint64_t)sn[i].l1_size * 8;
		if (i == idx)
			continue;
		if (bytes > QCOW2_MAX_L1_BYTES)
			bytes = QCOW2_MAX_L1_BYTES;
		ret = tmp_add(t, QCOW2_OL_INACTIVE_L1_BITNR, sn[i].l1_offset, bytes);
	}
	/* Metadata owns whole clusters (qcow2.txt): round the ends up. */
	for (size_t i = 0; ret == 0 && i < t->n; i++)
		t->r[i].end = qcow2_round_up_cluster(s, t->r[i].end);
	return ret;
}

int qcow2_snapshot_load_tmp(struct vd_node *n, const char *id, const char *name,
			    struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	struct qcow2_snapshot *sn = NULL, *e;
	struct tmp_ranges meta = {0};
	uint64_t bytes, l1_bytes, *l1 = NULL;
	int64_t file_size = vd_node_size(n->file);
	uint8_t *buf = NULL;
	unsigned hit;
	int count, idx, ret;

	vd_co_mutex_lock(&s->lock);
	count = load(s, &sn, &bytes, err);
	if (count < 0) {
		ret = count;
		goto out;
	}
	idx = find_by_id_and_name(sn, count, id, name);
	if (idx < 0) {
		ret = vd_error_set(err, -ENOENT, "Can't find snapshot");
		goto out;
	}
	e = &sn[idx];
	l1_bytes = (uint64_t)e->l1_size * 8;

	/* QEMU's qcow2_validate_table, then what QEMU leaves to chance: the
	 * table inside the file and clear of the other metadata. */
	if (e->l1_size > QCOW2_MAX_L1_BYTES / 8) {
		ret = vd_error_set(err, -EFBIG, "Snapshot L1 table too large");
		goto out;
	}
	if (qcow2_offset_into_cluster(s, e->l1_offset) || e->l1_offset >= QCOW2_MAX_HOST_OFFSET ||
	    l1_bytes > QCOW2_MAX_HOST_OFFSET - e->l1_offset) {
		ret = vd_error_set(err, -EINVAL, "Snapshot L1 table offset invalid");
		goto out;
	}
	if (file_size < 0) {
		ret = vd_error_setg_errno(err, (int)file_size, "Could not get the image file size");
		goto out;
	}
	if (l1_bytes && e->l1_offset + l1_bytes > (uint64_t)file_size) {
		ret = vd_error_set(err, -EINVAL,
				   "Snapshot L1 table (offset %#" PRIx64 ", %" PRIu32
				   " entries) is past the end of the image file",
				   e->l1_offset, e->l1_size);
		goto out;
	}
	ret = tmp_build(s, &meta, sn, count, idx, bytes);
	if (ret < 0) {
		vd_error_set(err, ret, "Out of memory");
		goto out;
	}
	tmp_merge(&meta);
	hit = l1_bytes ? tmp_query(&meta, e->l1_offset, l1_bytes) : 0;
	if (hit) {
		ret = vd_error_set(err, -EINVAL, "Snapshot L1 table overlaps with %s",
				   qcow2_ol_name((unsigned)__builtin_ctz(hit)));
		goto out;
	}

	l1 = calloc(e->l1_size ? e->l1_size : 1, sizeof(*l1));
	buf = malloc(l1_bytes ? l1_bytes : 1);
	if (!l1 || !buf) {
		ret = vd_error_set(err, -ENOMEM, "Could not allocate the snapshot L1 table");
		goto out;
	}
	ret = read_at(s, e->l1_offset, buf, l1_bytes);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Failed to read l1 table for snapshot");
		goto out;
	}
	/* Every L2 table it names: aligned, after the header, inside the file,
	 * not another table (qcow2.txt "Cluster mapping"). */
	for (uint32_t i = 0; i < e->l1_size; i++) {
		uint64_t l2 = qcow2_be64(buf + 8 * i) & QCOW2_L1E_OFFSET_MASK;

		l1[i] = qcow2_be64(buf + 8 * i);
		if (!l2)
			continue;
		if (qcow2_offset_into_cluster(s, l2) || l2 < s->cluster_size ||
		    l2 > (uint64_t)file_size || s->cluster_size > (uint64_t)file_size - l2) {
			ret = vd_error_set(err, -EINVAL,
					   "Snapshot L1 entry %" PRIu32
					   ": L2 table offset %#" PRIx64 " invalid",
					   i, l2);
			goto out;
		}
		hit = tmp_query(&meta, l2, s->cluster_size);
		if (!hit && l2 < e->l1_offset + l1_bytes && e->l1_offset < l2 + s->cluster_size)
			hit = QCOW2_OL_INACTIVE_L1; /* its own L1 table */
		if (hit) {
			ret = vd_error_set(err, -EINVAL,
					   "Snapshot L1 entry %" PRIu32 ": L2 table at %#" PRIx64
					   " overlaps with %s",
					   i, l2, qcow2_ol_name((unsigned)__builtin_ctz(hit)));
			goto out;
		}
	}

	/* Switch: reads go through the snapshot's tables from now on.  The L2
	 * cache is keyed by host offset, so what it holds stays right. */
	free(s->l1);
	s->l1 = l1;
	l1 = NULL;
	s->l1_size = e->l1_size;
	s->l1_offset = e->l1_offset;
	s->tmp_snapshot = true;
	ret = 0;
out:
	free(buf);
	free(l1);
	free(meta.r);
	qcow2_free_snapshots(sn, count > 0 ? (uint32_t)count : 0);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}
