/* SPDX-License-Identifier: MIT */
/*
 * The qcow2 metadata cache: L2 table slices and refcount blocks.
 *
 * A fixed array of entries, least-recently-used eviction, write-back.  The
 * ordering rules of qcow2 metadata updates (a refcount must be on disk
 * before the L2 entry that relies on it; a cleared L2 entry before the
 * refcount decrement of the cluster it pointed to) are kept with QEMU's
 * scheme: a cache may depend on another, which is then flushed (written and
 * the file flushed) before any entry of the dependent cache is written.
 * Callers hold s->lock.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block/drivers/qcow2/qcow2.h"

#include <vdisk/trace.h>

int qcow2_cache_init(struct qcow2_cache *c, int n, uint32_t entry_size, enum vd_debug_event load,
		     enum vd_debug_event update, unsigned meta_type)
{
	uint32_t hsize = 4;

	memset(c, 0, sizeof(*c));
	if (n < 2)
		n = 2;
	while (hsize < (uint32_t)n * 2)
		hsize *= 2;
	c->entries = calloc((size_t)n, sizeof(*c->entries));
	c->tables = vd_memalign(4096, (size_t)n * entry_size);
	c->hash_head = malloc(hsize * sizeof(int));
	c->hash_next = malloc((size_t)n * sizeof(int));
	c->lru_prev = malloc((size_t)n * sizeof(int));
	c->lru_next = malloc((size_t)n * sizeof(int));
	if (!c->entries || !c->tables || !c->hash_head || !c->hash_next || !c->lru_prev ||
	    !c->lru_next) {
		qcow2_cache_destroy(c);
		return -ENOMEM;
	}
	c->n = n;
	c->hash_mask = hsize - 1;
	for (uint32_t i = 0; i < hsize; i++)
		c->hash_head[i] = -1;
	/* Every slot starts empty, in the use list from 0 (newest) to n-1. */
	for (int i = 0; i < n; i++) {
		c->hash_next[i] = -1;
		c->lru_prev[i] = i - 1;
		c->lru_next[i] = i + 1 < n ? i + 1 : -1;
	}
	c->lru_head = 0;
	c->lru_tail = n - 1;
	c->entry_size = entry_size;
	c->load_ev = load;
	c->update_ev = update;
	c->meta_type = meta_type;
	return 0;
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
	free(c->entries);
	free(c->tables);
	free(c->hash_head);
	free(c->hash_next);
	free(c->lru_prev);
	free(c->lru_next);
	memset(c, 0, sizeof(*c));
}

static uint32_t hash_of(const struct qcow2_cache *c, uint64_t offset)
{
	uint64_t h = (offset / c->entry_size) * 0x9e3779b97f4a7c15ull;
	return (uint32_t)(h >> 32) & c->hash_mask;
}

static void hash_insert(struct qcow2_cache *c, int i)
{
	uint32_t b = hash_of(c, c->entries[i].offset);

	c->hash_next[i] = c->hash_head[b];
	c->hash_head[b] = i;
}

/* Unlink slot @i from its chain and mark it empty. */
static void hash_remove(struct qcow2_cache *c, int i)
{
	uint32_t b;

	if (!c->entries[i].offset)
		return;
	b = hash_of(c, c->entries[i].offset);
	for (int *p = &c->hash_head[b]; *p >= 0; p = &c->hash_next[*p]) {
		if (*p == i) {
			*p = c->hash_next[i];
			break;
		}
	}
	c->hash_next[i] = -1;
	c->entries[i].offset = 0;
}

static int hash_find(const struct qcow2_cache *c, uint64_t offset)
{
	for (int i = c->hash_head[hash_of(c, offset)]; i >= 0; i = c->hash_next[i])
		if (c->entries[i].offset == offset)
			return i;
	return -1;
}

/* Move slot @i to the front (most recently used) or back of the use list. */
static void lru_unlink(struct qcow2_cache *c, int i)
{
	if (c->lru_prev[i] >= 0)
		c->lru_next[c->lru_prev[i]] = c->lru_next[i];
	else
		c->lru_head = c->lru_next[i];
	if (c->lru_next[i] >= 0)
		c->lru_prev[c->lru_next[i]] = c->lru_prev[i];
	else
		c->lru_tail = c->lru_prev[i];
}

static void lru_touch(struct qcow2_cache *c, int i)
{
	lru_unlink(c, i);
	c->lru_prev[i] = -1;
	c->lru_next[i] = c->lru_head;
	if (c->lru_head >= 0)
		c->lru_prev[c->lru_head] = i;
	c->lru_head = i;
	if (c->lru_tail < 0)
		c->lru_tail = i;
}

static void lru_to_back(struct qcow2_cache *c, int i)
{
	lru_unlink(c, i);
	c->lru_next[i] = -1;
	c->lru_prev[i] = c->lru_tail;
	if (c->lru_tail >= 0)
		c->lru_next[c->lru_tail] = i;
	c->lru_tail = i;
	if (c->lru_head < 0)
		c->lru_head = i;
}

static void *table_of(struct qcow2_cache *c, int i)
{
	return c->tables + (size_t)i * c->entry_size;
}

static int index_of(struct qcow2_cache *c, void *table)
{
	size_t d = (size_t)((uint8_t *)table - c->tables);
	int i = (int)(d / c->entry_size);

	assert(i >= 0 && i < c->n && d % c->entry_size == 0);
	return i;
}

bool qcow2_cache_has_dirty(const struct qcow2_cache *c)
{
	for (int i = 0; i < c->n; i++)
		if (c->entries[i].dirty)
			return true;
	return false;
}

static int entry_flush(struct qcow2_state *s, struct qcow2_cache *c, int i)
{
	struct vd_node *file = s->node->file;
	struct qcow2_cache_entry *e = &c->entries[i];
	struct vd_qiov q;
	int ret;

	if (!e->dirty || !e->offset)
		return 0;
	if (c->depends) {
		struct qcow2_cache *dep = c->depends;
		ret = qcow2_cache_flush(s, dep);
		if (ret < 0)
			return ret;
		c->depends = NULL;
		c->depends_on_flush = false;
	} else if (c->depends_on_flush) {
		ret = vd_co_flush(file);
		if (ret < 0)
			return ret;
		c->depends_on_flush = false;
	}
	ret = qcow2_check_overlap(s, c->meta_type, e->offset, c->entry_size);
	if (ret < 0)
		return ret;
	vd_debug_event(file, c->update_ev);
	vd_qiov_init_buf(&q, table_of(c, i), c->entry_size);
	ret = vd_co_pwritev(file, (int64_t)e->offset, c->entry_size, &q, 0);
	if (ret < 0)
		return ret;
	e->dirty = false;
	return 0;
}

int qcow2_cache_write_back(struct qcow2_state *s, struct qcow2_cache *c)
{
	int result = 0;

	for (int i = 0; i < c->n; i++) {
		int ret = entry_flush(s, c, i);
		if (ret < 0 && result == 0)
			result = ret;
	}
	return result;
}

int qcow2_cache_flush(struct qcow2_state *s, struct qcow2_cache *c)
{
	int ret = qcow2_cache_write_back(s, c);

	if (ret == 0)
		ret = vd_co_flush(s->node->file);
	return ret;
}

int qcow2_cache_set_dependency(struct qcow2_state *s, struct qcow2_cache *c,
			       struct qcow2_cache *dep)
{
	int ret;

	/* Keep chains one level deep, as QEMU does. */
	if (dep->depends) {
		ret = qcow2_cache_flush(s, dep);
		if (ret < 0)
			return ret;
	}
	if (c->depends && c->depends != dep) {
		ret = qcow2_cache_flush(s, c);
		if (ret < 0)
			return ret;
	}
	c->depends = dep;
	return 0;
}

void qcow2_cache_depends_on_flush(struct qcow2_cache *c)
{
	c->depends_on_flush = true;
}

void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset, uint64_t len)
{
	for (int i = 0; i < c->n; i++) {
		struct qcow2_cache_entry *e = &c->entries[i];
		if (e->offset >= offset && e->offset < offset + len && e->ref == 0) {
			hash_remove(c, i);
			e->dirty = false;
			lru_to_back(c, i);
		}
	}
}

int qcow2_cache_get(struct qcow2_state *s, struct qcow2_cache *c, uint64_t offset, bool fresh,
		    void **table)
{
	int i, victim;
	int ret;

	assert(offset != 0);
	i = hash_find(c, offset);
	if (i >= 0) {
		c->entries[i].ref++;
		c->entries[i].used = true;
		lru_touch(c, i);
		if (fresh)
			memset(table_of(c, i), 0, c->entry_size);
		*table = table_of(c, i);
		return 0;
	}
	/* The least recently used slot nobody holds. */
	for (victim = c->lru_tail; victim >= 0 && c->entries[victim].ref;
	     victim = c->lru_prev[victim])
		;
	if (victim < 0)
		return -ENOSPC; /* every entry in use: a bug in the caller */
	ret = entry_flush(s, c, victim);
	if (ret < 0)
		return ret;
	hash_remove(c, victim);
	if (fresh) {
		memset(table_of(c, victim), 0, c->entry_size);
	} else {
		struct vd_qiov q;
		vd_debug_event(s->node->file, c->load_ev);
		vd_trace(qcow2_cache_load, "%s offset %#" PRIx64,
			 c->meta_type == QCOW2_OL_ACTIVE_L2 ? "l2" : "refblock", offset);
		vd_qiov_init_buf(&q, table_of(c, victim), c->entry_size);
		/* Hold the slot while the read yields. */
		c->entries[victim].ref = 1;
		ret = vd_co_preadv(s->node->file, (int64_t)offset, c->entry_size, &q, 0);
		c->entries[victim].ref = 0;
		if (ret < 0)
			return ret;
		/* Someone else may have loaded it meanwhile (callers hold the
		 * lock, so not today; keep the cache correct anyway). */
		if (hash_find(c, offset) >= 0)
			return qcow2_cache_get(s, c, offset, false, table);
	}
	c->entries[victim].offset = offset;
	hash_insert(c, victim);
	c->entries[victim].ref = 1;
	c->entries[victim].dirty = false;
	c->entries[victim].used = true;
	lru_touch(c, victim);
	*table = table_of(c, victim);
	return 0;
}

void qcow2_cache_put(struct qcow2_cache *c, void *table)
{
	int i = index_of(c, table);

	assert(c->entries[i].ref > 0);
	c->entries[i].ref--;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, void *table)
{
	c->entries[index_of(c, table)].dirty = true;
}

void qcow2_cache_clean_unused(struct qcow2_cache *c)
{
	long page = sysconf(_SC_PAGESIZE);
	int i = c->lru_head;

	while (i >= 0) {
		int next = c->lru_next[i];
		struct qcow2_cache_entry *e = &c->entries[i];

		if (e->offset && !e->ref && !e->dirty && !e->used) {
			hash_remove(c, i);
			lru_to_back(c, i); /* empty slots are the first victims */
			/* Whole pages only: slots smaller than a page share them. */
			uintptr_t a = (uintptr_t)table_of(c, i), end = a + c->entry_size;
			uintptr_t pa = (a + page - 1) & ~((uintptr_t)page - 1);
			uintptr_t pend = end & ~((uintptr_t)page - 1);
			if (page > 0 && pend > pa)
				madvise((void *)pa, pend - pa, MADV_DONTNEED);
		}
		e->used = false;
		i = next;
	}
}
