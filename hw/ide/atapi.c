/* SPDX-License-Identifier: MIT */
/*
 * ATAPI CD-ROM: the PACKET protocol (ACS 7.18, ATA8-APT 5.2.x "packet
 * command protocol").  The 12-byte packet arrives through the data port
 * and is dispatched here (unit attention, medium and byte-count checks,
 * MMC-5 4.1.6.1) to its handler in mmc.c; replies go out in bursts of at
 * most the byte count limit (the LBA mid/high registers) with an
 * interrupt each, or by DMA (the bus master in bmdma.c); CD sectors are
 * read asynchronously, a burst's or a chunk's worth at a time, through
 * block.c.  Errors become sense data (SPC-3 4.5.6) with the sense key in
 * the error register.  Transfer sizes are 64-bit and no reply exceeds its
 * buffer.  Also here: IDENTIFY PACKET DEVICE (ACS 7.17) and the medium
 * callbacks of the backend (tray, media change).
 *
 * Guest-visible results are QEMU 7.2's (hw/ide/atapi.c).
 */
#include <errno.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

bool atapi_tray_open(struct ide_state *s)
{
	return vd_blk_is_tray_open(s->blk);
}

bool atapi_media_present(struct ide_state *s)
{
	return !atapi_tray_open(s) && s->nb_sectors > 0;
}

/* IDENTIFY PACKET DEVICE (ACS 7.17), QEMU 7.2's words. */
void ide_atapi_identify(struct ide_state *s)
{
	uint16_t *p = s->identify;
	const char *strs[3] = {s->serial, s->version, s->model};
	const int at[3] = {10, 23, 27}, words[3] = {10, 4, 20};

	if (s->identify_set)
		return;
	memset(p, 0, sizeof(s->identify));
	/* ATAPI, CD-ROM, removable, 50 us DRQ, 12-byte packets */
	p[0] = (2 << 14) | (5 << 8) | (1 << 7) | (2 << 5);
	for (int k = 0; k < 3; k++) {
		size_t len = strlen(strs[k]);

		for (int i = 0; i < words[k] * 2; i++) {
			uint8_t c = (size_t)i < len ? (uint8_t)strs[k][i] : ' ';
			uint16_t *w = &p[at[k] + i / 2];

			*w = (i & 1) ? (uint16_t)((*w & 0xff00) | c)
				     : (uint16_t)((*w & 0xff) | c << 8);
		}
	}
	p[20] = 3;
	p[21] = 512;
	p[22] = 4;
	p[48] = 1;
	p[49] = 1 << 9 | 1 << 8; /* LBA, DMA */
	p[53] = 7;
	p[62] = 7;
	p[63] = 7;
	p[64] = 3;
	p[65] = 0xb4;
	p[66] = 0xb4;
	p[67] = 0x12c;
	p[68] = 0xb4;
	p[71] = 30;
	p[72] = 30;
	p[80] = 0x1e; /* ATA/ATAPI-1 .. 4 */
	p[88] = 0x3f | (1 << 13);
	s->identify_set = true;
}

void ide_atapi_reset(struct ide_state *s)
{
	s->sense_key = 0;
	s->asc = 0;
	s->cdrom_changed = 0;
	s->packet_transfer_size = 0;
	s->buffered = 0;
	s->buf_off = 0;
	s->lba = -1;
	s->cd_sector_size = 0;
	s->atapi_dma = false;
}

void atapi_cmd_ok(struct ide_state *s)
{
	s->error = 0;
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	s->nsector = (s->nsector & ~7u) | ATAPI_INT_REASON_IO | ATAPI_INT_REASON_CD;
	ide_set_irq(s->bus);
}

/* CHECK CONDITION: the sense key goes to the error register (ACS 7.18.5). */
void atapi_cmd_error(struct ide_state *s, uint8_t key, uint8_t asc)
{
	vd_trace(ide_atapi_error, "bus=%d unit=%d key=%u asc=0x%02x", s->bus->index, s->unit, key,
		 asc);
	s->error = key << 4;
	s->status = IDE_ST_DRDY | IDE_ST_ERR;
	s->nsector = (s->nsector & ~7u) | ATAPI_INT_REASON_IO | ATAPI_INT_REASON_CD;
	s->sense_key = key;
	s->asc = asc;
	ide_set_irq(s->bus);
}

static void atapi_io_error(struct ide_state *s, int ret)
{
	if (ret == -ENOMEDIUM)
		atapi_cmd_error(s, SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
	else
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_LOGICAL_BLOCK_OOR);
}

static uint32_t atapi_bcl(struct ide_state *s)
{
	uint32_t bcl = s->lcyl | (uint32_t)s->hcyl << 8;

	return bcl == 0xffff ? 0xfffe : bcl;
}

/* A raw 2352-byte sector from user data: sync, MSF header, mode 1; EDC
 * and ECC are left zero as QEMU does (MMC-5 4.2.3.1). */
static void cd_data_to_raw(uint8_t *buf, int64_t lba)
{
	int64_t f = lba + 150;

	memmove(buf + 16, buf, CD_SECTOR);
	buf[0] = 0x00;
	memset(buf + 1, 0xff, 10);
	buf[11] = 0x00;
	buf[12] = (uint8_t)(f / 75 / 60);
	buf[13] = (uint8_t)(f / 75 % 60);
	buf[14] = (uint8_t)(f % 75);
	buf[15] = 0x01;
	memset(buf + 16 + CD_SECTOR, 0, CD_RAW_SECTOR - 16 - CD_SECTOR);
}

/* ---- PIO replies ---------------------------------------------------------- */

static void atapi_pio_read_done(struct ide_state *s, struct ide_aio *aio, int ret)
{
	uint32_t n = (uint32_t)(aio->bytes > 0 ? aio->bytes / CD_SECTOR : 0);

	s->status &= ~IDE_ST_BSY;
	if (ret < 0 || !aio->buf) {
		atapi_io_error(s, ret < 0 ? ret : -EIO);
		return;
	}
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *dst = s->io_buffer + s->buffered + (size_t)i * s->cd_sector_size;

		memcpy(dst, aio->buf + (size_t)i * CD_SECTOR, CD_SECTOR);
		if (s->cd_sector_size == CD_RAW_SECTOR)
			cd_data_to_raw(dst, s->lba + i);
	}
	s->buffered += n * s->cd_sector_size;
	s->lba += n;
	ide_atapi_reply_end(s);
}

/*
 * Send the next burst (MMC over ATAPI, ACS 7.18.4): at most the byte count
 * limit, even when it is cut; IO=1, CoD=0, the size in LBA mid/high, and an
 * interrupt.  When everything is sent, the command completes.
 */
void ide_atapi_reply_end(struct ide_state *s)
{
	uint64_t size;
	uint32_t bcl;

	if (s->packet_transfer_size == 0) {
		vd_trace(ide_atapi_eot, "bus=%d unit=%d", s->bus->index, s->unit);
		atapi_cmd_ok(s);
		return;
	}
	bcl = atapi_bcl(s);
	size = s->packet_transfer_size;
	if (size > bcl) {
		bcl &= ~1u;
		size = bcl ? bcl : 2; /* an odd limit of 1 still moves a word */
	}
	if (s->lba >= 0 && s->buffered < size) {
		uint64_t need = size - s->buffered;
		uint64_t secs = (need + s->cd_sector_size - 1) / s->cd_sector_size;

		memmove(s->io_buffer, s->io_buffer + s->buf_off, s->buffered);
		s->buf_off = 0;
		s->status |= IDE_ST_BSY;
		ide_aio_submit(s, IDE_AIO_READ, s->lba * CD_SECTOR, (int64_t)secs * CD_SECTOR,
			       atapi_pio_read_done);
		return;
	}
	if (size > s->buffered) /* cannot happen: replies are buffered whole */
		size = s->buffered;
	s->nsector = (s->nsector & ~7u) | ATAPI_INT_REASON_IO;
	s->lcyl = (uint8_t)size;
	s->hcyl = (uint8_t)(size >> 8);
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	ide_transfer_start(s, s->buf_off, (uint32_t)size, IDE_END_ATAPI_REPLY);
	s->buf_off += (uint32_t)size;
	s->buffered -= (uint32_t)size;
	s->packet_transfer_size -= size;
	ide_set_irq(s->bus);
}

/* ---- DMA --------------------------------------------------------------------- */

static void atapi_dma_finish(struct ide_state *s)
{
	s->dma_cmd = IDE_DMA_NONE;
	atapi_cmd_ok(s);
	bmdma_set_inactive(&s->bus->bm, false);
}

static void atapi_dma_next(struct ide_state *s);

static void atapi_dma_read_done(struct ide_state *s, struct ide_aio *aio, int ret)
{
	uint32_t n = (uint32_t)(aio->bytes > 0 ? aio->bytes / CD_SECTOR : 0);

	if (ret < 0 || !aio->buf) {
		/* DMA reads follow rerror (QEMU's ide_atapi_cmd_read_dma_cb);
		 * PIO reads always report, as in QEMU. */
		int r = ret < 0 && aio->buf ? ide_error_action(s, aio, ret) : -1;

		if (r > 0)
			return;
		if (r < 0) {
			s->dma_cmd = IDE_DMA_NONE;
			atapi_io_error(s, ret < 0 ? ret : -EIO);
			bmdma_set_inactive(&s->bus->bm, false);
			return;
		}
	}
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *src = aio->buf + (size_t)i * CD_SECTOR;

		if (s->cd_sector_size == CD_RAW_SECTOR) {
			memcpy(s->io_buffer, src, CD_SECTOR);
			cd_data_to_raw(s->io_buffer, s->lba + i);
			src = s->io_buffer;
		}
		bmdma_rw(&s->bus->bm, s, s->dma_done, src, s->cd_sector_size, true);
		s->dma_done += s->cd_sector_size;
	}
	s->lba += n;
	atapi_dma_next(s);
}

static void atapi_dma_next(struct ide_state *s)
{
	uint64_t secs = (s->dma_total - s->dma_done) / s->cd_sector_size;

	if (secs == 0) {
		atapi_dma_finish(s);
		return;
	}
	if (secs > IDE_DMA_CHUNK / CD_SECTOR)
		secs = IDE_DMA_CHUNK / CD_SECTOR;
	ide_aio_submit(s, IDE_AIO_READ, s->lba * CD_SECTOR, (int64_t)secs * CD_SECTOR,
		       atapi_dma_read_done);
}

void ide_atapi_dma_begin(struct ide_state *s)
{
	struct ide_bmdma *bm = &s->bus->bm;
	uint64_t prd_bytes = 0, got;

	got = bmdma_prepare(bm, s, s->dma_total, &prd_bytes);
	if (got < s->dma_total) {
		/* As for ATA: short PRDs end without an interrupt. */
		s->dma_cmd = IDE_DMA_NONE;
		s->status = IDE_ST_DRDY | IDE_ST_DSC;
		bmdma_set_inactive(bm, false);
		return;
	}
	if (s->lba < 0) {
		bmdma_rw(bm, s, 0, s->io_buffer, s->dma_total, true);
		atapi_dma_finish(s);
		return;
	}
	atapi_dma_next(s);
}

/* Start sending @size bytes of reply (at most @max, the allocation length)
 * from io_buffer. */
void atapi_reply(struct ide_state *s, uint32_t size, uint32_t max)
{
	if (size > max)
		size = max;
	s->lba = -1;
	s->packet_transfer_size = size;
	s->buffered = size;
	s->buf_off = 0;
	if (s->atapi_dma) {
		s->status = IDE_ST_DRDY | IDE_ST_DSC | IDE_ST_DRQ;
		ide_start_dma(s, IDE_DMA_ATAPI, size);
	} else {
		s->status = IDE_ST_DRDY | IDE_ST_DSC;
		ide_atapi_reply_end(s);
	}
}

void atapi_read(struct ide_state *s, int64_t lba, uint64_t nb, uint32_t secsize)
{
	vd_trace(ide_atapi_read, "bus=%d unit=%d lba=%lld n=%llu size=%u dma=%d", s->bus->index,
		 s->unit, (long long)lba, (unsigned long long)nb, secsize, s->atapi_dma);
	s->lba = lba;
	s->cd_sector_size = secsize;
	s->packet_transfer_size = nb * secsize;
	s->buffered = 0;
	s->buf_off = 0;
	if (s->atapi_dma) {
		s->status = IDE_ST_DRDY | IDE_ST_DSC | IDE_ST_DRQ | IDE_ST_BSY;
		ide_start_dma(s, IDE_DMA_ATAPI, s->packet_transfer_size);
	} else {
		s->status = IDE_ST_DRDY | IDE_ST_DSC;
		ide_atapi_reply_end(s);
	}
}

bool atapi_validate_bcl(struct ide_state *s)
{
	/* A data-in PIO command with a zero byte count limit is aborted at
	 * the ATA level (ACS 7.18.4).  QEMU raises no interrupt here. */
	if (s->atapi_dma || atapi_bcl(s))
		return true;
	ide_abort_command(s);
	return false;
}

/* The packet has arrived through the data port. */
void ide_atapi_cmd(struct ide_state *s)
{
	uint8_t cdb[ATAPI_PACKET_SIZE];
	uint8_t op;

	memcpy(cdb, s->io_buffer, sizeof(cdb));
	op = cdb[0];
	vd_trace(ide_atapi_cmd, "bus=%d unit=%d op=0x%02x dma=%d", s->bus->index, s->unit, op,
		 s->atapi_dma);
	ide_update_nb_sectors(s);
	/* A pending UNIT ATTENTION fails every command that does not allow
	 * it (MMC-5 4.1.6.1), with MC in the error register. */
	if (s->sense_key == SENSE_UNIT_ATTENTION && !(atapi_cmd_table[op].flags & ALLOW_UA)) {
		s->error = IDE_ER_MC | (SENSE_UNIT_ATTENTION << 4);
		s->status = IDE_ST_ERR;
		s->nsector = 0;
		ide_set_irq(s->bus);
		return;
	}
	/* After a media change: first "medium not present", then "medium may
	 * have changed", so that guests see the tray open and close. */
	if (!(atapi_cmd_table[op].flags & ALLOW_UA) && !atapi_tray_open(s) &&
	    vd_blk_is_inserted(s->blk) && s->cdrom_changed) {
		if (s->cdrom_changed == 1) {
			atapi_cmd_error(s, SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
			s->cdrom_changed = 2;
		} else {
			atapi_cmd_error(s, SENSE_UNIT_ATTENTION, ASC_MEDIUM_MAY_HAVE_CHANGED);
			s->cdrom_changed = 0;
		}
		return;
	}
	if ((atapi_cmd_table[op].flags & CHECK_READY) &&
	    (!atapi_media_present(s) || !vd_blk_is_inserted(s->blk))) {
		atapi_cmd_error(s, SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
		return;
	}
	if (!atapi_cmd_table[op].fn) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_ILLEGAL_OPCODE);
		return;
	}
	if (!(atapi_cmd_table[op].flags & (NONDATA | CONDDATA)) && !atapi_validate_bcl(s))
		return;
	atapi_cmd_table[op].fn(s, cdb, s->io_buffer);
}

/* ---- medium callbacks from the backend ---------------------------------- */

static void ide_cd_change_media(void *opaque, bool load)
{
	struct ide_state *s = opaque;

	vd_trace(ide_cd_change, "bus=%d unit=%d load=%d", s->bus->index, s->unit, load);
	ide_update_nb_sectors(s);
	/* Report "not present" then UNIT ATTENTION on the next commands. */
	s->cdrom_changed = 1;
	s->new_media_event = true;
	s->eject_request_event = false;
	ide_set_irq(s->bus);
}

static void ide_cd_eject_request(void *opaque, bool force)
{
	struct ide_state *s = opaque;

	s->eject_request_event = true;
	if (force)
		vd_blk_lock_medium(s->blk, false);
	ide_set_irq(s->bus);
}

static void ide_cd_resize(void *opaque)
{
	ide_update_nb_sectors(opaque);
}

const struct vd_blk_dev_ops ide_cd_dev_ops = {
	.has_tray = true,
	.change_media = ide_cd_change_media,
	.eject_request = ide_cd_eject_request,
	.resize = ide_cd_resize,
};
