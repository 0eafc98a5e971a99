/* SPDX-License-Identifier: MIT */
/*
 * Memory regions, address spaces and their flat views (see
 * include/vdisk/memory.h).  The rendering follows QEMU's
 * generate_memory_topology(): walk the region tree from the root, children of a
 * container in descending priority (later additions first among equals), and
 * let each leaf fill only the holes that higher-priority regions left.  The
 * result is a sorted array of ranges, searched with a binary search on every
 * access; it is rebuilt on every map change (rare: BAR programming).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/memory.h>
#include <vdisk/trace.h>

#include "memory/memory-internal.h"

static uint64_t mr_seq;

static struct vd_mem_region *mr_alloc(const char *name, uint64_t size, enum mr_kind kind)
{
	struct vd_mem_region *mr = calloc(1, sizeof(*mr));

	if (!mr)
		return NULL;
	mr->name = strdup(name ? name : "");
	if (!mr->name) {
		free(mr);
		return NULL;
	}
	mr->size = size;
	mr->kind = kind;
	mr->refcnt = 1;
	return mr;
}

struct vd_mem_region *vd_mem_region_new_io(const char *name, uint64_t size,
					   const struct vd_mem_ops *ops, void *opaque)
{
	struct vd_mem_region *mr;

	if (!ops || size == 0)
		return NULL;
	mr = mr_alloc(name, size, MR_IO);
	if (mr) {
		mr->ops = ops;
		mr->opaque = opaque;
	}
	return mr;
}

struct vd_mem_region *vd_mem_region_new_ram(const char *name, uint64_t size, void *host)
{
	struct vd_mem_region *mr;

	if (!host || size == 0)
		return NULL;
	mr = mr_alloc(name, size, MR_RAM);
	if (mr)
		mr->host = host;
	return mr;
}

struct vd_mem_region *vd_mem_region_new_container(const char *name, uint64_t size)
{
	return mr_alloc(name, size, MR_CONTAINER);
}

void vd_mem_region_ref(struct vd_mem_region *mr)
{
	__atomic_add_fetch(&mr->refcnt, 1, __ATOMIC_RELAXED);
}

void vd_mem_region_unref(struct vd_mem_region *mr)
{
	if (!mr || __atomic_sub_fetch(&mr->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < mr->nr_children; i++) {
		mr->children[i]->parent = NULL;
		vd_mem_region_unref(mr->children[i]);
	}
	if (mr->destroy)
		mr->destroy(mr->opaque);
	free(mr->children);
	free(mr->name);
	free(mr);
}

const char *vd_mem_region_name(const struct vd_mem_region *mr)
{
	return mr->name;
}

uint64_t vd_mem_region_size(const struct vd_mem_region *mr)
{
	return mr->size;
}

void *vd_mem_region_opaque(const struct vd_mem_region *mr)
{
	return mr->opaque;
}

void *vd_mem_region_ram_ptr(const struct vd_mem_region *mr)
{
	return mr->kind == MR_RAM ? mr->host : NULL;
}

bool vd_mem_region_is_mapped(const struct vd_mem_region *mr)
{
	return mr->parent != NULL;
}

/* ---- flat views ---- */

static void view_unref(struct mem_view *v)
{
	if (!v || --v->refcnt > 0)
		return;
	for (size_t i = 0; i < v->n; i++)
		vd_mem_region_unref(v->r[i].mr);
	free(v->r);
	free(v);
}

struct render {
	struct flat_range *r;
	size_t n, cap;
	int err;
};

static int range_cmp(const void *a, const void *b)
{
	const struct flat_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

static void render_push(struct render *rd, uint64_t lo, uint64_t hi, struct vd_mem_region *mr,
			uint64_t base)
{
	if (rd->n == rd->cap) {
		size_t cap = rd->cap ? rd->cap * 2 : 16;
		struct flat_range *nr = realloc(rd->r, cap * sizeof(*nr));

		if (!nr) {
			rd->err = -ENOMEM;
			return;
		}
		rd->r = nr;
		rd->cap = cap;
	}
	rd->r[rd->n++] = (struct flat_range){lo, hi, mr, lo - base};
}

/* Insert the parts of [lo, hi] that no range covers yet.  rd->r is sorted. */
static void render_leaf(struct render *rd, struct vd_mem_region *mr, uint64_t base, uint64_t lo,
			uint64_t hi)
{
	size_t n = rd->n;
	uint64_t cur = lo;
	bool done = false;

	for (size_t i = 0; i < n && !done; i++) {
		struct flat_range *r = &rd->r[i];

		if (r->last < cur)
			continue;
		if (r->start > hi)
			break;
		if (r->start > cur)
			render_push(rd, cur, r->start - 1, mr, base);
		if (r->last >= hi)
			done = true;
		else
			cur = r->last + 1;
	}
	if (!done)
		render_push(rd, cur, hi, mr, base);
	if (rd->n != n)
		qsort(rd->r, rd->n, sizeof(*rd->r), range_cmp);
}

static int child_order(const void *a, const void *b)
{
	const struct vd_mem_region *x = *(struct vd_mem_region *const *)a;
	const struct vd_mem_region *y = *(struct vd_mem_region *const *)b;

	if (x->priority != y->priority)
		return x->priority > y->priority ? -1 : 1;
	return x->seq > y->seq ? -1 : x->seq < y->seq;
}

/* Last byte of a region placed at @base, clamped at 2^64 - 1. */
static uint64_t region_last(uint64_t base, uint64_t size)
{
	if (size == 0 || base + (size - 1) < base)
		return UINT64_MAX;
	return base + (size - 1);
}

static void render_region(struct render *rd, struct vd_mem_region *mr, uint64_t base, uint64_t lo,
			  uint64_t hi)
{
	uint64_t mlo = base, mhi = region_last(base, mr->size);

	if (mlo > lo)
		lo = mlo;
	if (mhi < hi)
		hi = mhi;
	if (lo > hi || rd->err)
		return;
	if (mr->kind != MR_CONTAINER) {
		render_leaf(rd, mr, base, lo, hi);
		return;
	}
	if (mr->nr_children == 0)
		return;
	struct vd_mem_region **order = malloc(mr->nr_children * sizeof(*order));

	if (!order) {
		rd->err = -ENOMEM;
		return;
	}
	memcpy(order, mr->children, mr->nr_children * sizeof(*order));
	qsort(order, mr->nr_children, sizeof(*order), child_order);
	for (size_t i = 0; i < mr->nr_children; i++) {
		uint64_t cbase = base + order[i]->offset;

		if (cbase < base) /* placed past 2^64: not visible */
			continue;
		render_region(rd, order[i], cbase, lo, hi);
	}
	free(order);
}

static int as_rebuild(struct vd_address_space *as)
{
	struct render rd = {0};
	struct mem_view *v;

	render_region(&rd, as->root, 0, 0, region_last(0, as->root->size));
	if (rd.err) {
		free(rd.r);
		return rd.err;
	}
	/* Merge neighbours that continue the same region (flatview_simplify). */
	size_t out = 0;
	for (size_t i = 0; i < rd.n; i++) {
		struct flat_range *p = out ? &rd.r[out - 1] : NULL;

		if (p && p->mr == rd.r[i].mr && p->last + 1 == rd.r[i].start &&
		    p->mr_off + (p->last - p->start + 1) == rd.r[i].mr_off) {
			p->last = rd.r[i].last;
			continue;
		}
		rd.r[out++] = rd.r[i];
	}
	v = calloc(1, sizeof(*v));
	if (!v) {
		free(rd.r);
		return -ENOMEM;
	}
	v->refcnt = 1;
	v->r = rd.r;
	v->n = out;
	for (size_t i = 0; i < out; i++)
		vd_mem_region_ref(v->r[i].mr);
	view_unref(as->view);
	as->view = v;
	vd_trace(memory_view_rebuilt, "as=%s ranges=%zu", as->name, v->n);
	return 0;
}

static struct vd_address_space *region_as(struct vd_mem_region *mr)
{
	while (mr->parent)
		mr = mr->parent;
	return mr->as;
}

int vd_mem_region_add_subregion(struct vd_mem_region *container, uint64_t offset,
				struct vd_mem_region *child, int priority)
{
	struct vd_address_space *as;
	int ret;

	if (!container || !child || container->kind != MR_CONTAINER || child == container)
		return -EINVAL;
	if (child->parent || child->as)
		return -EBUSY;
	if (container->size && (offset >= container->size || child->size == 0 ||
				child->size > container->size - offset))
		return -EINVAL;
	if (container->nr_children == container->cap_children) {
		size_t cap = container->cap_children ? container->cap_children * 2 : 8;
		struct vd_mem_region **nc = realloc(container->children, cap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		container->children = nc;
		container->cap_children = cap;
	}
	vd_mem_region_ref(child);
	child->parent = container;
	child->offset = offset;
	child->priority = priority;
	child->seq = __atomic_add_fetch(&mr_seq, 1, __ATOMIC_RELAXED);
	container->children[container->nr_children++] = child;
	as = region_as(container);
	if (as && (ret = as_rebuild(as)) < 0) {
		container->nr_children--;
		child->parent = NULL;
		vd_mem_region_unref(child);
		return ret;
	}
	return 0;
}

void vd_mem_region_del_subregion(struct vd_mem_region *child)
{
	struct vd_mem_region *parent = child ? child->parent : NULL;
	struct vd_address_space *as;

	if (!parent)
		return;
	for (size_t i = 0; i < parent->nr_children; i++) {
		if (parent->children[i] == child) {
			memmove(&parent->children[i], &parent->children[i + 1],
				(parent->nr_children - i - 1) * sizeof(child));
			parent->nr_children--;
			break;
		}
	}
	child->parent = NULL;
	as = region_as(parent);
	/* On ENOMEM the old view stays; the region stays alive through it. */
	if (as)
		as_rebuild(as);
	vd_mem_region_unref(child);
}

void vd_mem_region_set_address(struct vd_mem_region *child, uint64_t offset)
{
	struct vd_address_space *as;

	if (!child->parent || child->offset == offset)
		return;
	child->offset = offset;
	as = region_as(child);
	if (as)
		as_rebuild(as);
}

struct vd_address_space *vd_address_space_new(const char *name, uint64_t size)
{
	struct vd_address_space *as = calloc(1, sizeof(*as));

	if (!as)
		return NULL;
	as->name = strdup(name);
	as->root = vd_mem_region_new_container(name, size);
	if (!as->name || !as->root || as_rebuild(as) < 0) {
		vd_mem_region_unref(as->root);
		free(as->name);
		free(as);
		return NULL;
	}
	as->root->as = as;
	return as;
}

void vd_address_space_free(struct vd_address_space *as)
{
	if (!as)
		return;
	as->root->as = NULL;
	vd_mem_region_unref(as->root);
	view_unref(as->view);
	free(as->name);
	free(as);
}

struct vd_mem_region *vd_address_space_root(struct vd_address_space *as)
{
	return as->root;
}

const char *vd_address_space_name(const struct vd_address_space *as)
{
	return as->name;
}

int vd_address_space_map(struct vd_address_space *as, uint64_t addr, struct vd_mem_region *mr,
			 int priority)
{
	return vd_mem_region_add_subregion(as->root, addr, mr, priority);
}

void vd_address_space_unmap(struct vd_address_space *as, struct vd_mem_region *mr)
{
	if (mr && mr->parent)
		vd_mem_region_del_subregion(mr);
}

size_t vd_address_space_nr_ranges(struct vd_address_space *as)
{
	return as->view->n;
}

/* ---- dispatch ---- */

/* The range holding @addr, or NULL; *next_start gets the start of the first
 * range above @addr (0 if none: the hole reaches 2^64). */
static const struct flat_range *view_lookup(const struct mem_view *v, uint64_t addr,
					    uint64_t *next_start)
{
	size_t lo = 0, hi = v->n;

	/* First range with start > addr. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v->r[mid].start <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0 && v->r[lo - 1].last >= addr)
		return &v->r[lo - 1];
	if (next_start)
		*next_start = lo < v->n ? v->r[lo].start : 0;
	return NULL;
}

static inline uint64_t size_mask(unsigned size)
{
	return size >= 8 ? UINT64_MAX : (UINT64_C(1) << (size * 8)) - 1;
}

/* QEMU's access_with_adjusted_size: call the callbacks with sizes in
 * [impl_min, impl_max], little-endian. */
static uint64_t io_read(struct vd_mem_region *mr, uint64_t off, unsigned size)
{
	const struct vd_mem_ops *ops = mr->ops;
	unsigned imin = ops->impl_min ? ops->impl_min : 1, imax = ops->impl_max ? ops->impl_max : 4;
	unsigned asz = size < imin ? imin : size > imax ? imax : size;
	uint64_t val = 0;

	if (!ops->read)
		return size_mask(size);
	for (unsigned i = 0; i < size; i += asz) {
		uint64_t t = ops->read(mr->opaque, off + i, asz) & size_mask(asz);

		val |= t << (i * 8);
	}
	val &= size_mask(size);
	vd_trace(memory_region_ops_read, "mr=%s addr=0x%" PRIx64 " value=0x%" PRIx64 " size=%u",
		 mr->name, off, val, size);
	return val;
}

static void io_write(struct vd_mem_region *mr, uint64_t off, uint64_t val, unsigned size)
{
	const struct vd_mem_ops *ops = mr->ops;
	unsigned imin = ops->impl_min ? ops->impl_min : 1, imax = ops->impl_max ? ops->impl_max : 4;
	unsigned asz = size < imin ? imin : size > imax ? imax : size;

	vd_trace(memory_region_ops_write, "mr=%s addr=0x%" PRIx64 " value=0x%" PRIx64 " size=%u",
		 mr->name, off, val, size);
	if (!ops->write)
		return;
	for (unsigned i = 0; i < size; i += asz)
		ops->write(mr->opaque, off + i, (val >> (i * 8)) & size_mask(asz), asz);
}

/* The size of the next access at region offset @off with @len bytes left
 * (QEMU's memory_access_size). */
static unsigned io_access_size(const struct vd_mem_ops *ops, uint64_t off, uint64_t len)
{
	unsigned vmax = ops->valid_max ? ops->valid_max : 4;
	uint64_t l = len < vmax ? len : vmax;

	if (!ops->unaligned) {
		uint64_t align = off & -off;

		if (align && align < l)
			l = align;
	}
	/* Round down to a power of two. */
	while (l & (l - 1))
		l &= l - 1;
	return (unsigned)l;
}

int vd_address_space_rw(struct vd_address_space *as, uint64_t addr, void *buf, uint64_t len,
			bool is_write)
{
	struct mem_view *v = as->view;
	uint8_t *p = buf;
	int ret = 0;

	vd_trace(address_space_rw, "as=%s addr=0x%" PRIx64 " len=%" PRIu64 " write=%d", as->name,
		 addr, len, is_write);
	v->refcnt++;
	while (len > 0) {
		uint64_t next = 0, l;
		const struct flat_range *r = view_lookup(v, addr, &next);

		if (!r) {
			/* A hole up to the next range (or to 2^64). */
			l = next - addr; /* 0 means 2^64 */
			if (l == 0 || l > len)
				l = len;
			if (is_write) {
				vd_trace(memory_unassigned_write,
					 "as=%s addr=0x%" PRIx64 " len=%" PRIu64, as->name, addr,
					 l);
			} else {
				vd_trace(memory_unassigned_read,
					 "as=%s addr=0x%" PRIx64 " len=%" PRIu64, as->name, addr,
					 l);
				memset(p, 0xff, l);
			}
			ret = -EFAULT;
		} else {
			struct vd_mem_region *mr = r->mr;
			uint64_t off = r->mr_off + (addr - r->start);

			/*
			 * RAM is copied to the end of its flat range.  An I/O
			 * access goes whole to the region at its first byte,
			 * also where a higher-priority region or the region's
			 * end comes before the access ends, as in QEMU (which
			 * clips only RAM to the flat range: outl 0xcf8 reaches
			 * CONFIG_ADDRESS although 0xcf9 is the PIIX3 RCR, and
			 * inl 0xcf9 gives the RCR four times).  So callbacks
			 * bounds-check @addr + @size themselves.
			 */
			l = mr->kind == MR_RAM ? r->last - addr + 1 : len; /* 0 means 2^64 */
			if (l == 0 || l > len)
				l = len;
			if (mr->kind == MR_RAM) {
				uint8_t *host = (uint8_t *)mr->host + off;

				if (is_write)
					memcpy(host, p, l);
				else
					memcpy(p, host, l);
			} else {
				const struct vd_mem_ops *ops = mr->ops;
				unsigned vmin = ops->valid_min ? ops->valid_min : 1;
				unsigned sz = io_access_size(ops, off, l);

				l = sz;
				if (sz < vmin) {
					vd_trace(memory_invalid_access,
						 "mr=%s addr=0x%" PRIx64 " size=%u write=%d",
						 mr->name, off, sz, is_write);
					if (!is_write)
						memset(p, 0xff, sz);
					ret = -EFAULT;
				} else if (is_write) {
					uint64_t val = 0;

					for (unsigned i = 0; i < sz; i++)
						val |= (uint64_t)p[i] << (i * 8);
					io_write(mr, off, val, sz);
				} else {
					uint64_t val = io_read(mr, off, sz);

					for (unsigned i = 0; i < sz; i++)
						p[i] = (uint8_t)(val >> (i * 8));
				}
			}
		}
		addr += l;
		p += l;
		len -= l;
	}
	view_unref(v);
	return ret;
}

/* ---- DMA ---- */

/* Check that [addr, addr + len) is all RAM in @v.  len > 0. */
static bool dma_check(const struct mem_view *v, uint64_t addr, uint64_t len)
{
	if (addr + (len - 1) < addr)
		return false; /* wraps at 2^64 */
	while (len > 0) {
		const struct flat_range *r = view_lookup(v, addr, NULL);
		uint64_t l;

		if (!r || r->mr->kind != MR_RAM)
			return false;
		l = r->last - addr + 1;
		if (l == 0 || l >= len)
			return true;
		addr += l;
		len -= l;
	}
	return true;
}

void *vd_dma_map(struct vd_address_space *as, uint64_t addr, uint64_t len)
{
	const struct flat_range *r;

	if (len == 0 || addr + (len - 1) < addr)
		return NULL;
	r = view_lookup(as->view, addr, NULL);
	if (!r || r->mr->kind != MR_RAM || len - 1 > r->last - addr)
		return NULL;
	return (uint8_t *)r->mr->host + r->mr_off + (addr - r->start);
}

static int dma_rw(struct vd_address_space *as, uint64_t addr, void *buf, uint64_t len,
		  bool is_write)
{
	struct mem_view *v = as->view;

	if (len == 0)
		return 0;
	if (!dma_check(v, addr, len)) {
		vd_trace(dma_refused, "as=%s addr=0x%" PRIx64 " len=%" PRIu64 " write=%d", as->name,
			 addr, len, is_write);
		return -EFAULT;
	}
	/* Everything is RAM: the copy cannot call back into a device. */
	return vd_address_space_rw(as, addr, buf, len, is_write);
}

int vd_dma_read(struct vd_address_space *as, uint64_t addr, void *buf, uint64_t len)
{
	return dma_rw(as, addr, buf, len, false);
}

int vd_dma_write(struct vd_address_space *as, uint64_t addr, const void *buf, uint64_t len)
{
	return dma_rw(as, addr, (void *)buf, len, true);
}
