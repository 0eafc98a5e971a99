/* SPDX-License-Identifier: MIT */
/*
 * The "cloop" format (Linux compressed loopback, V2.0), read only: what
 * QEMU 7.2's block/cloop.c reads.  See docs/formats.md ("cloop").
 *
 *   128 bytes of shell script, then big-endian: block size (32 bits),
 *   number of blocks n (32 bits), n + 1 64-bit file offsets; block i is the
 *   zlib stream between offsets i and i + 1, inflating to one block.
 *
 * CVE-2014-0144/0145 were this header: the block size is a non-zero
 * multiple of 512 up to 64 MiB, the offsets table is at most 512 MiB (QEMU's
 * limits) and must lie in the file, offsets must not decrease, and no
 * compressed block may be larger than twice the maximum block size or end
 * past the end of the file.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "block/drivers.h"
#include "block/drivers/backing.h"
#include "block/drivers/byteorder.h"
#include "block/internal.h"

#define CLOOP_MAX_BLOCK_SIZE (64u << 20)
#define CLOOP_MAX_OFFSETS_BYTES (512u << 20)
#define CLOOP_HEADER_BYTES 136

struct cloop_state {
	struct vd_co_mutex lock;
	uint32_t block_size, n_blocks;
	uint64_t *offsets;
	uint64_t max_compressed;
	uint8_t *compressed, *block; /* allocated at the first read */
	uint32_t current; /* block held in s->block; n_blocks: none */
};

static void cloop_close(struct vd_node *n)
{
	struct cloop_state *s = n->opaque;

	free(s->offsets);
	free(s->compressed);
	free(s->block);
	s->offsets = NULL;
	s->compressed = s->block = NULL;
}

static int cloop_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct cloop_state *s = n->opaque;
	uint8_t h[8];
	uint64_t offsets_bytes;
	int64_t file_size;
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
		return vd_error_setg_errno(err, (int)file_size, "Invalid file size");
	if (file_size < CLOOP_HEADER_BYTES)
		return vd_error_set(err, -EINVAL, "Image not in cloop format (file too short)");
	ret = vd_format_pread(n, 128, h, sizeof(h));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not read the cloop header");
	s->block_size = ld_be32(h);
	s->n_blocks = ld_be32(h + 4);
	/* QEMU's checks, in its order and words. */
	if (s->block_size % 512)
		return vd_error_set(err, -EINVAL,
				    "block_size %" PRIu32 " must be a multiple of 512",
				    s->block_size);
	if (s->block_size == 0)
		return vd_error_set(err, -EINVAL, "block_size cannot be zero");
	if (s->block_size > CLOOP_MAX_BLOCK_SIZE)
		return vd_error_set(err, -EINVAL, "block_size %" PRIu32 " must be %u MB or less",
				    s->block_size, CLOOP_MAX_BLOCK_SIZE >> 20);
	if (s->n_blocks > (UINT32_MAX - 1) / 8)
		return vd_error_set(err, -EINVAL, "n_blocks %" PRIu32 " must be %u or less",
				    s->n_blocks, (UINT32_MAX - 1) / 8);
	offsets_bytes = ((uint64_t)s->n_blocks + 1) * 8;
	if (offsets_bytes > CLOOP_MAX_OFFSETS_BYTES)
		return vd_error_set(err, -EINVAL,
				    "image requires too many offsets, try increasing block size");
	if ((uint64_t)file_size - CLOOP_HEADER_BYTES < offsets_bytes)
		return vd_error_set(err, -EINVAL, "cloop offsets table is outside the file");
	s->offsets = malloc(offsets_bytes);
	if (!s->offsets)
		return vd_error_set(err, -ENOMEM, "Could not allocate the cloop offsets");
	ret = vd_format_pread(n, CLOOP_HEADER_BYTES, s->offsets, offsets_bytes);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not read the cloop offsets");
		goto fail;
	}
	for (uint64_t i = 0; i <= s->n_blocks; i++) {
		uint64_t size;

		s->offsets[i] = ld_be64((const uint8_t *)&s->offsets[i]);
		if (i == 0)
			continue;
		if (s->offsets[i] < s->offsets[i - 1]) {
			ret = vd_error_set(err, -EINVAL,
					   "offsets not monotonically increasing at index %" PRIu64
					   ", image file is corrupt",
					   i);
			goto fail;
		}
		size = s->offsets[i] - s->offsets[i - 1];
		/* Worst-case compression may grow a block: QEMU allows 2x. */
		if (size > 2ull * CLOOP_MAX_BLOCK_SIZE) {
			ret = vd_error_set(err, -EINVAL,
					   "invalid compressed block size at index %" PRIu64
					   ", image file is corrupt",
					   i);
			goto fail;
		}
		if (size > s->max_compressed)
			s->max_compressed = size;
	}
	/* Ours: a block ending past the file is a truncated image. */
	if (s->n_blocks && s->offsets[s->n_blocks] > (uint64_t)file_size) {
		ret = vd_error_set(err, -EINVAL,
				   "cloop block %" PRIu32 " ends past the end of the file",
				   s->n_blocks - 1);
		goto fail;
	}
	s->current = s->n_blocks;
	n->size = (int64_t)s->n_blocks * s->block_size;
	return 0;
fail:
	cloop_close(n);
	return ret;
}

/* Inflate block @i into s->block.  With s->lock. */
static int load_block(struct vd_node *n, uint32_t i)
{
	struct cloop_state *s = n->opaque;
	uint64_t len = s->offsets[i + 1] - s->offsets[i];
	z_stream z = {0};
	int ret, zr;

	if (s->current == i)
		return 0;
	if (!s->block && !(s->block = malloc(s->block_size)))
		return -ENOMEM;
	if (!s->compressed && !(s->compressed = malloc(s->max_compressed + 1)))
		return -ENOMEM;
	s->current = s->n_blocks;
	ret = vd_format_pread(n, s->offsets[i], s->compressed, len);
	if (ret < 0)
		return ret;
	if (inflateInit(&z) != Z_OK)
		return -ENOMEM;
	z.next_in = s->compressed;
	z.avail_in = (uInt)len;
	z.next_out = s->block;
	z.avail_out = s->block_size;
	zr = inflate(&z, Z_FINISH);
	ret = zr == Z_STREAM_END && z.total_out == s->block_size ? 0 : -EIO;
	inflateEnd(&z);
	if (ret == 0)
		s->current = i;
	return ret;
}

static int cloop_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   int flags)
{
	struct cloop_state *s = n->opaque;
	size_t done = 0;
	int ret = 0;

	vd_co_mutex_lock(&s->lock);
	while (bytes > 0 && ret == 0) {
		uint64_t in = (uint64_t)offset % s->block_size;
		int64_t chunk = (int64_t)(s->block_size - in);

		if (chunk > bytes)
			chunk = bytes;
		ret = load_block(n, (uint32_t)((uint64_t)offset / s->block_size));
		if (ret == 0)
			vd_qiov_from_buf(qiov, done, s->block + in, (size_t)chunk);
		offset += chunk;
		bytes -= chunk;
		done += (size_t)chunk;
	}
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

/* QEMU's probe: the V2.0 shell header, over as many bytes as there are. */
static int cloop_probe(const uint8_t *buf, size_t len, const char *filename)
{
	static const char magic[] = "#!/bin/sh\n#V2.0 Format\n"
				    "modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n";
	size_t cmp = sizeof(magic) - 1;

	if (cmp > len)
		cmp = len;
	return memcmp(buf, magic, cmp) == 0 ? 2 : 0;
}

const struct vd_block_driver vd_driver_cloop = {
	.name = "cloop",
	.instance_size = sizeof(struct cloop_state),
	.is_format = true,
	.child_name = "file",
	.child_has_metadata = true,
	.probe = cloop_probe,
	.open = cloop_open,
	.close = cloop_close,
	.co_preadv = cloop_co_preadv,
};
