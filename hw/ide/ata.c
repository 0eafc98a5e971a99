/* SPDX-License-Identifier: MIT */
/*
 * The ATA command set of the drive (ATA/ATAPI-8 ACS, T13/1699-D, "ACS"):
 * the handlers of ide_cmd_table, which the decoder in regs.c runs.
 * IDENTIFY DEVICE (ACS 7.16), READ/WRITE SECTORS and MULTIPLE in PIO
 * (ACS 7.28, 7.36, 7.60, 7.64), READ/WRITE DMA (ACS 7.24, 7.58; the
 * transfer is bmdma.c's), DATA SET MANAGEMENT (ACS 7.10), FLUSH CACHE
 * (ACS 7.14), SET FEATURES (ACS 7.48) and the commands without data.
 * PACKET and IDENTIFY PACKET DEVICE (ACS 7.18, 7.17) hand over to atapi.c.
 * Block requests go through block.c.  Observable behaviour follows QEMU
 * 7.2 (hw/ide/core.c, ide_cmd_table).
 */
#include <errno.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

static void ide_rw_error(struct ide_state *s)
{
	ide_abort_command(s);
	ide_set_irq(s->bus);
}

/* LBA28 count 0 means 256, LBA48 count 0 means 65536 (ACS 4.1.2). */
static void ide_lba48_transform(struct ide_state *s, bool lba48)
{
	s->lba48 = lba48;
	if (!lba48) {
		if ((s->nsector & 0xff) == 0)
			s->nsector = 256;
		else
			s->nsector &= 0xff;
	} else {
		uint32_t n = ((uint32_t)s->hob_nsector << 8) | (s->nsector & 0xff);

		s->nsector = n ? n : 65536;
	}
}

/* --- PIO READ/WRITE SECTORS and MULTIPLE (ACS 7.28, 7.36, 7.60, 7.64) ----- */

static void ide_sector_read_done(struct ide_state *s, struct ide_aio *aio, int ret)
{
	uint32_t n = (uint32_t)(aio->bytes / IDE_SECTOR);

	s->status &= ~IDE_ST_BSY;
	if (ret < 0) {
		int r = ide_error_action(s, aio, ret);

		if (r > 0)
			return;
		if (r < 0 || !aio->buf) {
			ide_rw_error(s);
			return;
		}
	}
	memcpy(s->io_buffer, aio->buf, (size_t)aio->bytes);
	ide_set_sector(s, ide_get_sector(s) + n);
	s->nsector -= n;
	ide_transfer_start(s, 0, n * IDE_SECTOR, IDE_END_SECTOR_READ);
	ide_set_irq(s->bus);
}

void ide_sector_read(struct ide_state *s)
{
	int64_t sector;
	uint32_t n;

	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	s->error = 0;
	n = s->nsector < s->req_nb_sectors ? s->nsector : s->req_nb_sectors;
	if (n == 0) {
		ide_transfer_stop(s);
		return;
	}
	sector = ide_get_sector(s);
	if (!ide_sect_range_ok(s, sector, n)) {
		ide_rw_error(s);
		return;
	}
	s->status |= IDE_ST_BSY;
	ide_aio_submit(s, IDE_AIO_READ, sector * IDE_SECTOR, (int64_t)n * IDE_SECTOR,
		       ide_sector_read_done);
}

static void ide_sector_write_done(struct ide_state *s, struct ide_aio *aio, int ret)
{
	uint32_t n = (uint32_t)(aio->bytes / IDE_SECTOR);

	s->status &= ~IDE_ST_BSY;
	if (ret < 0) {
		int r = ide_error_action(s, aio, ret);

		if (r > 0)
			return;
		if (r < 0) {
			ide_rw_error(s);
			return;
		}
	}
	s->nsector -= n;
	ide_set_sector(s, ide_get_sector(s) + n);
	if (s->nsector == 0) {
		ide_transfer_stop(s);
	} else {
		uint32_t n1 = s->nsector < s->req_nb_sectors ? s->nsector : s->req_nb_sectors;

		ide_transfer_start(s, 0, n1 * IDE_SECTOR, IDE_END_SECTOR_WRITE);
	}
	/* ACS 7.64: an interrupt after each block written, also the last. */
	ide_set_irq(s->bus);
}

void ide_sector_write(struct ide_state *s)
{
	int64_t sector = ide_get_sector(s);
	uint32_t n = s->nsector < s->req_nb_sectors ? s->nsector : s->req_nb_sectors;

	s->status = IDE_ST_DRDY | IDE_ST_DSC | IDE_ST_BSY;
	if (!ide_sect_range_ok(s, sector, n)) {
		ide_rw_error(s);
		return;
	}
	ide_aio_submit(s, IDE_AIO_WRITE, sector * IDE_SECTOR, (int64_t)n * IDE_SECTOR,
		       ide_sector_write_done);
}

/* --- IDENTIFY DEVICE (ACS 7.16) --------------------------------------------- */

/* ATA strings: two characters per word, the first in the high byte. */
static void put_str(uint16_t *w, const char *src, int words)
{
	size_t len = strlen(src);

	for (int i = 0; i < words * 2; i++) {
		uint8_t c = (size_t)i < len ? (uint8_t)src[i] : ' ';

		if (i & 1)
			w[i / 2] = (w[i / 2] & 0xff00) | c;
		else
			w[i / 2] = (w[i / 2] & 0x00ff) | (uint16_t)(c << 8);
	}
}

void ide_identify_size(struct ide_state *s)
{
	uint16_t *p = s->identify;
	uint64_t lba28 = s->nb_sectors < (1u << 28) ? s->nb_sectors : (1u << 28) - 1;

	p[60] = lba28;
	p[61] = lba28 >> 16;
	p[100] = s->nb_sectors;
	p[101] = s->nb_sectors >> 16;
	p[102] = s->nb_sectors >> 32;
	p[103] = s->nb_sectors >> 48;
}

static void ide_identify(struct ide_state *s)
{
	uint16_t *p = s->identify;
	uint32_t oldsize;

	if (s->identify_set)
		return;
	memset(p, 0, sizeof(s->identify));
	p[0] = 0x0040; /* fixed device */
	p[1] = s->cylinders;
	p[3] = s->heads;
	p[4] = 512 * s->sectors; /* retired */
	p[5] = 512; /* retired */
	p[6] = s->sectors;
	put_str(p + 10, s->serial, 10);
	p[20] = 3; /* retired: buffer type */
	p[21] = 512; /* retired: cache size */
	p[22] = 4; /* obsolete: ECC bytes */
	put_str(p + 23, s->version, 4);
	put_str(p + 27, s->model, 20);
	p[47] = 0x8000 | IDE_MAX_MULT_SECTORS;
	p[48] = 1; /* dword I/O */
	p[49] = (1 << 11) | (1 << 9) | (1 << 8); /* IORDY, LBA, DMA */
	p[51] = 0x200;
	p[52] = 0x200;
	p[53] = 1 | (1 << 1) | (1 << 2); /* words 54-58, 64-70, 88 valid */
	p[54] = s->cylinders;
	p[55] = s->heads;
	p[56] = s->sectors;
	oldsize = s->cylinders * s->heads * s->sectors;
	p[57] = oldsize;
	p[58] = oldsize >> 16;
	if (s->mult_sectors)
		p[59] = 0x100 | s->mult_sectors;
	p[62] = 0x07; /* SW DMA 0-2 */
	p[63] = 0x07; /* MW DMA 0-2 */
	p[64] = 0x03; /* PIO 3-4 */
	p[65] = 120;
	p[66] = 120;
	p[67] = 120;
	p[68] = 120;
	p[69] = 1 << 14; /* deterministic read after TRIM */
	p[80] = 0xf0; /* ATA-4 .. ATA-7 */
	p[81] = 0x16;
	p[82] = (1 << 14) | (1 << 5) | 1; /* NOP, write cache, SMART */
	p[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10); /* FLUSH EXT, FLUSH, LBA48 */
	p[84] = 1 << 14;
	p[85] = (1 << 14) | 1 | (vd_blk_write_cache(s->blk) ? 1 << 5 : 0);
	p[86] = (1 << 13) | (1 << 12) | (1 << 10);
	p[87] = 1 << 14;
	p[88] = 0x3f | (1 << 13); /* UDMA 0-5, UDMA 5 selected */
	p[93] = 1 | (1 << 14) | 0x2000;
	p[106] = 0x6000; /* logical sector = physical sector = 512 */
	p[169] = 1; /* DATA SET MANAGEMENT / TRIM */
	ide_identify_size(s);
	s->identify_set = true;
}

/* --- ATA commands ----------------------------------------------------------- */

static bool cmd_nop(struct ide_state *s, uint8_t cmd)
{
	return true;
}

static bool cmd_dsm(struct ide_state *s, uint8_t cmd)
{
	if (s->feature == 0x01) { /* TRIM */
		/* The count is in 512-byte blocks of range entries; as QEMU,
		 * only the low count register is used. */
		uint32_t blocks = s->nsector & 0xff;

		s->nsector = blocks;
		s->status = IDE_ST_DRDY | IDE_ST_DSC | IDE_ST_DRQ;
		s->dma_sector = ide_get_sector(s); /* QEMU advances it after */
		ide_start_dma(s, IDE_DMA_TRIM, (uint64_t)blocks * IDE_SECTOR);
		return false;
	}
	ide_abort_command(s);
	return true;
}

static bool cmd_identify(struct ide_state *s, uint8_t cmd)
{
	if (s->kind == IDE_HD) {
		ide_identify(s);
		memcpy(s->io_buffer, s->identify, IDE_SECTOR);
		s->status = IDE_ST_DRDY | IDE_ST_DSC;
		ide_transfer_start(s, 0, IDE_SECTOR, IDE_END_STOP);
		ide_set_irq(s->bus);
		return false;
	}
	/* A packet device aborts IDENTIFY DEVICE and shows its signature
	 * (ACS 7.16.1): that is how drivers find ATAPI devices. */
	if (s->kind == IDE_CD)
		ide_set_signature(s);
	ide_abort_command(s);
	return true;
}

static bool cmd_identify_packet(struct ide_state *s, uint8_t cmd)
{
	ide_atapi_identify(s);
	memcpy(s->io_buffer, s->identify, IDE_SECTOR);
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	ide_transfer_start(s, 0, IDE_SECTOR, IDE_END_STOP);
	ide_set_irq(s->bus);
	return false;
}

static bool cmd_device_reset(struct ide_state *s, uint8_t cmd)
{
	/* ACS 7.11: halt PIO and DMA, reset the device; status 0 and the
	 * signature, no interrupt. */
	ide_transfer_stop(s);
	ide_dma_cancel(s);
	if (s->bus->bm.status & BM_ST_ACTIVE)
		bmdma_set_inactive(&s->bus->bm, false);
	ide_cancel_io(s);
	ide_atapi_reset(s);
	s->feature = s->error = s->sector = s->lcyl = s->hcyl = 0;
	s->nsector = 0;
	s->hob_feature = s->hob_nsector = s->hob_sector = s->hob_lcyl = s->hob_hcyl = 0;
	s->select = IDE_DEV_ALWAYS_ON; /* as QEMU's ide_reset */
	s->lba48 = false;
	ide_set_signature(s);
	s->status = 0;
	return false;
}

static bool cmd_read_pio(struct ide_state *s, uint8_t cmd)
{
	if (s->kind == IDE_CD) {
		/* ATA-4 8.27.5.2: a packet device sets its signature. */
		ide_set_signature(s);
		ide_abort_command(s);
		return true;
	}
	ide_lba48_transform(s, cmd == 0x24);
	s->req_nb_sectors = 1;
	ide_sector_read(s);
	return false;
}

static bool cmd_write_pio(struct ide_state *s, uint8_t cmd)
{
	ide_lba48_transform(s, cmd == 0x34);
	s->req_nb_sectors = 1;
	s->status = IDE_ST_DSC | IDE_ST_DRDY;
	/* ACS 7.64: DRQ for the first block without an interrupt. */
	ide_transfer_start(s, 0, IDE_SECTOR, IDE_END_SECTOR_WRITE);
	return false;
}

static bool cmd_read_multiple(struct ide_state *s, uint8_t cmd)
{
	if (!s->mult_sectors) {
		ide_abort_command(s);
		return true;
	}
	ide_lba48_transform(s, cmd == 0x29);
	s->req_nb_sectors = s->mult_sectors;
	ide_sector_read(s);
	return false;
}

static bool cmd_write_multiple(struct ide_state *s, uint8_t cmd)
{
	uint32_t n;

	if (!s->mult_sectors) {
		ide_abort_command(s);
		return true;
	}
	ide_lba48_transform(s, cmd == 0x39);
	s->req_nb_sectors = s->mult_sectors;
	n = s->nsector < s->req_nb_sectors ? s->nsector : s->req_nb_sectors;
	s->status = IDE_ST_DSC | IDE_ST_DRDY;
	ide_transfer_start(s, 0, n * IDE_SECTOR, IDE_END_SECTOR_WRITE);
	return false;
}

static bool cmd_read_dma(struct ide_state *s, uint8_t cmd)
{
	ide_lba48_transform(s, cmd == 0x25);
	ide_sector_start_dma(s, IDE_DMA_READ);
	return false;
}

static bool cmd_write_dma(struct ide_state *s, uint8_t cmd)
{
	ide_lba48_transform(s, cmd == 0x35);
	ide_sector_start_dma(s, IDE_DMA_WRITE);
	return false;
}

static bool cmd_verify(struct ide_state *s, uint8_t cmd)
{
	/* READ VERIFY (ACS 7.32): no data; QEMU does not read either. */
	ide_lba48_transform(s, cmd == 0x42);
	return true;
}

static bool cmd_read_native_max(struct ide_state *s, uint8_t cmd)
{
	if (s->nb_sectors == 0) {
		ide_abort_command(s);
		return true;
	}
	ide_lba48_transform(s, cmd == 0x27);
	ide_set_sector(s, (int64_t)s->nb_sectors - 1);
	return true;
}

static bool cmd_check_power_mode(struct ide_state *s, uint8_t cmd)
{
	s->nsector = 0xff; /* active or idle (ACS 7.6) */
	return true;
}

bool ide_cmd_exec_dev_diagnostic(struct ide_state *s, uint8_t cmd)
{
	/* ACS 7.12: signature; error 01h = device 0 passed. */
	ide_set_signature(s);
	s->error = 0x01;
	if (s->kind == IDE_CD) {
		s->status = 0; /* packet devices: DRDY clear */
	} else {
		s->status = IDE_ST_DRDY | IDE_ST_DSC;
		ide_set_irq(s->bus);
	}
	return false;
}

static bool cmd_specify(struct ide_state *s, uint8_t cmd)
{
	/* INITIALIZE DEVICE PARAMETERS (ATA-5 8.16): CHS translation only. */
	s->heads = (s->select & IDE_DEV_HS) + 1;
	s->sectors = s->nsector & 0xff;
	ide_set_irq(s->bus);
	return true;
}

static bool cmd_set_multiple_mode(struct ide_state *s, uint8_t cmd)
{
	uint32_t n = s->nsector & 0xff;

	if (n != 0 && (n > IDE_MAX_MULT_SECTORS || (n & (n - 1)) != 0))
		ide_abort_command(s);
	else
		s->mult_sectors = n;
	return true;
}

static void ide_flush_done(struct ide_state *s, struct ide_aio *aio, int ret)
{
	if (ret < 0) {
		int r = ide_error_action(s, aio, ret);

		if (r > 0)
			return;
		if (r < 0) {
			ide_rw_error(s);
			return;
		}
	}
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	ide_set_irq(s->bus);
}

static void ide_flush_cache(struct ide_state *s)
{
	s->status |= IDE_ST_BSY;
	ide_aio_submit(s, IDE_AIO_FLUSH, 0, 0, ide_flush_done);
}

static bool cmd_flush_cache(struct ide_state *s, uint8_t cmd)
{
	ide_flush_cache(s);
	return false;
}

static bool cmd_set_features(struct ide_state *s, uint8_t cmd)
{
	uint16_t *p = s->identify;
	uint8_t val;

	switch (s->feature) {
	case 0x02: /* enable write cache (ACS 7.48.4) */
		vd_blk_set_write_cache(s->blk, true);
		p[85] |= 1 << 5;
		vd_trace(ide_write_cache, "bus=%d unit=%d on=1", s->bus->index, s->unit);
		return true;
	case 0x82: /* disable write cache, and flush what it holds */
		vd_blk_set_write_cache(s->blk, false);
		p[85] &= ~(1 << 5);
		vd_trace(ide_write_cache, "bus=%d unit=%d on=0", s->bus->index, s->unit);
		ide_flush_cache(s);
		return false;
	case 0xcc: /* reverting to power-on defaults enable */
	case 0x66: /* ... disable */
	case 0xaa: /* read look-ahead enable */
	case 0x55: /* read look-ahead disable */
	case 0x05: /* advanced power management */
	case 0x85:
	case 0x69: /* NOP */
	case 0x67:
	case 0x96:
	case 0x9a:
	case 0x42: /* automatic acoustic management */
	case 0xc2:
		return true;
	case 0x03: /* set transfer mode (ACS 7.48.5) */
		val = s->nsector & 0x07;
		switch ((s->nsector & 0xff) >> 3) {
		case 0x00: /* PIO default */
		case 0x01: /* PIO mode */
			p[62] = 0x07;
			p[63] = 0x07;
			p[88] = 0x3f;
			return true;
		case 0x02: /* single word DMA */
			p[62] = 0x07 | (1 << (val + 8));
			p[63] = 0x07;
			p[88] = 0x3f;
			return true;
		case 0x04: /* multiword DMA */
			p[62] = 0x07;
			p[63] = 0x07 | (1 << (val + 8));
			p[88] = 0x3f;
			return true;
		case 0x08: /* Ultra DMA */
			p[62] = 0x07;
			p[63] = 0x07;
			p[88] = 0x3f | (1 << (val + 8));
			return true;
		}
		break;
	}
	ide_abort_command(s);
	return true;
}

static bool cmd_packet(struct ide_state *s, uint8_t cmd)
{
	/* ACS 7.18: feature bit 1 = overlapped, which we do not support. */
	if (s->feature & 0x02) {
		ide_abort_command(s);
		return true;
	}
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	s->atapi_dma = s->feature & 1;
	s->nsector = ATAPI_INT_REASON_CD; /* command packet, out */
	/* DRQ for the packet without an interrupt (ACS 7.18.1). */
	ide_transfer_start(s, 0, ATAPI_PACKET_SIZE, IDE_END_ATAPI_CMD);
	return false;
}

/* ACS-2 (T13/2015-D) Table B.2, as QEMU 7.2's ide_cmd_table: the drive
 * kinds that may issue each opcode; any other opcode aborts. */
const struct ide_cmd ide_cmd_table[256] = {
	[0x06] = {cmd_dsm, CMD_HD},
	[0x08] = {cmd_device_reset, CMD_CD},
	[0x10] = {cmd_nop, CMD_HD | CMD_DSC}, /* RECALIBRATE */
	[0x20] = {cmd_read_pio, CMD_ALL},
	[0x21] = {cmd_read_pio, CMD_HD},
	[0x24] = {cmd_read_pio, CMD_HD},
	[0x25] = {cmd_read_dma, CMD_HD},
	[0x27] = {cmd_read_native_max, CMD_HD | CMD_DSC},
	[0x29] = {cmd_read_multiple, CMD_HD},
	[0x30] = {cmd_write_pio, CMD_HD},
	[0x31] = {cmd_write_pio, CMD_HD},
	[0x34] = {cmd_write_pio, CMD_HD},
	[0x35] = {cmd_write_dma, CMD_HD},
	[0x39] = {cmd_write_multiple, CMD_HD},
	[0x3c] = {cmd_write_pio, CMD_HD}, /* WRITE VERIFY */
	[0x40] = {cmd_verify, CMD_HD | CMD_DSC},
	[0x41] = {cmd_verify, CMD_HD | CMD_DSC},
	[0x42] = {cmd_verify, CMD_HD | CMD_DSC},
	[0x70] = {cmd_nop, CMD_HD | CMD_DSC}, /* SEEK */
	[0x90] = {ide_cmd_exec_dev_diagnostic, CMD_ALL},
	[0x91] = {cmd_specify, CMD_HD | CMD_DSC},
	[0x94] = {cmd_nop, CMD_HD}, /* STANDBY IMMEDIATE (old opcode) */
	[0x95] = {cmd_nop, CMD_HD}, /* IDLE IMMEDIATE (old opcode) */
	[0x96] = {cmd_nop, CMD_HD},
	[0x97] = {cmd_nop, CMD_HD},
	[0x98] = {cmd_check_power_mode, CMD_HD | CMD_DSC},
	[0x99] = {cmd_nop, CMD_HD},
	[0xa0] = {cmd_packet, CMD_CD},
	[0xa1] = {cmd_identify_packet, CMD_CD},
	[0xc4] = {cmd_read_multiple, CMD_HD},
	[0xc5] = {cmd_write_multiple, CMD_HD},
	[0xc6] = {cmd_set_multiple_mode, CMD_HD | CMD_DSC},
	[0xc8] = {cmd_read_dma, CMD_HD},
	[0xc9] = {cmd_read_dma, CMD_HD},
	[0xca] = {cmd_write_dma, CMD_HD},
	[0xcb] = {cmd_write_dma, CMD_HD},
	[0xe0] = {cmd_nop, CMD_HD}, /* STANDBY IMMEDIATE */
	[0xe1] = {cmd_nop, CMD_HD}, /* IDLE IMMEDIATE */
	[0xe2] = {cmd_nop, CMD_HD}, /* STANDBY */
	[0xe3] = {cmd_nop, CMD_HD}, /* IDLE */
	[0xe5] = {cmd_check_power_mode, CMD_HD | CMD_DSC},
	[0xe6] = {cmd_nop, CMD_HD}, /* SLEEP */
	[0xe7] = {cmd_flush_cache, CMD_ALL},
	[0xea] = {cmd_flush_cache, CMD_HD},
	[0xec] = {cmd_identify, CMD_ALL},
	[0xef] = {cmd_set_features, CMD_ALL | CMD_DSC},
	[0xf5] = {cmd_nop, CMD_HD | CMD_DSC}, /* SECURITY FREEZE LOCK */
	[0xf8] = {cmd_read_native_max, CMD_HD | CMD_DSC},
};
