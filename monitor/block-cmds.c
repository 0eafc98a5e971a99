/* SPDX-License-Identifier: MIT */
/*
 * QMP block commands over a backend registry, with QEMU 7.2's shapes and
 * messages (block/qapi.c, blockdev.c, block/monitor/block-hmp-cmds' QMP
 * halves): query-block, query-blockstats, block_resize, eject,
 * blockdev-change-medium, blockdev-open-tray, blockdev-close-tray,
 * blockdev-remove-medium, blockdev-insert-medium, and the events
 * BLOCK_IO_ERROR and DEVICE_TRAY_MOVED.
 *
 * Where vdisk has no such state the values are QEMU's defaults for a drive
 * without it: no throttling (bps/iops 0), detect_zeroes "off", encrypted
 * false, write_threshold 0, unmap_merged 0, wr_highest_offset 0.
 * Statistics come from the block layer's per-node accounting: the device's
 * "stats" are those of its root node, "parent" and "backing" those of the
 * children (QEMU keeps only wr_highest_offset there).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vdisk/backend.h>
#include <vdisk/qmp.h>

#include "monitor/qmp-internal.h"

struct vd_qmp_block {
	struct vd_qmp_server *server;
	struct vd_blk_registry *reg;
};

/* --- shapes -------------------------------------------------------------- */

/* A value kept as text in vd_opts, typed back as QAPI has it. */
static json_t *typed_value(const char *v)
{
	const char *p = v;

	if (!strcmp(v, "true"))
		return json_true();
	if (!strcmp(v, "false"))
		return json_false();
	if (*p == '-')
		p++;
	if (*p && strspn(p, "0123456789") == strlen(p) && strlen(p) < 19)
		return json_integer(strtoll(v, NULL, 10));
	return qmp_string(v);
}

static bool opts_is_array(const struct vd_opts *o)
{
	const struct vd_opts *dict;
	const char *key, *value;
	int iter = 0, i = 0;
	char idx[16];

	while (vd_opts_next(o, &iter, &key, &value, &dict)) {
		snprintf(idx, sizeof(idx), "%d", i++);
		if (strcmp(key, idx))
			return false;
	}
	return i > 0;
}

static json_t *opts_to_json(const struct vd_opts *o, int depth)
{
	const struct vd_opts *dict;
	const char *key, *value;
	bool array = opts_is_array(o);
	json_t *j = array ? json_array() : json_object();
	int iter = 0;

	while (j && depth < 32 && vd_opts_next(o, &iter, &key, &value, &dict)) {
		json_t *v = value ? typed_value(value) : opts_to_json(dict, depth + 1);

		if (array)
			json_array_append_new(j, v);
		else
			json_object_set_new(j, key, v);
	}
	return j;
}

/* ImageInfo (block/qapi.c bdrv_query_image_info), with the backing chain
 * as "backing-image". */
static json_t *image_info(struct vd_node *n, int *depth)
{
	struct vd_image_info info;
	json_t *o;

	if (vd_node_get_info(n, &info, NULL) < 0)
		return NULL;
	o = json_object();
	json_object_set_new(o, "virtual-size", json_integer(info.virtual_size));
	json_object_set_new(o, "filename", qmp_string(info.filename));
	if (info.cluster_size)
		json_object_set_new(o, "cluster-size", json_integer(info.cluster_size));
	json_object_set_new(o, "format", qmp_string(info.format));
	if (info.actual_size >= 0)
		json_object_set_new(o, "actual-size", json_integer(info.actual_size));
	if (info.format_specific && vd_opts_count(info.format_specific) > 0) {
		json_object_set_new(o, "format-specific",
				    json_pack("{s:s,s:o}", "type", info.format, "data",
					      opts_to_json(info.format_specific, 0)));
	}
	if (info.backing_filename) {
		json_object_set_new(o, "backing-filename", qmp_string(info.backing_filename));
		if (info.full_backing_filename)
			json_object_set_new(o, "full-backing-filename",
					    qmp_string(info.full_backing_filename));
		if (info.backing_filename_format)
			json_object_set_new(o, "backing-filename-format",
					    qmp_string(info.backing_filename_format));
	}
	json_object_set_new(o, "dirty-flag", json_boolean(info.has_dirty_flag && info.dirty_flag));
	vd_image_info_cleanup(&info);
	if (vd_node_backing(n) && *depth < 64) {
		json_t *b;

		++*depth;
		b = image_info(vd_node_backing(n), depth);
		if (b)
			json_object_set_new(o, "backing-image", b);
	}
	return o;
}

/* BlockDeviceInfo (bdrv_block_device_info). */
static json_t *inserted_info(struct vd_blk *blk, struct vd_node *n)
{
	json_t *o = json_object(), *img;
	int depth = 0;

	json_object_set_new(o, "file", qmp_string(vd_node_filename(n)));
	json_object_set_new(o, "node-name", qmp_string(vd_node_name(n)));
	json_object_set_new(
		o, "ro",
		json_boolean(vd_node_is_read_only(n) || (blk && vd_blk_is_read_only(blk))));
	json_object_set_new(o, "drv", qmp_string(vd_node_format(n)));
	if (vd_node_backing(n))
		json_object_set_new(o, "backing_file",
				    qmp_string(vd_node_filename(vd_node_backing(n))));
	json_object_set_new(o, "encrypted", json_false());
	json_object_set_new(o, "detect_zeroes", json_string("off"));
	static const char *const throttle[] = {"bps",  "bps_rd",  "bps_wr",
					       "iops", "iops_rd", "iops_wr"};
	for (size_t i = 0; i < sizeof(throttle) / sizeof(throttle[0]); i++)
		json_object_set_new(o, throttle[i], json_integer(0));
	img = image_info(n, &depth);
	if (img)
		json_object_set_new(o, "image", img);
	json_object_set_new(o, "cache",
			    json_pack("{s:b,s:b,s:b}", "writeback",
				      blk ? vd_blk_write_cache(blk) : vd_node_write_cache(n),
				      "direct", vd_node_cache_direct(n), "no-flush",
				      vd_node_cache_no_flush(n)));
	json_object_set_new(o, "write_threshold", json_integer(0));
	json_object_set_new(o, "backing_file_depth", json_integer(depth));
	return o;
}

/* BlockInfo (bdrv_query_info). */
static json_t *block_info(struct vd_blk *blk)
{
	json_t *o = json_object();

	json_object_set_new(o, "device", qmp_string(vd_blk_name(blk)));
	if (*vd_blk_qdev_id(blk))
		json_object_set_new(o, "qdev", qmp_string(vd_blk_qdev_id(blk)));
	json_object_set_new(o, "type", json_string("unknown"));
	json_object_set_new(o, "removable", json_boolean(vd_blk_is_removable(blk)));
	json_object_set_new(o, "locked", json_boolean(vd_blk_is_locked(blk)));
	if (vd_blk_has_tray(blk))
		json_object_set_new(o, "tray_open", json_boolean(vd_blk_is_tray_open(blk)));
	if (vd_blk_iostatus_is_enabled(blk))
		json_object_set_new(o, "io-status",
				    json_string(vd_blk_io_status_names[vd_blk_iostatus(blk)]));
	if (vd_blk_root(blk))
		json_object_set_new(o, "inserted", inserted_info(blk, vd_blk_root(blk)));
	return o;
}

/* BlockDeviceStats from the node's accounting. */
static json_t *device_stats(const struct vd_node *n)
{
	struct vd_acct_stats st = {0};
	const struct vd_acct_op *rd = &st.op[VD_ACCT_READ], *wr = &st.op[VD_ACCT_WRITE],
				*wz = &st.op[VD_ACCT_WRITE_ZEROES], *fl = &st.op[VD_ACCT_FLUSH],
				*um = &st.op[VD_ACCT_DISCARD];
	json_t *o = json_object();

	if (n)
		vd_node_get_stats(n, &st);
		/* Zero writes count as writes, as QEMU's devices account them. */
#define SET(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
	SET("rd_bytes", rd->bytes);
	SET("wr_bytes", wr->bytes + wz->bytes);
	SET("unmap_bytes", um->bytes);
	SET("rd_operations", rd->ops);
	SET("wr_operations", wr->ops + wz->ops);
	SET("flush_operations", fl->ops);
	SET("unmap_operations", um->ops);
	SET("rd_total_time_ns", rd->total_time_ns);
	SET("wr_total_time_ns", wr->total_time_ns + wz->total_time_ns);
	SET("flush_total_time_ns", fl->total_time_ns);
	SET("unmap_total_time_ns", um->total_time_ns);
	SET("wr_highest_offset", 0);
	SET("rd_merged", rd->merged);
	SET("wr_merged", wr->merged);
	SET("unmap_merged", 0);
	if (st.last_access_ns > 0) {
		int64_t idle = vd_clock_ns() - st.last_access_ns;

		SET("idle_time_ns", idle > 0 ? idle : 0);
	}
	SET("failed_rd_operations", rd->failed_ops);
	SET("failed_wr_operations", wr->failed_ops + wz->failed_ops);
	SET("failed_flush_operations", fl->failed_ops);
	SET("failed_unmap_operations", um->failed_ops);
	SET("invalid_rd_operations", rd->invalid_ops);
	SET("invalid_wr_operations", wr->invalid_ops + wz->invalid_ops);
	SET("invalid_flush_operations", fl->invalid_ops);
	SET("invalid_unmap_operations", um->invalid_ops);
#undef SET
	json_object_set_new(o, "account_invalid", json_true());
	json_object_set_new(o, "account_failed", json_true());
	json_object_set_new(o, "timed_stats", json_array());
	return o;
}

/* BlockStats (bdrv_query_bds_stats): the node, its primary child as
 * "parent", and at blk level its backing node as "backing". */
static json_t *node_stats(struct vd_node *n, bool blk_level, int depth)
{
	json_t *o = json_object();

	if (n && *vd_node_name(n))
		json_object_set_new(o, "node-name", qmp_string(vd_node_name(n)));
	json_object_set_new(o, "stats", device_stats(n));
	if (n && !strcmp(vd_node_format(n), "file")) {
		/* BlockStatsSpecificFile, from the node's discard counters. */
		struct vd_acct_stats st;

		vd_node_get_stats(n, &st);
		json_object_set_new(
			o, "driver-specific",
			json_pack("{s:s,s:I,s:I,s:I}", "driver", "file", "discard-nb-ok",
				  (json_int_t)st.op[VD_ACCT_DISCARD].ops, "discard-nb-failed",
				  (json_int_t)st.op[VD_ACCT_DISCARD].failed_ops, "discard-bytes-ok",
				  (json_int_t)st.op[VD_ACCT_DISCARD].bytes));
	}
	if (n && depth < 64) {
		if (vd_node_file_child(n))
			json_object_set_new(
				o, "parent",
				node_stats(vd_node_file_child(n), blk_level, depth + 1));
		if (blk_level && vd_node_backing(n))
			json_object_set_new(o, "backing",
					    node_stats(vd_node_backing(n), blk_level, depth + 1));
	}
	return o;
}

/* Every node once, depth-first below each root (query-nodes). */
static void collect_nodes(struct vd_node *n, struct vd_node ***list, size_t *len, size_t *cap,
			  int depth)
{
	if (!n || depth > 64)
		return;
	/* Children first: QEMU lists nodes in the order they finished
	 * opening. */
	collect_nodes(vd_node_file_child(n), list, len, cap, depth + 1);
	collect_nodes(vd_node_backing(n), list, len, cap, depth + 1);
	for (size_t i = 0; i < *len; i++) {
		if ((*list)[i] == n)
			return;
	}
	if (*len == *cap) {
		size_t ncap = *cap ? *cap * 2 : 16;
		struct vd_node **nl = realloc(*list, ncap * sizeof(*nl));

		if (!nl)
			return;
		*list = nl;
		*cap = ncap;
	}
	(*list)[(*len)++] = n;
}

/* --- commands ------------------------------------------------------------ */

/*
 * A node on an I/O thread is read there: its statistics and its driver's state
 * change on that thread.  The main thread waits meanwhile, so the registry may
 * be walked from there too.  NULL if the call could not be made.
 */
struct on_node {
	struct vd_blk *blk;
	struct vd_node *n;
	bool blk_level;
	json_t *out;
};

static void block_info_fn(void *opaque)
{
	struct on_node *k = opaque;

	k->out = block_info(k->blk);
}

static void node_stats_fn(void *opaque)
{
	struct on_node *k = opaque;

	k->out = node_stats(k->n, k->blk_level, 0);
}

static json_t *on_node_loop(struct vd_node *n, vd_loop_fn *fn, struct on_node *k)
{
	if (!n || !vd_node_loop(n)) {
		fn(k);
		return k->out;
	}
	if (vd_loop_call_wait(vd_node_loop(n), fn, k) < 0)
		return NULL;
	return k->out;
}

static json_t *cmd_query_block(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {{NULL}};
	struct vd_qmp_block *b = opaque;
	json_t *list;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	list = json_array();
	for (struct vd_blk *blk = vd_blk_next(b->reg, NULL); blk; blk = vd_blk_next(b->reg, blk)) {
		/* Anonymous backends of exports are not devices. */
		if (!*vd_blk_name(blk) && !vd_blk_has_dev(blk))
			continue;
		struct on_node k = {.blk = blk};

		json_array_append_new(list, on_node_loop(vd_blk_root(blk), block_info_fn, &k));
	}
	return list;
}

static json_t *cmd_query_blockstats(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"query-nodes", VD_QMP_ARG_BOOL, true},
		{NULL},
	};
	struct vd_qmp_block *b = opaque;
	json_t *list;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	list = json_array();
	if (json_is_true(json_object_get(args, "query-nodes"))) {
		struct vd_node **nodes = NULL, *n;
		size_t len = 0, cap = 0;

		for (n = vd_blk_registry_next_node(b->reg, NULL); n;
		     n = vd_blk_registry_next_node(b->reg, n))
			collect_nodes(n, &nodes, &len, &cap, 0);
		for (struct vd_blk *blk = vd_blk_next(b->reg, NULL); blk;
		     blk = vd_blk_next(b->reg, blk))
			collect_nodes(vd_blk_root(blk), &nodes, &len, &cap, 0);
		for (size_t i = 0; i < len; i++) {
			struct on_node k = {.n = nodes[i]};

			json_array_append_new(list, on_node_loop(nodes[i], node_stats_fn, &k));
		}
		free(nodes);
		return list;
	}
	for (struct vd_blk *blk = vd_blk_next(b->reg, NULL); blk; blk = vd_blk_next(b->reg, blk)) {
		json_t *s;

		if (!*vd_blk_name(blk) && !vd_blk_has_dev(blk))
			continue;
		struct on_node k = {.n = vd_blk_root(blk), .blk_level = true};

		s = on_node_loop(vd_blk_root(blk), node_stats_fn, &k);
		if (!s)
			continue;
		json_object_set_new(s, "device", qmp_string(vd_blk_name(blk)));
		if (*vd_blk_qdev_id(blk))
			json_object_set_new(s, "qdev", qmp_string(vd_blk_qdev_id(blk)));
		json_array_append(list, s);
		json_decref(s);
	}
	return list;
}

/* On the node's loop: in the QMP coroutine when that is the main loop (it
 * yields while the driver works), on the I/O thread otherwise. */
struct resize_call {
	struct vd_qmp_block *b;
	struct vd_node *n;
	int64_t size;
	struct vd_error *err;
	int ret;
};

static void resize_fn(void *opaque)
{
	struct resize_call *k = opaque;

	k->ret = vd_node_truncate(k->n, k->size, false, VD_PREALLOC_OFF, k->err);
	if (k->ret < 0)
		return;
	/* The devices and exports on this node learn the new size (QEMU's
	 * resize callback of the BlockBackend parents), on the node's loop
	 * where they run. */
	for (struct vd_blk *blk = vd_blk_next(k->b->reg, NULL); blk;
	     blk = vd_blk_next(k->b->reg, blk)) {
		if (vd_blk_root(blk) == k->n)
			vd_blk_resized(blk);
	}
}

static json_t *cmd_block_resize(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"device", VD_QMP_ARG_STR, true},
		{"node-name", VD_QMP_ARG_STR, true},
		{"size", VD_QMP_ARG_INT, false},
		{NULL},
	};
	struct vd_qmp_block *b = opaque;
	const char *device, *node_name;
	struct vd_error verr = {0};
	struct vd_node *n = NULL;
	struct vd_blk *blk;
	json_int_t size;
	int ret;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	device = json_string_value(json_object_get(args, "device"));
	node_name = json_string_value(json_object_get(args, "node-name"));
	size = json_integer_value(json_object_get(args, "size"));

	/* bdrv_lookup_bs */
	if (device && (blk = vd_blk_find(b->reg, device))) {
		n = vd_blk_root(blk);
		if (!n) {
			vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' has no medium",
					 device);
			return NULL;
		}
	}
	if (!n && node_name)
		n = vd_blk_registry_find_node(b->reg, node_name);
	if (!n) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
				 "Cannot find device='%s' nor node-name='%s'", device ? device : "",
				 node_name ? node_name : "");
		return NULL;
	}
	if (size < 0) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Parameter 'size' expects a >0 size");
		return NULL;
	}
	if (size > VD_MAX_LENGTH) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "offset(%lld) exceeds maximum(%lld)",
				 (long long)size, (long long)VD_MAX_LENGTH);
		return NULL;
	}
	{
		struct resize_call k = {b, n, size, &verr, 0};

		vd_node_ref(n);
		ret = vd_loop_call_wait(vd_node_loop(n), resize_fn, &k);
		if (ret == 0)
			ret = k.ret;
		vd_node_unref(n);
	}
	if (ret < 0) {
		if (vd_error_is_set(&verr))
			vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "%s", verr.msg);
		else
			vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Could not resize: %s",
					 strerror(-ret));
	}
	return NULL;
}

/* qmp_get_blk: by device name or by the qdev id of its device. */
static struct vd_blk *get_blk(struct vd_qmp_block *b, const char *device, const char *id,
			      struct vd_qmp_error *err)
{
	struct vd_blk *blk;

	if (!device == !id) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
				 "Need exactly one of 'device' and 'id'");
		return NULL;
	}
	blk = id ? vd_blk_find_by_qdev(b->reg, id) : vd_blk_find(b->reg, device);
	if (!blk)
		vd_qmp_error_set(err, VD_QMP_DEVICE_NOT_FOUND, "Device '%s' not found",
				 id ? id : device);
	return blk;
}

/* do_open_tray's messages; -ENOSYS (no tray) is no error for callers. */
static int open_tray(struct vd_blk *blk, const char *name, bool force, struct vd_qmp_error *err)
{
	int ret = vd_blk_open_tray(blk, force);

	if (ret == -ENOTSUP)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' is not removable", name);
	else if (ret == -EINPROGRESS)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
				 "Device '%s' is locked and force was not specified, "
				 "wait for tray to open and try again",
				 name);
	return ret == -ENOSYS ? 0 : ret;
}

/* blockdev_remove_medium's messages. */
static int remove_medium(struct vd_blk *blk, const char *name, struct vd_qmp_error *err)
{
	int ret = vd_blk_remove_medium(blk);

	if (ret == -ENOTSUP)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' does not have a tray",
				 name);
	else if (ret == -EBUSY)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Tray of device '%s' is not open",
				 name);
	return ret;
}

static json_t *cmd_eject(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"device", VD_QMP_ARG_STR, true},
		{"id", VD_QMP_ARG_STR, true},
		{"force", VD_QMP_ARG_BOOL, true},
		{NULL},
	};
	const char *device, *id, *name;
	struct vd_blk *blk;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	device = json_string_value(json_object_get(args, "device"));
	id = json_string_value(json_object_get(args, "id"));
	blk = get_blk(opaque, device, id, err);
	if (!blk)
		return NULL;
	name = device ? device : id;
	if (open_tray(blk, name, json_is_true(json_object_get(args, "force")), err) < 0)
		return NULL;
	remove_medium(blk, name, err);
	return NULL;
}

static json_t *cmd_change_medium(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const char *const ro_modes[] = {"retain", "read-only", "read-write", NULL};
	static const struct vd_qmp_arg spec[] = {
		{"device", VD_QMP_ARG_STR, true},
		{"id", VD_QMP_ARG_STR, true},
		{"filename", VD_QMP_ARG_STR, false},
		{"format", VD_QMP_ARG_STR, true},
		{"force", VD_QMP_ARG_BOOL, true},
		{"read-only-mode", VD_QMP_ARG_ENUM, true, ro_modes},
		{NULL},
	};
	const char *device, *id, *name, *filename, *format, *mode;
	struct vd_error verr = {0};
	struct vd_node *node = NULL;
	struct vd_blk *blk;
	bool rw;
	int ret;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	device = json_string_value(json_object_get(args, "device"));
	id = json_string_value(json_object_get(args, "id"));
	filename = json_string_value(json_object_get(args, "filename"));
	format = json_string_value(json_object_get(args, "format"));
	mode = json_string_value(json_object_get(args, "read-only-mode"));
	blk = get_blk(opaque, device, id, err);
	if (!blk)
		return NULL;
	name = device ? device : id;

	if (!mode || !strcmp(mode, "retain"))
		rw = !vd_blk_is_read_only(blk);
	else
		rw = !strcmp(mode, "read-write");
	/* Open first: a medium that fails to open leaves the old one in. */
	ret = vd_node_open(filename, format, NULL,
			   (rw ? VD_OPEN_RDWR : 0) | (format ? 0 : VD_OPEN_PROBE), &node, &verr);
	if (ret < 0) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "%s",
				 vd_error_is_set(&verr) ? verr.msg : strerror(-ret));
		return NULL;
	}
	if (open_tray(blk, name, json_is_true(json_object_get(args, "force")), err) < 0)
		goto out;
	if (remove_medium(blk, name, err) < 0)
		goto out;
	ret = vd_blk_insert_medium(blk, node);
	if (ret == -ENOTSUP) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' does not have a tray",
				 name);
		goto out;
	} else if (ret == -EBUSY) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Tray of the device is not open");
		goto out;
	} else if (ret == -EEXIST) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
				 "There already is a medium in the device");
		goto out;
	} else if (ret < 0) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "%s", strerror(-ret));
		goto out;
	}
	if (vd_blk_close_tray(blk) == -ENOTSUP)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' is not removable", name);
out:
	vd_node_unref(node);
	return NULL;
}

/* blockdev-open-tray: a locked tray is no error (the guest got an eject
 * request), nor is a device without a tray. */
static json_t *cmd_open_tray(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"device", VD_QMP_ARG_STR, true},
		{"id", VD_QMP_ARG_STR, true},
		{"force", VD_QMP_ARG_BOOL, true},
		{NULL},
	};
	const char *device, *id;
	struct vd_blk *blk;
	int ret;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	device = json_string_value(json_object_get(args, "device"));
	id = json_string_value(json_object_get(args, "id"));
	blk = get_blk(opaque, device, id, err);
	if (!blk)
		return NULL;
	ret = vd_blk_open_tray(blk, json_is_true(json_object_get(args, "force")));
	if (ret == -ENOTSUP)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' is not removable",
				 device ? device : id);
	return NULL;
}

static json_t *cmd_close_tray(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"device", VD_QMP_ARG_STR, true},
		{"id", VD_QMP_ARG_STR, true},
		{NULL},
	};
	const char *device, *id;
	struct vd_blk *blk;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	device = json_string_value(json_object_get(args, "device"));
	id = json_string_value(json_object_get(args, "id"));
	blk = get_blk(opaque, device, id, err);
	if (blk && vd_blk_close_tray(blk) == -ENOTSUP)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' is not removable",
				 device ? device : id);
	return NULL;
}

static json_t *cmd_remove_medium(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"id", VD_QMP_ARG_STR, false},
		{NULL},
	};
	const char *id;
	struct vd_blk *blk;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	id = json_string_value(json_object_get(args, "id"));
	blk = get_blk(opaque, NULL, id, err);
	if (blk)
		remove_medium(blk, id, err);
	return NULL;
}

static json_t *cmd_insert_medium(json_t *args, void *opaque, struct vd_qmp_error *err)
{
	static const struct vd_qmp_arg spec[] = {
		{"id", VD_QMP_ARG_STR, false},
		{"node-name", VD_QMP_ARG_STR, false},
		{NULL},
	};
	struct vd_qmp_block *b = opaque;
	const char *id, *node_name;
	struct vd_node *n;
	struct vd_blk *blk;
	int ret;

	if (vd_qmp_check_args(args, spec, err) < 0)
		return NULL;
	id = json_string_value(json_object_get(args, "id"));
	node_name = json_string_value(json_object_get(args, "node-name"));
	n = vd_blk_registry_find_node(b->reg, node_name);
	if (!n) {
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Node '%s' not found", node_name);
		return NULL;
	}
	for (blk = vd_blk_next(b->reg, NULL); blk; blk = vd_blk_next(b->reg, blk)) {
		if (vd_blk_root(blk) == n) {
			vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Node '%s' is already in use",
					 node_name);
			return NULL;
		}
	}
	blk = get_blk(b, NULL, id, err);
	if (!blk)
		return NULL;
	ret = vd_blk_insert_medium(blk, n);
	if (ret == -ENOTSUP)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Device '%s' does not have a tray", id);
	else if (ret == -EBUSY)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "Tray of the device is not open");
	else if (ret == -EEXIST)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR,
				 "There already is a medium in the device");
	else if (ret < 0)
		vd_qmp_error_set(err, VD_QMP_GENERIC_ERROR, "%s", strerror(-ret));
	return NULL;
}

/* --- events -------------------------------------------------------------- */

static void on_blk_event(void *opaque, const struct vd_blk_event *ev)
{
	struct vd_qmp_block *b = opaque;
	struct vd_blk *blk = ev->blk;
	json_t *data = json_object();

	switch (ev->type) {
	case VD_BLK_EVENT_TRAY_MOVED:
		json_object_set_new(data, "device", qmp_string(vd_blk_name(blk)));
		json_object_set_new(data, "tray-open", json_boolean(ev->tray_open));
		json_object_set_new(data, "id", qmp_string(vd_blk_qdev_id(blk)));
		vd_qmp_emit_event(b->server, "DEVICE_TRAY_MOVED", data);
		break;
	case VD_BLK_EVENT_IO_ERROR:
		json_object_set_new(data, "device", qmp_string(vd_blk_name(blk)));
		if (vd_blk_root(blk))
			json_object_set_new(data, "node-name",
					    qmp_string(vd_node_name(vd_blk_root(blk))));
		json_object_set_new(data, "operation", json_string(ev->is_read ? "read" : "write"));
		json_object_set_new(data, "action", json_string(vd_blk_action_names[ev->action]));
		if (vd_blk_iostatus_is_enabled(blk))
			json_object_set_new(data, "nospace", json_boolean(ev->error == ENOSPC));
		json_object_set_new(data, "reason", qmp_string(strerror(ev->error)));
		vd_qmp_emit_event(b->server, "BLOCK_IO_ERROR", data);
		break;
	default:
		json_decref(data);
		break;
	}
}

/* --- setup --------------------------------------------------------------- */

static const struct {
	const char *name;
	vd_qmp_handler *fn;
} block_cmds[] = {
	{"query-block", cmd_query_block},
	{"query-blockstats", cmd_query_blockstats},
	{"block_resize", cmd_block_resize},
	{"eject", cmd_eject},
	{"blockdev-change-medium", cmd_change_medium},
	{"blockdev-open-tray", cmd_open_tray},
	{"blockdev-close-tray", cmd_close_tray},
	{"blockdev-remove-medium", cmd_remove_medium},
	{"blockdev-insert-medium", cmd_insert_medium},
};
#define N_BLOCK_CMDS (sizeof(block_cmds) / sizeof(block_cmds[0]))

int vd_qmp_block_init(struct vd_qmp_server *s, struct vd_blk_registry *reg,
		      struct vd_qmp_block **out)
{
	struct vd_qmp_block *b;
	size_t i;
	int ret;

	*out = NULL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->server = s;
	b->reg = reg;
	for (i = 0; i < N_BLOCK_CMDS; i++) {
		ret = vd_qmp_register(s, block_cmds[i].name, block_cmds[i].fn, b);
		if (ret < 0)
			goto fail;
	}
	ret = vd_blk_registry_add_notifier(reg, on_blk_event, b);
	if (ret < 0)
		goto fail;
	*out = b;
	return 0;
fail:
	while (i-- > 0)
		vd_qmp_unregister(s, block_cmds[i].name);
	free(b);
	return ret;
}

void vd_qmp_block_free(struct vd_qmp_block *b)
{
	if (!b)
		return;
	vd_blk_registry_remove_notifier(b->reg, on_blk_event, b);
	for (size_t i = 0; i < N_BLOCK_CMDS; i++)
		vd_qmp_unregister(b->server, block_cmds[i].name);
	free(b);
}
