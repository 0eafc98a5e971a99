/* SPDX-License-Identifier: MIT */
/*
 * vdisk bitmap (--merge SOURCE | --add | --remove | --clear | --enable |
 *               --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRAN]
 *               [--object OBJ] [--image-opts | -f FMT] FILE BITMAP
 *
 * qemu-img bitmap (7.2): the actions in the order given, on persistent
 * dirty bitmaps (qcow2); qemu-img's checks, messages and exit codes.  The
 * work is the driver's (vd_node_bitmap; block/drivers/qcow2/bitmap.c).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools.h"

enum {
	OPT_ADD = 512,
	OPT_REMOVE,
	OPT_CLEAR,
	OPT_ENABLE,
	OPT_DISABLE,
	OPT_MERGE,
};

struct action {
	enum vd_bitmap_action act;
	const char *src; /* --merge */
};

static const char *const action_names[] = {
	[VD_BITMAP_ADD] = "add",       [VD_BITMAP_REMOVE] = "remove",	[VD_BITMAP_CLEAR] = "clear",
	[VD_BITMAP_ENABLE] = "enable", [VD_BITMAP_DISABLE] = "disable", [VD_BITMAP_MERGE] = "merge",
};

static void bitmap_usage(void)
{
	printf("usage: vdisk bitmap (--merge SOURCE | --add | --remove | --clear | --enable | "
	       "--disable)... [-b source_file [-F source_fmt]] [-g granularity] "
	       "[--object objectdef] [--image-opts | -f fmt] filename bitmap\n");
}

int cmd_bitmap(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"object", required_argument, NULL, OPT_OBJECT},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"add", no_argument, NULL, OPT_ADD},
		{"remove", no_argument, NULL, OPT_REMOVE},
		{"clear", no_argument, NULL, OPT_CLEAR},
		{"enable", no_argument, NULL, OPT_ENABLE},
		{"disable", no_argument, NULL, OPT_DISABLE},
		{"merge", required_argument, NULL, OPT_MERGE},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {.probe = true, .probe_references = true, .writable = true};
	const char *src_file = NULL, *src_fmt = NULL, *name;
	struct action *acts = NULL;
	struct vd_node *node = NULL, *src = NULL;
	struct vd_error err = {0};
	struct vd_loop *loop = NULL;
	bool add = false, merge = false;
	int64_t granularity = 0;
	int nacts = 0, c, i, ret = 1;

	acts = calloc((size_t)argc, sizeof(*acts));
	if (!acts) {
		tool_error("Out of memory");
		return 1;
	}
	while ((c = getopt_long(argc, argv, ":hb:f:F:g:", longopts, NULL)) != -1) {
		switch (c) {
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
			bitmap_usage();
			ret = 0;
			goto out;
		case 'b':
			src_file = optarg;
			break;
		case 'f':
			a.format = optarg;
			break;
		case 'F':
			src_fmt = optarg;
			break;
		case 'g':
			if (tool_parse_size(optarg, &granularity) < 0) {
				tool_error("Invalid granularity specified. You may use k, M, G, T, "
					   "P or E suffixes for");
				tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes "
					   "and exabytes.");
				goto out;
			}
			break;
		case OPT_ADD:
			acts[nacts++].act = VD_BITMAP_ADD;
			add = true;
			break;
		case OPT_REMOVE:
			acts[nacts++].act = VD_BITMAP_REMOVE;
			break;
		case OPT_CLEAR:
			acts[nacts++].act = VD_BITMAP_CLEAR;
			break;
		case OPT_ENABLE:
			acts[nacts++].act = VD_BITMAP_ENABLE;
			break;
		case OPT_DISABLE:
			acts[nacts++].act = VD_BITMAP_DISABLE;
			break;
		case OPT_MERGE:
			acts[nacts].act = VD_BITMAP_MERGE;
			acts[nacts++].src = optarg;
			merge = true;
			break;
		case OPT_OBJECT:
			tool_error("--object is not supported here: only secret objects are");
			goto out;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		}
	}
	if (!nacts) {
		tool_error("Need at least one of --add, --remove, --clear, --enable, --disable, "
			   "or --merge");
		goto out;
	}
	if (granularity && !add) {
		tool_error("granularity only supported with --add");
		goto out;
	}
	if (src_fmt && !src_file) {
		tool_error("-F only supported with -b");
		goto out;
	}
	if (src_file && !merge) {
		tool_error("Merge bitmap source file only supported with --merge");
		goto out;
	}
	if (optind != argc - 2) {
		tool_error("Expecting filename and bitmap name");
		goto out;
	}
	a.filename = argv[optind];
	name = argv[optind + 1];

	loop = tool_loop_init();
	if (tool_open_image(&a, &node, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	if (src_file) {
		struct tool_open_args sa = {
			.filename = src_file,
			.format = src_fmt,
			.probe = true,
			.probe_references = true,
		};

		if (tool_open_image(&sa, &src, &err) < 0) {
			tool_error("Could not open '%s': %s", src_file, err.msg);
			goto out;
		}
	}
	for (i = 0; i < nacts; i++) {
		memset(&err, 0, sizeof(err));
		if (vd_node_bitmap(node, acts[i].act, name, (uint64_t)granularity, src, acts[i].src,
				   &err) < 0) {
			char *nl = strchr(err.msg, '\n');

			/* A hint after the message goes on its own line, unprefixed. */
			if (nl)
				*nl = '\0';
			tool_error("Operation %s on bitmap %s failed: %s",
				   action_names[acts[i].act], name,
				   err.msg[0] ? err.msg : strerror(-err.code));
			if (nl)
				fprintf(stderr, "%s\n", nl + 1);
			goto out;
		}
	}
	ret = 0;
out:
	if (src)
		vd_node_unref(src);
	if (node)
		vd_node_unref(node);
	free(acts);
	if (loop)
		tool_loop_fini(loop);
	return ret;
}
