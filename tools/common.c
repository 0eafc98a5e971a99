/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the vdisk subcommands: error printing, sizes, opening an
 * image from a qemu-img/qemu-io style command line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <nettle/base64.h>

#include <vdisk/secret.h>
#include <vdisk/tls.h>

#include "tools/tools.h"

const char *tool_prog = "vdisk";

void tool_error(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s: ", tool_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void tool_warn_raw_probe(const char *filename)
{
	fflush(stdout);
	fprintf(stderr,
		"WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
		"         Automatically detecting the format is dangerous for raw images, "
		"write operations on block 0 will be restricted.\n"
		"         Specify the 'raw' format explicitly to remove the restrictions.\n",
		filename);
}

int tool_parse_size(const char *str, int64_t *out)
{
	uint64_t v;
	int ret;

	/* qemu_strtosz takes hexadecimal without a suffix ("0x1000") too. */
	if (str[0] == '0' && (str[1] == 'x' || str[1] == 'X') && str[2]) {
		char *end;

		errno = 0;
		v = strtoull(str + 2, &end, 16);
		if (*end) {
			return -EINVAL;
		}
		if (errno == ERANGE) {
			return -ERANGE;
		}
	} else {
		ret = vd_parse_size(str, &v);
		if (ret < 0) {
			return ret;
		}
	}
	if (v > INT64_MAX) {
		return -ERANGE;
	}
	*out = (int64_t)v;
	return 0;
}

int tool_open_image(const struct tool_open_args *a, struct vd_node **out, struct vd_error *err)
{
	const char *cache = a->cache ? a->cache : a->default_cache;
	struct vd_opts *opts = NULL;
	bool writethrough = false;
	int flags = 0;
	int ret;

	if (a->image_opts) {
		if (a->format) {
			return vd_error_set(err, -EINVAL,
					    "--image-opts and --format are mutually exclusive");
		}
		ret = vd_opts_parse(a->filename, NULL, &opts, err);
		if (ret < 0) {
			return ret;
		}
	} else {
		opts = vd_opts_new();
		if (!opts) {
			return vd_error_set(err, -ENOMEM, "Out of memory");
		}
	}

	if (cache) {
		ret = vd_cache_mode_apply(cache, opts, &writethrough, err);
		if (ret < 0) {
			goto out;
		}
	}
	if (a->aio) {
		const char *name = strcmp(a->aio, "native") == 0 ? "io_uring" : a->aio;

		ret = vd_opts_set(opts, "file.aio", name);
		if (ret < 0) {
			vd_error_set(err, ret, "Out of memory");
			goto out;
		}
	}

	if (a->key_secret) {
		ret = vd_opts_set(opts, "key-secret", a->key_secret);
		if (ret < 0) {
			vd_error_set(err, ret, "Out of memory");
			goto out;
		}
	}
	if (a->writable) {
		flags |= VD_OPEN_RDWR;
	}
	if (a->force_share) {
		flags |= VD_OPEN_FORCE_SHARE;
	}
	if (a->no_backing) {
		flags |= VD_OPEN_NO_BACKING;
	}
	if (a->check) {
		flags |= VD_OPEN_CHECK;
	}
	if (a->no_io) {
		flags |= VD_OPEN_NO_IO;
	}
	if (a->image_opts) {
		ret = vd_node_open_opts(opts, flags, out, err);
	} else {
		if (!a->format && a->probe) {
			flags |= VD_OPEN_PROBE;
			if (a->probe_references)
				flags |= VD_OPEN_PROBE_REFERENCES;
		}
		ret = vd_node_open(a->filename, a->format, opts, flags, out, err);
	}
	if (ret == 0) {
		vd_node_set_write_cache(*out, !writethrough);
		/* QEMU's raw_open says this for a probed raw image opened
		 * read-write, whatever the tool; the library never prints. */
		if (vd_node_was_probed(*out) && !strcmp(vd_node_format(*out), "raw") &&
		    !vd_node_is_read_only(*out)) {
			tool_warn_raw_probe(a->filename);
		}
	}
out:
	vd_opts_free(opts);
	return ret;
}

int tool_open_blk(const struct tool_open_args *a, struct vd_blk **out, struct vd_error *err)
{
	struct vd_node *node;
	int ret = tool_open_image(a, &node, err);

	*out = NULL;
	if (ret < 0)
		return ret;
	ret = vd_blk_new(NULL, NULL, out);
	if (ret == 0) {
		vd_blk_set_write_cache(*out, vd_node_write_cache(node));
		ret = vd_blk_insert_node(*out, node);
	}
	vd_node_unref(node);
	if (ret < 0) {
		vd_blk_unref(*out);
		*out = NULL;
		return vd_error_setg_errno(err, ret, "Could not open '%s'", a->filename);
	}
	return 0;
}

int tool_check_cache_mode(const char *mode)
{
	struct vd_opts *opts = vd_opts_new();
	bool writethrough;
	int ret;

	if (!opts) {
		return -ENOMEM;
	}
	ret = vd_cache_mode_apply(mode, opts, &writethrough, NULL);
	vd_opts_free(opts);
	return ret;
}

void tool_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

struct vd_loop *tool_loop_init(void)
{
	struct vd_loop *loop;
	int ret = vd_loop_new(&loop);

	if (ret < 0) {
		tool_error("Could not create the event loop: %s", strerror(-ret));
		exit(1);
	}
	vd_loop_set_current(loop);
	return loop;
}

void tool_loop_fini(struct vd_loop *loop)
{
	vd_loop_set_current(NULL);
	vd_loop_free(loop);
}

int tool_usage_hint(void)
{
	fprintf(stderr, "Try 'vdisk --help' for more information\n");
	return 1;
}

const char *tool_one_filename(int argc, char **argv)
{
	if (optind != argc - 1) {
		tool_error("Expecting one image file name");
		tool_usage_hint();
		return NULL;
	}
	return argv[optind];
}

int tool_parse_output(const char *arg, bool *json)
{
	if (!strcmp(arg, "json")) {
		*json = true;
	} else if (!strcmp(arg, "human")) {
		*json = false;
	} else {
		tool_error("--output must be used with human or json as argument.");
		return -EINVAL;
	}
	return 0;
}

/* The rows of qemu-img's bdrv_snapshot_dump. */
void tool_print_snapshots(const struct vd_snapshot_info *sn, int count)
{
	if (count <= 0)
		return;
	printf("Snapshot list:\n");
	printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
	for (int i = 0; i < count; i++) {
		char date[32], clock[32], size[32], icount[32] = "";
		time_t t = (time_t)sn[i].date_sec;
		struct tm tm;
		uint64_t secs = sn[i].vm_clock_nsec / 1000000000;

		localtime_r(&t, &tm);
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
		snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
			 (int)((secs / 60) % 60), (int)(secs % 60),
			 (int)((sn[i].vm_clock_nsec / 1000000) % 1000));
		vd_format_size(sn[i].vm_state_size, size, sizeof(size));
		if (sn[i].icount != UINT64_MAX)
			snprintf(icount, sizeof(icount), "%" PRIu64, sn[i].icount);
		printf("%-9s %-16s %8s%20s%13s%11s\n", sn[i].id, sn[i].name, size, date, clock,
		       icount);
	}
}

/* Read all of @path (a secret's file=, taken as it is, newline included,
 * as QEMU does). */
static int read_secret_file(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0;
	int ret = 0;

	if (!f) {
		return -errno;
	}
	for (;;) {
		size_t got;

		if (n == cap) {
			uint8_t *grown;

			if (cap >= (64u << 20)) {
				ret = -EFBIG;
				break;
			}
			size_t newcap = cap ? cap * 2 : 256;

			grown = malloc(newcap);
			if (!grown) {
				ret = -ENOMEM;
				break;
			}
			if (n) {
				memcpy(grown, buf, n);
			}
			vd_secret_free(buf, n ? n - 1 : 0);
			buf = grown;
			cap = newcap;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0) {
			ret = ferror(f) ? -EIO : 0;
			break;
		}
	}
	fclose(f);
	if (ret < 0) {
		vd_memzero_explicit(buf, cap);
		free(buf);
		return ret;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* One --object definition of type secret. 0, or -1 after printing why. */
static int add_secret(const char *def)
{
	struct vd_error err = {0};
	struct vd_opts *o = NULL;
	const char *id, *data, *file, *format;
	uint8_t *bytes = NULL, *decoded = NULL;
	size_t len = 0, dlen = 0;
	int ret = -1;

	if (vd_opts_parse(def, "qom-type", &o, &err) < 0) {
		/* Not the text: it may hold a passphrase. */
		tool_error("--object secret: the definition does not parse");
		return -1;
	}
	vd_opts_get(o, "qom-type");
	id = vd_opts_get(o, "id");
	data = vd_opts_get(o, "data");
	file = vd_opts_get(o, "file");
	format = vd_opts_get(o, "format");
	if (vd_opts_peek(o, "keyid") || vd_opts_peek(o, "iv")) {
		tool_error("--object secret: encrypted secrets (keyid=, iv=) are not supported");
		goto out;
	}
	if (vd_opts_check_unused(o, NULL, &err) < 0) {
		tool_error("--object secret: %s", err.msg);
		goto out;
	}
	if (!id) {
		tool_error("Parameter 'id' is missing");
		goto out;
	}
	if (!!data == !!file) {
		tool_error("secret '%s': exactly one of 'data' and 'file' must be given", id);
		goto out;
	}
	if (format && strcmp(format, "raw") && strcmp(format, "base64")) {
		tool_error("Parameter 'format' does not accept value '%s'", format);
		goto out;
	}
	if (file) {
		int r = read_secret_file(file, &bytes, &len);

		if (r < 0) {
			tool_error("Unable to read %s: %s", file, strerror(-r));
			goto out;
		}
	} else {
		len = strlen(data);
		bytes = malloc(len + 1);
		if (!bytes) {
			tool_error("Out of memory");
			goto out;
		}
		memcpy(bytes, data, len + 1);
	}
	if (format && !strcmp(format, "base64")) {
		struct base64_decode_ctx ctx;

		dlen = BASE64_DECODE_LENGTH(len) + 1;
		decoded = malloc(dlen);
		base64_decode_init(&ctx);
		if (!decoded ||
		    !base64_decode_update(&ctx, &dlen, decoded, len, (const char *)bytes) ||
		    !base64_decode_final(&ctx)) {
			tool_error("secret '%s': invalid base64 data", id);
			goto out;
		}
		vd_memzero_explicit(bytes, len);
		free(bytes);
		bytes = decoded;
		len = dlen;
		decoded = NULL;
	}
	if (vd_secret_add(id, bytes, len, &err) < 0) {
		tool_error("%s", err.msg);
		goto out;
	}
	ret = 0;
out:
	if (bytes) {
		vd_memzero_explicit(bytes, len);
		free(bytes);
	}
	if (decoded) {
		vd_memzero_explicit(decoded, dlen);
		free(decoded);
	}
	if (o) {
		/* The option tree held the data too. */
		data = vd_opts_peek(o, "data");
		if (data) {
			vd_memzero_explicit((char *)data, strlen(data));
		}
		vd_opts_free(o);
	}
	return ret;
}

static bool is_secret_def(const char *def)
{
	return !strncmp(def, "secret,", 7) || !strncmp(def, "qom-type=secret,", 16);
}

static bool is_tls_creds_def(const char *def)
{
	if (!strncmp(def, "qom-type=", 9))
		def += 9;
	return !strncmp(def, "tls-creds-x509,", 15) || !strncmp(def, "tls-creds-psk,", 14) ||
	       !strncmp(def, "authz-simple,", 13);
}

/* One --object tls-creds-x509|tls-creds-psk|authz-simple,...: credentials
 * are loaded now, so a bad folder is reported before anything is opened.
 * 0, or -1 after printing. */
static int add_tls_creds(const char *def)
{
	struct vd_error err = {0};
	struct vd_opts *o = NULL;
	int ret = vd_opts_parse(def, "qom-type", &o, &err);

	if (ret == 0)
		ret = vd_tls_authz_type(vd_opts_peek(o, "qom-type"))
			      ? vd_tls_authz_add_opts(o, &err)
			      : vd_tls_creds_add_opts(o, &err);
	vd_opts_free(o);
	if (ret < 0) {
		tool_error("--object %s: %s", def, err.msg);
		return -1;
	}
	return 0;
}

int tool_take_secret_objects(int argc, char **argv)
{
	int in = 1, out = 1;

	while (in < argc) {
		const char *def = NULL;
		int used = 1;

		if (!strcmp(argv[in], "--")) {
			break;
		}
		if (!strcmp(argv[in], "--object") && in + 1 < argc) {
			def = argv[in + 1];
			used = 2;
		} else if (!strncmp(argv[in], "--object=", 9)) {
			def = argv[in] + 9;
		}
		if (def && is_tls_creds_def(def)) {
			if (add_tls_creds(def) < 0)
				return -1;
			in += used;
			continue;
		}
		if (def && is_secret_def(def)) {
			if (add_secret(def) < 0) {
				return -1;
			}
			/* Keep no copy of the passphrase in argv either. */
			vd_memzero_explicit((char *)def, strlen(def));
			in += used;
			continue;
		}
		argv[out++] = argv[in++];
	}
	while (in < argc) {
		argv[out++] = argv[in++];
	}
	argv[out] = NULL;
	return out;
}
