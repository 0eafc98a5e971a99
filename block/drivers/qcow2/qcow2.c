/* SPDX-License-Identifier: MIT */
/*
 * The qcow2 format driver: open (header and extension parsing, validated
 * once here), backing files, close, flush, discard/write-zeroes entry
 * points, image information.  See qcow2.h for the layout of the driver.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"
#include "block/drivers/qcow2/qcow2.h"
#include "block/internal.h"

#include <vdisk/trace.h>

uint64_t qcow2_be64(const void *p)
{
	const uint8_t *b = p;
	return (uint64_t)b[0] << 56 | (uint64_t)b[1] << 48 | (uint64_t)b[2] << 40 |
	       (uint64_t)b[3] << 32 | (uint64_t)b[4] << 24 | (uint64_t)b[5] << 16 |
	       (uint64_t)b[6] << 8 | b[7];
}

uint32_t qcow2_be32(const void *p)
{
	const uint8_t *b = p;
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

void qcow2_put_be64(void *p, uint64_t v)
{
	uint8_t *b = p;
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

void qcow2_put_be32(void *p, uint32_t v)
{
	uint8_t *b = p;
	for (int i = 3; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

/* --- header writes -------------------------------------------------------- */

/* qcow2.txt "Header": incompatible_features is at byte 72 (v3 only). */
int qcow2_write_incompat(struct qcow2_state *s, uint64_t incompat)
{
	uint8_t buf[8];
	struct vd_qiov q;
	int ret;

	if (s->version < 3)
		return 0;
	qcow2_put_be64(buf, incompat);
	vd_qiov_init_buf(&q, buf, 8);
	ret = vd_co_pwritev(s->node->file, 72, 8, &q, 0);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret == 0)
		s->incompat = incompat;
	return ret;
}

int qcow2_signal_corruption(struct qcow2_state *s, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!s->corrupt_reported) {
		s->corrupt_reported = true;
		if (!s->read_only) {
			vd_message(VD_MSG_ERROR,
				   "qcow2: Marking image as corrupt: %s; further corruption events "
				   "will be suppressed",
				   msg);
			/* Stop writing metadata: a read-only node from now on. */
			s->read_only = true;
			s->node->read_only = true;
			qcow2_write_incompat(s, s->incompat | QCOW2_INCOMPAT_CORRUPT);
		} else {
			vd_message(VD_MSG_ERROR,
				   "qcow2: Image is corrupt: %s; further non-fatal corruption "
				   "events will be suppressed",
				   msg);
		}
	}
	return -EIO;
}

/* Lazy refcounts (qcow2.txt "compatible_features" bit 0): the dirty bit is
 * set before the first write and cleared on a clean close.  We keep the
 * refcounts exact anyway; the bit only tells other readers to check. */
int qcow2_mark_dirty(struct qcow2_state *s)
{
	int ret;

	if (s->read_only)
		return -EROFS;
	s->data_changed = true;
	if (s->dirty_marked || !(s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) || s->version < 3)
		return 0;
	ret = qcow2_write_incompat(s, s->incompat | QCOW2_INCOMPAT_DIRTY);
	if (ret == 0)
		s->dirty_marked = true;
	return ret;
}

/* --- open ------------------------------------------------------------------- */

static const char *feature_name(struct qcow2_state *s, int type, int bit, char *buf, size_t len)
{
	/* qcow2.txt "Feature name table": type(1) bit(1) name(46). */
	for (uint32_t off = 0; off + 48 <= s->feature_table_len; off += 48) {
		const uint8_t *e = s->feature_table + off;
		if (e[0] == type && e[1] == bit) {
			snprintf(buf, len, "%.46s", (const char *)e + 2);
			return buf;
		}
	}
	snprintf(buf, len, "Unknown incompatible feature: %llx", 1ull << bit);
	return buf;
}

/* Linear in the size of the header area whatever the extensions are: a
 * crafted image may hold thousands of tiny ones (each is 8 bytes). */
static int parse_extensions(struct qcow2_state *s, const uint8_t *hdr, uint64_t start, uint64_t end,
			    struct vd_error *err)
{
	struct qcow2_ext **tail = &s->unknown_exts;
	uint64_t off = start;

	while (*tail)
		tail = &(*tail)->next;

	while (off < end) {
		uint32_t type, len;

		if (end - off < 8)
			return vd_error_set(err, -EINVAL, "Header extension too large");
		type = qcow2_be32(hdr + off);
		len = qcow2_be32(hdr + off + 4);
		off += 8;
		if (len > end - off)
			return vd_error_set(err, -EINVAL, "Header extension too large");
		if (type == QCOW2_EXT_END)
			return 0;
		switch (type) {
		case QCOW2_EXT_BACKING_FORMAT:
			if (len >= 16)
				return vd_error_set(err, -EINVAL,
						    "ERROR: ext_backing_format: len=%u too large "
						    "(>=16)",
						    len);
			free(s->backing_fmt);
			s->backing_fmt = strndup((const char *)hdr + off, len);
			if (!s->backing_fmt)
				return -ENOMEM;
			break;
		case QCOW2_EXT_FEATURE_TABLE:
			free(s->feature_table);
			s->feature_table = malloc(len ? len : 1);
			if (!s->feature_table)
				return -ENOMEM;
			memcpy(s->feature_table, hdr + off, len);
			s->feature_table_len = len;
			break;
		case QCOW2_EXT_CRYPTO:
			return vd_error_set(err, -ENOTSUP,
					    "qcow2 encryption (crypto header extension) is not "
					    "supported");
		case QCOW2_EXT_DATA_FILE:
			free(s->data_file);
			s->data_file = strndup((const char *)hdr + off, len);
			if (!s->data_file)
				return -ENOMEM;
			break;
		default: {
			/* Bitmaps and unknown extensions: kept verbatim. */
			struct qcow2_ext *e = malloc(sizeof(*e) + len);
			if (!e)
				return -ENOMEM;
			e->next = NULL;
			e->type = type;
			e->len = len;
			memcpy(e->data, hdr + off, len);
			*tail = e;
			tail = &e->next;
			break;
		}
		}
		off += ((uint64_t)len + 7) & ~7ull;
	}
	return 0;
}

/* Check that a table of @entries entries of @esize bytes at @offset is
 * cluster aligned and inside the host offset range (QEMU's
 * qcow2_validate_table). */
static int validate_table(struct qcow2_state *s, uint64_t offset, uint64_t entries, uint64_t esize,
			  uint64_t max_bytes, const char *what, struct vd_error *err)
{
	if (entries > max_bytes / esize)
		return vd_error_set(err, -EFBIG, "%s too large", what);
	if (qcow2_offset_into_cluster(s, offset))
		return vd_error_set(err, -EINVAL, "%s offset invalid", what);
	if (entries && offset < s->cluster_size)
		return vd_error_set(err, -EINVAL, "%s overlaps the image header", what);
	if (offset >= QCOW2_MAX_HOST_OFFSET || entries * esize > QCOW2_MAX_HOST_OFFSET - offset)
		return vd_error_set(err, -EINVAL, "%s offset invalid", what);
	return 0;
}

static int parse_header(struct qcow2_state *s, const uint8_t *h, uint64_t file_size, bool rw,
			bool repair, struct vd_error *err)
{
	uint64_t l1_needed, l2_coverage_bits;

	if (qcow2_be32(h) != QCOW2_MAGIC)
		return vd_error_set(err, -EINVAL, "Image is not in qcow2 format");
	s->version = qcow2_be32(h + 4);
	if (s->version < 2 || s->version > 3)
		return vd_error_set(err, -ENOTSUP, "Unsupported qcow2 version %u", s->version);
	s->backing_file_offset = qcow2_be64(h + 8);
	s->backing_file_size = qcow2_be32(h + 16);
	s->cluster_bits = qcow2_be32(h + 20);
	s->size = qcow2_be64(h + 24);
	s->crypt_method = qcow2_be32(h + 32);
	s->l1_size = qcow2_be32(h + 36);
	s->l1_offset = qcow2_be64(h + 40);
	s->reftable_offset = qcow2_be64(h + 48);
	s->reftable_clusters = qcow2_be32(h + 56);
	s->nb_snapshots = qcow2_be32(h + 60);
	s->snapshots_offset = qcow2_be64(h + 64);
	if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS || s->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
		return vd_error_set(err, -EINVAL, "Unsupported cluster size: 2^%u",
				    s->cluster_bits);
	s->cluster_size = 1ull << s->cluster_bits;
	if (s->version == 2) {
		s->incompat = s->compat = s->autoclear = 0;
		s->refcount_order = 4;
		s->header_length = QCOW2_V2_HEADER_LEN;
		s->compression_type = QCOW2_COMPRESSION_ZLIB;
	} else {
		s->incompat = qcow2_be64(h + 72);
		s->compat = qcow2_be64(h + 80);
		s->autoclear = qcow2_be64(h + 88);
		s->refcount_order = qcow2_be32(h + 96);
		s->header_length = qcow2_be32(h + 100);
		if (s->header_length < QCOW2_V3_HEADER_LEN)
			return vd_error_set(err, -EINVAL, "qcow2 header too short");
		if (s->header_length > s->cluster_size)
			return vd_error_set(err, -EINVAL, "qcow2 header exceeds cluster size");
		s->compression_type = s->header_length > 104 ? h[104] : 0;
	}
	if (s->refcount_order > 6)
		return vd_error_set(err, -EINVAL,
				    "Refcount width must be a power of two and may "
				    "not exceed 64 bits");

	/* Unknown incompatible bits are refused after the extensions (for
	 * the feature name table): see check_unknown_features(). */
	if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
		return vd_error_set(err, -ENOTSUP,
				    "qcow2 images with an external data file are not supported");
	if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
		if (s->header_length <= 104)
			return vd_error_set(err, -EINVAL,
					    "qcow2 header is too short for the compression type");
		if (s->compression_type == QCOW2_COMPRESSION_ZLIB)
			return vd_error_set(err, -EINVAL,
					    "qcow2: Compression type incompatible feature bit must "
					    "not be set for zlib");
	} else if (s->compression_type != QCOW2_COMPRESSION_ZLIB) {
		return vd_error_set(err, -EINVAL,
				    "qcow2: Compression type incompatible feature bit must be set "
				    "for a non-zlib compression type");
	}
	if (s->compression_type > QCOW2_COMPRESSION_ZSTD)
		return vd_error_set(err, -ENOTSUP, "qcow2: unknown compression type: %u",
				    s->compression_type);
#ifndef VD_HAVE_ZSTD
	if (s->compression_type == QCOW2_COMPRESSION_ZSTD)
		return vd_error_set(err, -ENOTSUP,
				    "qcow2: zstd compression is not supported by "
				    "this build");
#endif
	s->extl2 = (s->incompat & QCOW2_INCOMPAT_EXTL2) != 0;
	if (s->extl2 && s->cluster_bits < 14)
		return vd_error_set(err, -EINVAL,
				    "Extended L2 entries are only supported with "
				    "cluster sizes of at least 16384 bytes");
	/* Opened for repair, a corrupt image may be written: the check clears
	 * the bit once nothing is left to fix. */
	if ((s->incompat & QCOW2_INCOMPAT_CORRUPT) && rw && !repair)
		return vd_error_set(err, -EACCES,
				    "qcow2: Image is corrupt; cannot be opened read/write");
	if (s->crypt_method)
		return vd_error_set(err, -ENOTSUP, "qcow2 encryption is not supported");

	/* Derived geometry. */
	s->l2_entry_bytes = s->extl2 ? 16 : 8;
	s->l2_bits = s->cluster_bits - (s->extl2 ? 4 : 3);
	s->l2_entries = 1ull << s->l2_bits;
	s->sc_bits = s->extl2 ? s->cluster_bits - 5 : s->cluster_bits;
	s->sc_size = 1ull << s->sc_bits;
	s->refcount_bits = 1u << s->refcount_order;
	s->rb_bits = s->cluster_bits + 3 - s->refcount_order;
	s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
	s->csize_shift = 62 - (s->cluster_bits - 8);
	s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
	s->coffset_mask = (1ull << s->csize_shift) - 1;

	/* Size and L1 table (QEMU: l1_vm_state_index <= INT_MAX, l1_size >= it). */
	if (s->size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EFBIG, "Image is too big");
	l2_coverage_bits = s->cluster_bits + s->l2_bits;
	l1_needed =
		(s->size >> l2_coverage_bits) + ((s->size & ((1ull << l2_coverage_bits) - 1)) != 0);
	if (l1_needed > INT32_MAX)
		return vd_error_set(err, -EFBIG, "Image is too big");
	if ((uint64_t)s->l1_size * 8 > QCOW2_MAX_L1_BYTES)
		return vd_error_set(err, -EFBIG, "Active L1 table too large");
	if (s->l1_size < l1_needed)
		return vd_error_set(err, -EINVAL, "L1 table is too small");
	if (validate_table(s, s->l1_offset, s->l1_size, 8, QCOW2_MAX_L1_BYTES, "Active L1 table",
			   err) < 0)
		return err ? err->code : -EINVAL;

	/* Refcount table. */
	if (s->reftable_clusters == 0)
		return vd_error_set(err, -EINVAL, "Image does not contain a reference count table");
	if ((uint64_t)s->reftable_clusters > (QCOW2_MAX_REFTABLE_BYTES >> s->cluster_bits))
		return vd_error_set(err, -EINVAL, "Reference count table too large");
	if (validate_table(s, s->reftable_offset, (uint64_t)s->reftable_clusters * s->cluster_size,
			   1, QCOW2_MAX_REFTABLE_BYTES, "Reference count table", err) < 0)
		return err ? err->code : -EINVAL;

	/* Snapshots: not read here, but their table must be plausible. */
	if (s->nb_snapshots > 65536)
		return vd_error_set(err, -EINVAL, "Too many snapshots");
	if (s->nb_snapshots && validate_table(s, s->snapshots_offset, s->nb_snapshots, 40,
					      64ull << 20 /* entries are at least 40 bytes */,
					      "Snapshot table", err) < 0)
		return err ? err->code : -EINVAL;

	/* Backing file name location (qcow2.txt: inside the first cluster). */
	if (s->backing_file_offset) {
		if (s->backing_file_offset > s->cluster_size ||
		    s->backing_file_size > QCOW2_MAX_BACKING_NAME ||
		    s->backing_file_size > s->cluster_size - s->backing_file_offset)
			return vd_error_set(err, -EINVAL, "Invalid backing file offset");
		if (s->backing_file_offset < s->header_length)
			return vd_error_set(err, -EINVAL, "Invalid backing file offset");
	} else if (s->backing_file_size) {
		return vd_error_set(err, -EINVAL, "Invalid backing file offset");
	}
	(void)file_size;
	return 0;
}

static int check_unknown_features(struct qcow2_state *s, struct vd_error *err)
{
	/* qcow2.txt "incompatible_features": refuse bits we do not know. */
	if (s->incompat & ~QCOW2_INCOMPAT_KNOWN) {
		char names[256] = "", buf[80];
		for (int bit = 0; bit < 64; bit++) {
			if (!((s->incompat & ~QCOW2_INCOMPAT_KNOWN) >> bit & 1))
				continue;
			if (names[0])
				strncat(names, ", ", sizeof(names) - strlen(names) - 1);
			strncat(names, feature_name(s, 0, bit, buf, sizeof(buf)),
				sizeof(names) - strlen(names) - 1);
		}
		return vd_error_set(err, -ENOTSUP, "Unsupported qcow2 feature(s): %s", names);
	}
	return 0;
}

static bool looks_like_protocol(const char *name)
{
	const char *colon = strchr(name, ':');
	const char *slash = strchr(name, '/');

	if (strncmp(name, "json:", 5) == 0)
		return true;
	return colon && (!slash || colon < slash);
}

static char *resolve_backing(const char *overlay, const char *name)
{
	const char *slash;
	char *out;

	if (name[0] == '/' || !overlay || strncmp(overlay, "json:", 5) == 0 ||
	    !(slash = strrchr(overlay, '/')))
		return strdup(name);
	if (asprintf(&out, "%.*s/%s", (int)(slash - overlay), overlay, name) < 0)
		return NULL;
	return out;
}

static __thread int backing_depth;

static int open_backing(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	const char *fmt = s->backing_fmt;
	const struct vd_block_driver *drv;
	char *path = NULL, key[64];
	int ret;

	if (vd_opts_has(opts, "backing")) {
		const char *v = vd_opts_peek(opts, "backing");
		if (v && (!*v || strcmp(v, "null") == 0)) {
			vd_opts_get(opts, "backing"); /* backing: null -> none */
			return 0;
		}
		if (v) {
			/* A file name given by the user (relative to the current
			 * directory): opened like the header's, but trusted. */
			path = strdup(v);
			vd_opts_remove(opts, "backing");
			if (!path)
				return -ENOMEM;
			goto open_path;
		}
		/* Given by the user: trusted as given. */
		if (backing_depth >= QCOW2_MAX_BACKING_DEPTH)
			return vd_error_set(err, -EINVAL, "Backing chain too deep (more than %d)",
					    QCOW2_MAX_BACKING_DEPTH);
		vd_opts_set_default(opts, "backing.read-only", "on");
		backing_depth++;
		ret = vd_node_open_child(n, opts, "backing", fmt ? fmt : "qcow2",
					 flags & ~VD_OPEN_RDWR, &n->backing, err);
		backing_depth--;
		return ret;
	}
	if (!s->backing_file || (flags & VD_OPEN_NO_BACKING))
		return 0;
	if (looks_like_protocol(s->backing_file))
		return vd_error_set(err, -EINVAL,
				    "Backing file name '%s' names a protocol or a json: "
				    "specification; such names are never opened from an image "
				    "header: give the backing explicitly (backing.*=...)",
				    s->backing_file);
	if (backing_depth >= QCOW2_MAX_BACKING_DEPTH)
		return vd_error_set(err, -EINVAL, "Backing chain too deep (more than %d)",
				    QCOW2_MAX_BACKING_DEPTH);
	path = resolve_backing(n->file ? n->file->filename : NULL, s->backing_file);
	if (!path)
		return -ENOMEM;
open_path:
	if (!fmt) {
		ret = vd_probe_format(path, &fmt, err);
		if (ret < 0) {
			free(path);
			return ret;
		}
	}
	drv = vd_driver_find(fmt);
	if (!drv) {
		free(path);
		return vd_error_set(err, -EINVAL, "Unknown backing format '%s'", fmt);
	}
	ret = vd_opts_set(opts, "backing.driver", drv->name);
	if (ret == 0 && drv->child_name) {
		snprintf(key, sizeof(key), "backing.%s.driver", drv->child_name);
		ret = vd_opts_set(opts, key, vd_protocol_for_filename(path));
		snprintf(key, sizeof(key), "backing.%s.filename", drv->child_name);
		if (ret == 0)
			ret = vd_opts_set(opts, key, path);
	} else if (ret == 0) {
		ret = vd_opts_set(opts, "backing.filename", path);
	}
	if (ret == 0)
		ret = vd_opts_set(opts, "backing.read-only", "on");
	free(path);
	if (ret < 0)
		return vd_error_set(err, ret, "Out of memory");
	backing_depth++;
	ret = vd_node_open_child(n, opts, "backing", NULL, flags & ~VD_OPEN_RDWR, &n->backing, err);
	backing_depth--;
	if (ret < 0 && err && err->code == ret) {
		static const char prefix[] = "Could not open backing file: ";
		size_t len = strnlen(err->msg, sizeof(err->msg) - sizeof(prefix));
		memmove(err->msg + sizeof(prefix) - 1, err->msg, len);
		memcpy(err->msg, prefix, sizeof(prefix) - 1);
		err->msg[sizeof(prefix) - 1 + len] = '\0';
	}
	return ret;
}

struct cache_opts {
	uint64_t l2_size, rb_size, total, entry_size, clean_interval;
	bool has_l2, has_rb, has_total;
};

static int read_cache_opts(struct vd_opts *opts, struct cache_opts *c, struct vd_error *err)
{
	int ret;

	c->has_l2 = vd_opts_has(opts, "l2-cache-size");
	c->has_rb = vd_opts_has(opts, "refcount-cache-size");
	c->has_total = vd_opts_has(opts, "cache-size");
	ret = vd_opts_get_size(opts, "l2-cache-size", 0, &c->l2_size, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "refcount-cache-size", 0, &c->rb_size, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "cache-size", 0, &c->total, err);
	if (ret == 0)
		ret = vd_opts_get_size(opts, "l2-cache-entry-size", 0, &c->entry_size, err);
	if (ret == 0)
		ret = vd_opts_get_u64(opts, "cache-clean-interval", 600, &c->clean_interval, err);
	if (ret < 0)
		return ret;
	if (c->has_l2 && c->has_rb && c->has_total)
		return vd_error_set(err, -EINVAL,
				    "cache-size, l2-cache-size and "
				    "refcount-cache-size may not be set at the same "
				    "time");
	if (c->clean_interval > UINT32_MAX)
		return vd_error_set(err, -EINVAL, "Cache clean interval too big");
	return 0;
}

/* QEMU 7.2 read_cache_sizes(): the L2 cache covers the whole disk up to
 * 32 MiB; the refcount cache is 4 clusters; "cache-size" fills L2 first. */
static int setup_caches(struct qcow2_state *s, struct cache_opts *c, struct vd_error *err)
{
	uint64_t max_l2 = ((s->size + s->cluster_size - 1) >> s->cluster_bits) * s->l2_entry_bytes;
	uint64_t min_rb = 4 * s->cluster_size;
	uint64_t l2, rb;
	int ret;

	max_l2 = (max_l2 + s->cluster_size - 1) & ~(s->cluster_size - 1);
	if (max_l2 < 2 * s->cluster_size)
		max_l2 = 2 * s->cluster_size;
	if (c->has_total) {
		if (c->has_l2 && c->has_rb)
			return -EINVAL;
		if (c->has_l2) {
			l2 = c->l2_size;
			rb = c->total > l2 ? c->total - l2 : 0;
		} else if (c->has_rb) {
			rb = c->rb_size;
			l2 = c->total > rb ? c->total - rb : 0;
		} else {
			l2 = c->total > min_rb ? c->total - min_rb : 0;
			if (l2 > max_l2)
				l2 = max_l2;
			rb = c->total - l2;
		}
		if (c->has_l2 || c->has_rb) {
			if (c->total < (c->has_l2 ? c->l2_size : c->rb_size))
				return vd_error_set(err, -EINVAL, "%s may not exceed cache-size",
						    c->has_l2 ? "l2-cache-size"
							      : "refcount-cache-size");
		}
	} else {
		l2 = c->has_l2 ? c->l2_size : (max_l2 < (32u << 20) ? max_l2 : (32u << 20));
		rb = c->has_rb ? c->rb_size : min_rb;
	}
	if (l2 > max_l2)
		l2 = max_l2;
	if (rb < min_rb)
		rb = min_rb;
	if (l2 > (1ull << 40) || rb > (1ull << 40))
		return vd_error_set(err, -EINVAL, "Cache size too big");

	s->l2_slice_size = c->entry_size
				   ? (uint32_t)c->entry_size
				   : (uint32_t)(s->cluster_size < 4096 ? s->cluster_size : 4096);
	if (c->entry_size && (c->entry_size < 512 || c->entry_size > s->cluster_size ||
			      (c->entry_size & (c->entry_size - 1))))
		return vd_error_set(err, -EINVAL,
				    "L2 cache entry size must be a power of two between 512 and "
				    "the cluster size (%" PRIu64 ")",
				    s->cluster_size);
	s->l2_slice_entries = s->l2_slice_size / s->l2_entry_bytes;
	if (l2 < 2 * (uint64_t)s->l2_slice_size)
		l2 = 2 * (uint64_t)s->l2_slice_size;
	ret = qcow2_cache_init(&s->l2_cache, (int)(l2 / s->l2_slice_size), s->l2_slice_size,
			       VD_EV_L2_LOAD, VD_EV_L2_UPDATE, QCOW2_OL_ACTIVE_L2);
	if (ret == 0)
		ret = qcow2_cache_init(&s->rb_cache, (int)(rb / s->cluster_size),
				       (uint32_t)s->cluster_size, VD_EV_REFBLOCK_LOAD,
				       VD_EV_REFBLOCK_UPDATE, QCOW2_OL_REFCOUNT_BLOCK);
	if (ret < 0)
		return vd_error_set(err, ret, "Could not allocate metadata cache");
	return 0;
}

/* cache-clean-interval: a periodic pass over both caches.  Cache users
 * hold s->lock; a pass that finds it taken waits for the next period. */
static void clean_caches(void *opaque)
{
	struct qcow2_state *s = opaque;

	if (!s->lock.locked) {
		vd_trace(qcow2_cache_clean, "node %p", (void *)s->node);
		qcow2_cache_clean_unused(&s->l2_cache);
		qcow2_cache_clean_unused(&s->rb_cache);
	}
	vd_timer_mod(s->clean_timer, vd_clock_ns() + (int64_t)s->clean_interval_ns);
}

/* The cache-clean timer runs on the node's loop: it moves with the node. */
static void qcow2_detach_loop(struct vd_node *n)
{
	struct qcow2_state *s = n->opaque;

	if (s->clean_timer) {
		vd_timer_free(s->clean_timer);
		s->clean_timer = NULL;
	}
}

static int qcow2_attach_loop(struct vd_node *n, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;

	if (!s->clean_interval_ns)
		return 0;
	s->clean_timer = vd_timer_new(n->loop, clean_caches, s);
	if (!s->clean_timer)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	vd_timer_mod(s->clean_timer, vd_clock_ns() + (int64_t)s->clean_interval_ns);
	return 0;
}

static void free_state(struct qcow2_state *s)
{
	if (s->clean_timer)
		vd_timer_free(s->clean_timer);
	qcow2_cache_destroy(&s->l2_cache);
	qcow2_cache_destroy(&s->rb_cache);
	qcow2_ol_destroy(&s->ol);
	s->ol_ready = false;
	qcow2_bitmaps_free_live(s);
	free(s->l1);
	free(s->reftable);
	free(s->backing_file);
	free(s->backing_fmt);
	free(s->data_file);
	free(s->feature_table);
	while (s->unknown_exts) {
		struct qcow2_ext *e = s->unknown_exts;
		s->unknown_exts = e->next;
		free(e);
	}
	s->l1 = s->reftable = NULL;
	s->backing_file = s->backing_fmt = s->data_file = NULL;
	s->feature_table = NULL;
}

/*
 * The bitmap directory of the bitmaps extension (qcow2.txt "Bitmaps
 * extension"), for the overlap index.  As QEMU, only when the autoclear
 * bit says the extension is valid: otherwise QEMU ignores the bitmaps and
 * their clusters may be freed as leaks.  Out-of-range values protect
 * nothing here; check reports them.
 */
static void find_bitmap_directory(struct qcow2_state *s)
{
	const struct qcow2_ext *e = s->unknown_exts;
	uint64_t size, off;

	while (e && e->type != QCOW2_EXT_BITMAPS)
		e = e->next;
	if (!e || e->len < 24 || s->version < 3 || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) ||
	    qcow2_be32(e->data) == 0)
		return;
	size = qcow2_be64(e->data + 8);
	off = qcow2_be64(e->data + 16);
	if (size == 0 || size > (64ull << 20) || qcow2_offset_into_cluster(s, off) ||
	    off >= QCOW2_MAX_HOST_OFFSET || size > QCOW2_MAX_HOST_OFFSET - off)
		return;
	s->ol_bitmap_dir_offset = off;
	s->ol_bitmap_dir_bytes = size;
}

static int qcow2_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	struct cache_opts copts;
	uint8_t first[512];
	uint8_t *hdr = NULL;
	struct vd_qiov q;
	int64_t file_size;
	bool rw = (flags & VD_OPEN_RDWR) != 0;
	int ret;

	s->node = n;
	vd_co_mutex_init(&s->lock);
	ret = read_cache_opts(opts, &copts, err);
	if (ret == 0)
		ret = qcow2_overlap_opts(s, opts, err);
	if (ret < 0)
		return ret;
	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	file_size = vd_node_size(n->file);
	s->fresh_from = (uint64_t)(file_size > 0 ? file_size : 0);
	if (file_size < 0)
		return vd_error_setg_errno(err, (int)file_size, "Could not get the image size");

	vd_qiov_init_buf(&q, first, sizeof(first));
	ret = vd_co_preadv(n->file, 0, sizeof(first), &q, 0);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read qcow2 header");
	s->read_only = !rw;
	ret = parse_header(s, first, (uint64_t)file_size, rw, (flags & VD_OPEN_CHECK) != 0, err);
	if (ret < 0)
		goto fail;

	/* The whole first cluster: extensions and the backing file name. */
	hdr = malloc(s->cluster_size);
	if (!hdr) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	vd_qiov_init_buf(&q, hdr, s->cluster_size);
	ret = vd_co_preadv(n->file, 0, (int64_t)s->cluster_size, &q, 0);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read qcow2 header");
		goto fail;
	}
	ret = parse_extensions(s, hdr, s->header_length,
			       s->backing_file_offset ? s->backing_file_offset : s->cluster_size,
			       err);
	if (ret < 0) {
		if (!vd_error_is_set(err))
			vd_error_set(err, ret, "Could not read header extensions");
		goto fail;
	}
	ret = check_unknown_features(s, err);
	if (ret < 0)
		goto fail;
	find_bitmap_directory(s);
	if (s->backing_file_offset && s->backing_file_size) {
		s->backing_file =
			strndup((const char *)hdr + s->backing_file_offset, s->backing_file_size);
		if (!s->backing_file) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
	}
	free(hdr);
	hdr = NULL;

	/* L1 table: at most 32 MiB, validated by parse_header. */
	s->l1 = calloc(s->l1_size ? s->l1_size : 1, sizeof(uint64_t));
	if (!s->l1) {
		ret = vd_error_set(err, -ENOMEM, "Could not allocate L1 table");
		goto fail;
	}
	if (s->l1_size) {
		uint8_t *buf = malloc((size_t)s->l1_size * 8);
		if (!buf) {
			ret = vd_error_set(err, -ENOMEM, "Could not allocate L1 table");
			goto fail;
		}
		vd_qiov_init_buf(&q, buf, (size_t)s->l1_size * 8);
		ret = vd_co_preadv(n->file, (int64_t)s->l1_offset, (int64_t)s->l1_size * 8, &q, 0);
		for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++)
			s->l1[i] = qcow2_be64(buf + 8 * i);
		free(buf);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read L1 table");
			goto fail;
		}
	}
	ret = qcow2_load_reftable(s, err);
	if (ret < 0)
		goto fail;
	ret = setup_caches(s, &copts, err);
	if (ret < 0)
		goto fail;
	if (copts.clean_interval && n->loop) {
		s->clean_interval_ns = copts.clean_interval * 1000000000ull;
		s->clean_timer = vd_timer_new(n->loop, clean_caches, s);
		if (!s->clean_timer) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
		vd_timer_mod(s->clean_timer, vd_clock_ns() + (int64_t)s->clean_interval_ns);
	}

	s->read_only = !rw;
	if (rw) {
		/* The overlap index, before anything is written.  QEMU fails the
		 * open on an unreadable snapshot table except when opened for
		 * check, which reads (and repairs) the table itself. */
		s->ol_check_open = (flags & VD_OPEN_CHECK) != 0;
		ret = qcow2_overlap_rebuild(s);
		if (ret < 0 && !s->ol_broken)
			ret = 0;
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not read snapshots");
			goto fail;
		}
	}
	s->bitmaps_valid_at_open = s->version >= 3 && (s->autoclear & QCOW2_AUTOCLEAR_BITMAPS);

	if (rw && (s->incompat & QCOW2_INCOMPAT_DIRTY)) {
		/* Lazy refcounts were in use when the image was last closed: the
		 * refcounts may be stale, rebuild them as QEMU does on a
		 * read-write open (qcow2.txt "incompatible_features" bit 0).
		 * Valid bitmaps are still valid: their clusters are counted. */
		struct vd_check_result res;
		ret = qcow2_check_locked(s, &res, VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS);
		if (ret < 0 || res.check_errors || res.corruptions) {
			ret = vd_error_setg_errno(err, ret < 0 ? ret : -EIO,
						  "Could not repair dirty image");
			goto fail;
		}
	}

	if (rw && s->version >= 3 && s->autoclear) {
		/* Autoclear bits we do not maintain are cleared, so that nobody
		 * trusts what they describe after our writes (qcow2.txt
		 * "autoclear_features").  The bitmaps bit stays when the bitmaps
		 * are loaded to be kept up to date (bitmap-ops.c), and for an
		 * open for check, which changes no data and leaves them alone. */
		uint64_t orig = s->autoclear, keep = orig & QCOW2_AUTOCLEAR_BITMAPS;

		s->autoclear = keep;
		if (keep && !(flags & VD_OPEN_CHECK)) {
			struct vd_error berr = {0};

			if (qcow2_bitmaps_load_live(s, &berr) < 0) {
				vd_message(VD_MSG_WARNING,
					   "qcow2: the bitmaps could not be loaded (%s): they are "
					   "no longer valid",
					   berr.msg);
				keep = 0;
			}
		}
		s->autoclear = keep;
		if (orig != keep) {
			uint8_t a[8];

			qcow2_put_be64(a, keep);
			vd_qiov_init_buf(&q, a, 8);
			ret = vd_co_pwritev(n->file, 88, 8, &q, 0);
			if (ret == 0)
				ret = vd_co_flush(n->file);
			if (ret < 0) {
				vd_error_setg_errno(err, ret, "Could not update qcow2 header");
				goto fail;
			}
		}
	}

	ret = open_backing(n, opts, flags, err);
	if (ret < 0)
		goto fail;

	n->size = (int64_t)s->size;
	n->supported_write_flags = 0;
	n->supported_zero_flags = VD_REQ_MAY_UNMAP;
	return 0;
fail:
	/* Bitmaps loaded (flagged in use on disk) before the open failed, e.g.
	 * on a missing backing file: nothing was written through them, clear
	 * the flags again rather than leave them inconsistent. */
	if (s->bitmaps_live)
		qcow2_bitmaps_store_live(s);
	free(hdr);
	free_state(s);
	return ret;
}

static void close_entry(void *opaque)
{
	struct qcow2_state *s = opaque;
	int ret;

	if (s->read_only)
		return;
	ret = qcow2_cache_write_back(s, &s->l2_cache);
	/* The data the bitmaps describe is on disk: now the bitmaps (a
	 * failure leaves them flagged in use, as a crash would). */
	if (ret == 0 && s->bitmaps_live)
		qcow2_bitmaps_store_live(s);
	else
		qcow2_bitmaps_free_live(s);
	if (ret == 0)
		ret = qcow2_cache_write_back(s, &s->rb_cache);
	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	if (ret == 0 && s->dirty_marked)
		qcow2_write_incompat(s, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
	/* Give back the space preallocated ahead and never used. */
	if (ret == 0 && s->prealloc_end && s->fresh_from < s->prealloc_end)
		vd_co_truncate(s->node->file, (int64_t)s->fresh_from, false, VD_PREALLOC_OFF, NULL);
}

static void qcow2_close(struct vd_node *n)
{
	struct qcow2_state *s = n->opaque;

	vd_co_run_sync(close_entry, s);
	free_state(s);
}

static int qcow2_co_flush(struct vd_node *n)
{
	struct qcow2_state *s = n->opaque;
	int ret;

	vd_co_mutex_lock(&s->lock);
	ret = qcow2_cache_write_back(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_write_back(s, &s->rb_cache);
	vd_co_mutex_unlock(&s->lock);
	vd_debug_event(n->file, VD_EV_FLUSH_TO_DISK);
	return ret;
}

static int qcow2_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	struct qcow2_state *s = n->opaque;
	int ret;

	s->data_changed = true;
	qcow2_bitmaps_track(s, (uint64_t)offset, (uint64_t)bytes);
	/* v2 has no zero flag: unallocating would expose the backing file. */
	if (s->version < 3 && n->backing)
		return -ENOTSUP;
	/* Whole clusters only, or the partial last cluster (QEMU). */
	if (qcow2_offset_into_cluster(s, (uint64_t)offset) ||
	    (qcow2_offset_into_cluster(s, (uint64_t)(offset + bytes)) &&
	     (uint64_t)(offset + bytes) != s->size))
		return -ENOTSUP;
	vd_co_mutex_lock(&s->lock);
	ret = qcow2_mark_dirty(s);
	if (ret == 0)
		ret = qcow2_wait_and_discard(s, (uint64_t)offset, (uint64_t)bytes);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

static int qcow2_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct qcow2_state *s = n->opaque;
	uint64_t end = (uint64_t)(offset + bytes);
	int ret;

	s->data_changed = true;
	qcow2_bitmaps_track(s, (uint64_t)offset, (uint64_t)bytes);
	if (s->version < 3)
		return -ENOTSUP;
	if (((uint64_t)offset & (s->sc_size - 1)) || ((end & (s->sc_size - 1)) && end != s->size))
		return -ENOTSUP;
	vd_co_mutex_lock(&s->lock);
	ret = qcow2_mark_dirty(s);
	if (ret == 0)
		ret = qcow2_wait_and_zero(s, (uint64_t)offset, (uint64_t)bytes, flags);
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

static void qcow2_refresh_limits(struct vd_node *n)
{
	struct qcow2_state *s = n->opaque;
	const struct vd_limits *c = &n->file->limits;

	n->limits.request_alignment = 1;
	n->limits.min_mem_alignment = c->min_mem_alignment;
	n->limits.opt_mem_alignment = c->opt_mem_alignment;
	n->limits.max_iov = c->max_iov;
	n->limits.discard_alignment = (uint32_t)s->cluster_size;
	n->limits.write_zeroes_alignment = (uint32_t)s->sc_size;
}

struct bitmap_read {
	struct qcow2_state *s;
	struct qcow2_bitmap *bm;
	int ret;
};

static void bitmap_read_entry(void *opaque)
{
	struct bitmap_read *r = opaque;

	r->ret = qcow2_read_bitmaps(r->s, &r->bm);
}

/* QEMU's Qcow2BitmapInfo list: "bitmaps": [{"flags": [...], "name": ...,
 * "granularity": ...}], only when there are bitmaps.  A damaged directory
 * is left out here (check reports it). */
static int add_bitmap_info(struct qcow2_state *s, struct vd_opts *o)
{
	struct bitmap_read r = {.s = s};
	char key[64], val[32];
	int ret = vd_co_run_sync(bitmap_read_entry, &r);

	if (ret < 0 || r.ret <= 0)
		return ret == -ENOMEM || r.ret == -ENOMEM ? -ENOMEM : 0;
	for (int i = 0; i < r.ret && ret == 0; i++) {
		int nflags = 0;

		snprintf(key, sizeof(key), "bitmaps.%d.flags.x", i);
		ret = vd_opts_set(o, key, "");
		if (ret == 0)
			vd_opts_remove(o, key); /* an empty list to start with */
		if (ret == 0 && (r.bm[i].flags & QCOW2_BITMAP_IN_USE)) {
			snprintf(key, sizeof(key), "bitmaps.%d.flags.%d", i, nflags++);
			ret = vd_opts_set(o, key, "in-use");
		}
		if (ret == 0 && (r.bm[i].flags & QCOW2_BITMAP_AUTO)) {
			snprintf(key, sizeof(key), "bitmaps.%d.flags.%d", i, nflags++);
			ret = vd_opts_set(o, key, "auto");
		}
		snprintf(key, sizeof(key), "bitmaps.%d.name", i);
		ret = ret ? ret : vd_opts_set(o, key, r.bm[i].name);
		snprintf(key, sizeof(key), "bitmaps.%d.granularity", i);
		snprintf(val, sizeof(val), "%llu", 1ull << r.bm[i].granularity_bits);
		ret = ret ? ret : vd_opts_set(o, key, val);
	}
	qcow2_free_bitmaps(r.bm, r.ret);
	return ret;
}

static int qcow2_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct qcow2_state *s = n->opaque;
	struct vd_opts *o = vd_opts_new();
	char buf[32];
	int ret = 0;

	if (!o)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	info->cluster_size = (int64_t)s->cluster_size;
	info->has_dirty_flag = true;
	info->dirty_flag = (s->incompat & QCOW2_INCOMPAT_DIRTY) != 0;
	if (s->backing_file) {
		info->backing_filename = strdup(s->backing_file);
		info->full_backing_filename =
			n->backing && n->backing->filename
				? strdup(n->backing->filename)
				: resolve_backing(n->file ? n->file->filename : NULL,
						  s->backing_file);
		if (!info->backing_filename || !info->full_backing_filename)
			ret = -ENOMEM;
	}
	if (s->backing_fmt && !(info->backing_filename_format = strdup(s->backing_fmt)))
		ret = -ENOMEM;
	ret = ret ? ret : vd_opts_set(o, "compat", s->version >= 3 ? "1.1" : "0.10");
	ret = ret ? ret
		  : vd_opts_set(o, "compression-type",
				s->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib");
	if (s->version >= 3 && !ret)
		ret = vd_opts_set(o, "lazy-refcounts",
				  (s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS) ? "true" : "false");
	if (s->version >= 3 && !ret)
		ret = add_bitmap_info(s, o);
	snprintf(buf, sizeof(buf), "%u", s->refcount_bits);
	ret = ret ? ret : vd_opts_set(o, "refcount-bits", buf);
	if (s->version >= 3 && !ret) {
		ret = vd_opts_set(o, "corrupt",
				  (s->incompat & QCOW2_INCOMPAT_CORRUPT) ? "true" : "false");
		if (!ret)
			ret = vd_opts_set(o, "extended-l2", s->extl2 ? "true" : "false");
	}
	if (ret < 0) {
		vd_opts_free(o);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	info->format_specific = o;
	return 0;
}

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
	if (len >= 8 && qcow2_be32(buf) == QCOW2_MAGIC && qcow2_be32(buf + 4) >= 2)
		return 100;
	return 0;
}

const struct vd_block_driver vd_driver_qcow2 = {
	.name = "qcow2",
	.instance_size = sizeof(struct qcow2_state),
	.is_format = true,
	.references_files = true,
	.child_name = "file",
	.child_has_metadata = true,
	.create_opts = qcow2_create_opts,
	.create_any_protocol = true,
	.probe = qcow2_probe,
	.open = qcow2_open,
	.close = qcow2_close,
	.detach_loop = qcow2_detach_loop,
	.attach_loop = qcow2_attach_loop,
	.create = qcow2_create,
	.co_preadv = qcow2_co_preadv,
	.co_pwritev = qcow2_co_pwritev,
	.co_flush = qcow2_co_flush,
	.co_pdiscard = qcow2_co_pdiscard,
	.co_pwrite_zeroes = qcow2_co_pwrite_zeroes,
	.co_block_status = qcow2_co_block_status,
	.get_info = qcow2_get_info,
	.refresh_limits = qcow2_refresh_limits,
	.co_truncate = qcow2_co_truncate,
	.co_check = qcow2_co_check,
	.co_amend = qcow2_co_amend,
	.co_bitmap = qcow2_co_bitmap,
	.snapshot_list = qcow2_snapshot_list,
	.snapshot_create = qcow2_snapshot_create,
	.snapshot_goto = qcow2_snapshot_goto,
	.snapshot_delete = qcow2_snapshot_delete,
	.snapshot_load_tmp = qcow2_snapshot_load_tmp,
	.co_change_backing_file = qcow2_co_change_backing_file,
	.co_make_empty = qcow2_co_make_empty,
	.co_measure = qcow2_co_measure,
};
