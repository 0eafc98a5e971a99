/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk over PCI (virtio 1.2 section 4.1), the emulated machine's
 * transport for hw/virtio/virtio-blk.c.
 *
 * Modern layout (the default), as QEMU 7.2's virtio-blk-pci with
 * disable-legacy=on:
 * 1af4:1042 revision 1, class 01 00 00, subsystem 1af4:1100, INTA.
 *   BAR1  4 KiB 32-bit memory: MSI-X table at 0, PBA at 0x800,
 *         num_queues + 1 vectors.
 *   BAR4 16 KiB 64-bit prefetchable memory:
 *         0x0000 common configuration (struct virtio_pci_common_cfg)
 *         0x1000 ISR status (read clears, deasserts INTx)
 *         0x2000 device configuration (struct virtio_blk_config)
 *         0x3000 notifications, queue q at 0x3000 + 4 * q
 *   capabilities 0x40 common, 0x50 ISR, 0x60 device, 0x70 notify
 *   (notify_off_multiplier 4), 0x84 PCI configuration access, 0x98 MSI-X.
 *
 * Errors: a failed request follows the drive's rerror=/werror= (report,
 * ignore, stop, enospc) as QEMU's virtio_blk_handle_rw_error; with stop the
 * request is kept, the machine stops with BLOCK_IO_ERROR (from a bottom
 * half, as QEMU's qemu_system_vmstop_request), and QMP cont
 * (vd_virtio_pci_set_running) retries it.
 *
 * Interrupts: with MSI-X enabled, the vector the driver chose for a queue
 * (or for configuration changes); otherwise INTx, level = ISR bit 0, as QEMU's
 * virtio_pci_notify.
 *
 * Everything runs on the machine's loop thread.
 */
#ifndef VDISK_VIRTIO_PCI_H
#define VDISK_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/error.h>
#include <vdisk/virtio-blk.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_pci_bus;
struct vd_address_space;
struct vd_blk;
struct vd_virtio_pci;

/* Device status bits (virtio 1.2 section 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_FAILED 128

/* Reserved feature bit: queue reset (virtio 1.2 section 6). */
#define VIRTIO_F_RING_RESET 40

/* MSI-X "no vector" (section 4.1.5.1.2). */
#define VIRTIO_MSI_NO_VECTOR 0xffff

struct vd_virtio_blk_pci_conf {
	/* The backend (a reference is taken; the device attaches to it, so
	 * block_resize reaches the guest as a configuration change). */
	struct vd_blk *blk;
	const char *qdev_id; /* id= of -device, or NULL */
	uint16_t num_queues; /* 0: 1 */
	uint16_t queue_size; /* largest queue, power of two up to 1024; 0: 256 */
	const char *serial; /* GET_ID, NULL: none */
	uint32_t logical_block_size; /* 0: 512 */
	bool read_only;
	bool no_packed; /* do not offer VIRTIO_F_RING_PACKED */
	bool no_merge; /* request-merging=off */
	/* Transitional (QEMU's disable-legacy=off): 1af4:1001 revision 0,
	 * subsystem 1af4:0002, and the legacy interface in I/O BAR0 (128
	 * bytes, virtio 1.2 section 4.1.4.10) beside the modern one. */
	bool transitional;
};

/*
 * Create the function at @devfn (or the first free slot with @devfn < 0) on
 * @bus.  @mem is the memory address space: guest RAM for the rings and
 * buffers, and where MSI-X messages go.  -EINVAL (bad conf, no medium),
 * -EBUSY (slot taken or the backend has a device), -ENOMEM.
 */
int vd_virtio_blk_pci_new(struct vd_pci_bus *bus, int devfn, struct vd_address_space *mem,
			  const struct vd_virtio_blk_pci_conf *conf, struct vd_virtio_pci **out,
			  struct vd_error *err);
/* Drains in-flight requests, takes the function off the bus, frees. */
void vd_virtio_pci_free(struct vd_virtio_pci *vp);
/*
 * Device reset (the machine's system reset; the function's PCI
 * configuration is the board's to reset, vd_pci_device_reset).  No reset
 * waits for in-flight requests or runs the loop, this one included, nor a
 * driver's write of 0 to device_status (modern or legacy), a legacy queue
 * PFN of 0, or bus mastering turned off: requests in flight are orphaned and
 * write nothing to guest memory afterwards (reads go through bounce
 * buffers).  After a modern driver's write of 0, device_status reads
 * non-zero until the orphans are gone (virtio 1.2 section 4.1.4.3.2); after
 * a legacy driver's, and after this call, it reads 0 at once.
 */
void vd_virtio_pci_reset(struct vd_virtio_pci *vp);
/* Wait until no request is in the block layer (QMP stop, with the machine
 * stopped so that no kick starts new ones): yields in a coroutine, else runs
 * the loop (never from a register access).  Requests parked while bus
 * mastering is off stay parked. */
void vd_virtio_pci_drain(struct vd_virtio_pci *vp);
/* The VM stopped (@running false: kicks are deferred) or continues
 * (requests the drive's rerror/werror "stop" policy kept are reissued, then
 * the deferred kicks are handled). */
void vd_virtio_pci_set_running(struct vd_virtio_pci *vp, bool running);
/* The device configuration changed (capacity): generation, ISR bit 1 and
 * the configuration interrupt, when DRIVER_OK is set. */
void vd_virtio_pci_config_changed(struct vd_virtio_pci *vp);
struct vd_pci_device *vd_virtio_pci_device(struct vd_virtio_pci *vp);

#ifdef __cplusplus
}
#endif

#endif
