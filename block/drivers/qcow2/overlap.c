/* SPDX-License-Identifier: MIT */
/*
 * qcow2 metadata overlap protection: an index of the host clusters that hold
 * metadata, and the check made before every write to the image file.
 *
 * Why: every offset in an image is under the control of whoever made the
 * image.  An L2 entry (qcow2.txt "Cluster mapping") may point a guest
 * cluster at the refcount table, at an L1 or L2 table, at the snapshot table
 * (qcow2.txt "Snapshots"), or the refcounts (qcow2.txt "Host cluster
 * management") may call such a cluster free so that the allocator hands it
 * out for data.  A guest write would then go straight over the table.  QEMU
 * refuses such writes ("Preventing invalid write on metadata") and sets the
 * corrupt bit (qcow2.txt "Header", incompatible_features bit 1); so do we,
 * with QEMU's classes (QCOW2_OL_*) and its overlap-check option.
 *
 * How: QEMU's default ("cached") walks the whole L1 table and refcount table
 * on every write.  We keep the metadata clusters in an open-addressing hash
 * keyed by host cluster index; each slot counts the references of each
 * class to that cluster, so a table referenced twice (a corrupt image, or an
 * L2 table of the active L1 that a snapshot shares) stays protected until
 * its last reference goes.  A query costs one lookup per cluster the write
 * touches, independent of the image size.
 *
 * Granularity is the cluster: a table that ends inside a cluster protects
 * the rest of it too (QEMU compares byte ranges).  Every table starts on a
 * cluster boundary and owns its clusters through its refcount, so nothing of
 * a valid image lives in that tail.
 *
 * Memory is bounded: at most QCOW2_OL_MAX_SLOTS clusters are indexed one by
 * one; what a hostile image adds beyond that (say 65536 snapshots, each
 * with a 32 MiB L1 table somewhere else) is kept as a list of extents and
 * compared one by one, as QEMU always does.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

#define EMPTY UINT64_MAX
#define MIN_CAP 64

/* Names as in QEMU's metadata_ol_names[] (block/qcow2-refcount.c). */
static const char *const class_names[QCOW2_OL_COUNT] = {
	[QCOW2_OL_MAIN_HEADER_BITNR] = "qcow2_header",
	[QCOW2_OL_ACTIVE_L1_BITNR] = "active L1 table",
	[QCOW2_OL_ACTIVE_L2_BITNR] = "active L2 table",
	[QCOW2_OL_REFCOUNT_TABLE_BITNR] = "refcount table",
	[QCOW2_OL_REFCOUNT_BLOCK_BITNR] = "refcount block",
	[QCOW2_OL_SNAPSHOT_TABLE_BITNR] = "snapshot table",
	[QCOW2_OL_INACTIVE_L1_BITNR] = "inactive L1 table",
	[QCOW2_OL_INACTIVE_L2_BITNR] = "inactive L2 table",
	[QCOW2_OL_BITMAP_DIRECTORY_BITNR] = "bitmap directory",
};

const char *qcow2_ol_name(unsigned bitnr)
{
	return bitnr < QCOW2_OL_COUNT ? class_names[bitnr] : "unknown";
}

int qcow2_ol_init(struct qcow2_ol_index *ix, uint32_t cluster_bits)
{
	memset(ix, 0, sizeof(*ix));
	ix->cluster_bits = cluster_bits;
	ix->max_slots = QCOW2_OL_MAX_SLOTS;
	return 0;
}

void qcow2_ol_destroy(struct qcow2_ol_index *ix)
{
	free(ix->slots);
	free(ix->extents);
	ix->slots = NULL;
	ix->extents = NULL;
	ix->cap = ix->used = 0;
	ix->nextents = ix->extents_cap = 0;
}

void qcow2_ol_clear(struct qcow2_ol_index *ix)
{
	for (uint64_t i = 0; i < ix->cap; i++)
		ix->slots[i].cluster = EMPTY;
	ix->used = 0;
	ix->nextents = 0;
}

static uint64_t hash(uint64_t cluster, uint64_t cap)
{
	/* Fibonacci hashing: metadata clusters are often consecutive. */
	return (cluster * 0x9e3779b97f4a7c15ull) >> 32 & (cap - 1);
}

static struct qcow2_ol_slot *lookup(const struct qcow2_ol_index *ix, uint64_t cluster)
{
	if (!ix->used)
		return NULL;
	for (uint64_t i = hash(cluster, ix->cap);; i = (i + 1) & (ix->cap - 1)) {
		struct qcow2_ol_slot *sl = &ix->slots[i];
		if (sl->cluster == cluster)
			return sl;
		if (sl->cluster == EMPTY)
			return NULL;
	}
}

static int grow(struct qcow2_ol_index *ix)
{
	uint64_t ncap = ix->cap ? ix->cap * 2 : MIN_CAP;
	struct qcow2_ol_slot *old = ix->slots, *ns;
	uint64_t ocap = ix->cap;

	ns = malloc(ncap * sizeof(*ns));
	if (!ns)
		return -ENOMEM;
	for (uint64_t i = 0; i < ncap; i++)
		ns[i].cluster = EMPTY;
	for (uint64_t i = 0; i < ocap; i++) {
		uint64_t j;
		if (old[i].cluster == EMPTY)
			continue;
		for (j = hash(old[i].cluster, ncap); ns[j].cluster != EMPTY;
		     j = (j + 1) & (ncap - 1))
			;
		ns[j] = old[i];
	}
	free(old);
	ix->slots = ns;
	ix->cap = ncap;
	return 0;
}

/* Find or make the slot of @cluster; NULL when out of memory. */
static struct qcow2_ol_slot *insert(struct qcow2_ol_index *ix, uint64_t cluster)
{
	struct qcow2_ol_slot *sl = lookup(ix, cluster);
	uint64_t i;

	if (sl)
		return sl;
	/* Load factor at most 1/2: short probe sequences. */
	if ((ix->used + 1) * 2 > ix->cap && grow(ix) < 0)
		return NULL;
	for (i = hash(cluster, ix->cap); ix->slots[i].cluster != EMPTY; i = (i + 1) & (ix->cap - 1))
		;
	sl = &ix->slots[i];
	memset(sl, 0, sizeof(*sl));
	sl->cluster = cluster;
	ix->used++;
	return sl;
}

/* Remove slot @i and close the gap (backward-shift deletion: no tombstones,
 * so lookups never slow down after many removals). */
static void delete_at(struct qcow2_ol_index *ix, uint64_t i)
{
	uint64_t mask = ix->cap - 1, j = i;

	for (;;) {
		j = (j + 1) & mask;
		if (ix->slots[j].cluster == EMPTY)
			break;
		uint64_t home = hash(ix->slots[j].cluster, ix->cap);
		/* Move j back into i unless its home lies cyclically in (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
			ix->slots[i] = ix->slots[j];
			i = j;
		}
	}
	ix->slots[i].cluster = EMPTY;
	ix->used--;
}

/* Clip [offset, offset + bytes) to host offsets below 2^56 (qcow2.txt: all
 * host offsets are below that) and turn it into clusters [*first, *end).
 * False if nothing is left. */
static bool to_clusters(const struct qcow2_ol_index *ix, uint64_t offset, uint64_t bytes,
			uint64_t *first, uint64_t *end)
{
	if (bytes == 0 || offset >= QCOW2_MAX_HOST_OFFSET)
		return false;
	if (bytes > QCOW2_MAX_HOST_OFFSET - offset)
		bytes = QCOW2_MAX_HOST_OFFSET - offset;
	*first = offset >> ix->cluster_bits;
	*end = ((offset + bytes - 1) >> ix->cluster_bits) + 1;
	return true;
}

static int add_extent(struct qcow2_ol_index *ix, unsigned bitnr, uint64_t first, uint64_t end)
{
	if (ix->nextents == ix->extents_cap) {
		size_t ncap = ix->extents_cap ? ix->extents_cap * 2 : 16;
		struct qcow2_ol_extent *ne = realloc(ix->extents, ncap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		ix->extents = ne;
		ix->extents_cap = ncap;
	}
	ix->extents[ix->nextents++] = (struct qcow2_ol_extent){first, end, bitnr};
	return 0;
}

int qcow2_ol_add(struct qcow2_ol_index *ix, unsigned bitnr, uint64_t offset, uint64_t bytes)
{
	uint64_t first, end;

	if (bitnr >= QCOW2_OL_COUNT)
		return -EINVAL;
	if (!to_clusters(ix, offset, bytes, &first, &end))
		return 0;
	/* Over budget: one extent instead of end - first slots. */
	if (end - first > ix->max_slots || ix->used + (end - first) > ix->max_slots)
		return add_extent(ix, bitnr, first, end);
	for (uint64_t c = first; c < end; c++) {
		struct qcow2_ol_slot *sl = insert(ix, c);
		if (!sl)
			return -ENOMEM; /* what was added stays: stricter, never laxer */
		/* Saturated counts stay: a cluster referenced 255 times by one
		 * class is never released (only corrupt images get there). */
		if (sl->refs[bitnr] < UINT8_MAX)
			sl->refs[bitnr]++;
		sl->mask |= (uint16_t)(1u << bitnr);
	}
	return 0;
}

void qcow2_ol_remove(struct qcow2_ol_index *ix, unsigned bitnr, uint64_t offset, uint64_t bytes)
{
	uint64_t first, end;

	if (bitnr >= QCOW2_OL_COUNT || !to_clusters(ix, offset, bytes, &first, &end))
		return;
	/* Added as an extent?  Then it goes as one. */
	for (size_t k = ix->nextents; k-- > 0;) {
		struct qcow2_ol_extent *e = &ix->extents[k];
		if (e->bitnr == bitnr && e->first == first && e->end == end) {
			*e = ix->extents[--ix->nextents];
			return;
		}
	}
	for (uint64_t c = first; c < end && ix->used; c++) {
		struct qcow2_ol_slot *sl = lookup(ix, c);
		if (!sl || !sl->refs[bitnr] || sl->refs[bitnr] == UINT8_MAX)
			continue;
		if (--sl->refs[bitnr])
			continue;
		sl->mask &= (uint16_t) ~(1u << bitnr);
		if (!sl->mask)
			delete_at(ix, (uint64_t)(sl - ix->slots));
	}
}

void qcow2_ol_remove_class(struct qcow2_ol_index *ix, unsigned bitnr)
{
	if (bitnr >= QCOW2_OL_COUNT)
		return;
	for (size_t k = ix->nextents; k-- > 0;)
		if (ix->extents[k].bitnr == bitnr)
			ix->extents[k] = ix->extents[--ix->nextents];
	/* Removing shifts later slots back: revisit a slot after a delete. */
	for (uint64_t i = 0; i < ix->cap;) {
		struct qcow2_ol_slot *sl = &ix->slots[i];
		if (sl->cluster != EMPTY && (sl->mask & (1u << bitnr))) {
			sl->refs[bitnr] = 0;
			sl->mask &= (uint16_t) ~(1u << bitnr);
			if (!sl->mask) {
				delete_at(ix, i);
				continue;
			}
		}
		i++;
	}
}

unsigned qcow2_ol_query(const struct qcow2_ol_index *ix, uint64_t offset, uint64_t bytes)
{
	uint64_t first, end;
	unsigned mask = 0;

	if (!to_clusters(ix, offset, bytes, &first, &end))
		return 0;
	if (ix->used && end - first > ix->cap) {
		/* A write larger than the index: look at the index instead. */
		for (uint64_t i = 0; i < ix->cap; i++) {
			const struct qcow2_ol_slot *sl = &ix->slots[i];
			if (sl->cluster != EMPTY && sl->cluster >= first && sl->cluster < end)
				mask |= sl->mask;
		}
	} else if (ix->used) {
		for (uint64_t c = first; c < end; c++) {
			const struct qcow2_ol_slot *sl = lookup(ix, c);
			if (sl)
				mask |= sl->mask;
		}
	}
	for (size_t k = 0; k < ix->nextents; k++) {
		const struct qcow2_ol_extent *e = &ix->extents[k];
		if (first < e->end && e->first < end)
			mask |= 1u << e->bitnr;
	}
	return mask;
}

/* --- the check and the options -------------------------------------------- */

int qcow2_check_overlap(struct qcow2_state *s, unsigned ignore, uint64_t offset, uint64_t size)
{
	unsigned chk = s->ol_checks & ~ignore, hit;

	if (!chk || !s->ol_ready)
		return 0;
	if (s->ol_broken)
		return -EIO; /* unchecked writes are not made */
	hit = qcow2_ol_query(&s->ol, offset, size) & chk;
	if (!hit)
		return 0;
	/* QEMU's qcow2_pre_write_overlap_check: the lowest class is named. */
	return qcow2_signal_corruption(s, "Preventing invalid write on metadata (overlaps with %s)",
				       qcow2_ol_name((unsigned)__builtin_ctz(hit)));
}

int qcow2_check_free_overlap(struct qcow2_state *s, uint64_t offset, uint64_t size)
{
	unsigned hit;

	if (!s->ol_checks || !s->ol_ready || s->ol_broken)
		return 0;
	hit = qcow2_ol_query(&s->ol, offset, size) & s->ol_checks;
	if (!hit)
		return 0;
	return qcow2_signal_corruption(s,
				       "Preventing invalid free of metadata (data cluster overlaps "
				       "with %s)",
				       qcow2_ol_name((unsigned)__builtin_ctz(hit)));
}

/* QEMU's overlap_bool_option_names[] (block/qcow2.c), in class order. */
static const char *const class_keys[QCOW2_OL_COUNT] = {
	"overlap-check.main-header",	  "overlap-check.active-l1",
	"overlap-check.active-l2",	  "overlap-check.refcount-table",
	"overlap-check.refcount-block",	  "overlap-check.snapshot-table",
	"overlap-check.inactive-l1",	  "overlap-check.inactive-l2",
	"overlap-check.bitmap-directory",
};

static const char *const mode_names[] = {"none", "constant", "cached", "all", NULL};
static const unsigned mode_masks[] = {0, QCOW2_OL_CONSTANT, QCOW2_OL_CACHED, QCOW2_OL_ALL};

/*
 * overlap-check=MODE, or the dictionary form overlap-check.template=MODE
 * with overlap-check.<class>=on|off overriding the template's choice of
 * each class (QEMU's qcow2_update_options_prepare; default "cached").  The
 * option grammar holds a key either as a value or as a dictionary, so the
 * two forms do not mix, as in QEMU's --blockdev.
 */
int qcow2_overlap_opts(struct qcow2_state *s, struct vd_opts *opts, struct vd_error *err)
{
	const char *mode = NULL;
	unsigned template = QCOW2_OL_CACHED, checks = 0;
	int ret;

	if (vd_opts_peek(opts, "overlap-check"))
		mode = vd_opts_get(opts, "overlap-check");
	else if (vd_opts_peek(opts, "overlap-check.template"))
		mode = vd_opts_get(opts, "overlap-check.template");
	if (mode) {
		int i;
		for (i = 0; mode_names[i] && strcmp(mode, mode_names[i]); i++)
			;
		if (!mode_names[i])
			return vd_error_set(err, -EINVAL,
					    "Unsupported value '%s' for qcow2 option "
					    "'overlap-check'. Allowed are any of the following: "
					    "none, constant, cached, all",
					    mode);
		template = mode_masks[i];
	}
	for (unsigned b = 0; b < QCOW2_OL_COUNT; b++) {
		bool on;
		ret = vd_opts_get_bool(opts, class_keys[b], (template >> b) & 1, &on, err);
		if (ret < 0)
			return ret;
		checks |= (unsigned)on << b;
	}
	s->ol_checks = checks;
	return 0;
}

/* --- upkeep ------------------------------------------------------------------ */

void qcow2_overlap_add(struct qcow2_state *s, unsigned bitnr, uint64_t offset, uint64_t bytes)
{
	if (s->ol_ready && qcow2_ol_add(&s->ol, bitnr, offset, bytes) < 0)
		s->ol_broken = true;
}

void qcow2_overlap_remove(struct qcow2_state *s, unsigned bitnr, uint64_t offset, uint64_t bytes)
{
	if (s->ol_ready)
		qcow2_ol_remove(&s->ol, bitnr, offset, bytes);
}

/* The L2 tables a snapshot's L1 table names (for inactive-l2 checks). */
static int add_snapshot_l2s(struct qcow2_state *s, const struct qcow2_snapshot *sn)
{
	uint64_t bytes = (uint64_t)sn->l1_size * 8;
	uint8_t *buf;
	struct vd_qiov q;
	int ret;

	/* As QEMU's qcow2_validate_table: a table that cannot be valid names
	 * nothing. */
	if (!sn->l1_size || bytes > QCOW2_MAX_L1_BYTES ||
	    qcow2_offset_into_cluster(s, sn->l1_offset) || sn->l1_offset >= QCOW2_MAX_HOST_OFFSET ||
	    bytes > QCOW2_MAX_HOST_OFFSET - sn->l1_offset)
		return 0;
	buf = malloc(bytes);
	if (!buf)
		return -ENOMEM;
	vd_qiov_init_buf(&q, buf, bytes);
	ret = vd_co_preadv(s->node->file, (int64_t)sn->l1_offset, (int64_t)bytes, &q, 0);
	for (uint64_t i = 0; ret == 0 && i < sn->l1_size; i++) {
		uint64_t off = qcow2_be64(buf + 8 * i) & QCOW2_L1E_OFFSET_MASK;
		if (off)
			ret = qcow2_ol_add(&s->ol, QCOW2_OL_INACTIVE_L2_BITNR, off,
					   s->cluster_size);
	}
	free(buf);
	return ret;
}

int qcow2_overlap_rebuild(struct qcow2_state *s)
{
	struct qcow2_ol_index *ix = &s->ol;
	struct qcow2_snapshot *sn = NULL;
	uint64_t cs = s->cluster_size, table_bytes = 0;
	int n = 0, ret = 0;

	if (!s->ol_ready) {
		qcow2_ol_init(ix, s->cluster_bits);
		s->ol_ready = true;
	}
	qcow2_ol_clear(ix);
	s->ol_broken = false;
	/* qcow2.txt "Header": the first cluster holds the header, its
	 * extensions and the backing file name. */
	ret = qcow2_ol_add(ix, QCOW2_OL_MAIN_HEADER_BITNR, 0, cs);
	if (ret == 0)
		ret = qcow2_ol_add(ix, QCOW2_OL_ACTIVE_L1_BITNR, s->l1_offset,
				   (uint64_t)s->l1_size * 8);
	for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++) {
		uint64_t off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
		if (off)
			ret = qcow2_ol_add(ix, QCOW2_OL_ACTIVE_L2_BITNR, off, cs);
	}
	if (ret == 0)
		ret = qcow2_ol_add(ix, QCOW2_OL_REFCOUNT_TABLE_BITNR, s->reftable_offset,
				   (uint64_t)s->reftable_clusters * cs);
	for (uint64_t i = 0; ret == 0 && i < s->reftable_size; i++) {
		uint64_t off = s->reftable[i] & QCOW2_REFT_OFFSET_MASK;
		if (off)
			ret = qcow2_ol_add(ix, QCOW2_OL_REFCOUNT_BLOCK_BITNR, off, cs);
	}
	if (ret == 0 && s->ol_bitmap_dir_bytes)
		ret = qcow2_ol_add(ix, QCOW2_OL_BITMAP_DIRECTORY_BITNR, s->ol_bitmap_dir_offset,
				   s->ol_bitmap_dir_bytes);
	if (ret < 0)
		goto fail;

	/* qcow2.txt "Snapshots": the table, each snapshot's L1 table and,
	 * when inactive-l2 is checked, the L2 tables those name. */
	if (s->nb_snapshots) {
		n = qcow2_read_snapshots(s, &sn, &table_bytes, NULL);
		if (n < 0) {
			/* Unreadable: protect what the header says is there. */
			qcow2_ol_add(ix, QCOW2_OL_SNAPSHOT_TABLE_BITNR, s->snapshots_offset, cs);
			ret = n;
			goto fail;
		}
	}
	s->ol_snapshots_bytes = table_bytes;
	ret = qcow2_ol_add(ix, QCOW2_OL_SNAPSHOT_TABLE_BITNR, s->snapshots_offset, table_bytes);
	for (int i = 0; ret == 0 && i < n; i++) {
		uint64_t bytes = (uint64_t)sn[i].l1_size * 8;
		if (bytes > QCOW2_MAX_L1_BYTES)
			bytes = QCOW2_MAX_L1_BYTES;
		ret = qcow2_ol_add(ix, QCOW2_OL_INACTIVE_L1_BITNR, sn[i].l1_offset, bytes);
		if (ret == 0 && (s->ol_checks & QCOW2_OL_INACTIVE_L2))
			ret = add_snapshot_l2s(s, &sn[i]);
	}
	qcow2_free_snapshots(sn, (uint32_t)(n > 0 ? n : 0));
	if (ret < 0)
		goto fail;
	return 0;
fail:
	/* Opened for check: the check reads and repairs the snapshot table
	 * itself; what could be read is protected. */
	s->ol_broken = ret == -ENOMEM || !s->ol_check_open;
	return ret;
}
