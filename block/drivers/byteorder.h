/* SPDX-License-Identifier: MIT */
/*
 * Loads and stores of big- and little-endian integers at any alignment, for
 * the format drivers that parse on-disk structures byte by byte (vpc, vdi,
 * qed).  Image bytes are never cast to packed structs.
 */
#ifndef VDISK_BLOCK_DRIVERS_BYTEORDER_H
#define VDISK_BLOCK_DRIVERS_BYTEORDER_H

#include <stdint.h>

static inline uint16_t ld_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t ld_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t ld_be64(const uint8_t *p)
{
	return (uint64_t)ld_be32(p) << 32 | ld_be32(p + 4);
}

static inline void st_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void st_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void st_be64(uint8_t *p, uint64_t v)
{
	st_be32(p, (uint32_t)(v >> 32));
	st_be32(p + 4, (uint32_t)v);
}

static inline uint32_t ld_le32(const uint8_t *p)
{
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static inline uint64_t ld_le64(const uint8_t *p)
{
	return (uint64_t)ld_le32(p + 4) << 32 | ld_le32(p);
}

static inline void st_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void st_le64(uint8_t *p, uint64_t v)
{
	st_le32(p, (uint32_t)v);
	st_le32(p + 4, (uint32_t)(v >> 32));
}

#endif
