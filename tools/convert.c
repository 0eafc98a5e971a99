/* SPDX-License-Identifier: MIT */
/*
 * vdisk convert [-c] [-f FMT] [-O FMT] [-o OPTS] [-B BACKING [-F FMT]] [-n]
 *               [-p] [-q] [-r RATE] [-S SPARSE] [-t CACHE] [-T CACHE] [-m N]
 *               [-W] [-U] [--salvage] [--target-is-zero]
 *               [--bitmaps [--skip-broken-bitmaps]] SRC... DST
 *
 * qemu-img convert (7.2): the same options, messages and exit codes.
 *
 * The copy engine is QEMU's: -m coroutines on the loop, each taking the next
 * chunk of the concatenated sources under a lock.  What a chunk is comes
 * from the sources' block status through their backing chains, so holes are
 * never read: they are skipped when the target is known to read as zeroes
 * (a new image without backing file) and written as zeroes otherwise.  Data
 * chunks are read into aligned buffers and scanned in -S sized blocks; the
 * blocks of zeroes among them are treated as holes.  Without -W the writes
 * go out in order (reads still overlap); with -c every chunk is one target
 * cluster, compressed by the qcow2 driver on the loop's worker threads.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <vdisk/coroutine.h>

#include "tools/tools.h"

#define CONVERT_BUF_SIZE (2 * 1024 * 1024) /* QEMU's IO_BUF_SIZE */
#define CONVERT_ZERO_MAX (INT64_C(1) << 30) /* one write-zeroes request at most */
#define CONVERT_MAX_WORKERS 16

enum chunk_status {
	CHUNK_DATA,
	CHUNK_ZERO,
	CHUNK_BACKING, /* unallocated in the source: left to the target's backing */
};

struct convert_src {
	const char *name;
	struct vd_blk *blk;
	int64_t start, size; /* place in the concatenation */
};

struct convert {
	struct convert_src *src;
	int nsrc;
	int64_t total;
	struct vd_blk *dst;

	int64_t buf_size; /* largest data chunk */
	int64_t min_sparse; /* -S in bytes, 0: no zero detection */
	int64_t cluster_size; /* target's, for -c */
	bool compressed, target_zero, target_has_backing, in_order, salvage;

	/* Handing out chunks (under lock): the next offset, and the status
	 * of the source there, valid up to status_end. */
	struct vd_co_mutex lock;
	int64_t next, status_end;
	enum chunk_status status;

	int64_t wr_next; /* in order: the next chunk to write */
	struct vd_co_queue order;

	int running;
	int ret;

	bool progress;
	struct tool_progress pr;
	/* Progress counts the bytes that are copied as data, as qemu-img's
	 * does (its "allocated sectors"), found by a first pass. */
	int64_t alloc_total, alloc_done;
	int64_t done;
	int64_t rate, t0;
};

static void account(struct convert *c, int64_t n)
{
	c->done += n;
	if (c->rate > 0) {
		/* -r: never ahead of RATE bytes per second since the start. */
		int64_t due = c->t0 + (int64_t)((double)c->done * 1e9 / (double)c->rate);
		int64_t now = vd_clock_ns();

		if (due > now)
			vd_co_sleep_ns(due - now);
	}
}

static int source_at(const struct convert *c, int64_t offset)
{
	int i;

	for (i = 0; i < c->nsrc - 1; i++)
		if (offset < c->src[i].start + c->src[i].size)
			break;
	return i;
}

/* Status of the source at @offset (the concatenation's): QEMU's
 * convert_iteration_sectors. */
static int query_status(struct convert *c, int64_t offset)
{
	struct convert_src *s = &c->src[source_at(c, offset)];
	struct vd_node *node = vd_blk_root(s->blk);
	int64_t soff = offset - s->start, pnum = 0;
	int ret;

	if (c->target_has_backing)
		ret = vd_co_block_status(node, soff, s->size - soff, &pnum, NULL, NULL);
	else
		ret = vd_co_block_status_above(node, NULL, soff, s->size - soff, &pnum, NULL, NULL,
					       NULL);
	if (ret < 0)
		return ret;
	if (pnum <= 0)
		return -EIO;
	if (ret & VD_BLOCK_ZERO)
		c->status = CHUNK_ZERO;
	else if (ret & VD_BLOCK_DATA)
		c->status = CHUNK_DATA;
	else
		c->status = c->target_has_backing ? CHUNK_BACKING : CHUNK_DATA;
	c->status_end = offset + pnum;
	return 0;
}

/* The next chunk for a worker: 1 with it in *offset, *bytes, *status; 0 at
 * the end; -errno. */
static int next_chunk(struct convert *c, int64_t *offset, int64_t *bytes, enum chunk_status *status)
{
	int64_t off = c->next, n;
	int ret;

	if (off >= c->total || c->ret)
		return 0;
	if (c->compressed) {
		/* One whole target cluster: zero or backing only if all of it
		 * is, else data (read through the chain). */
		int64_t end = (off / c->cluster_size + 1) * c->cluster_size;
		enum chunk_status st = CHUNK_ZERO;
		bool first = true;

		if (end > c->total)
			end = c->total;
		for (int64_t p = off; p < end;) {
			if (c->status_end <= p) {
				ret = query_status(c, p);
				if (ret < 0)
					return ret;
			}
			if (first)
				st = c->status;
			else if (st != c->status)
				st = CHUNK_DATA;
			first = false;
			p = c->status_end < end ? c->status_end : end;
		}
		*status = st;
		n = end - off;
	} else {
		if (c->status_end <= off) {
			ret = query_status(c, off);
			if (ret < 0)
				return ret;
		}
		*status = c->status;
		n = c->status_end - off;
		if (*status == CHUNK_DATA || c->min_sparse == 0) {
			/* Whole buffers, aligned, so that the target sees
			 * cluster-aligned writes. */
			int64_t lim = c->buf_size - off % c->buf_size;

			if (n > lim)
				n = lim;
		} else if (n > CONVERT_ZERO_MAX) {
			n = CONVERT_ZERO_MAX;
		}
	}
	*offset = off;
	*bytes = n;
	c->next = off + n;
	return 1;
}

static int read_chunk(struct convert *c, int64_t offset, int64_t bytes, uint8_t *buf)
{
	while (bytes > 0) {
		struct convert_src *s = &c->src[source_at(c, offset)];
		int64_t soff = offset - s->start;
		int64_t n = s->size - soff < bytes ? s->size - soff : bytes;
		struct vd_qiov q;
		int ret;

		vd_qiov_init_buf(&q, buf, (size_t)n);
		ret = vd_blk_co_preadv(s->blk, soff, n, &q, 0);
		if (ret < 0 && c->salvage) {
			/* --salvage: sector by sector, what fails reads as
			 * zeroes. */
			for (int64_t i = 0; i < n; i += 512) {
				int64_t len = n - i < 512 ? n - i : 512;

				vd_qiov_init_buf(&q, buf + i, (size_t)len);
				ret = vd_blk_co_preadv(s->blk, soff + i, len, &q, 0);
				if (ret < 0) {
					tool_error("error while reading offset %" PRId64 ": %s",
						   offset + i, strerror(-ret));
					memset(buf + i, 0, (size_t)len);
				}
			}
			ret = 0;
		}
		if (ret < 0) {
			tool_error("error while reading at byte %" PRId64 ": %s", offset,
				   strerror(-ret));
			return ret;
		}
		offset += n;
		bytes -= n;
		buf += n;
	}
	return 0;
}

/* True if @len bytes at @p are all zero. */
static bool buffer_is_zero(const uint8_t *p, size_t len)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	size_t i, nw = len / 8;
	uint64_t acc = 0;

	if (len >= 8 && w[0])
		return false;
	for (i = 0; i + 8 <= nw; i += 8) {
		acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] |
		       w[i + 7];
		if (acc)
			return false;
	}
	for (; i < nw; i++)
		acc |= w[i];
	for (i = nw * 8; i < len; i++)
		acc |= p[i];
	return acc == 0;
}

static int write_zeroes(struct convert *c, int64_t offset, int64_t bytes)
{
	if (c->target_zero)
		return 0;
	return vd_blk_co_pwrite_zeroes(c->dst, offset, bytes, VD_REQ_MAY_UNMAP);
}

static int write_data(struct convert *c, int64_t offset, int64_t bytes, uint8_t *buf, int flags)
{
	struct vd_qiov q;

	vd_qiov_init_buf(&q, buf, (size_t)bytes);
	return vd_blk_co_pwritev(c->dst, offset, bytes, &q, flags);
}

/* Write a data chunk, its -S blocks of zeroes as holes. */
static int write_sparse(struct convert *c, int64_t offset, int64_t bytes, uint8_t *buf)
{
	int64_t pos = 0, run = 0;
	bool run_zero = false;
	int ret;

	while (pos < bytes) {
		int64_t blk = c->min_sparse - (offset + pos) % c->min_sparse;
		bool zero;

		if (blk > bytes - pos)
			blk = bytes - pos;
		zero = buffer_is_zero(buf + pos, (size_t)blk);
		if (pos > run && zero != run_zero) {
			ret = run_zero ? write_zeroes(c, offset + run, pos - run)
				       : write_data(c, offset + run, pos - run, buf + run, 0);
			if (ret < 0)
				return ret;
			run = pos;
		}
		run_zero = zero;
		pos += blk;
	}
	return run_zero ? write_zeroes(c, offset + run, pos - run)
			: write_data(c, offset + run, pos - run, buf + run, 0);
}

static int write_chunk(struct convert *c, int64_t offset, int64_t bytes, enum chunk_status st,
		       uint8_t *buf)
{
	switch (st) {
	case CHUNK_BACKING:
		return 0;
	case CHUNK_ZERO:
		return write_zeroes(c, offset, bytes);
	case CHUNK_DATA:
		break;
	}
	if (c->compressed) {
		if (c->min_sparse && buffer_is_zero(buf, (size_t)bytes))
			return write_zeroes(c, offset, bytes);
		return write_data(c, offset, bytes, buf, VD_REQ_COMPRESSED);
	}
	if (c->min_sparse)
		return write_sparse(c, offset, bytes, buf);
	return write_data(c, offset, bytes, buf, 0);
}

static void set_error(struct convert *c, int ret)
{
	if (!c->ret)
		c->ret = ret;
	vd_co_queue_restart_all(&c->order);
}

static void convert_worker(void *opaque)
{
	struct convert *c = opaque;
	uint8_t *buf = vd_memalign(4096, (size_t)c->buf_size);
	enum chunk_status st = CHUNK_DATA;
	int64_t offset = 0, bytes = 0;
	int ret;

	if (!buf) {
		tool_error("Out of memory");
		set_error(c, -ENOMEM);
		goto out;
	}
	for (;;) {
		vd_co_mutex_lock(&c->lock);
		ret = next_chunk(c, &offset, &bytes, &st);
		vd_co_mutex_unlock(&c->lock);
		if (ret < 0) {
			tool_error("error while reading block status at offset %" PRId64 ": %s",
				   c->next, strerror(-ret));
			set_error(c, ret);
		}
		if (ret <= 0)
			break;

		if (st == CHUNK_DATA) {
			ret = read_chunk(c, offset, bytes, buf);
			if (ret < 0) {
				set_error(c, ret);
				break;
			}
		} else if (st == CHUNK_ZERO && c->min_sparse == 0) {
			/* -S 0: the target is allocated in full. */
			memset(buf, 0, (size_t)bytes);
			st = CHUNK_DATA;
		}

		while (c->in_order && c->wr_next != offset && !c->ret)
			vd_co_queue_wait(&c->order);
		if (c->ret)
			break;
		ret = write_chunk(c, offset, bytes, st, buf);
		if (c->in_order) {
			c->wr_next = offset + bytes;
			vd_co_queue_restart_all(&c->order);
		}
		if (ret < 0) {
			tool_error("error while writing at byte %" PRId64 ": %s", offset,
				   strerror(-ret));
			set_error(c, ret);
			break;
		}
		if (st == CHUNK_DATA && c->alloc_total) {
			c->alloc_done += bytes;
			tool_progress_print(
				&c->pr,
				(float)(100.0 * (double)c->alloc_done / (double)c->alloc_total), 0);
		}
		account(c, bytes);
	}
out:
	free(buf);
	c->running--;
}

/* The bytes that will be copied as data (QEMU's allocated_sectors). */
static void count_allocated(void *opaque)
{
	struct convert *c = opaque;

	for (int64_t off = 0; off < c->total;) {
		int64_t end;

		if (query_status(c, off) < 0) {
			c->alloc_total = 0;
			break;
		}
		end = c->status_end < c->total ? c->status_end : c->total;
		if (c->status == CHUNK_DATA || (c->min_sparse == 0 && c->status == CHUNK_ZERO))
			c->alloc_total += end - off;
		off = end;
	}
	c->status_end = 0;
}

static int run_copy(struct convert *c, int workers, struct vd_loop *loop)
{
	int i;

	vd_co_mutex_init(&c->lock);
	vd_co_queue_init(&c->order);
	c->t0 = vd_clock_ns();
	tool_progress_init(&c->pr, c->progress, 1.0f);
	/* Always, as qemu-img: SIGUSR1 asks for a report without -p too. */
	vd_co_run_sync(count_allocated, c);
	tool_progress_set_bytes(&c->pr, c->alloc_total);
	tool_progress_print(&c->pr, 0, 100);
	for (i = 0; i < workers; i++) {
		struct vd_co *co = vd_co_create(convert_worker, c);

		if (!co) {
			if (i == 0) {
				tool_error("Out of memory");
				return -ENOMEM;
			}
			break;
		}
		c->running++;
		vd_co_enter(co);
	}
	while (c->running > 0)
		vd_loop_run_once(loop, true);
	if (c->ret)
		return c->ret;
	tool_progress_print(&c->pr, 100, 0);
	tool_progress_end(&c->pr);
	return 0;
}

static bool format_known(const char *fmt)
{
	const char *const *names;

	for (names = vd_driver_names(); names && *names; names++)
		if (!strcmp(*names, fmt))
			return true;
	return false;
}

/* Is @st the file of @n or of a node below it (file child, backing chain)? */
static bool node_uses_file(struct vd_node *n, const struct stat *st)
{
	struct stat nst;

	if (!n)
		return false;
	if (!stat(vd_node_filename(n), &nst) && nst.st_dev == st->st_dev &&
	    nst.st_ino == st->st_ino)
		return true;
	return node_uses_file(vd_node_file_child(n), st) || node_uses_file(vd_node_backing(n), st);
}

/*
 * QEMU's create takes the write lock of the target, which fails while a
 * source (or a backing file of one) holds it open without -U: so creating
 * over an image that is being read fails before the file is touched.
 */
static bool target_is_open(const struct convert *c, const char *name, bool force_share)
{
	struct stat st;
	int i;

	if (force_share || stat(name, &st) < 0)
		return false;
	for (i = 0; i < c->nsrc; i++)
		if (node_uses_file(vd_blk_root(c->src[i].blk), &st))
			return true;
	return false;
}

struct flush_args {
	struct vd_blk *blk;
	int ret;
};

static void flush_co(void *opaque)
{
	struct flush_args *f = opaque;

	f->ret = vd_blk_co_flush(f->blk);
}

static void usage(void)
{
	printf("usage: vdisk convert [--object objectdef] [--image-opts] [--target-image-opts] "
	       "[--target-is-zero] [--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] "
	       "[-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] "
	       "[-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] "
	       "filename [filename2 [...]] output_filename\n");
}

/*
 * --bitmaps: the persistent bitmaps of a qcow2 v3 source, copied to a qcow2
 * v3 target after the data (qemu-img's convert_check_bitmaps and
 * convert_copy_bitmaps): each added with its granularity, the source's
 * bits merged in, disabled if it was.  An inconsistent (in-use) bitmap
 * stops the convert before anything is created, or is skipped with
 * --skip-broken-bitmaps.
 */
static bool node_has_bitmaps(struct vd_node *n, struct vd_image_info *info)
{
	struct vd_error err = {0};
	const char *compat;

	if (vd_node_get_info(n, info, &err) < 0 || !info->format || strcmp(info->format, "qcow2") ||
	    !info->format_specific)
		return false;
	compat = vd_opts_peek(info->format_specific, "compat");
	return compat && !strcmp(compat, "1.1");
}

static bool bitmap_flag(const struct vd_opts *o, int i, const char *flag)
{
	char key[64];
	const char *v;

	for (int j = 0;; j++) {
		snprintf(key, sizeof(key), "bitmaps.%d.flags.%d", i, j);
		v = vd_opts_peek(o, key);
		if (!v)
			return false;
		if (!strcmp(v, flag))
			return true;
	}
}

static const char *bitmap_name(const struct vd_opts *o, int i)
{
	char key[64];

	snprintf(key, sizeof(key), "bitmaps.%d.name", i);
	return o ? vd_opts_peek(o, key) : NULL;
}

static int check_bitmaps(struct vd_node *src, bool skip_broken)
{
	struct vd_image_info info = {0};
	const char *name;
	int ret = 0;

	if (!node_has_bitmaps(src, &info)) {
		tool_error("Source lacks bitmap support");
		vd_image_info_cleanup(&info);
		return -1;
	}
	for (int i = 0; !skip_broken && (name = bitmap_name(info.format_specific, i)); i++) {
		if (bitmap_flag(info.format_specific, i, "in-use")) {
			tool_error("Cannot copy inconsistent bitmap '%s'", name);
			fprintf(stderr,
				"Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' "
				"to delete it\n");
			ret = -1;
			break;
		}
	}
	vd_image_info_cleanup(&info);
	return ret;
}

static int copy_bitmaps(struct vd_node *src, struct vd_node *dst, bool skip_broken)
{
	struct vd_image_info info = {0};
	struct vd_error err = {0};
	const char *name;
	int ret = 0;

	node_has_bitmaps(src, &info);
	for (int i = 0; (name = bitmap_name(info.format_specific, i)); i++) {
		char key[64];
		const char *g;

		if (skip_broken && bitmap_flag(info.format_specific, i, "in-use")) {
			tool_error("warning: Skipping inconsistent bitmap '%s'", name);
			continue;
		}
		snprintf(key, sizeof(key), "bitmaps.%d.granularity", i);
		g = vd_opts_peek(info.format_specific, key);
		memset(&err, 0, sizeof(err));
		if (vd_node_bitmap(dst, VD_BITMAP_ADD, name, g ? strtoull(g, NULL, 10) : 0, NULL,
				   NULL, &err) < 0) {
			tool_error("Failed to create bitmap %s: %s", name, err.msg);
			ret = -1;
			break;
		}
		if (vd_node_bitmap(dst, VD_BITMAP_MERGE, name, 0, src, name, &err) < 0 ||
		    (!bitmap_flag(info.format_specific, i, "auto") &&
		     vd_node_bitmap(dst, VD_BITMAP_DISABLE, name, 0, NULL, NULL, &err) < 0)) {
			struct vd_error e2 = {0};

			tool_error("Failed to populate bitmap %s: %s", name, err.msg);
			vd_node_bitmap(dst, VD_BITMAP_REMOVE, name, 0, NULL, NULL, &e2);
			ret = -1;
			break;
		}
	}
	vd_image_info_cleanup(&info);
	return ret;
}

enum {
	OPT_TARGET_IMAGE_OPTS = 512,
	OPT_SALVAGE,
	OPT_TARGET_IS_ZERO,
	OPT_BITMAPS,
	OPT_SKIP_BROKEN,
};

int cmd_convert(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"object", required_argument, NULL, OPT_OBJECT},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS},
		{"force-share", no_argument, NULL, 'U'},
		{"salvage", no_argument, NULL, OPT_SALVAGE},
		{"target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO},
		{"bitmaps", no_argument, NULL, OPT_BITMAPS},
		{"skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN},
		{NULL, 0, NULL, 0},
	};
	const char *fmt = NULL, *out_fmt = NULL, *backing = NULL, *backing_fmt = NULL;
	const char *cache = "unsafe", *src_cache = "writeback", *snapshot = NULL;
	const char *out_name;
	bool image_opts = false, target_image_opts = false, force_share = false;
	bool skip_create = false, quiet = false, copy_range = false, target_is_zero = false;
	bool bitmaps = false, skip_broken = false, help = false;
	struct convert c = {.min_sparse = 4096, .in_order = true};
	struct tool_snapshot_arg sn_arg = {0};
	struct vd_opts *opts = NULL;
	struct vd_error err = {0};
	struct vd_loop *loop = NULL;
	int64_t sval, out_size;
	int workers = 8, ch, i, ret = 1;

	opts = vd_opts_new();
	if (!opts) {
		tool_error("Out of memory");
		return 1;
	}
	while ((ch = getopt_long(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case ':':
			tool_error("option requires an argument -- '%c'", optopt);
			tool_usage_hint();
			goto out;
		case '?':
			if (optopt)
				tool_error("invalid option -- '%c'", optopt);
			else
				tool_error("unrecognized option '%s'", argv[optind - 1]);
			tool_usage_hint();
			goto out;
		case 'h':
			usage();
			ret = 0;
			goto out;
		case 'f':
			fmt = optarg;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'B':
			backing = optarg;
			break;
		case 'F':
			backing_fmt = optarg;
			break;
		case 'c':
			c.compressed = true;
			break;
		case 'C':
			copy_range = true;
			break;
		case 'o':
			if (tool_is_help_option(optarg)) {
				help = true;
				break;
			}
			if (vd_opts_parse_into(opts, optarg, NULL, &err) < 0) {
				tool_error("Invalid option list: %s", optarg);
				goto out;
			}
			break;
		case 'l':
			/* qemu-img parses -l here: a bad option list stops it. */
			tool_snapshot_arg_free(&sn_arg);
			if (tool_snapshot_arg_parse(optarg, &sn_arg) < 0)
				goto out;
			snapshot = optarg;
			break;
		case 'S':
			if (tool_parse_size(optarg, &sval) < 0 || sval % 512 ||
			    sval > 32 * 512 * 1024) {
				tool_error("Invalid buffer size for sparse output specified. Valid "
					   "sizes are multiples of 512 up to 16777216. Select 0 to "
					   "disable sparse detection (fully allocates output).");
				goto out;
			}
			c.min_sparse = sval;
			break;
		case 'p':
			c.progress = true;
			break;
		case 't':
			cache = optarg;
			break;
		case 'T':
			src_cache = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'n':
			skip_create = true;
			break;
		case 'm': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > CONVERT_MAX_WORKERS) {
				tool_error("Invalid number of coroutines. Allowed number of "
					   "coroutines is between 1 and 16");
				goto out;
			}
			workers = (int)v;
			break;
		}
		case 'W':
			c.in_order = false;
			break;
		case 'U':
			force_share = true;
			break;
		case 'r':
			if (tool_parse_size(optarg, &c.rate) < 0 || c.rate < 0) {
				tool_error("Invalid rate limit specified. You may use k, M, G, T, "
					   "P or E suffixes for");
				tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes "
					   "and exabytes.");
				goto out;
			}
			break;
		case OPT_OBJECT:
			tool_error("--object %s: only secret objects are supported here", optarg);
			goto out;
		case OPT_IMAGE_OPTS:
			image_opts = true;
			break;
		case OPT_TARGET_IMAGE_OPTS:
			target_image_opts = true;
			break;
		case OPT_SALVAGE:
			c.salvage = true;
			break;
		case OPT_TARGET_IS_ZERO:
			target_is_zero = true;
			break;
		case OPT_BITMAPS:
			bitmaps = true;
			break;
		case OPT_SKIP_BROKEN:
			skip_broken = true;
			break;
		}
	}
	if (quiet)
		c.progress = false;
	if (!out_fmt && !target_image_opts)
		out_fmt = "raw";
	if (help) {
		/* As qemu-img: the last argument names the target. */
		tool_print_create_help(out_fmt ? out_fmt : "raw",
				       argc - optind > 1 ? argv[argc - 1] : NULL);
		ret = 0;
		goto out;
	}

	/* QEMU's checks, in its order. */
	if (target_image_opts && !skip_create) {
		tool_error("--target-image-opts requires use of -n flag");
		goto out;
	}
	if (target_is_zero && !skip_create) {
		tool_error("--target-is-zero requires use of -n flag");
		goto out;
	}
	if (copy_range && c.compressed) {
		tool_error("Cannot enable copy offloading when -c is used");
		goto out;
	}
	if (copy_range && c.salvage) {
		tool_error("Cannot use copy offloading in salvaging mode");
		goto out;
	}
	if (tool_check_cache_mode(src_cache) < 0) {
		tool_error("Invalid source cache option: %s", src_cache);
		goto out;
	}
	if (tool_check_cache_mode(cache) < 0) {
		tool_error("Invalid cache option: %s", cache);
		goto out;
	}
	c.nsrc = argc - optind - 1;
	if (c.nsrc < 1) {
		tool_error("Must specify image file name");
		goto out;
	}
	out_name = argv[argc - 1];
	if (skip_create && backing) {
		tool_error("Specifying backing image makes no sense when -n is used");
		goto out;
	}
	if (backing && !backing_fmt) {
		tool_error("Use of backing file requires explicit backing format");
		goto out;
	}
	if (skip_broken && !bitmaps) {
		tool_error("Use of --skip-broken-bitmaps requires --bitmaps");
		goto out;
	}
	if (out_fmt && !format_known(out_fmt)) {
		tool_error("Unknown file format '%s'", out_fmt);
		goto out;
	}
	if (c.compressed && out_fmt && strcmp(out_fmt, "qcow2") && strcmp(out_fmt, "vmdk")) {
		tool_error("Compression not supported for this file format");
		goto out;
	}

	loop = tool_loop_init();
	c.src = calloc((size_t)c.nsrc, sizeof(*c.src));
	if (!c.src) {
		tool_error("Out of memory");
		goto out;
	}
	for (i = 0; i < c.nsrc; i++) {
		struct tool_open_args a = {
			.filename = argv[optind + i],
			.format = fmt,
			.probe = true,
			.probe_references = true,
			.image_opts = image_opts,
			.cache = src_cache,
			.force_share = force_share,
		};
		int64_t len;

		c.src[i].name = a.filename;
		if (tool_open_blk(&a, &c.src[i].blk, &err) < 0) {
			tool_error("Could not open '%s': %s", a.filename, err.msg);
			goto out;
		}
		len = vd_blk_getlength(c.src[i].blk);
		if (len < 0) {
			tool_error("Could not get size of %s: %s", a.filename, strerror((int)-len));
			goto out;
		}
		c.src[i].start = c.total;
		c.src[i].size = len;
		c.total += len;
	}
	/* -l: the first source reads the snapshot (QEMU checks the count
	 * only for -l NAME, and loads into the first source either way). */
	if (snapshot && !sn_arg.opts && c.nsrc > 1) {
		tool_error("No support for concatenating multiple snapshot");
		goto out;
	}
	if (snapshot && tool_snapshot_arg_load(vd_blk_root(c.src[0].blk), &sn_arg) < 0)
		goto out;
	if (bitmaps) {
		if (c.nsrc > 1) {
			tool_error("Copying bitmaps only possible with single source");
			goto out;
		}
		if (check_bitmaps(vd_blk_root(c.src[0].blk), skip_broken) < 0)
			goto out;
	}

	if (!skip_create) {
		char sizebuf[32];

		snprintf(sizebuf, sizeof(sizebuf), "%" PRId64, c.total);
		if (vd_opts_has(opts, "size")) {
			tool_error("Option 'size' is not valid for convert");
			goto out;
		}
		if (vd_opts_set(opts, "size", sizebuf) < 0 ||
		    (backing && vd_opts_set(opts, "backing_file", backing) < 0) ||
		    (backing_fmt && backing && vd_opts_set(opts, "backing_fmt", backing_fmt) < 0)) {
			tool_error("Out of memory");
			goto out;
		}
		if (target_is_open(&c, out_name, force_share)) {
			tool_error("%s: error while converting %s: Failed to get \"write\" lock",
				   out_name, out_fmt);
			fprintf(stderr, "Is another process using the image [%s]?\n", out_name);
			goto out;
		}
		if (vd_image_create(out_name, out_fmt, opts, &err) < 0) {
			/* QEMU checks -o before creating: those errors have no
			 * prefix. */
			if (!strncmp(err.msg, "Invalid parameter", 17))
				tool_error("%s", err.msg);
			else
				tool_error("%s: error while converting %s: %s", out_name, out_fmt,
					   err.msg[0] ? err.msg : strerror(-err.code));
			goto out;
		}
	}
	{
		/* As qemu-img: the secret that -o gave the new image opens
		 * it too (img_add_key_secrets). */
		struct tool_open_args a = {
			.filename = out_name,
			.format = out_fmt,
			.image_opts = target_image_opts,
			.cache = cache,
			.writable = true,
			.key_secret = opts && !target_image_opts ? vd_opts_peek(opts, "key-secret")
								 : NULL,
		};

		if (tool_open_blk(&a, &c.dst, &err) < 0) {
			tool_error("Could not open '%s': %s", out_name, err.msg);
			goto out;
		}
	}
	if (bitmaps) {
		struct vd_image_info info = {0};
		bool ok = node_has_bitmaps(vd_blk_root(c.dst), &info);

		if (!ok)
			tool_error("Format driver '%s' does not support bitmaps",
				   info.format ? info.format
				   : out_fmt   ? out_fmt
					       : "?");
		vd_image_info_cleanup(&info);
		if (!ok)
			goto out;
	}
	out_size = vd_blk_getlength(c.dst);
	if (skip_create && out_size < c.total) {
		tool_error("output file is smaller than input file");
		goto out;
	}
	c.target_has_backing = backing != NULL;
	/* A new image reads as zeroes (the drivers create it so), unless it
	 * has a backing file or was made in an existing target (an NBD export
	 * keeps its old bytes); -S 0 asks for everything to be written. */
	c.target_zero =
		c.min_sparse &&
		((!skip_create && !backing && vd_image_create_zeroes(out_name)) || target_is_zero);
	if (c.target_zero && !target_is_zero) {
		/* An encrypted image's new payload decrypts to noise, not
		 * zeroes (QEMU's crypto driver has no zero init). */
		struct vd_image_info info = {0};

		if (vd_node_get_info(vd_blk_root(c.dst), &info, &err) == 0 && info.encrypted)
			c.target_zero = false;
		vd_image_info_cleanup(&info);
	}
	c.buf_size = CONVERT_BUF_SIZE;
	if (!c.compressed) {
		/* A target that takes compressed data only (vmdk
		 * streamOptimized) is written as with -c, as qemu-img does. */
		struct vd_image_info info = {0};

		if (vd_node_get_info(vd_blk_root(c.dst), &info, &err) == 0)
			c.compressed = info.needs_compressed_writes;
		vd_image_info_cleanup(&info);
	}
	if (c.compressed) {
		struct vd_image_info info = {0};

		if (vd_node_get_info(vd_blk_root(c.dst), &info, &err) < 0 ||
		    info.cluster_size <= 0) {
			vd_image_info_cleanup(&info);
			tool_error("Compression not supported for this file format");
			goto out;
		}
		c.cluster_size = info.cluster_size;
		c.buf_size = info.cluster_size;
		vd_image_info_cleanup(&info);
	}

	ret = run_copy(&c, workers, loop) < 0 ? 1 : 0;
	if (ret == 0) {
		struct flush_args f = {c.dst, 0};

		vd_co_run_sync(flush_co, &f);
		if (f.ret < 0) {
			tool_error("error while flushing %s: %s", out_name, strerror(-f.ret));
			ret = 1;
		}
	}
	if (ret == 0 && bitmaps &&
	    copy_bitmaps(vd_blk_root(c.src[0].blk), vd_blk_root(c.dst), skip_broken) < 0)
		ret = 1;
out:
	if (c.dst)
		vd_blk_unref(c.dst);
	for (i = 0; c.src && i < c.nsrc; i++)
		if (c.src[i].blk)
			vd_blk_unref(c.src[i].blk);
	free(c.src);
	tool_snapshot_arg_free(&sn_arg);
	vd_opts_free(opts);
	if (loop)
		tool_loop_fini(loop);
	return ret;
}
