/* SPDX-License-Identifier: MIT */
/*
 * vdisk io [-f FMT] [--image-opts] [-r] [-n] [-t CACHE] [-i AIO] [-U] [-m]
 *          [-c CMD]... [FILE]
 *
 * qemu-io: run the -c commands in order, or read commands from stdin (one a
 * line) when there are none.  The exit status is 1 when the image could not
 * be opened or any command failed, as qemu-io 7.2 does.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/io.h"
#include "tools/tools.h"

#define PROMPT "vdisk io> "

static void io_usage(FILE *f)
{
	fprintf(f,
		"Usage: vdisk io [OPTIONS]... [-c STRING]... [file]\n"
		"Exercise the vdisk I/O path (qemu-io's commands)\n"
		"\n"
		"  --image-opts         treat file as option string\n"
		"  -c, --cmd STRING     execute command with its arguments\n"
		"                       from the given string\n"
		"  -f, --format FMT     specifies the block driver to use\n"
		"  -r, --read-only      export read-only\n"
		"  -n, --nocache        disable host cache, short for -t none\n"
		"  -m, --misalign       misalign allocations for O_DIRECT\n"
		"  -k, --native-aio     use io_uring (short for -i io_uring)\n"
		"  -i, --aio=MODE       use AIO mode (threads, io_uring; native means io_uring)\n"
		"  -t, --cache=MODE     use the given cache mode for the image\n"
		"  -U, --force-share    force shared permissions\n"
		"  -h, --help           display this help and exit\n"
		"\n"
		"See 'vdisk io -c help' for information on available commands.\n");
}

static int run_line(struct io_state *s, char *line, bool *failed)
{
	size_t n = strlen(line);

	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) {
		line[--n] = '\0';
	}
	if (io_command(s, line) < 0) {
		*failed = true;
	}
	fflush(stdout);
	return 0;
}

int cmd_io(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"cmd", required_argument, NULL, 'c'},
		{"format", required_argument, NULL, 'f'},
		{"read-only", no_argument, NULL, 'r'},
		{"nocache", no_argument, NULL, 'n'},
		{"misalign", no_argument, NULL, 'm'},
		{"native-aio", no_argument, NULL, 'k'},
		{"aio", required_argument, NULL, 'i'},
		{"cache", required_argument, NULL, 't'},
		{"force-share", no_argument, NULL, 'U'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {
		.default_cache = "writethrough",
		.writable = true,
		.probe = true,
		.probe_references = true,
	};
	struct io_state s = {0};
	struct vd_error err = {0};
	char **cmds = NULL;
	int ncmds = 0, c, i;
	bool failed = false;

	cmds = calloc(argc, sizeof(*cmds));
	if (!cmds) {
		tool_error("Out of memory");
		return 1;
	}
	while ((c = getopt_long(argc, argv, "hc:f:rnmki:t:U", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			io_usage(stdout);
			free(cmds);
			return 0;
		case 'c':
			cmds[ncmds++] = optarg;
			break;
		case 'f':
			a.format = optarg;
			break;
		case 'r':
			a.writable = false;
			break;
		case 'n':
			a.cache = "none";
			break;
		case 'm':
			s.misalign = true;
			break;
		case 'k':
			a.aio = "io_uring";
			break;
		case 'i':
			if (strcmp(optarg, "threads") && strcmp(optarg, "io_uring") &&
			    strcmp(optarg, "native")) {
				tool_error("Invalid aio option: %s", optarg);
				free(cmds);
				return 1;
			}
			a.aio = optarg;
			break;
		case 't':
			if (tool_check_cache_mode(optarg) < 0) {
				tool_error("Invalid cache option: %s", optarg);
				free(cmds);
				return 1;
			}
			a.cache = optarg;
			break;
		case 'U':
			a.force_share = true;
			break;
		case OPT_IMAGE_OPTS:
			a.image_opts = true;
			break;
		default:
			fprintf(stderr, "Try 'vdisk io --help' for more information.\n");
			free(cmds);
			return 1;
		}
	}
	if (argc - optind > 1) {
		io_usage(stderr);
		free(cmds);
		return 1;
	}
	if (a.image_opts && a.format) {
		tool_error("--image-opts and --format are mutually exclusive");
		free(cmds);
		return 1;
	}

	s.loop = tool_loop_init();
	if (optind < argc) {
		a.filename = argv[optind];
		if (tool_open_blk(&a, &s.blk, &err) < 0) {
			if (a.image_opts) {
				tool_error("can't open: %s", err.msg);
			} else {
				tool_error("can't open device %s: %s", a.filename, err.msg);
			}
			failed = true;
			goto out;
		}
	}

	if (ncmds) {
		for (i = 0; i < ncmds && !s.quit; i++) {
			char *line = strdup(cmds[i]);

			if (!line) {
				tool_error("Out of memory");
				failed = true;
				break;
			}
			run_line(&s, line, &failed);
			free(line);
		}
	} else {
		char *line = NULL;
		size_t cap = 0;

		while (!s.quit) {
			fputs(PROMPT, stdout);
			fflush(stdout);
			if (getline(&line, &cap, stdin) < 0) {
				break;
			}
			run_line(&s, line, &failed);
		}
		free(line);
	}

	io_drain(&s);
out:
	if (s.blk) {
		vd_blk_unref(s.blk);
	}
	fflush(stdout);
	tool_loop_fini(s.loop);
	free(cmds);
	return failed ? 1 : 0;
}
