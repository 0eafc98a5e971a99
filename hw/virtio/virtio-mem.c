/* SPDX-License-Identifier: MIT */
/*
 * Guest memory for virtqueues of the emulated machine: its memory address
 * space, through the bounds-checked DMA map of memory/ (only RAM is
 * reachable; MMIO and holes are not).
 */
#include <vdisk/memory.h>
#include <vdisk/virtio.h>

#define PAGE 4096u

static void *as_map(void *opaque, uint64_t addr, uint64_t *len)
{
	struct vd_address_space *as = opaque;
	uint64_t page_left = PAGE - (addr & (PAGE - 1));
	void *p = vd_dma_map(as, addr, *len);

	if (p)
		return p;
	/* Not one RAM range: hand out the rest of this page, the caller
	 * continues page by page (RAM regions are page-aligned). */
	if (*len > page_left) {
		p = vd_dma_map(as, addr, page_left);
		if (p)
			*len = page_left;
	}
	return p;
}

void vd_virtio_mem_init_as(struct vd_virtio_mem *mem, struct vd_address_space *as)
{
	mem->map = as_map;
	mem->opaque = as;
}
