/* SPDX-License-Identifier: MIT */
/*
 * DMA sequencing of the ATA drive model: a READ/WRITE DMA or DATA SET
 * MANAGEMENT command meets the bus master's START (SFF-8038i 3.1, in either
 * order), the PRD table is walked once, and the transfer goes through the
 * block layer in bounce-buffered chunks; guest memory is written only from
 * a live completion, so a cancel or reset leaves it untouched.  Outcomes
 * (BM status, interrupt) are QEMU 7.2's ide_dma_cb.
 */
#include <stdlib.h>
#include <string.h>

#include <vdisk/trace.h>

#include "hw/ide/ide.h"

/* --- DMA (with bmdma.c) ----------------------------------------------------- */

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
