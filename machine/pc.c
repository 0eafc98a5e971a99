/* SPDX-License-Identifier: MIT */
/*
 * The PC board (include/vdisk/machine.h): RAM, the i440FX host bridge with
 * configuration mechanism #1 (PCI Local Bus 3.0 section 3.2.2.3.2), the PIIX3
 * ISA bridge with its PIRQ router, fw_cfg and the interrupt pins.  The
 * identities and defaults are QEMU 7.2's (hw/pci-host/i440fx.c,
 * hw/isa/piix3.c), checked by tests/hw/pci-diff.sh.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/ide.h>
#include <vdisk/opts.h>
#include <vdisk/trace.h>
#include <vdisk/virtio-pci.h>

#include <vdisk/debug-exit.h>
#include "machine/machine-internal.h"

#define PIIX_PIRQC 0x60 /* PIRQA..D route control, 0x60-0x63 */
#define PIRQ_DISABLED 0x80
#define QEMU_SUBVENDOR 0x1af4 /* PCI_SUBVENDOR_ID_REDHAT_QUMRANET */
#define QEMU_SUBDEVICE 0x1100 /* PCI_SUBDEVICE_ID_QEMU */
#define PC_LOWMEM_MAX UINT64_C(0xe0000000)

static void reset_bh(void *opaque);
static void vmstop_bh(void *opaque);
static void ide_reset(void *opaque);

/* ---- configuration mechanism #1 ---- */

static uint64_t conf_idx_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_machine *m = opaque;

	/* As QEMU's pci_host_config_read: the register, whatever the offset. */
	return m->config_reg;
}

static void conf_idx_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_machine *m = opaque;

	/* Only a DWORD write at 0xCF8 sets CONFIG_ADDRESS (3.2.2.3.2). */
	if (addr == 0 && size == 4)
		m->config_reg = (uint32_t)val;
}

static const struct vd_mem_ops conf_idx_ops = {
	.read = conf_idx_read,
	.write = conf_idx_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

/* Bus, devfn and register of the current CONFIG_ADDRESS plus the data port
 * offset; false when the enable bit (31) is clear or the bus is not 0. */
static bool conf_target(struct vd_machine *m, uint64_t addr, int *devfn, uint32_t *reg)
{
	uint32_t c = m->config_reg;

	if (!(c & 0x80000000u) || ((c >> 16) & 0xff) != 0)
		return false;
	*devfn = (c >> 8) & 0xff;
	*reg = (c & 0xfc) | (uint32_t)(addr & 3);
	return true;
}

static uint64_t conf_data_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_machine *m = opaque;
	int devfn;
	uint32_t reg;

	if (!conf_target(m, addr, &devfn, &reg))
		return UINT32_MAX;
	return vd_pci_config_read(m->pci, devfn, reg, size);
}

static void conf_data_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_machine *m = opaque;
	int devfn;
	uint32_t reg;

	if (conf_target(m, addr, &devfn, &reg))
		vd_pci_config_write(m->pci, devfn, reg, (uint32_t)val, size);
}

static const struct vd_mem_ops conf_data_ops = {
	.read = conf_data_read,
	.write = conf_data_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

/* PIIX3 reset control register (port 0xCF9; 82371SB datasheet 4.1.17):
 * writing RCPU (bit 2) resets the system, in a bottom half as QEMU's
 * rcr_write (qemu_system_reset_request); SRST (bit 1), the kind of reset,
 * is only kept. */
static uint64_t rcr_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_machine *m = opaque;

	return m->rcr;
}

static void rcr_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_machine *m = opaque;

	if (val & 4) {
		vd_trace(pc_reset_request, "rcr=0x%x", (unsigned)val);
		machine_request_reset(m);
		return;
	}
	m->rcr = val & 0x02; /* QEMU keeps SRST only */
}

/* As QEMU's rcr_ops: any width accepted, byte callbacks (inl 0xcf9 reads
 * the register four times). */
static const struct vd_mem_ops rcr_ops = {
	.read = rcr_read,
	.write = rcr_write,
	.impl_min = 1,
	.impl_max = 1,
};

/* ---- PIIX3 PIRQ routing ---- */

/* QEMU's pci_slot_get_pirq for the i440FX: INTx of slot s goes to
 * PIRQ (x + s - 1) mod 4. */
static int pc_map_irq(void *opaque, int devfn, int pin)
{
	return (pin + VD_PCI_SLOT(devfn) - 1) & 3;
}

/* Recompute the ISA IRQs the PIRQs drive (piix3_update_irq_levels). */
static void piix3_update_pic(struct vd_machine *m)
{
	uint8_t *cfg = vd_pci_config(m->piix3);
	int level[16] = {0};
	uint16_t routed = 0;

	for (int p = 0; p < 4; p++) {
		uint8_t route = cfg[PIIX_PIRQC + p];

		if (route & PIRQ_DISABLED || route >= 16)
			continue;
		routed |= 1u << route;
		level[route] |= m->pirq_level[p];
	}
	/* Touch only lines that a PIRQ drives or drove: ISA devices own the
	 * others. */
	for (int irq = 0; irq < 16; irq++) {
		if ((routed | m->pic_routed) & (1u << irq))
			vd_irq_set(&m->pins.in[irq], level[irq]);
	}
	m->pic_routed = routed;
}

static void pc_set_irq(void *opaque, int line, int level)
{
	struct vd_machine *m = opaque;

	m->pirq_level[line] = level;
	piix3_update_pic(m);
}

static void piix3_config_write(struct vd_pci_device *d, uint32_t addr, uint32_t val, unsigned len)
{
	struct vd_machine *m = vd_pci_device_opaque(d);

	vd_pci_default_config_write(d, addr, val, len);
	if (addr < PIIX_PIRQC + 4 && addr + len > PIIX_PIRQC)
		piix3_update_pic(m);
}

/* The PIIX3's own reset (QEMU's piix_reset): its device-specific
 * registers (PIRQ routing disabled, ...) as at power on, the reset control
 * register cleared. */
static void piix3_reset(void *opaque)
{
	struct vd_machine *m = opaque;
	uint8_t *cfg = vd_pci_config(m->piix3);

	memcpy(cfg + 0x40, m->piix3_power_on + 0x40, sizeof(m->piix3_power_on) - 0x40);
	piix3_update_pic(m);
	m->rcr = 0;
}

static const struct vd_pci_bus_ops pc_bus_ops = {
	.map_irq = pc_map_irq,
	.set_irq = pc_set_irq,
};

/* ---- the board ---- */

static int map_io(struct vd_machine *m, uint16_t port, uint64_t size, const struct vd_mem_ops *ops,
		  const char *name, int prio, struct vd_mem_region **out)
{
	*out = vd_mem_region_new_io(name, size, ops, m);
	if (!*out)
		return -ENOMEM;
	return vd_address_space_map(m->io, port, *out, prio);
}

static int pc_init_chipset(struct vd_machine *m, struct vd_error *err)
{
	/* i440FX PMC: class host bridge, revision 2 (i440fx_class_init). */
	struct vd_pci_device_info host = {
		.name = "i440FX",
		.vendor_id = 0x8086,
		.device_id = 0x1237,
		.revision = 0x02,
		.class_code = 0x060000,
		.subsystem_vendor_id = QEMU_SUBVENDOR,
		.subsystem_id = QEMU_SUBDEVICE,
		.opaque = m,
	};
	/* PIIX3 PCI-to-ISA bridge, function 0 of a multi-function device. */
	struct vd_pci_device_info isa = {
		.name = "PIIX3",
		.vendor_id = 0x8086,
		.device_id = 0x7000,
		.class_code = 0x060100,
		.header_type = VD_PCI_HEADER_MULTI_FUNCTION,
		.subsystem_vendor_id = QEMU_SUBVENDOR,
		.subsystem_id = QEMU_SUBDEVICE,
		.config_write = piix3_config_write,
		.opaque = m,
	};
	int ret;

	ret = vd_pci_device_new(m->pci, VD_PCI_DEVFN(0, 0), &host, &m->host_bridge);
	if (ret == 0)
		ret = vd_pci_device_new(m->pci, VD_PCI_DEVFN(1, 0), &isa, &m->piix3);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not create the PC chipset");
	/* PIRQ route control: disabled at reset (PIIX3 datasheet, PIRQRC[A:D];
	 * QEMU piix3_reset); writable like all of 0x40-0xff. */
	for (int p = 0; p < 4; p++)
		vd_pci_config(m->piix3)[PIIX_PIRQC + p] = PIRQ_DISABLED;
	/* PIIX3 decodes with medium DEVSEL timing (piix3_realize). */
	vd_pci_config(m->piix3)[VD_PCI_STATUS + 1] = VD_PCI_STATUS_DEVSEL_MEDIUM >> 8;

	ret = map_io(m, 0xcf8, 4, &conf_idx_ops, "pci-conf-idx", 0, &m->conf_idx);
	if (ret == 0)
		ret = map_io(m, 0xcfc, 4, &conf_data_ops, "pci-conf-data", 0, &m->conf_data);
	/* 0xCF9 overlaps the config address register; the byte register wins
	 * (QEMU maps it with priority 1). */
	if (ret == 0)
		ret = map_io(m, 0xcf9, 1, &rcr_ops, "piix3-reset-control", 1, &m->rcr_mr);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not map the PCI host ports");
	memcpy(m->piix3_power_on, vd_pci_config(m->piix3), sizeof(m->piix3_power_on));
	ret = machine_add_reset(m, piix3_reset, m);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not set up the PC chipset");
	return 0;
}

/* A backend's error policy says stop (rerror/werror=stop, enospc).  We are
 * in a request's completion (a device's, with its state half updated): the
 * stop happens from a bottom half, as QEMU's qemu_system_vmstop_request. */
static void machine_io_error_stop(void *opaque)
{
	struct vd_machine *m = opaque;

	if (m->vmstop_bh)
		vd_bh_schedule(m->vmstop_bh);
	else
		vmstop_bh(m);
}

static void vmstop_bh(void *opaque)
{
	machine_set_running(opaque, false, "io-error");
}

struct vd_blk_registry *vd_machine_blk_registry(struct vd_machine *m)
{
	return m->blk_reg;
}

int vd_machine_new(const struct vd_machine_opts *opts, struct vd_machine **out,
		   struct vd_error *err)
{
	struct vd_machine *m;
	uint64_t ram_size = opts && opts->ram_size ? opts->ram_size : UINT64_C(128) << 20;
	uint64_t low;
	int ret;

	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	m->ram.fd = -1;
	m->guest_exit_status = -1;
	m->loop = opts && opts->loop ? opts->loop : vd_loop_current();
	m->qtest_clock = opts && opts->qtest_clock;
	m->running = !(opts && opts->start_paused);
	m->run_state = m->running ? "running" : "prelaunch";
	vd_irq_pins_init(&m->pins);
	/* Without a loop (a test's bare machine) the requests act at once. */
	if (m->loop) {
		m->vmstop_bh = vd_bh_new(m->loop, vmstop_bh, m);
		m->reset_bh = vd_bh_new(m->loop, reset_bh, m);
		if (!m->vmstop_bh || !m->reset_bh) {
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
			goto fail;
		}
	}

	ret = vd_guest_ram_alloc(&m->ram, ram_size);
	if (ret < 0) {
		vd_error_setg_errno(err, ret, "Could not allocate %" PRIu64 " bytes of guest RAM",
				    ram_size);
		goto fail;
	}
	m->mem = vd_address_space_new("memory", 0);
	m->io = vd_address_space_new("io", 0x10000);
	if (!m->mem || !m->io) {
		ret = vd_error_set(err, -ENOMEM, "Out of memory");
		goto fail;
	}
	/* RAM below the PCI hole, the rest above 4 GiB (QEMU pc_init1 splits at
	 * 0xe0000000, at 3 GiB when larger with gigabyte alignment). */
	low = ram_size >= PC_LOWMEM_MAX ? UINT64_C(0xc0000000) : ram_size;
	m->ram_low = vd_mem_region_new_ram("ram-below-4g", low, m->ram.host);
	if (!m->ram_low || vd_address_space_map(m->mem, 0, m->ram_low, 0) < 0) {
		ret = vd_error_set(err, -ENOMEM, "Could not map guest RAM");
		goto fail;
	}
	if (ram_size > low) {
		m->ram_high = vd_mem_region_new_ram("ram-above-4g", ram_size - low,
						    (uint8_t *)m->ram.host + low);
		if (!m->ram_high ||
		    vd_address_space_map(m->mem, UINT64_C(1) << 32, m->ram_high, 0) < 0) {
			ret = vd_error_set(err, -ENOMEM, "Could not map guest RAM");
			goto fail;
		}
	}
	m->pci = vd_pci_bus_new(m->mem, m->io, &pc_bus_ops, m);
	if (!m->pci) {
		ret = vd_error_set(err, -ENOMEM, "Could not create the PCI bus");
		goto fail;
	}
	ret = pc_init_chipset(m, err);
	if (ret < 0)
		goto fail;
	/* PIIX3 IDE at 01.1 on ISA IRQ 14 and 15: always there, as in QEMU's pc. */
	{
		struct vd_irq *ide_irqs[2] = {&m->pins.in[14], &m->pins.in[15]};

		ret = vd_piix3_ide_new(m->pci, VD_PCI_DEVFN(1, 1), m->io, ide_irqs, &m->ide);
		if (ret == 0)
			ret = machine_add_reset(m, ide_reset, m->ide);
		if (ret < 0) {
			vd_error_setg_errno(err, ret, "Could not create the PIIX3 IDE function");
			goto fail;
		}
	}
	m->fw_cfg = vd_fw_cfg_new(m->io, 0x510);
	if (!m->fw_cfg || vd_fw_cfg_add_i64(m->fw_cfg, FW_CFG_RAM_SIZE, ram_size) < 0) {
		ret = vd_error_set(err, -ENOMEM, "Could not create fw_cfg");
		goto fail;
	}
	ret = vd_blk_registry_new(&m->blk_reg);
	if (ret < 0) {
		vd_error_set(err, ret, "Out of memory");
		goto fail;
	}
	vd_blk_registry_set_stop_handler(m->blk_reg, machine_io_error_stop, m);
	machine_clock_init(m);
	if (!m->running)
		m->stopped_at = vd_clock_ns();
	*out = m;
	return 0;

fail:
	vd_machine_free(m);
	return ret;
}

static void unmap_unref(struct vd_address_space *as, struct vd_mem_region *mr)
{
	if (mr) {
		vd_address_space_unmap(as, mr);
		vd_mem_region_unref(mr);
	}
}

void vd_machine_free(struct vd_machine *m)
{
	if (!m)
		return;
	if (m->vmstop_bh)
		vd_bh_delete(m->vmstop_bh);
	if (m->reset_bh)
		vd_bh_delete(m->reset_bh);
	machine_qtest_chardev_close(m);
	machine_qmp_close(m);
	/* The devices hold references on the drives' backends. */
	machine_virtio_free(m);
	vd_piix3_ide_free(m->ide);
	machine_drives_free(m);
	vd_blk_registry_free(m->blk_reg);
	machine_clock_fini(m);
	vd_fw_cfg_free(m->fw_cfg);
	vd_debug_exit_free(m->debug_exit);
	vd_debugcon_free(m->debugcon);
	vd_pci_bus_free(m->pci);
	if (m->io) {
		unmap_unref(m->io, m->conf_idx);
		unmap_unref(m->io, m->conf_data);
		unmap_unref(m->io, m->rcr_mr);
	}
	if (m->mem) {
		unmap_unref(m->mem, m->ram_low);
		unmap_unref(m->mem, m->ram_high);
	}
	vd_address_space_free(m->mem);
	vd_address_space_free(m->io);
	vd_guest_ram_free(&m->ram);
	free(m->resets);
	free(m);
}

struct vd_address_space *vd_machine_memory(struct vd_machine *m)
{
	return m->mem;
}

struct vd_address_space *vd_machine_io(struct vd_machine *m)
{
	return m->io;
}

struct vd_pci_bus *vd_machine_pci_bus(struct vd_machine *m)
{
	return m->pci;
}

struct vd_irq_pins *vd_machine_irq_pins(struct vd_machine *m)
{
	return &m->pins;
}

struct vd_irq *vd_machine_isa_irq(struct vd_machine *m, int n)
{
	return n >= 0 && n < 16 ? &m->pins.in[n] : NULL;
}

const struct vd_guest_ram *vd_machine_ram(struct vd_machine *m)
{
	return &m->ram;
}

struct vd_loop *vd_machine_loop(struct vd_machine *m)
{
	return m->loop;
}

/* Slots 0 and 1 are the chipset's (01.1 the PIIX3 IDE, for @device_id 0x7010). */
static int pc_check_devfn(int devfn, uint16_t device_id, struct vd_error *err)
{
	if (devfn == VD_PCI_DEVFN(1, 1) && device_id != 0x7010)
		return vd_error_set(err, -EBUSY, "PCI address 01.1 is reserved for the PIIX3 IDE");
	if (devfn >= 0 && VD_PCI_SLOT(devfn) < 2 && devfn != VD_PCI_DEVFN(1, 1))
		return vd_error_set(err, -EBUSY, "PCI address %02x.%x is taken by the chipset",
				    VD_PCI_SLOT(devfn), VD_PCI_FUNC(devfn));
	return 0;
}

int vd_pc_add_pci_device(struct vd_machine *m, int devfn, const struct vd_pci_device_info *info,
			 struct vd_pci_device **out, struct vd_error *err)
{
	int ret;

	ret = pc_check_devfn(devfn, info->device_id, err);
	if (ret < 0)
		return ret;
	ret = vd_pci_device_new(m->pci, devfn, info, out);
	if (ret == -EBUSY)
		return vd_error_set(err, ret, "PCI address %02x.%x is already in use",
				    VD_PCI_SLOT(devfn), VD_PCI_FUNC(devfn));
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not add PCI device '%s'",
					   info->name ? info->name : "");
	return 0;
}

/* ---- system reset ---- */

static void ide_reset(void *opaque)
{
	vd_piix3_ide_reset(opaque);
}

static void virtio_reset(void *opaque)
{
	vd_virtio_pci_reset(opaque);
}

int machine_add_reset(struct vd_machine *m, vd_loop_fn *fn, void *opaque)
{
	struct machine_reset_handler *r;

	r = realloc(m->resets, (size_t)(m->nr_resets + 1) * sizeof(*r));
	if (!r)
		return -ENOMEM;
	m->resets = r;
	r[m->nr_resets++] = (struct machine_reset_handler){fn, opaque};
	return 0;
}

void machine_request_reset(struct vd_machine *m)
{
	if (m->reset_bh)
		vd_bh_schedule(m->reset_bh);
	else
		reset_bh(m);
}

/*
 * QEMU's qemu_system_reset for a guest reset: every device model (the
 * chipset, IDE, virtio-blk-pci: registers to power-on state, requests in
 * flight dropped or orphaned without waiting), then the PCI configuration
 * of every function (command register, BARs, MSI-X), then the RESET event.
 * A machine that was not running is in "prelaunch" afterwards
 * (main_loop_should_exit).
 */
static void reset_bh(void *opaque)
{
	struct vd_machine *m = opaque;

	vd_trace(pc_system_reset, "handlers=%d running=%d", m->nr_resets, m->running);
	for (int i = 0; i < m->nr_resets; i++)
		m->resets[i].fn(m->resets[i].opaque);
	vd_pci_bus_reset(m->pci);
	if (!m->running)
		m->run_state = "prelaunch";
	machine_qmp_reset_event(m);
}

/* ---- virtio-blk-pci ---- */

void machine_virtio_free(struct vd_machine *m)
{
	for (int i = 0; i < m->nr_virtio; i++)
		vd_virtio_pci_free(m->virtio[i]);
	free(m->virtio);
	m->virtio = NULL;
	m->nr_virtio = 0;
}

/* QEMU's PCI addr property: "SLOT[.FN]" in hex. */
int machine_parse_pci_addr(const char *s, int *devfn)
{
	char *end;
	unsigned long slot, fn = 0;

	slot = strtoul(s, &end, 16);
	if (end == s || slot > 31)
		return -EINVAL;
	if (*end == '.') {
		const char *f = end + 1;

		fn = strtoul(f, &end, 16);
		if (end == f || fn > 7)
			return -EINVAL;
	}
	if (*end)
		return -EINVAL;
	*devfn = VD_PCI_DEVFN((int)slot, (int)fn);
	return 0;
}

int machine_add_virtio_blk(struct vd_machine *m, struct vd_drive *d,
			   const struct machine_virtio_opts *o, struct vd_error *err)
{
	struct vd_virtio_blk_pci_conf conf = {
		.blk = d->blk,
		.num_queues = o->num_queues,
		.queue_size = o->queue_size,
		.serial = o->serial ? o->serial : d->serial,
		.logical_block_size = o->logical_block_size,
		.no_packed = o->no_packed,
		.no_merge = o->no_merge,
		.transitional = o->transitional,
		.read_only = d->read_only,
	};
	struct vd_virtio_pci *vp, **nv;
	char qdev[96];
	int ret;

	if (d->device)
		return vd_error_set(err, -EBUSY, "Drive '%s' is already in use by a device", d->id);
	if (!d->node)
		return vd_error_set(err, -EINVAL, "Drive '%s' has no medium", d->id);
	ret = pc_check_devfn(o->devfn, 0, err);
	if (ret < 0)
		return ret;
	if (o->devfn >= 0 && vd_pci_bus_find(m->pci, o->devfn))
		return vd_error_set(err, -EBUSY, "PCI address %02x.%x is already in use",
				    VD_PCI_SLOT(o->devfn), VD_PCI_FUNC(o->devfn));
	/* What QEMU's query-block reports as the drive's qdev: the
	 * virtio-blk child of the proxy, by QOM path. */
	if (o->id)
		snprintf(qdev, sizeof(qdev), "/machine/peripheral/%s/virtio-backend", o->id);
	else
		snprintf(qdev, sizeof(qdev), "/machine/peripheral-anon/device[%d]/virtio-backend",
			 m->nr_anon_devices);
	conf.qdev_id = qdev;
	nv = realloc(m->virtio, (m->nr_virtio + 1) * sizeof(*nv));
	if (!nv)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	m->virtio = nv;
	ret = vd_virtio_blk_pci_new(m->pci, o->devfn, m->mem, &conf, &vp, err);
	if (ret < 0)
		return ret;
	if (!o->id)
		m->nr_anon_devices++;
	ret = machine_add_reset(m, virtio_reset, vp);
	if (ret < 0) {
		vd_virtio_pci_free(vp);
		return vd_error_set(err, ret, "Out of memory");
	}
	vd_virtio_pci_set_running(vp, m->running); /* -S: kicks wait for cont */
	m->virtio[m->nr_virtio++] = vp;
	d->device = vp;
	return 0;
}

int vd_machine_add_device(struct vd_machine *m, const char *optstr, struct vd_error *err)
{
	struct machine_virtio_opts vo = {.devfn = -1};
	struct vd_opts *o = NULL;
	struct vd_drive *d = NULL;
	const char *drv, *drive_id, *addr;
	uint64_t nq = 0, qs = 0, lbs = 0;
	bool legacy_off = true, packed = true, merge = true;
	int ret;

	ret = vd_opts_parse(optstr, "driver", &o, err);
	if (ret < 0)
		return ret;
	drv = vd_opts_get(o, "driver");
	if (!drv || strcmp(drv, "virtio-blk-pci")) {
		ret = vd_error_set(err, -ENOTSUP,
				   "Device '%s' is not yet supported (virtio-blk-pci and "
				   "isa-debug-exit are)",
				   drv ? drv : "");
		goto out;
	}
	drive_id = vd_opts_get(o, "drive");
	if (!drive_id) {
		ret = vd_error_set(err, -EINVAL, "virtio-blk-pci: drive property not set");
		goto out;
	}
	for (int i = 0; i < m->nr_drives && !d; i++) {
		if (!strcmp(m->drives[i]->id, drive_id))
			d = m->drives[i];
	}
	if (!d) {
		ret = vd_error_set(err, -ENOENT,
				   "Property 'virtio-blk-device.drive' can't find value '%s'",
				   drive_id);
		goto out;
	}
	ret = vd_opts_get_u64(o, "num-queues", 1, &nq, err);
	if (ret == 0)
		ret = vd_opts_get_u64(o, "queue-size", 256, &qs, err);
	if (ret == 0)
		ret = vd_opts_get_size(o, "logical_block_size", 512, &lbs, err);
	if (ret == 0)
		ret = vd_opts_get_bool(o, "disable-legacy", true, &legacy_off, err);
	if (ret == 0)
		ret = vd_opts_get_bool(o, "packed", true, &packed, err);
	if (ret == 0)
		ret = vd_opts_get_bool(o, "request-merging", true, &merge, err);
	if (ret < 0)
		goto out;
	if (nq < 1 || nq > 64) {
		ret = vd_error_set(err, -EINVAL, "num-queues must be 1..64");
		goto out;
	}
	if (qs < 2 || qs > 1024 || (qs & (qs - 1))) {
		ret = vd_error_set(err, -EINVAL,
				   "queue-size must be a power of two from 2 to 1024");
		goto out;
	}
	addr = vd_opts_get(o, "addr");
	if (addr && machine_parse_pci_addr(addr, &vo.devfn) < 0) {
		ret = vd_error_set(err, -EINVAL, "Invalid PCI address '%s' (SLOT[.FN])", addr);
		goto out;
	}
	vo.id = vd_opts_get(o, "id");
	vo.serial = vd_opts_get(o, "serial");
	vo.num_queues = (uint16_t)nq;
	vo.queue_size = (uint16_t)qs;
	if (lbs < 512 || lbs > 32768 || (lbs & (lbs - 1))) {
		ret = vd_error_set(err, -EINVAL,
				   "logical_block_size must be a power of two from 512 to 32768");
		goto out;
	}
	vo.logical_block_size = (uint32_t)lbs;
	vo.no_packed = !packed;
	vo.no_merge = !merge;
	vo.transitional = !legacy_off;
	/* QEMU accepts the bus name of the only PCI bus. */
	if (vd_opts_has(o, "bus") && strcmp(vd_opts_get(o, "bus"), "pci.0")) {
		ret = vd_error_set(err, -EINVAL, "Bus '%s' not found", vd_opts_get(o, "bus"));
		goto out;
	}
	ret = vd_opts_check_unused(o, NULL, err);
	if (ret == 0)
		ret = machine_add_virtio_blk(m, d, &vo, err);
out:
	vd_opts_free(o);
	return ret;
}

/* ---- run state ---- */

bool vd_machine_is_running(struct vd_machine *m)
{
	return m->running;
}

const char *vd_machine_run_state(struct vd_machine *m)
{
	return m->run_state;
}

void machine_set_running(struct vd_machine *m, bool running, const char *state)
{
	bool was = m->running;

	if (!running && !was)
		return; /* QEMU's do_vm_stop does nothing when not running */
	m->run_state = state;
	if (running && was) {
		/* QEMU 7.2 vm_prepare_start: cont while running sends STOP and
		 * RESUME anyway. */
		machine_qmp_state_changed(m, false);
		machine_qmp_state_changed(m, true);
		return;
	}
	m->running = running;
	machine_clock_state_changed(m, running);
	vd_trace(machine_run_state, "running=%d state=%s", running, state);
	machine_qmp_state_changed(m, running);
	if (m->state_fn)
		m->state_fn(m->state_opaque, running);
	/* virtio-blk: defer kicks while stopped; on cont retry what the
	 * error policy kept and handle the deferred kicks. */
	for (int i = 0; i < m->nr_virtio && m->running == running; i++)
		vd_virtio_pci_set_running(m->virtio[i], running);
}

/* QEMU's do_vm_stop: the guest stops (STOP), then the block requests in
 * flight complete (bdrv_drain_all), so that stop's reply comes after them.
 * Devices process no kick while stopped, so the drain ends. */
void vd_machine_stop(struct vd_machine *m)
{
	machine_set_running(m, false, "paused");
	for (int i = 0; i < m->nr_virtio && !m->running; i++)
		vd_virtio_pci_drain(m->virtio[i]);
	for (int i = 0; i < m->nr_drives && !m->running; i++) {
		struct vd_drive *d = m->drives[i];

		vd_blk_drain(d->blk);
	}
}

void vd_machine_cont(struct vd_machine *m)
{
	if (m->blk_reg)
		vd_blk_registry_iostatus_reset(m->blk_reg);
	machine_set_running(m, true, "running");
	/* Requests the "stop" error policy kept are retried (QEMU's
	 * ide_restart_cb). */
	if (m->ide)
		vd_piix3_ide_restart(m->ide);
}

void vd_machine_set_state_notifier(struct vd_machine *m, void (*fn)(void *opaque, bool running),
				   void *opaque)
{
	m->state_fn = fn;
	m->state_opaque = opaque;
}

void vd_machine_request_quit(struct vd_machine *m)
{
	if (m->quit_fn)
		m->quit_fn(m->quit_opaque);
}

void vd_machine_set_quit_handler(struct vd_machine *m, void (*fn)(void *opaque), void *opaque)
{
	m->quit_fn = fn;
	m->quit_opaque = opaque;
}

/* ---- ISA debug devices ---- */

static void machine_debug_exit(void *opaque, uint64_t value)
{
	struct vd_machine *m = opaque;

	/* The first request wins, as QEMU's exit() would. */
	if (m->guest_exit_status < 0) {
		m->guest_exit_status = (int)(((value << 1) | 1) & 0xff);
		vd_machine_request_quit(m);
	}
}

int vd_machine_add_debug_exit(struct vd_machine *m, uint32_t iobase, uint32_t iosize,
			      struct vd_error *err)
{
	if (m->debug_exit)
		return vd_error_set(err, -EBUSY, "isa-debug-exit is already present");
	m->debug_exit = vd_debug_exit_new(m->io, iobase, iosize, machine_debug_exit, m);
	if (!m->debug_exit)
		return vd_error_set(err, -EINVAL, "Could not map isa-debug-exit at 0x%x+0x%x",
				    iobase, iosize);
	return 0;
}

int vd_machine_add_debugcon(struct vd_machine *m, uint32_t iobase, int fd, struct vd_error *err)
{
	if (m->debugcon)
		return vd_error_set(err, -EBUSY, "the debug console is already present");
	m->debugcon = vd_debugcon_new(m->io, iobase, fd);
	if (!m->debugcon)
		return vd_error_set(err, -EINVAL, "Could not map the debug console at 0x%x",
				    iobase);
	return 0;
}

int vd_machine_guest_exit_status(struct vd_machine *m)
{
	return m->guest_exit_status;
}
