/* SPDX-License-Identifier: MIT */
/*
 * The bus master of a PCI IDE function, SFF-8038i revision 1.0 ("Bus
 * Master Programming Interface for IDE ATA Controllers"): per channel a
 * command register (+0), a status register (+2) and the PRD table pointer
 * (+4..+7), at channel * 8 in BAR4.
 *
 * The PRD table (SFF-8038i 1.2) is guest memory: 8-byte entries of a
 * 32-bit physical address and a byte count in bits 15:1 (0 means 64 KiB)
 * with end-of-table in bit 31.  It is untrusted: the walk stops at EOT or
 * after one page of table, whichever comes first, and every access goes
 * through the PCI function's bounds-checked DMA (nothing when bus mastering
 * is off: the entries then read as zero, as in QEMU).
 */
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
