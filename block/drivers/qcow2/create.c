/* SPDX-License-Identifier: MIT */
/*
 * qcow2 image creation, laid out as qemu-img 7.2 lays it out: header
 * cluster (header, extensions, backing file name), refcount table in
 * cluster 1, its first refcount block in cluster 2, then the L1 table,
 * then (preallocation=metadata) each L2 table followed by the data clusters
 * it maps.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/drivers.h"
#include "block/drivers/qcow2/qcow2.h"
#include "block/internal.h"

const char *const qcow2_create_opts[] = {
	"compat",	  "cluster_size", "refcount_bits",
	"lazy_refcounts", "extended_l2",  "compression_type",
	"preallocation",  "backing_file", "backing_fmt",
	"data_file",	  NULL,
};

struct create_params {
	uint64_t size, cluster_size, refcount_bits;
	int version;
	bool lazy, extl2;
	int compression;
	int prealloc;
	const char *backing_file, *backing_fmt;
};

/* Feature name table as QEMU writes it (qcow2.txt "Feature name table"). */
static const struct {
	uint8_t type, bit;
	const char *name;
} features[] = {
	{0, 0, "dirty bit"},	    {0, 1, "corrupt bit"},	   {0, 2, "external data file"},
	{0, 3, "compression type"}, {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
	{2, 0, "bitmaps"},	    {2, 1, "raw external data"},
};

static size_t put_ext(uint8_t *buf, size_t off, uint32_t type, const void *data, uint32_t len)
{
	qcow2_put_be32(buf + off, type);
	qcow2_put_be32(buf + off + 4, len);
	if (len)
		memcpy(buf + off + 8, data, len);
	return off + 8 + ((len + 7u) & ~7u);
}

/* Build the header cluster. Returns 0 or -EINVAL if it does not fit. */
static int build_header(const struct create_params *p, uint32_t cluster_bits, uint8_t *h)
{
	uint64_t cs = 1ull << cluster_bits;
	size_t off;
	uint64_t incompat = 0;

	memset(h, 0, cs);
	qcow2_put_be32(h, QCOW2_MAGIC);
	qcow2_put_be32(h + 4, (uint32_t)p->version);
	qcow2_put_be32(h + 20, cluster_bits);
	qcow2_put_be64(h + 48, cs); /* refcount table in cluster 1 */
	qcow2_put_be32(h + 56, 1);
	if (p->version >= 3) {
		uint32_t order = 0;
		while ((1ull << order) < p->refcount_bits)
			order++;
		if (p->compression != QCOW2_COMPRESSION_ZLIB)
			incompat |= QCOW2_INCOMPAT_COMPRESSION;
		if (p->extl2)
			incompat |= QCOW2_INCOMPAT_EXTL2;
		qcow2_put_be64(h + 72, incompat);
		qcow2_put_be64(h + 80, p->lazy ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
		qcow2_put_be32(h + 96, order);
		qcow2_put_be32(h + 100, 112);
		h[104] = (uint8_t)p->compression;
		off = 112;
	} else {
		off = 72;
	}
	/* Extensions in QEMU's order: backing format, feature table (v3). */
	if (p->backing_file && p->backing_fmt)
		off = put_ext(h, off, QCOW2_EXT_BACKING_FORMAT, p->backing_fmt,
			      (uint32_t)strlen(p->backing_fmt));
	/* qemu-img 7.2 leaves the table out of clusters of 4 KiB and less. */
	if (p->version >= 3 && cs > 4096) {
		uint8_t table[sizeof(features) / sizeof(features[0]) * 48];
		memset(table, 0, sizeof(table));
		for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
			table[48 * i] = features[i].type;
			table[48 * i + 1] = features[i].bit;
			strncpy((char *)table + 48 * i + 2, features[i].name, 46);
		}
		if (off + 8 + sizeof(table) > cs)
			return -EINVAL;
		off = put_ext(h, off, QCOW2_EXT_FEATURE_TABLE, table, sizeof(table));
	}
	off = put_ext(h, off, QCOW2_EXT_END, NULL, 0);
	if (p->backing_file) {
		size_t len = strlen(p->backing_file);
		if (len > QCOW2_MAX_BACKING_NAME || off + len > cs)
			return -EINVAL;
		memcpy(h + off, p->backing_file, len);
		qcow2_put_be64(h + 8, off);
		qcow2_put_be32(h + 16, (uint32_t)len);
	}
	return 0;
}

struct create_job {
	struct vd_node *n;
	const struct create_params *p;
	int ret;
};

/* After the bare image opened: refcount the first three clusters, add the
 * L1 table and the size (QEMU: qcow2_alloc_clusters, then truncate). */
static void create_entry(void *opaque)
{
	struct create_job *j = opaque;
	struct qcow2_state *s = j->n->opaque;
	struct vd_node *file = j->n->file;
	uint64_t cs = s->cluster_size;
	uint64_t cover = cs << s->l2_bits;
	uint64_t l1_size = (j->p->size + cover - 1) / cover;
	uint8_t hdr[16];
	struct vd_qiov q;
	int64_t off;
	int ret;

	vd_co_mutex_lock(&s->lock);
	off = qcow2_alloc_clusters(s, 3 * cs);
	ret = off < 0 ? (int)off : 0;
	if (ret == 0 && l1_size) {
		off = qcow2_alloc_clusters(s, l1_size * 8);
		ret = off < 0 ? (int)off : 0;
		if (ret == 0)
			ret = qcow2_cache_flush(s, &s->rb_cache);
		if (ret == 0)
			ret = vd_co_pwrite_zeroes(file, off, (int64_t)(l1_size * 8), 0);
		if (ret == 0)
			ret = vd_co_flush(file);
		if (ret == 0) {
			/* qcow2.txt "Header": l1_size (36), l1_table_offset (40). */
			qcow2_put_be32(hdr, (uint32_t)l1_size);
			qcow2_put_be64(hdr + 4, (uint64_t)off);
			vd_qiov_init_buf(&q, hdr, 12);
			ret = vd_co_pwritev(file, 36, 12, &q, 0);
		}
		if (ret == 0) {
			uint64_t *l1 = calloc(l1_size, sizeof(uint64_t));
			if (!l1) {
				ret = -ENOMEM;
			} else {
				free(s->l1);
				s->l1 = l1;
				s->l1_size = (uint32_t)l1_size;
				s->l1_offset = (uint64_t)off;
			}
		}
	}
	if (ret == 0) {
		qcow2_put_be64(hdr, j->p->size);
		vd_qiov_init_buf(&q, hdr, 8);
		ret = vd_co_pwritev(file, 24, 8, &q, 0);
		s->size = j->p->size;
		j->n->size = (int64_t)j->p->size;
	}
	/* preallocation=metadata and above: every cluster gets a host cluster
	 * (an L2 table, then the data clusters it maps), zero-filled on disk. */
	if (ret == 0 && j->p->prealloc != VD_PREALLOC_OFF) {
		uint64_t pos = 0, end_host = 0;
		while (pos < j->p->size && ret == 0) {
			uint64_t i, chunk = cover - (pos & (cover - 1));
			void *slice;
			int64_t host;
			if (chunk > j->p->size - pos)
				chunk = j->p->size - pos;
			ret = qcow2_get_l2_slice(s, pos, true, &slice, &i);
			if (ret < 0)
				break;
			qcow2_cache_put(&s->l2_cache, slice);
			uint64_t ncl = (chunk + cs - 1) / cs;
			host = qcow2_alloc_clusters(s, ncl * cs);
			if (host < 0) {
				ret = (int)host;
				break;
			}
			ret = qcow2_cache_set_dependency(s, &s->l2_cache, &s->rb_cache);
			for (uint64_t k = 0; k < ncl && ret == 0; k++) {
				uint64_t g = pos + k * cs;
				ret = qcow2_get_l2_slice(s, g, false, &slice, &i);
				if (ret < 0)
					break;
				qcow2_set_l2_entry(s, slice, i,
						   ((uint64_t)host + k * cs) | QCOW2_OFLAG_COPIED);
				qcow2_set_l2_bitmap(s, slice, i, 0xffffffffull);
				qcow2_cache_mark_dirty(&s->l2_cache, slice);
				qcow2_cache_put(&s->l2_cache, slice);
			}
			end_host = (uint64_t)host + ncl * cs;
			pos += chunk;
		}
		if (ret == 0 && end_host) {
			struct vd_error e = {0};
			ret = vd_co_truncate(file, (int64_t)end_host, false,
					     j->p->prealloc == VD_PREALLOC_METADATA
						     ? VD_PREALLOC_OFF
						     : (enum vd_prealloc)j->p->prealloc,
					     &e);
			if (ret == -ENOTSUP)
				ret = 0;
		}
	}
	if (ret == 0)
		ret = qcow2_cache_write_back(s, &s->l2_cache);
	if (ret == 0)
		ret = qcow2_cache_write_back(s, &s->rb_cache);
	if (ret == 0)
		ret = vd_co_flush(file);
	vd_co_mutex_unlock(&s->lock);
	j->ret = ret;
}

static int parse_params(struct vd_opts *opts, struct create_params *p, struct vd_error *err)
{
	static const char *const compress_names[] = {"zlib", "zstd", NULL};
	const char *compat;
	int ret;

	memset(p, 0, sizeof(*p));
	ret = vd_opts_get_size(opts, "size", 0, &p->size, err);
	if (ret < 0)
		return ret;
	if (vd_opts_has(opts, "data_file"))
		return vd_error_set(err, -ENOTSUP,
				    "qcow2 images with an external data file are not supported");
	compat = vd_opts_get(opts, "compat");
	p->version = 3;
	if (compat) {
		if (!strcmp(compat, "0.10") || !strcmp(compat, "v2"))
			p->version = 2;
		else if (!strcmp(compat, "1.1") || !strcmp(compat, "v3"))
			p->version = 3;
		else
			return vd_error_set(err, -EINVAL, "Invalid parameter '%s'", compat);
	}
	ret = vd_opts_get_size(opts, "cluster_size", 65536, &p->cluster_size, err);
	if (ret == 0)
		ret = vd_opts_get_u64(opts, "refcount_bits", 16, &p->refcount_bits, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "lazy_refcounts", false, &p->lazy, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "extended_l2", false, &p->extl2, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "compression_type", compress_names, 0, &p->compression,
				       err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "preallocation", vd_prealloc_names, VD_PREALLOC_OFF,
				       &p->prealloc, err);
	if (ret < 0)
		return ret;
	p->backing_file = vd_opts_get(opts, "backing_file");
	p->backing_fmt = vd_opts_get(opts, "backing_fmt");

	if (p->size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EFBIG, "Image size is too large");
	p->size = (p->size + 511) & ~511ull;
	if (p->cluster_size < 512 || p->cluster_size > (2u << 20) ||
	    (p->cluster_size & (p->cluster_size - 1)))
		return vd_error_set(err, -EINVAL,
				    "Cluster size must be a power of two between "
				    "512 and 2048k");
	if (p->refcount_bits > 64 || !p->refcount_bits ||
	    (p->refcount_bits & (p->refcount_bits - 1)))
		return vd_error_set(err, -EINVAL,
				    "Refcount width must be a power of two and may "
				    "not exceed 64 bits");
	if (p->version < 3 && p->refcount_bits != 16)
		return vd_error_set(err, -EINVAL,
				    "Different refcount widths than 16 bits require "
				    "compatibility level 1.1 or above (use compat=1.1 "
				    "or greater)");
	if (p->version < 3 && p->lazy)
		return vd_error_set(err, -EINVAL,
				    "Lazy refcounts only supported with "
				    "compatibility level 1.1 and above (use compat=1.1 "
				    "or greater)");
	if (p->version < 3 && p->extl2)
		return vd_error_set(err, -EINVAL,
				    "Extended L2 entries are only supported with "
				    "compatibility level 1.1 and above (use compat=1.1 "
				    "or greater)");
	if (p->extl2 && p->cluster_size < 16384)
		return vd_error_set(err, -EINVAL,
				    "Extended L2 entries are only supported with "
				    "cluster sizes of at least 16384 bytes");
	if (p->version < 3 && p->compression != QCOW2_COMPRESSION_ZLIB)
		return vd_error_set(err, -EINVAL,
				    "Non-zlib compression type is only supported "
				    "with compatibility level 1.1 and above (use "
				    "compat=1.1 or greater)");
#ifndef VD_HAVE_ZSTD
	if (p->compression == QCOW2_COMPRESSION_ZSTD)
		return vd_error_set(err, -ENOTSUP,
				    "zstd compression is not supported by this "
				    "build");
#endif
	if (p->backing_fmt && !p->backing_file)
		return vd_error_set(err, -EINVAL,
				    "Backing format cannot be used without backing "
				    "file");
	if (p->backing_file && p->prealloc != VD_PREALLOC_OFF && !p->extl2)
		return vd_error_set(err, -EINVAL,
				    "Backing file and preallocation can only be "
				    "used at the same time if extended_l2 is on");
	if (p->backing_file && strlen(p->backing_file) > QCOW2_MAX_BACKING_NAME)
		return vd_error_set(err, -EINVAL, "Backing file name too long");
	return 0;
}

int qcow2_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	struct create_params p;
	uint32_t cluster_bits = 0;
	uint8_t *buf = NULL;
	struct vd_opts *fopts = NULL, *oopts = NULL;
	const struct vd_block_driver *proto;
	char fsize[32];
	struct vd_node *n = NULL;
	struct create_job j = {0};
	uint64_t cs;
	int ret;

	ret = parse_params(opts, &p, err);
	if (ret < 0)
		return ret;
	while ((1ull << cluster_bits) < p.cluster_size)
		cluster_bits++;
	cs = p.cluster_size;

	/* The protocol file, empty; another protocol (rbd:) cannot grow by
	 * plain writes outside a format, so it starts at the header's size. */
	proto = vd_driver_find(vd_protocol_for_filename(filename));
	if (!proto)
		return vd_error_set(err, -ENOTSUP, "Unknown protocol '%s'",
				    vd_protocol_for_filename(filename));
	fopts = vd_opts_new();
	snprintf(fsize, sizeof(fsize), "%" PRIu64, proto == &vd_driver_file ? 0 : 3 * cs);
	if (!fopts || vd_opts_set(fopts, "size", fsize) < 0) {
		vd_opts_free(fopts);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	ret = vd_protocol_create(filename, fopts, err);
	vd_opts_free(fopts);
	if (ret < 0)
		return ret;

	/* Header cluster, refcount table (cluster 1) -> empty block (cluster 2). */
	buf = calloc(3, cs);
	if (!buf)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = build_header(&p, cluster_bits, buf);
	if (ret < 0) {
		free(buf);
		return vd_error_set(err, -EINVAL, "Header extensions do not fit in one cluster");
	}
	qcow2_put_be64(buf + cs, 2 * cs);
	if (proto != &vd_driver_file) {
		struct vd_node *pn = NULL;
		ret = vd_node_open(filename, proto->name, NULL, VD_OPEN_RDWR, &pn, err);
		if (ret == 0) {
			ret = vd_node_pwrite(pn, 0, buf, (int64_t)(3 * cs), 0);
			if (ret >= 0)
				ret = vd_node_flush(pn);
			vd_node_unref(pn);
			if (ret < 0)
				vd_error_setg_errno(err, ret, "Could not write qcow2 header");
		}
		free(buf);
		if (ret < 0)
			return ret;
	} else {
		int fd = open(filename, O_WRONLY | O_CLOEXEC);
		ssize_t w;
		if (fd < 0) {
			free(buf);
			return vd_error_setg_errno(err, -errno, "Could not open '%s'", filename);
		}
		w = pwrite(fd, buf, 3 * cs, 0);
		ret = w == (ssize_t)(3 * cs) ? 0 : (w < 0 ? -errno : -EIO);
		close(fd);
		free(buf);
		if (ret < 0)
			return vd_error_setg_errno(err, ret, "Could not write qcow2 header");
	}

	/* Open what we have (without the backing file) and finish through the
	 * driver's own allocation code. */
	oopts = vd_opts_new();
	if (!oopts)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	ret = vd_node_open(filename, "qcow2", oopts, VD_OPEN_RDWR | VD_OPEN_NO_BACKING, &n, err);
	vd_opts_free(oopts);
	if (ret < 0)
		return ret;
	j.n = n;
	j.p = &p;
	ret = vd_co_run_sync(create_entry, &j);
	if (ret == 0)
		ret = j.ret;
	vd_node_unref(n);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not create qcow2 image '%s'", filename);
	return 0;
}
