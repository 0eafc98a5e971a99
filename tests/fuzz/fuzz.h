/* SPDX-License-Identifier: MIT */
/* Shared by the fuzz targets in tests/fuzz/ (fuzz-NAME.c). */
#ifndef VDISK_TESTS_FUZZ_H
#define VDISK_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vdisk/memory.h>

/* The entry point libFuzzer and tests/fuzz/run-corpus.sh call. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Interpreting a crash as a finding needs a crash, not a quiet exit. */
#define FUZZ_ASSERT(cond)                                                                   \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "%s:%d: assertion %s failed\n", __FILE__, __LINE__, \
				#cond);                                                     \
			abort();                                                            \
		}                                                                           \
	} while (0)

/* The fuzzer's input, read as little-endian integers; zeroes past its end. */
struct fuzz_in {
	const uint8_t *p;
	size_t len, off;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	return in->off < in->len ? in->p[in->off++] : 0;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
	uint16_t v = fuzz_u8(in);

	return (uint16_t)(v | fuzz_u8(in) << 8);
}

static inline uint32_t fuzz_u32(struct fuzz_in *in)
{
	uint32_t v = fuzz_u16(in);

	return v | (uint32_t)fuzz_u16(in) << 16;
}

static inline uint64_t fuzz_u64(struct fuzz_in *in)
{
	uint64_t v = fuzz_u32(in);

	return v | (uint64_t)fuzz_u32(in) << 32;
}

static inline void fuzz_trap_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	fprintf(stderr, "device wrote %u bytes at RAM end + 0x%llx\n", size,
		(unsigned long long)addr);
	abort();
}

static inline uint64_t fuzz_trap_read(void *opaque, uint64_t addr, unsigned size)
{
	fprintf(stderr, "device read at RAM end + 0x%llx\n", (unsigned long long)addr);
	abort();
}

/* Machine targets: a region of @size bytes at @at (the end of guest RAM) that
 * aborts on any access, so a device that reaches past RAM is a finding. */
static inline void fuzz_map_trap(struct vd_address_space *mem, uint64_t at, uint64_t size)
{
	static const struct vd_mem_ops trap_ops = {
		.read = fuzz_trap_read,
		.write = fuzz_trap_write,
		.valid_min = 1,
		.valid_max = 8,
		.impl_min = 1,
		.impl_max = 8,
		.unaligned = true,
	};
	struct vd_mem_region *trap = vd_mem_region_new_io("dma-trap", size, &trap_ops, NULL);

	FUZZ_ASSERT(trap);
	FUZZ_ASSERT(vd_address_space_map(mem, at, trap, 0) == 0);
	vd_mem_region_unref(trap);
}

#endif
