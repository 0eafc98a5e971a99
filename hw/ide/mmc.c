/* SPDX-License-Identifier: MIT */
/*
 * The MMC-5 (T10/1675-D) commands of the ATAPI CD/DVD-ROM: the handlers of
 * atapi_cmd_table, which the packet dispatcher in atapi.c runs once the
 * 12-byte packet has arrived and passed the unit-attention, medium and
 * byte-count checks.  TEST UNIT READY, REQUEST SENSE (SPC-3 4.5),
 * INQUIRY, MODE SENSE (MMC-5 7), START STOP UNIT, PREVENT ALLOW MEDIUM
 * REMOVAL, READ CAPACITY, READ(10)/(12), SEEK, READ TOC/PMA/ATIP, GET
 * CONFIGURATION, GET EVENT STATUS NOTIFICATION, READ DISC INFORMATION,
 * READ DVD STRUCTURE, SET CD SPEED, MECHANISM STATUS and READ CD.  A
 * packet is untrusted input: every length and address in it is checked
 * before use, and no reply exceeds its buffer.  A handler answers with
 * atapi_reply (a reply buffer), atapi_read (CD sectors) or a status.
 *
 * Guest-visible results (sense data, mode pages, TOC) are QEMU 7.2's
 * (hw/ide/atapi.c, hw/block/cdrom.c).
 */
#include <string.h>

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

static bool media_is_cd(struct ide_state *s)
{
	return atapi_media_present(s) && s->nb_sectors <= CD_MAX_SECTORS;
}

static bool media_is_dvd(struct ide_state *s)
{
	return atapi_media_present(s) && s->nb_sectors > CD_MAX_SECTORS;
}

/* ---- MMC commands ------------------------------------------------------------ */

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
		if (!start && !atapi_tray_open(s) && vd_blk_is_locked(s->blk)) {
			atapi_cmd_error(s,
					vd_blk_is_inserted(s->blk) ? SENSE_NOT_READY
								   : SENSE_ILLEGAL_REQUEST,
					ASC_MEDIA_REMOVAL_PREVENTED);
			return;
		}
		if (atapi_tray_open(s) != !start)
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
		uint8_t media = atapi_tray_open(s) ? 1 : vd_blk_is_inserted(s->blk) ? 2 : 0;
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
		if (!atapi_media_present(s))
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

static void cmd_read_cd(struct ide_state *s, const uint8_t *cdb, uint8_t *buf)
{
	uint64_t nb = (uint32_t)cdb[6] << 16 | (uint32_t)cdb[7] << 8 | cdb[8];
	uint64_t lba = get_be32(cdb + 2);

	if (nb == 0 || (cdb[9] & 0xf8) == 0) {
		atapi_cmd_ok(s);
		return;
	}
	if (!atapi_validate_bcl(s))
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

/* MMC-5 (and SPC-3) opcodes a guest driver uses, as QEMU 7.2's
 * atapi_cmd_table; any other gets ILLEGAL REQUEST, invalid opcode. */
const struct atapi_cmd atapi_cmd_table[256] = {
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
