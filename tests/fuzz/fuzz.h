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
