/* SPDX-License-Identifier: MIT */
/*
 * Little-endian loads and stores at any alignment, for the virtio
 * structures in guest memory (virtio 1.2 section 1.4: all fields are
 * little-endian).  Shared by virtqueue.c and virtio-blk.c.
 */
#ifndef VDISK_HW_VIRTIO_LE_H
#define VDISK_HW_VIRTIO_LE_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t ld16(const void *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return le16toh(v);
}

static inline uint32_t ld32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}

static inline uint64_t ld64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

static inline void st16(void *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, 2);
}

static inline void st32(void *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static inline void st64(void *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

#endif
