/* SPDX-License-Identifier: MIT */
/*
 * ATAPI CD-ROM: the PACKET protocol (ACS 7.18, ATA8-APT 5.2.x "packet
 * command protocol") and the MMC-5 (T10/1675-D) commands a guest driver
 * uses.  A command packet is untrusted input: every length and address in
 * it is checked before use, transfer sizes are 64-bit, and no reply exceeds
 * its buffer.  Replies go out in bursts of at most the byte count limit
 * (the LBA mid/high registers) with an interrupt each; CD sectors are read
 * asynchronously, a burst's worth at a time, before its DRQ phase.
 *
 * Guest-visible results (sense data, mode pages, TOC) are QEMU 7.2's
 * (hw/ide/atapi.c, hw/block/cdrom.c).
 */
#include <errno.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

/* A CD holds at most 80 minutes (MMC-5 4.2.3.1): larger media are DVDs. */
#define CD_MAX_SECTORS ((uint64_t)80 * 60 * 75 * 2048 / 512)
#define MMC_PROFILE_NONE 0x0000
#define MMC_PROFILE_CD_ROM 0x0008
#define MMC_PROFILE_DVD_ROM 0x0010
#define GESN_MEDIA 4

static void put_be16(uint8_t *p, uint32_t v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static uint32_t get_be16(const uint8_t *p)
{
	return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool tray_open(struct ide_state *s)
{
	return vd_blk_is_tray_open(s->blk);
}

static bool media_present(struct ide_state *s)
{
	return !tray_open(s) && s->nb_sectors > 0;
}

static bool media_is_cd(struct ide_state *s)
{
	return media_present(s) && s->nb_sectors <= CD_MAX_SECTORS;
}

static bool media_is_dvd(struct ide_state *s)
{
	return media_present(s) && s->nb_sectors > CD_MAX_SECTORS;
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

static void atapi_cmd_ok(struct ide_state *s)
{
	s->error = 0;
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	s->nsector = (s->nsector & ~7u) | ATAPI_INT_REASON_IO | ATAPI_INT_REASON_CD;
	ide_set_irq(s->bus);
}

/* CHECK CONDITION: the sense key goes to the error register (ACS 7.18.5). */
static void atapi_cmd_error(struct ide_state *s, uint8_t key, uint8_t asc)
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
static void atapi_reply(struct ide_state *s, uint32_t size, uint32_t max)
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

static void atapi_read(struct ide_state *s, int64_t lba, uint64_t nb, uint32_t secsize)
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

/* ---- MMC commands ------------------------------------------------------------ */

typedef void atapi_fn(struct ide_state *s, const uint8_t *cdb, uint8_t *buf);

static void cmd_test_unit_ready(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	atapi_cmd_ok(s); /* CHECK_READY did the work */
}

static void cmd_request_sense(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	memset(buf, 0, 18);
	buf[0] = 0x70 | 0x80; /* current errors, valid */
	buf[2] = s->sense_key;
	buf[7] = 10;
	buf[12] = s->asc;
	if (s->sense_key == SENSE_UNIT_ATTENTION)
		s->sense_key = SENSE_NONE;
	atapi_reply(s, 18, cdb[4]);
}

static void pad8(uint8_t *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	for (size_t i = 0; i < len; i++)
		dst[i] = i < n ? (uint8_t)src[i] : ' ';
}

static void cmd_inquiry(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	if (cdb[1] & 0x01) {
		/* Vital product data pages: none supported. */
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
		return;
	}
	memset(buf, 0, 36);
	buf[0] = 0x05; /* CD/DVD device */
	buf[1] = 0x80; /* removable */
	buf[2] = 0x00;
	buf[3] = 0x21;
	buf[4] = 31; /* additional length */
	pad8(buf + 8, 8, "QEMU");
	pad8(buf + 16, 16, "QEMU DVD-ROM");
	pad8(buf + 32, 4, s->version);
	atapi_reply(s, 36, cdb[4]);
}

static void cmd_mode_sense(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint32_t max = cdb[0] == 0x5a ? get_be16(cdb + 7) : cdb[4];
	int action = cdb[2] >> 6, code = cdb[2] & 0x3f;

	if (action == 3) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_SAVING_PARAMETERS_NOT_SUPPORTED);
		return;
	}
	if (action != 0)
		goto invalid;
	memset(buf, 0, 30);
	buf[2] = 0x70; /* medium type: 120 mm CD-ROM, door closed */
	switch (code) {
	case 0x01: /* read/write error recovery (MMC-5 7.3) */
		put_be16(buf, 16 - 2);
		buf[8] = 0x01;
		buf[9] = 16 - 10;
		buf[11] = 0x05;
		atapi_reply(s, 16, max);
		return;
	case 0x0e: /* CD audio control */
		put_be16(buf, 24 - 2);
		buf[8] = 0x0e;
		buf[9] = 24 - 10;
		atapi_reply(s, 24, max);
		return;
	case 0x2a: /* capabilities and mechanical status */
		put_be16(buf, 30 - 2);
		buf[8] = 0x2a;
		buf[9] = 30 - 10;
		buf[10] = 0x3b; /* read CD-R/RW, DVD-ROM/R/RAM */
		buf[12] = 0x71; /* audio play, multisession, ... */
		buf[13] = 3 << 5;
		buf[14] = (1 << 0) | (1 << 3) | (1 << 5); /* lock, eject, tray */
		if (vd_blk_is_locked(s->blk))
			buf[14] |= 1 << 1;
		put_be16(buf + 16, 704); /* 4x */
		buf[19] = 2;
		put_be16(buf + 20, 512);
		put_be16(buf + 22, 704);
		atapi_reply(s, 30, max);
		return;
	}
invalid:
	atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
}

static void cmd_start_stop_unit(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	bool start = cdb[4] & 1, loej = cdb[4] & 2;

	/* MMC-5 6.44: only power condition 0 loads or ejects. */
	if ((cdb[4] & 0xf0) == 0 && loej) {
		if (!start && !tray_open(s) && vd_blk_is_locked(s->blk)) {
			atapi_cmd_error(s,
					vd_blk_is_inserted(s->blk) ? SENSE_NOT_READY
								   : SENSE_ILLEGAL_REQUEST,
					ASC_MEDIA_REMOVAL_PREVENTED);
			return;
		}
		if (tray_open(s) != !start)
			vd_blk_set_tray_open(s->blk, !start);
	}
	atapi_cmd_ok(s);
}

static void cmd_prevent_allow(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	vd_blk_lock_medium(s->blk, cdb[4] & 1);
	atapi_cmd_ok(s);
}

static void cmd_read_capacity(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint64_t total = s->nb_sectors >> 2;

	/* The last block's address, not the count (MMC-5 6.23). */
	put_be32(buf, (uint32_t)(total - 1));
	put_be32(buf + 4, CD_SECTOR);
	atapi_reply(s, 8, 8);
}

static void cmd_read(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint64_t nb = cdb[0] == 0x28 ? get_be16(cdb + 7) : get_be32(cdb + 6);
	uint64_t lba = get_be32(cdb + 2);

	if (nb == 0) {
		atapi_cmd_ok(s);
		return;
	}
	if (lba + nb > s->nb_sectors >> 2) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_LOGICAL_BLOCK_OOR);
		return;
	}
	atapi_read(s, (int64_t)lba, nb, CD_SECTOR);
}

static void cmd_seek(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	if (get_be32(cdb + 2) >= s->nb_sectors >> 2) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_LOGICAL_BLOCK_OOR);
		return;
	}
	atapi_cmd_ok(s);
}

static void lba_to_msf(uint8_t *p, uint64_t lba)
{
	lba += 150;
	p[0] = (uint8_t)(lba / 75 / 60);
	p[1] = (uint8_t)(lba / 75 % 60);
	p[2] = (uint8_t)(lba % 75);
}

/* An address as TOC fields want it: 4 bytes, LBA or 0 + MSF. */
static uint8_t *toc_addr(uint8_t *q, bool msf, uint64_t lba)
{
	if (msf) {
		*q++ = 0;
		lba_to_msf(q, lba);
	} else {
		put_be32(q, (uint32_t)lba);
	}
	return q + (msf ? 3 : 4);
}

static void cmd_read_toc(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint32_t max = get_be16(cdb + 7);
	int format = cdb[9] >> 6;
	bool msf = (cdb[1] >> 1) & 1;
	int start_track = cdb[6];
	uint64_t total = s->nb_sectors >> 2;
	uint8_t *q = buf + 2;

	memset(buf, 0, 64);
	switch (format) {
	case 0: /* TOC (MMC-5 6.35.2.2): track 1 and the lead-out */
		if (start_track > 1 && start_track != 0xaa)
			goto invalid;
		*q++ = 1;
		*q++ = 1;
		if (start_track <= 1) {
			q++;
			*q++ = 0x14; /* data track */
			*q++ = 1;
			q++;
			q = toc_addr(q, msf, 0);
		}
		q++;
		*q++ = 0x16;
		*q++ = 0xaa;
		q++;
		q = toc_addr(q, msf, total);
		break;
	case 1: /* session information: one session */
		buf[1] = 0x0a;
		buf[2] = 0x01;
		buf[3] = 0x01;
		atapi_reply(s, 12, max);
		return;
	case 2: { /* raw TOC: points A0, A1, A2 and track 1 */
		static const uint8_t points[3][2] = {{0xa0, 1}, {0xa1, 1}, {0xa2, 0}};

		*q++ = 1;
		*q++ = 1;
		for (int i = 0; i < 3; i++) {
			*q++ = 1; /* session */
			*q++ = 0x14;
			*q++ = 0;
			*q++ = points[i][0];
			q += 3; /* min sec frame */
			if (i < 2) {
				q++;
				*q++ = points[i][1]; /* first / last track */
				q += 2;
			} else {
				q = toc_addr(q, msf, total);
			}
		}
		*q++ = 1;
		*q++ = 0x14;
		*q++ = 0;
		*q++ = 1; /* point: track 1 */
		q += 3;
		q = toc_addr(q, msf, 0);
		break;
	}
	default:
		goto invalid;
	}
	put_be16(buf, (uint32_t)(q - buf - 2));
	atapi_reply(s, (uint32_t)(q - buf), max);
	return;
invalid:
	atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
}

static void cmd_get_configuration(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	static const uint16_t profiles[2] = {MMC_PROFILE_DVD_ROM, MMC_PROFILE_CD_ROM};
	uint32_t max = get_be16(cdb + 7), len;
	uint16_t cur;

	/* Only feature 0 (the profile list) is supported. */
	if (cdb[2] != 0 || cdb[3] != 0) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
		return;
	}
	cur = media_is_dvd(s)  ? MMC_PROFILE_DVD_ROM
	      : media_is_cd(s) ? MMC_PROFILE_CD_ROM
			       : MMC_PROFILE_NONE;
	memset(buf, 0, 64);
	put_be16(buf + 6, cur);
	buf[10] = 0x02 | 0x01; /* persistent, current */
	len = 12;
	for (int i = 0; i < 2; i++) {
		put_be16(buf + len, profiles[i]);
		buf[len + 2] = profiles[i] == cur;
		buf[11] += 4;
		len += 4;
	}
	put_be32(buf, len - 4);
	atapi_reply(s, len, max > 512 ? 512 : max);
}

static void cmd_get_event_status(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint32_t max = get_be16(cdb + 7), used;

	/* Only polled operation (MMC-5 6.7). */
	if (!(cdb[1] & 0x01)) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
		return;
	}
	memset(buf, 0, 8);
	buf[3] = 1 << GESN_MEDIA;
	if (cdb[4] & (1 << GESN_MEDIA)) {
		uint8_t media = tray_open(s) ? 1 : vd_blk_is_inserted(s->blk) ? 2 : 0;
		uint8_t event = 0;

		buf[2] = GESN_MEDIA;
		if (media != 1) {
			if (s->new_media_event) {
				event = 2; /* new media */
				s->new_media_event = false;
			} else if (s->eject_request_event) {
				event = 1; /* eject request */
				s->eject_request_event = false;
			}
		}
		buf[4] = event;
		buf[5] = media;
		used = 8;
	} else {
		buf[2] = 0x80; /* no event available */
		used = 4;
	}
	put_be16(buf, used - 4);
	atapi_reply(s, used, max);
}

static void cmd_read_disc_information(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint32_t max = get_be16(cdb + 7);

	if ((cdb[1] & 7) != 0) { /* types 1, 2: Blu-ray only */
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
		return;
	}
	memset(buf, 0, 34);
	buf[1] = 32;
	buf[2] = 0xe; /* last session complete, disc finalized */
	buf[3] = 1;
	buf[4] = 1;
	buf[5] = 1;
	buf[6] = 1;
	buf[7] = 0x20; /* unrestricted use */
	atapi_reply(s, 34, max);
}

static void cmd_read_dvd_structure(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint32_t max = get_be16(cdb + 8), len;
	int media = cdb[1], format = cdb[7];
	uint64_t total = s->nb_sectors >> 2;

	if (format < 0xff) {
		if (media_is_cd(s)) {
			atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INCOMPATIBLE_FORMAT);
			return;
		}
		if (!media_present(s))
			goto invalid;
	}
	if (media != 0)
		goto invalid;
	memset(buf, 0, 2048 + 4);
	switch (format) {
	case 0x00: /* physical format information (MMC-5 6.22.3.2.1) */
		buf[4] = 1; /* DVD-ROM, version 1 */
		buf[5] = 0xf;
		buf[6] = 1; /* one layer, read-only */
		put_be32(buf + 12, (uint32_t)(total - 1));
		put_be32(buf + 16, (uint32_t)(total - 1));
		put_be16(buf, 2048 + 2);
		len = 2048 + 4;
		break;
	case 0x01: /* copyright: none */
		put_be16(buf, 4 + 2);
		len = 4 + 4;
		break;
	case 0x04: /* manufacturing information */
		put_be16(buf, 2048 + 2);
		len = 2048 + 4;
		break;
	case 0xff: /* the list of the above */
		buf[4] = 0x00;
		buf[5] = 0x40;
		put_be16(buf + 6, 2048 + 4);
		buf[8] = 0x01;
		buf[9] = 0x40;
		put_be16(buf + 10, 4 + 4);
		buf[12] = 0x03;
		buf[13] = 0x40;
		put_be16(buf + 14, 188 + 4);
		buf[16] = 0x04;
		buf[17] = 0x40;
		put_be16(buf + 18, 2048 + 4);
		put_be16(buf, 16 + 2);
		len = 16 + 4;
		break;
	default:
		goto invalid;
	}
	atapi_reply(s, len, max);
	return;
invalid:
	atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
}

static void cmd_set_speed(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	atapi_cmd_ok(s);
}

static void cmd_mechanism_status(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	memset(buf, 0, 8);
	buf[5] = 1; /* one slot */
	atapi_reply(s, 8, get_be16(cdb + 8));
}

static bool validate_bcl(struct ide_state *s)
{
	/* A data-in PIO command with a zero byte count limit is aborted at
	 * the ATA level (ACS 7.18.4).  QEMU raises no interrupt here. */
	if (s->atapi_dma || atapi_bcl(s))
		return true;
	ide_abort_command(s);
	return false;
}

static void cmd_read_cd(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint64_t nb = (uint32_t)cdb[6] << 16 | (uint32_t)cdb[7] << 8 | cdb[8];
	uint64_t lba = get_be32(cdb + 2);

	if (nb == 0 || (cdb[9] & 0xf8) == 0) {
		atapi_cmd_ok(s);
		return;
	}
	if (!validate_bcl(s))
		return;
	if ((cdb[9] & 0xf8) != 0x10 && (cdb[9] & 0xf8) != 0xf8) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_INV_FIELD_IN_CMD_PACKET);
		return;
	}
	if (lba + nb > s->nb_sectors >> 2) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_LOGICAL_BLOCK_OOR);
		return;
	}
	atapi_read(s, (int64_t)lba, nb, (cdb[9] & 0xf8) == 0x10 ? CD_SECTOR : CD_RAW_SECTOR);
}

enum {
	ALLOW_UA = 1 << 0, /* runs with a unit attention pending */
	CHECK_READY = 1 << 1, /* needs a medium */
	NONDATA = 1 << 2, /* no data phase: BCL may be 0 */
	CONDDATA = 1 << 3, /* checks the BCL itself */
};

static const struct {
	atapi_fn *fn;
	uint8_t flags;
} atapi_cmd_table[256] = {
	[0x00] = {cmd_test_unit_ready, CHECK_READY | NONDATA},
	[0x03] = {cmd_request_sense, ALLOW_UA},
	[0x12] = {cmd_inquiry, ALLOW_UA},
	[0x1a] = {cmd_mode_sense, 0},
	[0x1b] = {cmd_start_stop_unit, NONDATA},
	[0x1e] = {cmd_prevent_allow, NONDATA},
	[0x25] = {cmd_read_capacity, CHECK_READY},
	[0x28] = {cmd_read, CHECK_READY},
	[0x2b] = {cmd_seek, CHECK_READY | NONDATA},
	[0x43] = {cmd_read_toc, CHECK_READY},
	[0x46] = {cmd_get_configuration, ALLOW_UA},
	[0x4a] = {cmd_get_event_status, ALLOW_UA},
	[0x51] = {cmd_read_disc_information, CHECK_READY},
	[0x5a] = {cmd_mode_sense, 0},
	[0xa8] = {cmd_read, CHECK_READY},
	[0xad] = {cmd_read_dvd_structure, CHECK_READY},
	[0xbb] = {cmd_set_speed, NONDATA},
	[0xbd] = {cmd_mechanism_status, 0},
	[0xbe] = {cmd_read_cd, CHECK_READY | CONDDATA},
};

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
	if (!(atapi_cmd_table[op].flags & ALLOW_UA) && !tray_open(s) &&
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
	    (!media_present(s) || !vd_blk_is_inserted(s->blk))) {
		atapi_cmd_error(s, SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT);
		return;
	}
	if (!atapi_cmd_table[op].fn) {
		atapi_cmd_error(s, SENSE_ILLEGAL_REQUEST, ASC_ILLEGAL_OPCODE);
		return;
	}
	if (!(atapi_cmd_table[op].flags & (NONDATA | CONDDATA)) && !validate_bcl(s))
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
