/* SPDX-License-Identifier: MIT */
/*
 * The register file of one IDE channel and the command decoder: the
 * task-file registers (ATA8-APT, T13/1698-D, section 5.2: data, error and
 * features, sector count, LBA low/mid/high, device, status and command,
 * each with its LBA48 "HOB" copy), device control and alternate status
 * (APT 5.2.5, 5.2.1), the PIO data port and its DRQ blocks (APT 5.2.1,
 * ACS PIO data-in/data-out protocols), the interrupt line, software reset
 * (ACS 9.13), and ide_exec_cmd(): a command written to the command
 * register is checked against BSY/DRQ and the drive kind and handed to
 * its handler in ide_cmd_table (ata.c).  The channel's lifetime (port
 * registration, hardware reset) is here too.
 *
 * A command then goes on to ata.c (ATA commands), atapi.c (packets),
 * bmdma.c (DMA) and block.c (block requests).  Observable behaviour
 * follows QEMU 7.2 (hw/ide/core.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

/* --- small helpers --------------------------------------------------------- */

struct ide_state *ide_bus_active(struct ide_bus *bus)
{
	return &bus->ifs[bus->unit];
}

void ide_set_irq(struct ide_bus *bus)
{
	if (bus->cmd & IDE_CTRL_NIEN)
		return;
	/* The PCI IDE function ORs every interrupt into BM status INT
	 * (SFF-8038i 2.2.2: "set when the IDE device asserts its interrupt"). */
	bus->bm.status |= BM_ST_INT;
	vd_trace(ide_irq_raise, "bus=%d", bus->index);
	if (bus->irq)
		vd_irq_raise(bus->irq);
}

void ide_lower_irq(struct ide_bus *bus)
{
	if (bus->irq)
		vd_irq_lower(bus->irq);
}

/* ACS 6.2.1: ABRT in the error register, ERR in status. */
void ide_abort_command(struct ide_state *s)
{
	ide_transfer_stop(s);
	s->status = IDE_ST_DRDY | IDE_ST_ERR;
	s->error = IDE_ER_ABRT;
}

/* ACS 9.12 (signatures): ATA 00/00, packet device 14/EB, none FF/FF. */
void ide_set_signature(struct ide_state *s)
{
	s->select &= 0xf0;
	s->nsector = 1;
	s->sector = 1;
	if (s->kind == IDE_CD) {
		s->lcyl = 0x14;
		s->hcyl = 0xeb;
	} else if (s->kind == IDE_HD) {
		s->lcyl = 0;
		s->hcyl = 0;
	} else {
		s->lcyl = 0xff;
		s->hcyl = 0xff;
	}
}

/* The 28- or 48-bit address in the task file (ACS 4.1.2), or CHS. */
int64_t ide_get_sector(struct ide_state *s)
{
	if (s->select & IDE_DEV_LBA) {
		if (s->lba48)
			return ((int64_t)s->hob_hcyl << 40) | ((int64_t)s->hob_lcyl << 32) |
			       ((int64_t)s->hob_sector << 24) | ((int64_t)s->hcyl << 16) |
			       ((int64_t)s->lcyl << 8) | s->sector;
		return ((int64_t)(s->select & IDE_DEV_HS) << 24) | ((int64_t)s->hcyl << 16) |
		       ((int64_t)s->lcyl << 8) | s->sector;
	}
	/* CHS: sector 0 does not exist, which gives -1 and a range error. */
	return ((int64_t)((s->hcyl << 8) | s->lcyl) * s->heads + (s->select & IDE_DEV_HS)) *
		       s->sectors +
	       (int64_t)s->sector - 1;
}

void ide_set_sector(struct ide_state *s, int64_t sector)
{
	if (s->select & IDE_DEV_LBA) {
		if (s->lba48) {
			s->sector = sector;
			s->lcyl = sector >> 8;
			s->hcyl = sector >> 16;
			s->hob_sector = sector >> 24;
			s->hob_lcyl = sector >> 32;
			s->hob_hcyl = sector >> 40;
		} else {
			s->select = (s->select & ~IDE_DEV_HS) | ((sector >> 24) & IDE_DEV_HS);
			s->hcyl = sector >> 16;
			s->lcyl = sector >> 8;
			s->sector = sector;
		}
		return;
	}
	/* INITIALIZE DEVICE PARAMETERS may have set zero sectors per track:
	 * leave the registers alone rather than divide by zero. */
	if (s->heads == 0 || s->sectors == 0)
		return;
	uint64_t per_cyl = (uint64_t)s->heads * s->sectors;
	uint64_t cyl = (uint64_t)sector / per_cyl, r = (uint64_t)sector % per_cyl;

	s->hcyl = cyl >> 8;
	s->lcyl = cyl;
	s->select = (s->select & 0xf0) | ((r / s->sectors) & IDE_DEV_HS);
	s->sector = r % s->sectors + 1;
}

bool ide_sect_range_ok(struct ide_state *s, int64_t sector, uint64_t n)
{
	return sector >= 0 && (uint64_t)sector <= s->nb_sectors && n <= s->nb_sectors - sector;
}

/* --- PIO transfers (APT 5.2.1 data register, ACS PIO data-in/out) --------- */

void ide_transfer_start(struct ide_state *s, uint32_t off, uint32_t size, enum ide_end end)
{
	if (off > IDE_IO_BUFFER_SIZE || size > IDE_IO_BUFFER_SIZE - off)
		size = 0, off = 0; /* cannot happen: callers bound their sizes */
	s->data_ptr = off;
	s->data_end = off + size;
	s->end = end;
	if (!(s->status & IDE_ST_ERR))
		s->status |= IDE_ST_DRQ;
}

void ide_transfer_stop(struct ide_state *s)
{
	s->end = IDE_END_NONE;
	s->data_ptr = s->data_end = 0;
	s->status &= ~IDE_ST_DRQ;
}

static bool ide_is_pio_out(const struct ide_state *s)
{
	return s->end != IDE_END_SECTOR_WRITE && s->end != IDE_END_ATAPI_CMD;
}

static void ide_end_transfer(struct ide_state *s)
{
	switch (s->end) {
	case IDE_END_SECTOR_READ:
		ide_sector_read(s);
		break;
	case IDE_END_SECTOR_WRITE:
		ide_sector_write(s);
		break;
	case IDE_END_ATAPI_CMD:
		ide_atapi_cmd(s);
		break;
	case IDE_END_ATAPI_REPLY:
		ide_atapi_reply_end(s);
		break;
	case IDE_END_STOP:
	case IDE_END_NONE:
		ide_transfer_stop(s);
		break;
	}
}

static uint32_t ide_data_read(struct ide_bus *bus, unsigned size)
{
	struct ide_state *s = ide_bus_active(bus);
	uint32_t val = 0;

	/* Data is only there while DRQ is set and the direction is in. */
	if (!(s->status & IDE_ST_DRQ) || !ide_is_pio_out(s))
		return 0;
	if (s->data_ptr >= s->data_end)
		return 0;
	/* An odd-sized ATAPI reply ends with a partial word. */
	if (size > s->data_end - s->data_ptr)
		size = s->data_end - s->data_ptr;
	for (unsigned i = 0; i < size; i++)
		val |= (uint32_t)s->io_buffer[s->data_ptr + i] << (8 * i);
	s->data_ptr += size;
	if (s->data_ptr >= s->data_end) {
		s->status &= ~IDE_ST_DRQ;
		ide_end_transfer(s);
	}
	return val;
}

static void ide_data_write(struct ide_bus *bus, uint32_t val, unsigned size)
{
	struct ide_state *s = ide_bus_active(bus);

	if (!(s->status & IDE_ST_DRQ) || ide_is_pio_out(s))
		return;
	if (s->data_ptr + size > s->data_end)
		return;
	for (unsigned i = 0; i < size; i++)
		s->io_buffer[s->data_ptr + i] = val >> (8 * i);
	s->data_ptr += size;
	if (s->data_ptr >= s->data_end) {
		s->status &= ~IDE_ST_DRQ;
		ide_end_transfer(s);
	}
}

/*
 * BSY or DRQ, or a failed request kept by the "stop" error policy for a
 * retry after "cont".  The PIO paths clear BSY when they keep one (as
 * QEMU's ide_sector_read_cb does), and QEMU relies on the paused guest not
 * touching the drive; a qtest guest does, and a second request would then
 * replace the kept one (leaking it) and complete the same command twice.
 */
static bool ide_drive_busy(const struct ide_state *s)
{
	return (s->status & (IDE_ST_BSY | IDE_ST_DRQ)) || s->retry;
}

static void ide_exec_cmd(struct ide_bus *bus, uint8_t val)
{
	struct ide_state *s = ide_bus_active(bus);
	uint8_t kind_flag;
	bool complete;

	vd_trace(ide_exec_cmd, "bus=%d unit=%d cmd=0x%02x", bus->index, bus->unit, val);
	/* A command to a missing device 1 is ignored (APT 5.2.9). */
	if (bus->unit == 1 && s->kind == IDE_NONE)
		return;
	/* Only DEVICE RESET, and only to a packet device, while BSY/DRQ, or
	 * while the drive holds a failed request for a retry (see
	 * ide_drive_busy). */
	if (ide_drive_busy(s)) {
		if (val != 0x08 || s->kind != IDE_CD)
			return;
	}
	kind_flag = s->kind == IDE_HD ? CMD_HD : s->kind == IDE_CD ? CMD_CD : 0;
	if (s->kind == IDE_NONE && val == 0x90)
		kind_flag = CMD_ALL;
	if (!ide_cmd_table[val].fn || !(ide_cmd_table[val].flags & kind_flag)) {
		ide_abort_command(s);
		ide_set_irq(bus);
		return;
	}
	s->status = IDE_ST_DRDY | IDE_ST_BSY;
	s->error = 0;
	complete = ide_cmd_table[val].fn(s, val);
	if (complete) {
		s->status &= ~IDE_ST_BSY;
		if ((ide_cmd_table[val].flags & CMD_DSC) && !s->error)
			s->status |= IDE_ST_DSC;
		ide_set_irq(bus);
	}
}

/* --- register access (APT 5.2) -------------------------------------------- */

static void ide_clear_hob(struct ide_bus *bus)
{
	bus->cmd &= ~IDE_CTRL_HOB;
}

static bool ide_regs_absent(struct ide_bus *bus)
{
	/* Reads with no device, or with a missing device 1 selected, give 0. */
	return (bus->ifs[0].kind == IDE_NONE && bus->ifs[1].kind == IDE_NONE) ||
	       (bus->unit == 1 && bus->ifs[1].kind == IDE_NONE);
}

static uint32_t ide_ioport_read(void *opaque, uint32_t port)
{
	struct ide_bus *bus = opaque;
	struct ide_state *s = ide_bus_active(bus);
	bool hob = bus->cmd & IDE_CTRL_HOB;
	uint32_t reg = port & 7, ret;

	if (reg == 0)
		return ide_data_read(bus, 2) & 0xff; /* a byte read takes a word */
	if (ide_regs_absent(bus)) {
		ret = 0;
	} else {
		switch (reg) {
		case 1:
			ret = hob ? s->hob_feature : s->error;
			break;
		case 2:
			ret = hob ? s->hob_nsector : s->nsector & 0xff;
			break;
		case 3:
			ret = hob ? s->hob_sector : s->sector;
			break;
		case 4:
			ret = hob ? s->hob_lcyl : s->lcyl;
			break;
		case 5:
			ret = hob ? s->hob_hcyl : s->hcyl;
			break;
		case 6:
			ret = s->select;
			break;
		default:
			ret = s->status;
			break;
		}
	}
	/* Reading the status register clears the interrupt (APT 5.2.13). */
	if (reg == 7)
		ide_lower_irq(bus);
	return ret;
}

static void ide_ioport_write(void *opaque, uint32_t port, uint32_t val)
{
	struct ide_bus *bus = opaque;
	struct ide_state *s = ide_bus_active(bus);
	uint32_t reg = port & 7;

	val &= 0xff;
	/* Writes to the command block are ignored while BSY or DRQ (APT 5.2),
	 * and while a request waits for its retry (it still reads the task
	 * file when it completes). */
	if (reg != 7 && ide_drive_busy(s))
		return;
	if (reg == 0)
		return;
	ide_clear_hob(bus);
	/* Both devices see every write; the old value goes to the HOB copy. */
	for (int i = 0; i < 2; i++) {
		struct ide_state *d = &bus->ifs[i];

		switch (reg) {
		case 1:
			d->hob_feature = d->feature;
			d->feature = val;
			break;
		case 2:
			d->hob_nsector = d->nsector;
			d->nsector = val;
			break;
		case 3:
			d->hob_sector = d->sector;
			d->sector = val;
			break;
		case 4:
			d->hob_lcyl = d->lcyl;
			d->lcyl = val;
			break;
		case 5:
			d->hob_hcyl = d->hcyl;
			d->hcyl = val;
			break;
		case 6:
			d->select = val | IDE_DEV_ALWAYS_ON;
			break;
		}
	}
	if (reg == 6) {
		bus->unit = (val & IDE_DEV_DEV) ? 1 : 0;
	} else if (reg == 7) {
		ide_lower_irq(bus);
		ide_exec_cmd(bus, val);
	}
}

static uint32_t ide_data_readw(void *opaque, uint32_t port)
{
	return ide_data_read(opaque, 2);
}

static void ide_data_writew(void *opaque, uint32_t port, uint32_t val)
{
	ide_data_write(opaque, val, 2);
}

static uint32_t ide_data_readl(void *opaque, uint32_t port)
{
	return ide_data_read(opaque, 4);
}

static void ide_data_writel(void *opaque, uint32_t port, uint32_t val)
{
	ide_data_write(opaque, val, 4);
}

/* Alternate status: as status, without clearing the interrupt. */
static uint32_t ide_status_read(void *opaque, uint32_t port)
{
	struct ide_bus *bus = opaque;

	return ide_regs_absent(bus) ? 0 : ide_bus_active(bus)->status;
}

/* SRST on both devices (APT 5.2.5, ACS 9.13 "software reset protocol"). */
void ide_reset_drive(struct ide_state *s)
{
	ide_transfer_stop(s);
	ide_dma_cancel(s);
	ide_cancel_io(s);
	if (s->kind == IDE_CD)
		ide_atapi_reset(s);
	s->mult_sectors = IDE_MAX_MULT_SECTORS;
	s->feature = s->error = s->sector = s->lcyl = s->hcyl = 0;
	s->nsector = 0;
	s->hob_feature = s->hob_nsector = s->hob_sector = s->hob_lcyl = s->hob_hcyl = 0;
	s->select = IDE_DEV_ALWAYS_ON;
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	s->lba48 = false;
	s->req_nb_sectors = 0;
	s->heads = s->native_heads;
	s->sectors = s->native_sectors;
	ide_set_signature(s);
}

static void ide_ctrl_write(void *opaque, uint32_t port, uint32_t val)
{
	struct ide_bus *bus = opaque;
	bool rising = !(bus->cmd & IDE_CTRL_SRST) && (val & IDE_CTRL_SRST);

	bus->cmd = val & 0xff;
	if (!rising)
		return;
	vd_trace(ide_srst, "bus=%d", bus->index);
	if (bus->bm.status & BM_ST_ACTIVE)
		bmdma_set_inactive(&bus->bm, false);
	bus->bm.pending = false;
	for (int i = 0; i < 2; i++) {
		struct ide_state *s = &bus->ifs[i];

		ide_reset_drive(s);
		/* QEMU then runs EXECUTE DEVICE DIAGNOSTIC's outputs. */
		ide_cmd_exec_dev_diagnostic(s, 0x90);
	}
	/* QEMU 7.2 interrupts at the end of the reset also for a packet
	 * device (whose diagnostic alone does not). */
	ide_set_irq(bus);
	/* The reset is done at once: SRST reads back as cleared, as QEMU's
	 * bottom half leaves it. */
	bus->cmd &= ~IDE_CTRL_SRST;
}

static const struct vd_portio ide_portio[] = {
	{0, 8, 1, ide_ioport_read, ide_ioport_write},
	{0, 1, 2, ide_data_readw, ide_data_writew},
	{0, 1, 4, ide_data_readl, ide_data_writel},
	{0, 0, 0, NULL, NULL},
};

static const struct vd_portio ide_portio2[] = {
	{0, 1, 1, ide_status_read, ide_ctrl_write},
	{0, 0, 0, NULL, NULL},
};

/* --- bus and drive lifetime ------------------------------------------------- */

int ide_bus_init(struct ide_bus *bus, struct vd_piix_ide *ctrl, int index,
		 struct vd_address_space *io, uint32_t base, uint32_t ctl, struct vd_irq *irq)
{
	char name[32];

	memset(bus, 0, sizeof(*bus));
	bus->ctrl = ctrl;
	bus->index = index;
	bus->irq = irq;
	bus->bm.bus = bus;
	for (int i = 0; i < 2; i++) {
		struct ide_state *s = &bus->ifs[i];

		s->bus = bus;
		s->unit = i;
		s->kind = IDE_NONE;
		s->io_buffer = calloc(1, IDE_IO_BUFFER_SIZE);
		if (!s->io_buffer)
			return -ENOMEM;
		ide_reset_drive(s);
	}
	snprintf(name, sizeof(name), "ide%d", index);
	bus->port_mr = vd_portio_register(io, base, ide_portio, bus, name);
	snprintf(name, sizeof(name), "ide%d-ctl", index);
	bus->ctl_mr = vd_portio_register(io, ctl, ide_portio2, bus, name);
	if (!bus->port_mr || !bus->ctl_mr)
		return -ENOMEM;
	return 0;
}

void ide_bus_fini(struct ide_bus *bus)
{
	for (int i = 0; i < 2; i++) {
		ide_drive_detach(&bus->ifs[i]);
		free(bus->ifs[i].io_buffer);
		bus->ifs[i].io_buffer = NULL;
	}
	if (bus->port_mr) {
		vd_mem_region_del_subregion(bus->port_mr);
		vd_mem_region_unref(bus->port_mr);
	}
	if (bus->ctl_mr) {
		vd_mem_region_del_subregion(bus->ctl_mr);
		vd_mem_region_unref(bus->ctl_mr);
	}
	bus->port_mr = bus->ctl_mr = NULL;
}

/* Hardware reset of the channel (QEMU's ide_bus_reset). */
void ide_bus_reset(struct ide_bus *bus)
{
	for (int i = 0; i < 2; i++) {
		struct ide_state *s = &bus->ifs[i];

		ide_reset_drive(s);
		if (s->blk && s->kind == IDE_CD)
			vd_blk_lock_medium(s->blk, false);
	}
	bus->unit = 0;
	bus->cmd = 0;
	bmdma_reset(&bus->bm);
	ide_lower_irq(bus);
}
