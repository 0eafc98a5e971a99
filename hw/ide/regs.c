/* SPDX-License-Identifier: MIT */
/*
 * The ATA drive model: task file, device control, PIO data port, the ATA
 * command set, DMA sequencing and asynchronous block I/O with the error
 * policy.  ATAPI commands live in atapi.c, the bus master in bmdma.c.
 *
 * Spec references: ATA/ATAPI-8 ACS (T13/1699-D, "ACS") for commands and
 * IDENTIFY, ATA8-APT (T13/1698-D, "APT") for the parallel task-file
 * protocol.  Observable behaviour follows QEMU 7.2 (hw/ide/core.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/loop.h>
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

static void ide_lower_irq(struct ide_bus *bus)
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

static void ide_rw_error(struct ide_state *s)
{
	ide_abort_command(s);
	ide_set_irq(s->bus);
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

void ide_update_nb_sectors(struct ide_state *s)
{
	struct vd_node *n = s->blk ? vd_blk_root(s->blk) : NULL;
	int64_t size = n ? vd_node_size(n) : 0;

	s->nb_sectors = size > 0 ? (uint64_t)size / IDE_SECTOR : 0;
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

static void ide_sector_read(struct ide_state *s);
static void ide_sector_write(struct ide_state *s);

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

/* --- asynchronous block I/O ------------------------------------------------- */

static void ide_aio_free(struct ide_aio *aio)
{
	if (!aio)
		return;
	free(aio->buf);
	free(aio);
}

static void ide_aio_cb(void *opaque, int ret)
{
	struct ide_aio *aio = opaque;
	struct ide_state *s = aio->s;

	if (!s) {
		/* Cancelled by a reset: drop the result. */
		vd_trace(ide_aio_dropped, "op=%d offset=%lld", aio->op, (long long)aio->offset);
		ide_aio_free(aio);
		return;
	}
	vd_trace(ide_aio_done, "bus=%d unit=%d op=%d ret=%d", s->bus->index, s->unit, aio->op, ret);
	s->aio = NULL;
	aio->done(s, aio, ret);
	if (s->retry != aio)
		ide_aio_free(aio);
}

static void ide_aio_nomedium(void *opaque)
{
	ide_aio_cb(opaque, -ENOMEDIUM);
}

void ide_aio_issue(struct ide_state *s, struct ide_aio *aio)
{
	struct vd_node *n = vd_blk_root(s->blk);

	s->aio = aio;
	aio->s = s;
	vd_trace(ide_aio_submit, "bus=%d unit=%d op=%d offset=%lld bytes=%lld", s->bus->index,
		 s->unit, aio->op, (long long)aio->offset, (long long)aio->bytes);
	if (!n) {
		/* Complete asynchronously, as the block layer would. */
		if (vd_loop_oneshot(vd_loop_current(), ide_aio_nomedium, aio) < 0)
			ide_aio_cb(aio, -ENOMEDIUM);
		return;
	}
	vd_qiov_init_buf(&aio->qiov, aio->buf, (size_t)aio->bytes);
	switch (aio->op) {
	case IDE_AIO_READ:
		vd_aio_preadv(n, aio->offset, &aio->qiov, 0, ide_aio_cb, aio);
		break;
	case IDE_AIO_WRITE:
		vd_aio_pwritev(n, aio->offset, &aio->qiov, 0, ide_aio_cb, aio);
		break;
	case IDE_AIO_FLUSH:
		vd_aio_flush(n, ide_aio_cb, aio);
		break;
	case IDE_AIO_DISCARD:
		vd_aio_pdiscard(n, aio->offset, aio->bytes, ide_aio_cb, aio);
		break;
	}
}

/* A request with a bounce buffer of @bytes (READ, WRITE) that the caller
 * fills before ide_aio_go(); NULL on ENOMEM. */
struct ide_aio *ide_aio_new(enum ide_aio_op op, int64_t offset, int64_t bytes,
			    void (*done)(struct ide_state *, struct ide_aio *, int))
{
	struct ide_aio *aio = calloc(1, sizeof(*aio));

	if (!aio)
		return NULL;
	aio->op = op;
	aio->offset = offset;
	aio->bytes = bytes;
	aio->done = done;
	if ((op == IDE_AIO_READ || op == IDE_AIO_WRITE) && bytes > 0) {
		/* Zeroed: with rerror=ignore a failed read still goes to the guest,
		 * which must not see stale host memory. */
		aio->buf = calloc(1, (size_t)bytes);
		if (!aio->buf) {
			free(aio);
			return NULL;
		}
	}
	return aio;
}

void ide_aio_submit(struct ide_state *s, enum ide_aio_op op, int64_t offset, int64_t bytes,
		    void (*done)(struct ide_state *, struct ide_aio *, int))
{
	struct ide_aio *aio = ide_aio_new(op, offset, bytes, done);

	if (!aio) {
		/* bytes -1: nothing to keep for a retry (ide_error_action). */
		struct ide_aio tmp = {.op = op, .offset = offset, .bytes = -1};

		done(s, &tmp, -ENOMEM);
		return;
	}
	if (op == IDE_AIO_WRITE && bytes > 0)
		memcpy(aio->buf, s->io_buffer, (size_t)bytes);
	ide_aio_issue(s, aio);
}

/* Detach the request in flight and the one kept for retry: their results
 * are dropped and never touch the drive or guest memory. */
void ide_cancel_io(struct ide_state *s)
{
	if (s->aio) {
		vd_trace(ide_aio_cancel, "bus=%d unit=%d op=%d", s->bus->index, s->unit,
			 s->aio->op);
		s->aio->s = NULL;
		s->aio = NULL;
	}
	ide_aio_free(s->retry);
	s->retry = NULL;
}

/*
 * Apply the drive's rerror/werror policy to a failed request (QEMU's
 * ide_handle_rw_error): 1 when the request is kept for a retry (the machine
 * stops), 0 to carry on as if it had succeeded (ignore), -1 to report.
 */
int ide_error_action(struct ide_state *s, struct ide_aio *aio, int ret)
{
	bool is_read = aio->op == IDE_AIO_READ;
	enum vd_blk_error_action a = vd_blk_get_error_action(s->blk, is_read, ret);

	vd_trace(ide_io_error, "bus=%d unit=%d op=%d ret=%d action=%s", s->bus->index, s->unit,
		 aio->op, ret, vd_blk_action_names[a]);
	if (aio->bytes < 0) {
		vd_blk_report_error(s->blk, VD_BLK_ACTION_REPORT, is_read, ret);
		return -1;
	}
	if (a == VD_BLK_ACTION_STOP) {
		s->retry = aio;
		vd_blk_report_error(s->blk, a, is_read, ret);
		return 1;
	}
	vd_blk_report_error(s->blk, a, is_read, ret);
	return a == VD_BLK_ACTION_IGNORE ? 0 : -1;
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

static void ide_sector_read(struct ide_state *s)
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

static void ide_sector_write(struct ide_state *s)
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

static void ide_identify_size(struct ide_state *s)
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
	struct vd_node *n;

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
	n = vd_blk_root(s->blk);
	p[85] = (1 << 14) | 1 | ((n && vd_node_write_cache(n)) ? 1 << 5 : 0);
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

enum {
	CMD_HD = 1 << 0,
	CMD_CD = 1 << 1,
	CMD_ALL = CMD_HD | CMD_CD,
	CMD_DSC = 1 << 2, /* set DSC on successful completion */
};

typedef bool ide_cmd_fn(struct ide_state *s, uint8_t cmd);

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

static bool cmd_exec_dev_diagnostic(struct ide_state *s, uint8_t cmd)
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
	struct vd_node *n = vd_blk_root(s->blk);
	uint16_t *p = s->identify;
	uint8_t val;

	switch (s->feature) {
	case 0x02: /* enable write cache (ACS 7.48.4) */
		if (n)
			vd_node_set_write_cache(n, true);
		p[85] |= 1 << 5;
		vd_trace(ide_write_cache, "bus=%d unit=%d on=1", s->bus->index, s->unit);
		return true;
	case 0x82: /* disable write cache, and flush what it holds */
		if (n)
			vd_node_set_write_cache(n, false);
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

static const struct {
	ide_cmd_fn *fn;
	uint8_t flags;
} ide_cmd_table[256] = {
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
	[0x90] = {cmd_exec_dev_diagnostic, CMD_ALL},
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
static void ide_reset_drive(struct ide_state *s)
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
		cmd_exec_dev_diagnostic(s, 0x90);
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

void ide_drive_detach(struct ide_state *s)
{
	ide_dma_cancel(s);
	ide_cancel_io(s);
	if (s->blk) {
		vd_blk_detach_dev(s->blk);
		vd_blk_unref(s->blk);
		s->blk = NULL;
	}
	s->kind = IDE_NONE;
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

/* Reissue requests the "stop" policy kept (QEMU's ide_restart_bh). */
void ide_bus_restart(struct ide_bus *bus)
{
	for (int i = 0; i < 2; i++) {
		struct ide_state *s = &bus->ifs[i];
		struct ide_aio *aio = s->retry;

		if (!aio)
			continue;
		s->retry = NULL;
		vd_trace(ide_retry, "bus=%d unit=%d op=%d", bus->index, i, aio->op);
		if (aio->op == IDE_AIO_READ || aio->op == IDE_AIO_WRITE || aio->op == IDE_AIO_FLUSH)
			s->status |= IDE_ST_BSY * (s->dma_cmd == IDE_DMA_NONE);
		ide_aio_issue(s, aio);
	}
}

/*
 * The logical geometry an MBR partition table implies (QEMU's
 * guess_disk_lchs): the first partition with sectors and an end head gives
 * heads and sectors per track, assuming it ends on a cylinder boundary.
 * The sector is read synchronously: this runs when the drive is attached,
 * before the guest runs.  Image contents are untrusted: every value is
 * range-checked.
 */
static bool ide_guess_lchs(struct ide_state *s, unsigned *cyls, unsigned *heads, unsigned *secs)
{
	struct vd_node *n = vd_blk_root(s->blk);
	uint8_t mbr[512];

	if (!n || vd_node_pread(n, 0, mbr, sizeof(mbr)) < 0)
		return false;
	if (mbr[510] != 0x55 || mbr[511] != 0xaa)
		return false;
	for (int i = 0; i < 4; i++) {
		const uint8_t *p = mbr + 0x1be + 16 * i;
		uint32_t nr_sects = (uint32_t)p[12] | (uint32_t)p[13] << 8 | (uint32_t)p[14] << 16 |
				    (uint32_t)p[15] << 24;
		unsigned h = p[5] + 1u, sec = p[6] & 63u;
		uint64_t c;

		if (!nr_sects || !p[5] || sec == 0)
			continue;
		c = s->nb_sectors / (h * sec);
		if (c < 1 || c > 16383)
			continue;
		*cyls = (unsigned)c;
		*heads = h;
		*secs = sec;
		return true;
	}
	return false;
}

/* QEMU's hd_geometry_guess: the MBR's geometry when it has at most 16
 * heads, else 16 heads, 63 sectors and cylinders to fit (2..16383). */
static void ide_guess_geometry(struct ide_state *s)
{
	unsigned c, h, sec;
	uint64_t cyl;

	if (s->kind == IDE_HD && ide_guess_lchs(s, &c, &h, &sec) && h <= 16) {
		s->cylinders = c;
		s->heads = s->native_heads = h;
		s->sectors = s->native_sectors = sec;
		return;
	}
	cyl = s->nb_sectors / (16 * 63);
	if (cyl > 16383)
		cyl = 16383;
	else if (cyl < 2)
		cyl = 2;
	s->cylinders = (unsigned)cyl;
	s->heads = s->native_heads = 16;
	s->sectors = s->native_sectors = 63;
}

static void ide_hd_resize(void *opaque)
{
	struct ide_state *s = opaque;

	ide_update_nb_sectors(s);
	if (s->identify_set)
		ide_identify_size(s);
}

const struct vd_blk_dev_ops ide_hd_dev_ops = {
	.has_tray = false,
	.resize = ide_hd_resize,
};

static void copy_str(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src);
}

int ide_drive_attach(struct ide_state *s, const struct vd_ide_drive_conf *conf)
{
	int ret;

	if (!conf || !conf->blk)
		return -EINVAL;
	if (s->kind != IDE_NONE)
		return -EBUSY;
	s->kind = conf->cdrom ? IDE_CD : IDE_HD;
	ret = vd_blk_attach_dev(conf->blk, conf->qdev_id,
				conf->cdrom ? &ide_cd_dev_ops : &ide_hd_dev_ops, s);
	if (ret < 0) {
		s->kind = IDE_NONE;
		return ret;
	}
	vd_blk_ref(conf->blk);
	s->blk = conf->blk;
	if (conf->serial)
		copy_str(s->serial, sizeof(s->serial), conf->serial);
	else
		snprintf(s->serial, sizeof(s->serial), "QM%05d", s->bus->index * 2 + s->unit + 1);
	copy_str(s->model, sizeof(s->model),
		 conf->model   ? conf->model
		 : conf->cdrom ? "QEMU DVD-ROM"
			       : "QEMU HARDDISK");
	/* QEMU's ide_drive_initfn: the firmware revision defaults to
	 * qemu_hw_version(), "2.5+" for machine types since 2.5. */
	copy_str(s->version, sizeof(s->version), conf->version ? conf->version : "2.5+");
	ide_update_nb_sectors(s);
	ide_guess_geometry(s);
	s->identify_set = false;
	ide_reset_drive(s);
	return 0;
}
