/* SPDX-License-Identifier: MIT */
/*
 * isa-debug-exit: QEMU 7.2 hw/misc/debugexit.c.  Any write in the region
 * requests exit status (val << 1) | 1; val is the access's value, so
 * "outb %al, $0xf4" with al = 0 gives status 1, and a value that is never 0
 * lets a script tell a guest-requested exit from QEMU's own success (0).
 */
#include <stdlib.h>

#include <vdisk/trace.h>

#include <vdisk/debug-exit.h>

struct vd_debug_exit {
	struct vd_address_space *io;
	struct vd_mem_region *mr;
	vd_debug_exit_fn *fn;
	void *opaque;
};

static uint64_t debug_exit_read(void *opaque, uint64_t addr, unsigned size)
{
	return 0; /* debug_exit_read */
}

static void debug_exit_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_debug_exit *d = opaque;

	vd_trace(debug_exit_write, "addr=0x%x val=0x%llx size=%u", (unsigned)addr,
		 (unsigned long long)val, size);
	if (d->fn)
		d->fn(d->opaque, val);
}

/* QEMU: valid 1..4, implementation sizes left at the default (1..4). */
static const struct vd_mem_ops debug_exit_ops = {
	.read = debug_exit_read,
	.write = debug_exit_write,
	.valid_min = 1,
	.valid_max = 4,
	.impl_min = 1,
	.impl_max = 4,
};

struct vd_debug_exit *vd_debug_exit_new(struct vd_address_space *io, uint32_t iobase,
					uint32_t iosize, vd_debug_exit_fn *fn, void *opaque)
{
	struct vd_debug_exit *d;

	if (iosize == 0 || iosize > 0x10000 || iobase > 0x10000 - iosize)
		return NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->io = io;
	d->fn = fn;
	d->opaque = opaque;
	d->mr = vd_mem_region_new_io("isa-debug-exit", iosize, &debug_exit_ops, d);
	if (!d->mr || vd_address_space_map(io, iobase, d->mr, 0) < 0) {
		vd_debug_exit_free(d);
		return NULL;
	}
	return d;
}

void vd_debug_exit_free(struct vd_debug_exit *d)
{
	if (!d)
		return;
	if (d->mr) {
		vd_address_space_unmap(d->io, d->mr);
		vd_mem_region_unref(d->mr);
	}
	free(d);
}
