/* SPDX-License-Identifier: MIT */
/*
 * vmdk requests: reads, writes, zero writes, block status and the check,
 * with QEMU 7.2's semantics (block/vmdk.c):
 *
 *   - a grain table entry (GTE) of 0 is an unallocated grain (read from the
 *     parent, or zeroes), 1 with the zeroed-grain flag is a zero grain,
 *     anything else the grain's sector in the extent file;
 *   - a write to an unallocated grain appends a whole grain at the end of
 *     the file (the rest from the parent, or zeroes), then points the grain
 *     table entry, and the redundant one, at it, then flushes;
 *   - streamOptimized (compressed) extents take whole grains only, once
 *     each: the grain is deflated behind a 12-byte marker (LBA, size) and
 *     appended; rewriting an allocated grain is refused (-EIO);
 *   - the first write after open gives the image a new CID.
 *
 * Grain table sectors were checked at open (inside the file, past sector
 * 0); grain sectors are checked here: a write never goes below the
 * header's grain offset (the metadata), a compressed grain's size never
 * past the buffer it was read into.
 *
 * Locking: s->lock covers the grain table cache, allocation and every
 * metadata write; data of allocated grains moves outside it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "block/drivers/byteorder.h"
#include "block/drivers/vmdk/vmdk.h"
#include "block/internal.h"

enum {
	G_DATA,
	G_UNALLOC,
	G_ZERO
};

struct gte_ref {
	uint32_t gte;
	uint32_t gt_sector; /* 0: no grain table for this range */
	uint32_t l1, l2;
	uint32_t *slot; /* the entry in the cache */
};

static struct vmdk_extent *find_extent(struct vmdk_state *s, uint64_t sector)
{
	int lo = 0, hi = s->num_extents - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		struct vmdk_extent *e = &s->extents[mid];

		if (sector < e->start)
			hi = mid - 1;
		else if (sector >= e->start + e->sectors)
			lo = mid + 1;
		else
			return e;
	}
	return NULL;
}

static uint32_t *load_gt(struct vmdk_extent *e, uint32_t sector, int *ret)
{
	struct vmdk_gt_cache *c, *victim = &e->cache[0];
	struct vd_qiov q;

	for (int i = 0; i < VMDK_GT_CACHE; i++) {
		c = &e->cache[i];
		if (c->sector == sector) {
			if (++c->uses == UINT32_MAX)
				for (int j = 0; j < VMDK_GT_CACHE; j++)
					e->cache[j].uses >>= 1;
			return c->entries;
		}
		if (c->uses < victim->uses)
			victim = c;
	}
	victim->sector = 0;
	vd_debug_event(e->file, VD_EV_L2_LOAD);
	vd_qiov_init_buf(&q, victim->entries, (size_t)e->gt_entries * 4);
	*ret = vd_co_preadv(e->file, (int64_t)sector * 512, (int64_t)e->gt_entries * 4, &q, 0);
	if (*ret < 0)
		return NULL;
	for (uint32_t i = 0; i < e->gt_entries; i++)
		victim->entries[i] = ld_le32((const uint8_t *)&victim->entries[i]);
	victim->sector = sector;
	victim->uses = 1;
	return victim->entries;
}

/* The grain table entry of byte @off of sparse extent @e.  With s->lock. */
static int get_gte(struct vmdk_extent *e, uint64_t off, struct gte_ref *r)
{
	uint64_t grain = off / 512 / e->grain_sectors;
	uint32_t *gt;
	int ret = 0;

	memset(r, 0, sizeof(*r));
	if (grain / e->gt_entries >= e->gd_entries)
		return -EIO;
	r->l1 = (uint32_t)(grain / e->gt_entries);
	r->l2 = (uint32_t)(grain % e->gt_entries);
	r->gt_sector = e->gd[r->l1];
	if (!r->gt_sector)
		return G_UNALLOC;
	gt = load_gt(e, r->gt_sector, &ret);
	if (!gt)
		return ret;
	r->slot = &gt[r->l2];
	r->gte = gt[r->l2];
	if (r->gte == 0)
		return G_UNALLOC;
	if (e->zero_grain && r->gte == VMDK_GTE_ZEROED)
		return G_ZERO;
	return G_DATA;
}

/* Point the entry (and its redundant copy) at @value, durably.  With
 * s->lock. */
static int set_gte(struct vmdk_extent *e, struct gte_ref *r, uint32_t value)
{
	uint8_t buf[4];
	struct vd_qiov q;
	int ret;

	st_le32(buf, value);
	vd_debug_event(e->file, VD_EV_L2_UPDATE);
	vd_qiov_init_buf(&q, buf, 4);
	ret = vd_co_pwritev(e->file, (int64_t)r->gt_sector * 512 + 4 * r->l2, 4, &q, 0);
	if (ret == 0 && e->rgd && e->rgd[r->l1]) {
		vd_qiov_init_buf(&q, buf, 4);
		ret = vd_co_pwritev(e->file, (int64_t)e->rgd[r->l1] * 512 + 4 * r->l2, 4, &q, 0);
	}
	if (ret == 0)
		ret = vd_co_flush(e->file);
	if (ret == 0 && r->slot)
		*r->slot = value;
	return ret;
}

/* QEMU reads through the parent only while the parent's CID is the one
 * this image was made against (and the parent is a vmdk). */
static bool parent_valid(struct vd_node *n)
{
	struct vmdk_state *s = n->opaque;

	if (!s->parent_checked) {
		s->parent_ok = n->backing->drv == &vd_driver_vmdk &&
			       ((struct vmdk_state *)n->backing->opaque)->cid == s->parent_cid;
		s->parent_checked = true;
	}
	return s->parent_ok;
}

/* Read @bytes at guest @offset from the parent into @buf, zeroes past its
 * end. */
static int read_parent(struct vd_node *n, uint64_t offset, uint8_t *buf, uint64_t bytes)
{
	int64_t psize = vd_node_size(n->backing);
	uint64_t have = 0;
	struct vd_qiov q;

	if (!parent_valid(n))
		return -EINVAL;
	if (psize > 0 && offset < (uint64_t)psize)
		have = (uint64_t)psize - offset < bytes ? (uint64_t)psize - offset : bytes;
	memset(buf + have, 0, bytes - have);
	if (!have)
		return 0;
	vd_qiov_init_buf(&q, buf, have);
	return vd_co_preadv(n->backing, (int64_t)offset, (int64_t)have, &q, 0);
}

static int read_compressed(struct vmdk_extent *e, uint64_t sector, uint64_t in_grain,
			   struct vd_qiov *qiov, size_t qoff, uint64_t bytes)
{
	size_t grain = (size_t)e->grain_sectors * 512, cap = 2 * grain;
	uint8_t *in = malloc(cap), *out = malloc(grain);
	const uint8_t *data = in;
	uLongf out_len = grain;
	uint32_t len = (uint32_t)grain;
	struct vd_qiov q;
	int ret;

	if (!in || !out) {
		ret = -ENOMEM;
		goto out;
	}
	vd_qiov_init_buf(&q, in, cap);
	ret = vd_co_preadv(e->file, (int64_t)(sector * 512), (int64_t)cap, &q, 0);
	if (ret < 0)
		goto out;
	if (e->has_marker) {
		len = ld_le32(in + 8);
		data = in + 12;
		if (len > cap - 12) {
			ret = -EINVAL;
			goto out;
		}
	}
	ret = -EINVAL;
	if (len == 0 || uncompress(out, &out_len, data, len) != Z_OK || in_grain + bytes > out_len)
		goto out;
	vd_qiov_from_buf(qiov, qoff, out + in_grain, (size_t)bytes);
	ret = 0;
out:
	free(in);
	free(out);
	return ret;
}

int vmdk_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		   int flags)
{
	struct vmdk_state *s = n->opaque;
	struct vd_qiov local;
	size_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		struct vmdk_extent *e = find_extent(s, (uint64_t)offset / 512);
		uint64_t eoff, chunk, in_grain = 0;
		struct gte_ref r;
		int kind;

		if (!e) {
			ret = -EIO;
			break;
		}
		eoff = (uint64_t)offset - e->start * 512;
		chunk = e->sectors * 512 - eoff;
		if (e->flat) {
			kind = G_DATA;
		} else {
			uint64_t gbytes = (uint64_t)e->grain_sectors * 512, next_gte;

			in_grain = eoff % gbytes;
			chunk = gbytes - in_grain;
			vd_co_mutex_lock(&s->lock);
			kind = get_gte(e, eoff, &r);
			/* One host request for a run of grains that follow each
			 * other in the file (as sequential writes leave them),
			 * or of holes. */
			next_gte = r.gte;
			while (kind >= 0 && !e->compressed && chunk < (uint64_t)bytes &&
			       eoff + chunk < e->sectors * 512) {
				struct gte_ref r2;
				int k2 = get_gte(e, eoff + chunk, &r2);

				next_gte += e->grain_sectors;
				if (k2 != kind || (kind == G_DATA && r2.gte != next_gte))
					break;
				chunk += gbytes;
			}
			vd_co_mutex_unlock(&s->lock);
			if (kind < 0) {
				ret = kind;
				break;
			}
		}
		if (chunk > (uint64_t)bytes)
			chunk = (uint64_t)bytes;
		if (kind == G_UNALLOC && n->backing) {
			uint8_t *buf = malloc(chunk);

			ret = buf ? read_parent(n, (uint64_t)offset, buf, chunk) : -ENOMEM;
			if (ret == 0)
				vd_qiov_from_buf(qiov, done, buf, chunk);
			free(buf);
		} else if (kind != G_DATA) {
			vd_qiov_memset(qiov, done, 0, chunk);
		} else if (e->compressed) {
			ret = read_compressed(e, r.gte, in_grain, qiov, done, chunk);
		} else {
			uint64_t host =
				e->flat ? e->flat_offset + eoff : (uint64_t)r.gte * 512 + in_grain;

			vd_qiov_reset(&local);
			ret = vd_qiov_concat_slice(&local, qiov, done, chunk);
			if (ret == 0)
				ret = vd_co_preadv(e->file, (int64_t)host, (int64_t)chunk, &local,
						   0);
		}
		offset += (int64_t)chunk;
		bytes -= (int64_t)chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

/* A new grain for @chunk bytes of @qiov (from @done) at extent offset
 * @eoff, the rest of the grain from the parent or zeroes.  With s->lock. */
static int alloc_grain(struct vd_node *n, struct vmdk_extent *e, struct gte_ref *r, bool zeroed,
		       uint64_t guest_off, uint64_t eoff, struct vd_qiov *qiov, size_t done,
		       uint64_t chunk)
{
	uint64_t gbytes = (uint64_t)e->grain_sectors * 512, in_grain = eoff % gbytes;
	uint64_t sector = e->next_grain;
	uint8_t *buf;
	struct vd_qiov q;
	int ret = 0;

	if (!r->gt_sector)
		return -ENOTSUP; /* QEMU allocates no grain tables either */
	if (sector + e->grain_sectors > VMDK_EXTENT_MAX_SECTORS ||
	    (sector + e->grain_sectors) * 512 > (uint64_t)VD_MAX_LENGTH)
		return -ENOSPC;
	buf = malloc(gbytes);
	if (!buf)
		return -ENOMEM;
	if (n->backing && !zeroed)
		ret = read_parent(n, guest_off - in_grain, buf, gbytes);
	else
		memset(buf, 0, gbytes);
	if (ret == 0) {
		vd_qiov_to_buf(qiov, done, buf + in_grain, chunk);
		vd_debug_event(e->file, VD_EV_CLUSTER_ALLOC);
		vd_qiov_init_buf(&q, buf, gbytes);
		ret = vd_co_pwritev(e->file, (int64_t)(sector * 512), (int64_t)gbytes, &q, 0);
	}
	free(buf);
	if (ret < 0)
		return ret;
	e->next_grain = sector + e->grain_sectors;
	return set_gte(e, r, (uint32_t)sector);
}

/* A whole grain, deflated behind its marker, appended.  With s->lock. */
static int write_compressed(struct vmdk_extent *e, struct gte_ref *r, uint64_t guest_off,
			    struct vd_qiov *qiov, size_t done, uint64_t chunk)
{
	uLongf clen = compressBound((uLong)chunk);
	uint8_t *raw = malloc(chunk), *buf = malloc(12 + clen + 512);
	uint64_t sector = e->next_grain, len;
	struct vd_qiov q;
	int ret = -ENOMEM;

	if (!raw || !buf)
		goto out;
	vd_qiov_to_buf(qiov, done, raw, chunk);
	ret = -EINVAL;
	if (compress(buf + 12, &clen, raw, (uLong)chunk) != Z_OK || clen == 0)
		goto out;
	st_le64(buf, guest_off / 512);
	st_le32(buf + 8, (uint32_t)clen);
	len = (12 + clen + 511) / 512 * 512;
	memset(buf + 12 + clen, 0, len - 12 - clen);
	ret = -ENOSPC;
	if (sector + len / 512 > VMDK_EXTENT_MAX_SECTORS)
		goto out;
	vd_qiov_init_buf(&q, buf, len);
	ret = vd_co_pwritev(e->file, (int64_t)(sector * 512), (int64_t)len, &q, 0);
	if (ret == 0) {
		e->next_grain = sector + len / 512;
		ret = set_gte(e, r, (uint32_t)sector);
	}
out:
	free(raw);
	free(buf);
	return ret;
}

int vmdk_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		    int flags)
{
	struct vmdk_state *s = n->opaque;
	struct vd_qiov local;
	size_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		struct vmdk_extent *e = find_extent(s, (uint64_t)offset / 512);
		uint64_t eoff, chunk, host = 0, gbytes, in_grain;
		struct gte_ref r;
		int kind;

		if (!e) {
			ret = -EIO;
			break;
		}
		eoff = (uint64_t)offset - e->start * 512;
		chunk = e->sectors * 512 - eoff;
		if (e->flat) {
			host = e->flat_offset + eoff;
		} else {
			gbytes = (uint64_t)e->grain_sectors * 512;
			in_grain = eoff % gbytes;
			chunk = gbytes - in_grain;
			if (chunk > (uint64_t)bytes)
				chunk = (uint64_t)bytes;
			vd_co_mutex_lock(&s->lock);
			kind = get_gte(e, eoff, &r);
			if (kind < 0) {
				ret = kind;
			} else if (e->compressed) {
				/* Whole grains only (the last may end the extent),
				 * each written once. */
				if (kind == G_DATA)
					ret = -EIO;
				else if (in_grain ||
					 (chunk < gbytes && eoff + chunk < e->sectors * 512))
					ret = -EINVAL;
				else if (!e->has_marker || !r.gt_sector)
					ret = -ENOTSUP;
				else
					ret = write_compressed(e, &r, (uint64_t)offset, qiov, done,
							       chunk);
				kind = -1;
			} else if (kind != G_DATA) {
				ret = alloc_grain(n, e, &r, kind == G_ZERO, (uint64_t)offset, eoff,
						  qiov, done, chunk);
				kind = -1;
			} else if ((uint64_t)r.gte * 512 < e->meta_end) {
				ret = -EIO; /* a grain over the header and tables */
			} else {
				host = (uint64_t)r.gte * 512 + in_grain;
			}
			if (ret == 0 && !s->cid_updated)
				ret = vmdk_update_cid(n);
			vd_co_mutex_unlock(&s->lock);
			if (ret < 0)
				break;
			if (kind < 0)
				goto next; /* written with the allocation */
		}
		if (chunk > (uint64_t)bytes)
			chunk = (uint64_t)bytes;
		if (e->flat && !s->cid_updated) {
			vd_co_mutex_lock(&s->lock);
			ret = vmdk_update_cid(n);
			vd_co_mutex_unlock(&s->lock);
			if (ret < 0)
				break;
		}
		vd_qiov_reset(&local);
		ret = vd_qiov_concat_slice(&local, qiov, done, chunk);
		if (ret == 0)
			ret = vd_co_pwritev(e->file, (int64_t)host, (int64_t)chunk, &local, 0);
	next:
		offset += (int64_t)chunk;
		bytes -= (int64_t)chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

/* Zero grains where the extent has the flag and the range covers whole
 * grains; anything else is -ENOTSUP (the core then writes zeroes), checked
 * for the whole range before anything changes, as QEMU's dry run. */
int vmdk_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct vmdk_state *s = n->opaque;
	int ret = 0;

	vd_co_mutex_lock(&s->lock);
	for (int pass = 0; pass < 2 && ret == 0; pass++) {
		int64_t off = offset, left = bytes;

		while (left > 0 && ret == 0) {
			struct vmdk_extent *e = find_extent(s, (uint64_t)off / 512);
			uint64_t eoff, gbytes;
			struct gte_ref r;
			int kind;

			if (!e || e->flat || !e->zero_grain) {
				ret = -ENOTSUP;
				break;
			}
			eoff = (uint64_t)off - e->start * 512;
			gbytes = (uint64_t)e->grain_sectors * 512;
			if (eoff % gbytes || (uint64_t)left < gbytes) {
				ret = -ENOTSUP;
				break;
			}
			kind = get_gte(e, eoff, &r);
			if (kind < 0)
				ret = kind;
			else if (!r.gt_sector)
				ret = -ENOTSUP;
			else if (pass == 1 && kind != G_ZERO)
				ret = set_gte(e, &r, VMDK_GTE_ZEROED);
			off += (int64_t)gbytes;
			left -= (int64_t)gbytes;
		}
	}
	if (ret == 0)
		ret = vmdk_update_cid(n);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

int vmdk_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			 int64_t *map, struct vd_node **file)
{
	struct vmdk_state *s = n->opaque;
	struct vmdk_extent *e = find_extent(s, (uint64_t)offset / 512);
	uint64_t eoff, gbytes, len, ext_end;
	struct gte_ref r;
	int kind, ret;

	if (!e)
		return -EIO;
	eoff = (uint64_t)offset - e->start * 512;
	ext_end = e->sectors * 512;
	if (e->flat) {
		int64_t fpnum = 0, fmap = 0;
		struct vd_node *ffile = NULL;

		*pnum = (int64_t)(ext_end - eoff) < bytes ? (int64_t)(ext_end - eoff) : bytes;
		*map = (int64_t)(e->flat_offset + eoff);
		*file = e->file;
		ret = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
		/* QEMU's BDRV_BLOCK_RECURSE: holes of the flat file read as
		 * zeroes, and map shows them so. */
		kind = vd_co_block_status(e->file, *map, *pnum, &fpnum, &fmap, &ffile);
		if (kind >= 0 && fpnum > 0) {
			*pnum = fpnum;
			ret |= kind & VD_BLOCK_ZERO;
		} else if (kind >= 0 && (kind & VD_BLOCK_EOF)) {
			ret |= VD_BLOCK_ZERO; /* past the end of the file */
		}
		return ret;
	}
	gbytes = (uint64_t)e->grain_sectors * 512;
	vd_co_mutex_lock(&s->lock);
	kind = get_gte(e, eoff, &r);
	len = gbytes - eoff % gbytes;
	/* Gather the following grains of the same kind (and, for data, the
	 * same run on the host). */
	while (kind >= 0 && eoff + len < ext_end && len < (uint64_t)bytes) {
		struct gte_ref r2;
		int k2 = get_gte(e, eoff + len, &r2);

		if (k2 != kind ||
		    (kind == G_DATA &&
		     (e->compressed ||
		      (uint64_t)r2.gte * 512 != (uint64_t)r.gte * 512 + eoff % gbytes + len)))
			break;
		len += gbytes;
	}
	vd_co_mutex_unlock(&s->lock);
	if (kind < 0)
		return kind;
	if (len > ext_end - eoff)
		len = ext_end - eoff;
	*pnum = (int64_t)len < bytes ? (int64_t)len : bytes;
	switch (kind) {
	case G_UNALLOC:
		return 0;
	case G_ZERO:
		return VD_BLOCK_ZERO;
	default:
		ret = VD_BLOCK_DATA;
		*file = e->file;
		if (!e->compressed) {
			ret |= VD_BLOCK_OFFSET_VALID;
			*map = (int64_t)((uint64_t)r.gte * 512 + eoff % gbytes);
		}
		return ret;
	}
}

/* QEMU's check: every allocated grain must start inside its file; at the
 * first one that does not, the check fails (-EINVAL, as qemu-img's "Check
 * failed: Invalid argument"), with the grain's sector in the message. */
int vmdk_co_check(struct vd_node *n, struct vd_check_result *res, int fix)
{
	struct vmdk_state *s = n->opaque;
	int ret = 0;

	if (fix)
		return -ENOTSUP;
	vd_co_mutex_lock(&s->lock);
	for (int i = 0; i < s->num_extents && ret == 0; i++) {
		struct vmdk_extent *e = &s->extents[i];
		int64_t fsize = vd_node_size(e->file);
		uint64_t gbytes = (uint64_t)e->grain_sectors * 512;

		if (e->flat)
			continue;
		for (uint64_t off = 0; off < e->sectors * 512 && ret == 0; off += gbytes) {
			struct gte_ref r;
			int kind = get_gte(e, off, &r);

			if (kind < 0) {
				vd_message(
					VD_MSG_ERROR,
					"ERROR: could not get cluster_offset for sector %" PRIu64,
					e->start + off / 512);
				res->corruptions++;
				ret = 1;
			} else if (kind == G_DATA && (uint64_t)r.gte * 512 >= (uint64_t)fsize) {
				vd_message(VD_MSG_ERROR,
					   "ERROR: cluster offset for sector %" PRIu64
					   " points after EOF",
					   e->start + off / 512);
				res->corruptions++;
				ret = 1;
			}
		}
	}
	vd_co_mutex_unlock(&s->lock);
	return ret ? -EINVAL : 0;
}
