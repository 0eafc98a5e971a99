/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for virtio-blk-pci (hw/virtio/virtio-pci.c over virtio-blk.c
 * and virtqueue.c) on the in-process PC.  The input is decoded as a
 * sequence of guest operations, the way a hostile driver would poke the
 * functions:
 *
 *   - PCI configuration reads and writes of any width (BARs, the command
 *     register with bus mastering, the MSI-X and vendor capabilities, the
 *     VIRTIO_PCI_CAP_PCI_CFG window);
 *   - MMIO reads and writes of any width at any offset in BAR4 (common
 *     configuration, ISR, device configuration, notify) and BAR1 (MSI-X
 *     table and PBA; message addresses are kept on the MSI window so that
 *     the trap below only catches DMA), and legacy I/O port accesses to the
 *     transitional device's BAR0;
 *   - guest RAM writes: raw bytes, split descriptors, avail ring entries,
 *     packed descriptors, whole block requests;
 *   - macro operations: a complete driver setup (features from the input,
 *     split or packed rings, MSI-X or INTx, all queues) and a read or write
 *     request pushed and kicked, so that the fuzzer reaches I/O quickly;
 *   - loop turns and virtual-clock steps so block requests complete; device
 *     resets (vd_virtio_pci_reset, status 0, queue_reset, and the drivers'
 *     resets of both devices at once: modern status 0, legacy status 0 or
 *     queue PFN 0); a system reset through the PIIX3 reset control register
 *     (0xCF9); bus mastering off and on (requests parked meanwhile complete
 *     then); machine stop, which waits for requests in flight, and cont
 *     (the drive's rerror/werror=stop policy also stops the machine).
 *
 * The devices: 04.0 modern, 2 queues of 16, on blkdebug over null-aio (8 MiB;
 * requests stay in flight for a loop turn) failing reads of sector 64
 * (rerror=stop), writes of sector 128 (ENOSPC, werror=stop) and the first
 * flush; 05.0 transitional (disable-legacy=off) on a 1 MiB null-co.
 *
 * Invariants: no crash or sanitizer report; bounded work (operations and
 * loop turns per input); no device access outside guest RAM: a trap region
 * covers the 16 MiB above RAM and aborts if anything reaches it; nothing
 * reaches guest RAM after both devices were reset (by any of the resets
 * above: none waits, and orphaned reads land in bounce buffers) or lost bus
 * mastering;
 * and at the end, after vd_virtio_pci_reset (which must also let a machine
 * stopped by the error policy run again), each device answers a fresh
 * driver setup and one read request correctly.
 *
 * tests/fuzz/run-corpus.sh replays tests/fuzz/corpus/virtio-pci/ (make
 * check); tests/fuzz/run-libfuzzer.sh virtio-pci SECONDS runs a campaign.
 * Crafted seeds are written by tests/fuzz/make-virtio-pci-corpus.py; those
 * named crash-<what> are regressions for bugs this target found; the files
 * named by a SHA-1 are what the campaigns found (merged on edge coverage,
 * -use_counters=0).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/backend.h>
#include <vdisk/block.h>
#include <vdisk/loop.h>
#include <vdisk/machine.h>
#include <vdisk/memory.h>
#include <vdisk/pci.h>
#include <vdisk/virtio-pci.h>

#include "tests/fuzz/fuzz.h"

#define RAM_SIZE (2u << 20)
#define TRAP_SIZE (16u << 20)
#define MAX_OPS 4096
#define MAX_LOOP_TURNS 20000
#define NDEV 2
#define QSIZE 16

/* Per device: devfn, BAR4, BAR1, BAR0. */
static const struct {
	int devfn;
	uint64_t bar4, bar1;
	uint32_t bar0;
} devs[NDEV] = {
	{0x20, 0xe0000000, 0xe0100000, 0},
	{0x28, 0xe0200000, 0xe0300000, 0xc100},
};

/* struct virtio_pci_common_cfg (virtio 1.2 section 4.1.4.3) */
#define C_DFSELECT 0
#define C_DF 4
#define C_GFSELECT 8
#define C_GF 12
#define C_MSIX 16
#define C_NUMQ 18
#define C_STATUS 20
#define C_Q_SELECT 22
#define C_Q_SIZE 24
#define C_Q_MSIX 26
#define C_Q_ENABLE 28
#define C_Q_DESC 32
#define C_Q_DRIVER 40
#define C_Q_DEVICE 48
#define C_Q_RESET 58
#define ISR_AT 0x1000
#define DEVCFG_AT 0x2000
#define NOTIFY_AT 0x3000
#define MSIX_CAP 0x98
#define MSI_ADDR 0xfee00000u

#define F_VERSION_1 32
#define F_PACKED 34
#define F_RING_RESET 40

static const char *const drive_opts[] = {
	"if=none,id=d0,format=raw,rerror=stop,werror=stop,file.driver=blkdebug,"
	"file.image.driver=null-aio,file.image.size=8M,file.image.read-zeroes=on,"
	"file.inject-error.0.event=read,file.inject-error.0.sector=64,"
	"file.inject-error.1.event=write,file.inject-error.1.sector=128,"
	"file.inject-error.1.errno=28,"
	"file.inject-error.2.event=flush,file.inject-error.2.once=on",
	"if=none,id=d1,format=raw,file.driver=null-co,file.size=1M,file.read-zeroes=on",
};
static const char *const device_opts[] = {
	"virtio-blk-pci,drive=d0,num-queues=2,queue-size=16,addr=04.0",
	"virtio-blk-pci,drive=d1,disable-legacy=off,queue-size=16,addr=05.0",
};

/* A guest-physical address: mostly inside RAM, sometimes anything (bit 0
 * of the selector): the trap above RAM, holes, wrap-around. */
static uint64_t gpa(struct fuzz_in *in)
{
	uint8_t sel = fuzz_u8(in);
	uint64_t a = sel & 2 ? fuzz_u64(in) : fuzz_u32(in);

	return (sel & 1) ? a : a % RAM_SIZE;
}

struct fuzz {
	struct vd_machine *m;
	struct vd_address_space *io, *mem;
	struct vd_loop *loop;
	uint8_t *ram;
	struct vd_virtio_pci *vp[NDEV];
	long loop_turns;
	uint16_t avail_idx[NDEV][2];
	bool packed[NDEV];
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

static void mmio_write(struct fuzz *f, uint64_t addr, uint64_t v, unsigned size)
{
	vd_address_space_write(f->mem, addr, &v, size);
}

static uint64_t mmio_read(struct fuzz *f, uint64_t addr, unsigned size)
{
	uint64_t v = 0;

	vd_address_space_read(f->mem, addr, &v, size);
	return v;
}

static void cfg_write(struct fuzz *f, int d, uint8_t addr, uint32_t v, unsigned size)
{
	outp(f, 0xcf8, 0x80000000u | (uint32_t)devs[d].devfn << 8 | (addr & 0xfc), 4);
	outp(f, 0xcfc + (addr & 3), v, size);
}

static uint32_t cfg_read(struct fuzz *f, int d, uint8_t addr, unsigned size)
{
	outp(f, 0xcf8, 0x80000000u | (uint32_t)devs[d].devfn << 8 | (addr & 0xfc), 4);
	return inp(f, 0xcfc + (addr & 3), size);
}

static void common_w(struct fuzz *f, int d, unsigned off, uint64_t v, unsigned size)
{
	mmio_write(f, devs[d].bar4 + off, v, size);
}

static uint64_t common_r(struct fuzz *f, int d, unsigned off, unsigned size)
{
	return mmio_read(f, devs[d].bar4 + off, size);
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

/* What the firmware does: BARs, then I/O + memory decode and bus master. */
static void program_bars(struct fuzz *f, int d)
{
	cfg_write(f, d, 0x20, (uint32_t)devs[d].bar4, 4);
	cfg_write(f, d, 0x24, (uint32_t)(devs[d].bar4 >> 32), 4);
	cfg_write(f, d, 0x14, (uint32_t)devs[d].bar1, 4);
	if (devs[d].bar0)
		cfg_write(f, d, 0x10, devs[d].bar0, 4);
	cfg_write(f, d, 0x04, 0x07, 2);
}

/* The fixed guest layout of queue @q of device @d: descriptor table, driver
 * (avail) area, device (used) area; data buffers above. */
static uint64_t q_base(int d, int q)
{
	return 0x10000 + (uint64_t)(d * 2 + q) * 0x4000;
}

static uint64_t buf_base(int d, int q)
{
	return 0x100000 + (uint64_t)(d * 2 + q) * 0x10000;
}

static void put16(struct fuzz *f, uint64_t at, uint16_t v)
{
	if (at + 2 <= RAM_SIZE)
		memcpy(f->ram + at, &v, 2);
}

static void put32(struct fuzz *f, uint64_t at, uint32_t v)
{
	if (at + 4 <= RAM_SIZE)
		memcpy(f->ram + at, &v, 4);
}

static void put64(struct fuzz *f, uint64_t at, uint64_t v)
{
	if (at + 8 <= RAM_SIZE)
		memcpy(f->ram + at, &v, 8);
}

static uint16_t get16(struct fuzz *f, uint64_t at)
{
	uint16_t v;

	memcpy(&v, f->ram + at, 2);
	return v;
}

/* A complete modern driver setup (virtio 1.2 section 3.1.1); @lo the
 * low feature bits wanted (of those offered); without @driver_ok it stops
 * with the queues enabled but before DRIVER_OK. */
static bool setup(struct fuzz *f, int d, bool packed, bool msix, unsigned nq, uint32_t lo,
		  bool driver_ok)
{
	uint32_t hi = 1u << (F_VERSION_1 - 32);

	if (packed)
		hi |= 1u << (F_PACKED - 32);
	hi |= 1u << (F_RING_RESET - 32);
	common_w(f, d, C_STATUS, 0, 1);
	common_w(f, d, C_STATUS, 1, 1);
	common_w(f, d, C_STATUS, 3, 1);
	common_w(f, d, C_DFSELECT, 1, 4);
	hi &= (uint32_t)common_r(f, d, C_DF, 4);
	common_w(f, d, C_DFSELECT, 0, 4);
	lo &= (uint32_t)common_r(f, d, C_DF, 4);
	common_w(f, d, C_GFSELECT, 0, 4);
	common_w(f, d, C_GF, lo, 4);
	common_w(f, d, C_GFSELECT, 1, 4);
	common_w(f, d, C_GF, hi, 4);
	common_w(f, d, C_STATUS, 0x0b, 1);
	if (!(common_r(f, d, C_STATUS, 1) & 0x08))
		return false;
	f->packed[d] = hi & (1u << (F_PACKED - 32));
	if (msix) {
		uint16_t ctl = (uint16_t)cfg_read(f, d, MSIX_CAP + 2, 2);

		cfg_write(f, d, MSIX_CAP + 2, ctl | 0x8000, 2);
		for (unsigned v = 0; v < 3; v++) {
			mmio_write(f, devs[d].bar1 + v * 16, MSI_ADDR, 4);
			mmio_write(f, devs[d].bar1 + v * 16 + 4, 0, 4);
			mmio_write(f, devs[d].bar1 + v * 16 + 8, 0x40 + v, 4);
			mmio_write(f, devs[d].bar1 + v * 16 + 12, 0, 4);
		}
		common_w(f, d, C_MSIX, 0, 2);
	}
	if (nq > (unsigned)common_r(f, d, C_NUMQ, 2))
		nq = (unsigned)common_r(f, d, C_NUMQ, 2);
	for (unsigned q = 0; q < nq && q < 2; q++) {
		uint64_t b = q_base(d, (int)q);

		memset(f->ram + b, 0, 0x4000);
		f->avail_idx[d][q] = 0;
		common_w(f, d, C_Q_SELECT, q, 2);
		common_w(f, d, C_Q_SIZE, QSIZE, 2);
		common_w(f, d, C_Q_DESC, b, 8);
		common_w(f, d, C_Q_DRIVER, b + 0x1000, 8);
		common_w(f, d, C_Q_DEVICE, b + 0x2000, 8);
		common_w(f, d, C_Q_MSIX, msix ? q + 1 : 0xffff, 2);
		common_w(f, d, C_Q_ENABLE, 1, 2);
	}
	if (driver_ok)
		common_w(f, d, C_STATUS, 0x0f, 1);
	return true;
}

/*
 * A block request on queue @q: header (type, sector), @len data bytes at
 * the queue's buffer, status byte; three descriptors at slot @slot.
 * Packed rings: the descriptors go into the ring with the avail/used bits
 * of the first wrap.
 */
static void request(struct fuzz *f, int d, int q, uint32_t type, uint64_t sector, uint32_t len,
		    unsigned slot)
{
	uint64_t b = q_base(d, q), buf = buf_base(d, q);
	uint64_t hdr = buf, data = buf + 0x100, status = buf + 0x100 + len;
	bool in = type == 0 || type == 8;

	slot %= QSIZE - 2;
	put32(f, hdr, type);
	put32(f, hdr + 4, 0);
	put64(f, hdr + 8, sector);
	if (status < RAM_SIZE)
		f->ram[status] = 0xff;
	if (f->packed[d]) {
		/* struct pvirtq_desc (2.8.13): addr, len, id, flags, at the next
		 * ring positions; AVAIL (7) equal to the driver's wrap counter
		 * and USED (15) its inverse (2.8.1).  The first descriptor's
		 * flags go last, as a driver makes the chain visible. */
		const uint64_t addr[3] = {hdr, data, status};
		const uint32_t dlen[3] = {16, len, 1};
		const uint16_t dflags[3] = {1, (uint16_t)(1 | (in ? 2 : 0)), 2};
		uint16_t first = 0;
		uint64_t first_at = 0;

		for (unsigned i = 0; i < 3; i++) {
			uint16_t pos = f->avail_idx[d][q];
			uint64_t at = b + (pos % QSIZE) * 16;
			bool wrap = !(pos / QSIZE & 1);
			uint16_t fl = (uint16_t)(dflags[i] | (wrap ? 1u << 7 : 1u << 15));

			put64(f, at, addr[i]);
			put32(f, at + 8, dlen[i]);
			put16(f, at + 12, (uint16_t)slot);
			if (i == 0) {
				first = fl;
				first_at = at;
			} else {
				put16(f, at + 14, fl);
			}
			f->avail_idx[d][q] = (uint16_t)((pos + 1) % (2 * QSIZE));
		}
		put16(f, first_at + 14, first);
	} else {
		uint64_t at = b + slot * 16;
		uint16_t idx = f->avail_idx[d][q];

		put64(f, at, hdr);
		put32(f, at + 8, 16);
		put16(f, at + 12, 1);
		put16(f, at + 14, (uint16_t)(slot + 1));
		put64(f, at + 16, data);
		put32(f, at + 24, len);
		put16(f, at + 28, (uint16_t)(1 | (in ? 2 : 0)));
		put16(f, at + 30, (uint16_t)(slot + 2));
		put64(f, at + 32, status);
		put32(f, at + 40, 1);
		put16(f, at + 44, 2);
		put16(f, b + 0x1000 + 4 + (idx % QSIZE) * 2, (uint16_t)slot);
		f->avail_idx[d][q] = ++idx;
		put16(f, b + 0x1000 + 2, idx);
	}
	mmio_write(f, devs[d].bar4 + NOTIFY_AT + q * 4, q, 2);
}

/* Reset both devices, with vd_virtio_pci_reset or (@regs) as drivers do:
 * status 0 on the modern device, legacy status 0 or (@pfn) queue PFN 0 on
 * the transitional one, after the firmware's BAR setup so that the writes
 * arrive.  Whatever was in flight is orphaned, and nothing may reach guest
 * RAM afterwards. */
static void reset_all(struct fuzz *f, bool regs, bool pfn)
{
	static uint8_t before[RAM_SIZE];

	for (int d = 0; d < NDEV; d++) {
		if (!regs) {
			vd_virtio_pci_reset(f->vp[d]);
			continue;
		}
		program_bars(f, d);
		if (devs[d].bar0)
			outp(f, devs[d].bar0 + (pfn ? 8 : 18), 0, pfn ? 4 : 1);
		else
			common_w(f, d, C_STATUS, 0, 1);
	}
	memcpy(before, f->ram, RAM_SIZE);
	turn(f, 200);
	FUZZ_ASSERT(memcmp(before, f->ram, RAM_SIZE) == 0);
}

/* A system reset through the PIIX3 reset control register: it happens on
 * the next loop turn, and from then on nothing may reach guest RAM; then
 * the firmware sets the BARs up again. */
static void system_reset(struct fuzz *f)
{
	static uint8_t before[RAM_SIZE];

	outp(f, 0xcf9, 0x06, 1);
	f->loop_turns++;
	vd_loop_run_once(f->loop, false);
	FUZZ_ASSERT(cfg_read(f, 0, 0x04, 2) == 0 && cfg_read(f, 1, 0x04, 2) == 0);
	memcpy(before, f->ram, RAM_SIZE);
	turn(f, 200);
	FUZZ_ASSERT(memcmp(before, f->ram, RAM_SIZE) == 0);
	memset(f->avail_idx, 0, sizeof(f->avail_idx));
	for (int d = 0; d < NDEV; d++)
		program_bars(f, d);
}

/* Bus mastering off on both functions: from then on neither may touch
 * guest RAM, whatever was in flight (PCI 3.0 6.2.2, Bus Master Enable). */
static void bus_master_off(struct fuzz *f)
{
	static uint8_t before[RAM_SIZE];

	for (int d = 0; d < NDEV; d++)
		cfg_write(f, d, 0x04, 0x03, 2);
	memcpy(before, f->ram, RAM_SIZE);
	turn(f, 200);
	FUZZ_ASSERT(memcmp(before, f->ram, RAM_SIZE) == 0);
}

/* After a reset (done by the caller) the device must answer a fresh setup
 * and one read. */
static void check_alive(struct fuzz *f, int d)
{
	uint64_t b = q_base(d, 0), buf = buf_base(d, 0);

	program_bars(f, d);
	FUZZ_ASSERT(common_r(f, d, C_STATUS, 1) == 0);
	FUZZ_ASSERT(setup(f, d, false, false, 1, 0, true));
	FUZZ_ASSERT(common_r(f, d, C_STATUS, 1) == 0x0f);
	memset(f->ram + buf + 0x100, 0xaa, 512);
	request(f, d, 0, 0, 0, 512, 0);
	for (int i = 0; i < 100 && get16(f, b + 0x2000 + 2) == 0; i++)
		turn(f, 10);
	FUZZ_ASSERT(get16(f, b + 0x2000 + 2) == 1);
	FUZZ_ASSERT(get16(f, b + 0x2000 + 4) == 0); /* id */
	FUZZ_ASSERT(f->ram[buf + 0x100 + 512] == 0); /* VIRTIO_BLK_S_OK */
	for (int i = 0; i < 512; i++)
		FUZZ_ASSERT(f->ram[buf + 0x100 + i] == 0);
}

/* The MSI-X table: message addresses stay in the MSI window (the trap is
 * for DMA); data, vector control and the PBA as the input says. */
static void op_msix(struct fuzz *f, int d, struct fuzz_in *in, uint8_t op)
{
	uint32_t off = fuzz_u16(in) % 0x1000;
	unsigned size = 1u << (op >> 5 & 3);
	uint64_t v = fuzz_u64(in);

	if (op & 0x80) {
		mmio_read(f, devs[d].bar1 + off, size);
		return;
	}
	if (off < 0x800 && off % 16 < 8) {
		off &= ~7u;
		mmio_write(f, devs[d].bar1 + off, MSI_ADDR | (v & 0xffffc), 4);
		mmio_write(f, devs[d].bar1 + off + 4, 0, 4);
		return;
	}
	mmio_write(f, devs[d].bar1 + off, v, size);
}

/* A split descriptor at (device, queue, slot). */
static void op_desc(struct fuzz *f, int d, struct fuzz_in *in)
{
	uint8_t b = fuzz_u8(in);
	int q = b & 1;
	uint64_t at = q_base(d, q) + (uint64_t)(b >> 1 & 0x3f) * 16;

	put64(f, at, gpa(in));
	put32(f, at + 8, fuzz_u32(in));
	put16(f, at + 12, fuzz_u16(in));
	put16(f, at + 14, fuzz_u16(in));
}

static void op_avail(struct fuzz *f, int d, struct fuzz_in *in)
{
	uint8_t b = fuzz_u8(in);
	int q = b & 1;
	uint64_t a = q_base(d, q) + 0x1000;
	uint16_t idx = f->avail_idx[d][q];

	if (b & 2) { /* flags / any idx */
		put16(f, a, fuzz_u16(in));
		idx = fuzz_u16(in);
	} else {
		put16(f, a + 4 + (idx % QSIZE) * 2, fuzz_u16(in));
		idx++;
	}
	f->avail_idx[d][q] = idx;
	put16(f, a + 2, idx);
	if (b & 4)
		mmio_write(f, devs[d].bar4 + NOTIFY_AT + q * 4, q, 2);
}

static void op_ram(struct fuzz *f, struct fuzz_in *in)
{
	uint32_t at = fuzz_u32(in) % RAM_SIZE;
	unsigned len = fuzz_u8(in);

	for (unsigned i = 0; i < len && at + i < RAM_SIZE; i++)
		f->ram[at + i] = fuzz_u8(in);
}

static void op_reset(struct fuzz *f, int d, uint8_t b)
{
	/* The driver's ring positions start over (the device's do too). */
	if ((b >> 1 & 3) == 3) {
		if ((b >> 3 & 3) < 2)
			f->avail_idx[d][b >> 3 & 3] = 0;
	} else {
		memset(f->avail_idx, 0, sizeof(f->avail_idx));
	}
	switch (b >> 1 & 3) {
	case 0:
		reset_all(f, b & 0x80, b & 0x40);
		break;
	case 1:
		vd_virtio_pci_reset(f->vp[d]);
		break;
	case 2:
		common_w(f, d, C_STATUS, 0, 1);
		break;
	case 3:
		common_w(f, d, C_Q_SELECT, b >> 3 & 3, 2);
		common_w(f, d, C_Q_RESET, 1, 2);
		break;
	}
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
	f.mem = vd_machine_memory(f.m);
	f.ram = vd_machine_ram(f.m)->host;
	for (int i = 0; i < NDEV; i++) {
		struct vd_drive *d;

		if (vd_machine_add_drive(f.m, drive_opts[i], &d, &err) < 0 ||
		    vd_machine_add_device(f.m, device_opts[i], &err) < 0) {
			fprintf(stderr, "device %d: %s\n", i, err.msg);
			abort();
		}
		f.vp[i] = d->device;
		FUZZ_ASSERT(f.vp[i]);
	}
	fuzz_map_trap(f.mem, RAM_SIZE, TRAP_SIZE);
	for (int d = 0; d < NDEV; d++)
		program_bars(&f, d);

	for (int ops = 0; ops < MAX_OPS && in.off < in.len; ops++) {
		uint8_t op = fuzz_u8(&in);
		uint8_t b = fuzz_u8(&in);
		int d = b & 1;
		unsigned size = 1u << (b >> 1 & 3);

		switch (op % 20) {
		case 0:
		case 1: { /* BAR4 write, any offset and width */
			uint32_t off = fuzz_u16(&in) % 0x4000;

			mmio_write(&f, devs[d].bar4 + off, fuzz_u64(&in), size);
			break;
		}
		case 2: { /* common configuration field */
			unsigned off = fuzz_u8(&in) % 64;

			common_w(&f, d, off, fuzz_u64(&in), size);
			break;
		}
		case 3:
			mmio_read(&f, devs[d].bar4 + fuzz_u16(&in) % 0x4000, size);
			break;
		case 4:
			op_msix(&f, d, &in, b);
			break;
		case 5: /* notify: queue index, sometimes a wrong one */
			mmio_write(&f, devs[d].bar4 + NOTIFY_AT + (b >> 3 & 3) * 4,
				   (b & 0x80) ? fuzz_u16(&in) : (b >> 3 & 3), (b & 0x40) ? 4 : 2);
			break;
		case 6: { /* PCI configuration write */
			uint8_t at = fuzz_u8(&in);
			uint32_t v = fuzz_u32(&in);

			if (size > 4)
				size = 4;
			cfg_write(&f, d, at & ~(size - 1), v, size);
			break;
		}
		case 7:
			if (size > 4)
				size = 4;
			cfg_read(&f, d, fuzz_u8(&in) & ~(size - 1), size);
			break;
		case 8: { /* legacy I/O BAR0 of the transitional device */
			uint32_t port = devs[1].bar0 + fuzz_u8(&in) % 128;

			if (size > 4)
				size = 4;
			if (b & 0x80)
				inp(&f, port, size);
			else
				outp(&f, port, fuzz_u32(&in), size);
			break;
		}
		case 9:
			op_ram(&f, &in);
			break;
		case 10:
			op_desc(&f, d, &in);
			break;
		case 11:
			op_avail(&f, d, &in);
			break;
		case 12:
		case 13:
			turn(&f, fuzz_u8(&in) % 32 + 1);
			vd_machine_clock_warp(f.m, vd_machine_clock_ns(f.m) + fuzz_u16(&in) * 1000);
			break;
		case 14: { /* INDIRECT_DESC, EVENT_IDX; FLUSH, CONFIG_WCE, MQ,
			    * DISCARD, WRITE_ZEROES */
			uint32_t lo = ((b & 0x20) ? 3u << 28 : 0) |
				      ((b & 0x40) ? 0x7u << 12 | 0x3u << 9 : 0);

			setup(&f, d, b & 2, b & 4, (b >> 3 & 3) + 1, lo, !(b & 0x80));
			break;
		}
		case 15: { /* a request: read, write, flush, get-id, others */
			static const uint32_t types[8] = {0, 1, 4, 8, 11, 13, 0, 99};
			uint8_t t = fuzz_u8(&in);
			uint64_t sector = (t & 0x80) ? fuzz_u64(&in) : fuzz_u8(&in);
			uint32_t len = (fuzz_u16(&in) % 8 + 1) * 512;

			request(&f, d, (b >> 3) & 1, types[t & 7], sector, len, fuzz_u8(&in));
			break;
		}
		case 16:
			op_reset(&f, d, b);
			break;
		case 17: /* bus master and decode on/off */
			if (b & 0x80)
				bus_master_off(&f);
			else
				cfg_write(&f, d, 0x04, (b >> 3) & 0x07, 2);
			break;
		case 18:
			if (b & 0x80)
				vd_machine_stop(f.m);
			else if (b & 0x40)
				system_reset(&f);
			else if (!vd_machine_is_running(f.m))
				vd_machine_cont(f.m);
			break;
		case 19: /* ISR read (clears it) or device configuration */
			mmio_read(&f,
				  devs[d].bar4 +
					  ((b & 0x80) ? ISR_AT : DEVCFG_AT + fuzz_u8(&in) % 64),
				  size);
			break;
		}
	}
	/* Let whatever is in flight finish, resume a stopped machine, then each
	 * device must still work after a reset. */
	turn(&f, 1000);
	if (!vd_machine_is_running(f.m)) {
		vd_machine_cont(f.m);
		turn(&f, 1000);
	}
	/* A request held by the stop policy fails again on each cont when its
	 * error is permanent: the device reset drops it, and then the machine
	 * must keep running. */
	f.loop_turns = 0;
	for (int d = 0; d < NDEV; d++)
		vd_virtio_pci_reset(f.vp[d]);
	if (!vd_machine_is_running(f.m))
		vd_machine_cont(f.m);
	turn(&f, 100);
	FUZZ_ASSERT(vd_machine_is_running(f.m));
	for (int d = 0; d < NDEV; d++)
		check_alive(&f, d);
	vd_machine_free(f.m);
	while (vd_loop_run_once(loop, false))
		;
	return 0;
}
