/* SPDX-License-Identifier: MIT */
/*
 * The PC-like board, laid out as QEMU's `-machine pc` where a test looks:
 *
 *   00.0  i440FX host bridge 8086:1237; configuration mechanism #1 at
 *         0xCF8 (address) / 0xCFC-0xCFF (data)
 *   01.0  PIIX3 ISA bridge 8086:7000, PIRQA-D routing at config 0x60-0x63,
 *         reset control register at port 0xCF9 (RCPU: a system reset of
 *         every device and PCI function, from a bottom half, then the QMP
 *         event RESET; the KVM front end's vCPU is not reset)
 *   01.1  reserved for the PIIX3 IDE function (added by hw/ide)
 *   02.0+ further devices, or at the devfn their addr= names
 *
 * plus guest RAM at 0 (memfd backed), fw_cfg at 0x510, and the IOAPIC-numbered
 * interrupt pins.  The virtual clock (ns) drives machine timers: in qtest mode
 * only vd_machine_clock_step/set move it; otherwise it follows the host's
 * monotonic clock while the machine runs and stands still while it is stopped.
 *
 * Everything here runs on the thread that created the machine (its loop).
 */
#ifndef VDISK_MACHINE_H
#define VDISK_MACHINE_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/backend.h>
#include <vdisk/block.h>
#include <vdisk/error.h>
#include <vdisk/irq.h>
#include <vdisk/loop.h>
#include <vdisk/memory.h>
#include <vdisk/pci.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_machine;

struct vd_machine_opts {
	uint64_t ram_size; /* bytes; 0 means QEMU's default, 128 MiB */
	bool qtest_clock; /* the virtual clock moves only by clock_step/clock_set */
	struct vd_loop *loop; /* for real-time timers; NULL: the current loop */
	bool start_paused; /* -S: run state "prelaunch" until cont */
};

int vd_machine_new(const struct vd_machine_opts *opts, struct vd_machine **out,
		   struct vd_error *err);
/* Frees devices, drives (their nodes are unreferenced) and RAM. */
void vd_machine_free(struct vd_machine *m);

struct vd_address_space *vd_machine_memory(struct vd_machine *m);
struct vd_address_space *vd_machine_io(struct vd_machine *m);
struct vd_pci_bus *vd_machine_pci_bus(struct vd_machine *m);
struct vd_irq_pins *vd_machine_irq_pins(struct vd_machine *m);
/* ISA IRQ @n (0..15): the line an ISA device (IDE: 14, 15) drives. */
struct vd_irq *vd_machine_isa_irq(struct vd_machine *m, int n);
const struct vd_guest_ram *vd_machine_ram(struct vd_machine *m);
struct vd_loop *vd_machine_loop(struct vd_machine *m);

/*
 * The hook for device models: put a PCI function on the board's bus at @devfn
 * (VD_PCI_DEVFN(slot, fn)), or with @devfn < 0 at the first free slot from
 * 02.0.  Function 01.1 is reserved for the PIIX3 IDE function and only
 * accepted when @info->device_id is the PIIX3 IDE's (0x7010).
 */
int vd_pc_add_pci_device(struct vd_machine *m, int devfn, const struct vd_pci_device_info *info,
			 struct vd_pci_device **out, struct vd_error *err);

/*
 * ISA debug devices, as QEMU's (hw/debug-exit.h), for test payloads:
 * isa-debug-exit at @iobase/@iosize (QEMU's -device isa-debug-exit): a guest
 * write of v records exit status ((v << 1) | 1) & 0xff (what QEMU's exit()
 * leaves of it) and requests quit; and a debug console (-debugcon) at
 * @iobase writing to @fd, which stays the caller's.  0 or -errno with @err
 * set; each device at most once.
 */
int vd_machine_add_debug_exit(struct vd_machine *m, uint32_t iobase, uint32_t iosize,
			      struct vd_error *err);
int vd_machine_add_debugcon(struct vd_machine *m, uint32_t iobase, int fd, struct vd_error *err);
/* The status the guest asked for through isa-debug-exit, or -1. */
int vd_machine_guest_exit_status(struct vd_machine *m);

/* ---- drives (-drive) ---- */

enum vd_drive_if {
	VD_IF_NONE,
	VD_IF_IDE,
	VD_IF_VIRTIO
};
enum vd_drive_media {
	VD_MEDIA_DISK,
	VD_MEDIA_CDROM
};

struct vd_drive {
	char *id; /* id=, or QEMU's default ("ide0-hd0", "ide1-cd0", "virtio0") */
	enum vd_drive_if iface;
	enum vd_drive_media media;
	int index; /* -1 if not given */
	int bus, unit; /* IDE: index / 2, index % 2 */
	char *serial, *model; /* NULL if not given */
	char *rerror, *werror; /* as given; NULL: default */
	enum vd_blk_on_error on_read_error, on_write_error; /* parsed */
	bool read_only;
	bool writethrough; /* cache mode: the device-visible write cache starts off */
	struct vd_node *node; /* NULL for an empty cdrom */
	/* The backend a device model attaches to (vd_blk_attach_dev): named
	 * @id, in the machine's registry, holding @node, with the rerror/werror
	 * policy applied. */
	struct vd_blk *blk;
	void *device; /* the device model that took it, NULL until then */
};

/*
 * Add a drive from a -drive option string (the option grammar of vd_opts_parse).
 * Device options (if, media, index, bus, unit, serial, model, rerror, werror,
 * id) are taken off; cache= goes through vd_cache_mode_apply; readonly=on
 * opens read-only; format= names the driver and file= the filename; every
 * other key is a block-layer option ("file.aio=io_uring", "cache.direct=on").
 * Returns 0 or -errno with @err set.
 */
int vd_machine_add_drive(struct vd_machine *m, const char *optstr, struct vd_drive **out,
			 struct vd_error *err);
int vd_machine_drive_count(struct vd_machine *m);
struct vd_drive *vd_machine_drive(struct vd_machine *m, int i);
/*
 * -device (QEMU syntax): virtio-blk-pci,drive=ID[,id=X][,num-queues=N]
 * [,queue-size=N][,addr=SLOT[.FN]][,serial=S][,logical_block_size=N]
 * [,packed=on|off][,disable-legacy=on|off] on a drive
 * added before (usually -drive if=none,id=ID).  The device is modern only
 * (virtio 1.x, 1af4:1042) unless disable-legacy=off asks for the transitional
 * device with the legacy I/O BAR.  0 or -errno with @err set.
 */
int vd_machine_add_device(struct vd_machine *m, const char *optstr, struct vd_error *err);
/* The machine's backends (one per drive), for the monitor and devices. */
struct vd_blk_registry *vd_machine_blk_registry(struct vd_machine *m);

/* ---- run state ---- */

bool vd_machine_is_running(struct vd_machine *m);
/* QEMU's RunState name: "running", "paused", "prelaunch", "io-error". */
const char *vd_machine_run_state(struct vd_machine *m);
/* Stop / continue (QMP stop and cont; stop with "io-error" when a backend's
 * error policy says so, from a bottom half).  The notifier, if any, runs on
 * each change with the new state, after the QMP events STOP / RESUME went
 * out.  vd_machine_stop then waits for the block requests in flight (QEMU's
 * do_vm_stop): it yields in a coroutine (a QMP handler), else runs the loop,
 * so never call it from a device's register access. */
void vd_machine_stop(struct vd_machine *m);
void vd_machine_cont(struct vd_machine *m);
void vd_machine_set_state_notifier(struct vd_machine *m, void (*fn)(void *opaque, bool running),
				   void *opaque);
/* Ask the owner to end the machine (QMP quit, end of the qtest stream). */
void vd_machine_request_quit(struct vd_machine *m);
void vd_machine_set_quit_handler(struct vd_machine *m, void (*fn)(void *opaque), void *opaque);

/* ---- virtual clock and timers ---- */

struct vd_vtimer;

int64_t vd_machine_clock_ns(struct vd_machine *m);
/* Timers on the virtual clock; a timer fires once per mod, on the machine's
 * thread.  NULL on ENOMEM. */
struct vd_vtimer *vd_vtimer_new(struct vd_machine *m, vd_loop_fn *cb, void *opaque);
void vd_vtimer_mod(struct vd_vtimer *t, int64_t deadline_ns);
void vd_vtimer_del(struct vd_vtimer *t);
bool vd_vtimer_pending(const struct vd_vtimer *t);
void vd_vtimer_free(struct vd_vtimer *t);
/* The earliest pending deadline, or -1. */
int64_t vd_machine_next_deadline(struct vd_machine *m);
/*
 * qtest mode only (return -ENOTSUP otherwise): advance the clock to @target_ns,
 * running the timers that come due in deadline order with the clock set to
 * each one's deadline (QEMU's qtest_clock_warp).  A target in the past does
 * nothing.  Returns the clock afterwards.
 */
int64_t vd_machine_clock_warp(struct vd_machine *m, int64_t target_ns);

/*
 * Serve QMP (machine/monitor.c) on @spec (QEMU's -qmp syntax, see
 * vd_qmp_server_open): qmp_capabilities, query-status, stop, cont, quit,
 * the block commands over the drives (query-block, query-blockstats,
 * block_resize, eject, blockdev-change-medium) and the events STOP, RESUME,
 * SHUTDOWN, RESET, BLOCK_IO_ERROR, DEVICE_TRAY_MOVED.  May be called more than once
 * (one server, several channels).  0 or -errno with @err set.
 */
int vd_machine_qmp_open(struct vd_machine *m, const char *spec, struct vd_error *err);

/* ---- the test protocol (machine/qtest.c) ---- */

struct vd_qtest;
/* Output (replies and asynchronous IRQ lines), whole lines. */
typedef void vd_qtest_send_fn(void *opaque, const char *buf, size_t len);

struct vd_qtest *vd_qtest_new(struct vd_machine *m, vd_qtest_send_fn *send, void *opaque);
void vd_qtest_free(struct vd_qtest *q);
/* Feed received bytes; complete lines are executed at once.  Untrusted
 * input: never aborts. */
void vd_qtest_feed(struct vd_qtest *q, const void *data, size_t len);

/*
 * Serve the protocol on "stdio" (stdin/stdout), "unix:PATH" (connect to a
 * listening socket, as QEMU's -qtest unix:PATH does) or "unix:PATH,server"
 * (listen and accept one client), on the machine's loop.  End of the stream
 * requests quit.  Returns 0 or -errno with @err set.
 */
int vd_qtest_chardev_open(struct vd_machine *m, const char *spec, struct vd_error *err);

#ifdef __cplusplus
}
#endif

#endif
