/* SPDX-License-Identifier: MIT */
/*
 * qcow2 format driver: private interfaces between the files of the driver.
 *
 * Sections cited as "qcow2.txt §..." refer to QEMU's docs/interop/qcow2.txt.
 *
 * Files:
 *   qcow2.c     open/close, header parsing and validation, header writes,
 *               get_info, probe, the driver table
 *   cache.c     the metadata cache (L2 slices, refcount blocks) with LRU,
 *               write-back and flush dependencies between caches
 *   refcount.c  refcount entries of every width, cluster allocation, growth
 *               of refcount blocks and table, freeing
 *   cluster.c   guest -> host mapping (L1/L2, subclusters), L2 allocation,
 *               L2 entry updates, discard and zero-cluster updates
 *   io.c        read and write request paths, COW, in-flight allocations,
 *               block_status, compressed cluster (de)compression
 *   create.c    image creation
 *   check.c     qemu-img check: refcount rebuild in memory, compare, repair
 *   snapshot.c  internal snapshot table: list, create, apply, delete
 *   resize.c    truncate: L1 growth, shrink
 *   overlap.c   metadata overlap protection: the index of metadata clusters
 *               and the check before every write (overlap-check options)
 *
 * Locking: everything in struct qcow2_state that is metadata (L1, refcount
 * table, caches, free_cluster_index, the allocation list) is protected by
 * s->lock, a coroutine mutex.  Guest data I/O runs outside the lock.  A
 * newly allocated cluster is published in the L2 table only after its data
 * (and COW) is written; until then a struct qcow2_alloc on s->allocs covers
 * its guest range so that overlapping writers wait (QEMU's l2meta
 * dependencies).
 *
 * In memory, L1 and refcount table entries are host-endian; L2 slices and
 * refcount blocks in the caches are kept in on-disk (big-endian) format.
 *
 * Ordering of metadata updates (crash safety), in short:
 *   - new L2 table: refcount flushed, table written + flushed, then the L1
 *     entry (alloc_l2_table in cluster.c);
 *   - data cluster: data and COW written, then the L2 entry in the cache;
 *     the L2 cache depends on the refcount cache (qcow2_cache_set_dependency)
 *     so refcounts reach the disk before any L2 slice that uses them;
 *   - freeing: L2 entry cleared first, then the refcount cache is made to
 *     depend on the L2 cache and the refcount dropped;
 *   - new refcount blocks / table (grow_refcounts in refcount.c): written
 *     and flushed before the table entry or header field points at them.
 * Header fields are written in place (8/12-byte writes); nothing rewrites
 * the whole header cluster yet, so unknown extensions stay where they are
 * (qcow2_ext list keeps them for a future full rewrite).
 *
 * For the engineer adding check/repair and snapshots: walk tables with
 * qcow2_get_l2_slice/qcow2_l2_entry (or read whole L2 tables directly after
 * qcow2_cache_write_back), count with qcow2_get_refcount and fix with
 * qcow2_update_refcount; entries that are not COPIED (refcount > 1) are
 * already handled by the write path (a new cluster or L2 table is allocated
 * and the old one's refcount dropped).  A dirty image (lazy refcounts) is
 * repaired by qcow2_check_locked (check.c) on a read-write open.
 */
#ifndef VDISK_QCOW2_H
#define VDISK_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/block_driver.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

/* qcow2.txt "Header": feature bits. */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* qcow2.txt "Header extensions". */
#define QCOW2_EXT_END 0
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* qcow2.txt "Cluster mapping": L1/L2 entry bits. */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0)
#define QCOW2_L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L1E_RESERVED_MASK 0x7f000000000001ffull
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull

/* QEMU's limits (block/qcow2.h). */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_HOST_OFFSET (1ull << 56)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 104
#define QCOW2_SUBCLUSTERS 32 /* per cluster with extended L2 entries */
#define QCOW2_MAX_BACKING_DEPTH 16

/* What a guest range maps to (QEMU's QCow2SubclusterType). */
enum qcow2_sc_type {
	QCOW2_SC_UNALLOCATED, /* backing file or zeroes */
	QCOW2_SC_ZERO, /* reads as zero (plain or with a host cluster kept) */
	QCOW2_SC_NORMAL, /* data at a host offset */
	QCOW2_SC_COMPRESSED,
	QCOW2_SC_INVALID, /* corrupt entry */
};

/* One metadata cache (cache.c).  Entries are tables of entry_size bytes. */
struct qcow2_cache_entry {
	uint64_t offset; /* host offset of the table, 0 = empty slot */
	int ref;
	bool dirty;
	bool used; /* looked up since the last clean pass */
};
struct qcow2_cache {
	struct qcow2_cache_entry *entries;
	uint8_t *tables; /* n * entry_size bytes */
	int n;
	uint32_t entry_size;
	enum vd_debug_event load_ev, update_ev;
	unsigned meta_type; /* QCOW2_OL_* class of the tables (ignored by the
			    * overlap check of their write-back) */
	/* Lookup: hash chains by offset; eviction: a use-ordered list (most
	 * recent at lru_head).  Indices into entries, -1 = none. */
	int *hash_head, *hash_next;
	uint32_t hash_mask;
	int *lru_prev, *lru_next;
	int lru_head, lru_tail;
	/* Ordering (QEMU's qcow2_cache_set_dependency / depends_on_flush):
	 * before this cache writes an entry, @depends is flushed, or the file is
	 * flushed when @depends_on_flush. */
	struct qcow2_cache *depends;
	bool depends_on_flush;
};

/*
 * Metadata overlap classes, QEMU's QCOW2_OL_* (block/qcow2.h), in QEMU's
 * order: a write that overlaps several is reported with the lowest.
 */
enum {
	QCOW2_OL_MAIN_HEADER_BITNR,
	QCOW2_OL_ACTIVE_L1_BITNR,
	QCOW2_OL_ACTIVE_L2_BITNR,
	QCOW2_OL_REFCOUNT_TABLE_BITNR,
	QCOW2_OL_REFCOUNT_BLOCK_BITNR,
	QCOW2_OL_SNAPSHOT_TABLE_BITNR,
	QCOW2_OL_INACTIVE_L1_BITNR,
	QCOW2_OL_INACTIVE_L2_BITNR,
	QCOW2_OL_BITMAP_DIRECTORY_BITNR,
	QCOW2_OL_COUNT,
};
#define QCOW2_OL_MAIN_HEADER (1u << QCOW2_OL_MAIN_HEADER_BITNR)
#define QCOW2_OL_ACTIVE_L1 (1u << QCOW2_OL_ACTIVE_L1_BITNR)
#define QCOW2_OL_ACTIVE_L2 (1u << QCOW2_OL_ACTIVE_L2_BITNR)
#define QCOW2_OL_REFCOUNT_TABLE (1u << QCOW2_OL_REFCOUNT_TABLE_BITNR)
#define QCOW2_OL_REFCOUNT_BLOCK (1u << QCOW2_OL_REFCOUNT_BLOCK_BITNR)
#define QCOW2_OL_SNAPSHOT_TABLE (1u << QCOW2_OL_SNAPSHOT_TABLE_BITNR)
#define QCOW2_OL_INACTIVE_L1 (1u << QCOW2_OL_INACTIVE_L1_BITNR)
#define QCOW2_OL_INACTIVE_L2 (1u << QCOW2_OL_INACTIVE_L2_BITNR)
#define QCOW2_OL_BITMAP_DIRECTORY (1u << QCOW2_OL_BITMAP_DIRECTORY_BITNR)
/* The overlap-check modes: QEMU's QCOW2_OL_CONSTANT, _CACHED, _ALL. */
#define QCOW2_OL_CONSTANT                                                      \
	(QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1 | QCOW2_OL_REFCOUNT_TABLE | \
	 QCOW2_OL_SNAPSHOT_TABLE | QCOW2_OL_BITMAP_DIRECTORY)
#define QCOW2_OL_CACHED \
	(QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_INACTIVE_L1)
#define QCOW2_OL_ALL (QCOW2_OL_CACHED | QCOW2_OL_INACTIVE_L2)

/*
 * The metadata-cluster index (overlap.c): which host clusters hold which
 * class of metadata, with a reference count per class.  Cost of a query:
 * one hash lookup per cluster of the range, whatever the image size.
 */
#define QCOW2_OL_MAX_SLOTS (1u << 20) /* clusters indexed one by one */
struct qcow2_ol_slot {
	uint64_t cluster; /* host cluster index, UINT64_MAX = empty */
	uint16_t mask; /* classes with a non-zero count */
	uint8_t refs[QCOW2_OL_COUNT]; /* saturating at 255 (then never released) */
};
struct qcow2_ol_extent {
	uint64_t first, end; /* clusters [first, end) */
	unsigned bitnr;
};
struct qcow2_ol_index {
	struct qcow2_ol_slot *slots; /* open addressing, cap a power of two */
	uint64_t cap, used, max_slots;
	uint32_t cluster_bits;
	/* What did not fit in max_slots: compared one by one. */
	struct qcow2_ol_extent *extents;
	size_t nextents, extents_cap;
};
int qcow2_ol_init(struct qcow2_ol_index *ix, uint32_t cluster_bits);
void qcow2_ol_destroy(struct qcow2_ol_index *ix);
void qcow2_ol_clear(struct qcow2_ol_index *ix);
/* Count one more reference of class @bitnr to every cluster that host
 * range [offset, offset + bytes) touches.  Offsets are not trusted: the
 * range is clipped to below 2^56.  0 or -ENOMEM (then part may be added). */
int qcow2_ol_add(struct qcow2_ol_index *ix, unsigned bitnr, uint64_t offset, uint64_t bytes);
/* Undo one qcow2_ol_add of the same range. */
void qcow2_ol_remove(struct qcow2_ol_index *ix, unsigned bitnr, uint64_t offset, uint64_t bytes);
/* Forget every reference of class @bitnr. */
void qcow2_ol_remove_class(struct qcow2_ol_index *ix, unsigned bitnr);
/* The classes (QCOW2_OL_* mask) of the clusters [offset, offset + bytes) touches. */
unsigned qcow2_ol_query(const struct qcow2_ol_index *ix, uint64_t offset, uint64_t bytes);
/* QEMU's name of a class ("active L2 table", ...). */
const char *qcow2_ol_name(unsigned bitnr);

/* An allocation in flight: guest clusters [start, end) being written. */
struct qcow2_alloc {
	struct qcow2_alloc *next;
	uint64_t start, end; /* guest byte range covered, cluster aligned */
	struct vd_co_queue waiters;
};

/* A header extension we do not interpret, kept to write back unchanged. */
struct qcow2_ext {
	struct qcow2_ext *next;
	uint32_t type, len;
	uint8_t data[];
};

struct qcow2_state {
	struct vd_node *node;

	/* Header (qcow2.txt "Header"), validated at open. */
	uint32_t version;
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	uint32_t cluster_bits;
	uint64_t size;
	uint32_t crypt_method;
	uint32_t l1_size;
	uint64_t l1_offset;
	uint64_t reftable_offset;
	uint32_t reftable_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;
	uint64_t incompat, compat, autoclear;
	uint32_t refcount_order;
	uint32_t header_length;
	uint8_t compression_type;

	/* Derived. */
	uint64_t cluster_size;
	bool extl2;
	uint32_t l2_entry_bytes; /* 8, or 16 with extended L2 */
	uint32_t l2_bits; /* log2 of entries per L2 table */
	uint64_t l2_entries;
	uint32_t sc_bits; /* log2 of subcluster size (= cluster_bits without ext L2) */
	uint64_t sc_size;
	uint32_t refcount_bits;
	uint32_t rb_bits; /* log2 of entries per refcount block */
	uint64_t refcount_max;
	uint32_t csize_shift; /* compressed descriptor: 62 - (cluster_bits - 8) */
	uint64_t csize_mask, coffset_mask;

	uint64_t *l1; /* l1_size entries, host-endian */
	uint64_t *reftable; /* reftable_size entries, host-endian */
	uint64_t reftable_size;

	char *backing_file; /* as stored in the image */
	char *backing_fmt;
	char *data_file;
	struct qcow2_ext *unknown_exts;
	uint8_t *feature_table; /* raw feature name table, 48-byte entries */
	uint32_t feature_table_len;

	/* Caches (cache.c). */
	struct qcow2_cache l2_cache, rb_cache;
	/* cache-clean-interval: drop entries unused for that long (0: never). */
	struct vd_timer *clean_timer;
	uint64_t clean_interval_ns;
	uint32_t l2_slice_size; /* bytes of an L2 cache entry */
	uint64_t l2_slice_entries;

	struct vd_co_mutex lock;
	uint64_t free_cluster_index; /* no free cluster below this */
	uint64_t free_byte_offset; /* where the next compressed cluster may go, 0 = none */
	/* Host offsets at or above this were never written nor allocated: the
	 * file size at open, raised by every allocation (refcount 0 -> 1) and
	 * every refcount-area placement.  Such clusters read as zeroes (holes or
	 * preallocated unwritten space), so their zero COW need not be written. */
	uint64_t fresh_from;
	/* End of the space preallocated ahead of allocation (0: none yet). */
	uint64_t prealloc_end;
	bool prealloc_failed; /* the file cannot be grown that way: stop trying */
	struct qcow2_alloc *allocs;
	bool dirty_marked; /* we set the dirty bit (lazy refcounts) */
	/* Bitmaps (bitmap-ops.c): the autoclear bit said they were valid at open
	 * (or we wrote a directory since); guest-visible data changed since. */
	bool bitmaps_valid_at_open;
	bool data_changed;
	/* The bitmaps loaded at a read-write open (QEMU's BdrvDirtyBitmap):
	 * flagged in use on disk until stored back at close; every guest
	 * write, zero write and discard sets their bits (enabled ones). */
	struct qcow2_live_bitmap *live;
	uint32_t n_live;
	bool bitmaps_live;
	/* A bitmap operation or a resize is between storing the live bitmaps
	 * and loading them again (qcow2_bitmaps_op_begin/end): other
	 * coroutines' writes wait for it in qcow2_bitmaps_track, so that none
	 * goes unrecorded in that window. */
	struct vd_co *bitmaps_op;
	struct vd_co_queue bitmaps_op_waiters;
	bool read_only;
	/* A snapshot's L1 table replaced the active one in s->l1 (read-only,
	 * qcow2_snapshot_load_tmp): it may cover less than the disk size. */
	bool tmp_snapshot;
	bool corrupt_reported;

	/* Overlap protection (overlap.c): the classes checked (QCOW2_OL_*,
	 * from the overlap-check options) and the index of metadata clusters,
	 * kept for read-write opens.  ol_broken: the index could not be kept
	 * up to date (out of memory, unreadable snapshot table): every write
	 * is refused rather than made unchecked. */
	unsigned ol_checks;
	struct qcow2_ol_index ol;
	bool ol_ready, ol_broken;
	bool ol_check_open; /* opened for check: a broken snapshot table is no error */
	/* The extents added to the index for the header-level tables, to take
	 * them out again when the header moves them. */
	uint64_t ol_snapshots_bytes;
	uint64_t ol_bitmap_dir_offset, ol_bitmap_dir_bytes;
};

struct qcow2_live_bitmap {
	char *name;
	uint8_t gran_bits;
	bool enabled;
	uint8_t *bits; /* whole clusters of bitmap data, as on disk */
	uint64_t nbits; /* bits that cover the image */
	bool modified; /* a write reached it since it was loaded */
};

/* Helpers. */
static inline uint64_t qcow2_offset_into_cluster(const struct qcow2_state *s, uint64_t off)
{
	return off & (s->cluster_size - 1);
}
static inline uint64_t qcow2_start_of_cluster(const struct qcow2_state *s, uint64_t off)
{
	return off & ~(s->cluster_size - 1);
}
static inline uint64_t qcow2_round_up_cluster(const struct qcow2_state *s, uint64_t off)
{
	return (off + s->cluster_size - 1) & ~(s->cluster_size - 1);
}
uint64_t qcow2_be64(const void *p);
uint32_t qcow2_be32(const void *p);
void qcow2_put_be64(void *p, uint64_t v);
void qcow2_put_be32(void *p, uint32_t v);

/* qcow2.c */
int vd_coroutine_fn qcow2_write_incompat(struct qcow2_state *s, uint64_t incompat);
/* Set the corrupt bit, make the node read-only; returns -EIO. */
int vd_coroutine_fn qcow2_signal_corruption(struct qcow2_state *s, const char *fmt, ...)
	VD_PRINTF(2, 3);
int vd_coroutine_fn qcow2_mark_dirty(struct qcow2_state *s);

/* cache.c */
int qcow2_cache_init(struct qcow2_cache *c, int n, uint32_t entry_size, enum vd_debug_event load,
		     enum vd_debug_event update, unsigned meta_type);
void qcow2_cache_destroy(struct qcow2_cache *c);
/* Get the table at host @offset (loading it unless @fresh: then zero it);
 * *table points into the cache until qcow2_cache_put. */
int vd_coroutine_fn qcow2_cache_get(struct qcow2_state *s, struct qcow2_cache *c, uint64_t offset,
				    bool fresh, void **table);
/* Drop the clean entries nobody looked up since the previous call and give
 * their memory back to the system (QEMU's qcow2_cache_clean_unused). */
void qcow2_cache_clean_unused(struct qcow2_cache *c);
void qcow2_cache_put(struct qcow2_cache *c, void *table);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, void *table);
/* Write back dirty entries (after their dependencies); flush the file too. */
int vd_coroutine_fn qcow2_cache_flush(struct qcow2_state *s, struct qcow2_cache *c);
int vd_coroutine_fn qcow2_cache_write_back(struct qcow2_state *s, struct qcow2_cache *c);
int vd_coroutine_fn qcow2_cache_set_dependency(struct qcow2_state *s, struct qcow2_cache *c,
					       struct qcow2_cache *dep);
void qcow2_cache_depends_on_flush(struct qcow2_cache *c);
/* Drop a table from the cache without writing it (it was freed). */
void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset, uint64_t len);
bool qcow2_cache_has_dirty(const struct qcow2_cache *c);

/* refcount.c */
uint64_t qcow2_refcount_get_entry(const void *block, uint32_t order, uint64_t index);
void qcow2_refcount_set_entry(void *block, uint32_t order, uint64_t index, uint64_t value);
int vd_coroutine_fn qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster_index,
				       uint64_t *refcount);
/* Allocate @size bytes (rounded up to clusters) of contiguous host space with
 * refcount 1; returns the host offset or -errno. */
int64_t vd_coroutine_fn qcow2_alloc_clusters(struct qcow2_state *s, uint64_t size);
/* Host space [offset, offset + len) has been allocated or written: it is no
 * longer fresh (see fresh_from). */
void qcow2_note_used(struct qcow2_state *s, uint64_t offset, uint64_t len);
/* Add @addend (+1/-1) to the refcounts of the clusters in [offset, offset+len). */
int vd_coroutine_fn qcow2_update_refcount(struct qcow2_state *s, uint64_t offset, uint64_t len,
					  int addend);
/* Drop one reference of whatever an L2 entry points to (normal or compressed). */
int vd_coroutine_fn qcow2_free_l2_entry(struct qcow2_state *s, uint64_t entry);
/* Would qcow2_free_l2_entry free metadata (a crafted L2 entry naming a
 * table)?  Then -EIO and the corrupt bit: call it before changing anything
 * that leads to the free. */
int vd_coroutine_fn qcow2_check_free_l2_entry(struct qcow2_state *s, uint64_t entry);
/* Host bytes in use for metadata and data after the last allocated cluster. */
int vd_coroutine_fn qcow2_load_reftable(struct qcow2_state *s, struct vd_error *err);

/* cluster.c */
struct qcow2_map {
	enum qcow2_sc_type type;
	uint64_t host; /* host offset of the start of the range (NORMAL) */
	uint64_t bytes; /* length of the range with this type (contiguous host) */
	uint64_t l2_entry; /* first cluster's L2 entry (COMPRESSED, COW decisions) */
	uint64_t l2_bitmap;
};
/* Map guest @offset for at most @bytes.  Takes s->lock held. */
int vd_coroutine_fn qcow2_get_mapping(struct qcow2_state *s, uint64_t offset, uint64_t bytes,
				      struct qcow2_map *m);
/* Get the L2 slice holding the entry of guest @offset; allocate the L2 table
 * when @alloc.  *slice == NULL (returns 0) when not allocated and !alloc. */
int vd_coroutine_fn qcow2_get_l2_slice(struct qcow2_state *s, uint64_t offset, bool alloc,
				       void **slice, uint64_t *index);
uint64_t qcow2_l2_entry(const struct qcow2_state *s, const void *slice, uint64_t i);
uint64_t qcow2_l2_bitmap(const struct qcow2_state *s, const void *slice, uint64_t i);
void qcow2_set_l2_entry(struct qcow2_state *s, void *slice, uint64_t i, uint64_t entry);
void qcow2_set_l2_bitmap(struct qcow2_state *s, void *slice, uint64_t i, uint64_t bitmap);
enum qcow2_sc_type qcow2_sc_type(const struct qcow2_state *s, uint64_t entry, uint64_t bitmap,
				 unsigned sc);
int vd_coroutine_fn qcow2_discard_clusters(struct qcow2_state *s, uint64_t offset, uint64_t bytes,
					   bool full);
int vd_coroutine_fn qcow2_zero_clusters(struct qcow2_state *s, uint64_t offset, uint64_t bytes,
					int flags);

/* io.c */
int vd_coroutine_fn qcow2_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes,
				    struct vd_qiov *qiov, int flags);
int vd_coroutine_fn qcow2_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes,
				     struct vd_qiov *qiov, int flags);
int vd_coroutine_fn qcow2_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes,
					  int64_t *pnum, int64_t *map, struct vd_node **file);
/* With s->lock held: wait for overlapping allocations, then update L2. */
int vd_coroutine_fn qcow2_wait_and_discard(struct qcow2_state *s, uint64_t offset, uint64_t bytes);
/* The same, leaving the clusters unallocated (the backing file shows). */
int vd_coroutine_fn qcow2_wait_and_discard_full(struct qcow2_state *s, uint64_t offset,
						uint64_t bytes);
int vd_coroutine_fn qcow2_wait_and_zero(struct qcow2_state *s, uint64_t offset, uint64_t bytes,
					int flags);
/* overlap.c: the check and the upkeep of the index in s->ol. */
/* The pre-write check (QEMU's qcow2_pre_write_overlap_check): if host range
 * [offset, offset + size) overlaps metadata of a class in s->ol_checks other
 * than @ignore, mark the image corrupt and return -EIO.  O(1) per cluster. */
int vd_coroutine_fn qcow2_check_overlap(struct qcow2_state *s, unsigned ignore, uint64_t offset,
					uint64_t size);
/* Before a data reference (L2 entry) is dropped: -EIO and the corrupt bit
 * if the cluster it names is metadata of a checked class (vdisk's own
 * check: only a crafted image gets there). */
int vd_coroutine_fn qcow2_check_free_overlap(struct qcow2_state *s, uint64_t offset, uint64_t size);
/* Parse overlap-check, overlap-check.template, overlap-check.<class> into
 * s->ol_checks (QEMU's qcow2_update_options_prepare). */
int qcow2_overlap_opts(struct qcow2_state *s, struct vd_opts *opts, struct vd_error *err);
/* (Re)build the whole index from the in-memory tables, the snapshot table
 * (read from the file) and, with inactive-l2 checks, every snapshot's L1
 * table.  Called at a read-write open and after operations that move many
 * tables (snapshots, resize, repair).  On failure the index is broken and
 * writes are refused. */
int vd_coroutine_fn qcow2_overlap_rebuild(struct qcow2_state *s);
/* Incremental upkeep where metadata moves one table at a time.  Failures
 * (out of memory) break the index: writes are refused from then on. */
void qcow2_overlap_add(struct qcow2_state *s, unsigned bitnr, uint64_t offset, uint64_t bytes);
void qcow2_overlap_remove(struct qcow2_state *s, unsigned bitnr, uint64_t offset, uint64_t bytes);

/* compress.c */
int qcow2_decompress(int type, uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len);
/* Returns the compressed length, -ENOSPC if it would not fit in @dst_len. */
long qcow2_compress(int type, uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len);

/* snapshot.c: the snapshot table (qcow2.txt "Snapshots"). */
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_SNAPSHOTS_BYTES (64ull << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024
struct qcow2_snapshot {
	uint64_t l1_offset;
	uint32_t l1_size;
	char *id, *name; /* NUL-terminated copies */
	uint32_t date_sec, date_nsec;
	uint64_t vm_clock;
	uint64_t vm_state_size; /* the large one when present */
	uint64_t disk_size; /* the image size when absent */
	uint64_t icount; /* UINT64_MAX when absent */
	uint32_t extra_size;
	uint8_t *extra; /* raw extra data, kept for rewriting */
};
/* Read and validate the table: returns nb_snapshots and a malloc'd array
 * (*table_bytes: its size on disk), or -errno. */
int vd_coroutine_fn qcow2_read_snapshots(struct qcow2_state *s, struct qcow2_snapshot **out,
					 uint64_t *table_bytes, struct vd_error *err);
int vd_coroutine_fn qcow2_read_snapshots_repair(struct qcow2_state *s, struct qcow2_snapshot **out,
						uint64_t *table_bytes, uint32_t *dropped,
						struct vd_error *err);
int vd_coroutine_fn qcow2_rewrite_snapshots(struct qcow2_state *s, struct qcow2_snapshot *sn,
					    uint32_t n, uint64_t old_bytes, uint64_t *new_bytes);
void qcow2_free_snapshots(struct qcow2_snapshot *sn, uint32_t n);
int vd_coroutine_fn qcow2_snapshot_list(struct vd_node *n, struct vd_snapshot_info **out);
int vd_coroutine_fn qcow2_snapshot_create(struct vd_node *n, const struct vd_snapshot_info *info,
					  struct vd_error *err);
int vd_coroutine_fn qcow2_snapshot_goto(struct vd_node *n, const char *id_or_name,
					struct vd_error *err);
int vd_coroutine_fn qcow2_snapshot_delete(struct vd_node *n, const char *id_or_name,
					  struct vd_error *err);
int vd_coroutine_fn qcow2_snapshot_load_tmp(struct vd_node *n, const char *id, const char *name,
					    struct vd_error *err);

/* resize.c */
/* Resize with s->lock held (resize.c; also used to apply a snapshot of
 * another size).  0 or -errno with the reason in @err. */
int qcow2_truncate_locked(struct qcow2_state *s, uint64_t new_size, struct vd_error *err);
/* The same, live bitmaps resized along (resize.c). */
int qcow2_truncate_live(struct qcow2_state *s, uint64_t new_size, struct vd_error *err);
/* Grow the active L1 table to at least @entries entries (s->lock held). */
int qcow2_grow_l1(struct qcow2_state *s, uint64_t entries);
int vd_coroutine_fn qcow2_co_truncate(struct vd_node *n, int64_t size, bool exact,
				      enum vd_prealloc prealloc, struct vd_error *err);

/* check.c: qemu-img check (counting rules of QEMU's qcow2-refcount.c). */
int vd_coroutine_fn qcow2_co_check(struct vd_node *n, struct vd_check_result *res, int fix);
/* With s->lock held: check and repair everything (dirty image on open). */
int vd_coroutine_fn qcow2_check_locked(struct qcow2_state *s, struct vd_check_result *res, int fix);

/* The refcount width change of amend (s->lock held): a new structure with
 * entries of 2^@order bits, the old one freed. */
int vd_coroutine_fn qcow2_change_refcount_order(struct qcow2_state *s, uint32_t order,
						struct vd_error *err);
/* amend.c: qemu-img amend (compat, lazy_refcounts, refcount_bits, size). */
int vd_coroutine_fn qcow2_co_amend(struct vd_node *n, struct vd_opts *opts, bool force,
				   struct vd_error *err);
/* Rewrite the header cluster from the state (amend.c). */
int vd_coroutine_fn qcow2_write_header(struct qcow2_state *s, struct vd_error *err);
/* bitmap-ops.c: qemu-img bitmap on persistent dirty bitmaps. */
int vd_coroutine_fn qcow2_co_bitmap(struct vd_node *n, enum vd_bitmap_action act, const char *name,
				    uint64_t granularity, struct vd_node *src, const char *src_name,
				    struct vd_error *err);
/* The bitmaps autoclear bit, cleared when a read-write open could not load
 * the bitmaps, set again while the image's data is unchanged since the open
 * and the bitmaps were valid then (check -r); and cleared for good. */
int vd_coroutine_fn qcow2_bitmaps_revalidate(struct qcow2_state *s);
int vd_coroutine_fn qcow2_bitmaps_invalidate(struct qcow2_state *s);
/* qcow2_truncate_locked, the valid bitmaps on disk resized along (an
 * inconsistent one refuses the resize, as QEMU). */
int vd_coroutine_fn qcow2_truncate_with_bitmaps(struct qcow2_state *s, uint64_t new_size,
						struct vd_error *err);
/* Live bitmaps (bitmap-ops.c), as QEMU's qcow2_load_dirty_bitmaps and
 * qcow2_store_persistent_dirty_bitmaps: load the consistent bitmaps and flag
 * them in use on disk (read-write open); set the bits of a written range;
 * store them back, in-use flag cleared (close).  park = store and drop from
 * memory, so that the on-disk bitmaps can be operated on; unpark = load. */
int vd_coroutine_fn qcow2_bitmaps_load_live(struct qcow2_state *s, struct vd_error *err);
void vd_coroutine_fn qcow2_bitmaps_track(struct qcow2_state *s, uint64_t offset, uint64_t bytes);
void qcow2_bitmaps_op_begin(struct qcow2_state *s);
void qcow2_bitmaps_op_end(struct qcow2_state *s);
int vd_coroutine_fn qcow2_bitmaps_store_live(struct qcow2_state *s);
void qcow2_bitmaps_free_live(struct qcow2_state *s);
/* chain.c: backing chains and measure. */
int vd_coroutine_fn qcow2_co_change_backing_file(struct vd_node *n, const char *backing_file,
						 const char *backing_fmt, struct vd_error *err);
int vd_coroutine_fn qcow2_co_make_empty(struct vd_node *n, struct vd_error *err);
int vd_coroutine_fn qcow2_co_measure(struct vd_opts *opts, struct vd_node *in,
				     struct vd_measure_info *info, struct vd_error *err);

/* bitmap.c: persistent bitmaps, read only. */
#define QCOW2_BITMAP_IN_USE (1u << 0)
#define QCOW2_BITMAP_AUTO (1u << 1)
struct qcow2_bitmap {
	char *name;
	uint32_t flags;
	uint8_t granularity_bits;
};
/* The bitmap directory, when the autoclear bit says it is valid: returns
 * the count and a malloc'd array (0 and NULL when none), or -errno
 * (-EINVAL for a damaged directory). */
int vd_coroutine_fn qcow2_read_bitmaps(struct qcow2_state *s, struct qcow2_bitmap **out);
void qcow2_free_bitmaps(struct qcow2_bitmap *bm, int n);
/* Is @in a qcow2 node that can hold persistent bitmaps (v3)? */
bool qcow2_supports_bitmaps(struct vd_node *in);
/* Bytes @in's bitmaps would take in an image of cluster size @cs. */
uint64_t vd_coroutine_fn qcow2_bitmaps_size(struct vd_node *in, uint64_t cs);

/* create.c */
int qcow2_create(const char *filename, struct vd_opts *opts, struct vd_error *err);
extern const char *const qcow2_create_opts[];

#endif
