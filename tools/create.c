/* SPDX-License-Identifier: MIT */
/*
 * vdisk create [-f FMT] [-b BACKING [-F BACKING_FMT]] [-u] [-o OPTIONS] [-q] FILE [SIZE]
 *
 * qemu-img create: the same arguments, checks, messages and the
 * "Formatting 'FILE', fmt=FMT size=N ..." line.  With a backing file, as
 * QEMU 7.2's bdrv_img_create: the backing file is opened (relative names
 * against the new image's directory) unless -u, its format must be given,
 * and its size is the default size.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools.h"

static bool format_known(const char *fmt)
{
	const char *const *names;

	for (names = vd_driver_names(); names && *names; names++) {
		if (!strcmp(*names, fmt)) {
			return true;
		}
	}
	return false;
}

static bool is_help_option(const char *s)
{
	size_t n = strlen(s);

	return !strcmp(s, "help") || !strcmp(s, "?") || (n > 5 && !strcmp(s + n - 5, ",help")) ||
	       (n > 2 && !strcmp(s + n - 2, ",?"));
}

/* What qemu-img prints for "-o help" on a raw-like format.  The creation
 * options live in the drivers; size is the one every format has. */
static void print_create_help(const char *fmt)
{
	printf("Supported %s options:\n", fmt);
	printf("  %-22s - %s\n", "size=<size>", "Virtual disk size");
	printf("\nThe protocol level may support further options.\n"
	       "Specify the target filename to include those options.\n");
}

static void print_invalid_size(void)
{
	tool_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
	tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
}

/* A relative backing file name is relative to the overlay's directory. */
static char *full_backing_name(const char *filename, const char *backing)
{
	const char *slash = strrchr(filename, '/');
	char *out;

	if (backing[0] == '/' || !slash)
		return strdup(backing);
	if (asprintf(&out, "%.*s/%s", (int)(slash - filename), filename, backing) < 0)
		return NULL;
	return out;
}

/* Open the backing file as QEMU does before creating an overlay: it must
 * exist and open (with the format given, or probed to say what it is);
 * returns its size in *size. */
static int check_backing(const char *filename, const char *backing, const char *backing_fmt,
			 int64_t *size)
{
	struct tool_open_args a = {.format = backing_fmt,
				   .probe = !backing_fmt,
				   .no_backing = !backing_fmt,
				   .force_share = true};
	struct vd_error err = {0};
	struct vd_node *node = NULL;
	struct vd_loop *loop;
	char *full = full_backing_name(filename, backing);
	int ret;

	if (!full) {
		tool_error("Out of memory");
		return -ENOMEM;
	}
	a.filename = full;
	loop = tool_loop_init();
	ret = tool_open_image(&a, &node, &err);
	if (ret < 0) {
		tool_error("%s: %s", filename, err.msg[0] ? err.msg : strerror(-ret));
		fprintf(stderr, "Could not open backing image.\n");
	} else if (!backing_fmt) {
		tool_error("%s: Backing file specified without backing format", filename);
		fprintf(stderr, "Detected format of %s.\n", vd_node_format(node));
		ret = -EINVAL;
	} else {
		*size = vd_node_size(node);
	}
	if (node)
		vd_node_unref(node);
	tool_loop_fini(loop);
	free(full);
	return ret;
}

static void print_formatting(const char *filename, const char *fmt, struct vd_opts *opts)
{
	const struct vd_opts *dict;
	const char *key, *value;
	int iter = 0;

	printf("Formatting '%s', fmt=%s size=%s", filename, fmt, vd_opts_peek(opts, "size"));
	while (vd_opts_next(opts, &iter, &key, &value, &dict)) {
		if (!strcmp(key, "size")) {
			continue;
		}
		if (value) {
			printf(" %s=%s", key, value);
		} else {
			char *json = vd_opts_to_json(dict);

			printf(" %s=%s", key, json ? json : "{}");
			free(json);
		}
	}
	printf("\n");
	fflush(stdout);
}

int cmd_create(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"format", required_argument, NULL, 'f'},
		{"options", required_argument, NULL, 'o'},
		{"quiet", no_argument, NULL, 'q'},
		{"backing", required_argument, NULL, 'b'},
		{"backing-format", required_argument, NULL, 'F'},
		{"backing-unsafe", no_argument, NULL, 'u'},
		{NULL, 0, NULL, 0},
	};
	const char *fmt = "raw", *filename, *backing = NULL, *backing_fmt = NULL;
	bool unsafe = false;
	struct vd_opts *opts = NULL;
	struct vd_error err = {0};
	char sizebuf[32];
	bool quiet = false;
	int64_t size = -1;
	int c, ret = 1;

	opts = vd_opts_new();
	if (!opts) {
		tool_error("Out of memory");
		return 1;
	}
	while ((c = getopt_long(argc, argv, "hf:o:qb:F:u", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			printf("usage: vdisk create [-f fmt] [-b backing_file [-F backing_fmt]] "
			       "[-u] "
			       "[-o options] [-q] filename [size]\n");
			ret = 0;
			goto out;
		case 'f':
			fmt = optarg;
			break;
		case 'o':
			if (is_help_option(optarg)) {
				print_create_help(fmt);
				ret = 0;
				goto out;
			}
			if (vd_opts_parse_into(opts, optarg, NULL, &err) < 0) {
				tool_error("Invalid option list: %s", err.msg);
				goto out;
			}
			break;
		case 'q':
			quiet = true;
			break;
		case 'b':
			backing = optarg;
			break;
		case 'F':
			backing_fmt = optarg;
			break;
		case 'u':
			unsafe = true;
			break;
		default:
			fprintf(stderr, "Try 'vdisk --help' for more information\n");
			goto out;
		}
	}

	if (optind >= argc) {
		tool_error("Expecting image file name");
		fprintf(stderr, "Try 'vdisk --help' for more information\n");
		goto out;
	}
	filename = argv[optind++];
	if (optind < argc) {
		int r = tool_parse_size(argv[optind], &size);

		if (r < 0 || size < 0) {
			print_invalid_size();
			goto out;
		}
		optind++;
	}
	if (optind < argc) {
		tool_error("Unexpected argument: %s", argv[optind]);
		fprintf(stderr, "Try 'vdisk --help' for more information\n");
		goto out;
	}

	if (!format_known(fmt)) {
		tool_error("%s: Unknown file format '%s'", filename, fmt);
		goto out;
	}

	if (vd_opts_has(opts, "size")) {
		const char *s = vd_opts_peek(opts, "size");
		int64_t osize;

		if (size >= 0) {
			tool_error("%s: The image size must be specified only once", filename);
			goto out;
		}
		if (!s || tool_parse_size(s, &osize) < 0) {
			tool_error("%s: Parameter 'size' expects a non-negative number below 2^64\n"
				   "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
				   "tera-, peta-\nand exabytes, respectively.",
				   filename);
			goto out;
		}
		size = osize;
	}
	/* -b/-F are the backing_file/backing_fmt creation options. */
	if (backing) {
		if (!vd_format_has_create_opt(fmt, "backing_file")) {
			tool_error("%s: Backing file not supported for file format '%s'", filename,
				   fmt);
			goto out;
		}
		if (vd_opts_set(opts, "backing_file", backing) < 0)
			goto oom;
	}
	if (backing_fmt) {
		if (!vd_format_has_create_opt(fmt, "backing_fmt")) {
			tool_error("%s: Backing file format not supported for file format '%s'",
				   filename, fmt);
			goto out;
		}
		if (vd_opts_set(opts, "backing_fmt", backing_fmt) < 0)
			goto oom;
	}
	backing = vd_opts_peek(opts, "backing_file");
	backing_fmt = vd_opts_peek(opts, "backing_fmt");
	if (backing) {
		if (!strcmp(filename, backing)) {
			tool_error("%s: Error: Trying to create an image with the same filename as "
				   "the backing file",
				   filename);
			goto out;
		}
		if (!backing[0]) {
			tool_error("%s: Expected backing file name, got empty string", filename);
			goto out;
		}
		if (!unsafe) {
			int64_t bsize = -1;

			if (check_backing(filename, backing, backing_fmt, &bsize) < 0)
				goto out;
			if (size < 0)
				size = bsize;
		} else if (!backing_fmt) {
			tool_error("%s: Backing file specified without backing format", filename);
			goto out;
		}
	}
	if (size < 0) {
		tool_error("%s: Image creation needs a size parameter", filename);
		goto out;
	}
	snprintf(sizebuf, sizeof(sizebuf), "%" PRId64, size);
	if (vd_opts_set(opts, "size", sizebuf) < 0)
		goto oom;

	if (!quiet) {
		print_formatting(filename, fmt, opts);
	}
	if (vd_image_create(filename, fmt, opts, &err) < 0) {
		tool_error("%s: %s", filename, err.msg[0] ? err.msg : strerror(-err.code));
		goto out;
	}
	ret = 0;
	goto out;
oom:
	tool_error("Out of memory");
out:
	vd_opts_free(opts);
	return ret;
}
