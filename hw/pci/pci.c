/* SPDX-License-Identifier: MIT */
/*
 * PCI bus and configuration space (include/vdisk/pci.h).  Section numbers are
 * of the PCI Local Bus Specification 3.0.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/pci.h>
#include <vdisk/trace.h>

#include "hw/pci/pci-internal.h"

static inline void put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
	put_le16(p, (uint16_t)v);
	put_le16(p + 2, (uint16_t)(v >> 16));
}

static inline uint32_t get_le32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

struct vd_pci_bus *vd_pci_bus_new(struct vd_address_space *mem, struct vd_address_space *io,
				  const struct vd_pci_bus_ops *ops, void *opaque)
{
	struct vd_pci_bus *bus = calloc(1, sizeof(*bus));

	if (!bus)
		return NULL;
	bus->mem = mem;
	bus->io = io;
	if (ops)
		bus->ops = *ops;
	bus->opaque = opaque;
	/*
	 * Memory BARs live in a window below everything else in the memory
	 * space, as QEMU's "pci" container under system memory at priority -1:
	 * RAM wins where a BAR is programmed over it.  The window spans the
	 * whole space (size 0 = 2^64).
	 */
	bus->mem_window = vd_mem_region_new_container("pci-memory", 0);
	if (!bus->mem_window || vd_address_space_map(mem, 0, bus->mem_window, -1) < 0) {
		vd_mem_region_unref(bus->mem_window);
		free(bus);
		return NULL;
	}
	return bus;
}

void vd_pci_bus_free(struct vd_pci_bus *bus)
{
	if (!bus)
		return;
	for (int i = 0; i < 256; i++) {
		if (bus->devs[i])
			vd_pci_device_free(bus->devs[i]);
	}
	vd_address_space_unmap(bus->mem, bus->mem_window);
	vd_mem_region_unref(bus->mem_window);
	free(bus);
}

struct vd_pci_device *vd_pci_bus_find(struct vd_pci_bus *bus, int devfn)
{
	return devfn >= 0 && devfn < 256 ? bus->devs[devfn] : NULL;
}

int vd_pci_device_new(struct vd_pci_bus *bus, int devfn, const struct vd_pci_device_info *info,
		      struct vd_pci_device **out)
{
	struct vd_pci_device *d;

	*out = NULL;
	if (!info || devfn > 255)
		return -EINVAL;
	if (devfn < 0) {
		for (int slot = 2; slot < 32 && devfn < 0; slot++) {
			if (!bus->devs[VD_PCI_DEVFN(slot, 0)])
				devfn = VD_PCI_DEVFN(slot, 0);
		}
		if (devfn < 0)
			return -ENOSPC;
	}
	if (bus->devs[devfn])
		return -EBUSY;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->bus = bus;
	d->devfn = devfn;
	d->info = *info;
	snprintf(d->name, sizeof(d->name), "%s", info->name ? info->name : "pci");
	for (int i = 0; i < 6; i++)
		d->bars[i].addr = VD_PCI_BAR_UNMAPPED;

	/* The type 0 header (6.1). */
	put_le16(d->config + VD_PCI_VENDOR_ID, info->vendor_id);
	put_le16(d->config + VD_PCI_DEVICE_ID, info->device_id);
	d->config[VD_PCI_REVISION_ID] = info->revision;
	d->config[VD_PCI_CLASS_PROG] = (uint8_t)info->class_code;
	put_le16(d->config + VD_PCI_CLASS_DEVICE, (uint16_t)(info->class_code >> 8));
	d->config[VD_PCI_HEADER_TYPE] = info->header_type;
	put_le16(d->config + VD_PCI_SUBSYSTEM_VENDOR_ID, info->subsystem_vendor_id);
	put_le16(d->config + VD_PCI_SUBSYSTEM_ID, info->subsystem_id);
	d->config[VD_PCI_INTERRUPT_PIN] = info->interrupt_pin;
	memset(d->used, 1, 0x40);

	/* Writable, as QEMU's pci_init_wmask: the command bits we implement
	 * (6.2.2: I/O, memory, bus master, SERR#, interrupt disable), cache line
	 * size and interrupt line (6.2.4; not the latency timer), and all of the
	 * device-specific space 0x40-0xff until a capability claims part of it. */
	put_le16(d->wmask + VD_PCI_COMMAND, VD_PCI_COMMAND_IO | VD_PCI_COMMAND_MEMORY |
						    VD_PCI_COMMAND_MASTER | VD_PCI_COMMAND_SERR |
						    VD_PCI_COMMAND_INTX_DISABLE);
	d->wmask[VD_PCI_CACHE_LINE_SIZE] = 0xff;
	d->wmask[VD_PCI_INTERRUPT_LINE] = 0xff;
	memset(d->wmask + 0x40, 0xff, VD_PCI_CONFIG_SIZE - 0x40);
	/* Status error bits are write-1-to-clear (6.2.3): bits 8, 11..15. */
	put_le16(d->w1cmask + VD_PCI_STATUS, 0xf900);

	bus->devs[devfn] = d;
	*out = d;
	return 0;
}

static void bar_unmap(struct vd_pci_device *d, struct pci_bar *b)
{
	if (b->addr == VD_PCI_BAR_UNMAPPED)
		return;
	vd_mem_region_del_subregion(b->mr);
	b->addr = VD_PCI_BAR_UNMAPPED;
}

void vd_pci_device_free(struct vd_pci_device *d)
{
	if (!d)
		return;
	if (d->intx_asserted)
		vd_pci_set_irq(d, 0);
	for (int i = 0; i < 6; i++) {
		bar_unmap(d, &d->bars[i]);
		vd_mem_region_unref(d->bars[i].mr);
	}
	pci_msix_free(d);
	d->bus->devs[d->devfn] = NULL;
	if (d->info.release)
		d->info.release(d);
	free(d);
}

int vd_pci_device_devfn(const struct vd_pci_device *d)
{
	return d->devfn;
}

void *vd_pci_device_opaque(const struct vd_pci_device *d)
{
	return d->info.opaque;
}

struct vd_pci_bus *vd_pci_device_bus(const struct vd_pci_device *d)
{
	return d->bus;
}

uint8_t *vd_pci_config(struct vd_pci_device *d)
{
	return d->config;
}

uint8_t *vd_pci_wmask(struct vd_pci_device *d)
{
	return d->wmask;
}

uint8_t *vd_pci_w1cmask(struct vd_pci_device *d)
{
	return d->w1cmask;
}

int vd_pci_register_bar(struct vd_pci_device *d, int bar, uint8_t type, struct vd_mem_region *mr)
{
	uint64_t size = mr ? vd_mem_region_size(mr) : 0;
	bool is64 = !(type & VD_PCI_BAR_IO) && (type & VD_PCI_BAR_MEM64);
	uint64_t wmask;

	if (bar < 0 || bar > 5 || (is64 && bar == 5) || size == 0 || (size & (size - 1)))
		return -EINVAL;
	if ((type & VD_PCI_BAR_IO) ? (size < 4 || size > 0x10000) : size < 16)
		return -EINVAL;
	if (!is64 && !(type & VD_PCI_BAR_IO) && size > (UINT64_C(1) << 31))
		return -EINVAL;
	if (d->bars[bar].size || (is64 && d->bars[bar + 1].size))
		return -EBUSY;
	vd_mem_region_ref(mr);
	d->bars[bar] = (struct pci_bar){size, type, mr, VD_PCI_BAR_UNMAPPED};
	/* 6.2.5.1: the low bits are read-only type bits, the address bits below
	 * the size read as zero: writing all ones reads back ~(size - 1). */
	wmask = ~(size - 1) & ((type & VD_PCI_BAR_IO) ? ~UINT64_C(3) : ~UINT64_C(15));
	put_le32(d->config + VD_PCI_BASE_ADDRESS_0 + bar * 4, type);
	put_le32(d->wmask + VD_PCI_BASE_ADDRESS_0 + bar * 4, (uint32_t)wmask);
	if (is64) {
		put_le32(d->config + VD_PCI_BASE_ADDRESS_0 + (bar + 1) * 4, 0);
		put_le32(d->wmask + VD_PCI_BASE_ADDRESS_0 + (bar + 1) * 4, (uint32_t)(wmask >> 32));
	}
	return 0;
}

uint64_t vd_pci_bar_addr(const struct vd_pci_device *d, int bar)
{
	return bar >= 0 && bar < 6 ? d->bars[bar].addr : VD_PCI_BAR_UNMAPPED;
}

/* Where BAR @i should be mapped now (QEMU's pci_bar_address). */
static uint64_t bar_target(const struct vd_pci_device *d, int i)
{
	const struct pci_bar *b = &d->bars[i];
	uint16_t cmd = d->config[VD_PCI_COMMAND] | d->config[VD_PCI_COMMAND + 1] << 8;
	uint64_t addr, last;

	if (b->type & VD_PCI_BAR_IO) {
		if (!(cmd & VD_PCI_COMMAND_IO))
			return VD_PCI_BAR_UNMAPPED;
		addr = get_le32(d->config + VD_PCI_BASE_ADDRESS_0 + i * 4) & ~(b->size - 1) &
		       ~UINT64_C(3);
		last = addr + b->size - 1;
		/* The I/O space is 64 KiB; address 0 means "not programmed". */
		if (addr == 0 || last > 0xffff)
			return VD_PCI_BAR_UNMAPPED;
		return addr;
	}
	if (!(cmd & VD_PCI_COMMAND_MEMORY))
		return VD_PCI_BAR_UNMAPPED;
	addr = get_le32(d->config + VD_PCI_BASE_ADDRESS_0 + i * 4);
	if (b->type & VD_PCI_BAR_MEM64)
		addr |= (uint64_t)get_le32(d->config + VD_PCI_BASE_ADDRESS_0 + (i + 1) * 4) << 32;
	addr &= ~(b->size - 1) & ~UINT64_C(15);
	last = addr + b->size - 1;
	if (addr == 0 || last < addr || last == UINT64_MAX)
		return VD_PCI_BAR_UNMAPPED;
	if (!(b->type & VD_PCI_BAR_MEM64) && last > UINT32_MAX)
		return VD_PCI_BAR_UNMAPPED;
	return addr;
}

static void update_mappings(struct vd_pci_device *d)
{
	for (int i = 0; i < 6; i++) {
		struct pci_bar *b = &d->bars[i];
		uint64_t target;

		if (!b->size)
			continue;
		target = bar_target(d, i);
		if (target == b->addr)
			continue;
		bar_unmap(d, b);
		if (target == VD_PCI_BAR_UNMAPPED)
			continue;
		/* Priority 1 over other things at the same level, as QEMU's
		 * pci_update_mappings (memory_region_add_subregion_overlap). */
		if (b->type & VD_PCI_BAR_IO) {
			if (vd_address_space_map(d->bus->io, target, b->mr, 1) < 0)
				continue;
		} else if (vd_mem_region_add_subregion(d->bus->mem_window, target, b->mr, 1) < 0) {
			continue;
		}
		b->addr = target;
		vd_trace(pci_bar_map, "dev=%s bar=%d addr=0x%" PRIx64 " size=0x%" PRIx64, d->name,
			 i, target, b->size);
	}
}

/* Tell the bus about a change of the effective INTx level. */
static void update_intx(struct vd_pci_device *d)
{
	uint16_t cmd = d->config[VD_PCI_COMMAND] | d->config[VD_PCI_COMMAND + 1] << 8;
	int level = d->intx_level && !(cmd & VD_PCI_COMMAND_INTX_DISABLE);
	struct vd_pci_bus *bus = d->bus;
	int pin = d->config[VD_PCI_INTERRUPT_PIN] - 1;
	int line;

	if (level == d->intx_asserted || pin < 0 || pin > 3)
		return;
	d->intx_asserted = level;
	line = bus->ops.map_irq ? bus->ops.map_irq(bus->opaque, d->devfn, pin) : pin;
	if (line < 0 || line > 3)
		return;
	bus->irq_count[line] += level ? 1 : -1;
	vd_trace(pci_intx, "dev=%s pin=%d line=%d level=%d count=%d", d->name, pin, line, level,
		 bus->irq_count[line]);
	if (bus->ops.set_irq)
		bus->ops.set_irq(bus->opaque, line, bus->irq_count[line] != 0);
}

void vd_pci_set_irq(struct vd_pci_device *d, int level)
{
	level = level != 0;
	d->intx_level = level;
	if (level)
		d->config[VD_PCI_STATUS] |= VD_PCI_STATUS_INTERRUPT;
	else
		d->config[VD_PCI_STATUS] &= ~VD_PCI_STATUS_INTERRUPT;
	update_intx(d);
}

uint32_t vd_pci_default_config_read(struct vd_pci_device *d, uint32_t addr, unsigned len)
{
	uint32_t val = 0;

	for (unsigned i = 0; i < len; i++)
		val |= (uint32_t)d->config[addr + i] << (i * 8);
	return val;
}

void vd_pci_default_config_write(struct vd_pci_device *d, uint32_t addr, uint32_t val, unsigned len)
{
	for (unsigned i = 0; i < len; i++) {
		uint8_t b = (uint8_t)(val >> (i * 8)), wm = d->wmask[addr + i];
		uint8_t *c = &d->config[addr + i];

		*c = (*c & ~wm) | (b & wm);
		*c &= ~(b & d->w1cmask[addr + i]);
	}
	/* Command or a BAR changed: remap (6.2.2, 6.2.5.1). */
	if (addr < VD_PCI_BASE_ADDRESS_0 + 24 && addr + len > VD_PCI_COMMAND)
		update_mappings(d);
	if (addr <= VD_PCI_COMMAND + 1 && addr + len > VD_PCI_COMMAND + 1)
		update_intx(d);
	if (d->msix)
		pci_msix_config_written(d, addr, len);
}

/*
 * PCI 3.0 section 6.2 "after RST#" as QEMU 7.2's pci_do_device_reset: INTx
 * deasserted, the writable and write-1-to-clear bits of command and status
 * and the interrupt line cleared, cache line size 0, BARs back to their type
 * bits (so unmapped), MSI-X reset.  Capabilities and the device-specific
 * space keep their contents.  The config_write hook is not called: the
 * device model resets its own state first.
 */
void vd_pci_device_reset(struct vd_pci_device *d)
{
	static const uint32_t cleared[] = {VD_PCI_COMMAND, VD_PCI_COMMAND + 1, VD_PCI_STATUS,
					   VD_PCI_STATUS + 1, VD_PCI_INTERRUPT_LINE};

	vd_pci_set_irq(d, 0);
	for (size_t i = 0; i < sizeof(cleared) / sizeof(cleared[0]); i++)
		d->config[cleared[i]] &= (uint8_t) ~(d->wmask[cleared[i]] | d->w1cmask[cleared[i]]);
	d->config[VD_PCI_CACHE_LINE_SIZE] = 0;
	for (int i = 0; i < 6; i++) {
		struct pci_bar *b = &d->bars[i];

		if (!b->size)
			continue;
		put_le32(d->config + VD_PCI_BASE_ADDRESS_0 + i * 4, b->type);
		if (!(b->type & VD_PCI_BAR_IO) && (b->type & VD_PCI_BAR_MEM64))
			put_le32(d->config + VD_PCI_BASE_ADDRESS_0 + (i + 1) * 4, 0);
	}
	update_mappings(d);
	update_intx(d);
	pci_msix_reset(d);
}

void vd_pci_bus_reset(struct vd_pci_bus *bus)
{
	for (int devfn = 0; devfn < 256; devfn++)
		if (bus->devs[devfn])
			vd_pci_device_reset(bus->devs[devfn]);
}

static bool config_access_ok(uint32_t addr, unsigned len)
{
	return (len == 1 || len == 2 || len == 4) && addr < VD_PCI_CONFIG_SIZE &&
	       len <= VD_PCI_CONFIG_SIZE - addr;
}

uint32_t vd_pci_config_read(struct vd_pci_bus *bus, int devfn, uint32_t addr, unsigned len)
{
	struct vd_pci_device *d = vd_pci_bus_find(bus, devfn);
	uint32_t val;

	if (!config_access_ok(addr, len))
		return UINT32_MAX;
	if (!d) {
		val = len == 4 ? UINT32_MAX : (1u << (len * 8)) - 1;
	} else if (d->info.config_read) {
		val = d->info.config_read(d, addr, len);
	} else {
		val = vd_pci_default_config_read(d, addr, len);
	}
	vd_trace(pci_cfg_read, "devfn=%02x.%x addr=0x%02x len=%u val=0x%x", VD_PCI_SLOT(devfn),
		 VD_PCI_FUNC(devfn), addr, len, val);
	return val;
}

void vd_pci_config_write(struct vd_pci_bus *bus, int devfn, uint32_t addr, uint32_t val,
			 unsigned len)
{
	struct vd_pci_device *d = vd_pci_bus_find(bus, devfn);

	vd_trace(pci_cfg_write, "devfn=%02x.%x addr=0x%02x len=%u val=0x%x", VD_PCI_SLOT(devfn),
		 VD_PCI_FUNC(devfn), addr, len, val);
	if (!d || !config_access_ok(addr, len))
		return;
	if (d->info.config_write)
		d->info.config_write(d, addr, val, len);
	else
		vd_pci_default_config_write(d, addr, val, len);
}

int vd_pci_add_capability(struct vd_pci_device *d, uint8_t id, uint8_t offset, uint8_t size)
{
	if (size < 2)
		return -EINVAL;
	if (offset == 0) {
		for (unsigned o = 0x40; o + size <= VD_PCI_CONFIG_SIZE; o += 4) {
			bool free_space = true;

			for (unsigned i = 0; i < size && free_space; i++)
				free_space = !d->used[o + i];
			if (free_space) {
				offset = (uint8_t)o;
				break;
			}
		}
		if (offset == 0)
			return -ENOSPC;
	} else {
		if (offset < 0x40 || (offset & 3) || offset + size > VD_PCI_CONFIG_SIZE)
			return -EINVAL;
		for (unsigned i = 0; i < size; i++) {
			if (d->used[offset + i])
				return -EBUSY;
		}
	}
	memset(d->used + offset, 1, size);
	/* The capability itself is read-only unless its owner opens bits
	 * (QEMU's pci_add_capability). */
	memset(d->wmask + offset, 0, size);
	memset(d->w1cmask + offset, 0, size);
	/* 6.7: link at the head; the list pointer's low two bits are reserved. */
	d->config[offset] = id;
	d->config[offset + 1] = d->config[VD_PCI_CAPABILITY_LIST];
	d->config[VD_PCI_CAPABILITY_LIST] = offset;
	d->config[VD_PCI_STATUS] |= VD_PCI_STATUS_CAP_LIST;
	return offset;
}

uint8_t vd_pci_find_capability(struct vd_pci_device *d, uint8_t id)
{
	uint8_t off = d->config[VD_PCI_CAPABILITY_LIST];

	/* At most 48 capabilities fit in 192 bytes: bound a looping list. */
	for (int n = 0; off >= 0x40 && n < 48; n++) {
		if (d->config[off] == id)
			return off;
		off = d->config[off + 1] & ~3;
	}
	return 0;
}

static bool bus_master(struct vd_pci_device *d)
{
	return d->config[VD_PCI_COMMAND] & VD_PCI_COMMAND_MASTER;
}

int vd_pci_dma_read(struct vd_pci_device *d, uint64_t addr, void *buf, uint64_t len)
{
	if (!bus_master(d))
		return -EFAULT;
	return vd_dma_read(d->bus->mem, addr, buf, len);
}

int vd_pci_dma_write(struct vd_pci_device *d, uint64_t addr, const void *buf, uint64_t len)
{
	if (!bus_master(d))
		return -EFAULT;
	return vd_dma_write(d->bus->mem, addr, buf, len);
}

void *vd_pci_dma_map(struct vd_pci_device *d, uint64_t addr, uint64_t len)
{
	if (!bus_master(d))
		return NULL;
	return vd_dma_map(d->bus->mem, addr, len);
}
