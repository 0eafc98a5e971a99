/* SPDX-License-Identifier: MIT */
/*
 * The PIIX3 IDE function (Intel 82371SB, PCI 8086:7010): two ATA channels
 * in legacy ("compatibility") mode at ports 0x1F0-0x1F7/0x3F6 (ISA IRQ 14)
 * and 0x170-0x177/0x376 (ISA IRQ 15), and the SFF-8038i bus master in BAR4.
 * Each channel takes a master and a slave: an ATA disk or an ATAPI CD-ROM.
 *
 * A board creates it once, attaches drives and forwards resets:
 *
 *	struct vd_piix_ide *ide;
 *	struct vd_irq *irqs[2] = {isa_irq(14), isa_irq(15)};
 *	vd_piix3_ide_new(pci_bus, VD_PCI_DEVFN(1, 1), io_space, irqs, &ide);
 *	struct vd_ide_drive_conf c = {.blk = blk, .cdrom = false};
 *	vd_ide_attach(ide, 0, 0, &c);                  // primary master
 *	...
 *	vd_piix3_ide_reset(ide);                       // machine reset
 *	vd_piix3_ide_restart(ide);                     // QMP "cont": retry
 *	vd_piix3_ide_free(ide);
 *
 * Block I/O is asynchronous on the current thread's loop; everything here
 * runs on that thread.  A host I/O error follows the backend's rerror/werror
 * policy: "stop" keeps the request and asks the backend's registry to stop
 * the machine; vd_piix3_ide_restart() reissues it.
 */
#ifndef VDISK_IDE_H
#define VDISK_IDE_H

#include <stdbool.h>

#include <vdisk/backend.h>
#include <vdisk/irq.h>
#include <vdisk/memory.h>
#include <vdisk/pci.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_piix_ide;

struct vd_ide_drive_conf {
	struct vd_blk *blk; /* required; its medium may be absent (CD-ROM) */
	bool cdrom;
	/* NULL: QEMU's defaults "QM%05d" (drive index + 1), "QEMU HARDDISK" or
	 * "QEMU DVD-ROM", and "2.5+". */
	const char *serial, *model, *version;
	const char *qdev_id; /* for vd_blk_attach_dev, may be NULL */
};

/* @irqs: the channels' interrupt lines (ISA 14 and 15 on a PC). */
int vd_piix3_ide_new(struct vd_pci_bus *bus, int devfn, struct vd_address_space *io,
		     struct vd_irq *irqs[2], struct vd_piix_ide **out);
void vd_piix3_ide_free(struct vd_piix_ide *ide);
struct vd_pci_device *vd_piix3_ide_pci(struct vd_piix_ide *ide);
/* Attach a drive at @bus (0, 1) / @unit (0 master, 1 slave): -EINVAL, -EBUSY,
 * or the error of vd_blk_attach_dev. */
int vd_ide_attach(struct vd_piix_ide *ide, int bus, int unit, const struct vd_ide_drive_conf *conf);
/* Hardware reset: requests in flight are dropped (their data never reaches
 * guest memory), registers and the bus masters return to power-on state. */
void vd_piix3_ide_reset(struct vd_piix_ide *ide);
/* Reissue requests kept by the "stop" error policy (after QMP "cont"). */
void vd_piix3_ide_restart(struct vd_piix_ide *ide);

#ifdef __cplusplus
}
#endif

#endif
