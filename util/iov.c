/* SPDX-License-Identifier: MIT */
/*
 * Scatter-gather helpers (see include/vdisk/iov.h).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/iov.h>

size_t vd_iov_size(const struct iovec *iov, int niov)
{
	size_t total = 0;
	for (int i = 0; i < niov; i++)
		total += iov[i].iov_len;
	return total;
}

/*
 * Walk [offset, offset + bytes) of the iovec and call @op on each piece.  One
 * walker for the three copy/fill helpers keeps the boundary arithmetic in one
 * place.
 */
enum iov_op {
	IOV_TO_BUF,
	IOV_FROM_BUF,
	IOV_MEMSET,
};

static size_t iov_walk(const struct iovec *iov, int niov, size_t offset, void *buf, int c,
		       size_t bytes, enum iov_op op)
{
	size_t done = 0;
	for (int i = 0; i < niov && done < bytes; i++) {
		size_t len = iov[i].iov_len;
		if (offset >= len) {
			offset -= len;
			continue;
		}
		size_t n = len - offset;
		if (n > bytes - done)
			n = bytes - done;
		char *p = (char *)iov[i].iov_base + offset;
		switch (op) {
		case IOV_TO_BUF:
			memcpy((char *)buf + done, p, n);
			break;
		case IOV_FROM_BUF:
			memcpy(p, (const char *)buf + done, n);
			break;
		case IOV_MEMSET:
			memset(p, c, n);
			break;
		}
		done += n;
		offset = 0;
	}
	return done;
}

size_t vd_iov_to_buf(const struct iovec *iov, int niov, size_t offset, void *buf, size_t bytes)
{
	return iov_walk(iov, niov, offset, buf, 0, bytes, IOV_TO_BUF);
}

size_t vd_iov_from_buf(const struct iovec *iov, int niov, size_t offset, const void *buf,
		       size_t bytes)
{
	/* The walker only writes through @buf for IOV_TO_BUF. */
	return iov_walk(iov, niov, offset, (void *)buf, 0, bytes, IOV_FROM_BUF);
}

size_t vd_iov_memset(const struct iovec *iov, int niov, size_t offset, int c, size_t bytes)
{
	return iov_walk(iov, niov, offset, NULL, c, bytes, IOV_MEMSET);
}

void vd_qiov_init(struct vd_qiov *q, int hint)
{
	memset(q, 0, sizeof(*q));
	if (hint > 0) {
		/* A failed hint is not an error: vd_qiov_add() grows on demand. */
		q->iov = malloc((size_t)hint * sizeof(*q->iov));
		if (q->iov)
			q->nalloc = hint;
	}
}

void vd_qiov_init_external(struct vd_qiov *q, struct iovec *iov, int niov)
{
	memset(q, 0, sizeof(*q));
	q->iov = iov;
	q->niov = niov;
	q->nalloc = -1;
	q->size = vd_iov_size(iov, niov);
}

void vd_qiov_init_buf(struct vd_qiov *q, void *buf, size_t len)
{
	memset(q, 0, sizeof(*q));
	q->local.iov_base = buf;
	q->local.iov_len = len;
	q->iov = &q->local;
	q->niov = 1;
	q->nalloc = -1;
	q->size = len;
}

int vd_qiov_add(struct vd_qiov *q, void *base, size_t len)
{
	assert(q->nalloc >= 0);
	if (len == 0)
		return 0;
	if (q->niov > 0) {
		struct iovec *last = &q->iov[q->niov - 1];
		if ((char *)last->iov_base + last->iov_len == (char *)base) {
			last->iov_len += len;
			q->size += len;
			return 0;
		}
	}
	if (q->niov == q->nalloc) {
		if (q->nalloc > INT_MAX / 2)
			return -ENOMEM;
		int nalloc = q->nalloc ? q->nalloc * 2 : 4;
		struct iovec *iov = realloc(q->iov, (size_t)nalloc * sizeof(*iov));
		if (!iov)
			return -ENOMEM;
		q->iov = iov;
		q->nalloc = nalloc;
	}
	q->iov[q->niov].iov_base = base;
	q->iov[q->niov].iov_len = len;
	q->niov++;
	q->size += len;
	return 0;
}

int vd_qiov_concat_slice(struct vd_qiov *dst, const struct vd_qiov *src, size_t offset,
			 size_t bytes)
{
	if (offset > src->size || bytes > src->size - offset)
		return -EINVAL;

	/* On failure the caller gets @dst back exactly as it was. */
	int niov = dst->niov;
	size_t size = dst->size;
	size_t last_len = niov ? dst->iov[niov - 1].iov_len : 0;

	for (int i = 0; i < src->niov && bytes > 0; i++) {
		size_t len = src->iov[i].iov_len;
		if (offset >= len) {
			offset -= len;
			continue;
		}
		size_t n = len - offset;
		if (n > bytes)
			n = bytes;
		int ret = vd_qiov_add(dst, (char *)src->iov[i].iov_base + offset, n);
		if (ret < 0) {
			dst->niov = niov;
			dst->size = size;
			if (niov)
				dst->iov[niov - 1].iov_len = last_len;
			return ret;
		}
		bytes -= n;
		offset = 0;
	}
	return 0;
}

void vd_qiov_reset(struct vd_qiov *q)
{
	assert(q->nalloc >= 0);
	q->niov = 0;
	q->size = 0;
}

void vd_qiov_destroy(struct vd_qiov *q)
{
	if (q->nalloc >= 0)
		free(q->iov);
	memset(q, 0, sizeof(*q));
}

int vd_qiov_is_aligned(const struct vd_qiov *q, size_t align)
{
	for (int i = 0; i < q->niov; i++) {
		if ((uintptr_t)q->iov[i].iov_base % align || q->iov[i].iov_len % align)
			return 0;
	}
	return 1;
}

void *vd_memalign(size_t align, size_t size)
{
	void *p;
	if (align < sizeof(void *))
		align = sizeof(void *);
	/* posix_memalign may return NULL for size 0; give callers a freeable pointer. */
	if (posix_memalign(&p, align, size ? size : 1) != 0)
		return NULL;
	return p;
}
