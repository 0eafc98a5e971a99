/* SPDX-License-Identifier: MIT */
/*
 * Fake guest memory for the virtio unit tests: MEM_SIZE bytes at `mem` (the
 * test allocates it), reached by the device through `gmem`, written and read
 * little-endian by the test.  Define MEM_SIZE before including.
 */
#ifndef VDISK_TESTS_GUEST_MEM_H
#define VDISK_TESTS_GUEST_MEM_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

#include <vdisk/virtio.h>

#ifndef MEM_SIZE
#error "define MEM_SIZE before including tests/lib/guest-mem.h"
#endif

static uint8_t *mem;

static inline void *mem_map(void *opaque, uint64_t addr, uint64_t *len)
{
	(void)opaque;
	if (addr >= MEM_SIZE)
		return NULL;
	if (*len > MEM_SIZE - addr)
		*len = MEM_SIZE - addr;
	return mem + addr;
}

static const struct vd_virtio_mem gmem = {.map = mem_map};

static inline void w16(uint64_t a, uint16_t v)
{
	v = htole16(v);
	memcpy(mem + a, &v, 2);
}

static inline void w32(uint64_t a, uint32_t v)
{
	v = htole32(v);
	memcpy(mem + a, &v, 4);
}

static inline void w64(uint64_t a, uint64_t v)
{
	v = htole64(v);
	memcpy(mem + a, &v, 8);
}

static inline uint16_t r16(uint64_t a)
{
	uint16_t v;

	memcpy(&v, mem + a, 2);
	return le16toh(v);
}

static inline uint32_t r32(uint64_t a)
{
	uint32_t v;

	memcpy(&v, mem + a, 4);
	return le32toh(v);
}

#endif
