/* SPDX-License-Identifier: MIT */
/*
 * The "dmg" format (Apple UDIF disk images), read only: what QEMU 7.2's
 * block/dmg.c reads.  See docs/formats.md ("dmg").  Big-endian:
 *
 *   "koly" trailer (512 bytes, found in the last 515 bytes of the file as
 *   QEMU looks for it): data fork offset (0x18), resource fork offset and
 *   length (0x28, 0x30), XML property list offset and length (0xd8, 0xe0),
 *   sector count (0x1ec);
 *   block tables ("mish" blocks), either in the resource fork (from 0x100,
 *   each prefixed by its 32-bit length) or base64 between <data> and
 *   </data> in the XML plist: first sector (8), data offset (0x18), then
 *   from 204 one 40-byte entry per chunk: type, first sector (8), sector
 *   count (0x10), data offset (0x18), data length (0x20).
 *   Chunk types: zeroes (0, 2), raw (1), zlib (0x80000005), bzip2
 *   (0x80000006), lzfse (0x80000007, refused: Debian has no liblzfse);
 *   others (comments, terminators, ADC) are skipped as QEMU does.
 *
 * CVE-2014-0145/0146 were these tables: a chunk's length is at most 64 MiB
 * and its sector count at most 64 MiB / 512 (QEMU's limits, which bound the
 * buffers), every chunk's data must lie inside the file, offsets are summed
 * with overflow checks, and the property list is bounded by the file and
 * by our 64 MiB cap.
 */
#include <bzlib.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "block/drivers.h"
#include "block/drivers/backing.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

enum {
	UDZE = 0, /* zeroes */
	UDRW = 1, /* raw data */
	UDIG = 2, /* ignore: zeroes */
	UDZO = 0x80000005, /* zlib */
	UDBZ = 0x80000006, /* bzip2 */
	ULFO = 0x80000007, /* lzfse */
};

#define DMG_LENGTHS_MAX (64u << 20)
#define DMG_SECTORCOUNTS_MAX (DMG_LENGTHS_MAX / 512)
#define DMG_MAX_PLIST (64u << 20) /* ours: also the largest resource */
#define DMG_MAX_CHUNKS (1u << 24) /* ours: 16M chunks, 640 MiB of tables */

struct dmg_chunk {
	uint32_t type;
	uint64_t sector, count; /* guest sectors */
	uint64_t offset, length; /* bytes in the file */
};

struct dmg_state {
	struct vd_co_mutex lock;
	struct dmg_chunk *chunks;
	uint32_t n_chunks, cap_chunks;
	uint64_t file_size;
	uint64_t data_fork_offset;
	uint64_t max_compressed, max_sectors;
	uint8_t *compressed, *chunk_data; /* allocated at the first read */
	uint32_t current; /* chunk in chunk_data; n_chunks: none */
};

static void dmg_close(struct vd_node *n)
{
	struct dmg_state *s = n->opaque;

	free(s->chunks);
	free(s->compressed);
	free(s->chunk_data);
	s->chunks = NULL;
	s->compressed = s->chunk_data = NULL;
}

static bool known_type(uint32_t t)
{
	return t == UDZE || t == UDRW || t == UDIG || t == UDZO || t == UDBZ || t == ULFO;
}

/* One mish block of @len bytes (QEMU's dmg_read_mish_block). */
static int read_mish(struct dmg_state *s, const uint8_t *b, uint64_t len, struct vd_error *err)
{
	uint64_t out_offset, in_offset, count;

	/* Not a mish block, or too short: skipped, as QEMU does. */
	if (len < 244 || ld_be32(b) != 0x6d697368)
		return 0;
	out_offset = ld_be64(b + 8);
	in_offset = ld_be64(b + 0x18);
	if (__builtin_add_overflow(in_offset, s->data_fork_offset, &in_offset))
		return vd_error_set(err, -EINVAL, "dmg: block table data offset overflows");
	count = (len - 204) / 40;
	for (uint64_t e = 0; e < count; e++) {
		const uint8_t *p = b + 204 + 40 * e;
		struct dmg_chunk c = {.type = ld_be32(p)};

		if (!known_type(c.type))
			continue;
		if (__builtin_add_overflow(ld_be64(p + 8), out_offset, &c.sector))
			return vd_error_set(err, -EINVAL, "dmg: chunk sector number overflows");
		c.count = ld_be64(p + 0x10);
		if (c.type != UDZE && c.type != UDIG && c.count > DMG_SECTORCOUNTS_MAX)
			return vd_error_set(err, -EINVAL,
					    "sector count %" PRIu64 " for chunk %" PRIu32
					    " is larger than max (%u)",
					    c.count, s->n_chunks, DMG_SECTORCOUNTS_MAX);
		if (__builtin_add_overflow(ld_be64(p + 0x18), in_offset, &c.offset))
			return vd_error_set(err, -EINVAL, "dmg: chunk data offset overflows");
		c.length = ld_be64(p + 0x20);
		if (c.length > DMG_LENGTHS_MAX)
			return vd_error_set(err, -EINVAL,
					    "length %" PRIu64 " for chunk %" PRIu32
					    " is larger than max (%u)",
					    c.length, s->n_chunks, DMG_LENGTHS_MAX);
		if (c.count == 0)
			continue; /* covers nothing */
		if (c.sector > (uint64_t)VD_MAX_LENGTH / 512 ||
		    c.count > (uint64_t)VD_MAX_LENGTH / 512 - c.sector)
			return vd_error_set(err, -EINVAL,
					    "dmg: chunk %" PRIu32 " lies past the largest disk",
					    s->n_chunks);
		if (c.type == UDRW || c.type == UDZO || c.type == UDBZ || c.type == ULFO) {
			/* Ours: the data must be in the file. */
			if (c.offset > s->file_size || c.length > s->file_size - c.offset)
				return vd_error_set(err, -EINVAL,
						    "dmg: chunk %" PRIu32
						    " data is outside the file",
						    s->n_chunks);
			if (c.type == ULFO)
				return vd_error_set(err, -ENOTSUP,
						    "dmg: chunk %" PRIu32 " is lzfse-compressed, "
						    "which vdisk cannot read (no lzfse library)",
						    s->n_chunks);
			if (c.length > s->max_compressed)
				s->max_compressed = c.length;
			if (c.count > s->max_sectors)
				s->max_sectors = c.count;
		}
		if (s->n_chunks == s->cap_chunks) {
			uint32_t cap = s->cap_chunks ? s->cap_chunks * 2 : 64;
			struct dmg_chunk *nc;

			if (s->n_chunks >= DMG_MAX_CHUNKS)
				return vd_error_set(err, -EFBIG, "dmg: more than %u chunks",
						    DMG_MAX_CHUNKS);
			nc = realloc(s->chunks, cap * sizeof(*nc));
			if (!nc)
				return vd_error_set(err, -ENOMEM, "Out of memory");
			s->chunks = nc;
			s->cap_chunks = cap;
		}
		s->chunks[s->n_chunks++] = c;
	}
	return 0;
}

/*
 * QEMU's dmg_read_resource_fork: the fork starts with the offset (32 bits)
 * and, at 8, the length of its resource data; the data is a sequence of
 * resources, each a 32-bit length and that many bytes (a mish block).
 */
static int read_resource_fork(struct vd_node *n, uint64_t begin, uint64_t length,
			      struct vd_error *err)
{
	struct dmg_state *s = n->opaque;
	uint64_t end, off;
	uint8_t b4[4], *buf = NULL;
	uint32_t data_off = 0, data_len;
	int ret;

	if (length < 12)
		return vd_error_set(err, -EINVAL, "dmg: resource fork too short");
	ret = vd_format_pread(n, begin, b4, 4);
	if (ret == 0) {
		data_off = ld_be32(b4);
		ret = vd_format_pread(n, begin + 8, b4, 4);
	}
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "dmg: could not read the resource fork");
	data_len = ld_be32(b4);
	if (data_off > length || data_len == 0 || data_len > length - data_off)
		return vd_error_set(err, -EINVAL, "dmg: invalid resource fork header");
	off = begin + data_off;
	end = off + data_len;
	while (off < end) {
		uint32_t count;

		if (end - off < 4)
			break;
		ret = vd_format_pread(n, off, b4, 4);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "dmg: could not read the resource fork");
			break;
		}
		count = ld_be32(b4);
		off += 4;
		if (count == 0 || count > end - off || count > DMG_MAX_PLIST) {
			ret = vd_error_set(err, -EINVAL,
					   "dmg: invalid resource of %" PRIu32 " bytes", count);
			break;
		}
		free(buf);
		buf = malloc(count);
		if (!buf) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			break;
		}
		ret = vd_format_pread(n, off, buf, count);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "dmg: could not read the resource fork");
			break;
		}
		ret = read_mish(s, buf, count, err);
		if (ret < 0)
			break;
		off += count;
	}
	free(buf);
	return ret;
}

static int b64_value(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decode base64 in place, skipping what is not base64 (whitespace, '='),
 * as glib's g_base64_decode that QEMU uses; returns the decoded length. */
static size_t b64_decode(uint8_t *p, size_t len)
{
	uint32_t acc = 0;
	size_t out = 0;
	int bits = 0;

	for (size_t i = 0; i < len; i++) {
		int v = b64_value(p[i]);

		if (v < 0)
			continue;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			p[out++] = (uint8_t)(acc >> bits);
		}
	}
	return out;
}

static uint8_t *find(uint8_t *p, uint8_t *end, const char *what)
{
	size_t wl = strlen(what);

	for (; (size_t)(end - p) >= wl; p++)
		if (memcmp(p, what, wl) == 0)
			return p;
	return NULL;
}

/* QEMU's dmg_read_plist_xml: every <data>...</data> is a base64 mish block. */
static int read_plist(struct vd_node *n, uint64_t offset, uint64_t length, struct vd_error *err)
{
	struct dmg_state *s = n->opaque;
	uint8_t *xml, *p, *end;
	int ret;

	if (length > DMG_MAX_PLIST)
		return vd_error_set(err, -EFBIG,
				    "dmg: property list of %" PRIu64 " bytes is too large", length);
	xml = malloc(length + 1);
	if (!xml)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = vd_format_pread(n, offset, xml, length);
	if (ret < 0) {
		free(xml);
		return vd_error_setg_errno(err, ret, "dmg: could not read the property list");
	}
	p = xml;
	end = xml + length;
	while ((p = find(p, end, "<data>"))) {
		uint8_t *data = p + 6, *stop = find(data, end, "</data>");
		size_t dl;

		if (!stop) {
			ret = vd_error_set(err, -EINVAL,
					   "dmg: unterminated <data> in property list");
			break;
		}
		dl = b64_decode(data, (size_t)(stop - data));
		ret = read_mish(s, data, dl, err);
		if (ret < 0)
			break;
		p = stop + 7;
	}
	free(xml);
	return ret;
}

static int cmp_chunk(const void *a, const void *b)
{
	const struct dmg_chunk *x = a, *y = b;

	return x->sector < y->sector ? -1 : x->sector > y->sector;
}

/* QEMU's dmg_find_koly_offset: "koly" in the last 515 bytes. */
static int64_t find_koly(struct vd_node *n, uint64_t size, struct vd_error *err)
{
	uint8_t buf[515];
	uint64_t off = size > 511 + 512 ? size - 511 - 512 : 0;
	size_t len = size < sizeof(buf) ? (size_t)size : sizeof(buf);
	int ret;

	if (size < 512)
		return vd_error_set(err, -EINVAL, "dmg file must be at least 512 bytes long");
	ret = vd_format_pread(n, off, buf, len);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read dmg trailer");
	for (size_t i = 0; i + 3 < len; i++)
		if (memcmp(buf + i, "koly", 4) == 0 && off + i + 512 <= size)
			return (int64_t)(off + i);
	return vd_error_set(err, -EINVAL, "Could not locate UDIF trailer in dmg file");
}

static int dmg_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct dmg_state *s = n->opaque;
	uint64_t koly, rsrc_off, rsrc_len, xml_off, xml_len, sectors;
	uint8_t t[512];
	int64_t file_size, k;
	int ret;

	vd_co_mutex_init(&s->lock);
	ret = vd_format_refuse_rdwr(n, flags, err);
	if (ret < 0)
		return ret;
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size,
					   "Failed to get file size while reading UDIF trailer");
	s->file_size = (uint64_t)file_size;
	k = find_koly(n, s->file_size, err);
	if (k < 0)
		return (int)k;
	koly = (uint64_t)k;
	ret = vd_format_pread(n, koly, t, sizeof(t));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read dmg trailer");
	s->data_fork_offset = ld_be64(t + 0x18);
	rsrc_off = ld_be64(t + 0x28);
	rsrc_len = ld_be64(t + 0x30);
	xml_off = ld_be64(t + 0xd8);
	xml_len = ld_be64(t + 0xe0);
	sectors = ld_be64(t + 0x1ec);
	if (s->data_fork_offset > koly)
		return vd_error_set(err, -EINVAL, "dmg: data fork offset is past the trailer");
	if (rsrc_off >= koly || rsrc_len > koly - rsrc_off)
		return vd_error_set(err, -EINVAL, "dmg: resource fork is outside the file");
	if (xml_off >= koly || xml_len > koly - xml_off)
		return vd_error_set(err, -EINVAL, "dmg: property list is outside the file");
	if (sectors > (uint64_t)VD_MAX_LENGTH / 512)
		return vd_error_set(err, -EINVAL, "dmg: sector count %" PRIu64 " is too large",
				    sectors);
	if (rsrc_len)
		ret = read_resource_fork(n, rsrc_off, rsrc_len, err);
	else if (xml_len)
		ret = read_plist(n, xml_off, xml_len, err);
	else
		ret = vd_error_set(err, -EINVAL, "dmg: no block tables (resource fork or plist)");
	if (ret < 0)
		goto fail;
	if (s->n_chunks)
		qsort(s->chunks, s->n_chunks, sizeof(*s->chunks), cmp_chunk);
	s->current = s->n_chunks;
	n->size = (int64_t)(sectors * 512);
	return 0;
fail:
	dmg_close(n);
	return ret;
}

/* The chunk holding @sector, or n_chunks (QEMU's search_chunk). */
static uint32_t search_chunk(const struct dmg_state *s, uint64_t sector)
{
	uint32_t lo = 0, hi = s->n_chunks;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		const struct dmg_chunk *c = &s->chunks[mid];

		if (c->sector > sector)
			hi = mid;
		else if (sector - c->sector < c->count)
			return mid;
		else
			lo = mid + 1;
	}
	return s->n_chunks;
}

static int inflate_zlib(const uint8_t *in, uint64_t in_len, uint8_t *out, uint64_t out_len)
{
	z_stream z = {0};
	int zr;

	if (inflateInit(&z) != Z_OK)
		return -ENOMEM;
	z.next_in = (uint8_t *)in;
	z.avail_in = (uInt)in_len;
	z.next_out = out;
	z.avail_out = (uInt)out_len;
	zr = inflate(&z, Z_FINISH);
	inflateEnd(&z);
	return zr == Z_STREAM_END && z.total_out == out_len ? 0 : -EIO;
}

static int inflate_bz2(const uint8_t *in, uint64_t in_len, uint8_t *out, uint64_t out_len)
{
	bz_stream z = {0};
	int zr;

	if (BZ2_bzDecompressInit(&z, 0, 0) != BZ_OK)
		return -ENOMEM;
	z.next_in = (char *)in;
	z.avail_in = (unsigned)in_len;
	z.next_out = (char *)out;
	z.avail_out = (unsigned)out_len;
	zr = BZ2_bzDecompress(&z);
	BZ2_bzDecompressEnd(&z);
	return zr == BZ_STREAM_END && z.total_out_lo32 == out_len && !z.total_out_hi32 ? 0 : -EIO;
}

/* Decode chunk @i into s->chunk_data.  With s->lock. */
static int load_chunk(struct vd_node *n, uint32_t i)
{
	struct dmg_state *s = n->opaque;
	const struct dmg_chunk *c = &s->chunks[i];
	uint64_t out_len = c->count * 512;
	int ret;

	if (s->current == i)
		return 0;
	if (!s->chunk_data && !(s->chunk_data = malloc(s->max_sectors * 512 + 512)))
		return -ENOMEM;
	if (!s->compressed && !(s->compressed = malloc(s->max_compressed + 1)))
		return -ENOMEM;
	s->current = s->n_chunks;
	if (c->type == UDRW) {
		uint64_t len = c->length < out_len ? c->length : out_len;

		ret = vd_format_pread(n, c->offset, s->chunk_data, len);
		if (ret == 0 && len < out_len)
			memset(s->chunk_data + len, 0, out_len - len);
	} else {
		ret = vd_format_pread(n, c->offset, s->compressed, c->length);
		if (ret == 0)
			ret = c->type == UDZO ? inflate_zlib(s->compressed, c->length,
							     s->chunk_data, out_len)
					      : inflate_bz2(s->compressed, c->length, s->chunk_data,
							    out_len);
	}
	if (ret == 0)
		s->current = i;
	return ret;
}

static int dmg_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags)
{
	struct dmg_state *s = n->opaque;
	size_t done = 0;
	int ret = 0;

	vd_co_mutex_lock(&s->lock);
	while (bytes > 0 && ret == 0) {
		uint64_t sector = (uint64_t)offset / 512, in;
		uint32_t i = search_chunk(s, sector);
		const struct dmg_chunk *c;
		int64_t chunk;

		if (i == s->n_chunks) {
			ret = -EIO; /* no chunk covers it: QEMU fails the read too */
			break;
		}
		c = &s->chunks[i];
		in = (uint64_t)offset - c->sector * 512;
		chunk = (int64_t)(c->count * 512 - in);
		if (chunk > bytes)
			chunk = bytes;
		if (c->type == UDZE || c->type == UDIG) {
			vd_qiov_memset(qiov, done, 0, (size_t)chunk);
		} else {
			ret = load_chunk(n, i);
			if (ret == 0)
				vd_qiov_from_buf(qiov, done, s->chunk_data + in, (size_t)chunk);
		}
		offset += chunk;
		bytes -= chunk;
		done += (size_t)chunk;
	}
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

static int dmg_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file)
{
	struct dmg_state *s = n->opaque;
	uint32_t i = search_chunk(s, (uint64_t)offset / 512);
	const struct dmg_chunk *c;

	if (i == s->n_chunks) {
		*pnum = 512 - offset % 512;
		return VD_BLOCK_DATA; /* reading it fails */
	}
	c = &s->chunks[i];
	*pnum = (int64_t)(c->count * 512 - ((uint64_t)offset - c->sector * 512));
	if (c->type == UDZE || c->type == UDIG)
		return VD_BLOCK_ZERO;
	if (c->type == UDRW && c->length >= c->count * 512) {
		*map = (int64_t)(c->offset + ((uint64_t)offset - c->sector * 512));
		*file = n->file;
		return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	}
	return VD_BLOCK_DATA;
}

/* QEMU's dmg_probe: no magic at the start; the name says it (score 2). */
static int dmg_probe(const uint8_t *buf, size_t len, const char *filename)
{
	size_t fl = filename ? strlen(filename) : 0;

	return fl > 4 && strcmp(filename + fl - 4, ".dmg") == 0 ? 2 : 0;
}

const struct vd_block_driver vd_driver_dmg = {
	.name = "dmg",
	.instance_size = sizeof(struct dmg_state),
	.is_format = true,
	.child_name = "file",
	.child_has_metadata = true,
	.probe = dmg_probe,
	.open = dmg_open,
	.close = dmg_close,
	.co_preadv = dmg_co_preadv,
	.co_block_status = dmg_co_block_status,
};
