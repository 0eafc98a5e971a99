/* SPDX-License-Identifier: MIT */
/*
 * vdisk resize [-f FMT] [--image-opts] [--preallocation=MODE] [-q] [--shrink]
 *              FILE [+|-]SIZE
 *
 * qemu-img resize: an absolute size or a change relative to the current one;
 * shrinking needs --shrink; prints "Image resized.".
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools.h"

enum {
	OPT_PREALLOCATION = 512,
	OPT_SHRINK,
};

static void resize_usage(FILE *f)
{
	fprintf(f, "usage: vdisk resize [-f fmt] [--image-opts] [--preallocation=mode] [-q] "
		   "[--shrink] filename [+ | -]size\n");
}

static void size_error(void)
{
	tool_error("Parameter 'size' expects a non-negative number below 2^64");
	fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, "
			"peta-\nand exabytes, respectively.\n");
}

int cmd_resize(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"format", required_argument, NULL, 'f'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"preallocation", required_argument, NULL, OPT_PREALLOCATION},
		{"shrink", no_argument, NULL, OPT_SHRINK},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {.probe = true, .probe_references = true, .writable = true};
	struct vd_error err = {0};
	struct vd_node *node = NULL;
	struct vd_loop *loop;
	bool quiet = false, shrink = false;
	int prealloc = VD_PREALLOC_OFF, relative = 0, c, ret = 1;
	const char *size_arg;
	int64_t size, current, total;

	/* A leading '-' in the size would read as an option: qemu-img takes the
	 * last argument out before option parsing, and so do we. */
	if (argc < 3) {
		tool_error("Expecting image file name and size");
		return tool_usage_hint();
	}
	size_arg = argv[--argc];
	while ((c = getopt_long(argc, argv, "hf:q", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			resize_usage(stdout);
			return 0;
		case 'f':
			a.format = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		case OPT_SHRINK:
			shrink = true;
			break;
		case OPT_PREALLOCATION:
			for (prealloc = 0; vd_prealloc_names[prealloc]; prealloc++)
				if (!strcmp(vd_prealloc_names[prealloc], optarg))
					break;
			if (!vd_prealloc_names[prealloc]) {
				tool_error("Invalid preallocation mode '%s'", optarg);
				return 1;
			}
			break;
		default:
			return tool_usage_hint();
		}
	}
	if (optind != argc - 1) {
		tool_error("Expecting image file name and size");
		return tool_usage_hint();
	}
	a.filename = argv[optind];
	if (size_arg[0] == '+' || size_arg[0] == '-')
		relative = size_arg[0] == '+' ? 1 : -1;
	if (tool_parse_size(size_arg + (relative ? 1 : 0), &size) < 0) {
		size_error();
		return 1;
	}

	loop = tool_loop_init();
	if (tool_open_image(&a, &node, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	current = vd_node_size(node);
	if (relative > 0)
		total = size > INT64_MAX - current ? -1 : current + size;
	else if (relative < 0)
		total = current - size;
	else
		total = size;
	if (total < 0) {
		tool_error("New image size must be positive");
		goto out;
	}
	if (total < current && !shrink) {
		tool_error("Use the --shrink option to perform a shrink operation.");
		tool_error("warning: Shrinking an image will delete all data beyond the shrunken "
			   "image's end. Before performing such an operation, make sure there is "
			   "no important data there.");
		goto out;
	}
	if (total < current && prealloc != VD_PREALLOC_OFF) {
		tool_error("Preallocation can only be used for growing images");
		goto out;
	}
	/* exact, as qemu-img resize: success means the image has that size
	 * now (a device or an NBD export that cannot change says so). */
	if (vd_node_truncate(node, total, true, prealloc, &err) < 0) {
		tool_error("%s", err.msg[0] ? err.msg : strerror(-err.code));
		goto out;
	}
	if (!quiet)
		printf("Image resized.\n");
	ret = 0;
out:
	if (node)
		vd_node_unref(node);
	tool_loop_fini(loop);
	return ret;
}
