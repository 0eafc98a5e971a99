/* SPDX-License-Identifier: MIT */
/*
 * Scatter-gather lists.
 *
 * A request's data is described by a struct vd_qiov: an array of struct iovec
 * and the total byte count.  A vd_qiov either owns its array (vd_qiov_init +
 * vd_qiov_add) or borrows one (vd_qiov_init_external, vd_qiov_init_buf); only
 * owned arrays are freed by vd_qiov_destroy.  Buffers are never owned.
 */
#ifndef VDISK_IOV_H
#define VDISK_IOV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_qiov {
	struct iovec *iov;
	int niov;
	int nalloc; /* -1 when iov is borrowed */
	size_t size; /* sum of iov[i].iov_len */
	struct iovec local; /* storage for vd_qiov_init_buf */
};

/* Total length of an iovec array. */
size_t vd_iov_size(const struct iovec *iov, int niov);

/* Copy between an iovec array and a flat buffer, starting @offset bytes into
 * the iovec.  They copy min(bytes, what is left) and return the bytes copied. */
size_t vd_iov_to_buf(const struct iovec *iov, int niov, size_t offset, void *buf, size_t bytes);
size_t vd_iov_from_buf(const struct iovec *iov, int niov, size_t offset, const void *buf,
		       size_t bytes);
size_t vd_iov_memset(const struct iovec *iov, int niov, size_t offset, int c, size_t bytes);

/* Owned, growable vector.  @hint is the initial capacity (0 is fine). */
void vd_qiov_init(struct vd_qiov *q, int hint);
/* Borrow an existing array; the caller keeps it alive. */
void vd_qiov_init_external(struct vd_qiov *q, struct iovec *iov, int niov);
/* One borrowed buffer. */
void vd_qiov_init_buf(struct vd_qiov *q, void *buf, size_t len);
/* Append; returns -ENOMEM on allocation failure (vector left unchanged).
 * Adjacent entries that continue each other are merged. Only for owned vectors. */
int vd_qiov_add(struct vd_qiov *q, void *base, size_t len);
/* Append the sub-range [offset, offset + bytes) of @src; -ENOMEM or -EINVAL
 * (range outside @src). */
int vd_qiov_concat_slice(struct vd_qiov *dst, const struct vd_qiov *src, size_t offset,
			 size_t bytes);
/* Empty an owned vector, keeping its allocation. */
void vd_qiov_reset(struct vd_qiov *q);
void vd_qiov_destroy(struct vd_qiov *q);

static inline size_t vd_qiov_to_buf(const struct vd_qiov *q, size_t off, void *buf, size_t n)
{
	return vd_iov_to_buf(q->iov, q->niov, off, buf, n);
}
static inline size_t vd_qiov_from_buf(const struct vd_qiov *q, size_t off, const void *buf,
				      size_t n)
{
	return vd_iov_from_buf(q->iov, q->niov, off, buf, n);
}
static inline size_t vd_qiov_memset(const struct vd_qiov *q, size_t off, int c, size_t n)
{
	return vd_iov_memset(q->iov, q->niov, off, c, n);
}

/* True when every base address and length is a multiple of @align. */
int vd_qiov_is_aligned(const struct vd_qiov *q, size_t align);

/* Allocate @size bytes aligned to @align (a power of two, at least sizeof(void *)).
 * Returns NULL on failure. Free with free(). */
void *vd_memalign(size_t align, size_t size);

#ifdef __cplusplus
}
#endif

#endif
