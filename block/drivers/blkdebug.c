/* SPDX-License-Identifier: MIT */
/*
 * "blkdebug": a filter that fails chosen requests, in the spirit of QEMU 7.2's
 * block/blkdebug.c, with its option spelling:
 *
 *   driver=blkdebug,image=IMG,inject-error.0.event=l2_update,
 *       inject-error.0.errno=28,inject-error.0.once=on,align=4096
 *
 * A rule names an event:
 *  - a debug event a driver above raises (vd_debug_event(): l1_update,
 *    l2_load, cluster_alloc, ...).  As in QEMU (blkdebug_debug_event), the
 *    event arms its rules, replacing the rules any earlier event armed, and
 *    an armed rule fails every request that then passes through this node
 *    and touches its range, until it fires with "once" or another event
 *    re-arms;
 *  - a request type, our extension: read, write, flush, discard,
 *    write_zeroes (write-zeroes).  The rule applies to those requests;
 *  - read_aio, write_aio, flush_to_disk: QEMU's events, raised by the raw
 *    format above before its reads and writes and armed as above.  If no
 *    driver above has raised the event by the time the first request of that
 *    type arrives (blkdebug is the top node), the rule applies to reads,
 *    writes or flushes directly, where QEMU would never fire it.
 *
 * Per rule: errno (default EIO; 0 injects nothing), sector (QEMU: requests
 * that contain the byte sector * 512), our offset/length byte range
 * (requests overlapping it), once (fire one time, then the rule is gone),
 * our after=N (let the first N matching requests pass), immediately (QEMU:
 * fail without first yielding to the loop).  Rules are read from
 * inject-error.0, .1, ... up to the first missing index, after those of the
 * config=FILE file (QEMU's [inject-error] sections, key = "value" lines).
 * The limits "align", "max-transfer", "opt-write-zero", "max-write-zero",
 * "opt-discard", "max-discard" override those inherited from the image.
 *
 * Missing: QEMU's state machine (set-state rules, "state"), "iotype".
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/drivers.h"

enum io_type {
	IO_READ,
	IO_WRITE,
	IO_FLUSH,
	IO_DISCARD,
	IO_WRITE_ZEROES,
	IO_MAX
};
static const char *const io_names[IO_MAX] = {"read", "write", "flush", "discard", "write_zeroes"};

struct rule {
	int event; /* enum vd_debug_event, or -1 for a request-type rule */
	int io; /* enum io_type for a request-type rule, else -1 */
	int error; /* positive errno; 0 injects nothing */
	int64_t offset, length; /* offset -1: any request */
	uint64_t after, seen;
	bool once, immediately;
	bool armed; /* event rules: the event fired */
	bool removed; /* a once rule that fired */
};

struct blkdebug_state {
	struct rule *rules;
	int nrules;
	/* read_aio, write_aio, flush_to_disk have been raised from above. */
	bool io_event_seen[3];
	uint64_t align, max_transfer, opt_write_zero, max_write_zero, opt_discard, max_discard;
};

/* The request type that QEMU's read_aio/write_aio/flush_to_disk precede. */
static int io_event_type(int event)
{
	switch (event) {
	case VD_EV_READ_AIO:
		return IO_READ;
	case VD_EV_WRITE_AIO:
		return IO_WRITE;
	case VD_EV_FLUSH_TO_DISK:
		return IO_FLUSH;
	default:
		return -1;
	}
}

/* --- rules ----------------------------------------------------------------- */

/* Parse the rule at "@prefix." (e.g. "inject-error.3.") of @o into @r. */
static int parse_rule(struct vd_opts *o, const char *prefix, struct rule *r, struct vd_error *err)
{
	char key[96];
	const char *ev;
	uint64_t v, sector, offset, length;
	bool has_sector, has_offset, has_length;
	int ret;

#define KEY(name) (snprintf(key, sizeof(key), "%s%s", prefix, name), key)
	memset(r, 0, sizeof(*r));
	r->event = r->io = -1;
	ev = vd_opts_get(o, KEY("event"));
	if (!ev)
		return vd_error_set(err, -EINVAL, "Parameter '%s' is required", key);
	for (int i = 0; i < VD_EV_MAX; i++)
		if (vd_debug_event_names[i] && strcmp(ev, vd_debug_event_names[i]) == 0)
			r->event = i;
	for (int i = 0; i < IO_MAX; i++)
		if (strcmp(ev, io_names[i]) == 0)
			r->io = i;
	if (strcmp(ev, "write-zeroes") == 0)
		r->io = IO_WRITE_ZEROES;
	if (r->event < 0 && r->io < 0)
		return vd_error_set(err, -EINVAL,
				    "Parameter '%s' expects an event name (read_aio, write_aio, "
				    "flush_to_disk, l1_update, l2_load, ..., or read, write, "
				    "flush, discard, write_zeroes)",
				    key);

	ret = vd_opts_get_u64(o, KEY("errno"), EIO, &v, err);
	if (ret < 0)
		return ret;
	if (v > 4095)
		return vd_error_set(err, -EINVAL, "Parameter '%s' expects an errno value (0..4095)",
				    key);
	r->error = (int)v;

	has_sector = vd_opts_has(o, KEY("sector"));
	ret = vd_opts_get_u64(o, key, 0, &sector, err);
	if (ret < 0)
		return ret;
	has_offset = vd_opts_has(o, KEY("offset"));
	ret = vd_opts_get_size(o, key, 0, &offset, err);
	if (ret < 0)
		return ret;
	has_length = vd_opts_has(o, KEY("length"));
	ret = vd_opts_get_size(o, key, 1, &length, err);
	if (ret < 0)
		return ret;
	if (has_sector && (has_offset || has_length))
		return vd_error_set(err, -EINVAL,
				    "Parameter '%ssector' cannot be combined with "
				    "'offset' or 'length'",
				    prefix);
	if (has_sector && sector > (uint64_t)VD_MAX_LENGTH / 512)
		return vd_error_set(err, -EINVAL, "Parameter '%ssector' is too large", prefix);
	if (has_length && length == 0)
		return vd_error_set(err, -EINVAL, "Parameter '%slength' must not be 0", prefix);
	if (offset > (uint64_t)VD_MAX_LENGTH || length > (uint64_t)VD_MAX_LENGTH - offset)
		return vd_error_set(err, -EINVAL,
				    "Parameters '%soffset' and 'length' are too "
				    "large",
				    prefix);
	r->offset = -1;
	if (has_sector) {
		/* QEMU: the requests that contain the byte at sector * 512. */
		r->offset = (int64_t)sector * 512;
		r->length = 1;
	} else if (has_offset || has_length) {
		r->offset = (int64_t)offset;
		r->length = (int64_t)length;
	}

	ret = vd_opts_get_bool(o, KEY("once"), false, &r->once, err);
	if (ret == 0)
		ret = vd_opts_get_bool(o, KEY("immediately"), false, &r->immediately, err);
	if (ret == 0)
		ret = vd_opts_get_u64(o, KEY("after"), 0, &r->after, err);
	return ret;
#undef KEY
}

static int add_rules(struct blkdebug_state *s, struct vd_opts *o, struct vd_error *err)
{
	char prefix[48];

	for (int i = 0;; i++) {
		struct rule *rules;
		int ret;

		snprintf(prefix, sizeof(prefix), "inject-error.%d", i);
		if (!vd_opts_has(o, prefix))
			break;
		vd_opts_get_dict(o, prefix);
		rules = realloc(s->rules, (s->nrules + 1) * sizeof(*rules));
		if (!rules)
			return vd_error_set(err, -ENOMEM, "Out of memory");
		s->rules = rules;
		snprintf(prefix, sizeof(prefix), "inject-error.%d.", i);
		ret = parse_rule(o, prefix, &s->rules[s->nrules], err);
		if (ret < 0)
			return ret;
		s->nrules++;
	}
	vd_opts_get_dict(o, "inject-error");
	return 0;
}

static char *trim(char *p)
{
	char *end;

	while (*p == ' ' || *p == '\t')
		p++;
	end = p + strlen(p);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return p;
}

/*
 * QEMU's config file syntax (qemu_config_parse): "[inject-error]" starts a
 * rule, "key = \"value\"" lines fill it, '#' starts a comment.  The rules are
 * translated to inject-error.N.KEY options and parsed like those.
 */
static int read_config(struct blkdebug_state *s, const char *path, struct vd_error *err)
{
	struct vd_opts *o;
	char line[1024], key[128];
	int lineno = 0, index = -1, ret = 0;
	FILE *f = fopen(path, "re");

	if (!f)
		return vd_error_setg_errno(err, -errno, "Could not read blkdebug config file '%s'",
					   path);
	o = vd_opts_new();
	if (!o) {
		fclose(f);
		return -ENOMEM;
	}
	while (ret == 0 && fgets(line, sizeof(line), f)) {
		char *p = trim(line), *eq, *k, *v;
		size_t vl;

		lineno++;
		if (*p == '\0' || *p == '#')
			continue;
		if (*p == '[') {
			char *close = strchr(p, ']');
			char *name = p + 1;
			if (!close) {
				ret = vd_error_set(err, -EINVAL, "%s:%d: parse error", path,
						   lineno);
				break;
			}
			*close = '\0';
			name[strcspn(name, " \t")] = '\0';
			if (strcmp(name, "inject-error") == 0) {
				index++;
			} else if (strcmp(name, "set-state") == 0) {
				ret = vd_error_set(err, -ENOTSUP,
						   "%s:%d: set-state rules are not supported", path,
						   lineno);
			} else {
				ret = vd_error_set(err, -EINVAL,
						   "%s:%d: There is no option group '%s'", path,
						   lineno, name);
			}
			continue;
		}
		eq = strchr(p, '=');
		if (!eq || index < 0) {
			ret = vd_error_set(err, -EINVAL, "%s:%d: %s", path, lineno,
					   index < 0 ? "no group defined" : "parse error");
			break;
		}
		*eq = '\0';
		k = trim(p);
		v = trim(eq + 1);
		vl = strlen(v);
		if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
			v[vl - 1] = '\0';
			v++;
		}
		snprintf(key, sizeof(key), "inject-error.%d.%s", index, k);
		if (vd_opts_set(o, key, v) < 0)
			ret = vd_error_set(err, -ENOMEM, "Out of memory");
	}
	fclose(f);
	for (int i = 0; ret == 0 && i <= index; i++) {
		/* An empty section still needs its "event". */
		snprintf(key, sizeof(key), "inject-error.%d.event", i);
		if (!vd_opts_has(o, key))
			ret = vd_error_set(err, -EINVAL,
					   "%s: [inject-error] section %d needs an event", path,
					   i + 1);
	}
	if (ret == 0)
		ret = add_rules(s, o, err);
	if (ret == 0)
		ret = vd_opts_check_unused(o, NULL, err);
	vd_opts_free(o);
	return ret;
}

/* The rule that fails this request, or NULL (QEMU's rule_check). */
static struct rule *match_rule(struct blkdebug_state *s, enum io_type io, int64_t offset,
			       int64_t bytes)
{
	for (int i = 0; i < s->nrules; i++) {
		struct rule *r = &s->rules[i];
		int ev_io = r->event >= 0 ? io_event_type(r->event) : -1;

		if (r->removed)
			continue;
		if (r->io >= 0) {
			if (r->io != (int)io)
				continue;
		} else if (ev_io >= 0 && !s->io_event_seen[ev_io]) {
			if (ev_io != (int)io) /* nobody raises it: a request-type rule */
				continue;
		} else if (!r->armed) {
			continue;
		}
		if (r->offset >= 0 &&
		    (bytes == 0 || offset >= r->offset + r->length || r->offset >= offset + bytes))
			continue;
		if (r->seen++ < r->after)
			continue;
		return r;
	}
	return NULL;
}

static int check_rules(struct vd_node *n, enum io_type io, int64_t offset, int64_t bytes)
{
	struct blkdebug_state *s = n->opaque;
	struct rule *r = match_rule(s, io, offset, bytes);
	int error;

	if (!r || !r->error)
		return 0;
	error = r->error;
	if (r->once)
		r->removed = true;
	vd_trace(blkdebug_inject, "node %p %s offset %" PRId64 " bytes %" PRId64 " errno %d",
		 (void *)n, io_names[io], offset, bytes, error);
	/* QEMU completes the failure from the loop unless "immediately". */
	if (!r->immediately)
		vd_co_yield_to_loop();
	return -error;
}

static void blkdebug_debug_event(struct vd_node *n, enum vd_debug_event ev)
{
	struct blkdebug_state *s = n->opaque;
	bool injected = false;
	int ev_io = io_event_type(ev);

	if (ev_io >= 0)
		s->io_event_seen[ev_io] = true;
	for (int i = 0; i < s->nrules; i++) {
		struct rule *r = &s->rules[i];

		if (r->removed || r->event != (int)ev)
			continue;
		/* The first rule of an event replaces what was armed before. */
		if (!injected) {
			for (int j = 0; j < s->nrules; j++)
				s->rules[j].armed = false;
			injected = true;
		}
		r->armed = true;
	}
	/* Like QEMU's bdrv_debug_event, the event stops at the first driver
	 * that handles events: it is not passed further down. */
}

/* --- open ------------------------------------------------------------------ */

static int get_limit(struct vd_opts *opts, const char *key, uint64_t *out, struct vd_error *err)
{
	int ret = vd_opts_get_size(opts, key, 0, out, err);

	if (ret == 0 && *out >= INT32_MAX)
		ret = vd_error_set(err, -EINVAL, "Parameter '%s' must be below 2 GiB", key);
	return ret;
}

/* QEMU's blkdebug_parse_filename: "blkdebug:[CONFIG]:IMAGE". */
static int parse_filename(struct vd_opts *opts, struct vd_error *err)
{
	const char *fn = vd_opts_peek(opts, "filename");
	const char *colon;
	char *config;
	int ret = 0;

	if (!fn || strncmp(fn, "blkdebug:", 9) != 0)
		return 0;
	vd_opts_get(opts, "filename");
	fn += 9;
	colon = strchr(fn, ':');
	if (!colon)
		return vd_error_set(err, -EINVAL, "Could not parse blkdebug filename");
	if (colon > fn) {
		config = strndup(fn, (size_t)(colon - fn));
		if (!config)
			return -ENOMEM;
		ret = vd_opts_set_default(opts, "config", config);
		free(config);
	}
	if (ret == 0 && *(colon + 1))
		ret = vd_opts_set_default(opts, "x-image", colon + 1);
	return ret < 0 ? vd_error_set(err, ret, "Out of memory") : 0;
}

static void blkdebug_close(struct vd_node *n)
{
	struct blkdebug_state *s = n->opaque;

	free(s->rules);
	s->rules = NULL;
	s->nrules = 0;
}

static int blkdebug_open(struct vd_node *n, struct vd_opts *opts, int flags, struct vd_error *err)
{
	struct blkdebug_state *s = n->opaque;
	const char *config, *x_image;
	int ret;

	ret = parse_filename(opts, err);
	if (ret < 0)
		return ret;
	config = vd_opts_get(opts, "config");
	if (config && *config) {
		ret = read_config(s, config, err);
		if (ret < 0)
			goto fail;
	}
	ret = add_rules(s, opts, err);
	if (ret < 0)
		goto fail;

	ret = get_limit(opts, "align", &s->align, err);
	if (ret == 0 && s->align && (s->align & (s->align - 1)))
		ret = vd_error_set(err, -EINVAL, "Cannot meet constraints with align %" PRIu64,
				   s->align);
	if (ret == 0)
		ret = get_limit(opts, "max-transfer", &s->max_transfer, err);
	if (ret == 0 && s->max_transfer && s->max_transfer % (s->align ? s->align : 1))
		ret = vd_error_set(err, -EINVAL,
				   "Cannot meet constraints with max-transfer %" PRIu64,
				   s->max_transfer);
	if (ret == 0)
		ret = get_limit(opts, "opt-write-zero", &s->opt_write_zero, err);
	if (ret == 0)
		ret = get_limit(opts, "max-write-zero", &s->max_write_zero, err);
	if (ret == 0)
		ret = get_limit(opts, "opt-discard", &s->opt_discard, err);
	if (ret == 0)
		ret = get_limit(opts, "max-discard", &s->max_discard, err);
	if (ret < 0)
		goto fail;

	x_image = vd_opts_get(opts, "x-image");
	if (x_image && vd_opts_set(opts, "image", x_image) < 0) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vd_node_open_child(n, opts, "image", "file", flags, &n->file, err);
	if (ret < 0)
		goto fail;
	n->size = vd_node_size(n->file);
	/*
	 * FUA travels down to the image, whose node emulates it if it must, so
	 * that a writethrough write is not a flush of this node (as in QEMU,
	 * where flush rules do not fire on writethrough writes).
	 */
	n->supported_write_flags = VD_REQ_FUA;
	n->supported_zero_flags = VD_REQ_FUA | VD_REQ_MAY_UNMAP;
	return 0;

fail:
	blkdebug_close(n);
	return ret;
}

static void blkdebug_refresh_limits(struct vd_node *n)
{
	struct blkdebug_state *s = n->opaque;

	n->limits = n->file->limits;
	if (s->align)
		n->limits.request_alignment = (uint32_t)s->align;
	if (s->max_transfer)
		n->limits.max_transfer = s->max_transfer;
	if (s->opt_write_zero)
		n->limits.write_zeroes_alignment = (uint32_t)s->opt_write_zero;
	if (s->max_write_zero)
		n->limits.max_write_zeroes = s->max_write_zero;
	if (s->opt_discard)
		n->limits.discard_alignment = (uint32_t)s->opt_discard;
	if (s->max_discard)
		n->limits.max_discard = s->max_discard;
}

/* --- requests -------------------------------------------------------------- */

/* The guarantees of block_driver.h, checked as QEMU's blkdebug does. */
static void assert_request(struct vd_node *n, int64_t offset, int64_t bytes)
{
	assert(offset % n->limits.request_alignment == 0);
	assert(bytes % n->limits.request_alignment == 0);
	assert(!n->limits.max_transfer || (uint64_t)bytes <= n->limits.max_transfer);
}

static void update_size(struct vd_node *n)
{
	if (n->file->size > n->size)
		n->size = n->file->size;
}

static int blkdebug_co_preadv(struct vd_node *n, int64_t offset, int64_t bytes,
			      struct vd_qiov *qiov, int flags)
{
	int ret;

	assert_request(n, offset, bytes);
	ret = check_rules(n, IO_READ, offset, bytes);
	return ret ? ret : vd_co_preadv(n->file, offset, bytes, qiov, flags);
}

static int blkdebug_co_pwritev(struct vd_node *n, int64_t offset, int64_t bytes,
			       struct vd_qiov *qiov, int flags)
{
	int ret;

	assert_request(n, offset, bytes);
	ret = check_rules(n, IO_WRITE, offset, bytes);
	if (ret == 0)
		ret = vd_co_pwritev(n->file, offset, bytes, qiov, flags);
	if (ret == 0)
		update_size(n);
	return ret;
}

/* The core flushes the image afterwards. */
static int blkdebug_co_flush(struct vd_node *n)
{
	return check_rules(n, IO_FLUSH, 0, 0);
}

static int blkdebug_co_pdiscard(struct vd_node *n, int64_t offset, int64_t bytes)
{
	int ret = check_rules(n, IO_DISCARD, offset, bytes);

	return ret ? ret : vd_co_pdiscard(n->file, offset, bytes);
}

static int blkdebug_co_pwrite_zeroes(struct vd_node *n, int64_t offset, int64_t bytes, int flags)
{
	int ret = check_rules(n, IO_WRITE_ZEROES, offset, bytes);

	if (ret == 0)
		ret = vd_co_pwrite_zeroes(n->file, offset, bytes, flags);
	if (ret == 0)
		update_size(n);
	return ret;
}

static int blkdebug_co_truncate(struct vd_node *n, int64_t size, bool exact,
				enum vd_prealloc prealloc, struct vd_error *err)
{
	int ret = vd_co_truncate(n->file, size, exact, prealloc, err);

	if (ret == 0)
		n->size = vd_node_size(n->file);
	return ret;
}

const struct vd_block_driver vd_driver_blkdebug = {
	.name = "blkdebug",
	.instance_size = sizeof(struct blkdebug_state),
	.is_filter = true,
	.child_name = "image",
	.open = blkdebug_open,
	.close = blkdebug_close,
	.co_preadv = blkdebug_co_preadv,
	.co_pwritev = blkdebug_co_pwritev,
	.co_flush = blkdebug_co_flush,
	.co_pdiscard = blkdebug_co_pdiscard,
	.co_pwrite_zeroes = blkdebug_co_pwrite_zeroes,
	/* co_block_status NULL: the core forwards it to the image. */
	.co_truncate = blkdebug_co_truncate,
	.refresh_limits = blkdebug_refresh_limits,
	.debug_event = blkdebug_debug_event,
};
