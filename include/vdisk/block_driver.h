/* SPDX-License-Identifier: MIT */
/*
 * The driver interface of the block layer.
 *
 * A driver is a struct vd_block_driver filled with designated initialisers.
 * A NULL entry means the core's default, written next to each entry.  The core
 * (block/io.c) calls the request entries only after validating the request
 * (see vd_co_preadv in block.h) and fitting it to the node's struct vd_limits,
 * so drivers may assert these preconditions:
 *
 *   - they run in a coroutine on the node's loop, and may yield;
 *   - offset and bytes are multiples of limits.request_alignment;
 *   - 0 < bytes <= limits.max_transfer (when non-zero) and qiov->size == bytes;
 *   - qiov->niov <= limits.max_iov (when non-zero), and each buffer address
 *     and length is a multiple of limits.min_mem_alignment;
 *   - offset + bytes <= node size rounded up to request_alignment, except on
 *     a growable node (the protocol child of a format, or a filter on one),
 *     where writes may extend it; reads past the end must return zeroes.
 *
 * Request entries return 0 or -errno, never a short count.
 */
#ifndef VDISK_BLOCK_DRIVER_H
#define VDISK_BLOCK_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/block.h>
#include <vdisk/coroutine.h>
#include <vdisk/error.h>
#include <vdisk/iov.h>
#include <vdisk/opts.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Debug events: points in a driver's write path where the fault-injection
 * filter (blkdebug) can fail the next request.  A driver raises them on the
 * child it is about to touch with vd_debug_event(); they travel down the
 * graph to any blkdebug node.  Names as QEMU's blkdebug spells them.
 */
enum vd_debug_event {
	VD_EV_READ_AIO,
	VD_EV_WRITE_AIO,
	VD_EV_FLUSH_TO_DISK,
	VD_EV_L1_UPDATE,
	VD_EV_L2_LOAD,
	VD_EV_L2_UPDATE,
	VD_EV_L2_ALLOC_WRITE,
	VD_EV_REFBLOCK_LOAD,
	VD_EV_REFBLOCK_UPDATE,
	VD_EV_REFBLOCK_ALLOC,
	VD_EV_REFTABLE_UPDATE,
	VD_EV_CLUSTER_ALLOC,
	VD_EV_COW_READ,
	VD_EV_COW_WRITE,
	VD_EV_MAX,
};
extern const char *const vd_debug_event_names[VD_EV_MAX];

/* One in-flight request, tracked for serialisation and draining. */
struct vd_tracked_req {
	struct vd_tracked_req *next, *prev;
	int64_t offset, bytes; /* the range as aligned for serialisation */
	bool serialising;
	bool is_write;
	struct vd_co_queue waiters; /* requests waiting for this one to finish */
};

struct vd_block_driver;

struct vd_node {
	const struct vd_block_driver *drv;
	void *opaque; /* drv->instance_size bytes, zeroed */
	char *node_name;
	char *filename; /* as the user named it (or the child's, for formats) */
	struct vd_opts *options; /* the full option tree this node was opened with */
	struct vd_loop *loop;
	int refcnt;

	struct vd_node *file; /* primary child: protocol under a format, or
				  * the filtered node; NULL for protocols */
	struct vd_node *backing; /* backing node, NULL if none */

	bool read_only;
	bool growable; /* set by the parent: writes past the end extend it (the
			* core raises size after such a write) */
	/* Set by the parent: this node holds a format's metadata (the file
	 * under a qcow2, or under a filter over one; QEMU's
	 * BDRV_CHILD_METADATA), so no other user may write or resize it while
	 * it is open, even read-only, unless force_share (a protocol's image
	 * locks say so). */
	bool metadata;
	bool force_share; /* -U */
	/* The format was guessed (VD_OPEN_PROBE): a probed raw node refuses
	 * writes that would make it probe as another format. */
	bool probed;
	bool write_cache; /* device-visible write cache (true = writeback) */
	bool no_flush; /* cache=unsafe: flushes succeed without I/O */
	bool cache_direct; /* cache.direct: O_DIRECT at the protocol (inherited) */
	/* discard=unmap (the default): discards and MAY_UNMAP reach the driver;
	 * discard=ignore: discards succeed without effect (inherited). */
	bool discard_unmap;
	/* Set by the driver: overlapping writes never run concurrently. */
	bool serialise_writes;
	char *opt_prefix; /* dotted path of this node's options, for messages */
	int64_t size; /* bytes; drivers keep it current (open, truncate) */
	int supported_write_flags; /* VD_REQ_FUA if the driver honours it */
	int supported_zero_flags; /* VD_REQ_FUA | VD_REQ_MAY_UNMAP */
	struct vd_limits limits;

	/* Core state (block/io.c). */
	struct vd_tracked_req tracked; /* list head */
	int serialising_in_flight;
	uint64_t in_flight;
	struct vd_co_queue drain_waiters;
	uint64_t write_gen, flushed_gen;
	bool flush_active;
	struct vd_co_queue flush_waiters;
	struct vd_acct_stats stats;
};

struct vd_block_driver {
	const char *name;
	size_t instance_size;
	bool is_format; /* sits on a protocol child ("file") */
	bool is_filter; /* passes requests to ->file; has no data of its own */
	bool references_files; /* may open other files named in the image: never probed */
	const char *child_name; /* key of the primary child's options ("file", "image") */
	/* A format whose primary child holds metadata as well as data (qcow2,
	 * not raw): the child's node->metadata is set. */
	bool child_has_metadata;

	/* Names of the keys create() understands (NULL-terminated); the core
	 * refuses other keys before calling create().  "size" is always allowed. */
	const char *const *create_opts;
	/* A format whose create() writes through any protocol (nbd, rbd), not
	 * only local files: others are refused up front on such a name. */
	bool create_any_protocol;

	/* Score 0..100 that @buf (the first @len bytes) is this format. NULL: never. */
	int (*probe)(const uint8_t *buf, size_t len, const char *filename);

	/*
	 * Open: parse the driver's own keys from @opts (reading them marks them
	 * used), open children with vd_node_open_child(), set n->size, limits
	 * and supported flags.  Runs in a coroutine.  Returns 0 or -errno with
	 * @err set; on failure the driver has released what it acquired, except
	 * the children it stored in n->file and n->backing: the core unrefs
	 * those, after a failed open as after close.
	 */
	int (*open)(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err);
	/* Release everything; children are unref'd by the core afterwards. */
	void (*close)(struct vd_node *n);

	/* Create an image at @filename from creation options @opts (includes
	 * "size"). Not in a coroutine. NULL: the format cannot be created. */
	int (*create)(const char *filename, struct vd_opts *opts, struct vd_error *err);

	int (*co_preadv)(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			 int flags);
	/* Flags are limited to supported_write_flags (VD_REQ_FUA) or
	 * VD_REQ_COMPRESSED; the core emulates FUA with a flush otherwise. */
	int (*co_pwritev)(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
			  int flags);
	/* Make all completed writes durable at this layer (write back caches).
	 * The core then flushes ->file.  NULL: nothing of its own to flush.
	 * Not called with cache.no-flush (cache=unsafe). */
	int (*co_flush)(struct vd_node *n);
	/* Deallocate; reading the range afterwards may return anything the format
	 * allows (zeroes for file). Advisory: -ENOTSUP is turned into success.
	 * NULL: forward to ->file for filters, else -ENOTSUP. */
	int (*co_pdiscard)(struct vd_node *n, int64_t offset, int64_t bytes);
	/* Make the range read as zeroes; VD_REQ_MAY_UNMAP allows deallocating.
	 * -ENOTSUP makes the core write a zero buffer (unless NO_FALLBACK). */
	int (*co_pwrite_zeroes)(struct vd_node *n, int64_t offset, int64_t bytes, int flags);
	/* See vd_co_block_status.  NULL: DATA|ALLOCATED for the whole range, or
	 * forwarded to ->file for filters. */
	int (*co_block_status)(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			       int64_t *map, struct vd_node **file);
	/* Change the size; set n->size. NULL: -ENOTSUP. */
	int (*co_truncate)(struct vd_node *n, int64_t size, bool exact, enum vd_prealloc prealloc,
			   struct vd_error *err);
	/* Host bytes in use, -ENOTSUP if unknown. NULL: that of ->file. */
	int64_t (*get_allocated_size)(struct vd_node *n);
	/* Zero-copy reads (vd_node_host_range): the range is stored verbatim
	 * in a host file whose reads never wait for a device; *fd is the
	 * node's own (borrowed).  NULL or -ENOTSUP: read through co_preadv. */
	int (*host_range)(struct vd_node *n, int64_t offset, int64_t bytes, int *fd,
			  int64_t *host_offset);
	/* Fill format-specific fields (cluster size, dirty flag, backing file,
	 * format_specific). NULL: nothing beyond the common fields. */
	int (*get_info)(struct vd_node *n, struct vd_image_info *info, struct vd_error *err);
	/* Recompute n->limits after open or a child change. NULL: inherit from
	 * ->file (request_alignment, min_mem_alignment, max_transfer, max_iov). */
	void (*refresh_limits)(struct vd_node *n);
	/* A debug event was raised on this node. NULL: pass to ->file. */
	void (*debug_event)(struct vd_node *n, enum vd_debug_event ev);

	/*
	 * The node changes loops (vd_node_set_loop()), drained.  detach_loop
	 * runs on the old loop's thread and drops what the driver holds there
	 * (an engine, a timer); attach_loop runs on the new loop's thread, with
	 * n->loop already the new loop, and takes it again.  Children are
	 * detached before and attached before their parent.  NULL: the driver
	 * keeps nothing per loop.
	 */
	void (*detach_loop)(struct vd_node *n);
	int (*attach_loop)(struct vd_node *n, struct vd_error *err);

	/*
	 * Consistency check (qemu-img check): fill @res; with @fix
	 * (VD_CHECK_FIX_*) repair what the flags allow.  Runs in a coroutine
	 * with no other request in flight on the node.  Returns 0 when the
	 * check ran to the end (whatever it found), -errno when it could not.
	 * NULL: the format has no checks (-ENOTSUP).
	 */
	int (*co_check)(struct vd_node *n, struct vd_check_result *res, int fix);

	/*
	 * qemu-img amend: change the creation options named in @opts (read
	 * each one: the core refuses those left unread) on an image opened
	 * read-write.  Runs in a coroutine with no other request in flight.
	 * @force: --force.  Returns 0 or -errno with @err set; on failure the
	 * image is consistent (in its old or new state for each step done).
	 * NULL: the format cannot amend.
	 */
	int (*co_amend)(struct vd_node *n, struct vd_opts *opts, bool force, struct vd_error *err);
	/*
	 * qemu-img bitmap: one action on the persistent dirty bitmap @name
	 * (@granularity for ADD, 0: the format's default; @src and @src_name
	 * for MERGE, @src NULL meaning @n).  Same context as co_amend.
	 * NULL: the format stores no bitmaps.
	 */
	int (*co_bitmap)(struct vd_node *n, enum vd_bitmap_action act, const char *name,
			 uint64_t granularity, struct vd_node *src, const char *src_name,
			 struct vd_error *err);

	/*
	 * Internal snapshots.  Run in a coroutine, no request in flight.
	 * list: *out is a malloc'd array (caller frees), returns the count.
	 * create: @sn->id is empty to let the driver pick the next free id.
	 * goto/delete: @id_or_name matches an ID first, then a name.
	 * NULL: -ENOTSUP.
	 */
	int (*snapshot_list)(struct vd_node *n, struct vd_snapshot_info **out);
	int (*snapshot_create)(struct vd_node *n, const struct vd_snapshot_info *sn,
			       struct vd_error *err);
	int (*snapshot_goto)(struct vd_node *n, const char *id_or_name, struct vd_error *err);
	int (*snapshot_delete)(struct vd_node *n, const char *id_or_name, struct vd_error *err);
	/*
	 * Make the snapshot with ID @id and/or name @name (NULL: not a
	 * criterion; both given: both must match) what @n reads until it is
	 * closed (QEMU's bdrv_snapshot_load_tmp, qemu-img convert/measure -l).
	 * @n is open read-only; nothing is written, the active state stays as
	 * it is and so does n->size (QEMU 7.2 keeps the image's size: reads
	 * past the snapshot's tables see unallocated space).  The snapshot's
	 * tables are untrusted and checked before use.  -ENOENT "Can't find
	 * snapshot"; -EFBIG/-EINVAL for a bad L1 table.  Same context as
	 * the other snapshot ops.  NULL: the format cannot (the core says so
	 * in QEMU's words).
	 */
	int (*snapshot_load_tmp)(struct vd_node *n, const char *id, const char *name,
				 struct vd_error *err);

	/*
	 * Backing chains (qemu-img rebase and commit).  Run in a coroutine with
	 * no request in flight on the node, which is open read-write.
	 *
	 * change_backing_file: rewrite the image's record of its backing file
	 * (@backing_file NULL: none) and format (@backing_fmt, may be NULL),
	 * as QEMU's bdrv_change_backing_file; n->backing is not touched.
	 * make_empty: make every cluster unallocated so that reads see the
	 * backing file again (QEMU's bdrv_make_empty, after a commit).
	 * NULL: -ENOTSUP.
	 */
	int (*co_change_backing_file)(struct vd_node *n, const char *backing_file,
				      const char *backing_fmt, struct vd_error *err);
	int (*co_make_empty)(struct vd_node *n, struct vd_error *err);

	/*
	 * Size a new image of this format would take (qemu-img measure): from
	 * creation options @opts ("size" and the driver's keys), or, when @in
	 * is not NULL, holding the data of @in (read through its backing
	 * chain).  Runs in a coroutine on @in's loop.  NULL: not supported.
	 */
	int (*co_measure)(struct vd_opts *opts, struct vd_node *in, struct vd_measure_info *info,
			  struct vd_error *err);
};

/* The registry (block/registry.c). */
const struct vd_block_driver *vd_driver_find(const char *name);
/* Add a driver of the embedding program (or a test).  Call before opening
 * nodes, from one thread.  -EEXIST if the name is taken, -ENOSPC when full. */
int vd_driver_register(const struct vd_block_driver *drv);

/*
 * Open the child whose options are at @key in @opts ("file", "backing",
 * "image").  A string value there is a filename for a new file node; a
 * dictionary is a full option tree; @default_driver fills in a missing
 * "driver".  Cache options (cache.direct, cache.no-flush) and read-only are
 * inherited from @parent unless the child sets them.  Marks @key used.
 */
int vd_node_open_child(struct vd_node *parent, struct vd_opts *opts, const char *key,
		       const char *default_driver, int flags, struct vd_node **child,
		       struct vd_error *err);

/* Raise a debug event on @n (walks down through ->file). */
void vd_debug_event(struct vd_node *n, enum vd_debug_event ev);

/* Trace points (util/trace.c): cheap when off; VDISK_TRACE=pattern,... */
#include <vdisk/trace.h>

#ifdef __cplusplus
}
#endif

/* The host file and offset holding [@offset, @offset + @bytes) of @n
 * verbatim, if its driver knows (->host_range): *fd is borrowed.  For raw
 * and other drivers that map one to one onto ->file.  0 or -ENOTSUP. */
int vd_node_host_range(struct vd_node *n, int64_t offset, int64_t bytes, int *fd,
		       int64_t *host_offset);

#endif
