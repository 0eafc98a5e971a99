/* SPDX-License-Identifier: MIT */
/*
 * vdisk info [-f FMT] [--output=human|json] [--backing-chain] [-U] [--image-opts] FILE
 *
 * qemu-img info (7.2): the same fields, layout and JSON keys, the snapshot
 * table, and with --backing-chain every image of the chain (human: one
 * after the other with a blank line between; JSON: an array).
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tools/tools.h"

/* A value kept as text in vd_opts, typed back the way QEMU's QAPI has it:
 * integers and booleans as such, the rest as strings. */
static json_t *typed_value(const char *v)
{
	const char *p = v;

	if (!strcmp(v, "true")) {
		return json_true();
	}
	if (!strcmp(v, "false")) {
		return json_false();
	}
	if (*p == '-') {
		p++;
	}
	if (*p && strspn(p, "0123456789") == strlen(p) && strlen(p) < 19) {
		return json_integer(strtoll(v, NULL, 10));
	}
	return json_string(v);
}

static bool is_array(const struct vd_opts *o)
{
	const struct vd_opts *dict;
	const char *key, *value;
	int iter = 0, i = 0;
	char idx[16];

	while (vd_opts_next(o, &iter, &key, &value, &dict)) {
		snprintf(idx, sizeof(idx), "%d", i++);
		if (strcmp(key, idx)) {
			return false;
		}
	}
	return i > 0;
}

static json_t *opts_to_json(const struct vd_opts *o)
{
	const struct vd_opts *dict;
	const char *key, *value;
	/* QEMU's format-specific data has no empty objects, but has empty
	 * lists (a bitmap's "flags"): an empty dictionary is one. */
	bool array = is_array(o) || vd_opts_count(o) == 0;
	json_t *j = array ? json_array() : json_object();
	int iter = 0;

	while (vd_opts_next(o, &iter, &key, &value, &dict)) {
		json_t *v = value ? typed_value(value) : opts_to_json(dict);

		if (array) {
			json_array_append_new(j, v);
		} else {
			json_object_set_new(j, key, v);
		}
	}
	return j;
}

/* QEMU's human dump of format-specific data: keys with '-' shown as ' ',
 * nested dictionaries indented by four more, list items as "[i]:". */
void tool_dump_specific(const struct vd_opts *o, int indent)
{
	const struct vd_opts *dict;
	const char *key, *value;
	bool array = is_array(o);
	int iter = 0;

	while (vd_opts_next(o, &iter, &key, &value, &dict)) {
		char name[128];
		size_t i;

		if (array) {
			snprintf(name, sizeof(name), "[%s]", key);
		} else {
			snprintf(name, sizeof(name), "%s", key);
			for (i = 0; name[i]; i++) {
				if (name[i] == '-') {
					name[i] = ' ';
				}
			}
		}
		if (value) {
			printf("%*s%s: %s\n", indent, "", name, value);
		} else {
			printf("%*s%s:\n", indent, "", name);
			tool_dump_specific(dict, indent + 4);
		}
	}
}

static void print_human(const struct vd_image_info *info, const struct vd_snapshot_info *sn,
			int nsn)
{
	char buf[64];

	printf("image: %s\n", info->filename);
	printf("file format: %s\n", info->format);
	vd_format_size((uint64_t)info->virtual_size, buf, sizeof(buf));
	printf("virtual size: %s (%" PRId64 " bytes)\n", buf, info->virtual_size);
	if (info->actual_size >= 0) {
		vd_format_size((uint64_t)info->actual_size, buf, sizeof(buf));
		printf("disk size: %s\n", buf);
	} else {
		printf("disk size: unavailable\n");
	}
	if (info->cluster_size) {
		printf("cluster_size: %" PRId64 "\n", info->cluster_size);
	}
	if (info->encrypted) {
		printf("encrypted: yes\n");
	}
	if (info->has_dirty_flag && info->dirty_flag) {
		printf("cleanly shut down: no\n");
	}
	if (info->backing_filename) {
		printf("backing file: %s", info->backing_filename);
		if (!info->full_backing_filename) {
			printf(" (cannot determine actual path)");
		} else if (strcmp(info->backing_filename, info->full_backing_filename)) {
			printf(" (actual path: %s)", info->full_backing_filename);
		}
		printf("\n");
	}
	if (info->backing_filename_format) {
		printf("backing file format: %s\n", info->backing_filename_format);
	}
	tool_print_snapshots(sn, nsn);
	if (info->format_specific && vd_opts_count(info->format_specific) > 0) {
		printf("Format specific information:\n");
		tool_dump_specific(info->format_specific, 4);
	}
}

/* QEMU's SnapshotInfo, keys in the order qemu-img 7.2 prints them. */
static json_t *snapshots_to_json(const struct vd_snapshot_info *sn, int nsn)
{
	json_t *a = json_array();

	for (int i = 0; i < nsn; i++) {
		json_t *o = json_object();

		if (sn[i].icount != UINT64_MAX)
			json_object_set_new(o, "icount", json_integer((json_int_t)sn[i].icount));
		json_object_set_new(o, "vm-clock-nsec",
				    json_integer((json_int_t)(sn[i].vm_clock_nsec % 1000000000)));
		json_object_set_new(o, "name", json_string(sn[i].name));
		json_object_set_new(o, "date-sec", json_integer(sn[i].date_sec));
		json_object_set_new(o, "date-nsec", json_integer(sn[i].date_nsec));
		json_object_set_new(o, "vm-clock-sec",
				    json_integer((json_int_t)(sn[i].vm_clock_nsec / 1000000000)));
		json_object_set_new(o, "id", json_string(sn[i].id));
		json_object_set_new(o, "vm-state-size",
				    json_integer((json_int_t)sn[i].vm_state_size));
		json_array_append_new(a, o);
	}
	return a;
}

static json_t *info_to_json(const struct vd_image_info *info, const struct vd_snapshot_info *sn,
			    int nsn)
{
	json_t *o = json_object();

	if (nsn > 0)
		json_object_set_new(o, "snapshots", snapshots_to_json(sn, nsn));
	/* Key order as qemu-img 7.2 emits it. */
	if (info->backing_filename_format) {
		json_object_set_new(o, "backing-filename-format",
				    json_string(info->backing_filename_format));
	}
	json_object_set_new(o, "virtual-size", json_integer(info->virtual_size));
	json_object_set_new(o, "filename", json_string(info->filename));
	if (info->cluster_size) {
		json_object_set_new(o, "cluster-size", json_integer(info->cluster_size));
	}
	json_object_set_new(o, "format", json_string(info->format));
	if (info->actual_size >= 0) {
		json_object_set_new(o, "actual-size", json_integer(info->actual_size));
	}
	if (info->format_specific && vd_opts_count(info->format_specific) > 0) {
		json_t *spec = json_object();

		json_object_set_new(spec, "type", json_string(info->format));
		json_object_set_new(spec, "data", opts_to_json(info->format_specific));
		json_object_set_new(o, "format-specific", spec);
	}
	if (info->full_backing_filename) {
		json_object_set_new(o, "full-backing-filename",
				    json_string(info->full_backing_filename));
	}
	if (info->backing_filename) {
		json_object_set_new(o, "backing-filename", json_string(info->backing_filename));
	}
	if (info->encrypted) {
		json_object_set_new(o, "encrypted", json_true());
	}
	json_object_set_new(o, "dirty-flag",
			    json_boolean(info->has_dirty_flag && info->dirty_flag));
	return o;
}

static int print_json(json_t *o)
{
	char *text = json_dumps(o, JSON_INDENT(4) | JSON_PRESERVE_ORDER);

	if (!text) {
		tool_error("Out of memory");
		return -ENOMEM;
	}
	printf("%s\n", text);
	free(text);
	return 0;
}

static void info_usage(FILE *f)
{
	fprintf(f, "usage: vdisk info [-f fmt] [--output=human|json] [--backing-chain] [-U] "
		   "[--image-opts] filename\n");
}

/* One image of the chain: its info and snapshots.  Returns 0, or -errno
 * after printing why. */
static int query_one(const struct tool_open_args *a, struct vd_image_info *info,
		     struct vd_snapshot_info **sn, int *nsn)
{
	struct vd_error err = {0};
	struct vd_node *node = NULL;
	int ret;

	*sn = NULL;
	*nsn = 0;
	ret = tool_open_image(a, &node, &err);
	if (ret < 0) {
		tool_error("Could not open '%s': %s", a->filename, err.msg);
		return ret;
	}
	memset(info, 0, sizeof(*info));
	ret = vd_node_get_info(node, info, &err);
	if (ret < 0) {
		tool_error("%s", err.msg[0] ? err.msg : strerror(-err.code));
	} else {
		int n = vd_node_snapshot_list(node, sn);

		*nsn = n > 0 ? n : 0;
		if (n <= 0) {
			free(*sn);
			*sn = NULL;
		}
	}
	vd_node_unref(node);
	return ret;
}

int cmd_info(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"format", required_argument, NULL, 'f'},
		{"output", required_argument, NULL, OPT_OUTPUT},
		{"backing-chain", no_argument, NULL, OPT_BACKING_CHAIN},
		{"force-share", no_argument, NULL, 'U'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{NULL, 0, NULL, 0},
	};
	/* As qemu-img info: the backing chain is named, not opened. */
	struct tool_open_args a = {.probe = true, .no_backing = true, .no_io = true};
	struct vd_loop *loop;
	bool json = false, chain = false, failed = false;
	json_t *array = NULL;
	char **seen = NULL;
	char *next_name = NULL, *next_fmt = NULL;
	int nseen = 0, c, ret = 1;

	while ((c = getopt_long(argc, argv, "hf:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			info_usage(stdout);
			return 0;
		case 'f':
			a.format = optarg;
			break;
		case 'U':
			a.force_share = true;
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		case OPT_BACKING_CHAIN:
			chain = true;
			break;
		case OPT_OUTPUT:
			if (tool_parse_output(optarg, &json) < 0)
				return 1;
			break;
		default:
			return tool_usage_hint();
		}
	}
	a.filename = tool_one_filename(argc, argv);
	if (!a.filename)
		return 1;
	if (a.image_opts && a.format) {
		tool_error("--image-opts and --format are mutually exclusive");
		return 1;
	}

	loop = tool_loop_init();
	if (chain && json)
		array = json_array();
	for (;;) {
		struct vd_image_info info;
		struct vd_snapshot_info *sn;
		char **grown;
		int nsn;

		/* A chain that comes back to an image already shown (QEMU's
		 * "infinite loop" check), on the real paths of the files. */
		char *id = a.image_opts ? NULL : realpath(a.filename, NULL);

		if (!id)
			id = strdup(a.filename);
		if (!id) {
			tool_error("Out of memory");
			goto out;
		}
		for (int i = 0; i < nseen; i++) {
			if (!strcmp(seen[i], id)) {
				tool_error("Backing file '%s' creates an infinite loop.",
					   a.filename);
				free(id);
				goto out;
			}
		}
		grown = realloc(seen, (size_t)(nseen + 1) * sizeof(*seen));
		if (!grown) {
			free(id);
			tool_error("Out of memory");
			goto out;
		}
		grown[nseen] = id;
		seen = grown;
		nseen++;
		if (query_one(&a, &info, &sn, &nsn) < 0)
			goto out;
		if (json) {
			json_t *o = info_to_json(&info, sn, nsn);

			if (array) {
				json_array_append_new(array, o);
			} else {
				failed = print_json(o) < 0;
				json_decref(o);
			}
		} else {
			if (nseen > 1)
				printf("\n");
			print_human(&info, sn, nsn);
		}
		free(sn);
		free(next_name);
		free(next_fmt);
		next_name = next_fmt = NULL;
		if (chain && info.backing_filename) {
			next_name = info.full_backing_filename ? strdup(info.full_backing_filename)
							       : NULL;
			if (!next_name) {
				tool_error("Could not determine absolute backing filename, but "
					   "backing filename '%s' present",
					   info.backing_filename);
				vd_image_info_cleanup(&info);
				goto out;
			}
			if (info.backing_filename_format)
				next_fmt = strdup(info.backing_filename_format);
		}
		vd_image_info_cleanup(&info);
		if (!next_name)
			break;
		/* The backing files are named in the image: opened by name
		 * with the format the image records (probed otherwise). */
		a.filename = next_name;
		a.format = next_fmt;
		a.image_opts = false;
	}
	if (array && print_json(array) < 0)
		failed = true;
	ret = failed ? 1 : 0;
out:
	json_decref(array);
	for (int i = 0; i < nseen; i++)
		free(seen[i]);
	free(seen);
	free(next_name);
	free(next_fmt);
	tool_loop_fini(loop);
	return ret;
}
