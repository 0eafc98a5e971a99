/* SPDX-License-Identifier: MIT */
/*
 * The block layer: the public API that devices, exports and tools use.
 *
 * A struct vd_node is a node in a graph of block drivers: a format node (raw,
 * qcow2) on a protocol node (file, null), possibly with a backing child
 * or a filter (blkdebug) in between.  Every request enters through the
 * functions here, which validate it once (range, overflow, read-only, size
 * limits), account it, pad or bounce it to the node's limits, serialise it
 * against overlapping requests where needed, and hand it to the driver.
 *
 * Three ways to issue a request, all with the same semantics:
 *  - vd_co_*():       in a coroutine on the node's loop; return 0 or -errno.
 *  - vd_node_aio_*(): from the node's loop, not necessarily in a coroutine;
 *                     the completion runs exactly once, never before the call
 *                     returns, also on error.
 *  - vd_node_p*():    synchronous, for tools and tests; they drive the
 *                     current thread's loop until the request completes.
 *
 * Devices, exports and tools that do I/O hold a struct vd_blk (backend.h)
 * on a node rather than the node: its vd_blk_* requests add the rules every
 * user shares.  The names say the layer: vd_blk_* a backend, vd_node_* and
 * vd_co_* a node, vd_aio_* the host I/O engine under the file driver
 * (aio.h).
 *
 * Errors: -EINVAL for a malformed request (negative offset or length, offset +
 * length overflowing, length over VD_REQUEST_MAX_BYTES, a buffer shorter than
 * the length), -EIO for a request past the end of a node that does not grow,
 * -EROFS for a write to a read-only node, -ENOMEDIUM when there is no medium,
 * -ENOTSUP when a driver lacks the operation; the driver's errno otherwise.
 */
#ifndef VDISK_BLOCK_H
#define VDISK_BLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/coroutine.h>
#include <vdisk/error.h>
#include <vdisk/iov.h>
#include <vdisk/loop.h>
#include <vdisk/opts.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_node;

/* Largest single request: INT32_MAX rounded down to a sector, as QEMU 7.2's
 * BDRV_REQUEST_MAX_BYTES. */
#define VD_REQUEST_MAX_BYTES ((int64_t)(INT32_MAX & ~511))
/* Largest node: INT64_MAX rounded down to 1 GiB. */
#define VD_MAX_LENGTH ((int64_t)(INT64_MAX & ~((INT64_C(1) << 30) - 1)))

/* Open flags. */
enum {
	VD_OPEN_RDWR = 1 << 0, /* default is read-only */
	VD_OPEN_NO_BACKING = 1 << 1, /* do not open backing files */
	/* No format given: probe, as QEMU 7.2 does (the formats QEMU knows
	 * and vdisk cannot open are refused by name, never taken for raw).
	 * A format that can name other files (qcow2) is only accepted
	 * together with VD_OPEN_NO_BACKING or VD_OPEN_PROBE_REFERENCES, so
	 * probing alone never leads to opening
	 * a file that an image names.  A probed raw node refuses (-EPERM)
	 * writes that would make the file probe as another format. */
	VD_OPEN_PROBE = 1 << 2,
	VD_OPEN_FORCE_SHARE = 1 << 3, /* -U: take no image locks that exclude others */
	/* Opened to be checked and repaired (vdisk check -r): a format may then
	 * accept read-write what it otherwise refuses, such as a qcow2 image
	 * with the corrupt bit set (QEMU's BDRV_O_CHECK). */
	VD_OPEN_CHECK = 1 << 4,
	/* Opened for its metadata only, no data I/O will follow (qemu-img
	 * info, QEMU's BDRV_O_NO_IO): an encrypted format reads its header
	 * without a key; reads and writes on the node fail with -EIO. */
	VD_OPEN_NO_IO = 1 << 5,
	/* With VD_OPEN_PROBE: a probed format that can name other files
	 * (qcow2) is accepted and its backing chain opened, as qemu-img,
	 * qemu-io and QEMU do.  What keeps this safe is the probed-raw rule
	 * above: a raw image opened by probing can never be given a header
	 * that would make it probe as such a format. */
	VD_OPEN_PROBE_REFERENCES = 1 << 6,
};

/*
 * Open a node.  @filename may be a plain path or "json:{...}".  @format names
 * the format driver (NULL with VD_OPEN_PROBE to probe, NULL without it means
 * raw is refused: a format must be given).  @opts (may be NULL; not consumed)
 * holds further options with dotted keys, such as "file.aio=io_uring",
 * "cache.direct=on", "offset=..." for raw.  The node lives on the current
 * thread's loop.  Unknown or unused keys are errors that name the key.
 */
int vd_node_open(const char *filename, const char *format, const struct vd_opts *opts, int flags,
		 struct vd_node **out, struct vd_error *err);
/* Open from a full option tree ({"driver":"raw","file":{"driver":"file",...}}),
 * as --image-opts and --blockdev give it.  @opts is not consumed. */
int vd_node_open_opts(const struct vd_opts *opts, int flags, struct vd_node **out,
		      struct vd_error *err);
/* Drop a reference; the last one drains in-flight requests, closes the
 * driver and its children. */
void vd_node_unref(struct vd_node *n);
void vd_node_ref(struct vd_node *n);

/*
 * Cache modes as -t / cache= give them: writeback, writethrough, none,
 * directsync, unsafe.  Sets "cache.direct" and "cache.no-flush" in @opts and
 * tells whether the device-visible write cache starts disabled.
 */
int vd_cache_mode_apply(const char *mode, struct vd_opts *opts, bool *writethrough,
			struct vd_error *err);

/* Properties. */
int64_t vd_node_size(const struct vd_node *n);
bool vd_node_is_read_only(const struct vd_node *n);
/* Was the format guessed (VD_OPEN_PROBE with no format given)? */
bool vd_node_was_probed(const struct vd_node *n);
const char *vd_node_format(const struct vd_node *n); /* driver name */
const char *vd_node_filename(const struct vd_node *n); /* as opened */
const char *vd_node_name(const struct vd_node *n); /* node-name, "" if none */
int vd_node_set_name(struct vd_node *n, const char *name);
struct vd_node *vd_node_file_child(const struct vd_node *n);
struct vd_node *vd_node_backing(const struct vd_node *n);
struct vd_loop *vd_node_loop(const struct vd_node *n);
/*
 * Move @n with its children (file, backing) to @loop, QEMU's
 * bdrv_try_change_aio_context: the nodes are drained, their drivers give up
 * what they hold on the old loop (engines, timers) on the old loop's thread and
 * take it again on the new loop's thread.  Call from the thread that controls
 * the graph (the main loop's), with no user issuing requests on the nodes
 * meanwhile; it blocks until done (vd_loop_call_wait() on the old and the new
 * loop, a plain call for the caller's own).  On error the nodes stay where
 * they were.  Returns 0 or -errno.
 */
int vd_node_set_loop(struct vd_node *n, struct vd_loop *loop, struct vd_error *err);
/* Is @child @n itself or one of the nodes under it? */
bool vd_node_contains(const struct vd_node *n, const struct vd_node *child);

/*
 * What a node can take in one request: devices and exports read it (through
 * vd_blk_limits()) to size what they advertise and submit; the core fits
 * every request to it before a driver sees it.
 */
struct vd_limits {
	uint32_t request_alignment; /* bytes; power of two; >= 1 */
	uint32_t min_mem_alignment; /* buffer address and length; power of two; >= 1 */
	uint32_t opt_mem_alignment; /* best buffer alignment for bounce buffers */
	uint64_t max_transfer; /* bytes per request; 0 = VD_REQUEST_MAX_BYTES */
	int max_iov; /* iovec entries per request; 0 = IOV_MAX */
	uint32_t discard_alignment; /* granularity of discard; 0 = request_alignment */
	uint64_t max_discard; /* 0 = VD_REQUEST_MAX_BYTES */
	uint32_t write_zeroes_alignment; /* 0 = request_alignment */
	uint64_t max_write_zeroes; /* 0 = VD_REQUEST_MAX_BYTES */
};

const struct vd_limits *vd_node_limits(const struct vd_node *n);

/* The write cache seen by a device: writeback (enabled) or writethrough (every
 * write is followed by a flush, FUA where the driver has it). */
void vd_node_set_write_cache(struct vd_node *n, bool enabled);
bool vd_node_write_cache(const struct vd_node *n);
/* The host cache mode the node was opened with (query-block's "cache"):
 * cache.direct (O_DIRECT at the protocol) and cache.no-flush. */
bool vd_node_cache_direct(const struct vd_node *n);
bool vd_node_cache_no_flush(const struct vd_node *n);

/* Request flags. */
enum {
	VD_REQ_FUA = 1 << 0, /* writev, write_zeroes: durable on return */
	VD_REQ_MAY_UNMAP = 1 << 1, /* write_zeroes: may deallocate */
	VD_REQ_NO_FALLBACK = 1 << 2, /* write_zeroes: fail with -ENOTSUP rather
				     * than writing a buffer of zeroes */
	VD_REQ_COMPRESSED = 1 << 3, /* writev: store compressed (formats that can) */
};

/* block_status result bits. */
enum {
	VD_BLOCK_DATA = 1 << 0, /* reads return data from this node or below */
	VD_BLOCK_ZERO = 1 << 1, /* reads return zeroes */
	VD_BLOCK_OFFSET_VALID = 1 << 2, /* *map is valid: offset in *file */
	VD_BLOCK_ALLOCATED = 1 << 3, /* the content comes from this node (not backing) */
	VD_BLOCK_EOF = 1 << 4, /* the range reaches the end of the node */
};

/* Coroutine interface (on the node's loop). */
int vd_coroutine_fn vd_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes,
				 const struct vd_qiov *qiov, int flags);
int vd_coroutine_fn vd_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes,
				  const struct vd_qiov *qiov, int flags);
int vd_coroutine_fn vd_co_flush(struct vd_node *n);
int vd_coroutine_fn vd_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes);
int vd_coroutine_fn vd_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes,
					int flags);
/*
 * Status of [offset, offset + bytes): returns VD_BLOCK_* bits (>= 0) valid for
 * *pnum bytes (1 <= *pnum <= bytes unless offset is at the end, where *pnum
 * is 0), or -errno.  With VD_BLOCK_OFFSET_VALID, *map and *file say where the
 * data lives.  @map and @file may be NULL.  Not recursive into the backing
 * chain: unallocated ranges of an overlay have neither ALLOCATED nor DATA.
 */
int vd_coroutine_fn vd_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes,
				       int64_t *pnum, int64_t *map, struct vd_node **file);
/* Is the range allocated in @top or any backing node above @base (exclusive,
 * NULL for the whole chain)?  Returns 1/0 for *pnum bytes, or -errno. */
int vd_coroutine_fn vd_co_is_allocated_above(struct vd_node *top, struct vd_node *base,
					     int64_t offset, int64_t bytes, int64_t *pnum);

/*
 * Status of [offset, offset + bytes) as reads of @top see it, through its
 * backing chain down to @base (exclusive; NULL: the whole chain), as QEMU's
 * bdrv_block_status_above: the first node from the top that has the range
 * allocated (VD_BLOCK_DATA or VD_BLOCK_ZERO) answers, for *pnum bytes (1 <=
 * *pnum <= bytes, 0 only at the end of @top), with its *map and *file.  A
 * range allocated in no node reads as zeroes where the chain ends (no
 * backing node, or past the end of a shorter one): VD_BLOCK_ZERO without
 * VD_BLOCK_ALLOCATED; where it reaches @base it is 0.  *depth is the index
 * in the chain of the node that answered (0 for @top), as qemu-img map's
 * "depth".  VD_BLOCK_EOF refers to @top.  @map, @file and @depth may be
 * NULL.  Filters (blkdebug) are looked through.
 */
int vd_coroutine_fn vd_co_block_status_above(struct vd_node *top, struct vd_node *base,
					     int64_t offset, int64_t bytes, int64_t *pnum,
					     int64_t *map, struct vd_node **file, int *depth);

enum vd_prealloc {
	VD_PREALLOC_OFF,
	VD_PREALLOC_METADATA,
	VD_PREALLOC_FALLOC,
	VD_PREALLOC_FULL,
};
extern const char *const vd_prealloc_names[]; /* NULL-terminated, by enum value */

int vd_coroutine_fn vd_co_truncate(struct vd_node *n, int64_t size, bool exact,
				   enum vd_prealloc prealloc, struct vd_error *err);

/* Asynchronous interface (on the node's loop). */
typedef void vd_completion_fn(void *opaque, int ret);
void vd_node_aio_preadv(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov, int flags,
			vd_completion_fn *cb, void *opaque);
void vd_node_aio_pwritev(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov, int flags,
			 vd_completion_fn *cb, void *opaque);
void vd_node_aio_flush(struct vd_node *n, vd_completion_fn *cb, void *opaque);
void vd_node_aio_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes, vd_completion_fn *cb,
			  void *opaque);
void vd_node_aio_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags,
			       vd_completion_fn *cb, void *opaque);

/* Synchronous wrappers (tools and tests). */
int vd_node_pread(struct vd_node *n, int64_t offset, void *buf, int64_t bytes);
int vd_node_pwrite(struct vd_node *n, int64_t offset, const void *buf, int64_t bytes, int flags);
int vd_node_preadv(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov);
int vd_node_pwritev(struct vd_node *n, int64_t offset, const struct vd_qiov *qiov, int flags);
int vd_node_flush(struct vd_node *n);
int vd_node_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes);
int vd_node_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags);
int vd_node_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			 int64_t *map, struct vd_node **file);
int vd_node_is_allocated_above(struct vd_node *top, struct vd_node *base, int64_t offset,
			       int64_t bytes, int64_t *pnum);
int vd_node_truncate(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
		     struct vd_error *err);

/* Wait until no request is in flight on @n (drives the loop). */
void vd_node_drain(struct vd_node *n);

/*
 * Accounting, per node and per operation (QEMU's BlockAcctStats).  A request
 * that fails validation counts as invalid, one the driver fails as failed.
 * Latency histogram bins are powers of two in nanoseconds: bin i counts
 * latencies in [2^i, 2^(i+1)) ns (bin 0 also holds 0 ns).
 */
enum vd_acct_type {
	VD_ACCT_READ,
	VD_ACCT_WRITE,
	VD_ACCT_FLUSH,
	VD_ACCT_DISCARD,
	VD_ACCT_WRITE_ZEROES,
	VD_ACCT_MAX,
};
#define VD_ACCT_HIST_BINS 40
struct vd_acct_op {
	uint64_t ops, bytes, failed_ops, invalid_ops;
	uint64_t merged; /* requests a device merged into others (counted in ops) */
	uint64_t total_time_ns;
	uint64_t hist[VD_ACCT_HIST_BINS];
};
struct vd_acct_stats {
	struct vd_acct_op op[VD_ACCT_MAX];
	int64_t last_access_ns; /* vd_clock_ns() of the last completion, 0 if none */
};
/* A device merged @count requests of @type into another one it submitted
 * (QEMU's block_acct_merge_done): they count as operations and as merged. */
void vd_node_acct_merged(struct vd_node *n, enum vd_acct_type type, unsigned count);
void vd_node_get_stats(const struct vd_node *n, struct vd_acct_stats *st);
void vd_node_reset_stats(struct vd_node *n);
/* Latency below which @pct percent (0..100) of @op's requests completed,
 * from the histogram (upper bin edge); 0 if there were none. */
uint64_t vd_acct_percentile_ns(const struct vd_acct_op *op, double pct);

/*
 * Image information (what `vdisk info` prints, with qemu-img's field names).
 */
struct vd_image_info {
	char *filename;
	const char *format;
	int64_t virtual_size;
	int64_t actual_size; /* bytes allocated on the host, -1 if unknown */
	int64_t cluster_size; /* 0 if the format has none */
	bool dirty_flag;
	bool has_dirty_flag;
	bool encrypted; /* the data is encrypted (luks) */
	char *backing_filename; /* NULL if none */
	char *full_backing_filename; /* resolved, NULL if none */
	char *backing_filename_format;
	struct vd_opts *format_specific; /* driver-specific fields, may be NULL */
	/* Data can only be written compressed, whole clusters once each (vmdk
	 * streamOptimized): copying tools write as with -c (QEMU's
	 * needs_compressed_writes). */
	bool needs_compressed_writes;
};
int vd_node_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err);
void vd_image_info_cleanup(struct vd_image_info *info);

/*
 * Create an image.  @opts holds the creation options of @format ("size",
 * "preallocation", driver specific ones as -o gives them); unknown keys are
 * errors.  The protocol is the one @filename names (a local file, rbd:,
 * nbd:); one that cannot create (nbd) takes over what exists, as QEMU does
 * (raw and qcow2 only).
 */
int vd_image_create(const char *filename, const char *format, struct vd_opts *opts,
		    struct vd_error *err);
/*
 * Does vd_image_create() on @filename make a new protocol file that reads
 * as zeroes?  False where an existing target is taken over (an NBD export):
 * its old bytes are still there.
 */
bool vd_image_create_zeroes(const char *filename);
/* Does @format take creation option @key ("backing_file", ...)? */
bool vd_format_has_create_opt(const char *format, const char *key);

/*
 * Consistency checks, with qemu-img check's verdicts: corruptions (exit 2),
 * leaked clusters only (exit 3), clean (0), the format has no checks (63).
 */
enum {
	VD_CHECK_FIX_LEAKS = 1 << 0, /* -r leaks */
	VD_CHECK_FIX_ERRORS = 1 << 1, /* -r all: also rebuild refcounts */
};
struct vd_check_result {
	int corruptions, leaks, check_errors;
	int corruptions_fixed, leaks_fixed;
	int64_t image_end_offset; /* 0 if unknown */
	int64_t total_clusters, allocated_clusters, fragmented_clusters, compressed_clusters;
	/* Corruptions found before a repair, when one ran (qemu-img prints
	 * both the pre-repair and the post-repair state). */
	int corruptions_before, leaks_before;
};
/* -ENOTSUP when the format has no checks; otherwise 0 (see @res) or -errno. */
int vd_node_check(struct vd_node *n, struct vd_check_result *res, int fix);

/*
 * Change creation options of an open, writable image (qemu-img amend):
 * @opts holds only the options to change (qcow2: compat, lazy_refcounts,
 * refcount_bits, size, backing_file/backing_fmt naming the current ones).
 * Runs drained, like a check.  -ENOTSUP (with the message) when the format
 * cannot amend; -errno with @err set otherwise.
 */
int vd_node_amend(struct vd_node *n, struct vd_opts *opts, bool force, struct vd_error *err);

/* Persistent dirty bitmaps (qemu-img bitmap; qcow2). */
enum vd_bitmap_action {
	VD_BITMAP_ADD,
	VD_BITMAP_REMOVE,
	VD_BITMAP_CLEAR,
	VD_BITMAP_ENABLE,
	VD_BITMAP_DISABLE,
	VD_BITMAP_MERGE,
};
/*
 * Apply @act to bitmap @name of @n (open read-write; the bitmaps it
 * records writes in are stored first and loaded again after).
 * ADD takes @granularity (0: the default); MERGE ORs bitmap @src_name of
 * @src (NULL: @n) into @name.  -errno with QEMU's message in @err.
 */
int vd_node_bitmap(struct vd_node *n, enum vd_bitmap_action act, const char *name,
		   uint64_t granularity, struct vd_node *src, const char *src_name,
		   struct vd_error *err);

/* Internal snapshots (qcow2). */
struct vd_snapshot_info {
	char id[128];
	char name[256];
	uint64_t vm_state_size;
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock_nsec;
	uint64_t icount; /* UINT64_MAX when unknown */
};
/* Returns the number of snapshots and a malloc'd array in *out, or -errno. */
int vd_node_snapshot_list(struct vd_node *n, struct vd_snapshot_info **out);
/* Create a snapshot named @name, dated now; the driver picks the id. */
int vd_node_snapshot_create(struct vd_node *n, const char *name, struct vd_error *err);
int vd_node_snapshot_goto(struct vd_node *n, const char *id_or_name, struct vd_error *err);
int vd_node_snapshot_delete(struct vd_node *n, const char *id_or_name, struct vd_error *err);
/*
 * Read the internal snapshot with ID @id and/or name @name (NULL: not a
 * criterion) through @n, open read-only, from now until @n is closed, as
 * qemu-img convert -l snapshot.id=ID,snapshot.name=NAME does (QEMU's
 * bdrv_snapshot_load_tmp).  The image is not changed; @n keeps its size.
 * -errno with QEMU's message in @err ("Can't find snapshot", "Device is
 * not readonly", "Block format 'raw' used by device '' does not support
 * temporarily loading internal snapshots").
 */
int vd_node_snapshot_load_tmp(struct vd_node *n, const char *id, const char *name,
			      struct vd_error *err);
/* By ID, then, if none has that ID, by name (qemu-img convert -l NAME;
 * QEMU's bdrv_snapshot_load_tmp_by_id_or_name). */
int vd_node_snapshot_load_tmp_by_id_or_name(struct vd_node *n, const char *id_or_name,
					    struct vd_error *err);

/*
 * Backing chains.  vd_node_change_backing_file rewrites what @n's image
 * names as its backing file (NULL or "": none) and format (may be NULL), as
 * qemu-img rebase -u does; the open backing node is not changed.
 * vd_node_make_empty deallocates everything in @n so that it reads as its
 * backing file (qemu-img commit empties the overlay so).  @n must be open
 * read-write.  -ENOTSUP with a message when the format cannot.
 */
int vd_node_change_backing_file(struct vd_node *n, const char *backing_file,
				const char *backing_fmt, struct vd_error *err);
int vd_node_make_empty(struct vd_node *n, struct vd_error *err);

/*
 * qemu-img measure: the bytes an image of @format needs, created with @opts
 * (creation options, "size" among them unless @in is given) and, when @in
 * is not NULL, holding @in's data as read through its chain.  required:
 * with the data present; fully_allocated: with every cluster allocated;
 * bitmaps (when has_bitmaps): what @in's persistent bitmaps would take.
 */
struct vd_measure_info {
	uint64_t required;
	uint64_t fully_allocated;
	bool has_bitmaps;
	uint64_t bitmaps;
};
int vd_image_measure(const char *format, struct vd_opts *opts, struct vd_node *in,
		     struct vd_measure_info *info, struct vd_error *err);

/* Guess the format of @filename from its first bytes, with QEMU 7.2's
 * magics and scores.  A format QEMU knows that vdisk cannot open is an error
 * naming it (-ENOTSUP), never raw.  Formats that can reference other files
 * are never returned: their detection is an error asking for an explicit
 * format (vd_node_open relaxes this for opens with VD_OPEN_NO_BACKING). */
int vd_probe_format(const char *filename, const char **format, struct vd_error *err);

/* Names of the registered drivers, NULL-terminated (static storage). */
const char *const *vd_driver_names(void);

#ifdef __cplusplus
}
#endif

#endif
