/* SPDX-License-Identifier: MIT */
/*
 * vdisk check [-f FMT] [-r leaks|all] [--output=human|json] [-q] [-U]
 *             [--image-opts] FILE
 *
 * qemu-img check: the same report, JSON keys and exit status: 0 clean,
 * 1 the check could not complete, 2 corruptions, 3 leaked clusters only,
 * 63 the format has no checks.  With -r the image is repaired, then checked
 * again and the second result is reported with what was fixed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/tools.h"

static void print_human(const struct vd_check_result *r, bool quiet)
{
	if (quiet)
		return;
	if (r->corruptions == 0 && r->leaks == 0 && r->check_errors == 0) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%d errors were found on the image.\n"
			       "Data may be corrupted, or further writes to the image may corrupt "
			       "it.\n",
			       r->corruptions);
		if (r->leaks)
			printf("\n%d leaked clusters were found on the image.\n"
			       "This means waste of disk space, but no harm to data.\n",
			       r->leaks);
		if (r->check_errors)
			printf("\n%d internal errors have occurred during the check.\n",
			       r->check_errors);
	}
	if (r->total_clusters != 0 && r->allocated_clusters != 0)
		printf("%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
		       "compressed clusters\n",
		       r->allocated_clusters, r->total_clusters,
		       r->allocated_clusters * 100.0 / r->total_clusters,
		       r->fragmented_clusters * 100.0 / r->allocated_clusters,
		       r->compressed_clusters * 100.0 / r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %" PRId64 "\n", r->image_end_offset);
}

/*
 * qemu-img's ImageCheck: optional members only when non-zero.  The order is
 * that of QEMU's QDict, which walks its 512 hash buckets in turn (the hash is
 * TDB's: a key's bucket decides its place); for these keys it comes out as
 * below, as qemu-img 7.2 prints them.
 */
static int print_json(const struct vd_check_result *r, const char *filename, const char *format)
{
	json_t *o = json_object();
	char *text;

	if (!o)
		return -ENOMEM;
	if (r->image_end_offset)
		json_object_set_new(o, "image-end-offset", json_integer(r->image_end_offset));
	if (r->compressed_clusters)
		json_object_set_new(o, "compressed-clusters", json_integer(r->compressed_clusters));
	if (r->total_clusters)
		json_object_set_new(o, "total-clusters", json_integer(r->total_clusters));
	if (r->corruptions)
		json_object_set_new(o, "corruptions", json_integer(r->corruptions));
	if (r->corruptions_fixed)
		json_object_set_new(o, "corruptions-fixed", json_integer(r->corruptions_fixed));
	json_object_set_new(o, "check-errors", json_integer(r->check_errors));
	if (r->leaks)
		json_object_set_new(o, "leaks", json_integer(r->leaks));
	if (r->leaks_fixed)
		json_object_set_new(o, "leaks-fixed", json_integer(r->leaks_fixed));
	if (r->allocated_clusters)
		json_object_set_new(o, "allocated-clusters", json_integer(r->allocated_clusters));
	json_object_set_new(o, "filename", json_string(filename));
	json_object_set_new(o, "format", json_string(format));
	if (r->fragmented_clusters)
		json_object_set_new(o, "fragmented-clusters", json_integer(r->fragmented_clusters));
	text = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!text)
		return -ENOMEM;
	printf("%s\n", text);
	free(text);
	return 0;
}

static void check_usage(FILE *f)
{
	fprintf(f, "usage: vdisk check [-f fmt] [-r leaks|all] [--output=human|json] [-q] [-U] "
		   "[--image-opts] filename\n");
}

int cmd_check(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"format", required_argument, NULL, 'f'},
		{"repair", required_argument, NULL, 'r'},
		{"output", required_argument, NULL, OPT_OUTPUT},
		{"force-share", no_argument, NULL, 'U'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{NULL, 0, NULL, 0},
	};
	/* The backing chain is not needed (and so probing may find qcow2). */
	struct tool_open_args a = {.probe = true, .no_backing = true};
	struct vd_check_result res;
	struct vd_error err = {0};
	struct vd_node *node = NULL;
	struct vd_loop *loop;
	bool json = false, quiet = false;
	int fix = 0, c, ret;

	while ((c = getopt_long(argc, argv, "hf:r:qU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			check_usage(stdout);
			return 0;
		case 'f':
			a.format = optarg;
			break;
		case 'r':
			if (!strcmp(optarg, "leaks")) {
				fix = VD_CHECK_FIX_LEAKS;
			} else if (!strcmp(optarg, "all")) {
				fix = VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS;
			} else {
				tool_error("Unknown option value for -r (expecting 'leaks' or "
					   "'all'): %s",
					   optarg);
				return 1;
			}
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
		case OPT_OUTPUT:
			if (tool_parse_output(optarg, &json) < 0)
				return 1;
			break;
		default:
			return tool_usage_hint();
		}
	}
	if (!tool_one_filename(argc, argv))
		return 1;
	if (fix && a.force_share) {
		tool_error("--force-share/-U is not allowed when repairing the image");
		return 1;
	}
	a.filename = argv[optind];
	a.writable = fix != 0;
	/* As qemu-img check: BDRV_O_CHECK with or without -r. */
	a.check = true;

	loop = tool_loop_init();
	ret = 1;
	if (tool_open_image(&a, &node, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	c = vd_node_check(node, &res, fix);
	if (c == -ENOTSUP) {
		tool_error("This image format does not support checks");
		ret = 63;
		goto out;
	}
	if (c == 0 && (res.corruptions_fixed || res.leaks_fixed)) {
		int leaks_fixed = res.leaks_fixed, corruptions_fixed = res.corruptions_fixed;

		if (!json && !quiet)
			printf("The following inconsistencies were found and repaired:\n\n"
			       "    %d leaked clusters\n"
			       "    %d corruptions\n\n"
			       "Double checking the fixed image now...\n",
			       leaks_fixed, corruptions_fixed);
		c = vd_node_check(node, &res, 0);
		res.leaks_fixed = leaks_fixed;
		res.corruptions_fixed = corruptions_fixed;
	}
	if (c == 0) {
		if (json)
			print_json(&res, vd_node_filename(node), vd_node_format(node));
		else
			print_human(&res, quiet);
	}
	if (c < 0 || res.check_errors) {
		if (c < 0)
			tool_error("Check failed: %s", strerror(-c));
		else
			tool_error("Check failed");
		ret = 1;
	} else if (res.corruptions) {
		ret = 2;
	} else if (res.leaks) {
		ret = 3;
	} else {
		ret = 0;
	}
out:
	if (node)
		vd_node_unref(node);
	tool_loop_fini(loop);
	return ret;
}
