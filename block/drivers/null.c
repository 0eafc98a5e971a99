/* SPDX-License-Identifier: MIT */
/*
 * "null-co" and "null-aio": protocol drivers with no storage, for
 * benchmarks (QEMU 7.2 block/null.c).  Writes are discarded; null-co
 * completes in the caller's coroutine, null-aio after one trip through the
 * loop, like QEMU's bottom half.  Options as QEMU's: "size" (default 1 GiB),
 * "latency-ns" (default 0), "read-zeroes" (default off).
 *
 * Deviation: with read-zeroes=off QEMU leaves the read buffer untouched,
 * which hands whatever was in it (a guest's or another request's memory) to
 * the reader.  We zero it anyway; the option then only changes what
 * block_status reports (zeroes with it on, data with it off), as in QEMU.
 */
#include <assert.h>
#include <errno.h>
#include <string.h>

#include "block/drivers.h"

struct null_state {
	int64_t latency_ns;
	bool read_zeroes;
	bool is_aio;
};

static int null_open_common(struct vd_node *n, struct vd_opts *opts, bool is_aio,
			    struct vd_error *err)
{
	struct null_state *s = n->opaque;
	const char *prefix = is_aio ? "null-aio://" : "null-co://";
	const char *filename;
	uint64_t size, latency;
	int ret;

	s->is_aio = is_aio;
	/* QEMU: "The only allowed filename for this driver is 'null-co://'". */
	filename = vd_opts_get(opts, "filename");
	if (filename && *filename && strcmp(filename, prefix) != 0)
		return vd_error_set(err, -EINVAL,
				    "The only allowed filename for this driver is '%s'", prefix);
	ret = vd_opts_get_size(opts, "size", UINT64_C(1) << 30, &size, err);
	if (ret < 0)
		return ret;
	if (size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Parameter 'size' is too large");
	ret = vd_opts_get_u64(opts, "latency-ns", 0, &latency, err);
	if (ret < 0)
		return ret;
	if (latency > INT64_MAX)
		return vd_error_set(err, -EINVAL, "latency-ns is invalid");
	ret = vd_opts_get_bool(opts, "read-zeroes", false, &s->read_zeroes, err);
	if (ret < 0)
		return ret;
	s->latency_ns = (int64_t)latency;
	n->size = (int64_t)size;
	n->supported_zero_flags = VD_REQ_MAY_UNMAP;
	return 0;
}

static int null_co_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	return null_open_common(n, opts, false, err);
}

static int null_aio_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	return null_open_common(n, opts, true, err);
}

/* Every request: wait the configured latency, or one loop trip for null-aio. */
static void null_complete(struct vd_node *n)
{
	struct null_state *s = n->opaque;

	if (s->latency_ns)
		vd_co_sleep_ns(s->latency_ns);
	else if (s->is_aio)
		vd_co_yield_to_loop();
}

static int null_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	assert(qiov->size == (size_t)bytes);
	vd_qiov_memset(qiov, 0, 0, (size_t)bytes);
	null_complete(n);
	return 0;
}

static int null_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   int flags)
{
	null_complete(n);
	return 0;
}

static int null_co_flush(struct vd_node *n)
{
	null_complete(n);
	return 0;
}

/* Discards and zero writes cost nothing: there is nothing to change. */
static int null_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	null_complete(n);
	return 0;
}

static int null_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	null_complete(n);
	return 0;
}

static int null_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
				int64_t *map, struct vd_node **file)
{
	struct null_state *s = n->opaque;

	*pnum = bytes;
	*map = offset;
	*file = n;
	return (s->read_zeroes ? VD_BLOCK_ZERO : VD_BLOCK_DATA) | VD_BLOCK_OFFSET_VALID;
}

/* QEMU's null_allocated_file_size: nothing is stored. */
static int64_t null_get_allocated_size(struct vd_node *n)
{
	return 0;
}

#define NULL_DRIVER_COMMON                                                                         \
	.instance_size = sizeof(struct null_state), .co_preadv = null_co_preadv,                   \
	.co_pwritev = null_co_pwritev, .co_flush = null_co_flush, .co_pdiscard = null_co_pdiscard, \
	.co_pwrite_zeroes = null_co_pwrite_zeroes, .co_block_status = null_co_block_status,        \
	.get_allocated_size = null_get_allocated_size

const struct vd_block_driver vd_driver_null_co = {
	.name = "null-co",
	.open = null_co_open,
	NULL_DRIVER_COMMON,
};

const struct vd_block_driver vd_driver_null_aio = {
	.name = "null-aio",
	.open = null_aio_open,
	NULL_DRIVER_COMMON,
};
