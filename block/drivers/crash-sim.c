/* SPDX-License-Identifier: MIT */
/*
 * "crash-sim": a filter that simulates a power cut, after SQLite's crash VFS
 * (src/test6.c).  QEMU has no equivalent; the options are spelled in its
 * style:
 *
 *   driver=qcow2,file.driver=crash-sim,file.image.filename=IMG,
 *       file.cut-at=N,file.mode=drop|reorder|prefix,file.seed=S,
 *       file.torn-writes=on|off
 *
 * Every modifying request (write, write-zeroes, discard, truncate) is kept in
 * a volatile log in memory instead of reaching the image below, and the log
 * is served to reads above, as a disk's volatile write cache would be.  A
 * flush makes the log durable: it is written to the image, in order, and
 * the image is flushed.  A clean close does the same (the operating system
 * would write it back eventually).
 *
 * cut-at=N (default 0: never) simulates a power loss when the Nth modifying
 * request arrives.  That request joins the log (it may have reached the
 * medium, whole or torn), then a part of the log chosen by "mode" and
 * "seed" is written to the image and the image is flushed; every request
 * after that, reads included, fails with EIO so that the workload stops.
 * The image left on disk is one that a power cut could have left:
 *
 *   drop     each write of the log persists or is lost, by a seeded coin;
 *   reorder  the log is written back in a seeded random order and the power
 *            goes after a seeded number of them (0..all: unlike drop, the
 *            extremes are as likely as the middle);
 *   prefix   a seeded prefix of the log persists, as on a disk that keeps
 *            the order of writes.
 *
 * With torn-writes=on each persisting write may be torn: a seeded subset of
 * its sectors (512 bytes, or the image's request alignment if larger)
 * persists; in prefix mode only the last one.  Whatever the mode, persisting
 * writes are applied in the order they were issued, so a sector holds one of
 * the versions written to it since the last flush, never an older version
 * over a newer one: a cache holds the newest data of a sector, and a write
 * completed before the next was issued cannot overtake it on the medium.
 *
 * Requests are counted (from 1, per open) in the trace point
 * crash_sim_write (VDISK_TRACE=crash_sim_*), which is how a campaign learns
 * the number of cut points of its workload; crash_sim_cut says what the cut
 * kept.  FUA is not offered: the core turns a FUA write into a write and a
 * flush, which is what the log needs to stay in issue order.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"

enum entry_kind {
	ENTRY_WRITE,
	ENTRY_ZEROES,
	ENTRY_DISCARD,
	ENTRY_TRUNCATE
};
static const char *const entry_names[] = {"write", "write_zeroes", "discard", "truncate"};

struct log_entry {
	enum entry_kind kind;
	int64_t offset, bytes; /* ENTRY_TRUNCATE: offset is the new size */
	uint8_t *data; /* ENTRY_WRITE */
	int flags; /* ENTRY_ZEROES: VD_REQ_MAY_UNMAP */
	bool exact; /* ENTRY_TRUNCATE */
	enum vd_prealloc prealloc; /* ENTRY_TRUNCATE */
};

enum cut_mode {
	MODE_DROP,
	MODE_REORDER,
	MODE_PREFIX
};
static const char *const mode_names[] = {"drop", "reorder", "prefix", NULL};

struct crash_sim_state {
	struct log_entry *log;
	size_t nlog, cap;
	uint64_t cut_at, seed, writes;
	int mode;
	bool torn_writes;
	bool dead; /* the power was cut */
	uint64_t rng;
};

/* splitmix64: small, and the same sequence everywhere for a seed. */
static uint64_t rng_next(struct crash_sim_state *s)
{
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t rng_below(struct crash_sim_state *s, uint64_t n)
{
	return n ? rng_next(s) % n : 0;
}

static void free_log(struct crash_sim_state *s)
{
	for (size_t i = 0; i < s->nlog; i++)
		free(s->log[i].data);
	s->nlog = 0;
}

/* Drop the first @n entries (persisted) and keep the rest. */
static void shift_log(struct crash_sim_state *s, size_t n)
{
	if (n == 0)
		return; /* s->log may still be NULL: no memmove from it */
	for (size_t i = 0; i < n; i++)
		free(s->log[i].data);
	memmove(s->log, s->log + n, (s->nlog - n) * sizeof(*s->log));
	s->nlog -= n;
}

static struct log_entry *append(struct crash_sim_state *s)
{
	if (s->nlog == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		struct log_entry *log = realloc(s->log, cap * sizeof(*log));

		if (!log)
			return NULL;
		s->log = log;
		s->cap = cap;
	}
	memset(&s->log[s->nlog], 0, sizeof(s->log[0]));
	return &s->log[s->nlog++];
}

/* --- writing the log to the image ------------------------------------------ */

/* Write [@from, @to) of entry @e (a part of it when torn) to the image. */
static int persist_range(struct vd_node *n, const struct log_entry *e, int64_t from, int64_t to)
{
	struct vd_qiov q;

	switch (e->kind) {
	case ENTRY_WRITE:
		vd_qiov_init_buf(&q, e->data + (from - e->offset), (size_t)(to - from));
		return vd_co_pwritev(n->file, from, to - from, &q, 0);
	case ENTRY_ZEROES:
		return vd_co_pwrite_zeroes(n->file, from, to - from, e->flags);
	case ENTRY_DISCARD:
		return vd_co_pdiscard(n->file, from, to - from);
	case ENTRY_TRUNCATE:
		return vd_co_truncate(n->file, e->offset, e->exact, e->prealloc, NULL);
	}
	return -EINVAL;
}

static int persist(struct vd_node *n, const struct log_entry *e)
{
	return persist_range(n, e, e->offset, e->offset + e->bytes);
}

/* A torn write: each sector (tear unit) persists by a seeded coin. */
static int persist_torn(struct vd_node *n, const struct log_entry *e)
{
	struct crash_sim_state *s = n->opaque;
	int64_t unit =
		n->file->limits.request_alignment > 512 ? n->file->limits.request_alignment : 512;
	int64_t end = e->offset + e->bytes, pos = e->offset;
	int ret = 0;

	if (e->kind == ENTRY_TRUNCATE)
		return persist(n, e);
	while (pos < end && ret == 0) {
		int64_t next = (pos / unit + 1) * unit;

		if (next > end)
			next = end;
		if (rng_next(s) & 1)
			ret = persist_range(n, e, pos, next);
		pos = next;
	}
	return ret;
}

/* Flush: the whole log, in order. On failure the rest stays in the log. */
static int write_back(struct vd_node *n)
{
	struct crash_sim_state *s = n->opaque;
	size_t i;
	int ret = 0;

	for (i = 0; i < s->nlog && ret == 0; i++) {
		ret = persist(n, &s->log[i]);
		if (ret < 0)
			break;
	}
	shift_log(s, i);
	return ret;
}

/* The power goes: persist what the mode and seed choose, then nothing more. */
static void power_cut(struct vd_node *n)
{
	struct crash_sim_state *s = n->opaque;
	size_t count = s->nlog, kept = 0, *order = NULL, prefix = 0;
	bool *keep = calloc(count ? count : 1, sizeof(*keep));
	int ret;

	s->dead = true;
	s->rng = s->seed * 0x2545f4914f6cdd1dull + s->cut_at;
	if (!keep)
		goto out; /* out of memory: everything is lost, also a power cut */
	switch (s->mode) {
	case MODE_DROP:
		for (size_t i = 0; i < count; i++)
			keep[i] = rng_next(s) & 1;
		break;
	case MODE_REORDER:
		order = calloc(count ? count : 1, sizeof(*order));
		if (!order)
			goto out;
		for (size_t i = 0; i < count; i++)
			order[i] = i;
		for (size_t i = count; i > 1; i--) {
			size_t j = (size_t)rng_below(s, i), t = order[i - 1];

			order[i - 1] = order[j];
			order[j] = t;
		}
		prefix = (size_t)rng_below(s, count + 1);
		for (size_t i = 0; i < prefix; i++)
			keep[order[i]] = true;
		break;
	case MODE_PREFIX:
		prefix = (size_t)rng_below(s, count + 1);
		for (size_t i = 0; i < prefix; i++)
			keep[i] = true;
		break;
	}
	for (size_t i = 0; i < count; i++) {
		bool torn = s->torn_writes && (s->mode != MODE_PREFIX || i + 1 == prefix);

		if (!keep[i])
			continue;
		kept++;
		ret = torn ? persist_torn(n, &s->log[i]) : persist(n, &s->log[i]);
		if (ret < 0)
			vd_trace(crash_sim_persist_error, "node %p entry %zu error %d", (void *)n,
				 i, ret);
	}
	vd_co_flush(n->file);
out:
	vd_trace(crash_sim_cut,
		 "node %p cut at write %" PRIu64 " mode %s seed %" PRIu64 ": %zu of %zu "
		 "unflushed writes persisted",
		 (void *)n, s->cut_at, mode_names[s->mode], s->seed, kept, count);
	free(order);
	free(keep);
	free_log(s);
}

/*
 * Count a modifying request; the one that reaches cut-at cuts the power.
 * Returns 0 when it may join the log, -EIO when the power is out.
 */
static int count_write(struct vd_node *n, enum entry_kind kind, int64_t offset, int64_t bytes)
{
	struct crash_sim_state *s = n->opaque;

	if (s->dead)
		return -EIO;
	s->writes++;
	vd_trace(crash_sim_write, "node %p write %" PRIu64 " %s offset %" PRId64 " bytes %" PRId64,
		 (void *)n, s->writes, entry_names[kind], offset, bytes);
	return 0;
}

/* After appending the entry: the cut, if this was the chosen request. */
static int maybe_cut(struct vd_node *n)
{
	struct crash_sim_state *s = n->opaque;

	if (s->cut_at && s->writes == s->cut_at) {
		power_cut(n);
		return -EIO;
	}
	return 0;
}

/* --- requests -------------------------------------------------------------- */

/* The image below, then the log over it in order. */
static int crash_sim_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes,
			       struct vd_qiov *qiov, int flags)
{
	struct crash_sim_state *s = n->opaque;
	int64_t end = offset + bytes;
	int ret;

	if (s->dead)
		return -EIO;
	ret = vd_co_preadv(n->file, offset, bytes, qiov, flags);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < s->nlog; i++) {
		const struct log_entry *e = &s->log[i];
		int64_t from, to;

		if (e->kind == ENTRY_TRUNCATE) {
			/* Shrunk: what lay past the new end reads as zeroes. */
			if (e->offset < end) {
				from = e->offset > offset ? e->offset : offset;
				vd_qiov_memset(qiov, (size_t)(from - offset), 0,
					       (size_t)(end - from));
			}
			continue;
		}
		from = e->offset > offset ? e->offset : offset;
		to = e->offset + e->bytes < end ? e->offset + e->bytes : end;
		if (from >= to)
			continue;
		if (e->kind == ENTRY_WRITE)
			vd_qiov_from_buf(qiov, (size_t)(from - offset),
					 e->data + (from - e->offset), (size_t)(to - from));
		else /* zeroes, and discard as the file driver does it */
			vd_qiov_memset(qiov, (size_t)(from - offset), 0, (size_t)(to - from));
	}
	return 0;
}

static int crash_sim_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes,
				struct vd_qiov *qiov, int flags)
{
	struct crash_sim_state *s = n->opaque;
	struct log_entry *e;
	int ret = count_write(n, ENTRY_WRITE, offset, bytes);

	if (ret < 0)
		return ret;
	e = append(s);
	if (!e)
		return -ENOMEM;
	e->data = malloc((size_t)bytes);
	if (!e->data) {
		s->nlog--;
		return -ENOMEM;
	}
	vd_qiov_to_buf(qiov, 0, e->data, (size_t)bytes);
	e->kind = ENTRY_WRITE;
	e->offset = offset;
	e->bytes = bytes;
	return maybe_cut(n);
}

static int log_range(struct vd_node *n, enum entry_kind kind, int64_t offset, int64_t bytes,
		     int flags)
{
	struct crash_sim_state *s = n->opaque;
	struct log_entry *e;
	int ret = count_write(n, kind, offset, bytes);

	if (ret < 0)
		return ret;
	e = append(s);
	if (!e)
		return -ENOMEM;
	e->kind = kind;
	e->offset = offset;
	e->bytes = bytes;
	e->flags = flags & VD_REQ_MAY_UNMAP;
	return maybe_cut(n);
}

static int crash_sim_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	return log_range(n, ENTRY_ZEROES, offset, bytes, flags);
}

static int crash_sim_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	return log_range(n, ENTRY_DISCARD, offset, bytes, 0);
}

static int crash_sim_co_truncate(struct vd_node *n, int64_t size, bool exact,
				 enum vd_prealloc prealloc, struct vd_error *err)
{
	struct crash_sim_state *s = n->opaque;
	struct log_entry *e;
	int ret = count_write(n, ENTRY_TRUNCATE, size, 0);

	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Power cut (crash-sim)");
	e = append(s);
	if (!e)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	e->kind = ENTRY_TRUNCATE;
	e->offset = size;
	e->exact = exact;
	e->prealloc = prealloc;
	n->size = size;
	ret = maybe_cut(n);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Power cut (crash-sim)");
	return 0;
}

/* The core flushes the image afterwards. */
static int crash_sim_co_flush(struct vd_node *n)
{
	struct crash_sim_state *s = n->opaque;

	if (s->dead)
		return -EIO;
	return write_back(n);
}

/* Like a protocol: everything is data (the log may cover any of it). */
static int crash_sim_co_block_status(struct vd_node *n, int64_t offset, int64_t bytes,
				     int64_t *pnum, int64_t *map, struct vd_node **file)
{
	struct crash_sim_state *s = n->opaque;

	if (s->dead)
		return -EIO;
	*pnum = bytes;
	*map = offset;
	*file = n;
	return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

/* --- open and close -------------------------------------------------------- */

static void close_entry(void *opaque)
{
	struct vd_node *n = opaque;
	struct crash_sim_state *s = n->opaque;

	if (!s->dead && s->nlog && write_back(n) == 0)
		vd_co_flush(n->file);
}

static void crash_sim_close(struct vd_node *n)
{
	struct crash_sim_state *s = n->opaque;

	/* A clean close: the log reaches the image (best effort). */
	if (n->file && !s->dead && s->nlog)
		vd_co_run_sync(close_entry, n);
	free_log(s);
	free(s->log);
	s->log = NULL;
	s->cap = 0;
}

static int crash_sim_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct crash_sim_state *s = n->opaque;
	int ret;

	ret = vd_opts_get_u64(opts, "cut-at", 0, &s->cut_at, err);
	if (ret == 0)
		ret = vd_opts_get_u64(opts, "seed", 0, &s->seed, err);
	if (ret == 0)
		ret = vd_opts_get_enum(opts, "mode", mode_names, MODE_DROP, &s->mode, err);
	if (ret == 0)
		ret = vd_opts_get_bool(opts, "torn-writes", false, &s->torn_writes, err);
	if (ret < 0)
		return ret;
	ret = vd_node_open_child(n, opts, "image", "file", flags, &n->file, err);
	if (ret < 0)
		return ret;
	n->size = vd_node_size(n->file);
	/* No FUA: the core emulates it with a flush, which keeps issue order. */
	n->supported_write_flags = 0;
	n->supported_zero_flags = VD_REQ_MAY_UNMAP;
	return 0;
}

const struct vd_block_driver vd_driver_crash_sim = {
	.name = "crash-sim",
	.instance_size = sizeof(struct crash_sim_state),
	/* A filter so that the image below may grow (block/node.c); it has
	 * data of its own, the log, hence its own block_status. */
	.is_filter = true,
	.child_name = "image",
	.open = crash_sim_open,
	.close = crash_sim_close,
	.co_preadv = crash_sim_co_preadv,
	.co_pwritev = crash_sim_co_pwritev,
	.co_flush = crash_sim_co_flush,
	.co_pdiscard = crash_sim_co_pdiscard,
	.co_pwrite_zeroes = crash_sim_co_pwrite_zeroes,
	.co_block_status = crash_sim_co_block_status,
	.co_truncate = crash_sim_co_truncate,
};
