/* SPDX-License-Identifier: MIT */
/*
 * The virtio-blk device (virtio 1.2 section 5.2), written once for every
 * transport: the emulated virtio-pci device and the vhost-user-blk export.
 *
 * The transport owns the queues' ring mappings and notifications; this code
 * owns request parsing and execution.  Requests go to the block layer
 * asynchronously with iovecs that point straight into guest memory.  In-flight
 * requests are counted per queue: vd_virtio_blk_stop_queue() and
 * vd_virtio_blk_reset() wait for them (driving the medium's loop), so nothing is
 * written to guest memory after they return; the _nowait resets orphan them
 * instead, for transports that must not run the loop (an MMIO handler).
 * Such a transport asks for bounce_reads: a read then goes to the block
 * layer with a buffer of its own, copied into guest memory only when it
 * completes for a queue that was not reset meanwhile, so that an orphan
 * writes nothing at all.  vd_virtio_blk_set_dma(false) (bus mastering
 * off) parks completions, results and data, until DMA is allowed again.
 * A failed request follows the backend's error policy (rerror=/werror=,
 * vd_blk_handle_error): reported, ignored, or kept on the backend's retry
 * list until vd_virtio_blk_restart().
 *
 * Everything runs on the loop thread of the backend's medium.
 */
#ifndef VDISK_VIRTIO_BLK_H
#define VDISK_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/backend.h>
#include <vdisk/virtio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Feature bits (section 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_GEOMETRY 4
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_TOPOLOGY 10
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values (section 5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_T_BARRIER 0x80000000u /* legacy, ignored */
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP 1
#define VIRTIO_BLK_ID_BYTES 20

/* struct virtio_blk_config (section 5.2.4), little-endian, 60 bytes up to
 * write_zeroes_may_unmap and its padding. */
#define VD_VIRTIO_BLK_CONFIG_SIZE 60
#define VD_VIRTIO_BLK_CONFIG_WCE_OFFSET 32

struct vd_virtio_blk_conf {
	struct vd_blk *blk; /* the drive; a reference is taken */
	uint16_t num_queues; /* 1..64 */
	uint16_t queue_size; /* max entries per queue, for seg_max; 0: 256 */
	bool read_only; /* offer RO and fail writes */
	uint32_t logical_block_size; /* 0: 512 */
	const char *serial; /* GET_ID; NULL: none */
	/* Reads through bounce buffers (see above), for transports that use
	 * the _nowait resets: at most 64 MiB of them per device at a time,
	 * later reads wait (one alone may be larger). */
	bool bounce_reads;
	/* request-merging=off: adjacent reads or writes taken from the ring in
	 * one pass are not merged into one block-layer request. */
	bool no_merge;
};

struct vd_virtio_blk;

/* The transport's hooks (all may be NULL). */
struct vd_virtio_blk_ops {
	/* Used entries were added to queue @q and the driver wants to hear. */
	void (*notify)(void *opaque, unsigned q);
	/* The device became NEEDS_RESET (a queue broke). */
	void (*broken)(void *opaque, const char *why);
	/* The configuration changed (vd_virtio_blk_resized): the transport
	 * sends a configuration change notification (section 2.5.1). */
	void (*config_changed)(void *opaque);
};

int vd_virtio_blk_new(const struct vd_virtio_blk_conf *conf, const struct vd_virtio_blk_ops *ops,
		      void *opaque, struct vd_virtio_blk **out);
/* Drains in-flight requests, then frees. */
void vd_virtio_blk_free(struct vd_virtio_blk *b);

uint64_t vd_virtio_blk_features(const struct vd_virtio_blk *b);
/* The driver's accepted features (sets event index / indirect on every
 * queue). */
void vd_virtio_blk_set_features(struct vd_virtio_blk *b, uint64_t features);
uint16_t vd_virtio_blk_num_queues(const struct vd_virtio_blk *b);
struct vd_vq *vd_virtio_blk_queue(struct vd_virtio_blk *b, unsigned q);

/* Config space: copy @len bytes at @offset (zeroes past the structure).
 * Returns -EINVAL if the range is outside 0..255. */
int vd_virtio_blk_get_config(struct vd_virtio_blk *b, uint32_t offset, void *buf, uint32_t len);
/* A driver write: only writeback (with CONFIG_WCE) is writable. */
int vd_virtio_blk_set_config(struct vd_virtio_blk *b, uint32_t offset, const void *buf,
			     uint32_t len);

/* The queue was kicked: process every available request. */
void vd_virtio_blk_handle_queue(struct vd_virtio_blk *b, unsigned q);
/* Wait for queue @q's in-flight requests; afterwards nothing touches its
 * guest memory (requests kept for a retry stay kept, untouched, until
 * vd_virtio_blk_restart() or a reset). */
void vd_virtio_blk_stop_queue(struct vd_virtio_blk *b, unsigned q);
/* Requests in flight on queue @q (all queues with q = ~0u). */
unsigned vd_virtio_blk_inflight(const struct vd_virtio_blk *b, unsigned q);
/* Queue reset (virtio 1.2 section 2.6.1): drain queue @q and forget its
 * rings and indices; clears NEEDS_RESET unless another queue is broken. */
void vd_virtio_blk_reset_queue(struct vd_virtio_blk *b, unsigned q);
/* Device reset (status 0): drain everything, forget rings and features. */
void vd_virtio_blk_reset(struct vd_virtio_blk *b);
/*
 * The same two resets without waiting (and so without running the loop):
 * requests in flight are orphaned, their completions write neither the
 * status byte nor the used ring and send no notification; kept requests
 * are dropped.  A read the block layer is still doing may fill its data
 * buffers until vd_virtio_blk_inflight() drops to 0: a transport reports
 * the reset complete only then (virtio 1.2 section 4.1.4.3.2: the driver
 * waits for device_status, or queue_reset, to read 0).
 */
void vd_virtio_blk_reset_nowait(struct vd_virtio_blk *b);
void vd_virtio_blk_reset_queue_nowait(struct vd_virtio_blk *b, unsigned q);
/*
 * Bus mastering (PCI 3.0 section 6.2.2): with @enabled false, requests that
 * complete write nothing to guest memory (with bounce_reads, not even read
 * data) and notify nobody; they wait, in completion order, until DMA is
 * enabled again, then complete as usual.  The transport processes no kick
 * meanwhile.  A reset drops the parked requests and enables DMA.
 */
void vd_virtio_blk_set_dma(struct vd_virtio_blk *b, bool enabled);
/* Requests parked while DMA is off. */
unsigned vd_virtio_blk_parked(const struct vd_virtio_blk *b);
/*
 * Wait until no request is in the block layer (orphans included; parked
 * and kept ones are not there).  In a coroutine (a QMP handler) it yields;
 * elsewhere it runs the medium's loop, so never from a register access.
 * Kicks must not be processed meanwhile (the machine is stopped), else it
 * may wait as long as the guest keeps the device busy.
 */
void vd_virtio_blk_drain(struct vd_virtio_blk *b);
/* Reissue the requests the stop policy kept (QMP "cont"). */
void vd_virtio_blk_restart(struct vd_virtio_blk *b);
/* Requests kept for a retry (all queues). */
unsigned vd_virtio_blk_kept(const struct vd_virtio_blk *b);
/* NEEDS_RESET: a queue broke; the transport reports it in its status. */
bool vd_virtio_blk_needs_reset(const struct vd_virtio_blk *b);
struct vd_blk *vd_virtio_blk_backend(const struct vd_virtio_blk *b);
/* The medium changed size (block_resize): capacity is read from the backend
 * on every configuration read; this tells the transport to notify. */
void vd_virtio_blk_resized(struct vd_virtio_blk *b);

#ifdef __cplusplus
}
#endif

#endif
