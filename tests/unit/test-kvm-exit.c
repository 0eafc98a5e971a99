/* SPDX-License-Identifier: MIT */
/*
 * The KVM front end without /dev/kvm: vd_kvm_handle_exit() on synthesised
 * struct kvm_run exits in a heap buffer laid out as KVM's vCPU mapping on x86
 * (the kvm_run page, the PIO data page at KVM_PIO_PAGE_OFFSET, the coalesced
 * MMIO ring page), against a real board: fw_cfg, PCI configuration
 * mechanism #1, RAM, unassigned space, isa-debug-exit and the debug console.
 * Malformed exits (bad sizes, data outside the mapping) must fail cleanly;
 * a canary after the mapping catches any write past it.  Also the payload
 * loader and vd_kvm_new's error paths.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include <vdisk/loop.h>
#include <vdisk/machine.h>

#include <vdisk/fw_cfg.h>
#include <vdisk/kvm.h>
#include "tests/lib/test.h"

#ifndef KVM_PIO_PAGE_OFFSET
#define KVM_PIO_PAGE_OFFSET 1 /* x86's; other hosts' headers lack it */
#endif
#define PAGE 4096
#define RUN_SIZE (3 * PAGE) /* KVM_GET_VCPU_MMAP_SIZE on x86 */
#define PIO_OFFSET (KVM_PIO_PAGE_OFFSET * PAGE)
#define CANARY 0xa5
#define CANARY_SIZE 64

struct fixture {
	struct vd_loop *loop;
	struct vd_machine *m;
	uint8_t *buf; /* RUN_SIZE + CANARY_SIZE */
	struct kvm_run *run;
	struct vd_error err;
};

static int fixture_init(struct fixture *f, uint64_t ram_size)
{
	struct vd_machine_opts mo = {.ram_size = ram_size, .qtest_clock = true};

	memset(f, 0, sizeof(*f));
	if (vd_loop_new(&f->loop) < 0)
		return -1;
	vd_loop_set_current(f->loop);
	mo.loop = f->loop;
	if (vd_machine_new(&mo, &f->m, &f->err) < 0)
		return -1;
	f->buf = malloc(RUN_SIZE + CANARY_SIZE);
	if (!f->buf)
		return -1;
	memset(f->buf, 0, RUN_SIZE);
	memset(f->buf + RUN_SIZE, CANARY, CANARY_SIZE);
	f->run = (struct kvm_run *)f->buf;
	return 0;
}

static bool canary_intact(struct fixture *f)
{
	for (int i = 0; i < CANARY_SIZE; i++) {
		if (f->buf[RUN_SIZE + i] != CANARY)
			return false;
	}
	return true;
}

static void fixture_fini(struct fixture *f)
{
	CHECK(!f->buf || canary_intact(f));
	free(f->buf);
	vd_machine_free(f->m);
	vd_loop_set_current(NULL);
	if (f->loop)
		vd_loop_free(f->loop);
}

/* A port exit as KVM lays it out; @data: count * size bytes in or out. */
static int io_exit(struct fixture *f, uint8_t dir, uint8_t size, uint16_t port, uint32_t count,
		   void *data)
{
	uint8_t *page = f->buf + PIO_OFFSET;
	int ret;

	f->run->exit_reason = KVM_EXIT_IO;
	f->run->io.direction = dir;
	f->run->io.size = size;
	f->run->io.port = port;
	f->run->io.count = count;
	f->run->io.data_offset = PIO_OFFSET;
	if (dir == KVM_EXIT_IO_OUT)
		memcpy(page, data, (size_t)size * count);
	else
		memset(page, 0x5c, (size_t)size * count);
	vd_error_clear(&f->err);
	ret = vd_kvm_handle_exit(f->m, f->run, RUN_SIZE, &f->err);
	if (dir == KVM_EXIT_IO_IN && ret >= 0)
		memcpy(data, page, (size_t)size * count);
	return ret;
}

static uint32_t in(struct fixture *f, uint8_t size, uint16_t port)
{
	uint32_t v = 0;

	CHECK_EQ(io_exit(f, KVM_EXIT_IO_IN, size, port, 1, &v), VD_KVM_CONTINUE);
	return v;
}

static int out(struct fixture *f, uint8_t size, uint16_t port, uint32_t v)
{
	return io_exit(f, KVM_EXIT_IO_OUT, size, port, 1, &v);
}

static int mmio_exit(struct fixture *f, uint64_t addr, void *data, uint32_t len, bool is_write)
{
	int ret;

	f->run->exit_reason = KVM_EXIT_MMIO;
	f->run->mmio.phys_addr = addr;
	f->run->mmio.len = len;
	f->run->mmio.is_write = is_write;
	memset(f->run->mmio.data, 0x5c, sizeof(f->run->mmio.data));
	if (is_write)
		memcpy(f->run->mmio.data, data, len);
	vd_error_clear(&f->err);
	ret = vd_kvm_handle_exit(f->m, f->run, RUN_SIZE, &f->err);
	if (!is_write && ret >= 0)
		memcpy(data, f->run->mmio.data, len);
	return ret;
}

static int reason_exit(struct fixture *f, uint32_t reason)
{
	f->run->exit_reason = reason;
	vd_error_clear(&f->err);
	return vd_kvm_handle_exit(f->m, f->run, RUN_SIZE, &f->err);
}

/* ---- port I/O ---- */

static void test_io_pci_config(void)
{
	struct fixture f;

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	/* Configuration mechanism #1: a dword at 0xCF8, then each size at
	 * 0xCFC-0xCFF (host bridge 8086:1237, PIIX3 8086:7000). */
	CHECK_EQ(out(&f, 4, 0xcf8, 0x80000000), VD_KVM_CONTINUE);
	CHECK_EQ(in(&f, 4, 0xcf8), 0x80000000);
	CHECK_EQ(in(&f, 4, 0xcfc), 0x12378086);
	CHECK_EQ(in(&f, 2, 0xcfc), 0x8086);
	CHECK_EQ(in(&f, 2, 0xcfe), 0x1237);
	CHECK_EQ(in(&f, 1, 0xcfd), 0x80);
	CHECK_EQ(out(&f, 4, 0xcf8, 0x80000800), VD_KVM_CONTINUE);
	CHECK_EQ(in(&f, 4, 0xcfc), 0x70008086);
	/* A byte write to 0xCF8 does not set CONFIG_ADDRESS. */
	CHECK_EQ(out(&f, 1, 0xcf8, 0), VD_KVM_CONTINUE);
	CHECK_EQ(in(&f, 4, 0xcfc), 0x70008086);
	fixture_fini(&f);
}

static void test_io_fw_cfg_string(void)
{
	struct fixture f;
	char sig[5] = {0};
	uint8_t ram[8];
	uint64_t ram_size = 0;

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	/* outw selects; "rep insb" reads the item: count 4, one port. */
	CHECK_EQ(out(&f, 2, 0x510, FW_CFG_SIGNATURE), VD_KVM_CONTINUE);
	CHECK_EQ(io_exit(&f, KVM_EXIT_IO_IN, 1, 0x511, 4, sig), VD_KVM_CONTINUE);
	CHECK_STR(sig, "QEMU");
	CHECK_EQ(out(&f, 2, 0x510, FW_CFG_RAM_SIZE), VD_KVM_CONTINUE);
	CHECK_EQ(io_exit(&f, KVM_EXIT_IO_IN, 1, 0x511, 8, ram), VD_KVM_CONTINUE);
	for (int i = 0; i < 8; i++)
		ram_size |= (uint64_t)ram[i] << (8 * i);
	CHECK_EQ(ram_size, 16 << 20);
	/* Past the item's end fw_cfg reads 0. */
	CHECK_EQ(in(&f, 1, 0x511), 0);
	fixture_fini(&f);
}

static void test_io_unassigned(void)
{
	struct fixture f;
	uint16_t w[3];

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	CHECK_EQ(in(&f, 1, 0x300), 0xff);
	CHECK_EQ(in(&f, 2, 0x300), 0xffff);
	CHECK_EQ(in(&f, 4, 0x300), 0xffffffff);
	CHECK_EQ(out(&f, 1, 0x300, 1), VD_KVM_CONTINUE);
	CHECK_EQ(out(&f, 2, 0x300, 1), VD_KVM_CONTINUE);
	CHECK_EQ(out(&f, 4, 0x300, 1), VD_KVM_CONTINUE);
	CHECK_EQ(io_exit(&f, KVM_EXIT_IO_IN, 2, 0x300, 3, w), VD_KVM_CONTINUE);
	CHECK(w[0] == 0xffff && w[1] == 0xffff && w[2] == 0xffff);
	/* A dword at the last port runs past the 64 KiB port space. */
	CHECK_EQ(in(&f, 4, 0xffff), 0xffffffff);
	CHECK_EQ(out(&f, 4, 0xfffe, 0), VD_KVM_CONTINUE);
	fixture_fini(&f);
}

static void test_io_string_out(void)
{
	struct fixture f;
	const char *log = test_path("debugcon.log");
	uint32_t addrs[2] = {0x80000000, 0x80000800};
	char got[16] = {0};
	int fd;

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	fd = open(log, O_RDWR | O_CREAT | O_TRUNC, 0644);
	REQUIRE(fd >= 0);
	REQUIRE(vd_machine_add_debugcon(f.m, 0xe9, fd, &f.err) == 0);
	CHECK_EQ(vd_machine_add_debugcon(f.m, 0xe9, fd, &f.err), -EBUSY);
	/* "rep outsb" of 5 bytes to the console; it reads back 0xe9. */
	CHECK_EQ(io_exit(&f, KVM_EXIT_IO_OUT, 1, 0xe9, 5, "hello"), VD_KVM_CONTINUE);
	CHECK_EQ(in(&f, 1, 0xe9), 0xe9);
	CHECK_EQ(pread(fd, got, sizeof(got) - 1, 0), 5);
	CHECK_STR(got, "hello");
	/* "rep outsl" of two addresses to 0xCF8: each element is one access
	 * at the same port, so the last one selects. */
	CHECK_EQ(io_exit(&f, KVM_EXIT_IO_OUT, 4, 0xcf8, 2, addrs), VD_KVM_CONTINUE);
	CHECK_EQ(in(&f, 4, 0xcfc), 0x70008086);
	fixture_fini(&f);
	close(fd);
}

static void test_io_debug_exit(void)
{
	struct fixture f;
	uint8_t codes[3] = {4, 5, 6};

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	REQUIRE(vd_machine_add_debug_exit(f.m, 0xf4, 4, &f.err) == 0);
	CHECK_EQ(vd_machine_add_debug_exit(f.m, 0x501, 2, &f.err), -EBUSY);
	CHECK_EQ(vd_machine_guest_exit_status(f.m), -1);
	CHECK_EQ(in(&f, 1, 0xf4), 0);
	/* QEMU: exit((val << 1) | 1). */
	CHECK_EQ(out(&f, 1, 0xf4, 0), VD_KVM_STOP);
	CHECK_EQ(vd_machine_guest_exit_status(f.m), 1);
	/* The first request wins. */
	CHECK_EQ(out(&f, 1, 0xf7, 9), VD_KVM_STOP);
	CHECK_EQ(vd_machine_guest_exit_status(f.m), 1);
	fixture_fini(&f);

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	REQUIRE(vd_machine_add_debug_exit(f.m, 0xf4, 4, &f.err) == 0);
	/* A string OUT stops at the element that exited. */
	CHECK_EQ(io_exit(&f, KVM_EXIT_IO_OUT, 1, 0xf4, 3, codes), VD_KVM_STOP);
	CHECK_EQ(vd_machine_guest_exit_status(f.m), 9);
	fixture_fini(&f);

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	REQUIRE(vd_machine_add_debug_exit(f.m, 0xf4, 4, &f.err) == 0);
	/* What exit() leaves of (0x7f << 1) | 1 = 0xff; an outl. */
	CHECK_EQ(out(&f, 4, 0xf4, 0x7f), VD_KVM_STOP);
	CHECK_EQ(vd_machine_guest_exit_status(f.m), 0xff);
	fixture_fini(&f);

	/* Ports outside the space are refused. */
	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	CHECK_EQ(vd_machine_add_debug_exit(f.m, 0xffff, 2, &f.err), -EINVAL);
	CHECK_EQ(vd_machine_add_debug_exit(f.m, 0xf4, 0, &f.err), -EINVAL);
	fixture_fini(&f);
}

/* The largest string IN that fits exactly: the last byte of the mapping. */
static void test_io_fills_mapping(void)
{
	struct fixture f;
	uint32_t count = (RUN_SIZE - PIO_OFFSET) / 4;
	uint8_t *data = malloc((size_t)count * 4);

	REQUIRE(data);
	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	CHECK_EQ(io_exit(&f, KVM_EXIT_IO_IN, 4, 0x300, count, data), VD_KVM_CONTINUE);
	CHECK_EQ(data[0], 0xff);
	CHECK_EQ(data[(size_t)count * 4 - 1], 0xff);
	CHECK(canary_intact(&f));
	fixture_fini(&f);
	free(data);
}

/* ---- MMIO ---- */

static void test_mmio_ram(void)
{
	struct fixture f;
	const struct vd_guest_ram *ram;
	uint8_t w[8] = {1, 2, 3, 4, 5, 6, 7, 8}, r[8];
	uint64_t end;

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	ram = vd_machine_ram(f.m);
	CHECK_EQ(mmio_exit(&f, 0x1000, w, 8, true), VD_KVM_CONTINUE);
	CHECK(memcmp((uint8_t *)ram->host + 0x1000, w, 8) == 0);
	memset(r, 0, sizeof(r));
	CHECK_EQ(mmio_exit(&f, 0x1002, r, 4, false), VD_KVM_CONTINUE);
	CHECK(memcmp(r, w + 2, 4) == 0);
	for (uint32_t len = 1; len <= 8; len++) {
		memset(r, 0, sizeof(r));
		CHECK_EQ(mmio_exit(&f, 0x1000, r, len, false), VD_KVM_CONTINUE);
		CHECK(memcmp(r, w, len) == 0);
	}
	/* Across the end of RAM: the RAM part is copied, the rest reads all
	 * ones and a write there goes nowhere. */
	end = ram->size;
	memset((uint8_t *)ram->host + end - 4, 0x11, 4);
	CHECK_EQ(mmio_exit(&f, end - 4, r, 8, false), VD_KVM_CONTINUE);
	CHECK(r[0] == 0x11 && r[3] == 0x11 && r[4] == 0xff && r[7] == 0xff);
	CHECK_EQ(mmio_exit(&f, end - 4, w, 8, true), VD_KVM_CONTINUE);
	CHECK(memcmp((uint8_t *)ram->host + end - 4, w, 4) == 0);
	fixture_fini(&f);
}

static void test_mmio_unassigned(void)
{
	struct fixture f;
	uint8_t r[8], w[8] = {0};

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	CHECK_EQ(mmio_exit(&f, 0xd0000000, r, 8, false), VD_KVM_CONTINUE);
	for (int i = 0; i < 8; i++)
		CHECK_EQ(r[i], 0xff);
	CHECK_EQ(mmio_exit(&f, 0xd0000000, w, 8, true), VD_KVM_CONTINUE);
	/* The reset-vector ROM is a KVM slot, not in the address space: a
	 * write to the read-only slot comes here and is dropped. */
	CHECK_EQ(mmio_exit(&f, 0xfffffff0, w, 4, true), VD_KVM_CONTINUE);
	/* Wrapping past 2^64 wraps (the dispatcher's rule), no crash. */
	CHECK_EQ(mmio_exit(&f, UINT64_MAX - 3, r, 8, false), VD_KVM_CONTINUE);
	CHECK_EQ(r[0], 0xff);
	fixture_fini(&f);
}

/* ---- malformed exits ---- */

static void check_io_fails(struct fixture *f, uint8_t dir, uint8_t size, uint32_t count,
			   uint64_t offset)
{
	f->run->exit_reason = KVM_EXIT_IO;
	f->run->io.direction = dir;
	f->run->io.size = size;
	f->run->io.port = 0x300;
	f->run->io.count = count;
	f->run->io.data_offset = offset;
	vd_error_clear(&f->err);
	CHECK_EQ(vd_kvm_handle_exit(f->m, f->run, RUN_SIZE, &f->err), -EINVAL);
	CHECK(strstr(f->err.msg, "KVM_EXIT_IO") != NULL);
	CHECK(canary_intact(f));
}

static void test_bad_io(void)
{
	struct fixture f;

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	/* sizes other than 1, 2, 4 */
	check_io_fails(&f, KVM_EXIT_IO_IN, 0, 1, PIO_OFFSET);
	check_io_fails(&f, KVM_EXIT_IO_IN, 3, 1, PIO_OFFSET);
	check_io_fails(&f, KVM_EXIT_IO_OUT, 8, 1, PIO_OFFSET);
	check_io_fails(&f, KVM_EXIT_IO_IN, 255, 1, PIO_OFFSET);
	/* direction */
	check_io_fails(&f, 2, 1, 1, PIO_OFFSET);
	/* count 0, or more than fits */
	check_io_fails(&f, KVM_EXIT_IO_IN, 1, 0, PIO_OFFSET);
	check_io_fails(&f, KVM_EXIT_IO_IN, 4, UINT32_MAX, PIO_OFFSET);
	check_io_fails(&f, KVM_EXIT_IO_IN, 4, (RUN_SIZE - PIO_OFFSET) / 4 + 1, PIO_OFFSET);
	check_io_fails(&f, KVM_EXIT_IO_IN, 1, RUN_SIZE - PIO_OFFSET + 1, PIO_OFFSET);
	/* data_offset outside the mapping, straddling its end, wrapping, or
	 * inside the kvm_run header */
	check_io_fails(&f, KVM_EXIT_IO_IN, 1, 1, RUN_SIZE);
	check_io_fails(&f, KVM_EXIT_IO_IN, 2, 1, RUN_SIZE - 1);
	check_io_fails(&f, KVM_EXIT_IO_IN, 4, 1, RUN_SIZE - 3);
	check_io_fails(&f, KVM_EXIT_IO_OUT, 4, 2, UINT64_MAX - 3);
	check_io_fails(&f, KVM_EXIT_IO_IN, 1, 1, UINT64_MAX);
	check_io_fails(&f, KVM_EXIT_IO_IN, 1, 1, 0);
	check_io_fails(&f, KVM_EXIT_IO_IN, 1, 1, sizeof(struct kvm_run) - 1);
	/* The last byte of the mapping is fine. */
	f.run->io.size = 1;
	f.run->io.count = 1;
	f.run->io.data_offset = RUN_SIZE - 1;
	CHECK_EQ(vd_kvm_handle_exit(f.m, f.run, RUN_SIZE, &f.err), VD_KVM_CONTINUE);
	CHECK_EQ(f.buf[RUN_SIZE - 1], 0xff);
	/* A mapping too small for struct kvm_run, or none. */
	vd_error_clear(&f.err);
	CHECK_EQ(vd_kvm_handle_exit(f.m, f.run, sizeof(struct kvm_run) - 1, &f.err), -EINVAL);
	CHECK_EQ(vd_kvm_handle_exit(f.m, NULL, RUN_SIZE, NULL), -EINVAL);
	CHECK(canary_intact(&f));
	fixture_fini(&f);
}

static void test_bad_mmio(void)
{
	struct fixture f;
	uint32_t bad_len[] = {0, 9, 16, UINT32_MAX};

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
		f.run->exit_reason = KVM_EXIT_MMIO;
		f.run->mmio.phys_addr = 0x1000;
		f.run->mmio.len = bad_len[i];
		f.run->mmio.is_write = 0;
		vd_error_clear(&f.err);
		CHECK_EQ(vd_kvm_handle_exit(f.m, f.run, RUN_SIZE, &f.err), -EINVAL);
		CHECK(strstr(f.err.msg, "KVM_EXIT_MMIO") != NULL);
	}
	f.run->mmio.len = 4;
	f.run->mmio.is_write = 2;
	CHECK_EQ(vd_kvm_handle_exit(f.m, f.run, RUN_SIZE, &f.err), -EINVAL);
	CHECK(canary_intact(&f));
	fixture_fini(&f);
}

/* ---- other exit reasons ---- */

static void test_exit_reasons(void)
{
	struct fixture f;

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	CHECK_EQ(reason_exit(&f, KVM_EXIT_INTR), VD_KVM_CONTINUE);
	CHECK_EQ(reason_exit(&f, KVM_EXIT_HLT), -ECANCELED);
	CHECK(strstr(f.err.msg, "KVM_EXIT_HLT") != NULL);
	CHECK_EQ(reason_exit(&f, KVM_EXIT_SHUTDOWN), -ESHUTDOWN);
	CHECK(strstr(f.err.msg, "triple") != NULL);
	f.run->fail_entry.hardware_entry_failure_reason = 0x21;
	CHECK_EQ(reason_exit(&f, KVM_EXIT_FAIL_ENTRY), -ENOEXEC);
	CHECK(strstr(f.err.msg, "0x21") != NULL);
	f.run->internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
	f.run->internal.ndata = 0;
	CHECK_EQ(reason_exit(&f, KVM_EXIT_INTERNAL_ERROR), -EIO);
	CHECK(strstr(f.err.msg, "emulation failure") != NULL);
	/* ndata past data[16] is not followed. */
	f.run->internal.suberror = 1234;
	f.run->internal.ndata = UINT32_MAX;
	f.run->internal.data[0] = 0xabc;
	CHECK_EQ(reason_exit(&f, KVM_EXIT_INTERNAL_ERROR), -EIO);
	CHECK(strstr(f.err.msg, "16 data words") != NULL);
	CHECK_EQ(reason_exit(&f, KVM_EXIT_SYSTEM_EVENT), -ESHUTDOWN);
	CHECK_EQ(reason_exit(&f, KVM_EXIT_EXCEPTION), -EIO);
	CHECK_EQ(reason_exit(&f, KVM_EXIT_UNKNOWN), -ENOSYS);
	CHECK_EQ(reason_exit(&f, KVM_EXIT_IRQ_WINDOW_OPEN), -ENOSYS);
	CHECK(strstr(f.err.msg, "IRQ_WINDOW_OPEN") != NULL);
	CHECK_EQ(reason_exit(&f, 9999), -ENOSYS);
	CHECK_EQ(reason_exit(&f, UINT32_MAX), -ENOSYS);
	CHECK(strstr(f.err.msg, "4294967295") != NULL);
	fixture_fini(&f);
}

/* ---- the payload loader and setup errors ---- */

static int write_file(const char *path, const uint8_t *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = len ? write(fd, data, len) : 0;
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

static void test_firmware_load(void)
{
	struct fixture f;
	struct vd_kvm_firmware fw;
	const size_t big = 192 << 10;
	uint8_t *img = malloc(big), probe[16];
	const char *p64 = test_path("bios64.bin"), *p192 = test_path("bios192.bin");
	const char *pbad = test_path("bios-odd.bin"), *pempty = test_path("bios-empty.bin");
	const struct vd_guest_ram *ram;

	REQUIRE(img);
	for (size_t i = 0; i < big; i++)
		img[i] = (uint8_t)(i % 251);
	REQUIRE(write_file(p64, img, 64 << 10) == 0);
	REQUIRE(write_file(p192, img, big) == 0);
	REQUIRE(write_file(pbad, img, 1000) == 0);
	REQUIRE(write_file(pempty, img, 0) == 0);

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
	ram = vd_machine_ram(f.m);
	CHECK_EQ(vd_kvm_firmware_load(f.m, p64, &fw, &f.err), 0);
	CHECK_EQ(fw.size, 64 << 10);
	CHECK_EQ(fw.gpa, 0xffff0000u);
	CHECK(fw.host && memcmp(fw.host, img, 64 << 10) == 0);
	/* The reset vector's 16 bytes at F000:FFF0 in the low copy too. */
	CHECK(memcmp((uint8_t *)ram->host + 0xffff0, img + 0xfff0, 16) == 0);
	CHECK_EQ(vd_address_space_read(vd_machine_memory(f.m), 0xf0000, probe, 16), 0);
	CHECK(memcmp(probe, img, 16) == 0);
	vd_kvm_firmware_free(&fw);
	CHECK(fw.host == NULL);

	/* Larger than 128 KiB: its last 128 KiB end at 1 MiB. */
	CHECK_EQ(vd_kvm_firmware_load(f.m, p192, &fw, &f.err), 0);
	CHECK_EQ(fw.gpa, 0xfffd0000u);
	CHECK(memcmp((uint8_t *)ram->host + 0xe0000, img + (64 << 10), 128 << 10) == 0);
	vd_kvm_firmware_free(&fw);

	CHECK_EQ(vd_kvm_firmware_load(f.m, pbad, &fw, &f.err), -EINVAL);
	CHECK(strstr(f.err.msg, "64 KiB") != NULL);
	CHECK(fw.host == NULL);
	vd_error_clear(&f.err);
	CHECK_EQ(vd_kvm_firmware_load(f.m, pempty, &fw, &f.err), -EINVAL);
	vd_error_clear(&f.err);
	CHECK_EQ(vd_kvm_firmware_load(f.m, test_path("missing.bin"), &fw, &f.err), -ENOENT);
	vd_error_clear(&f.err);
	CHECK_EQ(vd_kvm_firmware_load(f.m, test_tmpdir(), &fw, &f.err), -EINVAL);
	fixture_fini(&f);

	/* Less than 1 MiB of RAM has no room for the low copy. */
	REQUIRE(fixture_init(&f, 512 << 10) == 0);
	CHECK_EQ(vd_kvm_firmware_load(f.m, p64, &fw, &f.err), -EINVAL);
	CHECK(strstr(f.err.msg, "1 MiB") != NULL);
	fixture_fini(&f);
	free(img);
}

static void test_kvm_new_errors(void)
{
	struct fixture f;
	struct vd_kvm *k = (struct vd_kvm *)&f;
	struct vd_kvm_opts o = {.device = test_path("no-such-kvm"), .payload = "x"};

	REQUIRE(fixture_init(&f, 16 << 20) == 0);
#if !defined(__x86_64__) && !defined(__i386__)
	CHECK_EQ(vd_kvm_new(f.m, &o, &k, &f.err), -ENOTSUP);
	CHECK(k == NULL);
	fixture_fini(&f);
	return;
#endif
	CHECK_EQ(vd_kvm_new(f.m, &o, &k, &f.err), -ENOENT);
	CHECK(k == NULL);
	CHECK(strstr(f.err.msg, "no-such-kvm") != NULL);
	/* Not a KVM device: KVM_GET_API_VERSION fails (ENOTTY). */
	vd_error_clear(&f.err);
	o.device = "/dev/null";
	CHECK_EQ(vd_kvm_new(f.m, &o, &k, &f.err), -ENOTTY);
	CHECK(strstr(f.err.msg, "not a KVM device") != NULL);
	/* No payload. */
	vd_error_clear(&f.err);
	o.payload = NULL;
	CHECK_EQ(vd_kvm_new(f.m, &o, &k, &f.err), -EINVAL);
	fixture_fini(&f);
}

int main(void)
{
	RUN(test_io_pci_config);
	RUN(test_io_fw_cfg_string);
	RUN(test_io_unassigned);
	RUN(test_io_string_out);
	RUN(test_io_debug_exit);
	RUN(test_io_fills_mapping);
	RUN(test_mmio_ram);
	RUN(test_mmio_unassigned);
	RUN(test_bad_io);
	RUN(test_bad_mmio);
	RUN(test_exit_reasons);
	RUN(test_firmware_load);
	RUN(test_kvm_new_errors);
	return test_finish();
}
