/* SPDX-License-Identifier: MIT */
/*
 * vdisk create [-f FMT] [-o OPTIONS] [-q] FILE [SIZE]
 *
 * qemu-img create: the same arguments, checks, messages and the
 * "Formatting 'FILE', fmt=FMT size=N ..." line.
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
		{NULL, 0, NULL, 0},
	};
	const char *fmt = "raw", *filename;
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
	while ((c = getopt_long(argc, argv, "hf:o:q", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			printf("usage: vdisk create [-f fmt] [-o options] [-q] filename [size]\n");
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
	if (size < 0) {
		tool_error("%s: Image creation needs a size parameter", filename);
		goto out;
	}
	snprintf(sizebuf, sizeof(sizebuf), "%" PRId64, size);
	if (vd_opts_set(opts, "size", sizebuf) < 0) {
		tool_error("Out of memory");
		goto out;
	}

	if (!quiet) {
		print_formatting(filename, fmt, opts);
	}
	if (vd_image_create(filename, fmt, opts, &err) < 0) {
		tool_error("%s: %s", filename, err.msg[0] ? err.msg : strerror(-err.code));
		goto out;
	}
	ret = 0;
out:
	vd_opts_free(opts);
	return ret;
}
