/* SPDX-License-Identifier: MIT */
/*
 * The "qed" format: QEMU Enhanced Disk, as QEMU 7.2's block/qed*.c reads,
 * writes, creates and checks it.  Our reading of the layout is in
 * docs/formats.md ("qed"); in short, all little-endian:
 *
 *   header (cluster 0): magic "QED\0", cluster size, table size (clusters
 *   per L1/L2 table), header size (clusters), feature bits, L1 offset, image
 *   size, backing file name (offset, size inside the header clusters);
 *   L1 table: 64-bit offsets of L2 tables (0 = none);
 *   L2 tables: 64-bit offsets of data clusters (0 = unallocated: the
 *   backing file, or zeroes; 1 = a zero cluster).
 *
 * New clusters and tables are appended at the end of the file (rounded down
 * to a cluster at open).  While allocating writes may be in progress the
 * header carries QED_F_NEED_CHECK; a clean flush or close clears it, and an
 * image opened read-write with it set is checked and repaired first, as
 * QEMU does.
 *
 * Hostile input: every table offset is checked (cluster aligned, past the
 * header, inside the file) before it is read, every data cluster offset
 * before it is used; sizes are checked in 64 bits before they are
 * multiplied.
 *
 * Locking: s->lock (a coroutine mutex) covers the L1 table, the L2 cache,
 * the end of file and the header; allocating writes hold it to the end,
 * other guest data moves outside it.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/drivers.h"
#include "block/drivers/backing.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define QED_MAGIC 0x00444551u /* "QED\0" little-endian */
#define QED_F_BACKING_FILE 0x01
#define QED_F_NEED_CHECK 0x02
#define QED_F_BACKING_FORMAT_NO_PROBE 0x04
#define QED_FEATURE_MASK 0x07
#define QED_MIN_CLUSTER_SIZE (4u << 10)
#define QED_MAX_CLUSTER_SIZE (64u << 20)
#define QED_DEFAULT_CLUSTER_SIZE (64u << 10)
#define QED_MIN_TABLE_SIZE 1u
#define QED_MAX_TABLE_SIZE 16u
#define QED_DEFAULT_TABLE_SIZE 4u
#define QED_HEADER_BYTES 64
#define QED_CLUSTER_ZERO 1
#define QED_MAX_BACKING_NAME 1023 /* QEMU: the name must fit its 1024-byte buffer */
/* Our cap on one table (QEMU allows 16 x 64 MiB = 1 GiB): tables beyond
 * this are refused rather than allocated. */
#define QED_MAX_TABLE_BYTES (32u << 20)
#define QED_L2_CACHE 8
/* The L2 cache holds at most this much (fewer slots for large tables). */
#define QED_L2_CACHE_BYTES (32u << 20)

/* Header fields. */
enum {
	H_MAGIC = 0,
	H_CLUSTER_SIZE = 4,
	H_TABLE_SIZE = 8,
	H_HEADER_SIZE = 12,
	H_FEATURES = 16,
	H_COMPAT_FEATURES = 24,
	H_AUTOCLEAR_FEATURES = 32,
	H_L1_TABLE_OFFSET = 40,
	H_IMAGE_SIZE = 48,
	H_BACKING_NAME_OFFSET = 56,
	H_BACKING_NAME_SIZE = 60,
};

struct qed_l2 {
	uint64_t offset; /* 0: free slot */
	uint64_t *table; /* host-endian */
	uint64_t used; /* LRU stamp */
};

struct qed_state {
	struct vd_co_mutex lock;
	uint8_t header[QED_HEADER_BYTES];
	uint32_t cluster_size, table_size, header_size;
	uint64_t features, image_size, l1_offset;
	uint32_t table_nelems;
	unsigned l2_shift, l1_shift;
	uint64_t table_bytes;
	uint64_t file_size; /* end of the last cluster: where the next one goes */
	uint64_t *l1; /* host-endian */
	struct qed_l2 l2[QED_L2_CACHE];
	uint64_t stamp;
	char *backing_file;
	const char *backing_fmt; /* "raw" with QED_F_BACKING_FORMAT_NO_PROBE */
	bool writable;
};

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static unsigned ctz64(uint64_t x)
{
	return (unsigned)__builtin_ctzll(x);
}

/* A data cluster (or the first cluster of a table) may live here. */
static bool cluster_offset_ok(const struct qed_state *s, uint64_t offset)
{
	return !(offset & (s->cluster_size - 1)) &&
	       offset >= (uint64_t)s->header_size * s->cluster_size && offset < s->file_size;
}

/* A whole table fits here. */
static bool table_offset_ok(const struct qed_state *s, uint64_t offset)
{
	uint64_t last = offset + (uint64_t)(s->table_size - 1) * s->cluster_size;

	return last >= offset && cluster_offset_ok(s, offset) && cluster_offset_ok(s, last);
}

/*
 * Ours, beyond QEMU: an L2 table or a data cluster over the L1 table would
 * have guest writes rewrite the L1 table behind its in-memory copy.  Such
 * entries read as corrupt (EIO) instead.
 */
static bool over_l1(const struct qed_state *s, uint64_t offset, uint64_t len)
{
	return offset < s->l1_offset + s->table_bytes && offset + len > s->l1_offset;
}

static int write_meta(struct vd_node *n, uint64_t offset, const void *buf, size_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, (void *)buf, len);
	return vd_co_pwritev(n->file, (int64_t)offset, (int64_t)len, &q, 0);
}

static int write_header(struct vd_node *n)
{
	struct qed_state *s = n->opaque;

	st_le64(s->header + H_FEATURES, s->features);
	return write_meta(n, 0, s->header, QED_HEADER_BYTES);
}

/* Read a table at @offset into host-endian @table. */
static int read_table(struct vd_node *n, uint64_t offset, uint64_t *table)
{
	struct qed_state *s = n->opaque;
	int ret = vd_format_pread(n, offset, table, s->table_bytes);

	if (ret < 0)
		return ret;
	for (uint32_t i = 0; i < s->table_nelems; i++)
		table[i] = ld_le64((const uint8_t *)&table[i]);
	return 0;
}

/* Write entry @index of the table at @offset (value @v). */
static int write_entry(struct vd_node *n, uint64_t offset, uint32_t index, uint64_t v)
{
	uint8_t b[8];

	st_le64(b, v);
	return write_meta(n, offset + 8ull * index, b, 8);
}

static void l2_cache_drop(struct qed_state *s)
{
	for (int i = 0; i < QED_L2_CACHE; i++) {
		free(s->l2[i].table);
		s->l2[i].table = NULL;
		s->l2[i].offset = 0;
	}
}

/* The L2 table at @offset (checked by the caller), cached.  With s->lock. */
static int l2_get(struct vd_node *n, uint64_t offset, uint64_t **out)
{
	struct qed_state *s = n->opaque;
	struct qed_l2 *victim = &s->l2[0];
	int slots = (int)(QED_L2_CACHE_BYTES / s->table_bytes), ret;

	if (slots > QED_L2_CACHE)
		slots = QED_L2_CACHE;
	if (slots < 1)
		slots = 1;
	for (int i = 0; i < slots; i++) {
		if (s->l2[i].offset == offset && s->l2[i].table) {
			s->l2[i].used = ++s->stamp;
			*out = s->l2[i].table;
			return 0;
		}
		if (!s->l2[i].table || s->l2[i].used < victim->used)
			victim = &s->l2[i];
	}
	if (!victim->table) {
		victim->table = malloc(s->table_bytes);
		if (!victim->table)
			return -ENOMEM;
	}
	victim->offset = 0;
	vd_debug_event(n->file, VD_EV_L2_LOAD);
	ret = read_table(n, offset, victim->table);
	if (ret < 0)
		return ret;
	victim->offset = offset;
	victim->used = ++s->stamp;
	*out = victim->table;
	return 0;
}

/*
 * The L2 entry of guest @offset: *entry is 0 (unallocated), 1 (zero) or a
 * checked cluster offset.  With s->lock.  -EIO for an offset outside the
 * image (a corrupt table), as QEMU's -EINVAL "qed_check_cluster_offset".
 */
static int lookup(struct vd_node *n, uint64_t offset, uint64_t *entry)
{
	struct qed_state *s = n->opaque;
	uint64_t l1i = offset >> s->l1_shift, l2off, *l2;
	uint32_t l2i = (uint32_t)((offset >> s->l2_shift) & (s->table_nelems - 1));
	int ret;

	*entry = 0;
	if (l1i >= s->table_nelems)
		return -EIO;
	l2off = s->l1[l1i];
	if (!l2off)
		return 0;
	if (!table_offset_ok(s, l2off) || over_l1(s, l2off, s->table_bytes))
		return -EIO;
	ret = l2_get(n, l2off, &l2);
	if (ret < 0)
		return ret;
	*entry = l2[l2i];
	if (*entry > QED_CLUSTER_ZERO &&
	    (!cluster_offset_ok(s, *entry) || over_l1(s, *entry, s->cluster_size)))
		return -EIO;
	return 0;
}

struct qed_check_ctx {
	struct qed_state *s;
	struct vd_check_result *res;
	bool fix;
	uint64_t nclusters;
	uint8_t *used;
};

/*
 * qemu-img check counts clusters with QEMU's qed_bytes_to_clusters, which
 * rounds up to a cluster and then divides by cluster_size - 1, not by
 * cluster_size.  Below cluster_size - 1 clusters (256 MiB of 64 KiB
 * clusters: 4 GiB) it is the cluster index; beyond, indices drift and the
 * count of clusters in the file grows, so QEMU reports leaks in a
 * consistent image.  We count the same way, so that `vdisk check` says what
 * `qemu-img check` says about the same file (docs/formats.md, "qed").
 */
static uint64_t qemu_clusters(const struct qed_state *s, uint64_t bytes)
{
	return ((bytes + s->cluster_size - 1) & ~(uint64_t)(s->cluster_size - 1)) /
	       (s->cluster_size - 1);
}

static bool mark_used(struct qed_check_ctx *c, uint64_t offset, uint32_t count)
{
	uint64_t cl = qemu_clusters(c->s, offset);
	bool ok = true;

	for (uint32_t i = 0; i < count; i++, cl++) {
		if (cl >= c->nclusters + QED_MAX_TABLE_SIZE)
			continue; /* offsets are checked by the caller */
		if (c->used[cl / 8] & (1u << (cl % 8))) {
			c->res->corruptions++;
			ok = false;
		}
		c->used[cl / 8] |= (uint8_t)(1u << (cl % 8));
	}
	return ok;
}

/*
 * QEMU's qed_check: every L1 and L2 entry must point inside the image, past
 * the header, and each cluster be referenced once; unreferenced clusters
 * past the header are leaks.  With @fix, bad entries are cleared (and
 * counted as fixed) and a clean image loses QED_F_NEED_CHECK.  With s->lock.
 */
static int qed_check_locked(struct vd_node *n, struct vd_check_result *res, bool fix)
{
	struct qed_state *s = n->opaque;
	struct qed_check_ctx c = {.s = s, .res = res, .fix = fix};
	uint64_t *l2 = NULL;
	int ret = 0;
	bool l1_dirty = false;

	c.nclusters = qemu_clusters(s, s->file_size);
	c.used = calloc((c.nclusters + QED_MAX_TABLE_SIZE) / 8 + 1, 1);
	l2 = malloc(s->table_bytes);
	if (!c.used || !l2) {
		ret = -ENOMEM;
		goto out;
	}
	res->total_clusters = (int64_t)((s->image_size + s->cluster_size - 1) / s->cluster_size);
	mark_used(&c, s->l1_offset, s->table_size);
	for (uint32_t i = 0; i < s->table_nelems; i++) {
		uint64_t off = s->l1[i];
		bool l2_dirty = false;

		if (!off)
			continue;
		if (!table_offset_ok(s, off)) {
			res->corruptions++;
			if (fix) {
				s->l1[i] = 0;
				l1_dirty = true;
				res->corruptions_fixed++;
			}
			continue;
		}
		if (!mark_used(&c, off, s->table_size))
			continue;
		ret = read_table(n, off, l2);
		if (ret < 0) {
			res->check_errors++;
			continue;
		}
		uint64_t last = 0;

		for (uint32_t j = 0; j < s->table_nelems; j++) {
			uint64_t e = l2[j];

			if (e <= QED_CLUSTER_ZERO)
				continue;
			if (!cluster_offset_ok(s, e)) {
				res->corruptions++;
				if (fix) {
					l2[j] = 0;
					l2_dirty = true;
					res->corruptions_fixed++;
				}
				continue;
			}
			res->allocated_clusters++;
			if (last && last + s->cluster_size != e)
				res->fragmented_clusters++;
			last = e;
			mark_used(&c, e, 1);
		}
		if (l2_dirty) {
			for (uint32_t j = 0; j < s->table_nelems; j++)
				st_le64((uint8_t *)&l2[j], l2[j]);
			ret = write_meta(n, off, l2, s->table_bytes);
			if (ret < 0)
				res->check_errors++;
		}
	}
	if (l1_dirty) {
		for (uint32_t i = 0; i < s->table_nelems; i++)
			st_le64((uint8_t *)&l2[i], s->l1[i]);
		ret = write_meta(n, s->l1_offset, l2, s->table_bytes);
		if (ret < 0)
			res->check_errors++;
	}
	l2_cache_drop(s);
	if (res->check_errors)
		goto out;
	ret = 0;
	/* Leaks only when the whole image was scanned. */
	for (uint64_t cl = s->header_size; cl < c.nclusters; cl++)
		if (!(c.used[cl / 8] & (1u << (cl % 8))))
			res->leaks++;
	if (fix && res->corruptions == res->corruptions_fixed && (s->features & QED_F_NEED_CHECK)) {
		ret = vd_co_flush(n->file);
		if (ret == 0) {
			s->features &= ~(uint64_t)QED_F_NEED_CHECK;
			ret = write_header(n);
		}
		if (ret == 0)
			ret = vd_co_flush(n->file);
	}
out:
	free(c.used);
	free(l2);
	return ret;
}

static int qed_co_check(struct vd_node *n, struct vd_check_result *res, int fix)
{
	struct qed_state *s = n->opaque;
	int ret;

	vd_co_mutex_lock(&s->lock);
	ret = qed_check_locked(n, res, fix && s->writable);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

static void qed_close(struct vd_node *n);

/* Header checks, in QEMU's order (bdrv_qed_do_open), with its messages
 * where it has one. */
static int parse_header(struct vd_node *n, int64_t file_size, struct vd_error *err)
{
	struct qed_state *s = n->opaque;
	const uint8_t *h = s->header;
	uint64_t max_size, header_bytes;
	uint32_t name_off, name_size;

	if (ld_le32(h + H_MAGIC) != QED_MAGIC)
		return vd_error_set(err, -EINVAL, "Image not in QED format");
	s->features = ld_le64(h + H_FEATURES);
	if (s->features & ~(uint64_t)QED_FEATURE_MASK)
		return vd_error_set(err, -ENOTSUP, "Unsupported QED features: %" PRIx64,
				    s->features & ~(uint64_t)QED_FEATURE_MASK);
	s->cluster_size = ld_le32(h + H_CLUSTER_SIZE);
	if (!is_pow2(s->cluster_size) || s->cluster_size < QED_MIN_CLUSTER_SIZE ||
	    s->cluster_size > QED_MAX_CLUSTER_SIZE)
		return vd_error_set(err, -EINVAL, "Invalid QED cluster size %" PRIu32,
				    s->cluster_size);
	s->file_size = (uint64_t)file_size & ~(uint64_t)(s->cluster_size - 1);
	s->table_size = ld_le32(h + H_TABLE_SIZE);
	if (!is_pow2(s->table_size) || s->table_size < QED_MIN_TABLE_SIZE ||
	    s->table_size > QED_MAX_TABLE_SIZE)
		return vd_error_set(err, -EINVAL, "Invalid QED table size %" PRIu32, s->table_size);
	s->table_bytes = (uint64_t)s->table_size * s->cluster_size;
	if (s->table_bytes > QED_MAX_TABLE_BYTES)
		return vd_error_set(err, -EFBIG,
				    "QED tables of %" PRIu64 " bytes are larger than vdisk's "
				    "limit (%u MiB)",
				    s->table_bytes, QED_MAX_TABLE_BYTES >> 20);
	s->table_nelems = (uint32_t)(s->table_bytes / 8);
	s->l2_shift = ctz64(s->cluster_size);
	s->l1_shift = s->l2_shift + ctz64(s->table_nelems);
	s->image_size = ld_le64(h + H_IMAGE_SIZE);
	/* cluster_size * nelems^2: at most 2^26 * 2^46, checked by the shifts. */
	if (s->l1_shift + ctz64(s->table_nelems) >= 63)
		max_size = (uint64_t)VD_MAX_LENGTH;
	else
		max_size = 1ull << (s->l1_shift + ctz64(s->table_nelems));
	if (s->image_size % 512 || s->image_size > max_size ||
	    s->image_size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Invalid QED image size %" PRIu64, s->image_size);
	s->header_size = ld_le32(h + H_HEADER_SIZE);
	if (s->header_size == 0 || s->header_size > UINT32_MAX / s->cluster_size)
		return vd_error_set(err, -EINVAL, "Invalid QED header size %" PRIu32,
				    s->header_size);
	header_bytes = (uint64_t)s->header_size * s->cluster_size;
	s->l1_offset = ld_le64(h + H_L1_TABLE_OFFSET);
	if (!table_offset_ok(s, s->l1_offset))
		return vd_error_set(err, -EINVAL,
				    "Invalid QED L1 table offset %" PRIu64 " (file size %" PRIu64
				    ")",
				    s->l1_offset, s->file_size);
	if (s->features & QED_F_BACKING_FILE) {
		name_off = ld_le32(h + H_BACKING_NAME_OFFSET);
		name_size = ld_le32(h + H_BACKING_NAME_SIZE);
		if ((uint64_t)name_off + name_size > header_bytes || name_off < QED_HEADER_BYTES)
			return vd_error_set(err, -EINVAL, "Invalid QED backing file name offset");
		if (name_size > QED_MAX_BACKING_NAME)
			return vd_error_set(err, -EINVAL, "QED backing file name too long");
		s->backing_file = calloc(1, (size_t)name_size + 1);
		if (!s->backing_file)
			return vd_error_set(err, -ENOMEM, "Out of memory");
		if (vd_format_pread(n, name_off, s->backing_file, name_size) < 0)
			return vd_error_set(err, -EIO, "Could not read the QED backing file name");
		if (strlen(s->backing_file) != name_size)
			return vd_error_set(err, -EINVAL, "QED backing file name contains a NUL");
		if (s->features & QED_F_BACKING_FORMAT_NO_PROBE)
			s->backing_fmt = "raw";
	}
	n->size = (int64_t)s->image_size;
	return 0;
}

static int qed_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct qed_state *s = n->opaque;
	int64_t file_size;
	int ret;

	vd_co_mutex_init(&s->lock);
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Invalid file size");
	if (file_size < QED_HEADER_BYTES)
		return vd_error_set(err, -EINVAL, "Image not in QED format (file too short)");
	ret = vd_format_pread(n, 0, s->header, QED_HEADER_BYTES);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read the QED header");
	s->writable = (flags & VD_OPEN_RDWR) != 0;
	ret = parse_header(n, file_size, err);
	if (ret < 0)
		goto fail;
	s->l1 = malloc(s->table_bytes);
	if (!s->l1) {
		ret = vd_error_set(err, -ENOMEM, "Could not allocate the QED L1 table");
		goto fail;
	}
	ret = read_table(n, s->l1_offset, s->l1);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read the QED L1 table");
		goto fail;
	}
	/* Unknown autoclear bits are cleared (none are known). */
	if (s->writable && ld_le64(s->header + H_AUTOCLEAR_FEATURES)) {
		st_le64(s->header + H_AUTOCLEAR_FEATURES, 0);
		ret = write_header(n);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not write the QED header");
			goto fail;
		}
	}
	/* Not closed cleanly: check and repair before writing (QEMU does the
	 * same; read-only opens may read an inconsistent image). */
	if (s->writable && !(flags & VD_OPEN_CHECK) && (s->features & QED_F_NEED_CHECK)) {
		struct vd_check_result res = {0};

		ret = qed_check_locked(n, &res, true);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not repair the QED image");
			goto fail;
		}
	}
	ret = vd_format_open_backing(n, opts, flags, s->backing_file, s->backing_fmt, err);
	if (ret < 0)
		goto fail;
	return 0;
fail:
	qed_close(n);
	return ret;
}

static int clear_need_check(struct vd_node *n)
{
	struct qed_state *s = n->opaque;
	int ret;

	if (!s->writable || !(s->features & QED_F_NEED_CHECK))
		return 0;
	/* Data and tables durable first, then the header says clean. */
	ret = vd_co_flush(n->file);
	if (ret < 0)
		return ret;
	s->features &= ~(uint64_t)QED_F_NEED_CHECK;
	ret = write_header(n);
	if (ret < 0)
		s->features |= QED_F_NEED_CHECK;
	return ret;
}

static void close_entry(void *opaque)
{
	struct vd_node *n = opaque;

	if (clear_need_check(n) == 0)
		vd_co_flush(n->file);
}

static void qed_close(struct vd_node *n)
{
	struct qed_state *s = n->opaque;

	if (s->l1 && n->file && s->writable && (s->features & QED_F_NEED_CHECK))
		vd_co_run_sync(close_entry, n);
	l2_cache_drop(s);
	free(s->l1);
	free(s->backing_file);
	s->l1 = NULL;
	s->backing_file = NULL;
}

static int qed_co_flush(struct vd_node *n)
{
	struct qed_state *s = n->opaque;
	int ret;

	vd_debug_event(n->file, VD_EV_FLUSH_TO_DISK);
	vd_co_mutex_lock(&s->lock);
	ret = clear_need_check(n);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

/* Read the unwritten part of a cluster: from backing, or zeroes. */
static int fill_unallocated(struct vd_node *n, uint64_t entry, int64_t offset, int64_t bytes,
			    struct vd_qiov *qiov, size_t qoff)
{
	if (entry == QED_CLUSTER_ZERO || !n->backing) {
		vd_qiov_memset(qiov, qoff, 0, (size_t)bytes);
		return 0;
	}
	return vd_format_read_backing(n, offset, bytes, qiov, qoff);
}

static int qed_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags)
{
	struct qed_state *s = n->opaque;
	struct vd_qiov local;
	size_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		int64_t chunk = s->cluster_size - ((uint64_t)offset & (s->cluster_size - 1));
		uint64_t entry;

		if (chunk > bytes)
			chunk = bytes;
		vd_co_mutex_lock(&s->lock);
		ret = lookup(n, (uint64_t)offset, &entry);
		/* Clusters that follow each other in the file: one read. */
		while (ret == 0 && entry > QED_CLUSTER_ZERO && chunk < bytes) {
			uint64_t next;
			int64_t more =
				bytes - chunk < s->cluster_size ? bytes - chunk : s->cluster_size;

			if (lookup(n, (uint64_t)(offset + chunk), &next) < 0 ||
			    next != entry + ((uint64_t)offset & (s->cluster_size - 1)) +
					    (uint64_t)chunk)
				break;
			chunk += more;
		}
		vd_co_mutex_unlock(&s->lock);
		if (ret < 0)
			break;
		if (entry <= QED_CLUSTER_ZERO) {
			ret = fill_unallocated(n, entry, offset, chunk, qiov, done);
		} else {
			vd_qiov_reset(&local);
			ret = vd_qiov_concat_slice(&local, qiov, done, (size_t)chunk);
			if (ret == 0)
				ret = vd_co_preadv(n->file,
						   (int64_t)(entry + ((uint64_t)offset &
								      (s->cluster_size - 1))),
						   chunk, &local, 0);
		}
		offset += chunk;
		bytes -= chunk;
		done += (size_t)chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

/* @count clusters at the end of the file.  With s->lock. */
static int alloc_clusters(struct vd_node *n, uint32_t count, uint64_t *offset)
{
	struct qed_state *s = n->opaque;
	uint64_t bytes = (uint64_t)count * s->cluster_size;

	if (s->file_size > (uint64_t)VD_MAX_LENGTH - bytes)
		return -EFBIG;
	*offset = s->file_size;
	s->file_size += bytes;
	return 0;
}

/* Set the need-check bit before the first allocation.  With s->lock. */
static int mark_need_check(struct vd_node *n)
{
	struct qed_state *s = n->opaque;
	int ret;

	if (s->features & QED_F_NEED_CHECK)
		return 0;
	s->features |= QED_F_NEED_CHECK;
	ret = write_header(n);
	if (ret == 0)
		ret = vd_co_flush(n->file);
	return ret;
}

/*
 * Point the L2 entry of guest @offset at @value (a cluster, or 1 for a zero
 * cluster): in place, or in a new L2 table holding only it, then the L1
 * entry.  With s->lock.
 */
static int set_entry(struct vd_node *n, uint64_t offset, uint64_t value)
{
	struct qed_state *s = n->opaque;
	uint64_t l1i = offset >> s->l1_shift, l2off = s->l1[l1i], *l2;
	uint32_t l2i = (uint32_t)((offset >> s->l2_shift) & (s->table_nelems - 1));
	uint8_t *buf;
	int ret;

	if (l2off) {
		ret = l2_get(n, l2off, &l2);
		if (ret < 0)
			return ret;
		vd_debug_event(n->file, VD_EV_L2_UPDATE);
		ret = write_entry(n, l2off, l2i, value);
		if (ret == 0)
			l2[l2i] = value;
		return ret;
	}
	ret = alloc_clusters(n, s->table_size, &l2off);
	if (ret < 0)
		return ret;
	buf = calloc(1, s->table_bytes);
	if (!buf)
		return -ENOMEM;
	st_le64(buf + 8ull * l2i, value);
	vd_debug_event(n->file, VD_EV_L2_ALLOC_WRITE);
	ret = write_meta(n, l2off, buf, s->table_bytes);
	free(buf);
	if (ret == 0) {
		vd_debug_event(n->file, VD_EV_L1_UPDATE);
		ret = write_entry(n, s->l1_offset, (uint32_t)l1i, l2off);
	}
	if (ret == 0)
		s->l1[l1i] = l2off;
	return ret;
}

/*
 * Write [offset, offset + chunk) (inside one cluster) to a new cluster:
 * the rest of the cluster from backing (or zeroes), then the L2 entry (a
 * new L2 table and its L1 entry if there was none).  With s->lock.
 */
static int write_alloc(struct vd_node *n, int64_t offset, int64_t chunk, struct vd_qiov *qiov,
		       size_t qoff, uint64_t first_entry, uint64_t last_entry)
{
	struct qed_state *s = n->opaque;
	uint64_t cstart = (uint64_t)offset & ~(uint64_t)(s->cluster_size - 1);
	uint64_t head = (uint64_t)offset - cstart;
	uint64_t len =
		(head + (uint64_t)chunk + s->cluster_size - 1) & ~(uint64_t)(s->cluster_size - 1);
	uint64_t tail = len - head - (uint64_t)chunk, host, l2off, *l2;
	uint32_t count = (uint32_t)(len / s->cluster_size), l2i;
	struct vd_qiov q;
	uint8_t *buf = NULL;
	int ret;

	ret = mark_need_check(n);
	if (ret < 0)
		return ret;
	ret = alloc_clusters(n, count, &host);
	if (ret < 0)
		return ret;
	vd_debug_event(n->file, VD_EV_CLUSTER_ALLOC);
	/* The whole clusters in one write: head and tail copied. */
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	vd_qiov_init_buf(&q, buf, len);
	ret = 0;
	if (head)
		ret = fill_unallocated(n, first_entry, (int64_t)cstart, (int64_t)head, &q, 0);
	if (ret == 0 && tail)
		ret = fill_unallocated(n, last_entry, offset + chunk, (int64_t)tail, &q,
				       (size_t)(head + (uint64_t)chunk));
	if (ret == 0)
		vd_qiov_to_buf(qiov, qoff, buf + head, (size_t)chunk);
	if (ret == 0) {
		vd_debug_event(n->file, VD_EV_WRITE_AIO);
		ret = vd_co_pwritev(n->file, (int64_t)host, (int64_t)len, &q, 0);
	}
	free(buf);
	if (ret < 0)
		return ret;

	/* The first entry (and the L2 table if there is none), then the
	 * others, all in that table, in one write. */
	ret = set_entry(n, cstart, host);
	if (ret < 0 || count == 1)
		return ret;
	l2off = s->l1[cstart >> s->l1_shift];
	l2i = (uint32_t)((cstart >> s->l2_shift) & (s->table_nelems - 1));
	ret = l2_get(n, l2off, &l2);
	if (ret < 0)
		return ret;
	buf = malloc(8ull * (count - 1));
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 1; i < count; i++)
		st_le64(buf + 8ull * (i - 1), host + (uint64_t)i * s->cluster_size);
	vd_debug_event(n->file, VD_EV_L2_UPDATE);
	ret = write_meta(n, l2off + 8ull * (l2i + 1), buf, 8ull * (count - 1));
	free(buf);
	if (ret == 0)
		for (uint32_t i = 1; i < count; i++)
			l2[l2i + i] = host + (uint64_t)i * s->cluster_size;
	return ret;
}

static int qed_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct qed_state *s = n->opaque;
	struct vd_qiov local;
	size_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		int64_t chunk = s->cluster_size - ((uint64_t)offset & (s->cluster_size - 1));
		uint64_t entry;

		if (chunk > bytes)
			chunk = bytes;
		vd_co_mutex_lock(&s->lock);
		ret = lookup(n, (uint64_t)offset, &entry);
		if (ret == 0 && entry <= QED_CLUSTER_ZERO) {
			uint64_t last = entry, next;

			/* Unallocated clusters that follow, in the same L2
			 * table: allocated together, contiguous in the file
			 * as QEMU lays them out (at most 4 MiB at a time). */
			while (chunk < bytes && chunk < (4 << 20) &&
			       ((uint64_t)(offset + chunk) >> s->l1_shift) ==
				       ((uint64_t)offset >> s->l1_shift) &&
			       lookup(n, (uint64_t)(offset + chunk), &next) == 0 &&
			       next <= QED_CLUSTER_ZERO) {
				last = next;
				chunk += bytes - chunk < s->cluster_size ? bytes - chunk
									 : s->cluster_size;
			}
			ret = write_alloc(n, offset, chunk, qiov, done, entry, last);
			vd_co_mutex_unlock(&s->lock);
		} else {
			vd_co_mutex_unlock(&s->lock);
			if (ret == 0) {
				vd_qiov_reset(&local);
				ret = vd_qiov_concat_slice(&local, qiov, done, (size_t)chunk);
			}
			if (ret == 0)
				ret = vd_co_pwritev(n->file,
						    (int64_t)(entry + ((uint64_t)offset &
								       (s->cluster_size - 1))),
						    chunk, &local, 0);
		}
		offset += chunk;
		bytes -= chunk;
		done += (size_t)chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

/*
 * QEMU's bdrv_qed_co_pwrite_zeroes: cluster-aligned ranges only (else the
 * core writes a buffer of zeroes); a zero cluster stays, an allocated one
 * is overwritten with zeroes in place, an unallocated one becomes a zero
 * cluster (entry 1: no data, and the backing file hidden).
 */
static int qed_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct qed_state *s = n->opaque;
	uint8_t *zero = NULL;
	int ret = 0;

	if (((uint64_t)offset | (uint64_t)bytes) & (s->cluster_size - 1))
		return -ENOTSUP;
	for (; bytes > 0 && ret == 0; offset += s->cluster_size, bytes -= s->cluster_size) {
		uint64_t entry;

		vd_co_mutex_lock(&s->lock);
		ret = lookup(n, (uint64_t)offset, &entry);
		if (ret == 0 && entry == 0) {
			ret = mark_need_check(n);
			if (ret == 0)
				ret = set_entry(n, (uint64_t)offset, QED_CLUSTER_ZERO);
		}
		vd_co_mutex_unlock(&s->lock);
		if (ret < 0 || entry <= QED_CLUSTER_ZERO)
			continue;
		if (!zero && !(zero = calloc(1, s->cluster_size))) {
			ret = -ENOMEM;
			break;
		}
		ret = write_meta(n, entry, zero, s->cluster_size);
	}
	free(zero);
	return ret;
}

static int qed_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file)
{
	struct qed_state *s = n->opaque;
	uint64_t first, entry;
	int64_t num = 0;
	int ret, status;

	uint64_t cmask = s->cluster_size - 1, cbase = (uint64_t)offset & ~cmask;

	vd_co_mutex_lock(&s->lock);
	ret = lookup(n, (uint64_t)offset, &first);
	/* Gather clusters of the same kind (contiguous on the host for data). */
	while (ret == 0 && num < bytes) {
		uint64_t pos = (uint64_t)(offset + num);

		if (num) {
			uint64_t want = first > QED_CLUSTER_ZERO ? first + (pos - cbase) : first;

			if (lookup(n, pos, &entry) < 0 || entry != want)
				break;
		}
		num += (int64_t)(s->cluster_size - (pos & cmask));
	}
	vd_co_mutex_unlock(&s->lock);
	if (ret < 0 && num == 0)
		return ret;
	*pnum = num < bytes ? num : bytes;
	if (first == 0)
		status = 0;
	else if (first == QED_CLUSTER_ZERO)
		status = VD_BLOCK_ZERO;
	else {
		*map = (int64_t)(first + ((uint64_t)offset & (s->cluster_size - 1)));
		*file = n->file;
		status = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	}
	return status;
}

static int qed_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct qed_state *s = n->opaque;

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
		if (s->backing_fmt && !(info->backing_filename_format = strdup(s->backing_fmt)))
			return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	return 0;
}

static int qed_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return len >= QED_HEADER_BYTES && ld_le32(buf) == QED_MAGIC ? 100 : 0;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t w = pwrite(fd, buf, len, off);

	return w == (ssize_t)len ? 0 : (w < 0 ? -errno : -EIO);
}

static const char *const qed_create_opts[] = {"cluster_size", "table_size", "backing_file",
					      "backing_fmt", NULL};

/* QEMU's bdrv_qed_co_create: header, backing name after it, an empty L1
 * table in the cluster after the header. */
static int qed_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	uint64_t size, cluster_size, table_size, max_size, l1_bytes;
	const char *backing, *backing_fmt;
	uint8_t h[QED_HEADER_BYTES] = {0};
	struct vd_opts *fopts;
	uint8_t *l1;
	int fd, ret;

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "cluster_size", QED_DEFAULT_CLUSTER_SIZE,
				       &cluster_size, err);
	if (ret == 0)
		ret = vd_opts_get_u64(opts, "table_size", QED_DEFAULT_TABLE_SIZE, &table_size, err);
	if (ret < 0)
		return ret;
	backing = vd_opts_get(opts, "backing_file");
	backing_fmt = vd_opts_get(opts, "backing_fmt");
	if (!is_pow2(cluster_size) || cluster_size < QED_MIN_CLUSTER_SIZE ||
	    cluster_size > QED_MAX_CLUSTER_SIZE)
		return vd_error_set(err, -EINVAL,
				    "QED cluster size must be within range [%u, %u] and power "
				    "of 2",
				    QED_MIN_CLUSTER_SIZE, QED_MAX_CLUSTER_SIZE);
	if (!is_pow2(table_size) || table_size < QED_MIN_TABLE_SIZE ||
	    table_size > QED_MAX_TABLE_SIZE)
		return vd_error_set(err, -EINVAL,
				    "QED table size must be within range [%u, %u] and power of 2",
				    QED_MIN_TABLE_SIZE, QED_MAX_TABLE_SIZE);
	l1_bytes = cluster_size * table_size;
	{
		unsigned sh = ctz64(cluster_size) + 2 * ctz64(l1_bytes / 8);
		max_size = sh >= 63 ? (uint64_t)VD_MAX_LENGTH : 1ull << sh;
	}
	size = (size + 511) & ~511ull;
	if (size > max_size || size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL,
				    "QED image size must be a non-zero multiple of cluster size "
				    "and less than %" PRIu64 " bytes",
				    max_size);
	if (backing && strlen(backing) > QED_MAX_BACKING_NAME)
		return vd_error_set(err, -EINVAL, "Backing file name too long");
	if (backing_fmt && !vd_driver_find(backing_fmt))
		return vd_error_set(err, -EINVAL, "Unknown backing format '%s'", backing_fmt);

	st_le32(h + H_MAGIC, QED_MAGIC);
	st_le32(h + H_CLUSTER_SIZE, (uint32_t)cluster_size);
	st_le32(h + H_TABLE_SIZE, (uint32_t)table_size);
	st_le32(h + H_HEADER_SIZE, 1);
	st_le64(h + H_L1_TABLE_OFFSET, cluster_size);
	st_le64(h + H_IMAGE_SIZE, size);
	if (backing) {
		uint64_t features = QED_F_BACKING_FILE;

		if (backing_fmt && strcmp(backing_fmt, "raw") == 0)
			features |= QED_F_BACKING_FORMAT_NO_PROBE;
		st_le64(h + H_FEATURES, features);
		st_le32(h + H_BACKING_NAME_OFFSET, QED_HEADER_BYTES);
		st_le32(h + H_BACKING_NAME_SIZE, (uint32_t)strlen(backing));
	}

	fopts = vd_opts_new();
	if (!fopts || vd_opts_set(fopts, "size", "0") < 0) {
		vd_opts_free(fopts);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = vd_driver_file.create(filename, fopts, err);
	vd_opts_free(fopts);
	if (ret < 0)
		return ret;
	fd = open(filename, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return vd_error_setg_errno(err, -errno, "Could not open '%s'", filename);
	l1 = calloc(1, l1_bytes);
	ret = l1 ? write_all(fd, h, sizeof(h), 0) : -ENOMEM;
	if (ret == 0 && backing)
		ret = write_all(fd, backing, strlen(backing), QED_HEADER_BYTES);
	if (ret == 0)
		ret = write_all(fd, l1, l1_bytes, (off_t)cluster_size);
	free(l1);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	close(fd);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not write the QED image");
	return 0;
}

const struct vd_block_driver vd_driver_qed = {
	.name = "qed",
	.instance_size = sizeof(struct qed_state),
	.is_format = true,
	.references_files = true,
	.child_name = "file",
	.child_has_metadata = true,
	.create_opts = qed_create_opts,
	.probe = qed_probe,
	.open = qed_open,
	.close = qed_close,
	.create = qed_create,
	.co_preadv = qed_co_preadv,
	.co_pwritev = qed_co_pwritev,
	.co_pwrite_zeroes = qed_co_pwrite_zeroes,
	.co_flush = qed_co_flush,
	.co_block_status = qed_co_block_status,
	.get_info = qed_get_info,
	.co_check = qed_co_check,
};
