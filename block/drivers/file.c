/* SPDX-License-Identifier: MIT */
/*
 * The "file" protocol driver: regular files and block devices on the host,
 * with I/O through the loop's io_uring or thread-pool engine (util/aio.c).
 *
 * Image locking is QEMU 7.2's (block/file-posix.c), so that vdisk and QEMU
 * processes see each other's locks: OFD locks (F_OFD_SETLK) on byte
 * 100 + i for every permission i the user holds and on byte 200 + i for every
 * permission it does not share with others.  All locks are read locks;
 * conflicts are found by testing for a write lock (F_OFD_GETLK), which any
 * other open file description's read lock on the byte blocks.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <vdisk/aio.h>

#include "block/drivers.h"

/*
 * QEMU 7.2's permissions (include/block/block-common.h), in bit order; the
 * bit number i selects the lock bytes.  BLK_PERM_GRAPH_MOD was dropped in
 * QEMU 6.1, so there are four.
 */
enum {
	PERM_CONSISTENT_READ = 1 << 0,
	PERM_WRITE = 1 << 1,
	PERM_WRITE_UNCHANGED = 1 << 2,
	PERM_RESIZE = 1 << 3,
	PERM_ALL = (1 << 4) - 1,
	PERM_COUNT = 4,
};
static const char *const perm_names[PERM_COUNT] = {
	"consistent read",
	"write",
	"write unchanged",
	"resize",
};
/* Libvirt uses byte 0; QEMU starts higher to leave it room. */
#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

/* O_DIRECT alignments probed when statx cannot tell (QEMU's MAX_BLOCKSIZE). */
#define MAX_BLOCKSIZE 4096

enum {
	LOCKING_AUTO,
	LOCKING_ON,
	LOCKING_OFF
};
static const char *const locking_names[] = {"auto", "on", "off", NULL};
/* QEMU's BlockdevAioOptions; "native" (Linux AIO) maps to io_uring here. */
enum {
	AIO_THREADS,
	AIO_NATIVE,
	AIO_IO_URING
};
static const char *const aio_names[] = {"threads", "native", "io_uring", NULL};

struct file_state {
	int fd;
	bool is_bdev;
	bool use_lock;
	struct vd_aio *aio; /* n->loop's engine of kind aio_kind */
	enum vd_aio_kind aio_kind;
	/* A memory-backed file (tmpfs, ramfs) with the engine left to us:
	 * requests up to FILE_INLINE_MAX run in the calling thread. */
	bool inline_small;
	int page_cache_error; /* errno of a failed fdatasync: sticky, as QEMU */
	/* The last data extent SEEK_DATA/SEEK_HOLE found, [data_lo, data_hi):
	 * block status answers from it without the lseek calls (SEEK_HOLE
	 * walks the page cache up to the next hole: on a 1 GiB tmpfs file with
	 * no hole, a query per request made nbdcopy spend 14% of the server in
	 * it).  Saying data where a hole was punched since is never wrong;
	 * our own discards, zero writes and truncations forget it once done
	 * (block devices never use it). */
	int64_t data_lo, data_hi;
	uint64_t locked_perm; /* bits whose 100 + i byte we hold */
	uint64_t locked_unshared; /* bits whose 200 + i byte we hold */
};

/* --- locking --------------------------------------------------------------- */

static int ofd_lock(int fd, int64_t byte, bool lock)
{
	struct flock fl = {
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
		.l_type = lock ? F_RDLCK : F_UNLCK,
	};
	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* -EAGAIN if another open file description holds a lock on @byte. */
static int ofd_test(int fd, int64_t byte)
{
	struct flock fl = {
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
		.l_type = F_WRLCK,
	};
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

/*
 * Hold exactly the bytes for @perm (100 + i) and @unshared (200 + i), as
 * QEMU's raw_apply_lock_bytes does with unlock = true.
 */
static int lock_apply(struct file_state *s, uint64_t perm, uint64_t unshared, const char *filename,
		      struct vd_error *err)
{
	for (int i = 0; i < PERM_COUNT; i++) {
		uint64_t bit = UINT64_C(1) << i;
		int ret;

		if ((perm & bit) != (s->locked_perm & bit)) {
			ret = ofd_lock(s->fd, LOCK_PERM_BASE + i, perm & bit);
			if (ret < 0)
				return vd_error_setg_errno(err, ret, "Failed to lock byte %d",
							   LOCK_PERM_BASE + i);
			s->locked_perm ^= bit;
		}
		if ((unshared & bit) != (s->locked_unshared & bit)) {
			ret = ofd_lock(s->fd, LOCK_SHARED_BASE + i, unshared & bit);
			if (ret < 0)
				return vd_error_setg_errno(err, ret, "Failed to lock byte %d",
							   LOCK_SHARED_BASE + i);
			s->locked_unshared ^= bit;
		}
	}
	(void)filename;
	return 0;
}

/*
 * QEMU's raw_check_lock_bytes: a permission we want must not be unshared by
 * anyone (byte 200 + i free), and a permission we do not share must not be
 * held by anyone (byte 100 + i free).  Messages and hint as QEMU prints them.
 */
static int lock_check(struct file_state *s, uint64_t perm, uint64_t shared, const char *filename,
		      struct vd_error *err)
{
	for (int i = 0; i < PERM_COUNT; i++) {
		uint64_t bit = UINT64_C(1) << i;
		int ret;

		if (perm & bit) {
			ret = ofd_test(s->fd, LOCK_SHARED_BASE + i);
			if (ret < 0)
				return vd_error_set(err, ret,
						    "Failed to get \"%s\" lock\n"
						    "Is another process using the image [%s]?",
						    perm_names[i], filename);
		}
	}
	for (int i = 0; i < PERM_COUNT; i++) {
		uint64_t bit = UINT64_C(1) << i;
		int ret;

		if (!(shared & bit)) {
			ret = ofd_test(s->fd, LOCK_PERM_BASE + i);
			if (ret < 0)
				return vd_error_set(err, ret,
						    "Failed to get shared \"%s\" lock\n"
						    "Is another process using the image [%s]?",
						    perm_names[i], filename);
		}
	}
	return 0;
}

/*
 * Take the locks for @perm/@shared, then check for conflicts (QEMU's
 * raw_handle_perm_lock, prepare step: apply, then check, unlock on failure).
 * With locking=auto, a file system without OFD locks turns locking off.
 */
static int lock_take(struct file_state *s, uint64_t perm, uint64_t shared, bool required,
		     const char *filename, struct vd_error *err)
{
	struct vd_error local = {0};
	int ret;

	ret = lock_apply(s, perm, ~shared & PERM_ALL, filename, &local);
	if (ret == -EINVAL || ret == -ENOLCK || ret == -EOPNOTSUPP) {
		if (!required) {
			lock_apply(s, 0, 0, filename, NULL);
			s->use_lock = false;
			return 0;
		}
	}
	if (ret == 0)
		ret = lock_check(s, perm, shared, filename, &local);
	if (ret < 0) {
		lock_apply(s, 0, 0, filename, NULL);
		vd_error_set(err, ret, "%s", local.msg);
	}
	return ret;
}

/* --- open ------------------------------------------------------------------ */

static int64_t fd_length(int fd, bool is_bdev)
{
	struct stat st;

	if (is_bdev) {
		uint64_t size;
		if (ioctl(fd, BLKGETSIZE64, &size) < 0)
			return -errno;
		return (int64_t)size;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	return st.st_size;
}

static bool dio_read_works(int fd, void *buf, size_t len)
{
	ssize_t ret = pread(fd, buf, len, 0);
	return ret >= 0;
}

/*
 * O_DIRECT limits: statx(STATX_DIOALIGN) when the kernel knows them (Linux
 * 6.1+), else QEMU's raw_probe_alignment: the block device's logical sector
 * size, else the smallest of 1, 512 ... 4096 that a trial read accepts, where
 * 1 means "does not care" and is raised to 4096 to be safe.
 */
static void probe_direct_alignment(struct vd_node *n, int fd, bool is_bdev, uint32_t *req_align,
				   uint32_t *mem_align)
{
	static const uint32_t aligns[] = {1, 512, 1024, 2048, MAX_BLOCKSIZE};
	uint32_t max_align = MAX_BLOCKSIZE;
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *buf;

	if (page > (long)max_align)
		max_align = (uint32_t)page;
	*req_align = 0;
	*mem_align = 0;
#ifdef STATX_DIOALIGN
	struct statx stx;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align && stx.stx_dio_mem_align) {
		*req_align = stx.stx_dio_offset_align;
		*mem_align = stx.stx_dio_mem_align;
		return;
	}
#endif
	if (is_bdev) {
		int sector;
		if (ioctl(fd, BLKSSZGET, &sector) == 0 && sector > 0)
			*req_align = (uint32_t)sector;
	}
	buf = vd_memalign(max_align, 2 * (size_t)max_align);
	if (!buf) {
		*req_align = *req_align ? *req_align : max_align;
		*mem_align = max_align;
		return;
	}
	for (size_t i = 0; !*req_align && i < sizeof(aligns) / sizeof(aligns[0]); i++)
		if (dio_read_works(fd, buf, aligns[i]))
			*req_align = aligns[i] == 1 ? max_align : aligns[i];
	for (size_t i = 0; !*mem_align && i < sizeof(aligns) / sizeof(aligns[0]); i++)
		if (dio_read_works(fd, buf + aligns[i], max_align))
			*mem_align = aligns[i] == 1 ? max_align : aligns[i];
	free(buf);
	if (!*req_align)
		*req_align = max_align;
	if (!*mem_align)
		*mem_align = max_align;
	(void)n;
}

/*
 * On a memory-backed file a request is a copy to or from pages that never
 * wait for a device: for a small one, any hand-off (an io_uring worker, a
 * pool thread, the completion's wakeup) costs more than the copy.  Larger
 * ones still go to the engine, so that copies run beside the loop.
 */
#define FILE_INLINE_MAX (64 * 1024)

static bool fd_memory_backed(int fd)
{
	struct statfs sfs;

	return fstatfs(fd, &sfs) == 0 && (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
}

/* Bytes read or written, or -errno; -EAGAIN: let the engine do it. */
static int64_t file_inline_rw(struct file_state *s, bool write, const struct vd_qiov *qiov,
			      int64_t offset)
{
	if (qiov->niov > IOV_MAX)
		return -EAGAIN;
	ssize_t r;
	do {
		r = write ? pwritev(s->fd, qiov->iov, qiov->niov, offset)
			  : preadv(s->fd, qiov->iov, qiov->niov, offset);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	/* Short: end of file for a read (the caller zeroes the tail); for a
	 * write (a signal, a full filesystem), the engine tries the whole. */
	if (write && (size_t)r != qiov->size)
		return -EAGAIN;
	return r;
}

/* A read or write of @qiov: inline when small on a memory-backed file,
 * else (or when the inline try hands back) by the engine.  Bytes
 * transferred (the engine's count: short at end of file), or -errno. */
static int file_rw(struct file_state *s, bool write, const struct vd_qiov *qiov, int64_t offset)
{
	int64_t done = -EAGAIN;

	if (s->inline_small && qiov->size <= FILE_INLINE_MAX)
		done = file_inline_rw(s, write, qiov, offset);
	if (done != -EAGAIN)
		return (int)done;
	return write ? vd_aio_co_pwritev(s->aio, s->fd, qiov, offset)
		     : vd_aio_co_preadv(s->aio, s->fd, qiov, offset);
}

/* Does a buffered read of @fd honour RWF_NOWAIT (else EOPNOTSUPP)? */
static bool fd_reads_nowait(int fd)
{
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};

	return preadv2(fd, &iov, 1, 0, RWF_NOWAIT) >= 0 || errno != EOPNOTSUPP;
}

static int file_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct file_state *s = n->opaque;
	const char *filename;
	int aio_choice, locking, open_flags, ret;
	enum vd_aio_kind kind;
	bool direct;
	struct stat st;
	int64_t len;

	s->fd = -1;
	filename = vd_opts_get(opts, "filename");
	if (!filename || !*filename)
		return vd_error_set(err, -EINVAL, "The 'file' block driver requires a file name");

	/* Default io_uring when the kernel and build have it (QEMU: threads). */
	aio_choice = vd_aio_kind_available(VD_AIO_IO_URING) ? AIO_IO_URING : AIO_THREADS;
	ret = vd_opts_get_enum(opts, "aio", aio_names, aio_choice, &aio_choice, err);
	if (ret < 0)
		return ret;
	ret = vd_opts_get_bool(opts, "cache.direct", n->cache_direct, &direct, err);
	if (ret < 0)
		return ret;
	ret = vd_opts_get_enum(opts, "locking", locking_names, LOCKING_AUTO, &locking, err);
	if (ret < 0)
		return ret;

	kind = aio_choice == AIO_THREADS ? VD_AIO_THREADS : VD_AIO_IO_URING;
	if (aio_choice == AIO_NATIVE && !vd_aio_kind_available(VD_AIO_IO_URING))
		kind = VD_AIO_THREADS;
	if (kind == VD_AIO_IO_URING && !vd_aio_kind_available(kind))
		return vd_error_set(err, -ENOTSUP,
				    "Parameter 'aio': io_uring is not available on this host");

	open_flags = (n->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	if (direct)
		open_flags |= O_DIRECT;
	s->fd = open(filename, open_flags);
	if (s->fd < 0) {
		ret = -errno;
		if (ret == -EINVAL && direct)
			return vd_error_setg_errno(
				err, ret, "Could not open '%s' with cache.direct=on", filename);
		return vd_error_setg_errno(err, ret, "Could not open '%s'", filename);
	}
	if (fstat(s->fd, &st) < 0) {
		ret = vd_error_setg_errno(err, -errno, "Could not stat '%s'", filename);
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		s->is_bdev = true;
	} else if (!S_ISREG(st.st_mode)) {
		ret = vd_error_set(err, -EINVAL,
				   "'file' driver requires '%s' to be a regular file or a "
				   "block device",
				   filename);
		goto fail;
	}

	/*
	 * The permissions of QEMU 7.2 users of a raw image, as /proc/locks shows
	 * them (qemu-io -r: byte 100; qemu-system-x86_64 with a virtio-blk
	 * device: bytes 100, 101, 201):
	 *  - read-only (qemu-img info, qemu-io -r): consistent read, share all;
	 *  - read-write: consistent read + write, sharing consistent read, write
	 *    unchanged and resize: what a guest device (virtio-blk without
	 *    share-rw) holds, so two writers exclude each other;
	 *  - force-share (-U, read-only only): consistent read, share all.
	 * Under a qcow2 (n->metadata; QEMU's bdrv_default_perms_for_storage
	 * for a BDRV_CHILD_METADATA child), write and resize are never shared,
	 * also read-only (qemu-img info/check, qemu-io -r: bytes 100, 201,
	 * 203), so that metadata does not change under a reader; read-write
	 * also holds resize (bytes 100-101, 103, 201, 203).  -U shares all.
	 */
	s->use_lock = locking != LOCKING_OFF;
	if (s->use_lock) {
		uint64_t perm = PERM_CONSISTENT_READ, shared = PERM_ALL;
		if (!n->read_only) {
			perm |= PERM_WRITE;
			if (!n->force_share)
				shared = PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED | PERM_RESIZE;
		}
		if (n->metadata && !n->force_share) {
			if (!n->read_only)
				perm |= PERM_RESIZE;
			shared &= ~(uint64_t)(PERM_WRITE | PERM_RESIZE);
		}
		ret = lock_take(s, perm, shared, locking == LOCKING_ON, filename, err);
		if (ret < 0)
			goto fail;
	}

	len = fd_length(s->fd, s->is_bdev);
	if (len < 0) {
		ret = vd_error_setg_errno(err, (int)len, "Could not get the size of '%s'",
					  filename);
		goto fail;
	}
	n->size = len;

	/* Left to us, io_uring only where the kernel completes page-cache hits
	 * in the submitting call: without RWF_NOWAIT support (tmpfs) every
	 * io_uring request is handed to a kernel worker, and writes to one
	 * file queue behind a single worker, where the pool runs them in
	 * parallel without the hand-off. */
	if (!vd_opts_get(opts, "aio") && kind == VD_AIO_IO_URING && !direct &&
	    !fd_reads_nowait(s->fd))
		kind = VD_AIO_THREADS;
	s->inline_small =
		!vd_opts_get(opts, "aio") && !direct && !s->is_bdev && fd_memory_backed(s->fd);

	s->aio_kind = kind;
	ret = vd_aio_get(n->loop, kind, &s->aio);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not set up the %s engine",
				    vd_aio_kind_name(kind));
		goto fail;
	}

	if (direct) {
		uint32_t req_align, mem_align;
		probe_direct_alignment(n, s->fd, s->is_bdev, &req_align, &mem_align);
		n->limits.request_alignment = req_align;
		n->limits.min_mem_alignment = mem_align;
	} else {
		n->limits.request_alignment = 1;
		n->limits.min_mem_alignment = 1;
	}
	n->limits.opt_mem_alignment = n->limits.min_mem_alignment;
	if (n->limits.opt_mem_alignment < (uint32_t)sysconf(_SC_PAGESIZE))
		n->limits.opt_mem_alignment = (uint32_t)sysconf(_SC_PAGESIZE);
	n->limits.max_iov = IOV_MAX;
	n->supported_write_flags = 0; /* the core turns FUA into a flush */
	n->supported_zero_flags = VD_REQ_MAY_UNMAP;
	(void)flags;
	return 0;

fail:
	close(s->fd);
	s->fd = -1;
	return ret;
}

static void file_close(struct vd_node *n)
{
	struct file_state *s = n->opaque;

	/* Closing the file description drops its OFD locks. */
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/* The engines belong to a loop: a node that moves takes its new loop's. */
static void file_detach_loop(struct vd_node *n)
{
	struct file_state *s = n->opaque;

	s->aio = NULL;
}

static int file_attach_loop(struct vd_node *n, struct vd_error *err)
{
	struct file_state *s = n->opaque;
	int ret = vd_aio_get(n->loop, s->aio_kind, &s->aio);

	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not set up the %s engine",
					   vd_aio_kind_name(s->aio_kind));
	return 0;
}

/* --- requests -------------------------------------------------------------- */

static int file_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags)
{
	struct file_state *s = n->opaque;
	int ret;

	assert(offset >= 0 && bytes > 0 && qiov->size == (size_t)bytes);
	ret = file_rw(s, false, qiov, offset);
	if (ret < 0)
		return ret;
	/* The engine returns what it got before end of file: zero the tail. */
	if (ret < bytes)
		vd_qiov_memset(qiov, (size_t)ret, 0, (size_t)(bytes - ret));
	return 0;
}

static int file_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			   int flags)
{
	struct file_state *s = n->opaque;
	int ret;

	assert(offset >= 0 && bytes > 0 && qiov->size == (size_t)bytes);
	assert(!(flags & ~VD_REQ_COMPRESSED));
	if (flags & VD_REQ_COMPRESSED)
		return -ENOTSUP;
	ret = file_rw(s, true, qiov, offset);
	if (ret < 0)
		return ret;
	if (ret != bytes)
		return -EIO;
	if (!s->is_bdev && offset + bytes > n->size)
		n->size = offset + bytes;
	return 0;
}

static int file_co_flush(struct vd_node *n)
{
	struct file_state *s = n->opaque;
	int ret;

	/*
	 * After a failed fdatasync the kernel may have dropped the dirty pages
	 * and cleared the error; a later fdatasync would succeed although data
	 * was lost.  QEMU therefore fails every later flush too.
	 */
	if (s->page_cache_error)
		return -s->page_cache_error;
	ret = vd_aio_co_fsync(s->aio, s->fd, true);
	if (ret < 0 && ret != -ENOTSUP && ret != -EINVAL)
		s->page_cache_error = -ret;
	return ret;
}

struct ioctl_args {
	int fd;
	unsigned long req;
	uint64_t range[2];
};

static int ioctl_worker(void *opaque)
{
	struct ioctl_args *a = opaque;
	return ioctl(a->fd, a->req, a->range) < 0 ? -errno : 0;
}

static int bdev_ioctl(struct vd_node *n, unsigned long req, int64_t offset, int64_t bytes)
{
	struct file_state *s = n->opaque;
	struct ioctl_args a = {.fd = s->fd, .req = req, .range = {offset, bytes}};

	/* BLKDISCARD and BLKZEROOUT want 512-byte units. */
	if ((offset | bytes) & 511)
		return -ENOTSUP;
	return vd_thread_pool_co(n->loop, ioctl_worker, &a);
}

static int fix_enotsup(int ret)
{
	return ret == -EOPNOTSUPP || ret == -ENOSYS ? -ENOTSUP : ret;
}

static int file_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	struct file_state *s = n->opaque;
	int ret;

	ret = vd_aio_co_fallocate(s->aio, s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
				  bytes);
	s->data_hi = 0; /* the data extent may have a hole now */
	ret = fix_enotsup(ret);
	if (ret == -ENOTSUP && s->is_bdev)
		ret = fix_enotsup(bdev_ioctl(n, BLKDISCARD, offset, bytes));
	return ret;
}

static int extend_worker(void *opaque)
{
	struct ioctl_args *a = opaque;
	return ftruncate(a->fd, (off_t)a->range[0]) < 0 ? -errno : 0;
}

static int file_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	struct file_state *s = n->opaque;
	int64_t end = offset + bytes;
	int ret = -ENOTSUP;

	assert(!(flags & ~(VD_REQ_MAY_UNMAP | VD_REQ_NO_FALLBACK | VD_REQ_FUA)));
	if (s->is_bdev) {
		if (flags & VD_REQ_MAY_UNMAP)
			ret = fix_enotsup(vd_aio_co_fallocate(
				s->aio, s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
				bytes));
		if (ret == -ENOTSUP)
			ret = fix_enotsup(vd_aio_co_fallocate(
				s->aio, s->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset,
				bytes));
		if (ret == -ENOTSUP || ret == -EINVAL)
			ret = fix_enotsup(bdev_ioctl(n, BLKZEROOUT, offset, bytes));
		return ret == -EINVAL ? -ENOTSUP : ret;
	}

	if (offset >= n->size) {
		/* Entirely past end of file: growing the file is enough. */
		struct ioctl_args a = {.fd = s->fd, .range = {end, 0}};
		ret = vd_thread_pool_co(n->loop, extend_worker, &a);
	} else if (flags & VD_REQ_MAY_UNMAP) {
		ret = fix_enotsup(vd_aio_co_fallocate(
			s->aio, s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes));
		if (ret == 0 && end > n->size) {
			struct ioctl_args a = {.fd = s->fd, .range = {end, 0}};
			ret = vd_thread_pool_co(n->loop, extend_worker, &a);
		}
	}
	if (ret == -ENOTSUP)
		/* Without KEEP_SIZE, ZERO_RANGE also extends the file. */
		ret = fix_enotsup(
			vd_aio_co_fallocate(s->aio, s->fd, FALLOC_FL_ZERO_RANGE, offset, bytes));
	if (ret == 0 && end > n->size)
		n->size = end;
	s->data_hi = 0; /* the data extent may have a hole now */
	return ret;
}

/*
 * Holes and data from lseek(SEEK_DATA/SEEK_HOLE), as QEMU's find_allocation:
 * a range that is neither (an error, or no support) is reported as data.
 */
static int file_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
				int64_t *map, struct vd_node **file)
{
	struct file_state *s = n->opaque;
	uint32_t align = n->limits.request_alignment;
	int ret = VD_BLOCK_DATA;
	off_t data, hole;

	assert(offset >= 0 && bytes > 0);
	*pnum = bytes;
	*map = offset;
	*file = n;
	if (s->is_bdev)
		return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	if (offset >= n->size)
		return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID; /* past EOF reads zeroes */

	if (offset >= s->data_lo && offset < s->data_hi) {
		if (s->data_hi - offset < bytes)
			*pnum = s->data_hi - offset;
		goto aligned;
	}
	data = lseek(s->fd, offset, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) /* a hole up to end of file */
			ret = VD_BLOCK_ZERO;
	} else if (data > offset) {
		ret = VD_BLOCK_ZERO;
		if (data - offset < bytes)
			*pnum = data - offset;
	} else {
		hole = lseek(s->fd, offset, SEEK_HOLE);
		if (hole > offset && hole - offset < bytes)
			*pnum = hole - offset;
		if (hole > offset) {
			s->data_lo = offset;
			s->data_hi = hole;
		}
	}
aligned:

	/*
	 * With O_DIRECT, report whole alignment units: round data up, and a
	 * hole down (a unit only partly a hole has data).
	 */
	if (align > 1) {
		int64_t rounded;
		if (ret == VD_BLOCK_ZERO) {
			rounded = (offset + *pnum) / align * align - offset;
			if (rounded <= 0) {
				ret = VD_BLOCK_DATA;
				rounded = align - offset % align;
			}
		} else {
			rounded = ((offset + *pnum + align - 1) / align) * align - offset;
		}
		*pnum = rounded < bytes ? rounded : bytes;
	}
	return ret | VD_BLOCK_OFFSET_VALID;
}

/* --- truncate and create -------------------------------------------------- */

struct truncate_args {
	int fd;
	int64_t size;
	enum vd_prealloc prealloc;
	char msg[128];
};

static int write_zeroes_range(int fd, int64_t from, int64_t to)
{
	const size_t chunk = 1 << 20;
	void *buf = calloc(1, chunk);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while (from < to) {
		size_t len = to - from < (int64_t)chunk ? (size_t)(to - from) : chunk;
		ssize_t done = pwrite(fd, buf, len, from);
		if (done < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		from += done;
	}
	free(buf);
	if (ret == 0 && fdatasync(fd) < 0)
		ret = -errno;
	return ret;
}

/* QEMU's handle_aiocb_truncate, for regular files (runs on a worker). */
static int truncate_worker(void *opaque)
{
	struct truncate_args *a = opaque;
	struct stat st;
	int64_t cur;
	int ret = 0;

	if (fstat(a->fd, &st) < 0)
		return -errno;
	cur = st.st_size;
	switch (a->prealloc) {
	case VD_PREALLOC_FALLOC:
		if (a->size > cur) {
			if (fallocate(a->fd, 0, cur, a->size - cur) < 0) {
				ret = -errno;
				snprintf(a->msg, sizeof(a->msg), "Could not preallocate new data");
			}
			return ret;
		}
		break;
	case VD_PREALLOC_FULL:
		if (a->size > cur) {
			if (ftruncate(a->fd, a->size) < 0) {
				snprintf(a->msg, sizeof(a->msg), "Could not resize file");
				return -errno;
			}
			ret = write_zeroes_range(a->fd, cur, a->size);
			if (ret < 0) {
				snprintf(a->msg, sizeof(a->msg),
					 "Could not write zeros for preallocation");
				/* Undo the growth, as QEMU does. */
				if (ftruncate(a->fd, cur) < 0) {
					/* nothing more to do */
				}
			}
			return ret;
		}
		break;
	case VD_PREALLOC_OFF:
		break;
	default:
		snprintf(a->msg, sizeof(a->msg), "Unsupported preallocation mode: %s",
			 vd_prealloc_names[a->prealloc]);
		return -ENOTSUP;
	}
	if (ftruncate(a->fd, a->size) < 0) {
		snprintf(a->msg, sizeof(a->msg), "Could not resize file");
		return -errno;
	}
	/*
	 * A new file gets its first block written, as QEMU's
	 * allocate_first_block does, so that O_DIRECT alignment probing finds
	 * real data there (and `info` shows the same disk size as qemu-img's).
	 * Failure only costs that optimisation.
	 */
	if (cur == 0 && a->size > 0) {
		static const char zeroes[4096];
		size_t len = a->size < (int64_t)sizeof(zeroes) ? (size_t)a->size : sizeof(zeroes);
		if (pwrite(a->fd, zeroes, len, 0) < 0) {
			/* ignored, as QEMU does */
		}
	}
	return 0;
}

static int file_co_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
			    struct vd_error *err)
{
	struct file_state *s = n->opaque;
	struct truncate_args a = {.fd = s->fd, .size = size, .prealloc = prealloc};
	int ret;

	assert(size >= 0);
	if (s->is_bdev) {
		/* QEMU's messages for device files. */
		int64_t cur = fd_length(s->fd, true);
		if (cur < 0)
			return vd_error_setg_errno(err, (int)cur, "Could not get the device size");
		if (size != cur && exact)
			return vd_error_set(err, -ENOTSUP, "Cannot resize device files");
		if (size > cur)
			return vd_error_set(err, -EINVAL, "Cannot grow device files");
		return 0;
	}
	ret = vd_thread_pool_co(n->loop, truncate_worker, &a);
	s->data_hi = 0; /* the data extent may have a hole now */
	if (ret < 0) {
		if (a.msg[0])
			return vd_error_setg_errno(err, ret, "%s", a.msg);
		return vd_error_setg_errno(err, ret, "Could not resize file");
	}
	n->size = size;
	return 0;
}

static int64_t file_get_allocated_size(struct vd_node *n)
{
	struct file_state *s = n->opaque;
	struct stat st;

	if (fstat(s->fd, &st) < 0)
		return -errno;
	return (int64_t)st.st_blocks * 512;
}

static int file_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	struct file_state s = {.fd = -1, .use_lock = true};
	struct truncate_args a = {0};
	uint64_t size;
	int prealloc, ret;
	bool nocow;

	if (!vd_opts_has(opts, "size"))
		return vd_error_set(err, -EINVAL, "Image creation needs a size parameter");
	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret < 0)
		return ret;
	/* qemu-img create rounds the size of a file up to whole sectors. */
	if (size > (uint64_t)VD_MAX_LENGTH)
		return vd_error_set(err, -EINVAL, "Image size must be less than 8 EiB!");
	size = (size + 511) & ~UINT64_C(511);
	ret = vd_opts_get_enum(opts, "preallocation", vd_prealloc_names, VD_PREALLOC_OFF, &prealloc,
			       err);
	if (ret < 0)
		return ret;
	if (prealloc == VD_PREALLOC_METADATA)
		return vd_error_set(err, -ENOTSUP, "Unsupported preallocation mode: metadata");
	ret = vd_opts_get_bool(opts, "nocow", false, &nocow, err);
	if (ret < 0)
		return ret;

	/* Not O_TRUNC: check the locks before destroying anything (QEMU). */
	s.fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (s.fd < 0)
		return vd_error_setg_errno(err, -errno, "Could not create '%s'", filename);
	if (nocow) {
		/* Best effort, as QEMU: only btrfs knows the flag. */
		int attr;
		if (ioctl(s.fd, FS_IOC_GETFLAGS, &attr) == 0) {
			attr |= FS_NOCOW_FL;
			ioctl(s.fd, FS_IOC_SETFLAGS, &attr);
		}
	}
	/*
	 * QEMU's raw_co_create: we discard everything and set the size, so we
	 * take write and resize, and cannot share resize.
	 */
	ret = lock_take(&s, PERM_WRITE | PERM_RESIZE, PERM_ALL & ~PERM_RESIZE, false, filename,
			err);
	if (ret < 0)
		goto out;
	if (ftruncate(s.fd, 0) < 0) {
		ret = vd_error_setg_errno(err, -errno, "Could not clear '%s'", filename);
		goto out;
	}
	a.fd = s.fd;
	a.size = (int64_t)size;
	a.prealloc = prealloc;
	ret = truncate_worker(&a);
	if (ret < 0)
		vd_error_setg_errno(err, ret, "%s", a.msg[0] ? a.msg : "Could not resize file");
out:
	close(s.fd);
	return ret;
}

static const char *const file_create_opts[] = {"preallocation", "nocow", NULL};

/* Zero-copy reads: only where a read never waits for a device (the
 * memory-backed, buffered files whose small requests run inline). */
static int file_host_range(struct vd_node *n, int64_t offset, int64_t bytes, int *fd,
			   int64_t *host_offset)
{
	struct file_state *s = n->opaque;

	if (!s->inline_small)
		return -ENOTSUP;
	*fd = s->fd;
	*host_offset = offset;
	return 0;
}

const struct vd_block_driver vd_driver_file = {
	.name = "file",
	.instance_size = sizeof(struct file_state),
	.create_opts = file_create_opts,
	.open = file_open,
	.close = file_close,
	.detach_loop = file_detach_loop,
	.attach_loop = file_attach_loop,
	.create = file_create,
	.co_preadv = file_co_preadv,
	.co_pwritev = file_co_pwritev,
	.co_flush = file_co_flush,
	.co_pdiscard = file_co_pdiscard,
	.co_pwrite_zeroes = file_co_pwrite_zeroes,
	.co_block_status = file_co_block_status,
	.host_range = file_host_range,
	.co_truncate = file_co_truncate,
	.get_allocated_size = file_get_allocated_size,
};
