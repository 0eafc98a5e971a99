/* SPDX-License-Identifier: MIT */
/*
 * The bus master of a PCI IDE function and the DMA transfer of a command,
 * SFF-8038i revision 1.0 ("Bus Master Programming Interface for IDE ATA
 * Controllers"): per channel a command register (+0, BMIC), a status
 * register (+2, BMIS) and the PRD table pointer (+4..+7, BMIDTP), at
 * channel * 8 in BAR4; the PRD table walk; and the state machine that
 * moves a READ/WRITE DMA, DATA SET MANAGEMENT or ATAPI DMA command's data.
 *
 * The PRD table (SFF-8038i 1.2) is guest memory: 8-byte entries of a
 * 32-bit physical address and a byte count in bits 15:1 (0 means 64 KiB)
 * with end-of-table in bit 31.  It is untrusted: the walk stops at EOT or
 * after one page of table, whichever comes first, and every access goes
 * through the PCI function's bounds-checked DMA (nothing when bus mastering
 * is off: the entries then read as zero, as in QEMU).
 *
 * A DMA command meets the bus master's START (SFF-8038i 3.1, in either
 * order), the PRD table is walked once, and the transfer goes through the
 * block layer (block.c) in bounce-buffered chunks; guest memory is written
 * only from a live completion, so a cancel or reset leaves it untouched.
 * Outcomes (BM status, interrupt) are QEMU 7.2's ide_dma_cb and
 * hw/ide/pci.c.
 */
#include <stdlib.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

void bmdma_set_inactive(struct ide_bmdma *bm, bool stay_active)
{
	/* QEMU (and SFF-8038i 3.1's "PRD larger than transfer" case): with
	 * PRDs left over the Active bit stays set. */
	if (!stay_active)
		bm->status &= ~BM_ST_ACTIVE;
	bm->pending = false;
}

void bmdma_reset(struct ide_bmdma *bm)
{
	bm->cmd = 0;
	bm->status = 0;
	bm->addr = 0;
	bm->pending = false;
}

uint64_t bmdma_prepare(struct ide_bmdma *bm, struct ide_state *s, uint64_t limit,
		       uint64_t *prd_bytes)
{
	uint64_t sg_bytes = 0, all = 0;
	uint32_t cur = bm->addr;

	s->dma_nsg = 0;
	for (uint32_t i = 0; i < BM_MAX_SG; i++) {
		uint8_t e[8] = {0};
		uint32_t addr, size, len;

		if (bm->pci)
			(void)vd_pci_dma_read(bm->pci, cur, e, sizeof(e));
		cur += 8;
		addr = (uint32_t)e[0] | (uint32_t)e[1] << 8 | (uint32_t)e[2] << 16 |
		       (uint32_t)e[3] << 24;
		size = (uint32_t)e[4] | (uint32_t)e[5] << 8 | (uint32_t)e[6] << 16 |
		       (uint32_t)e[7] << 24;
		len = size & 0xfffe;
		if (len == 0)
			len = 0x10000;
		all += len;
		if (sg_bytes < limit) {
			uint64_t take = limit - sg_bytes < len ? limit - sg_bytes : len;

			s->sg[s->dma_nsg].addr = addr;
			s->sg[s->dma_nsg].len = (uint32_t)take;
			s->dma_nsg++;
			sg_bytes += take;
		}
		if (size & 0x80000000u)
			break;
	}
	vd_trace(ide_bmdma_prepare, "bus=%d table=0x%x entries=%u prd_bytes=%llu sg=%llu",
		 bm->bus->index, bm->addr, s->dma_nsg, (unsigned long long)all,
		 (unsigned long long)sg_bytes);
	*prd_bytes = all;
	return sg_bytes;
}

void bmdma_rw(struct ide_bmdma *bm, struct ide_state *s, uint64_t pos, void *buf, uint64_t len,
	      bool to_memory)
{
	uint8_t *p = buf;
	uint64_t off = 0;

	vd_trace(ide_bmdma_rw, "bus=%d pos=%llu bytes=%llu %s guest memory", bm->bus->index,
		 (unsigned long long)pos, (unsigned long long)len, to_memory ? "to" : "from");
	for (uint32_t i = 0; i < s->dma_nsg && len > 0; i++) {
		uint64_t l = s->sg[i].len;

		if (pos >= off + l) {
			off += l;
			continue;
		}
		uint64_t skip = pos - off;
		uint64_t n = l - skip < len ? l - skip : len;
		uint64_t gpa = (uint64_t)s->sg[i].addr + skip;

		if (!bm->pci) {
			/* no bus master: nothing moves */
		} else if (to_memory) {
			(void)vd_pci_dma_write(bm->pci, gpa, p, n);
		} else if (vd_pci_dma_read(bm->pci, gpa, p, n) < 0) {
			memset(p, 0, (size_t)n); /* master abort: zeroes */
		}
		p += n;
		pos += n;
		len -= n;
		off += l;
	}
	if (len > 0 && !to_memory)
		memset(p, 0, (size_t)len);
}

static void bmdma_cmd_write(struct ide_bmdma *bm, uint8_t val)
{
	struct ide_state *s = ide_bus_active(bm->bus);

	vd_trace(ide_bmdma_cmd, "bus=%d val=0x%02x", bm->bus->index, val);
	if ((val & BM_CMD_START) != (bm->cmd & BM_CMD_START)) {
		if (!(val & BM_CMD_START)) {
			/* SFF-8038i 2.1: clearing Start/Stop halts the transfer;
			 * whatever is in flight is dropped. */
			for (int i = 0; i < 2; i++) {
				struct ide_state *d = &bm->bus->ifs[i];

				if (d->dma_cmd != IDE_DMA_NONE && !bm->pending)
					ide_dma_cancel(d);
			}
			bm->status &= ~BM_ST_ACTIVE;
		} else if (!(bm->status & BM_ST_ACTIVE)) {
			bm->status |= BM_ST_ACTIVE;
			bm->cmd = val & (BM_CMD_START | BM_CMD_READ);
			if (bm->pending && s->dma_cmd != IDE_DMA_NONE)
				ide_dma_begin(s);
			return;
		}
	}
	/* The direction bit is kept but not used: the ATA command decides. */
	bm->cmd = val & (BM_CMD_START | BM_CMD_READ);
}

static uint64_t bmdma_read(void *opaque, uint64_t addr, unsigned size)
{
	struct vd_piix_ide *ide = opaque;
	struct ide_bmdma *bm;
	unsigned reg;

	if (addr >= 16)
		return ~0ull >> (64 - 8 * size);
	bm = &ide->bus[addr >> 3].bm;
	reg = addr & 7;
	if (reg >= 4) {
		/* PRD table pointer: any width. */
		uint64_t v = (uint64_t)bm->addr >> ((reg - 4) * 8);

		return size >= 4 ? v & 0xffffffffu : v & ((1u << (8 * size)) - 1);
	}
	/* Command and status: byte access only, other widths all ones. */
	if (size != 1)
		return ~0ull >> (64 - 8 * size);
	switch (reg) {
	case 0:
		return bm->cmd;
	case 2:
		return bm->status;
	default:
		return 0xff;
	}
}

static void bmdma_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_piix_ide *ide = opaque;
	struct ide_bmdma *bm;
	unsigned reg;

	if (addr >= 16)
		return;
	bm = &ide->bus[addr >> 3].bm;
	reg = addr & 7;
	if (reg >= 4) {
		unsigned shift = (reg - 4) * 8;
		uint64_t mask = size >= 4 ? 0xffffffffu : (1u << (8 * size)) - 1;

		bm->addr = (uint32_t)((bm->addr & ~(mask << shift)) | ((val & mask) << shift));
		bm->addr &= ~3u; /* dword aligned (SFF-8038i 2.3) */
		return;
	}
	if (size != 1)
		return;
	switch (reg) {
	case 0:
		bmdma_cmd_write(bm, (uint8_t)val);
		break;
	case 2:
		/* Bits 5-6 read/write, ERROR and INT write-one-to-clear,
		 * ACTIVE read-only (SFF-8038i 2.2). */
		bm->status = (uint8_t)((val & BM_ST_CAP_MASK) | (bm->status & BM_ST_ACTIVE) |
				       (bm->status & ~val & (BM_ST_ERROR | BM_ST_INT)));
		break;
	}
}

const struct vd_mem_ops ide_bmdma_ops = {
	.read = bmdma_read,
	.write = bmdma_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

/* --- the DMA transfer of a command ------------------------------------------ */

void ide_start_dma(struct ide_state *s, enum ide_dma_cmd cmd, uint64_t total)
{
	struct ide_bmdma *bm = &s->bus->bm;

	s->dma_cmd = cmd;
	s->dma_total = total;
	s->dma_done = 0;
	s->dma_stay_active = false;
	vd_trace(ide_dma_start, "bus=%d unit=%d cmd=%d bytes=%llu", s->bus->index, s->unit, cmd,
		 (unsigned long long)total);
	bm->pending = true;
	/* SFF-8038i 3.1: the transfer starts once the command is issued and
	 * START is set, in either order. */
	if (bm->status & BM_ST_ACTIVE)
		ide_dma_begin(s);
}

void ide_dma_error(struct ide_state *s)
{
	s->dma_cmd = IDE_DMA_NONE;
	free(s->trim_buf);
	s->trim_buf = NULL;
	ide_abort_command(s);
	bmdma_set_inactive(&s->bus->bm, false);
	ide_set_irq(s->bus);
}

static void ide_dma_finish(struct ide_state *s)
{
	if (s->dma_cmd != IDE_DMA_ATAPI) {
		ide_set_sector(s, s->dma_sector + (int64_t)(s->dma_total / IDE_SECTOR));
		s->nsector = 0;
	}
	vd_trace(ide_dma_done, "bus=%d unit=%d bytes=%llu stay_active=%d", s->bus->index, s->unit,
		 (unsigned long long)s->dma_total, s->dma_stay_active);
	s->dma_cmd = IDE_DMA_NONE;
	free(s->trim_buf);
	s->trim_buf = NULL;
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
	ide_set_irq(s->bus);
	bmdma_set_inactive(&s->bus->bm, s->dma_stay_active);
}

static void ide_dma_next(struct ide_state *s);

static void ide_dma_chunk_done(struct ide_state *s, struct ide_aio *aio, int ret)
{
	if (ret < 0) {
		int r = ide_error_action(s, aio, ret);

		if (r > 0)
			return;
		if (r < 0) {
			ide_dma_error(s);
			return;
		}
	}
	if (aio->op == IDE_AIO_READ && aio->buf)
		bmdma_rw(&s->bus->bm, s, s->dma_done, aio->buf, (uint64_t)aio->bytes, true);
	s->dma_done += (uint64_t)aio->bytes;
	ide_dma_next(s);
}

static void ide_dma_next(struct ide_state *s)
{
	uint64_t left = s->dma_total - s->dma_done;
	uint64_t chunk = left < IDE_DMA_CHUNK ? left : IDE_DMA_CHUNK;
	bool rd = s->dma_cmd == IDE_DMA_READ;
	struct ide_aio *aio;

	if (chunk == 0) {
		ide_dma_finish(s);
		return;
	}
	aio = ide_aio_new(rd ? IDE_AIO_READ : IDE_AIO_WRITE,
			  s->dma_sector * IDE_SECTOR + (int64_t)s->dma_done, (int64_t)chunk,
			  ide_dma_chunk_done);
	if (!aio) {
		ide_dma_error(s);
		return;
	}
	if (!rd)
		bmdma_rw(&s->bus->bm, s, s->dma_done, aio->buf, chunk, false);
	ide_aio_issue(s, aio);
}

/* DATA SET MANAGEMENT / TRIM (ACS 7.10): 8-byte LE entries, LBA in bits
 * 0-47 and a count in 48-63; count 0 entries are skipped. */
static void ide_trim_next(struct ide_state *s);

static void ide_trim_done(struct ide_state *s, struct ide_aio *aio, int ret)
{
	if (ret < 0) {
		int r = ide_error_action(s, aio, ret);

		if (r > 0)
			return;
		if (r < 0) {
			ide_dma_error(s);
			return;
		}
	}
	s->trim_index++;
	ide_trim_next(s);
}

static void ide_trim_next(struct ide_state *s)
{
	while (s->trim_index < s->trim_count) {
		const uint8_t *p = s->trim_buf + (size_t)s->trim_index * 8;
		uint64_t e = 0;

		for (int i = 0; i < 8; i++)
			e |= (uint64_t)p[i] << (8 * i);
		uint64_t sector = e & UINT64_C(0xffffffffffff);
		uint32_t count = (uint32_t)(e >> 48);

		if (count == 0) {
			s->trim_index++;
			continue;
		}
		if (!ide_sect_range_ok(s, (int64_t)sector, count)) {
			ide_dma_error(s);
			return;
		}
		ide_aio_submit(s, IDE_AIO_DISCARD, (int64_t)sector * IDE_SECTOR,
			       (int64_t)count * IDE_SECTOR, ide_trim_done);
		return;
	}
	ide_dma_finish(s);
}

/* Both the command and START are there: walk the PRDs and go. */
void ide_dma_begin(struct ide_state *s)
{
	struct ide_bmdma *bm = &s->bus->bm;
	uint64_t prd_bytes = 0, got;

	bm->pending = false;
	if (s->dma_cmd == IDE_DMA_ATAPI) {
		ide_atapi_dma_begin(s);
		return;
	}
	if (s->dma_total == 0) {
		ide_dma_finish(s);
		return;
	}
	got = bmdma_prepare(bm, s, s->dma_total, &prd_bytes);
	s->dma_stay_active = prd_bytes > s->dma_total;
	if (got < s->dma_total) {
		/* PRDs shorter than the transfer: SFF-8038i 3.1 error case.
		 * QEMU clears ACTIVE without an interrupt (BM status 0). */
		vd_trace(ide_dma_short_prd, "bus=%d prd=%llu need=%llu", s->bus->index,
			 (unsigned long long)prd_bytes, (unsigned long long)s->dma_total);
		s->dma_cmd = IDE_DMA_NONE;
		s->status = IDE_ST_DRDY | IDE_ST_DSC;
		bmdma_set_inactive(bm, false);
		return;
	}
	if (s->dma_cmd == IDE_DMA_TRIM) {
		s->trim_buf = malloc((size_t)s->dma_total);
		if (!s->trim_buf) {
			ide_dma_error(s);
			return;
		}
		bmdma_rw(bm, s, 0, s->trim_buf, s->dma_total, false);
		s->trim_index = 0;
		s->trim_count = (uint32_t)(s->dma_total / 8);
		ide_trim_next(s);
		return;
	}
	if (!ide_sect_range_ok(s, s->dma_sector, s->dma_total / IDE_SECTOR)) {
		ide_dma_error(s);
		return;
	}
	ide_dma_next(s);
}

/* START cleared, or a reset: drop what is in flight; nothing more reaches
 * guest memory and no interrupt is raised for it. */
void ide_dma_cancel(struct ide_state *s)
{
	if (s->dma_cmd == IDE_DMA_NONE)
		return;
	vd_trace(ide_dma_cancel, "bus=%d unit=%d done=%llu", s->bus->index, s->unit,
		 (unsigned long long)s->dma_done);
	ide_cancel_io(s);
	free(s->trim_buf);
	s->trim_buf = NULL;
	s->dma_cmd = IDE_DMA_NONE;
	s->bus->bm.pending = false;
	s->status = IDE_ST_DRDY | IDE_ST_DSC;
}

void ide_sector_start_dma(struct ide_state *s, enum ide_dma_cmd cmd)
{
	s->status = IDE_ST_DRDY | IDE_ST_DSC | IDE_ST_DRQ;
	s->dma_sector = ide_get_sector(s);
	ide_start_dma(s, cmd, (uint64_t)s->nsector * IDE_SECTOR);
}
