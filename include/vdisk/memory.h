/* SPDX-License-Identifier: MIT */
/*
 * Guest memory and address-space dispatch: the hop between a trapped guest
 * access (KVM exit, qtest command) and a device's callback.
 *
 * A struct vd_mem_region is one of
 *  - an I/O region: read/write callbacks on an opaque pointer, with the access
 *    sizes the device accepts (valid) and the sizes its callbacks implement
 *    (impl), as QEMU's MemoryRegionOps;
 *  - a RAM region: a window onto host memory, copied directly;
 *  - a container: holds subregions at offsets with priorities; its holes
 *    show whatever lies below it.
 * Regions are reference counted.  A region has at most one parent.
 *
 * A struct vd_address_space (one for memory, one for I/O ports) has a root
 * container.  Every change below the root re-renders a flat view: a sorted
 * array of non-overlapping ranges, looked up by binary search.  On overlap the
 * highest priority wins; among equal priorities the region added last wins
 * (QEMU's rule, docs/devel/memory.rst "Overlapping regions and priority").
 *
 * Threading: an address space is changed and dispatched from one thread (the
 * machine's).  A dispatch holds a reference on the view it started with, so a
 * callback may unmap and unref any region, including its own: the region stays
 * valid until the access that is using it has finished (deferred free).
 */
#ifndef VDISK_MEMORY_H
#define VDISK_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vd_mem_region;
struct vd_address_space;

/*
 * Callbacks of an I/O region.  @addr is the offset in the region; @size is one
 * of 1, 2, 4, 8, within [impl_min, impl_max].  Values are little-endian
 * integers in the low @size bytes.  Callbacks run on the dispatching thread
 * and must not block; they may change the memory map.  As in QEMU, an access
 * that starts in a region goes to it whole (up to valid_max), so @addr + @size
 * may pass the region's end: callbacks check their bounds.
 *
 * valid_min/valid_max: access sizes the device accepts (0 means 1 and 4,
 * QEMU's defaults).  Smaller accesses are refused (a read gives all ones, a
 * write is dropped, both traced as memory_invalid_access); wider ones are
 * split into valid_max pieces.  Unless @unaligned, an access is also split at
 * its natural alignment.
 * impl_min/impl_max: what the callbacks implement (0 means 1 and 4).  The core
 * splits a wider access into impl_max pieces combined little-endian, or
 * widens a narrower one to impl_min and extracts the bytes.
 */
struct vd_mem_ops {
	uint64_t (*read)(void *opaque, uint64_t addr, unsigned size);
	void (*write)(void *opaque, uint64_t addr, uint64_t val, unsigned size);
	uint8_t valid_min, valid_max;
	uint8_t impl_min, impl_max;
	bool unaligned;
};

/* Constructors return a region with one reference, or NULL on ENOMEM.  @name
 * is copied.  @ops must outlive the region. */
struct vd_mem_region *vd_mem_region_new_io(const char *name, uint64_t size,
					   const struct vd_mem_ops *ops, void *opaque);
/* @host must stay mapped as long as the region lives. */
struct vd_mem_region *vd_mem_region_new_ram(const char *name, uint64_t size, void *host);
struct vd_mem_region *vd_mem_region_new_container(const char *name, uint64_t size);
void vd_mem_region_ref(struct vd_mem_region *mr);
/* Drop a reference.  Unref of a region that is still mapped keeps it alive
 * (its parent holds a reference) until it is removed. */
void vd_mem_region_unref(struct vd_mem_region *mr);
const char *vd_mem_region_name(const struct vd_mem_region *mr);
uint64_t vd_mem_region_size(const struct vd_mem_region *mr);
void *vd_mem_region_opaque(const struct vd_mem_region *mr);
/* Host pointer of a RAM region (NULL otherwise). */
void *vd_mem_region_ram_ptr(const struct vd_mem_region *mr);

/*
 * Put @child into @container at @offset with @priority (the container takes a
 * reference).  -EBUSY if @child already has a parent, -EINVAL if @container is
 * not a container or the child does not fit, -ENOMEM.
 */
int vd_mem_region_add_subregion(struct vd_mem_region *container, uint64_t offset,
				struct vd_mem_region *child, int priority);
/* Take @child out of its parent (and drop the parent's reference).  Nothing if
 * it has no parent. */
void vd_mem_region_del_subregion(struct vd_mem_region *child);
/* Move a mapped region; unmapped regions are unchanged. */
void vd_mem_region_set_address(struct vd_mem_region *child, uint64_t offset);
bool vd_mem_region_is_mapped(const struct vd_mem_region *mr);

/* Address spaces.  @size: 1 << 64 is written as 0 (the memory space). */
struct vd_address_space *vd_address_space_new(const char *name, uint64_t size);
void vd_address_space_free(struct vd_address_space *as);
struct vd_mem_region *vd_address_space_root(struct vd_address_space *as);
const char *vd_address_space_name(const struct vd_address_space *as);
/* Shorthands for add/del on the root. */
int vd_address_space_map(struct vd_address_space *as, uint64_t addr, struct vd_mem_region *mr,
			 int priority);
void vd_address_space_unmap(struct vd_address_space *as, struct vd_mem_region *mr);
/* Number of ranges in the flat view (for tests). */
size_t vd_address_space_nr_ranges(struct vd_address_space *as);

/*
 * Access [addr, addr + len) as the CPU would: RAM is copied directly, I/O
 * regions are called with sizes they accept (see struct vd_mem_ops),
 * unassigned space reads as all ones and drops writes (trace points
 * memory_unassigned_read / memory_unassigned_write).  An access that runs past
 * 2^64 wraps, as address arithmetic does.  Returns 0, or -EFAULT if any part
 * hit unassigned space or was refused for its size (the rest is still done).
 */
int vd_address_space_rw(struct vd_address_space *as, uint64_t addr, void *buf, uint64_t len,
			bool is_write);
static inline int vd_address_space_read(struct vd_address_space *as, uint64_t addr, void *buf,
					uint64_t len)
{
	return vd_address_space_rw(as, addr, buf, len, false);
}
static inline int vd_address_space_write(struct vd_address_space *as, uint64_t addr,
					 const void *buf, uint64_t len)
{
	return vd_address_space_rw(as, addr, (void *)buf, len, true);
}

/*
 * DMA: device access to guest memory.  Only RAM is reachable: a range that is
 * not entirely RAM (crossing the end of RAM, reaching an I/O region or a hole,
 * wrapping past 2^64) is refused and nothing is read or written.
 *
 * vd_dma_map: a host pointer for [addr, addr + len) if it is one contiguous
 * RAM range; NULL otherwise (also for len 0).  The pointer is valid while the
 * RAM region stays mapped (guest RAM never moves).
 * vd_dma_read/write: copy, possibly across adjacent RAM ranges.  0, or
 * -EFAULT with nothing copied.  A zero length succeeds and copies nothing.
 */
void *vd_dma_map(struct vd_address_space *as, uint64_t addr, uint64_t len);
int vd_dma_read(struct vd_address_space *as, uint64_t addr, void *buf, uint64_t len);
int vd_dma_write(struct vd_address_space *as, uint64_t addr, const void *buf, uint64_t len);

/*
 * Guest RAM: anonymous shared memory from memfd_create, so that the fd can be
 * handed to another process (vhost-user SET_MEM_TABLE).
 */
struct vd_guest_ram {
	void *host;
	uint64_t size;
	int fd;
};
int vd_guest_ram_alloc(struct vd_guest_ram *ram, uint64_t size); /* 0 or -errno */
void vd_guest_ram_free(struct vd_guest_ram *ram);

/*
 * Legacy port handlers, in the spirit of QEMU's register_ioport_read/write
 * (and its successor, portio lists): a table of handlers for @len ports
 * starting at @offset, each for one access size.  An access for which no
 * entry of its size exists is split into byte accesses if byte handlers
 * exist, else it reads all ones / is dropped.  The table ends with len 0.
 */
struct vd_portio {
	uint32_t offset, len;
	unsigned size; /* 1, 2 or 4 */
	uint32_t (*read)(void *opaque, uint32_t port);
	void (*write)(void *opaque, uint32_t port, uint32_t val);
};
/* Map the table at @base in @io (one region spanning the table, priority 0).
 * Returns the region (one reference, owned by the caller), NULL on error. */
struct vd_mem_region *vd_portio_register(struct vd_address_space *io, uint32_t base,
					 const struct vd_portio *table, void *opaque,
					 const char *name);

#ifdef __cplusplus
}
#endif

#endif
