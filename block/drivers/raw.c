/* SPDX-License-Identifier: MIT */
/*
 * The "raw" format: the guest sees the bytes of its "file" child, optionally
 * a window of them given by "offset" and "size" (QEMU 7.2 block/raw-format.c
 * semantics: size must be a multiple of 512, offset need not be; the window
 * must lie inside the child; a raw node with "size" cannot be resized).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"
#include "block/internal.h"

struct raw_state {
	int64_t offset;
	int64_t size;
	bool has_size;
	/* Probed: writes to the first VD_PROBE_BYTES are checked, one at a
	 * time, so that two of them cannot together build a header. */
	struct vd_co_mutex probe_lock;
};

static int raw_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct raw_state *s = n->opaque;
	uint64_t offset, size;
	int64_t real_size;
	int ret;

	/* Read our keys first so that errors in them come before I/O. */
	ret = vd_opts_get_size(opts, "offset", 0, &offset, err);
	if (ret < 0)
		return ret;
	s->has_size = vd_opts_has(opts, "size");
	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret < 0)
		return ret;
	if (offset > (uint64_t)VD_MAX_LENGTH || size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Parameter '%s' is too large",
				    offset > (uint64_t)VD_MAX_LENGTH ? "offset" : "size");
	if (s->has_size && size % 512)
		return vd_error_set(err, -EINVAL, "Specified size is not multiple of 512");

	ret = vd_node_open_child(n, opts, "file", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;

	real_size = vd_node_size(n->file);
	if (real_size < 0)
		return vd_error_setg_errno(err, (int)real_size, "Could not get the image size");
	if ((int64_t)offset > real_size)
		return vd_error_set(err, -EINVAL,
				    "Offset (%" PRIu64 ") cannot be greater than size of the "
				    "containing file (%" PRId64 ")",
				    offset, real_size);
	if (s->has_size && (uint64_t)(real_size - (int64_t)offset) < size)
		return vd_error_set(err, -EINVAL,
				    "The sum of offset (%" PRIu64 ") and size (%" PRIu64 ") has to "
				    "be smaller or equal to the  actual size of the containing "
				    "file (%" PRId64 ")",
				    offset, size, real_size);
	s->offset = (int64_t)offset;
	s->size = s->has_size ? (int64_t)size : real_size - s->offset;
	vd_co_mutex_init(&s->probe_lock);
	n->size = s->size;
	/* Flags pass down unchanged; the child's node emulates what its driver
	 * lacks (FUA with a flush of the child only). */
	n->supported_write_flags = VD_REQ_FUA;
	n->supported_zero_flags = VD_REQ_FUA | VD_REQ_MAY_UNMAP;
	return 0;
}

/*
 * Inherit the child's limits.  An offset the child's request alignment does
 * not divide would make our aligned requests unaligned below anyway, and a
 * window end it does not divide would make our padding reach bytes outside
 * the window (which a read-modify-write would then rewrite): in both cases
 * leave alignment to the child alone, so padding happens once, below.
 */
static void raw_refresh_limits(struct vd_node *n)
{
	struct raw_state *s = n->opaque;
	const struct vd_limits *c = &n->file->limits;

	n->limits.request_alignment = c->request_alignment;
	n->limits.min_mem_alignment = c->min_mem_alignment;
	n->limits.opt_mem_alignment = c->opt_mem_alignment;
	n->limits.max_transfer = c->max_transfer;
	n->limits.max_iov = c->max_iov;
	if (c->request_alignment > 1 &&
	    (s->offset % c->request_alignment || (s->has_size && s->size % c->request_alignment)))
		n->limits.request_alignment = 1;
}

static int raw_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags)
{
	struct raw_state *s = n->opaque;

	assert(offset >= 0 && bytes > 0);
	/* QEMU's raw format raises read_aio on its child before data reads. */
	vd_debug_event(n->file, VD_EV_READ_AIO);
	return vd_co_preadv(n->file, s->offset + offset, bytes, qiov, flags);
}

/*
 * The probing attack: a guest writes a qcow2 header (naming a host file as
 * its backing file) into block 0 of a raw image opened without a format,
 * and the next open probes it as qcow2.  As QEMU's raw format does for a
 * probed image (bs->probed), refuse with -EPERM a write that would make
 * the image probe as anything but raw.  QEMU makes every request on such
 * an image 512-byte aligned and probes the first sector of a write to it;
 * this keeps the node's alignment and probes what the probe area (the
 * first VD_PROBE_BYTES, the same sector) would hold after the request, read
 * and overlaid, so a header cannot be assembled from pieces written apart.
 *
 * Holds s->probe_lock on return 0, with @area (VD_PROBE_BYTES) holding the
 * new content; @qiov NULL means zeroes are written (write_zeroes, discard).
 */
static int vd_coroutine_fn probe_area_check(struct vd_node *n, int64_t offset, int64_t bytes,
					    const struct vd_qiov *qiov, uint8_t *area)
{
	struct raw_state *s = n->opaque;
	const struct vd_block_driver *drv;
	int64_t have = s->size < VD_PROBE_BYTES ? s->size : VD_PROBE_BYTES;
	int64_t head = VD_PROBE_BYTES - offset < bytes ? VD_PROBE_BYTES - offset : bytes;
	struct vd_qiov q;
	int ret;

	vd_co_mutex_lock(&s->probe_lock);
	memset(area, 0, VD_PROBE_BYTES);
	if (have > 0) {
		vd_qiov_init_buf(&q, area, (size_t)have);
		ret = vd_co_preadv(n->file, s->offset, have, &q, 0);
		if (ret < 0)
			goto fail;
	}
	if (qiov)
		vd_qiov_to_buf(qiov, 0, area + offset, (size_t)head);
	else
		memset(area + offset, 0, (size_t)head);
	vd_probe_buffer(area, VD_PROBE_BYTES, NULL, &drv);
	if (drv == n->drv)
		return 0;
	ret = -EPERM;
fail:
	vd_co_mutex_unlock(&s->probe_lock);
	return ret;
}

static bool in_probe_area(const struct vd_node *n, int64_t offset, int64_t bytes)
{
	return n->probed && offset < VD_PROBE_BYTES && bytes > 0;
}

static int raw_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct raw_state *s = n->opaque;
	struct vd_qiov checked;
	uint8_t *area;
	int64_t head;
	int ret;

	assert(offset >= 0);
	vd_debug_event(n->file, VD_EV_WRITE_AIO);
	if (!in_probe_area(n, offset, bytes))
		return vd_co_pwritev(n->file, s->offset + offset, bytes, qiov, flags);

	area = vd_memalign(4096, VD_PROBE_BYTES);
	if (!area)
		return -ENOMEM;
	ret = probe_area_check(n, offset, bytes, qiov, area);
	if (ret < 0) {
		free(area);
		return ret;
	}
	/* Write the bytes that were checked, not the caller's buffer again:
	 * a guest may change it meanwhile. */
	head = VD_PROBE_BYTES - offset < bytes ? VD_PROBE_BYTES - offset : bytes;
	vd_qiov_init(&checked, qiov->niov + 1);
	ret = vd_qiov_add(&checked, area + offset, (size_t)head);
	if (ret == 0 && bytes > head)
		ret = vd_qiov_concat_slice(&checked, qiov, (size_t)head, (size_t)(bytes - head));
	if (ret == 0)
		ret = vd_co_pwritev(n->file, s->offset + offset, bytes, &checked, flags);
	vd_co_mutex_unlock(&s->probe_lock);
	vd_qiov_destroy(&checked);
	free(area);
	return ret;
}

/* Nothing of our own to write back; like QEMU's bdrv_co_flush, tell the
 * child a flush is coming (blkdebug's flush_to_disk).  The core then flushes
 * the child. */
static int raw_co_flush(struct vd_node *n)
{
	vd_debug_event(n->file, VD_EV_FLUSH_TO_DISK);
	return 0;
}

/* Zeroes can complete a header too ("QED" + one byte is qed once that byte
 * is zero; QEMU refuses that through its read-modify-write of the sector),
 * and discarded blocks may read back as zeroes: both are checked as writes
 * of zeroes. */
static int raw_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	struct raw_state *s = n->opaque;
	uint8_t *area;
	int ret;

	if (!in_probe_area(n, offset, bytes))
		return vd_co_pdiscard(n->file, s->offset + offset, bytes);
	area = vd_memalign(4096, VD_PROBE_BYTES);
	if (!area)
		return -ENOMEM;
	ret = probe_area_check(n, offset, bytes, NULL, area);
	if (ret == 0) {
		ret = vd_co_pdiscard(n->file, s->offset + offset, bytes);
		vd_co_mutex_unlock(&s->probe_lock);
	}
	free(area);
	return ret;
}

static int raw_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct raw_state *s = n->opaque;
	uint8_t *area;
	int ret;

	if (!in_probe_area(n, offset, bytes))
		return vd_co_pwrite_zeroes(n->file, s->offset + offset, bytes, flags);
	area = vd_memalign(4096, VD_PROBE_BYTES);
	if (!area)
		return -ENOMEM;
	ret = probe_area_check(n, offset, bytes, NULL, area);
	if (ret == 0) {
		ret = vd_co_pwrite_zeroes(n->file, s->offset + offset, bytes, flags);
		vd_co_mutex_unlock(&s->probe_lock);
	}
	free(area);
	return ret;
}

static int raw_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file)
{
	struct raw_state *s = n->opaque;
	int ret;

	/* *map comes back in the child's coordinates, which is what it means. */
	ret = vd_co_block_status(n->file, s->offset + offset, bytes, pnum, map, file);
	if (ret < 0)
		return ret;
	if (*pnum == 0) {
		/* The child ended (it shrank under us): reads give zeroes. */
		*pnum = bytes;
		*map = s->offset + offset;
		*file = n->file;
		return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
	}
	return ret & ~(VD_BLOCK_EOF | VD_BLOCK_ALLOCATED);
}

static int raw_co_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
			   struct vd_error *err)
{
	struct raw_state *s = n->opaque;
	int ret;

	/* QEMU's raw_co_truncate: a window with a size is fixed; an offset is
	 * kept and the child sized to offset + size. */
	if (s->has_size)
		return vd_error_set(err, -ENOTSUP, "Cannot resize fixed-size raw disks");
	if (VD_MAX_LENGTH - s->offset < size)
		return vd_error_set(err, -EINVAL, "Disk size too large for the chosen offset");
	ret = vd_co_truncate(n->file, s->offset + size, exact, prealloc, err);
	if (ret < 0)
		return ret;
	s->size = size;
	n->size = size;
	return 0;
}

/* The bytes sit at s->offset in the file, unchanged. */
static int raw_host_range(struct vd_node *n, int64_t offset, int64_t bytes, int *fd,
			  int64_t *host_offset)
{
	struct raw_state *s = n->opaque;

	return vd_node_host_range(n->file, s->offset + offset, bytes, fd, host_offset);
}

/* The union of the protocols' options; raw_create() checks them against the
 * protocol it uses. */
static const char *const raw_create_opts[] = {"preallocation", "nocow", "cluster_size", NULL};

/* QEMU's raw creates through the protocol that the name selects (rbd:,
 * not only files), with the protocol's own options (cluster_size for rbd). */
static int raw_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	const struct vd_block_driver *proto = vd_driver_find(vd_protocol_for_filename(filename));

	if (!proto)
		return vd_error_set(err, -ENOTSUP, "Unknown protocol '%s'",
				    vd_protocol_for_filename(filename));
	for (const char *const *k = raw_create_opts; *k; k++) {
		/* Without create, the fallback takes preallocation (off). */
		bool known = !proto->create && !strcmp(*k, "preallocation");
		if (!vd_opts_has(opts, *k))
			continue;
		for (const char *const *pk = proto->create_opts; !known && pk && *pk; pk++)
			known = strcmp(*pk, *k) == 0;
		if (!known)
			return vd_error_set(err, -EINVAL, "Invalid parameter '%s'", *k);
	}
	return vd_protocol_create(filename, opts, err);
}

/* QEMU's raw_get_info: the protocol's cluster size (an RBD object). */
static int raw_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	struct vd_image_info child = {0};
	int ret;

	if (!n->file->drv->get_info)
		return 0;
	ret = n->file->drv->get_info(n->file, &child, err);
	info->cluster_size = child.cluster_size;
	vd_image_info_cleanup(&child);
	return ret;
}

/*
 * Snapshots of the protocol (rbd), when raw is a plain window onto all of
 * it: QEMU's bdrv_snapshot_fallback to the filtered child.
 */
static struct vd_node *raw_snapshot_child(struct vd_node *n)
{
	struct raw_state *s = n->opaque;

	return s->offset == 0 && !s->has_size ? n->file : NULL;
}

static int raw_snapshot_list(struct vd_node *n, struct vd_snapshot_info **out)
{
	struct vd_node *c = raw_snapshot_child(n);

	return c && c->drv->snapshot_list ? c->drv->snapshot_list(c, out) : -ENOTSUP;
}

static int raw_snapshot_create(struct vd_node *n, const struct vd_snapshot_info *sn,
			       struct vd_error *err)
{
	struct vd_node *c = raw_snapshot_child(n);

	return c && c->drv->snapshot_create ? c->drv->snapshot_create(c, sn, err) : -ENOTSUP;
}

static int raw_snapshot_goto(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	struct vd_node *c = raw_snapshot_child(n);
	int ret;

	if (!c || !c->drv->snapshot_goto)
		return -ENOTSUP;
	ret = c->drv->snapshot_goto(c, id_or_name, err);
	if (ret == 0) {
		((struct raw_state *)n->opaque)->size = c->size;
		n->size = c->size;
	}
	return ret;
}

static int raw_snapshot_delete(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	struct vd_node *c = raw_snapshot_child(n);

	return c && c->drv->snapshot_delete ? c->drv->snapshot_delete(c, id_or_name, err)
					    : -ENOTSUP;
}

/* Anything is raw: the lowest score, as QEMU's raw_probe. */
static int raw_probe(const uint8_t *buf, size_t len, const char *filename)
{
	return 1;
}

/* qemu-img measure for raw (QEMU's raw_measure): every byte of the disk
 * counts, allocated or not. */
static int raw_co_measure(struct vd_opts *opts, struct vd_node *in, struct vd_measure_info *info,
			  struct vd_error *err)
{
	uint64_t size;
	int ret;

	vd_opts_get(opts, "preallocation");
	vd_opts_get(opts, "nocow");
	vd_opts_get(opts, "cluster_size");
	if (in) {
		int64_t len = vd_node_size(in);

		if (len < 0)
			return vd_error_setg_errno(err, (int)len, "Unable to get image size");
		size = (uint64_t)len;
	} else {
		ret = vd_opts_get_size(opts, "size", 0, &size, err);
		if (ret < 0)
			return ret;
		size = (size + 511) & ~511ull;
	}
	info->required = info->fully_allocated = size;
	return 0;
}

const struct vd_block_driver vd_driver_raw = {
	.name = "raw",
	.instance_size = sizeof(struct raw_state),
	.is_format = true,
	.child_name = "file",
	.create_opts = raw_create_opts,
	.create_any_protocol = true,
	.co_measure = raw_co_measure,
	.probe = raw_probe,
	.open = raw_open,
	.create = raw_create,
	.co_preadv = raw_co_preadv,
	.co_pwritev = raw_co_pwritev,
	.co_flush = raw_co_flush,
	.co_pdiscard = raw_co_pdiscard,
	.co_pwrite_zeroes = raw_co_pwrite_zeroes,
	.co_block_status = raw_co_block_status,
	.host_range = raw_host_range,
	.co_truncate = raw_co_truncate,
	/* get_allocated_size NULL: the child's. */
	.refresh_limits = raw_refresh_limits,
	.get_info = raw_get_info,
	.snapshot_list = raw_snapshot_list,
	.snapshot_create = raw_snapshot_create,
	.snapshot_goto = raw_snapshot_goto,
	.snapshot_delete = raw_snapshot_delete,
};
