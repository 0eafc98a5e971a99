/* SPDX-License-Identifier: MIT */
/* Private to memory/: the region and view structures. */
#ifndef VDISK_MEMORY_INTERNAL_H
#define VDISK_MEMORY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <vdisk/memory.h>

enum mr_kind {
	MR_IO,
	MR_RAM,
	MR_CONTAINER,
};

struct vd_mem_region {
	char *name;
	uint64_t size; /* 0 = 2^64 (address-space roots only) */
	enum mr_kind kind;
	int refcnt;
	const struct vd_mem_ops *ops;
	void *opaque;
	void (*destroy)(void *opaque); /* run on the last unref (portio tables) */
	void *host; /* MR_RAM */

	struct vd_mem_region *parent;
	uint64_t offset; /* in the parent */
	int priority;
	uint64_t seq; /* order of addition: later wins among equal priorities */
	struct vd_mem_region **children;
	size_t nr_children, cap_children;
	struct vd_address_space *as; /* set on an address space's root */
};

/* One piece of the flat view: [start, last] shows @mr from offset @mr_off. */
struct flat_range {
	uint64_t start, last;
	struct vd_mem_region *mr;
	uint64_t mr_off;
};

/* Immutable once built; a dispatch holds a reference for its duration. */
struct mem_view {
	int refcnt;
	size_t n;
	struct flat_range *r;
};

struct vd_address_space {
	char *name;
	struct vd_mem_region *root;
	struct mem_view *view;
};

#endif
