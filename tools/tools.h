/* SPDX-License-Identifier: MIT */
/*
 * Private helpers shared by the `vdisk` subcommands (tools/ only).
 *
 * Each subcommand is a function `int cmd_NAME(int argc, char **argv)` with
 * argv[0] the subcommand name; it returns the process exit status (0 ok,
 * 1 error; `check` has qemu-img check's 2, 3 and 63 as well).  Only tools/
 * exits; the library never does.
 */
#ifndef VDISK_TOOLS_H
#define VDISK_TOOLS_H

#include <stdbool.h>
#include <stdint.h>

#include <vdisk/backend.h>
#include <vdisk/error.h>
#include <vdisk/loop.h>
#include <vdisk/opts.h>

/* Long options without a short form (getopt_long values). */
enum {
	OPT_IMAGE_OPTS = 256,
	OPT_OUTPUT,
	OPT_FLUSH_INTERVAL,
	OPT_NO_DRAIN,
	OPT_PATTERN,
	OPT_RANDOM,
	OPT_SEED,
	OPT_OBJECT,
	OPT_SIZE,
	OPT_BACKING_CHAIN,
};

int cmd_compare(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_dd(int argc, char **argv);
int cmd_amend(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_io(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_machine(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_nbd(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_measure(int argc, char **argv);

/* "vdisk: MSG\n" on stderr, as qemu-img prints "qemu-img: MSG". */
void tool_error(const char *fmt, ...) VD_PRINTF(1, 2);
/* The name errors are prefixed with ("vdisk" by default). */
extern const char *tool_prog;

/* Print "Try 'vdisk --help' for more information" on stderr; returns 1,
 * the exit status that goes with it. */
int tool_usage_hint(void);
/* The one file name left after the options (argv[optind]), or NULL after
 * printing qemu-img's "Expecting one image file name". */
const char *tool_one_filename(int argc, char **argv);
/* --output=human|json: 0 with *json set, or -EINVAL after printing why. */
int tool_parse_output(const char *arg, bool *json);

/* QEMU's warning for an image that probing guessed to be raw and that is
 * opened read-write (tool_open_image() prints it). */
void tool_warn_raw_probe(const char *filename);

/* Parse a size with qemu-img's suffixes; -EINVAL/-ERANGE on failure. Values
 * above INT64_MAX are -ERANGE. */
int tool_parse_size(const char *str, int64_t *out);

/* How to open an image: the command line of qemu-img / qemu-io. */
struct tool_open_args {
	const char *filename; /* a path, "json:{...}", or with image_opts an
			       * option string */
	const char *format; /* -f; NULL: probe (when probe) */
	bool probe; /* no format: probe it as qemu-img info does */
	/* With probe: a probed qcow2 is opened with its backing chain, as
	 * qemu-img does (VD_OPEN_PROBE_REFERENCES). */
	bool probe_references;
	bool image_opts; /* --image-opts */
	const char *cache; /* -t; NULL: the tool's default mode */
	const char *default_cache; /* used when cache is NULL */
	const char *aio; /* -i: threads, io_uring ("native" means io_uring) */
	bool force_share; /* -U */
	bool writable; /* read-write */
	bool no_backing; /* do not open backing files (qemu-img info) */
	bool check; /* opened to be repaired: VD_OPEN_CHECK */
	bool no_io; /* metadata only (info): VD_OPEN_NO_IO, no key needed */
	const char *key_secret; /* key-secret= for the format (a new luks image) */
};

/*
 * Open an image on the current loop.  On failure returns -errno with the
 * reason in @err (no prefix: callers add "Could not open 'x': " or
 * "can't open device x: " as the tool they imitate does).  Sets the node's
 * write cache from the cache mode.
 */
int tool_open_image(const struct tool_open_args *a, struct vd_node **out, struct vd_error *err);
/* tool_open_image, with the node as the medium of an anonymous backend that
 * keeps the cache mode's write cache: what `io` and `bench` do I/O through,
 * so that the handle's rules apply as for a device. */
int tool_open_blk(const struct tool_open_args *a, struct vd_blk **out, struct vd_error *err);

/* qemu-img's human dump of format-specific information (info.c). */
void tool_dump_specific(const struct vd_opts *o, int indent);

/* qemu-img's "Snapshot list:" table (nothing when @count is 0). */
struct vd_snapshot_info;
void tool_print_snapshots(const struct vd_snapshot_info *sn, int count);

/*
 * -l of convert and measure (snapshot-source.c): "snapshot.id=ID,
 * snapshot.name=NAME" (opts: either may be NULL) or one ID-or-name.  parse
 * prints qemu-img's error and returns -1 on a bad option list; load prints
 * "Failed to load snapshot: ..." and returns -1 when @n cannot read it.
 */
struct tool_snapshot_arg {
	bool opts;
	char *id, *name; /* with opts */
	const char *id_or_name; /* without */
};
int tool_snapshot_arg_parse(const char *arg, struct tool_snapshot_arg *sa);
int tool_snapshot_arg_load(struct vd_node *n, const struct tool_snapshot_arg *sa);
void tool_snapshot_arg_free(struct tool_snapshot_arg *sa);

/* 0 if @mode is a cache mode vd_cache_mode_apply() takes, else -EINVAL. */
int tool_check_cache_mode(const char *mode);

/*
 * --object secret,id=ID,data=STR|file=PATH[,format=raw|base64] and
 * --object tls-creds-x509|tls-creds-psk,id=ID,dir=DIR,... on the command
 * line of every subcommand: vdisk's main() takes them out of argv (stopping
 * at "--") and registers them with vd_secret_add() / vd_tls_creds_add_opts()
 * before the subcommand parses the rest, so each subcommand sees only the
 * objects of other types (serve's iothreads) and finds the credentials by
 * id (nbd's --tls-creds, the nbd driver's tls-creds=).  Returns the new
 * argc, or -1 after printing the error.
 */
int tool_take_secret_objects(int argc, char **argv);

/* -p progress, as qemu-img prints it (progress.c). */
struct tool_progress {
	bool enabled; /* -p */
	bool tty; /* stdout is a terminal: rate and time left too */
	float current, last_print, min_skip; /* percent */
	int64_t total_bytes; /* for the rate; 0: unknown */
	double t0;
	int width; /* of the last line on the terminal */
};
/* Start reporting; without @enabled only SIGUSR1 asks for a report (on
 * stderr).  A report is printed when the percentage moved by more than
 * @min_skip, and at 0 and 100. */
void tool_progress_init(struct tool_progress *p, bool enabled, float min_skip);
void tool_progress_set_bytes(struct tool_progress *p, int64_t total);
/* qemu_progress_print(): @max 0 makes @delta the absolute percentage, else
 * @delta percent of a part worth @max percent of the whole was done. */
void tool_progress_print(struct tool_progress *p, float delta, int max);
/* The newline after the last report (with -p). */
void tool_progress_end(struct tool_progress *p);
/* Shorthands (commit, rebase): init with a 1% step and print 0%; print the
 * percentage @pct; print 100% and end. */
void tool_progress_start(struct tool_progress *p, bool enabled);
void tool_progress_update(struct tool_progress *p, double pct);
void tool_progress_finish(struct tool_progress *p);

/* -o help (opt-help.c): is the option string a request for help ("help",
 * "?", or ending in ",help")? */
bool tool_is_help_option(const char *opts);
/* The format's creation options as qemu-img lists them; with @filename the
 * protocol's too. */
void tool_print_create_help(const char *format, const char *filename);
/* The format's amend options; 1 after an error if it has none. */
int tool_print_amend_help(const char *format);
/* Parse amend's -o list into *out, refusing names the format cannot amend
 * with qemu-img's messages; -errno after printing them. */
int tool_check_amend_options(const char *format, const char *options, struct vd_opts **out);

/* Create a loop and make it current; exits the process on failure. */
struct vd_loop *tool_loop_init(void);
/* Servers: raise the soft limit on open files to the hard one (an NBD
 * connection may hold a descriptor per queued zero-copy reply). */
void tool_raise_nofile(void);
void tool_loop_fini(struct vd_loop *loop);

#endif
