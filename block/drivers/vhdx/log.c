/* SPDX-License-Identifier: MIT */
/*
 * VHDX: the metadata log ([MS-VHDX] 2.3, QEMU 7.2's block/vhdx-log.c).
 *
 * The log is a circular buffer of 4 KiB sectors.  An entry is a 64-byte
 * header and 32-byte descriptors filling whole "descriptor sectors", then one
 * data sector per data descriptor; the entry's CRC-32C covers all of it.  A
 * data descriptor writes one 4 KiB sector of the file (its first 8 and last
 * 4 bytes are kept in the descriptor, the 4084 between in the data sector);
 * a zero descriptor zeroes a run of them.  Entries are valid only with the
 * current header's log GUID; a "sequence" is a run of valid entries whose
 * sequence numbers go up by one.  A non-zero log GUID in the header means
 * the file was not closed cleanly: the sequence with the highest number is
 * replayed before anything else is read (QEMU refuses a read-only open
 * then, and so do we).
 *
 * The whole log is read into memory for the search (we refuse logs larger
 * than VHDX_LOG_MAX: 256 MiB, far above the 1 MiB everybody creates), and
 * each entry is checked completely (descriptors, data sectors, target
 * ranges) before any of the sequence is written: a log may not write over
 * the file identifier, the headers or the log itself, nor past the end of
 * the file the entry recorded.
 *
 * Writing: like QEMU, each BAT update is one entry of one data descriptor,
 * written at the start of an emptied log under a fresh log GUID, replayed at
 * once, and the log emptied again (headers with a zero GUID).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers/vhdx/vhdx.h"

#define VHDX_LOG_MAX (256 * VHDX_MiB)

/* Entry header fields (2.3.1.1). */
enum {
	LE_SIGNATURE = 0, /* "loge" */
	LE_CHECKSUM = 4,
	LE_ENTRY_LENGTH = 8,
	LE_TAIL = 12,
	LE_SEQUENCE = 16,
	LE_DESC_COUNT = 24,
	LE_LOG_GUID = 32,
	LE_FLUSHED_FILE_OFFSET = 48,
	LE_LAST_FILE_OFFSET = 56,
};

/* Descriptor sectors of an entry: the header takes two descriptors' room. */
static uint64_t desc_sectors(uint64_t count)
{
	return (count + 2 + 127) / 128;
}

/* Copy @len bytes of the in-memory log from @pos, wrapping. */
static void log_copy(const uint8_t *log, uint32_t log_len, uint64_t pos, uint8_t *out, uint32_t len)
{
	uint32_t first;

	pos %= log_len;
	first = log_len - (uint32_t)pos < len ? log_len - (uint32_t)pos : len;
	memcpy(out, log + pos, first);
	memcpy(out + first, log, len - first);
}

/*
 * Is there a valid entry at @pos (with sequence number @expect unless 0)?
 * Returns 1 and its copy in *entry (malloc'd) when it is; 0 when not, with
 * *skip the bytes to step over: a sector, or the whole entry when only its
 * checksum is wrong (as QEMU's reader, which has read it by then).
 */
static int entry_at(struct vhdx_state *s, const uint8_t *log, uint64_t pos, uint64_t expect,
		    uint8_t **entry, uint32_t *skip, uint64_t *budget)
{
	uint8_t h[VHDX_LOG_HEADER_SIZE], *e;
	uint32_t len;
	uint64_t count;

	*skip = VHDX_LOG_SECTOR;
	log_copy(log, s->log_length, pos, h, sizeof(h));
	len = ld_le32(h + LE_ENTRY_LENGTH);
	count = ld_le32(h + LE_DESC_COUNT);
	if (memcmp(h + LE_SIGNATURE, "loge", 4) || len == 0 || len % VHDX_LOG_SECTOR ||
	    len > s->log_length || ld_le64(h + LE_SEQUENCE) == 0 ||
	    memcmp(h + LE_LOG_GUID, s->headers[s->cur] + VHDX_HDR_LOG_GUID, 16) ||
	    desc_sectors(count) * VHDX_LOG_SECTOR > len)
		return 0;
	if (expect && ld_le64(h + LE_SEQUENCE) != expect)
		return 0;
	/* Entries of a sane log do not overlap, so one lap checksums each byte
	 * about once; a crafted one with overlapping entries could make the
	 * scan quadratic.  Give up past a few laps' worth. */
	if (*budget < len)
		return -ELOOP;
	*budget -= len;
	e = malloc(len);
	if (!e)
		return -ENOMEM;
	log_copy(log, s->log_length, pos, e, len);
	if (ld_le32(e + LE_CHECKSUM) != vhdx_checksum(e, len, LE_CHECKSUM)) {
		free(e);
		*skip = len;
		return 0;
	}
	*entry = e;
	return 1;
}

/* A replayable write may not touch the file identifier, the headers or the
 * log, nor reach past @limit. */
static bool target_ok(struct vhdx_state *s, uint64_t offset, uint64_t length, uint64_t limit)
{
	return offset % VHDX_LOG_SECTOR == 0 && length % VHDX_LOG_SECTOR == 0 &&
	       offset >= VHDX_REGION_TABLE1_OFFSET && offset <= limit && limit - offset >= length &&
	       !(offset < s->log_offset + s->log_length && offset + length > s->log_offset);
}

/* Check everything in a checksummed entry before it is replayed. */
static int entry_check(struct vhdx_state *s, const uint8_t *e, int64_t file_size,
		       struct vd_error *err)
{
	uint32_t len = ld_le32(e + LE_ENTRY_LENGTH), count = ld_le32(e + LE_DESC_COUNT);
	uint64_t seq = ld_le64(e + LE_SEQUENCE), data_at = desc_sectors(count) * VHDX_LOG_SECTOR;
	uint64_t last = ld_le64(e + LE_LAST_FILE_OFFSET), limit;

	if (ld_le64(e + LE_FLUSHED_FILE_OFFSET) > (uint64_t)file_size)
		return vd_error_set(err, -EINVAL,
				    "VHDX log entry %" PRIu64 " was written to a larger file: the "
				    "image has been truncated",
				    seq);
	if (last > (uint64_t)VD_MAX_LENGTH - VHDX_MiB)
		return vd_error_set(err, -EINVAL, "VHDX log entry %" PRIu64 " has an invalid size",
				    seq);
	limit = last > (uint64_t)file_size ? last : (uint64_t)file_size;
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *d = e + VHDX_LOG_HEADER_SIZE + VHDX_LOG_DESC_SIZE * i;
		uint64_t off = ld_le64(d + 16), length = VHDX_LOG_SECTOR;

		if (ld_le64(d + 24) != seq)
			goto bad;
		if (memcmp(d, "desc", 4) == 0) {
			const uint8_t *ds = e + data_at;

			if (data_at + VHDX_LOG_SECTOR > len || memcmp(ds, "data", 4) ||
			    ((uint64_t)ld_le32(ds + 4) << 32 | ld_le32(ds + 4092)) != seq)
				goto bad;
			data_at += VHDX_LOG_SECTOR;
		} else if (memcmp(d, "zero", 4) == 0) {
			length = ld_le64(d + 8);
		} else {
			goto bad;
		}
		if (!target_ok(s, off, length, limit))
			return vd_error_set(err, -EINVAL,
					    "VHDX log entry %" PRIu64 " writes %" PRIu64
					    " bytes at %" PRIu64 ", where it may not",
					    seq, length, off);
	}
	return 0;
bad:
	return vd_error_set(err, -EINVAL, "VHDX log entry %" PRIu64 " is corrupt", seq);
}

static int entry_apply(struct vd_node *n, const uint8_t *e)
{
	uint32_t count = ld_le32(e + LE_DESC_COUNT);
	uint64_t data_at = desc_sectors(count) * VHDX_LOG_SECTOR;
	uint8_t sector[VHDX_LOG_SECTOR];
	int ret = 0;

	for (uint32_t i = 0; i < count && ret == 0; i++) {
		const uint8_t *d = e + VHDX_LOG_HEADER_SIZE + VHDX_LOG_DESC_SIZE * i;
		uint64_t off = ld_le64(d + 16);

		if (memcmp(d, "desc", 4) == 0) {
			memcpy(sector, d + 8, 8); /* leading bytes */
			memcpy(sector + 8, e + data_at + 8, VHDX_LOG_DATA_PAYLOAD);
			memcpy(sector + 4092, d + 4, 4); /* trailing bytes */
			data_at += VHDX_LOG_SECTOR;
			ret = vhdx_write_sync(n, off, sector, sizeof(sector));
		} else if (ld_le64(d + 8)) {
			ret = vd_co_pwrite_zeroes(n->file, (int64_t)off, (int64_t)ld_le64(d + 8),
						  0);
			if (ret == 0)
				ret = vd_co_flush(n->file);
		}
	}
	return ret;
}

int vhdx_log_replay(struct vd_node *n, bool writable, int64_t *file_size, struct vd_error *err)
{
	struct vhdx_state *s = n->opaque;
	uint8_t *log = NULL, **entries = NULL;
	uint64_t best_start = 0, best_last = 0, last_file = 0;
	uint32_t best_count = 0, max_entries;
	uint64_t abs = 0, budget = 8ull * s->log_length;
	int ret;

	if (vhdx_guid_is_zero(s->headers[s->cur] + VHDX_HDR_LOG_GUID) || s->log_length == 0)
		return 0;
	if (s->log_length > VHDX_LOG_MAX)
		return vd_error_set(err, -ENOTSUP,
				    "VHDX log of %" PRIu32
				    " bytes is too large to replay (max %llu)",
				    s->log_length, (unsigned long long)VHDX_LOG_MAX);
	log = malloc(s->log_length);
	if (!log)
		return vd_error_set(err, -ENOMEM, "Out of memory for the VHDX log");
	ret = vhdx_read(n, s->log_offset, log, s->log_length);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read the VHDX log");
		goto out;
	}

	/* One lap over the log; a sequence found may run past its end. */
	max_entries = s->log_length / VHDX_LOG_SECTOR;
	while (abs < s->log_length) {
		uint8_t *e = NULL;
		uint32_t skip, count = 0;
		uint64_t start = abs, seq = 0;

		ret = entry_at(s, log, abs, 0, &e, &skip, &budget);
		if (ret < 0)
			goto search_error;
		if (ret == 0) {
			abs += skip;
			continue;
		}
		while (e && count < max_entries) {
			seq = ld_le64(e + LE_SEQUENCE);
			abs += ld_le32(e + LE_ENTRY_LENGTH);
			count++;
			free(e);
			e = NULL;
			ret = entry_at(s, log, abs, seq + 1, &e, &skip, &budget);
			if (ret < 0) {
				free(e);
				goto search_error;
			}
		}
		free(e);
		if (seq > best_last) {
			best_last = seq;
			best_start = start;
			best_count = count;
		}
	}
	ret = 0;
	if (best_count == 0)
		goto reset; /* a log GUID but no valid entry: nothing to replay */
	if (!writable) {
		ret = vd_error_set(err, -EPERM,
				   "VHDX image file '%s' opened read-only, but contains a log that "
				   "needs to be replayed (replay it with 'vdisk check -r all')",
				   n->file && n->file->filename ? n->file->filename : "");
		goto out;
	}

	/* Check the whole sequence, then write it. */
	entries = calloc(best_count, sizeof(*entries));
	if (!entries)
		goto nomem;
	uint64_t pos = 0;

	for (uint32_t i = 0; i < best_count; i++) {
		uint32_t skip;

		budget = s->log_length; /* the replay reads each entry again */
		ret = entry_at(s, log, best_start + pos, 0, &entries[i], &skip, &budget);
		if (ret < 0)
			goto nomem;
		ret = entry_check(s, entries[i], *file_size, err);
		if (ret < 0)
			goto out;
		pos += ld_le32(entries[i] + LE_ENTRY_LENGTH);
		if (ld_le64(entries[i] + LE_LAST_FILE_OFFSET) > last_file)
			last_file = ld_le64(entries[i] + LE_LAST_FILE_OFFSET);
	}
	/* QEMU's order: renew the data GUID, write the entries, flush, grow
	 * the file to the size the log recorded, then empty the log. */
	ret = vhdx_update_headers(n, true, NULL);
	s->first_visible_write = false;
	for (uint32_t i = 0; i < best_count && ret == 0; i++)
		ret = entry_apply(n, entries[i]);
	if (ret == 0)
		ret = vd_co_flush(n->file);
	if (ret == 0 && last_file > (uint64_t)*file_size) {
		last_file = (last_file + VHDX_MiB - 1) & ~(VHDX_MiB - 1);
		ret = vd_co_truncate(n->file, (int64_t)last_file, false, VD_PREALLOC_OFF, NULL);
		if (ret == 0)
			*file_size = vd_node_size(n->file);
	}
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not replay the VHDX log");
		goto out;
	}
	s->log_replayed = true;
	s->log_sequence = best_last + 1;
reset:
	if (writable) {
		static const uint8_t zero[16];

		ret = vhdx_update_headers(n, false, zero);
		if (ret < 0)
			vd_error_setg_errno(err, ret, "Could not empty the VHDX log");
	}
	goto out;
search_error:
	if (ret == -ELOOP) {
		ret = vd_error_set(err, -EINVAL, "VHDX log is corrupt (overlapping entries)");
		goto out;
	}
nomem:
	ret = vd_error_set(err, -ENOMEM, "Out of memory for the VHDX log");
out:
	for (uint32_t i = 0; entries && i < best_count; i++)
		free(entries[i]);
	free(entries);
	free(log);
	return ret;
}

/*
 * One entry with one data descriptor: the 4 KiB sector around [@offset,
 * @offset + @len) as it will be.  The caller's data is durable first, so
 * that the BAT never points at a block whose data is not there.
 */
int vhdx_log_write_and_flush(struct vd_node *n, const void *data, uint32_t len, uint64_t offset)
{
	struct vhdx_state *s = n->opaque;
	static const uint8_t zero_guid[16];
	uint64_t sector_off = offset & ~(uint64_t)(VHDX_LOG_SECTOR - 1);
	uint8_t *e, *sector, *d, *ds, guid[16];
	int64_t file_size = vd_node_size(n->file);
	int ret;

	assert(offset - sector_off + len <= VHDX_LOG_SECTOR);
	if (file_size < 0)
		return (int)file_size;
	ret = vd_co_flush(n->file);
	if (ret < 0)
		return ret;
	e = calloc(1, 3 * VHDX_LOG_SECTOR);
	if (!e)
		return -ENOMEM;
	sector = e + 2 * VHDX_LOG_SECTOR;
	ret = vhdx_read(n, sector_off, sector, VHDX_LOG_SECTOR);
	if (ret < 0)
		goto out;
	memcpy(sector + (offset - sector_off), data, len);
	if (s->log_length < 2 * VHDX_LOG_SECTOR) {
		/* No room for a log (QEMU fails the write): the data is already
		 * durable, so writing the sector in place is still safe. */
		ret = vhdx_write_sync(n, sector_off, sector, VHDX_LOG_SECTOR);
		goto out;
	}
	if (s->log_sequence == 0)
		s->log_sequence = 1;
	ret = vhdx_guid_generate(guid);
	if (ret == 0)
		ret = vhdx_update_headers(n, false, guid);
	if (ret < 0)
		goto out;

	memcpy(e + LE_SIGNATURE, "loge", 4);
	st_le32(e + LE_ENTRY_LENGTH, 2 * VHDX_LOG_SECTOR);
	st_le32(e + LE_TAIL, 0); /* the entry is the whole sequence */
	st_le64(e + LE_SEQUENCE, s->log_sequence);
	st_le32(e + LE_DESC_COUNT, 1);
	memcpy(e + LE_LOG_GUID, guid, 16);
	st_le64(e + LE_FLUSHED_FILE_OFFSET, (uint64_t)file_size);
	st_le64(e + LE_LAST_FILE_OFFSET, (uint64_t)file_size);
	d = e + VHDX_LOG_HEADER_SIZE;
	memcpy(d, "desc", 4);
	memcpy(d + 4, sector + 4092, 4);
	memcpy(d + 8, sector, 8);
	st_le64(d + 16, sector_off);
	st_le64(d + 24, s->log_sequence);
	ds = e + VHDX_LOG_SECTOR;
	memcpy(ds, "data", 4);
	st_le32(ds + 4, (uint32_t)(s->log_sequence >> 32));
	memcpy(ds + 8, sector + 8, VHDX_LOG_DATA_PAYLOAD);
	st_le32(ds + 4092, (uint32_t)s->log_sequence);
	st_le32(e + LE_CHECKSUM, vhdx_checksum(e, 2 * VHDX_LOG_SECTOR, LE_CHECKSUM));

	ret = vhdx_write_sync(n, s->log_offset, e, 2 * VHDX_LOG_SECTOR);
	if (ret == 0)
		ret = vhdx_write_sync(n, sector_off, sector, VHDX_LOG_SECTOR);
	if (ret == 0) {
		s->log_sequence++;
		ret = vhdx_update_headers(n, false, zero_guid);
	}
out:
	free(e);
	return ret;
}
