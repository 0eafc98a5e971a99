/* SPDX-License-Identifier: MIT */
/*
 * The "vmdk" format: VMware virtual disks as QEMU 7.2's block/vmdk.c reads
 * and writes them (VMware "Virtual Disk Format 5.0" for the layout; our
 * reading is in docs/formats.md, "vmdk").  This file opens an image: the
 * descriptor (text, either a file of its own or embedded in a sparse
 * extent), the extents it lists (flat files, hosted sparse "KDMV" files,
 * ESX "COWD" sparse files) and the parent named by parentFileNameHint.
 *
 * Everything read from an image is hostile until checked here, once:
 * header fields, the grain directory's size and place (inside the file),
 * every grain table it names (inside the file, clear of the header), the
 * descriptor's size (1 MiB at most, parsed in one pass), the extent count,
 * each extent's size (the total fits in VD_MAX_LENGTH) and file name
 * (relative, no "..": an extent never leaves the descriptor's directory).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "block/drivers/byteorder.h"
#include "block/drivers/vmdk/vmdk.h"
#include "block/internal.h"

static uint16_t ld_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static int read_at(struct vd_node *f, uint64_t offset, void *buf, size_t len)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, buf, len);
	return vd_co_preadv(f, (int64_t)offset, (int64_t)len, &q, 0);
}

static const char *node_filename(struct vd_node *f)
{
	return f && f->filename ? f->filename : "";
}

/* ---- sparse extents ---------------------------------------------------- */

/* Read a grain directory of @e->gd_entries at byte @offset, checking that
 * it and every grain table it names lie inside the file, past sector 0. */
static int load_gd(struct vmdk_extent *e, uint64_t offset, int64_t file_size, uint32_t **out,
		   struct vd_error *err)
{
	uint64_t bytes = (uint64_t)e->gd_entries * 4;
	uint64_t gt_bytes = (uint64_t)e->gt_entries * 4;
	uint32_t *gd;
	int ret;

	if (offset > (uint64_t)file_size || (uint64_t)file_size - offset < bytes)
		return vd_error_set(err, -EINVAL,
				    "Grain directory (%" PRIu64 " bytes at %" PRIu64
				    ") is outside the file '%s'",
				    bytes, offset, node_filename(e->file));
	gd = malloc(bytes ? bytes : 4);
	if (!gd)
		return vd_error_set(err, -ENOMEM, "Could not allocate the grain directory");
	ret = bytes ? read_at(e->file, offset, gd, bytes) : 0;
	if (ret < 0) {
		free(gd);
		return vd_error_setg_errno(err, ret, "Could not read the grain directory of '%s'",
					   node_filename(e->file));
	}
	for (uint32_t i = 0; i < e->gd_entries; i++) {
		uint64_t gt;

		gd[i] = ld_le32((const uint8_t *)&gd[i]);
		gt = (uint64_t)gd[i] * 512;
		if (gd[i] && (gd[i] < 1 || gt > (uint64_t)file_size ||
			      (uint64_t)file_size - gt < gt_bytes)) {
			uint32_t bad = gd[i];

			free(gd);
			return vd_error_set(err, -EINVAL,
					    "Grain table %" PRIu32 " (sector %" PRIu32
					    ") is outside the file '%s'",
					    i, bad, node_filename(e->file));
		}
	}
	*out = gd;
	return 0;
}

/* The checks QEMU's vmdk_add_extent makes, and ours on top; fills the
 * sparse geometry of @e. */
static int sparse_geometry(struct vmdk_extent *e, uint64_t capacity, uint64_t granularity,
			   uint32_t gt_entries, struct vd_error *err)
{
	uint64_t per_gt;

	if (granularity == 0 || gt_entries == 0)
		return vd_error_set(err, -EINVAL, "L1 entry size is invalid");
	if (granularity > VMDK_MAX_GRAIN_SECTORS)
		return vd_error_set(err, -EFBIG,
				    "Invalid granularity %" PRIu64 ", image may be corrupt "
				    "(at most %u sectors)",
				    granularity, VMDK_MAX_GRAIN_SECTORS);
	if (capacity > (uint64_t)VD_MAX_LENGTH / 512)
		return vd_error_set(err, -EFBIG, "Extent capacity %" PRIu64 " is too large",
				    capacity);
	per_gt = granularity * gt_entries;
	if ((capacity + per_gt - 1) / per_gt > VMDK_MAX_GD_ENTRIES)
		return vd_error_set(err, -EFBIG, "L1 size too big");
	e->sectors = capacity;
	e->grain_sectors = (uint32_t)granularity;
	e->gt_entries = gt_entries;
	e->gd_entries = (uint32_t)((capacity + per_gt - 1) / per_gt);
	return 0;
}

static int cache_alloc(struct vmdk_extent *e, struct vd_error *err)
{
	for (int i = 0; i < VMDK_GT_CACHE; i++) {
		e->cache[i].entries = malloc((size_t)e->gt_entries * 4);
		if (!e->cache[i].entries)
			return vd_error_set(err, -ENOMEM, "Could not allocate grain table cache");
	}
	return 0;
}

static int finish_sparse(struct vmdk_extent *e, int64_t file_size)
{
	uint64_t sectors = ((uint64_t)file_size + 511) / 512;

	e->next_grain = (sectors + e->grain_sectors - 1) / e->grain_sectors * e->grain_sectors;
	return 0;
}

/* ESX vmfsSparse ("COWD"): 4096 entries per grain table, no redundancy. */
static int open_vmdk3(struct vmdk_extent *e, int64_t file_size, struct vd_error *err)
{
	uint8_t h[H3_SIZE];
	uint32_t gd_entries;
	int ret;

	ret = read_at(e->file, 0, h, sizeof(h));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read header from file '%s'",
					   node_filename(e->file));
	ret = sparse_geometry(e, ld_le32(h + H3_DISK_SECTORS), ld_le32(h + H3_GRANULARITY), 4096,
			      err);
	if (ret < 0)
		return ret;
	gd_entries = ld_le32(h + H3_GD_SIZE);
	/* QEMU takes the header's count; fewer entries than the capacity
	 * needs would leave guest ranges without a table. */
	if (gd_entries < e->gd_entries || gd_entries > VMDK_MAX_GD_ENTRIES)
		return vd_error_set(err, -EINVAL, "Invalid grain directory size %" PRIu32,
				    gd_entries);
	e->gd_entries = gd_entries;
	e->meta_end = 512;
	ret = load_gd(e, (uint64_t)ld_le32(h + H3_GD_OFFSET) * 512, file_size, &e->gd, err);
	if (ret == 0)
		ret = cache_alloc(e, err);
	return ret ? ret : finish_sparse(e, file_size);
}

/* A streamOptimized image with its grain directory at the end: the footer
 * (a header copy between a footer marker and an end-of-stream marker in
 * the last three sectors) is the header. */
static int read_footer(struct vmdk_extent *e, int64_t file_size, uint8_t *h, struct vd_error *err)
{
	uint8_t f[1536];
	int ret;

	if (file_size < (int64_t)sizeof(f))
		return vd_error_set(err, -EINVAL, "Invalid footer");
	ret = read_at(e->file, (uint64_t)file_size / 512 * 512 - sizeof(f), f, sizeof(f));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Failed to read footer");
	if (ld_be32(f + 512) != VMDK4_MAGIC || ld_le32(f + 8) != 0 || ld_le32(f + 12) != 3 ||
	    ld_le64(f + 1024) != 0 || ld_le32(f + 1032) != 0 || ld_le32(f + 1036) != 0)
		return vd_error_set(err, -EINVAL, "Invalid footer");
	memcpy(h, f + 512, 512);
	return 0;
}

static int open_desc_text(struct vd_node *n, char *text, size_t len, int flags,
			  struct vd_opts *opts, struct vd_error *err);

static int open_vmdk4(struct vd_node *n, struct vmdk_extent *e, int64_t file_size, int flags,
		      bool top, struct vd_opts *opts, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;
	uint8_t h[512];
	uint64_t capacity, gd_offset, grain_offset;
	uint32_t hflags, version;
	int ret;

	ret = read_at(e->file, 0, h, sizeof(h));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read header from file '%s'",
					   node_filename(e->file));
	capacity = ld_le64(h + H4_CAPACITY);
	if (capacity == 0 && ld_le64(h + H4_DESC_OFFSET) && top) {
		/* A sparse file that only holds a descriptor naming other
		 * extents (QEMU reads it as a descriptor file). */
		uint64_t off = ld_le64(h + H4_DESC_OFFSET), size;
		char *text;

		if (off > (uint64_t)file_size / 512)
			return vd_error_set(err, -EINVAL, "Descriptor offset is outside the file");
		size = (uint64_t)file_size - off * 512;
		if (size > VMDK_MAX_DESC - 1)
			size = VMDK_MAX_DESC - 1;
		text = malloc(size + 1);
		if (!text)
			return -ENOMEM;
		ret = read_at(e->file, off * 512, text, size);
		if (ret < 0) {
			free(text);
			return vd_error_setg_errno(err, ret, "Could not read from file");
		}
		text[size] = '\0';
		s->desc_offset = off * 512;
		ret = open_desc_text(n, text, size, flags, opts, err);
		free(text);
		return ret < 0 ? ret : 1;
	}
	if (ld_le64(h + H4_GD_OFFSET) == VMDK4_GD_AT_END) {
		/* Grains appended after the footer would hide it: such a
		 * stream is read-only (QEMU writes and loses the footer). */
		if (flags & VD_OPEN_RDWR)
			return vd_error_set(err, -ENOTSUP,
					    "A streamOptimized image with its grain directory "
					    "in the footer can only be opened read-only");
		ret = read_footer(e, file_size, h, err);
		if (ret < 0)
			return ret;
		capacity = ld_le64(h + H4_CAPACITY);
	}
	version = ld_le32(h + H4_VERSION);
	hflags = ld_le32(h + H4_FLAGS);
	e->compressed = ld_le16(h + H4_COMPRESS) == VMDK4_COMPRESSION_DEFLATE;
	if (version > 3)
		return vd_error_set(err, -ENOTSUP, "Unsupported VMDK version %" PRIu32, version);
	/* VMware KB 2064959: version 3 adds changed block tracking, which
	 * readers may ignore. */
	if (version == 3 && (flags & VD_OPEN_RDWR) && !e->compressed)
		return vd_error_set(err, -EINVAL, "VMDK version 3 must be read only");
	if (ld_le32(h + H4_NUM_GTES) > 512)
		return vd_error_set(err, -EINVAL, "L2 table size too big");
	ret = sparse_geometry(e, capacity, ld_le64(h + H4_GRANULARITY), ld_le32(h + H4_NUM_GTES),
			      err);
	if (ret < 0)
		return ret;
	grain_offset = ld_le64(h + H4_GRAIN_OFFSET);
	if (grain_offset > (uint64_t)file_size / 512)
		return vd_error_set(
			err, -EINVAL, "File truncated, expecting at least %" PRIu64 " bytes",
			grain_offset > UINT64_MAX / 512 ? UINT64_MAX : grain_offset * 512);
	e->meta_end = grain_offset * 512;
	e->has_marker = hflags & VMDK4_FLAG_MARKER;
	e->zero_grain = hflags & VMDK4_FLAG_ZERO_GRAIN;
	e->version = (int)version;
	gd_offset = ld_le64(h + H4_GD_OFFSET);
	if (gd_offset > UINT64_MAX / 512)
		return vd_error_set(err, -EINVAL, "Grain directory offset is invalid");
	ret = load_gd(e, gd_offset * 512, file_size, &e->gd, err);
	if (ret == 0 && (hflags & VMDK4_FLAG_RGD)) {
		uint64_t rgd = ld_le64(h + H4_RGD_OFFSET);

		if (rgd > UINT64_MAX / 512)
			return vd_error_set(err, -EINVAL,
					    "Redundant grain directory offset is invalid");
		ret = load_gd(e, rgd * 512, file_size, &e->rgd, err);
	}
	if (ret == 0)
		ret = cache_alloc(e, err);
	if (ret < 0)
		return ret;
	if (top) {
		free(s->create_type);
		s->create_type = strdup(e->compressed ? "streamOptimized" : "monolithicSparse");
		if (!s->create_type)
			return -ENOMEM;
	}
	return finish_sparse(e, file_size);
}

/* ---- extents ----------------------------------------------------------- */

static struct vmdk_extent *add_extent(struct vmdk_state *s, struct vd_error *err)
{
	struct vmdk_extent *e;

	if (s->num_extents >= VMDK_MAX_EXTENTS) {
		vd_error_set(err, -EFBIG, "Too many extents (more than %d)", VMDK_MAX_EXTENTS);
		return NULL;
	}
	if (s->num_extents == s->cap_extents) {
		/* Doubling: a descriptor of thousands of extents stays linear. */
		int cap = s->cap_extents ? 2 * s->cap_extents : 4;

		e = realloc(s->extents, sizeof(*e) * (size_t)cap);
		if (!e) {
			vd_error_set(err, -ENOMEM, "Out of memory");
			return NULL;
		}
		s->extents = e;
		s->cap_extents = cap;
	}
	e = &s->extents[s->num_extents++];
	memset(e, 0, sizeof(*e));
	e->type = "";
	return e;
}

static void free_extent(struct vmdk_extent *e)
{
	free(e->gd);
	free(e->rgd);
	for (int i = 0; i < VMDK_GT_CACHE; i++)
		free(e->cache[i].entries);
	if (e->owned && e->file)
		vd_node_unref(e->file);
	memset(e, 0, sizeof(*e));
}

/* Add the extent's sectors to the disk: the total stays within
 * VD_MAX_LENGTH. */
static int place_extent(struct vd_node *n, struct vmdk_extent *e, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;
	uint64_t start = s->num_extents > 1 ? e[-1].start + e[-1].sectors : 0;

	if (e->sectors > (uint64_t)VD_MAX_LENGTH / 512 - start)
		return vd_error_set(err, -EFBIG,
				    "The extents add up to more than %" PRId64 " bytes",
				    (int64_t)VD_MAX_LENGTH);
	e->start = start;
	n->size = (int64_t)((start + e->sectors) * 512);
	return 0;
}

/* An extent file name from a descriptor: relative, no ".." component, no
 * control characters.  QEMU also takes absolute names; we refuse them, so
 * that an image never makes us open a file outside its directory. */
static int check_extent_name(const char *name, struct vd_error *err)
{
	const char *p = name;

	if (!*name)
		return vd_error_set(err, -EINVAL, "Empty extent file name");
	if (name[0] == '/')
		return vd_error_set(err, -EPERM,
				    "Extent file name '%s' is absolute: extents must be in the "
				    "descriptor's directory",
				    name);
	for (const char *c = name; *c; c++)
		if ((unsigned char)*c < 0x20)
			return vd_error_set(err, -EINVAL, "Invalid extent file name");
	while (*p) {
		size_t len = strcspn(p, "/");

		if (len == 2 && p[0] == '.' && p[1] == '.')
			return vd_error_set(
				err, -EPERM,
				"Extent file name '%s' leaves the descriptor's directory", name);
		p += len;
		while (*p == '/')
			p++;
	}
	return 0;
}

static int open_extent_file(struct vd_node *n, const char *fname, int idx, int flags,
			    struct vd_opts *opts, struct vd_node **out, struct vd_error *err)
{
	const char *dfile = node_filename(n->file), *slash = strrchr(dfile, '/');
	char key[48], *path = NULL;
	int ret;

	ret = check_extent_name(fname, err);
	if (ret < 0)
		return ret;
	if (n->file->drv != &vd_driver_file)
		return vd_error_set(err, -EINVAL,
				    "Cannot use relative paths with VMDK descriptor file '%s'",
				    dfile);
	if (asprintf(&path, "%.*s%s", slash ? (int)(slash - dfile + 1) : 0, dfile, fname) < 0)
		return -ENOMEM;
	snprintf(key, sizeof(key), "extents.%d.driver", idx);
	ret = vd_opts_set(opts, key, "file");
	snprintf(key, sizeof(key), "extents.%d.filename", idx);
	if (ret == 0)
		ret = vd_opts_set(opts, key, path);
	free(path);
	if (ret < 0)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	snprintf(key, sizeof(key), "extents.%d", idx);
	return vd_node_open_child(n, opts, key, "file", flags, out, err);
}

/* One extent line: ACCESS SECTORS TYPE "NAME" [OFFSET].  Returns 1 if the
 * line is one QEMU skips, 0 when parsed, -errno. */
static int parse_extent_line(const char *p, const char *end, char *access, char *type, char *name,
			     int64_t *sectors, int64_t *offset, bool *has_offset)
{
	size_t len;
	char *num_end;
	char num[24];

#define SKIP_WS()                                    \
	while (p < end && (*p == ' ' || *p == '\t')) \
	p++
#define TOKEN(dst)                                           \
	do {                                                 \
		len = 0;                                     \
		while (p < end && *p != ' ' && *p != '\t') { \
			if (len == 10)                       \
				return 1;                    \
			(dst)[len++] = *p++;                 \
		}                                            \
		(dst)[len] = '\0';                           \
	} while (0)
#define NUMBER(dst)                                                                 \
	do {                                                                        \
		len = 0;                                                            \
		while (p < end && *p != ' ' && *p != '\t' && len < sizeof(num) - 1) \
			num[len++] = *p++;                                          \
		num[len] = '\0';                                                    \
		errno = 0;                                                          \
		(dst) = strtoll(num, &num_end, 10);                                 \
		if (!len || *num_end || errno)                                      \
			return 1;                                                   \
	} while (0)

	SKIP_WS();
	TOKEN(access);
	SKIP_WS();
	NUMBER(*sectors);
	SKIP_WS();
	TOKEN(type);
	SKIP_WS();
	if (p == end || *p != '"')
		return 1;
	p++;
	len = 0;
	while (p < end && *p != '"') {
		if (len == VMDK_MAX_NAME)
			return -ENAMETOOLONG;
		name[len++] = *p++;
	}
	if (p == end)
		return 1;
	name[len] = '\0';
	p++;
	SKIP_WS();
	*has_offset = p < end;
	if (*has_offset)
		NUMBER(*offset);
	return 0;
#undef SKIP_WS
#undef TOKEN
#undef NUMBER
}

static int add_listed_extent(struct vd_node *n, const char *line, size_t llen, int flags,
			     struct vd_opts *opts, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;
	char access[11], type[11], name[VMDK_MAX_NAME + 1];
	int64_t sectors = 0, offset = -1, fsize;
	bool has_offset = false, flat;
	struct vmdk_extent *e;
	struct vd_node *f = NULL;
	uint8_t magic[4];
	int ret;

	ret = parse_extent_line(line, line + llen, access, type, name, &sectors, &offset,
				&has_offset);
	if (ret == -ENAMETOOLONG)
		return vd_error_set(err, -EINVAL, "Extent file name longer than %d bytes",
				    VMDK_MAX_NAME);
	if (ret || strcmp(access, "RW"))
		return 0;
	if (!strcmp(type, "FLAT")) {
		if (!has_offset || offset < 0)
			goto invalid;
	} else if (!strcmp(type, "VMFS")) {
		if (has_offset)
			goto invalid;
		offset = 0;
	} else if (has_offset) {
		goto invalid;
	}
	if (sectors <= 0 ||
	    (strcmp(type, "FLAT") && strcmp(type, "SPARSE") && strcmp(type, "VMFS") &&
	     strcmp(type, "VMFSSPARSE") && strcmp(type, "SESPARSE")))
		return 0;
	if (!strcmp(type, "SESPARSE"))
		return vd_error_set(err, -ENOTSUP, "seSparse extents are not supported");
	if ((uint64_t)sectors > (uint64_t)VD_MAX_LENGTH / 512 ||
	    (offset > 0 && (uint64_t)offset > (uint64_t)VD_MAX_LENGTH / 512))
		return vd_error_set(err, -EFBIG, "Extent too large: %.*s", (int)llen, line);

	ret = open_extent_file(n, name, s->num_extents, flags, opts, &f, err);
	if (ret < 0)
		return ret;
	e = add_extent(s, err);
	if (!e) {
		vd_node_unref(f);
		return err ? err->code : -ENOMEM;
	}
	e->file = f;
	e->owned = true;
	flat = !strcmp(type, "FLAT") || !strcmp(type, "VMFS");
	fsize = vd_node_size(f);
	if (fsize < 0)
		return vd_error_setg_errno(err, (int)fsize, "Could not get the size of '%s'", name);
	if (flat) {
		e->flat = true;
		e->sectors = (uint64_t)sectors;
		e->flat_offset = (uint64_t)offset * 512;
		e->type = !strcmp(type, "FLAT") ? "FLAT" : "VMFS";
	} else {
		if (fsize < 4)
			return vd_error_set(err, -EINVAL, "File is too small, not a valid image");
		ret = read_at(f, 0, magic, 4);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Could not read from file");
		if (ld_be32(magic) == VMDK4_MAGIC)
			ret = open_vmdk4(n, e, fsize, flags, false, opts, err);
		else if (ld_be32(magic) == VMDK3_MAGIC)
			ret = open_vmdk3(e, fsize, err);
		else
			ret = vd_error_set(err, -EINVAL, "Image not in VMDK format");
		if (ret < 0)
			return ret;
		/* QEMU sizes the disk by the extent headers' capacity. */
		e->type = !strcmp(type, "SPARSE") ? "SPARSE" : "VMFSSPARSE";
	}
	return place_extent(n, e, err);
invalid:
	return vd_error_set(err, -EINVAL, "Invalid extent line: %.*s", (int)llen, line);
}

/* key = value (spaces around either side, value maybe quoted). */
static bool desc_value(const char *line, size_t len, const char *key, const char **v, size_t *vlen)
{
	size_t klen = strlen(key);
	const char *p = line, *end = line + len;

	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if ((size_t)(end - p) < klen || memcmp(p, key, klen))
		return false;
	p += klen;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p == end || *p != '=')
		return false;
	p++;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (end - p >= 2 && *p == '"' && end[-1] == '"') {
		p++;
		end--;
	}
	*v = p;
	*vlen = (size_t)(end - p);
	return true;
}

static int parse_hex32(const char *v, size_t len, uint32_t *out)
{
	char buf[16], *e;
	unsigned long long x;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, v, len);
	buf[len] = '\0';
	errno = 0;
	x = strtoull(buf, &e, 16);
	if (errno || *e || x > UINT32_MAX)
		return -EINVAL;
	*out = (uint32_t)x;
	return 0;
}

/*
 * One pass over the descriptor: CID, parentCID, createType,
 * parentFileNameHint, and (with @extents) the extent lines, opened as they
 * come.  Lines end at \n (a \r before it is dropped) or at a NUL.
 */
static int parse_desc(struct vd_node *n, const char *text, size_t len, bool extents, int flags,
		      struct vd_opts *opts, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;
	const char *p = text, *end = text + strnlen(text, len);
	bool have_cid = false, have_pcid = false;
	int ret;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t llen = (size_t)((nl ? nl : end) - p);
		const char *v;
		size_t vlen;

		if (llen && p[llen - 1] == '\r')
			llen--;
		if (desc_value(p, llen, "CID", &v, &vlen) && !have_cid) {
			have_cid = parse_hex32(v, vlen, &s->cid) == 0;
		} else if (desc_value(p, llen, "parentCID", &v, &vlen) && !have_pcid) {
			have_pcid = parse_hex32(v, vlen, &s->parent_cid) == 0;
		} else if (desc_value(p, llen, "createType", &v, &vlen) && extents) {
			if (vlen > 127)
				return vd_error_set(err, -EINVAL, "invalid VMDK image descriptor");
			free(s->create_type);
			s->create_type = strndup(v, vlen);
			if (!s->create_type)
				return -ENOMEM;
		} else if (desc_value(p, llen, "parentFileNameHint", &v, &vlen)) {
			if (vlen == 0 || vlen > 1023)
				return vd_error_set(err, -EINVAL, "Invalid parentFileNameHint");
			free(s->parent_hint);
			s->parent_hint = strndup(v, vlen);
			if (!s->parent_hint)
				return -ENOMEM;
		} else if (extents && llen > 2 && memchr("RN", *p, 2)) {
			if (!s->create_type)
				return vd_error_set(err, -EINVAL, "invalid VMDK image descriptor");
			ret = add_listed_extent(n, p, llen, flags, opts, err);
			if (ret < 0)
				return ret;
		}
		p = nl ? nl + 1 : end;
	}
	if (!have_cid || !have_pcid)
		return vd_error_set(err, -EINVAL, "Could not read the %s from the descriptor",
				    have_cid ? "parentCID" : "CID");
	return 0;
}

static int keep_desc(struct vmdk_state *s, const char *text, size_t len)
{
	size_t tlen = strnlen(text, len);

	s->desc = strndup(text, tlen);
	s->desc_len = (uint32_t)tlen;
	return s->desc ? 0 : -ENOMEM;
}

static int open_desc_text(struct vd_node *n, char *text, size_t len, int flags,
			  struct vd_opts *opts, struct vd_error *err)
{
	static const char *const types[] = {"monolithicFlat",	    "vmfs",
					    "vmfsSparse",	    "seSparse",
					    "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"};
	struct vmdk_state *s = n->opaque;
	const char *p = text, *end = text + strnlen(text, len);
	bool known = false;
	int ret;

	/* createType comes before the extents in every descriptor we know;
	 * find it first so that the type is checked before files are opened. */
	while (p < end && !s->create_type) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *v;
		size_t llen = (size_t)((nl ? nl : end) - p), vlen;

		if (llen && p[llen - 1] == '\r')
			llen--;
		if (desc_value(p, llen, "createType", &v, &vlen)) {
			if (vlen > 127)
				return vd_error_set(err, -EINVAL, "invalid VMDK image descriptor");
			s->create_type = strndup(v, vlen);
			if (!s->create_type)
				return -ENOMEM;
		}
		p = nl ? nl + 1 : end;
	}
	if (!s->create_type)
		return vd_error_set(err, -EINVAL, "invalid VMDK image descriptor");
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		known |= strcmp(s->create_type, types[i]) == 0;
	if (!known)
		return vd_error_set(err, -ENOTSUP, "Unsupported image type '%s'", s->create_type);
	ret = parse_desc(n, text, len, true, flags, opts, err);
	if (ret == 0 && s->num_extents == 0)
		n->size = 0;
	return ret ? ret : keep_desc(s, text, len);
}

static void vmdk_close(struct vd_node *n)
{
	struct vmdk_state *s = n->opaque;

	for (int i = 0; i < s->num_extents; i++)
		free_extent(&s->extents[i]);
	free(s->extents);
	free(s->create_type);
	free(s->parent_hint);
	free(s->desc);
	s->extents = NULL;
	s->num_extents = s->cap_extents = 0;
	s->create_type = s->parent_hint = s->desc = NULL;
}

/* ---- the parent -------------------------------------------------------- */

static __thread int backing_depth;

static int open_parent(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;
	const char *dfile = node_filename(n->file), *slash = strrchr(dfile, '/');
	const char *name = s->parent_hint;
	char *path = NULL;
	int ret;

	if (vd_opts_has(opts, "backing")) {
		const char *v = vd_opts_peek(opts, "backing");

		if (v && (!*v || strcmp(v, "null") == 0)) {
			vd_opts_get(opts, "backing");
			return 0;
		}
		if (backing_depth >= 16)
			return vd_error_set(err, -EINVAL, "Backing chain too deep");
		backing_depth++;
		ret = vd_node_open_child(n, opts, "backing", "vmdk", flags & ~VD_OPEN_RDWR,
					 &n->backing, err);
		backing_depth--;
		return ret;
	}
	if (!name || (flags & VD_OPEN_NO_BACKING))
		return 0;
	if (strchr(name, ':'))
		return vd_error_set(err, -EINVAL,
				    "Parent file name '%s' names a protocol; give the backing "
				    "explicitly (backing.*=...)",
				    name);
	if (backing_depth >= 16)
		return vd_error_set(err, -EINVAL, "Backing chain too deep (more than 16)");
	if (name[0] == '/' || !slash)
		path = strdup(name);
	else if (asprintf(&path, "%.*s/%s", (int)(slash - dfile), dfile, name) < 0)
		path = NULL;
	if (!path)
		return -ENOMEM;
	ret = vd_opts_set(opts, "backing.driver", "vmdk");
	if (ret == 0)
		ret = vd_opts_set(opts, "backing.file.driver", "file");
	if (ret == 0)
		ret = vd_opts_set(opts, "backing.file.filename", path);
	if (ret == 0)
		ret = vd_opts_set(opts, "backing.read-only", "on");
	free(path);
	if (ret < 0)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	backing_depth++;
	ret = vd_node_open_child(n, opts, "backing", NULL, flags & ~VD_OPEN_RDWR, &n->backing, err);
	backing_depth--;
	return ret;
}

/* ---- open -------------------------------------------------------------- */

static int vmdk_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;
	int64_t file_size;
	uint8_t magic[4];
	char *text = NULL;
	size_t size;
	int ret;

	vd_co_mutex_init(&s->lock);
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Could not access file");
	if (file_size < 4)
		return vd_error_set(err, -EINVAL, "File is too small, not a valid image");
	ret = read_at(n->file, 0, magic, 4);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read from file");

	if (ld_be32(magic) == VMDK4_MAGIC || ld_be32(magic) == VMDK3_MAGIC) {
		struct vmdk_extent *e = add_extent(s, err);
		uint8_t h[512];

		if (!e)
			goto fail;
		e->file = n->file;
		if (ld_be32(magic) == VMDK3_MAGIC) {
			ret = open_vmdk3(e, file_size, err);
			if (ret == 0)
				s->create_type = strdup("vmfsSparse");
		} else {
			ret = open_vmdk4(n, e, file_size, flags, true, opts, err);
		}
		if (ret < 0)
			goto fail;
		if (ret == 1) {
			/* A descriptor in a sparse file: its extents are open;
			 * drop the placeholder (it was added first). */
			free_extent(&s->extents[0]);
			memmove(s->extents, s->extents + 1,
				sizeof(*s->extents) * (size_t)(s->num_extents - 1));
			s->num_extents--;
			for (int i = 0; i < s->num_extents; i++)
				s->extents[i].start =
					i ? s->extents[i - 1].start + s->extents[i - 1].sectors : 0;
		} else {
			ret = place_extent(n, e, err);
			if (ret < 0)
				goto fail;
			/* The embedded descriptor: QEMU reads 20 sectors at 512. */
			s->desc_offset = 512;
			ret = read_at(n->file, 0, h, sizeof(h));
			size = 20 * 512;
			text = calloc(1, size + 1);
			if (!text || ret < 0) {
				ret = ret < 0 ? ret : -ENOMEM;
				goto fail;
			}
			if ((uint64_t)file_size > 512) {
				size_t have = (uint64_t)file_size - 512 < size
						      ? (size_t)((uint64_t)file_size - 512)
						      : size;
				ret = read_at(n->file, 512, text, have);
				if (ret < 0)
					goto fail;
			}
			ret = parse_desc(n, text, size, false, flags, opts, err);
			if (ret == 0)
				ret = keep_desc(s, text, size);
			if (ret < 0)
				goto fail;
		}
	} else {
		size = (uint64_t)file_size < VMDK_MAX_DESC ? (size_t)file_size : VMDK_MAX_DESC - 1;
		text = malloc(size + 1);
		if (!text) {
			ret = -ENOMEM;
			goto fail;
		}
		ret = read_at(n->file, 0, text, size);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read from file");
			goto fail;
		}
		text[size] = '\0';
		s->desc_offset = 0;
		ret = open_desc_text(n, text, size, flags, opts, err);
		if (ret < 0)
			goto fail;
	}
	free(text);
	text = NULL;
	/* What is left of "extents" is the empty dictionary the children
	 * were taken from. */
	vd_opts_remove(opts, "extents");
	if (s->num_extents == 0 && n->size != 0) {
		ret = vd_error_set(err, -EINVAL, "No extents");
		goto fail;
	}
	ret = open_parent(n, opts, flags, err);
	if (ret < 0)
		goto fail;
	return 0;
fail:
	free(text);
	if (ret == 0)
		ret = -EINVAL;
	if (!vd_error_is_set(err))
		vd_error_setg_errno(err, ret, "Could not open the vmdk image");
	vmdk_close(n);
	return ret;
}

/* ---- the CID ----------------------------------------------------------- */

/*
 * QEMU gives the image a new random CID on the first write after each
 * open, so that deltas made against the old content notice.  We keep the
 * CID's number of hex digits, so the descriptor keeps its length and is
 * rewritten in place.  With s->lock held.
 */
int vmdk_update_cid(struct vd_node *n)
{
	struct vmdk_state *s = n->opaque;
	const char *p = s->desc, *end = s->desc + s->desc_len;
	uint32_t cid = s->cid;
	struct vd_qiov q;
	int ret;

	if (s->cid_updated || !s->desc)
		return 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p)), *v;
		size_t llen = (size_t)((nl ? nl : end) - p), vlen;

		if (llen && p[llen - 1] == '\r')
			llen--;
		if (desc_value(p, llen, "CID", &v, &vlen) && vlen >= 1 && vlen <= 8) {
			char hex[16];
			uint32_t lo = vlen == 1 ? 0 : 1u << (4 * (vlen - 1));
			uint64_t span = (vlen == 8 ? (1ull << 32) : (1ull << (4 * vlen))) - lo;

			while (cid == s->cid) {
				uint32_t r;

				if (getrandom(&r, sizeof(r), 0) != sizeof(r))
					return -EIO;
				cid = (uint32_t)(lo + r % span);
			}
			snprintf(hex, sizeof(hex), "%" PRIx32, cid);
			memcpy((char *)v, hex, vlen);
			vd_qiov_init_buf(&q, (char *)v, vlen);
			ret = vd_co_pwritev(n->file,
					    (int64_t)(s->desc_offset + (uint64_t)(v - s->desc)),
					    (int64_t)vlen, &q, 0);
			if (ret < 0)
				return ret;
			s->cid = cid;
			break;
		}
		p = nl ? nl + 1 : end;
	}
	s->cid_updated = true;
	return vd_co_flush(n->file);
}

/* ---- information ------------------------------------------------------- */

static int set_fmt(struct vd_opts *o, const char *key, const char *fmt, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), fmt, v);
	return vd_opts_set(o, key, buf);
}

static int vmdk_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;
	struct vd_opts *o = vd_opts_new();
	bool same = s->num_extents > 0;
	char key[64];
	int ret;

	if (!o)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	for (int i = 1; i < s->num_extents; i++) {
		const struct vmdk_extent *a = &s->extents[0], *b = &s->extents[i];
		same &= a->flat == b->flat && a->compressed == b->compressed &&
			(a->flat || a->grain_sectors == b->grain_sectors);
	}
	if (same && !s->extents[0].flat)
		info->cluster_size = (int64_t)s->extents[0].grain_sectors * 512;
	info->needs_compressed_writes = same && s->extents[0].compressed;
	if (s->parent_hint) {
		const char *dfile = node_filename(n->file), *slash = strrchr(dfile, '/');

		info->backing_filename = strdup(s->parent_hint);
		if (n->backing && n->backing->filename)
			info->full_backing_filename = strdup(n->backing->filename);
		else if (s->parent_hint[0] == '/' || !slash)
			info->full_backing_filename = strdup(s->parent_hint);
		else if (asprintf(&info->full_backing_filename, "%.*s/%s", (int)(slash - dfile),
				  dfile, s->parent_hint) < 0)
			info->full_backing_filename = NULL;
		info->backing_filename_format = strdup("vmdk");
	}
	ret = set_fmt(o, "cid", "%" PRIu64, s->cid);
	ret = ret ? ret : set_fmt(o, "parent-cid", "%" PRIu64, s->parent_cid);
	ret = ret ? ret : vd_opts_set(o, "create-type", s->create_type ? s->create_type : "");
	for (int i = 0; i < s->num_extents && ret == 0; i++) {
		const struct vmdk_extent *e = &s->extents[i];

		/* Key order as qemu-img prints it. */
		if (e->compressed) {
			snprintf(key, sizeof(key), "extents.%d.compressed", i);
			ret = vd_opts_set(o, key, "true");
		}
		snprintf(key, sizeof(key), "extents.%d.virtual-size", i);
		ret = ret ? ret : set_fmt(o, key, "%" PRIu64, e->sectors * 512);
		snprintf(key, sizeof(key), "extents.%d.filename", i);
		ret = ret ? ret : vd_opts_set(o, key, node_filename(e->file));
		if (!e->flat) {
			snprintf(key, sizeof(key), "extents.%d.cluster-size", i);
			ret = ret ? ret
				  : set_fmt(o, key, "%" PRIu64, (uint64_t)e->grain_sectors * 512);
		}
		snprintf(key, sizeof(key), "extents.%d.format", i);
		ret = ret ? ret : vd_opts_set(o, key, e->type);
	}
	if (ret < 0 ||
	    (s->parent_hint && (!info->backing_filename || !info->full_backing_filename ||
				!info->backing_filename_format))) {
		vd_opts_free(o);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	info->format_specific = o;
	return 0;
}

static int64_t file_allocated(struct vd_node *f)
{
	return f->drv->get_allocated_size ? f->drv->get_allocated_size(f) : -ENOTSUP;
}

static int64_t vmdk_get_allocated_size(struct vd_node *n)
{
	struct vmdk_state *s = n->opaque;
	int64_t total = file_allocated(n->file), r;

	for (int i = 0; i < s->num_extents && total >= 0; i++) {
		if (!s->extents[i].owned)
			continue;
		r = file_allocated(s->extents[i].file);
		total = r < 0 ? r : total + r;
	}
	return total;
}

/* The extent files are children the core does not know: move them with
 * the node (the core has moved n->file and n->backing). */
static void vmdk_detach_loop(struct vd_node *n)
{
	struct vmdk_state *s = n->opaque;

	for (int i = 0; i < s->num_extents; i++) {
		struct vd_node *f = s->extents[i].file;

		if (s->extents[i].owned && f->drv->detach_loop)
			f->drv->detach_loop(f);
	}
}

static int vmdk_attach_loop(struct vd_node *n, struct vd_error *err)
{
	struct vmdk_state *s = n->opaque;

	for (int i = 0; i < s->num_extents; i++) {
		struct vd_node *f = s->extents[i].file;
		int ret;

		if (!s->extents[i].owned)
			continue;
		f->loop = n->loop;
		if (f->drv->attach_loop && (ret = f->drv->attach_loop(f, err)) < 0)
			return ret;
	}
	return 0;
}

static int vmdk_co_flush(struct vd_node *n)
{
	struct vmdk_state *s = n->opaque;
	int ret = 0;

	/* The core flushes n->file; the other extent files are ours. */
	for (int i = 0; i < s->num_extents && ret == 0; i++)
		if (s->extents[i].owned)
			ret = vd_co_flush(s->extents[i].file);
	return ret;
}

static void vmdk_refresh_limits(struct vd_node *n)
{
	struct vmdk_state *s = n->opaque;

	n->limits = n->file->limits;
	for (int i = 0; i < s->num_extents; i++) {
		const struct vd_limits *l = &s->extents[i].file->limits;

		if (l->request_alignment > n->limits.request_alignment)
			n->limits.request_alignment = l->request_alignment;
		if (l->min_mem_alignment > n->limits.min_mem_alignment)
			n->limits.min_mem_alignment = l->min_mem_alignment;
		if (!s->extents[i].flat &&
		    s->extents[i].grain_sectors * 512 > n->limits.write_zeroes_alignment)
			n->limits.write_zeroes_alignment = s->extents[i].grain_sectors * 512;
	}
	n->limits.max_transfer = 0;
	n->limits.max_iov = 0;
}

/* QEMU 7.2's vmdk_probe: a sparse magic, or a text descriptor whose first
 * line that is neither a comment nor blank is "version=1".."version=3". */
static int vmdk_probe(const uint8_t *buf, size_t len, const char *filename)
{
	const uint8_t *p = buf, *end = buf + len;

	if (len < 4)
		return 0;
	if (ld_be32(buf) == VMDK3_MAGIC || ld_be32(buf) == VMDK4_MAGIC)
		return 100;
	while (p < end) {
		size_t left;

		if (*p == '#') {
			while (p < end && *p != '\n')
				p++;
			p++;
			continue;
		}
		if (*p == ' ') {
			while (p < end && *p == ' ')
				p++;
			if (p < end && *p == '\r')
				p++;
			if (p == end || *p != '\n')
				return 0;
			p++;
			continue;
		}
		left = (size_t)(end - p);
		if (left < 10 || memcmp(p, "version=", 8) != 0 || p[8] < '1' || p[8] > '3')
			return 0;
		return p[9] == '\n' || (left >= 11 && p[9] == '\r' && p[10] == '\n') ? 100 : 0;
	}
	return 0;
}

const struct vd_block_driver vd_driver_vmdk = {
	.name = "vmdk",
	.instance_size = sizeof(struct vmdk_state),
	.is_format = true,
	.references_files = true,
	.child_name = "file",
	.child_has_metadata = true,
	.create_opts = vmdk_create_opts,
	.probe = vmdk_probe,
	.open = vmdk_open,
	.close = vmdk_close,
	.create = vmdk_create,
	.co_preadv = vmdk_co_preadv,
	.co_pwritev = vmdk_co_pwritev,
	.co_pwrite_zeroes = vmdk_co_pwrite_zeroes,
	.co_flush = vmdk_co_flush,
	.co_block_status = vmdk_co_block_status,
	.get_allocated_size = vmdk_get_allocated_size,
	.get_info = vmdk_get_info,
	.refresh_limits = vmdk_refresh_limits,
	.detach_loop = vmdk_detach_loop,
	.attach_loop = vmdk_attach_loop,
	.co_check = vmdk_co_check,
};
