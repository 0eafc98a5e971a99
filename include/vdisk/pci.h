/* SPDX-License-Identifier: MIT */
/*
 * Conventional PCI (PCI Local Bus Specification 3.0): one bus, functions with
 * a 256-byte configuration space, BARs that are mapped into the memory or I/O
 * address space when the command register and the BAR say so, capability
 * lists, INTx and MSI-X.
 *
 * A device model:
 *	struct vd_pci_device_info info = {
 *		.name = "piix3-ide", .vendor_id = 0x8086, .device_id = 0x7010,
 *		.class_code = 0x010180, .interrupt_pin = 0, .opaque = s,
 *	};
 *	vd_pci_device_new(bus, VD_PCI_DEVFN(1, 1), &info, &dev);
 *	vd_pci_register_bar(dev, 4, VD_PCI_BAR_IO, bmdma_region);
 *	vd_pci_set_irq(dev, 1);                      INTx (through PIRQ routing)
 *	vd_pci_dma_read(dev, gpa, buf, len);         bus-master DMA into guest RAM
 * A device never sees who reads its config space (port 0xCF8/0xCFC, a test);
 * the board does that through vd_pci_config_read/write.
 */
#ifndef VDISK_PCI_H
#define VDISK_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/memory.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VD_PCI_DEVFN(slot, fn) ((((slot)&0x1f) << 3) | ((fn)&0x07))
#define VD_PCI_SLOT(devfn) (((devfn) >> 3) & 0x1f)
#define VD_PCI_FUNC(devfn) ((devfn)&0x07)

/* Configuration header offsets (PCI 3.0 section 6.1). */
#define VD_PCI_VENDOR_ID 0x00
#define VD_PCI_DEVICE_ID 0x02
#define VD_PCI_COMMAND 0x04
#define VD_PCI_STATUS 0x06
#define VD_PCI_REVISION_ID 0x08
#define VD_PCI_CLASS_PROG 0x09
#define VD_PCI_CLASS_DEVICE 0x0a
#define VD_PCI_CACHE_LINE_SIZE 0x0c
#define VD_PCI_LATENCY_TIMER 0x0d
#define VD_PCI_HEADER_TYPE 0x0e
#define VD_PCI_BASE_ADDRESS_0 0x10
#define VD_PCI_SUBSYSTEM_VENDOR_ID 0x2c
#define VD_PCI_SUBSYSTEM_ID 0x2e
#define VD_PCI_CAPABILITY_LIST 0x34
#define VD_PCI_INTERRUPT_LINE 0x3c
#define VD_PCI_INTERRUPT_PIN 0x3d
#define VD_PCI_CONFIG_SIZE 256

#define VD_PCI_COMMAND_IO 0x1
#define VD_PCI_COMMAND_MEMORY 0x2
#define VD_PCI_COMMAND_MASTER 0x4
#define VD_PCI_COMMAND_SERR 0x100
#define VD_PCI_COMMAND_INTX_DISABLE 0x400
#define VD_PCI_STATUS_DEVSEL_MEDIUM 0x200
#define VD_PCI_STATUS_INTERRUPT 0x08
#define VD_PCI_STATUS_CAP_LIST 0x10
#define VD_PCI_HEADER_MULTI_FUNCTION 0x80

#define VD_PCI_CAP_ID_MSIX 0x11

/* BAR types: the low bits of the BAR as the spec defines them (6.2.5.1). */
#define VD_PCI_BAR_MEM32 0x00
#define VD_PCI_BAR_IO 0x01
#define VD_PCI_BAR_MEM64 0x04
#define VD_PCI_BAR_PREFETCH 0x08
#define VD_PCI_BAR_UNMAPPED UINT64_MAX

struct vd_pci_bus;
struct vd_pci_device;

/*
 * What the board gives a bus: where BARs are mapped, and how INTx pins reach
 * interrupt lines.  @map_irq turns (devfn, pin 0..3 = INTA..INTD) into one of
 * four bus lines (the PIRQs of a PIIX); @set_irq is called with a bus line's
 * level whenever the OR of the devices on it changes.
 */
struct vd_pci_bus_ops {
	int (*map_irq)(void *opaque, int devfn, int pin);
	void (*set_irq)(void *opaque, int line, int level);
};

struct vd_pci_bus *vd_pci_bus_new(struct vd_address_space *mem, struct vd_address_space *io,
				  const struct vd_pci_bus_ops *ops, void *opaque);
/* Frees the devices still on it. */
void vd_pci_bus_free(struct vd_pci_bus *bus);
struct vd_pci_device *vd_pci_bus_find(struct vd_pci_bus *bus, int devfn);

/*
 * Configuration access as the host bridge performs it: @addr is the register
 * offset (0..255), @len 1, 2 or 4 and not crossing the end of the space.  A
 * function that does not exist reads as all ones and ignores writes.
 */
uint32_t vd_pci_config_read(struct vd_pci_bus *bus, int devfn, uint32_t addr, unsigned len);
void vd_pci_config_write(struct vd_pci_bus *bus, int devfn, uint32_t addr, uint32_t val,
			 unsigned len);

struct vd_pci_device_info {
	const char *name;
	uint16_t vendor_id, device_id;
	uint8_t revision;
	uint32_t class_code; /* base class << 16 | subclass << 8 | prog-if */
	uint8_t header_type; /* VD_PCI_HEADER_MULTI_FUNCTION for function 0 of a
			      * multi-function device */
	uint16_t subsystem_vendor_id, subsystem_id;
	uint8_t interrupt_pin; /* 0 none, 1..4 INTA..INTD */
	/*
	 * Optional hooks that replace the default config access; they call
	 * vd_pci_default_config_read/write for the generic part.  Called with
	 * @addr and @len already validated.
	 */
	uint32_t (*config_read)(struct vd_pci_device *d, uint32_t addr, unsigned len);
	void (*config_write)(struct vd_pci_device *d, uint32_t addr, uint32_t val, unsigned len);
	/* Called by vd_pci_device_free (also when the bus or the machine is
	 * freed) after the BARs are unmapped, before the function goes: the
	 * device model frees its state here.  Optional. */
	void (*release)(struct vd_pci_device *d);
	void *opaque;
};

/*
 * Create a function at @devfn (or, with @devfn < 0, at the first free slot from
 * 2, function 0) and put it on the bus.  -EBUSY if taken, -EINVAL, -ENOMEM.
 */
int vd_pci_device_new(struct vd_pci_bus *bus, int devfn, const struct vd_pci_device_info *info,
		      struct vd_pci_device **out);
/* Unmap its BARs, take it off the bus, free it. */
void vd_pci_device_free(struct vd_pci_device *d);
/* The configuration side of a reset (PCI 3.0 section 6.2, as QEMU's
 * pci_do_device_reset): command, status, interrupt line, cache line size
 * and the BARs (unmapped) cleared, INTx deasserted, MSI-X reset.  The board
 * resets the device models first, then calls this (vd_pci_bus_reset: every
 * function on the bus). */
void vd_pci_device_reset(struct vd_pci_device *d);
void vd_pci_bus_reset(struct vd_pci_bus *bus);
int vd_pci_device_devfn(const struct vd_pci_device *d);
void *vd_pci_device_opaque(const struct vd_pci_device *d);
struct vd_pci_bus *vd_pci_device_bus(const struct vd_pci_device *d);

/* The raw configuration bytes and their masks: bits set in wmask are
 * writable, bits set in w1cmask are cleared by writing 1 (status bits). */
uint8_t *vd_pci_config(struct vd_pci_device *d);
uint8_t *vd_pci_wmask(struct vd_pci_device *d);
uint8_t *vd_pci_w1cmask(struct vd_pci_device *d);

uint32_t vd_pci_default_config_read(struct vd_pci_device *d, uint32_t addr, unsigned len);
void vd_pci_default_config_write(struct vd_pci_device *d, uint32_t addr, uint32_t val,
				 unsigned len);

/*
 * Declare BAR @bar (0..5) of @type backed by @mr (size = the region's size, a
 * power of two, at least 4 for I/O and 16 for memory).  A 64-bit BAR uses
 * @bar and @bar + 1.  The device keeps its reference to @mr; the bus maps and
 * unmaps it as the guest programs the BAR and the command register (I/O BARs
 * at priority 1 in the I/O space, memory BARs in the PCI window of the memory
 * space).  -EINVAL, -EBUSY.
 */
int vd_pci_register_bar(struct vd_pci_device *d, int bar, uint8_t type, struct vd_mem_region *mr);
/* Where the BAR is mapped now, or VD_PCI_BAR_UNMAPPED. */
uint64_t vd_pci_bar_addr(const struct vd_pci_device *d, int bar);

/*
 * Add a capability of @size bytes with @id at @offset (0: the first free
 * dword-aligned space from 0x40) and link it at the head of the list.  Returns
 * the offset, or -ENOSPC / -EINVAL.
 */
int vd_pci_add_capability(struct vd_pci_device *d, uint8_t id, uint8_t offset, uint8_t size);
/* Offset of the first capability with @id, 0 if none. */
uint8_t vd_pci_find_capability(struct vd_pci_device *d, uint8_t id);

/* Level of the device's INTx pin.  Masked by COMMAND.INTX_DISABLE; reflected
 * in STATUS.INTERRUPT (PCI 3.0 section 6.2.2, 6.2.3). */
void vd_pci_set_irq(struct vd_pci_device *d, int level);

/* Bus-master DMA: -EFAULT when COMMAND.MASTER is off or the range is not
 * entirely guest RAM (see vd_dma_read). */
int vd_pci_dma_read(struct vd_pci_device *d, uint64_t addr, void *buf, uint64_t len);
int vd_pci_dma_write(struct vd_pci_device *d, uint64_t addr, const void *buf, uint64_t len);
/* The host pointer for a guest range (NULL if not RAM or not bus master). */
void *vd_pci_dma_map(struct vd_pci_device *d, uint64_t addr, uint64_t len);

/*
 * MSI-X (PCI 3.0 section 6.8.2).  The table (16 bytes per vector) and the PBA
 * are two I/O regions placed into @container (a container region the device
 * registered as a BAR, or will) at @table_offset and @pba_offset; the
 * capability goes at @cap_offset (0: anywhere).  A message is a 4-byte write
 * of the entry's data to its address in the memory address space.
 */
int vd_msix_init(struct vd_pci_device *d, unsigned nr_vectors, struct vd_mem_region *container,
		 uint8_t bar, uint32_t table_offset, uint32_t pba_offset, uint8_t cap_offset);
bool vd_msix_enabled(struct vd_pci_device *d);
/* Send vector @vector, or set its pending bit while it is masked. */
void vd_msix_notify(struct vd_pci_device *d, unsigned vector);

#ifdef __cplusplus
}
#endif

#endif
