/* SPDX-License-Identifier: MIT */
/*
 * vdisk snapshot [--image-opts] [-U] [-q] [-l | -a SNAP | -c SNAP | -d SNAP] FILE
 *
 * qemu-img snapshot: list (the default), apply, create or delete internal
 * snapshots, with qemu-img's table and messages.  Like qemu-img, it takes no
 * -f: the format is probed (never to a format that can name other files
 * unless given with --image-opts driver=...).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tools/tools.h"

enum action {
	ACTION_LIST,
	ACTION_APPLY,
	ACTION_CREATE,
	ACTION_DELETE,
};

static void snapshot_usage(FILE *f)
{
	fprintf(f, "usage: vdisk snapshot [--image-opts] [-U] [-q] "
		   "[-l | -a snapshot | -c snapshot | -d snapshot] filename\n");
}

int cmd_snapshot(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"force-share", no_argument, NULL, 'U'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{NULL, 0, NULL, 0},
	};
	/* The backing chain is not needed (and so probing may find qcow2). */
	struct tool_open_args a = {.probe = true, .no_backing = true};
	struct vd_error err = {0};
	struct vd_node *node = NULL;
	struct vd_loop *loop;
	enum action action = ACTION_LIST;
	const char *name = NULL;
	bool chosen = false, quiet = false;
	int c, ret = 1;

	while ((c = getopt_long(argc, argv, "hla:c:d:qU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			snapshot_usage(stdout);
			return 0;
		case 'l':
		case 'a':
		case 'c':
		case 'd':
			if (chosen) {
				tool_error("Cannot mix '-l', '-a', '-c', '-d'");
				return tool_usage_hint();
			}
			chosen = true;
			action = c == 'l'   ? ACTION_LIST
				 : c == 'a' ? ACTION_APPLY
				 : c == 'c' ? ACTION_CREATE
					    : ACTION_DELETE;
			name = optarg;
			break;
		case 'q':
			quiet = true;
			break;
		case 'U':
			a.force_share = true;
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		default:
			return tool_usage_hint();
		}
	}
	a.filename = tool_one_filename(argc, argv);
	if (!a.filename)
		return 1;
	a.writable = action != ACTION_LIST;
	(void)quiet; /* nothing but errors is printed outside -l */

	loop = tool_loop_init();
	if (tool_open_image(&a, &node, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	switch (action) {
	case ACTION_LIST: {
		struct vd_snapshot_info *list = NULL;
		int n = vd_node_snapshot_list(node, &list);

		/* A format without snapshots lists none, as qemu-img does. */
		if (n < 0 && n != -ENOTSUP) {
			tool_error("Could not list snapshots: %s", strerror(-n));
		} else {
			tool_print_snapshots(list, n);
			ret = 0;
		}
		free(list);
		break;
	}
	case ACTION_CREATE:
		if (vd_node_snapshot_create(node, name, &err) < 0)
			tool_error("Could not create snapshot '%s': %s", name,
				   err.msg[0] ? err.msg : strerror(-err.code));
		else
			ret = 0;
		break;
	case ACTION_APPLY:
		if (vd_node_snapshot_goto(node, name, &err) < 0)
			tool_error("Could not apply snapshot '%s': %s", name,
				   err.msg[0] ? err.msg : strerror(-err.code));
		else
			ret = 0;
		break;
	case ACTION_DELETE:
		if (vd_node_snapshot_delete(node, name, &err) < 0)
			tool_error("Could not delete snapshot '%s': %s", name,
				   err.msg[0] ? err.msg : strerror(-err.code));
		else
			ret = 0;
		break;
	}
out:
	if (node)
		vd_node_unref(node);
	tool_loop_fini(loop);
	return ret;
}
