/* SPDX-License-Identifier: MIT */
/*
 * vdisk measure [--output=human|json] [-O FMT] [-o OPTIONS]
 *               [--size N | [--image-opts] [-f FMT] [-U] FILE]
 *
 * qemu-img measure (7.2): the size an image of format FMT (raw by default)
 * created with OPTIONS would need, empty of size N or holding FILE's data.
 * The figures come from the format driver (vd_image_measure); the lines
 * and JSON keys are qemu-img's.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/tools.h"

static void measure_usage(FILE *f)
{
	fprintf(f, "usage: vdisk measure [--output=ofmt] [-O output_fmt] [-o options] "
		   "[--size N | [--image-opts] [-f fmt] [-U] filename]\n");
}

static void print_invalid_size(void)
{
	tool_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
	tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
}

int cmd_measure(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"output", required_argument, NULL, OPT_OUTPUT},
		{"size", required_argument, NULL, OPT_SIZE},
		{"force-share", no_argument, NULL, 'U'},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {.probe = true};
	const char *out_fmt = "raw", *snapshot = NULL;
	struct vd_opts *opts = NULL;
	struct vd_error err = {0};
	struct vd_measure_info info;
	struct vd_node *in = NULL;
	struct tool_snapshot_arg sn_arg = {0};
	struct vd_loop *loop = NULL;
	int64_t size = -1;
	bool json = false;
	int c, ret = 1;

	opts = vd_opts_new();
	if (!opts) {
		tool_error("Out of memory");
		return 1;
	}
	while ((c = getopt_long(argc, argv, "hf:O:o:l:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			measure_usage(stdout);
			ret = 0;
			goto out;
		case 'f':
			a.format = optarg;
			break;
		case 'O':
			out_fmt = optarg;
			break;
		case 'o':
			if (vd_opts_parse_into(opts, optarg, NULL, &err) < 0) {
				tool_error("Invalid option list: %s", err.msg);
				goto out;
			}
			break;
		case 'l':
			tool_snapshot_arg_free(&sn_arg);
			if (tool_snapshot_arg_parse(optarg, &sn_arg) < 0)
				goto out;
			snapshot = optarg;
			break;
		case 'U':
			a.force_share = true;
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		case OPT_OUTPUT:
			if (tool_parse_output(optarg, &json) < 0)
				goto out;
			break;
		case OPT_SIZE:
			if (tool_parse_size(optarg, &size) < 0) {
				print_invalid_size();
				goto out;
			}
			break;
		default:
			tool_usage_hint();
			goto out;
		}
	}
	if (argc - optind > 1) {
		tool_error("At most one filename argument is allowed.");
		goto out;
	}
	a.filename = argc - optind == 1 ? argv[optind] : NULL;
	if (!a.filename && (a.image_opts || a.format || snapshot)) {
		tool_error("--image-opts, -f, and -l require a filename argument.");
		goto out;
	}
	if (a.filename && size != -1) {
		tool_error("--size N cannot be used together with a filename.");
		goto out;
	}
	if (!a.filename && size == -1) {
		tool_error("Either --size N or one filename must be specified.");
		goto out;
	}

	loop = tool_loop_init();
	if (a.filename) {
		if (tool_open_image(&a, &in, &err) < 0) {
			tool_error("Could not open '%s': %s", a.filename, err.msg);
			goto out;
		}
		if (snapshot && tool_snapshot_arg_load(in, &sn_arg) < 0)
			goto out;
	}
	if (size != -1) {
		char buf[32];

		snprintf(buf, sizeof(buf), "%" PRId64, size);
		if (vd_opts_set(opts, "size", buf) < 0) {
			tool_error("Out of memory");
			goto out;
		}
	}
	if (vd_image_measure(out_fmt, opts, in, &info, &err) < 0) {
		tool_error("%s", err.msg[0] ? err.msg : strerror(-err.code));
		goto out;
	}
	if (json) {
		/* Key order as qemu-img 7.2 prints it. */
		json_t *o = json_object();
		char *text;

		if (info.has_bitmaps)
			json_object_set_new(o, "bitmaps", json_integer((json_int_t)info.bitmaps));
		json_object_set_new(o, "required", json_integer((json_int_t)info.required));
		json_object_set_new(o, "fully-allocated",
				    json_integer((json_int_t)info.fully_allocated));
		text = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
		json_decref(o);
		if (!text) {
			tool_error("Out of memory");
			goto out;
		}
		printf("%s\n", text);
		free(text);
	} else {
		printf("required size: %" PRIu64 "\n", info.required);
		printf("fully allocated size: %" PRIu64 "\n", info.fully_allocated);
		if (info.has_bitmaps)
			printf("bitmaps size: %" PRIu64 "\n", info.bitmaps);
	}
	ret = 0;
out:
	if (in)
		vd_node_unref(in);
	if (loop)
		tool_loop_fini(loop);
	tool_snapshot_arg_free(&sn_arg);
	vd_opts_free(opts);
	return ret;
}
