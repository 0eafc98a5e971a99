/* SPDX-License-Identifier: MIT */
/*
 * The PIIX3 IDE function without a machine: address spaces, a PCI bus and
 * the device built through the public APIs, raw images behind vd_blk
 * backends, driven with port accesses as a guest driver (or QEMU's
 * tests/qtest/ide-test.c) would.  Completions arrive by running the loop.
 *
 * The expected IDENTIFY words were read from QEMU 7.2 (-machine pc, a 64 MiB
 * blank raw image as ide0-hd0 and a 4 MiB one as ide1-cd0).
 */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <vdisk/backend.h>
#include <vdisk/block.h>
#include <vdisk/ide.h>
#include <vdisk/loop.h>
#include <vdisk/memory.h>
#include <vdisk/pci.h>

#include "tests/lib/test.h"

#define RAM_SIZE (16u << 20)
#define BM_BASE 0xc000
#define P0 0x1f0
#define P1 0x170
#define CTL0 0x3f6
#define PRD_ADDR 0x1000
#define BUF_ADDR 0x100000
#define DEVFN ((1 << 3) | 1)

enum {
	R_DATA,
	R_ERROR,
	R_NSECT,
	R_LBAL,
	R_LBAM,
	R_LBAH,
	R_DEV,
	R_CMD
};

struct fx {
	struct vd_address_space *mem, *io;
	struct vd_guest_ram ram;
	struct vd_mem_region *ram_mr;
	struct vd_pci_bus *pci;
	struct vd_irq irq[2];
	int irq_level[2], irq_raises[2];
	struct vd_piix_ide *ide;
	struct vd_blk_registry *reg;
	struct vd_blk *hd, *cd;
	int stops;
};

static struct vd_loop *loop;

static void irq_handler(void *opaque, int n, int level)
{
	struct fx *f = opaque;

	if (level && !f->irq_level[n])
		f->irq_raises[n]++;
	f->irq_level[n] = level;
}

static int map_irq(void *opaque, int devfn, int pin)
{
	return 0;
}

static void set_irq(void *opaque, int line, int level)
{
}

static const struct vd_pci_bus_ops bus_ops = {.map_irq = map_irq, .set_irq = set_irq};

static void on_stop(void *opaque)
{
	((struct fx *)opaque)->stops++;
}

/* A raw image of @size bytes whose sector i holds (i * 7 + 1) & 0xff. */
static const char *make_img(const char *name, uint64_t size, bool pattern)
{
	const char *p = test_path(name);
	int fd = open(p, O_CREAT | O_TRUNC | O_RDWR, 0644);
	static uint8_t sec[2048];

	if (fd < 0)
		return NULL;
	if (ftruncate(fd, (off_t)size) < 0) {
		close(fd);
		return NULL;
	}
	if (pattern) {
		for (uint64_t i = 0; i < size / 2048; i++) {
			memset(sec, (int)((i * 7 + 1) & 0xff), sizeof(sec));
			sec[0] = (uint8_t)i;
			sec[1] = (uint8_t)(i >> 8);
			if (pwrite(fd, sec, sizeof(sec), (off_t)(i * 2048)) != sizeof(sec))
				break;
		}
	}
	close(fd);
	return p;
}

static struct vd_node *open_node(const char *path, const char *fmt, const char *opts, bool rw)
{
	struct vd_opts *o = NULL;
	struct vd_node *n = NULL;
	struct vd_error err = {0};

	if (opts && vd_opts_parse(opts, NULL, &o, &err) < 0)
		return NULL;
	if (vd_node_open(path, fmt, o, rw ? VD_OPEN_RDWR : 0, &n, &err) < 0)
		fprintf(stderr, "open %s: %s\n", path, err.msg);
	vd_opts_free(o);
	return n;
}

static struct vd_blk *make_blk(struct fx *f, const char *name, struct vd_node *n)
{
	struct vd_blk *b = NULL;

	if (vd_blk_new(f->reg, name, &b) < 0)
		return NULL;
	if (n) {
		vd_blk_insert_node(b, n);
		vd_node_unref(n);
	}
	return b;
}

/* hd_opts: blkdebug rules for the disk, or NULL for a plain raw image. */
static bool fx_init(struct fx *f, const char *hd_opts, bool with_cd)
{
	struct vd_irq *irqs[2] = {&f->irq[0], &f->irq[1]};
	struct vd_ide_drive_conf hc = {0}, cc = {.cdrom = true};
	struct vd_node *n;

	memset(f, 0, sizeof(*f));
	f->mem = vd_address_space_new("memory", 0);
	f->io = vd_address_space_new("io", 0x10000);
	if (!f->mem || !f->io || vd_guest_ram_alloc(&f->ram, RAM_SIZE) < 0)
		return false;
	f->ram_mr = vd_mem_region_new_ram("ram", RAM_SIZE, f->ram.host);
	vd_address_space_map(f->mem, 0, f->ram_mr, 0);
	f->pci = vd_pci_bus_new(f->mem, f->io, &bus_ops, f);
	vd_irq_init(&f->irq[0], irq_handler, f, 0);
	vd_irq_init(&f->irq[1], irq_handler, f, 1);
	if (vd_piix3_ide_new(f->pci, DEVFN, f->io, irqs, &f->ide) < 0)
		return false;
	/* BAR4 at BM_BASE; I/O and bus mastering on. */
	vd_pci_config_write(f->pci, DEVFN, 0x20, BM_BASE | 1, 4);
	vd_pci_config_write(f->pci, DEVFN, 0x04, 0x05, 2);
	vd_blk_registry_new(&f->reg);
	vd_blk_registry_set_stop_handler(f->reg, on_stop, f);

	if (hd_opts)
		n = open_node(make_img("hd.img", 64 << 20, false), "blkdebug", hd_opts, true);
	else
		n = open_node(make_img("hd.img", 64 << 20, false), "raw", NULL, true);
	if (!n)
		return false;
	f->hd = make_blk(f, "ide0-hd0", n);
	hc.blk = f->hd;
	if (vd_ide_attach(f->ide, 0, 0, &hc) < 0)
		return false;
	if (with_cd) {
		n = open_node(make_img("cd.iso", 4 << 20, true), "raw", NULL, false);
		f->cd = make_blk(f, "ide1-cd0", n);
		cc.blk = f->cd;
		if (!n || vd_ide_attach(f->ide, 1, 0, &cc) < 0)
			return false;
	}
	return true;
}

static void fx_fini(struct fx *f)
{
	vd_piix3_ide_free(f->ide);
	/* Let dropped requests complete before the nodes go.  A blocking
	 * drain: an asynchronous request holds its own reference to the
	 * medium, so vd_blk_unref() below would not wait for it, and a
	 * non-blocking loop turn gives up on a read still in the io_uring
	 * ring (on a loaded machine), which vd_loop_free() then finds in
	 * flight (uring_destroy: Assertion 'u->requests == 0'). */
	if (f->hd)
		vd_blk_drain(f->hd);
	if (f->cd)
		vd_blk_drain(f->cd);
	if (f->hd)
		vd_blk_unref(f->hd);
	if (f->cd)
		vd_blk_unref(f->cd);
	vd_blk_registry_free(f->reg);
	vd_pci_bus_free(f->pci);
	vd_address_space_unmap(f->mem, f->ram_mr);
	vd_mem_region_unref(f->ram_mr);
	vd_address_space_free(f->mem);
	vd_address_space_free(f->io);
	vd_guest_ram_free(&f->ram);
}

static uint32_t in(struct fx *f, uint32_t port, unsigned size)
{
	uint32_t v = 0;

	vd_address_space_read(f->io, port, &v, size);
	return v;
}

static void out(struct fx *f, uint32_t port, uint32_t v, unsigned size)
{
	vd_address_space_write(f->io, port, &v, size);
}

#define inb(p) in(f, (p), 1)
#define inw(p) in(f, (p), 2)
#define inl(p) in(f, (p), 4)
#define outb(p, v) out(f, (p), (v), 1)
#define outw(p, v) out(f, (p), (v), 2)
#define outl(p, v) out(f, (p), (v), 4)

/* Run the loop until the drive is not busy (alternate status). */
static uint8_t wait_ready(struct fx *f, uint32_t ctl)
{
	for (int i = 0; i < 100000 && (inb(ctl) & 0x80); i++)
		vd_loop_run_once(loop, true);
	return inb(ctl);
}

/* Until the bus master says done (ACTIVE clear or INT set). */
static uint8_t wait_bm(struct fx *f, int ch)
{
	uint8_t st = 0;

	for (int i = 0; i < 100000; i++) {
		st = inb(BM_BASE + ch * 8 + 2);
		if ((st & 5) != 1)
			break;
		vd_loop_run_once(loop, true);
	}
	return st;
}

static uint8_t *ram(struct fx *f, uint64_t addr)
{
	return (uint8_t *)f->ram.host + addr;
}

static void put_prd(struct fx *f, int i, uint32_t addr, uint32_t size)
{
	uint8_t *p = ram(f, PRD_ADDR + i * 8);

	memcpy(p, &addr, 4);
	memcpy(p + 4, &size, 4);
}

static void lba28(struct fx *f, uint32_t base, uint32_t lba, uint8_t count)
{
	outb(base + R_NSECT, count);
	outb(base + R_LBAL, lba & 0xff);
	outb(base + R_LBAM, (lba >> 8) & 0xff);
	outb(base + R_LBAH, (lba >> 16) & 0xff);
	outb(base + R_DEV, 0x40 | ((lba >> 24) & 0xf));
}

/* QEMU 7.2's IDENTIFY DEVICE for a blank 64 MiB raw image, serial
 * QM00001 (all words not listed are 0). */
static const uint16_t qemu_hd_identify[][2] = {
	{0, 0x0040},  {1, 0x0082},  {3, 0x0010},   {4, 0x7e00},	  {5, 0x0200},	 {6, 0x003f},
	{10, 0x514d}, {11, 0x3030}, {12, 0x3030},  {13, 0x3120},  {14, 0x2020},	 {15, 0x2020},
	{16, 0x2020}, {17, 0x2020}, {18, 0x2020},  {19, 0x2020},  {20, 0x0003},	 {21, 0x0200},
	{22, 0x0004}, {23, 0x322e}, {24, 0x352b},  {25, 0x2020},  {26, 0x2020},	 {27, 0x5145},
	{28, 0x4d55}, {29, 0x2048}, {30, 0x4152},  {31, 0x4444},  {32, 0x4953},	 {33, 0x4b20},
	{34, 0x2020}, {35, 0x2020}, {36, 0x2020},  {37, 0x2020},  {38, 0x2020},	 {39, 0x2020},
	{40, 0x2020}, {41, 0x2020}, {42, 0x2020},  {43, 0x2020},  {44, 0x2020},	 {45, 0x2020},
	{46, 0x2020}, {47, 0x8010}, {48, 0x0001},  {49, 0x0b00},  {51, 0x0200},	 {52, 0x0200},
	{53, 0x0007}, {54, 0x0082}, {55, 0x0010},  {56, 0x003f},  {57, 0xffe0},	 {58, 0x0001},
	{59, 0x0110}, {61, 0x0002}, {62, 0x0007},  {63, 0x0007},  {64, 0x0003},	 {65, 0x0078},
	{66, 0x0078}, {67, 0x0078}, {68, 0x0078},  {69, 0x4000},  {80, 0x00f0},	 {81, 0x0016},
	{82, 0x4021}, {83, 0x7400}, {84, 0x4000},  {85, 0x4021},  {86, 0x3400},	 {87, 0x4000},
	{88, 0x203f}, {93, 0x6001}, {101, 0x0002}, {106, 0x6000}, {169, 0x0001},
};

/* IDENTIFY PACKET DEVICE of QEMU 7.2's ide1-cd0 (serial QM00003). */
static const uint16_t qemu_cd_identify[][2] = {
	{0, 0x85c0},  {10, 0x514d}, {11, 0x3030}, {12, 0x3030}, {13, 0x3320}, {14, 0x2020},
	{15, 0x2020}, {16, 0x2020}, {17, 0x2020}, {18, 0x2020}, {19, 0x2020}, {20, 0x0003},
	{21, 0x0200}, {22, 0x0004}, {23, 0x322e}, {24, 0x352b}, {25, 0x2020}, {26, 0x2020},
	{27, 0x5145}, {28, 0x4d55}, {29, 0x2044}, {30, 0x5644}, {31, 0x2d52}, {32, 0x4f4d},
	{33, 0x2020}, {34, 0x2020}, {35, 0x2020}, {36, 0x2020}, {37, 0x2020}, {38, 0x2020},
	{39, 0x2020}, {40, 0x2020}, {41, 0x2020}, {42, 0x2020}, {43, 0x2020}, {44, 0x2020},
	{45, 0x2020}, {46, 0x2020}, {48, 0x0001}, {49, 0x0300}, {53, 0x0007}, {62, 0x0007},
	{63, 0x0007}, {64, 0x0003}, {65, 0x00b4}, {66, 0x00b4}, {67, 0x012c}, {68, 0x00b4},
	{71, 0x001e}, {72, 0x001e}, {80, 0x001e}, {88, 0x203f},
};

static void check_identify(const uint16_t *w, const uint16_t (*exp)[2], size_t n)
{
	uint16_t want[256] = {0};

	for (size_t i = 0; i < n; i++)
		want[exp[i][0]] = exp[i][1];
	for (int i = 0; i < 256; i++) {
		if (w[i] != want[i])
			fprintf(stderr, "  word %d: 0x%04x, QEMU 0x%04x\n", i, w[i], want[i]);
		CHECK_EQ(w[i], want[i]);
	}
}

static void test_identify(void)
{
	struct fx f_, *f = &f_;
	uint16_t w[256];

	REQUIRE(fx_init(f, NULL, true));
	outb(P0 + R_DEV, 0);
	outb(P0 + R_CMD, 0xec);
	CHECK_EQ(inb(CTL0), 0x58); /* DRDY DSC DRQ */
	CHECK_EQ(f->irq_level[0], 1);
	for (int i = 0; i < 256; i++)
		w[i] = (uint16_t)inw(P0);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK_EQ(f->irq_level[0], 0); /* reading status lowered it */
	check_identify(w, qemu_hd_identify, sizeof(qemu_hd_identify) / sizeof(qemu_hd_identify[0]));

	/* The CD aborts IDENTIFY DEVICE with its signature ... */
	outb(P1 + R_DEV, 0);
	outb(P1 + R_CMD, 0xec);
	CHECK_EQ(inb(P1 + R_CMD), 0x41);
	CHECK_EQ(inb(P1 + R_ERROR), 0x04);
	CHECK_EQ(inb(P1 + R_LBAM), 0x14);
	CHECK_EQ(inb(P1 + R_LBAH), 0xeb);
	/* ... and answers IDENTIFY PACKET DEVICE. */
	outb(P1 + R_CMD, 0xa1);
	CHECK_EQ(inb(P1 + R_CMD), 0x58);
	for (int i = 0; i < 256; i++)
		w[i] = (uint16_t)inw(P1);
	check_identify(w, qemu_cd_identify, sizeof(qemu_cd_identify) / sizeof(qemu_cd_identify[0]));

	/* SET FEATURES: write cache off clears word 85 bit 5 (and flushes). */
	outb(P0 + R_ERROR, 0x82);
	outb(P0 + R_CMD, 0xef);
	CHECK_EQ(wait_ready(f, CTL0), 0x50);
	CHECK(!vd_node_write_cache(vd_blk_root(f->hd)));
	outb(P0 + R_CMD, 0xec);
	for (int i = 0; i < 256; i++)
		w[i] = (uint16_t)inw(P0);
	CHECK_EQ(w[85], 0x4001);
	outb(P0 + R_ERROR, 0x02);
	outb(P0 + R_CMD, 0xef);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK(vd_node_write_cache(vd_blk_root(f->hd)));
	/* Transfer mode UDMA 2 -> word 88. */
	outb(P0 + R_ERROR, 0x03);
	outb(P0 + R_NSECT, 0x42);
	outb(P0 + R_CMD, 0xef);
	outb(P0 + R_CMD, 0xec);
	for (int i = 0; i < 256; i++)
		w[i] = (uint16_t)inw(P0);
	CHECK_EQ(w[88], 0x043f);
	CHECK_EQ(w[85], 0x4021);
	fx_fini(f);
}

/* READ/WRITE SECTORS: per-block IRQ and DRQ (ACS 7.28, 7.64). */
static void test_pio_rw(void)
{
	struct fx f_, *f = &f_;
	uint8_t buf[1024];

	REQUIRE(fx_init(f, NULL, false));
	lba28(f, P0, 100, 2);
	outb(P0 + R_CMD, 0x30);
	CHECK_EQ(inb(CTL0), 0x58);
	CHECK_EQ(f->irq_raises[0], 0); /* no IRQ for the first block */
	for (int blk = 0; blk < 2; blk++) {
		for (int i = 0; i < 256; i++)
			outw(P0, (uint16_t)(0x100 * blk + i));
		CHECK(inb(CTL0) & 0x80); /* writing */
		wait_ready(f, CTL0);
		CHECK_EQ(f->irq_raises[0], blk + 1);
		CHECK_EQ(inb(P0 + R_CMD), blk == 0 ? 0x58 : 0x50);
	}
	CHECK_EQ(vd_node_pread(vd_blk_root(f->hd), 100 * 512, buf, 1024), 0);
	CHECK_EQ(buf[2], 1);
	CHECK_EQ(buf[512 + 3], 0x01);
	CHECK_EQ(buf[512 + 2], 0x01);
	/* The address registers moved to the next sector. */
	CHECK_EQ(inb(P0 + R_LBAL), 102);

	/* Read them back with 32-bit data accesses. */
	lba28(f, P0, 100, 2);
	outb(P0 + R_CMD, 0x20);
	CHECK(inb(CTL0) & 0x80);
	CHECK_EQ(wait_ready(f, CTL0), 0x58);
	for (int blk = 0; blk < 2; blk++) {
		for (int i = 0; i < 128; i++) {
			uint32_t v = inl(P0);
			uint32_t want = (uint32_t)(0x100 * blk + 2 * i) |
					(uint32_t)(0x100 * blk + 2 * i + 1) << 16;
			if (v != want) {
				CHECK_EQ(v, want);
				break;
			}
		}
		CHECK_EQ(f->irq_raises[0], 3 + blk);
		inb(P0 + R_CMD);
		wait_ready(f, CTL0);
	}
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	/* No more data: reads give 0. */
	CHECK_EQ(inw(P0), 0);

	/* Out of range: ABRT with an IRQ. */
	lba28(f, P0, (64 << 20) / 512, 1);
	outb(P0 + R_CMD, 0x20);
	CHECK_EQ(inb(P0 + R_CMD), 0x41);
	CHECK_EQ(inb(P0 + R_ERROR), 0x04);
	fx_fini(f);
}

/* LBA48 with HOB registers, MULTIPLE mode. */
static void test_lba48_multiple(void)
{
	struct fx f_, *f = &f_;
	uint8_t buf[512] = {0};
	int blocks = 0;

	REQUIRE(fx_init(f, NULL, false));
	memset(buf, 0x5a, sizeof(buf));
	CHECK_EQ(vd_node_pwrite(vd_blk_root(f->hd), 0x10203ll * 512, buf, 512, 0), 0);
	/* The HOB pairs: first write is the high byte. */
	outb(P0 + R_NSECT, 0);
	outb(P0 + R_NSECT, 1);
	outb(P0 + R_LBAL, 0x01); /* LBA 31:24 */
	outb(P0 + R_LBAL, 0x03);
	outb(P0 + R_LBAM, 0);
	outb(P0 + R_LBAM, 0x02);
	outb(P0 + R_LBAH, 0);
	outb(P0 + R_LBAH, 0x01);
	outb(P0 + R_DEV, 0x40);
	outb(CTL0, 0x80); /* HOB: read the previous values */
	CHECK_EQ(inb(P0 + R_LBAL), 0x01);
	outb(CTL0, 0);
	CHECK_EQ(inb(P0 + R_LBAL), 0x03);
	/* LBA 0x01_00020203... too far: check the range error first. */
	outb(P0 + R_CMD, 0x24);
	CHECK_EQ(inb(P0 + R_CMD), 0x41);
	lba28(f, P0, 0, 0);
	outb(P0 + R_NSECT, 0);
	outb(P0 + R_NSECT, 1);
	outb(P0 + R_LBAL, 0);
	outb(P0 + R_LBAL, 0x03);
	outb(P0 + R_LBAM, 0);
	outb(P0 + R_LBAM, 0x02);
	outb(P0 + R_LBAH, 0);
	outb(P0 + R_LBAH, 0x01);
	outb(P0 + R_DEV, 0x40);
	outb(P0 + R_CMD, 0x24);
	CHECK_EQ(wait_ready(f, CTL0), 0x58);
	CHECK_EQ(inw(P0), 0x5a5a);

	/* SET MULTIPLE: 3 is not a power of two; 4 is. */
	for (int i = 1; i < 256; i++)
		inw(P0);
	outb(P0 + R_NSECT, 3);
	outb(P0 + R_CMD, 0xc6);
	CHECK_EQ(inb(P0 + R_CMD), 0x41);
	outb(P0 + R_NSECT, 4);
	outb(P0 + R_CMD, 0xc6);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	lba28(f, P0, 0, 10);
	outb(P0 + R_CMD, 0xc4);
	for (;;) {
		uint8_t st = wait_ready(f, CTL0);
		int words = 0;

		if (!(st & 0x08))
			break;
		blocks++;
		while (inb(CTL0) & 0x08) {
			inw(P0);
			words++;
		}
		CHECK_EQ(words, blocks < 3 ? 1024 : 512); /* 4 + 4 + 2 sectors */
		inb(P0 + R_CMD);
	}
	CHECK_EQ(blocks, 3);
	CHECK_EQ(f->irq_raises[0] >= 3, 1);
	/* READ NATIVE MAX ADDRESS (EXT). */
	outb(P0 + R_DEV, 0x40);
	outb(P0 + R_CMD, 0x27);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK_EQ(inb(P0 + R_LBAL), 0xff);
	CHECK_EQ(inb(P0 + R_LBAM), 0xff);
	CHECK_EQ(inb(P0 + R_LBAH), 0x01);
	fx_fini(f);
}

/* One DMA command as ide-test's send_dma_request: returns BM status. */
static uint8_t dma_request(struct fx *f, uint8_t cmd, uint32_t lba, uint8_t n, bool start_first)
{
	outb(P0 + R_DEV, 0x40);
	outb(BM_BASE, 0);
	outb(BM_BASE + 2, 0x04);
	outl(BM_BASE + 4, PRD_ADDR);
	if (start_first)
		outb(BM_BASE, 0x01 | (cmd == 0xc8 ? 0x08 : 0));
	lba28(f, P0, lba, n);
	outb(P0 + R_CMD, cmd);
	if (!start_first)
		outb(BM_BASE, 0x01 | (cmd == 0xc8 ? 0x08 : 0));
	return wait_bm(f, 0);
}

static void test_dma(void)
{
	struct fx f_, *f = &f_;
	uint8_t buf[4096];
	uint8_t st;

	REQUIRE(fx_init(f, NULL, false));
	for (int i = 0; i < 4096; i++)
		buf[i] = (uint8_t)(i * 3);
	CHECK_EQ(vd_node_pwrite(vd_blk_root(f->hd), 0, buf, 4096, 0), 0);

	/* Exact: INT, IRQ, data. */
	put_prd(f, 0, BUF_ADDR, 512 | 0x80000000u);
	memset(ram(f, BUF_ADDR), 0xee, 8192);
	st = dma_request(f, 0xc8, 0, 1, false);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(f->irq_level[0], 1);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK_EQ(f->irq_level[0], 0);
	CHECK(memcmp(ram(f, BUF_ADDR), buf, 512) == 0);
	CHECK_EQ(*ram(f, BUF_ADDR + 512), 0xee);

	/* START first, then the command: same. */
	memset(ram(f, BUF_ADDR), 0xee, 8192);
	st = dma_request(f, 0xc8, 0, 1, true);
	CHECK_EQ(st, 0x04);
	CHECK(memcmp(ram(f, BUF_ADDR), buf, 512) == 0);

	/* Short PRD: BM status 0, no IRQ, no error. */
	inb(P0 + R_CMD);
	put_prd(f, 0, BUF_ADDR, 0x10 | 0x80000000u);
	st = dma_request(f, 0xc8, 0, 1, false);
	CHECK_EQ(st, 0x00);
	CHECK_EQ(f->irq_level[0], 0);
	CHECK_EQ(inb(P0 + R_CMD) & 0xa9, 0);

	/* Long PRD: ACTIVE | INT. */
	put_prd(f, 0, BUF_ADDR, 0x1000 | 0x80000000u);
	st = dma_request(f, 0xc8, 0, 1, false);
	CHECK_EQ(st, 0x05);
	CHECK_EQ(f->irq_level[0], 1);
	outb(BM_BASE, 0);
	CHECK_EQ(inb(BM_BASE + 2), 0x04);
	inb(P0 + R_CMD);

	/* Several PRDs, a zero count meaning 64 KiB, scatter. */
	put_prd(f, 0, BUF_ADDR, 1024);
	put_prd(f, 1, BUF_ADDR + 0x20000, 0);
	put_prd(f, 2, BUF_ADDR + 0x40000, 0x80000000u | 1024);
	memset(ram(f, BUF_ADDR), 0, 0x50000);
	st = dma_request(f, 0xc8, 0, (1024 + 65536 + 1024) / 512, false);
	CHECK_EQ(st, 0x04);
	CHECK(memcmp(ram(f, BUF_ADDR), buf, 1024) == 0);
	CHECK(memcmp(ram(f, BUF_ADDR + 0x20000), buf + 1024, 1024) == 0);
	inb(P0 + R_CMD);

	/* WRITE DMA and read it back from the image. */
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 1024);
	for (int i = 0; i < 1024; i++)
		*ram(f, BUF_ADDR + i) = (uint8_t)(255 - i);
	st = dma_request(f, 0xca, 8, 2, false);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(vd_node_pread(vd_blk_root(f->hd), 8 * 512, buf, 1024), 0);
	CHECK(memcmp(buf, ram(f, BUF_ADDR), 1024) == 0);
	inb(P0 + R_CMD);

	/* No bus mastering: PRDs read as zero (64 KiB each, no EOT), so the
	 * table is long: ACTIVE | INT, and no crash (ide-test no_busmaster). */
	vd_pci_config_write(f->pci, DEVFN, 0x04, 0x01, 2);
	st = dma_request(f, 0xc8, 0, 0 /* 256 */, false);
	CHECK_EQ(st, 0x05);
	CHECK_EQ(inb(P0 + R_CMD) & 0x21, 0);
	outb(BM_BASE, 0);
	vd_pci_config_write(f->pci, DEVFN, 0x04, 0x05, 2);

	/* Out-of-range DMA: ABRT, IRQ, BM INT. */
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 512);
	st = dma_request(f, 0xc8, (64 << 20) / 512, 1, false);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(inb(P0 + R_CMD), 0x41);
	fx_fini(f);
}

/* TRIM (DSM) and FLUSH CACHE. */
static void test_trim_flush(void)
{
	struct fx f_, *f = &f_;
	uint8_t buf[512];
	uint64_t e;
	uint8_t st;

	REQUIRE(fx_init(f, NULL, false));
	memset(buf, 0x77, sizeof(buf));
	CHECK_EQ(vd_node_pwrite(vd_blk_root(f->hd), 4096 * 512, buf, 512, 0), 0);
	memset(ram(f, BUF_ADDR), 0, 512);
	e = 4096 | (UINT64_C(8) << 48);
	memcpy(ram(f, BUF_ADDR), &e, 8);
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 512);
	outb(P0 + R_ERROR, 0x01);
	st = dma_request(f, 0x06, 0, 1, false);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK_EQ(vd_node_pread(vd_blk_root(f->hd), 4096 * 512, buf, 512), 0);
	CHECK_EQ(buf[0], 0);
	/* A range past the end aborts. */
	e = ((64 << 20) / 512 - 1) | (UINT64_C(2) << 48);
	memcpy(ram(f, BUF_ADDR), &e, 8);
	outb(P0 + R_ERROR, 0x01);
	st = dma_request(f, 0x06, 0, 1, false);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(inb(P0 + R_CMD), 0x41);

	outb(P0 + R_DEV, 0);
	outb(P0 + R_CMD, 0xe7);
	CHECK(inb(CTL0) & 0x80);
	CHECK_EQ(wait_ready(f, CTL0), 0x50);
	CHECK_EQ(f->irq_level[0], 1);
	outb(P0 + R_CMD, 0xea);
	CHECK_EQ(wait_ready(f, CTL0), 0x50);
	fx_fini(f);
}

/* Unknown opcodes abort; diagnostics and SRST give signatures; an empty
 * channel reads 0. */
static void test_abort_reset_nodev(void)
{
	struct fx f_, *f = &f_;
	static const uint8_t bad[] = {0x00, 0x01, 0x26, 0xb0, 0xe4, 0xf9, 0xff};

	REQUIRE(fx_init(f, NULL, false));
	for (size_t i = 0; i < sizeof(bad); i++) {
		outb(P0 + R_DEV, 0);
		outb(P0 + R_CMD, bad[i]);
		CHECK_EQ(inb(P0 + R_CMD), 0x41);
		CHECK_EQ(inb(P0 + R_ERROR), 0x04);
	}
	/* PACKET is for packet devices only. */
	outb(P0 + R_CMD, 0xa0);
	CHECK_EQ(inb(P0 + R_CMD), 0x41);

	outb(P0 + R_CMD, 0x90); /* EXECUTE DEVICE DIAGNOSTIC */
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK_EQ(inb(P0 + R_ERROR), 0x01);
	CHECK_EQ(inb(P0 + R_DEV) & 0x10, 0);

	/* Signatures after SRST. */
	lba28(f, P0, 0x123456, 9);
	outb(CTL0, 0x04);
	outb(CTL0, 0x00);
	CHECK_EQ(wait_ready(f, CTL0), 0x50);
	CHECK_EQ(inb(P0 + R_NSECT), 1);
	CHECK_EQ(inb(P0 + R_LBAL), 1);
	CHECK_EQ(inb(P0 + R_LBAM), 0);
	CHECK_EQ(inb(P0 + R_LBAH), 0);
	CHECK_EQ(inb(P0 + R_ERROR), 0x01);

	/* No device on the secondary channel: everything reads 0, commands
	 * do nothing. */
	CHECK_EQ(inb(P1 + R_CMD), 0);
	outb(P1 + R_DEV, 0xa0);
	outb(P1 + R_CMD, 0xec);
	CHECK_EQ(inb(P1 + R_CMD), 0);
	CHECK_EQ(inw(P1), 0);
	/* Missing slave on the primary channel. */
	outb(P0 + R_DEV, 0xb0);
	CHECK_EQ(inb(P0 + R_CMD), 0);
	outb(P0 + R_CMD, 0xec);
	outb(P0 + R_DEV, 0xa0);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);

	/* nIEN masks the interrupt. */
	outb(CTL0, 0x02);
	f->irq_raises[0] = 0;
	outb(P0 + R_CMD, 0xe5);
	CHECK_EQ(f->irq_raises[0], 0);
	CHECK_EQ(inb(P0 + R_NSECT), 0xff);
	outb(CTL0, 0x00);

	/* Taskfile writes are ignored while DRQ is set. */
	outb(P0 + R_CMD, 0xec);
	outb(P0 + R_LBAL, 0x99);
	CHECK(inb(P0 + R_LBAL) != 0x99);
	fx_fini(f);
}

/* --- ATAPI ----------------------------------------------------------------- */

struct atapi_result {
	uint8_t status, error, sense_key;
	uint32_t len;
	uint8_t data[16384];
};

static void atapi_cmd(struct fx *f, const uint8_t *cdb, uint16_t bcl, struct atapi_result *r)
{
	r->len = 0;
	outb(P1 + R_DEV, 0);
	outb(P1 + R_ERROR, 0);
	outb(P1 + R_LBAM, bcl & 0xff);
	outb(P1 + R_LBAH, bcl >> 8);
	outb(P1 + R_CMD, 0xa0);
	CHECK_EQ(inb(P1 + 6 + 0x200) /* alt */ & 0x08, 0x08);
	CHECK_EQ(inb(P1 + R_NSECT) & 3, 1); /* CoD, out */
	for (int i = 0; i < 6; i++)
		outw(P1, cdb[2 * i] | cdb[2 * i + 1] << 8);
	for (;;) {
		uint8_t st = wait_ready(f, P1 + 0x206);

		if (!(st & 0x08))
			break;
		uint32_t n = inb(P1 + R_LBAM) | inb(P1 + R_LBAH) << 8;

		CHECK_EQ(inb(P1 + R_NSECT) & 3, 2); /* data in */
		CHECK(n <= bcl || (bcl == 1 && n == 2)); /* BCL 1 moves words */
		for (uint32_t i = 0; i < n; i += 2) {
			uint16_t w = (uint16_t)inw(P1);

			if (r->len + 1 < sizeof(r->data)) {
				r->data[r->len] = (uint8_t)w;
				r->data[r->len + 1] = w >> 8;
			}
			r->len += 2;
		}
		if (n & 1)
			r->len--;
		inb(P1 + R_CMD);
	}
	r->status = inb(P1 + R_CMD);
	r->error = inb(P1 + R_ERROR);
	r->sense_key = r->error >> 4;
	if (!(r->status & 1))
		CHECK_EQ(inb(P1 + R_NSECT) & 3, 3); /* completion */
}

static void request_sense(struct fx *f, uint8_t *key, uint8_t *asc)
{
	static struct atapi_result r;
	const uint8_t cdb[12] = {0x03, 0, 0, 0, 18};

	atapi_cmd(f, cdb, 0xfffe, &r);
	CHECK_EQ(r.len, 18);
	*key = r.data[2] & 0xf;
	*asc = r.data[12];
}

static void test_atapi(void)
{
	struct fx f_, *f = &f_;
	static struct atapi_result r;
	uint8_t key, asc;

	REQUIRE(fx_init(f, NULL, true));
	{
		const uint8_t cdb[12] = {0x12, 0, 0, 0, 36};

		atapi_cmd(f, cdb, 0xfffe, &r);
		CHECK_EQ(r.status, 0x50);
		CHECK_EQ(r.len, 36);
		CHECK_EQ(r.data[0], 0x05);
		CHECK(memcmp(r.data + 16, "QEMU DVD-ROM", 12) == 0);
	}
	{
		const uint8_t cdb[12] = {0x25};

		atapi_cmd(f, cdb, 0xfffe, &r);
		CHECK_EQ(r.len, 8);
		CHECK_EQ(r.data[2] << 8 | r.data[3], (4 << 20) / 2048 - 1);
		CHECK_EQ(r.data[6], 0x08);
	}
	{
		/* READ(10) of 3 sectors from 5 with a BCL of 3000: bursts
		 * of 3000, 3000, 144 bytes (sectors span bursts). */
		const uint8_t cdb[12] = {0x28, 0, 0, 0, 0, 5, 0, 0, 3};
		bool ok = true;

		atapi_cmd(f, cdb, 3000, &r);
		CHECK_EQ(r.status, 0x50);
		CHECK_EQ(r.len, 3 * 2048);
		for (int s = 0; s < 3; s++) {
			const uint8_t *p = r.data + s * 2048;

			ok &= p[0] == 5 + s && p[1] == 0 && p[100] == (((5 + s) * 7 + 1) & 0xff);
		}
		CHECK(ok);
	}
	{
		/* READ CD raw (2352): sync pattern and data at 16. */
		const uint8_t cdb[12] = {0xbe, 0, 0, 0, 0, 1, 0, 0, 1, 0xf8};

		atapi_cmd(f, cdb, 0xfffe, &r);
		CHECK_EQ(r.len, 2352);
		CHECK_EQ(r.data[1], 0xff);
		CHECK_EQ(r.data[15], 1);
		CHECK_EQ(r.data[16], 1);
	}
	{
		/* Past the end: ILLEGAL REQUEST / LBA out of range. */
		const uint8_t cdb[12] = {0x28, 0, 0, 0, 0x10, 0, 0, 0, 1};

		atapi_cmd(f, cdb, 0xfffe, &r);
		CHECK_EQ(r.status, 0x41);
		CHECK_EQ(r.sense_key, 5);
		request_sense(f, &key, &asc);
		CHECK_EQ(key, 5);
		CHECK_EQ(asc, 0x21);
	}
	{
		/* Unknown opcode: ILLEGAL REQUEST / invalid opcode. */
		const uint8_t cdb[12] = {0xff};

		atapi_cmd(f, cdb, 0xfffe, &r);
		CHECK_EQ(r.sense_key, 5);
		request_sense(f, &key, &asc);
		CHECK_EQ(asc, 0x20);
	}
	{
		/* READ TOC format 0, and MODE SENSE(10) capabilities. */
		const uint8_t toc[12] = {0x43, 0, 0, 0, 0, 0, 0, 0, 0xff};
		const uint8_t ms[12] = {0x5a, 0, 0x2a, 0, 0, 0, 0, 0, 0xff};
		const uint8_t gesn[12] = {0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8};
		const uint8_t cfg[12] = {0x46, 0, 0, 0, 0, 0, 0, 0, 0xff};

		atapi_cmd(f, toc, 0xfffe, &r);
		CHECK_EQ(r.len, 20);
		CHECK_EQ(r.data[1], 18);
		CHECK_EQ(r.data[14], 0xaa);
		atapi_cmd(f, ms, 0xfffe, &r);
		CHECK_EQ(r.len, 30);
		CHECK_EQ(r.data[8], 0x2a);
		atapi_cmd(f, gesn, 0xfffe, &r);
		CHECK_EQ(r.len, 8);
		CHECK_EQ(r.data[5], 2); /* media present */
		atapi_cmd(f, cfg, 0xfffe, &r);
		CHECK_EQ(r.data[7], 0x08); /* current profile CD-ROM */
	}
	{
		/* A zero byte count limit on a data command: ATA abort. */
		const uint8_t cdb[12] = {0x12, 0, 0, 0, 36};

		atapi_cmd(f, cdb, 0, &r);
		CHECK_EQ(r.status, 0x41);
		CHECK_EQ(r.error, 0x04);
	}
	fx_fini(f);
}

static void test_atapi_dma(void)
{
	struct fx f_, *f = &f_;
	const uint8_t cdb[12] = {0x28, 0, 0, 0, 0, 2, 0, 0, 2};
	uint8_t st;

	REQUIRE(fx_init(f, NULL, true));
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 4096);
	memset(ram(f, BUF_ADDR), 0, 8192);
	outb(P1 + R_DEV, 0);
	outb(BM_BASE + 8, 0);
	outb(BM_BASE + 8 + 2, 0x04);
	outl(BM_BASE + 8 + 4, PRD_ADDR);
	outb(P1 + R_ERROR, 0x01); /* DMA */
	outb(P1 + R_CMD, 0xa0);
	for (int i = 0; i < 6; i++)
		outw(P1, cdb[2 * i] | cdb[2 * i + 1] << 8);
	outb(BM_BASE + 8, 0x09);
	st = wait_bm(f, 1);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(inb(P1 + R_CMD), 0x50);
	CHECK_EQ(inb(P1 + R_NSECT) & 3, 3);
	CHECK_EQ(*ram(f, BUF_ADDR), 2);
	CHECK_EQ(*ram(f, BUF_ADDR + 2048), 3);
	CHECK_EQ(*ram(f, BUF_ADDR + 2048 + 100), (3 * 7 + 1) & 0xff);
	fx_fini(f);
}

/* Eject and insert from outside: NOT READY, then UNIT ATTENTION. */
static void test_media_change(void)
{
	struct fx f_, *f = &f_;
	static struct atapi_result r;
	const uint8_t tur[12] = {0};
	const uint8_t lock[12] = {0x1e, 0, 0, 0, 1};
	const uint8_t unlock[12] = {0x1e};
	const uint8_t eject[12] = {0x1b, 0, 0, 0, 0x02};
	struct vd_node *n;
	uint8_t key, asc;

	REQUIRE(fx_init(f, NULL, true));
	atapi_cmd(f, tur, 0, &r);
	CHECK_EQ(r.status, 0x50);
	/* Locked: the guest cannot eject, QMP eject gets -EINPROGRESS. */
	atapi_cmd(f, lock, 0, &r);
	CHECK(vd_blk_is_locked(f->cd));
	atapi_cmd(f, eject, 0, &r);
	CHECK_EQ(r.sense_key, 2);
	request_sense(f, &key, &asc);
	CHECK_EQ(asc, 0x53);
	CHECK_EQ(vd_blk_open_tray(f->cd, false), -EINPROGRESS);
	atapi_cmd(f, unlock, 0, &r);
	/* The guest ejects: tray open, not ready. */
	atapi_cmd(f, eject, 0, &r);
	CHECK_EQ(r.status, 0x50);
	CHECK(vd_blk_is_tray_open(f->cd));
	atapi_cmd(f, tur, 0, &r);
	CHECK_EQ(r.sense_key, 2);
	request_sense(f, &key, &asc);
	CHECK_EQ(asc, 0x3a);
	/* blockdev-change-medium: remove, insert, close. */
	CHECK_EQ(vd_blk_remove_medium(f->cd), 0);
	n = open_node(make_img("cd2.iso", 2 << 20, true), "raw", NULL, false);
	REQUIRE(n);
	CHECK_EQ(vd_blk_insert_medium(f->cd, n), 0);
	vd_node_unref(n);
	CHECK_EQ(vd_blk_close_tray(f->cd), 0);
	atapi_cmd(f, tur, 0, &r);
	CHECK_EQ(r.sense_key, 2); /* first: medium not present */
	atapi_cmd(f, tur, 0, &r);
	CHECK_EQ(r.sense_key, 6); /* then: unit attention */
	request_sense(f, &key, &asc);
	CHECK_EQ(key, 6);
	CHECK_EQ(asc, 0x28);
	atapi_cmd(f, tur, 0, &r);
	CHECK_EQ(r.status, 0x50);
	{
		const uint8_t cap[12] = {0x25};

		atapi_cmd(f, cap, 0xfffe, &r);
		CHECK_EQ(r.data[2] << 8 | r.data[3], (2 << 20) / 2048 - 1);
	}
	fx_fini(f);
}

/* Resets while requests are in flight: idle, and guest memory untouched. */
static void test_reset_during_dma(void)
{
	struct fx f_, *f = &f_;
	uint8_t buf[512];

	REQUIRE(fx_init(f, NULL, false));
	memset(buf, 0x11, sizeof(buf));
	for (int i = 0; i < 128; i++)
		CHECK_EQ(vd_node_pwrite(vd_blk_root(f->hd), i * 512, buf, 512, 0), 0);

	for (int kind = 0; kind < 3; kind++) {
		put_prd(f, 0, BUF_ADDR, 0x80000000u); /* 64 KiB, EOT */
		memset(ram(f, BUF_ADDR), 0xaa, 0x10000);
		outb(P0 + R_DEV, 0x40);
		outb(BM_BASE, 0);
		outb(BM_BASE + 2, 0x04);
		outl(BM_BASE + 4, PRD_ADDR);
		lba28(f, P0, 0, 128);
		outb(P0 + R_CMD, 0xc8);
		outb(BM_BASE, 0x09);
		CHECK_EQ(inb(BM_BASE + 2) & 1, 1); /* in flight */
		if (kind == 0)
			vd_piix3_ide_reset(f->ide); /* machine reset */
		else if (kind == 1)
			outb(CTL0, 0x04); /* SRST */
		else
			outb(BM_BASE, 0x00); /* clear START */
		for (int i = 0; i < 50; i++)
			vd_loop_run_once(loop, false);
		/* The dropped request has completed (not a guess with a
		 * sleep: a drain), and wrote nothing to guest memory. */
		vd_blk_drain(f->hd);
		bool untouched = true;

		for (int i = 0; i < 0x10000; i++)
			untouched &= *ram(f, BUF_ADDR + i) == 0xaa;
		CHECK(untouched);
		CHECK_EQ(inb(BM_BASE + 2) & 1, 0);
		CHECK_EQ(inb(CTL0) & 0x88, 0);
		outb(CTL0, 0);
		/* The device works afterwards. */
		put_prd(f, 0, BUF_ADDR, 0x80000000u | 512);
		if (kind == 0) {
			vd_pci_config_write(f->pci, DEVFN, 0x04, 0x05, 2);
		}
		CHECK_EQ(dma_request(f, 0xc8, 0, 1, false), 0x04);
		CHECK_EQ(*ram(f, BUF_ADDR), 0x11);
		inb(P0 + R_CMD);
	}
	fx_fini(f);
}

/* rerror=stop: the machine stops, the request is kept, restart retries. */
static void test_error_policy(void)
{
	struct fx f_, *f = &f_;
	uint8_t st;

	REQUIRE(fx_init(f,
			"inject-error.0.event=read,inject-error.0.errno=5,"
			"inject-error.0.once=on,inject-error.0.sector=8",
			false));
	vd_blk_set_on_error(f->hd, VD_BLK_ON_ERROR_STOP, VD_BLK_ON_ERROR_STOP);
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 512);
	outb(P0 + R_DEV, 0x40);
	outb(BM_BASE, 0);
	outb(BM_BASE + 2, 0x04);
	outl(BM_BASE + 4, PRD_ADDR);
	/* Sector 8: attaching the drive reads sector 0 (geometry guess). */
	lba28(f, P0, 8, 1);
	outb(P0 + R_CMD, 0xc8);
	outb(BM_BASE, 0x09);
	for (int i = 0; i < 1000 && !f->stops; i++)
		vd_loop_run_once(loop, true);
	CHECK_EQ(f->stops, 1);
	CHECK_EQ(inb(BM_BASE + 2) & 5, 1); /* still active */
	vd_piix3_ide_restart(f->ide);
	st = wait_bm(f, 0);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);

	/* report: ABRT + IRQ, BM not active. */
	vd_blk_set_on_error(f->hd, VD_BLK_ON_ERROR_REPORT, VD_BLK_ON_ERROR_REPORT);
	fx_fini(f);
	REQUIRE(fx_init(f, "inject-error.0.event=read,inject-error.0.errno=5", false));
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 512);
	st = dma_request(f, 0xc8, 0, 1, false);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(inb(P0 + R_CMD), 0x41);
	CHECK_EQ(inb(P0 + R_ERROR), 0x04);
	lba28(f, P0, 0, 1);
	outb(P0 + R_CMD, 0x20);
	CHECK_EQ(wait_ready(f, CTL0), 0x41);
	fx_fini(f);

	/* ignore: completes as if it worked; the guest gets zeroes, never
	 * stale host memory. */
	REQUIRE(fx_init(f,
			"inject-error.0.event=read,inject-error.0.errno=5,"
			"inject-error.0.sector=8",
			false));
	vd_blk_set_on_error(f->hd, VD_BLK_ON_ERROR_IGNORE, VD_BLK_ON_ERROR_IGNORE);
	{
		uint8_t b[512];

		memset(b, 0x77, sizeof(b)); /* what a successful read would give */
		CHECK_EQ(vd_node_pwrite(vd_blk_root(f->hd), 8 * 512, b, 512, 0), 0);
	}
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 512);
	memset(ram(f, BUF_ADDR), 0xee, 512);
	st = dma_request(f, 0xc8, 8, 1, false);
	CHECK_EQ(st, 0x04);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK_EQ(*ram(f, BUF_ADDR), 0);
	CHECK_EQ(*ram(f, BUF_ADDR + 511), 0);
	fx_fini(f);
}

/*
 * Reproducers for the classic IDE/ATAPI bugs (perf-anchors 6.3), one named
 * test each (tests/fuzz/corpus/ide/cve-* drive the same paths through the
 * fuzz target), and for the bug found with tests/fuzz/fuzz-ide.c.
 */

/* CVE-2015-5154: START STOP UNIT ends without a data phase; QEMU left DRQ
 * set, so data-port writes that followed ran past io_buffer.  They must be
 * ignored, and must not re-run the command. */
static void test_cve_2015_5154_start_stop_unit(void)
{
	struct fx f_, *f = &f_;
	const uint8_t ssu[12] = {0x1b, 0, 0, 0, 0x01};
	int raises;

	REQUIRE(fx_init(f, NULL, true));
	outb(P1 + R_DEV, 0);
	outb(P1 + R_LBAM, 0);
	outb(P1 + R_LBAH, 0);
	outb(P1 + R_CMD, 0xa0);
	for (int i = 0; i < 6; i++)
		outw(P1, ssu[2 * i] | ssu[2 * i + 1] << 8);
	CHECK_EQ(inb(0x376) & 0x88, 0); /* no BSY, no DRQ */
	CHECK_EQ(inb(P1 + R_CMD), 0x50); /* and the status read lowers IRQ 15 */
	CHECK_EQ(f->irq_level[1], 0);
	raises = f->irq_raises[1];
	for (int i = 0; i < 100000; i++)
		outw(P1, 0x1b1b);
	for (int i = 0; i < 1000; i++)
		outl(P1, 0x1b1b1b1b);
	CHECK_EQ(inb(P1 + R_CMD), 0x50);
	CHECK_EQ(f->irq_raises[1], raises); /* the packet never ran again */
	fx_fini(f);
}

/* CVE-2020-29443: READ(12) and READ CD with a huge LBA or length are
 * range-checked before any I/O (ILLEGAL REQUEST, LBA out of range). */
static void test_cve_2020_29443_atapi_range(void)
{
	struct fx f_, *f = &f_;
	static struct atapi_result r;
	const uint8_t rd12[12] = {0xa8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	const uint8_t rd12b[12] = {0xa8, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff};
	const uint8_t rdcd[12] = {0xbe, 0, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff, 0x10};
	const uint8_t rd10[12] = {0x28, 0, 0, 0, 0x07, 0xff, 0, 0, 2}; /* last block + 1 */
	const uint8_t inq[12] = {0x12, 0, 0, 0, 36};

	REQUIRE(fx_init(f, NULL, true));
	atapi_cmd(f, rd12, 0xfffe, &r);
	CHECK_EQ(r.sense_key, 5);
	CHECK_EQ(r.len, 0);
	atapi_cmd(f, rd12b, 0xfffe, &r);
	CHECK_EQ(r.sense_key, 5);
	atapi_cmd(f, rdcd, 0xfffe, &r);
	CHECK_EQ(r.sense_key, 5);
	atapi_cmd(f, rd10, 0xfffe, &r);
	CHECK_EQ(r.sense_key, 5);
	CHECK_EQ(r.len, 0);
	/* An odd byte count limit of 1 still progresses (no zero-size
	 * bursts, no hang). */
	atapi_cmd(f, inq, 1, &r);
	CHECK_EQ(r.status, 0x50);
	CHECK_EQ(r.len, 36);
	fx_fini(f);
}

/* CVE-2014-9718: a PRD table shorter than the transfer made QEMU loop
 * forever; it must end the command (BM status 0, no IRQ).  And a table
 * without EOT stops after one page of entries, entries outside RAM move
 * nothing. */
static void test_cve_2014_9718_short_prdt(void)
{
	struct fx f_, *f = &f_;
	uint8_t st;

	REQUIRE(fx_init(f, NULL, false));
	put_prd(f, 0, BUF_ADDR, 0x80000000u | 256);
	st = dma_request(f, 0xc8, 0, 2, false);
	CHECK_EQ(st, 0x00);
	CHECK_EQ(inb(P0 + R_CMD) & 0x88, 0);
	for (int i = 0; i < 600; i++)
		put_prd(f, i, 0xfffff000u, 0x200);
	st = dma_request(f, 0xc8, 0, 1, false);
	CHECK_EQ(st, 0x05);
	outb(BM_BASE, 0);
	CHECK_EQ(inb(P0 + R_CMD) & 0x89, 0);
	fx_fini(f);
}

/* CVE-2014-2894 was an off-by-one in QEMU's SMART log counter.  SMART
 * (B0h) is not implemented here: every subcommand is aborted cleanly. */
static void test_cve_2014_2894_smart_absent(void)
{
	struct fx f_, *f = &f_;
	static const uint8_t subcmds[] = {0xd0, 0xd1, 0xd4, 0xd5, 0xd8, 0xd9, 0xda, 0xdb};

	REQUIRE(fx_init(f, NULL, false));
	for (size_t i = 0; i < sizeof(subcmds); i++) {
		outb(P0 + R_DEV, 0);
		outb(P0 + R_LBAM, 0x4f);
		outb(P0 + R_LBAH, 0xc2);
		outb(P0 + R_ERROR, subcmds[i]);
		outb(P0 + R_NSECT, 0xff);
		outb(P0 + R_CMD, 0xb0);
		CHECK_EQ(inb(P0 + R_CMD), 0x41);
		CHECK_EQ(inb(P0 + R_ERROR), 0x04);
		CHECK_EQ(inw(P0), 0); /* no data phase */
	}
	fx_fini(f);
}

/*
 * Found while writing fuzz-ide (reviewing the retry path it drives), and
 * reproduced through it under LeakSanitizer with the input kept as
 * corpus/ide/crash-retry-held-request: rerror=stop keeps a failed PIO read
 * for a retry and clears BSY (as QEMU); a second command while the machine
 * is stopped replaced the kept request (leaked) and, after cont, both
 * completed the same command.  A drive holding a request is busy: the
 * command and task-file writes are ignored, and cont completes the first
 * read.
 */
static void test_fuzz_retry_held_request(void)
{
	struct fx f_, *f = &f_;
	uint8_t st;

	REQUIRE(fx_init(f,
			"inject-error.0.event=read,inject-error.0.errno=5,"
			"inject-error.0.once=on,inject-error.0.sector=8",
			false));
	vd_blk_set_on_error(f->hd, VD_BLK_ON_ERROR_STOP, VD_BLK_ON_ERROR_STOP);
	lba28(f, P0, 8, 1);
	outb(P0 + R_CMD, 0x20);
	for (int i = 0; i < 1000 && !f->stops; i++)
		vd_loop_run_once(loop, true);
	CHECK_EQ(f->stops, 1);
	/* A second READ SECTORS, and a task-file write, while stopped. */
	lba28(f, P0, 20, 1);
	CHECK_EQ(inb(P0 + R_LBAL), 8);
	outb(P0 + R_CMD, 0x20);
	for (int i = 0; i < 100; i++)
		vd_loop_run_once(loop, false);
	CHECK_EQ(f->stops, 1);
	/* cont: the kept read completes, one sector of data, then idle. */
	vd_piix3_ide_restart(f->ide);
	st = wait_ready(f, CTL0);
	CHECK_EQ(st, 0x58);
	for (int i = 0; i < 256; i++)
		inw(P0);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	CHECK_EQ(inb(P0 + R_LBAL), 9); /* the next sector of the first read */
	for (int i = 0; i < 100; i++)
		vd_loop_run_once(loop, false);
	CHECK_EQ(inb(P0 + R_CMD), 0x50);
	fx_fini(f);
}

/* Garbage through every port: no crash, no hang. */
static void test_port_fuzz(void)
{
	struct fx f_, *f = &f_;
	uint32_t x = 12345;

	REQUIRE(fx_init(f, NULL, true));
	for (int i = 0; i < 200000; i++) {
		x = x * 1103515245 + 12345;
		uint32_t r = x >> 8;
		static const uint32_t ports[] = {P0, P1, CTL0, 0x376, BM_BASE, BM_BASE + 8};
		uint32_t port = ports[r % 6] + ((r >> 3) & 7);
		unsigned size = 1u << ((r >> 6) % 3);

		if (r & (1u << 20))
			out(f, port, x, size);
		else
			in(f, port, size);
		/* Random PRD tables pointing anywhere. */
		if ((i & 1023) == 0)
			for (int k = 0; k < 8; k++)
				put_prd(f, k, x * (k + 1), x ^ (uint32_t)k);
		if ((i & 63) == 0)
			vd_loop_run_once(loop, false);
	}
	fx_fini(f);
	CHECK(1);
}

int main(void)
{
	vd_loop_new(&loop);
	vd_loop_set_current(loop);
	RUN(test_identify);
	RUN(test_pio_rw);
	RUN(test_lba48_multiple);
	RUN(test_dma);
	RUN(test_trim_flush);
	RUN(test_abort_reset_nodev);
	RUN(test_atapi);
	RUN(test_atapi_dma);
	RUN(test_media_change);
	RUN(test_reset_during_dma);
	RUN(test_error_policy);
	RUN(test_cve_2015_5154_start_stop_unit);
	RUN(test_cve_2020_29443_atapi_range);
	RUN(test_cve_2014_9718_short_prdt);
	RUN(test_cve_2014_2894_smart_absent);
	RUN(test_fuzz_retry_held_request);
	RUN(test_port_fuzz);
	vd_loop_free(loop);
	return test_finish();
}
