/* SPDX-License-Identifier: MIT */
/*
 * vdisk amend [--object OBJ] [--image-opts] [-p] [-q] [-f FMT] [-t CACHE]
 *             [--force] -o OPTIONS FILE
 *
 * qemu-img amend (7.2): change creation options of an existing image.  The
 * work is the format driver's (vd_node_amend; qcow2: block/drivers/qcow2/
 * amend.c); here are qemu-img's command line, its checks in its order, its
 * messages and exit codes.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools.h"

enum {
	OPT_FORCE = 512,
};

static void amend_usage(void)
{
	printf("usage: vdisk amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] "
	       "[-t cache] [--force] -o options filename\n");
}

/* -o may be given more than once: the lists are joined with ",". */
static int add_options(char **all, const char *more)
{
	size_t a = *all ? strlen(*all) : 0, m = strlen(more);
	char *n = realloc(*all, a + m + 2);

	if (!n)
		return -ENOMEM;
	if (a)
		n[a++] = ',';
	memcpy(n + a, more, m + 1);
	*all = n;
	return 0;
}

int cmd_amend(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"object", required_argument, NULL, OPT_OBJECT},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"force", no_argument, NULL, OPT_FORCE},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {
		.probe = true,
		.probe_references = true,
		.writable = true,
		.default_cache = "writeback",
	};
	bool progress = false, quiet = false, force = false;
	struct tool_progress pr;
	struct vd_opts *opts = NULL;
	struct vd_node *node = NULL;
	struct vd_error err = {0};
	struct vd_loop *loop = NULL;
	char *options = NULL;
	const char *fmt = NULL;
	int c, ret = 1;

	while ((c = getopt_long(argc, argv, ":ho:f:t:pq", longopts, NULL)) != -1) {
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
			amend_usage();
			return 0;
		case 'o':
			if (!*optarg || add_options(&options, optarg) < 0) {
				tool_error("Invalid option list: %s", optarg);
				goto out;
			}
			break;
		case 'f':
			fmt = optarg;
			break;
		case 't':
			a.cache = optarg;
			break;
		case 'p':
			progress = true;
			break;
		case 'q':
			quiet = true;
			break;
		case OPT_FORCE:
			force = true;
			break;
		case OPT_OBJECT:
			tool_error("--object is not supported here: only secret objects are");
			goto out;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		}
	}
	if (!options) {
		tool_error("Must specify options (-o)");
		return tool_usage_hint();
	}
	if (quiet)
		progress = false;
	tool_progress_init(&pr, progress, 1.0f);
	/* With -f the list needs no image. */
	if (fmt && tool_is_help_option(options)) {
		ret = tool_print_amend_help(fmt);
		goto out;
	}
	if (optind != argc - 1) {
		tool_error("Expecting one image file name");
		goto out;
	}
	a.filename = argv[optind];
	a.format = fmt;
	if (a.cache && tool_check_cache_mode(a.cache) < 0) {
		tool_error("Invalid cache option: %s", a.cache);
		goto out;
	}
	loop = tool_loop_init();
	if (tool_open_image(&a, &node, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	fmt = vd_node_format(node);
	if (tool_is_help_option(options)) {
		ret = tool_print_amend_help(fmt);
		goto out;
	}
	if (tool_check_amend_options(fmt, options, &opts) < 0)
		goto out;
	tool_progress_print(&pr, 0, 0);
	ret = vd_node_amend(node, opts, force, &err) < 0 ? 1 : 0;
	tool_progress_print(&pr, 100, 0);
	if (ret)
		tool_error("%s", err.msg[0] ? err.msg : strerror(-err.code));
out:
	tool_progress_end(&pr);
	if (node)
		vd_node_unref(node);
	vd_opts_free(opts);
	free(options);
	if (loop)
		tool_loop_fini(loop);
	return ret;
}
