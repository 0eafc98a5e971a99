/* SPDX-License-Identifier: MIT */
/*
 * The cost of one IDE DMA request in process, without the test protocol:
 * the PC board of `vdisk machine` with a disk on the primary channel, driven
 * by direct port accesses as a guest driver would.  Per request: the task
 * file (count, LBA), START already set, then the timed part from the write
 * of READ DMA (C8h) or WRITE DMA (CAh) to the command register until the
 * IRQ 14 line rises (the block request, the host I/O, the copy through the
 * PRD list and the interrupt); then STOP, the status read that lowers the
 * line and the INT clear, as a driver's interrupt handler does.
 *
 *	build/bench/ide-dma [COUNT [IMAGE]]
 *
 * Rows: a null-co disk (no host I/O: the device and block-layer path
 * alone), and, with IMAGE (a raw file; the reads come from the page
 * cache), the file driver on io_uring and on the thread pool.  4 KiB
 * requests (8 sectors, one PRD), sequential over the first 32 MiB.
 * Prints mean, median and 99th percentile in ns, and requests per second.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vdisk/irq.h>
#include <vdisk/loop.h>
#include <vdisk/machine.h>
#include <vdisk/memory.h>

#define BM_BASE 0xc000
#define IDE_DEVFN 0x09
#define PRD_ADDR 0x1000
#define BUF_ADDR 0x100000
#define SECTORS 8
#define SPAN_SECTORS (32u << 11) /* 32 MiB */

static int irq14;

static void on_irq(void *opaque, int pin, int level)
{
	if (pin == 14)
		irq14 = level;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void outp(struct vd_address_space *io, uint32_t port, uint32_t v, unsigned size)
{
	vd_address_space_write(io, port, &v, size);
}

static uint32_t inp(struct vd_address_space *io, uint32_t port, unsigned size)
{
	uint32_t v = 0;

	vd_address_space_read(io, port, &v, size);
	return v;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int run(const char *name, const char *drive, long count, bool write, struct vd_loop *loop)
{
	struct vd_machine_opts mo = {.ram_size = 64 << 20, .qtest_clock = true, .loop = loop};
	struct vd_machine *m;
	struct vd_error err = {0};
	struct vd_address_space *io;
	uint8_t *ram;
	double *t, sum = 0, t_all;
	uint32_t prd[2] = {BUF_ADDR, 0x80000000u | SECTORS * 512};
	int ret = 1;

	t = calloc((size_t)count, sizeof(*t));
	if (!t || vd_machine_new(&mo, &m, &err) < 0) {
		fprintf(stderr, "ide-dma: %s\n", t ? err.msg : "out of memory");
		free(t);
		return 1;
	}
	if (vd_machine_add_drive(m, drive, NULL, &err) < 0) {
		fprintf(stderr, "ide-dma: %s: %s\n", drive, err.msg);
		goto out;
	}
	io = vd_machine_io(m);
	ram = vd_machine_ram(m)->host;
	vd_irq_pins_set_listener(vd_machine_irq_pins(m), on_irq, NULL);
	/* BAR4, I/O decode and bus mastering; the PRD table; START. */
	outp(io, 0xcf8, 0x80000000u | IDE_DEVFN << 8 | 0x20, 4);
	outp(io, 0xcfc, BM_BASE | 1, 4);
	outp(io, 0xcf8, 0x80000000u | IDE_DEVFN << 8 | 0x04, 4);
	outp(io, 0xcfc, 0x05, 2);
	memcpy(ram + PRD_ADDR, prd, sizeof(prd));
	outp(io, BM_BASE + 4, PRD_ADDR, 4);

	t_all = now_ns();
	for (long i = 0; i < count; i++) {
		uint32_t lba = (uint32_t)(i * SECTORS % SPAN_SECTORS);
		double t0;
		uint8_t st;

		outp(io, BM_BASE, write ? 0x01 : 0x09, 1);
		outp(io, 0x1f2, SECTORS, 1);
		outp(io, 0x1f3, lba & 0xff, 1);
		outp(io, 0x1f4, (lba >> 8) & 0xff, 1);
		outp(io, 0x1f5, (lba >> 16) & 0xff, 1);
		outp(io, 0x1f6, 0x40 | ((lba >> 24) & 0xf), 1);
		t0 = now_ns();
		outp(io, 0x1f7, write ? 0xca : 0xc8, 1);
		while (!irq14)
			vd_loop_run_once(loop, true);
		t[i] = now_ns() - t0;
		sum += t[i];
		outp(io, BM_BASE, 0x00, 1);
		st = (uint8_t)inp(io, 0x1f7, 1); /* lowers IRQ 14 */
		if (st != 0x50 || (inp(io, BM_BASE + 2, 1) & 0x07) != 0x04) {
			fprintf(stderr, "ide-dma: %s: request %ld ended with status 0x%02x\n", name,
				i, st);
			goto out;
		}
		outp(io, BM_BASE + 2, 0x04, 1);
	}
	t_all = now_ns() - t_all;
	qsort(t, (size_t)count, sizeof(*t), cmp_double);
	printf("%-34s %8ld %10.0f %10.0f %10.0f %10.0f\n", name, count, sum / count, t[count / 2],
	       t[count * 99 / 100], count / (t_all / 1e9));
	ret = 0;
out:
	vd_irq_pins_set_listener(vd_machine_irq_pins(m), NULL, NULL);
	vd_machine_free(m);
	free(t);
	return ret;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 200000;
	const char *img = argc > 2 ? argv[2] : NULL;
	struct vd_loop *loop;
	char drive[512];
	int ret = 0;

	if (count <= 0 || argc > 3) {
		fprintf(stderr, "usage: %s [COUNT [RAW-IMAGE]]\n", argv[0]);
		return 2;
	}
	if (vd_loop_new(&loop) < 0)
		return 1;
	vd_loop_set_current(loop);
	printf("ide-dma: 4 KiB DMA requests, command-register write to IRQ 14 (ns)\n");
	printf("%-34s %8s %10s %10s %10s %10s\n", "disk, op", "requests", "mean", "median", "p99",
	       "req/s");
	ret |= run("null-co, read", "if=ide,format=raw,file.driver=null-co,file.size=64M", count,
		   false, loop);
	ret |= run("null-co, write", "if=ide,format=raw,file.driver=null-co,file.size=64M", count,
		   true, loop);
	for (int e = 0; img && e < 2; e++) {
		const char *engine = e ? "threads" : "io_uring";
		char name[64];

		snprintf(drive, sizeof(drive),
			 "if=ide,format=raw,cache=writeback,file.driver=file,file.filename=%s,"
			 "file.aio=%s",
			 img, engine);
		snprintf(name, sizeof(name), "raw file (%s), read", engine);
		ret |= run(name, drive, count, false, loop);
	}
	vd_loop_free(loop);
	return ret;
}
