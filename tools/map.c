/* SPDX-License-Identifier: MIT */
/*
 * vdisk map [-f FMT] [--output=human|json] [--start-offset=OFF]
 *           [--max-length=LEN] [-U] [--image-opts] FILE
 *
 * qemu-img map (7.2): the allocation of the image through its whole backing
 * chain, one entry per run of equal status (start, length, depth, present,
 * zero, data, offset), neighbours merged as qemu-img merges them.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/coroutine.h>

#include "tools/tools.h"

struct map_entry {
	int64_t start, length, offset;
	int depth;
	bool present, zero, data, has_offset;
	const char *filename;
};

struct map_state {
	struct vd_node *node;
	int64_t start, end;
	bool json;
	int ret;
};

static bool mergeable(const struct map_entry *a, const struct map_entry *b)
{
	if (a->present != b->present || a->zero != b->zero || a->data != b->data ||
	    a->depth != b->depth || a->has_offset != b->has_offset)
		return false;
	if ((a->filename == NULL) != (b->filename == NULL) ||
	    (a->filename && strcmp(a->filename, b->filename)))
		return false;
	return !a->has_offset || a->offset + a->length == b->offset;
}

static int dump_entry(const struct map_entry *e, bool json, bool more)
{
	if (json) {
		printf("{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %d, "
		       "\"present\": %s, \"zero\": %s, \"data\": %s",
		       e->start, e->length, e->depth, e->present ? "true" : "false",
		       e->zero ? "true" : "false", e->data ? "true" : "false");
		if (e->has_offset)
			printf(", \"offset\": %" PRId64, e->offset);
		putchar('}');
		if (more)
			puts(",");
		return 0;
	}
	if (e->data && !e->has_offset) {
		tool_error("File contains external, encrypted or compressed clusters.");
		return -ENOTSUP;
	}
	if (e->data)
		printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", (uint64_t)e->start,
		       (uint64_t)e->length, (uint64_t)e->offset, e->filename ? e->filename : "");
	return 0;
}

static void map_co(void *opaque)
{
	struct map_state *s = opaque;
	struct map_entry cur = {0}, next;
	int64_t off = s->start;

	if (s->json)
		printf("[");
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	while (off < s->end) {
		/* At most 1 GiB per query, as qemu-img. */
		int64_t n = s->end - off < (INT64_C(1) << 30) ? s->end - off : INT64_C(1) << 30;
		int64_t pnum = 0, map = 0;
		struct vd_node *file = NULL;
		int depth = 0;
		int ret =
			vd_co_block_status_above(s->node, NULL, off, n, &pnum, &map, &file, &depth);

		if (ret < 0) {
			tool_error("Could not read file metadata: %s", strerror(-ret));
			s->ret = ret;
			break;
		}
		if (pnum <= 0)
			break;
		next = (struct map_entry){
			.start = off,
			.length = pnum,
			.depth = depth,
			.present = ret & VD_BLOCK_ALLOCATED,
			.zero = ret & VD_BLOCK_ZERO,
			.data = ret & VD_BLOCK_DATA,
			.has_offset = ret & VD_BLOCK_OFFSET_VALID,
			.offset = map,
			.filename = (file && (ret & VD_BLOCK_OFFSET_VALID)) ? vd_node_filename(file)
									    : NULL,
		};
		if (cur.length > 0 && cur.start + cur.length == off && mergeable(&cur, &next)) {
			cur.length += pnum;
		} else {
			if (cur.length > 0 && (s->ret = dump_entry(&cur, s->json, true)) < 0)
				return;
			cur = next;
		}
		off += pnum;
	}
	if (s->ret == 0) {
		if (cur.length > 0 && (s->ret = dump_entry(&cur, s->json, false)) < 0)
			return;
		if (s->json)
			printf("]\n");
	}
}

enum {
	OPT_START_OFFSET = 512,
	OPT_MAX_LENGTH,
};

int cmd_map(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"format", required_argument, NULL, 'f'},
		{"output", required_argument, NULL, OPT_OUTPUT},
		{"object", required_argument, NULL, OPT_OBJECT},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"force-share", no_argument, NULL, 'U'},
		{"start-offset", required_argument, NULL, OPT_START_OFFSET},
		{"max-length", required_argument, NULL, OPT_MAX_LENGTH},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {.probe = true};
	struct map_state s = {0};
	struct vd_error err = {0};
	struct vd_loop *loop;
	int64_t start = 0, max_length = -1, size;
	struct vd_node *node;
	int c;

	while ((c = getopt_long(argc, argv, ":hf:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			printf("usage: vdisk map [--object objectdef] [--image-opts] [-f fmt] "
			       "[--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] "
			       "filename\n");
			return 0;
		case 'f':
			a.format = optarg;
			break;
		case 'U':
			a.force_share = true;
			break;
		case OPT_OUTPUT:
			if (tool_parse_output(optarg, &s.json) < 0)
				return 1;
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		case OPT_OBJECT:
			tool_error("--object %s: only secret objects are supported here", optarg);
			return 1;
		case OPT_START_OFFSET:
			if (tool_parse_size(optarg, &start) < 0) {
				tool_error(
					"Invalid start offset specified! You may use k, M, G, T, "
					"P or E suffixes for ");
				tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes "
					   "and exabytes.");
				return 1;
			}
			break;
		case OPT_MAX_LENGTH:
			if (tool_parse_size(optarg, &max_length) < 0) {
				tool_error("Invalid max length specified! You may use k, M, G, T, "
					   "P or E suffixes for ");
				tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes "
					   "and exabytes.");
				return 1;
			}
			break;
		case ':':
			tool_error("option requires an argument -- '%c'", optopt);
			return tool_usage_hint();
		default:
			if (optopt)
				tool_error("invalid option -- '%c'", optopt);
			else
				tool_error("unrecognized option '%s'", argv[optind - 1]);
			return tool_usage_hint();
		}
	}
	a.filename = tool_one_filename(argc, argv);
	if (!a.filename)
		return 1;

	loop = tool_loop_init();
	if (tool_open_image(&a, &node, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		tool_loop_fini(loop);
		return 1;
	}
	size = vd_node_size(node);
	s.node = node;
	s.start = start < size ? start : size;
	s.end = size;
	if (max_length >= 0 && max_length < size - s.start)
		s.end = s.start + max_length;
	vd_co_run_sync(map_co, &s);
	fflush(stdout);
	vd_node_unref(node);
	tool_loop_fini(loop);
	return s.ret < 0 ? 1 : 0;
}
