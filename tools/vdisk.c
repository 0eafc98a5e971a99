/* SPDX-License-Identifier: MIT */
/*
 * vdisk: the command line, used as qemu-img and qemu-io are.
 *
 *   vdisk SUBCOMMAND [OPTIONS]...
 *
 * Each subcommand lives in its own file (create.c, info.c, io.c, bench.c).
 */
#include <stdio.h>
#include <string.h>

#include <vdisk/aio.h>
#include <vdisk/block.h>
#include <vdisk/secret.h>
#include <vdisk/tls.h>

#include "tools/tools.h"

struct subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *synopsis;
};

static const struct subcommand subcommands[] = {
	{"amend", cmd_amend,
	 "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o "
	 "options filename"},
	{"bench", cmd_bench,
	 "bench [-c count] [-d depth] [-f fmt] [--flush-interval=N] [-i aio] [-n] [--no-drain] "
	 "[-o offset] [--pattern=P] [-q] [-s size] [-S step] [-t cache] [-w] [-U] [--random] "
	 "[--seed=N] [--image-opts] filename"},
	{"bitmap", cmd_bitmap,
	 "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... "
	 "[-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] "
	 "[--image-opts | -f fmt] filename bitmap"},
	{"check", cmd_check,
	 "check [-f fmt] [-r leaks|all] [--output=human|json] [-q] [-U] [--image-opts] filename"},
	{"commit", cmd_commit,
	 "commit [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] "
	 "filename"},
	{"compare", cmd_compare,
	 "compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] "
	 "[-s] [-U] filename1 filename2"},
	{"convert", cmd_convert,
	 "convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] "
	 "[--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O "
	 "output_fmt] "
	 "[-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-r rate_limit] "
	 "[-m num_coroutines] [-W] [--salvage] filename [filename2 [...]] output_filename"},
	{"create", cmd_create,
	 "create [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] [-q] filename "
	 "[size]"},
	{"dd", cmd_dd,
	 "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [-p] [bs=block_size] [count=blocks] "
	 "[skip=blocks] if=input of=output"},
	{"info", cmd_info,
	 "info [-f fmt] [--output=human|json] [--backing-chain] [-U] [--image-opts] filename"},
	{"io", cmd_io,
	 "io [-f fmt] [--image-opts] [-r] [-n] [-t cache] [-i aio] [-U] [-c cmd]... [filename]"},
	{"map", cmd_map,
	 "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] "
	 "[--max-length=len] [--output=ofmt] [-U] filename"},
	{"measure", cmd_measure,
	 "measure [--output=human|json] [-O output_fmt] [-o options] [--size N | "
	 "[--image-opts] [-f fmt] [-U] filename]"},
	{"nbd", cmd_nbd,
	 "nbd [-r] [-f fmt] [-k socket | -p port -b addr] [-x name] [-D desc] [-e shared] [-t] "
	 "[--pid-file path] [--cache mode] [--aio mode] filename"},
	{"rebase", cmd_rebase,
	 "rebase [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] "
	 "-b backing_file [-F backing_fmt] filename"},
	{"resize", cmd_resize,
	 "resize [-f fmt] [--image-opts] [--preallocation=mode] [-q] [--shrink] filename "
	 "[+ | -]size"},
	{"serve", cmd_serve,
	 "serve [--blockdev opts]... [--export opts]... [--chardev opts --monitor opts]"},
	{"snapshot", cmd_snapshot,
	 "snapshot [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] "
	 "filename"},
	{"machine", cmd_machine,
	 "machine [-m size] [-drive opts]... [--qtest stdio|unix:path] [--qmp unix:path] "
	 "[--trace pattern]"},
};

#define N_SUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static void usage(FILE *f)
{
	size_t i;

	fprintf(f, "usage: vdisk [--version] [--help] SUBCOMMAND [OPTIONS]...\n"
		   "\n"
		   "Subcommands:\n");
	for (i = 0; i < N_SUBCOMMANDS; i++) {
		fprintf(f, "  %s\n", subcommands[i].synopsis);
	}
	fprintf(f, "\n"
		   "Sizes take the suffixes k, M, G, T, P, E (powers of 1024).\n"
		   "'vdisk io -c help' lists the commands of 'vdisk io'.\n");
}

static void version(void)
{
	const char *const *names;

	printf("vdisk %s\n", VDISK_VERSION);
	printf("engines:");
	if (vd_aio_kind_available(VD_AIO_IO_URING)) {
		printf(" %s", vd_aio_kind_name(VD_AIO_IO_URING));
	}
	if (vd_aio_kind_available(VD_AIO_THREADS)) {
		printf(" %s", vd_aio_kind_name(VD_AIO_THREADS));
	}
	printf("\nformats:");
	for (names = vd_driver_names(); names && *names; names++) {
		printf(" %s", *names);
	}
	printf("\n");
}

/* The library's warnings and check reports, as qemu-img prints them. */
static void print_message(void *opaque, enum vd_message_level level, const char *msg)
{
	fprintf(stderr, "%s\n", msg);
}

int main(int argc, char **argv)
{
	size_t i;

	vd_message_set_handler(print_message, NULL);
	if (argc < 2) {
		usage(stderr);
		return 1;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V") ||
	    !strcmp(argv[1], "version")) {
		version();
		return 0;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	for (i = 0; i < N_SUBCOMMANDS; i++) {
		if (!strcmp(argv[1], subcommands[i].name)) {
			int n, ret;

			argv[1] = (char *)"vdisk"; /* getopt messages say "vdisk: ..." */
			n = tool_take_secret_objects(argc - 1, argv + 1);
			if (n < 0) {
				return 1;
			}
			ret = subcommands[i].fn(n, argv + 1);
			vd_secret_remove_all();
			vd_tls_creds_remove_all();
			return ret;
		}
	}
	tool_error("Command not found: %s", argv[1]);
	fprintf(stderr, "Try 'vdisk --help' for more information\n");
	return 1;
}
