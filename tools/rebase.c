/* SPDX-License-Identifier: MIT */
/*
 * vdisk rebase [-f FMT] [-F FMT] [-u] [-b NEW] [-p] [-q] [-t CACHE] [-T SRC_CACHE] [-U]
 *              [--image-opts] FILE
 *
 * qemu-img rebase (7.2): point FILE at another backing file.  Unsafe mode
 * (-u) rewrites only the header.  Safe mode reads, for every range FILE does
 * not allocate, the old and the new backing chain and writes into FILE what
 * differs, so that what FILE reads does not change; -b "" flattens FILE onto
 * no backing file.  Same options, messages and exit codes as qemu-img.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tools.h"

#define REBASE_BUF (2 << 20) /* QEMU's IO_BUF_SIZE */

static void rebase_usage(FILE *f)
{
	fprintf(f, "usage: vdisk rebase [--image-opts] [-U] [-q] [-f fmt] [-t cache] "
		   "[-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename\n");
}

/* A node of @top's backing chain whose file is @path (compared as real
 * paths, QEMU's bdrv_find_backing_image), or NULL. */
static struct vd_node *find_in_chain(struct vd_node *top, const char *path)
{
	char want[PATH_MAX], have[PATH_MAX];
	struct vd_node *n;

	if (!realpath(path, want))
		return NULL;
	for (n = vd_node_backing(top); n; n = vd_node_backing(n)) {
		const char *name = vd_node_filename(n);

		if (name && realpath(name, have) && !strcmp(have, want))
			return n;
	}
	return NULL;
}

/* The new backing name as the overlay will resolve it: relative to the
 * overlay's directory. */
static char *resolve_against(const char *overlay, const char *name)
{
	const char *slash = strrchr(overlay, '/');
	char *out;

	if (name[0] == '/' || !slash)
		return strdup(name);
	if (asprintf(&out, "%.*s/%s", (int)(slash - overlay), overlay, name) < 0)
		return NULL;
	return out;
}

static bool format_known(const char *fmt)
{
	for (const char *const *names = vd_driver_names(); names && *names; names++)
		if (!strcmp(*names, fmt))
			return true;
	return false;
}

static bool is_zero(const uint8_t *b, int64_t len)
{
	return len == 0 || (b[0] == 0 && memcmp(b, b + 1, (size_t)len - 1) == 0);
}

/* Length of the run at the start of @a/@b that is equal (or differs), in
 * 512-byte sectors as QEMU's compare_buffers: returns true if it differs. */
static bool compare_run(const uint8_t *a, const uint8_t *b, int64_t len, int64_t *pnum)
{
	int64_t step = len < 512 ? len : 512, done;
	bool differs = memcmp(a, b, (size_t)step) != 0;

	for (done = step; done < len; done += step) {
		step = len - done < 512 ? len - done : 512;
		if ((memcmp(a + done, b + done, (size_t)step) != 0) != differs)
			break;
	}
	*pnum = done;
	return differs;
}

/* Read [offset, offset + n) of @n (NULL or past its end: zeroes). */
static int read_or_zero(struct vd_node *n, int64_t size, int64_t offset, int64_t len, uint8_t *buf)
{
	if (!n || offset >= size) {
		memset(buf, 0, (size_t)len);
		return 0;
	}
	return vd_node_pread(n, offset, buf, len);
}

static int copy_differences(struct vd_node *top, struct vd_node *old_backing,
			    struct vd_node *new_backing, struct vd_node *prefix,
			    struct tool_progress *progress)
{
	int64_t size = vd_node_size(top), offset, n;
	int64_t old_size = old_backing ? vd_node_size(old_backing) : 0;
	int64_t new_size = new_backing ? vd_node_size(new_backing) : 0;
	uint8_t *buf_old = malloc(REBASE_BUF), *buf_new = malloc(REBASE_BUF);
	int ret = 0;

	if (!buf_old || !buf_new) {
		tool_error("Out of memory");
		ret = -ENOMEM;
		goto out;
	}
	for (offset = 0; offset < size; offset += n) {
		bool old_is_zero = false;
		int64_t written = 0;

		n = size - offset < REBASE_BUF ? size - offset : REBASE_BUF;
		/* Allocated in the overlay itself: nothing changes there. */
		ret = vd_node_is_allocated_above(top, vd_node_backing(top), offset, n, &n);
		if (ret < 0) {
			tool_error("error while reading image metadata: %s", strerror(-ret));
			goto out;
		}
		if (ret)
			continue;
		if (prefix) {
			/* Between the old backing file and the new one (which is
			 * deeper in the same chain): only what the images in
			 * between allocate can differ. */
			ret = vd_node_is_allocated_above(vd_node_backing(top), prefix, offset, n,
							 &n);
			if (ret < 0) {
				tool_error("error while reading image metadata: %s",
					   strerror(-ret));
				goto out;
			}
			if (!ret)
				continue;
		}
		if (offset >= old_size) {
			old_is_zero = true;
		} else if (offset + n > old_size) {
			n = old_size - offset;
		}
		ret = read_or_zero(old_backing, old_size, offset, n, buf_old);
		if (ret < 0) {
			tool_error("error while reading from old backing file");
			goto out;
		}
		if (new_backing && offset < new_size && offset + n > new_size)
			n = new_size - offset;
		ret = read_or_zero(new_backing, new_size, offset, n, buf_new);
		if (ret < 0) {
			tool_error("error while reading from new backing file");
			goto out;
		}
		while (written < n) {
			int64_t pnum;

			if (compare_run(buf_old + written, buf_new + written, n - written, &pnum)) {
				if (old_is_zero || is_zero(buf_old + written, pnum))
					ret = vd_node_pwrite_zeroes(top, offset + written, pnum, 0);
				else
					ret = vd_node_pwrite(top, offset + written,
							     buf_old + written, pnum, 0);
				if (ret < 0) {
					tool_error("Error while writing to COW image: %s",
						   strerror(-ret));
					goto out;
				}
			}
			written += pnum;
		}
		tool_progress_update(progress, 100.0 * (double)(offset + n) / (double)size);
	}
	ret = vd_node_flush(top);
	if (ret < 0)
		tool_error("Error while writing to COW image: %s", strerror(-ret));
out:
	free(buf_old);
	free(buf_new);
	return ret;
}

int cmd_rebase(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"help", no_argument, NULL, 'h'},
		{"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
		{"force-share", no_argument, NULL, 'U'},
		{NULL, 0, NULL, 0},
	};
	struct tool_open_args a = {.probe = true, .writable = true, .default_cache = "writeback"};
	const char *out_base = NULL, *out_fmt = NULL, *src_cache = "writeback";
	struct vd_error err = {0};
	struct vd_node *top = NULL, *new_backing = NULL, *prefix = NULL;
	struct vd_loop *loop;
	bool unsafe = false, progress = false, quiet = false;
	struct tool_progress meter = {0};
	int c, ret = 1;

	while ((c = getopt_long(argc, argv, "hf:F:b:upt:T:qU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			rebase_usage(stdout);
			return 0;
		case 'f':
			a.format = optarg;
			break;
		case 'F':
			out_fmt = optarg;
			break;
		case 'b':
			out_base = optarg;
			break;
		case 'u':
			unsafe = true;
			break;
		case 'p':
			progress = true;
			break;
		case 't':
			a.cache = optarg;
			break;
		case 'T':
			src_cache = optarg;
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
	if (quiet)
		progress = false;
	if (optind != argc - 1) {
		tool_error("Expecting one image file name");
		return tool_usage_hint();
	}
	if (!unsafe && !out_base) {
		tool_error("Must specify backing file (-b) or use unsafe mode (-u)");
		return tool_usage_hint();
	}
	a.filename = argv[optind];
	if (a.cache && tool_check_cache_mode(a.cache) < 0) {
		tool_error("Invalid cache option: %s", a.cache);
		return 1;
	}
	if (tool_check_cache_mode(src_cache) < 0) {
		tool_error("Invalid source cache option: %s", src_cache);
		return 1;
	}
	/* -U is for the images read; the overlay is written (qemu-img
	 * passes force_share only to the new backing file). */
	bool share_backing = a.force_share;
	a.force_share = false;
	a.no_backing = unsafe;

	loop = tool_loop_init();
	if (tool_open_image(&a, &top, &err) < 0) {
		tool_error("Could not open '%s': %s", a.filename, err.msg);
		goto out;
	}
	if (out_fmt && !format_known(out_fmt)) {
		tool_error("Invalid format name: '%s'", out_fmt);
		goto out;
	}

	if (!unsafe && out_base[0]) {
		char *path = resolve_against(vd_node_filename(top), out_base);

		if (!path) {
			tool_error("Out of memory");
			goto out;
		}
		prefix = find_in_chain(top, path);
		if (!prefix) {
			struct tool_open_args b = {.filename = path,
						   .format = out_fmt,
						   .probe = !out_fmt,
						   .cache = src_cache,
						   .force_share = share_backing};

			if (tool_open_image(&b, &new_backing, &err) < 0) {
				tool_error("Could not open new backing file '%s': %s", out_base,
					   err.msg);
				free(path);
				goto out;
			}
		}
		free(path);
	}

	/* As qemu-img: the meter runs (0% first) in either mode. */
	tool_progress_start(&meter, progress);
	if (!unsafe) {
		if (copy_differences(top, vd_node_backing(top), prefix ? prefix : new_backing,
				     prefix, &meter) < 0)
			goto out;
	}

	if (out_base && out_base[0] && !out_fmt) {
		/* As 7.2's bdrv_change_backing_file(require = true). */
		tool_error("Could not change the backing file to '%s': backing format must be "
			   "specified",
			   out_base);
		goto out;
	}
	if (vd_node_change_backing_file(top, out_base, out_fmt, &err) < 0) {
		if (err.code == -ENOSPC)
			tool_error("Could not change the backing file to '%s': No space left in "
				   "the file header",
				   out_base ? out_base : "");
		else
			tool_error("Could not change the backing file to '%s': %s",
				   out_base ? out_base : "", strerror(-err.code));
		goto out;
	}
	tool_progress_end(&meter);
	ret = 0;
out:
	if (new_backing)
		vd_node_unref(new_backing);
	if (top)
		vd_node_unref(top);
	tool_loop_fini(loop);
	return ret;
}
