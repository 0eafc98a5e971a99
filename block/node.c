/* SPDX-License-Identifier: MIT */
/*
 * Block nodes: opening from options, the child graph, probing, creation and
 * image information.
 *
 * A node is opened from an option tree: {"driver": "raw", "file": {"driver":
 * "file", "filename": "x"}}.  The core reads the keys every node has
 * (driver, node-name, read-only, force-share, discard, cache.direct,
 * cache.no-flush),
 * the driver reads its own, and whatever nobody read is an error that names
 * its dotted path.  A child's options are the subtree at its key; cache
 * options and read-only are inherited by children that do not set them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/internal.h"

static char *str_dup(const char *s)
{
	return s ? strdup(s) : NULL;
}

static char *join_prefix(const char *prefix, const char *key)
{
	char *out;

	if (!prefix || !*prefix)
		return strdup(key);
	if (asprintf(&out, "%s.%s", prefix, key) < 0)
		return NULL;
	return out;
}

static void node_free(struct vd_node *n)
{
	if (!n)
		return;
	vd_opts_free(n->options);
	free(n->opaque);
	free(n->node_name);
	free(n->filename);
	free(n->opt_prefix);
	free(n);
}

/* Default limits: inherit what constrains I/O from the primary child. */
static void refresh_limits(struct vd_node *n)
{
	if (n->drv->refresh_limits) {
		n->drv->refresh_limits(n);
	} else if (n->file) {
		const struct vd_limits *c = &n->file->limits;
		if (c->request_alignment > n->limits.request_alignment)
			n->limits.request_alignment = c->request_alignment;
		if (c->min_mem_alignment > n->limits.min_mem_alignment)
			n->limits.min_mem_alignment = c->min_mem_alignment;
		if (c->opt_mem_alignment > n->limits.opt_mem_alignment)
			n->limits.opt_mem_alignment = c->opt_mem_alignment;
		if (c->max_transfer &&
		    (!n->limits.max_transfer || c->max_transfer < n->limits.max_transfer))
			n->limits.max_transfer = c->max_transfer;
		if (c->max_iov && (!n->limits.max_iov || c->max_iov < n->limits.max_iov))
			n->limits.max_iov = c->max_iov;
	}
	if (n->limits.request_alignment == 0)
		n->limits.request_alignment = 1;
	if (n->limits.min_mem_alignment == 0)
		n->limits.min_mem_alignment = 1;
}

static int unknown_driver(const char *name, struct vd_error *err)
{
	return vd_error_set(err, -EINVAL, "Unknown driver '%s'", name);
}

struct open_req {
	struct vd_opts *opts; /* owned until handed to the node */
	int flags;
	bool growable, metadata;
	const char *prefix;
	struct vd_node *node;
	struct vd_error *err;
	int ret;
};

static int open_node(struct open_req *o)
{
	struct vd_opts *opts = o->opts;
	struct vd_error *err = o->err;
	const struct vd_block_driver *drv;
	const char *driver, *name;
	struct vd_node *n;
	/* QEMU's spellings of BlockdevDiscardOptions, ignore/unmap first. */
	static const char *const discard_names[] = {"ignore", "unmap", "off", "on", NULL};
	bool ro, share;
	int discard;
	int flags = o->flags;
	int ret;

	o->opts = NULL;
	driver = vd_opts_get(opts, "driver");
	if (!driver) {
		vd_opts_free(opts);
		return vd_error_set(err, -EINVAL, "Parameter '%s%sdriver' is required",
				    o->prefix ? o->prefix : "", o->prefix ? "." : "");
	}
	drv = vd_driver_find(driver);
	if (!drv) {
		ret = unknown_driver(driver, err);
		vd_opts_free(opts);
		return ret;
	}

	n = calloc(1, sizeof(*n));
	if (!n) {
		vd_opts_free(opts);
		return -ENOMEM;
	}
	n->drv = drv;
	n->options = opts;
	n->refcnt = 1;
	n->loop = vd_loop_current();
	n->growable = o->growable;
	n->metadata = o->metadata;
	n->write_cache = true;
	n->limits.request_alignment = 1;
	n->limits.min_mem_alignment = 1;
	vd_node_init_io(n);
	/* Only this node was probed: its children are opened as named. */
	n->probed = (flags & VD_OPEN_PROBE) != 0;
	flags &= ~VD_OPEN_PROBE;
	n->opt_prefix = str_dup(o->prefix);
	if (o->prefix && !n->opt_prefix) {
		ret = -ENOMEM;
		goto fail;
	}
	if (drv->instance_size) {
		n->opaque = calloc(1, drv->instance_size);
		if (!n->opaque) {
			ret = -ENOMEM;
			goto fail;
		}
	}

	name = vd_opts_get(opts, "node-name");
	if (name && !(n->node_name = strdup(name))) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = vd_opts_get_bool(opts, "read-only", !(flags & VD_OPEN_RDWR), &ro, err);
	if (ret < 0)
		goto fail;
	ret = vd_opts_get_bool(opts, "force-share", (flags & VD_OPEN_FORCE_SHARE) != 0, &share,
			       err);
	if (ret < 0)
		goto fail;
	if (share && !ro) {
		ret = vd_error_set(err, -EINVAL,
				   "force-share=on can only be used with read-only images");
		goto fail;
	}
	n->read_only = ro;
	n->force_share = share;
	if (ro)
		flags &= ~VD_OPEN_RDWR;
	else
		flags |= VD_OPEN_RDWR;
	if (share)
		flags |= VD_OPEN_FORCE_SHARE;
	ret = vd_opts_get_bool(opts, "cache.direct", false, &n->cache_direct, err);
	if (ret < 0)
		goto fail;
	ret = vd_opts_get_bool(opts, "cache.no-flush", false, &n->no_flush, err);
	if (ret < 0)
		goto fail;
	ret = vd_opts_get_enum(opts, "discard", discard_names, 1, &discard, err);
	if (ret < 0)
		goto fail;
	n->discard_unmap = discard % 2 == 1; /* unmap or on */
	/* "cache" itself is a dictionary we have now read entirely. */
	vd_opts_get_dict(opts, "cache");

	if (!drv->open) {
		ret = vd_error_set(err, -ENOTSUP, "Driver '%s' cannot be opened", drv->name);
		goto fail;
	}
	ret = drv->open(n, opts, flags, err);
	if (ret < 0) {
		if (!vd_error_is_set(err))
			vd_error_setg_errno(err, ret, "Could not open '%s'",
					    vd_opts_peek(opts, "filename")
						    ? vd_opts_peek(opts, "filename")
						    : driver);
		goto fail_children;
	}

	ret = vd_opts_check_unused(opts, o->prefix, err);
	if (ret < 0)
		goto fail_opened;

	if (!n->filename) {
		const char *fn = vd_opts_peek(opts, "filename");
		if (!fn && n->file)
			fn = n->file->filename;
		if (fn && !(n->filename = strdup(fn))) {
			ret = -ENOMEM;
			goto fail_opened;
		}
	}
	refresh_limits(n);
	vd_node_round_size(n);
	o->node = n;
	return 0;

fail_opened:
	if (drv->close)
		drv->close(n);
fail_children:
	if (n->backing)
		vd_node_unref(n->backing);
	if (n->file)
		vd_node_unref(n->file);
fail:
	node_free(n);
	return ret;
}

static void open_entry(void *opaque)
{
	struct open_req *o = opaque;
	o->ret = open_node(o);
}

/* Open in a coroutine: drivers may do I/O while opening. */
static int open_tree(struct vd_opts *opts, int flags, bool growable, bool metadata,
		     const char *prefix, struct vd_node **out, struct vd_error *err)
{
	struct open_req o = {.opts = opts,
			     .flags = flags,
			     .growable = growable,
			     .metadata = metadata,
			     .prefix = prefix,
			     .err = err};
	int ret;

	if (vd_in_coroutine()) {
		ret = open_node(&o);
	} else {
		ret = vd_co_run_sync(open_entry, &o);
		if (ret < 0) {
			vd_opts_free(o.opts);
			return vd_error_set(err, ret, "Could not start the open");
		}
		ret = o.ret;
	}
	if (ret == 0)
		*out = o.node;
	return ret;
}

int vd_node_open_opts(const struct vd_opts *opts, int flags, struct vd_node **out,
		      struct vd_error *err)
{
	struct vd_opts *copy = vd_opts_clone(opts);

	if (!copy)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	return open_tree(copy, flags & ~VD_OPEN_PROBE, false, false, NULL, out, err);
}

static int set_or_fail(struct vd_opts *o, const char *key, const char *value)
{
	return vd_opts_set_default(o, key, value);
}

/* Lay @src over @dst (later values win), through the JSON form. */
static int merge_opts(struct vd_opts *dst, const struct vd_opts *src, struct vd_error *err)
{
	char *text = vd_opts_to_json(src);
	char *json = NULL;
	int ret;

	if (!text || asprintf(&json, "json:%s", text) < 0) {
		free(text);
		return vd_error_set(err, -ENOMEM, "Out of memory");
	}
	free(text);
	ret = vd_opts_parse_into(dst, json, NULL, err);
	free(json);
	return ret;
}

/*
 * Probing a protocol (nbd://) reads through a node of it; that node then
 * becomes the format's child, so the open makes one connection, as QEMU's
 * bdrv_open does (a qemu-nbd without --persistent serves one client).
 */
static __thread struct vd_node *probed_node;
static __thread const char *probed_filename;

static void unstash_probed(void)
{
	if (probed_node)
		vd_node_unref(probed_node);
	probed_node = NULL;
	probed_filename = NULL;
}

static int probe_protocol(const char *filename, int flags, const char **format,
			  struct vd_error *err)
{
	struct vd_node *n;
	int ret;

	unstash_probed();
	ret = vd_node_open(filename, vd_protocol_for_filename(filename), NULL,
			   flags & (VD_OPEN_RDWR | VD_OPEN_FORCE_SHARE), &n, err);
	if (ret < 0)
		return ret;
	ret = vd_probe_node(n, filename,
			    (flags & (VD_OPEN_NO_BACKING | VD_OPEN_PROBE_REFERENCES)) != 0, format,
			    err);
	if (ret < 0) {
		vd_node_unref(n);
		return ret;
	}
	probed_node = n;
	probed_filename = filename;
	return 0;
}

/* The probed node, if @sub asks for exactly that protocol and name. */
static struct vd_node *take_probed(const struct vd_opts *sub)
{
	const char *fn = vd_opts_peek(sub, "filename"), *drv = vd_opts_peek(sub, "driver");
	struct vd_node *n = probed_node;

	if (!n || !fn || !drv || strcmp(fn, probed_filename) != 0 || strcmp(drv, n->drv->name) != 0)
		return NULL;
	probed_node = NULL;
	probed_filename = NULL;
	return n;
}

int vd_node_open(const char *filename, const char *format, const struct vd_opts *opts, int flags,
		 struct vd_node **out, struct vd_error *err)
{
	struct vd_opts *tree;
	const struct vd_block_driver *drv;
	int ret;

	if (!filename)
		return vd_error_set(err, -EINVAL, "No filename given");

	/* VD_OPEN_PROBE reaches the node only when its format was guessed
	 * (vd_node_was_probed()). */
	if (strncmp(filename, "json:", 5) == 0) {
		flags &= ~VD_OPEN_PROBE;
		ret = vd_opts_parse(filename, NULL, &tree, err);
		if (ret < 0)
			return ret;
		/* Options given beside the json: filename take precedence. */
		if (opts) {
			ret = merge_opts(tree, opts, err);
			if (ret < 0) {
				vd_opts_free(tree);
				return ret;
			}
		}
		if (format)
			ret = set_or_fail(tree, "driver", format);
	} else {
		tree = opts ? vd_opts_clone(opts) : vd_opts_new();
		if (!tree)
			return vd_error_set(err, -ENOMEM, "Out of memory");
		if (format || vd_opts_peek(tree, "driver")) {
			flags &= ~VD_OPEN_PROBE;
		} else {
			if (!(flags & VD_OPEN_PROBE)) {
				vd_opts_free(tree);
				return vd_error_set(err, -EINVAL,
						    "No format given for '%s' (and probing "
						    "was not requested)",
						    filename);
			}
			/* Probing never leads to opening a file an image names: a
			 * format that can name files is only a valid answer when
			 * the open follows no such names. */
			if (strcmp(vd_protocol_for_filename(filename), "file") != 0 &&
			    !vd_opts_has(tree, "file"))
				ret = probe_protocol(filename, flags, &format, err);
			else
				ret = vd_probe_file(filename,
						    (flags & (VD_OPEN_NO_BACKING |
							      VD_OPEN_PROBE_REFERENCES)) != 0,
						    &format, err);
			if (ret < 0) {
				vd_opts_free(tree);
				return ret;
			}
		}
		if (!format)
			format = vd_opts_peek(tree, "driver");
		drv = vd_driver_find(format);
		if (!drv) {
			ret = unknown_driver(format, err);
			vd_opts_free(tree);
			return ret;
		}
		ret = set_or_fail(tree, "driver", drv->name);
		if (ret == 0 && drv->child_name) {
			/* A format or filter: the filename names its protocol child. */
			char key[64];
			if (!vd_opts_has(tree, drv->child_name) ||
			    !vd_opts_peek(tree, drv->child_name)) {
				snprintf(key, sizeof(key), "%s.filename", drv->child_name);
				ret = set_or_fail(tree, key, filename);
				snprintf(key, sizeof(key), "%s.driver", drv->child_name);
				if (ret == 0)
					ret = set_or_fail(tree, key,
							  vd_protocol_for_filename(filename));
			}
		} else if (ret == 0) {
			ret = set_or_fail(tree, "filename", filename);
		}
	}
	if (ret < 0) {
		vd_opts_free(tree);
		unstash_probed();
		return vd_error_set(err, ret, "Out of memory");
	}
	ret = open_tree(tree, flags, false, false, NULL, out, err);
	unstash_probed();
	return ret;
}

int vd_node_open_child(struct vd_node *parent, struct vd_opts *opts, const char *key,
		       const char *default_driver, int flags, struct vd_node **child,
		       struct vd_error *err)
{
	struct vd_opts *sub;
	const char *fn = vd_opts_peek(opts, key);
	char *prefix;
	bool growable, metadata;
	int ret;

	if (!vd_opts_has(opts, key))
		return vd_error_set(err, -EINVAL, "A block device must be specified for \"%s\"",
				    key);
	if (fn) {
		/* A plain string is a filename for a new node of the default driver. */
		sub = vd_opts_new();
		if (!sub)
			return -ENOMEM;
		if (vd_opts_set(sub, "filename", fn) < 0) {
			vd_opts_free(sub);
			return -ENOMEM;
		}
		vd_opts_get(opts, key);
	} else {
		sub = vd_opts_take_dict(opts, key);
		if (!sub)
			return -ENOMEM;
	}
	ret = 0;
	/* A protocol named by the filename (nbd://...) rather than "file". */
	if (default_driver && strcmp(default_driver, "file") == 0 && !vd_opts_has(sub, "driver"))
		default_driver = vd_protocol_for_filename(vd_opts_peek(sub, "filename"));
	if (default_driver)
		ret = vd_opts_set_default(sub, "driver", default_driver);
	if (ret == 0)
		ret = vd_opts_set_default(sub, "cache.direct", parent->cache_direct ? "on" : "off");
	if (ret == 0)
		ret = vd_opts_set_default(sub, "cache.no-flush", parent->no_flush ? "on" : "off");
	if (ret == 0)
		ret = vd_opts_set_default(sub, "discard",
					  parent->discard_unmap ? "unmap" : "ignore");
	if (ret == 0 && parent->read_only)
		ret = vd_opts_set_default(sub, "read-only", "on");
	if (ret == 0 && parent->force_share)
		ret = vd_opts_set_default(sub, "force-share", "on");
	if (ret < 0) {
		vd_opts_free(sub);
		return -ENOMEM;
	}

	*child = take_probed(sub);
	if (*child) {
		(*child)->growable =
			parent->drv->is_format || (parent->drv->is_filter && parent->growable);
		vd_opts_free(sub);
		return 0;
	}
	prefix = join_prefix(parent->opt_prefix, key);
	if (!prefix) {
		vd_opts_free(sub);
		return -ENOMEM;
	}
	/* The protocol under a format (or a filter over it) may grow. */
	growable = parent->drv->is_format || (parent->drv->is_filter && parent->growable);
	/* A filter passes on what its parent asks of it (QEMU's
	 * bdrv_filter_default_perms); a backing file is not the primary
	 * child. */
	metadata =
		parent->drv->child_name && !strcmp(key, parent->drv->child_name) &&
		(parent->drv->child_has_metadata || (parent->drv->is_filter && parent->metadata));
	if (parent->read_only)
		flags &= ~VD_OPEN_RDWR;
	ret = open_tree(sub, flags, growable, metadata, prefix, child, err);
	free(prefix);
	return ret;
}

/* References are taken and dropped on more than one thread (an export's
 * connections on its I/O thread, the export set on the main one): atomic.
 * The last one must be dropped on the node's loop. */
void vd_node_ref(struct vd_node *n)
{
	__atomic_fetch_add(&n->refcnt, 1, __ATOMIC_RELAXED);
}

void vd_node_unref(struct vd_node *n)
{
	if (!n || __atomic_sub_fetch(&n->refcnt, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	vd_node_drain(n);
	if (n->drv->close)
		n->drv->close(n);
	if (n->backing)
		vd_node_unref(n->backing);
	if (n->file)
		vd_node_unref(n->file);
	node_free(n);
}

int vd_cache_mode_apply(const char *mode, struct vd_opts *opts, bool *writethrough,
			struct vd_error *err)
{
	static const struct {
		const char *name;
		bool direct, no_flush, writethrough;
	} modes[] = {
		{"writeback", false, false, false}, {"writethrough", false, false, true},
		{"none", true, false, false},	    {"off", true, false, false},
		{"directsync", true, false, true},  {"unsafe", false, true, false},
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strcmp(mode, modes[i].name) != 0)
			continue;
		if (vd_opts_set(opts, "cache.direct", modes[i].direct ? "on" : "off") < 0 ||
		    vd_opts_set(opts, "cache.no-flush", modes[i].no_flush ? "on" : "off") < 0)
			return vd_error_set(err, -ENOMEM, "Out of memory");
		if (writethrough)
			*writethrough = modes[i].writethrough;
		return 0;
	}
	return vd_error_set(err, -EINVAL, "Invalid cache option: %s", mode);
}

int64_t vd_node_size(const struct vd_node *n)
{
	return n && n->drv ? n->size : -ENOMEDIUM;
}

bool vd_node_is_read_only(const struct vd_node *n)
{
	return n->read_only;
}

bool vd_node_was_probed(const struct vd_node *n)
{
	return n->probed;
}

const char *vd_node_format(const struct vd_node *n)
{
	return n->drv->name;
}

const char *vd_node_filename(const struct vd_node *n)
{
	return n->filename ? n->filename : "";
}

const char *vd_node_name(const struct vd_node *n)
{
	return n->node_name ? n->node_name : "";
}

int vd_node_set_name(struct vd_node *n, const char *name)
{
	char *copy = strdup(name);

	if (!copy)
		return -ENOMEM;
	free(n->node_name);
	n->node_name = copy;
	return 0;
}

struct vd_node *vd_node_file_child(const struct vd_node *n)
{
	return n->file;
}

struct vd_node *vd_node_backing(const struct vd_node *n)
{
	return n->backing;
}

struct vd_loop *vd_node_loop(const struct vd_node *n)
{
	return n->loop;
}

bool vd_node_contains(const struct vd_node *n, const struct vd_node *child)
{
	if (!n)
		return false;
	return n == child || vd_node_contains(n->file, child) ||
	       vd_node_contains(n->backing, child);
}

/* --- moving between loops ------------------------------------------------ */

static void drain_tree(struct vd_node *n)
{
	if (!n)
		return;
	vd_node_drain(n);
	drain_tree(n->file);
	drain_tree(n->backing);
}

static void detach_tree(struct vd_node *n)
{
	if (!n)
		return;
	detach_tree(n->file);
	detach_tree(n->backing);
	if (n->drv->detach_loop)
		n->drv->detach_loop(n);
}

static void set_tree_loop(struct vd_node *n, struct vd_loop *loop)
{
	if (!n)
		return;
	n->loop = loop;
	set_tree_loop(n->file, loop);
	set_tree_loop(n->backing, loop);
}

/* Children first; what was attached is detached again on failure. */
static int attach_tree(struct vd_node *n, struct vd_error *err)
{
	int ret;

	if (!n)
		return 0;
	ret = attach_tree(n->file, err);
	if (ret < 0)
		return ret;
	ret = attach_tree(n->backing, err);
	if (ret < 0) {
		detach_tree(n->file);
		return ret;
	}
	if (n->drv->attach_loop) {
		ret = n->drv->attach_loop(n, err);
		if (ret < 0) {
			detach_tree(n->file);
			detach_tree(n->backing);
			return ret;
		}
	}
	return 0;
}

struct move_call {
	struct vd_node *n;
	struct vd_error *err;
	int ret;
};

static void leave_loop_fn(void *opaque)
{
	struct move_call *m = opaque;

	drain_tree(m->n);
	detach_tree(m->n);
}

static void enter_loop_fn(void *opaque)
{
	struct move_call *m = opaque;

	m->ret = attach_tree(m->n, m->err);
}

int vd_node_set_loop(struct vd_node *n, struct vd_loop *loop, struct vd_error *err)
{
	struct vd_loop *old = n->loop;
	struct move_call m = {n, err, 0};
	int ret;

	if (!loop || !old)
		return vd_error_set(err, -EINVAL, "Node '%s' cannot change event loops",
				    vd_node_name(n));
	if (loop == old)
		return 0;
	vd_loop_call_wait(old, leave_loop_fn, &m);
	set_tree_loop(n, loop);
	vd_loop_call_wait(loop, enter_loop_fn, &m);
	ret = m.ret;
	if (ret == 0)
		return 0;
	if (!vd_error_is_set(err))
		vd_error_setg_errno(err, ret, "Cannot move node '%s' to another thread",
				    vd_node_name(n));
	/* Back where it was; what the node held there can be taken again.
	 * If even that fails, the drivers without their engine fail every
	 * request with -EIO (vd_aio_co_* on no engine) rather than crash. */
	set_tree_loop(n, old);
	m.err = NULL;
	vd_loop_call_wait(old, enter_loop_fn, &m);
	if (m.ret < 0)
		vd_message(VD_MSG_ERROR, "vdisk: node '%s' lost its I/O engine: %s",
			   vd_node_name(n), strerror(-m.ret));
	return ret;
}

const struct vd_limits *vd_node_limits(const struct vd_node *n)
{
	return &n->limits;
}

void vd_node_set_write_cache(struct vd_node *n, bool enabled)
{
	n->write_cache = enabled;
}

bool vd_node_write_cache(const struct vd_node *n)
{
	return n->write_cache;
}

bool vd_node_cache_direct(const struct vd_node *n)
{
	return n->cache_direct;
}

bool vd_node_cache_no_flush(const struct vd_node *n)
{
	return n->no_flush;
}

/* --- creation and information -------------------------------------------- */

/* A protocol that cannot create (nbd): what exists at @filename becomes the
 * new image if it holds @size bytes (growing it where the protocol can),
 * its first sector cleared so no old header survives; QEMU's
 * bdrv_co_create_opts_simple. */
static int protocol_create_fallback(const struct vd_block_driver *proto, const char *filename,
				    struct vd_opts *opts, struct vd_error *err)
{
	struct vd_error terr = {0};
	struct vd_node *n = NULL;
	const char *prealloc;
	uint64_t size;
	int64_t len;
	int ret;

	ret = vd_opts_get_size(opts, "size", 0, &size, err);
	if (ret < 0)
		return ret;
	prealloc = vd_opts_get(opts, "preallocation");
	if (prealloc && strcmp(prealloc, "off"))
		return vd_error_set(err, -ENOTSUP, "Unsupported preallocation mode '%s'", prealloc);
	if (size > INT64_MAX)
		return vd_error_set(err, -EINVAL, "Image size is too large");
	ret = vd_node_open(filename, proto->name, NULL, VD_OPEN_RDWR, &n, &terr);
	if (ret < 0)
		return vd_error_set(err, ret,
				    "Protocol driver '%s' does not support image creation, "
				    "and opening the image failed: %s",
				    proto->name, terr.msg);
	ret = vd_node_truncate(n, (int64_t)size, false, VD_PREALLOC_OFF, &terr);
	len = vd_node_size(n);
	if (ret < 0 && ret != -ENOTSUP) {
		vd_error_set(err, ret, "%s", terr.msg);
	} else if (len < (int64_t)size) {
		ret = vd_error_set(err, -ENOTSUP, "%s",
				   terr.msg[0] ? terr.msg
					       : "Image is smaller than the requested size");
	} else {
		ret = vd_node_pwrite_zeroes(n, 0, len < 512 ? len : 512, VD_REQ_MAY_UNMAP);
		if (ret < 0)
			vd_error_setg_errno(err, ret,
					    "Failed to clear the new image's first sector");
	}
	vd_node_unref(n);
	return ret < 0 ? ret : 0;
}

bool vd_image_create_zeroes(const char *filename)
{
	const struct vd_block_driver *proto = vd_driver_find(vd_protocol_for_filename(filename));

	return proto && proto->create;
}

int vd_protocol_create(const char *filename, struct vd_opts *opts, struct vd_error *err)
{
	const char *name = vd_protocol_for_filename(filename);
	const struct vd_block_driver *proto = vd_driver_find(name);

	if (!proto)
		return vd_error_set(err, -ENOTSUP, "Unknown protocol '%s'", name);
	if (proto->create)
		return proto->create(filename, opts, err);
	return protocol_create_fallback(proto, filename, opts, err);
}

int vd_image_create(const char *filename, const char *format, struct vd_opts *opts,
		    struct vd_error *err)
{
	const struct vd_block_driver *drv = vd_driver_find(format);
	int it = 0;
	const char *key, *value;
	const struct vd_opts *dict;

	if (!drv)
		return vd_error_set(err, -EINVAL, "Unknown file format '%s'", format);
	if (!drv->create)
		return vd_error_set(err, -ENOTSUP,
				    "Format driver '%s' does not support image creation",
				    drv->name);
	if (drv->is_format && !drv->create_any_protocol &&
	    strcmp(vd_protocol_for_filename(filename), "file"))
		return vd_error_set(err, -ENOTSUP,
				    "Format driver '%s' creates images on local files only, "
				    "not through protocol '%s'",
				    drv->name, vd_protocol_for_filename(filename));
	/* Refuse unknown options before touching the file. */
	while (vd_opts_next(opts, &it, &key, &value, &dict)) {
		bool known = strcmp(key, "size") == 0;
		for (const char *const *k = drv->create_opts; !known && k && *k; k++)
			known = strcmp(key, *k) == 0;
		if (!known)
			return vd_error_set(err, -EINVAL, "Invalid parameter '%s'", key);
	}
	return drv->create(filename, opts, err);
}

bool vd_format_has_create_opt(const char *format, const char *key)
{
	const struct vd_block_driver *drv = vd_driver_find(format);

	if (!drv || !drv->create)
		return false;
	if (!strcmp(key, "size"))
		return true;
	for (const char *const *k = drv->create_opts; k && *k; k++)
		if (!strcmp(*k, key))
			return true;
	return false;
}

static int64_t allocated_size(struct vd_node *n)
{
	if (n->drv->get_allocated_size)
		return n->drv->get_allocated_size(n);
	if (n->file)
		return allocated_size(n->file);
	return -ENOTSUP;
}

int vd_node_host_range(struct vd_node *n, int64_t offset, int64_t bytes, int *fd,
		       int64_t *host_offset)
{
	if (!n || !n->drv->host_range)
		return -ENOTSUP;
	return n->drv->host_range(n, offset, bytes, fd, host_offset);
}

int vd_node_get_info(struct vd_node *n, struct vd_image_info *info, struct vd_error *err)
{
	int ret = 0;

	memset(info, 0, sizeof(*info));
	info->filename = str_dup(vd_node_filename(n));
	if (!info->filename)
		return vd_error_set(err, -ENOMEM, "Out of memory");
	info->format = n->drv->name;
	info->virtual_size = n->size;
	info->actual_size = allocated_size(n);
	if (info->actual_size < 0)
		info->actual_size = -1;
	if (n->drv->get_info)
		ret = n->drv->get_info(n, info, err);
	if (ret < 0)
		vd_image_info_cleanup(info);
	return ret;
}

void vd_image_info_cleanup(struct vd_image_info *info)
{
	free(info->filename);
	free(info->backing_filename);
	free(info->full_backing_filename);
	free(info->backing_filename_format);
	vd_opts_free(info->format_specific);
	memset(info, 0, sizeof(*info));
}

/* --- debug events -------------------------------------------------------- */

const char *const vd_debug_event_names[VD_EV_MAX] = {
	[VD_EV_READ_AIO] = "read_aio",
	[VD_EV_WRITE_AIO] = "write_aio",
	[VD_EV_FLUSH_TO_DISK] = "flush_to_disk",
	[VD_EV_L1_UPDATE] = "l1_update",
	[VD_EV_L2_LOAD] = "l2_load",
	[VD_EV_L2_UPDATE] = "l2_update",
	[VD_EV_L2_ALLOC_WRITE] = "l2_alloc_write",
	[VD_EV_REFBLOCK_LOAD] = "refblock_load",
	[VD_EV_REFBLOCK_UPDATE] = "refblock_update",
	[VD_EV_REFBLOCK_ALLOC] = "refblock_alloc",
	[VD_EV_REFTABLE_UPDATE] = "reftable_update",
	[VD_EV_CLUSTER_ALLOC] = "cluster_alloc",
	[VD_EV_COW_READ] = "cow_read",
	[VD_EV_COW_WRITE] = "cow_write",
};

void vd_debug_event(struct vd_node *n, enum vd_debug_event ev)
{
	while (n && n->drv) {
		if (n->drv->debug_event) {
			n->drv->debug_event(n, ev);
			return;
		}
		n = n->file;
	}
}
