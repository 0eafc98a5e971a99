/* SPDX-License-Identifier: MIT */
/*
 * Compressed clusters (qcow2.txt "Compressed Clusters Descriptor",
 * compression_type in the header): deflate without zlib header or trailer
 * and a 4 KiB window (windowBits -12, as QEMU writes it), or zstd frames.
 *
 * With libdeflate, deflate clusters are compressed by it at zlib's default
 * level (6): about twice as fast as zlib for a stream as compact.  Its
 * back-references reach up to 32 KiB, not 4 KiB; readers inflate a whole
 * cluster in one call into one buffer (QEMU's qcow2_zlib_decompress, ours
 * below), where any distance inside the cluster resolves, so the stream
 * reads back the same (tests/image/qcow2-compress-interop.sh checks it with
 * qemu-img).  Compressors are kept per thread: allocating one costs more
 * than compressing a 64 KiB cluster.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef VD_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif
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

/* --- per-thread compressors ------------------------------------------------ */

#if defined(VD_HAVE_LIBDEFLATE) || defined(VD_HAVE_ZSTD)
struct compressors {
#ifdef VD_HAVE_LIBDEFLATE
	struct libdeflate_compressor *deflate;
#endif
#ifdef VD_HAVE_ZSTD
	ZSTD_CCtx *zstd;
#endif
};

static pthread_key_t compressors_key;
static pthread_once_t compressors_once = PTHREAD_ONCE_INIT;
static bool compressors_key_ok;

static void compressors_free(void *p)
{
	struct compressors *c = p;

#ifdef VD_HAVE_LIBDEFLATE
	if (c->deflate)
		libdeflate_free_compressor(c->deflate);
#endif
#ifdef VD_HAVE_ZSTD
	ZSTD_freeCCtx(c->zstd);
#endif
	free(c);
}

static void compressors_init(void)
{
	compressors_key_ok = pthread_key_create(&compressors_key, compressors_free) == 0;
}

/* This thread's compressors (freed when the thread exits), or NULL. */
static struct compressors *thread_compressors(void)
{
	struct compressors *c;

	pthread_once(&compressors_once, compressors_init);
	if (!compressors_key_ok)
		return NULL;
	c = pthread_getspecific(compressors_key);
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (c && pthread_setspecific(compressors_key, c) != 0) {
			free(c);
			c = NULL;
		}
	}
	return c;
}
#endif

long qcow2_compress(int type, uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
#ifdef VD_HAVE_LIBDEFLATE
	if (type == QCOW2_COMPRESSION_ZLIB) {
		struct compressors *c = thread_compressors();
		size_t r;

		if (c && !c->deflate)
			c->deflate = libdeflate_alloc_compressor(6);
		if (!c || !c->deflate)
			return -ENOMEM;
		r = libdeflate_deflate_compress(c->deflate, src, src_len, dst, dst_len);
		return r ? (long)r : -ENOSPC; /* 0: does not fit */
	}
#else
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
#endif
#ifdef VD_HAVE_ZSTD
	if (type == QCOW2_COMPRESSION_ZSTD) {
		struct compressors *c = thread_compressors();
		size_t r;

		if (c && !c->zstd)
			c->zstd = ZSTD_createCCtx();
		if (!c || !c->zstd)
			return -ENOMEM;
		r = ZSTD_compressCCtx(c->zstd, dst, dst_len, src, src_len, ZSTD_CLEVEL_DEFAULT);
		if (ZSTD_isError(r))
			return -ENOSPC; /* does not fit (or failed): stored uncompressed */
		return (long)r;
	}
#endif
	return -ENOTSUP;
}
