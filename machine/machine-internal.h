/* SPDX-License-Identifier: MIT */
/* Private to machine/. */
#ifndef VDISK_MACHINE_INTERNAL_H
#define VDISK_MACHINE_INTERNAL_H

#include <vdisk/machine.h>

#include <vdisk/fw_cfg.h>

/* A device's part of a system reset (machine_add_reset). */
struct machine_reset_handler {
	vd_loop_fn *fn;
	void *opaque;
};

struct vd_vtimer {
	struct vd_machine *m;
	vd_loop_fn *cb;
	void *opaque;
	int64_t deadline; /* -1: not pending */
	struct vd_vtimer *next; /* in m->timers, sorted by deadline */
};

struct vd_machine {
	struct vd_loop *loop;
	struct vd_guest_ram ram;
	struct vd_address_space *mem, *io;
	struct vd_mem_region *ram_low, *ram_high;
	struct vd_pci_bus *pci;
	struct vd_pci_device *host_bridge, *piix3;
	struct vd_piix_ide *ide; /* PIIX3 IDE at 01.1 (hw/ide) */
	struct vd_irq_pins pins;
	struct vd_fw_cfg *fw_cfg;

	/* i440FX configuration mechanism #1 */
	uint32_t config_reg;
	struct vd_mem_region *conf_idx, *conf_data, *rcr_mr;
	uint8_t rcr; /* PIIX3 reset control register, port 0xCF9 */

	/* PIIX3 PIRQ state */
	int pirq_level[4];
	uint16_t pic_routed; /* ISA IRQs a PIRQ has been routed to */

	/* clock */
	bool qtest_clock;
	int64_t vclock; /* qtest mode: the clock; real time: offset */
	int64_t stopped_at; /* real time: vd_clock_ns() when stopped */
	struct vd_vtimer *timers;
	struct vd_timer *rt_timer;

	bool running;
	const char *run_state; /* QEMU RunState name */
	/* Requests from completion and register-access context, handled in
	 * bottom halves (QEMU's qemu_system_vmstop_request and
	 * qemu_system_reset_request). */
	struct vd_bh *vmstop_bh, *reset_bh;
	/* What a system reset resets, in registration order; then the PCI
	 * configuration of every function (vd_pci_bus_reset). */
	struct machine_reset_handler *resets;
	int nr_resets;
	uint8_t piix3_power_on[256]; /* PIIX3 configuration after creation */
	void (*state_fn)(void *opaque, bool running);
	void *state_opaque;
	void (*quit_fn)(void *opaque);
	void *quit_opaque;

	struct vd_drive **drives;
	int nr_drives;

	/* virtio-blk-pci functions (-device virtio-blk-pci, -drive if=virtio) */
	struct vd_virtio_pci **virtio;
	int nr_virtio;
	int nr_anon_devices; /* -device without id= (QEMU's peripheral-anon) */

	struct vd_qtest_chardev *qtest_chr;

	/* ISA debug devices (hw/debug-exit.h), NULL unless asked for */
	struct vd_debug_exit *debug_exit;
	struct vd_debugcon *debugcon;
	int guest_exit_status; /* -1 until the guest writes isa-debug-exit */

	struct vd_blk_registry *blk_reg;
	struct vd_qmp_server *qmp;
	struct vd_qmp_block *qmp_block;
};

void machine_clock_init(struct vd_machine *m);
void machine_clock_fini(struct vd_machine *m);
void machine_clock_state_changed(struct vd_machine *m, bool running);
void machine_drives_free(struct vd_machine *m);
void machine_virtio_free(struct vd_machine *m);

/* A virtio-blk-pci function on a drive (pc.c). */
struct machine_virtio_opts {
	int devfn; /* -1: first free slot */
	const char *id; /* -device id=, NULL if none */
	const char *serial; /* NULL: the drive's serial= */
	uint16_t num_queues, queue_size; /* 0: defaults */
	uint32_t logical_block_size; /* 0: 512 */
	bool no_packed; /* packed=off */
	bool no_merge; /* request-merging=off */
	bool transitional; /* disable-legacy=off */
};
int machine_add_virtio_blk(struct vd_machine *m, struct vd_drive *d,
			   const struct machine_virtio_opts *o, struct vd_error *err);
int machine_parse_pci_addr(const char *s, int *devfn);
void machine_qtest_chardev_close(struct vd_machine *m);
void machine_set_running(struct vd_machine *m, bool running, const char *state);
/* Reset @fn(@opaque) with the machine (0 or -ENOMEM). */
int machine_add_reset(struct vd_machine *m, vd_loop_fn *fn, void *opaque);
/* A system reset (the PIIX3 reset control register), done in a bottom half
 * as QEMU's qemu_system_reset_request: the register access that asks for
 * it returns first. */
void machine_request_reset(struct vd_machine *m);
void machine_qmp_reset_event(struct vd_machine *m);
void machine_qmp_state_changed(struct vd_machine *m, bool running);
void machine_qmp_close(struct vd_machine *m);

#endif
