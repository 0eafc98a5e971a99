/* SPDX-License-Identifier: MIT */
/*
 * The PIIX3 IDE function (Intel 82371SB datasheet, section 2.6 "IDE
 * interface"): PCI 8086:7010, class 01 01 80 (mass storage, IDE, bus
 * master capable, both channels in compatibility mode), the channels at the
 * ISA legacy ports whatever the BARs say, and the SFF-8038i bus master
 * registers behind BAR4 (16 bytes of I/O space).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

#define PIIX_IDE_BAR4 4
#define QEMU_SUBVENDOR 0x1af4 /* as every QEMU PCI device */
#define QEMU_SUBDEVICE 0x1100

static const uint32_t legacy_base[2] = {0x1f0, 0x170};
static const uint32_t legacy_ctl[2] = {0x3f6, 0x376};

/* PIIX power-on values (82371SB 2.6.x; QEMU piix_ide_reset): command 0,
 * status medium DEVSEL and fast back-to-back, BAR4 reads as I/O. */
static void piix_pci_reset(struct vd_piix_ide *ide)
{
	uint8_t *c = vd_pci_config(ide->pci);

	c[VD_PCI_COMMAND] = 0;
	c[VD_PCI_COMMAND + 1] = 0;
	c[VD_PCI_STATUS] = 0x80;
	c[VD_PCI_STATUS + 1] = 0x02;
}

int vd_piix3_ide_new(struct vd_pci_bus *bus, int devfn, struct vd_address_space *io,
		     struct vd_irq *irqs[2], struct vd_piix_ide **out)
{
	struct vd_piix_ide *ide;
	struct vd_pci_device_info info = {
		.name = "piix3-ide",
		.vendor_id = 0x8086,
		.device_id = 0x7010,
		.class_code = 0x010180,
		.subsystem_vendor_id = QEMU_SUBVENDOR,
		.subsystem_id = QEMU_SUBDEVICE,
	};
	int ret;

	*out = NULL;
	ide = calloc(1, sizeof(*ide));
	if (!ide)
		return -ENOMEM;
	ide->io = io;
	info.opaque = ide;
	ret = vd_pci_device_new(bus, devfn, &info, &ide->pci);
	if (ret < 0)
		goto fail;
	ide->bar4 = vd_mem_region_new_io("piix-bmdma", 16, &ide_bmdma_ops, ide);
	if (!ide->bar4) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vd_pci_register_bar(ide->pci, PIIX_IDE_BAR4, VD_PCI_BAR_IO, ide->bar4);
	if (ret < 0)
		goto fail;
	for (int i = 0; i < 2; i++) {
		ret = ide_bus_init(&ide->bus[i], ide, i, io, legacy_base[i], legacy_ctl[i],
				   irqs ? irqs[i] : NULL);
		if (ret < 0)
			goto fail;
		ide->bus[i].bm.pci = ide->pci;
	}
	piix_pci_reset(ide);
	*out = ide;
	return 0;

fail:
	vd_piix3_ide_free(ide);
	return ret;
}

void vd_piix3_ide_free(struct vd_piix_ide *ide)
{
	if (!ide)
		return;
	for (int i = 0; i < 2; i++)
		ide_bus_fini(&ide->bus[i]);
	if (ide->pci)
		vd_pci_device_free(ide->pci);
	if (ide->bar4)
		vd_mem_region_unref(ide->bar4);
	free(ide);
}

struct vd_pci_device *vd_piix3_ide_pci(struct vd_piix_ide *ide)
{
	return ide->pci;
}

int vd_ide_attach(struct vd_piix_ide *ide, int bus, int unit, const struct vd_ide_drive_conf *conf)
{
	if (!ide || bus < 0 || bus > 1 || unit < 0 || unit > 1)
		return -EINVAL;
	vd_trace(ide_attach, "bus=%d unit=%d cdrom=%d", bus, unit, conf && conf->cdrom);
	return ide_drive_attach(&ide->bus[bus].ifs[unit], conf);
}

void vd_piix3_ide_reset(struct vd_piix_ide *ide)
{
	vd_trace(ide_reset, "hardware");
	for (int i = 0; i < 2; i++)
		ide_bus_reset(&ide->bus[i]);
	piix_pci_reset(ide);
}

void vd_piix3_ide_restart(struct vd_piix_ide *ide)
{
	for (int i = 0; i < 2; i++)
		ide_bus_restart(&ide->bus[i]);
}
