/* SPDX-License-Identifier: MIT */
/*
 * VHDX: the file identifier, the two headers, the region table and the
 * metadata items ([MS-VHDX] 2.1, 2.2, 2.6).  Every offset, length and count
 * read here is checked before use: structures must lie inside the file,
 * start 1 MiB aligned past the header section, and not overlap one another;
 * metadata items must lie inside their region and have their size.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <vdisk/crc32c.h>

#include "block/drivers/vhdx/vhdx.h"

const uint8_t vhdx_guid_bat[16] = {0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42,
				   0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08};
const uint8_t vhdx_guid_metadata[16] = {0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b,
					0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e};
const uint8_t vhdx_guid_file_params[16] = {0x37, 0x67, 0xa1, 0xca, 0x36, 0xfa, 0x43, 0x4d,
					   0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b};
const uint8_t vhdx_guid_virtual_size[16] = {0x24, 0x42, 0xa5, 0x2f, 0x1b, 0xcd, 0x76, 0x48,
					    0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8};
const uint8_t vhdx_guid_page83[16] = {0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45,
				      0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46};
const uint8_t vhdx_guid_logical_sector[16] = {0x1d, 0xbf, 0x41, 0x81, 0x6f, 0xa9, 0x09, 0x47,
					      0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f};
const uint8_t vhdx_guid_physical_sector[16] = {0xc7, 0x48, 0xa3, 0xcd, 0x5d, 0x44, 0x71, 0x44,
					       0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56};
const uint8_t vhdx_guid_parent_locator[16] = {0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
					      0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c};

static const uint8_t zero_guid[16];

/* CRC-32C of @buf with the 4-byte checksum field at @csum_off counted as
 * zero (2.2.2: "the checksum field is set to zero while computing"). */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
	static const uint8_t zero[4];
	uint32_t crc = vd_crc32c(0, buf, csum_off);

	crc = vd_crc32c(crc, zero, 4);
	return vd_crc32c(crc, buf + csum_off + 4, len - csum_off - 4);
}

int vhdx_guid_generate(uint8_t guid[16])
{
	if (getrandom(guid, 16, 0) != 16)
		return -EIO;
	guid[7] = (guid[7] & 0x0f) | 0x40; /* version 4 (Data3's high byte on disk) */
	guid[8] = (guid[8] & 0x3f) | 0x80;
	return 0;
}

int vhdx_read(struct vd_node *n, uint64_t offset, void *buf, size_t len)
{
	int64_t file_size = vd_node_size(n->file);
	struct vd_qiov q;
	size_t have = len;

	memset(buf, 0, len);
	if (file_size < 0)
		return (int)file_size;
	if (offset >= (uint64_t)file_size)
		return 0;
	if ((uint64_t)file_size - offset < have)
		have = (size_t)((uint64_t)file_size - offset);
	vd_qiov_init_buf(&q, buf, have);
	return vd_co_preadv(n->file, (int64_t)offset, (int64_t)have, &q, 0);
}

int vhdx_write_sync(struct vd_node *n, uint64_t offset, const void *buf, size_t len)
{
	struct vd_qiov q;
	int ret;

	vd_qiov_init_buf(&q, (void *)buf, len);
	ret = vd_co_pwritev(n->file, (int64_t)offset, (int64_t)len, &q, 0);
	return ret < 0 ? ret : vd_co_flush(n->file);
}

bool vhdx_region_overlaps(const struct vhdx_state *s, uint64_t start, uint64_t length)
{
	uint64_t end = start + length;

	for (int i = 0; i < s->n_regions; i++)
		if (start < s->regions[i].end && end > s->regions[i].start)
			return true;
	return false;
}

int vhdx_region_add(struct vhdx_state *s, uint64_t start, uint64_t length)
{
	if (length == 0)
		return 0;
	if (start > UINT64_MAX - length || vhdx_region_overlaps(s, start, length) ||
	    s->n_regions == VHDX_MAX_REGIONS)
		return -EINVAL;
	s->regions[s->n_regions].start = start;
	s->regions[s->n_regions].end = start + length;
	s->n_regions++;
	return 0;
}

static bool header_valid(const uint8_t *h)
{
	return memcmp(h + VHDX_HDR_SIGNATURE, "head", 4) == 0 &&
	       ld_le32(h + VHDX_HDR_CHECKSUM) ==
		       vhdx_checksum(h, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM);
}

/*
 * The file identifier, then the two headers (2.2.2): each valid when its
 * signature and CRC-32C are; the valid one with the higher sequence number
 * is current.  Equal numbers are corruption unless the headers are
 * identical (Disk2VHD writes two identical headers; QEMU accepts them).
 */
int vhdx_read_headers(struct vd_node *n, int64_t file_size, struct vd_error *err)
{
	struct vhdx_state *s = n->opaque;
	uint8_t id[8];
	bool valid[2];
	uint64_t seq[2];
	const uint8_t *h;
	int ret;

	ret = vhdx_read(n, VHDX_FILE_ID_OFFSET, id, sizeof(id));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read the VHDX file identifier");
	if (memcmp(id, "vhdxfile", 8))
		return vd_error_set(err, -EINVAL, "Not a VHDX image (no \"vhdxfile\" identifier)");
	if (file_size < (int64_t)VHDX_HEADER_SECTION_END)
		return vd_error_set(err, -EINVAL,
				    "VHDX image is truncated (%" PRId64 " bytes, less than its "
				    "1 MiB header section)",
				    file_size);
	for (int i = 0; i < 2; i++) {
		ret = vhdx_read(n, i ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET, s->headers[i],
				VHDX_HEADER_SIZE);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Could not read VHDX header %d",
						   i + 1);
		valid[i] = header_valid(s->headers[i]);
		seq[i] = ld_le64(s->headers[i] + VHDX_HDR_SEQUENCE);
	}
	if (!valid[0] && !valid[1])
		return vd_error_set(err, -EINVAL, "No valid VHDX header found");
	if (valid[0] != valid[1])
		s->cur = valid[0] ? 0 : 1;
	else if (seq[0] != seq[1])
		s->cur = seq[0] > seq[1] ? 0 : 1;
	else if (memcmp(s->headers[0], s->headers[1], VHDX_HEADER_SIZE) == 0)
		s->cur = 0;
	else
		return vd_error_set(err, -EINVAL,
				    "VHDX headers have the same sequence number but differ");
	/* The other copy becomes the next one written: start it from the
	 * current one, as only the current one is trusted. */
	memcpy(s->headers[!s->cur], s->headers[s->cur], VHDX_HEADER_SIZE);

	h = s->headers[s->cur];
	if (vhdx_ld16(h + VHDX_HDR_VERSION) != 1)
		return vd_error_set(err, -ENOTSUP, "Unsupported VHDX version %u",
				    vhdx_ld16(h + VHDX_HDR_VERSION));
	/* The log (2.3): 1 MiB aligned, past the header section; QEMU checks
	 * the offset even when the log is empty. */
	s->log_offset = ld_le64(h + VHDX_HDR_LOG_OFFSET);
	s->log_length = ld_le32(h + VHDX_HDR_LOG_LENGTH);
	if (s->log_offset < VHDX_HEADER_SECTION_END || s->log_offset % VHDX_MiB ||
	    s->log_length % VHDX_MiB)
		return vd_error_set(err, -EINVAL,
				    "Invalid VHDX log location (%" PRIu32 " bytes at %" PRIu64 ")",
				    s->log_length, s->log_offset);
	if (vhdx_ld16(h + VHDX_HDR_LOG_VERSION) != 0)
		return vd_error_set(err, -EINVAL, "Unsupported VHDX log version %u",
				    vhdx_ld16(h + VHDX_HDR_LOG_VERSION));
	if (s->log_length && (s->log_offset > (uint64_t)file_size ||
			      (uint64_t)file_size - s->log_offset < s->log_length))
		return vd_error_set(err, -EINVAL,
				    "VHDX log (%" PRIu32 " bytes at %" PRIu64
				    ") is outside the file (%" PRId64 " bytes)",
				    s->log_length, s->log_offset, file_size);
	ret = vhdx_region_add(s, 0, VHDX_HEADER_SECTION_END);
	if (ret == 0)
		ret = vhdx_region_add(s, s->log_offset, s->log_length);
	if (ret < 0)
		return vd_error_set(err, -EINVAL, "VHDX log overlaps the header section");
	return 0;
}

/* Write the non-current header from the current one, then make it current. */
static int update_header(struct vd_node *n, bool new_data_guid, const uint8_t *log_guid)
{
	struct vhdx_state *s = n->opaque;
	int next = !s->cur;
	uint8_t *h = s->headers[next];
	uint64_t offset = next ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET;
	int ret;

	memcpy(h, s->headers[s->cur], VHDX_HEADER_SIZE);
	st_le64(h + VHDX_HDR_SEQUENCE, ld_le64(h + VHDX_HDR_SEQUENCE) + 1);
	memcpy(h + VHDX_HDR_FILE_WRITE_GUID, s->session_guid, 16);
	if (new_data_guid) {
		ret = vhdx_guid_generate(h + VHDX_HDR_DATA_WRITE_GUID);
		if (ret < 0)
			return ret;
	}
	if (log_guid)
		memcpy(h + VHDX_HDR_LOG_GUID, log_guid, 16);
	st_le32(h + VHDX_HDR_CHECKSUM, vhdx_checksum(h, VHDX_HEADER_SIZE, VHDX_HDR_CHECKSUM));
	ret = vhdx_write_sync(n, offset, h, VHDX_HEADER_SIZE);
	if (ret < 0) {
		memcpy(h, s->headers[s->cur], VHDX_HEADER_SIZE);
		return ret;
	}
	s->cur = next;
	return 0;
}

/* 2.2.2.1: update twice, so that both copies hold the current state. */
int vhdx_update_headers(struct vd_node *n, bool new_data_guid, const uint8_t *log_guid)
{
	int ret = update_header(n, new_data_guid, log_guid);

	return ret < 0 ? ret : update_header(n, false, log_guid);
}

/* A region (2.2.3.2): 1 MiB aligned offset and length, past the header
 * section, inside the file, overlapping no other structure. */
static int check_region(struct vhdx_state *s, const char *what, uint64_t offset, uint32_t length,
			int64_t file_size, struct vd_error *err)
{
	if (offset < VHDX_HEADER_SECTION_END || offset % VHDX_MiB || length == 0 ||
	    length % VHDX_MiB)
		return vd_error_set(err, -EINVAL,
				    "Invalid VHDX %s region (%" PRIu32 " bytes at %" PRIu64 ")",
				    what, length, offset);
	if (offset > (uint64_t)file_size)
		return vd_error_set(err, -EINVAL,
				    "VHDX %s region at %" PRIu64
				    " is past the end of the file (%" PRId64 " bytes)",
				    what, offset, file_size);
	if (vhdx_region_add(s, offset, length) < 0)
		return vd_error_set(err, -EINVAL,
				    "VHDX %s region (%" PRIu32 " bytes at %" PRIu64
				    ") overlaps another structure",
				    what, length, offset);
	return 0;
}

/*
 * The region table (2.2.3): QEMU reads the first copy only, and so do we.
 * The BAT and metadata regions must each be there once; another region
 * marked required is one we do not understand, and the spec says to refuse
 * the file.
 */
int vhdx_read_region_table(struct vd_node *n, int64_t file_size, struct vd_error *err)
{
	struct vhdx_state *s = n->opaque;
	uint8_t *rt = malloc(VHDX_TABLE_SIZE);
	bool have_bat = false, have_md = false;
	uint32_t count;
	int ret;

	if (!rt)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = vhdx_read(n, VHDX_REGION_TABLE1_OFFSET, rt, VHDX_TABLE_SIZE);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read the VHDX region table");
		goto out;
	}
	ret = -EINVAL;
	if (memcmp(rt, "regi", 4) || ld_le32(rt + 4) != vhdx_checksum(rt, VHDX_TABLE_SIZE, 4)) {
		vd_error_set(err, ret, "Invalid VHDX region table (signature or checksum)");
		goto out;
	}
	count = ld_le32(rt + 8);
	if (count > VHDX_MAX_TABLE_ENTRIES) {
		vd_error_set(err, ret, "VHDX region table has too many entries (%" PRIu32 ")",
			     count);
		goto out;
	}
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *e = rt + 16 + 32 * i;
		uint64_t offset = ld_le64(e + 16);
		uint32_t length = ld_le32(e + 24), bits = ld_le32(e + 28);

		if (memcmp(e, vhdx_guid_bat, 16) == 0) {
			if (have_bat) {
				vd_error_set(err, ret, "VHDX region table lists the BAT twice");
				goto out;
			}
			have_bat = true;
			s->bat_offset = offset;
			s->bat_length = length;
			ret = check_region(s, "BAT", offset, length, file_size, err);
		} else if (memcmp(e, vhdx_guid_metadata, 16) == 0) {
			if (have_md) {
				vd_error_set(err, ret,
					     "VHDX region table lists the metadata twice");
				goto out;
			}
			have_md = true;
			s->metadata_offset = offset;
			s->metadata_length = length;
			ret = check_region(s, "metadata", offset, length, file_size, err);
			if (ret == 0 && (uint64_t)file_size - offset < length)
				ret = vd_error_set(err, -EINVAL,
						   "VHDX metadata region (%" PRIu32
						   " bytes at %" PRIu64 ") is outside the file",
						   length, offset);
		} else if (bits & 1) {
			ret = vd_error_set(err, -ENOTSUP,
					   "VHDX region table entry %" PRIu32
					   " is required but unknown to us",
					   i);
		} else {
			/* An optional region we do not use: keep payload off it. */
			ret = vhdx_region_add(s, offset, length) < 0
				      ? vd_error_set(err, -EINVAL,
						     "VHDX region %" PRIu32
						     " overlaps another structure",
						     i)
				      : 0;
		}
		if (ret < 0)
			goto out;
		ret = -EINVAL;
	}
	if (!have_bat || !have_md) {
		vd_error_set(err, ret, "VHDX region table lacks the %s region",
			     have_bat ? "metadata" : "BAT");
		goto out;
	}
	ret = 0;
out:
	free(rt);
	return ret;
}

enum {
	MD_FILE_PARAMS,
	MD_VIRTUAL_SIZE,
	MD_PAGE83,
	MD_LOGICAL_SECTOR,
	MD_PHYSICAL_SECTOR,
	MD_PARENT_LOCATOR,
	MD_COUNT,
};

static const struct {
	const uint8_t *guid;
	uint32_t size; /* the item's length; 0: any (the parent locator) */
	const char *name;
} md_items[MD_COUNT] = {
	[MD_FILE_PARAMS] = {vhdx_guid_file_params, 8, "file parameters"},
	[MD_VIRTUAL_SIZE] = {vhdx_guid_virtual_size, 8, "virtual disk size"},
	[MD_PAGE83] = {vhdx_guid_page83, 16, "page 83 data"},
	[MD_LOGICAL_SECTOR] = {vhdx_guid_logical_sector, 4, "logical sector size"},
	[MD_PHYSICAL_SECTOR] = {vhdx_guid_physical_sector, 4, "physical sector size"},
	[MD_PARENT_LOCATOR] = {vhdx_guid_parent_locator, 0, "parent locator"},
};

static int log2_exact(uint64_t v)
{
	int bits = 0;

	if (v == 0 || (v & (v - 1)))
		return -1;
	while (v >>= 1)
		bits++;
	return bits;
}

/*
 * The metadata table and its items (2.6).  The five items of a fixed or
 * dynamic disk must be present once each; items are read only inside the
 * region, past its 64 KiB table.  A set has_parent bit (a differencing
 * disk) is refused, as QEMU refuses it.
 */
int vhdx_read_metadata(struct vd_node *n, struct vd_error *err)
{
	struct vhdx_state *s = n->opaque;
	uint8_t *mt = malloc(VHDX_TABLE_SIZE), item[16];
	uint32_t offsets[MD_COUNT] = {0};
	bool present[MD_COUNT] = {false};
	uint16_t count;
	uint64_t chunk_ratio;
	int ret = -EINVAL;

	if (!mt)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = vhdx_read(n, s->metadata_offset, mt, VHDX_TABLE_SIZE);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read the VHDX metadata table");
		goto out;
	}
	ret = -EINVAL;
	if (memcmp(mt, "metadata", 8)) {
		vd_error_set(err, ret, "Invalid VHDX metadata table signature");
		goto out;
	}
	count = vhdx_ld16(mt + 10);
	if (count > VHDX_MAX_TABLE_ENTRIES) {
		vd_error_set(err, ret, "VHDX metadata table has too many entries (%u)", count);
		goto out;
	}
	for (unsigned i = 0; i < count; i++) {
		const uint8_t *e = mt + 32 + 32 * i;
		uint32_t off = ld_le32(e + 16), len = ld_le32(e + 20), bits = ld_le32(e + 24);
		int k;

		for (k = 0; k < MD_COUNT; k++)
			if (memcmp(e, md_items[k].guid, 16) == 0)
				break;
		if (k == MD_COUNT) {
			if (bits & 4) {
				ret = vd_error_set(
					err, -ENOTSUP,
					"VHDX metadata item %u is required but unknown to us", i);
				goto out;
			}
			continue;
		}
		if (present[k]) {
			vd_error_set(err, ret, "VHDX metadata lists the %s twice",
				     md_items[k].name);
			goto out;
		}
		if ((md_items[k].size && len != md_items[k].size) || off < VHDX_TABLE_SIZE ||
		    off > s->metadata_length || s->metadata_length - off < len) {
			vd_error_set(err, ret,
				     "Invalid VHDX %s item (%" PRIu32 " bytes at %" PRIu32 ")",
				     md_items[k].name, len, off);
			goto out;
		}
		present[k] = true;
		offsets[k] = off;
	}
	for (int k = 0; k < MD_PARENT_LOCATOR; k++) {
		if (!present[k]) {
			vd_error_set(err, ret, "VHDX metadata lacks the %s", md_items[k].name);
			goto out;
		}
		ret = vhdx_read(n, s->metadata_offset + offsets[k], item, md_items[k].size);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read the VHDX %s",
					    md_items[k].name);
			goto out;
		}
		ret = -EINVAL;
		switch (k) {
		case MD_FILE_PARAMS:
			s->block_size = ld_le32(item);
			s->file_params_bits = ld_le32(item + 4);
			break;
		case MD_VIRTUAL_SIZE:
			s->virtual_size = ld_le64(item);
			break;
		case MD_PAGE83:
			memcpy(s->page83, item, 16);
			break;
		case MD_LOGICAL_SECTOR:
			s->logical_sector_size = ld_le32(item);
			break;
		case MD_PHYSICAL_SECTOR:
			s->physical_sector_size = ld_le32(item);
			break;
		}
	}
	if (s->file_params_bits & 2) {
		ret = present[MD_PARENT_LOCATOR] ? -ENOTSUP : -EINVAL;
		vd_error_set(err, ret,
			     present[MD_PARENT_LOCATOR]
				     ? "VHDX differencing images are not supported"
				     : "VHDX image has a parent but no parent locator");
		goto out;
	}
	s->block_bits = log2_exact(s->block_size);
	if (s->block_bits < 0 || s->block_size < VHDX_BLOCK_SIZE_MIN ||
	    s->block_size > VHDX_BLOCK_SIZE_MAX) {
		vd_error_set(err, ret, "Invalid VHDX block size %" PRIu32, s->block_size);
		goto out;
	}
	/* QEMU reads 512-byte logical sectors only. */
	if (s->logical_sector_size != 512) {
		ret = vd_error_set(err, -ENOTSUP,
				   "VHDX logical sector size %" PRIu32
				   " is not supported (only 512)",
				   s->logical_sector_size);
		goto out;
	}
	if (s->physical_sector_size != 512 && s->physical_sector_size != 4096) {
		vd_error_set(err, ret, "Invalid VHDX physical sector size %" PRIu32,
			     s->physical_sector_size);
		goto out;
	}
	if (s->virtual_size % s->logical_sector_size || s->virtual_size > VHDX_MAX_IMAGE_SIZE) {
		vd_error_set(err, ret, "Invalid VHDX virtual disk size %" PRIu64, s->virtual_size);
		goto out;
	}
	/* 2.5: a sector bitmap block covers 2^23 sectors, so chunk_ratio
	 * payload blocks; with the checks above it is a power of two >= 16. */
	chunk_ratio = (uint64_t)VHDX_MAX_SECTORS_PER_BLOCK * s->logical_sector_size / s->block_size;
	s->chunk_ratio_bits = log2_exact(chunk_ratio);
	ret = 0;
out:
	free(mt);
	return ret;
}

bool vhdx_guid_is_zero(const uint8_t *guid)
{
	return memcmp(guid, zero_guid, 16) == 0;
}
