/* SPDX-License-Identifier: MIT */
/*
 * isa-debugcon: QEMU 7.2 hw/char/debugcon.c (-debugcon CHARDEV), the Bochs
 * "port e9 hack".  A byte write sends the byte to the console; a read
 * returns the readback value.  Only byte accesses are valid, as in QEMU; a
 * wider OUT is split into bytes at consecutive ports, of which only the
 * first is the console's.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include <vdisk/trace.h>

#include <vdisk/debug-exit.h>

struct vd_debugcon {
	struct vd_address_space *io;
	struct vd_mem_region *mr;
	int fd;
};

static uint64_t debugcon_read(void *opaque, uint64_t addr, unsigned size)
{
	return VD_DEBUGCON_READBACK;
}

static void debugcon_write(void *opaque, uint64_t addr, uint64_t val, unsigned size)
{
	struct vd_debugcon *c = opaque;
	unsigned char ch = (unsigned char)val;
	ssize_t n;

	/* Unbuffered, like QEMU's file chardev: what the guest printed before
	 * it hangs or crashes is in the log.  A full pipe or a closed file
	 * loses the byte (traced); the guest never waits on the host. */
	do {
		n = write(c->fd, &ch, 1);
	} while (n < 0 && errno == EINTR);
	if (n != 1)
		vd_trace(debugcon_write_failed, "fd=%d errno=%d", c->fd, n < 0 ? errno : 0);
}

static const struct vd_mem_ops debugcon_ops = {
	.read = debugcon_read,
	.write = debugcon_write,
	.valid_min = 1,
	.valid_max = 1,
	.impl_min = 1,
	.impl_max = 1,
};

struct vd_debugcon *vd_debugcon_new(struct vd_address_space *io, uint32_t iobase, int fd)
{
	struct vd_debugcon *c;

	if (iobase > 0xffff || fd < 0)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->io = io;
	c->fd = fd;
	c->mr = vd_mem_region_new_io("isa-debugcon", 1, &debugcon_ops, c);
	if (!c->mr || vd_address_space_map(io, iobase, c->mr, 0) < 0) {
		vd_debugcon_free(c);
		return NULL;
	}
	return c;
}

void vd_debugcon_free(struct vd_debugcon *c)
{
	if (!c)
		return;
	if (c->mr) {
		vd_address_space_unmap(c->io, c->mr);
		vd_mem_region_unref(c->mr);
	}
	free(c);
}
