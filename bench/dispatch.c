/* SPDX-License-Identifier: MIT */
/*
 * Dispatch micro-benchmark: nanoseconds per access through
 * vd_address_space_rw() on the PC board, for port I/O (a trivial register at
 * 0x80 among the board's other ports), MMIO (a register region in the PCI
 * window among several others) and RAM, plus an unassigned read.  The
 * callbacks do almost nothing, so the numbers are the cost of the lookup,
 * the size rules and the call.
 *
 *	build/bench/dispatch [iterations]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <vdisk/machine.h>
#include <vdisk/memory.h>

static uint32_t reg;

static uint64_t reg_read(void *opaque, uint64_t addr, unsigned size)
{
	return reg;
}

static void reg_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	reg = (uint32_t)val;
}

static const struct vd_mem_ops reg_ops = {
	.read = reg_read,
	.write = reg_write,
	.valid_max = 8,
	.impl_max = 8,
};

static const struct vd_mem_ops byte_ops = {
	.read = reg_read,
	.write = reg_write,
	.impl_min = 1,
	.impl_max = 1,
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void run(const char *name, struct vd_address_space *as, uint64_t addr, unsigned len,
		bool is_write, long n)
{
	uint64_t buf = 0x12345678;
	double t0 = now_ns();

	for (long i = 0; i < n; i++)
		vd_address_space_rw(as, addr, &buf, len, is_write);
	printf("%s: %.1f ns\n", name, (now_ns() - t0) / (double)n);
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10 * 1000 * 1000;
	struct vd_machine_opts mo = {.ram_size = 64 << 20, .qtest_clock = true};
	struct vd_machine *m;
	struct vd_error err = {0};
	struct vd_mem_region *mr[40];
	int nr = 0;

	if (n <= 0) {
		fprintf(stderr, "usage: %s [iterations]\n", argv[0]);
		return 2;
	}
	if (vd_machine_new(&mo, &m, &err) < 0) {
		fprintf(stderr, "dispatch: %s\n", err.msg);
		return 1;
	}
	struct vd_address_space *io = vd_machine_io(m), *mem = vd_machine_memory(m);

	/* A populated map: 16 port blocks and 16 MMIO windows besides the
	 * board's own, so that the lookup has something to search. */
	for (int i = 0; i < 16; i++) {
		mr[nr] = vd_mem_region_new_io("ports", 8, &reg_ops, NULL);
		vd_address_space_map(io, 0x1000 + 0x100 * i, mr[nr++], 0);
		mr[nr] = vd_mem_region_new_io("mmio", 0x1000, &reg_ops, NULL);
		vd_address_space_map(mem, 0xfe000000 + 0x10000 * i, mr[nr++], 1);
	}
	mr[nr] = vd_mem_region_new_io("post", 1, &reg_ops, NULL);
	vd_address_space_map(io, 0x80, mr[nr++], 0);
	mr[nr] = vd_mem_region_new_io("bytes", 4, &byte_ops, NULL);
	vd_address_space_map(io, 0x84, mr[nr++], 0);

	printf("dispatch: %ld iterations each, %zu io ranges, %zu memory ranges\n", n,
	       vd_address_space_nr_ranges(io), vd_address_space_nr_ranges(mem));
	run("pio 8-bit read", io, 0x80, 1, false, n);
	run("pio 8-bit write", io, 0x80, 1, true, n);
	run("pio 32-bit read", io, 0x1800, 4, false, n);
	run("pio 32-bit read split into 4 byte calls", io, 0x84, 4, false, n);
	run("pio unassigned 8-bit read", io, 0x3000, 1, false, n);
	run("pio config mechanism #1 data read (0xCFC)", io, 0xcfc, 4, false, n);
	run("mmio 32-bit read", mem, 0xfe080010, 4, false, n);
	run("mmio 32-bit write", mem, 0xfe080010, 4, true, n);
	run("mmio 64-bit read", mem, 0xfe080010, 8, false, n);
	run("ram 8-byte read", mem, 0x100000, 8, false, n);
	run("ram 8-byte write", mem, 0x100000, 8, true, n);
	run("memory unassigned 32-bit read", mem, 0xd0000000, 4, false, n);
	for (int i = 0; i < nr; i++) {
		vd_mem_region_del_subregion(mr[i]);
		vd_mem_region_unref(mr[i]);
	}
	vd_machine_free(m);
	return 0;
}
