/* SPDX-License-Identifier: MIT */
/*
 * Legacy port tables (the role of QEMU's register_ioport_read/write and
 * portio lists, system/ioport.c): a table of per-width port handlers made
 * into one I/O region of the io address space, so port accesses dispatch
 * through address_space_rw() (memory.c) like every other access; this file
 * adds only the table lookup and the split of an access no entry of its
 * width covers into byte accesses.
 */
#include <stdlib.h>

#include <vdisk/memory.h>

#include "memory/memory-internal.h"

struct portio_state {
	const struct vd_portio *table;
	void *opaque;
	uint32_t base;
};

static const struct vd_portio *portio_find(const struct portio_state *s, uint32_t off,
					   unsigned size)
{
	for (const struct vd_portio *e = s->table; e->len; e++) {
		if (e->size == size && off >= e->offset && off - e->offset < e->len)
			return e;
	}
	return NULL;
}

static uint64_t portio_read(void *opaque, uint64_t addr, unsigned size)
{
	struct portio_state *s = opaque;
	const struct vd_portio *e = portio_find(s, (uint32_t)addr, size);
	uint64_t val = 0;

	if (e)
		return e->read ? e->read(s->opaque, s->base + (uint32_t)addr) : UINT32_MAX;
	if (size == 1)
		return 0xff;
	/* No handler of this width: byte handlers, little-endian. */
	for (unsigned i = 0; i < size; i++) {
		e = portio_find(s, (uint32_t)addr + i, 1);
		if (!e)
			return UINT64_MAX;
		uint32_t b = e->read ? e->read(s->opaque, s->base + (uint32_t)addr + i) : 0xff;

		val |= (uint64_t)(b & 0xff) << (i * 8);
	}
	return val;
}

static void portio_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct portio_state *s = opaque;
	const struct vd_portio *e = portio_find(s, (uint32_t)addr, size);

	if (e) {
		if (e->write)
			e->write(s->opaque, s->base + (uint32_t)addr, (uint32_t)val);
		return;
	}
	if (size == 1)
		return;
	for (unsigned i = 0; i < size; i++) {
		if (!portio_find(s, (uint32_t)addr + i, 1))
			return;
	}
	for (unsigned i = 0; i < size; i++) {
		e = portio_find(s, (uint32_t)addr + i, 1);
		if (e && e->write)
			e->write(s->opaque, s->base + (uint32_t)addr + i, (val >> (i * 8)) & 0xff);
	}
}

static const struct vd_mem_ops portio_ops = {
	.read = portio_read,
	.write = portio_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
	.unaligned = true,
};

struct vd_mem_region *vd_portio_register(struct vd_address_space *io, uint32_t base,
					 const struct vd_portio *table, void *opaque,
					 const char *name)
{
	struct portio_state *s;
	struct vd_mem_region *mr;
	uint32_t end = 0;

	for (const struct vd_portio *e = table; e->len; e++) {
		if (e->offset + e->len > end)
			end = e->offset + e->len;
	}
	if (end == 0)
		return NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->table = table;
	s->opaque = opaque;
	s->base = base;
	mr = vd_mem_region_new_io(name, end, &portio_ops, s);
	if (!mr) {
		free(s);
		return NULL;
	}
	mr->destroy = free;
	if (vd_address_space_map(io, base, mr, 0) < 0) {
		vd_mem_region_unref(mr);
		return NULL;
	}
	return mr;
}
