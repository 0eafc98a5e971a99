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

/*
 * qemu-img create's "Formatting 'FILE', fmt=FMT ..." line: QEMU 7.2's
 * bdrv_img_create prints the creation options with qemu_opts_print(), in
 * the order the format declares them followed by the file protocol's
 * (size, nocow, preallocation, extent_size_hint; a name both have is the
 * format's), each one that is set or has a default: a size or number set
 * by the user as its value, a default as QEMU writes it, a string with
 * commas doubled.  Tables as qemu-img 7.2 prints them (tests/image/
 * create-formatting.sh diffs the lines).
 */
enum fmt_opt_type {
	FOPT_STR,
	FOPT_SIZE,
	FOPT_NUM,
	FOPT_BOOL
};
struct fmt_opt {
	const char *name;
	enum fmt_opt_type type;
	const char *def;
};
struct fmt_opts {
	const char *fmt;
	const struct fmt_opt *opts;
};

static const struct fmt_opt raw_opts[] = {{"size", FOPT_SIZE, NULL}, {NULL, 0, NULL}};
static const struct fmt_opt qcow2_opts[] = {
	{"encryption", FOPT_BOOL, NULL},
	{"encrypt.format", FOPT_STR, NULL},
	{"encrypt.key-secret", FOPT_STR, NULL},
	{"encrypt.cipher-alg", FOPT_STR, NULL},
	{"encrypt.cipher-mode", FOPT_STR, NULL},
	{"encrypt.ivgen-alg", FOPT_STR, NULL},
	{"encrypt.ivgen-hash-alg", FOPT_STR, NULL},
	{"encrypt.hash-alg", FOPT_STR, NULL},
	{"encrypt.iter-time", FOPT_NUM, NULL},
	{"cluster_size", FOPT_SIZE, "65536"},
	{"extended_l2", FOPT_BOOL, "off"},
	{"preallocation", FOPT_STR, NULL},
	{"compression_type", FOPT_STR, "zlib"},
	{"size", FOPT_SIZE, NULL},
	{"compat", FOPT_STR, NULL},
	{"backing_file", FOPT_STR, NULL},
	{"backing_fmt", FOPT_STR, NULL},
	{"data_file", FOPT_STR, NULL},
	{"data_file_raw", FOPT_BOOL, NULL},
	{"lazy_refcounts", FOPT_BOOL, "off"},
	{"refcount_bits", FOPT_NUM, "16"},
	{NULL, 0, NULL},
};
static const struct fmt_opt qed_opts[] = {
	{"size", FOPT_SIZE, NULL},	 {"backing_file", FOPT_STR, NULL},
	{"backing_fmt", FOPT_STR, NULL}, {"cluster_size", FOPT_SIZE, "65536"},
	{"table_size", FOPT_SIZE, NULL}, {NULL, 0, NULL},
};
static const struct fmt_opt vmdk_opts[] = {
	{"size", FOPT_SIZE, NULL},	   {"adapter_type", FOPT_STR, NULL},
	{"backing_file", FOPT_STR, NULL},  {"backing_fmt", FOPT_STR, NULL},
	{"compat6", FOPT_BOOL, "off"},	   {"hwversion", FOPT_STR, "undefined"},
	{"toolsversion", FOPT_STR, NULL},  {"subformat", FOPT_STR, NULL},
	{"zeroed_grain", FOPT_BOOL, NULL}, {NULL, 0, NULL},
};
static const struct fmt_opt vhdx_opts[] = {
	{"size", FOPT_SIZE, NULL},
	{"log_size", FOPT_SIZE, "1048576"},
	{"block_size", FOPT_SIZE, "0"},
	{"subformat", FOPT_STR, NULL},
	{"block_state_zero", FOPT_BOOL, NULL},
	{NULL, 0, NULL},
};
static const struct fmt_opt vpc_opts[] = {
	{"size", FOPT_SIZE, NULL},
	{"subformat", FOPT_STR, NULL},
	{"force_size", FOPT_BOOL, NULL},
	{NULL, 0, NULL},
};
static const struct fmt_opt vdi_opts[] = {
	{"size", FOPT_SIZE, NULL},
	{"static", FOPT_BOOL, "off"},
	{NULL, 0, NULL},
};
static const struct fmt_opt luks_opts[] = {
	{"size", FOPT_SIZE, NULL},
	{"key-secret", FOPT_STR, NULL},
	{"cipher-alg", FOPT_STR, NULL},
	{"cipher-mode", FOPT_STR, NULL},
	{"ivgen-alg", FOPT_STR, NULL},
	{"ivgen-hash-alg", FOPT_STR, NULL},
	{"hash-alg", FOPT_STR, NULL},
	{"iter-time", FOPT_NUM, NULL},
	{NULL, 0, NULL},
};
/* file-posix's raw_create_opts: appended to every format's. */
static const struct fmt_opt file_opts[] = {
	{"size", FOPT_SIZE, NULL},
	{"nocow", FOPT_BOOL, NULL},
	{"preallocation", FOPT_STR, NULL},
	{"extent_size_hint", FOPT_SIZE, NULL},
	{NULL, 0, NULL},
};
static const struct fmt_opts format_opts[] = {
	{"raw", raw_opts},   {"qcow2", qcow2_opts}, {"qed", qed_opts}, {"vmdk", vmdk_opts},
	{"vhdx", vhdx_opts}, {"vpc", vpc_opts},	    {"vdi", vdi_opts}, {"luks", luks_opts},
};

static bool in_table(const struct fmt_opt *t, const char *name)
{
	for (; t && t->name; t++)
		if (!strcmp(t->name, name))
			return true;
	return false;
}

/* A string value with commas doubled (QEMU's escaped_print). */
static void print_escaped(const char *v)
{
	for (; *v; v++) {
		putchar(*v);
		if (*v == ',')
			putchar(',');
	}
}

static void print_opt(const struct fmt_opt *o, const char *value, bool set, const char *sep)
{
	uint64_t n;
	char *end;

	printf("%s%s=", sep, o->name);
	if (o->type == FOPT_STR) {
		print_escaped(value);
	} else if (set && o->type == FOPT_SIZE && vd_parse_size(value, &n) == 0) {
		printf("%" PRIu64, n);
	} else if (set && o->type == FOPT_NUM && (n = strtoull(value, &end, 0), *value && !*end)) {
		printf("%" PRIu64, n);
	} else {
		printf("%s", value);
	}
}

static void print_formatting(const char *filename, const char *fmt, struct vd_opts *opts)
{
	const struct fmt_opt *fo = NULL;
	const struct vd_opts *dict;
	const char *key, *value, *sep = "";
	int iter = 0;

	for (size_t i = 0; i < sizeof(format_opts) / sizeof(format_opts[0]); i++)
		if (!strcmp(format_opts[i].fmt, fmt))
			fo = format_opts[i].opts;
	printf("Formatting '%s', fmt=%s ", filename, fmt);
	for (int pass = 0; pass < 2; pass++) {
		const struct fmt_opt *t = pass ? file_opts : (fo ? fo : raw_opts);

		for (; t->name; t++) {
			const char *v = vd_opts_peek(opts, t->name);

			if (pass && in_table(fo ? fo : raw_opts, t->name))
				continue;
			if (!v && !t->def)
				continue;
			print_opt(t, v ? v : t->def, v != NULL, sep);
			sep = " ";
		}
	}
	/* Options of a format qemu-img has no table for here (none of vdisk's
	 * creatable formats): as given. */
	while (vd_opts_next(opts, &iter, &key, &value, &dict)) {
		char prefix[64];
		bool listed = in_table(fo ? fo : raw_opts, key) || in_table(file_opts, key);

		snprintf(prefix, sizeof(prefix), "%s.", key);
		for (const struct fmt_opt *t = fo; !listed && t && t->name; t++)
			listed = !strncmp(t->name, prefix, strlen(prefix));
		if (listed)
			continue;
		if (value) {
			printf("%s%s=", sep, key);
			print_escaped(value);
		} else {
			char *json = vd_opts_to_json(dict);

			printf("%s%s=%s", sep, key, json ? json : "{}");
			free(json);
		}
		sep = " ";
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
	bool quiet = false, help = false;
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
			if (tool_is_help_option(optarg)) {
				help = true;
				break;
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

	/* qemu-img looks at -o help after all options, so that -f may follow. */
	if (help) {
		tool_print_create_help(fmt, optind < argc ? argv[optind] : NULL);
		ret = 0;
		goto out;
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
