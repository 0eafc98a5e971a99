/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for the IDE/ATAPI device (hw/ide/) on the in-process PC: the
 * input is decoded as a sequence of guest operations, the way a hostile
 * driver would poke the PIIX3 function at 01.1:
 *
 *   - byte/word/dword port reads and writes on the legacy task-file ports
 *     (0x1F0-0x1F7, 0x3F6, 0x170-0x177, 0x376) and the bus-master BAR;
 *   - whole ATA commands (task file + command register) and ATAPI PACKET
 *     commands with their 12-byte CDB pushed through the data port;
 *   - PRD tables and data buffers written into guest RAM, bus-master
 *     START/STOP, PIO drains and fills of the data port;
 *   - loop turns and virtual-clock steps so that asynchronous block requests
 *     complete in between; SRST, a hardware reset of the function, bus
 *     mastering on/off, QMP-style tray and medium changes, and "cont" after
 *     the rerror=stop policy paused the machine.
 *
 * The drives: primary master, a disk on blkdebug over null-co (8 MiB) that
 * fails reads of sector 64 (rerror=stop), writes of sectors 128/129
 * (ENOSPC, werror=enospc: stop; EIO: report), its first flush and TRIMs of
 * sector 100 (EIO: report); secondary master, a CD-ROM
 * (4 MiB null-co under blkdebug, reads of CD block 10 fail, rerror=stop:
 * ATAPI DMA stops, PIO reports); secondary slave, a disk with
 * rerror/werror=ignore and read errors at sector 8.  The primary slave is
 * absent.
 *
 * Invariants: no crash or sanitizer report; no hang (every operation is
 * bounded, and so are the loop turns per input); no device access outside
 * guest RAM: a trap region covers the 16 MiB above RAM in the memory
 * address space and aborts if anything reaches it (DMA must be refused
 * there, not dispatched); nothing reaches guest RAM after a hardware reset
 * of the function (requests in flight then complete into the void); and at
 * the end, after SRST, the device still answers: the disk shows DRDY|DSC
 * and returns IDENTIFY DEVICE data, the CD-ROM its packet signature and
 * IDENTIFY PACKET DEVICE data.  Under libFuzzer (ASan, LeakSanitizer) a
 * request or buffer that outlives the machine is reported as a leak.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/ide/ through it (make
 * check); tests/fuzz/run-libfuzzer.sh ide SECONDS runs a libFuzzer campaign.
 * The crafted seeds (one guest scenario each, named) are written by
 * tests/fuzz/make-ide-corpus.py; the files named by a SHA-1 are what the
 * campaigns found (merged on edge coverage, -use_counters=0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/backend.h>
#include <vdisk/block.h>
#include <vdisk/ide.h>
#include <vdisk/loop.h>
#include <vdisk/machine.h>
#include <vdisk/memory.h>
#include <vdisk/opts.h>

#include "tests/fuzz/fuzz.h"

#define RAM_SIZE (2u << 20)
#define TRAP_SIZE (16u << 20)
#define BM_BASE 0xc000
#define IDE_DEVFN 0x09
#define MAX_OPS 4096
#define MAX_LOOP_TURNS 20000
#define MAX_PIO_WORDS 40000 /* per input: a few full bursts */

static const char *const drive_opts[] = {
	"if=ide,index=0,format=raw,rerror=stop,werror=enospc,file.driver=blkdebug,"
	"file.image.driver=null-co,file.image.size=8M,file.image.read-zeroes=on,"
	"file.inject-error.0.event=read,file.inject-error.0.sector=64,"
	"file.inject-error.1.event=write,file.inject-error.1.sector=128,"
	"file.inject-error.1.errno=28,"
	"file.inject-error.2.event=write,file.inject-error.2.sector=129,"
	"file.inject-error.3.event=flush,file.inject-error.3.once=on,"
	"file.inject-error.4.event=discard,file.inject-error.4.sector=100",
	"if=ide,index=2,media=cdrom,format=raw,rerror=stop,file.driver=blkdebug,"
	"file.image.driver=null-co,file.image.size=4M,file.image.read-zeroes=on,"
	"file.inject-error.0.event=read,file.inject-error.0.sector=40",
	"if=ide,index=3,format=raw,rerror=ignore,werror=ignore,file.driver=blkdebug,"
	"file.image.driver=null-co,file.image.size=1M,file.image.read-zeroes=on,"
	"file.inject-error.0.event=read,file.inject-error.0.sector=8",
};

/* The ports a guest driver touches, chosen by one input byte: the command
 * and control blocks of both channels, then the bus-master BAR. */
static uint32_t port_of(uint8_t sel)
{
	sel %= 36;
	if (sel < 8)
		return 0x1f0 + sel;
	if (sel < 10)
		return 0x3f6 + sel - 8;
	if (sel < 18)
		return 0x170 + sel - 10;
	if (sel < 20)
		return 0x376 + sel - 18;
	return BM_BASE + sel - 20;
}

/* A guest-physical address: mostly inside RAM, sometimes anything (bit 0
 * of the selector), so that PRDs point at the trap, holes and wrap. */
static uint32_t gpa(struct fuzz_in *in)
{
	uint8_t sel = fuzz_u8(in);
	uint32_t a = fuzz_u32(in);

	return (sel & 1) ? a : a % RAM_SIZE;
}

struct fuzz {
	struct vd_machine *m;
	struct vd_address_space *io;
	struct vd_loop *loop;
	uint8_t *ram;
	struct vd_piix_ide *ide;
	struct vd_blk *cd;
	long loop_turns;
	long pio_words;
};

static void outp(struct fuzz *f, uint32_t port, uint32_t v, unsigned size)
{
	vd_address_space_write(f->io, port, &v, size);
}

static uint32_t inp(struct fuzz *f, uint32_t port, unsigned size)
{
	uint32_t v = 0;

	vd_address_space_read(f->io, port, &v, size);
	return v;
}

/* Run ready work (bounded per input): completions, bottom halves. */
static void turn(struct fuzz *f, int n)
{
	for (int i = 0; i < n && f->loop_turns < MAX_LOOP_TURNS; i++) {
		f->loop_turns++;
		if (!vd_loop_run_once(f->loop, false))
			break;
	}
}

static struct vd_node *open_null(unsigned kib, unsigned half)
{
	char buf[160];
	struct vd_opts *o = NULL;
	struct vd_node *n = NULL;
	struct vd_error err = {0};

	snprintf(buf, sizeof(buf),
		 "driver=raw,file.driver=null-co,file.size=%llu,file.read-zeroes=on",
		 (unsigned long long)kib * 1024 + half * 512);
	if (vd_opts_parse(buf, NULL, &o, &err) < 0)
		return NULL;
	if (vd_node_open_opts(o, 0, &n, &err) < 0)
		n = NULL;
	vd_opts_free(o);
	return n;
}

static void op_media(struct fuzz *f, uint8_t what)
{
	struct vd_node *n;

	switch ((what & 7) % 5) {
	case 0:
		vd_blk_open_tray(f->cd, what & 0x80);
		break;
	case 1:
		vd_blk_close_tray(f->cd);
		break;
	case 2:
		vd_blk_remove_medium(f->cd);
		break;
	case 3:
		/* A medium of 0..15 KiB in 512-byte steps: also sizes that
		 * are not whole CD blocks, and none at all; or a DVD-sized
		 * one (8 GiB). */
		if ((what >> 3) == 31)
			n = open_null(8u << 20, 0);
		else
			n = open_null((what >> 3) / 2u, (what >> 3) & 1);
		if (n) {
			vd_blk_insert_medium(f->cd, n);
			vd_node_unref(n);
		}
		break;
	case 4:
		vd_blk_resized(f->cd);
		break;
	}
}

/* The task file and command: bus, device/head, count (+HOB), LBA (+HOB),
 * features, command. */
static void op_ata(struct fuzz *f, struct fuzz_in *in)
{
	uint8_t b = fuzz_u8(in);
	uint32_t base = (b & 1) ? 0x170 : 0x1f0;
	uint8_t dev = fuzz_u8(in), nsect = fuzz_u8(in), feat = fuzz_u8(in), cmd = fuzz_u8(in);
	uint32_t lba = fuzz_u32(in);

	if (b & 2) { /* LBA48: the high bytes first */
		outp(f, base + 1, 0, 1);
		outp(f, base + 2, fuzz_u8(in), 1);
		outp(f, base + 3, lba >> 24, 1);
		outp(f, base + 4, fuzz_u8(in), 1);
		outp(f, base + 5, 0, 1);
	}
	outp(f, base + 6, dev, 1);
	outp(f, base + 1, feat, 1);
	outp(f, base + 2, nsect, 1);
	outp(f, base + 3, lba & 0xff, 1);
	outp(f, base + 4, (lba >> 8) & 0xff, 1);
	outp(f, base + 5, (lba >> 16) & 0xff, 1);
	outp(f, base + 7, cmd, 1);
}

/* PACKET with a byte count limit and the CDB through the data port. */
static void op_packet(struct fuzz *f, struct fuzz_in *in)
{
	uint8_t b = fuzz_u8(in);
	uint32_t base = (b & 1) ? 0x1f0 : 0x170;
	uint16_t bcl = fuzz_u16(in);
	uint8_t cdb[12];

	for (int i = 0; i < 12; i++)
		cdb[i] = fuzz_u8(in);
	outp(f, base + 6, b & 0x10, 1);
	outp(f, base + 1, (b >> 1) & 3, 1); /* DMA, overlap */
	outp(f, base + 4, bcl & 0xff, 1);
	outp(f, base + 5, bcl >> 8, 1);
	outp(f, base + 7, 0xa0, 1);
	for (int i = 0; i < 12; i += 2)
		outp(f, base, cdb[i] | cdb[i + 1] << 8, 2);
}

static void op_prdt(struct fuzz *f, struct fuzz_in *in)
{
	uint32_t at = fuzz_u16(in) * 8u % RAM_SIZE;
	unsigned n = fuzz_u8(in) % 8 + 1;

	for (unsigned i = 0; i < n && at + 8 <= RAM_SIZE; i++, at += 8) {
		uint32_t addr = gpa(in), count = fuzz_u32(in);

		if (i == n - 1)
			count |= 0x80000000u;
		memcpy(f->ram + at, &addr, 4);
		memcpy(f->ram + at + 4, &count, 4);
	}
}

static void op_ram(struct fuzz *f, struct fuzz_in *in)
{
	uint32_t at = fuzz_u32(in) % RAM_SIZE;
	unsigned len = fuzz_u8(in);

	for (unsigned i = 0; i < len && at + i < RAM_SIZE; i++)
		f->ram[at + i] = fuzz_u8(in);
}

/* Bus master: PRD pointer, then the command register. */
static void op_bm(struct fuzz *f, struct fuzz_in *in)
{
	uint8_t b = fuzz_u8(in);
	uint32_t bm = BM_BASE + ((b & 1) ? 8 : 0);

	if (b & 2)
		outp(f, bm + 4, fuzz_u16(in) * 8u % RAM_SIZE, 4);
	if (b & 4)
		outp(f, bm + 2, 0x06, 1); /* clear INT and ERROR */
	outp(f, bm, (b >> 3) & 0x09, 1);
}

static void op_pio(struct fuzz *f, struct fuzz_in *in, bool write)
{
	uint8_t b = fuzz_u8(in);
	uint32_t base = (b & 1) ? 0x170 : 0x1f0;
	unsigned size = (b & 2) ? 4 : 2;
	unsigned n = (unsigned)fuzz_u16(in) % 4096 + 1;

	for (unsigned i = 0; i < n && f->pio_words < MAX_PIO_WORDS; i++) {
		f->pio_words++;
		if (write)
			outp(f, base, i * 0x01010101u ^ b, size);
		else
			inp(f, base, size);
		/* Stop at the end of the data phase (DRQ clear). */
		if (!(inp(f, base + 0x206, 1) & 0x08))
			break;
	}
}

static void op_pci_command(struct fuzz *f, uint8_t v)
{
	outp(f, 0xcf8, 0x80000000u | IDE_DEVFN << 8 | 0x04, 4);
	outp(f, 0xcfc, v & 0x07, 2);
}

/* A hardware reset of the function: whatever was in flight completes
 * later, but none of it may reach guest memory. */
static void hw_reset(struct fuzz *f)
{
	static uint8_t before[RAM_SIZE];

	vd_piix3_ide_reset(f->ide);
	memcpy(before, f->ram, RAM_SIZE);
	turn(f, 200);
	FUZZ_ASSERT(memcmp(before, f->ram, RAM_SIZE) == 0);
}

/* After SRST the drives must be idle and answer IDENTIFY. */
static void check_alive(struct fuzz *f)
{
	uint16_t w0;

	for (int ch = 0; ch < 2; ch++) {
		uint32_t ctl = ch ? 0x376 : 0x3f6;

		outp(f, ctl, 0x04, 1);
		outp(f, ctl, 0x00, 1);
	}
	turn(f, 100);
	/* Disk, primary master. */
	outp(f, 0x1f6, 0xa0, 1);
	FUZZ_ASSERT(inp(f, 0x1f7, 1) == 0x50);
	FUZZ_ASSERT(inp(f, 0x1f4, 1) == 0 && inp(f, 0x1f5, 1) == 0);
	outp(f, 0x1f7, 0xec, 1);
	FUZZ_ASSERT(inp(f, 0x3f6, 1) == 0x58);
	w0 = (uint16_t)inp(f, 0x1f0, 2);
	FUZZ_ASSERT(w0 == 0x0040);
	for (int i = 1; i < 256; i++)
		inp(f, 0x1f0, 2);
	FUZZ_ASSERT(inp(f, 0x1f7, 1) == 0x50);
	/* CD-ROM, secondary master: signature, then IDENTIFY PACKET. */
	outp(f, 0x176, 0xa0, 1);
	FUZZ_ASSERT(inp(f, 0x174, 1) == 0x14 && inp(f, 0x175, 1) == 0xeb);
	outp(f, 0x177, 0xa1, 1);
	FUZZ_ASSERT(inp(f, 0x376, 1) & 0x08);
	w0 = (uint16_t)inp(f, 0x170, 2);
	FUZZ_ASSERT(w0 == 0x85c0);
	for (int i = 1; i < 256; i++)
		inp(f, 0x170, 2);
	FUZZ_ASSERT(!(inp(f, 0x177, 1) & 0x88));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vd_loop *loop;
	struct vd_machine_opts mo = {.ram_size = RAM_SIZE, .qtest_clock = true};
	struct vd_error err = {0};
	struct fuzz_in in = {data, size, 0};
	struct fuzz f = {0};

	if (!loop) {
		FUZZ_ASSERT(vd_loop_new(&loop) == 0);
		vd_loop_set_current(loop);
	}
	f.loop = loop;
	mo.loop = loop;
	FUZZ_ASSERT(vd_machine_new(&mo, &f.m, &err) == 0);
	f.io = vd_machine_io(f.m);
	f.ram = vd_machine_ram(f.m)->host;
	for (size_t i = 0; i < sizeof(drive_opts) / sizeof(drive_opts[0]); i++) {
		struct vd_drive *d;

		if (vd_machine_add_drive(f.m, drive_opts[i], &d, &err) < 0) {
			fprintf(stderr, "drive %zu: %s\n", i, err.msg);
			abort();
		}
		f.ide = d->device;
		if (i == 1)
			f.cd = d->blk;
	}
	FUZZ_ASSERT(f.ide && f.cd);
	fuzz_map_trap(vd_machine_memory(f.m), RAM_SIZE, TRAP_SIZE);

	/* What the BIOS would do: BAR4, I/O decode and bus mastering. */
	outp(&f, 0xcf8, 0x80000000u | IDE_DEVFN << 8 | 0x20, 4);
	outp(&f, 0xcfc, BM_BASE | 1, 4);
	op_pci_command(&f, 0x05);

	for (int ops = 0; ops < MAX_OPS && in.off < in.len; ops++) {
		uint8_t op = fuzz_u8(&in);

		switch (op % 20) {
		case 0:
		case 1:
		case 2: {
			uint8_t p = fuzz_u8(&in);

			outp(&f, port_of(p), fuzz_u32(&in), 1u << (op % 3));
			break;
		}
		case 3:
			inp(&f, port_of(fuzz_u8(&in)), 1u << (op / 20 % 3));
			break;
		case 4:
		case 5:
			op_ata(&f, &in);
			break;
		case 6:
		case 7:
			op_packet(&f, &in);
			break;
		case 8:
			op_prdt(&f, &in);
			break;
		case 9:
			op_ram(&f, &in);
			break;
		case 10:
		case 11:
			op_bm(&f, &in);
			break;
		case 12:
		case 13:
			turn(&f, fuzz_u8(&in) % 32 + 1);
			vd_machine_clock_warp(f.m, vd_machine_clock_ns(f.m) + fuzz_u16(&in) * 1000);
			break;
		case 14:
			op_pio(&f, &in, false);
			break;
		case 15:
			op_pio(&f, &in, true);
			break;
		case 16: {
			uint8_t b = fuzz_u8(&in);

			outp(&f, (b & 1) ? 0x376 : 0x3f6, b & 0x86, 1);
			outp(&f, (b & 1) ? 0x376 : 0x3f6, (b >> 4) & 0x82, 1);
			break;
		}
		case 17:
			op_media(&f, fuzz_u8(&in));
			break;
		case 18:
			op_pci_command(&f, fuzz_u8(&in));
			break;
		case 19:
			if (op & 0x80)
				hw_reset(&f);
			else if (!vd_machine_is_running(f.m))
				vd_machine_cont(f.m);
			break;
		}
	}
	/* Let whatever is in flight finish, resume a stopped machine, then the
	 * device must still work. */
	turn(&f, 1000);
	if (!vd_machine_is_running(f.m)) {
		vd_machine_cont(f.m);
		turn(&f, 1000);
	}
	f.loop_turns = 0;
	check_alive(&f);
	vd_machine_free(f.m);
	while (vd_loop_run_once(loop, false))
		;
	return 0;
}
