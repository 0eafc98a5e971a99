/* SPDX-License-Identifier: MIT */
/*
 * Block backends: the handle a device model (or an export) holds on the block
 * layer, QEMU's BlockBackend role.
 *
 * A struct vd_blk has a name (the -drive id, "" for an anonymous backend such
 * as an export's), an optional root node (NULL: no medium), the error policy
 * of the drive (rerror=, werror=), the io-status that query-block reports, and
 * the medium state of removable devices: tray open or closed, medium locked.
 *
 * A device model attaches with vd_blk_attach_dev() and a table of callbacks
 * (struct vd_blk_dev_ops).  The backend keeps the tray and lock state; the
 * device changes it with vd_blk_set_tray_open() (the guest opened or closed
 * the tray: START STOP UNIT) and vd_blk_lock_medium() (PREVENT ALLOW MEDIUM
 * REMOVAL), and learns of changes made from outside (QMP eject, media change)
 * through change_media().  So there is one place that knows whether the tray
 * is open, and every change of it raises DEVICE_TRAY_MOVED exactly once.
 *
 * Backends live in a struct vd_blk_registry that the program owns (the
 * machine, the storage daemon) and hands to the monitor: no process-wide
 * list.  The registry finds backends by name or by the qdev id of their
 * device, and nodes by node-name (in the graphs under its backends and among
 * the nodes added on their own, as --blockdev does).  Events (BLOCK_IO_ERROR,
 * DEVICE_TRAY_MOVED) leave the block layer through the registry's notifiers;
 * the monitor subscribes and turns them into QMP events.
 *
 * Everything here runs on the thread of the loop that owns the backends (the
 * machine's main loop); none of it blocks except vd_blk_remove_node(), which
 * drains the medium's requests.
 *
 * Typical use by a machine:
 *
 *	struct vd_blk_registry *reg;
 *	struct vd_blk *blk;
 *	vd_blk_registry_new(&reg);
 *	vd_blk_new(reg, "ide0-cd0", &blk);            // -drive id=
 *	vd_blk_set_on_error(blk, VD_BLK_ON_ERROR_REPORT, VD_BLK_ON_ERROR_ENOSPC);
 *	vd_blk_insert_node(blk, node);                 // takes a reference
 *	vd_blk_attach_dev(blk, "cd0", &ide_cd_ops, s); // by the device model
 *	...
 *	vd_blk_unref(blk);                             // leaves the registry
 *	vd_blk_registry_free(reg);
 *
 * and by a device completing a request with an error:
 *
 *	switch (vd_blk_get_error_action(blk, is_read, -ret)) {
 *	case VD_BLK_ACTION_STOP:   keep the request for a retry after "cont";
 *	case VD_BLK_ACTION_REPORT: complete it with an error status;
 *	case VD_BLK_ACTION_IGNORE: complete it as if it succeeded;
 *	}
 *	vd_blk_report_error(blk, action, is_read, -ret);
 */
#ifndef VDISK_BACKEND_H
#define VDISK_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/block.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_blk;
struct vd_blk_registry;

/* rerror= / werror= (QEMU's BlockdevOnError; "auto" is resolved at parse
 * time: report for reads, enospc for writes). */
enum vd_blk_on_error {
	VD_BLK_ON_ERROR_REPORT,
	VD_BLK_ON_ERROR_IGNORE,
	VD_BLK_ON_ERROR_ENOSPC,
	VD_BLK_ON_ERROR_STOP,
};
/* "report", "ignore", "enospc", "stop"; NULL-terminated, by enum value. */
extern const char *const vd_blk_on_error_names[];

/* What a device does with a failed request (QEMU's BlockErrorAction). */
enum vd_blk_error_action {
	VD_BLK_ACTION_IGNORE,
	VD_BLK_ACTION_REPORT,
	VD_BLK_ACTION_STOP,
};
extern const char *const vd_blk_action_names[]; /* "ignore", "report", "stop" */

/* query-block's io-status (QEMU's BlockDeviceIoStatus). */
enum vd_blk_io_status {
	VD_BLK_IOSTATUS_OK,
	VD_BLK_IOSTATUS_FAILED,
	VD_BLK_IOSTATUS_NOSPACE,
};
extern const char *const vd_blk_io_status_names[]; /* "ok", "failed", "nospace" */

/*
 * Callbacks of the device model attached to a backend.  All run on the
 * backend's loop thread, from a QMP command or from vd_blk_* calls; none may
 * call back into the function that invoked it with the same backend.
 */
struct vd_blk_dev_ops {
	/* The device has a tray (CD-ROM).  Without one, media changes happen
	 * at once and no DEVICE_TRAY_MOVED is sent. */
	bool has_tray;
	/*
	 * The medium is going away (@load false) or came in (@load true) by a
	 * command from outside the guest.  The backend has already updated
	 * the tray state (open on unload, closed on load); on unload the old
	 * medium may still be in the open tray (it is taken out next), on
	 * load the new one is in.  The device updates what the guest sees
	 * (ATAPI: UNIT ATTENTION, media changed) and need not call
	 * vd_blk_set_tray_open().  Non-NULL means the medium is removable
	 * (query-block "removable").
	 */
	void (*change_media)(void *opaque, bool load);
	/* Someone asked to open the tray while the guest keeps it locked: a
	 * device with media status notification tells the guest (ATAPI event
	 * "eject request").  @force: the tray is opened regardless. NULL: no-op. */
	void (*eject_request)(void *opaque, bool force);
	/* The medium's size changed (block_resize): capacity, config interrupt.
	 * NULL: the device learns it on the next request. */
	void (*resize)(void *opaque);
};

/* --- the registry -------------------------------------------------------- */

/* Events leaving the block layer; the monitor makes QMP events of them. */
enum vd_blk_event_type {
	VD_BLK_EVENT_IO_ERROR, /* BLOCK_IO_ERROR */
	VD_BLK_EVENT_TRAY_MOVED, /* DEVICE_TRAY_MOVED */
};
struct vd_blk_event {
	enum vd_blk_event_type type;
	struct vd_blk *blk;
	/* VD_BLK_EVENT_IO_ERROR */
	bool is_read;
	enum vd_blk_error_action action;
	int error; /* positive errno */
	/* VD_BLK_EVENT_TRAY_MOVED */
	bool tray_open;
};
typedef void vd_blk_event_fn(void *opaque, const struct vd_blk_event *ev);
/* A VM stop request (an error with action "stop"): the machine stops the
 * guest with run state "io-error".  Called after the event notifiers, so a
 * STOP event follows BLOCK_IO_ERROR as in QEMU. */
typedef void vd_blk_stop_fn(void *opaque);

int vd_blk_registry_new(struct vd_blk_registry **out); /* 0 or -ENOMEM */
/* Free the registry; backends still in it are detached from it (not freed:
 * their owners unref them) and the standalone nodes are unref'd. */
void vd_blk_registry_free(struct vd_blk_registry *reg);

/* Subscribe to events; returns 0 or -ENOMEM.  Remove with the same pair. */
int vd_blk_registry_add_notifier(struct vd_blk_registry *reg, vd_blk_event_fn *fn, void *opaque);
void vd_blk_registry_remove_notifier(struct vd_blk_registry *reg, vd_blk_event_fn *fn,
				     void *opaque);
void vd_blk_registry_set_stop_handler(struct vd_blk_registry *reg, vd_blk_stop_fn *fn,
				      void *opaque);

/* Backends in creation order: start with NULL. */
struct vd_blk *vd_blk_next(const struct vd_blk_registry *reg, const struct vd_blk *prev);
/* By name (-drive id); NULL if none or @name is empty. */
struct vd_blk *vd_blk_find(const struct vd_blk_registry *reg, const char *name);
/* By the qdev id of the attached device; NULL if none. */
struct vd_blk *vd_blk_find_by_qdev(const struct vd_blk_registry *reg, const char *qdev_id);

/*
 * Nodes that exist without a backend (--blockdev, exports): the registry
 * holds a reference.  A node without a node-name gets an automatic one
 * ("#blockN").  -EEXIST if the name is taken in the registry.
 */
int vd_blk_registry_add_node(struct vd_blk_registry *reg, struct vd_node *node);
/* Drop the registry's reference; -ENOENT if it does not hold one. */
int vd_blk_registry_remove_node(struct vd_blk_registry *reg, struct vd_node *node);
/* A node by node-name, anywhere: standalone nodes and their children, and
 * the graphs under the backends.  NULL if none.  No reference is taken. */
struct vd_node *vd_blk_registry_find_node(const struct vd_blk_registry *reg, const char *name);
/* Standalone nodes in insertion order: start with NULL. */
struct vd_node *vd_blk_registry_next_node(const struct vd_blk_registry *reg,
					  const struct vd_node *prev);
/* Reset the io-status of every backend (QMP "cont" does it). */
void vd_blk_registry_iostatus_reset(struct vd_blk_registry *reg);

/* --- backends ------------------------------------------------------------ */

/*
 * Create a backend named @name (NULL or "" for an anonymous one) in @reg
 * (may be NULL: then events go nowhere and the stop handler is never
 * called).  Starts with no medium, read-write, rerror=report,
 * werror=enospc, io-status disabled.  -EEXIST if @reg has a backend of that
 * name, -EINVAL if the name is not printable ASCII, -ENOMEM.
 */
int vd_blk_new(struct vd_blk_registry *reg, const char *name, struct vd_blk **out);
void vd_blk_ref(struct vd_blk *blk);
/* The last reference removes the medium (draining it), leaves the registry
 * and frees the backend. */
void vd_blk_unref(struct vd_blk *blk);

const char *vd_blk_name(const struct vd_blk *blk); /* "" if anonymous */
struct vd_blk_registry *vd_blk_registry(const struct vd_blk *blk);

/*
 * Attach the device model: @qdev_id is the device's id= (QEMU reports a
 * device without one by its QOM path, "/machine/unattached/device[N]"; pass
 * such a path, or "" / NULL for none), @ops its callbacks (static storage), @opaque their argument.
 * Attaching enables the io-status (as QEMU's devices that honour
 * rerror/werror do).  -EBUSY if a device is attached already.
 */
int vd_blk_attach_dev(struct vd_blk *blk, const char *qdev_id, const struct vd_blk_dev_ops *ops,
		      void *opaque);
void vd_blk_detach_dev(struct vd_blk *blk);
bool vd_blk_has_dev(const struct vd_blk *blk);
const char *vd_blk_qdev_id(const struct vd_blk *blk); /* "" if none */

/* The medium: NULL when there is none. */
struct vd_node *vd_blk_root(const struct vd_blk *blk);
/* Insert a medium (takes a reference).  -EBUSY if one is inserted.  Does not
 * call the device: the medium operations below (QMP's) do. */
int vd_blk_insert_node(struct vd_blk *blk, struct vd_node *node);
/* Remove the medium (drains its requests, drops the reference).  No-op
 * without one. */
void vd_blk_remove_node(struct vd_blk *blk);
bool vd_blk_is_inserted(const struct vd_blk *blk);

/*
 * Open the tray from outside the guest (QMP eject, media change): as QEMU's
 * do_open_tray.  Returns 0 when the tray is open afterwards (or the device
 * has none: -ENOSYS), -ENOTSUP if the medium is not removable, and
 * -EINPROGRESS when the guest holds the medium locked and @force is false:
 * then the device got an eject request and the tray stays closed.
 */
int vd_blk_open_tray(struct vd_blk *blk, bool force);
/* Close the tray (reload the medium if there is one).  -ENOTSUP if the
 * medium is not removable; 0 otherwise (no-op without a tray or when
 * closed). */
int vd_blk_close_tray(struct vd_blk *blk);
/*
 * Take the medium out as blockdev-remove-medium does (after an open tray):
 * 0 (also when there was none), -ENOTSUP if a device without a tray is
 * attached, -EBUSY if the tray is closed.  A device without a tray is told
 * (change_media(false)) after the removal.
 */
int vd_blk_remove_medium(struct vd_blk *blk);
/*
 * Put @node in as blockdev-insert-medium does (takes a reference): -ENOTSUP
 * if a device without a tray is attached, -EBUSY if the tray is closed,
 * -EEXIST if there is a medium already.  The tray stays open: close it with
 * vd_blk_close_tray().  A backend without a device just gets the node.
 */
int vd_blk_insert_medium(struct vd_blk *blk, struct vd_node *node);

/* Medium removable from outside: no device, or a device with change_media. */
bool vd_blk_is_removable(const struct vd_blk *blk);
bool vd_blk_has_tray(const struct vd_blk *blk);
bool vd_blk_is_tray_open(const struct vd_blk *blk);
bool vd_blk_is_locked(const struct vd_blk *blk);
/* The guest opened (true) or closed (false) the tray; raises
 * DEVICE_TRAY_MOVED when the state changes (QEMU's blk_eject). */
void vd_blk_set_tray_open(struct vd_blk *blk, bool open);
/* The guest locked or unlocked the medium. */
void vd_blk_lock_medium(struct vd_blk *blk, bool locked);
/* The medium was resized (block_resize): tell the device. */
void vd_blk_resized(struct vd_blk *blk);

/* Read-only backend: writes are refused at the device. Inserting a medium
 * does not change it. */
void vd_blk_set_read_only(struct vd_blk *blk, bool ro);
bool vd_blk_is_read_only(const struct vd_blk *blk);

/* --- I/O ------------------------------------------------------------------ */

/*
 * Requests through the handle: what every device, export and tool uses, so
 * that the rules the same for all of them are enforced here, once, before a
 * request reaches the node graph:
 *
 *   - no medium (none inserted): -ENOMEDIUM;
 *   - a write, discard or write-zeroes on a read-only backend: -EROFS;
 *   - offset or bytes negative, bytes over VD_REQUEST_MAX_BYTES: -EINVAL;
 *   - a range past the current size of the medium: -EIO;
 *   - every request is counted in flight from submission until its
 *     completion has run, so vd_blk_drain() and removing the medium wait
 *     for all of them.
 *
 * The error policy (rerror=/werror=) is not applied behind the device's
 * back: a failed request completes with its -errno, and the device asks
 * vd_blk_handle_error() what to do, because what "report" means is the
 * device's own (an ATA error register, a virtio status, an NBD error).
 *
 * The three families have the same semantics:
 *  - vd_blk_co_*():  in a coroutine on the medium's loop; 0 or -errno.
 *  - vd_blk_aio_*(): on the medium's loop thread; @cb runs exactly once,
 *                    never before the call returns, also on error.
 *  - vd_blk_p*():    synchronous (tools, tests, a device's attach-time
 *                    reads): drive the current thread's loop.
 * Flags are the VD_REQ_* flags of block.h.  With the write cache disabled
 * (vd_blk_set_write_cache(false)) writes are durable on completion.
 */
int vd_coroutine_fn vd_blk_co_preadv(struct vd_blk *blk, int64_t offset, int64_t bytes,
				     const struct vd_qiov *qiov, int flags);
int vd_coroutine_fn vd_blk_co_pwritev(struct vd_blk *blk, int64_t offset, int64_t bytes,
				      const struct vd_qiov *qiov, int flags);
int vd_coroutine_fn vd_blk_co_flush(struct vd_blk *blk);
int vd_coroutine_fn vd_blk_co_pdiscard(struct vd_blk *blk, int64_t offset, int64_t bytes);
int vd_coroutine_fn vd_blk_co_pwrite_zeroes(struct vd_blk *blk, int64_t offset, int64_t bytes,
					    int flags);
/* VD_BLOCK_* status of the medium, as vd_co_block_status() (no check for
 * a read-only backend; -ENOMEDIUM without a medium). */
int vd_coroutine_fn vd_blk_co_block_status(struct vd_blk *blk, int64_t offset, int64_t bytes,
					   int64_t *pnum, int64_t *map);
/* The same through the medium's whole backing chain, as
 * vd_co_block_status_above(): *depth (may be NULL) is 1 for the top node,
 * 2 for its backing node and so on, 0 where no node has the range. */
int vd_coroutine_fn vd_blk_co_block_status_above(struct vd_blk *blk, int64_t offset, int64_t bytes,
						 int64_t *pnum, int *depth);

void vd_blk_aio_preadv(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov, int flags,
		       vd_completion_fn *cb, void *opaque);
void vd_blk_aio_pwritev(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov, int flags,
			vd_completion_fn *cb, void *opaque);
void vd_blk_aio_flush(struct vd_blk *blk, vd_completion_fn *cb, void *opaque);
void vd_blk_aio_pdiscard(struct vd_blk *blk, int64_t offset, int64_t bytes, vd_completion_fn *cb,
			 void *opaque);
void vd_blk_aio_pwrite_zeroes(struct vd_blk *blk, int64_t offset, int64_t bytes, int flags,
			      vd_completion_fn *cb, void *opaque);

/*
 * Zero-copy reads, for an export that sends data straight from the file
 * (sendfile): when the @bytes at @offset of the medium are stored verbatim
 * in a host file whose reads never wait for a device (a buffered,
 * memory-backed file under raw), a new descriptor of that file (close it)
 * and where the bytes start in it; the read is counted as done.  The bytes
 * are read when the caller sends them: a write that lands in between shows,
 * as it may for any read still in flight.  -ENOTSUP otherwise (read through
 * vd_blk_aio_preadv), or the handle's errors.
 */
int vd_blk_host_range(struct vd_blk *blk, int64_t offset, int64_t bytes, int *fd,
		      int64_t *host_offset);

int vd_blk_pread(struct vd_blk *blk, int64_t offset, void *buf, int64_t bytes);
int vd_blk_preadv(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov);
int vd_blk_pwritev(struct vd_blk *blk, int64_t offset, const struct vd_qiov *qiov, int flags);
int vd_blk_pwrite(struct vd_blk *blk, int64_t offset, const void *buf, int64_t bytes, int flags);
int vd_blk_flush(struct vd_blk *blk);
int vd_blk_pdiscard(struct vd_blk *blk, int64_t offset, int64_t bytes);
int vd_blk_pwrite_zeroes(struct vd_blk *blk, int64_t offset, int64_t bytes, int flags);

/* Wait until none of the handle's requests is in flight (drives the
 * medium's loop, or waits in a coroutine).  Requests kept for a retry
 * (vd_blk_retry_keep) are not in flight. */
void vd_blk_drain(struct vd_blk *blk);
uint64_t vd_blk_in_flight(const struct vd_blk *blk);

/* The medium's size in bytes, -ENOMEDIUM without one. */
int64_t vd_blk_getlength(const struct vd_blk *blk);
/* The medium's limits (a default set, alignment 1, without one). */
const struct vd_limits *vd_blk_limits(const struct vd_blk *blk);
/* The loop the medium lives on (the current thread's without one). */
struct vd_loop *vd_blk_loop(const struct vd_blk *blk);
/* Writes through the handle are refused: the backend is read-only, or the
 * medium is. */
bool vd_blk_is_writable(const struct vd_blk *blk);

/* The write cache the device shows the guest (IDE SET FEATURES, virtio's
 * writeback field): disabled, every write is durable on completion.  Kept
 * across media changes. */
void vd_blk_set_write_cache(struct vd_blk *blk, bool enabled);
bool vd_blk_write_cache(const struct vd_blk *blk);

/* Accounting of the medium (query-blockstats): see vd_node_get_stats.
 * Without a medium the statistics read as zero. */
void vd_blk_get_stats(const struct vd_blk *blk, struct vd_acct_stats *st);
/* A device merged @count requests into one it submitted. */
void vd_blk_acct_merged(struct vd_blk *blk, enum vd_acct_type type, unsigned count);

/* --- errors -------------------------------------------------------------- */

void vd_blk_set_on_error(struct vd_blk *blk, enum vd_blk_on_error on_read,
			 enum vd_blk_on_error on_write);
enum vd_blk_on_error vd_blk_get_on_error(const struct vd_blk *blk, bool is_read);
/* Parse "report", "ignore", "enospc", "stop" or "auto" (the default of the
 * direction) as -drive rerror=/werror= take them; -EINVAL otherwise.
 * "enospc" is refused for reads (QEMU: "enospc is not supported for
 * rerror"). */
int vd_blk_parse_on_error(const char *str, bool is_read, enum vd_blk_on_error *out,
			  struct vd_error *err);

/* The action for a request that failed with @error (a positive or negative
 * errno), as QEMU's blk_get_error_action. */
enum vd_blk_error_action vd_blk_get_error_action(const struct vd_blk *blk, bool is_read, int error);
/*
 * Report the failure: with action STOP, first sets the io-status (failed or
 * nospace), then sends BLOCK_IO_ERROR to the notifiers and asks the stop
 * handler to stop the VM; otherwise sends the event only.
 */
void vd_blk_report_error(struct vd_blk *blk, enum vd_blk_error_action action, bool is_read,
			 int error);

/*
 * A request of the device failed with @error (positive or negative errno):
 * decide what to do by the policy (vd_blk_get_error_action) and report it
 * (vd_blk_report_error).  The device then reports the error to its guest,
 * completes the request as if it had succeeded, or keeps it for a retry
 * (below), as the returned action says.
 */
enum vd_blk_error_action vd_blk_handle_error(struct vd_blk *blk, bool is_read, int error);

/*
 * The retry list: requests that failed under the "stop" policy wait here,
 * in the order they failed, until the device resubmits them once the VM
 * runs again (QMP "cont"; the device picks the moment, for example after
 * bus mastering is back).  The device embeds a struct vd_blk_retry in its
 * request and fills @resubmit; the list is the backend's.
 */
struct vd_blk_retry {
	struct vd_blk_retry *next; /* the backend's */
	/* Issue the request again.  Called once, after it left the list. */
	void (*resubmit)(struct vd_blk_retry *r);
};
void vd_blk_retry_keep(struct vd_blk *blk, struct vd_blk_retry *r);
/* Resubmit every kept request, oldest first (those kept meanwhile wait for
 * the next call). */
void vd_blk_retry_all(struct vd_blk *blk);
/* Take out of the list each kept request for which @match says true (all
 * with @match NULL) and hand it to @drop, which frees it: a device reset. */
void vd_blk_retry_drop(struct vd_blk *blk,
		       bool (*match)(const struct vd_blk_retry *r, void *opaque),
		       void (*drop)(struct vd_blk_retry *r), void *opaque);
unsigned vd_blk_retry_count(const struct vd_blk *blk);

/* The io-status: reported by query-block only while enabled (a device is
 * attached, or vd_blk_iostatus_enable was called) and the policy can stop
 * (werror enospc/stop or rerror stop), as QEMU's blk_iostatus_is_enabled. */
void vd_blk_iostatus_enable(struct vd_blk *blk);
bool vd_blk_iostatus_is_enabled(const struct vd_blk *blk);
enum vd_blk_io_status vd_blk_iostatus(const struct vd_blk *blk);
void vd_blk_iostatus_reset(struct vd_blk *blk);

#ifdef __cplusplus
}
#endif

#endif
