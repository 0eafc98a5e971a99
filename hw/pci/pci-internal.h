/* SPDX-License-Identifier: MIT */
/* Private to hw/pci/. */
#ifndef VDISK_PCI_INTERNAL_H
#define VDISK_PCI_INTERNAL_H

#include <vdisk/pci.h>

struct pci_bar {
	uint64_t size; /* 0: not implemented */
	uint8_t type;
	struct vd_mem_region *mr;
	uint64_t addr; /* VD_PCI_BAR_UNMAPPED when not mapped */
};

struct msix_state {
	unsigned nr;
	uint8_t cap;
	uint8_t *table; /* nr * 16 bytes */
	uint8_t *pba;
	struct vd_mem_region *table_mr, *pba_mr;
};

struct vd_pci_device {
	struct vd_pci_bus *bus;
	int devfn;
	struct vd_pci_device_info info;
	char name[32];
	uint8_t config[VD_PCI_CONFIG_SIZE];
	uint8_t wmask[VD_PCI_CONFIG_SIZE];
	uint8_t w1cmask[VD_PCI_CONFIG_SIZE];
	uint8_t used[VD_PCI_CONFIG_SIZE]; /* header and capabilities */
	struct pci_bar bars[6];
	int intx_level; /* the device's own level */
	int intx_asserted; /* what the bus was told */
	struct msix_state *msix;
};

struct vd_pci_bus {
	struct vd_address_space *mem, *io;
	struct vd_mem_region *mem_window; /* container for memory BARs */
	struct vd_pci_bus_ops ops;
	void *opaque;
	int irq_count[4];
	struct vd_pci_device *devs[256];
};

void pci_msix_config_written(struct vd_pci_device *d, uint32_t addr, unsigned len);
void pci_msix_free(struct vd_pci_device *d);
void pci_msix_reset(struct vd_pci_device *d);

#endif
