/* SPDX-License-Identifier: MIT */
/*
 * Host I/O engines: io_uring (liburing) and a thread pool.
 *
 * An engine belongs to one loop and is created on first use
 * (vd_aio_get()).  The io_uring engine batches: SQEs queued during one loop
 * iteration are submitted together by a bottom half, and completions are reaped
 * from the ring fd.  The thread-pool engine runs the same operations as
 * blocking system calls on worker threads and completes on the loop through an
 * eventfd.
 *
 * vd_aio_co_*() must be called in a coroutine: they queue the operation, yield,
 * and return the result (bytes transferred, 0, or -errno).  Short reads and
 * writes are resubmitted for the rest by the engine; a read that hits end of
 * file returns the bytes it got.  -EINTR and -EAGAIN are retried.
 */
#ifndef VDISK_AIO_H
#define VDISK_AIO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vdisk/coroutine.h>
#include <vdisk/iov.h>
#include <vdisk/loop.h>

#ifdef __cplusplus
extern "C" {
#endif

enum vd_aio_kind {
	VD_AIO_THREADS,
	VD_AIO_IO_URING,
};

/* "threads" / "io_uring"; NULL-safe parse returns -EINVAL for unknown names. */
const char *vd_aio_kind_name(enum vd_aio_kind kind);
int vd_aio_kind_parse(const char *name, enum vd_aio_kind *out);
/* True when this build (and the running kernel) can use @kind. */
bool vd_aio_kind_available(enum vd_aio_kind kind);

struct vd_aio;

/* The loop's engine of @kind, created on first use. 0 or -errno (-ENOTSUP if
 * the engine is not built in or the kernel refuses it). */
int vd_aio_get(struct vd_loop *loop, enum vd_aio_kind kind, struct vd_aio **out);

int vd_coroutine_fn vd_aio_co_preadv(struct vd_aio *aio, int fd, const struct vd_qiov *qiov,
				     int64_t offset);
int vd_coroutine_fn vd_aio_co_pwritev(struct vd_aio *aio, int fd, const struct vd_qiov *qiov,
				      int64_t offset);
/* fdatasync when @datasync, else fsync. */
int vd_coroutine_fn vd_aio_co_fsync(struct vd_aio *aio, int fd, bool datasync);
/* fallocate(2) with @mode flags (FALLOC_FL_*). */
int vd_coroutine_fn vd_aio_co_fallocate(struct vd_aio *aio, int fd, int mode, int64_t offset,
					int64_t len);

/*
 * Run an arbitrary blocking function on the loop's worker threads and wait for
 * it (in a coroutine).  Returns what @fn returned.  For work that has no
 * io_uring operation (ioctl, lseek with SEEK_DATA on slow file systems).
 */
typedef int vd_worker_fn(void *opaque);
int vd_coroutine_fn vd_thread_pool_co(struct vd_loop *loop, vd_worker_fn *fn, void *opaque);

/* Statistics for tests and `vdisk bench`: submissions and io_uring_submit calls. */
struct vd_aio_stats {
	uint64_t ops;
	uint64_t submit_calls;
};
void vd_aio_get_stats(struct vd_aio *aio, struct vd_aio_stats *st);

#ifdef __cplusplus
}
#endif

#endif
