/* SPDX-License-Identifier: MIT */
/*
 * The dispatcher (memory/): access splitting, unassigned space, overlap
 * priority, region removal while in use, DMA bounds; and the pieces of the
 * board that sit on it (PCI BARs, PIRQ routing, MSI-X, fw_cfg).
 */
#include <errno.h>
#include <stdint.h>
#include <time.h>

#include <vdisk/machine.h>
#include <vdisk/memory.h>
#include <vdisk/pci.h>

#include "tests/lib/test.h"

/* A device that logs every callback. */
struct logdev {
	int nr_reads, nr_writes;
	uint64_t last_addr[16];
	unsigned last_size[16];
	uint64_t last_val[16];
	uint8_t regs[64];
	/* removal while in use */
	struct vd_address_space *as;
	struct vd_mem_region *self;
	bool unmap_self;
};

static uint64_t log_read(void *opaque, uint64_t addr, unsigned size)
{
	struct logdev *d = opaque;
	uint64_t v = 0;

	if (d->nr_reads < 16) {
		d->last_addr[d->nr_reads] = addr;
		d->last_size[d->nr_reads] = size;
	}
	d->nr_reads++;
	for (unsigned i = 0; i < size && addr + i < sizeof(d->regs); i++)
		v |= (uint64_t)d->regs[addr + i] << (i * 8);
	if (d->unmap_self && d->self) {
		/* Unmap and drop the last outside reference from inside the
		 * callback: the region must live until the access ends. */
		vd_address_space_unmap(d->as, d->self);
		vd_mem_region_unref(d->self);
		d->self = NULL;
	}
	return v;
}

static void log_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct logdev *d = opaque;

	if (d->nr_writes < 16) {
		d->last_addr[d->nr_writes] = addr;
		d->last_size[d->nr_writes] = size;
		d->last_val[d->nr_writes] = val;
	}
	d->nr_writes++;
	for (unsigned i = 0; i < size && addr + i < sizeof(d->regs); i++)
		d->regs[addr + i] = (uint8_t)(val >> (i * 8));
}

static const struct vd_mem_ops byte_ops = {
	.read = log_read,
	.write = log_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 1,
};

static const struct vd_mem_ops quad_ops = {
	.read = log_read,
	.write = log_write,
	.valid_min = 1,
	.valid_max = 8,
	.impl_min = 1,
	.impl_max = 8,
};

static const struct vd_mem_ops dword_only_ops = {
	.read = log_read,
	.write = log_write,
	.valid_min = 4,
	.valid_max = 4,
	.impl_min = 4,
	.impl_max = 4,
};

static const struct vd_mem_ops wide_impl_ops = {
	.read = log_read,
	.write = log_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 4,
	.impl_max = 4,
};

static void test_split_impl_max_1(void)
{
	struct vd_address_space *as = vd_address_space_new("t", 0x10000);
	struct logdev d = {0};
	struct vd_mem_region *mr = vd_mem_region_new_io("dev", 16, &byte_ops, &d);
	uint8_t buf[4] = {0x11, 0x22, 0x33, 0x44}, out[4];

	REQUIRE(as && mr);
	CHECK_EQ(vd_address_space_map(as, 0x100, mr, 0), 0);
	/* A 4-byte write: four 1-byte calls, little-endian. */
	CHECK_EQ(vd_address_space_write(as, 0x100, buf, 4), 0);
	CHECK_EQ(d.nr_writes, 4);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(d.last_addr[i], i);
		CHECK_EQ(d.last_size[i], 1);
		CHECK_EQ(d.last_val[i], buf[i]);
	}
	/* And a 4-byte read combines four byte reads. */
	CHECK_EQ(vd_address_space_read(as, 0x100, out, 4), 0);
	CHECK_EQ(d.nr_reads, 4);
	CHECK(memcmp(out, buf, 4) == 0);
	vd_mem_region_unref(mr);
	vd_address_space_free(as);
}

static void test_split_8_and_unaligned(void)
{
	struct vd_address_space *as = vd_address_space_new("t", 0);
	struct logdev d = {0}, d4 = {0};
	struct vd_mem_region *q = vd_mem_region_new_io("quad", 32, &quad_ops, &d);
	struct vd_mem_region *w = vd_mem_region_new_io("dword", 32, &byte_ops, &d4);
	uint8_t buf[8] = {1, 2, 3, 4, 5, 6, 7, 8}, out[8];

	REQUIRE(as && q && w);
	CHECK_EQ(vd_address_space_map(as, 0x1000, q, 0), 0);
	CHECK_EQ(vd_address_space_map(as, 0x2000, w, 0), 0);
	/* 8 bytes to a region that takes 8: one call. */
	CHECK_EQ(vd_address_space_write(as, 0x1000, buf, 8), 0);
	CHECK_EQ(d.nr_writes, 1);
	CHECK_EQ(d.last_size[0], 8);
	CHECK_EQ(d.last_val[0], 0x0807060504030201ull);
	/* 8 bytes to a region with valid max 4: two 4-byte accesses, each
	 * split into bytes by impl max 1. */
	CHECK_EQ(vd_address_space_write(as, 0x2000, buf, 8), 0);
	CHECK_EQ(d4.nr_writes, 8);
	CHECK_EQ(vd_address_space_read(as, 0x2000, out, 8), 0);
	CHECK(memcmp(out, buf, 8) == 0);
	/* Unaligned: 4 bytes at offset 1 of the quad region are split at
	 * natural alignment: 1 + 2 + 1. */
	d.nr_writes = 0;
	CHECK_EQ(vd_address_space_write(as, 0x1001, buf, 4), 0);
	CHECK_EQ(d.nr_writes, 3);
	CHECK_EQ(d.last_addr[0], 1);
	CHECK_EQ(d.last_size[0], 1);
	CHECK_EQ(d.last_addr[1], 2);
	CHECK_EQ(d.last_size[1], 2);
	CHECK_EQ(d.last_val[1], 0x0302);
	CHECK_EQ(d.last_addr[2], 4);
	CHECK_EQ(d.last_size[2], 1);
	CHECK_EQ(vd_address_space_read(as, 0x1001, out, 4), 0);
	CHECK(memcmp(out, buf, 4) == 0);
	vd_mem_region_unref(q);
	vd_mem_region_unref(w);
	vd_address_space_free(as);
}

static void test_impl_widen_and_valid_min(void)
{
	struct vd_address_space *as = vd_address_space_new("t", 0x10000);
	struct logdev d = {0}, d2 = {0};
	struct vd_mem_region *wide = vd_mem_region_new_io("wide", 8, &wide_impl_ops, &d);
	struct vd_mem_region *strict = vd_mem_region_new_io("strict", 8, &dword_only_ops, &d2);
	uint8_t b;
	uint32_t v;

	REQUIRE(as && wide && strict);
	CHECK_EQ(vd_address_space_map(as, 0x10, wide, 0), 0);
	CHECK_EQ(vd_address_space_map(as, 0x20, strict, 0), 0);
	memcpy(d.regs, "\xaa\xbb\xcc\xdd", 4);
	/* A byte read of a region that implements only dwords: one 4-byte
	 * call, the low byte extracted. */
	CHECK_EQ(vd_address_space_read(as, 0x10, &b, 1), 0);
	CHECK_EQ(d.nr_reads, 1);
	CHECK_EQ(d.last_size[0], 4);
	CHECK_EQ(b, 0xaa);
	/* A byte access below valid_min is refused: all ones, no call. */
	CHECK_EQ(vd_address_space_read(as, 0x20, &b, 1), -EFAULT);
	CHECK_EQ(b, 0xff);
	CHECK_EQ(d2.nr_reads, 0);
	b = 0;
	CHECK_EQ(vd_address_space_write(as, 0x20, &b, 1), -EFAULT);
	CHECK_EQ(d2.nr_writes, 0);
	v = 0x12345678;
	CHECK_EQ(vd_address_space_write(as, 0x20, &v, 4), 0);
	CHECK_EQ(d2.nr_writes, 1);
	vd_mem_region_unref(wide);
	vd_mem_region_unref(strict);
	vd_address_space_free(as);
}

static void test_unassigned(void)
{
	struct vd_address_space *as = vd_address_space_new("t", 0x10000);
	uint8_t b = 0;
	uint16_t w = 0;
	uint32_t l = 0;
	uint64_t q = 0;

	REQUIRE(as);
	CHECK_EQ(vd_address_space_read(as, 0x80, &b, 1), -EFAULT);
	CHECK_EQ(b, 0xff);
	CHECK_EQ(vd_address_space_read(as, 0x80, &w, 2), -EFAULT);
	CHECK_EQ(w, 0xffff);
	CHECK_EQ(vd_address_space_read(as, 0x80, &l, 4), -EFAULT);
	CHECK_EQ(l, 0xffffffffu);
	CHECK_EQ(vd_address_space_read(as, 0x80, &q, 8), -EFAULT);
	CHECK(q == UINT64_MAX);
	/* Past the end of a 64 KiB space, and writes dropped without effect. */
	CHECK_EQ(vd_address_space_read(as, 0x10000, &l, 4), -EFAULT);
	CHECK_EQ(vd_address_space_write(as, 0x80, &l, 4), -EFAULT);
	CHECK_EQ(vd_address_space_nr_ranges(as), 0);
	/* The memory space: 2^64 bytes, an access at the very top wraps. */
	vd_address_space_free(as);
	as = vd_address_space_new("m", 0);
	REQUIRE(as);
	CHECK_EQ(vd_address_space_read(as, UINT64_MAX - 1, &l, 4), -EFAULT);
	CHECK_EQ(l, 0xffffffffu);
	vd_address_space_free(as);
}

static void test_overlap_priority(void)
{
	struct vd_address_space *as = vd_address_space_new("t", 0x10000);
	struct logdev lo = {0}, hi = {0}, same = {0};
	struct vd_mem_region *a = vd_mem_region_new_io("low", 0x100, &byte_ops, &lo);
	struct vd_mem_region *b = vd_mem_region_new_io("high", 0x10, &byte_ops, &hi);
	struct vd_mem_region *c = vd_mem_region_new_io("same", 0x10, &byte_ops, &same);
	uint8_t v;

	REQUIRE(as && a && b && c);
	/* Added in the "wrong" order: priority decides, not order. */
	CHECK_EQ(vd_address_space_map(as, 0x1000, b, 1), 0);
	CHECK_EQ(vd_address_space_map(as, 0x0f80, a, 0), 0);
	CHECK_EQ(vd_address_space_nr_ranges(as), 3);
	vd_address_space_read(as, 0x1000, &v, 1);
	vd_address_space_read(as, 0x100f, &v, 1);
	CHECK_EQ(hi.nr_reads, 2);
	CHECK_EQ(lo.nr_reads, 0);
	vd_address_space_read(as, 0x1010, &v, 1);
	vd_address_space_read(as, 0x0fff, &v, 1);
	CHECK_EQ(lo.nr_reads, 2);
	CHECK_EQ(lo.last_addr[0], 0x90); /* offset in the low region */
	/* Equal priority: the one added last wins. */
	CHECK_EQ(vd_address_space_map(as, 0x1008, c, 1), 0);
	vd_address_space_read(as, 0x1008, &v, 1);
	CHECK_EQ(same.nr_reads, 1);
	vd_address_space_read(as, 0x1007, &v, 1);
	CHECK_EQ(hi.nr_reads, 3);
	/* Unmapping the top one shows what was below. */
	vd_address_space_unmap(as, b);
	vd_address_space_unmap(as, c);
	vd_address_space_read(as, 0x1000, &v, 1);
	CHECK_EQ(lo.nr_reads, 3);
	CHECK_EQ(vd_address_space_nr_ranges(as), 1);
	/* A region has one parent. */
	CHECK_EQ(vd_address_space_map(as, 0, a, 0), -EBUSY);
	vd_mem_region_unref(a);
	vd_mem_region_unref(b);
	vd_mem_region_unref(c);
	vd_address_space_free(as);
}

static void test_containers(void)
{
	struct vd_address_space *as = vd_address_space_new("t", 0);
	struct logdev d = {0};
	struct vd_mem_region *box = vd_mem_region_new_container("bar", 0x1000);
	struct vd_mem_region *in = vd_mem_region_new_io("in", 0x10, &byte_ops, &d);
	uint8_t v = 0x5a;

	REQUIRE(as && box && in);
	CHECK_EQ(vd_mem_region_add_subregion(box, 0x800, in, 0), 0);
	CHECK_EQ(vd_address_space_map(as, 0xe0000000, box, 0), 0);
	CHECK_EQ(vd_address_space_write(as, 0xe0000804, &v, 1), 0);
	CHECK_EQ(d.nr_writes, 1);
	CHECK_EQ(d.last_addr[0], 4);
	/* Holes of a container are unassigned. */
	CHECK_EQ(vd_address_space_read(as, 0xe0000000, &v, 1), -EFAULT);
	/* Moving the container moves its children. */
	vd_mem_region_set_address(box, 0xf0000000);
	CHECK_EQ(vd_address_space_write(as, 0xf0000805, &v, 1), 0);
	CHECK_EQ(d.last_addr[1], 5);
	/* A child must fit. */
	struct vd_mem_region *big = vd_mem_region_new_io("x", 0x10, &byte_ops, &d);

	CHECK_EQ(vd_mem_region_add_subregion(box, 0xff8, big, 0), -EINVAL);
	vd_mem_region_unref(big);
	vd_address_space_unmap(as, box);
	vd_mem_region_unref(box);
	vd_mem_region_unref(in);
	vd_address_space_free(as);
}

static void test_removal_in_use(void)
{
	struct vd_address_space *as = vd_address_space_new("t", 0x10000);
	struct logdev d = {0};
	struct vd_mem_region *mr = vd_mem_region_new_io("self", 16, &byte_ops, &d);
	uint32_t v = 0;

	REQUIRE(as && mr);
	CHECK_EQ(vd_address_space_map(as, 0x40, mr, 0), 0);
	memcpy(d.regs, "\x01\x02\x03\x04", 4);
	d.as = as;
	d.self = mr;
	d.unmap_self = true;
	/* The first byte callback unmaps the region and drops its last
	 * reference; the rest of this access still reaches it (the view the
	 * access started with holds it), and nothing is freed under us (ASan
	 * runs this too). */
	CHECK_EQ(vd_address_space_read(as, 0x40, &v, 4), 0);
	CHECK_EQ(d.nr_reads, 4);
	CHECK_EQ(v, 0x04030201);
	/* Later accesses find it gone. */
	CHECK_EQ(vd_address_space_read(as, 0x40, &v, 4), -EFAULT);
	CHECK_EQ(v, 0xffffffffu);
	CHECK_EQ(d.nr_reads, 4);
	vd_address_space_free(as);
}

static void test_ram_and_dma(void)
{
	struct vd_guest_ram ram;
	struct vd_address_space *as = vd_address_space_new("m", 0);
	struct vd_mem_region *r0, *r1, *io;
	struct logdev d = {0};
	uint8_t buf[64], out[64];

	REQUIRE(as);
	REQUIRE(vd_guest_ram_alloc(&ram, 1 << 20) == 0);
	CHECK(ram.fd >= 0);
	r0 = vd_mem_region_new_ram("lo", 0x80000, ram.host);
	r1 = vd_mem_region_new_ram("hi", 0x80000, (uint8_t *)ram.host + 0x80000);
	io = vd_mem_region_new_io("mmio", 0x1000, &byte_ops, &d);
	REQUIRE(r0 && r1 && io);
	CHECK_EQ(vd_address_space_map(as, 0, r0, 0), 0);
	CHECK_EQ(vd_address_space_map(as, 0x80000, r1, 0), 0);
	CHECK_EQ(vd_address_space_map(as, 0x100000, io, 0), 0);
	for (int i = 0; i < 64; i++)
		buf[i] = (uint8_t)(i * 7);

	/* RAM read/write through the dispatcher, across the two regions. */
	CHECK_EQ(vd_address_space_write(as, 0x7ffe0, buf, 64), 0);
	CHECK(memcmp((uint8_t *)ram.host + 0x7ffe0, buf, 64) == 0);
	CHECK_EQ(vd_address_space_read(as, 0x7ffe0, out, 64), 0);
	CHECK(memcmp(out, buf, 64) == 0);

	/* DMA within RAM, also across adjacent RAM regions. */
	memset(out, 0, sizeof(out));
	CHECK_EQ(vd_dma_read(as, 0x7ffe0, out, 64), 0);
	CHECK(memcmp(out, buf, 64) == 0);
	CHECK_EQ(vd_dma_write(as, 0x10, buf, 64), 0);
	CHECK(vd_dma_map(as, 0x10, 64) == (uint8_t *)ram.host + 0x10);
	CHECK(vd_dma_map(as, 0x80010, 16) == (uint8_t *)ram.host + 0x80010);
	/* Mapping needs one contiguous region. */
	CHECK(vd_dma_map(as, 0x7fff0, 32) == NULL);

	/* Crossing the end of RAM into MMIO: refused, nothing copied, the
	 * device never called. */
	memset(out, 0xee, sizeof(out));
	CHECK_EQ(vd_dma_read(as, 0xffff0, out, 32), -EFAULT);
	CHECK_EQ(out[0], 0xee);
	CHECK_EQ(vd_dma_write(as, 0xffff0, buf, 32), -EFAULT);
	CHECK_EQ(d.nr_reads + d.nr_writes, 0);
	CHECK(vd_dma_map(as, 0xffff0, 32) == NULL);
	CHECK(vd_dma_map(as, 0x100000, 4) == NULL);
	/* Into a hole. */
	CHECK_EQ(vd_dma_read(as, 0x200000, out, 1), -EFAULT);
	/* Wrap-around at 2^64. */
	CHECK_EQ(vd_dma_read(as, UINT64_MAX - 3, out, 8), -EFAULT);
	CHECK_EQ(vd_dma_read(as, UINT64_MAX, out, 2), -EFAULT);
	CHECK(vd_dma_map(as, UINT64_MAX, 2) == NULL);
	CHECK(vd_dma_map(as, 0x10, UINT64_MAX) == NULL);
	CHECK_EQ(vd_dma_read(as, 0x10, out, UINT64_MAX), -EFAULT);
	/* Zero length: copies succeed and do nothing; a map is refused. */
	CHECK_EQ(vd_dma_read(as, 0x200000, out, 0), 0);
	CHECK_EQ(vd_dma_write(as, UINT64_MAX, buf, 0), 0);
	CHECK(vd_dma_map(as, 0x10, 0) == NULL);
	/* The last byte of RAM is fine, one more is not. */
	CHECK_EQ(vd_dma_read(as, 0xfffff, out, 1), 0);
	CHECK_EQ(vd_dma_read(as, 0xfffff, out, 2), -EFAULT);

	vd_address_space_unmap(as, r0);
	vd_address_space_unmap(as, r1);
	vd_address_space_unmap(as, io);
	vd_mem_region_unref(r0);
	vd_mem_region_unref(r1);
	vd_mem_region_unref(io);
	vd_address_space_free(as);
	vd_guest_ram_free(&ram);
}

static uint32_t port_val;
static int port_byte_reads;

static uint32_t port_read16(void *opaque, uint32_t port)
{
	return 0xbeef;
}

static uint32_t port_read8(void *opaque, uint32_t port)
{
	port_byte_reads++;
	return port & 0xff;
}

static void port_write8(void *opaque, uint32_t port, uint32_t val)
{
	port_val = port_val << 8 | val;
}

static const struct vd_portio test_ports[] = {
	{0, 8, 1, port_read8, port_write8},
	{0, 1, 2, port_read16, NULL},
	{0, 0, 0, NULL, NULL},
};

static void test_portio(void)
{
	struct vd_address_space *io = vd_address_space_new("io", 0x10000);
	struct vd_mem_region *mr;
	uint16_t w;
	uint32_t l;

	REQUIRE(io);
	mr = vd_portio_register(io, 0x1f0, test_ports, NULL, "ide-ports");
	REQUIRE(mr);
	/* A word handler exists at +0. */
	vd_address_space_read(io, 0x1f0, &w, 2);
	CHECK_EQ(w, 0xbeef);
	/* None at +2: split into byte handlers, little-endian. */
	vd_address_space_read(io, 0x1f2, &w, 2);
	CHECK_EQ(w, 0xf3f2);
	/* A dword read: no dword handler, bytes exist: four byte calls. */
	port_byte_reads = 0;
	vd_address_space_read(io, 0x1f4, &l, 4);
	CHECK_EQ(l, 0xf7f6f5f4);
	CHECK_EQ(port_byte_reads, 4);
	/* Words written as bytes. */
	w = 0x1234;
	vd_address_space_write(io, 0x1f2, &w, 2);
	CHECK_EQ(port_val, 0x3412);
	vd_address_space_unmap(io, mr);
	vd_mem_region_unref(mr);
	vd_address_space_free(io);
}

/* ---- the board ---- */

static uint32_t cfg_read(struct vd_machine *m, int devfn, int off, unsigned size)
{
	struct vd_address_space *io = vd_machine_io(m);
	uint32_t addr = 0x80000000u | (uint32_t)devfn << 8 | (off & 0xfc), v = 0;

	vd_address_space_write(io, 0xcf8, &addr, 4);
	vd_address_space_read(io, 0xcfc + (off & 3), &v, size);
	return v;
}

static void cfg_write(struct vd_machine *m, int devfn, int off, uint32_t v, unsigned size)
{
	struct vd_address_space *io = vd_machine_io(m);
	uint32_t addr = 0x80000000u | (uint32_t)devfn << 8 | (off & 0xfc);

	vd_address_space_write(io, 0xcf8, &addr, 4);
	vd_address_space_write(io, 0xcfc + (off & 3), &v, size);
}

static int pin_changes[24];
static int pin_level[24];

static void pin_listener(void *opaque, int pin, int level)
{
	pin_changes[pin]++;
	pin_level[pin] = level;
}

static void test_pc_pci(void)
{
	struct vd_machine_opts mo = {.ram_size = 16 << 20, .qtest_clock = true};
	struct vd_machine *m;
	struct vd_error err = {0};
	struct vd_pci_device *dev;
	struct logdev d = {0};
	struct vd_pci_device_info info = {
		.name = "testdev",
		.vendor_id = 0x1b36,
		.device_id = 0x0005,
		.class_code = 0x00ff00,
		.interrupt_pin = 1,
	};
	struct vd_mem_region *iobar, *mmio, *msix_bar;
	int devfn;
	uint8_t v8;

	REQUIRE(vd_machine_new(&mo, &m, &err) == 0);
	CHECK_EQ(cfg_read(m, 0, 0, 4), 0x12378086);
	CHECK_EQ(cfg_read(m, 8, 0, 4), 0x70008086);
	CHECK_EQ(cfg_read(m, 8, 0x0e, 1), 0x80);
	CHECK_EQ(cfg_read(m, 8, 0x60, 4), 0x80808080);
	/* 01.1 is kept for the PIIX3 IDE. */
	CHECK_EQ(vd_pc_add_pci_device(m, VD_PCI_DEVFN(1, 1), &info, &dev, &err), -EBUSY);
	vd_error_clear(&err);
	REQUIRE(vd_pc_add_pci_device(m, -1, &info, &dev, &err) == 0);
	devfn = vd_pci_device_devfn(dev);
	CHECK_EQ(devfn, VD_PCI_DEVFN(2, 0));
	iobar = vd_mem_region_new_io("testdev-io", 0x20, &byte_ops, &d);
	mmio = vd_mem_region_new_io("testdev-mmio", 0x1000, &quad_ops, &d);
	msix_bar = vd_mem_region_new_container("testdev-msix", 0x1000);
	REQUIRE(iobar && mmio && msix_bar);
	CHECK_EQ(vd_pci_register_bar(dev, 0, VD_PCI_BAR_IO, iobar), 0);
	CHECK_EQ(vd_pci_register_bar(dev, 1, VD_PCI_BAR_MEM32, mmio), 0);
	CHECK_EQ(vd_pci_register_bar(dev, 2, VD_PCI_BAR_MEM64, msix_bar), 0);
	CHECK_EQ(vd_msix_init(dev, 4, msix_bar, 2, 0, 0x800, 0), 0);
	CHECK_EQ(vd_pci_find_capability(dev, VD_PCI_CAP_ID_MSIX), 0x40);

	/* BAR sizing (PCI 3.0 6.2.5.1). */
	cfg_write(m, devfn, 0x10, 0xffffffff, 4);
	CHECK_EQ(cfg_read(m, devfn, 0x10, 4), 0xffffffe1);
	cfg_write(m, devfn, 0x14, 0xffffffff, 4);
	CHECK_EQ(cfg_read(m, devfn, 0x14, 4), 0xfffff000);
	cfg_write(m, devfn, 0x18, 0xffffffff, 4);
	cfg_write(m, devfn, 0x1c, 0xffffffff, 4);
	CHECK_EQ(cfg_read(m, devfn, 0x18, 4), 0xfffff004);
	CHECK_EQ(cfg_read(m, devfn, 0x1c, 4), 0xffffffff);
	/* Programmed but not enabled: not mapped. */
	cfg_write(m, devfn, 0x10, 0xc000, 4);
	cfg_write(m, devfn, 0x14, 0xe0000000, 4);
	cfg_write(m, devfn, 0x18, 0xe0001000, 4);
	cfg_write(m, devfn, 0x1c, 0, 4);
	CHECK(vd_pci_bar_addr(dev, 0) == VD_PCI_BAR_UNMAPPED);
	vd_address_space_read(vd_machine_io(m), 0xc000, &v8, 1);
	CHECK_EQ(v8, 0xff);
	/* Command register: I/O and memory on. */
	cfg_write(m, devfn, 0x04, 0x0007, 2);
	CHECK_EQ(vd_pci_bar_addr(dev, 0), 0xc000);
	CHECK_EQ(vd_pci_bar_addr(dev, 1), 0xe0000000);
	CHECK_EQ(vd_pci_bar_addr(dev, 2), 0xe0001000);
	d.regs[3] = 0x77;
	vd_address_space_read(vd_machine_io(m), 0xc003, &v8, 1);
	CHECK_EQ(v8, 0x77);
	vd_address_space_read(vd_machine_memory(m), 0xe0000003, &v8, 1);
	CHECK_EQ(v8, 0x77);
	/* Moving a BAR. */
	cfg_write(m, devfn, 0x10, 0xc100, 4);
	CHECK_EQ(vd_pci_bar_addr(dev, 0), 0xc100);
	vd_address_space_read(vd_machine_io(m), 0xc000, &v8, 1);
	CHECK_EQ(v8, 0xff);
	/* Memory off unmaps memory BARs only. */
	cfg_write(m, devfn, 0x04, 0x0005, 2);
	CHECK(vd_pci_bar_addr(dev, 1) == VD_PCI_BAR_UNMAPPED);
	CHECK_EQ(vd_pci_bar_addr(dev, 0), 0xc100);
	cfg_write(m, devfn, 0x04, 0x0007, 2);

	/* INTx through PIRQ routing: slot 2 INTA is PIRQB (0x61). */
	vd_irq_pins_set_listener(vd_machine_irq_pins(m), pin_listener, NULL);
	vd_pci_set_irq(dev, 1);
	CHECK_EQ(pin_changes[11], 0); /* routing disabled at reset */
	CHECK(cfg_read(m, devfn, 0x06, 2) & VD_PCI_STATUS_INTERRUPT);
	cfg_write(m, VD_PCI_DEVFN(1, 0), 0x61, 11, 1);
	CHECK_EQ(pin_level[11], 1);
	CHECK_EQ(pin_changes[11], 1);
	/* Disabling INTx in the command register lowers it. */
	cfg_write(m, devfn, 0x04, 0x0407, 2);
	CHECK_EQ(pin_level[11], 0);
	cfg_write(m, devfn, 0x04, 0x0007, 2);
	CHECK_EQ(pin_level[11], 1);
	/* Rerouting moves the level. */
	cfg_write(m, VD_PCI_DEVFN(1, 0), 0x61, 10, 1);
	CHECK_EQ(pin_level[11], 0);
	CHECK_EQ(pin_level[10], 1);
	vd_pci_set_irq(dev, 0);
	CHECK_EQ(pin_level[10], 0);

	/* MSI-X: entry 1 aims at RAM 0x2000 with data 0xcafe. */
	struct vd_address_space *mem = vd_machine_memory(m);
	uint32_t e[4] = {0x2000, 0, 0xcafe, 0}, got = 0, ctl;

	CHECK_EQ(vd_address_space_write(mem, 0xe0001000 + 16, e, 16), 0);
	vd_msix_notify(dev, 1); /* MSI-X not enabled: pending */
	CHECK_EQ(vd_dma_read(mem, 0x2000, &got, 4), 0);
	CHECK_EQ(got, 0);
	vd_address_space_read(mem, 0xe0001800, &got, 4);
	CHECK_EQ(got, 2); /* PBA bit 1 */
	ctl = cfg_read(m, devfn, 0x42, 2);
	CHECK_EQ(ctl, 3); /* table size 4 */
	cfg_write(m, devfn, 0x42, 0x8000 | ctl, 2); /* enable: pending goes out */
	CHECK_EQ(vd_dma_read(mem, 0x2000, &got, 4), 0);
	CHECK_EQ(got, 0xcafe);
	vd_address_space_read(mem, 0xe0001800, &got, 4);
	CHECK_EQ(got, 0);
	got = 0;
	vd_dma_write(mem, 0x2000, &got, 4);
	vd_msix_notify(dev, 1);
	vd_dma_read(mem, 0x2000, &got, 4);
	CHECK_EQ(got, 0xcafe);

	/* Bus-master DMA needs COMMAND.MASTER. */
	CHECK_EQ(vd_pci_dma_read(dev, 0x2000, &got, 4), 0);
	cfg_write(m, devfn, 0x04, 0x0003, 2);
	CHECK_EQ(vd_pci_dma_read(dev, 0x2000, &got, 4), -EFAULT);
	CHECK(vd_pci_dma_map(dev, 0x2000, 4) == NULL);

	/* fw_cfg: signature and RAM size. */
	uint16_t key = 0;
	char sig[5] = {0};
	uint64_t ramsz = 0;

	vd_address_space_write(vd_machine_io(m), 0x510, &key, 2);
	for (int i = 0; i < 4; i++)
		vd_address_space_read(vd_machine_io(m), 0x511, &sig[i], 1);
	CHECK_STR(sig, "QEMU");
	key = 3;
	vd_address_space_write(vd_machine_io(m), 0x510, &key, 2);
	for (int i = 0; i < 8; i++) {
		uint8_t b;

		vd_address_space_read(vd_machine_io(m), 0x511, &b, 1);
		ramsz |= (uint64_t)b << (i * 8);
	}
	CHECK_EQ(ramsz, 16 << 20);

	vd_machine_free(m);
	vd_mem_region_unref(iobar);
	vd_mem_region_unref(mmio);
	vd_mem_region_unref(msix_bar);
}

static int fired[3];
static struct vd_machine *clock_m;
static int64_t fired_at[3];

static void timer_cb(void *opaque)
{
	int i = (int)(intptr_t)opaque;

	fired[i]++;
	fired_at[i] = vd_machine_clock_ns(clock_m);
}

static void test_virtual_clock(void)
{
	struct vd_machine_opts mo = {.ram_size = 1 << 20, .qtest_clock = true};
	struct vd_machine *m;
	struct vd_error err = {0};
	struct vd_vtimer *t0, *t1;

	REQUIRE(vd_machine_new(&mo, &m, &err) == 0);
	clock_m = m;
	t0 = vd_vtimer_new(m, timer_cb, (void *)0);
	t1 = vd_vtimer_new(m, timer_cb, (void *)1);
	REQUIRE(t0 && t1);
	CHECK_EQ(vd_machine_clock_ns(m), 0);
	vd_vtimer_mod(t1, 500);
	vd_vtimer_mod(t0, 200);
	CHECK_EQ(vd_machine_next_deadline(m), 200);
	CHECK_EQ(vd_machine_clock_warp(m, 100), 100);
	CHECK_EQ(fired[0] + fired[1], 0);
	CHECK_EQ(vd_machine_clock_warp(m, 1000), 1000);
	CHECK_EQ(fired[0], 1);
	CHECK_EQ(fired[1], 1);
	CHECK_EQ(fired_at[0], 200); /* each at its own deadline */
	CHECK_EQ(fired_at[1], 500);
	/* Backwards does nothing. */
	CHECK_EQ(vd_machine_clock_warp(m, 10), 1000);
	vd_vtimer_mod(t0, 2000);
	vd_vtimer_del(t0);
	CHECK_EQ(vd_machine_next_deadline(m), -1);
	vd_vtimer_free(t0);
	vd_vtimer_free(t1);
	vd_machine_free(m);
}

static void test_realtime_clock(void)
{
	struct vd_loop *loop;
	struct vd_machine_opts mo = {.ram_size = 1 << 20};
	struct vd_machine *m;
	struct vd_error err = {0};
	struct vd_vtimer *t;
	int64_t start, frozen;

	REQUIRE(vd_loop_new(&loop) == 0);
	vd_loop_set_current(loop);
	REQUIRE(vd_machine_new(&mo, &m, &err) == 0);
	clock_m = m;
	/* Not a qtest machine: the clock runs by itself, warping is refused. */
	CHECK_EQ(vd_machine_clock_warp(m, 1000), -ENOTSUP);
	t = vd_vtimer_new(m, timer_cb, (void *)2);
	REQUIRE(t);
	start = vd_machine_clock_ns(m);
	vd_vtimer_mod(t, start + 2000000); /* 2 ms */
	for (int i = 0; i < 1000 && !fired[2]; i++)
		vd_loop_run_once(loop, true);
	CHECK_EQ(fired[2], 1);
	CHECK(fired_at[2] >= start + 2000000);
	/* Stopped, the clock stands still and timers wait. */
	vd_machine_stop(m);
	CHECK_STR(vd_machine_run_state(m), "paused");
	frozen = vd_machine_clock_ns(m);
	vd_vtimer_mod(t, frozen + 1000000);
	for (int i = 0; i < 3; i++)
		vd_loop_run_once(loop, false);
	struct timespec ts = {0, 3000000};

	nanosleep(&ts, NULL);
	vd_loop_run_once(loop, false);
	CHECK_EQ(vd_machine_clock_ns(m), frozen);
	CHECK_EQ(fired[2], 1);
	vd_machine_cont(m);
	for (int i = 0; i < 1000 && fired[2] < 2; i++)
		vd_loop_run_once(loop, true);
	CHECK_EQ(fired[2], 2);
	vd_vtimer_free(t);
	vd_machine_free(m);
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
}

int main(void)
{
	RUN(test_split_impl_max_1);
	RUN(test_split_8_and_unaligned);
	RUN(test_impl_widen_and_valid_min);
	RUN(test_unassigned);
	RUN(test_overlap_priority);
	RUN(test_containers);
	RUN(test_removal_in_use);
	RUN(test_ram_and_dma);
	RUN(test_portio);
	RUN(test_pc_pci);
	RUN(test_virtual_clock);
	RUN(test_realtime_clock);
	return test_finish();
}
