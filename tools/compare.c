/* SPDX-License-Identifier: MIT */
/*
 * vdisk compare [-f FMT] [-F FMT] [-T CACHE] [-p] [-q] [-s] [-U]
 *               [--image-opts] A B
 *
 * qemu-img compare (7.2): exit 0 when the guest-visible contents are the
 * same, 1 with the first differing offset (in 512-byte sectors, as qemu-img
 * reports it), 2 on errors.  Images of different sizes are the same when
 * the longer one reads as zeroes past the shorter one ("Warning: Image size
 * mismatch!"); -s (strict) fails on that and on block status that differs.
 * Ranges that both images report as zeroes (block status through the
 * backing chains) are never read.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/coroutine.h>

#include "tools/tools.h"

#define COMPARE_BUF_SIZE (2 * 1024 * 1024)

struct compare_state {
	struct vd_blk *blk[2];
	const char *name[2];
	bool strict, quiet, progress;
	uint8_t *buf[2];
	int ret; /* the exit status */
};

static void say(const struct compare_state *s, const char *fmt, int64_t v)
{
	if (!s->quiet) {
		printf(fmt, v);
	}
}

/* The offset of the first 512-byte sector where @a and @b differ, or -1. */
static int64_t first_difference(const uint8_t *a, const uint8_t *b, int64_t n)
{
	int64_t i;

	if (!memcmp(a, b, (size_t)n))
		return -1;
	for (i = 0; i < n; i += 512) {
		int64_t len = n - i < 512 ? n - i : 512;

		if (memcmp(a + i, b + i, (size_t)len))
			return i;
	}
	return -1;
}

static int64_t first_nonzero(const uint8_t *a, int64_t n)
{
	int64_t i, j;

	for (i = 0; i < n; i += 512) {
		int64_t len = n - i < 512 ? n - i : 512;

		for (j = 0; j < len; j++)
			if (a[i + j])
				return i;
	}
	return -1;
}

static int read_at(struct compare_state *s, int which, int64_t off, int64_t n)
{
	struct vd_qiov q;
	int ret;

	vd_qiov_init_buf(&q, s->buf[which], (size_t)n);
	ret = vd_blk_co_preadv(s->blk[which], off, n, &q, 0);
	if (ret < 0) {
		tool_error("Error while reading offset %" PRId64 " of %s: %s", off, s->name[which],
			   strerror(-ret));
		s->ret = 2;
	}
	return ret;
}

/* Is [off, off + n) of image @which all zeroes?  Sets the exit status. */
static bool check_empty(struct compare_state *s, int which, int64_t off, int64_t n)
{
	int64_t idx;

	if (read_at(s, which, off, n) < 0)
		return false;
	idx = first_nonzero(s->buf[which], n);
	if (idx >= 0) {
		say(s, "Content mismatch at offset %" PRId64 "!\n", off + idx);
		s->ret = 1;
		return false;
	}
	return true;
}

static void progress(struct compare_state *s, double pct, double *last)
{
	if (s->progress && pct - *last >= 1.0) {
		printf("    (%3.2f/100%%)\r", pct);
		fflush(stdout);
		*last = pct;
	}
}

static void compare_co(void *opaque)
{
	struct compare_state *s = opaque;
	struct vd_node *n0 = vd_blk_root(s->blk[0]), *n1 = vd_blk_root(s->blk[1]);
	int64_t size0 = vd_blk_getlength(s->blk[0]), size1 = vd_blk_getlength(s->blk[1]);
	int64_t common = size0 < size1 ? size0 : size1, total = size0 > size1 ? size0 : size1;
	int64_t off = 0, idx;
	double last = 0.0;

	if (s->strict && size0 != size1) {
		say(s, "Strict mode: Image size mismatch!\n", 0);
		s->ret = 1;
		return;
	}
	if (s->progress) {
		printf("    (0.00/100%%)\r");
		fflush(stdout);
	}
	while (off < common) {
		int64_t p0 = 0, p1 = 0, chunk;
		int st0, st1;
		bool z0, z1;

		st0 = vd_co_block_status_above(n0, NULL, off, common - off, &p0, NULL, NULL, NULL);
		st1 = st0 < 0 ? st0
			      : vd_co_block_status_above(n1, NULL, off, common - off, &p1, NULL,
							 NULL, NULL);
		if (st0 < 0 || st1 < 0) {
			tool_error("Sector allocation test failed for %s",
				   st0 < 0 ? s->name[0] : s->name[1]);
			s->ret = 2;
			return;
		}
		chunk = p0 < p1 ? p0 : p1;
		z0 = st0 & VD_BLOCK_ZERO;
		z1 = st1 & VD_BLOCK_ZERO;
		if (s->strict && (st0 & (VD_BLOCK_ZERO | VD_BLOCK_DATA)) !=
					 (st1 & (VD_BLOCK_ZERO | VD_BLOCK_DATA))) {
			say(s, "Strict mode: Offset %" PRId64 " block status mismatch!\n", off);
			s->ret = 1;
			return;
		}
		if (!(z0 && z1)) {
			if (chunk > COMPARE_BUF_SIZE)
				chunk = COMPARE_BUF_SIZE;
			if (z0 || z1) {
				if (!check_empty(s, z0 ? 1 : 0, off, chunk))
					return;
			} else {
				if (read_at(s, 0, off, chunk) < 0 || read_at(s, 1, off, chunk) < 0)
					return;
				idx = first_difference(s->buf[0], s->buf[1], chunk);
				if (idx >= 0) {
					say(s, "Content mismatch at offset %" PRId64 "!\n",
					    off + idx);
					s->ret = 1;
					return;
				}
			}
		}
		off += chunk;
		progress(s, 100.0 * (double)off / (double)total, &last);
	}

	if (size0 != size1) {
		int over = size0 > size1 ? 0 : 1;
		struct vd_node *n = over ? n1 : n0;

		say(s, "Warning: Image size mismatch!\n", 0);
		while (off < total) {
			int64_t pnum = 0;
			int st = vd_co_block_status_above(n, NULL, off, total - off, &pnum, NULL,
							  NULL, NULL);

			if (st < 0) {
				tool_error("Sector allocation test failed for %s", s->name[over]);
				s->ret = 2;
				return;
			}
			if (!(st & VD_BLOCK_ZERO)) {
				if (pnum > COMPARE_BUF_SIZE)
					pnum = COMPARE_BUF_SIZE;
				if (!check_empty(s, over, off, pnum))
					return;
			}
			off += pnum;
			progress(s, 100.0 * (double)off / (double)total, &last);
		}
	}
	say(s, "Images are identical.\n", 0);
	s->ret = 0;
}

int cmd_compare(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"object", required_argument, NULL, OPT_OBJECT},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"force-share", no_argument, NULL, 'U'},
		{NULL, 0, NULL, 0},
	};
	struct compare_state s = {.ret = 2};
	const char *fmt[2] = {NULL, NULL}, *cache = "writeback";
	bool image_opts = false, force_share = false;
	struct vd_error err = {0};
	struct vd_loop *loop;
	int c, i;

	while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			printf("usage: vdisk compare [--object objectdef] [--image-opts] [-f fmt] "
			       "[-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2\n");
			return 0;
		case 'f':
			fmt[0] = optarg;
			break;
		case 'F':
			fmt[1] = optarg;
			break;
		case 'T':
			cache = optarg;
			break;
		case 'p':
			s.progress = true;
			break;
		case 'q':
			s.quiet = true;
			break;
		case 's':
			s.strict = true;
			break;
		case 'U':
			force_share = true;
			break;
		case OPT_IMAGE_OPTS:
			image_opts = true;
			break;
		case OPT_OBJECT:
			tool_error("--object %s: only secret objects are supported here", optarg);
			return 2;
		case ':':
			tool_error("option requires an argument -- '%c'", optopt);
			tool_usage_hint();
			return 2;
		default:
			if (optopt)
				tool_error("invalid option -- '%c'", optopt);
			else
				tool_error("unrecognized option '%s'", argv[optind - 1]);
			tool_usage_hint();
			return 2;
		}
	}
	if (s.quiet)
		s.progress = false;
	if (optind != argc - 2) {
		tool_error("Expecting two image file names");
		return 2;
	}
	if (tool_check_cache_mode(cache) < 0) {
		tool_error("Invalid source cache option: %s", cache);
		return 2;
	}

	loop = tool_loop_init();
	for (i = 0; i < 2; i++) {
		struct tool_open_args a = {
			.filename = argv[optind + i],
			.format = fmt[i],
			.probe = true,
			.image_opts = image_opts,
			.cache = cache,
			.force_share = force_share,
		};

		s.name[i] = a.filename;
		if (tool_open_blk(&a, &s.blk[i], &err) < 0) {
			tool_error("Could not open '%s': %s", a.filename, err.msg);
			goto out;
		}
		s.buf[i] = vd_memalign(4096, COMPARE_BUF_SIZE);
		if (!s.buf[i]) {
			tool_error("Out of memory");
			goto out;
		}
	}
	vd_co_run_sync(compare_co, &s);
	if (s.progress)
		printf("\n");
	fflush(stdout);
out:
	for (i = 0; i < 2; i++) {
		if (s.blk[i])
			vd_blk_unref(s.blk[i]);
		free(s.buf[i]);
	}
	tool_loop_fini(loop);
	return s.ret;
}
