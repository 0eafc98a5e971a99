/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM: a memfd mapped shared; the fd is kept (struct vd_guest_ram), so
 * the pages can be shared with another process.  Port tables are in portio.c.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vdisk/memory.h>

int vd_guest_ram_alloc(struct vd_guest_ram *ram, uint64_t size)
{
	int fd, ret;
	void *p;

	memset(ram, 0, sizeof(*ram));
	ram->fd = -1;
	if (size == 0 || size > (UINT64_C(1) << 46))
		return -EINVAL;
	fd = memfd_create("vdisk-guest-ram", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		close(fd);
		return ret;
	}
	ram->host = p;
	ram->size = size;
	ram->fd = fd;
	return 0;
}

void vd_guest_ram_free(struct vd_guest_ram *ram)
{
	if (ram->host)
		munmap(ram->host, ram->size);
	if (ram->fd >= 0)
		close(ram->fd);
	ram->host = NULL;
	ram->fd = -1;
	ram->size = 0;
}
