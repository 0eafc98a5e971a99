/* SPDX-License-Identifier: MIT */
/*
 * vdisk commit [-f FMT] [-t CACHE] [-b BASE] [-r RATE] [-d] [-p] [-q] [--image-opts] FILE
 *
 * qemu-img commit (7.2): write what FILE and the images between it and BASE
 * (its backing file by default) hold into BASE, then empty FILE so that it
 * reads through to BASE again, unless -d or -b (-b implies -d, as
 * qemu-img).  "Image committed." at the end.
 *
 * Order, so that a kill at any point leaves every image readable and the
 * top image reading the same data: BASE is written and flushed first (the
 * data it gains is what the images above show anyway), FILE is emptied
 * only afterwards.  The chain is read through a read-only open that takes
 * no image locks (BASE is opened a second time, read-write, to be
 * written); the reads never reach BASE, as only ranges allocated above it
 * are copied.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/tools.h"

#define COMMIT_BUF (2 << 20)

static void commit_usage(FILE *f)
{
	fprintf(f, "usage: vdisk commit [--image-opts] [-q] [-f fmt] [-t cache] [-b base] "
		   "[-r rate_limit] [-d] [-p] filename\n");
}

/* The node of @top's chain (below @top) named @name: the same file, or the
 * name as an image records it. */
static struct vd_node *find_base(struct vd_node *top, const char *name)
{
	char want[PATH_MAX], have[PATH_MAX];
	bool resolved = realpath(name, want) != NULL;

	for (struct vd_node *n = vd_node_backing(top); n; n = vd_node_backing(n)) {
		const char *f = vd_node_filename(n);

		if (!f)
			continue;
		if (!strcmp(f, name) || (resolved && realpath(f, have) && !strcmp(have, want)))
			return n;
	}
	return NULL;
}

static bool all_zero(const uint8_t *b, int64_t len)
{
	return len == 0 || (b[0] == 0 && memcmp(b, b + 1, (size_t)len - 1) == 0);
}

static void rate_wait(int64_t rate, uint64_t done, const struct timespec *start)
{
	struct timespec now;
	double elapsed, due;

	if (rate <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	elapsed =
		(double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
	due = (double)done / (double)rate;
	if (due > elapsed) {
		double wait = due - elapsed;
		struct timespec ts = {.tv_sec = (time_t)wait,
				      .tv_nsec = (long)((wait - (double)(time_t)wait) * 1e9)};
		nanosleep(&ts, NULL);
	}
}

/* Copy into @base_rw what is allocated in @top above @base.  The chain's
 * own node for the base may cache tables that the writes through @base_rw
 * make stale: reads through it only ever return what the top shows, which
 * is what the base gets, so they stay right. */
static int copy_above(struct vd_node *top, struct vd_node *base, struct vd_node *base_rw,
		      int64_t rate, bool progress_on)
{
	int64_t size = vd_node_size(top), offset, n;
	struct tool_progress progress;
	struct timespec start;
	struct vd_error err = {0};
	uint64_t done = 0;
	uint8_t *buf = malloc(COMMIT_BUF);
	struct vd_image_info info;
	int64_t gran = 4096, copied_end = 0;
	int ret = 0;

	if (!buf) {
		tool_error("Out of memory");
		return -ENOMEM;
	}
	/* QEMU's default granularity: the base's cluster size, at least 4k. */
	if (vd_node_get_info(base_rw, &info, &err) == 0) {
		if (info.cluster_size > gran)
			gran = info.cluster_size;
		vd_image_info_cleanup(&info);
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	tool_progress_start(&progress, progress_on);
	/* The base grows to the size of the top image (QEMU's commit_run). */
	if (vd_node_size(base_rw) < size) {
		ret = vd_node_truncate(base_rw, size, false, VD_PREALLOC_OFF, &err);
		if (ret < 0) {
			tool_error("%s", err.msg[0] ? err.msg : strerror(-ret));
			goto out;
		}
	}
	for (offset = 0; offset < size; offset += n) {
		n = size - offset < COMMIT_BUF ? size - offset : COMMIT_BUF;
		ret = vd_node_is_allocated_above(top, base, offset, n, &n);
		if (ret < 0) {
			tool_error("error while reading image metadata: %s", strerror(-ret));
			goto out;
		}
		if (ret) {
			/* Whole granules of the base, as QEMU's commit job copies
			 * (what the top reads there, all of it). */
			int64_t from = offset / gran * gran,
				to = (offset + n + gran - 1) / gran * gran;

			if (from < copied_end)
				from = copied_end;
			if (to > size)
				to = size;
			while (from < to) {
				int64_t len = to - from < COMMIT_BUF ? to - from : COMMIT_BUF;

				ret = vd_node_pread(top, from, buf, len);
				if (ret < 0) {
					tool_error("Could not read image: %s", strerror(-ret));
					goto out;
				}
				if (all_zero(buf, len))
					ret = vd_node_pwrite_zeroes(base_rw, from, len, 0);
				else
					ret = vd_node_pwrite(base_rw, from, buf, len, 0);
				if (ret < 0) {
					tool_error("Could not write to the base image: %s",
						   strerror(-ret));
					goto out;
				}
				from += len;
				done += (uint64_t)len;
				rate_wait(rate, done, &start);
			}
			copied_end = to;
		}
		tool_progress_update(&progress, 100.0 * (double)(offset + n) / (double)size);
	}
	ret = vd_node_flush(base_rw);
	if (ret < 0)
		tool_error("Could not flush the base image: %s", strerror(-ret));
	tool_progress_finish(&progress);
out:
	free(buf);
	return ret;
}

int cmd_commit(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{NULL, 0, NULL, 0},
	};
	/* Read the chain without locks (see above); written afterwards. */
	struct tool_open_args a = {
		.probe = true, .force_share = true, .default_cache = "writeback"};
	struct vd_error err = {0};
	struct vd_node *top = NULL, *base = NULL, *base_rw = NULL, *empty = NULL;
	struct vd_loop *loop;
	const char *base_name = NULL;
	char *top_fmt = NULL;
	bool drop = false, progress = false, quiet = false;
	int64_t rate = 0;
	int c, ret = 1;

	while ((c = getopt_long(argc, argv, "f:ht:b:dpqr:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			commit_usage(stdout);
			return 0;
		case 'f':
			a.format = optarg;
			break;
		case 't':
			a.cache = optarg;
			break;
		case 'b':
			base_name = optarg;
			drop = true; /* -b implies -d */
			break;
		case 'd':
			drop = true;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case 'r':
			/* qemu-img's cvtnum("rate limit"): out of range and
			 * malformed are two messages. */
			if (tool_parse_size(optarg, &rate) == -ERANGE) {
				tool_error("Invalid rate limit specified. Must be between 0 and "
					   "%" PRId64 ".",
					   INT64_MAX);
				return 1;
			}
			if (tool_parse_size(optarg, &rate) < 0) {
				tool_error(
					"Invalid rate limit specified. You may use k, M, G, T, P "
					"or E suffixes for");
				tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes "
					   "and exabytes.");
				return 1;
			}
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		default:
			return tool_usage_hint();
		}
	}
	if (quiet)
		progress = false;
	if (optind != argc - 1) {
		tool_error("Expecting one image file name");
		return tool_usage_hint();
	}
	a.filename = argv[optind];
	if (a.cache && tool_check_cache_mode(a.cache) < 0) {
		tool_error("Invalid cache option: %s", a.cache);
		return 1;
	}

	loop = tool_loop_init();
	if (tool_open_image(&a, &top, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	if (base_name) {
		base = find_base(top, base_name);
		if (!base) {
			tool_error("Did not find '%s' in the backing chain of '%s'", base_name,
				   a.filename);
			goto out;
		}
	} else {
		base = vd_node_backing(top);
		if (!base) {
			tool_error("Image does not have a backing file");
			goto out;
		}
	}
	top_fmt = strdup(vd_node_format(top));
	{
		struct tool_open_args b = {.filename = vd_node_filename(base),
					   .format = vd_node_format(base),
					   .writable = true,
					   .cache = a.cache,
					   .default_cache = "writeback"};

		if (!top_fmt) {
			tool_error("Out of memory");
			goto out;
		}
		if (tool_open_image(&b, &base_rw, &err) < 0) {
			tool_error("Could not open '%s': %s", b.filename, err.msg);
			goto out;
		}
	}
	if (copy_above(top, base, base_rw, rate, progress) < 0)
		goto out;
	vd_node_unref(base_rw);
	base_rw = NULL;

	if (!drop) {
		/* The base holds the data now (flushed): empty the top so that
		 * it reads through to it (QEMU's bdrv_make_empty). */
		struct tool_open_args t = {.filename = a.filename,
					   .format = top_fmt,
					   .image_opts = a.image_opts,
					   .writable = true,
					   .no_backing = true,
					   .cache = a.cache,
					   .default_cache = "writeback"};

		if (a.image_opts)
			t.format = NULL;
		vd_node_unref(top);
		top = NULL;
		if (tool_open_image(&t, &empty, &err) < 0) {
			tool_error("Could not open '%s': %s", a.filename, err.msg);
			goto out;
		}
		int r = vd_node_make_empty(empty, &err);
		if (r < 0 && r != -ENOTSUP) {
			tool_error("Could not empty %s: %s", a.filename, strerror(-r));
			goto out;
		}
	}
	if (!quiet)
		printf("Image committed.\n");
	ret = 0;
out:
	if (empty)
		vd_node_unref(empty);
	if (base_rw)
		vd_node_unref(base_rw);
	if (top)
		vd_node_unref(top);
	free(top_fmt);
	tool_loop_fini(loop);
	return ret;
}
