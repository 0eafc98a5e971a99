/* SPDX-License-Identifier: MIT */
/*
 * qcow2 request paths: read, write (with cluster allocation and copy-on-
 * write), compressed write, block status.
 *
 * Reads and writes to allocated clusters take s->lock only to translate
 * the offset; the data I/O goes straight to the file child with a slice of
 * the caller's vector.  An allocating write allocates host clusters under
 * the lock, records the guest range in s->allocs, writes head COW + data +
 * tail COW as one host write outside the lock, then links the clusters in
 * the L2 table (qcow2.txt "Cluster mapping"); a write that touches a
 * cluster of a pending allocation waits for it first.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/aio.h>

#include "block/drivers/qcow2/qcow2.h"

#define BITMAP_ALL_ALLOC 0xffffffffull

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Read @len bytes at guest @offset from the backing node (zeroes past its
 * end, or without one) into @q at @qoff. */
static int read_backing(struct qcow2_state *s, uint64_t offset, uint64_t len, struct vd_qiov *q,
			size_t qoff)
{
	struct vd_node *b = s->node->backing;
	uint64_t avail = 0;
	int ret = 0;

	if (b) {
		int64_t bsize = vd_node_size(b);
		if (bsize > 0 && offset < (uint64_t)bsize)
			avail = min_u64(len, (uint64_t)bsize - offset);
	}
	if (avail) {
		struct vd_qiov sub;
		if (qoff == 0 && avail == q->size) {
			ret = vd_co_preadv(b, (int64_t)offset, (int64_t)avail, q, 0);
		} else {
			vd_qiov_init(&sub, q->niov);
			ret = vd_qiov_concat_slice(&sub, q, qoff, avail);
			if (ret == 0)
				ret = vd_co_preadv(b, (int64_t)offset, (int64_t)avail, &sub, 0);
			vd_qiov_destroy(&sub);
		}
	}
	if (ret == 0 && avail < len)
		vd_qiov_memset(q, qoff + avail, 0, len - avail);
	return ret;
}

/* Read and inflate the compressed cluster of L2 entry @entry into @out
 * (cluster_size bytes).  qcow2.txt "Compressed Clusters Descriptor". */
static int read_compressed(struct qcow2_state *s, uint64_t entry, uint8_t *out)
{
	uint64_t coff = entry & s->coffset_mask;
	uint64_t sectors = ((entry >> s->csize_shift) & s->csize_mask) + 1;
	uint64_t csize = sectors * 512 - (coff & 511);
	struct vd_qiov q;
	uint8_t *in;
	int ret;

	if (coff < s->cluster_size || coff + csize > QCOW2_MAX_HOST_OFFSET)
		return qcow2_signal_corruption(s, "Compressed cluster at %#" PRIx64 " out of range",
					       coff);
	in = malloc(csize);
	if (!in)
		return -ENOMEM;
	vd_debug_event(s->node->file, VD_EV_READ_AIO);
	vd_qiov_init_buf(&q, in, csize);
	ret = vd_co_preadv(s->node->file, (int64_t)coff, (int64_t)csize, &q, 0);
	if (ret == 0 && qcow2_decompress(s->compression_type, out, s->cluster_size, in, csize) < 0)
		ret = -EIO;
	free(in);
	return ret;
}

/* Read guest [offset, offset + len), all inside one cluster, as the cluster
 * described by @entry/@bitmap holds it, into @buf.  For COW. */
static int read_old(struct qcow2_state *s, uint64_t entry, uint64_t bitmap, uint64_t offset,
		    uint64_t len, uint8_t *buf)
{
	struct vd_qiov q;
	int ret = 0;

	if (len == 0)
		return 0;
	if (entry & QCOW2_OFLAG_COMPRESSED) {
		uint8_t *c = vd_memalign(4096, s->cluster_size);
		if (!c)
			return -ENOMEM;
		ret = read_compressed(s, entry, c);
		if (ret == 0)
			memcpy(buf, c + qcow2_offset_into_cluster(s, offset), len);
		free(c);
		return ret;
	}
	while (len > 0 && ret == 0) {
		uint64_t in = qcow2_offset_into_cluster(s, offset);
		unsigned sc = (unsigned)(in >> s->sc_bits);
		uint64_t n = min_u64(len, ((uint64_t)(sc + 1) << s->sc_bits) - in);

		vd_qiov_init_buf(&q, buf, n);
		switch (qcow2_sc_type(s, entry, bitmap, sc)) {
		case QCOW2_SC_UNALLOCATED:
			ret = read_backing(s, offset, n, &q, 0);
			break;
		case QCOW2_SC_ZERO:
			memset(buf, 0, n);
			break;
		case QCOW2_SC_NORMAL:
			ret = vd_co_preadv(s->node->file,
					   (int64_t)((entry & QCOW2_L2E_OFFSET_MASK) + in),
					   (int64_t)n, &q, 0);
			break;
		default:
			ret = -EIO;
			break;
		}
		offset += n;
		buf += n;
		len -= n;
	}
	return ret;
}

int qcow2_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		    int flags)
{
	struct qcow2_state *s = n->opaque;
	size_t qoff = 0;
	int ret = 0;

	while (bytes > 0 && ret == 0) {
		struct qcow2_map m;
		struct vd_qiov sub;
		uint64_t len;

		vd_co_mutex_lock(&s->lock);
		ret = qcow2_get_mapping(s, (uint64_t)offset, (uint64_t)bytes, &m);
		vd_co_mutex_unlock(&s->lock);
		if (ret < 0)
			break;
		len = m.bytes;
		switch (m.type) {
		case QCOW2_SC_UNALLOCATED:
			ret = read_backing(s, (uint64_t)offset, len, qiov, qoff);
			break;
		case QCOW2_SC_ZERO:
			vd_qiov_memset(qiov, qoff, 0, len);
			break;
		case QCOW2_SC_NORMAL:
			vd_debug_event(n->file, VD_EV_READ_AIO);
			if (qoff == 0 && len == qiov->size) {
				/* The fast path: one host read into the caller's vector. */
				ret = vd_co_preadv(n->file, (int64_t)m.host, (int64_t)len, qiov, 0);
				break;
			}
			vd_qiov_init(&sub, qiov->niov);
			ret = vd_qiov_concat_slice(&sub, qiov, qoff, len);
			if (ret == 0)
				ret = vd_co_preadv(n->file, (int64_t)m.host, (int64_t)len, &sub, 0);
			vd_qiov_destroy(&sub);
			break;
		case QCOW2_SC_COMPRESSED: {
			uint8_t *c = vd_memalign(4096, s->cluster_size);
			if (!c) {
				ret = -ENOMEM;
				break;
			}
			ret = read_compressed(s, m.l2_entry, c);
			if (ret == 0)
				vd_qiov_from_buf(qiov, qoff,
						 c + qcow2_offset_into_cluster(s, (uint64_t)offset),
						 len);
			free(c);
			break;
		}
		default:
			ret = -EIO;
			break;
		}
		offset += (int64_t)len;
		bytes -= (int64_t)len;
		qoff += len;
	}
	return ret;
}

/* --- allocations in flight ---------------------------------------------- */

static struct qcow2_alloc *find_alloc(struct qcow2_state *s, uint64_t start, uint64_t end)
{
	for (struct qcow2_alloc *a = s->allocs; a; a = a->next)
		if (a->start < end && start < a->end)
			return a;
	return NULL;
}

/* With s->lock held: wait until no allocation overlaps [start, end).
 * Returns true if it had to wait (the caller's view may be stale). */
static bool wait_allocs(struct qcow2_state *s, uint64_t start, uint64_t end)
{
	struct qcow2_alloc *a;
	bool waited = false;

	while ((a = find_alloc(s, start, end))) {
		vd_co_mutex_unlock(&s->lock);
		vd_co_queue_wait(&a->waiters);
		vd_co_mutex_lock(&s->lock);
		waited = true;
	}
	return waited;
}

static void alloc_done(struct qcow2_state *s, struct qcow2_alloc *a)
{
	for (struct qcow2_alloc **p = &s->allocs; *p; p = &(*p)->next) {
		if (*p == a) {
			*p = a->next;
			break;
		}
	}
	vd_co_queue_restart_all(&a->waiters);
}

/* Must a write to this cluster allocate a new host cluster? */
static bool needs_new_cluster(uint64_t entry)
{
	return (entry & QCOW2_OFLAG_COMPRESSED) || !(entry & QCOW2_L2E_OFFSET_MASK) ||
	       !(entry & QCOW2_OFLAG_COPIED) || (entry & QCOW2_OFLAG_ZERO);
}

/* Has this cluster no data of its own (subcluster COW is enough)? */
static bool is_plain(const struct qcow2_state *s, uint64_t entry)
{
	return !(entry & QCOW2_OFLAG_COMPRESSED) && !(entry & QCOW2_L2E_OFFSET_MASK);
}

/* Does the cluster described by @entry/@bitmap read as zeroes in
 * [offset, offset + len)?  Decided from the entry alone, without I/O. */
static bool old_is_zero(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
			uint64_t offset, uint64_t len)
{
	if (len == 0)
		return true;
	if (entry & QCOW2_OFLAG_COMPRESSED)
		return false;
	for (uint64_t pos = offset; pos < offset + len;) {
		uint64_t in = qcow2_offset_into_cluster(s, pos);
		unsigned sc = (unsigned)(in >> s->sc_bits);

		switch (qcow2_sc_type(s, entry, bitmap, sc)) {
		case QCOW2_SC_ZERO:
			break;
		case QCOW2_SC_UNALLOCATED:
			if (s->node->backing)
				return false;
			break;
		default:
			return false;
		}
		pos += ((uint64_t)(sc + 1) << s->sc_bits) - in;
	}
	return true;
}

/*
 * Keep the host file allocated ahead of the clusters handed out, as QEMU's
 * preallocate filter does: on Linux file systems an O_DIRECT write past the
 * end of a file is serialised on the inode (and io_uring punts it to a
 * worker), while a write into allocated space is not; allocating writes ran
 * 2.3x faster into a preallocated file here.  Space is added in steps of
 * PREALLOC_STEP past what is needed; close gives back what was not used.
 * Best effort: a file that cannot grow this way (a block device) is simply
 * written as before.
 */
#define PREALLOC_STEP (32ull << 20)

static void prealloc_ahead(struct qcow2_state *s, uint64_t needed)
{
	struct vd_node *file = s->node->file;
	uint64_t size = (uint64_t)vd_node_size(file), target;

	if (needed <= size || s->prealloc_failed)
		return;
	target = (needed + PREALLOC_STEP + (1ull << 20) - 1) & ~((1ull << 20) - 1);
	if (vd_co_truncate(file, (int64_t)target, false, VD_PREALLOC_FALLOC, NULL) < 0) {
		s->prealloc_failed = true;
		return;
	}
	s->prealloc_end = target;
}

static uint64_t sc_range_mask(unsigned first, unsigned last)
{
	uint64_t m = 0;
	for (unsigned k = first; k < last; k++)
		m |= 1ull << k;
	return m;
}

/*
 * One step of a write that needs metadata: the clusters from that of
 * @offset on (at most to the end of the L2 slice).  Called and returns
 * with s->lock held.  *done = guest bytes written.
 */
static int write_alloc(struct qcow2_state *s, uint64_t offset, uint64_t bytes, struct vd_qiov *qiov,
		       size_t qoff, uint64_t *done)
{
	struct vd_node *file = s->node->file;
	uint64_t cs = s->cluster_size;
	uint64_t c0 = qcow2_start_of_cluster(s, offset);
	uint64_t i, ncl = 1, e0, b0, elast, blast, cow_start, cow_end, data_end;
	uint64_t *olds = NULL;
	uint8_t *head = NULL, *tail = NULL;
	struct qcow2_alloc a = {0};
	struct vd_qiov q;
	bool reuse;
	int64_t host;
	void *slice;
	int ret;

	ret = qcow2_get_l2_slice(s, offset, true, &slice, &i);
	if (ret < 0)
		return ret;
	e0 = qcow2_l2_entry(s, slice, i);
	b0 = qcow2_l2_bitmap(s, slice, i);
	/* Extended L2: a cluster of our own whose subclusters are not all
	 * allocated is written in place, only the bitmap changes. */
	reuse = s->extl2 && !needs_new_cluster(e0);
	if (!reuse) {
		while (c0 + ncl * cs < offset + bytes && i + ncl < s->l2_slice_entries &&
		       needs_new_cluster(qcow2_l2_entry(s, slice, i + ncl)))
			ncl++;
	}
	olds = malloc(2 * ncl * sizeof(uint64_t));
	if (!olds) {
		qcow2_cache_put(&s->l2_cache, slice);
		return -ENOMEM;
	}
	for (uint64_t k = 0; k < ncl; k++) {
		olds[2 * k] = qcow2_l2_entry(s, slice, i + k);
		olds[2 * k + 1] = qcow2_l2_bitmap(s, slice, i + k);
	}
	qcow2_cache_put(&s->l2_cache, slice);
	elast = olds[2 * (ncl - 1)];
	blast = olds[2 * (ncl - 1) + 1];
	data_end = min_u64(offset + bytes, c0 + ncl * cs);

	/* COW region: whole clusters, or only the touched subclusters where
	 * the old cluster has no data of its own (QEMU's calculate_l2_meta). */
	cow_start = c0;
	if (s->extl2 && (reuse || is_plain(s, e0)))
		cow_start = offset & ~(s->sc_size - 1);
	cow_end = c0 + ncl * cs;
	if (s->extl2 && (reuse || is_plain(s, elast)))
		cow_end = (data_end + s->sc_size - 1) & ~(s->sc_size - 1);

	uint64_t fresh = s->fresh_from; /* before this allocation moves it */
	if (reuse) {
		/* Written in place: the cluster may be anything a crafted L2
		 * entry names, even past the end of the file. */
		host = (int64_t)(e0 & QCOW2_L2E_OFFSET_MASK);
		ret = qcow2_check_overlap(s, 0, (uint64_t)host, cs);
		if (ret < 0) {
			free(olds);
			return ret;
		}
		qcow2_note_used(s, (uint64_t)host, cs);
	} else {
		host = qcow2_alloc_clusters(s, ncl * cs);
		if (host < 0) {
			free(olds);
			return (int)host;
		}
		ret = qcow2_check_overlap(s, 0, (uint64_t)host, ncl * cs);
		/* The old clusters are freed once the new ones are linked: an
		 * old one that is a table (crafted L2 entry) is refused now,
		 * before anything is written. */
		for (uint64_t k = 0; k < ncl && ret == 0; k++)
			ret = qcow2_check_free_l2_entry(s, olds[2 * k]);
		if (ret < 0)
			goto unref;
	}
	/*
	 * New clusters never written nor allocated before (fresh_from, in
	 * qcow2.h) read as zeroes: a COW region whose old content is zeroes as
	 * well need not be written (QEMU writes zeroes there with fallocate; we
	 * write nothing).  A reused cluster may hold stale data and always gets
	 * its COW written.
	 */
	uint64_t write_start = cow_start, write_end = cow_end;
	if (!reuse) {
		prealloc_ahead(s, (uint64_t)host + ncl * cs);
	}
	if (!reuse && (uint64_t)host >= fresh) {
		if (old_is_zero(s, e0, b0, cow_start, offset - cow_start))
			write_start = offset;
		if (old_is_zero(s, elast, blast, data_end, cow_end - data_end))
			write_end = data_end;
	}
	a.start = c0;
	a.end = c0 + ncl * cs;
	vd_co_queue_init(&a.waiters);
	a.next = s->allocs;
	s->allocs = &a;
	vd_co_mutex_unlock(&s->lock);

	/* Data I/O outside the lock. */
	uint64_t head_len = offset - write_start, tail_len = write_end - data_end;
	if (head_len || tail_len)
		vd_debug_event(file, VD_EV_COW_READ);
	if (head_len) {
		head = vd_memalign(4096, head_len);
		ret = head ? read_old(s, e0, b0, write_start, head_len, head) : -ENOMEM;
	}
	if (ret == 0 && tail_len) {
		tail = vd_memalign(4096, tail_len);
		ret = tail ? read_old(s, elast, blast, data_end, tail_len, tail) : -ENOMEM;
	}
	if (ret == 0) {
		vd_qiov_init(&q, qiov->niov + 2);
		if (head_len)
			ret = vd_qiov_add(&q, head, head_len);
		if (ret == 0)
			ret = vd_qiov_concat_slice(&q, qiov, qoff, data_end - offset);
		if (ret == 0 && tail_len)
			ret = vd_qiov_add(&q, tail, tail_len);
		if (ret == 0) {
			if (head_len || tail_len)
				vd_debug_event(file, VD_EV_COW_WRITE);
			vd_debug_event(file, VD_EV_WRITE_AIO);
			ret = vd_co_pwritev(file, host + (int64_t)(write_start - c0),
					    (int64_t)(write_end - write_start), &q, 0);
		}
		vd_qiov_destroy(&q);
	}
	free(head);
	free(tail);

	vd_co_mutex_lock(&s->lock);
	if (ret == 0) {
		/* Link the clusters: refcounts before the L2 entries that use
		 * them, and the new entries before the old clusters are freed. */
		if (!reuse)
			ret = qcow2_cache_set_dependency(s, &s->l2_cache, &s->rb_cache);
		if (ret == 0)
			ret = qcow2_get_l2_slice(s, c0, false, &slice, &i);
		if (ret == 0 && !slice)
			ret = -EIO;
		if (ret == 0) {
			for (uint64_t k = 0; k < ncl; k++) {
				uint64_t cstart = c0 + k * cs;
				uint64_t ne = ((uint64_t)host + k * cs) | QCOW2_OFLAG_COPIED;
				uint64_t nb = BITMAP_ALL_ALLOC;
				if (s->extl2 && (reuse || is_plain(s, olds[2 * k]))) {
					uint64_t from = cow_start > cstart ? cow_start : cstart;
					uint64_t to = min_u64(cow_end, cstart + cs);
					uint64_t mask = sc_range_mask(
						(unsigned)((from - cstart) >> s->sc_bits),
						(unsigned)((to - cstart + s->sc_size - 1) >>
							   s->sc_bits));
					nb = (olds[2 * k + 1] | mask) & ~(mask << 32);
				}
				qcow2_set_l2_entry(s, slice, i + k, ne);
				qcow2_set_l2_bitmap(s, slice, i + k, nb);
			}
			qcow2_cache_mark_dirty(&s->l2_cache, slice);
			qcow2_cache_put(&s->l2_cache, slice);
			for (uint64_t k = 0; k < ncl && ret == 0 && !reuse; k++) {
				uint64_t old = olds[2 * k];
				if (!(old & QCOW2_OFLAG_COMPRESSED) &&
				    !(old & QCOW2_L2E_OFFSET_MASK))
					continue;
				ret = qcow2_cache_set_dependency(s, &s->rb_cache, &s->l2_cache);
				if (ret == 0)
					ret = qcow2_free_l2_entry(s, old);
			}
			if (ret == 0)
				*done = data_end - offset;
			alloc_done(s, &a);
			free(olds);
			return ret;
		}
	}
	alloc_done(s, &a);
unref:
	if (!reuse)
		qcow2_update_refcount(s, (uint64_t)host, ncl * cs, -1);
	free(olds);
	return ret;
}

static int write_compressed(struct qcow2_state *s, uint64_t offset, uint64_t bytes,
			    struct vd_qiov *qiov);

int qcow2_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes, struct vd_qiov *qiov,
		     int flags)
{
	struct qcow2_state *s = n->opaque;
	uint64_t slice_bytes = s->l2_slice_entries << s->cluster_bits;
	size_t qoff = 0;
	int ret = 0;

	/* Before the write, as QEMU's dirty bitmaps (set even if it fails). */
	qcow2_bitmaps_track(s, (uint64_t)offset, (uint64_t)bytes);
	if (flags & VD_REQ_COMPRESSED) {
		/* As QEMU's qcow2_co_pwritev_compressed_part: any number of
		 * whole clusters (the last may end at the end of the disk),
		 * each compressed on its own. */
		if (qcow2_offset_into_cluster(s, (uint64_t)offset) ||
		    (qcow2_offset_into_cluster(s, (uint64_t)bytes) &&
		     (uint64_t)(offset + bytes) != s->size))
			return -EINVAL;
		while (bytes > 0 && ret == 0) {
			uint64_t chunk = min_u64((uint64_t)bytes, s->cluster_size);
			struct vd_qiov sub;

			vd_qiov_init(&sub, qiov->niov);
			ret = vd_qiov_concat_slice(&sub, qiov, qoff, chunk);
			if (ret == 0)
				ret = write_compressed(s, (uint64_t)offset, chunk, &sub);
			vd_qiov_destroy(&sub);
			offset += (int64_t)chunk;
			bytes -= (int64_t)chunk;
			qoff += chunk;
		}
		return ret;
	}
	vd_co_mutex_lock(&s->lock);
	ret = qcow2_mark_dirty(s);
	while (bytes > 0 && ret == 0) {
		uint64_t off = (uint64_t)offset;
		uint64_t chunk = min_u64((uint64_t)bytes, slice_bytes - (off & (slice_bytes - 1)));
		struct qcow2_map m;
		uint64_t done = 0;

		if (wait_allocs(s, qcow2_start_of_cluster(s, off),
				qcow2_round_up_cluster(s, off + chunk)))
			continue;
		ret = qcow2_get_mapping(s, off, chunk, &m);
		if (ret < 0)
			break;
		if (m.type == QCOW2_SC_NORMAL && (m.l2_entry & QCOW2_OFLAG_COPIED)) {
			/* Allocated and ours: one host write, no metadata.  The
			 * L2 entry is untrusted: the clusters must not be
			 * metadata (O(1) per cluster, overlap.c), and they count
			 * as used so that a cluster past the end of the file
			 * keeps what is written there (close trims the file to
			 * fresh_from) and is never handed out again as a fresh,
			 * all-zero cluster. */
			struct vd_qiov sub;
			ret = qcow2_check_overlap(s, 0, m.host, m.bytes);
			if (ret < 0)
				break;
			qcow2_note_used(s, qcow2_start_of_cluster(s, m.host),
					qcow2_round_up_cluster(s, m.host + m.bytes) -
						qcow2_start_of_cluster(s, m.host));
			vd_co_mutex_unlock(&s->lock);
			vd_debug_event(n->file, VD_EV_WRITE_AIO);
			if (qoff == 0 && m.bytes == qiov->size) {
				ret = vd_co_pwritev(n->file, (int64_t)m.host, (int64_t)m.bytes,
						    qiov, 0);
			} else {
				vd_qiov_init(&sub, qiov->niov);
				ret = vd_qiov_concat_slice(&sub, qiov, qoff, m.bytes);
				if (ret == 0)
					ret = vd_co_pwritev(n->file, (int64_t)m.host,
							    (int64_t)m.bytes, &sub, 0);
				vd_qiov_destroy(&sub);
			}
			vd_co_mutex_lock(&s->lock);
			done = m.bytes;
		} else {
			ret = write_alloc(s, off, chunk, qiov, qoff, &done);
		}
		offset += (int64_t)done;
		bytes -= (int64_t)done;
		qoff += done;
	}
	vd_co_mutex_unlock(&s->lock);
	return ret;
}

/*
 * Compressed write (qcow2.txt "Compressed Clusters Descriptor"): one whole
 * cluster (or the tail of the disk), deflated into a byte-granular
 * allocation that may share a host cluster with the previous one (QEMU's
 * qcow2_alloc_bytes).  The target cluster must be unallocated, as in QEMU.
 * Data that does not compress is written normally.
 */
struct compress_job {
	int type;
	uint8_t *dst;
	size_t dst_len;
	const uint8_t *src;
	size_t src_len;
	long ret;
};

static int compress_worker(void *opaque)
{
	struct compress_job *j = opaque;

	j->ret = qcow2_compress(j->type, j->dst, j->dst_len, j->src, j->src_len);
	return 0;
}

/* Deflate on the loop's worker threads, as QEMU's qcow2_co_compress does:
 * the requests of a convert -c compress on every core while the loop
 * thread goes on allocating and writing. */
static long compress_in_worker(struct qcow2_state *s, uint8_t *dst, size_t dst_len,
			       const uint8_t *src, size_t src_len)
{
	struct compress_job j = {s->compression_type, dst, dst_len, src, src_len, -EIO};
	int ret = vd_thread_pool_co(s->node->loop, compress_worker, &j);

	if (ret < 0) /* no worker thread: do it here */
		return qcow2_compress(s->compression_type, dst, dst_len, src, src_len);
	return j.ret;
}

static int write_compressed(struct qcow2_state *s, uint64_t offset, uint64_t bytes,
			    struct vd_qiov *qiov)
{
	uint64_t cs = s->cluster_size;
	uint8_t *in = NULL, *out = NULL;
	uint64_t i, entry, coff = 0, nsec;
	struct qcow2_alloc a = {0};
	bool registered = false;
	long clen;
	void *slice;
	struct vd_qiov q;
	int ret;

	if (qcow2_offset_into_cluster(s, offset) || (bytes != cs && offset + bytes != s->size) ||
	    bytes > cs)
		return -EINVAL;
	in = vd_memalign(4096, cs);
	out = vd_memalign(4096, cs);
	if (!in || !out) {
		ret = -ENOMEM;
		goto out;
	}
	memset(in, 0, cs);
	vd_qiov_to_buf(qiov, 0, in, bytes);
	clen = compress_in_worker(s, out, cs - 1, in, cs);
	if (clen == -ENOSPC) {
		vd_qiov_init_buf(&q, in, bytes);
		ret = qcow2_co_pwritev(s->node, (int64_t)offset, (int64_t)bytes, &q, 0);
		goto out;
	}
	if (clen < 0) {
		ret = (int)clen;
		goto out;
	}
	vd_co_mutex_lock(&s->lock);
	ret = qcow2_mark_dirty(s);
	while (ret == 0 && wait_allocs(s, offset, offset + cs))
		;
	if (ret == 0)
		ret = qcow2_get_l2_slice(s, offset, true, &slice, &i);
	if (ret < 0)
		goto unlock;
	entry = qcow2_l2_entry(s, slice, i);
	qcow2_cache_put(&s->l2_cache, slice);
	if (entry & (QCOW2_L2E_OFFSET_MASK | QCOW2_OFLAG_COMPRESSED)) {
		ret = -EIO; /* compression cannot overwrite anything */
		goto unlock;
	}
	/*
	 * Byte allocation (QEMU's qcow2_alloc_bytes): continue after the last
	 * compressed cluster, in its host cluster, or running on into the
	 * next host cluster when that one is free, so that compressed
	 * clusters are packed end to end.  The next cluster is taken only when
	 * its refcount block is the current one's, so that counting it cannot
	 * allocate a refcount block (which might land on it).
	 */
	coff = 0;
	if (s->free_byte_offset) {
		uint64_t cur = s->free_byte_offset >> s->cluster_bits, rc, next_rc = 1;
		uint64_t left = cs - qcow2_offset_into_cluster(s, s->free_byte_offset);
		ret = qcow2_get_refcount(s, cur, &rc);
		if (ret == 0 && rc && rc < s->refcount_max && left < (uint64_t)clen &&
		    ((cur + 1) & ((1ull << s->rb_bits) - 1)) != 0 &&
		    cur + 2 <= (QCOW2_MAX_HOST_OFFSET >> s->cluster_bits))
			ret = qcow2_get_refcount(s, cur + 1, &next_rc);
		if (ret < 0)
			goto unlock;
		if (rc && rc < s->refcount_max && (left >= (uint64_t)clen || next_rc == 0))
			coff = s->free_byte_offset;
	}
	if (coff) {
		ret = qcow2_update_refcount(s, coff, (uint64_t)clen, 1);
	} else {
		int64_t h = qcow2_alloc_clusters(s, cs);
		ret = h < 0 ? (int)h : 0;
		coff = (uint64_t)h;
	}
	if (ret < 0)
		goto unlock;
	s->free_byte_offset = coff + (uint64_t)clen;
	if (!qcow2_offset_into_cluster(s, s->free_byte_offset))
		s->free_byte_offset = 0;
	ret = qcow2_check_overlap(s, 0, coff, (uint64_t)clen);
	if (ret == 0) {
		/* Writers of this cluster wait until it is linked. */
		a.start = offset;
		a.end = offset + cs;
		vd_co_queue_init(&a.waiters);
		a.next = s->allocs;
		s->allocs = &a;
		vd_co_mutex_unlock(&s->lock);
		vd_debug_event(s->node->file, VD_EV_WRITE_AIO);
		vd_qiov_init_buf(&q, out, (size_t)clen);
		ret = vd_co_pwritev(s->node->file, (int64_t)coff, clen, &q, 0);
		vd_co_mutex_lock(&s->lock);
		registered = true;
	}
	if (ret == 0)
		ret = qcow2_cache_set_dependency(s, &s->l2_cache, &s->rb_cache);
	if (ret == 0)
		ret = qcow2_get_l2_slice(s, offset, false, &slice, &i);
	if (ret == 0 && !slice)
		ret = -EIO;
	if (ret == 0) {
		nsec = ((coff + (uint64_t)clen - 1) >> 9) - (coff >> 9);
		qcow2_set_l2_entry(s, slice, i,
				   coff | QCOW2_OFLAG_COMPRESSED | (nsec << s->csize_shift));
		qcow2_set_l2_bitmap(s, slice, i, 0);
		qcow2_cache_mark_dirty(&s->l2_cache, slice);
		qcow2_cache_put(&s->l2_cache, slice);
	}
	if (ret < 0)
		qcow2_update_refcount(s, coff, (uint64_t)clen, -1);
	if (registered)
		alloc_done(s, &a);
unlock:
	vd_co_mutex_unlock(&s->lock);
out:
	free(in);
	free(out);
	return ret;
}

int qcow2_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes, int64_t *pnum,
			  int64_t *map, struct vd_node **file)
{
	struct qcow2_state *s = n->opaque;
	struct qcow2_map m;
	int ret;

	vd_co_mutex_lock(&s->lock);
	ret = qcow2_get_mapping(s, (uint64_t)offset, (uint64_t)bytes, &m);
	vd_co_mutex_unlock(&s->lock);
	if (ret < 0)
		return ret;
	*pnum = (int64_t)m.bytes;
	switch (m.type) {
	case QCOW2_SC_NORMAL:
		*map = (int64_t)m.host;
		*file = n->file;
		return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
	case QCOW2_SC_ZERO:
	case QCOW2_SC_UNALLOCATED:
		ret = m.type == QCOW2_SC_ZERO ? VD_BLOCK_ZERO : 0;
		/* A zero or unallocated (sub)cluster in a cluster that keeps
		 * its host storage: QEMU's *_ALLOC subcluster types report
		 * where it lives, one cluster at a time. */
		if (!(m.l2_entry & QCOW2_OFLAG_COMPRESSED) &&
		    (m.l2_entry & QCOW2_L2E_OFFSET_MASK)) {
			uint64_t in = qcow2_offset_into_cluster(s, (uint64_t)offset);

			*map = (int64_t)((m.l2_entry & QCOW2_L2E_OFFSET_MASK) + in);
			*file = n->file;
			if ((uint64_t)*pnum > s->cluster_size - in)
				*pnum = (int64_t)(s->cluster_size - in);
			ret |= VD_BLOCK_OFFSET_VALID;
		}
		return ret;
	case QCOW2_SC_COMPRESSED:
		return VD_BLOCK_DATA;
	default:
		return -EIO;
	}
}

/* Discard and write-zeroes change L2 entries: first let pending
 * allocations of the range finish.  With s->lock held. */
int qcow2_wait_and_discard(struct qcow2_state *s, uint64_t offset, uint64_t bytes)
{
	wait_allocs(s, qcow2_start_of_cluster(s, offset),
		    qcow2_round_up_cluster(s, offset + bytes));
	return qcow2_discard_clusters(s, offset, bytes, false);
}

int qcow2_wait_and_discard_full(struct qcow2_state *s, uint64_t offset, uint64_t bytes)
{
	wait_allocs(s, qcow2_start_of_cluster(s, offset),
		    qcow2_round_up_cluster(s, offset + bytes));
	return qcow2_discard_clusters(s, offset, bytes, true);
}

int qcow2_wait_and_zero(struct qcow2_state *s, uint64_t offset, uint64_t bytes, int flags)
{
	wait_allocs(s, qcow2_start_of_cluster(s, offset),
		    qcow2_round_up_cluster(s, offset + bytes));
	return qcow2_zero_clusters(s, offset, bytes, flags);
}
