/* SPDX-License-Identifier: MIT */
/*
 * VHDX: open (headers, log replay, region table, metadata, BAT), I/O and
 * the driver table.  See vhdx.h for the parts and docs/formats.md ("vhdx").
 *
 * BAT ([MS-VHDX] 2.5): one 64-bit entry per payload block, and after every
 * chunk_ratio of them one for a sector bitmap block (used by differencing
 * disks only; we never read those).  Payload states NOT_PRESENT,
 * UNDEFINED, ZERO and UNMAPPED read as zeroes; FULLY_PRESENT blocks are in
 * the file, 1 MiB aligned.  At open every present block must lie inside the
 * file (a partial last block as QEMU allows), clear of the headers, log,
 * BAT and metadata, and of every other block; PARTIALLY_PRESENT (a
 * differencing state) and the undefined state 4 are refused.  An open for
 * `check -r` reports and counts these instead (as QEMU's BDRV_O_CHECK).
 *
 * Allocation, as QEMU: the file grows by one block (zeroes) at the next
 * 1 MiB boundary past its end, the guest data goes into it, then the BAT
 * entry is written through the log (log.c), which flushes the data first.
 * So the BAT never points at a block whose data is not on disk, and a crash
 * before the entry is written leaves only an unreferenced tail.  The lock is
 * held for the whole allocating write: a reader of that block waits for it
 * rather than seeing a half-written block.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/vhdx/vhdx.h"

static void vhdx_close(struct vd_node *n);

static uint64_t bat_index(const struct vhdx_state *s, uint64_t block)
{
	return block + (block >> s->chunk_ratio_bits);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * A bad BAT entry refuses the open, except for qemu-img check's open
 * (VD_OPEN_CHECK): then, as QEMU, it is reported and counted as a
 * corruption, and the check goes on.
 */
static int VD_PRINTF(4, 5)
	bat_problem(struct vhdx_state *s, bool check, struct vd_error *err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!check)
		return vd_error_set(err, -EINVAL, "%s", msg);
	vd_message(VD_MSG_ERROR, "%s", msg);
	s->bat_corruptions++;
	return 0;
}

/* Read the BAT and check every payload entry (see the top of the file). */
static int read_bat(struct vd_node *n, int64_t file_size, bool check, struct vd_error *err)
{
	struct vhdx_state *s = n->opaque;
	uint64_t bytes, *starts = NULL, n_present = 0;
	struct vd_qiov q;
	int ret;

	s->data_blocks = (s->virtual_size + s->block_size - 1) >> s->block_bits;
	s->bat_entries =
		s->data_blocks ? s->data_blocks + ((s->data_blocks - 1) >> s->chunk_ratio_bits) : 0;
	bytes = s->bat_entries * 8;
	if (bytes > s->bat_length)
		return vd_error_set(err, -EINVAL,
				    "Invalid BAT: %" PRIu64
				    " entries do not fit its region of %" PRIu32 " bytes",
				    s->bat_entries, s->bat_length);
	if ((uint64_t)file_size - s->bat_offset < bytes)
		return vd_error_set(err, -EINVAL,
				    "Invalid BAT: %" PRIu64 " bytes at %" PRIu64
				    " are outside the file",
				    bytes, s->bat_offset);
	s->bat = malloc(bytes ? bytes : 8);
	if (!s->bat)
		return vd_error_set(err, -ENOMEM, "Out of memory for the BAT");
	if (bytes) {
		vd_qiov_init_buf(&q, s->bat, bytes);
		ret = vd_co_preadv(n->file, (int64_t)s->bat_offset, (int64_t)bytes, &q, 0);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Could not read the BAT");
	}
	for (uint64_t i = 0; i < s->bat_entries; i++)
		s->bat[i] = ld_le64((const uint8_t *)&s->bat[i]);

	starts = malloc((s->data_blocks ? s->data_blocks : 1) * sizeof(*starts));
	if (!starts)
		return vd_error_set(err, -ENOMEM, "Out of memory for the BAT");
	ret = 0;
	for (uint64_t b = 0; b < s->data_blocks && ret == 0; b++) {
		uint64_t e = s->bat[bat_index(s, b)], off = e & VHDX_BAT_OFFSET_MASK;
		uint64_t len = s->virtual_size - (b << s->block_bits);

		if (len > s->block_size)
			len = s->block_size;
		switch (e & VHDX_BAT_STATE_MASK) {
		case VHDX_PAYLOAD_NOT_PRESENT:
		case VHDX_PAYLOAD_UNDEFINED:
		case VHDX_PAYLOAD_ZERO:
		case VHDX_PAYLOAD_UNMAPPED:
		case VHDX_PAYLOAD_UNMAPPED_V095:
			break;
		case VHDX_PAYLOAD_FULLY_PRESENT:
			/* QEMU allows a last block that ends past the file
			 * (it once created such); the guest part must be in. */
			if (off >= (uint64_t)file_size || (uint64_t)file_size - off < len)
				ret = bat_problem(s, check, err,
						  "VHDX BAT entry %" PRIu64 " (block at %" PRIu64
						  ") points after the end of the file (%" PRId64
						  " bytes). Image has probably been truncated.",
						  bat_index(s, b), off, file_size);
			else
				starts[n_present++] = off;
			break;
		default:
			ret = bat_problem(s, check, err,
					  "VHDX BAT entry %" PRIu64 " has state %u, which we "
					  "cannot read",
					  bat_index(s, b), (unsigned)(e & VHDX_BAT_STATE_MASK));
		}
	}
	/* Two entries on one block would make a write to one change the
	 * other; a block over metadata would have guest writes rewrite it.
	 * Sorted, each check is a neighbour or a binary search (a hostile BAT
	 * has millions of entries, a region table 2047 regions). */
	if (ret == 0 && n_present > 0) {
		qsort(starts, n_present, sizeof(*starts), cmp_u64);
		for (uint64_t i = 1; i < n_present && ret == 0; i++)
			if (starts[i] - starts[i - 1] < s->block_size)
				ret = bat_problem(s, check, err,
						  "VHDX payload blocks at %" PRIu64 " and %" PRIu64
						  " overlap",
						  starts[i - 1], starts[i]);
		for (int r = 0; r < s->n_regions && ret == 0; r++) {
			uint64_t lo = 0, hi = n_present; /* first block ending past the start */

			while (lo < hi) {
				uint64_t mid = lo + (hi - lo) / 2;

				if (starts[mid] + s->block_size <= s->regions[r].start)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo < n_present && starts[lo] < s->regions[r].end)
				ret = bat_problem(s, check, err,
						  "VHDX payload block at %" PRIu64
						  " overlaps the image metadata",
						  starts[lo]);
		}
	}
	free(starts);
	return ret;
}

static int vhdx_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct vhdx_state *s = n->opaque;
	bool writable = (flags & VD_OPEN_RDWR) != 0;
	int64_t file_size;
	int ret;

	s->node = n;
	vd_co_mutex_init(&s->lock);
	s->first_visible_write = true;
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Could not get the file size");
	if (vhdx_guid_generate(s->session_guid) < 0)
		return vd_error_set(err, -EIO, "Could not generate a GUID");

	ret = vhdx_read_headers(n, file_size, err);
	if (ret == 0)
		ret = vhdx_log_replay(n, writable, &file_size, err);
	if (ret == 0 && s->log_replayed) {
		/* The replay may have written past the old end. */
		file_size = vd_node_size(n->file);
		if (file_size < 0)
			ret = vd_error_setg_errno(err, (int)file_size,
						  "Could not get the file size");
	}
	if (ret == 0)
		ret = vhdx_read_region_table(n, file_size, err);
	if (ret == 0)
		ret = vhdx_read_metadata(n, err);
	if (ret == 0)
		ret = read_bat(n, file_size, (flags & VD_OPEN_CHECK) != 0, err);
	if (ret < 0) {
		vhdx_close(n);
		return ret;
	}
	n->size = (int64_t)s->virtual_size;
	return 0;
}

static void vhdx_close(struct vd_node *n)
{
	struct vhdx_state *s = n->opaque;

	free(s->bat);
	s->bat = NULL;
}

/* Where guest @offset is: its BAT index, the bytes to the end of its block,
 * and the host offset (-1 when the block reads as zeroes). */
static int64_t translate(const struct vhdx_state *s, uint64_t offset, uint64_t *index,
			 int64_t *avail)
{
	uint64_t block = offset >> s->block_bits, in_block = offset & (s->block_size - 1);
	uint64_t e;

	*index = bat_index(s, block);
	*avail = (int64_t)(s->block_size - in_block);
	e = s->bat[*index];
	if ((e & VHDX_BAT_STATE_MASK) != VHDX_PAYLOAD_FULLY_PRESENT)
		return -1;
	return (int64_t)((e & VHDX_BAT_OFFSET_MASK) + in_block);
}

static int vhdx_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct vhdx_state *s = n->opaque;
	struct vd_qiov local;
	int64_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	while (bytes > 0 && ret == 0) {
		uint64_t index;
		int64_t chunk, host;

		if ((uint64_t)offset >= s->virtual_size) {
			/* Past the end (the core rounds up): zeroes. */
			vd_qiov_memset(qiov, (size_t)done, 0, (size_t)bytes);
			break;
		}
		vd_co_mutex_lock(&s->lock);
		host = translate(s, (uint64_t)offset, &index, &chunk);
		vd_co_mutex_unlock(&s->lock);
		if (chunk > bytes)
			chunk = bytes;
		if (host < 0) {
			vd_qiov_memset(qiov, (size_t)done, 0, (size_t)chunk);
		} else {
			vd_qiov_reset(&local);
			ret = vd_qiov_concat_slice(&local, qiov, (size_t)done, (size_t)chunk);
			if (ret == 0)
				ret = vd_co_preadv(n->file, host, chunk, &local, 0);
		}
		offset += chunk;
		bytes -= chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

/*
 * Give the block of BAT entry @index a place at the end of the file and
 * write @chunk bytes of @qiov at @done into it at @in_block; then the BAT
 * entry through the log.  With s->lock held throughout.
 */
static int alloc_and_write(struct vd_node *n, uint64_t index, uint64_t in_block, int64_t chunk,
			   struct vd_qiov *local)
{
	struct vhdx_state *s = n->opaque;
	int64_t file_size = vd_node_size(n->file);
	uint64_t block_off, old = s->bat[index];
	uint8_t entry[8];
	int ret;

	if (file_size < 0)
		return (int)file_size;
	block_off = ((uint64_t)file_size + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
	if (block_off > (uint64_t)VD_MAX_LENGTH - s->block_size || block_off > VHDX_BAT_OFFSET_MASK)
		return -EFBIG;
	/* Fresh space reads as zeroes: the rest of the block is zero, as a
	 * NOT_PRESENT, ZERO or UNMAPPED block read before. */
	ret = vd_co_truncate(n->file, (int64_t)(block_off + s->block_size), false, VD_PREALLOC_OFF,
			     NULL);
	if (ret < 0)
		return ret;
	vd_debug_event(n->file, VD_EV_WRITE_AIO);
	ret = vd_co_pwritev(n->file, (int64_t)(block_off + in_block), chunk, local, 0);
	if (ret < 0)
		return ret;
	s->bat[index] = block_off | VHDX_PAYLOAD_FULLY_PRESENT;
	st_le64(entry, s->bat[index]);
	vd_debug_event(n->file, VD_EV_L2_UPDATE);
	ret = vhdx_log_write_and_flush(n, entry, sizeof(entry), s->bat_offset + 8 * index);
	if (ret < 0)
		s->bat[index] = old;
	return ret;
}

static int vhdx_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   int flags)
{
	struct vhdx_state *s = n->opaque;
	struct vd_qiov local;
	int64_t done = 0;
	int ret = 0;

	vd_qiov_init(&local, qiov->niov);
	vd_co_mutex_lock(&s->lock);
	if (s->first_visible_write) {
		/* 2.2.2: a new DataWriteGuid before the first guest-visible write. */
		ret = vhdx_update_headers(n, true, NULL);
		if (ret == 0)
			s->first_visible_write = false;
	}
	vd_co_mutex_unlock(&s->lock);
	while (bytes > 0 && ret == 0) {
		uint64_t index;
		int64_t chunk, host;

		if ((uint64_t)offset >= s->virtual_size)
			break; /* the sector-rounded tail of an odd size */
		vd_co_mutex_lock(&s->lock);
		host = translate(s, (uint64_t)offset, &index, &chunk);
		if (chunk > bytes)
			chunk = bytes;
		vd_qiov_reset(&local);
		ret = vd_qiov_concat_slice(&local, qiov, (size_t)done, (size_t)chunk);
		if (ret == 0 && host < 0)
			ret = alloc_and_write(n, index, (uint64_t)offset & (s->block_size - 1),
					      chunk, &local);
		vd_co_mutex_unlock(&s->lock);
		if (ret == 0 && host >= 0)
			ret = vd_co_pwritev(n->file, host, chunk, &local, 0);
		offset += chunk;
		bytes -= chunk;
		done += chunk;
	}
	vd_qiov_destroy(&local);
	return ret;
}

static int vhdx_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
				int64_t *map, struct vd_node **file)
{
	struct vhdx_state *s = n->opaque;
	uint64_t index;
	int64_t host, chunk;

	vd_co_mutex_lock(&s->lock);
	host = translate(s, (uint64_t)offset, &index, &chunk);
	*pnum = chunk;
	if (host < 0) {
		/* Blocks that read as zeroes: gather them. */
		while (*pnum < bytes && (uint64_t)(offset + *pnum) < s->virtual_size &&
		       translate(s, (uint64_t)(offset + *pnum), &index, &chunk) < 0)
			*pnum += chunk;
	}
	vd_co_mutex_unlock(&s->lock);
	if (*pnum > bytes)
		*pnum = bytes;
	if (host < 0)
		return VD_BLOCK_ZERO;
	*map = host;
	*file = n->file;
	return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

static int vhdx_co_flush(struct vd_node *n)
{
	/* Metadata is written synchronously; nothing is cached here. */
	vd_debug_event(n->file, VD_EV_FLUSH_TO_DISK);
	return 0;
}

static int vhdx_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct vhdx_state *s = n->opaque;

	info->cluster_size = s->block_size;
	return 0;
}

/* qemu-img check: the BAT problems the check's open found (read_bat), and
 * a log replayed on this open as a fixed corruption, as QEMU counts them.
 * Nothing is repaired beyond the replay (nor by QEMU). */
static int vhdx_co_check(struct vd_node *n, struct vd_check_result *res, int fix)
{
	struct vhdx_state *s = n->opaque;

	res->corruptions += s->bat_corruptions;
	if (s->log_replayed)
		res->corruptions_fixed++;
	return 0;
}

static int vhdx_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return len >= 8 && memcmp(buf, "vhdxfile", 8) == 0 ? 100 : 0;
}

const struct vd_block_driver vd_driver_vhdx = {
	.name = "vhdx",
	.instance_size = sizeof(struct vhdx_state),
	.is_format = true,
	.child_name = "file",
	.child_has_metadata = true,
	.create_opts = vhdx_create_opts,
	.probe = vhdx_probe,
	.open = vhdx_open,
	.close = vhdx_close,
	.create = vhdx_create,
	.co_preadv = vhdx_co_preadv,
	.co_pwritev = vhdx_co_pwritev,
	.co_flush = vhdx_co_flush,
	.co_block_status = vhdx_co_block_status,
	.get_info = vhdx_get_info,
	.co_check = vhdx_co_check,
};
