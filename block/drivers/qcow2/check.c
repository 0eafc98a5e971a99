/* SPDX-License-Identifier: MIT */
/*
 * qcow2 consistency check and repair (qemu-img check).  The counting rules
 * follow QEMU's block/qcow2-refcount.c (qcow2_check_refcounts and helpers)
 * so that both tools report the same numbers for the same image:
 *
 *   1. Walk every reference (header, active L1 and its L2 tables and data,
 *      snapshot L1/L2 tables, snapshot table, refcount table and blocks)
 *      into an in-memory array of computed refcounts, one per host cluster
 *      of the file (plus at most one cluster past its end).
 *   2. Compare with the refcounts on disk: higher on disk is a leak, lower a
 *      corruption; a used cluster with refcount 0 (or a broken refcount
 *      block) needs the refcount structure rebuilt.
 *   3. Check OFLAG_COPIED of the active L1 and L2 entries (refcount == 1).
 *
 * Repairs: leaks and too-low refcounts are set in place; a rebuild writes a
 * new refcount structure after the end of the file from the computed array,
 * switches the header to it, and frees the old one as leaks (as QEMU's
 * rebuild_refcount_structure, which places it differently).  The image is
 * untrusted: every offset is masked and range-checked, and nothing is
 * allocated by a size read from it beyond the limits checked at open.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

#define L2E_STD_RESERVED_MASK 0x3f000000000001feull
#define REFT_RESERVED_MASK 0x1ffull
#define L2_BITMAP_ALL_ALLOC 0xffffffffull

/* The computed refcounts.  32 bits per cluster saturate at the refcount
 * width's maximum, as QEMU's array does. */
struct check {
	struct qcow2_state *s;
	struct vd_check_result *res;
	int fix;
	uint32_t *rc;
	uint64_t nb; /* clusters covered by the comparison */
	uint64_t cap; /* allocated entries */
	uint64_t file_len;
	uint32_t rc_max;
	bool rebuild;
	struct qcow2_snapshot *sn;
	uint64_t sn_bytes;
	uint8_t *l2buf; /* one L2 table */
};

static int pread_file(struct qcow2_state *s, uint64_t off, void *buf, uint64_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, buf, len);
	return vd_co_preadv(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

static int pwrite_file(struct qcow2_state *s, uint64_t off, const void *buf, uint64_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, (void *)buf, len);
	return vd_co_pwritev(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

static int grow_array(struct check *c, uint64_t n)
{
	uint32_t *p;
	uint64_t cap;

	if (n <= c->cap) {
		if (n > c->nb)
			c->nb = n;
		return 0;
	}
	cap = n + n / 4 + 64;
	if (cap > (1ull << 40) / sizeof(uint32_t))
		return -EFBIG;
	p = realloc(c->rc, cap * sizeof(uint32_t));
	if (!p)
		return -ENOMEM;
	memset(p + c->cap, 0, (cap - c->cap) * sizeof(uint32_t));
	c->rc = p;
	c->cap = cap;
	c->nb = n;
	return 0;
}

/* QEMU's qcow2_inc_refcounts_imrt. */
static int inc_refcounts(struct check *c, uint64_t offset, uint64_t size)
{
	struct qcow2_state *s = c->s;
	uint64_t first, last;
	int ret;

	if (size == 0)
		return 0;
	/* The last cluster may be partly past the end of the file. */
	if (offset >= QCOW2_MAX_HOST_OFFSET || size >= QCOW2_MAX_HOST_OFFSET ||
	    (offset + size > c->file_len && offset + size - c->file_len >= s->cluster_size)) {
		vd_message(VD_MSG_ERROR,
			   "ERROR: counting reference for region exceeding the end of the file by "
			   "one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
			   offset, size);
		c->res->corruptions++;
		return 0;
	}
	first = offset >> s->cluster_bits;
	last = (offset + size - 1) >> s->cluster_bits;
	for (uint64_t k = first; k <= last; k++) {
		if (k >= c->nb) {
			ret = grow_array(c, k + 1);
			if (ret < 0) {
				c->res->check_errors++;
				return ret;
			}
		}
		if (c->rc[k] >= c->rc_max) {
			vd_message(VD_MSG_ERROR, "ERROR: overflow cluster offset=0x%" PRIx64,
				   k << s->cluster_bits);
			c->res->corruptions++;
			continue;
		}
		c->rc[k]++;
	}
	return 0;
}

/* QEMU's check_refcounts_l2. */
static int check_l2(struct check *c, uint64_t l2_offset, bool active)
{
	struct qcow2_state *s = c->s;
	struct vd_check_result *r = c->res;
	uint64_t next_contiguous = 0;
	int ret;

	ret = pread_file(s, l2_offset, c->l2buf, s->l2_entries * s->l2_entry_bytes);
	if (ret < 0) {
		vd_message(VD_MSG_ERROR, "ERROR: I/O error in check_refcounts_l2");
		r->check_errors++;
		return ret;
	}
	for (uint64_t i = 0; i < s->l2_entries; i++) {
		uint64_t e = qcow2_l2_entry(s, c->l2buf, i);
		uint64_t bitmap = qcow2_l2_bitmap(s, c->l2buf, i);
		uint64_t off = e & QCOW2_L2E_OFFSET_MASK;

		if (e & QCOW2_OFLAG_COMPRESSED) {
			uint64_t coff, csize;

			if (e & QCOW2_OFLAG_COPIED) {
				vd_message(VD_MSG_ERROR,
					   "ERROR: coffset=0x%" PRIx64
					   ": copied flag must never be set "
					   "for compressed clusters",
					   e & s->coffset_mask);
				e &= ~QCOW2_OFLAG_COPIED;
				r->corruptions++;
			}
			if (bitmap) {
				vd_message(VD_MSG_ERROR,
					   "ERROR compressed cluster %" PRIu64
					   " with non-zero subcluster "
					   "allocation bitmap, entry=0x%" PRIx64,
					   i, e);
				r->corruptions++;
				continue;
			}
			coff = e & s->coffset_mask;
			csize = (((e >> s->csize_shift) & s->csize_mask) + 1) * 512 - (coff & 511);
			ret = inc_refcounts(c, coff, csize);
			if (ret < 0)
				return ret;
			if (active) {
				r->allocated_clusters++;
				r->compressed_clusters++;
				/* QEMU: compressed clusters are fragmented by nature. */
				r->fragmented_clusters++;
			}
			continue;
		}
		if (e & L2E_STD_RESERVED_MASK) {
			vd_message(VD_MSG_ERROR,
				   "ERROR found l2 entry with reserved bits set: %" PRIx64, e);
			r->corruptions++;
		}
		/* QEMU's qcow2_get_cluster_type: the zero flag is ignored with
		 * extended L2 entries (the bitmap says it). */
		if (!off) {
			if (s->extl2 && (bitmap & L2_BITMAP_ALL_ALLOC)) {
				r->corruptions++;
				vd_message(VD_MSG_ERROR,
					   "ERROR: Unallocated cluster has non-zero subcluster "
					   "allocation map");
			}
			continue;
		}
		if ((bitmap >> 32) & bitmap) {
			r->corruptions++;
			vd_message(VD_MSG_ERROR,
				   "ERROR offset=%" PRIx64 ": Allocated cluster has corrupted "
				   "subcluster allocation bitmap",
				   off);
		}
		if (qcow2_offset_into_cluster(s, off)) {
			bool data = s->extl2 ? (bitmap & L2_BITMAP_ALL_ALLOC) != 0
					     : !(e & QCOW2_OFLAG_ZERO);
			r->corruptions++;
			if (data)
				vd_message(VD_MSG_ERROR,
					   "ERROR offset=%" PRIx64 ": Data cluster is not properly "
					   "aligned; L2 entry corrupted.",
					   off);
			else
				vd_message(VD_MSG_ERROR,
					   "ERROR offset=%" PRIx64 ": Preallocated cluster is not "
					   "properly aligned; L2 entry corrupted.",
					   off);
		}
		if (active) {
			r->allocated_clusters++;
			if (next_contiguous && off != next_contiguous)
				r->fragmented_clusters++;
			next_contiguous = off + s->cluster_size;
		}
		ret = inc_refcounts(c, off, s->cluster_size);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* QEMU's check_refcounts_l1.  @l1 is host-endian (the active table) or
 * NULL to read it from @l1_offset. */
static int check_l1(struct check *c, const uint64_t *l1, uint64_t l1_offset, uint32_t l1_size,
		    bool active)
{
	struct qcow2_state *s = c->s;
	uint64_t *table = NULL;
	int ret;

	ret = inc_refcounts(c, l1_offset, (uint64_t)l1_size * 8);
	if (ret < 0)
		return ret;
	if (!l1 && l1_size) {
		uint8_t *buf = malloc((size_t)l1_size * 8);
		table = malloc((size_t)l1_size * 8);
		if (!buf || !table) {
			free(buf);
			free(table);
			c->res->check_errors++;
			return -ENOMEM;
		}
		ret = pread_file(s, l1_offset, buf, (uint64_t)l1_size * 8);
		for (uint32_t i = 0; i < l1_size; i++)
			table[i] = qcow2_be64(buf + 8 * i);
		free(buf);
		if (ret < 0) {
			vd_message(VD_MSG_ERROR, "ERROR: I/O error in check_refcounts_l1");
			c->res->check_errors++;
			free(table);
			return ret;
		}
		l1 = table;
	}
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t l2_offset = l1[i] & QCOW2_L1E_OFFSET_MASK;

		if (!l1[i])
			continue;
		if (l1[i] & QCOW2_L1E_RESERVED_MASK) {
			vd_message(VD_MSG_ERROR,
				   "ERROR found L1 entry with reserved bits set: %" PRIx64, l1[i]);
			c->res->corruptions++;
		}
		ret = inc_refcounts(c, l2_offset, s->cluster_size);
		if (ret < 0)
			break;
		if (qcow2_offset_into_cluster(s, l2_offset)) {
			vd_message(VD_MSG_ERROR,
				   "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 "
				   "entry corrupted",
				   l2_offset);
			c->res->corruptions++;
		}
		ret = check_l2(c, l2_offset, active);
		if (ret < 0)
			break;
	}
	free(table);
	return ret;
}

/* QEMU's check_refblocks (without the file resize: a refcount block past
 * the end of the file is repaired by the rebuild). */
static int check_refblocks(struct check *c)
{
	struct qcow2_state *s = c->s;
	int ret;

	for (uint64_t i = 0; i < s->reftable_size; i++) {
		uint64_t off = s->reftable[i] & QCOW2_REFT_OFFSET_MASK;
		uint64_t cluster = off >> s->cluster_bits;

		if (s->reftable[i] & REFT_RESERVED_MASK) {
			vd_message(VD_MSG_ERROR,
				   "ERROR refcount table entry %" PRIu64 " has reserved bits set",
				   i);
			c->res->corruptions++;
			c->rebuild = true;
			continue;
		}
		if (qcow2_offset_into_cluster(s, off)) {
			vd_message(VD_MSG_ERROR,
				   "ERROR refcount block %" PRIu64
				   " is not cluster aligned; refcount "
				   "table entry corrupted",
				   i);
			c->res->corruptions++;
			c->rebuild = true;
			continue;
		}
		if (cluster >= c->nb) {
			c->res->corruptions++;
			vd_message(VD_MSG_ERROR,
				   "ERROR refcount block %" PRIu64 " is outside image", i);
			c->rebuild = true;
			continue;
		}
		if (off) {
			ret = inc_refcounts(c, off, s->cluster_size);
			if (ret < 0)
				return ret;
			if (c->rc[cluster] != 1) {
				vd_message(VD_MSG_ERROR,
					   "ERROR refcount block %" PRIu64 " refcount=%u", i,
					   c->rc[cluster]);
				c->res->corruptions++;
				c->rebuild = true;
			}
		}
	}
	return 0;
}

/* QEMU's calculate_refcounts. */
/*
 * Persistent dirty bitmaps (qcow2.txt "Bitmaps extension"): while the
 * autoclear bit says the extension is consistent, its directory, every
 * bitmap table and the data clusters the tables name are in use, as QEMU's
 * qcow2_check_bitmaps_refcounts counts them.  We never write bitmaps; a
 * read-write open clears the bit, after which they are leaks for both tools.
 */
#define BITMAP_DIR_MAX (64ull << 20)
#define BITMAP_TABLE_MAX 0x8000000ull
#define BITMAP_TE_OFFSET_MASK 0x00fffffffffffe00ull

static int count_bitmaps(struct check *c)
{
	struct qcow2_state *s = c->s;
	const struct qcow2_ext *e = s->unknown_exts;
	uint8_t *dir = NULL;
	uint64_t *table = NULL;
	int ret = 0;

	while (e && e->type != QCOW2_EXT_BITMAPS)
		e = e->next;
	if (!e || s->version < 3 || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	if (e->len < 24) {
		vd_message(VD_MSG_ERROR, "ERROR bitmaps extension: length %u is too small", e->len);
		c->res->corruptions++;
		return 0;
	}
	uint32_t nb = qcow2_be32(e->data);
	uint64_t dir_size = qcow2_be64(e->data + 8), dir_off = qcow2_be64(e->data + 16);
	if (nb == 0)
		return 0;
	if (dir_size == 0 || dir_size > BITMAP_DIR_MAX || qcow2_offset_into_cluster(s, dir_off) ||
	    dir_off >= c->file_len || dir_size > c->file_len - dir_off) {
		vd_message(VD_MSG_ERROR,
			   "ERROR bitmap directory offset=%#" PRIx64 " size=%#" PRIx64
			   ": out of range or unaligned",
			   dir_off, dir_size);
		c->res->corruptions++;
		return 0;
	}
	ret = inc_refcounts(c, dir_off, dir_size);
	dir = malloc(dir_size);
	if (!dir)
		return -ENOMEM;
	if (ret == 0 && pread_file(s, dir_off, dir, dir_size) < 0) {
		vd_message(VD_MSG_ERROR, "ERROR: I/O error reading the bitmap directory");
		c->res->check_errors++;
		goto out;
	}
	uint64_t pos = 0;
	for (uint32_t i = 0; ret == 0 && i < nb; i++) {
		if (dir_size - pos < 24)
			goto bad_dir;
		const uint8_t *d = dir + pos;
		uint64_t toff = qcow2_be64(d);
		uint32_t tsize = qcow2_be32(d + 8);
		uint16_t name_size = (uint16_t)(d[18] << 8 | d[19]);
		uint32_t extra = qcow2_be32(d + 20);
		uint64_t esize = (24ull + extra + name_size + 7) & ~7ull;

		if (esize > dir_size - pos)
			goto bad_dir;
		pos += esize;
		if (tsize == 0)
			continue;
		if (tsize > BITMAP_TABLE_MAX || qcow2_offset_into_cluster(s, toff) ||
		    toff >= c->file_len || tsize * 8ull > c->file_len - toff) {
			vd_message(VD_MSG_ERROR,
				   "ERROR bitmap %u table offset=%#" PRIx64 " entries=%u: out of "
				   "range or unaligned",
				   i, toff, tsize);
			c->res->corruptions++;
			continue;
		}
		ret = inc_refcounts(c, toff, tsize * 8ull);
		free(table);
		table = malloc(tsize * 8ull);
		if (!table) {
			ret = -ENOMEM;
			break;
		}
		if (ret == 0 && pread_file(s, toff, table, tsize * 8ull) < 0) {
			vd_message(VD_MSG_ERROR, "ERROR: I/O error reading bitmap table %u", i);
			c->res->check_errors++;
			continue;
		}
		for (uint32_t j = 0; ret == 0 && j < tsize; j++) {
			uint64_t off =
				qcow2_be64((const uint8_t *)&table[j]) & BITMAP_TE_OFFSET_MASK;
			if (off)
				ret = inc_refcounts(c, off, s->cluster_size);
		}
	}
	goto out;
bad_dir:
	vd_message(VD_MSG_ERROR, "ERROR bitmap directory: entry runs past the directory");
	c->res->corruptions++;
out:
	free(table);
	free(dir);
	return ret;
}

static int calculate_refcounts(struct check *c)
{
	struct qcow2_state *s = c->s;
	int ret;

	memset(c->rc, 0, c->cap * sizeof(uint32_t));
	ret = inc_refcounts(c, 0, s->cluster_size);
	if (ret == 0)
		ret = check_l1(c, s->l1, s->l1_offset, s->l1_size, true);
	for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
		const struct qcow2_snapshot *sn = &c->sn[i];
		if (qcow2_offset_into_cluster(s, sn->l1_offset)) {
			vd_message(VD_MSG_ERROR,
				   "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not "
				   "cluster aligned; snapshot table entry corrupted",
				   sn->id, sn->name, sn->l1_offset);
			c->res->corruptions++;
			continue;
		}
		if (sn->l1_size > QCOW2_MAX_L1_BYTES / 8) {
			vd_message(VD_MSG_ERROR,
				   "ERROR snapshot %s (%s) l1_size=%#" PRIx32
				   ": L1 table is too large; "
				   "snapshot table entry corrupted",
				   sn->id, sn->name, sn->l1_size);
			c->res->corruptions++;
			continue;
		}
		ret = check_l1(c, NULL, sn->l1_offset, sn->l1_size, false);
	}
	if (ret == 0)
		ret = inc_refcounts(c, s->snapshots_offset, c->sn_bytes);
	if (ret == 0)
		ret = inc_refcounts(c, s->reftable_offset, s->reftable_size * 8);
	if (ret == 0)
		ret = count_bitmaps(c);
	if (ret == 0)
		ret = check_refblocks(c);
	return ret;
}

/* The on-disk refcount, without signalling corruption (this is the check). */
static int disk_refcount(struct check *c, uint64_t idx, uint64_t *rc)
{
	struct qcow2_state *s = c->s;
	uint64_t rbi = idx >> s->rb_bits, off;
	void *block;
	int ret;

	*rc = 0;
	if (rbi >= s->reftable_size)
		return 0;
	off = s->reftable[rbi] & QCOW2_REFT_OFFSET_MASK;
	if (!off)
		return 0;
	if (qcow2_offset_into_cluster(s, off) || off >= QCOW2_MAX_HOST_OFFSET)
		return -EIO;
	ret = qcow2_cache_get(s, &s->rb_cache, off, false, &block);
	if (ret < 0)
		return ret;
	*rc = qcow2_refcount_get_entry(block, s->refcount_order, idx & ((1ull << s->rb_bits) - 1));
	qcow2_cache_put(&s->rb_cache, block);
	return 0;
}

/* Set an existing refcount entry (its block exists: it held a non-zero
 * refcount or the rebuild wrote it). */
static int set_disk_refcount(struct check *c, uint64_t idx, uint64_t value)
{
	struct qcow2_state *s = c->s;
	uint64_t off = s->reftable[idx >> s->rb_bits] & QCOW2_REFT_OFFSET_MASK;
	void *block;
	int ret;

	ret = qcow2_cache_get(s, &s->rb_cache, off, false, &block);
	if (ret < 0)
		return ret;
	qcow2_refcount_set_entry(block, s->refcount_order, idx & ((1ull << s->rb_bits) - 1), value);
	qcow2_cache_mark_dirty(&s->rb_cache, block);
	qcow2_cache_put(&s->rb_cache, block);
	if (value == 0) {
		qcow2_cache_discard(&s->l2_cache, idx << s->cluster_bits, s->cluster_size);
		if (idx < s->free_cluster_index)
			s->free_cluster_index = idx;
	}
	return 0;
}

/* QEMU's compare_refcounts; *highest: the last cluster in use. */
static void compare_refcounts(struct check *c, int fix, uint64_t *highest)
{
	struct qcow2_state *s = c->s;
	struct vd_check_result *r = c->res;

	*highest = 0;
	for (uint64_t i = 0; i < c->nb; i++) {
		uint64_t disk, computed = c->rc[i];
		int *fixed = NULL;
		int ret = disk_refcount(c, i, &disk);

		if (ret < 0) {
			vd_message(VD_MSG_ERROR, "Can't get refcount for cluster %" PRIu64 ": %s",
				   i, strerror(-ret));
			r->check_errors++;
			continue;
		}
		if (disk > 0 || computed > 0)
			*highest = i;
		if (disk == computed)
			continue;
		if (disk == 0)
			c->rebuild = true;
		else if (disk > computed && (fix & VD_CHECK_FIX_LEAKS))
			fixed = &r->leaks_fixed;
		else if (disk < computed && (fix & VD_CHECK_FIX_ERRORS))
			fixed = &r->corruptions_fixed;
		vd_message(fixed	     ? VD_MSG_INFO
			   : disk < computed ? VD_MSG_ERROR
					     : VD_MSG_WARNING,
			   "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
			   fixed	     ? "Repairing"
			   : disk < computed ? "ERROR"
					     : "Leaked",
			   i, disk, computed);
		if (fixed && set_disk_refcount(c, i, computed) == 0) {
			(*fixed)++;
			continue;
		}
		if (disk < computed)
			r->corruptions++;
		else
			r->leaks++;
	}
	(void)s;
}

/*
 * A new refcount structure from the computed array: refcount blocks for
 * every block index up to the end, then the table, all placed at the end
 * of the file (clusters nobody references).  Order: blocks and table
 * written and flushed, then the header switched, then the old structure
 * left to the leak repair that follows.
 */
static int rebuild_refcounts(struct check *c)
{
	struct qcow2_state *s = c->s;
	uint64_t per_block = 1ull << s->rb_bits, start = c->nb;
	uint64_t nblocks = 0, ntable = 0, table_entries, *table = NULL;
	uint8_t *buf = NULL, hdr[12];
	int ret;

	for (int iter = 0; iter < 8; iter++) {
		uint64_t end = start + nblocks + ntable;
		uint64_t nb2 = (end + per_block - 1) / per_block;
		uint64_t nt2 = (nb2 * 8 + s->cluster_size - 1) >> s->cluster_bits;
		if (nb2 == nblocks && nt2 == ntable)
			break;
		nblocks = nb2;
		ntable = nt2;
	}
	if (((start + nblocks + ntable) << s->cluster_bits) >= QCOW2_MAX_HOST_OFFSET ||
	    ntable << s->cluster_bits > QCOW2_MAX_REFTABLE_BYTES)
		return -EFBIG;
	ret = grow_array(c, start + nblocks + ntable);
	if (ret < 0)
		return ret;
	for (uint64_t k = start; k < start + nblocks + ntable; k++)
		c->rc[k] = 1;
	table_entries = (ntable << s->cluster_bits) / 8;
	table = calloc(table_entries, sizeof(uint64_t));
	buf = vd_memalign(4096, s->cluster_size * (ntable > 1 ? ntable : 1));
	if (!table || !buf) {
		ret = -ENOMEM;
		goto out;
	}
	ret = qcow2_cache_write_back(s, &s->rb_cache);
	if (ret < 0)
		goto out;
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t boff = (start + b) << s->cluster_bits;
		memset(buf, 0, s->cluster_size);
		for (uint64_t j = 0; j < per_block && b * per_block + j < c->nb; j++)
			qcow2_refcount_set_entry(buf, s->refcount_order, j,
						 c->rc[b * per_block + j]);
		ret = pwrite_file(s, boff, buf, s->cluster_size);
		if (ret < 0)
			goto out;
		table[b] = boff;
	}
	memset(buf, 0, ntable << s->cluster_bits);
	for (uint64_t i = 0; i < table_entries; i++)
		qcow2_put_be64(buf + 8 * i, table[i]);
	ret = pwrite_file(s, (start + nblocks) << s->cluster_bits, buf, ntable << s->cluster_bits);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		goto out;
	/* qcow2.txt "Header": refcount_table_offset (48) and _clusters (56). */
	qcow2_put_be64(hdr, (start + nblocks) << s->cluster_bits);
	qcow2_put_be32(hdr + 8, (uint32_t)ntable);
	ret = pwrite_file(s, 48, hdr, sizeof(hdr));
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		goto out;
	qcow2_cache_discard(&s->rb_cache, 1, UINT64_MAX - 1);
	free(s->reftable);
	s->reftable = table;
	table = NULL;
	s->reftable_size = table_entries;
	s->reftable_offset = (start + nblocks) << s->cluster_bits;
	s->reftable_clusters = (uint32_t)ntable;
	s->free_cluster_index = 0;
	c->file_len = (start + nblocks + ntable) << s->cluster_bits;
out:
	free(table);
	free(buf);
	return ret;
}

/* QEMU's check_oflag_copied, on the active tables. */
static int check_oflag_copied(struct check *c, int fix)
{
	struct qcow2_state *s = c->s;
	struct vd_check_result *r = c->res;
	bool repair;
	int ret;

	if (fix & VD_CHECK_FIX_ERRORS)
		repair = true;
	else if (fix & VD_CHECK_FIX_LEAKS)
		repair = !r->check_errors && !r->corruptions && !r->leaks;
	else
		repair = false;

	for (uint32_t i = 0; i < s->l1_size; i++) {
		uint64_t l1e = s->l1[i], l2_offset = l1e & QCOW2_L1E_OFFSET_MASK, rc;
		uint64_t l2_bytes = s->l2_entries * s->l2_entry_bytes;
		int dirty = 0;

		if (!l2_offset)
			continue;
		if (disk_refcount(c, l2_offset >> s->cluster_bits, &rc) < 0)
			continue;
		if ((rc == 1) != ((l1e & QCOW2_OFLAG_COPIED) != 0)) {
			r->corruptions++;
			vd_message(repair ? VD_MSG_INFO : VD_MSG_ERROR,
				   "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%" PRIx64
				   " refcount=%" PRIu64,
				   repair ? "Repairing" : "ERROR", i, l1e, rc);
			if (repair) {
				uint64_t ne = rc == 1 ? l1e | QCOW2_OFLAG_COPIED
						      : l1e & ~QCOW2_OFLAG_COPIED;
				uint8_t be[8];
				qcow2_put_be64(be, ne);
				ret = qcow2_check_overlap(s, QCOW2_OL_ACTIVE_L1,
							  s->l1_offset + 8ull * i, 8);
				if (ret == 0)
					ret = pwrite_file(s, s->l1_offset + 8ull * i, be, 8);
				if (ret < 0) {
					r->check_errors++;
					return ret;
				}
				s->l1[i] = ne;
				r->corruptions--;
				r->corruptions_fixed++;
			}
		}
		ret = pread_file(s, l2_offset, c->l2buf, l2_bytes);
		if (ret < 0) {
			vd_message(VD_MSG_ERROR, "ERROR: Could not read L2 table: %s",
				   strerror(-ret));
			r->check_errors++;
			return ret;
		}
		for (uint64_t j = 0; j < s->l2_entries; j++) {
			uint64_t e = qcow2_l2_entry(s, c->l2buf, j);
			uint64_t off = e & QCOW2_L2E_OFFSET_MASK;

			if ((e & QCOW2_OFLAG_COMPRESSED) || !off)
				continue;
			if (disk_refcount(c, off >> s->cluster_bits, &rc) < 0)
				continue;
			if ((rc == 1) != ((e & QCOW2_OFLAG_COPIED) != 0)) {
				r->corruptions++;
				vd_message(repair ? VD_MSG_INFO : VD_MSG_ERROR,
					   "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
					   " refcount=%" PRIu64,
					   repair ? "Repairing" : "ERROR", e, rc);
				if (repair) {
					qcow2_set_l2_entry(s, c->l2buf, j,
							   rc == 1 ? e | QCOW2_OFLAG_COPIED
								   : e & ~QCOW2_OFLAG_COPIED);
					dirty++;
				}
			}
		}
		if (dirty) {
			ret = qcow2_check_overlap(s, QCOW2_OL_ACTIVE_L2, l2_offset, l2_bytes);
			if (ret == 0) {
				qcow2_cache_discard(&s->l2_cache, l2_offset, s->cluster_size);
				ret = pwrite_file(s, l2_offset, c->l2buf, l2_bytes);
			}
			if (ret < 0) {
				vd_message(VD_MSG_ERROR, "ERROR: Could not write L2 table: %s",
					   strerror(-ret));
				r->check_errors++;
				return ret;
			}
			r->corruptions -= dirty;
			r->corruptions_fixed += dirty;
		}
	}
	return 0;
}

/* QEMU's qcow2_check_refcounts. */
static int check_refcounts(struct check *c)
{
	struct qcow2_state *s = c->s;
	struct vd_check_result *r = c->res, before;
	uint64_t highest = 0;
	int ret;

	r->total_clusters = (int64_t)((s->size + s->cluster_size - 1) >> s->cluster_bits);
	ret = calculate_refcounts(c);
	if (ret < 0)
		return ret;
	before = *r;
	compare_refcounts(c, 0, &highest);
	if (c->rebuild && (c->fix & VD_CHECK_FIX_ERRORS)) {
		struct vd_check_result old = *r, saved;
		int fresh_leaks = 0;

		vd_message(VD_MSG_INFO, "Rebuilding refcount structure");
		ret = rebuild_refcounts(c);
		if (ret < 0) {
			vd_message(VD_MSG_ERROR,
				   "ERROR could not rebuild the refcount structure: %s",
				   strerror(-ret));
			r->check_errors++;
			return ret;
		}
		r->corruptions = 0;
		r->leaks = 0;
		r->allocated_clusters = r->fragmented_clusters = r->compressed_clusters = 0;
		c->rebuild = false;
		ret = calculate_refcounts(c);
		if (ret < 0)
			return ret;
		/* The old structure is leaked now: free it. */
		saved = *r;
		memset(r, 0, sizeof(*r));
		compare_refcounts(c, VD_CHECK_FIX_LEAKS, &highest);
		if (c->rebuild)
			vd_message(VD_MSG_ERROR,
				   "ERROR rebuilt refcount structure is still broken");
		fresh_leaks = r->leaks;
		*r = saved;
		if (r->corruptions < old.corruptions)
			r->corruptions_fixed += old.corruptions - r->corruptions;
		if (r->leaks < old.leaks)
			r->leaks_fixed += old.leaks - r->leaks;
		r->leaks += fresh_leaks;
	} else if (c->fix) {
		if (c->rebuild) {
			vd_message(VD_MSG_ERROR, "ERROR need to rebuild refcount structures");
			r->check_errors++;
			return -EIO;
		}
		if (r->leaks || r->corruptions) {
			*r = before;
			compare_refcounts(c, c->fix, &highest);
		}
	}
	ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0) {
		r->check_errors++;
		return ret;
	}
	ret = check_oflag_copied(c, c->fix);
	if (ret < 0)
		return ret;
	r->image_end_offset = (int64_t)((highest + 1) << s->cluster_bits);
	return 0;
}

int qcow2_check_locked(struct qcow2_state *s, struct vd_check_result *res, int fix)
{
	struct check c = {.s = s, .res = res, .fix = fix};
	struct vd_error err = {0};
	int64_t len;
	uint32_t dropped = 0, incomplete = 0;
	int ret;

	memset(res, 0, sizeof(*res));
	if (fix && s->read_only)
		return -EROFS;
	c.rc_max = s->refcount_max < UINT32_MAX ? (uint32_t)s->refcount_max : UINT32_MAX;
	/* Metadata in the caches reaches the file first: the walk reads it. */
	ret = qcow2_cache_write_back(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_write_back(s, &s->rb_cache);
	if (ret < 0) {
		res->check_errors++;
		return ret;
	}
	len = vd_node_size(s->node->file);
	if (len < 0) {
		res->check_errors++;
		return (int)len;
	}
	c.file_len = (uint64_t)len;
	if ((c.file_len >> s->cluster_bits) > INT32_MAX) {
		res->check_errors++;
		return -EFBIG;
	}
	/* The snapshot table, repaired as QEMU's qcow2_check_read_snapshot_table
	 * does under -r all: extra data past QCOW2_MAX_SNAPSHOT_EXTRA is
	 * dropped, and an entry of a version 3 image without disk_size in its
	 * extra data gets it; the table is then written anew. */
	ret = qcow2_read_snapshots_repair(s, &c.sn, &c.sn_bytes,
					  (fix & VD_CHECK_FIX_ERRORS) ? &dropped : NULL, &err);
	if (ret < 0) {
		vd_message(VD_MSG_ERROR, "ERROR: %s", err.msg);
		if (ret == -EFBIG && strstr(err.msg, "extra metadata"))
			vd_message(VD_MSG_ERROR, "You can force-remove this extra metadata with "
						 "vdisk check -r all");
		res->check_errors++;
		return ret;
	}
	for (uint32_t i = 0; s->version >= 3 && i < s->nb_snapshots; i++) {
		if (c.sn[i].extra_size >= 16)
			continue;
		vd_message((fix & VD_CHECK_FIX_ERRORS) ? VD_MSG_INFO : VD_MSG_ERROR,
			   "%s snapshot table entry %u is incomplete",
			   (fix & VD_CHECK_FIX_ERRORS) ? "Repairing" : "ERROR", i);
		incomplete++;
	}
	if ((dropped || incomplete) && (fix & VD_CHECK_FIX_ERRORS)) {
		ret = qcow2_rewrite_snapshots(s, c.sn, s->nb_snapshots, c.sn_bytes, &c.sn_bytes);
		if (ret < 0) {
			vd_message(VD_MSG_ERROR,
				   "ERROR: could not write the repaired snapshot table: %s",
				   strerror(-ret));
			res->check_errors++;
			goto out;
		}
		res->corruptions_fixed += (int)(dropped + incomplete);
	} else {
		res->corruptions += (int)incomplete;
	}
	c.l2buf = malloc(s->l2_entries * s->l2_entry_bytes);
	ret = c.l2buf ? grow_array(&c, (c.file_len + s->cluster_size - 1) >> s->cluster_bits)
		      : -ENOMEM;
	if (ret < 0) {
		res->check_errors++;
		goto out;
	}
	ret = check_refcounts(&c);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret == 0 && fix && !res->check_errors && !res->corruptions &&
	    (s->incompat & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT))) {
		/* QEMU's qcow2_mark_clean and qcow2_mark_consistent. */
		ret = qcow2_write_incompat(
			s, s->incompat & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT));
		s->dirty_marked = false;
	}
	/* Repairs may have moved refcount blocks or the table: index anew. */
	if (fix && s->ol_ready && !s->read_only)
		qcow2_overlap_rebuild(s);
out:
	qcow2_free_snapshots(c.sn, s->nb_snapshots);
	free(c.rc);
	free(c.l2buf);
	return ret;
}

int qcow2_co_check(struct vd_node *n, struct vd_check_result *res, int fix)
{
	struct qcow2_state *s = n->opaque;
	int ret;

	vd_co_mutex_lock(&s->lock);
	ret = qcow2_check_locked(s, res, fix);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}
