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
		if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
			ret = vd_error_set(err, -EFBIG,
					   "Too much extra metadata in snapshot table entry %u", i);
			goto fail;
		}
		off += sizeof(h);
		e->extra_size = extra;
		e->extra = malloc(extra ? extra : 1);
		e->id = calloc(1, id_len + 1);
		e->name = calloc(1, name_len + 1);
		if (!e->extra || !e->id || !e->name) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
		ret = read_at(s, off, e->extra, extra);
		if (ret == 0)
			ret = read_at(s, off + extra, e->id, id_len);
		if (ret == 0)
			ret = read_at(s, off + extra + id_len, e->name, name_len);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read the snapshot table");
			goto fail;
		}
		if (extra >= 8)
			e->vm_state_size = qcow2_be64(e->extra);
		if (extra >= 16)
			e->disk_size = qcow2_be64(e->extra + 8);
		if (extra >= 24)
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

/*
 * Add @addend (+1, -1 or 0) to the refcount of every cluster an L1 table
 * references (its L2 tables and their data clusters) and make the COPIED
 * flags of the entries say "refcount == 1" (QEMU's
 * qcow2_update_snapshot_refcount).  @l1 is the table, host-endian; when it
 * changes (COPIED) and @addend >= 0 it is written back to @l1_offset.
 */
static int update_snapshot_refcount(struct qcow2_state *s, uint64_t *l1, uint64_t l1_offset,
				    uint32_t l1_size, int addend)
{
	bool l1_modified = false;
	int ret = 0;

	if (addend > 0) {
		/* Refcounts reach the disk before the entries that rely on them. */
		ret = qcow2_cache_set_dependency(s, &s->l2_cache, &s->rb_cache);
		if (ret < 0)
			return ret;
	}
	for (uint32_t i = 0; i < l1_size; i++) {
		uint64_t l2_off = l1[i] & QCOW2_L1E_OFFSET_MASK, rc = 0, ne;

		if (!l2_off)
			continue;
		if (qcow2_offset_into_cluster(s, l2_off) || l2_off < s->cluster_size)
			return qcow2_signal_corruption(
				s, "L2 table offset %#" PRIx64 " invalid (L1 index %#" PRIx32 ")",
				l2_off, i);
		for (uint64_t so = 0; so < s->l2_entries; so += s->l2_slice_entries) {
			void *slice;

			ret = qcow2_cache_get(s, &s->l2_cache, l2_off + so * s->l2_entry_bytes,
					      false, &slice);
			if (ret < 0)
				return ret;
			for (uint64_t j = 0; j < s->l2_slice_entries; j++) {
				uint64_t e = qcow2_l2_entry(s, slice, j);
				uint64_t off = e & QCOW2_L2E_OFFSET_MASK;

				if (e & QCOW2_OFLAG_COMPRESSED) {
					if (addend > 0) {
						uint64_t coff = e & s->coffset_mask;
						uint64_t n =
							((e >> s->csize_shift) & s->csize_mask) + 1;
						ret = qcow2_update_refcount(
							s, coff, n * 512 - (coff & 511), 1);
					} else if (addend < 0) {
						ret = qcow2_free_l2_entry(s, e);
					}
				} else if (off) {
					if (qcow2_offset_into_cluster(s, off)) {
						ret = qcow2_signal_corruption(
							s, "Cluster %#" PRIx64 " unaligned", off);
						break;
					}
					if (addend)
						ret = qcow2_update_refcount(s, off, s->cluster_size,
									    addend);
					if (ret == 0)
						ret = qcow2_get_refcount(s, off >> s->cluster_bits,
									 &rc);
					ne = rc == 1 ? e | QCOW2_OFLAG_COPIED
						     : e & ~QCOW2_OFLAG_COPIED;
					if (ret == 0 && ne != e) {
						qcow2_set_l2_entry(s, slice, j, ne);
						qcow2_cache_mark_dirty(&s->l2_cache, slice);
					}
				}
				if (ret < 0)
					break;
			}
			qcow2_cache_put(&s->l2_cache, slice);
			if (ret < 0)
				return ret;
		}
		if (addend)
			ret = qcow2_update_refcount(s, l2_off, s->cluster_size, addend);
		if (ret == 0)
			ret = qcow2_get_refcount(s, l2_off >> s->cluster_bits, &rc);
		if (ret < 0)
			return ret;
		ne = rc == 1 ? l1[i] | QCOW2_OFLAG_COPIED : l1[i] & ~QCOW2_OFLAG_COPIED;
		if (ne != l1[i]) {
			l1[i] = ne;
			l1_modified = true;
		}
	}
	if (addend >= 0 && l1_modified && l1_size) {
		uint8_t *buf = malloc((size_t)l1_size * 8);
		if (!buf)
			return -ENOMEM;
		for (uint32_t i = 0; i < l1_size; i++)
			qcow2_put_be64(buf + 8 * i, l1[i]);
		ret = qcow2_cache_flush(s, &s->l2_cache);
		if (ret == 0)
			/* The active L1 or a snapshot's (goto writes the COPIED
			 * flags of the one it applies back to it). */
			ret = qcow2_check_overlap(s, QCOW2_OL_ACTIVE_L1 | QCOW2_OL_INACTIVE_L1,
						  l1_offset, (uint64_t)l1_size * 8);
		if (ret == 0)
			ret = write_at(s, l1_offset, buf, (uint64_t)l1_size * 8);
		if (ret == 0)
			ret = vd_co_flush(s->node->file);
		free(buf);
	}
	return ret;
}

static uint64_t entry_bytes(const struct qcow2_snapshot *sn)
{
	uint64_t len = 40 + (uint64_t)sn->extra_size + strlen(sn->id) + strlen(sn->name);
	return (len + 7) & ~7ull;
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
	uint64_t bytes = 0, pos = 0, old_off = s->snapshots_offset;
	int64_t off = 0;
	uint8_t *buf = NULL, hdr[12];
	int ret;

	for (uint32_t i = 0; i < n; i++)
		bytes += entry_bytes(&sn[i]);
	if (bytes > QCOW2_MAX_SNAPSHOTS_BYTES || n > QCOW2_MAX_SNAPSHOTS)
		return -EFBIG;
	if (n) {
		buf = calloc(1, bytes);
		if (!buf)
			return -ENOMEM;
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

	/* 1. A copy of the active L1 table, with the refcounts of all it
	 * references raised (and COPIED cleared in the active tables). */
	ret = qcow2_mark_dirty(s);
	if (ret < 0)
		goto fail_msg;
	buf = malloc(l1_bytes ? l1_bytes : 1);
	if (!buf) {
		ret = -ENOMEM;
		goto fail_msg;
	}
	for (uint32_t i = 0; i < s->l1_size; i++)
		qcow2_put_be64(buf + 8 * i, s->l1[i]);
	if (l1_bytes) {
		l1_off = qcow2_alloc_clusters(s, l1_bytes);
		if (l1_off < 0) {
			ret = (int)l1_off;
			goto fail_msg;
		}
		ret = qcow2_check_overlap(s, 0, (uint64_t)l1_off, l1_bytes);
		if (ret == 0)
			ret = write_at(s, (uint64_t)l1_off, buf, l1_bytes);
		if (ret < 0)
			goto fail_msg;
	} else {
		l1_off = 0;
	}
	ret = update_snapshot_refcount(s, s->l1, s->l1_offset, s->l1_size, 1);
	if (ret < 0)
		goto fail_msg;

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
	ret = write_snapshots(s, sn, (uint32_t)count, bytes);
	if (ret < 0)
		goto fail_msg;
	ret = 0;
	goto out;
fail_msg:
	vd_error_setg_errno(err, ret, "Could not create snapshot '%s'", info->name);
out:
	free(buf);
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
	uint8_t *buf = NULL;

	s->data_changed = true;
	int count, idx, ret;

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
	/* 1. Raise the refcounts of what the snapshot references (its L1 on
	 * disk is left as it is: addend > 0 writes only changed COPIED flags,
	 * which do not matter in snapshot tables, so use a scratch copy). */
	{
		uint64_t *tmp = malloc((size_t)s->l1_size * 8 + 8);
		if (!tmp) {
			ret = -ENOMEM;
			goto fail_msg;
		}
		memcpy(tmp, new_l1, (size_t)s->l1_size * 8);
		ret = update_snapshot_refcount(s, tmp, sn[idx].l1_offset, sn[idx].l1_size, 1);
		free(tmp);
		if (ret < 0)
			goto fail_msg;
	}
	/* 2. The new active L1 on disk, after the refcounts. */
	ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret == 0)
		ret = qcow2_check_overlap(s, QCOW2_OL_ACTIVE_L1, s->l1_offset,
					  (uint64_t)s->l1_size * 8);
	if (ret == 0)
		ret = write_at(s, s->l1_offset, buf, (uint64_t)s->l1_size * 8);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret < 0)
		goto fail_msg;
	/* 3. Drop the references of the old active L1 (in memory), then
	 * switch to the new one and fix its COPIED flags. */
	qcow2_cache_depends_on_flush(&s->rb_cache);
	ret = update_snapshot_refcount(s, s->l1, s->l1_offset, s->l1_size, -1);
	memcpy(s->l1, new_l1, (size_t)s->l1_size * 8);
	if (ret == 0)
		ret = update_snapshot_refcount(s, s->l1, s->l1_offset, s->l1_size, 0);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret == 0)
		goto out;
fail_msg:
	vd_error_setg_errno(err, ret, "Could not apply snapshot '%s'", id_or_name);
out:
	free(buf);
	free(new_l1);
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
	uint8_t *buf = NULL;
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
	ret = qcow2_mark_dirty(s);
	if (ret < 0)
		goto fail_msg;
	/* 1. The table without it (from here on a failure only leaks). */
	memmove(&sn[idx], &sn[idx + 1], sizeof(*sn) * (size_t)(count - idx - 1));
	count--;
	ret = write_snapshots(s, sn, (uint32_t)count, bytes);
	free(victim.id);
	free(victim.name);
	free(victim.extra);
	if (ret < 0)
		goto fail_msg;
	/* 2. Drop its references and its L1 table, then fix COPIED flags. */
	qcow2_cache_depends_on_flush(&s->rb_cache);
	ret = update_snapshot_refcount(s, l1, victim.l1_offset, victim.l1_size, -1);
	if (ret == 0 && victim.l1_size)
		ret = qcow2_update_refcount(s, victim.l1_offset, (uint64_t)victim.l1_size * 8, -1);
	if (ret == 0)
		ret = update_snapshot_refcount(s, s->l1, s->l1_offset, s->l1_size, 0);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_flush(s, &s->rb_cache);
	if (ret == 0)
		goto out;
fail_msg:
	vd_error_setg_errno(err, ret, "Could not delete snapshot '%s'", id_or_name);
out:
	free(buf);
	free(l1);
	qcow2_free_snapshots(sn, count > 0 ? (uint32_t)count : 0);
	/* Tables moved (snapshot table, L1 tables): index them anew. */
	if (s->ol_ready && !s->read_only)
		qcow2_overlap_rebuild(s);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}
