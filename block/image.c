/* SPDX-License-Identifier: MIT */
/*
 * Whole-image operations: consistency checks and internal snapshots.  They
 * run in a coroutine on the node's loop after draining it, because drivers
 * walk and rewrite their metadata and must not race with requests.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block/internal.h"

enum image_op {
	OP_CHECK,
	OP_LIST,
	OP_CREATE,
	OP_GOTO,
	OP_DELETE,
	OP_LOAD_TMP,
	OP_AMEND,
	OP_BITMAP,
	OP_CHANGE_BACKING,
	OP_MAKE_EMPTY,
};

struct image_req {
	struct vd_node *n;
	enum image_op op;
	struct vd_check_result *res;
	int fix;
	struct vd_snapshot_info **list;
	struct vd_snapshot_info sn;
	const char *id_or_name;
	const char *sn_id, *sn_name;
	struct vd_opts *opts;
	bool force;
	enum vd_bitmap_action bm_act;
	uint64_t granularity;
	struct vd_node *src;
	const char *name, *src_name;
	const char *backing_file, *backing_fmt;
	struct vd_error *err;
	int ret;
};

static void image_entry(void *opaque)
{
	struct image_req *r = opaque;
	struct vd_node *n = r->n;
	const struct vd_block_driver *drv = n->drv;

	vd_node_drain(n);
	switch (r->op) {
	case OP_CHECK:
		r->ret = drv->co_check ? drv->co_check(n, r->res, r->fix) : -ENOTSUP;
		break;
	case OP_LIST:
		r->ret = drv->snapshot_list ? drv->snapshot_list(n, r->list) : -ENOTSUP;
		break;
	case OP_CREATE:
		r->ret = drv->snapshot_create ? drv->snapshot_create(n, &r->sn, r->err) : -ENOTSUP;
		break;
	case OP_GOTO:
		r->ret = drv->snapshot_goto ? drv->snapshot_goto(n, r->id_or_name, r->err)
					    : -ENOTSUP;
		break;
	case OP_DELETE:
		r->ret = drv->snapshot_delete ? drv->snapshot_delete(n, r->id_or_name, r->err)
					      : -ENOTSUP;
		break;
	case OP_LOAD_TMP:
		r->ret = drv->snapshot_load_tmp
				 ? drv->snapshot_load_tmp(n, r->sn_id, r->sn_name, r->err)
				 : -ENOTSUP;
		break;
	case OP_BITMAP:
		if (r->src && r->src != n)
			vd_node_drain(r->src);
		r->ret = drv->co_bitmap ? drv->co_bitmap(n, r->bm_act, r->name, r->granularity,
							 r->src, r->src_name, r->err)
					: -ENOTSUP;
		break;
	case OP_AMEND:
		r->ret = drv->co_amend ? drv->co_amend(n, r->opts, r->force, r->err) : -ENOTSUP;
		break;
	case OP_CHANGE_BACKING:
		r->ret = drv->co_change_backing_file
				 ? drv->co_change_backing_file(n, r->backing_file, r->backing_fmt,
							       r->err)
				 : -ENOTSUP;
		break;
	case OP_MAKE_EMPTY:
		r->ret = drv->co_make_empty ? drv->co_make_empty(n, r->err) : -ENOTSUP;
		break;
	}
}

static int run(struct image_req *r)
{
	int ret;

	if (!r->n || !r->n->drv)
		return vd_error_set(r->err, -ENOMEDIUM, "No medium inserted");
	ret = vd_co_run_sync(image_entry, r);
	if (ret < 0)
		return ret;
	if (r->ret == -ENOTSUP && r->op != OP_CHECK && r->op != OP_LIST)
		vd_error_set(r->err, -ENOTSUP, "Operation not supported for format '%s'",
			     r->n->drv->name);
	return r->ret;
}

int vd_node_check(struct vd_node *n, struct vd_check_result *res, int fix)
{
	struct image_req r = {.n = n, .op = OP_CHECK, .res = res, .fix = fix};

	memset(res, 0, sizeof(*res));
	if (fix && n && n->read_only)
		return -EROFS;
	return run(&r);
}

int vd_node_amend(struct vd_node *n, struct vd_opts *opts, bool force, struct vd_error *err)
{
	struct image_req r = {.n = n, .op = OP_AMEND, .opts = opts, .force = force, .err = err};

	if (n && n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	if (n && n->drv && !n->drv->co_amend)
		return vd_error_set(err, -ENOTSUP,
				    "Format driver '%s' does not support option "
				    "amendment",
				    n->drv->name);
	return run(&r);
}

int vd_node_bitmap(struct vd_node *n, enum vd_bitmap_action act, const char *name,
		   uint64_t granularity, struct vd_node *src, const char *src_name,
		   struct vd_error *err)
{
	struct image_req r = {.n = n,
			      .op = OP_BITMAP,
			      .bm_act = act,
			      .name = name,
			      .granularity = granularity,
			      .src = src,
			      .src_name = src_name,
			      .err = err};

	if (n && n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	if (n && n->drv && !n->drv->co_bitmap)
		return vd_error_set(err, -ENOTSUP,
				    "Can't store persistent bitmaps to %s: Operation not supported",
				    n->node_name ? n->node_name : n->filename);
	return run(&r);
}

int vd_node_snapshot_list(struct vd_node *n, struct vd_snapshot_info **out)
{
	struct image_req r = {.n = n, .op = OP_LIST, .list = out};

	*out = NULL;
	return run(&r);
}

int vd_node_snapshot_create(struct vd_node *n, const char *name, struct vd_error *err)
{
	struct image_req r = {.n = n, .op = OP_CREATE, .err = err};
	struct timespec now;

	if (!name || !*name || strlen(name) >= sizeof(r.sn.name))
		return vd_error_set(err, -EINVAL, "Invalid snapshot name");
	if (n && n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	snprintf(r.sn.name, sizeof(r.sn.name), "%s", name);
	clock_gettime(CLOCK_REALTIME, &now);
	r.sn.date_sec = (uint32_t)now.tv_sec;
	r.sn.date_nsec = (uint32_t)now.tv_nsec;
	r.sn.icount = UINT64_MAX;
	return run(&r);
}

int vd_node_snapshot_goto(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	struct image_req r = {.n = n, .op = OP_GOTO, .id_or_name = id_or_name, .err = err};

	if (n && n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	return run(&r);
}

int vd_node_snapshot_delete(struct vd_node *n, const char *id_or_name, struct vd_error *err)
{
	struct image_req r = {.n = n, .op = OP_DELETE, .id_or_name = id_or_name, .err = err};

	if (n && n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	return run(&r);
}

int vd_node_snapshot_load_tmp(struct vd_node *n, const char *id, const char *name,
			      struct vd_error *err)
{
	struct image_req r = {.n = n, .op = OP_LOAD_TMP, .sn_id = id, .sn_name = name, .err = err};

	/* QEMU's bdrv_snapshot_load_tmp: its checks, in its order. */
	if (!n || !n->drv)
		return vd_error_set(err, -ENOMEDIUM, "No medium inserted");
	if (!id && !name)
		return vd_error_set(err, -EINVAL, "snapshot_id and name are both NULL");
	if (!n->read_only)
		return vd_error_set(err, -EINVAL, "Device is not readonly");
	if (!n->drv->snapshot_load_tmp)
		/* qemu-img's nodes have no device name: QEMU prints ''. */
		return vd_error_set(err, -ENOTSUP,
				    "Block format '%s' used by device '' does not support "
				    "temporarily loading internal snapshots",
				    n->drv->name);
	return run(&r);
}

int vd_node_snapshot_load_tmp_by_id_or_name(struct vd_node *n, const char *id_or_name,
					    struct vd_error *err)
{
	int ret = vd_node_snapshot_load_tmp(n, id_or_name, NULL, err);

	/* QEMU retries by name on -ENOENT and on -EINVAL (a bad L1 table of
	 * the snapshot with that ID, too). */
	if (ret == -ENOENT || ret == -EINVAL) {
		vd_error_clear(err);
		ret = vd_node_snapshot_load_tmp(n, NULL, id_or_name, err);
	}
	return ret;
}

int vd_node_change_backing_file(struct vd_node *n, const char *backing_file,
				const char *backing_fmt, struct vd_error *err)
{
	struct image_req r = {.n = n, .op = OP_CHANGE_BACKING, .err = err};

	if (backing_file && !*backing_file)
		backing_file = NULL;
	if (backing_fmt && !*backing_fmt)
		backing_fmt = NULL;
	if (!backing_file && backing_fmt)
		return vd_error_set(err, -EINVAL,
				    "Backing format cannot be used without backing file");
	if (n && n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	r.backing_file = backing_file;
	r.backing_fmt = backing_fmt;
	return run(&r);
}

int vd_node_make_empty(struct vd_node *n, struct vd_error *err)
{
	struct image_req r = {.n = n, .op = OP_MAKE_EMPTY, .err = err};

	if (n && n->read_only)
		return vd_error_set(err, -EROFS, "Image is read-only");
	return run(&r);
}

struct measure_req {
	const struct vd_block_driver *drv;
	struct vd_opts *opts;
	struct vd_node *in;
	struct vd_measure_info *info;
	struct vd_error *err;
	int ret;
};

static void measure_entry(void *opaque)
{
	struct measure_req *m = opaque;

	m->ret = m->drv->co_measure(m->opts, m->in, m->info, m->err);
}

int vd_image_measure(const char *format, struct vd_opts *opts, struct vd_node *in,
		     struct vd_measure_info *info, struct vd_error *err)
{
	const struct vd_block_driver *drv = vd_driver_find(format);
	struct measure_req m = {.drv = drv, .opts = opts, .in = in, .info = info, .err = err};
	int it = 0, ret;
	const char *key, *value;
	const struct vd_opts *dict;

	memset(info, 0, sizeof(*info));
	if (!drv)
		return vd_error_set(err, -EINVAL, "Unknown file format '%s'", format);
	if (!drv->create)
		return vd_error_set(err, -ENOTSUP,
				    "Format driver '%s' does not support image creation",
				    drv->name);
	/* The creation options of the format, as vd_image_create takes them. */
	while (vd_opts_next(opts, &it, &key, &value, &dict)) {
		bool known = strcmp(key, "size") == 0;
		for (const char *const *k = drv->create_opts; !known && k && *k; k++)
			known = strcmp(key, *k) == 0;
		if (!known)
			return vd_error_set(err, -EINVAL, "Invalid parameter '%s'", key);
	}
	if (!drv->co_measure)
		return vd_error_set(err, -ENOTSUP,
				    "Block driver '%s' does not support size measurement",
				    drv->name);
	if (in)
		vd_node_drain(in);
	ret = vd_co_run_sync(measure_entry, &m);
	if (ret < 0)
		return vd_error_setg_errno(err, ret, "Could not measure");
	return m.ret;
}
