/* SPDX-License-Identifier: MIT */
/*
 * vdisk dd [--image-opts] [-U] [-f FMT] [-O FMT] [-p] [bs=BYTES]
 *          [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT
 *
 * qemu-img dd (7.2): the output is created (format -O, raw by default) with
 * the size of the input, cut to bs*count when count is given, less
 * bs*skip; then the blocks are copied in order.  The quirks are QEMU's: the
 * count limit applies from the start of the input, not from the skip
 * offset, and a skip past that end is reported ("cannot skip to specified
 * offset") but leaves an empty output and exit status 0.  -p is ours
 * (qemu-img dd has no progress report).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools.h"

/* Copy in pieces of at least this much (a whole number of blocks): the
 * bytes written are the same as block by block, with fewer requests. */
#define DD_CHUNK (1024 * 1024)

static void dd_usage(void)
{
	printf("usage: vdisk dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [-p] "
	       "[bs=block_size] [count=blocks] [skip=blocks] if=input of=output\n"
	       "\n"
	       "  'bs=BYTES' read and write up to BYTES bytes at a time (default: 512)\n"
	       "  'count=N' copy only N input blocks\n"
	       "  'if=FILE' read from FILE\n"
	       "  'of=FILE' write to FILE\n"
	       "  'skip=N' skip N bs-sized blocks at the start of input\n");
}

static int bad_number(const char *what)
{
	tool_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
	tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
	return 1;
}

static bool format_known(const char *fmt)
{
	for (const char *const *n = vd_driver_names(); n && *n; n++)
		if (!strcmp(*n, fmt))
			return true;
	return false;
}

int cmd_dd(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"object", required_argument, NULL, OPT_OBJECT},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"force-share", no_argument, NULL, 'U'},
		{NULL, 0, NULL, 0},
	};
	const char *fmt = NULL, *out_fmt = "raw", *in_name = NULL, *out_name = NULL;
	bool image_opts = false, force_share = false, progress = false;
	bool has_count = false, has_skip = false;
	int64_t bs = 512, count = 0, skip = 0, size, in_pos, out_pos, chunk;
	struct vd_blk *in = NULL, *out = NULL;
	struct tool_progress pr;
	struct vd_opts *opts = NULL;
	struct vd_error err = {0};
	struct vd_loop *loop = NULL;
	uint8_t *buf = NULL;
	char sizebuf[32];
	int c, i, ret = 1;

	while ((c = getopt_long(argc, argv, ":hf:O:Up", longopts, NULL)) != -1) {
		switch (c) {
		case ':':
			tool_error("option requires an argument -- '%c'", optopt);
			return tool_usage_hint();
		case '?':
			if (optopt)
				tool_error("invalid option -- '%c'", optopt);
			else
				tool_error("unrecognized option '%s'", argv[optind - 1]);
			return tool_usage_hint();
		case 'h':
			dd_usage();
			return 0;
		case 'f':
			fmt = optarg;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'U':
			force_share = true;
			break;
		case 'p':
			progress = true;
			break;
		case OPT_OBJECT:
			tool_error("--object is not supported here: only secret objects are");
			return 1;
		case OPT_IMAGE_OPTS:
			image_opts = true;
			break;
		}
	}

	/* The operands, dd(1) style; a later one overrides an earlier one. */
	for (i = optind; i < argc; i++) {
		const char *arg = argv[i], *eq = strchr(arg, '=');
		size_t klen = eq ? (size_t)(eq - arg) : strlen(arg);
		const char *val = eq ? eq + 1 : "";

		if (eq && klen == 2 && !strncmp(arg, "bs", 2)) {
			if (tool_parse_size(val, &bs) < 0)
				return bad_number("bs");
			if (bs <= 0 || bs > INT_MAX) {
				tool_error("Invalid bs specified. Must be between 1 and %d.",
					   INT_MAX);
				return 1;
			}
		} else if (eq && klen == 5 && !strncmp(arg, "count", 5)) {
			if (tool_parse_size(val, &count) < 0)
				return bad_number("count");
			has_count = true;
		} else if (eq && klen == 4 && !strncmp(arg, "skip", 4)) {
			if (tool_parse_size(val, &skip) < 0)
				return bad_number("skip");
			has_skip = true;
		} else if (eq && klen == 2 && !strncmp(arg, "if", 2)) {
			in_name = val;
		} else if (eq && klen == 2 && !strncmp(arg, "of", 2)) {
			out_name = val;
		} else {
			tool_error("unrecognized operand %.*s", (int)klen, arg);
			return 1;
		}
	}
	if (!in_name || !out_name) {
		tool_error("Must specify both input and output files");
		return 1;
	}

	loop = tool_loop_init();
	{
		struct tool_open_args a = {
			.filename = in_name,
			.format = fmt,
			.probe = true,
			.probe_references = true,
			.image_opts = image_opts,
			.force_share = force_share,
		};

		if (tool_open_blk(&a, &in, &err) < 0) {
			tool_error("Could not open '%s': %s", in_name, err.msg);
			goto out;
		}
	}
	if (!format_known(out_fmt)) {
		tool_error("Unknown file format");
		goto out;
	}
	size = vd_blk_getlength(in);
	if (size < 0) {
		tool_error("Failed to get size for '%s'", in_name);
		goto out;
	}
	if (has_count && count <= INT64_MAX / bs && count * bs < size)
		size = count * bs;
	/* A skip past the end makes an empty output, as dd(1) does. */
	bool skip_past = has_skip && (skip > INT64_MAX / bs || size < skip * bs);

	snprintf(sizebuf, sizeof(sizebuf), "%" PRId64, skip_past ? 0 : size - skip * bs);
	opts = vd_opts_new();
	if (!opts || vd_opts_set(opts, "size", sizebuf) < 0) {
		tool_error("Out of memory");
		goto out;
	}
	if (vd_image_create(out_name, out_fmt, opts, &err) < 0) {
		tool_error("%s: error while creating output image: %s", out_name,
			   err.msg[0] ? err.msg : strerror(-err.code));
		goto out;
	}
	{
		struct tool_open_args a = {
			.filename = out_name,
			.format = out_fmt,
			.writable = true,
			.default_cache = "unsafe",
		};

		if (tool_open_blk(&a, &out, &err) < 0) {
			tool_error("Could not open '%s': %s", out_name, err.msg);
			goto out;
		}
	}
	if (skip_past) {
		tool_error("%s: cannot skip to specified offset", in_name);
		in_pos = size;
	} else {
		in_pos = skip * bs;
	}

	chunk = bs >= DD_CHUNK ? bs : DD_CHUNK / bs * bs;
	buf = vd_memalign(4096, (size_t)chunk);
	if (!buf) {
		tool_error("Out of memory");
		goto out;
	}
	tool_progress_init(&pr, progress, 1.0f);
	tool_progress_set_bytes(&pr, size - in_pos);
	tool_progress_print(&pr, 0, 100);
	for (out_pos = 0; in_pos < size;) {
		int64_t n = size - in_pos < chunk ? size - in_pos : chunk;
		int r = vd_blk_pread(in, in_pos, buf, n);

		if (r < 0) {
			tool_error("error while reading from input image file: %s", strerror(-r));
			goto out;
		}
		r = vd_blk_pwrite(out, out_pos, buf, n, 0);
		if (r < 0) {
			tool_error("error while writing to output image file: %s", strerror(-r));
			goto out;
		}
		in_pos += n;
		out_pos += n;
		tool_progress_print(&pr, (float)(100.0 * (double)in_pos / (double)size), 0);
	}
	tool_progress_print(&pr, 100, 0);
	tool_progress_end(&pr);
	{
		int r = vd_blk_flush(out);

		if (r < 0) {
			tool_error("error while flushing %s: %s", out_name, strerror(-r));
			goto out;
		}
	}
	ret = 0;
out:
	free(buf);
	if (out)
		vd_blk_unref(out);
	if (in)
		vd_blk_unref(in);
	vd_opts_free(opts);
	if (loop)
		tool_loop_fini(loop);
	return ret;
}
