/* SPDX-License-Identifier: MIT */
/*
 * Compressed clusters (qcow2.txt "Compressed Clusters Descriptor",
 * compression_type in the header): deflate without zlib header or trailer
 * and a 4 KiB window (windowBits -12, as QEMU writes it), or zstd frames.
 */
#include <errno.h>
#include <string.h>
#include <zlib.h>
#ifdef VD_HAVE_ZSTD
#include <zstd.h>
#endif

#include "block/drivers/qcow2/qcow2.h"

/* Fill @dst completely from @src; trailing bytes of @src (the rest of the
 * last 512-byte sector) are ignored.  0 or -EIO. */
int qcow2_decompress(int type, uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
	if (type == QCOW2_COMPRESSION_ZLIB) {
		z_stream z;
		int ret;

		memset(&z, 0, sizeof(z));
		if (inflateInit2(&z, -12) != Z_OK)
			return -EIO;
		z.next_in = (Bytef *)src;
		z.avail_in = (uInt)src_len;
		z.next_out = dst;
		z.avail_out = (uInt)dst_len;
		ret = inflate(&z, Z_FINISH);
		/* As QEMU: the whole cluster must come out; the input may have
		 * padding after the end of the stream. */
		if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z.avail_out == 0)
			ret = 0;
		else
			ret = -EIO;
		inflateEnd(&z);
		return ret;
	}
#ifdef VD_HAVE_ZSTD
	if (type == QCOW2_COMPRESSION_ZSTD) {
		ZSTD_DCtx *d = ZSTD_createDCtx();
		ZSTD_inBuffer in = {src, src_len, 0};
		ZSTD_outBuffer out = {dst, dst_len, 0};
		int ret = 0;

		if (!d)
			return -ENOMEM;
		/* Stream decompression: the stored size includes sector padding. */
		while (out.pos < out.size) {
			size_t r = ZSTD_decompressStream(d, &out, &in);
			if (ZSTD_isError(r)) {
				ret = -EIO;
				break;
			}
			if (in.pos == in.size && out.pos < out.size) {
				ret = -EIO;
				break;
			}
		}
		ZSTD_freeDCtx(d);
		return ret;
	}
#endif
	return -ENOTSUP;
}

long qcow2_compress(int type, uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
	if (type == QCOW2_COMPRESSION_ZLIB) {
		z_stream z;
		long out;
		int ret;

		memset(&z, 0, sizeof(z));
		if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
				 Z_DEFAULT_STRATEGY) != Z_OK)
			return -EIO;
		z.next_in = (Bytef *)src;
		z.avail_in = (uInt)src_len;
		z.next_out = dst;
		z.avail_out = (uInt)dst_len;
		ret = deflate(&z, Z_FINISH);
		out = (long)(dst_len - z.avail_out);
		deflateEnd(&z);
		if (ret != Z_STREAM_END)
			return -ENOSPC;
		return out;
	}
#ifdef VD_HAVE_ZSTD
	if (type == QCOW2_COMPRESSION_ZSTD) {
		size_t r = ZSTD_compress(dst, dst_len, src, src_len, ZSTD_CLEVEL_DEFAULT);
		if (ZSTD_isError(r))
			return -ENOSPC; /* does not fit (or failed): stored uncompressed */
		return (long)r;
	}
#endif
	return -ENOTSUP;
}
