/* SPDX-License-Identifier: MIT */
/*
 * Persistent dirty bitmaps (qcow2.txt "Bitmaps extension", "Bitmap
 * directory", "Bitmap table", "Bitmap data"): what qemu-img bitmap does to
 * them: add, remove, clear, enable, disable, merge.
 *
 * And, as QEMU 7.2, the live bitmaps (end of this file): loaded and
 * flagged in use at a read-write open, updated by every write, stored at
 * close.  An operation here first stores them (in-use flag cleared), works
 * on the directory on disk, and loads them again.  Only when they could not
 * be loaded (the autoclear bit then cleared) does an operation refuse once
 * the image's data changed since the open (s->data_changed).
 *
 * Every change is made copy-on-write: new tables and data clusters, then a
 * new directory, then the header switched to it in one write, then the old
 * clusters freed.  A crash leaves the old or the new bitmaps, plus leaks.
 * The image is untrusted: every count, size and offset of the directory and
 * the tables is checked before use.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/qcow2/qcow2.h"

#define BME_FLAG_IN_USE (1u << 0)
#define BME_FLAG_AUTO (1u << 1)
#define BME_TYPE_DIRTY 1
#define BME_MAX_BITMAPS 65535
#define BME_MAX_NAME 1023
#define BME_MAX_TABLE_SIZE 0x8000000u
#define BME_MAX_PHYS_SIZE 0x20000000ull /* bytes of bitmap data */
#define BME_MAX_DIR_SIZE (64ull << 20)
#define BME_MAX_EXTRA 1024
#define BME_TABLE_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_TABLE_RESERVED_MASK 0xff000000000001feull

struct bm {
	uint64_t table_offset;
	uint32_t table_size;
	uint32_t flags;
	uint8_t type, gran_bits;
	uint32_t extra_size;
	uint8_t *extra;
	char *name;
};

struct bm_dir {
	struct bm *b;
	uint32_t n;
	uint64_t offset, bytes; /* on disk, 0 if none */
};

static void dir_free(struct bm_dir *d)
{
	for (uint32_t i = 0; i < d->n; i++) {
		free(d->b[i].name);
		free(d->b[i].extra);
	}
	free(d->b);
	memset(d, 0, sizeof(*d));
}

static int pread_file(struct qcow2_state *s, uint64_t off, void *buf, uint64_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, buf, len);
	return vd_co_preadv(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

static int pwrite_file(struct qcow2_state *s, uint64_t off, const void *buf, uint64_t len)
{
	struct vd_qiov q;
	int ret = qcow2_check_overlap(s, 0, off, len);

	if (ret < 0)
		return ret;
	vd_qiov_init_buf(&q, (void *)buf, len);
	return vd_co_pwritev(s->node->file, (int64_t)off, (int64_t)len, &q, 0);
}

static struct qcow2_ext *find_ext(struct qcow2_state *s)
{
	struct qcow2_ext *e = s->unknown_exts;

	while (e && e->type != QCOW2_EXT_BITMAPS)
		e = e->next;
	return e;
}

static uint64_t nb_bits(const struct qcow2_state *s, uint8_t gran_bits)
{
	return (s->size + (1ull << gran_bits) - 1) >> gran_bits;
}

/* Entries of the bitmap table for a bitmap of this granularity. */
static uint64_t table_entries(const struct qcow2_state *s, uint8_t gran_bits)
{
	uint64_t bits_per_cluster = s->cluster_size * 8;

	return (nb_bits(s, gran_bits) + bits_per_cluster - 1) / bits_per_cluster;
}

static bool range_ok(const struct qcow2_state *s, uint64_t off, uint64_t len, uint64_t file_len)
{
	return !qcow2_offset_into_cluster(s, off) && off < QCOW2_MAX_HOST_OFFSET &&
	       len <= file_len && off <= file_len - len;
}

/* Read and validate the directory (none when the extension is absent or
 * was not valid when the image was opened: QEMU then ignores it too). */
static int load_dir(struct qcow2_state *s, struct bm_dir *d, struct vd_error *err)
{
	struct qcow2_ext *e = find_ext(s);
	uint64_t file_len, pos = 0;
	uint8_t *buf = NULL;
	uint32_t nb;
	int64_t len;
	int ret;

	memset(d, 0, sizeof(*d));
	if (!e || !s->bitmaps_valid_at_open || s->version < 3)
		return 0;
	if (e->len < 24)
		return vd_error_set(err, -EINVAL, "Bitmaps extension is too short");
	nb = qcow2_be32(e->data);
	d->bytes = qcow2_be64(e->data + 8);
	d->offset = qcow2_be64(e->data + 16);
	len = vd_node_size(s->node->file);
	file_len = len > 0 ? (uint64_t)len : 0;
	if (nb == 0 || nb > BME_MAX_BITMAPS || d->bytes > BME_MAX_DIR_SIZE ||
	    d->bytes < (uint64_t)nb * 24 || !range_ok(s, d->offset, d->bytes, file_len))
		return vd_error_set(err, -EINVAL, "Bitmap directory is corrupt");
	buf = malloc(d->bytes);
	d->b = calloc(nb, sizeof(*d->b));
	if (!buf || !d->b) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	ret = pread_file(s, d->offset, buf, d->bytes);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read the bitmap directory");
		goto fail;
	}
	for (d->n = 0; d->n < nb; d->n++) {
		struct bm *b = &d->b[d->n];
		const uint8_t *p = buf + pos;
		uint32_t name_size, entry;

		if (d->bytes - pos < 24)
			goto corrupt;
		b->table_offset = qcow2_be64(p);
		b->table_size = qcow2_be32(p + 8);
		b->flags = qcow2_be32(p + 12);
		b->type = p[16];
		b->gran_bits = p[17];
		name_size = ((uint32_t)p[18] << 8) | p[19];
		b->extra_size = qcow2_be32(p + 20);
		if (name_size == 0 || name_size > BME_MAX_NAME || b->extra_size > BME_MAX_EXTRA)
			goto corrupt;
		entry = (24 + b->extra_size + name_size + 7) & ~7u;
		if (entry > d->bytes - pos)
			goto corrupt;
		if (b->type != BME_TYPE_DIRTY || b->gran_bits < 9 || b->gran_bits > 31 ||
		    b->table_size != table_entries(s, b->gran_bits) ||
		    b->table_size > BME_MAX_TABLE_SIZE ||
		    !range_ok(s, b->table_offset, (uint64_t)b->table_size * 8, file_len))
			goto corrupt;
		b->name = strndup((const char *)p + 24 + b->extra_size, name_size);
		if (b->extra_size) {
			b->extra = malloc(b->extra_size);
			if (b->extra)
				memcpy(b->extra, p + 24, b->extra_size);
		}
		if (!b->name || (b->extra_size && !b->extra)) {
			d->n++;
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
		pos += entry;
	}
	free(buf);
	return 0;
corrupt:
	ret = vd_error_set(err, -EINVAL, "Bitmap directory entry %u is corrupt", d->n);
fail:
	free(buf);
	dir_free(d);
	return ret;
}

static struct bm *find_bm(struct bm_dir *d, const char *name)
{
	for (uint32_t i = 0; i < d->n; i++)
		if (!strcmp(d->b[i].name, name))
			return &d->b[i];
	return NULL;
}

/* The bits of @b, in a buffer of whole clusters (caller frees). */
static int load_bits(struct qcow2_state *s, const struct bm *b, uint8_t **out, struct vd_error *err)
{
	uint64_t cs = s->cluster_size, file_len;
	uint8_t *bits, *table;
	int64_t len = vd_node_size(s->node->file);
	int ret;

	file_len = len > 0 ? (uint64_t)len : 0;
	if ((uint64_t)b->table_size * cs > BME_MAX_PHYS_SIZE)
		return vd_error_set(err, -EFBIG, "Bitmap '%s' is too large", b->name);
	bits = calloc(b->table_size ? b->table_size : 1, cs);
	table = malloc((size_t)b->table_size * 8 + 8);
	if (!bits || !table) {
		free(bits);
		free(table);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = b->table_size ? pread_file(s, b->table_offset, table, (uint64_t)b->table_size * 8)
			    : 0;
	for (uint32_t i = 0; ret == 0 && i < b->table_size; i++) {
		uint64_t e = qcow2_be64(table + 8 * (size_t)i), off = e & BME_TABLE_OFFSET_MASK;

		if (e & BME_TABLE_RESERVED_MASK) {
			ret = vd_error_set(err, -EINVAL, "Bitmap '%s' has a corrupt table",
					   b->name);
			break;
		}
		if (off) {
			if (!range_ok(s, off, cs, file_len)) {
				ret = vd_error_set(err, -EINVAL, "Bitmap '%s' has a corrupt table",
						   b->name);
				break;
			}
			ret = pread_file(s, off, bits + (size_t)i * cs, cs);
		} else if (e & 1) {
			memset(bits + (size_t)i * cs, 0xff, cs);
		}
	}
	free(table);
	if (ret < 0) {
		free(bits);
		if (!err->msg[0])
			vd_error_setg_errno(err, ret, "Could not read bitmap '%s'", b->name);
		return ret;
	}
	/* Bits past the end of the image mean nothing: keep them clear. */
	for (uint64_t i = nb_bits(s, b->gran_bits); i < (uint64_t)b->table_size * cs * 8; i++)
		bits[i / 8] &= (uint8_t) ~(1u << (i % 8));
	*out = bits;
	return 0;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Write @bits as new data clusters and a new table; set b->table_offset. */
static int store_bits(struct qcow2_state *s, struct bm *b, const uint8_t *bits)
{
	uint64_t cs = s->cluster_size, tbytes = (uint64_t)b->table_size * 8;
	uint8_t *table = calloc(1, qcow2_round_up_cluster(s, tbytes ? tbytes : 1));
	int64_t toff;
	int ret = 0;

	if (!table)
		return -ENOMEM;
	for (uint32_t i = 0; i < b->table_size; i++) {
		const uint8_t *chunk = bits + (size_t)i * cs;
		int64_t off;

		if (all_zero(chunk, cs))
			continue;
		off = qcow2_alloc_clusters(s, cs);
		if (off < 0) {
			ret = (int)off;
			goto out;
		}
		ret = pwrite_file(s, (uint64_t)off, chunk, cs);
		if (ret < 0)
			goto out;
		qcow2_put_be64(table + 8 * (size_t)i, (uint64_t)off);
	}
	toff = qcow2_alloc_clusters(s, qcow2_round_up_cluster(s, tbytes ? tbytes : 1));
	if (toff < 0) {
		ret = (int)toff;
		goto out;
	}
	ret = pwrite_file(s, (uint64_t)toff, table, qcow2_round_up_cluster(s, tbytes ? tbytes : 1));
	if (ret == 0)
		b->table_offset = (uint64_t)toff;
out:
	free(table);
	return ret;
}

/* Drop the table and data clusters of @b (after nobody names them). */
static int free_bits(struct qcow2_state *s, const struct bm *b)
{
	uint64_t cs = s->cluster_size, tbytes = (uint64_t)b->table_size * 8;
	uint8_t *table = malloc(tbytes ? tbytes : 1);
	int ret;

	if (!table)
		return -ENOMEM;
	ret = tbytes ? pread_file(s, b->table_offset, table, tbytes) : 0;
	for (uint32_t i = 0; ret == 0 && i < b->table_size; i++) {
		uint64_t off = qcow2_be64(table + 8 * (size_t)i) & BME_TABLE_OFFSET_MASK;

		/* A crafted table may name metadata: refuse (corrupt bit)
		 * rather than free it. */
		if (off)
			ret = qcow2_check_free_overlap(s, off, cs);
		if (off && ret == 0)
			ret = qcow2_update_refcount(s, off, cs, -1);
	}
	if (ret == 0)
		ret = qcow2_check_free_overlap(s, b->table_offset,
					       qcow2_round_up_cluster(s, tbytes ? tbytes : 1));
	if (ret == 0)
		ret = qcow2_update_refcount(s, b->table_offset,
					    qcow2_round_up_cluster(s, tbytes ? tbytes : 1), -1);
	free(table);
	return ret;
}

/* The directory entries of @d, as on disk (caller frees *out). */
static int serialize_dir(const struct bm_dir *d, uint8_t **out, uint64_t *out_bytes)
{
	uint64_t bytes = 0, pos = 0;
	uint8_t *buf;

	for (uint32_t i = 0; i < d->n; i++)
		bytes += (24 + d->b[i].extra_size + strlen(d->b[i].name) + 7) & ~7ull;
	if (bytes > BME_MAX_DIR_SIZE)
		return -EFBIG;
	buf = calloc(1, bytes ? bytes : 1);
	if (!buf)
		return -ENOMEM;
	for (uint32_t i = 0; i < d->n; i++) {
		const struct bm *b = &d->b[i];
		size_t name = strlen(b->name);
		uint8_t *p = buf + pos;

		qcow2_put_be64(p, b->table_offset);
		qcow2_put_be32(p + 8, b->table_size);
		qcow2_put_be32(p + 12, b->flags);
		p[16] = b->type;
		p[17] = b->gran_bits;
		p[18] = (uint8_t)(name >> 8);
		p[19] = (uint8_t)name;
		qcow2_put_be32(p + 20, b->extra_size);
		if (b->extra_size)
			memcpy(p + 24, b->extra, b->extra_size);
		memcpy(p + 24 + b->extra_size, b->name, name);
		pos += (24 + b->extra_size + name + 7) & ~7ull;
	}
	*out = buf;
	*out_bytes = bytes;
	return 0;
}

/* Write @d as the new directory, switch the header to it, free the old. */
static int write_dir(struct qcow2_state *s, struct bm_dir *d, uint64_t old_off, uint64_t old_bytes)
{
	struct qcow2_ext *e = find_ext(s), **link;
	uint64_t bytes = 0;
	uint8_t *buf = NULL;
	int64_t off = 0;
	int ret;

	if (d->n) {
		ret = serialize_dir(d, &buf, &bytes);
		if (ret < 0)
			return ret;
		off = qcow2_alloc_clusters(s, bytes);
		ret = off < 0 ? (int)off : pwrite_file(s, (uint64_t)off, buf, bytes);
		free(buf);
		if (ret < 0)
			return ret;
	}
	/* Everything the new directory names is on disk before the header
	 * names the directory. */
	ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		return ret;
	if (d->n) {
		if (!e) {
			e = calloc(1, sizeof(*e) + 24);
			if (!e)
				return -ENOMEM;
			e->type = QCOW2_EXT_BITMAPS;
			e->len = 24;
			for (link = &s->unknown_exts; *link; link = &(*link)->next)
				;
			*link = e;
		}
		qcow2_put_be32(e->data, d->n);
		qcow2_put_be32(e->data + 4, 0);
		qcow2_put_be64(e->data + 8, bytes);
		qcow2_put_be64(e->data + 16, (uint64_t)off);
		s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
	} else {
		for (link = &s->unknown_exts; *link; link = &(*link)->next) {
			if (*link == e) {
				*link = e->next;
				free(e);
				break;
			}
		}
		s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
	}
	ret = qcow2_write_header(s, NULL);
	if (ret < 0)
		return ret;
	if (old_bytes) {
		qcow2_overlap_remove(s, QCOW2_OL_BITMAP_DIRECTORY_BITNR, old_off, old_bytes);
		/* A crafted directory may sit on other metadata: never free that. */
		ret = qcow2_check_free_overlap(s, old_off, qcow2_round_up_cluster(s, old_bytes));
		if (ret == 0)
			ret = qcow2_update_refcount(s, old_off,
						    qcow2_round_up_cluster(s, old_bytes), -1);
	}
	s->ol_bitmap_dir_offset = d->n ? (uint64_t)off : 0;
	s->ol_bitmap_dir_bytes = d->n ? bytes : 0;
	if (d->n)
		qcow2_overlap_add(s, QCOW2_OL_BITMAP_DIRECTORY_BITNR, (uint64_t)off, bytes);
	d->offset = s->ol_bitmap_dir_offset;
	d->bytes = s->ol_bitmap_dir_bytes;
	/* What we wrote is valid, whatever the image held when opened. */
	s->bitmaps_valid_at_open = true;
	return ret;
}

/* OR the bits of @src (granularity @gs, bytes @size) into @dst (@gd). */
static void merge_bits(uint8_t *dst, uint8_t gd, const uint8_t *src, uint8_t gs, uint64_t size)
{
	uint64_t n = (size + (1ull << gs) - 1) >> gs;

	for (uint64_t i = 0; i < n; i++) {
		uint64_t start, end;

		if (!(src[i / 8] & (1u << (i % 8))))
			continue;
		start = i << gs;
		end = (i + 1) << gs;
		if (end > size)
			end = size;
		for (uint64_t j = start >> gd; j <= (end - 1) >> gd; j++)
			dst[j / 8] |= (uint8_t)(1u << (j % 8));
	}
}

static bool usable(const struct bm *b, struct vd_error *err)
{
	if (b->flags & BME_FLAG_IN_USE) {
		vd_error_set(err, -EINVAL,
			     "Bitmap '%s' is inconsistent and cannot be used\n"
			     "Try block-dirty-bitmap-remove to delete this bitmap from disk",
			     b->name);
		return false;
	}
	return true;
}

int qcow2_bitmaps_revalidate(struct qcow2_state *s)
{
	uint8_t buf[8];
	struct vd_qiov q;
	int ret;

	if (!s->bitmaps_valid_at_open || s->data_changed || s->read_only ||
	    (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) || !find_ext(s))
		return 0;
	/* qcow2.txt "Header": autoclear_features at byte 88. */
	qcow2_put_be64(buf, s->autoclear | QCOW2_AUTOCLEAR_BITMAPS);
	vd_qiov_init_buf(&q, buf, 8);
	ret = vd_co_pwritev(s->node->file, 88, 8, &q, 0);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret == 0)
		s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
	return ret;
}

/* Set the autoclear bit (the bitmaps on disk are whole again). */
static int qcow2_bitmaps_set_valid(struct qcow2_state *s)
{
	uint8_t buf[8];
	struct vd_qiov q;
	int ret;

	qcow2_put_be64(buf, s->autoclear | QCOW2_AUTOCLEAR_BITMAPS);
	vd_qiov_init_buf(&q, buf, 8);
	ret = vd_co_pwritev(s->node->file, 88, 8, &q, 0);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret == 0)
		s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
	return ret;
}

int qcow2_bitmaps_invalidate(struct qcow2_state *s)
{
	uint8_t buf[8];
	struct vd_qiov q;
	int ret;

	if (!(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	qcow2_put_be64(buf, s->autoclear & ~QCOW2_AUTOCLEAR_BITMAPS);
	vd_qiov_init_buf(&q, buf, 8);
	ret = vd_co_pwritev(s->node->file, 88, 8, &q, 0);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret == 0)
		s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
	return ret;
}

static int bitmap_locked(struct qcow2_state *s, enum vd_bitmap_action act, const char *name,
			 uint64_t granularity, struct vd_node *src, const char *src_name,
			 bool tracked, struct vd_error *err)
{
	struct bm_dir d, sd = {0};
	struct bm *b, *sb, old;
	uint8_t *bits = NULL, *sbits = NULL;
	uint64_t old_off, old_bytes;
	int ret;

	if (s->read_only)
		return vd_error_set(err, -EROFS, "The image is open read-only");
	if (s->version < 3)
		return act == VD_BITMAP_ADD
			       ? vd_error_set(err, -ENOTSUP,
					      "Can't make bitmap '%s' persistent in '%s': Cannot "
					      "store dirty bitmaps in qcow2 v2 files",
					      name, s->node->filename)
			       : vd_error_set(err, -ENOENT, "Dirty bitmap '%s' not found", name);
	/* Without live bitmaps (they could not be loaded), a write since the
	 * open made the bitmaps on disk stale. */
	if (s->data_changed && !tracked && s->bitmaps_valid_at_open)
		return vd_error_set(err, -EBUSY,
				    "The image was written since it was opened: its bitmaps are "
				    "no longer valid");
	/* Nothing was written since the open: the bitmaps are still what
	 * they were, whatever this operation does. */
	ret = qcow2_bitmaps_revalidate(s);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not update the image header");
	ret = load_dir(s, &d, err);
	if (ret < 0)
		return ret;
	old_off = d.offset;
	old_bytes = d.bytes;
	b = find_bm(&d, name);
	if (act == VD_BITMAP_ADD) {
		struct bm *grown;
		uint8_t gb = 0;

		if (!*name) {
			ret = vd_error_set(err, -EINVAL, "Bitmap name cannot be empty");
			goto out;
		}
		if (strlen(name) > BME_MAX_NAME) {
			ret = vd_error_set(err, -EINVAL, "Bitmap name too long: %s", name);
			goto out;
		}
		if (!granularity)
			granularity = s->cluster_size > 65536 ? s->cluster_size : 65536;
		if (granularity < 512 || granularity > (1ull << 31) ||
		    (granularity & (granularity - 1))) {
			ret = vd_error_set(err, -EINVAL,
					   "Granularity must be power of 2 and at least 512");
			goto out;
		}
		if (b) {
			ret = vd_error_set(err, -EEXIST, "Bitmap already exists: %s", name);
			goto out;
		}
		if (d.n >= BME_MAX_BITMAPS) {
			ret = vd_error_set(err, -ENOSPC, "Too many bitmaps");
			goto out;
		}
		while ((1ull << gb) < granularity)
			gb++;
		if (table_entries(s, gb) > BME_MAX_TABLE_SIZE ||
		    table_entries(s, gb) * s->cluster_size > BME_MAX_PHYS_SIZE) {
			ret = vd_error_set(err, -EFBIG, "Bitmap would be too large");
			goto out;
		}
		grown = realloc(d.b, (d.n + 1) * sizeof(*d.b));
		if (!grown) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		d.b = grown;
		b = &d.b[d.n];
		memset(b, 0, sizeof(*b));
		b->name = strdup(name);
		d.n++;
		if (!b->name) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		b->type = BME_TYPE_DIRTY;
		b->gran_bits = gb;
		b->flags = BME_FLAG_AUTO;
		b->table_size = (uint32_t)table_entries(s, gb);
		bits = calloc(b->table_size ? b->table_size : 1, s->cluster_size);
		if (!bits) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		ret = store_bits(s, b, bits);
		if (ret == 0)
			ret = write_dir(s, &d, old_off, old_bytes);
		if (ret < 0)
			vd_error_setg_errno(err, ret, "Could not store bitmap '%s'", name);
		goto out;
	}
	if (!b) {
		ret = vd_error_set(err, -ENOENT, "Dirty bitmap '%s' not found", name);
		goto out;
	}
	old = *b;
	switch (act) {
	case VD_BITMAP_REMOVE:
		free(b->name);
		free(b->extra);
		memmove(b, b + 1, (size_t)(d.n - (uint32_t)(b - d.b) - 1) * sizeof(*b));
		d.n--;
		ret = write_dir(s, &d, old_off, old_bytes);
		if (ret == 0)
			ret = free_bits(s, &old);
		if (ret < 0)
			vd_error_setg_errno(err, ret, "Could not remove bitmap '%s'", name);
		/* The name and extra data went with the entry. */
		old.name = NULL;
		old.extra = NULL;
		break;
	case VD_BITMAP_ENABLE:
	case VD_BITMAP_DISABLE:
		if (!usable(b, err)) {
			ret = -EINVAL;
			break;
		}
		if (act == VD_BITMAP_ENABLE)
			b->flags |= BME_FLAG_AUTO;
		else
			b->flags &= ~BME_FLAG_AUTO;
		ret = write_dir(s, &d, old_off, old_bytes);
		if (ret < 0)
			vd_error_setg_errno(err, ret, "Could not update bitmap '%s'", name);
		break;
	case VD_BITMAP_CLEAR:
	case VD_BITMAP_MERGE:
		if (!usable(b, err)) {
			ret = -EINVAL;
			break;
		}
		if (act == VD_BITMAP_CLEAR) {
			bits = calloc(b->table_size ? b->table_size : 1, s->cluster_size);
			if (!bits) {
				ret = vd_error_set(err, -ENOMEM, "Out of memory");
				break;
			}
		} else {
			struct qcow2_state *ss = src ? src->opaque : s;

			if (src && src->drv != s->node->drv) {
				ret = vd_error_set(err, -ENOENT, "Dirty bitmap '%s' not found",
						   src_name);
				break;
			}
			if (ss == s) {
				sb = find_bm(&d, src_name);
			} else {
				ret = load_dir(ss, &sd, err);
				if (ret < 0)
					break;
				sb = find_bm(&sd, src_name);
			}
			if (!sb) {
				ret = vd_error_set(err, -ENOENT, "Dirty bitmap '%s' not found",
						   src_name);
				break;
			}
			if (!usable(sb, err)) {
				ret = -EINVAL;
				break;
			}
			if (ss->size != s->size) {
				ret = vd_error_set(err, -EINVAL,
						   "Bitmaps are incompatible and can't be merged");
				break;
			}
			ret = load_bits(s, b, &bits, err);
			if (ret == 0)
				ret = load_bits(ss, sb, &sbits, err);
			if (ret < 0)
				break;
			merge_bits(bits, b->gran_bits, sbits, sb->gran_bits, s->size);
		}
		ret = store_bits(s, b, bits);
		if (ret == 0)
			ret = write_dir(s, &d, old_off, old_bytes);
		if (ret == 0)
			ret = free_bits(s, &old);
		if (ret < 0 && !err->msg[0])
			vd_error_setg_errno(err, ret, "Could not store bitmap '%s'", name);
		old.name = NULL;
		old.extra = NULL;
		break;
	default:
		ret = vd_error_set(err, -EINVAL, "Unknown bitmap operation");
		break;
	}
out:
	if (ret == 0) {
		ret = qcow2_cache_flush(s, &s->rb_cache);
		if (ret < 0)
			vd_error_setg_errno(err, ret, "Could not flush the refcounts");
	}
	free(bits);
	free(sbits);
	dir_free(&sd);
	dir_free(&d);
	return ret;
}

int qcow2_co_bitmap(struct vd_node *n, enum vd_bitmap_action act, const char *name,
		    uint64_t granularity, struct vd_node *src, const char *src_name,
		    struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	struct qcow2_state *ss = src && src != n && src->drv == n->drv ? src->opaque : NULL;
	int ret;

	bool live, slive;

	vd_co_mutex_lock(&s->lock);
	if (ss)
		vd_co_mutex_lock(&ss->lock);
	qcow2_bitmaps_op_begin(s);
	if (ss)
		qcow2_bitmaps_op_begin(ss);
	/* Live bitmaps are written back first (in-use flag cleared), so that
	 * the operation works on what was recorded, then loaded again. */
	live = s->bitmaps_live;
	slive = ss && ss->bitmaps_live;
	ret = qcow2_bitmaps_store_live(s);
	if (ret == 0 && ss)
		ret = qcow2_bitmaps_store_live(ss);
	if (ret < 0)
		vd_error_setg_errno(err, ret, "Could not store the bitmaps");
	else
		ret = bitmap_locked(s, act, name, granularity, src == n ? NULL : src, src_name,
				    live, err);
	if (slive) {
		struct vd_error e2 = {0};

		qcow2_bitmaps_load_live(ss, &e2);
	}
	/* Loaded again, with a bitmap just added: it records the writes
	 * that follow, as in QEMU. */
	if (!s->read_only) {
		struct vd_error e2 = {0};
		int r2 = qcow2_bitmaps_load_live(s, &e2);

		if (r2 < 0 && ret == 0)
			ret = vd_error_set(err, r2, "%s", e2.msg);
	}
	if (ss) {
		qcow2_bitmaps_op_end(ss);
		vd_co_mutex_unlock(&ss->lock);
	}
	qcow2_bitmaps_op_end(s);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

/*
 * amend -o size= with valid bitmaps: every bitmap is rewritten for the new
 * size (bits past the old end clear, bits past the new end dropped), as
 * QEMU resizes its bitmaps with the image.  Runs the resize itself between
 * reading the bitmaps (old size) and writing them (new size).
 */
int qcow2_truncate_with_bitmaps(struct qcow2_state *s, uint64_t new_size, struct vd_error *err)
{
	struct bm_dir d;
	uint8_t **bits = NULL;
	struct bm *old = NULL;
	uint64_t old_off, old_bytes;
	int ret;

	if (!(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) || !find_ext(s))
		return qcow2_truncate_locked(s, new_size, err);
	ret = load_dir(s, &d, err);
	if (ret < 0)
		return ret;
	old_off = d.offset;
	old_bytes = d.bytes;
	bits = calloc(d.n ? d.n : 1, sizeof(*bits));
	old = calloc(d.n ? d.n : 1, sizeof(*old));
	if (!bits || !old) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto out;
	}
	for (uint32_t i = 0; i < d.n; i++) {
		/* QEMU 7.2 refuses to resize an image with an inconsistent
		 * bitmap (it could not be resized along). */
		if (d.b[i].flags & BME_FLAG_IN_USE) {
			ret = vd_error_set(err, -EINVAL,
					   "Bitmap '%s' is inconsistent and cannot be used\n"
					   "Try block-dirty-bitmap-remove to delete this bitmap "
					   "from disk",
					   d.b[i].name);
			goto out;
		}
		ret = load_bits(s, &d.b[i], &bits[i], err);
		if (ret < 0)
			goto out;
	}
	/* Until the directory is rewritten for the new size, the on-disk
	 * bitmaps are too small for it: mark them invalid first (the
	 * directory write sets the bit again), so a cut in between leaves
	 * an image that opens, without bitmaps, never one QEMU refuses. */
	ret = qcow2_bitmaps_invalidate(s);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Failed to invalidate the bitmaps");
		goto out;
	}
	ret = qcow2_truncate_locked(s, new_size, err);
	if (ret < 0)
		goto out;
	for (uint32_t i = 0; i < d.n; i++) {
		struct bm *b = &d.b[i];
		uint64_t entries = table_entries(s, b->gran_bits);
		uint8_t *nb;

		if (!bits[i])
			continue;
		if (entries > BME_MAX_TABLE_SIZE || entries * s->cluster_size > BME_MAX_PHYS_SIZE) {
			ret = vd_error_set(err, -EFBIG, "Bitmap '%s' would be too large", b->name);
			goto out;
		}
		nb = calloc(entries ? entries : 1, s->cluster_size);
		if (!nb) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto out;
		}
		memcpy(nb, bits[i],
		       (entries < b->table_size ? entries : b->table_size) * s->cluster_size);
		for (uint64_t j = nb_bits(s, b->gran_bits); j < entries * s->cluster_size * 8; j++)
			nb[j / 8] &= (uint8_t) ~(1u << (j % 8));
		free(bits[i]);
		bits[i] = nb;
		old[i] = *b;
		b->table_size = (uint32_t)entries;
		ret = store_bits(s, b, nb);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not store bitmap '%s'", b->name);
			goto out;
		}
	}
	ret = write_dir(s, &d, old_off, old_bytes);
	for (uint32_t i = 0; ret == 0 && i < d.n; i++)
		if (bits[i])
			ret = free_bits(s, &old[i]);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret < 0)
		vd_error_setg_errno(err, ret, "Could not resize the bitmaps");
out:
	for (uint32_t i = 0; bits && i < d.n; i++)
		free(bits[i]);
	free(bits);
	free(old);
	dir_free(&d);
	return ret;
}

/*
 * Live bitmaps.  As QEMU 7.2 on a read-write open: every consistent bitmap
 * (enabled or not) is read into memory and flagged in use in the directory
 * on disk before any guest write; the enabled ones take the bits of every
 * write, zero write and discard; at close they are written back (new data
 * clusters and tables, a new directory, the old ones freed) with the in-use
 * flag cleared.  A bitmap found in use is inconsistent: left as it is.  A
 * crash before the close leaves the bitmaps flagged in use, as QEMU's.
 */
void qcow2_bitmaps_free_live(struct qcow2_state *s)
{
	for (uint32_t i = 0; i < s->n_live; i++) {
		free(s->live[i].name);
		free(s->live[i].bits);
	}
	free(s->live);
	s->live = NULL;
	s->n_live = 0;
	s->bitmaps_live = false;
}

/*
 * Only flags changed: the directory is rewritten where it is, as QEMU's
 * update_ext_header_and_dir_in_place, so that an open allocates nothing.
 * The autoclear bit is cleared around the write: a cut in between leaves
 * bitmaps that every reader ignores (and leaked clusters), never a
 * half-written directory that one would trust.
 */
static int write_flags_in_place(struct qcow2_state *s, const struct bm_dir *d)
{
	uint64_t bytes;
	uint8_t *buf;
	struct vd_qiov q;
	int ret = serialize_dir(d, &buf, &bytes);

	if (ret < 0)
		return ret;
	if (bytes != d->bytes) {
		free(buf);
		return -EINVAL;
	}
	ret = qcow2_bitmaps_invalidate(s);
	if (ret == 0)
		ret = qcow2_check_overlap(s, QCOW2_OL_BITMAP_DIRECTORY, d->offset, bytes);
	if (ret == 0) {
		vd_qiov_init_buf(&q, buf, bytes);
		ret = vd_co_pwritev(s->node->file, (int64_t)d->offset, (int64_t)bytes, &q, 0);
	}
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	free(buf);
	if (ret < 0)
		return ret;
	return qcow2_bitmaps_set_valid(s);
}

int qcow2_bitmaps_load_live(struct qcow2_state *s, struct vd_error *err)
{
	struct bm_dir d;
	bool changed = false;
	int ret;

	if (s->bitmaps_live || s->read_only || !find_ext(s) ||
	    !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS))
		return 0;
	ret = load_dir(s, &d, err);
	if (ret < 0)
		return ret;
	s->live = calloc(d.n ? d.n : 1, sizeof(*s->live));
	if (!s->live) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	for (uint32_t i = 0; i < d.n; i++) {
		struct bm *b = &d.b[i];
		struct qcow2_live_bitmap *l = &s->live[s->n_live];

		if (b->flags & BME_FLAG_IN_USE)
			continue; /* inconsistent: QEMU neither loads nor stores it */
		ret = load_bits(s, b, &l->bits, err);
		if (ret < 0)
			goto fail;
		l->name = strdup(b->name);
		s->n_live++;
		if (!l->name) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
		l->gran_bits = b->gran_bits;
		l->enabled = (b->flags & BME_FLAG_AUTO) != 0;
		l->nbits = nb_bits(s, b->gran_bits);
		b->flags |= BME_FLAG_IN_USE;
		changed = true;
	}
	/* A directory that shares clusters with other metadata (a crafted
	 * image) is not written: the bitmaps are left unloaded. */
	if (changed && s->ol_ready && !s->ol_broken &&
	    (qcow2_ol_query(&s->ol, d.offset, d.bytes) & ~QCOW2_OL_BITMAP_DIRECTORY)) {
		ret = vd_error_set(err, -EINVAL, "The bitmap directory overlaps other metadata");
		goto fail;
	}
	if (changed) {
		ret = write_flags_in_place(s, &d);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not mark the bitmaps in use");
			goto fail;
		}
	}
	s->bitmaps_live = true;
	dir_free(&d);
	return 0;
fail:
	qcow2_bitmaps_free_live(s);
	dir_free(&d);
	return ret;
}

/* Set bits @first..@last (inclusive): whole bytes at once. */
static void set_bits(uint8_t *p, uint64_t first, uint64_t last)
{
	while (first <= last && (first & 7)) {
		p[first / 8] |= (uint8_t)(1u << (first & 7));
		first++;
	}
	if (first <= last && last - first + 1 >= 8) {
		uint64_t n = (last - first + 1) / 8;

		memset(p + first / 8, 0xff, n);
		first += n * 8;
	}
	while (first <= last) {
		p[first / 8] |= (uint8_t)(1u << (first & 7));
		first++;
	}
}

void qcow2_bitmaps_op_begin(struct qcow2_state *s)
{
	s->bitmaps_op = vd_co_self();
}

void qcow2_bitmaps_op_end(struct qcow2_state *s)
{
	s->bitmaps_op = NULL;
	vd_co_queue_restart_all(&s->bitmaps_op_waiters);
}

void vd_coroutine_fn qcow2_bitmaps_track(struct qcow2_state *s, uint64_t offset, uint64_t bytes)
{
	/* The operation's own writes (a resize zeroing its tail) go on. */
	while (s->bitmaps_op && s->bitmaps_op != vd_co_self())
		vd_co_queue_wait(&s->bitmaps_op_waiters);
	if (!s->bitmaps_live || !bytes || offset >= s->size)
		return;
	if (bytes > s->size - offset)
		bytes = s->size - offset;
	for (uint32_t i = 0; i < s->n_live; i++) {
		const struct qcow2_live_bitmap *l = &s->live[i];
		uint64_t first = offset >> l->gran_bits;
		uint64_t last = (offset + bytes - 1) >> l->gran_bits;

		if (!l->enabled || first >= l->nbits)
			continue;
		if (last >= l->nbits)
			last = l->nbits - 1;
		set_bits(l->bits, first, last);
		s->live[i].modified = true;
	}
}

static struct qcow2_live_bitmap *find_live(struct qcow2_state *s, const char *name)
{
	for (uint32_t i = 0; i < s->n_live; i++)
		if (!strcmp(s->live[i].name, name))
			return &s->live[i];
	return NULL;
}

int qcow2_bitmaps_store_live(struct qcow2_state *s)
{
	struct vd_error err = {0};
	struct bm_dir d;
	struct bm *old = NULL;
	bool *replaced = NULL, any_ours = false, any_modified = false;
	int ret;

	if (!s->bitmaps_live)
		return 0;
	ret = load_dir(s, &d, &err);
	if (ret < 0)
		goto out_free;
	old = calloc(d.n ? d.n : 1, sizeof(*old));
	replaced = calloc(d.n ? d.n : 1, sizeof(*replaced));
	if (!old || !replaced) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < d.n; i++) {
		struct bm *b = &d.b[i];
		struct qcow2_live_bitmap *l = find_live(s, b->name);

		if (!l || l->gran_bits != b->gran_bits || !(b->flags & BME_FLAG_IN_USE))
			continue; /* not ours (inconsistent at open): kept as it is */
		any_ours = true;
		if (!l->modified) {
			/* The bits on disk are still these: only the flags. */
			b->flags = l->enabled ? BME_FLAG_AUTO : 0;
			continue;
		}
		any_modified = true;
		old[i].table_offset = b->table_offset;
		old[i].table_size = b->table_size;
		old[i].name = b->name;
		ret = store_bits(s, b, l->bits);
		if (ret < 0)
			goto out;
		replaced[i] = true;
		b->flags = l->enabled ? BME_FLAG_AUTO : 0;
	}
	if (!any_ours) {
		ret = 0;
		goto out;
	}
	/* No bit changed: the flags are cleared where they are, as they were
	 * set (nothing allocated, nothing freed). */
	if (!any_modified) {
		ret = write_flags_in_place(s, &d);
		goto out;
	}
	/* The new tables and data are on disk (write_dir flushes) before
	 * the new directory names them without the in-use flag. */
	ret = write_dir(s, &d, d.offset, d.bytes);
	for (uint32_t i = 0; ret == 0 && i < d.n; i++)
		if (replaced[i])
			ret = free_bits(s, &old[i]);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
out:
	free(old);
	free(replaced);
	dir_free(&d);
out_free:
	/* On failure the bitmaps stay flagged in use: inconsistent, as after
	 * a crash, never wrong. */
	qcow2_bitmaps_free_live(s);
	return ret;
}
